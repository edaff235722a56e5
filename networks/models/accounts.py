from django.conf import settings
from django.db import models

from networks.choices import Role


class UserRole(models.Model):
    """A user's role in kvmweb and the hosts it applies to.

    A user without a row is a viewer of every host; a Django superuser is an admin of
    every host whatever this row says. `all_hosts` is explicit so that removing the last
    host of a scope never widens it to the whole fleet.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="kvmweb_role")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    all_hosts = models.BooleanField(default=True, help_text="Applies to every host; otherwise only to `hosts`.")
    hosts = models.ManyToManyField("networks.Host", blank=True, related_name="+")

    def __str__(self) -> str:
        scope = "all hosts" if self.all_hosts else "some hosts"
        return f"{self.user} {self.role} ({scope})"


class ApiToken(models.Model):
    """An API token. Only a SHA-256 digest of the key is stored; the key is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The key's first characters, to tell tokens apart")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["user", "-created_at"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="unique_token_name_per_user")]

    def __str__(self) -> str:
        return f"{self.user} {self.name} ({self.prefix}…)"
