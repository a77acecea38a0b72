"""Size and cost estimates of a Graph: op histogram, parameter count, FLOPs and bytes.

Pure functions over a Graph's data (eqns, and Vars with shape, dtype, size, nbytes); they
neither trace nor run anything. Which family a primitive belongs to is passed in as
`kind_of(prim_name) -> str` (the CLI takes it from the primitive registry), so nothing
here needs to change when primitives are added.

FLOP rules (estimates; a multiply-add counts 2):
  dot          2 * prod(batch) * M * N * K, from the operand shapes
  elementwise  1 per output element
  reduction    1 per input element
  index        scatter_add: 1 per update element; gather: 0
  movement     0 (moves data only)
  creation     0 (full, iota, constant make values from nothing)
  other        0, except eqns that run a graph (checkpoint, custom_vjp): that graph's FLOPs
Bytes: traffic = sum over eqns of the bytes of their inputs and outputs (what a program
with one kernel per eqn would read and write); intermediates = bytes of the values that
are neither graph inputs nor graph outputs.
"""
from math import prod

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
CREATION_PRIMS = ("full", "iota", "constant")
FAMILIES = ("dot", "elementwise", "reduction", "index", "movement", "creation", "other")


def family_of(prim: str, kind_of) -> str:
    if prim in CREATION_PRIMS:
        return "creation"
    kind = kind_of(prim)
    return kind if kind in FAMILIES else "other"


def called_graph(eqn):
    """The graph an eqn runs in its forward computation, or None."""
    if "fwd" in eqn.params:  # custom_vjp: fwd runs now, bwd only inside the backward pass
        return eqn.params["fwd"]
    for value in eqn.params.values():
        if hasattr(value, "eqns") and hasattr(value, "outputs"):
            return value
    return None


def dot_general_flops(eqn) -> int:
    (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.inputs
    out = eqn.outputs[0]
    batch = prod(lhs.shape[d] for d in lhs_batch)
    k = prod(lhs.shape[d] for d in lhs_contract)
    # The output holds batch * M * N elements, so M * N = out.size / batch.
    m_times_n = out.size // batch if batch else 0
    return 2 * batch * m_times_n * k


def eqn_flops(eqn, kind_of) -> dict:
    """{family: FLOPs} of one eqn (several families when it runs a graph)."""
    family = family_of(eqn.prim, kind_of)
    if family == "dot":
        return {"dot": dot_general_flops(eqn)}
    if family == "elementwise":
        return {"elementwise": sum(v.size for v in eqn.outputs)}
    if family == "reduction":
        return {"reduction": eqn.inputs[0].size}
    if family == "index":
        return {"index": eqn.inputs[-1].size if eqn.prim == "scatter_add" else 0}
    inner = called_graph(eqn) if family == "other" else None
    if inner is not None:
        return flops_by_family(inner, kind_of)
    return {family: 0}


def flops_by_family(graph, kind_of) -> dict:
    totals = {}
    for eqn in graph.eqns:
        for family, flops in eqn_flops(eqn, kind_of).items():
            totals[family] = totals.get(family, 0) + flops
    return totals


def flops_by_op(graph, kind_of) -> dict:
    """{prim: FLOPs}, in the order of op_histogram."""
    totals = {prim: 0 for prim, _ in op_histogram(graph)}
    for eqn in graph.eqns:
        totals[eqn.prim] = totals.get(eqn.prim, 0) + sum(eqn_flops(eqn, kind_of).values())
    return totals


def eqn_traffic_bytes(eqn) -> int:
    return sum(v.nbytes for v in eqn.inputs) + sum(v.nbytes for v in eqn.outputs)


def traffic_bytes_by_family(graph, kind_of) -> dict:
    totals = {}
    for eqn in graph.eqns:
        family = family_of(eqn.prim, kind_of)
        totals[family] = totals.get(family, 0) + eqn_traffic_bytes(eqn)
    return totals


def intermediate_bytes(graph) -> int:
    boundary = set(graph.inputs) | set(graph.outputs)
    return sum(v.nbytes for e in graph.eqns for v in e.outputs if v not in boundary)


def op_histogram(graph) -> list:
    """[(prim, count)], most frequent first, ties by name."""
    counts = {}
    for eqn in graph.eqns:
        counts[eqn.prim] = counts.get(eqn.prim, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def parameter_count(graph) -> int:
    """Total elements of the floating-point inputs (weights, and also float data inputs)."""
    return sum(v.size for v in graph.inputs if v.dtype in FLOAT_DTYPES)


def leaf_names(treedef, count: int, root: str) -> list:
    """Readable names of a pytree's leaves: args[0].w1, out[1], ... (positional if unknown).

    At the root of an input tree (a list of the traced function's arguments) `root` is
    "args"; a dict key k adds ".k", a list or tuple index i adds "[i]".
    """
    names = []

    def walk(node, path):
        kind = node[0]
        if kind == "leaf":
            names.append(path)
        elif kind == "dict":
            for key, child in zip(node[1], node[2]):
                walk(child, f"{path}.{key}")
        elif kind in ("list", "tuple"):
            for i, child in enumerate(node[1]):
                walk(child, f"{path}[{i}]")

    if treedef is not None:
        walk(treedef, root)
    if len(names) != count:
        return [f"{root}[{i}]" for i in range(count)]
    return names


def describe_values(variables, names) -> list:
    return [{"name": name, "shape": list(v.shape), "dtype": v.dtype, "bytes": v.nbytes}
            for name, v in zip(names, variables)]


def graph_stats(graph, kind_of) -> dict:
    """Everything `mlbh ir stats` reports, as plain JSON-ready data."""
    by_family = flops_by_family(graph, kind_of)
    traffic = traffic_bytes_by_family(graph, kind_of)
    return {
        "eqns": len(graph.eqns),
        "ops": dict(op_histogram(graph)),
        "flops_by_op": flops_by_op(graph, kind_of),
        "inputs": describe_values(graph.inputs, leaf_names(graph.in_tree, len(graph.inputs), "args")),
        "outputs": describe_values(graph.outputs, leaf_names(graph.out_tree, len(graph.outputs), "out")),
        "parameters": parameter_count(graph),
        "flops": {"total": sum(by_family.values()),
                  "by_family": {f: by_family[f] for f in FAMILIES if f in by_family}},
        "bytes": {"traffic": sum(traffic.values()),
                  "traffic_by_family": {f: traffic[f] for f in FAMILIES if f in traffic},
                  "intermediates": intermediate_bytes(graph),
                  "inputs": sum(v.nbytes for v in graph.inputs),
                  "outputs": sum(v.nbytes for v in graph.outputs)},
    }
