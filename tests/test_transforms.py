"""The transformations: jvp vs vjp vs finite differences, higher-order derivatives,
pytrees, non-float inputs, has_aux / argnums, closures, checkpoint, custom_vjp, and
tracing transformed functions."""
import numpy as np
import pytest

from mlbh import tracer as T
from mlbh.tracer import lax, ops, pytree
from mlbh.tracer.errors import TraceError

from fd import EPS, check_jvp, check_vjp, eval64, fd_grad

R = np.random.default_rng(7)


def randn(*shape):
    return R.standard_normal(shape)


def mlp(x, w1, b1, w2):
    h = ops.tanh(x @ w1 + b1)
    return ops.softmax(h @ w2, -1)


def scalar_fn(x):
    """A smooth R^n -> R with a dense, non-trivial Hessian."""
    return ops.sum(ops.tanh(x) * ops.exp(0.3 * x)) + ops.sum(x) ** 2 * 0.1 + ops.sum(ops.log(1.0 + x * x))


# ---- jvp ---------------------------------------------------------------------------------------
def test_jvp_matches_finite_differences_and_vjp_on_an_mlp():
    check_jvp(mlp, randn(3, 4), randn(4, 5), randn(5), randn(5, 2))


def test_jvp_with_pytree_outputs_and_an_integer_input():
    idx = np.array([2, 0, 2], np.int32)

    def f(x, i, w):
        rows = ops.take(x, i, axis=0)
        return {"a": rows @ w, "b": (ops.sum(ops.exp(x), 0), ops.max(x, 1))}
    out, jt = check_jvp(f, randn(4, 3), idx, randn(3, 2))
    assert sorted(out) == ["a", "b"] and sorted(jt) == ["a", "b"]
    assert jt["a"].shape == (3, 2) and jt["b"][0].shape == (3,) and jt["b"][1].shape == (4,)


def test_eager_jvp_returns_primal_and_tangent():
    x, t = randn(5), randn(5)
    out, jt = T.jvp(ops.tanh, (x,), (t,))
    np.testing.assert_allclose(out, np.tanh(x), rtol=1e-14)
    np.testing.assert_allclose(jt, (1 - np.tanh(x) ** 2) * t, rtol=1e-13)


# ---- higher order ----------------------------------------------------------------------------------
def test_second_derivative_of_a_scalar_function():
    def f(x):
        return x * x * x * ops.exp(-0.5 * x) + ops.tanh(2.0 * x)

    for x0 in (-1.3, 0.2, 2.1):
        x = np.array(x0)
        d2 = T.grad(T.grad(f))(x)
        numeric = fd_grad(lambda y: float(T.grad(f)(y)), x)
        np.testing.assert_allclose(d2, numeric, rtol=1e-6, atol=1e-9)
        exact = (6 * x0 - 3 * x0 ** 2 + 0.25 * x0 ** 3) * np.exp(-0.5 * x0) \
            - 8 * np.tanh(2 * x0) * (1 - np.tanh(2 * x0) ** 2)
        np.testing.assert_allclose(d2, exact, rtol=1e-12)


def test_third_derivative():
    f = lambda x: ops.exp(2.0 * x) * x  # noqa: E731   f''' = (12 + 8x) e^{2x}
    x = np.array(0.7)
    np.testing.assert_allclose(T.grad(T.grad(T.grad(f)))(x), (12 + 8 * 0.7) * np.exp(1.4), rtol=1e-12)


def test_hessian_vector_product_by_grad_of_grad_and_by_jvp_of_grad():
    x, v = randn(6), randn(6)
    hvp = T.grad(lambda x: ops.sum(T.grad(scalar_fn)(x) * v))(x)
    g = T.grad(scalar_fn)
    numeric = (g(x + EPS * v) - g(x - EPS * v)) / (2 * EPS)
    np.testing.assert_allclose(hvp, numeric, rtol=1e-6, atol=1e-8)
    _, jvp_of_grad = T.jvp(T.grad(scalar_fn), (x,), (v,))
    np.testing.assert_allclose(jvp_of_grad, hvp, rtol=1e-12, atol=1e-14)
    # the Hessian is symmetric: <u, H v> == <v, H u>
    u = randn(6)
    hu = T.grad(lambda x: ops.sum(T.grad(scalar_fn)(x) * u))(x)
    np.testing.assert_allclose(u @ hvp, v @ hu, rtol=1e-12)


def test_jvp_of_grad_matches_finite_differences_of_the_grad():
    check_jvp(T.grad(lambda w, x: ops.sum(mlp(x, w, np.zeros(5), np.ones((5, 2)) * 0.3) ** 2)),
              randn(4, 5), randn(3, 4))


def test_grad_of_grad_through_vjp_rules_of_movement_and_dot():
    def f(a, b):
        y = lax.dot_general(a, b, (((0,), (1,)), ((), ())))
        y = lax.pad(lax.slice(y, (0, 1), (3, 4), (2, 1)), 0.0, ((1, 0, 1), (0, 2, 0)))
        return ops.sum(ops.tanh(y) * ops.exp(0.1 * y))

    check_vjp(T.grad(f, argnums=(0, 1)), randn(4, 3), randn(4, 4))


# ---- structure ------------------------------------------------------------------------------------
def test_grads_of_pytrees_keep_their_structure():
    params = {"w": randn(3, 4), "layers": [randn(4), None, (randn(2), randn(4, 2))], "scale": randn()}

    def loss(p, x):
        h = ops.tanh(x @ p["w"] + p["layers"][0])
        b, w2 = p["layers"][2]
        return ops.sum((h @ w2 + b) ** 2) * p["scale"]

    x = randn(5, 3)
    g = T.grad(loss)(params, x)
    assert isinstance(g, dict) and sorted(g) == ["layers", "scale", "w"]
    assert isinstance(g["layers"], list) and len(g["layers"]) == 3 and g["layers"][1] is None
    assert isinstance(g["layers"][2], tuple) and len(g["layers"][2]) == 2
    for got, want in ((g["w"], params["w"]), (g["layers"][0], params["layers"][0]),
                      (g["layers"][2][0], params["layers"][2][0]), (g["layers"][2][1], params["layers"][2][1]),
                      (g["scale"], params["scale"])):
        assert np.shape(got) == np.shape(want)
    numeric = fd_grad(lambda w: float(eval64(lambda p: loss(p, x), {**params, "w": w})), params["w"])
    np.testing.assert_allclose(g["w"], numeric, rtol=1e-6, atol=1e-8)
    numeric = fd_grad(lambda s: float(eval64(lambda p: loss(p, x), {**params, "scale": s})), params["scale"])
    np.testing.assert_allclose(g["scale"], numeric, rtol=1e-6, atol=1e-8)


def test_integer_and_bool_inputs_get_none_gradients():
    x = randn(4)
    idx = np.array([3, 1], np.int32)
    mask = np.array([True, False, True, True])

    def f(x, idx, mask):
        return ops.sum(ops.where(mask, x, 0.0)) + ops.sum(ops.take(x, idx))

    gx, gi, gm = T.grad(f, argnums=(0, 1, 2))(x, idx, mask)
    assert gi is None and gm is None
    np.testing.assert_array_equal(gx, [1.0, 1.0, 1.0, 2.0])
    g = T.grad(lambda p: f(p["x"], p["i"], mask))({"x": x, "i": idx})
    assert g["i"] is None
    np.testing.assert_array_equal(g["x"], gx)
    _, vjp_fn = T.vjp(f, x, idx, mask)
    cts = vjp_fn(np.array(1.0))
    assert cts[1] is None and cts[2] is None


def test_has_aux():
    x = randn(3)

    def f(x):
        y = ops.exp(x)
        return ops.sum(y), {"y": y, "n": ops.argmax(x)}

    g, aux = T.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g, np.exp(x), rtol=1e-14)
    np.testing.assert_allclose(aux["y"], np.exp(x), rtol=1e-14)
    assert int(aux["n"]) == int(np.argmax(x))
    (value, aux), g2 = T.value_and_grad(f, has_aux=True)(x)
    np.testing.assert_allclose(value, np.exp(x).sum(), rtol=1e-14)
    np.testing.assert_array_equal(g2, g)


def test_value_and_grad_with_argnums_tuple():
    a, b, c = randn(3), randn(3), randn(3)

    def f(a, b, c):
        return ops.sum(a * b * ops.exp(c))

    value, grads = T.value_and_grad(f, argnums=(0, 2))(a, b, c)
    assert isinstance(grads, tuple) and len(grads) == 2
    np.testing.assert_allclose(value, np.sum(a * b * np.exp(c)), rtol=1e-14)
    np.testing.assert_allclose(grads[0], b * np.exp(c), rtol=1e-14)
    np.testing.assert_allclose(grads[1], a * b * np.exp(c), rtol=1e-14)
    g1 = T.grad(f, argnums=1)(a, b, c)
    np.testing.assert_allclose(g1, a * np.exp(c), rtol=1e-14)


def test_grad_of_a_lambda_closing_over_an_outer_traced_value():
    x = randn(4)

    def inner_grad(x):
        # d/dy sum(x * y^2) at y = x is 2 x * x; x is a value of the enclosing trace
        return T.grad(lambda y: ops.sum(x * y * y))(x)

    np.testing.assert_allclose(eval64(inner_grad, x), 2 * x * x, rtol=1e-14)
    # differentiate through the closure: d/dx sum(2 x^2) = 4x, which needs the captured x
    np.testing.assert_allclose(T.grad(lambda x: ops.sum(inner_grad(x)))(x), 4 * x, rtol=1e-14)
    check_vjp(inner_grad, x)


def test_input_used_twice_and_output_independent_of_input():
    x = randn(3)
    np.testing.assert_allclose(T.grad(lambda x: ops.sum(x * x + x))(x), 2 * x + 1, rtol=1e-14)
    g = T.grad(lambda x, y: ops.sum(y * 2.0), argnums=0)(x, randn(3))
    np.testing.assert_array_equal(g, np.zeros(3))


def test_grad_needs_a_scalar_output():
    with pytest.raises(TraceError, match="scalar"):
        T.grad(lambda x: x * 2.0)(randn(3))


def test_vjp_checks_the_cotangent_structure():
    _, vjp_fn = T.vjp(lambda x: (x, x * 2.0), randn(3))
    with pytest.raises(TraceError, match="structure"):
        vjp_fn(randn(3))
    cts = vjp_fn((np.ones(3), np.ones(3)))
    np.testing.assert_array_equal(cts[0], np.full(3, 3.0))


# ---- checkpoint ------------------------------------------------------------------------------------
def _block(h, w, b):
    return ops.gelu(h @ w + b) + h


def _model(params, x, remat):
    block = T.checkpoint(_block, name="blk") if remat else _block
    h = x
    for w, b in params:
        h = block(h, w, b)
    return ops.sum(ops.layer_norm(h, np.ones(4), np.zeros(4)) ** 2)


def test_checkpoint_gives_the_same_grads_and_recomputes():
    params = [(randn(4, 4) * 0.5, randn(4)) for _ in range(2)]
    x = randn(3, 4)
    g_plain = T.grad(lambda p, x: _model(p, x, False))(params, x)
    g_remat = T.grad(lambda p, x: _model(p, x, True))(params, x)
    for (w0, b0), (w1, b1) in zip(g_plain, g_remat):
        np.testing.assert_allclose(w1, w0, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(b1, b0, rtol=1e-13, atol=1e-15)

    graph = T.trace(T.grad(lambda p, x: _model(p, x, True)), params, x)
    ckpts = [e for e in graph.eqns if e.prim == "checkpoint"]
    assert len(ckpts) == 2 and all(e.params["name"] == "blk" for e in ckpts)
    remat = [e for e in graph.eqns if "remat" in e.scope]
    # the backward pass replays every eqn of each checkpointed block
    assert len(remat) == sum(len(e.params["graph"].eqns) for e in ckpts) > 0
    assert all("remat(blk)" in e.scope for e in remat)
    # and without checkpoint there is nothing to recompute
    plain = T.trace(T.grad(lambda p, x: _model(p, x, False)), params, x)
    assert not any("remat" in e.scope for e in plain.eqns)
    assert "checkpoint" not in plain.op_counts()


def test_held_graphs_name_their_eqns_once_under_the_enclosing_scope():
    """A checkpoint's or custom_vjp's graph is traced with scopes relative to its eqn, so
    inlined (codegen.prepare) or replayed backward its eqns read outer/inner, not
    outer/outer/inner."""
    from mlbh.codegen.prepare import prepare
    from mlbh.tracer.tracing import name_scope

    def f(x):
        with name_scope("outer"):
            return ops.sum(ops.softmax(x) * T.checkpoint(lambda y: ops.tanh(y) * 2.0, name="blk")(x))

    graph = prepare(T.trace(T.value_and_grad(f), np.ones((2, 3), np.float32)))
    scopes = {e.scope for e in graph.eqns}
    assert {"outer/softmax", "vjp(outer)/softmax.bwd", "vjp(outer)/remat(blk)"} <= scopes
    assert not any(s.count("outer") > 1 for s in scopes), scopes


def test_checkpoint_grad_of_grad():
    f = T.checkpoint(lambda x: ops.exp(x) * ops.tanh(x))
    x = np.array(0.4)
    d2 = T.grad(T.grad(f))(x)
    numeric = fd_grad(lambda y: float(T.grad(f)(y)), x)
    np.testing.assert_allclose(d2, numeric, rtol=1e-6)


def test_checkpoint_closing_over_an_outer_value():
    w = randn(3, 3)

    def f(x, w):
        return ops.sum(T.checkpoint(lambda h: ops.tanh(h @ w))(x) ** 2)

    check_vjp(f, randn(2, 3), w)


# ---- custom_vjp --------------------------------------------------------------------------------------
@T.custom_vjp
def straight_through_sign(x):
    return ops.astype(ops.where(x > 0, 1.0, -1.0), x.dtype)


straight_through_sign.defvjp(lambda x: (straight_through_sign(x), ()),
                             lambda res, ct: (ct,))


@T.custom_vjp
def scaled_identity(x, y):
    return x + y


scaled_identity.defvjp(lambda x, y: (x + y, (x,)), lambda res, ct: (3.0 * ct, ct * res[0]))


def test_custom_vjp_straight_through_is_honoured():
    x = randn(5)
    np.testing.assert_array_equal(eval64(straight_through_sign, x), np.where(x > 0, 1.0, -1.0))
    w = randn(5)
    g = T.grad(lambda x: ops.sum(straight_through_sign(x) * w))(x)
    np.testing.assert_array_equal(g, w)  # the true derivative would be 0
    # outside a trace the primal function runs
    np.testing.assert_array_equal(straight_through_sign(x), np.where(x > 0, 1.0, -1.0))


def test_custom_vjp_arbitrary_backward_with_residuals():
    x, y = randn(4), randn(4)
    gx, gy = T.grad(lambda x, y: ops.sum(scaled_identity(x, y)), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, np.full(4, 3.0))
    np.testing.assert_allclose(gy, x)
    graph = T.trace(lambda x, y: scaled_identity(x, y), x, y)
    assert graph.op_counts() == {"custom_vjp": 1}


def test_custom_vjp_none_cotangents_and_pytree_arguments():
    @T.custom_vjp
    def f(x, y):
        return x * y
    f.defvjp(lambda x, y: (x * y, (x,)), lambda res, ct: (None, ct * res[0]))
    x, y = randn(3), randn(3)
    gx, gy = T.grad(lambda x, y: ops.sum(f(x, y)), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gx, np.zeros(3))  # None means zero, not "shift the next one up"
    np.testing.assert_array_equal(gy, x)

    @T.custom_vjp
    def g(p, scale):
        return {"a": p["u"] * scale, "b": (p["v"] + 1.0,)}
    g.defvjp(lambda p, s: (g(p, s), (s,)),
             lambda res, ct: ({"u": ct["a"] * 10.0, "v": None}, ops.sum(ct["b"][0]) * res[0]))
    p = {"u": randn(2), "v": randn(4)}
    s = np.array(0.5)
    gp, gs = T.grad(lambda p, s: ops.sum(g(p, s)["a"]) + ops.sum(g(p, s)["b"][0] * 2.0), argnums=(0, 1))(p, s)
    np.testing.assert_array_equal(gp["u"], np.full(2, 10.0))
    np.testing.assert_array_equal(gp["v"], np.zeros(4))
    np.testing.assert_allclose(gs, 2 * 4 * 0.5, rtol=1e-15)


def test_custom_vjp_rejects_a_badly_shaped_backward():
    @T.custom_vjp
    def f(x, y):
        return x + y
    f.defvjp(lambda x, y: (x + y, ()), lambda res, ct: (ct,))  # one cotangent for two arguments
    with pytest.raises(TraceError, match="one cotangent per argument"):
        T.trace(f, randn(3), randn(3))

    @T.custom_vjp
    def h(x):
        return x * 2.0
    h.defvjp(lambda x: (x * 2.0, ()), lambda res, ct: (ops.sum(ct),))
    with pytest.raises(TraceError, match="shape"):
        T.trace(h, randn(3))


def test_checkpoint_with_pytree_arguments_and_several_outputs():
    def blk(p, x):
        h = ops.tanh(x @ p["w"]) + p["b"][0]
        return h, {"norm": ops.sum(h * h)}

    def loss(p, x, remat):
        h, aux = (T.checkpoint(blk) if remat else blk)(p, x)
        return ops.sum(h * x) + aux["norm"]

    p = {"w": randn(3, 3), "b": [randn(3)]}
    x = randn(2, 3)
    for argnum in (0, 1):
        a = T.grad(lambda p, x: loss(p, x, True), argnums=argnum)(p, x)
        b = T.grad(lambda p, x: loss(p, x, False), argnums=argnum)(p, x)
        for u, v in zip(pytree.flatten(a)[0], pytree.flatten(b)[0]):
            np.testing.assert_allclose(u, v, rtol=1e-13, atol=1e-15)
    check_vjp(lambda w, b, x: loss({"w": w, "b": [b]}, x, True), p["w"], p["b"][0], x)


def test_custom_vjp_needs_defvjp():
    @T.custom_vjp
    def f(x):
        return x

    with pytest.raises(TraceError, match="defvjp"):
        T.trace(f, randn(2))


# ---- tracing transformed functions ----------------------------------------------------------------------
def test_a_transformed_function_can_be_traced():
    def f(x, w):
        return ops.sum(ops.tanh(x @ w) ** 2)

    x, w = randn(3, 4), randn(4, 2)
    graph = T.trace(T.grad(f, argnums=(0, 1)), x, w)
    assert isinstance(graph, T.Graph) and len(graph.inputs) == 2 and len(graph.outputs) == 2
    assert "dot_general" in graph.op_counts()
    gx, gw = T.evaluate(graph, x, w)
    ex, ew = T.grad(f, argnums=(0, 1))(x, w)
    np.testing.assert_array_equal(gx, ex)
    np.testing.assert_array_equal(gw, ew)
    # a jvp can be traced too, and vjp of a traced vjp
    g2 = T.trace(lambda x, t: T.jvp(lambda x: f(x, w), (x,), (t,)), x, x)
    out, tangent = T.evaluate(g2, x, x)
    np.testing.assert_allclose(out, eval64(f, x, w), rtol=1e-14)
    np.testing.assert_allclose(tangent, np.sum(gx * x), rtol=1e-12)
