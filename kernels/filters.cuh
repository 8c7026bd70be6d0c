// filters.cuh — what the filter kernels (convolve.cu, convolve_tiled.cu) share.
#pragma once
#include "gpupipe.cuh"

// Value channel c of a pixel enters the filter as: c * alpha for colour of translucent images, else c.
template <typename T>
__device__ __forceinline__ float gp_tap_value(const T* px, int c, int channels, bool premul) {
    const float v = (float)px[c];
    return (premul && c != channels - 1) ? __fmul_rn(v, (float)px[channels - 1]) : v;
}

// The channels a separable pass filters: all, except the alpha of an image that is opaque
// (kept at the maximum) or translucent under a non-smoothing filter (the original alpha is used).
__device__ __forceinline__ int gp_filtered_channels(int channels, bool premul, bool smooth) {
    return (has_alpha(channels) && !(premul && smooth)) ? channels - 1 : channels;
}
