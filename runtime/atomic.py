"""Atomic file writes: a failed stage never leaves a half-written artifact behind."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ArtifactError
from .file_kind import file_problem


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


#: Name of the folder inside a directory where :func:`transaction` keeps the copies it restores.
JOURNAL_NAME = ".visionrt-journal"


@contextlib.contextmanager
def transaction(root: str | os.PathLike) -> Iterator[Path]:
    """Run a stage on directory ``root`` all or nothing: when the block raises (or is interrupted),
    ``root`` is put back as it was: files restored byte for byte, files and folders it created removed.

    Copies of the files are kept in ``root/.visionrt-journal`` while the block runs (so on the same
    file system; stages may rewrite files in place) and removed afterwards; an existing journal (a
    stage running, or killed) is an :class:`ArtifactError`. ``SystemExit`` counts as finishing: a
    stage that completes and reports a failed check keeps what it wrote."""
    root = Path(root)
    journal = root / JOURNAL_NAME
    existed = root.is_dir()
    before_dirs: set[Path] = set()
    if existed:
        try:
            journal.mkdir()  # claims the directory: a second stage on it at the same time is refused
        except FileExistsError:
            raise ArtifactError(f"{journal} exists: another stage is running on {root}, or one was killed",
                                fix=f"wait for it; if none runs, copy the files in {JOURNAL_NAME} back over the "
                                    "directory to undo the killed stage, or delete it to keep the directory as it is"
                                ) from None
        try:
            before_dirs = _journal(root, journal)
        except BaseException:
            shutil.rmtree(journal, ignore_errors=True)
            raise
    try:
        yield root
    except (Exception, KeyboardInterrupt):
        _roll_back(root, journal, existed, before_dirs)
        raise
    finally:
        if existed:
            shutil.rmtree(journal, ignore_errors=True)


def _journal(root: Path, journal: Path) -> set[Path]:
    """Copy every file of ``root`` into ``journal`` (symbolic links as links); the folders, relative.
    A named pipe, socket or device in the directory is an :class:`ArtifactError` (copying one
    would block or fail)."""
    folders = set()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == JOURNAL_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            folders.add(rel)
            continue
        problem = None if path.is_symlink() else file_problem(path)
        if problem:
            raise ArtifactError(f"{path} {problem}: a model directory holds only files and folders",
                                fix="remove it, or put the file the manifest names in its place")
        (journal / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, journal / rel, follow_symlinks=False)
    return folders


def _roll_back(root: Path, journal: Path, existed: bool, before_dirs: set[Path]) -> None:
    if not existed:
        shutil.rmtree(root, ignore_errors=True)
        return
    saved = {p.relative_to(journal) for p in journal.rglob("*") if not p.is_dir() or p.is_symlink()}
    for path in sorted(root.rglob("*"), reverse=True):  # deepest first
        rel = path.relative_to(root)
        if rel.parts[0] == JOURNAL_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            if rel not in before_dirs:
                shutil.rmtree(path, ignore_errors=True)
        elif rel not in saved:
            path.unlink()
    for rel in saved:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(journal / rel, target)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
