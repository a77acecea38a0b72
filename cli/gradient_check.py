"""Checking reverse-mode gradients against central finite differences."""
import numpy as np


def central_difference(scalar_fn, x, eps: float = 1e-6, indices=None):
    """d scalar_fn / dx by central differences, in float64; only at the flat `indices` if
    given (the other entries are NaN)."""
    x = np.array(x, dtype=np.float64)
    grad = np.full(x.shape, np.nan)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(x.size) if indices is None else indices:
        old = flat[i]
        flat[i] = old + eps
        plus = scalar_fn(x)
        flat[i] = old - eps
        minus = scalar_fn(x)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def finite_difference_grads(loss_of, params: dict, eps: float = 1e-6) -> dict:
    """d loss / d params by central differences; loss_of(params) -> float."""
    return {name: central_difference(lambda v, name=name: loss_of({**params, name: v}), value, eps)
            for name, value in params.items()}


def relative_error(analytic, numeric) -> float:
    """max |a - n| relative to the largest magnitude of either (0 when both are 0)."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.abs(analytic - numeric).max() / scale)
