"""Thin, strict wrappers over bind: one function per primitive, no broadcasting or
promotion (that is ops' job). VJP rules and ops are written with these."""
from .tracing import bind


def _tuple(xs):
    return tuple(int(x) for x in xs)


def neg(x): return bind("neg", x)
def exp(x): return bind("exp", x)
def log(x): return bind("log", x)
def tanh(x): return bind("tanh", x)
def sqrt(x): return bind("sqrt", x)
def rsqrt(x): return bind("rsqrt", x)
def erf(x): return bind("erf", x)
def add(a, b): return bind("add", a, b)
def sub(a, b): return bind("sub", a, b)
def mul(a, b): return bind("mul", a, b)
def div(a, b): return bind("div", a, b)
def max(a, b): return bind("max", a, b)  # noqa: A001 (primitive name)
def min(a, b): return bind("min", a, b)  # noqa: A001
def pow(a, b): return bind("pow", a, b)  # noqa: A001
def lt(a, b): return bind("lt", a, b)
def le(a, b): return bind("le", a, b)
def eq(a, b): return bind("eq", a, b)
def ne(a, b): return bind("ne", a, b)
def select(pred, on_true, on_false): return bind("select", pred, on_true, on_false)
def stop_gradient(x): return bind("stop_gradient", x)


def convert(x, dtype):
    return x if x.dtype == dtype else bind("convert", x, dtype=dtype)


def full(shape, value, dtype):
    return bind("full", shape=_tuple(shape), value=float(value) if dtype != "bool" else bool(value),
                dtype=dtype)


def full_like(x, value):
    return full(x.shape, value, x.dtype)


def zeros_like(x):
    return full_like(x, 0)


def iota(shape, dimension, dtype="int32"):
    return bind("iota", shape=_tuple(shape), dimension=int(dimension), dtype=dtype)


def broadcast_in_dim(x, shape, broadcast_dimensions):
    shape, dims = _tuple(shape), _tuple(broadcast_dimensions)
    if x.shape == shape and dims == tuple(range(len(shape))):
        return x
    return bind("broadcast_in_dim", x, shape=shape, broadcast_dimensions=dims)


def reshape(x, shape):
    shape = _tuple(shape)
    return x if x.shape == shape else bind("reshape", x, shape=shape)


def transpose(x, permutation):
    perm = _tuple(permutation)
    return x if perm == tuple(range(len(perm))) else bind("transpose", x, permutation=perm)


def slice(x, start_indices, limit_indices, strides=None):  # noqa: A001
    strides = _tuple(strides) if strides is not None else (1,) * len(x.shape)
    start, limit = _tuple(start_indices), _tuple(limit_indices)
    if start == (0,) * len(start) and limit == tuple(x.shape) and strides == (1,) * len(strides):
        return x
    return bind("slice", x, start_indices=start, limit_indices=limit, strides=strides)


def pad(x, padding_value, padding_config):
    config = tuple(_tuple(c) for c in padding_config)
    if all(c == (0, 0, 0) for c in config):
        return x
    return bind("pad", x, padding_value=float(padding_value), padding_config=config)


def concatenate(xs, dimension):
    return xs[0] if len(xs) == 1 else bind("concatenate", *xs, dimension=int(dimension))


def reduce_sum(x, axes):
    axes = _tuple(sorted(a % len(x.shape) for a in axes)) if x.shape else ()
    return x if not axes else bind("reduce_sum", x, axes=axes)


def reduce_max(x, axes):
    axes = _tuple(sorted(a % len(x.shape) for a in axes)) if x.shape else ()
    return x if not axes else bind("reduce_max", x, axes=axes)


def argmax(x, axis, index_dtype="int32"):
    return bind("argmax", x, axis=int(axis) % len(x.shape), index_dtype=index_dtype)


def dot_general(a, b, dimension_numbers):
    (lc, rc), (lb, rb) = dimension_numbers
    dn = ((_tuple(lc), _tuple(rc)), (_tuple(lb), _tuple(rb)))
    return bind("dot_general", a, b, dimension_numbers=dn)


def gather(operand, indices, axis):
    return bind("gather", operand, indices, axis=int(axis))


def scatter_add(operand, indices, updates, axis):
    return bind("scatter_add", operand, indices, updates, axis=int(axis))


def random_bits(key, shape):
    return bind("random_bits", key, shape=_tuple(shape))
