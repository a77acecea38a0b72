"""Writing LLVM IR as text: types and literals of mlbh dtypes, conversions between them,
and a function builder whose loops carry values in phis (codegen/cpu.py uses it).

Values live in registers as the compute dtype's type (bool as i1); in memory bool is a
byte (i8). uint16 and uint32 share i16/i32 with signed types, so every operation that
cares (compare, divide, widen, to float) asks the dtype whether it is unsigned.
"""
import re
import struct

import numpy as np

from mlbh.tracer import dtypes

from .kernel_ir import compute_dtype

_TYPE = {"float32": "float", "float64": "double", "int64": "i64", "int32": "i32", "uint32": "i32",
         "uint16": "i16", "bool": "i1"}
_BITS = {"i1": 1, "i16": 16, "i32": 32, "i64": 64}
UNSIGNED = frozenset({"uint32", "uint16", "bool"})


def ll_type(dtype: str) -> str:
    """The register type of values of `dtype`."""
    cdt = compute_dtype(dtype)
    if dtype in ("float16", "bfloat16") or cdt not in _TYPE:
        raise NotImplementedError(f"the CPU backend computes in float32/float64 and integers; {dtype} buffers "
                                  "are not supported there (use float32 on CPU)")
    return _TYPE[cdt]


def mem_type(dtype: str) -> str:
    """The type of one element of a buffer of `dtype` in memory."""
    return "i8" if dtype == "bool" else ll_type(dtype)


def literal(value, dtype: str) -> str:
    """A constant of `dtype` as LLVM IR text (floats as the exact bits of their value)."""
    t = ll_type(dtype)
    if t == "i1":
        return "true" if value else "false"
    if t in ("float", "double"):
        v = float(np.float32(value)) if t == "float" else float(value)
        return "0x%016X" % struct.unpack("<Q", struct.pack("<d", v))[0]
    bits = _BITS[t]
    v = int(value) % (1 << bits)
    return str(v - (1 << bits) if v >= 1 << (bits - 1) else v)


def is_float(dtype: str) -> bool:
    return dtypes.is_float(compute_dtype(dtype))


class Function:
    """One function's instructions: SSA temporaries %t0, %t1, ... and labels numbered in
    the order they are made, so equal kernels render to equal text."""

    def __init__(self, interleave_around=()):
        """interleave_around: callees so costly (a polynomial exp...) that an innermost loop
        calling one is hinted to interleave INTERLEAVE vector iterations (see loop)."""
        self.interleave_around = tuple(f"@{callee}(" for callee in interleave_around)
        self.hints = 0  # loops hinted so far: their latches name !mlbh.loop.0, 1, ...
        self.lines = []
        self.count = 0
        self.labels = 0
        self.block = "entry"
        self.entry = []  # allocas, placed in the entry block
        self.declarations = {}  # callee -> its declaration

    def call(self, ret: str, callee: str, *args) -> str:
        """A call of `callee` on (type, value) pairs; declares it (intrinsics, libm)."""
        self.declarations[callee] = f"declare {ret} @{callee}({', '.join(t for t, _ in args)})"
        return self.value(f"call {ret} @{callee}({', '.join(f'{t} {v}' for t, v in args)})")

    def value(self, text: str) -> str:
        name = f"%t{self.count}"
        self.count += 1
        self.lines.append(f"  {name} = {text}")
        return name

    def emit(self, text: str):
        self.lines.append(f"  {text}")

    def label(self, hint: str) -> str:
        self.labels += 1
        return f"{hint}{self.labels}"

    def start(self, label: str):
        self.lines.append(f"{label}:")
        self.block = label

    def alloca(self, count: int, ty: str) -> str:
        name = f"%s{len(self.entry)}"
        self.entry.append(f"  {name} = alloca {ty}, i64 {count}, align 64")
        return name

    def loop(self, start: str, end: str, carried, body):
        """for i in [start, end): values = body(i, values), from the inits of `carried`
        [(type, init)]; returns the values after the loop (the inits if it never ran)."""
        before = self.block
        head, done = self.label("loop"), self.label("after")
        enter = self.value(f"icmp slt i64 {start}, {end}")
        self.emit(f"br i1 {enter}, label %{head}, label %{done}")
        self.start(head)
        at = len(self.lines)
        self.lines.append(None)
        index = f"%t{self.count}"
        self.count += 1
        phis = []
        for ty, _ in carried:
            phis.append(f"%t{self.count}")
            self.count += 1
            self.lines.append(None)
        updated = body(index, phis)
        step = self.value(f"add nsw i64 {index}, 1")
        more = self.value(f"icmp slt i64 {step}, {end}")
        latch = self.block
        self.emit(f"br i1 {more}, label %{head}, label %{done}{self._hint(at)}")
        self.lines[at] = f"  {index} = phi i64 [ {start}, %{before} ], [ {step}, %{latch} ]"
        for k, ((ty, init), phi, new) in enumerate(zip(carried, phis, updated)):
            self.lines[at + 1 + k] = f"  {phi} = phi {ty} [ {init}, %{before} ], [ {new}, %{latch} ]"
        self.start(done)
        return [self.value(f"phi {ty} [ {init}, %{before} ], [ {new}, %{latch} ]")
                for (ty, init), new in zip(carried, updated)]

    def _hint(self, at: int) -> str:
        """The latch's loop metadata: none, or (an innermost loop calling a costly callee)
        a placeholder that finish_loop_hints turns into an interleave hint. Such a loop is
        one long chain of dependent operations per vector; with INTERLEAVE independent
        chains in flight the core overlaps them (GELU's forward: 0.93 -> 0.66 ms a core)."""
        body = self.lines[at + 1:]
        if not any(callee in line for line in body if line for callee in self.interleave_around):
            return ""
        if any(line.startswith("loop") and line.endswith(":") for line in body if line):
            return ""
        self.hints += 1
        return f", !llvm.loop !mlbh.loop.{self.hints - 1}"

    def body_text(self) -> str:
        return "\n".join(["entry:"] + self.entry + self.lines)


INTERLEAVE = 4
_HINT = re.compile(r"!mlbh\.loop\.(\d+)")


def finish_loop_hints(functions):
    """(functions' text with their loop-hint placeholders numbered as module metadata, the
    metadata's definitions): each hinted loop gets its own distinct loop id (LLVM requires
    a self-referencing node per loop), all sharing !0, the request to interleave."""
    out, definitions = [], [f'!0 = !{{!"llvm.loop.interleave.count", i32 {INTERLEAVE}}}']
    for text in functions:
        local = {}

        def numbered(match):
            if match.group(1) not in local:
                local[match.group(1)] = number = len(definitions)
                definitions.append(f"!{number} = distinct !{{!{number}, !0}}")
            return f"!{local[match.group(1)]}"
        out.append(_HINT.sub(numbered, text))
    return out, "\n".join(definitions) if len(definitions) > 1 else ""


def convert(fn: Function, value: str, src: str, dst: str) -> str:
    """value (a register of dtype src) as dtype dst, as numpy's astype converts (float to
    int saturates instead of leaving the result undefined)."""
    s, d = ll_type(src), ll_type(dst)
    src_unsigned, dst_unsigned = compute_dtype(src) in UNSIGNED, compute_dtype(dst) in UNSIGNED
    if d == "i1":
        if s == "i1":
            return value
        if s in ("float", "double"):
            return fn.value(f"fcmp une {s} {value}, 0.0")
        return fn.value(f"icmp ne {s} {value}, 0")
    if s == d:
        return value
    if s in ("float", "double") and d in ("float", "double"):
        return fn.value(f"{'fpext' if s == 'float' else 'fptrunc'} {s} {value} to {d}")
    if d in ("float", "double"):
        return fn.value(f"{'uitofp' if src_unsigned else 'sitofp'} {s} {value} to {d}")
    if s in ("float", "double"):
        sat = "fptoui" if dst_unsigned else "fptosi"
        return fn.call(d, f"llvm.{sat}.sat.{d}.{'f32' if s == 'float' else 'f64'}", (s, value))
    if _BITS[d] > _BITS[s]:
        return fn.value(f"{'zext' if src_unsigned else 'sext'} {s} {value} to {d}")
    return fn.value(f"trunc {s} {value} to {d}")
