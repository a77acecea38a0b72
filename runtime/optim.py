"""AdamW with global grad-norm clipping, as one compiled update over all parameters, and
the learning-rate schedule.

update(params, m, v, grad_sums, scalars) with scalars = [token_count, lr, step]:
    g      = grad_sums / token_count                    (mean over the step's tokens)
    norm   = sqrt(sum over all params of sum(g^2))
    g      = g * min(1, clip / (norm + 1e-6))           (torch.nn.utils.clip_grad_norm_)
    m      = b1 m + (1 - b1) g
    v      = b2 v + (1 - b2) g^2
    p      = p (1 - lr wd) - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
             (torch.optim.AdamW; weight decay only on matrices and embeddings)
"""
import math
from dataclasses import dataclass

from mlbh.tracer import ops
from mlbh.tracer.errors import ConfigError


@dataclass(frozen=True)
class AdamWConfig:
    lr: float = 6e-4
    min_lr: float = 6e-5
    warmup_steps: int = 1000
    max_steps: int = 56_000
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0   # <= 0 disables clipping

    def __post_init__(self):
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1):
            raise ConfigError(f"betas must be in (0, 1), got {self.beta1}, {self.beta2}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr} min_lr={self.min_lr}")
        if self.warmup_steps < 0 or self.max_steps < 1:
            raise ConfigError("warmup_steps must be >= 0 and max_steps >= 1")


def learning_rate(step: int, cfg: AdamWConfig) -> float:
    """Linear warmup over warmup_steps, then cosine decay from lr to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.max_steps:
        return cfg.min_lr
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / span
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def decays(name: str, shape) -> bool:
    """Weight decay applies to matrices and embeddings, not to biases and layer-norm gains."""
    return len(shape) >= 2


def _sum_of_squares(g):
    """sum(g * g), a matrix's rows first: a reduction of one row runs on one core (CPU)
    or one block (GPU), so a large parameter's would hold the update back."""
    sq = ops.multiply(g, g)
    if len(sq.shape) >= 2:
        sq = ops.sum(sq, tuple(range(1, len(sq.shape))))
    return ops.sum(sq)


def make_update(cfg: AdamWConfig):
    """The traced function of one optimizer step; compile it with jit (donating p, m, v)."""

    def update(params, m, v, grad_sums, scalars):
        count, lr, step = scalars[0], scalars[1], scalars[2]
        grads = {k: ops.divide(g, count) for k, g in grad_sums.items()}
        sq = [_sum_of_squares(g) for g in grads.values()]
        total = sq[0]
        for s in sq[1:]:
            total = ops.add(total, s)
        norm = ops.sqrt(total)
        if cfg.grad_clip > 0:
            coef = ops.minimum(ops.divide(cfg.grad_clip, ops.add(norm, 1e-6)), 1.0)
        else:
            coef = ops.full((), 1.0)
        bc1 = ops.subtract(1.0, ops.power(ops.full((), cfg.beta1), step))
        bc2 = ops.subtract(1.0, ops.power(ops.full((), cfg.beta2), step))
        step_size = ops.divide(lr, bc1)
        new_p, new_m, new_v = {}, {}, {}
        for k, p in params.items():
            g = ops.multiply(grads[k], coef)
            mk = ops.add(ops.multiply(cfg.beta1, m[k]), ops.multiply(1.0 - cfg.beta1, g))
            vk = ops.add(ops.multiply(cfg.beta2, v[k]), ops.multiply(1.0 - cfg.beta2, ops.multiply(g, g)))
            denom = ops.add(ops.divide(ops.sqrt(vk), ops.sqrt(bc2)), cfg.eps)
            pk = p
            if cfg.weight_decay and decays(k, p.shape):
                pk = ops.multiply(pk, ops.subtract(1.0, ops.multiply(lr, cfg.weight_decay)))
            new_p[k] = ops.subtract(pk, ops.multiply(step_size, ops.divide(mk, denom)))
            new_m[k], new_v[k] = mk, vk
        return new_p, new_m, new_v, norm

    return update
