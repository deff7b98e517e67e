"""Fleet commands work on clusters concurrently (`--parallel`): a failing
cluster stops nobody, output stays one block per cluster in fleet order, and
-o json gives one result per cluster. Speed is bench/bench_fleet.py's job."""

from __future__ import annotations

import json
import threading
import time

import pytest

from meshpki import ca
from meshpki.errors import MeshPKIError
from meshpki.fanout import fan_out
from meshpki.keys import KeyType
from meshpki.store import Store

NS, NAME = "istio-system", "cacerts"
CLUSTERS = [f"c{i}" for i in range(1, 7)]


# -- fan_out ------------------------------------------------------------------------

def test_fan_out_keeps_input_order_and_the_bound():
    running, most = 0, 0
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002 * (10 - i))  # the first ones finish last
        with lock:
            running -= 1
        if i == 4:
            raise MeshPKIError("four refused")
        return i * i

    seen: list[int] = []
    counts: list[int] = []
    outcomes = fan_out(list(range(10)), work, parallel=3, on_ready=lambda o: seen.append(o.index),
                       progress=lambda done, total: counts.append(done))
    assert seen == list(range(10))  # in input order, whatever order they finished in
    assert counts == list(range(1, 11))
    assert most <= 3
    assert [o.value for o in outcomes if o.ok] == [i * i for i in range(10) if i != 4]
    assert [str(o.error) for o in outcomes if not o.ok] == ["four refused"]


def test_fan_out_raises_a_bug_instead_of_counting_it_as_a_failed_cluster():
    def work(i: int) -> int:
        if i == 0:
            raise ValueError("a bug")
        return i

    with pytest.raises(ValueError, match="a bug"):
        fan_out([0, 1, 2], work, parallel=1)


# -- push --all -------------------------------------------------------------------------

@pytest.fixture
def fleet(store: Store, kube_api, tmp_path):
    """Six clusters issued and in the fleet file, each its own virtual cluster."""
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, CLUSTERS, ca.IssueOptions(), ca.store_issuer(store, None))
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kc", {c: (c, "admin-token") for c in CLUSTERS})
    fleet_file = tmp_path / "mesh.yaml"
    fleet_file.write_text("clusters:\n" + "".join(f"  - name: {c}\n" for c in CLUSTERS))
    return {"MESHPKI_CONFIG": str(fleet_file), "KUBECONFIG": str(kubeconfig)}


def test_one_cluster_refuses_the_rest_are_pushed(cli, fleet, kube_api, store):
    kube_api.cluster("c3").fail_next(403, count=100, message='secrets is forbidden: User "admin" cannot get')
    kube_api.cluster("c1").delay = 0.2  # the first cluster finishes last
    result = cli("push", "--all", "--parallel", "4", env=fleet)
    assert result.exit_code == 1, result.output
    for name in CLUSTERS:
        live = kube_api.cluster(name).get_secret(NS, NAME)
        assert (live is None) == (name == "c3"), name
        if live is not None:
            assert live["data"] == dict(store.load_bundle(name).secret_data())
    lines = result.output.splitlines()
    assert lines[-1] == "Error: 1 of 6 pushes failed: c3 (see above)"
    # one block per cluster, in fleet order, not interleaved
    heads = [line.split(":")[0] for line in lines if ": istio-system/cacerts via context" in line or
             line.startswith("Error: context")]
    assert heads == ["c1", "c2", "Error", "c4", "c5", "c6"]
    for name in ("c1", "c2", "c4", "c5", "c6"):
        start = lines.index(next(line for line in lines if line.startswith(f"{name}: istio-system/cacerts")))
        end = lines.index(f"{name}: created, read back and identical")
        assert all(not line.startswith("c") or line.startswith(name) for line in lines[start:end + 1])
    assert "Traceback" not in result.output


def test_json_gives_one_result_per_cluster(cli, fleet, kube_api):
    kube_api.cluster("c5").fail_next(500, count=100)
    result = cli("push", "--all", "-o", "json", env=fleet)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [(r["cluster"], r["ok"]) for r in document["results"]] == [(c, c != "c5") for c in CLUSTERS]
    assert (document["failed"], document["total"]) == (1, 6)
    good = document["results"][0]
    assert good["action"] == "create" and good["object"]["metadata"]["name"] == NAME and good["error"] is None
    assert "500" in document["results"][4]["error"]


def test_parallel_one_is_the_sequential_run(cli, fleet, kube_api):
    for name in CLUSTERS:
        kube_api.cluster(name).clear_requests()
    result = cli("push", "--all", "--parallel", "1", env=fleet)
    assert result.exit_code == 0, result.output
    again = cli("push", "--all", "--parallel", "1", env=fleet)
    assert again.output.count("unchanged, nothing written") == 6
    done = [line.split(":")[0] for line in result.output.splitlines() if line.endswith("read back and identical")]
    assert done == CLUSTERS


def test_dry_run_all_as_json_holds_each_manifest(cli, fleet, kube_api):
    result = cli("push", "--all", "--dry-run", "-o", "json", env=fleet)
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)["results"]
    assert [r["object"]["kind"] for r in results] == ["Secret"] * 6
    assert all(kube_api.cluster(c).get_secret(NS, NAME) is None for c in CLUSTERS)
