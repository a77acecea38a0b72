"""nn ops against plain numpy float64 formulas (and torch.nn.functional where torch is
importable), their gradients against finite differences, dropout's statistics, and a
small GPT block end to end."""
import math

import numpy as np
import pytest

from mlbh import tracer as T
from mlbh.tracer import dtypes, ops, pytree

from fd import check_vjp, eval64, vjp64

R = np.random.default_rng(42)


def randn(*shape):
    return R.standard_normal(shape)


# ---- numpy references ----------------------------------------------------------------------------
def np_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def np_log_softmax(x, axis=-1):
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))


def np_softmax(x, axis=-1):
    return np.exp(np_log_softmax(x, axis))


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_causal_attention(q, k, v):
    t, d = q.shape[-2], q.shape[-1]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    return np_softmax(s, -1) @ v


def np_cross_entropy(logits, targets, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    c = logits.shape[-1]
    logp = np_log_softmax(logits.reshape(-1, c))
    t = targets.reshape(-1)
    valid = t != ignore_index
    nll = -logp[np.arange(len(t)), np.where(valid, t, 0)]
    loss = (1 - label_smoothing) * nll + label_smoothing * (-logp.mean(-1))
    loss = np.where(valid, loss, 0.0)
    if reduction == "none":
        return loss.reshape(targets.shape)
    return loss.sum() if reduction == "sum" else loss.sum() / valid.sum()


def _torch():
    torch = pytest.importorskip("torch")
    return torch, torch.nn.functional


# ---- values --------------------------------------------------------------------------------------------
def test_layer_norm_value():
    x, w, b = randn(2, 3, 8), randn(8), randn(8)
    np.testing.assert_allclose(eval64(ops.layer_norm, x, w, b), np_layer_norm(x, w, b), rtol=1e-12, atol=1e-13)
    got32 = T.evaluate(T.trace(ops.layer_norm, *(a.astype(np.float32) for a in (x, w, b))),
                       *(a.astype(np.float32) for a in (x, w, b)))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, np_layer_norm(x, w, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax_values(axis):
    x = randn(3, 4, 5) * 3
    np.testing.assert_allclose(eval64(lambda x: ops.softmax(x, axis), x), np_softmax(x, axis), rtol=1e-12)
    np.testing.assert_allclose(eval64(lambda x: ops.log_softmax(x, axis), x), np_log_softmax(x, axis),
                               rtol=1e-12, atol=1e-13)
    big = np.array([[1000.0, 0.0, -1000.0]])  # no overflow thanks to the max shift
    np.testing.assert_allclose(eval64(ops.softmax, big), [[1.0, 0.0, 0.0]], atol=1e-300)
    np.testing.assert_allclose(eval64(ops.log_softmax, big), [[0.0, -1000.0, -2000.0]], rtol=1e-15)


def test_gelu_value():
    x = np.linspace(-6, 6, 49)
    np.testing.assert_allclose(eval64(ops.gelu, x), np_gelu(x), rtol=1e-13, atol=1e-15)


def test_causal_attention_value_and_causality():
    q, k, v = randn(2, 2, 5, 4), randn(2, 2, 5, 4), randn(2, 2, 5, 4)
    out = eval64(ops.causal_attention, q, k, v)
    np.testing.assert_allclose(out, np_causal_attention(q, k, v), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(out[:, :, 0], v[:, :, 0], rtol=1e-13)  # row 0 sees only itself
    k2, v2 = k.copy(), v.copy()
    k2[:, :, 3:] += 5.0
    v2[:, :, 3:] -= 7.0  # the future cannot change the past
    np.testing.assert_array_equal(eval64(ops.causal_attention, q, k2, v2)[:, :, :3], out[:, :, :3])


CE_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(ignore_index=2),
    dict(ignore_index=-100, label_smoothing=0.1),
    dict(ignore_index=2, label_smoothing=0.2, reduction="sum"),
    dict(ignore_index=2, label_smoothing=0.2, reduction="mean"),
    dict(ignore_index=2, reduction="none"),
]


def _ce_data(kw):
    logits = randn(2, 5, 7) * 2
    targets = R.integers(0, 7, (2, 5)).astype(np.int32)
    targets[0, 1] = targets[1, 3] = 2  # some ignored positions when ignore_index=2
    # -100 is ignored only by the default ignore_index; otherwise it would be out of range
    targets[1, 0] = -100 if kw.get("ignore_index", -100) == -100 else 0
    return logits, targets


@pytest.mark.parametrize("kw", CE_CASES, ids=str)
def test_cross_entropy_value(kw):
    logits, targets = _ce_data(kw)
    got = eval64(lambda l, t: ops.cross_entropy(l, t, **kw), logits, targets)
    np.testing.assert_allclose(got, np_cross_entropy(logits, targets, **kw), rtol=1e-12)


# ---- against torch.nn.functional -----------------------------------------------------------------------
def test_values_match_torch():
    torch, F = _torch()
    x, w, b = randn(2, 3, 8), randn(8), randn(8)
    t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731
    np.testing.assert_allclose(eval64(ops.layer_norm, x, w, b),
                               F.layer_norm(t(x), (8,), t(w), t(b), eps=1e-5).numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(eval64(ops.softmax, x), F.softmax(t(x), -1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(eval64(lambda x: ops.log_softmax(x, 1), x), F.log_softmax(t(x), 1).numpy(),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(eval64(ops.gelu, x), F.gelu(t(x), approximate="tanh").numpy(),
                               rtol=1e-12, atol=1e-14)
    q, k, v = randn(2, 2, 5, 4), randn(2, 2, 5, 4), randn(2, 2, 5, 4)
    np.testing.assert_allclose(eval64(ops.causal_attention, q, k, v),
                               F.scaled_dot_product_attention(t(q), t(k), t(v), is_causal=True).numpy(),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kw", CE_CASES, ids=str)
def test_cross_entropy_matches_torch(kw):
    torch, F = _torch()
    logits, targets = _ce_data(kw)
    got = eval64(lambda l, t: ops.cross_entropy(l, t, **kw), logits, targets)
    want = F.cross_entropy(torch.from_numpy(logits).reshape(-1, 7), torch.from_numpy(targets.astype(np.int64)).reshape(-1),
                           **kw).numpy()
    np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-12)


# ---- gradients against finite differences ------------------------------------------------------------------
def test_layer_norm_grad():
    check_vjp(ops.layer_norm, randn(2, 3, 6), randn(6), randn(6))


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_grads(axis):
    check_vjp(lambda x: ops.softmax(x, axis), randn(2, 3, 4))
    check_vjp(lambda x: ops.log_softmax(x, axis), randn(2, 3, 4))


def test_gelu_grad():
    check_vjp(ops.gelu, randn(3, 5) * 2)


def test_causal_attention_grad():
    check_vjp(ops.causal_attention, randn(1, 2, 4, 3), randn(1, 2, 4, 3), randn(1, 2, 4, 3))


@pytest.mark.parametrize("kw", CE_CASES, ids=str)
def test_cross_entropy_grad(kw):
    logits, targets = _ce_data(kw)
    g = check_vjp(lambda l, t: ops.cross_entropy(l, t, **kw), logits, targets)
    ignored = targets == kw.get("ignore_index", -100)
    assert ignored.any()
    np.testing.assert_array_equal(g[0][ignored], 0.0)  # ignored positions get no gradient


def test_cross_entropy_grads_match_torch():
    torch, F = _torch()
    kw = dict(ignore_index=-100, label_smoothing=0.15)
    logits, targets = _ce_data(kw)
    g = T.grad(lambda l: ops.cross_entropy(l, targets, **kw))(logits)
    lt = torch.from_numpy(logits).requires_grad_()
    F.cross_entropy(lt.reshape(-1, 7), torch.from_numpy(targets.astype(np.int64)).reshape(-1), **kw).backward()
    np.testing.assert_allclose(g, lt.grad.numpy(), rtol=1e-12, atol=1e-15)


# ---- dropout ---------------------------------------------------------------------------------------------
def test_dropout_rate_zero_is_identity():
    x = randn(3, 4)
    np.testing.assert_array_equal(eval64(lambda x: ops.dropout(x, 0.0, ops.random_key(1)), x), x)
    assert T.trace(lambda x: ops.dropout(x, 0.0, ops.random_key(1)), x).eqns == []


def test_dropout_mask_statistics_and_scaling():
    x = np.ones((64, 64))
    for rate in (0.1, 0.5, 0.9):
        y = eval64(lambda x: ops.dropout(x, rate, ops.random_key(3)), x)
        dropped = (y == 0).mean()
        assert abs(dropped - rate) < 0.03, (rate, dropped)
        np.testing.assert_allclose(y[y != 0], 1 / (1 - rate), rtol=1e-15)


def test_dropout_same_key_same_mask_other_key_other_mask():
    x = randn(32, 32)
    key = ops.random_key(11)
    a = eval64(lambda x: ops.dropout(x, 0.5, key), x)
    b = eval64(lambda x: ops.dropout(x, 0.5, key), x + 1.0)
    np.testing.assert_array_equal(a == 0, b == 0)
    c = eval64(lambda x: ops.dropout(x, 0.5, ops.fold_in(key, 1)), x)
    d = eval64(lambda x: ops.dropout(x, 0.5, ops.random_key(12)), x)
    assert ((a == 0) != (c == 0)).mean() > 0.3 and ((a == 0) != (d == 0)).mean() > 0.3
    # a traced key gives the same mask as the constant key
    e = T.evaluate(T.trace(lambda x, k: ops.dropout(x, 0.5, k), x, key), x, key, float64=True)
    np.testing.assert_array_equal(e, a)


def test_dropout_grads_flow_only_through_kept_elements():
    x, w = randn(16, 8), randn(16, 8)
    key = ops.random_key(5)
    kept = eval64(lambda x: ops.dropout(x, 0.25, key), np.ones((16, 8))) != 0
    g = T.grad(lambda x: ops.sum(ops.dropout(x, 0.25, key) * w))(x)
    np.testing.assert_allclose(g, np.where(kept, w / 0.75, 0.0), rtol=1e-15)
    check_vjp(lambda x: ops.dropout(x, 0.25, key), x)


def test_dropout_rejects_bad_rates():
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="rate"):
            ops.dropout(np.ones(3), rate, ops.random_key(0))


# ---- a small GPT block ---------------------------------------------------------------------------------------
B, S, D, H, V = 2, 5, 8, 2, 11


def gpt_params(seed=0):
    r = np.random.default_rng(seed)

    def ln():
        return {"w": 1 + 0.1 * r.standard_normal(D), "b": 0.1 * r.standard_normal(D)}

    def lin(i, o):
        return {"w": r.standard_normal((i, o)) / math.sqrt(i), "b": 0.1 * r.standard_normal(o)}

    return {"wte": 0.5 * r.standard_normal((V, D)), "wpe": 0.5 * r.standard_normal((S, D)),
            "ln1": ln(), "qkv": lin(D, 3 * D), "proj": lin(D, D), "ln2": ln(),
            "fc": lin(D, 4 * D), "fc2": lin(4 * D, D), "lnf": ln(), "head": r.standard_normal((D, V)) / math.sqrt(D)}


def gpt_batch(seed=0):
    r = np.random.default_rng(seed + 100)
    return r.integers(0, V, (B, S)).astype(np.int32), r.integers(0, V, (B, S)).astype(np.int32)


def gpt_loss(p, tokens, targets):
    x = ops.take(p["wte"], tokens, axis=0) + p["wpe"]
    h = ops.layer_norm(x, p["ln1"]["w"], p["ln1"]["b"])
    q, k, v = ops.split(h @ p["qkv"]["w"] + p["qkv"]["b"], 3, axis=-1)

    def heads(t):
        return ops.transpose(ops.reshape(t, (B, S, H, D // H)), (0, 2, 1, 3))

    a = ops.causal_attention(heads(q), heads(k), heads(v))
    a = ops.reshape(ops.transpose(a, (0, 2, 1, 3)), (B, S, D))
    x = x + a @ p["proj"]["w"] + p["proj"]["b"]
    h = ops.layer_norm(x, p["ln2"]["w"], p["ln2"]["b"])
    x = x + ops.gelu(h @ p["fc"]["w"] + p["fc"]["b"]) @ p["fc2"]["w"] + p["fc2"]["b"]
    logits = ops.layer_norm(x, p["lnf"]["w"], p["lnf"]["b"]) @ p["head"]
    return ops.cross_entropy(logits, targets)


def np_gpt_loss(p, tokens, targets):
    x = p["wte"][tokens] + p["wpe"]
    h = np_layer_norm(x, p["ln1"]["w"], p["ln1"]["b"])
    q, k, v = np.split(h @ p["qkv"]["w"] + p["qkv"]["b"], 3, axis=-1)

    def heads(t):
        return t.reshape(B, S, H, D // H).transpose(0, 2, 1, 3)

    a = np_causal_attention(heads(q), heads(k), heads(v)).transpose(0, 2, 1, 3).reshape(B, S, D)
    x = x + a @ p["proj"]["w"] + p["proj"]["b"]
    h = np_layer_norm(x, p["ln2"]["w"], p["ln2"]["b"])
    x = x + np_gelu(h @ p["fc"]["w"] + p["fc"]["b"]) @ p["fc2"]["w"] + p["fc2"]["b"]
    logits = np_layer_norm(x, p["lnf"]["w"], p["lnf"]["b"]) @ p["head"]
    return np_cross_entropy(logits, targets)


def test_gpt_block_loss_matches_numpy():
    p = gpt_params()
    tokens, targets = gpt_batch()
    got = eval64(gpt_loss, p, tokens, targets)
    np.testing.assert_allclose(got, np_gpt_loss(p, tokens, targets), rtol=1e-12)
    assert 1.0 < float(got) < 2 * math.log(V)
    p32 = pytree.tree_map(lambda a: a.astype(np.float32), p)
    got32 = T.evaluate(T.trace(gpt_loss, p32, tokens, targets), p32, tokens, targets)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, got, rtol=1e-5)


def test_gpt_block_grads_for_all_params_match_finite_differences():
    p = gpt_params(1)
    tokens, targets = gpt_batch(1)
    leaves, tree = pytree.flatten(p)

    def loss_of_leaves(*xs):
        return gpt_loss(pytree.unflatten(tree, list(xs[:-2])), xs[-2], xs[-1])

    # params of up to 40 entries are checked whole, larger ones at 40 random entries
    analytic = check_vjp(loss_of_leaves, *leaves, tokens, targets, max_entries=40)
    assert len(analytic) == len(leaves) + 2 and analytic[-1] is None and analytic[-2] is None
    for g, leaf in zip(analytic, leaves):
        assert g.shape == leaf.shape and np.abs(g).max() > 0
    # the pytree-level grad returns the same numbers with the params' structure
    g_tree = T.grad(gpt_loss)(p, tokens, targets)
    g_leaves, g_treedef = pytree.flatten(g_tree)
    assert g_treedef == tree
    flat_grads = vjp64(loss_of_leaves, (*leaves, tokens, targets), np.array(1.0))
    for a, b in zip(g_leaves, flat_grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_gpt_block_grads_match_torch():
    torch, F = _torch()
    p = gpt_params(2)
    tokens, targets = gpt_batch(2)
    tp = pytree.tree_map(lambda a: torch.from_numpy(a).requires_grad_(), p)

    def ln(x, q):
        return F.layer_norm(x, (D,), q["w"], q["b"], eps=1e-5)

    x = tp["wte"][torch.from_numpy(tokens.astype(np.int64))] + tp["wpe"]
    q, k, v = (ln(x, tp["ln1"]) @ tp["qkv"]["w"] + tp["qkv"]["b"]).split(D, -1)
    heads = lambda t: t.reshape(B, S, H, D // H).transpose(1, 2)  # noqa: E731
    a = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
    x = x + a.transpose(1, 2).reshape(B, S, D) @ tp["proj"]["w"] + tp["proj"]["b"]
    x = x + F.gelu(ln(x, tp["ln2"]) @ tp["fc"]["w"] + tp["fc"]["b"], approximate="tanh") @ tp["fc2"]["w"] \
        + tp["fc2"]["b"]
    logits = ln(x, tp["lnf"]) @ tp["head"]
    loss = F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets.astype(np.int64)).reshape(-1))
    loss.backward()
    value, g = T.value_and_grad(gpt_loss)(p, tokens, targets)
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    for got, want in zip(pytree.flatten(g)[0], pytree.flatten(tp)[0]):
        np.testing.assert_allclose(got, want.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_gpt_block_in_low_precision(low):
    """Low-precision params: grads come back in the params' dtype, the loss in float32
    (f32 statistics), and both stay within the precision of the format of the f32 result."""
    p = gpt_params(5)
    tokens, targets = gpt_batch(5)
    dt = np.dtype(dtypes.to_numpy(low))
    value, g = T.value_and_grad(gpt_loss)(pytree.tree_map(lambda a: a.astype(dt), p), tokens, targets)
    v32, g32 = T.value_and_grad(gpt_loss)(pytree.tree_map(lambda a: a.astype(np.float32), p), tokens, targets)
    assert value.dtype == np.float32
    ulp = 2.0 ** -8 if low == "bfloat16" else 2.0 ** -11
    assert abs(float(value) - float(v32)) < 8 * ulp * abs(float(v32))
    for a, b in zip(pytree.flatten(g)[0], pytree.flatten(g32)[0]):
        assert a.dtype == dt
        assert np.abs(a.astype(np.float32) - b).max() < 8 * ulp * np.abs(b).max()


def test_vjp64_handles_the_gpt_block_cotangent_scale():
    # the loss is linear in its cotangent: a cotangent of 3 triples every gradient
    p = gpt_params(3)
    tokens, targets = gpt_batch(3)
    g1 = vjp64(gpt_loss, (p, tokens, targets), np.array(1.0))[0]
    g3 = vjp64(gpt_loss, (p, tokens, targets), np.array(3.0))[0]
    for a, b in zip(pytree.flatten(g1)[0], pytree.flatten(g3)[0]):
        np.testing.assert_allclose(b, 3 * a, rtol=1e-13, atol=1e-16)
