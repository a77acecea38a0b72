"""The compiled pieces of one optimizer step.

micro_step(params, grad_sums, tokens, targets) -> (loss_sum, token_count, grad_sums')
    accumulates the gradient of the SUM of per-token losses into fp32 buffers (donated,
    so the add happens in place); the sum is normalised once per optimizer step by the
    step's supervised tokens (optim.make_update), so micro-batches of different sizes
    weigh correctly.
"""
import numpy as np

from mlbh.codegen.cuda_device import require_cupy
from mlbh.tracer import ops
from mlbh.tracer.transforms import value_and_grad

from .jitted import jit
from .optim import AdamWConfig, learning_rate, make_update


def make_micro_step(model):
    """model: any object with loss(params, tokens, targets, reduction) (e.g. models.gpt2.GPT2)."""
    def loss_sum(params, tokens, targets):
        return model.loss(params, tokens, targets, reduction="sum")

    def micro_step(params, grad_sums, tokens, targets):
        total, grads = value_and_grad(loss_sum)(params, tokens, targets)
        count = ops.sum(ops.astype(ops.not_equal(targets, -100), "float32"))
        return total, count, {k: ops.add(grad_sums[k], grads[k]) for k in grads}

    return micro_step


class StepRunner:
    """Runs optimizer steps: micro-batches with fp32 accumulation, then the AdamW update."""

    def __init__(self, model, opt: AdamWConfig, backend, cuda_graph=False):
        """cuda_graph: replay each compiled function as one captured CUDA graph (no
        per-kernel launch cost; inputs and outputs are copied in and out per call)."""
        self.model = model
        self.opt = opt
        self.backend = backend
        self.micro = jit(make_micro_step(model), backend=backend, donate_argnums=(1,), cuda_graph=cuda_graph)
        self.update = jit(make_update(opt), backend=backend, donate_argnums=(0, 1, 2), cuda_graph=cuda_graph)
        self._spare_sums = None  # last step's gradient sums, zeroed and reused by the next
        self.xp = np
        if backend == "cuda":
            self.xp = require_cupy()

    def to_device(self, tree):
        """A dict of arrays on this runner's device (CuPy arrays on CUDA)."""
        return {k: self.xp.asarray(v) for k, v in tree.items()}

    def zeros_like(self, params):
        return {k: self.xp.zeros(v.shape, dtype=np.float32) for k, v in params.items()}

    def accumulate(self, params, micro_batches, grad_sums=None):
        """(loss sum, supervised token count, fp32 gradient sums) over the micro-batches.
        grad_sums, if given, are zeroed buffers the sums are accumulated into (donated)."""
        if grad_sums is None:
            grad_sums = self.zeros_like(params)
        loss_total, tokens_total = 0.0, 0.0
        for tokens, targets in micro_batches:
            self.model.check_tokens(tokens)
            total, count, grad_sums = self.micro(params, grad_sums, tokens, targets)
            loss_total += float(total)
            tokens_total += float(count)
        return loss_total, tokens_total, grad_sums

    def _zeroed_spares(self):
        # Zeroing memory that is already mapped is far cheaper than fresh zeros: first
        # writes to new pages fault, and in a VM each fault can cost tens of microseconds.
        if self._spare_sums is None:
            return None
        for buf in self._spare_sums.values():
            buf.fill(0)
        return self._spare_sums

    def step(self, state, micro_batches):
        """One optimizer step over an iterable of (tokens, targets). state holds params, m, v,
        step (number of updates done). Returns metrics."""
        loss_total, tokens_total, grad_sums = self.accumulate(state["params"], micro_batches, self._zeroed_spares())
        t = state["step"] + 1
        lr = learning_rate(state["step"], self.opt)
        scalars = np.array([max(tokens_total, 1.0), lr, t], dtype=np.float32)
        p, m, v, norm = self.update(state["params"], state["m"], state["v"], grad_sums, scalars)
        state.update(params=p, m=m, v=v, step=t)
        self._spare_sums = grad_sums
        return {"loss": loss_total / max(tokens_total, 1.0), "lr": lr, "grad_norm": float(norm),
                "tokens": tokens_total}
