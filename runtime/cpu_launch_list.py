"""A CPU program's launch list as a table that one native call runs
(codegen/cpu_launch_list.py), so a call costs the interpreter a few array writes instead
of tens of microseconds per kernel and GEMM.

The table and every step's argument slots are built on the first call. Pointers into the
arena and the constants never change; those to the call's inputs and outputs are written
into their slots at every call. A GEMM whose operands are copies (a view numpy could not
take without one, or matrices the BLAS cannot read in place), or that numpy's BLAS cannot
take, stays a Python step between native runs.
"""
import ctypes
import functools

import numpy as np

from mlbh.codegen import cpu_blas_call, cpu_jit, cpu_launch_list
from mlbh.codegen.kernel_ir import Kernel

from .cpu_gemm import native_gemm
from .cpu_pool import fork_join_pool

_RUNNER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_int64, ctypes.c_int64)


@functools.lru_cache(maxsize=None)
def _runner():
    name = cpu_launch_list.FUNCTION
    return _RUNNER(cpu_jit.load_module(cpu_launch_list.module_source(), {name}, pinned=True)[name])


def address(array) -> int:
    return array.__array_interface__["data"][0]


class CpuLaunchList:
    def __init__(self, backend, executable, bufs, threshold):
        """bufs: the first call's buffers by name (flat arrays). threshold: the backend's
        PARALLEL_MIN_WORK the kernels' shares were chosen with."""
        self.threshold = threshold
        self.pool = fork_join_pool(backend.threads)
        self.run_step = executable.run_step
        prog = executable.program
        self.variable = sorted(set(prog.inputs) | set(prog.outputs))  # new arrays every call
        var_index = {name: i for i, name in enumerate(self.variable)}
        gemm = native_gemm()
        cores = backend.threads if self.pool is not None else 1
        rows, slots, patches, self.segments, self._keep = [], [], [], [], []

        def pointer_at(position, name, array):
            """The value of slot `position`: a pointer into bufs[name], at array's start."""
            if name in var_index:
                patches.append((position, var_index[name], address(array) - address(bufs[name])))
            return address(array)

        for step in prog.steps:
            first = len(slots)
            if isinstance(step, Kernel):
                fn, _, ck = executable.compiled["functions"][step.name]
                rows.append((fn, ck.rows, ck.n, first, backend.kernel_shares(ck)))
                slots.extend(pointer_at(first + i, p, bufs[p]) for i, p in enumerate(ck.params))
                continue
            out, a, b = executable.dot_operands(step, bufs)
            call = None
            views = np.may_share_memory(a, bufs[step.a]) and np.may_share_memory(b, bufs[step.b])
            if gemm is not None and views and gemm.multiplies(out, a, b) and a.size and b.size:
                call = gemm.describe(out, a, b, step.dimension_numbers, cores)
            if call is None or call.copied:
                self._python_step(step, rows)
                continue
            self._keep.append(call.keep)
            rows.append((call.entry, call.units, 0, first, call.shares))
            slots.extend(call.args)
            for slot, name, array in ((cpu_blas_call.A_SLOT, step.a, a), (cpu_blas_call.B_SLOT, step.b, b),
                                      (cpu_blas_call.C_SLOT, step.out, out)):
                pointer_at(first + slot, name, array)
        self._python_step(None, rows)

        self.slots = np.array(slots or [0], dtype=np.int64)
        base = address(self.slots)
        self.table = np.array([(fn, n_rows, n, base + 8 * at, shares) for fn, n_rows, n, at, shares in rows]
                              or [(0,) * cpu_launch_list.ROW], dtype=np.int64)
        at, var, offset = zip(*patches) if patches else ((), (), ())
        self.patch_at, self.patch_var, self.patch_offset = (np.array(c, dtype=np.int64) for c in (at, var, offset))

    def _python_step(self, step, rows):
        """End the native run of steps so far (its table rows) and queue a Python step."""
        start = sum(count for kind, _, count in self.segments if kind == "native")
        if len(rows) > start:
            self.segments.append(("native", start, len(rows) - start))
        if step is not None:
            self.segments.append(("python", step, 0))

    def run(self, bufs):
        if len(self.patch_at):
            addresses = np.fromiter((address(bufs[name]) for name in self.variable), np.int64, len(self.variable))
            self.slots[self.patch_at] = addresses[self.patch_var] + self.patch_offset
        runner, table = _runner(), address(self.table)
        for kind, what, count in self.segments:
            if kind == "python":
                self.run_step(what, bufs)
                continue
            pool = self.pool
            held = pool is not None and pool.acquire()
            try:
                if held:
                    runner(pool.fork_join_address, pool.slots, pool.job, table + 8 * cpu_launch_list.ROW * what,
                           count, pool.workers + 1)
                else:
                    runner(None, None, None, table + 8 * cpu_launch_list.ROW * what, count, 1)
            finally:
                if held:
                    pool.release()
