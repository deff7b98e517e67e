"""Workload identities and a real mutual-TLS handshake, in memory.

A bundle is only good if the workload certificates istiod signs with it are
accepted by the proxies of every cluster. Nothing answers that better than
doing what two proxies do: present leaf + cert-chain.pem, trust only the own
cluster's root-cert.pem, and shake hands. Python's ssl module (OpenSSL) runs
both ends over MemoryBIOs, so no socket or port is involved. Envoy uses
BoringSSL; OpenSSL's chain rules (CA flag, keyUsage keyCertSign, pathlen,
validity, weak signatures at security level 2) are close to it.

OpenSSL checks validity against the system clock, never a frozen test clock.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from meshpki import profiles
from meshpki.bundle import cert_to_pem
from meshpki.keys import PrivateKey

# What OpenSSL's verify errors become on the wire (ssl/statem: ssl_x509err2alert),
# so a failure names the alert a proxy log would show.
_VERIFY_CODE_ALERTS = {
    2: "UNKNOWN_CA",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    19: "UNKNOWN_CA",  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: "UNKNOWN_CA",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "UNKNOWN_CA",  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    9: "BAD_CERTIFICATE",  # not yet valid
    10: "CERTIFICATE_EXPIRED",
    23: "CERTIFICATE_REVOKED",  # X509_V_ERR_CERT_REVOKED
    3: "BAD_CERTIFICATE",  # X509_V_ERR_UNABLE_TO_GET_CRL (unknown_ca in some versions)
    12: "BAD_CERTIFICATE",  # X509_V_ERR_CRL_HAS_EXPIRED
    7: "DECRYPT_ERROR",  # certificate signature failure
}
_MAX_ROUNDS = 50  # a handshake takes a handful of flights; this only stops a runaway loop


def workload_key() -> PrivateKey:
    """ECDSA P-256: what istio-agent generates when asked for ECDSA, and fast."""
    return ec.generate_private_key(ec.SECP256R1())


def spiffe_trust_domain(cert: x509.Certificate) -> str | None:
    """The trust domain of the first spiffe:// URI SAN, as a proxy reads the peer identity."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://"):
            return uri[len("spiffe://"):].split("/", 1)[0] or None
    return None


@dataclass
class Endpoint:
    """One side of a handshake: a workload of one cluster.

    `chain_pem` is what the proxy presents (workload leaf first, then the
    cluster's cert-chain.pem); `trust_pem` is the only trust it has (the
    cluster's root-cert.pem). SSL contexts are built once and reused for every
    pair the cluster is in.
    """

    name: str
    chain_pem: bytes
    key: PrivateKey
    trust_pem: bytes
    trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN
    _contexts: dict[bool, ssl.SSLContext] = field(default_factory=dict, repr=False)

    def context(self, server_side: bool, crl_pem: bytes | None = None) -> ssl.SSLContext:
        """The side's context; with CRLs a fresh one (they differ per pair), else the cached one."""
        if crl_pem:
            return _make_context(self, server_side, crl_pem)
        if server_side not in self._contexts:
            self._contexts[server_side] = _make_context(self, server_side)
        return self._contexts[server_side]


def workload_endpoint(name: str, ca_cert: x509.Certificate, ca_key: PrivateKey, cert_chain_pem: bytes,
                      trust_pem: bytes, trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN,
                      now=None, namespace: str = "default", service_account: str = "default",
                      ttl: dt.timedelta = profiles.WORKLOAD_TTL) -> tuple[Endpoint, x509.Certificate]:
    """Sign a workload certificate the way istiod does and wrap it as an Endpoint."""
    key = workload_key()
    leaf = profiles.make_workload(ca_cert, ca_key, key, trust_domain=trust_domain, namespace=namespace,
                                  service_account=service_account, ttl=ttl, now=now)
    chain = cert_to_pem(leaf) + (cert_chain_pem if cert_chain_pem.endswith(b"\n") or not cert_chain_pem
                                 else cert_chain_pem + b"\n")
    return Endpoint(name, chain, key, trust_pem, trust_domain), leaf


def _make_context(endpoint: Endpoint, server_side: bool, crl_pem: bytes | None = None) -> ssl.SSLContext:
    """An SSLContext like a sidecar's: TLS 1.2+, peer certificate required, no
    hostname check (Istio matches SPIFFE identities, not DNS names); with
    `crl_pem`, revocation checked on every certificate of the peer's chain,
    as Envoy does once it has a CRL (OpenSSL then also wants a CRL from every
    CA on the way, and refuses one past its nextUpdate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata=endpoint.trust_pem.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError, TypeError) as exc:  # TypeError: non-ASCII bytes around the PEM blocks
        raise HandshakeSetupError(f"{endpoint.name}: root-cert.pem cannot be loaded as trust ({exc})") from None
    key_pem = endpoint.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    # ssl reads certificates and keys only from files: a private 0700 folder,
    # files 0600, removed as soon as OpenSSL has read them.
    with tempfile.TemporaryDirectory(prefix="meshpki-tls-") as tmp:
        cert_file, key_file = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
        for path, data in ((cert_file, endpoint.chain_pem), (key_file, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise HandshakeSetupError(f"{endpoint.name}: OpenSSL refuses the workload chain ({exc})") from None
        if crl_pem:  # cadata takes certificates only; a file may hold CRLs (X509_load_cert_crl_file)
            crl_file = Path(tmp) / "crl.pem"
            crl_file.write_bytes(crl_pem)
            try:
                ctx.load_verify_locations(cafile=crl_file)
            except ssl.SSLError as exc:
                raise HandshakeSetupError(f"{endpoint.name}: ca-crl.pem cannot be loaded ({exc})") from None
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    return ctx


class HandshakeSetupError(Exception):
    """A side cannot even be configured (its roots or chain do not load)."""


@dataclass(frozen=True)
class HandshakeResult:
    """The verdict of one mutual-TLS handshake, client -> server.

    `reason` is one line for a report; `alert` is the TLS alert a proxy log
    would show (UNKNOWN_CA, CERTIFICATE_EXPIRED, ...); `rejected_by` names the
    side that refused the other's certificate or identity.
    """

    client: str
    server: str
    ok: bool
    reason: str
    version: str | None = None
    alert: str | None = None
    rejected_by: str | None = None
    detail: str = ""  # the bare cause ("unable to get local issuer certificate"), without who/whom


def mutual_tls(client: Endpoint, server: Endpoint, crl_pem: bytes | None = None) -> HandshakeResult:
    """Run a full mutual-TLS handshake in memory and check each peer's SPIFFE
    trust domain the way a sidecar does after the handshake; with `crl_pem`,
    both sides check revocation along the whole peer chain."""
    try:
        cctx, sctx = client.context(server_side=False, crl_pem=crl_pem), server.context(True, crl_pem)
    except HandshakeSetupError as exc:
        return HandshakeResult(client.name, server.name, False, str(exc), detail=str(exc).split(": ", 1)[-1])
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = cctx.wrap_bio(c_in, c_out, server_side=False)
    srv = sctx.wrap_bio(s_in, s_out, server_side=True)
    errors: dict[str, ssl.SSLError] = {}
    done = {"client": False, "server": False}

    def step(name: str, obj: ssl.SSLObject) -> None:
        if done[name] or name in errors:
            return
        try:
            obj.do_handshake()
            done[name] = True
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLError as exc:
            errors[name] = exc

    for _ in range(_MAX_ROUNDS):
        step("client", cli)
        _pump(c_out, s_in)
        step("server", srv)
        _pump(s_out, c_in)
        if errors or (done["client"] and done["server"]):
            break
    if not errors:
        # In TLS 1.3 the client finishes before the server has judged its
        # certificate; an application-data round trip surfaces a late alert.
        errors.update(_round_trip(cli, srv, c_out, s_in, s_out, c_in))
    if errors:
        # let the rejecting side's alert reach the other side for a fuller reason
        _pump(c_out, s_in)
        _pump(s_out, c_in)
        for name, obj in (("server", srv), ("client", cli)):
            if name not in errors:
                try:
                    obj.read(1) if done[name] else obj.do_handshake()
                except ssl.SSLError as exc:
                    errors[name] = exc
        return _failure(client, server, errors)
    version = cli.version()
    for me, peer_obj, peer in ((client, cli, server), (server, srv, client)):
        der = peer_obj.getpeercert(binary_form=True)
        domain = spiffe_trust_domain(x509.load_der_x509_certificate(der)) if der else None
        if domain != me.trust_domain:
            return HandshakeResult(
                client.name, server.name, False,
                f"{me.name} rejects {peer.name}'s identity: trust domain {domain or '(none)'} is not "
                f"{me.trust_domain}", version, None, me.name,
                f"peer trust domain {domain or '(none)'} is not {me.trust_domain}")
    return HandshakeResult(client.name, server.name, True, f"mutual TLS OK ({version})", version)


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def _round_trip(cli: ssl.SSLObject, srv: ssl.SSLObject, c_out: ssl.MemoryBIO, s_in: ssl.MemoryBIO,
                s_out: ssl.MemoryBIO, c_in: ssl.MemoryBIO) -> dict[str, ssl.SSLError]:
    errors: dict[str, ssl.SSLError] = {}
    try:
        cli.write(b"ping")
        _pump(c_out, s_in)
        srv.read(4)
    except ssl.SSLError as exc:
        errors["server"] = exc
        return errors
    try:
        srv.write(b"pong")
        _pump(s_out, c_in)
        while True:
            try:
                if cli.read(4) == b"pong":
                    break
            except ssl.SSLWantReadError:
                _pump(s_out, c_in)
                if not c_in.pending:
                    raise
    except ssl.SSLError as exc:
        errors["client"] = exc
    return errors


def _failure(client: Endpoint, server: Endpoint, errors: dict[str, ssl.SSLError]) -> HandshakeResult:
    """Name who refused whom, why, and the alert on the wire."""
    sides = {"client": (client, server), "server": (server, client)}
    for name, exc in errors.items():
        if isinstance(exc, ssl.SSLCertVerificationError):
            me, peer = sides[name]
            alert = _VERIFY_CODE_ALERTS.get(exc.verify_code, "BAD_CERTIFICATE")
            other = errors.get("server" if name == "client" else "client")
            if other is not None and getattr(other, "reason", None) and "ALERT" in str(other.reason):
                alert = str(other.reason).split("ALERT_", 1)[1]
            return HandshakeResult(
                client.name, server.name, False,
                f"{me.name} rejects {peer.name}'s certificate: {exc.verify_message} (TLS alert {alert})",
                None, alert, me.name, f"{exc.verify_message} (TLS alert {alert})")
    name, exc = next(iter(errors.items()))
    reason = getattr(exc, "reason", None) or type(exc).__name__
    failed_alert = str(reason).split("ALERT_", 1)[1] if "ALERT_" in str(reason) else None
    return HandshakeResult(client.name, server.name, False,
                           f"handshake failed on the {name} side ({sides[name][0].name}): {reason}", None, failed_alert,
                           None, f"handshake failed: {reason}")
