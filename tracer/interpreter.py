"""The reference interpreter: runs any Graph with numpy.

Float16 and bfloat16 values are computed in float32 and rounded back to their dtype
after every eqn (the "fp32 accumulation" semantics the compiled backends follow).
With float64=True every float value is computed and kept in float64, which is what
the finite-difference checks use.
"""
import contextlib

import numpy as np

from . import dtypes, pytree
from .errors import MlbhError

_FLOAT64 = [False]


@contextlib.contextmanager
def _float64_mode(on):
    _FLOAT64.append(on)
    try:
        yield
    finally:
        _FLOAT64.pop()


def float64_mode() -> bool:
    return _FLOAT64[-1]


def _storage(name):
    if float64_mode() and dtypes.is_float(name):
        return np.dtype(np.float64)
    return dtypes.to_numpy(name)


def _compute(arr):
    if float64_mode():
        return arr.astype(np.float64) if arr.dtype.kind == "f" or dtypes.name_of(arr.dtype) == "bfloat16" else arr
    name = dtypes.name_of(arr.dtype)
    return arr.astype(np.float32) if name in ("float16", "bfloat16") else arr


def _params_for_mode(params):
    if not float64_mode():
        return params
    out = dict(params)
    if dtypes.is_float(out.get("dtype", "")):
        out["dtype"] = "float64"
    if isinstance(out.get("value"), np.ndarray) and dtypes.is_float(dtypes.name_of(out["value"].dtype)):
        out["value"] = out["value"].astype(np.float64)
    return out


def run_eqn(prim, in_values, params, out_dtypes):
    # IEEE semantics (1/0 = inf, 0/0 = nan), as the compiled backends have, without warnings
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        results = prim.impl(*[_compute(np.asarray(v)) for v in in_values], **_params_for_mode(params))
    if not isinstance(results, tuple):
        results = (results,)
    return [np.asarray(r).astype(_storage(d), copy=False) for r, d in zip(results, out_dtypes)]


def apply_eager(prim, in_values, params):
    """Eager application (no trace active): shape rule for the dtypes, then impl."""
    avals = prim.shape(*in_values_avals(in_values), **params)
    outs = run_eqn(prim, in_values, params, [d for _, d in avals])
    return outs[0] if len(outs) == 1 else tuple(outs)


class _Aval:
    __slots__ = ("shape", "dtype")

    def __init__(self, arr):
        self.shape = arr.shape
        self.dtype = dtypes.name_of(arr.dtype)


def in_values_avals(values):
    return [_Aval(v) for v in values]


def evaluate(graph, *args, float64=False):
    """Run graph on numpy arrays. args: the graph's input pytree(s), or its flat inputs."""
    from .registry import get
    leaves, _ = pytree.flatten(list(args))
    if len(leaves) != len(graph.inputs):
        raise MlbhError(f"evaluate: the graph takes {len(graph.inputs)} inputs, got {len(leaves)}")
    with _float64_mode(float64):
        env = {}
        for var, value in zip(graph.inputs, leaves):
            arr = np.asarray(value)
            if arr.shape != var.shape:
                raise MlbhError(f"evaluate: input {var.aval} given an array of shape {arr.shape}")
            env[var] = arr.astype(_storage(var.dtype), copy=False)
        for e in graph.eqns:
            outs = run_eqn(get(e.prim), [env[v] for v in e.inputs], e.params,
                           [v.dtype for v in e.outputs])
            env.update(zip(e.outputs, outs))
        results = [env[v] for v in graph.outputs]
    if graph.out_tree is not None:
        return pytree.unflatten(graph.out_tree, results)
    return results
