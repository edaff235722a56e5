from django.core.management.base import BaseCommand, CommandError

from networks.models import Host
from networks.services.desired import DocumentRejected, export_networks


class Command(BaseCommand):
    help = "Print a host's networks (all, or --names a,b) as a desired-state document (YAML), from the mirror."

    def add_arguments(self, parser):
        parser.add_argument("host", help="The host's name in kvmweb")
        parser.add_argument("--names", default=None, help="Comma-separated network names; default: every network")

    def handle(self, *args, host, names, **options):
        found = Host.objects.filter(name=host).first()
        if found is None:
            raise CommandError(f"Unknown host {host!r}.")
        wanted = None if names is None else [name.strip() for name in names.split(",") if name.strip()]
        try:
            self.stdout.write(export_networks(found, wanted), ending="")
        except DocumentRejected as error:
            raise CommandError(str(error)) from None
