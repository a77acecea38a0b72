"""Errors in user code name the op, the operands' shapes and dtypes, and the user's own
file:line; str(graph) is one readable eqn a line."""
import os
import re

import numpy as np
import pytest

from mlbh import tracer as T
from mlbh.tracer import lax, ops
from mlbh.tracer.errors import (ConcretizationError, DTypeError, MlbhError, ShapeError,
                                TraceError)

HERE = os.path.basename(__file__)


def line_of(marker):
    """The line number of the line in this file that carries `# <marker>`."""
    with open(__file__) as f:
        hits = [i for i, line in enumerate(f, 1) if line.rstrip().endswith(f"# <{marker}>")]
    assert len(hits) == 1, marker
    return hits[0]


def raises_at(exc_type, marker, fn, *args):
    """fn(*args) raises exc_type whose message ends with this file's name and the marked line."""
    with pytest.raises(exc_type) as info:
        fn(*args)
    msg = str(info.value)
    where = f"{HERE}:{line_of(marker)}"
    assert info.value.source is not None and info.value.source.endswith(where), (msg, where)
    assert msg.endswith(f"(at {info.value.source})"), msg
    assert "\n" not in msg
    return msg


F32 = np.float32


# ---- shapes ---------------------------------------------------------------------------------------------
def bad_add(x, y):
    z = ops.exp(x)
    return z + y  # <bad-add>


def test_broadcast_mismatch_names_op_shapes_dtypes_and_line():
    msg = raises_at(ShapeError, "bad-add", T.trace, bad_add, np.ones((3, 4), F32), np.ones(5, F32))
    assert msg.startswith("add:") and "f32[3, 4]" in msg and "f32[5]" in msg


def test_broadcast_mismatch_with_mixed_dtypes_and_eagerly():
    def f(x, i):
        return x * i  # <bad-mul>
    msg = raises_at(ShapeError, "bad-mul", T.trace, f, np.ones((2, 3), F32), np.ones((4,), np.int32))
    assert msg.startswith("multiply:") and "f32[2, 3]" in msg and "f32[4]" in msg  # i promoted to f32
    msg = raises_at(ShapeError, "eager-sub", lambda: ops.subtract(np.ones((2, 3)), np.ones(2)))  # <eager-sub>
    assert "f64[2, 3]" in msg and "f64[2]" in msg


def bad_matmul(x, w):
    h = ops.tanh(x)
    return h @ w  # <bad-matmul>


def test_matmul_inner_dimension_mismatch():
    msg = raises_at(ShapeError, "bad-matmul", T.trace, bad_matmul, np.ones((3, 4), F32), np.ones((5, 2), F32))
    assert "matmul" in msg and "f32[3, 4]" in msg and "f32[5, 2]" in msg and "4 and 5" in msg


def test_matmul_batch_mismatch():
    def f(a, b):
        return ops.matmul(a, b)  # <bad-batch>
    msg = raises_at(ShapeError, "bad-batch", T.trace, f, np.ones((2, 3, 4), F32), np.ones((3, 4, 5), F32))
    assert "matmul" in msg and "f32[2, 3, 4]" in msg and "f32[3, 4, 5]" in msg


def test_shape_error_inside_grad_names_the_user_line():
    def loss(x, y):
        return ops.sum(x - y)  # <grad-sub>
    msg = raises_at(ShapeError, "grad-sub", T.grad(loss), np.ones((3, 4)), np.ones((2,)))
    assert msg.startswith("subtract:")


def test_primitive_shape_errors_get_the_user_line():
    def f(x, y):
        return lax.add(x, y)  # <lax-add>
    msg = raises_at(ShapeError, "lax-add", T.trace, f, np.ones((3,), F32), np.ones((4,), F32))
    assert "add" in msg and "f32[3]" in msg and "f32[4]" in msg

    def g(x, y):
        return lax.dot_general(x, y, (((1,), (1,)), ((), ())))  # <lax-dot>
    msg = raises_at(ShapeError, "lax-dot", T.trace, g, np.ones((3, 4), F32), np.ones((3, 5), F32))
    assert "dot_general" in msg and "f32[3, 4]" in msg and "f32[3, 5]" in msg


def test_other_shape_errors():
    def reshape(x):
        return ops.reshape(x, (5, -1))  # <reshape>
    assert "reshape" in raises_at(ShapeError, "reshape", T.trace, reshape, np.ones((3, 4), F32))

    def concat(x, y):
        return ops.concatenate([x, y], axis=0)  # <concat>
    assert "concatenate" in raises_at(ShapeError, "concat", T.trace, concat, np.ones((3, 4), F32),
                                      np.ones((3, 5), F32))

    def axis(x):
        return ops.sum(x, axis=2)  # <axis>
    assert "axis 2" in raises_at(ShapeError, "axis", T.trace, axis, np.ones((3, 4), F32))

    def index(x):
        return x[3]  # <index>
    assert "out of bounds" in raises_at(ShapeError, "index", T.trace, index, np.ones((3, 4), F32))

    def norm(x):
        return ops.layer_norm(x, np.ones(3, F32), np.zeros(4, F32))  # <ln>
    assert "layer_norm" in raises_at(ShapeError, "ln", T.trace, norm, np.ones((2, 4), F32))

    def attn(q):
        return ops.causal_attention(q, q, q[:, :, :2])  # <attn>
    assert "causal_attention" in raises_at(ShapeError, "attn", T.trace, attn, np.ones((1, 2, 3, 4), F32))


# ---- dtypes ----------------------------------------------------------------------------------------------
def test_unknown_dtype_in_spec():
    with pytest.raises(DTypeError, match="complex64"):
        T.Spec((3,), "complex64")
    with pytest.raises(DTypeError, match="complex128"):
        T.trace(lambda x: x, np.ones(3, np.complex128))


def test_exp_of_int_names_the_op_and_dtype():
    def f(i):
        return ops.exp(i)  # <exp-int>
    msg = raises_at(DTypeError, "exp-int", T.trace, f, np.ones((3,), np.int32))
    assert "exp" in msg and "i32[3]" in msg


def test_take_with_float_indices():
    def f(x, idx):
        return ops.take(x, idx, axis=0)  # <take-float>
    msg = raises_at(DTypeError, "take-float", T.trace, f, np.ones((4, 2), F32), np.zeros(3, F32))
    assert "take" in msg and "indices" in msg and "f32[3]" in msg


def test_other_dtype_errors():
    def ce(logits, t):
        return ops.cross_entropy(logits, t)  # <ce-float>
    assert "integer" in raises_at(DTypeError, "ce-float", T.trace, ce, np.ones((2, 5), F32), np.zeros(2, F32))

    def sel(p, x):
        return lax.select(p, x, x)  # <select>
    assert "bool" in raises_at(DTypeError, "select", T.trace, sel, np.ones(3, F32), np.ones(3, F32))


# ---- control flow on tracers -----------------------------------------------------------------------------
def branchy(x):
    y = x * 2.0
    if y > 0:  # <if-tracer>
        return y
    return -y


def test_if_on_a_tracer_raises_concretization_error_at_the_user_line():
    msg = raises_at(ConcretizationError, "if-tracer", T.trace, branchy, np.ones((), F32))
    assert "bool()" in msg and "where" in msg


def test_int_float_and_index_of_a_tracer():
    def as_int(x):
        return range(int(x))  # <int>
    raises_at(ConcretizationError, "int", T.trace, as_int, np.ones((), F32))

    def as_float(x):
        return float(x) + 1.0  # <float>
    raises_at(ConcretizationError, "float", T.trace, as_float, np.ones((), F32))

    def as_index(x, i):
        return [1, 2, 3][i]  # <as-index>
    raises_at(ConcretizationError, "as-index", T.trace, as_index, np.ones(3, F32), np.array(1, np.int32))


def test_branch_inside_grad_raises_concretization_error():
    raises_at(ConcretizationError, "if-tracer", T.grad(branchy), np.array(1.0))


# ---- escaping tracers ---------------------------------------------------------------------------------------
def test_a_tracer_escaping_its_trace():
    leaked = []

    def f(x):
        leaked.append(x * 2.0)
        return x
    T.trace(f, np.ones(3, F32))

    with pytest.raises(TraceError, match="after its trace ended") as info:
        ops.exp(leaked[0])  # <escaped-eager>
    assert info.value.source.endswith(f"{HERE}:{line_of('escaped-eager')}")
    with pytest.raises(TraceError, match="after its trace ended"):
        leaked[0] + 1.0

    def g(y):
        return y + leaked[0]  # <escaped-other-trace>
    msg = raises_at(TraceError, "escaped-other-trace", T.trace, g, np.ones(3, F32))
    assert "outside the trace that made it" in msg


def test_trace_rejects_unsupported_arguments():
    with pytest.raises(TraceError, match="cannot trace an argument of type str"):
        T.trace(lambda s: s, "hello")


def test_every_error_is_an_mlbh_error():
    for cls in (TraceError, ShapeError, DTypeError, ConcretizationError):
        assert issubclass(cls, MlbhError)


# ---- printing ---------------------------------------------------------------------------------------------------
def printed(x, w):
    h = ops.tanh(x @ w)  # <print-1>
    return ops.sum(h * 2.0)  # <print-2>


def test_str_graph_one_eqn_a_line_with_shapes_dtypes_and_source():
    g = T.trace(printed, np.ones((3, 4), F32), np.ones((4, 2), F32))
    text = str(g)
    lines = text.splitlines()
    assert lines[0] == "{ lambda a:f32[3,4] b:f32[4,2] ."
    assert lines[-1].strip().startswith("in (") and lines[-1].strip().endswith("}")
    body = lines[1:-1]
    assert len(body) == len(g.eqns)
    for line, eqn in zip(body, g.eqns):
        assert re.search(rf"\b{eqn.prim}\b", line)
        for v in eqn.outputs:
            assert f":{v.aval}" in line
        assert line.rstrip().endswith(eqn.source) or f"{eqn.source} (" in line
    l1, l2 = line_of("print-1"), line_of("print-2")
    assert f"{HERE}:{l1}" in body[0] and "dot_general" in body[0] and "f32[3,2]" in body[0]
    assert f"{HERE}:{l1}" in body[1] and "tanh" in body[1]
    assert all(f"{HERE}:{l2}" in line for line in body[2:])
    assert "reduce_sum[axes=(0,1)]" in text


def test_str_graph_shows_scopes_and_nested_graphs():
    g = T.trace(T.grad(lambda x: ops.sum(T.checkpoint(ops.softmax)(x))), np.ones((2, 3), F32))
    text = str(g)
    assert "checkpoint[graph=<graph 1->1," in text and "(softmax)" in text
    assert "remat(softmax)" in text
    assert all(line.count(" = ") <= 1 for line in text.splitlines())
    mixed = T.trace(lambda x, i: (ops.take(x, i), x.astype("bfloat16")), np.ones(4, F32),
                    np.zeros(2, np.int32))
    assert "b:i32[2]" in str(mixed) and "bf16[4]" in str(mixed)
