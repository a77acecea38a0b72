"""Memory planning: every intermediate buffer gets an offset in one arena.

Liveness runs over the launch list: a buffer is live from the step that first writes it to
the last step that reads it. Steps are walked in order; a step's outputs are placed first
(best fit among free blocks, else at the end), then the buffers whose last use was this
step are freed, so a step never writes over its own inputs.
"""
from dataclasses import dataclass

from mlbh.tracer import dtypes

from .fusion import DotCall
from .kernel_ir import Kernel

ALIGN = 256


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def step_reads(step):
    if isinstance(step, Kernel):
        return [b.name for b in step.inputs] + [s.buffer for s in step.stores if s.accumulate]
    return [step.a, step.b]


def step_writes(step):
    if isinstance(step, Kernel):
        return [b.name for b in step.outputs]
    return [step.out]


@dataclass
class MemoryPlan:
    offsets: dict      # buffer name -> byte offset in the arena
    peak: int          # arena size in bytes
    naive: int         # bytes if every intermediate had its own allocation
    lifetimes: dict    # buffer name -> (first step, last step)

    def summary(self) -> str:
        ratio = self.peak / self.naive if self.naive else 0.0
        return (f"arena {self.peak / 2**20:.2f} MiB for {len(self.offsets)} intermediates "
                f"(naive {self.naive / 2**20:.2f} MiB, {ratio:.0%})")


def plan_memory(program) -> MemoryPlan:
    planned = set(program.intermediates())
    sizes = {n: _align(max(1, program.buffers[n].size * dtypes.ITEMSIZE[program.buffers[n].dtype]))
             for n in planned}
    first, last = {}, {}
    for i, step in enumerate(program.steps):
        for n in step_writes(step):
            if n in planned:
                first.setdefault(n, i)
                last[n] = max(last.get(n, i), i)
        for n in step_reads(step):
            if n in planned:
                last[n] = i
    free = []          # [(offset, size)], sorted by offset
    offsets, end = {}, 0
    by_last = {}
    for n, i in last.items():
        by_last.setdefault(i, []).append(n)
    for i, step in enumerate(program.steps):
        for n in step_writes(step):
            if n in planned and n not in offsets:
                offsets[n], end = _allocate(free, sizes[n], end)
        for n in by_last.get(i, []):
            if n in offsets:
                _release(free, offsets[n], sizes[n])
    naive = sum(sizes.values())
    return MemoryPlan(offsets, end, naive, {n: (first.get(n, 0), last[n]) for n in last})


def _allocate(free, size, end):
    best = None
    for k, (off, sz) in enumerate(free):
        if sz >= size and (best is None or sz < free[best][1]):
            best = k
    if best is None:
        # grow the arena, reusing a free block that touches the end
        if free and free[-1][0] + free[-1][1] == end:
            off, sz = free.pop()
            return off, off + size
        return end, end + size
    off, sz = free.pop(best)
    if sz > size:
        free.insert(best, (off + size, sz - size))
    return off, end


def _release(free, off, size):
    free.append((off, size))
    free.sort()
    merged = []
    for o, s in free:
        if merged and merged[-1][0] + merged[-1][1] == o:
            merged[-1] = (merged[-1][0], merged[-1][1] + s)
        else:
            merged.append((o, s))
    free[:] = merged
