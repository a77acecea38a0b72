"""numpy-like array ops over traced values (and plain numpy arrays, eagerly).

Broadcasting and dtype promotion are resolved here, at trace time, into explicit
primitives (broadcast_in_dim, convert), so the graph itself never broadcasts.
Python scalars are "weak": they take the dtype of the array they meet.
"""
import builtins

import numpy as np

from . import dtypes, lax
from .errors import DTypeError, ShapeError
from .source import user_source
from .tracing import Tracer, bind


# ---- values, dtypes, broadcasting -------------------------------------------------------------
def dtype_of(x) -> str:
    return x.dtype if isinstance(x, Tracer) else dtypes.name_of(np.asarray(x).dtype)


def shape_of(x) -> tuple:
    return tuple(x.shape) if hasattr(x, "shape") else ()


def _is_weak(x):
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def _describe(x):
    return f"{dtypes.SHORT[dtype_of(x)]}{list(shape_of(x))}"


def asarray(x, dtype=None):
    """A Tracer stays a Tracer; anything else becomes a numpy array of a known dtype."""
    if isinstance(x, Tracer):
        return x if dtype is None else astype(x, dtype)
    if _is_weak(x):
        default = "bool" if isinstance(x, bool) else "int32" if isinstance(x, int) else "float32"
        return np.asarray(x, dtype=dtypes.to_numpy(dtype or default))
    try:
        arr = np.asarray(x)
    except ValueError:  # ragged nesting
        arr = np.asarray(None)
    if arr.dtype == object:
        raise DTypeError(f"cannot make an array of a {type(x).__name__} holding traced values or ragged rows "
                         f"(stack traced values with ops.stack)", user_source())
    if arr.dtype not in dtypes.NUMPY.values():
        raise DTypeError(f"unsupported dtype {arr.dtype}; mlbh supports {', '.join(dtypes.NUMPY)}", user_source())
    name = dtypes.name_of(arr.dtype)
    return arr if dtype is None or name == dtype else arr.astype(dtypes.to_numpy(dtype))


def astype(x, dtype):
    dtype = dtypes.name_of(dtype)
    if isinstance(x, Tracer):
        return lax.convert(x, dtype)
    return asarray(x, dtype)


def _result_dtype(xs):
    strong = [dtype_of(x) for x in xs if not _is_weak(x)]
    if not strong:
        return dtype_of(asarray(xs[0])) if len(xs) == 1 else _weak_dtype(xs)
    result = strong[0]
    for d in strong[1:]:
        result = dtypes.promote(result, d)
    if any(isinstance(x, float) for x in xs if _is_weak(x)) and not dtypes.is_float(result):
        result = "float32"
    return result


def _weak_dtype(xs):
    if any(isinstance(x, float) for x in xs):
        return "float32"
    if any(isinstance(x, int) and not isinstance(x, bool) for x in xs):
        return "int32"
    return "bool"


def broadcast_shapes(op, *shapes, operands=None):
    """The common shape; operands (the arrays, when known) name their dtypes in the error."""
    ndim = builtins.max(len(s) for s in shapes)
    result = []
    for axis in range(ndim):
        sizes = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            what = (f"operands {' and '.join(_describe(x) for x in operands)}" if operands is not None
                    else f"shapes {' and '.join(str(list(s)) for s in shapes)}")
            raise ShapeError(f"{op}: {what} cannot be broadcast together", user_source())
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


def broadcast_to(x, shape):
    x = asarray(x)
    shape = tuple(int(d) for d in shape)
    if shape_of(x) == shape:
        return x
    broadcast_shapes("broadcast_to", shape_of(x), shape)
    lead = len(shape) - len(shape_of(x))
    if lead < 0 or any(d not in (1, shape[lead + i]) for i, d in enumerate(shape_of(x))):
        raise ShapeError(f"broadcast_to: cannot broadcast {_describe(x)} to {list(shape)}", user_source())
    return lax.broadcast_in_dim(x, shape, range(lead, len(shape)))


def _prepare(op, *xs, dtype=None):
    """Promote to one dtype and broadcast to one shape."""
    dtype = dtype or _result_dtype(xs)
    arrays = [asarray(x, dtype) if _is_weak(x) else astype(x, dtype) for x in xs]
    shape = broadcast_shapes(op, *(shape_of(a) for a in arrays), operands=arrays)
    return [broadcast_to(a, shape) for a in arrays]


def _binary(prim, op):
    def fn(a, b):
        a, b = _prepare(op, a, b)
        return bind(prim, a, b)
    fn.__name__ = op
    return fn


add = _binary("add", "add")
subtract = _binary("sub", "subtract")
multiply = _binary("mul", "multiply")
maximum = _binary("max", "maximum")
minimum = _binary("min", "minimum")
_power = _binary("pow", "power")


def power(a, b):
    """a ** b; small constant exponents become multiplies or roots (exact and cheap)."""
    if _is_weak(b) and not _is_weak(a) and dtypes.is_float(dtype_of(a)):
        if b == 1:
            return asarray(a)
        if b == 2:
            return multiply(a, a)
        if b == 3:
            return multiply(a, multiply(a, a))
        if b == 0.5:
            return sqrt(a)
        if b == -0.5:
            return rsqrt(a)
    return _power(a, b)
less = _binary("lt", "less")
less_equal = _binary("le", "less_equal")
equal = _binary("eq", "equal")
not_equal = _binary("ne", "not_equal")


def greater(a, b):
    return less(b, a)


def greater_equal(a, b):
    return less_equal(b, a)


def divide(a, b):
    """True division: integers are divided as float32, as numpy does (in float64)."""
    dtype = _result_dtype((a, b))
    if not dtypes.is_float(dtype):
        dtype = "float32"
    a, b = _prepare("divide", a, b, dtype=dtype)
    return bind("div", a, b)


def negative(x):
    return lax.neg(asarray(x))


def _float_unary(prim):
    def fn(x):
        x = asarray(x)
        if not dtypes.is_float(dtype_of(x)):
            raise DTypeError(f"{prim} needs a floating-point array, got {_describe(x)}; "
                             "use .astype('float32') first", user_source())
        return bind(prim, x)
    fn.__name__ = prim
    return fn


exp = _float_unary("exp")
log = _float_unary("log")
tanh = _float_unary("tanh")
sqrt = _float_unary("sqrt")
rsqrt = _float_unary("rsqrt")
erf = _float_unary("erf")


def abs(x):  # noqa: A001 (numpy name)
    x = asarray(x)
    return where(less(x, 0), negative(x), x)


def where(condition, x, y):
    condition = asarray(condition)
    if dtype_of(condition) != "bool":
        condition = not_equal(condition, 0)
    dtype = _result_dtype((x, y))
    x, y = (asarray(v, dtype) if _is_weak(v) else astype(v, dtype) for v in (x, y))
    shape = broadcast_shapes("where", shape_of(condition), shape_of(x), shape_of(y),
                             operands=(condition, x, y))
    return lax.select(broadcast_to(condition, shape), broadcast_to(x, shape), broadcast_to(y, shape))


def stop_gradient(x):
    return lax.stop_gradient(asarray(x))


# ---- reductions --------------------------------------------------------------------------------
def _axes(x, axis):
    ndim = len(shape_of(x))
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"axis {a} is out of range for {_describe(x)}", user_source())
    return tuple(sorted(a % ndim for a in axes))


def _keep(x, reduced, axes, keepdims):
    if not keepdims:
        return reduced
    shape = tuple(1 if i in axes else d for i, d in enumerate(shape_of(x)))
    return lax.reshape(reduced, shape)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    x = asarray(x)
    if dtype_of(x) == "bool":
        x = astype(x, "int32")
    axes = _axes(x, axis)
    return _keep(x, lax.reduce_sum(x, axes), axes, keepdims)


def mean(x, axis=None, keepdims=False):
    x = asarray(x)
    if not dtypes.is_float(dtype_of(x)):
        x = astype(x, "float32")
    axes = _axes(x, axis)
    count = int(np.prod([shape_of(x)[a] for a in axes], dtype=np.int64))
    return divide(sum(x, axes, keepdims), float(count))


def max(x, axis=None, keepdims=False):  # noqa: A001
    x = asarray(x)
    axes = _axes(x, axis)
    return _keep(x, lax.reduce_max(x, axes), axes, keepdims)


def var(x, axis=None, keepdims=False):
    x = asarray(x)
    centered = subtract(x, mean(x, axis, keepdims=True))
    return mean(multiply(centered, centered), axis, keepdims)


def argmax(x, axis=-1):
    x = asarray(x)
    return lax.argmax(x, _axes(x, axis)[0])


# ---- shapes ------------------------------------------------------------------------------------
def reshape(x, shape):
    x = asarray(x)
    shape = [int(d) for d in ((shape,) if isinstance(shape, int) else shape)]
    size = int(np.prod(shape_of(x), dtype=np.int64))
    if shape.count(-1) == 1:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ShapeError(f"reshape: cannot reshape {_describe(x)} to {shape}", user_source())
        shape[shape.index(-1)] = size // known
    if int(np.prod(shape, dtype=np.int64)) != size:
        raise ShapeError(f"reshape: cannot reshape {_describe(x)} to {shape}", user_source())
    return lax.reshape(x, shape)


def transpose(x, axes=None):
    x = asarray(x)
    ndim = len(shape_of(x))
    axes = tuple(reversed(range(ndim))) if axes is None else tuple(a % ndim for a in axes)
    if sorted(axes) != list(range(ndim)):
        raise ShapeError(f"transpose: {list(axes)} is not a permutation of the axes of {_describe(x)}",
                         user_source())
    return lax.transpose(x, axes)


def expand_dims(x, axis):
    x = asarray(x)
    shape = list(shape_of(x))
    shape.insert(axis % (len(shape) + 1), 1)
    return lax.reshape(x, shape)


def squeeze(x, axis):
    x = asarray(x)
    axes = _axes(x, axis)
    if any(shape_of(x)[a] != 1 for a in axes):
        raise ShapeError(f"squeeze: axis {axis} of {_describe(x)} is not of size 1", user_source())
    return lax.reshape(x, [d for i, d in enumerate(shape_of(x)) if i not in axes])


def concatenate(xs, axis=0):
    xs = list(xs)
    dtype = _result_dtype(xs)
    xs = [astype(asarray(x), dtype) for x in xs]
    ndim = len(shape_of(xs[0]))
    if any(len(shape_of(x)) != ndim for x in xs) or not -ndim <= axis < ndim:
        raise ShapeError("concatenate: arrays " + ", ".join(_describe(x) for x in xs)
                         + f" cannot be joined along axis {axis}", user_source())
    return lax.concatenate(xs, axis % ndim)


def split(x, sections_or_indices, axis=0):
    x = asarray(x)
    axis = _axes(x, axis)[0]
    n = shape_of(x)[axis]
    if isinstance(sections_or_indices, int):
        if n % sections_or_indices:
            raise ShapeError(f"split: axis {axis} of {_describe(x)} does not divide into "
                             f"{sections_or_indices} equal sections", user_source())
        step = n // sections_or_indices
        bounds = list(range(0, n + 1, step))
    else:
        bounds = [0] + [builtins.min(int(i), n) for i in sections_or_indices] + [n]
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        start = [0] * len(shape_of(x))
        limit = list(shape_of(x))
        start[axis], limit[axis] = lo, builtins.max(lo, hi)
        parts.append(lax.slice(x, start, limit))
    return parts


def take(x, indices, axis=None):
    x = asarray(x)
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    indices = asarray(indices)
    if not dtypes.is_int(dtype_of(indices)):
        raise DTypeError(f"take: indices must be integers, got {_describe(indices)}", user_source())
    return lax.gather(x, indices, _axes(x, axis)[0])


def getitem(x, index):
    """x[index] for ints, slices (positive steps), None, Ellipsis and one integer-array index."""
    x = asarray(x)
    index = index if isinstance(index, tuple) else (index,)
    if builtins.sum(i is Ellipsis for i in index) > 1:
        raise ShapeError("an index can only have a single Ellipsis", user_source())
    used = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    shape = shape_of(x)
    if used > len(shape):
        raise ShapeError(f"too many indices for {_describe(x)}", user_source())
    if Ellipsis in [i for i in index if not hasattr(i, "shape")]:
        at = [k for k, i in enumerate(index) if i is Ellipsis and not hasattr(i, "shape")][0]
        index = index[:at] + (slice(None),) * (len(shape) - used) + index[at + 1:]
    else:
        index = index + (slice(None),) * (len(shape) - used)

    start, limit, strides, out_shape, array_axis, array_index = [], [], [], [], None, None
    axis = 0
    for item in index:
        if item is None:
            out_shape.append(1)
            continue
        dim = shape[axis]
        if isinstance(item, slice):
            lo, hi, step = item.indices(dim)
            if step < 1:
                raise ShapeError("negative or zero slice steps are not supported", user_source())
            n = builtins.max(0, -(-(hi - lo) // step))
            start.append(lo), limit.append(lo + builtins.max(0, (n - 1) * step + 1) if n else lo)
            strides.append(step), out_shape.append(n)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not -dim <= item < dim:
                raise ShapeError(f"index {item} is out of bounds for axis {axis} of size {dim}",
                                 user_source())
            item = int(item) % dim
            start.append(item), limit.append(item + 1), strides.append(1)
        elif isinstance(item, Tracer) or isinstance(item, (np.ndarray, list)):
            if array_index is not None:
                raise ShapeError("only one integer-array index is supported", user_source())
            array_index, array_axis = item, len(out_shape)
            start.append(0), limit.append(dim), strides.append(1), out_shape.append(dim)
        else:
            raise ShapeError(f"unsupported index {item!r}", user_source())
        axis += 1
    y = lax.slice(x, start, limit, strides)
    y = lax.reshape(y, out_shape)
    if array_index is not None:
        y = take(y, array_index, array_axis)
    return y


# ---- creation ------------------------------------------------------------------------------------
def full(shape, value, dtype="float32"):
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return lax.full(shape, value, dtypes.name_of(dtype))


def zeros(shape, dtype="float32"):
    return full(shape, 0, dtype)


def ones(shape, dtype="float32"):
    return full(shape, 1, dtype)


def zeros_like(x):
    return full(shape_of(x), 0, dtype_of(x))


def arange(start, stop=None, step=1, dtype="int32"):
    if stop is None:
        start, stop = 0, start
    n = builtins.max(0, -(-(stop - start) // step))
    dtype = dtypes.name_of(dtype)
    idx = lax.iota((n,), 0, dtype)
    if step != 1:
        idx = multiply(idx, step)
    if start != 0:
        idx = add(idx, start)
    return idx


# ---- linear algebra ------------------------------------------------------------------------------
def matmul(a, b):
    """numpy matmul: (..., M, K) @ (..., K, N), 1-D operands promoted and squeezed back."""
    a, b = asarray(a), asarray(b)
    dtype = _result_dtype((a, b))
    a, b = astype(a, dtype), astype(b, dtype)
    sa, sb = shape_of(a), shape_of(b)
    if not sa or not sb:
        raise ShapeError("matmul: operands must be at least 1-D, got "
                         f"{_describe(a)} @ {_describe(b)}", user_source())
    a2 = expand_dims(a, 0) if len(sa) == 1 else a
    b2 = expand_dims(b, -1) if len(sb) == 1 else b
    sa2, sb2 = shape_of(a2), shape_of(b2)
    if sa2[-1] != sb2[-2]:
        raise ShapeError(f"matmul: {_describe(a)} @ {_describe(b)}: inner dimensions "
                         f"{sa2[-1]} and {sb2[-2]} differ", user_source())
    if len(sb2) == 2:  # (..., M, K) @ (K, N): contract without any batch broadcast
        out = lax.dot_general(a2, b2, (((len(sa2) - 1,), (0,)), ((), ())))
    elif len(sa2) == 2:  # (M, K) @ (..., K, N)
        out = lax.dot_general(b2, a2, (((len(sb2) - 2,), (1,)), ((), ())))
        nb = len(sb2) - 2
        out = lax.transpose(out, list(range(nb)) + [nb + 1, nb])
    else:
        try:
            batch = broadcast_shapes("matmul", sa2[:-2], sb2[:-2])
        except ShapeError:
            raise ShapeError(f"matmul: {_describe(a)} @ {_describe(b)}: batch dimensions "
                             f"{list(sa2[:-2])} and {list(sb2[:-2])} cannot be broadcast together",
                             user_source()) from None
        a3 = broadcast_to(a2, batch + sa2[-2:])
        b3 = broadcast_to(b2, batch + sb2[-2:])
        nb = len(batch)
        out = lax.dot_general(a3, b3, (((nb + 1,), (nb,)), (tuple(range(nb)), tuple(range(nb)))))
    if len(sa) == 1:
        out = squeeze(out, -2 if len(sb) > 1 else -1)
    if len(sb) == 1:
        out = squeeze(out, -1)
    return out
