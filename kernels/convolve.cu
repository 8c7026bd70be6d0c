// convolve.cu — spatial filters (contract: gpupipe/backends/numpy/filters.py), one thread per pixel.
//
// Correlation (kernel not flipped), reflect-101 borders at any distance, float32 sums
// (taps in order), stores by gp_store at the batch's depth (each kernel has a _u16 twin, the same
// template for 16-bit batches; an offset or threshold arrives already scaled to the depth). The separable passes round every product and sum
// (__fmul_rn/__fadd_rn), as OpenCV's row and column filters do: with fused multiply-adds, 1.2 %
// of values differed by one from the NumPy backend for non-integer separable taps. The 2-D
// correlation fuses them (fmaf: correctly rounded on the GPU and in the CPU shim alike; exact
// wherever the contract is, integer taps on integer values staying integers below 2^24). The alpha rule of filters.py's docstring:
//
//   * L / RGB, and LA / RGBA whose alpha is max everywhere ("opaque", see gp_translucent):
//     colour channels filtered as they are, alpha kept (max); res / divisor + offset.
//   * LA / RGBA with some alpha < max ("translucent"): colour premultiplied as c * a (exact
//     in float32 at 8 bits); smoothing filters (smooth = 1: box, gaussian) filter alpha too and use the
//     filtered float alpha, the others keep the original alpha. Then
//         colour = gp_store(alpha) > 0 ? sum / (alpha * divisor) + offset : 0
//     and the stored alpha is gp_store(filtered alpha) (smooth) or the original (not smooth).
//
// Launch order for one op on a batch:
//   gp_translucent (flags zeroed by the host) -> separable: gp_sep_rows then gp_sep_cols,
//                                                2-D: gp_correlate.
// The float32 intermediate `tmp` has the input's layout: element offsets = in_offset. The row pass
// has a twin through shared memory, gp_sep_rows_tiled (convolve_tiled.cu), for radii up to 64.
#include "gpupipe.cuh"
#include "filters.cuh"

// flags[i] = 1 when image i has alpha and some alpha < max (host sets flags to 0 first).
template <typename T>
__device__ __forceinline__ void gp_find_translucent(const T* __restrict__ src, const ImageDesc* __restrict__ descs,
                                                    int n_images, int* __restrict__ flags) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        if (!has_alpha(d.channels)) continue;
        const long long count = (long long)d.width * d.height;
        GP_FOR_EACH_PIXEL(p, count) {
            if (src[d.in_offset + p * d.channels + d.channels - 1] != GpDepth<T>::max) flags[i] = 1;  // same value from all writers
        }
    }
}

// Horizontal pass: tmp[y, x, c] = sum_j kx[j] * value(y, reflect(x + j - rx), c), j = 0 .. 2 rx.
// The alpha channel of translucent images is filtered only when smooth (the column pass
// reads the original alpha otherwise).
//
// A thread item is GP_ROW_PIXELS horizontally adjacent pixels of a row sharing their taps' loads,
// as gp_sep_cols's items share rows (see there): the window is walked left to right, so each
// output sums its taps in order. Items per image: ceil(width / GP_ROW_PIXELS) x height.
#define GP_ROW_PIXELS 4

template <typename T>
__device__ __forceinline__ void gp_rows(const T* __restrict__ src, float* __restrict__ tmp,
                                        const ImageDesc* __restrict__ descs, int n_images,
                                        const float* __restrict__ kx, int rx,
                                        const int* __restrict__ translucent, int smooth) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const bool premul = has_alpha(d.channels) && translucent[i];
        const int filtered = gp_filtered_channels(d.channels, premul, smooth != 0);
        const int groups = (d.width + GP_ROW_PIXELS - 1) / GP_ROW_PIXELS;
        const long long items = (long long)groups * d.height;
        const T* img = src + d.in_offset;
        GP_FOR_EACH_PIXEL(p, items) {
            int group, y;
            gp_xy(p, groups, &group, &y);
            const int x0 = group * GP_ROW_PIXELS;
            const T* row = img + (long long)y * d.width * d.channels;
            float sum[GP_ROW_PIXELS][4];
            GP_UNROLL for (int k = 0; k < GP_ROW_PIXELS; ++k)
                GP_UNROLL for (int c = 0; c < 4; ++c) sum[k][c] = 0.0f;
            for (int r = 0; r < 2 * rx + GP_ROW_PIXELS; ++r) {
                const T* px = row + reflect101(x0 + r - rx, d.width) * d.channels;
                float value[4];
                GP_FOR_CHANNELS(c, filtered) value[c] = gp_tap_value(px, c, d.channels, premul);
                GP_UNROLL for (int k = 0; k < GP_ROW_PIXELS; ++k) {
                    const int j = r - k;                    // the tap this pixel is for output x0 + k
                    if (j < 0 || j > 2 * rx) continue;
                    const float kj = kx[j];
                    GP_FOR_CHANNELS(c, filtered) sum[k][c] = __fadd_rn(sum[k][c], __fmul_rn(kj, value[c]));
                }
            }
            float* t = tmp + d.in_offset + ((long long)y * d.width + x0) * d.channels;
            GP_UNROLL for (int k = 0; k < GP_ROW_PIXELS; ++k) {
                if (x0 + k >= d.width) break;
                GP_FOR_CHANNELS(c, filtered) t[k * d.channels + c] = sum[k][c];
            }
        }
    }
}

// Final store of one pixel, given its filtered values v[0 .. channels-1] (alpha filtered
// only if smooth && premul) and the source pixel s.
template <typename T>
__device__ __forceinline__ void gp_store_pixel(const float* v, const T* s, T* o,
                                               int channels, bool premul, bool smooth,
                                               float divisor, float offset) {
    const bool alpha = has_alpha(channels);
    const int colour = alpha ? channels - 1 : channels;
    if (!premul) {
        GP_FOR_CHANNELS(c, colour) o[c] = gp_store<T>(__fadd_rn(v[c] / divisor, offset));
        if (alpha) o[colour] = (T)GpDepth<T>::max;   // opaque
        return;
    }
    // v[colour] with constant indices only: a runtime index would keep v in local memory.
    const float filtered_alpha = colour == 1 ? v[1] : v[3];
    const float a = smooth ? filtered_alpha : (float)s[colour];
    const T stored_alpha = smooth ? gp_store<T>(a) : s[colour];
    const float scale = __fmul_rn(a, divisor);
    GP_FOR_CHANNELS(c, colour) o[c] = stored_alpha > 0 ? gp_store<T>(__fadd_rn(v[c] / scale, offset)) : (T)0;
    o[colour] = stored_alpha;
}

// Vertical pass and store: v[c] = sum_j ky[j] * tmp[reflect(y + j - ry), x, c].
// mode 0: store v / divisor + offset (alpha rule above).
// mode 1 (unsharp, never smooth): with the pixel's own value x (premultiplied as above) and
//        d = x - v: store (|d| > threshold ? x + amount * d : x).
// mode 2: mode 1 with v stored first (rounded half to even) where the image is not premultiplied:
//        the blur of 8-bit pixels by taps of whole 256ths is its 8-bit result (filters.py).
//
// A thread item is GP_COLUMN_ROWS vertically adjacent pixels of one column: they share their taps'
// rows, so each row of tmp is loaded once for all of them (2 ry + GP_COLUMN_ROWS loads instead of
// GP_COLUMN_ROWS (2 ry + 1)). The rows are walked top-down and row y0 + i - ry adds tap i - k to
// output k, so each output still sums its taps in order: results are bit-identical. Items are
// counted per image as width x ceil(height / GP_COLUMN_ROWS) (the host sizes the grid so).
#define GP_COLUMN_ROWS 4

template <typename T>
__device__ __forceinline__ void gp_cols(const T* __restrict__ src, const float* __restrict__ tmp,
                                        T* __restrict__ dst, const ImageDesc* __restrict__ descs,
                                        int n_images, const float* __restrict__ ky, int ry,
                                        const int* __restrict__ translucent, int smooth,
                                        float divisor, float offset, int mode, float amount, float threshold) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const bool premul = has_alpha(d.channels) && translucent[i];
        const int filtered = gp_filtered_channels(d.channels, premul, smooth != 0);
        const long long row_floats = (long long)d.width * d.channels;
        const long long items = (long long)d.width * ((d.height + GP_COLUMN_ROWS - 1) / GP_COLUMN_ROWS);
        GP_FOR_EACH_PIXEL(p, items) {
            int x, group;
            gp_xy(p, d.width, &x, &group);
            const int y0 = group * GP_COLUMN_ROWS;
            const float* column = tmp + d.in_offset + (long long)x * d.channels;
            float v[GP_COLUMN_ROWS][4];
            GP_UNROLL for (int k = 0; k < GP_COLUMN_ROWS; ++k)
                GP_UNROLL for (int c = 0; c < 4; ++c) v[k][c] = 0.0f;
            for (int r = 0; r < 2 * ry + GP_COLUMN_ROWS; ++r) {
                const float* t = column + reflect101(y0 + r - ry, d.height) * row_floats;
                float value[4];
                GP_FOR_CHANNELS(c, filtered) value[c] = t[c];
                GP_UNROLL for (int k = 0; k < GP_COLUMN_ROWS; ++k) {
                    const int j = r - k;                    // the tap this row is for output y0 + k
                    if (j < 0 || j > 2 * ry) continue;
                    const float kj = ky[j];
                    GP_FOR_CHANNELS(c, filtered) v[k][c] = __fadd_rn(v[k][c], __fmul_rn(kj, value[c]));
                }
            }
            GP_UNROLL for (int k = 0; k < GP_COLUMN_ROWS; ++k) {
                if (y0 + k >= d.height) break;
                const long long at = (long long)(y0 + k) * d.width + x;
                const T* s = src + d.in_offset + at * d.channels;
                if (mode != 0) {
                    GP_FOR_CHANNELS(c, filtered) {
                        const float xv = gp_tap_value(s, c, d.channels, premul);
                        const float blur = mode == 2 && !premul ? (float)gp_store<T>(v[k][c]) : v[k][c];
                        const float diff = __fadd_rn(xv, -blur);
                        v[k][c] = fabsf(diff) > threshold ? __fadd_rn(xv, __fmul_rn(amount, diff)) : xv;
                    }
                }
                gp_store_pixel(v[k], s, dst + d.out_offset + at * d.channels, d.channels, premul, smooth != 0,
                               divisor, offset);
            }
        }
    }
}

// Direct 2-D correlation with an n x n kernel k (n = 2 r + 1, row-major, k[dy][dx]); never smooth.
// magnitude != 0: a second kernel follows at k + n * n and the value is sqrt(g1 * g1 + g2 * g2)
// (edges: sobel). A thread item is GP_ROW_PIXELS horizontally adjacent pixels sharing their taps'
// loads (as gp_sep_rows); within each kernel row the taps are walked left to right, so each output
// accumulates in the same order as one pixel at a time.
template <typename T>
__device__ __forceinline__ void gp_correlation(const T* __restrict__ src, T* __restrict__ dst,
                                               const ImageDesc* __restrict__ descs, int n_images,
                                               const float* __restrict__ k, int r, const int* __restrict__ translucent,
                                               float divisor, float offset, int magnitude) {
    const int n = 2 * r + 1;
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const bool alpha = has_alpha(d.channels);
        const bool premul = alpha && translucent[i];
        const int colour = alpha ? d.channels - 1 : d.channels;
        const int groups = (d.width + GP_ROW_PIXELS - 1) / GP_ROW_PIXELS;
        const long long items = (long long)groups * d.height;
        const T* img = src + d.in_offset;
        GP_FOR_EACH_PIXEL(p, items) {
            int group, y;
            gp_xy(p, groups, &group, &y);
            const int x0 = group * GP_ROW_PIXELS;
            float g1[GP_ROW_PIXELS][4], g2[GP_ROW_PIXELS][4];
            GP_UNROLL for (int q = 0; q < GP_ROW_PIXELS; ++q)
                GP_UNROLL for (int c = 0; c < 4; ++c) g1[q][c] = g2[q][c] = 0.0f;
            for (int dy = 0; dy < n; ++dy) {
                const T* row = img + (long long)reflect101(y + dy - r, d.height) * d.width * d.channels;
                const float* k1 = k + dy * n;
                for (int t = 0; t < n + GP_ROW_PIXELS - 1; ++t) {
                    const T* px = row + reflect101(x0 + t - r, d.width) * d.channels;
                    float value[4];
                    GP_FOR_CHANNELS(c, colour) value[c] = gp_tap_value(px, c, d.channels, premul);
                    GP_UNROLL for (int q = 0; q < GP_ROW_PIXELS; ++q) {
                        const int dx = t - q;                // the tap this pixel is for output x0 + q
                        if (dx < 0 || dx >= n) continue;
                        GP_FOR_CHANNELS(c, colour) {
                            g1[q][c] = fmaf(k1[dx], value[c], g1[q][c]);
                            if (magnitude) g2[q][c] = fmaf(k1[n * n + dx], value[c], g2[q][c]);
                        }
                    }
                }
            }
            GP_UNROLL for (int q = 0; q < GP_ROW_PIXELS; ++q) {
                if (x0 + q >= d.width) break;
                float v[4];
                GP_FOR_CHANNELS(c, colour)
                    v[c] = magnitude ? sqrtf(__fadd_rn(__fmul_rn(g1[q][c], g1[q][c]), __fmul_rn(g2[q][c], g2[q][c])))
                                     : g1[q][c];
                const long long at = (long long)y * d.width + x0 + q;
                gp_store_pixel(v, img + at * d.channels, dst + d.out_offset + at * d.channels, d.channels, premul,
                               false, divisor, offset);
            }
        }
    }
}

// The kernels, for 8-bit batches and (_u16) 16-bit ones.

extern "C" __global__ void gp_translucent(const unsigned char* __restrict__ src, const ImageDesc* __restrict__ descs,
                                          int n_images, int* __restrict__ flags) {
    gp_find_translucent(src, descs, n_images, flags);
}

extern "C" __global__ void gp_translucent_u16(const unsigned short* __restrict__ src,
                                              const ImageDesc* __restrict__ descs, int n_images,
                                              int* __restrict__ flags) {
    gp_find_translucent(src, descs, n_images, flags);
}

extern "C" __global__ void gp_sep_rows(const unsigned char* __restrict__ src, float* __restrict__ tmp,
                                       const ImageDesc* __restrict__ descs, int n_images,
                                       const float* __restrict__ kx, int rx,
                                       const int* __restrict__ translucent, int smooth) {
    gp_rows(src, tmp, descs, n_images, kx, rx, translucent, smooth);
}

extern "C" __global__ void gp_sep_rows_u16(const unsigned short* __restrict__ src, float* __restrict__ tmp,
                                           const ImageDesc* __restrict__ descs, int n_images,
                                           const float* __restrict__ kx, int rx,
                                           const int* __restrict__ translucent, int smooth) {
    gp_rows(src, tmp, descs, n_images, kx, rx, translucent, smooth);
}

extern "C" __global__ void gp_sep_cols(const unsigned char* __restrict__ src, const float* __restrict__ tmp,
                                       unsigned char* __restrict__ dst, const ImageDesc* __restrict__ descs,
                                       int n_images, const float* __restrict__ ky, int ry,
                                       const int* __restrict__ translucent, int smooth,
                                       float divisor, float offset, int mode, float amount, float threshold) {
    gp_cols(src, tmp, dst, descs, n_images, ky, ry, translucent, smooth, divisor, offset, mode, amount, threshold);
}

extern "C" __global__ void gp_sep_cols_u16(const unsigned short* __restrict__ src, const float* __restrict__ tmp,
                                           unsigned short* __restrict__ dst, const ImageDesc* __restrict__ descs,
                                           int n_images, const float* __restrict__ ky, int ry,
                                           const int* __restrict__ translucent, int smooth,
                                           float divisor, float offset, int mode, float amount, float threshold) {
    gp_cols(src, tmp, dst, descs, n_images, ky, ry, translucent, smooth, divisor, offset, mode, amount, threshold);
}

extern "C" __global__ void gp_correlate(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                        const ImageDesc* __restrict__ descs, int n_images,
                                        const float* __restrict__ k, int r, const int* __restrict__ translucent,
                                        float divisor, float offset, int magnitude) {
    gp_correlation(src, dst, descs, n_images, k, r, translucent, divisor, offset, magnitude);
}

extern "C" __global__ void gp_correlate_u16(const unsigned short* __restrict__ src, unsigned short* __restrict__ dst,
                                            const ImageDesc* __restrict__ descs, int n_images,
                                            const float* __restrict__ k, int r, const int* __restrict__ translucent,
                                            float divisor, float offset, int magnitude) {
    gp_correlation(src, dst, descs, n_images, k, r, translucent, divisor, offset, magnitude);
}
