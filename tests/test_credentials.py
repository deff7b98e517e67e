"""Root secrets: where they come from, how long a new one must be, and that no
child process (a kubeconfig exec credential plugin) ever sees them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshpki import credentials
from tests.conftest import one_line_error, snapshot
from tests.kubeapi import ADMIN_TOKEN, Context
from tests.terminal import on_a_terminal

REPO = Path(__file__).resolve().parent.parent
FAST = ("--key-type", "ecdsa-p256")
GOOD = "a passphrase long enough"

# A kubeconfig exec credential plugin that writes down the environment it was given.
PLUGIN = """
import json, os, sys
with open(sys.argv[1], "w") as out:
    json.dump(dict(os.environ), out)
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": sys.argv[2]}}))
"""


@pytest.mark.parametrize("where", ["env", "file"])
def test_short_new_passphrase_is_a_usage_error_and_writes_nothing(cli, store_path, tmp_path, where):
    short = "eleven char"
    assert len(short) == credentials.MIN_PASSPHRASE_CHARS - 1
    if where == "env":
        result = cli("init-root", *FAST, env={"MESHPKI_ROOT_PASSPHRASE": short})
    else:
        pw = tmp_path / "pw"
        pw.write_text(short + "\n")
        result = cli("init-root", *FAST, "--passphrase-file", str(pw))
    assert result.exit_code == 2 and "at least 12 characters" in one_line_error(result)
    assert snapshot(store_path) == {}
    assert cli("init-root", *FAST, env={"MESHPKI_ROOT_PASSPHRASE": short + "!"}).exit_code == 0


def test_an_existing_short_passphrase_still_unlocks(cli, store_path):
    """The length rule is for new passphrases: a store made before it keeps working."""
    from meshpki import ca
    from meshpki.keys import KeyType
    from meshpki.store import Store

    ca.init_root(Store(store_path), KeyType.ECDSA_P256, 30, "Istio", "Root CA", passphrase=b"old-short")
    assert cli("issue", "cluster1", env={"MESHPKI_ROOT_PASSPHRASE": "old-short"}).exit_code == 0


def test_take_from_environ_removes_only_secrets():
    environ = {"MESHPKI_ROOT_PASSPHRASE": "p", "MESHPKI_PKCS11_PIN": "1", "MESHPKI_STORE": "/s", "HOME": "/h"}
    taken = credentials.take_from_environ(environ)
    assert taken == {"MESHPKI_ROOT_PASSPHRASE": "p", "MESHPKI_PKCS11_PIN": "1"}
    assert environ == {"MESHPKI_STORE": "/s", "HOME": "/h"}


def test_exec_credential_plugin_never_sees_root_secrets(store_path, kube_api, tmp_path):
    """push runs the kubeconfig's exec plugin; the passphrase and PIN were taken out before."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHPKI_")}
    env.update(PYTHONPATH=str(REPO), MESHPKI_STORE=str(store_path), MESHPKI_ROOT_PASSPHRASE=GOOD,
               MESHPKI_NEW_ROOT_PASSPHRASE=GOOD + " too", MESHPKI_PKCS11_PIN="1234-pin",
               MARKER_FOR_THE_PLUGIN="visible")

    def meshpki(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "meshpki", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    assert meshpki("init-root", *FAST).returncode == 0
    assert meshpki("issue", "cluster1").returncode == 0
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    dump = tmp_path / "plugin-env.json"
    doc = kube_api.kubeconfig_dict({"cluster1": Context("cluster1")})
    doc["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                        "command": sys.executable, "args": [str(plugin), str(dump), ADMIN_TOKEN],
                                        "interactiveMode": "Never"}}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(doc))
    pushed = meshpki("push", "cluster1", "--context", "cluster1", "--kubeconfig", str(kubeconfig))
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    seen = json.loads(dump.read_text())
    assert seen.get("MARKER_FOR_THE_PLUGIN") == "visible", "the plugin ran with meshpki's environment"
    assert not set(credentials.SECRET_VARS) & set(seen), sorted(set(credentials.SECRET_VARS) & set(seen))
    assert GOOD not in json.dumps(seen) and "1234-pin" not in json.dumps(seen)


def test_passphrase_prompts_on_a_terminal_never_echo_and_a_mismatch_asks_again(store_path):
    env = {"MESHPKI_STORE": str(store_path)}
    other = "another passphrase typed"
    code, screen = on_a_terminal(["init-root", *FAST], env, [GOOD, other, GOOD, GOOD])
    assert code == 0, screen
    assert screen.count("Passphrase for the new root key") == 2 and "do not match" in screen
    assert GOOD not in screen and other not in screen
    code, screen = on_a_terminal(["issue", "cluster1"], env, [GOOD])
    assert code == 0, screen
    assert "Root key passphrase" in screen and GOOD not in screen
