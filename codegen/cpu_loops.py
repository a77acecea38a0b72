"""Loop structure of the CPU kernels: Kernel IR -> Kernel IR rewrites and choices made
for the CPU renderer (cpu.py) alone, where one thread walks the loops in order.

* An elementwise kernel (inner == 1) iterates a flat index o, and every broadcast,
  transpose or slice in it reads through div/mod of o. with_loops_split rewrites it as
  rows of its trailing dims so that this math leaves the inner loop.
* A reduction over leading axes (a bias gradient) has the reduced index r as the slow
  one in memory: is_column_kernel spots it, and cpu.py renders it with the loops swapped.
* A costly value (an exp...) that two levels compute, where the later one stores an output
  element by element: stash_costly_values has the earlier level store the value into that
  output already, and cpu.py has the later level read it back before overwriting it
  (cross-entropy's backward pass reuses its forward pass's exps instead of recomputing).
"""
from dataclasses import replace

from .affine import IndexSimplifier, substitute
from .kernel_ir import Kernel, Node, element_accesses, iter_nodes, uses_inner_index

COLUMN_CHUNK = 64  # columns one task of a column kernel sweeps (contiguous); 128 would split a 384-wide kernel 2:1 over two cores


_INDEX_OPS = {"iadd": lambda a, b: a + b, "imul": lambda a, b: a * b, "idiv": lambda a, b: a // max(b, 1),
              "imod": lambda a, b: a % max(b, 1), "add": lambda a, b: a + b, "sub": lambda a, b: a - b,
              "mul": lambda a, b: a * b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
              "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "and": lambda a, b: a and b}


def _index_value(node: Node, o: int, r: int):
    """An index expression's value at (o, r); None if it depends on data (a gather)."""
    op = node.op
    if op == "ivar":
        return o if node.attr[0] == "o" else r
    if op in ("iconst", "const"):
        return node.attr[0]
    args = [_index_value(x, o, r) for x in node.args]
    if None in args:
        return None
    if op in _INDEX_OPS:
        return _INDEX_OPS[op](*args)
    if op in ("convert", "to_value"):
        return args[0]
    if op == "to_index":  # clamped into [0, size)
        return min(max(int(args[0]), 0), node.attr[0] - 1)
    if op == "select":
        return args[1] if args[0] else args[2]
    return None


def is_column_kernel(kernel) -> bool:
    """A single-loop reduction over leading axes (a bias gradient, layer_norm's gain
    gradient) where more of the memory streams that move with both o and r step by 1 along
    o than along r: a row of the iteration space is then mostly strided in memory, so the
    loops are swapped (column chunks, r outside, o inside)."""
    if kernel.serial or kernel.levels != 1 or kernel.inner < 2 or kernel.outer < 2:
        return False
    if any(red.op not in ("sum", "max") for red in kernel.reductions):
        return False
    along_o = along_r = 0
    for idx in element_accesses(kernel):
        base, next_o, next_r = (_index_value(idx, o, r) for o, r in ((0, 0), (1, 0), (0, 1)))
        if None in (base, next_o, next_r):
            return False
        if next_o != base and next_r != base:  # varies with both: a stream over the space
            along_o += next_o - base == 1
            along_r += next_r - base == 1
    return along_o > along_r


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


def size_generic(kernel: Kernel):
    """(kernel, buffer) when the kernel's code does not depend on its length, which the
    buffer's length gives, else (kernel, None): an elementwise kernel whose every load and
    store is at its row o or at a constant index (its rows [lo, hi) are the call's
    arguments; LLVM hoists the values that are the same for every row), or a reduction to
    one value (outer 1) reading an input of the reduced length at r (its length is the
    argument n). The AdamW update of each parameter, and the sum of its squared gradient,
    then render alike for every parameter shape and compile once."""
    if kernel.serial or kernel.levels != 1:
        return kernel, None
    if kernel.inner == 1 and not kernel.reductions and all(st.level == 0 for st in kernel.stores):
        var, length = "o", kernel.outer
        candidates = [st.buffer for st in kernel.stores if st.index.op == "ivar"]
    elif kernel.outer == 1 and kernel.inner > 1 and all(st.level == -1 for st in kernel.stores):
        var, length = "r", kernel.inner
        candidates = [n.attr[0] for n in iter_nodes(*[r.value for r in kernel.reductions])
                      if n.op == "load" and n.args[0].op == "ivar"]
    else:
        return kernel, None
    for idx in element_accesses(kernel):
        if idx.op != "iconst" and not (idx.op == "ivar" and idx.attr[0] == var):
            return kernel, None
    sizes = {b.name: b.size for b in kernel.inputs + kernel.outputs}
    return kernel, next((b for b in candidates if sizes[b] == length), None)


COSTLY_OPS = frozenset({"exp", "tanh", "log", "sqrt", "rsqrt", "pow", "erf", "div"})


def is_costly(node: Node, memo: dict) -> bool:
    """Whether a value computes a transcendental or a division somewhere in it."""
    if node not in memo:
        memo[node] = node.op in COSTLY_OPS or any(is_costly(a, memo) for a in node.args)
    return memo[node]


def stash_costly_values(kernel: Kernel) -> Kernel:
    """The kernel with extra stores: for each loop store of an output (not read by the
    kernel, stored nowhere else in the loops) whose value contains a costly node that an
    earlier level also computes, that node stored into the output at the earlier level."""
    read = {b.name for b in kernel.inputs}
    dtypes = {b.name: b.dtype for b in kernel.outputs}
    by_r, costly = {}, {}

    def level_nodes(level):
        roots = [r.value for r in kernel.reductions if r.level == level]
        roots += [n for st in kernel.stores if st.level == level for n in (st.index, st.value)]
        return set(iter_nodes(*roots))

    nodes = [level_nodes(level) for level in range(kernel.levels)]
    store_count = {}  # in the loops (row stores, level -1, come after every loop)
    for st in kernel.stores:
        if st.level >= 0:
            store_count[st.buffer] = store_count.get(st.buffer, 0) + 1
    extra = []
    for st in kernel.stores:
        if (st.level < 1 or st.accumulate or st.buffer in read or store_count[st.buffer] != 1
                or not uses_inner_index(st.index, by_r)):
            continue
        later = {n for n in iter_nodes(st.value) if uses_inner_index(n, by_r) and is_costly(n, costly)
                 and n.dtype == dtypes[st.buffer]}
        for level in range(st.level):
            common = later & nodes[level]
            if common:
                value = max(common, key=lambda n: sum(1 for _ in iter_nodes(n)))
                extra.append(replace(st, value=value, level=level))
                break
    return replace(kernel, stores=extra + list(kernel.stores)) if extra else kernel
