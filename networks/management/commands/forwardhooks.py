"""`forwardhooks`: kvmweb's port-forward hooks on this hypervisor (run where the host worker runs).

Without options it shows where the hooks and the rules file are and whether they exist. With
`--remove` (decommissioning a hypervisor, after stopping its host worker) it removes every kvmweb
firewall rule, in both backends, the rules file and both hooks, and sends libvirtd SIGHUP so that
it forgets them. The host worker puts everything back at its next forward operation.
"""

from django.core.management.base import BaseCommand, CommandError

from networks.forwarding import engine
from networks.forwarding.rules import FirewallError


class Command(BaseCommand):
    help = "Show kvmweb's port-forward hooks on this hypervisor; --remove takes them and every kvmweb rule away."

    def add_arguments(self, parser):
        parser.add_argument(
            "--remove",
            action="store_true",
            help="remove the hooks, the rules file and every kvmweb firewall rule on this host",
        )

    def handle(self, *args, remove: bool = False, **options):
        paths = engine.HostPaths.from_settings()
        if not remove:
            for kind in engine.HOOK_KINDS:
                path = paths.hook_path(kind)
                self.stdout.write(f"{path}: {'present' if path.exists() else 'absent'}")
            rules = paths.rules_file
            self.stdout.write(f"{rules}: {'present' if rules.exists() else 'absent'}")
            return
        try:
            result = engine.remove_everything(paths)
        except (FirewallError, OSError) as exc:
            raise CommandError(f"kvmweb's forwards not removed: {exc}") from exc
        self.stdout.write("kvmweb's firewall rules and rules file removed")
        self.stdout.write("hooks removed" if result.changed else "no hook was installed")
        for warning in result.warnings:
            self.stderr.write(warning)
