"""The training loop: data, compiled steps, logging, evaluation, checkpoints, resume.

Batches come from (seed, step, micro_step) alone and checkpoints hold parameters,
optimizer state and the step, so a resumed run continues exactly where it stopped.
"""
import os
import sys
import time


from mlbh.tracer.errors import CheckpointError, ConfigError

from .checkpoint import check_tensors, latest_checkpoint, load_checkpoint, save_checkpoint
from .data import TokenDataset
from .evaluate import Evaluator, fixed_val_batches
from .executable import to_host
from .jitted import default_backend
from .metrics import MetricsLog, plot_loss_curve
from .optim import AdamWConfig
from .progress import Progress
from .train_config import TrainConfig
from .train_step import StepRunner


def _make_model(cfg: TrainConfig, make_model, vocab_size: int, backend: str):
    dtype = cfg.compute_dtype or ("bfloat16" if backend == "cuda" else "float32")
    model = make_model(cfg.preset, vocab_size, dtype, remat_attention=cfg.remat_attention)
    if cfg.seq_len > model.context:
        raise ConfigError(f"seq_len {cfg.seq_len} exceeds the {cfg.preset} context {model.context}")
    return model


def _same_model(saved: dict, model) -> bool:
    """Whether a checkpoint's model dict describes this run's model: fields the checkpoint
    predates take their defaults, and remat_attention (how the backward pass runs, not
    what it computes) may differ."""
    def settings(d):
        return {k: v for k, v in d.items() if k != "remat_attention"}
    return settings(type(model).from_dict(saved).to_dict()) == settings(model.to_dict())


def _to_host(tree):
    return {k: to_host(v) for k, v in tree.items()}


class Trainer:
    """Trains `make_model(preset, vocab_size, compute_dtype, remat_attention=...)`: any
    object with loss, forward, init_params, param_shapes, check_tokens, context, describe,
    to_dict and the classmethod from_dict (models.gpt2.GPT2)."""

    def __init__(self, cfg: TrainConfig, make_model, log=print):
        self.cfg = cfg.validate()
        self.log = log
        self.backend = cfg.backend or default_backend()
        if cfg.data is None:
            from .default_data import ensure_default_dataset
            self.data_dir = ensure_default_dataset(cfg.vocab_size)
        else:
            self.data_dir = cfg.data
        self.train_data = TokenDataset(self.data_dir, "train")
        self.val_data = TokenDataset(self.data_dir, "val")
        self.model = _make_model(cfg, make_model, self.train_data.vocab_size, self.backend)
        self.opt = AdamWConfig(lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                               max_steps=cfg.max_steps, beta1=cfg.beta1, beta2=cfg.beta2,
                               weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip)
        os.makedirs(cfg.out, exist_ok=True)
        self.runner = StepRunner(self.model, self.opt, self.backend)
        self.evaluator = Evaluator(self.model, self.backend)
        self.val_batches = fixed_val_batches(self.val_data, cfg.micro_batch, cfg.seq_len, cfg.eval_batches)

    def _initial_state(self):
        cfg = self.cfg
        if cfg.resume and latest_checkpoint(cfg.out) is not None:
            ck = load_checkpoint(cfg.out)
            saved = ck.state.get("model")
            if saved and not _same_model(saved, self.model):
                raise CheckpointError(f"{cfg.out}: the checkpoint's model config differs from this run's "
                                      f"({saved} vs {self.model.to_dict()})")
            if ck.step >= cfg.max_steps:
                raise ConfigError(f"{cfg.out}: the latest checkpoint is at step {ck.step}, not below max_steps "
                                  f"{cfg.max_steps}; raise --max-steps to train further")
            params = ck.params
            check_tensors(params, self.model.param_shapes(), f"{ck.path}: parameter")
            m = {k[2:]: v for k, v in ck.opt_state.items() if k.startswith("m/")}
            v = {k[2:]: v for k, v in ck.opt_state.items() if k.startswith("v/")}
            if not ck.opt_state:  # an imported model (mlbh import-hf) has no optimizer state yet
                self.log(f"mlbh: {ck.path} has no AdamW state; its moments start at zero")
                m, v = self.runner.zeros_like(params), self.runner.zeros_like(params)
            for name, moments in (("m", m), ("v", v)):
                check_tensors(moments, self.model.param_shapes(), f"{ck.path}: AdamW {name} of")
            self.log(f"mlbh: resuming from {ck.path} at step {ck.step}")
            return {"params": params, "m": m, "v": v, "step": ck.step}
        if cfg.resume:
            self.log(f"mlbh: no checkpoint in {cfg.out} to resume from; starting at step 0")
        params = self.model.init_params(cfg.seed)
        return {"params": params, "m": self.runner.zeros_like(params), "v": self.runner.zeros_like(params),
                "step": 0}

    def _checkpoint(self, state, val_loss):
        opt_state = {f"m/{k}": v for k, v in _to_host(state["m"]).items()}
        opt_state.update({f"v/{k}": v for k, v in _to_host(state["v"]).items()})
        meta = {"model": self.model.to_dict(), "train": self.cfg.to_dict(), "data": self.data_dir,
                "data_position": {"next_step": state["step"]},
                "val_loss": val_loss}
        save_checkpoint(self.cfg.out, state["step"], _to_host(state["params"]), opt_state, meta,
                        keep_last=self.cfg.keep_last, best_metric=val_loss,
                        tokenizer=self.train_data.tokenizer_path)

    def run(self):
        cfg = self.cfg
        state = self._initial_state()
        if self.backend == "cuda":
            state = {k: (self.runner.to_device(v) if isinstance(v, dict) else v) for k, v in state.items()}
        metrics = MetricsLog(os.path.join(cfg.out, "metrics.jsonl"), state["step"] if cfg.resume else None)
        tokens_per_step = cfg.global_batch * cfg.seq_len
        self.log(f"mlbh: {cfg.preset}: {self.model.describe()} on {self.backend}, "
                 f"{cfg.global_batch}x{cfg.seq_len} tokens/step "
                 f"in {cfg.grad_accum} micro-step(s), steps {state['step']}..{cfg.max_steps}")
        progress = Progress(cfg.max_steps, start=state["step"])
        val_loss = None
        start_time = time.perf_counter()
        self.log("mlbh: compiling the train step on its first call (the compile cache makes later runs "
                 "start fast)")
        while state["step"] < cfg.max_steps:
            step = state["step"]
            t0 = time.perf_counter()
            micro = [self.train_data.get_batch(step, i, cfg.micro_batch, cfg.seq_len, cfg.seed)
                     for i in range(cfg.grad_accum)]
            result = self.runner.step(state, micro)
            elapsed = time.perf_counter() - t0
            if step == progress.start:
                self.log(f"mlbh: first step, compile included: {elapsed:.1f} s")
            record = {"step": state["step"], "loss": result["loss"], "lr": result["lr"],
                      "grad_norm": result["grad_norm"], "tokens_per_s": tokens_per_step / elapsed,
                      "step_seconds": elapsed}
            if state["step"] % cfg.eval_interval == 0 or state["step"] == cfg.max_steps:
                val_loss = self.evaluator.mean_loss(state["params"], self.val_batches)
                record["val_loss"] = val_loss
                self._checkpoint(state, val_loss)
            if state["step"] % cfg.log_interval == 0 or "val_loss" in record:
                metrics.write(record)
            progress.update(state["step"], record)
        progress.close()
        wall = time.perf_counter() - start_time
        records = metrics.read()
        png = os.path.join(cfg.out, "loss.png")
        if plot_loss_curve(records, png, f"mlbh {cfg.preset} on {os.path.basename(self.data_dir)}"):
            self.log(f"mlbh: loss curve -> {png}")
        else:
            self.log("mlbh: matplotlib is not installed, so no loss-curve PNG (pip install 'mlbh[plot]')")
        return {"final_step": state["step"], "val_loss": val_loss, "state": state, "records": records,
                "seconds": wall}

    def sample(self, params, prompt="\n", n_tokens=None):
        from .sampling import KVSampler
        from .tokenizer import Tokenizer
        path = self.train_data.tokenizer_path
        if path is None:
            return None
        tok = Tokenizer.load(path)
        sampler = KVSampler(self.model, self.backend)
        ids = sampler.generate(_to_host(params), tok.encode(prompt), n_tokens or self.cfg.sample_tokens,
                               seed=self.cfg.seed)
        return tok.decode(ids)


def train(cfg: TrainConfig, make_model, log=None):
    log = log or (lambda msg: print(msg, file=sys.stderr))
    trainer = Trainer(cfg, make_model, log)
    return trainer, trainer.run()
