"""The cacerts bundle: Istio's four files, or cert-manager's tls.* form.

A bundle is kept as the exact bytes of its files: istiod compares root
bundles byte for byte up to 1.29 (docs/istio-compat.md), and `kubectl create secret --from-file`
takes files as they are, so nothing here ever re-encodes a PEM.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from meshpki import pem
from meshpki.errors import BundleError

if TYPE_CHECKING:
    from meshpki.keys import PrivateKey  # keys is imported when a key is needed, not with every bundle

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
CERT_CHAIN = "cert-chain.pem"
ROOT_CERT = "root-cert.pem"
FILES = (CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT)
# Optional, files form only: the CRLs istiod hands to the proxies. meshpki
# writes it only once the mesh has revoked something (docs/revocation.md).
CA_CRL = "ca-crl.pem"
OPTIONAL_FILES = (CA_CRL,)

# istiod writes this key into cacerts when it keeps its OWN self-signed CA there
# (USE_CACERTS_FOR_SELF_SIGNED_CA; docs/istio-compat.md).
ISTIO_GENERATED = "istio-generated"

TLS_CRT = "tls.crt"
TLS_KEY = "tls.key"
CA_CRT = "ca.crt"
TLS_FILES = (TLS_CRT, TLS_KEY, CA_CRT)

FORM_FILES = "files"
FORM_TLS = "tls"

# Bundle files are a few KiB; anything far larger is not a bundle, and reading
# it whole would only waste memory.
MAX_FILE_BYTES = 1 << 20


def cert_to_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM)


def parse_certs(data: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file meshpki relies on; a broken one is named, never a traceback."""
    return pem.certificates(data, what)


@dataclass(frozen=True)
class Bundle:
    """One cluster's CA material as the files istiod mounts at /etc/cacerts.

    `files` maps file names to their bytes; a missing file is simply absent
    (verify reports it). `form` says which naming the files use.
    """

    files: Mapping[str, bytes]
    source: str
    form: str = FORM_FILES
    unreadable: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes], source: str) -> Bundle:
        """A live secret's data: the tls.* form wins when tls.crt is present, as in istiod."""
        form = FORM_TLS if TLS_CRT in data else FORM_FILES
        names = (TLS_FILES if form == FORM_TLS else FILES) + OPTIONAL_FILES  # verify says istiod ignores a tls-form CRL
        return cls({n: data[n] for n in names if n in data}, source, form)

    def expected_names(self) -> tuple[str, ...]:
        return TLS_FILES if self.form == FORM_TLS else FILES

    def missing(self) -> list[str]:
        return [n for n in self.expected_names() if n not in self.files and n not in self.unreadable]

    # The four roles, whatever the form (docs/istio-compat.md: chain = tls.crt + ca.crt, root = ca.crt).
    def _get(self, files_name: str, tls_name: str) -> bytes | None:
        return self.files.get(tls_name if self.form == FORM_TLS else files_name)

    @property
    def ca_cert(self) -> bytes | None:
        return self._get(CA_CERT, TLS_CRT)

    @property
    def ca_key(self) -> bytes | None:
        return self._get(CA_KEY, TLS_KEY)

    @property
    def root_cert(self) -> bytes | None:
        return self._get(ROOT_CERT, CA_CRT)

    @property
    def ca_crl(self) -> bytes | None:
        """ca-crl.pem, files form only: istiod ignores it beside tls.crt."""
        return self.files.get(CA_CRL) if self.form == FORM_FILES else None

    @property
    def cert_chain(self) -> bytes | None:
        if self.form == FORM_TLS:
            crt, ca = self.files.get(TLS_CRT), self.files.get(CA_CRT)
            return None if crt is None or ca is None else join_pem(crt, ca)
        return self.files.get(CERT_CHAIN)

    def whole_key(self, folder: Path | None = None) -> PrivateKey:
        """The key of a bundle proven whole: every file present, readable, not
        empty and parsing, and the key plain and ca-cert.pem's. What rewriting a
        bundle (rotate-root) or its ca-crl.pem (crl.py) needs, so a broken one is
        refused before anything changes. BundleError names the file (under
        `folder` when given)."""
        from meshpki import keys
        from meshpki.errors import PassphraseError

        def where(role: str) -> str:
            return str(folder / self.name_of(role)) if folder else self.name_of(role)

        if self.missing():
            raise BundleError(f"{folder / self.missing()[0] if folder else self.missing()[0]} is missing")
        if self.unreadable:
            name, why = next(iter(self.unreadable.items()))
            path = str(folder / name) if folder else name
            raise BundleError(f"{path} {why.removeprefix(path + ' ')}" if why.startswith(path + " ")
                              else f"{path} cannot be read ({why})")
        empty = [name for name in self.expected_names() if not self.files[name].strip()]
        if empty:
            raise BundleError(f"{folder / empty[0] if folder else empty[0]} is empty")
        cert = parse_certs(self.ca_cert or b"", where(CA_CERT))[0]
        for role, data in ((CERT_CHAIN, self.cert_chain), (ROOT_CERT, self.root_cert)):
            parse_certs(data or b"", where(role))
        try:
            key = keys.load_private_key(self.ca_key or b"", None, what=where(CA_KEY))
        except PassphraseError:
            raise BundleError(f"{where(CA_KEY)} is encrypted; istiod (and meshpki) need it plain") from None
        if not keys.public_keys_match(key, cert.public_key()):
            raise BundleError(f"{where(CA_KEY)} is not the key of {self.name_of(CA_CERT)}")
        return key

    def name_of(self, role: str) -> str:
        """The file name a role lives in, for messages ('ca-cert.pem' or 'tls.crt')."""
        if self.form == FORM_FILES:
            return role
        return {CA_CERT: TLS_CRT, CA_KEY: TLS_KEY, ROOT_CERT: CA_CRT, CERT_CHAIN: f"{TLS_CRT}+{CA_CRT}"}[role]

    def secret_data(self, form: str = FORM_FILES) -> dict[str, bytes]:
        """What goes into the cacerts secret, byte for byte, never the root key."""
        if form == FORM_TLS:
            if self.form == FORM_TLS:
                return dict(self.files)
            return {TLS_CRT: self.files[CA_CERT], TLS_KEY: self.files[CA_KEY], CA_CRT: self.files[ROOT_CERT]}
        if self.form == FORM_FILES:
            return {n: self.files[n] for n in FILES + OPTIONAL_FILES if n in self.files}
        converted = {CA_CERT: self.ca_cert, CA_KEY: self.ca_key, CERT_CHAIN: self.cert_chain, ROOT_CERT: self.root_cert}
        return {n: data for n, data in converted.items() if data is not None}


def join_pem(first: bytes, second: bytes) -> bytes:
    """`first` byte for byte, then `second` on a line of its own."""
    return first + (b"" if first.endswith(b"\n") else b"\n") + second


def read_limited(path: Path, follow_symlinks: bool = True) -> bytes:
    """Read one bundle file, refusing what cannot be a PEM bundle file.

    Opened first and judged by fstat of what was opened, so nothing can be
    swapped in between; O_NONBLOCK lets a FIFO be refused instead of blocking.
    The store's own files are read with follow_symlinks=False; a folder a
    user names may be a mounted Secret, whose files are symlinks.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BundleError(f"{path} is a symlink; the store's files never are") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{path} is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise BundleError(f"{path} is {st.st_size} bytes, too large for a PEM bundle file")
        chunks, left = [], MAX_FILE_BYTES + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_FILE_BYTES:  # it grew after fstat
        raise BundleError(f"{path} is over {MAX_FILE_BYTES} bytes, too large for a PEM bundle file")
    return data


def load_folder(folder: Path, source: str | None = None, follow_symlinks: bool = True) -> Bundle:
    """Read a bundle folder made by anything (meshpki, Istio's Makefile,
    samples/certs, cert-manager); missing or unreadable files are recorded,
    not raised, so verify can report every problem at once."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a folder")
    form = FORM_TLS if (folder / TLS_CRT).exists() else FORM_FILES
    names = (TLS_FILES if form == FORM_TLS else FILES) + OPTIONAL_FILES
    files: dict[str, bytes] = {}
    unreadable: dict[str, str] = {}
    for name in names:
        path = folder / name
        if not path.exists():
            continue
        try:
            files[name] = read_limited(path, follow_symlinks)
        except (OSError, BundleError) as exc:
            unreadable[name] = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return Bundle(files, source or str(folder), form, unreadable)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex: how roots are compared and recorded."""
    from cryptography.hazmat.primitives import hashes

    return cert.fingerprint(hashes.SHA256()).hex()


def serial_hex(cert: x509.Certificate) -> str:
    """Serial as lowercase hex without colons (the audit contract)."""
    return format(cert.serial_number, "x")


def openssl_serial(serial: int | str) -> str:
    """A serial (the number, or serial_hex's text) as `openssl x509 -serial` prints it:
    uppercase hex, whole bytes. What text output shows, so it can be grepped against
    openssl's; JSON and metrics keep serial_hex."""
    text = format(serial if isinstance(serial, int) else int(serial, 16), "X")
    return text if len(text) % 2 == 0 else "0" + text


def subject_text(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def named_cluster(cert: x509.Certificate) -> str | None:
    """The cluster an intermediate names in its L=, as meshpki and Istio's tools write it
    (None without one): how push tells one cluster's secret from another's."""
    from meshpki.store import is_cluster_name  # store imports this module

    for attr in cert.subject.get_attributes_for_oid(x509.NameOID.LOCALITY_NAME):
        if isinstance(attr.value, str) and is_cluster_name(attr.value):
            return attr.value
    return None


def describe(cert: x509.Certificate) -> str:
    """A certificate as findings and errors name it: its quoted subject."""
    return f"'{subject_text(cert)}'"


def differing_roles(ours: Bundle, theirs: Bundle) -> list[str]:
    """Which of the four roles differ byte for byte between two bundles, whatever
    their form; cert-chain.pem only counts when both carry it as a file (the
    tls.* form derives it)."""
    roles = [(CA_CERT, "ca_cert"), (CA_KEY, "ca_key"), (ROOT_CERT, "root_cert")]
    if ours.form == theirs.form == FORM_FILES:
        roles.append((CERT_CHAIN, "cert_chain"))
    return [name for name, attr in roles if getattr(ours, attr) != getattr(theirs, attr)]
