"""The CPU backend: kernels rendered to LLVM IR and compiled by llvmlite (codegen/cpu.py,
codegen/cpu_jit.py), dot_general through numpy's BLAS.

A kernel is called through ctypes, which releases the GIL: a kernel of at least
PARALLEL_MIN_WORK elements has its rows split into one contiguous share per core, run on
a thread pool."""
import ctypes
import os
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mlbh.codegen import cpu, cpu_jit, program_cache
from mlbh.tracer import dtypes
from mlbh.tracer.errors import MlbhError

from .blas_threads import limit_blas_threads
from .executable import dot_into

# Below this many elements a kernel runs on the calling thread alone. On a 2-core VM a
# share's round trip through the pool takes 80-130 us and OpenBLAS's spinning worker
# holds the other core between GEMMs: splitting the anchor's kernels (0.1M-2M elements)
# made the GPT block slower (bench_block_cpu.py: torch/jit 0.83-0.92x serial, 0.76-0.77x
# split from 16K or 256K elements; bench_train_cpu.py --parallel-min-work races thresholds).
PARALLEL_MIN_WORK = 1 << 22
_POOL = []


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _pool(workers):
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlbh-cpu"))
    return _POOL[0]


class CpuBackend:
    name = "cpu"
    xp = np

    def __init__(self):
        limit_blas_threads()
        self.threads = available_cores()
        self._addresses = {}  # id(array) -> (weak reference, data address)

    def compile(self, program):
        """Render the program's kernels into one LLVM module, compile it (or load it from
        the cache) and bind a ctypes function to each kernel."""
        source, kernels = program_cache.remembered(program, "cpu",
                                                   lambda: cpu.render_program(program.kernels, headers=False))
        addresses = cpu_jit.load_module(source, {ck.name for ck in kernels.values()})
        functions = {}
        for name, ck in kernels.items():
            signature = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                         *[ctypes.c_void_p] * len(ck.params))
            functions[name] = (signature(addresses[ck.name]), ck)
        return {"source": source, "functions": functions}

    def storage_dtype(self, dtype):
        return dtypes.to_numpy(dtype)

    def to_device(self, array):
        return np.asarray(array)

    def as_input(self, arg, buffer):
        arr = np.asarray(arg)
        want = dtypes.to_numpy(buffer.dtype)
        if arr.shape != tuple(buffer.shape) or arr.dtype != want:
            raise MlbhError(f"input {buffer.name}: expected {buffer.dtype}{list(buffer.shape)}, "
                            f"got {arr.dtype}{list(arr.shape)}")
        return np.ascontiguousarray(arr).reshape(-1)

    def _address(self, array):
        """The array's data pointer; remembered per array object (the arena's views live as
        long as their executable) since numpy takes microseconds to tell it."""
        key = id(array)
        known = self._addresses.get(key)
        if known is not None and known[0]() is array:
            return known[1]
        address = array.ctypes.data
        addresses = self._addresses
        self._addresses[key] = (weakref.ref(array, lambda _: addresses.pop(key, None)), address)
        return address

    def run_kernel(self, compiled, kernel, bufs):
        fn, ck = compiled["functions"][kernel.name]
        pointers = [self._address(bufs[p]) for p in ck.params]
        shares = min(self.threads, ck.rows) if ck.parallel and ck.work >= PARALLEL_MIN_WORK else 1
        if shares <= 1:
            fn(0, ck.rows, ck.n, *pointers)
            return
        bounds = [ck.rows * i // shares for i in range(shares + 1)]
        pending = [_pool(self.threads - 1).submit(fn, lo, hi, ck.n, *pointers)
                   for lo, hi in zip(bounds[1:-1], bounds[2:])]
        fn(bounds[0], bounds[1], ck.n, *pointers)
        for f in pending:
            f.result()

    def dot(self, out, a, b, dimension_numbers, dtype):
        dot_into(np, out, a, b, dimension_numbers)

    def synchronize(self):
        pass
