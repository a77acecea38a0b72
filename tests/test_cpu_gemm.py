"""dot_general on the CPU backend as GEMM calls split across the native workers
(runtime/cpu_gemm.py): every operand layout against numpy, with and without the split,
through OpenBLAS (where numpy has a suitable one) and through mlbh's own kernel."""
import ctypes

import numpy as np
import pytest

from mlbh.codegen.cpu_target import host_features
from mlbh.runtime import cpu_gemm
from mlbh.runtime.blas_threads import loaded_openblas_paths
from mlbh.runtime.cpu_pool import fork_join_pool
from mlbh.runtime.executable import dot_into

gemm = cpu_gemm.native_gemm()
openblas = cpu_gemm.openblas_gemm()
needs_openblas = pytest.mark.skipif(openblas is None, reason="numpy's BLAS is not an OpenBLAS with per-thread counts")
GEMMS = [pytest.param("openblas", marks=needs_openblas), "own", "native"]
rng = np.random.default_rng(0)


def _case(name):
    """(a, b, dimension_numbers) of one operand layout."""
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "plain": (r(64, 48), r(48, 40), (((1,), (0,)), ((), ()))),
        "a_transposed": (r(48, 64), r(48, 40), (((0,), (0,)), ((), ()))),
        "b_transposed": (r(64, 48), r(40, 48), (((1,), (1,)), ((), ()))),
        "both_transposed_views": (r(48, 64).T, r(40, 48).T, (((1,), (0,)), ((), ()))),
        # attention's layout: batch and head axes that do not merge, heads inside the rows
        "heads_batched": (r(2, 16, 3, 8).transpose(0, 2, 1, 3), r(2, 16, 3, 8).transpose(0, 2, 3, 1),
                          (((3,), (2,)), ((0, 1), (0, 1)))),
        "contract_over_two_axes": (r(4, 32, 24), r(4, 32, 40), (((0, 1), (0, 1)), ((), ()))),
        "broadcast_batch": (np.broadcast_to(r(1, 20, 12), (5, 20, 12)), r(5, 12, 9), (((2,), (1,)), ((0,), (0,)))),
        "length_one_axes": (r(1, 7, 1), r(1, 1, 5), (((2,), (1,)), ((0,), (0,)))),
        "negative_strides": (r(30, 20)[::-1], r(20, 10)[:, ::-1], (((1,), (0,)), ((), ()))),
        "strided_rows": (r(30, 40)[::2, :20], r(20, 10), (((1,), (0,)), ((), ()))),
        "empty_contraction": (r(6, 0), r(0, 4), (((1,), (0,)), ((), ()))),
        "empty_rows": (r(0, 5), r(5, 4), (((1,), (0,)), ((), ()))),
        "float64": (r(33, 17).astype(np.float64), r(17, 21).astype(np.float64), (((1,), (0,)), ((), ()))),
        "big_enough_to_split": (r(256, 128), r(128, 96), (((1,), (0,)), ((), ()))),
        "too_few_rows_to_split": (r(3, 40), r(40, 64), (((1,), (0,)), ((), ()))),  # split along N
    }[name]


CASES = ["plain", "a_transposed", "b_transposed", "both_transposed_views", "heads_batched",
         "contract_over_two_axes", "broadcast_batch", "length_one_axes", "negative_strides",
         "strided_rows", "empty_contraction", "empty_rows", "float64", "big_enough_to_split", "too_few_rows_to_split"]


@pytest.mark.parametrize("which", GEMMS)
@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("name", CASES)
def test_native_gemm_matches_numpy(name, split, which, monkeypatch):
    native = {"openblas": openblas, "own": cpu_gemm.own_gemm(), "native": gemm}[which]
    a, b, dims = _case(name)
    if split:  # every product split, into rows of as few as 16
        monkeypatch.setattr(cpu_gemm, "MIN_SPLIT_FLOPS", 0)
    want_shape = _out_shape(a, b, dims)
    want = np.empty(int(np.prod(want_shape)), a.dtype)
    dot_into(np, want, a, b, dims)
    got = np.full(want.size, np.nan, a.dtype)
    pool = fork_join_pool(2) if split else None
    if a.dtype not in native.entries:  # numpy's to multiply
        assert not native.run(got, a, b, dims, pool, 2) and np.isnan(got).all()
        return
    assert native.run(got, a, b, dims, pool, 2 if split else 1)
    tol = 1e-12 if a.dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@needs_openblas
def test_float32_runs_the_own_kernel_on_avx512_float64_openblas():
    """float32 products through mlbh's kernel where it is the faster (AVX-512), else OpenBLAS."""
    float32, float64 = (gemm.entries[np.dtype(t)][2] for t in ("float32", "float64"))
    avx512 = "+avx512f" in host_features().split(",")
    assert (float32 != openblas.entries[np.dtype("float32")][2]) == avx512
    assert float64 == openblas.entries[np.dtype("float64")][2]


def test_other_dtypes_are_left_to_numpy():
    a, b = np.arange(12, dtype=np.int32).reshape(3, 4), np.ones((4, 2), np.int32)
    out = np.zeros(6, np.int32)
    assert not gemm.run(out, a, b, (((1,), (0,)), ((), ())), None, 1)
    assert not out.any()


@pytest.mark.parametrize("tile", [None, "+avx2,+fma", ""], ids=["host", "avx2", "no_simd_flags"])
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (13, 7, 33), (25, 300, 70), (37, 600, 531), (100, 257, 1)])
@pytest.mark.parametrize("layout", ["NN", "TN", "NT", "TT"])
def test_own_kernel_covers_tile_edges_and_k_blocks(m, k, n, layout, tile):
    """Row counts that are not a multiple of the register tile, column counts past a
    panel or a packed block, contractions longer than one k block (added, not stored);
    with the tile of this CPU and those of the others (their code runs here too)."""
    a = rng.standard_normal((m, k) if layout[0] == "N" else (k, m)).astype(np.float32)
    b = rng.standard_normal((k, n) if layout[1] == "N" else (n, k)).astype(np.float32)
    a_view, b_view = (a if layout[0] == "N" else a.T), (b if layout[1] == "N" else b.T)
    got = np.full(m * n, np.nan, np.float32)
    assert cpu_gemm.own_gemm(tile).run(got, a_view, b_view, (((1,), (0,)), ((), ())), None, 1)
    want = a_view.astype(np.float64) @ b_view
    np.testing.assert_allclose(got.reshape(m, n), want, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@needs_openblas
def test_openblas_thread_count_is_restored_after_a_call():
    """The calls hold OpenBLAS to one thread on the calling thread only while they run."""
    lib = next(lib for lib in map(ctypes.CDLL, loaded_openblas_paths())
               if hasattr(lib, "openblas_set_num_threads_local"))
    before = lib.openblas_set_num_threads_local(3)
    try:
        a, b, dims = _case("plain")
        openblas.run(np.empty(64 * 40, np.float32), a, b, dims, None, 1)
        assert lib.openblas_set_num_threads_local(3) == 3
    finally:
        lib.openblas_set_num_threads_local(before)


def _out_shape(a, b, dims):
    (lc, rc), (lb, rb) = dims
    return ([a.shape[d] for d in lb] + [a.shape[d] for d in range(a.ndim) if d not in lc and d not in lb]
            + [b.shape[d] for d in range(b.ndim) if d not in rc and d not in rb])
