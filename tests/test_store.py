"""The store: layout, file modes, atomic publication, recovery, locking."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from meshpki import ca
from meshpki.bundle import FILES
from meshpki.errors import InputError, StoreError
from meshpki.keys import KeyType
from meshpki.store import Store, validate_cluster_name
from tests.conftest import one_line_error, snapshot


def make_store(store: Store, clusters=("cluster1",)) -> Store:
    ca.init_root(store, KeyType.ECDSA_P256, 3650, "Istio", "Root CA", passphrase=None)
    if clusters:
        ca.issue(store, list(clusters), ca.IssueOptions(), ca.store_issuer(store, None))
    return store


def test_layout_and_modes(store):
    make_store(store, ("cluster1", "cluster2"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    for folder in (store.root_dir, store.clusters_dir, store.cluster_dir("cluster1")):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((store.root_dir / "root-key.pem").stat().st_mode) == 0o600
    for cluster in ("cluster1", "cluster2"):
        folder = store.cluster_dir(cluster)
        assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
        assert stat.S_IMODE((folder / "ca-key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE((folder / "ca-cert.pem").stat().st_mode) == 0o644
    assert store.clusters() == ["cluster1", "cluster2"]


def test_root_key_never_in_a_cluster_folder(store):
    make_store(store, ("cluster1",))
    root_key = (store.root_dir / "root-key.pem").read_bytes()
    for path in store.clusters_dir.rglob("*"):
        if path.is_file():
            assert path.read_bytes() != root_key
            assert path.name != "root-key.pem"


def test_modes_hold_under_a_permissive_umask(store):
    old = os.umask(0)
    try:
        make_store(store)
    finally:
        os.umask(old)
    assert stat.S_IMODE((store.cluster_dir("cluster1") / "ca-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(store.cluster_dir("cluster1").stat().st_mode) == 0o700


@pytest.mark.parametrize("bad", ["../x", "/tmp/x", "Cluster_1", "", " ", "a b", "-a", "a-", "x" * 64, "a.b",
                                 "c5\n", "\nc5"])
def test_cluster_names_must_be_dns_labels(bad):
    with pytest.raises(InputError, match="DNS-1123"):
        validate_cluster_name(bad)


@pytest.mark.parametrize("good", ["cluster1", "a", "us-east-1", "x" * 63])
def test_good_cluster_names(good):
    assert validate_cluster_name(good) == good


def test_replace_archives_the_old_bundle(store):
    make_store(store)
    before = (store.cluster_dir("cluster1") / "ca-cert.pem").read_bytes()
    results = ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None), replace=True)
    assert results[0].archived is not None
    assert (results[0].archived / "ca-cert.pem").read_bytes() == before
    assert (store.cluster_dir("cluster1") / "ca-cert.pem").read_bytes() != before
    history = store.history("cluster1")
    assert [h.path for h in history] == [results[0].archived]
    # certificates only: a replaced intermediate is trusted until it expires, its key is not kept
    assert sorted(p.name for p in results[0].archived.iterdir()) == ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"]


def test_recovery_drops_keys_that_older_stores_archived(store):
    make_store(store)
    old = store.history_dir / "clusters" / "cluster1" / "20250101T000000Z"
    old.mkdir(parents=True)
    (old / "ca-cert.pem").write_bytes(b"cert")
    (old / "ca-key.pem").write_bytes(b"a plaintext key from an older meshpki")
    with store.locked():
        pass
    assert sorted(p.name for p in old.iterdir()) == ["ca-cert.pem"]


def test_replacing_a_bundle_with_a_folder_for_a_key_works_and_keeps_the_store_usable(cli, store):
    """`meshpki rotate` is the fix CRL commands name for a damaged bundle; a
    folder where ca-key.pem belongs used to fail the archive's key removal,
    and then every later command's recovery, with a traceback."""
    make_store(store, ("cluster1", "cluster2"))
    key = store.cluster_dir("cluster1") / "ca-key.pem"
    key.unlink()
    key.mkdir()
    result = cli("rotate", "cluster1")
    assert result.exit_code == 0, result.output
    [archived] = store.history("cluster1")
    assert sorted(p.name for p in archived.path.iterdir()) == ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"]
    assert cli("issue", "cluster3").exit_code == 0
    assert cli("verify").exit_code == 0


def test_prune_keeps_the_newest_entries_of_each_kind(store):
    make_store(store, ("cluster1", "cluster2"))
    for _ in range(3):
        ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None), replace=True)
    ca.issue(store, ["cluster2"], ca.IssueOptions(), ca.store_issuer(store, None), replace=True)
    newest = store.history("cluster1")[-1]
    removed = store.prune_history(keep=1)
    assert [e.name for e in removed] == ["cluster1", "cluster1"]
    assert store.history("cluster1") == [newest] and len(store.history("cluster2")) == 1
    assert store.prune_history(keep=0) and store.history() == []
    with pytest.raises(InputError, match="--keep"):
        store.prune_history(keep=-1)


def test_every_folder_and_the_lock_are_private_under_umask_000(tmp_path):
    store = Store(tmp_path / "made" / "by" / "meshpki" / "store")
    old = os.umask(0)
    try:
        make_store(store)
        ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None), replace=True)
    finally:
        os.umask(old)
    for folder in [tmp_path / "made", tmp_path / "made" / "by", *(p for p in (tmp_path / "made").rglob("*")
                                                                   if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((store.path / ".lock").stat().st_mode) == 0o600
    for key in store.path.rglob("*key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


@pytest.mark.parametrize("mode,who", [(0o770, "its group"), (0o707, "others"), (0o777, "its group and others")])
def test_a_store_others_may_write_is_refused(store, mode, who):
    make_store(store)
    os.chmod(store.path, mode)
    for attempt in (lambda s: s.load_bundle("cluster1"), lambda s: s.clusters(), lambda s: s.locked().__enter__()):
        with pytest.raises(StoreError) as err:
            attempt(Store(store.path))
        assert f"writable by {who}" in str(err.value) and f"chmod go-w {store.path}" in str(err.value)


@pytest.mark.parametrize("folder", ["root", "clusters", "clusters/cluster1", "rotation", "crl", "pending",
                                    "pending/cluster3", "signed", "signed/cluster3"])
def test_a_store_folder_others_may_write_is_refused(store, folder):
    make_store(store)
    for made in (store.path / folder.split("/")[0], store.path / folder):
        made.mkdir(mode=0o700, exist_ok=True)
    os.chmod(store.path / folder, 0o777)
    for attempt in (lambda s: s.clusters(), lambda s: s.root_cert_pem(), lambda s: s.locked().__enter__()):
        with pytest.raises(StoreError) as err:
            attempt(Store(store.path))
        assert f"store folder {store.path / folder} is writable by its group and others (mode 0777)" in str(err.value)
        assert f"chmod go-w {store.path / folder}" in str(err.value)


@pytest.mark.parametrize("key,mode,who", [
    ("clusters/cluster1/ca-key.pem", 0o644, "its group and others"),
    ("clusters/cluster1/ca-key.pem", 0o640, "its group"),
    ("root/root-key.pem", 0o604, "others"),
    ("pending/cluster3/ca-key.pem", 0o660, "its group"),
])
def test_a_key_others_may_read_is_refused(store, key, mode, who):
    make_store(store)
    path = store.path / key
    for folder in (path.parent.parent, path.parent):
        folder.mkdir(mode=0o700, exist_ok=True)
    if not path.exists():
        path.write_bytes(b"a pending key")
    os.chmod(path, mode)
    with pytest.raises(StoreError) as err:
        Store(store.path).clusters()
    assert f"private key {path} is open to {who} (mode {mode:04o}); run `chmod 600 {path}`" in str(err.value)


def test_verify_audit_and_push_notice_a_key_others_may_read(cli, store_path):
    for args in (("init-root", "--insecure-no-passphrase", "--key-type", "ecdsa-p256"), ("issue", "cluster1", "cluster2")):
        assert cli(*args).exit_code == 0
    key = store_path / "clusters" / "cluster1" / "ca-key.pem"
    os.chmod(key, 0o644)
    for args, code in ((("verify",), 1), (("audit",), 3), (("push", "cluster1", "--dry-run", "-o", "yaml"), 1)):
        result = cli(*args)
        assert result.exit_code == code, (args, result.output)
        assert f"run `chmod 600 {key}`" in one_line_error(result)
    os.chmod(key, 0o600)
    assert cli("verify").exit_code == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder owned by someone else needs root")
def test_a_store_someone_else_owns_is_refused(store):
    make_store(store)
    os.chown(store.path, 65534, 65534)
    with pytest.raises(StoreError, match="belongs to uid 65534, not to you"):
        Store(store.path).load_bundle("cluster1")


def test_a_store_path_that_is_a_file_or_under_one_says_so(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=f"store {blocker} is not a folder"):
        Store(blocker).clusters()
    with pytest.raises(StoreError, match=f"{blocker} is not a folder"):
        make_store(Store(blocker / "store"))


def test_existing_root_and_bundle_are_refused(store):
    make_store(store)
    with pytest.raises(StoreError, match="never overwritten"):
        ca.init_root(store, KeyType.ECDSA_P256, 10, "Istio", "Root CA", None)
    with pytest.raises(StoreError, match="--force"):
        ca.issue(store, ["cluster1"], ca.IssueOptions(), ca.store_issuer(store, None))


def test_recover_completes_a_ready_folder_and_drops_staging(store):
    make_store(store)
    target = store.cluster_dir("cluster1")
    ready = store.clusters_dir / ".ready-cluster2-abcd1234"
    os.rename(target, ready)  # as if killed after the commit point, before the swap
    staging = store.clusters_dir / ".staging-cluster3-deadbeef"
    staging.mkdir()
    (staging / "ca-cert.pem").write_bytes(b"half")
    notes = store.recover()
    assert store.has_cluster("cluster2") and not staging.exists()
    assert any("completed" in n for n in notes) and any("removed" in n for n in notes)


def test_recover_discards_ready_when_old_still_in_place(store):
    make_store(store)
    before = (store.cluster_dir("cluster1") / "ca-cert.pem").read_bytes()
    ready = store.clusters_dir / ".ready-cluster1-abcd1234"
    ready.mkdir()
    (ready / "ca-cert.pem").write_bytes(b"new but never swapped")
    store.recover()
    assert not ready.exists()
    assert (store.cluster_dir("cluster1") / "ca-cert.pem").read_bytes() == before


def test_threads_sharing_a_store_take_its_lock_in_turn(store):
    """push --all records pushes from several threads through one Store: a
    second thread must wait for the first, not slip in as if it re-entered
    (then a third thread's recovery deleted a file the second was writing)."""
    import threading

    make_store(store)
    order: list[str] = []
    inside, trying, leave = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with store.locked():
            order.append("first in")
            inside.set()
            leave.wait(10)
            order.append("first out")

    def second() -> None:
        inside.wait(10)
        trying.set()
        with store.locked():
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    trying.wait(10)
    time.sleep(0.2)  # room for a wrong second thread to get in; the order, not the time, is asserted
    leave.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first in", "first out", "second in"]
    with store.locked(), store.locked():  # the holding thread still re-enters
        pass


REPLACE_TWO_FILES = """
from pathlib import Path
base = Path(sys.argv[2])
publish.replace_files(base, {base / "a" / "key.pem": b"new a", base / "b" / "key.pem": b"new b"}, 0o600)
"""


def test_every_crash_point_of_replace_files_changes_all_or_none(tmp_path):
    """SIGKILL before each write step of publish.replace_files: after
    recover_files both files are old or both new, and nothing is left behind."""
    from meshpki import publish
    from tests.test_hardening import CRASH_PREAMBLE

    outcomes, n = set(), 0
    while True:
        n += 1
        base = tmp_path / f"run-{n}"
        for name in ("a", "b"):
            (base / name).mkdir(parents=True)
            (base / name / "key.pem").write_bytes(f"old {name}".encode())
        proc = subprocess.run([sys.executable, "-c", CRASH_PREAMBLE + REPLACE_TWO_FILES, str(n), str(base)],
                              capture_output=True, text=True, check=False)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
        publish.recover_files(base, [base / "a", base / "b"])
        publish.recover(base)  # the journal's own .tmp- file, as Store.recover does for the store folder
        contents = {(base / name / "key.pem").read_bytes() for name in ("a", "b")}
        assert contents in ({b"old a", b"old b"}, {b"new a", b"new b"}), (n, contents)
        assert sorted(p.name for p in base.rglob("*")) == ["a", "b", "key.pem", "key.pem"], n
        outcomes.add(min(contents)[:3])
        if proc.returncode == 0:
            break
    assert n >= 8 and outcomes == {b"old", b"new"}


def test_symlink_out_of_the_store_is_refused(store, tmp_path):
    make_store(store)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, store.clusters_dir / "evil")
    with pytest.raises(StoreError, match="symlink"):
        store.load_bundle("evil")
    with pytest.raises(StoreError, match="symlink"):
        store.write_bundle("evil", {"ca-cert.pem": b"x"}, replace=True)
    assert list(outside.iterdir()) == []


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from meshpki.store import Store
    with Store(sys.argv[1]).locked():
        print("locked", flush=True)
        time.sleep(60)
""")


def _hold_lock(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_clearly_then_a_dead_holder_frees_the_lock(store):
    make_store(store, ())
    proc = _hold_lock(store.path)
    try:
        impatient = Store(store.path, lock_timeout=0.3)
        with pytest.raises(StoreError, match="locked by another meshpki process"), impatient.locked():
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Store(store.path, lock_timeout=2).locked():  # a SIGKILLed holder leaves no stale lock
        pass


REWRITE_FOREVER = textwrap.dedent("""
    import sys
    from meshpki.store import Store
    store = Store(sys.argv[1])
    n = 0
    while True:
        n += 1
        gen = str(n).encode()
        files = {name: gen * 2000 for name in ("ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem")}
        with store.locked():
            store.write_bundle("cluster1", files, replace=True)
        if n == 1:
            print("started", flush=True)
""")


@pytest.mark.parametrize("delay", [0.05, 0.13, 0.21, 0.34])
def test_a_killed_writer_leaves_whole_bundles_only(store, delay):
    """SIGKILL a process that keeps replacing one bundle: after recovery the
    bundle is whole and every file is from the same generation, and so is
    every archived bundle."""
    proc = subprocess.Popen([sys.executable, "-c", REWRITE_FOREVER, str(store.path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with store.locked():  # recovery runs under the lock
        pass
    folders = [store.cluster_dir("cluster1")] + [h.path for h in store.history("cluster1")]
    for folder in folders:
        contents = {p.name: p.read_bytes() for p in folder.iterdir()}
        whole = FILES if folder == store.cluster_dir("cluster1") else [n for n in FILES if n != "ca-key.pem"]
        assert sorted(contents) == sorted(whole), folder
        assert len(set(contents.values())) == 1, f"mixed generations in {folder}"
    assert not list(store.clusters_dir.glob(".staging-*")) and not list(store.clusters_dir.glob(".ready-*"))


def test_a_reader_finishes_a_committed_write_a_killed_writer_left(store):
    """Killed after the commit point, before the swap: verify and push must
    see the new bundle, not report it missing until some writer comes by."""
    make_store(store)
    target = store.cluster_dir("cluster1")
    before = (target / "ca-cert.pem").read_bytes()
    os.rename(target, store.clusters_dir / ".ready-cluster1-0badf00d")
    reader = Store(store.path)
    assert reader.clusters() == ["cluster1"]
    assert reader.load_bundle("cluster1").ca_cert == before
    assert not list(store.clusters_dir.glob(".ready-*"))


def test_make_dir_accepts_a_folder_another_process_just_made(tmp_path):
    """Two first commands on a new store both find it missing; the slower mkdir must not fail."""
    from meshpki import publish

    folder = tmp_path / "raced"
    folder.mkdir()
    publish.make_dir(folder)  # already there: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError):
        publish.make_dir(tmp_path / "file")


def test_a_root_folder_without_its_certificate_is_damaged_not_missing(cli, store_path):
    env = {"MESHPKI_ROOT_PASSPHRASE": "correct horse battery staple"}
    assert cli("init-root", "--key-type", "ecdsa-p256", env=env).exit_code == 0
    (store_path / "root" / "root-cert.pem").unlink()
    before = snapshot(store_path)
    for args in (("issue", "cluster1"), ("init-root", "--key-type", "ecdsa-p256")):
        result = cli(*args, env=env)
        assert result.exit_code == 1
        line = one_line_error(result)
        assert "root-cert.pem is missing" in line and "restore root-cert.pem from a backup" in line
        assert "init-root` first" not in line and "generating" not in result.output
        assert snapshot(store_path) == before


# -- outputs the user names (--out, --textfile) never land in the store -----------------

@pytest.fixture
def base(cli, store_path, tmp_path):
    """The reviewer's setup: an ECDSA root and cluster1, cluster2; plus a CSR for cluster3."""
    for args in (("init-root", "--insecure-no-passphrase", "--key-type", "ecdsa-p256"), ("issue", "cluster1", "cluster2")):
        assert cli(*args).exit_code == 0
    request = tmp_path / "c3.csr"
    made = cli("csr", "cluster3", "--key-type", "ecdsa-p256", "--out", str(request),
               env={"MESHPKI_STORE": str(tmp_path / "site")})
    assert made.exit_code == 0, made.output
    return request


@pytest.mark.parametrize("args", [
    ("crl", "export", "cluster3", "--out", "{store}/root/root-cert.pem"),
    ("audit", "--textfile", "{store}/root/root-cert.pem"),
    ("csr", "cluster3", "--key-type", "ecdsa-p256", "--out", "{store}/root/root-cert.pem"),
    ("sign", "{csr}", "--out", "{store}/clusters/cluster3"),
    ("sign", "{csr}", "--out", "{store}"),
    ("export-root-key", "--out", "{store}/clusters/cluster1/x.pem"),
    ("csr", "cluster3", "--key-type", "ecdsa-p256", "--out", "{link}/root-cert.pem"),  # a symlink into the store
    ("audit", "--textfile", "{link}/../new.prom"),
])
def test_an_output_inside_the_store_is_refused_and_nothing_changes(cli, base, store_path, tmp_path, args):
    (tmp_path / "link").symlink_to(store_path / "root")
    before = snapshot(store_path)
    named = [a.format(store=store_path, csr=base, link=tmp_path / "link") for a in args]
    result = cli(*named, env={"MESHPKI_ROOT_PASSPHRASE": "never-asked-for-here"})
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert f"is inside the store {store_path}" in line and "name a path outside the store" in line
    assert ("(through a symlink)" in line) == ("{link}" in " ".join(args))
    assert snapshot(store_path) == before


def test_an_existing_file_outside_the_store_is_still_overwritten_like_a_redirection(cli, base, tmp_path):
    target = tmp_path / "again.csr"
    target.write_text("old")
    result = cli("csr", "cluster4", "--key-type", "ecdsa-p256", "--out", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes().startswith(b"-----BEGIN CERTIFICATE REQUEST-----")


# -- a failed output records nothing; a failed record leaves no output ------------------

def test_sign_whose_folder_cannot_be_written_records_nothing(cli, base, store_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = snapshot(store_path)
    result = cli("sign", str(base), "--out", str(blocker / "signed"))
    assert result.exit_code == 1
    assert "cannot write" in one_line_error(result) and "nothing was recorded" in result.output
    assert snapshot(store_path) == before  # no signed/cluster3 inventory for certificates nobody received
    assert cli("sign", str(base), "--out", str(tmp_path / "new" / "signed")).exit_code == 0


def test_sign_that_the_store_cannot_record_leaves_no_output(cli, base, store_path, tmp_path):
    (store_path / "signed").write_text("a file where the inventory folder belongs")
    out = tmp_path / "made" / "for" / "signed"
    result = cli("sign", str(base), "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "is not a folder" in one_line_error(result)
    assert not (tmp_path / "made").exists()  # neither the files nor the folders made for them


def test_csr_into_a_missing_folder_is_refused_before_a_key_is_made(cli, tmp_path):
    site = {"MESHPKI_STORE": str(tmp_path / "site")}
    result = cli("csr", "cluster3", "--key-type", "ecdsa-p256", "--out", str(tmp_path / "missing" / "x.csr"), env=site)
    assert result.exit_code == 2
    assert "is not a folder; create it first" in one_line_error(result)
    assert not (tmp_path / "site").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc, where no file can be made")
def test_csr_whose_request_cannot_be_written_keeps_no_pending_key(cli, tmp_path):
    site = {"MESHPKI_STORE": str(tmp_path / "site")}
    result = cli("csr", "cluster3", "--key-type", "ecdsa-p256", "--out", "/proc/cluster3.csr", env=site)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("Error: cannot write /proc/cluster3.csr")
    assert "nothing was recorded" in result.output
    assert not (tmp_path / "site").exists()  # a new site store that recorded nothing is not left behind
    retry = cli("csr", "cluster3", "--key-type", "ecdsa-p256", "--out", str(tmp_path / "x.csr"), env=site)
    assert retry.exit_code == 0, retry.output  # no "already pending; pass --force"


def test_csr_that_the_store_cannot_record_leaves_no_request(cli, tmp_path):
    site = tmp_path / "site"
    site.mkdir(mode=0o700)
    (site / "pending").write_text("a file where the pending folder belongs")
    out = tmp_path / "x.csr"
    result = cli("csr", "cluster3", "--key-type", "ecdsa-p256", "--out", str(out), env={"MESHPKI_STORE": str(site)})
    assert result.exit_code == 1, result.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
