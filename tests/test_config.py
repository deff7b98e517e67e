"""The fleet file (config.py) as a new user meets it: whatever is wrong in it
is one line that names the file and the entry, exit 2, and nothing is written."""

from __future__ import annotations

import pytest

from tests.conftest import one_line_error, snapshot

PLAIN_ROOT = ("init-root", "--key-type", "ecdsa-p256", "--insecure-no-passphrase")


@pytest.mark.parametrize("content,needles", [
    ('clusters:\n  - name: "Bad_Name!"\n', ["clusters[0]", "'Bad_Name!'", "DNS-1123"]),
    ("clusters:\n  - name: east\n  - name: Bad\n", ["clusters[1]", "'Bad'", "DNS-1123"]),
    ("clusters:\n  - name: east\n    context: [a, b]\n", ["clusters[0] (name 'east')", "`context`", "list"]),
    ("clusters:\n  - name: east\n    contxt: east\n", ["clusters[0] (name 'east')", "unknown key(s) contxt"]),
    ("clusters:\n  - name: east\n    kubeconfig: 7\n", ["clusters[0] (name 'east')", "`kubeconfig`", "int"]),
    ("clusters:\n  - name: 5\n", ["clusters[0]", "`name`", "quote it"]),
    ("clusters:\n  - east\n", ["clusters[0] needs `name: CLUSTER`"]),
    ("clusters:\n  - name:\n", ["clusters[0]", "invalid cluster name ''"]),
    ("clusters:\n  east: {}\n", ["`clusters` must be a list"]),
    ("clusters:\n  - name: east\n  - name: east\n", ["'east' appears twice"]),
    ("clusters:\n  - name: east\n    remotes: west\n", ["clusters[0] (name 'east')", "`remotes`"]),
    ("clusters:\n  - name: east\n    remotes: [west]\n", ["east.remotes names 'west'"]),
    ("defaults:\n  key_type: dsa\n", ["defaults:", "'dsa'"]),
    ("defaults:\n  org: " + "o" * 70 + "\n", ["defaults:", "`org` is 70 characters"]),
    ("defaults:\n  days: 3000000\n", ["defaults:", "`days` 3000000 is more than 30 years"]),
    ("defaults:\n  root_days: x\n", ["defaults:", "`root_days` must be a positive whole number"]),
    ("defaults:\n  trust_domain: A B\n", ["defaults:", "not a SPIFFE trust domain"]),
    ("defaults:\n  namespace: [istio-system]\n", ["defaults:", "`namespace`"]),
    ("defaults:\n  colour: blue\n", ["unknown default(s) colour"]),
    ("defaults: [1]\n", ["`defaults` must be a mapping"]),
])
@pytest.mark.parametrize("command", [PLAIN_ROOT, ("verify",)])
def test_a_bad_fleet_file_is_one_line_naming_the_file_and_the_entry(cli, store_path, tmp_path, content, needles,
                                                                    command):
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text(content)
    result = cli(*command, "--config", str(fleet))
    line = one_line_error(result)
    assert result.exit_code == 2
    assert line.startswith(f"Error: fleet file {fleet}: "), line
    for needle in needles:
        assert needle in line, line
    assert not store_path.exists(), "nothing written, not even a store folder"


def test_a_bad_fleet_file_from_the_environment_names_the_file_too(cli, store_path, tmp_path):
    assert cli(*PLAIN_ROOT).exit_code == 0
    before = snapshot(store_path)
    fleet = tmp_path / "mesh.yaml"
    fleet.write_text('clusters:\n  - name: "Bad_Name!"\n')
    result = cli("issue", "east", env={"MESHPKI_CONFIG": str(fleet)})
    assert result.exit_code == 2
    assert f"fleet file {fleet}: clusters[0]" in one_line_error(result)
    assert snapshot(store_path) == before
