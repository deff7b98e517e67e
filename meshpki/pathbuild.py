"""Certificate paths: who signed whom, and a bounded search for a path to a root.

Go's and OpenSSL's path builders accept cert-chain.pem in any order and any
certificate of the root pool as the anchor, so meshpki searches too. A
search over look-alike certificates (one name, one key, many copies) is
exponential when done naively; here every signature is checked at most once
per search, every certificate is expanded at most once, and the search stops
after a fixed number of signature checks, so any input is judged quickly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshpki.bundle import describe

MAX_DEPTH = 8  # CA certificates above the start; Istio meshes use one or two
MAX_SIGNATURE_CHECKS = 512  # a real bundle needs a handful; this bounds hostile ones


def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s key made `child`'s signature (and the names chain).

    This is the one "issued by" of meshpki. It accepts a valid SHA-1 signature:
    cryptography's verify_directly_issued_by refuses SHA-1, but a SHA-1
    certificate is still issued by its issuer (verify reports the weak hash
    as its own finding), so the signature is checked by hand with the
    certificate's own parameters when cryptography declines.
    """
    if child.issuer != issuer.subject:
        return False
    try:
        child.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        key = issuer.public_key()
        params = child.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, params, child.signature_hash_algorithm)  # type: ignore[arg-type]
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes, params)  # type: ignore[arg-type]
        else:
            return False
        return True
    except Exception:
        return False


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and signed_by(cert, cert)


@dataclass(frozen=True)
class PathResult:
    """The issuers above a certificate up to a trust anchor, or why there are none."""

    path: tuple[x509.Certificate, ...]
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class PathBuilder:
    """One search's memory: each (child, issuer) signature is checked once, and
    `signature_checks` counts the real checks (tests assert the bound)."""

    def __init__(self, max_depth: int = MAX_DEPTH, max_checks: int = MAX_SIGNATURE_CHECKS) -> None:
        self.max_depth = max_depth
        self.max_checks = max_checks
        self.signature_checks = 0
        self.capped = False
        self._signed: dict[tuple[x509.Certificate, x509.Certificate], bool] = {}

    def signed_by(self, child: x509.Certificate, issuer: x509.Certificate) -> bool:
        if child.issuer != issuer.subject:
            return False
        pair = (child, issuer)
        if pair not in self._signed:
            if self.signature_checks >= self.max_checks:
                self.capped = True
                return False
            self.signature_checks += 1
            self._signed[pair] = signed_by(child, issuer)
        return self._signed[pair]

    def build(self, start: x509.Certificate, intermediates: Sequence[x509.Certificate],
              anchors: Sequence[x509.Certificate]) -> PathResult:
        """Find issuers of `start` in `intermediates` up to one of `anchors`,
        checking every signature (any order; any pool cert may be the anchor)."""
        if start in anchors:  # trusted as it is (Go: a leaf in the root pool verifies)
            return PathResult((start,))
        pool = list(dict.fromkeys(intermediates))  # duplicates add nothing but work
        # failed[c] = the shallowest depth at which no path was found above c: from
        # there or deeper it cannot succeed either (a shortest path is simple), so
        # each certificate is expanded at most once per depth.
        failed: dict[x509.Certificate, int] = {}

        def search(cert: x509.Certificate, depth: int, on_path: frozenset[x509.Certificate]
                   ) -> tuple[x509.Certificate, ...] | None:
            for anchor in anchors:
                if self.signed_by(cert, anchor):
                    return (anchor,)
            if depth < self.max_depth:
                for inter in pool:
                    if inter in on_path or failed.get(inter, self.max_depth + 1) <= depth + 1:
                        continue
                    if not self.signed_by(cert, inter):
                        continue
                    rest = search(inter, depth + 1, on_path | {inter})
                    if rest is not None:
                        return (inter, *rest)
            failed[cert] = min(depth, failed.get(cert, depth))
            return None

        found = search(start, 0, frozenset({start}))
        if found is not None:
            return PathResult(found)
        if self.capped:
            return PathResult((), f"gave up after {self.max_checks} signature checks: cert-chain.pem holds too "
                                  "many look-alike certificates (same name) to try them all")
        return PathResult((), self.why_not(start, pool, anchors))

    def why_not(self, start: x509.Certificate, intermediates: Sequence[x509.Certificate],
                anchors: Sequence[x509.Certificate]) -> str:
        """Follow the first plausible issuer to say where the path stops, in a user's words."""
        cert, seen = start, [start]
        for _ in range(self.max_depth):
            if any(a.subject == cert.issuer for a in anchors):
                return (f"{describe(cert)} names issuer '{cert.issuer.rfc4514_string()}', and the root-cert.pem "
                        "cert of that name did not sign it (a different root with the same name, e.g. regenerated)")
            parents = [i for i in intermediates if i.subject == cert.issuer and i not in seen]
            signing = [p for p in parents if self.signed_by(cert, p)]
            if not signing:
                if parents:
                    return (f"{describe(cert)} names issuer '{cert.issuer.rfc4514_string()}', but the "
                            "cert-chain.pem cert of that name did not sign it")
                roots = ", ".join(describe(a) for a in anchors) or "none"
                return (f"{describe(cert)} was issued by '{cert.issuer.rfc4514_string()}', which is in neither "
                        f"root-cert.pem (roots: {roots}) nor cert-chain.pem")
            cert = signing[0]
            seen.append(cert)
        return f"the chain is longer than {self.max_depth} certificates or loops"


def build_path(start: x509.Certificate, intermediates: Sequence[x509.Certificate],
               anchors: Sequence[x509.Certificate], max_depth: int = MAX_DEPTH) -> PathResult:
    """One bounded search (see PathBuilder)."""
    return PathBuilder(max_depth).build(start, intermediates, anchors)
