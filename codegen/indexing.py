"""Index arithmetic for fused kernels.

Movement ops (broadcast, transpose, reshape, slice, pad, concatenate, gather) become
index expressions here instead of copies. A multi-index is a tuple of components, one per
axis. A component is either a Node (any int64 index expression) or Unravel(flat, shape, k):
"axis k of `flat` unravelled over `shape`". Keeping unravels symbolic lets ravel() fold the
common cases back: ravel(unravel(f, S), S) == f, a trailing run == f % n, a leading run ==
f // n, so a same-shape read costs no division at all.
"""
from dataclasses import dataclass

from .kernel_ir import Node


def iconst(v: int) -> Node:
    return Node("iconst", (), "int64", (int(v),))


def ivar(name: str) -> Node:
    return Node("ivar", (), "int64", (name,))


def _const_of(n: Node):
    return n.attr[0] if n.op == "iconst" else None


def iadd(a: Node, b: Node) -> Node:
    ca, cb = _const_of(a), _const_of(b)
    if ca is not None and cb is not None:
        return iconst(ca + cb)
    if ca == 0:
        return b
    if cb == 0:
        return a
    return Node("iadd", (a, b), "int64")


def imul(a: Node, k: int) -> Node:
    ca = _const_of(a)
    if ca is not None:
        return iconst(ca * k)
    if k == 0:
        return iconst(0)
    if k == 1:
        return a
    return Node("imul", (a, iconst(k)), "int64")


def idiv(a: Node, k: int) -> Node:
    ca = _const_of(a)
    if ca is not None:
        return iconst(ca // k)
    return a if k == 1 else Node("idiv", (a, iconst(k)), "int64")


def imod(a: Node, k: int) -> Node:
    ca = _const_of(a)
    if ca is not None:
        return iconst(ca % k)
    return iconst(0) if k == 1 else Node("imod", (a, iconst(k)), "int64")


def _prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


@dataclass(frozen=True)
class Unravel:
    flat: Node
    shape: tuple
    k: int

    def node(self) -> Node:
        inner = _prod(self.shape[self.k + 1:])
        value = idiv(self.flat, inner)
        return value if self.k == 0 else imod(value, self.shape[self.k])


def as_node(c) -> Node:
    return c.node() if isinstance(c, Unravel) else c


def unravel(flat: Node, shape: tuple) -> tuple:
    """Components of `flat` over `shape`; size-1 axes are the constant 0."""
    return tuple(iconst(0) if d == 1 else Unravel(flat, tuple(shape), k) for k, d in enumerate(shape))


def ravel(components, shape) -> Node:
    """Flat row-major index of a multi-index over `shape`, folding unravel runs."""
    total = iconst(0)
    n = len(shape)
    k = n - 1
    stride = 1
    while k >= 0:
        c = components[k]
        if shape[k] == 1:
            k -= 1
            continue
        if isinstance(c, Unravel):
            # extend the run leftwards while the axes are consecutive axes of the same unravel
            j = k
            while (j - 1 >= 0 and isinstance(components[j - 1], Unravel)
                   and components[j - 1].flat == c.flat and components[j - 1].shape == c.shape
                   and components[j - 1].k == components[j].k - 1
                   and shape[j - 1] == c.shape[components[j - 1].k]):
                j -= 1
            last = c.k
            first = components[j].k
            if all(shape[j + t] == c.shape[first + t] for t in range(k - j + 1)):
                inner = _prod(c.shape[last + 1:])
                span = _prod(c.shape[first:last + 1])
                run = idiv(c.flat, inner)
                if first > 0 or any(d != 1 for d in c.shape[:first]):
                    run = imod(run, span) if _prod(c.shape[:first]) > 1 else run
                total = iadd(total, imul(run, stride))
                stride *= _prod(shape[j:k + 1])
                k = j - 1
                continue
        total = iadd(total, imul(as_node(c), stride))
        stride *= shape[k]
        k -= 1
    return total
