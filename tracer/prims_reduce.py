"""Reductions (reduce_sum, reduce_max, argmax) and dot_general (batched matmul)."""
import numpy as np

from . import dtypes, lax
from .errors import DTypeError, ShapeError
from .prims_elementwise import _aval, _same_dtype
from .registry import register


def _reduced_shape(name):
    def rule(x, axes):
        if any(not 0 <= a < len(x.shape) for a in axes) or len(set(axes)) != len(axes):
            raise ShapeError(f"{name}: bad axes {list(axes)} for {_aval(x)}")
        return [(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)]
    return rule


def _kept_dims(ndim, axes):
    return [i for i in range(ndim) if i not in axes]


def _sum_vjp(cts, ins, outs, axes):
    x = ins[0]
    return [lax.broadcast_in_dim(cts[0], x.shape, _kept_dims(len(x.shape), axes))]


def _max_vjp(cts, ins, outs, axes):
    # the gradient goes to the maximal elements, split evenly among ties
    x = ins[0]
    kept = _kept_dims(len(x.shape), axes)
    hit = lax.eq(x, lax.broadcast_in_dim(outs[0], x.shape, kept))
    ones = lax.select(hit, lax.full_like(x, 1), lax.zeros_like(x))
    share = lax.div(cts[0], lax.reduce_sum(ones, axes))
    return [lax.mul(ones, lax.broadcast_in_dim(share, x.shape, kept))]


register("reduce_sum", shape=_reduced_shape("reduce_sum"),
         impl=lambda x, axes: np.sum(x, axis=tuple(axes)), vjp=_sum_vjp, kind="reduction")
register("reduce_max", shape=_reduced_shape("reduce_max"),
         impl=lambda x, axes: np.max(x, axis=tuple(axes)), vjp=_max_vjp, kind="reduction")


def _argmax_shape(x, axis, index_dtype):
    if not 0 <= axis < len(x.shape):
        raise ShapeError(f"argmax: axis {axis} out of range for {_aval(x)}")
    return [(tuple(d for i, d in enumerate(x.shape) if i != axis), index_dtype)]


register("argmax", shape=_argmax_shape,
         impl=lambda x, axis, index_dtype: np.argmax(x, axis=axis),
         vjp=lambda cts, ins, outs, axis, index_dtype: [None], kind="reduction")


# dot_general(a, b, ((lc, rc), (lb, rb))): contract a's lc axes with b's rc axes, pair a's lb
# batch axes with b's rb; the result's axes are batch, then a's free axes, then b's free axes.
def _free(ndim, contract, batch):
    return [d for d in range(ndim) if d not in contract and d not in batch]


def _dot_shape(a, b, dimension_numbers):
    (lc, rc), (lb, rb) = dimension_numbers
    _same_dtype("dot_general", a, b)
    if a.dtype == "bool":
        raise DTypeError(f"dot_general: cannot multiply {_aval(a)} by {_aval(b)}")
    ok = (len(lc) == len(rc) and len(lb) == len(rb)
          and all(0 <= d < len(a.shape) for d in (*lc, *lb))
          and all(0 <= d < len(b.shape) for d in (*rc, *rb))
          and all(a.shape[i] == b.shape[j] for i, j in zip(lc, rc))
          and all(a.shape[i] == b.shape[j] for i, j in zip(lb, rb)))
    if not ok:
        raise ShapeError(f"dot_general: cannot contract {_aval(a)} axes {list(lc)} with {_aval(b)} "
                         f"axes {list(rc)} (batch axes {list(lb)}, {list(rb)})")
    shape = ([a.shape[d] for d in lb] + [a.shape[d] for d in _free(len(a.shape), lc, lb)]
             + [b.shape[d] for d in _free(len(b.shape), rc, rb)])
    return [(tuple(shape), a.dtype)]


def _dot_impl(a, b, dimension_numbers):
    (lc, rc), (lb, rb) = dimension_numbers
    af, bf = _free(a.ndim, lc, lb), _free(b.ndim, rc, rb)
    nb = int(np.prod([a.shape[d] for d in lb], dtype=np.int64))
    m = int(np.prod([a.shape[d] for d in af], dtype=np.int64))
    k = int(np.prod([a.shape[d] for d in lc], dtype=np.int64))
    n = int(np.prod([b.shape[d] for d in bf], dtype=np.int64))
    a3 = np.transpose(a, [*lb, *af, *lc]).reshape(nb, m, k)
    b3 = np.transpose(b, [*rb, *rc, *bf]).reshape(nb, k, n)
    out = np.matmul(a3, b3)
    return out.reshape([a.shape[d] for d in lb] + [a.shape[d] for d in af] + [b.shape[d] for d in bf])


def _dot_vjp(cts, ins, outs, dimension_numbers):
    (lc, rc), (lb, rb) = dimension_numbers
    a, b = ins
    ct = cts[0]
    af, bf = _free(len(a.shape), lc, lb), _free(len(b.shape), rc, rb)
    nb = len(lb)
    ct_batch = list(range(nb))
    ct_a = list(range(nb, nb + len(af)))
    ct_b = list(range(nb + len(af), len(ct.shape)))
    # d a = ct . b summed over b's free axes; d b = a . ct summed over a's free axes
    ga = _contract_to(a, ct, ct_b, ct_batch, b, bf, rb, lb, af, lc, rc)
    gb = _contract_to(b, ct, ct_a, ct_batch, a, af, lb, rb, bf, rc, lc)
    return [ga, gb]


def _contract_to(target, ct, ct_other, ct_batch, other, other_free, other_batch, batch, free, contract,
                 other_contract):
    """Cotangent of `target` as dot_general(ct, other) or dot_general(other, ct), whichever
    lands in target's layout without a transpose (then none is needed at all)."""
    ndim = len(target.shape)
    pairs = [other_contract.index(d) for d in sorted(other_contract)]
    rest = [contract[i] for i in pairs]  # target axes of other's leftover (contracted) axes
    ct_first = list(batch) + free + rest
    other_first = list(batch) + rest + free
    if other_first == list(range(ndim)) and ct_first != list(range(ndim)):
        return lax.dot_general(other, ct, ((other_free, ct_other), (other_batch, ct_batch)))
    g = lax.dot_general(ct, other, ((ct_other, other_free), (ct_batch, other_batch)))
    return lax.transpose(g, [ct_first.index(d) for d in range(ndim)])


register("dot_general", shape=_dot_shape, impl=_dot_impl, vjp=_dot_vjp, kind="dot")
