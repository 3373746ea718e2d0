// Loading the paged KV cache tile by tile with the copy engine (TMA), shared by the Hopper
// decode kernels. Include after params.cuh, ptx.cuh, sm90.cuh and piece.cuh, with MLA_HEAD_DIM set.
//
// A tile is 64 tokens x d, stored as d / 64 slices of 64 rows x 128 bytes in the 128-byte
// swizzled layout wgmma reads without bank conflicts; or, where one copy brings a page of R = 32
// tokens and every slice (k_map_rank 5, k_box_rows 32; only decode_sm90.cu asks for that), as
// 64 / R sub-tiles of R rows, each its own d / 64 slices: kv_offset() gives the element offset. Thread 0 walks the part's flat list of
// tiles (every tile of every sequence it covers, in the order the kernel consumes them) with a
// Cursor, reading each tile's page numbers one tile before its copy so block-table reads stay
// off the critical path.
#pragma once

constexpr int KV_TILE = 64;                       // tokens a tile
constexpr int KV_SLICES = MLA_HEAD_DIM / 64;      // 64-column slices of a row
constexpr int KV_SLICE = 64 * 64;                 // elements in one slice of a tile
constexpr int KV_MAX_PAGES = KV_TILE / 16;        // k_box_rows >= 16: at most 4 pages a tile

// Element offset of (row, col) in a 128-byte-swizzled operand whose 64-column slices hold
// `rows` rows each: the 16-byte piece j of row r sits at piece j ^ (r % 8).
__device__ __forceinline__ int swz(int rows, int row, int col) {
    return (col / 64) * rows * 64 + row * 64 + ((((col % 64) / 8) ^ (row & 7)) * 8) + (col % 8);
}

// Q's rows [m0, m0 + block_m) of a kv head (rows past p.rows read as zeros: finite scores, never
// stored) into a swizzled [block_m x d] operand, with cp.async by all THREADS threads.
template <int THREADS, int BLOCK_M>
__device__ __forceinline__ void load_q(const DecodeParams& p, u16* sq, int b, int g, int m0) {
    const u16* q = static_cast<const u16*>(p.q);
    for (int c = threadIdx.x; c < BLOCK_M * (MLA_HEAD_DIM / 8); c += THREADS) {
        const int r = c / (MLA_HEAD_DIM / 8), col = (c % (MLA_HEAD_DIM / 8)) * 8;
        const int row = m0 + r;
        const bool valid = row < p.rows;
        const int s = valid ? row / p.heads_per_kv : 0;
        const int h = g * p.heads_per_kv + (valid ? row % p.heads_per_kv : 0);
        const u16* src = q + b * p.q_stride_b + s * p.q_stride_s + h * p.q_stride_h + col;
        cp_async16(sq + swz(BLOCK_M, r, col), valid ? src : q, valid);
    }
}

// Rows of a sub-tile of the stored tile (64: the plain layout).
__device__ __forceinline__ int kv_sub_rows(const DecodeParams& p) {
    return p.k_map_rank == 5 ? p.k_box_rows : KV_TILE;
}

__device__ __forceinline__ int kv_offset(int sub_rows, int row, int col) {
    return (row / sub_rows) * (KV_SLICES * sub_rows * 64) + swz(sub_rows, row % sub_rows, col);
}

// Tokens of a piece the loader may fetch: inside it and covered by the block table.
__device__ __forceinline__ int load_end_of(const DecodeParams& p, const Piece& pc) {
    return (int)min((long long)pc.stop, p.max_blocks << p.page_shift);
}

// The loader's position. b > b_end: nothing left to load.
struct Cursor {
    int b, t0, end, load_end;   // sequence, first token of the tile, end of its tiles, load_end_of
};

// The first tile of the first sequence from b on that has any (for an m tile of block_m rows).
__device__ __forceinline__ Cursor seek(const DecodeParams& p, const int* sched, int b, int b_end, int m0, int block_m) {
    for (; b <= b_end; ++b) {
        const Piece pc = piece_of(p, sched, b);
        const int n = tiles_of(p, pc, m0, block_m, KV_TILE);
        if (n > 0) return Cursor{b, pc.start, pc.start + n * KV_TILE, load_end_of(p, pc)};
    }
    return Cursor{b, 0, 0, 0};
}

__device__ __forceinline__ void fetch_pages(const DecodeParams& p, int (&pages)[KV_MAX_PAGES], const Cursor& c) {
    const int* bt = p.block_table + c.b * p.bt_stride_b;
#pragma unroll
    for (int i = 0; i < KV_MAX_PAGES; ++i) {
        const int t = c.t0 + i * p.k_box_rows;
        pages[i] = i * p.k_box_rows < KV_TILE && t < c.load_end ? bt[t >> p.page_shift] : 0;
    }
}

// Ask the copy engine for the cursor's tile, one box of k_box_rows rows per page: with
// k_map_rank 5 a box holds every slice (one copy a page instead of one per slice and page: the
// issue time came off warp 0's path), with k_map_rank 4 one slice. Tokens at or past load_end
// are not asked for (their block-table entries may be garbage); zero_tail() zeroes them, and
// the rows past load_end that a box brings from its page.
__device__ __forceinline__ void issue_k_tma(const DecodeParams& p, const int (&pages)[KV_MAX_PAGES], u16* sk,
                                            unsigned long long* bar, int g, const Cursor& c) {
    const int rows = p.k_box_rows, page_mask = (1 << p.page_shift) - 1;
    int boxes = 0;
    for (int r0 = 0; r0 < KV_TILE && c.t0 + r0 < c.load_end; r0 += rows) ++boxes;
    mbar_arrive_expect_tx(bar, boxes * KV_SLICES * rows * 128);
    if (p.k_map_rank == 5) {
#pragma unroll
        for (int i = 0; i < KV_MAX_PAGES; ++i) {
            const int r0 = i * rows;
            if (r0 >= KV_TILE || c.t0 + r0 >= c.load_end) break;
            tma_load_5d(sk + i * (KV_SLICES * rows * 64), &p.k_map, bar, 0, (c.t0 + r0) & page_mask, 0, g, pages[i]);
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < KV_MAX_PAGES; ++i) {
        const int r0 = i * rows;
        if (r0 >= KV_TILE || c.t0 + r0 >= c.load_end) break;
        // An out-of-range page number makes the copy engine read zeros.
#pragma unroll
        for (int s = 0; s < KV_SLICES; ++s)
            tma_load_4d(sk + s * KV_SLICE + r0 * 64, &p.k_map, bar, s * 64, g, (c.t0 + r0) & page_mask, pages[i]);
    }
}

// Thread 0: copy the cursor's tile into `sk` (landing on `bar`), step the cursor, read the
// page numbers of the tile after.
__device__ __forceinline__ void load_next(const DecodeParams& p, const int* sched, Cursor& c, int (&pages)[KV_MAX_PAGES],
                                          u16* sk, unsigned long long* bar, int g, int b_end, int m0, int block_m) {
#if !defined(MLA_FAKE_KV_LOAD) || !MLA_FAKE_KV_LOAD   // a diagnostic build that times the math alone
    issue_k_tma(p, pages, sk, bar, g, c);
#endif
    c.t0 += KV_TILE;
    if (c.t0 >= c.end) c = seek(p, sched, c.b + 1, b_end, m0, block_m);
    if (c.b <= b_end) fetch_pages(p, pages, c);
}

// Rows [valid, 64) of a tile: not loaded (past the sequence) or loaded from the garbage tail of
// the last page (may be NaN, and 0 * NaN would reach the output): make them zeros.
template <int THREADS>
__device__ __forceinline__ void zero_tail(u16* sk, int valid, int sub_rows) {
    if (valid >= KV_TILE) return;
    const uint4 z = make_uint4(0, 0, 0, 0);
    for (int c = threadIdx.x; c < (KV_TILE - valid) * (MLA_HEAD_DIM / 8); c += THREADS) {
        const int r = valid + c / (MLA_HEAD_DIM / 8), col = (c % (MLA_HEAD_DIM / 8)) * 8;
        *reinterpret_cast<uint4*>(sk + kv_offset(sub_rows, r, col)) = z;
    }
}
