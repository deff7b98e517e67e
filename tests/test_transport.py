"""The connection a key or token travels over: push and remote-secret refuse
plain http:// and insecure-skip-tls-verify unless told; audit and verify
read on and warn. The kubernetes client's temp files with client keys do not
outlive a SIGTERM or SIGINT."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from meshpki import ca
from meshpki.keys import KeyType
from meshpki.store import Store
from tests.conftest import one_line_error
from tests.kubeapi import Context, KubeAPIServer

NS = "istio-system"
NAME = "cacerts"


def insecure_kubeconfig(kube_api: KubeAPIServer, path: Path) -> Path:
    """Contexts: good (verified TLS), skip (insecure-skip-tls-verify: true, no CA), plain (an http:// server)."""
    doc = kube_api.kubeconfig_dict({"good": Context("cluster1"), "skip": Context("cluster1"),
                                    "plain": Context("cluster1")}, current="good")
    for entry in doc["clusters"]:
        cluster = entry["cluster"]
        if entry["name"] == "skip-cluster":
            del cluster["certificate-authority-data"]
            cluster["insecure-skip-tls-verify"] = True
        elif entry["name"] == "plain-cluster":
            cluster["server"] = cluster["server"].replace("https://", "http://")
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


@pytest.fixture
def issued(store: Store) -> Store:
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None))
    return store


@pytest.mark.parametrize("context, needle", [("skip", "insecure-skip-tls-verify: true"), ("plain", "plain http://")])
def test_push_refuses_an_untrusted_connection_unless_told(cli, kube_api, tmp_path, issued, context, needle):
    kc = insecure_kubeconfig(kube_api, tmp_path / "kc")
    vc = kube_api.cluster("cluster1")
    refused = cli("push", "cluster1", "--context", context, "--kubeconfig", str(kc))
    assert refused.exit_code == 1
    line = one_line_error(refused)
    assert f"context {context}" in line and needle in line and "--insecure-skip-tls-verify" in line
    assert "refusing to send the CA private key" in line
    assert vc.requests == [] and vc.get_secret(NS, NAME) is None  # not even a read went out


def test_push_with_the_flag_warns_and_writes(cli, kube_api, tmp_path, issued):
    kc = insecure_kubeconfig(kube_api, tmp_path / "kc")
    result = cli("push", "cluster1", "--context", "skip", "--kubeconfig", str(kc), "--insecure-skip-tls-verify")
    assert result.exit_code == 0, result.output
    assert "context skip: warning: the kubeconfig sets insecure-skip-tls-verify: true" in result.stderr
    assert "InsecureRequestWarning" not in result.output  # urllib3's own, once per request, is not shown
    assert kube_api.cluster("cluster1").get_secret(NS, NAME) is not None


def test_a_sound_context_says_nothing(cli, kube_api, tmp_path, issued):
    kc = insecure_kubeconfig(kube_api, tmp_path / "kc")
    result = cli("push", "cluster1", "--context", "good", "--kubeconfig", str(kc))
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output and "insecure" not in result.output


def test_remote_secret_refuses_an_untrusted_remote_or_primary(cli, kube_api, tmp_path):
    kc = insecure_kubeconfig(kube_api, tmp_path / "kc")
    for remote, primary in (("skip", "good"), ("good", "plain")):
        result = cli("remote-secret", "cluster2", "--context", remote, "--primary-context", primary,
                     "--kubeconfig", str(kc))
        assert result.exit_code == 1
        line = one_line_error(result)
        assert "refusing to send a service-account token" in line and "--insecure-skip-tls-verify" in line
    assert kube_api.cluster("cluster1").writes == []


def test_reads_warn(cli, kube_api, tmp_path, issued):
    kc = insecure_kubeconfig(kube_api, tmp_path / "kc")
    kube_api.cluster("cluster1").put_secret(NS, NAME, dict(issued.load_bundle("cluster1").secret_data()))
    audit = cli("audit", "--kubeconfig", str(kc), "--context", "skip", "-o", "json")
    assert audit.exit_code == 1, audit.output  # a warning, the bundle itself is fine
    rows = [r for r in json.loads(audit.stdout)["rows"] if r["cluster"] == "skip" and r["role"] == "bundle"]
    assert rows and rows[0]["codes"] == ["insecure-connection"] and rows[0]["grade"] == "WARNING"
    verify = cli("verify", "--kubeconfig", str(kc), "--context", "skip", "-o", "json")
    codes = [f["code"] for f in json.loads(verify.stdout)["results"][0]["findings"]]
    assert "insecure-connection" in codes and "workload-ok" in codes


# -- client keys on disk ----------------------------------------------------------------------

def client_cert_kubeconfig(kube_api: KubeAPIServer, path: Path) -> Path:
    """A context whose user has client-certificate-data and client-key-data (the
    kubernetes client writes both to temp files) as well as a token."""
    from tests import factories as f

    root = f.make_root(slot=240)
    doc = kube_api.kubeconfig_dict({"certuser": Context("slow")})
    doc["users"][0]["user"].update({"client-certificate-data": base64.b64encode(root.cert_pem).decode(),
                                    "client-key-data": base64.b64encode(root.key_pem).decode()})
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def start_meshpki(tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "meshpki", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_key_file(tmp: Path, proc: subprocess.Popen[bytes], key_pem: bytes) -> Path:
    """The temp file holding the client key, once the client has written it."""
    for _ in range(600):
        for path in tmp.rglob("*"):
            if path.is_file() and path.read_bytes() == key_pem:
                return path
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no client key file appeared in {tmp}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_leaves_no_client_key_behind(kube_api, tmp_path, signum):
    from tests import factories as f

    kc = client_cert_kubeconfig(kube_api, tmp_path / "kc")
    kube_api.cluster("slow").delay = 30  # the request hangs: the signal arrives mid-flight
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = start_meshpki(tmp, "verify", "--kubeconfig", str(kc), "--context", "certuser", "--timeout", "60")
    try:
        key_file = wait_for_key_file(tmp, proc, f.make_root(slot=240).key_pem)
        assert key_file.parent != tmp and oct(key_file.parent.stat().st_mode & 0o777) == "0o700"
        proc.send_signal(signum)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (-signum, 128 + signum, 1), proc.returncode  # the signal's own way out
    assert list(tmp.iterdir()) == [], list(tmp.rglob("*"))


def test_a_normal_exit_leaves_nothing_either(kube_api, tmp_path):
    kc = client_cert_kubeconfig(kube_api, tmp_path / "kc")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = start_meshpki(tmp, "audit", "--kubeconfig", str(kc), "--context", "certuser")
    proc.communicate(timeout=60)
    assert proc.returncode == 2  # the secret is missing: CRITICAL
    assert list(tmp.iterdir()) == []


def test_cleanup_leaves_nothing_while_another_thread_still_writes_into_the_folder():
    """The kubernetes loader may be writing a client key into the folder when a
    signal's cleanup runs: whatever the interleaving, nothing may survive."""
    import os
    import threading

    from meshpki import scratch

    for _ in range(20):
        path = scratch.folder()
        started = threading.Event()

        def write_until_gone(path: str = path, started: threading.Event = started) -> None:
            for i in range(100_000):
                try:
                    with open(os.path.join(path, f"key-{i}.pem"), "w") as f:
                        f.write("secret")
                except OSError:
                    return  # the folder is gone
                started.set()

        writer = threading.Thread(target=write_until_gone)
        writer.start()
        started.wait(timeout=30)
        scratch.cleanup()
        writer.join()
        assert not os.path.exists(path) and not os.path.exists(path + ".removing")
