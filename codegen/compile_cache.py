"""Cache of NVRTC compiles: in memory, and on disk under ~/.cache/mlbh.

The key is a sha256 over everything that can change the cubin: source, arch,
options, NVRTC and CuPy versions, the CUDA header dir, and CACHE_FORMAT_VERSION.
A disk entry is

    MAGIC | sha256(payload) as hex | "\\n" | payload
    payload = JSON metadata (log, kernels) | "\\n" | cubin bytes

and is written to a temp file, fsynced, then os.replace'd into place, so readers
see either the old entry or the whole new one. An entry whose magic, checksum,
metadata or ELF header is off is deleted and recompiled, never used.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import threading
import warnings

from . import nvrtc
from .nvrtc import CubinResult

CACHE_FORMAT_VERSION = 1
MAGIC = b"MLBHCUBIN1\n"
ELF_MAGIC = b"\x7fELF"
_CHECKSUM_LEN = 64  # hex sha256

_lock = threading.Lock()
_memory: dict = {}
_stats = {"memory_hits": 0, "disk_hits": 0, "remembered": 0, "misses": 0, "corrupt": 0}


class CorruptEntry(Exception):
    """A disk entry that must not be trusted."""


def cache_dir() -> str:
    """Root of the on-disk cache; MLBH_CACHE_DIR overrides ~/.cache/mlbh."""
    override = os.environ.get("MLBH_CACHE_DIR")
    if override:
        return override
    return os.path.join(os.path.expanduser("~"), ".cache", "mlbh")


def cubin_dir() -> str:
    return os.path.join(cache_dir(), "cubin")


def _cupy_version() -> str:
    try:
        import cupy
        return cupy.__version__
    except Exception:  # cupy may fail to import fully where only NVRTC works
        return "unknown"


@functools.lru_cache(maxsize=None)
def toolchain_fingerprint() -> str:
    """sha256 naming the CUDA toolchain as installed, found without loading it (importing
    CuPy's NVRTC bindings imports CuPy, ~0.25 s): CuPy's version file, the names (so the
    versions) of installed cupy* and nvidia* distributions, CUDA_PATH, CUDA_HOME,
    LD_LIBRARY_PATH and where /usr/local/cuda points. A program's cubins are remembered
    under it, so upgrading any of these compiles again."""
    parts = [os.environ.get(v, "") for v in ("CUDA_PATH", "CUDA_HOME", "LD_LIBRARY_PATH")]
    parts.append(os.path.realpath("/usr/local/cuda"))
    spec = importlib.util.find_spec("cupy")
    if spec is not None and spec.origin:
        try:
            with open(os.path.join(os.path.dirname(spec.origin), "_version.py"), encoding="utf-8") as f:
                parts.append(f.read())
        except OSError:
            parts.append("cupy version unknown")
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        parts += sorted(n for n in names if re.match(r"(cupy|nvidia)[-_].*\.(dist|egg)-info$", n, re.I))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_key(source: str, arch: str, options=()) -> str:
    """Hex sha256 identifying one compile."""
    ingredients = {
        "format": CACHE_FORMAT_VERSION,
        "source": source,
        "arch": nvrtc.normalize_arch(arch),
        "options": list(options),
        "nvrtc": list(nvrtc.nvrtc_version()),
        "cupy": _cupy_version(),
        "include_dir": nvrtc.cuda_include_dir() or "",
    }
    blob = json.dumps(ingredients, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def entry_path(key: str) -> str:
    return os.path.join(cubin_dir(), key[:2], key + ".entry")


# ------------------------------------------------------------------------ encoding

def seal(magic: bytes, payload: bytes) -> bytes:
    """magic | sha256(payload) as hex | newline | payload: the form of every cache entry."""
    return magic + hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n" + payload


def unseal(magic: bytes, data: bytes) -> bytes:
    """The payload of a sealed entry; raises CorruptEntry if its magic or checksum is off."""
    header_len = len(magic) + _CHECKSUM_LEN + 1
    if len(data) < header_len or not data.startswith(magic):
        raise CorruptEntry("bad magic or truncated header")
    checksum = data[len(magic):len(magic) + _CHECKSUM_LEN]
    payload = data[header_len:]
    if hashlib.sha256(payload).hexdigest().encode("ascii") != checksum:
        raise CorruptEntry("checksum mismatch")
    return payload


def encode_entry(result: CubinResult) -> bytes:
    meta = json.dumps({"log": result.log, "kernels": result.kernels}).encode("utf-8")
    return seal(MAGIC, meta + b"\n" + result.cubin)  # compact JSON has no raw newline


def decode_entry(data: bytes) -> CubinResult:
    """Parse and verify an entry; raises CorruptEntry on any inconsistency."""
    payload = unseal(MAGIC, data)
    meta_bytes, sep, cubin = payload.partition(b"\n")
    if not sep or not cubin.startswith(ELF_MAGIC):
        raise CorruptEntry("payload is not metadata + ELF cubin")
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
        return CubinResult(cubin=cubin, log=meta["log"], kernels=meta["kernels"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"bad metadata: {exc}") from None


# ---------------------------------------------------------------------------- disk

def read_sealed(path: str, decode):
    """decode(the file's bytes), or None when the file is absent or unreadable; a file that
    decode finds corrupt (CorruptEntry) is deleted, with a warning."""
    try:
        with open(path, "rb") as entry:
            data = entry.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        warnings.warn(f"mlbh cache: cannot read {path}: {exc}")
        return None
    try:
        return decode(data)
    except CorruptEntry as exc:
        warnings.warn(f"mlbh cache: discarding corrupt entry {path} ({exc})")
        try:
            os.remove(path)
        except OSError:
            pass
        return None


def write_atomically(path: str, data: bytes):
    """Store a file whole or not at all (temp file, fsync, rename); a cache that cannot be
    written only warns."""
    folder = os.path.dirname(path)
    temp_path = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temp_path = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_path, path)
        temp_path = None
        _fsync_dir(folder)
    except OSError as exc:
        warnings.warn(f"mlbh cache: cannot write {path}: {exc}")
    finally:
        if temp_path is not None:
            try:
                os.remove(temp_path)
            except OSError:
                pass


def _read_entry(key: str):
    """The cached result, or None when absent; a corrupt entry is deleted."""
    def counted(data):
        try:
            return decode_entry(data)
        except CorruptEntry:
            with _lock:
                _stats["corrupt"] += 1
            raise
    return read_sealed(entry_path(key), counted)


def _write_entry(key: str, result: CubinResult):
    write_atomically(entry_path(key), encode_entry(result))


def _fsync_dir(folder: str):
    # Makes the rename itself durable; not all filesystems allow it, and it is optional.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- API

def cached_compile_cubin(source: str, arch: str = "sm_80", options: tuple = ()) -> CubinResult:
    """compile_cubin, answered from memory, then disk, then NVRTC."""
    options = tuple(options)
    key = cache_key(source, arch, options)
    with _lock:
        result = _memory.get(key)
        if result is not None:
            _stats["memory_hits"] += 1
            return result
    result = _read_entry(key)
    if result is not None:
        with _lock:
            _stats["disk_hits"] += 1
            _memory[key] = result
        return result
    result = nvrtc.compile_cubin(source, arch, options)
    _write_entry(key, result)
    with _lock:
        _stats["misses"] += 1
        _memory[key] = result
    return result


def cache_stats() -> dict:
    """Counters since start (or reset): memory_hits, disk_hits, remembered (modules that
    came with a cached program, see codegen.cuda.compile_program), hits, misses, corrupt."""
    with _lock:
        stats = dict(_stats)
    stats["hits"] = stats["memory_hits"] + stats["disk_hits"] + stats["remembered"]
    return stats


def count_remembered(modules: int) -> None:
    with _lock:
        _stats["remembered"] += modules


def reset_cache_stats():
    with _lock:
        for name in _stats:
            _stats[name] = 0


def clear_memory_cache():
    """Forget in-memory results (disk entries stay); counters are kept."""
    with _lock:
        _memory.clear()
