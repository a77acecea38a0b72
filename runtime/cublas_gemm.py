"""bfloat16 GEMMs on cuBLAS: bf16 operands, fp32 accumulation, one strided-batched call.

CuPy has no bfloat16 dtype, so cupy.matmul cannot run these; cuBLAS's
cublasGemmStridedBatchedEx can, on tensor cores, reading the uint16 bit patterns the
backend stores bf16 in. cuBLAS is column-major: a row-major stack C = A . B (m x n,
per batch) is computed as the column-major C^T = B^T . A^T, so B is cuBLAS's first
operand and A its second. A row-major matrix with row stride ld is, read column-major,
its own transpose with leading dimension ld (operation N); a column-major one (unit row
stride) is read as itself and transposed by cuBLAS (operation T). Any other layout is
copied first.

`plan_gemm` works on shapes and strides only, so a test checks it against a literal
model of cuBLAS's contract without a GPU.
"""
from dataclasses import dataclass

import numpy as np

OP_N, OP_T = 0, 1
CUDA_R_16BF = 14
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1


@dataclass(frozen=True)
class Operand:
    op: int       # OP_N or OP_T, as cuBLAS reads this operand
    ld: int       # leading dimension, elements
    stride: int   # elements between matrices of the batch (0 for a batch of one)


@dataclass(frozen=True)
class GemmPlan:
    m: int  # cuBLAS's m, n, k: C^T is m x n, so m is the row-major n
    n: int
    k: int
    first: Operand   # row-major B
    second: Operand  # row-major A
    ldc: int
    stride_c: int
    batch: int


def matrix_layout(shape, strides):
    """How cuBLAS reads a row-major (batch, rows, cols) stack with these element strides,
    wanting its transpose: an Operand, or None when neither rows nor columns are
    unit-stride (copy it first)."""
    batch, rows, cols = shape
    sb, sr, sc = strides
    if rows == 1:  # the row stride is never followed: pick the one that makes a layout
        sr = max(cols, 1) if sc == 1 else 1
    if cols == 1:
        sc = max(rows, 1) if sr == 1 else 1
    stride = sb if batch > 1 else 0
    if sc == 1 and sr >= max(cols, 1):
        return Operand(OP_N, sr, stride)
    if sr == 1 and sc >= max(rows, 1):
        return Operand(OP_T, sc, stride)
    return None


def plan_gemm(a_shape, a_strides, b_shape, b_strides):
    """The cuBLAS call for row-major stacks a (batch, m, k) . b (batch, k, n) into a
    contiguous (batch, m, n); both operands must have a matrix_layout."""
    nb, m, k = a_shape
    n = b_shape[2]
    first, second = matrix_layout(b_shape, b_strides), matrix_layout(a_shape, a_strides)
    if first is None or second is None:
        raise ValueError(f"no cuBLAS layout for strides {a_strides} . {b_strides}: copy the operand first")
    return GemmPlan(n, m, k, first, second, ldc=max(n, 1), stride_c=m * n, batch=nb)


def gemm_bf16(cupy, out, a3, b3):
    """out (flat, batch*m*n) = a3 (batch, m, k) . b3 (batch, k, n), all bf16 bits as
    uint16, accumulated in fp32."""
    from cupy_backends.cuda.libs import cublas

    if out.size == 0:
        return
    if a3.shape[2] == 0:
        out.fill(0)
        return
    a3, b3 = (x if matrix_layout(x.shape, element_strides(x)) else cupy.ascontiguousarray(x) for x in (a3, b3))
    plan = plan_gemm(a3.shape, element_strides(a3), b3.shape, element_strides(b3))
    handle = cupy.cuda.device.get_cublas_handle()
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    cublas.gemmStridedBatchedEx(
        handle, plan.first.op, plan.second.op, plan.m, plan.n, plan.k,
        _ONE.ctypes.data, b3.data.ptr, CUDA_R_16BF, plan.first.ld, plan.first.stride,
        a3.data.ptr, CUDA_R_16BF, plan.second.ld, plan.second.stride,
        _ZERO.ctypes.data, out.data.ptr, CUDA_R_16BF, plan.ldc, plan.stride_c,
        plan.batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)


def element_strides(x):
    return [s // x.itemsize for s in x.strides]


_ONE = np.ones(1, np.float32)   # alpha and beta: host scalars of the compute type (fp32)
_ZERO = np.zeros(1, np.float32)
