"""Celery application. Workers talk libvirt; the web process never does."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kvmweb.settings")

app = Celery("kvmweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
