"""Loop structure of the CPU kernels: Kernel IR -> Kernel IR rewrites and choices made
for the numba renderer (cpu.py) alone, where one thread walks the loops in order.

* An elementwise kernel (inner == 1) iterates a flat index o, and every broadcast,
  transpose or slice in it reads through div/mod of o. with_loops_split rewrites it as
  rows of its trailing dims so that this math leaves the inner loop.
* A reduction over leading axes (a bias gradient) has the reduced index r as the slow
  one in memory: is_column_kernel spots it, and cpu.py renders it with the loops swapped.
"""
from dataclasses import replace

from .affine import IndexSimplifier, substitute
from .kernel_ir import Kernel, Node, element_accesses

COLUMN_CHUNK = 128  # columns one task of a column kernel sweeps (contiguous in memory)


def _index_value(node: Node, o: int, r: int):
    """An index expression's value at (o, r); None if it depends on data (a gather)."""
    op = node.op
    if op == "ivar":
        return o if node.attr[0] == "o" else r
    if op == "iconst":
        return node.attr[0]
    if op in ("iadd", "imul", "idiv", "imod"):
        a, b = (_index_value(x, o, r) for x in node.args)
        if a is None or b is None:
            return None
        return {"iadd": a + b, "imul": a * b, "idiv": a // max(b, 1), "imod": a % max(b, 1)}[op]
    return None


def is_column_kernel(kernel) -> bool:
    """A single-loop reduction over leading axes (a bias gradient, layer_norm's gain
    gradient): every access that moves with both o and r steps by 1 along o and by more
    along r, so a row of the iteration space is strided in memory: swap the loops."""
    if kernel.serial or kernel.levels != 1 or kernel.inner < 2 or kernel.outer < 2:
        return False
    if any(red.op not in ("sum", "max") for red in kernel.reductions):
        return False
    strides = []
    for idx in element_accesses(kernel):
        base, next_o, next_r = (_index_value(idx, o, r) for o, r in ((0, 0), (1, 0), (0, 1)))
        if None in (base, next_o, next_r):
            return False
        if next_o != base and next_r != base:  # varies with both: a stream over the space
            strides.append((next_o - base, next_r - base))
    return bool(strides) and all(so == 1 and sr > 1 for so, sr in strides)


SPLIT_MIN_INNER = 16  # an elementwise loop is split so that its inner part is at least this long


def with_loops_split(kernel: Kernel) -> Kernel:
    """An elementwise kernel as an equivalent row kernel: its flat index o becomes
    o * L + r over its trailing dims (L >= SPLIT_MIN_INNER elements), so that the div/mod
    index math of broadcasts, transposes and slices moves out of the now inner r loop (see
    affine.py) and that loop can vectorize. Other kernels come back with their index math
    simplified for their loop ranges."""
    if (kernel.inner != 1 or kernel.reductions or kernel.serial
            or any(st.level != 0 or st.accumulate for st in kernel.stores)):
        return _with_index_math_simplified(kernel)
    split = 1
    for d in reversed(kernel.outer_shape):
        split *= d
        if split >= SPLIT_MIN_INNER:
            break
    rows = kernel.outer // split
    if rows < 2 or kernel.outer % split:
        return _with_index_math_simplified(kernel)
    flat = Node("iadd", (Node("imul", (Node("ivar", (), "int64", ("o",)), Node("iconst", (), "int64", (split,))),
                                   "int64"), Node("ivar", (), "int64", ("r",))), "int64")
    simplify = IndexSimplifier({"o": (0, rows - 1), "r": (0, split - 1)})
    memo = {}
    stores = [replace(st, index=simplify(substitute(st.index, "o", flat, memo)),
                      value=simplify(substitute(st.value, "o", flat, memo))) for st in kernel.stores]
    return replace(kernel, outer=rows, inner=split, stores=stores)


def _with_index_math_simplified(kernel: Kernel) -> Kernel:
    simplify = IndexSimplifier({"o": (0, kernel.outer - 1), "r": (0, kernel.inner - 1)})
    stores = [replace(st, index=simplify(st.index), value=simplify(st.value)) for st in kernel.stores]
    reductions = [replace(red, value=simplify(red.value)) for red in kernel.reductions]
    return replace(kernel, stores=stores, reductions=reductions)
