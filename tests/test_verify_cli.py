"""`meshpki verify` end to end: store clusters, foreign folders, pairs, exit codes, JSON."""

from __future__ import annotations

import json

import pytest

from meshpki.bundle import CA_KEY, CERT_CHAIN
from meshpki.keys import KeyType
from tests import factories as f

INSECURE = "--insecure-no-passphrase"


def issue(cli, key_type: str, *clusters: str) -> None:
    result = cli("init-root", INSECURE, "--key-type", key_type, "--days", "3650")
    assert result.exit_code == 0, result.output
    result = cli("issue", *clusters)
    assert result.exit_code == 0, result.output


def as_json(result) -> dict:
    return json.loads(result.stdout)


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa-2048"])
def test_issued_bundles_verify_clean(cli, key_type):
    issue(cli, key_type, "cluster1", "cluster2")
    result = cli("verify", "cluster1", "cluster2")
    assert result.exit_code == 0, result.output
    assert result.output.count("OK  ") == 3  # two bundles and the pair
    assert "OK: 2 bundle(s), 1 pair(s); 0 error(s), 0 warning(s)" in result.output
    strict = cli("verify", "--all", "--strict")
    assert strict.exit_code == 0, strict.output


def test_json_shape(cli, tmp_path):
    issue(cli, "ecdsa-p256", "cluster1")
    # the same bundle again, in cert-manager's tls.* shape, as a folder target
    folder = f.write_folder(tmp_path / "cm", f.tls_form(_store_files(tmp_path, "cluster1")))
    result = cli("verify", "cluster1", str(folder), "-o", "json")
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert set(data) == {"ok", "strict", "errors", "warnings", "results", "pairs"}
    assert data["ok"] is True and data["errors"] == 0 and isinstance(data["warnings"], int)
    assert [r["target"] for r in data["results"]] == ["cluster1", str(folder)]
    for entry in data["results"]:
        assert set(entry) == {"target", "ok", "findings"} and entry["ok"] is True
        for item in entry["findings"]:
            assert set(item) == {"severity", "code", "message", "file", "by", "fix"}
    assert len(data["pairs"]) == 1
    pair = data["pairs"][0]
    assert set(pair) == {"a", "b", "ok", "findings"} and (pair["a"], pair["b"]) == ("cluster1", str(folder))
    assert pair["ok"] is True and pair["findings"][0]["code"] == "handshake-ok"


def _store_files(tmp_path, cluster: str) -> dict[str, bytes]:
    folder = tmp_path / "store" / "clusters" / cluster
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_foreign_folders_makefile_and_samples(cli, tmp_path):
    makefile, root = f.istio_makefile_bundle("cluster1")
    other, _ = f.istio_makefile_bundle("cluster2", root=root)
    a = f.write_folder(tmp_path / "cluster1", makefile)
    b = f.write_folder(tmp_path / "cluster2", other)
    samples = f.write_folder(tmp_path / "samples", f.istio_samples_bundle())
    result = cli("verify", str(a), str(b), "--strict")
    assert result.exit_code == 0, result.output
    alone = cli("verify", str(samples), "--strict")
    assert alone.exit_code == 0, alone.output
    assert "legacy-profile" in alone.output


def test_different_roots_fail_and_the_pair_counts_in_errors(cli, tmp_path):
    r1, r2 = f.make_root("Root CA", slot=100), f.make_root("Root CA", slot=101)
    a = f.write_folder(tmp_path / "cluster1", f.bundle_files(f.make_intermediate(r1, "cluster1", slot=102), r1))
    b = f.write_folder(tmp_path / "cluster2", f.bundle_files(f.make_intermediate(r2, "cluster2", slot=103), r2))
    result = cli("verify", str(a), str(b), "-o", "json")
    assert result.exit_code == 1, result.output
    data = as_json(result)
    assert all(r["ok"] for r in data["results"])
    assert data["ok"] is False and data["errors"] >= 1
    assert data["errors"] == sum(1 for x in data["pairs"][0]["findings"] if x["severity"] == "error")
    messages = " ".join(x["message"] for x in data["pairs"][0]["findings"])
    assert "trust different roots" in messages and "UNKNOWN_CA" in messages
    text = cli("verify", str(a), str(b))
    assert text.exit_code == 1 and "FAIL " in text.output and "fix:" in text.output


def test_broken_bundle_text_names_file_and_fix(cli, tmp_path):
    root = f.make_root(slot=104)
    files = f.bundle_files(f.make_intermediate(root, "cluster1", slot=105), root)
    files[CA_KEY] = f.Authority(root.cert, f.pooled_key(KeyType.ECDSA_P256, 106)).key_pem  # someone else's key
    del files[CERT_CHAIN]
    folder = f.write_folder(tmp_path / "broken", files)
    result = cli("verify", str(folder))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines[0] == f"FAIL {folder}"
    mismatch = next(line for line in lines if "key-mismatch" in line)
    assert "ca-key.pem" in mismatch and "fix:" in mismatch
    missing = next(line for line in lines if "missing-file" in line)
    assert "cert-chain.pem" in missing and "fix:" in missing


def test_strict_and_warn_days(cli, tmp_path):
    root = f.make_root(slot=107)
    folder = f.write_folder(tmp_path / "short", f.bundle_files(f.make_intermediate(root, "c", slot=108, days=10),
                                                             root))
    relaxed = cli("verify", str(folder))
    assert relaxed.exit_code == 0, relaxed.output
    assert "expiring-soon" in relaxed.output
    strict = cli("verify", str(folder), "--strict")
    assert strict.exit_code == 1
    assert strict.output.strip().splitlines()[-1].startswith("FAIL (strict): "), strict.output
    assert relaxed.output.strip().splitlines()[-1].startswith("OK: ")
    quiet = cli("verify", str(folder), "--strict", "--warn-days", "5", "-o", "json")
    assert quiet.exit_code == 0, quiet.output
    assert as_json(quiet)["warnings"] == 0 and as_json(quiet)["ok"] is True
    # the JSON verdict agrees with the exit code: a warning under --strict is a failure
    loud = cli("verify", str(folder), "--strict", "-o", "json")
    assert loud.exit_code == 1
    assert (as_json(loud)["ok"], as_json(loud)["strict"], as_json(loud)["errors"]) == (False, True, 0)
    assert as_json(cli("verify", str(folder), "-o", "json"))["ok"] is True


def test_a_folders_fix_hints_say_they_act_in_the_store_that_made_it(cli, tmp_path):
    issue(cli, "ecdsa-p256", "cluster1", "cluster2")
    mixed = f.write_folder(tmp_path / "mixed", {**_store_files(tmp_path, "cluster1"),
                                                "ca-key.pem": _store_files(tmp_path, "cluster2")["ca-key.pem"]})
    folder = as_json(cli("verify", str(mixed), "-o", "json"))["results"][0]
    [fix] = [x["fix"] for x in folder["findings"] if x["code"] == "key-mismatch"]
    assert "meshpki issue cluster1 --force" in fix and "in the meshpki store that made this folder's bundle" in fix
    healthy = as_json(cli("verify", "cluster1", "-o", "json"))["results"][0]  # the store's own copy is untouched
    assert healthy["ok"] is True


def test_usage_errors_exit_2_naming_the_target(cli, tmp_path):
    issue(cli, "ecdsa-p256", "cluster1")
    result = cli("verify", "cluster1", "no-such-thing")
    assert result.exit_code == 2
    assert "no-such-thing" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert cli("verify", str(tmp_path / "missing" / "dir")).exit_code == 2
    assert cli("verify", "--warn-days", "-1", "cluster1").exit_code == 2


def test_empty_store_without_targets_is_a_usage_error(cli):
    result = cli("verify")
    assert result.exit_code == 2 and "no clusters" in result.output


def test_all_twenty_clusters(cli):
    names = [f"c{i:02d}" for i in range(20)]
    issue(cli, "ecdsa-p256", *names)
    result = cli("verify", "--all", "-o", "json")
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert [r["target"] for r in data["results"]] == names
    assert len(data["pairs"]) == 20 * 19 // 2
    assert all(p["ok"] and p["findings"][-1]["code"] == "handshake-ok" for p in data["pairs"])
    assert data["ok"] and data["errors"] == 0


def test_help_documents_every_option(cli):
    result = cli("verify", "--help")
    assert result.exit_code == 0, result.output
    for option in ("--all", "--strict", "--warn-days", "--output", "--store", "Examples:"):
        assert option in result.output


def test_broken_bundles_get_one_peer_broken_line_each(cli, tmp_path):
    """Five broken bundles and one good one: five peer-broken lines, not one per pair."""
    root = f.make_root(slot=109)
    good = f.write_folder(tmp_path / "good", f.bundle_files(f.make_intermediate(root, "g", slot=110), root))
    broken = []
    for i in range(5):
        files = f.bundle_files(f.make_intermediate(root, f"b{i}", slot=111), root)
        files[CA_KEY] = f.Authority(root.cert, root.key).key_pem  # one defect: someone else's key
        broken.append(str(f.write_folder(tmp_path / f"b{i}", files)))
    result = cli("verify", str(good), *broken, "-o", "json")
    assert result.exit_code == 1
    data = as_json(result)
    peer_broken = [x for p in data["pairs"] for x in p["findings"] if x["code"] == "peer-broken"]
    assert len(peer_broken) == 5 and all(x["by"] == "proxy" for x in peer_broken)
    text = cli("verify", str(good), *broken).output
    assert text.count("peer-broken") == 5


def _fixes(output: str) -> list[str]:
    return [line.split("fix: ", 1)[1] for line in output.splitlines() if "fix: " in line]


def test_fix_hints_name_the_real_cluster_and_the_root_rotation(cli, store_path, tmp_path):
    """A store cluster's hints name it; a root's hint is rotate-root begin; no CLUSTER placeholder."""
    assert cli("init-root", INSECURE, "--key-type", "ecdsa-p256", "--days", "20").exit_code == 0
    assert cli("issue", "east", "--days", "10").exit_code == 0
    result = cli("verify", "east")
    assert result.exit_code == 0, result.output
    fixes = _fixes(result.output)
    assert any("meshpki rotate east" in fix for fix in fixes), result.output
    assert any("meshpki rotate-root begin" in fix for fix in fixes), result.output
    assert not any("CLUSTER" in fix for fix in fixes), result.output
    # -o json carries the same hints, for a pipeline that opens tickets from findings
    as_data = as_json(cli("verify", "east", "-o", "json"))
    json_fixes = [item["fix"] for entry in as_data["results"] for item in entry["findings"] if item["fix"]]
    assert sorted(json_fixes) == sorted(fixes)


def test_a_broken_bundle_outside_the_store_names_the_cluster_its_certificate_names(cli, tmp_path):
    root = f.make_root(slot=112)
    expired = f.make_intermediate(root, "east", slot=113, not_before=f.days_from_now(-30),
                                  not_after=f.days_from_now(-1))
    folder = f.write_folder(tmp_path / "copy-of-a-bundle", f.bundle_files(expired, root))
    result = cli("verify", str(folder))
    assert result.exit_code == 1, result.output
    assert "meshpki rotate east" in " ".join(_fixes(result.output)), result.output
    mismatched = f.bundle_files(f.make_intermediate(root, "east", slot=114), root)
    mismatched[CA_KEY] = f.Authority(root.cert, root.key).key_pem
    broken = cli("verify", str(f.write_folder(tmp_path / "broken", mismatched)))
    assert "meshpki issue east --force" in " ".join(_fixes(broken.output)), broken.output
    # nothing names the cluster (no L= in the subject): the placeholder stays
    anonymous = f.make_intermediate(root, slot=115, subject=f._name("Intermediate CA"),
                                    not_before=f.days_from_now(-30), not_after=f.days_from_now(-1))
    unknown = cli("verify", str(f.write_folder(tmp_path / "anon", f.bundle_files(anonymous, root))))
    assert "meshpki rotate CLUSTER" in " ".join(_fixes(unknown.output)), unknown.output


def test_a_live_secret_read_by_context_names_its_cluster_in_hints(cli, kubeconfig, kube_api):
    """verify --context: the context's cluster when the store knows it; a context
    the store does not know (readonly reads cluster1) gets the certificate's cluster."""
    assert cli("init-root", INSECURE, "--key-type", "ecdsa-p256", "--days", "3650").exit_code == 0
    assert cli("issue", "cluster1", "--days", "10").exit_code == 0
    pushed = cli("push", "cluster1", "--kubeconfig", str(kubeconfig), "--timeout", "5")
    assert pushed.exit_code == 0, pushed.output
    for context in ("cluster1", "readonly"):
        result = cli("verify", "--kubeconfig", str(kubeconfig), "--context", context)
        assert result.exit_code == 0, result.output
        assert "meshpki rotate cluster1, then meshpki push cluster1" in " ".join(_fixes(result.output)), result.output


def test_five_broken_store_bundles_are_five_lines_not_a_pair_each(cli, store_path):
    """A store of six clusters, five with someone else's key: `meshpki verify`
    says peer-broken once per broken bundle, and judges no pair with them."""
    from meshpki.store import Store

    root = f.make_root(slot=116)
    store = Store(store_path)
    store.write_root(root.cert_pem, root.key_pem)
    store.write_bundle("good", f.bundle_files(f.make_intermediate(root, "good", slot=117), root))
    for i in range(5):
        files = f.bundle_files(f.make_intermediate(root, f"broken{i}", slot=118), root)
        files[CA_KEY] = f.Authority(root.cert, root.key).key_pem
        store.write_bundle(f"broken{i}", files)
    result = cli("verify")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    broken = [line for line in lines if "peer-broken" in line]
    assert len(broken) == 5, result.output
    assert sorted(line.split("peer-broken")[1].split(":")[0].strip() for line in broken) == [
        f"broken{i}" for i in range(5)]
    assert not [line for line in lines if "<->" in line and "broken" in line and "(every peer)" not in line]
    assert lines[-1] == ("FAIL: 6 bundle(s), 0 pair(s); 10 error(s), 0 warning(s); "
                         "5 broken bundle(s) cannot do mTLS with any peer"), lines[-1]


def test_a_malformed_san_in_a_bundle_made_elsewhere_is_flagged(cli, tmp_path):
    root = f.make_root(slot=119)
    inter = f.make_intermediate(root, "east", slot=120, san_dns=("not a dns!!", "istiod.istio-system.svc"))
    folder = f.write_folder(tmp_path / "made-elsewhere", f.bundle_files(inter, root))
    result = cli("verify", str(folder))
    line = next(line for line in result.output.splitlines() if "bad-san" in line)
    assert "'not a dns!!'" in line and "meshpki issue east --force --san-dns" in line, line
    assert result.exit_code == 0 and cli("verify", str(folder), "--strict").exit_code == 1


def test_what_the_store_holds_beside_its_clusters_is_said_not_skipped(cli, store_path):
    issue(cli, "ecdsa-p256", "cluster1", "cluster2")
    (store_path / "clusters" / "cluster2").rename(store_path / "clusters" / "Bad_Name")
    (store_path / "clusters" / "cluster3").write_text("a file where a cluster folder would be")
    file_note = f"{store_path}/clusters/cluster3: left out, a file is not a cluster folder; move it out of the store"
    name_note = f"{store_path}/clusters/Bad_Name: left out, 'Bad_Name' is not a cluster name"
    for args in (("verify",), ("verify", "--all", "-o", "json")):
        result = cli(*args)
        assert result.exit_code == 0, result.output  # the healthy cluster still passes
        assert file_note in result.stderr and name_note in result.stderr
        assert "rename it or move it out of the store" in result.stderr
    named = cli("verify", "cluster1")  # only what was named: no word about the rest of the store
    assert named.exit_code == 0 and "left out" not in named.stderr
    (store_path / "clusters" / "cluster1").rename(store_path / "clusters" / "Cluster1")
    (store_path / "clusters" / "cluster3").unlink()
    alone = cli("verify")
    assert alone.exit_code == 2
    assert "no clusters in store" in alone.output and "Bad_Name: left out, 'Bad_Name' is not" in alone.output
