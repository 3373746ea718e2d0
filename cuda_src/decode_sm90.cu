// Hopper (sm_90a) paged MLA decode: wgmma + TMA, two warpgroups in a seesaw.
//
// Same contract, grid and scheduler as decode_sm80.cu: one CTA per (m tile of 64 query rows,
// kv head, part); sequences the part covers whole go to `out`, pieces of split ones to
// o_accum / lse_accum for combine.cu. Needs a tensor map over k_cache (k_box_rows > 0); the
// host takes the portable kernel when there is none.
//
// Why a seesaw: when both warpgroups work on the same 64-token tile they also do its softmax
// at the same time, and the tensor cores idle meanwhile (v5: 45% tensor-active). Here the tiles
// of a piece go in pairs (A, B). Warpgroup 0 computes the scores of A, warpgroup 1 those of B,
// and each owns half of the output (O_L = O[:, 0:256] in WG0, O_R = O[:, 256:512] in WG1), so
// one warpgroup's softmax runs while the other's products keep the tensor cores busy:
//
//   WG0: softmax A | O_L += P_A V_A,L | wait scale of B | O_L += P_B V_B,L | S_A' = Q K_A'^T
//   WG1: wait max of A | softmax B | O_R += P_B V_B,R | O_R += P_A V_A,R | S_B' = Q K_B'^T
//
// Each warpgroup multiplies its own P from registers and the other's from shared memory. The
// running row maxima live in shared memory: WG0 folds in A's (scale0 = how much the old
// ones shrink), then WG1 folds in B's (scale1); WG0 hands P_A over already rescaled by scale1.
//
// Loads: TMA boxes (k_box_rows tokens x 64 columns, 128-byte swizzle), one mbarrier per tile
// and 64-column slice, so the scores start on the slices that have landed. A slice is refilled
// with the tile two ahead as soon as the last product reading it is done: the rope slice (8)
// right after the scores, V's left half (slices 0-3, read only by WG0) after WG0's P V, the
// right half after WG1's. The scores read the slices in that order.
//
// Shared memory (d = 576): q 72 KB + two K tiles 144 KB + P_A 8 KB = 224 KB. P_B goes into q's
// rope slice, whose values every thread keeps in registers (16) once q has landed.
//
// Compile-time configuration: MLA_FP16 (0 = bf16, 1 = fp16), MLA_HEAD_DIM (576 or 512).
#include "common/params.cuh"
#include "common/ptx.cuh"
#include "common/sm90.cuh"
#include "common/epilogue.cuh"

#ifndef MLA_HEAD_DIM
#define MLA_HEAD_DIM 576
#endif

namespace {

constexpr int D = MLA_HEAD_DIM;
constexpr int BLOCK_M = 64;
constexpr int BLOCK_N = 64;
constexpr int THREADS = 256;
constexpr int SCHED_BLOCK = 64;
constexpr int SLICES = D / 64;               // 64-column slices of a row
constexpr int SLICE = 64 * 64;               // elements in one slice of a 64-row tile
constexpr bool ROPE = D > 512;               // slice 8: only the scores read it
// Byte offsets of the V operand's descriptor (MN-major, 128B swizzle): between 64-column
// slices (LBO) and between groups of 8 tokens (SBO).
constexpr u32 V_LBO = 64 * 128, V_SBO = 8 * 128;
constexpr int MAX_PAGES = BLOCK_N / 16;      // k_box_rows >= 16

// Named barriers (0 is __syncthreads): one warpgroup arrives, the other waits.
constexpr int BAR_SCALE0 = 1;   // WG0 has folded A's maxima into row_max, scale0 written
constexpr int BAR_SCALE1 = 2;   // WG1 has folded B's maxima, scale1 written
constexpr int BAR_P_A = 3;      // P_A (rescaled to B's maxima) is in shared memory
constexpr int BAR_P_B = 4;      // P_B is in shared memory
constexpr int BAR_WG = 5;       // + warpgroup: its own 128 threads

typedef u16 elem_t;

struct Smem {
    elem_t q[SLICES * SLICE];
    elem_t k[2][SLICES * SLICE];
    elem_t p_a[SLICE];
    elem_t p_b[ROPE ? 8 : SLICE];            // d = 576: P_B lives in q's rope slice instead
    float row_max[BLOCK_M];                  // running maxima, log2 domain
    float scale0[BLOCK_M], scale1[BLOCK_M];
    float row_sum[2][BLOCK_M];
    unsigned long long k_full[2][SLICES];    // slice c of buffer s has landed
    int pages[2][2][MAX_PAGES];              // page numbers of pair k's tiles A, B: [k % 2]
};

// Element offset of (row, col) of a 64-row tile in the swizzled layout: every 64-column slice
// is a block of 128-byte rows whose 16-byte pieces are permuted by row % 8.
__device__ __forceinline__ int swz(int row, int col) {
    return (col / 64) * SLICE + row * 64 + ((((col % 64) / 8) ^ (row & 7)) * 8) + (col % 8);
}

__device__ __forceinline__ void load_q(const DecodeParams& p, elem_t* sq, int b, int g, int m0) {
    const elem_t* q = static_cast<const elem_t*>(p.q);
    for (int c = threadIdx.x; c < BLOCK_M * (D / 8); c += THREADS) {
        const int r = c / (D / 8), col = (c % (D / 8)) * 8;
        const int row = m0 + r;
        const bool valid = row < p.rows;
        const int s = valid ? row / p.heads_per_kv : 0;
        const int h = g * p.heads_per_kv + (valid ? row % p.heads_per_kv : 0);
        const elem_t* src = q + b * p.q_stride_b + s * p.q_stride_s + h * p.q_stride_h + col;
        cp_async16(sq + swz(r, col), valid ? src : q, valid);
    }
}

// Page numbers of the boxes of the tile at t0 (read ahead of the copies: they are global loads).
// Tokens at or past `load_end` are never asked for: their block-table entries may be garbage.
__device__ __forceinline__ void fetch_pages(const DecodeParams& p, int (&pages)[MAX_PAGES], int b, int t0, int load_end) {
    const int* bt = p.block_table + b * p.bt_stride_b;
#pragma unroll
    for (int i = 0; i < MAX_PAGES; ++i) {
        const int t = t0 + i * p.k_box_rows;
        pages[i] = i * p.k_box_rows < BLOCK_N && t < load_end ? bt[t >> p.page_shift] : 0;
    }
}

// Ask the copy engine for slices [c0, c1) of the tile at t0, each completing on its own barrier.
// An out-of-range page number reads zeros. Rows past load_end are not loaded (see zero_v_tail).
__device__ __forceinline__ void issue_k(const DecodeParams& p, const int* pages, elem_t* sk,
                                        unsigned long long* bars, int g, int t0, int load_end, int c0, int c1) {
    const int rows = p.k_box_rows, page_mask = (1 << p.page_shift) - 1;
    int boxes = 0;
    for (int r0 = 0; r0 < BLOCK_N && t0 + r0 < load_end; r0 += rows) ++boxes;
    for (int c = c0; c < c1; ++c) {
        mbar_arrive_expect_tx(&bars[c], boxes * rows * 128);
#pragma unroll
        for (int i = 0; i < MAX_PAGES; ++i) {
            const int r0 = i * rows;
            if (r0 >= BLOCK_N || t0 + r0 >= load_end) break;
            tma_load_4d(sk + c * SLICE + r0 * 64, &p.k_map, &bars[c], c * 64, g, (t0 + r0) & page_mask, pages[i]);
        }
    }
}

// V rows [valid, 64) of one half (256 columns) of a tile were not loaded or hold the garbage
// tail of the last page (maybe NaN, and 0 * NaN would reach O): zero them before the product.
// Their scores are masked, so the scores may read them first. Uniform over the warpgroup.
__device__ __forceinline__ void zero_v_tail(elem_t* sk, int half, int valid, int wg) {
    if (valid >= BLOCK_N) return;
    valid = max(valid, 0);
    const uint4 z = make_uint4(0, 0, 0, 0);
    for (int c = threadIdx.x % 128; c < (BLOCK_N - valid) * 32; c += 128) {
        const int r = valid + c / 32, col = 256 * half + (c % 32) * 8;
        *reinterpret_cast<uint4*>(sk + swz(r, col)) = z;
    }
    fence_proxy_async();
    bar_sync(BAR_WG + wg, 128);
}

// s (+)= Q K^T over slices [C0, C1) of a tile, each after its barrier; the rope slice takes Q
// from registers (q8). `first`: the first step overwrites s.
template <int C0, int C1>
__device__ __forceinline__ void scores(float (&s)[32], u64 desc_q, u64 desc_k, const u32 (&q8)[4][4],
                                       unsigned long long* bars, u32 parity, bool first) {
#pragma unroll
    for (int c = C0; c < C1; ++c) {
        mbar_wait(&bars[c], parity);
        wgmma_fence();   // after a wait loop ptxas wants one anyway (it would insert it itself)
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            const u64 off = (u64)((c * SLICE * 2 + kk * 32) >> 4);   // slice, then 16 columns
            const int acc = !(first && c == C0 && kk == 0);
            if (ROPE && c == 8) wgmma_m64n64k16_rs<0>(s, q8[kk], desc_k + off, acc);
            else wgmma_m64n64k16_ss<0>(s, desc_q + off, desc_k + off, acc);
        }
    }
}

// The scores of warpgroup WG's tile (buffer WG), slices in the order their refills were issued:
// the rope slice (refilled right after the scores), then V's halves, the one this warpgroup
// frees first first. WG0 issues them in two commit groups (PART 1: rope + left half, PART 2:
// right half) so that it can refill B's left half in between instead of behind a wait for
// slices WG1 refills last (v8 profile: that chain stalled both warpgroups).
template <int WG, int PART>
__device__ __forceinline__ void all_scores(Smem& sm, float (&s)[32], const u32 (&q8)[4][4], u32 parity) {
    const u64 desc_q = smem_desc(sm.q, 16, 1024), desc_k = smem_desc(sm.k[WG], 16, 1024);
    unsigned long long* bars = sm.k_full[WG];
    if (PART != 2 && ROPE) scores<8, SLICES>(s, desc_q, desc_k, q8, bars, parity, true);
    if (WG == 0) {
        if (PART != 2) scores<0, 4>(s, desc_q, desc_k, q8, bars, parity, !ROPE);
        if (PART != 1) scores<4, 8>(s, desc_q, desc_k, q8, bars, parity, false);
    } else {
        scores<4, 8>(s, desc_q, desc_k, q8, bars, parity, !ROPE);
        scores<0, 4>(s, desc_q, desc_k, q8, bars, parity, false);
    }
    wgmma_commit();
}

// Mask a tile's scores (tokens t0 ..; this thread: rows h = 0, 1, 16 tokens), scale them to the
// log2 domain and return the row maxima over the whole tile (the 4 threads of a quad share a row).
__device__ __forceinline__ void mask_and_max(float (&s)[32], float (&mx)[2], int t0, const int (&limit)[2],
                                             float scale_log2, int tq) {
    mx[0] = mx[1] = -inf_f();
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int t = t0 + 8 * j + 2 * tq + e;
                float& v = s[4 * j + 2 * h + e];
                v = t < limit[h] ? v * scale_log2 : -inf_f();
                mx[h] = fmaxf(mx[h], v);
            }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    }
}

// s = exp2(s - base) per row; adds the row's values to sum.
__device__ __forceinline__ void exp_rows(float (&s)[32], const float (&base)[2], float (&sum)[2]) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                float& v = s[4 * j + 2 * h + e];
                v = fast_exp2(v - base[h]);
                sum[h] += v;
            }
}

// P (fp32, accumulator layout, rows scaled by f) as the A operand of a 64x16 k step from
// registers: the accumulator and A-fragment layouts line up, 8 values per k step.
__device__ __forceinline__ void pack_p(const float (&s)[32], const float (&f)[2], u32 (&a)[4][4]) {
#pragma unroll
    for (int kt = 0; kt < 4; ++kt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int h = i % 2;
            a[kt][i] = pack2(s[8 * kt + 2 * i] * f[h], s[8 * kt + 2 * i + 1] * f[h]);
        }
}

// Rows of a packed P fragment times f (WG0 hands P_A over in 16 bits only: keeping it in fp32
// too would cost 32 registers across its product, and the kernel is at 255).
__device__ __forceinline__ void rescale_p(u32 (&a)[4][4], const float (&f)[2]) {
#pragma unroll
    for (int kt = 0; kt < 4; ++kt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float lo, hi;
            unpack2(a[kt][i], lo, hi);
            a[kt][i] = pack2(lo * f[i % 2], hi * f[i % 2]);
        }
}

// The same fragment into a 64 x 64 swizzled tile, for the other warpgroup's product.
__device__ __forceinline__ void store_p(elem_t* sp, const u32 (&a)[4][4], const int (&row)[2], int tq) {
#pragma unroll
    for (int kt = 0; kt < 4; ++kt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
            *reinterpret_cast<u32*>(sp + swz(row[i % 2], 16 * kt + 8 * (i / 2) + 2 * tq)) = a[kt][i];
}

__device__ __forceinline__ void scale_o(float (&o)[128], const float (&f)[2]) {
    // Once the maxima settle most tiles move none: skip 128 multiplies (warp-uniform test).
    if (!__any_sync(0xffffffffu, f[0] != 1.f || f[1] != 1.f)) return;
#pragma unroll
    for (int j = 0; j < 32; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            o[4 * j + 2 * h] *= f[h];
            o[4 * j + 2 * h + 1] *= f[h];
        }
}

// What a warpgroup's pair step needs of its sequence piece and thread.
struct Ctx {
    int b, g, start, n, load_end;
    int tid, tq;            // thread in the warpgroup, and in its quad
    int row[2];             // this thread's two rows of the tile
    int limit[2];           // their first invisible token (causal / piece end)
};

// O += P V for one 256-column half of V, P (64 x 64) from registers or from shared memory. The
// descriptors come from compile-time offsets of the shared window: uniform registers, not the
// per-wgmma register moves (R2UR) that runtime-selected ones cost (v8 profile: ~10% of issue).
template <int HALF>
__device__ __forceinline__ void pv_regs(float (&o)[128], const u32 (&a)[4][4], const elem_t* sk) {
    const u64 desc_v = smem_desc(sk + 4 * HALF * SLICE, V_LBO, V_SBO);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) wgmma_m64n256k16_rs<1>(o, a[kt], desc_v + kt * 128, 1);   // 16 tokens a step
    wgmma_commit();
}
template <int HALF>
__device__ __forceinline__ void pv_smem(float (&o)[128], const elem_t* sp, const elem_t* sk) {
    const u64 desc_p = smem_desc(sp, 16, 1024), desc_v = smem_desc(sk + 4 * HALF * SLICE, V_LBO, V_SBO);
    wgmma_fence();
#pragma unroll
    for (int kt = 0; kt < 4; ++kt) wgmma_m64n256k16_ss<1>(o, desc_p + kt * 2, desc_v + kt * 128, 1);
    wgmma_commit();
}

__device__ __forceinline__ elem_t* p_b_buf(Smem& sm) { return ROPE ? sm.q + 8 * SLICE : sm.p_b; }

// Warpgroup 0's share of the pair (A = tile it, B = tile it + 1): softmax A, O_L += P_A V_A,L,
// hand P_A over, O_L += P_B V_B,L, the scores of the next A. s holds A's scores on entry and the
// next A's on exit.
__device__ __forceinline__ void wg0_pair(const DecodeParams& p, Smem& sm, const Ctx& c, int it, float (&o)[128],
                                         float (&s)[32], float (&lsum)[2], const u32 (&q8)[4][4], u32& fills) {
    const int ta = c.start + it * BLOCK_N, tb = ta + BLOCK_N;
    const bool has_b = it + 1 < c.n, next_a = it + 2 < c.n, next_b = it + 3 < c.n;
    const int* pages_a = sm.pages[(it / 2 + 1) % 2][0];   // the next pair's page numbers
    const int* pages_b = sm.pages[(it / 2 + 1) % 2][1];

    // Softmax of A against the running maxima; scale0 tells WG1 how much O_R shrinks.
    float mx[2], base[2], sc0[2], sc1[2] = {1.f, 1.f};
    mask_and_max(s, mx, ta, c.limit, p.scale_log2, c.tq);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float m_old = sm.row_max[c.row[h]];
        const float m_new = fmaxf(m_old, mx[h]);
        base[h] = m_new == -inf_f() ? 0.f : m_new;   // no key seen yet: avoid inf - inf
        sc0[h] = fast_exp2(m_old - base[h]);
        lsum[h] *= sc0[h];
        __syncwarp();
        if (c.tq == 0) {
            sm.row_max[c.row[h]] = m_new;
            sm.scale0[c.row[h]] = sc0[h];
        }
    }
    bar_arrive(BAR_SCALE0, THREADS);
    if (ROPE && c.tid == 0 && next_a)   // the scores were the rope slice's only reader
        issue_k(p, pages_a, sm.k[0], sm.k_full[0], c.g, ta + 2 * BLOCK_N, c.load_end, 8, SLICES);
    exp_rows(s, base, lsum);
    scale_o(o, sc0);
    u32 pa[4][4];
    const float one[2] = {1.f, 1.f};
    pack_p(s, one, pa);

    // O_L += P_A V_A,L; then V_A,L is free for the tile two ahead.
    zero_v_tail(sm.k[0], 0, c.load_end - ta, 0);
    pv_regs<0>(o, pa, sm.k[0]);
    wgmma_wait<0>();
    reg_fence(o);
    for (int kt = 0; kt < 4; ++kt) reg_fence(pa[kt]);
    if (c.tid == 0 && next_a) issue_k(p, pages_a, sm.k[0], sm.k_full[0], c.g, ta + 2 * BLOCK_N, c.load_end, 0, 4);

    // P_A for WG1, rescaled to the maxima after B.
    if (has_b) {
        bar_sync(BAR_SCALE1, THREADS);
        for (int h = 0; h < 2; ++h) sc1[h] = sm.scale1[c.row[h]];
        rescale_p(pa, sc1);
    }
    store_p(sm.p_a, pa, c.row, c.tq);
    fence_proxy_async();
    bar_arrive(BAR_P_A, THREADS);

    if (has_b) {   // O_L = O_L x scale1 + P_B V_B,L
        bar_sync(BAR_P_B, THREADS);
        scale_o(o, sc1);
        for (int h = 0; h < 2; ++h) lsum[h] *= sc1[h];
        zero_v_tail(sm.k[1], 0, c.load_end - tb, 0);
        pv_smem<0>(o, p_b_buf(sm), sm.k[1]);
    }
    // The scores of the next A, while P_B V_B,L runs: first the slices refilled early.
    if (next_a) all_scores<0, 1>(sm, s, q8, fills & 1);
    if (has_b) {   // P_B V_B,L done: V_B,L is free
        if (next_a) wgmma_wait<1>();
        else wgmma_wait<0>();
        reg_fence(o);
        if (c.tid == 0 && next_b) issue_k(p, pages_b, sm.k[1], sm.k_full[1], c.g, tb + 2 * BLOCK_N, c.load_end, 0, 4);
    }
    if (next_a) {   // then the right half, refilled by WG1 at the end of its pair
        all_scores<0, 2>(sm, s, q8, fills & 1);
        ++fills;
    }
    // Page numbers of the pair after next, into the slot this pair's refills no longer need; the
    // global loads overlap the wait for the scores (WG1 reads them after the next BAR_SCALE0).
    int ahead[2][MAX_PAGES];
    const bool fetch = c.tid == 0 && it + 4 < c.n;
    if (fetch) {
        fetch_pages(p, ahead[0], c.b, ta + 4 * BLOCK_N, c.load_end);
        fetch_pages(p, ahead[1], c.b, tb + 4 * BLOCK_N, c.load_end);
    }
    wgmma_wait<0>();
    if (fetch) {
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
            for (int i = 0; i < MAX_PAGES; ++i) sm.pages[(it / 2) % 2][t][i] = ahead[t][i];
    }
    reg_fence(s);
    reg_fence(o);
}

// Warpgroup 1's share: softmax B against A's maxima, O_R += P_B V_B,R, O_R += P_A V_A,R, the
// scores of the next B. s holds B's scores on entry (if there is a B) and the next B's on exit.
__device__ __forceinline__ void wg1_pair(const DecodeParams& p, Smem& sm, const Ctx& c, int it, float (&o)[128],
                                         float (&s)[32], float (&lsum)[2], const u32 (&q8)[4][4], u32& fills) {
    const int ta = c.start + it * BLOCK_N, tb = ta + BLOCK_N;
    const bool has_b = it + 1 < c.n, next_a = it + 2 < c.n, next_b = it + 3 < c.n;
    const int* pages_a = sm.pages[(it / 2 + 1) % 2][0];
    const int* pages_b = sm.pages[(it / 2 + 1) % 2][1];

    // O_R shrinks by scale0 x scale1.
    bar_sync(BAR_SCALE0, THREADS);
    float f[2];
    for (int h = 0; h < 2; ++h) f[h] = sm.scale0[c.row[h]];
    u32 pb[4][4];
    if (has_b) {
        float mx[2], base[2];
        mask_and_max(s, mx, tb, c.limit, p.scale_log2, c.tq);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float m_a = sm.row_max[c.row[h]];
            const float m_new = fmaxf(m_a, mx[h]);
            base[h] = m_new == -inf_f() ? 0.f : m_new;
            const float sc1 = fast_exp2(m_a - base[h]);
            f[h] *= sc1;
            __syncwarp();
            if (c.tq == 0) {
                sm.row_max[c.row[h]] = m_new;
                sm.scale1[c.row[h]] = sc1;
            }
        }
        bar_arrive(BAR_SCALE1, THREADS);
        if (ROPE && c.tid == 0 && next_b)
            issue_k(p, pages_b, sm.k[1], sm.k_full[1], c.g, tb + 2 * BLOCK_N, c.load_end, 8, SLICES);
        for (int h = 0; h < 2; ++h) lsum[h] *= f[h];
        exp_rows(s, base, lsum);
        const float one[2] = {1.f, 1.f};
        pack_p(s, one, pb);
        store_p(p_b_buf(sm), pb, c.row, c.tq);
        fence_proxy_async();
        bar_arrive(BAR_P_B, THREADS);
        scale_o(o, f);

        // O_R += P_B V_B,R
        zero_v_tail(sm.k[1], 1, c.load_end - tb, 1);
        pv_regs<1>(o, pb, sm.k[1]);
    } else {
        for (int h = 0; h < 2; ++h) lsum[h] *= f[h];
        scale_o(o, f);
    }

    // O_R += P_A V_A,R
    bar_sync(BAR_P_A, THREADS);
    zero_v_tail(sm.k[0], 1, c.load_end - ta, 1);
    pv_smem<1>(o, sm.p_a, sm.k[0]);
    if (has_b) {   // P_B V_B,R done: V_B,R is free
        wgmma_wait<1>();
        for (int kt = 0; kt < 4; ++kt) reg_fence(pb[kt]);
        if (c.tid == 0 && next_b) issue_k(p, pages_b, sm.k[1], sm.k_full[1], c.g, tb + 2 * BLOCK_N, c.load_end, 4, 8);
    }
    wgmma_wait<0>();
    reg_fence(o);
    if (c.tid == 0 && next_a) issue_k(p, pages_a, sm.k[0], sm.k_full[0], c.g, ta + 2 * BLOCK_N, c.load_end, 4, 8);

    if (next_b) {
        all_scores<1, 0>(sm, s, q8, fills & 1);
        wgmma_wait<0>();
        reg_fence(s);
        ++fills;
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(THREADS, 1) mla_decode_sm90(const __grid_constant__ DecodeParams p) {
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    // The dynamic shared window is only guaranteed 16-byte alignment: round up to 1024 for the
    // swizzle. Offsetting the __shared__ array itself (not an integer cast of its address) lets
    // the compiler keep shared-memory accesses as such instead of generic 64-bit ones.
    Smem& sm = *reinterpret_cast<Smem*>(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
    {   // The host sizes the window (kernels.DecodeConfig.smem_bytes) and must bring a tensor map.
        u32 window;
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(window));
        if ((size_t)(reinterpret_cast<unsigned char*>(&sm) - smem_raw) + sizeof(Smem) > window || p.k_box_rows < 16)
            __trap();
    }

    const int m0 = blockIdx.x * BLOCK_M;
    const int g = blockIdx.y;
    const int part = blockIdx.z;
    // The warpgroup index, provably uniform for ptxas (a shuffle result): otherwise it treats the
    // warpgroup branches as divergent and serialises their wgmmas.
    const int wg = __shfl_sync(0xffffffffu, threadIdx.x / 128, 0), tid = threadIdx.x % 128;
    const int warp = tid / 32, lane = threadIdx.x % 32;
    const int gq = lane / 4, tq = lane % 4;
    const int row_of[2] = {16 * warp + gq, 16 * warp + gq + 8};   // this thread's rows of the tile

    const int* sched = p.sched + part * 8;
    const int b_begin = sched[0], blk_begin = sched[1], b_end = sched[2], blk_end = sched[3];

    if (threadIdx.x == 0) {
        for (int s = 0; s < 2; ++s)
            for (int c = 0; c < SLICES; ++c) mbar_init(&sm.k_full[s][c], 1);
        mbar_init_fence();
    }
    u32 fills = 0;   // tiles of this warpgroup's buffer consumed so far: the barriers' phase


    for (int b = b_begin; b <= b_end; ++b) {
        const int seqlen = max(p.seqlens[b], 0);
        const int start = b == b_begin ? blk_begin * SCHED_BLOCK : 0;
        const int stop = b == b_end ? min(blk_end * SCHED_BLOCK, seqlen) : seqlen;
        const int split = b == b_begin ? sched[4] : 0;
        const int pieces = p.num_splits[b + 1] - p.num_splits[b];
        // Tokens the copies may fetch: inside the piece and covered by the block table.
        const int load_end = (int)min((long long)stop, p.max_blocks << p.page_shift);

        int limit[2];
        for (int h = 0; h < 2; ++h) {
            const int s = min(m0 + row_of[h], p.rows - 1) / p.heads_per_kv;
            limit[h] = min(p.causal ? min(stop, seqlen - p.s_q + s + 1) : stop, load_end);
        }
        int stop_tile = stop;
        if (p.causal) {
            const int s_last = min(m0 + BLOCK_M, p.rows) - 1;
            stop_tile = min(stop, seqlen - p.s_q + s_last / p.heads_per_kv + 1);
        }
        const int n = stop_tile > start ? (stop_tile - start + BLOCK_N - 1) / BLOCK_N : 0;

        __syncthreads();  // the previous sequence is done with all of shared memory (and barrier init is seen)
        if (threadIdx.x < BLOCK_M) sm.row_max[threadIdx.x] = -inf_f();
        load_q(p, sm.q, b, g, m0);
        cp_async_commit();
        if (threadIdx.x == 0) {
            int pages[MAX_PAGES];
            for (int t = 0; t < 2 && t < n; ++t) {
                fetch_pages(p, pages, b, start + t * BLOCK_N, load_end);
                issue_k(p, pages, sm.k[t], sm.k_full[t], g, start + t * BLOCK_N, load_end, 0, SLICES);
            }
            for (int t = 0; t < 2; ++t) {   // pair 1, refilled during pair 0
                fetch_pages(p, pages, b, start + (2 + t) * BLOCK_N, load_end);
                for (int i = 0; i < MAX_PAGES; ++i) sm.pages[1][t][i] = pages[i];
            }
        }
        cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads();  // q landed for everyone

        u32 q8[4][4];     // q's rope slice as A fragments: its shared memory then holds P_B
        if (ROPE) {
#pragma unroll
            for (int kk = 0; kk < 4; ++kk)
#pragma unroll
                for (int i = 0; i < 4; ++i)
                    q8[kk][i] = *reinterpret_cast<const u32*>(sm.q + swz(row_of[i % 2], 512 + 16 * kk + 8 * (i / 2) + 2 * tq));
        }
        __syncthreads();  // every thread has its q8 before P_B may overwrite that slice

        float o[128];
#pragma unroll
        for (int i = 0; i < 128; ++i) o[i] = 0.f;
        float lsum[2] = {0.f, 0.f};
        float s[32];
        if (wg < n) {   // WG0 starts on tile 0, WG1 on tile 1
            if (wg == 0) all_scores<0, 0>(sm, s, q8, fills & 1);
            else all_scores<1, 0>(sm, s, q8, fills & 1);
            wgmma_wait<0>();
            reg_fence(s);
            ++fills;
        }

        // Thread 0 of each warpgroup issues the refills of its slices.
        const Ctx c = {b, g, start, n, load_end, tid, tq, {row_of[0], row_of[1]}, {limit[0], limit[1]}};
        for (int it = 0; it < n; it += 2) {
            if (wg == 0) wg0_pair(p, sm, c, it, o, s, lsum, q8, fills);
            else wg1_pair(p, sm, c, it, o, s, lsum, q8, fills);
        }

        // Epilogue: both halves are relative to the final maxima; add up the row sums.
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float l = lsum[h];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            if (tq == 0) sm.row_sum[wg][row_of[h]] = l;
        }
        __syncthreads();
        const bool whole = pieces <= 1;
        const int slot = whole ? 0 : accum_slot(p.num_splits, b, split);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const float l = sm.row_sum[0][row_of[h]] + sm.row_sum[1][row_of[h]];
            const int row = m0 + row_of[h];
            if (row >= p.rows) continue;
            float inv, lse;
            finish_row(sm.row_max[row_of[h]], l, whole, inv, lse);
            const RowOut d = row_out(p, b, g, row, whole, slot, 256 * wg + 2 * tq);
#pragma unroll
            for (int j = 0; j < 32; ++j) store_pair(d, j, o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
            if (wg == 0 && tq == 0) *d.lse = lse;
        }
    }
}
