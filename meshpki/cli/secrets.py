"""Passphrases and PINs: from a file, the environment (taken out of it at
start-up, credentials.py) or a prompt on a terminal; never echoed, never in argv."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import click

from meshpki.cli.console import say
from meshpki.cli.options import ENV_SECRETS, PIN_FILE, PIN_VALUE
from meshpki.credentials import NEW_PASSPHRASE_ENV, PASSPHRASE_ENV, PIN_ENV
from meshpki.errors import PassphraseError


def _env_secret(name: str) -> str | None:
    """A secret variable's value, as taken out of the environment at start-up."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ENV_SECRETS in ctx.meta:
        return ctx.meta[ENV_SECRETS].get(name)
    return os.environ.get(name)


def ask_secret(prompt: str, confirm: str | None = None) -> str:
    """A secret typed on the terminal, asked again while empty; with `confirm`, typed twice alike.

    getpass turns the terminal's echo off before it shows the prompt, so whoever
    types as soon as the prompt shows (a person, an expect script) is never echoed.
    click.prompt(hide_input=True) before click 8.4 showed the prompt itself, then
    imported getpass and only then turned echo off: a PIN typed at once was echoed
    (then flushed, and the prompt waited for it forever). Ctrl-C or end of input
    raise KeyboardInterrupt or EOFError, as getpass does.
    """
    while True:
        typed = getpass.getpass(f"{prompt}: ", stream=sys.stderr)
        if not typed:
            continue
        if confirm is None or getpass.getpass(f"{confirm}: ", stream=sys.stderr) == typed:
            return typed
        say("Error: the two entries do not match.")


def _passphrase_from_sources(passphrase_file: Path | None, env: str = PASSPHRASE_ENV) -> bytes | None:
    from meshpki.credentials import read_secret_file

    if passphrase_file is not None:
        return read_secret_file(passphrase_file, "passphrase")
    value = _env_secret(env)
    return value.encode() if value else None


def new_root_passphrase(passphrase_file: Path | None, insecure: bool, env: str = PASSPHRASE_ENV,
                        option: str = "--passphrase-file", prompt: str = "Passphrase for the new root key",
                        ) -> bytes | None:
    """A passphrase for a new root key: file, env, or typed twice; never silently none, never short."""
    from meshpki.credentials import check_new_passphrase

    if insecure:
        return None
    found = _passphrase_from_sources(passphrase_file, env)
    if found:
        return check_new_passphrase(found)
    if sys.stdin.isatty():  # ask_secret never returns an empty passphrase
        return check_new_passphrase(ask_secret(prompt, confirm="Repeat for confirmation").encode())
    escape = ", or say --insecure-no-passphrase" if option == "--passphrase-file" else ""
    raise PassphraseError(f"the root key must be encrypted: set {env}, pass {option}, or run on a terminal{escape}")


def token_pin() -> bytes | None:
    """The PKCS#11 user PIN: --pin-file, env, or a prompt; None lets hsm.py try the URI's pin-source."""
    from meshpki.credentials import read_secret_file

    ctx = click.get_current_context()
    if PIN_VALUE not in ctx.meta:
        pin_file = ctx.meta.get(PIN_FILE)
        env = _env_secret(PIN_ENV)
        if pin_file is not None:
            ctx.meta[PIN_VALUE] = read_secret_file(pin_file, "PIN")
        elif env:
            ctx.meta[PIN_VALUE] = env.encode()
        elif sys.stdin.isatty():
            ctx.meta[PIN_VALUE] = ask_secret("PKCS#11 token user PIN").encode()
        else:
            ctx.meta[PIN_VALUE] = None
    return ctx.meta[PIN_VALUE]


def _unlock_secret(store, folder: Path, passphrase_file: Path | None, prompt: str) -> bytes | None:
    """What unlocks the root key kept in `folder`: its passphrase, its token's PIN, or nothing."""
    kind = store.key_kind(folder)
    if kind == "pkcs11":
        return token_pin()
    if kind == "plain":
        return None
    found = _passphrase_from_sources(passphrase_file)
    if found:
        return found
    if sys.stdin.isatty():
        return ask_secret(prompt).encode()
    raise PassphraseError(f"the root key is encrypted: set {PASSPHRASE_ENV}, pass --passphrase-file, "
                          "or run on a terminal")


def old_root_secret(store, passphrase_file: Path | None) -> bytes | None:
    """The secret that unlocks the store's root key alone: its passphrase, or its token's PIN."""
    return _unlock_secret(store, store.root_dir, passphrase_file, "Root key passphrase")


def new_root_secret(store, passphrase_file: Path | None, old: bytes | None = None) -> bytes | None:
    """The secret of a rotation's new root: its token's PIN, else $MESHPKI_NEW_ROOT_PASSPHRASE
    when it was given its own, else the old root's passphrase (`old` when already read)."""
    kind = store.key_kind(store.rotation_dir)
    if kind == "encrypted" and not _env_secret(NEW_PASSPHRASE_ENV) and old and store.key_kind(store.root_dir) == kind:
        return old
    if kind == "encrypted" and _env_secret(NEW_PASSPHRASE_ENV):
        return str(_env_secret(NEW_PASSPHRASE_ENV)).encode()
    return _unlock_secret(store, store.rotation_dir, passphrase_file, "New root key passphrase")


def root_passphrase(store, passphrase_file: Path | None) -> bytes | None:
    """The secret for every root that may sign now: the store's root, and during a
    rotation also the new root's (CRLs are signed by both), carried by a RootSecret."""
    from meshpki.credentials import RootSecret

    old = old_root_secret(store, passphrase_file)
    if not store.has_rotation():
        return old
    return RootSecret(old or b"", new_root_secret(store, passphrase_file, old))


def signing_secret(store, passphrase_file: Path | None) -> bytes | None:
    """The secret of the key that signs intermediates now: the new root's during a rotation."""
    if store.has_rotation():
        return new_root_secret(store, passphrase_file)
    return old_root_secret(store, passphrase_file)


def token_target(uri: str | None, progress: str):  # -> ca.TokenTarget | None
    """--pkcs11 URI plus the PIN, the URI checked before anything is asked or made."""
    if uri is None:
        return None
    from meshpki import ca, hsm

    hsm.TokenURI.parse(uri)
    return ca.TokenTarget(uri, token_pin(), announce=lambda: say(progress))


def new_root_b_passphrase(store, passphrase_file: Path | None, new_passphrase_file: Path | None) -> bytes | None:
    """Root B's passphrase when it differs from A's (None: reuse A's, or B unencrypted like A)."""
    from meshpki.credentials import check_new_passphrase

    given = _passphrase_from_sources(new_passphrase_file, NEW_PASSPHRASE_ENV)
    if given:
        return check_new_passphrase(given)
    if store.key_kind(store.root_dir) == "pkcs11":  # A has no passphrase to reuse
        return new_root_passphrase(passphrase_file, insecure=False)
    return None
