import pytest

from tests.services.conftest import admin, demo_host  # noqa: F401  (shared fixtures)


@pytest.fixture
def logged_in(client, admin):  # noqa: F811
    client.force_login(admin)
    return client
