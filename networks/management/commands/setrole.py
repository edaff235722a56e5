from django.core.management.base import BaseCommand, CommandError

from networks.choices import AuditSource, Role
from networks.services.permissions import user_role_grant


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
        try:
            user_role_grant(username=username, role=role, host_names=host_names, actor=None, source=AuditSource.SYSTEM)
        except ValueError as error:
            raise CommandError(str(error)) from None
        scope = "every host" if host_names is None else ", ".join(host_names)
        self.stdout.write(f"{username}: {role} on {scope}")
