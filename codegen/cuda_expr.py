"""Kernel IR Nodes -> CUDA C statements, one `const` temporary per distinct node.

Scopes nest as the generated loops do (kernel body > row o > inner loop r). A node is
emitted once, into the outermost scope that defines every symbol it depends on (the ivars
"o" and "r", and the finished reductions it reads), at that scope's current end: a node
that does not depend on r is computed before the r loop, not in it, and one that
depends on nothing is computed once per thread before any loop.
"""
from mlbh.tracer import dtypes

from . import cuda_types as ct
from .kernel_ir import Node, compute_dtype

_INFIX = {"iadd": "+", "imul": "*", "idiv": "/", "imod": "%", "mod": "%",
          "lt": "<", "le": "<=", "eq": "==", "ne": "!=", "and": "&&"}
_FLOAT_FN = {"exp": "exp", "log": "log", "tanh": "tanh", "sqrt": "sqrt", "rsqrt": "rsqrt", "erf": "erf",
             "pow": "pow"}
# results exact in the operands' precision (or rounded by their own rendering), so need no
# further rounding to float16/bfloat16
_EXACT = ("load", "const", "rowval", "select", "neg", "max", "min", "stop_gradient", "convert", "to_value")


def rowval_symbol(name: str) -> str:
    return "rowval:" + name


class Scope:
    """A block of generated statements; `defines` says which symbols are in scope here."""

    def __init__(self, parent=None, defines=(), indent=""):
        self.parent = parent
        self.defines = set(defines)
        self.indent = indent
        self.names = {}     # node -> temporary
        self.lines = []

    def child(self, defines=(), indent="    "):
        return Scope(self, defines, self.indent + indent)

    def emit(self, line: str):
        self.lines.append(self.indent + line)

    def lookup(self, node):
        scope = self
        while scope is not None:
            if node in scope.names:
                return scope.names[node]
            scope = scope.parent
        return None


class ExprRenderer:
    """Renders nodes of one kernel; temporaries are numbered across the whole kernel."""

    def __init__(self, buffer_names: dict, rowvals: dict):
        self.buffer_names = buffer_names   # buffer -> C identifier of its pointer parameter
        self.rowvals = rowvals             # reduction name -> C variable of its finished value
        self._symbols = {}
        self._count = 0

    def symbols(self, node: Node) -> frozenset:
        """The loop indices and finished reductions a node depends on."""
        found = self._symbols.get(node)
        if found is None:
            if node.op == "ivar":
                found = frozenset(node.attr)
            elif node.op == "rowval":
                found = frozenset((rowval_symbol(node.attr[0]),))
            else:
                found = frozenset().union(*(self.symbols(a) for a in node.args))
            self._symbols[node] = found
        return found

    def _home(self, node, scope):
        """The outermost scope (along scope's chain) where node can be computed."""
        needed = self.symbols(node)
        home = scope
        while home.parent is not None and not (home.defines & needed):
            home = home.parent
        if needed - _all_defines(home):
            raise ValueError(f"cuda: {node!r} needs {sorted(needed - _all_defines(home))}, "
                             "which are not defined where it is used")
        return home

    def expr(self, node: Node, scope: Scope) -> str:
        """A C expression for node's value, valid in `scope` (temporaries emitted as needed)."""
        op = node.op
        if op == "ivar":
            return node.attr[0]
        if op in ("iconst", "const"):
            text = ct.literal(node.attr[0], "int64" if op == "iconst" else node.dtype)
            return f"({text})" if text.startswith("-") else text
        if op == "rowval":
            return self.rowvals[node.attr[0]]
        if op == "stop_gradient":
            return self.expr(node.args[0], scope)
        found = scope.lookup(node)
        if found is not None:
            return found
        home = self._home(node, scope)
        args = [self.expr(a, home) for a in node.args]
        text = self._compute(node, args)
        if node.dtype in ct.LOW_PRECISION and op not in _EXACT:
            text = ct.round_to(text, node.dtype)
        if text in args:  # a conversion that changes nothing in the compute type
            home.names[node] = text
            return text
        name = f"t{self._count}"
        self._count += 1
        home.emit(f"const {ct.compute_ctype(node.dtype)} {name} = {text};")
        home.names[node] = name
        return name

    def _compute(self, node: Node, a: list) -> str:
        op, dtype = node.op, node.dtype
        operand = node.args[0].dtype if node.args else dtype
        cdt = compute_dtype(dtype)
        if op == "load":
            buf = self.buffer_names[node.attr[0]]
            return ct.widen(f"{buf}[{a[0]}]", dtype)
        if op in _INFIX:
            return f"({a[0]} {_INFIX[op]} {a[1]})"
        if op == "select":
            return f"({a[0]} ? {a[1]} : {a[2]})"
        if op == "convert":
            return ct.convert(a[0], operand, dtype)
        if op == "to_value":
            return ct.convert(a[0], "int64", dtype)
        if op == "to_index":
            return f"mlbh_clamp_index((long long)({a[0]}), {node.attr[0]}LL)"
        if op == "philox":
            return f"mlbh_philox({a[0]}, {a[1]}, (unsigned long long)({a[2]}))"
        if dtypes.is_float(cdt):
            return self._float_op(op, a, cdt)
        return self._int_op(op, a, cdt)

    @staticmethod
    def _float_op(op, a, cdt):
        if op in _FLOAT_FN:
            fn = _FLOAT_FN[op] + ("f" if cdt == "float32" else "")
            return f"{fn}({', '.join(a)})"
        if op == "neg":
            return f"(-{a[0]})"
        if op in ("add", "sub", "mul", "div"):
            return f"({a[0]} {'+-*/'[('add', 'sub', 'mul', 'div').index(op)]} {a[1]})"
        if op in ("max", "min"):
            return f"mlbh_f{op}({a[0]}, {a[1]})"
        raise NotImplementedError(f"cuda: no rendering of {op!r} on {cdt}")

    @staticmethod
    def _int_op(op, a, cdt):
        t = ct.ctype(cdt)
        if cdt == "bool":
            logical = {"add": "||", "max": "||", "mul": "&&", "min": "&&"}
            if op in logical:
                return f"({a[0]} {logical[op]} {a[1]})"
            raise NotImplementedError(f"cuda: no rendering of {op!r} on bool")
        if cdt == "uint16":  # C promotes unsigned short to (signed) int; compute unsigned instead
            a = [f"(unsigned int){x}" for x in a]
        if op == "neg":
            return f"({t})(-{a[0]})"
        if op in ("add", "sub", "mul"):
            return f"({t})({a[0]} {'+-*'[('add', 'sub', 'mul').index(op)]} {a[1]})"
        if op == "div":
            return f"mlbh_floordiv(({t}){a[0]}, ({t}){a[1]})"
        if op == "pow":
            return f"mlbh_ipow(({t}){a[0]}, ({t}){a[1]})"
        if op in ("max", "min"):
            cmp = ">" if op == "max" else "<"
            return f"({t})({a[0]} {cmp} {a[1]} ? {a[0]} : {a[1]})"
        raise NotImplementedError(f"cuda: no rendering of {op!r} on {cdt}")


def _all_defines(scope):
    out = set()
    while scope is not None:
        out |= scope.defines
        scope = scope.parent
    return out
