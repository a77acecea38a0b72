"""Reading the CPU backend's generated LLVM IR in tests."""
import re


def inner_loop_bodies(source: str) -> list:
    """The bodies of a kernel's inner (r) loops, in order: every block labelled loopN but
    the first (the loop over rows). The renderer makes each inner loop one straight block."""
    blocks = re.split(r"\n(?=[A-Za-z_.][\w.]*:\n)", source)
    return [b for b in blocks if re.match(r"loop\d+:", b)][1:]
