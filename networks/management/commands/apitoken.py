from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from networks.services.tokens import cli_token_key


class Command(BaseCommand):
    help = (
        "Print a new API token key for USERNAME (its token named `cli`, rotated if it exists: "
        "kvmweb keeps only digests, so an existing key cannot be shown again)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            raise CommandError(f"{username} is not active: its tokens would not work.")
        # The key alone on stdout, so that scripts can read it: TOKEN=$(manage.py apitoken alice)
        self.stdout.write(cli_token_key(user))
