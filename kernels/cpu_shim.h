// cpu_shim.h — build a kernels/*.cu file, unchanged, as host C++ (docs/design.md §5).
//
// tests/support/kernelcheck.py compiles  `#include "cpu_shim.h"` + `#include "<kernel>.cu"`
// + one generated launcher per kernel with g++ -fsanitize=address into a shared
// library. A launch is a sequential loop over the grid; each "thread" runs the
// kernel body with its own blockIdx/threadIdx. That is exact for kernels whose
// threads do not communicate (gpupipe.cuh's rules).
//
// Files that use __syncthreads (block-shared memory tiles) get a cooperative launch
// instead (shim_launch_cooperative): one OS thread per CUDA thread of a block, the
// blocks one after another, so a __shared__ array (a static here) is the block's.
// __syncthreads is a real barrier; a barrier that some threads of a block miss
// (divergent, undefined on a GPU) aborts with a message instead of deadlocking.
// Never used by the CUDA build.
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static        // one block runs at a time: its shared memory is one static

struct dim3 { unsigned int x = 1, y = 1, z = 1; };
static thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

struct uint4 { unsigned int x, y, z, w; };      // CUDA's vector type (gpupipe.cuh's GpVec16)

// Device intrinsics: plain host maths (g++ is run with -ffp-contract=off, so no FMAs either).
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline int __float2int_rn(float v) { return (int)nearbyintf(v); }  // round half to even
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
// Plain launches run one thread at a time (shim_launch), so an atomic add is an add.
static inline int atomicAdd(int* p, int v) { const int old = *p; *p += v; return old; }
static inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int shift) {
    return (unsigned int)((((unsigned long long)hi << 32) | lo) >> (shift & 31));
}

// Run `body` (a call of the kernel) once per thread of a (gx, gy, gz) x (bx, by, bz) launch.
template <class F>
static void shim_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, F body) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y) for (unsigned x = 0; x < gx; ++x)
        for (unsigned tz = 0; tz < bz; ++tz) for (unsigned ty = 0; ty < by; ++ty) for (unsigned tx = 0; tx < bx; ++tx) {
            blockIdx = {x, y, z};
            threadIdx = {tx, ty, tz};
            body();
        }
}

// A block-wide barrier that knows where each thread waits: __syncthreads (SYNC) or the end of
// the block (END). A generation mixing the two, or one that does not fill in 10 s, means some
// threads of the block skipped a __syncthreads the others reached.
struct ShimBarrier {
    enum Site { SYNC, END };
    explicit ShimBarrier(unsigned n) : count(n) {}
    void wait(Site site) {
        std::unique_lock<std::mutex> lock(mutex);
        if (waiting == 0) first_site = site;
        if (site != first_site) divergent();
        const unsigned long long generation_now = generation;
        if (++waiting == count) {
            waiting = 0;
            ++generation;
            ready.notify_all();
            return;
        }
        if (!ready.wait_for(lock, std::chrono::seconds(10), [&] { return generation != generation_now; }))
            divergent();
    }
    [[noreturn]] static void divergent() {
        fprintf(stderr, "cpu_shim: __syncthreads reached by some threads of a block and not by others "
                        "(a divergent barrier: undefined behaviour on a GPU)\n");
        abort();
    }
    std::mutex mutex;
    std::condition_variable ready;
    const unsigned count;
    unsigned waiting = 0;
    unsigned long long generation = 0;
    Site first_site = SYNC;
};
static ShimBarrier* shim_barrier = nullptr;

static inline void __syncthreads() {
    if (shim_barrier == nullptr) {
        fprintf(stderr, "cpu_shim: __syncthreads in a kernel launched with shim_launch, not shim_launch_cooperative\n");
        abort();
    }
    shim_barrier->wait(ShimBarrier::SYNC);
}

// Run `body` with one OS thread per thread of a block, block after block (every thread waits at
// the end of each block, so no thread starts the next one while the block's shared memory is in use).
template <class F>
static void shim_launch_cooperative(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                    F body) {
    const unsigned n = bx * by * bz;
    ShimBarrier barrier(n);
    shim_barrier = &barrier;
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (unsigned t = 0; t < n; ++t)
        threads.emplace_back([&, t] {
            gridDim = {gx, gy, gz};
            blockDim = {bx, by, bz};
            threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
            for (unsigned z = 0; z < gz; ++z) for (unsigned y = 0; y < gy; ++y) for (unsigned x = 0; x < gx; ++x) {
                blockIdx = {x, y, z};
                body();
                barrier.wait(ShimBarrier::END);
            }
        });
    for (auto& thread : threads) thread.join();
    shim_barrier = nullptr;
}
