"""Indexing primitives: gather (np.take along one axis) and its transpose scatter_add."""
import numpy as np

from . import dtypes, lax
from .errors import DTypeError, ShapeError
from .prims_elementwise import _aval
from .registry import register


def _check_indices(name, indices):
    if not dtypes.is_int(indices.dtype):
        raise DTypeError(f"{name}: indices must be integers, got {_aval(indices)}")


def _gathered_shape(operand, indices, axis):
    return tuple(operand.shape[:axis]) + tuple(indices.shape) + tuple(operand.shape[axis + 1:])


def _gather_shape(operand, indices, axis):
    _check_indices("gather", indices)
    if not 0 <= axis < len(operand.shape):
        raise ShapeError(f"gather: axis {axis} out of range for {_aval(operand)}")
    return [(_gathered_shape(operand, indices, axis), operand.dtype)]


register("gather", shape=_gather_shape,
         impl=lambda operand, indices, axis: np.take(operand, indices, axis=axis),
         vjp=lambda cts, ins, outs, axis: [lax.scatter_add(lax.zeros_like(ins[0]), ins[1], cts[0], axis),
                                           None],
         kind="index")


def _scatter_shape(operand, indices, updates, axis):
    _check_indices("scatter_add", indices)
    if not 0 <= axis < len(operand.shape):
        raise ShapeError(f"scatter_add: axis {axis} out of range for {_aval(operand)}")
    if tuple(updates.shape) != _gathered_shape(operand, indices, axis) or updates.dtype != operand.dtype:
        raise ShapeError(f"scatter_add: updates {_aval(updates)} do not fit operand {_aval(operand)} "
                         f"and indices {_aval(indices)} along axis {axis}")
    return [(operand.shape, operand.dtype)]


def _scatter_impl(operand, indices, updates, axis):
    out = np.array(operand, copy=True)
    moved = np.moveaxis(out, axis, 0)
    k = indices.ndim
    upd = np.moveaxis(updates, list(range(axis, axis + k)), list(range(k)))
    np.add.at(moved, indices, upd)
    return out


register("scatter_add", shape=_scatter_shape, impl=_scatter_impl,
         vjp=lambda cts, ins, outs, axis: [cts[0], None, lax.gather(cts[0], ins[1], axis)],
         kind="index")
