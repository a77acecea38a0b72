"""The loops of a row kernel under the "row" and "col" mappings (cuda_launch).

row: one block per row o.

    for each level:
        acc = identity                      # per thread, in the reduction's dtype
        for r = threadIdx.x; r < inner; r += blockDim.x:
            acc = combine(acc, value(o, r)); element stores of the level
        acc = warp reduce (xor butterfly: every lane ends with the same bits)
        more than one warp: lane 0 of each warp -> shared[warp]; warp 0 reduces those and
        writes shared[32]; every thread reads it back (the "rowval")
    thread 0: row stores

col: a block per tile of rows; thread t works on row o = tile * block + ox (ox = t % tile)
as r-lane ry = t / tile, striding r over [ry, inner).

    for each level:
        for r = ry; r < inner; r += r_lanes: acc = combine(acc, value(o, r)); stores
        shared[ry][ox] = acc; a tree over the r-lanes (half of them fold in the other
        half, log2(r_lanes) steps, the same order every run) leaves the row's value in
        shared[r_lanes][ox]; every thread reads its row's value back
    r-lane 0: row stores

In the col mapping the lanes past the last row compute with o clamped to the last row (so
every load stays in bounds), skip the r loops and store nothing.
"""
from . import cuda_types as ct
from .cuda_expr import Scope, rowval_symbol
from .cuda_kernel import INDEX_SENTINEL, KernelWriter, identifier


def row_loops(writer: KernelWriter, root: Scope) -> list:
    """Lines of the row (or row-tile) loop; shared declarations go into `root`."""
    return _RowLoops(writer).write(root)


def _identity(red):
    return "0" if red.op == "sum" else ct.lowest(red.dtype)


class _RowLoops:
    def __init__(self, writer):
        self.w = writer
        self.k = writer.kernel
        self.shape = writer.shape
        self.col = writer.shape.mapping == "col"
        self.lanes = writer.shape.r_lanes

    def write(self, root):
        k = self.k
        self._declare(root)
        row = root.child(defines=("o",))
        for level in range(k.levels):
            self._level(level, row)
        row_stores = [s for s in k.stores if s.level == -1]
        if row_stores:
            guarded = Scope(row, indent=row.indent + "    ")  # defines nothing: values computed in `row`
            for store in row_stores:
                self.w.store(store, guarded)
            row.emit("if (ry == 0 && active) {" if self.col else "if (threadIdx.x == 0) {")
            row.lines += guarded.lines
            row.emit("}")
        return self._around(root, row)

    def _declare(self, root):
        if self.col:
            root.emit(f"const int ox = threadIdx.x % {self.shape.tile};")
            root.emit(f"const int ry = threadIdx.x / {self.shape.tile};")
            size = self.shape.tile * (self.lanes + 1)
        elif self.shape.warps > 1:
            root.emit("const int lane = threadIdx.x & 31;")
            root.emit("const int warp = threadIdx.x >> 5;")
            size = 32 + 1
        else:
            return
        for red in self.k.reductions:
            root.emit(f"__shared__ {ct.ctype(red.dtype)} red_{identifier(red.name)}[{size}];")
            if red.op == "argmax":
                root.emit(f"__shared__ long long redi_{identifier(red.name)}[{size}];")

    def _around(self, root, row):
        """The row (tile) loop or block around the body, defining o (and active)."""
        k, shape = self.k, self.shape
        ind, inner_ind = root.indent, row.indent
        if not self.col:
            if shape.loops_over_grid:
                head = [ind + f"for (long long o = blockIdx.x; o < {k.outer}LL; o += gridDim.x) {{"]
            else:
                head = [ind + "{"] + ([inner_ind + "const long long o = blockIdx.x;"] if self.w.uses("o") else [])
            return head + row.lines + [ind + "}"]
        tiles = -(-k.outer // shape.tile)
        if shape.loops_over_grid:
            head = [ind + f"for (long long tile = blockIdx.x; tile < {tiles}LL; tile += gridDim.x) {{",
                    inner_ind + f"const long long o_raw = tile * {shape.tile}LL + ox;"]
        else:
            head = [ind + "{", inner_ind + f"const long long o_raw = (long long)blockIdx.x * {shape.tile}LL + ox;"]
        head.append(inner_ind + f"const bool active = o_raw < {k.outer}LL;")
        if self.w.uses("o"):
            head.append(inner_ind + f"const long long o = active ? o_raw : {k.outer - 1}LL;")
        return head + row.lines + [ind + "}"]

    def _level(self, level, row):
        k = self.k
        reds = [r for r in k.reductions if r.level == level]
        stores = [s for s in k.stores if s.level == level]
        if not reds and not stores:
            return
        row.emit(f"// loop {level} over r")
        for red in reds:
            row.emit(f"{ct.ctype(red.dtype)} acc_{identifier(red.name)} = {_identity(red)};")
            if red.op == "argmax":
                row.emit(f"long long arg_{identifier(red.name)} = {INDEX_SENTINEL};")
        body = row.child(defines=("r",))
        for red in reds:
            self.w.accumulate(red, body)
        for store in stores:
            self.w.store(store, body)
        if self.col:
            row.emit(f"for (long long r = ry; active && r < {k.inner}LL; r += {self.lanes}) {{")
        else:
            row.emit(f"for (long long r = threadIdx.x; r < {k.inner}LL; r += {self.lanes}) {{")
        row.lines += body.lines
        row.emit("}")
        if reds:
            results = self._col_reduce(reds, row) if self.col else self._block_reduce(reds, row)
            for red in reds:
                src = "int64" if red.op == "argmax" else red.dtype
                dst = self.w.rowval_dtypes.get(red.name, src)
                row.emit(f"const {ct.compute_ctype(dst)} {self.w.rowvals[red.name]} = "
                         f"{ct.convert(results[red.name], src, dst)};")
                row.defines.add(rowval_symbol(red.name))

    def _block_reduce(self, reds, row):
        """Row mapping: reduce every thread's accumulator; returns the C expressions of the results."""
        warps = self.shape.warps
        row.emit("// block-wide reduction: within each warp" + (", then warp 0 over the warps" if warps > 1 else ""))
        for red in reds:
            row.emit(_warp_reduce(red) + ";")
        if warps == 1:
            return {r.name: f"{'arg' if r.op == 'argmax' else 'acc'}_{identifier(r.name)}" for r in reds}
        for red in reds:
            n = identifier(red.name)
            row.emit(f"if (lane == 0) red_{n}[warp] = acc_{n};" if red.op != "argmax" else
                     f"if (lane == 0) {{ red_{n}[warp] = acc_{n}; redi_{n}[warp] = arg_{n}; }}")
        row.emit("__syncthreads();")
        row.emit("if (warp == 0) {")
        for red in reds:
            n = identifier(red.name)
            row.emit(f"    acc_{n} = lane < {warps} ? red_{n}[lane] : {_identity(red)};")
            if red.op == "argmax":
                row.emit(f"    arg_{n} = lane < {warps} ? redi_{n}[lane] : {INDEX_SENTINEL};")
            row.emit(f"    {_warp_reduce(red)};")
            row.emit(f"    if (lane == 0) red_{n}[32] = acc_{n};" if red.op != "argmax" else
                     f"    if (lane == 0) {{ red_{n}[32] = acc_{n}; redi_{n}[32] = arg_{n}; }}")
        row.emit("}")
        row.emit("__syncthreads();")
        return {r.name: f"{'redi' if r.op == 'argmax' else 'red'}_{identifier(r.name)}[32]" for r in reds}

    def _col_reduce(self, reds, row):
        """Col mapping: tree over each row's r-lanes; returns the C expressions of the results."""
        lanes, tile = self.lanes, self.shape.tile
        row.emit("// combine the r-lanes of each row: a tree, the upper half folding into the lower")
        for red in reds:
            n = identifier(red.name)
            row.emit(f"red_{n}[ry * {tile} + ox] = acc_{n};")
            if red.op == "argmax":
                row.emit(f"redi_{n}[ry * {tile} + ox] = arg_{n};")
        row.emit("__syncthreads();")
        row.emit(f"for (int half = {lanes // 2}; half > 0; half >>= 1) {{")
        row.emit("    if (ry < half) {")
        row.emit(f"        const int other = (ry + half) * {tile} + ox;")
        row.emit(f"        const int mine = half > 1 ? ry * {tile} + ox : {lanes * tile} + ox;  // last: result")
        for red in reds:
            n = identifier(red.name)
            if red.op == "sum":
                row.emit(f"        acc_{n} += red_{n}[other];")
            elif red.op == "max":
                row.emit(f"        acc_{n} = mlbh_max_of(acc_{n}, red_{n}[other]);")
            else:
                row.emit(f"        mlbh_argmax_step(acc_{n}, arg_{n}, red_{n}[other], redi_{n}[other]);")
                row.emit(f"        redi_{n}[mine] = arg_{n};")
            row.emit(f"        red_{n}[mine] = acc_{n};")
        row.emit("    }")
        row.emit("    __syncthreads();")
        row.emit("}")
        return {r.name: f"{'redi' if r.op == 'argmax' else 'red'}_{identifier(r.name)}[{lanes * tile} + ox]"
                for r in reds}


def _warp_reduce(red):
    n = identifier(red.name)
    if red.op == "sum":
        return f"acc_{n} = mlbh_warp_sum(acc_{n})"
    if red.op == "max":
        return f"acc_{n} = mlbh_warp_max(acc_{n})"
    return f"mlbh_warp_argmax(acc_{n}, arg_{n})"
