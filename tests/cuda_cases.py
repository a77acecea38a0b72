"""Graphs for the CUDA renderer's tests: dtype cases beyond test_jit_cpu's float32
primitive cases, edge cases of NaN/inf/ties, long rows, and a GPT-style block.

Each case is (id, fn, args); fn returns arrays (and, where differentiable, gradients),
and the tests run it through trace -> prepare -> fuse -> CUDA C.
"""
import numpy as np

from mlbh import tracer as T
from mlbh.tracer import lax, ops

R = np.random.default_rng(11)


def randn(*shape, dtype=np.float32):
    return R.standard_normal(shape).astype(dtype)


def ints(*shape, low=0, high=5, dtype=np.int32):
    return R.integers(low, high, shape).astype(dtype)


def with_grads(fn, argnums):
    """fn's outputs plus value_and_grad of sum(float32(out) * weights) over argnums."""
    def loss(*xs):
        out = fn(*xs)
        outs = out if isinstance(out, tuple) else (out,)
        total = 0.0
        for i, o in enumerate(outs):
            w = np.random.default_rng(i).standard_normal(o.shape).astype(np.float32)
            total = total + ops.sum(ops.astype(o, "float32") * w)
        return total

    def both(*xs):
        return fn(*xs), T.value_and_grad(loss, argnums=argnums)(*xs)
    return both


def _low_precision_math(x, y):
    return ops.tanh(x) * y + ops.exp(x * 0.5) / (1.0 + y * y) - ops.sqrt(ops.abs(y) + 1.0)


def _low_precision_norm(x, g, b):
    h = ops.layer_norm(x, g, b)
    return ops.softmax(h * 2.0, -1), ops.gelu(h)


def _reductions(x):
    return ops.sum(x, 1), ops.max(x, -1), ops.argmax(x, 1), ops.mean(x, (0, 2))


def _gather_scatter(table, idx):
    return ops.take(table, idx, axis=0) * 2.0


def _converts(x):
    b = ops.astype(x, "bfloat16")
    h = ops.astype(b, "float16")
    return (b, h, ops.astype(h, "bfloat16"), ops.astype(x * 100.0, "int32"), ops.astype(b * 100.0, "int32"),
            ops.astype(x * 100.0, "uint16"), ops.astype(x, "bool"), ops.astype(ops.astype(x, "float64"), "float16"))


def _float64_math(x, y):
    p = ops.power(ops.abs(x) + 0.5, y)
    q = ops.erf(x) + ops.rsqrt(y * y + 1.0) + ops.log(1.0 + x * x) / (2.0 + y)
    return p * q + ops.maximum(x, y) - ops.minimum(x, y)


def _int_arith(a, b):
    return (a + b, a - b, a * b, lax.div(a, b), ops.power(a, ops.abs(b)), ops.maximum(a, b), ops.minimum(a, b),
            a < b, a == b, ops.where(a < b, a, -b), ops.astype(a, "float32") / 3.0,
            ops.sum(a, 1), ops.max(a, 0), ops.argmax(b, 1))


def _int64_arith(a, b):
    a, b = ops.astype(a, "int64"), ops.astype(b, "int64")
    return a * 3000000000 + b, lax.div(a, b), ops.sum(a * 1000000007, 1), lax.argmax(b, 1, "int64")


def _uint_bits(key):
    bits = lax.random_bits(key, (4, 9))
    low = ops.astype(ops.astype(bits, "float32") * (1.0 / 65536.0), "uint16")
    return (bits, bits < np.uint32(2 ** 31), ops.maximum(bits, np.uint32(7)), ops.argmax(bits, 1),
            ops.max(bits, 0), low * low, ops.sum(low, 1), low + np.uint16(65000))


def _bools(a, b):
    p, q = a < 0.0, b < 0.0
    return (p + q, p * q, ops.maximum(p, q), ops.minimum(p, q), ops.sum(p, 1), ops.max(q, 0),
            ops.argmax(p, 1), ops.where(p, a, b), ops.astype(p, "float32") - 0.5)


def _int_scatter(x, idx, upd):
    return lax.scatter_add(x, idx, upd, 0)


def _pad_concat_int(a, b):
    padded = lax.pad(a, -3.0, ((1, 2, 1), (2, 0, 0)))
    return padded, lax.concatenate([a, b, a], 1), lax.slice(b, (0, 1), (3, 4), (2, 2))


def _nan_inf(x, y):
    return (ops.maximum(x, y), ops.minimum(x, y), ops.max(x, 1), ops.argmax(x, 1), ops.argmax(y, 1),
            ops.sum(ops.where(x < y, x, y), 1))


def _columns(x, y):
    """Reductions over leading axes: memory contiguous along the kept axis (col mapping)."""
    return ops.softmax(x, 0), ops.argmax(x, 0), ops.max(x, 0), ops.sum(x * y, (0, 1)), ops.mean(y, 0)


def _long_rows(x, t):
    return ops.softmax(x, -1), ops.argmax(x, -1), ops.cross_entropy(x, t)


_NAN_X = np.array([[1.0, np.nan, 3.0, np.nan, 0.0], [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf],
                   [2.0, 5.0, 5.0, 1.0, 5.0], [np.inf, 1.0, np.inf, 0.0, -1.0]], np.float32)
_NAN_Y = np.array([[0.0, 2.0, np.nan, -1.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0],
                   [5.0, 5.0, 2.0, 5.0, 7.0], [-np.inf, 3.0, 3.0, 2.0, np.nan]], np.float32)

BF16, F16 = "bfloat16", "float16"


def _as(dtype, *arrays):
    from mlbh.tracer import dtypes
    return tuple(np.asarray(a).astype(dtypes.to_numpy(dtype)) for a in arrays)


def dtype_cases():
    """[(id, fn, args)]: primitives in bfloat16, float16, float64, the integer dtypes and bool."""
    cases = []
    for dt in (BF16, F16):
        short = "bf16" if dt == BF16 else "f16"
        cases += [
            (f"{short}_math", with_grads(_low_precision_math, (0, 1)), _as(dt, randn(3, 7), randn(3, 7))),
            (f"{short}_norm_softmax", with_grads(_low_precision_norm, (0, 1, 2)),
             _as(dt, randn(4, 40), randn(40) + 1.0, randn(40))),
            (f"{short}_reductions", _reductions, _as(dt, randn(3, 37, 5))),
            (f"{short}_gather_scatter", with_grads(_gather_scatter, (0,)),
             _as(dt, randn(6, 5)) + (ints(3, 4, high=6),)),
        ]
    cases += [
        ("converts", _converts, (randn(5, 6) * 2.0,)),
        ("f64_math", with_grads(_float64_math, (0, 1)), (randn(4, 6, dtype=np.float64), randn(4, 6, dtype=np.float64))),
        ("f64_reductions", with_grads(_reductions_float, (0,)), (randn(3, 40, 5, dtype=np.float64),)),
        ("f64_gather_scatter", with_grads(_gather_scatter, (0,)), (randn(6, 5, dtype=np.float64), ints(3, 4, high=6))),
        ("int32_arith", _int_arith, (ints(4, 5, low=-20, high=20), ints(4, 5, low=-4, high=5) | 1)),
        ("int64_arith", _int64_arith,
         (ints(3, 4, low=-9, high=9), ints(3, 4, low=1, high=5) * np.array([1, -1, 1, -1]))),
        ("uint_bits", _uint_bits, (np.array([0xDEADBEEF, 0x01234567], np.uint32),)),
        ("bools", _bools, (randn(4, 6), randn(4, 6))),
        ("int32_scatter", _int_scatter, (ints(5, 3), ints(4, 2, high=5), ints(4, 2, 3, low=-5, high=5))),
        ("int32_pad_concat_slice", _pad_concat_int, (ints(3, 4, low=-9, high=9), ints(3, 5))),
        ("nan_inf_ties", _nan_inf, (_NAN_X, _NAN_Y)),
        ("long_rows", with_grads(_long_rows, (0,)), (randn(3, 1500) * 3.0, ints(3, high=1500))),
        ("columns", with_grads(_columns, (0, 1)), (randn(300, 13), randn(300, 13))),
        ("bf16_columns", with_grads(_columns, (0, 1)), _as(BF16, randn(70, 21), randn(70, 21))),
    ]
    return cases


def _reductions_float(x):
    return ops.sum(x, 1), ops.max(x, -1), ops.mean(x, (0, 2)), ops.softmax(x, 1)


# ------------------------------------------------------------------------------- GPT block

def gpt_block_case(batch=2, seq=12, width=64, heads=4, vocab=72):
    """A pre-LN transformer block with tied-free head: embeddings (gather), layer_norm, packed
    QKV projection split into heads, causal attention, output projection, residual,
    layer_norm, GELU MLP, residual, final layer_norm, logits, cross-entropy. Returns
    (fn, args) where fn(params, tokens, targets) -> (loss, grads)."""
    rng = np.random.default_rng(5)

    def f(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    c = width
    params = {"wte": f(vocab, c), "wpe": f(seq, c), "ln1_g": f(c) + 1.0, "ln1_b": f(c),
              "w_qkv": f(c, 3 * c), "b_qkv": f(3 * c), "w_o": f(c, c), "b_o": f(c),
              "ln2_g": f(c) + 1.0, "ln2_b": f(c), "w_fc": f(c, 4 * c), "b_fc": f(4 * c),
              "w_proj": f(4 * c, c), "b_proj": f(c), "lnf_g": f(c) + 1.0, "lnf_b": f(c), "w_head": f(c, vocab)}
    tokens = rng.integers(0, vocab, (batch, seq)).astype(np.int32)
    targets = rng.integers(0, vocab, (batch, seq)).astype(np.int32)

    def loss(p, tokens, targets):
        x = ops.take(p["wte"], tokens, axis=0) + p["wpe"]
        h = ops.layer_norm(x, p["ln1_g"], p["ln1_b"])
        qkv = h @ p["w_qkv"] + p["b_qkv"]
        qkv = ops.transpose(ops.reshape(qkv, (batch, seq, 3, heads, c // heads)), (2, 0, 3, 1, 4))
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ops.causal_attention(q, k, v)
        a = ops.reshape(ops.transpose(a, (0, 2, 1, 3)), (batch, seq, c))
        x = x + a @ p["w_o"] + p["b_o"]
        h = ops.layer_norm(x, p["ln2_g"], p["ln2_b"])
        x = x + ops.gelu(h @ p["w_fc"] + p["b_fc"]) @ p["w_proj"] + p["b_proj"]
        logits = ops.layer_norm(x, p["lnf_g"], p["lnf_b"]) @ p["w_head"]
        return ops.cross_entropy(logits, targets)

    return T.value_and_grad(loss), (params, tokens, targets)


# ------------------------------------------------------------------------- GPT-2 train step

def gpt2_train_step_cases():
    """The two compiled functions of `mlbh train`'s step on a small GPT-2 in mixed precision
    (bf16 compute with attention recomputed, as on a GPU): the micro-step (loss and fp32
    gradient sums) and the clipped AdamW update over all parameters."""
    from mlbh.models.config import GPT2Config
    from mlbh.models.gpt2 import GPT2
    from mlbh.runtime.optim import AdamWConfig, make_update
    from mlbh.runtime.train_step import make_micro_step
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=60,
                        compute_dtype="bfloat16", remat_attention=True)
    model = GPT2(config)
    params = model.init_params(0)
    grad_sums = {k: (R.standard_normal(v.shape) * 0.1).astype(np.float32) for k, v in params.items()}
    tokens, targets = (R.integers(0, config.vocab_size, (2, 16)).astype(np.int32) for _ in range(2))
    m = {k: (R.standard_normal(v.shape) * 0.01).astype(np.float32) for k, v in params.items()}
    v = {k: R.random(p.shape).astype(np.float32) * 1e-4 for k, p in params.items()}
    update = make_update(AdamWConfig(lr=6e-4, weight_decay=0.1, grad_clip=1.0))
    return [("gpt2_micro_step_bf16", make_micro_step(model), (params, grad_sums, tokens, targets)),
            ("gpt2_adamw_update", update, (params, m, v, grad_sums, np.array([32.0, 6e-4, 3.0], np.float32)))]
