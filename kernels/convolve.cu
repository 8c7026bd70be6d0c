// convolve.cu — spatial filters (contract: gpupipe/backends/numpy/filters.py), one thread per pixel.
//
// Correlation (kernel not flipped), reflect-101 borders at any distance, float32 sums
// (taps in order), stores by store_u8. The alpha rule of filters.py's docstring:
//
//   * L / RGB, and LA / RGBA whose alpha is 255 everywhere ("opaque", see gp_translucent):
//     colour channels filtered as they are, alpha kept (255); res / divisor + offset.
//   * LA / RGBA with some alpha < 255 ("translucent"): colour premultiplied as c * a (exact
//     in float32); smoothing filters (smooth = 1: box, gaussian) filter alpha too and use the
//     filtered float alpha, the others keep the original alpha. Then
//         colour = store_u8(alpha) > 0 ? sum / (alpha * divisor) + offset : 0
//     and the stored alpha is store_u8(filtered alpha) (smooth) or the original (not smooth).
//
// Launch order for one op on a batch:
//   gp_translucent (flags zeroed by the host) -> separable: gp_sep_rows then gp_sep_cols,
//                                                2-D: gp_correlate.
// The float32 intermediate `tmp` has the input's layout: element offsets = in_offset.
#include "gpupipe.cuh"

// flags[i] = 1 when image i has alpha and some alpha < 255 (host sets flags to 0 first).
extern "C" __global__ void gp_translucent(const unsigned char* __restrict__ src, const ImageDesc* __restrict__ descs,
                                          int n_images, int* __restrict__ flags) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        if (!has_alpha(d.channels)) continue;
        const long long count = (long long)d.width * d.height;
        GP_FOR_EACH_PIXEL(p, count) {
            if (src[d.in_offset + p * d.channels + d.channels - 1] != 255) flags[i] = 1;  // same value from all writers
        }
    }
}

// Value channel c of a pixel enters the filter as: c * alpha for colour of translucent images, else c.
__device__ __forceinline__ float gp_tap_value(const unsigned char* px, int c, int channels, bool premul) {
    const float v = (float)px[c];
    return (premul && c != channels - 1) ? __fmul_rn(v, (float)px[channels - 1]) : v;
}

// Horizontal pass: tmp[y, x, c] = sum_j kx[j] * value(y, reflect(x + j - rx), c), j = 0 .. 2 rx.
// The alpha channel of translucent images is filtered only when smooth (the column pass
// reads the original alpha otherwise).
extern "C" __global__ void gp_sep_rows(const unsigned char* __restrict__ src, float* __restrict__ tmp,
                                       const ImageDesc* __restrict__ descs, int n_images,
                                       const float* __restrict__ kx, int rx,
                                       const int* __restrict__ translucent, int smooth) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const bool alpha = has_alpha(d.channels);
        const bool premul = alpha && translucent[i];
        const int filtered = (alpha && !(premul && smooth)) ? d.channels - 1 : d.channels;
        const long long count = (long long)d.width * d.height;
        const unsigned char* img = src + d.in_offset;
        GP_FOR_EACH_PIXEL(p, count) {
            const int y = (int)(p / d.width), x = (int)(p % d.width);
            const unsigned char* row = img + (long long)y * d.width * d.channels;
            for (int c = 0; c < filtered; ++c) {
                float sum = 0.0f;
                for (int j = 0; j <= 2 * rx; ++j) {
                    const int sx = reflect101(x + j - rx, d.width);
                    sum = __fadd_rn(sum, __fmul_rn(kx[j], gp_tap_value(row + (long long)sx * d.channels, c, d.channels, premul)));
                }
                tmp[d.in_offset + p * d.channels + c] = sum;
            }
        }
    }
}

// Final store of one pixel, given its filtered values v[0 .. channels-1] (alpha filtered
// only if smooth && premul) and the source pixel s.
__device__ __forceinline__ void gp_store_pixel(const float* v, const unsigned char* s, unsigned char* o,
                                               int channels, bool premul, bool smooth,
                                               float divisor, float offset) {
    const bool alpha = has_alpha(channels);
    const int colour = alpha ? channels - 1 : channels;
    if (!premul) {
        for (int c = 0; c < colour; ++c) o[c] = store_u8(__fadd_rn(v[c] / divisor, offset));
        if (alpha) o[colour] = 255;   // opaque
        return;
    }
    const float a = smooth ? v[colour] : (float)s[colour];
    const unsigned char a8 = smooth ? store_u8(a) : s[colour];
    const float scale = __fmul_rn(a, divisor);
    for (int c = 0; c < colour; ++c) o[c] = a8 > 0 ? store_u8(__fadd_rn(v[c] / scale, offset)) : 0;
    o[colour] = a8;
}

// Vertical pass and store: v[c] = sum_j ky[j] * tmp[reflect(y + j - ry), x, c].
// mode 0: store v / divisor + offset (alpha rule above).
// mode 1 (unsharp, never smooth): with the pixel's own value x (premultiplied as above) and
//        d = x - v: store (|d| > threshold ? x + amount * d : x).
extern "C" __global__ void gp_sep_cols(const unsigned char* __restrict__ src, const float* __restrict__ tmp,
                                       unsigned char* __restrict__ dst, const ImageDesc* __restrict__ descs,
                                       int n_images, const float* __restrict__ ky, int ry,
                                       const int* __restrict__ translucent, int smooth,
                                       float divisor, float offset, int mode, float amount, float threshold) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const bool alpha = has_alpha(d.channels);
        const bool premul = alpha && translucent[i];
        const int filtered = (alpha && !(premul && smooth)) ? d.channels - 1 : d.channels;
        const long long count = (long long)d.width * d.height;
        GP_FOR_EACH_PIXEL(p, count) {
            const int y = (int)(p / d.width), x = (int)(p % d.width);
            const unsigned char* s = src + d.in_offset + p * d.channels;
            float v[4];
            for (int c = 0; c < filtered; ++c) {
                float sum = 0.0f;
                for (int j = 0; j <= 2 * ry; ++j) {
                    const int sy = reflect101(y + j - ry, d.height);
                    sum = __fadd_rn(sum, __fmul_rn(ky[j], tmp[d.in_offset + ((long long)sy * d.width + x) * d.channels + c]));
                }
                if (mode == 1) {
                    const float xv = gp_tap_value(s, c, d.channels, premul);
                    const float diff = __fadd_rn(xv, -sum);
                    sum = fabsf(diff) > threshold ? __fadd_rn(xv, __fmul_rn(amount, diff)) : xv;
                }
                v[c] = sum;
            }
            gp_store_pixel(v, s, dst + d.out_offset + p * d.channels, d.channels, premul, smooth != 0,
                           divisor, offset);
        }
    }
}

// Direct 2-D correlation with an n x n kernel k (n = 2 r + 1, row-major, k[dy][dx]); never smooth.
// magnitude != 0: a second kernel follows at k + n * n and the value is sqrt(g1 * g1 + g2 * g2)
// (edges: sobel).
extern "C" __global__ void gp_correlate(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                        const ImageDesc* __restrict__ descs, int n_images,
                                        const float* __restrict__ k, int r, const int* __restrict__ translucent,
                                        float divisor, float offset, int magnitude) {
    const int n = 2 * r + 1;
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const bool alpha = has_alpha(d.channels);
        const bool premul = alpha && translucent[i];
        const int colour = alpha ? d.channels - 1 : d.channels;
        const long long count = (long long)d.width * d.height;
        const unsigned char* img = src + d.in_offset;
        GP_FOR_EACH_PIXEL(p, count) {
            const int y = (int)(p / d.width), x = (int)(p % d.width);
            float v[4];
            for (int c = 0; c < colour; ++c) {
                float g1 = 0.0f, g2 = 0.0f;
                for (int dy = 0; dy < n; ++dy) {
                    const unsigned char* row = img + (long long)reflect101(y + dy - r, d.height) * d.width * d.channels;
                    for (int dx = 0; dx < n; ++dx) {
                        const float t = gp_tap_value(row + (long long)reflect101(x + dx - r, d.width) * d.channels,
                                                     c, d.channels, premul);
                        g1 = __fadd_rn(g1, __fmul_rn(k[dy * n + dx], t));
                        if (magnitude) g2 = __fadd_rn(g2, __fmul_rn(k[n * n + dy * n + dx], t));
                    }
                }
                v[c] = magnitude ? sqrtf(__fadd_rn(__fmul_rn(g1, g1), __fmul_rn(g2, g2))) : g1;
            }
            gp_store_pixel(v, img + p * d.channels, dst + d.out_offset + p * d.channels, d.channels, premul,
                           false, divisor, offset);
        }
    }
}
