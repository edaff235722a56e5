"""Users and their roles (admins only)."""

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from networks.choices import Role
from networks.models import Host, UserRole
from networks.services.permissions import user_role_grant

from .access import require
from .common import WEB


class RoleForm(forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]{1,150}$", max_length=150)
    role = forms.ChoiceField(choices=Role.choices)
    hosts = forms.ModelMultipleChoiceField(
        queryset=Host.objects.order_by("name"), required=False, help_text="None selected: every host"
    )


def user_list(request):
    require(request, "user.manage")
    users = get_user_model().objects.order_by("username")
    roles = {row.user_id: row for row in UserRole.objects.prefetch_related("hosts")}
    rows = [(user, roles.get(user.pk)) for user in users]
    return render(request, "networks/user_list.html", {"rows": rows, "form": RoleForm()})


@require_POST
def user_role_set(request):
    """Create the user if needed (no password) and set its role and host scope."""
    require(request, "user.manage")
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))
        return redirect("networks:user_list")
    data = form.cleaned_data
    host_names = [host.name for host in data["hosts"]] or None
    user_role_grant(username=data["username"], role=data["role"], host_names=host_names, actor=request.user, source=WEB)
    scope = ", ".join(host_names or ["every host"])
    messages.success(request, f"{data['username']} is now {data['role']} on {scope}.")
    return redirect("networks:user_list")
