"""Sums that pick one element become direct reads; stores that add one element, a fix-up.

Cross-entropy takes the target's log-probability as sum_r where(r == t, logp[r], 0) (the
differentiable form, whose gradient fuses into an elementwise kernel); its backward has
the same shape. As a reduction that is a whole pass over the row for one element. With t
independent of r, the sum is exactly

    sum_r select(r == t, v(r), 0)  =  select(0 <= t < inner, v(t), 0)

(every other term is +0), so the reduction is dropped and its row value becomes that
expression: one load instead of a pass. A level left with nothing to do is removed.

The backward of that pick stores select(r == t, c, 0) + v(r) over the row: a compare and
select per element that on the CPU costs more than the rest of the pass (LLVM vectorises
it over 64-bit lanes). split_one_hot_stores (the CPU renderer's) stores 0 + v(r) in the
loop (the same value wherever r != t) and then, once per row, the element at t again
with select(0 <= t < inner, c, 0) + v(t), at t clamped into the row: exactly the values
of the original store.
"""
from dataclasses import replace

from mlbh.tracer import dtypes

from .affine import substitute
from .kernel_ir import Kernel, Node, replace_leaves, uses_inner_index


def fold_one_hot_sums(kernel: Kernel) -> Kernel:
    folded = {}
    for red in kernel.reductions:
        picked = _picked_value(red, kernel.inner) if red.op == "sum" else None
        if picked is not None:
            folded[red.name] = picked
    if not folded:
        return kernel
    reductions = [r for r in kernel.reductions if r.name not in folded]
    levels = sorted({r.level for r in reductions} | {s.level for s in kernel.stores if s.level >= 0})
    if not levels:
        return kernel
    renumber = {old: new for new, old in enumerate(levels)}
    memo = {}

    def rowval(leaf):  # a folded reduction's value, in the dtype its readers expect
        if leaf.op != "rowval" or leaf.attr[0] not in folded:
            return None
        value = folded[leaf.attr[0]]
        return value if value.dtype == leaf.dtype else Node("convert", (value,), leaf.dtype)

    reductions = [replace(r, value=replace_leaves(r.value, rowval, memo), level=renumber[r.level])
                  for r in reductions]
    stores = [replace(s, index=replace_leaves(s.index, rowval, memo), value=replace_leaves(s.value, rowval, memo),
                      level=renumber.get(s.level, -1)) for s in kernel.stores]
    return replace(kernel, reductions=reductions, stores=stores, levels=len(levels))


def _picked_value(red, inner):
    """The row value of a one-hot sum reduction, or None if it is not one."""
    value, negate = red.value, False
    if value.op == "neg":
        value, negate = value.args[0], True
    parts = _one_hot_select(value)
    if parts is None:
        return None
    target, picked, zero = parts
    at = Node("to_index", (target,), "int64", (inner,))
    out = Node("select", (_in_range(target, inner), substitute(picked, "r", at), zero), picked.dtype)
    if negate:
        out = Node("neg", (out,), out.dtype)
    return out if out.dtype == red.dtype else Node("convert", (out,), red.dtype)


def _one_hot_select(node):
    """(t, v, zero) when node is select(r == t, v, 0) with t an integer independent of r."""
    if node.op != "select" or node.args[0].op != "eq":
        return None
    cond, picked, zero = node.args
    if zero.op != "const" or zero.attr[0] != 0:
        return None
    for index_side, target in (cond.args, cond.args[::-1]):
        if _is_inner_index(index_side) and not uses_inner_index(target, {}) and dtypes.is_int(target.dtype):
            return target, picked, zero
    return None


def _is_inner_index(node):
    """r itself, or r as an integer value (an iota along the reduced axis)."""
    while node.op in ("to_value", "convert") and dtypes.is_int(node.dtype):
        node = node.args[0]
    return node.op == "ivar" and node.attr[0] == "r"


def split_one_hot_stores(kernel: Kernel) -> Kernel:
    extra, stores, memo = [], [], {}
    for st in kernel.stores:
        parts = _one_hot_add(st.value) if st.level >= 0 and not st.accumulate else None
        if parts is None or not uses_inner_index(st.index, memo):
            stores.append(st)
            continue
        target, picked, zero, dense, picked_first = parts
        at = Node("to_index", (target,), "int64", (kernel.inner,))
        in_range = _in_range(target, kernel.inner)
        fix = (Node("select", (in_range, picked, zero), picked.dtype), substitute(dense, "r", at))
        stores.append(replace(st, value=Node("add", (zero, dense) if picked_first else (dense, zero), st.value.dtype)))
        extra.append(replace(st, index=substitute(st.index, "r", at), level=-1,
                             value=Node("add", fix if picked_first else fix[::-1], st.value.dtype)))
    return replace(kernel, stores=stores + extra) if extra else kernel


def _one_hot_add(value):
    """(t, c, zero, v, select first) when value is select(r == t, c, 0) + v(r) (either
    order) with t and c independent of r, else None."""
    if value.op != "add":
        return None
    for i in (0, 1):
        parts = _one_hot_select(value.args[i])
        if parts is not None and not uses_inner_index(parts[1], {}):
            return (*parts, value.args[1 - i], i == 0)
    return None


def _in_range(target, inner):
    return Node("and", (Node("le", (Node("const", (), target.dtype, (0,)), target), "bool"),
                        Node("lt", (target, Node("const", (), target.dtype, (inner,))), "bool")), "bool")
