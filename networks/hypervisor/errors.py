"""Errors raised by the hypervisor layer, each marked retryable or permanent."""

from __future__ import annotations


class HypervisorError(Exception):
    """A libvirt call failed. `retryable` says whether trying again later may help."""

    retryable = False

    def __init__(self, message: str, *, code: int | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        if retryable is not None:
            self.retryable = retryable


class InvalidUri(HypervisorError):
    """A host URI that kvmweb refuses to hand to libvirt."""


class HostUnreachable(HypervisorError):
    """The connection to the host could not be opened or was lost."""

    retryable = True


class NotFound(HypervisorError):
    """The network, guest or device does not exist on the host."""


class InvalidXml(HypervisorError):
    """XML that cannot be parsed, or that kvmweb refuses to build."""


class AlreadyExists(HypervisorError):
    """An object with that name is already defined on the host."""


class Unsupported(HypervisorError):
    """The host's libvirt driver does not offer this call (the test driver, old versions)."""


BRIEF_MESSAGE_LIMIT = 500


def brief_message(text: str, limit: int = BRIEF_MESSAGE_LIMIT) -> str:
    """The first line of an error message, at most `limit` characters, for pages and rows.

    libvirt's XML parser errors quote the offending line of the file on the lines after
    the first (for a test-driver URI naming /etc/passwd, its first line): that must never
    reach a page. The cap keeps huge input from being echoed back.
    """
    lines = str(text).strip().splitlines()
    first_line = lines[0].strip() if lines else ""
    if len(first_line) <= limit:
        return first_line
    return first_line[: limit - 1] + "…"
