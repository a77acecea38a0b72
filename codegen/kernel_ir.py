"""The loop-level kernel IR that both renderers (CUDA C, LLVM IR) consume.

A Kernel is a "row kernel": for every outer index o in [0, outer) it runs one or more
loops over the inner index r in [0, inner); a plain elementwise kernel has inner == 1
and no reductions.

    for o in range(outer):                      # GPU: one block (or one thread) per o
        for level in range(levels):             # loops separated by reduction barriers
            for r in range(inner):              # GPU: threads stride over r
                acc_k  <op>=  value_k(o, r)     # reductions of this level
                buf[index(o, r)] = value(o, r)  # element stores of this level
            rowval_k = finish(acc_k)            # GPU: block-wide reduce, broadcast
        buf[index(o)] = value(o)                # row stores, after every loop

Values are a DAG of Nodes (hashable, so identical subexpressions are rendered once):

  op            args                     attr                  meaning
  ------------  -----------------------  --------------------  ------------------------------
  "ivar"        ()                       ("o",) / ("r",)       the loop index (int64)
  "iconst"      ()                       (int,)                integer constant (int64)
  "iadd" "imul" "idiv" "imod"  (a, b)    ()                    int64 index arithmetic (a,b >= 0)
  "const"       ()                       (python value,)       a scalar of `dtype`
  "load"        (index,)                 (buffer_name,)        buffer[index], converted to the
                                                               compute dtype of `dtype`
  "rowval"      ()                       (reduction_name,)     a finished reduction of this row
  "to_value"    (index,)                 ()                    an index as a value of `dtype` (iota)
  "to_index"    (value,)                 (limit,)              a value as an index, clamped into
                                                               [0, limit) (gather)
  "philox"      (k0, k1, counter)        ()                    Philox4x32-10 first word (uint32)
  primitive     operands                 (params...)           neg exp log tanh sqrt rsqrt erf
                                                               add sub mul div max min pow
                                                               lt le eq ne select convert
                                                               stop_gradient
  "and"         (a, b)                   ()                    bool conjunction (pad masks)
  "sub" "div" "mod" "max" on int64 index operands (a, b >= 0 for div/mod)    (pad, concatenate)

Dtypes are mlbh dtype names. Arithmetic on float16/bfloat16 happens in float32
(`compute_dtype`); loads widen and stores narrow. Reductions accumulate in float32
(float64 for float64 data).
"""
from dataclasses import dataclass, field, replace

from mlbh.tracer import dtypes


@dataclass(frozen=True)
class Node:
    op: str
    args: tuple = ()
    dtype: str = "int64"
    attr: tuple = ()

    # Nodes are deep, shared trees used as dict keys everywhere (CSE, renderers): hash
    # once per node instead of re-walking the tree on every lookup.
    def __hash__(self):
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.op, self.args, self.dtype, self.attr))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self):  # the cached hash is per process (str hashes are salted)
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, Node) or hash(self) != hash(other):
            return False
        return (self.op, self.args, self.dtype, self.attr) == (other.op, other.args, other.dtype, other.attr)

    def __repr__(self):
        inner = ", ".join(map(repr, self.args))
        extra = ", ".join(map(repr, self.attr))
        return f"{self.op}[{self.dtype}]({inner}{'; ' + extra if extra else ''})"


def compute_dtype(dtype: str) -> str:
    """The dtype arithmetic on values of `dtype` is done in."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def accumulator_dtype(dtype: str) -> str:
    return "float64" if dtype == "float64" else "float32" if dtypes.is_float(dtype) else (
        "int64" if dtype in ("int64", "uint32") else "int32")


@dataclass
class Buffer:
    """A contiguous array the kernel reads or writes (flat indexing)."""
    name: str
    shape: tuple
    dtype: str

    @property
    def size(self):
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Reduction:
    name: str          # referenced by "rowval" nodes and by a row store
    op: str            # "sum" | "max" | "argmax"
    value: Node        # per-(o, r) value reduced over r
    level: int         # which inner loop computes it
    dtype: str         # accumulator dtype (argmax: of the max value)
    index_dtype: str = "int32"  # argmax only


@dataclass
class Store:
    buffer: str
    index: Node        # flat element index into the buffer
    value: Node
    level: int         # inner loop it runs in; -1 = a row store after all loops
    accumulate: bool = False  # buffer[index] += value (scatter_add; atomic on GPU)


@dataclass
class Kernel:
    name: str
    outer: int
    inner: int
    inputs: list               # [Buffer] read
    outputs: list              # [Buffer] written
    reductions: list = field(default_factory=list)
    stores: list = field(default_factory=list)
    levels: int = 1
    serial: bool = False       # accumulate stores: CPU must not run rows in parallel
    sources: list = field(default_factory=list)  # "prim @ file:line (scope)" lines it fuses
    outer_shape: tuple = ()
    inner_shape: tuple = ()

    def describe(self) -> str:
        """A readable, printable form of the kernel (used in dumps)."""
        from .kernel_printer import format_kernel
        return format_kernel(self)


def iter_nodes(*roots):
    """Every distinct Node reachable from roots, each once."""
    seen, stack = set(), list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(node.args)


def uses_inner_index(node: Node, memo: dict) -> bool:
    """Whether node depends on the inner loop index r (memo: node -> answer, shared)."""
    if node not in memo:
        memo[node] = (node.op == "ivar" and node.attr[0] == "r") or any(uses_inner_index(a, memo)
                                                                       for a in node.args)
    return memo[node]


def replace_leaves(node: Node, replacement, memo: dict) -> Node:
    """node with every leaf for which replacement(leaf) is a Node replaced by it (memo:
    node -> result, shared across calls with the same replacement)."""
    if node in memo:
        return memo[node]
    if not node.args:
        out = replacement(node) or node
    else:
        out = Node(node.op, tuple(replace_leaves(a, replacement, memo) for a in node.args), node.dtype, node.attr)
    memo[node] = out
    return out


def element_accesses(kernel: Kernel) -> list:
    """Index Nodes of every load and element store inside the kernel's r loops."""
    roots = [r.value for r in kernel.reductions]
    stores = [s for s in kernel.stores if s.level >= 0]
    roots += [n for s in stores for n in (s.value, s.index)]
    loads = [n.args[0] for n in iter_nodes(*roots) if n.op == "load"]
    return loads + [s.index for s in stores]


def stores_in_place(kernel: Kernel, aliases: dict) -> Kernel:
    """The kernel with each store to an output named in `aliases` (output name -> the input
    Buffer it overwrites in place) made to the input itself. The memory is the same at run
    time either way, but a compiler that sees one array read and written at the same
    element needs no overlap checks between two (LLVM would otherwise run the in-place
    AdamW update unvectorised), and CUDA's __restrict__ parameters never alias."""
    if not any(b.name in aliases for b in kernel.outputs):
        return kernel
    outputs = [aliases.get(b.name, b) for b in kernel.outputs]
    stores = [replace(s, buffer=aliases[s.buffer].name) if s.buffer in aliases else s for s in kernel.stores]
    return replace(kernel, outputs=outputs, stores=stores)
