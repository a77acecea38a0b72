"""A sum that picks one element (cross-entropy's target log-probability) is read directly
instead of reduced over the row, with the same values for in-range, ignored and
out-of-range targets, forward and backward."""
import numpy as np

from mlbh import tracer as T
from mlbh.codegen.one_hot_sums import _picked_value
from mlbh.runtime.jitted import jit
from mlbh.tracer import ops

from cpu_source import inner_loop_bodies
from jit_compare import assert_same_tree


def nll_and_grad(logits, targets):
    return T.value_and_grad(lambda x: ops.sum(ops.cross_entropy(x, targets, reduction="none") * 1.5))(logits)


def test_cross_entropy_reads_its_target_directly_and_matches_the_reference():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 37)).astype(np.float32)
    targets = np.array([0, 36, -100, 40, 5, -3], np.int32)  # edges, ignored, out of range both ways
    want = jit(nll_and_grad, backend="reference")(logits, targets)
    got = jit(nll_and_grad, backend="cpu")(logits, targets)
    assert_same_tree(got, want, "cross-entropy")

    program = jit(nll_and_grad, backend="cpu").lower(logits, targets).program
    reductions = [(r, k.inner) for k in program.kernels for r in k.reductions]
    assert not [r for r, inner in reductions if _picked_value(r, inner) is not None], "no one-hot sum is left"
    assert sorted(r.op for r, inner in reductions if inner == 37) == ["max", "sum"], "max and sum of exp remain"


def test_a_sum_with_an_r_dependent_mask_stays_a_reduction():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)

    def masked_sum(a):  # where(r <= 1, a, 0): not a single element, must stay a sum
        keep = ops.less_equal(T.lax.iota((3, 4), 1, "int32"), 1)
        return ops.sum(ops.where(keep, a, 0.0), axis=1)

    np.testing.assert_array_equal(jit(masked_sum, backend="cpu")(x), [1.0, 9.0, 17.0])


def test_one_hot_stores_split_into_a_dense_pass_and_a_per_row_fix_with_the_same_values():
    """Cross-entropy's backward stores select(r == t, c, 0) + v(r): the CPU renderer stores
    0 + v(r) in the loop and rewrites the target's element once per row. Targets cover the
    first and last column and an ignored row (-100: no element is picked)."""
    from mlbh.codegen import cpu
    from mlbh.codegen.cpu_loops import with_loops_split
    from mlbh.codegen.one_hot_sums import split_one_hot_stores
    rng = np.random.default_rng(3)
    h = rng.standard_normal((5, 8)).astype(np.float32)
    w = rng.standard_normal((8, 37)).astype(np.float32)
    targets = np.array([0, 36, -100, 7, 7], np.int32)
    fn = T.value_and_grad(lambda w, h, t: ops.cross_entropy(h @ w, t), argnums=(0, 1))
    assert_same_tree(jit(fn, backend="cpu")(w, h, targets), jit(fn, backend="reference")(w, h, targets))
    kernels = [with_loops_split(k) for k in jit(fn, backend="cpu").lower(w, h, targets).program.kernels]
    split = [k for k in kernels if split_one_hot_stores(k) is not k]
    assert split, "the gradient's one-hot store is split"
    assert all(any(s.level == -1 for s in split_one_hot_stores(k).stores) for k in split)
    last_loops = [inner_loop_bodies(cpu.render_kernel(k).source)[-1] for k in split]
    assert all("icmp eq" not in loop for loop in last_loops), last_loops


def test_the_backward_pass_reads_back_the_forward_pass_exps_from_its_output():
    """Cross-entropy forward and backward in one kernel: the sum pass computes exp(z - max)
    and stashes it in the gradient's buffer; the gradient pass reads it back and overwrites
    it, so the loops compute exp once per element (the per-row fix-up computes one more)."""
    from mlbh.codegen import cpu
    rng = np.random.default_rng(4)
    h = rng.standard_normal((5, 8)).astype(np.float32)
    w = rng.standard_normal((8, 37)).astype(np.float32)
    targets = np.array([0, 36, -100, 7, 7], np.int32)
    fn = T.value_and_grad(lambda w, h, t: ops.cross_entropy(h @ w, t, reduction="sum"), argnums=(0, 1))
    assert_same_tree(jit(fn, backend="cpu")(w, h, targets), jit(fn, backend="reference")(w, h, targets))
    fused = [k for k in jit(fn, backend="cpu").lower(w, h, targets).program.kernels if k.levels == 3]
    assert len(fused) == 1
    in_loops = [x for body in inner_loop_bodies(cpu.render_kernel(fused[0]).source)
                for x in body.splitlines() if "@mlbh_exp32(" in x]
    assert len(in_loops) == 1, in_loops
