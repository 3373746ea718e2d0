// What the two seesaw kernels (decode_sm90_seesaw.cu on 32-token tiles, decode_sm90_seesaw64.cu
// on 64-token ones) share: a warpgroup's view of the sequence piece, the softmax steps of a tile
// (N = 2 NS tokens a tile, NS scores a thread), the V tail zeroing and the epilogue. Include after
// params.cuh, ptx.cuh, sm90.cuh, epilogue.cuh and piece.cuh.
#pragma once

// MLA_MAX_SLACK: see next_max().
#ifndef MLA_MAX_SLACK
#define MLA_MAX_SLACK 8.0f
#endif

// What a warpgroup needs of the current sequence piece and of its thread.
struct Ctx {
    int start, n, load_end, k0;   // first token, tiles, load end, global index of tile 0
    int tq;                       // thread in its quad
    int row[2];                   // this thread's two rows of the m tile
    int limit[2];                 // their first invisible token
    float scale_log2;
};

// The running maximum a row's probabilities are taken against, after a tile whose maximum is mx
// (log2 domain). It moves only when the tile's maximum exceeds it by more than MLA_MAX_SLACK:
// probabilities then stay below 2^slack (bf16/fp16 and the fp32 sums hold that easily), and most
// tiles rescale nothing, so scale_o's 128 multiplies a thread are skipped (with slack 0, the
// random benchmark data moved some row of a warp on about half of the tiles).
__device__ __forceinline__ float next_max(float m_old, float mx) {
    return mx > m_old + MLA_MAX_SLACK ? mx : m_old;
}

// Mask a tile's scores (tokens t0 .. t0 + 2 NS - 1) and scale them to the log2 domain; return
// the running maxima of this thread's two rows after the tile (next_max; the 4 threads of a quad
// share a row and agree on it). Most tiles move no maximum of a warp: a vote finds out, and the
// shuffles for the quads' maxima run only when one might (they queue behind the other
// warpgroup's scores for the shared-memory pipe: ~500 clocks, measured with MLA_TRACE).
template <int NS>
__device__ __forceinline__ void mask_and_max(float (&s)[NS], float (&m_new)[2], const float (&m_old)[2], int t0,
                                             const Ctx& c) {
    float mx[2];
    mask_scores(s, mx, t0, c.tq, c.limit, c.scale_log2);
    m_new[0] = m_old[0];
    m_new[1] = m_old[1];
    if (__any_sync(0xffffffffu, mx[0] > m_old[0] + MLA_MAX_SLACK || mx[1] > m_old[1] + MLA_MAX_SLACK)) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
            m_new[h] = next_max(m_old[h], mx[h]);
        }
    }
}

// s = exp2(s - base) per row, added to the row sums.
template <int NS>
__device__ __forceinline__ void exp_rows(float (&s)[NS], const float (&base)[2], float (&sum)[2]) {
#pragma unroll
    for (int i = 0; i < NS; ++i) {
        const int h = (i / 2) % 2;
        s[i] = fast_exp2(s[i] - base[h]);
        sum[h] += s[i];
    }
}

// Rows [valid, ROWS) of one 256-column half of a tile (ROWS tokens, 128-byte swizzle) were not
// loaded or hold the garbage tail of the last page (maybe NaN, and 0 * NaN would reach O): zero
// them before the calling warpgroup's product; `bar` is a named barrier of its 128 threads.
// Called only after the tile's scores are done (they mask those rows anyway).
template <int ROWS>
__device__ __forceinline__ void zero_v_tail(u16* sk, int half, int valid, int bar) {
    if (valid >= ROWS) return;
    valid = max(valid, 0);
    const uint4 z = make_uint4(0, 0, 0, 0);
    for (int c = threadIdx.x % 128; c < (ROWS - valid) * 32; c += 128) {
        const int r = valid + c / 32, col = 256 * half + (c % 32) * 8;
        *reinterpret_cast<uint4*>(sk + swz(ROWS, r, col)) = z;
    }
    fence_proxy_async();
    bar_sync(bar, 128);
}

// Epilogue, first step: each warpgroup's row sums into row_sum[wg] (both halves of O are relative
// to the final maxima), then a barrier of both consumer warpgroups (`bar`, `threads`).
__device__ __forceinline__ void add_row_sums(float (&row_sum)[2][64], const Ctx& c, const float (&lsum)[2], int wg,
                                             int bar, int threads) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float l = lsum[h];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        if (c.tq == 0) row_sum[wg][c.row[h]] = l;
    }
    bar_sync(bar, threads);
}

// MLA_OUT8: a sequence covered whole is stored 8 bytes a lane (see store_rows), else 4: whole
// 32-byte sectors, 2.4-4.5% faster on batches of equal 4K / 2K sequences, ~1% on the benchmark's
// h_q128 rows (bench/NOTES.md, session 9).
#ifndef MLA_OUT8
#define MLA_OUT8 1
#endif

// Epilogue, second step: this thread's values of O (warpgroup wg's 256 columns) normalised, to
// `out` for a sequence covered whole, else to its piece's slot; warpgroup 0 writes the lse.
__device__ __forceinline__ void store_rows(const DecodeParams& p, const float (&row_sum)[2][64],
                                           const float (&row_max)[64], const Ctx& c, const float (&o)[128],
                                           const Piece& pc, int b, int g, int m0, int wg) {
    const bool whole = pc.pieces <= 1;
    const int slot = whole ? 0 : accum_slot(p.num_splits, b, pc.split);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float l = row_sum[0][c.row[h]] + row_sum[1][c.row[h]];
        const int row = m0 + c.row[h];
        if (MLA_OUT8 && (whole || MLA_ACC16)) {
            const bool valid = row < p.rows;
            float inv, lse;
            finish_row(row_max[c.row[h]], l, whole, inv, lse);
            // 16-bit output: neighbouring lanes of a quad swap one value pair, so that each
            // stores 4 neighbouring values (8 bytes) and the quad 32 contiguous bytes of the row,
            // whole sectors instead of 16-byte halves (the shuffles run on every lane).
            const RowOut d = row_out(p, b, g, valid ? row : m0, whole, slot, 256 * wg);
            u16* base = reinterpret_cast<u16*>(d.out);
            const bool even = (c.tq & 1) == 0;
#pragma unroll
            for (int j = 0; j < 32; j += 2) {
                const u32 lo = pack2(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);            // 8j + 2tq
                const u32 hi = pack2(o[4 * j + 4 + 2 * h] * inv, o[4 * j + 4 + 2 * h + 1] * inv);    // 8j + 8 + 2tq
                const u32 got = __shfl_xor_sync(0xffffffffu, even ? hi : lo, 1);
                const int col = even ? 8 * j + 2 * c.tq : 8 * j + 8 + 2 * (c.tq - 1);
                if (valid) *reinterpret_cast<uint2*>(base + col) = even ? make_uint2(lo, got) : make_uint2(got, hi);
            }
            if (valid && wg == 0 && c.tq == 0) *d.lse = lse;
            continue;
        }
        if (row >= p.rows) continue;
        float inv, lse;
        finish_row(row_max[c.row[h]], l, whole, inv, lse);
        const RowOut d = row_out(p, b, g, row, whole, slot, 256 * wg + 2 * c.tq);
#pragma unroll
        for (int j = 0; j < 32; ++j) store_pair(d, j, o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
        if (wg == 0 && c.tq == 0) *d.lse = lse;
    }
}
