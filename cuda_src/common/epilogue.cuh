// The end of a (piece of a) sequence, shared by the decode kernels: the row's normaliser and
// log-sum-exp, and where its output goes. Include after params.cuh and ptx.cuh.
#pragma once

// No visible key (l = 0) gives out 0 and lse +inf for a final result (FlashMLA's convention),
// but -inf for a piece, so that combine.cu gives it no weight.
__device__ __forceinline__ void finish_row(float row_max_log2, float l, bool whole, float& inv, float& lse) {
    inv = l > 0.f ? 1.f / l : 0.f;
    lse = l > 0.f ? (row_max_log2 + __log2f(l)) * 0.6931471805599453f : (whole ? inf_f() : -inf_f());
}

// A query row's destination from column col0 on: 2-value pieces of `out` (elements) for a
// sequence covered whole, of o_accum for a piece of a split one (fp32 pairs in `acc`, or with
// MLA_ACC16 element pairs in `out`, the same stores as a whole sequence's); and its lse slot.
struct RowOut {
    u32* out;
    float2* acc;
    float* lse;
};

__device__ __forceinline__ RowOut row_out(const DecodeParams& p, int b, int g, int row, bool whole, int slot, int col0) {
    RowOut d = {nullptr, nullptr, nullptr};
    const int s = row / p.heads_per_kv, h = g * p.heads_per_kv + row % p.heads_per_kv;
    if (whole) {
        d.out = reinterpret_cast<u32*>(static_cast<u16*>(p.out) + b * p.o_stride_b + s * p.o_stride_s +
                                       h * p.o_stride_h + col0);
        d.lse = p.lse + ((long long)b * p.h_q + h) * p.s_q + s;
    } else {
        const long long r = ((long long)slot * p.h_kv + g) * p.rows + row;
        if (MLA_ACC16) d.out = reinterpret_cast<u32*>(reinterpret_cast<u16*>(p.o_accum) + r * 512 + col0);
        else d.acc = reinterpret_cast<float2*>(p.o_accum + r * 512 + col0);
        d.lse = p.lse_accum + r;
    }
    return d;
}

// Columns col0 + 8 j and col0 + 8 j + 1 of the row (the layout of an mma / wgmma accumulator).
__device__ __forceinline__ void store_pair(const RowOut& d, int j, float x, float y) {
    if (d.out) d.out[j * 4] = pack2(x, y);
    else d.acc[j * 4] = make_float2(x, y);
}
