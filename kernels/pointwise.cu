// pointwise.cu — colour ops (contract: gpupipe/backends/numpy/color.py).
//
// Every kernel: (src, dst, descs, n_images, ...) with the launch shape of gpupipe.cuh.
// Descriptor fields used: in_offset, out_offset, width, height, channels, out_channels.
// Results are bit-identical to color.py: the same float32 operations in the same
// order, each rounded (__fmul_rn/__fadd_rn: no FMA contraction), stored by store_u8.
#include "gpupipe.cuh"

// grayscale: RGB -> L, RGBA -> LA (alpha kept); L and LA are copied.
// luma = ((R * 0.299f) + (G * 0.587f)) + (B * 0.114f), float32 left to right (color.luma).
// out_channels must be 1 for channels 1 and 3, 2 for channels 2 and 4.
template <typename T>
__device__ __forceinline__ T gp_luma(const T* rgb) {
    float y = __fmul_rn((float)rgb[0], 0.299f);
    y = __fadd_rn(y, __fmul_rn((float)rgb[1], 0.587f));
    y = __fadd_rn(y, __fmul_rn((float)rgb[2], 0.114f));
    return gp_store<T>(y);
}

// One pixel: its luma (and alpha), or a copy of an L / LA pixel.
template <typename T>
__device__ __forceinline__ void gp_grey_pixel(const T* px, T* out, int channels) {
    if (channels <= 2) {
        for (int c = 0; c < channels; ++c) out[c] = px[c];
        return;
    }
    out[0] = gp_luma(px);
    if (channels == 4) out[1] = px[3];
}

// RGB and RGBA images fill 16 result bytes per step where they can: 16 RGB pixels (three 128-bit
// loads) or 8 RGBA pixels (two), one 128-bit store (per-pixel byte accesses reached 36 % of an
// H100's bandwidth). That needs the result 16-byte aligned at the first vector, on a pixel
// boundary, and the source aligned with it (in a batch of one mode only, the source offset is a
// fixed multiple of the result's: both align together). The pixels before the first vector and
// after the last, and every other image, go one pixel at a time.
extern "C" __global__ void gp_grayscale(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                        const ImageDesc* __restrict__ descs, int n_images) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.width * d.height;
        const unsigned char* s = src + d.in_offset;
        unsigned char* o = dst + d.out_offset;
        const int per = d.channels == 3 ? 16 : 8;                    // pixels per vector (RGB, RGBA)
        long long first = count, vectors = 0;                        // vectors cover [first, last)
        if (d.channels >= 3) {
            const int head_bytes = (int)((16 - ((unsigned long long)o & 15)) & 15);
            const long long head = head_bytes / d.out_channels;
            if (head_bytes % d.out_channels == 0 && head + per <= count &&
                ((unsigned long long)(s + d.channels * head) & 15) == 0) {
                first = head;
                vectors = (count - head) / per;
            }
        }
        const long long last = first + per * vectors;
        GP_FOR_EACH_PIXEL(q, vectors) {
            const long long at = first + per * q;
            union { uint4 v[3]; unsigned char b[48]; } in;
            GpVec16 out;
            const uint4* from = (const uint4*)(s + d.channels * at);
            in.v[0] = from[0];
            in.v[1] = from[1];
            if (d.channels == 3) {
                in.v[2] = from[2];
                GP_UNROLL for (int j = 0; j < 16; ++j) out.b[j] = gp_luma(in.b + 3 * j);
            } else {
                GP_UNROLL for (int j = 0; j < 8; ++j) {
                    out.b[2 * j] = gp_luma(in.b + 4 * j);
                    out.b[2 * j + 1] = in.b[4 * j + 3];
                }
            }
            *(uint4*)(o + d.out_channels * at) = out.v;
        }
        const long long singles = first + (count - last);            // pixels before and after the vectors
        GP_FOR_EACH_PIXEL(k, singles) {
            const long long p = gp_around(k, first, last);
            gp_grey_pixel(s + p * d.channels, o + p * d.out_channels, d.channels);
        }
    }
}

// lut: colour channels through a 256-entry table, alpha kept. Brightness and contrast are
// functions of one uint8 value, so the host evaluates them (or several in a row, composed)
// on all 256 values exactly as the NumPy backend does (color._table) and one launch applies
// them all: consecutive pointwise ops cost one pass over the batch.
//
// The table applies per byte, whatever the pixel layout, so the kernel walks each image's bytes
// 16 at a time (one 128-bit load and store: enough bytes in flight to approach the memory's
// bandwidth, which per-pixel byte accesses did not), with the few bytes before the first
// 16-byte boundary and after the last one done one by one. Alpha bytes (channels 2 and 4, which
// divide 16: a byte's channel is fixed by its place in the vector) are copied.
extern "C" __global__ void gp_lut(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                  const ImageDesc* __restrict__ descs, int n_images,
                                  const unsigned char* __restrict__ lut) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const int channels = d.channels;
        const int alpha = has_alpha(channels) ? channels - 1 : -1;   // the alpha byte's channel, or none
        const long long n = (long long)d.width * d.height * channels;
        const unsigned char* s = src + d.in_offset;
        unsigned char* o = dst + d.out_offset;
        // Vectors need s and o equally misaligned (always so for CuPy's 256-byte aligned buffers).
        const int head = (int)((16 - ((unsigned long long)s & 15)) & 15);
        const bool vectors = (((unsigned long long)s ^ (unsigned long long)o) & 15) == 0 && n >= head + 16;
        const long long first = vectors ? head : n;                  // vectors cover [first, last)
        const long long count = vectors ? (n - head) / 16 : 0;
        const long long last = first + 16 * count;
        GP_FOR_EACH_PIXEL(q, count) {
            const long long at = first + 16 * q;
            GpVec16 in, out;
            in.v = *(const uint4*)(s + at);
            GP_UNROLL for (int j = 0; j < 16; ++j)
                out.b[j] = (alpha >= 0 && (int)((first + j) & (channels - 1)) == alpha) ? in.b[j] : lut[in.b[j]];
            *(uint4*)(o + at) = out.v;
        }
        const long long singles = first + (n - last);                // bytes before and after the vectors
        GP_FOR_EACH_PIXEL(k, singles) {
            const long long e = gp_around(k, first, last);
            o[e] = (alpha >= 0 && (int)(e % channels) == alpha) ? s[e] : lut[s[e]];
        }
    }
}

// The 16-bit twins, a pixel (or a value) at a time: 16-bit batches are the rarer case (medical,
// RAW, 16-bit PNG and TIFF), so they do without the vectors above.

// grayscale of 16-bit images: gp_grey_pixel a pixel at a time.
extern "C" __global__ void gp_grayscale_u16(const unsigned short* __restrict__ src, unsigned short* __restrict__ dst,
                                            const ImageDesc* __restrict__ descs, int n_images) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.width * d.height;
        GP_FOR_EACH_PIXEL(p, count)
            gp_grey_pixel(src + d.in_offset + p * d.channels, dst + d.out_offset + p * d.out_channels, d.channels);
    }
}

// Alpha at another depth, as gpupipe.pixels converts it: round(v * 255 / 65535) or v * 257.
template <typename I, typename O> __device__ __forceinline__ O gp_convert_depth(I v);
template <> __device__ __forceinline__ unsigned short gp_convert_depth(unsigned short v) { return v; }
template <> __device__ __forceinline__ unsigned char gp_convert_depth(unsigned short v) {
    return (unsigned char)(((unsigned int)v + 128u) / 257u);
}
template <> __device__ __forceinline__ unsigned short gp_convert_depth(unsigned char v) {
    return (unsigned short)(v * 257);
}

// Colour values through a table of every input value (256 or 65536 entries, of the result's depth),
// alpha converted to the result's depth: brightness and contrast at 16 bits (color.brightness_table,
// contrast_table), and window's tables (intensity.window_table), which may change the depth.
template <typename I, typename O>
__device__ __forceinline__ void gp_map_values(const I* __restrict__ src, O* __restrict__ dst,
                                              const ImageDesc* __restrict__ descs, int n_images,
                                              const O* __restrict__ lut) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const int alpha = has_alpha(d.channels) ? d.channels - 1 : -1;
        const long long n = (long long)d.width * d.height * d.channels;
        GP_FOR_EACH_PIXEL(e, n) {
            const I v = src[d.in_offset + e];
            dst[d.out_offset + e] = (int)(e % d.channels) == alpha ? gp_convert_depth<I, O>(v) : lut[v];
        }
    }
}

extern "C" __global__ void gp_lut_u16(const unsigned short* __restrict__ src, unsigned short* __restrict__ dst,
                                      const ImageDesc* __restrict__ descs, int n_images,
                                      const unsigned short* __restrict__ lut) {
    gp_map_values(src, dst, descs, n_images, lut);
}

extern "C" __global__ void gp_lut_u16_u8(const unsigned short* __restrict__ src, unsigned char* __restrict__ dst,
                                         const ImageDesc* __restrict__ descs, int n_images,
                                         const unsigned char* __restrict__ lut) {
    gp_map_values(src, dst, descs, n_images, lut);
}

extern "C" __global__ void gp_lut_u8_u16(const unsigned char* __restrict__ src, unsigned short* __restrict__ dst,
                                         const ImageDesc* __restrict__ descs, int n_images,
                                         const unsigned short* __restrict__ lut) {
    gp_map_values(src, dst, descs, n_images, lut);
}
