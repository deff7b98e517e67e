"""The errors library code raises: each message is one line a user can act on.

the CLI (cli/options.py) turns `MeshPKIError` into exit 1 and `InputError` into a usage error
(exit 2); nothing else may reach the user as a traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What every command exits with, but audit, whose exit code is its grade (audit.Grade).

    The README's exit-code table is checked against it; click's own exit codes agree
    (ClickException 1, UsageError 2).
    """

    OK = 0
    FAILED = 1  # the work found a problem (verify: an error) or could not be done
    USAGE = 2  # the command line is wrong


class MeshPKIError(Exception):
    """A problem the user can fix; str(error) names the problem and the fix."""


class InputError(MeshPKIError):
    """The command line itself is wrong (bad cluster name, unknown target): exit 2."""


class StoreError(MeshPKIError):
    """The store is missing, locked, unwritable or holds something unexpected."""


class PassphraseError(MeshPKIError):
    """No passphrase, or the wrong one, for the root key."""


class BundleError(MeshPKIError):
    """A bundle file is missing or cannot be parsed."""


class KubeError(MeshPKIError):
    """The Kubernetes API said no, or could not be reached.

    `status` keeps the HTTP status code (None when no answer came) so callers
    can tell a conflict (409) from a refusal (401/403) from an outage.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

