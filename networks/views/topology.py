"""The topology pictures: one host's networking, and the fleet's hosts. Drawn from the mirror
(networks/topology), never waiting on a hypervisor; a host outside the user's scope is a 404."""

from django.shortcuts import render
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_safe

from networks import topology
from networks.models import Host
from networks.services.permissions import visible_host_ids

from .access import visible_object


@require_safe
def host_topology(request, pk):
    host = visible_object(request, Host.objects, pk, "pk")
    # lxml wrote the markup and escaped every name in it
    picture = mark_safe(topology.host_svg(host))
    return render(request, "networks/topology_host.html", {"host": host, "picture": picture})


@require_safe
def fleet_topology(request):
    picture = mark_safe(topology.fleet_svg(visible_host_ids(request.user)))
    return render(request, "networks/topology_fleet.html", {"picture": picture})
