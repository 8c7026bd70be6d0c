// cpu_shim.h — build a kernels/*.cu file, unchanged, as host C++ (DESIGN.md §5).
//
// tests/kernelcheck.py compiles  `#include "cpu_shim.h"` + `#include "<kernel>.cu"`
// + one generated launcher per kernel with g++ -fsanitize=address into a shared
// library. A launch is a sequential loop over the grid; each "thread" runs the
// kernel body with its own blockIdx/threadIdx. That is exact for kernels written
// to gpupipe.cuh's rules (no shared memory, no __syncthreads, no inter-thread
// communication). Never used by the CUDA build.
#pragma once
#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct dim3 { unsigned int x = 1, y = 1, z = 1; };
static thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

struct uint4 { unsigned int x, y, z, w; };      // CUDA's vector type (gpupipe.cuh's GpVec16)

// Device intrinsics: plain host maths (g++ is run with -ffp-contract=off, so no FMAs either).
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline int __float2int_rn(float v) { return (int)nearbyintf(v); }  // round half to even
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }

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
