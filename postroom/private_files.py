"""Files and directories only their owner can read: the database, the secret key, stored bodies.

Postroom's files hold stored credentials (sealed) and applicants' mail, so they are
created 0600 and their directories 0700, whatever the umask. A file Postroom owns that
an older version left group- or world-readable is tightened when it is next used. An
existing directory is tightened only when the caller knows it is Postroom's own (the
default data directory): a directory someone else made, such as a home directory that
holds a configured database path, keeps the mode its owner chose.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path, *, ours: bool = False) -> Path:
    """Create ``path`` (and missing parents) with mode 0700 for the directory itself.

    If it exists already its mode is left alone, unless ``ours`` (a directory only
    Postroom creates): then group and other access is removed."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True)
    except FileExistsError:
        if ours:
            tighten(path)
    else:
        os.chmod(path, DIR_MODE)  # mkdir's mode passes through the umask
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists and only its owner can read or write it (creating it empty, 0600)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path)
    else:
        os.close(fd)
    return path


def tighten(path: Path) -> bool:
    """Remove group and other access from ``path`` if this process owns it; True if it changed.

    A missing path, or one another user owns, is left alone (chmod would fail there)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077 or st.st_uid != os.geteuid():
        return False
    try:
        os.chmod(path, mode & ~0o077)
    except OSError as exc:  # a read-only file system: the mode stays as it is
        if exc.errno not in (errno.EPERM, errno.EROFS):
            raise
        return False
    return True
