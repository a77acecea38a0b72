"""The CUDA C renderer (codegen/cuda*.py), on machines with or without a GPU.

A wide set of graphs (every primitive alone in float32 with its gradient, the primitives in
bfloat16 / float16 / float64 / the integer dtypes / bool, NaN/inf/tie edge cases, long
rows, random graphs from hypothesis, and the forward+backward of a GPT-style block) goes
trace -> prepare -> fuse -> CUDA C. Every kernel must compile to cubin for sm_80 and sm_90
with NVRTC (no device needed), list its fused eqns in its header comment, and, run on the
host by tests/cuda_emulator.h (CUDA threads as coroutines: real barriers, shuffles,
shared memory, atomics), compute what the reference interpreter computes.
"""
import shutil
import subprocess
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlbh.codegen import compile_cache, cuda, cuda_types
from mlbh.codegen.compile_cache import cached_compile_cubin
from mlbh.codegen.cuda_launch import MAX_FLAT_GRID, launch_shape
from mlbh.codegen.cuda_prelude import ARITHMETIC, PHILOX
from mlbh.codegen.indexing import iconst, ivar
from mlbh.codegen.kernel_ir import Buffer, Kernel, Node, Reduction, Store
from mlbh.codegen.nvrtc import cubin_supported
from mlbh.runtime.executable import Executable
from mlbh.runtime.jitted import Lowered
from mlbh.tracer import pytree
from mlbh.tracer.interpreter import evaluate
from mlbh.tracer.prims_elementwise import philox_bits

import cuda_cases
import test_jit_cpu
from cuda_emulator import HERE, HOST_COMPILER, EmulatedCudaBackend, EmulatedKernels, host_compiler_reason
from random_graphs import recipes

SUPPORT = cubin_supported()
needs_nvrtc = pytest.mark.skipif(not SUPPORT, reason=f"cannot build cubins: {SUPPORT.reason}")
needs_host_cxx = pytest.mark.skipif(bool(host_compiler_reason()), reason=host_compiler_reason() or "-")
ARCHS = ("sm_80", "sm_90")
# low-precision results may differ by an ulp where libm and the reference round differently;
# the absolute floor covers values that cancel to rounding noise (a softmax's gradient
# along a broadcast axis is 0 up to ~1e-7 in float32, in any summation order)
RTOL = {"bfloat16": 2e-2, "float16": 4e-3, "float32": 1e-5, "float64": 1e-12}
ATOL = {"bfloat16": 1e-2, "float16": 1e-3, "float32": 1e-6, "float64": 1e-13}


@pytest.fixture(scope="module", autouse=True)
def private_compile_cache(tmp_path_factory):
    """Compiles go to a fresh cache dir, so results never depend on ~/.cache state."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLBH_CACHE_DIR", str(tmp_path_factory.mktemp("mlbh-cache")))
        compile_cache.clear_memory_cache()
        yield
        compile_cache.clear_memory_cache()


# ----------------------------------------------------------------------------- the suite

class LoweredCase:
    """One graph taken to CUDA: its kernels renamed with a per-case prefix, so the kernels
    of every case fit in one module (one NVRTC compile per arch, one emulator build)."""

    def __init__(self, index, case_id, fn, args):
        self.id, self.fn, self.args = case_id, fn, args
        self.lowered = Lowered(fn, args, "cuda", case_id)
        self.program = self.lowered.program
        for k in self.program.kernels:
            k.name = f"c{index}_{k.name}"
        self.kernels = cuda.render_program(self.program)
        self.by_name = {k.name: kc for k, kc in zip(self.program.kernels, self.kernels)}

    def reference(self):
        return evaluate(self.lowered.traced, *self.args)

    def run(self, library):
        exe = Executable(self.program, EmulatedCudaBackend(library, self.by_name), name=self.id)
        leaves, _ = pytree.flatten(list(self.args))
        outs = exe([np.asarray(x) for x in leaves])
        return pytree.unflatten(self.lowered.traced.out_tree, outs)


def _suite_cases():
    cases = [(f"prim_{c.id}", test_jit_cpu.with_loss_grads(c.fn, c.args) if c.grad else c.fn, c.args)
             for c in test_jit_cpu.CASES]
    cases += cuda_cases.dtype_cases()
    cases.append(("gpt_block",) + cuda_cases.gpt_block_case())
    cases += cuda_cases.gpt2_train_step_cases()
    return cases


SUITE_IDS = [c[0] for c in _suite_cases()]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    lowered = {cid: LoweredCase(i, cid, fn, args) for i, (cid, fn, args) in enumerate(_suite_cases())}
    library = None
    if not host_compiler_reason():  # builds in the background while the NVRTC tests run
        library = EmulatedKernels([kc for lc in lowered.values() for kc in lc.kernels],
                                  str(tmp_path_factory.mktemp("emulator")))
    return lowered, library


def _all_kernels(lowered):
    return [kc for lc in lowered.values() for kc in lc.kernels]


# ------------------------------------------------------------------------------ compiling

@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles_to_cubin(suite, arch):
    kernels = _all_kernels(suite[0])
    result = cached_compile_cubin(cuda.module_source(kernels), arch)
    assert result.cubin.startswith(b"\x7fELF")
    for kc in kernels:
        usage = result.kernels[kc.name]
        assert 0 < usage["registers"] <= 255, (kc.name, usage)
        # ptxas may trade a word of spill for occupancy (32 registers: two 1024-thread blocks per SM)
        assert usage["spill_stores"] <= 8 and usage["spill_loads"] <= 8, (kc.name, usage)


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
def test_gpt_block_compile_program_reports_registers_and_no_spills(suite, arch):
    program = suite[0]["gpt_block"].program
    pairs = cuda.compile_program(program, arch, modules=1)
    assert [kc.kernel for kc, _ in pairs] == [k.name for k in program.kernels]
    result = pairs[0][1]
    assert all(r is result for _, r in pairs), "one module: every kernel shares the CubinResult"
    usage = [result.kernels[kc.name] for kc, _ in pairs]
    assert max(u["registers"] for u in usage) <= 64  # so 1024-thread blocks can launch
    assert not [u for u in usage if u["spill_stores"] or u["spill_loads"]]


@needs_nvrtc
def test_compile_program_splits_kernels_into_parallel_modules(suite):
    program = suite[0]["gpt_block"].program
    pairs = cuda.compile_program(program, "sm_90", modules=3)
    assert [kc.kernel for kc, _ in pairs] == [k.name for k in program.kernels]
    results = {id(r): r for _, r in pairs}
    assert len(results) == 3
    for kc, result in pairs:
        assert kc.name in result.kernels and result.cubin
    functions = {kc.name for kc, _ in pairs}
    assert sum(len(r.kernels) for r in results.values()) == len(functions), "each function in exactly one module"
    again = cuda.compile_program(program, "sm_90", modules=3)
    assert [r.cubin for _, r in again] == [r.cubin for _, r in pairs], "the split is deterministic"


@needs_nvrtc
def test_compile_program_separately_gives_one_cubin_per_kernel(suite):
    program = suite[0]["long_rows"].program
    pairs = cuda.compile_program(program, "sm_80", separate=True)
    assert len({id(r) for _, r in pairs}) == len(pairs) > 1
    for kc, result in pairs:
        assert set(result.kernels) == {kc.name}


def _standalone_samples(lowered):
    """A flat kernel, a multi-warp row kernel with argmax, and a bfloat16 scatter kernel."""
    by_id = {cid: lc.kernels for cid, lc in lowered.items()}
    flat = next(kc for kc in by_id["converts"] if kc.mapping == "flat")
    wide = next(kc for kc in by_id["long_rows"] if kc.block == 1024 and "argmax" in kc.source)
    scatter = next(kc for kc in by_id["bf16_gather_scatter"] if "mlbh_atomic_add" in kc.text)
    return [flat, wide, scatter]


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHS)
def test_each_kernel_source_is_a_complete_translation_unit(suite, arch):
    for kc in _standalone_samples(suite[0]):
        result = cached_compile_cubin(kc.source, arch)
        assert set(result.kernels) == {kc.name}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_a_kernel_source_compiles_standalone_with_nvcc(suite, tmp_path):
    kc = _standalone_samples(suite[0])[1]
    path = tmp_path / f"{kc.name}.cu"
    path.write_text(kc.source)
    done = subprocess.run(["nvcc", "-cubin", "-arch=sm_80", str(path), "-o", str(tmp_path / "k.cubin")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "k.cubin").read_bytes().startswith(b"\x7fELF")


# -------------------------------------------------------------------------- header comment

def test_header_comment_lists_the_fused_eqns(suite):
    for cid, lc in suite[0].items():
        listed = set()
        for kernel, kc in zip(lc.program.kernels, lc.kernels):
            header = kc.source[kc.source.index(f"// Kernel {kernel.name}"):kc.source.index('extern "C"')]
            assert kernel.sources, kernel.name
            for line in kernel.sources:
                assert f"//   {line}\n" in header, (cid, kernel.name, line)
                listed.add(line.split(" @ ")[0].split(" (")[0])
            assert "Threads:" in header and "loop 0 over r" in header
        names = lc.program.var_names
        for e in lc.lowered.optimized.eqns:  # every eqn a kernel computes is listed by one
            if e.prim in ("dot_general", "constant", "transpose", "reshape"):
                continue
            assert f"{e.prim} -> {names[e.outputs[0]]}" in listed, (cid, e.prim)


# ------------------------------------------------------------------------------- results

def assert_close(got, want, what, rounded_as=None):
    """got equals want within the tolerances of each leaf's dtype, or of `rounded_as` for
    float leaves computed through that lower precision (mixed precision's fp32 outputs)."""
    got_leaves, got_tree = pytree.flatten(got)
    want_leaves, want_tree = pytree.flatten(want)
    assert got_tree == want_tree, what
    for i, (g, w) in enumerate(zip(got_leaves, want_leaves)):
        g, w = np.asarray(g), np.asarray(w)
        assert (g.shape, g.dtype) == (w.shape, w.dtype), f"{what} leaf {i}"
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=f"{what} leaf {i}")
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        finite = np.isfinite(w64)
        np.testing.assert_array_equal(g64[~finite], w64[~finite], err_msg=f"{what} leaf {i}: inf/nan")
        rtol, atol = RTOL[rounded_as or str(w.dtype)], ATOL[rounded_as or str(w.dtype)]
        scale = float(np.abs(w64[finite]).max()) if finite.any() else 0.0
        np.testing.assert_allclose(g64[finite], w64[finite], rtol=rtol, atol=max(rtol * scale, atol),
                                   err_msg=f"{what} leaf {i}")


@needs_host_cxx
@pytest.mark.parametrize("case_id", SUITE_IDS)
def test_emulated_kernels_match_the_reference(suite, case_id):
    lowered, library = suite
    lc = lowered[case_id]
    # bf16 intermediates (a tied embedding's two gradients, summed) round by the fused order
    assert_close(lc.run(library), lc.reference(), case_id, "bfloat16" if case_id.endswith("_bf16") else None)


@needs_nvrtc
@needs_host_cxx
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(drawn=st.lists(recipes(), min_size=3, max_size=3), seed=st.integers(0, 2 ** 16))
def test_random_graphs_compile_and_match_the_reference(drawn, seed, tmp_path):
    cases = []
    for i, recipe in enumerate(drawn):
        args = recipe.arrays(seed + i)
        cases.append(LoweredCase(i, f"random{i}", test_jit_cpu.with_loss_grads(recipe.fn, args), args))
    kernels = [kc for lc in cases for kc in lc.kernels]
    library = EmulatedKernels(kernels, str(tmp_path / f"emu{time.monotonic_ns()}"))
    for arch in ARCHS:
        cached_compile_cubin(cuda.module_source(kernels), arch)
    for lc, recipe in zip(cases, drawn):
        assert_close(lc.run(library), lc.reference(), repr(recipe))


def _four_equal_layers(p, x):
    from mlbh.tracer import ops
    for i in range(4):
        h = ops.layer_norm(x, p[f"g{i}"], p[f"b{i}"])
        x = x + ops.tanh(h @ p[f"w{i}"])
    return ops.sum(ops.softmax(x, -1) * x)


@needs_host_cxx
def test_equal_layers_share_one_function_and_it_computes_both(tmp_path):
    from mlbh import tracer as T
    rng = np.random.default_rng(9)
    p = {k: rng.standard_normal(s).astype(np.float32) for i in range(4)
         for k, s in ((f"g{i}", (24,)), (f"b{i}", (24,)), (f"w{i}", (24, 24)))}
    x = rng.standard_normal((6, 24)).astype(np.float32)
    lc = LoweredCase(0, "four_layers", T.value_and_grad(_four_equal_layers, argnums=(0, 1)), (p, x))
    names = [kc.name for kc in lc.kernels]
    assert len(set(names)) < len(names), "the inner layers reuse one another's functions"
    source = cuda.module_source(lc.kernels)
    assert source.count("__launch_bounds__") == len(set(names))
    shared = [kc for kc in lc.kernels if names.count(kc.name) > 1]
    assert all(kc.params != other.params for kc in shared for other in shared
               if other.name == kc.name and other is not kc), "each kernel keeps its own buffers"
    if SUPPORT:
        cached_compile_cubin(source, "sm_80")
    library = EmulatedKernels(lc.kernels, str(tmp_path / "emu"))
    assert_close(lc.run(library), lc.reference(), "four equal layers")


# ----------------------------------------------------------------- device helpers on host

@needs_host_cxx
def test_philox_and_integer_helpers_match_numpy(tmp_path):
    source = "\n".join(['#include "cuda_emulator.h"', ARITHMETIC, PHILOX, r"""
extern "C" void philox(unsigned int k0, unsigned int k1, const unsigned long long* i, unsigned int* out, int n) {
    for (int j = 0; j < n; ++j) out[j] = mlbh_philox(k0, k1, i[j]);
}
extern "C" void int_ops(const long long* a, const long long* b, long long* div, long long* pw, int n) {
    for (int j = 0; j < n; ++j) { div[j] = mlbh_floordiv(a[j], b[j]); pw[j] = mlbh_ipow(a[j], b[j]); }
}
extern "C" void float_max(const float* a, const float* b, float* mx, float* mn, int n) {
    for (int j = 0; j < n; ++j) { mx[j] = mlbh_fmax(a[j], b[j]); mn[j] = mlbh_fmin(a[j], b[j]); }
}
"""])
    (tmp_path / "helpers.cpp").write_text(source)
    lib_path = tmp_path / "helpers.so"
    subprocess.run([HOST_COMPILER, "-std=c++17", "-O1", "-w", "-shared", "-fPIC", f"-I{HERE}",
                    str(tmp_path / "helpers.cpp"), "-o", str(lib_path)], check=True)
    import ctypes
    lib = ctypes.CDLL(str(lib_path))

    def ptr(a):
        return a.ctypes.data_as(ctypes.c_void_p)

    index = np.array([0, 1, 2, 12345, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 7, 2 ** 40 + 3, 2 ** 63 + 11], np.uint64)
    for k0, k1 in ((0, 0), (0x12345678, 0x9ABCDEF0), (0xFFFFFFFF, 1)):
        out = np.zeros(len(index), np.uint32)
        lib.philox(ctypes.c_uint(k0), ctypes.c_uint(k1), ptr(index), ptr(out), len(index))
        np.testing.assert_array_equal(out, philox_bits(k0, k1, index))

    a = np.array([7, -7, 7, -7, 0, 6, 3, -2, 1, -1, -1, 5], np.int64)
    b = np.array([2, 2, -2, -2, 3, 3, 0, 3, -3, -4, -3, -1], np.int64)
    div, pw = np.zeros_like(a), np.zeros_like(a)
    lib.int_ops(ptr(a), ptr(b), ptr(div), ptr(pw), len(a))
    nonzero = b != 0
    np.testing.assert_array_equal(div[nonzero], a[nonzero] // b[nonzero])
    assert (div[~nonzero] == 0).all()  # numpy also gives 0 (with a warning)
    positive = b >= 0
    np.testing.assert_array_equal(pw[positive], a[positive] ** b[positive])
    np.testing.assert_array_equal(pw[~positive], [1 if x == 1 else (x if e % 2 else 1) if x == -1 else 0
                                                  for x, e in zip(a[~positive], b[~positive])])

    x = np.array([1.0, np.nan, 2.0, np.nan, -0.5, np.inf], np.float32)
    y = np.array([np.nan, 1.0, 3.0, np.nan, -np.inf, 1.0], np.float32)
    mx, mn = np.zeros_like(x), np.zeros_like(x)
    lib.float_max(ptr(x), ptr(y), ptr(mx), ptr(mn), len(x))
    np.testing.assert_array_equal(mx, np.maximum(x, y))
    np.testing.assert_array_equal(mn, np.minimum(x, y))


# -------------------------------------------------------------------- mapping and API

def _elementwise_kernel(outer, dtype="float32"):
    o = ivar("o")
    x = Node("load", (o,), dtype, ("x",))
    return Kernel("scale", outer, 1, [Buffer("x", (outer,), dtype)], [Buffer("y", (outer,), dtype)],
                  stores=[Store("y", o, Node("mul", (x, Node("const", (), dtype, (2.0,))), dtype), 0)],
                  outer_shape=(outer,))


def _row_sum_kernel(outer, inner):
    o, r = ivar("o"), ivar("r")
    index = Node("iadd", (Node("imul", (o, iconst(inner)), "int64"), r), "int64")
    x = Node("load", (index,), "float32", ("x",))
    return Kernel("row_sum", outer, inner, [Buffer("x", (outer, inner), "float32")],
                  [Buffer("s", (outer,), "float32")],
                  reductions=[Reduction("s", "sum", x, 0, "float32")],
                  stores=[Store("s", o, Node("rowval", (), "float32", ("s",)), -1)],
                  outer_shape=(outer,), inner_shape=(inner,))


def _column_sum_kernel(outer, inner, dtype="float32"):
    """s[o] = sum_r x[r, o]: memory contiguous along o."""
    o, r = ivar("o"), ivar("r")
    index = Node("iadd", (o, Node("imul", (r, iconst(outer)), "int64")), "int64")
    x = Node("load", (index,), dtype, ("x",))
    acc = "float64" if dtype == "float64" else "float32"
    return Kernel("column_sum", outer, inner, [Buffer("x", (inner, outer), dtype)], [Buffer("s", (outer,), dtype)],
                  reductions=[Reduction("s", "sum", x, 0, acc)],
                  stores=[Store("s", o, Node("rowval", (), dtype, ("s",)), -1)],
                  outer_shape=(outer,), inner_shape=(inner,))


def test_launch_shapes():
    small = launch_shape(_elementwise_kernel(1000))
    assert (small.mapping, small.block, small.grid, small.loops_over_grid) == ("flat", 256, 4, False)
    huge = launch_shape(_elementwise_kernel(10 ** 9))
    assert huge.grid == MAX_FLAT_GRID and huge.loops_over_grid
    assert [launch_shape(_row_sum_kernel(10, n)).block for n in (1, 8, 33, 768, 1024, 50257)] == \
        [32, 32, 64, 1024, 1024, 1024]
    rows = launch_shape(_row_sum_kernel(2 ** 31 + 5, 4))
    assert rows.grid == 2 ** 31 - 1 and rows.loops_over_grid
    columns = launch_shape(_column_sum_kernel(768, 8192))  # a bias gradient
    assert (columns.mapping, columns.tile, columns.block, columns.grid) == ("col", 8, 1024, 96)
    assert launch_shape(_column_sum_kernel(768, 8192, "bfloat16")).tile == 16
    assert launch_shape(_column_sum_kernel(10 ** 6, 3)).block == 32


@needs_nvrtc
def test_grid_stride_variants_compile():
    kernels = [_elementwise_kernel(10 ** 9, "bfloat16"), _row_sum_kernel(2 ** 31 + 5, 4),
               _column_sum_kernel(2 ** 35, 3, "float64")]
    for kernel in kernels:
        kc = cuda.render_kernel(kernel)
        assert "gridDim.x" in kc.text
    cached_compile_cubin(cuda.module_source([cuda.render_kernel(k) for k in kernels]), "sm_80")


def test_the_column_cases_use_the_col_mapping(suite):
    for case_id in ("columns", "bf16_columns"):
        mappings = {kc.mapping for kc in suite[0][case_id].kernels}
        assert "col" in mappings, (case_id, mappings)


def test_kernel_launch_args_follow_params():
    kc = cuda.render_kernel(_row_sum_kernel(4, 8))
    assert kc.params == ["x", "s"]
    assert cuda.kernel_launch_args(kc, {"s": "S", "x": "X", "other": 0}) == ("X", "S")
    with pytest.raises(KeyError, match="needs buffers"):
        cuda.kernel_launch_args(kc, {"x": "X"})


def test_literals_follow_numpy_rounding():
    assert cuda_types.literal(0.1, "float32") == "0.10000000149011612f"
    assert cuda_types.literal(0.1, "float64") == "0.1"
    assert cuda_types.literal(0.1, "bfloat16") == "0.10009765625f"
    assert cuda_types.literal(float("-inf"), "float32") == "-INFINITY"
    assert cuda_types.literal(float("nan"), "float64") == "((double)NAN)"
    assert cuda_types.literal(-(2 ** 63), "int64") == "(-9223372036854775807LL - 1)"
    assert cuda_types.literal(-3.0, "int32") == "-3"
    assert cuda_types.literal(2.0, "bool") == "true"
    assert cuda_types.literal(4294967295, "uint32") == "4294967295u"
