"""The jit API: signature cache and retrace messages, backends, donation, dumps, pytrees."""
import logging
import os

import time

import numpy as np
import pytest

from mlbh.codegen import cpu_jit
from mlbh.runtime.jitted import jit
from mlbh.tracer import ops
from mlbh.tracer.errors import ConfigError, MlbhError

DUMP_FILES = ("01_traced.txt", "02_optimized.txt", "03_fusion.txt", "04_kernels.txt", "05_memory.txt",
              "06_cpu_kernels.ll")


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_mlbh_runtime_jit_is_the_jit_function():
    import mlbh.runtime
    assert mlbh.runtime.jit is jit
    assert np.array_equal(mlbh.runtime.jit(ops.exp, backend="cpu")(np.zeros(3, np.float32)), np.ones(3))
    with pytest.raises(AttributeError, match="has no attribute 'jitt'"):
        mlbh.runtime.jitt  # noqa: B018


class CountingFn:
    """fn's body runs only while tracing, so counting calls counts traces."""

    def __init__(self, fn):
        self.fn, self.traces, self.__name__ = fn, 0, "counted"

    def __call__(self, *args):
        self.traces += 1
        return self.fn(*args)


@pytest.fixture(scope="module")
def scaled_tanh():
    """A cpu-jitted function shared by the cache tests (one compile per shape)."""
    return jit(CountingFn(lambda p, s: ops.tanh(p["w"] * s) + p["b"]), backend="cpu")


def test_same_signature_reuses_the_compiled_program(scaled_tanh):
    p = {"w": randn(3, 4), "b": randn(4, seed=1)}
    first = scaled_tanh(p, 2.0)
    traces = scaled_tanh.fn.traces
    p2 = {"w": randn(3, 4, seed=2), "b": randn(4, seed=3)}
    second = scaled_tanh(p2, 0.5)   # new values, same shapes and dtypes
    assert scaled_tanh.fn.traces == traces
    assert len(scaled_tanh.cache) == 1 and scaled_tanh.retraces == []
    np.testing.assert_allclose(first, np.tanh(p["w"] * 2.0) + p["b"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(second, np.tanh(p2["w"] * 0.5) + p2["b"], rtol=1e-6, atol=1e-6)


def test_shape_change_retraces_and_says_which_argument(scaled_tanh, caplog):
    p = {"w": randn(3, 4), "b": randn(4, seed=1)}
    scaled_tanh(p, 2.0)
    before = len(scaled_tanh.cache)
    with caplog.at_level(logging.WARNING, logger="mlbh.jit"):
        out = scaled_tanh({"w": randn(5, 4), "b": p["b"]}, 2.0)
    assert out.shape == (5, 4)
    assert len(scaled_tanh.cache) == before + 1
    message = scaled_tanh.retraces[-1]
    assert "args[0]['w']" in message and "float32[3, 4]" in message and "float32[5, 4]" in message, message
    assert message in caplog.text
    scaled_tanh(p, 1.0)  # back to the first shape: cached, no new trace
    assert len(scaled_tanh.cache) == before + 1


def test_dtype_change_is_named_too():
    f = jit(lambda x: x * 2, backend="reference")
    f(np.ones(3, np.float32))
    f(np.ones(3, np.int32))
    assert "float32[3]" in f.retraces[-1] and "int32[3]" in f.retraces[-1]


def test_reference_backend_runs_the_interpreter():
    f = jit(lambda x, y: {"sum": x + y, "prod": [x * y, None]}, backend="reference")
    x, y = randn(2, 3), randn(3, seed=1)
    out = f(x, y)
    np.testing.assert_allclose(out["sum"], x + y, rtol=1e-7)
    np.testing.assert_allclose(out["prod"][0], x * y, rtol=1e-7)
    assert out["prod"][1] is None


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown backend"):
        jit(lambda x: x, backend="tpu")


def test_pytrees_in_and_out_on_cpu():
    def fn(params, batch):
        (x, y), scale = batch
        h = ops.tanh(x @ params["layers"][0]["w"]) @ params["layers"][1]["w"]
        return {"loss": ops.mean((h - y) ** 2) * scale, "h": (h, [h.sum(-1)])}
    params = {"layers": [{"w": randn(4, 5)}, {"w": randn(5, 2, seed=1)}]}
    x, y = randn(3, 4, seed=2), randn(3, 2, seed=3)
    scale = np.float32(0.5)
    out = jit(fn, backend="cpu")(params, ((x, y), scale))
    h = np.tanh(x @ params["layers"][0]["w"]) @ params["layers"][1]["w"]
    assert set(out) == {"loss", "h"} and isinstance(out["h"], tuple) and isinstance(out["h"][1], list)
    np.testing.assert_allclose(out["h"][0], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["h"][1][0], h.sum(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["loss"], np.mean((h - y) ** 2) * 0.5, rtol=1e-5)


def sgd_update(params, grads):
    return {k: params[k] - 0.1 * grads[k] for k in params}


@pytest.fixture(scope="module")
def donating_sgd():
    return jit(sgd_update, backend="cpu", donate_argnums=(0,))


def test_donated_parameters_are_updated_in_place(donating_sgd):
    params = {"a": randn(4, 3), "b": randn(5, seed=1)}
    grads = {"a": randn(4, 3, seed=2), "b": randn(5, seed=3)}
    want = {k: params[k] - np.float32(0.1) * grads[k] for k in params}
    new = donating_sgd(params, grads)
    for k in params:
        np.testing.assert_allclose(new[k], want[k], rtol=1e-6, atol=1e-7)
        assert np.shares_memory(new[k], params[k]), f"{k} was not updated in place"
    np.testing.assert_allclose(grads["a"], randn(4, 3, seed=2))  # not donated: untouched
    newer = donating_sgd(new, grads)  # the returned arrays are the ones to pass on
    np.testing.assert_allclose(newer["a"], want["a"] - np.float32(0.1) * grads["a"], rtol=1e-6, atol=1e-7)


def test_kernels_store_a_donated_output_into_the_input_itself(donating_sgd):
    params = {"a": randn(4, 3), "b": randn(5, seed=1)}
    grads = {"a": randn(4, 3, seed=2), "b": randn(5, seed=3)}
    donating_sgd(params, grads)
    (_, executable), = donating_sgd.cache.values()
    program = executable.program
    donated = {program.inputs[i] for i in range(2)}  # the two params leaves, donated
    assert set(executable.aliases.values()) == donated
    stored = {s.buffer for k in program.kernels for s in k.stores}
    assert stored == donated, "each update is one array read and written at the same element"


def test_reusing_a_donated_array_raises(donating_sgd):
    params = {"a": randn(4, 3), "b": randn(5, seed=1)}
    grads = {"a": randn(4, 3, seed=2), "b": randn(5, seed=3)}
    donating_sgd(params, grads)
    with pytest.raises(MlbhError, match="donated"):
        donating_sgd(params, grads)


def _cuda_renderer_available():
    try:
        import mlbh.codegen.cuda  # noqa: F401
    except ImportError as err:
        return False, str(err)
    return True, ""


def assert_dump(directory):
    for name in DUMP_FILES:
        path = os.path.join(directory, name)
        assert os.path.getsize(path) > 0, f"{name} is empty"
    with open(os.path.join(directory, "06_cpu_kernels.ll")) as f:
        cpu_jit.compile_object(f.read())  # the dumped LLVM IR parses, verifies and compiles
    ok, why = _cuda_renderer_available()
    if not ok:
        pytest.skip(f"CUDA renderer not importable yet: {why}")
    sources = os.listdir(os.path.join(directory, "cuda"))
    assert sources and all(s.endswith(".cu") for s in sources), sources


def _softmax_of_product(x, w):
    return ops.softmax(x @ w) * 2.0


def test_lower_dump_writes_every_stage(tmp_path):
    x, w = randn(3, 4), randn(4, 5, seed=1)
    lowered = jit(_softmax_of_product, backend="cpu").lower(x, w)
    assert_dump(lowered.dump(str(tmp_path / "stages")))


def test_dump_dir_env_dumps_every_compile(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBH_DUMP_DIR", str(tmp_path))
    f = jit(_softmax_of_product, backend="cpu")
    f(randn(3, 4), randn(4, 5, seed=1))
    (entry,) = os.listdir(tmp_path)
    assert entry.startswith("_softmax_of_product")
    assert_dump(str(tmp_path / entry))


def test_retraces_on_purpose_are_not_warnings(caplog):
    f = jit(lambda x: ops.tanh(x) * 2.0, backend="cpu", warn_on_retrace=False)
    with caplog.at_level(logging.WARNING, logger="mlbh.jit"):
        f(randn(2, 3))
        f(randn(4, 3))
    assert len(f.retraces) == 1 and "retracing" not in caplog.text


def test_profile_times_every_launch_step():
    f = jit(lambda a, b: ops.sum(ops.tanh(a @ b), axis=1), backend="cpu")
    a, b = randn(8, 4), randn(4, 5, seed=1)
    f(a, b)
    assert f.profile_rows() == []
    f.start_profile()
    start = time.perf_counter()
    f(a, b)
    f(a, b)
    wall = time.perf_counter() - start
    rows = f.profile_rows()
    program = next(iter(f.cache.values()))[0].program
    assert len(rows) == len(program.steps) >= 2
    assert {what.split()[0] for _, what in rows} == {"kernel", "gemm"}
    assert all(ms >= 0 for ms, _ in rows) and rows == sorted(rows, key=lambda r: -r[0])
    assert 0 < 2 * sum(ms for ms, _ in rows) <= 1e3 * wall  # per call, timed inside the calls


def test_bad_arguments_are_named_by_their_pytree_path_and_line():
    from mlbh.tracer.errors import DTypeError, TraceError
    with pytest.raises(DTypeError, match=r"args\[0\]\['w'\]: unsupported dtype .*complex64"):
        jit(lambda p: ops.exp(p["w"]), backend="cpu")({"w": np.ones(2, np.complex64)})
    with pytest.raises(TraceError, match=r"args\[1\]: cannot trace an argument of type str"):
        jit(lambda a, b: a, backend="cpu")(randn(2), "abc")
    line = test_bad_arguments_are_named_by_their_pytree_path_and_line.__code__.co_firstlineno + 8
    with pytest.raises(DTypeError, match=rf"list holding traced values .*test_jit_api.py:{line}\)"):
        jit(lambda a, b: ops.matmul(a, [b, b]), backend="cpu")(randn(2, 2), randn(2))
