import sys

from django.core.management.base import BaseCommand, CommandError

from networks.services.desired import MAX_DOCUMENT_CHARS, DocumentRejected
from networks.services.desired_plan import plan_document, plan_lines, resolve_hosts


def read_document(path: str) -> str:
    """The document at `path` ("-": standard input), read no further than the size limit."""
    try:
        if path == "-":
            return sys.stdin.read(MAX_DOCUMENT_CHARS + 1)
        with open(path, encoding="utf-8") as file:
            return file.read(MAX_DOCUMENT_CHARS + 1)
    except (OSError, UnicodeDecodeError) as error:
        raise CommandError(f"Cannot read {path}: {error}") from None


def host_names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


class Command(BaseCommand):
    help = "Show what applying a desired-state document (FILE, or - for stdin) would do on --hosts."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--hosts", required=True, help="Comma-separated host names")
        parser.add_argument("--prune", action="store_true", help="Delete networks the document does not hold")

    def handle(self, *args, file, hosts, prune, **options):
        try:
            plan = plan_document(read_document(file), resolve_hosts(None, host_names(hosts)), prune)
        except DocumentRejected as error:
            raise CommandError(str(error)) from None
        self.stdout.write("\n".join(plan_lines(plan)))
