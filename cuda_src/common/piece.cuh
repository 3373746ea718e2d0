// How the decode kernels walk the schedule (shared by decode_sm80.cu and decode_sm90.cu):
// the piece of each sequence a part covers, the keys a query row may see, the tiles to run.
// Include after params.cuh.
#pragma once

constexpr int SCHED_BLOCK = 64;   // tokens per scheduler block (metadata.cu, scheduler.py)

// Part `sched` (a row of the schedule) covers keys [start, stop) of sequence b, as piece `split`
// of `pieces`.
struct Piece {
    int seqlen, start, stop, split, pieces;
};

__device__ __forceinline__ Piece piece_of(const DecodeParams& p, const int* sched, int b) {
    Piece pc;
    pc.seqlen = max(p.seqlens[b], 0);
    pc.start = b == sched[0] ? sched[1] * SCHED_BLOCK : 0;
    pc.stop = b == sched[2] ? min(sched[3] * SCHED_BLOCK, pc.seqlen) : pc.seqlen;
    pc.split = b == sched[0] ? sched[4] : 0;
    pc.pieces = p.num_splits[b + 1] - p.num_splits[b];
    return pc;
}

// The first key query row `row` (of a kv head's s_q * heads_per_kv rows) may not see. Causal:
// query s of the new tokens is token seqlen - s_q + s and sees keys up to it.
__device__ __forceinline__ int key_limit(const DecodeParams& p, const Piece& pc, int row) {
    const int s = min(row, p.rows - 1) / p.heads_per_kv;
    return p.causal ? min(pc.stop, pc.seqlen - p.s_q + s + 1) : pc.stop;
}

// Tiles of block_n keys the m tile of rows [m0, m0 + block_m) runs: those past the last key any
// of its rows may see are skipped.
__device__ __forceinline__ int tiles_of(const DecodeParams& p, const Piece& pc, int m0, int block_m, int block_n) {
    const int stop_tile = key_limit(p, pc, min(m0 + block_m, p.rows) - 1);
    return stop_tile > pc.start ? (stop_tile - pc.start + block_n - 1) / block_n : 0;
}
