"""Tests and helpers that run against a private real libvirtd (see conftest.py)."""
