"""Checking reverse-mode gradients against central finite differences."""
import numpy as np


def finite_difference_grads(loss_of, params: dict, eps: float = 1e-6) -> dict:
    """d loss / d params by central differences; loss_of(params) -> float, params float64."""
    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            original = value[index]
            value[index] = original + eps
            up = loss_of(params)
            value[index] = original - eps
            down = loss_of(params)
            value[index] = original
            grad[index] = (up - down) / (2 * eps)
        grads[name] = grad
    return grads


def relative_error(analytic, numeric) -> float:
    """max |a - n| relative to the largest magnitude of either (0 when both are 0)."""
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.abs(analytic - numeric).max() / scale)
