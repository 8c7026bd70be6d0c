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
extern "C" __global__ void gp_crop(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                   const ImageDesc* __restrict__ descs, int n_images) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const long long count = (long long)d.out_width * d.out_height;
        GP_FOR_EACH_PIXEL(p, count) {
            int oy, ox;
            gp_xy(p, d.out_width, &ox, &oy);
            gp_copy_pixel(src + d.in_offset + ((long long)(oy + d.y) * d.width + (ox + d.x)) * d.channels,
                          dst + d.out_offset + p * d.channels, d.channels);
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
