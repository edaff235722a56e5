"""Idempotent first-run set-up for `make run`: an admin account and the demo host.

A generated admin password is printed once, to the person at the terminal that ran `make run`.
Containers run `bootstrap --no-generated-password`: their output is kept in logs, so they
create the admin only from KVMWEB_ADMIN_PASSWORD and print no secret.
"""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from networks.choices import AuditSource
from networks.models import Host
from networks.services import hosts as host_services

DEMO_XML = Path(settings.BASE_DIR) / "demo" / "fleet.xml"


class Command(BaseCommand):
    help = "Create the admin account (KVMWEB_ADMIN_PASSWORD or a generated one) and the demo host."

    def add_arguments(self, parser):
        parser.add_argument("--admin", default=os.environ.get("KVMWEB_ADMIN_USER", "admin"))
        parser.add_argument("--no-demo", action="store_true", help="Do not register the demo host")
        parser.add_argument(
            "--no-generated-password",
            action="store_true",
            help="Create the admin only from KVMWEB_ADMIN_PASSWORD; never generate and print a password "
            "(for services whose output is kept in logs, such as containers)",
        )

    def handle(self, *args, admin, no_demo, no_generated_password, **options):
        self._ensure_admin(admin, may_generate=not no_generated_password)
        if not no_demo:
            self._ensure_demo_host()

    def _ensure_admin(self, username: str, may_generate: bool) -> None:
        users = get_user_model().objects
        password = os.environ.get("KVMWEB_ADMIN_PASSWORD")
        if users.filter(username=username).exists():
            if password:
                user = users.get(username=username)
                user.set_password(password)
                user.save(update_fields=["password"])
            self.stdout.write(f"Admin account: {username} (exists)")
            return
        if not password and not may_generate:
            self.stdout.write(
                f"Admin account: {username} not created (set KVMWEB_ADMIN_PASSWORD, or run manage.py createsuperuser)"
            )
            return
        generated = not password
        password = password or secrets.token_urlsafe(16)
        users.create_superuser(username=username, email="", password=password)
        if generated:
            self.stdout.write(self.style.WARNING(f"Admin account: {username}  password: {password}  (shown once)"))
        else:
            self.stdout.write(f"Admin account: {username} (password from KVMWEB_ADMIN_PASSWORD)")

    def _ensure_demo_host(self) -> None:
        uri = f"test://{DEMO_XML}"
        host = Host.objects.filter(name="demo").first()
        if host is None:
            host_services.host_create(name="demo", uri=uri, actor=None, source=AuditSource.SYSTEM)
            self.stdout.write(f"Demo host registered: {uri}")
        else:
            if host.uri != uri:  # the checkout moved: point the demo host at this copy
                Host.objects.filter(pk=host.pk).update(uri=uri)
                host.uri = uri
            # The worker restarted: the test driver starts again from the file, so re-read it.
            host_services.host_request_sync(host=host, actor=None, source=AuditSource.SYSTEM)
            self.stdout.write("Demo host: exists, sync requested")
