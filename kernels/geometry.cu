// geometry.cu — pixel moves (contract: gpupipe/backends/numpy/geometry.py).
//
// Every kernel: (src, dst, descs, n_images, ...) with the launch shape of gpupipe.cuh.
// Output pixel (ox, oy) of an out_width x out_height image copies the channels of
// one input pixel; no arithmetic, so results are exact. channels == out_channels.
// These kernels move bytes: "channels" is the bytes of a pixel, 1 to 8, and a 16-bit image of
// c channels comes described as 2c byte channels (offsets in bytes), so both depths share them.
// Crop, flip and rotate 180 walk result bytes 16 at a time instead (see GP_RESULT_SPLIT).
#include "gpupipe.cuh"

__device__ __forceinline__ void gp_copy_pixel(const unsigned char* s, unsigned char* o, int channels) {
    for (int c = 0; c < channels; ++c) o[c] = s[c];
}

// Result bytes 16 at a time: per-pixel byte copies reached 38-40 % of an H100's bandwidth, a
// kernel walking 16-byte vectors (gp_lut) 79 %. Each thread fills 16 result bytes in registers
// and stores them with one aligned 128-bit write; the bytes before the first aligned vector and
// after the last go one by one. GP_RESULT_SPLIT(n, o) splits the n result bytes at o: vectors
// start at gp_first + 16 q for q < gp_vectors; single byte k < gp_first + (n - gp_last) is
// byte gp_around(k, gp_first, gp_last).
#define GP_RESULT_SPLIT(n, o)                                                                       \
    const int gp_head = (int)((16 - ((unsigned long long)(o) & 15)) & 15);                          \
    const long long gp_first = (n) >= gp_head + 16 ? gp_head : (n);                                 \
    const long long gp_vectors = (n) >= gp_head + 16 ? ((n) - gp_head) / 16 : 0;                    \
    const long long gp_last = gp_first + 16 * gp_vectors;

// Rows of row_bytes bytes, each one contiguous run of the source: result row r starts at
// first_row + r * row_stride (row_stride < 0 walks the source bottom-up). Where the 16 bytes of a
// vector lie in one source row, five aligned 32-bit loads and funnel shifts fetch them at any
// alignment (only when those words stay inside the image: they may reach 3 bytes either side);
// otherwise byte by byte.
__device__ __forceinline__ unsigned char gp_run_byte(const unsigned char* first_row, long long row_stride,
                                                     int row_bytes, long long e) {
    int col;
    const long long row = gp_divmod(e, row_bytes, &col);
    return first_row[row * row_stride + col];
}

__device__ __forceinline__ void gp_copy_runs(const unsigned char* first_row, long long row_stride, int row_bytes,
                                             int rows, const unsigned char* image, const unsigned char* image_end,
                                             unsigned char* o) {
    const long long n = (long long)row_bytes * rows;
    GP_RESULT_SPLIT(n, o)
    GP_FOR_EACH_PIXEL(q, gp_vectors) {
        const long long e = gp_first + 16 * q;
        int col;
        const long long row = gp_divmod(e, row_bytes, &col);
        const unsigned char* from = first_row + row * row_stride + col;
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
            GP_UNROLL for (int j = 0; j < 16; ++j) out.b[j] = gp_run_byte(first_row, row_stride, row_bytes, e + j);
        }
        *(uint4*)(o + e) = out.v;
    }
    GP_FOR_EACH_PIXEL(k, gp_first + (n - gp_last)) {
        const long long e = gp_around(k, gp_first, gp_last);
        o[e] = gp_run_byte(first_row, row_stride, row_bytes, e);
    }
}

// Rows of `pixels` pixels of c channels, each the same source row with its pixels in reverse
// order (a horizontal flip; with the whole image as one row, a rotation by 180). The source of a
// vector's 16 bytes is found once and then stepped, byte by byte.
__device__ __forceinline__ long long gp_reversed_byte(long long e, long long pixels, int c) {
    const long long row_bytes = pixels * c;
    const long long row = e / row_bytes, b = e - row * row_bytes, px = b / c;
    return row * row_bytes + (pixels - 1 - px) * c + (b - px * c);
}

__device__ __forceinline__ void gp_reverse_pixels(const unsigned char* s, unsigned char* o, long long pixels,
                                                  int rows, int c) {
    const long long n = pixels * c * rows;
    GP_RESULT_SPLIT(n, o)
    GP_FOR_EACH_PIXEL(q, gp_vectors) {
        const long long e = gp_first + 16 * q;
        const long long row_bytes = pixels * c;
        const long long row = e / row_bytes, b = e - row * row_bytes;
        long long px = b / c;
        int ch = (int)(b - px * c);
        const unsigned char* row_end = s + row * row_bytes + row_bytes;   // the source row's last pixel ends here
        GpVec16 out;
        GP_UNROLL for (int j = 0; j < 16; ++j) {
            if (px == pixels) {                       // the vector runs into the next row
                px = 0;
                row_end += row_bytes;
            }
            out.b[j] = row_end[-(px + 1) * c + ch];
            if (++ch == c) {
                ch = 0;
                ++px;
            }
        }
        *(uint4*)(o + e) = out.v;
    }
    GP_FOR_EACH_PIXEL(k, gp_first + (n - gp_last)) {
        const long long e = gp_around(k, gp_first, gp_last);
        o[e] = s[gp_reversed_byte(e, pixels, c)];
    }
}

// rotate clockwise by `degrees` (90, 180, 270). out size: (height, width) for 90/270. The backend
// rotates by 90 and 270 with gp_rotate_tiled (transpose.cu); this per-pixel version is its plain
// twin (tests, benchmarks). 180 reverses the image's pixels.
extern "C" __global__ void gp_rotate(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                     const ImageDesc* __restrict__ descs, int n_images, int degrees) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        if (degrees == 180) {
            gp_reverse_pixels(src + d.in_offset, dst + d.out_offset, (long long)d.width * d.height, 1, d.channels);
            continue;
        }
        const long long count = (long long)d.out_width * d.out_height;
        GP_FOR_EACH_PIXEL(p, count) {
            int oy, ox;
            gp_xy(p, d.out_width, &ox, &oy);
            int sx, sy;
            if (degrees == 90) {          // out[oy, ox] = in[H-1-ox, oy]
                sx = oy; sy = d.height - 1 - ox;
            } else {                      // 270: out[oy, ox] = in[ox, W-1-oy]
                sx = d.width - 1 - oy; sy = ox;
            }
            gp_copy_pixel(src + d.in_offset + ((long long)sy * d.width + sx) * d.channels,
                          dst + d.out_offset + p * d.channels, d.channels);
        }
    }
}

// flip: vertical != 0 mirrors top<->bottom (the rows bottom-up), else left<->right (each row's
// pixels reversed).
extern "C" __global__ void gp_flip(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                   const ImageDesc* __restrict__ descs, int n_images, int vertical) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const unsigned char* image = src + d.in_offset;
        const int row_bytes = d.width * d.channels;
        if (vertical)
            gp_copy_runs(image + (long long)(d.height - 1) * row_bytes, -(long long)row_bytes, row_bytes, d.height,
                         image, image + (long long)row_bytes * d.height, dst + d.out_offset);
        else
            gp_reverse_pixels(image, dst + d.out_offset, d.width, d.height, d.channels);
    }
}

// crop (and center_crop): the out_width x out_height rectangle at (desc.x, desc.y) of the input;
// the host checks it lies inside. Each result row is one run of a source row.
extern "C" __global__ void gp_crop(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                   const ImageDesc* __restrict__ descs, int n_images) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long row_stride = (long long)d.width * d.channels;
        const unsigned char* image = src + d.in_offset;
        gp_copy_runs(image + d.y * row_stride + (long long)d.x * d.channels, row_stride, d.out_width * d.channels,
                     d.out_height, image, image + row_stride * d.height, dst + d.out_offset);
    }
}

// pad: the input placed at (desc.x, desc.y) = (left, top) on an out_width x out_height canvas;
// elsewhere the fill colour's bytes fill[(channels - 1) * 8 + c] (the host lays out the fill of
// each pixel size, as geometry.fill_value makes it: grey modes take the background's luma). Result bytes 16 at a
// time (GP_RESULT_SPLIT), each gathered from the image or the fill.
// Byte c of result pixel (x, row).
__device__ __forceinline__ unsigned char gp_pad_byte(const unsigned char* image, const unsigned char* colour,
                                                     const ImageDesc& d, int row, int x, int c) {
    const int sx = x - d.x, sy = row - d.y;
    return (sx >= 0 && sy >= 0 && sx < d.width && sy < d.height)
        ? image[((long long)sy * d.width + sx) * d.channels + c] : colour[c];
}

extern "C" __global__ void gp_pad(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                  const ImageDesc* __restrict__ descs, int n_images,
                                  const unsigned char* __restrict__ fill) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const unsigned char* image = src + d.in_offset;
        const unsigned char* colour = fill + (d.channels - 1) * 8;
        const int row_bytes = d.out_width * d.channels;
        const long long n = (long long)row_bytes * d.out_height;
        unsigned char* o = dst + d.out_offset;
        GP_RESULT_SPLIT(n, o)
        GP_FOR_EACH_PIXEL(q, gp_vectors) {              // 16 result bytes, gathered, one 128-bit store
            const long long e = gp_first + 16 * q;
            int col;
            int row = (int)gp_divmod(e, row_bytes, &col);
            int x = col / d.channels, c = col - x * d.channels;   // then stepped, byte by byte
            GpVec16 out;
            GP_UNROLL for (int j = 0; j < 16; ++j) {
                out.b[j] = gp_pad_byte(image, colour, d, row, x, c);
                if (++c == d.channels) {
                    c = 0;
                    if (++x == d.out_width) {
                        x = 0;
                        ++row;
                    }
                }
            }
            *(uint4*)(o + e) = out.v;
        }
        GP_FOR_EACH_PIXEL(k, gp_first + (n - gp_last)) {
            const long long e = gp_around(k, gp_first, gp_last);
            int col;
            const int row = (int)gp_divmod(e, row_bytes, &col);
            const int x = col / d.channels;
            o[e] = gp_pad_byte(image, colour, d, row, x, col - x * d.channels);
        }
    }
}
