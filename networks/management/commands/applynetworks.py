import argparse
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from networks.choices import AuditSource, OperationStatus
from networks.models import Operation
from networks.services.desired import DocumentRejected
from networks.services.desired_plan import apply_document, resolve_hosts
from networks.services.permissions import PermissionDenied

from .plannetworks import host_names, read_document

FINISHED = {OperationStatus.SUCCEEDED, OperationStatus.FAILED, OperationStatus.CANCELLED}


def seconds_argument(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= seconds <= 7 * 24 * 3600:  # also refuses nan and inf
        raise argparse.ArgumentTypeError("between 0 and 604800 seconds")
    return seconds


class Command(BaseCommand):
    help = (
        "Apply a desired-state document (FILE, or - for stdin) to --hosts as USERNAME (authorised and "
        "audited as that user): one operation per network and host, run by the workers."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--hosts", required=True, help="Comma-separated host names")
        parser.add_argument("--as", dest="username", required=True, help="The kvmweb user the changes are made as")
        parser.add_argument("--prune", action="store_true", help="Delete networks the document does not hold")
        parser.add_argument("--wait", action="store_true", help="Wait until every operation has finished")
        parser.add_argument(
            "--timeout", type=seconds_argument, default=600, metavar="SECONDS",
            help="With --wait: give up (exit status 1) after this long; the operations go on (default 600)",
        )  # fmt: skip

    def handle(self, *args, file, hosts, username, prune, wait, timeout, **options):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {username!r}.")
        try:
            targets = resolve_hosts(user, host_names(hosts))
            result = apply_document(read_document(file), targets, prune=prune, actor=user, source=AuditSource.SYSTEM)
        except (DocumentRejected, PermissionDenied) as error:
            raise CommandError(str(error)) from None
        for item in result.results:
            operations = ", ".join(f"#{ref['id']} {ref['kind']}" for ref in item["operations"])
            why = item.get("reason") or item["detail"]
            self.stdout.write(f"{item['host']:<16} {item['network']:<24} {item['action']:<10} {item['status']:<9} "
                              f"{operations or why}".rstrip())  # fmt: skip
        self.stdout.write(result.summary)
        if wait:
            self._wait([ref["id"] for item in result.results for ref in item["operations"]], timeout)

    def _wait(self, ids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while Operation.objects.filter(pk__in=ids).exclude(status__in=FINISHED).exists():
            if time.monotonic() >= deadline:
                unfinished = Operation.objects.filter(pk__in=ids).exclude(status__in=FINISHED)
                listed = ", ".join(f"#{operation.pk} {operation.status}" for operation in unfinished)
                raise CommandError(f"Gave up after {timeout:g} s; not finished yet: {listed}.")
            time.sleep(min(1, max(0, deadline - time.monotonic())))
        failed = Operation.objects.filter(pk__in=ids).exclude(status=OperationStatus.SUCCEEDED)
        for operation in failed:
            self.stdout.write(f"operation #{operation.pk} {operation.kind}: {operation.status}: {operation.error}")
        if failed:
            raise CommandError(f"{failed.count()} of {len(ids)} operation(s) did not succeed.")
        self.stdout.write(f"all {len(ids)} operation(s) succeeded")
