// intensity.cu — normalize and equalize (contract: gpupipe/backends/numpy/intensity.py, bit-exact).
//
// Both map each colour value through a function of the image's own histogram, so one op is three
// launches over the batch:
//   gp_histogram[_u16]   counts of each value among each image's colour values (hist: bins ints per
//                        image, zeroed by the host; bins = 256 or 65536), atomically;
//   gp_histogram_stats   per image, one thread: the counts made cumulative in place, and for
//                        normalize its two percentiles (stats: 2 doubles per image);
//   gp_stretch[_u16]     each colour value through the image's function; alpha copied.
// The float64 expressions are intensity.py's, operation for operation (__dsub_rn and friends: no
// FMA contraction), and rint() rounds half to even like np.rint, so the results are NumPy's bits.
// (window is a table the host computes: gp_lut and the depth-changing gp_lut_* of pointwise.cu.)
#include "gpupipe.cuh"

template <typename T>
__device__ __forceinline__ void gp_count_values(const T* __restrict__ src, int* __restrict__ hist,
                                                const ImageDesc* __restrict__ descs, int n_images, int bins) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const int alpha = has_alpha(d.channels) ? d.channels - 1 : -1;
        const long long n = (long long)d.width * d.height * d.channels;
        int* counts = hist + (long long)i * bins;
        GP_FOR_EACH_PIXEL(e, n) {
            if ((int)(e % d.channels) != alpha) atomicAdd(counts + src[d.in_offset + e], 1);
        }
    }
}

extern "C" __global__ void gp_histogram(const unsigned char* __restrict__ src, int* __restrict__ hist,
                                        const ImageDesc* __restrict__ descs, int n_images, int bins) {
    gp_count_values(src, hist, descs, n_images, bins);
}

extern "C" __global__ void gp_histogram_u16(const unsigned short* __restrict__ src, int* __restrict__ hist,
                                            const ImageDesc* __restrict__ descs, int n_images, int bins) {
    gp_count_values(src, hist, descs, n_images, bins);
}

// The value at index k of the sorted values a cumulative histogram counts: the first bin past k.
__device__ __forceinline__ double gp_sorted_value(const int* cumulative, int bins, long long k) {
    int v = 0;
    while (v < bins - 1 && cumulative[v] <= k) ++v;
    return (double)v;
}

// intensity.percentile: linear interpolation at position (n - 1) * q / 100.
__device__ __forceinline__ double gp_percentile(const int* cumulative, int bins, double q) {
    const long long n = cumulative[bins - 1];
    const double position = __ddiv_rn(__dmul_rn((double)(n - 1), q), 100.0);
    const long long below = (long long)position;
    const double fraction = __dsub_rn(position, (double)below);
    const double a = gp_sorted_value(cumulative, bins, below);
    const double b = gp_sorted_value(cumulative, bins, below + 1 < n - 1 ? below + 1 : n - 1);
    return __dadd_rn(a, __dmul_rn(__dsub_rn(b, a), fraction));
}

// mode 0 (normalize): stats[2 i], stats[2 i + 1] = the low and high percentiles; mode 1 (equalize):
// the cumulative counts alone.
extern "C" __global__ void gp_histogram_stats(int* __restrict__ hist, double* __restrict__ stats, int n_images,
                                              int bins, int mode, double low, double high) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    GP_FOR_EACH_IMAGE(i, n_images) {
        int* cumulative = hist + (long long)i * bins;
        for (int v = 1; v < bins; ++v) cumulative[v] += cumulative[v - 1];
        if (mode == 0 && cumulative[bins - 1] > 0) {
            stats[2 * i] = gp_percentile(cumulative, bins, low);
            stats[2 * i + 1] = gp_percentile(cumulative, bins, high);
        }
    }
}

template <typename T>
__device__ __forceinline__ void gp_stretch_values(const T* __restrict__ src, T* __restrict__ dst,
                                                  const ImageDesc* __restrict__ descs, int n_images,
                                                  const int* __restrict__ hist, const double* __restrict__ stats,
                                                  int mode, int bins) {
    const double top = GpDepth<T>::top;
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const int alpha = has_alpha(d.channels) ? d.channels - 1 : -1;
        const long long n = (long long)d.width * d.height * d.channels;
        const int* cumulative = hist + (long long)i * bins;
        const double p_low = mode == 0 ? stats[2 * i] : 0.0, p_high = mode == 0 ? stats[2 * i + 1] : 0.0;
        const bool flat = mode == 0 && !(p_high > p_low);                // normalize leaves it as it is
        const double total = (double)cumulative[bins - 1];
        GP_FOR_EACH_PIXEL(e, n) {
            const T v = src[d.in_offset + e];
            T out = v;
            if ((int)(e % d.channels) != alpha && !flat) {
                const double y = mode == 0
                    ? __dmul_rn(__ddiv_rn(__dsub_rn((double)v, p_low), __dsub_rn(p_high, p_low)), top)
                    : __ddiv_rn(__dmul_rn((double)cumulative[v], top), total);
                const double r = rint(y);
                out = (T)(r < 0.0 ? 0.0 : (r > top ? top : r));
            }
            dst[d.out_offset + e] = out;
        }
    }
}

extern "C" __global__ void gp_stretch(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                      const ImageDesc* __restrict__ descs, int n_images,
                                      const int* __restrict__ hist, const double* __restrict__ stats,
                                      int mode, int bins) {
    gp_stretch_values(src, dst, descs, n_images, hist, stats, mode, bins);
}

extern "C" __global__ void gp_stretch_u16(const unsigned short* __restrict__ src, unsigned short* __restrict__ dst,
                                          const ImageDesc* __restrict__ descs, int n_images,
                                          const int* __restrict__ hist, const double* __restrict__ stats,
                                          int mode, int bins) {
    gp_stretch_values(src, dst, descs, n_images, hist, stats, mode, bins);
}

// ---------------------------------------------------------------------------------------- CLAHE
// equalize(clahe=True), intensity.clahe: tiles × tiles tiles at most (intensity.clahe_grid), a
// 256-bin histogram each (a 16-bit value's bin: its high byte), clipped and spread
// (intensity.clip_histogram), mapped to cum[b] * max / n (float64), and each colour value blended
// bilinearly between the maps of the four tiles whose centres surround its pixel. Three launches:
//   gp_tile_histograms[_u16]  hist: tiles² × 256 ints per image, zeroed by the host, atomically;
//   gp_tile_maps              a thread per tile: clip, spread, accumulate into maps (tiles² × 256 doubles);
//   gp_clahe[_u16]            each value through the four maps, blended.
#define GP_CLAHE_BINS 256

struct GpTileGrid { int tile_h, tile_w, down, across; };

__device__ __forceinline__ GpTileGrid gp_tile_grid(int height, int width, int tiles) {
    GpTileGrid g;
    g.tile_h = (height + gp_min(tiles, height) - 1) / gp_min(tiles, height);
    g.tile_w = (width + gp_min(tiles, width) - 1) / gp_min(tiles, width);
    g.down = (height + g.tile_h - 1) / g.tile_h;
    g.across = (width + g.tile_w - 1) / g.tile_w;
    return g;
}

template <typename T>
__device__ __forceinline__ void gp_count_tiles(const T* __restrict__ src, int* __restrict__ hist,
                                               const ImageDesc* __restrict__ descs, int n_images, int tiles) {
    const int shift = sizeof(T) == 2 ? 8 : 0;
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const GpTileGrid g = gp_tile_grid(d.height, d.width, tiles);
        const int colours = has_alpha(d.channels) ? d.channels - 1 : d.channels;
        int* image_hist = hist + (long long)i * tiles * tiles * GP_CLAHE_BINS;
        GP_FOR_EACH_PIXEL(p, (long long)d.width * d.height) {
            int x, y;
            gp_xy(p, d.width, &x, &y);
            int* counts = image_hist + ((long long)(y / g.tile_h) * g.across + x / g.tile_w) * GP_CLAHE_BINS;
            const T* px = src + d.in_offset + p * d.channels;
            for (int c = 0; c < colours; ++c) atomicAdd(counts + (px[c] >> shift), 1);
        }
    }
}

extern "C" __global__ void gp_tile_histograms(const unsigned char* __restrict__ src, int* __restrict__ hist,
                                              const ImageDesc* __restrict__ descs, int n_images, int tiles) {
    gp_count_tiles(src, hist, descs, n_images, tiles);
}

extern "C" __global__ void gp_tile_histograms_u16(const unsigned short* __restrict__ src, int* __restrict__ hist,
                                                  const ImageDesc* __restrict__ descs, int n_images, int tiles) {
    gp_count_tiles(src, hist, descs, n_images, tiles);
}

// top: the depth's maximum (255.0 or 65535.0).
extern "C" __global__ void gp_tile_maps(int* __restrict__ hist, double* __restrict__ maps,
                                        const ImageDesc* __restrict__ descs, int n_images, int tiles,
                                        double clip_limit, double top) {
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const GpTileGrid g = gp_tile_grid(d.height, d.width, tiles);
        const int colours = has_alpha(d.channels) ? d.channels - 1 : d.channels;
        for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < g.down * g.across; t += gridDim.x * blockDim.x) {
            const int ti = t / g.across, tj = t - ti * g.across;
            const long long rows = gp_min(g.tile_h, d.height - ti * g.tile_h);
            const long long columns = gp_min(g.tile_w, d.width - tj * g.tile_w);
            const long long count = rows * columns * colours;
            int* h = hist + ((long long)i * tiles * tiles + t) * GP_CLAHE_BINS;
            double* m = maps + ((long long)i * tiles * tiles + t) * GP_CLAHE_BINS;
            long long limit = (long long)__dmul_rn(clip_limit, (double)count);
            if (limit < 1) limit = 1;
            long long excess = 0;
            for (int b = 0; b < GP_CLAHE_BINS; ++b) {
                if (h[b] > limit) {
                    excess += h[b] - limit;
                    h[b] = (int)limit;
                }
            }
            const int share = (int)(excess / GP_CLAHE_BINS), remainder = (int)(excess % GP_CLAHE_BINS);
            for (int b = 0; b < GP_CLAHE_BINS; ++b) h[b] += share;
            if (remainder) {
                const int step = gp_max(GP_CLAHE_BINS / remainder, 1);
                for (int k = 0; k < remainder; ++k) h[k * step] += 1;
            }
            long long cumulative = 0;
            for (int b = 0; b < GP_CLAHE_BINS; ++b) {
                cumulative += h[b];
                m[b] = __ddiv_rn(__dmul_rn((double)cumulative, top), (double)count);
            }
        }
    }
}

// Along one axis: the two tiles around pixel p and the second one's weight (intensity._neighbours).
__device__ __forceinline__ void gp_tile_pair(int p, int tile, int count, int* first, int* second, double* weight) {
    const double f = __dsub_rn(__ddiv_rn((double)p, (double)tile), 0.5);
    const double below = floor(f);
    *weight = __dsub_rn(f, below);
    const int k = (int)below;
    *first = k < 0 ? 0 : (k > count - 1 ? count - 1 : k);
    *second = k + 1 < 0 ? 0 : (k + 1 > count - 1 ? count - 1 : k + 1);
}

template <typename T>
__device__ __forceinline__ void gp_blend_maps(const T* __restrict__ src, T* __restrict__ dst,
                                              const ImageDesc* __restrict__ descs, int n_images,
                                              const double* __restrict__ maps, int tiles) {
    const int shift = sizeof(T) == 2 ? 8 : 0;
    const double top = GpDepth<T>::top;
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const GpTileGrid g = gp_tile_grid(d.height, d.width, tiles);
        const int colours = has_alpha(d.channels) ? d.channels - 1 : d.channels;
        const double* image_maps = maps + (long long)i * tiles * tiles * GP_CLAHE_BINS;
        GP_FOR_EACH_PIXEL(p, (long long)d.width * d.height) {
            int x, y, y0, y1, x0, x1;
            gp_xy(p, d.width, &x, &y);
            double wy, wx;
            gp_tile_pair(y, g.tile_h, g.down, &y0, &y1, &wy);
            gp_tile_pair(x, g.tile_w, g.across, &x0, &x1, &wx);
            const double* a = image_maps + ((long long)y0 * g.across + x0) * GP_CLAHE_BINS;
            const double* b = image_maps + ((long long)y0 * g.across + x1) * GP_CLAHE_BINS;
            const double* c = image_maps + ((long long)y1 * g.across + x0) * GP_CLAHE_BINS;
            const double* e = image_maps + ((long long)y1 * g.across + x1) * GP_CLAHE_BINS;
            const T* px = src + d.in_offset + p * d.channels;
            T* out = dst + d.out_offset + p * d.channels;
            for (int k = 0; k < d.channels; ++k) {
                if (k >= colours) {
                    out[k] = px[k];
                    continue;
                }
                const int bin = px[k] >> shift;
                const double upper = __dadd_rn(__dmul_rn(__dsub_rn(1.0, wx), a[bin]), __dmul_rn(wx, b[bin]));
                const double lower = __dadd_rn(__dmul_rn(__dsub_rn(1.0, wx), c[bin]), __dmul_rn(wx, e[bin]));
                const double r = rint(__dadd_rn(__dmul_rn(__dsub_rn(1.0, wy), upper), __dmul_rn(wy, lower)));
                out[k] = (T)(r < 0.0 ? 0.0 : (r > top ? top : r));
            }
        }
    }
}

extern "C" __global__ void gp_clahe(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                    const ImageDesc* __restrict__ descs, int n_images,
                                    const double* __restrict__ maps, int tiles) {
    gp_blend_maps(src, dst, descs, n_images, maps, tiles);
}

extern "C" __global__ void gp_clahe_u16(const unsigned short* __restrict__ src, unsigned short* __restrict__ dst,
                                        const ImageDesc* __restrict__ descs, int n_images,
                                        const double* __restrict__ maps, int tiles) {
    gp_blend_maps(src, dst, descs, n_images, maps, tiles);
}
