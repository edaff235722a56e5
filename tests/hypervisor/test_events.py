"""libvirt events on the test driver: callbacks receive small dataclasses. No database."""

import queue
import time

import pytest

from networks.hypervisor import client, events

NETWORK_XML = (
    "<network><name>lab</name><bridge name='virbr19' stp='off'/>"
    "<ip address='10.19.0.1' netmask='255.255.255.0'/></network>"
)


@pytest.fixture
def received(default_uri):
    """(connection, queue of events) with a subscription on test:///default."""
    conn = client.connect(default_uri)
    got = queue.Queue()
    subscription = events.subscribe(conn, got.put, keepalive=(2, 2))
    yield conn, got
    subscription.cancel()


def _next(got: queue.Queue):
    return got.get(timeout=5)


def test_network_lifecycle_events_name_the_network(received):
    conn, got = received
    network = conn.networkDefineXML(NETWORK_XML)
    network.create()
    network.destroy()
    network.undefine()
    assert [_next(got) for _ in range(4)] == [
        events.NetworkEvent(name="lab", event="defined"),
        events.NetworkEvent(name="lab", event="started"),
        events.NetworkEvent(name="lab", event="stopped"),
        events.NetworkEvent(name="lab", event="undefined"),
    ]


def test_a_guest_destroyed_sends_a_stopped_event(received):
    conn, got = received
    conn.lookupByName("test").destroy()
    assert _next(got) == events.GuestEvent(name="test", event="stopped")


def test_a_cancelled_subscription_delivers_nothing_more(default_uri):
    conn = client.connect(default_uri)
    got = queue.Queue()
    subscription = events.subscribe(conn, got.put)
    subscription.cancel()
    subscription.cancel()  # twice is harmless
    conn.networkLookupByName("default").destroy()
    with pytest.raises(queue.Empty):
        got.get(timeout=0.5)


def test_a_failing_callback_does_not_stop_later_events(default_uri):
    conn = client.connect(default_uri)
    got = []

    def callback(event):
        got.append(event)
        raise RuntimeError("a bug in the receiver")

    subscription = events.subscribe(conn, callback)
    try:
        conn.networkLookupByName("default").destroy()
        conn.networkLookupByName("default").create()
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        subscription.cancel()
    assert [e.event for e in got] == ["stopped", "started"]
