"""Topology pictures drawn from the mirror: one host's networking, and the fleet's hosts."""

from .fleet import fleet_svg
from .host import host_svg

__all__ = ["fleet_svg", "host_svg"]
