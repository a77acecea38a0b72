"""Dead-store elimination on a fused launch list.

Fusion stores every materialized root of a kernel, but a kernel reads its own roots by
recomputing them, so a value stored only for use inside the same kernel is never loaded.
"""
from .kernel_ir import Kernel, iter_nodes


def drop_dead_stores(steps, outputs):
    """Remove stores no step reads and the program does not return (a kernel reads its own
    roots by recomputing them, so a value stored only for that is never loaded), the
    reductions nothing uses any more, and kernels left with nothing to store; repeated,
    since a dropped kernel's loads may have been the only readers of other stores."""
    while True:
        read = set(outputs)
        for s in steps:
            if isinstance(s, Kernel):
                read.update(b.name for b in s.inputs)
                read.update(st.buffer for st in s.stores if st.accumulate)
            else:
                read.update((s.a, s.b))
        kept = []
        for s in steps:
            if isinstance(s, Kernel) and any(b.name not in read for b in s.outputs):
                s.stores = [st for st in s.stores if st.buffer in read]
                s.outputs = [b for b in s.outputs if b.name in read]
                if not s.outputs:
                    continue
                _drop_unused_reductions(s)
                _compact_levels(s)
            kept.append(s)
        if len(kept) == len(steps):
            return kept
        steps = kept


def _drop_unused_reductions(kernel):
    """Keep the reductions a store reads (directly or through other reductions), and the
    inputs something still loads."""
    def rowvals(*roots):
        return {n.attr[0] for n in iter_nodes(*roots) if n.op == "rowval"}

    by_name = {r.name: r for r in kernel.reductions}
    used = rowvals(*(n for st in kernel.stores for n in (st.value, st.index)))
    pending = list(used)
    while pending:  # reductions read by used reductions are used too
        red = by_name.get(pending.pop())
        if red is not None:
            more = rowvals(red.value) - used
            used |= more
            pending += list(more)
    kernel.reductions = [r for r in kernel.reductions if r.name in used]
    roots = [n for st in kernel.stores for n in (st.value, st.index)] + [r.value for r in kernel.reductions]
    kept_inputs = {n.attr[0] for n in iter_nodes(*roots) if n.op == "load"}
    kernel.inputs = [b for b in kernel.inputs if b.name in kept_inputs]


def _compact_levels(kernel):
    """Renumber loops after stores were dropped so that no loop is left empty."""
    used = sorted({r.level for r in kernel.reductions} | {st.level for st in kernel.stores if st.level >= 0})
    new = {old: i for i, old in enumerate(used)}
    for r in kernel.reductions:
        r.level = new[r.level]
    for st in kernel.stores:
        if st.level >= 0:
            st.level = new[st.level]
    kernel.levels = max(len(used), 1)
