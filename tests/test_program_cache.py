"""The on-disk program cache (codegen/program_cache.py): a warm lower skips the passes,
fusion and memory planning and gives the same program; corrupt entries and compiler
changes miss; a cached program is sound in a process with other string hashes."""
import os
import subprocess
import sys

import numpy as np
import pytest

from mlbh.codegen import cpu, program_cache
from mlbh.runtime.jitted import jit
from mlbh.tracer import ops

from gpt_block import BlockConfig, block_loss, init_batch, init_params
from mlbh import tracer as T

CFG = BlockConfig(batch=2, seq=8, width=16, heads=2, vocab=32)


def block_grad():
    return T.value_and_grad(lambda p, x, t: block_loss(p, x, t, CFG.heads))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBH_CACHE_DIR", str(tmp_path))
    return tmp_path


def _entries(root):
    return [os.path.join(d, f) for d, _, files in os.walk(os.path.join(root, "programs")) for f in files]


def test_a_warm_lower_loads_the_same_program_and_runs_the_same(cache_dir):
    args = (init_params(CFG), *init_batch(CFG))
    # one line: the traced graph records its call sites, and the key covers them
    cold, warm = (jit(block_grad(), backend="cpu").lower(*args) for _ in range(2))
    assert (cold.program_cache, warm.program_cache) == ("miss", "hit")
    assert "fuse" in cold.timings and "fuse" not in warm.timings
    assert cpu.render_program(warm.program.kernels) == cpu.render_program(cold.program.kernels)
    assert warm.memory.peak == cold.memory.peak and warm.fusion_text() == cold.fusion_text()
    a, b = cold.compile()(list(T.pytree.flatten(list(args))[0])), warm.compile()(list(T.pytree.flatten(list(args))[0]))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_backends_and_graphs_get_their_own_entries(cache_dir):
    x = np.ones((4, 8), np.float32)
    jit(lambda a: ops.exp(a) + 1, backend="cpu").lower(x)
    jit(lambda a: ops.exp(a) + 1, backend="cuda").lower(x)
    jit(lambda a: ops.exp(a) + 2, backend="cpu").lower(x)
    assert len(_entries(cache_dir)) == 3


def test_a_corrupt_entry_is_rebuilt_not_used(cache_dir):
    x = np.ones((4, 8), np.float32)
    fn = lambda a: ops.tanh(a) * 3  # noqa: E731
    lowered = [jit(fn, backend="cpu").lower(x) for _ in range(3)][0]
    [path] = _entries(cache_dir)
    with open(path, "r+b") as f:
        f.seek(len(program_cache.MAGIC) + 70)
        f.write(b"garbage")
    with pytest.warns(UserWarning, match="corrupt"):
        states = [jit(fn, backend="cpu").lower(x).program_cache for _ in range(2)]
    assert lowered.program_cache == "miss" and states == ["miss", "hit"]
    np.testing.assert_allclose(jit(fn, backend="cpu")(x), np.tanh(x) * 3, rtol=1e-6)


def test_a_change_to_the_compiler_misses(cache_dir, monkeypatch):
    x = np.ones((4, 8), np.float32)
    fn = lambda a: ops.sqrt(a) - 1  # noqa: E731
    def lower():
        return jit(fn, backend="cpu").lower(x).program_cache

    assert (lower(), lower()) == ("miss", "hit")
    monkeypatch.setattr(program_cache, "code_fingerprint", lambda: "another compiler")
    assert lower() == "miss"


def test_the_cache_can_be_turned_off(cache_dir, monkeypatch):
    monkeypatch.setenv("MLBH_PROGRAM_CACHE", "0")
    x = np.ones((4, 8), np.float32)
    assert jit(lambda a: a * 2, backend="cpu").lower(x).program_cache == "off"
    assert not _entries(cache_dir)


LOAD_AND_RENDER = """
import sys
from mlbh.codegen import cpu, program_cache
program, memory = program_cache.load(sys.argv[1])
print(cpu.render_program(program.kernels)[0])
"""


def test_a_cached_program_renders_the_same_in_a_process_with_other_string_hashes(cache_dir):
    """Kernel IR nodes cache their hash, and str hashes are salted per process: a loaded
    node must hash afresh, or the renderer's node tables (CSE) would split equal nodes."""
    args = (init_params(CFG), *init_batch(CFG))
    lowered = jit(block_grad(), backend="cpu").lower(*args)
    key = program_cache.program_key(lowered.traced, "cpu")
    want = cpu.render_program(lowered.program.kernels)[0]
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", LOAD_AND_RENDER, key], env=env,
                             capture_output=True, text=True, check=True).stdout
        assert out.rstrip("\n") == want.rstrip("\n")


def test_renderings_of_a_cached_program_are_cached_beside_it(cache_dir):
    """The CUDA kernels a warm program renders to come from the cache, equal to a fresh
    rendering; a program rewritten with in-place stores (donation) gets its own entry."""
    from mlbh.codegen import cuda
    from mlbh.runtime.cpu_backend import CpuBackend
    from mlbh.runtime.executable import Executable
    x = np.ones((4, 8), np.float32)
    lowered = [jit(lambda a, b: a * 2 + b, backend="cuda").lower(x, x) for _ in range(2)][1]
    assert lowered.program_cache == "hit"
    fresh = [cuda.render_kernel(k) for k in lowered.program.kernels]
    before = len(_entries(cache_dir))
    assert cuda.render_program(lowered.program) == fresh
    assert len(_entries(cache_dir)) == before + 1
    assert cuda.render_program(lowered.program) == fresh  # now from the cache
    assert len(_entries(cache_dir)) == before + 1
    assert Executable(lowered.program, CpuBackend()).program.cache_key == lowered.program.cache_key
    donated = Executable(lowered.program, CpuBackend(), donate=(0,))
    assert donated.aliases and donated.program.cache_key != lowered.program.cache_key


def test_a_cached_program_remembers_its_cubins_until_the_toolchain_changes(cache_dir, monkeypatch):
    """A warm compile_program neither compiles nor looks a module up in the cubin cache;
    another toolchain (here: another CUDA_PATH) compiles again."""
    from mlbh.codegen import compile_cache, cuda, nvrtc
    support = nvrtc.cubin_supported()
    if not support:
        pytest.skip(f"cannot build cubins: {support.reason}")
    compile_cache.toolchain_fingerprint.cache_clear()
    x = np.ones((4, 8), np.float32)
    lowered = [jit(lambda a, b: ops.tanh(a) * b, backend="cuda").lower(x, x) for _ in range(2)][1]
    compile_cache.clear_memory_cache()
    before = compile_cache.cache_stats()
    cold = cuda.compile_program(lowered.program, "sm_80")
    mid = compile_cache.cache_stats()
    assert mid["misses"] - before["misses"] == 1 and mid["remembered"] == before["remembered"]
    warm = cuda.compile_program(lowered.program, "sm_80")
    after = compile_cache.cache_stats()
    assert after["remembered"] - mid["remembered"] == 1
    assert {k: after[k] - mid[k] for k in ("memory_hits", "disk_hits", "misses")} == dict.fromkeys(
        ("memory_hits", "disk_hits", "misses"), 0)
    assert [(kc.source, r.cubin) for kc, r in warm] == [(kc.source, r.cubin) for kc, r in cold]

    monkeypatch.setenv("CUDA_PATH", "/elsewhere/cuda-99")
    compile_cache.toolchain_fingerprint.cache_clear()
    cuda.compile_program(lowered.program, "sm_80")
    compile_cache.toolchain_fingerprint.cache_clear()  # later tests fingerprint the real toolchain
    assert compile_cache.cache_stats()["remembered"] == after["remembered"]
