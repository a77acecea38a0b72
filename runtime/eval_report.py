"""Evaluation of a checkpoint on a prepared split: every target token scored exactly once,
in non-overlapping windows. Reports mean loss (nats/token), perplexity, bits per token and
bits per byte (the bytes of the scored tokens' text)."""
import math

import numpy as np

from mlbh.tracer.errors import ConfigError, DataError

from .data import TokenDataset
from .evaluate import make_loss_and_count
from .jitted import jit


def evaluate_checkpoint(model, ck, data_dir, split="val", batch_size=8, seq_len=None,
                        max_tokens=None, backend="cpu", progress=None):
    """model: the checkpoint's model object; ck: a loaded runtime.checkpoint.Checkpoint."""
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("max_tokens", max_tokens)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be positive, got {value}")
    seq_len = seq_len or min(model.context, ck.state.get("train", {}).get("seq_len", model.context))
    data = TokenDataset(data_dir, split)
    if len(data) < 2:
        raise DataError(f"{data_dir}: split {split!r} has {len(data)} tokens; scoring needs at least 2")
    tokenizer = None
    if data.tokenizer_path:
        from .tokenizer import Tokenizer
        tokenizer = Tokenizer.load(data.tokenizer_path)
    fn = jit(make_loss_and_count(model), backend=backend)
    total, count, nbytes = 0.0, 0, 0
    n_batches = -(-data.num_eval_windows(seq_len, max_tokens) // batch_size)
    for i, (tokens, targets) in enumerate(data.iter_eval_batches(batch_size, seq_len, max_tokens)):
        model.check_tokens(tokens, f"{data_dir} split {split!r}")
        t, c = fn(ck.params, np.asarray(tokens, np.int32), np.asarray(targets, np.int32))
        total += float(t)
        count += int(round(float(c)))
        if tokenizer is not None:
            ids = np.asarray(targets)[np.asarray(targets) >= 0]
            nbytes += sum(len(tokenizer.token_bytes(int(j))) for j in ids)
        if progress:
            progress(i + 1, n_batches)
    mean = total / max(count, 1)
    result = {"checkpoint": str(ck.path), "step": ck.step, "split": split, "tokens": count,
              "loss": mean, "perplexity": math.exp(min(mean, 700)), "bits_per_token": mean / math.log(2)}
    if nbytes:
        result["bytes"] = nbytes
        result["bits_per_byte"] = total / math.log(2) / nbytes
    return result
