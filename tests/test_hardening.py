"""Hardening: SIGKILL at bad moments, two meshpki processes on one store, hostile input.

The invariants, whatever happened before:
- every cluster folder holds exactly the four files, and they form a bundle
  verify accepts; every archived bundle too;
- a root present is root-cert.pem + root-key.pem, both parse, key matches;
- the next locked command recovers (no `.staging-*`, `.ready-*`, `.tmp-*`
  left) and works: the flock died with its holder;
- a cluster's `cacerts` secret is the old data or the new data, never a mix.

Kills are deterministic but varied: either at a fixed delay after start
(parametrized), or exactly before the n-th write step of the store
(every n, so every crash point of an atomic publication is visited).
Keys are ECDSA P-256, except RSA-3072 where a slow key widens a kill window.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpki import ca, checks
from meshpki import store as storemod
from meshpki.bundle import CA_CRL, FILES, load_folder, parse_certs, serial_hex
from meshpki.errors import MeshPKIError
from meshpki.keys import KeyType, load_private_key, public_keys_match
from meshpki.store import Store
from tests.conftest import one_line_error

PASSPHRASE = "correct horse battery staple"
MESHPKI = [sys.executable, "-m", "meshpki"]
LEFTOVER_PREFIXES = (".staging-", ".ready-", ".tmp-", ".next-", ".commit-")
ARCHIVED = tuple(name for name in FILES if name != "ca-key.pem")


# -- helpers -------------------------------------------------------------------

def make_store(path: Path, clusters=("cluster1",), passphrase: str | None = None) -> Store:
    store = Store(path)
    secret = passphrase.encode() if passphrase else None
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=secret)
    if clusters:
        ca.issue(store, list(clusters), ca.IssueOptions(), ca.store_issuer(store, secret))
    return store


def env_for(store_path: Path, **extra: str) -> dict[str, str]:
    """The test's isolated environment (conftest), pointed at one store, plus a
    tag that lets us find every process this run started, forked workers too."""
    env = dict(os.environ, MESHPKI_STORE=str(store_path), MESHPKI_HARDENING_TAG=uuid.uuid4().hex)
    env.update(extra)
    return env


def run_meshpki(args, env, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(MESHPKI + list(args), env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment carries `tag` (pool workers inherit it)."""
    needle = f"MESHPKI_HARDENING_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:  # a zombie is dead, just not yet reaped
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_no_orphans(tag: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes outlived a SIGKILLed meshpki: {left}"


def bundle_errors(folder: Path) -> list[str]:
    report = checks.check_bundle(load_folder(folder))
    return [f"{f.code}: {f.message}" for f in report.findings if f.severity == checks.Severity.ERROR]


def assert_store_sound(path: Path, passphrase: str | None = None) -> None:
    """Every root and bundle present (archived ones too) is whole and valid."""
    store = Store(path)
    for root in [store.root_dir, store.rotation_dir, *sorted((store.history_dir / "roots").glob("*"))]:
        if not root.exists():
            continue
        names = sorted(p.name for p in root.iterdir() if not p.name.startswith(".tmp-"))
        assert {"root-cert.pem", "root-key.pem"} <= set(names), f"partial root in {root}: {names}"
        cert = parse_certs((root / "root-cert.pem").read_bytes(), str(root))[0]
        key_pem = (root / "root-key.pem").read_bytes()
        key = load_private_key(key_pem, passphrase.encode() if passphrase else None)
        assert public_keys_match(key, cert.public_key()), f"root key does not match its cert in {root}"
    folders = [p for p in store.clusters_dir.iterdir() if not p.name.startswith(".")] \
        if store.clusters_dir.is_dir() else []
    for folder in folders:
        names = sorted(p.name for p in folder.iterdir() if p.name != CA_CRL)  # ca-crl.pem: optional
        assert names == sorted(FILES), f"not a whole bundle: {folder}"
        assert not bundle_errors(folder), (folder, bundle_errors(folder))
    for folder in sorted((store.history_dir / "clusters").glob("*/*")):  # archived: certificates, never the key
        names = sorted(p.name for p in folder.iterdir() if p.name != CA_CRL)
        assert names in (sorted(ARCHIVED), sorted(FILES)), f"not a whole archived bundle: {folder}"


def archived_form(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if name in ARCHIVED}


def leftovers(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob(".*") if p.name.startswith(LEFTOVER_PREFIXES))


def assert_recovers(path: Path) -> None:
    """The next locked command takes the lock at once and cleans up after the dead."""
    with Store(path, lock_timeout=5).locked():
        pass
    assert leftovers(path) == []
    assert list(path.glob("history/clusters/*/*/ca-key.pem")) == [], "a replaced key outlived recovery"


def bundle_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- SIGKILL at timed moments -----------------------------------------------------

@pytest.mark.parametrize("delay", [0.0, 0.3, 0.7])
def test_issue_killed_leaves_whole_bundles_and_no_orphan_workers(tmp_path, delay):
    """Three RSA-3072 keys are made in a process pool: SIGKILL the parent
    `delay` s after its workers appeared; no worker may live on."""
    store_path = tmp_path / "store"
    make_store(store_path, ())
    env = env_for(store_path)
    tag = env["MESHPKI_HARDENING_TAG"]
    proc = subprocess.Popen([*MESHPKI, "issue", "c1", "c2", "c3", "--key-type", "rsa-3072"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(tagged_processes(tag)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers_seen = len(tagged_processes(tag)) >= 2
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workers_seen, "issue never started its key-generation pool"
    assert_no_orphans(tag)
    assert_store_sound(store_path)
    assert_recovers(store_path)
    missing = [c for c in ("c1", "c2", "c3") if not Store(store_path).has_cluster(c)]
    if missing:
        result = run_meshpki(["issue", *missing], env)
        assert result.returncode == 0, result.stderr
    assert_store_sound(store_path)
    assert Store(store_path).clusters() == ["c1", "c2", "c3"]


# -- Ctrl-C ---------------------------------------------------------------------------

INTERRUPTED = "Error: interrupted; nothing half-written was left behind"


@pytest.mark.parametrize("delay", [0.0, 0.4, 1.0])
def test_ctrl_c_during_issue_ends_at_once_with_one_line(tmp_path, delay):
    """A real SIGINT to the process group, as a terminal sends it, while the
    workers make RSA-4096 keys: one line, no worker traceback, no worker left,
    whole bundles only. (A parent that waited on its workers would hang here.)"""
    store_path = tmp_path / "store"
    make_store(store_path, (), passphrase=PASSPHRASE)
    env = env_for(store_path, MESHPKI_ROOT_PASSPHRASE=PASSPHRASE)
    tag = env["MESHPKI_HARDENING_TAG"]
    clusters = ["c1", "c2", "c3", "c4", "c5", "c6"]
    proc = subprocess.Popen([*MESHPKI, "issue", *clusters, "--key-type", "rsa-4096", "--force"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while len(tagged_processes(tag)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "issue finished before its workers were seen"
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)  # generous for a loaded machine; a hang never ends
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail("issue hung after Ctrl-C")
    if proc.returncode == 0:  # all six keys were done before the signal landed
        assert Store(store_path).clusters() == clusters
    else:
        assert proc.returncode == 1 and err.strip().splitlines() == [INTERRUPTED], err
    assert_no_orphans(tag)
    assert_store_sound(store_path, PASSPHRASE)
    assert_recovers(store_path)


def _can_be_pid_1() -> bool:
    try:
        probe = subprocess.run(["unshare", "--fork", "--pid", sys.executable, "-c", "import os; print(os.getpid())"],
                               capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.stdout.strip() == "1"


@pytest.mark.skipif(not _can_be_pid_1(), reason="needs unshare and the right to make a PID namespace")
def test_issue_works_as_pid_1(tmp_path):
    """The sample container runs meshpki as PID 1: its key workers' parent is 1,
    which must not read as "the parent died"."""
    store_path = tmp_path / "store"
    make_store(store_path, ())
    result = subprocess.run(["unshare", "--fork", "--pid", *MESHPKI, "issue", "c1", "c2", "c3",
                             "--key-type", "rsa-3072"], env=env_for(store_path), capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert Store(store_path).clusters() == ["c1", "c2", "c3"]
    assert_store_sound(store_path)


# -- SIGKILL at every step of the store's atomic writes ------------------------------

# SIGKILLs the process just before write step argv[1] of publish.py (a file write,
# a directory fsync, or a rename); CRASH_AT_STEP then runs the CLI with argv[2:].
CRASH_PREAMBLE = textwrap.dedent("""
    import os, signal, sys
    from meshpki import publish

    crash_at, steps = int(sys.argv[1]), [0]

    def step():
        steps[0] += 1
        if steps[0] == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def counted(fn):
        def inner(*args, **kwargs):
            step()
            return fn(*args, **kwargs)
        return inner

    class CountingOS:
        def __getattr__(self, name):
            return getattr(os, name)
        rename = staticmethod(counted(os.rename))

    publish.write_file = counted(publish.write_file)
    publish.fsync_dir = counted(publish.fsync_dir)
    publish.os = CountingOS()
""")
CRASH_AT_STEP = CRASH_PREAMBLE + textwrap.dedent("""
    from meshpki.cli import main
    sys.argv = ["meshpki"] + sys.argv[2:]
    main()
""")


def crash_points(template: Path, args: list[str], check, **extra_env: str) -> int:
    """Run `args` on a fresh copy of `template`, crashing before step 1, 2, ...
    until a run completes; `check(store_path, crashed)` after each. Returns the
    number of crash points visited."""
    n = 0
    while True:
        n += 1
        assert n < 60, "the command never completed"
        store_path = template.parent / f"run-{n}"
        if template.exists():
            shutil.copytree(template, store_path, symlinks=True)
        proc = subprocess.run([sys.executable, "-c", CRASH_AT_STEP, str(n), *args],
                              env=env_for(store_path, **extra_env), capture_output=True, text=True, check=False)
        crashed = proc.returncode == -signal.SIGKILL
        assert crashed or proc.returncode == 0, proc.stderr
        check(store_path, crashed)
        shutil.rmtree(store_path)
        if not crashed:
            return n - 1


def test_every_crash_point_of_init_root(tmp_path):
    roots = set()

    def check(store_path: Path, crashed: bool) -> None:
        assert_store_sound(store_path)
        if store_path.exists():
            assert_recovers(store_path)
            assert_store_sound(store_path)
        roots.add(Store(store_path).has_root())

    visited = crash_points(tmp_path / "absent", ["init-root", "--insecure-no-passphrase", "--key-type",
                                                 "ecdsa-p256"], check)
    assert visited >= 5 and roots == {False, True}  # two files, fsync, the commit rename, the swap


def test_every_crash_point_of_rotate_keeps_old_or_new(tmp_path):
    template = tmp_path / "template"
    store = make_store(template, ("c1", "c2"))
    before = {c: bundle_bytes(store.cluster_dir(c)) for c in ("c1", "c2")}
    outcomes = set()

    def check(store_path: Path, crashed: bool) -> None:
        assert_store_sound(store_path)
        assert_recovers(store_path)
        assert_store_sound(store_path)
        run = Store(store_path)
        assert bundle_bytes(run.cluster_dir("c2")) == before["c2"] and run.history("c2") == []
        for cluster in ("c1",):
            now = bundle_bytes(run.cluster_dir(cluster))
            archived = [bundle_bytes(h.path) for h in run.history(cluster)]
            if now == before[cluster]:
                assert archived == [], "archived although not replaced"
                outcomes.add("old")
            else:
                assert archived == [archived_form(before[cluster])], "the replaced bundle must be in history, once"
                outcomes.add("new")

    visited = crash_points(template, ["rotate", "c1"], check)
    assert visited >= 8 and outcomes == {"old", "new"}  # 4 files, fsync, commit, archive, swap, fsyncs


# -- SIGKILL during push ------------------------------------------------------------

@pytest.mark.parametrize("existing,kill_at_request,offset", [
    (True, 1, 0.05),   # reading the live secret
    (True, 2, 0.05),   # the PUT is on the wire; the server applies it after its delay
    (True, 2, 0.35),   # the PUT has landed; reading it back
    (False, 2, 0.05),  # first push: the POST of the secret is on the wire
])
def test_push_killed_leaves_the_old_secret_or_the_new_one(tmp_path, kube_api, kubeconfig, existing,
                                                          kill_at_request, offset):
    """SIGKILL `meshpki push` at a chosen request (the virtual cluster answers
    each after 0.25 s): the secret is then the old data or the new, whole."""
    from meshpki import push as pushmod
    from meshpki.kube import SecretRef

    store_path = tmp_path / "store"
    store = make_store(store_path, ("cluster1",))
    target = SecretRef("cluster1", "cluster1", str(kubeconfig))
    vc = kube_api.cluster("cluster1")
    if existing:
        pushmod.push(store, target)
        ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None), replace=True)
    old = vc.get_secret("istio-system", "cacerts")
    new_data = dict(store.load_bundle("cluster1").secret_data())
    vc.delay = 0.25
    vc.clear_requests()
    proc = subprocess.Popen([*MESHPKI, "push", "cluster1", "--context", "cluster1"],
                            env=env_for(store_path, KUBECONFIG=str(kubeconfig)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(vc.requests) < kill_at_request and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, proc.communicate()
        assert len(vc.requests) >= kill_at_request, "push never reached that request"
        time.sleep(offset)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    time.sleep(0.3)  # the server finishes a request its dead client left behind
    live = vc.get_secret("istio-system", "cacerts")
    if live is None:
        assert old is None
    else:
        assert live["data"] in ([old["data"]] if old else []) + [new_data], "a mix of old and new files"
    vc.delay = 0
    pushmod.push(store, target)  # and the next push goes through
    assert vc.get_secret("istio-system", "cacerts")["data"] == new_data


# Many threads reading clusters at once in a process that has not imported the
# kubernetes client yet: what `meshpki audit` does on its first connects.
FRESH_FAN_OUT = textwrap.dedent("""
    import concurrent.futures, sys
    from meshpki import kube

    kubeconfig, contexts = sys.argv[1], sys.argv[2:]

    def read(ctx):
        with kube.Cluster.connect(ctx, kubeconfig) as cluster:
            return cluster.read_secret("istio-system", "cacerts") is not None

    with concurrent.futures.ThreadPoolExecutor(len(contexts)) as pool:
        print(sum(pool.map(read, contexts)))
""")


def test_threads_connecting_at_once_in_a_fresh_process(tmp_path, kube_api):
    """Two races in the kubernetes client, both hit every time before kube.py
    serialized them: its first import from several threads (_DeadlockError),
    and its temp file for a shared certificate-authority-data, named before it
    is written (TLS: no certificate found)."""
    names = [f"c{i}" for i in range(24)]
    for name in names:
        kube_api.cluster(name).put_secret("istio-system", "cacerts", {"ca-cert.pem": b"x"})
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", {n: (n, "admin-token") for n in names})
    proc = subprocess.run([sys.executable, "-c", FRESH_FAN_OUT, str(kubeconfig), *names], env=env_for(tmp_path),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(len(names))


# -- two meshpki processes on one store ------------------------------------------

def start(args, env) -> subprocess.Popen:
    return subprocess.Popen(MESHPKI + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_issues_for_different_clusters_both_succeed(tmp_path):
    store_path = tmp_path / "store"
    make_store(store_path, ())
    env = env_for(store_path)
    procs = [start(["issue", name, "--key-type", "rsa-3072"], env) for name in ("c1", "c2")]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    assert Store(store_path).clusters() == ["c1", "c2"]
    assert_store_sound(store_path)
    assert leftovers(store_path) == []


def test_two_issues_for_one_cluster_exactly_one_wins(tmp_path):
    store_path = tmp_path / "store"
    make_store(store_path, ())
    env = env_for(store_path)
    procs = [start(["issue", "c1", "--key-type", "rsa-3072", "-o", "json"], env) for _ in range(2)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 1], results
    winner = next(r for r in results if r[0] == 0)
    loser = next(r for r in results if r[0] == 1)
    lines = loser[2].strip().splitlines()
    assert len(lines) == 1 and "already has a bundle" in lines[0] and "Traceback" not in loser[2], loser[2]
    serial = json.loads(winner[1])["clusters"][0]["certificate"]["serial"]
    cert = parse_certs((store_path / "clusters" / "c1" / "ca-cert.pem").read_bytes(), "c1")[0]
    assert serial_hex(cert) == serial  # the bundle on disk is the winner's
    assert_store_sound(store_path)


def test_two_init_roots_one_root(tmp_path):
    store_path = tmp_path / "store"
    env = env_for(store_path)
    procs = [start(["init-root", "--insecure-no-passphrase", "--key-type", "ecdsa-p256"], env) for _ in range(2)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    assert sorted(r[0] for r in results) == [0, 1], results
    loser = next(r for r in results if r[0] == 1)
    errors = [line for line in loser[2].splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "already has a root CA" in errors[0] and "Traceback" not in loser[2], loser[2]
    assert_store_sound(store_path)


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from meshpki.store import Store
    with Store(sys.argv[1]).locked():
        print("locked", flush=True)
        time.sleep(60)
""")


def test_a_held_lock_gives_one_clear_line(tmp_path, cli, store_path, monkeypatch):
    make_store(store_path, ())
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(store_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(storemod, "LOCK_TIMEOUT_SECONDS", 0.3)  # the CLI's lock timeout, shortened
        before = sorted(p.name for p in (store_path).iterdir())
        result = cli("issue", "c1", "--key-type", "ecdsa-p256")
        assert result.exit_code == 1
        assert "locked by another meshpki process" in one_line_error(result)
        assert sorted(p.name for p in store_path.iterdir()) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = cli("issue", "c1", "--key-type", "ecdsa-p256")  # the dead holder's lock is gone
    assert result.exit_code == 0, result.output


# -- bad input: fuzzing ------------------------------------------------------------

_SAMPLE: dict[str, dict[str, bytes]] = {}


def sample_bundle() -> dict[str, bytes]:
    """One valid bundle (both forms), made once per session."""
    if not _SAMPLE:
        with tempfile.TemporaryDirectory() as tmp:
            store = make_store(Path(tmp) / "store", ("cluster1",))
            files = dict(store.load_bundle("cluster1").secret_data())
        _SAMPLE["files"] = files
        _SAMPLE["tls"] = {"tls.crt": files["ca-cert.pem"], "tls.key": files["ca-key.pem"],
                          "ca.crt": files["root-cert.pem"]}
    return _SAMPLE


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """Random bytes, or the file cut, bit-flipped, spliced, or re-armored."""
    kind = draw(st.sampled_from(["random", "truncate", "flip", "insert", "armor", "repeat", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=3000))
    if kind == "empty" or not original:
        return b""
    pos = draw(st.integers(0, len(original) - 1))
    if kind == "truncate":
        return original[:pos]
    if kind == "flip":
        return original[:pos] + bytes([original[pos] ^ draw(st.integers(1, 255))]) + original[pos + 1:]
    if kind == "insert":
        return original[:pos] + draw(st.binary(min_size=1, max_size=64)) + original[pos:]
    if kind == "repeat":
        return original + original[:pos]
    label = draw(st.sampled_from(["CERTIFICATE", "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY",
                                  "ENCRYPTED PRIVATE KEY", "X509 CRL"]))
    body = base64.encodebytes(draw(st.binary(max_size=600))).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


@st.composite
def damaged_bundle(draw) -> dict[str, bytes]:
    form = draw(st.sampled_from(["files", "tls"]))
    files = dict(sample_bundle()[form])
    name = draw(st.sampled_from(sorted(files)))
    files[name] = draw(damaged(files[name]))
    if draw(st.booleans()):  # sometimes a second file too
        other = draw(st.sampled_from(sorted(files)))
        files[other] = draw(damaged(files[other]))
    return files


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=damaged_bundle())
def test_fuzz_loading_and_checking_never_raises(files):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "bundle", files)
        bundle = load_folder(folder)
        report = checks.check_bundle(bundle)  # must report findings, never raise
    assert all(f.code and f.message for f in report.findings)
    if report.ok:
        assert not any(f.severity == checks.Severity.ERROR for f in report.findings)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=damaged_bundle())
def test_fuzz_verify_cli_never_prints_a_traceback(cli, files):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "bundle", files)
        result = cli("verify", str(folder))  # catch_exceptions=False: an exception fails the test
    assert result.exit_code in (0, 1), result.output
    assert "Traceback" not in result.output


# -- bad input: a corpus ------------------------------------------------------------

def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip().startswith("error ")]


def _binary(folder: Path) -> str:
    (folder / "ca-cert.pem").write_bytes(bytes(range(256)) * 8)
    return "unparsable"


def _huge(folder: Path) -> str:
    pem = (folder / "ca-cert.pem").read_bytes()
    (folder / "ca-cert.pem").write_bytes(pem + b"\n" * (5 * 1024 * 1024))
    return "unreadable"


def _directory(folder: Path) -> str:
    (folder / "ca-key.pem").unlink()
    (folder / "ca-key.pem").mkdir()
    return "unreadable"


def _dangling(folder: Path) -> str:
    (folder / "root-cert.pem").unlink()
    os.symlink(folder / "nowhere.pem", folder / "root-cert.pem")
    return "missing-file"


def _text(folder: Path) -> str:
    (folder / "cert-chain.pem").write_text("this is not a certificate\n" * 50)
    return "unparsable"


@pytest.mark.parametrize("damage", [_binary, _huge, _directory, _dangling, _text])
def test_bad_files_give_one_clear_finding_and_exit_1(tmp_path, cli, damage):
    folder = write_folder(tmp_path / "bundle", sample_bundle()["files"])
    code = damage(folder)
    result = cli("verify", str(folder))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and code in lines[0], result.output
    if damage is _huge:
        assert "too large" in lines[0]


def test_a_fifo_is_refused_without_blocking(tmp_path):
    folder = write_folder(tmp_path / "bundle", sample_bundle()["files"])
    (folder / "ca-cert.pem").unlink()
    os.mkfifo(folder / "ca-cert.pem")  # opening it would block forever
    result = run_meshpki(["verify", str(folder)], env_for(tmp_path / "store"), timeout=30)
    assert result.returncode == 1
    lines = error_lines(result.stdout)
    assert len(lines) == 1 and "unreadable" in lines[0] and "not a regular file" in lines[0], result.stdout


# Drop the capabilities that let root read any file, then run the CLI: root's
# chmod 000 is no obstacle otherwise. Not root: nothing to drop.
WITHOUT_DAC = textwrap.dedent("""
    import ctypes, sys
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) == 0:
        data[0].effective &= ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        libc.capset(ctypes.byref(header), data)
    from meshpki.cli import main
    sys.argv = ["meshpki"] + sys.argv[1:]
    main()
""")


def test_an_unreadable_file_is_one_clear_finding(tmp_path):
    """chmod 000 under a root that may not override file permissions (EACCES)."""
    store_path = tmp_path / "store"
    store = make_store(store_path, ("cluster1",))
    key = store.cluster_dir("cluster1") / "ca-key.pem"
    key.chmod(0)
    proc = subprocess.run([sys.executable, "-c", WITHOUT_DAC, "verify", "cluster1"], env=env_for(store_path),
                          capture_output=True, text=True, check=False, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = error_lines(proc.stdout)
    assert len(lines) == 1 and "unreadable" in lines[0] and "ermission denied" in lines[0], proc.stdout
    proc = subprocess.run([sys.executable, "-c", WITHOUT_DAC, "push", "cluster1", "--dry-run", "-o", "yaml"],
                          env=env_for(store_path), capture_output=True, text=True, check=False,
                          timeout=30)
    assert proc.returncode == 1 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "unreadable" in proc.stderr, proc.stderr


@pytest.mark.parametrize("where", ["cluster-folder", "bundle-file", "root-key"])
def test_symlinks_out_of_the_store_are_refused(tmp_path, cli, store_path, where):
    store = make_store(store_path, ("cluster1",))
    outside = tmp_path / "outside"
    write_folder(outside, sample_bundle()["files"])
    (outside / "root-key.pem").write_bytes(b"not the store's key")
    if where == "cluster-folder":
        os.symlink(outside, store.clusters_dir / "evil")
        commands = [("verify", "evil"), ("verify",), ("push", "evil", "--dry-run", "-o", "yaml"),
                    ("issue", "evil", "--force")]
    elif where == "bundle-file":
        key = store.cluster_dir("cluster1") / "ca-key.pem"
        key.unlink()
        os.symlink(outside / "ca-key.pem", key)
        commands = [("verify", "cluster1"), ("push", "cluster1", "--dry-run", "-o", "yaml"), ("rotate", "cluster1")]
    else:
        key = store.root_dir / "root-key.pem"
        key.unlink()
        os.symlink(outside / "root-key.pem", key)
        commands = [("issue", "cluster2"), ("rotate", "cluster1")]
    for args in commands:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "symlink" in one_line_error(result), (args, result.output)
    assert sorted(p.name for p in outside.iterdir()) == sorted([*FILES, "root-key.pem"])  # nothing written there


# -- the root key at rest ------------------------------------------------------------

def test_root_key_at_rest_is_pbes2_scrypt_aes256(tmp_path):
    """What the README promises: PKCS#8 PBES2, scrypt N=2^17 r=8 p=1, AES-256-CBC."""
    from pyasn1.codec.der import decoder
    from pyasn1_alt_modules import rfc3565, rfc5208, rfc7914, rfc8018

    from meshpki.errors import PassphraseError

    store = make_store(tmp_path / "store", (), passphrase=PASSPHRASE)
    pem = (store.root_dir / "root-key.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    der = base64.b64decode(b"".join(pem.strip().splitlines()[1:-1]))
    info, _ = decoder.decode(der, asn1Spec=rfc5208.EncryptedPrivateKeyInfo())
    assert info["encryptionAlgorithm"]["algorithm"] == rfc8018.id_PBES2
    pbes2, _ = decoder.decode(info["encryptionAlgorithm"]["parameters"], asn1Spec=rfc8018.PBES2_params())
    assert pbes2["keyDerivationFunc"]["algorithm"] == rfc7914.id_scrypt
    kdf, _ = decoder.decode(pbes2["keyDerivationFunc"]["parameters"], asn1Spec=rfc7914.Scrypt_params())
    assert (int(kdf["costParameter"]), int(kdf["blockSize"]), int(kdf["parallelizationParameter"])) == (2**17, 8, 1)
    assert len(bytes(kdf["salt"])) == 16
    assert pbes2["encryptionScheme"]["algorithm"] == rfc3565.id_aes256_CBC
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        store.load_root_key(b"wrong")
    with pytest.raises(MeshPKIError, match="encrypted"):
        store.load_root_key(None)
    assert public_keys_match(store.load_root_key(PASSPHRASE.encode()), store.root_cert().public_key())
    assert stat.S_IMODE((store.root_dir / "root-key.pem").stat().st_mode) == 0o600
