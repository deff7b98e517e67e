"""`rotate` and the A -> A+B -> B rotation of `rotate-root`, store side.

Pushing each step to a cluster is covered in tests/test_rotate_push.py."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography.x509.verification import PolicyBuilder
from cryptography.x509.verification import Store as TrustStore
from freezegun import freeze_time

from meshpki import ca, dates, keys, profiles, rotate
from meshpki.bundle import parse_certs
from meshpki.errors import InputError
from meshpki.keys import KeyType
from meshpki.store import Store
from tests.conftest import one_line_error, snapshot

CLUSTERS = ("cluster1", "cluster2", "cluster3")
START = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


def make_fleet(store: Store, clusters=CLUSTERS) -> Store:
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, list(clusters), ca.IssueOptions(), ca.store_issuer(store, None))
    return store


def files(store: Store, cluster: str) -> dict[str, bytes]:
    return dict(store.load_bundle(cluster).secret_data())


def workload_verifies(store: Store, client: str, server: str, when: dt.datetime | None = None) -> bool:
    """A workload of `client` presents leaf + cert-chain.pem; `server` trusts its own root-cert.pem."""
    peer = files(store, client)
    leaf = profiles.make_workload(parse_certs(peer["ca-cert.pem"], "ca")[0], keys.load_private_key(peer["ca-key.pem"]),
                                  KeyType.ECDSA_P256.generate(), now=when)
    roots = parse_certs(files(store, server)["root-cert.pem"], "roots")
    builder = PolicyBuilder().store(TrustStore(roots))
    if when:
        builder = builder.time(when + dt.timedelta(minutes=1))
    try:
        builder.build_client_verifier().verify(leaf, parse_certs(peer["cert-chain.pem"], "chain"))
        return True
    except Exception:
        return False


def all_pairs_verify(store: Store, when=None) -> bool:
    names = store.clusters()
    return all(workload_verifies(store, a, b, when) for a in names for b in names)


def test_rotate_replaces_key_and_archives(store):
    make_fleet(store, ("cluster1",))
    before = files(store, "cluster1")
    results = rotate.rotate(store, ["cluster1"], ca.IssueOptions(), None)
    after = files(store, "cluster1")
    assert after["ca-key.pem"] != before["ca-key.pem"] and after["ca-cert.pem"] != before["ca-cert.pem"]
    assert after["root-cert.pem"] == before["root-cert.pem"]
    assert (results[0].archived / "ca-cert.pem").read_bytes() == before["ca-cert.pem"]
    assert [h.path for h in store.history("cluster1")] == [results[0].archived]


def test_rotate_unknown_cluster_changes_nothing(store):
    make_fleet(store, ("cluster1",))
    before = snapshot(store.path)
    with pytest.raises(Exception, match="meshpki issue cluster9"):
        rotate.rotate(store, ["cluster1", "cluster9"], ca.IssueOptions(), None)
    assert snapshot(store.path) == before


def test_full_root_rotation_keeps_every_pair_trusting(store):
    with freeze_time(START) as clock:
        make_fleet(store)
        old_root_pem = store.root_cert_pem()
        live = {c: files(store, c) for c in CLUSTERS}
        assert all_pairs_verify(store, START)

        step = rotate.begin(store, None, 3650, None)
        assert set(step.changed) == set(CLUSTERS)
        new_cert, new_pem = rotate.new_root_cert(store)
        for c in CLUSTERS:
            now = files(store, c)
            assert now["root-cert.pem"] == old_root_pem + new_pem, "old root byte for byte, then new"
            assert now["ca-cert.pem"] == live[c]["ca-cert.pem"] and now["cert-chain.pem"] == live[c]["cert-chain.pem"]
        assert rotate.status(store).phase == "trusting-both"
        assert all_pairs_verify(store, START)

        again = rotate.begin(store, None, 3650, None)  # idempotent
        assert again.changed == () and set(again.unchanged) == set(CLUSTERS)

        clock.tick(dt.timedelta(hours=1))
        results, skipped = rotate.reissue(store, ["cluster1"], ca.IssueOptions(), None)
        assert [r.cluster for r in results] == ["cluster1"] and skipped == []
        c1 = files(store, "cluster1")
        assert c1["root-cert.pem"] == old_root_pem + new_pem
        assert c1["cert-chain.pem"].endswith(new_pem)
        assert rotate.issued_by(store.load_bundle("cluster1"), new_cert)
        assert rotate.status(store).phase == "reissuing"
        # the mixed state: cluster1 under B, cluster2 and cluster3 under A, all pairs still verify
        assert all_pairs_verify(store, START + dt.timedelta(hours=1))

        with pytest.raises(rotate.RotationError, match="cluster2, cluster3 still issue under the old root"):
            rotate.finish(store)

        clock.tick(dt.timedelta(hours=1))
        results, skipped = rotate.reissue(store, [], ca.IssueOptions(), None)
        assert sorted(r.cluster for r in results) == ["cluster2", "cluster3"] and skipped == ["cluster1"]
        assert rotate.status(store).phase == "grace"
        assert all_pairs_verify(store, START + dt.timedelta(hours=2))

        clock.tick(dt.timedelta(hours=23))
        with pytest.raises(rotate.RotationError, match="grace period not over"):
            rotate.finish(store)
        clock.tick(dt.timedelta(hours=1, seconds=1))
        assert rotate.status(store).phase == "ready-to-finish"
        done = rotate.finish(store)
        assert set(done.changed) == set(CLUSTERS)
        for c in CLUSTERS:
            assert files(store, c)["root-cert.pem"] == new_pem
        assert store.root_cert_pem() == new_pem
        assert not store.has_rotation()
        roots = [h for h in store.history() if h.kind == "root"]
        assert len(roots) == 1 and (roots[0].path / "root-cert.pem").read_bytes() == old_root_pem
        assert rotate.status(store).phase == "none"
        assert all_pairs_verify(store, START + dt.timedelta(hours=26))
        # the new root can go on issuing
        issued = rotate.issue_now(store, ["cluster4"], ca.IssueOptions(), None)
        assert rotate.issued_by(store.load_bundle("cluster4"), new_cert) and issued[0].cluster == "cluster4"


def test_finish_force_skips_grace(store):
    make_fleet(store, ("cluster1",))
    rotate.begin(store, None, 3650, None)
    rotate.reissue(store, [], ca.IssueOptions(), None)
    with pytest.raises(rotate.RotationError, match="--force"):
        rotate.finish(store)
    rotate.finish(store, force=True)
    assert not store.has_rotation()


def test_a_push_of_a_reissued_bundle_restarts_the_grace_clock(store):
    with freeze_time(START) as clock:
        make_fleet(store, ("cluster1",))
        rotate.begin(store, None, 3650, None)
        rotate.reissue(store, [], ca.IssueOptions(), None)
        clock.tick(dt.timedelta(hours=20))
        rotate.record_push(store, "cluster1", store.load_bundle("cluster1"))
        clock.tick(dt.timedelta(hours=5))  # 25h after reissue, 5h after the push
        with pytest.raises(rotate.RotationError, match="grace period not over"):
            rotate.finish(store)
        clock.tick(dt.timedelta(hours=19, seconds=1))
        rotate.finish(store)


def test_new_clusters_during_rotation_issue_under_b_and_trust_both(store):
    make_fleet(store, ("cluster1",))
    old_pem = store.root_cert_pem()
    rotate.begin(store, None, 3650, None)
    new_cert, new_pem = rotate.new_root_cert(store)
    rotate.issue_now(store, ["cluster9"], ca.IssueOptions(), None)
    assert files(store, "cluster9")["root-cert.pem"] == old_pem + new_pem
    assert rotate.issued_by(store.load_bundle("cluster9"), new_cert)
    assert json.loads(store.rotation_file("state.json"))["last_reissue"], "issuing under B starts the grace clock"
    assert all_pairs_verify(store)


def test_begin_resumes_after_an_interrupted_run(store):
    make_fleet(store)
    original = files(store, "cluster2")
    rotate.begin(store, None, 3650, None)
    store.write_bundle("cluster2", original, replace=True)  # as if killed before reaching cluster2
    new_before = rotate.new_root_cert(store)[1]
    resumed = rotate.begin(store, None, 3650, None)
    assert resumed.changed == ("cluster2",) and "resuming" in resumed.notes[0]
    assert rotate.new_root_cert(store)[1] == new_before, "the new root is made once"
    assert files(store, "cluster2")["root-cert.pem"] == original["root-cert.pem"] + new_before


def test_finish_resumes_after_the_root_was_swapped(store):
    make_fleet(store, ("cluster1", "cluster2"))
    rotate.begin(store, None, 3650, None)
    rotate.reissue(store, [], ca.IssueOptions(), None)
    _, new_pem = rotate.new_root_cert(store)
    # as if killed after cluster1's trust change and the root swap, before the rest
    c1 = files(store, "cluster1")
    c1["root-cert.pem"] = new_pem
    store.write_bundle("cluster1", c1, replace=True)
    store.retire_root(new_pem, store.rotation_file("root-key.pem"))
    result = rotate.finish(store, force=True)
    assert result.changed == ("cluster2",) and result.unchanged == ("cluster1",)
    assert store.root_cert_pem() == new_pem and not store.has_rotation()
    assert files(store, "cluster2")["root-cert.pem"] == new_pem


def test_encrypted_root_rotation_needs_the_passphrase(store):
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=b"pw")
    before = snapshot(store.path)
    with pytest.raises(Exception, match="encrypted"):
        rotate.begin(store, None, 3650, None)
    assert snapshot(store.path) == before
    rotate.begin(store, None, 3650, b"pw")
    assert keys.is_encrypted_pem(store.rotation_file("root-key.pem"))


@pytest.mark.parametrize("text,expected", [("24h", dt.timedelta(hours=24)), ("90m", dt.timedelta(minutes=90)),
                                           ("1d12h", dt.timedelta(hours=36)), ("3600", dt.timedelta(hours=1))])
def test_parse_duration(text, expected):
    assert dates.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["24h", "10m", "1d12h", "2d", "45s"])
def test_format_duration_is_read_back_unchanged(text):
    duration = dates.parse_duration(text)
    assert dates.parse_duration(dates.format_duration(duration)) == duration


def test_parse_duration_minimum():
    assert dates.parse_duration("10m", at_least=dt.timedelta(minutes=10)) == dt.timedelta(minutes=10)
    with pytest.raises(Exception, match="shorter than 10m"):
        dates.parse_duration("9m59s", at_least=dt.timedelta(minutes=10))


@pytest.mark.parametrize("bad", ["", "soon", "12x", "-1h"])
def test_parse_duration_refuses(bad):
    with pytest.raises(Exception, match="invalid duration"):
        dates.parse_duration(bad)


def test_cli_runbook_and_refusals(cli, store_path):
    assert cli("init-root", "--key-type", "ecdsa-p256", "--insecure-no-passphrase").exit_code == 0
    assert cli("issue", "cluster1", "cluster2").exit_code == 0
    no_rotation = cli("rotate-root", "finish")
    assert no_rotation.exit_code == 1 and "rotate-root begin" in one_line_error(no_rotation)
    unknown = cli("rotate", "cluster7")
    assert unknown.exit_code == 1 and "meshpki issue cluster7" in one_line_error(unknown)
    bad_name = cli("rotate", "Bad_Name")
    assert bad_name.exit_code == 2
    rotated = cli("rotate", "cluster1")
    assert rotated.exit_code == 0 and "meshpki push cluster1 --context cluster1" in rotated.output
    begun = cli("rotate-root", "begin", "-o", "json")
    assert begun.exit_code == 0, begun.output
    assert sorted(json.loads(begun.stdout)["changed"]) == ["cluster1", "cluster2"]
    early = cli("rotate-root", "finish")
    assert early.exit_code == 1 and "still issue under the old root" in one_line_error(early)
    assert cli("rotate-root", "reissue", "cluster1").exit_code == 0
    status = cli("rotate-root", "status", "-o", "json")
    data = json.loads(status.stdout)
    assert data["phase"] == "reissuing"
    assert {c["cluster"]: c["issuer"] for c in data["clusters"]} == {"cluster1": "new", "cluster2": "old"}
    assert all(c["trusts"] == ["old", "new"] for c in data["clusters"])
    assert cli("rotate-root", "reissue").exit_code == 0
    nothing = cli("rotate-root", "reissue")
    assert nothing.exit_code == 0 and "nothing to reissue" in nothing.output
    bad_grace = cli("rotate-root", "finish", "--grace", "soon")
    assert bad_grace.exit_code == 2 and "invalid duration" in one_line_error(bad_grace)
    waiting = cli("rotate-root", "finish")
    assert waiting.exit_code == 1 and "grace period not over" in one_line_error(waiting)
    finished = cli("rotate-root", "finish", "--grace", "0s")
    assert finished.exit_code == 0, finished.output
    assert "cluster1: now trusts the new root only" in finished.output
    final = cli("rotate-root", "status", "-o", "json")
    assert json.loads(final.stdout)["phase"] == "none"
    assert {c["issuer"] for c in json.loads(final.stdout)["clusters"]} == {"root"}


@pytest.mark.parametrize("huge", ["999999999999d", "99999999999999999999", "11000d"])
def test_parse_duration_refuses_what_overflows(huge):
    with pytest.raises(InputError, match="more than 30 years"):
        dates.parse_duration(huge)
