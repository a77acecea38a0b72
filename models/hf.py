"""Hugging Face GPT-2 state dicts <-> mlbh parameter dicts."""
import numpy as np

from mlbh.tracer.errors import ConfigError

from .config import GPT2Config, pad_vocab

_PREFIX = "transformer."
_SKIP_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not parameters


def _to_numpy(t):
    if hasattr(t, "detach"):
        t = t.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(t)


def params_from_hf(state_dict, **config_overrides):
    """(config, params) from a transformers GPT2LMHeadModel / GPT2Model state dict."""
    params = {}
    for name, value in state_dict.items():
        key = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
        if key == "lm_head.weight" or key.endswith(_SKIP_SUFFIXES):
            continue
        params[key] = np.array(_to_numpy(value), dtype=np.float32)  # a copy: never alias the caller's tensors
    if "wte.weight" not in params:
        raise ConfigError("not a GPT-2 state dict: no wte.weight")
    vocab, n_embd = params["wte.weight"].shape
    n_layer = 1 + max(int(k.split(".")[1]) for k in params if k.startswith("h."))
    n_head = config_overrides.pop("n_head", None) or max(1, n_embd // 64)
    config_overrides = {k: v for k, v in config_overrides.items() if v is not None}
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                        block_size=params["wpe.weight"].shape[0], vocab_size=vocab, **config_overrides)
    padded = np.zeros((pad_vocab(vocab), n_embd), np.float32)
    padded[:vocab] = params["wte.weight"]
    params["wte.weight"] = padded
    return config, params


def params_to_hf(params, config: GPT2Config, prefix=True) -> dict:
    """A transformers-loadable state dict (numpy arrays), vocabulary unpadded, head tied."""
    out = {}
    for name, value in params.items():
        if name == "wte.weight":
            value = value[:config.vocab_size]
        out[(_PREFIX if prefix else "") + name] = np.ascontiguousarray(value)
    out["lm_head.weight"] = out[(_PREFIX if prefix else "") + "wte.weight"]
    return out
