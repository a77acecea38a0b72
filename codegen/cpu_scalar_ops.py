"""One arithmetic op on registers of an mlbh dtype, as LLVM IR instructions (the CPU
renderer's scalar operations; loads, stores and loops are codegen/cpu.py's)."""
from .kernel_ir import compute_dtype
from .llvm_ir import UNSIGNED, Function, literal, ll_type

_FLOAT_BINARY = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv"}
_INT_BINARY = {"add": "add", "sub": "sub", "mul": "mul"}
_FLOAT_INTRINSIC = {"log": "log", "sqrt": "sqrt", "pow": "pow", "exp": "exp"}
_SUFFIX = {"float": "f32", "double": "f64"}


def float_op(fn: Function, op: str, a: list, dtype: str) -> str:
    """op on float registers a of `dtype` (float32 or float64)."""
    t = ll_type(dtype)
    sfx = _SUFFIX[t]
    if op in _FLOAT_BINARY:
        return fn.value(f"{_FLOAT_BINARY[op]} {t} {a[0]}, {a[1]}")
    if op == "neg":
        return fn.value(f"fneg {t} {a[0]}")
    if op == "exp" and t == "float":
        return fn.call(t, "mlbh_exp32", (t, a[0]))
    if op == "tanh":
        return fn.call(t, "mlbh_tanh32" if t == "float" else "mlbh_tanh64", (t, a[0]))
    if op in _FLOAT_INTRINSIC:
        return fn.call(t, f"llvm.{_FLOAT_INTRINSIC[op]}.{sfx}", *[(t, x) for x in a])
    if op == "rsqrt":
        root = fn.call(t, f"llvm.sqrt.{sfx}", (t, a[0]))
        return fn.value(f"fdiv {t} {literal(1.0, dtype)}, {root}")
    if op == "erf":
        return fn.call(t, "erff" if t == "float" else "erf", (t, a[0]))
    if op in ("max", "min"):  # (a > b or a is NaN) ? a : b, as numpy's maximum
        better = fn.value(f"fcmp {'ogt' if op == 'max' else 'olt'} {t} {a[0]}, {a[1]}")
        nan = fn.value(f"fcmp uno {t} {a[0]}, {a[0]}")
        take = fn.value(f"or i1 {better}, {nan}")
        return fn.value(f"select i1 {take}, {t} {a[0]}, {t} {a[1]}")
    raise NotImplementedError(f"cpu renderer: no rendering of {op!r} on floats")

def int_op(fn: Function, op: str, a: list, dtype: str) -> str:
    """op on integer or bool registers a of `dtype`."""
    t, unsigned = ll_type(dtype), compute_dtype(dtype) in UNSIGNED
    if t == "i1":
        logical = {"add": "or", "max": "or", "mul": "and", "min": "and"}
        if op in logical:
            return fn.value(f"{logical[op]} i1 {a[0]}, {a[1]}")
        raise NotImplementedError(f"cpu renderer: no rendering of {op!r} on bool")
    if op in _INT_BINARY:
        return fn.value(f"{_INT_BINARY[op]} {t} {a[0]}, {a[1]}")
    if op == "neg":
        return fn.value(f"sub {t} 0, {a[0]}")
    if op in ("div", "mod"):
        return int_divide(fn, op, a, dtype)
    if op in ("max", "min"):
        cmp = ("u" if unsigned else "s") + ("gt" if op == "max" else "lt")
        take = fn.value(f"icmp {cmp} {t} {a[0]}, {a[1]}")
        return fn.value(f"select i1 {take}, {t} {a[0]}, {t} {a[1]}")
    if op == "pow":
        return fn.call(t, f"mlbh_ipow_{t}{'u' if unsigned else ''}", (t, a[0]), (t, a[1]))
    raise NotImplementedError(f"cpu renderer: no rendering of {op!r} on {dtype}")

def int_divide(fn: Function, op: str, a: list, dtype: str) -> str:
    """Floor division (op "div") or its remainder ("mod"), as Python's; 0 for a zero
    divisor, as numpy's."""
    t = ll_type(dtype)
    zero = fn.value(f"icmp eq {t} {a[1]}, 0")
    b = fn.value(f"select i1 {zero}, {t} 1, {t} {a[1]}")
    if compute_dtype(dtype) in UNSIGNED:
        out = fn.value(f"{'udiv' if op == 'div' else 'urem'} {t} {a[0]}, {b}")
    else:
        q = fn.value(f"sdiv {t} {a[0]}, {b}")
        r = fn.value(f"srem {t} {a[0]}, {b}")
        inexact = fn.value(f"icmp ne {t} {r}, 0")
        r_neg = fn.value(f"icmp slt {t} {r}, 0")
        b_neg = fn.value(f"icmp slt {t} {b}, 0")
        signs = fn.value(f"xor i1 {r_neg}, {b_neg}")
        fix = fn.value(f"and i1 {inexact}, {signs}")
        if op == "div":
            q1 = fn.value(f"sub {t} {q}, 1")
            out = fn.value(f"select i1 {fix}, {t} {q1}, {t} {q}")
        else:
            r1 = fn.value(f"add {t} {r}, {b}")
            out = fn.value(f"select i1 {fix}, {t} {r1}, {t} {r}")
    return fn.value(f"select i1 {zero}, {t} 0, {t} {out}")
