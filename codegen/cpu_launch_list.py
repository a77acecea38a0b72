"""LLVM IR of the loop that runs a CPU launch list: every kernel and GEMM of one call of
a program, back to back, in native code.

Called from Python once per call (runtime/cpu_launch_list.py) instead of once per step,
which saved tens of microseconds of interpreter work per step: ~5 ms of the anchor GPT's
~185 steps per micro-step.

A launch table holds one row of 5 i64 per step:
    fn      a packed entry, fn(lo, hi, n, ptr args) (a kernel, or a split GEMM)
    rows    its rows [0, rows) (a GEMM's units)
    n       its n
    args    its argument array
    shares  how many cores share the rows (1: the calling thread runs them all)
A step with shares > 1 goes through the fork-join (codegen/cpu_fork_join.py), shares
capped at max_shares: 1 when the workers are busy or absent (fork_join may be null then).
"""
ROW = 5  # i64 per table row
FUNCTION = "mlbh_run_launch_list"


def module_source() -> str:
    return f"""; mlbh CPU launch list (codegen/cpu_launch_list.py)
define void @{FUNCTION}(ptr %fork_join, ptr %slots, ptr %job, ptr %table, i64 %count, i64 %max_shares) {{
entry:
  %any = icmp sgt i64 %count, 0
  br i1 %any, label %step, label %exit

step:
  %i = phi i64 [ 0, %entry ], [ %i1, %next ]
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
  br label %next

alone:
  call void %fn(i64 0, i64 %rows, i64 %n, ptr %args)
  br label %next

next:
  %i1 = add i64 %i, 1
  %more = icmp slt i64 %i1, %count
  br i1 %more, label %step, label %exit

exit:
  ret void
}}
"""
