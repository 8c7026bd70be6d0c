// convolve_tiled.cu — the horizontal pass of the separable filters through shared memory
// (contract: gpupipe/backends/numpy/filters.py; the twin of convolve.cu's gp_sep_rows, bit-identical).
//
// gp_sep_rows reads every tap from global memory: per tap a reflect-101 test, one byte load per
// channel, a conversion and, for translucent images, the premultiplication. Here a block takes a
// segment of GP_ROW_SEGMENT output pixels of one row: its threads convert the segment and its borders
// (reflected) into float values in shared memory once, meet at __syncthreads, and each output then
// sums its taps from there, one shared load, a multiply and an add per tap and channel. The taps are
// walked in order, so every output sums exactly as gp_sep_rows does.
//
// Shared memory holds the values planar (one array per channel), so a warp's 32 threads, taking
// 32 adjacent outputs, read 32 adjacent words: no bank conflicts at any channel count. Radii up to
// GP_ROW_APRON fit (gaussian sigma up to 21); the host takes gp_sep_rows above that.
//
// Launch: any grid and block (the loops stride over images, segments and the segment's pixels);
// the backend gives each block one segment (256 threads x GP_PIXELS_PER_THREAD = 1024 =
// GP_ROW_SEGMENT). Every thread of a block runs the same number of segment rounds, so each
// __syncthreads is reached by all of them (the CPU shim aborts on a barrier some threads skip).
#include "gpupipe.cuh"
#include "filters.cuh"

#define GP_ROW_SEGMENT 1024
#define GP_ROW_APRON 64

#define GP_WINDOW (GP_ROW_SEGMENT + 2 * GP_ROW_APRON)

// The segment's outputs from the window, for C filtered channels: a constant C leaves the tap loop
// one shared load of the tap and C of (shared load, multiply, add), without a test per channel.
template <int C>
__device__ __forceinline__ void gp_row_outputs(const float (*window)[GP_WINDOW], const float* taps, int rx, int count,
                                               float* out, int channels) {
    for (int k = threadIdx.x; k < count; k += blockDim.x) {
        float sum[C];
        GP_UNROLL for (int c = 0; c < C; ++c) sum[c] = 0.0f;
        for (int j = 0; j <= 2 * rx; ++j) {
            const float kj = taps[j];
            GP_UNROLL for (int c = 0; c < C; ++c) sum[c] = __fadd_rn(sum[c], __fmul_rn(kj, window[c][k + j]));
        }
        GP_UNROLL for (int c = 0; c < C; ++c) out[k * channels + c] = sum[c];
    }
}

// tmp[y, x, c] = sum_j kx[j] * value(y, reflect(x + j - rx), c), j = 0 .. 2 rx (rx <= GP_ROW_APRON);
// the channels filtered as in gp_sep_rows (alpha of translucent images only when smooth).
// The shared arrays are the kernels' (one static set per kernel), passed in: a template function
// of both depths must not own two sets.
template <typename T>
__device__ __forceinline__ void gp_rows_tiled(const T* __restrict__ src, float* __restrict__ tmp,
                                              const ImageDesc* __restrict__ descs, int n_images,
                                              const float* __restrict__ kx, int rx,
                                              const int* __restrict__ translucent, int smooth,
                                              float (*window)[GP_WINDOW], float* taps) {
    for (int j = threadIdx.x; j <= 2 * rx; j += blockDim.x) taps[j] = kx[j];   // read after the first barrier
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const bool premul = has_alpha(d.channels) && translucent[i];
        const int filtered = gp_filtered_channels(d.channels, premul, smooth != 0);
        const int segments_x = (d.width + GP_ROW_SEGMENT - 1) / GP_ROW_SEGMENT;
        const long long segments = (long long)segments_x * d.height;
        for (long long s = blockIdx.x; s < segments; s += gridDim.x) {
            int segment, y;
            gp_xy(s, segments_x, &segment, &y);
            const int x0 = segment * GP_ROW_SEGMENT;
            const int count = gp_min(GP_ROW_SEGMENT, d.width - x0);
            const T* row = src + d.in_offset + (long long)y * d.width * d.channels;
            // window[c][k] = value of input column x0 - rx + k, borders reflected
            for (int k = threadIdx.x; k < count + 2 * rx; k += blockDim.x) {
                const T* px = row + reflect101(x0 - rx + k, d.width) * d.channels;
                GP_FOR_CHANNELS(c, filtered) window[c][k] = gp_tap_value(px, c, d.channels, premul);
            }
            __syncthreads();
            float* out = tmp + d.in_offset + ((long long)y * d.width + x0) * d.channels;
            switch (filtered) {
                case 1: gp_row_outputs<1>(window, taps, rx, count, out, d.channels); break;
                case 2: gp_row_outputs<2>(window, taps, rx, count, out, d.channels); break;
                case 3: gp_row_outputs<3>(window, taps, rx, count, out, d.channels); break;
                default: gp_row_outputs<4>(window, taps, rx, count, out, d.channels); break;
            }
            __syncthreads();                  // every read of the window is done before the next round fills it
        }
    }
}

extern "C" __global__ void gp_sep_rows_tiled(const unsigned char* __restrict__ src, float* __restrict__ tmp,
                                             const ImageDesc* __restrict__ descs, int n_images,
                                             const float* __restrict__ kx, int rx,
                                             const int* __restrict__ translucent, int smooth) {
    __shared__ float window[4][GP_WINDOW];
    __shared__ float taps[2 * GP_ROW_APRON + 1];
    gp_rows_tiled(src, tmp, descs, n_images, kx, rx, translucent, smooth, window, taps);
}

extern "C" __global__ void gp_sep_rows_tiled_u16(const unsigned short* __restrict__ src, float* __restrict__ tmp,
                                                 const ImageDesc* __restrict__ descs, int n_images,
                                                 const float* __restrict__ kx, int rx,
                                                 const int* __restrict__ translucent, int smooth) {
    __shared__ float window[4][GP_WINDOW];
    __shared__ float taps[2 * GP_ROW_APRON + 1];
    gp_rows_tiled(src, tmp, descs, n_images, kx, rx, translucent, smooth, window, taps);
}
