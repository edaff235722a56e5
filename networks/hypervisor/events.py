"""libvirt events: what changed on a host, delivered as small dataclasses to one callback.

`subscribe(conn, callback)` registers for network lifecycle, domain lifecycle, domain device
added/removed and node device lifecycle events, and for the connection's close (the daemon
went away, or keepalive gave up on a silent host). libvirt delivers events from its default
event loop, which the client module registers before any connection is opened and runs in a
daemon thread of this process (client._ensure_event_loop): the callback therefore runs in
that thread and must only hand the event on (e.g. put it in a queue), never call libvirt.

Events name an object, nothing more: the receiver re-reads that object to learn its state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable

import libvirt

from . import client
from .client import libvirt_errors

logger = logging.getLogger(__name__)

NETWORK_EVENTS = {
    libvirt.VIR_NETWORK_EVENT_DEFINED: "defined",
    libvirt.VIR_NETWORK_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_NETWORK_EVENT_STARTED: "started",
    libvirt.VIR_NETWORK_EVENT_STOPPED: "stopped",
}
DOMAIN_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}
NODE_DEVICE_EVENTS = {
    libvirt.VIR_NODE_DEVICE_EVENT_CREATED: "created",
    libvirt.VIR_NODE_DEVICE_EVENT_DELETED: "deleted",
    getattr(libvirt, "VIR_NODE_DEVICE_EVENT_DEFINED", 2): "defined",
    getattr(libvirt, "VIR_NODE_DEVICE_EVENT_UNDEFINED", 3): "undefined",
}
CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "the daemon closed the connection",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "no keepalive answer from the host",
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by this process",
}


@dataclasses.dataclass(frozen=True)
class NetworkEvent:
    """A network was defined, undefined, started or stopped."""

    name: str
    event: str


@dataclasses.dataclass(frozen=True)
class GuestEvent:
    """A domain changed state ("started", "stopped", "undefined"…), or a device was added
    or removed ("device-added" / "device-removed", with the device's alias)."""

    name: str
    event: str
    device: str = ""


@dataclasses.dataclass(frozen=True)
class NodeDeviceEvent:
    """A node device appeared or went away (a VF created, a NIC hot-plugged…)."""

    name: str
    event: str


@dataclasses.dataclass(frozen=True)
class ConnectionClosed:
    """The connection is gone: every later call on it fails until a new one is opened.
    `local`: this process closed it (nothing is wrong with the host)."""

    reason: str
    local: bool = False


Event = NetworkEvent | GuestEvent | NodeDeviceEvent | ConnectionClosed


class Subscription:
    """The callbacks registered on one connection; `cancel()` removes them (a connection that
    is already closed needs no cancelling, and one that fails is ignored)."""

    def __init__(self, conn: libvirt.virConnect, callback: Callable[[Event], None]):
        self.conn = conn
        self.callback = callback
        self.network_ids: list[int] = []
        self.domain_ids: list[int] = []
        self.node_device_ids: list[int] = []
        self.close_registered = False
        self.unsupported: list[str] = []
        self._lock = threading.Lock()
        self._cancelled = False

    def deliver(self, event: Event) -> None:
        with self._lock:
            if self._cancelled:
                return
        try:
            self.callback(event)
        except Exception:  # never let an exception escape into libvirt's event loop
            logger.exception("event callback failed for %s", event)

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
        for ids, deregister in (
            (self.network_ids, self.conn.networkEventDeregisterAny),
            (self.domain_ids, self.conn.domainEventDeregisterAny),
            (self.node_device_ids, self.conn.nodeDeviceEventDeregisterAny),
        ):
            for callback_id in ids:
                with contextlib.suppress(libvirt.libvirtError):
                    deregister(callback_id)
        if self.close_registered:
            with contextlib.suppress(libvirt.libvirtError):
                self.conn.unregisterCloseCallback()


def subscribe(
    conn: libvirt.virConnect,
    callback: Callable[[Event], None],
    *,
    keepalive: tuple[int, int] | None = None,
) -> Subscription:
    """Deliver every event of `conn` to `callback`, from libvirt's event-loop thread.

    `keepalive` = (interval, count) asks libvirt to probe the host every `interval` seconds
    and close the connection after `count` unanswered probes (a ConnectionClosed follows).
    A connection that already runs keepalive keeps its first setting; drivers that run in
    this process (test:///) have no peer and refuse keepalive, which is ignored. Node device
    events are optional too: a driver without them is noted in `unsupported`.
    """
    client._ensure_event_loop()  # the loop every connection of this process already uses
    sub = Subscription(conn, callback)
    with libvirt_errors():
        sub.network_ids.append(
            conn.networkEventRegisterAny(None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, _on_network, sub)
        )
        sub.domain_ids.append(conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, _on_domain, sub))
        for event_id, name in (
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, "device-added"),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, "device-removed"),
        ):
            sub.domain_ids.append(conn.domainEventRegisterAny(None, event_id, _device_callback(name), sub))
    try:
        sub.node_device_ids.append(
            conn.nodeDeviceEventRegisterAny(None, libvirt.VIR_NODE_DEVICE_EVENT_ID_LIFECYCLE, _on_node_device, sub)
        )
    except libvirt.libvirtError as error:
        sub.unsupported.append(f"node device events: {error.get_error_message()}")
    try:
        conn.registerCloseCallback(_on_close, sub)
        sub.close_registered = True
    except libvirt.libvirtError as error:
        sub.unsupported.append(f"close callback: {error.get_error_message()}")
    if keepalive is not None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(*keepalive)
    return sub


def _on_network(_conn, net, event, _detail, sub: Subscription) -> None:
    sub.deliver(NetworkEvent(name=net.name(), event=NETWORK_EVENTS.get(event, str(event))))


def _on_domain(_conn, dom, event, _detail, sub: Subscription) -> None:
    sub.deliver(GuestEvent(name=dom.name(), event=DOMAIN_EVENTS.get(event, str(event))))


def _device_callback(name: str):
    def on_device(_conn, dom, device_alias, sub: Subscription) -> None:
        sub.deliver(GuestEvent(name=dom.name(), event=name, device=device_alias or ""))

    return on_device


def _on_node_device(_conn, dev, event, _detail, sub: Subscription) -> None:
    sub.deliver(NodeDeviceEvent(name=dev.name(), event=NODE_DEVICE_EVENTS.get(event, str(event))))


def _on_close(_conn, reason, sub: Subscription) -> None:
    sub.deliver(
        ConnectionClosed(
            reason=CLOSE_REASONS.get(reason, f"closed ({reason})"),
            local=reason == libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT,
        )
    )
