"""Atomic publication: a file or a whole folder is replaced in one step, or not at all.

This is the mechanism under store.py (which owns the layout: what goes
where). A folder is written into a hidden `.staging-*` sibling, fsynced and
renamed to `.ready-*`: from that commit point on the new folder wins. The
swap then moves the old folder to its archive and
renames the new one into place. If the process dies at any step,
`recover()` under the same lock finishes the swap or discards the
leftovers, so a reader finds the old folder or the new one, never a mix and
never a half-written file.

Files in different folders that must change together (both root keys of a
rotation, re-encrypted under a new passphrase) go through `replace_files`:
each is staged as `.next-*` beside its target, then one journal naming them
all is renamed into place (the commit point); `recover_files()` finishes a
journal a killed writer left, or drops staged files no journal names.

Everything here raises OSError; the caller turns it into a message.
Modes are set with fchmod/chmod after creation, so a permissive umask
(even 000) cannot loosen them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
STAGING = ".staging-"
READY = ".ready-"
TMP = ".tmp-"
NEXT = ".next-"  # a file staged by replace_files
JOURNAL = ".commit-"  # replace_files' commit record
LEFTOVER_PREFIXES = (STAGING, READY, TMP, NEXT, JOURNAL)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` (never through a symlink, never over an existing file), write, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # umask must not loosen or tighten what we asked for
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path: Path, mode: int = PRIVATE_DIR_MODE) -> None:
    """mkdir with exactly `mode`, whatever the umask. A folder another meshpki
    made in the meantime is fine (two first commands racing on a new store);
    its mode is the store's permission check's business."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if path.is_dir() and not path.is_symlink():
            return
        raise
    os.chmod(path, mode, follow_symlinks=False)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Replace one file atomically: a hidden `.tmp-*` beside it (never matched by
    readers' globs), fsynced, renamed over it. Raises OSError; the temp file is gone."""
    tmp = path.parent / f"{TMP}{path.name}-{secrets.token_hex(4)}"
    try:
        write_file(tmp, data, mode)
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def written_on_success(files: Mapping[Path, bytes], mode: int, make_parents: bool = False) -> Iterator[None]:
    """Files for the user (a CSR, signed certificates) that must exist only if the
    work in the `with` block succeeds: each is written and fsynced beside its target
    first (proving it can be written), renamed into place after the block, and
    removed, with the folders made for it, if the block fails. Raises OSError."""
    token = secrets.token_hex(4)
    staged: dict[Path, Path] = {}
    made: list[Path] = []
    try:
        for target, data in files.items():
            if make_parents:
                missing = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
                for folder in reversed(missing):
                    folder.mkdir()
                    made.append(folder)
            staged[target] = target.parent / f"{TMP}{target.name}-{token}"
            write_file(staged[target], data, mode)
        yield
        for target, tmp in staged.items():
            os.rename(tmp, target)
        for folder in {t.parent for t in staged}:
            fsync_dir(folder)
        made.clear()
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            with suppress(OSError):
                folder.rmdir()


def replace_files(journal_dir: Path, files: Mapping[Path, bytes], mode: int) -> None:
    """Replace several files, in any folders, as one: all or none of them change,
    whenever the process dies. Raises OSError; before the commit point nothing is
    left behind, after it the files are (or recover_files() puts them) in place."""
    token = secrets.token_hex(4)
    staged = {target: target.parent / f"{NEXT}{target.name}-{token}" for target in files}
    journal = journal_dir / f"{JOURNAL}{token}.json"
    record = [[os.path.relpath(staged[t], journal_dir), os.path.relpath(t, journal_dir)] for t in files]
    try:
        for target, data in files.items():
            write_file(staged[target], data, mode)
        for folder in {t.parent for t in files}:
            fsync_dir(folder)
        replace_file(journal, json.dumps(record).encode(), 0o600)  # the commit point
    except OSError:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise
    _finish(journal)


def _finish(journal: Path) -> None:
    """Rename every staged file a journal names into place, then drop the journal."""
    for staged, target in json.loads(journal.read_bytes()):
        source = journal.parent / staged
        if source.exists():  # else renamed before a kill
            os.rename(source, journal.parent / target)
            fsync_dir((journal.parent / target).parent)
    journal.unlink()
    fsync_dir(journal.parent)


def recover_files(journal_dir: Path, folders: list[Path]) -> list[str]:
    """Finish the replace_files a killed writer committed; drop what it staged
    in `folders` before its commit point. Returns what was done."""
    notes = []
    for journal in sorted(journal_dir.glob(f"{JOURNAL}*.json")):
        _finish(journal)
        notes.append("completed an interrupted replacement of several files")
    for folder in folders:
        for leftover in sorted(folder.glob(f"{NEXT}*")) if folder.is_dir() else []:
            leftover.unlink(missing_ok=True)
    return notes


def unique_stamp(folder: Path, now: dt.datetime | None = None) -> str:
    """A UTC timestamp naming a new entry of `folder`, suffixed -2, -3 ... if taken."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = stamp, 1
    while (folder / candidate).exists():
        n += 1
        candidate = f"{stamp}-{n}"
    return candidate


def stage(target: Path, files: Mapping[str, bytes], mode_of: Callable[[str], int]) -> Path:
    """Write `files` beside `target` as a complete `.ready-*` folder: the commit point.

    The parent folder must exist. On failure nothing is left behind.
    """
    token = secrets.token_hex(4)
    staging = target.parent / f"{STAGING}{target.name}-{token}"
    ready = target.parent / f"{READY}{target.name}-{token}"
    try:
        make_dir(staging)
        for name, data in files.items():
            write_file(staging / name, data, mode_of(name))
        fsync_dir(staging)
        os.rename(staging, ready)  # the commit point: from here on the new folder wins
        fsync_dir(target.parent)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ready


def swap_in(target: Path, ready: Path, archive_to: Path | None,
            after_archive: Callable[[Path], object] | None = None) -> Path | None:
    """Put a staged folder in place of `target`; the old one goes to `archive_to/<stamp>`.

    `after_archive(path)` may then trim the archived copy (recover() must be able
    to finish that trimming too, since a kill can fall between the two).
    Without `archive_to` an existing target is refused: nothing is lost silently.
    """
    archived = None
    if target.exists():
        if archive_to is None:
            shutil.rmtree(ready, ignore_errors=True)
            raise FileExistsError(f"{target} exists and would be lost")
        archived = archive_to / unique_stamp(archive_to)
        os.rename(target, archived)
    os.rename(ready, target)
    fsync_dir(target.parent)
    if archived is not None:
        fsync_dir(archived.parent)
        if after_archive is not None:
            after_archive(archived)
    return archived


def publish(target: Path, files: Mapping[str, bytes], mode_of: Callable[[str], int],
            archive_to: Path | None = None, after_archive: Callable[[Path], object] | None = None) -> Path | None:
    """Stage, commit, swap: `target` holds exactly `files` afterwards. Returns the archive."""
    return swap_in(target, stage(target, files, mode_of), archive_to, after_archive)


def recover(parent: Path) -> list[str]:
    """Finish or discard what a killed writer left in `parent`; returns what was done."""
    notes: list[str] = []
    if not parent.is_dir():
        return notes
    for leftover in sorted(parent.glob(f"{STAGING}*")):
        shutil.rmtree(leftover, ignore_errors=True)
        notes.append(f"removed unfinished write {leftover.name}")
    for leftover in sorted(parent.glob(f"{TMP}*")):
        leftover.unlink(missing_ok=True)
    for ready in sorted(parent.glob(f"{READY}*")):
        name = ready.name[len(READY):].rsplit("-", 1)[0]
        target = parent / name
        if target.exists():
            shutil.rmtree(ready, ignore_errors=True)
            notes.append(f"discarded an interrupted replacement of {name}")
        else:
            os.rename(ready, target)
            fsync_dir(parent)
            notes.append(f"completed an interrupted write of {name}")
    return notes


def journal_pending(journal_dir: Path) -> bool:
    """True when a killed replace_files left a commit that recover_files() would finish."""
    return journal_dir.is_dir() and any(journal_dir.glob(f"{JOURNAL}*.json"))


def pending(parent: Path) -> bool:
    """True when a killed writer left a committed folder that recover() would put in place."""
    return parent.is_dir() and any(parent.glob(f"{READY}*"))
