"""One TLS context per trust setting, shared by the clusters of a run.

The kubernetes client hands urllib3 file names (the CA bundle, a client
certificate and key) and urllib3 builds a new `ssl.SSLContext` for every
connection it opens: creating one and loading one CA costs about 0.5 ms of
CPU, loading the system's CA bundle (a kubeconfig without
certificate-authority) about 30 ms. An audit opens one connection per
cluster, so a 100-cluster fleet paid that 100 times over, under the GIL,
while its reads waited on it (bench/bench_audit.py).

`share` gives clusters whose kubeconfig entries hold the same bytes (CA
bundle, client certificate, client key) and the same hostname setting one
context, built the way urllib3 builds its own: `create_urllib3_context`
with certificate verification required, then the same CA (or the system
bundle when there is none) and the same client certificate. Nothing is
less strict: every connection still verifies the server's chain against
exactly the CA its own kubeconfig entry names, and its host name (or
tls-server-name) against its own server, per connection; only the CPU of
building identical contexts is saved. Anything else (a proxy, an
unverified or plain-http server, an encrypted client key, a file that
cannot be read now) is left to urllib3 as before, so its errors and
messages do not change.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from typing import Any

_LOCK = threading.Lock()
_CONTEXTS: dict[tuple[Any, ...], ssl.SSLContext] = {}

# urllib3 TLS settings `share` reproduces; any other one set means: leave it to urllib3.
_HANDLED = frozenset({"cert_reqs", "ca_certs", "ca_cert_data", "cert_file", "key_file", "assert_hostname"})
_TLS_SETTINGS = frozenset({"key_password", "ca_cert_dir", "ssl_version", "ssl_minimum_version",
                           "ssl_maximum_version", "assert_fingerprint", "ssl_context", "ciphers"})


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def _digest(content: str | bytes | None) -> bytes | None:
    """What identifies a file's content in the cache: no private key bytes kept there."""
    if content is None:
        return None
    return hashlib.sha256(content.encode() if isinstance(content, str) else content).digest()


def share(api_client: Any) -> None:
    """Give this client's connections the run's context for its trust setting
    (see the module docstring); leaves the client as it is when that does not apply."""
    import urllib3

    manager = getattr(getattr(api_client, "rest_client", None), "pool_manager", None)
    if type(manager) is not urllib3.PoolManager:  # a proxy (or something new): urllib3 as is
        return
    host = str(getattr(api_client.configuration, "host", ""))
    kw = manager.connection_pool_kw
    if not host.lower().startswith("https://") or kw.get("cert_reqs") != ssl.CERT_REQUIRED:
        return
    if any(kw.get(name) is not None for name in _TLS_SETTINGS):
        return
    try:
        ca_file, cert, key = _read(kw.get("ca_certs")), _read(kw.get("cert_file")), _read(kw.get("key_file"))
    except OSError:
        return  # urllib3 reports an unreadable file when it connects, as before
    if key is not None and b"ENCRYPTED" in key:
        return  # urllib3 refuses an encrypted client key with its own message
    ca_data = kw.get("ca_cert_data")
    ident = (_digest(ca_file), _digest(ca_data), _digest(cert), _digest(key), kw.get("assert_hostname"))
    with _LOCK:
        context = _CONTEXTS.get(ident)
        if context is None:
            try:
                context = _build(kw)
            except (OSError, ValueError):
                return  # a CA or certificate urllib3 cannot load: it says so when it connects, as before
            _CONTEXTS[ident] = context
    for name in _HANDLED - {"cert_reqs", "assert_hostname"}:
        kw.pop(name, None)
    kw["ssl_context"] = context


class _SharedContext(ssl.SSLContext):
    """A context several connections are made from at once. urllib3 sets ALPN
    on its context before every connection; on a shared one that would free
    the buffer another thread's new connection is copying (OpenSSL's
    SSL_CTX_set_alpn_protos while SSL_new runs without the GIL), so the same
    protocols are set once, when the context is built."""

    _alpn: tuple[str, ...] | None = None

    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        protocols = tuple(alpn_protocols)
        if protocols != self._alpn:
            super().set_alpn_protocols(protocols)
            self._alpn = protocols


def _build(kw: dict[str, Any]) -> ssl.SSLContext:
    """The context urllib3 would build for these settings (urllib3.connection's
    _ssl_wrap_socket_and_match_hostname and util.ssl_.ssl_wrap_socket)."""
    from urllib3.util.ssl_ import ALPN_PROTOCOLS, create_urllib3_context

    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.__class__ = _SharedContext  # the same object and settings, ALPN set once (above)
    if kw.get("ca_certs") or kw.get("ca_cert_data"):
        context.load_verify_locations(kw.get("ca_certs"), None, kw.get("ca_cert_data"))
    else:
        context.load_default_certs()
    if kw.get("cert_file"):
        context.load_cert_chain(kw["cert_file"], kw.get("key_file"))
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context
