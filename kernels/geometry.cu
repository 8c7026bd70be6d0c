// geometry.cu — pixel moves, one thread per output pixel (contract: gpupipe/backends/numpy/geometry.py).
//
// Every kernel: (src, dst, descs, n_images, ...) with the launch shape of gpupipe.cuh.
// Output pixel (ox, oy) of an out_width x out_height image copies the channels of
// one input pixel; no arithmetic, so results are exact. channels == out_channels.
#include "gpupipe.cuh"

__device__ __forceinline__ void gp_copy_pixel(const unsigned char* s, unsigned char* o, int channels) {
    for (int c = 0; c < channels; ++c) o[c] = s[c];
}

// rotate clockwise by `degrees` (90, 180, 270). out size: (height, width) for 90/270.
extern "C" __global__ void gp_rotate(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                     const ImageDesc* __restrict__ descs, int n_images, int degrees) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.out_width * d.out_height;
        GP_FOR_EACH_PIXEL(p, count) {
            int oy, ox;
            gp_xy(p, d.out_width, &ox, &oy);
            int sx, sy;
            if (degrees == 90) {          // out[oy, ox] = in[H-1-ox, oy]
                sx = oy; sy = d.height - 1 - ox;
            } else if (degrees == 270) {  // out[oy, ox] = in[ox, W-1-oy]
                sx = d.width - 1 - oy; sy = ox;
            } else {                      // 180
                sx = d.width - 1 - ox; sy = d.height - 1 - oy;
            }
            gp_copy_pixel(src + d.in_offset + ((long long)sy * d.width + sx) * d.channels,
                          dst + d.out_offset + p * d.channels, d.channels);
        }
    }
}

// flip: vertical != 0 mirrors top<->bottom, else left<->right.
extern "C" __global__ void gp_flip(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                   const ImageDesc* __restrict__ descs, int n_images, int vertical) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.width * d.height;
        GP_FOR_EACH_PIXEL(p, count) {
            int oy, ox;
            gp_xy(p, d.width, &ox, &oy);
            const int sx = vertical ? ox : d.width - 1 - ox;
            const int sy = vertical ? d.height - 1 - oy : oy;
            gp_copy_pixel(src + d.in_offset + ((long long)sy * d.width + sx) * d.channels,
                          dst + d.out_offset + p * d.channels, d.channels);
        }
    }
}

// crop (and center_crop): the out_width x out_height rectangle at (desc.x, desc.y) of the input;
// the host checks it lies inside.
//
// Each result row is one contiguous run of the source row, so the kernel walks the result's
// bytes 16 at a time, aligned, and stores each 16 as one 128-bit write (per-pixel byte copies
// reached 38 % of an H100's bandwidth). The 16 source bytes sit at any alignment: where they
// lie in one row, five aligned 32-bit loads and funnel shifts fetch them (only when those
// words stay inside the image: they may reach 3 bytes either side); otherwise, and for the
// bytes before the first aligned vector and after the last, byte by byte.
__device__ __forceinline__ unsigned char gp_crop_byte(const unsigned char* corner, long long row_stride,
                                                      int row_bytes, long long e) {
    int col;
    const long long row = gp_divmod(e, row_bytes, &col);
    return corner[row * row_stride + col];
}

extern "C" __global__ void gp_crop(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                   const ImageDesc* __restrict__ descs, int n_images) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const int row_bytes = d.out_width * d.channels;
        const long long row_stride = (long long)d.width * d.channels;
        const long long n = (long long)row_bytes * d.out_height;
        const unsigned char* image = src + d.in_offset;
        const unsigned char* image_end = image + row_stride * d.height;
        const unsigned char* corner = image + (long long)d.y * row_stride + (long long)d.x * d.channels;
        unsigned char* o = dst + d.out_offset;
        const int head = (int)((16 - ((unsigned long long)o & 15)) & 15);
        const long long first = n >= head + 16 ? head : n;             // vectors cover [first, last)
        const long long count = n >= head + 16 ? (n - head) / 16 : 0;
        const long long last = first + 16 * count;
        GP_FOR_EACH_PIXEL(q, count) {
            const long long e = first + 16 * q;
            int col;
            const long long row = gp_divmod(e, row_bytes, &col);
            const unsigned char* from = corner + row * row_stride + col;
            const int shift = (int)((unsigned long long)from & 3);
            const unsigned char* words = from - shift;
            GpVec16 out;
            if (col + 16 <= row_bytes && words >= image && words + (shift ? 20 : 16) <= image_end) {
                const unsigned int* w = (const unsigned int*)words;
                unsigned int v[5];
                GP_UNROLL for (int k = 0; k < 4; ++k) v[k] = w[k];
                v[4] = shift ? w[4] : 0u;
                GP_UNROLL for (int k = 0; k < 4; ++k) out.w[k] = __funnelshift_r(v[k], v[k + 1], 8 * shift);
            } else {
                GP_UNROLL for (int j = 0; j < 16; ++j) out.b[j] = gp_crop_byte(corner, row_stride, row_bytes, e + j);
            }
            *(uint4*)(o + e) = out.v;
        }
        const long long singles = first + (n - last);                // bytes before and after the vectors
        GP_FOR_EACH_PIXEL(k, singles) {
            const long long e = k < first ? k : last + (k - first);
            o[e] = gp_crop_byte(corner, row_stride, row_bytes, e);
        }
    }
}

// pad: the input placed at (desc.x, desc.y) = (left, top) on an out_width x out_height canvas;
// elsewhere the fill colour fill[(channels - 1) * 4 + c] (the host computes it per channel
// count, as geometry._fill_value: grey modes take the background's luma).
extern "C" __global__ void gp_pad(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                  const ImageDesc* __restrict__ descs, int n_images,
                                  const unsigned char* __restrict__ fill) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.out_width * d.out_height;
        GP_FOR_EACH_PIXEL(p, count) {
            int sx, sy;
            gp_xy(p, d.out_width, &sx, &sy);
            sx -= d.x;
            sy -= d.y;
            unsigned char* o = dst + d.out_offset + p * d.channels;
            if (sx >= 0 && sy >= 0 && sx < d.width && sy < d.height)
                gp_copy_pixel(src + d.in_offset + ((long long)sy * d.width + sx) * d.channels, o, d.channels);
            else
                gp_copy_pixel(fill + (d.channels - 1) * 4, o, d.channels);
        }
    }
}
