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


@pytest.fixture(scope="session", autouse=True)
def compile_cache_dir(tmp_path_factory):
    """Generated kernels and numba's machine code go to a per-session folder, not ~/.cache."""
    import os

    path = str(tmp_path_factory.mktemp("mlbh_cache"))
    old = os.environ.get("MLBH_CACHE_DIR")
    os.environ["MLBH_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("MLBH_CACHE_DIR", None)
    else:
        os.environ["MLBH_CACHE_DIR"] = old
