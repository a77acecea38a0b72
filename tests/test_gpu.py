"""backend="cuda" against the reference interpreter, on a CUDA device (skipped without one).

Covers every primitive case of the CPU suite (values and gradients), random graphs, the
dtype cases of the CUDA renderer tests (bfloat16, float16, float64, integers, bool), the
GPT block and GPT-2 forward/backward in float32 and in bfloat16 with fp32 accumulation,
donation in place, and the CUDA-graph replay path.
"""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cuda_cases import dtype_cases
from gpt_block import BlockConfig, block_loss, init_batch, init_params
from jit_compare import assert_same_tree
from random_graphs import recipes
from test_jit_cpu import CASES, with_loss_grads

from mlbh import tracer as T
from mlbh.models import gpt2
from mlbh.models.config import preset
from mlbh.runtime.executable import to_host
from mlbh.runtime.jitted import jit
from mlbh.tracer import pytree

pytestmark = pytest.mark.gpu
BF16 = np.dtype(ml_dtypes.bfloat16)


def host(tree, like):
    """Device results as numpy, bfloat16 bits (stored as uint16 on the device) reinterpreted."""
    got, td = pytree.flatten(tree)
    want, _ = pytree.flatten(like)
    out = []
    for g, w in zip(got, want):
        g = g.get() if hasattr(g, "get") else np.asarray(g)
        if np.asarray(w).dtype == BF16 and g.dtype == np.uint16:
            g = g.view(BF16)
        out.append(g)
    return pytree.unflatten(td, out)


def cuda_matches_reference(fn, args, what, compare=assert_same_tree):
    want = jit(fn, backend="reference")(*args)
    got = host(jit(fn, backend="cuda")(*args), want)
    compare(got, want, what)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_primitive_matches_reference(case):
    fn = with_loss_grads(case.fn, case.args) if case.grad else case.fn
    cuda_matches_reference(fn, case.args, case.id)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes(), seed=st.integers(0, 2 ** 16))
def test_random_graph_matches_reference(recipe, seed):
    args = recipe.arrays(seed)
    cuda_matches_reference(with_loss_grads(recipe.fn, args), args, repr(recipe))


def _close_low_precision(got, want, what):
    """bfloat16/float16 results: the reference rounds after every eqn as the kernels do; GEMM
    blocking and atomics may change a result by an ulp of its dtype."""
    for i, (g, w) in enumerate(zip(pytree.flatten(got)[0], pytree.flatten(want)[0])):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, f"{what} leaf {i}"
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w, err_msg=f"{what} leaf {i}")
            continue
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        ulp = 2.0 ** -7 if w.dtype == BF16 else 2.0 ** -10 if w.dtype == np.float16 else 1e-5
        scale = np.abs(w64[np.isfinite(w64)]).max(initial=0.0)
        np.testing.assert_allclose(g64, w64, rtol=2 * ulp, atol=2 * ulp * scale, err_msg=f"{what} leaf {i}")


@pytest.mark.parametrize("case", dtype_cases(), ids=lambda c: c[0])
def test_dtype_case_matches_reference(case):
    name, fn, args = case
    cuda_matches_reference(fn, args, name, _close_low_precision)


@pytest.mark.parametrize("dims, a_shape, b_shape", [
    ((((1,), (0,)), ((), ())), (64, 48), (48, 80)),
    ((((1,), (1,)), ((), ())), (64, 48), (80, 48)),
    ((((0, 1), (0, 1)), ((), ())), (4, 32, 24), (4, 32, 40)),
    ((((3,), (3,)), ((0, 1), (0, 1))), (2, 3, 16, 8), (2, 3, 16, 8)),
    ((((2,), (2,)), ((0, 1), (0, 1))), (2, 3, 16, 16), (2, 3, 16, 8)),
])
def test_bfloat16_gemm_on_cublas_matches_reference(dims, a_shape, b_shape):
    """bf16 operands, fp32 accumulation, bf16 result: cublasGemmStridedBatchedEx's layouts."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape).astype(BF16)
    b = rng.standard_normal(b_shape).astype(BF16)
    fn = lambda a, b: T.lax.dot_general(T.lax.tanh(a), b, dims)  # noqa: E731 (a kernel feeds the GEMM)
    cuda_matches_reference(fn, (a, b), f"dot_general {dims}", compare=_close_low_precision)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpt_block_forward_backward(dtype):
    cfg = BlockConfig(batch=2, seq=32, width=64, heads=4, vocab=128)
    params = {k: v.astype(ml_dtypes.bfloat16) if dtype == "bfloat16" else v for k, v in init_params(cfg).items()}
    x, targets = init_batch(cfg)
    x = x.astype(ml_dtypes.bfloat16) if dtype == "bfloat16" else x
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, cfg.heads), argnums=(0, 1))
    cuda_matches_reference(vg, (params, x, targets), f"gpt block {dtype}",
                           assert_same_tree if dtype == "float32" else _close_low_precision)


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_gpt2_loss_and_grads(compute_dtype):
    config = preset("mini", vocab_size=211, block_size=64, compute_dtype=compute_dtype)
    params = gpt2.init_params(config, 0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 211, (4, 64)).astype(np.int32)
    targets = rng.integers(0, 211, (4, 64)).astype(np.int32)
    vg = T.value_and_grad(lambda p, a, b: gpt2.loss(p, a, b, config))
    want = jit(vg, backend="reference")(params, tokens, targets)
    got = host(jit(vg, backend="cuda")(params, tokens, targets), want)
    if compute_dtype == "float32":
        assert_same_tree(got, want, "gpt2 f32")
    else:  # fp32 master weights and loss; bf16 activations round differently per GEMM blocking
        assert abs(float(got[0]) - float(want[0])) < 2e-2 * abs(float(want[0]))
        for k in params:
            g, w = got[1][k], want[1][k]
            assert np.linalg.norm(g - w) <= 5e-2 * np.linalg.norm(w) + 1e-6, k


def test_donated_update_runs_in_place_on_device():
    import cupy
    step = jit(lambda p, g: p - 0.1 * g, backend="cuda", donate_argnums=(0,))
    p = cupy.arange(8, dtype=np.float32)
    g = cupy.ones(8, dtype=np.float32)
    new = step(p, g)
    np.testing.assert_allclose(new.get(), np.arange(8) - 0.1, rtol=1e-6)
    assert new.data.ptr == p.data.ptr, "the donated buffer is reused"


def test_cuda_graph_replay_matches_plain_launches():
    cfg = BlockConfig(batch=2, seq=16, width=32, heads=4, vocab=64)
    params = init_params(cfg)
    x, targets = init_batch(cfg)
    vg = T.value_and_grad(lambda p, x, t: block_loss(p, x, t, cfg.heads))
    plain = jit(vg, backend="cuda")
    graphed = jit(vg, backend="cuda", cuda_graph=True)
    for seed in range(3):  # replays see new inputs
        x2 = x + np.float32(0.01 * seed)
        want = host(plain(params, x2, targets), vg(params, x2, targets))
        got = host(graphed(params, x2, targets), want)
        assert_same_tree(got, want, f"replay {seed}")


def test_cuda_graph_applies_a_donated_update_once_per_call():
    """The warm-up before capture updates the donated input in place; the replay must still
    start from the caller's values, so one call is one update."""
    step = jit(lambda p, g: p - 0.1 * g, backend="cuda", donate_argnums=(0,), cuda_graph=True)
    p = np.arange(8, dtype=np.float32)
    for k in range(1, 3):
        p = to_host(step(p, np.ones(8, np.float32)))
        np.testing.assert_allclose(p, np.arange(8) - 0.1 * k, rtol=1e-6)


def test_device_put_uploads_parameters_once_and_sampling_agrees():
    import cupy

    from mlbh.models.gpt2 import GPT2
    from mlbh.runtime.sampling import KVSampler
    model = GPT2(preset("mini", vocab_size=211, block_size=64))
    params = model.init_params(0)
    sampler = KVSampler(model, "cuda")
    on_device = sampler.decode.device_put(params)
    assert all(isinstance(v, cupy.ndarray) for v in on_device.values())
    prompt = [5, 6, 7]
    assert sampler.generate(on_device, prompt, 8, temperature=0) == sampler.generate(params, prompt, 8, temperature=0)
