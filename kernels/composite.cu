// composite.cu — watermark blend, one thread per pixel under the mark (contract: gpupipe/backends/numpy/composite.py).
//
// In float32 on straight colour, a = mark_alpha * opacity / 255 (rounded in that order):
//     colour = base * (1 - a) + mark * a        (L / LA bases: mark = luma of its RGB)
//     alpha  = base_alpha + a * (max - base_alpha)
// Marks are RGBA uint8 at either depth; on a 16-bit base (gp_watermark_u16) their colour is scaled
// by 257 before the luma and the blend, and max is 65535.
// Outside the mark a = 0 and the blend is the identity, exactly: those pixels are copied.
//
// Descriptor: width, height, channels of the base (out_* equal); aux_offset: element offset of
// this image's RGBA mark in `marks` (images sharing a mark may share it); param[0], param[1]:
// the mark's width w and height h; param[2]: 1 for position "tile", else 0; param[3]: margin m.
// Not tiled: the mark's top-left corner is at (x, y) (composite.placements; may lie partly
// outside). Tiled: copies at (m + i (w + m), m + j (h + m)), as composite.watermark's layer.
//
// `dst` holds a copy of `src` when the kernel starts (the host copies the batch first, at the
// copy engine's speed): the kernel walks only the mark's rectangle, clipped to the image (every
// pixel when tiled), and writes only where the mark shows (a > 0; elsewhere the copy is the
// blend's exact result). A per-pixel pass over the whole image reached 23 % of an H100's
// bandwidth for a small text mark.
#include "gpupipe.cuh"

template <typename T>
__device__ __forceinline__ void gp_blend_mark(const T* __restrict__ src, T* __restrict__ dst,
                                              const ImageDesc* __restrict__ descs, int n_images,
                                              const unsigned char* __restrict__ marks, float opacity) {
    const float scale = GpDepth<T>::scale, top = GpDepth<T>::top;
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const int mw = d.param[0], mh = d.param[1], tile = d.param[2], m = d.param[3];
        const int colour = d.channels - (has_alpha(d.channels) ? 1 : 0);
        const int x0 = tile ? 0 : gp_max(d.x, 0), y0 = tile ? 0 : gp_max(d.y, 0);
        const int x1 = tile ? d.width : gp_min(d.x + mw, d.width), y1 = tile ? d.height : gp_min(d.y + mh, d.height);
        if (x1 <= x0 || y1 <= y0)
            continue;                                    // the mark lies outside this image
        const long long count = (long long)(x1 - x0) * (y1 - y0);
        GP_FOR_EACH_PIXEL(p, count) {
            int y, x;
            gp_xy(p, x1 - x0, &x, &y);
            x += x0;
            y += y0;
            int u, v;
            if (tile) {
                u = x - m < 0 ? -1 : (x - m) % (mw + m);
                v = y - m < 0 ? -1 : (y - m) % (mh + m);
            } else {
                u = x - d.x;
                v = y - d.y;
            }
            if (u < 0 || v < 0 || u >= mw || v >= mh)    // between tiled copies: the copy stands
                continue;
            const unsigned char* mk = marks + d.aux_offset + ((long long)v * mw + u) * 4;
            const float a = __fmul_rn((float)mk[3], opacity) / 255.0f;
            if (a == 0.0f)                               // a transparent mark pixel: the identity
                continue;
            const long long at = (long long)y * d.width + x;
            const T* s = src + d.in_offset + at * d.channels;
            T* o = dst + d.out_offset + at * d.channels;
            const float keep = __fadd_rn(1.0f, -a);
            float m[3];
            for (int c = 0; c < 3; ++c) m[c] = __fmul_rn((float)mk[c], scale);   // exact at 8 bits (x 1)
            if (colour == 1) {
                float l = __fmul_rn(m[0], 0.299f);
                l = __fadd_rn(l, __fmul_rn(m[1], 0.587f));
                l = __fadd_rn(l, __fmul_rn(m[2], 0.114f));
                o[0] = gp_store<T>(__fadd_rn(__fmul_rn((float)s[0], keep), __fmul_rn(l, a)));
            } else {
                for (int c = 0; c < 3; ++c)
                    o[c] = gp_store<T>(__fadd_rn(__fmul_rn((float)s[c], keep), __fmul_rn(m[c], a)));
            }
            if (colour != d.channels) {
                const float ab = (float)s[colour];
                o[colour] = gp_store<T>(__fadd_rn(ab, __fmul_rn(a, __fadd_rn(top, -ab))));
            }
        }
    }
}

extern "C" __global__ void gp_watermark(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                        const ImageDesc* __restrict__ descs, int n_images,
                                        const unsigned char* __restrict__ marks, float opacity) {
    gp_blend_mark(src, dst, descs, n_images, marks, opacity);
}

extern "C" __global__ void gp_watermark_u16(const unsigned short* __restrict__ src, unsigned short* __restrict__ dst,
                                            const ImageDesc* __restrict__ descs, int n_images,
                                            const unsigned char* __restrict__ marks, float opacity) {
    gp_blend_mark(src, dst, descs, n_images, marks, opacity);
}
