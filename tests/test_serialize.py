"""JSON save/load: lossless round trips, and one-line IRFileErrors for bad files."""
import json
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbh import tracer as T
from mlbh.tracer import lax, ops, pytree
from mlbh.tracer.errors import IRFileError
from mlbh.tracer.serialize import digest, dumps, loads

from test_passes import SHAPES, build, programs

R = np.random.default_rng(5)


def randn(*shape):
    return R.standard_normal(shape).astype(np.float32)


def roundtrip(graph, tmp_path, name="g.json"):
    path = tmp_path / name
    T.save(graph, path)
    assert os.listdir(tmp_path) == [name]  # written atomically: no temporary file left behind
    loaded = T.load(path)
    assert str(loaded) == str(graph)
    assert loaded.in_tree == graph.in_tree and loaded.out_tree == graph.out_tree
    assert loaded.provenance == graph.provenance
    assert dumps(loaded) == dumps(graph)  # a second round trip changes nothing
    assert digest(loaded) == digest(graph)  # the cache key covers only what the file holds
    return loaded


def assert_same(a, b):
    la, ta = pytree.flatten(a)
    lb, tb = pytree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)  # NaNs compare equal here


def check(fn, args, tmp_path):
    graph = T.trace(fn, *args)
    loaded = roundtrip(graph, tmp_path)
    assert_same(T.evaluate(graph, *args), T.evaluate(loaded, *args))
    assert_same(T.evaluate(graph, *args, float64=True), T.evaluate(loaded, *args, float64=True))
    return graph, loaded


def test_constants_of_every_dtype(tmp_path):
    consts = {
        "f32": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        "bf16": np.array([[1.5, -2.25, 3.0e20], [1e-3, 0.0, -0.0]], dtype=ml_dtypes.bfloat16),
        "f16": np.array([[0.1, 65504, -1e-4]] * 2, dtype=np.float16),
        "f64": np.array([[np.pi, -np.e, 1e-300]] * 2),
        "i32": np.array([[1, -2, 2 ** 31 - 1]] * 2, dtype=np.int32),
        "i64": np.array([[2 ** 40, -1, 0]] * 2, dtype=np.int64),
        "u32": np.array([[0, 2 ** 32 - 1, 7]] * 2, dtype=np.uint32),
        "bool": np.array([[True, False, True]] * 2),
    }

    def f(x):
        out = {}
        for k, c in consts.items():
            cc = ops.asarray(c)
            out[k] = (x * ops.astype(cc, "float32")) if k != "bool" else ops.where(cc, x, -x)
            out[k + "_raw"] = lax.reshape(cc, (6,)) if c.dtype != np.float32 else cc * 1.0
        return out
    graph, loaded = check(f, (randn(2, 3),), tmp_path)
    loaded_consts = [e.params["value"] for e in loaded.eqns if e.prim == "constant"]
    orig_consts = [e.params["value"] for e in graph.eqns if e.prim == "constant"]
    assert len(loaded_consts) == len(orig_consts) >= len(consts)
    assert {str(c.dtype) for c in loaded_consts} >= {"bfloat16", "float16", "float32", "float64", "int32",
                                                     "int64", "uint32", "bool"}
    for a, b in zip(orig_consts, loaded_consts):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_nonfinite_params_and_tuples(tmp_path):
    def f(x):
        p = lax.pad(x, float("-inf"), ((1, 0, 1), (0, 2, 0)))
        n = lax.full((2, 2), float("nan"), "float32")
        i = lax.full((2,), float("inf"), "bfloat16")
        d = lax.dot_general(x, x, (((0,), (0,)), ((), ())))
        s = lax.slice(x, (0, 1), (3, 4), (2, 2))
        return p, n, i, d, s, ops.causal_attention(*(ops.reshape(x, (1, 1, 3, 4)),) * 3)
    graph, loaded = check(f, (randn(3, 4),), tmp_path)
    pads = [e for e in loaded.eqns if e.prim == "pad"]
    assert pads[0].params["padding_value"] == float("-inf")
    assert pads[0].params["padding_config"] == ((1, 0, 1), (0, 2, 0))
    assert isinstance(pads[0].params["padding_config"], tuple)
    nan = [e for e in loaded.eqns if e.prim == "full" and e.params["value"] != e.params["value"]]
    assert len(nan) == 1 and nan[0].params["dtype"] == "float32"
    dots = [e for e in loaded.eqns if e.prim == "dot_general"]
    assert dots[0].params["dimension_numbers"] == (((0,), (0,)), ((), ()))


def test_pytree_inputs_and_outputs(tmp_path):
    params = {"w": randn(3, 4), "bs": [randn(4), None, (randn(2),)]}

    def f(p, x):
        return {"y": (x @ p["w"] + p["bs"][0],), "z": [ops.sum(p["bs"][2][0]), None]}
    x = randn(5, 3)
    graph, loaded = check(f, (params, x), tmp_path)
    out = T.evaluate(loaded, params, x)
    assert isinstance(out, dict) and isinstance(out["y"], tuple) and out["z"][1] is None


def test_nested_graphs_checkpoint_and_custom_vjp(tmp_path):
    @T.custom_vjp
    def ste(x):
        return ops.astype(ops.where(x > 0, 1.0, 0.0), x.dtype)
    ste.defvjp(lambda x: (ste(x), (x,)), lambda res, ct: (ct * ops.exp(-res[0] * res[0]),))

    @T.checkpoint
    def block(h, w):
        return ops.gelu(h @ w) + ste(h)

    def loss(x, w):
        return ops.sum(block(block(x, w), w) ** 2)

    x, w = randn(3, 4), randn(4, 4)
    graph, loaded = check(T.value_and_grad(loss, argnums=(0, 1)), (x, w), tmp_path)
    subs = [e for e in loaded.eqns if e.prim == "checkpoint"]
    assert subs and isinstance(subs[0].params["graph"], T.Graph)
    inner = subs[0].params["graph"]
    cvjp = [e for e in inner.eqns if e.prim == "custom_vjp"]
    assert cvjp and isinstance(cvjp[0].params["fwd"], T.Graph) and isinstance(cvjp[0].params["bwd"], T.Graph)


def test_optimized_graph_keeps_provenance(tmp_path):
    g = T.optimize(T.trace(lambda x: ops.tanh(x * 1.0) + ops.tanh(x * 1.0), randn(3)))
    loaded = roundtrip(g, tmp_path)
    assert [r["pass"] for r in loaded.provenance][:4] == ["simplify", "fold", "cse", "dce"]


@settings(max_examples=25, deadline=None)
@given(programs(), st.integers(0, 2 ** 31 - 1))
def test_random_graphs_and_their_gradient_graphs_round_trip(program, seed):
    r = np.random.default_rng(seed)
    args = [r.standard_normal(s).astype(np.float32) for s in SHAPES]
    f = build(program)
    loss = lambda *xs: sum(ops.sum(y) for y in f(*xs))  # noqa: E731
    for graph in (T.trace(f, *args), T.optimize(T.trace(T.value_and_grad(loss, argnums=(0, 2)), *args))):
        loaded = loads(dumps(graph))
        assert str(loaded) == str(graph) and dumps(loaded) == dumps(graph)
        assert_same(T.evaluate(graph, *args), T.evaluate(loaded, *args))


# ---- bad files ---------------------------------------------------------------------------------------------
def _good_text():
    return dumps(T.trace(lambda x: ops.exp(x) + 1.0, randn(3)))


def _raises_one_line(path, *fragments):
    with pytest.raises(IRFileError) as info:
        T.load(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_the_digest_tells_apart_what_the_file_tells_apart():
    x = randn(2, 3)
    c1, c2 = np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)
    c2[1, 2] = 2.0
    same = [T.trace(lambda a: a * ops.asarray(c1) + 1.0, x) for _ in range(2)]  # one line: one call site
    other_constant = T.trace(lambda a: a * ops.asarray(c2) + 1.0, x)
    other_literal = T.trace(lambda a: a * ops.asarray(c1) + 1, x)
    other_line = T.trace(lambda a: a * ops.asarray(c1) + 1.0,
                         x)
    other_shape = T.trace(lambda a: a * ops.asarray(c1[:1]) + 1.0, x[:1])
    assert digest(same[0]) == digest(same[1])
    keys = [digest(g) for g in (same[0], other_constant, other_literal, other_line, other_shape)]
    assert len(set(keys)) == len(keys)
    assert len({dumps(g) for g in (same[0], other_constant, other_literal, other_line, other_shape)}) == len(keys)


def test_missing_file(tmp_path):
    _raises_one_line(tmp_path / "nope.json", "no such file")


def test_directory_and_binary_file(tmp_path):
    _raises_one_line(tmp_path, "cannot read")
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe\x00\x81garbage")
    _raises_one_line(p)


def test_not_json(tmp_path):
    p = tmp_path / "g.json"
    p.write_text("this is not json {")
    _raises_one_line(p, "not valid JSON")


def test_json_of_the_wrong_format(tmp_path):
    p = tmp_path / "g.json"
    for obj in ([1, 2, 3], {"weights": [1.0]}, {"format": "other"}, "mlbh-graph"):
        p.write_text(json.dumps(obj))
        _raises_one_line(p, "not an mlbh graph file")
    obj = json.loads(_good_text())
    obj["version"] = 99
    p.write_text(json.dumps(obj))
    _raises_one_line(p, "version 99")


def test_truncated_file(tmp_path):
    p = tmp_path / "g.json"
    text = _good_text()
    p.write_text(text[: len(text) // 2])
    _raises_one_line(p, "not valid JSON")


def _mutated(tmp_path, mutate):
    obj = json.loads(_good_text())
    mutate(obj["graph"])
    p = tmp_path / "g.json"
    p.write_text(json.dumps(obj))
    return p


@pytest.mark.parametrize("what, mutate, fragment", [
    ("unknown primitive", lambda g: g["eqns"][0].update(prim="frobnicate"), "frobnicate"),
    ("dangling input id", lambda g: g["eqns"][-1].update(inputs=[12345, 0]), "12345"),
    ("dangling output id", lambda g: g.update(outputs=[999]), "999"),
    ("id defined twice", lambda g: g["eqns"][0]["outputs"][0].update(id=0), "defined twice"),
    ("missing key", lambda g: g.pop("eqns"), "missing key 'eqns'"),
    ("eqns not a list", lambda g: g.update(eqns=7), "malformed"),
    ("eqn not an object", lambda g: g["eqns"].__setitem__(0, ["exp"]), "malformed"),
    ("bad shape", lambda g: g["inputs"][0].update(shape=["x"]), "malformed"),
    ("unknown dtype", lambda g: g["inputs"][0].update(dtype="complex64"), "complex64"),
    ("params not an object", lambda g: g["eqns"][0].update(params=[1, 2]), "malformed"),
    ("bad param encoding", lambda g: g["eqns"][1]["params"].update(shape={"weird": 1}), "malformed"),
    ("bad ndarray", lambda g: g["eqns"][1]["params"].update(value={"ndarray": "!!", "dtype": "float32",
                                                                     "shape": [3]}), "malformed"),
    ("bad tree", lambda g: g.update(in_tree=["spruce"]), "malformed"),
    ("graph not an object", lambda g: g.clear() or g.update(inputs="abc"), "malformed"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_graph(tmp_path, what, mutate, fragment):
    _raises_one_line(_mutated(tmp_path, mutate), fragment)


def test_loads_of_a_string():
    g = loads(_good_text())
    assert isinstance(g, T.Graph)
    with pytest.raises(IRFileError, match="<string>"):
        loads("[")
