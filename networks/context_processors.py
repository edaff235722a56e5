from networks.services.permissions import allowed_actions


def fleet_permissions(request):
    """`fleet_may`: the fleet-wide actions the user may do (add hosts, manage users), for the nav."""
    user = getattr(request, "user", None)
    return {"fleet_may": allowed_actions(user) if user is not None and user.is_authenticated else frozenset()}
