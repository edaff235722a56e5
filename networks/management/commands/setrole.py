from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from networks.choices import AuditSource, Role
from networks.services.permissions import role_set


class Command(BaseCommand):
    help = (
        "Give USERNAME a role (viewer, operator or admin), on every host or only on --hosts. "
        "Creates the user if needed, without a password (`apitoken` gives it a token)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("role", choices=Role.values)
        parser.add_argument("--hosts", default=None, help="Comma-separated host names; default: every host")

    def handle(self, *args, username, role, hosts, **options):
        host_names = None if hosts is None else [name.strip() for name in hosts.split(",") if name.strip()]
        if host_names == []:
            raise CommandError("--hosts names no host; leave it out to give the role on every host.")
        users = get_user_model().objects
        try:
            with transaction.atomic():  # an unknown host name creates no user either
                user = users.filter(username=username).first()
                if user is None:
                    user = users.create_user(username=username)  # no usable password: `apitoken` gives a token
                role_set(user=user, role=role, host_names=host_names, actor=None, source=AuditSource.SYSTEM)
        except ValueError as error:
            raise CommandError(str(error)) from None
        scope = "every host" if host_names is None else ", ".join(host_names)
        self.stdout.write(f"{username}: {role} on {scope}")
