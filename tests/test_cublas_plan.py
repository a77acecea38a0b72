"""The bf16 GEMM's cuBLAS call plan, checked without a GPU against a literal model of
cublasGemmStridedBatchedEx's column-major contract (as cuBLAS documents it)."""
import numpy as np
import pytest

from mlbh.runtime.cublas_gemm import OP_N, element_strides, matrix_layout, plan_gemm
from mlbh.runtime.executable import matrix_stacks


def cublas_strided_batched(transa, transb, m, n, k, A, lda, stride_a, B, ldb, stride_b, ldc, stride_c, batch):
    """C = op(A) . op(B) per batch, every matrix column-major in a flat buffer."""
    assert lda >= max(1, m if transa == OP_N else k)
    assert ldb >= max(1, k if transb == OP_N else n)
    assert ldc >= max(1, m)
    C = np.full(stride_c * (batch - 1) + ldc * (n - 1) + m, np.nan, np.float64)
    i, l, j = np.arange(m)[:, None], np.arange(k)[None, :], np.arange(n)[None, :]
    for p in range(batch):
        op_a = A[p * stride_a + (i + l * lda if transa == OP_N else l + i * lda)]
        op_b = B[p * stride_b + (l.T + j * ldb if transb == OP_N else j + l.T * ldb)]
        C[p * stride_c + i + j * ldc] = op_a.astype(np.float64) @ op_b
    return C


def flat_from(x):
    """x's memory as a flat buffer starting at x's first element."""
    root = x
    while root.base is not None:
        root = root.base
    start = (x.__array_interface__["data"][0] - root.__array_interface__["data"][0]) // x.itemsize
    return root.reshape(-1)[start:]


def run_plan(a3, b3):
    """What gemm_bf16 does with these stacks, run through the cuBLAS model: row-major C."""
    a3, b3 = (x if matrix_layout(x.shape, element_strides(x)) else np.ascontiguousarray(x) for x in (a3, b3))
    plan = plan_gemm(a3.shape, element_strides(a3), b3.shape, element_strides(b3))
    c = cublas_strided_batched(plan.first.op, plan.second.op, plan.m, plan.n, plan.k,
                               flat_from(b3), plan.first.ld, plan.first.stride,
                               flat_from(a3), plan.second.ld, plan.second.stride,
                               plan.ldc, plan.stride_c, plan.batch)
    nb, m, n = a3.shape[0], a3.shape[1], b3.shape[2]
    return c.reshape(nb, m, n)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("a_shape, b_shape, dims", [
    ((5, 7), (7, 3), (((1,), (0,)), ((), ()))),                 # x . W
    ((5, 7), (3, 7), (((1,), (1,)), ((), ()))),                 # x . W^T (a transposed view)
    ((2, 6, 4), (2, 6, 5), (((0, 1), (0, 1)), ((), ()))),       # weight gradient: contract batch and seq
    ((2, 3, 6, 4), (2, 3, 4, 6), (((3,), (2,)), ((0, 1), (0, 1)))),  # batched per-head products
    ((2, 3, 6, 4), (2, 3, 6, 4), (((3,), (3,)), ((0, 1), (0, 1)))),  # q . k^T
    ((2, 3, 6, 6), (2, 3, 6, 4), (((2,), (2,)), ((0, 1), (0, 1)))),  # p^T . dv
    ((1, 7), (7, 1), (((1,), (0,)), ((), ()))),                 # one row, one column
    ((4, 1), (1, 6), (((1,), (0,)), ((), ()))),                 # k = 1
])
def test_plan_matches_dot_general(a_shape, b_shape, dims):
    a, b = randn(*a_shape, seed=1), randn(*b_shape, seed=2)
    a3, b3 = matrix_stacks(np, a, b, dims)
    want = np.matmul(a3.astype(np.float64), b3.astype(np.float64))
    np.testing.assert_allclose(run_plan(a3, b3), want, rtol=1e-12, atol=1e-12)


def test_heads_inside_packed_qkv_are_read_in_place_or_copied():
    """(batch, seq, 3, heads, d) packed activations, heads picked by strided views."""
    qkv = randn(2, 6, 3, 2, 4)
    q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # (batch, heads, seq, d), strided
    k = qkv[:, :, 1].transpose(0, 2, 1, 3)
    a3, b3 = matrix_stacks(np, q, k, (((3,), (3,)), ((0, 1), (0, 1))))
    want = np.einsum("bhsd,bhtd->bhst", q.astype(np.float64), k).reshape(a3.shape[0], 6, 6)
    np.testing.assert_allclose(run_plan(a3, b3), want, rtol=1e-12, atol=1e-12)


def test_padded_rows_use_the_leading_dimension_and_odd_strides_are_copied():
    buf = randn(4 * 10)
    padded = buf.reshape(4, 10)[:, :7][None]           # row stride 10, 7 columns: ld 10
    assert matrix_layout(padded.shape, element_strides(padded)).ld == 10
    every_other = buf.reshape(4, 10)[:, ::2][None]     # no unit stride: copied first
    assert matrix_layout(every_other.shape, element_strides(every_other)) is None
    b = randn(1, 7, 3, seed=3)
    for a3 in (padded, every_other[:, :, :5]):
        bb = b[:, :a3.shape[2]]
        np.testing.assert_allclose(run_plan(a3, bb), np.matmul(a3.astype(np.float64), bb), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="copy the operand"):
        plan_gemm(every_other.shape, element_strides(every_other), (1, 5, 3), (15, 3, 1))


def test_only_bfloat16_dots_take_the_bf16_gemm(monkeypatch):
    """bfloat16 lives on the device as uint16 bits; a program's genuine uint16 dot_general
    must not be read as bf16 (the backend routes by the program's dtype, not the storage's).
    Run with numpy standing in for CuPy: no GPU needed to check the routing."""
    from mlbh.runtime import cuda_backend
    taken = []
    monkeypatch.setattr(cuda_backend, "gemm_bf16", lambda xp, out, a3, b3: taken.append((a3.shape, b3.shape)))
    backend = object.__new__(cuda_backend.CudaBackend)
    backend.xp = np
    dims = (((1,), (0,)), ((), ()))
    a, b = np.array([[3, 4], [5, 6]], np.uint16), np.array([[7], [8]], np.uint16)
    out = np.zeros(2, np.uint16)
    backend.dot(out, a, b, dims, "uint16")
    np.testing.assert_array_equal(out, [3 * 7 + 4 * 8, 5 * 7 + 6 * 8])
    assert taken == []
    backend.dot(out, a, b, dims, "bfloat16")
    assert taken == [((1, 2, 2), (1, 2, 1))]
