"""Set OpenBLAS's thread count at run time (numpy has no API for it): MLBH_BLAS_THREADS.

The CPU backend's own GEMMs hold OpenBLAS to one thread per call and split the work
across its workers (runtime/cpu_gemm.py); this count applies to numpy's other uses of
OpenBLAS in the process (the reference interpreter, user code). Set MLBH_BLAS_THREADS=1
where another process competes for the cores.
"""
import ctypes
import os

_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
_done = []


def loaded_openblas_paths():
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    return sorted(paths)


def limit_blas_threads() -> int | None:
    """Apply MLBH_BLAS_THREADS once per process; returns the count set, or None."""
    if _done:
        return _done[0]
    if not os.environ.get("MLBH_BLAS_THREADS"):
        _done.append(None)
        return None
    n = int(os.environ["MLBH_BLAS_THREADS"])
    result = None
    for path in loaded_openblas_paths():
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
