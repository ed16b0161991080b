"""What is at a path where minivlm expects a file: a regular file, or a message saying what is there instead.

A FIFO would block a read forever, /dev/zero would fill memory, a folder or a missing file gives an OS error
that names neither the checkpoint nor the fix; each gets one line here, before anything is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def not_a_file(path: Path) -> str | None:
    """None for a readable regular file (symlinks followed), else what the path is instead, in words."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except NotADirectoryError:
        return "no such file (a folder on its path is a file)"
    except PermissionError:
        return "permission denied (a folder on its path cannot be read)"
    except OSError as e:  # a symlink loop, a name too long, ...
        return f"cannot be read ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "permission denied; make the file readable"
    return None
