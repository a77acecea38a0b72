"""A CPU program's launch list as a table that one native call runs
(codegen/cpu_launch_list.py), so a call costs the interpreter a few array writes instead
of tens of microseconds per kernel and GEMM.

The table and every step's argument slots are built on the first call. Pointers into the
arena and the constants never change; those to the call's inputs and outputs are written
into their slots at every call. An operand view numpy could only give as a copy is copied
by a native step into a scratch array of the list's. A GEMM whose matrices the BLAS cannot
read in place, or of a dtype the native GEMM does not multiply (integers; float64 without
a suitable OpenBLAS), stays a Python step between native runs.
"""
import ctypes
import functools
import platform
import time

import numpy as np

from mlbh.codegen import cpu_blas_call, cpu_jit, cpu_launch_list
from mlbh.codegen.kernel_ir import Kernel

from .cpu_gemm import module_sources as gemm_sources, native_gemm
from .cpu_pool import fork_join_pool, has_workers, module_source as workers_source

_RUNNER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)


@functools.lru_cache(maxsize=None)
def _functions():
    """(the launch list's runner, {element size: strided copy's packed entry address})."""
    names = {cpu_launch_list.FUNCTION} | {f + ".packed" for f in cpu_launch_list.COPY_FUNCTIONS.values()}
    found = cpu_jit.load_module(cpu_launch_list.module_source(), names, pinned=True)
    return (_RUNNER(found[cpu_launch_list.FUNCTION]),
            {size: found[f + ".packed"] for size, f in cpu_launch_list.COPY_FUNCTIONS.items()})


def native_sources(cores: int) -> list:
    """The LLVM modules of the runtime that a launch list loads on its first call (its
    runner, the GEMMs, the workers), to compile side by side with a program's kernels."""
    workers = [workers_source()] if has_workers(cores) else []
    return [cpu_launch_list.module_source(), *gemm_sources(), *workers]


def address(array) -> int:
    return array.__array_interface__["data"][0]


def _data_pointer_reader():
    """A faster address(array) for the hundreds of arrays of every call (0.3 instead of 2
    us each): numpy's array object keeps its data pointer right after the Python object
    header (PyArrayObject_fields.data, numpy's ABI). CPython only (where id() is the
    object's address), checked on a probe array; elsewhere address itself."""
    if platform.python_implementation() != "CPython":
        return address
    offset, read = object.__basicsize__, ctypes.c_void_p.from_address
    probe = np.arange(3, dtype=np.int8)[1:]
    if read(id(probe) + offset).value != address(probe):
        return address
    return lambda array: read(id(array) + offset).value


data_pointer = _data_pointer_reader()


class CpuLaunchList:
    def __init__(self, backend, executable, bufs, threshold):
        """bufs: the first call's buffers by name (flat arrays). threshold: the backend's
        PARALLEL_MIN_WORK the kernels' shares were chosen with."""
        self.threshold = threshold
        self.cores = backend.threads
        self.run_step = executable.run_step
        prog = executable.program
        in_place = executable.aliases  # output -> the donated input it is written into: one array
        self.variable = sorted(set(prog.inputs) | set(prog.outputs).difference(in_place))  # new every call
        var_index = {name: i for i, name in enumerate(self.variable)}
        var_index.update({out: var_index[source] for out, source in in_place.items()})
        gemm, copy_entries = native_gemm(), _functions()[1]
        cores = backend.threads if fork_join_pool(backend.threads) is not None else 1
        rows, slots, patches, self.segments, self._keep = [], [], [], [], []
        self.row_step = []  # the program step each table row belongs to

        def pointer_at(position, name, array):
            """The value of slot `position`: a pointer into bufs[name], at array's start."""
            if name in var_index:
                patches.append((position, var_index[name], address(array) - address(bufs[name])))
            return address(array)

        for index, step in enumerate(prog.steps):
            self.row_step += [index - 1] * (len(rows) - len(self.row_step))  # the rows of the step before
            first = len(slots)
            if isinstance(step, Kernel):
                fn, _, ck = executable.compiled["functions"][step.name]
                rows.append((fn, ck.rows, ck.n, first, backend.kernel_shares(ck)))
                slots.extend(pointer_at(first + i, p, bufs[p]) for i, p in enumerate(ck.params))
                continue
            copies = []  # (operand's buffer, the strided view numpy would copy, scratch)

            def materialize(name, x):
                copies.append((name, x, np.empty(x.shape, x.dtype)))
                return copies[-1][2]
            out, a, b = executable.dot_operands(step, bufs, materialize)
            call = None
            copyable = all(0 < x.ndim <= cpu_launch_list.MAX_DIMS and x.itemsize in copy_entries
                           for _, x, _ in copies)
            if copyable and gemm.multiplies(out, a, b) and a.size and b.size:
                call = gemm.describe(out, a, b, step.dimension_numbers, cores)
            if call is None or call.copied:
                self._python_step(step, rows, index)
                continue
            for name, x, scratch in copies:
                first = len(slots)
                count = int(np.prod(x.shape[:-1], dtype=np.int64))
                rows.append((copy_entries[x.itemsize], count, 0, first,
                             min(cores, count) if x.size >= threshold else 1))
                pad = [0] * (cpu_launch_list.MAX_DIMS - x.ndim)
                slots.extend([pointer_at(first, name, x), address(scratch), x.ndim, *x.shape, *pad,
                              *(st // x.itemsize for st in x.strides), *pad])
                self._keep.append(scratch)
            first = len(slots)
            self._keep.append(call.keep)
            rows.append((call.entry, call.units, 0, first, call.shares))
            slots.extend(call.args)
            for slot, name, array in ((cpu_blas_call.A_SLOT, step.a, a), (cpu_blas_call.B_SLOT, step.b, b),
                                      (cpu_blas_call.C_SLOT, step.out, out)):
                if np.may_share_memory(array, bufs[name]):  # else a view of a scratch array
                    pointer_at(first + slot, name, array)
        self._python_step(None, rows, None)
        self.row_step += [len(prog.steps) - 1] * (len(rows) - len(self.row_step))

        self.slots = np.array(slots or [0], dtype=np.int64)
        base = address(self.slots)
        self.table = np.array([(fn, n_rows, n, base + 8 * at, shares) for fn, n_rows, n, at, shares in rows]
                              or [(0,) * cpu_launch_list.ROW], dtype=np.int64)
        at, var, offset = zip(*patches) if patches else ((), (), ())
        self.patch_at, self.patch_var, self.patch_offset = (np.array(c, dtype=np.int64) for c in (at, var, offset))

    def _python_step(self, step, rows, index):
        """End the native run of steps so far (its table rows) and queue a Python step (the
        program's step `index`)."""
        start = sum(count for kind, _, count in self.segments if kind == "native")
        if len(rows) > start:
            self.segments.append(("native", start, len(rows) - start))
        if step is not None:
            self.segments.append(("python", step, index))

    def run(self, bufs, step_seconds=None):
        """One call over bufs. step_seconds (a list by program step, for profiling) gets
        each step's time added, native steps timed natively."""
        if len(self.patch_at):
            addresses = np.fromiter((data_pointer(bufs[name]) for name in self.variable), np.int64, len(self.variable))
            self.slots[self.patch_at] = addresses[self.patch_var] + self.patch_offset
        runner, table = _functions()[0], address(self.table)
        for kind, what, count in self.segments:
            if kind == "python":
                start = time.perf_counter()
                self.run_step(what, bufs)
                if step_seconds is not None:
                    step_seconds[count] += time.perf_counter() - start
                continue
            times = None if step_seconds is None else np.zeros(count + 1, dtype=np.int64)
            pool = fork_join_pool(self.cores)  # this process's: a forked child has its own
            held = pool is not None and pool.acquire()
            try:
                rows = table + 8 * cpu_launch_list.ROW * what
                clock = None if times is None else address(times)
                if held:
                    runner(pool.fork_join_address, pool.slots, pool.job, rows, count, pool.workers + 1, clock)
                else:
                    runner(None, None, None, rows, count, 1, clock)
            finally:
                if held:
                    pool.release()
            if times is not None:
                for row, ns in zip(range(what, what + count), np.diff(times)):
                    step_seconds[self.row_step[row]] += ns * 1e-9
