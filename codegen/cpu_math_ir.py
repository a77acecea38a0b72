"""Helper functions of the CPU kernels, in LLVM IR, inlined into every kernel that calls them.

float32 exp and tanh are polynomials rather than libm calls: a call keeps LLVM from
vectorizing the loop around it, and softmax, cross-entropy and GELU kernels spend most of
their time there. Every float operation is plain IEEE (no fast-math flags), so a value
that two kernels compute comes out bit-identical in both. On CPUs with FMA the polynomials'
multiply-adds are fused (one rounding each): fewer operations on the one long dependency
chain per element (GELU's forward 0.63 -> 0.54 ms a core), and no less accurate.
"""
import functools

from .llvm_ir import literal


def _f(x):
    return literal(x, "float32")


def _horner(out: str, x: str, coefficients, fused: bool) -> str:
    """Lines computing %out = (...(c0 x + c1) x + ...) + cn in float32, by Horner's rule,
    each step one fused multiply-add where fused (an added negative constant is the same
    IEEE operation as a subtracted positive one)."""
    lines, acc = [], _f(coefficients[0])
    for i, c in enumerate(coefficients[1:]):
        name = out if i == len(coefficients) - 2 else f"{out}{i}"
        lines += _mul_add(name, acc, x, _f(c), fused)
        acc = f"%{name}"
    return "\n".join(lines)


def _mul_add(out: str, a: str, b: str, c: str, fused: bool):
    """Lines computing %out = a b + c: one rounding where fused, two otherwise."""
    if fused:
        return [f"  %{out} = call float @llvm.fma.f32(float {a}, float {b}, float {c})"]
    return [f"  %{out}m = fmul float {a}, {b}", f"  %{out} = fadd float %{out}m, {c}"]


# exp(x) within 1.5 ulp, branch-free: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite), a
# degree-7 polynomial for exp(r) (Cephes' expf), then 2^n from exponent bits in two halves
# so that n = 128 and n = -126 stay in range. Below the smallest normal float32 it is 0.
def _exp32(fused: bool) -> str:
    return f"""define internal float @mlbh_exp32(float %x) alwaysinline nounwind {{
  %lo = call float @llvm.maxnum.f32(float %x, float {_f(-87.33654)})
  %xc = call float @llvm.minnum.f32(float %lo, float {_f(88.72283)})
{chr(10).join(_mul_add("s1", "%xc", _f(1.44269504088896341), _f(0.5), fused))}
  %n = call float @llvm.floor.f32(float %s1)
{chr(10).join(_mul_add("r1", "%n", _f(-0.693359375), "%xc", fused))}
{chr(10).join(_mul_add("r", "%n", _f(2.12194440e-4), "%r1", fused))}
{_horner("p9", "%r", (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                      1.6666665459e-1, 5.0000001201e-1), fused)}
  %rr = fmul float %r, %r
{chr(10).join(_mul_add("p11", "%p9", "%rr", "%r", fused))}
  %p = fadd float %p11, {_f(1.0)}
  %k = fptosi float %n to i32
  %half = ashr i32 %k, 1
  %e1 = add i32 %half, 127
  %b1 = shl i32 %e1, 23
  %f1 = bitcast i32 %b1 to float
  %rest = sub i32 %k, %half
  %e2 = add i32 %rest, 127
  %b2 = shl i32 %e2, 23
  %f2 = bitcast i32 %b2 to float
  %y1 = fmul float %p, %f1
  %y2 = fmul float %y1, %f2
  %above = fcmp oge float %x, {_f(-87.33654)}
  %y3 = select i1 %above, float %y2, float 0.0
  %below = fcmp ole float %x, {_f(88.72283)}
  %y4 = select i1 %below, float %y3, float {_f(float("inf"))}
  %nan = fcmp uno float %x, %x
  %y = select i1 %nan, float %x, float %y4
  ret float %y
}}
"""

# tanh(x) within 2 ulp, branch-free: Cephes' tanhf, an odd polynomial below |x| = 0.625
# and 1 - 2 / (exp(2|x|) + 1) above.
def _tanh32(fused: bool) -> str:
    return f"""define internal float @mlbh_tanh32(float %x) alwaysinline nounwind {{
  %z = call float @llvm.fabs.f32(float %x)
  %zz = fadd float %z, %z
  %e = call float @mlbh_exp32(float %zz)
  %e1 = fadd float %e, {_f(1.0)}
  %q = fdiv float {_f(2.0)}, %e1
  %big = fsub float {_f(1.0)}, %q
  %s = fmul float %x, %x
{_horner("poly", "%s", (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
                        -3.33332819422e-1), fused)}
{chr(10).join(_mul_add("sp1", "%s", "%poly", _f(1.0), fused))}
  %small = fmul float %x, %sp1
  %negbig = fneg float %big
  %pos = fcmp oge float %x, 0.0
  %signed = select i1 %pos, float %big, float %negbig
  %near = fcmp olt float %z, {_f(0.625)}
  %y = select i1 %near, float %small, float %signed
  ret float %y
}}
"""

# tanh(x) = sign(x) * -expm1(-2|x|) / (2 + expm1(-2|x|)): accurate near 0, no overflow.
TANH64 = """define internal double @mlbh_tanh64(double %x) alwaysinline nounwind {
  %z = call double @llvm.fabs.f64(double %x)
  %m = fmul double %z, -2.0
  %e = call double @expm1(double %m)
  %ne = fneg double %e
  %d = fadd double %e, 2.0
  %t = fdiv double %ne, %d
  %nt = fneg double %t
  %pos = fcmp oge double %x, 0.0
  %y = select i1 %pos, double %t, double %nt
  ret double %y
}
"""


def _philox() -> str:
    """Philox4x32-10 with counter (lo, hi, 0, 0): the first output word (as
    tracer.philox_bits), in 64-bit lanes masked to 32 bits."""
    lines = ["define internal i32 @mlbh_philox(i64 %k0, i64 %k1, i64 %counter) alwaysinline nounwind {",
             "  %c0_0 = and i64 %counter, 4294967295", "  %c1_0 = lshr i64 %counter, 32",
             "  %a_0 = and i64 %k0, 4294967295", "  %b_0 = and i64 %k1, 4294967295"]
    c0, c1, c2, c3, a, b = "%c0_0", "%c1_0", "0", "0", "%a_0", "%b_0"
    for i in range(1, 11):
        lines += [f"  %p0_{i} = mul i64 3528531795, {c0}", f"  %p1_{i} = mul i64 3449720151, {c2}",
                  f"  %h1_{i} = lshr i64 %p1_{i}, 32", f"  %x1_{i} = xor i64 %h1_{i}, {c1}",
                  f"  %y1_{i} = xor i64 %x1_{i}, {a}", f"  %n0_{i} = and i64 %y1_{i}, 4294967295",
                  f"  %h0_{i} = lshr i64 %p0_{i}, 32", f"  %x0_{i} = xor i64 %h0_{i}, {c3}",
                  f"  %y0_{i} = xor i64 %x0_{i}, {b}", f"  %n2_{i} = and i64 %y0_{i}, 4294967295",
                  f"  %n1_{i} = and i64 %p1_{i}, 4294967295", f"  %n3_{i} = and i64 %p0_{i}, 4294967295",
                  f"  %sa_{i} = add i64 {a}, 2654435769", f"  %a_{i} = and i64 %sa_{i}, 4294967295",
                  f"  %sb_{i} = add i64 {b}, 3144134277", f"  %b_{i} = and i64 %sb_{i}, 4294967295"]
        c0, c1, c2, c3, a, b = f"%n0_{i}", f"%n1_{i}", f"%n2_{i}", f"%n3_{i}", f"%a_{i}", f"%b_{i}"
    lines += [f"  %out = trunc i64 {c0} to i32", "  ret i32 %out", "}", ""]
    return "\n".join(lines)


def _ipow(ty: str, unsigned: bool) -> str:
    """base ** exponent by squaring, wrapping as numpy's integer power; a negative
    exponent gives 1 for base 1, +-1 for base -1 and 0 otherwise (as the CUDA kernels)."""
    shift = "lshr" if unsigned else "ashr"
    return f"""define internal {ty} @mlbh_ipow_{ty}{'u' if unsigned else ''}({ty} %b, {ty} %e) nounwind {{
entry:
  %neg = icmp slt {ty} %e, 0
  %negative = and i1 %neg, {'false' if unsigned else 'true'}
  br i1 %negative, label %recip, label %loop
recip:
  %one = icmp eq {ty} %b, 1
  %mone = icmp eq {ty} %b, -1
  %bit = and {ty} %e, 1
  %odd = icmp ne {ty} %bit, 0
  %m = select i1 %odd, {ty} %b, {ty} 1
  %r0 = select i1 %mone, {ty} %m, {ty} 0
  %r1 = select i1 %one, {ty} 1, {ty} %r0
  ret {ty} %r1
loop:
  %res = phi {ty} [ 1, %entry ], [ %res2, %body ]
  %base = phi {ty} [ %b, %entry ], [ %base2, %body ]
  %ex = phi {ty} [ %e, %entry ], [ %ex2, %body ]
  %more = icmp ne {ty} %ex, 0
  br i1 %more, label %body, label %done
body:
  %lowbit = and {ty} %ex, 1
  %isodd = icmp ne {ty} %lowbit, 0
  %prod = mul {ty} %res, %base
  %res2 = select i1 %isodd, {ty} %prod, {ty} %res
  %base2 = mul {ty} %base, %base
  %ex2 = {shift} {ty} %ex, 1
  br label %loop
done:
  ret {ty} %res
}}
"""


COSTLY_HELPERS = ("mlbh_exp32", "mlbh_tanh32")  # vectorized polynomials: loops calling them interleave (llvm_ir.py)


@functools.lru_cache(maxsize=None)
def _helpers(fused: bool) -> dict:
    """Every helper's definition, by name."""
    helpers = {"mlbh_exp32": _exp32(fused), "mlbh_tanh32": _tanh32(fused), "mlbh_tanh64": TANH64,
               "mlbh_philox": _philox()}
    helpers.update({f"mlbh_ipow_{ty}{'u' if u else ''}": _ipow(ty, u) for ty in ("i16", "i32", "i64") for u in (False, True)})
    return helpers


# what the helpers call themselves
HELPER_DECLARATIONS = {
    "llvm.maxnum.f32": "declare float @llvm.maxnum.f32(float, float)",
    "llvm.minnum.f32": "declare float @llvm.minnum.f32(float, float)",
    "llvm.floor.f32": "declare float @llvm.floor.f32(float)",
    "llvm.fabs.f32": "declare float @llvm.fabs.f32(float)",
    "llvm.fma.f32": "declare float @llvm.fma.f32(float, float, float)",
    "llvm.fabs.f64": "declare double @llvm.fabs.f64(double)",
    "expm1": "declare double @expm1(double)"}


def helpers_used(text: str, fused: bool) -> dict:
    """{name: definition} of the helpers a module's functions call (mlbh_tanh32 brings
    mlbh_exp32); their polynomials in fused multiply-adds where `fused` (the CPU has FMA)."""
    helpers = _helpers(fused)
    used = [name for name in helpers if f"@{name}(" in text]
    if "mlbh_tanh32" in used and "mlbh_exp32" not in used:
        used.append("mlbh_exp32")
    return {name: helpers[name] for name in used}
