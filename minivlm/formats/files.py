"""What is at a path where minivlm expects a file: a regular file, or a message saying what is there instead; and
a checkpoint's JSON file read with the same care (`read_json`).

A FIFO would block a read forever, /dev/zero would fill memory, a folder or a missing file gives an OS error
that names neither the checkpoint nor the fix; each gets one line here, before anything is opened.
"""

from __future__ import annotations

import json
import math
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


MAX_JSON_BYTES = 64 << 20  # the largest JSON of a checkpoint (tokenizer_config.json) is well under 1 MB


def _not_a_json_number(text: str):
    raise ValueError(f"{text} is not a number JSON allows (minivlm refuses NaN and Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        raise ValueError(f"{text} overflows a float (minivlm refuses NaN and Infinity)")
    return value


def read_json(path: Path, error: type[ValueError]) -> dict:
    """A JSON object from a checkpoint file; errors are `error`s (the reader's own: ConfigError, TokenizerError,
    ...) that name the file."""
    problem = not_a_file(path)
    if problem:
        raise error(f"{path} not found" if problem == "no such file" else f"{path}: {problem}")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise error(f"{path}: {path.stat().st_size:,} bytes is not a checkpoint's JSON file "
                    f"(at most {MAX_JSON_BYTES >> 20} MB)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_a_json_number,
                          parse_float=_finite_float)
    # ValueError: invalid JSON, a 5,000-digit integer, NaN; RecursionError: [[[[...]]]] nested too deep
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else e
        raise error(f"{path} is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise error(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data
