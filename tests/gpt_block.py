"""One GPT-2 style transformer block followed by a vocabulary projection and the
cross-entropy loss, written with mlbh ops; shared by the jit tests and
scripts/bench_block_cpu.py (which also writes the same block in PyTorch).

    h = layer_norm(x);  q, k, v = split(h @ w_qkv + b_qkv)   (packed, heads split by reshape/transpose)
    x = x + causal_attention(q, k, v) @ w_o + b_o
    x = x + gelu(layer_norm(x) @ w_fc + b_fc) @ w_proj + b_proj
    loss = cross_entropy(x @ w_vocab, targets)
"""
from dataclasses import dataclass

import numpy as np

from mlbh.tracer import ops


@dataclass(frozen=True)
class BlockConfig:
    batch: int = 2
    seq: int = 16
    width: int = 32
    heads: int = 4
    vocab: int = 64


def init_params(cfg: BlockConfig, seed=0, std=None):
    """Random parameters. By default the spread is wide (weights of std 0.1-0.2, gains and
    biases off 1 and 0) so every part of the block matters numerically in tests; std=0.02
    gives GPT-2's initialisation (weights N(0, std), gains 1, biases 0)."""
    rng = np.random.default_rng(seed)
    c = cfg.width

    def weight(rows, cols, wide):
        return (rng.standard_normal((rows, cols)) * (wide if std is None else std)).astype(np.float32)

    def vector(n, center, wide):
        spread = rng.standard_normal(n) * wide if std is None else np.zeros(n)
        return (center + spread).astype(np.float32)

    return {
        "ln1_g": vector(c, 1.0, 0.1), "ln1_b": vector(c, 0.0, 0.1),
        "w_qkv": weight(c, 3 * c, 0.2), "b_qkv": vector(3 * c, 0.0, 0.02),
        "w_o": weight(c, c, 0.2), "b_o": vector(c, 0.0, 0.02),
        "ln2_g": vector(c, 1.0, 0.1), "ln2_b": vector(c, 0.0, 0.1),
        "w_fc": weight(c, 4 * c, 0.2), "b_fc": vector(4 * c, 0.0, 0.02),
        "w_proj": weight(4 * c, c, 0.1), "b_proj": vector(c, 0.0, 0.02),
        "w_vocab": weight(c, cfg.vocab, 0.2),
    }


def init_batch(cfg: BlockConfig, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg.batch, cfg.seq, cfg.width)).astype(np.float32)
    targets = rng.integers(0, cfg.vocab, (cfg.batch, cfg.seq)).astype(np.int32)
    return x, targets


def block_loss(params, x, targets, heads):
    b, t, c = x.shape
    d = c // heads
    h = ops.layer_norm(x, params["ln1_g"], params["ln1_b"])
    qkv = h @ params["w_qkv"] + params["b_qkv"]
    qkv = ops.transpose(ops.reshape(qkv, (b, t, 3, heads, d)), (2, 0, 3, 1, 4))
    attn = ops.causal_attention(qkv[0], qkv[1], qkv[2])
    attn = ops.reshape(ops.transpose(attn, (0, 2, 1, 3)), (b, t, c))
    x = x + attn @ params["w_o"] + params["b_o"]
    h = ops.layer_norm(x, params["ln2_g"], params["ln2_b"])
    x = x + ops.gelu(h @ params["w_fc"] + params["b_fc"]) @ params["w_proj"] + params["b_proj"]
    return ops.cross_entropy(x @ params["w_vocab"], targets)
