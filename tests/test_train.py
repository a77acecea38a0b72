"""The training runtime: gradient accumulation, exact resume, validation of inputs."""
import json

import numpy as np
import pytest

from mlbh.models import gpt2
from mlbh.models.config import preset
from mlbh.models.gpt2 import GPT2, from_preset
from mlbh.runtime.optim import AdamWConfig, learning_rate
from mlbh.runtime.prepare import prepare_dataset
from mlbh.runtime.tokenizer import Tokenizer
from mlbh.runtime.checkpoint import save_checkpoint
from mlbh.runtime.train import Trainer
from mlbh.runtime.train_config import TrainConfig, load_config_file
from mlbh.runtime.train_step import StepRunner
from mlbh.tracer.errors import CheckpointError, ConfigError, DataError

CONFIG = preset("mini", vocab_size=61, block_size=32)
MODEL = GPT2(CONFIG)


def _state(runner, seed=0):
    params = gpt2.init_params(CONFIG, seed)
    return {"params": params, "m": runner.zeros_like(params), "v": runner.zeros_like(params), "step": 0}


@pytest.fixture(scope="module")
def runner():
    return StepRunner(MODEL, AdamWConfig(lr=1e-3, min_lr=1e-4, warmup_steps=2, max_steps=10), "cpu")


def test_micro_batches_of_1_and_3_equal_one_batch_of_4(runner):
    rng = np.random.default_rng(0)
    seq = rng.integers(0, 61, (4, 17)).astype(np.int32)
    tokens, targets = seq[:, :-1], seq[:, 1:].copy()
    targets[2, :5] = -100  # unequal supervised counts per micro-batch must still weigh correctly
    params = gpt2.init_params(CONFIG, 0)
    loss_a, count_a, sums_a = runner.accumulate(params, [(tokens, targets)])
    loss_b, count_b, sums_b = runner.accumulate(params, [(tokens[:1], targets[:1]), (tokens[1:], targets[1:])])
    assert count_a == count_b == 4 * 16 - 5
    assert abs(loss_a / count_a - loss_b / count_b) < 1e-6
    for k in params:
        assert np.abs(sums_a[k] / count_a - sums_b[k] / count_b).max() < 1e-6, k
    whole, split = _state(runner), _state(runner)
    assert abs(runner.step(whole, [(tokens, targets)])["loss"]
               - runner.step(split, [(tokens[:1], targets[:1]), (tokens[1:], targets[1:])])["loss"]) < 1e-6


def test_out_of_range_token_ids_are_rejected_before_running(runner):
    bad = np.zeros((2, 16), np.int32)
    bad[1, 3] = 61
    with pytest.raises(DataError, match=r"token id 61 at \(batch 1, position 3\)"):
        runner.step(_state(runner), [(bad, bad)])
    with pytest.raises(DataError, match="exceeds the model context"):
        gpt2.check_tokens(np.zeros((1, 33), np.int32), CONFIG)


def test_learning_rate_warms_up_then_follows_cosine_to_min_lr():
    cfg = AdamWConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.55)
    assert learning_rate(110, cfg) == pytest.approx(0.1)


def test_config_validation_names_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="global_batch 10 is not divisible by micro_batch x world_size = 4 x 1"):
        TrainConfig(global_batch=10, micro_batch=4).validate()
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"lr": 1e-3, "learning_rate": 3}))
    with pytest.raises(ConfigError, match="unknown settings learning_rate"):
        load_config_file(str(bad))
    for text, message in (('max_steps = "ten"', "c.toml: setting max_steps must be an integer, got 'ten'"),
                          ("seq_len = true", "setting seq_len must be an integer, got True"),
                          ('backend = 3', "setting backend must be a string, got 3")):
        typed = tmp_path / "c.toml"
        typed.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config_file(str(typed))
    with pytest.raises(ConfigError, match="beta1, beta2 < 1, got 0.9 and 1.5"):
        TrainConfig(beta2=1.5).validate()
    with pytest.raises(ConfigError, match="setting lr must be a number, got '1e-3'"):
        TrainConfig(lr="1e-3").validate()
    good = tmp_path / "c.toml"
    good.write_text("lr = 1\nmax_steps = 7\n")
    assert TrainConfig().with_overrides(**load_config_file(str(good))).max_steps == 7


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    texts = [f"Document {i}: " + " ".join(["the quick brown fox jumps over the lazy dog"] * (20 + i))
             for i in range(12)]
    tok = Tokenizer.train(texts, 300)
    out = tmp_path_factory.mktemp("data")
    prepare_dataset(texts, str(out), tok, val_fraction=0.2, num_proc=1, progress=False)
    return str(out)


def _train(dataset, out, max_steps, resume=False, **settings):
    cfg = TrainConfig(preset="mini", data=dataset, out=str(out), seq_len=32, micro_batch=2, global_batch=4,
                      max_steps=20, warmup_steps=3, eval_interval=5, eval_batches=2, resume=resume,
                      backend="cpu", keep_last=5, **settings)
    trainer = Trainer(cfg, from_preset, log=lambda *_: None)
    if max_steps < 20:  # stop early, as a crash or Ctrl-C would after a checkpoint
        trainer.cfg = cfg.with_overrides(max_steps=max_steps)
    return trainer.run()


def test_resume_continues_bit_identically(dataset, tmp_path):
    straight = _train(dataset, tmp_path / "a", 20)
    _train(dataset, tmp_path / "b", 10)
    resumed = _train(dataset, tmp_path / "b", 20, resume=True)
    for k, v in straight["state"]["params"].items():
        assert np.array_equal(v, resumed["state"]["params"][k]), k
    logged = [r["step"] for r in resumed["records"]]
    assert logged == list(range(1, 21)), "metrics.jsonl holds each step once after a resume"
    assert straight["records"][-1]["loss"] == resumed["records"][-1]["loss"]
    assert straight["records"][-1]["loss"] < straight["records"][0]["loss"]
    assert (tmp_path / "b" / "latest.json").exists()


def test_resume_may_switch_attention_recompute_and_reads_checkpoints_that_predate_it(dataset, tmp_path):
    """remat_attention changes how the backward pass runs, not what it computes: a run may
    resume with it switched on, from a checkpoint whose model dict has no such field."""
    from mlbh.runtime.checkpoint import load_checkpoint
    straight = _train(dataset, tmp_path / "a", 20)
    _train(dataset, tmp_path / "b", 10)
    ck = load_checkpoint(tmp_path / "b")
    state = dict(ck.state, model={k: v for k, v in ck.state["model"].items() if k != "remat_attention"})
    save_checkpoint(tmp_path / "b", ck.step, ck.params, ck.opt_state, state)
    resumed = _train(dataset, tmp_path / "b", 20, resume=True, remat_attention=True)
    assert resumed["final_step"] == 20
    for k, v in straight["state"]["params"].items():
        np.testing.assert_allclose(resumed["state"]["params"][k], v, rtol=1e-4, atol=1e-6, err_msg=k)


def test_recomputed_attention_gives_the_same_gradients_in_less_memory():
    from mlbh import tracer as T
    from mlbh.runtime.jitted import jit
    rng = np.random.default_rng(0)
    tokens, targets = (rng.integers(0, 211, (2, 64)).astype(np.int32) for _ in range(2))
    results, peaks = [], []
    for remat in (False, True):
        config = preset("mini", vocab_size=211, block_size=64).replace(remat_attention=remat)
        vg = jit(T.value_and_grad(lambda p, a, b: gpt2.loss(p, a, b, config)), backend="cpu")
        params = gpt2.init_params(config, 0)
        results.append(vg(params, tokens, targets))
        peaks.append(vg.lower(params, tokens, targets).memory.peak)
    (loss, grads), (loss_remat, grads_remat) = results
    np.testing.assert_allclose(loss_remat, loss, rtol=1e-6)
    for k in grads:
        np.testing.assert_allclose(grads_remat[k], grads[k], rtol=1e-4, atol=1e-7, err_msg=k)
    assert peaks[1] < peaks[0], peaks


def test_resume_checks_the_checkpoint_against_the_run(dataset, tmp_path):
    def trainer(max_steps, resume, logged=None):
        cfg = TrainConfig(preset="mini", data=dataset, out=str(tmp_path), seq_len=32, micro_batch=2,
                          global_batch=4, max_steps=max_steps, warmup_steps=1, eval_interval=2, eval_batches=1,
                          resume=resume, backend="cpu", sample_tokens=0)
        return Trainer(cfg, from_preset, log=(logged.append if logged is not None else lambda *_: None))

    first = trainer(2, False).run()["state"]
    with pytest.raises(ConfigError, match="at step 2, not below max_steps 2; raise --max-steps"):
        trainer(2, True).run()

    def rewrite(opt_state):
        from mlbh.runtime.checkpoint import load_checkpoint
        ck = load_checkpoint(tmp_path)
        save_checkpoint(tmp_path, 2, ck.params, opt_state, ck.state)

    rewrite({})  # as `mlbh import-hf` writes a checkpoint: parameters only
    logged = []
    assert trainer(3, True, logged).run()["final_step"] == 3
    assert any("has no AdamW state; its moments start at zero" in line for line in logged)
    rewrite({**{f"m/{k}": v for k, v in first["m"].items()},
             **{f"v/{k}": v[:1] for k, v in first["v"].items()}})
    with pytest.raises(CheckpointError, match=r"AdamW v of \S+ has shape \[1"):
        trainer(4, True).run()

    from mlbh.runtime.checkpoint import load_checkpoint
    from mlbh.runtime.model_families import load_model
    ck = load_checkpoint(tmp_path)
    params = dict(ck.params)
    params["ln_f.bias"] = params["ln_f.bias"][:1]
    save_checkpoint(tmp_path, 5, params, {}, ck.state)
    with pytest.raises(CheckpointError, match=r"parameter ln_f.bias has shape \[1\], the model needs"):
        load_model(tmp_path)  # as `mlbh eval` and `mlbh sample` load a run


def test_cuda_runner_without_a_device_is_a_one_line_error():
    from mlbh.codegen.cuda_device import DeviceError, cuda_available
    if cuda_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        StepRunner(GPT2(preset("mini", vocab_size=97)), AdamWConfig(), "cuda")


def test_compute_dtype_defaults_to_bfloat16_on_cuda_and_float32_on_cpu():
    from mlbh.runtime.train import _make_model
    cfg = TrainConfig(preset="mini", seq_len=32)
    assert _make_model(cfg, from_preset, 300, "cuda").config.compute_dtype == "bfloat16"
    assert _make_model(cfg, from_preset, 300, "cpu").config.compute_dtype == "float32"
    pinned = cfg.with_overrides(compute_dtype="float32", remat_attention=True)
    model = _make_model(pinned, from_preset, 300, "cuda")
    assert (model.config.compute_dtype, model.config.remat_attention) == ("float32", True)
