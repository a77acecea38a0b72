"""jit(backend="cpu") against the reference interpreter.

Every registered primitive has a case here (test_every_primitive_has_a_cpu_case fails for
one that does not); each differentiable case also compares value_and_grad of a scalar
loss of its output. Random graphs drawn by hypothesis (elementwise ops, broadcasts,
transposes, reshapes, slices, reductions, matmuls, gathers) compare their outputs and
gradients the same way. Comparison rules: tests/jit_compare.py.
"""
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlbh import tracer as T
from mlbh.runtime import cpu_backend, cpu_gemm, cpu_launch_list
from mlbh.runtime.jitted import jit
from mlbh.tracer import lax, ops
from mlbh.tracer.registry import REGISTRY

from jit_compare import assert_same_tree
from test_primitives_grad import _softplus, assert_cases_cover
from gpt_block import BlockConfig, block_loss, init_batch, init_params
from random_graphs import recipes, with_loss_grads

R = np.random.default_rng(7)


def randn(*shape):
    return R.standard_normal(shape).astype(np.float32)


def positive(*shape):
    return R.uniform(0.5, 2.0, shape).astype(np.float32)


def ints(*shape, high=5):
    return R.integers(0, high, shape).astype(np.int32)


@dataclass
class Case:
    id: str
    prims: tuple        # primitives this case exercises (each must appear in its graph)
    fn: callable
    args: tuple
    grad: bool = True   # also compare value_and_grad of a loss of the output


def _checkpointed(x, w):
    @T.checkpoint
    def block(h, w):
        return ops.tanh(h @ w) * ops.exp(-h[:, :1] * h[:, :1])
    return block(block(x, w), w)


CASES = [
    Case("neg", ("neg",), lax.neg, (randn(3, 4),)),
    Case("exp", ("exp",), lax.exp, (randn(3, 4),)),
    Case("log", ("log",), lax.log, (positive(3, 4),)),
    Case("tanh", ("tanh",), lax.tanh, (randn(3, 4) * 3,)),
    Case("sqrt", ("sqrt",), lax.sqrt, (positive(3, 4),)),
    Case("rsqrt", ("rsqrt",), lax.rsqrt, (positive(3, 4),)),
    Case("erf", ("erf",), lax.erf, (randn(3, 4),)),
    Case("add_broadcast", ("add", "broadcast_in_dim"), ops.add, (randn(3, 1, 4), randn(2, 4))),
    Case("sub", ("sub",), lambda a, b: a - b, (randn(3, 4), randn(4))),
    Case("mul", ("mul",), lax.mul, (randn(3, 4), randn(3, 4))),
    Case("div", ("div",), lax.div, (randn(3, 4), positive(3, 4))),
    Case("div_int_floors", ("div",), lambda a, b: lax.div(a, b), (ints(3, 4, high=20) - 10, ints(3, 4) + 1),
         grad=False),
    Case("max", ("max",), lax.max, (randn(3, 4), randn(3, 4))),
    Case("min", ("min",), lax.min, (randn(3, 4), randn(3, 4))),
    Case("pow", ("pow",), lax.pow, (positive(3, 4), randn(3, 4))),
    Case("lt", ("lt",), lax.lt, (randn(3, 4), randn(3, 4)), grad=False),
    Case("le", ("le",), lax.le, (np.array([1, 2, 3], np.float32), np.array([1, 1, 4], np.float32)), grad=False),
    Case("eq", ("eq",), lax.eq, (ints(3, 4), ints(3, 4)), grad=False),
    Case("ne", ("ne",), lax.ne, (np.array([1, 2, np.nan], np.float32), np.array([1, 0, np.nan], np.float32)),
         grad=False),
    Case("select", ("select",), lambda x, y: ops.where(x < 0, x * 2.0, y), (randn(3, 4), randn(4))),
    Case("convert_trunc", ("convert",), lambda x: lax.convert(x * 3.0, "int32"), (randn(3, 4),), grad=False),
    Case("convert_float", ("convert",), lambda x, i: x * lax.convert(i, "float32"), (randn(4), ints(4))),
    Case("stop_gradient", ("stop_gradient",), lambda x: x * ops.stop_gradient(ops.exp(x)), (randn(3),)),
    Case("full", ("full",), lambda: lax.full((2, 3), -1.5, "float32"), (), grad=False),
    Case("iota", ("iota",), lambda: lax.iota((3, 4), 1, "int32"), (), grad=False),
    Case("constant", ("constant",), lambda x: x * np.arange(4.0, dtype=np.float32), (randn(2, 4),)),
    Case("random_bits", ("random_bits",), lambda k: lax.random_bits(k, (3, 5)),
         (np.array([0x12345678, 0x9ABCDEF0], np.uint32),), grad=False),
    Case("broadcast_in_dim", ("broadcast_in_dim",), lambda x: lax.broadcast_in_dim(x, (2, 3, 4, 5), (0, 2)),
         (randn(1, 4),)),
    Case("reshape", ("reshape",), lambda x: lax.reshape(x, (4, 6)) * 2.0, (randn(2, 3, 4),)),
    Case("transpose", ("transpose",), lambda x: lax.transpose(x, (0, 3, 1, 2)) + 1.0, (randn(2, 3, 4, 5),)),
    Case("slice", ("slice",), lambda x: lax.slice(x, (1, 0), (7, 5), (2, 3)), (randn(7, 6),)),
    Case("pad", ("pad",), lambda x: lax.pad(x, 0.5, ((1, 2, 1), (0, 1, 2))), (randn(3, 4),)),
    Case("concatenate", ("concatenate",), lambda a, b, c: lax.concatenate([a, b, c], 1),
         (randn(2, 1, 3), randn(2, 4, 3), randn(2, 2, 3))),
    Case("reduce_sum", ("reduce_sum",), lambda x: lax.reduce_sum(x, (0, 2)), (randn(2, 3, 4),)),
    Case("reduce_max", ("reduce_max",), lambda x: lax.reduce_max(x, (1,)), (randn(2, 3, 4),)),
    Case("argmax", ("argmax",), lambda x: lax.argmax(x, 1), (randn(3, 5, 2),), grad=False),
    Case("dot_general", ("dot_general",), lambda a, b: lax.dot_general(a, b, (((3, 0), (0, 3)), ((1,), (2,)))),
         (randn(4, 3, 2, 5), randn(5, 6, 3, 4))),
    Case("gather", ("gather",), lambda x, i: lax.gather(x, i, 1), (randn(3, 5, 4), ints(2, 3))),
    Case("scatter_add", ("scatter_add",), lambda o, i, u: lax.scatter_add(o, i, u, 1),
         (randn(3, 5, 4), np.array([[4, 0, 2], [2, 2, 1]], np.int32), randn(3, 2, 3, 4))),
    Case("checkpoint", ("checkpoint",), _checkpointed, (randn(3, 4), randn(4, 4) * 0.5)),
    Case("custom_vjp", ("custom_vjp",), lambda x: _softplus(x) * x, (randn(3, 4),)),
]
assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"


@pytest.mark.parametrize("prim", sorted(REGISTRY))
def test_every_primitive_has_a_cpu_case(prim):
    assert_cases_cover(prim, CASES, "tests/test_jit_cpu.py")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_primitive_matches_reference(case):
    fn = with_loss_grads(case.fn, case.args) if case.grad else case.fn
    want = jit(fn, backend="reference")(*case.args)
    got = jit(fn, backend="cpu")(*case.args)
    assert_same_tree(got, want, case.id)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes(), seed=st.integers(0, 2 ** 16))
def test_random_graph_matches_reference(recipe, seed):
    args = recipe.arrays(seed)
    fn = with_loss_grads(recipe.fn, args)
    want = jit(fn, backend="reference")(*args)
    got = jit(fn, backend="cpu")(*args)
    assert_same_tree(got, want, repr(recipe))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes(dtype="int32"), seed=st.integers(0, 2 ** 16))
def test_random_integer_graph_matches_reference_exactly(recipe, seed):
    args = recipe.arrays(seed)
    want = jit(recipe.ints_and_bools, backend="reference")(*args)
    got = jit(recipe.ints_and_bools, backend="cpu")(*args)
    assert_same_tree(got, want, repr(recipe))


@pytest.mark.parametrize("gemm", ["numpy's BLAS", "own kernel"])
def test_gpt_block_loss_and_gradients_match_reference(gemm, monkeypatch):
    """The block of tests/gpt_block.py, forward and backward: the loss and the gradients of
    every parameter and of the input activations, with the products through numpy's
    OpenBLAS where it can be used and through mlbh's own GEMM kernel (what a numpy with
    another BLAS gets). (Its kernel budget: tests/test_fusion.py.)"""
    if gemm == "own kernel":
        for module in (cpu_backend, cpu_launch_list):
            monkeypatch.setattr(module, "native_gemm", cpu_gemm.own_gemm)
    cfg = BlockConfig(batch=2, seq=12, width=32, heads=4, vocab=64)
    params = init_params(cfg)
    x, targets = init_batch(cfg)
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, cfg.heads), argnums=(0, 1))
    want = jit(vg, backend="reference")(params, x, targets)
    got = jit(vg, backend="cpu")(params, x, targets)
    assert_same_tree(got, want, "gpt block (loss, (param grads, input grad))")


def test_max_and_argmax_reductions_propagate_nan_like_numpy():
    x = randn(3, 6)
    x[0, 2] = np.nan
    x[2, 0] = np.nan
    x[2, 4] = np.nan

    def fn(x):
        return ops.max(x, -1), ops.argmax(x, -1), ops.max(x, 0)
    assert_same_tree(jit(fn, backend="cpu")(x), jit(fn, backend="reference")(x), "max / argmax with NaN")


@pytest.fixture(scope="module", params=["fused", "unfused"])
def exp_and_tanh(request):
    """exp and tanh as this CPU computes them (its polynomials in fused multiply-adds where
    it has FMA), and in separate multiplies and adds as a CPU without FMA does."""
    from mlbh.codegen import cpu
    fn = jit(lambda x: (ops.exp(x), ops.tanh(x)), backend="cpu")
    if request.param == "fused":
        if "+fma" not in cpu.host_features().split(","):
            pytest.skip("this CPU has no FMA")
        return fn
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "host_features", lambda: "-fma")
        fn(np.zeros(3, np.float32))  # compiled here, under the patch
    return fn


def test_exp_and_tanh_are_accurate_over_the_float32_range(exp_and_tanh):
    """The CPU backend renders float32 exp and tanh as inline polynomials (codegen/cpu.py):
    within 2 ulp of the float64 truth everywhere, with IEEE special values, and exp flushes
    results below the smallest normal float32 to 0."""
    sweep = np.concatenate([np.linspace(-110, 100, 200_001), np.geomspace(1e-30, 2.0, 20_001),
                            -np.geomspace(1e-30, 2.0, 20_001)]).astype(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 88.72, 88.73, -87.33, -87.34], np.float32)
    x = np.concatenate([sweep, specials])
    got_exp, got_tanh = exp_and_tanh(x)
    tiny = np.finfo(np.float32).tiny
    with np.errstate(over="ignore"):
        true_exp, true_tanh = np.exp(x.astype(np.float64)), np.tanh(x.astype(np.float64))
    normal = (true_exp >= tiny) & (true_exp <= np.finfo(np.float32).max)
    np.testing.assert_allclose(got_exp[normal], true_exp[normal], rtol=2.4e-7, atol=0)
    assert np.all(got_exp[true_exp < tiny] == 0)
    assert np.all(np.isinf(got_exp[np.isfinite(x) & (true_exp > np.finfo(np.float32).max)]))
    np.testing.assert_allclose(got_tanh[np.isfinite(x)], true_tanh[np.isfinite(x)], rtol=2.4e-7, atol=0)
    s = len(sweep)
    np.testing.assert_array_equal(got_exp[s:s + 5], [1, 1, np.inf, 0, np.nan])
    np.testing.assert_array_equal(got_tanh[s:s + 5], [0, -0.0, 1, -1, np.nan])
    assert np.signbit(got_tanh[s + 1]), "tanh(-0) is -0"


def test_parallel_kernels_match_reference(monkeypatch):
    """Kernels of cpu_backend.PARALLEL_MIN_WORK elements or more have their rows (or column
    chunks) split across the native workers; lowering the threshold to 1 and claiming three
    cores runs that code on small shapes: row kernels (softmax and its backward, a max over
    a middle axis) and a column kernel (the bias gradient over 300 columns: three chunks,
    accumulated in per-column stack arrays). Run step by step (as under the profiler), so
    that every split goes through ForkJoinPool.run; tests/test_cpu_launch_list.py checks
    the native launch list's splits."""
    from mlbh.codegen import cpu
    from mlbh.runtime import cpu_backend, cpu_pool
    monkeypatch.setattr(cpu_backend.CpuBackend, "launch_list", None)
    monkeypatch.setattr(cpu_backend, "PARALLEL_MIN_WORK", 1)
    monkeypatch.setattr(cpu_backend, "available_cores", lambda: 3)
    shares = []
    real_run = cpu_pool.ForkJoinPool.run

    def run(pool, fn_address, rows, n, args, count):
        shares.append(count)
        assert real_run(pool, fn_address, rows, n, args, count), "no other thread holds the workers"
        return True
    monkeypatch.setattr(cpu_pool.ForkJoinPool, "run", run)
    x, b = randn(16, 20, 300), randn(300)

    def loss(x, b):
        h = ops.tanh(x + b)
        return ops.sum(ops.softmax(h, -1) * x) + ops.sum(ops.max(h, 1))
    fn = with_loss_grads(loss, (x, b))
    rendered = [cpu.render_kernel(k) for k in jit(fn, backend="cpu").lower(x, b).program.kernels]
    assert any(ck.parallel and "alloca" not in ck.source for ck in rendered)
    assert any(ck.parallel and "alloca" in ck.source for ck in rendered)
    assert_same_tree(jit(fn, backend="cpu")(x, b), jit(fn, backend="reference")(x, b), "parallel kernels")
    split = sum(ck.parallel for ck in rendered)
    assert shares == [3] * split, "each splittable kernel runs in three shares"


def test_only_loops_around_exp_or_tanh_are_hinted_to_interleave():
    """An innermost loop computing a polynomial exp or tanh carries an interleave hint (each
    its own loop id), other loops none; the module's metadata defines every id it uses."""
    import re
    from mlbh.codegen import cpu
    x = randn(16, 300)
    program = jit(lambda x: (ops.softmax(ops.tanh(x), -1), ops.sum(x * 2.0, 0)), backend="cpu").lower(x).program
    rendered = [cpu.render_kernel(k) for k in program.kernels]
    hinted = [ck for ck in rendered if "!mlbh.loop." in ck.source]
    assert hinted and all("mlbh_exp32" in ck.source or "mlbh_tanh32" in ck.source for ck in hinted)
    assert any("!mlbh.loop." not in ck.source for ck in rendered)
    source = cpu.render_program(program.kernels)[0]
    used = re.findall(r"!llvm\.loop !(\d+)", source)
    assert len(used) == len(set(used)) == sum(ck.source.count("!mlbh.loop.") for ck in hinted)
    for number in used:
        assert re.search(rf"^!{number} = distinct !{{!{number}, !0}}$", source, re.M)
    assert re.search(r'^!0 = !{!"llvm.loop.interleave.count", i32 4}$', source, re.M)
    np.testing.assert_allclose(jit(lambda x: ops.softmax(ops.tanh(x), -1), backend="cpu")(x),
                               np.exp(np.tanh(x)) / np.exp(np.tanh(x)).sum(-1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_rows_through_integer_keys_keep_nan_inf_and_order(dtype):
    from mlbh.codegen import cpu
    x = np.random.default_rng(5).standard_normal((7, 1003)).astype(dtype)
    x[1, 1002] = np.nan          # the last element
    x[2, 3] = -np.nan            # a NaN with its sign bit set (x86's default NaN)
    x[3, :] = -np.inf
    x[4, :] = -np.abs(x[4])      # all negative: the flipped keys must keep their order
    x[4, 500] = -1e-30
    x[5, :] = np.inf
    x[6, :] = -0.0
    x[6, 9] = 0.0
    f = jit(lambda a: ops.max(a, axis=1), backend="cpu")
    np.testing.assert_array_equal(f(x), np.max(x, axis=1))
    kernels = f.lower(x).program.kernels
    bits, t = (32, "float") if dtype == np.float32 else (64, "double")
    # the key: the float's bits with the magnitude flipped when negative, in a signed max
    assert any(f"bitcast {t}" in src and f"ashr i{bits}" in src and f"icmp sgt i{bits}" in src
               for src in (cpu.render_kernel(k).source for k in kernels))


def test_later_levels_read_back_a_stored_exp_instead_of_recomputing_it():
    from mlbh.codegen import cpu
    x = randn(6, 40)
    fn = with_loss_grads(lambda x: ops.sum(ops.softmax(x, -1) * x), (x,))
    f = jit(fn, backend="cpu")
    assert_same_tree(f(x), jit(fn, backend="reference")(x))
    sources = [cpu.render_kernel(k).source for k in f.lower(x).program.kernels if k.levels == 3]
    assert sources, "the softmax forward is one three-level kernel"
    # the sum pass computes and stores exp(x - max); the normalising pass divides the stored values
    assert all(src.count("@mlbh_exp32(") == 1 for src in sources), sources


def test_later_levels_read_back_a_stored_sum_instead_of_reloading_its_terms():
    """layer_norm(a + b + c) stores the sum in the mean pass; the variance and normalising
    passes read it back (one load) instead of loading a, b and c again."""
    from mlbh.codegen import cpu
    a, b, c, w, bias = randn(6, 40), randn(6, 40), randn(6, 40), randn(40), randn(40)
    fn = lambda a, b, c, w, bias: (a + b + c, ops.layer_norm(a + b + c, w, bias))  # noqa: E731
    f = jit(fn, backend="cpu")
    assert_same_tree(f(a, b, c, w, bias), jit(fn, backend="reference")(a, b, c, w, bias))
    [kernel] = [k for k in f.lower(a, b, c, w, bias).program.kernels if k.levels > 1]
    ck = cpu.render_kernel(kernel)
    loops = ck.source.split("\nloop")[2:]  # the first loop is the one over rows
    assert len(loops) == kernel.levels
    written = {buf.name for buf in kernel.outputs}
    terms = [f"ptr %a{ck.params.index(buf.name)}," for buf in kernel.inputs
             if buf.shape == (6, 40) and buf.name not in written]
    assert len(terms) == 3, (ck.params, ck.source)
    assert all(t in loops[0] for t in terms)
    assert not any(t in later for t in terms for later in loops[1:]), ck.source


def test_cpu_keeps_independent_updates_apart_and_compiles_them_once():
    """A clipped update of four parameters of three shapes: on the CPU each parameter gets
    its own kernels (two of equal shape are not merged, as on CUDA, for they share no data),
    and every kernel, whatever its length, runs one shared function over the rows [lo, hi)
    it is called with; the per-parameter sums of squared gradients share one function that
    takes the length as its argument n."""
    from mlbh.codegen import cpu
    shapes = {"w1": (4, 8), "w2": (4, 8), "b": (5,), "e": (6, 3)}
    params, grads = ({k: randn(*s) for k, s in shapes.items()} for _ in range(2))
    lr = np.array([0.5], np.float32)

    def update(ps, gs, lr):
        norm = sum(ops.sum(g * g) for g in gs.values())
        return {k: p - lr[0] * gs[k] / (1.0 + norm) for k, p in ps.items()}

    f = jit(update, backend="cpu")
    assert_same_tree(f(params, grads, lr), jit(update, backend="reference")(params, grads, lr))
    kernels = f.lower(params, grads, lr).program.kernels
    # the last sum's kernel also totals the norm and updates the parameter whose gradient it
    # has just read (a second loop over the same elements)
    sums = [k for k in kernels if k.reductions and k.levels == 1]
    updates = [k for k in kernels if not k.reductions]
    assert len(kernels) == 7 and len(sums) == 3 and len(updates) == 3, f.lower(params, grads, lr).fusion_text()
    _, names = cpu.render_program(kernels)
    assert len({names[k.name].name for k in sums}) == 1
    assert len({names[k.name].name for k in updates}) == 1
    lengths = sorted(int(np.prod(shapes[p])) for p in ("b", "e", "w1"))
    assert sorted(names[k.name].rows for k in updates) == lengths  # rows [lo, hi): splittable across threads
    assert sorted(names[k.name].n for k in sums) == lengths
    assert "icmp slt i64 0, %n" in names[sums[0].name].source
    assert len(jit(update, backend="cuda").lower(params, grads, lr).program.kernels) < len(kernels)


def test_donated_outputs_written_over_inputs_that_the_same_element_still_reads():
    """Each output may be stored over a donated input that another output of the same
    element still reads (one kernel, as both read c; a's memory takes 2b + c before 3a + c
    is computed): every value of an element is computed before any of its stores."""
    a, b, c = randn(6, 40), randn(6, 40), randn(6, 40)

    def f(a, b, c):
        return 2.0 * b + c, 3.0 * a + c
    want = jit(f, backend="reference")(a, b, c)
    got = jit(f, backend="cpu", donate_argnums=(0, 1))(a.copy(), b.copy(), c)
    assert_same_tree(got, want)
