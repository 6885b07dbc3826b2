/*
backends/cpu_fast_kernels.c: the x86 kernels of the fast CPU ops (the contract is cpu_fast.c's): the
portable matmul, matmul backward and attention bodies (cpu_fast.h) compiled for AVX2 and AVX-512, the AVX-512 matmul over
every stored type with fp32 activations, and the AVX-512 VNNI matmul with int8 activations. cpu_fast.c
chooses among them (and its portable C) at run time. Compiled on its own by the Makefile (see cpu_fast.h
for why), or included by cpu_fast.c.
*/
#include "cpu_fast.h"

#if FAST_X86

// ----------------------------------------------------------------------------
// the portable bodies, compiled for wider vectors (the compiler's vectorisation: the same C, no intrinsics)

FAST_AVX2_TARGET void fast_attention_backward_head_avx2(float* dq, float* dkeys, float* dvalues, const float* dout,
                                                       const float* q, const float* keys, const float* values,
                                                       const uint8_t* mask, int T, int P, int NH, int NKV, int HS,
                                                       int kv_head, const AttentionBackwardScratch* scratch) {
    attention_backward_head_body(dq, dkeys, dvalues, dout, q, keys, values, mask, T, P, NH, NKV, HS, kv_head, scratch);
}

FAST_AVX512_TARGET void fast_attention_backward_head_avx512(float* dq, float* dkeys, float* dvalues, const float* dout,
                                                           const float* q, const float* keys, const float* values,
                                                           const uint8_t* mask, int T, int P, int NH, int NKV, int HS,
                                                           int kv_head, const AttentionBackwardScratch* scratch) {
    attention_backward_head_body(dq, dkeys, dvalues, dout, q, keys, values, mask, T, P, NH, NKV, HS, kv_head, scratch);
}

#if FAST_BF16_KERNEL
// ----------------------------------------------------------------------------
// the bf16 product matmul's tile, AVX-512 BF16 (the packing and the arithmetic: cpu_fast.h). 12 rows by 32
// columns: 24 accumulators, each lane one output's sum over the k2 pairs in order, one vdpbf16ps a pair (the
// high product added and rounded, then the low one): fast_bf16_tile_portable's results bit for bit. Per pair
// two loads of B and 12 broadcasts of A (one 48-byte run) feed 24 instructions, which issue one a cycle on Zen 4 (twice the
// multiply-adds of an fp32 FMA). The tile's rows past `rows` are the packing's zero rows: computed, not stored.

// One output row of a tile (cols of its 32 columns, in s0 and s1): out = [out +] the sums (both tiles, and AMX's)
FAST_INLINE FAST_BF16_AVX512_TARGET void bf16_tile_store_row(float* o, __m512 s0, __m512 s1, int cols, int accumulate) {
    __mmask16 mask0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
    __mmask16 mask1 = cols >= 32 ? 0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
    if (accumulate) {
        s0 = _mm512_add_ps(_mm512_maskz_loadu_ps(mask0, o), s0);
        s1 = _mm512_add_ps(_mm512_maskz_loadu_ps(mask1, o + 16), s1);
    }
    _mm512_mask_storeu_ps(o, mask0, s0);
    _mm512_mask_storeu_ps(o + 16, mask1, s1);
}

FAST_BF16_AVX512_TARGET void fast_bf16_tile_avx512(float* out, size_t out_row, const uint32_t* a, const uint32_t* b,
                                                   int K2, int rows, int cols, int accumulate) {
    __m512 acc[FAST_BF16_TILE_ROWS][2];
    #pragma GCC unroll 12
    for (int r = 0; r < FAST_BF16_TILE_ROWS; r++) { acc[r][0] = _mm512_setzero_ps(); acc[r][1] = _mm512_setzero_ps(); }
    for (int k2 = 0; k2 < K2; k2++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + (size_t)k2 * FAST_BF16_PANEL);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + (size_t)k2 * FAST_BF16_PANEL + 16);
        #pragma GCC unroll 12
        for (int r = 0; r < FAST_BF16_TILE_ROWS; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[(size_t)k2 * FAST_BF16_TILE_ROWS + r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
        }
    }
    for (int r = 0; r < rows; r++) { bf16_tile_store_row(out + (size_t)r * out_row, acc[r][0], acc[r][1], cols, accumulate); }
}

// One pair of k for 16 rows side by side (lo: the rows' values at the pair's low k, lo + s_k at its high k):
// row i's word in lane i, bf16(low) | bf16(high) << 16 (high 0 past K); lanes past the mask zero
FAST_INLINE FAST_BF16_AVX512_TARGET __m512i bf16_pair_words(const float* lo, size_t s_k, __mmask16 mask, int has_hi) {
    __m512i low = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, lo)));
    __m512i high = has_hi ? _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, lo + s_k)))
                          : _mm512_setzero_si512();
    return _mm512_or_si512(low, _mm512_slli_epi32(high, 16));
}

// A 16 x 16 matrix of 32-bit words in 16 registers (v[r]: row r) transposed in place: four rounds of swaps of
// off-diagonal blocks 8, 4, 2 and 1 words wide, two two-source permutations a pair of rows each
FAST_INLINE FAST_BF16_AVX512_TARGET void transpose_16x16_words(__m512i v[16]) {
    #pragma GCC unroll 4
    for (int b = 8; b >= 1; b /= 2) {
        // lane c of the new row r (r & b == 0): row r's lane c where c & b == 0, else row r + b's lane c - b;
        // of the new row r + b: row r's lane c + b where c & b == 0, else row r + b's lane c
        int low_index[16], high_index[16];
        for (int c = 0; c < 16; c++) {
            low_index[c] = c & b ? 16 + c - b : c;
            high_index[c] = c & b ? 16 + c : c + b;
        }
        __m512i low = _mm512_loadu_si512(low_index), high = _mm512_loadu_si512(high_index);
        #pragma GCC unroll 16
        for (int r = 0; r < 16; r++) {
            if (r & b) { continue; }
            __m512i x = v[r], y = v[r + b];
            v[r] = _mm512_permutex2var_epi32(x, low, y);
            v[r + b] = _mm512_permutex2var_epi32(x, high, y);
        }
    }
}

#if FAST_AMX_KERNEL
// ----------------------------------------------------------------------------
// the bf16 product tile on AMX: tiles of sums for columns 0-15 and 16-31 of the panel, for A's first 16 rows
// and, when the item has more, its next 16 (four tiles of sums, 0-3); A's blocks in tiles 4 and 5, B's halves
// in 6 and 7, FAST_BF16_AMX_PAIRS pairs at a time. The configuration: every tile 16 rows of 64 bytes.
#define FAST_AMX_BF16_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))
// (GCC's tile intrinsics are assembly that does not tell the compiler which memory a tile load reads: the
// configuration's stores must be done before ldtilecfg reads them)
#define FAST_TILE_FENCE() __asm__ volatile("" ::: "memory")

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} AmxTileConfig;

FAST_AMX_BF16_TARGET void fast_bf16_amx_begin(void) {
    AmxTileConfig config __attribute__((aligned(64)));
    memset(&config, 0, sizeof(config));
    config.palette = 1;
    for (int i = 0; i < 8; i++) { config.rows[i] = 16; config.bytes_per_row[i] = 64; }
    FAST_TILE_FENCE();
    _tile_loadconfig(&config);
}

// (a thread that keeps its tiles configured makes every context switch save 8 KB more)
FAST_AMX_BF16_TARGET void fast_bf16_amx_end(void) { _tile_release(); }

// Rows [0, rows) of one block of A for the AMX tile, rows first (row i's K2p words contiguous), from rows
// whose k is contiguous (s_k == 1), 32 values to 16 words at a time with vcvtne2ps2bf16 (fast_bf16_round's
// rounding, as fast_bf16_pack_block_avx512); the block's other rows and pairs past K zero.
FAST_AMX_BF16_TARGET void fast_bf16_pack_rows_amx(uint32_t* block, const float* first, size_t s_i, int rows, int K, int K2p) {
    for (int i = 0; i < FAST_BF16_AMX_ROWS; i++) {
        uint32_t* words = block + (size_t)i * K2p;
        if (i >= rows) { memset(words, 0, (size_t)K2p * sizeof(uint32_t)); continue; }
        const float* row = first + (size_t)i * s_i;
        for (int k2 = 0; k2 < K2p; k2 += 16) {
            int left = K - 2 * k2;   // values of the row from 2 * k2 (16 words take 32)
            __mmask16 low = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
            __mmask16 high = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
            __m512i w = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(high, row + 2 * k2 + 16),
                                                     _mm512_maskz_loadu_ps(low, row + 2 * k2));
            _mm512_storeu_si512(words + k2, w);
        }
    }
}

// The same block from rows side by side (s_i == 1: row i's k-th value at first[i + k * s_k]): 16 pairs of the
// 16 rows converted a pair at a time (16 rows' words in a register, as fast_bf16_pack_block_avx512 makes
// them), then transposed, so that each row's 16 words are stored whole (a pack pairs first and a scalar
// transposition after it: the trainer's weight gradients, whose A is the output gradient transposed)
FAST_AMX_BF16_TARGET void fast_bf16_pack_columns_amx(uint32_t* block, const float* first, size_t s_k, int rows, int K,
                                                     int K2p) {
    int K2 = (K + 1) / 2;
    __mmask16 mask = rows >= 16 ? 0xffff : (__mmask16)((1u << rows) - 1);
    for (int k0 = 0; k0 < K2p; k0 += 16) {
        __m512i v[16];
        #pragma GCC unroll 16
        for (int j = 0; j < 16; j++) {
            int k2 = k0 + j;
            v[j] = k2 < K2 ? bf16_pair_words(first + (size_t)(2 * k2) * s_k, s_k, mask, 2 * k2 + 1 < K) : _mm512_setzero_si512();
        }
        transpose_16x16_words(v);
        #pragma GCC unroll 16
        for (int r = 0; r < 16; r++) { _mm512_storeu_si512(block + (size_t)r * K2p + k0, v[r]); }
    }
}

// The sums of one item into sums[]: A's first block (rows 0-15) and, with `second`, its next block (rows
// 16-31, 16 * K2p words on) by B's two halves, over every pair of k
FAST_INLINE FAST_AMX_BF16_TARGET void bf16_amx_sums(float sums[][FAST_BF16_PANEL], const uint32_t* a, const uint32_t* b,
                                                   int K2p, int second) {
    _tile_zero(0);
    _tile_zero(1);
    if (second) { _tile_zero(2); _tile_zero(3); }
    for (int k0 = 0; k0 < K2p; k0 += FAST_BF16_AMX_PAIRS) {
        _tile_loadd(4, a + k0, (long)K2p * 4);                                  // A: rows 0-15, K2p words apart
        _tile_loadd(6, b + (size_t)k0 * FAST_BF16_PANEL, FAST_BF16_PANEL * 4);       // B: columns 0-15
        _tile_loadd(7, b + (size_t)k0 * FAST_BF16_PANEL + 16, FAST_BF16_PANEL * 4);  // B: columns 16-31
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        if (second) {
            _tile_loadd(5, a + (size_t)FAST_BF16_AMX_ROWS * K2p + k0, (long)K2p * 4);   // A: rows 16-31
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, &sums[0][0], FAST_BF16_PANEL * 4);
    _tile_stored(1, &sums[0][16], FAST_BF16_PANEL * 4);
    if (second) {
        _tile_stored(2, &sums[FAST_BF16_AMX_ROWS][0], FAST_BF16_PANEL * 4);
        _tile_stored(3, &sums[FAST_BF16_AMX_ROWS][16], FAST_BF16_PANEL * 4);
    }
}

FAST_AMX_BF16_TARGET void fast_bf16_tile_amx(float* out, size_t out_row, const uint32_t* a, const uint32_t* b, int K2p,
                                             int rows, int cols, int accumulate) {
    float sums[2 * FAST_BF16_AMX_ROWS][FAST_BF16_PANEL] __attribute__((aligned(64)));
    if (rows > FAST_BF16_AMX_ROWS) { bf16_amx_sums(sums, a, b, K2p, 1); }   // (the flag a constant in each copy:
    else { bf16_amx_sums(sums, a, b, K2p, 0); }                            // a test in the loop cost 2-3%)
    for (int r = 0; r < rows; r++) {
        bf16_tile_store_row(out + (size_t)r * out_row, _mm512_load_ps(sums[r]), _mm512_load_ps(sums[r] + 16), cols, accumulate);
    }
}
#endif

// The packing's rows [0, rows) of one block (cpu_fast.c's fast_bf16_pack; its padding already zero) with
// vcvtne2ps2bf16 / vcvtneps2bf16, whose rounding is fast_bf16_round's (nearest even, NaN kept quiet, subnormal
// inputs to a signed zero): the scalar packing's words bit for bit. Rows along k (s_k == 1): 32 values of a
// row are 16 words, 16 rows' transposed in registers to their pairs' places (a last rows % 16 scattered row
// by row); rows side by side (s_i == 1): 16 rows' words a pair.
FAST_BF16_AVX512_TARGET void fast_bf16_pack_block_avx512(uint32_t* block, const float* first, size_t s_i, size_t s_k,
                                                         int rows, int K, int width) {
    int K2 = (K + 1) / 2;
    if (s_k == 1) {
        // 16 rows at a time: each row's 16 words of 16 pairs, the 16 x 16 words transposed in registers, so
        // each pair's 16 words are stored whole (the trainer's LM head forward, 576 -> 4096 over 600 rows, one
        // thread: 7.1 -> 5.4 ms with AMX's tiles, against a scatter a row)
        int vector_pairs = K / 32 * 16, i0 = 0;   // pairs [0, vector_pairs) 16 at a time, the rest one by one
        for (; i0 + 16 <= rows; i0 += 16) {
            const float* row0 = first + (size_t)i0 * s_i;
            for (int k2 = 0; k2 < vector_pairs; k2 += 16) {
                __m512i v[16];
                #pragma GCC unroll 16
                for (int r = 0; r < 16; r++) {
                    const float* row = row0 + (size_t)r * s_i + 2 * k2;
                    v[r] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 16), _mm512_loadu_ps(row));
                }
                transpose_16x16_words(v);
                #pragma GCC unroll 16
                for (int j = 0; j < 16; j++) { _mm512_storeu_si512(block + (size_t)(k2 + j) * width + i0, v[j]); }
            }
        }
        __m512i places = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(width));
        for (int i = i0; i < rows; i++) {   // the rows past the last whole 16
            const float* row = first + (size_t)i * s_i;
            for (int k2 = 0; k2 < vector_pairs; k2 += 16) {
                __m512i words = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 2 * k2 + 16), _mm512_loadu_ps(row + 2 * k2));
                _mm512_i32scatter_epi32(block + (size_t)k2 * width + i, places, words, 4);
            }
        }
        for (int i = 0; i < rows; i++) {   // every row's last pairs (K % 32)
            const float* row = first + (size_t)i * s_i;
            for (int k2 = vector_pairs; k2 < K2; k2++) {
                uint32_t hi = 2 * k2 + 1 < K ? fast_bf16_round(row[2 * k2 + 1]) : 0;
                block[(size_t)k2 * width + i] = fast_bf16_round(row[2 * k2]) | hi << 16;
            }
        }
        return;
    }
    for (int k2 = 0; k2 < K2; k2++) {
        const float* lo = first + (size_t)(2 * k2) * s_k;
        uint32_t* words = block + (size_t)k2 * width;
        for (int i = 0; i < rows; i += 16) {
            __mmask16 mask = rows - i >= 16 ? 0xffff : (__mmask16)((1u << (rows - i)) - 1);
            _mm512_mask_storeu_epi32(words + i, mask, bf16_pair_words(lo + i, s_k, mask, 2 * k2 + 1 < K));
        }
    }
}
#endif

// ----------------------------------------------------------------------------
// matmul backward, AVX-512: out (R, C) += a (R, K) @ b (K, C), each element's sum over k in order from
// zero, then added to out: matmul_backward_cpu's order, but each term added by a fused multiply-add (the
// product not rounded on its own: 1.5x faster than a multiply and an add on the trainer's LM head, where
// the adds were the bound; results within a few ulp of the reference's, and the same for any number of
// threads). Register tiles of 4 rows by 64 columns (16 accumulators) run along k; a sum left
// unfinished at the end of a chunk of k waits in `partial` and resumes from there, which keeps each sum's
// order. One work item: rows [r0, r0 + FAST_BACKWARD_BLOCK_ROWS) by columns [c0, c0 + 64), over k in
// chunks of FAST_BACKWARD_K_CHUNK (b's chunk, 32 KB, stays in L1 while the rows pass over it).
// Measured against the portable tile on the trainer's shapes: see tools/bench_ops.c.

#define FAST_BACKWARD_K_CHUNK 128

FAST_AVX512_TARGET void fast_matmul_backward_block_avx512(float* out, const float* a, size_t a_row, size_t a_k,
                                                         const float* b, int R, int K, int C, int r0, int c0) {
    int nr = R - r0 < FAST_BACKWARD_BLOCK_ROWS ? R - r0 : FAST_BACKWARD_BLOCK_ROWS;
    int nc = C - c0 < 64 ? C - c0 : 64;
    __mmask16 masks[4];
    for (int v = 0; v < 4; v++) {
        int left = nc - 16 * v;
        masks[v] = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
    }
    float partial[FAST_BACKWARD_BLOCK_ROWS][64] __attribute__((aligned(64)));
    for (int k0 = 0; k0 < K; k0 += FAST_BACKWARD_K_CHUNK) {
        int k1 = K - k0 < FAST_BACKWARD_K_CHUNK ? K : k0 + FAST_BACKWARD_K_CHUNK;
        for (int i0 = 0; i0 < nr; i0 += 4) {
            const float* a_rows[4];   // a row past the block's end reads the last row again (its sum is not stored)
            for (int i = 0; i < 4; i++) { a_rows[i] = a + (size_t)(r0 + (i0 + i < nr ? i0 + i : nr - 1)) * a_row; }
            __m512 acc[4][4];
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                #pragma GCC unroll 4
                for (int v = 0; v < 4; v++) { acc[i][v] = k0 == 0 ? _mm512_setzero_ps() : _mm512_load_ps(&partial[i0 + i][16 * v]); }
            }
            for (int k = k0; k < k1; k++) {
                const float* b_row = b + (size_t)k * C + c0;
                __m512 bv[4];
                #pragma GCC unroll 4
                for (int v = 0; v < 4; v++) { bv[v] = _mm512_maskz_loadu_ps(masks[v], b_row + 16 * v); }
                #pragma GCC unroll 4
                for (int i = 0; i < 4; i++) {
                    __m512 factor = _mm512_set1_ps(a_rows[i][(size_t)k * a_k]);
                    #pragma GCC unroll 4
                    for (int v = 0; v < 4; v++) { acc[i][v] = _mm512_fmadd_ps(factor, bv[v], acc[i][v]); }
                }
            }
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                #pragma GCC unroll 4
                for (int v = 0; v < 4; v++) { _mm512_store_ps(&partial[i0 + i][16 * v], acc[i][v]); }
            }
        }
    }
    if (K == 0) { memset(partial, 0, sizeof(partial)); }   // every sum is +0, and added as the reference adds it
    for (int i = 0; i < nr; i++) {
        float* o = out + (size_t)(r0 + i) * C + c0;
        for (int v = 0; v < 4; v++) {
            __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], o + 16 * v), _mm512_load_ps(&partial[i][16 * v]));
            _mm512_mask_storeu_ps(o + 16 * v, masks[v], sum);
        }
    }
}

// The same sums on AVX2 (the same bits as the AVX-512 block: each sum over k in order from zero with
// fused multiply-adds, resumed across chunks of k, then added to out), in register tiles of 6 rows by 16
// columns (12 accumulators: the FMA latency covered with room to spare, 8 loads for 12 FMAs). One work
// item: rows [r0, r0 + FAST_BACKWARD_BLOCK_ROWS_AVX2) by columns [c0, c0 + 16). Each chunk of b (its
// FAST_BACKWARD_K_CHUNK rows' 16 columns: one 64-byte piece of each of 128 rows, C floats apart, which
// spans more pages than the L1 TLB holds) is first copied into one contiguous 8 KB buffer that the block's
// 20 tiles then read; zeros past column C, whose sums are not stored. The caller gives a's rows contiguous
// in k (matmul_backward_tiles transposes the weight gradient's dout). Measured on the 2-core EPYC (Zen 3),
// one thread, the trainer's LM head backward (190 rows, 8192 x 576; tools/bench_ops.c, old and new
// alternating), input gradient / weight gradient: tiles of 4 rows by 16 reading b and a in place 44-60 /
// 49-72 ms, these 33 / 39-58 ms, OpenBLAS 23 / 23 ms. A whole trainer step (a 363-column record, one
// thread): 1.24-1.43 s before this and the forward's 4 x 3 tiles, 0.91-1.06 s after (OpenBLAS 0.94 s).

// One register tile's sums over a chunk of kn values of k: acc[i][v] += a_rows[i][k] * b[k][8v .. 8v + 8),
// b the packed chunk (16 floats a row).
FAST_INLINE FAST_AVX2_TARGET void avx2_backward_tile(__m256 acc[6][2], const float* const a_rows[6], const float* b,
                                                     int kn) {
    for (int k = 0; k < kn; k++) {
        __m256 b0 = _mm256_load_ps(b + 16 * k), b1 = _mm256_load_ps(b + 16 * k + 8);
        #pragma GCC unroll 6
        for (int i = 0; i < 6; i++) {
            __m256 factor = _mm256_broadcast_ss(&a_rows[i][k]);
            acc[i][0] = _mm256_fmadd_ps(factor, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(factor, b1, acc[i][1]);
        }
    }
}

FAST_AVX2_TARGET void fast_matmul_backward_block_avx2(float* out, const float* a, size_t a_row, const float* b, int R,
                                                     int K, int C, int r0, int c0) {
    int nr = R - r0 < FAST_BACKWARD_BLOCK_ROWS_AVX2 ? R - r0 : FAST_BACKWARD_BLOCK_ROWS_AVX2;
    int nc = C - c0 < 16 ? C - c0 : 16;
    __m256i masks[2];
    for (int v = 0; v < 2; v++) {
        masks[v] = _mm256_cmpgt_epi32(_mm256_set1_epi32(nc - 8 * v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    float partial[FAST_BACKWARD_BLOCK_ROWS_AVX2][16] __attribute__((aligned(32)));
    float packed[FAST_BACKWARD_K_CHUNK][16] __attribute__((aligned(32)));
    for (int k0 = 0; k0 < K; k0 += FAST_BACKWARD_K_CHUNK) {
        int kn = K - k0 < FAST_BACKWARD_K_CHUNK ? K - k0 : FAST_BACKWARD_K_CHUNK;
        for (int k = 0; k < kn; k++) {
            const float* b_row = b + (size_t)(k0 + k) * C + c0;
            _mm256_store_ps(packed[k], _mm256_maskload_ps(b_row, masks[0]));
            _mm256_store_ps(packed[k] + 8, _mm256_maskload_ps(b_row + 8, masks[1]));
        }
        for (int i0 = 0; i0 < nr; i0 += 6) {
            const float* a_rows[6];   // a row past the block's end reads the last row again (its sum is not stored)
            for (int i = 0; i < 6; i++) { a_rows[i] = a + (size_t)(r0 + (i0 + i < nr ? i0 + i : nr - 1)) * a_row + k0; }
            __m256 acc[6][2];
            #pragma GCC unroll 6
            for (int i = 0; i < 6; i++) {
                #pragma GCC unroll 2
                for (int v = 0; v < 2; v++) { acc[i][v] = k0 == 0 ? _mm256_setzero_ps() : _mm256_load_ps(&partial[i0 + i][8 * v]); }
            }
            avx2_backward_tile(acc, a_rows, &packed[0][0], kn);
            #pragma GCC unroll 6
            for (int i = 0; i < 6; i++) {
                #pragma GCC unroll 2
                for (int v = 0; v < 2; v++) { _mm256_store_ps(&partial[i0 + i][8 * v], acc[i][v]); }
            }
        }
    }
    if (K == 0) { memset(partial, 0, sizeof(partial)); }   // every sum is +0, and added as the reference adds it
    for (int i = 0; i < nr; i++) {
        float* o = out + (size_t)(r0 + i) * C + c0;
        for (int v = 0; v < 2; v++) {
            __m256 sum = _mm256_add_ps(_mm256_maskload_ps(o + 8 * v, masks[v]), _mm256_load_ps(&partial[i][8 * v]));
            _mm256_maskstore_ps(o + 8 * v, masks[v], sum);
        }
    }
}

// ----------------------------------------------------------------------------
// matmul, AVX-512: one block of 32 columns of a weight row dequantised into two zmm registers, multiplied
// into the accumulators of up to 16 input rows; R weight rows at a time so that at least 8 independent
// accumulator chains hide the FMA latency. Tails of F32/F16/BF16 rows (C % 32 != 0) use masked loads.

static size_t fast_block_bytes(int type) { return type == TYPE_Q8_0 ? 34 : type == TYPE_Q4_0 ? 18 : 20; }
#define FAST_SCALE_CHUNK 64   // blocks whose fp16 weight scales are converted to fp32 at a time

// The fp32 scales d (and, for Q4_1, offsets m) of n consecutive blocks of one weight row, 16 blocks at a
// time: one gather of the 4 bytes at each block's start (d, then m or the first quants), converted from
// fp16 in registers. (Copying the halves to memory first stalls on store-to-load forwarding: measured 2x
// slower at T = 1.) Entries past the n blocks (up to a multiple of 16) are zero.
FAST_INLINE FAST_AVX512_TARGET void avx512_row_scales(float* d, float* m, const uint8_t* first_block, int n, int type) {
    int block_bytes = (int)fast_block_bytes(type);
    __m512i offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(block_bytes));
    for (int k = 0; k < n; k += 16) {
        __mmask16 mask = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
        __m512i words = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, offsets,
                                                    first_block + (size_t)k * block_bytes, 1);
        _mm512_store_ps(d + k, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(words)));   // the low halves
        if (type == TYPE_Q4_1) { _mm512_store_ps(m + k, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(words, 16)))); }
    }
}

// Columns [c, c + 32) of one stored row as two vectors of 16 floats (lanes past the mask are zero). For
// the quantised types, d and m are the block's scale and offset in fp32 (from avx512_row_scales).
FAST_INLINE FAST_AVX512_TARGET void avx512_load_block(__m512* w0, __m512* w1, const uint8_t* row, int type, int c,
                                                      __mmask16 mask0, __mmask16 mask1, float d, float m) {
    if (type == TYPE_F32) {
        const float* p = (const float*)row + c;
        *w0 = _mm512_maskz_loadu_ps(mask0, p);
        *w1 = _mm512_maskz_loadu_ps(mask1, p + 16);
    } else if (type == TYPE_F16) {
        const uint16_t* p = (const uint16_t*)row + c;
        *w0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask0, p));
        *w1 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask1, p + 16));
    } else if (type == TYPE_BF16) {
        const uint16_t* p = (const uint16_t*)row + c;
        *w0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask0, p)), 16));
        *w1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask1, p + 16)), 16));
    } else if (type == TYPE_Q8_0) {
        const uint8_t* block = row + (size_t)(c / FAST_QK) * 34;
        __m512 scale = _mm512_set1_ps(d);
        __m128i q0 = _mm_loadu_si128((const __m128i*)(block + 2));
        __m128i q1 = _mm_loadu_si128((const __m128i*)(block + 18));
        *w0 = _mm512_mul_ps(scale, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)));
        *w1 = _mm512_mul_ps(scale, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)));
    } else if (type == TYPE_Q4_0 || type == TYPE_Q4_1) {
        // 16 possible values per block: build them (d * (q - 8), or d * q + m rounded twice as
        // dequantize_row does) and look each nibble up with a permute, which reads the low 4 bits of
        // the index, so the low nibbles need no mask.
        const uint8_t* block = row + (size_t)(c / FAST_QK) * (type == TYPE_Q4_0 ? 18 : 20);
        const uint8_t* qs = block + (type == TYPE_Q4_0 ? 2 : 4);
        __m512 scale = _mm512_set1_ps(d);
        __m512 table;
        if (type == TYPE_Q4_0) {
            table = _mm512_mul_ps(scale, _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7));
        } else {
            table = _mm512_add_ps(_mm512_mul_ps(scale, _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)),
                                  _mm512_set1_ps(m));
        }
        __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)qs));
        *w0 = _mm512_permutexvar_ps(q, table);
        *w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table);
    }
}

// out[t][o] for R weight rows starting at `row` (row_bytes apart) and TB input rows starting at x.
// R, TB and type are constants at every call site, so the loops unroll and the accumulators live in
// registers (R * TB accumulators, 2 * R weight vectors, 2 input vectors: at most 26 of the 32 zmm).
// Each accumulator sums its lanes' products in column order, one FMA at a time, and is reduced at the
// end, so an output element's arithmetic is the same for every R and TB: a row's result does not
// depend on T or on the other rows of the batch (decode and a verify pass agree bit for bit).
FAST_INLINE FAST_AVX512_TARGET void avx512_tile(float* out, const float* x, const uint8_t* row, size_t row_bytes,
                                                int type, int C, int OC, int R, int TB) {
    // out: (TB, OC) at the tile's first row and column; x: (TB, C)
    __m512 acc[8][16];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        #pragma GCC unroll 16
        for (int t = 0; t < TB; t++) { acc[r][t] = _mm512_setzero_ps(); }
    }
    int full = C / FAST_QK * FAST_QK;
    int quantised = type == TYPE_Q8_0 || type == TYPE_Q4_0 || type == TYPE_Q4_1;
    float d[8][FAST_SCALE_CHUNK + 16] __attribute__((aligned(64)));   // the quantised types' block scales
    float m[8][FAST_SCALE_CHUNK + 16] __attribute__((aligned(64)));   // and offsets, a chunk at a time
    for (int c = 0; c < C; c += FAST_QK) {
        __mmask16 mask0 = 0xffff, mask1 = 0xffff;
        if (c >= full) {   // the tail of an F32/F16/BF16 row
            int left = C - c;
            mask0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            mask1 = left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        }
        int b = c / FAST_QK, k = b % FAST_SCALE_CHUNK;
        if (quantised && k == 0) {
            int n = C / FAST_QK - b < FAST_SCALE_CHUNK ? C / FAST_QK - b : FAST_SCALE_CHUNK;
            #pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                avx512_row_scales(d[r], m[r], row + r * row_bytes + (size_t)b * fast_block_bytes(type), n, type);
            }
        }
        __m512 w0[8], w1[8];
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            avx512_load_block(&w0[r], &w1[r], row + r * row_bytes, type, c, mask0, mask1, quantised ? d[r][k] : 0.0f,
                              quantised ? m[r][k] : 0.0f);
        }
        #pragma GCC unroll 16
        for (int t = 0; t < TB; t++) {
            __m512 x0 = _mm512_maskz_loadu_ps(mask0, x + (size_t)t * C + c);
            __m512 x1 = _mm512_maskz_loadu_ps(mask1, x + (size_t)t * C + c + 16);
            #pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                acc[r][t] = _mm512_fmadd_ps(w0[r], x0, acc[r][t]);
                acc[r][t] = _mm512_fmadd_ps(w1[r], x1, acc[r][t]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        #pragma GCC unroll 16
        for (int t = 0; t < TB; t++) { out[(size_t)t * OC + r] = _mm512_reduce_add_ps(acc[r][t]); }
    }
}

// Weight rows per tile for TB input rows: enough independent accumulators (R * TB >= 8) to cover the
// FMA latency (4 cycles, 2 per cycle). Float weights (no dequantisation to share) take at most 8 input
// rows with 2 weight rows: per 32 columns 20 loads for 32 FMAs, where 16 rows by 1 weight row need 34
// loads (the loads were the bound: the trainer's LM head, 190 x 576 -> 8192 fp32, 35.6 -> 25 ms).
static int fast_tile_rows(int type, int TB) {
    if (tensor_type_block_size(type) == 1 && TB == 8) { return 2; }
    return TB >= 8 ? 1 : TB >= 4 ? 2 : TB >= 2 ? 4 : 8;
}

// One function per weight type, each with the tiles it needs as constants: TB input rows with
// R = fast_tile_rows(TYPE, TB) weight rows, and TB = 0 for a single row by a single row (the panel's tail).
// Quantised types have every TB from 1 to 16 (their dequantisation is shared by the TB rows, so a
// verify pass of, say, 7 rows should not pay for it twice); float types, whose weights need little or no
// conversion, have TB = 1, 2, 4, 8, and a batch of 7 runs as 4 + 2 + 1 (which keeps compile time down).
#define FAST_TILE_CASE(TB_) case TB_: avx512_tile(out, x, row, row_bytes, TYPE, C, OC, fast_tile_rows(TYPE, TB_), TB_); break;
#define FAST_TILE_FUNCTION(NAME, TYPE_VALUE, CASES) \
static FAST_AVX512_TARGET void avx512_tiles_##NAME(float* out, const float* x, const uint8_t* row, size_t row_bytes, \
                                                    int C, int OC, int TB) { \
    enum { TYPE = TYPE_VALUE }; \
    switch (TB) { \
        case 0: avx512_tile(out, x, row, row_bytes, TYPE, C, OC, 1, 1); break; \
        CASES \
        default: break; \
    } \
}
#define FAST_TB_ALL FAST_TILE_CASE(1) FAST_TILE_CASE(2) FAST_TILE_CASE(3) FAST_TILE_CASE(4) FAST_TILE_CASE(5) \
    FAST_TILE_CASE(6) FAST_TILE_CASE(7) FAST_TILE_CASE(8) FAST_TILE_CASE(9) FAST_TILE_CASE(10) FAST_TILE_CASE(11) \
    FAST_TILE_CASE(12) FAST_TILE_CASE(13) FAST_TILE_CASE(14) FAST_TILE_CASE(15) FAST_TILE_CASE(16)
#define FAST_TB_POWERS FAST_TILE_CASE(1) FAST_TILE_CASE(2) FAST_TILE_CASE(4) FAST_TILE_CASE(8)
FAST_TILE_FUNCTION(f32, TYPE_F32, FAST_TB_POWERS)
FAST_TILE_FUNCTION(f16, TYPE_F16, FAST_TB_POWERS)
FAST_TILE_FUNCTION(bf16, TYPE_BF16, FAST_TB_POWERS)
FAST_TILE_FUNCTION(q8_0, TYPE_Q8_0, FAST_TB_ALL)
FAST_TILE_FUNCTION(q4_0, TYPE_Q4_0, FAST_TB_ALL)
FAST_TILE_FUNCTION(q4_1, TYPE_Q4_1, FAST_TB_ALL)

// Input rows served by the next tile: up to FAST_ROWS, for the float types a power of two up to 8.
static int fast_tile_batch(int type, int rows_left) {
    int TB = rows_left < FAST_ROWS ? rows_left : FAST_ROWS;
    if (tensor_type_block_size(type) == 1) {
        if (TB > 8) { TB = 8; }
        while (TB & (TB - 1)) { TB &= TB - 1; }
    }
    return TB;
}

typedef void (*FastTiles)(float* out, const float* x, const uint8_t* row, size_t row_bytes, int C, int OC, int TB);

static FastTiles avx512_tiles_for(int type) {
    switch (type) {
    case TYPE_F32: return avx512_tiles_f32;
    case TYPE_F16: return avx512_tiles_f16;
    case TYPE_BF16: return avx512_tiles_bf16;
    case TYPE_Q8_0: return avx512_tiles_q8_0;
    case TYPE_Q4_0: return avx512_tiles_q4_0;
    default: return avx512_tiles_q4_1;
    }
}


// A family of register tiles: the tiles themselves, the input rows the next tile serves, the weight rows a
// tile of TB input rows takes, and the panel (weight rows kept in cache while every input row passes over
// them: a multiple of every tile's weight rows, so that a panel's last rows rarely run one by one).
typedef struct {
    FastTiles tiles;
    int (*batch_for)(int type, int rows_left);
    int (*rows_for)(int type, int TB);
    int panel;
} FastTileScheme;

// The panel loop of the fp32-activation matmuls (AVX-512, and AVX2's fp32 tiles below): panels of
// scheme.panel weight rows, tiles of TB = batch_for input rows by rows_for(type, TB) weight rows, the
// panel's last rows one by one (the same arithmetic per element). Computes out[:, first_row:last_row].
static void fast_matmul_rows_panels(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row,
                                    int last_row, FastTileScheme scheme) {
    // out: (T, OC); inp: (T, C); weight: (OC, C)
    size_t row_bytes = fast_row_bytes(weight.type, C);
    FastTiles tiles = scheme.tiles;
    for (int panel = first_row; panel < last_row; panel += scheme.panel) {
        int panel_end = panel + scheme.panel < last_row ? panel + scheme.panel : last_row;
        for (int t0 = 0, TB; t0 < T; t0 += TB) {
            TB = scheme.batch_for(weight.type, T - t0);
            int R = scheme.rows_for(weight.type, TB), o = panel;
            for (; o + R <= panel_end; o += R) {
                tiles(out + (size_t)t0 * OC + o, inp + (size_t)t0 * C, (const uint8_t*)weight.data + (size_t)o * row_bytes,
                      row_bytes, C, OC, TB);
            }
            for (; o < panel_end; o++) {
                for (int t = t0; t < t0 + TB; t++) {
                    tiles(out + (size_t)t * OC + o, inp + (size_t)t * C, (const uint8_t*)weight.data + (size_t)o * row_bytes,
                          row_bytes, C, OC, 0);
                }
            }
        }
    }
}

void fast_matmul_rows_avx512(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row,
                             int last_row) {
    FastTileScheme scheme = { avx512_tiles_for(weight.type), fast_tile_batch, fast_tile_rows, 32 };
    fast_matmul_rows_panels(out, inp, weight, T, C, OC, first_row, last_row, scheme);
}

// ----------------------------------------------------------------------------
// AVX2 helpers the kernels below share

// The largest of 8 lanes (no NaN among them)
FAST_INLINE FAST_AVX2_TARGET float avx2_reduce_max(__m256 v) {
    __m128 half = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    half = _mm_max_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_max_ss(half, _mm_shuffle_ps(half, half, 1)));
}

// A block of 32 values into v[0..3]; returns whether all are finite, and *amax their largest magnitude
FAST_INLINE FAST_AVX2_TARGET int avx2_load_block(const float* x, __m256* v, float* amax) {
    const __m256 sign = _mm256_set1_ps(-0.0f), infinity = _mm256_set1_ps(INFINITY);
    __m256 largest = _mm256_setzero_ps(), finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 magnitude = _mm256_andnot_ps(sign, v[k]);
        finite = _mm256_and_ps(finite, _mm256_cmp_ps(magnitude, infinity, _CMP_LT_OQ));   // NaN, inf: 0
        largest = _mm256_max_ps(largest, magnitude);
    }
    if (_mm256_movemask_ps(finite) != 0xff) { return 0; }
    *amax = avx2_reduce_max(largest);
    return 1;
}

// 32 int32 values, each in [-128, 127] (so the saturating packs change nothing), stored as 32 bytes in
// order (the packs work within 128-bit lanes; the permute restores element order)
FAST_INLINE FAST_AVX2_TARGET void avx2_store_int8(void* out, const __m256i* q) {
    __m256i words = _mm256_packs_epi32(q[0], q[1]), words2 = _mm256_packs_epi32(q[2], q[3]);
    __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words, words2), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i*)out, bytes);
}

// The sum of 8 lanes (a fixed tree: halves, pairs, then the last two)
FAST_INLINE FAST_AVX2_TARGET float avx2_reduce_add(__m256 v) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    half = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(half, _mm_shuffle_ps(half, half, 1)));
}

// ----------------------------------------------------------------------------
// fp32 weights on AVX2 (the trainer's draft, its held-back evaluation): avx512_tile's scheme at 8 lanes.
// R weight rows by TB input rows of accumulators (R * TB = 8 or 12: the FMA latency covered), 8 columns
// at a time, a row's tail by masked loads; each accumulator sums its lanes' products in column order, one
// FMA at a time, and is reduced by one fixed tree at the end, so an output element's arithmetic is the same
// for every R and TB (a row's result does not depend on T or the other rows).
// Other weight types take the portable span (quantised weights take the int8 kernel on this level).
// Measured on the 2-core EPYC (Zen 3), one thread, the trainer's LM head (190 rows, 576 -> 4096): the
// portable span 66 ms, the earlier tiles of 1 weight row by 8 input rows 20 ms; over 363 rows (576 ->
// 4096, a scratch timer, old and new alternating) those 21 GMAC/s, these 4 x 3 tiles 29.

FAST_INLINE FAST_AVX2_TARGET void avx2_f32_tile(float* out, const float* x, const float* w, int C, int OC, int R, int TB) {
    // out: (TB, OC) at the tile's first row and column; x: (TB, C); w: R rows of C
    __m256 acc[8][8];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        #pragma GCC unroll 8
        for (int t = 0; t < TB; t++) { acc[r][t] = _mm256_setzero_ps(); }
    }
    int c = 0;
    for (; c + 8 <= C; c += 8) {   // whole vectors: no mask register (12 accumulators, 4 weights and an
                                   // input are already one more than the 16 registers: the compiler folds a
                                   // load into an FMA; a live mask spilled accumulators, 21 -> 18 GMAC/s)
        __m256 wv[8];
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) { wv[r] = _mm256_loadu_ps(w + (size_t)r * C + c); }
        #pragma GCC unroll 8
        for (int t = 0; t < TB; t++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)t * C + c);
            #pragma GCC unroll 8
            for (int r = 0; r < R; r++) { acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]); }
        }
    }
    if (c < C) {   // the row's tail: masked loads, lanes past it zero
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(C - c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        #pragma GCC unroll 8
        for (int t = 0; t < TB; t++) {
            __m256 xv = _mm256_maskload_ps(x + (size_t)t * C + c, mask);
            #pragma GCC unroll 8
            for (int r = 0; r < R; r++) { acc[r][t] = _mm256_fmadd_ps(_mm256_maskload_ps(w + (size_t)r * C + c, mask), xv, acc[r][t]); }
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        #pragma GCC unroll 8
        for (int t = 0; t < TB; t++) { out[(size_t)t * OC + r] = avx2_reduce_add(acc[r][t]); }
    }
}

// Input rows per tile: 3 while there are, then 2, 1. Weight rows: 4 for 3 or 2 input rows, 8 for one (12 or 8
// accumulators). 4 weight rows by 3 input rows load 7 vectors for 12 fused multiply-adds, where the
// earlier 1 by 8 loaded 9 for 8 and was bound by the loads (the trainer's LM head, 363 rows, 576 -> 4096,
// one thread on the EPYC: 25 -> 33 GMAC/s in a side-by-side scratch run).
static int avx2_f32_tile_batch(int type, int rows_left) { (void)type; return rows_left < 3 ? rows_left : 3; }
static int avx2_f32_tile_rows(int type, int TB) { (void)type; return TB >= 2 ? 4 : 8; }

static FAST_AVX2_TARGET void avx2_f32_tiles(float* out, const float* x, const uint8_t* row, size_t row_bytes, int C,
                                            int OC, int TB) {
    (void)row_bytes;   // C floats
    const float* w = (const float*)row;
    switch (TB) {   // avx2_f32_tile_batch: 1 to 3
        case 0: avx2_f32_tile(out, x, w, C, OC, 1, 1); break;
        case 1: avx2_f32_tile(out, x, w, C, OC, 8, 1); break;
        case 2: avx2_f32_tile(out, x, w, C, OC, 4, 2); break;
        default: avx2_f32_tile(out, x, w, C, OC, 4, 3); break;
    }
}

FAST_AVX2_TARGET void fast_matmul_rows_avx2(float* out, const float* inp, Matrix weight, int T, int C, int OC,
                                            int first_row, int last_row) {
    if (weight.type != TYPE_F32) { matmul_rows_portable_body(out, inp, weight, T, C, OC, first_row, last_row); return; }
    FastTileScheme scheme = { avx2_f32_tiles, avx2_f32_tile_batch, avx2_f32_tile_rows, 24 };
    fast_matmul_rows_panels(out, inp, weight, T, C, OC, first_row, last_row, scheme);
}

// fast_expf (cpu_fast.h) on 16 lanes: the same operations in the same order, so the same bits
FAST_INLINE FAST_AVX512_TARGET __m512 fast_expf_avx512(__m512 x) {
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 clamped = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(FAST_EXP_LOW)), _mm512_set1_ps(FAST_EXP_HIGH));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(FAST_EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_sub_ps(clamped, _mm512_mul_ps(n, _mm512_set1_ps(FAST_EXP_C1)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(FAST_EXP_C2)));
    __m512 p = _mm512_set1_ps(FAST_EXP_POLY[0]);
    #pragma GCC unroll 7
    for (int k = 1; k < 8; k++) { p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(FAST_EXP_POLY[k])); }
    return _mm512_mask_mov_ps(_mm512_scalef_ps(p, n), nan, x);
}

// ----------------------------------------------------------------------------
// attention, AVX-512, for head sizes that are multiples of 16 up to FAST_AVX512_MAX_HS (other sizes run the
// portable passes compiled for AVX-512). A score q . k_p is summed in one fixed order: lane l of a vector
// holds the terms d = l mod 16, chained in order (a multiply, then fused multiply-adds), and the 16 partial
// sums are added pairwise, (l, l + 8), (l, l + 4), (l, l + 2), (0, 1). A weighted value is summed over the
// slots a query sees in slot order, acc = fma(w_p, v_p[d], acc), and divided by the weights' sum (also
// added in slot order). Two layouts compute exactly that, per group of at most 16 of an item's queries:
//   few queries (FEW_QUERIES or fewer: a decode step has three per key/value head): one query against 16
//     slots at a time, the 16 partial sums of 16 dot products reduced together by a tree of shuffles and
//     adds (lane j: slot j); scores, then weights, in a row per query; values one query at a time, its HS
//     outputs in registers, each value row read once for up to four queries.
//   many queries (a verify pass's rows): the queries in the lanes, so nothing is summed across lanes: per
//     slot, 16 partial-sum vectors from the transposed queries and the key row's elements broadcast, added
//     by the same tree; weights per slot; values as the few queries' pass computes them, a batch of the
//     lanes' queries at a time, each with its HS outputs in registers.
// So a query's result has the same bits whatever T, the other queries or the layout (a verify pass weighs
// what decode does: tests/test_fast.c checks it), though not the portable passes' bits (those chain mul
// and add). With the items cut to fill 16 lanes (attention_forward_fast), measured on the default model
// (2-core Zen 5, attention_forward_fast alone, 30 layers after 128 cached slots, two threads, alternated
// with the previous kernel, one query at a time everywhere): T = 1 0.14 ms (unchanged), T = 4 0.40 ->
// 0.32, T = 6 0.60 -> 0.39, T = 8 0.77 -> 0.47, T = 12 1.15 -> 0.75, T = 16 1.53 -> 0.87. Tried: every
// score's terms chained d = 0, 1, ... in one lane (no tree: 0.70 ms at T = 12, but a decode step's few
// queries then fill 3 of 16 lanes, 0.19 ms at T = 1; and slots in the lanes for few queries, the key rows
// transposed 16 at a time, 0.30 ms at T = 1: the shuffles cost more than they save).

enum { FEW_QUERIES = FAST_FEW_QUERIES, VALUES_PREFETCH = 8 };

// a group of the item's queries first .. first + count - 1 (count <= 16). A few queries use the item's own
// per-query buffers (scores, then weights, in row i of a->scores; the maximum in a->max_scores[i]; the sums
// as the values pass reads them: values_queries_begin); many use these, lane l holding query first + l:
typedef struct {
    int first, count;
    int end;            // many: slots [0, end) hold every slot a lane sees (a causal prefill's early queries see few)
    float* scores;      // (P, 16): lane l of row p query l's score against slot p, then its weight
    uint16_t* lanes;    // (P): bit l set when query l sees slot p (after the softmax: and is active)
    float max[16];      // per query: its largest score (-inf: it sees no slot above -inf, zeros out)
    __m512 sums;        // per lane, the weights' sum
} AttentionGroup;

// Lane j of the result: the sum of the 16 lanes of v[j] (a fixed tree: halves of 256 bits, of 128, then
// pairs, then single lanes; the last permute puts slot j in lane j).
FAST_INLINE FAST_AVX512_TARGET __m512 avx512_sum_lanes_16(const __m512* v) {
    __m512 a[8], b[4], c[2];
    for (int k = 0; k < 8; k++) {   // chunks 0, 1: slot 2k; chunks 2, 3: slot 2k + 1 (8 partial sums each)
        a[k] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xEE));
    }
    for (int k = 0; k < 4; k++) {   // chunk c: slot 4k + c (4 partial sums)
        b[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0xDD));
    }
    for (int k = 0; k < 2; k++) {   // chunk c, lanes 0..3: slots 8k + c, 8k + 4 + c, 8k + c, 8k + 4 + c
        c[k] = _mm512_add_ps(_mm512_unpacklo_ps(b[2 * k], b[2 * k + 1]), _mm512_unpackhi_ps(b[2 * k], b[2 * k + 1]));
    }
    __m512 sums = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(c[0]), _mm512_castps_pd(c[1]))),
                                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(c[0]), _mm512_castps_pd(c[1]))));
    // lane 4c + l holds slot 4l + c
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), sums);
}

// few: the scores against every slot into the queries' rows, each query's maximum. A block's key rows (4 KB
// at HS = 64) come from L2 once and stay in L1 for every query.
FAST_INLINE FAST_AVX512_TARGET void avx512_few_scores(AttentionGroup* g, const AttentionItem* a, int nv) {
    size_t stride = a->slot_stride;
    int P = a->P;
    const __m512 scale = _mm512_set1_ps(1.0f / sqrtf((float)a->HS)), minus_infinity = _mm512_set1_ps(-INFINITY);
    const float* k_head = a->keys;
    int end = g->first + g->count;
    for (int i = g->first; i < end; i++) { a->max_scores[i] = -INFINITY; }
    for (int p0 = 0; p0 < P; p0 += 16) {
        int n = P - p0 < 16 ? P - p0 : 16;
        __mmask16 in_range = n == 16 ? 0xffff : (__mmask16)((1u << n) - 1);
        // the next block's key rows, prefetched: a decode step's cache has been pushed out of L3 by the weights
        // since the last layer read it (30 layers, 128 slots, a cold cache, two threads: 0.47 -> 0.41 ms fastest,
        // 0.75 -> 0.45 ms mean; the many-query path's own prefetch measured no gain)
        for (int j = 0; j < 16; j++) {
            const char* ahead = (const char*)(k_head + (size_t)(p0 + 16 + j) * stride);
            #pragma GCC unroll 8
            for (int c = 0; c < nv; c++) { _mm_prefetch(ahead + 64 * c, _MM_HINT_T0); }
        }
        for (int i = g->first; i < end; i++) {
            const float* q_th = attention_query(a, i);
            __mmask16 seen = _mm_test_epi8_mask(_mm_maskz_loadu_epi8(in_range, attention_mask_row(a, i) + p0), _mm_set1_epi8(-1));
            __m512 q[8];
            #pragma GCC unroll 8
            for (int c = 0; c < nv; c++) { q[c] = _mm512_loadu_ps(q_th + 16 * c); }
            __m512 dots[16];
            #pragma GCC unroll 16
            for (int j = 0; j < 16; j++) {
                dots[j] = _mm512_setzero_ps();
                if (!(seen >> j & 1)) { continue; }   // (masked out: never read, the score is -inf)
                const float* k_p = k_head + (size_t)(p0 + j) * stride;
                __m512 dot = _mm512_mul_ps(q[0], _mm512_loadu_ps(k_p));
                #pragma GCC unroll 8
                for (int c = 1; c < nv; c++) { dot = _mm512_fmadd_ps(q[c], _mm512_loadu_ps(k_p + 16 * c), dot); }
                dots[j] = dot;
            }
            __m512 s = _mm512_mask_blend_ps(seen, minus_infinity, _mm512_mul_ps(avx512_sum_lanes_16(dots), scale));
            _mm512_mask_storeu_ps(a->scores + (size_t)i * P + p0, in_range, s);
            // the running maximum (NaN never the max; the order of comparisons does not change a maximum)
            float block_max = _mm512_mask_reduce_max_ps(_mm512_cmp_ps_mask(s, s, _CMP_ORD_Q) & in_range, s);
            if (block_max > a->max_scores[i]) { a->max_scores[i] = block_max; }
        }
    }
}

// few: the weights exp(score - max) where seen (else 0), 16 slots at a time. Their sum is taken in
// avx512_few_values, one by one in slot order as it reads them.
FAST_INLINE FAST_AVX512_TARGET void avx512_few_softmax(const AttentionGroup* g, const AttentionItem* a) {
    for (int i = g->first; i < g->first + g->count; i++) {
        if (a->max_scores[i] == -INFINITY) { continue; }   // zeros out (avx512_few_values)
        float* row = a->scores + (size_t)i * a->P;
        const uint8_t* mask_row = attention_mask_row(a, i);
        __m512 max = _mm512_set1_ps(a->max_scores[i]);
        for (int p0 = 0; p0 < a->P; p0 += 16) {
            int n = a->P - p0 < 16 ? a->P - p0 : 16;
            __mmask16 in_range = n == 16 ? 0xffff : (__mmask16)((1u << n) - 1);
            __mmask16 seen = _mm_test_epi8_mask(_mm_maskz_loadu_epi8(in_range, mask_row + p0), _mm_set1_epi8(-1));
            // (the exponential of the seen lanes alone, the others' input zeroed: see avx512_many_softmax)
            __m512 w = _mm512_maskz_mov_ps(seen, fast_expf_avx512(_mm512_maskz_sub_ps(seen, _mm512_maskz_loadu_ps(in_range, row + p0), max)));
            _mm512_mask_storeu_ps(row + p0, in_range, w);
        }
    }
}

// few: the values of queries i0 .. i0 + nq - 1 (nq <= 4) together, each value row loaded once for all of
// them (one query at a time waited on the loads: 13 cycles a slot), prefetched VALUES_PREFETCH slots ahead
// (4, 8 and 16 measured the same; a prefetch past the cache's end never faults)
FAST_INLINE FAST_AVX512_TARGET void avx512_few_values_queries(const AttentionItem* a, int nv, int i0, int nq) {
    size_t stride = a->slot_stride;
    const float* v_head = a->values;
    __m512 acc[4][8];
    ValuesQueries queries;
    values_queries_begin(&queries, a, i0, nq);
    float* sums = queries.sum_weights;
    const uint8_t* const* mask_rows = queries.mask_rows;
    const float* const* weights = queries.weights;
    const int* active = queries.active;
    #pragma GCC unroll 4
    for (int j = 0; j < nq; j++) {
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { acc[j][c] = _mm512_setzero_ps(); }
    }
    for (int p = 0; p < a->P; p++) {
        int any = 0;
        #pragma GCC unroll 4
        for (int j = 0; j < nq; j++) { any |= active[j] & (mask_rows[j][p] != 0); }
        if (!any) { continue; }
        const float* v_p = v_head + (size_t)p * stride;
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { _mm_prefetch((const char*)(v_p + (size_t)VALUES_PREFETCH * stride + 16 * c), _MM_HINT_T0); }
        __m512 v[8];
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { v[c] = _mm512_loadu_ps(v_p + 16 * c); }
        #pragma GCC unroll 4
        for (int j = 0; j < nq; j++) {
            if (!active[j] || !mask_rows[j][p]) { continue; }
            __m512 weight = _mm512_set1_ps(weights[j][p]);
            sums[j] += weights[j][p];
            #pragma GCC unroll 8
            for (int c = 0; c < nv; c++) { acc[j][c] = _mm512_fmadd_ps(weight, v[c], acc[j][c]); }
        }
    }
    #pragma GCC unroll 4
    for (int j = 0; j < nq; j++) {
        float* out = attention_output(a, i0 + j);
        __m512 sum = _mm512_set1_ps(sums[j]);
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { _mm512_storeu_ps(out + 16 * c, active[j] ? _mm512_div_ps(acc[j][c], sum) : acc[j][c]); }
    }
}

FAST_INLINE FAST_AVX512_TARGET void avx512_few_values(const AttentionGroup* g, const AttentionItem* a, int nv) {
    int together = nv <= 4 ? 4 : 2;   // accumulators: together * nv registers
    for (int i = g->first, end = g->first + g->count; i < end; i += together) {
        switch (end - i < together ? end - i : together) {
            case 1: avx512_few_values_queries(a, nv, i, 1); break;
            case 2: avx512_few_values_queries(a, nv, i, 2); break;
            case 3: avx512_few_values_queries(a, nv, i, 3); break;
            default: avx512_few_values_queries(a, nv, i, 4); break;
        }
    }
}

// many: bit l of lanes[p] set when query l's mask row sees slot p; 32 slots at a time; and the end of the
// slots any lane sees: the passes below stop there (the slots past it are masked for every lane, -inf
// scores and zero weights that no sum takes, so stopping changes no bit; a prefill's queries see the
// slots up to their own, so the scores of half the slots were computed for nothing)
FAST_INLINE FAST_AVX512_TARGET void avx512_many_lanes(AttentionGroup* g, const AttentionItem* a) {
    g->end = 0;
    for (int p0 = 0; p0 < a->P; p0 += 32) {
        int n = a->P - p0 < 32 ? a->P - p0 : 32;
        __mmask32 in_range = n == 32 ? 0xffffffffu : (__mmask32)((1u << n) - 1);
        __m512i bits = _mm512_setzero_si512();
        for (int l = 0; l < g->count; l++) {
            __m256i row = _mm256_maskz_loadu_epi8(in_range, attention_mask_row(a, g->first + l) + p0);
            bits = _mm512_mask_add_epi16(bits, _mm256_test_epi8_mask(row, row), bits, _mm512_set1_epi16((short)(1u << l)));
        }
        _mm512_mask_storeu_epi16(g->lanes + p0, in_range, bits);
        __mmask32 any = _mm512_test_epi16_mask(bits, bits) & in_range;
        if (any) { g->end = p0 + 32 - __builtin_clz(any); }
    }
}

// many: the lanes' queries (qt: (HS, 16), the queries transposed) against key rows k0 and k1, in the order
// above: partial sums l and l + 8 together (each of qt's rows loaded once for both keys), added at once
FAST_INLINE FAST_AVX512_TARGET void avx512_many_dot2(__m512* out, const float* qt, const float* k0, const float* k1, int nv) {
    __m512 x[2][8];
    #pragma GCC unroll 8
    for (int l = 0; l < 8; l++) {
        __m512 q = _mm512_load_ps(qt + l * 16), q8 = _mm512_load_ps(qt + (l + 8) * 16);
        __m512 a0 = _mm512_mul_ps(q, _mm512_set1_ps(k0[l])), b0 = _mm512_mul_ps(q8, _mm512_set1_ps(k0[l + 8]));
        __m512 a1 = _mm512_mul_ps(q, _mm512_set1_ps(k1[l])), b1 = _mm512_mul_ps(q8, _mm512_set1_ps(k1[l + 8]));
        #pragma GCC unroll 8
        for (int c = 1; c < nv; c++) {
            int d = 16 * c + l;
            q = _mm512_load_ps(qt + d * 16);
            q8 = _mm512_load_ps(qt + (d + 8) * 16);
            a0 = _mm512_fmadd_ps(q, _mm512_set1_ps(k0[d]), a0);
            b0 = _mm512_fmadd_ps(q8, _mm512_set1_ps(k0[d + 8]), b0);
            a1 = _mm512_fmadd_ps(q, _mm512_set1_ps(k1[d]), a1);
            b1 = _mm512_fmadd_ps(q8, _mm512_set1_ps(k1[d + 8]), b1);
        }
        x[0][l] = _mm512_add_ps(a0, b0);
        x[1][l] = _mm512_add_ps(a1, b1);
    }
    #pragma GCC unroll 2
    for (int s = 0; s < 2; s++) {
        #pragma GCC unroll 4
        for (int l = 0; l < 4; l++) { x[s][l] = _mm512_add_ps(x[s][l], x[s][l + 4]); }
        x[s][0] = _mm512_add_ps(x[s][0], x[s][2]);
        x[s][1] = _mm512_add_ps(x[s][1], x[s][3]);
        out[s] = _mm512_add_ps(x[s][0], x[s][1]);
    }
}

// many: the scores against every slot into (P, 16), each lane's maximum
FAST_INLINE FAST_AVX512_TARGET void avx512_many_scores(AttentionGroup* g, const AttentionItem* a, int nv) {
    size_t stride = a->slot_stride;
    int HS = a->HS;
    float qt[FAST_AVX512_MAX_HS * 16] __attribute__((aligned(64)));
    memset(qt, 0, (size_t)HS * 16 * sizeof(float));
    for (int l = 0; l < g->count; l++) {
        const float* q = attention_query(a, g->first + l);
        for (int d = 0; d < HS; d++) { qt[d * 16 + l] = q[d]; }
    }
    const __m512 scale = _mm512_set1_ps(1.0f / sqrtf((float)HS)), minus_infinity = _mm512_set1_ps(-INFINITY);
    const float* k_head = a->keys;
    __m512 max = minus_infinity;
    for (int p = 0; p < g->end; p += 2) {   // (an odd last slot: paired with itself, stored once)
        int p1 = p + 1 < g->end ? p + 1 : p;
        __m512 dots[2];
        avx512_many_dot2(dots, qt, k_head + (size_t)p * stride, k_head + (size_t)p1 * stride, nv);
        for (int j = 0; j < p1 - p + 1; j++) {
            __mmask16 seen = g->lanes[p + j];
            __m512 s = _mm512_mask_blend_ps(seen, minus_infinity, _mm512_mul_ps(dots[j], scale));
            _mm512_storeu_ps(g->scores + (size_t)(p + j) * 16, s);
            max = _mm512_mask_max_ps(max, seen & _mm512_cmp_ps_mask(s, s, _CMP_ORD_Q), max, s);   // (as above)
        }
    }
    _mm512_storeu_ps(g->max, max);
}

// many: the weights where seen (lanes[p] keeps only active queries' bits from here), each lane's sum
FAST_INLINE FAST_AVX512_TARGET void avx512_many_softmax(AttentionGroup* g) {
    __m512 max = _mm512_loadu_ps(g->max), sums = _mm512_setzero_ps();
    __mmask16 active = _mm512_cmp_ps_mask(max, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    for (int p = 0; p < g->end; p++) {
        __mmask16 seen = g->lanes[p] & active;
        g->lanes[p] = seen;
        float* row = g->scores + (size_t)p * 16;
        // The exponential of the seen lanes alone: an unseen lane's input is zeroed (its weight is zeroed after).
        // Taken of every lane, a masked slot's -inf clamped to exp(-104), a subnormal, and an Intel core
        // finishes each subnormal result in a microcode assist of about a hundred cycles: on a 2-core Xeon with
        // AMX (Sapphire Rapids or later, under KVM), attention alone for 2 rows after 128 slots took 28.5 us a
        // layer against 5.3 for 1 row, 9.0 us with the inputs zeroed (a whole 2-node verify pass 3.38 -> 2.75 ms).
        // AMD's cores take subnormals at full speed, which is why the Zen measurements never showed it. The
        // seen lanes' bits are the same either way.
        __m512 w = _mm512_maskz_mov_ps(seen, fast_expf_avx512(_mm512_maskz_sub_ps(seen, _mm512_loadu_ps(row), max)));
        _mm512_storeu_ps(row, w);
        sums = _mm512_mask_add_ps(sums, seen, sums, w);
    }
    g->sums = sums;
}

// (a batch of values: at most MANY_VALUES_QUERIES queries and MANY_VALUES_REGISTERS accumulators)
enum { MANY_VALUES_REGISTERS = 24, MANY_VALUES_QUERIES = 6 };

// many: the values of the group's lanes l0 .. l0 + nq - 1 together, as the few queries' pass computes them
// (each query's HS outputs in registers, acc = fma(w_p, v_p, acc) in slot order, divided by the lane's sum),
// each value row read once for the nq queries and each weight broadcast once. A verify pass's queries all
// see the cached prefix, so a slot seen by all nq takes unmasked multiply-adds; a slot seen by some (the
// tree's own) masks each query's by its bit. (The earlier pass broadcast every v_p[d] into the 16 lanes:
// 64 broadcasts a slot at HS = 64 against 15 here for 15 queries; the same bits. Measured, 2-core Zen 5,
// attention_forward_fast alone over 30 layers, two threads, the median of 8 alternated runs' fastest:
// T = 6 after 128 slots 0.401 -> 0.371 ms, after 300 0.836 -> 0.804. Tried beside it: the scores four key
// rows at a time, qt's rows read once for four: no gain.)
FAST_INLINE FAST_AVX512_TARGET void avx512_many_values_queries(const AttentionGroup* g, const AttentionItem* a, int nv,
                                                              int l0, int nq) {
    size_t stride = a->slot_stride;
    const float* v_head = a->values;
    unsigned all = (1u << nq) - 1;
    __m512 acc[MANY_VALUES_QUERIES][8];
    #pragma GCC unroll 8
    for (int j = 0; j < nq; j++) {
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { acc[j][c] = _mm512_setzero_ps(); }
    }
    for (int p = 0; p < g->end; p++) {
        unsigned seen = (unsigned)g->lanes[p] >> l0 & all;
        if (!seen) { continue; }
        const float* v_p = v_head + (size_t)p * stride;
        const float* w_p = g->scores + (size_t)p * 16 + l0;
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { _mm_prefetch((const char*)(v_p + (size_t)VALUES_PREFETCH * stride + 16 * c), _MM_HINT_T0); }
        __m512 v[8];
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { v[c] = _mm512_loadu_ps(v_p + 16 * c); }
        if (seen == all) {
            #pragma GCC unroll 8
            for (int j = 0; j < nq; j++) {
                __m512 w = _mm512_set1_ps(w_p[j]);
                #pragma GCC unroll 8
                for (int c = 0; c < nv; c++) { acc[j][c] = _mm512_fmadd_ps(w, v[c], acc[j][c]); }
            }
        } else {
            #pragma GCC unroll 8
            for (int j = 0; j < nq; j++) {
                __mmask16 on = (__mmask16)(0u - (seen >> j & 1u));
                __m512 w = _mm512_set1_ps(w_p[j]);
                #pragma GCC unroll 8
                for (int c = 0; c < nv; c++) { acc[j][c] = _mm512_mask3_fmadd_ps(w, v[c], acc[j][c], on); }
            }
        }
    }
    float sums[16];
    _mm512_storeu_ps(sums, g->sums);
    #pragma GCC unroll 8
    for (int j = 0; j < nq; j++) {
        float* out = attention_output(a, g->first + l0 + j);
        int active = g->max[l0 + j] != -INFINITY;
        __m512 sum = _mm512_set1_ps(sums[l0 + j]);
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { _mm512_storeu_ps(out + 16 * c, active ? _mm512_div_ps(acc[j][c], sum) : acc[j][c]); }
    }
}

// many: the values, the lanes in batches of as many queries as keep their outputs in registers (24 at
// most; 6 queries at most, so that few shapes are compiled)
FAST_INLINE FAST_AVX512_TARGET void avx512_many_values(const AttentionGroup* g, const AttentionItem* a, int nv) {
    int most = MANY_VALUES_REGISTERS / nv < MANY_VALUES_QUERIES ? MANY_VALUES_REGISTERS / nv : MANY_VALUES_QUERIES;
    int batches = (g->count + most - 1) / most;
    for (int b = 0, l0 = 0; b < batches; b++) {
        int nq = (g->count - l0) / (batches - b);   // even batches: 15 lanes at nv 4 go 5, 5, 5
        nq += (g->count - l0) % (batches - b) != 0;
        // (nq <= most: each shape's condition is most's own bound, so the shapes no nv reaches are not compiled,
        // which doubled the compile time; 3 queries fit at every nv)
        switch (nq) {
            case 1: avx512_many_values_queries(g, a, nv, l0, 1); break;
            case 2: avx512_many_values_queries(g, a, nv, l0, 2); break;
            case 3: avx512_many_values_queries(g, a, nv, l0, 3); break;
            case 4: if (4 * nv <= MANY_VALUES_REGISTERS) { avx512_many_values_queries(g, a, nv, l0, 4); } break;
            case 5: if (5 * nv <= MANY_VALUES_REGISTERS) { avx512_many_values_queries(g, a, nv, l0, 5); } break;
            default: if (6 * nv <= MANY_VALUES_REGISTERS) { avx512_many_values_queries(g, a, nv, l0, 6); } break;
        }
        l0 += nq;
    }
}

FAST_INLINE FAST_AVX512_TARGET void avx512_attention_group(AttentionGroup* g, const AttentionItem* a, int nv) {
    if (g->count <= FEW_QUERIES) {
        avx512_few_scores(g, a, nv);
        avx512_few_softmax(g, a);
        avx512_few_values(g, a, nv);
    } else {
        avx512_many_lanes(g, a);
        avx512_many_scores(g, a, nv);
        avx512_many_softmax(g);
        avx512_many_values(g, a, nv);
    }
}

FAST_AVX512_TARGET void fast_attention_item_avx512(const AttentionItem* item) {
    if (!fast_attention_lanes_fit(item->HS) || item->lanes == NULL) {
        attention_scores_body(item); attention_softmax(item); attention_values_body(item);
        return;
    }
    for (int first = 0; first < item->n_queries; first += 16) {
        AttentionGroup g;
        g.first = first;
        g.count = item->n_queries - first < 16 ? item->n_queries - first : 16;
        g.scores = item->scores;
        g.lanes = item->lanes;
        switch (item->HS / 16) {   // a constant per call: a key row's registers and a query's outputs stay in registers
            case 1: avx512_attention_group(&g, item, 1); break;
            case 2: avx512_attention_group(&g, item, 2); break;
            case 3: avx512_attention_group(&g, item, 3); break;
            case 4: avx512_attention_group(&g, item, 4); break;
            case 5: avx512_attention_group(&g, item, 5); break;
            case 6: avx512_attention_group(&g, item, 6); break;
            case 7: avx512_attention_group(&g, item, 7); break;
            default: avx512_attention_group(&g, item, 8); break;
        }
    }
}

FAST_AVX512_TARGET void fast_swiglu_avx512(float* out, const float* gate, const float* up, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int i = 0; i < n; i += 16) {
        __mmask16 in_range = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 g = _mm512_maskz_loadu_ps(in_range, gate + i), u = _mm512_maskz_loadu_ps(in_range, up + i);
        __m512 minus_g = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32((int)0x80000000u)));
        __m512 e = fast_expf_avx512(minus_g);
        _mm512_mask_storeu_ps(out + i, in_range, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), u));
    }
}

// ----------------------------------------------------------------------------
// attention and SwiGLU, AVX2: the AVX-512 kernels above at half the width, for head sizes 32 and 64 (q,
// a block's dot products and a query's output stay in the 16 ymm registers; other sizes run the portable
// passes compiled for AVX2). On the 2-core EPYC (Zen 3), one thread, the portable passes took 2.3 ms of a
// 12 ms decode step and 7.9 of a 31 ms 6-row pass, SwiGLU's scalar exponentials 0.6 and 3.8 ms; these
// kernels 1.1 and 2.8 ms, SwiGLU 0.05 and 0.28 ms.
//   scores: one query against 8 slots at a time, 8 dot products in 8 registers (lane l: the terms d = l
//     mod 8, in order), reduced together by one fixed tree (lane j: slot j); the same arithmetic for every
//     slot whatever its place in a block, T or the other queries, so a verify pass scores what decode does.
//     Each 8 elements of q are loaded once per block, the queries' rows and running maxima (a vector per
//     query) are kept at hand rather than found again per block (an integer division each), and a block is
//     stored whole (vmaskmovps only for the cache's last block: on Zen 3 a masked store costs many times a
//     store). Measured on the 2-core Zen 3, one item hot in cache, TSC ticks per slot and query: 3 queries
//     13.5 -> 10.1, 18 queries 12.0 -> 7.8; softmax 6.0 -> 3.2 (the same unmasked loads and stores);
//     attention alone, 30 layers after 128 slots, two threads: T = 6 1.29 -> 1.07 ms, T = 12 2.75 -> 2.12.
//   softmax: fast_expf's twin on 8 lanes (the same bits as the portable function).
//   values: one query at a time (two at HS = 32), its output in registers through a block of slots in
//     slot order, its weights summed one by one in slot order: the portable pass's results bit for bit.

// Lane j of the result: the sum of the 8 lanes of v[j] (pairs, then quads within 128-bit halves, then the
// halves)
FAST_INLINE FAST_AVX2_TARGET __m256 avx2_sum_lanes_8(const __m256* v) {
    __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);   // lane j (j < 4): v[j]'s lanes 0-3; 4 + j: 4-7
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// bit l of the result: slot p0 + l is seen by the mask row (slots past n: 0)
FAST_INLINE FAST_AVX2_TARGET int avx2_seen_bits(const uint8_t* mask_row, int p0, int n) {
    if (n == 8) {   // one 8-byte load: bytes not zero -> bits
        __m128i bytes = _mm_loadl_epi64((const __m128i*)(mask_row + p0));
        return ~_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_setzero_si128())) & 0xff;
    }
    int bits = 0;
    for (int l = 0; l < n; l++) { bits |= (mask_row[p0 + l] != 0) << l; }
    return bits;
}

// a lane mask (all ones where bit l is set) for blends and masked loads
FAST_INLINE FAST_AVX2_TARGET __m256i avx2_lane_mask(int bits) {
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits), lane_bit), lane_bit);
}

// A block of n <= 8 slots' floats loaded or stored (lanes past n: never touched; read as 0). Only the cache's
// last block takes vmaskmovps: on Zen 3 a masked store to memory costs many times a store.
FAST_INLINE FAST_AVX2_TARGET __m256 avx2_load_slots(const float* from, int n) {
    return n == 8 ? _mm256_loadu_ps(from) : _mm256_maskload_ps(from, avx2_lane_mask((1 << n) - 1));
}
FAST_INLINE FAST_AVX2_TARGET void avx2_store_slots(float* to, int n, __m256 v) {
    if (n == 8) { _mm256_storeu_ps(to, v); }
    else { _mm256_maskstore_ps(to, avx2_lane_mask((1 << n) - 1), v); }
}

// One query's scores against a block of n <= 8 slots from k_block (lane j: slot j; slots past n: 0, never
// read): the 8 dot products at once, so their chains overlap (a branch per slot made them run one after
// another: 3.4 -> 1.2 us per item of 3 queries, P = 129), each 8 elements of q loaded once for the block
FAST_INLINE FAST_AVX2_TARGET __m256 avx2_block_scores(const float* q_th, const float* k_block, size_t stride, int nv, int n) {
    __m256 dots[8];
    __m256 q_c = _mm256_loadu_ps(q_th);
    #pragma GCC unroll 8
    for (int j = 0; j < 8; j++) { dots[j] = j < n ? _mm256_mul_ps(q_c, _mm256_loadu_ps(k_block + (size_t)j * stride)) : _mm256_setzero_ps(); }
    #pragma GCC unroll 8
    for (int c = 1; c < nv; c++) {
        q_c = _mm256_loadu_ps(q_th + 8 * c);
        #pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            if (j < n) { dots[j] = _mm256_add_ps(dots[j], _mm256_mul_ps(q_c, _mm256_loadu_ps(k_block + (size_t)j * stride + 8 * c))); }
        }
    }
    return avx2_sum_lanes_8(dots);
}

enum { AVX2_SCORE_QUERIES = 16 };   // queries whose rows a scores pass keeps at hand (more: in turns)

FAST_INLINE FAST_AVX2_TARGET void avx2_attention_scores(const AttentionItem* a, int nv) {
    size_t stride = a->slot_stride;
    const __m256 scale = _mm256_set1_ps(1.0f / sqrtf((float)a->HS)), minus_infinity = _mm256_set1_ps(-INFINITY);
    const float* k_head = a->keys;
    for (int i0 = 0; i0 < a->n_queries; i0 += AVX2_SCORE_QUERIES) {
        int nq = a->n_queries - i0 < AVX2_SCORE_QUERIES ? a->n_queries - i0 : AVX2_SCORE_QUERIES;
        const float* q_rows[AVX2_SCORE_QUERIES];
        const uint8_t* mask_rows[AVX2_SCORE_QUERIES];
        float* score_rows[AVX2_SCORE_QUERIES];
        __m256 max[AVX2_SCORE_QUERIES];   // per query, the running maximum lane by lane
        for (int i = 0; i < nq; i++) {
            q_rows[i] = attention_query(a, i0 + i);
            mask_rows[i] = attention_mask_row(a, i0 + i);
            score_rows[i] = a->scores + (size_t)(i0 + i) * a->P;
            max[i] = minus_infinity;
        }
        for (int p0 = 0; p0 < a->P; p0 += 8) {
            int n = a->P - p0 < 8 ? a->P - p0 : 8;
            const float* k_block = k_head + (size_t)p0 * stride;
            for (int i = 0; i < nq; i++) {
                int seen = avx2_seen_bits(mask_rows[i], p0, n);
                __m256 s = minus_infinity;   // a block the query does not see (half a causal prefill's): no products
                if (seen != 0) {
                    // a masked slot's score is replaced by -inf, lane by lane, whatever its key holds
                    __m256 dots = n == 8 ? avx2_block_scores(q_rows[i], k_block, stride, nv, 8)
                                         : avx2_block_scores(q_rows[i], k_block, stride, nv, n);
                    s = _mm256_blendv_ps(minus_infinity, _mm256_mul_ps(dots, scale), _mm256_castsi256_ps(avx2_lane_mask(seen)));
                    // (NaN never the max; the order of comparisons does not change a maximum)
                    max[i] = _mm256_max_ps(max[i], _mm256_blendv_ps(minus_infinity, s, _mm256_cmp_ps(s, s, _CMP_ORD_Q)));
                }
                avx2_store_slots(score_rows[i] + p0, n, s);
            }
        }
        for (int i = 0; i < nq; i++) { a->max_scores[i0 + i] = avx2_reduce_max(max[i]); }
    }
}

// fast_expf (cpu_fast.h) on 8 lanes: the same operations in the same order, so the same bits. 2^n is
// applied as two exact powers of two, 2^(n >> 1) then 2^(n - (n >> 1)) (each a normal float for n in
// [-150, 128]): the first product is exact, the second rounds once, as ldexpf does.
FAST_INLINE FAST_AVX2_TARGET __m256 fast_expf_avx2(__m256 x) {
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256 clamped = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(FAST_EXP_LOW)), _mm256_set1_ps(FAST_EXP_HIGH));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(FAST_EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_sub_ps(clamped, _mm256_mul_ps(n, _mm256_set1_ps(FAST_EXP_C1)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(FAST_EXP_C2)));
    __m256 p = _mm256_set1_ps(FAST_EXP_POLY[0]);
    #pragma GCC unroll 7
    for (int k = 1; k < 8; k++) { p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(FAST_EXP_POLY[k])); }
    __m256i n_int = _mm256_cvtps_epi32(n), n_half = _mm256_srai_epi32(n_int, 1);
    __m256 first = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n_half, _mm256_set1_epi32(127)), 23));
    __m256 second = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(n_int, n_half), _mm256_set1_epi32(127)), 23));
    return _mm256_blendv_ps(_mm256_mul_ps(_mm256_mul_ps(p, first), second), x, nan);
}

FAST_INLINE FAST_AVX2_TARGET void avx2_attention_softmax(const AttentionItem* a) {
    for (int i = 0; i < a->n_queries; i++) {
        float* weights = a->scores + (size_t)i * a->P;
        const uint8_t* mask_row = attention_mask_row(a, i);
        if (a->max_scores[i] == -INFINITY) { continue; }   // fully masked row: zeros (avx2_attention_values)
        __m256 max = _mm256_set1_ps(a->max_scores[i]);
        for (int p0 = 0; p0 < a->P; p0 += 8) {
            int n = a->P - p0 < 8 ? a->P - p0 : 8;
            int seen_bits = avx2_seen_bits(mask_row, p0, n);
            if (seen_bits == 0) {   // (as in the scores: a block it does not see weighs zero, no exponentials)
                avx2_store_slots(weights + p0, n, _mm256_setzero_ps());
                continue;
            }
            __m256 seen = _mm256_castsi256_ps(avx2_lane_mask(seen_bits));
            // (the exponential of the seen lanes alone, the others' input zeroed: see avx512_many_softmax)
            __m256 w = _mm256_and_ps(seen, fast_expf_avx2(_mm256_and_ps(seen, _mm256_sub_ps(avx2_load_slots(weights + p0, n), max))));
            avx2_store_slots(weights + p0, n, w);
        }
    }
}

// Queries [i0, i0 + nq) of an item (nq <= 2) over slots [p0, p1): each query's running output (its out row)
// and softmax sum (a->sums) carried in registers through the block's slots in slot order
FAST_INLINE FAST_AVX2_TARGET void avx2_values_block(const AttentionItem* a, int nv, int i0, int nq, int p0, int p1) {
    size_t stride = a->slot_stride;
    const float* v_head = a->values;
    __m256 acc[2][8];
    float* out_rows[2];
    ValuesQueries queries;
    values_queries_begin(&queries, a, i0, nq);
    float* sum_weights = queries.sum_weights;
    const uint8_t* const* mask_rows = queries.mask_rows;
    const float* const* weights = queries.weights;
    const int* active = queries.active;
    #pragma GCC unroll 2
    for (int j = 0; j < nq; j++) {
        out_rows[j] = attention_output(a, i0 + j);
        sum_weights[j] = a->sums[i0 + j];   // (the blocks before this one's)
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { acc[j][c] = _mm256_loadu_ps(out_rows[j] + 8 * c); }
    }
    for (int p = p0; p < p1; p++) {
        const float* v_p = v_head + (size_t)p * stride;
        #pragma GCC unroll 2
        for (int j = 0; j < nq; j++) {
            if (!active[j] || !mask_rows[j][p]) { continue; }
            __m256 weight = _mm256_set1_ps(weights[j][p]);
            sum_weights[j] += weights[j][p];
            #pragma GCC unroll 8
            for (int c = 0; c < nv; c++) { acc[j][c] = _mm256_add_ps(acc[j][c], _mm256_mul_ps(weight, _mm256_loadu_ps(v_p + 8 * c))); }
        }
    }
    #pragma GCC unroll 2
    for (int j = 0; j < nq; j++) {
        a->sums[i0 + j] = sum_weights[j];
        #pragma GCC unroll 8
        for (int c = 0; c < nv; c++) { _mm256_storeu_ps(out_rows[j] + 8 * c, acc[j][c]); }
    }
}

enum { AVX2_VALUES_SLOTS = 32 };   // slots per block of the values pass

// Blocks of AVX2_VALUES_SLOTS slots, every query of the item through a block before the next: the block's
// value rows (8 KB at HS = 64) stay in L1 for all of them (a query at a time over all the slots read each
// row from L2 once per query). TSC ticks per slot and query, 18 queries after 300 slots, one item hot in
// L2, 2-core Zen 3: 8.1-9.5 -> 6.4-6.6 (5.0 with the cache's rows aligned to a line: cpu_alloc).
// A query's output and sum are carried from block to block through memory, unrounded, so its arithmetic is
// the single pass's: the same bits.
FAST_INLINE FAST_AVX2_TARGET void avx2_attention_values(const AttentionItem* a, int nv) {
    int pair = nv <= 4 ? 2 : 1;   // HS = 32: two queries' outputs in registers at once
    for (int i = 0; i < a->n_queries; i++) {
        float* out_th = attention_output(a, i);
        for (int c = 0; c < nv; c++) { _mm256_storeu_ps(out_th + 8 * c, _mm256_setzero_ps()); }
        a->sums[i] = 0.0f;
    }
    for (int p0 = 0; p0 < a->P; p0 += AVX2_VALUES_SLOTS) {
        int p1 = a->P - p0 < AVX2_VALUES_SLOTS ? a->P : p0 + AVX2_VALUES_SLOTS;
        for (int i = 0; i < a->n_queries; ) {
            if (pair == 2 && a->n_queries - i >= 2) { avx2_values_block(a, nv, i, 2, p0, p1); i += 2; }
            else { avx2_values_block(a, nv, i, 1, p0, p1); i += 1; }
        }
    }
    for (int i = 0; i < a->n_queries; i++) {   // divided by the sum (a fully masked query: zeros)
        if (a->max_scores[i] == -INFINITY) { continue; }
        float* out_th = attention_output(a, i);
        __m256 sum = _mm256_set1_ps(a->sums[i]);
        for (int c = 0; c < nv; c++) { _mm256_storeu_ps(out_th + 8 * c, _mm256_div_ps(_mm256_loadu_ps(out_th + 8 * c), sum)); }
    }
}

FAST_AVX2_TARGET void fast_attention_item_avx2(const AttentionItem* item) {
    switch (item->HS) {
        case 32: avx2_attention_scores(item, 4); avx2_attention_softmax(item); avx2_attention_values(item, 4); return;
        case 64: avx2_attention_scores(item, 8); avx2_attention_softmax(item); avx2_attention_values(item, 8); return;
        default: attention_scores_body(item); attention_softmax(item); attention_values_body(item); return;
    }
}

// RoPE's rotation of T rows of n_heads heads (HS % 8 == 0), with each row's cos and sin per element as
// rope_forward_fast keeps them: cos_dup (c_i at 2i and 2i + 1) and sin_signed (-s_i at 2i, s_i at 2i + 1).
// out = x * cos_dup + swap_pairs(x) * sin_signed, a multiply and an add each: element 2i is x0 c + x1 (-s) =
// x0 c - x1 s and element 2i + 1 is x1 c + x0 s = x0 s + x1 c, the reference's expressions bit for bit.
FAST_AVX2_TARGET void fast_rope_avx2(float* out, const float* inp, const float* cos_dup, const float* sin_signed,
                                     size_t stride, int T, int n_heads, int HS) {
    for (int t = 0; t < T; t++) {
        const float* c_t = cos_dup + (size_t)t * stride;
        const float* s_t = sin_signed + (size_t)t * stride;
        for (int h = 0; h < n_heads; h++) {
            size_t base = ((size_t)t * n_heads + h) * HS;
            for (int i = 0; i < HS; i += 8) {
                __m256 x = _mm256_loadu_ps(inp + base + i);
                __m256 swapped = _mm256_permute_ps(x, 0xB1);   // (x1, x0) of each pair
                __m256 y = _mm256_add_ps(_mm256_mul_ps(x, _mm256_loadu_ps(c_t + i)), _mm256_mul_ps(swapped, _mm256_loadu_ps(s_t + i)));
                _mm256_storeu_ps(out + base + i, y);
            }
        }
    }
}

// AdamW over n elements (a multiple of 8), adamw_update_cpu's statements 8 lanes at a time: each multiply,
// add, division and square root is correctly rounded in a lane as in a scalar register, and nothing is
// fused, so the results are the reference's bit for bit (whose own loop stays scalar: the compiler keeps
// sqrtf's errno path, which no vector instruction has).
FAST_AVX2_TARGET void fast_adamw_avx2(float* params, const float* grads, float grad_scale, float* m, float* v, size_t n,
                                      float learning_rate, float beta1, float beta2, float eps, float weight_decay,
                                      float bias_correction1, float bias_correction2) {
    const __m256 decay = _mm256_set1_ps(1.0f - learning_rate * weight_decay), b1 = _mm256_set1_ps(beta1),
                 b2 = _mm256_set1_ps(beta2), one_minus_b1 = _mm256_set1_ps(1.0f - beta1),
                 one_minus_b2 = _mm256_set1_ps(1.0f - beta2), c1 = _mm256_set1_ps(bias_correction1),
                 c2 = _mm256_set1_ps(bias_correction2), lr = _mm256_set1_ps(learning_rate), e = _mm256_set1_ps(eps),
                 scale = _mm256_set1_ps(grad_scale);
    for (size_t i = 0; i + 8 <= n; i += 8) {
        __m256 g = _mm256_mul_ps(_mm256_loadu_ps(grads + i), scale);
        __m256 p = _mm256_mul_ps(_mm256_loadu_ps(params + i), decay);
        __m256 m_new = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(one_minus_b1, g));
        __m256 v_new = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(one_minus_b2, g), g));
        __m256 m_hat = _mm256_div_ps(m_new, c1), v_hat = _mm256_div_ps(v_new, c2);
        p = _mm256_sub_ps(p, _mm256_div_ps(_mm256_mul_ps(lr, m_hat), _mm256_add_ps(_mm256_sqrt_ps(v_hat), e)));
        _mm256_storeu_ps(m + i, m_new);
        _mm256_storeu_ps(v + i, v_new);
        _mm256_storeu_ps(params + i, p);
    }
}

FAST_AVX2_TARGET void fast_swiglu_avx2(float* out, const float* gate, const float* up, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i), u = _mm256_loadu_ps(up + i);
        __m256 e = fast_expf_avx2(_mm256_xor_ps(g, sign));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u));
    }
    for (; i < n; i++) { out[i] = gate[i] / (1.0f + fast_expf(-gate[i])) * up[i]; }
}

// The trainer's softmax and distribution loss, one row, AVX2 (cpu_fast.h: fast_softmax_row, fast_loss_row): the
// 16 lanes of each sum in two vectors (elements v .. v + 7 and v + 8 .. v + 15 of each whole block of 16), then
// the row's last V % 16 elements one by one into their lanes, in order: the portable loops' bits. AVX-512 CPUs run
// it too: an AVX-512 twin measured 3.2 against 4.3 ms over 190 rows of 8,192 (one thread, Zen 4), under 1% of a
// trainer step at the default draft vocabulary, not worth a second copy.

FAST_INLINE FAST_AVX2_TARGET void avx2_lanes_store(float* lanes, __m256 low, __m256 high) {
    _mm256_storeu_ps(lanes, low);
    _mm256_storeu_ps(lanes + 8, high);
}

FAST_INLINE FAST_AVX2_TARGET float avx2_row_max(const float* z, int V) {
    __m256 low = _mm256_set1_ps(-INFINITY), high = low;
    int v = 0;
    for (; v + 16 <= V; v += 16) {   // (vmaxps returns its second operand where the first is NaN: NaN skipped)
        low = _mm256_max_ps(_mm256_loadu_ps(z + v), low);
        high = _mm256_max_ps(_mm256_loadu_ps(z + v + 8), high);
    }
    float lanes[16], max = -INFINITY;
    avx2_lanes_store(lanes, low, high);
    for (int l = 0; l < 16; l++) { if (lanes[l] > max) { max = lanes[l]; } }
    for (; v < V; v++) { if (z[v] > max) { max = z[v]; } }
    return max;
}

FAST_AVX2_TARGET void fast_softmax_row_avx2(float* y, const float* x, int V) {
    float max = avx2_row_max(x, V), lanes[16];
    __m256 shift = _mm256_set1_ps(max), low = _mm256_setzero_ps(), high = low;
    int v = 0;
    for (; v + 16 <= V; v += 16) {
        __m256 e0 = fast_expf_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + v), shift));
        __m256 e1 = fast_expf_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + v + 8), shift));
        _mm256_storeu_ps(y + v, e0);
        _mm256_storeu_ps(y + v + 8, e1);
        low = _mm256_add_ps(low, e0);
        high = _mm256_add_ps(high, e1);
    }
    avx2_lanes_store(lanes, low, high);
    for (; v < V; v++) { y[v] = fast_expf(x[v] - max); lanes[v % 16] += y[v]; }
    float inverse = 1.0f / fast_lanes_total(lanes);
    __m256 scale = _mm256_set1_ps(inverse);
    for (v = 0; v + 8 <= V; v += 8) { _mm256_storeu_ps(y + v, _mm256_mul_ps(_mm256_loadu_ps(y + v), scale)); }
    for (; v < V; v++) { y[v] *= inverse; }
}

FAST_AVX2_TARGET float fast_loss_row_avx2(float* dz, const float* z, const float* p, int target, int V, float weight) {
    float max = avx2_row_max(z, V), lanes[16];
    __m256 shift = _mm256_set1_ps(max), low = _mm256_setzero_ps(), high = low;
    int v = 0;
    for (; v + 16 <= V; v += 16) {
        low = _mm256_add_ps(low, fast_expf_avx2(_mm256_sub_ps(_mm256_loadu_ps(z + v), shift)));
        high = _mm256_add_ps(high, fast_expf_avx2(_mm256_sub_ps(_mm256_loadu_ps(z + v + 8), shift)));
    }
    avx2_lanes_store(lanes, low, high);
    for (; v < V; v++) { lanes[v % 16] += fast_expf(z[v] - max); }
    float log_normaliser = max + logf(fast_lanes_total(lanes)), loss, sum_p = 1.0f;
    __m256 log_z = _mm256_set1_ps(log_normaliser);
    if (p != NULL) {
        __m256 terms[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}, mass[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (v = 0; v + 16 <= V; v += 16) {
            for (int h = 0; h < 2; h++) {
                __m256 pv = _mm256_loadu_ps(p + v + 8 * h);
                __m256 taken = _mm256_cmp_ps(pv, _mm256_setzero_ps(), _CMP_NEQ_UQ);   // p != 0 (NaN too)
                __m256 term = _mm256_mul_ps(pv, _mm256_sub_ps(_mm256_loadu_ps(z + v + 8 * h), log_z));
                terms[h] = _mm256_add_ps(terms[h], _mm256_and_ps(taken, term));   // (+0 where not taken: the same sum)
                mass[h] = _mm256_add_ps(mass[h], _mm256_and_ps(taken, pv));
            }
        }
        float term_lanes[16], mass_lanes[16];
        avx2_lanes_store(term_lanes, terms[0], terms[1]);
        avx2_lanes_store(mass_lanes, mass[0], mass[1]);
        for (; v < V; v++) {
            if (p[v] == 0.0f) { continue; }
            term_lanes[v % 16] += p[v] * (z[v] - log_normaliser);
            mass_lanes[v % 16] += p[v];
        }
        loss = -fast_lanes_total(term_lanes);
        sum_p = fast_lanes_total(mass_lanes);
    } else {
        loss = log_normaliser - z[target];
    }
    if (dz != NULL) {
        __m256 scale = _mm256_set1_ps(sum_p), w = _mm256_set1_ps(weight);
        int j = 0;
        for (; j + 8 <= V; j += 8) {
            __m256 teacher = p != NULL ? _mm256_loadu_ps(p + j)
                           : target >= j && target < j + 8 ? _mm256_and_ps(_mm256_castsi256_ps(avx2_lane_mask(1 << (target - j))), _mm256_set1_ps(1.0f))
                           : _mm256_setzero_ps();
            __m256 q = fast_expf_avx2(_mm256_sub_ps(_mm256_loadu_ps(z + j), log_z));
            __m256 gradient = _mm256_mul_ps(w, _mm256_sub_ps(_mm256_mul_ps(q, scale), teacher));
            _mm256_storeu_ps(dz + j, _mm256_add_ps(_mm256_loadu_ps(dz + j), gradient));
        }
        for (; j < V; j++) {
            float teacher = p != NULL ? p[j] : j == target ? 1.0f : 0.0f;
            dz[j] += weight * (fast_expf(z[j] - log_normaliser) * sum_p - teacher);
        }
    }
    return loss;
}

// ----------------------------------------------------------------------------
// matmul, AVX-512 VNNI, packed quantised weights (Q8_0, Q4_0, Q4_1; the layout: cpu_fast.h). The input rows
// are quantised to int8 in blocks of 32 (as llama.cpp's Q8 activations: scale dx = max|x| / 127, q = x /
// scale rounded to nearest), and vpdpbusd multiplies unsigned weight bytes with signed activation bytes:
//   Q4_1: w = d * q + m, q in [0, 15]   sum = d * dx * (q . qx) + m * (dx * sum qx)
//   Q4_0: w = d * (q - 8)               sum = d * dx * (q . qx - 8 * sum qx)     (integer correction)
//   Q8_0: w = d * q, q in [-127, 127]   sum = d * dx * ((q + 128) . qx - 128 * sum qx)
// int32 lane r of every vector is weight row r of a group of 16, so one vpdpbusd adds 4 products to each of
// 16 rows' sums, and a block's 32 products take 8 of them (the kernel this replaced spent a vpdpbusd per row
// and pair of blocks, plus a conversion, a multiply and a fused multiply-add per row, and a horizontal sum
// per output: decode 2.2x slower). Per row and input row, per block: sum = the integer correction (start)
// + the 8 dot products, exact in int32; then acc += float(sum) * (d * dx) (and, Q4_1, acc += m * (dx * sum
// qx)), fused multiply-adds in block order. The integer sums are exact in any order, so every output
// element's arithmetic is the same for any tile shape (G groups, TB input rows) and thread count. The
// activations' rounding is the only new error (measured in tests/test_fast.c). An input row that is not
// all finite takes the exact path instead (matmul_packed), so infinities and NaNs propagate as in the reference.

// The 8 quads of one block of G groups: Q4 types unpack a stored vector into two (low nibbles: elements
// 4j.., high: 16 + 4j..); Q8_0's are stored as they are used.
FAST_INLINE FAST_VNNI_TARGET __m512i packed_quad(const uint8_t* quads, int type, int j) {
    // (unaligned loads: a Q8_0 or Q4_0 block of a group is not a whole number of cache lines)
    if (type == TYPE_Q8_0) { return _mm512_loadu_si512(quads + (size_t)j * 64); }
    __m512i packed = _mm512_loadu_si512(quads + (size_t)(j & 3) * 64);
    if (j >= 4) { packed = _mm512_srli_epi16(packed, 4); }
    return _mm512_and_si512(packed, _mm512_set1_epi8(0x0f));
}

// Weights are prefetched 16 blocks ahead (5 KB of Q4_1 per group): the hardware prefetcher alone left the
// loads of a 6-row tile waiting (a 6-node verify pass, two threads, 2-core Xeon: 10.9 -> 8.7 ms with 8
// blocks ahead; 2 and 4 blocks: 10.0 and 9.2 ms), and 16 beat 8 again once tiles streamed one group at a
// time (2-core Zen 5, a token's 211 matmuls on two threads: T = 1 2.32 -> 2.24 ms, T = 6 2.51 -> 2.35, T = 12
// 3.95 -> 3.68; 24 blocks: the same as 16). A prefetch past the matrix's end is harmless (it never faults).
enum { PACKED_PREFETCH_BLOCKS = 16 };

// One block's float steps for one input row and 16 weight rows, from its exact integer sums (both int8
// kernels, VNNI and AMX: the same operations in the same order, so the same bits): acc + float(sum) * (d *
// dx), then Q4_1's acc + m * (dx * sum qx).
FAST_INLINE FAST_VNNI_TARGET __m512 packed_block_finish(__m512 acc, __m512i sum, __m512 d, __m512 m, const FastInt8Blocks* x,
                                                        size_t at, int type) {
    __m512 scale = _mm512_mul_ps(d, _mm512_set1_ps(x->scales[at]));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc);
    if (type == TYPE_Q4_1) { acc = _mm512_fmadd_ps(m, _mm512_set1_ps(x->sums[at]), acc); }
    return acc;
}

FAST_INLINE FAST_VNNI_TARGET void packed_tile(float* out, const FastInt8Blocks* x, int t0, const uint8_t* group,
                                              size_t group_bytes, int type, int C, int OC, int G, int TB,
                                              __mmask16 last_mask) {
    // out: (TB, OC) at the tile's first input row and output row; group: the tile's first group
    int n_blocks = C / FAST_QK;
    size_t block_bytes = fast_packed_block_bytes(type), quads = fast_packed_quads_offset(type);
    __m512 acc[4][8];
    #pragma GCC unroll 4
    for (int g = 0; g < G; g++) {
        #pragma GCC unroll 8
        for (int t = 0; t < TB; t++) { acc[g][t] = _mm512_setzero_ps(); }
    }
    for (int b = 0; b < n_blocks; b++) {
        __m512i sum[4][8];
        #pragma GCC unroll 4
        for (int g = 0; g < G; g++) {
            #pragma GCC unroll 8
            for (int t = 0; t < TB; t++) { sum[g][t] = _mm512_set1_epi32(x->starts[(size_t)(t0 + t) * n_blocks + b]); }
        }
        const int8_t* xq = x->q + (size_t)t0 * C + (size_t)b * FAST_QK;
        #pragma GCC unroll 4
        for (int g = 0; g < G; g++) {   // the block PACKED_PREFETCH_BLOCKS ahead (past a group's end: the next group's)
            const char* ahead = (const char*)(group + g * group_bytes + (size_t)(b + PACKED_PREFETCH_BLOCKS) * block_bytes);
            for (size_t line = 0; line < block_bytes; line += 64) { _mm_prefetch(ahead + line, _MM_HINT_T0); }
        }
        #pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            int element = type == TYPE_Q8_0 ? 4 * j : j < 4 ? 4 * j : 16 + 4 * (j - 4);   // the quad's first column
            __m512i w[4];
            #pragma GCC unroll 4
            for (int g = 0; g < G; g++) { w[g] = packed_quad(group + g * group_bytes + (size_t)b * block_bytes + quads, type, j); }
            #pragma GCC unroll 8
            for (int t = 0; t < TB; t++) {
                int32_t four;
                memcpy(&four, xq + (size_t)t * C + element, 4);
                __m512i xv = _mm512_set1_epi32(four);
                #pragma GCC unroll 4
                for (int g = 0; g < G; g++) { sum[g][t] = _mm512_dpbusd_epi32(sum[g][t], w[g], xv); }
            }
        }
        #pragma GCC unroll 4
        for (int g = 0; g < G; g++) {
            const uint8_t* block = group + g * group_bytes + (size_t)b * block_bytes;
            __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)block));
            __m512 m = type == TYPE_Q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(block + 32))) : d;
            #pragma GCC unroll 8
            for (int t = 0; t < TB; t++) {
                acc[g][t] = packed_block_finish(acc[g][t], sum[g][t], d, m, x, (size_t)(t0 + t) * n_blocks + b, type);
            }
        }
    }
    #pragma GCC unroll 4
    for (int g = 0; g < G; g++) {
        __mmask16 mask = g == G - 1 ? last_mask : 0xffff;
        #pragma GCC unroll 8
        for (int t = 0; t < TB; t++) { _mm512_mask_storeu_ps(out + (size_t)t * OC + g * FAST_GROUP, mask, acc[g][t]); }
    }
}

// Tile shapes: up to 8 input rows, and G groups. A panel's first tile of input rows reads its weights from
// memory, and there one group at a time is fastest: the weights then arrive as one sequential stream (2-core
// Zen 5, the default model's 211 matmuls of a token on two threads: T = 1 2.25 -> 1.85 ms, T = 4 2.45 ->
// 1.95 ms against 4 groups; the LM head alone on one thread 0.78 -> 0.61 ms). The later tiles of a wider
// call (T > 8) read the panel from L2, where the kernel is compute-bound and G groups with G * TB <= 8 are
// faster (a broadcast input word feeds G vpdpbusd, and G * TB independent chains hide vpdpbusd's latency:
// 4 rows, 2 groups 305 GMAC/s against 269 for 8 rows, 1 group, one thread, in L1/L2). The registers are
// 2 * G * TB accumulators and G quads.
static int packed_tile_groups(int TB, int streaming) { return streaming || TB >= 5 ? 1 : TB >= 3 ? 2 : 4; }

#define PACKED_TILE_CASE(TB_) \
    case TB_: \
        if (G == 1) { packed_tile(out, x, t0, group, group_bytes, TYPE, C, OC, 1, TB_, last_mask); } \
        else if (G == 2 && packed_tile_groups(TB_, 0) >= 2) { packed_tile(out, x, t0, group, group_bytes, TYPE, C, OC, 2, TB_, last_mask); } \
        else if (packed_tile_groups(TB_, 0) >= 4) { packed_tile(out, x, t0, group, group_bytes, TYPE, C, OC, 4, TB_, last_mask); } \
        break;
#define PACKED_TILE_FUNCTION(NAME, TYPE_VALUE) \
static FAST_VNNI_TARGET void packed_tiles_##NAME(float* out, const FastInt8Blocks* x, int t0, const uint8_t* group, \
                                                  size_t group_bytes, int C, int OC, int G, int TB, __mmask16 last_mask) { \
    enum { TYPE = TYPE_VALUE }; \
    switch (TB) { \
        PACKED_TILE_CASE(1) PACKED_TILE_CASE(2) PACKED_TILE_CASE(3) PACKED_TILE_CASE(4) \
        PACKED_TILE_CASE(5) PACKED_TILE_CASE(6) PACKED_TILE_CASE(7) PACKED_TILE_CASE(8) \
        default: break; \
    } \
}
PACKED_TILE_FUNCTION(q8_0, TYPE_Q8_0)
PACKED_TILE_FUNCTION(q4_0, TYPE_Q4_0)
PACKED_TILE_FUNCTION(q4_1, TYPE_Q4_1)

typedef void (*PackedTiles)(float* out, const FastInt8Blocks* x, int t0, const uint8_t* group, size_t group_bytes,
                            int C, int OC, int G, int TB, __mmask16 last_mask);

void fast_matmul_packed_vnni(float* out, const FastInt8Blocks* x, Matrix weight, int T, int C, int OC, int first_row,
                             int last_row) {
    int type = fast_stored_type(weight.type);
    PackedTiles tiles = type == TYPE_Q8_0 ? packed_tiles_q8_0 : type == TYPE_Q4_0 ? packed_tiles_q4_0 : packed_tiles_q4_1;
    size_t group_bytes = fast_packed_group_bytes(type, C);
    int first_group = first_row / FAST_GROUP, end_group = (last_row + FAST_GROUP - 1) / FAST_GROUP;
    int tail = OC % FAST_GROUP;   // rows of the matrix's last group (0: a whole one)
    // a panel of groups stays in L2 while every tile of input rows passes over it
    enum { PANEL_GROUPS = 8 };
    for (int panel = first_group; panel < end_group; panel += PANEL_GROUPS) {
        int panel_end = panel + PANEL_GROUPS < end_group ? panel + PANEL_GROUPS : end_group;
        for (int t0 = 0; t0 < T; t0 += 8) {
            int TB = T - t0 < 8 ? T - t0 : 8, G = packed_tile_groups(TB, t0 == 0);
            for (int g = panel; g < panel_end; ) {
                int n = panel_end - g >= G ? G : 1;
                int last = g + n - 1;
                __mmask16 last_mask = tail != 0 && last == (OC - 1) / FAST_GROUP ? (__mmask16)((1u << tail) - 1) : 0xffff;
                tiles(out + (size_t)t0 * OC + (size_t)g * FAST_GROUP, x, t0,
                      (const uint8_t*)weight.data + (size_t)g * group_bytes, group_bytes, C, OC, n, TB, last_mask);
                g += n;
            }
        }
    }
}

#if FAST_AMX_KERNEL
// ----------------------------------------------------------------------------
// The same matmul on AMX's int8 tiles (AMX-INT8, Sapphire Rapids and later), for calls of several input
// rows (a verify pass, a prefill). Per block of 32 columns and group of 16 weight rows, one tdpbsud makes
// every input row's 16 integer dot products at once: A is the rows' 32 activation bytes (signed; tile 0,
// TB rows of 32 bytes, read where the quantiser wrote them), B the block's 8 quads (unsigned; tile 1, 8 rows
// of 64 bytes: exactly the packed layout, so a Q8_0 block is loaded as stored and a Q4 block after its
// nibbles are unpacked), and the sums (tile 2, TB rows of 16 int32) are stored and finished by the VNNI
// kernel's float steps. The integer sums are exact, so every output is the VNNI kernel's bit for bit (the
// correction added in int32 as there). Blocks alternate between two such sets of tiles (3, 4, 5 the second),
// so one block's sums are finished while the next block's multiply runs. What it saves: the VNNI kernel
// spends 8 vpdpbusd per input row and block; here the tile does them and a row costs its float steps (0.9
// ns a block of 16 weight rows against 2.2), but loading and storing the tiles costs about 12 ns a block
// whatever the rows, so it pays from about 9 rows (cpu_fast.c, fast_amx_int8_min_rows).
#define FAST_AMX_INT8_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))

static FAST_AMX_INT8_TARGET void amx_int8_configure(int rows) {
    AmxTileConfig config __attribute__((aligned(64)));
    memset(&config, 0, sizeof(config));
    config.palette = 1;
    for (int set = 0; set < 2; set++) {   // two sets of tiles, alternate blocks: A in 0 and 3, B in 1 and 4, sums in 2 and 5
        config.rows[3 * set] = (uint8_t)rows; config.bytes_per_row[3 * set] = FAST_QK;
        config.rows[3 * set + 1] = 8;         config.bytes_per_row[3 * set + 1] = 64;
        config.rows[3 * set + 2] = (uint8_t)rows; config.bytes_per_row[3 * set + 2] = 64;
    }
    FAST_TILE_FENCE();
    _tile_loadconfig(&config);
}

// A Q4 block's quads are unpacked AMX_INT8_UNPACKED blocks at a time before their tiles load them: a tile
// load waits for the stores it reads to reach the cache, and after each block's own stores that wait cost
// more than the VNNI kernel's whole block (30 up-projections of the default model, 6 rows, one thread:
// 2.2 ms against 1.0).
enum { AMX_INT8_UNPACKED = 16 };

// The float steps of block b of a tile, from its integer sums stored from a tile plus the correction (the VNNI
// kernel's, packed_block_finish).
FAST_INLINE FAST_AMX_INT8_TARGET void amx_int8_finish(__m512* acc, int32_t sums[16][16], const FastInt8Blocks* x, int t0,
                                                      const uint8_t* block, int b, int n_blocks, int type, int TB) {
    __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)block));
    __m512 m = type == TYPE_Q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(block + 32))) : d;
    #pragma GCC unroll 16
    for (int t = 0; t < 16; t++) {
        if (t >= TB) { break; }
        size_t at = (size_t)(t0 + t) * n_blocks + b;
        __m512i sum = _mm512_load_si512(sums[t]);   // (Q4_1's correction is 0: fast_int8_block_store)
        if (type != TYPE_Q4_1) { sum = _mm512_add_epi32(sum, _mm512_set1_epi32(x->starts[at])); }
        acc[t] = packed_block_finish(acc[t], sum, d, m, x, at, type);
    }
}

FAST_INLINE FAST_AMX_INT8_TARGET void amx_int8_tile(float* out, const FastInt8Blocks* x, int t0, const uint8_t* group,
                                                    int type, int C, int OC, int TB, __mmask16 last_mask) {
    int n_blocks = C / FAST_QK;
    size_t block_bytes = fast_packed_block_bytes(type), quads = fast_packed_quads_offset(type);
    int32_t sums[2][16][16] __attribute__((aligned(64)));
    uint8_t unpacked[AMX_INT8_UNPACKED][8][64] __attribute__((aligned(64)));
    __m512 acc[16];
    #pragma GCC unroll 16
    for (int t = 0; t < 16; t++) { acc[t] = _mm512_setzero_ps(); }
    for (int b = 0; b < n_blocks; b++) {
        const uint8_t* block = group + (size_t)b * block_bytes, *b_tile = block + quads;
        if (type == TYPE_Q8_0) {
            const char* ahead = (const char*)(block + (size_t)PACKED_PREFETCH_BLOCKS * block_bytes);
            for (size_t line = 0; line < block_bytes; line += 64) { _mm_prefetch(ahead + line, _MM_HINT_T0); }
        } else {
            if (b % AMX_INT8_UNPACKED == 0) {
                int end = b + AMX_INT8_UNPACKED < n_blocks ? b + AMX_INT8_UNPACKED : n_blocks;
                for (int u = b; u < end; u++) {
                    const uint8_t* stored = group + (size_t)u * block_bytes + quads;
                    const char* ahead = (const char*)(group + (size_t)(u + PACKED_PREFETCH_BLOCKS) * block_bytes);
                    for (size_t line = 0; line < block_bytes; line += 64) { _mm_prefetch(ahead + line, _MM_HINT_T0); }
                    #pragma GCC unroll 8
                    for (int j = 0; j < 8; j++) { _mm512_store_si512(unpacked[u - b][j], packed_quad(stored, type, j)); }
                }
                FAST_TILE_FENCE();   // (a tile load's asm names no memory: the stores must be done before it)
            }
            b_tile = unpacked[b % AMX_INT8_UNPACKED][0];
        }
        // block b's product in its set of tiles, then block b - 1's float steps (its sums stored one block
        // earlier, so they have reached the cache while this block's tiles worked)
        const int8_t* a_tile = x->q + (size_t)t0 * C + (size_t)b * FAST_QK;
        if (b % 2 == 0) {
            _tile_loadd(1, b_tile, 64); _tile_loadd(0, a_tile, C); _tile_zero(2); _tile_dpbsud(2, 0, 1); _tile_stored(2, sums[0], 64);
        } else {
            _tile_loadd(4, b_tile, 64); _tile_loadd(3, a_tile, C); _tile_zero(5); _tile_dpbsud(5, 3, 4); _tile_stored(5, sums[1], 64);
        }
        if (b > 0) { amx_int8_finish(acc, sums[(b - 1) % 2], x, t0, block - block_bytes, b - 1, n_blocks, type, TB); }
    }
    amx_int8_finish(acc, sums[(n_blocks - 1) % 2], x, t0, group + (size_t)(n_blocks - 1) * block_bytes, n_blocks - 1, n_blocks,
                    type, TB);
    #pragma GCC unroll 16
    for (int t = 0; t < 16; t++) {
        if (t >= TB) { break; }
        _mm512_mask_storeu_ps(out + (size_t)t * OC, last_mask, acc[t]);
    }
}

#define AMX_INT8_TILE_FUNCTION(NAME, TYPE_VALUE) \
static FAST_AMX_INT8_TARGET void amx_int8_tile_##NAME(float* out, const FastInt8Blocks* x, int t0, const uint8_t* group, \
                                                      int C, int OC, int TB, __mmask16 last_mask) { \
    amx_int8_tile(out, x, t0, group, TYPE_VALUE, C, OC, TB, last_mask); \
}
AMX_INT8_TILE_FUNCTION(q8_0, TYPE_Q8_0)
AMX_INT8_TILE_FUNCTION(q4_0, TYPE_Q4_0)
AMX_INT8_TILE_FUNCTION(q4_1, TYPE_Q4_1)

FAST_AMX_INT8_TARGET void fast_matmul_packed_amx(float* out, const FastInt8Blocks* x, Matrix weight, int T, int C, int OC,
                                                 int first_row, int last_row) {
    int type = fast_stored_type(weight.type);
    void (*tile)(float*, const FastInt8Blocks*, int, const uint8_t*, int, int, int, __mmask16) =
        type == TYPE_Q8_0 ? amx_int8_tile_q8_0 : type == TYPE_Q4_0 ? amx_int8_tile_q4_0 : amx_int8_tile_q4_1;
    size_t group_bytes = fast_packed_group_bytes(type, C);
    int first_group = first_row / FAST_GROUP, end_group = (last_row + FAST_GROUP - 1) / FAST_GROUP;
    int tail = OC % FAST_GROUP, configured = 0;
    enum { PANEL_GROUPS = 8 };   // a panel of groups stays in L2 while every tile of input rows passes over it
    for (int panel = first_group; panel < end_group; panel += PANEL_GROUPS) {
        int panel_end = panel + PANEL_GROUPS < end_group ? panel + PANEL_GROUPS : end_group;
        for (int t0 = 0; t0 < T; t0 += 16) {
            int TB = T - t0 < 16 ? T - t0 : 16;
            if (TB != configured) { amx_int8_configure(TB); configured = TB; }
            for (int g = panel; g < panel_end; g++) {
                __mmask16 last_mask = tail != 0 && g == (OC - 1) / FAST_GROUP ? (__mmask16)((1u << tail) - 1) : 0xffff;
                tile(out + (size_t)t0 * OC + (size_t)g * FAST_GROUP, x, t0, (const uint8_t*)weight.data + (size_t)g * group_bytes,
                     C, OC, TB, last_mask);
            }
        }
    }
    if (configured) { _tile_release(); }
}
#endif

// Quantises input row t (C values, C % 32 == 0) for weights of `type`, per block of 32 as fast_int8_scale
// (cpu_fast.h) says. Returns -1 if a value is not finite (the row is then meaningless).
FAST_VNNI_TARGET int fast_vnni_quantize_blocks(FastInt8Blocks* x, const float* v, int t, int type) {
    int n_blocks = x->C / FAST_QK, not_finite = 0;
    for (int b = 0; b < n_blocks; b++) {
        int8_t* q = x->q + (size_t)t * x->C + (size_t)b * FAST_QK;
        __m512 v0 = _mm512_loadu_ps(v + (size_t)b * FAST_QK), v1 = _mm512_loadu_ps(v + (size_t)b * FAST_QK + 16);
        if (_mm512_fpclass_ps_mask(v0, 0x99) | _mm512_fpclass_ps_mask(v1, 0x99)) {   // NaN, inf
            not_finite = 1;
            fast_int8_block_empty(x, q, (size_t)t * n_blocks + b);
            continue;
        }
        float inverse, scale = fast_int8_scale(_mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1))), &inverse);
        __m512 inverse_vector = _mm512_set1_ps(inverse);
        __m512i q0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, inverse_vector), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i q1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, inverse_vector), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i*)q, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i*)(q + 16), _mm512_cvtepi32_epi8(q1));
        fast_int8_block_store(x, (size_t)t * n_blocks + b, scale, _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)), type);
    }
    return not_finite ? -1 : 0;
}

// The same quantisation on AVX2, the same bits (nearest-even rounding: vcvtps2dq under the default MXCSR).
FAST_AVX2_TARGET int fast_avx2_quantize_blocks(FastInt8Blocks* x, const float* v, int t, int type) {
    int n_blocks = x->C / FAST_QK, not_finite = 0;
    for (int b = 0; b < n_blocks; b++) {
        int8_t* q = x->q + (size_t)t * x->C + (size_t)b * FAST_QK;
        __m256 values[4];
        float amax;
        if (!avx2_load_block(v + (size_t)b * FAST_QK, values, &amax)) {
            not_finite = 1;
            fast_int8_block_empty(x, q, (size_t)t * n_blocks + b);
            continue;
        }
        float inverse, scale = fast_int8_scale(amax, &inverse);
        __m256 inverse_vector = _mm256_set1_ps(inverse);
        __m256i integers[4], total = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            integers[k] = _mm256_cvtps_epi32(_mm256_mul_ps(values[k], inverse_vector));
            total = _mm256_add_epi32(total, integers[k]);
        }
        avx2_store_int8(q, integers);
        __m128i sum4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
        sum4 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0x4e));
        sum4 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0xb1));
        fast_int8_block_store(x, (size_t)t * n_blocks + b, scale, _mm_cvtsi128_si32(sum4), type);
    }
    return not_finite ? -1 : 0;
}

// ----------------------------------------------------------------------------
// matmul, AVX2 (no VNNI, no AVX-512: Zen 2/3, Haswell to Alder Lake's AVX-512-less parts), int8 activations
// on the same packed weights and the same quantised input rows as the VNNI kernel, with the same results
// bit for bit: the integer sums are exact and the fp32 steps (acc += float(sum) * (d * dx), Q4_1's acc += m
// * (dx * sum qx)) are the same fused multiply-adds in block order. What changes is how the integer sums are
// formed without vpdpbusd, as llama.cpp's AVX2 kernels form them: a 256-bit vector holds half a group (8
// weight rows, int32 lane r = row r's quad), vpmaddubsw multiplies unsigned weight bytes with signed
// activation bytes and adds pairs into int16, vpmaddwd against ones adds the pairs into int32.
//   Q4_0, Q4_1: weights in [0, 15], activations in [-127, 127]: a pair is at most 3,810 in magnitude, so the
//     8 pair sums of a block (30,480) add up in int16 without saturating; one vpmaddwd per block and row.
//   Q8_0: weights stored as q + 128 in [0, 255] would saturate vpmaddubsw (2 * 255 * 127 > 32,767), so the
//     weights go back to signed q, and vpmaddubsw takes |q| (at most 128, -128 included) against the
//     activations with q's sign (vpsignb): a pair is at most 2 * 128 * 127 = 32,512. That is q . qx itself,
//     so Q8_0's integer correction (-128 * sum qx, for the VNNI kernel's q + 128) is not added.
// Tiles: H halves of groups (8 rows each) by TB input rows, H * TB <= 4, or one half by up to 6 rows (16 ymm
// registers hold the fp32 accumulators, the int16 sums, the weights and the broadcast activations); a panel
// of groups stays in L2 while every tile of input rows passes over it, and weights are prefetched
// PACKED_PREFETCH_BLOCKS ahead, as in the VNNI kernel (2-core EPYC, two threads, seven alternating pairs:
// faster in every pair, a decode step's matmuls by about 5%). On Zen 3 a row costs about 9.4 cycles per
// block and half group whatever the tile (llvm-mca -mcpu=znver3 on each tile's loop: the 8 vpmaddubsw, 7
// vpaddw, the broadcasts and the fp32 steps share the 4 vector pipes; measured, one thread, a 576 x 1536
// matrix hot in L2: 11-13 us per row, about 70 GMAC/s), so a verify pass of 6 rows is bound by that work
// rather than by the weights' bytes; one tile of 6 rather than 4 + 2 streams the weights once (the default
// model, 2-core Zen 3, a whole 6-row pass after 128 slots against a decode step beside it, the median of
// 40-60 alternated pairs: 1.67 -> 1.56x, 1.79 -> 1.64x; 12 rows in 6 + 6 rather than 4 + 4 + 4: 3.09 ->
// 2.70x, with the attention below).

// The 4 bytes of one quad of half `half` of packed quad vector j (64 bytes: rows 0-7 in the first 32)
FAST_INLINE FAST_AVX2_TARGET __m256i avx2_packed_half(const uint8_t* quads, int j, int half) {
    return _mm256_loadu_si256((const __m256i*)(quads + (size_t)j * 64 + 32 * half));
}

enum { AVX2_MAX_TB = 6 };   // input rows in one tile

FAST_INLINE FAST_AVX2_TARGET void avx2_packed_tile(float* out, const FastInt8Blocks* x, int t0, const uint8_t* group,
                                                   size_t group_bytes, int type, int C, int OC, int half0, int H,
                                                   int TB, int valid_rows) {
    // out: (TB, OC) at the tile's first input row and output row; group: the group holding the tile's first
    // half, which is that group's half half0 (0 or 1); the tile's half h is rows [8h, 8h + 8) from its first
    // row; valid_rows: rows of the tile that exist (fewer than 8H at the matrix's end)
    int n_blocks = C / FAST_QK;
    size_t block_bytes = fast_packed_block_bytes(type), quads = fast_packed_quads_offset(type);
    const __m256i ones = _mm256_set1_epi16(1), nibble = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8((char)0x80);
    __m256 acc[4][AVX2_MAX_TB];
    #pragma GCC unroll 4
    for (int h = 0; h < H; h++) {
        #pragma GCC unroll 6
        for (int t = 0; t < TB; t++) { acc[h][t] = _mm256_setzero_ps(); }
    }
    for (int b = 0; b < n_blocks; b++) {
        const int8_t* xq = x->q + (size_t)t0 * C + (size_t)b * FAST_QK;
        const uint8_t* block[4];
        #pragma GCC unroll 4
        for (int h = 0; h < H; h++) { block[h] = group + (size_t)((half0 + h) / 2) * group_bytes + (size_t)b * block_bytes; }
        #pragma GCC unroll 4
        for (int h = 0; h < H; h++) {   // each group's block PACKED_PREFETCH_BLOCKS ahead, once per group
            if (h > 0 && (half0 + h) % 2 == 1) { continue; }
            const char* ahead = (const char*)(block[h] + (size_t)PACKED_PREFETCH_BLOCKS * block_bytes);
            for (size_t line = 0; line < block_bytes; line += 64) { _mm_prefetch(ahead + line, _MM_HINT_T0); }
        }
        __m256i sum[4][AVX2_MAX_TB];   // Q4: int16 pair sums; Q8_0: int32 sums
        #pragma GCC unroll 4
        for (int h = 0; h < H; h++) {
            #pragma GCC unroll 6
            for (int t = 0; t < TB; t++) { sum[h][t] = _mm256_setzero_si256(); }
        }
        if (type == TYPE_Q8_0) {
            #pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                __m256i q[4], magnitude[4];
                #pragma GCC unroll 4
                for (int h = 0; h < H; h++) {
                    q[h] = _mm256_xor_si256(avx2_packed_half(block[h] + quads, j, (half0 + h) % 2), flip);   // q + 128 -> q
                    magnitude[h] = _mm256_abs_epi8(q[h]);                                         // -128 -> 128
                }
                #pragma GCC unroll 6
                for (int t = 0; t < TB; t++) {
                    int32_t four;
                    memcpy(&four, xq + (size_t)t * C + 4 * j, 4);
                    __m256i xv = _mm256_set1_epi32(four);
                    #pragma GCC unroll 4
                    for (int h = 0; h < H; h++) {
                        __m256i pairs = _mm256_maddubs_epi16(magnitude[h], _mm256_sign_epi8(xv, q[h]));
                        sum[h][t] = _mm256_add_epi32(sum[h][t], _mm256_madd_epi16(pairs, ones));
                        FAST_KEEP_CHAIN(sum[h][t]);
                    }
                }
            }
        } else {
            #pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {   // stored vector j: low nibbles are elements 4j.., high 16 + 4j..
                __m256i low[4], high[4];
                #pragma GCC unroll 4
                for (int h = 0; h < H; h++) {
                    __m256i packed = avx2_packed_half(block[h] + quads, j, (half0 + h) % 2);
                    low[h] = _mm256_and_si256(packed, nibble);
                    high[h] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
                }
                #pragma GCC unroll 6
                for (int t = 0; t < TB; t++) {
                    int32_t four_low, four_high;
                    memcpy(&four_low, xq + (size_t)t * C + 4 * j, 4);
                    memcpy(&four_high, xq + (size_t)t * C + 16 + 4 * j, 4);
                    __m256i x_low = _mm256_set1_epi32(four_low), x_high = _mm256_set1_epi32(four_high);
                    #pragma GCC unroll 4
                    for (int h = 0; h < H; h++) {
                        sum[h][t] = _mm256_add_epi16(sum[h][t], _mm256_maddubs_epi16(low[h], x_low));
                        FAST_KEEP_CHAIN(sum[h][t]);
                        sum[h][t] = _mm256_add_epi16(sum[h][t], _mm256_maddubs_epi16(high[h], x_high));
                        FAST_KEEP_CHAIN(sum[h][t]);
                    }
                }
            }
        }
        #pragma GCC unroll 4
        for (int h = 0; h < H; h++) {
            __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(block[h] + 16 * ((half0 + h) % 2))));
            __m256 m = type == TYPE_Q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(block[h] + 32 + 16 * ((half0 + h) % 2)))) : d;
            #pragma GCC unroll 6
            for (int t = 0; t < TB; t++) {
                size_t at = (size_t)(t0 + t) * n_blocks + b;
                __m256i total = sum[h][t];   // Q8_0: q . qx already; Q4_1's correction is 0, not added
                if (type != TYPE_Q8_0) { total = _mm256_madd_epi16(total, ones); }
                if (type == TYPE_Q4_0) { total = _mm256_add_epi32(total, _mm256_set1_epi32(x->starts[at])); }
                __m256 scale = _mm256_mul_ps(d, _mm256_set1_ps(x->scales[at]));
                acc[h][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), scale, acc[h][t]);
                if (type == TYPE_Q4_1) { acc[h][t] = _mm256_fmadd_ps(m, _mm256_set1_ps(x->sums[at]), acc[h][t]); }
            }
        }
    }
    #pragma GCC unroll 4
    for (int h = 0; h < H; h++) {
        int rows = valid_rows - 8 * h;
        #pragma GCC unroll 6
        for (int t = 0; t < TB; t++) {
            float* o = out + (size_t)t * OC + 8 * h;
            if (rows >= 8) { _mm256_storeu_ps(o, acc[h][t]); continue; }
            float lanes[8];
            _mm256_storeu_ps(lanes, acc[h][t]);
            for (int r = 0; r < rows; r++) { o[r] = lanes[r]; }
        }
    }
}

// halves per tile for TB input rows (H * TB <= 4, or 1 for TB > 4); at most one group's two halves where
// the tile streams its weights from memory (a panel's first input rows: packed_tile_groups says why; the AVX2 kernel on the
// 2-core Zen 5, a token's 211 matmuls, T = 1: 2.79 ms with 4 halves, 2.40 with 2)
static int avx2_tile_halves(int TB, int streaming) { return TB == 1 && !streaming ? 4 : TB <= 2 ? 2 : 1; }

// input rows in the next tile when rows_left remain: as few tiles as AVX2_MAX_TB rows allow, of even sizes
// (8: 4 + 4; 12: 6 + 6; 16: 6 + 5 + 5), so that a verify pass of up to 6 rows streams its weights once
static int avx2_tile_batch(int rows_left) {
    int tiles = (rows_left + AVX2_MAX_TB - 1) / AVX2_MAX_TB;
    return (rows_left + tiles - 1) / tiles;
}

#define AVX2_TILE_CASE(TB_) \
    case TB_: \
        if (H == 1) { avx2_packed_tile(out, x, t0, group, group_bytes, TYPE, C, OC, half0, 1, TB_, valid_rows); } \
        else if (H == 2 && avx2_tile_halves(TB_, 0) >= 2) { avx2_packed_tile(out, x, t0, group, group_bytes, TYPE, C, OC, half0, 2, TB_, valid_rows); } \
        else if (H == 4 && avx2_tile_halves(TB_, 0) >= 4) { avx2_packed_tile(out, x, t0, group, group_bytes, TYPE, C, OC, half0, 4, TB_, valid_rows); } \
        break;
#define AVX2_TILE_FUNCTION(NAME, TYPE_VALUE) \
static FAST_AVX2_TARGET void avx2_packed_tiles_##NAME(float* out, const FastInt8Blocks* x, int t0, const uint8_t* group, \
                                                       size_t group_bytes, int C, int OC, int half0, int H, int TB, \
                                                       int valid_rows) { \
    enum { TYPE = TYPE_VALUE }; \
    switch (TB) { AVX2_TILE_CASE(1) AVX2_TILE_CASE(2) AVX2_TILE_CASE(3) AVX2_TILE_CASE(4) AVX2_TILE_CASE(5) \
                  AVX2_TILE_CASE(6) default: break; } \
}
AVX2_TILE_FUNCTION(q8_0, TYPE_Q8_0)
AVX2_TILE_FUNCTION(q4_0, TYPE_Q4_0)
AVX2_TILE_FUNCTION(q4_1, TYPE_Q4_1)

typedef void (*Avx2PackedTiles)(float* out, const FastInt8Blocks* x, int t0, const uint8_t* group, size_t group_bytes,
                                int C, int OC, int half0, int H, int TB, int valid_rows);

void fast_matmul_packed_avx2(float* out, const FastInt8Blocks* x, Matrix weight, int T, int C, int OC, int first_row,
                             int last_row) {
    int type = fast_stored_type(weight.type);
    Avx2PackedTiles tiles = type == TYPE_Q8_0 ? avx2_packed_tiles_q8_0 : type == TYPE_Q4_0 ? avx2_packed_tiles_q4_0
                                                                                            : avx2_packed_tiles_q4_1;
    size_t group_bytes = fast_packed_group_bytes(type, C);
    int first_half = first_row / 8, end_half = (last_row + 7) / 8;
    enum { PANEL_HALVES = 16 };
    for (int panel = first_half; panel < end_half; panel += PANEL_HALVES) {
        int panel_end = panel + PANEL_HALVES < end_half ? panel + PANEL_HALVES : end_half;
        for (int t0 = 0, TB; t0 < T; t0 += TB) {
            TB = avx2_tile_batch(T - t0);
            int H = avx2_tile_halves(TB, t0 == 0);
            for (int h = panel; h < panel_end; ) {
                int left = panel_end - h, n = left >= H ? H : left >= 2 ? 2 : 1;
                int valid_rows = OC - 8 * h < 8 * n ? OC - 8 * h : 8 * n;
                tiles(out + (size_t)t0 * OC + (size_t)h * 8, x, t0, (const uint8_t*)weight.data + (size_t)(h / 2) * group_bytes,
                      group_bytes, C, OC, h % 2, n, TB, valid_rows);
                h += n;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// The draft quantisers' fp16 scales (and Q4_1's minimum), as quantize_row stores them.
FAST_INLINE FAST_AVX2_TARGET uint16_t fast_fp16_bits(float value) {   // fp32_to_fp16's bits (round to nearest even)
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(value), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), 0);
}

// Q8_0 quantisation (a serving draft's copy, quantised at every hot swap), AVX-512: quantize_row's results
// bit for bit (tests/test_backends.c checks), 32 values at a time. Per block, as gguf.c: d = max|x| / 127
// (the fp16 of d rounded to nearest even, as fp32_to_fp16 and the hardware conversion both do), inverse
// = 1 / d (0 when d is 0), q = roundf(x * inverse), i.e. half away from zero: t = trunc(v), plus the sign
// of v where |v - t| >= 0.5 (v - t is exact), clamped to [-127, 127]. A block with an infinity or a NaN is
// left to quantize_row itself.
FAST_AVX512_TARGET void fast_quantize_q8_0_avx512(uint8_t* out, const float* x, int64_t n_blocks) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), limit = _mm512_set1_ps(127.0f);
    for (int64_t b = 0; b < n_blocks; b++) {
        const float* block_x = x + b * FAST_QK;
        uint8_t* block = out + b * 34;
        __m512 v0 = _mm512_loadu_ps(block_x), v1 = _mm512_loadu_ps(block_x + 16);
        if (_mm512_fpclass_ps_mask(v0, 0x99) | _mm512_fpclass_ps_mask(v1, 0x99)) { quantize_row(TYPE_Q8_0, block_x, block, FAST_QK); continue; }
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float d = amax / 127.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t d_half = fast_fp16_bits(d);
        memcpy(block, &d_half, 2);   // little-endian, as tensor_store_u16
        __m512 scale = _mm512_set1_ps(inverse);
        for (int k = 0; k < 2; k++) {
            __m512 v = _mm512_mul_ps(k ? v1 : v0, scale);
            __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __mmask16 away = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), half, _CMP_GE_OQ);
            __m512 sign_one = _mm512_or_ps(one, _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
            __m512 q = _mm512_mask_add_ps(t, away, t, sign_one);
            q = _mm512_min_ps(_mm512_max_ps(q, _mm512_sub_ps(_mm512_setzero_ps(), limit)), limit);
            _mm_storeu_si128((__m128i*)(block + 2 + 16 * k), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q)));
        }
    }
}

// The same on AVX2 (a draft's hot swap on AVX-512-less CPUs), 8 values at a time: quantize_row's bits.
FAST_AVX2_TARGET void fast_quantize_q8_0_avx2(uint8_t* out, const float* x, int64_t n_blocks) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), limit = _mm256_set1_ps(127.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < n_blocks; b++) {
        const float* block_x = x + b * FAST_QK;
        uint8_t* block = out + b * 34;
        __m256 v[4];
        float amax;
        if (!avx2_load_block(block_x, v, &amax)) { quantize_row(TYPE_Q8_0, block_x, block, FAST_QK); continue; }
        float d = amax / 127.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t d_half = fast_fp16_bits(d);
        memcpy(block, &d_half, 2);   // little-endian, as tensor_store_u16
        __m256 scale = _mm256_set1_ps(inverse);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 scaled = _mm256_mul_ps(v[k], scale);
            __m256 t = _mm256_round_ps(scaled, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 away = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(scaled, t)), half, _CMP_GE_OQ);
            __m256 sign_one = _mm256_or_ps(one, _mm256_and_ps(scaled, sign));
            __m256 rounded = _mm256_add_ps(t, _mm256_and_ps(away, sign_one));
            rounded = _mm256_min_ps(_mm256_max_ps(rounded, _mm256_sub_ps(_mm256_setzero_ps(), limit)), limit);
            q[k] = _mm256_cvttps_epi32(rounded);
        }
        avx2_store_int8(block + 2, q);
    }
}

// Q4_1 quantisation (a serving draft's copy with --draft-type q4_1), AVX-512 and AVX2: quantize_row's bytes. Per
// block, as gguf.c: min and max of the 32 values (exact in any order), d = (max - min) / 15 and m = min (their
// fp16s rounded to nearest even), inverse = 1 / d (0 when d is 0), q = (int)((x - m) * inverse + 0.5f) clamped
// to [0, 15] (the operations unfused, as -ffp-contract=off compiles gguf.c's); value j in the low nibble of
// byte j, value 16 + j in its high nibble. quantize_row itself takes a block with an infinity or a NaN, and one
// whose min or max is a zero (fminf and fmaxf may return either zero of a +0/-0 pair, and m keeps the sign).

FAST_AVX512_TARGET void fast_quantize_q4_1_avx512(uint8_t* out, const float* x, int64_t n_blocks) {
    const __m512 half = _mm512_set1_ps(0.5f), fifteen = _mm512_set1_ps(15.0f), zero = _mm512_setzero_ps();
    for (int64_t b = 0; b < n_blocks; b++) {
        const float* block_x = x + b * FAST_QK;
        uint8_t* block = out + b * 20;
        __m512 v0 = _mm512_loadu_ps(block_x), v1 = _mm512_loadu_ps(block_x + 16);
        if (_mm512_fpclass_ps_mask(v0, 0x99) | _mm512_fpclass_ps_mask(v1, 0x99)) { quantize_row(TYPE_Q4_1, block_x, block, FAST_QK); continue; }
        float min = _mm512_reduce_min_ps(_mm512_min_ps(v0, v1)), max = _mm512_reduce_max_ps(_mm512_max_ps(v0, v1));
        if (min == 0.0f || max == 0.0f) { quantize_row(TYPE_Q4_1, block_x, block, FAST_QK); continue; }
        float d = (max - min) / 15.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t d_half = fast_fp16_bits(d), m_half = fast_fp16_bits(min);
        memcpy(block, &d_half, 2);   // little-endian, as tensor_store_u16
        memcpy(block + 2, &m_half, 2);
        __m512 m = _mm512_set1_ps(min), scale = _mm512_set1_ps(inverse);
        __m512i q[2];
        for (int k = 0; k < 2; k++) {
            __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(k ? v1 : v0, m), scale), half);
            q[k] = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(v, zero), fifteen));   // (NaN: max gives 0)
        }
        _mm_storeu_si128((__m128i*)(block + 4), _mm512_cvtepi32_epi8(_mm512_or_si512(q[0], _mm512_slli_epi32(q[1], 4))));
    }
}

FAST_AVX2_TARGET void fast_quantize_q4_1_avx2(uint8_t* out, const float* x, int64_t n_blocks) {
    const __m256 half = _mm256_set1_ps(0.5f), fifteen = _mm256_set1_ps(15.0f), zero = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; b++) {
        const float* block_x = x + b * FAST_QK;
        uint8_t* block = out + b * 20;
        __m256 v[4];
        float amax;
        if (!avx2_load_block(block_x, v, &amax)) { quantize_row(TYPE_Q4_1, block_x, block, FAST_QK); continue; }
        __m256 low = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
        __m256 high = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
        float min = -avx2_reduce_max(_mm256_sub_ps(zero, low)), max = avx2_reduce_max(high);
        if (min == 0.0f || max == 0.0f) { quantize_row(TYPE_Q4_1, block_x, block, FAST_QK); continue; }
        float d = (max - min) / 15.0f;
        float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t d_half = fast_fp16_bits(d), m_half = fast_fp16_bits(min);
        memcpy(block, &d_half, 2);
        memcpy(block + 2, &m_half, 2);
        __m256 m = _mm256_set1_ps(min), scale = _mm256_set1_ps(inverse);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            __m256 value = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], m), scale), half);
            q[k] = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(value, zero), fifteen));
        }
        // bytes 0-7: values 0-7 and 16-23; bytes 8-15: values 8-15 and 24-31
        __m256i words = _mm256_packs_epi32(_mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4)),
                                           _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4)));
        words = _mm256_permute4x64_epi64(words, 0xd8);   // (the pack works within 128-bit lanes)
        _mm_storeu_si128((__m128i*)(block + 4), _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1)));
    }
}

#endif // FAST_X86
