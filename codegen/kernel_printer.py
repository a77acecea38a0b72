"""Readable text for a Kernel: loops, reductions and stores, one temporary per node."""
from .kernel_ir import Kernel, Node


def _fmt(node: Node, names: dict, lines: list) -> str:
    if node in names:
        return names[node]
    if node.op == "ivar":
        return node.attr[0]
    if node.op in ("iconst", "const"):
        return repr(node.attr[0])
    args = [_fmt(a, names, lines) for a in node.args]
    sym = {"iadd": "+", "imul": "*", "idiv": "//", "imod": "%"}.get(node.op)
    if sym:
        text = f"({args[0]} {sym} {args[1]})"
        return text
    if node.op == "load":
        text = f"{node.attr[0]}[{args[0]}]"
    elif node.op == "rowval":
        text = node.attr[0]
    else:
        extra = "".join(f", {a!r}" for a in node.attr)
        text = f"{node.op}({', '.join(args)}{extra})"
    name = f"t{len(names)}"
    names[node] = name
    lines.append(f"{name}:{node.dtype} = {text}")
    return name


def format_kernel(k: Kernel) -> str:
    out = [f"kernel {k.name}  outer={k.outer} {list(k.outer_shape)}  inner={k.inner} "
           f"{list(k.inner_shape)}  levels={k.levels}{'  serial' if k.serial else ''}"]
    out += [f"  # {s}" for s in k.sources]
    out.append("  in:  " + ", ".join(f"{b.name}:{b.dtype}{list(b.shape)}" for b in k.inputs))
    out.append("  out: " + ", ".join(f"{b.name}:{b.dtype}{list(b.shape)}" for b in k.outputs))
    for level in range(k.levels):
        names, lines = {}, []
        body = []
        for red in k.reductions:
            if red.level == level:
                body.append(f"{red.name} {red.op}= {_fmt(red.value, names, lines)}")
        for st in k.stores:
            if st.level == level:
                op = "+=" if st.accumulate else "="
                body.append(f"{st.buffer}[{_fmt(st.index, names, lines)}] {op} {_fmt(st.value, names, lines)}")
        out.append(f"  loop {level} over r:")
        out += [f"    {line}" for line in lines + body]
    names, lines, body = {}, [], []
    for st in k.stores:
        if st.level == -1:
            body.append(f"{st.buffer}[{_fmt(st.index, names, lines)}] = {_fmt(st.value, names, lines)}")
    if body:
        out.append("  per row:")
        out += [f"    {line}" for line in lines + body]
    return "\n".join(out)
