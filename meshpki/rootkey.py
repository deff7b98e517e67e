"""The root key file's own life: exported for disaster recovery, re-encrypted
under a new passphrase.

The store keeps the root key scrypt-encrypted, which the `openssl` CLI cannot
open (its scrypt memory cap is compiled in); an export is PBKDF2-HMAC-SHA256
instead, which every OpenSSL opens. A root inside a PKCS#11 token has no file
to export or re-encrypt: both refuse and say why.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from meshpki import keys, publish
from meshpki.errors import InputError, MeshPKIError, StoreError
from meshpki.store import ROOT_KEY_FILE, ROOT_KEY_URI_FILE, Store


class RootKeyError(MeshPKIError):
    """The root key cannot be exported or re-encrypted as asked."""


@dataclass(frozen=True)
class Exported:
    path: Path
    which: str  # "root" or "new root"
    iterations: int


@dataclass(frozen=True)
class Changed:
    keys: tuple[Path, ...]  # the key files re-encrypted
    notes: tuple[str, ...] = ()


def _folder(store: Store, new_root: bool) -> tuple[Path, str]:
    if not new_root:
        return store.root_dir, "root"
    if not store.has_rotation():
        raise InputError("no root rotation is under way, so there is no new root key; leave out --new-root")
    return store.rotation_dir, "new root"


def _refuse_token(store: Store, folder: Path, what: str, doing: str, instead: str) -> None:
    name, data = store.key_record(folder)
    if name == ROOT_KEY_URI_FILE:
        uri = data.decode("utf-8", "replace").strip()
        raise RootKeyError(f"the {what} key lives inside a PKCS#11 token ({uri}) and cannot be {doing}: "
                           f"it was generated there as non-extractable; {instead}")


def check_exportable(store: Store, out: Path, new_root: bool = False) -> tuple[Path, str]:
    """Refuse, before any secret is asked for, a key that has no file to export,
    and an --out that exists, has no folder, or lies inside the store."""
    folder, what = _folder(store, new_root)
    _refuse_token(store, folder, what, "exported", "back the token up with its vendor's tools instead")
    store.refuse_output(out, "--out")
    if out.exists() or out.is_symlink():
        raise InputError(f"{out} exists; meshpki never overwrites a key file: choose another --out or remove it")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent} is not a folder; create it first")
    return folder, what


def check_changeable(store: Store) -> None:
    """Refuse, before any secret is asked for, a root whose key has no passphrase to change."""
    _refuse_token(store, store.root_dir, "root", "given a passphrase",
                  "a token key is protected by the token's PIN: change that with the token's tools "
                  "(e.g. softhsm2-util / pkcs11-tool --change-pin)")


def export_root_key(store: Store, out: Path, passphrase: bytes | None, export_passphrase: bytes | None = None,
                    new_root: bool = False, iterations: int = keys.PBKDF2_ITERATIONS) -> Exported:
    """Write the root key as OpenSSL-readable encrypted PKCS#8 to a NEW file, 0600.

    Encrypted with the key's own passphrase; an unencrypted root (a throw-away
    store) needs `export_passphrase`, since an export is never plaintext.
    """
    folder, what = check_exportable(store, out, new_root)
    key = _as_private(store.load_key(folder, passphrase, f"{what} key"))
    secret = passphrase if store.key_kind(folder) == "encrypted" else export_passphrase
    if not secret:
        raise InputError(f"the {what} key is stored unencrypted; an export is always encrypted: give it a passphrase")
    pem = keys.to_portable_encrypted_pem(key, bytes(secret), iterations)
    try:
        _create_exclusively(out, pem)
    except FileExistsError:
        raise InputError(f"{out} appeared meanwhile; meshpki never overwrites a key file") from None
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None
    return Exported(out, what, iterations)


def _create_exclusively(path: Path, data: bytes) -> None:
    """A new 0600 file that appears whole or not at all: written beside it,
    fsynced, then hard-linked into place (which fails if the name is taken)."""
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    try:
        publish.write_file(tmp, data, 0o600)
        os.link(tmp, path)
        publish.fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def change_passphrase(store: Store, old: bytes | None, new: bytes) -> Changed:
    """Re-encrypt the root key under `new`, atomically.

    During a root rotation the new root's key is re-encrypted too when the old
    passphrase opens it (it shared the passphrase); a new root with its own
    passphrase, or in a token, is left as it is.
    """
    check_changeable(store)
    notes: list[str] = []
    with store.locked():
        plans = [(store.root_dir, keys.to_encrypted_pem(_as_private(store.load_key(store.root_dir, old, "root key")),
                                                        new))]
        if store.has_rotation():
            name, _ = store.key_record(store.rotation_dir)
            if name == ROOT_KEY_URI_FILE:
                notes.append("the new root's key is in a PKCS#11 token: unchanged")
            else:
                try:
                    b_key = store.load_key(store.rotation_dir, old, "new root key")
                except MeshPKIError:
                    notes.append("the new root's key has its own passphrase: unchanged "
                                 "(change it after `rotate-root finish`)")
                else:
                    plans.insert(0, (store.rotation_dir, keys.to_encrypted_pem(_as_private(b_key), new)))
        try:  # both keys or neither: a half-changed rotation would need two passphrases
            publish.replace_files(store.path, {folder / ROOT_KEY_FILE: pem for folder, pem in plans}, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot re-encrypt the root key in {store.path}: {exc.strerror or exc}") from None
    return Changed(tuple(folder / ROOT_KEY_FILE for folder, _ in reversed(plans)), tuple(notes))


def _as_private(key: object) -> keys.PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise RootKeyError("the root key is not a key file; nothing to re-encrypt")
    return key
