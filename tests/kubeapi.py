"""A real HTTPS server that speaks enough of the Kubernetes core/v1 API for tests.

Project rule: Kubernetes code is tested through the real kubernetes client,
real kubeconfig loading and a real TLS connection, never by monkeypatching the
client. kmock (aiohttp, plain HTTP, no resourceVersion preconditions) would
need an event-loop thread plus TLS and RBAC on top, so this is a small stdlib
server instead: `ThreadingHTTPServer` + `ssl` in a daemon thread.

One server (one port) hosts many *virtual clusters*, each under its own path
prefix (`https://127.0.0.1:PORT/clusters/NAME`); each has its own namespaces,
secrets, tokens and fault settings, so a test can model a 100-cluster fleet
without 100 ports.

Its TLS CA comes from trustme. It imports no pytest, so bench/ runs it too;
the pytest fixtures (kube_api, kubeconfig, ...) live in tests/conftest.py.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import hashlib
import hmac
import json
import os
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
import yaml

__all__ = [
    "ADMIN_TOKEN",
    "READONLY_TOKEN",
    "STANDARD_CONTEXTS",
    "Call",
    "Context",
    "KubeAPIServer",
    "RawAnswer",
    "VirtualCluster",
    "endless",
]

ADMIN_TOKEN = "admin-token"
READONLY_TOKEN = "readonly-token"

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READ_VERBS = frozenset({"get", "list", "watch"})
_ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})
_DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
RBAC_GROUP = "rbac.authorization.k8s.io"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
# Objects beyond namespaces and secrets, stored as given: enough to set up a
# remote cluster's reader and to prove what its token may do.
# resource -> (API group, namespaced, kind)
_OBJECTS = {
    "serviceaccounts": ("", True, "ServiceAccount"),
    "services": ("", True, "Service"),
    "pods": ("", True, "Pod"),
    "endpoints": ("", True, "Endpoints"),
    "configmaps": ("", True, "ConfigMap"),
    "nodes": ("", False, "Node"),
    "clusterroles": (RBAC_GROUP, False, "ClusterRole"),
    "clusterrolebindings": (RBAC_GROUP, False, "ClusterRoleBinding"),
    "roles": (RBAC_GROUP, True, "Role"),
    "rolebindings": (RBAC_GROUP, True, "RoleBinding"),
}
# What the API server validates secret keys against (validation.IsConfigMapKey).
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


# --------------------------------------------------------------------------
# TLS material


# --------------------------------------------------------------------------
# Kubernetes objects and errors


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _APIError(Exception):
    """An error answer: carries a Kubernetes Status object."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.headers = dict(headers or {})
        self.status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or _REASONS.get(code, "Unknown"),
            "code": code,
        }
        if details:
            self.status["details"] = details


class _Drop(Exception):
    """Close the connection without answering."""


@dataclass
class RawAnswer:
    """A hand-made answer, sent as is: what a broken API server or a proxy in
    front of it can send (HTML, bad JSON, a body that never ends).

    body: bytes, or an iterable of chunks (sent with chunked encoding unless
    `length` is given); `pause` seconds between chunks make a trickle.
    `length` overrides Content-Length (a lie is allowed). `sent` counts the
    body bytes that reached the socket, so a test can tell how much a client
    read before it hung up.
    """

    body: bytes | Iterable[bytes] = b""
    status: int = 200
    content_type: str = "application/json"
    length: int | None = None
    pause: float = 0.0
    sent: int = 0


def endless(chunk: bytes = b"0" * 65536, limit: int | None = None) -> Iterator[bytes]:
    """A body that never ends (or ends after `limit` bytes)."""
    total = 0
    while limit is None or total < limit:
        yield chunk
        total += len(chunk)


class _Raw(Exception):
    def __init__(self, answer: RawAnswer) -> None:
        super().__init__("raw answer")
        self.answer = answer


def _not_found(kind: str, name: str) -> _APIError:
    return _APIError(404, f'{kind} "{name}" not found', "NotFound", {"name": name, "kind": kind})


def _conflict(kind: str, name: str) -> _APIError:
    return _APIError(
        409,
        f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        "Conflict",
        {"name": name, "kind": kind},
    )


def _invalid(kind: str, name: str, field_path: str, message: str) -> _APIError:
    kind_title = {"secrets": "Secret", "namespaces": "Namespace"}.get(kind, kind)
    return _APIError(
        422,
        f'{kind_title} "{name}" is invalid: {field_path}: {message}',
        "Invalid",
        {"name": name, "kind": kind_title, "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field_path}]},
    )


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; for a Secret, strategic merge is the same
    thing (labels, annotations and data are plain maps)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):  # strategic-merge directives: nothing to do for maps
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_SELECTOR_TERM = re.compile(r"^(!?)([^!=]+?)(?:(==|=|!=)(.*))?$")


def _selected(obj: dict[str, Any], query: dict[str, list[str]]) -> bool:
    """Whether the object's labels match ?labelSelector= (equality and existence terms)."""
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in (query.get("labelSelector") or [""])[0].split(","))):
        match = _SELECTOR_TERM.match(term)
        if match is None:
            raise _APIError(400, f"unable to parse requirement: {term!r}", "BadRequest")
        negate, key, op, value = match.groups()
        key = key.strip()
        ok = (key in labels) != bool(negate) if op is None else (labels.get(key) == value.strip()) != (op == "!=")
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------
# Virtual clusters


@dataclass(frozen=True)
class Call:
    """One request as the server saw it (before any injected fault)."""

    method: str
    path: str  # below the cluster prefix, without the query: /api/v1/namespaces/x/secrets/y
    query: dict[str, list[str]]
    content_type: str | None
    user: str | None  # None when the token was unknown or missing
    body: Any  # parsed JSON, or None


@dataclass
class _Failure:
    status: int
    remaining: int
    methods: frozenset[str] | None
    message: str
    skip: int = 0  # matching requests to let through first


@dataclass
class _User:
    name: str
    verbs: frozenset[str]
    resources: frozenset[str] | None = None  # None: every resource
    service_account: tuple[str, str] | None = None  # (namespace, name): RBAC objects decide
    names: frozenset[str] | None = None  # None: any object (else RBAC resourceNames: get/update/patch of these)


class VirtualCluster:
    """State and fault knobs of one virtual cluster; every method is thread-safe."""

    def __init__(self, name: str, server: KubeAPIServer) -> None:
        self.name = name
        self._server = server
        self._lock = threading.RLock()
        self._rv = 0
        self._namespaces: dict[str, dict[str, Any]] = {}
        self._secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, namespace or "", name)
        self._signing_key = os.urandom(32)  # this cluster's token key: another cluster's tokens fail
        self.token_controller = True
        """False: token Secrets stay empty (a stalled kube-controller-manager)."""
        self._unfilled = False  # a token Secret may wait for the controller (keeps its idle passes free)
        self._calls: list[Call] = []
        self._failures: list[_Failure] = []
        self._drops = 0
        self._raw: list[RawAnswer] = []
        self._conflicts = 0
        self.delay: float = 0.0
        """Seconds every request waits before it is answered (for timeouts)."""
        self.drip: float = 0.0
        """Seconds between the pieces of each answer's body: a server that trickles."""
        self.tokens: dict[str, _User] = {
            ADMIN_TOKEN: _User("admin", _ALL_VERBS),
            READONLY_TOKEN: _User("readonly", _READ_VERBS),
        }
        for ns in _DEFAULT_NAMESPACES:
            self._store_namespace(ns)

    # -- addresses -------------------------------------------------------
    @property
    def url(self) -> str:
        """The `server:` a kubeconfig uses for this cluster."""
        return self._server.url(self.name)

    # -- knobs -----------------------------------------------------------
    def add_token(self, token: str, user: str, readonly: bool = False,
                  resources: Iterable[str] | None = None, verbs: Iterable[str] | None = None,
                  names: Iterable[str] | None = None) -> None:
        """Accept another bearer token in this cluster only; `resources` limits
        it to those resource kinds (e.g. {"secrets"}: a namespaced Role), `verbs`
        to those verbs (default: every verb, or get/list/watch if readonly)."""
        with self._lock:
            allowed = frozenset(verbs) if verbs is not None else _READ_VERBS if readonly else _ALL_VERBS
            self.tokens[token] = _User(user, allowed, frozenset(resources) if resources is not None else None,
                                       names=frozenset(names) if names is not None else None)

    def fail_next(
        self, status: int = 500, count: int = 1, methods: Iterable[str] | None = None, message: str | None = None,
        skip: int = 0,
    ) -> None:
        """Answer the next `count` requests (of `methods`, default any) with
        `status`, after letting `skip` of them through."""
        with self._lock:
            self._failures.append(
                _Failure(
                    status,
                    count,
                    frozenset(m.upper() for m in methods) if methods is not None else None,
                    message or f"injected failure ({status})",
                    skip,
                )
            )

    def drop_next(self, count: int = 1) -> None:
        """Close the connection on the next `count` requests without any answer."""
        with self._lock:
            self._drops += count

    def answer_next(self, *answers: RawAnswer) -> None:
        """Send these answers, one per request, to the next requests (after
        authentication: the client is who it says, the answer is broken)."""
        with self._lock:
            self._raw.extend(answers)

    def conflict_next_write(self, count: int = 1) -> None:
        """Let "someone else" write the secret just before the next PUT/PATCH of
        a secret lands, so a client precondition on resourceVersion fails (409)."""
        with self._lock:
            self._conflicts += count

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self._drops = 0
            self._raw.clear()
            self._conflicts = 0
            self.delay = 0.0
            self.drip = 0.0

    # -- request log -----------------------------------------------------
    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request received, faults included."""
        with self._lock:
            return [(c.method, c.path) for c in self._calls]

    @property
    def writes(self) -> list[tuple[str, str]]:
        """The requests that would change state (POST/PUT/PATCH/DELETE)."""
        return [r for r in self.requests if r[0] in WRITE_METHODS]

    def clear_requests(self) -> None:
        with self._lock:
            self._calls.clear()

    # -- direct state access ----------------------------------------------
    @property
    def namespaces(self) -> set[str]:
        with self._lock:
            return set(self._namespaces)

    def add_namespace(self, namespace: str) -> None:
        with self._lock:
            if namespace not in self._namespaces:
                self._store_namespace(namespace)

    def put_secret(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, bytes],
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        type: str = "Opaque",
    ) -> str:
        """Seed (or overwrite) a secret, creating its namespace; returns its resourceVersion."""
        with self._lock:
            self.add_namespace(namespace)
            old = self._secrets.get((namespace, name))
            meta: dict[str, Any] = {"name": name, "namespace": namespace}
            if labels:
                meta["labels"] = dict(labels)
            if annotations:
                meta["annotations"] = dict(annotations)
            obj = {
                "kind": "Secret",
                "apiVersion": "v1",
                "metadata": meta,
                "type": type,
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
            self._stamp(obj, old)
            self._secrets[(namespace, name)] = obj
            return obj["metadata"]["resourceVersion"]

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored secret with `data` decoded to bytes, or None."""
        with self._lock:
            obj = self._secrets.get((namespace, name))
            if obj is None:
                return None
            result = copy.deepcopy(obj)
        result["data"] = {k: base64.b64decode(v) for k, v in (result.get("data") or {}).items()}
        return result

    def secret_object(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored secret exactly as the API would return it (base64 data)."""
        with self._lock:
            obj = self._secrets.get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def touch_secret(self, namespace: str, name: str) -> str:
        """Simulate another writer: bump the secret's resourceVersion."""
        with self._lock:
            obj = self._secrets[(namespace, name)]
            obj["metadata"]["resourceVersion"] = self._next_rv()
            return obj["metadata"]["resourceVersion"]

    def delete_secret(self, namespace: str, name: str) -> None:
        with self._lock:
            self._secrets.pop((namespace, name), None)

    # -- internals ---------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _stamp(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj.setdefault("metadata", {})
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        else:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
        meta["resourceVersion"] = self._next_rv()
        for key in ("generation", "selfLink", "managedFields", "deletionTimestamp"):
            meta.pop(key, None)

    def _store_namespace(self, name: str) -> dict[str, Any]:
        obj = {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        self._stamp(obj, None)
        self._namespaces[name] = obj
        return obj

    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Faults, authentication, authorization, then the API itself."""
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip() or None
        body: Any = None
        body_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body_error = str(exc)
        token = None
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        with self._lock:
            user = (self.tokens.get(token) or self._token_user(token)) if token else None
            self._calls.append(Call(method, path, query, content_type, user.name if user else None, body))
            if self._drops:
                self._drops -= 1
                raise _Drop()
            delay = self.delay
            failure = None
            for f in self._failures:
                if (f.methods is None or method in f.methods) and f.skip:
                    f.skip -= 1
                    break
                if f.methods is None or method in f.methods:
                    failure = f
                    f.remaining -= 1
                    if f.remaining <= 0:
                        self._failures.remove(f)
                    break
        if delay and self._server.sleep(delay):
            raise _Drop()  # the server is stopping
        if failure is not None:
            headers_out = {"Retry-After": "1"} if failure.status == 429 else {}
            raise _APIError(failure.status, failure.message, headers=headers_out)
        if user is None:
            raise _APIError(401, "Unauthorized")
        with self._lock:
            canned = self._raw.pop(0) if self._raw else None
        if canned is not None:
            raise _Raw(canned)
        if body_error is not None:
            raise _APIError(400, f"the body of the request was in an unknown format: {body_error}", "BadRequest")
        with self._lock:
            return self._route(method, path, query, content_type, user, body)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], content_type: str | None, user: _User, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        parts = [p for p in path.split("/") if p]
        routed = self._route_objects(method, parts, query, user, body)
        if routed is not None:
            return routed
        if parts[:2] != ["api", "v1"] or len(parts) < 3 or parts[2] != "namespaces":
            raise _APIError(404, "the server could not find the requested resource", "NotFound")
        rest = parts[3:]
        if len(rest) == 0:  # /api/v1/namespaces
            self._authorize(user, {"POST": "create"}.get(method), "namespaces", None, None, method)
            return self._create_namespace(body)
        ns = rest[0]
        if len(rest) == 1:  # /api/v1/namespaces/{ns}
            self._authorize(user, {"GET": "get"}.get(method), "namespaces", ns, None, method)
            obj = self._namespaces.get(ns)
            if obj is None:
                raise _not_found("namespaces", ns)
            return 200, copy.deepcopy(obj), {}
        if rest[1] != "secrets" or len(rest) > 3:
            raise _APIError(404, "the server could not find the requested resource", "NotFound")
        if len(rest) == 2:  # /api/v1/namespaces/{ns}/secrets
            verb = {"GET": "list", "POST": "create"}.get(method)
            self._authorize(user, verb, "secrets", None, ns, method)
            if method == "GET":
                return 200, self._list("SecretList", (o for (n, _), o in self._secrets.items()
                                                      if n == ns and _selected(o, query))), {}
            return self._create_secret(ns, body, query)
        name = rest[2]
        verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        self._authorize(user, verb, "secrets", name, ns, method)
        current = self._secrets.get((ns, name))
        if current is None:
            raise _not_found("secrets", name)
        if method == "GET":
            return 200, copy.deepcopy(current), {}
        if method == "DELETE":
            del self._secrets[(ns, name)]
            return 200, {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "kind": "secrets", "uid": current["metadata"]["uid"]},
            }, {}
        if self._conflicts:
            self._conflicts -= 1
            current["metadata"]["resourceVersion"] = self._next_rv()
        if method == "PUT":
            return self._replace_secret(ns, name, current, body, query)
        return self._patch_secret(ns, name, current, body, content_type, query)

    def _authorize(
        self, user: _User, verb: str | None, resource: str, name: str | None, namespace: str | None, method: str,
        group: str = "",
    ) -> None:
        if verb is None:
            raise _APIError(405, f"the server does not allow this method on the requested resource ({method})")
        if user.service_account is not None:
            if self._rbac_allows(user.service_account, verb, group, resource, name, namespace):
                return
        elif (verb in user.verbs and (user.resources is None or resource in user.resources)
              and (user.names is None or name in user.names)):
            return
        subject = f'{resource} "{name}"' if name else resource
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        details: dict[str, Any] = {"kind": resource}
        if name:
            details["name"] = name
        raise _APIError(
            403,
            f'{subject} is forbidden: User "{user.name}" cannot {verb} resource "{resource}" in API group "{group}" {scope}',
            "Forbidden",
            details,
        )

    def _list(self, kind: str, items: Iterable[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": kind,
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [copy.deepcopy(o) for o in items],
        }

    @staticmethod
    def _dry_run(query: dict[str, list[str]]) -> bool:
        return "All" in query.get("dryRun", [])

    def _create_namespace(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        name = (body or {}).get("metadata", {}).get("name") if isinstance(body, dict) else None
        if not name:
            raise _invalid("namespaces", "", "metadata.name", "Required value: name or generateName is required")
        if name in self._namespaces:
            raise _APIError(409, f'namespaces "{name}" already exists', "AlreadyExists", {"name": name, "kind": "namespaces"})
        obj = self._store_namespace(name)
        labels = body["metadata"].get("labels") or {}
        obj["metadata"]["labels"].update(labels)
        return 201, copy.deepcopy(obj), {}

    def _validated_secret(self, ns: str, name: str, obj: Any) -> dict[str, Any]:
        """Check and normalise a Secret body the way the API server does."""
        if not isinstance(obj, dict) or obj.get("kind", "Secret") != "Secret":
            raise _APIError(400, "the body is not a v1 Secret", "BadRequest")
        obj = copy.deepcopy(obj)
        obj["kind"], obj["apiVersion"] = "Secret", "v1"
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", ns) != ns:
            raise _APIError(400, "the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = ns
        if meta.get("name") != name:
            raise _APIError(400, f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        obj.setdefault("type", "Opaque")
        if obj["type"] == SA_TOKEN_TYPE and not (meta.get("annotations") or {}).get(SA_NAME_ANNOTATION):
            raise _invalid("secrets", name, f"metadata.annotations[{SA_NAME_ANNOTATION}]", "Required value")
        self._unfilled = self._unfilled or obj["type"] == SA_TOKEN_TYPE
        data = obj.get("data") or {}
        for key, value in (obj.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        for key, value in data.items():
            if not _SECRET_KEY.match(key):
                raise _invalid("secrets", name, f"data[{key}]",
                               "a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
            try:
                base64.b64decode(value, validate=True)
            except (ValueError, TypeError):
                raise _APIError(400, f"illegal base64 data in data[{key}]", "BadRequest") from None
        if obj["type"] == "kubernetes.io/tls":  # the API server's type validation for TLS secrets
            for key in ("tls.crt", "tls.key"):
                if key not in data:
                    raise _invalid("secrets", name, f"data[{key}]", "Required value")
        if data:
            obj["data"] = data
        else:
            obj.pop("data", None)
        for key in ("labels", "annotations"):
            if key in meta and meta[key] is not None and not all(isinstance(v, str) for v in meta[key].values()):
                raise _invalid("secrets", name, f"metadata.{key}", "values must be strings")
        return obj

    def _create_secret(self, ns: str, body: Any, query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        name = body.get("metadata", {}).get("name") if isinstance(body, dict) else None
        if not name:
            raise _invalid("secrets", "", "metadata.name", "Required value: name or generateName is required")
        if ns not in self._namespaces:
            raise _not_found("namespaces", ns)
        if (ns, name) in self._secrets:
            raise _APIError(409, f'secrets "{name}" already exists', "AlreadyExists", {"name": name, "kind": "secrets"})
        obj = self._validated_secret(ns, name, body)
        if obj["metadata"].get("resourceVersion"):
            raise _invalid("secrets", name, "metadata.resourceVersion", "must be empty on create")
        self._stamp(obj, None)
        if not self._dry_run(query):
            self._secrets[(ns, name)] = obj
        return 201, copy.deepcopy(obj), {}

    def _replace_secret(
        self, ns: str, name: str, current: dict[str, Any], body: Any, query: dict[str, list[str]]
    ) -> tuple[int, Any, dict[str, str]]:
        obj = self._validated_secret(ns, name, body)
        rv = obj["metadata"].get("resourceVersion")
        # Stricter than a real API server, which allows an unconditional update
        # of a Secret: here an update must name the version it replaces.
        if not rv:
            raise _invalid("secrets", name, "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")
        if rv != current["metadata"]["resourceVersion"]:
            raise _conflict("secrets", name)
        if obj["type"] != current.get("type", "Opaque"):
            raise _invalid("secrets", name, "type", "Invalid value: field is immutable")
        self._stamp(obj, current)
        if not self._dry_run(query):
            self._secrets[(ns, name)] = obj
        return 200, copy.deepcopy(obj), {}

    def _patch_secret(
        self,
        ns: str,
        name: str,
        current: dict[str, Any],
        body: Any,
        content_type: str | None,
        query: dict[str, list[str]],
    ) -> tuple[int, Any, dict[str, str]]:
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise _APIError(400, "a merge patch must be a JSON object", "BadRequest")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv is not None and rv != current["metadata"]["resourceVersion"]:
                raise _conflict("secrets", name)
            patched = _merge_patch(current, body)
        else:
            raise _APIError(415, f"the body of the request was in an unknown format - accepted media types include: "
                                 f"application/merge-patch+json, "
                                 f"application/strategic-merge-patch+json (got {content_type})")
        obj = self._validated_secret(ns, name, patched)
        if obj["type"] != current.get("type", "Opaque"):
            raise _invalid("secrets", name, "type", "Invalid value: field is immutable")
        self._stamp(obj, current)
        if not self._dry_run(query):
            self._secrets[(ns, name)] = obj
        return 200, copy.deepcopy(obj), {}

    # -- service accounts, tokens, RBAC and other objects -------------------
    def put_object(self, resource: str, obj: dict[str, Any]) -> None:
        """Seed an object of `_OBJECTS` (a Service to list, a ClusterRole...)."""
        with self._lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            group, namespaced, kind = _OBJECTS[resource]
            obj.update(kind=kind, apiVersion=f"{group}/v1" if group else "v1")
            if namespaced:
                self.add_namespace(meta.setdefault("namespace", "default"))
            self._stamp(obj, None)
            self._objects[(resource, meta.get("namespace", "") if namespaced else "", meta["name"])] = obj

    def delete_object(self, resource: str, namespace: str | None, name: str) -> None:
        with self._lock:
            self._objects.pop((resource, namespace or "", name), None)

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((resource, namespace or "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def _route_objects(
        self, method: str, parts: list[str], query: dict[str, list[str]], user: _User, body: Any
    ) -> tuple[int, Any, dict[str, str]] | None:
        """/api/v1/RES[/NAME], /api/v1/namespaces/NS/RES[/NAME[/token]] and
        /apis/rbac.authorization.k8s.io/v1/[namespaces/NS/]RES[/NAME]; None for
        namespaces and secrets, which `_route` serves."""
        if parts[:4] == ["apis", RBAC_GROUP, "v1", "namespaces"] and len(parts) > 5:
            group, ns, rest = RBAC_GROUP, parts[4], parts[5:]
        elif parts[:3] == ["apis", RBAC_GROUP, "v1"]:
            group, ns, rest = RBAC_GROUP, None, parts[3:]
        elif parts[:2] == ["api", "v1"] and len(parts) > 2 and parts[2] != "namespaces":
            group, ns, rest = "", None, parts[2:]
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) > 4 and parts[4] != "secrets":
            group, ns, rest = "", parts[3], parts[4:]
        else:
            return None
        resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
        spec = _OBJECTS.get(resource)
        namespaced = bool(spec and spec[1])
        if (spec is None or spec[0] != group or len(rest) > 3 or (ns is not None and not namespaced)
                or (ns is None and namespaced and name is not None)):
            raise _APIError(404, "the server could not find the requested resource", "NotFound")
        if len(rest) == 3:
            if rest[1:] != [name, "token"] or resource != "serviceaccounts" or ns is None:
                raise _APIError(404, "the server could not find the requested resource", "NotFound")
            self._authorize(user, "create" if method == "POST" else None, "serviceaccounts/token", name, ns, method)
            return self._token_request(ns, str(name), body)
        if name is None:
            verb = {"GET": "list", "POST": "create"}.get(method)
            self._authorize(user, verb, resource, None, ns, method, group)
            if method == "GET":
                items = (o for (r, n, _), o in self._objects.items()
                         if r == resource and (ns is None or n == ns) and _selected(o, query))
                return 200, self._list(f"{spec[2]}List", items), {}
            if user.service_account is not None and group == RBAC_GROUP:
                self._authorize_grant(user, resource, ns, body)
            return self._create_object(resource, ns, body, query)
        verb = {"GET": "get", "DELETE": "delete", "PUT": "update"}.get(method)
        self._authorize(user, verb, resource, name, ns, method, group)
        key = (resource, ns or "", name)
        if key not in self._objects:
            raise _not_found(resource, name)
        if method == "PUT":
            return self._replace_object(key, body, query)
        if method == "DELETE" and not self._dry_run(query):
            return 200, self._objects.pop(key), {}
        return 200, copy.deepcopy(self._objects[key]), {}

    def _replace_object(self, key: tuple[str, str, str], body: Any,
                        query: dict[str, list[str]]) -> tuple[int, Any, dict[str, str]]:
        """PUT: a conditional update (this server requires metadata.resourceVersion, like for secrets)."""
        current = self._objects[key]
        meta = (body.get("metadata") if isinstance(body, dict) else None) or {}
        if meta.get("name") != key[2]:
            raise _APIError(400, f"the name of the object ({meta.get('name')}) does not match the name on the URL")
        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise _conflict(key[0], key[2])
        obj = copy.deepcopy(body)
        obj.update(kind=current["kind"], apiVersion=current["apiVersion"])
        obj["metadata"]["namespace"] = current["metadata"].get("namespace")
        self._stamp(obj, current)
        if not self._dry_run(query):
            self._objects[key] = obj
        return 200, copy.deepcopy(obj), {}

    def _create_object(
        self, resource: str, ns: str | None, body: Any, query: dict[str, list[str]]
    ) -> tuple[int, Any, dict[str, str]]:
        group, _, kind = _OBJECTS[resource]
        name = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
        if not name:
            raise _invalid(resource, "", "metadata.name", "Required value: name or generateName is required")
        if ns is not None and ns not in self._namespaces:
            raise _not_found("namespaces", ns)
        if (resource, ns or "", name) in self._objects:
            raise _APIError(409, f'{resource} "{name}" already exists', "AlreadyExists",
                            {"name": name, "kind": resource})
        obj = copy.deepcopy(body)
        obj.update(kind=kind, apiVersion=f"{group}/v1" if group else "v1")
        if ns is not None:
            obj["metadata"]["namespace"] = ns
        self._stamp(obj, None)
        if not self._dry_run(query):
            self._objects[(resource, ns or "", name)] = obj
        return 201, copy.deepcopy(obj), {}

    def _token_request(self, ns: str, name: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        """A TokenRequest: a token for the service account that expires."""
        if ("serviceaccounts", ns, name) not in self._objects:
            raise _not_found("serviceaccounts", name)
        spec = (body or {}).get("spec") or {} if isinstance(body, dict) else {}
        seconds = spec.get("expirationSeconds", 3600)
        if not isinstance(seconds, int) or seconds < 600:
            raise _invalid("TokenRequest", name, "spec.expirationSeconds", "may not specify a duration less than 10 minutes")
        exp = int(time.time()) + seconds
        return 201, {
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": _now()},
            "spec": {"audiences": spec.get("audiences") or [], "expirationSeconds": seconds},
            "status": {"token": self._mint(ns, name, exp, None),
                       "expirationTimestamp": datetime.datetime.fromtimestamp(exp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")},
        }, {}

    def _mint(self, ns: str, sa: str, exp: int | None, secret: str | None) -> str:
        """A JWT like the API server's (HS256 with this cluster's key instead of RS256); each has
        its own jti, as since Kubernetes 1.30, so two tokens minted in one second differ."""
        claims: dict[str, Any] = {"iss": "kubernetes/serviceaccount", "sub": f"system:serviceaccount:{ns}:{sa}",
                                  "iat": int(time.time()), "jti": str(uuid.uuid4())}
        if exp is not None:
            claims["exp"] = exp
        if secret is not None:  # the legacy token's claim: valid only while that Secret holds it
            claims["kubernetes.io/serviceaccount/secret.name"] = secret
        signing_input = f"{_b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64url(json.dumps(claims).encode())}"
        return f"{signing_input}.{_b64url(hmac.new(self._signing_key, signing_input.encode(), hashlib.sha256).digest())}"

    def _token_user(self, token: str) -> _User | None:
        """The service account a token minted by this cluster stands for, if it is still valid."""
        try:
            head, payload, sig = token.split(".")
            expected = hmac.new(self._signing_key, f"{head}.{payload}".encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(_b64url(expected), sig):
                return None
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            _, _, ns, sa = claims["sub"].split(":")
        except (ValueError, KeyError, TypeError):
            return None
        if "exp" in claims and claims["exp"] <= time.time():
            return None
        if ("serviceaccounts", ns, sa) not in self._objects:
            return None
        secret_name = claims.get("kubernetes.io/serviceaccount/secret.name")
        if secret_name is not None:
            secret = self._secrets.get((ns, secret_name)) or {}
            if (secret.get("data") or {}).get("token") != base64.b64encode(token.encode()).decode():
                return None
        return _User(claims["sub"], frozenset(), None, (ns, sa))

    def _authorize_grant(self, user: _User, resource: str, ns: str | None, body: Any) -> None:
        """Escalation prevention, stricter than a real API server (which also lets a
        user grant what it already holds): a service account needs `escalate` on
        the role it creates, `bind` on the role a binding refers to."""
        if resource in ("roles", "clusterroles"):
            verb, target = "escalate", (resource, ((body or {}).get("metadata") or {}).get("name"))
        else:
            ref = (body or {}).get("roleRef") or {}
            verb, target = "bind", ("clusterroles" if ref.get("kind") == "ClusterRole" else "roles", ref.get("name"))
        self._authorize(user, verb, target[0], target[1], ns, "POST", RBAC_GROUP)

    def _rbac_allows(self, sa: tuple[str, str], verb: str, group: str, resource: str, name: str | None,
                     namespace: str | None = None) -> bool:
        """ClusterRoleBindings, and RoleBindings of the request's namespace, to this
        service account, and the rules of the roles they refer to."""
        def has(values: Any, value: str) -> bool:
            return isinstance(values, list) and ("*" in values or value in values)

        for (res, ns, _), binding in self._objects.items():
            if not (res == "clusterrolebindings" or (res == "rolebindings" and ns == namespace)) or not any(
                    s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) == sa
                    for s in binding.get("subjects") or []):
                continue
            ref = binding.get("roleRef") or {}
            key = ("clusterroles", "", ref.get("name", "")) if ref.get("kind") == "ClusterRole" else (
                "roles", ns, ref.get("name", ""))
            role = self._objects.get(key)
            for rule in (role or {}).get("rules") or []:
                if (has(rule.get("apiGroups"), group) and has(rule.get("resources"), resource)
                        and has(rule.get("verbs"), verb)
                        and (not rule.get("resourceNames") or name in rule["resourceNames"])):
                    return True
        return False

    def _fill_tokens(self) -> None:
        """The token controller: fill each service-account token Secret whose account exists."""
        if not self._unfilled:
            return
        with self._lock:
            if not self.token_controller:
                return
            self._unfilled = False
            for (ns, name), obj in self._secrets.items():
                meta = obj["metadata"]
                sa = (meta.get("annotations") or {}).get(SA_NAME_ANNOTATION)
                if obj.get("type") != SA_TOKEN_TYPE or (obj.get("data") or {}).get("token") or not sa:
                    continue
                account = self._objects.get(("serviceaccounts", ns, sa))
                if account is None:
                    self._unfilled = True  # its account may come later
                    continue
                token = self._mint(ns, sa, None, name)
                obj.setdefault("data", {}).update({k: base64.b64encode(v).decode() for k, v in (
                    ("token", token.encode()), ("ca.crt", self._server.ca_pem), ("namespace", ns.encode()))})
                meta["annotations"]["kubernetes.io/service-account.uid"] = account["metadata"]["uid"]
                meta["resourceVersion"] = self._next_rv()


# --------------------------------------------------------------------------
# The HTTP side


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API server
    server_version = "kubeapi-test"
    timeout = 30  # an idle keep-alive connection is closed after this
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add 40 ms to small answers
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: pytest output stays readable."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        match = re.match(r"^/clusters/([^/]+)(/.*)?$", split.path)
        cluster = self.server.api.find(match.group(1)) if match else None
        try:
            if cluster is None:
                raise _APIError(404, f"no virtual cluster at {split.path}; use /clusters/NAME/...", "NotFound")
            code, payload, headers = cluster._handle(
                self.command, match.group(2) or "/", parse_qs(split.query), self.headers, raw
            )
        except _Raw as exc:
            self._send_raw(exc.answer)
            return
        except _Drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except _APIError as exc:
            code, payload, headers = exc.code, exc.status, exc.headers
        except Exception as exc:  # a bug in this server: say so like an API server would
            err = _APIError(500, f"kubeapi test server error: {type(exc).__name__}: {exc}")
            code, payload, headers = err.code, err.status, err.headers
        data = json.dumps(payload).encode()
        self.send_response(code, HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else None)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        drip = cluster.drip if cluster is not None else 0.0
        if drip:  # the headers and the first byte now, then the rest one piece at a time
            self.end_headers()
            for start in range(0, len(data), max(1, len(data) // 4)):
                if start and self.server.api.sleep(drip):
                    return
                self.wfile.write(data[start:start + max(1, len(data) // 4)])
            return
        # Headers and body in one write: one TLS record, one segment.
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(data)
        self.flush_headers()


    def _send_raw(self, answer: RawAnswer) -> None:
        """Send a RawAnswer; stop quietly when the client hangs up (as it should
        on an endless body) or the server stops."""
        self.close_connection = True
        self.send_response(answer.status, HTTPStatus(answer.status).phrase
                           if answer.status in HTTPStatus._value2member_map_ else None)
        self.send_header("Content-Type", answer.content_type)
        if isinstance(answer.body, bytes):
            chunks: Iterable[bytes] = [answer.body]
            length: int | None = len(answer.body) if answer.length is None else answer.length
        else:
            chunks, length = answer.body, answer.length
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        try:
            self.end_headers()
            for chunk in chunks:
                if not chunk:
                    continue
                frame = b"%x\r\n%s\r\n" % (len(chunk), chunk) if length is None else chunk
                self.wfile.write(frame)
                answer.sent += len(chunk)
                if answer.pause and self.server.api.sleep(answer.pause):
                    return
            if length is None:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client hung up: what a bounded reader does
            return


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 100 clusters connecting at once must not hit SYN drops
    allow_reuse_address = True

    def __init__(self, api: KubeAPIServer, ssl_context: ssl.SSLContext) -> None:
        self.api = api
        self.ssl_context = ssl_context
        self.open_connections: set[ssl.SSLSocket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the worker thread, so a slow or failing client
        (say, one that rejects our CA) never blocks the accept loop."""
        request.settimeout(10)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with self.conn_lock:
            self.open_connections.add(conn)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        except Exception:  # client went away mid-request: nothing to report
            pass
        finally:
            with self.conn_lock:
                self.open_connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent: a client hanging up is normal in fault-injection tests."""

    def close_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.open_connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Context:
    """One kubeconfig context for `KubeAPIServer.write_kubeconfig`."""

    cluster: str  # virtual cluster name
    token: str = ADMIN_TOKEN
    bad_ca: bool = False  # certificate-authority-data is a different CA
    down: bool = False  # server: a closed port on 127.0.0.1 (connection refused)
    namespace: str | None = None


class KubeAPIServer:
    """The HTTPS server hosting all virtual clusters; start() before use."""

    def __init__(self) -> None:
        # trustme's certificates are valid from 2000 to 3000: OpenSSL checks the
        # real clock while a test may have frozen Python's (freezegun).
        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._wrong_ca_pem = trustme.CA().cert_pem.bytes()
        self._clusters: dict[str, VirtualCluster] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._controller: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> KubeAPIServer:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._cert.configure_cert(context)
        self._httpd = _HTTPServer(self, context)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="kubeapi", daemon=True
        )
        self._thread.start()
        self._controller = threading.Thread(target=self._token_controller, name="kubeapi-tokens", daemon=True)
        self._controller.start()
        return self

    def _token_controller(self) -> None:
        """Like kube-controller-manager's token controller: fills token Secrets shortly after creation."""
        while not self._stopping.wait(0.02):
            for vc in self.clusters.values():
                vc._fill_tokens()

    def stop(self) -> None:
        """Stop accepting, wake delayed requests, close keep-alive connections."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        for thread in (self._thread, self._controller):
            if thread is not None:
                thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, or less if the server stops; True when stopping."""
        return self._stopping.wait(seconds)

    # -- addresses and TLS -----------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "KubeAPIServer not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def url(self, cluster: str) -> str:
        return f"{self.base_url}/clusters/{cluster}"

    @property
    def ca_pem(self) -> bytes:
        """The CA that signed the server certificate."""
        return self._ca.cert_pem.bytes()

    @property
    def wrong_ca_pem(self) -> bytes:
        """A CA that did NOT sign the server certificate (TLS failure tests)."""
        return self._wrong_ca_pem

    @staticmethod
    def refused_url() -> str:
        """An https URL on 127.0.0.1 where nothing listens (connection refused).

        The port was free a moment ago; another process could take it, which on
        a test machine is unlikely enough.
        """
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return f"https://127.0.0.1:{port}"

    # -- virtual clusters ----------------------------------------------------
    def cluster(self, name: str) -> VirtualCluster:
        """The virtual cluster `name`, created fresh if it does not exist yet."""
        if not re.match(r"^[A-Za-z0-9._-]+$", name):
            raise ValueError(f"bad virtual cluster name {name!r}")
        with self._lock:
            vc = self._clusters.get(name)
            if vc is None:
                vc = self._clusters[name] = VirtualCluster(name, self)
            return vc

    def find(self, name: str) -> VirtualCluster | None:
        with self._lock:
            return self._clusters.get(name)

    @property
    def clusters(self) -> dict[str, VirtualCluster]:
        with self._lock:
            return dict(self._clusters)

    def reset(self) -> None:
        """Forget every virtual cluster (state, faults and logs)."""
        with self._lock:
            self._clusters.clear()

    # -- kubeconfig ----------------------------------------------------------
    def kubeconfig_dict(
        self,
        contexts: Mapping[str, Context | tuple[str, str]],
        current: str | None = None,
        bad_ca: bool = False,
    ) -> dict[str, Any]:
        """A kubeconfig document; each context gets its own cluster and user entry
        (named after the context) so that several files merge without clashes."""
        doc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [],
            "users": [],
            "contexts": [],
        }
        for ctx_name, spec in contexts.items():
            if not isinstance(spec, Context):
                spec = Context(*spec)
            wrong = bad_ca or spec.bad_ca
            ca = self.wrong_ca_pem if wrong else self.ca_pem
            server = self.refused_url() if spec.down else self.cluster(spec.cluster).url
            doc["clusters"].append({
                "name": f"{ctx_name}-cluster",
                "cluster": {"server": server, "certificate-authority-data": base64.b64encode(ca).decode()},
            })
            doc["users"].append({"name": f"{ctx_name}-user", "user": {"token": spec.token}})
            context: dict[str, Any] = {"cluster": f"{ctx_name}-cluster", "user": f"{ctx_name}-user"}
            if spec.namespace:
                context["namespace"] = spec.namespace
            doc["contexts"].append({"name": ctx_name, "context": context})
        if current is None and contexts:
            current = next(iter(contexts))
        if current is not None:
            doc["current-context"] = current
        return doc

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        contexts: Mapping[str, Context | tuple[str, str]],
        current: str | None = None,
        bad_ca: bool = False,
    ) -> Path:
        """Write a kubeconfig (mode 0600) for `contexts`: name -> Context or
        (virtual cluster, token). current defaults to the first context;
        bad_ca=True gives every context the wrong CA."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig_dict(contexts, current, bad_ca), sort_keys=False))
        path.chmod(0o600)
        return path


STANDARD_CONTEXTS: dict[str, Context] = {
    "cluster1": Context("cluster1"),
    "cluster2": Context("cluster2"),
    "readonly": Context("cluster1", READONLY_TOKEN),
    "badtoken": Context("cluster1", "not-a-valid-token"),
    "badca": Context("cluster1", bad_ca=True),
    "down": Context("cluster1", down=True),
}
