// gpupipe.cuh — shared definitions for every kernel in kernels/*.cu.
//
// The batched contract (docs/design.md §5): a batch is ONE packed buffer holding
// HWC images back to back, plus one ImageDesc per image. Images of different
// sizes and channel counts share one launch. A batch holds images of one depth
// (gpupipe/pixels.py): uint8 (the kernels named gp_x) or uint16 (gp_x_u16, the same
// template instantiated for unsigned short; see GpDepth). Kernels that only move
// bytes (geometry.cu, transpose.cu) serve both: the host describes a 16-bit image to
// them as bytes, a pixel of c channels being 2c bytes.
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
// even and clamp to the depth's range (gp_store<T>; store_u8 for uint8).
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
// The same over the bytes of a pixel (n <= 8) in the kernels that move bytes (geometry.cu).
#define GP_FOR_BYTES(b, n) GP_UNROLL for (int b = 0; b < 8; ++b) if (b < (n))

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

// The depths of the pixel contract (gpupipe/pixels.py): the largest value, the factor that scales
// a value given on the 0-255 scale (pixels.value_scale), and an integer type that holds a
// resampling pass's fixed-point sum (resample.cu: int for 8 bits as in Pillow, 64 bits for 16).
template <typename T> struct GpDepth;
template <> struct GpDepth<unsigned char> {
    static constexpr int max = 255;
    static constexpr float top = 255.0f;
    static constexpr float scale = 1.0f;
    typedef int Sum;
};
template <> struct GpDepth<unsigned short> {
    static constexpr int max = 65535;
    static constexpr float top = 65535.0f;
    static constexpr float scale = 257.0f;
    typedef long long Sum;
};

// float32 -> T: clamp to [0, max], then round half to even (np.clip(np.rint(x), 0, max)).
// Clamping first is equivalent (the bounds are integers) and keeps the int conversion defined;
// NaN becomes 0.
template <typename T>
__device__ __forceinline__ T gp_store(float v) {
    v = fminf(fmaxf(v, 0.0f), GpDepth<T>::top);
    return (T)__float2int_rn(v);
}
__device__ __forceinline__ unsigned char store_u8(float v) { return gp_store<unsigned char>(v); }

// Images with alpha (LA, RGBA) carry it in the last channel.
__device__ __forceinline__ bool has_alpha(int channels) { return channels == 2 || channels == 4; }

// Pillow's integer (un)premultiply (Imaging RGBA<->RGBa) at either depth, see resample.premultiply /
// unpremultiply: round(c * a / max) (Pillow's MULDIV255 at 8 bits), and min(max, max * c / a) kept
// for alpha 0 or max.
template <typename T> __device__ __forceinline__ int gp_premultiply(int c, int a);
template <> __device__ __forceinline__ int gp_premultiply<unsigned char>(int c, int a) {
    const unsigned int t = (unsigned int)(c * a + 128);
    return (int)(((t >> 8) + t) >> 8);
}
template <> __device__ __forceinline__ int gp_premultiply<unsigned short>(int c, int a) {
    return (int)(((unsigned long long)c * (unsigned long long)a + 32767ull) / 65535ull);
}
template <typename T>
__device__ __forceinline__ int gp_unpremultiply(int c, int a) {
    const int top = GpDepth<T>::max;
    if (a == 0 || a == top) return c;
    const long long v = (long long)top * c / a;
    return v < top ? (int)v : top;
}
