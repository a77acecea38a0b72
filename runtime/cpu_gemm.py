"""dot_general on the CPU as single-threaded cblas_?gemm calls split across the cores by
the native workers (codegen/cpu_blas_call.py, runtime/cpu_pool.py).

numpy's matmul would run one product on OpenBLAS's own threads; those spin between calls
on the same cores as the kernels' workers, and the two fight (the anchor GPT's step 100 ->
240-360 ms when both were on). Here every GEMM is called by mlbh's threads with OpenBLAS
held to one thread (openblas_set_num_threads_local), so one set of threads owns the cores.
That needs numpy's BLAS to be OpenBLAS with that function (0.3.27+). float32 products
run mlbh's own GEMM kernel (codegen/cpu_gemm_ir.py) where it was measured to be the faster,
on AVX-512, and wherever numpy's BLAS is another (MKL, an older OpenBLAS); products the
chosen GEMMs do not multiply (float64 without such an OpenBLAS, integers) run numpy's.
"""
import ctypes
import functools
from dataclasses import dataclass

import numpy as np

from mlbh.codegen import cpu_blas_call, cpu_gemm_ir, cpu_jit
from mlbh.codegen.cpu_target import host_features

from .blas_threads import loaded_openblas_paths
from .cpu_pool import PACKED_ENTRY
from .executable import stack_axes

_SYMBOLS = {  # (gemm symbols for float32, float64), BLAS integer type
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"): "i64",
    ("cblas_sgemm64_", "cblas_dgemm64_"): "i64",
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm"): "i32",
    ("cblas_sgemm", "cblas_dgemm"): "i32",
}
MIN_SPLIT_FLOPS = 1 << 21  # below this a product runs on the calling thread alone


@dataclass
class GemmCall:
    """One dot_general as a packed entry over `units` GEMM cells (codegen/cpu_blas_call.py)."""
    entry: int  # the packed entry's address
    function: object  # the same, callable from Python
    args: ctypes.Array  # its argument slots, pointers to the operands included
    units: int
    shares: int  # cores the units are split over (1: the calling thread alone)
    copied: bool  # an operand was copied to be read as matrices (args point into the copy)
    keep: tuple  # arrays args points into


class NativeGemm:
    def __init__(self, gemms: dict, set_threads: int, int_type: str):
        """gemms: numpy dtype name -> address of a row-major CBLAS-shaped gemm whose sizes
        are int_type; set_threads: OpenBLAS's per-thread count setter, or a stand-in."""
        functions = cpu_jit.load_module(cpu_blas_call.module_source(int_type),
                                        {f + ".packed" for f in cpu_blas_call.FUNCTIONS.values()}, pinned=True)
        self.entries = {}  # numpy dtype -> (entry address, ctypes function, the gemm's address)
        for dtype, gemm in gemms.items():
            address = functions[cpu_blas_call.FUNCTIONS[dtype] + ".packed"]
            self.entries[np.dtype(dtype)] = (address, PACKED_ENTRY(address), gemm)
        self.set_threads = set_threads

    def multiplies(self, out, a, b) -> bool:
        """True when this BLAS multiplies these dtypes into this output."""
        return a.dtype in self.entries and b.dtype == a.dtype == out.dtype and out.flags.c_contiguous

    def describe(self, out, a, b, dimension_numbers, cores) -> GemmCall:
        """The call that computes out (contiguous: batch axes, a's free axes, b's free axes)
        = dot_general(a, b) for non-empty operands this BLAS multiplies, split for `cores`."""
        entry = self.entries[a.dtype]
        (lb, af, lc), (rb, rc, bf) = stack_axes(a.ndim, b.ndim, dimension_numbers)
        a_stack, b_stack = a.transpose([*lb, *af, *lc]), b.transpose([*rb, *rc, *bf])
        a_read, a_offsets, (m, k), (ta, lda) = _operand(a_stack, len(lb), len(af))
        b_read, b_offsets, (_, n), (tb, ldb) = _operand(b_stack, len(rb), len(rc))
        nb = len(a_offsets)
        big = 2 * nb * m * n * k >= MIN_SPLIT_FLOPS and cores > 1
        row_chunks, col_chunks = _grid(nb, m, n, cores) if big else (1, 1)
        units = nb * row_chunks * col_chunks
        args = (ctypes.c_int64 * cpu_blas_call.SLOTS)(
            entry[2], self.set_threads, ta, tb, m, n, k, a_read.ctypes.data, lda, a_offsets.ctypes.data,
            b_read.ctypes.data, ldb, b_offsets.ctypes.data, out.ctypes.data, n, m * n, row_chunks, col_chunks)
        return GemmCall(entry[0], entry[1], args, units, min(cores, units) if big else 1,
                        copied=a_read is not a_stack or b_read is not b_stack, keep=(a_read, b_read, a_offsets, b_offsets))

    def run(self, out, a, b, dimension_numbers, pool, cores) -> bool:
        """out = dot_general(a, b) (see describe); False when the dtypes are not ones this
        BLAS multiplies (the caller uses numpy)."""
        if not self.multiplies(out, a, b):
            return False
        if a.size == 0 or b.size == 0:  # an empty contraction sums nothing
            out[...] = 0
            return True
        call = self.describe(out, a, b, dimension_numbers, cores if pool is not None else 1)
        if not (call.shares > 1 and pool.run(call.entry, call.units, 0, call.args, call.shares)):
            call.function(0, call.units, 0, call.args)
        return True


def _grid(nb, m, n, cores):
    """(row chunks, column chunks) of each product: enough cells for every core, cut along
    M (as fast as along N, or faster, on every product of the GPT step, A read transposed
    included, since the kernel packs such an A), along N when M is too short to cut."""
    per_product = -(-cores // nb)
    if per_product <= 1:
        return 1, 1
    rows = min(per_product, m // 16)
    return (rows, 1) if rows > 1 else (1, max(1, min(per_product, n // 16)))


def _merged(shape, strides):
    """(size, stride) of axes read as one, or None when their strides do not allow it.
    No axes, or only length-1 ones: stride None (any will do)."""
    axes = [(n, s) for n, s in zip(shape, strides) if n != 1]
    for (_, outer), (inner_n, inner) in zip(axes, axes[1:]):
        if outer != inner * inner_n:
            return None
    return int(np.prod(shape, dtype=np.int64)), (axes[-1][1] if axes else None)


@functools.lru_cache(maxsize=4096)
def _batch_offsets(shape, strides):
    """Element offsets of every matrix of a batch with these axes (row-major order)."""
    offsets = np.zeros(shape, dtype=np.int64)
    for axis, stride in enumerate(strides):
        offsets += (np.arange(shape[axis], dtype=np.int64) * stride).reshape(
            [-1 if d == axis else 1 for d in range(len(shape))])
    offsets = offsets.reshape(-1)
    offsets.flags.writeable = False
    return offsets


def _operand(x, n_batch, n_rows):
    """x's axes as (batch..., rows..., cols...) of a non-empty x: (x or a contiguous copy,
    batch offsets, (rows, cols), (CBLAS trans, leading dimension)). Rows and columns must
    each read as one strided axis, one of them unit-strided; the batch axes may be laid out
    any way."""
    found = _as_matrices(x, n_batch, n_rows)
    if found is None:
        x = np.ascontiguousarray(x)
        found = _as_matrices(x, n_batch, n_rows)
    return (x, *found)


def _as_matrices(x, n_batch, n_rows):
    """(batch offsets, (rows, cols), layout) of x as it is laid out, or None."""
    item = x.itemsize
    if any(s % item for s in x.strides):
        return None
    strides = [s // item for s in x.strides]
    rows = _merged(x.shape[n_batch:n_batch + n_rows], strides[n_batch:n_batch + n_rows])
    cols = _merged(x.shape[n_batch + n_rows:], strides[n_batch + n_rows:])
    layout = None if rows is None or cols is None else _layout(rows, cols)
    if layout is None:
        return None
    return _batch_offsets(tuple(x.shape[:n_batch]), tuple(strides[:n_batch])), (rows[0], cols[0]), layout


def _layout(rows, cols):
    """(CBLAS trans, leading dimension) of a rows x cols matrix with these (size, stride)
    read row-major, or None. A None stride (a length-1 axis) is never followed."""
    (r, sr), (c, sc) = rows, cols
    if sc in (1, None) and (sr is None or sr >= max(c, 1)):
        return cpu_blas_call.NO_TRANS, max(c, 1) if sr is None else sr
    if sr in (1, None) and (sc is None or sc >= max(r, 1)):
        return cpu_blas_call.TRANS, max(r, 1) if sc is None else sc
    return None


@functools.lru_cache(maxsize=None)
def native_gemm():
    """The process's NativeGemm. float32 products run mlbh's own kernel on CPUs with
    AVX-512 (measured there as fast as OpenBLAS 0.3.31 or faster on every product of the GPT
    step: BENCHMARKS.md, session 15) and wherever numpy's BLAS is not an OpenBLAS with
    per-thread counts; the rest run that OpenBLAS where there is one, else numpy."""
    found, int_type, own = _choice()
    if found is None:
        return own_gemm()
    gemms, set_threads, _ = found
    if own:
        gemms = {**gemms, "float32": _own_kernel(host_features(), int_type)[0]}
    return NativeGemm(gemms, set_threads, int_type)


def module_sources() -> list:
    """The LLVM modules native_gemm() loads, to compile ahead with a program's kernels."""
    _, int_type, own = _choice()
    sources = [cpu_blas_call.module_source(int_type)]
    if own:
        sources.append(cpu_gemm_ir.module_source(host_features(), int_type))
    return sources


def _choice():
    """(_openblas(), the BLAS integer type, whether float32 products run the own kernel)."""
    found = _openblas()
    return found, "i64" if found is None else found[2], found is None or "+avx512f" in host_features().split(",")


@functools.lru_cache(maxsize=None)
def openblas_gemm():
    """A NativeGemm over numpy's OpenBLAS alone, or None where it has no per-thread counts."""
    found = _openblas()
    return None if found is None else NativeGemm(*found)


@functools.lru_cache(maxsize=None)
def own_gemm(features=None):
    """A NativeGemm of float32 products over mlbh's own kernel (codegen/cpu_gemm_ir.py),
    tiled for this CPU or for the one LLVM's `features` describe."""
    gemm, stand_in = _own_kernel(host_features() if features is None else features, "i64")
    return NativeGemm({"float32": gemm}, stand_in, "i64")


@functools.lru_cache(maxsize=None)
def _own_kernel(features, int_type):
    """(address of mlbh's own sgemm, of its thread-count stand-in), sizes as int_type."""
    found = cpu_jit.load_module(cpu_gemm_ir.module_source(features, int_type),
                                {cpu_gemm_ir.FUNCTION, cpu_gemm_ir.THREADS_STAND_IN}, pinned=True)
    return found[cpu_gemm_ir.FUNCTION], found[cpu_gemm_ir.THREADS_STAND_IN]


@functools.lru_cache(maxsize=None)
def _openblas():
    """({numpy dtype name: gemm address}, per-thread count setter's address, BLAS integer
    type) of numpy's OpenBLAS where it has per-thread counts (0.3.27+), else None."""
    for path in loaded_openblas_paths():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        if not hasattr(library, "openblas_set_num_threads_local"):
            continue
        for symbols, int_type in _SYMBOLS.items():
            if all(hasattr(library, s) for s in symbols):
                gemms = {dtype: ctypes.cast(getattr(library, symbol), ctypes.c_void_p).value
                         for dtype, symbol in zip(cpu_blas_call.FUNCTIONS, symbols)}
                return gemms, ctypes.cast(library.openblas_set_num_threads_local, ctypes.c_void_p).value, int_type
    return None
