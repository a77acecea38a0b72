"""codegen/affine.py: simplified index expressions equal the originals at every point of
the loop ranges (exhaustively, for random expressions of the kinds fusion builds)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbh.codegen import indexing as ix
from mlbh.codegen.affine import IndexSimplifier, substitute


def evaluate(node, o, r):
    if node.op == "ivar":
        return o if node.attr[0] == "o" else r
    if node.op == "iconst":
        return node.attr[0]
    a, b = (evaluate(x, o, r) for x in node.args)
    if node.op == "iadd":
        return a + b
    if node.op == "imul":
        return a * b
    return a // b if node.op == "idiv" else a % b


def count_ops(node, op):
    return (node.op == op) + sum(count_ops(a, op) for a in node.args)


@st.composite
def loop_index_expressions(draw):
    """The flat index of one element of a transposed / sliced / broadcast view, as
    fusion writes it for a kernel whose flat loop index o is split as o * split + r."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    split_at = draw(st.integers(0, len(shape) - 1))
    split = int(np.prod(shape[split_at:], dtype=np.int64))
    rows = int(np.prod(shape[:split_at], dtype=np.int64))
    flat = ix.iadd(ix.imul(ix.ivar("o"), split), ix.ivar("r"))
    comps = ix.unravel(flat, shape)
    perm = draw(st.permutations(range(len(shape))))
    strides = [draw(st.integers(1, 3)) for _ in shape]
    moved = [ix.iadd(ix.imul(ix.as_node(comps[p]), k), ix.iconst(draw(st.integers(0, 2))))
             for p, k in zip(perm, strides)]
    view_shape = tuple(shape[p] * k + 3 for p, k in zip(perm, strides))
    return ix.ravel(tuple(moved), view_shape), rows, split


@settings(max_examples=150, deadline=None)
@given(case=loop_index_expressions())
def test_simplified_index_equals_original_everywhere(case):
    node, rows, split = case
    simple = IndexSimplifier({"o": (0, rows - 1), "r": (0, split - 1)})(node)
    for o in range(rows):
        for r in range(split):
            assert evaluate(simple, o, r) == evaluate(node, o, r), (node, simple, o, r)


def test_row_and_column_math_leaves_the_inner_index():
    """o = oh * 32 + ol over a (8, 4, 128, 32) space: the last axis is ol, every other
    axis depends on oh alone."""
    flat = ix.iadd(ix.imul(ix.ivar("o"), 32), ix.ivar("r"))
    comps = [ix.as_node(c) for c in ix.unravel(flat, (8, 4, 128, 32))]
    simplify = IndexSimplifier({"o": (0, 8 * 4 * 128 - 1), "r": (0, 31)})
    assert simplify(comps[3]) == ix.ivar("r")
    for c in comps[:3]:
        s = simplify(c)
        assert "'r'" not in repr(s), s
    assert count_ops(simplify(comps[2]), "idiv") == 0  # (o*32 + r) // 32 % 128 == o % 128


def test_substitute_replaces_only_the_named_variable():
    node = ix.iadd(ix.imul(ix.ivar("o"), 3), ix.ivar("r"))
    out = substitute(node, "o", ix.iconst(2))
    assert evaluate(out, 99, 5) == 11
