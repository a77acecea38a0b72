// Runs generated CUDA kernels on the host, for tests on machines without a GPU.
//
// Each CUDA thread of a block is a ucontext coroutine on one OS thread; a thread runs until
// it waits at __syncthreads or a warp shuffle, then the next one runs. So barriers and
// shuffles have their CUDA meaning, shared memory is a static (one per kernel, reused by
// the blocks, which run one after another), and atomics are trivially atomic. Floats follow
// IEEE on both sides; libm and CUDA's math functions may differ in the last bits.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__ __restrict
#define __shared__ static

struct mlbh_dim3 { unsigned int x = 0, y = 0, z = 0; };
static mlbh_dim3 threadIdx, blockIdx, blockDim, gridDim;

// ------------------------------------------------------------------ float16 / bfloat16

struct __half { _Float16 v; };
struct __nv_bfloat16 { unsigned short bits; };

inline __half __float2half_rn(float f) { __half h; h.v = (_Float16)f; return h; }
inline __half __double2half(double d) { __half h; h.v = (_Float16)d; return h; }
inline float __half2float(__half h) { return (float)h.v; }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    __nv_bfloat16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        b.bits = (unsigned short)((u >> 16) | 0x40u);  // NaN stays a (quiet) NaN
        return b;
    }
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    b.bits = (unsigned short)(u >> 16);
    return b;
}
inline float __bfloat162float(__nv_bfloat16 b) {
    unsigned int u = (unsigned int)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }

// ------------------------------------------------------------------------- atomics

template <typename T> inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
inline __half atomicAdd(__half* p, __half v) {
    __half old = *p;
    *p = __float2half_rn(__half2float(old) + __half2float(v));
    return old;
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
    __nv_bfloat16 old = *p;
    *p = __float2bfloat16_rn(__bfloat162float(old) + __bfloat162float(v));
    return old;
}
inline unsigned int atomicCAS(unsigned int* p, unsigned int compare, unsigned int value) {
    unsigned int old = *p;
    if (old == compare) *p = value;
    return old;
}

// ----------------------------------------------------------------------- scheduler

namespace emu {
const size_t STACK_BYTES = 64 * 1024;

struct Thread {
    ucontext_t context;
    std::vector<char> stack;
    bool done = false;
};

static std::vector<Thread> threads;
static ucontext_t scheduler;
static void (*body)(void**) = nullptr;
static void** body_args = nullptr;
static unsigned int current = 0;
static unsigned long long progress = 0;  // barrier arrivals + threads finished
static int block_arrived = 0;
static unsigned int block_generation = 0;
static int warp_arrived[32];
static unsigned int warp_generation[32];
static unsigned long long exchange[1024];

inline void yield() { swapcontext(&threads[current].context, &scheduler); }

inline void barrier(int& arrived, unsigned int& generation, int count) {
    unsigned int mine = generation;
    ++progress;
    if (++arrived == count) {
        arrived = 0;
        ++generation;
        return;
    }
    while (generation == mine) yield();
}

inline void run_thread() {
    body(body_args);
    threads[current].done = true;
    ++progress;
}

inline int launch(void (*kernel_body)(void**), void** args, unsigned int grid, unsigned int block) {
    body = kernel_body;
    body_args = args;
    gridDim.x = grid; gridDim.y = gridDim.z = 1;
    blockDim.x = block; blockDim.y = blockDim.z = 1;
    threads.resize(block);
    for (unsigned int b = 0; b < grid; ++b) {
        blockIdx.x = b;
        block_arrived = 0;
        for (int w = 0; w < 32; ++w) warp_arrived[w] = 0;
        for (unsigned int t = 0; t < block; ++t) {
            Thread& th = threads[t];
            th.stack.resize(STACK_BYTES);
            th.done = false;
            getcontext(&th.context);
            th.context.uc_stack.ss_sp = th.stack.data();
            th.context.uc_stack.ss_size = STACK_BYTES;
            th.context.uc_link = &scheduler;
            makecontext(&th.context, (void (*)())run_thread, 0);
        }
        for (;;) {
            bool alive = false;
            unsigned long long before = progress;
            for (unsigned int t = 0; t < block; ++t) {
                if (threads[t].done) continue;
                alive = true;
                current = t;
                threadIdx.x = t;
                swapcontext(&scheduler, &threads[t].context);
            }
            if (!alive) break;
            if (progress == before) {
                std::fprintf(stderr, "cuda emulator: block %u deadlocked at a barrier\n", b);
                return 1;
            }
        }
    }
    return 0;
}
}  // namespace emu

inline void __syncthreads() { emu::barrier(emu::block_arrived, emu::block_generation, (int)blockDim.x); }

template <typename T> inline T __shfl_xor_sync(unsigned int, T value, int lane_mask) {
    unsigned int t = threadIdx.x, w = t / 32;
    std::memcpy(&emu::exchange[t], &value, sizeof(T));
    emu::barrier(emu::warp_arrived[w], emu::warp_generation[w], 32);
    T out;
    std::memcpy(&out, &emu::exchange[t ^ (unsigned int)lane_mask], sizeof(T));
    emu::barrier(emu::warp_arrived[w], emu::warp_generation[w], 32);
    return out;
}
