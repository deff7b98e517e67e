"""Revocation (crl.py, `meshpki revoke`, `rotate --revoke-previous`, `crl renew|show`).

Every bundle with a ca-crl.pem is judged by `istiod_accepts_crls` below: an
independent re-statement of istiod's load rule (docs/revocation.md), written
from the rule, not from meshpki's code. OpenSSL (`openssl verify -crl_check`)
and pkilint's RFC 5280 CRL linter are the other independent judges.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from freezegun import freeze_time

from meshpki import ca, crl, profiles, rotate
from meshpki.bundle import CA_CRL, parse_certs
from meshpki.keys import KeyType, signature_hash
from meshpki.store import Store
from tests.conftest import one_line_error, snapshot
from tests.factories import DAMAGES, damage

CLUSTERS = ("cluster1", "cluster2", "cluster3")
PASSPHRASE = "correct horse battery staple"
START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def make_fleet(store: Store, clusters=CLUSTERS, passphrase: str | None = None) -> Store:
    secret = passphrase.encode() if passphrase else None
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=secret)
    ca.issue(store, list(clusters), ca.IssueOptions(), ca.store_issuer(store, secret))
    return store


# -- independent judges -------------------------------------------------------------

def pem_blocks(data: bytes, label: str) -> list[bytes]:
    return re.findall(rb"-----BEGIN " + label.encode() + rb"-----.+?-----END " + label.encode() + rb"-----\n?",
                      data, re.S)


def istiod_accepts_crls(folder: Path) -> list[str]:
    """istiod's rule for ca-crl.pem (PILOT_ENABLE_CA_CRL): every PEM block parses
    as a CRL, and every certificate of cert-chain.pem (root included) has
    signed one of them; a signer whose keyUsage lacks cRLSign cannot sign a
    CRL. Returns the problems, empty when istiod would load the bundle."""
    data = (folder / "ca-crl.pem").read_bytes()
    blocks = re.findall(rb"-----BEGIN ([A-Z0-9 ]+)-----", data)
    problems = [f"a {b.decode()} block is not a CRL" for b in blocks if b != b"X509 CRL"]
    crls = [x509.load_pem_x509_crl(b) for b in pem_blocks(data, "X509 CRL")]
    for cert in x509.load_pem_x509_certificates((folder / "cert-chain.pem").read_bytes()):
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            may_sign = usage.crl_sign
        except x509.ExtensionNotFound:
            may_sign = True
        if not may_sign or not any(c.issuer == cert.subject and c.is_signature_valid(cert.public_key())
                                   for c in crls):
            problems.append(f"missing CRL signed by {cert.subject.rfc4514_string()}")
    return problems


def openssl_verify(folder: Path, cert_file: Path) -> subprocess.CompletedProcess:
    """OpenSSL with CRL checking along the whole chain, the way a proxy checks."""
    return subprocess.run(["openssl", "verify", "-crl_check_all", "-CAfile", str(folder / "root-cert.pem"),
                           "-untrusted", str(folder / "cert-chain.pem"), "-CRLfile", str(folder / "ca-crl.pem"),
                           str(cert_file)], capture_output=True, text=True, check=False)


def pkilint_crl_findings(pem: bytes) -> list[str]:
    """pkilint's RFC 5280 CRL linter (as `lint_crl -t CRL -p PKIX`), WARNING and above."""
    from pkilint import loader, pkix
    from pkilint.pkix import crl as pkix_crl
    from pkilint.pkix import extension, name
    from pkilint.validation import ValidationFindingSeverity as Severity

    validator = pkix_crl.create_pkix_crl_validator_container(
        [pkix.create_attribute_decoder(name.ATTRIBUTE_TYPE_MAPPINGS),
         pkix.create_extension_decoder(extension.EXTENSION_MAPPINGS)],
        [pkix_crl.create_issuer_validator_container([]),
         pkix_crl.create_validity_validator_container([]),
         pkix_crl.create_extensions_validator_container([])],
    )
    doc = loader.RFC5280CertificateListDocumentLoader().load_pem_document(pem.decode(), "crl")
    serious = {Severity.WARNING, Severity.ERROR, Severity.FATAL}
    return [f"{fd.finding.code} ({fd.finding.severity.name})"
            for result in validator.validate(doc.root) for fd in result.finding_descriptions
            if fd.finding.severity in serious]


def crls_of(folder: Path) -> list[x509.CertificateRevocationList]:
    return [x509.load_pem_x509_crl(b) for b in pem_blocks((folder / CA_CRL).read_bytes(), "X509 CRL")]


def assert_all_members_sound(store: Store) -> None:
    for cluster in store.clusters():
        folder = store.cluster_dir(cluster)
        assert istiod_accepts_crls(folder) == [], cluster
        done = openssl_verify(folder, folder / "ca-cert.pem")
        assert done.returncode == 0, done.stdout + done.stderr


# -- the judges themselves ------------------------------------------------------------

def test_istiod_rule_check_flags_a_missing_signer_and_a_bad_block(store, tmp_path):
    make_fleet(store, ("cluster1", "cluster2"))
    crl.revoke(store, "cluster2", None)
    folder = store.cluster_dir("cluster1")
    data = (folder / CA_CRL).read_bytes()
    root_only = tmp_path / "root-only"
    root_only.mkdir()
    for name in ("cert-chain.pem", "root-cert.pem"):
        (root_only / name).write_bytes((folder / name).read_bytes())
    (root_only / CA_CRL).write_bytes(pem_blocks(data, "X509 CRL")[0])
    assert istiod_accepts_crls(root_only) == ["missing CRL signed by CN=Intermediate CA,L=cluster1,O=Istio"]
    (root_only / CA_CRL).write_bytes(data + (folder / "ca-cert.pem").read_bytes())
    assert istiod_accepts_crls(root_only) == ["a CERTIFICATE block is not a CRL"]


def test_pkilint_helper_does_flag_a_bad_crl(store):
    make_fleet(store, ("cluster1",))
    root = store.root_cert()
    key = store.load_root_key(None)
    bad = (x509.CertificateRevocationListBuilder().issuer_name(root.subject)
           .last_update(START).next_update(START + dt.timedelta(days=1))
           .sign(key, signature_hash(key)))  # no CRL number, no AKI
    assert pkilint_crl_findings(crl.crl_pem(bad))


# -- revoke --------------------------------------------------------------------------

def test_no_ca_crl_until_the_first_revocation(store):
    make_fleet(store)
    assert crl.load_state(store) is None
    for cluster in CLUSTERS:
        assert CA_CRL not in store.load_bundle(cluster).files
        assert not (store.cluster_dir(cluster) / CA_CRL).exists()


def test_revoke_evicts_and_every_member_carries_crls_istiod_accepts(store):
    make_fleet(store)
    revoked_cert = parse_certs(store.load_bundle("cluster2").files["ca-cert.pem"], "c2")[0]
    result = crl.revoke(store, "cluster2", None)

    assert store.clusters() == ["cluster1", "cluster3"]
    archived = store.history("cluster2")
    assert len(archived) == 1 and (archived[0].path / "ca-cert.pem").read_bytes().startswith(b"-----BEGIN")
    assert [r.serial for r in result.revoked] == [format(revoked_cert.serial_number, "x")]
    assert result.revoked[0].reason == "key-compromise" and result.revoked[0].evicted
    assert_all_members_sound(store)
    for cluster in ("cluster1", "cluster3"):
        folder = store.cluster_dir(cluster)
        done = openssl_verify(folder, archived[0].path / "ca-cert.pem")
        assert done.returncode != 0 and "certificate revoked" in done.stdout + done.stderr
        root_crl, own_crl = crls_of(folder)
        assert root_crl.get_revoked_certificate_by_serial_number(revoked_cert.serial_number) is not None
        assert len(list(own_crl)) == 0 and own_crl.issuer == parse_certs(
            (folder / "ca-cert.pem").read_bytes(), "ca")[0].subject
    assert not store.crl_pending()


def test_crls_are_well_formed(store):
    """CRL number and AKI present, thisUpdate backdated like certificates,
    numbers increase, and pkilint finds nothing."""
    make_fleet(store)
    with freeze_time(START):
        crl.revoke(store, "cluster3", None, reason="cessation-of-operation")
    root = store.root_cert()
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    first = crls_of(store.cluster_dir("cluster1"))
    for one in first:
        assert one.last_update_utc == START - profiles.CLOCK_SKEW
        assert one.next_update_utc == START + dt.timedelta(days=crl.DEFAULT_CRL_DAYS)
        assert crl.crl_number(one) == 1
        assert pkilint_crl_findings(crl.crl_pem(one)) == []
    aki = first[0].extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root_ski
    entry = next(iter(first[0]))
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.cessation_of_operation
    with freeze_time(START + dt.timedelta(days=10)):
        crl.renew(store, None, days=30)
    second = crls_of(store.cluster_dir("cluster1"))
    assert [crl.crl_number(c) for c in second] == [2, 2]
    assert second[0].next_update_utc == START + dt.timedelta(days=40)
    assert second[0].get_revoked_certificate_by_serial_number(next(iter(first[0])).serial_number) is not None


def test_new_and_replaced_bundles_get_crls_for_their_new_chain(store):
    make_fleet(store)
    crl.revoke(store, "cluster3", None)
    ca.issue(store, ["cluster4"], ca.IssueOptions(), ca.store_issuer(store, None))
    rotate.rotate(store, ["cluster1"], ca.IssueOptions(), None)
    ca.issue(store, ["cluster2"], ca.IssueOptions(), ca.store_issuer(store, None), replace=True)
    assert store.clusters() == ["cluster1", "cluster2", "cluster4"]
    assert_all_members_sound(store)


def test_reissuing_an_evicted_cluster_admits_it_again(store):
    make_fleet(store, ("cluster1", "cluster2"))
    crl.revoke(store, "cluster2", None)
    ca.issue(store, ["cluster2"], ca.IssueOptions(), ca.store_issuer(store, None))
    assert store.clusters() == ["cluster1", "cluster2"]
    assert crl.evicted_clusters(store) == {}
    assert_all_members_sound(store)


def test_all_history_revokes_archived_intermediates_still_valid(store):
    make_fleet(store, ("cluster1", "cluster2"))
    old = parse_certs(store.load_bundle("cluster2").files["ca-cert.pem"], "old")[0]
    rotate.rotate(store, ["cluster2"], ca.IssueOptions(), None)
    result = crl.revoke(store, "cluster2", None, all_history=True)
    assert format(old.serial_number, "x") in {r.serial for r in result.revoked}
    assert len(result.revoked) == 2
    only_current = crl.revoke(store, "cluster1", None)
    assert len(only_current.revoked) == 1


def test_rotate_revoke_previous_keeps_the_cluster_and_revokes_the_old_key(store):
    make_fleet(store, ("cluster1", "cluster2"))
    old = parse_certs(store.load_bundle("cluster1").files["ca-cert.pem"], "old")[0]
    rotate.rotate(store, ["cluster1"], ca.IssueOptions(), None, revoke_previous=True)
    assert store.clusters() == ["cluster1", "cluster2"]
    state = crl.load_state(store)
    assert state is not None and [(r.cluster, r.reason, r.evicted) for r in state.revoked] == \
        [("cluster1", "superseded", False)]
    assert state.revoked[0].serial == format(old.serial_number, "x")
    assert_all_members_sound(store)
    archived = store.history("cluster1")[0].path / "ca-cert.pem"
    done = openssl_verify(store.cluster_dir("cluster2"), archived)
    assert "certificate revoked" in done.stdout + done.stderr


def test_rotate_root_carries_crls_of_both_roots_while_both_are_trusted(store):
    make_fleet(store)
    crl.revoke(store, "cluster3", None)
    old_root = store.root_cert()
    rotate.begin(store, None, 3650, None)
    new_root = rotate.new_root_cert(store)[0]
    assert_all_members_sound(store)
    for cluster in store.clusters():
        issuers = [c.issuer for c in crls_of(store.cluster_dir(cluster))]
        assert issuers.count(old_root.subject) == 1 and issuers.count(new_root.subject) == 1  # A's and B's CRL
    rotate.reissue(store, [], ca.IssueOptions(), None)
    assert_all_members_sound(store)
    for cluster in store.clusters():
        signers = [c for c in crls_of(store.cluster_dir(cluster))
                   if c.is_signature_valid(old_root.public_key()) or c.is_signature_valid(new_root.public_key())]
        assert len(signers) == 2
    rotate.finish(store, force=True)
    assert store.crl_names() == [crl.root_crl_name(new_root), "state.json"]  # A's CRL left with A
    assert_all_members_sound(store)
    for cluster in store.clusters():
        found = crls_of(store.cluster_dir(cluster))
        assert len(found) == 2 and not any(c.is_signature_valid(old_root.public_key()) for c in found)


# -- the CLI -------------------------------------------------------------------------

def test_cli_revoke_runbook_and_show(cli, store):
    make_fleet(store, passphrase=PASSPHRASE)
    env = {"MESHPKI_ROOT_PASSPHRASE": PASSPHRASE}
    result = cli("revoke", "cluster2", "--reason", "key-compromise", env=env)
    assert result.exit_code == 0, result.output
    assert "revoked cluster2" in result.output
    # no fleet file, so no `push --all`: one push per remaining member, with its context
    assert "next: meshpki push cluster1 --context cluster1; meshpki push cluster3 --context cluster3" in result.stdout
    shown = cli("crl", "show", "-o", "json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert [r["cluster"] for r in data["revoked"]] == ["cluster2"]
    assert {c["where"] for c in data["crls"]} >= {"cluster1", "cluster3"}
    text = cli("crl", "show")
    assert "cluster2" in text.stdout and "key-compromise" in text.stdout and "NEXT UPDATE" in text.stdout
    renewed = cli("crl", "renew", "--days", "45", "-o", "json", env=env)
    assert renewed.exit_code == 0, renewed.output
    assert json.loads(renewed.stdout)["crl_number"] == 2
    verified = cli("verify")
    assert verified.exit_code == 0, verified.output
    assert "cluster2" not in verified.stdout
    named = cli("verify", "cluster2")
    assert named.exit_code == 2 and "was revoked on" in one_line_error(named)
    helped = cli("revoke", "--help")
    assert "The evict runbook" in helped.stdout and "meshpki push --all" in helped.stdout


def test_cli_revoke_refuses_bad_input_and_leaves_the_store_as_it_was(cli, store, store_path):
    make_fleet(store, passphrase=PASSPHRASE)
    before = snapshot(store_path)
    unknown = cli("revoke", "cluster9", env={"MESHPKI_ROOT_PASSPHRASE": PASSPHRASE})
    assert unknown.exit_code == 2 and "unknown cluster 'cluster9'" in one_line_error(unknown)
    bad_name = cli("revoke", "Bad_Name", env={"MESHPKI_ROOT_PASSPHRASE": PASSPHRASE})
    assert bad_name.exit_code == 2 and "invalid cluster name" in one_line_error(bad_name)
    wrong = cli("revoke", "cluster2", env={"MESHPKI_ROOT_PASSPHRASE": "wrong"})
    assert wrong.exit_code == 1 and "passphrase" in one_line_error(wrong)
    no_crl = cli("crl", "renew", env={"MESHPKI_ROOT_PASSPHRASE": PASSPHRASE})
    assert no_crl.exit_code == 1 and "nothing is revoked yet" in one_line_error(no_crl)
    bad_days = cli("crl", "renew", "--days", "0", env={"MESHPKI_ROOT_PASSPHRASE": PASSPHRASE})
    assert bad_days.exit_code == 2 and "--days" in one_line_error(bad_days)
    assert snapshot(store_path) == before
    ok = cli("revoke", "cluster2", env={"MESHPKI_ROOT_PASSPHRASE": PASSPHRASE})
    assert ok.exit_code == 0, ok.output
    after = snapshot(store_path)
    twice = cli("revoke", "cluster2", env={"MESHPKI_ROOT_PASSPHRASE": PASSPHRASE})
    assert twice.exit_code == 1 and "already revoked" in one_line_error(twice)
    assert snapshot(store_path) == after


def test_revoke_reasons_in_the_cli_match_crl_module():
    from meshpki.cli import REVOKE_REASONS

    assert set(REVOKE_REASONS) == set(crl.REASONS)


def test_cli_rotate_revoke_previous(cli, store):
    make_fleet(store, ("cluster1", "cluster2"))
    result = cli("rotate", "cluster1", "--revoke-previous")
    assert result.exit_code == 0, result.output
    assert "revoked the replaced intermediate" in result.stderr
    # every bundle's ca-crl.pem changed: the hint pushes every cluster, not only the rotated one
    assert "next: meshpki push cluster1 --context cluster1; meshpki push cluster2 --context cluster2" in result.stdout
    state = crl.load_state(store)
    assert state is not None and len(state.revoked) == 1
    assert_all_members_sound(store)


def test_rotate_revoke_previous_with_a_wrong_old_root_passphrase_changes_nothing(cli, store):
    """During a root rotation the new root signs the intermediate but both roots
    sign CRLs: a wrong passphrase for the old root must stop the command before
    the bundle changes, or the replaced (maybe leaked) intermediate would stay
    valid with the cluster already rotated, and a re-run would not revoke it."""
    old, new = "the old root passphrase", "the new root passphrase"
    make_fleet(store, ("cluster1", "cluster2"), passphrase=old)
    assert cli("rotate-root", "begin", env={"MESHPKI_ROOT_PASSPHRASE": old,
                                            "MESHPKI_NEW_ROOT_PASSPHRASE": new}).exit_code == 0
    before = snapshot(store.path)
    wrong = cli("rotate", "cluster1", "--revoke-previous",
                env={"MESHPKI_ROOT_PASSPHRASE": "not the old one at all", "MESHPKI_NEW_ROOT_PASSPHRASE": new})
    assert wrong.exit_code == 1 and "wrong passphrase" in one_line_error(wrong)
    assert snapshot(store.path) == before
    right = cli("rotate", "cluster1", "--revoke-previous",
                env={"MESHPKI_ROOT_PASSPHRASE": old, "MESHPKI_NEW_ROOT_PASSPHRASE": new})
    assert right.exit_code == 0, right.output
    state = crl.load_state(store)
    assert state is not None and [r.cluster for r in state.revoked] == ["cluster1"]


def test_crl_show_before_any_revocation(cli, store):
    make_fleet(store, ("cluster1",))
    result = cli("crl", "show")
    assert result.exit_code == 0 and "nothing revoked" in result.stdout
    assert json.loads(cli("crl", "show", "-o", "json").stdout)["active"] is False


def commit_revocation_of_cluster2(store: Store) -> None:
    """What `revoke cluster2` leaves when killed right after its commit point."""
    state = crl._next_state(None, (), None, profiles.utcnow())
    cert = parse_certs(store.load_bundle("cluster2").files["ca-cert.pem"], "c2")[0]
    entry = crl._entry("cluster2", cert, [store.root_cert()], "key-compromise", profiles.utcnow(), True)
    assert entry is not None
    state = crl.CrlState(state.number, state.this_update, state.next_update, state.days, (entry,))
    crl._commit(store, state, [(store.root_cert(), store.load_root_key(None))],
                evict=[{"cluster": "cluster2", "serial": entry.serial}])


def test_interrupted_revocation_is_finished_by_the_next_command(store):
    """The commit point is the crl/ folder; what follows needs no passphrase,
    so the next command that takes the lock (or reads) finishes it."""
    make_fleet(store)
    commit_revocation_of_cluster2(store)  # then meshpki died: nothing reconciled yet
    assert store.crl_pending()
    reader = Store(store.path)
    assert reader.clusters() == ["cluster1", "cluster3"]  # a reader settles it
    assert not reader.crl_pending()
    assert_all_members_sound(reader)


@pytest.mark.parametrize("days", [0, 400])
def test_crl_days_are_bounded(days):
    with pytest.raises(crl.InputError):
        crl.check_days(days)


def test_every_crash_point_of_revoke_leaves_the_store_before_or_after(tmp_path):
    """SIGKILL before each write step of `meshpki revoke`: after the next
    command took the lock, the store is the one before (cluster2 a member, no
    CRL anywhere) or the one after (cluster2 evicted, every member's
    ca-crl.pem accepted), never a mix, and nothing is left behind."""
    from tests.test_hardening import assert_recovers, assert_store_sound, crash_points, leftovers

    template = tmp_path / "template"
    members = ("cluster1", "cluster2")
    make_fleet(Store(template), members)
    before = {c: snapshot(Store(template).cluster_dir(c)) for c in members}
    outcomes = set()

    def check(store_path: Path, crashed: bool) -> None:
        assert_recovers(store_path)
        assert leftovers(store_path) == []
        assert_store_sound(store_path)
        run = Store(store_path)
        if run.clusters() == list(members):
            assert not run.has_crl()
            assert {c: snapshot(run.cluster_dir(c)) for c in members} == before
            assert run.history("cluster2") == []
            outcomes.add("before")
        else:
            assert run.clusters() == ["cluster1"] and len(run.history("cluster2")) == 1
            assert not run.crl_pending()
            assert_all_members_sound(run)
            outcomes.add("after")

    visited = crash_points(template, ["revoke", "cluster2"], check)
    assert visited >= 12 and outcomes == {"before", "after"}


def test_every_crash_point_of_rotate_revoke_previous_fails_closed(tmp_path):
    """SIGKILL before each write step of `rotate --revoke-previous`: after the
    next command took the lock the store is the one before (nothing revoked,
    cluster1 unchanged), the one after (cluster1 rotated, its old intermediate
    revoked), or, killed between the two commits, the old intermediate revoked
    with cluster1 not yet rotated: verify then flags cluster1 and names the fix,
    and `meshpki rotate cluster1` completes it. Never a rotated cluster whose
    replaced intermediate stays valid."""
    from meshpki import checks
    from tests.test_hardening import assert_recovers, assert_store_sound, crash_points, env_for, leftovers, run_meshpki

    template = tmp_path / "template"
    make_fleet(Store(template), ("cluster1", "cluster2"))
    old_serial = _serial(Store(template), "cluster1")
    before = snapshot(Store(template).cluster_dir("cluster1"))
    outcomes = set()

    def check(store_path: Path, crashed: bool) -> None:
        assert_recovers(store_path)
        assert leftovers(store_path) == []
        run = Store(store_path)
        state = crl.load_state(run)
        revoked = {r.serial for r in state.revoked} if state else set()
        if old_serial not in revoked:
            assert _serial(run, "cluster1") == old_serial, "rotated, but the replaced intermediate is valid"
            assert snapshot(run.cluster_dir("cluster1")) == before
            outcomes.add("before")
        elif _serial(run, "cluster1") != old_serial:
            assert_store_sound(store_path)
            assert_all_members_sound(run)
            outcomes.add("after")
        else:
            report = checks.check_bundle(run.load_bundle("cluster1"))
            [flagged] = [f for f in report.findings if f.code == "crl-revokes-path"]
            assert "meshpki rotate" in flagged.fix
            finished = run_meshpki(["rotate", "cluster1"], env_for(store_path))
            assert finished.returncode == 0, finished.stderr
            assert _serial(Store(store_path), "cluster1") != old_serial
            assert_all_members_sound(Store(store_path))
            outcomes.add("revoked, not yet rotated")

    visited = crash_points(template, ["rotate", "cluster1", "--revoke-previous"], check)
    assert visited >= 12 and outcomes == {"before", "revoked, not yet rotated", "after"}, (visited, outcomes)


def _serial(store: Store, cluster: str) -> str:
    return format(parse_certs(store.load_bundle(cluster).ca_cert or b"", cluster)[0].serial_number, "x")


# -- verify: a pair where one side's CRL revokes the other -------------------------

def test_pair_where_one_side_revokes_the_other_fails_statically_and_in_the_handshake(cli, store, tmp_path):
    """The evicted cluster's live secret still holds its old bundle: every member's
    proxies must reject its workloads, and verify must say so (by: proxy)."""
    import shutil

    from meshpki import checks, handshake
    from meshpki.bundle import load_folder

    make_fleet(store)
    evicted_copy = tmp_path / "cluster2-live"
    shutil.copytree(store.cluster_dir("cluster2"), evicted_copy)  # what cluster2 itself still runs
    crl.revoke(store, "cluster2", None)

    member = checks.check_bundle(store.load_bundle("cluster1"))
    other_member = checks.check_bundle(store.load_bundle("cluster3"))
    evicted = checks.check_bundle(load_folder(evicted_copy))
    assert member.ok and evicted.ok  # each bundle alone loads fine; the pair is what breaks
    pair = checks.check_pair(member, evicted)
    codes = {f.code: f for f in pair.findings}
    assert not pair.ok and codes["peer-revoked"].by == "proxy"
    assert "cluster1's ca-crl.pem revokes" in codes["peer-revoked"].message
    assert "certificate revoked" in codes["handshake-failed"].message
    assert "CERTIFICATE_REVOKED" in codes["handshake-failed"].message
    # the same two workloads without CRL checking shake hands: the CRL is what refuses them
    assert member.material.endpoint is not None and evicted.material.endpoint is not None
    assert handshake.mutual_tls(member.material.endpoint, evicted.material.endpoint).ok
    healthy = checks.check_pair(member, other_member)
    assert healthy.ok and {f.code for f in healthy.findings} == {"handshake-ok"}

    result = cli("verify", "cluster1", str(evicted_copy), "-o", "json")
    assert result.exit_code == 1, result.output
    [pair_json] = json.loads(result.stdout)["pairs"]
    assert {f["code"] for f in pair_json["findings"]} >= {"peer-revoked", "handshake-failed"}


def test_a_chain_whose_root_has_no_crl_is_refused_not_written(store, monkeypatch):
    """rotate-root begin killed before it signed B's CRL: reissue must not write
    a bundle istiod would refuse (missing CRL signed by B); begin again fixes it."""
    make_fleet(store, ("cluster1", "cluster2"))
    crl.revoke(store, "cluster2", None)
    with monkeypatch.context() as patched:
        patched.setattr(crl, "after_root_added", lambda *_: [])
        rotate.begin(store, None, 3650, None)
    before = snapshot(store.cluster_dir("cluster1"))
    with pytest.raises(crl.RevocationError, match="rotate-root begin"):
        rotate.reissue(store, [], ca.IssueOptions(), None)
    assert snapshot(store.cluster_dir("cluster1")) == before
    rotate.begin(store, None, 3650, None)  # resumes: B's CRL now
    rotate.reissue(store, [], ca.IssueOptions(), None)
    assert_all_members_sound(store)


# -- a damaged store refuses before the commit point ------------------------------

def assert_names_damage(result, folder: Path, name: str) -> None:
    line = one_line_error(result)
    assert result.exit_code == 1, result.output
    assert f"{folder.name}'s bundle is damaged" in line and str(folder / name) in line, line
    assert f"meshpki verify {folder.name}" in line and f"meshpki rotate {folder.name}" in line, line


@pytest.mark.parametrize("how", DAMAGES)
def test_revoke_over_a_damaged_member_refuses_and_changes_nothing(cli, store, how):
    """The reviewer's case: cluster1 damaged, `revoke cluster2` evicted cluster2 and
    wrote the CRLs, then died on cluster1 (a rerun said 'already revoked')."""
    make_fleet(store, ("cluster1", "cluster2"))
    name = damage(store.cluster_dir("cluster1"), how)
    before = snapshot(store.path)
    result = cli("revoke", "cluster2")
    assert_names_damage(result, store.cluster_dir("cluster1"), name)
    assert "nothing was changed" in result.output
    assert snapshot(store.path) == before


@pytest.mark.parametrize("how", ["rm:ca-cert.pem", "dir:ca-key.pem", "append:root-cert.pem"])
def test_crl_renew_and_rotate_revoke_previous_over_a_damaged_member_change_nothing(cli, store, how):
    make_fleet(store)
    crl.revoke(store, "cluster3", None)
    name = damage(store.cluster_dir("cluster2"), how)
    before = snapshot(store.path)
    assert_names_damage(cli("crl", "renew"), store.cluster_dir("cluster2"), name)
    assert snapshot(store.path) == before
    assert_names_damage(cli("rotate", "cluster1", "--revoke-previous"), store.cluster_dir("cluster2"), name)
    assert snapshot(store.path) == before


def test_revoking_a_cluster_never_needs_its_own_key(store):
    """The evicted cluster is not re-made, only archived: a compromised cluster
    whose key was already destroyed can still be revoked."""
    make_fleet(store, ("cluster1", "cluster2"))
    (store.cluster_dir("cluster2") / "ca-key.pem").unlink()
    crl.revoke(store, "cluster2", None)
    assert store.clusters() == ["cluster1"]
    assert_all_members_sound(store)


def test_revoking_a_cluster_whose_certificate_is_missing_says_so(cli, store):
    """It said 'unknown cluster cluster2 ... (members: cluster1, cluster2)'."""
    make_fleet(store, ("cluster1", "cluster2"))
    (store.cluster_dir("cluster2") / "ca-cert.pem").unlink()
    before = snapshot(store.path)
    result = cli("revoke", "cluster2")
    line = one_line_error(result)
    assert result.exit_code == 1 and str(store.cluster_dir("cluster2") / "ca-cert.pem") in line, line
    assert "unknown cluster" not in line and "restore the file" in line
    assert snapshot(store.path) == before


def test_a_pending_revocation_over_a_bundle_damaged_later_says_so_in_one_line(cli, store):
    """Committed, then killed, then a bundle damaged: reconcile re-makes what it
    can, names the damaged bundle, and keeps the work pending until it is repaired."""
    make_fleet(store)
    commit_revocation_of_cluster2(store)  # then meshpki died: nothing reconciled yet
    ca_cert = store.cluster_dir("cluster1") / "ca-cert.pem"
    kept = ca_cert.read_bytes()
    ca_cert.unlink()

    with pytest.raises(crl.RevocationError) as raised:
        crl.reconcile(store)
    message = str(raised.value)
    assert "\n" not in message and "CRL number 1 is committed" in message
    assert str(ca_cert) in message and "meshpki verify cluster1" in message
    assert store.crl_pending() and store.clusters() == ["cluster1", "cluster3"]
    assert istiod_accepts_crls(store.cluster_dir("cluster3")) == []  # the sound member got its CRLs

    before = snapshot(store.path)
    renewed = cli("crl", "renew")  # the recovery under its lock fails quietly; renew refuses in one line
    assert_names_damage(renewed, store.cluster_dir("cluster1"), "ca-cert.pem")
    assert snapshot(store.path) == before

    ca_cert.write_bytes(kept)  # restored from a backup: the next command finishes the revocation
    assert Store(store.path).clusters() == ["cluster1", "cluster3"]
    assert not store.crl_pending()
    assert_all_members_sound(store)


# -- a lost crl/state.json never undoes a revocation ------------------------------

def test_a_store_that_lost_its_crl_state_refuses_every_crl_command(cli, store):
    """The reviewer's case: without state.json, `crl show` said 'nothing revoked'
    and `revoke cluster1` signed a CRL number 1 without cluster2's entry."""
    make_fleet(store)
    crl.revoke(store, "cluster2", None)
    (store.crl_dir / "state.json").unlink()
    before = snapshot(store.path)
    for args in (("crl", "show"), ("crl", "show", "-o", "json"), ("revoke", "cluster1"), ("crl", "renew"),
                 ("rotate", "cluster1", "--revoke-previous"), ("issue", "cluster4"), ("rotate", "cluster3"),
                 ("rotate-root", "begin"), ("history", "list")):
        result = cli(*args)
        line = one_line_error(result)
        assert result.exit_code == 1, (args, result.output)
        assert "crl/state.json is missing" in line and "restore crl/state.json from a backup" in line, line
        assert "crl/root-" in line and "clusters/cluster1/ca-crl.pem" in line, line
        assert snapshot(store.path) == before, args


def test_audit_of_a_store_that_lost_its_crl_state_is_unknown_not_ok(cli, store):
    make_fleet(store)
    crl.revoke(store, "cluster2", None)
    (store.crl_dir / "state.json").unlink()
    result = cli("audit", "-o", "json")
    assert result.exit_code == 3, result.output
    rows = [r for r in json.loads(result.stdout)["rows"] if r["grade"] == "UNKNOWN"]
    assert any("crl/state.json is missing" in r["reason"] for r in rows)


def test_finish_refuses_to_retire_the_old_root_of_a_store_that_lost_its_crl_state(cli, store):
    from meshpki import ca, rotate

    make_fleet(store)
    crl.revoke(store, "cluster2", None)
    rotate.begin(store, None, 3650, None)
    rotate.reissue(store, [], ca.IssueOptions(), None)
    (store.crl_dir / "state.json").unlink()
    before = snapshot(store.path)
    result = cli("rotate-root", "finish", "--force")
    assert result.exit_code == 1
    assert "crl/state.json is missing" in one_line_error(result)
    assert snapshot(store.path) == before


def test_lost_crl_folder_is_seen_in_the_bundles(cli, store):
    import shutil

    make_fleet(store)
    crl.revoke(store, "cluster2", None)
    shutil.rmtree(store.crl_dir)
    before = snapshot(store.path)
    result = cli("revoke", "cluster1")
    line = one_line_error(result)
    assert "clusters/cluster1/ca-crl.pem, clusters/cluster3/ca-crl.pem" in line and "crl/root-" not in line
    assert snapshot(store.path) == before


# -- the stored root CRLs are proven before they are used ----------------------------

def _root_crl_file(store: Store) -> Path:
    return store.crl_dir / crl.root_crl_name(store.root_cert())


@pytest.mark.parametrize("how", ["truncated", "foreign", "appended"])
def test_a_damaged_or_foreign_root_crl_is_refused_by_issue_and_healed_by_renew(cli, store, tmp_path, how):
    make_fleet(store, ("cluster1", "cluster2"))
    crl.revoke(store, "cluster2", None)
    stored = _root_crl_file(store)
    other = make_fleet(Store(tmp_path / "other"), ("a", "b"))
    crl.revoke(other, "b", None)
    foreign = _root_crl_file(other).read_bytes()
    stored.write_bytes({"truncated": stored.read_bytes()[:200], "foreign": foreign,
                        "appended": stored.read_bytes() + foreign}[how])
    before = snapshot(store.path)
    result = cli("issue", "cluster4")
    line = one_line_error(result)
    assert result.exit_code == 1 and f"crl/{stored.name}" in line and "meshpki crl renew" in line, line
    assert snapshot(store.path) == before
    assert cli("crl", "renew").exit_code == 0  # re-signs every root CRL from state.json
    assert cli("issue", "cluster4").exit_code == 0
    assert_all_members_sound(store)


def test_crl_export_never_ships_a_damaged_root_crl(cli, store, tmp_path):
    from meshpki import byo

    make_fleet(store, ("cluster1", "cluster2"))
    issuer = ca.store_issuer(store, None)
    request = tmp_path / "site.csr"
    request.write_bytes(byo.make_csr(Store(tmp_path / "site"), "cluster3", KeyType.ECDSA_P256).csr_pem)
    byo.sign_csr(store, request.read_bytes(), "site.csr", issuer, tmp_path / "signed")
    crl.revoke(store, "cluster2", None)
    stored = _root_crl_file(store)
    stored.write_bytes(stored.read_bytes()[:-40])
    out = tmp_path / "cluster3-crl.pem"
    before = snapshot(store.path)
    result = cli("crl", "export", "cluster3", "--out", str(out))
    line = one_line_error(result)
    assert result.exit_code == 1 and f"crl/{stored.name} is damaged" in line, line
    assert not out.exists() and snapshot(store.path) == before


def test_rotate_root_begin_resumed_signs_a_damaged_root_crl_anew(store):
    make_fleet(store, ("cluster1", "cluster2"))
    crl.revoke(store, "cluster2", None)
    rotate.begin(store, None, 3650, None)
    _root_crl_file(store).write_bytes(b"not a CRL\n")
    rotate.begin(store, None, 3650, None)  # resumes: both roots' CRLs present by name, one of them damaged
    assert_all_members_sound(store)
