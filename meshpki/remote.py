"""`meshpki remote-secret`: give a primary's istiod read access to a remote cluster.

The mesh's second credential (docs/remote-clusters.md): in the remote, a
service account bound to a read-only ClusterRole and a token for it; in the
primary, a kubeconfig made from that token, stored as the Secret
`istio-remote-secret-CLUSTER` that istiod watches.

The order is the safety argument. Every write, in both clusters, is first
sent with `dryRun=All`, so a refusal (RBAC, admission, a missing namespace)
stops the run before anything changed. Then the remote gets its service
account, role and binding, a new token if one is needed, the primary's
secret is written with the resourceVersion we read and read back, and only
after that is an old token Secret deleted, so istiod never holds a dead
token. A token Secret this run made is deleted again if a later step fails.

The kind of token is a policy the primary's secret keeps: without
--token-ttl a run (and --rotate) makes the kind the live secret has, a
TokenRequest token of the same lifetime or a long-lived token Secret, so
renewing a token never quietly changes how long tokens live. --token-ttl
DURATION or --token-ttl never changes it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from meshpki import dates, kube
from meshpki.dates import iso
from meshpki.errors import InputError, KubeError, MeshPKIError
from meshpki.kube import DEFAULT_NAMESPACE, DEFAULT_TIMEOUT, Cluster, LiveSecret, secret_manifest
from meshpki.limits import DEFAULT_WARN_DAYS, MAX_DAYS, MIN_TOKEN_TTL, TOKEN_TTL_NEVER
from meshpki.push import MANAGED_BY, MANAGED_BY_LABEL

DEFAULT_SERVICE_ACCOUNT = "istio-reader-service-account"
READER_ROLE = "meshpki-istio-reader"
LABEL_MULTICLUSTER = "istio/multiCluster"  # what istiod's secret controller selects on
ANN_CLUSTER = "networking.istio.io/cluster"
ANN_TOKEN_SECRET = "meshpki.io/token-secret"  # the remote token Secret this kubeconfig's token comes from
ANN_TOKEN_TTL = "meshpki.io/token-ttl"  # the lifetime its TokenRequest token was asked for, e.g. 90d
LABEL_FOR_PRIMARY = "meshpki.io/remote-secret-for"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
RBAC = "rbac.authorization.k8s.io"

# What istiod reads from a remote cluster: Istio's istio-reader ClusterRole
# (manifests/charts/istio-control/istio-discovery/templates/reader-clusterrole.yaml),
# read verbs only. Istio's role also lets istiod create tokenreviews and
# subjectaccessreviews, which only a primary-remote setup (proxies of the
# remote talking to this istiod) needs; see docs/remote-clusters.md.
READ = ["get", "list", "watch"]
READER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["config.istio.io", "security.istio.io", "networking.istio.io", "authentication.istio.io",
                   "rbac.istio.io", "telemetry.istio.io", "extensions.istio.io"],
     "resources": ["*"], "verbs": READ},
    {"apiGroups": [""], "resources": ["endpoints", "pods", "services", "nodes", "replicationcontrollers",
                                      "namespaces", "secrets"], "verbs": READ},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": READ},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": READ},
    {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports"], "verbs": READ},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": READ},
]

CREATE, UPDATE, UNCHANGED = "create", "update", "unchanged"


class RemoteError(MeshPKIError):
    """remote-secret was refused or could not finish."""


@dataclass(frozen=True)
class RemoteTarget:
    """One remote cluster as one primary's istiod will read it."""

    cluster: str  # the remote's cluster name: istiod's cluster ID and the data key
    context: str  # kubeconfig context of the remote
    primary: str  # the primary's cluster name (messages, token Secret labels)
    primary_context: str
    kubeconfig: str | None = None
    primary_kubeconfig: str | None = None
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    namespace: str = DEFAULT_NAMESPACE
    # --token-ttl: a TokenRequest token that lives this long; TOKEN_TTL_NEVER, a long-lived
    # token Secret; None (not given), the kind and lifetime the live secret has (`token_policy`)
    token_ttl: dt.timedelta | str | None = None
    timeout: float = DEFAULT_TIMEOUT
    token_wait: float = 30.0  # seconds for the token controller to fill a token Secret

    @property
    def secret_name(self) -> str:
        return f"istio-remote-secret-{self.cluster}"

    @property
    def binding_name(self) -> str:
        return f"{READER_ROLE}-{self.namespace}-{self.service_account}"

    @property
    def label(self) -> str:
        return f"{self.cluster} -> {self.primary}"


@dataclass(frozen=True)
class RemoteResult:
    target: RemoteTarget
    action: str  # create | update | unchanged (of the primary's secret)
    secret: SecretSpec  # the primary's secret as written (or, dry run, as it would be)
    token_source: str  # "secret NAME" or "TokenRequest"
    token_expires: dt.datetime | None
    created: tuple[str, ...] = ()  # remote objects created (dry run: would be)
    deleted: str | None = None  # the old token Secret deleted after the primary took the new token
    warnings: tuple[str, ...] = field(default_factory=tuple)
    dry_run: bool = False
    token_ttl: dt.timedelta | None = None  # the TokenRequest lifetime (None: a token Secret's token)

    def summary(self) -> dict[str, Any]:
        """What happened, without the token: the data `-o json|yaml` prints after a real run."""
        t = self.target
        return {"cluster": t.cluster, "primary": t.primary, "secret": f"{t.namespace}/{t.secret_name}",
                "action": self.action, "token": self.token_source,
                "token_ttl": dates.format_duration(self.token_ttl) if self.token_ttl else None,
                "token_expires": iso(self.token_expires) if self.token_expires else None,
                "created": list(self.created), "deleted": self.deleted}


# -- tokens and kubeconfigs ----------------------------------------------------

def _claim_time(token: str, claim: str) -> dt.datetime | None:
    """A time claim of the JWT (no signature check: only the issuer can check it);
    None when the token has no such claim."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise RemoteError("the token is not a JWT (header.payload.signature)") from None
    value = claims.get(claim) if isinstance(claims, dict) else None
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RemoteError(f"the token's {claim} claim is not a number")
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise RemoteError(f"the token's {claim} claim is not a time") from None


def token_expiry(token: str) -> dt.datetime | None:
    """The JWT's `exp` claim; None for a token without one, a legacy service-account token."""
    return _claim_time(token, "exp")


def token_lifetime(token: str) -> dt.timedelta | None:
    """exp - iat: how long the API server made a TokenRequest token live; None
    without both claims."""
    exp, iat = token_expiry(token), _claim_time(token, "iat")
    return exp - iat if exp is not None and iat is not None else None


def build_kubeconfig(cluster: str, server: str, ca_pem: bytes | None, token: str) -> bytes:
    """A kubeconfig with one context named after the cluster, as istiod reads it."""
    import yaml

    entry: dict[str, Any] = {"server": server}
    if ca_pem:
        entry["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": entry}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster,
        "preferences": {},
        "users": [{"name": cluster, "user": {"token": token}}],
    }
    return yaml.safe_dump(doc, sort_keys=False).encode()


def _current_field(data: bytes, kind: str, field_name: str) -> str | None:
    """One string of the current context's cluster or user (`kind`) in a kubeconfig; None if there is none."""
    import yaml

    try:
        doc = yaml.safe_load(data.decode("utf-8"))
        current = doc.get("current-context")
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == current)
        entry = next(e[kind] for e in doc[f"{kind}s"] if e["name"] == ctx[kind])
        value = entry.get(field_name)
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError, KeyError, TypeError, StopIteration):
        return None
    return value if isinstance(value, str) and value else None


def kubeconfig_token(data: bytes) -> str | None:
    """The bearer token of the current context's user in a kubeconfig; None if there is none."""
    return _current_field(data, "user", "token")


def kubeconfig_server(data: bytes) -> str | None:
    """The API server of the current context's cluster in a kubeconfig; None if there is none."""
    return _current_field(data, "cluster", "server")


def loopback_warning(context: str, server: str) -> str | None:
    """A server address another cluster cannot reach (kind, minikube, port-forwards)."""
    host = urlsplit(server).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    return (f"context {context}: server {server} is a loopback address, which istiod in the primary cannot "
            "reach; use a kubeconfig whose server is an address the primary's pods can reach")


# -- the objects ---------------------------------------------------------------

def _managed() -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY}


def _remote_objects(t: RemoteTarget) -> list[tuple[kube._Op, str, dict[str, Any]]]:
    """(operation, collection path, body) of the service account, role and binding."""
    meta = {"labels": _managed()}
    return [
        (kube.op("create", "serviceaccounts", t.namespace, t.service_account),
         f"/api/v1/namespaces/{t.namespace}/serviceaccounts",
         {"apiVersion": "v1", "kind": "ServiceAccount",
          "metadata": {"name": t.service_account, "namespace": t.namespace, **meta}}),
        (kube.op("create", "clusterroles", None, READER_ROLE, RBAC), f"/apis/{RBAC}/v1/clusterroles",
         {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRole", "metadata": {"name": READER_ROLE, **meta},
          "rules": READER_RULES}),
        (kube.op("create", "clusterrolebindings", None, t.binding_name, RBAC), f"/apis/{RBAC}/v1/clusterrolebindings",
         {"apiVersion": f"{RBAC}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": t.binding_name, **meta},
          "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": READER_ROLE},
          "subjects": [{"kind": "ServiceAccount", "name": t.service_account, "namespace": t.namespace}]}),
    ]


def _token_secret_body(t: RemoteTarget, name: str) -> dict[str, Any]:
    """A Secret the token controller fills with a token that never expires
    (what `istioctl create-remote-secret` makes since Kubernetes 1.24)."""
    return secret_manifest(t.namespace, name, None, {**_managed(), LABEL_FOR_PRIMARY: t.primary},
                           {SA_NAME_ANNOTATION: t.service_account}, SA_TOKEN_TYPE)


@dataclass(frozen=True)
class SecretSpec:
    """The primary's secret as meshpki writes it."""

    namespace: str
    name: str
    data: dict[str, bytes]
    labels: dict[str, str]
    annotations: dict[str, str]

    def __repr__(self) -> str:  # the data holds a bearer token
        return f"SecretSpec({self.namespace}/{self.name}, labels={self.labels!r}, annotations={self.annotations!r})"

    def manifest(self) -> dict[str, Any]:
        return secret_manifest(self.namespace, self.name, self.data, self.labels, self.annotations)


def _desired(t: RemoteTarget, kubeconfig: bytes, token_secret: str | None, ttl: dt.timedelta | None,
             live: LiveSecret | None) -> SecretSpec:
    """Data, labels and annotations of the primary's secret; other tools' metadata survives.
    The annotations record where the token came from: its token Secret, or its TokenRequest lifetime."""
    labels = {**(live.labels if live else {}), LABEL_MULTICLUSTER: "true", **_managed()}
    annotations = {k: v for k, v in (live.annotations if live else {}).items()
                   if k not in (ANN_TOKEN_SECRET, ANN_TOKEN_TTL)}
    annotations[ANN_CLUSTER] = t.cluster
    if token_secret:
        annotations[ANN_TOKEN_SECRET] = token_secret
    elif ttl is not None:
        annotations[ANN_TOKEN_TTL] = dates.format_duration(ttl)
    return SecretSpec(t.namespace, t.secret_name, {t.cluster: kubeconfig}, labels, annotations)


# -- the token policy ----------------------------------------------------------

def live_token_ttl(live: LiveSecret | None, cluster: str) -> dt.timedelta | None:
    """The TokenRequest lifetime of the live secret's token; None when it is a
    token Secret's (or there is no usable token: the default, a token Secret).

    The lifetime is the one meshpki recorded (ANN_TOKEN_TTL), else exp - iat of
    the token (a secret some other tool made, or an older meshpki). A token that
    expires but whose lifetime cannot be told is refused: guessing would
    change the policy."""
    if live is None or ANN_TOKEN_SECRET in live.annotations:
        return None
    recorded = live.annotations.get(ANN_TOKEN_TTL)
    if recorded:
        with contextlib.suppress(InputError):
            return dates.parse_duration(recorded, at_least=MIN_TOKEN_TTL)
    token = kubeconfig_token(live.data.get(cluster, b""))
    try:
        if token is None or token_expiry(token) is None:
            return None  # no token, or one that never expires
        lifetime = token_lifetime(token)
    except RemoteError:
        return None  # not a JWT we can read: nothing to keep
    if lifetime is not None and MIN_TOKEN_TTL <= lifetime <= dt.timedelta(days=MAX_DAYS):
        return dt.timedelta(seconds=int(lifetime.total_seconds()))
    raise RemoteError(
        f"{live.namespace}/{live.name}: its token expires, but how long its tokens live cannot be told (no "
        f"{ANN_TOKEN_TTL} annotation, no usable iat claim); pass --token-ttl DURATION for a TokenRequest "
        f"token, or --token-ttl {TOKEN_TTL_NEVER} for a long-lived token Secret")


def token_policy(t: RemoteTarget, live: LiveSecret | None) -> dt.timedelta | None:
    """The TokenRequest lifetime this run makes tokens with, None for a token
    Secret: --token-ttl when given, else what the live secret has."""
    if t.token_ttl == TOKEN_TTL_NEVER:
        return None
    if isinstance(t.token_ttl, dt.timedelta):
        return t.token_ttl
    try:
        return live_token_ttl(live, t.cluster)
    except RemoteError as exc:
        raise RemoteError(f"{t.label}: {exc}") from None


def short_ttl_warning(ttl: dt.timedelta | None) -> str | None:
    """A lifetime of at most audit's default --warn-days: audit warns from the token's first day
    (a 30d token has 29 whole days left a moment after it was made)."""
    if ttl is None or ttl > dt.timedelta(days=DEFAULT_WARN_DAYS):
        return None
    return (f"tokens that live {dates.format_duration(ttl)} are within audit's default --warn-days "
            f"{DEFAULT_WARN_DAYS} from the start, so audit warns about each one until it is rotated; a "
            f"--token-ttl longer than --warn-days (e.g. 90d) leaves time to rotate before the warning")


# -- the workflow --------------------------------------------------------------

@dataclass
class _Run:
    """One remote-secret run: connections, what it read, what it made (to undo on failure)."""

    t: RemoteTarget
    remote: Cluster
    primary: Cluster
    endpoint: kube.Endpoint
    live: LiveSecret | None
    ttl: dt.timedelta | None  # the token policy (`token_policy`): a TokenRequest lifetime, None a token Secret
    made_token_secret: str | None = None

    def where(self, conn: Cluster) -> str:
        return f"{self.t.label}: context {conn.context}"


def remote_secret(t: RemoteTarget, rotate: bool = False, dry_run: bool = False,
                  progress: Callable[[str], None] | None = None) -> RemoteResult:
    """Create or refresh the primary's remote secret for `t.cluster` (see the module docstring)."""
    say = progress or (lambda _msg: None)
    endpoint = kube.context_endpoint(t.context, t.kubeconfig)
    warnings = [w for w in (loopback_warning(t.context, endpoint.server),) if w]
    with Cluster.connect(t.context, t.kubeconfig, t.timeout) as remote, \
            Cluster.connect(t.primary_context, t.primary_kubeconfig, t.timeout) as primary:
        live = primary.read_secret(t.namespace, t.secret_name)
        run = _Run(t, remote, primary, endpoint, live, token_policy(t, live))
        warnings += [w for w in (short_ttl_warning(run.ttl),) if w]
        missing = [o for o in _remote_objects(t) if not _exists(remote, o)]
        reuse = None if rotate else _reusable_token(run)
        if dry_run or (reuse is not None and not missing):
            planned = _plan_from(run, missing, reuse, rotate, warnings, dry_run)
            if dry_run or planned.action == UNCHANGED:
                return planned
        missing = _preflight(run, missing, reuse)
        try:
            for o in missing:
                _create_unless_there(remote, o)
            token, token_secret, ca = reuse or _new_token(run, say)
            result = _write_primary(run, _planned(run, token, token_secret, ca, [o[0].what for o in missing],
                                                  warnings))
        except MeshPKIError:
            _undo(run)
            raise
        old = run.live.annotations.get(ANN_TOKEN_SECRET) if run.live else None
        if old and old != token_secret and result.action != UNCHANGED:
            result = _retire(run, result, old)
        return result


def _retire(run: _Run, result: RemoteResult, old: str) -> RemoteResult:
    """Delete the token Secret the primary used before, once it holds the new
    token; only if it is a token Secret meshpki made for this account (the
    annotation naming it could have been edited to name any secret)."""
    t, remote = run.t, run.remote
    try:
        secret = remote.read_secret(t.namespace, old)
        if secret is None:
            return result
        if (secret.type != SA_TOKEN_TYPE or secret.labels.get(MANAGED_BY_LABEL) != MANAGED_BY
                or secret.annotations.get(SA_NAME_ANNOTATION) != t.service_account):
            return replace(result, warnings=(*result.warnings, (
                f"{t.namespace}/{old} in context {remote.context}, named as the old token Secret, is not a token "
                f"Secret meshpki made for {t.service_account}: left alone")))
        remote.delete_secret(t.namespace, old)
    except KubeError as exc:
        raise RemoteError(f"{t.label}: the primary holds the new token, but the old token Secret "
                          f"{t.namespace}/{old} could not be deleted ({exc}); delete it by hand: "
                          f"kubectl --context {remote.context} -n {t.namespace} delete secret {old}") from None
    return replace(result, deleted=f"{t.namespace}/{old}")


def _reusable_token(run: _Run) -> tuple[str, str | None, bytes | None] | None:
    """(token, token Secret, CA) the primary may keep using: its token Secret
    still exists and is filled, or its TokenRequest token has not expired
    (and the kind and lifetime asked for are the ones it has)."""
    t, live = run.t, run.live
    if run.ttl is None and (live is None or ANN_TOKEN_SECRET not in live.annotations):
        return _labelled_token(run)
    current = kubeconfig_token(live.data.get(t.cluster, b"")) if live is not None else None
    if live is None or current is None:
        return None
    if run.ttl is not None:
        try:
            exp = token_expiry(current)
            same_ttl = live_token_ttl(live, t.cluster) == run.ttl
        except RemoteError:
            return None
        if exp is None or exp <= dt.datetime.now(dt.UTC) or not same_ttl:
            return None
        return current, None, None
    name = live.annotations.get(ANN_TOKEN_SECRET)
    secret = run.remote.read_secret(t.namespace, name) if name else None
    if secret is None or not secret.data.get("token") or secret.type != SA_TOKEN_TYPE:
        return None
    return secret.data["token"].decode(), name, secret.data.get("ca.crt")


def _exists(remote: Cluster, o: tuple[kube._Op, str, dict[str, Any]]) -> bool | None:
    """Whether a remote object exists; None when we may not look (a create-only identity)."""
    op = o[0]
    try:
        found = remote.read_object(kube.op("get", op.resource, op.namespace, op.name, op.group), f"{o[1]}/{op.name}")
    except KubeError as exc:
        if exc.status == 403:
            return None
        raise
    return found is not None


def _labelled_token(run: _Run) -> tuple[str, str | None, bytes | None] | None:
    """A filled token Secret meshpki made for this primary earlier (found by its
    labels), so a primary that lost its secret gets the same token back."""
    t = run.t
    try:
        found = run.remote.list_secrets(t.namespace, f"{MANAGED_BY_LABEL}={MANAGED_BY},{LABEL_FOR_PRIMARY}={t.primary}")
    except KubeError as exc:
        if exc.status == 403:
            return None  # may not list: a new token Secret instead
        raise
    for secret in sorted(found, key=lambda s: s.name):
        if (secret.type == SA_TOKEN_TYPE and secret.data.get("token")
                and secret.annotations.get(SA_NAME_ANNOTATION) == t.service_account):
            return secret.data["token"].decode(), secret.name, secret.data.get("ca.crt")
    return None


def _create_unless_there(remote: Cluster, o: tuple[kube._Op, str, dict[str, Any]], dry_run: bool = False) -> bool:
    """Create (409 AlreadyExists: someone made it meanwhile, or we could not look: fine)."""
    try:
        remote.create_object(*o, dry_run=dry_run)
    except KubeError as exc:
        if exc.status == 409:
            return False
        raise
    return True


def _preflight(run: _Run, missing: list[tuple[kube._Op, str, dict[str, Any]]],
               reuse: tuple[str, str | None, bytes | None] | None) -> list[tuple[kube._Op, str, dict[str, Any]]]:
    """Every write of this run with dryRun=All: a refusal stops it before anything
    changed. Returns the objects to create (409 AlreadyExists: one we could not see is there)."""
    t = run.t
    to_create = []
    for o in missing:
        if _create_unless_there(run.remote, o, dry_run=True):
            to_create.append(o)
    if reuse is None and run.ttl is None:
        name = f"{t.service_account}-{t.primary}-token-preflight"
        run.remote.create_object(kube.op("create", "secrets", t.namespace, name),
                                 f"/api/v1/namespaces/{t.namespace}/secrets", _token_secret_body(t, name), dry_run=True)
    body = _desired(t, b"", None, run.ttl, run.live).manifest()
    if run.live is None:
        run.primary.create_object(kube.op("create", "secrets", t.namespace, t.secret_name),
                                  f"/api/v1/namespaces/{t.namespace}/secrets", body, dry_run=True)
    else:
        body["metadata"]["resourceVersion"] = run.live.resource_version
        run.primary.replace_object(kube.op("update", "secrets", t.namespace, t.secret_name),
                                   f"/api/v1/namespaces/{t.namespace}/secrets/{t.secret_name}", body, dry_run=True)
    return to_create


def _new_token(run: _Run, say: Callable[[str], None]) -> tuple[str, str | None, bytes | None]:
    """(token, token Secret name or None, the Secret's ca.crt): a TokenRequest
    with --token-ttl, else a fresh token Secret filled by the token controller."""
    t, remote = run.t, run.remote
    if run.ttl is not None:
        return remote.request_token(t.namespace, t.service_account, int(run.ttl.total_seconds())), None, None
    name = f"{t.service_account}-{t.primary}-token-{secrets.token_hex(3)}"[:253]
    remote.create_object(kube.op("create", "secrets", t.namespace, name),
                         f"/api/v1/namespaces/{t.namespace}/secrets", _token_secret_body(t, name))
    run.made_token_secret = name
    say(f"{t.label}: waiting up to {t.token_wait:g} s for the token controller to fill {t.namespace}/{name}")
    deadline = time.monotonic() + t.token_wait
    pause = 0.05
    while True:
        secret = remote.read_secret(t.namespace, name)
        if secret is not None and secret.data.get("token"):
            return secret.data["token"].decode(), name, secret.data.get("ca.crt")
        if time.monotonic() >= deadline:
            raise RemoteError(
                f"{run.where(remote)}: the token controller did not fill token Secret {t.namespace}/{name} within "
                f"{t.token_wait:g} s (it was deleted again); check that kube-controller-manager runs and that "
                f"serviceaccount {t.namespace}/{t.service_account} exists, or use --token-ttl for a TokenRequest")
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 1.0)


def _planned(run: _Run, token: str, token_secret: str | None, ca: bytes | None, created: list[str],
             warnings: list[str], dry_run: bool = False) -> RemoteResult:
    """The primary's secret for this token, and whether it means create, update or nothing."""
    t, live = run.t, run.live
    ca_pem = run.endpoint.ca_pem or ca
    if ca_pem is None:
        warnings.append(f"context {t.context}: the kubeconfig names no CA for {run.endpoint.server} and the token "
                        "carries none; istiod will trust the system's CAs for it")
    secret = _desired(t, build_kubeconfig(t.cluster, run.endpoint.server, ca_pem, token), token_secret, run.ttl,
                      live)
    if live is None:
        action = CREATE
    elif (dict(live.data), live.labels, live.annotations) == (secret.data, secret.labels, secret.annotations):
        action = UNCHANGED
    else:
        action = UPDATE
    source = f"secret {t.namespace}/{token_secret}" if token_secret else "TokenRequest"
    return RemoteResult(t, action, secret, source, token_expiry(token), tuple(created), None, tuple(warnings),
                        dry_run, run.ttl)


def _write_primary(run: _Run, result: RemoteResult) -> RemoteResult:
    """Create or replace the primary's secret (resourceVersion-guarded), then read it back."""
    t, primary, live, secret = run.t, run.primary, run.live, result.secret
    if result.action == UNCHANGED:
        return result
    if live is None:
        primary.create_secret(t.namespace, t.secret_name, secret.data, secret.labels, secret.annotations)
    else:
        primary.replace_secret(t.namespace, t.secret_name, secret.data, secret.labels, secret.annotations,
                               live.resource_version)
    stored = primary.read_secret(t.namespace, t.secret_name)
    if stored is None or dict(stored.data) != secret.data:
        raise RemoteError(f"{run.where(primary)}: read-back of {t.namespace}/{t.secret_name} does not match what was "
                          "written; something else is writing this secret: check and run again")
    return result


def _undo(run: _Run) -> None:
    """Delete the token Secret this run made: no unused credential stays behind.
    The service account, role and binding stay: harmless, and the next run reuses them."""
    if run.made_token_secret:
        # the error being raised matters more; a leftover token Secret is labelled as meshpki's
        with contextlib.suppress(KubeError):
            run.remote.delete_secret(run.t.namespace, run.made_token_secret)


def _plan_from(run: _Run, missing: list[tuple[kube._Op, str, dict[str, Any]]],
               reuse: tuple[str, str | None, bytes | None] | None, rotate: bool, warnings: list[str],
               dry_run: bool) -> RemoteResult:
    """The secret the primary would get, from reads alone (a new token is a write):
    what --dry-run shows, and how a run with nothing to do knows it."""
    t = run.t
    if reuse is None:
        why = "--rotate asks for a new token" if rotate else "there is no token the primary could keep"
        raise RemoteError(f"{t.label}: --dry-run writes nowhere, but {why} and making one (a token Secret or a "
                          "TokenRequest) is a write; run without --dry-run")
    return _planned(run, *reuse, [o[0].what for o in missing], warnings, dry_run)


# -- which remotes ---------------------------------------------------------------

def resolve_targets(resolver: Any, cluster: str | None, context: str | None, primary_context: str | None,
                    all_remotes: bool, **common: Any) -> list[RemoteTarget]:
    """One CLUSTER for one primary, or with --all every remote of every primary
    in the fleet file. Contexts and kubeconfigs resolve as for push
    (`locate.Resolver`); --primary-context defaults to the one fleet primary that lists CLUSTER."""
    fleet = resolver.fleet

    def target(remote: Any, primary: Any) -> RemoteTarget:
        if remote.cluster == primary.cluster:
            raise InputError(f"{remote.cluster}: the remote and the primary are the same cluster; "
                             "--context names the remote, --primary-context the primary")
        return RemoteTarget(remote.cluster, remote.context, primary.cluster, primary.context, remote.kubeconfig,
                            primary.kubeconfig, **common)

    if all_remotes:
        if cluster or context or primary_context:
            raise InputError("--all takes every primary and remote from the fleet file; "
                             "do not name a CLUSTER, --context or --primary-context too")
        pairs = [(resolver.cluster(r), resolver.cluster(p.name)) for p in fleet.primaries for r in p.remotes]
        if not pairs:
            raise InputError("--all needs a fleet file whose primaries list `remotes:` "
                             "(--config or MESHPKI_CONFIG; see samples/mesh.yaml)")
        return [target(r, p) for r, p in pairs]
    if not cluster:
        raise InputError("name the remote CLUSTER (or use --all with a fleet file)")
    remote = resolver.cluster(cluster, context)
    if primary_context is None:
        readers = [p for p in fleet.primaries if remote.cluster in p.remotes]
        if len(readers) != 1:
            raise InputError(f"pass --primary-context: the context of the primary whose istiod reads {remote.cluster}"
                             + (" (the fleet file lists several)" if readers else ""))
        return [target(remote, resolver.cluster(readers[0].name))]
    return [target(remote, resolver.context(primary_context))]
