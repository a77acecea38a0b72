"""Crash-safe file writes: a reader sees either the old file or the complete new one.

The data goes to a temporary file in the destination's directory (os.replace is only
atomic within one filesystem), is flushed and fsynced, renamed over the destination,
and finally the directory itself is fsynced so the rename survives a power loss.
read_json is the matching reader: every failure is one error naming the file.
"""

import contextlib
import json
import os
import secrets
from pathlib import Path


def fsync_directory(path):
    """Make a rename or file creation inside directory `path` durable."""
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_sibling(path, tag="tmp"):
    """A fresh hidden name next to `path`, e.g. `.params.safetensors.tmp-4711-1a2b3c`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_writer(path):
    """Yield a binary file; on a clean exit it atomically becomes `path`.

    If the body raises, the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    # os.open with mode 0o666 lets the umask decide permissions, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def atomic_write_bytes(path, data):
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path, text, encoding="utf-8"):
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj, indent=2):
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def read_json(path, error, what="file", invalid="corrupt JSON"):
    """The JSON document in `path`; an `error` (an MlbhError class) naming the path when
    it is missing ("{what} not found"), unreadable, or not JSON ("{invalid} (...)")."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: {invalid} ({e})") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: {invalid} ({e})") from None
