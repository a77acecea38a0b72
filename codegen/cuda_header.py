"""The comment above a generated kernel: the graph eqns it fuses (with their source lines),
the kernel IR's loops, and how threads map onto them."""
from .cuda_launch import LaunchShape
from .kernel_ir import Kernel


def _comment_safe(text: str) -> str:
    # ASCII only, and no trailing backslash (it would continue the // comment onto the next line)
    if not (text.isascii() and text.isprintable()):
        text = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return text.rstrip("\\ ")


def mapping_words(k: Kernel, shape: LaunchShape) -> list:
    """The thread mapping, in words."""
    grid = f"grid {shape.grid}" + (", grid-stride" if shape.loops_over_grid else "")
    if shape.mapping == "flat":
        what = "element (o, r) of" if k.inner > 1 else "row o of"
        lines = [f"one thread per {what} {shape.elements} ({shape.block} threads a block, {grid})"]
        if any(s.accumulate for s in k.stores):
            lines.append("accumulating stores are atomicAdd (rows may collide)")
        return lines
    if shape.mapping == "col":
        lines = [f"memory is contiguous along o: a block of {shape.block} threads per {shape.tile} consecutive "
                 f"rows ({grid}); thread t takes row o = {shape.tile} * block + t % {shape.tile} and "
                 f"r = t / {shape.tile} + {shape.r_lanes} k"]
    else:
        lines = [f"one block of {shape.block} threads per row o in [0, {k.outer}) ({grid})"]
    for level in range(k.levels):
        reds = [f"{r.op} {r.name}" for r in k.reductions if r.level == level]
        stores = [s.buffer for s in k.stores if s.level == level]
        text = f"loop {level}: threads stride over r in [0, {k.inner})"
        if stores:
            text += f", storing {', '.join(stores)}"
        if reds:
            text += f"; then {', '.join(reds)} combined across the row's threads and shared with them"
        lines.append(text)
    row = [s.buffer for s in k.stores if s.level == -1]
    if row:
        who = "warp 0" if shape.mapping == "col" else "thread 0"
        lines.append(f"{who} stores the row values {', '.join(row)}")
    return lines


def header_comment(kernel: Kernel, shape: LaunchShape) -> str:
    k = kernel
    lines = [f"Kernel {k.name}: outer {k.outer} {list(k.outer_shape)} x inner {k.inner} {list(k.inner_shape)}, "
             f"{k.levels} loop(s) over r" + (", serial (scatter-accumulate)" if k.serial else ""),
             "",
             f"Fuses these graph eqns ({len(k.sources)}):"]
    lines += [f"  {s}" for s in k.sources]
    lines += ["", "Math (kernel IR: o is the row, r the inner index; tN one value each):"]
    described = k.describe().splitlines()
    lines += ["  " + line.strip() if line.startswith(("  in:", "  out:")) else line
              for line in described[1:] if not line.lstrip().startswith("# ")]
    lines += ["", "Threads:"]
    lines += [f"  {w}" for w in mapping_words(k, shape)]
    return "\n".join(("// " + _comment_safe(line)).rstrip() for line in lines)
