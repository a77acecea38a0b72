"""Run precompiled cubins on a CUDA device through CuPy.

CuPy is imported lazily so that importing mlbh never requires a GPU or a driver.
"""
from __future__ import annotations

import functools

from mlbh.tracer.errors import MlbhError


class DeviceError(MlbhError):
    """No usable CUDA device, or the driver refused a module or kernel."""


@functools.lru_cache(maxsize=None)
def _probe_device():
    """(True, "") when cupy imports and sees a device, else (False, reason)."""
    try:
        import cupy
    except Exception as exc:
        return False, f"cupy does not import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device, driver too old...
        return False, f"no CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "no CUDA device (device count is 0)"
    return True, ""


def cuda_available() -> bool:
    """True only when cupy imports and a CUDA device is present. Never raises."""
    try:
        return _probe_device()[0]
    except Exception:
        return False


def unavailable_reason() -> str:
    """Why cuda_available() is False ("" when it is True)."""
    try:
        return _probe_device()[1]
    except Exception as exc:
        return f"device probe failed ({exc})"


def require_cupy():
    """CuPy, or a DeviceError saying why there is no usable CUDA device."""
    if not cuda_available():
        raise DeviceError(f"CUDA is not available: {unavailable_reason()}")
    import cupy
    return cupy


def device_arch(device_id: int | None = None) -> str:
    """The device's architecture as an NVRTC target, e.g. 'sm_90'."""
    cupy = require_cupy()
    device = cupy.cuda.Device(device_id) if device_id is not None else cupy.cuda.Device()
    return f"sm_{device.compute_capability}"


def device_name(device_id: int | None = None) -> str:
    cupy = require_cupy()
    index = device_id if device_id is not None else cupy.cuda.Device().id
    name = cupy.cuda.runtime.getDeviceProperties(index)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def load_module(cubin: bytes):
    """Load a cubin into the current device's context; returns a cupy Module."""
    cupy = require_cupy()
    module = cupy.cuda.function.Module()
    try:
        module.load(bytes(cubin))
    except Exception as exc:
        raise DeviceError(f"the driver could not load the cubin ({exc}); was it built "
                          f"for this device's arch ({device_arch()})?") from exc
    return module


def get_function(module, name: str):
    """A kernel of a loaded module, callable as f(grid, block, args, shared_mem=0)."""
    try:
        return module.get_function(name)
    except Exception as exc:
        raise DeviceError(f"kernel {name!r} not found in module ({exc}); "
                          f"C++ kernels need extern \"C\" to keep their names") from exc
