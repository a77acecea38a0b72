"""The CPU backend: kernels rendered to LLVM IR and compiled by llvmlite (codegen/cpu.py,
codegen/cpu_jit.py), dot_general through numpy's BLAS.

A kernel is called through its packed entry (one array of buffer pointers) with ctypes,
which releases the GIL. A kernel of at least PARALLEL_MIN_WORK elements has its rows
split into one contiguous share per core, run by native workers (runtime/cpu_pool.py)."""
import ctypes
import os

import numpy as np

from mlbh.codegen import cpu, cpu_jit, program_cache
from mlbh.tracer import dtypes
from mlbh.tracer.errors import MlbhError

from .blas_threads import limit_blas_threads
from .cpu_gemm import native_gemm
from .cpu_launch_list import CpuLaunchList, data_pointer, native_sources
from .cpu_pool import PACKED_ENTRY, fork_join_pool
from .executable import dot_into

# Below this many elements a kernel runs on the calling thread alone (on 2 cores the
# anchor GPT's step was level from 4K to 256K elements, ~1.15x slower at 2^22: no split).
PARALLEL_MIN_WORK = 1 << 16


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class CpuBackend:
    name = "cpu"
    xp = np

    def __init__(self):
        limit_blas_threads()
        self.threads = available_cores()

    def compile(self, program):
        """Render the program's kernels into LLVM modules (as many as there are cores, for a
        big program), compile them side by side (or load them from the cache), with the
        runtime's own modules that the first call loads, and bind a ctypes function to each
        kernel."""
        sources, kernels = program_cache.remembered(program, f"cpu/{self.threads}",
                                                    lambda: cpu.render_modules(program.kernels, self.threads))
        addresses = cpu_jit.load_modules(sources, {ck.name + ".packed" for ck in kernels.values()},
                                         ahead=native_sources(self.threads))
        functions = {name: (addresses[ck.name + ".packed"], PACKED_ENTRY(addresses[ck.name + ".packed"]), ck)
                     for name, ck in kernels.items()}
        return {"sources": sources, "functions": functions}

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

    def run_kernel(self, compiled, kernel, bufs):
        address, fn, ck = compiled["functions"][kernel.name]
        args = (ctypes.c_void_p * len(ck.params))(*[data_pointer(bufs[p]) for p in ck.params])
        shares = self.kernel_shares(ck)
        pool = fork_join_pool(self.threads) if shares > 1 else None
        if pool is None or not pool.run(address, ck.rows, ck.n, args, shares):
            fn(0, ck.rows, ck.n, args)

    def kernel_shares(self, ck) -> int:
        """How many cores share a kernel's rows."""
        return min(self.threads, ck.rows) if ck.parallel and ck.work >= PARALLEL_MIN_WORK else 1

    def launch_list(self, executable, bufs, known):
        """The executable's launch list run natively (runtime/cpu_launch_list.py): `known`,
        the one an earlier call built, or a new one."""
        if known is None or known.threshold != PARALLEL_MIN_WORK:
            known = CpuLaunchList(self, executable, bufs, PARALLEL_MIN_WORK)
        return known

    def dot(self, out, a, b, dimension_numbers, dtype):
        if not native_gemm().run(out, a, b, dimension_numbers, fork_join_pool(self.threads), self.threads):
            dot_into(np, out, a, b, dimension_numbers)

    def synchronize(self):
        pass
