"""Neural-network composites built from primitives. Each runs under a name scope so
dumps show "layer_norm", "softmax", ... next to the primitives it expands to.
Low-precision inputs get float32 statistics (layer_norm, softmax, cross_entropy)."""
import math

import numpy as np

from . import dtypes, lax
from .array_ops import (add, asarray, astype, divide, dtype_of, equal, exp, expand_dims, log, matmul,
                        max, mean, multiply, not_equal, shape_of, stop_gradient, subtract, sum,
                        tanh, transpose, where, less, rsqrt, zeros_like)
from .errors import DTypeError, ShapeError
from .source import user_source
from .tracing import name_scope
from .transforms import custom_vjp


def _f32(x):
    return astype(x, "float32") if dtype_of(x) in ("float16", "bfloat16") else x


def _shifted(x, axis):
    """(x - max(x), x's dtype), in float32 for low-precision x: the stable softmax input."""
    x = asarray(x)
    xf = _f32(x)
    return subtract(xf, stop_gradient(max(xf, axis, keepdims=True))), dtype_of(x)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis. Its gradient, y (dy - sum(dy y)), reads the float32
    output alone: autodiff through exp and divide would keep exp(x) as well, one more
    array as large as x to write forward and read backward (attention's scores)."""
    x = asarray(x)
    dtype = dtype_of(x)

    def probabilities(x):
        with name_scope("softmax"):
            shifted, _ = _shifted(x, axis)
            e = exp(shifted)
            return divide(e, sum(e, axis, keepdims=True))

    def forward(x):
        y = probabilities(x)
        return astype(y, dtype), y

    def backward(y, dy):
        dy = _f32(dy)
        return (astype(multiply(y, subtract(dy, sum(multiply(dy, y), axis, keepdims=True))), dtype),)

    return custom_vjp(lambda x: forward(x)[0], name="softmax").defvjp(forward, backward)(x)


def log_softmax(x, axis=-1):
    with name_scope("log_softmax"):
        shifted, dtype = _shifted(x, axis)
        return astype(subtract(shifted, log(sum(exp(shifted), axis, keepdims=True))), dtype)


def gelu(x):
    """GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    with name_scope("gelu"):
        x = asarray(x)
        inner = multiply(math.sqrt(2.0 / math.pi), add(x, multiply(0.044715, multiply(x, multiply(x, x)))))
        return multiply(multiply(0.5, x), add(1.0, tanh(inner)))


def layer_norm(x, weight, bias, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance)."""
    with name_scope("layer_norm"):
        x = asarray(x)
        if shape_of(weight) != shape_of(x)[-1:] or shape_of(bias) != shape_of(x)[-1:]:
            raise ShapeError(f"layer_norm: weight {list(shape_of(weight))} and bias "
                             f"{list(shape_of(bias))} must both be [{shape_of(x)[-1]}] for input "
                             f"{list(shape_of(x))}", user_source())
        dtype = dtype_of(x)
        xf = _f32(x)
        centered = subtract(xf, mean(xf, -1, keepdims=True))
        variance = mean(multiply(centered, centered), -1, keepdims=True)
        normed = astype(multiply(centered, rsqrt(add(variance, eps))), dtype)
        return add(multiply(normed, weight), bias)


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Cross-entropy with classes on the last axis, as torch.nn.functional.cross_entropy:
    loss_i = (1 - s) * (-log p[t_i]) + s * mean_c(-log p[c]); targets equal to ignore_index
    contribute nothing; "mean" divides by the number of non-ignored targets."""
    with name_scope("cross_entropy"):
        logits, targets = asarray(logits), asarray(targets)
        if shape_of(logits)[:-1] != shape_of(targets):
            raise ShapeError(f"cross_entropy: logits {list(shape_of(logits))} need targets of shape "
                             f"{list(shape_of(logits)[:-1])}, got {list(shape_of(targets))}", user_source())
        if not dtypes.is_int(dtype_of(targets)):
            raise DTypeError(f"cross_entropy: targets must be integer class ids, got "
                             f"{dtype_of(targets)}", user_source())
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        logp = log_softmax(_f32(logits), -1)
        classes = shape_of(logits)[-1]
        hit = equal(lax.iota(shape_of(logits), len(shape_of(logits)) - 1, dtype_of(targets)),
                    expand_dims(targets, -1))
        nll = -sum(where(hit, logp, 0.0), -1)
        if label_smoothing:
            smooth = -sum(logp, -1) / float(classes)
            nll = add(multiply(1.0 - label_smoothing, nll), multiply(label_smoothing, smooth))
        valid = not_equal(targets, ignore_index)
        losses = where(valid, nll, 0.0)
        if reduction == "none":
            return losses
        total = sum(losses)
        if reduction == "sum":
            return total
        return divide(total, sum(astype(valid, "float32")))


def random_key(seed: int):
    """A Philox key (u32[2]) from an integer seed."""
    return np.array([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=np.uint32)


def fold_in(key, data: int):
    """A new key derived from key and an integer, for per-layer or per-step streams."""
    return add(key, np.array([0, (data * 0x9E3779B9 + 1) & 0xFFFFFFFF], dtype=np.uint32))


def dropout(x, rate, key):
    """Zero each element with probability rate and scale the rest by 1/(1-rate).
    The mask comes from counter-based random bits, so recomputation replays it."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    x = asarray(x)
    if rate == 0.0:
        return x
    with name_scope("dropout"):
        bits = lax.random_bits(asarray(key), shape_of(x))
        threshold = np.uint32(min(int(rate * 2.0 ** 32), 2 ** 32 - 1))
        keep = not_equal(less(bits, threshold), True)
        return where(keep, multiply(x, 1.0 / (1.0 - rate)), zeros_like(x))


def causal_attention(q, k, v):
    """softmax(q k^T / sqrt(d) + causal mask) v over (batch, heads, seq, head_dim)."""
    with name_scope("causal_attention"):
        q, k, v = asarray(q), asarray(k), asarray(v)
        if not (len(shape_of(q)) == 4 and shape_of(q) == shape_of(k) == shape_of(v)):
            raise ShapeError(f"causal_attention: q, k, v must share a (batch, heads, seq, head_dim) "
                             f"shape, got {list(shape_of(q))}, {list(shape_of(k))}, {list(shape_of(v))}",
                             user_source())
        t, d = shape_of(q)[2], shape_of(q)[3]
        scores = multiply(_f32(matmul(q, transpose(k, (0, 1, 3, 2)))), 1.0 / math.sqrt(d))
        rows = lax.iota((t, t), 0, "int32")
        cols = lax.iota((t, t), 1, "int32")
        scores = where(less(rows, cols), float("-inf"), scores)
        probs = astype(softmax(scores, -1), dtype_of(v))
        return matmul(probs, v)
