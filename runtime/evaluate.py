"""Validation loss with a compiled forward: mean cross-entropy per supervised token."""
import numpy as np

from mlbh.tracer import ops

from .jitted import jit


def make_loss_and_count(model):
    def loss_and_count(params, tokens, targets):
        total = model.loss(params, tokens, targets, reduction="sum")
        count = ops.sum(ops.astype(ops.not_equal(targets, -100), "float32"))
        return total, count
    return loss_and_count


class Evaluator:
    def __init__(self, model, backend):
        self.model = model
        self.fn = jit(make_loss_and_count(model), backend=backend)

    def mean_loss(self, params, batches) -> float:
        total, count = 0.0, 0.0
        params = self.fn.device_put(params)
        for tokens, targets in batches:
            self.model.check_tokens(tokens)
            t, c = self.fn(params, tokens, targets)
            total += float(t)
            count += float(c)
        return total / max(count, 1.0)


def fixed_val_batches(dataset, batch_size, seq_len, n_batches):
    """The first n_batches non-overlapping windows of the val split: the same every eval."""
    out = []
    for tokens, targets in dataset.iter_eval_batches(batch_size, seq_len):
        out.append((np.asarray(tokens, np.int32), np.asarray(targets, np.int32)))
        if len(out) == n_batches:
            break
    return out
