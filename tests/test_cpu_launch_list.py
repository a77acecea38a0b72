"""The CPU backend's native launch list (runtime/cpu_launch_list.py): one native call runs
every kernel and GEMM of a program. Checked against the same program run step by step in
Python (the profiler's path), bit for bit, and against the reference interpreter."""
import ctypes

import numpy as np
import pytest

from mlbh.runtime import cpu_backend, cpu_pool
from mlbh.runtime.jitted import jit
from mlbh.tracer import lax, ops, pytree

from jit_compare import assert_same_tree
from random_graphs import with_loss_grads

rng = np.random.default_rng(7)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def mlp_attention_loss(x, w1, w2):
    """Kernels and GEMMs of every kind the GPT has: plain, transposed (the gradients) and
    batched over heads."""
    h = ops.tanh(ops.matmul(x, w1))                       # (2, 16, 24)
    q = ops.reshape(h, (2, 16, 3, 8))
    scores = lax.dot_general(q, q, (((3,), (3,)), ((0, 2), (0, 2))))  # (2, 3, 16, 16)
    return ops.sum(ops.softmax(scores, -1)) + ops.sum(ops.matmul(h, w2) ** 2)


def operands():
    return randn(2, 16, 12), randn(12, 24) * 0.3, randn(24, 5)


def assert_bit_identical(got, want):
    got, want = pytree.flatten(got)[0], pytree.flatten(want)[0]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def executable(jitted):
    (_, exe), = jitted.cache.values()
    return exe


def step_by_step(monkeypatch):
    monkeypatch.setattr(cpu_backend.CpuBackend, "launch_list", None)


def test_native_list_equals_the_python_loop_and_rereads_new_inputs(monkeypatch):
    fn = with_loss_grads(mlp_attention_loss, operands())
    native = jit(fn, backend="cpu")
    first, second = operands(), operands()
    got = [native(*first), native(*second)]  # new input and output arrays in the second call
    lists = executable(native)._launch_list
    assert [kind for kind, *_ in lists.segments] == ["native"], "one native run, no Python step"
    assert len(lists.table) == len(executable(native).program.steps)
    with monkeypatch.context() as m:
        step_by_step(m)
        loop = jit(fn, backend="cpu")
        want = [loop(*first), loop(*second)]
        assert executable(loop)._launch_list is None
    assert_bit_identical(got, want)
    assert_same_tree(got[1], jit(fn, backend="reference")(*second), "native launch list")


def _generations(pool):
    return [ctypes.c_int32.from_address(pool.slots + i * cpu_pool.LINE).value for i in range(pool.workers)]


def test_split_steps_run_on_the_workers_and_busy_workers_leave_them_to_the_caller(monkeypatch):
    """Every table row with shares > 1 hands each worker one share (its slot's generation
    counts them); while another holder has the workers, the list runs on this thread."""
    monkeypatch.setattr(cpu_backend, "PARALLEL_MIN_WORK", 1)
    monkeypatch.setattr(cpu_backend, "available_cores", lambda: 3)
    fn = with_loss_grads(mlp_attention_loss, operands())
    f = jit(fn, backend="cpu")
    args = operands()
    want = f(*args)
    lists = executable(f)._launch_list
    split = int((lists.table[:, 4] > 1).sum())
    assert split > 0 and lists.pool.workers == 2
    before = _generations(lists.pool)
    got = f(*args)
    assert [g - b for g, b in zip(_generations(lists.pool), before)] == [split, split]
    assert lists.pool.acquire()
    try:
        before = _generations(lists.pool)
        busy = f(*args)
        assert _generations(lists.pool) == before, "no share handed out while the workers are held"
    finally:
        lists.pool.release()
    assert_bit_identical(got, want)
    assert_same_tree(busy, want, "the list run unsplit")  # unsplit sums may round differently
    monkeypatch.setattr(cpu_backend, "PARALLEL_MIN_WORK", 1 << 40)
    f(*args)
    rebuilt = executable(f)._launch_list
    assert rebuilt is not lists and not (rebuilt.table[:, 4] > 1).any(), "a new threshold, a new list"


def test_gemms_on_copies_or_integers_stay_python_steps_between_native_runs(monkeypatch):
    """An operand that is a copy (heads merged back after a transpose: numpy's reshape
    copies) and an integer dot_general (no BLAS for it) are Python steps; the kernels
    around them still run natively, and the results are the step-by-step loop's."""
    def f(x, w, i, j):
        heads = ops.transpose(ops.tanh(ops.reshape(x, (6, 2, 4))), (1, 0, 2))   # (2, 6, 4)
        merged = ops.reshape(ops.transpose(heads * 2.0, (1, 0, 2)), (6, 8))
        k = lax.dot_general(i + 1, j * 2, (((1,), (0,)), ((), ())))
        return ops.matmul(merged, w) + ops.astype(k, "float32")
    x, w = randn(6, 8), randn(8, 4)
    i, j = rng.integers(-3, 3, (6, 5)).astype(np.int32), rng.integers(-3, 3, (5, 4)).astype(np.int32)
    native = jit(f, backend="cpu")
    got = native(x, w, i, j)
    segments = executable(native)._launch_list.segments
    python = [step for kind, step, _ in segments if kind == "python"]
    assert len(python) == 2 and "native" in [kind for kind, *_ in segments]
    assert {executable(native).program.buffers[step.a].dtype for step in python} == {"int32", "float32"}
    np.testing.assert_allclose(got, (np.tanh(x) * 2) @ w + ((i + 1) @ (j * 2)), rtol=1e-5, atol=1e-6)
    step_by_step(monkeypatch)
    assert_bit_identical(got, jit(f, backend="cpu")(x, w, i, j))


def test_donated_inputs_are_written_in_place_through_the_list():
    def update(p, g):
        return p - 0.5 * g, g * g
    p, g = randn(300), randn(300)
    f = jit(update, backend="cpu", donate_argnums=(0,))
    donated = p.copy()
    new_p, square = f(donated, g)
    assert executable(f).aliases, "the new p is stored over the donated p"
    np.testing.assert_array_equal(new_p, p - np.float32(0.5) * g)
    want = new_p - np.float32(0.5) * g
    again, _ = f(new_p, g)  # the previous output donated: another array under the same slots
    np.testing.assert_array_equal(again, want)
    np.testing.assert_array_equal(square, g * g)
    with pytest.raises(Exception, match="donated"):
        f(new_p, g)
