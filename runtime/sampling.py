"""Text generation by recomputing a fixed-length window each token (one compile).
(A KV-cache decoder is separate work.)"""
import numpy as np

from .jit import jit


class WindowSampler:
    def __init__(self, model, backend, window=None):
        self.model = model
        self.window = min(window or model.context, model.context)
        self.forward = jit(model.forward, backend=backend)

    def generate(self, params, prompt_ids, n_tokens, temperature=0.8, top_k=50, seed=0, on_token=None):
        rng = np.random.default_rng(seed)
        ids = list(prompt_ids) or [0]
        for _ in range(n_tokens):
            context = ids[-self.window:]
            buf = np.zeros((1, self.window), np.int32)
            buf[0, :len(context)] = context
            logits = np.asarray(self.forward(params, buf))[0, len(context) - 1].astype(np.float64)
            ids.append(_pick(logits, temperature, top_k, rng))
            if on_token:
                on_token(ids[-1])
        return ids


def _pick(logits, temperature, top_k, rng):
    if temperature <= 0:
        return int(np.argmax(logits))
    logits = logits / temperature
    if top_k and top_k < logits.size:
        cut = np.partition(logits, -top_k)[-top_k]
        logits = np.where(logits < cut, -np.inf, logits)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return int(rng.choice(logits.size, p=p))
