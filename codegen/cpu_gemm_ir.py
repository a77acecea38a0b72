"""LLVM IR of mlbh's own float32 GEMM for the CPU: C = A . B, one core, any layouts.

    C[i, j] = sum_k A[i, k] B[k, j]      A[i, k] at a + i*ars + k*acs, B[k, j] at b + k*brs + j*bcs,
                                         C row-major with leading dimension ldc

The CPU backend's float32 products run this kernel on AVX-512 CPUs (where it is as fast as
OpenBLAS 0.3.31 or faster on the GPT step's products) and wherever numpy's BLAS cannot be
held to one thread per call (runtime/cpu_gemm.py). It is the textbook register-blocked
GEMM (Goto / BLIS):

    for each K block of KC, each N block of NC:
        pack B's block into column panels of NR = 2 vectors, k-major (zero past N)
        for each MR rows of A (packed k-major when A is read transposed), each panel:
            MR x NR accumulators in registers; per k: two vector loads of the panel,
            MR broadcasts of A (read in place, any strides), 2 MR fused multiply-adds
            store (or add, after the first K block) under a mask of the panel's columns

MR x NR fills the vector registers: 12 x 32 with AVX-512 (24 accumulators of 32 zmm),
6 x 16 with AVX2 (12 of 16 ymm), 6 x 8 otherwise. The packed block (KC x NC floats, 256
KiB with AVX-512) is a stack buffer of the calling thread. On one core of the 2-core
AVX-512 VM it runs 512 x 128 x 512 at 130-145 GFLOP/s, as OpenBLAS does. An A read
transposed (weight gradients: dW = x^T dy) is packed because its rows lie a leading
dimension apart, often a power of two whose lines share a few L1 sets: 2048 x 1024 x 64
went from 72 to 95 GFLOP/s (OpenBLAS 97). The pack costs a masked vector load or two per k.
"""
KC = 256  # k per block: a panel (KC x NR) stays in L1 while MR rows of A stream past it
PANELS = 8  # panels per packed block (NC = PANELS x NR columns)
FUNCTION = "mlbh_sgemm"
THREADS_STAND_IN = "mlbh_sgemm_threads"  # takes codegen/cpu_blas_call.py's thread-count slot


def shape_for(features: str):
    """(vector width W in floats, MR) for an LLVM feature string."""
    flags = set(features.split(","))
    if "+avx512f" in flags:
        return 16, 12
    if "+avx2" in flags and "+fma" in flags:
        return 8, 6
    return 4, 6


def _micro(mr: int, w: int) -> str:
    """C[0:mr, 0:cols] (+)= A[0:mr, 0:kc] . panel, the panel kc x NR k-major."""
    nr, V = 2 * w, f"<{w} x float>"
    L = [f"define internal void @micro{mr}(i64 %kc, ptr %a, i64 %ars, i64 %acs, ptr %bp, ptr %c, "
         f"i64 %ldc, i64 %cols, i1 %add) alwaysinline nounwind {{", "entry:"]
    for r in range(mr):
        L += [f"  %ro{r} = mul i64 %ars, {r}", f"  %ar{r} = getelementptr float, ptr %a, i64 %ro{r}"]
    L += ["  br label %loop", "loop:", "  %k = phi i64 [ 0, %entry ], [ %k1, %loop ]"]
    for r in range(mr):
        for v in range(2):
            L.append(f"  %s{r}_{v} = phi {V} [ zeroinitializer, %entry ], [ %t{r}_{v}, %loop ]")
    L += [f"  %bo = mul i64 %k, {nr}", "  %bq0 = getelementptr float, ptr %bp, i64 %bo",
          f"  %bq1 = getelementptr float, ptr %bq0, i64 {w}",
          f"  %b0 = load {V}, ptr %bq0, align 64", f"  %b1 = load {V}, ptr %bq1, align 64",
          "  %ao = mul i64 %k, %acs"]
    for r in range(mr):
        L += [f"  %ap{r} = getelementptr float, ptr %ar{r}, i64 %ao", f"  %x{r} = load float, ptr %ap{r}",
              f"  %xi{r} = insertelement {V} poison, float %x{r}, i32 0",
              f"  %xs{r} = shufflevector {V} %xi{r}, {V} poison, <{w} x i32> zeroinitializer"]
        for v in range(2):
            L.append(f"  %t{r}_{v} = call {V} @llvm.fma.v{w}f32({V} %xs{r}, {V} %b{v}, {V} %s{r}_{v})")
    L += ["  %k1 = add i64 %k, 1", "  %more = icmp ult i64 %k1, %kc", "  br i1 %more, label %loop, label %done",
          "done:", f"  %ci = insertelement <{w} x i64> poison, i64 %cols, i32 0",
          f"  %cs = shufflevector <{w} x i64> %ci, <{w} x i64> poison, <{w} x i32> zeroinitializer",
          f"  %ai = insertelement <{w} x i1> poison, i1 %add, i32 0",
          f"  %as = shufflevector <{w} x i1> %ai, <{w} x i1> poison, <{w} x i32> zeroinitializer"]
    lanes = ", ".join(f"i64 {i}" for i in range(w))
    L += [f"  %m0 = icmp slt <{w} x i64> <{lanes}>, %cs",
          f"  %cs1 = sub <{w} x i64> %cs, <{', '.join([f'i64 {w}'] * w)}>",
          f"  %m1 = icmp slt <{w} x i64> <{lanes}>, %cs1",
          f"  %ma0 = and <{w} x i1> %m0, %as", f"  %ma1 = and <{w} x i1> %m1, %as"]
    for r in range(mr):
        L += [f"  %co{r} = mul i64 %ldc, {r}", f"  %cr{r} = getelementptr float, ptr %c, i64 %co{r}"]
        for v in range(2):
            L += [f"  %cp{r}_{v} = getelementptr float, ptr %cr{r}, i64 {v * w}",
                  f"  %o{r}_{v} = call {V} @llvm.masked.load.v{w}f32.p0(ptr %cp{r}_{v}, i32 4, <{w} x i1> %ma{v}, "
                  f"{V} zeroinitializer)",
                  f"  %u{r}_{v} = fadd {V} %o{r}_{v}, %t{r}_{v}",
                  f"  call void @llvm.masked.store.v{w}f32.p0({V} %u{r}_{v}, ptr %cp{r}_{v}, i32 4, <{w} x i1> %m{v})"]
    L += ["  ret void", "}"]
    return "\n".join(L) + "\n"


def _pack(w: int) -> str:
    """buf = B[0:kc, 0:nc] as panels of NR columns, each kc x NR k-major, zero past nc."""
    nr, V = 2 * w, f"<{w} x float>"
    lanes = ", ".join(f"i64 {i}" for i in range(w))
    L = [f"define internal void @pack(ptr %b, i64 %brs, i64 %bcs, i64 %kc, i64 %nc, ptr %buf) nounwind {{",
         "entry:", "  %rowwise = icmp eq i64 %bcs, 1", "  br label %panel",
         "panel:", "  %p = phi i64 [ 0, %entry ], [ %p1, %panel_end ]",
         "  %left = sub i64 %nc, %p", f"  %small = icmp ult i64 %left, {nr}",
         f"  %cols = select i1 %small, i64 %left, i64 {nr}",
         "  %last = sub i64 %cols, 1",
         "  %po = mul i64 %p, %kc", "  %dst = getelementptr float, ptr %buf, i64 %po",
         "  %pc = mul i64 %p, %bcs", "  %src = getelementptr float, ptr %b, i64 %pc",
         f"  %ci = insertelement <{w} x i64> poison, i64 %cols, i32 0",
         f"  %cs = shufflevector <{w} x i64> %ci, <{w} x i64> poison, <{w} x i32> zeroinitializer",
         f"  %m0 = icmp slt <{w} x i64> <{lanes}>, %cs",
         f"  %cs1 = sub <{w} x i64> %cs, <{', '.join([f'i64 {w}'] * w)}>",
         f"  %m1 = icmp slt <{w} x i64> <{lanes}>, %cs1",
         "  br i1 %rowwise, label %rows, label %cols_loop",
         # B's rows are contiguous: two masked vector loads per k
         "rows:", "  %k = phi i64 [ 0, %panel ], [ %k1, %rows ]",
         "  %so = mul i64 %k, %brs", "  %sp0 = getelementptr float, ptr %src, i64 %so",
         f"  %sp1 = getelementptr float, ptr %sp0, i64 {w}",
         f"  %v0 = call {V} @llvm.masked.load.v{w}f32.p0(ptr %sp0, i32 4, <{w} x i1> %m0, {V} zeroinitializer)",
         f"  %v1 = call {V} @llvm.masked.load.v{w}f32.p0(ptr %sp1, i32 4, <{w} x i1> %m1, {V} zeroinitializer)",
         f"  %do = mul i64 %k, {nr}", "  %dp0 = getelementptr float, ptr %dst, i64 %do",
         f"  %dp1 = getelementptr float, ptr %dp0, i64 {w}",
         f"  store {V} %v0, ptr %dp0, align 64", f"  store {V} %v1, ptr %dp1, align 64",
         "  %k1 = add i64 %k, 1", "  %kmore = icmp ult i64 %k1, %kc",
         "  br i1 %kmore, label %rows, label %panel_end",
         # B read transposed: column j of the panel is contiguous in k
         "cols_loop:", "  %j = phi i64 [ 0, %panel ], [ %j1, %col_end ]",
         "  %jc = call i64 @llvm.umin.i64(i64 %j, i64 %last)", "  %jo = mul i64 %jc, %bcs",
         "  %col = getelementptr float, ptr %src, i64 %jo", "  %live = icmp ult i64 %j, %cols",
         "  br label %col_k",
         "col_k:", "  %q = phi i64 [ 0, %cols_loop ], [ %q1, %col_k ]",
         "  %qo = mul i64 %q, %brs", "  %qp = getelementptr float, ptr %col, i64 %qo",
         "  %x = load float, ptr %qp", "  %xv = select i1 %live, float %x, float 0.0",
         f"  %dq = mul i64 %q, {nr}", "  %dqj = add i64 %dq, %j", "  %dqp = getelementptr float, ptr %dst, i64 %dqj",
         "  store float %xv, ptr %dqp", "  %q1 = add i64 %q, 1", "  %qmore = icmp ult i64 %q1, %kc",
         "  br i1 %qmore, label %col_k, label %col_end",
         "col_end:", "  %j1 = add i64 %j, 1", f"  %jmore = icmp ult i64 %j1, {nr}",
         "  br i1 %jmore, label %cols_loop, label %panel_end",
         "panel_end:", f"  %p1 = add i64 %p, {nr}", "  %pmore = icmp ult i64 %p1, %nc",
         "  br i1 %pmore, label %panel, label %exit", "exit:", "  ret void", "}"]
    return "\n".join(L) + "\n"


def _pack_a(mr: int, w: int) -> str:
    """abuf = A[0:rows, 0:kc] of an A read transposed (its rows contiguous in memory, one
    row of the block per k), k-major with a stride of MR rounded up to vectors."""
    V, stride = f"<{w} x float>", _a_stride(mr, w)
    lanes = ", ".join(f"i64 {i}" for i in range(w))
    L = [f"define internal void @pack_a(ptr %a, i64 %acs, i64 %kc, i64 %rows, ptr %abuf) nounwind {{",
         "entry:", f"  %ri = insertelement <{w} x i64> poison, i64 %rows, i32 0",
         f"  %rs = shufflevector <{w} x i64> %ri, <{w} x i64> poison, <{w} x i32> zeroinitializer"]
    for v in range(stride // w):
        L += [f"  %rs{v} = sub <{w} x i64> %rs, <{', '.join([f'i64 {v * w}'] * w)}>",
              f"  %m{v} = icmp slt <{w} x i64> <{lanes}>, %rs{v}"]
    L += ["  br label %loop", "loop:", "  %k = phi i64 [ 0, %entry ], [ %k1, %loop ]",
          "  %so = mul i64 %k, %acs", "  %src = getelementptr float, ptr %a, i64 %so",
          f"  %do = mul i64 %k, {stride}", "  %dst = getelementptr float, ptr %abuf, i64 %do"]
    for v in range(stride // w):
        L += [f"  %sp{v} = getelementptr float, ptr %src, i64 {v * w}",
              f"  %x{v} = call {V} @llvm.masked.load.v{w}f32.p0(ptr %sp{v}, i32 4, <{w} x i1> %m{v}, {V} zeroinitializer)",
              f"  %dp{v} = getelementptr float, ptr %dst, i64 {v * w}", f"  store {V} %x{v}, ptr %dp{v}, align 16"]
    L += ["  %k1 = add i64 %k, 1", "  %more = icmp ult i64 %k1, %kc", "  br i1 %more, label %loop, label %exit",
          "exit:", "  ret void", "}"]
    return "\n".join(L) + "\n"


def _a_stride(mr: int, w: int) -> int:
    return -(-mr // w) * w


def _heights(mr: int):
    return [h for h in (8, 4, 2, 1) if h < mr]


def _edge(mr: int) -> str:
    """The last rows of A, fewer than MR, as blocks of the powers of two in their count
    (11 = 8 + 2 + 1): four register tiles instead of one per count keep the module quick
    to compile, and each element's sum is the same either way."""
    L = ["define internal void @edge(i64 %kc, ptr %a, i64 %ars, i64 %acs, ptr %bp, ptr %c, i64 %ldc, i64 %cols, "
         "i1 %add, i64 %rows) nounwind {", "entry:", "  br label %s0"]
    heights = _heights(mr)
    for i, h in enumerate(heights):
        after = f"s{i + 1}" if i + 1 < len(heights) else "exit"
        L += [f"s{i}:", f"  %b{i} = and i64 %rows, {h}", f"  %y{i} = icmp ne i64 %b{i}, 0",
              f"  br i1 %y{i}, label %run{i}, label %{after}",
              f"run{i}:", f"  %d{i} = and i64 %rows, {-2 * h}",  # the rows done before: the higher bits
              f"  %ao{i} = mul i64 %d{i}, %ars", f"  %ap{i} = getelementptr float, ptr %a, i64 %ao{i}",
              f"  %co{i} = mul i64 %d{i}, %ldc", f"  %cp{i} = getelementptr float, ptr %c, i64 %co{i}",
              f"  call void @micro{h}(i64 %kc, ptr %ap{i}, i64 %ars, i64 %acs, ptr %bp, ptr %cp{i}, i64 %ldc, "
              "i64 %cols, i1 %add)", f"  br label %{after}"]
    L += ["exit:", "  ret void", "}"]
    return "\n".join(L) + "\n"


def _block(label: str, var: str, outer: str, bound: str, step, size: str) -> str:
    """The head of a blocked loop: var from 0 by step below bound, this block's size
    (at most step) in %size; its latch is _next_block's."""
    return (f"{label}:\n  %{var} = phi i64 [ 0, %{outer} ], [ %{var}n, %{label}_end ]\n"
            f"  %{var}left = sub i64 {bound}, %{var}\n  %{var}small = icmp ult i64 %{var}left, {step}\n"
            f"  %{size} = select i1 %{var}small, i64 %{var}left, i64 {step}\n")


def _next_block(label: str, var: str, bound: str, step, after: str) -> str:
    return (f"{label}_end:\n  %{var}n = add i64 %{var}, {step}\n  %{var}more = icmp ult i64 %{var}n, {bound}\n"
            f"  br i1 %{var}more, label %{label}, label %{after}\n")


def _driver(mr_max: int, w: int, int_type: str) -> str:
    """The CBLAS-shaped entry (row-major; alpha 1, beta 0 assumed: the caller's only use)."""
    nr, nc = 2 * w, PANELS * 2 * w
    I = int_type
    widen = "".join(f"  %{v} = sext {I} %{v}_ to i64\n" if I != "i64" else f"  %{v} = add i64 %{v}_, 0\n"
                    for v in ("m", "n", "k", "lda", "ldb", "ldc"))
    micro_args = "i64 %kc, ptr %ablk, i64 %mrs, i64 %mcs, ptr %bp, ptr %cblk, i64 %ldc, i64 %cols, i1 %add"
    return f"""define void @{FUNCTION}(i32 %order, i32 %ta, i32 %tb, {I} %m_, {I} %n_, {I} %k_, float %alpha, ptr %a, {I} %lda_, ptr %b, {I} %ldb_, float %beta, ptr %c, {I} %ldc_) nounwind {{
entry:
  %buf = alloca [{KC * nc} x float], align 64
  %abuf = alloca [{KC * _a_stride(mr_max, w)} x float], align 64
{widen}  %at = icmp eq i32 %ta, 112
  %ars = select i1 %at, i64 1, i64 %lda
  %acs = select i1 %at, i64 %lda, i64 1
  %bt = icmp eq i32 %tb, 112
  %brs = select i1 %bt, i64 1, i64 %ldb
  %bcs = select i1 %bt, i64 %ldb, i64 1
  br label %kblock

{_block("kblock", "k0", "entry", "%k", KC, "kc")}  %add = icmp ne i64 %k0, 0
  %ako = mul i64 %k0, %acs
  %ak = getelementptr float, ptr %a, i64 %ako
  %bko = mul i64 %k0, %brs
  %bk = getelementptr float, ptr %b, i64 %bko
  br label %nblock

{_block("nblock", "n0", "kblock", "%n", nc, "ncols")}  %bno = mul i64 %n0, %bcs
  %bn = getelementptr float, ptr %bk, i64 %bno
  call void @pack(ptr %bn, i64 %brs, i64 %bcs, i64 %kc, i64 %ncols, ptr %buf)
  br label %rowblock

{_block("rowblock", "i0", "nblock", "%m", mr_max, "mr")}  %aio = mul i64 %i0, %ars
  %arow = getelementptr float, ptr %ak, i64 %aio
  br i1 %at, label %packa, label %rowblock_a

packa:
  call void @pack_a(ptr %arow, i64 %acs, i64 %kc, i64 %mr, ptr %abuf)
  br label %rowblock_a

rowblock_a:
  %ablk = phi ptr [ %arow, %rowblock ], [ %abuf, %packa ]
  %mrs = phi i64 [ %ars, %rowblock ], [ 1, %packa ]
  %mcs = phi i64 [ %acs, %rowblock ], [ {_a_stride(mr_max, w)}, %packa ]
  %cio = mul i64 %i0, %ldc
  %crow = add i64 %cio, %n0
  br label %panel

{_block("panel", "p", "rowblock_a", "%ncols", nr, "cols")}  %bpo = mul i64 %p, %kc
  %bp = getelementptr float, ptr %buf, i64 %bpo
  %cpo = add i64 %crow, %p
  %cblk = getelementptr float, ptr %c, i64 %cpo
  %whole = icmp eq i64 %mr, {mr_max}
  br i1 %whole, label %tile, label %edge

tile:
  call void @micro{mr_max}({micro_args})
  br label %panel_end

edge:
  call void @edge({micro_args}, i64 %mr)
  br label %panel_end

{_next_block("panel", "p", "%ncols", nr, "rowblock_end")}
{_next_block("rowblock", "i0", "%m", mr_max, "nblock_end")}
{_next_block("nblock", "n0", "%n", nc, "kblock_end")}
{_next_block("kblock", "k0", "%k", KC, "exit")}
exit:
  ret void
}}
"""


def module_source(features: str, int_type: str = "i64") -> str:
    """The GEMM and its helpers, for CPUs with these LLVM features; sizes as int_type."""
    w, mr = shape_for(features)
    V = f"<{w} x float>"
    declarations = (f"declare {V} @llvm.fma.v{w}f32({V}, {V}, {V})\n"
                    f"declare {V} @llvm.masked.load.v{w}f32.p0(ptr, i32, <{w} x i1>, {V})\n"
                    f"declare void @llvm.masked.store.v{w}f32.p0({V}, ptr, i32, <{w} x i1>)\n"
                    "declare i64 @llvm.umin.i64(i64, i64)\n")
    stand_in = (f"define i32 @{THREADS_STAND_IN}(i32 %n) nounwind {{\n  ret i32 1\n}}\n")
    return (f"; mlbh float32 GEMM, {mr} x {2 * w} register tile (codegen/cpu_gemm_ir.py)\n" + declarations
            + "".join(_micro(r, w) for r in sorted({mr, *_heights(mr)})) + _edge(mr) + _pack(w) + _pack_a(mr, w) + _driver(mr, w, int_type) + stand_in)
