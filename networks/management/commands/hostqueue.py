from django.core.management.base import BaseCommand, CommandError

from networks.services.hostworker import HostWorkerError, host_worker_queue


class Command(BaseCommand):
    help = "Print the Celery queue of host HOSTNAME: the queue its host worker consumes."

    def add_arguments(self, parser):
        parser.add_argument("hostname")

    def handle(self, *args, hostname, **options):
        try:
            queue = host_worker_queue(host_name=hostname)
        except HostWorkerError as exc:
            raise CommandError(str(exc)) from exc
        # The queue alone on stdout, for scripts: QUEUE=$(manage.py hostqueue kvm1)
        self.stdout.write(queue)
