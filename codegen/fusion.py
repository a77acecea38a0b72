"""Fusion: partition a prepared Graph into kernels and library calls.

1. Decide which values are materialized (live in memory): graph inputs and outputs,
   constants, reduction results, dot_general operands and results, scatter results, and
   values read more than once whose recomputation would cost RECOMPUTE_LIMIT ops or more
   (values built from iota / full alone are never stored). Everything else is inlined
   into its readers as an expression; movement ops become index arithmetic.
2. Every materialized value computed by fusible eqns is a "root". Roots are grouped into
   row kernels: roots over the same iteration space share loops, and an elementwise root
   that reads a reduction of its own row (softmax, layer_norm, cross-entropy, their
   backward passes) joins the reduction's kernel in a later loop.
3. dot_general becomes a library call (numpy BLAS / cuBLAS) on views of its operands.
4. Stores that no later step reads are dropped (dead_stores.py).
"""
import math
from dataclasses import dataclass, field

from mlbh.tracer.ir import Graph

from . import indexing as ix
from .dead_stores import drop_dead_stores
from .kernel_ir import Buffer, Kernel, Node, Reduction, Store, accumulator_dtype
from .one_hot_sums import fold_one_hot_sums

REDUCTIONS = ("reduce_sum", "reduce_max", "argmax")
CHEAP = ("broadcast_in_dim", "reshape", "transpose", "slice", "full", "iota", "convert", "neg",
         "stop_gradient")
VIEW_OPS = ("transpose", "reshape")
ELEMENTWISE = ("neg", "exp", "log", "tanh", "sqrt", "rsqrt", "erf", "add", "sub", "mul", "div",
               "max", "min", "pow", "lt", "le", "eq", "ne", "select", "convert")


# A value read more than once is stored only if recomputing it where it is read costs at
# least RECOMPUTE_LIMIT ops (a libm call counts as that many): shifted logits, centered
# activations or a GELU's polynomial are recomputed, exp / tanh results are stored.
RECOMPUTE_LIMIT = 8
LIBM_CALLS = ("exp", "log", "tanh", "erf", "pow", "random_bits")


class Unfusable(Exception):
    """A root cannot join a kernel (it would read a same-kernel value at another index)."""


@dataclass
class DotCall:
    """out = dot_general(view(a), view(b)); a view is a chain of transposes/reshapes of a buffer."""
    out: str
    a: str
    b: str
    a_view: list
    b_view: list
    dimension_numbers: tuple
    source: str = ""


@dataclass
class Program:
    graph: Graph
    buffers: dict                 # name -> Buffer
    inputs: list                  # buffer names of graph inputs, in order
    outputs: list                 # buffer names of graph outputs, in order
    constants: dict               # buffer name -> numpy array
    steps: list                   # Kernel | DotCall, in execution order
    var_names: dict = field(default_factory=dict)
    cache_key: str | None = None  # its program_cache key, once it came from the cache or went in

    @property
    def kernels(self):
        return [s for s in self.steps if isinstance(s, Kernel)]

    def intermediates(self):
        fixed = set(self.inputs) | set(self.outputs) | set(self.constants)
        return [n for n in self.buffers if n not in fixed]


@dataclass
class _Root:
    var: object
    kind: str          # point | reduce | scatter
    eqn: object
    space: tuple       # iteration space: the shape iterated
    axes: tuple = ()   # reduced axes (reduce only)


@dataclass
class _Group:
    roots: list
    space: tuple
    axes: tuple
    index: int
    scatter: bool = False
    builder: object = None   # ExprBuilder kept across merge attempts (see _try_join)


def _effective_uses(graph, materialized_hint):
    """How many times each value would be computed if inlined: cheap ops pass uses through,
    a slice passes on the fraction of elements it reads (the three slices that split a
    packed QKV projection count as one use, not three)."""
    uses = {v: 0 for v in graph.inputs}
    for v in graph.outputs:
        uses[v] = uses.get(v, 0) + 1
    for e in reversed(graph.eqns):
        out = e.outputs[0]
        weight = 1
        if e.prim in CHEAP and out not in materialized_hint:
            weight = uses.get(out, 0)
        if e.prim == "slice":
            weight *= out.size / max(e.inputs[0].size, 1)
        for v in e.inputs:
            uses[v] = uses.get(v, 0) + weight
    return uses


def _free_values(graph):
    """Values that read no memory at all (iota and full, and elementwise math of such values,
    like a causal mask): recomputing them wherever they are read is cheaper than a load."""
    free = set()
    for e in graph.eqns:
        if e.prim in ("iota", "full") or (e.prim in ELEMENTWISE + CHEAP and e.inputs
                                          and all(v in free for v in e.inputs)):
            free.update(e.outputs)
    return free


def _view_chain(var, producers, materialized):
    """For a dot operand: (base var, [(op, params)...]) if it is a transpose/reshape chain of a
    materialized value, else (var, [])."""
    chain = []
    v = var
    while v not in materialized and v in producers and producers[v].prim in VIEW_OPS:
        e = producers[v]
        chain.append((e.prim, dict(e.params)))
        v = e.inputs[0]
    if v in materialized or v not in producers or producers[v].prim not in VIEW_OPS:
        return v, chain[::-1]
    return var, []


def _materialized(graph):
    producers = graph.producers()
    m = set(graph.inputs) | set(graph.outputs)
    for e in graph.eqns:
        if e.prim in REDUCTIONS + ("scatter_add", "constant", "dot_general"):
            m.update(e.outputs)
    for e in graph.eqns:
        if e.prim == "dot_general":
            for v in e.inputs:
                base, _ = _view_chain(v, producers, m)
                m.add(base)
    uses = _effective_uses(graph, m)
    free = _free_values(graph)
    cost = {}  # ops to recompute a value inline from materialized ones (shared subtrees counted twice)
    streams = {}  # up to 2 stored arrays, each as large as the value, that recomputing it loads
    for e in graph.eqns:
        v = e.outputs[0]
        if v in m or v in free:
            cost[v] = 0
            continue
        own = 0 if e.prim in CHEAP else RECOMPUTE_LIMIT if e.prim in LIBM_CALLS else 1
        cost[v] = own + sum(cost.get(x, 0) for x in e.inputs)
        loaded = set()
        for x in e.inputs:
            loaded |= {x} if x in m and x not in free else streams.get(x, set())
        streams[v] = set(list(s for s in loaded if s.size >= v.size)[:2])
        # stored once and read back, v costs 1 + uses streams; recomputed, uses * len(streams)
        if uses.get(v, 0) >= 2 and e.prim not in CHEAP and (cost[v] >= RECOMPUTE_LIMIT or len(streams[v]) >= 2):
            m.add(v)
            cost[v] = 0
    return m, producers


class _Names:
    def __init__(self):
        self.names = {}

    def __call__(self, var):
        if var not in self.names:
            self.names[var] = f"b{len(self.names)}"
        return self.names[var]


class ExprBuilder:
    """Builds the Node for a value at a multi-index, inside one kernel group."""

    def __init__(self, plan, group):
        self.plan = plan
        self.group = group
        self.memo = {}
        self.reads = set()
        self.touches = set()  # group roots the built expressions use, and arrays they load at varying indices
        self.outer_shape = tuple(d for i, d in enumerate(group.space) if i not in group.axes)
        self.inner_shape = tuple(group.space[i] for i in group.axes)
        self.outer = ix.unravel(ix.ivar("o"), self.outer_shape)
        self.inner = ix.unravel(ix.ivar("r"), self.inner_shape)
        self.in_group = {r.var: r for r in group.roots}

    def domain(self):
        """The multi-index of one element of the iteration space, split into (o, r)."""
        comps, oi, ri = [], 0, 0
        for i in range(len(self.group.space)):
            if i in self.group.axes:
                comps.append(self.inner[ri]); ri += 1
            else:
                comps.append(self.outer[oi]); oi += 1
        return tuple(comps)

    def place(self, shape):
        """Where a value of `shape` made by this kernel sits per iteration: the domain if it
        spans the iteration space, the row if it has the space's shape without the reduced
        axes (dropped, or kept as size 1: a keepdims statistic); None if neither."""
        if shape == self.group.space:
            return self.domain()
        if shape == self.outer_shape:
            return self.outer
        if shape == _keepdims_shape(self.group):
            return tuple(ix.iconst(0) if i in self.group.axes else c for i, c in enumerate(self.domain()))
        return None

    def value(self, var, comps):
        """The Node of var at comps. Every buffer its expression loads is added to self.reads
        (and what it touches to self.touches), also when the Node comes from the memo:
        a root tried and rejected earlier may have built it, and the next root's reads must
        still list those buffers."""
        key = (var, comps)
        if key not in self.memo:
            enclosing, self.reads = self.reads, set()
            enclosing_touches, self.touches = self.touches, set()
            try:
                self.memo[key] = (self._value(var, tuple(comps)), frozenset(self.reads), frozenset(self.touches))
            finally:
                self.reads = enclosing | self.reads
                self.touches = enclosing_touches | self.touches
        node, reads, touches = self.memo[key]
        self.reads |= reads
        self.touches |= touches
        return node

    def _value(self, var, comps):
        plan = self.plan
        if var in plan.materialized:
            root = self.in_group.get(var)
            if root is None:
                self.reads.add(var)
                index = ix.ravel(comps, var.shape)
                if index.op != "iconst":
                    self.touches.add(var)
                return Node("load", (index,), var.dtype, (plan.names(var),))
            self.touches.add(var)
            at = self.outer if root.kind == "reduce" else self.place(var.shape)
            # only the element (or row) this iteration makes can be read back in the same kernel
            if at is None or ix.ravel(comps, var.shape) != ix.ravel(at, var.shape):
                raise Unfusable
            if root.kind == "reduce":
                return Node("rowval", (), var.dtype, (plan.names(var),))
        return self.compute(plan.producers[var], var, comps)

    def compute(self, e, var, comps):
        p, prim = e.params, e.prim
        if prim in ELEMENTWISE:
            args = tuple(self.value(v, comps) for v in e.inputs)
            return Node(prim, args, var.dtype, (p["dtype"],) if prim == "convert" else ())
        if prim == "stop_gradient":
            return self.value(e.inputs[0], comps)
        if prim == "full":
            return Node("const", (), var.dtype, (p["value"],))
        if prim == "iota":
            return Node("to_value", (ix.as_node(comps[p["dimension"]]),), var.dtype)
        if prim == "broadcast_in_dim":
            x = e.inputs[0]
            inner = tuple(ix.iconst(0) if x.shape[i] == 1 else comps[d]
                          for i, d in enumerate(p["broadcast_dimensions"]))
            return self.value(x, inner)
        if prim == "transpose":
            perm = p["permutation"]
            inner = [None] * len(perm)
            for j, axis in enumerate(perm):
                inner[axis] = comps[j]
            return self.value(e.inputs[0], tuple(inner))
        if prim == "reshape":
            x = e.inputs[0]
            return self.value(x, ix.unravel(ix.ravel(comps, var.shape), x.shape))
        if prim == "slice":
            inner = tuple(ix.iadd(ix.imul(ix.as_node(c), st), ix.iconst(s))
                          for c, s, st in zip(comps, p["start_indices"], p["strides"]))
            return self.value(e.inputs[0], inner)
        if prim == "pad":
            return self._pad(e, var, comps)
        if prim == "concatenate":
            return self._concatenate(e, var, comps)
        if prim == "gather":
            operand, indices = e.inputs
            axis, k = p["axis"], len(indices.shape)
            picked = self.value(indices, comps[axis:axis + k])
            at = Node("to_index", (picked,), "int64", (operand.shape[axis],))
            return self.value(operand, comps[:axis] + (at,) + comps[axis + k:])
        if prim == "random_bits":
            key = e.inputs[0]
            k0 = self.value(key, (ix.iconst(0),))
            k1 = self.value(key, (ix.iconst(1),))
            return Node("philox", (k0, k1, ix.ravel(comps, var.shape)), "uint32")
        raise NotImplementedError(f"fusion: cannot inline primitive {prim!r}")

    def _pad(self, e, var, comps):
        x = e.inputs[0]
        cfg = e.params["padding_config"]
        valid = None
        inner = []
        for c, d, (lo, hi, it) in zip(comps, x.shape, cfg):
            if lo == hi == it == 0:  # an axis not padded: the index passes through as it is
                inner.append(c)
                continue
            c = ix.as_node(c)
            if it == 0:  # x[c - lo] where lo <= c < lo + d; the load index is clamped into x
                ok = Node("lt", (c, ix.iconst(lo + d)), "bool")
                if lo:
                    ok = Node("and", (Node("le", (ix.iconst(lo), c), "bool"), ok), "bool")
                inner.append(Node("to_index", (Node("sub", (c, ix.iconst(lo)), "int64"),), "int64", (d,)))
            else:
                shifted = Node("sub", (c, ix.iconst(lo)), "int64")
                step = it + 1
                ok = Node("le", (ix.iconst(lo), c), "bool")
                pos = Node("div", (Node("max", (shifted, ix.iconst(0)), "int64"), ix.iconst(step)), "int64")
                if step > 1:
                    on_grid = Node("eq", (Node("mod", (Node("max", (shifted, ix.iconst(0)), "int64"),
                                                       ix.iconst(step)), "int64"), ix.iconst(0)), "bool")
                    ok = Node("and", (ok, on_grid), "bool")
                ok = Node("and", (ok, Node("lt", (pos, ix.iconst(d)), "bool")), "bool")
                inner.append(Node("to_index", (pos,), "int64", (d,)))
            valid = ok if valid is None else Node("and", (valid, ok), "bool")
        loaded = self.value(x, tuple(inner))
        if valid is None:
            return loaded
        fill = Node("const", (), var.dtype, (e.params["padding_value"],))
        return Node("select", (valid, loaded, fill), var.dtype)

    def _concatenate(self, e, var, comps):
        dim = e.params["dimension"]
        c = ix.as_node(comps[dim])
        result, offset, bounds = None, 0, []
        for x in e.inputs:
            bounds.append((x, offset))
            offset += x.shape[dim]
        for x, off in reversed(bounds):
            local = Node("to_index", (Node("sub", (c, ix.iconst(off)), "int64"),), "int64", (x.shape[dim],))
            part = self.value(x, comps[:dim] + (local,) + comps[dim + 1:])
            if result is None:
                result = part
            else:
                nxt = off + x.shape[dim]
                result = Node("select", (Node("lt", (c, ix.iconst(nxt)), "bool"), part, result), var.dtype)
        return result


class _Plan:
    def __init__(self, graph):
        self.graph = graph
        self.materialized, self.producers = _materialized(graph)
        self.names = _Names()
        self.eqn_order = {id(e): i for i, e in enumerate(graph.eqns)}


def _fits(group, root):
    if group.scatter or root.kind == "scatter":
        return False
    outer = tuple(d for i, d in enumerate(group.space) if i not in group.axes)
    if root.kind == "reduce":
        return root.space == group.space and (root.axes == group.axes or not group.axes)
    return root.var.shape in (group.space, outer, _keepdims_shape(group))


def _keepdims_shape(group):
    return tuple(1 if i in group.axes else d for i, d in enumerate(group.space))


def build_kernel(plan, group, name):
    """Kernel IR for a group; raises Unfusable when a root cannot be placed."""
    b = ExprBuilder(plan, group)
    reductions, stores, sources = [], [], []
    levels = {}

    def level_of(node):
        if node in levels:
            return levels[node]
        if node.op == "rowval":
            lvl = red_level[node.attr[0]] + 1
        else:
            lvl = max((level_of(a) for a in node.args), default=0)
        levels[node] = lvl
        return lvl

    red_level = {}
    domain = b.domain()
    for root in group.roots:
        e, var = root.eqn, root.var
        buf = plan.names(var)
        sources.append(e)
        if root.kind == "reduce":
            x = e.inputs[0]
            value = b.value(x, domain)
            lvl = level_of(value)
            red_level[buf] = lvl
            op = {"reduce_sum": "sum", "reduce_max": "max", "argmax": "argmax"}[e.prim]
            reductions.append(Reduction(buf, op, value, lvl, accumulator_dtype(x.dtype),
                                        e.params.get("index_dtype", "int32")))
            stores.append(Store(buf, ix.ravel(b.outer, var.shape),
                                Node("rowval", (), var.dtype, (buf,)), -1))
        elif root.kind == "scatter":
            operand, indices, updates = e.inputs
            axis, k = e.params["axis"], len(indices.shape)
            comps = domain
            picked = b.value(indices, comps[axis:axis + k])
            at = Node("to_index", (picked,), "int64", (operand.shape[axis],))
            target = comps[:axis] + (at,) + comps[axis + k:]
            stores.append(Store(buf, ix.ravel(target, var.shape), b.value(updates, comps), 0, accumulate=True))
        else:
            comps = b.place(var.shape)
            value = b.compute(e, var, comps)
            lvl = level_of(value) if var.shape == group.space else -1
            stores.append(Store(buf, ix.ravel(comps, var.shape), value, lvl))
    n_levels = max([r.level for r in reductions] + [s.level for s in stores] + [0]) + 1
    outputs = [Buffer(plan.names(r.var), r.var.shape, r.var.dtype) for r in group.roots]
    inputs = [Buffer(plan.names(v), v.shape, v.dtype) for v in sorted(b.reads, key=lambda v: plan.names(v))]
    outer = 1
    for d in b.outer_shape:
        outer *= d
    inner = 1
    for d in b.inner_shape:
        inner *= d
    label = (group.roots[-1].eqn.scope.split("/")[-1] or group.roots[-1].eqn.prim).replace("(", "_").replace(")", "")
    kernel = Kernel(f"{name}_{_identifier(label)}", outer, inner, inputs, outputs, reductions, stores, n_levels,
                    serial=group.scatter, outer_shape=b.outer_shape, inner_shape=b.inner_shape)
    kernel.sources = [f"{e.prim} -> {plan.names(e.outputs[0])}" + (f" @ {e.source}" if e.source else "")
                      + (f" ({e.scope})" if e.scope else "") for e in _fused_eqns(plan, group, b)]
    return kernel, b.reads


def _identifier(text):
    out = "".join(ch if ch.isalnum() else "_" for ch in text)
    return out.strip("_")[:40] or "k"


def _fused_eqns(plan, group, builder):
    """The graph eqns whose work a kernel does (roots and everything inlined into them)."""
    seen = []
    done = set()
    stack = [r.var for r in group.roots]
    roots = set(stack)
    while stack:
        v = stack.pop()
        if v in done or v not in plan.producers:
            continue
        done.add(v)
        e = plan.producers[v]
        seen.append(e)
        for x in e.inputs:
            if x not in plan.materialized or x in roots:
                stack.append(x)
    return sorted(seen, key=lambda e: plan.eqn_order[id(e)])


MERGE_WINDOW = 24  # how many earlier launch-list units a root may join; keeps fusion linear
MAX_KERNEL_BUFFERS = 48  # pointer arguments per kernel: bounds CUDA's parameter space and registers


def _root_value(b, root):
    """The value a point or reduce root computes, built in builder b's iteration space."""
    e, var = root.eqn, root.var
    if root.kind == "reduce":
        return b.value(e.inputs[0], b.domain())
    return b.compute(e, var, b.place(var.shape))


def _try_join(plan, group, root, reads_ok) -> bool:
    """Add root to group if its expression fits the group's loops and reads_ok(reads) accepts
    the values it reads from memory; the group is unchanged otherwise."""
    axes = group.axes or root.axes
    if axes != group.axes:  # a reduction joins an elementwise group: the loops change
        trial = _Group(group.roots + [root], group.space, axes, group.index)
        try:
            _, reads = build_kernel(plan, trial, "trial")
        except Unfusable:
            return False
        if not reads_ok(reads):
            return False
        group.roots, group.axes = trial.roots, axes
        group.builder = ExprBuilder(plan, group)
        for r in group.roots:
            _root_value(group.builder, r)
        return True
    b = group.builder
    if len(b.reads) + len(group.roots) >= MAX_KERNEL_BUFFERS:
        return False
    before = b.reads
    b.reads = set()
    try:
        _root_value(b, root)
        reads = b.reads
    except Unfusable:
        reads = None
    b.reads = before
    if reads is None or not reads_ok(reads) or len(before | reads) + len(group.roots) >= MAX_KERNEL_BUFFERS:
        return False
    b.reads = before | reads
    b.in_group[root.var] = root
    group.roots.append(root)
    return True


def _related(group, root) -> bool:
    """Whether joining root to the group saves memory traffic or a kernel, not just a launch:
    root uses a value of the group's roots or loads an array element by element that the
    group loads so too. A root with a value per element of the space needs more than a
    scalar in common (the AdamW update of one parameter shares only the learning rate and
    the gradient norm with the sum of another's squared gradient); a root with one value
    per row (a mean of the group's sums) needs anything in common."""
    b = group.builder
    reads, touches = b.reads, b.touches
    b.reads, b.touches = set(), set()
    try:
        _root_value(b, root)
        shared = b.touches & (touches | set(b.in_group))
    except Unfusable:
        return False
    finally:
        b.reads, b.touches = reads, touches
    per_row = root.kind == "point" and root.var.size == math.prod(b.outer_shape)
    return any(per_row or v.size > 1 for v in shared)


def fuse(graph: Graph, horizontal: bool = True) -> Program:
    """The launch list of a graph. With horizontal=False (the CPU backend) a root joins a
    group only when _related to it: independent roots of equal shape (the AdamW update of
    two weight matrices) then stay apart in kernels of equal code, which compile once; on
    a GPU, merging them saves launches."""
    plan = _Plan(graph)
    units = []        # _Group | ("dot", eqn), in execution order
    produced_by = {}  # var -> unit index
    for e in graph.eqns:
        if e.prim == "dot_general":
            produced_by[e.outputs[0]] = len(units)
            units.append(("dot", e))
            continue
        if e.outputs[0] not in plan.materialized or e.prim == "constant":
            continue
        root = next(r for r in _roots_for(plan, e))
        placed = False
        for gi in range(len(units) - 1, max(-1, len(units) - 1 - MERGE_WINDOW), -1):
            g = units[gi]
            if not isinstance(g, _Group) or not _fits(g, root) or not (horizontal or _related(g, root)):
                continue
            if not _try_join(plan, g, root, lambda reads: all(produced_by.get(v, -1) <= gi for v in reads)):
                continue
            produced_by[root.var] = gi
            placed = True
            break
        if not placed:
            g = _Group([root], root.space, root.axes, len(units), scatter=root.kind == "scatter")
            if root.kind == "scatter":
                # the scatter target starts as a copy of the operand: a kernel of its own first
                copy = _Root(root.var, "point", _copy_eqn(e), tuple(root.var.shape))
                units.append(_Group([copy], tuple(root.var.shape), (), len(units), scatter=True))
                g.index = len(units)
            produced_by[root.var] = len(units)
            units.append(g)
            if not g.scatter:
                g.builder = ExprBuilder(plan, g)
                _root_value(g.builder, root)

    steps = []
    for i, unit in enumerate(units):
        if isinstance(unit, _Group):
            kernel, _ = build_kernel(plan, unit, f"k{len(steps)}")
            steps.append(fold_one_hot_sums(kernel))
        else:
            e = unit[1]
            a, a_view = _view_chain(e.inputs[0], plan.producers, plan.materialized)
            b, b_view = _view_chain(e.inputs[1], plan.producers, plan.materialized)
            steps.append(DotCall(plan.names(e.outputs[0]), plan.names(a), plan.names(b), a_view, b_view,
                                 e.params["dimension_numbers"], e.source or ""))
    steps = drop_dead_stores(steps, {plan.names(v) for v in graph.outputs})
    written = {n for s in steps for n in ([b.name for b in s.outputs] if isinstance(s, Kernel) else [s.out])}
    constants = {plan.names(e.outputs[0]): e.params["value"] for e in graph.eqns if e.prim == "constant"}
    kept = written | set(constants) | {plan.names(v) for v in list(graph.inputs) + list(graph.outputs)}
    buffers = {}
    for v in plan.materialized:
        if plan.names(v) in kept:
            buffers[plan.names(v)] = Buffer(plan.names(v), v.shape, v.dtype)
    return Program(graph, dict(sorted(buffers.items(), key=lambda kv: int(kv[0][1:]))),
                   [plan.names(v) for v in graph.inputs], [plan.names(v) for v in graph.outputs],
                   constants, steps, dict(plan.names.names))


def _roots_for(plan, e):
    v = e.outputs[0]
    if e.prim in REDUCTIONS:
        axes = e.params["axes"] if "axes" in e.params else (e.params["axis"],)
        yield _Root(v, "reduce", e, tuple(e.inputs[0].shape), tuple(axes))
    elif e.prim == "scatter_add":
        yield _Root(v, "scatter", e, tuple(e.inputs[2].shape))
    else:
        yield _Root(v, "point", e, tuple(v.shape))


def _copy_eqn(scatter_eqn):
    from mlbh.tracer.ir import Eqn
    operand = scatter_eqn.inputs[0]
    return Eqn("stop_gradient", (operand,), scatter_eqn.outputs, {}, scatter_eqn.source, scatter_eqn.scope)
