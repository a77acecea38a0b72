"""Lossless plain-JSON save/load of Graphs. Loading never executes code.

Format (version 1): {"format": "mlbh-graph", "version": 1, "graph": G} where G is
{"inputs": [V], "eqns": [{"prim", "inputs": [id], "outputs": [V], "params", "source",
"scope"}], "outputs": [id], "in_tree", "out_tree", "provenance"} and V is
{"id", "shape", "dtype"}. Param values: JSON numbers/strings/bools; tuples as
{"tuple": [...]}; non-finite floats as {"float": "inf"|"-inf"|"nan"}; numpy arrays as
{"ndarray": base64, "dtype", "shape"}; nested graphs as {"graph": G}.
"""
import base64
import hashlib
import json
import math
import os

import numpy as np

from . import dtypes, pytree
from .errors import DTypeError, IRFileError
from .ir import Eqn, Graph, Var
from .registry import REGISTRY

FORMAT = "mlbh-graph"
VERSION = 1


def _enc(value):
    if isinstance(value, Graph):
        return {"graph": graph_to_json(value)}
    if isinstance(value, np.ndarray):
        return {"ndarray": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode(),
                "dtype": dtypes.name_of(value.dtype), "shape": list(value.shape)}
    if isinstance(value, tuple):
        return {"tuple": [_enc(v) for v in value]}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise param of type {type(value).__name__}")


def _dec(obj):
    if isinstance(obj, dict):
        if "graph" in obj:
            return graph_from_json(obj["graph"])
        if "ndarray" in obj:
            raw = base64.b64decode(obj["ndarray"])
            return np.frombuffer(raw, dtype=dtypes.to_numpy(obj["dtype"])).reshape(obj["shape"]).copy()
        if "tuple" in obj:
            return tuple(_dec(v) for v in obj["tuple"])
        if "float" in obj:
            return float(obj["float"])
        raise ValueError(f"unknown param encoding {sorted(obj)}")
    if isinstance(obj, list):
        raise ValueError("bare lists are not a param encoding")
    return obj


def graph_to_json(graph: Graph) -> dict:
    ids = {}

    def vid(v):
        return ids.setdefault(v, len(ids))

    def var(v):
        return {"id": vid(v), "shape": list(v.shape), "dtype": v.dtype}

    return {
        "inputs": [var(v) for v in graph.inputs],
        "eqns": [{"prim": e.prim, "inputs": [ids[v] for v in e.inputs],
                  "outputs": [var(v) for v in e.outputs],
                  "params": {k: _enc(v) for k, v in e.params.items()},
                  "source": e.source, "scope": e.scope} for e in graph.eqns],
        "outputs": [ids[v] for v in graph.outputs],
        "in_tree": pytree.to_json(graph.in_tree) if graph.in_tree else None,
        "out_tree": pytree.to_json(graph.out_tree) if graph.out_tree else None,
        "provenance": graph.provenance,
    }


def graph_from_json(obj: dict) -> Graph:
    vars_ = {}

    def var(o):
        v = Var(o["shape"], o["dtype"])
        if o["id"] in vars_:
            raise ValueError(f"value id {o['id']} defined twice")
        vars_[o["id"]] = v
        return v

    def ref(i):
        if i not in vars_:
            raise ValueError(f"value id {i} used before it is defined")
        return vars_[i]

    inputs = [var(o) for o in obj["inputs"]]
    eqns = []
    for e in obj["eqns"]:
        if e["prim"] not in REGISTRY:
            raise ValueError(f"unknown primitive {e['prim']!r}")
        ins = tuple(ref(i) for i in e["inputs"])
        outs = tuple(var(o) for o in e["outputs"])
        eqns.append(Eqn(e["prim"], ins, outs, {k: _dec(v) for k, v in e["params"].items()},
                        e.get("source"), e.get("scope", "")))
    return Graph(inputs, eqns, [ref(i) for i in obj["outputs"]],
                 pytree.from_json(obj["in_tree"]) if obj.get("in_tree") else None,
                 pytree.from_json(obj["out_tree"]) if obj.get("out_tree") else None,
                 list(obj.get("provenance", [])))


def digest(graph: Graph) -> str:
    """sha256 (hex) of everything dumps() writes, computed without building the JSON (a
    cache key, not a file: 2-3x faster for GPT-2's train step)."""
    h = hashlib.sha256()
    _digest_into(h, graph)
    return h.hexdigest()


def _digest_into(h, graph):
    ids = {}

    def var(v):
        ids[v] = len(ids)
        return v.shape, v.dtype

    lines = [repr([var(v) for v in graph.inputs])]
    for e in graph.eqns:
        ins = [ids[v] for v in e.inputs]
        lines.append(repr((e.prim, ins, [var(v) for v in e.outputs],
                           [(k, _key(v)) for k, v in e.params.items()], e.source, e.scope)))
    lines.append(repr(([ids[v] for v in graph.outputs], graph.in_tree, graph.out_tree, graph.provenance)))
    h.update("\n".join(lines).encode())


def _key(value):
    """A param as a value whose repr identifies it (as _enc's JSON does)."""
    if isinstance(value, Graph):
        return "graph", digest(value)
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return "ndarray", dtypes.name_of(value.dtype), value.shape, hashlib.sha256(data.tobytes()).hexdigest()
    if isinstance(value, tuple):
        return tuple(_key(v) for v in value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise param of type {type(value).__name__}")


def dumps(graph: Graph) -> str:
    return json.dumps({"format": FORMAT, "version": VERSION, "graph": graph_to_json(graph)})


def loads(text: str, where: str = "<string>") -> Graph:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise IRFileError(f"{where}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise IRFileError(f"{where}: not an mlbh graph file (no \"format\": \"{FORMAT}\")")
    if obj.get("version") != VERSION:
        raise IRFileError(f"{where}: graph format version {obj.get('version')} is not supported "
                          f"(this mlbh reads version {VERSION})")
    try:
        return graph_from_json(obj["graph"])
    except KeyError as err:
        raise IRFileError(f"{where}: malformed graph: missing key {err}") from None
    except (TypeError, ValueError, IndexError, AttributeError, DTypeError) as err:
        raise IRFileError(f"{where}: malformed graph: {err}") from None


def save(graph: Graph, path) -> None:
    """Write the graph as JSON atomically (temporary file, fsync, rename)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(dumps(graph))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path) -> Graph:
    path = os.fspath(path)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise IRFileError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise IRFileError(f"{path}: cannot read ({err.__class__.__name__})") from None
    return loads(text, path)
