"""How a port forward's state reads on a page."""

from django import template

from networks.choices import ForwardState
from networks.services.forwards import live_state

register = template.Library()

BADGES = {
    ForwardState.PRESENT: "ok",
    ForwardState.GUEST_STOPPED: "warn",
    ForwardState.UNKNOWN: "warn",
    ForwardState.MISSING: "bad",
    ForwardState.NO_ADDRESS: "bad",
    ForwardState.WORKER_ABSENT: "bad",
    ForwardState.DISABLED: "",
}


@register.inclusion_tag("networks/partials/forward_state.html")
def forward_state(forward):
    """The forward's live state as a badge: what the host worker found, or that it is absent."""
    state = live_state(forward)
    return {"state": state, "label": ForwardState(state).label, "badge": BADGES.get(state, "")}
