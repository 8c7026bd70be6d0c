// resample.cu — Pillow 13's fixed-point resize, bit-exactly (contract: gpupipe/backends/numpy/resample.py,
// resize_reference). One thread per output pixel of one pass.
//
// The host computes each axis' integer tables with resample.resample_coefficients() and the pass
// order with resample.vertical_first(), uploads the tables into one int32 buffer and runs two
// launches of gp_resample_pass over the batch (source -> intermediate at the image's depth -> result).
// Images needing one pass (or none) take a copy as the other pass, so one launch serves every image.
// gp_resample_pass_u16 is the same for 16-bit batches, its sums in 64 bits.
//
// Descriptor of one image for one pass:
//   width, height, channels   the pass's source (the image, or the intermediate)
//   out_width, out_height     the pass's result (channels unchanged)
//   aux_offset                offset in `tables` of: start[n], length[n], coeffs[n * ksize]
//                             (n = out_width for a horizontal pass, out_height for a vertical one)
//   param[0]                  0 horizontal, 1 vertical, 2 copy
//   param[1]                  ksize (coefficient row stride)
//   param[2]                  offset of the pass along the other axis: a horizontal pass reads
//                             source rows y + param[2], a vertical one source columns x + param[2]
//                             (Pillow resamples only the rows / columns the next pass reads)
//   param[3]                  bit 0: premultiply on read (Pillow's RGBA->RGBa, integer);
//                             bit 1: unpremultiply on store (RGBa->RGBA)
// Each output value: clip((2^21 + sum_j px[start + j] * coeff[j]) >> 22, 0, max), in int32 as in
// Resample.c for 8 bits (long long for 16).
#include "gpupipe.cuh"

#define GP_PRECISION_BITS 22

// Channel c of a source pixel, premultiplied if asked (alpha is the last channel).
template <typename T>
__device__ __forceinline__ int gp_resample_tap(const T* px, int c, int channels, bool premul) {
    const int v = px[c];
    return (premul && c != channels - 1) ? gp_premultiply<T>(v, px[channels - 1]) : v;
}

template <typename T>
__device__ __forceinline__ void gp_resample(const T* __restrict__ src, T* __restrict__ dst,
                                            const ImageDesc* __restrict__ descs, int n_images,
                                            const int* __restrict__ tables) {
    typedef typename GpDepth<T>::Sum Sum;
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const int direction = d.param[0], ksize = d.param[1], shift = d.param[2];
        const bool premul = has_alpha(d.channels) && (d.param[3] & 1);
        const bool unpremul = has_alpha(d.channels) && (d.param[3] & 2);
        const long long count = (long long)d.out_width * d.out_height;
        const T* img = src + d.in_offset;
        GP_FOR_EACH_PIXEL(p, count) {
            int oy, ox;
            gp_xy(p, d.out_width, &ox, &oy);
            T* o = dst + d.out_offset + p * d.channels;
            if (direction == 2) {
                const T* s = img + ((long long)oy * d.width + ox) * d.channels;
                for (int c = 0; c < d.channels; ++c) o[c] = s[c];
                continue;
            }
            const bool vertical = direction == 1;
            const int n = vertical ? d.out_height : d.out_width;
            const int k = vertical ? oy : ox;                    // which table row
            const int start = tables[d.aux_offset + k];
            const int length = tables[d.aux_offset + n + k];
            const int* coeffs = tables + d.aux_offset + 2 * (long long)n + (long long)k * ksize;
            // source pixel of tap 0 and the step between taps, in pixels
            const long long first = vertical ? (long long)start * d.width + (ox + shift)
                                             : (long long)(oy + shift) * d.width + start;
            const long long step = vertical ? d.width : 1;
            // Taps outer, channels inner (integer sums: the order cannot change them).
            Sum v[4] = {(Sum)1 << (GP_PRECISION_BITS - 1), (Sum)1 << (GP_PRECISION_BITS - 1),
                        (Sum)1 << (GP_PRECISION_BITS - 1), (Sum)1 << (GP_PRECISION_BITS - 1)};
            for (int j = 0; j < length; ++j) {
                const T* px = img + (first + j * step) * d.channels;
                const int k = coeffs[j];
                GP_FOR_CHANNELS(c, d.channels) v[c] += (Sum)gp_resample_tap(px, c, d.channels, premul) * k;
            }
            int w[4];
            GP_FOR_CHANNELS(c, d.channels) {
                const Sum acc = v[c] >> GP_PRECISION_BITS;
                w[c] = acc < 0 ? 0 : (acc > GpDepth<T>::max ? GpDepth<T>::max : (int)acc);
            }
            GP_FOR_CHANNELS(c, d.channels)
                o[c] = (T)((unpremul && c != d.channels - 1) ? gp_unpremultiply<T>(w[c], w[d.channels - 1]) : w[c]);
        }
    }
}

extern "C" __global__ void gp_resample_pass(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                            const ImageDesc* __restrict__ descs, int n_images,
                                            const int* __restrict__ tables) {
    gp_resample(src, dst, descs, n_images, tables);
}

extern "C" __global__ void gp_resample_pass_u16(const unsigned short* __restrict__ src,
                                                unsigned short* __restrict__ dst,
                                                const ImageDesc* __restrict__ descs, int n_images,
                                                const int* __restrict__ tables) {
    gp_resample(src, dst, descs, n_images, tables);
}
