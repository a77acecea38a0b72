"""Limit OpenBLAS's threads at run time (numpy has no API for it).

On small machines OpenBLAS's spinning worker threads fight numba's kernel threads: a
64x192 GEMM measured 35 ms with OpenBLAS's default threads and 0.07 ms with one. The CPU
backend therefore runs BLAS single-threaded unless MLBH_BLAS_THREADS says otherwise.
"""
import ctypes
import os

_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
_done = []


def _loaded_openblas_paths():
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    return sorted(paths)


def limit_blas_threads(default: int = 1) -> int | None:
    """Set OpenBLAS's thread count once per process; returns the count set, or None."""
    if _done:
        return _done[0]
    n = int(os.environ.get("MLBH_BLAS_THREADS", default))
    result = None
    for path in _loaded_openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(n))
                result = n
    _done.append(result)
    return result
