"""A real SoftHSM2 token for tests, in a temporary folder of its own.

SoftHSM2 reads SOFTHSM2_CONF once, when a process first initialises the
module, and python-pkcs11 keeps the module loaded: so one configuration and
one token folder serve the whole test session, set up before any test loads
the module. Tests that need a differently configured module (mechanisms
switched off) run meshpki in a subprocess with their own SOFTHSM2_CONF.

Without softhsm2 (Debian package `softhsm2`) or python-pkcs11 (`meshpki[hsm]`)
every test using the `softhsm` fixture is skipped with the reason shown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/local/lib/softhsm/libsofthsm2.so")
TOKEN = "meshpki"
PIN = "2468-test-pin"
SO_PIN = "so-pin-1357"


@dataclass(frozen=True)
class SoftHSM:
    module: str
    conf: Path
    token_dir: Path
    token: str = TOKEN
    pin: str = PIN

    def uri(self, label: str, **extra: str) -> str:
        tail = "".join(f";{k}={v}" for k, v in extra.items())
        return f"pkcs11:token={self.token};object={label}{tail}"

    def env(self, **more: str) -> dict[str, str]:
        """What a user sets: the module and the PIN (the PIN never goes on a command line)."""
        return {"MESHPKI_PKCS11_MODULE": self.module, "MESHPKI_PKCS11_PIN": self.pin, **more}

    def conf_with(self, folder: Path, *lines: str) -> Path:
        """Another configuration over the same tokens (for a subprocess), e.g. fewer mechanisms."""
        path = folder / "softhsm2-restricted.conf"
        path.write_text(self.conf.read_text() + "".join(f"{line}\n" for line in lines))
        return path


def find_module() -> str | None:
    return next((m for m in MODULE_CANDIDATES if os.path.isfile(m)), None)


def skip_reason() -> str | None:
    if shutil.which("softhsm2-util") is None or find_module() is None:
        return "SoftHSM2 is not installed (Debian: apt-get install softhsm2); PKCS#11 tests skipped"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install 'meshpki[hsm]'); PKCS#11 tests skipped"
    return None


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("softhsm")
    tokens = folder / "tokens"
    tokens.mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
                    "slots.removable = false\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", SO_PIN],
                   check=True, capture_output=True)
    try:
        yield SoftHSM(find_module() or "", conf, tokens)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
