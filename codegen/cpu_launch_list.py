"""LLVM IR of the loop that runs a CPU launch list: every kernel and GEMM of one call of
a program, back to back, in native code.

Called from Python once per call (runtime/cpu_launch_list.py) instead of once per step:
the interpreter's tens of microseconds per step came to ~5 ms of the anchor GPT's ~185
steps per micro-step.

A launch table holds one row of 5 i64 per step:
    fn      a packed entry, fn(lo, hi, n, ptr args) (a kernel, or a split GEMM)
    rows    its rows [0, rows) (a GEMM's units)
    n       its n
    args    its argument array
    shares  how many cores share the rows (1: the calling thread runs them all)
A step with shares > 1 goes through the fork-join (codegen/cpu_fork_join.py), shares
capped at max_shares: 1 when the workers are busy or absent (fork_join may be null then).
When profiling, `times` (else null) gets count + 1 clock readings in nanoseconds
(CLOCK_MONOTONIC): one before the first step and one after each, so a step's time is
measured where it runs, among its neighbours' cache traffic, with no interpreter between.

A GEMM operand that numpy could only give as a copy (attention's heads merged back into
rows: a reshape after a transpose) is copied by a step of its own, a strided copy, into a
scratch array the launch list owns. Its argument slots:
    0 source   1 destination (contiguous)   2 ndim (1..MAX_DIMS)
    3.. shape (MAX_DIMS slots)   3 + MAX_DIMS.. the source's strides in elements
Its rows are the source's rows (all axes but the last), copied as bits.
"""
ROW = 5  # i64 per table row
CLOCK_MONOTONIC = 1  # Linux's clock id
FUNCTION = "mlbh_run_launch_list"
MAX_DIMS = 8
# by element size: float32 only, since LLVM takes ~0.07 s to compile each (cold cache); a
# float64 operand stays a Python step
COPY_FUNCTIONS = {4: "mlbh_strided_copy32"}


def _strided_copy(name: str, bits: int) -> str:
    t = f"i{bits}"
    strides = 3 + MAX_DIMS
    return f"""
; {name}.packed: rows [lo, hi) of a strided array into a contiguous one (see the doc).
define void @{name}.packed(i64 %lo, i64 %hi, i64 %n, ptr %args) nounwind {{
entry:
  %src = load ptr, ptr %args
  %dst_p = getelementptr i64, ptr %args, i64 1
  %dst = load ptr, ptr %dst_p
  %nd_p = getelementptr i64, ptr %args, i64 2
  %nd = load i64, ptr %nd_p
  %last = sub i64 %nd, 1
  %inner_i = add i64 %last, 3
  %inner_p = getelementptr i64, ptr %args, i64 %inner_i
  %inner = load i64, ptr %inner_p
  %istride_i = add i64 %last, {strides}
  %istride_p = getelementptr i64, ptr %args, i64 %istride_i
  %istride = load i64, ptr %istride_p
  %rows = icmp slt i64 %lo, %hi
  %cols = icmp sgt i64 %inner, 0
  %any = and i1 %rows, %cols
  br i1 %any, label %row, label %exit

row:
  %r = phi i64 [ %lo, %entry ], [ %r1, %row_end ]
  br label %dim

dim:
  %d = phi i64 [ %last, %row ], [ %d1, %dim_body ]
  %rem = phi i64 [ %r, %row ], [ %q, %dim_body ]
  %off = phi i64 [ 0, %row ], [ %off1, %dim_body ]
  %outer = icmp sgt i64 %d, 0
  br i1 %outer, label %dim_body, label %copy

dim_body:
  %d1 = sub i64 %d, 1
  %size_i = add i64 %d1, 3
  %size_p = getelementptr i64, ptr %args, i64 %size_i
  %size = load i64, ptr %size_p
  %q = udiv i64 %rem, %size
  %idx = urem i64 %rem, %size
  %st_i = add i64 %d1, {strides}
  %st_p = getelementptr i64, ptr %args, i64 %st_i
  %st = load i64, ptr %st_p
  %step = mul i64 %idx, %st
  %off1 = add i64 %off, %step
  br label %dim

copy:
  %dst_row = mul i64 %r, %inner
  br label %elem

elem:
  %j = phi i64 [ 0, %copy ], [ %j1, %elem ]
  %sj = mul i64 %j, %istride
  %si = add i64 %off, %sj
  %sp = getelementptr {t}, ptr %src, i64 %si
  %v = load {t}, ptr %sp
  %di = add i64 %dst_row, %j
  %dp = getelementptr {t}, ptr %dst, i64 %di
  store {t} %v, ptr %dp
  %j1 = add i64 %j, 1
  %more = icmp slt i64 %j1, %inner
  br i1 %more, label %elem, label %row_end

row_end:
  %r1 = add i64 %r, 1
  %next = icmp slt i64 %r1, %hi
  br i1 %next, label %row, label %exit

exit:
  ret void
}}
"""


def module_source() -> str:
    copies = "".join(_strided_copy(name, 8 * size) for size, name in COPY_FUNCTIONS.items())
    return "; mlbh CPU launch list (codegen/cpu_launch_list.py)\n" + copies + f"""
declare i32 @clock_gettime(i32, ptr)

define internal void @clock_into(ptr %times, i64 %i) {{
entry:
  %ts = alloca [2 x i64]
  call i32 @clock_gettime(i32 {CLOCK_MONOTONIC}, ptr %ts)
  %s = load i64, ptr %ts
  %ns_p = getelementptr i64, ptr %ts, i64 1
  %ns = load i64, ptr %ns_p
  %s_ns = mul i64 %s, 1000000000
  %t = add i64 %s_ns, %ns
  %at = getelementptr i64, ptr %times, i64 %i
  store i64 %t, ptr %at
  ret void
}}

define void @{FUNCTION}(ptr %fork_join, ptr %slots, ptr %job, ptr %table, i64 %count, i64 %max_shares,
                        ptr %times) {{
entry:
  %timed = icmp ne ptr %times, null
  br i1 %timed, label %clock0, label %start

clock0:
  call void @clock_into(ptr %times, i64 0)
  br label %start

start:
  %any = icmp sgt i64 %count, 0
  br i1 %any, label %step, label %exit

step:
  %i = phi i64 [ 0, %start ], [ %i1, %next ]
  %row = mul i64 %i, {ROW}
  %fn_p = getelementptr i64, ptr %table, i64 %row
  %fn = load ptr, ptr %fn_p
  %rows_p = getelementptr i64, ptr %fn_p, i64 1
  %rows = load i64, ptr %rows_p
  %n_p = getelementptr i64, ptr %fn_p, i64 2
  %n = load i64, ptr %n_p
  %args_p = getelementptr i64, ptr %fn_p, i64 3
  %args = load ptr, ptr %args_p
  %shares_p = getelementptr i64, ptr %fn_p, i64 4
  %wanted = load i64, ptr %shares_p
  %capped = icmp slt i64 %wanted, %max_shares
  %shares = select i1 %capped, i64 %wanted, i64 %max_shares
  %split = icmp sgt i64 %shares, 1
  br i1 %split, label %forked, label %alone

forked:
  call void %fork_join(ptr %slots, ptr %job, ptr %fn, i64 %rows, i64 %n, ptr %args, i64 %shares)
  br label %ran

alone:
  call void %fn(i64 0, i64 %rows, i64 %n, ptr %args)
  br label %ran

ran:
  %i1 = add i64 %i, 1
  br i1 %timed, label %clock, label %next

clock:
  call void @clock_into(ptr %times, i64 %i1)
  br label %next

next:
  %more = icmp slt i64 %i1, %count
  br i1 %more, label %step, label %exit

exit:
  ret void
}}
"""
