"""Which loop index walks memory contiguously in a kernel: o (columns) or r (rows).

A row kernel's threads stride over r. When its loads and stores step by 1 along r (softmax,
layer_norm over the last axis) consecutive threads touch consecutive addresses. When they
step by 1 along o instead (bias gradients: a sum over the leading axes, buffer[o + r * C]),
the same mapping makes every warp access 32 different rows; such a kernel is better run
with consecutive threads on consecutive o ("col" mapping, cuda_launch).

Index nodes are evaluated with Python ints at sample points; an index that depends on
loaded data (a gather) is not classified.
"""
from .kernel_ir import Kernel, Node, element_accesses


_INT_OPS = {"iadd": lambda a, b: a + b, "imul": lambda a, b: a * b, "sub": lambda a, b: a - b,
            "idiv": lambda a, b: a // b, "div": lambda a, b: a // b, "imod": lambda a, b: a % b,
            "mod": lambda a, b: a % b, "max": max}


class _Opaque(Exception):
    """The index depends on something other than o, r and constants."""


def evaluate_index(node: Node, o: int, r: int, memo=None) -> int:
    memo = {} if memo is None else memo
    if node in memo:
        return memo[node]
    op = node.op
    if op == "ivar":
        value = o if node.attr[0] == "o" else r
    elif op == "iconst":
        value = node.attr[0]
    elif op in ("iadd", "imul", "idiv", "imod", "sub", "div", "mod", "max") and node.dtype == "int64":
        a, b = (evaluate_index(x, o, r, memo) for x in node.args)
        if op in ("idiv", "div", "imod", "mod") and b == 0:
            raise _Opaque
        value = _INT_OPS[op](a, b)
    elif op == "to_index":
        value = min(max(evaluate_index(node.args[0], o, r, memo), 0), node.attr[0] - 1)
    else:
        raise _Opaque
    memo[node] = value
    return value


def _steps(index: Node, kernel: Kernel):
    """(step along o, step along r), the same at two sample points, or None."""
    points = {(0, 0), (kernel.outer // 2, kernel.inner // 2)}
    steps = set()
    try:
        for o, r in points:
            base = evaluate_index(index, o, r)
            steps.add((evaluate_index(index, o + 1, r) - base, evaluate_index(index, o, r + 1) - base))
    except _Opaque:
        return None
    return steps.pop() if len(steps) == 1 else None


def contiguous_along_o(kernel: Kernel) -> bool:
    """Whether more of the r-loop accesses are contiguous along o than along r."""
    if kernel.outer < 2 or kernel.inner < 2:
        return False
    along_o = along_r = 0
    for index in element_accesses(kernel):
        steps = _steps(index, kernel)
        if steps is None:
            continue
        d_o, d_r = steps
        if d_r == 1:
            along_r += 1
        elif d_o == 1 and d_r != 0:
            along_o += 1
    return along_o > along_r
