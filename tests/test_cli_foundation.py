"""`meshpki init-root`, `issue`, `history`, `demo`: the user's view, refusals first."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from cryptography import x509

from meshpki.bundle import parse_certs
from meshpki.keys import is_encrypted_pem
from tests.conftest import one_line_error, snapshot

FAST = ("--key-type", "ecdsa-p256")
PLAIN_ROOT = ("init-root", *FAST, "--insecure-no-passphrase")


def test_init_root_refuses_without_a_passphrase_source(cli, store_path):
    result = cli("init-root", *FAST)
    assert result.exit_code == 1
    assert "MESHPKI_ROOT_PASSPHRASE" in one_line_error(result)
    assert not store_path.exists() or snapshot(store_path) == {}


def test_init_root_encrypts_with_env_passphrase_and_issue_unlocks_it(cli, store_path):
    env = {"MESHPKI_ROOT_PASSPHRASE": "s3cret enough to pass"}
    result = cli("init-root", *FAST, env=env)
    assert result.exit_code == 0, result.output
    assert is_encrypted_pem((store_path / "root" / "root-key.pem").read_bytes())
    before = snapshot(store_path)
    wrong = cli("issue", "cluster1", env={"MESHPKI_ROOT_PASSPHRASE": "nope"})
    assert wrong.exit_code == 1 and "wrong passphrase" in one_line_error(wrong)
    missing = cli("issue", "cluster1")
    assert missing.exit_code == 1 and "encrypted" in one_line_error(missing)
    assert snapshot(store_path) == before
    ok = cli("issue", "cluster1", env=env)
    assert ok.exit_code == 0, ok.output
    assert (store_path / "clusters" / "cluster1" / "ca-cert.pem").exists()


def test_passphrase_file(cli, store_path, tmp_path):
    pw = tmp_path / "pw.txt"
    pw.write_text("from-a-file, 12+ chars\n")
    assert cli("init-root", *FAST, "--passphrase-file", str(pw)).exit_code == 0
    ok = cli("issue", "cluster1", "--passphrase-file", str(pw))
    assert ok.exit_code == 0, ok.output
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    bad = cli("issue", "cluster2", "--passphrase-file", str(empty))
    assert bad.exit_code == 1 and "empty" in one_line_error(bad)


def test_existing_root_is_never_overwritten(cli, store_path):
    assert cli(*PLAIN_ROOT).exit_code == 0
    before = snapshot(store_path)
    again = cli(*PLAIN_ROOT)
    assert again.exit_code == 1 and "never overwritten" in one_line_error(again)
    assert snapshot(store_path) == before


@pytest.mark.parametrize("args,needle", [
    (("--days", "0"), "--days"), (("--days", "-5"), "--days"),
    (("--days", "3000000"), "more than 30 years"), (("--days", "100000000"), "more than 30 years"),
    (("--days", "10951"), "more than 30 years"),
    (("--cn", "x" * 100), "at most 64"), (("--cn", ""), "--cn must not be empty"),
    (("--org", "o" * 65), "at most 64"), (("--cn", "Root\x1b[31m"), "control characters"),
])
def test_init_root_bad_options_are_refused_before_any_key(cli, store_path, args, needle):
    result = cli(*PLAIN_ROOT, *args)
    assert result.exit_code == 2 and needle in one_line_error(result)
    assert not store_path.exists(), "no store folder (not even one holding only .lock)"


def test_init_root_at_the_bounds(cli, store_path):
    result = cli(*PLAIN_ROOT, "--days", "10950", "--cn", "c" * 64, "--org", "o" * 64)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args,needle", [
    (("--san-dns", "not a dns!!"), "not a DNS name"), (("--san-dns", ""), "not a DNS name"),
    (("--san-dns", "a..b"), "not a DNS name"), (("--san-dns", "-x.svc"), "not a DNS name"),
    (("--org", "o" * 65), "at most 64"), (("--days", "3000000"), "more than 30 years"),
])
def test_issue_bad_names_and_days_are_refused_before_any_key(cli, store_path, args, needle):
    assert cli(*PLAIN_ROOT).exit_code == 0
    before = snapshot(store_path)
    result = cli("issue", "cluster1", *args)
    assert result.exit_code == 2 and needle in one_line_error(result)
    assert snapshot(store_path) == before


@pytest.mark.parametrize("command", [("verify",), ("audit",)])
@pytest.mark.parametrize("option", ["--warn-days", "--crit-days"])
def test_threshold_days_are_bounded(cli, command, option):
    if command == ("verify",) and option == "--crit-days":
        return
    result = cli(*command, option, "1000000000")
    assert result.exit_code == 2 and "Traceback" not in result.output and "1000000000" in result.output


def test_unknown_key_type_is_a_usage_error(cli):
    result = cli("init-root", "--key-type", "rsa-1024", "--insecure-no-passphrase")
    assert result.exit_code == 2 and "rsa-1024" in result.output


@pytest.mark.parametrize("bad", ["../x", "/tmp/x", "Cluster_1", "", "a b"])
def test_issue_refuses_bad_cluster_names_and_writes_nothing(cli, store_path, bad):
    assert cli(*PLAIN_ROOT).exit_code == 0
    before = snapshot(store_path)
    result = cli("issue", "cluster1", bad)
    assert result.exit_code == 2 and "DNS-1123" in one_line_error(result)
    assert snapshot(store_path) == before


def test_issue_without_root(cli, store_path):
    result = cli("issue", "cluster1")
    assert result.exit_code == 1 and "init-root" in one_line_error(result)
    assert snapshot(store_path) == {}


def test_issue_refuses_existing_bundle_then_force_archives(cli, store_path):
    assert cli(*PLAIN_ROOT).exit_code == 0
    assert cli("issue", "cluster1", "cluster2").exit_code == 0
    before = snapshot(store_path)
    refused = cli("issue", "cluster2", "cluster3")
    assert refused.exit_code == 1 and "--force" in one_line_error(refused)
    assert snapshot(store_path) == before, "no cluster of a refused call is written"
    forced = cli("issue", "cluster2", "--force", "-o", "json")
    assert forced.exit_code == 0, forced.output
    data = json.loads(forced.stdout)
    assert data["clusters"][0]["archived"]
    history = cli("history", "-o", "json")
    rows = json.loads(history.stdout)["history"]
    assert [(r["kind"], r["name"]) for r in rows] == [("cluster", "cluster2")]
    assert rows[0]["serial"] == before_serial(before, "cluster2")


def before_serial(snap, cluster):
    cert = parse_certs(snap[f"clusters/{cluster}/ca-cert.pem"][1], "x")[0]
    return format(cert.serial_number, "x")


@pytest.mark.parametrize("args,needle", [(("--days", "0"), "--days"), (("--key-type", "dsa"), "dsa")])
def test_issue_bad_options(cli, store_path, args, needle):
    assert cli(*PLAIN_ROOT).exit_code == 0
    before = snapshot(store_path)
    result = cli("issue", "cluster1", *args)
    assert result.exit_code == 2 and needle in result.output
    assert snapshot(store_path) == before


def test_unwritable_store(cli, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = cli(*PLAIN_ROOT, env={"MESHPKI_STORE": str(blocker / "store")})
    assert result.exit_code == 2
    assert one_line_error(result).endswith(f"MESHPKI_STORE {blocker / 'store'}: {blocker} is a file, not a folder")
    assert not (blocker / "store").exists()


@pytest.mark.parametrize("how", ["env", "flag"])
def test_a_store_that_is_a_file_names_where_it_came_from(cli, tmp_path, how):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    args = ("history",) if how == "env" else ("history", "--store", str(blocker))
    result = cli(*args, env={"MESHPKI_STORE": str(blocker)} if how == "env" else {})
    assert result.exit_code == 2
    origin = "MESHPKI_STORE" if how == "env" else "--store"
    assert one_line_error(result) == f"Error: {origin} {blocker}: is a file, not a folder"


def test_days_capped_at_root_with_warning(cli):
    assert cli(*PLAIN_ROOT, "--days", "30").exit_code == 0
    result = cli("issue", "cluster1", "--days", "400")
    assert result.exit_code == 0, result.output
    assert "warning: cluster1: --days 400 would outlive the root" in result.output


def test_issue_json_and_san_dns(cli, store_path):
    assert cli(*PLAIN_ROOT).exit_code == 0
    result = cli("issue", "east", "--san-dns", "istiod.istio-system.svc", "--san-dns", "istiod.east.example",
                 "-o", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["clusters"][0]["cluster"] == "east"
    cert = parse_certs((store_path / "clusters" / "east" / "ca-cert.pem").read_bytes(), "x")[0]
    assert data["clusters"][0]["certificate"]["serial"] == format(cert.serial_number, "x")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc", "istiod.east.example"]


def test_fleet_file_defaults_and_cli_override(cli, store_path, tmp_path):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("defaults:\n  key_type: ecdsa-p384\n  days: 90\n  org: Acme\n"
                     "clusters:\n  - name: cluster1\n    context: kind-one\n")
    env = {"MESHPKI_CONFIG": str(fleet)}
    assert cli("init-root", "--insecure-no-passphrase", env=env).exit_code == 0
    root = parse_certs((store_path / "root" / "root-cert.pem").read_bytes(), "x")[0]
    assert root.public_key().curve.name == "secp384r1"
    assert "O=Acme" in root.subject.rfc4514_string()
    assert cli("issue", "cluster1", "--days", "10", env=env).exit_code == 0
    cert = parse_certs((store_path / "clusters" / "cluster1" / "ca-cert.pem").read_bytes(), "x")[0]
    assert 9 < (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 10


@pytest.mark.parametrize("content,needle", [
    ("defaults: [", "not valid YAML"), ("clusters:\n  - name: Bad_Name\n", "DNS-1123"),
    ("colour: blue\n", "unknown key"), ("defaults:\n  days: -1\n", "positive"),
])
def test_broken_fleet_file_is_a_usage_error(cli, tmp_path, content, needle):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text(content)
    result = cli(*PLAIN_ROOT, env={"MESHPKI_CONFIG": str(fleet)})
    assert result.exit_code == 2 and needle in one_line_error(result)


def test_samples_fleet_file_loads():
    from pathlib import Path

    from meshpki.config import load_fleet

    fleet = load_fleet(Path(__file__).parent.parent / "samples" / "mesh.yaml")
    assert [c.name for c in fleet.clusters] == ["cluster1", "cluster2"]
    assert fleet.cluster_for_context(fleet.clusters[0].context) == "cluster1"


def _all_commands(group, prefix=()):
    import click

    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, (*prefix, name))


def test_help_for_every_command(cli):
    import click

    from meshpki.cli import cli as group

    seen = []
    for path, command in _all_commands(group):
        seen.append(" ".join(path))
        result = cli(*path, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output
        assert command.help, f"{' '.join(path)} has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{' '.join(path)} {param.name} has no help"
    assert {"init-root", "issue", "verify", "push", "rotate", "rotate-root finish", "history"} <= set(seen)


def test_python_dash_m_and_version():
    done = subprocess.run([sys.executable, "-m", "meshpki", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "meshpki, version" in done.stdout


def test_demo_runs_end_to_end():
    done = subprocess.run([sys.executable, "-m", "meshpki", "demo", "--key-type", "ecdsa-p256"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "cluster1: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem" in done.stdout
    assert "cluster2:" in done.stdout
    assert "deleted the demo store" in done.stdout and "deleted when the demo ends" in done.stderr


def test_demo_keep_says_plainly_that_its_root_key_is_unencrypted(cli, tmp_path):
    kept = tmp_path / "demo"
    result = cli("demo", "--keep", str(kept), "--key-type", "ecdsa-p256")
    assert result.exit_code == 0, result.output
    assert "root key is NOT encrypted" in result.stdout and "UNENCRYPTED" in result.stderr
    assert "thrown away" not in result.output
    assert not is_encrypted_pem((kept / "root" / "root-key.pem").read_bytes())
    # its hint runs as printed, against the kept store (not the default one)
    [hint] = re.findall(r"`meshpki (push [^`]+)`", result.stdout)
    assert f"--store {kept}" in hint
    shown = cli(*hint.split(), env={"MESHPKI_STORE": str(tmp_path / "elsewhere")})
    assert shown.exit_code == 0 and "kind: Secret" in shown.stdout, shown.output


@pytest.mark.parametrize("args", [("rotate-root", "finish"), ("history", "prune", "--keep", "1"),
                                  ("complete", "cluster1", "."), ("rotate", "cluster1"), ("revoke", "cluster1"),
                                  ("crl", "renew"), ("crl", "export", "cluster1"), ("crl", "refresh", "cluster1", "f"),
                                  ("rotate-root", "begin"), ("change-passphrase",)])
def test_a_refusal_on_a_store_that_does_not_exist_leaves_no_folder(cli, store_path, args):
    result = cli(*args)
    assert "Traceback" not in result.output
    assert not store_path.exists(), f"{' '.join(args)} left {sorted(p.name for p in store_path.iterdir())}"
