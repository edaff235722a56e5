import pytest
from django.core.management import call_command
from rest_framework.test import APIClient


@pytest.fixture
def api(admin, capsys):
    """An API client authenticated with the token `manage.py apitoken` prints."""
    call_command("apitoken", admin.username)
    token = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client
