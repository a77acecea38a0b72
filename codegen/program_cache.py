"""On-disk cache of lowered programs: a traced graph -> its optimized graph, fused Program
and memory plan, so a warm start skips the graph passes, fusion and memory planning.

The key is a sha256 over the traced graph's serialized form (tracer.serialize.digest: every
eqn, shape, dtype, constant and source line), the backend (fusion differs per backend) and a
fingerprint of mlbh's tracer and codegen sources, so any change to the compiler misses.
An entry, under <cache dir>/programs/, is

    MAGIC | sha256(payload) as hex | "\\n" | payload (a pickle)

written as compile_cache writes cubins (temp file, fsync, rename). An entry whose magic or
checksum is off, or that fails to unpickle, is deleted and rebuilt, never used. Pickles
are only ever read from this cache, which mlbh itself writes (as it writes the CPU object files).
A program that came from the cache, or went into it, carries its key (`cache_key`), and
what a renderer makes of it is cached beside it (`remembered`): a warm start renders
nothing either. MLBH_PROGRAM_CACHE=0 turns the cache off.
"""
import functools
import hashlib
import os
import pickle

from mlbh.tracer import serialize

from .compile_cache import CorruptEntry, cache_dir, read_sealed, seal, unseal, write_atomically

MAGIC = b"MLBHPROG1\n"


def enabled() -> bool:
    return os.environ.get("MLBH_PROGRAM_CACHE", "1") != "0"


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """sha256 of every source file of the compiler (tracer and codegen packages)."""
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for package in (os.path.join(here, "..", "tracer"), here):
        for name in sorted(os.listdir(package)):
            if name.endswith(".py"):
                with open(os.path.join(package, name), "rb") as f:
                    digest.update(name.encode() + b"\0" + f.read() + b"\0")
    return digest.hexdigest()


def program_key(traced, backend: str) -> str:
    return hashlib.sha256(f"{code_fingerprint()}\0{backend}\0{serialize.digest(traced)}".encode()).hexdigest()


def entry_path(key: str) -> str:
    return os.path.join(cache_dir(), "programs", key[:2], key + ".pkl")


def _decode(data: bytes):
    payload = unseal(MAGIC, data)
    try:
        return pickle.loads(payload)
    except Exception as exc:  # written by another mlbh version, say: rebuild it
        raise CorruptEntry(f"cannot unpickle: {exc}") from None


def load(key: str):
    """The cached value for key, or None when there is none or it is corrupt (then deleted)."""
    return read_sealed(entry_path(key), _decode)


def store(key: str, value) -> None:
    write_atomically(entry_path(key), seal(MAGIC, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)))


def remembered(program, what: str, make):
    """make(), cached beside the program's own entry when the program carries a cache_key
    (a rewritten program, e.g. with stores made in place, carries another key or none)."""
    key = program.cache_key
    if key is None:
        return make()
    key = hashlib.sha256(f"{key}\0{what}".encode()).hexdigest()
    value = load(key)
    if value is None:
        value = make()
        store(key, value)
    return value
