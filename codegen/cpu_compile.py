"""Compiling a generated numba module's kernels, on several cores when there are many.

numba compiles one function at a time, mostly in Python (type inference, lowering), at
about 0.3 s a kernel, so a cold GPT train step spends tens of seconds there. With
cores to spare, worker processes compile shares of the kernels into numba's on-disk
cache (cache=True, next to the module file) while this process compiles its own share;
then this process loads the workers' kernels from that cache. The workers are plain
subprocesses (`python -m mlbh.codegen.cpu_compile`), not multiprocessing, so a user's
script is never re-imported in them.

A marker file next to the module lists the (function, argument dtypes) already compiled,
so a warm start starts no workers. It is only a hint: if numba's cache is gone, the
kernel is compiled here, as without workers.
"""
import importlib.util
import json
import os
import subprocess
import sys

from mlbh.tracer import dtypes

from .cpu_target import worker_environment

MIN_JOBS_PER_WORKER = 4  # fewer kernels than this per process: a worker's start-up (~0.5 s) is not worth it


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def compile_workers(todo: int) -> int:
    """Processes to compile `todo` kernels with, this one included (MLBH_COMPILE_WORKERS caps it)."""
    cap = os.environ.get("MLBH_COMPILE_WORKERS")
    cores = int(cap) if cap else available_cores()
    return max(1, min(cores, todo // MIN_JOBS_PER_WORKER))


def _array_type(dtype: str):
    import numba
    return numba.types.Array(numba.from_dtype(dtypes.to_numpy(dtype)), 1, "C")


def _compile_jobs(module, jobs):
    for fname, dtypes in jobs:
        getattr(module, fname).compile(tuple(_array_type(d) for d in dtypes))


def _shares(jobs, sizes, count):
    """Jobs dealt into `count` shares of about equal cost (source length), largest first."""
    shares = [[] for _ in range(count)]
    load = [0] * count
    for job in sorted(jobs, key=lambda j: -sizes.get(j[0], 0)):
        i = load.index(min(load))
        shares[i].append(job)
        load[i] += sizes.get(job[0], 0)
    return shares


def _marker_path(module):
    return module.__file__ + ".compiled.json"


def _read_marker(module) -> set:
    try:
        with open(_marker_path(module)) as f:
            return {(j[0], tuple(j[1])) for j in json.load(f)}
    except (OSError, ValueError, TypeError, IndexError):
        return set()


def _write_marker(module, done: set):
    path = _marker_path(module)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(sorted([name, list(dtypes)] for name, dtypes in done), f)
    os.replace(tmp, path)


def compile_kernels(module, jobs, sizes=None):
    """Compile every (function name, argument dtypes) job of a module loaded by
    cpu.load_program; uncompiled ones on up to compile_workers() processes."""
    jobs = list(dict.fromkeys((name, tuple(dtypes)) for name, dtypes in jobs))
    done = _read_marker(module)
    todo = [j for j in jobs if j not in done]
    workers = compile_workers(len(todo))
    if workers > 1:
        shares = _shares(todo, sizes or {}, workers)
        procs = [subprocess.Popen([sys.executable, "-m", "mlbh.codegen.cpu_compile", module.__file__,
                                   module.__name__, json.dumps(share)],
                                  env=worker_environment(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
                 for share in shares[1:]]
        _compile_jobs(module, shares[0])
        for p in procs:
            p.communicate()  # a failed worker only costs time: its kernels compile below
    _compile_jobs(module, jobs)
    if set(jobs) - done:
        _write_marker(module, done | set(jobs))


def _worker(path, name, jobs_json):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cache entries name the module their globals come from
    spec.loader.exec_module(module)
    _compile_jobs(module, [(f, tuple(d)) for f, d in json.loads(jobs_json)])


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
