// Hopper (sm_90a) building blocks: wgmma with shared-memory descriptors, and the fences
// that order ordinary/cp.async shared-memory writes before the tensor cores read them.
// Include after common/ptx.cuh (it uses MLA_MMA_TYPE and the u32 typedefs).
#pragma once

typedef unsigned long long u64;

// Shared-memory matrix descriptor of wgmma (PTX ISA, "Matrix Descriptor Format"): start
// address, leading and stride byte offsets, all in 16-byte units, and the swizzle mode in
// bits 62-63 (1 = 128-byte swizzle, the only one used here).
__device__ __forceinline__ u64 smem_desc(const void* p, u32 lbo_bytes, u32 sbo_bytes) {
    const u32 a = smem_addr(p);
    return (u64)((a & 0x3FFFF) >> 4) | ((u64)(lbo_bytes >> 4) << 16) | ((u64)(sbo_bytes >> 4) << 32) | (1ull << 62);
}

// The same for a K-major operand of 64-byte rows in the 64-byte swizzle (mode 2; LBO unused).
__device__ __forceinline__ u64 smem_desc_sw64(const void* p, u32 sbo_bytes) {
    const u32 a = smem_addr(p);
    return (u64)((a & 0x3FFFF) >> 4) | (1ull << 16) | ((u64)(sbo_bytes >> 4) << 32) | (2ull << 62);
}

// The kernel's struct Smem in the dynamic shared window, which is only guaranteed 16-byte
// alignment: rounded up to 1024 for the swizzle. Offsetting the __shared__ array itself (not an
// integer cast of its address) keeps the compiler's accesses shared-memory ones instead of
// generic 64-bit ones. Traps if the host's window (kernels.DecodeConfig.smem_bytes) is short,
// or if `bad_params` (the kernel's own checks of its parameters, folded into the same branch).
template <typename Smem>
__device__ __forceinline__ Smem& smem_window(unsigned char* raw, bool bad_params) {
    Smem& sm = *reinterpret_cast<Smem*>(raw + ((1024 - (smem_addr(raw) & 1023)) & 1023));
    u32 window;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(window));
    if ((size_t)(reinterpret_cast<unsigned char*>(&sm) - raw) + sizeof(Smem) > window || bad_params) __trap();
    return sm;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory"); }

// Programmatic dependent launch: the next kernel of the stream (combine.cu, launched with
// overlap_previous) may be scheduled now; it waits (griddepcontrol.wait) for this grid to finish
// before it reads our results, so triggering early only hides its launch.
__device__ __forceinline__ void launch_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }

// Hand registers between warpgroups (each warpgroup's warps all execute it): a producer that
// needs few gives them back, the consumers take them.
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(N)); }
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(N)); }

// Writes by the generic proxy (st.shared, cp.async) become visible to wgmma (async proxy).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Keep the compiler from moving accumulator reads/writes across an in-flight wgmma.
template <int N>
__device__ __forceinline__ void reg_fence(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i]) :: "memory");
}
// ... and A fragments an in-flight wgmma reads from registers: live (not reallocated) until here.
template <int N>
__device__ __forceinline__ void reg_fence(u32 (&a)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(a[i]) :: "memory");
}

// Scores of an m64nN accumulator, N = 2 NS (this thread: rows `row` 16 warp + gq + 8 h, keys
// t_first + 8 j + 2 tq + e at s[4 j + 2 h + e]): keys at or past a row's limit become -inf, the
// others are scaled to the log2 domain; mx gets this thread's maximum per row (before any shuffle).
template <int NS>
__device__ __forceinline__ void mask_scores(float (&s)[NS], float (&mx)[2], int t_first, int tq,
                                            const int (&limit)[2], float scale_log2) {
    mx[0] = mx[1] = -inf_f();
#pragma unroll
    for (int j = 0; j < NS / 4; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int t = t_first + 8 * j + 2 * tq + e;
                float& v = s[4 * j + 2 * h + e];
                v = t < limit[h] ? v * scale_log2 : -inf_f();
                mx[h] = fmaxf(mx[h], v);
            }
}

// An m64n256 accumulator's rows (this thread: rows 16 warp + gq + 8 h at o[4 j + 2 h + e]) times
// f[h]. Once the row maxima settle most tiles move none of them: the 128 multiplies are skipped
// (a warp-uniform test).
__device__ __forceinline__ void scale_o(float (&o)[128], const float (&f)[2]) {
    if (!__any_sync(0xffffffffu, f[0] != 1.f || f[1] != 1.f)) return;
#pragma unroll
    for (int j = 0; j < 32; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            o[4 * j + 2 * h] *= f[h];
            o[4 * j + 2 * h + 1] *= f[h];
        }
}

// wgmma names every accumulator register in its operand list: the lists for N = 32 (16 a thread),
// N = 64 (32) and N = 256 (128 a thread), written once. The accumulators are operands 0 .. n - 1.
#define MLA_ACC16_NAMES "{" \
    "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15" "}"
#define MLA_ACC16_OUTS(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
#define MLA_ACC32_NAMES "{" \
    "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
    "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31" "}"
#define MLA_ACC32_OUTS(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define MLA_ACC128_NAMES "{" \
    "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
    "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
    "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
    "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63," \
    "%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%77,%78,%79," \
    "%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95," \
    "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111," \
    "%112,%113,%114,%115,%116,%117,%118,%119,%120,%121,%122,%123,%124,%125,%126,%127" "}"
#define MLA_ACC128_OUTS(d) \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
    "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
    "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
    "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
    "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
    "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), \
    "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), \
    "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), \
    "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), \
    "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), \
    "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), \
    "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), \
    "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), \
    "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])

// D(64xN, fp32) (+)= A(64x16, smem desc) * B(16xN, smem desc), N = 16 or 32 (N / 2 accumulator
// registers a thread). TRANS_A / TRANS_B: the operand is MN-major (V as A in O^T = V^T P^T, V as
// B in O = P V) instead of K-major.
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_m64n16k16_ss(float (&d)[8], u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32." MLA_MMA_TYPE "." MLA_MMA_TYPE " "
        "{%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, %11, %12;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
}

template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_m64n32k16_ss(float (&d)[16], u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32." MLA_MMA_TYPE "." MLA_MMA_TYPE " "
        MLA_ACC16_NAMES ", %16, %17, p, 1, 1, %19, %20;\n}\n"
        : MLA_ACC16_OUTS(d)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B));
}

// The same with A from registers (m16n8k16's A fragment of each warp's 16 rows).
__device__ __forceinline__ void wgmma_m64n32k16_rs(float (&d)[16], const u32 (&a)[4], u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32." MLA_MMA_TYPE "." MLA_MMA_TYPE " "
        MLA_ACC16_NAMES ", {%16,%17,%18,%19}, %20, p, 1, 1, 0;\n}\n"
        : MLA_ACC16_OUTS(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
}

// D(64x64, fp32) (+)= A(64x16) * B(16x64), both K-major in shared memory (the scores of a
// 64-token tile), and the same with A from registers (m16n8k16's A fragment of each warp's rows).
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." MLA_MMA_TYPE "." MLA_MMA_TYPE " "
        MLA_ACC32_NAMES ", %32, %33, p, 1, 1, 0, 0;\n}\n"
        : MLA_ACC32_OUTS(d)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const u32 (&a)[4], u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." MLA_MMA_TYPE "." MLA_MMA_TYPE " "
        MLA_ACC32_NAMES ", {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
        : MLA_ACC32_OUTS(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));
}

// D(64x256, fp32) (+)= A(64x16, smem desc) * B(16x256, smem desc); trans_b: B is MN-major (V).
template <int TRANS_B>
__device__ __forceinline__ void wgmma_m64n256k16_ss(float (&d)[128], u64 desc_a, u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32." MLA_MMA_TYPE "." MLA_MMA_TYPE " "
        MLA_ACC128_NAMES ", %128, %129, p, 1, 1, 0, %131;\n}\n"
        : MLA_ACC128_OUTS(d)
        : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_B));
}

// The same with A from registers: a 64x16 slice of this warpgroup's own P, in the accumulator
// layout of its scores (m16n8k16's A fragment: rows gq, gq + 8 and columns 2 tq, 2 tq + 8 of
// each warp's 16 rows).
template <int TRANS_B>
__device__ __forceinline__ void wgmma_m64n256k16_rs(float (&d)[128], const u32 (&a)[4], u64 desc_b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32." MLA_MMA_TYPE "." MLA_MMA_TYPE " "
        MLA_ACC128_NAMES ", {%128,%129,%130,%131}, %132, p, 1, 1, %134;\n}\n"
        : MLA_ACC128_OUTS(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate), "n"(TRANS_B));
}

// ---- named barriers (0 is __syncthreads): a group of `threads` threads meets at barrier `id`;
// with arrive, one side signals without waiting and the other side's sync waits for it.
__device__ __forceinline__ void bar_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" :: "r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void bar_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" :: "r"(id), "r"(threads) : "memory");
}

// ---- mbarriers and the tensor copy engine (TMA)

__device__ __forceinline__ void mbar_init(unsigned long long* bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(smem_addr(bar)), "r"(count) : "memory");
}
// One arrival without bytes (a consumer releasing a buffer, or a copy that was not needed).
__device__ __forceinline__ void mbar_arrive(unsigned long long* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(smem_addr(bar)) : "memory");
}
// Make barrier initialisation visible to the copy engine before first use.
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }

// One arrival that also announces `bytes` of copies still to land in this phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(unsigned long long* bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(smem_addr(bar)), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_wait(unsigned long long* bar, u32 parity) {
    u32 done = 0;
    while (!done) {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(smem_addr(bar)), "r"(parity) : "memory");
    }
}

// Copy `bytes` (a multiple of 16; both addresses 16-byte aligned) from global into shared memory
// with the copy engine, completion counted in bytes on `bar`.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, u32 bytes, unsigned long long* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                 :: "r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)) : "memory");
}

// The KV cache is read once per call: its tile copies use evict_first_policy() (ptx.cuh), so its
// lines are the first to go from L2, not the lines others reuse or the dirty ones that would cost
// a write-back (measured: b1 h16 64K about 41.4 -> 37.8 us, h32 and h128 rows +1.5%, h16 b128
// rows -1%; bench/NOTES.md).

// Copy one box of a 4-D (5-D) tensor map (coordinates innermost first) into shared memory;
// completion is counted in bytes on `bar`. Coordinates outside the tensor read as zeros.
__device__ __forceinline__ void tma_load_4d(void* dst, const void* tmap, unsigned long long* bar,
                                            int c0, int c1, int c2, int c3) {
    const u64 policy = evict_first_policy();
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
                 " [%0], [%1, {%2, %3, %4, %5}], [%6], %7;\n"
                 :: "r"(smem_addr(dst)), "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_addr(bar)), "l"(policy)
                 : "memory");
}

// (evict_first false: the default L2 policy, for data that other CTAs read too, such as q.)
__device__ __forceinline__ void tma_load_5d(void* dst, const void* tmap, unsigned long long* bar,
                                            int c0, int c1, int c2, int c3, int c4, bool evict_first = true) {
    if (!evict_first) {
        asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                     " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n"
                     :: "r"(smem_addr(dst)), "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(smem_addr(bar))
                     : "memory");
        return;
    }
    const u64 policy = evict_first_policy();
    asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
                 " [%0], [%1, {%2, %3, %4, %5, %6}], [%7], %8;\n"
                 :: "r"(smem_addr(dst)), "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(smem_addr(bar)),
                    "l"(policy)
                 : "memory");
}
