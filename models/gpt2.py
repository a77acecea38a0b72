"""GPT-2 as pure functions over a flat parameter dict (Hugging Face names, no
"transformer." prefix; Conv1D weights in (in, out) layout).

Pre-LN blocks, learned positions, GELU (tanh approximation), packed QKV, LM head tied
to the token embedding. The vocabulary is padded to a multiple of 64 in the embedding;
padded rows are sliced off the logits, so they never take probability mass or win a sample.
"""
import numpy as np

from mlbh.tracer import ops
from mlbh.tracer.errors import ConfigError, DataError
from mlbh.tracer.tracing import name_scope
from mlbh.tracer.transforms import checkpoint

from .config import GPT2Config


def param_shapes(config: GPT2Config) -> dict:
    c, v = config.n_embd, config.padded_vocab
    shapes = {"wte.weight": (v, c), "wpe.weight": (config.block_size, c)}
    for i in range(config.n_layer):
        p = f"h.{i}."
        shapes.update({
            p + "ln_1.weight": (c,), p + "ln_1.bias": (c,),
            p + "attn.c_attn.weight": (c, 3 * c), p + "attn.c_attn.bias": (3 * c,),
            p + "attn.c_proj.weight": (c, c), p + "attn.c_proj.bias": (c,),
            p + "ln_2.weight": (c,), p + "ln_2.bias": (c,),
            p + "mlp.c_fc.weight": (c, 4 * c), p + "mlp.c_fc.bias": (4 * c,),
            p + "mlp.c_proj.weight": (4 * c, c), p + "mlp.c_proj.bias": (c,),
        })
    shapes.update({"ln_f.weight": (c,), "ln_f.bias": (c,)})
    return shapes


def num_params(config: GPT2Config, include_embeddings=True) -> int:
    n = sum(int(np.prod(s)) for s in param_shapes(config).values())
    if not include_embeddings:
        n -= config.block_size * config.n_embd
    return n


def init_params(config: GPT2Config, seed: int = 0) -> dict:
    """GPT-2's init: normal(0, 0.02) weights, residual projections 0.02/sqrt(2 n_layer),
    zero biases, unit layer-norm gains; padded embedding rows zero. float32."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith(".bias"):
            value = np.zeros(shape, np.float32)
        elif ".ln_" in name or name.startswith("ln_f"):
            value = np.ones(shape, np.float32)
        else:
            std = 0.02 / np.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
            value = rng.normal(0.0, std, shape).astype(np.float32)
        params[name] = value
    params["wte.weight"][config.vocab_size:] = 0.0
    return params


def check_params(params: dict, config: GPT2Config):
    expected = param_shapes(config)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ConfigError(f"GPT-2 parameters do not match the config: missing {missing[:5]}, "
                          f"unexpected {extra[:5]}")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise ConfigError(f"parameter {name}: shape {list(params[name].shape)}, config needs {list(shape)}")


def check_tokens(tokens, config: GPT2Config, what="tokens"):
    """Validate concrete token ids before they reach a kernel (a bad id would read out of range)."""
    arr = np.asarray(tokens)
    if arr.ndim != 2:
        raise DataError(f"{what}: expected a (batch, seq) array of token ids, got shape {list(arr.shape)}")
    if arr.shape[1] > config.block_size:
        raise DataError(f"{what}: sequence length {arr.shape[1]} exceeds the model context {config.block_size}")
    if arr.size and (arr.min() < 0 or arr.max() >= config.vocab_size):
        bad = np.argwhere((arr < 0) | (arr >= config.vocab_size))[0]
        raise DataError(f"{what}: token id {int(arr[tuple(bad)])} at (batch {bad[0]}, position {bad[1]}) is "
                        f"outside the vocabulary [0, {config.vocab_size})")


def _linear(x, w, b):
    return ops.add(ops.matmul(x, w), b)


def _block(p, x, config, i, dropout_key, kv_out=None):
    cd = config.compute_dtype
    B, T, C = x.shape
    H, D = config.n_head, config.head_dim
    pre = f"h.{i}."

    def w(name):
        return ops.astype(p[pre + name], cd)

    with name_scope(f"block{i}.attn"):
        h = ops.layer_norm(x, w("ln_1.weight"), w("ln_1.bias"), config.layer_norm_eps)
        qkv = _linear(h, w("attn.c_attn.weight"), w("attn.c_attn.bias"))
        q, k, v = (ops.transpose(ops.reshape(t, (B, T, H, D)), (0, 2, 1, 3)) for t in ops.split(qkv, 3, axis=-1))
        if kv_out is not None:
            kv_out.append((k, v))
        attention = ops.causal_attention
        if config.remat_attention:
            attention = checkpoint(attention, name="attention")
        y = attention(q, k, v)
        y = ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (B, T, C))
        y = _linear(y, w("attn.c_proj.weight"), w("attn.c_proj.bias"))
        x = ops.add(x, _dropout(y, config, dropout_key, 2 * i))
    with name_scope(f"block{i}.mlp"):
        h = ops.layer_norm(x, w("ln_2.weight"), w("ln_2.bias"), config.layer_norm_eps)
        h = ops.gelu(_linear(h, w("mlp.c_fc.weight"), w("mlp.c_fc.bias")))
        h = _linear(h, w("mlp.c_proj.weight"), w("mlp.c_proj.bias"))
        x = ops.add(x, _dropout(h, config, dropout_key, 2 * i + 1))
    return x


def _dropout(x, config, key, stream):
    if config.dropout == 0.0 or key is None:
        return x
    return ops.dropout(x, config.dropout, ops.fold_in(key, stream))


def forward(params, tokens, config: GPT2Config, dropout_key=None, kv_out=None):
    """Logits (batch, seq, vocab_size) of the next token at every position. kv_out, a list,
    receives each layer's (keys, values) of shape (batch, heads, seq, head_dim)."""
    cd = config.compute_dtype
    T = tokens.shape[1]
    if T > config.block_size:
        raise ConfigError(f"sequence length {T} exceeds the model context {config.block_size}")
    with name_scope("embed"):
        wte = ops.astype(params["wte.weight"], cd)
        x = ops.add(ops.take(wte, tokens, axis=0), ops.astype(params["wpe.weight"][:T], cd))
        x = _dropout(x, config, dropout_key, 10_000)
    for i in range(config.n_layer):
        x = _block(params, x, config, i, dropout_key, kv_out)
    with name_scope("head"):
        x = ops.layer_norm(x, ops.astype(params["ln_f.weight"], cd), ops.astype(params["ln_f.bias"], cd),
                           config.layer_norm_eps)
        logits = ops.matmul(x, ops.transpose(wte))
        return logits[..., :config.vocab_size]


def loss(params, tokens, targets, config: GPT2Config, reduction="mean", dropout_key=None):
    """Cross-entropy of the next token, over targets != -100 (mean or sum)."""
    logits = forward(params, tokens, config, dropout_key)
    return ops.cross_entropy(logits, targets, ignore_index=-100, reduction=reduction)


class GPT2:
    """GPT-2 of one config, as the object the runtime trains, evaluates and samples from
    (the runtime knows only these methods, never this module)."""

    def __init__(self, config: GPT2Config):
        self.config = config

    @property
    def context(self) -> int:
        return self.config.block_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def describe(self) -> str:
        c = self.config
        return (f"GPT-2 {c.n_layer} layers x {c.n_embd} wide, {c.n_head} heads ({num_params(c) / 1e6:.2f}M params, "
                f"vocab {c.vocab_size}, {c.compute_dtype})")

    def loss(self, params, tokens, targets, reduction="mean"):
        return loss(params, tokens, targets, self.config, reduction)

    def forward(self, params, tokens):
        return forward(params, tokens, self.config)

    def prefill(self, params, tokens):
        from .gpt2_decode import prefill
        return prefill(params, tokens, self.config)

    def decode_step(self, params, token, pos, k_cache, v_cache):
        from .gpt2_decode import decode_step
        return decode_step(params, token, pos, k_cache, v_cache, self.config)

    def init_params(self, seed=0):
        return init_params(self.config, seed)

    def param_shapes(self):
        return param_shapes(self.config)

    def check_tokens(self, tokens, what="tokens"):
        check_tokens(tokens, self.config, what)

    def to_dict(self):
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, d):
        return cls(GPT2Config.from_dict(d))


def from_preset(name: str, vocab_size: int | None = None, compute_dtype: str = "float32",
                remat_attention: bool = False) -> GPT2:
    """GPT2 for a preset name, with the vocabulary of the data it will see."""
    from .config import preset
    overrides = {"compute_dtype": compute_dtype, "remat_attention": remat_attention}
    if vocab_size:
        overrides["vocab_size"] = vocab_size
    return GPT2(preset(name, **overrides))
