"""The CPU backend's worker threads: native loops (codegen/cpu_fork_join.py) that run
shares of a kernel's rows, one per extra core, started on first use.

Each worker is a Python thread that calls the native loop through ctypes (which releases
the GIL) and stays in it until the process ends; a forked child starts its own. Linux
only (the workers sleep on a futex); elsewhere `fork_join_pool` returns None and kernels
run on the calling thread.
"""
import atexit
import ctypes
import os
import platform
import sys
import threading

import numpy as np

from mlbh.codegen import cpu_fork_join, cpu_jit

# A packed entry, fn(lo, hi, n, ptr args): how every kernel and split GEMM is called.
PACKED_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
LINE = 64  # bytes per worker slot: one cache line, so workers never share one
_POOLS = {}  # pid -> ForkJoinPool


def module_source() -> str:
    """The workers' LLVM module (codegen/cpu_fork_join.py) for this machine."""
    return cpu_fork_join.module_source(platform.machine())


class ForkJoinPool:
    def __init__(self, workers: int):
        functions = cpu_jit.load_module(module_source(), {"mlbh_worker", "mlbh_fork_join", "mlbh_stop"}, pinned=True)
        vp, i64 = ctypes.c_void_p, ctypes.c_int64
        self.fork_join_address = functions["mlbh_fork_join"]
        self._fork_join = ctypes.CFUNCTYPE(None, vp, vp, vp, i64, i64, vp, i64)(self.fork_join_address)
        self._stop = ctypes.CFUNCTYPE(None, vp)(functions["mlbh_stop"])
        worker = ctypes.CFUNCTYPE(None, vp, vp)(functions["mlbh_worker"])
        self.workers = workers
        self._lock = threading.Lock()
        self._memory = np.zeros((workers + 2) * LINE, np.uint8)  # zeroed: every gen starts at 0
        self.slots = self._memory.ctypes.data + (-self._memory.ctypes.data) % LINE
        self.job = self.slots + workers * LINE
        self._threads = [threading.Thread(target=worker, args=(self.slots + i * LINE, self.job),
                                          name=f"mlbh-cpu-{i + 1}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def run(self, fn_address: int, rows: int, n: int, args, shares: int) -> bool:
        """fn (a kernel's packed entry) over rows [0, rows) in `shares` shares, the first on
        this thread; returns when all are done. False, having run nothing, while another
        thread has the workers."""
        if not self.acquire():
            return False
        try:
            self._fork_join(self.slots, self.job, fn_address, rows, n, args, min(shares, self.workers + 1))
        finally:
            self.release()
        return True

    def acquire(self) -> bool:
        """Take the workers for this thread (native callers of mlbh_fork_join); False while
        another thread has them."""
        return self._lock.acquire(blocking=False)

    def release(self):
        self._lock.release()

    def close(self):
        for i, t in enumerate(self._threads):
            self._stop(self.slots + i * LINE)
        for t in self._threads:
            t.join(timeout=1.0)


def has_workers(cores: int) -> bool:
    """Whether this process runs native workers for `cores` cores: more than one, on Linux
    on a machine whose futex call cpu_fork_join knows."""
    return cores >= 2 and sys.platform.startswith("linux") and platform.machine() in cpu_fork_join.SYS_FUTEX


def fork_join_pool(cores: int):
    """This process's pool with cores - 1 workers, or None when there is one core or the
    platform has no native workers."""
    if not has_workers(cores):
        return None
    pid = os.getpid()
    pool = _POOLS.get(pid)
    if pool is None or pool.workers < cores - 1:
        if pool is not None:
            pool.close()
        _POOLS.clear()  # a forked child's copy of its parent's pool has no threads
        pool = _POOLS[pid] = ForkJoinPool(cores - 1)
    return pool


@atexit.register
def _stop_workers():
    pool = _POOLS.pop(os.getpid(), None)
    if pool is not None:
        pool.close()
