"""Text generation: KVSampler (prefill once, then one cached decode step per token) and
WindowSampler (recompute a fixed window per token; the baseline the decode benchmark
compares against)."""
import math
from numbers import Integral, Real

import numpy as np

from mlbh.tracer.errors import ConfigError

from .executable import to_host
from .jitted import jit


class WindowSampler:
    def __init__(self, model, backend, window=None):
        self.model = model
        self.window = min(window or model.context, model.context)
        self.forward = jit(model.forward, backend=backend)

    def generate(self, params, prompt_ids, n_tokens, temperature=0.8, top_k=50, seed=0, on_token=None):
        check_sampling(n_tokens, temperature, top_k)
        params = self.forward.device_put(params)
        rng = np.random.default_rng(seed)
        ids = list(prompt_ids) or [0]
        for _ in range(n_tokens):
            context = ids[-self.window:]
            buf = np.zeros((1, self.window), np.int32)
            buf[0, :len(context)] = context
            logits = to_host(self.forward(params, buf)[0, len(context) - 1]).astype(np.float64)
            ids.append(_pick(logits, temperature, top_k, rng))
            if on_token:
                on_token(ids[-1])
        return ids


def check_sampling(n_tokens, temperature, top_k, top_p=1.0):
    """ConfigError naming the first unusable generation setting."""
    if not isinstance(n_tokens, Integral) or n_tokens < 0:
        raise ConfigError(f"the number of new tokens must be a whole number >= 0, got {n_tokens!r}")
    if not (isinstance(temperature, Real) and math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_k, Integral) or top_k < 0:
        raise ConfigError(f"top_k must be a whole number >= 0 (0 = no cut), got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")


def _pick(logits, temperature, top_k, rng, top_p=1.0):
    """Greedy at temperature 0; otherwise a sample from softmax(logits / temperature) cut
    to the top_k most likely tokens and then to the smallest set whose mass reaches top_p."""
    if temperature <= 0:
        return int(np.argmax(logits))
    logits = logits / temperature
    if top_k and top_k < logits.size:
        cut = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < cut, -np.inf, logits)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = np.cumsum(p[order]) - p[order] < top_p  # every token needed to reach top_p
        p[order[~keep]] = 0.0
        p /= p.sum()
    return int(rng.choice(logits.size, p=p))


class KVSampler:
    """Generation with a KV cache: one compiled prefill over the prompt buffer, then one
    compiled single-token decode step per new token (caches donated, shapes fixed).
    model: an object with prefill(params, tokens) and decode_step(params, token, pos, k, v)."""

    def __init__(self, model, backend):
        self.model = model
        self.prefill = jit(model.prefill, backend=backend)
        self.decode = jit(model.decode_step, backend=backend, donate_argnums=(3, 4))

    def generate(self, params, prompt_ids, n_tokens, temperature=0.8, top_k=50, seed=0, on_token=None,
                 top_p=1.0):
        """prompt_ids + up to n_tokens new ids; on_token(id) sees each new id as it comes and
        stops the generation by returning True."""
        check_sampling(n_tokens, temperature, top_k, top_p)
        params = self.decode.device_put(params)
        rng = np.random.default_rng(seed)
        ids = list(prompt_ids) or [0]
        context = self.model.context
        if len(ids) >= context:
            ids = ids[-(context - 1):]
        buf = np.zeros((1, context), np.int32)
        buf[0, :len(ids)] = ids
        logits, k, v = self.prefill(params, buf)
        nxt = _pick(to_host(logits[0, len(ids) - 1]).astype(np.float64), temperature, top_k, rng, top_p)
        for _ in range(n_tokens):
            ids.append(nxt)
            if on_token and on_token(nxt):
                break
            pos = len(ids) - 1
            if pos >= context or len(ids) - len(prompt_ids) >= n_tokens:
                break
            logits, k, v = self.decode(params, np.array([nxt], np.int32), np.array(pos, np.int32), k, v)
            nxt = _pick(to_host(logits[0]).astype(np.float64), temperature, top_k, rng, top_p)
        return ids
