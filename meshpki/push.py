"""`meshpki push`: write a store bundle into a cluster as the cacerts secret.

The order is the safety argument: verify the bundle, read what is live,
refuse a push that would split the mesh's trust, write with the
resourceVersion we read (a concurrent writer gets a 409, not a lost update),
then read the secret back and compare byte for byte before saying "done".
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from cryptography import x509

from meshpki import crlcheck, profiles, rotate
from meshpki.bundle import (
    CA_CRL,
    CA_KEY,
    FILES,
    FORM_FILES,
    ISTIO_GENERATED,
    TLS_CRT,
    TLS_FILES,
    TLS_KEY,
    Bundle,
    describe,
    fingerprint,
    named_cluster,
    openssl_serial,
    parse_certs,
)
from meshpki.dates import iso
from meshpki.errors import KubeError, MeshPKIError
from meshpki.findings import first_of
from meshpki.kube import (  # noqa: F401 (DEFAULT_*: cli, demo)
    DEFAULT_NAMESPACE,
    DEFAULT_SECRET,
    Cluster,
    LiveSecret,
    SecretRef,
    b64,
    secret_manifest,
)
from meshpki.store import Store

TLS_SECRET_TYPE = "kubernetes.io/tls"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "meshpki"
ANN_INTERMEDIATE = "meshpki.io/intermediate-sha256"
ANN_NOT_AFTER = "meshpki.io/intermediate-not-after"
ANN_ROOTS = "meshpki.io/root-sha256"

CREATE, UPDATE, UNCHANGED, ADOPT = "create", "update", "unchanged", "adopt"

# What istiod and the proxies need before they take a root change live (docs/istio-compat.md).
ROOT_CHANGE_REMINDER = (
    "root change: istiod takes it live only with ISTIO_MULTIROOT_MESH=true, and proxies only with "
    "PROXY_CONFIG_XDS_AGENT=true; otherwise restart istiod and the workloads after this push"
)
FIRST_PUSH_REMINDER = (
    "first cacerts in this cluster: istiod only reads it after a restart "
    "(kubectl -n {ns} rollout restart deployment/istiod), then restart workloads to get new certificates"
)


class PushError(MeshPKIError):
    """The push was refused or could not be completed."""


@dataclass(frozen=True)
class Overrides:
    """The refusals a user may lift, each with its own flag, so that a push
    never splits the mesh's trust or replaces another cluster's CA by accident."""

    root_change: bool = False  # --allow-root-change: live roots the pushed ones neither contain nor extend
    other_cluster: bool = False  # --replace-other-cluster: the live secret holds another cluster's intermediate
    untrusted_by_peers: bool = False  # --allow-untrusted-by-peers: a new root's intermediate before peers trust it


@dataclass(frozen=True)
class Desired:
    """The secret exactly as meshpki writes it."""

    data: Mapping[str, bytes]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    def manifest(self, namespace: str, name: str, plan: Plan | None = None) -> dict[str, object]:
        """The Secret object, shaped like `kubectl create secret generic --dry-run=client -o yaml`;
        with a plan, its data (live keys kept) and the live type, so kubectl apply succeeds too."""
        data = plan.data if plan is not None else self.data
        return secret_manifest(namespace, name, data, self.labels, self.annotations,
                               plan.secret_type if plan is not None else "Opaque")


@dataclass(frozen=True)
class Plan:
    action: str
    target: SecretRef
    desired: Desired
    live: LiveSecret | None  # what the plan was made from; its resourceVersion guards the write
    changes: tuple[str, ...] = ()
    root_change: str = "none"  # none | first | extends | narrows | overlaps | split | foreign
    warnings: tuple[str, ...] = ()
    carried: Mapping[str, bytes] | None = None  # the data to write: the store's plus live keys kept (carry_over)

    @property
    def data(self) -> Mapping[str, bytes]:
        return self.carried if self.carried is not None else self.desired.data

    @property
    def secret_type(self) -> str:
        """The live type, kept: the API server refuses to change it (422)."""
        return self.live.type if self.live is not None else "Opaque"

    @property
    def resource_version(self) -> str | None:
        return self.live.resource_version if self.live else None

    def labels(self) -> dict[str, str]:
        """Ours on top of what is live: other tools' labels survive an update."""
        return {**(self.live.labels if self.live else {}), **self.desired.labels}

    def annotations(self) -> dict[str, str]:
        return {**(self.live.annotations if self.live else {}), **self.desired.annotations}

    @property
    def writes(self) -> bool:
        return self.action != UNCHANGED


@dataclass(frozen=True)
class PushResult:
    plan: Plan
    written: bool
    namespace_created: bool = False
    stored: Mapping[str, object] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def desired_secret(bundle: Bundle, form: str) -> Desired:
    """Data byte for byte from the store; metadata recording what is inside."""
    data = bundle.secret_data(form)
    cert = parse_certs(bundle.ca_cert or b"", f"{bundle.source}: ca-cert.pem")[0]
    roots = parse_certs(bundle.root_cert or b"", f"{bundle.source}: root-cert.pem")
    return Desired(
        data=data,
        labels={MANAGED_BY_LABEL: MANAGED_BY},
        annotations={
            ANN_INTERMEDIATE: fingerprint(cert),
            ANN_NOT_AFTER: iso(cert.not_valid_after_utc),
            ANN_ROOTS: ",".join(fingerprint(r) for r in roots),
        },
    )


def root_set(data: Mapping[str, bytes]) -> frozenset[bytes] | None:
    """The DER roots a live secret trusts (root-cert.pem, or ca.crt in the tls form); None if unreadable."""
    live = Bundle.from_secret_data(data, "live")
    if live.root_cert is None:
        return None
    try:
        from cryptography.hazmat.primitives.serialization import Encoding

        return frozenset(c.public_bytes(Encoding.DER) for c in parse_certs(live.root_cert, "live root-cert.pem"))
    except MeshPKIError:
        return None


def classify_root_change(live: frozenset[bytes] | None, new: frozenset[bytes]) -> str:
    """How the pushed roots relate to the live ones, as certificate sets (docs/istio-compat.md).

    A planned rotation step (A -> A+B, A+B -> B) extends or narrows; roots that
    share nothing split the mesh: workloads of this cluster would stop
    trusting every other cluster.
    """
    if live is None:
        return "foreign"
    if live == new:
        return "none"
    if new >= live:
        return "extends"
    if new <= live:
        return "narrows"
    if live & new:
        return "overlaps"
    return "split"


def _short_cert(cert: x509.Certificate) -> str:
    return f"serial {openssl_serial(cert.serial_number)} (until {iso(cert.not_valid_after_utc)})"


def _describe_changes(current_data: Mapping[str, bytes] | None, desired: Desired) -> tuple[str, ...]:
    """What an operator wants to see before a write: the intermediate and the roots."""
    new_bundle = Bundle.from_secret_data(desired.data, "new")
    new_cert = parse_certs(new_bundle.ca_cert or b"", "new")[0]
    new_roots = [fingerprint(c) for c in parse_certs(new_bundle.root_cert or b"", "new roots")]
    if current_data is None:
        return (f"intermediate: {_short_cert(new_cert)}", f"roots: {', '.join(r[:16] for r in new_roots)}")
    old = Bundle.from_secret_data(current_data, "live")
    lines = []
    try:
        old_cert = parse_certs(old.ca_cert or b"", "live")[0]
        if fingerprint(old_cert) != fingerprint(new_cert):
            lines.append(f"intermediate: {_short_cert(old_cert)} -> {_short_cert(new_cert)}")
        else:
            lines.append(f"intermediate: unchanged, {_short_cert(new_cert)}")
    except MeshPKIError:
        lines.append(f"intermediate: (unreadable) -> {_short_cert(new_cert)}")
    try:
        old_roots = [fingerprint(c) for c in parse_certs(old.root_cert or b"", "live roots")]
    except MeshPKIError:
        old_roots = []
    added = [r[:16] for r in new_roots if r not in old_roots]
    removed = [r[:16] for r in old_roots if r not in new_roots]
    if added or removed:
        lines.append(f"roots: +{', +'.join(added) if added else ' none'}; -{', -'.join(removed) if removed else ' none'}")
    else:
        lines.append("roots: unchanged")
    return tuple(lines)


def make_plan(target: SecretRef, desired: Desired, live, overrides: Overrides = Overrides(),
              now: dt.datetime | None = None) -> Plan:
    """Decide create / update / unchanged / adopt, and apply the owner and trust
    guards, the secret type rule and what happens to live keys the store does not carry."""
    if live is None:
        return Plan(CREATE, target, desired, None, _describe_changes(None, desired), "first")
    where = f"{target.cluster}: {target.where} in context {target.context}"
    _check_type(where, live, desired)
    replaced = _other_owner(where, target, live, desired, overrides.other_cluster)
    new_roots = root_set(desired.data)
    assert new_roots is not None
    change = classify_root_change(root_set(live.data), new_roots)
    if change in ("split", "foreign", "overlaps") and not overrides.root_change:
        why = {"split": "holds roots that share nothing with the roots being pushed: pushing would split the "
                        "mesh's trust (cross-cluster mTLS fails with UNKNOWN_CA)",
               "foreign": "holds no readable root-cert.pem: pushing would replace trust meshpki cannot see",
               "overlaps": "holds roots of which the pushed set is neither a subset nor a superset: istiod "
                           "would skip the whole update, intermediate included, until it restarts"}[change]
        raise PushError(f"{where} {why}; use `meshpki rotate-root` for a planned change (A -> A+B -> B), or "
                        "pass --allow-root-change if you mean it")
    warnings = [replaced] if replaced else []
    if change in ("extends", "narrows", "overlaps", "split", "foreign"):
        warnings.append(ROOT_CHANGE_REMINDER)
    if change in ("extends", "narrows") and not _byte_contained(live.data, desired.data):
        warnings.append(BYTE_RULE_REMINDER)
    data, notes = carry_over(where, desired.data, live.data, now or profiles.utcnow())
    warnings += notes
    same_data = dict(live.data) == data
    same_meta = (all(live.labels.get(k) == v for k, v in desired.labels.items())
                 and all(live.annotations.get(k) == v for k, v in desired.annotations.items()))
    if same_data:
        action = UNCHANGED if same_meta else ADOPT
        changes: tuple[str, ...] = () if same_meta else ("metadata: add meshpki's label and annotations (adopting the secret)",)
    else:
        action = UPDATE
        changes = _describe_changes(live.data, desired)
    return Plan(action, target, desired, live, changes, change, tuple(warnings), data)


BYTE_RULE_REMINDER = (
    "istiod up to 1.29 compares root bundles as bytes: the new root-cert.pem neither contains nor is contained "
    "in the live one byte for byte, so those versions skip this update until istiod restarts (meshpki "
    "rotate-root writes byte-exact appends)"
)


def _byte_contained(live: Mapping[str, bytes], new: Mapping[str, bytes]) -> bool:
    old_pem = Bundle.from_secret_data(live, "live").root_cert or b""
    new_pem = Bundle.from_secret_data(new, "new").root_cert or b""
    return new_pem in old_pem or old_pem in new_pem


def intermediate_cluster(data: Mapping[str, bytes]) -> str | None:
    """The cluster whose intermediate a secret holds, by its L= (None: unreadable or unnamed)."""
    bundle = Bundle.from_secret_data(data, "live")
    try:
        return named_cluster(parse_certs(bundle.ca_cert or b"", "ca-cert.pem")[0])
    except (MeshPKIError, IndexError):
        return None


def _other_owner(where: str, target: SecretRef, live, desired: Desired, allowed: bool) -> str | None:
    """A live secret holding another cluster's intermediate is that cluster's CA:
    overwriting it (a wrong --context, two fleet entries on one context) takes
    the other cluster out of its own trust. Refused, or with `allowed` a note."""
    theirs = intermediate_cluster(live.data)
    if theirs is None or theirs in (target.cluster, intermediate_cluster(desired.data)):
        return None
    if allowed:
        return f"replacing {theirs}'s intermediate (L={theirs}) with {target.cluster}'s (--replace-other-cluster)"
    raise PushError(f"{where} holds {theirs}'s intermediate (L={theirs}), not {target.cluster}'s: pushing would "
                    f"replace {theirs}'s CA there; check CLUSTER and --context, or pass --replace-other-cluster "
                    f"if this secret should hold {target.cluster}'s bundle")


def _check_type(where: str, live, desired: Desired) -> None:
    """The type of a Secret is immutable; a kubernetes.io/tls secret must hold tls.crt and tls.key."""
    if live.type == TLS_SECRET_TYPE and TLS_CRT not in desired.data:
        raise PushError(f"{where} is of type {TLS_SECRET_TYPE} (cert-manager's shape), which cannot change and "
                        "needs tls.crt/tls.key: push it with --format tls (the type is kept), or delete the "
                        "secret first to make an Opaque one")


def carry_over(where: str, desired: Mapping[str, bytes], live: Mapping[str, bytes], now: dt.datetime
               ) -> tuple[dict[str, bytes], list[str]]:
    """The data to write, and what it says about live keys the store's bundle lacks.

    A key meshpki does not manage is kept. A live ca-crl.pem is kept when it
    still passes istiod's and the proxies' rules against the new chain, else
    the push is refused (dropping it would silently undo a revocation; keeping
    a CRL that does not fit makes istiod refuse the update). Keys of the other
    form and `istio-generated` are removed, and said, since istiod would
    otherwise read the wrong form or keep its self-signed CA.
    """
    data, notes = dict(desired), []
    files_form = TLS_CRT not in desired
    for key in sorted(set(live) - set(desired)):
        if key == CA_CRL and files_form:
            problem = crlcheck.first_problem(live[key], desired, now)
            if problem is not None:
                raise PushError(f"{where} holds a ca-crl.pem that does not fit the bundle being pushed "
                                f"({problem}); istiod would refuse the update: renew the CRLs (meshpki crl renew) "
                                "so the store's bundle carries ca-crl.pem, or remove it from the secret if that "
                                "revocation is over")
            data[key] = live[key]
            notes.append("ca-crl.pem: the live CRLs are kept (they still fit the new chain)")
        elif key == CA_CRL:
            notes.append("ca-crl.pem removed: istiod ignores CRLs beside tls.crt, so it revoked nothing")
        elif key == ISTIO_GENERATED:
            notes.append(f"{ISTIO_GENERATED} removed: istiod's self-signed CA gives way to the mesh's bundle "
                         "(restart istiod)")
        elif key in FILES or key in TLS_FILES:
            notes.append(f"{key} removed: it belongs to the other form of the bundle, which istiod would read "
                         "instead (tls.crt wins)" if key in TLS_FILES else f"{key} removed: it belongs to the "
                         "files form, which istiod ignores beside tls.crt")
        else:
            data[key] = live[key]
            notes.append(f"{key}: kept as it is (not a key meshpki manages)")
    return data, notes


def plan_push(store: Store, target: SecretRef, overrides: Overrides = Overrides(), conn: Cluster | None = None,
              desired: Desired | None = None, form: str = FORM_FILES,
              trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN,
              peers: PeerTrust | None = None) -> tuple[Plan, Cluster]:
    """Read the live secret and plan; verifies the store bundle unless the
    caller already made `desired` from it. Returns (plan, connection)."""
    desired = desired or desired_secret(verified_bundle(store, target.cluster, trust_domain), form)
    conn = conn or target.connect()
    live = conn.read_secret(target.namespace, target.secret_name)
    plan = make_plan(target, desired, live, overrides)
    return _check_peers_trust(store, plan, peers or PeerTrust(), overrides.untrusted_by_peers), conn


def verified_bundle(store: Store, cluster: str, trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN) -> Bundle:
    """The store's bundle, refused when verify (for the mesh's trust domain) finds an error in it,
    or when it is not the store's own (see _check_store_root)."""
    from meshpki import checks

    bundle = store.load_bundle(cluster)
    report = checks.check_bundle(bundle, trust_domain=trust_domain)
    errors = [f for f in report.findings if f.severity == checks.Severity.ERROR]
    if errors:
        raise PushError(f"{cluster}: the store's bundle fails verification: {first_of(errors)}; "
                        f"run `meshpki verify {cluster}` and fix it before pushing")
    _check_store_root(store, cluster, bundle)
    return bundle


def _check_store_root(store: Store, cluster: str, bundle: Bundle) -> None:
    """A bundle verify accepts on its own may still come from another mesh (a folder
    copied from another store): pushed, its cluster would trust a root no other
    cluster trusts. It must be signed by the store's root, or during a root
    rotation by the new one. A store without a root (a CSR site) has nothing to compare."""
    if not store.has_root():
        return
    roots = [store.root_cert(), *([rotate.new_root_cert(store)[0]] if store.has_rotation() else [])]
    if any(rotate.issued_by(bundle, root) for root in roots):
        return
    names = " or ".join(f"{describe(r)} {fingerprint(r)[:16]}" for r in roots)
    raise PushError(f"{cluster}: the store's bundle is not signed by this store's root ({names}): it was made "
                    f"under another root (copied from another store?); re-issue it here with "
                    f"`meshpki rotate {cluster}`, then push")


class PeerTrust:
    """Whether the other clusters trust a rotation's new root, shared by one run's
    pushes so that `push --all` reads each cluster at most once.

    A cluster's live secret decides when its location is known (the fleet
    file) and can be read safely (never a CA key over an untrusted connection);
    otherwise the store's record of pushes (rotate.record_push) does.
    """

    def __init__(self, peers: Sequence[SecretRef] = ()) -> None:
        self.refs = {p.cluster: p for p in peers}
        self._locks = {name: threading.Lock() for name in self.refs}
        self._seen: dict[str, str | None] = {}

    def lacks(self, cluster: str, new_root: x509.Certificate, recorded: bool) -> str | None:
        """Why `cluster` cannot be shown to trust `new_root`; None when it does."""
        if cluster in self._locks:
            with self._locks[cluster]:
                if cluster not in self._seen:
                    self._seen[cluster] = self._read(self.refs[cluster], new_root)
            if self._seen[cluster] != UNREAD:
                return self._seen[cluster]
        return None if recorded else "no push of a bundle that trusts it is recorded in this store"

    @staticmethod
    def _read(ref: SecretRef, new_root: x509.Certificate) -> str | None:
        try:
            with ref.connect() as conn:
                if conn.transport_risk is not None:
                    return UNREAD
                live = conn.read_secret(ref.namespace, ref.secret_name)
        except KubeError:
            return UNREAD
        if live is None:
            return f"it has no live secret {ref.where} in context {ref.context}"
        if rotate.trusts(Bundle.from_secret_data(live.data, ref.cluster), new_root):
            return None
        return f"its live secret in context {ref.context} does not trust it"


UNREAD = "unread"  # PeerTrust: the live secret could not be read; the store's record decides


def _check_peers_trust(store: Store, plan: Plan, peers: PeerTrust, allowed: bool) -> Plan:
    """During a root rotation, a cluster's first intermediate under the new root
    waits until every other cluster trusts that root: their proxies would reject
    this cluster's workloads (UNKNOWN_CA). The rotate-root runbook's push after
    `begin` gives every cluster that trust; this guard catches a cluster it missed."""
    if not (store.has_rotation() and plan.writes):
        return plan
    new_root = rotate.new_root_cert(store)[0]
    if (not rotate.issued_by(Bundle.from_secret_data(plan.data, "pushed"), new_root)
            or (plan.live is not None and rotate.issued_by(Bundle.from_secret_data(plan.live.data, "live"), new_root))):
        return plan
    recorded = set(rotate.load_state(store).pushed_trust)
    behind = {c: why for c in store.clusters() if c != plan.target.cluster
              and (why := peers.lacks(c, new_root, c in recorded)) is not None}
    if not behind:
        return plan
    cluster, names = plan.target.cluster, ", ".join(behind)
    if allowed:
        return replace(plan, warnings=(*plan.warnings, f"{names} does not trust the new root yet: cross-cluster mTLS "
                                       f"between {cluster}'s workloads and theirs fails until they are pushed"))
    reasons = "; ".join(f"{c}: {why}" for c, why in behind.items())
    commands = "; ".join(f"meshpki push {c} --context {peers.refs[c].context if c in peers.refs else c}" for c in behind)
    # A peer already reissued gets its first intermediate under B by the same push that brings it B's trust:
    # it waits for this cluster to trust B, which this push would give it. Only the override breaks that circle.
    stuck = [c for c in behind if rotate.issued_by(store.load_bundle(c), new_root)]
    if stuck and not (plan.live is not None and rotate.trusts(Bundle.from_secret_data(plan.live.data, "live"), new_root)):
        fix = (f"{', '.join(stuck)} was reissued before it was pushed (rotate-root runbook step 2 skipped), so no "
               "push order avoids a gap: push every cluster with --allow-untrusted-by-peers, and expect cross-cluster "
               "mTLS failures until all are pushed")
    else:
        fix = (f"push them first ({commands}), as rotate-root runbook step 2 does, or pass --allow-untrusted-by-peers "
               "to accept cross-cluster mTLS failures until they are pushed")
    raise PushError(f"{cluster}: its intermediate is signed by the new root, which {names} does not trust yet "
                    f"({reasons}): their proxies would reject {cluster}'s workloads; {fix}")


def apply_plan(conn, plan: Plan) -> PushResult:
    """Write what the plan says, then read back and compare byte for byte."""
    t, d = plan.target, plan.desired
    created_ns = False
    if plan.action == CREATE:
        created_ns = conn.ensure_namespace(t.namespace)
        conn.create_secret(t.namespace, t.secret_name, dict(d.data), dict(d.labels), dict(d.annotations))
    elif plan.action == UPDATE:
        conn.replace_secret(t.namespace, t.secret_name, dict(plan.data), plan.labels(), plan.annotations(),
                            plan.resource_version, type=plan.secret_type)
    elif plan.action == ADOPT:
        conn.patch_secret_metadata(t.namespace, t.secret_name, plan.labels(), plan.annotations(),
                                   plan.resource_version)
    stored = conn.read_secret(t.namespace, t.secret_name)
    if stored is None or dict(stored.data) != dict(plan.data):
        raise PushError(f"{t.cluster}: read-back of {t.namespace}/{t.secret_name} does not match what was "
                        "written; something else is writing this secret: check and push again")
    notes = list(plan.warnings)
    if plan.action == CREATE:
        notes.append(FIRST_PUSH_REMINDER.format(ns=t.namespace))
    return PushResult(plan, plan.writes, created_ns, stored_object(stored), tuple(notes))


PRIVATE_KEY_FILES = (CA_KEY, TLS_KEY)

CLEAR_KEY_WARNING = (
    "{cluster}: the manifest above holds the CA's private key ({key}) in clear (base64 is not encryption): "
    "never commit it as is; seal it first, e.g. `kubeseal -o yaml < cacerts.yaml > cacerts-sealed.yaml` "
    "(sealed-secrets) or `sops --encrypt --encrypted-regex '^(data|stringData)$' cacerts.yaml` (SOPS), "
    "and keep only the sealed file in Git"
)


def redacted(key: str, value: bytes) -> str:
    """A Secret data value as the API shows it (base64), a private key replaced by a
    note: a push's -o yaml|json output ends up in terminals, CI logs and tickets."""
    return f"REDACTED ({len(value)} bytes of private key)" if key in PRIVATE_KEY_FILES else b64(key, value)


def stored_object(secret) -> dict[str, object]:
    """The live secret as an object for -o yaml/json, its private key redacted."""
    return secret_manifest(secret.namespace, secret.name, secret.data, secret.labels, secret.annotations,
                           secret.type, secret.resource_version, show=redacted)


def push(store: Store, target: SecretRef, overrides: Overrides = Overrides(), form: str = FORM_FILES,
         trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN, peers: PeerTrust | None = None) -> PushResult:
    """Plan and apply; a 409 (someone wrote in between) gets one re-read and re-plan.
    Every push, one that wrote nothing too, is recorded for a root rotation's guards."""
    plan, conn = plan_push(store, target, overrides, form=form, trust_domain=trust_domain, peers=peers)
    try:
        result = _write(conn, plan)
    except KubeError as exc:
        if exc.status != 409:
            raise
        plan, conn = plan_push(store, target, overrides, conn, plan.desired, peers=peers)
        try:
            result = _write(conn, plan)
        except KubeError as again:
            if again.status == 409:
                raise PushError(f"{target.cluster}: {target.namespace}/{target.secret_name} keeps changing under "
                                "us (409 Conflict twice); find the other writer and push again") from None
            raise
    rotate.record_push(store, target.cluster, Bundle.from_secret_data(result.plan.data, target.cluster),
                       wrote=result.written)
    return _publish(conn, target, result)


def _write(conn: Cluster, plan: Plan) -> PushResult:
    return apply_plan(conn, plan) if plan.writes else PushResult(plan, False, stored=stored_object(plan.live))


def _publish(conn: Cluster, target: SecretRef, result: PushResult) -> PushResult:
    """Then the public ConfigMap beside the secret (public.py): what a keyless audit reads."""
    from meshpki import public

    plan = result.plan  # plan.data: what the secret holds, live keys kept (a ca-crl.pem) included
    note = public.publish(conn, target.namespace, target.secret_name, plan.data, plan.desired.labels)
    return replace(result, notes=(*result.notes, note)) if note else result


@dataclass(frozen=True)
class DryRun:
    """What a push would write, and the plan against the live secret when the cluster answered."""

    target: SecretRef
    desired: Desired
    plan: Plan | None
    unreachable: KubeError | None = None

    def manifest(self) -> dict[str, object]:
        return self.desired.manifest(self.target.namespace, self.target.secret_name, self.plan)

    @property
    def clear_keys(self) -> list[str]:
        """The private key files the manifest carries in clear."""
        return [k for k in PRIVATE_KEY_FILES if k in self.desired.data]


def dry_run(store: Store, target: SecretRef, overrides: Overrides = Overrides(), form: str = FORM_FILES,
            trust_domain: str = profiles.DEFAULT_TRUST_DOMAIN, offline_ok: bool = False,
            peers: PeerTrust | None = None) -> DryRun:
    """The plan without writing. A cluster that cannot be read raises KubeError,
    unless `offline_ok`: the manifest alone is what GitOps needs."""
    desired = desired_secret(verified_bundle(store, target.cluster, trust_domain), form)
    try:
        plan, _ = plan_push(store, target, overrides, desired=desired, form=form, trust_domain=trust_domain,
                            peers=peers)
    except KubeError as exc:
        if not offline_ok:
            raise
        return DryRun(target, desired, None, exc)
    return DryRun(target, desired, plan)


