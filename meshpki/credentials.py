"""Where the root's secrets come from: the environment, a file, or the terminal.

Secrets given in the environment are taken OUT of it as soon as meshpki
starts: every child process inherits the environment, and the kubernetes
client runs kubeconfig `exec` credential plugins (cloud CLIs, scripts) that
have no business seeing the root passphrase or a token PIN. The CLI (cli/secrets.py) prompts;
this module only reads and checks, so it needs no click.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from meshpki.errors import InputError, PassphraseError

PASSPHRASE_ENV = "MESHPKI_ROOT_PASSPHRASE"
NEW_PASSPHRASE_ENV = "MESHPKI_NEW_ROOT_PASSPHRASE"
PIN_ENV = "MESHPKI_PKCS11_PIN"
SECRET_VARS = (PASSPHRASE_ENV, NEW_PASSPHRASE_ENV, PIN_ENV)

# NIST SP 800-63B's floor for a memorised secret is 8; a root key passphrase
# protects the whole mesh against an offline attack on a copied store, so more.
MIN_PASSPHRASE_CHARS = 12


class RootSecret(bytes):
    """The old root's secret (passphrase or PIN), carrying the new root's while a
    rotation keeps the two keys differently (another passphrase, or a token).

    It is bytes, so every caller that unlocks one key keeps working; the store
    hands `new_root` to the new root's key (CRLs are signed by both roots).
    """

    new_root: bytes | None

    def __new__(cls, value: bytes, new_root: bytes | None) -> RootSecret:
        made = super().__new__(cls, value)
        made.new_root = new_root
        return made

    def __repr__(self) -> str:  # never print a secret
        return "RootSecret(...)"


def take_from_environ(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Remove every secret variable from `environ`; return the values that were set."""
    return {name: environ.pop(name) for name in SECRET_VARS if name in environ}


def read_secret_file(path: Path, what: str) -> bytes:
    """The first line of a secret file (a trailing newline is not part of the secret)."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise PassphraseError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if not lines or not lines[0]:
        raise PassphraseError(f"{what} file {path} is empty")
    return lines[0]


def check_new_passphrase(passphrase: bytes) -> bytes:
    """Refuse a new root passphrase too short to resist guessing (exit 2)."""
    if len(passphrase.decode("utf-8", "replace")) < MIN_PASSPHRASE_CHARS:
        raise InputError(f"a root key passphrase needs at least {MIN_PASSPHRASE_CHARS} characters "
                         f"(this one has {len(passphrase.decode('utf-8', 'replace'))}); choose a longer one")
    return passphrase
