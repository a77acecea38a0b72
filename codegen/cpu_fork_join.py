"""LLVM IR of the CPU backend's fork-join: native worker threads that run shares of a
kernel's rows, started once and woken in microseconds.

A Python thread pool takes 80-130 us per share on a small VM, more than most fused kernels
run; these workers wait in native code, so a split costs a few microseconds.

Memory, laid out by the runtime (runtime/cpu_pool.py), one 64-byte line per worker slot:
    slot i32[0] gen       bumped by the caller to hand the worker a share (the futex word)
         i32[1] done      set to gen by the worker when its share is finished
         i32[2] sleeping  1 while the worker waits in the kernel (futex), not spinning
         i32[3] quit      1 to end the worker loop at its next gen
         i64 at byte 16, 24: the share's rows [lo, hi)
and one line for the job: the kernel's packed entry (fn), its n, its argument array.

A waiting worker checks gen, yielding the core between checks (OpenBLAS's own threads
share it), for SPIN_CHECKS checks; then it sleeps on a futex. The caller publishes a
share with a sequentially consistent store of gen and, if the worker said it sleeps, wakes
it: together with the worker's store of sleeping before its last check of gen, one of
the two always sees the other.
"""

SPIN_CHECKS = 200000
SYS_FUTEX = {"x86_64": 202, "aarch64": 98}  # Linux's futex syscall number, by machine
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129


def packed_entry(name: str, n_params: int) -> str:
    """A kernel's entry with one argument array instead of a pointer per buffer, so that
    any kernel can be called through one signature (from Python and from the workers)."""
    lines = [f"define void @{name}.packed(i64 %lo, i64 %hi, i64 %n, ptr %args) nounwind {{"]
    for i in range(n_params):
        lines += [f"  %g{i} = getelementptr ptr, ptr %args, i64 {i}", f"  %a{i} = load ptr, ptr %g{i}"]
    params = "".join(f", ptr %a{i}" for i in range(n_params))
    lines += [f"  call void @{name}(i64 %lo, i64 %hi, i64 %n{params})", "  ret void", "}"]
    return "\n".join(lines) + "\n"


def module_source(machine: str) -> str:
    """The module for this machine (platform.machine() on Linux: a key of SYS_FUTEX). A
    fresh slot's gen is 0, the worker's first value seen."""
    x86 = machine == "x86_64"
    futex = SYS_FUTEX[machine]
    pause = "  call void @llvm.x86.sse2.pause()\n" if x86 else ""
    declare_pause = "declare void @llvm.x86.sse2.pause()\n" if x86 else ""
    return f"""; mlbh CPU fork-join (codegen/cpu_fork_join.py)
declare i32 @sched_yield()
declare i64 @syscall(i64, ...)
{declare_pause}
; The worker loop: run every share handed over in this slot until quit.
define void @mlbh_worker(ptr %slot, ptr %job) {{
entry:
  %done_p = getelementptr i32, ptr %slot, i64 1
  %sleeping_p = getelementptr i32, ptr %slot, i64 2
  %quit_p = getelementptr i32, ptr %slot, i64 3
  %lo_p = getelementptr i64, ptr %slot, i64 2
  %hi_p = getelementptr i64, ptr %slot, i64 3
  %n_p = getelementptr i64, ptr %job, i64 1
  %args_p = getelementptr i64, ptr %job, i64 2
  br label %wait

wait:
  %seen = phi i32 [ 0, %entry ], [ %gen, %work ], [ %seen, %spin ], [ %seen, %slept ]
  %checks = phi i32 [ 0, %entry ], [ 0, %work ], [ %checks1, %spin ], [ 0, %slept ]
  %gen = load atomic i32, ptr %slot acquire, align 4
  %fresh = icmp ne i32 %gen, %seen
  br i1 %fresh, label %handed, label %patience

handed:
  %quit = load atomic i32, ptr %quit_p acquire, align 4
  %stop = icmp ne i32 %quit, 0
  br i1 %stop, label %exit, label %work

work:
  %fn = load ptr, ptr %job
  %n = load i64, ptr %n_p
  %args = load ptr, ptr %args_p
  %lo = load i64, ptr %lo_p
  %hi = load i64, ptr %hi_p
  call void %fn(i64 %lo, i64 %hi, i64 %n, ptr %args)
  store atomic i32 %gen, ptr %done_p release, align 4
  br label %wait

patience:
  %checks1 = add i32 %checks, 1
  %tired = icmp ugt i32 %checks1, {SPIN_CHECKS}
  br i1 %tired, label %sleep, label %spin

spin:
  call i32 @sched_yield()
  br label %wait

sleep:
  store atomic i32 1, ptr %sleeping_p seq_cst, align 4
  %again = load atomic i32, ptr %slot seq_cst, align 4
  %same = icmp eq i32 %again, %seen
  br i1 %same, label %futex, label %slept

futex:
  call i64 (i64, ...) @syscall(i64 {futex}, ptr %slot, i32 {FUTEX_WAIT_PRIVATE}, i32 %seen, ptr null)
  br label %slept

slept:
  store atomic i32 0, ptr %sleeping_p seq_cst, align 4
  br label %wait

exit:
  ret void
}}

; Hand slot a share: rows [lo, hi) of the job already written.
define void @mlbh_hand(ptr %slot, i64 %lo, i64 %hi) {{
entry:
  %sleeping_p = getelementptr i32, ptr %slot, i64 2
  %lo_p = getelementptr i64, ptr %slot, i64 2
  %hi_p = getelementptr i64, ptr %slot, i64 3
  store i64 %lo, ptr %lo_p
  store i64 %hi, ptr %hi_p
  %gen = load atomic i32, ptr %slot monotonic, align 4
  %next = add i32 %gen, 1
  store atomic i32 %next, ptr %slot seq_cst, align 4
  %sleeping = load atomic i32, ptr %sleeping_p seq_cst, align 4
  %asleep = icmp ne i32 %sleeping, 0
  br i1 %asleep, label %wake, label %done

wake:
  call i64 (i64, ...) @syscall(i64 {futex}, ptr %slot, i32 {FUTEX_WAKE_PRIVATE}, i32 1)
  br label %done

done:
  ret void
}}

; End slot's worker loop: quit, then a new gen (the worker's wake-up).
define void @mlbh_stop(ptr %slot) {{
  %quit_p = getelementptr i32, ptr %slot, i64 3
  store atomic i32 1, ptr %quit_p seq_cst, align 4
  call void @mlbh_hand(ptr %slot, i64 0, i64 0)
  ret void
}}

; Run fn over rows [0, rows) in `shares` contiguous shares: shares 1.. on the workers of
; slots[0..], share 0 on the calling thread; return when all are done.
define void @mlbh_fork_join(ptr %slots, ptr %job, ptr %fn, i64 %rows, i64 %n, ptr %args, i64 %shares) {{
entry:
  store ptr %fn, ptr %job
  %n_p = getelementptr i64, ptr %job, i64 1
  store i64 %n, ptr %n_p
  %args_p = getelementptr i64, ptr %job, i64 2
  store ptr %args, ptr %args_p
  br label %hand

hand:
  %w = phi i64 [ 1, %entry ], [ %w1, %hand ]
  %lo_num = mul i64 %rows, %w
  %lo = udiv i64 %lo_num, %shares
  %w1 = add i64 %w, 1
  %hi_num = mul i64 %rows, %w1
  %hi = udiv i64 %hi_num, %shares
  %wi = sub i64 %w, 1
  %slot = getelementptr [64 x i8], ptr %slots, i64 %wi
  call void @mlbh_hand(ptr %slot, i64 %lo, i64 %hi)
  %more = icmp ult i64 %w1, %shares
  br i1 %more, label %hand, label %own

own:
  %own_hi = udiv i64 %rows, %shares
  call void %fn(i64 0, i64 %own_hi, i64 %n, ptr %args)
  br label %join

join:
  %j = phi i64 [ 1, %own ], [ %j1, %joined ]
  %ji = sub i64 %j, 1
  %jslot = getelementptr [64 x i8], ptr %slots, i64 %ji
  %jdone_p = getelementptr i32, ptr %jslot, i64 1
  %jgen = load atomic i32, ptr %jslot monotonic, align 4
  br label %poll

poll:
  %d = load atomic i32, ptr %jdone_p acquire, align 4
  %finished = icmp eq i32 %d, %jgen
  br i1 %finished, label %joined, label %relax

relax:
{pause}  br label %poll

joined:
  %j1 = add i64 %j, 1
  %all = icmp uge i64 %j1, %shares
  br i1 %all, label %exit, label %join

exit:
  ret void
}}
"""
