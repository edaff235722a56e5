import pytest


@pytest.fixture
def logged_in(client, admin):
    client.force_login(admin)
    return client
