"""Kernel IR -> LLVM IR (the CPU backend), compiled by llvmlite in codegen/cpu_jit.py.

Each Kernel becomes one function over raw buffer pointers (all `noalias`: the memory plan
never places a kernel's output over its own inputs, and an output donated onto an input
is stored into that input itself):

    void k_<hash>(i64 lo, i64 hi, i64 n, ptr a0, ptr a1, ...)

It runs rows o in [lo, hi) (column kernels: column chunks), so the runtime can split the
rows of a big kernel across threads; `k_<hash>.packed(lo, hi, n, ptr args)` calls it with
the buffers from one array, one signature for every kernel (codegen/cpu_fork_join.py); n is the inner loop length of a reduction whose length
comes from its buffers. Kernels whose code does not depend on their length (size_generic)
render once for every shape: the AdamW update of every parameter is one function.
Buffers are numbered by first use and temporaries by position, so the same layer at
another depth renders to the same text and compiles once. Values that do not depend on
the inner index r are computed before the r loop; each distinct node once per scope.
Sum reductions add with the `reassoc` flag alone, so LLVM may split them into vector
lanes while every other float operation keeps exact IEEE semantics (a value recomputed
in another kernel must come out bit-identical, e.g. for reduce_max's gradient). A float
max reduces through integer keys (LLVM vectorizes an integer max, not a NaN-propagating
float one) plus a NaN flag. Loop structure (elementwise loops split in two, column
reductions with swapped loops, index math simplified) is decided in cpu_loops.py.
"""
import hashlib
from dataclasses import dataclass

import numpy as np

from mlbh.tracer import dtypes

from . import cpu_loops as loops
from .cpu_math_ir import COSTLY_HELPERS, HELPER_DECLARATIONS, helpers_used
from .cpu_fork_join import packed_entry
from .cpu_scalar_ops import float_op, int_divide, int_op
from .cpu_target import host_features
from .kernel_ir import Kernel, Node, compute_dtype, uses_inner_index
from .llvm_ir import UNSIGNED, Function, convert, finish_loop_hints, is_float, literal, ll_type, mem_type
from .one_hot_sums import split_one_hot_stores

_FCMP = {"lt": "olt", "le": "ole", "eq": "oeq", "ne": "une"}
_ICMP = {"lt": "slt", "le": "sle", "eq": "eq", "ne": "ne"}
_UCMP = {"lt": "ult", "le": "ule", "eq": "eq", "ne": "ne"}


class _Values:
    """Renders nodes into a Function: one register per distinct node and scope. Nodes in
    `stored` were stored element by element by an earlier loop: they are loaded back."""

    def __init__(self, kernel_ir, names, stored=None):
        self.k = kernel_ir
        self.fn = kernel_ir.fn
        self.names = names
        self.stored = stored or {}

    def expr(self, node: Node) -> str:
        if node in self.names:
            return self.names[node]
        op = node.op
        if op == "ivar":
            return self.k.ivars[node.attr[0]]
        if op == "iconst":
            return str(node.attr[0])
        if op == "const":
            return literal(node.attr[0], node.dtype)
        if op == "rowval":
            value, dtype = self.k.rowvals[node.attr[0]]
            out = convert(self.fn, value, dtype, node.dtype)
        elif op == "stop_gradient":
            return self.expr(node.args[0])
        elif node in self.stored:
            buffer, index = self.stored[node]
            out = self.k.load(buffer, self.expr(index), node.dtype)
        else:
            out = self._compute(node, [self.expr(a) for a in node.args])
        self.names[node] = out
        return out

    def _operand(self, node, value, dtype):
        return convert(self.fn, value, node.dtype, dtype)

    def _compute(self, node, a):
        fn, op, dtype = self.fn, node.op, node.dtype
        if op == "load":
            return self.k.load(node.attr[0], a[0], dtype)
        if op in ("iadd", "imul"):
            return fn.value(f"{op[1:]} nsw i64 {a[0]}, {a[1]}")
        if op in ("idiv", "imod"):  # both >= 0
            b = node.args[1]
            if b.op == "iconst" and b.attr[0] > 0:
                return fn.value(f"{'udiv' if op == 'idiv' else 'urem'} i64 {a[0]}, {a[1]}")
            return int_divide(fn, "div" if op == "idiv" else "mod", a, "int64")
        if op in ("lt", "le", "eq", "ne"):
            src = node.args[0].dtype
            x, y = a[0], self._operand(node.args[1], a[1], src)
            st = ll_type(src)
            if is_float(src):
                return fn.value(f"fcmp {_FCMP[op]} {st} {x}, {y}")
            table = _UCMP if compute_dtype(src) in UNSIGNED else _ICMP
            return fn.value(f"icmp {table[op]} {st} {x}, {y}")
        if op == "and":
            return fn.value(f"and i1 {a[0]}, {a[1]}")
        if op == "select":
            t = ll_type(dtype)
            x, y = (self._operand(n, v, dtype) for n, v in zip(node.args[1:], a[1:]))
            return fn.value(f"select i1 {a[0]}, {t} {x}, {t} {y}")
        if op == "convert":
            return convert(fn, a[0], node.args[0].dtype, dtype)
        if op == "to_value":
            return convert(fn, a[0], "int64", dtype)
        if op == "to_index":
            i = convert(fn, a[0], node.args[0].dtype, "int64")
            i = fn.call("i64", "llvm.smax.i64", ("i64", i), ("i64", "0"))
            return fn.call("i64", "llvm.smin.i64", ("i64", i), ("i64", str(node.attr[0] - 1)))
        if op == "philox":
            k0, k1, counter = (convert(fn, v, n.dtype, "int64") for n, v in zip(node.args, a))
            return convert(fn, fn.call("i32", "mlbh_philox", ("i64", k0), ("i64", k1), ("i64", counter)),
                           "uint32", dtype)
        a = [self._operand(n, v, dtype) for n, v in zip(node.args, a)]
        return (float_op if is_float(dtype) else int_op)(fn, op, a, compute_dtype(dtype))



class _KernelIR:
    """The state of one kernel's rendering: its function, buffer parameters (numbered by
    first use), the current loop indices and the finished reductions."""

    def __init__(self, kernel: Kernel):
        self.fn = Function(interleave_around=COSTLY_HELPERS)
        self.dtypes = {b.name: b.dtype for b in kernel.inputs + kernel.outputs}
        self.params = {}
        self.ivars = {}
        self.rowvals = {}  # reduction name -> (register, dtype)

    def pointer(self, buffer: str) -> str:
        if buffer not in self.params:
            self.params[buffer] = f"%a{len(self.params)}"
        return self.params[buffer]

    def _address(self, buffer, index):
        return self.fn.value(f"getelementptr inbounds {mem_type(self.dtypes[buffer])}, ptr {self.pointer(buffer)}, "
                             f"i64 {index}")

    def load(self, buffer, index, dtype):
        bdt = self.dtypes[buffer]
        value = self.fn.value(f"load {mem_type(bdt)}, ptr {self._address(buffer, index)}")
        if bdt == "bool":
            value = self.fn.value(f"trunc i8 {value} to i1")
        return convert(self.fn, value, bdt, dtype)

    def store(self, buffer, index, value, dtype, accumulate=False):
        bdt = self.dtypes[buffer]
        at = self._address(buffer, index)
        value = convert(self.fn, value, dtype, bdt)
        if accumulate:
            old = self.fn.value(f"load {mem_type(bdt)}, ptr {at}")
            if bdt == "bool":
                old = self.fn.value(f"trunc i8 {old} to i1")
            add = "fadd" if is_float(bdt) else "or" if bdt == "bool" else "add"
            value = self.fn.value(f"{add} {ll_type(bdt)} {old}, {value}")
        if bdt == "bool":
            value = self.fn.value(f"zext i1 {value} to i8")
        self.fn.emit(f"store {mem_type(bdt)} {value}, ptr {at}")


# A stored value that is more than a leaf is read back (one load from cache) rather than
# recomputed from its own loads: fewer memory streams at run time, less code to compile.
_LEAF_OPS = frozenset({"load", "const", "iconst", "ivar", "rowval"})


def _collect(node, out, seen, memo, want_r, leaves):
    """Post-order nodes under `node` whose r-dependence is want_r (not below `leaves`)."""
    if node in seen:
        return
    seen.add(node)
    if node not in leaves:
        for a in node.args:
            _collect(a, out, seen, memo, want_r, leaves)
    if uses_inner_index(node, memo) == want_r:
        out.append(node)


def _keyed(red):
    """A float max reduced through integer keys and a NaN flag."""
    return red.op == "max" and red.dtype in ("float32", "float64")


def _lowest(dtype):
    if dtypes.is_float(dtype):
        return float("-inf")
    return -(2 ** 63) if dtype == "int64" else -(2 ** 31)


class _Reduction:
    """One reduction's accumulator registers: its init, step and finished value."""

    def __init__(self, red, k: _KernelIR):
        self.red, self.k = red, k
        self.t = ll_type(red.dtype)
        if _keyed(red):
            self.bits = 32 if red.dtype == "float32" else 64
            self.kt = f"i{self.bits}"
            minus_inf = int(np.array(-np.inf, red.dtype).view(np.int32 if self.bits == 32 else np.int64))
            self.carried = [(self.kt, str(minus_inf ^ ((1 << (self.bits - 1)) - 1))), ("i1", "false")]
        elif red.op == "argmax":
            self.carried = [(self.t, literal(_lowest(red.dtype), red.dtype)), ("i64", "0")]
        else:
            self.carried = [(self.t, literal(0 if red.op == "sum" else _lowest(red.dtype), red.dtype))]

    def _key(self, bits):  # the float order as a signed integer order; its own inverse
        fn = self.k.fn
        sign = fn.value(f"ashr {self.kt} {bits}, {self.bits - 1}")
        mask = fn.value(f"and {self.kt} {sign}, {(1 << (self.bits - 1)) - 1}")
        return fn.value(f"xor {self.kt} {bits}, {mask}")

    def step(self, acc, value, value_dtype, r):
        fn, t, red = self.k.fn, self.t, self.red
        v = convert(fn, value, value_dtype, red.dtype)
        if red.op == "sum":
            return [fn.value(f"fadd reassoc {t} {acc[0]}, {v}" if is_float(red.dtype) else f"add {t} {acc[0]}, {v}")]
        if _keyed(red):
            key = self._key(fn.value(f"bitcast {t} {v} to {self.kt}"))
            bigger = fn.value(f"icmp sgt {self.kt} {key}, {acc[0]}")
            nan = fn.value(f"fcmp uno {t} {v}, {v}")
            return [fn.value(f"select i1 {bigger}, {self.kt} {key}, {self.kt} {acc[0]}"),
                    fn.value(f"or i1 {acc[1]}, {nan}")]
        if red.op == "max":
            return [int_op(fn, "max", [v, acc[0]], red.dtype)]
        # argmax: the first maximum, or the first NaN, as numpy's argmax
        if is_float(red.dtype):
            bigger = fn.value(f"fcmp ogt {t} {v}, {acc[0]}")
            v_nan = fn.value(f"fcmp uno {t} {v}, {v}")
            acc_num = fn.value(f"fcmp ord {t} {acc[0]}, {acc[0]}")
            first_nan = fn.value(f"and i1 {v_nan}, {acc_num}")
            take = fn.value(f"or i1 {bigger}, {first_nan}")
        else:
            take = fn.value(f"icmp sgt {t} {v}, {acc[0]}")
        return [fn.value(f"select i1 {take}, {t} {v}, {t} {acc[0]}"),
                fn.value(f"select i1 {take}, i64 {r}, i64 {acc[1]}")]

    def finish(self, acc):
        """Registers (value, dtype) of the reduction's result."""
        fn, red = self.k.fn, self.red
        if _keyed(red):
            value = fn.value(f"bitcast {self.kt} {self._key(acc[0])} to {self.t}")
            return fn.value(f"select i1 {acc[1]}, {self.t} {literal(float('nan'), red.dtype)}, {self.t} {value}"), red.dtype
        if red.op == "argmax":
            return acc[1], "int64"
        return acc[0], red.dtype


def _render_columns(kernel: Kernel, k: _KernelIR):
    """for each chunk of columns [lo, hi) of n: for r: for o in the chunk: accumulate into
    per-column arrays; then the row stores. The o loop is contiguous and vectorizes."""
    fn = k.fn
    chunk = loops.COLUMN_CHUNK
    accs = {red.name: fn.alloca(chunk, ll_type(red.dtype)) for red in kernel.reductions}

    def column_chunk(c, _):
        lo = fn.value(f"mul nsw i64 {c}, {chunk}")
        end = fn.value(f"add nsw i64 {lo}, {chunk}")
        hi = fn.call("i64", "llvm.smin.i64", ("i64", end), ("i64", "%n"))
        def clear(o, _):
            for red in kernel.reductions:
                init = literal(0 if red.op == "sum" else _lowest(red.dtype), red.dtype)
                fn.emit(f"store {ll_type(red.dtype)} {init}, ptr {_slot(fn, accs[red.name], red, o)}")
            return []
        fn.loop("0", fn.value(f"sub nsw i64 {hi}, {lo}"), [], clear)

        def row(r, _):
            def column(o, _):
                k.ivars = {"o": o, "r": r}
                values = _Values(k, {})
                at = fn.value(f"sub nsw i64 {o}, {lo}")
                for red in kernel.reductions:
                    v = values.expr(red.value)
                    slot = _slot(fn, accs[red.name], red, at)
                    t = ll_type(red.dtype)
                    old = fn.value(f"load {t}, ptr {slot}")
                    v = convert(fn, v, red.value.dtype, red.dtype)
                    if red.op == "sum":
                        new = fn.value(f"{'fadd' if is_float(red.dtype) else 'add'} {t} {old}, {v}")
                    elif is_float(red.dtype):
                        new = float_op(fn, "max", [v, old], red.dtype)
                    else:
                        new = int_op(fn, "max", [v, old], red.dtype)
                    fn.emit(f"store {t} {new}, ptr {slot}")
                _store_all(k, values, [st for st in kernel.stores if st.level == 0])
                return []
            fn.loop(lo, hi, [], column)
            return []
        fn.loop("0", str(kernel.inner), [], row)

        def finish(o, _):
            k.ivars = {"o": o}
            at = fn.value(f"sub nsw i64 {o}, {lo}")
            for red in kernel.reductions:
                t = ll_type(red.dtype)
                k.rowvals[red.name] = (fn.value(f"load {t}, ptr {_slot(fn, accs[red.name], red, at)}"), red.dtype)
            _store_all(k, _Values(k, {}), [st for st in kernel.stores if st.level == -1])
            return []
        if any(st.level == -1 for st in kernel.stores):
            fn.loop(lo, hi, [], finish)
        return []
    fn.loop("%lo", "%hi", [], column_chunk)


def _store_all(k, values, stores):
    """Every value and index first, then the stores: an output may be written over an input
    (donation), which a later value of the same element may still read."""
    computed = [(values.expr(s.index), values.expr(s.value)) for s in stores]
    for s, (index, value) in zip(stores, computed):
        k.store(s.buffer, index, value, s.value.dtype, s.accumulate)


def _slot(fn, array, red, at):
    return fn.value(f"getelementptr inbounds {ll_type(red.dtype)}, ptr {array}, i64 {at}")


def _render_rows(kernel: Kernel, k: _KernelIR, inner_len: str):
    fn = k.fn
    memo = {}
    out_dtypes = {b.name: b.dtype for b in kernel.outputs}

    def row(o, _):
        k.ivars = {"o": o}
        hoisted = {}
        stored = {}  # computed values an earlier level stored per element: later levels read them back
        for level in range(kernel.levels):
            reds = [r for r in kernel.reductions if r.level == level]
            stores = [s for s in kernel.stores if s.level == level]
            roots = [r.value for r in reds] + [n for s in stores for n in (s.index, s.value)]
            outside, inside, seen_o, seen_i = [], [], set(), set()
            for n in roots:
                _collect(n, outside, seen_o, memo, False, stored)
                _collect(n, inside, seen_i, memo, True, stored)
            pre = _Values(k, hoisted, stored)
            for n in outside:
                pre.expr(n)
            accs = [_Reduction(r, k) for r in reds]

            def body(r, acc_values, reds=reds, stores=stores, accs=accs, stored=stored):
                k.ivars = {"o": o, "r": r}
                values = _Values(k, dict(hoisted), stored)
                new, at = [], 0
                for red, acc in zip(reds, accs):
                    width = len(acc.carried)
                    new += acc.step(acc_values[at:at + width], values.expr(red.value), red.value.dtype, r)
                    at += width
                _store_all(k, values, stores)
                return new
            carried = [c for acc in accs for c in acc.carried]
            if inside or reds or kernel.inner > 1:
                finals = fn.loop("0", inner_len, carried, body)
            else:
                finals = body("0", [init for _, init in carried])
            k.ivars = {"o": o}
            for s in stores:  # a buffer written again holds another value from here on
                stored = {n: at for n, at in stored.items() if at[0] != s.buffer}
            for s in stores:
                if (not s.accumulate and uses_inner_index(s.index, memo) and s.value.op not in _LEAF_OPS
                        and out_dtypes[s.buffer] == s.value.dtype):
                    stored.setdefault(s.value, (s.buffer, s.index))
            at = 0
            for red, acc in zip(reds, accs):
                width = len(acc.carried)
                k.rowvals[red.name] = acc.finish(finals[at:at + width])
                at += width
        _store_all(k, _Values(k, hoisted), [s for s in kernel.stores if s.level == -1])
        return []
    fn.loop("%lo", "%hi", [], row)


@dataclass(frozen=True)
class CpuKernel:
    """A rendered kernel: its function's name and IR, the buffers in argument order, and
    how to call it: rows [0, rows), which may be split across threads when parallel, and
    n. work: the elements it computes, for the runtime to judge whether splitting pays."""
    name: str
    source: str
    params: list
    rows: int
    n: int
    parallel: bool
    work: int
    declarations: tuple  # (callee, declaration) of the intrinsics and functions it calls


def render_kernel(kernel: Kernel) -> CpuKernel:
    """Structurally equal kernels get equal names and sources."""
    work = kernel.outer * kernel.inner
    kernel, sized_by = loops.size_generic(kernel)
    if sized_by is None:
        kernel = loops.with_loops_split(kernel)
    parallel = not kernel.serial and kernel.outer > 1
    k = _KernelIR(kernel)
    if loops.is_column_kernel(kernel):
        parallel = parallel and kernel.outer > loops.COLUMN_CHUNK
        _render_columns(kernel, k)
        rows, n = -(-kernel.outer // loops.COLUMN_CHUNK), kernel.outer
    else:
        kernel = loops.stash_costly_values(split_one_hot_stores(kernel))
        _render_rows(kernel, k, "%n" if sized_by else str(kernel.inner))
        rows, n = kernel.outer, kernel.inner
    k.fn.emit("ret void")
    buffers = list(k.params) + [b for b in k.dtypes if b not in k.params]
    args = ", ".join(["i64 %lo", "i64 %hi", "i64 %n"] + [f"ptr noalias %a{i}" for i in range(len(buffers))])
    body = k.fn.body_text()
    name = "k_" + hashlib.sha256(f"{args}\n{body}".encode()).hexdigest()[:16]
    source = f"define void @{name}({args}) nounwind {{\n{body}\n}}\n"
    return CpuKernel(name, source, buffers, rows, n, parallel, work, tuple(sorted(k.fn.declarations.items())))


def render_program(kernels, headers=True):
    """(module source, {kernel name: CpuKernel}); each distinct function appears once,
    headed (headers=True) by the graph eqns of every kernel it serves. Without headers the
    source depends on the kernels' code alone, not on where the user's files are."""
    (source,), rendered = render_modules(kernels, 1, headers)
    return source, rendered


MIN_MODULE_CHARS = 12_000  # LLVM takes 0.1-0.2 s over this much IR: less is not worth a process


def render_modules(kernels, most: int, headers=False):
    """([module source], {kernel name: CpuKernel}): render_program's functions dealt into at
    most `most` modules of about equal size (never below MIN_MODULE_CHARS unless there is
    only one), so that LLVM can compile them side by side (cpu_jit.load_modules)."""
    rendered, functions, served = {}, {}, {}
    for kernel in kernels:
        ck = render_kernel(kernel)
        rendered[kernel.name] = ck
        functions.setdefault(ck.name, ck)
        served.setdefault(ck.name, []).append(kernel)
    total = sum(len(ck.source) for ck in functions.values())
    count = max(1, min(most, total // MIN_MODULE_CHARS))
    shares, sizes = [[] for _ in range(count)], [0] * count
    for ck in sorted(functions.values(), key=lambda ck: -len(ck.source)):  # largest first, to the smallest module
        smallest = sizes.index(min(sizes))
        shares[smallest].append(ck)
        sizes[smallest] += len(ck.source)
    order = {name: i for i, name in enumerate(functions)}  # each module keeps the kernels' order
    return [_module_source(sorted(share, key=lambda ck: order[ck.name]), served, headers)
            for share in shares], rendered


def _module_source(functions, served, headers):
    """One LLVM module: the declarations and helpers these CpuKernels use, then each one
    with its packed entry."""
    parts, declarations = [], dict(HELPER_DECLARATIONS)
    for ck in functions:
        ks = served[ck.name]
        header = [f"; {k.name}: " + "; ".join(k.sources[:6]) + (" ..." if len(k.sources) > 6 else "")
                  for k in ks[:8]] if headers else []
        if headers and len(ks) > 8:
            header.append(f"; ... and {len(ks) - 8} more kernels of the same shape")
        parts.append("\n".join(header + [ck.source, packed_entry(ck.name, len(ck.params))]))
        declarations.update(ck.declarations)
    parts, loop_metadata = finish_loop_hints(parts)
    code = "\n".join(parts)
    helpers = helpers_used(code, fused="+fma" in host_features().split(","))
    declared = [text for callee, text in sorted(declarations.items()) if callee not in helpers]
    return ("; Generated by mlbh.codegen.cpu: the CPU kernels of one compiled program (LLVM IR).\n\n"
            + "\n".join(declared) + "\n\n" + "\n".join(helpers.values()) + "\n" + code + "\n" + loop_metadata + "\n")
