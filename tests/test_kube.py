"""meshpki.kube end to end: the real kubernetes client, real kubeconfig loading
and real TLS against tests/kubeapi.py (never a monkeypatched client)."""

from __future__ import annotations

import base64
import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from meshpki.errors import KubeError
from meshpki.kube import Cluster, Kubeconfigs, LiveSecret, list_contexts
from tests.kubeapi import READONLY_TOKEN, Context, KubeAPIServer

NS = "istio-system"
NAME = "cacerts"
DATA = {"ca-cert.pem": b"CERT", "ca-key.pem": b"SECRET-KEY-BYTES", "root-cert.pem": b"ROOT", "cert-chain.pem": b"CHAIN"}
LABELS = {"app.kubernetes.io/managed-by": "meshpki"}
ANNOTATIONS = {"meshpki.io/fingerprint": "abc"}


@pytest.fixture(autouse=True)
def hermetic_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test may read the developer's own ~/.kube/config or KUBECONFIG."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return home


def kube_error(excinfo: pytest.ExceptionInfo[KubeError], status: int | None, *fragments: str) -> str:
    """Assert the common shape of every KubeError: one line, status kept, no secret bytes."""
    message = str(excinfo.value)
    assert excinfo.value.status == status, message
    assert "\n" not in message, message
    assert "SECRET-KEY-BYTES" not in message and "U0VDUkVU" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def connect(kubeconfig: Path, context: str | None = "cluster1", timeout: float = 5.0) -> Cluster:
    return Cluster.connect(context, kubeconfig=str(kubeconfig), timeout=timeout)


# --------------------------------------------------------------------------
# import hygiene


def test_importing_meshpki_does_not_import_kubernetes() -> None:
    code = (
        "import sys, meshpki, meshpki.errors, meshpki.kube\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------
# kubeconfig loading


def test_connect_uses_current_context_by_default(kubeconfig: Path) -> None:
    with Cluster.connect(kubeconfig=str(kubeconfig)) as cluster:
        assert cluster.context == "cluster1"
        assert cluster.server.endswith("/clusters/cluster1")


def test_connect_by_context_reaches_that_cluster(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    kube_api.cluster("cluster2").put_secret(NS, NAME, DATA)
    assert connect(kubeconfig, "cluster1").read_secret(NS, NAME) is None
    secret = connect(kubeconfig, "cluster2").read_secret(NS, NAME)
    assert secret is not None and secret.data == DATA


def test_default_kubeconfig_is_home_kube_config(kube_api: KubeAPIServer, hermetic_env: Path) -> None:
    kube_api.write_kubeconfig(hermetic_env / ".kube" / "config", {"east": ("cluster1", "admin-token")})
    cluster = Cluster.connect()
    assert cluster.context == "east"
    assert cluster.read_secret(NS, NAME) is None


def test_kubeconfig_env_merges_several_files(
    kube_api: KubeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = kube_api.write_kubeconfig(tmp_path / "a.yaml", {"east": ("cluster1", "admin-token")})
    second = kube_api.write_kubeconfig(tmp_path / "b.yaml", {"west": ("cluster2", "admin-token")})
    missing = tmp_path / "not-there.yaml"  # kubectl skips missing entries; so do we
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(missing), str(second)]))
    kube_api.cluster("cluster2").put_secret(NS, NAME, DATA)

    assert list_contexts() == ["east", "west"]
    assert Cluster.connect().context == "east"  # the first file that sets current-context wins, like kubectl
    west = Cluster.connect("west")
    secret = west.read_secret(NS, NAME)
    assert secret is not None and secret.data == DATA


def test_list_contexts(kubeconfig: Path) -> None:
    assert list_contexts(str(kubeconfig)) == ["cluster1", "cluster2", "readonly", "badtoken", "badca", "down"]


def test_unknown_context_lists_the_known_ones(kubeconfig: Path) -> None:
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig, "foo")
    kube_error(excinfo, None, 'context "foo" not found in kubeconfig', str(kubeconfig),
               "(contexts: cluster1, cluster2, readonly, badtoken, badca, down)", "pass --context")


def test_home_is_shown_as_tilde(kube_api: KubeAPIServer, hermetic_env: Path) -> None:
    kube_api.write_kubeconfig(hermetic_env / ".kube" / "config", {"east": ("cluster1", "admin-token")})
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect("foo")
    kube_error(excinfo, None, 'context "foo" not found in kubeconfig ~/.kube/config (contexts: east)')


def test_missing_kubeconfig_file(tmp_path: Path) -> None:
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect(kubeconfig=str(tmp_path / "nope.yaml"))
    kube_error(excinfo, None, "nope.yaml does not exist", "--kubeconfig")


def test_no_kubeconfig_anywhere_and_not_in_a_pod() -> None:
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect()
    kube_error(excinfo, None, "no kubeconfig found", "~/.kube/config", "KUBECONFIG")


def test_in_pod_without_service_account_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """No kubeconfig + KUBERNETES_SERVICE_HOST = in-cluster config; without the
    mounted token that must still be one clear line."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "1")
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        pytest.skip("running inside a real pod")
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect()
    kube_error(excinfo, None, "context in-cluster", "service account")


def test_broken_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nclusters:\n  - name: a\n   bad: [unclosed\n")
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect(kubeconfig=str(path))
    kube_error(excinfo, None, str(path), "is not valid YAML", "line 4")


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "clusters: 3\n"])
def test_not_a_kubeconfig(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect(kubeconfig=str(path))
    kube_error(excinfo, None, str(path))


def test_context_pointing_at_missing_cluster_entry(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    doc = kube_api.kubeconfig_dict({"east": ("cluster1", "admin-token")})
    doc["clusters"] = []
    path = tmp_path / "config"
    import yaml

    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect(kubeconfig=str(path))
    kube_error(excinfo, None, "context east", "fix that entry")


def test_context_naming_a_missing_user_says_so_instead_of_401(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    doc = kube_api.kubeconfig_dict({"east": ("cluster1", "admin-token")})
    doc["contexts"][0]["context"]["user"] = "ghost"
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect(kubeconfig=str(path))
    kube_error(excinfo, None, 'context east names user "ghost"', "does not define", "fix the context or add that user")
    assert kube_api.cluster("cluster1").calls == []  # refused before any request


@pytest.mark.parametrize("server", [None, "", "not a url", "localhost:6443"])
def test_a_cluster_without_a_usable_server_url_is_one_line(kube_api: KubeAPIServer, tmp_path: Path,
                                                          server: str | None) -> None:
    doc = kube_api.kubeconfig_dict({"east": ("cluster1", "admin-token")})
    if server is None:
        del doc["clusters"][0]["cluster"]["server"]
    else:
        doc["clusters"][0]["cluster"]["server"] = server
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect(kubeconfig=str(path))
    kube_error(excinfo, None, "context east", "has no usable server URL", "https:// address")


# --------------------------------------------------------------------------
# secrets and namespaces


def test_read_missing_and_present_secret(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    cluster = connect(kubeconfig)
    assert cluster.read_secret(NS, NAME) is None  # namespace missing too: still None
    rv = kube_api.cluster("cluster1").put_secret(NS, NAME, DATA, LABELS, ANNOTATIONS)
    secret = cluster.read_secret(NS, NAME)
    assert secret == LiveSecret(NAME, NS, "Opaque", DATA, LABELS, ANNOTATIONS, rv)
    assert "SECRET-KEY-BYTES" not in repr(secret)


def test_ensure_namespace_then_create_secret(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    cluster = connect(kubeconfig)
    assert cluster.ensure_namespace(NS) is True
    assert cluster.ensure_namespace(NS) is False  # 409 AlreadyExists is fine
    created = cluster.create_secret(NS, NAME, DATA, LABELS, ANNOTATIONS)
    assert created.data == DATA and created.labels == LABELS and created.annotations == ANNOTATIONS
    stored = kube_api.cluster("cluster1").get_secret(NS, NAME)
    assert stored is not None
    assert stored["data"] == DATA and stored["type"] == "Opaque"
    assert stored["metadata"]["resourceVersion"] == created.resource_version
    assert stored["metadata"]["uid"] and stored["metadata"]["creationTimestamp"]
    assert kube_api.cluster("cluster2").get_secret(NS, NAME) is None  # clusters are separate


def test_create_secret_twice_is_a_conflict(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    kube_api.cluster("cluster1").put_secret(NS, NAME, DATA)
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig).create_secret(NS, NAME, DATA, LABELS, ANNOTATIONS)
    kube_error(excinfo, 409, "context cluster1", "secret istio-system/cacerts already exists", "re-run")


def test_create_secret_in_missing_namespace(kubeconfig: Path) -> None:
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig).create_secret(NS, NAME, DATA, LABELS, ANNOTATIONS)
    kube_error(excinfo, 404, 'namespaces "istio-system" not found', "create namespace istio-system first")


def test_replace_with_current_resource_version(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    vc = kube_api.cluster("cluster1")
    rv = vc.put_secret(NS, NAME, {"old": b"x"}, {"keep": "no"})
    new_data = dict(DATA, **{"ca-cert.pem": b"NEW"})
    replaced = connect(kubeconfig).replace_secret(NS, NAME, new_data, LABELS, ANNOTATIONS, rv)
    assert int(replaced.resource_version) > int(rv)
    stored = vc.get_secret(NS, NAME)
    assert stored is not None
    assert stored["data"] == new_data  # replaced as a whole: "old" is gone
    assert stored["metadata"]["labels"] == LABELS
    assert vc.writes == [("PUT", f"/api/v1/namespaces/{NS}/secrets/{NAME}")]


def test_replace_with_stale_resource_version(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    vc = kube_api.cluster("cluster1")
    rv = vc.put_secret(NS, NAME, {"old": b"x"})
    vc.touch_secret(NS, NAME)  # someone else wrote after our read
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig).replace_secret(NS, NAME, DATA, LABELS, ANNOTATIONS, rv)
    kube_error(excinfo, 409, "context cluster1", "secret istio-system/cacerts was changed", "409 Conflict")
    stored = vc.get_secret(NS, NAME)
    assert stored is not None and stored["data"] == {"old": b"x"}


def test_conflict_injected_on_next_write(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    vc = kube_api.cluster("cluster1")
    rv = vc.put_secret(NS, NAME, {"old": b"x"})
    vc.conflict_next_write()
    cluster = connect(kubeconfig)
    with pytest.raises(KubeError) as excinfo:
        cluster.replace_secret(NS, NAME, DATA, LABELS, ANNOTATIONS, rv)
    assert excinfo.value.status == 409
    fresh = cluster.read_secret(NS, NAME)
    assert fresh is not None
    cluster.replace_secret(NS, NAME, DATA, LABELS, ANNOTATIONS, fresh.resource_version)  # the caller's retry


def test_patch_metadata_leaves_data_alone(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    vc = kube_api.cluster("cluster1")
    rv = vc.put_secret(NS, NAME, DATA, {"team": "mesh", "drop": "me"}, {"note": "by hand"})
    patched = connect(kubeconfig).patch_secret_metadata(
        NS, NAME, {**LABELS, "drop": None}, ANNOTATIONS, rv
    )
    assert patched.data == DATA
    assert patched.labels == {"team": "mesh", **LABELS}
    assert patched.annotations == {"note": "by hand", **ANNOTATIONS}
    call = vc.calls[-1]
    assert call.method == "PATCH" and call.content_type == "application/merge-patch+json"
    assert call.body == {"metadata": {"labels": {**LABELS, "drop": None}, "annotations": ANNOTATIONS, "resourceVersion": rv}}


def test_patch_metadata_with_stale_resource_version(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    vc = kube_api.cluster("cluster1")
    rv = vc.put_secret(NS, NAME, DATA)
    vc.touch_secret(NS, NAME)
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig).patch_secret_metadata(NS, NAME, LABELS, ANNOTATIONS, rv)
    kube_error(excinfo, 409)
    stored = vc.get_secret(NS, NAME)
    assert stored is not None and "labels" not in stored["metadata"]


# --------------------------------------------------------------------------
# refusals


def test_readonly_may_read(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    kube_api.cluster("cluster1").put_secret(NS, NAME, DATA)
    secret = connect(kubeconfig, "readonly").read_secret(NS, NAME)
    assert secret is not None and secret.data == DATA


def test_readonly_update_is_forbidden_with_rbac_hint(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    vc = kube_api.cluster("cluster1")
    rv = vc.put_secret(NS, NAME, {"old": b"x"})
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig, "readonly").replace_secret(NS, NAME, DATA, LABELS, ANNOTATIONS, rv)
    kube_error(
        excinfo, 403,
        'context readonly: user "readonly" may not update secret istio-system/cacerts (403 Forbidden',
        'a Role in istio-system with apiGroups [""], resources ["secrets"], resourceNames ["cacerts"], '
        'verbs ["get","update","patch"]',
    )
    stored = vc.get_secret(NS, NAME)
    assert stored is not None and stored["data"] == {"old": b"x"}


def test_readonly_create_hint_has_no_resource_names(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    kube_api.cluster("cluster1").add_namespace(NS)
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig, "readonly").create_secret(NS, NAME, DATA, LABELS, ANNOTATIONS)
    message = kube_error(excinfo, 403, "may not create secret istio-system/cacerts", 'verbs ["create"]')
    assert "resourceNames" not in message.split("allow it with")[1].split("(create")[0]


def test_readonly_ensure_namespace(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    readonly = connect(kubeconfig, "readonly")
    with pytest.raises(KubeError) as excinfo:
        readonly.ensure_namespace(NS)
    kube_error(excinfo, 403, "may not create namespace istio-system", 'resources ["namespaces"]', "beforehand")
    kube_api.cluster("cluster1").add_namespace(NS)
    assert readonly.ensure_namespace(NS) is False  # may not create, but it is there


def test_per_cluster_token(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    kube_api.cluster("cluster2").add_token("ci-token", "ci-bot", readonly=True)
    path = kube_api.write_kubeconfig(
        tmp_path / "kc", {"c1": Context("cluster1", "ci-token"), "c2": Context("cluster2", "ci-token")}
    )
    with pytest.raises(KubeError) as excinfo:
        connect(path, "c1").read_secret(NS, NAME)
    kube_error(excinfo, 401)
    with pytest.raises(KubeError) as excinfo:
        connect(path, "c2").ensure_namespace(NS)
    kube_error(excinfo, 403, 'user "ci-bot"')


def test_bad_token_is_401(kubeconfig: Path) -> None:
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig, "badtoken").read_secret(NS, NAME)
    kube_error(
        excinfo, 401,
        "context badtoken: the API server rejected the credentials (401 Unauthorized); refresh the token in the kubeconfig",
    )


def test_a_static_token_is_sent_on_every_request_without_a_refresh_hook(
    kube_api: KubeAPIServer, kubeconfig: Path
) -> None:
    """The loader's refresh hook re-reads its whole config before each request;
    a token that cannot expire drops it, and every request still carries it."""
    cluster = connect(kubeconfig, "cluster2")
    assert cluster._client.configuration.refresh_api_key_hook is None
    assert cluster.read_secret(NS, NAME) is None and cluster.read_secret(NS, NAME) is None
    assert [c.user for c in kube_api.cluster("cluster2").calls][-2:] == ["admin", "admin"]


def test_a_token_with_an_expiry_keeps_its_refresh_hook(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    kube_api.cluster("cluster1").add_token("gcp-token", "gke-user")
    doc = kube_api.kubeconfig_dict({"gke": ("cluster1", "unused")})
    doc["users"] = [{"name": "gke", "user": {"auth-provider": {"name": "gcp", "config": {
        "access-token": "gcp-token", "expiry": "2999-01-01T00:00:00Z"}}}}]
    doc["contexts"][0]["context"]["user"] = "gke"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    cluster = connect(path, "gke")
    assert cluster._client.configuration.refresh_api_key_hook is not None
    assert cluster.read_secret(NS, NAME) is None
    assert kube_api.cluster("cluster1").calls[-1].user == "gke-user"


# --------------------------------------------------------------------------
# transport failures


def test_wrong_ca_fails_tls_verification(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig, "badca").read_secret(NS, NAME)
    kube_error(excinfo, None, "context badca", "certificate verify failed", "certificate-authority-data")
    assert kube_api.cluster("cluster1").requests == []  # no request got through


def test_clusters_trusting_one_ca_share_a_tls_context_and_each_is_still_verified(
        kube_api: KubeAPIServer, tmp_path: Path) -> None:
    """One TLS context per CA bundle (meshpki.tlscontexts): the clusters still
    each verify their own server, chain and host name, as strictly as before."""
    doc = kube_api.kubeconfig_dict({"a": Context("cluster1"), "b": Context("cluster2"), "wrongca": Context("cluster1"),
                                    "wrongname": Context("cluster2")})
    clusters = {c["name"]: c["cluster"] for c in doc["clusters"]}
    clusters["wrongca-cluster"]["certificate-authority-data"] = base64.b64encode(kube_api.wrong_ca_pem).decode()
    clusters["wrongname-cluster"]["tls-server-name"] = "not-this-server.example"  # same CA, other name
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    kube_api.cluster("cluster1").put_secret(NS, NAME, DATA)
    kube_api.cluster("cluster2").put_secret(NS, NAME, DATA)

    def tls_context(conn: Cluster) -> object:
        return conn._client.rest_client.pool_manager.connection_pool_kw.get("ssl_context")

    with connect(path, "a") as a, connect(path, "b") as b, connect(path, "wrongca") as wrong_ca, \
            connect(path, "wrongname") as wrong_name:
        assert tls_context(a) is not None and tls_context(a) is tls_context(b)
        assert tls_context(wrong_ca) is not tls_context(a)
        for conn, problem in ((wrong_ca, "certificate verify failed"), (wrong_name, "not-this-server.example")):
            with pytest.raises(KubeError) as excinfo:
                conn.read_secret(NS, NAME)
            kube_error(excinfo, None, f"context {conn.context}: TLS certificate verify failed", problem)
        assert a.read_secret(NS, NAME) is not None and b.read_secret(NS, NAME) is not None
    assert [m for m, _ in kube_api.cluster("cluster1").requests] == ["GET"]  # only a's request got through
    assert [m for m, _ in kube_api.cluster("cluster2").requests] == ["GET"]


def test_refused_port(kubeconfig: Path) -> None:
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig, "down").read_secret(NS, NAME)
    kube_error(excinfo, None, "context down: cannot connect to https://127.0.0.1:", "connection refused")


def test_slow_server_times_out_once(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    vc = kube_api.cluster("cluster1")
    vc.delay = 2.0
    cluster = connect(kubeconfig, timeout=0.3)
    with pytest.raises(KubeError) as excinfo:
        cluster.read_secret(NS, NAME)
    kube_error(excinfo, None, "context cluster1", "did not answer within 0.3 s")
    assert len(vc.requests) == 1  # a read that timed out is not retried


def test_a_trickling_body_is_held_to_the_request_timeout(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    """Each piece of the body arrives within the timeout, the whole body does
    not: the deadline covers reading the body, not each socket read."""
    vc = kube_api.cluster("cluster1")
    vc.put_secret(NS, NAME, DATA)
    vc.drip = 0.25
    cluster = connect(kubeconfig, timeout=0.4)
    with pytest.raises(KubeError) as excinfo:
        cluster.read_secret(NS, NAME)
    kube_error(excinfo, None, "context cluster1", "did not answer within 0.4 s")
    vc.drip = 0.0
    secret = cluster.read_secret(NS, NAME)  # the half-read connection was not reused
    assert secret is not None and secret.data == DATA


@pytest.mark.parametrize("status, phrase", [(500, "500 Internal Server Error"), (503, "503 Service Unavailable")])
def test_server_error_keeps_status_and_message(
    kube_api: KubeAPIServer, kubeconfig: Path, status: int, phrase: str
) -> None:
    vc = kube_api.cluster("cluster1")
    vc.fail_next(status, message="etcdserver: request timed out")
    cluster = connect(kubeconfig)
    with pytest.raises(KubeError) as excinfo:
        cluster.read_secret(NS, NAME)
    kube_error(excinfo, status, "context cluster1", phrase, "etcdserver: request timed out", "retry later")
    assert cluster.read_secret(NS, NAME) is None  # only the next request failed
    assert len(vc.requests) == 2  # no transport-level retry on a 5xx


def test_fail_next_only_hits_chosen_methods(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    vc = kube_api.cluster("cluster1")
    vc.fail_next(503, count=1, methods=["POST"])
    cluster = connect(kubeconfig)
    assert cluster.read_secret(NS, NAME) is None
    with pytest.raises(KubeError) as excinfo:
        cluster.ensure_namespace(NS)
    kube_error(excinfo, 503, "failed to create namespace istio-system")
    assert cluster.ensure_namespace(NS) is True


@pytest.mark.parametrize("write", [False, True])
def test_dropped_connection(kube_api: KubeAPIServer, kubeconfig: Path, write: bool) -> None:
    vc = kube_api.cluster("cluster1")
    rv = vc.put_secret(NS, NAME, DATA)
    cluster = connect(kubeconfig)
    assert cluster.read_secret(NS, NAME) is not None  # a pooled keep-alive connection now exists
    vc.drop_next()
    with pytest.raises(KubeError) as excinfo:
        if write:
            cluster.patch_secret_metadata(NS, NAME, LABELS, ANNOTATIONS, rv)
        else:
            cluster.read_secret(NS, NAME)
    kube_error(excinfo, None, "context cluster1", "closed the connection without an answer")
    assert len(vc.requests) == 2  # never re-sent
    assert cluster.read_secret(NS, NAME) is not None  # and the client recovers


# --------------------------------------------------------------------------
# the server itself


def test_server_rejects_replace_without_resource_version(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    kube_api.cluster("cluster1").put_secret(NS, NAME, DATA)
    with pytest.raises(KubeError) as excinfo:
        connect(kubeconfig).replace_secret(NS, NAME, DATA, None, None, "")
    kube_error(excinfo, 422, "must be specified for an update")


def test_hundred_clusters_concurrently(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    names = [f"c{i:03d}" for i in range(100)]
    path = kube_api.write_kubeconfig(tmp_path / "fleet", {n: (n, "admin-token") for n in names})

    def push(name: str) -> str:
        with Cluster.connect(name, kubeconfig=str(path), timeout=10) as cluster:
            cluster.ensure_namespace(NS)
            cluster.create_secret(NS, NAME, {"cluster": name.encode()}, LABELS, ANNOTATIONS)
            secret = cluster.read_secret(NS, NAME)
            assert secret is not None
            return secret.data["cluster"].decode()

    with concurrent.futures.ThreadPoolExecutor(max_workers=32) as pool:
        assert list(pool.map(push, names)) == names
    for name in names:
        stored = kube_api.cluster(name).get_secret(NS, NAME)
        assert stored is not None and stored["data"] == {"cluster": name.encode()}
        assert len(kube_api.cluster(name).writes) == 2


def test_readonly_token_constant_matches_fixture(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    import yaml

    doc = yaml.safe_load(kubeconfig.read_text())
    tokens = {u["name"]: u["user"]["token"] for u in doc["users"]}
    assert tokens["readonly-user"] == READONLY_TOKEN
    assert doc["current-context"] == "cluster1"


def test_kubeconfig_env_fixture(kubeconfig_env: Path) -> None:
    assert Cluster.connect().context == "cluster1"
    assert Cluster.connect("cluster2").read_secret(NS, NAME) is None


def test_server_stops_with_requests_in_flight(tmp_path: Path) -> None:
    """stop() must not wait for a delayed request or an idle keep-alive connection."""
    import threading

    server = KubeAPIServer().start()
    path = server.write_kubeconfig(tmp_path / "kc", {"east": ("east", "admin-token")})
    idle = Cluster.connect("east", kubeconfig=str(path))
    assert idle.read_secret(NS, NAME) is None  # leaves a keep-alive connection open
    server.cluster("east").delay = 30
    slow = Cluster.connect("east", kubeconfig=str(path), timeout=30)
    errors: list[KubeError] = []

    def read() -> None:
        try:
            slow.read_secret(NS, NAME)
        except KubeError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    while len(server.cluster("east").requests) < 2:
        time.sleep(0.01)
    server.stop()
    reader.join(timeout=5)
    assert not reader.is_alive()
    assert errors and errors[0].status is None
    assert server._thread is not None and not server._thread.is_alive()


# --------------------------------------------------------------------------
# one run: kubeconfig parsed once, exec credentials cached per user

PLUGIN = """\
import json, sys
with open(sys.argv[1], "a") as log:
    log.write("ran\\n")
if sys.argv[2] == "fail":
    sys.exit("plugin: no credentials for you")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": sys.argv[2]}}))
"""


def exec_kubeconfig(kube_api: KubeAPIServer, tmp_path: Path, token: str) -> tuple[Path, Path]:
    """Contexts east and west, both of user `sso`, whose token comes from an exec plugin."""
    plugin, runs = tmp_path / "plugin.py", tmp_path / "runs.log"
    plugin.write_text(PLUGIN)
    doc = kube_api.kubeconfig_dict({"east": ("cluster1", "unused"), "west": ("cluster2", "unused")})
    doc["users"] = [{"name": "sso", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
        "args": [str(plugin), str(runs), token], "interactiveMode": "Never"}}}]
    for ctx in doc["contexts"]:
        ctx["context"]["user"] = "sso"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path, runs


def test_exec_plugin_runs_once_per_user_per_run(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    for vc in ("cluster1", "cluster2"):
        kube_api.cluster(vc).add_token("sso-token", "sso")
    path, runs = exec_kubeconfig(kube_api, tmp_path, "sso-token")
    configs = Kubeconfigs()
    for ctx in ("east", "west", "east"):
        assert Cluster.connect(ctx, str(path), configs=configs).read_secret(NS, NAME) is None
    assert runs.read_text().count("ran") == 1
    assert [c.user for c in kube_api.cluster("cluster2").calls] == ["sso"]


def test_a_failing_exec_plugin_is_one_clear_error(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    path, _ = exec_kubeconfig(kube_api, tmp_path, "fail")
    with pytest.raises(KubeError) as excinfo:
        Cluster.connect("east", str(path))
    kube_error(excinfo, None, "context east", "exec credential plugin of user sso failed", "run it by hand")


def test_a_run_parses_each_kubeconfig_file_once(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    configs = Kubeconfigs()
    first = configs.load(str(kubeconfig))
    kubeconfig.write_text("not: [a kubeconfig")  # a run keeps what it read first
    assert configs.load(str(kubeconfig)) is first
    assert Cluster.connect("cluster2", str(kubeconfig), configs=configs).context == "cluster2"
    with pytest.raises(KubeError, match="is not valid YAML"):  # a new run reads the file again
        Kubeconfigs().load(str(kubeconfig))


def test_threads_connecting_at_once_share_one_parse(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    configs = Kubeconfigs()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        loaded = list(pool.map(lambda _: configs.load(str(kubeconfig)), range(64)))
    assert all(c is loaded[0] for c in loaded)
