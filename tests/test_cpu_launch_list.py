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
    lists, pool = executable(f)._launch_list, cpu_pool.fork_join_pool(3)
    split = int((lists.table[:, 4] > 1).sum())
    assert split > 0 and pool.workers == 2
    before = _generations(pool)
    got = f(*args)
    assert [g - b for g, b in zip(_generations(pool), before)] == [split, split]
    assert pool.acquire()
    try:
        before = _generations(pool)
        busy = f(*args)
        assert _generations(pool) == before, "no share handed out while the workers are held"
    finally:
        pool.release()
    assert_bit_identical(got, want)
    assert_same_tree(busy, want, "the list run unsplit")  # unsplit sums may round differently
    monkeypatch.setattr(cpu_backend, "PARALLEL_MIN_WORK", 1 << 40)
    f(*args)
    rebuilt = executable(f)._launch_list
    assert rebuilt is not lists and not (rebuilt.table[:, 4] > 1).any(), "a new threshold, a new list"


def test_operands_numpy_would_copy_are_copied_natively_and_integer_gemms_stay_python(monkeypatch):
    """Heads merged back after a transpose (numpy's reshape copies) are copied by a native
    strided-copy step into a scratch array; an integer dot_general (no BLAS for it) is a
    Python step between native runs. The results are the step-by-step loop's. Every step
    that can split does (three shares), the copies included."""
    from mlbh.runtime.cpu_launch_list import _functions
    monkeypatch.setattr(cpu_backend, "PARALLEL_MIN_WORK", 1)
    monkeypatch.setattr(cpu_backend, "available_cores", lambda: 3)

    def f(x, v, w, i, j):
        heads = ops.transpose(ops.tanh(ops.reshape(x, (6, 2, 4))), (1, 0, 2))   # (2, 6, 4)
        merged = ops.reshape(ops.transpose(heads * 2.0, (1, 0, 2)), (6, 8))     # from the arena
        merged_input = ops.reshape(ops.transpose(v, (1, 0, 2)), (6, 8))         # from an input
        k = lax.dot_general(i + 1, j * 2, (((1,), (0,)), ((), ())))
        return ops.matmul(merged, w) + ops.matmul(merged_input, w) + ops.astype(k, "float32")

    def want(x, v, w, i, j):
        return (np.tanh(x) * 2) @ w + v.transpose(1, 0, 2).reshape(6, 8) @ w + (i + 1) @ (j * 2)
    args = [randn(6, 8), randn(2, 6, 4), randn(8, 4),
            rng.integers(-3, 3, (6, 5)).astype(np.int32), rng.integers(-3, 3, (5, 4)).astype(np.int32)]
    other = [2 * args[0], -args[1], *args[2:]]
    native = jit(f, backend="cpu")
    got = native(*args)
    lists = executable(native)._launch_list
    python = [step for kind, step, _ in lists.segments if kind == "python"]
    assert [executable(native).program.buffers[step.a].dtype for step in python] == ["int32"]
    copies = lists.table[lists.table[:, 0] == _functions()[1][4]]
    assert list(copies[:, 4]) == [3, 3], "two strided copies of float32, each in three shares"
    np.testing.assert_allclose(got, want(*args), rtol=1e-5, atol=1e-5)
    again = native(*other)  # the copies read the new call's arrays
    np.testing.assert_allclose(again, want(*other), rtol=1e-5, atol=1e-5)
    step_by_step(monkeypatch)
    loop = jit(f, backend="cpu")
    assert_bit_identical([got, again], [loop(*args), loop(*other)])


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


def test_float64_operands_numpy_would_copy_stay_python_steps(monkeypatch):
    """Only float32 has a native strided copy; a float64 GEMM on merged heads runs in Python."""
    def f(v, w):
        return ops.matmul(ops.reshape(ops.transpose(v, (1, 0, 2)), (6, 8)), w)
    v, w = rng.standard_normal((2, 6, 4)), rng.standard_normal((8, 3))
    native = jit(f, backend="cpu")
    got = native(v, w)
    assert [kind for kind, *_ in executable(native)._launch_list.segments] == ["python"]
    np.testing.assert_allclose(got, v.transpose(1, 0, 2).reshape(6, 8) @ w, rtol=1e-12)


def test_a_forked_child_runs_the_list_on_its_own_workers(monkeypatch):
    """The parent's workers do not exist in a forked child: its calls must hand shares to
    workers of its own (else it would wait for them forever)."""
    import os
    import time
    monkeypatch.setattr(cpu_backend, "PARALLEL_MIN_WORK", 1)
    monkeypatch.setattr(cpu_backend, "available_cores", lambda: 3)
    fn = with_loss_grads(mlp_attention_loss, operands())
    f = jit(fn, backend="cpu")
    args = operands()
    want = pytree.flatten(f(*args))[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one call, its loss back through the pipe
        try:
            os.write(write, np.float64(pytree.flatten(f(*args))[0][0]).tobytes())
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's call hung")
        time.sleep(0.05)
    got = np.frombuffer(os.read(read, 8), np.float64)
    os.close(read)
    assert got.size == 1 and got[0] == np.float64(want[0])


def test_data_pointer_reads_the_address_numpy_reports():
    from mlbh.runtime.cpu_launch_list import address, data_pointer
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    for array in (base, base[2:], base[:, 3:], base.T, base[1:4, 5:].reshape(-1), np.zeros(0, np.int8)):
        assert data_pointer(array) == address(array)
