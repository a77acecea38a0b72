"""Central finite differences in float64, and the VJP / JVP checks built on them.

Every check traces the function once, then evaluates graphs with
T.evaluate(..., float64=True), so float32 intermediates (converts, f32 statistics)
are carried in float64 and the finite differences stay accurate to ~1e-9.
"""
import numpy as np

from mlbh import tracer as T
from mlbh.cli.gradient_check import central_difference as fd_grad  # noqa: F401  (used here and re-exported)
from mlbh.tracer import dtypes, pytree

EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8


def is_float(x) -> bool:
    return dtypes.is_float(dtypes.name_of(np.asarray(x).dtype))


def random_like(rng, tree):
    """Standard-normal float64 arrays shaped like the float leaves of tree (zeros elsewhere)."""
    return pytree.tree_map(lambda o: rng.standard_normal(np.shape(o)) if is_float(o)
                           else np.zeros(np.shape(o), np.asarray(o).dtype), tree)


def inner(a, b) -> float:
    """<a, b> summed over the float leaves of two pytrees of the same structure."""
    la, _ = pytree.flatten(a)
    lb, _ = pytree.flatten(b)
    assert len(la) == len(lb)
    return float(sum(np.sum(np.asarray(x, np.float64) * np.asarray(y, np.float64))
                     for x, y in zip(la, lb) if x is not None and y is not None and is_float(x)))


def eval64(fn, *args):
    """fn(*args) traced and run by the reference interpreter in float64."""
    return T.evaluate(T.trace(fn, *args), *args, float64=True)


def vjp64(fn, args, ct):
    """The cotangents of args (a tuple) for output cotangent ct, computed in float64."""
    graph = T.trace(lambda a, c: T.vjp(fn, *a)[1](c), list(args), ct)
    return T.evaluate(graph, list(args), ct, float64=True)


def jvp64(fn, args, tangents):
    graph = T.trace(lambda a, t: T.jvp(fn, a, t), list(args), list(tangents))
    return T.evaluate(graph, list(args), list(tangents), float64=True)


def check_vjp(fn, *args, seed=0, eps=EPS, rtol=RTOL, atol=ATOL, max_entries=None):
    """Compare vjp(fn)(u) with central differences of x -> <u, fn(x)> for a random u.

    Checks every float argument (at most max_entries random entries of each); non-float
    arguments must get a None cotangent. Returns the analytic cotangents.
    """
    args = [np.asarray(a) for a in args]
    graph = T.trace(fn, *args)
    out = T.evaluate(graph, *args, float64=True)
    rng = np.random.default_rng(seed)
    ct = random_like(rng, out)
    analytic = vjp64(fn, args, ct)
    assert len(analytic) == len(args)

    def scalar(*xs):
        return inner(ct, T.evaluate(graph, *xs, float64=True))

    checked = 0
    for i, a in enumerate(args):
        if not is_float(a):
            assert analytic[i] is None, f"argument {i} ({a.dtype}) should get a None cotangent"
            continue
        assert analytic[i].shape == a.shape
        idx = None
        if max_entries is not None and a.size > max_entries:
            idx = rng.choice(a.size, max_entries, replace=False)
        numeric = fd_grad(lambda x: scalar(*args[:i], x, *args[i + 1:]), a, eps, idx)
        got = np.asarray(analytic[i], np.float64)
        if idx is not None:
            got, numeric = got.reshape(-1)[idx], numeric.reshape(-1)[idx]
        np.testing.assert_allclose(got, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"cotangent of argument {i}")
        checked += 1
    assert checked, "no float argument was checked"
    return analytic


def check_jvp(fn, *args, seed=0, eps=EPS, rtol=RTOL, atol=ATOL):
    """jvp(fn) against central differences along a random tangent, and the dot-product
    test <J t, u> == <t, J^T u> against vjp."""
    args = [np.asarray(a) for a in args]
    rng = np.random.default_rng(seed + 1)
    tangents = [rng.standard_normal(a.shape) if is_float(a) else np.zeros(a.shape, a.dtype)
                for a in args]
    out, jt = jvp64(fn, args, tangents)

    def shifted(s):
        return eval64(fn, *[a + s * t if is_float(a) else a for a, t in zip(args, tangents)])

    plus, minus = pytree.flatten(shifted(eps))[0], pytree.flatten(shifted(-eps))[0]
    for got, p, m in zip(pytree.flatten(jt)[0], plus, minus):
        if is_float(p):
            np.testing.assert_allclose(got, (p - m) / (2 * eps), rtol=rtol, atol=atol)
    u = random_like(rng, out)
    jtu = vjp64(fn, args, u)
    lhs = inner(jt, u)
    rhs = inner([t for t, a in zip(tangents, args) if is_float(a)],
                [c for c, a in zip(jtu, args) if is_float(a)])
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs), abs(rhs)), (lhs, rhs)
    return out, jt
