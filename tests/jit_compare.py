"""Comparing a compiled backend's results with the reference interpreter's.

Floats: both sides compute in float32, so they differ only by rounding (summation order,
BLAS blocking, libm): rtol RTOL plus an absolute slack of ATOL_SCALE times the array's own
largest magnitude. A leaf that cancels to ~0 everywhere (the gradient of a softmax over
equal entries, say) keeps the rounding error of the terms it summed, which are the size
of the computation's other values: so the magnitude used is never below FLOOR times the
largest magnitude in the whole expected result, and the absolute slack never below
CANCEL_ULPS float32 ulps of that largest magnitude (two terms of 0.06 that cancel leave
+-7.5e-9, one ulp of 0.06, whose sign depends on the summation order). Integers and
bools must match exactly.
"""
import numpy as np

from mlbh.tracer import pytree

RTOL = 1e-5
ATOL_SCALE = 1e-5
FLOOR = 1e-4
CANCEL_ULPS = 4


def assert_same_tree(got, want, what="result"):
    got_leaves, got_tree = pytree.flatten(got)
    want_leaves, want_tree = pytree.flatten(want)
    assert got_tree == want_tree, f"{what}: structure {got_tree} != {want_tree}"
    overall = max([_magnitude(np.asarray(w)) for w in want_leaves], default=0.0)
    for i, (g, w) in enumerate(zip(got_leaves, want_leaves)):
        assert_same_array(g, w, f"{what} leaf {i}", max(_magnitude(np.asarray(w)), FLOOR * overall),
                          cancel_slack=CANCEL_ULPS * float(np.finfo(np.float32).eps) * overall)


def _magnitude(a):
    """The largest finite magnitude of a float array (0 for other dtypes)."""
    if a.dtype.kind != "f":
        return 0.0
    finite = a[np.isfinite(a)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def assert_same_array(got, want, what="array", scale=None, cancel_slack=0.0):
    """scale: the magnitude the absolute tolerance is relative to (default: want's own);
    cancel_slack: the smallest absolute tolerance (rounding left by cancellation)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=f"{what}: non-finite entries differ")
    np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=what)
    scale = _magnitude(want) if scale is None else scale
    np.testing.assert_allclose(got[finite], want[finite], rtol=RTOL,
                               atol=max(ATOL_SCALE * max(scale, 1e-30), cancel_slack), err_msg=what)
