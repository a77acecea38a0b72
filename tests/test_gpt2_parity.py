"""GPT-2 against an independent implementation: transformers' GPT2LMHeadModel with random
weights, loaded through params_from_hf, on the CPU backend in float32."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mlbh import tracer as T  # noqa: E402
from mlbh.models import gpt2, hf  # noqa: E402
from mlbh.runtime.jitted import jit  # noqa: E402
from mlbh.runtime.optim import AdamWConfig, learning_rate  # noqa: E402
from mlbh.runtime.train_step import StepRunner  # noqa: E402

VOCAB, CTX = 97, 16


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=CTX, vocab_size=VOCAB,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    return (rng.integers(0, VOCAB, (3, CTX)).astype(np.int32),
            rng.integers(0, VOCAB, (3, CTX)).astype(np.int32))


def _rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)


def test_params_from_hf_pads_vocab_and_maps_names(hf_model):
    config, params = hf.params_from_hf(hf_model.state_dict(), n_head=2)
    assert config.vocab_size == VOCAB and config.padded_vocab == 128
    assert params["wte.weight"].shape == (128, 32)
    assert not params["wte.weight"][VOCAB:].any()
    assert set(params) == set(gpt2.param_shapes(config))


def test_logits_loss_and_grads_match_transformers(hf_model, batch):
    tokens, targets = batch
    config, params = hf.params_from_hf(hf_model.state_dict(), n_head=2)
    logits = jit(lambda p, t: gpt2.forward(p, t, config), backend="cpu")(params, tokens)
    hf_model.zero_grad()
    out = hf_model(torch.tensor(tokens, dtype=torch.long))
    want_logits = out.logits.detach().numpy()
    assert logits.shape == want_logits.shape
    assert _rel(logits, want_logits) < 1e-5

    loss, grads = jit(T.value_and_grad(lambda p, a, b: gpt2.loss(p, a, b, config)), backend="cpu")(
        params, tokens, targets)
    want = torch.nn.functional.cross_entropy(out.logits.reshape(-1, VOCAB),
                                             torch.tensor(targets, dtype=torch.long).reshape(-1))
    want.backward()
    assert abs(float(loss) - want.item()) / want.item() < 1e-5
    named = dict(hf_model.named_parameters())
    for name, g in grads.items():
        expected = named["transformer." + name].grad.numpy()
        got = g[:VOCAB] if name == "wte.weight" else g
        assert _rel(got, expected) < 1e-4, name
    assert not grads["wte.weight"][VOCAB:].any(), "padded rows take no gradient"


def test_ten_adamw_steps_with_clipping_track_torch(hf_model, batch):
    tokens, targets = batch
    model = transformers.GPT2LMHeadModel(hf_model.config)
    model.load_state_dict(hf_model.state_dict())
    config, params = hf.params_from_hf(model.state_dict(), n_head=2)
    # clip at 0.5 so clipping is active; weight decay on matrices and embeddings only
    opt_cfg = AdamWConfig(lr=3e-3, min_lr=3e-4, warmup_steps=3, max_steps=10, grad_clip=0.5, weight_decay=0.1)
    runner = StepRunner(gpt2.GPT2(config), opt_cfg, "cpu")
    state = {"params": params, "m": runner.zeros_like(params), "v": runner.zeros_like(params), "step": 0}
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n != "lm_head.weight"]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    t_tokens = torch.tensor(tokens, dtype=torch.long)
    t_targets = torch.tensor(targets, dtype=torch.long)
    norms = []
    for step in range(10):
        metrics = runner.step(state, [(tokens, targets)])
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, opt_cfg)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(t_tokens).logits.reshape(-1, VOCAB), t_targets.reshape(-1))
        loss.backward()
        norms.append((metrics["grad_norm"], torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5).item()))
        opt.step()
    assert all(abs(a - b) / b < 1e-4 for a, b in norms), norms
    assert norms[0][1] > 0.5, "the test must exercise clipping"
    named = dict(model.named_parameters())
    for name, value in state["params"].items():
        got = value[:VOCAB] if name == "wte.weight" else value
        expected = named["transformer." + name].detach().numpy()
        assert np.abs(got - expected).max() < 1e-4, name
