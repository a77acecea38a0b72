"""KV-cache generation: decode logits equal full recomputation; greedy output equals
transformers' greedy generate on the same random weights."""
import numpy as np
import pytest

from mlbh.models import gpt2
from mlbh.models.config import preset
from mlbh.runtime.jitted import jit
from mlbh.runtime.sampling import KVSampler

CONFIG = preset("mini", vocab_size=97, block_size=24)
MODEL = gpt2.GPT2(CONFIG)


def test_decode_with_cache_equals_full_recomputation():
    params = MODEL.init_params(3)
    rng = np.random.default_rng(0)
    seq = rng.integers(0, 97, 12).astype(np.int32)
    full = np.zeros((1, 24), np.int32)
    full[0, :12] = seq
    want = jit(MODEL.forward, backend="cpu")(params, full)[0]
    prompt = np.zeros((1, 24), np.int32)
    prompt[0, :8] = seq[:8]
    _, k, v = jit(MODEL.prefill, backend="cpu")(params, prompt)
    decode = jit(MODEL.decode_step, backend="cpu")
    for pos in range(8, 12):
        logits, k, v = decode(params, seq[pos:pos + 1], np.array(pos, np.int32), k, v)
        assert np.abs(logits[0] - want[pos]).max() < 1e-5 * np.abs(want[pos]).max(), pos


def test_greedy_sample_equals_transformers_generate():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from mlbh.models.hf import params_from_hf
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=64, n_positions=24, vocab_size=97, bos_token_id=0, eos_token_id=0)).eval()
    config, params = params_from_hf(hf.state_dict(), n_head=2)
    prompt = [5, 17, 42, 3]
    got = KVSampler(gpt2.GPT2(config), "cpu").generate(params, prompt, 12, temperature=0)
    with torch.no_grad():
        want = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                           pad_token_id=0)[0].tolist()
    assert got == want


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    from mlbh.runtime.sampling import _pick
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    assert {_pick(logits, 1.0, 0, rng, top_p=0.5) for _ in range(200)} == {0}
    assert {_pick(logits, 1.0, 0, rng, top_p=0.7) for _ in range(200)} == {0, 1}
    assert {_pick(logits, 1.0, 0, rng, top_p=1.0) for _ in range(400)} == {0, 1, 2, 3}


def test_prefill_hands_decode_float32_whatever_the_compute_dtype():
    """A bf16 model's prefill returns float32 logits and caches: decode_step keeps its cache
    in float32, and on CUDA a bf16 array would reach the host as raw uint16 bits."""
    model = gpt2.GPT2(CONFIG.replace(compute_dtype="bfloat16"))
    traced = jit(model.prefill, backend="reference").lower(model.init_params(0), np.zeros((1, 24), np.int32)).traced
    assert [v.dtype for v in traced.outputs] == ["float32"] * 3
    assert any(v.dtype == "bfloat16" for e in traced.eqns for v in e.outputs), "the model computes in bf16"


@pytest.mark.parametrize("settings, message", [
    ({"n_tokens": -1}, "new tokens must be a whole number >= 0, got -1"),
    ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
    ({"top_k": -2}, "top_k must be a whole number >= 0"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
])
def test_bad_sampling_settings_are_named_before_any_compile(settings, message):
    from mlbh.tracer.errors import ConfigError
    sampler = KVSampler(MODEL, "cpu")
    with pytest.raises(ConfigError, match=message):
        sampler.generate(None, [1, 2], **{"n_tokens": 3, **settings})
    assert not sampler.prefill.cache
