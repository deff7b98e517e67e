"""The store: one folder holding the root and every cluster's bundle.

    STORE/
      root/root-cert.pem, root/root-key.pem     the root (key encrypted)
      clusters/<cluster>/ca-cert.pem ...         exactly the four cacerts files
      history/clusters/<cluster>/<stamp>/        bundles that were replaced
      history/roots/<stamp>/                     roots that were retired
      crl/                                       revocations and the roots' CRLs (crl.py)
      history/crl/<stamp>/                       CRL states that were replaced
      .lock                                      one writer at a time

Every folder is written whole or not at all: files go into a hidden staging
folder, are fsynced, and the folder is renamed into place. A staging folder
renamed to `.ready-*` is complete; if meshpki is killed after that point,
the next writer finishes the swap, so a reader finds the old bundle or the
new one, never a mix and never a half-written file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from meshpki import bundle as bundlemod
from meshpki.bundle import Bundle
from meshpki.errors import InputError, StoreError
from meshpki.keys import PrivateKey, is_encrypted_pem, load_private_key

ROOT_CERT_FILE = "root-cert.pem"
ROOT_KEY_FILE = "root-key.pem"
SIGNER_CHAIN_FILE = "chain.pem"
CRL_DIR = "crl"
CRL_STATE_FILE = "state.json"
CRL_PENDING_FILE = "pending.json"
LOCK_TIMEOUT_SECONDS = 30.0

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def default_store_path() -> Path:
    """$MESHPKI_STORE is read by the CLI; this is the fallback: the user's data dir."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "meshpki"


def is_cluster_name(name: str) -> bool:
    return isinstance(name, str) and bool(_DNS1123_LABEL.match(name))


def validate_cluster_name(name: str) -> str:
    """Cluster names become folder names and Kubernetes label values: DNS-1123 labels only."""
    if not is_cluster_name(name):
        raise InputError(
            f"invalid cluster name {name!r}: use a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return name


def timestamp(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class HistoryEntry:
    """One archived bundle or root, as `meshpki history` lists it."""

    kind: str  # "cluster" or "root"
    name: str  # the cluster, or "root"
    stamp: str
    path: Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # umask must not loosen or tighten what we asked for
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Replace one file atomically: a hidden `.tmp-*` beside it (never matched by
    readers' globs), fsynced, renamed over it. Raises OSError; the temp file is gone."""
    tmp = path.parent / f".tmp-{path.name}-{secrets.token_hex(4)}"
    try:
        _write_file(tmp, data, mode)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def is_key_file(name: str) -> bool:
    return name.endswith("key.pem") or name == bundlemod.TLS_KEY


class Store:
    """A meshpki store folder. Reading needs no lock; every write takes it."""

    def __init__(self, path: Path | str, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
        self.path = Path(path).expanduser()
        self.lock_timeout = lock_timeout
        self._lock_depth = 0

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
        if path.is_symlink() or (path.exists() and not path.resolve().is_relative_to(self.path.resolve())):
            raise StoreError(f"{path} is a symlink or leads outside the store {self.path}; remove it")
        return path

    def describe(self) -> str:
        return str(self.path)

    # -- the root ---------------------------------------------------------
    def has_root(self) -> bool:
        return (self.root_dir / ROOT_CERT_FILE).is_file()

    def _require_root(self) -> None:
        if not self.has_root():
            self._settle()
        if not self.has_root():
            raise StoreError(f"no root CA in store {self.path}; run `meshpki init-root` first (or pass --store)")

    def root_cert_pem(self) -> bytes:
        self._require_root()
        return self._read(self._inside(self.root_dir) / ROOT_CERT_FILE)

    def root_cert(self) -> x509.Certificate:
        return bundlemod.parse_certs(self.root_cert_pem(), f"{self.root_dir / ROOT_CERT_FILE}")[0]

    def root_key_encrypted(self) -> bool:
        self._require_root()
        return is_encrypted_pem(self._read(self.root_dir / ROOT_KEY_FILE))

    def load_root_key(self, passphrase: bytes | None) -> PrivateKey:
        self._require_root()
        pem = self._read(self._inside(self.root_dir) / ROOT_KEY_FILE)
        return load_private_key(pem, passphrase, what=f"root key {self.root_dir / ROOT_KEY_FILE}")

    def refuse_existing_root(self) -> None:
        if self.has_root():
            raise StoreError(
                f"store {self.path} already has a root CA ({self.root_dir / ROOT_CERT_FILE}); "
                "it is never overwritten (root changes go through `meshpki rotate-root`)"
            )

    def write_root(self, cert_pem: bytes, key_pem: bytes, chain_pem: bytes | None = None) -> Path:
        """Create the root; an existing root is never overwritten. `chain_pem`:
        an adopted intermediate's issuers up to its root (byo.py)."""
        self.refuse_existing_root()
        files = {ROOT_CERT_FILE: cert_pem, ROOT_KEY_FILE: key_pem}
        if chain_pem:
            files[SIGNER_CHAIN_FILE] = chain_pem
        self._publish(self.root_dir, files)
        return self.root_dir

    def signer_chain_pem(self) -> bytes:
        """The issuers above an adopted intermediate signer; empty for a root."""
        path = self._inside(self.root_dir) / SIGNER_CHAIN_FILE
        return self._read(path) if path.exists() else b""

    def retire_root(self, cert_pem: bytes, key_pem: bytes) -> Path | None:
        """Replace the root (rotate-root's last step); the old one goes to history."""
        return self._publish(self.root_dir, {ROOT_CERT_FILE: cert_pem, ROOT_KEY_FILE: key_pem},
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
            replace_file(folder / name, data, 0o600 if is_key_file(name) else 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write {folder / name}: {exc.strerror or exc}") from None

    def end_rotation(self) -> Path:
        """Move the finished rotation's folder (state, and the new root's first copy) to history."""
        archive = self.history_dir / "rotations"
        self._ensure_dirs(archive)
        target = archive / self._unique_stamp(archive)
        os.rename(self._inside(self.rotation_dir), target)
        _fsync_dir(self.path)
        return target

    # -- clusters ---------------------------------------------------------
    def clusters(self) -> list[str]:
        self._settle()
        if not self.clusters_dir.is_dir():
            return []
        return sorted(p.name for p in self.clusters_dir.iterdir()
                      if not p.name.startswith(".") and _DNS1123_LABEL.match(p.name) and p.is_dir())

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
        return bundlemod.load_folder(folder, source=cluster)

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
        return self._publish(target, dict(files), archive_to=self.history_dir / "clusters" / cluster)

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
        _fsync_dir(self.pending_dir)

    def write_signed(self, cluster: str, files: Mapping[str, bytes]) -> Path | None:
        """The root holder's inventory of a cluster CA it signed from a CSR: certificates only."""
        if any(is_key_file(n) for n in files):
            raise StoreError("refusing to keep a private key in the inventory of signed clusters")
        target = self._inside(self.signed_dir / validate_cluster_name(cluster))
        return self._publish(target, dict(files), archive_to=self.history_dir / "signed" / cluster)

    def signed_clusters(self) -> list[str]:
        """Clusters whose CA this store signed from a CSR (their keys live at their sites)."""
        if not self.signed_dir.is_dir():
            return []
        return sorted(p.name for p in self.signed_dir.iterdir()
                      if not p.name.startswith(".") and _DNS1123_LABEL.match(p.name) and p.is_dir())

    def replace_bundle_file(self, cluster: str, name: str, data: bytes) -> None:
        """Replace one file of a bundle in place, atomically and without archiving
        the bundle: how ca-crl.pem follows a new CRL (crl.py) while the
        certificates and keys stay exactly as they are."""
        folder = self.cluster_dir(cluster)
        try:
            replace_file(self._inside(folder / name), data, 0o600 if is_key_file(name) else 0o644)
        except OSError as exc:
            raise StoreError(f"cannot write {folder / name}: {exc.strerror or exc}") from None

    def evict(self, cluster: str) -> Path:
        """Move a cluster's bundle out of the members into history (`meshpki revoke`):
        one rename, so it is a member or an archived bundle, never half of each."""
        folder = self.cluster_dir(cluster)
        archive = self.history_dir / "clusters" / cluster
        self._ensure_dirs(archive)
        target = archive / self._unique_stamp(archive)
        try:
            os.rename(folder, target)
            _fsync_dir(self.clusters_dir)
            _fsync_dir(archive)
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
        _fsync_dir(self.crl_dir)

    # -- history ----------------------------------------------------------
    def history(self, cluster: str | None = None) -> list[HistoryEntry]:
        entries: list[HistoryEntry] = []
        clusters_root = self.history_dir / "clusters"
        names = [cluster] if cluster else (sorted(p.name for p in clusters_root.iterdir())
                                           if clusters_root.is_dir() else [])
        for name in names:
            for folder in sorted((clusters_root / name).glob("*")) if (clusters_root / name).is_dir() else []:
                entries.append(HistoryEntry("cluster", name, folder.name, folder))
        if cluster is None and (self.history_dir / "roots").is_dir():
            for folder in sorted((self.history_dir / "roots").iterdir()):
                entries.append(HistoryEntry("root", "root", folder.name, folder))
        return entries

    # -- atomic publication -----------------------------------------------
    def _read(self, path: Path) -> bytes:
        try:
            return bundlemod.read_limited(self._inside(path))
        except FileNotFoundError:
            raise StoreError(f"{path} is missing from the store; the store is damaged") from None
        except PermissionError:
            raise StoreError(f"cannot read {path}: permission denied") from None

    def _publish(self, target: Path, files: dict[str, bytes], archive_to: Path | None = None) -> Path | None:
        """Stage, fsync, then swap `target` for the staged folder."""
        self._ensure_dirs(target.parent)
        token = secrets.token_hex(4)
        staging = target.parent / f".staging-{target.name}-{token}"
        ready = target.parent / f".ready-{target.name}-{token}"
        try:
            os.mkdir(staging, 0o700)
            for name, data in files.items():
                _write_file(staging / name, data, 0o600 if is_key_file(name) else 0o644)
            _fsync_dir(staging)
            os.rename(staging, ready)  # the commit point: from here on the new folder wins
            _fsync_dir(target.parent)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"cannot write {target}: {exc.strerror or exc}; check the store's permissions") from None
        return self._swap_in(target, ready, archive_to)

    def _swap_in(self, target: Path, ready: Path, archive_to: Path | None) -> Path | None:
        archived = None
        if target.exists():
            if archive_to is None:
                raise StoreError(f"{target} exists and would be lost; refusing to replace it")
            self._ensure_dirs(archive_to)
            archived = archive_to / self._unique_stamp(archive_to)
            os.rename(target, archived)
        os.rename(ready, target)
        _fsync_dir(target.parent)
        if archived is not None:
            _fsync_dir(archived.parent)
        return archived

    @staticmethod
    def _unique_stamp(folder: Path) -> str:
        stamp = timestamp()
        candidate, n = stamp, 1
        while (folder / candidate).exists():
            n += 1
            candidate = f"{stamp}-{n}"
        return candidate

    def _ensure_dirs(self, folder: Path) -> None:
        """Create folders 0700 from the store down, refusing symlinks on the way."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            rel = folder.relative_to(self.path)
            current = self.path
            for part in rel.parts:
                current = self._inside(current / part)
                if not current.exists():
                    os.mkdir(current, 0o700)
        except OSError as exc:
            raise StoreError(f"cannot create {folder}: {exc.strerror or exc}; check the store's permissions") from None

    def recover(self) -> list[str]:
        """Finish or discard what a killed meshpki left behind (called under the lock)."""
        notes: list[str] = []
        single_file_folders = [self.rotation_dir, *(self.clusters_dir.iterdir() if self.clusters_dir.is_dir() else [])]
        for folder in single_file_folders:
            for leftover in sorted(folder.glob(".tmp-*")) if folder.is_dir() and not folder.is_symlink() else []:
                leftover.unlink(missing_ok=True)
        for parent in (self.path, self.clusters_dir, self.pending_dir, self.signed_dir):
            if not parent.is_dir():
                continue
            for leftover in sorted(parent.glob(".staging-*")):
                shutil.rmtree(leftover, ignore_errors=True)
                notes.append(f"removed unfinished write {leftover.name}")
            for ready in sorted(parent.glob(".ready-*")):
                name = ready.name[len(".ready-"):].rsplit("-", 1)[0]
                target = parent / name
                if target.exists():
                    shutil.rmtree(ready, ignore_errors=True)
                    notes.append(f"discarded an interrupted replacement of {name}")
                else:
                    os.rename(ready, target)
                    _fsync_dir(parent)
                    notes.append(f"completed an interrupted write of {name}")
        if self.crl_pending():
            from meshpki import crl  # crl.py builds on the store; only recovery calls back

            notes.extend(crl.finish_pending(self))
        return notes

    def _settle(self) -> None:
        """Let a reader see what a killed writer had committed.

        A write killed between its commit point and the swap leaves the new
        folder as `.ready-*`; readers take the lock briefly so recover() puts
        it in place, instead of reporting a bundle missing. Best effort: a
        busy or read-only store is left to the next writer.
        """
        if self._lock_depth or not (self.crl_pending() or any(
                p.is_dir() and any(p.glob(".ready-*"))
                for p in (self.path, self.clusters_dir, self.pending_dir, self.signed_dir))):
            return
        patient = self.lock_timeout
        self.lock_timeout = min(patient, 2.0)
        try:
            with self.locked():
                pass
        except StoreError:
            pass
        finally:
            self.lock_timeout = patient

    # -- locking ----------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[Store]:
        """Hold the store's write lock: an flock, so a killed holder never blocks forever.

        Re-entrant for this Store object: a workflow that holds the lock can
        call helpers that take it too (a second flock would deadlock).
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        from filelock import FileLock, Timeout

        self._ensure_dirs(self.path)
        lock = FileLock(str(self.path / ".lock"), timeout=self.lock_timeout)
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
