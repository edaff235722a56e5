"""The header's search box and its page: every kind of object, only the user's hosts."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from networks.models import Guest, GuestInterface, UserRole
from tests.factories import HostFactory, UserFactory
from tests.services.test_ipam_search import network_with

pytestmark = pytest.mark.django_db


def fill(host, n):
    network = network_with(
        host,
        f"lan{n}",
        [f"10.{n}.0.1/24"],
        reservations=[(f"52:54:00:00:00:{n:02x}", f"10.{n}.0.10", f"web{n}")],
        leases=[(f"52:54:00:00:01:{n:02x}", f"10.{n}.0.100", f"dyn{n}")],
    )
    guest = Guest.objects.create(host=host, name=f"web{n}-vm", uuid=f"{n:08x}-1111-4000-8000-000000000000")
    GuestInterface.objects.create(
        guest=guest, position=0, type="network", mac=f"52:54:00:00:02:{n:02x}", network=network
    )
    return network, guest


def scoped_client(client, host):
    user = UserFactory(username="carol", role="viewer")
    role = UserRole.objects.get(user=user)
    role.all_hosts = False
    role.save()
    role.hosts.set([host])
    client.force_login(user)
    return client


def test_the_header_has_the_search_box(logged_in):
    page = logged_in.get(reverse("networks:dashboard")).content.decode()
    assert f'action="{reverse("networks:search")}"' in page and 'name="q"' in page


def test_a_name_finds_hosts_networks_guests_reservations(logged_in):
    host = HostFactory(name="web-hv")
    fill(host, 1)
    page = logged_in.get(reverse("networks:search"), {"q": "WEB"}).content.decode()
    assert 'id="search-hosts"' in page and "web-hv" in page
    assert 'id="search-guests"' in page and "web1-vm" in page
    assert 'id="search-reservations"' in page and "10.1.0.10" in page
    page = logged_in.get(reverse("networks:search"), {"q": "lan1"}).content.decode()
    assert 'id="search-networks"' in page


def test_a_mac_an_ip_and_a_uuid_find_what_holds_them(logged_in):
    network, guest = fill(HostFactory(name="kvm1"), 3)
    page = logged_in.get(reverse("networks:search"), {"q": "52-54-00-00-02-03"}).content.decode()
    assert 'id="search-interfaces"' in page and "web3-vm" in page
    page = logged_in.get(reverse("networks:search"), {"q": "10.3.0.77"}).content.decode()
    assert 'id="search-subnets"' in page and "10.3.0.1/24" in page
    page = logged_in.get(reverse("networks:search"), {"q": "10.3.0.100"}).content.decode()
    assert 'id="search-leases"' in page and "dyn3" in page
    page = logged_in.get(reverse("networks:search"), {"q": guest.uuid.upper()}).content.decode()
    assert 'id="search-guests"' in page and "web3-vm" in page
    page = logged_in.get(reverse("networks:search"), {"q": network.uuid}).content.decode()
    assert 'id="search-networks"' in page and "lan3" in page


def test_another_hosts_objects_never_appear(client):
    mine, theirs = HostFactory(name="mine"), HostFactory(name="theirs")
    fill(mine, 1)
    fill(theirs, 2)
    client = scoped_client(client, mine)
    theirs_only = ("web2", "lan2", "52:54:00:00:02:02", "52:54:00:00:00:02", "10.2.0.10", "10.2.0.5", "theirs")
    for query in (*theirs_only, "00000002-1111-4000-8000-000000000000"):
        page = client.get(reverse("networks:search"), {"q": query}).content.decode()
        assert 'id="search-nothing"' in page, query
    for query, mine_shown in (("web", "web1-vm"), ("lan", "lan1"), ("52:54:00", "10.1.0.10")):
        page = client.get(reverse("networks:search"), {"q": query}).content.decode()
        assert mine_shown in page and "web2" not in page and "lan2" not in page and ">theirs<" not in page, query


def test_nothing_found_says_so_and_bad_text_is_a_400(logged_in):
    response = logged_in.get(reverse("networks:search"), {"q": "nothing-here"})
    assert response.status_code == 200 and 'id="search-nothing"' in response.content.decode()
    for bad in ("x", "a" * 300, "ab\ncd"):
        response = logged_in.get(reverse("networks:search"), {"q": bad})
        assert response.status_code == 400 and 'id="search-error"' in response.content.decode()
    assert logged_in.get(reverse("networks:search"), {"q": "ab\x00cd"}).status_code == 400  # the middleware's
    assert logged_in.get(reverse("networks:search")).status_code == 200  # no query: the form


def test_the_addresses_page_refuses_bad_text_with_a_400(logged_in):
    response = logged_in.get(reverse("networks:ipam"), {"q": "x"})
    assert response.status_code == 400 and "at least 2" in response.content.decode()


@pytest.mark.parametrize("query", ["web", "52:54:00:00:00:01", "10.1.0.10"])
def test_the_search_page_costs_the_same_queries_at_n_and_3n_hosts(logged_in, query):
    def count():
        with CaptureQueriesContext(connection) as queries:
            assert logged_in.get(reverse("networks:search"), {"q": query}).status_code == 200
        return len(queries)

    for n in range(1, 3):
        fill(HostFactory(name=f"kvm{n}"), n)
    small = count()
    for n in range(3, 7):
        fill(HostFactory(name=f"kvm{n}"), n)
    assert count() == small
