"""Template filters that keep secrets off pages."""

from django import template

from networks.hypervisor.client import redact_uri

register = template.Library()


@register.filter
def without_userinfo(uri: str) -> str:
    """A host URI without its user information (user@), as pages show it."""
    return redact_uri(uri)
