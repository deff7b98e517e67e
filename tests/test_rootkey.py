"""export-root-key (checked with the openssl CLI) and change-passphrase."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from meshpki import keys
from meshpki.store import ROOT_KEY_FILE, Store
from tests.conftest import one_line_error, snapshot
from tests.softhsm import SoftHSM

FAST = ("--key-type", "ecdsa-p256")
OLD = "the old root passphrase"
NEW = "a brand new root passphrase"

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


def openssl_opens(path, passphrase: str, tmp_path) -> subprocess.CompletedProcess:
    pw = tmp_path / "openssl-pw"
    pw.write_text(passphrase + "\n")
    return subprocess.run(["openssl", "pkey", "-in", str(path), "-passin", f"file:{pw}", "-pubout"],
                          capture_output=True, text=True)


@needs_openssl
def test_export_opens_with_openssl_and_matches_the_root(cli, store_path, tmp_path):
    assert cli("init-root", *FAST, env={"MESHPKI_ROOT_PASSPHRASE": OLD}).exit_code == 0
    store_scrypt = openssl_opens(store_path / "root" / ROOT_KEY_FILE, OLD, tmp_path)
    out = tmp_path / "exported.pem"
    result = cli("export-root-key", "--out", str(out), env={"MESHPKI_ROOT_PASSPHRASE": OLD})
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "keep it offline" in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    opened = openssl_opens(out, OLD, tmp_path)
    assert opened.returncode == 0, opened.stderr
    root = Store(store_path).root_cert()
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    assert opened.stdout.encode() == root.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert openssl_opens(out, "not the passphrase", tmp_path).returncode != 0
    parsed = subprocess.run(["openssl", "asn1parse", "-in", str(out)], capture_output=True, text=True).stdout
    assert "PBKDF2" in parsed and "hmacWithSHA256" in parsed and "aes-256-cbc" in parsed
    rounds = keys.PBKDF2_ITERATIONS.to_bytes((keys.PBKDF2_ITERATIONS.bit_length() + 7) // 8, "big").hex().upper()
    assert f"INTEGER:{rounds}" in parsed.replace(" ", "")
    # the reason the export exists: the store's own scrypt file is not one OpenSSL opens with default limits
    assert store_scrypt.returncode != 0


def test_export_refuses_to_overwrite_and_wrong_passphrase(cli, store_path, tmp_path):
    assert cli("init-root", *FAST, env={"MESHPKI_ROOT_PASSPHRASE": OLD}).exit_code == 0
    out = tmp_path / "exists.pem"
    out.write_text("precious")
    refused = cli("export-root-key", "--out", str(out), env={"MESHPKI_ROOT_PASSPHRASE": OLD})
    assert refused.exit_code == 2 and "never overwrites" in one_line_error(refused)
    assert out.read_text() == "precious"
    fresh = tmp_path / "fresh.pem"
    wrong = cli("export-root-key", "--out", str(fresh), env={"MESHPKI_ROOT_PASSPHRASE": "wrong passphrase!"})
    assert wrong.exit_code == 1 and "wrong passphrase" in one_line_error(wrong)
    assert not fresh.exists() and not list(tmp_path.glob(".fresh.pem.tmp-*"))


@needs_openssl
def test_export_of_an_unencrypted_root_needs_a_passphrase(cli, store_path, tmp_path):
    assert cli("init-root", *FAST, "--insecure-no-passphrase").exit_code == 0
    out = tmp_path / "k.pem"
    refused = cli("export-root-key", "--out", str(out))
    assert refused.exit_code == 1 and "MESHPKI_ROOT_PASSPHRASE" in one_line_error(refused)
    assert cli("export-root-key", "--out", str(out), env={"MESHPKI_ROOT_PASSPHRASE": NEW}).exit_code == 0
    assert openssl_opens(out, NEW, tmp_path).returncode == 0


def test_export_refuses_a_token_root(cli, store_path, softhsm: SoftHSM, tmp_path):
    made = cli("init-root", "--pkcs11", softhsm.uri(f"export-{tmp_path.name}"), *FAST, env=softhsm.env())
    assert made.exit_code == 0, made.output
    out = tmp_path / "k.pem"
    refused = cli("export-root-key", "--out", str(out))  # no PIN given: refused before any is asked for
    line = one_line_error(refused)
    assert refused.exit_code == 1 and "PKCS#11 token" in line and "cannot be exported" in line
    assert not out.exists()
    changed = cli("change-passphrase", env={"MESHPKI_NEW_ROOT_PASSPHRASE": NEW})
    assert changed.exit_code == 1 and "PIN" in one_line_error(changed)


def test_change_passphrase(cli, store_path, tmp_path):
    assert cli("init-root", *FAST, env={"MESHPKI_ROOT_PASSPHRASE": OLD}).exit_code == 0
    assert cli("issue", "cluster1", env={"MESHPKI_ROOT_PASSPHRASE": OLD}).exit_code == 0
    root_before = (store_path / "root" / "root-cert.pem").read_bytes()
    new_file = tmp_path / "new"
    new_file.write_text(NEW + "\n")
    changed = cli("change-passphrase", "--new-passphrase-file", str(new_file), env={"MESHPKI_ROOT_PASSPHRASE": OLD})
    assert changed.exit_code == 0, changed.output
    key_file = store_path / "root" / ROOT_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert keys.is_encrypted_pem(key_file.read_bytes())
    assert (store_path / "root" / "root-cert.pem").read_bytes() == root_before
    assert not list((store_path / "root").glob(".tmp-*"))
    old_fails = cli("issue", "cluster2", env={"MESHPKI_ROOT_PASSPHRASE": OLD})
    assert old_fails.exit_code == 1 and "wrong passphrase" in one_line_error(old_fails)
    assert cli("issue", "cluster2", env={"MESHPKI_ROOT_PASSPHRASE": NEW}).exit_code == 0


@pytest.mark.parametrize(("env", "needle", "code"), [
    ({"MESHPKI_ROOT_PASSPHRASE": "wrong passphrase!", "MESHPKI_NEW_ROOT_PASSPHRASE": NEW}, "wrong passphrase", 1),
    ({"MESHPKI_ROOT_PASSPHRASE": OLD, "MESHPKI_NEW_ROOT_PASSPHRASE": "too short"}, "at least 12 characters", 2),
    ({"MESHPKI_ROOT_PASSPHRASE": OLD}, "MESHPKI_NEW_ROOT_PASSPHRASE", 1),
])
def test_change_passphrase_refusals_write_nothing(cli, store_path, env, needle, code):
    assert cli("init-root", *FAST, env={"MESHPKI_ROOT_PASSPHRASE": OLD}).exit_code == 0
    before = snapshot(store_path)
    result = cli("change-passphrase", env=env)
    assert result.exit_code == code and needle in one_line_error(result)
    assert snapshot(store_path) == before


def test_change_passphrase_during_rotation_takes_the_new_root_along(cli, store_path):
    env = {"MESHPKI_ROOT_PASSPHRASE": OLD}
    assert cli("init-root", *FAST, env=env).exit_code == 0
    assert cli("issue", "cluster1", env=env).exit_code == 0
    assert cli("rotate-root", "begin", env=env).exit_code == 0
    changed = cli("change-passphrase", env={**env, "MESHPKI_NEW_ROOT_PASSPHRASE": NEW})
    assert changed.exit_code == 0, changed.output
    assert "rotation/root-key.pem" in changed.output
    assert cli("rotate-root", "reissue", env={"MESHPKI_ROOT_PASSPHRASE": NEW}).exit_code == 0
    assert cli("rotate-root", "finish", "--force").exit_code == 0
    assert cli("issue", "cluster2", env={"MESHPKI_ROOT_PASSPHRASE": NEW}).exit_code == 0


def test_change_passphrase_killed_after_its_commit_point_is_finished_by_the_next_command(cli, store_path,
                                                                                        monkeypatch):
    """During a rotation both root keys share the passphrase and change together
    (publish.replace_files; its every crash point: tests/test_store.py). Killed
    right after the commit point, neither key is in place yet; the next command
    that takes the lock puts both in, so both open with the new passphrase."""
    from meshpki import publish, rootkey

    env = {"MESHPKI_ROOT_PASSPHRASE": OLD}
    assert cli("init-root", *FAST, env=env).exit_code == 0
    assert cli("rotate-root", "begin", env=env).exit_code == 0
    monkeypatch.setattr(publish, "_finish", lambda journal: None)  # the process dies here
    rootkey.change_passphrase(Store(store_path), OLD.encode(), NEW.encode())
    monkeypatch.undo()
    assert {_passphrase_of(store_path / f / ROOT_KEY_FILE) for f in ("root", "rotation")} == {OLD}
    assert cli("rotate-root", "status").exit_code == 0  # any command taking the lock recovers
    assert {_passphrase_of(store_path / f / ROOT_KEY_FILE) for f in ("root", "rotation")} == {NEW}
    assert not list(store_path.rglob(".next-*")) and not list(store_path.glob(".commit-*"))


def _passphrase_of(path) -> str | None:
    for passphrase in (OLD, NEW):
        try:
            keys.load_private_key(path.read_bytes(), passphrase.encode())
        except Exception:
            continue
        return passphrase
    return None


def test_rotate_root_begin_with_its_own_passphrase(cli, store_path, tmp_path):
    """Root B may get a new passphrase; while the rotation runs each root opens with its own."""
    env = {"MESHPKI_ROOT_PASSPHRASE": OLD}
    assert cli("init-root", *FAST, env=env).exit_code == 0
    assert cli("issue", "cluster1", env=env).exit_code == 0
    assert cli("rotate", "cluster1", "--revoke-previous", env=env).exit_code == 0  # CRLs: both roots will sign
    short = cli("rotate-root", "begin", env={**env, "MESHPKI_NEW_ROOT_PASSPHRASE": "short"})
    assert short.exit_code == 2 and "at least 12" in one_line_error(short)
    begun = cli("rotate-root", "begin", env={**env, "MESHPKI_NEW_ROOT_PASSPHRASE": NEW})
    assert begun.exit_code == 0, begun.output
    both = {**env, "MESHPKI_NEW_ROOT_PASSPHRASE": NEW}
    assert cli("crl", "renew", env=both).exit_code == 0
    assert cli("rotate-root", "reissue", env=both).exit_code == 0
    assert cli("issue", "cluster2", env={"MESHPKI_ROOT_PASSPHRASE": NEW}).exit_code == 0
    assert cli("rotate-root", "finish", "--force").exit_code == 0
    assert cli("rotate", "cluster1", env={"MESHPKI_ROOT_PASSPHRASE": NEW}).exit_code == 0


def test_a_swapped_root_key_is_refused_by_every_use_alike(cli, store_path, tmp_path):
    """Another store's key under the same passphrase decrypts fine: only the
    match with root-cert.pem tells it apart, and every command must check it."""
    env = {"MESHPKI_ROOT_PASSPHRASE": OLD}
    other = tmp_path / "other"
    for store in (store_path, other):
        assert cli("init-root", *FAST, env={**env, "MESHPKI_STORE": str(store)}).exit_code == 0
    assert cli("issue", "cluster1", env=env).exit_code == 0
    shutil.copy(other / "root" / ROOT_KEY_FILE, store_path / "root" / ROOT_KEY_FILE)
    before = snapshot(store_path)
    for args in (("issue", "cluster2"), ("rotate", "cluster1"), ("revoke", "cluster1"),
                 ("export-root-key", "--out", str(tmp_path / "out.pem")), ("change-passphrase",),
                 ("rotate-root", "begin")):
        result = cli(*args, env={**env, "MESHPKI_NEW_ROOT_PASSPHRASE": NEW})
        assert result.exit_code == 1, (args, result.output)
        assert "is not the key of" in one_line_error(result) and "restore both from a backup" in result.output
        assert snapshot(store_path) == before
    assert not (tmp_path / "out.pem").exists()


GARBAGE_BLOCK = b"-----BEGIN GARBAGE-----\nZ2FyYmFnZQ==\n-----END GARBAGE-----\n"


@pytest.mark.parametrize("args", [("issue", "cluster3"), ("rotate", "cluster1"), ("revoke", "cluster1"),
                                  ("export-root-key", "--out", "{tmp}/exported.pem"), ("change-passphrase",)])
def test_a_root_key_file_with_more_than_its_key_is_refused_and_kept(cli, store_path, tmp_path, args):
    env = {"MESHPKI_ROOT_PASSPHRASE": OLD, "MESHPKI_NEW_ROOT_PASSPHRASE": NEW}
    for setup in (("init-root", *FAST), ("issue", "cluster1")):
        assert cli(*setup, env=env).exit_code == 0
    key = store_path / "root" / ROOT_KEY_FILE
    key.write_bytes(key.read_bytes() + GARBAGE_BLOCK)  # cryptography alone would read the first block and go on
    before = snapshot(store_path)
    result = cli(*(a.format(tmp=tmp_path) for a in args), env=env)
    assert result.exit_code == 1, result.output
    assert f"{key} holds 2 PEM blocks, not one private key (block 2 is a GARBAGE)" in one_line_error(result)
    assert snapshot(store_path) == before  # change-passphrase no longer rewrites the file without the block
    assert not (tmp_path / "exported.pem").exists()
