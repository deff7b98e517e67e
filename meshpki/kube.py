"""The one door to Kubernetes: kubeconfig loading, the cacerts secret, errors.

Only this module imports `kubernetes` (and urllib3), and only inside functions:
`meshpki --version` and offline commands never pay for importing it.

Every failure becomes a `KubeError` whose message is one line that starts
with the context name, says what went wrong and how to fix it. The client
runs with a small, bounded retry policy and a per-request timeout, so an
unreachable cluster costs seconds, not minutes, and urllib3's connection
errors never surface as tracebacks. Secret data never appears in a message.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from meshpki import answers, scratch, tlscontexts
from meshpki.answers import LiveSecret
from meshpki.errors import KubeError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

T = TypeVar("T")

IN_CLUSTER_CONTEXT = "in-cluster"
"""The context name reported when the pod's service account is used."""

_DEFAULT_KUBECONFIG = os.path.join("~", ".kube", "config")


# --------------------------------------------------------------------------
# kubeconfig


def _display(path: str) -> str:
    """A path as a user would type it (~ for the home folder)."""
    home = os.path.expanduser("~")
    if home not in ("", "~") and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home):]
    return path


def kubeconfig_paths(kubeconfig: str | os.PathLike[str] | None = None) -> tuple[list[str], bool]:
    """The kubeconfig files to read, like kubectl, and whether they were named explicitly.

    An explicit `kubeconfig` is one file; otherwise KUBECONFIG (paths joined
    with os.pathsep, merged in order) or ~/.kube/config.
    """
    if kubeconfig is not None:
        return [os.path.expanduser(os.fspath(kubeconfig))], True
    env = os.environ.get("KUBECONFIG")
    if env:
        return [os.path.expanduser(p) for p in env.split(os.pathsep) if p], False
    return [os.path.expanduser(_DEFAULT_KUBECONFIG)], False


@dataclass(frozen=True)
class _Kubeconfig:
    """Parsed and merged kubeconfig files: names resolved the way kubectl does
    (the first file that defines a name or sets current-context wins), indexed
    once so that finding one of 1,000 contexts costs a dictionary lookup."""

    paths: tuple[str, ...]
    docs: tuple[dict[str, Any], ...]
    current_context: str | None
    index: Mapping[str, Mapping[str, tuple[str, dict[str, Any]]]]  # item -> name -> (file, entry)

    @classmethod
    def merge(cls, paths: list[str], docs: list[dict[str, Any]]) -> _Kubeconfig:
        index: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {"contexts": {}, "clusters": {}, "users": {}}
        for path, doc in zip(paths, docs, strict=True):
            for item, entries in index.items():
                for entry in doc.get(item) or []:
                    entries.setdefault(entry["name"], (path, entry))
        current = next((d["current-context"] for d in docs if d.get("current-context")), None)
        return cls(tuple(paths), tuple(docs), current, index)

    @property
    def contexts(self) -> tuple[str, ...]:
        return tuple(self.index["contexts"])

    @property
    def where(self) -> str:
        return ", ".join(_display(p) for p in self.paths)

    @property
    def listing(self) -> str:
        """The context names for a message."""
        return ", ".join(self.contexts) or "none"

    def entry(self, item: str, name: Any) -> tuple[str, dict[str, Any]] | None:
        """(file, entry) of the first entry called `name` in `item`."""
        return self.index[item].get(name) if isinstance(name, str) else None


def _yaml_load(text: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster for big fleets
    return yaml.load(text, Loader=loader)


def _read_kubeconfig(path: str) -> dict[str, Any]:
    """The parsed, checked kubeconfig file."""
    import yaml

    where = _display(path)
    fix = "fix the file or point --kubeconfig/KUBECONFIG at a valid one"
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise KubeError(f"cannot read kubeconfig {where}: {exc.strerror or exc}; {fix}") from None
    except UnicodeDecodeError:
        raise KubeError(f"kubeconfig {where} is not UTF-8 text; {fix}") from None
    try:
        doc = _yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise KubeError(f"kubeconfig {where} is not valid YAML ({at}{problem}); {fix}") from None
    if doc is None:
        raise KubeError(f"kubeconfig {where} is empty; {fix}")
    if not isinstance(doc, dict):
        raise KubeError(f"kubeconfig {where} is not a kubeconfig (a YAML mapping with clusters, users, contexts); {fix}")
    for item in ("clusters", "contexts", "users"):
        entries = doc.get(item) or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries):
            raise KubeError(f"kubeconfig {where}: '{item}' must be a list of entries that each have a name; {fix}")
    return doc


class Kubeconfigs:
    """The kubeconfig files of one run: each file parsed once, and each exec
    credential plugin run once per user (kubectl, too, keeps a plugin's
    credential in memory instead of running it for every request).

    One instance per command: `locate.Resolver` hands its own to every
    SecretRef it makes. Without one, `Cluster.connect` reads the files afresh.
    Thread-safe: an audit connects to many clusters at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._merged: dict[tuple[tuple[str, ...], bool], _Kubeconfig | None] = {}
        self._load_locks: dict[tuple[tuple[str, ...], bool], threading.Lock] = {}
        self._credentials: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._credential_locks: dict[tuple[str, str, str], threading.Lock] = {}

    def load(self, kubeconfig: str | os.PathLike[str] | None) -> _Kubeconfig | None:
        """Read and merge the kubeconfig files; None when none exists (and none was
        named explicitly), which lets `connect` fall back to in-cluster config."""
        paths, explicit = kubeconfig_paths(kubeconfig)
        key = (tuple(paths), explicit)
        with self._lock:
            if key in self._merged:
                return self._merged[key]
            lock = self._load_locks.setdefault(key, threading.Lock())
        # One thread parses, the others wait for it: 32 threads connecting at
        # once must not parse a 1,000-context file 32 times (CPU and memory).
        with lock:
            if key in self._merged:
                return self._merged[key]
            existing = [p for p in paths if os.path.exists(p)]
            if explicit and not existing:
                raise KubeError(
                    f"kubeconfig {_display(paths[0])} does not exist; pass --kubeconfig with an existing file "
                    "(or leave it out to use KUBECONFIG or ~/.kube/config)"
                )
            merged = _Kubeconfig.merge(existing, [_read_kubeconfig(p) for p in existing]) if existing else None
            with self._lock:
                self._merged[key] = merged
            return merged

    def config_node(self, config: _Kubeconfig, context: str) -> Any:
        """A kubeconfig for the kubernetes loader holding only `context` and the
        cluster and user it names, deep-copied (the loader may edit what it
        gets). Each entry remembers its file, so a relative certificate path
        resolves against the right folder, as kubernetes' own KubeConfigMerger
        does. An exec plugin's credential comes from this run's cache."""
        from kubernetes.config.kube_config import ConfigNode

        merged: dict[str, Any] = {"current-context": context, "contexts": [], "clusters": [], "users": []}
        found = config.entry("contexts", context)
        if found is not None:
            merged["contexts"].append(ConfigNode(f"{found[0]}/contexts", copy.deepcopy(found[1]), found[0]))
            ctx = found[1].get("context") or {}
            for item, key in (("clusters", "cluster"), ("users", "user")):
                entry = config.entry(item, ctx.get(key)) if isinstance(ctx, dict) else None
                if entry is not None:
                    merged[item].append(ConfigNode(f"{entry[0]}/{item}", copy.deepcopy(entry[1]), entry[0]))
                elif key == "user" and isinstance(ctx, dict) and ctx.get(key):
                    # the loader would go on without credentials and the server answer 401
                    known = ", ".join(sorted(config.index["users"])) or "none"
                    raise KubeError(f'context {context} names user "{ctx[key]}", which kubeconfig {config.where} '
                                    f"does not define (users: {known}); fix the context or add that user")
            if merged["users"] and merged["clusters"]:
                self._use_cached_credential(context, merged["users"][0], merged["clusters"][0])
        return ConfigNode(config.paths[0], merged, config.paths[0])

    def _use_cached_credential(self, context: str, user: Any, cluster: Any) -> None:
        """Replace the user's exec plugin by the credential it gave (once per
        user per run; per cluster too when the plugin asks for cluster info)."""
        spec = user.value.get("user")
        if not isinstance(spec, dict) or not isinstance(spec.get("exec"), dict):
            return
        if any(spec.get(k) for k in ("auth-provider", "token", "tokenFile")):
            return  # the loader prefers these to exec: nothing would run
        per_cluster = bool(spec["exec"].get("provideClusterInfo"))
        key = (user.path, user.value["name"], cluster.value["name"] if per_cluster else "")
        with self._lock:
            lock = self._credential_locks.setdefault(key, threading.Lock())
        with lock:
            status = self._credentials.get(key)
            if status is None:
                status = self._credentials[key] = _run_exec_plugin(context, user, cluster)
        spec = dict(spec)
        del spec["exec"]
        if "token" in status:
            spec["token"] = status["token"]
        else:
            spec["client-certificate-data"] = base64.b64encode(status["clientCertificateData"].encode()).decode()
            spec["client-key-data"] = base64.b64encode(status["clientKeyData"].encode()).decode()
        user.value["user"] = spec


def _run_exec_plugin(context: str, user: Any, cluster: Any) -> dict[str, Any]:
    """The ExecCredential status of the user's exec plugin, run as kubernetes'
    loader runs it; a plugin that fails is one clear error, not a later 401."""
    from kubernetes.config.exec_provider import ExecProvider
    from kubernetes.config.kube_config import ConfigNode

    exec_node = ConfigNode(f"{user.path}/exec", user.value["user"]["exec"], user.path)
    base = os.path.abspath(os.path.dirname(cluster.path)) if cluster.path else ""
    try:
        status = ExecProvider(exec_node, base, cluster).run()
    except Exception as exc:  # the plugin's own failure, in whatever form kubernetes raises it
        msg = " ".join(str(exc).split())
        raise KubeError(f"context {context}: the exec credential plugin of user {user.value['name']} failed ({msg}); "
                        "run it by hand to see why, or fix the user's exec entry in the kubeconfig") from None
    if not isinstance(status, dict) or not (
            isinstance(status.get("token"), str)
            or (isinstance(status.get("clientCertificateData"), str) and isinstance(status.get("clientKeyData"), str))):
        raise KubeError(f"context {context}: the exec credential plugin of user {user.value['name']} gave neither a "
                        "token nor a client certificate and key; fix the plugin or the user's exec entry")
    return status


def _missing_kubeconfig_message(kubeconfig: str | os.PathLike[str] | None) -> str:
    paths, _ = kubeconfig_paths(kubeconfig)
    return (
        f"no kubeconfig found (looked for {', '.join(_display(p) for p in paths)}) and not running in a pod; "
        "pass --kubeconfig or set KUBECONFIG"
    )


def current_context(kubeconfig: str | os.PathLike[str] | None = None, configs: Kubeconfigs | None = None) -> str:
    """The (merged) kubeconfig's current-context, as kubectl would use it."""
    config = (configs or Kubeconfigs()).load(kubeconfig)
    if config is None:
        raise KubeError(_missing_kubeconfig_message(kubeconfig))
    if config.current_context is None:
        raise KubeError(f"kubeconfig {config.where} sets no current-context; name a CLUSTER or a --context")
    return config.current_context


def list_contexts(kubeconfig: str | os.PathLike[str] | None = None, configs: Kubeconfigs | None = None) -> list[str]:
    """The context names of the (merged) kubeconfig, in file order."""
    config = (configs or Kubeconfigs()).load(kubeconfig)
    if config is None:
        raise KubeError(_missing_kubeconfig_message(kubeconfig))
    return list(config.contexts)


# --------------------------------------------------------------------------
# what an operation is, for messages


@dataclass(frozen=True)
class _Op:
    """One API call, described well enough to explain a refusal."""

    verb: str  # RBAC verb: get, list, create, update, patch, delete
    resource: str  # secrets, namespaces, serviceaccounts, serviceaccounts/token, clusterroles, ...
    namespace: str | None
    name: str
    group: str = ""  # API group: "" is core

    @property
    def what(self) -> str:
        if self.resource == "namespaces":
            return f"namespace {self.name}"
        if not self.name:
            return f"{self.resource} in {self.namespace}" if self.namespace else self.resource
        kind = {"secrets": "secret", "configmaps": "configmap", "serviceaccounts": "serviceaccount",
                "clusterroles": "clusterrole", "clusterrolebindings": "clusterrolebinding",
                "serviceaccounts/token": "a token of serviceaccount"}.get(self.resource, self.resource)
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"

    def rbac_rule(self) -> str:
        """The RBAC rule that would allow this call (create cannot be limited by
        resourceNames: https://kubernetes.io/docs/reference/access-authn-authz/rbac/#referring-to-resources)."""
        rule = f'apiGroups ["{self.group}"], resources ["{self.resource}"]'
        if self.resource == "namespaces":
            return (
                f'a ClusterRole with apiGroups [""], resources ["namespaces"], verbs ["{self.verb}"] '
                f"bound to that user (or create namespace {self.name} beforehand)"
            )
        if self.namespace is None:
            # Kubernetes refuses to let a user grant what it does not hold:
            # https://kubernetes.io/docs/reference/access-authn-authz/rbac/#privilege-escalation-prevention-and-bootstrapping
            extra = {"clusterroles": ' (and hold every permission the role grants, or verbs ["escalate"])',
                     "clusterrolebindings": ' (and hold every permission of the bound role, or verbs ["bind"] '
                                            "on clusterroles)"}.get(self.resource, "") if self.verb == "create" else ""
            return f'a ClusterRole with {rule}, verbs ["{self.verb}"] and a ClusterRoleBinding to that user{extra}'
        if self.verb in ("create", "list") or self.resource not in ("secrets", "configmaps"):
            limit = " (create cannot be limited by resourceNames)" if self.verb == "create" else ""
            return f'a Role in {self.namespace} with {rule}, verbs ["{self.verb}"] and a RoleBinding to that user{limit}'
        verbs = ["get", "update", "patch"]
        if self.verb not in verbs:
            verbs.append(self.verb)
        verb_list = ",".join(f'"{v}"' for v in verbs)
        return (
            f'a Role in {self.namespace} with apiGroups [""], resources ["{self.resource}"], resourceNames ["{self.name}"], '
            f"verbs [{verb_list}] and a RoleBinding to that user"
        )


# --------------------------------------------------------------------------
# error translation


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """exc and everything it wraps (urllib3 reasons, causes, contexts, args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        for nxt in (getattr(e, "reason", None), e.__cause__, e.__context__, *getattr(e, "args", ())):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _api_error(ctx: str, server: str, op: _Op, status: int, reason_phrase: str, body: str | None) -> KubeError:
    reason, message = answers.status_message(body)
    phrase = reason_phrase or reason or "error"
    said = f": {message}" if message else ""
    if status == 401:
        return KubeError(
            f"context {ctx}: the API server rejected the credentials (401 Unauthorized); refresh the token in the kubeconfig",
            401,
        )
    if status == 403:
        user = re.search(r'User "([^"]*)"', message)
        who = f'user "{user.group(1)}"' if user else "the kubeconfig's user"
        return KubeError(
            f"context {ctx}: {who} may not {op.verb} {op.what} (403 Forbidden{said}); allow it with {op.rbac_rule()}",
            403,
        )
    if status == 409:
        if reason == "AlreadyExists":
            return KubeError(
                f"context {ctx}: {op.what} already exists (409 AlreadyExists), it appeared after meshpki read it; "
                "re-run to plan against the live object",
                409,
            )
        return KubeError(
            f"context {ctx}: {op.what} was changed by someone else while meshpki was writing it (409 Conflict); "
            "re-run to plan against the current version",
            409,
        )
    if status == 404:
        if op.verb == "create" and op.namespace and op.resource != "serviceaccounts/token":
            return KubeError(
                f"context {ctx}: cannot create {op.what} (404 Not Found{said}); create namespace {op.namespace} first",
                404,
            )
        return KubeError(
            f"context {ctx}: {op.what} not found (404 Not Found{said}); it was deleted meanwhile, re-run", 404
        )
    if status == 429:
        return KubeError(
            f"context {ctx}: the API server is throttling requests (429 Too Many Requests{said}); retry in a minute",
            429,
        )
    if status >= 500:
        return KubeError(
            f"context {ctx}: the API server at {server} failed to {op.verb} {op.what} ({status} {phrase}{said}); "
            "retry later or check the API server's health",
            status,
        )
    return KubeError(
        f"context {ctx}: the API server refused to {op.verb} {op.what} ({status} {phrase}{said}); "
        "check the message above, an admission policy may be in the way",
        status,
    )


def _transport_error(ctx: str, server: str, timeout: float, exc: BaseException) -> KubeError:
    """Translate what urllib3/ssl/socket raised before any HTTP answer came."""
    import urllib3.exceptions as u3

    causes = list(_causes(exc))

    def first(*types: type[BaseException]) -> BaseException | None:
        return next((c for c in causes if isinstance(c, types)), None)

    if (verify := first(ssl.SSLCertVerificationError)) is not None:
        detail = getattr(verify, "verify_message", "") or str(verify)
        return KubeError(
            f"context {ctx}: TLS certificate verify failed for {server} ({detail}); "
            "check certificate-authority-data (or certificate-authority) of this cluster in the kubeconfig"
        )
    text = " ".join(str(c) for c in causes)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return KubeError(
            f"context {ctx}: TLS certificate verify failed for {server}; "
            "check certificate-authority-data (or certificate-authority) of this cluster in the kubeconfig"
        )
    if first(ConnectionRefusedError) is not None:
        return KubeError(
            f"context {ctx}: cannot connect to {server}: connection refused; "
            "check that the API server is up and the server address in the kubeconfig"
        )
    if (dns := first(u3.NameResolutionError)) is not None:
        return KubeError(
            f"context {ctx}: cannot resolve the host of {server} ({dns}); check the server address in the kubeconfig"
        )
    # NewConnectionError (any OSError while connecting, never a timeout) subclasses
    # ConnectTimeoutError in urllib3 2: test it before the real timeout.
    if (conn := first(u3.NewConnectionError)) is not None:
        return KubeError(
            f"context {ctx}: cannot connect to {server} ({conn}); "
            "check that the API server is up and the server address in the kubeconfig"
        )
    if first(u3.ConnectTimeoutError) is not None:
        return KubeError(
            f"context {ctx}: connecting to {server} timed out after {timeout:g} s; "
            "check the server address in the kubeconfig and any VPN or firewall in between"
        )
    if first(u3.ReadTimeoutError, TimeoutError) is not None:
        return KubeError(
            f"context {ctx}: the API server at {server} did not answer within {timeout:g} s; "
            "retry, or check the API server's load and the network"
        )
    if first(u3.ProtocolError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
             ssl.SSLEOFError, ssl.SSLZeroReturnError) is not None or "RemoteDisconnected" in text:
        return KubeError(
            f"context {ctx}: the API server at {server} closed the connection without an answer; "
            "retry, and check any proxy or load balancer in front of it"
        )
    if (tls := first(ssl.SSLError, u3.SSLError)) is not None:
        return KubeError(
            f"context {ctx}: TLS handshake with {server} failed ({tls}); "
            "check the server address and TLS settings in the kubeconfig"
        )
    if (conn := first(u3.NewConnectionError, OSError)) is not None:
        return KubeError(
            f"context {ctx}: cannot connect to {server} ({type(conn).__name__}: {conn}); "
            "check that the API server is up and the server address in the kubeconfig"
        )
    return KubeError(f"context {ctx}: request to {server} failed ({type(exc).__name__}: {exc}); retry, or check the kubeconfig")


def _bad_answer(ctx: str, server: str, timeout: float, op: _Op, exc: answers.BadAnswer) -> KubeError:
    """An answer that is not what the Kubernetes API sends (answers.py says what it was)."""
    if isinstance(exc, answers.AnswerTimeout):
        return KubeError(
            f"context {ctx}: the API server at {server} did not answer within {timeout:g} s: its answer to "
            f"{op.verb} {op.what} was still arriving (--timeout covers the whole request); "
            "retry, or check the API server's load and the network"
        )
    return KubeError(
        f"context {ctx}: {server} answered {op.verb} {op.what} with {exc}; "
        "check the server address in the kubeconfig and any proxy or load balancer in front of the API server"
    )


# --------------------------------------------------------------------------
# the cluster


def _q(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def _configmap_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/configmaps/{_q(name)}"


def _secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/secrets/{_q(name)}"


def b64(_key: str, value: bytes) -> str:
    """A Secret data value as the API carries it."""
    return base64.b64encode(value).decode("ascii")


def _metadata(labels: Mapping[str, str | None] | None, annotations: Mapping[str, str | None] | None,
              resource_version: str | None) -> dict[str, Any]:
    """The optional parts of an object's metadata, left out when not given."""
    meta: dict[str, Any] = {}
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    return meta


def secret_manifest(
    namespace: str,
    name: str,
    data: Mapping[str, bytes] | None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    type: str = "Opaque",
    resource_version: str | None = None,
    show: Callable[[str, bytes], str] = b64,
) -> dict[str, Any]:
    """The one builder of Secret objects: what meshpki writes, prints and plans.

    Shaped like `kubectl create secret generic --dry-run=client -o yaml`
    (keys in kubectl's order, data sorted), so the printed manifest applies as
    it is. `show` turns a data value into text: base64 for the API, a
    redaction note for private keys in output."""
    meta = {"name": name, "namespace": namespace, **_metadata(labels, annotations, resource_version)}
    body: dict[str, Any] = {"apiVersion": "v1"}
    if data is not None:
        body["data"] = {k: show(k, v) for k, v in sorted(data.items())}
    body.update(kind="Secret", metadata=meta, type=type)
    return body


_IMPORT_LOCK = threading.Lock()
_imported = False
# kubernetes' loader writes *-data (CA, client cert/key) to temp files cached by
# content, registering a file's name BEFORE writing it: a second thread loading a
# context with the same CA got an empty file (TLS "NO_CERTIFICATE_OR_CRL_FOUND").
# One loader at a time; the loader itself takes a few milliseconds.
_LOADER_LOCK = threading.Lock()


def _import_kubernetes() -> None:
    """Import the kubernetes client once, one thread at a time.

    Its package imports itself in a cycle (kubernetes.config.kube_config ->
    kubernetes.client, whose classes load lazily in a module __getattr__), so
    threads importing it for the first time at once hit Python's import
    deadlock detector (_DeadlockError in kubernetes.client.api_client): a
    fanned-out read of many clusters did, every time (bench/bench_audit.py).
    """
    global _imported
    if _imported:
        return
    with _IMPORT_LOCK:
        if _imported:
            return
        import kubernetes.client
        import kubernetes.client.exceptions
        import kubernetes.config.incluster_config
        import kubernetes.config.kube_config
        import urllib3.exceptions
        import urllib3.util.retry

        # the classes connect and _request use
        for name in ("ApiClient", "Configuration"):
            getattr(kubernetes.client, name)
        # urllib3 warns on every unverified request; meshpki says it itself,
        # once per context (Cluster.transport_risk), with what to do about it.
        import warnings

        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        _imported = True


def require_trusted_transport(context: str | None, kubeconfig: str | os.PathLike[str] | None,
                              allow_insecure: bool, what: str) -> str | None:
    """Before `what` (a CA private key, a token) is sent through a context:
    refuse an http:// server or insecure-skip-tls-verify: true unless
    `allow_insecure` (--insecure-skip-tls-verify); then return the warning to
    show. None when the connection is sound. Makes no request."""
    with Cluster.connect(context, kubeconfig) as conn:
        risk = conn.transport_risk
        name = conn.context
    if risk is None:
        return None
    if not allow_insecure:
        raise KubeError(f"context {name}: {risk}; refusing to send {what} over it: give the cluster an https:// "
                        "server and its certificate-authority-data in the kubeconfig, or pass "
                        "--insecure-skip-tls-verify to accept the risk")
    return f"context {name}: warning: {risk}; sending {what} anyway (--insecure-skip-tls-verify)"


DEFAULT_NAMESPACE = "istio-system"
DEFAULT_SECRET = "cacerts"
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class SecretRef:
    """Where one cluster's cacerts secret lives and how to reach it: what push,
    verify --context and audit all start from. context None: the pod's own
    service account (or the kubeconfig's current context)."""

    cluster: str
    context: str | None
    kubeconfig: str | None = None
    namespace: str = DEFAULT_NAMESPACE
    secret_name: str = DEFAULT_SECRET
    timeout: float = DEFAULT_TIMEOUT
    configs: Kubeconfigs | None = field(default=None, compare=False, repr=False)
    """This run's parsed kubeconfigs (None: read them for this connection)."""

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.secret_name}"

    @property
    def label(self) -> str:
        """The context as reports show it ("in-cluster" for the pod's service account)."""
        return self.context or IN_CLUSTER_CONTEXT

    def connect(self) -> Cluster:
        return Cluster.connect(self.context, self.kubeconfig, self.timeout, self.configs)


class Cluster:
    """One API server reached through one kubeconfig context (or the pod's service account)."""

    def __init__(self, context: str, api_client: ApiClient, timeout: float) -> None:
        """Use `Cluster.connect`; this only wires an already configured client."""
        self.context = context
        self.server: str = api_client.configuration.host
        self.timeout = timeout
        self._client = api_client

    def __repr__(self) -> str:
        return f"Cluster(context={self.context!r}, server={self.server!r})"

    @property
    def transport_risk(self) -> str | None:
        """Why what travels over this connection cannot be trusted (plain
        http://, or insecure-skip-tls-verify: true), or None. A push sends a CA
        private key and remote-secret a token: both refuse such a connection
        unless told; reads carry on with a warning (require_trusted_transport)."""
        if self.server.lower().startswith("http://"):
            return (f"the API server {self.server} is plain http://: anyone on the network path can read and "
                    "change what is sent")
        if not self._client.configuration.verify_ssl:
            return (f"the kubeconfig sets insecure-skip-tls-verify: true, so the API server {self.server} is not "
                    "authenticated: anyone on the network path can pose as it")
        return None

    @classmethod
    def connect(
        cls,
        context: str | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
        configs: Kubeconfigs | None = None,
    ) -> Cluster:
        """Load the kubeconfig like kubectl (no request is made yet).

        kubeconfig None -> KUBECONFIG (merged) else ~/.kube/config; when none
        exists and we run in a pod, the pod's service account. context None ->
        current-context.
        """
        _import_kubernetes()
        from kubernetes.client import ApiClient, Configuration
        from kubernetes.config.config_exception import ConfigException
        from urllib3.util.retry import Retry

        configuration = Configuration()
        configs = configs or Kubeconfigs()
        config = configs.load(kubeconfig)
        if config is None:
            if not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise KubeError(_missing_kubeconfig_message(kubeconfig))
            if context not in (None, IN_CLUSTER_CONTEXT):
                raise KubeError(
                    f'context "{context}" requested but no kubeconfig exists (running in a pod); '
                    "drop --context to use the pod's service account, or pass --kubeconfig"
                )
            from kubernetes.config.incluster_config import load_incluster_config

            name = IN_CLUSTER_CONTEXT
            try:
                load_incluster_config(client_configuration=configuration)
            except ConfigException as exc:
                raise KubeError(
                    f"context {name}: cannot use the pod's service account ({exc}); mount a token or pass --kubeconfig"
                ) from None
        else:
            if context is None:
                if config.current_context is None:
                    raise KubeError(
                        f"kubeconfig {config.where} sets no current-context (contexts: {config.listing}); "
                        "pass --context with one of them"
                    )
                context = config.current_context
            if config.entry("contexts", context) is None:
                what = "current-context" if context == config.current_context else "context"
                raise KubeError(
                    f'{what} "{context}" not found in kubeconfig {config.where} (contexts: {config.listing}); '
                    "pass --context with one of them"
                )
            name = context
            from kubernetes.config.kube_config import KubeConfigLoader

            node = configs.config_node(config, context)  # may run an exec plugin: not under the lock
            try:
                with _LOADER_LOCK:
                    loader = KubeConfigLoader(config_dict=node, active_context=context,
                                              temp_file_path=scratch.folder())  # client keys: private, removed
                    loader.load_and_set(configuration)
                host = str(configuration.host or "")
                if not re.match(r"https?://[^/\s]+", host):
                    raise KubeError(f"context {name}: its cluster in kubeconfig {config.where} has no usable server "
                                    f"URL (server: {host or 'missing'!r}); set it to the API server's https:// address")
                if "expiry" not in vars(loader):
                    # The loader's refresh hook re-applies its whole config (and rescans the
                    # environment for proxies) before every request, for a token that may
                    # expire; a token without an expiry never changes (bench/bench_audit.py).
                    configuration.refresh_api_key_hook = None
            except ConfigException as exc:
                msg = " ".join(str(exc).split())
                raise KubeError(
                    f"context {name}: kubeconfig {config.where} cannot be used ({msg}); fix that entry of the kubeconfig"
                ) from None
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise KubeError(
                    f"context {name}: kubeconfig {config.where} cannot be used ({type(exc).__name__}: {exc}); "
                    "fix that entry of the kubeconfig"
                ) from None
        # One retry for a failed connect only (cheap when refused); never retry a
        # read: a write may have landed, and a read timeout must not double.
        configuration.retries = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, raise_on_status=False)
        client = ApiClient(configuration)
        tlscontexts.share(client)  # clusters trusting the same CA share one TLS context (no less strict)
        return cls(name, client, timeout)

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        """Release pooled connections."""
        self._client.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API -----------------------------------------------------------
    def _call(self, op: _Op, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one API call; every failure leaves as a KubeError.

        `--timeout` is one deadline for the whole request: urllib3's total
        timeout bounds connecting and waiting for the headers, answers.read_body
        bounds reading the body."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if not exc.status:  # the client's own wrapper around an SSL error: no answer came
                raise _transport_error(self.context, self.server, self.timeout, exc) from None
            raise _api_error(self.context, self.server, op, exc.status, exc.reason or "", exc.body) from None
        except answers.BadAnswer as exc:
            raise _bad_answer(self.context, self.server, self.timeout, op, exc) from None
        except (Urllib3Error, OSError) as exc:
            raise _transport_error(self.context, self.server, self.timeout, exc) from None

    def _request(self, op: _Op, method: str, path: str, body: Any = None,
                 content_type: str = "application/json",
                 parse: Callable[[dict[str, Any]], T] | None = None) -> Any:
        """One REST call through the official client's ApiClient (auth, TLS,
        proxies, timeouts), answered as plain JSON, or as `parse` makes it.

        The answer is read within bounds (answers.read_body) and parsed with
        suspicion: whatever a broken server or a proxy sends becomes a
        KubeError naming this context, never a traceback.

        CoreV1Api would do the same for about 1.4 s of extra import time (one
        30,000-line module and its models) on every command that talks to a
        cluster; six fixed endpoints do not need it (bench/bench_audit.py).
        """
        from kubernetes.client.exceptions import ApiException

        def send() -> Any:
            deadline = time.monotonic() + self.timeout
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = content_type
            method_, url, headers_, body_, post = self._client.param_serialize(
                method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"])
            # A number is urllib3's total timeout: connecting and the answer's
            # headers share it; answers.read_body holds the body to the same deadline.
            response = self._client.call_api(method_, url, header_params=headers_, body=body_, post_params=post,
                                             _request_timeout=self.timeout)
            raw = answers.read_body(response.response, deadline)
            if not 200 <= response.status <= 299:
                raise ApiException(status=response.status, reason=response.reason,
                                   body=raw.decode("utf-8", errors="replace"))
            doc = answers.parse_json(raw, response.headers.get("Content-Type"))
            return parse(doc) if parse is not None else doc

        return self._call(op, send)

    def read_secret(self, namespace: str, name: str) -> LiveSecret | None:
        """The secret, or None when it (or its namespace) does not exist."""
        op = _Op("get", "secrets", namespace, name)
        try:
            secret: LiveSecret = self._request(op, "GET", _secret_path(namespace, name), parse=answers.parse_secret)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return secret

    def ensure_namespace(self, namespace: str) -> bool:
        """Create the namespace unless it exists; True when this call created it.

        Creates without reading first: a user allowed to create namespaces but
        not to get them still succeeds, and 409 AlreadyExists means done.
        """
        op = _Op("create", "namespaces", None, namespace)
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        try:
            self._request(op, "POST", "/api/v1/namespaces", body)
        except KubeError as exc:
            if exc.status == 409:
                return False
            if exc.status != 403:
                raise
            # Not allowed to create namespaces: fine if it is already there, and
            # also when we may not even look (a Role limited to istio-system, as in
            # samples/push-rbac.yaml): creating the secret then says 404 if it is not.
            if self._namespace_exists(namespace) is not False:
                return False
            raise
        return True

    def _namespace_exists(self, namespace: str) -> bool | None:
        """True or False, or None when we are not allowed to tell."""
        try:
            self._request(_Op("get", "namespaces", None, namespace), "GET", f"/api/v1/namespaces/{_q(namespace)}")
        except KubeError as exc:
            if exc.status == 403:
                return None
            if exc.status == 404:
                return False
            raise
        return True

    def create_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        type: str = "Opaque",
    ) -> LiveSecret:
        """Create the secret; a KubeError with status 409 when it already exists."""
        body = secret_manifest(namespace, name, data, labels, annotations, type)
        op = _Op("create", "secrets", namespace, name)
        return self._request(op, "POST", f"/api/v1/namespaces/{_q(namespace)}/secrets", body, parse=answers.parse_secret)

    def replace_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        labels: Mapping[str, str] | None,
        annotations: Mapping[str, str] | None,
        resource_version: str,
        type: str = "Opaque",
    ) -> LiveSecret:
        """Replace data, labels and annotations as a whole, only if the secret is
        still at `resource_version` (else a KubeError with status 409): a plan made from an
        older read must not overwrite someone else's newer write."""
        body = secret_manifest(namespace, name, data, labels, annotations, type, resource_version)
        op = _Op("update", "secrets", namespace, name)
        return self._request(op, "PUT", _secret_path(namespace, name), body, parse=answers.parse_secret)

    def patch_secret_metadata(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str | None] | None,
        annotations: Mapping[str, str | None] | None,
        resource_version: str | None,
    ) -> LiveSecret:
        """Merge labels and annotations into the secret (a None value removes a
        key), leaving data untouched; conditional on `resource_version` when given."""
        op = _Op("patch", "secrets", namespace, name)
        meta = _metadata(labels, annotations, resource_version)
        return self._request(op, "PATCH", _secret_path(namespace, name), {"metadata": meta},
                             content_type="application/merge-patch+json", parse=answers.parse_secret)

    # -- the public ConfigMap (certificates and CRL only) ---------------------
    def read_configmap(self, namespace: str, name: str) -> answers.LiveConfigMap | None:
        """The ConfigMap, or None when it (or its namespace) does not exist."""
        op = _Op("get", "configmaps", namespace, name)
        try:
            found: answers.LiveConfigMap = self._request(op, "GET", _configmap_path(namespace, name),
                                                         parse=answers.parse_configmap)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def write_configmap(self, namespace: str, name: str, data: Mapping[str, str], labels: Mapping[str, str],
                        annotations: Mapping[str, str], resource_version: str | None) -> answers.LiveConfigMap:
        """Create the ConfigMap (resource_version None) or replace it only if it
        is still at `resource_version` (else a KubeError with status 409)."""
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels),
                                "annotations": dict(annotations)}
        if resource_version is not None:
            meta["resourceVersion"] = resource_version
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}
        if resource_version is None:
            op = _Op("create", "configmaps", namespace, name)
            return self._request(op, "POST", f"/api/v1/namespaces/{_q(namespace)}/configmaps", body,
                                 parse=answers.parse_configmap)
        op = _Op("update", "configmaps", namespace, name)
        return self._request(op, "PUT", _configmap_path(namespace, name), body, parse=answers.parse_configmap)

    # -- remote clusters: service accounts, RBAC, tokens --------------------
    def read_object(self, op: _Op, path: str) -> dict[str, Any] | None:
        """Any object by its REST path, or None when it does not exist."""
        try:
            return self._request(op, "GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create_object(self, op: _Op, collection: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """POST `body` to a collection path; dry_run: the API server checks
        (authorization, admission) and stores nothing."""
        return self._request(op, "POST", collection + ("?dryRun=All" if dry_run else ""), body)

    def replace_object(self, op: _Op, path: str, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        """PUT `body` (with metadata.resourceVersion: a conditional update)."""
        return self._request(op, "PUT", path + ("?dryRun=All" if dry_run else ""), body)

    def delete_secret(self, namespace: str, name: str) -> bool:
        """Delete the secret; False when it was already gone."""
        op = _Op("delete", "secrets", namespace, name)
        try:
            self._request(op, "DELETE", _secret_path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def list_secrets(self, namespace: str, label_selector: str) -> list[LiveSecret]:
        """The secrets of a namespace that carry the labels (a `labelSelector`)."""
        from urllib.parse import quote

        op = _Op("list", "secrets", namespace, "")
        secrets: list[LiveSecret] = self._request(
            op, "GET", f"/api/v1/namespaces/{_q(namespace)}/secrets?labelSelector={quote(label_selector, safe='')}",
            parse=lambda doc: [answers.parse_secret(item) for item in answers.list_items(doc, "SecretList")])
        return secrets

    def request_token(self, namespace: str, service_account: str, seconds: int) -> str:
        """A TokenRequest: a token for the service account that expires after `seconds`."""
        op = _Op("create", "serviceaccounts/token", namespace, service_account)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds}}
        answer = self._request(op, "POST", f"/api/v1/namespaces/{_q(namespace)}/serviceaccounts/"
                                           f"{_q(service_account)}/token", body)
        status = answer.get("status")
        token = status.get("token") if isinstance(status, dict) else None
        if not isinstance(token, str) or not token:
            raise KubeError(f"context {self.context}: the API server answered the TokenRequest for serviceaccount "
                            f"{namespace}/{service_account} without a token; check the API server's version (1.22+)")
        return token


def op(verb: str, resource: str, namespace: str | None, name: str, group: str = "") -> _Op:
    """Describe an API call for `Cluster.read_object`/`create_object` (messages name the RBAC rule)."""
    return _Op(verb, resource, namespace, name, group)


def _cluster_of(config: _Kubeconfig, context: tuple[str, dict[str, Any]]) -> tuple[
        tuple[str, dict[str, Any]] | None, dict[str, Any]]:
    """The `clusters` entry a context names, and its `cluster` mapping ({} when there is none)."""
    ctx = context[1].get("context") or {}
    cluster = config.entry("clusters", ctx.get("cluster")) if isinstance(ctx, dict) else None
    entry = (cluster[1].get("cluster") if cluster else None) or {}
    return cluster, entry if isinstance(entry, dict) else {}


def context_servers(kubeconfig: str | os.PathLike[str] | None = None,
                    configs: Kubeconfigs | None = None) -> dict[str, str]:
    """Each context of the (merged) kubeconfig and its API server, contexts
    without one left out; {} when there is no kubeconfig."""
    config = (configs or Kubeconfigs()).load(kubeconfig)
    if config is None:
        return {}
    servers: dict[str, str] = {}
    for context, found in config.index["contexts"].items():
        server = _cluster_of(config, found)[1].get("server")
        if isinstance(server, str) and server:
            servers[context] = server
    return servers


@dataclass(frozen=True)
class Endpoint:
    """Where a context's API server is and which CA vouches for it, as the kubeconfig says."""

    context: str
    server: str
    ca_pem: bytes | None  # None: the kubeconfig names no CA (system trust or insecure)


def context_endpoint(context: str, kubeconfig: str | os.PathLike[str] | None = None,
                     configs: Kubeconfigs | None = None) -> Endpoint:
    """The server and CA of a kubeconfig context: what another cluster's istiod
    needs to reach this API server (certificate-authority-data, or the file
    certificate-authority names, relative to its kubeconfig)."""
    config = (configs or Kubeconfigs()).load(kubeconfig)
    if config is None:
        raise KubeError(_missing_kubeconfig_message(kubeconfig))
    found = config.entry("contexts", context)
    if found is None:
        raise KubeError(f'context "{context}" not found in kubeconfig {config.where} '
                        f"(contexts: {config.listing}); pass --context with one of them")
    cluster, entry = _cluster_of(config, found)
    server = entry.get("server")
    if not isinstance(server, str) or not server:
        raise KubeError(f"context {context}: kubeconfig {config.where} gives its cluster no server; "
                        "fix that entry of the kubeconfig")
    ca: bytes | None = None
    if entry.get("certificate-authority-data"):
        try:
            ca = base64.b64decode(str(entry["certificate-authority-data"]), validate=True)
        except ValueError:
            raise KubeError(f"context {context}: certificate-authority-data in kubeconfig {config.where} is not "
                            "base64; fix that entry of the kubeconfig") from None
    elif entry.get("certificate-authority") and cluster is not None:
        path = os.path.join(os.path.dirname(cluster[0]), os.path.expanduser(str(entry["certificate-authority"])))
        try:
            with open(path, "rb") as f:
                ca = f.read()
        except OSError as exc:
            raise KubeError(f"context {context}: cannot read certificate-authority {_display(path)} "
                            f"({exc.strerror or exc}); fix that entry of the kubeconfig") from None
    return Endpoint(context, server, ca)
