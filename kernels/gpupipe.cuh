// gpupipe.cuh — shared definitions for every kernel in kernels/*.cu.
//
// The batched contract (docs/design.md §5): a batch is ONE packed uint8 buffer holding
// HWC images back to back, plus one ImageDesc per image. Images of different
// sizes and channel counts share one launch:
//
//   grid  = (gx, gy), block = (bx)          any sizes; the kernels stride over both
//   image i        = blockIdx.y, blockIdx.y + gridDim.y, ...
//   output pixels  = GP_PIXELS_PER_THREAD per thread and round, see GP_FOR_EACH_PIXEL
//
// A thread computes whole output pixels (all their channels), no dynamic allocation:
// a sequential loop over the grid (the CPU shim, kernels/cpu_shim.h) runs the same code
// exactly, which is how the kernels are verified without a GPU (tests/support/kernelcheck.py).
// A kernel may share a static __shared__ tile within a block if every thread of the
// block reaches each __syncthreads (transpose.cu): the shim then runs a block's threads
// as OS threads at once, and aborts on a barrier some of them skip.
//
// Float maths is float32. Where a result must be bit-identical to the NumPy
// backend, products and sums are written with __fmul_rn/__fadd_rn so nvcc cannot
// contract them into FMAs (NumPy rounds each operation). Stores round half to
// even and clamp to 0..255 (store_u8).
//
// This header includes no system header: NVRTC (cupy.RawModule) has none.
#pragma once

struct ImageDesc {
    long long in_offset;    // element offset of the image in the packed input buffer
    long long out_offset;   // element offset of the result in the packed output buffer
    long long aux_offset;   // kernel-specific offset into an auxiliary buffer
                            //   (resample: coefficient tables; watermark: mark pixels)
    int width;              // input width, height, channels (1 L, 2 LA, 3 RGB, 4 RGBA)
    int height;
    int channels;
    int out_width;          // output width, height, channels
    int out_height;
    int out_channels;
    int x;                  // origin: crop source (x, y); pad / watermark destination (left, top)
    int y;
    int param[4];           // kernel-specific integers, documented by each kernel
};
static_assert(sizeof(ImageDesc) == 72, "ImageDesc layout is shared with the host (tests/support/kernelcheck.py)");

// Stride loops of the contract above.
#define GP_FOR_EACH_IMAGE(i, n_images) \
    for (int i = blockIdx.y; i < (n_images); i += gridDim.y)
// Each thread takes GP_PIXELS_PER_THREAD pixels per round, a block-width apart (so a warp's
// accesses stay contiguous), unrolled: their loads are independent (src and dst are __restrict__),
// so a thread has several in flight at once. With one pixel per thread the byte kernels kept too
// few bytes in flight to cover the memory latency (25-30 % of the H100's bandwidth). The inner
// one-round `for` scopes p; `continue` in a body ends that pixel only.
#define GP_PIXELS_PER_THREAD 4
#define GP_FOR_EACH_PIXEL(p, count) \
    for (long long gp_round = (long long)blockIdx.x * blockDim.x * GP_PIXELS_PER_THREAD + threadIdx.x; \
         gp_round < (count); gp_round += (long long)gridDim.x * blockDim.x * GP_PIXELS_PER_THREAD) \
        GP_UNROLL for (int gp_k = 0; gp_k < GP_PIXELS_PER_THREAD; ++gp_k) \
            for (long long p = gp_round + (long long)gp_k * blockDim.x; p < (count); p = (count))

// (x, y) of pixel p of a row-major image `width` pixels wide. 32-bit division: a 64-bit one costs
// several times more on a GPU, and the host keeps every image under 2^31 pixels (plans.descriptors).
__device__ __forceinline__ void gp_xy(long long p, int width, int* x, int* y) {
    const unsigned int q = (unsigned int)p, w = (unsigned int)width, row = q / w;
    *y = (int)row;
    *x = (int)(q - row * w);
}

// Kernels that walk vectors over [first, last) take the elements before and after them one by
// one: the k-th of those (k < first + (count - last)) is element k, or last + (k - first).
__device__ __forceinline__ long long gp_around(long long k, long long first, long long last) {
    return k < first ? k : last + (k - first);
}

// e / divisor and its remainder, with a 32-bit division where e allows (a 64-bit one costs several
// times more on a GPU); byte offsets of images over 4 GB take the 64-bit one.
__device__ __forceinline__ long long gp_divmod(long long e, int divisor, int* remainder) {
    long long q;
    if ((unsigned long long)e <= 0xFFFFFFFFull)
        q = (long long)((unsigned int)e / (unsigned int)divisor);
    else
        q = e / divisor;
    *remainder = (int)(e - q * divisor);
    return q;
}

// Loop over the channels c < n of a pixel (n <= 4) with a constant trip count: unrolled, a
// per-channel array (float sum[4]) stays in registers instead of spilling to local memory.
#ifdef __CUDACC__
#define GP_UNROLL _Pragma("unroll")
#else
#define GP_UNROLL
#endif
#define GP_FOR_CHANNELS(c, n) GP_UNROLL for (int c = 0; c < 4; ++c) if (c < (n))

// 16 bytes as one 128-bit access (uint4: CUDA's, or the CPU shim's) or byte by byte.
union GpVec16 {
    uint4 v;
    unsigned int w[4];
    unsigned char b[16];
};

__device__ __forceinline__ int gp_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int gp_max(int a, int b) { return a > b ? a : b; }

// Reflect-101 border (dcb|abcd|cba), any distance: kernels larger than the image
// reflect repeatedly; a 1-pixel axis repeats its pixel. Same as OpenCV's
// borderInterpolate(BORDER_REFLECT_101).
__device__ __forceinline__ int reflect101(int p, int len) {
    if ((unsigned int)p < (unsigned int)len) return p;   // inside: every tap but the border's
    if (len == 1) return 0;
    const int period = 2 * (len - 1);
    p %= period;
    if (p < 0) p += period;
    return p < len ? p : period - p;
}

// float32 -> uint8: clamp to [0, 255], then round half to even (np.clip(np.rint(x), 0, 255)).
// Clamping first is equivalent (the bounds are integers) and keeps the int conversion defined;
// NaN becomes 0.
__device__ __forceinline__ unsigned char store_u8(float v) {
    v = fminf(fmaxf(v, 0.0f), 255.0f);
    return (unsigned char)__float2int_rn(v);
}

// Images with alpha (LA, RGBA) carry it in the last channel.
__device__ __forceinline__ bool has_alpha(int channels) { return channels == 2 || channels == 4; }

// Pillow's integer (un)premultiply (Imaging RGBA<->RGBa), see resample.premultiply_u8 / unpremultiply_u8.
__device__ __forceinline__ int muldiv255(int c, int a) {
    const unsigned int t = (unsigned int)(c * a + 128);
    return (int)(((t >> 8) + t) >> 8);
}
__device__ __forceinline__ int unpremultiply_pillow(int c, int a) {
    if (a == 0 || a == 255) return c;
    const int v = 255 * c / a;
    return v < 255 ? v : 255;
}
