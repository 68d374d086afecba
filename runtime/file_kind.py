"""What is at a path where a regular file should be, found without opening it.

A model file may be missing, a directory, a named pipe (opening one blocks until a writer comes),
a socket, a device, a symbolic-link loop, or unreadable; :func:`file_problem` names which from
``lstat``/``stat`` alone, so a check never hangs, and :func:`require_file` raises it as a visionrt
error.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import VisionRTError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` is (or links to) a regular file, else what it is instead: ``"does not
    exist"``, ``"is a directory"``, ``"is a named pipe (FIFO)"``, ``"is a symbolic-link loop"``, ..."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic-link loop"
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return "is a broken symbolic link" if os.path.islink(path) else "does not exist"
        return f"cannot be read ({err.strerror or err})"
    except ValueError as err:  # a NUL in the name
        return f"is not a usable path ({err})"
    if stat.S_ISREG(mode):
        return None
    return "is " + next((name for test, name in _KINDS if test(mode)), "not a regular file")


def require_file(path: str | os.PathLike, what: str, error: type[VisionRTError], fix: str | None = None) -> Path:
    """``path`` as a :class:`Path` if it is a regular file, else ``error("<what> <path> <problem>", fix)``."""
    problem = file_problem(path)
    if problem:
        raise error(f"{what} {str(path)[:300]} {problem}", fix=fix)
    return Path(path)
