// Kernel parameter structs: one per kernel, passed by value.
// Mirrored field for field (same order, same C types) by cupymla/params.py; keep the two in step.
#pragma once

// get_mla_metadata: deals the 64-token blocks of every sequence out to num_parts parts.
struct MetadataParams {
    const int* seqlens;     // [batch]
    int* sched;             // [num_parts, 8]: begin_batch, begin_block, end_batch, end_block, begin_split
    int* num_splits;        // [batch + 1]: prefix sum of pieces per sequence
    int batch;
    int num_parts;
};

// Split-KV decode: one CTA per (m tile, kv head, part).
struct DecodeParams {
    const void* q;          // [b, s_q, h_q, d] (bf16 or fp16)
    const void* k_cache;    // [num_pages, page_size, h_kv, d]; V is its first 512 columns
    const int* block_table; // [b, max_blocks]
    const int* seqlens;     // [b]
    const int* sched;       // [num_parts, 8], see MetadataParams
    const int* num_splits;  // [b + 1]
    void* out;              // [b, s_q, h_q, 512]
    float* lse;             // [b, h_q, s_q], contiguous
    float* o_accum;         // [2 * num_parts, h_kv, rows, 512]: partial results of split sequences
                            // (fp32, or with MLA_ACC16 the element type from the same start)
    float* lse_accum;       // [2 * num_parts, h_kv, rows]
    long long q_stride_b, q_stride_s, q_stride_h;          // in elements
    long long k_stride_page, k_stride_row, k_stride_head;  // in elements
    long long bt_stride_b;
    long long max_blocks;   // block_table.shape[1]: entries past it are never read
    long long num_pages;    // k_cache.shape[0]: a page number outside [0, num_pages) reads as zeros
    long long o_stride_b, o_stride_s, o_stride_h;
    int batch, s_q, h_q, h_kv;
    int heads_per_kv;       // h_q / h_kv
    int rows;               // s_q * heads_per_kv: query rows that share one kv head
    int page_shift;         // log2(page_size)
    int num_parts;
    int causal;
    float scale_log2;       // softmax_scale * log2(e)
    // Hopper only (decode_sm90*.cu): a CUtensorMap over k_cache, 128-byte swizzle, either
    //   k_map_rank 5: (64, page_size, d / 64, h_kv, num_pages), box (64, k_box_rows = 64, d / 64,
    //                 1, 1): one copy fills a whole 64-token tile, every 64-column slice;
    //   k_map_rank 4: (d, h_kv, page_size, num_pages), box (64, 1, k_box_rows, 1): one copy per
    //                 slice and page.
    // k_box_rows = 0: no map (the host then runs decode_sm80.cu, which ignores these fields).
    // k_box_slices: 64-column slices in a rank-5 box (d / 64; 1 for decode_sm90_seesaw64.cu,
    // which copies each tile slice by slice).
    int k_box_rows;
    int k_map_rank;
    int k_box_slices;
    // q_map_rank 5: q_map is a CUtensorMap for decode_sm90_seesaw64.cu's q copies, 128-byte
    // swizzle, that holds no pointer (made once per layout, cupymla/tma.py q_map): based at
    // Q_MAP_BASE, dims (d, heads_per_kv, s_q, lo, hi) where lo + 2^31 hi counts 16-byte steps to
    // the (sequence, kv head)'s first q row; box (64, min(heads_per_kv, 64), 64 / that, 1, 1), one
    // 64-column slice of an m tile (made only where an m tile is such a box); 0: no map.
    int q_map_rank;
    alignas(64) unsigned long long k_map[16];
    alignas(64) unsigned long long q_map[16];
};

// DecodeParams.q_map's base address (tma.Q_MAP_BASE).
constexpr unsigned long long Q_MAP_BASE = 16;

// Merges the pieces of split sequences by their log-sum-exp.
struct CombineParams {
    const float* o_accum;
    const float* lse_accum;
    const int* num_splits;
    void* out;
    float* lse;
    long long o_stride_b, o_stride_s, o_stride_h;
    int batch, s_q, h_q, h_kv, heads_per_kv, rows;
};

// MLA_ACC16 (off unless the host asks: api._partials_16bit turns it on for the seesaw kernels'
// plans; bench/NOTES.md, session 11): the partial results of split sequences are stored in the
// element type (bf16 / fp16, as the output), 512 of them a row from the start of o_accum,
// instead of fp32: half the bytes for the decode to store and the combine to read. The decode
// kernels and combine.cu must be built alike.
#ifndef MLA_ACC16
#define MLA_ACC16 0
#endif

// Piece k of sequence b keeps its partial result in this slot of o_accum / lse_accum.
// Only split sequences (>= 2 pieces) use slots; with c = num_splits[b] - b (extra pieces
// before b), sequence b owns slots [2c, 2c + pieces) and the next split sequence starts at
// 2c + 2 * (pieces - 1) >= 2c + pieces, so slots never collide and all lie below 2 * num_parts.
__device__ __forceinline__ int accum_slot(const int* num_splits, int b, int k) {
    return 2 * (num_splits[b] - b) + k;
}
