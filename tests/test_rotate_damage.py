"""rotate-root on a damaged store: every step proves what it needs before its first
write, so a refusal is one line, exit 1, the store byte for byte as it was, and
`rotate-root status` tells the same story as before."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from meshpki import ca, keys, profiles, rotate
from meshpki.bundle import cert_to_pem, fingerprint
from meshpki.errors import StoreError
from meshpki.keys import KeyType
from meshpki.store import Store
from tests.conftest import one_line_error, snapshot

PASSPHRASE = "correct horse battery staple"
ENV = {"MESHPKI_ROOT_PASSPHRASE": PASSPHRASE}
ROTATION_DAMAGED = "the store is damaged: restore rotation/ from a backup"


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """`base` (init-root + issue cluster1 cluster2), `begun` and `reissued`, made once (scrypt is slow)."""
    made = {}
    secret = PASSPHRASE.encode()
    for phase in ("base", "begun", "reissued"):
        path = tmp_path_factory.mktemp("templates") / phase
        store = Store(path)
        ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=secret)
        ca.issue(store, ["cluster1", "cluster2"], ca.IssueOptions(), ca.store_issuer(store, secret))
        if phase != "base":
            rotate.begin(store, None, 3650, secret)
        if phase == "reissued":
            rotate.reissue(store, [], ca.IssueOptions(), secret)
        made[phase] = path
    return made


@pytest.fixture
def at(templates, store_path) -> Callable[[str], Path]:
    """The test's store as a copy of one template."""
    def copy(phase: str) -> Path:
        shutil.copytree(templates[phase], store_path, symlinks=True)
        return store_path
    return copy


def status(cli) -> str:
    return cli("rotate-root", "status", "-o", "json").output


def refused(cli, store_path: Path, *args: str) -> str:
    """Run a step that must refuse; prove it changed nothing and return its one line."""
    before, told = snapshot(store_path), status(cli)
    result = cli(*args, env=ENV)
    assert result.exit_code == 1, result.output
    line = one_line_error(result)
    assert snapshot(store_path) == before, f"{args} changed the store"
    assert status(cli) == told
    return line


def _missing(path: Path) -> None:
    path.unlink()


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _cut_off(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _not_pem(path: Path) -> None:
    path.write_bytes(b"not a certificate\n")


def _other_key(path: Path) -> None:
    other = "cluster2" if path.parent.name == "cluster1" else "cluster1"
    path.write_bytes((path.parent.parent / other / path.name).read_bytes())


BUNDLE_DAMAGE = [
    ("root-cert.pem", _missing), ("root-cert.pem", _directory), ("root-cert.pem", _not_pem),
    ("ca-cert.pem", _missing), ("ca-cert.pem", _empty), ("ca-cert.pem", _directory),
    ("ca-key.pem", _missing), ("ca-key.pem", _empty), ("ca-key.pem", _other_key),
    ("cert-chain.pem", _cut_off),
]
BUNDLE_IDS = [f"{name}-{damage.__name__.strip('_')}" for name, damage in BUNDLE_DAMAGE]


def names_the_fix(line: str, cluster: str, file: str) -> None:
    assert f"{cluster}: {file}" in line, line
    assert f"meshpki issue {cluster} --force" in line and f"meshpki verify {cluster}" in line, line


# -- 1. every bundle a step rewrites is whole, before anything is made ------------

@pytest.mark.parametrize("file,damage", BUNDLE_DAMAGE, ids=BUNDLE_IDS)
def test_begin_refuses_a_broken_bundle_before_making_the_new_root(cli, at, file, damage):
    store_path = at("base")
    damage(store_path / "clusters" / "cluster1" / file)
    line = refused(cli, store_path, "rotate-root", "begin")
    names_the_fix(line, "cluster1", file)
    assert not (store_path / "rotation").exists()
    assert json.loads(status(cli))["phase"] == "none"


def test_begin_resumed_refuses_a_broken_bundle(cli, at):
    store_path = at("begun")
    _missing(store_path / "clusters" / "cluster2" / "ca-key.pem")
    names_the_fix(refused(cli, store_path, "rotate-root", "begin"), "cluster2", "ca-key.pem")
    assert json.loads(status(cli))["phase"] == "trusting-both"


def test_reissue_refuses_a_broken_target_and_leaves_the_rest_to_do(cli, at):
    store_path = at("begun")
    _other_key(store_path / "clusters" / "cluster1" / "ca-key.pem")
    names_the_fix(refused(cli, store_path, "rotate-root", "reissue"), "cluster1", "ca-key.pem")
    names_the_fix(refused(cli, store_path, "rotate-root", "reissue", "cluster1"), "cluster1", "ca-key.pem")
    # a whole cluster is not held back by another's damage, and the way out named works
    assert cli("rotate-root", "reissue", "cluster2", env=ENV).exit_code == 0
    assert cli("issue", "cluster1", "--force", env=ENV).exit_code == 0
    assert json.loads(status(cli))["phase"] == "grace"


@pytest.mark.parametrize("file,damage", BUNDLE_DAMAGE, ids=BUNDLE_IDS)
def test_finish_refuses_a_broken_bundle_before_narrowing_any(cli, at, file, damage):
    store_path = at("reissued")
    damage(store_path / "clusters" / "cluster2" / file)
    names_the_fix(refused(cli, store_path, "rotate-root", "finish", "--force"), "cluster2", file)


# -- 2. finish proves root B and its key record before the first write -----------

@pytest.mark.parametrize("damage", [_missing, _empty, _not_pem, _cut_off], ids=lambda d: d.__name__.strip("_"))
def test_finish_refuses_a_broken_new_root_key_record(cli, at, damage):
    store_path = at("reissued")
    damage(store_path / "rotation" / "root-key.pem")
    line = refused(cli, store_path, "rotate-root", "finish", "--force")
    assert "rotation/root-key.pem" in line and line.endswith(ROTATION_DAMAGED), line


def edit_state(store_path: Path, **changes: object) -> None:
    path = store_path / "rotation" / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_finish_refuses_a_new_root_that_is_no_ca(cli, at):
    store_path = at("reissued")
    key = KeyType.ECDSA_P256.generate()
    not_ca = profiles.make_workload(Store(store_path).root_cert(), key, key)
    (store_path / "rotation" / "root-cert.pem").write_bytes(cert_to_pem(not_ca))
    edit_state(store_path, new_root_sha256=fingerprint(not_ca))  # it agrees: only the CA check is left
    line = refused(cli, store_path, "rotate-root", "finish", "--force")
    assert "not a CA certificate" in line and line.endswith(ROTATION_DAMAGED), line


# -- 3. rotation/ contradicting its state.json ----------------------------------

def _old_root_over_new(store_path: Path) -> None:
    shutil.copy(store_path / "root" / "root-cert.pem", store_path / "rotation" / "root-cert.pem")


def _another_root_over_new(store_path: Path) -> None:
    key = KeyType.ECDSA_P256.generate()
    (store_path / "rotation" / "root-cert.pem").write_bytes(cert_to_pem(profiles.make_root(key, 3650)))


def _extra_root_after_new(store_path: Path) -> None:
    with open(store_path / "rotation" / "root-cert.pem", "ab") as out:
        out.write((store_path / "root" / "root-cert.pem").read_bytes())


def _new_root_missing(store_path: Path) -> None:
    (store_path / "rotation" / "root-cert.pem").unlink()


def _state_missing(store_path: Path) -> None:
    (store_path / "rotation" / "state.json").unlink()


ROTATION_DAMAGE = [_old_root_over_new, _another_root_over_new, _extra_root_after_new, _new_root_missing,
                   _state_missing]
STEPS = [("rotate-root", "begin"), ("rotate-root", "reissue"), ("rotate-root", "finish", "--force"),
         ("rotate-root", "status"), ("issue", "cluster3")]


@pytest.mark.parametrize("phase", ["begun", "reissued"])
@pytest.mark.parametrize("damage", ROTATION_DAMAGE, ids=lambda d: d.__name__.strip("_"))
def test_every_step_refuses_a_rotation_that_contradicts_its_state(cli, at, phase, damage):
    store_path = at(phase)
    damage(store_path)
    before = snapshot(store_path)
    for step in STEPS:
        result = cli(*step, env=ENV)
        assert result.exit_code == 1, (step, result.output)
        assert one_line_error(result).endswith(ROTATION_DAMAGED), (step, result.output)
    assert snapshot(store_path) == before


def test_a_root_that_is_neither_of_the_rotation_is_refused(cli, at):
    store_path = at("begun")
    other = Path(str(store_path) + "-other")
    ca.init_root(Store(other), KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    shutil.copy(other / "root" / "root-cert.pem", store_path / "root" / "root-cert.pem")
    line = refused(cli, store_path, "rotate-root", "finish", "--force")
    assert "restore root/ and rotation/ from a backup" in line


@pytest.mark.parametrize("changes", [{"last_reissue": "soon"}, {"last_reissue": "2026-01-10T12:00:00"},
                                     {"last_push": 5}, {"new_root_sha256": None}])
def test_a_damaged_state_is_one_line(cli, at, changes):
    store_path = at("reissued")
    edit_state(store_path, **changes)
    assert "rotation state is damaged" in refused(cli, store_path, "rotate-root", "finish", "--force")


def test_finish_refuses_a_plain_new_root_key_that_is_not_b(store):
    """A plain key (a root made with --insecure-no-passphrase) is opened and matched before finish uses it."""
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None))
    rotate.begin(store, None, 3650, None)
    rotate.reissue(store, [], ca.IssueOptions(), None)
    (store.rotation_dir / "root-key.pem").write_bytes(keys.to_pem(KeyType.ECDSA_P256.generate()))
    before = snapshot(store.path)
    with pytest.raises(StoreError, match=r"is not the key of .*restore both from a backup"):
        rotate.finish(store, force=True)
    assert snapshot(store.path) == before


def test_finish_refuses_a_token_record_that_is_no_uri(cli, at):
    store_path = at("reissued")
    (store_path / "rotation" / "root-key.pem").unlink()
    (store_path / "rotation" / "root-key.pkcs11").write_text("not a token\n")
    line = refused(cli, store_path, "rotate-root", "finish", "--force")
    assert line.endswith(ROTATION_DAMAGED), line
