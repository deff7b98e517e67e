"""Hostile API answers: whatever a broken API server or a proxy sends becomes
one line naming the context (kube), an UNKNOWN row for that cluster only
(audit) or an error finding for that target only (verify --context); bodies
are read within a size cap and a deadline for the whole request. Served for
real by tests/kubeapi.py; the parsing is fuzzed with hypothesis."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpki import answers
from meshpki.errors import KubeError
from meshpki.kube import Cluster
from tests import factories as f
from tests.kubeapi import Context, KubeAPIServer, RawAnswer, endless

NS = "istio-system"
NAME = "cacerts"
MiB = 1 << 20


def secret_json(data: object, **extra: object) -> bytes:
    return json.dumps({"kind": "Secret", "apiVersion": "v1",
                       "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "7"},
                       "type": "Opaque", "data": data, **extra}).encode()


HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Corporate proxy login</body></html>"
NESTED = b"[" * 100_000 + b"]" * 100_000

# (id, answer, what the one-line error must say)
HOSTILE = [
    ("html-page", RawAnswer(HTML, content_type="text/html; charset=utf-8"), "HTML page"),
    ("html-as-json", RawAnswer(b"\n  <html><body>502 Bad Gateway</body></html>"), "HTML page"),
    ("not-json", RawAnswer(b"hello, this is not json"), "not JSON"),
    ("binary", RawAnswer(bytes(range(256)) * 4), "not JSON"),
    ("deep-nesting", RawAnswer(NESTED), "nested too deeply"),
    ("deep-nesting-in-object", RawAnswer(b'{"data":' + NESTED[:60_000] + NESTED[-60_000:] + b"}"),
     "nested too deeply"),
    ("json-array", RawAnswer(b"[1, 2, 3]"), "JSON list, not an object"),
    ("bad-base64", RawAnswer(secret_json({"ca-cert.pem": "not base64!!"})), "data[ca-cert.pem] is not valid base64"),
    ("data-not-a-map", RawAnswer(secret_json(["ca-cert.pem"])), "data is a JSON list, not a map"),
    ("data-value-not-string", RawAnswer(secret_json({"ca-cert.pem": 42})), "data[ca-cert.pem] is not a string"),
    ("metadata-string", RawAnswer(b'{"kind": "Secret", "metadata": "cacerts", "data": {}}'), "metadata is a JSON str"),
    ("labels-list", RawAnswer(b'{"kind": "Secret", "metadata": {"labels": ["a"]}}'), "labels is a JSON list"),
    ("wrong-kind", RawAnswer(b'{"kind": "ConfigMap", "metadata": {}, "data": {}}'), "kind ConfigMap, not a Secret"),
    ("huge-declared", RawAnswer(endless(limit=200 * MiB), length=200 * MiB), "200.0 MiB (Content-Length)"),
    ("endless-chunked", RawAnswer(endless()), "larger than 4.0 MiB"),
]


@pytest.fixture
def hostile_kubeconfig(kube_api: KubeAPIServer, tmp_path: Path) -> Path:
    return kube_api.write_kubeconfig(tmp_path / "kc", {"hostile": Context("hostile"), "good": Context("good")})


@pytest.mark.parametrize("answer, needle", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_a_hostile_answer_is_one_line_naming_the_context(kube_api, hostile_kubeconfig, answer, needle):
    kube_api.cluster("hostile").answer_next(answer)
    with Cluster.connect("hostile", str(hostile_kubeconfig), timeout=10) as cluster, \
            pytest.raises(KubeError) as excinfo:
        cluster.read_secret(NS, NAME)
    message = str(excinfo.value)
    assert message.startswith("context hostile: ") and "\n" not in message, message
    assert needle in message and "secret istio-system/cacerts" in message, message
    assert len(message) < 500 and "Corporate proxy" not in message
    # a few MiB at most were read of an endless or 200 MB body (plus what socket buffers held)
    assert answer.sent < 32 * MiB


def test_the_deadline_covers_reading_the_body(kube_api, hostile_kubeconfig):
    """Headers at once, then one byte every 50 ms forever: each read is quick,
    so only a deadline for the whole request ends it."""
    trickle = RawAnswer(endless(b" "), pause=0.05)
    kube_api.cluster("hostile").answer_next(trickle)
    with Cluster.connect("hostile", str(hostile_kubeconfig), timeout=1) as cluster, \
            pytest.raises(KubeError) as excinfo:
        cluster.read_secret(NS, NAME)
    assert "did not answer within 1 s: its answer to get secret istio-system/cacerts was still arriving" in str(excinfo.value)
    assert trickle.sent < 200  # 1 s of 20 bytes a second, with room for a loaded machine


@pytest.mark.parametrize("body, needle", [
    (HTML, "an HTML page, not a Kubernetes Status"),
    (NESTED, "[[[["),
    (b"\x1b[31mred\x1b[0m alert\x07", "[31mred [0m alert"),
])
def test_an_error_answer_with_a_hostile_body(kube_api, hostile_kubeconfig, body, needle):
    kube_api.cluster("hostile").answer_next(RawAnswer(body, status=503, content_type="text/html"))
    with Cluster.connect("hostile", str(hostile_kubeconfig), timeout=5) as cluster, \
            pytest.raises(KubeError) as excinfo:
        cluster.read_secret(NS, NAME)
    message = str(excinfo.value)
    assert excinfo.value.status == 503 and needle in message and "\x1b" not in message and "\x07" not in message
    assert len(message) < 600


def test_after_a_cut_answer_the_next_request_works(kube_api, hostile_kubeconfig):
    """A refused body closes its connection instead of returning it to the pool half read."""
    vc = kube_api.cluster("hostile")
    vc.put_secret(NS, NAME, {"ca-cert.pem": b"CERT"})
    vc.answer_next(RawAnswer(endless()))
    with Cluster.connect("hostile", str(hostile_kubeconfig), timeout=10) as cluster:
        with pytest.raises(KubeError):
            cluster.read_secret(NS, NAME)
        secret = cluster.read_secret(NS, NAME)
    assert secret is not None and secret.data == {"ca-cert.pem": b"CERT"}


# -- the fleet: one bad cluster is graded, every other one too -------------------------------

@pytest.fixture
def fleet(kube_api: KubeAPIServer, tmp_path: Path, store_path: Path):
    """A store with clusters c0..c2 pushed to their virtual clusters, and a kubeconfig for them."""
    from tests.test_audit import issued_store

    store = issued_store(store_path, "c0", "c1", "c2")
    for name in ("c0", "c1", "c2"):
        kube_api.cluster(name).put_secret(NS, NAME, dict(store.load_bundle(name).secret_data()))
    return kube_api.write_kubeconfig(tmp_path / "fleet-kc", {n: Context(n) for n in ("c0", "c1", "c2")})


@pytest.mark.parametrize("answer, needle", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_audit_grades_the_bad_cluster_unknown_and_the_rest_as_usual(cli, kube_api, fleet, tmp_path, answer, needle):
    kube_api.cluster("c1").answer_next(answer)
    textfile = tmp_path / "meshpki.prom"
    result = cli("audit", "--kubeconfig", str(fleet), "--context", "c0", "--context", "c1", "--context", "c2",
                 "--textfile", str(textfile), "-o", "json")
    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    status = {c["cluster"]: c["status"] for c in data["clusters"]}
    assert status == {"": "OK", "c0": "OK", "c1": "UNKNOWN", "c2": "OK"}
    [bad] = [r for r in data["rows"] if r["cluster"] == "c1" and r["source"] == "live"]
    assert bad["codes"] == ["unreadable"] and needle in bad["reason"], bad
    assert any(r["cluster"] == "c2" and r["source"] == "live" and r["role"] == "intermediate" for r in data["rows"])
    exposition = textfile.read_text()
    assert 'cluster="c1"' in exposition and 'cluster="c2"' in exposition


def test_verify_context_reports_the_bad_cluster_and_checks_the_others(cli, kube_api, fleet):
    kube_api.cluster("c1").answer_next(RawAnswer(HTML, content_type="text/html"))
    result = cli("verify", "--kubeconfig", str(fleet), "--context", "c0", "--context", "c1", "--context", "c2",
                 "-o", "json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    by_target = {r["target"]: r for r in data["results"]}
    assert set(by_target) == {"live:c0", "live:c1", "live:c2"}
    assert [fd["code"] for fd in by_target["live:c1"]["findings"]] == ["unreadable-secret"]
    assert "HTML page" in by_target["live:c1"]["findings"][0]["message"]
    assert by_target["live:c0"]["ok"] and by_target["live:c2"]["ok"]
    kube_api.cluster("c1").answer_next(RawAnswer(b"[]"))
    text = cli("verify", "--kubeconfig", str(fleet), "--context", "c1", "--context", "c2")
    assert text.exit_code == 1 and "Traceback" not in text.output
    assert "live:c1" in text.output and "live:c2" in text.output and "JSON list" in text.output


# -- fuzzing the parsing ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
secret_like = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["Secret", "ConfigMap"]) | json_values,
    "type": st.sampled_from(["Opaque", "kubernetes.io/tls"]) | json_values,
    "metadata": st.fixed_dictionaries({}, optional={
        "name": st.text(max_size=10) | json_values, "namespace": json_values,
        "labels": st.dictionaries(st.text(max_size=8), st.text(max_size=8) | json_values, max_size=3) | json_values,
        "annotations": json_values, "resourceVersion": json_values}) | json_values,
    "data": st.dictionaries(st.text(max_size=12),
                            st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=20)
                            | json_values, max_size=4) | json_values,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | secret_like.map(lambda d: json.dumps(d).encode()))
def test_fuzz_answer_parsing_raises_only_bad_answer(raw):
    try:  # the same answer as a ConfigMap (what audit --public-only reads)
        found = answers.parse_configmap(answers.parse_json(raw.replace(b'"Secret"', b'"ConfigMap"')))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in found.data.items())
    except answers.BadAnswer as exc:
        assert "\n" not in str(exc)
    try:
        secret = answers.parse_secret(answers.parse_json(raw, "application/json"))
    except answers.BadAnswer as exc:
        assert "\n" not in str(exc)
        return
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in secret.data.items())
    assert all(isinstance(v, str) for v in (*secret.labels.values(), *secret.annotations.values()))
    assert isinstance(secret.name, str) and isinstance(secret.type, str)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_error_bodies_become_printable_text(raw):
    reason, message = answers.status_message(raw)
    for text in (reason, message):
        assert text.isprintable() and len(text) <= 200


def test_a_valid_secret_parses_exactly():
    files = f.bundle_files(f.make_intermediate(root := f.make_root(slot=230), "c", slot=231), root)
    raw = secret_json({k: base64.b64encode(v).decode() for k, v in files.items()})
    secret = answers.parse_secret(answers.parse_json(raw))
    assert secret.data == files and (secret.name, secret.namespace, secret.resource_version) == (NAME, NS, "7")


def test_an_unexpected_error_on_one_cluster_is_that_clusters_unknown():
    """Defence in depth: even a bug met while reading one cluster leaves the rest graded."""
    from meshpki import audit
    from meshpki.kube import SecretRef

    def reader(target: SecretRef) -> audit.Observation:
        if target.cluster == "odd":
            raise TypeError("unexpected shape")
        return audit.Observation(target.cluster, "live", target.context, missing="istio-system/cacerts")

    odd, fine = audit.read_all_live([SecretRef("odd", "odd"), SecretRef("fine", "fine")], reader=reader)
    assert odd.error and "TypeError: unexpected shape" in odd.error and fine.missing



def test_the_watchdog_makes_the_calls_due_and_none_that_were_cancelled():
    """read_body's deadline: one watchdog thread makes each call that comes due;
    a cancelled one never runs, and cancel() says which of the two happened."""
    import threading
    import time

    due, cancelled_calls = threading.Event(), []
    later = answers._WATCHDOG.call_at(time.monotonic() + 0.05, lambda: cancelled_calls.append("ran"))
    assert later.cancel() is True
    now = answers._WATCHDOG.call_at(time.monotonic(), due.set)
    assert due.wait(30)
    assert now.cancel() is False and now.fired
    after_the_cancelled_one = threading.Event()
    answers._WATCHDOG.call_at(time.monotonic() + 0.1, after_the_cancelled_one.set)
    assert after_the_cancelled_one.wait(30) and cancelled_calls == []
