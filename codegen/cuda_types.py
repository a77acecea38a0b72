"""mlbh dtypes as CUDA C: storage types, compute types, literals and conversions.

A value of dtype D lives in memory as ctype(D) and is computed with as
ctype(compute_dtype(D)): float16/bfloat16 widen to float on load and narrow, rounding to
nearest even, on store. Values of those two dtypes are also rounded to their precision
after every operation, as the reference interpreter rounds after every eqn.
"""
import math

import numpy as np

from mlbh.tracer import dtypes

from .kernel_ir import compute_dtype

CTYPE = {
    "float64": "double",
    "float32": "float",
    "float16": "__half",
    "bfloat16": "__nv_bfloat16",
    "int64": "long long",
    "int32": "int",
    "uint32": "unsigned int",
    "uint16": "unsigned short",
    "bool": "bool",
}
LOW_PRECISION = ("float16", "bfloat16")
_ROUND = {"float16": "mlbh_round_half", "bfloat16": "mlbh_round_bf16"}
_UNSIGNED = ("uint32", "uint16")


def ctype(dtype: str) -> str:
    """The C type a buffer of `dtype` holds."""
    try:
        return CTYPE[dtype]
    except KeyError:
        raise NotImplementedError(f"cuda: no C type for dtype {dtype!r}") from None


def compute_ctype(dtype: str) -> str:
    """The C type values of `dtype` are computed in."""
    return ctype(compute_dtype(dtype))


def round_to(expr: str, dtype: str) -> str:
    """A float expression rounded to float16/bfloat16 precision (still a float)."""
    return f"{_ROUND[dtype]}({expr})" if dtype in LOW_PRECISION else expr


def widen(expr: str, dtype: str) -> str:
    """A stored element of `dtype` as its compute type."""
    if dtype == "float16":
        return f"__half2float({expr})"
    if dtype == "bfloat16":
        return f"__bfloat162float({expr})"
    return expr


def narrow(expr: str, dtype: str) -> str:
    """A compute-typed value of `dtype` as the type stored in memory."""
    if dtype == "float16":
        return f"__float2half_rn({expr})"
    if dtype == "bfloat16":
        return f"__float2bfloat16_rn({expr})"
    return expr


def convert(expr: str, src: str, dst: str) -> str:
    """numpy's astype(dst) of a compute-typed `src` value, as a compute-typed `dst` value."""
    if src == dst:
        return expr
    if dst == "bool":
        return f"({expr} != 0)"
    target = compute_ctype(dst)
    if dtypes.is_float(dst):
        if dst == "float16" and src == "float64":
            return f"__half2float(__double2half({expr}))"  # one rounding, as numpy does
        if dst in LOW_PRECISION:
            cast = expr if compute_dtype(src) == "float32" else f"(float)({expr})"
            return round_to(cast, dst)
        return expr if compute_dtype(src) == dst else f"({target})({expr})"
    if dtypes.is_float(src) and dst in _UNSIGNED:
        # numpy (x86) goes through int64, so -1.0 -> 0xFFFFFFFF rather than C's undefined result
        return f"({target})(long long)({expr})"
    return f"({target})({expr})"


def literal(value, dtype: str) -> str:
    """A scalar of `dtype` (rounded as numpy.full would) as a compute-typed C literal."""
    with np.errstate(all="ignore"):
        stored = np.asarray(value).astype(dtypes.to_numpy(dtype))
    if dtype == "bool":
        return "true" if bool(stored) else "false"
    if dtypes.is_float(dtype):
        x = float(stored.astype(np.float64))
        suffix = "" if dtype == "float64" else "f"
        if math.isnan(x):
            text = "NAN"
        elif math.isinf(x):
            text = "INFINITY" if x > 0 else "-INFINITY"
        else:
            return f"{x!r}{suffix}"
        return f"((double){text})" if dtype == "float64" else text
    v = int(stored)
    if dtype == "int64":
        return f"{v}LL" if v != -(2 ** 63) else "(-9223372036854775807LL - 1)"
    if dtype == "int32":
        return str(v) if v != -(2 ** 31) else "(-2147483647 - 1)"
    if dtype == "uint32":
        return f"{v}u"
    return f"(unsigned short){v}u"


def lowest(dtype: str) -> str:
    """The identity of max over compute values of `dtype`: -inf or the type's minimum."""
    if dtypes.is_float(dtype):
        return literal(float("-inf"), dtype)
    info = np.iinfo(dtypes.to_numpy(dtype)) if dtype != "bool" else None
    return literal(int(info.min), dtype) if info is not None else "false"
