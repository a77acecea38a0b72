"""The memory planner: intermediates share one arena without overlapping while live.

Lowering only (no compiles), except the last test, which runs one small program twice.
"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlbh import tracer as T
from mlbh.codegen.memory import step_reads, step_writes
from mlbh.runtime.jitted import jit
from mlbh.tracer import dtypes, ops

from gpt_block import BlockConfig, block_loss, init_batch, init_params
from jit_compare import assert_same_tree
from random_graphs import recipes

BLOCK = BlockConfig(batch=2, seq=12, width=32, heads=4, vocab=64)


def nbytes(program, name):
    buf = program.buffers[name]
    return buf.size * dtypes.ITEMSIZE[buf.dtype]


def assert_valid_plan(program, plan):
    intermediates = set(program.intermediates())
    assert set(plan.offsets) == intermediates
    steps_touching = {n: [i for i, s in enumerate(program.steps) if n in step_reads(s) + step_writes(s)]
                      for n in intermediates}
    for n in intermediates:
        first, last = plan.lifetimes[n]
        assert steps_touching[n], f"{n} is never used"
        assert first == min(steps_touching[n]) and last == max(steps_touching[n]), n
        assert step_writes(program.steps[first]).count(n), f"{n} is read before it is written"
        assert plan.offsets[n] + nbytes(program, n) <= plan.peak
    names = sorted(intermediates)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (fa, la), (fb, lb) = plan.lifetimes[a], plan.lifetimes[b]
            if fa <= lb and fb <= la:
                oa, ob = plan.offsets[a], plan.offsets[b]
                assert oa + nbytes(program, a) <= ob or ob + nbytes(program, b) <= oa, \
                    f"{a} (steps {fa}..{la}) and {b} (steps {fb}..{lb}) overlap in the arena"


def test_gpt_block_arena_is_under_60_percent_of_naive():
    params = init_params(BLOCK)
    x, targets = init_batch(BLOCK)
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, BLOCK.heads), argnums=(0, 1))
    lowered = jit(vg, backend="cpu").lower(params, x, targets)
    plan = lowered.memory
    print("\n" + plan.summary())
    assert_valid_plan(lowered.program, plan)
    assert plan.peak < 0.6 * plan.naive, plan.summary()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes(), seed=st.integers(0, 2 ** 16))
def test_random_program_plans_never_overlap_live_buffers(recipe, seed):
    args = recipe.arrays(seed)
    argnums = recipe.float_argnums()

    def loss(*xs):
        out = recipe.fn(*xs)
        out = out[0] if isinstance(out, tuple) else out
        return ops.sum(out * out)
    lowered = jit(T.value_and_grad(loss, argnums=argnums), backend="cpu").lower(*args)
    assert_valid_plan(lowered.program, lowered.memory)
    assert lowered.memory.peak <= lowered.memory.naive


def test_freed_memory_is_reused_along_a_chain():
    """In a chain of matmuls each intermediate dies at the next step: the arena holds two
    of them at a time, not all of them."""
    w = np.eye(16, dtype=np.float32)

    def chain(x):
        for _ in range(6):
            x = ops.tanh(x @ w)
        return x
    plan = jit(chain, backend="cpu").lower(np.ones((16, 16), np.float32)).memory
    assert plan.peak <= 0.5 * plan.naive, plan.summary()


def test_checkpointed_layers_are_recomputed_in_the_backward_pass_and_lower_the_peak():
    """A residual stack of checkpointed tanh(h @ w1) @ w2 layers saves only each layer's
    input for the backward pass: the recomputed matmul stays a separate eqn (not merged
    back into the forward one), and the arena peak falls below the plain stack's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    ws = [(0.1 * rng.standard_normal((64, 64))).astype(np.float32) for _ in range(8)]

    def stack(remat):
        def layer(h, w1, w2):
            return ops.tanh(h @ w1) @ w2
        apply = T.checkpoint(layer) if remat else layer

        def loss(x, ws):
            h = x
            for i in range(0, len(ws), 2):
                h = h + apply(h, ws[i], ws[i + 1])
            return ops.sum(h * h)
        return T.value_and_grad(loss, argnums=(0, 1))
    plain, remat = (jit(stack(r), backend="cpu").lower(x, ws) for r in (False, True))
    dots = [sum(e.prim == "dot_general" for e in low.optimized.eqns) for low in (plain, remat)]
    assert dots[1] == dots[0] + len(ws) // 2, dots
    assert remat.memory.peak <= 0.75 * plain.memory.peak, (remat.memory.summary(), plain.memory.summary())
    assert_same_tree(jit(stack(True), backend="cpu")(x, ws), jit(stack(False), backend="reference")(x, ws))


def test_results_do_not_alias_the_arena():
    f = jit(lambda x: ops.exp(x @ x) * 2.0, backend="cpu")
    a = np.eye(3, dtype=np.float32)
    first = f(a)
    kept = first.copy()
    f(a * 3.0)
    np.testing.assert_array_equal(first, kept)
