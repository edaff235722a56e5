"""The PCI devices a guest holds, read from its mirrored XML for its page."""

from django import template

from networks.hypervisor import hostdevs
from networks.hypervisor.errors import InvalidXml

register = template.Library()


@register.filter
def pci_devices(domain_xml: str) -> list:
    """Its `<hostdev>`s and `<interface type='hostdev'>`s (none when the XML cannot be read)."""
    try:
        return hostdevs.assigned_devices(domain_xml)
    except InvalidXml:
        return []
