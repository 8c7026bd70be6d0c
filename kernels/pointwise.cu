// pointwise.cu — colour ops, one thread per output pixel (contract: gpupipe/backends/numpy/color.py).
//
// Every kernel: (src, dst, descs, n_images, ...) with the launch shape of gpupipe.cuh.
// Descriptor fields used: in_offset, out_offset, width, height, channels, out_channels.
// Results are bit-identical to color.py: the same float32 operations in the same
// order, each rounded (__fmul_rn/__fadd_rn: no FMA contraction), stored by store_u8.
#include "gpupipe.cuh"

// grayscale: RGB -> L, RGBA -> LA (alpha kept); L and LA are copied.
// luma = ((R * 0.299f) + (G * 0.587f)) + (B * 0.114f), float32 left to right (color.luma).
// out_channels must be 1 for channels 1 and 3, 2 for channels 2 and 4.
extern "C" __global__ void gp_grayscale(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                        const ImageDesc* __restrict__ descs, int n_images) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.width * d.height;
        GP_FOR_EACH_PIXEL(p, count) {
            const unsigned char* s = src + d.in_offset + p * d.channels;
            unsigned char* o = dst + d.out_offset + p * d.out_channels;
            if (d.channels <= 2) {
                for (int c = 0; c < d.channels; ++c) o[c] = s[c];
                continue;
            }
            float y = __fmul_rn((float)s[0], 0.299f);
            y = __fadd_rn(y, __fmul_rn((float)s[1], 0.587f));
            y = __fadd_rn(y, __fmul_rn((float)s[2], 0.114f));
            o[0] = store_u8(y);
            if (d.channels == 4) o[1] = s[3];
        }
    }
}

// lut: colour channels through a 256-entry table, alpha kept. Brightness and contrast are
// functions of one uint8 value, so the host evaluates them (or several in a row, composed)
// on all 256 values exactly as the NumPy backend does (color._table) and one launch applies
// them all: consecutive pointwise ops cost one pass over the batch.
extern "C" __global__ void gp_lut(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                  const ImageDesc* __restrict__ descs, int n_images,
                                  const unsigned char* __restrict__ lut) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.width * d.height;
        const int colour = d.channels - (has_alpha(d.channels) ? 1 : 0);
        GP_FOR_EACH_PIXEL(p, count) {
            const unsigned char* s = src + d.in_offset + p * d.channels;
            unsigned char* o = dst + d.out_offset + p * d.channels;
            for (int c = 0; c < colour; ++c) o[c] = lut[s[c]];
            if (colour != d.channels) o[colour] = s[colour];
        }
    }
}
