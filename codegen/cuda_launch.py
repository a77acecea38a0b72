"""How a Kernel maps onto CUDA threads: the launch shape, chosen from the kernel's loops.

  flat  no reductions and no row stores (elementwise kernels; serial scatter kernels):
        one thread per element of [0, outer * inner), grid-stride loop, 256 threads a block.
        Serial kernels are fine in parallel here: their accumulating stores are atomic.
  row   one block per row o (grid-stride over o past 2^31 - 1 rows); the block's threads
        stride over r, then reduce block-wide. Block size: inner rounded up to a power of
        two, clamped to [32, 1024], so no thread is idle on short rows beyond one warp.
  col   rows whose memory is contiguous along o instead (cuda_access): a block takes a
        tile of consecutive rows, thread t on row t % tile and r-lane t / tile, the r-lanes
        striding over r, then combining each row's partials through shared memory. The
        tile spans one 32-byte memory sector of the narrowest buffer (8 rows of float32),
        so each warp load reads whole sectors instead of 32 scattered elements, while a
        small tile keeps many blocks in flight when there are few rows (768 bias columns).
"""
from dataclasses import dataclass

from mlbh.tracer import dtypes

from .cuda_access import contiguous_along_o
from .kernel_ir import Kernel

FLAT_BLOCK = 256
MAX_FLAT_GRID = 65535          # past this, each thread takes several elements (grid-stride)
MAX_GRID = 2 ** 31 - 1         # gridDim.x limit
MIN_ROW_BLOCK, MAX_ROW_BLOCK = 32, 1024
WARP = 32
SECTOR_BYTES = 32              # DRAM/L2 access granularity
USE_COL_MAPPING = True


@dataclass(frozen=True)
class LaunchShape:
    mapping: str     # "flat" | "row" | "col"
    grid: int
    block: int
    elements: int    # flat: loop trip count; row, col: number of rows
    tile: int = 1    # col: rows per block

    @property
    def rows_per_block(self) -> int:
        return {"flat": self.block, "row": 1, "col": self.tile}[self.mapping]

    @property
    def r_lanes(self) -> int:
        """Threads striding over r within one row."""
        return {"flat": 1, "row": self.block, "col": self.block // self.tile}[self.mapping]

    @property
    def loops_over_grid(self) -> bool:
        """Whether a thread (flat) or block (row, col) handles more than one element / row tile."""
        return self.elements > self.grid * self.rows_per_block

    @property
    def warps(self) -> int:
        return self.block // WARP


def next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def launch_shape(kernel: Kernel) -> LaunchShape:
    row_stores = any(s.level == -1 for s in kernel.stores)
    if not kernel.reductions and not row_stores:
        elements = kernel.outer * kernel.inner
        grid = max(1, min(-(-elements // FLAT_BLOCK), MAX_FLAT_GRID))
        return LaunchShape("flat", grid, FLAT_BLOCK, elements)
    if kernel.serial:
        raise NotImplementedError(f"cuda: serial kernel {kernel.name} has reductions or row stores")
    if USE_COL_MAPPING and contiguous_along_o(kernel):
        itemsize = min(dtypes.ITEMSIZE[b.dtype] for b in list(kernel.inputs) + list(kernel.outputs))
        tile = max(4, min(WARP, SECTOR_BYTES // itemsize))
        lanes = min(MAX_ROW_BLOCK // tile, next_pow2(kernel.inner))
        block = max(WARP, tile * lanes)
        tiles = -(-kernel.outer // tile)
        return LaunchShape("col", max(1, min(tiles, MAX_GRID)), block, kernel.outer, tile)
    block = min(MAX_ROW_BLOCK, max(MIN_ROW_BLOCK, next_pow2(kernel.inner)))
    return LaunchShape("row", max(1, min(kernel.outer, MAX_GRID)), block, kernel.outer)
