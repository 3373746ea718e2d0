// Portable paged MLA decode for every GPU from sm_80 up: mma.sync m16n8k16 + cp.async.
//
// One CTA per (m tile, kv head, part). The m tile is BLOCK_M of the `rows` = s_q * h_q/h_kv
// query rows that share a kv head; the part is a run of (sequence, 64-token block) pairs
// dealt out by the scheduler (metadata.cu). For each sequence of its part the CTA streams
// the cache in tiles of BLOCK_N tokens through shared memory (STAGES deep) and keeps an
// online softmax; a sequence it covers whole is written to `out`, a piece of a split one
// to o_accum / lse_accum for combine.cu.
//
// Warps: WARPS_M = BLOCK_M / 16 row groups x WARPS_N column groups. Warp (wm, wn) computes
// the scores of rows wm*16.. for its TN = BLOCK_N / WARPS_N tokens, shares them through
// shared memory, then every warp of the row group runs the same softmax on the full tile
// and multiplies P by its 512 / WARPS_N columns of V, which it owns in registers.
//
// Compile-time configuration (the Python side passes them with -D):
//   MLA_FP16 (0 = bf16, 1 = fp16), MLA_HEAD_DIM (576 or 512), MLA_BLOCK_M (16/32/64),
//   MLA_WARPS_N, MLA_BLOCK_N, MLA_STAGES (1 or 2).
#include "common/params.cuh"
#include "common/ptx.cuh"
#include "common/epilogue.cuh"
#include "common/piece.cuh"

#ifndef MLA_HEAD_DIM
#define MLA_HEAD_DIM 576
#endif
#ifndef MLA_BLOCK_M
#define MLA_BLOCK_M 64
#endif
#ifndef MLA_WARPS_N
#define MLA_WARPS_N 2
#endif
#ifndef MLA_BLOCK_N
#define MLA_BLOCK_N 32
#endif
#ifndef MLA_STAGES
#define MLA_STAGES 2
#endif

namespace {

constexpr int D = MLA_HEAD_DIM;
constexpr int DV = 512;
constexpr int BLOCK_M = MLA_BLOCK_M;
constexpr int BLOCK_N = MLA_BLOCK_N;
constexpr int STAGES = MLA_STAGES;
constexpr int WARPS_M = BLOCK_M / 16;
constexpr int WARPS_N = MLA_WARPS_N;
constexpr int THREADS = WARPS_M * WARPS_N * 32;
constexpr int TN = BLOCK_N / WARPS_N;        // score columns per warp
constexpr int COLS = DV / WARPS_N;           // output columns per warp
constexpr int CHUNKS = D / 8;                // 16-byte chunks per row
// Rows of Q and K are padded by 16 bytes so that the 8 row addresses of an ldmatrix fall in
// different banks (a 1152-byte stride would put them all in the same ones).
constexpr int ROW = D + 8;
constexpr int SROW = BLOCK_N + 4;            // fp32 score row, padded likewise

static_assert(BLOCK_M % 16 == 0 && TN % 8 == 0 && BLOCK_N % 16 == 0, "tile shape");
static_assert(COLS % 16 == 0 && (D / 16) % 2 == 0, "tile shape");
static_assert(SCHED_BLOCK % BLOCK_N == 0, "a scheduler block is a whole number of tiles");

typedef u16 elem_t;  // raw bits of bf16 / fp16

struct Smem {
    elem_t q[BLOCK_M * ROW];
    elem_t k[STAGES][BLOCK_N * ROW];
    float s[BLOCK_M * SROW];
    const elem_t* row_src[2][BLOCK_N];      // cache row of each token of the next tiles (null: zeros)
};

// Copy the query rows [m0, m0 + BLOCK_M) of sequence b, kv head g into shared memory.
__device__ __forceinline__ void load_q(const DecodeParams& p, elem_t* sq, int b, int g, int m0) {
    const elem_t* q = static_cast<const elem_t*>(p.q);
    for (int c = threadIdx.x; c < BLOCK_M * CHUNKS; c += THREADS) {
        const int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        const int row = m0 + r;
        const bool valid = row < p.rows;
        const int s = valid ? row / p.heads_per_kv : 0;
        const int h = g * p.heads_per_kv + (valid ? row % p.heads_per_kv : 0);
        const elem_t* src = q + b * p.q_stride_b + s * p.q_stride_s + h * p.q_stride_h + col;
        cp_async16(sq + r * ROW + col, valid ? src : q, valid);
    }
}

// Where each token of [t0, t0 + BLOCK_N) of sequence b, kv head g lives: one block-table read
// and one address per token (not per 16-byte piece), written by the first BLOCK_N threads.
// Tokens at or past `stop` get null and become zeros without touching their page (block-table
// entries past the sequence may be garbage); so does a page number outside the cache, which
// validation cannot see (page numbers live on the GPU).
__device__ __forceinline__ void find_rows(const DecodeParams& p, const elem_t** row_src, int b, int g, int t0, int stop) {
    const int r = threadIdx.x;
    if (r >= BLOCK_N) return;
    const int t = t0 + r;
    const elem_t* src = nullptr;
    if (t < stop && (t >> p.page_shift) < p.max_blocks) {
        const long long page = p.block_table[b * p.bt_stride_b + (t >> p.page_shift)];
        if (page >= 0 && page < p.num_pages)
            src = static_cast<const elem_t*>(p.k_cache) + page * p.k_stride_page +
                  (t & ((1 << p.page_shift) - 1)) * p.k_stride_row + g * p.k_stride_head;
    }
    row_src[r] = src;
}

// Copy a tile whose rows find_rows() located (visible to every thread: a barrier in between).
__device__ __forceinline__ void load_k(const DecodeParams& p, elem_t* sk, const elem_t* const* row_src) {
    for (int c = threadIdx.x; c < BLOCK_N * CHUNKS; c += THREADS) {
        const int r = c / CHUNKS, col = (c % CHUNKS) * 8;
        const elem_t* src = row_src[r];
        cp_async16(sk + r * ROW + col, src ? src + col : static_cast<const elem_t*>(p.k_cache), src != nullptr);
    }
}

}  // namespace

extern "C" __global__ void __launch_bounds__(THREADS, 1) mla_decode_sm80(const DecodeParams p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    Smem& sm = *reinterpret_cast<Smem*>(smem_raw);
    {   // The host sizes the window (kernels.DecodeConfig.smem_bytes): refuse to run past it.
        u32 window;
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(window));
        if (sizeof(Smem) > window) __trap();
    }

    const int m0 = blockIdx.x * BLOCK_M;
    const int g = blockIdx.y;
    const int part = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = warp % WARPS_M, wn = warp / WARPS_M;
    const int gq = lane / 4, tq = lane % 4;    // mma fragment coordinates

    const int* sched = p.sched + part * 8;
    const int b_begin = sched[0], b_end = sched[2];

    // The two rows this thread holds in every fragment, and the last key each may see.
    int row_of[2], limit_of[2];
    for (int i = 0; i < 2; ++i) {
        row_of[i] = m0 + wm * 16 + gq + 8 * i;
        limit_of[i] = 0;
    }

    for (int b = b_begin; b <= b_end; ++b) {
        const Piece pc = piece_of(p, sched, b);
        const int start = pc.start, stop = pc.stop;
        for (int i = 0; i < 2; ++i) limit_of[i] = key_limit(p, pc, row_of[i]);
        const int num_tiles = tiles_of(p, pc, m0, BLOCK_M, BLOCK_N);

        float o[COLS / 8][4];
        for (int j = 0; j < COLS / 8; ++j)
            for (int e = 0; e < 4; ++e) o[j][e] = 0.f;
        float row_max[2] = {-inf_f(), -inf_f()};   // in log2 units, scale applied
        float row_sum[2] = {0.f, 0.f};             // this thread's share; quad-reduced at the end

        __syncthreads();  // the previous sequence's warps are done with q, k, s and row_src
        // Rows of tile t are located into row_src[t % 2] one tile before they are fetched.
        find_rows(p, sm.row_src[0], b, g, start, stop);
        find_rows(p, sm.row_src[1], b, g, start + BLOCK_N, stop);
        __syncthreads();
        load_q(p, sm.q, b, g, m0);
        if (num_tiles > 0) load_k(p, sm.k[0], sm.row_src[0]);
        cp_async_commit();

        for (int it = 0; it < num_tiles; ++it) {
            const int t0 = start + it * BLOCK_N;
            const elem_t* sk;
            if (STAGES == 2) {
                cp_async_wait<0>();
                __syncthreads();  // tile `it` landed; every warp left tile it-1's buffer and scores
                if (it + 1 < num_tiles) load_k(p, sm.k[(it + 1) % 2], sm.row_src[(it + 1) % 2]);
                cp_async_commit();
                sk = sm.k[it % 2];
            } else {
                if (it > 0) {
                    __syncthreads();  // every warp left tile it-1
                    load_k(p, sm.k[0], sm.row_src[it % 2]);
                    cp_async_commit();
                }
                cp_async_wait<0>();
                __syncthreads();
                sk = sm.k[0];
            }
            // row_src[it % 2] was read (by every thread, before the barrier above): locate tile it+2.
            if (it + 2 < num_tiles) find_rows(p, sm.row_src[it % 2], b, g, t0 + 2 * BLOCK_N, stop);

            // Scores of rows wm*16.. for tokens wn*TN .. +TN, two k16 steps per pass.
            float acc[TN / 8][4];
            for (int j = 0; j < TN / 8; ++j)
                for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
            const elem_t* qa = sm.q + (wm * 16 + (lane & 15)) * ROW + (lane >> 4) * 8;
            const elem_t* kb = sk + (wn * TN + (lane & 7)) * ROW + (lane >> 3) * 8;
#pragma unroll 2
            for (int kk = 0; kk < D; kk += 32) {
                u32 a0[4], a1[4];
                ldmatrix_x4(a0, qa + kk);
                ldmatrix_x4(a1, qa + kk + 16);
#pragma unroll
                for (int j = 0; j < TN / 8; ++j) {
                    u32 bk[4];
                    ldmatrix_x4(bk, kb + j * 8 * ROW + kk);
                    mma16816(acc[j], a0, bk[0], bk[1]);
                    mma16816(acc[j], a1, bk[2], bk[3]);
                }
            }
#pragma unroll
            for (int j = 0; j < TN / 8; ++j) {
                const int col = wn * TN + j * 8 + 2 * tq;
                float* s0 = sm.s + (wm * 16 + gq) * SROW + col;
                s0[0] = acc[j][0];
                s0[1] = acc[j][1];
                s0[8 * SROW] = acc[j][2];
                s0[8 * SROW + 1] = acc[j][3];
            }
            __syncthreads();

            // Online softmax over the whole tile; the WARPS_N warps of a row group do the same
            // work and reach bit-identical results.
            float sc[2][BLOCK_N / 4];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const float* srow = sm.s + (wm * 16 + gq + 8 * i) * SROW;
                float mx = -inf_f();
#pragma unroll
                for (int j = 0; j < BLOCK_N / 8; ++j) {
                    const int col = j * 8 + 2 * tq;
                    for (int e = 0; e < 2; ++e) {
                        const float v = t0 + col + e < limit_of[i] ? srow[col + e] * p.scale_log2 : -inf_f();
                        sc[i][2 * j + e] = v;
                        mx = fmaxf(mx, v);
                    }
                }
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float new_max = fmaxf(row_max[i], mx);
                // A row that has seen no key yet keeps max -inf; use 0 so no inf - inf appears.
                const float base = new_max == -inf_f() ? 0.f : new_max;
                const float rescale = fast_exp2(row_max[i] - base);
                row_max[i] = new_max;
                float sum = 0.f;
#pragma unroll
                for (int j = 0; j < BLOCK_N / 4; ++j) {
                    sc[i][j] = fast_exp2(sc[i][j] - base);
                    sum += sc[i][j];
                }
                row_sum[i] = row_sum[i] * rescale + sum;
                if (__any_sync(0xffffffffu, rescale != 1.f)) {   // most tiles move no maximum
#pragma unroll
                    for (int j = 0; j < COLS / 8; ++j) {
                        o[j][2 * i] *= rescale;
                        o[j][2 * i + 1] *= rescale;
                    }
                }
            }

            // O += P V over this warp's columns; P's mma A fragments come straight from sc.
            const elem_t* vb = sk + ((lane & 7) + ((lane >> 3) & 1) * 8) * ROW + wn * COLS + (lane >> 4) * 8;
#pragma unroll
            for (int kt = 0; kt < BLOCK_N / 16; ++kt) {
                u32 pa[4];
                pa[0] = pack2(sc[0][4 * kt + 0], sc[0][4 * kt + 1]);
                pa[1] = pack2(sc[1][4 * kt + 0], sc[1][4 * kt + 1]);
                pa[2] = pack2(sc[0][4 * kt + 2], sc[0][4 * kt + 3]);
                pa[3] = pack2(sc[1][4 * kt + 2], sc[1][4 * kt + 3]);
#pragma unroll
                for (int np = 0; np < COLS / 16; ++np) {
                    u32 bv[4];
                    ldmatrix_x4_trans(bv, vb + kt * 16 * ROW + np * 16);
                    mma16816(o[2 * np], pa, bv[0], bv[1]);
                    mma16816(o[2 * np + 1], pa, bv[2], bv[3]);
                }
            }
        }
        cp_async_wait<0>();  // a sequence with no tiles still committed its q load

        // Epilogue: normalise and write the result (whole sequence) or the partial (a piece).
        const bool whole = pc.pieces <= 1;
        const int slot = whole ? 0 : accum_slot(p.num_splits, b, pc.split);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float l = row_sum[i];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const int row = row_of[i];
            if (row >= p.rows) continue;
            float inv, lse;
            finish_row(row_max[i], l, whole, inv, lse);
            const RowOut d = row_out(p, b, g, row, whole, slot, wn * COLS + 2 * tq);
#pragma unroll
            for (int j = 0; j < COLS / 8; ++j) store_pair(d, j, o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
            if (wn == 0 && tq == 0) *d.lse = lse;
        }
    }
}
