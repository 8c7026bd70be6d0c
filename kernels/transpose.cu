// transpose.cu — rotations by 90 and 270 degrees through shared-memory tiles
// (contract: gpupipe/backends/numpy/geometry.py, bit-exact).
//
// A rotation by 90 is a transpose: a thread per output pixel reads along an input column,
// so a warp's 32 reads touch 32 rows (14 % of an H100's bandwidth with gp_rotate). Here a
// block takes one GP_TILE x GP_TILE tile of the output: its threads read the matching input
// rectangle row by row into shared memory, meet at __syncthreads, then write the tile row by
// row from it. Both global passes are contiguous; the transpose happens in shared memory.
//
// Launch: any grid and block (the loops stride over images, tiles and the tile's pixels);
// the backend gives each block one tile (256 threads x GP_PIXELS_PER_THREAD = 1024 = 32 x 32).
// Every thread of a block runs the same number of tile rounds, so each __syncthreads is
// reached by all of them (the CPU shim aborts on a barrier some threads skip).
#include "gpupipe.cuh"

#define GP_TILE 32

// rotate clockwise by `degrees` (90 or 270); out size (height, width).
//   90:  out[oy, ox] = in[H-1-ox, oy]        270: out[oy, ox] = in[ox, W-1-oy]
extern "C" __global__ void gp_rotate_tiled(const unsigned char* __restrict__ src, unsigned char* __restrict__ dst,
                                           const ImageDesc* __restrict__ descs, int n_images, int degrees) {
    // One tile of pixels of up to 8 bytes (4 channels of 16 bits, see geometry.cu); rows padded by
    // 4 bytes so that the 32 rows a warp reads down one column start in 32 different banks.
    __shared__ unsigned char tile[GP_TILE][GP_TILE * 8 + 4];
    GP_FOR_EACH_IMAGE(i, n_images) {
        const ImageDesc d = descs[i];
        const int channels = d.channels;
        const int tiles_x = (d.out_width + GP_TILE - 1) / GP_TILE;
        const int tiles = tiles_x * ((d.out_height + GP_TILE - 1) / GP_TILE);
        for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
            const int ox0 = (t % tiles_x) * GP_TILE, oy0 = (t / tiles_x) * GP_TILE;
            // The input rectangle this output tile comes from (rows sy0.., columns sx0..); at the
            // image's edges part of it lies outside and is neither read nor needed.
            const int sx0 = degrees == 90 ? oy0 : d.width - oy0 - GP_TILE;
            const int sy0 = degrees == 90 ? d.height - ox0 - GP_TILE : ox0;
            for (int k = threadIdx.x; k < GP_TILE * GP_TILE; k += blockDim.x) {
                const int r = k / GP_TILE, c = k % GP_TILE;
                const int sx = sx0 + c, sy = sy0 + r;
                if (sx >= 0 && sy >= 0 && sx < d.width && sy < d.height) {
                    const unsigned char* s = src + d.in_offset + ((long long)sy * d.width + sx) * channels;
                    GP_FOR_BYTES(q, channels) tile[r][c * channels + q] = s[q];
                }
            }
            __syncthreads();
            for (int k = threadIdx.x; k < GP_TILE * GP_TILE; k += blockDim.x) {
                const int r = k / GP_TILE, c = k % GP_TILE;
                const int ox = ox0 + c, oy = oy0 + r;
                if (ox < d.out_width && oy < d.out_height) {
                    // 90: input row H-1-ox is tile row GP_TILE-1-c, column oy is tile column r;
                    // 270: input row ox is tile row c, column W-1-oy is tile column GP_TILE-1-r.
                    const int tr = degrees == 90 ? GP_TILE - 1 - c : c;
                    const int tc = degrees == 90 ? r : GP_TILE - 1 - r;
                    unsigned char* o = dst + d.out_offset + ((long long)oy * d.out_width + ox) * channels;
                    GP_FOR_BYTES(q, channels) o[q] = tile[tr][tc * channels + q];
                }
            }
            __syncthreads();                  // every read of the tile is done before the next round loads it
        }
    }
}
