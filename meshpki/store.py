"""The store: one folder holding the root and every cluster's bundle.

    STORE/                                       0700, owned by the user
      root/root-cert.pem, root/root-key.pem     the root (key encrypted)
        or root/root-key.pkcs11                  ... or the RFC 7512 URI of a key in a token
      clusters/<cluster>/ca-cert.pem ...         exactly the four cacerts files
      rotation/                                  a root rotation under way
      history/clusters/<cluster>/<stamp>/        replaced bundles, certificates only
      history/roots/<stamp>/                     roots that were retired
      history/rotations/<stamp>/                 finished root rotations' records
      crl/                                       revocations and the roots' CRLs (crl.py)
      history/crl/<stamp>/                       CRL states that were replaced
      .lock                                      one writer at a time (0600)

Folders are published whole or not at all by publish.py. A replaced
intermediate's key is not archived: that intermediate stays trusted by the
whole mesh until it expires, so a copy in history would only be a spare
weapon (docs/store.md says how to go back to an older bundle).

Like ssh's StrictModes, a store folder that someone else owns or could
write to is refused before anything is read from it or written to it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from meshpki import bundle as bundlemod
from meshpki import pem, publish
from meshpki.bundle import Bundle
from meshpki.credentials import RootSecret
from meshpki.errors import InputError, MeshPKIError, StoreError
from meshpki.keys import is_encrypted_pem, load_private_key, public_keys_match

if TYPE_CHECKING:
    from meshpki.signing import SigningKey

ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"
SIGNER_CHAIN_FILE = "chain.pem"
ROOT_KEY_URI_FILE = "root-key.pkcs11"  # a root key inside a PKCS#11 token: its URI, never a key
CRL_DIR = "crl"
CRL_STATE_FILE = "state.json"
CRL_PENDING_FILE = "pending.json"
LOCK_TIMEOUT_SECONDS = 30.0

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def default_store_path() -> Path:
    """$MESHPKI_STORE is read by the CLI; this is the fallback: the user's data dir."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "meshpki"


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be a store folder (a file, or under one), else None."""
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            if candidate.is_dir():
                return None
            return "is a file, not a folder" if candidate == path else f"{candidate} is a file, not a folder"
    return None


def is_cluster_name(name: str) -> bool:
    return isinstance(name, str) and _DNS1123_LABEL.fullmatch(name) is not None  # "c5\n" is not a name


def validate_cluster_name(name: str) -> str:
    """Cluster names become folder names and Kubernetes label values: DNS-1123 labels only."""
    if not is_cluster_name(name):
        raise InputError(
            f"invalid cluster name {name!r}: use a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return name


@dataclass(frozen=True)
class HistoryEntry:
    """One archived bundle or root, as `meshpki history` lists it."""

    kind: str  # "cluster", "root" or "rotation"
    name: str  # the cluster, or "root" / "rotation"
    stamp: str
    path: Path

    @property
    def cert_file(self) -> Path:
        return self.path / (bundlemod.CA_CERT if self.kind == "cluster" else ROOT_CERT_FILE)

    def certificate(self) -> x509.Certificate | None:
        """The archived CA certificate (the root, or the cluster's intermediate); None when unreadable."""
        try:
            return bundlemod.parse_certs(self.cert_file.read_bytes(), str(self.cert_file))[0]
        except (OSError, MeshPKIError):
            return None


def is_key_file(name: str) -> bool:
    return name.endswith("key.pem") or name == bundlemod.TLS_KEY


def file_mode(name: str) -> int:
    """Private keys 0600, certificates and state 0644 (inside a 0700 store)."""
    return 0o600 if is_key_file(name) else 0o644


class Store:
    """A meshpki store folder. Reading needs no lock; every write takes it."""

    def __init__(self, path: Path | str, lock_timeout: float | None = None) -> None:
        self.path = Path(path).expanduser()
        self._lock_timeout = lock_timeout
        self._lock_depth = 0  # how deep the thread holding _threads is in locked()
        self._threads = threading.RLock()  # the flock is the process's; this orders its threads
        self._trusted = False

    @property
    def lock_timeout(self) -> float:
        """Seconds to wait for another writer (the module default, read when needed)."""
        return LOCK_TIMEOUT_SECONDS if self._lock_timeout is None else self._lock_timeout

    # -- layout -----------------------------------------------------------
    @property
    def root_dir(self) -> Path:
        return self.path / "root"

    @property
    def clusters_dir(self) -> Path:
        return self.path / "clusters"

    @property
    def history_dir(self) -> Path:
        return self.path / "history"

    def cluster_dir(self, cluster: str) -> Path:
        return self._inside(self.clusters_dir / validate_cluster_name(cluster))

    def _inside(self, path: Path) -> Path:
        """Refuse a path that a symlink leads out of the store."""
        self.check_private()
        if path.is_symlink() or (path.exists() and not path.resolve().is_relative_to(self.path.resolve())):
            raise StoreError(f"{path} is a symlink or leads outside the store {self.path}; remove it")
        return path

    def refuse_output(self, path: Path | None, option: str) -> None:
        """Refuse a file or folder the user names for output (--out, --textfile) that
        lies inside the store, symlinks resolved: meshpki's own writes there are
        atomic, locked and checked, and an output would overwrite or plant store
        files (a CSR over root-cert.pem, a keyless bundle among the clusters)."""
        if path is None or str(path) == "-":
            return
        named = Path(path).expanduser().absolute()  # not normalized: "link/.." is where the kernel goes
        if Path(os.path.realpath(named)).is_relative_to(os.path.realpath(self.path)):
            how = "" if Path(os.path.abspath(named)).is_relative_to(os.path.abspath(self.path)) else " (through a symlink)"
            raise InputError(f"{option} {path} is inside the store {self.path}{how}, which only meshpki itself "
                             "writes; name a path outside the store")

    def check_private(self) -> None:
        """Refuse a store someone else owns or may write to (ssh's StrictModes).

        Another user who can write a store folder could swap a bundle or the
        root certificate under us, and one who can read a key holds it; checked
        once per Store, before the first read or write: the top folder, the
        store's own folders below it, and every key file they hold.
        """
        if self._trusted:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # nothing to trust yet; _ensure_dirs creates it 0700
        except NotADirectoryError:
            raise StoreError(f"store {self.path} is not a folder: part of that path is a file") from None
        except OSError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"store {self.path} is not a folder")
        _refuse_open_folder(self.path, st, "store")
        try:
            for folder, entry in self._private_parts():
                entry_st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(entry_st.st_mode):
                    _refuse_open_folder(folder, entry_st, "store folder")
                elif stat.S_ISREG(entry_st.st_mode) and entry_st.st_mode & 0o077:
                    raise StoreError(f"private key {folder} is open to {_who(entry_st.st_mode, 0o070, 0o007)} (mode "
                                     f"{stat.S_IMODE(entry_st.st_mode):04o}); run `chmod 600 {folder}` (meshpki keeps "
                                     "keys 0600), and rotate the key if someone else may have read it")
        except OSError as exc:
            raise StoreError(f"cannot check store {self.path}: {exc.strerror or exc}") from None
        self._trusted = True

    def _private_parts(self) -> Iterator[tuple[Path, os.DirEntry[str]]]:
        """The store's own folders below the top (root/, clusters/ and each cluster's,
        rotation/, crl/, pending/ and signed/ and theirs, as present) and the key files
        they hold. Symlinks are left to _inside, hidden staging folders to recover()."""
        nested = ("clusters", "pending", "signed")
        for top in _listing(self.path):
            if top.name not in ("root", "rotation", "crl", *nested) or not top.is_dir(follow_symlinks=False):
                continue
            yield Path(top.path), top
            folders = [top] if top.name not in nested else [
                e for e in _listing(top.path) if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
            for folder in folders:
                if folder is not top:
                    yield Path(folder.path), folder
                yield from ((Path(e.path), e) for e in _listing(folder.path) if is_key_file(e.name))

    # -- the root ---------------------------------------------------------
    def has_root(self) -> bool:
        return (self.root_dir / ROOT_CERT_FILE).is_file()

    def _require_root(self) -> None:
        self.check_private()
        if not self.has_root():
            self._settle()
        if not self.has_root():
            self._refuse_half_root()
            raise StoreError(f"no root CA in store {self.path}; run `meshpki init-root` first (or pass --store)")

    def _refuse_half_root(self) -> None:
        """root/ that holds something but no root-cert.pem is a damaged root, not a
        missing one: init-root would refuse to overwrite it, so never suggest it."""
        if self.has_root() or not self.root_dir.is_dir():
            return
        if any(not p.name.startswith(".") for p in self.root_dir.iterdir()):
            raise StoreError(f"{self.root_dir / ROOT_CERT_FILE} is missing but {self.root_dir} is not empty: the "
                             "store's root is damaged; restore root-cert.pem from a backup")

    def root_cert_pem(self) -> bytes:
        self._require_root()
        return self._read(self._inside(self.root_dir) / ROOT_CERT_FILE)

    def root_cert(self) -> x509.Certificate:
        return bundlemod.parse_certs(self.root_cert_pem(), f"{self.root_dir / ROOT_CERT_FILE}")[0]

    def root_key_encrypted(self) -> bool:
        return self.key_kind(self.root_dir) == "encrypted"

    def key_record(self, folder: Path) -> tuple[str, bytes]:
        """The root key kept in `folder` (root/ or rotation/): (file name, bytes)
        of its PEM file, or of the PKCS#11 URI naming a key in a token."""
        if folder == self.root_dir:
            self._require_root()
        folder = self._inside(folder)
        name = ROOT_KEY_URI_FILE if (folder / ROOT_KEY_URI_FILE).is_file() else ROOT_KEY_FILE
        return name, self._read(folder / name)

    def key_kind(self, folder: Path) -> str:
        """"pkcs11", "encrypted" or "plain": what unlocking the key in `folder` needs."""
        name, data = self.key_record(folder)
        if name == ROOT_KEY_URI_FILE:
            return "pkcs11"
        return "encrypted" if is_encrypted_pem(data) else "plain"

    def load_root_key(self, passphrase: bytes | None) -> SigningKey:
        """The root key; `passphrase` is the token's PIN when the key is in a token."""
        return self.load_key(self.root_dir, passphrase, "root key")

    def load_key(self, folder: Path, secret: bytes | None, what: str) -> SigningKey:
        """A root key from its record (decrypt the PEM, or open the token key,
        hsm.py), proven to be the key of the certificate beside it: every use
        of a root key (issue, revoke, export, a new passphrase, finish) goes
        through here, so a swapped key file is refused by all of them alike."""
        name, data = self.key_record(folder)
        if isinstance(secret, RootSecret) and folder == self.rotation_dir:
            secret = secret.new_root  # the new root's key is kept another way than the old one's
        if name == ROOT_KEY_FILE:
            key: SigningKey = load_private_key(data, secret, what=f"{what} {folder / name}")
        else:
            from meshpki import hsm

            try:
                uri = hsm.TokenURI.parse(data.decode("utf-8", "replace"))
            except InputError as exc:
                raise StoreError(f"{folder / name} does not hold a usable PKCS#11 URI ({exc}); "
                                 "the store is damaged") from None
            key = hsm.open_key(uri, secret)
        cert_file = self._inside(folder) / ROOT_CERT_FILE
        cert = bundlemod.parse_certs(self._read(cert_file), str(cert_file))[0]
        if not public_keys_match(key, cert.public_key()):
            raise StoreError(f"{folder / name} is not the key of {cert_file}; the store is damaged: restore both "
                             "from a backup")
        return key

    def refuse_existing_root(self) -> None:
        self._refuse_half_root()
        if self.has_root():
            raise StoreError(
                f"store {self.path} already has a root CA ({self.root_dir / ROOT_CERT_FILE}); "
                "it is never overwritten (root changes go through `meshpki rotate-root`)"
            )

    def write_root(self, cert_pem: bytes, key_pem: bytes, chain_pem: bytes | None = None,
                   key_name: str = ROOT_KEY_FILE) -> Path:
        """Create the root; an existing root is never overwritten. `chain_pem`:
        an adopted intermediate's issuers up to its root (byo.py). `key_name`
        ROOT_KEY_URI_FILE records a token key's URI instead of a key file."""
        self.refuse_existing_root()
        files = {ROOT_CERT_FILE: cert_pem, key_name: key_pem}
        if chain_pem:
            files[SIGNER_CHAIN_FILE] = chain_pem
        self._publish(self.root_dir, files)
        return self.root_dir

    def signer_chain_pem(self) -> bytes:
        """The issuers above an adopted intermediate signer; empty for a root."""
        path = self._inside(self.root_dir) / SIGNER_CHAIN_FILE
        return self._read(path) if path.exists() else b""

    def retire_root(self, cert_pem: bytes, key_pem: bytes, key_name: str = ROOT_KEY_FILE) -> Path | None:
        """Replace the root (rotate-root's last step); the old one goes to history."""
        return self._publish(self.root_dir, {ROOT_CERT_FILE: cert_pem, key_name: key_pem},
                             archive_to=self.history_dir / "roots")

    # -- a root rotation in progress (rotate.py owns the meaning) ---------
    @property
    def rotation_dir(self) -> Path:
        return self.path / "rotation"

    def has_rotation(self) -> bool:
        return (self.rotation_dir / ROOT_CERT_FILE).is_file()

    def rotation_file(self, name: str) -> bytes:
        return self._read(self._inside(self.rotation_dir) / name)

    def write_rotation(self, files: Mapping[str, bytes]) -> Path:
        """Create the rotation folder (new root + state) as one unit."""
        if self.rotation_dir.exists():
            raise StoreError(f"{self.rotation_dir} already exists; a root rotation is under way")
        self._publish(self.rotation_dir, dict(files))
        return self.rotation_dir

    def write_rotation_file(self, name: str, data: bytes) -> None:
        """Replace one file of the rotation folder atomically (its state)."""
        folder = self._inside(self.rotation_dir)
        try:
            publish.replace_file(folder / name, data, file_mode(name))
        except OSError as exc:
            raise StoreError(f"cannot write {folder / name}: {exc.strerror or exc}") from None

    def end_rotation(self) -> Path:
        """Move the finished rotation's folder (state, and the new root's first copy) to history."""
        archive = self.history_dir / "rotations"
        self._ensure_dirs(archive)
        target = archive / publish.unique_stamp(archive)
        os.rename(self._inside(self.rotation_dir), target)
        publish.fsync_dir(self.path)
        return target

    # -- clusters ---------------------------------------------------------
    def clusters(self) -> list[str]:
        self.check_private()
        self._settle()
        if not self.clusters_dir.is_dir():
            return []
        return sorted(p.name for p in self.clusters_dir.iterdir()
                      if not p.name.startswith(".") and is_cluster_name(p.name) and p.is_dir())

    def left_out(self) -> list[str]:
        """What clusters() and signed_clusters() pass over in clusters/ and signed/ (a
        plain file, a folder whose name is no cluster name), each as a note naming it
        and the fix: verify and audit say them instead of skipping in silence."""
        self.check_private()
        notes = []
        for folder in (self.clusters_dir, self.signed_dir):
            for entry in sorted(_listing(folder), key=lambda e: e.name) if folder.is_dir() else []:
                if entry.name.startswith("."):
                    continue
                if not entry.is_dir():
                    notes.append(f"{entry.path}: left out, a file is not a cluster folder; move it out of the store")
                elif not is_cluster_name(entry.name):
                    notes.append(f"{entry.path}: left out, {entry.name!r} is not a cluster name (a DNS-1123 label: "
                                 "lowercase letters, digits and '-'); rename it or move it out of the store")
        return notes

    def has_cluster(self, cluster: str) -> bool:
        return (self.cluster_dir(cluster) / bundlemod.CA_CERT).exists()

    def load_bundle(self, cluster: str) -> Bundle:
        folder = self.cluster_dir(cluster)
        if not folder.is_dir():
            self._settle()
        if not folder.is_dir():
            known = ", ".join(self.clusters()) or "none yet"
            raise StoreError(
                f"no bundle for cluster {cluster!r} in store {self.path} (clusters: {known}); "
                f"run `meshpki issue {cluster}` first"
            )
        for name in bundlemod.FILES + bundlemod.OPTIONAL_FILES + bundlemod.TLS_FILES:
            self._inside(folder / name)  # a bundle file symlinked out of the store is refused, never read
        return bundlemod.load_folder(folder, source=cluster, follow_symlinks=False)

    def refuse_existing_bundle(self, cluster: str) -> None:
        target = self.cluster_dir(cluster)
        if target.exists():
            raise StoreError(
                f"cluster {cluster!r} already has a bundle in {target}; pass --force to replace it "
                "(the old one goes to history) or use `meshpki rotate`"
            )

    def write_bundle(self, cluster: str, files: Mapping[str, bytes], replace: bool = False) -> Path | None:
        """Write a cluster's four files as one unit; returns where the old bundle was archived."""
        target = self.cluster_dir(cluster)
        if not replace:
            self.refuse_existing_bundle(cluster)
        return self._publish(target, dict(files), archive_to=self.history_dir / "clusters" / cluster,
                             after_archive=_drop_keys)

    # -- bring your own PKI (byo.py owns the meaning) ---------------------
    @property
    def pending_dir(self) -> Path:
        return self.path / "pending"

    @property
    def signed_dir(self) -> Path:
        return self.path / "signed"

    def write_pending(self, cluster: str, files: Mapping[str, bytes], replace: bool = False) -> Path:
        """A site's key and CSR waiting for a certificate; `replace` drops an older request."""
        target = self._inside(self.pending_dir / validate_cluster_name(cluster))
        if not replace:
            self.refuse_pending(cluster)
        elif target.exists():
            self.drop_pending(cluster)
        self._publish(target, dict(files), archive_to=None)
        return target

    def refuse_pending(self, cluster: str) -> None:
        target = self._inside(self.pending_dir / validate_cluster_name(cluster))
        if target.exists():
            raise StoreError(f"a request for cluster {cluster!r} is already pending in {target}; complete it "
                             "(meshpki complete) or pass --force to replace it with a new key")

    def pending_file(self, cluster: str, name: str) -> bytes:
        folder = self._inside(self.pending_dir / validate_cluster_name(cluster))
        if not (folder / name).is_file():
            raise StoreError(f"no pending request for cluster {cluster!r} in store {self.path}; "
                             f"run `meshpki csr {cluster}` here first")
        return self._read(folder / name)

    def drop_pending(self, cluster: str) -> None:
        shutil.rmtree(self._inside(self.pending_dir / validate_cluster_name(cluster)), ignore_errors=True)
        publish.fsync_dir(self.pending_dir)

    def write_signed(self, cluster: str, files: Mapping[str, bytes]) -> Path | None:
        """The root holder's inventory of a cluster CA it signed from a CSR: certificates only."""
        if any(is_key_file(n) for n in files):
            raise StoreError("refusing to keep a private key in the inventory of signed clusters")
        target = self._inside(self.signed_dir / validate_cluster_name(cluster))
        return self._publish(target, dict(files), archive_to=self.history_dir / "signed" / cluster)

    def signed_file(self, cluster: str, name: str) -> bytes:
        return self._read(self._inside(self.signed_dir / validate_cluster_name(cluster)) / name)

    def load_signed(self, cluster: str) -> Bundle:
        """The inventory copy of a cluster signed from a CSR, as a bundle with no key:
        which root signed it and which roots its site was sent to trust."""
        folder = self._inside(self.signed_dir / validate_cluster_name(cluster))
        for name in bundlemod.FILES:
            self._inside(folder / name)  # as load_bundle: a file symlinked out of the store is never read
        return bundlemod.load_folder(folder, source=f"signed/{cluster}", follow_symlinks=False)

    def evict_signed(self, cluster: str) -> Path:
        """`meshpki revoke` of a CSR-signed cluster: its inventory copy goes to history in one rename."""
        folder = self._inside(self.signed_dir / validate_cluster_name(cluster))
        return self._move_to_history(folder, self.history_dir / "signed" / cluster)

    def signed_clusters(self) -> list[str]:
        """Clusters whose CA this store signed from a CSR (their keys live at their sites)."""
        if not self.signed_dir.is_dir():
            return []
        return sorted(p.name for p in self.signed_dir.iterdir()
                      if not p.name.startswith(".") and is_cluster_name(p.name) and p.is_dir())

    def replace_bundle_file(self, cluster: str, name: str, data: bytes) -> None:
        """Replace one file of a bundle in place, atomically and without archiving
        the bundle: how ca-crl.pem follows a new CRL (crl.py) while the
        certificates and keys stay exactly as they are."""
        folder = self.cluster_dir(cluster)
        try:
            publish.replace_file(self._inside(folder / name), data, file_mode(name))
        except OSError as exc:
            raise StoreError(f"cannot write {folder / name}: {exc.strerror or exc}") from None

    def evict(self, cluster: str) -> Path:
        """Move a cluster's bundle out of the members into history (`meshpki revoke`):
        one rename, so it is a member or an archived bundle, never half of each."""
        # history keeps certificates only (docs/store.md)
        return self._move_to_history(self.cluster_dir(cluster), self.history_dir / "clusters" / cluster,
                                     after=_drop_keys)

    def _move_to_history(self, folder: Path, archive: Path, after: Callable[[Path], object] | None = None) -> Path:
        """`folder` becomes a new entry of `archive` in one rename: there or archived,
        never half of each. `after(entry)` then trims the archived copy."""
        self._ensure_dirs(archive)
        target = archive / publish.unique_stamp(archive)
        try:
            os.rename(folder, target)
            publish.fsync_dir(folder.parent)
            publish.fsync_dir(archive)
            if after is not None:
                after(target)
        except OSError as exc:
            raise StoreError(f"cannot move {folder} to {target}: {exc.strerror or exc}") from None
        return target

    # -- revocation (crl.py owns the meaning) -----------------------------
    @property
    def crl_dir(self) -> Path:
        return self.path / CRL_DIR

    def has_crl(self) -> bool:
        return (self.crl_dir / CRL_STATE_FILE).is_file()

    def crl_file(self, name: str) -> bytes:
        return self._read(self._inside(self.crl_dir) / name)

    def crl_names(self) -> list[str]:
        return sorted(p.name for p in self.crl_dir.iterdir() if not p.name.startswith(".")) \
            if self.crl_dir.is_dir() else []

    def write_crl(self, files: Mapping[str, bytes]) -> Path | None:
        """Publish the revocation state and the roots' CRLs as one unit (the
        commit point of a revocation); the previous state goes to history."""
        return self._publish(self.crl_dir, dict(files), archive_to=self.history_dir / "crl")

    def crl_pending(self) -> bool:
        """A revocation committed whose bundles are not yet brought in line."""
        return (self.crl_dir / CRL_PENDING_FILE).is_file()

    def clear_crl_pending(self) -> None:
        try:
            os.unlink(self.crl_dir / CRL_PENDING_FILE)
        except FileNotFoundError:
            return
        publish.fsync_dir(self.crl_dir)

    # -- history ----------------------------------------------------------
    def history(self, cluster: str | None = None) -> list[HistoryEntry]:
        """Archived bundles (of one cluster, or all), then retired roots and rotation records."""
        entries: list[HistoryEntry] = []
        if cluster is not None:
            validate_cluster_name(cluster)
        clusters_root = self.history_dir / "clusters"
        names = [cluster] if cluster else (sorted(p.name for p in clusters_root.iterdir() if is_cluster_name(p.name))
                                           if clusters_root.is_dir() else [])
        for name in names:
            entries += self._entries("cluster", name, clusters_root / name)
        if cluster is None:
            entries += self._entries("root", "root", self.history_dir / "roots")
            entries += self._entries("rotation", "rotation", self.history_dir / "rotations")
        return entries

    def _entries(self, kind: str, name: str, folder: Path) -> list[HistoryEntry]:
        if not folder.is_dir():
            return []
        self.check_private()
        return [HistoryEntry(kind, name, p.name, p) for p in sorted(folder.iterdir())
                if not p.name.startswith(".") and p.is_dir()]

    def history_names(self) -> list[str]:
        """Clusters that have archived bundles (a removed cluster may have only history)."""
        return sorted({e.name for e in self.history() if e.kind == "cluster"})

    def prune_history(self, keep: int) -> list[HistoryEntry]:
        """Delete all but the `keep` newest archived entries of each cluster, of roots
        and of rotation records; returns what was deleted."""
        if keep < 0:
            raise InputError(f"--keep must be 0 or more, not {keep}")
        removed: list[HistoryEntry] = []
        if not self.path.is_dir():
            return removed  # no store, nothing to prune; locking would make the folder
        with self.locked():
            groups: dict[tuple[str, str], list[HistoryEntry]] = {}
            for entry in self.history():
                groups.setdefault((entry.kind, entry.name), []).append(entry)
            for entries in groups.values():
                # stamps sort by time; a -2 suffix (same second) sorts after its twin
                ordered = sorted(entries, key=lambda e: _stamp_order(e.stamp))
                for entry in ordered[:max(0, len(ordered) - keep)]:
                    shutil.rmtree(self._inside(entry.path))
                    removed.append(entry)
        return removed

    # -- reading and publishing ---------------------------------------------
    def _read(self, path: Path) -> bytes:
        """A store file; a key file must hold its key alone (pem.lone_block_problem)."""
        try:
            data = bundlemod.read_limited(self._inside(path), follow_symlinks=False)
        except FileNotFoundError:
            raise StoreError(f"{path} is missing from the store; the store is damaged") from None
        except PermissionError:
            raise StoreError(f"cannot read {path}: permission denied") from None
        if is_key_file(path.name) and (problem := pem.lone_block_problem(data, "private key")):
            raise StoreError(f"{path} {problem}; meshpki keeps one key per file: remove what does not belong "
                             "there, or restore the file from a backup")
        return data

    def _publish(self, target: Path, files: dict[str, bytes], archive_to: Path | None = None,
                 after_archive: Callable[[Path], object] | None = None) -> Path | None:
        self._ensure_dirs(target.parent)
        if archive_to is not None and target.exists():
            self._ensure_dirs(archive_to)
        try:
            return publish.publish(target, files, file_mode, archive_to, after_archive)
        except FileExistsError:
            raise StoreError(f"{target} exists and would be lost; refusing to replace it") from None
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}; check the store's permissions") from None

    def _ensure_dirs(self, folder: Path) -> None:
        """Create folders 0700 (whatever the umask) down to `folder`, the store's own
        missing parents included, refusing symlinks and files on the way."""
        missing = []
        for candidate in [self.path, *self.path.parents]:
            if candidate.exists():
                if not candidate.is_dir():
                    raise StoreError(f"cannot use store {self.path}: {candidate} is not a folder")
                break
            missing.append(candidate)
        try:
            for candidate in reversed(missing):
                publish.make_dir(candidate)
        except OSError as exc:
            raise StoreError(f"cannot create store {self.path}: {exc.strerror or exc}") from None
        self.check_private()
        try:
            current = self.path
            for part in folder.relative_to(self.path).parts:
                current = self._inside(current / part)
                if not current.exists():
                    publish.make_dir(current)
                elif not current.is_dir():
                    raise StoreError(f"{current} is not a folder; the store is damaged")
        except OSError as exc:
            raise StoreError(f"cannot create {folder}: {exc.strerror or exc}; check the store's permissions") from None

    def recover(self) -> list[str]:
        """Finish or discard what a killed meshpki left behind (called under the lock)."""
        # several files replaced as one (both root keys under a new passphrase): first, since
        # the folders below may hold what such a replacement staged
        notes = publish.recover_files(self.path, [self.root_dir, self.rotation_dir])
        # single files replaced in place: the rotation state, a bundle's ca-crl.pem
        single_file_folders = [self.rotation_dir, *(self.clusters_dir.iterdir() if self.clusters_dir.is_dir() else [])]
        for folder in single_file_folders:
            if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith("."):
                publish.recover(folder)
        for parent in self._publish_parents():
            notes += publish.recover(parent)
        # a kill between archiving a bundle and dropping its key; older stores kept keys too
        dropped = sum(_drop_keys(p) for p in (self.history_dir / "clusters").glob("*/*") if p.is_dir())
        if dropped:
            notes.append(f"removed {dropped} replaced intermediate key(s) from history (see docs/store.md)")
        if self.crl_pending():
            from meshpki import crl  # crl.py builds on the store; only recovery calls back

            notes.extend(crl.finish_pending(self))
        return notes

    def remove_if_empty(self) -> None:
        """Remove the store folder when it holds nothing but the lock file: what a
        first command interrupted before it wrote anything would leave behind."""
        try:
            if {p.name for p in self.path.iterdir()} <= {".lock"}:
                (self.path / ".lock").unlink(missing_ok=True)
                self.path.rmdir()
        except OSError:
            pass

    def _publish_parents(self) -> tuple[Path, ...]:
        """The folders whose children are published whole (recover() looks there)."""
        return (self.path, self.clusters_dir, self.pending_dir, self.signed_dir)

    def _settle(self) -> None:
        """Let a reader see what a killed writer had committed.

        A write killed between its commit point and the swap leaves the new
        folder as `.ready-*` (or several files' journal, `.commit-*`); readers
        take the lock briefly so recover() puts it in place, instead of
        reporting a bundle missing. Best effort: a busy or read-only store is
        left to the next writer.
        """
        if self._lock_depth or not (self.crl_pending() or publish.journal_pending(self.path)
                                    or any(publish.pending(p) for p in self._publish_parents())):
            return
        patient = self._lock_timeout
        self._lock_timeout = min(self.lock_timeout, 2.0)
        try:
            with self.locked():
                pass
        except StoreError:
            pass
        finally:
            self._lock_timeout = patient

    # -- locking ----------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[Store]:
        """Hold the store's write lock: an flock, so a killed holder never blocks forever.

        Re-entrant for the thread that holds it: a workflow that holds the lock
        can call helpers that take it too (a second flock would deadlock).
        Other threads of this process wait (push --all records pushes from
        several threads): without that, one thread's recovery could delete
        another's file half written.
        """
        if not self._threads.acquire(timeout=self.lock_timeout):
            raise StoreError(f"store {self.path} is locked by another thread of this meshpki; retry")
        try:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield self
                finally:
                    self._lock_depth -= 1
                return
            with self._flocked():
                yield self
        finally:
            self._threads.release()

    @contextmanager
    def _flocked(self) -> Iterator[Store]:
        """The flock itself, then recovery of what a killed holder left."""
        from filelock import FileLock, Timeout

        self._ensure_dirs(self.path)
        path = self._lock_file()
        lock = FileLock(str(path), timeout=self.lock_timeout, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            raise StoreError(
                f"store {self.path} is locked by another meshpki process; wait for it to finish and retry"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot lock store {self.path}: {exc.strerror or exc}") from None
        self._lock_depth = 1
        try:
            self.recover()
            yield self
        finally:
            self._lock_depth = 0
            lock.release()

    def _lock_file(self) -> Path:
        """The lock file, made 0600 by us (never through a symlink) before filelock opens it."""
        path = self.path / ".lock"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot lock store {self.path}: {path}: {exc.strerror or exc}") from None
        return path


def _listing(folder: Path | str) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return list(entries)


def _who(mode: int, group: int, others: int) -> str:
    return " and ".join(w for w, bit in (("its group", group), ("others", others)) if mode & bit)


def _refuse_open_folder(path: Path, st: os.stat_result, what: str) -> None:
    """A store folder must be ours and writable by us alone."""
    if st.st_uid != os.geteuid():
        raise StoreError(f"{what} {path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()}); "
                         f"use a store of your own, or `chown {os.geteuid()} {path}`")
    if st.st_mode & 0o022:
        raise StoreError(f"{what} {path} is writable by {_who(st.st_mode, 0o020, 0o002)} (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}); run `chmod go-w {path}` (meshpki makes store folders 0700)")


def _drop_keys(folder: Path) -> int:
    """Delete the private key files of an archived bundle; returns how many.
    A folder in a key's place (a damaged bundle) goes too: left there, every
    later recovery would fail on it."""
    dropped = 0
    for name in (bundlemod.CA_KEY, bundlemod.TLS_KEY):
        path = folder / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            dropped += 1
        except FileNotFoundError:
            pass
    if dropped:
        publish.fsync_dir(folder)
    return dropped


def _stamp_order(stamp: str) -> tuple[str, int]:
    base, _, n = stamp.partition("-")
    return base, int(n) if n.isdigit() else 1
