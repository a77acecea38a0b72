"""A sum that picks one element (cross-entropy's target log-probability) is read directly
instead of reduced over the row, with the same values for in-range, ignored and
out-of-range targets, forward and backward."""
import numpy as np

from mlbh import tracer as T
from mlbh.codegen.one_hot_sums import _picked_value
from mlbh.runtime.jit import jit
from mlbh.tracer import ops

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
