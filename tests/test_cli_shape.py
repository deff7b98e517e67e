"""The CLI's shape: one-line usage errors, fleet file defaults, and the layering
(only the cli package imports click; only it and render.py import render)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from meshpki.bundle import parse_certs

PACKAGE = Path(__file__).parent.parent / "meshpki"
PLAIN_ROOT = ("init-root", "--key-type", "ecdsa-p256", "--insecure-no-passphrase")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("module", sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                                           if p.parent.name != "cli"))
def test_only_the_cli_imports_click_and_render(module):
    imports = _imports(PACKAGE / module)
    assert not any(name == "click" or name.startswith("click.") for name in imports), module
    if module != "render.py":
        assert "meshpki.render" not in imports, f"{module} imports render; render imports domain types instead"


def test_fleet_file_fills_defaults_per_command(cli, store_path, tmp_path):
    """root_days goes to the root's --days, days to the intermediates'; the
    command line wins over the fleet file, which wins over the built-in default."""
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text("defaults:\n  key_type: ecdsa-p256\n  root_days: 400\n  days: 90\n"
                     "  namespace: mesh-ca\n  secret_name: plugged\n")
    env = {"MESHPKI_CONFIG": str(fleet)}
    assert cli("init-root", "--insecure-no-passphrase", env=env).exit_code == 0
    root = parse_certs((store_path / "root" / "root-cert.pem").read_bytes(), "x")[0]
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days == 400
    assert cli("issue", "cluster1", "cluster2", env=env).exit_code == 0
    cert = parse_certs((store_path / "clusters" / "cluster1" / "ca-cert.pem").read_bytes(), "x")[0]
    assert 89 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 90
    # no cluster is reachable: the manifest still prints, placed where the fleet file says
    offline = {**env, "KUBECONFIG": str(tmp_path / "none")}
    manifest = yaml.safe_load(cli("push", "cluster1", "--dry-run", "-o", "yaml", env=offline).stdout)
    assert (manifest["metadata"]["namespace"], manifest["metadata"]["name"]) == ("mesh-ca", "plugged")
    flag = cli("push", "cluster1", "--dry-run", "-o", "json", "--namespace", "other", env=offline)
    assert json.loads(flag.stdout)["metadata"] == {**manifest["metadata"], "namespace": "other"}
    without = cli("push", "cluster1", "--dry-run", "-o", "json", env={"KUBECONFIG": str(tmp_path / "none")})
    assert json.loads(without.stdout)["metadata"]["namespace"] == "istio-system"


def test_config_on_the_command_line_beats_the_environment(cli, store_path, tmp_path):
    (tmp_path / "env.yaml").write_text("defaults:\n  root_days: 100\n")
    (tmp_path / "flag.yaml").write_text("defaults:\n  root_days: 200\n")
    result = cli(*PLAIN_ROOT, "--config", str(tmp_path / "flag.yaml"),
                 env={"MESHPKI_CONFIG": str(tmp_path / "env.yaml")})
    assert result.exit_code == 0, result.output
    root = parse_certs((store_path / "root" / "root-cert.pem").read_bytes(), "x")[0]
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days == 200
