"""Elementwise primitives: unary math, binary arithmetic, comparisons, select, convert,
and the generators (full, iota, constant, random_bits) that fusion treats alike."""
import math

import numpy as np

from . import dtypes, lax
from .errors import DTypeError, ShapeError
from .registry import register


def _same_shape(name, *avals):
    shapes = {a.shape for a in avals}
    if len(shapes) > 1:
        raise ShapeError(f"{name}: operand shapes differ: " + ", ".join(_aval(a) for a in avals))


def _same_dtype(name, *avals):
    if len({a.dtype for a in avals}) > 1:
        raise DTypeError(f"{name}: operand dtypes differ: " + ", ".join(_aval(a) for a in avals))


def _aval(a):
    return f"{dtypes.SHORT[a.dtype]}{list(a.shape)}"


def _float_unary_shape(name):
    def rule(x):
        if not dtypes.is_float(x.dtype):
            raise DTypeError(f"{name} needs a floating-point operand, got {_aval(x)}; "
                             "convert it with .astype('float32') first")
        return [(x.shape, x.dtype)]
    return rule


def _numeric_binary_shape(name):
    def rule(a, b):
        _same_shape(name, a, b)
        _same_dtype(name, a, b)
        return [(a.shape, a.dtype)]
    return rule


def _compare_shape(name):
    def rule(a, b):
        _same_shape(name, a, b)
        _same_dtype(name, a, b)
        return [(a.shape, "bool")]
    return rule


def _scale(x, c):
    return lax.mul(x, lax.full_like(x, c))


# ---- unary: d/dx stated in each vjp ------------------------------------------------------
register("neg", shape=lambda x: [(x.shape, x.dtype)], impl=np.negative,
         vjp=lambda cts, ins, outs: [lax.neg(cts[0])], kind="elementwise")
register("exp", shape=_float_unary_shape("exp"), impl=np.exp,  # d exp = exp
         vjp=lambda cts, ins, outs: [lax.mul(cts[0], outs[0])], kind="elementwise")
register("log", shape=_float_unary_shape("log"), impl=np.log,  # d log = 1/x
         vjp=lambda cts, ins, outs: [lax.div(cts[0], ins[0])], kind="elementwise")
register("tanh", shape=_float_unary_shape("tanh"), impl=np.tanh,  # d tanh = 1 - y^2
         vjp=lambda cts, ins, outs: [lax.mul(cts[0], lax.sub(lax.full_like(outs[0], 1),
                                                          lax.mul(outs[0], outs[0])))],
         kind="elementwise")
register("sqrt", shape=_float_unary_shape("sqrt"), impl=np.sqrt,  # d sqrt = 1/(2y)
         vjp=lambda cts, ins, outs: [lax.div(_scale(cts[0], 0.5), outs[0])], kind="elementwise")
register("rsqrt", shape=_float_unary_shape("rsqrt"), impl=lambda x: 1.0 / np.sqrt(x),
         # y = x^-1/2, dy/dx = -y / (2x)
         vjp=lambda cts, ins, outs: [lax.div(lax.mul(_scale(cts[0], -0.5), outs[0]), ins[0])],
         kind="elementwise")
_erf = np.frompyfunc(math.erf, 1, 1)
register("erf", shape=_float_unary_shape("erf"), impl=lambda x: np.asarray(_erf(x)).astype(x.dtype),
         # d erf = 2/sqrt(pi) exp(-x^2)
         vjp=lambda cts, ins, outs: [lax.mul(_scale(cts[0], 2.0 / math.sqrt(math.pi)),
                                             lax.exp(lax.neg(lax.mul(ins[0], ins[0]))))],
         kind="elementwise")
register("stop_gradient", shape=lambda x: [(x.shape, x.dtype)], impl=lambda x: x,
         vjp=lambda cts, ins, outs: [None], kind="elementwise")


# ---- binary -------------------------------------------------------------------------------
def _max_vjp(cts, ins, outs, pick_first):
    a, b = ins
    # ties split the gradient evenly between the operands
    wins = lax.lt(b, a) if pick_first else lax.lt(a, b)
    w = lax.select(wins, lax.full_like(a, 1), lax.select(lax.eq(a, b), lax.full_like(a, 0.5),
                                                         lax.full_like(a, 0)))
    return [lax.mul(cts[0], w), lax.mul(cts[0], lax.sub(lax.full_like(a, 1), w))]


def _pow_vjp(cts, ins, outs):
    a, b = ins
    ga = lax.mul(cts[0], lax.mul(b, lax.pow(a, lax.sub(b, lax.full_like(b, 1)))))
    positive = lax.lt(lax.zeros_like(a), a)
    safe_log = lax.log(lax.select(positive, a, lax.full_like(a, 1)))
    gb = lax.mul(cts[0], lax.mul(outs[0], lax.select(positive, safe_log, lax.zeros_like(a))))
    return [ga, gb]


def _pow_impl(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.power(a, b.astype(a.dtype))
    return np.power(a, b)


register("add", shape=_numeric_binary_shape("add"), impl=np.add,
         vjp=lambda cts, ins, outs: [cts[0], cts[0]], kind="elementwise")
register("sub", shape=_numeric_binary_shape("sub"), impl=np.subtract,
         vjp=lambda cts, ins, outs: [cts[0], lax.neg(cts[0])], kind="elementwise")
register("mul", shape=_numeric_binary_shape("mul"), impl=np.multiply,
         vjp=lambda cts, ins, outs: [lax.mul(cts[0], ins[1]), lax.mul(cts[0], ins[0])],
         kind="elementwise")
register("div", shape=_numeric_binary_shape("div"),
         impl=lambda a, b: np.floor_divide(a, b) if np.issubdtype(a.dtype, np.integer) else np.divide(a, b),
         # d(a/b) = da/b - (a/b) db/b
         vjp=lambda cts, ins, outs: [lax.div(cts[0], ins[1]),
                                     lax.neg(lax.div(lax.mul(cts[0], outs[0]), ins[1]))],
         kind="elementwise")
register("max", shape=_numeric_binary_shape("max"), impl=np.maximum,
         vjp=lambda cts, ins, outs: _max_vjp(cts, ins, outs, True), kind="elementwise")
register("min", shape=_numeric_binary_shape("min"), impl=np.minimum,
         vjp=lambda cts, ins, outs: _max_vjp(cts, ins, outs, False), kind="elementwise")
register("pow", shape=_numeric_binary_shape("pow"), impl=_pow_impl, vjp=_pow_vjp,
         kind="elementwise")

for _name, _fn in (("lt", np.less), ("le", np.less_equal), ("eq", np.equal), ("ne", np.not_equal)):
    register(_name, shape=_compare_shape(_name), impl=_fn,
             vjp=lambda cts, ins, outs: [None, None], kind="elementwise")


def _select_shape(pred, on_true, on_false):
    _same_shape("select", pred, on_true, on_false)
    if pred.dtype != "bool":
        raise DTypeError(f"select: the predicate must be bool, got {_aval(pred)}")
    _same_dtype("select", on_true, on_false)
    return [(on_true.shape, on_true.dtype)]


register("select", shape=_select_shape, impl=lambda p, t, f: np.where(p, t, f),
         vjp=lambda cts, ins, outs: [None, lax.select(ins[0], cts[0], lax.zeros_like(cts[0])),
                                     lax.select(ins[0], lax.zeros_like(cts[0]), cts[0])],
         kind="elementwise")


def _convert_shape(x, dtype):
    return [(x.shape, dtypes.name_of(dtype))]


def _convert_impl(x, dtype):
    target = dtypes.compute_dtype(dtype) if dtype != "float64" else np.float64
    if dtypes.is_int(dtype) and x.dtype.kind == "f":
        x = np.trunc(x)
    return x.astype(target)


register("convert", shape=_convert_shape, impl=_convert_impl,
         vjp=lambda cts, ins, outs, dtype: [lax.convert(cts[0], ins[0].dtype)
                                            if dtypes.is_float(ins[0].dtype) and dtypes.is_float(dtype)
                                            else None],
         kind="elementwise")


# ---- generators -----------------------------------------------------------------------------
register("full", shape=lambda shape, value, dtype: [(shape, dtype)],
         impl=lambda shape, value, dtype: np.full(shape, value, dtype=dtypes.compute_dtype(dtype)),
         kind="elementwise")


def _iota_shape(shape, dimension, dtype):
    if not 0 <= dimension < len(shape):
        raise ShapeError(f"iota: dimension {dimension} out of range for shape {shape}")
    return [(shape, dtype)]


def _iota_impl(shape, dimension, dtype):
    idx = np.arange(shape[dimension], dtype=dtypes.compute_dtype(dtype))
    view = [1] * len(shape)
    view[dimension] = shape[dimension]
    return np.broadcast_to(idx.reshape(view), shape)


register("iota", shape=_iota_shape, impl=_iota_impl, kind="elementwise")
register("constant", shape=lambda value: [(value.shape, dtypes.name_of(value.dtype))],
         impl=lambda value: value, kind="other")


# random_bits: Philox4x32-10 keyed by key[0..1] with counter (i_lo, i_hi, 0, 0) for the
# flat element index i; the first output word is the element's bits. Counter-based, so
# recomputing a value (checkpointing, another backend) replays exactly the same bits.
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def philox_bits(k0, k1, index):
    mask = np.uint64(0xFFFFFFFF)
    c0 = (index & mask).astype(np.uint64)
    c1 = (index >> np.uint64(32)).astype(np.uint64)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for _ in range(10):
        p0 = np.uint64(PHILOX_M[0]) * c0
        p1 = np.uint64(PHILOX_M[1]) * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & mask
        hi1, lo1 = p1 >> np.uint64(32), p1 & mask
        c0, c1, c2, c3 = (hi1 ^ c1 ^ k0) & mask, lo1, (hi0 ^ c3 ^ k1) & mask, lo0
        k0 = (k0 + np.uint64(PHILOX_W[0])) & mask
        k1 = (k1 + np.uint64(PHILOX_W[1])) & mask
    return c0.astype(np.uint32)


def _random_bits_shape(key, shape):
    if key.shape != (2,) or key.dtype != "uint32":
        raise DTypeError(f"random_bits: the key must be u32[2], got {_aval(key)}")
    return [(shape, "uint32")]


def _random_bits_impl(key, shape):
    n = int(np.prod(shape, dtype=np.int64))
    index = np.arange(n, dtype=np.uint64)
    return philox_bits(int(key[0]), int(key[1]), index).reshape(shape)


register("random_bits", shape=_random_bits_shape, impl=_random_bits_impl,
         vjp=lambda cts, ins, outs, shape: [None], kind="elementwise")
