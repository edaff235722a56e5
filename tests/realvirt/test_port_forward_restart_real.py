"""A kvmweb network restart re-applies the port forwards of the network's guests and verifies each,
on a real libvirtd with a real guest, run by the host worker in the hypervisor's namespaces.

Rules lost before the restart (a flushed chain) are back after it: the restart does not just find
rules that happened to survive, it puts them in place and checks them. The hypervisor, host worker
and client are those of the end-to-end test (test_port_forward_e2e_real.py)."""

from __future__ import annotations

import time

import pytest

from networks.models import Guest, Network, PortForward

from .forwarding import http_from, in_daemon_namespaces, wait_for
from .test_port_forward_e2e_real import PEER, URL, _succeeded, _write, host_worker, hypervisor, kvmweb  # noqa: F401

pytestmark = [pytest.mark.realvirt, pytest.mark.worker]


def _flush_kvmweb_chains(daemon) -> None:
    for argv in (["iptables", "-F", "KVMWEB_FORWARD"], ["iptables", "-t", "nat", "-F", "KVMWEB_PREROUTING"]):
        assert in_daemon_namespaces(daemon, argv).returncode == 0


def test_a_network_restart_puts_missing_forward_rules_back_and_reports_each_forward(hypervisor, kvmweb):  # noqa: F811
    daemon, _guest, client = hypervisor
    host, api, worker_log = kvmweb
    web = Guest.objects.get(host=host, name="pe-web")
    network = Network.objects.get(host=host, name="kvpe")
    _succeeded(_write(api, "post", "/api/port-forwards/",
                      {"host": host.pk, "guest": web.pk, "host_port": 8080, "guest_port": 80}))  # fmt: skip
    assert wait_for(lambda: http_from(client, URL, timeout=1), 10) == PEER
    forward = PortForward.objects.get(host=host)

    preview = api.get(f"/networks/{network.pk}/restart/").content.decode()
    assert str(forward) in preview, "the restart's confirm lists the forward it re-applies"

    _flush_kvmweb_chains(daemon)
    assert http_from(client, URL) is None, "the rules are really gone"
    started = time.monotonic()
    restart = _succeeded(_write(api, "post", f"/api/networks/{network.pk}/restart/", {}))

    [row] = restart.result["forwards"]
    assert (row["id"], row["state"], row["verified"], row["network"], row["guest_address"]) == (
        forward.pk, "present", True, "kvpe", "10.92.0.10",
    ), restart.result  # fmt: skip
    assert "forwards_note" not in restart.result, "the host worker ran it: nothing left unverified"
    assert f"port forward #{forward.pk}" in restart.log
    assert wait_for(lambda: http_from(client, URL, timeout=1), 10) == PEER, worker_log.read_text()[-2000:]
    print(f"\nrestart request to the forward reaching the guest again: {time.monotonic() - started:.2f} s")
    forward.refresh_from_db()
    assert forward.state == "present" and forward.checked_at is not None
