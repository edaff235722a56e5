from django.core.management.base import BaseCommand, CommandError

from networks.services.audit import audit_verify


class Command(BaseCommand):
    help = (
        "Recompute the audit log's hash chain. Exits 0 if every event holds; otherwise names "
        "the first event that was altered, or that follows a removed one."
    )

    def handle(self, *args, **options):
        report = audit_verify()
        if not report.intact:
            after = f"#{report.after}" if report.after is not None else "the start of the log"
            raise CommandError(
                f"Audit chain broken at event #{report.broken_at}: it was altered, or an event between "
                f"{after} and #{report.broken_at} was removed ({report.checked} events before it hold)."
            )
        self.stdout.write(f"Audit chain intact: {report.checked} events checked.")
        if report.head:
            # Kept elsewhere, the head hash also reveals events removed from the end of the log.
            self.stdout.write(f"Last hash: {report.head}")
