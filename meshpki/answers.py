"""What a Kubernetes API server answered: read within bounds, parsed with suspicion.

A cluster's API server, or whatever sits in front of it (a corporate proxy, a
login page, a broken load balancer), may answer anything: an HTML page,
invalid base64, JSON nested 100,000 levels deep, `data` that is a list, or a
body of gigabytes that never ends. Every answer is read as a stream with a
size cap and a deadline that covers the whole request, then parsed into
exactly the shape meshpki expects or refused with one line (`BadAnswer`).
kube.py adds the context and the server to that line; audit turns it into an
UNKNOWN row for that cluster only, so one bad cluster never blinds the fleet.

Nothing here imports kubernetes or urllib3: the response is anything with
`read1`, `headers`, `close` and `release_conn` (urllib3's HTTPResponse), so
the parsing is fuzzed without a network (tests/test_answers.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import heapq
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshpki.errors import MeshPKIError

MAX_ANSWER_BYTES = 4 << 20
"""The largest answer meshpki reads. Kubernetes caps a Secret's or ConfigMap's
data at 1 MiB (https://kubernetes.io/docs/concepts/configuration/secret/#restriction-data-size);
base64 adds a third and metadata a little more, so 4 MiB is far above any real
answer and far below what would hurt."""

_CHUNK = 64 << 10


class BadAnswer(MeshPKIError):
    """The answer is not what the API would send: `str()` says what it was instead
    (without the context, which kube.py adds)."""


class AnswerTimeout(BadAnswer):
    """The whole request, reading the body included, outlived its deadline."""


# -- reading ----------------------------------------------------------------------------

def read_body(response: Any, deadline: float, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The whole body of `response` (urllib3's, not yet read), or BadAnswer.

    Reads in chunks and stops at `limit` bytes, without waiting for the rest
    (a declared Content-Length over the limit is refused before reading any);
    a watchdog shuts the socket at `deadline` (time.monotonic()), so a body
    that trickles in byte by byte cannot outlive --timeout. The connection
    goes back to the pool only after a complete read the watchdog did not cut.
    """
    declared = _content_length(response)
    if declared is not None and declared > limit:
        response.close()
        raise BadAnswer(f"an answer of {_size(declared)} (Content-Length), more than meshpki reads "
                        f"({_size(limit)}; a Secret holds at most 1 MiB)")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        response.close()
        raise AnswerTimeout("no complete answer before the deadline")
    alarm = _WATCHDOG.call_at(deadline, response.shutdown)  # unblocks a read waiting here (urllib3 >= 2.3)
    chunks: list[bytes] = []
    total = 0
    complete = False
    try:
        while True:
            try:
                chunk = response.read1(_CHUNK)
            except Exception:
                if alarm.fired:
                    raise AnswerTimeout("an answer that did not finish before the deadline") from None
                raise
            if alarm.fired or time.monotonic() >= deadline:
                raise AnswerTimeout("an answer that did not finish before the deadline")
            if not chunk:
                complete = True
                break
            total += len(chunk)
            if total > limit:
                raise BadAnswer(f"an answer larger than {_size(limit)}, more than meshpki reads "
                                "(a Secret holds at most 1 MiB)")
            chunks.append(chunk)
    finally:
        cut = not alarm.cancel()  # once cancelled, the watchdog never touches this response
        if complete and not cut:
            response.release_conn()
        else:
            response.close()  # never drain the rest of a hostile body
    return b"".join(chunks)


class _Alarm:
    """One call the watchdog makes at a deadline unless cancelled first."""

    __slots__ = ("_call", "_lock", "cancelled", "fired")

    def __init__(self, call: Callable[[], object]) -> None:
        self._call = call
        self._lock = threading.Lock()
        self.cancelled = False
        self.fired = False

    def cancel(self) -> bool:
        """True when the call is now sure never to happen; False when it already did (or is running)."""
        with self._lock:
            self.cancelled = not self.fired
            return self.cancelled

    def fire(self) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.fired = True
        self._call()


class _Watchdog:
    """One daemon thread that makes the calls due at their deadlines.

    Every request's body is read under a deadline; a `threading.Timer` per
    request started (and handed the GIL to) a new thread twice per cluster,
    which an audit of 100 clusters in 32 threads paid for in latency. One
    thread waits for the earliest deadline instead; cancelling is a flag.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def call_at(self, deadline: float, call: Callable[[], object]) -> _Alarm:
        """Call `call` at `deadline` (time.monotonic()) unless the alarm is cancelled first."""
        alarm = _Alarm(call)
        with self._cond:
            # drop cancelled alarms at the front, so a long run of quick requests does not pile up
            while self._due and self._due[0][2].cancelled:
                heapq.heappop(self._due)
            heapq.heappush(self._due, (deadline, next(self._order), alarm))
            if self._thread is None or self._pid != os.getpid():  # none yet, or this is a forked child
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="meshpki-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._due and self._due[0][2].cancelled:
                        heapq.heappop(self._due)
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    if wait is not None and wait <= 0:
                        alarm = heapq.heappop(self._due)[2]
                        break
                    self._cond.wait(wait)
            with contextlib.suppress(Exception):  # a socket already gone: nothing left to stop
                alarm.fire()


_WATCHDOG = _Watchdog()


def _content_length(response: Any) -> int | None:
    value = (getattr(response, "headers", None) or {}).get("Content-Length")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


# -- parsing ----------------------------------------------------------------------------

def printable(text: str, limit: int = 200) -> str:
    """`text` on one line, without control characters (a message from a server
    must not move the cursor or recolour a terminal), cut at `limit`."""
    flat = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _looks_like_html(raw: bytes, content_type: str | None) -> bool:
    head = raw[:512].lstrip().lower()
    return "html" in (content_type or "").lower() or head.startswith((b"<!doctype", b"<html"))


def parse_json(raw: bytes, content_type: str | None = None) -> dict[str, Any]:
    """A JSON object from the body of a successful answer, or BadAnswer that
    says what came instead (an HTML page means a proxy or a login page)."""
    if not raw.strip():
        return {}
    if _looks_like_html(raw, content_type):
        kind = printable(content_type or "text/html", 60)
        raise BadAnswer(f"an HTML page ({kind}), not JSON: a proxy or login page answered instead of the API server")
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise BadAnswer("JSON nested too deeply to be a Kubernetes object") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        kind = f" ({printable(content_type, 60)})" if content_type else ""
        raise BadAnswer(f"something that is not JSON{kind}: {printable(str(exc), 80)}") from None
    if not isinstance(doc, dict):
        raise BadAnswer(f"JSON {type(doc).__name__}, not an object")
    return doc


def status_message(raw: bytes | str | None) -> tuple[str, str]:
    """(reason, message) of a Kubernetes Status in an error answer; for anything
    else, a printable excerpt of it as the message."""
    if not raw:
        return "", ""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if _looks_like_html(text.encode("utf-8", errors="replace"), None):
        return "", "an HTML page, not a Kubernetes Status (a proxy answered?)"
    try:
        status = json.loads(text)
    except (ValueError, RecursionError):
        return "", printable(text)
    if not isinstance(status, dict):
        return "", ""
    reason, message = status.get("reason"), status.get("message")
    return (printable(reason, 60) if isinstance(reason, str) else "",
            printable(message) if isinstance(message, str) else "")


def _field(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadAnswer(f"{what} whose {key} is a JSON {type(value).__name__}, not a string")
    return value


def _strings(obj: Mapping[str, Any], key: str, what: str) -> dict[str, str]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadAnswer(f"{what} whose {key} is a JSON {type(value).__name__}, not a map")
    bad = next((k for k, v in value.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise BadAnswer(f"{what} whose {key}[{printable(bad, 60)}] is not a string")
    return dict(value)


def _check_kind(obj: Mapping[str, Any], kind: str) -> None:
    """An answer that names another kind than asked for is not what we asked for."""
    found = obj.get("kind")
    if found is not None and found != kind:
        shown = printable(found, 60) if isinstance(found, str) else f"a JSON {type(found).__name__}"
        raise BadAnswer(f"an object of kind {shown}, not a {kind}")


def _object(obj: Mapping[str, Any], kind: str) -> tuple[Mapping[str, Any], str]:
    """The metadata of an object that must be a `kind`, and how to name it."""
    what = f"a {kind}"
    _check_kind(obj, kind)
    meta = obj.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise BadAnswer(f"{what} whose metadata is a JSON {type(meta).__name__}, not a map")
    return meta, what


def list_items(obj: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    """The objects of a list answer (a SecretList...), each a JSON object."""
    _check_kind(obj, kind)
    items = obj.get("items")
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadAnswer(f"a {kind} whose items are not a list of objects")
    return items


@dataclass(frozen=True)
class LiveSecret:
    """A secret as the API server returned it, data decoded to bytes."""

    name: str
    namespace: str
    type: str
    data: dict[str, bytes]
    labels: dict[str, str]
    annotations: dict[str, str]
    resource_version: str

    def __repr__(self) -> str:
        # The data holds a private key: never let it reach a log or a traceback.
        return (
            f"LiveSecret(name={self.name!r}, namespace={self.namespace!r}, type={self.type!r}, "
            f"data=<{len(self.data)} keys: {', '.join(sorted(self.data))}>, labels={self.labels!r}, "
            f"annotations={self.annotations!r}, resource_version={self.resource_version!r})"
        )


def parse_secret(obj: Mapping[str, Any]) -> LiveSecret:
    """A v1 Secret as JSON, checked field by field and its data base64-decoded
    (strictly: a character outside the alphabet is an error, not skipped)."""
    meta, what = _object(obj, "Secret")
    encoded = _strings(obj, "data", what)
    data: dict[str, bytes] = {}
    for key, value in encoded.items():
        try:
            data[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadAnswer(f"{what} whose data[{printable(key, 60)}] is not valid base64") from None
    return LiveSecret(
        name=_field(meta, "name", what),
        namespace=_field(meta, "namespace", what),
        type=_field(obj, "type", what) or "Opaque",
        data=data,
        labels=_strings(meta, "labels", what),
        annotations=_strings(meta, "annotations", what),
        resource_version=_field(meta, "resourceVersion", what),
    )


@dataclass(frozen=True)
class LiveConfigMap:
    """A ConfigMap as the API server returned it (public data only: text)."""

    name: str
    namespace: str
    data: dict[str, str]
    labels: dict[str, str]
    annotations: dict[str, str]
    resource_version: str


def parse_configmap(obj: Mapping[str, Any]) -> LiveConfigMap:
    """A v1 ConfigMap as JSON, checked field by field like a Secret."""
    meta, what = _object(obj, "ConfigMap")
    return LiveConfigMap(
        name=_field(meta, "name", what),
        namespace=_field(meta, "namespace", what),
        data=_strings(obj, "data", what),
        labels=_strings(meta, "labels", what),
        annotations=_strings(meta, "annotations", what),
        resource_version=_field(meta, "resourceVersion", what),
    )
