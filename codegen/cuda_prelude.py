"""The CUDA C every generated translation unit starts with: includes, constants and the
device helpers the rendered expressions and block reductions call.

Only headers that both NVRTC (given the CUDA include dir) and nvcc find are used; the
integer types are spelled as C types (long long, unsigned int) so <stdint.h>, which NVRTC
lacks, is not needed. INFINITY/NAN come from <math.h> under nvcc and are defined here
from bit patterns under NVRTC, which has no <math.h>.
"""

INCLUDES = r"""#include <cuda_bf16.h>
#include <cuda_fp16.h>
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __int_as_float(0x7fffffff)
#endif
"""

# Philox4x32-10, counter (index low word, index high word, 0, 0), first output word:
# bit for bit mlbh.tracer.prims_elementwise.philox_bits. Plain C++ (no intrinsics), so the
# tests can also compile it for the host and compare with numpy.
PHILOX = r"""__device__ __forceinline__ unsigned int mlbh_philox(unsigned int k0, unsigned int k1,
                                                    unsigned long long counter) {
    unsigned int c0 = (unsigned int)counter, c1 = (unsigned int)(counter >> 32), c2 = 0u, c3 = 0u;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        unsigned long long p0 = 0xD2511F53ull * c0;
        unsigned long long p1 = 0xCD9E8D57ull * c2;
        unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0;
        unsigned int n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
        c1 = (unsigned int)p1;
        c3 = (unsigned int)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c0;
}
"""

# numpy semantics for the value ops on integers (floor division, integer power, x // 0 == 0)
# and for max/min of floats (NaN wins). Plain C++ as well, for the host tests.
ARITHMETIC = r"""template <typename T> __device__ __forceinline__ T mlbh_floordiv(T a, T b) {
    if (b == 0) return T(0);
    T q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
}
__device__ __forceinline__ unsigned int mlbh_floordiv(unsigned int a, unsigned int b) {
    return b == 0u ? 0u : a / b;
}
__device__ __forceinline__ unsigned short mlbh_floordiv(unsigned short a, unsigned short b) {
    return b == 0 ? (unsigned short)0 : (unsigned short)(a / b);
}
template <typename T> __device__ __forceinline__ T mlbh_ipow(T base, T exponent) {
    if (exponent < 0) {  // only 1 and -1 have integer reciprocals
        if (base == 1) return T(1);
        if (base == T(0) - T(1)) return (exponent & 1) ? base : T(1);
        return T(0);
    }
    T result = 1;
    while (exponent > 0) {
        if (exponent & 1) result = (T)(result * base);
        base = (T)(base * base);
        exponent >>= 1;
    }
    return result;
}
template <typename T> __device__ __forceinline__ T mlbh_fmax(T a, T b) {
    return (a > b || a != a) ? a : b;
}
template <typename T> __device__ __forceinline__ T mlbh_fmin(T a, T b) {
    return (a < b || a != a) ? a : b;
}
__device__ __forceinline__ long long mlbh_clamp_index(long long i, long long limit) {
    return i < 0 ? 0 : (i >= limit ? limit - 1 : i);
}
"""

ROUNDING = r"""__device__ __forceinline__ float mlbh_round_bf16(float x) {
    return __bfloat162float(__float2bfloat16_rn(x));
}
__device__ __forceinline__ float mlbh_round_half(float x) { return __half2float(__float2half_rn(x)); }
"""

# Combine steps of the reductions: argmax keeps the larger value, a NaN over any number
# (numpy returns the first NaN), and the lower index on ties.
REDUCTION = r"""template <typename T> __device__ __forceinline__ T mlbh_max_of(T a, T b) { return a > b ? a : b; }
__device__ __forceinline__ float mlbh_max_of(float a, float b) { return mlbh_fmax(a, b); }
__device__ __forceinline__ double mlbh_max_of(double a, double b) { return mlbh_fmax(a, b); }
template <typename T>
__device__ __forceinline__ void mlbh_argmax_step(T& value, long long& index, T other, long long other_index) {
    bool nan = value != value, other_nan = other != other;
    bool better = (other > value) || (other_nan && !nan) ||
                  ((other == value || (other_nan && nan)) && other_index < index);
    if (better) {
        value = other;
        index = other_index;
    }
}
template <typename T> __device__ __forceinline__ T mlbh_warp_sum(T v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}
template <typename T> __device__ __forceinline__ T mlbh_warp_max(T v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = mlbh_max_of(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}
template <typename T> __device__ __forceinline__ void mlbh_warp_argmax(T& value, long long& index) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        T other = __shfl_xor_sync(0xffffffffu, value, offset);
        long long other_index = __shfl_xor_sync(0xffffffffu, index, offset);
        mlbh_argmax_step(value, index, other, other_index);
    }
}
"""

# atomicAdd exists for these on sm_80+; 8- and 16-bit integers go through a CAS loop on the
# aligned 32-bit word that holds them.
ATOMICS = r"""__device__ __forceinline__ void mlbh_atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void mlbh_atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void mlbh_atomic_add(__half* p, __half v) { atomicAdd(p, v); }
__device__ __forceinline__ void mlbh_atomic_add(__nv_bfloat16* p, __nv_bfloat16 v) { atomicAdd(p, v); }
__device__ __forceinline__ void mlbh_atomic_add(int* p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void mlbh_atomic_add(unsigned int* p, unsigned int v) { atomicAdd(p, v); }
__device__ __forceinline__ void mlbh_atomic_add(long long* p, long long v) {
    atomicAdd((unsigned long long*)p, (unsigned long long)v);
}
template <typename T> __device__ __forceinline__ void mlbh_atomic_add_narrow(T* p, T v) {
    unsigned long long address = (unsigned long long)p;
    unsigned int* word = (unsigned int*)(address & ~3ull);
    unsigned int shift = (unsigned int)(address & 3ull) * 8u;
    unsigned int mask = ((1u << (8u * sizeof(T))) - 1u) << shift;
    unsigned int old = *word, assumed;
    do {
        assumed = old;
        T current = (T)((assumed & mask) >> shift);
        T sum = sizeof(T) == 1 ? (T)(current || v) : (T)(current + v);
        unsigned int updated = (assumed & ~mask) | (((unsigned int)sum << shift) & mask);
        old = atomicCAS(word, assumed, updated);
    } while (old != assumed);
}
__device__ __forceinline__ void mlbh_atomic_add(unsigned short* p, unsigned short v) { mlbh_atomic_add_narrow(p, v); }
__device__ __forceinline__ void mlbh_atomic_add(bool* p, bool v) { mlbh_atomic_add_narrow(p, v); }
"""


def prelude() -> str:
    """Everything a generated kernel's translation unit needs before the kernel."""
    return "\n".join([INCLUDES, ROUNDING, ARITHMETIC, PHILOX, REDUCTION, ATOMICS])
