"""Movement primitives: broadcast_in_dim, reshape, transpose, slice, pad, concatenate.
Codegen turns these into index arithmetic inside kernels wherever it can."""
import numpy as np

from . import lax
from .errors import ShapeError
from .prims_elementwise import _aval, _same_dtype
from .registry import register


def _broadcast_shape(x, shape, broadcast_dimensions):
    dims = broadcast_dimensions
    ok = len(dims) == len(x.shape) and list(dims) == sorted(set(dims)) and all(
        0 <= d < len(shape) and x.shape[i] in (1, shape[d]) for i, d in enumerate(dims))
    if not ok:
        raise ShapeError(f"broadcast_in_dim: cannot broadcast {_aval(x)} to {list(shape)} "
                         f"along dimensions {list(dims)}")
    return [(shape, x.dtype)]


def _broadcast_impl(x, shape, broadcast_dimensions):
    view = [1] * len(shape)
    for i, d in enumerate(broadcast_dimensions):
        view[d] = x.shape[i]
    return np.broadcast_to(x.reshape(view), shape)


def _broadcast_vjp(cts, ins, outs, shape, broadcast_dimensions):
    x, dims = ins[0], broadcast_dimensions
    summed = [d for d in range(len(shape)) if d not in dims]
    summed += [d for i, d in enumerate(dims) if x.shape[i] == 1 and shape[d] != 1]
    return [lax.reshape(lax.reduce_sum(cts[0], summed), x.shape)]


register("broadcast_in_dim", shape=_broadcast_shape, impl=_broadcast_impl,
         vjp=_broadcast_vjp, kind="movement")


def _reshape_shape(x, shape):
    if int(np.prod(shape, dtype=np.int64)) != int(np.prod(x.shape, dtype=np.int64)):
        raise ShapeError(f"reshape: cannot reshape {_aval(x)} to {list(shape)}")
    return [(shape, x.dtype)]


register("reshape", shape=_reshape_shape, impl=lambda x, shape: x.reshape(shape),
         vjp=lambda cts, ins, outs, shape: [lax.reshape(cts[0], ins[0].shape)], kind="movement")


def _transpose_shape(x, permutation):
    if sorted(permutation) != list(range(len(x.shape))):
        raise ShapeError(f"transpose: {list(permutation)} is not a permutation of the axes of {_aval(x)}")
    return [(tuple(x.shape[p] for p in permutation), x.dtype)]


register("transpose", shape=_transpose_shape, impl=lambda x, permutation: np.transpose(x, permutation),
         vjp=lambda cts, ins, outs, permutation: [lax.transpose(cts[0], np.argsort(permutation))],
         kind="movement")


def _slice_len(start, limit, stride):
    return max(0, -(-(limit - start) // stride))


def _slice_shape(x, start_indices, limit_indices, strides):
    n = len(x.shape)
    if not (len(start_indices) == len(limit_indices) == len(strides) == n) or any(
            not (0 <= s <= l <= d) or st < 1
            for s, l, d, st in zip(start_indices, limit_indices, x.shape, strides)):
        raise ShapeError(f"slice: bad bounds start={list(start_indices)} limit={list(limit_indices)} "
                         f"strides={list(strides)} for {_aval(x)}")
    return [(tuple(_slice_len(s, l, st) for s, l, st in zip(start_indices, limit_indices, strides)),
             x.dtype)]


def _slice_impl(x, start_indices, limit_indices, strides):
    return x[tuple(slice(s, l, st) for s, l, st in zip(start_indices, limit_indices, strides))]


def _slice_vjp(cts, ins, outs, start_indices, limit_indices, strides):
    config = []
    for s, st, d, n in zip(start_indices, strides, ins[0].shape, outs[0].shape):
        if n == 0:
            config.append((0, d, 0))
        else:
            config.append((s, d - (s + (n - 1) * st + 1), st - 1))
    if any(n == 0 for n in outs[0].shape):
        return [lax.zeros_like(ins[0])]
    return [lax.pad(cts[0], 0.0, config)]


register("slice", shape=_slice_shape, impl=_slice_impl, vjp=_slice_vjp, kind="movement")


def _pad_shape(x, padding_value, padding_config):
    if len(padding_config) != len(x.shape) or any(min(c) < 0 for c in padding_config):
        raise ShapeError(f"pad: bad padding {list(padding_config)} for {_aval(x)} "
                         "(one (low, high, interior) per axis, none negative)")
    return [(tuple(lo + hi + d + max(d - 1, 0) * it for d, (lo, hi, it) in zip(x.shape, padding_config)),
             x.dtype)]


def _pad_impl(x, padding_value, padding_config):
    out_shape = _pad_shape(x, padding_value, padding_config)[0][0]
    out = np.full(out_shape, padding_value, dtype=x.dtype)
    out[tuple(slice(lo, lo + (d - 1) * (it + 1) + 1, it + 1) if d else slice(0, 0)
              for d, (lo, hi, it) in zip(x.shape, padding_config))] = x
    return out


def _pad_vjp(cts, ins, outs, padding_value, padding_config):
    x = ins[0]
    if x.size == 0:
        return [lax.zeros_like(x)]
    start = [lo for lo, _, _ in padding_config]
    limit = [lo + (d - 1) * (it + 1) + 1 for d, (lo, _, it) in zip(x.shape, padding_config)]
    return [lax.slice(cts[0], start, limit, [it + 1 for _, _, it in padding_config])]


register("pad", shape=_pad_shape, impl=_pad_impl, vjp=_pad_vjp, kind="movement")


def _concat_shape(*xs, dimension):
    first = xs[0]
    _same_dtype("concatenate", *xs)
    for x in xs[1:]:
        if len(x.shape) != len(first.shape) or any(
                a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != dimension):
            raise ShapeError(f"concatenate along axis {dimension}: shapes do not fit: "
                             + ", ".join(_aval(x) for x in xs))
    if not 0 <= dimension < len(first.shape):
        raise ShapeError(f"concatenate: axis {dimension} out of range for {_aval(first)}")
    shape = list(first.shape)
    shape[dimension] = sum(x.shape[dimension] for x in xs)
    return [(tuple(shape), first.dtype)]


def _concat_vjp(cts, ins, outs, dimension):
    result, offset = [], 0
    for x in ins:
        start = [0] * len(x.shape)
        limit = list(cts[0].shape)
        start[dimension], limit[dimension] = offset, offset + x.shape[dimension]
        result.append(lax.slice(cts[0], start, limit))
        offset += x.shape[dimension]
    return result


register("concatenate", shape=_concat_shape,
         impl=lambda *xs, dimension: np.concatenate(xs, axis=dimension),
         vjp=_concat_vjp, kind="movement")
