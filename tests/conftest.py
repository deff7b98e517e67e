"""Shared fixtures: a throw-away store, a CLI runner, and store snapshots."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import freezegun
import pytest
from click.testing import CliRunner

from meshpki.store import Store
from tests.kubeapi import STANDARD_CONTEXTS, KubeAPIServer
from tests.softhsm import softhsm  # noqa: F401  (fixture)

# freezegun scans every loaded module's attributes when time is frozen; on
# kubernetes.client that getattr triggers lazy imports of hundreds of pydantic
# models, built while datetime is FakeDatetime -> PydanticSchemaGenerationError
# in any freezegun test that runs after a Kubernetes test. Keep it out.
freezegun.configure(extend_ignore_list=["kubernetes"])


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


# -- the Kubernetes API test server (tests/kubeapi.py) ---------------------------

@pytest.fixture(scope="session")
def kube_api_server() -> Iterator[KubeAPIServer]:
    """One HTTPS server for the whole session; stopped (threads ended) at exit."""
    server = KubeAPIServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kube_api(kube_api_server: KubeAPIServer) -> KubeAPIServer:
    """The session server with no virtual clusters: each test starts fresh."""
    kube_api_server.reset()
    return kube_api_server


@pytest.fixture
def kubeconfig(kube_api: KubeAPIServer, tmp_path: Path) -> Path:
    """A kubeconfig file with the standard contexts (current: cluster1):
    cluster1, cluster2 (separate virtual clusters, admin token); readonly
    (cluster1, read-only token); badtoken (cluster1, 401); badca (cluster1,
    wrong CA); down (connection refused)."""
    return kube_api.write_kubeconfig(tmp_path / "kubeconfig", STANDARD_CONTEXTS, current="cluster1")


@pytest.fixture
def kubeconfig_env(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`kubeconfig`, also set as KUBECONFIG (for code that uses the default)."""
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return kubeconfig
