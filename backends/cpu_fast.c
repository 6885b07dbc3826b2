/*
backends/cpu_fast.c: the fast CPU ops. Weights stay in their stored GGUF type and are read in place;
each weight row is streamed once for all T input rows of a call; the loops are vectorised without
fast-math. The readable definitions are the ops of the same name root in cpu_ref.c, and
tests/test_fast.c checks every op here against them.

Contract:
  - matmul_forward_fast(out, inp, weight, T, C, OC): out (T, OC) = inp (T, C) @ weight (OC, C)^T for a
    weight of type F32, F16, BF16, Q8_0, Q4_0 or Q4_1, read in place (quantised types need C % 32 == 0).
    Two arithmetics:
      fp32 activations (every CPU; every weight type): each weight value is dequantised exactly (as
        dequantize_row does) into registers or an L1-sized span and multiplied with every input row before
        the next is read; the products are summed in fp32 in another order than the reference (vector
        lanes), so results differ from matmul_forward_cpu on the dequantised weights by reordering only.
      int8 activations (CPUs with AVX-512 VNNI; Q8_0, Q4_0, Q4_1 weights; on unless
        fast_int8_activations is 0): each input row is quantised in blocks of 32 as llama.cpp quantises
        its activations (scale = max|x| / 127, q = x * (1 / scale) rounded to nearest even; a block below
        1e-30 is zeros), integer dot products per block, scales applied in fp32. Results equal the fp32
        arithmetic on those quantised inputs up to reordering; against the original inputs, on the default
        model's weights and real activations, the error is 0.6% to 2% of an output's RMS and the LM head's
        argmax agrees at 86 of 88 positions (flips within 0.02 logits): tests/test_fast.c measures it. A
        call with a non-finite input takes the fp32 arithmetic, so infinities and NaNs land where the
        reference puts them.
    Each row of out depends only on its own input row (not on T, the other rows or the thread count; bit
    for bit), so a verify pass computes what decode computes. Parallel over output rows with OpenMP.
  - attention_forward_fast: attention_forward_cpu's contract (grouped-query heads, the (T, P) mask, a
    fully masked row gives zeros, -inf scores handled the same way), but each cached key and value row
    is read once for a chunk of up to 16 query rows and all query heads of its group. Per query the same
    arithmetic as the reference except the order of the q.k dot products' terms.
  - embedding_forward_fast: embedding_forward_cpu's contract for a table stored in any supported type
    (rows dequantised exactly: the result equals dequantize_row of the row).

What it refuses to do: fast-math, approximate exp, dequantising a whole matrix into an fp32 copy, and
orchestration (which ops run in which order belongs to the backend table).

Instruction sets. The checking build is plain -O2 for any x86-64 (no -march), so the fast path gets its
ISA at run time, four levels chosen by __builtin_cpu_supports on the first call (fast_isa; tests set it to
check every level the machine has):
  portable C         any CPU (ARM included): spans, `restrict`, `omp simd`; the compiler vectorises it
  portable C, AVX2   the same C compiled with __attribute__((target("avx2,fma,f16c"))), no intrinsics
  AVX-512            intrinsics, fp32 activations (matmul); attention is the portable C compiled for it
  AVX-512 VNNI       as AVX-512, plus the int8 kernel for the quantised types
Why not -march=native: the binary must run on any x86-64, and one dispatch point keeps the portable path
compiled and tested on every machine. Why intrinsics: one core of this project's Xeon (Sapphire Rapids),
a Q4_1 576 -> 1536 matrix in L2, one input row, per block of 32 weights: portable C 10.4 ns, portable C
for AVX2 9.7 ns, AVX-512 2.0 ns, AVX-512 VNNI 1.3 ns (the nibble unpacking and the int8 dot products are
not what a compiler finds on its own). AVX2 intrinsics (for AVX-512-less x86) are not written yet.
*/
#include "aurora.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FAST_X86 1
#include <immintrin.h>
#else
#define FAST_X86 0
#endif
#define FAST_INLINE static inline __attribute__((always_inline))
#if FAST_X86
// the same portable C, compiled for wider vectors (no intrinsics): the AVX2 level, and attention on AVX-512
#define FAST_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define FAST_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#endif

// ----------------------------------------------------------------------------
// which path runs: chosen once from the CPU, overridable (tests check every path the CPU has)

enum { FAST_ISA_UNSET = -1, FAST_ISA_PORTABLE = 0, FAST_ISA_AVX2 = 1, FAST_ISA_AVX512 = 2, FAST_ISA_AVX512_VNNI = 3 };
static int fast_isa = FAST_ISA_UNSET;

// The best path this CPU supports.
static int fast_isa_best(void) {
#if FAST_X86
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        return __builtin_cpu_supports("avx512vnni") ? FAST_ISA_AVX512_VNNI : FAST_ISA_AVX512;
    }
    if (avx2) { return FAST_ISA_AVX2; }
#endif
    return FAST_ISA_PORTABLE;
}

static const char* fast_isa_name(int isa) {
    static const char* names[] = {"portable C", "portable C for AVX2", "AVX-512", "AVX-512 VNNI"};
    return isa >= 0 && isa <= FAST_ISA_AVX512_VNNI ? names[isa] : "unset";
}

// The int8 path (activations quantised, see matmul_forward_fast) where the CPU has it; 0 keeps every
// matmul on fp32 activations (results within fp32 reordering of the reference, slower).
static int fast_int8_activations = 1;

// Chosen on the first call; atomic because serving and training threads may make that call together.
static int fast_isa_current(void) {
    int isa = __atomic_load_n(&fast_isa, __ATOMIC_RELAXED);
    if (isa == FAST_ISA_UNSET) {
        isa = fast_isa_best();
        __atomic_store_n(&fast_isa, isa, __ATOMIC_RELAXED);
    }
    return isa;
}

// ----------------------------------------------------------------------------
// stored types, read one value or block at a time (portable C)

#define FAST_QK 32   // elements per block of every quantised type (TENSOR_QK in gguf.c)

static inline uint32_t fast_float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float fast_bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// fp16 -> fp32 without branches, so loops over it vectorise. Exact for every input, subnormals, infinities
// and NaN payloads included (tests check all 65,536 values against fp16_to_fp32, bit for bit). Normals:
// move the exponent and mantissa into place and rescale by 2^-112 (exact); subnormals: build 0.5 + m * 2^-24
// with the mantissa under a fixed exponent and subtract 0.5 (exact); infinities and NaNs: the moved bits
// with the exponent all ones (no arithmetic, which would quiet a signalling NaN). After Maratos' FP16.
static inline float fast_fp16_to_fp32(uint16_t h) {
    uint32_t w = (uint32_t)h << 16;
    uint32_t sign = w & 0x80000000u;
    uint32_t two_w = w + w;                      // drops the sign
    uint32_t moved = (two_w >> 4) + (0xE0u << 23);   // exponent rebiased by +224: 2^112 times the value
    float normalized = fast_bits_float(moved) * 0x1.0p-112f;
    float denormalized = fast_bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
    uint32_t magnitude = two_w < (1u << 27) ? fast_float_bits(denormalized) : fast_float_bits(normalized);
    magnitude = two_w >= 0xF8000000u ? moved : magnitude;   // exponent 31: moved is 0x7f800000 | payload
    return fast_bits_float(sign | magnitude);
}

static inline uint16_t fast_load_u16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }

// Bytes of one row of `cols` values of `type` (cols a multiple of the block size).
static size_t fast_row_bytes(int type, int cols) { return tensor_bytes(type, cols); }

// Dequantises columns [first, first + n) of one stored row into span (n and first multiples of the
// block size for the quantised types). The same arithmetic as dequantize_row, so values are identical.
FAST_INLINE void fast_dequantize_span(float* restrict span, const uint8_t* restrict row, int type, int first, int n) {
    switch (type) {
    case TYPE_F32:
        memcpy(span, row + (size_t)first * 4, (size_t)n * 4);
        return;
    case TYPE_F16: {
        const uint8_t* p = row + (size_t)first * 2;
        #pragma omp simd
        for (int i = 0; i < n; i++) { span[i] = fast_fp16_to_fp32(fast_load_u16(p + 2 * i)); }
        return;
    }
    case TYPE_BF16: {
        const uint8_t* p = row + (size_t)first * 2;
        #pragma omp simd
        for (int i = 0; i < n; i++) { span[i] = fast_bits_float((uint32_t)fast_load_u16(p + 2 * i) << 16); }
        return;
    }
    default: break;
    }
    size_t block_bytes = tensor_type_block_bytes(type);
    const uint8_t* block = row + (size_t)(first / FAST_QK) * block_bytes;
    for (int b = 0; b < n / FAST_QK; b++, block += block_bytes) {
        float* w = span + b * FAST_QK;
        float d = fast_fp16_to_fp32(fast_load_u16(block));
        if (type == TYPE_Q8_0) {
            const int8_t* q = (const int8_t*)(block + 2);
            #pragma omp simd
            for (int j = 0; j < FAST_QK; j++) { w[j] = d * (float)q[j]; }
        } else if (type == TYPE_Q4_0) {
            const uint8_t* qs = block + 2;   // element j: low nibble of qs[j]; element j + 16: high nibble
            #pragma omp simd
            for (int j = 0; j < FAST_QK / 2; j++) {
                w[j] = d * (float)((qs[j] & 0x0f) - 8);
                w[j + FAST_QK / 2] = d * (float)((qs[j] >> 4) - 8);
            }
        } else {  // TYPE_Q4_1
            float m = fast_fp16_to_fp32(fast_load_u16(block + 2));
            const uint8_t* qs = block + 4;
            #pragma omp simd
            for (int j = 0; j < FAST_QK / 2; j++) {
                w[j] = d * (float)(qs[j] & 0x0f) + m;
                w[j + FAST_QK / 2] = d * (float)(qs[j] >> 4) + m;
            }
        }
    }
}

// Misuse by the program, not bad input (the loader validates types and shapes): print and exit.
static void fast_check_matrix(int type, int cols, const char* function) {
    int64_t block = tensor_type_block_size(type);
    if (block == 0 || cols <= 0 || cols % block != 0) {
        fprintf(stderr, "error: %s: weight type %d (%s) with rows of %d values (need F32, F16, BF16, Q8_0, "
                "Q4_0 or Q4_1, and a multiple of %lld values per row)\n", function, type, tensor_type_name(type),
                cols, (long long)(block ? block : 32));
        exit(EXIT_FAILURE);
    }
}

// ----------------------------------------------------------------------------
// embedding: out[t] = dequantize(table[tokens[t]])

void embedding_forward_fast(float* out, const int* tokens, Matrix table, int T, int C, int V) {
    // out: (T, C); tokens: (T), each in [0, V) (validated by the caller, as for the reference); table: (V, C)
    (void)V;
    fast_check_matrix(table.type, C, "embedding_forward_fast");
    size_t row_bytes = fast_row_bytes(table.type, C);
    for (int t = 0; t < T; t++) {
        const uint8_t* row = (const uint8_t*)table.data + (size_t)tokens[t] * row_bytes;
        fast_dequantize_span(out + (size_t)t * C, row, table.type, 0, C);
    }
}

// ----------------------------------------------------------------------------
// matmul, portable C: dequantise FAST_SPAN columns of one weight row into an L1 buffer, then take its dot
// product with up to FAST_ROWS input rows; next span. Each weight byte is read once per FAST_ROWS rows.

#define FAST_SPAN 256   // columns per dequantised span (a multiple of the block size): 1 KiB of floats
#define FAST_ROWS 16    // input rows served by one pass over a weight row

FAST_INLINE void matmul_rows_portable_body(float* out, const float* inp, Matrix weight, int T, int C, int OC,
                                           int first_row, int last_row) {
    // out: (T, OC); inp: (T, C); weight: (OC, C); computes out[:, first_row:last_row]
    float span[FAST_SPAN] __attribute__((aligned(64)));
    size_t row_bytes = fast_row_bytes(weight.type, C);
    for (int o = first_row; o < last_row; o++) {
        const uint8_t* row = (const uint8_t*)weight.data + (size_t)o * row_bytes;
        for (int t0 = 0; t0 < T; t0 += FAST_ROWS) {
            int rows = T - t0 < FAST_ROWS ? T - t0 : FAST_ROWS;
            float sums[FAST_ROWS] = {0};
            for (int c0 = 0; c0 < C; c0 += FAST_SPAN) {
                int n = C - c0 < FAST_SPAN ? C - c0 : FAST_SPAN;
                fast_dequantize_span(span, row, weight.type, c0, n);
                for (int t = 0; t < rows; t++) {
                    const float* restrict x = inp + (size_t)(t0 + t) * C + c0;
                    float sum = 0.0f;
                    #pragma omp simd reduction(+:sum)
                    for (int c = 0; c < n; c++) { sum += x[c] * span[c]; }
                    sums[t] += sum;
                }
            }
            for (int t = 0; t < rows; t++) { out[(size_t)(t0 + t) * OC + o] = sums[t]; }
        }
    }
}

// The body above, compiled for the baseline ISA and (x86) for AVX2: the compiler's vectorisation only.
static void matmul_rows_portable(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row,
                                 int last_row) {
    matmul_rows_portable_body(out, inp, weight, T, C, OC, first_row, last_row);
}
#if FAST_X86
static FAST_AVX2_TARGET void matmul_rows_portable_avx2(float* out, const float* inp, Matrix weight, int T, int C, int OC,
                                                       int first_row, int last_row) {
    matmul_rows_portable_body(out, inp, weight, T, C, OC, first_row, last_row);
}
#endif

// ----------------------------------------------------------------------------
// matmul, AVX-512: one block of 32 columns of a weight row dequantised into two zmm registers, multiplied
// into the accumulators of up to 16 input rows; R weight rows at a time so that at least 8 independent
// accumulator chains hide the FMA latency. Tails of F32/F16/BF16 rows (C % 32 != 0) use masked loads.

#if FAST_X86
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
// FMA latency (4 cycles, 2 per cycle).
static int fast_tile_rows(int TB) { return TB >= 8 ? 1 : TB >= 4 ? 2 : TB >= 2 ? 4 : 8; }

// One function per weight type, each with the tiles it needs as constants: TB input rows with
// R = fast_tile_rows(TB) weight rows, and TB = 0 for a single row by a single row (the panel's tail).
// Quantised types have every TB from 1 to 16 (their dequantisation is shared by the TB rows, so a
// verify pass of, say, 7 rows should not pay for it twice); float types, whose weights need little or no
// conversion, have TB = 1, 2, 4, 8, 16, and a batch of 7 runs as 4 + 2 + 1 (which keeps compile time down).
#define FAST_TILE_CASE(TB_) case TB_: avx512_tile(out, x, row, row_bytes, TYPE, C, OC, fast_tile_rows(TB_), TB_); break;
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
#define FAST_TB_POWERS FAST_TILE_CASE(1) FAST_TILE_CASE(2) FAST_TILE_CASE(4) FAST_TILE_CASE(8) FAST_TILE_CASE(16)
FAST_TILE_FUNCTION(f32, TYPE_F32, FAST_TB_POWERS)
FAST_TILE_FUNCTION(f16, TYPE_F16, FAST_TB_POWERS)
FAST_TILE_FUNCTION(bf16, TYPE_BF16, FAST_TB_POWERS)
FAST_TILE_FUNCTION(q8_0, TYPE_Q8_0, FAST_TB_ALL)
FAST_TILE_FUNCTION(q4_0, TYPE_Q4_0, FAST_TB_ALL)
FAST_TILE_FUNCTION(q4_1, TYPE_Q4_1, FAST_TB_ALL)

// Input rows served by the next tile: up to FAST_ROWS, a power of two for the float types.
static int fast_tile_batch(int type, int rows_left) {
    int TB = rows_left < FAST_ROWS ? rows_left : FAST_ROWS;
    if (tensor_type_block_size(type) == 1) { while (TB & (TB - 1)) { TB &= TB - 1; } }
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

#define FAST_PANEL 32   // weight rows kept in L1 while every input row passes over them

static void matmul_rows_avx512(float* out, const float* inp, Matrix weight, int T, int C, int OC,
                               int first_row, int last_row) {
    // out: (T, OC); inp: (T, C); weight: (OC, C); computes out[:, first_row:last_row]
    FastTiles tiles = avx512_tiles_for(weight.type);
    size_t row_bytes = fast_row_bytes(weight.type, C);
    for (int panel = first_row; panel < last_row; panel += FAST_PANEL) {
        int panel_end = panel + FAST_PANEL < last_row ? panel + FAST_PANEL : last_row;
        for (int t0 = 0, TB; t0 < T; t0 += TB) {
            TB = fast_tile_batch(weight.type, T - t0);
            int R = fast_tile_rows(TB), o = panel;
            for (; o + R <= panel_end; o += R) {
                tiles(out + (size_t)t0 * OC + o, inp + (size_t)t0 * C, (const uint8_t*)weight.data + (size_t)o * row_bytes,
                      row_bytes, C, OC, TB);
            }
            for (; o < panel_end; o++) {   // the panel's last rows, one by one (the same arithmetic per element)
                for (int t = t0; t < t0 + TB; t++) {
                    tiles(out + (size_t)t * OC + o, inp + (size_t)t * C, (const uint8_t*)weight.data + (size_t)o * row_bytes,
                          row_bytes, C, OC, 0);
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// matmul, AVX-512 VNNI, quantised weights (Q8_0, Q4_0, Q4_1): the input rows are quantised to int8 in
// blocks of 32 (as llama.cpp's Q8 activations: scale = max|x| / 127, q = x / scale rounded to nearest),
// and each pair of weight blocks meets each input row in one vpdpbusd (64 products of unsigned weight
// bytes and signed activation bytes, summed 4 at a time into 16 int32 lanes: 8 lanes per block).
// Then per block: scale_w * scale_x * integer sum, in fp32.
//   Q4_1: w = d * q + m, q in [0, 15]   sum = d * dx * (q . qx) + m * (dx * sum qx)
//   Q4_0: w = d * (q - 8)               sum = d * dx * (q . qx - 8 * sum qx)     (integer correction)
//   Q8_0: w = d * q, q in [-127, 127]   sum = d * dx * ((q + 128) . qx - 128 * sum qx)
// The integer corrections are exact; they ride in the accumulator that vpdpbusd starts from. The
// activations' rounding is the only new error (measured in tests/test_fast.c). A call whose inputs are
// not all finite takes the fp32 path instead, so infinities and NaNs propagate as in the reference.

#define FAST_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
// Input rows quantised for the int8 kernels. A "pair" is two consecutive blocks (64 columns); a row with
// an odd number of blocks has a last pair with one block, whose second half is zero everywhere. In a
// pair's 64 bytes the two blocks alternate in 4-byte groups: int32 lane k of a vpdpbusd holds elements
// 4 * (k / 2) .. 4 * (k / 2) + 3 of block k % 2 (the weights are unpacked into the same order). So each
// per-block quantity (scales, corrections) is a pair of numbers broadcast to all lanes by one 8-byte load.
// Records are pair-major, so the rows that meet a pair of weight blocks lie at fixed offsets.
typedef struct {
    int T;                 // rows
    int8_t* q;             // (n_pairs, T, 64) quantised values, lanes interleaved as above
    float* pair_scales;    // (n_pairs, T, 4): the two blocks' scales, then (as int32) their corrections
                           // -(8 or 128) / 8 * sum(q) (Q4_0, Q8_0: an int32 lane holds 1/8 of its block's)
    float* sums;           // (T, n_blocks) scale * sum(q) per block: Q4_1's m term
    void* memory;
} FastInt8Rows;

static void fast_int8_rows_allocate(FastInt8Rows* x, int T, int C) {
    int n_blocks = C / FAST_QK, n_pairs = (n_blocks + 1) / 2;
    size_t q_bytes = (size_t)n_pairs * T * 64, scale_bytes = (size_t)n_pairs * T * 16;
    uint8_t* memory = aligned_alloc(64, q_bytes + (scale_bytes + 63) / 64 * 64 + ((size_t)T * n_blocks * 4 + 63) / 64 * 64);
    if (!memory) { fprintf(stderr, "error: out of memory (%s:%d)\n", __FILE__, __LINE__); exit(EXIT_FAILURE); }
    x->T = T;
    x->memory = memory;
    x->q = (int8_t*)memory;
    x->pair_scales = (float*)(memory + q_bytes);
    x->sums = (float*)(memory + q_bytes + (scale_bytes + 63) / 64 * 64);
}

// Quantises input row t (C values, C % 32 == 0) for weights of `type`: per block of 32, scale = max|x| / 127
// and q = x / scale rounded to nearest even (a block under 1e-30 in magnitude is all zeros: its products
// are far below any tolerance, and the inverse of a subnormal scale would overflow). Returns -1 if a
// value is not finite (the records are then meaningless).
static FAST_VNNI_TARGET int vnni_quantize_row(FastInt8Rows* x, const float* v, int t, int C, int type) {
    int n_blocks = C / FAST_QK, n_pairs = (n_blocks + 1) / 2;
    int correction_factor = type == TYPE_Q8_0 ? 128 / 8 : type == TYPE_Q4_0 ? 8 / 8 : 0;
    const __m512i interleave = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
    __mmask16 not_finite = 0;
    for (int pair = 0; pair < n_pairs; pair++) {
        int8_t blocks[64] __attribute__((aligned(64)));   // the pair in column order
        float* pair_scales = x->pair_scales + ((size_t)pair * x->T + t) * 4;
        int32_t corrections[2] = {0, 0};
        for (int half = 0; half < 2; half++) {
            int b = 2 * pair + half;
            __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps();
            __mmask16 block_not_finite = 0;
            if (b < n_blocks) {
                v0 = _mm512_loadu_ps(v + (size_t)b * FAST_QK);
                v1 = _mm512_loadu_ps(v + (size_t)b * FAST_QK + 16);
                block_not_finite = _mm512_fpclass_ps_mask(v0, 0x99) | _mm512_fpclass_ps_mask(v1, 0x99);   // NaN, inf
                not_finite |= block_not_finite;
            }
            if (b == n_blocks || block_not_finite) {   // the missing second block of the last pair (or dead)
                _mm256_store_si256((__m256i*)(blocks + half * 32), _mm256_setzero_si256());
                pair_scales[half] = 0.0f;
                continue;
            }
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            float scale = amax / 127.0f;
            float inverse = amax > 1e-30f ? 1.0f / scale : 0.0f;
            if (inverse == 0.0f) { scale = 0.0f; }
            __m512 inverse_vector = _mm512_set1_ps(inverse);
            __m512i q0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, inverse_vector), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512i q1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, inverse_vector), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            _mm_store_si128((__m128i*)(blocks + half * 32), _mm512_cvtepi32_epi8(q0));
            _mm_store_si128((__m128i*)(blocks + half * 32 + 16), _mm512_cvtepi32_epi8(q1));
            pair_scales[half] = scale;
            corrections[half] = -correction_factor * sum;
            x->sums[(size_t)t * n_blocks + b] = scale * (float)sum;
        }
        memcpy(pair_scales + 2, corrections, 8);
        _mm512_store_si512(x->q + ((size_t)pair * x->T + t) * 64,
                           _mm512_permutexvar_epi32(interleave, _mm512_load_si512(blocks)));
    }
    return not_finite ? -1 : 0;
}


// The weight bytes of a pair of blocks as 64 unsigned bytes in the interleaved order above (Q8_0: q + 128;
// Q4: the nibbles); the second block zero when `single`.
FAST_INLINE FAST_VNNI_TARGET __m512i vnni_load_pair(const uint8_t* block, int type, int single) {
    size_t block_bytes = fast_block_bytes(type);
    if (type == TYPE_Q8_0) {
        __m512i first = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)(block + 2)));
        __m512i second = single ? _mm512_setzero_si512()
                                : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i*)(block + block_bytes + 2)));
        __m512i both = _mm512_permutex2var_epi32(first, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), second);
        return _mm512_xor_si512(both, _mm512_set1_epi8((char)0x80));
    }
    size_t offset = type == TYPE_Q4_0 ? 2 : 4;
    __m128i first = _mm_loadu_si128((const __m128i*)(block + offset));
    __m128i second = single ? _mm_setzero_si128() : _mm_loadu_si128((const __m128i*)(block + block_bytes + offset));
    __m512i packed = _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(first), second, 1));
    // lanes 0-7: the two blocks' bytes 4j..4j+3 alternating (low nibbles: elements 4j..4j+3); lanes 8-15 the
    // same, shifted right by 4 (high nibbles: elements 16 + 4j..)
    __m512i spread = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 0, 4, 1, 5, 2, 6, 3, 7), packed);
    spread = _mm512_srlv_epi32(spread, _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4));
    return _mm512_and_si512(spread, _mm512_set1_epi8(0x0f));
}

// Two floats (or int32s) at p, repeated over the 16 lanes: one 8-byte broadcast load.
FAST_INLINE FAST_VNNI_TARGET __m512 vnni_broadcast_pair(const void* p) {
    double pair;
    memcpy(&pair, p, 8);
    return _mm512_castpd_ps(_mm512_set1_pd(pair));
}

// out[t][o] for R weight rows from `row` and TB quantised input rows from row t0 of x. As in avx512_tile,
// R, TB and type are constants at the call sites, and every output element's arithmetic is the same for
// any R and TB (batch invariance).
FAST_INLINE FAST_VNNI_TARGET void vnni_tile(float* out, const FastInt8Rows* x, int t0, const uint8_t* row,
                                            size_t row_bytes, int type, int C, int OC, int R, int TB) {
    // out: (TB, OC) at the tile's first row and column
    int n_blocks = C / FAST_QK;
    size_t block_bytes = fast_block_bytes(type);
    __m512 acc[4][16];
    #pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        #pragma GCC unroll 16
        for (int t = 0; t < TB; t++) { acc[r][t] = _mm512_setzero_ps(); }
    }
    float d[4][FAST_SCALE_CHUNK + 16] __attribute__((aligned(64)));
    float m[4][FAST_SCALE_CHUNK + 16] __attribute__((aligned(64)));
    for (int b0 = 0; b0 < n_blocks; b0 += FAST_SCALE_CHUNK) {
        int n = n_blocks - b0 < FAST_SCALE_CHUNK ? n_blocks - b0 : FAST_SCALE_CHUNK;
        #pragma GCC unroll 4
        for (int r = 0; r < R; r++) { avx512_row_scales(d[r], m[r], row + r * row_bytes + (size_t)b0 * block_bytes, n, type); }
        for (int k = 0; k < n; k += 2) {
            int single = k + 1 == n;
            size_t pair = (size_t)(b0 + k) / 2;
            __m512i w[4];
            __m512 dw[4];
            #pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                w[r] = vnni_load_pair(row + r * row_bytes + (size_t)(b0 + k) * block_bytes, type, single);
                dw[r] = vnni_broadcast_pair(d[r] + k);   // (the scale after the last block is zero)
            }
            const int8_t* q = x->q + (pair * x->T + t0) * 64;
            const float* pair_scales = x->pair_scales + (pair * x->T + t0) * 4;
            #pragma GCC unroll 16
            for (int t = 0; t < TB; t++) {
                __m512i xq = _mm512_load_si512(q + t * 64);
                __m512 xs = vnni_broadcast_pair(pair_scales + t * 4);
                __m512i start = type == TYPE_Q4_1 ? _mm512_setzero_si512()
                                                  : _mm512_castps_si512(vnni_broadcast_pair(pair_scales + t * 4 + 2));
                #pragma GCC unroll 4
                for (int r = 0; r < R; r++) {
                    __m512i sum = _mm512_dpbusd_epi32(start, w[r], xq);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dw[r], xs), acc[r][t]);
                }
            }
        }
        if (type == TYPE_Q4_1) {   // the chunk's sum of m * (dx * sum qx)
            for (int k = 0; k < n; k += 16) {
                __mmask16 mask = n - k >= 16 ? 0xffff : (__mmask16)((1u << (n - k)) - 1);
                #pragma GCC unroll 16
                for (int t = 0; t < TB; t++) {
                    __m512 sums = _mm512_maskz_loadu_ps(mask, x->sums + (size_t)(t0 + t) * n_blocks + b0 + k);
                    #pragma GCC unroll 4
                    for (int r = 0; r < R; r++) { acc[r][t] = _mm512_fmadd_ps(_mm512_load_ps(m[r] + k), sums, acc[r][t]); }
                }
            }
        }
    }
    #pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        #pragma GCC unroll 16
        for (int t = 0; t < TB; t++) { out[(size_t)t * OC + r] = _mm512_reduce_add_ps(acc[r][t]); }
    }
}

static int vnni_tile_rows(int TB) { return TB >= 9 ? 1 : TB >= 4 ? 2 : 4; }

#define VNNI_TILE_CASE(TB_) case TB_: vnni_tile(out, x, t0, row, row_bytes, TYPE, C, OC, vnni_tile_rows(TB_), TB_); break;
#define VNNI_TILE_FUNCTION(NAME, TYPE_VALUE) \
static FAST_VNNI_TARGET void vnni_tiles_##NAME(float* out, const FastInt8Rows* x, int t0, const uint8_t* row, \
                                                size_t row_bytes, int C, int OC, int TB) { \
    enum { TYPE = TYPE_VALUE }; \
    switch (TB) { \
        case 0: vnni_tile(out, x, t0, row, row_bytes, TYPE, C, OC, 1, 1); break; \
        VNNI_TILE_CASE(1) VNNI_TILE_CASE(2) VNNI_TILE_CASE(3) VNNI_TILE_CASE(4) VNNI_TILE_CASE(5) VNNI_TILE_CASE(6) \
        VNNI_TILE_CASE(7) VNNI_TILE_CASE(8) VNNI_TILE_CASE(9) VNNI_TILE_CASE(10) VNNI_TILE_CASE(11) VNNI_TILE_CASE(12) \
        VNNI_TILE_CASE(13) VNNI_TILE_CASE(14) VNNI_TILE_CASE(15) VNNI_TILE_CASE(16) \
        default: break; \
    } \
}
VNNI_TILE_FUNCTION(q8_0, TYPE_Q8_0)
VNNI_TILE_FUNCTION(q4_0, TYPE_Q4_0)
VNNI_TILE_FUNCTION(q4_1, TYPE_Q4_1)

typedef void (*VnniTiles)(float* out, const FastInt8Rows* x, int t0, const uint8_t* row, size_t row_bytes, int C,
                          int OC, int TB);

static void matmul_rows_vnni(float* out, const FastInt8Rows* x, Matrix weight, int T, int C, int OC,
                             int first_row, int last_row) {
    VnniTiles tiles = weight.type == TYPE_Q8_0 ? vnni_tiles_q8_0 : weight.type == TYPE_Q4_0 ? vnni_tiles_q4_0 : vnni_tiles_q4_1;
    size_t row_bytes = fast_row_bytes(weight.type, C);
    for (int panel = first_row; panel < last_row; panel += FAST_PANEL) {
        int panel_end = panel + FAST_PANEL < last_row ? panel + FAST_PANEL : last_row;
        for (int t0 = 0; t0 < T; t0 += FAST_ROWS) {
            int TB = T - t0 < FAST_ROWS ? T - t0 : FAST_ROWS;
            int R = vnni_tile_rows(TB), o = panel;
            for (; o + R <= panel_end; o += R) {
                tiles(out + (size_t)t0 * OC + o, x, t0, (const uint8_t*)weight.data + (size_t)o * row_bytes, row_bytes, C, OC, TB);
            }
            for (; o < panel_end; o++) {   // the panel's last rows, one by one (the same arithmetic per element)
                for (int t = t0; t < t0 + TB; t++) {
                    tiles(out + (size_t)t * OC + o, x, t, (const uint8_t*)weight.data + (size_t)o * row_bytes, row_bytes, C, OC, 0);
                }
            }
        }
    }
}
#endif // FAST_X86

// ----------------------------------------------------------------------------
// matmul: out[t][o] = sum_c inp[t][c] * weight[o][c], weight in its stored type

void matmul_forward_fast(float* out, const float* inp, Matrix weight, int T, int C, int OC) {
    // out: (T, OC); inp: (T, C); weight: (OC, C)
    fast_check_matrix(weight.type, C, "matmul_forward_fast");
    int isa = fast_isa_current();
#if FAST_X86
    FastInt8Rows quantised;
    int int8_path = fast_int8_activations && isa == FAST_ISA_AVX512_VNNI && tensor_type_block_size(weight.type) == FAST_QK;
    if (int8_path) { fast_int8_rows_allocate(&quantised, T, C); }
#else
    int int8_path = 0;
#endif
    int finite = 1;   // the int8 path needs finite inputs; otherwise the fp32 path runs
    #pragma omp parallel
    {
#if FAST_X86
        if (int8_path) {
            #pragma omp for schedule(static) reduction(&:finite)
            for (int t = 0; t < T; t++) { finite &= vnni_quantize_row(&quantised, inp + (size_t)t * C, t, C, weight.type) == 0; }
            // (the loop's barrier: every thread sees every row quantised and the reduced `finite`)
        }
#endif
        // Each thread takes one contiguous range of output rows (a multiple of 16 rows, so tiles stay whole).
        int n_threads = 1, thread = 0;
#ifdef _OPENMP
        n_threads = omp_get_num_threads();
        thread = omp_get_thread_num();
#endif
        int units = (OC + 15) / 16;
        int first_row = (int)((long)units * thread / n_threads) * 16;
        int last_row = (int)((long)units * (thread + 1) / n_threads) * 16;
        if (last_row > OC) { last_row = OC; }
        if (first_row < last_row) {
#if FAST_X86
            if (int8_path && finite) { matmul_rows_vnni(out, &quantised, weight, T, C, OC, first_row, last_row); }
            else if (isa >= FAST_ISA_AVX512) { matmul_rows_avx512(out, inp, weight, T, C, OC, first_row, last_row); }
            else if (isa == FAST_ISA_AVX2) { matmul_rows_portable_avx2(out, inp, weight, T, C, OC, first_row, last_row); }
            else
#endif
            { (void)isa; (void)int8_path; matmul_rows_portable(out, inp, weight, T, C, OC, first_row, last_row); }
        }
    }
#if FAST_X86
    if (int8_path) { free(quantised.memory); }
#endif
}

// ----------------------------------------------------------------------------
// attention: attention_forward_cpu's contract; each cached key and value row is read once for a chunk of
// FAST_QUERY_ROWS query rows and all query heads of its group. Per (key/value head, chunk of rows):
//   pass 1: for each slot p some query of the chunk sees, score every query against k_p (masked: -inf)
//   softmax per query in slot order (exact max first, as the reference), weights kept in the score buffer
//   pass 2: for each slot p, add weight * v_p into every query that sees it; divide by the sum at the end
// Per query the arithmetic is the reference's except for the order of the HS-term dot products (vector
// lanes), so a query's result does not depend on T or on the other queries.

#define FAST_QUERY_ROWS 16
#define FAST_MAX_GROUP 64   // query heads per key/value head that the per-thread buffers hold

// One work item: key/value head kv_head and query rows [t0, t0 + rows). scores: (rows * group, P).
FAST_INLINE void attention_item_body(float* out, const float* q, const float* key_cache, const float* value_cache,
                                     const uint8_t* mask, int T, int P, int NH, int NKV, int HS, int kv_head, int t0,
                                     float* scores) {
    int group = NH / NKV, KVD = NKV * HS, QD = NH * HS;
    float scale = 1.0f / sqrtf((float)HS);
    int rows = T - t0 < FAST_QUERY_ROWS ? T - t0 : FAST_QUERY_ROWS;
    int n_queries = rows * group;   // query i: row t0 + i / group, head kv_head * group + i % group
    float max_scores[FAST_QUERY_ROWS * FAST_MAX_GROUP], sums[FAST_QUERY_ROWS * FAST_MAX_GROUP];
    // pass 1: scores and their maximum
    for (int i = 0; i < n_queries; i++) { max_scores[i] = -INFINITY; }
    for (int p = 0; p < P; p++) {
        const float* restrict k_p = key_cache + (size_t)p * KVD + (size_t)kv_head * HS;
        for (int i = 0; i < n_queries; i++) {
            int t = t0 + i / group, h = kv_head * group + i % group;
            float* score_ip = scores + (size_t)i * P + p;
            if (!mask[(size_t)t * P + p]) { *score_ip = -INFINITY; continue; }
            const float* restrict q_th = q + (size_t)t * QD + (size_t)h * HS;
            float score = 0.0f;
            #pragma omp simd reduction(+:score)
            for (int d = 0; d < HS; d++) { score += q_th[d] * k_p[d]; }
            score *= scale;
            *score_ip = score;
            if (score > max_scores[i]) { max_scores[i] = score; }
        }
    }
    // softmax weights in slot order; a masked slot (or a -inf score) gets weight 0
    for (int i = 0; i < n_queries; i++) {
        int t = t0 + i / group, h = kv_head * group + i % group;
        float* out_th = out + (size_t)t * QD + (size_t)h * HS;
        for (int d = 0; d < HS; d++) { out_th[d] = 0.0f; }
        float* weights = scores + (size_t)i * P;
        float sum_weights = 0.0f;
        if (max_scores[i] == -INFINITY) { sums[i] = 0.0f; continue; }   // fully masked row: zeros
        for (int p = 0; p < P; p++) {
            if (!mask[(size_t)t * P + p]) { weights[p] = 0.0f; continue; }
            weights[p] = expf(weights[p] - max_scores[i]);
            sum_weights += weights[p];
        }
        sums[i] = sum_weights;
    }
    // pass 2: weighted values, in slot order per query
    for (int p = 0; p < P; p++) {
        const float* restrict v_p = value_cache + (size_t)p * KVD + (size_t)kv_head * HS;
        for (int i = 0; i < n_queries; i++) {
            int t = t0 + i / group, h = kv_head * group + i % group;
            if (!mask[(size_t)t * P + p] || max_scores[i] == -INFINITY) { continue; }
            float weight = scores[(size_t)i * P + p];
            float* restrict out_th = out + (size_t)t * QD + (size_t)h * HS;
            #pragma omp simd
            for (int d = 0; d < HS; d++) { out_th[d] += weight * v_p[d]; }
        }
    }
    for (int i = 0; i < n_queries; i++) {
        if (max_scores[i] == -INFINITY) { continue; }
        int t = t0 + i / group, h = kv_head * group + i % group;
        float* out_th = out + (size_t)t * QD + (size_t)h * HS;
        for (int d = 0; d < HS; d++) { out_th[d] /= sums[i]; }
    }
}

// The body above for each instruction set (the compiler's vectorisation: the same C, wider vectors).
#define FAST_ATTENTION_ITEM(NAME, TARGET) \
static TARGET void NAME(float* out, const float* q, const float* key_cache, const float* value_cache, \
                        const uint8_t* mask, int T, int P, int NH, int NKV, int HS, int kv_head, int t0, float* scores) { \
    attention_item_body(out, q, key_cache, value_cache, mask, T, P, NH, NKV, HS, kv_head, t0, scores); \
}
FAST_ATTENTION_ITEM(attention_item_portable, )
#if FAST_X86
FAST_ATTENTION_ITEM(attention_item_avx2, FAST_AVX2_TARGET)
FAST_ATTENTION_ITEM(attention_item_avx512, FAST_AVX512_TARGET)
#endif

void attention_forward_fast(float* out, const float* q, const float* key_cache, const float* value_cache,
                            const uint8_t* mask, int T, int P, int NH, int NKV, int HS) {
    // out, q: (T, NH*HS); key_cache, value_cache: (P, NKV*HS); mask: (T, P)
    int group = NH / NKV;
    if (group > FAST_MAX_GROUP) {   // never for the models we run; refuse rather than overflow
        fprintf(stderr, "error: attention_forward_fast: %d query heads per key/value head (at most %d)\n", group,
                FAST_MAX_GROUP);
        exit(EXIT_FAILURE);
    }
    int isa = fast_isa_current();
    int n_chunks = (T + FAST_QUERY_ROWS - 1) / FAST_QUERY_ROWS;
    int n_items = NKV * n_chunks;
    #pragma omp parallel
    {
        // per thread: scores, then weights, of one item's queries (FAST_QUERY_ROWS * group, P)
        float* scores = mallocCheck((size_t)FAST_QUERY_ROWS * group * (P > 0 ? P : 1) * sizeof(float));
        #pragma omp for schedule(static)
        for (int item = 0; item < n_items; item++) {
            int kv_head = item / n_chunks, t0 = (item % n_chunks) * FAST_QUERY_ROWS;
#if FAST_X86
            if (isa >= FAST_ISA_AVX512) {
                attention_item_avx512(out, q, key_cache, value_cache, mask, T, P, NH, NKV, HS, kv_head, t0, scores);
            } else if (isa == FAST_ISA_AVX2) {
                attention_item_avx2(out, q, key_cache, value_cache, mask, T, P, NH, NKV, HS, kv_head, t0, scores);
            } else
#endif
            { (void)isa; attention_item_portable(out, q, key_cache, value_cache, mask, T, P, NH, NKV, HS, kv_head, t0, scores); }
        }
        free(scores);
    }
}
