"""The only package that imports libvirt. No Django, no Celery; frozen dataclasses out."""
