"""Fixtures shared by every layer of the tests."""

from pathlib import Path

import pytest

from networks.hypervisor import client

REPO = Path(__file__).resolve().parent.parent
DEMO_URI = f"test://{REPO / 'demo' / 'fleet.xml'}"


@pytest.fixture
def demo_uri():
    """The demo fleet, freshly loaded: the cached connection is dropped before and after."""
    client.disconnect(DEMO_URI)
    yield DEMO_URI
    client.disconnect(DEMO_URI)


@pytest.fixture
def default_uri():
    """libvirt's built-in test:///default, fresh for each test."""
    client.disconnect("test:///default")
    yield "test:///default"
    client.disconnect("test:///default")
