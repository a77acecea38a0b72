"""Shared pytest setup: tests marked `gpu` are skipped where no CUDA device is usable.

The `gpu` marker itself is declared in setup.cfg [tool:pytest].
"""
import pytest


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    from mlbh.codegen.cuda_device import cuda_available, unavailable_reason

    if cuda_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device: {unavailable_reason()}")
    for item in gpu_items:
        item.add_marker(skip)
