import pytest

from networks.choices import AuditSource
from networks.models import Host
from networks.services import hosts as host_services
from networks.services.operations import operation_run
from tests.factories import UserFactory


@pytest.fixture
def admin(db):
    return UserFactory(username="alice")


@pytest.fixture
def demo_host(db, demo_uri, admin):
    """The demo fleet registered and synced, as `make run` leaves it."""
    host = host_services.host_create(name="demo", uri=demo_uri, actor=admin, source=AuditSource.WEB)
    operation_run(host.operations.get().pk)
    return Host.objects.get(pk=host.pk)
