"""NVRTC cubin compilation, ptxas usage parsing and the compile cache."""
import os

import numpy as np
import pytest

from mlbh.codegen import compile_cache
from mlbh.codegen.compile_cache import cache_stats, cached_compile_cubin, clear_memory_cache
from mlbh.codegen.nvrtc import (compile_cubin, cubin_supported, nvrtc_version,
                                parse_ptxas_usage, quote_error_lines)
from mlbh.tracer.errors import CompileError

ELF_MAGIC = b"\x7fELF"
SUPPORT = cubin_supported()
needs_nvrtc = pytest.mark.skipif(not SUPPORT, reason=f"cannot build cubins: {SUPPORT.reason}")

# Per block: sum over its threads of (x.x+x.y+x.z+x.w) * (2*wb + wh + 1), with wb bf16
# and wh half. Exercises bf16/half arithmetic, float4 loads, warp shuffles and a
# shared-memory reduction across warps.
SAMPLE_KERNEL = r"""
#include <cuda_bf16.h>
#include <cuda_fp16.h>

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;
}

extern "C" __global__ void mixed_block_sum(const float4* __restrict__ x,
                                           const __nv_bfloat16* __restrict__ wb,
                                           const __half* __restrict__ wh,
                                           float* __restrict__ block_sums, int n4) {
    __shared__ float warp_sums[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float acc = 0.0f;
    if (i < n4) {
        float4 v = x[i];
        __nv_bfloat16 b = wb[i] * __float2bfloat16(2.0f);
        __half h = wh[i] + __float2half(1.0f);
        acc = (v.x + v.y + v.z + v.w) * (__bfloat162float(b) + __half2float(h));
    }
    acc = warp_sum(acc);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        int n_warps = (blockDim.x + 31) >> 5;
        acc = warp_sum(lane < n_warps ? warp_sums[lane] : 0.0f);
        if (lane == 0) block_sums[blockIdx.x] = acc;
    }
}
"""

BROKEN_KERNEL = """extern "C" __global__ void broken(float* out) {
    float a = 1.0f
    out[0] = a;
}
"""


def tiny_kernel(tag: str) -> str:
    return f'extern "C" __global__ void tiny_{tag}(float* x) {{ x[threadIdx.x] *= 2.0f; }}\n'


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    """A private on-disk cache dir, an empty memory cache and zeroed counters."""
    monkeypatch.setenv("MLBH_CACHE_DIR", str(tmp_path / "mlbh-cache"))
    clear_memory_cache()
    compile_cache.reset_cache_stats()
    yield tmp_path / "mlbh-cache"
    clear_memory_cache()


# ------------------------------------------------------------------------- compiling

@needs_nvrtc
def test_nvrtc_version_is_a_pair():
    major, minor = nvrtc_version()
    assert major >= 11 and minor >= 0


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_sample_kernel_compiles_to_cubin(arch):
    result = compile_cubin(SAMPLE_KERNEL, arch)
    assert len(result.cubin) > 0
    assert result.cubin.startswith(ELF_MAGIC)
    usage = result.kernels["mixed_block_sum"]
    assert 0 < usage["registers"] <= 255
    assert usage["shared"] == 32 * 4
    assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0
    assert f"'{arch}'" in result.log


@needs_nvrtc
def test_syntax_error_raises_with_source_line():
    with pytest.raises(CompileError) as info:
        compile_cubin(BROKEN_KERNEL, "sm_80", name="broken.cu")
    message = str(info.value)
    assert "broken.cu(3): error" in message
    assert "> 3 |     out[0] = a;" in message
    assert "  2 |     float a = 1.0f" in message


@needs_nvrtc
def test_unknown_arch_is_a_compile_error():
    with pytest.raises(CompileError, match="cannot target sm_30"):
        compile_cubin(tiny_kernel("arch"), "sm_30")


def test_quote_error_lines_marks_every_blamed_line():
    source = "\n".join(f"line{n}" for n in range(1, 11))
    log = 'k.cu(2): error: x\nk.cu(9): catastrophic error: y\nk.cu(5): warning: z'
    quoted = quote_error_lines(source, "k.cu", log)
    assert quoted.splitlines() == [
        "   1 | line1", ">  2 | line2", "   3 | line3", "  ..",
        "   8 | line8", ">  9 | line9", "  10 | line10"]


def test_parse_ptxas_usage_keeps_entries_only():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Function properties for helper
ptxas         .     16 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'big' for 'sm_90'
ptxas info    : Function properties for big
ptxas         .     40 bytes stack frame, 24 bytes spill stores, 28 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 4096 bytes smem, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'small' for 'sm_90'
ptxas info    : Function properties for small
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, 360 bytes cmem[0]
"""
    assert parse_ptxas_usage(log) == {
        "big": {"registers": 255, "spill_stores": 24, "spill_loads": 28,
                "shared": 4096, "stack_frame": 40},
        "small": {"registers": 8, "spill_stores": 0, "spill_loads": 0,
                  "shared": 0, "stack_frame": 0},
    }


# ----------------------------------------------------------------------------- cache

@needs_nvrtc
def test_cache_miss_then_memory_hit(cache_env):
    first = cached_compile_cubin(tiny_kernel("mem"), "sm_80")
    assert cache_stats()["misses"] == 1 and cache_stats()["hits"] == 0
    second = cached_compile_cubin(tiny_kernel("mem"), "sm_80")
    assert second.cubin == first.cubin
    assert cache_stats()["memory_hits"] == 1 and cache_stats()["misses"] == 1


@needs_nvrtc
def test_cache_key_depends_on_arch_and_options(cache_env):
    source = tiny_kernel("key")
    keys = {compile_cache.cache_key(source, "sm_80"),
            compile_cache.cache_key(source, "sm_90"),
            compile_cache.cache_key(source, "sm_80", ("--use_fast_math",))}
    assert len(keys) == 3
    assert compile_cache.cache_key(source, "80") == compile_cache.cache_key(source, "sm_80")


@needs_nvrtc
def test_cache_hit_from_disk_in_fresh_memory(cache_env):
    first = cached_compile_cubin(tiny_kernel("disk"), "sm_90")
    clear_memory_cache()
    second = cached_compile_cubin(tiny_kernel("disk"), "sm_90")
    stats = cache_stats()
    assert (stats["misses"], stats["disk_hits"], stats["memory_hits"]) == (1, 1, 0)
    assert second == first


@needs_nvrtc
def test_cache_respects_mlbh_cache_dir(cache_env):
    source = tiny_kernel("dir")
    cached_compile_cubin(source, "sm_80")
    path = compile_cache.entry_path(compile_cache.cache_key(source, "sm_80"))
    assert path.startswith(str(cache_env))
    assert os.path.isfile(path)
    assert [p for p in os.listdir(os.path.dirname(path)) if p.startswith(".tmp")] == []


@needs_nvrtc
@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "garbage"])
def test_corrupt_disk_entry_is_recompiled_and_repaired(cache_env, damage):
    source = tiny_kernel(f"corrupt_{damage}")
    good = cached_compile_cubin(source, "sm_80")
    path = compile_cache.entry_path(compile_cache.cache_key(source, "sm_80"))
    data = open(path, "rb").read()
    if damage == "flip_byte":
        broken = data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]
    elif damage == "truncate":
        broken = data[: len(data) // 2]
    else:
        broken = b"not a cache entry"
    with open(path, "wb") as entry:
        entry.write(broken)
    clear_memory_cache()

    with pytest.warns(UserWarning, match="corrupt"):
        again = cached_compile_cubin(source, "sm_80")
    stats = cache_stats()
    assert (stats["misses"], stats["disk_hits"], stats["corrupt"]) == (2, 0, 1)
    assert again.cubin == good.cubin
    repaired = compile_cache.decode_entry(open(path, "rb").read())
    assert repaired.cubin == good.cubin


# ------------------------------------------------------------------------------- GPU

def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """uint16 bit patterns of float32 values that are exact in bfloat16."""
    bits = values.astype(np.float32).view(np.uint32)
    assert np.all(bits & 0xFFFF == 0), "values must be exactly representable in bf16"
    return (bits >> 16).astype(np.uint16)


@pytest.mark.gpu
@needs_nvrtc
def test_sample_kernel_runs_on_device(cache_env):
    import cupy

    from mlbh.codegen.cuda_device import device_arch, get_function, load_module

    result = cached_compile_cubin(SAMPLE_KERNEL, device_arch())
    kernel = get_function(load_module(result.cubin), "mixed_block_sum")

    rng = np.random.default_rng(0)
    n4, block = 1000, 256  # not a multiple of the block: the tail must be masked
    grid = (n4 + block - 1) // block
    x = rng.standard_normal((n4, 4)).astype(np.float32)
    # Multiples of 1/8 in [-2, 2] are exact in bf16 and fp16, and so are 2*wb and wh+1.
    wb = (rng.integers(-16, 17, n4) / 8).astype(np.float32)
    wh = (rng.integers(-16, 17, n4) / 8).astype(np.float16)

    x_dev = cupy.asarray(x)
    wb_dev = cupy.asarray(bfloat16_bits(wb))
    wh_dev = cupy.asarray(wh)
    sums_dev = cupy.full(grid, np.nan, dtype=cupy.float32)
    kernel((grid,), (block,), (x_dev, wb_dev, wh_dev, sums_dev, np.int32(n4)))
    cupy.cuda.get_current_stream().synchronize()

    per_thread = x.astype(np.float64).sum(axis=1) * (2.0 * wb + wh.astype(np.float64) + 1.0)
    padded = np.zeros(grid * block)
    padded[:n4] = per_thread
    expected = padded.reshape(grid, block).sum(axis=1)
    np.testing.assert_allclose(cupy.asnumpy(sums_dev), expected, rtol=1e-4, atol=1e-3)
