// MLA_CLOCKS=1 (diagnostics only): each CTA's start and end by %globaltimer and clock64, and its
// SM, into mla_clocks[cta][5] = {start ns, start clock, end ns, end clock, SM} (bench/clock_probe.py).
// Answers whether a slow call ran fewer clocks a second or more clocks, and how unevenly the CTAs
// end. Include after ptx.cuh, outside any namespace.
#pragma once

#ifndef MLA_CLOCKS
#define MLA_CLOCKS 0
#endif

#if MLA_CLOCKS
extern "C" __device__ unsigned long long mla_clocks[1024 * 5];   // a plain name, for cupy's get_global
__device__ unsigned long long mla_clocks[1024 * 5];
#endif

// The CTA's row in mla_clocks / mla_phases (the first 1024 CTAs have one).
__device__ __forceinline__ int cta_index() { return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z); }

// at = 0: the CTA starts; 1: it is done (thread 0 of the CTA, which must reach both).
__device__ __forceinline__ void clock_stamp(int at) {
#if MLA_CLOCKS
    const int cta = cta_index();
    if (threadIdx.x == 0 && cta < 1024) {
        unsigned long long t, c;
        unsigned sm;
        asm volatile("mov.u64 %0, %%globaltimer;\nmov.u64 %1, %%clock64;\nmov.u32 %2, %%smid;"
                     : "=l"(t), "=l"(c), "=r"(sm));
        mla_clocks[cta * 5 + 2 * at] = t;
        mla_clocks[cta * 5 + 2 * at + 1] = c;
        mla_clocks[cta * 5 + 4] = sm;
    }
#endif
}

// MLA_PHASE_CLOCKS=1 (diagnostics only, decode_sm90_narrow.cu): thread 0's clock64 time in each
// phase of the tile loop, added up over the CTA's tiles, into mla_phases[cta][PHASES]
// (bench/phase_probe.py): where a tile's clocks go.
#ifndef MLA_PHASE_CLOCKS
#define MLA_PHASE_CLOCKS 0
#endif
constexpr int PHASES = 10;
#if MLA_PHASE_CLOCKS
extern "C" __device__ unsigned long long mla_phases[1024 * PHASES];
__device__ unsigned long long mla_phases[1024 * PHASES];
#endif

struct PhaseClock {
#if MLA_PHASE_CLOCKS
    unsigned long long last, sum[PHASES];
    __device__ __forceinline__ PhaseClock() {
        last = clock64();
        for (int i = 0; i < PHASES; ++i) sum[i] = 0;
    }
    // The clocks since the previous mark belong to phase i.
    __device__ __forceinline__ void mark(int i) {
        const unsigned long long now = clock64();
        sum[i] += now - last;
        last = now;
    }
    __device__ __forceinline__ void store() {
        const int cta = cta_index();
        if (threadIdx.x == 0 && cta < 1024)
            for (int i = 0; i < PHASES; ++i) mla_phases[cta * PHASES + i] = sum[i];
    }
#else
    __device__ __forceinline__ void mark(int) {}
    __device__ __forceinline__ void store() {}
#endif
};
