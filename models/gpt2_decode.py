"""GPT-2 generation with a KV cache: prefill(prompt) and decode(one token), both of fixed
shape so each compiles once.

The cache holds keys and values of every layer: (n_layer, batch, heads, context, head_dim),
position t valid once written. decode_step attends from the new token at position `pos`
to cache positions 0..pos and writes its own key/value at `pos` (a select over the
context axis, fused into one kernel), so it never recomputes the prefix.
"""
import math

from mlbh.tracer import ops
from mlbh.tracer.tracing import name_scope

from .gpt2 import _linear, forward


def empty_cache(config, batch):
    import numpy as np
    shape = (config.n_layer, batch, config.n_head, config.block_size, config.head_dim)
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)


def prefill(params, tokens, config):
    """(logits of every position, k cache, v cache) for a (batch, context) prompt buffer;
    positions past the prompt hold garbage that decode overwrites before reading."""
    caches = []
    logits = forward(params, tokens, config, kv_out=caches)
    # float32 out whatever the compute dtype: decode_step's caches are float32, and a
    # bfloat16 array reaches the host as its raw uint16 bits on CUDA
    ks = ops.astype(ops.concatenate([ops.expand_dims(k, 0) for k, _ in caches], 0), "float32")
    vs = ops.astype(ops.concatenate([ops.expand_dims(v, 0) for _, v in caches], 0), "float32")
    return ops.astype(logits, "float32"), ks, vs


def decode_step(params, token, pos, k_cache, v_cache, config):
    """Logits (batch, vocab) of the token after `token` (batch,) placed at position `pos`
    (an int32 scalar), and the updated caches."""
    C, H, D, T = config.n_embd, config.n_head, config.head_dim, config.block_size
    B = token.shape[0]
    at = ops.equal(ops.arange(T), pos)                         # (T,) one-hot of the position
    visible = ops.less_equal(ops.arange(T), pos)               # (T,) positions attended to
    x = ops.add(ops.take(params["wte.weight"], token, axis=0),
                ops.take(params["wpe.weight"], ops.reshape(pos, (1,)), axis=0))   # (B, C)
    new_k, new_v = [], []
    for i in range(config.n_layer):
        p = f"h.{i}."
        with name_scope(f"block{i}.decode"):
            h = ops.layer_norm(x, params[p + "ln_1.weight"], params[p + "ln_1.bias"], config.layer_norm_eps)
            q, k, v = (ops.reshape(t, (B, H, 1, D)) for t in
                       ops.split(_linear(h, params[p + "attn.c_attn.weight"], params[p + "attn.c_attn.bias"]), 3, -1))
            ks = ops.where(ops.reshape(at, (1, 1, T, 1)), k, k_cache[i])     # (B, H, T, D)
            vs = ops.where(ops.reshape(at, (1, 1, T, 1)), v, v_cache[i])
            scores = ops.multiply(ops.matmul(q, ops.transpose(ks, (0, 1, 3, 2))), 1.0 / math.sqrt(D))
            scores = ops.where(ops.reshape(visible, (1, 1, 1, T)), scores, float("-inf"))
            y = ops.reshape(ops.matmul(ops.softmax(scores, -1), vs), (B, C))
            x = ops.add(x, _linear(y, params[p + "attn.c_proj.weight"], params[p + "attn.c_proj.bias"]))
            h = ops.layer_norm(x, params[p + "ln_2.weight"], params[p + "ln_2.bias"], config.layer_norm_eps)
            h = ops.gelu(_linear(h, params[p + "mlp.c_fc.weight"], params[p + "mlp.c_fc.bias"]))
            x = ops.add(x, _linear(h, params[p + "mlp.c_proj.weight"], params[p + "mlp.c_proj.bias"]))
            new_k.append(ops.expand_dims(ks, 0))
            new_v.append(ops.expand_dims(vs, 0))
    x = ops.layer_norm(x, params["ln_f.weight"], params["ln_f.bias"], config.layer_norm_eps)
    logits = ops.matmul(x, ops.transpose(params["wte.weight"]))[..., :config.vocab_size]
    return logits, ops.concatenate(new_k, 0), ops.concatenate(new_v, 0)
