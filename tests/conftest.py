"""Shared fixtures: a throw-away store, a CLI runner, and store snapshots."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshpki.store import Store
from tests.kubeapi import kube_api, kube_api_server, kubeconfig, kubeconfig_env  # noqa: F401  (fixtures)
from tests.softhsm import softhsm  # noqa: F401  (fixture)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test may read the developer's store, fleet file, kubeconfig or passphrase."""
    for var in ("MESHPKI_STORE", "MESHPKI_CONFIG", "MESHPKI_ROOT_PASSPHRASE", "MESHPKI_NEW_ROOT_PASSPHRASE",
                "MESHPKI_PKCS11_PIN", "MESHPKI_PKCS11_MODULE", "KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_path) -> Store:
    return Store(store_path)


@pytest.fixture
def cli(store_path):
    """Run meshpki in-process against the test's store; returns click's Result."""
    from meshpki.cli import cli as meshpki_cli

    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None):
        full_env = {"MESHPKI_STORE": str(store_path)}
        full_env.update(env or {})
        return runner.invoke(meshpki_cli, list(args), env=full_env, input=input, catch_exceptions=False)

    return run


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and folder below `folder` with its mode and bytes: 'unchanged' made exact."""
    result: dict[str, tuple[int, bytes]] = {}
    if not folder.exists():
        return result
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if rel == ".lock":
            continue  # the lock file's existence is not store content
        mode = stat.S_IMODE(path.lstat().st_mode)
        result[rel] = (mode, path.read_bytes() if path.is_file() else b"")
    return result


def one_line_error(result) -> str:
    """Assert the CLI failed with exactly one line and no traceback; return it."""
    out = result.output.strip()
    assert "Traceback" not in out, out
    assert len(out.splitlines()) == 1, out
    return out
