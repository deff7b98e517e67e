"""The public half of a bundle, in a ConfigMap anyone may be allowed to read.

Auditing a cluster from inside it used to need `get` on the `cacerts` secret,
which hands the auditor the intermediate's private key. Every push therefore
also writes the ConfigMap `meshpki-public` beside the secret (same
namespace): the certificates and the CRL, never a key. `meshpki audit
--public-only` grades from it alone, so the audit's RBAC is `get` on one
ConfigMap (samples/audit-cronjob.yaml). The ConfigMap is written with the
secret's safety: only when it differs, conditionally on the resourceVersion
read, and read back.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshpki.answers import LiveConfigMap
from meshpki.bundle import CA_CERT, CA_CRL, CA_CRT, CA_KEY, CERT_CHAIN, ROOT_CERT, TLS_CRT, TLS_KEY, Bundle
from meshpki.errors import KubeError, MeshPKIError
from meshpki.kube import Cluster, SecretRef

PUBLIC_NAME = "meshpki-public"
PUBLIC_FILES = (CA_CERT, CERT_CHAIN, ROOT_CERT, CA_CRL, TLS_CRT, CA_CRT)
KEY_FILES = (CA_KEY, TLS_KEY)
SOURCE_PREFIX = "public:"
ANNOTATION_OF = "meshpki.io/public-of"


def public_data(data: Mapping[str, bytes]) -> dict[str, str]:
    """What of a bundle's files may be public: certificates and CRL (PEM text)."""
    return {k: data[k].decode("utf-8", errors="replace") for k in PUBLIC_FILES if k in data}


def publish(conn: Cluster, namespace: str, secret_name: str, data: Mapping[str, bytes],
            labels: Mapping[str, str]) -> str | None:
    """Make the ConfigMap hold the public part of `data`; a note of what
    changed (None: already so). A refusal (403) becomes a note, not a failure:
    the secret, which istiod needs, is already written."""
    wanted = public_data(data)
    annotations = {ANNOTATION_OF: secret_name}
    where = f"configmap {namespace}/{PUBLIC_NAME}"
    try:
        live = conn.read_configmap(namespace, PUBLIC_NAME)
        if live is not None and live.data == wanted and live.annotations.get(ANNOTATION_OF) == secret_name:
            return None
        stored = conn.write_configmap(namespace, PUBLIC_NAME, wanted, labels, annotations,
                                      live.resource_version if live is not None else None)
        _check_read_back(conn, namespace, wanted, stored)
    except KubeError as exc:
        if exc.status != 403:
            raise
        return (f"warning: {where} (certificates only, for audit --public-only) not written: {exc}")
    return f"{where} {'updated' if live is not None else 'created'}: certificates and CRL, no key"


def _check_read_back(conn: Cluster, namespace: str, wanted: Mapping[str, str], stored: LiveConfigMap) -> None:
    back = conn.read_configmap(namespace, PUBLIC_NAME)
    if back is None or back.data != wanted:
        raise MeshPKIError(f"context {conn.context}: configmap {namespace}/{PUBLIC_NAME} read back differs from "
                           f"what was written (resourceVersion {stored.resource_version}); push again")


def is_public(bundle: Bundle) -> bool:
    """A bundle read from the public ConfigMap: it has no key by design."""
    return bundle.source.startswith(SOURCE_PREFIX)


def without_key(bundle: Bundle) -> Bundle:
    """The bundle as its public ConfigMap shows it (to compare the two)."""
    return Bundle({k: v for k, v in bundle.files.items() if k not in KEY_FILES}, bundle.source, bundle.form)


def read_public(target: SecretRef) -> tuple[Bundle | None, str | None, str | None]:
    """(bundle, error, transport risk) from a cluster's public ConfigMap; the
    bundle has no key. Never reads a secret."""
    risk = None
    try:
        with target.connect() as conn:
            risk = conn.transport_risk
            found = conn.read_configmap(target.namespace, PUBLIC_NAME)
    except MeshPKIError as exc:
        return None, str(exc), risk
    if found is None:
        return None, (f"context {target.label}: no configmap {target.namespace}/{PUBLIC_NAME} (meshpki push writes "
                      f"it beside the secret): run meshpki push {target.cluster}, or audit without --public-only"), risk
    files = {k: v.encode() for k, v in found.data.items() if k in PUBLIC_FILES}
    return Bundle.from_secret_data(files, f"{SOURCE_PREFIX}{target.label}"), None, risk
