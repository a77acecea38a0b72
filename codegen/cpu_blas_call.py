"""LLVM IR of a BLAS GEMM split into shares, run by the CPU backend's native workers.

A dot_general on the CPU is a stack of row-major products C[b] = op(A[b]) . op(B[b]), each
cut into a grid of row chunks x column chunks. Unit u = (b * row chunks + i) * column
chunks + j is cell (i, j) of product b: rows [M i / row chunks, M (i+1) / row chunks) and
the columns alike, computed by one single-threaded cblas_?gemm call. A share of units
[lo, hi) runs on one core (codegen/cpu_fork_join.py), so two cores run two halves of one
product, or halves of a batch, without OpenBLAS's own threads (which would fight the
workers for the cores).

The argument array (i64 slots), filled by runtime/cpu_gemm.py:
    0 cblas_?gemm (or mlbh's own, codegen/cpu_gemm_ir.py)
    1 openblas_set_num_threads_local (or the own GEMM's stand-in)   2 transA   3 transB
    4 M  5 N  6 K   7 A  8 lda  9 A's batch offsets   10 B  11 ldb  12 B's batch offsets
    13 C  14 ldc  15 C's batch stride   16 row chunks   17 column chunks
Offsets (i64 arrays, one per product: any batch layout, no copy) and strides in elements;
trans is CBLAS's 111 (as stored) or 112 (transposed). The BLAS integer is i64 for an ILP64
build such as numpy's scipy-openblas64, else i32.
"""
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
SLOTS = 18
A_SLOT, B_SLOT, C_SLOT = 7, 10, 13  # the operands' pointers
FUNCTIONS = {"float32": "mlbh_gemm_f32", "float64": "mlbh_gemm_f64"}


def _gemm(name: str, real: str, int_type: str) -> str:
    def arg(i, ty="i64"):
        return f"  %s{i}p = getelementptr i64, ptr %args, i64 {i}\n  %s{i} = load {ty}, ptr %s{i}p\n"
    loads = "".join(arg(i, "ptr") if i in (0, 1, 7, 9, 10, 12, 13) else arg(i) for i in range(SLOTS))
    to_int = "" if int_type == "i64" else "".join(
        f"  %t{v} = trunc i64 %{v} to {int_type}\n" for v in ("m", "nn", "s6", "s8", "s11", "s14"))
    I = (lambda v: f"%{v}") if int_type == "i64" else (lambda v: f"%t{v}")
    return f"""; {name}.packed: units [lo, hi) of the GEMM described by args (see the module's doc).
define void @{name}.packed(i64 %lo, i64 %hi, i64 %n, ptr %args) nounwind {{
entry:
{loads}  %ta = trunc i64 %s2 to i32
  %tb = trunc i64 %s3 to i32
  %saved = call i32 %s1(i32 1)
  %any = icmp ult i64 %lo, %hi
  br i1 %any, label %unit, label %exit

unit:
  %u = phi i64 [ %lo, %entry ], [ %u1, %unit ]
  %grid = mul i64 %s16, %s17
  %b = udiv i64 %u, %grid
  %cell = urem i64 %u, %grid
  %ci = udiv i64 %cell, %s17
  %cj = urem i64 %cell, %s17
  %ci1 = add i64 %ci, 1
  %cj1 = add i64 %cj, 1
  %r0m = mul i64 %s4, %ci
  %r0 = udiv i64 %r0m, %s16
  %r1m = mul i64 %s4, %ci1
  %r1 = udiv i64 %r1m, %s16
  %m = sub i64 %r1, %r0
  %c0m = mul i64 %s5, %cj
  %c0 = udiv i64 %c0m, %s17
  %c1m = mul i64 %s5, %cj1
  %c1 = udiv i64 %c1m, %s17
  %nn = sub i64 %c1, %c0
  %a_trans = icmp eq i32 %ta, {TRANS}
  %a_row = select i1 %a_trans, i64 1, i64 %s8
  %a_skip = mul i64 %r0, %a_row
  %a_batch_p = getelementptr i64, ptr %s9, i64 %b
  %a_batch = load i64, ptr %a_batch_p
  %a_off = add i64 %a_batch, %a_skip
  %a = getelementptr {real}, ptr %s7, i64 %a_off
  %b_trans = icmp eq i32 %tb, {TRANS}
  %b_col = select i1 %b_trans, i64 %s11, i64 1
  %b_skip = mul i64 %c0, %b_col
  %b_batch_p = getelementptr i64, ptr %s12, i64 %b
  %b_batch = load i64, ptr %b_batch_p
  %b_off = add i64 %b_batch, %b_skip
  %bp = getelementptr {real}, ptr %s10, i64 %b_off
  %c_skip = mul i64 %r0, %s14
  %c_batch = mul i64 %b, %s15
  %c_cell = add i64 %c_skip, %c0
  %c_off = add i64 %c_batch, %c_cell
  %cp = getelementptr {real}, ptr %s13, i64 %c_off
{to_int}  call void %s0(i32 {ROW_MAJOR}, i32 %ta, i32 %tb, {int_type} {I("m")}, {int_type} {I("nn")}, {int_type} {I("s6")}, {real} 1.0, ptr %a, {int_type} {I("s8")}, ptr %bp, {int_type} {I("s11")}, {real} 0.0, ptr %cp, {int_type} {I("s14")})
  %u1 = add i64 %u, 1
  %more = icmp ult i64 %u1, %hi
  br i1 %more, label %unit, label %exit

exit:
  call i32 %s1(i32 %saved)
  ret void
}}
"""


def module_source(int_type: str) -> str:
    """Both GEMM entries, for a BLAS whose integers are int_type (i64 or i32)."""
    return ("; mlbh split GEMMs (codegen/cpu_blas_call.py)\n"
            + _gemm(FUNCTIONS["float32"], "float", int_type) + _gemm(FUNCTIONS["float64"], "double", int_type))
