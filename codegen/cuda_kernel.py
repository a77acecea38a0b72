"""A generated CUDA kernel function: signature, stores, accumulations, and the loop of the
flat mapping (the row and col mappings' loops are in cuda_rows)."""
import re

from . import cuda_types as ct
from .cuda_expr import ExprRenderer, Scope
from .cuda_launch import LaunchShape
from .kernel_ir import Kernel

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
INDEX_SENTINEL = "9223372036854775807LL"  # argmax index before any element: loses every tie
# names the generated code uses itself: indices, temporaries, accumulators, shared arrays
_OWN_NAMES = re.compile(r"o|o_raw|r|i|tile|lane|warp|ox|ry|active|t\d+|(acc|arg|rv|red|redi)_\w*")


def identifier(name: str) -> str:
    """A C identifier for a kernel or buffer name (kept as is when already one)."""
    if _IDENTIFIER.fullmatch(name) and not name.startswith(("mlbh_", "__")):
        return name
    return "x_" + re.sub(r"[^A-Za-z0-9_]", "_", name)


def parameters(kernel: Kernel):
    """[(Buffer, written)] in parameter order: inputs, then outputs not already inputs."""
    written = {b.name for b in kernel.outputs} | {s.buffer for s in kernel.stores}
    out, seen = [], set()
    for buf in list(kernel.inputs) + list(kernel.outputs):
        if buf.name not in seen:
            seen.add(buf.name)
            out.append((buf, buf.name in written))
    return out


def _buffer_names(kernel):
    """Buffer -> C identifier of its pointer parameter, clear of the generated code's own names."""
    names = {}
    for buf, _ in parameters(kernel):
        name = identifier(buf.name)
        names[buf.name] = "buf_" + name if _OWN_NAMES.fullmatch(name) else name
    return names


def _rowval_dtypes(kernel):
    """Reduction name -> dtype its rowval nodes carry (the reduced array's dtype)."""
    found, seen = {}, set()
    stack = [n for s in kernel.stores for n in (s.index, s.value)] + [r.value for r in kernel.reductions]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "rowval":
            found[node.attr[0]] = node.dtype
        stack.extend(node.args)
    return found


class KernelWriter:
    def __init__(self, kernel: Kernel, shape: LaunchShape):
        self.kernel = kernel
        self.shape = shape
        self.names = _buffer_names(kernel)
        self.buffers = {b.name: b for b, _ in parameters(kernel)}
        self.rowvals = {r.name: "rv_" + identifier(r.name) for r in kernel.reductions}
        self.renderer = ExprRenderer(self.names, self.rowvals)
        self.rowval_dtypes = _rowval_dtypes(kernel)

    def uses(self, symbol) -> bool:
        """Whether any value or index of the kernel depends on `symbol` ("o", "r")."""
        k = self.kernel
        roots = [n for s in k.stores for n in (s.index, s.value)] + [r.value for r in k.reductions]
        return any(symbol in self.renderer.symbols(n) for n in roots)

    def signature(self, name: str, order=None) -> str:
        """The function's first line; `order`: [(Buffer, written)], default parameters()."""
        params = []
        for buf, written in order or parameters(self.kernel):
            const = "" if written else "const "
            params.append(f"{const}{ct.ctype(buf.dtype)}* __restrict__ {self.names[buf.name]}")
        return (f'extern "C" __global__ void __launch_bounds__({self.shape.block}) '
                f'{name}({", ".join(params)})')

    # ------------------------------------------------------------ stores, accumulation

    def store(self, store, scope):
        buf = self.buffers[store.buffer]
        index = self.renderer.expr(store.index, scope)
        value = self.renderer.expr(store.value, scope)
        value = ct.narrow(ct.convert(value, store.value.dtype, buf.dtype), buf.dtype)
        target = f"{self.names[store.buffer]}[{index}]"
        if store.accumulate:
            scope.emit(f"mlbh_atomic_add(&{target}, {value});")
        else:
            scope.emit(f"{target} = {value};")

    def accumulate(self, red, scope):
        """This thread's step of a reduction, at the current r."""
        value = ct.convert(self.renderer.expr(red.value, scope), red.value.dtype, red.dtype)
        n = identifier(red.name)
        if red.op == "sum":
            scope.emit(f"acc_{n} += {value};")
        elif red.op == "max":
            scope.emit(f"acc_{n} = mlbh_max_of(acc_{n}, ({ct.ctype(red.dtype)})({value}));")
        elif red.op == "argmax":
            scope.emit(f"mlbh_argmax_step(acc_{n}, arg_{n}, ({ct.ctype(red.dtype)})({value}), r);")
        else:
            raise NotImplementedError(f"cuda: reduction op {red.op!r}")

    # ------------------------------------------------------------------------- flat

    def flat_loop(self, root: Scope) -> list:
        """Lines of the flat mapping's element loop; hoisted values go into `root`."""
        k, shape = self.kernel, self.shape
        loop = root.child(defines=("o", "r"))
        uses_o, uses_r = self.uses("o"), self.uses("r")
        if uses_o:
            loop.emit("const long long o = i;" if k.inner == 1 else f"const long long o = i / {k.inner}LL;")
        if uses_r:
            r = "0" if k.inner == 1 else f"i - o * {k.inner}LL" if uses_o else f"i % {k.inner}LL"
            loop.emit(f"const long long r = {r};")
        for level in range(k.levels):
            for store in k.stores:
                if store.level == level:
                    self.store(store, loop)
        start = f"(long long)blockIdx.x * {shape.block}LL + threadIdx.x"
        if shape.loops_over_grid:
            head = (f"for (long long i = {start}; i < {shape.elements}LL; "
                    f"i += (long long)gridDim.x * {shape.block}LL) {{")
            return [root.indent + head] + loop.lines + [root.indent + "}"]
        head = [root.indent + f"const long long i = {start};",
                root.indent + f"if (i < {shape.elements}LL) {{"]
        return head + loop.lines + [root.indent + "}"]
