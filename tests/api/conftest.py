import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.services.conftest import admin, demo_host  # noqa: F401  (shared fixtures)


@pytest.fixture
def api(admin, capsys):  # noqa: F811
    """An API client authenticated with the token `manage.py apitoken` prints."""
    call_command("apitoken", admin.username)
    token = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client
