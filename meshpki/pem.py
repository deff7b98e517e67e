"""PEM files read block by block, with an explicit policy for damage.

Istio reads the same kind of file in three different ways (docs/istio-compat.md):
ca-cert.pem only up to its first block, root-cert.pem and cert-chain.pem
through Go's AppendCertsFromPEM (damaged or foreign blocks are skipped), and
ca-crl.pem (plus cert-chain.pem once a CRL is present) insisting that EVERY
block parses. A verifier that wants to agree with istiod must read each file
the way istiod does, so every caller names its policy here instead of
inventing its own try/except around cryptography.

Files meshpki reads as one object (a store key, a certificate request) hold
exactly one intact block (`lone_block_problem`): cryptography would read the
first and ignore the rest.

Decoding follows Go's encoding/pem: text outside blocks is ignored, and a
block whose base64 or END line is damaged is skipped (Go restarts its search
after the BEGIN line), which we record so a report can still mention it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509

from meshpki.errors import BundleError

CERTIFICATE = "CERTIFICATE"
X509_CRL = "X509 CRL"

_BEGIN = re.compile(rb"-----BEGIN ([^\r\n-]*)-----[ \t]*\r?\n")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Block:
    """One decoded PEM block: its label and DER bytes; `number` counts from 1."""

    label: str
    der: bytes
    number: int


@dataclass(frozen=True)
class Decoded:
    """Every block Go's pem.Decode would return, and how many it would skip as damaged."""

    blocks: tuple[Block, ...]
    damaged: int = 0

    @property
    def first(self) -> Block | None:
        return self.blocks[0] if self.blocks else None


def decode(data: bytes) -> Decoded:
    """All PEM blocks of `data` in order (Go's encoding/pem semantics)."""
    blocks: list[Block] = []
    damaged = 0
    pos = 0
    while True:
        begin = _BEGIN.search(data, pos)
        if begin is None:
            break
        label = begin.group(1)
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, begin.end())
        next_begin = _BEGIN.search(data, begin.end())
        if end < 0 or (next_begin is not None and next_begin.start() < end):
            damaged += 1  # no END of its own: Go skips this BEGIN line and searches on
            pos = begin.end()
            continue
        der = _body(data[begin.end():end])
        if der is None:
            damaged += 1
            pos = begin.end()
            continue
        blocks.append(Block(label.decode("ascii", "replace"), der, len(blocks) + damaged + 1))
        pos = end + len(end_marker)
    return Decoded(tuple(blocks), damaged)


def _body(text: bytes) -> bytes | None:
    """The base64 body, after RFC 1421 headers (`Proc-Type: ...`) if any; None when damaged."""
    lines = text.splitlines()
    if lines and b":" in lines[0]:
        while lines and lines[0].strip():
            lines.pop(0)
    try:
        return base64.b64decode(b"".join(line.strip() for line in lines), validate=True)
    except (binascii.Error, ValueError):
        return None


def headers(data: bytes, block_number: int = 1) -> dict[str, str]:
    """The RFC 1421 headers of a block (only traditional encrypted keys carry any)."""
    seen = 0
    for begin in _BEGIN.finditer(data):
        seen += 1
        if seen != block_number:
            continue
        found: dict[str, str] = {}
        for line in data[begin.end():].splitlines():
            if b":" not in line or line.startswith(b"-----"):
                break
            key, _, value = line.decode("ascii", "replace").partition(":")
            found[key.strip()] = value.strip()
        return found
    return {}


class Policy(enum.Enum):
    """What a damaged or foreign block means to the reader."""

    EVERY = "every"  # every block must be a good certificate (istiod's CRL path; meshpki's own files)
    SKIP = "skip"  # skip what does not parse (Go's AppendCertsFromPEM: root-cert.pem, cert-chain.pem)
    FIRST = "first"  # only the first block counts (istiod's ParsePemEncodedCertificate: ca-cert.pem)


def lone_block_problem(data: bytes, what: str) -> str | None:
    """Why a file read as ONE object (a store key, a certificate request) holds more
    than one PEM block, or a damaged one; None when it does not. cryptography reads
    the first block and ignores the rest, so without this a second block would pass
    unseen (and be lost when meshpki rewrites the file). A file with no intact
    block is left to the parser, which says it is not readable at all."""
    decoded = decode(data)
    if not decoded.blocks:
        return None
    if decoded.damaged:
        return f"holds {decoded.damaged} damaged PEM block(s) beside the {what}"
    if len(decoded.blocks) > 1:
        extra = decoded.blocks[1]
        return f"holds {len(decoded.blocks)} PEM blocks, not one {what} (block {extra.number} is a {extra.label})"
    return None


@dataclass(frozen=True)
class Certs:
    """Certificates read under a policy; `skipped` describes blocks the policy let pass."""

    certs: tuple[x509.Certificate, ...]
    skipped: tuple[str, ...] = ()
    error: str | None = None  # set when the policy found the file unusable

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_certificate(der: bytes) -> x509.Certificate:
    """A certificate whose names and dates are decoded now: cryptography decodes
    them lazily, and damage there is damage to the file, not a later traceback."""
    cert = x509.load_der_x509_certificate(der)
    cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
    return cert


def parse_crl(der: bytes) -> x509.CertificateRevocationList:
    crl = x509.load_der_x509_crl(der)
    crl.issuer, crl.last_update_utc, crl.next_update_utc  # noqa: B018
    return crl


def read_certs(data: bytes, policy: Policy) -> Certs:
    """The certificates of a PEM file as istiod's reader for that file sees them.

    The answer depends on the bytes and the policy alone and is immutable (a
    frozen Certs of immutable certificates), so the same file read again is
    answered from memory: an audit reads every bundle several times (grading,
    chain, shared roots) and every cluster's root-cert.pem is the same file."""
    if type(data) is not bytes:
        return _read(data, policy, CERTIFICATE, parse_certificate, "certificate")
    return _read_certs_cached(data, policy)


@functools.lru_cache(maxsize=512)
def _read_certs_cached(data: bytes, policy: Policy) -> Certs:
    return _read(data, policy, CERTIFICATE, parse_certificate, "certificate")


def read_crls(data: bytes) -> tuple[tuple[x509.CertificateRevocationList, ...], str | None]:
    """Every CRL of ca-crl.pem, or the first reason istiod would refuse the file."""
    result = _read(data, Policy.EVERY, None, parse_crl, "CRL")
    return result.certs, result.error  # type: ignore[return-value]


def _read(data: bytes, policy: Policy, label: str | None, parse: Callable[[bytes], _T], what: str) -> Certs:
    decoded = decode(data)
    items: list = []
    skipped: list[str] = []
    if decoded.damaged:
        skipped.append(f"{decoded.damaged} damaged PEM block(s)")
    for block in decoded.blocks:
        if label is not None and block.label != label:
            problem = f"block {block.number} is a {block.label}, not a {what}"
        else:
            try:
                items.append(parse(block.der))
                if policy is Policy.FIRST:
                    break
                continue
            except Exception as exc:  # ValueError for damage; never let odd input become a traceback
                problem = f"block {block.number} is not a valid {what} ({short_error(exc)})"
        if policy is Policy.SKIP:
            skipped.append(problem)
            continue
        return Certs(tuple(items), tuple(skipped), problem)
    if not items:
        return Certs((), tuple(skipped), f"no PEM {what} in it" + (f" ({skipped[0]})" if skipped else ""))
    return Certs(tuple(items), tuple(skipped))


def short_error(exc: BaseException) -> str:
    """cryptography's message without its FAQ link: the reason a user can act on."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "See https://" in text:
        head, _, tail = text.partition("See https://")
        tail = tail.split(" ", 1)[1] if " " in tail else ""
        tail = tail.replace("for more details.", "").strip()
        text = f"{head.strip().rstrip('.')}: {tail}" if tail else head.strip()
    return text


def certificates(data: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate of a file meshpki relies on (Policy.EVERY); damage raises
    BundleError naming the file."""
    result = read_certs(data, Policy.EVERY)
    if not result.certs and not result.skipped and result.error is not None:
        raise BundleError(f"{what} holds no PEM certificate")
    if result.error is not None:
        raise BundleError(f"{what}: {result.error}; is the file cut off?")
    if result.skipped:
        raise BundleError(f"{what}: {result.skipped[0]}; is the file cut off?")
    return list(result.certs)
