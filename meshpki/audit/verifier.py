"""Verifying what the audit read: each distinct bundle once, in parallel."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from meshpki import checks, profiles, public
from meshpki.bundle import Bundle

# Verify findings that the audit grades itself, per certificate and as of --at;
# as verify errors they would double-count (and use "now" instead of --at).
_TIME_CODES = frozenset({"expired"})


def _content_key(bundle: Bundle) -> bytes:
    """Bundles with the same bytes verify the same: a live secret that matches
    the store is checked once."""
    digest = hashlib.sha256(bundle.form.encode())
    for name in sorted(bundle.files):
        digest.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(bundle.files[name]).digest())
    for name in sorted(bundle.unreadable):
        digest.update(b"\1" + name.encode())
    return digest.digest()


def structural_errors(bundle: Bundle, trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN
                      ) -> tuple[checks.Finding, ...]:
    """What makes a bundle fail verify now, apart from expiry (graded per
    certificate, as of --at). The workload handshake uses the system clock."""
    report = checks.check_bundle(bundle, warn_days=0, trust_domain=trust_domain)
    # A bundle from the public ConfigMap has no key by design: what needs the key is not its fault.
    keyless = public.KEY_FILES if public.is_public(bundle) else ()
    return tuple(f for f in report.findings if f.severity is checks.Severity.ERROR and f.code not in _TIME_CODES
                 and f.file not in keyless)


class Verifier:
    """Verifies each distinct bundle once (a live secret that matches the store
    is the same bytes) and remembers the answer; thread-safe."""

    def __init__(self, workers: int | None = None, trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN) -> None:
        self.workers = workers or max(2, os.cpu_count() or 2)
        self.trust_domain = trust_domain
        self._results: dict[bytes, tuple[checks.Finding, ...]] = {}
        self._lock = threading.Lock()

    def verify_many(self, bundles: Iterable[Bundle]) -> None:
        """Verify in parallel: the handshake and signatures release the GIL for part of their work."""
        todo: dict[bytes, Bundle] = {}
        with self._lock:
            for bundle in bundles:
                key = _content_key(bundle)
                if key not in self._results:
                    todo.setdefault(key, bundle)
        if not todo:
            return
        with ThreadPoolExecutor(max_workers=min(self.workers, len(todo)), thread_name_prefix="meshpki-verify") as pool:
            found = dict(zip(todo, pool.map(self._verify, todo.values()), strict=False))
        with self._lock:
            self._results.update(found)

    def _verify(self, bundle: Bundle) -> tuple[checks.Finding, ...]:
        return structural_errors(bundle, self.trust_domain)

    def __call__(self, bundle: Bundle) -> tuple[checks.Finding, ...]:
        key = _content_key(bundle)
        with self._lock:
            if key in self._results:
                return self._results[key]
        findings = self._verify(bundle)
        with self._lock:
            return self._results.setdefault(key, findings)
