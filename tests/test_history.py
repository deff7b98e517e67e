"""`meshpki history` and `history prune`, and the rotate-root wording around them."""

from __future__ import annotations

import json
import subprocess

from cryptography import x509

from meshpki import ca, rotate
from meshpki.bundle import fingerprint, parse_certs
from meshpki.keys import KeyType
from meshpki.store import Store
from tests.conftest import one_line_error, snapshot


def make_store(store: Store, clusters=("cluster1",)) -> Store:
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, list(clusters), ca.IssueOptions(), ca.store_issuer(store, None))
    return store


def rotate_root(store: Store) -> None:
    rotate.begin(store, None, 3650, None)
    rotate.reissue(store, [], ca.IssueOptions(), None)
    rotate.finish(store, force=True)


def test_history_of_an_unknown_cluster_is_a_usage_error(cli, store):
    make_store(store)
    before = snapshot(store.path)
    result = cli("history", "nosuch")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "no cluster 'nosuch'" in line and "cluster1" in line
    assert snapshot(store.path) == before


def test_history_after_a_root_rotation_explains_the_twin_serial_and_lists_the_record(cli, store):
    make_store(store)
    rotate_root(store)
    result = cli("history", "-o", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["history"]
    clusters = [r for r in rows if r["kind"] == "cluster"]
    # begin (root B appended), reissue (new intermediate), finish (A dropped)
    assert len(clusters) == 3
    assert clusters[0]["serial"] == clusters[1]["serial"]
    assert clusters[0]["note"] == "same intermediate, trust changed (a rotate-root step)"
    assert clusters[1]["note"].startswith("replaced by intermediate ")
    assert [r["kind"] for r in rows if r["kind"] != "cluster"] == ["root", "rotation"]
    record = next(r for r in rows if r["kind"] == "rotation")
    assert "G2" in record["subject"]
    text = cli("history")
    assert "same intermediate, trust changed" in text.stdout and "rotation" in text.stdout


def test_history_says_which_intermediates_were_revoked(cli, store):
    make_store(store, ("cluster1", "cluster2"))
    assert cli("rotate", "cluster1", "--revoke-previous").exit_code == 0
    assert cli("revoke", "cluster2", "--reason", "key-compromise").exit_code == 0
    rows = json.loads(cli("history", "-o", "json").stdout)["history"]
    notes = {r["name"]: r["note"] for r in rows if r["kind"] == "cluster"}
    assert notes["cluster1"].startswith("replaced by intermediate ") and notes["cluster1"].endswith("(superseded)")
    assert "; revoked on " in notes["cluster1"]
    assert notes["cluster2"].startswith("revoked on ") and notes["cluster2"].endswith("(key-compromise)")


def test_root_b_has_a_subject_of_its_own(store):
    make_store(store)
    old = store.root_cert()
    rotate.begin(store, None, 3650, None)
    new = rotate.new_root_cert(store)[0]
    assert new.subject != old.subject
    assert new.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "Root CA G2"
    rotate.reissue(store, [], ca.IssueOptions(), None)
    rotate.finish(store, force=True)
    rotate.begin(store, None, 3650, None)
    assert rotate.new_root_cert(store)[0].subject.get_attributes_for_oid(
        x509.NameOID.COMMON_NAME)[0].value == "Root CA G3"


def test_history_text_prints_serials_as_openssl_does(cli, store):
    make_store(store)
    ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None), replace=True)
    [entry] = store.history("cluster1")
    cert_file = entry.path / "ca-cert.pem"
    openssl = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(cert_file)],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert openssl.startswith("serial=")
    result = cli("history", "cluster1")
    assert openssl.removeprefix("serial=") in result.stdout
    data = json.loads(cli("history", "cluster1", "-o", "json").stdout)["history"]
    cert = parse_certs(cert_file.read_bytes(), "x")[0]
    assert data[0]["serial"] == format(cert.serial_number, "x")  # JSON stays lowercase hex



def _openssl_serial_of(cert_file) -> str:
    done = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", str(cert_file)],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().removeprefix("serial=")


def test_audit_revoke_and_crl_show_print_serials_as_openssl_does(cli, store):
    """Every text output shows a serial the way `openssl x509 -serial` does
    (uppercase, whole bytes); JSON keeps lowercase hex."""
    make_store(store, ("cluster1", "cluster2"))
    serials = {c: _openssl_serial_of(store.cluster_dir(c) / "ca-cert.pem") for c in ("cluster1", "cluster2")}
    audit = cli("audit")
    for cluster, serial in serials.items():
        row = next(line for line in audit.stdout.splitlines() if line.startswith(f"{cluster} "))
        assert row.split()[5] == serial, row
    assert _openssl_serial_of(store.root_dir / "root-cert.pem") in audit.stdout
    revoked = cli("revoke", "cluster2", "--reason", "key-compromise")
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked cluster2: serial {serials['cluster2']} (key-compromise)" in revoked.stdout
    assert serials["cluster2"] in cli("crl", "show").stdout
    listed = json.loads(cli("crl", "show", "-o", "json").stdout)["revoked"][0]["serial"]
    assert listed == serials["cluster2"].lower().lstrip("0")


def test_prune_keeps_the_newest(cli, store):
    make_store(store, ("cluster1", "cluster2"))
    for _ in range(3):
        ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None), replace=True)
    result = cli("history", "prune", "--keep", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("removed cluster cluster1") == 2
    assert len(store.history("cluster1")) == 1
    assert cli("history", "prune").exit_code == 2  # --keep is required
    assert cli("history", "prune", "--keep", "-1").exit_code == 2


def test_rotate_root_status_without_a_rotation_says_so(cli, store):
    make_store(store)
    result = cli("rotate-root", "status")
    assert result.exit_code == 0, result.output
    assert "no rotation in progress" in result.stdout and "old root" not in result.stdout
    assert f"root: {fingerprint(store.root_cert())}" in result.stdout.splitlines()
    rotate_root(store)
    after = cli("rotate-root", "status")
    assert "no rotation in progress" in after.stdout and "old root" not in after.stdout


def test_the_rotation_runbook_names_real_push_commands_without_a_fleet_file(cli, store, tmp_path):
    make_store(store, ("cluster1", "cluster2"))
    result = cli("rotate-root", "begin", "--key-type", "ecdsa-p256")
    assert result.exit_code == 0, result.output
    assert "meshpki push cluster1 --context cluster1; meshpki push cluster2 --context cluster2" in result.stdout
    assert "push --all," not in result.stdout
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("clusters:\n  - name: cluster1\n    context: kind-c1\n  - name: cluster2\n")
    reissued = cli("rotate-root", "reissue", "--config", str(fleet))
    assert reissued.exit_code == 0, reissued.output
    assert "next: meshpki push --all, wait the grace period" in reissued.stdout


def test_terminal_escapes_in_a_subject_never_reach_the_terminal(cli, tmp_path):
    """A bundle made elsewhere whose subject carries an escape sequence: verify's
    text shows it as \\x1b, never as the byte itself."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "evil\x1b[2J\x1b]0;owned\x07")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name in ("ca-cert.pem", "cert-chain.pem", "root-cert.pem"):
        (folder / name).write_bytes(pem)
    (folder / "ca-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    result = cli("verify", str(folder))
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b" in result.output


def test_dry_run_manifest_ends_without_a_blank_line(cli, store):
    make_store(store)
    result = cli("push", "cluster1", "--context", "nowhere", "--dry-run", "-o", "yaml",
                 env={"KUBECONFIG": "/nonexistent"})
    assert result.stdout.startswith("apiVersion: v1") and result.stdout.endswith("\n")
    assert not result.stdout.endswith("\n\n")
