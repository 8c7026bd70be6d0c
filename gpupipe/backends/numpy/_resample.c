/* Pillow 13's resize (Resample.c) for 8- and 16-bit images, computed with SIMD-friendly loops.
 *
 * The arithmetic is Pillow's, so the bytes are Pillow's: float64 weights from the same filter
 * expressions and libm sin(), normalised and rounded to int32 with 22 fraction bits, then two
 * passes that each sum uint8 x int32 products in int32 from 1 << 21 and keep bits 22..29,
 * clamped. Only the loop order differs: integer sums do not depend on it. 16-bit images follow
 * the same rule at 16 bits (gpupipe's extension of it, resample.resize_reference): their sums,
 * below 2**46, are taken in float64, where every partial sum of integers is exact in any order.
 *
 * Why not call Pillow: its passes run one output pixel at a time, one channel per scalar
 * multiply (2.5 ms for an ImageNet photo to a 256 thumbnail, against 0.9 ms for OpenCV's
 * INTER_AREA). Here every pass is "add a row of bytes times one coefficient to a row of int32
 * sums", which compilers vectorise:
 *   - the vertical pass walks whole rows (each output row is a weighted sum of input rows);
 *   - the horizontal pass first transposes ROWS rows into a tile where a column's pixels of
 *     those rows are adjacent, then does the same over the tile's columns.
 * On x86-64 the passes are compiled twice (AVX2 and the baseline) and the loader picks one; the
 * tests run both (the baseline under ASan).
 *
 * Python side: gpupipe/backends/numpy/resample.py (checks, the NumPy model).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)
#define HALF (1 << (PRECISION_BITS - 1))
#define ROWS 8           /* rows the horizontal pass sums side by side */

/* GPUPIPE_BASELINE_ONLY: the baseline build alone, which the tests build under ASan (the
 * machine running them picks the AVX2 clone of the production build). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GPUPIPE_BASELINE_ONLY)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

enum { NEAREST, BILINEAR, BICUBIC, LANCZOS3 };

/* ---- coefficients (precompute_coeffs + normalize_coeffs_8bpc) ------------------------------ */

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double weight(int filter, double x) {
    switch (filter) {
    case BILINEAR:
        if (x < 0.0) x = -x;
        return x < 1.0 ? 1.0 - x : 0.0;
    case BICUBIC: {
        const double a = -0.5;
        if (x < 0.0) x = -x;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
    }
    default: /* LANCZOS3 */
        return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0;
    }
}

typedef struct {
    int out_size, ksize;
    int *start, *length; /* first input pixel and number of taps of each output pixel */
    int32_t *k;          /* out_size x ksize, zero past each length */
} Axis;

static void axis_free(Axis *a) {
    free(a->start);
    free(a->length);
    free(a->k);
    a->start = a->length = NULL;
    a->k = NULL;
}

/* 0 on success, -1 when out of memory. */
static int axis_init(Axis *a, int in_size, int out_size, int filter) {
    a->out_size = out_size;
    a->start = a->length = NULL;
    a->k = NULL;
    if (filter == NEAREST) {
        /* Pillow's affine nearest scaler: x0 = step / 2, x(i+1) = x(i) + step, truncated. */
        a->ksize = 1;
        a->start = malloc(sizeof(int) * out_size);
        a->length = malloc(sizeof(int) * out_size);
        a->k = malloc(sizeof(int32_t) * out_size);
        if (!a->start || !a->length || !a->k) return axis_free(a), -1;
        double step = (double)(float)in_size / out_size, x = 0.0 + step * 0.5;
        for (int i = 0; i < out_size; i++, x += step) {
            int s = (int)x;
            a->start[i] = s < in_size - 1 ? s : in_size - 1;
            a->length[i] = 1;
            a->k[i] = 1 << PRECISION_BITS;
        }
        return 0;
    }
    const double support0 = filter == BILINEAR ? 1.0 : filter == BICUBIC ? 2.0 : 3.0;
    const double scale = (double)(float)in_size / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = support0 * filterscale, ss = 1.0 / filterscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    a->ksize = ksize;
    a->start = malloc(sizeof(int) * out_size);
    a->length = malloc(sizeof(int) * out_size);
    a->k = calloc((size_t)out_size * ksize, sizeof(int32_t));
    double *w = malloc(sizeof(double) * ksize);
    if (!a->start || !a->length || !a->k || !w) return free(w), axis_free(a), -1;
    for (int i = 0; i < out_size; i++) {
        const double center = 0.0 + (i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            w[x] = weight(filter, (x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = a->k + (size_t)i * ksize;
        for (int x = 0; x < xmax; x++) {
            const double v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
        }
        a->start[i] = xmin;
        a->length[i] = xmax;
    }
    free(w);
    return 0;
}

/* ---- the passes ----------------------------------------------------------------------------- */

INLINE uint8_t clip8(int32_t v) {
    return v <= 0 ? 0 : v >= (256 << PRECISION_BITS) ? 255 : (uint8_t)(v >> PRECISION_BITS);
}

/* Output row i = sum over taps t of input row (start[i] - offset + t) * k[i][t], over `bytes`
 * bytes of each row, SPAN bytes at a time so the sums stay in the L1 cache. (Holding a block's
 * sums in registers across the taps instead measured 25 % slower: the compiler widens bytes to
 * int32 in more steps that way.) */
#define SPAN 2048

VECTOR_CLONES
static void vertical_pass(const uint8_t *in, Py_ssize_t in_stride, int offset, Py_ssize_t bytes, uint8_t *out,
                          Py_ssize_t out_stride, const Axis *a) {
    int32_t sums[SPAN];
    for (int i = 0; i < a->out_size; i++) {
        const int32_t *k = a->k + (size_t)i * a->ksize;
        const uint8_t *first = in + (Py_ssize_t)(a->start[i] - offset) * in_stride;
        for (Py_ssize_t x0 = 0; x0 < bytes; x0 += SPAN) {
            const Py_ssize_t n = bytes - x0 < SPAN ? bytes - x0 : SPAN;
            for (Py_ssize_t x = 0; x < n; x++) sums[x] = HALF;
            for (int t = 0; t < a->length[i]; t++) {
                const uint8_t *row = first + t * in_stride + x0;
                const int32_t w = k[t];
                for (Py_ssize_t x = 0; x < n; x++) sums[x] += row[x] * w;
            }
            uint8_t *dst = out + i * out_stride + x0;
            for (Py_ssize_t x = 0; x < n; x++) dst[x] = clip8(sums[x]);
        }
    }
}

/* Eight int32 lanes (two SSE registers on the baseline, one AVX2 register), read from or
 * written to any 4-byte-aligned address. */
typedef int32_t i32x8 __attribute__((vector_size(32), aligned(4)));

/* Scratch of the horizontal pass for a band of ROWS rows, L = ROWS * C values per column. */
typedef struct {
    uint8_t *in8;   /* in_w x L: the band transposed, in[r][x][c] at [x][r][c] */
    int32_t *in32;  /* the same widened to int32, once per pixel rather than once per tap */
    int32_t *out32; /* out_w x L: the band's sums */
    uint8_t *out8;  /* the same clipped to bytes, transposed back into the output rows */
} Band;

/* The band's output pixel j is a sum over the tile's columns start[j] - offset + t, each a run of
 * L values: C vectors of eight lanes. Transposes and the clip are flat loops, vectorised too.
 * C is a constant per call (the switch below), so every loop has a known trip count. */
INLINE void horizontal_band(const uint8_t *in, Py_ssize_t in_stride, int rows, int in_w, int offset, uint8_t *out,
                            Py_ssize_t out_stride, const Axis *a, const Band *b, const int C) {
    const int L = ROWS * C, out_w = a->out_size;
    /* Local restrict pointers: a byte store may alias anything, b's fields included, which would
     * keep the compiler from vectorising the flat loops. */
    uint8_t *restrict in8 = b->in8, *restrict out8 = b->out8;
    int32_t *restrict in32 = b->in32, *restrict out32 = b->out32;
    if (rows < ROWS) memset(in8, 0, (size_t)in_w * L);
    if (C == 3) {
        /* Four bytes per pixel, one move each way: the fourth lands on the next slot, which is
         * written after it (the next row's, or the next column's first), or is a padding row's. */
        for (int x = 0; x < in_w - 1; x++)
            for (int r = 0; r < rows; r++) memcpy(in8 + x * L + r * C, in + r * in_stride + x * C, 4);
        for (int r = 0; r < rows; r++) memcpy(in8 + (in_w - 1) * L + r * C, in + r * in_stride + (in_w - 1) * C, C);
    } else {
        for (int r = 0; r < rows; r++) {
            const uint8_t *src = in + r * in_stride;
            uint8_t *dst = in8 + r * C;
            for (int x = 0; x < in_w; x++) memcpy(dst + x * L, src + x * C, C);
        }
    }
    for (Py_ssize_t i = 0; i < (Py_ssize_t)in_w * L; i++) in32[i] = in8[i];
    for (int j = 0; j < out_w; j++) {
        const int32_t *k = a->k + (size_t)j * a->ksize;
        const int32_t *col = in32 + (size_t)(a->start[j] - offset) * L;
        i32x8 sums[4];
        for (int v = 0; v < C; v++) sums[v] = (i32x8){0} + HALF;
        for (int t = 0; t < a->length[j]; t++) {
            const i32x8 w = (i32x8){0} + k[t];
            for (int v = 0; v < C; v++) sums[v] += *(const i32x8 *)(col + t * L + v * 8) * w;
        }
        for (int v = 0; v < C; v++) *(i32x8 *)(out32 + (size_t)j * L + v * 8) = sums[v];
    }
    for (Py_ssize_t i = 0; i < (Py_ssize_t)out_w * L; i++) out8[i] = clip8(out32[i]);
    for (int r = 0; r < rows; r++) {
        uint8_t *dst = out + r * out_stride;
        const uint8_t *src = out8 + r * C;
        for (int j = 0; j < out_w; j++) memcpy(dst + j * C, src + j * L, C);
    }
}

/* ---- the 16-bit passes: the same loops over float64 sums ------------------------------------ */

#define SPAN16 1024

/* floor((2**21 + sum) / 2**22) clamped to 0..65535: exact, every step is on integers < 2**53. */
INLINE uint16_t clip16(double sum) {
    const double v = floor((sum + HALF) * (1.0 / (1 << PRECISION_BITS)));
    return v <= 0 ? 0 : v >= 65535 ? 65535 : (uint16_t)v;
}

VECTOR_CLONES
static void vertical_pass16(const uint8_t *in, Py_ssize_t in_stride, int offset, Py_ssize_t count, uint8_t *out,
                            Py_ssize_t out_stride, const Axis *a) {
    double sums[SPAN16];
    for (int i = 0; i < a->out_size; i++) {
        const int32_t *k = a->k + (size_t)i * a->ksize;
        const uint8_t *first = in + (Py_ssize_t)(a->start[i] - offset) * in_stride;
        for (Py_ssize_t x0 = 0; x0 < count; x0 += SPAN16) {
            const Py_ssize_t n = count - x0 < SPAN16 ? count - x0 : SPAN16;
            for (Py_ssize_t x = 0; x < n; x++) sums[x] = 0.0;
            for (int t = 0; t < a->length[i]; t++) {
                const uint16_t *row = (const uint16_t *)(first + t * in_stride) + x0;
                const double w = k[t];
                for (Py_ssize_t x = 0; x < n; x++) sums[x] += row[x] * w;
            }
            uint16_t *dst = (uint16_t *)(out + i * out_stride) + x0;
            for (Py_ssize_t x = 0; x < n; x++) dst[x] = clip16(sums[x]);
        }
    }
}

/* Four float64 lanes, read from or written to any 8-byte-aligned address. */
typedef double f64x4 __attribute__((vector_size(32), aligned(8)));

typedef struct {
    double *in64;    /* in_w x L: the band transposed and widened */
    double *out64;   /* out_w x L: its sums */
    uint16_t *out16; /* the same clipped, transposed back into the output rows */
} Band16;

INLINE void horizontal_band16(const uint8_t *in, Py_ssize_t in_stride, int rows, int in_w, int offset,
                              uint8_t *out, Py_ssize_t out_stride, const Axis *a, const Band16 *b, const int C) {
    const int L = ROWS * C, out_w = a->out_size;
    double *restrict in64 = b->in64, *restrict out64 = b->out64;
    uint16_t *restrict out16 = b->out16;
    if (rows < ROWS) memset(in64, 0, sizeof(double) * in_w * L);
    for (int r = 0; r < rows; r++) {
        const uint16_t *src = (const uint16_t *)(in + r * in_stride);
        for (int x = 0; x < in_w; x++)
            for (int c = 0; c < C; c++) in64[x * L + r * C + c] = src[x * C + c];
    }
    for (int j = 0; j < out_w; j++) {
        const int32_t *k = a->k + (size_t)j * a->ksize;
        const double *col = in64 + (size_t)(a->start[j] - offset) * L;
        f64x4 sums[8];
        for (int v = 0; v < 2 * C; v++) sums[v] = (f64x4){0};
        for (int t = 0; t < a->length[j]; t++) {
            const f64x4 w = (f64x4){0} + (double)k[t];
            for (int v = 0; v < 2 * C; v++) sums[v] += *(const f64x4 *)(col + t * L + v * 4) * w;
        }
        for (int v = 0; v < 2 * C; v++) *(f64x4 *)(out64 + (size_t)j * L + v * 4) = sums[v];
    }
    for (Py_ssize_t i = 0; i < (Py_ssize_t)out_w * L; i++) out16[i] = clip16(out64[i]);
    for (int r = 0; r < rows; r++) {
        uint16_t *dst = (uint16_t *)(out + r * out_stride);
        for (int j = 0; j < out_w; j++) memcpy(dst + j * C, out16 + j * L + r * C, sizeof(uint16_t) * C);
    }
}

/* The horizontal pass's scratch for either depth (the other's pointers stay NULL). */
typedef struct {
    Band b8;
    Band16 b16;
} Scratch;

static void scratch_free(Scratch *s) {
    free(s->b8.in8);
    free(s->b8.in32);
    free(s->b8.out32);
    free(s->b8.out8);
    free(s->b16.in64);
    free(s->b16.out64);
    free(s->b16.out16);
}

static int scratch_init(Scratch *s, int in_w, int out_w, int C, int wide) {
    const size_t L = ROWS * C;
    if (wide) {
        s->b16.in64 = malloc(sizeof(double) * in_w * L);
        s->b16.out64 = malloc(sizeof(double) * out_w * L);
        s->b16.out16 = malloc(sizeof(uint16_t) * out_w * L);
        return s->b16.in64 && s->b16.out64 && s->b16.out16 ? 0 : -1;
    }
    s->b8.in8 = malloc(in_w * L);
    s->b8.in32 = malloc(sizeof(int32_t) * in_w * L);
    s->b8.out32 = malloc(sizeof(int32_t) * out_w * L);
    s->b8.out8 = malloc(out_w * L);
    return s->b8.in8 && s->b8.in32 && s->b8.out32 && s->b8.out8 ? 0 : -1;
}

/* One pass of either depth; strides and offsets in bytes, counts in samples. */
static void vertical(const uint8_t *in, Py_ssize_t in_stride, int offset, Py_ssize_t samples, uint8_t *out,
                     Py_ssize_t out_stride, const Axis *a, int wide) {
    if (wide) vertical_pass16(in, in_stride, offset, samples, out, out_stride, a);
    else vertical_pass(in, in_stride, offset, samples, out, out_stride, a);
}

/* The horizontal pass of either depth, ROWS rows at a time; C and the depth become constants of
 * each band function it calls. */
VECTOR_CLONES
static void horizontal(const uint8_t *in, Py_ssize_t in_stride, int rows, int in_w, int offset, int C, uint8_t *out,
                       Py_ssize_t out_stride, const Axis *a, const Scratch *s, int wide) {
    for (int y = 0; y < rows; y += ROWS) {
        const int n = rows - y < ROWS ? rows - y : ROWS;
        const uint8_t *src = in + y * in_stride;
        uint8_t *dst = out + y * out_stride;
        switch (C + 4 * wide) {
        case 1: horizontal_band(src, in_stride, n, in_w, offset, dst, out_stride, a, &s->b8, 1); break;
        case 2: horizontal_band(src, in_stride, n, in_w, offset, dst, out_stride, a, &s->b8, 2); break;
        case 3: horizontal_band(src, in_stride, n, in_w, offset, dst, out_stride, a, &s->b8, 3); break;
        case 4: horizontal_band(src, in_stride, n, in_w, offset, dst, out_stride, a, &s->b8, 4); break;
        case 5: horizontal_band16(src, in_stride, n, in_w, offset, dst, out_stride, a, &s->b16, 1); break;
        case 6: horizontal_band16(src, in_stride, n, in_w, offset, dst, out_stride, a, &s->b16, 2); break;
        case 7: horizontal_band16(src, in_stride, n, in_w, offset, dst, out_stride, a, &s->b16, 3); break;
        default: horizontal_band16(src, in_stride, n, in_w, offset, dst, out_stride, a, &s->b16, 4); break;
        }
    }
}

/* ---- premultiplied alpha: Image.resize converts LA / RGBA to La / RGBa and back ----------- */

/* Pillow's RGBA -> RGBa and LA -> La: colour = round(colour * alpha / 255), as MULDIV255; at 16
 * bits round(colour * alpha / 65535) (65535 is odd: never a tie). */
static void premultiply(const uint8_t *in, Py_ssize_t in_stride, int w, int h, int C, uint8_t *out, int wide) {
    for (int y = 0; y < h; y++) {
        const uint8_t *src = in + y * in_stride;
        if (wide) {
            const uint16_t *s = (const uint16_t *)src;
            uint16_t *d = (uint16_t *)out + (Py_ssize_t)y * w * C;
            for (int x = 0; x < w; x++, s += C, d += C) {
                const uint64_t alpha = s[C - 1];
                for (int c = 0; c < C - 1; c++) d[c] = (uint16_t)((s[c] * alpha + 32767) / 65535);
                d[C - 1] = (uint16_t)alpha;
            }
            continue;
        }
        uint8_t *dst = out + (Py_ssize_t)y * w * C;
        for (int x = 0; x < w; x++, src += C, dst += C) {
            const uint32_t alpha = src[C - 1];
            for (int c = 0; c < C - 1; c++) {
                const uint32_t t = src[c] * alpha + 128;
                dst[c] = (uint8_t)(((t >> 8) + t) >> 8);
            }
            dst[C - 1] = (uint8_t)alpha;
        }
    }
}

/* Pillow's RGBa -> RGBA and La -> LA: colour = min(top, top * colour / alpha), truncated, and
 * left as it is where alpha is 0 or top (255, or 65535 at 16 bits). In place. */
static void unpremultiply(uint8_t *p, Py_ssize_t pixels, int C, int wide) {
    if (wide) {
        uint16_t *q = (uint16_t *)p;
        for (Py_ssize_t i = 0; i < pixels; i++, q += C) {
            const uint64_t alpha = q[C - 1];
            if (alpha == 0 || alpha == 65535) continue;
            for (int c = 0; c < C - 1; c++) {
                const uint64_t v = 65535 * (uint64_t)q[c] / alpha;
                q[c] = (uint16_t)(v > 65535 ? 65535 : v);
            }
        }
        return;
    }
    for (Py_ssize_t i = 0; i < pixels; i++, p += C) {
        const uint32_t alpha = p[C - 1];
        if (alpha == 0 || alpha == 255) continue;
        for (int c = 0; c < C - 1; c++) {
            const uint32_t v = 255 * p[c] / alpha;
            p[c] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

/* ---- the resize: Pillow 13's pass order, only the rows or columns the second pass reads ---- */

/* 0 on success, -1 when out of memory. h and v are the axes' tables (read only); `wide`: 16-bit
 * samples. Strides are in bytes. */
static int resize_passes(const uint8_t *in, Py_ssize_t in_stride, int in_w, int in_h, int C, uint8_t *out,
                         int out_w, int out_h, const Axis *h, const Axis *v, int vertical_first_rule, int wide) {
    const Py_ssize_t size = wide ? 2 : 1, out_stride = (Py_ssize_t)out_w * C * size;
    const int vertical_first = vertical_first_rule && out_w != in_w && out_h < in_h &&
                               in_h - out_h > 2 * (in_w - out_w);
    Scratch scratch = {0};
    uint8_t *mid = NULL;
    int status = -1;
    if (out_w == in_w) {
        vertical(in, in_stride, 0, (Py_ssize_t)in_w * C, out, out_stride, v, wide);
    } else if (vertical_first) {
        /* Vertical over the columns the horizontal pass reads, then horizontal. */
        const int first = h->start[0], cols = h->start[out_w - 1] + h->length[out_w - 1] - first;
        const Py_ssize_t mid_stride = (Py_ssize_t)cols * C * size;
        if (!(mid = malloc((size_t)out_h * mid_stride)) || scratch_init(&scratch, cols, out_w, C, wide)) goto done;
        vertical(in + (Py_ssize_t)first * C * size, in_stride, 0, (Py_ssize_t)cols * C, mid, mid_stride, v, wide);
        horizontal(mid, mid_stride, out_h, cols, first, C, out, out_stride, h, &scratch, wide);
    } else if (out_h == in_h) {
        if (scratch_init(&scratch, in_w, out_w, C, wide)) goto done;
        horizontal(in, in_stride, in_h, in_w, 0, C, out, out_stride, h, &scratch, wide);
    } else {
        /* Horizontal over the rows the vertical pass reads, then vertical. */
        const int first = v->start[0], rows = v->start[out_h - 1] + v->length[out_h - 1] - first;
        if (!(mid = malloc((size_t)rows * out_stride)) || scratch_init(&scratch, in_w, out_w, C, wide)) goto done;
        horizontal(in + (Py_ssize_t)first * in_stride, in_stride, rows, in_w, 0, C, mid, out_stride, h, &scratch, wide);
        vertical(mid, out_stride, first, (Py_ssize_t)out_w * C, out, out_stride, v, wide);
    }
    status = 0;
done:
    free(mid);
    scratch_free(&scratch);
    return status;
}

/* The resize, with the last channel as alpha premultiplied around the passes when `alpha`. */
static int resize(const uint8_t *in, Py_ssize_t in_stride, int in_w, int in_h, int C, uint8_t *out, int out_w,
                  int out_h, const Axis *h, const Axis *v, int vertical_first_rule, int alpha, int wide) {
    const size_t row = (size_t)in_w * C * (wide ? 2 : 1);
    if (in_w == out_w && in_h == out_h) { /* Image.resize returns a copy, alpha untouched */
        for (int y = 0; y < in_h; y++) memcpy(out + y * row, in + y * in_stride, row);
        return 0;
    }
    if (!alpha) return resize_passes(in, in_stride, in_w, in_h, C, out, out_w, out_h, h, v, vertical_first_rule, wide);
    uint8_t *pre = malloc(in_h * row);
    if (!pre) return -1;
    premultiply(in, in_stride, in_w, in_h, C, pre, wide);
    const int status = resize_passes(pre, (Py_ssize_t)row, in_w, in_h, C, out, out_w, out_h, h, v,
                                     vertical_first_rule, wide);
    free(pre);
    if (status == 0) unpremultiply(out, (Py_ssize_t)out_w * out_h, C, wide);
    return status;
}

/* ---- tables kept between calls ---------------------------------------------------------------
 * A corpus asks for the same few sizes again and again, and a table costs a libm sin() per tap
 * (a tenth of an ImageNet thumbnail's time). Slots are filled and read under the GIL; a resize
 * that has released it holds its own reference-free copy of the pointers, so a slot is never
 * freed while in use: the cache only grows into a free slot or replaces one whose user count is 0. */

#define CACHED 64

typedef struct {
    int in_size, out_size, filter, users;
    Axis axis;
} Slot;

static Slot cache[CACHED];

/* The slot holding (in_size, out_size, filter)'s table, with its user count raised; NULL when out
 * of memory. Call with the GIL held; give it back with slot_release. */
static Slot *slot_acquire(int in_size, int out_size, int filter) {
    unsigned hash = ((unsigned)in_size * 2654435761u) ^ ((unsigned)out_size * 40503u) ^ (unsigned)filter;
    Slot *s = &cache[hash % CACHED];
    if (s->axis.k && s->in_size == in_size && s->out_size == out_size && s->filter == filter) {
        s->users++;
        return s;
    }
    Axis fresh;
    if (axis_init(&fresh, in_size, out_size, filter)) return NULL;
    if (s->users == 0) {
        axis_free(&s->axis);
        s->in_size = in_size, s->out_size = out_size, s->filter = filter, s->axis = fresh, s->users = 1;
        return s;
    }
    /* Busy (another thread's resize): a private slot, freed by slot_release. */
    Slot *own = malloc(sizeof(Slot));
    if (!own) return axis_free(&fresh), NULL;
    own->in_size = in_size, own->out_size = out_size, own->filter = filter, own->axis = fresh, own->users = -1;
    return own;
}

static void slot_release(Slot *s) {
    if (s->users < 0) {
        axis_free(&s->axis);
        free(s);
    } else {
        s->users--;
    }
}

/* ---- Python interface ----------------------------------------------------------------------- */

static int parse_filter(const char *name) {
    if (!strcmp(name, "nearest")) return NEAREST;
    if (!strcmp(name, "bilinear")) return BILINEAR;
    if (!strcmp(name, "bicubic")) return BICUBIC;
    if (!strcmp(name, "lanczos3")) return LANCZOS3;
    PyErr_Format(PyExc_ValueError, "unknown resize filter '%s'", name);
    return -1;
}

PyDoc_STRVAR(coefficients_doc,
             "coefficients(in_size, out_size, filter) -> (start, length, coeffs, ksize)\n\n"
             "One axis's tables as bytes of native int32: start and length per output pixel,\n"
             "coeffs out_size x ksize with 22 fraction bits, zero past each length.");

static PyObject *py_coefficients(PyObject *self, PyObject *args) {
    int in_size, out_size, filter;
    const char *name;
    if (!PyArg_ParseTuple(args, "iis", &in_size, &out_size, &name)) return NULL;
    if ((filter = parse_filter(name)) < 0) return NULL;
    if (in_size < 1 || out_size < 1)
        return PyErr_Format(PyExc_ValueError, "resample sizes must be >= 1, got %d -> %d", in_size, out_size);
    Axis a;
    if (axis_init(&a, in_size, out_size, filter)) return PyErr_NoMemory();
    PyObject *result = Py_BuildValue("(y#y#y#i)", (const char *)a.start, (Py_ssize_t)(sizeof(int) * out_size),
                                     (const char *)a.length, (Py_ssize_t)(sizeof(int) * out_size),
                                     (const char *)a.k, (Py_ssize_t)(sizeof(int32_t) * out_size * a.ksize),
                                     a.ksize);
    axis_free(&a);
    return result;
}

PyDoc_STRVAR(resize_doc,
             "resize(src, dst, filter, vertical_first_rule, alpha)\n\n"
             "Resize src, an (H, W, C) uint8 or uint16 buffer whose rows may be strided but whose\n"
             "pixels are packed, into dst, a C-contiguous (H', W', C) buffer of the same type, with C\n"
             "in 1..4. With alpha,\n"
             "the last channel is alpha and the colour is resized premultiplied, as Image.resize\n"
             "does for LA and RGBA. Releases the GIL.");

static PyObject *py_resize(PyObject *self, PyObject *args) {
    PyObject *src, *dst;
    const char *name;
    int rule, alpha, filter;
    if (!PyArg_ParseTuple(args, "OOspp", &src, &dst, &name, &rule, &alpha)) return NULL;
    if ((filter = parse_filter(name)) < 0) return NULL;
    Py_buffer in, out;
    if (PyObject_GetBuffer(src, &in, PyBUF_RECORDS_RO) < 0) return NULL;
    if (PyObject_GetBuffer(dst, &out, PyBUF_RECORDS) < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    PyObject *result = NULL;
    /* uint8 ("B") or uint16 ("H"), both the same; pixels packed, rows of any stride. */
    const int wide = in.itemsize == 2;
    if (in.ndim != 3 || out.ndim != 3 || strcmp(in.format, out.format) ||
        (strcmp(in.format, "B") && strcmp(in.format, "H")) || in.shape[2] != out.shape[2] || in.shape[2] < 1 ||
        in.shape[2] > 4 || in.strides[2] != in.itemsize || in.strides[1] != in.shape[2] * in.itemsize ||
        in.strides[0] < in.shape[1] * in.strides[1] || !PyBuffer_IsContiguous(&out, 'C') || in.shape[0] < 1 ||
        in.shape[1] < 1 || out.shape[0] < 1 || out.shape[1] < 1 || in.shape[0] > INT_MAX ||
        in.shape[1] > INT_MAX || out.shape[0] > INT_MAX || out.shape[1] > INT_MAX) {
        PyErr_SetString(PyExc_ValueError,
                        "resize takes (H, W, C) uint8 or uint16 buffers alike, C in 1..4, packed pixels");
        goto done;
    }
    const int in_w = (int)in.shape[1], in_h = (int)in.shape[0], out_w = (int)out.shape[1], out_h = (int)out.shape[0];
    Slot *h = slot_acquire(in_w, out_w, filter), *v = h ? slot_acquire(in_h, out_h, filter) : NULL;
    int status = -1;
    if (h && v) {
        Py_BEGIN_ALLOW_THREADS
        status = resize(in.buf, in.strides[0], in_w, in_h, (int)in.shape[2], out.buf, out_w, out_h, &h->axis,
                        &v->axis, rule, alpha && in.shape[2] >= 2, wide);
        Py_END_ALLOW_THREADS
    }
    if (h) slot_release(h);
    if (v) slot_release(v);
    if (status) PyErr_NoMemory();
    else result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"coefficients", py_coefficients, METH_VARARGS, coefficients_doc},
    {"resize", py_resize, METH_VARARGS, resize_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_resample", "Pillow 13's resize at 8 and 16 bits, vectorised.",
                                    -1, methods};

/* Which build of the passes this CPU runs: what `gpupipe doctor` reports. */
static const char *passes_build(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GPUPIPE_BASELINE_ONLY)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? "avx2" : "baseline";
#else
    return "baseline";
#endif
}

PyMODINIT_FUNC PyInit__resample(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddStringConstant(m, "PASSES", passes_build()) < 0) Py_CLEAR(m);
    return m;
}
