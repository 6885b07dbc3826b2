/*
backends/cpu_fast.c: the fast CPU ops. Weights stay in their stored GGUF type and are read in place;
each weight row is streamed once for all T input rows of a call; the loops are vectorised without
fast-math. The readable definitions are the ops of the same name root in cpu_ref.c, and
tests/test_fast.c checks every op here against them.

Contract:
  - matmul_forward_fast(out, inp, weight, T, C, OC): out (T, OC) = inp (T, C) @ weight (OC, C)^T for a
    weight of type F32, F16, BF16, Q8_0, Q4_0 or Q4_1. The activations stay fp32: no activation
    quantisation. Each weight value is dequantised exactly (as dequantize_row does) into registers or an
    L1-sized span and multiplied with every input row before the next span is read; products are summed
    in fp32 in a different order than the reference (blocked, in vector lanes), so results differ from
    matmul_forward_cpu on the dequantised weights by fp32 reordering only. Parallel over output rows
    with OpenMP; every output element is computed by one thread in a fixed order, so results do not
    depend on the thread count. Quantised types need C % 32 == 0 (a whole number of blocks per row).
  - attention_forward_fast: attention_forward_cpu's contract (grouped-query heads, the (T, P) mask, a
    fully masked row gives zeros, -inf scores handled the same way), but each cached key and value row
    is read once for all T query rows and all query heads of its group.
  - embedding_forward_fast: embedding_forward_cpu's contract for a table stored in any supported type
    (rows dequantised exactly, so the result equals dequantize_row of the row).

What it refuses to do: fast-math, approximate exp, dequantising a whole matrix into an fp32 copy,
quantising activations, and orchestration (which ops run in which order belongs to the backend table).

Instruction sets. The checking build is plain -O2 for any x86-64 (no -march), so the fast path gets its
ISA at run time: the AVX-512 kernels are compiled with __attribute__((target(...))) and chosen by
__builtin_cpu_supports on the first call; every other machine (an x86-64 without AVX-512, ARM, ...) runs
the portable C kernels, written so that the compiler vectorises them (spans, `restrict`, `omp simd`).
fast_isa (below) names the path in use, and tests set it to check each path available on the machine.
Why not -march=native: the binary must run on any x86-64, and one dispatch point keeps the portable
path compiled and tested on every machine.
*/
#include "aurora.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FAST_X86 1
#include <immintrin.h>
#else
#define FAST_X86 0
#endif

// ----------------------------------------------------------------------------
// which path runs: chosen once from the CPU, overridable (tests check every path the CPU has)

enum { FAST_ISA_UNSET = -1, FAST_ISA_PORTABLE = 0, FAST_ISA_AVX512 = 1 };
static int fast_isa = FAST_ISA_UNSET;

// The best path this CPU supports.
static int fast_isa_best(void) {
#if FAST_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c")) {
        return FAST_ISA_AVX512;
    }
#endif
    return FAST_ISA_PORTABLE;
}

static const char* fast_isa_name(int isa) {
    return isa == FAST_ISA_AVX512 ? "AVX-512" : "portable C";
}

static int fast_isa_current(void) {
    if (fast_isa == FAST_ISA_UNSET) { fast_isa = fast_isa_best(); }
    return fast_isa;
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
static void fast_dequantize_span(float* restrict span, const uint8_t* restrict row, int type, int first, int n) {
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

static void matmul_rows_portable(float* out, const float* inp, Matrix weight, int T, int C, int OC,
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

// ----------------------------------------------------------------------------
// matmul, AVX-512: one block of 32 columns of a weight row dequantised into two zmm registers, multiplied
// into the accumulators of up to 16 input rows; R weight rows at a time so that at least 8 independent
// accumulator chains hide the FMA latency. Tails of F32/F16/BF16 rows (C % 32 != 0) use masked loads.

#if FAST_X86
#define FAST_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define FAST_INLINE static inline __attribute__((always_inline))

// Columns [c, c + 32) of one stored row as two vectors of 16 floats (lanes past the mask are zero).
FAST_INLINE FAST_AVX512_TARGET void avx512_load_block(__m512* w0, __m512* w1, const uint8_t* row, int type, int c,
                                                      __mmask16 mask0, __mmask16 mask1) {
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
        __m512 d = _mm512_set1_ps(_cvtsh_ss(fast_load_u16(block)));
        __m128i q0 = _mm_loadu_si128((const __m128i*)(block + 2));
        __m128i q1 = _mm_loadu_si128((const __m128i*)(block + 18));
        *w0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)));
        *w1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)));
    } else if (type == TYPE_Q4_0 || type == TYPE_Q4_1) {
        // 16 possible values per block: build them (d * (q - 8), or d * q + m rounded twice as
        // dequantize_row does) and look each nibble up with a permute, which reads the low 4 bits of
        // the index, so the low nibbles need no mask.
        const uint8_t* block = row + (size_t)(c / FAST_QK) * (type == TYPE_Q4_0 ? 18 : 20);
        const uint8_t* qs = block + (type == TYPE_Q4_0 ? 2 : 4);
        __m512 d = _mm512_set1_ps(_cvtsh_ss(fast_load_u16(block)));
        __m512 table;
        if (type == TYPE_Q4_0) {
            table = _mm512_mul_ps(d, _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7));
        } else {
            __m512 m = _mm512_set1_ps(_cvtsh_ss(fast_load_u16(block + 2)));
            table = _mm512_add_ps(_mm512_mul_ps(d, _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)), m);
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
    for (int c = 0; c < C; c += FAST_QK) {
        __mmask16 mask0 = 0xffff, mask1 = 0xffff;
        if (c >= full) {   // the tail of an F32/F16/BF16 row
            int left = C - c;
            mask0 = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            mask1 = left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        }
        __m512 w0[8], w1[8];
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) { avx512_load_block(&w0[r], &w1[r], row + r * row_bytes, type, c, mask0, mask1); }
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

// One function per weight type, each with every (TB, R) tile it needs as constants.
#define FAST_TILE_CASE(TB_) case TB_: \
    if (R == fast_tile_rows(TB_)) { avx512_tile(out, x, row, row_bytes, TYPE, C, OC, fast_tile_rows(TB_), TB_); } \
    else { avx512_tile(out, x, row, row_bytes, TYPE, C, OC, 1, TB_); } \
    break;
#define FAST_TILE_FUNCTION(NAME, TYPE_VALUE) \
static FAST_AVX512_TARGET void avx512_tiles_##NAME(float* out, const float* x, const uint8_t* row, size_t row_bytes, \
                                                    int C, int OC, int R, int TB) { \
    enum { TYPE = TYPE_VALUE }; \
    switch (TB) { \
        FAST_TILE_CASE(1) FAST_TILE_CASE(2) FAST_TILE_CASE(3) FAST_TILE_CASE(4) FAST_TILE_CASE(5) FAST_TILE_CASE(6) \
        FAST_TILE_CASE(7) FAST_TILE_CASE(8) FAST_TILE_CASE(9) FAST_TILE_CASE(10) FAST_TILE_CASE(11) FAST_TILE_CASE(12) \
        FAST_TILE_CASE(13) FAST_TILE_CASE(14) FAST_TILE_CASE(15) FAST_TILE_CASE(16) \
        default: break; \
    } \
}
FAST_TILE_FUNCTION(f32, TYPE_F32)
FAST_TILE_FUNCTION(f16, TYPE_F16)
FAST_TILE_FUNCTION(bf16, TYPE_BF16)
FAST_TILE_FUNCTION(q8_0, TYPE_Q8_0)
FAST_TILE_FUNCTION(q4_0, TYPE_Q4_0)
FAST_TILE_FUNCTION(q4_1, TYPE_Q4_1)

typedef void (*FastTiles)(float* out, const float* x, const uint8_t* row, size_t row_bytes, int C, int OC, int R, int TB);

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
        for (int t0 = 0; t0 < T; t0 += FAST_ROWS) {
            int TB = T - t0 < FAST_ROWS ? T - t0 : FAST_ROWS;
            int R = fast_tile_rows(TB);
            int o = panel;
            for (; o < panel_end; o += R) {
                if (o + R > panel_end) { R = 1; }   // the panel's last rows, one at a time
                const uint8_t* row = (const uint8_t*)weight.data + (size_t)o * row_bytes;
                tiles(out + (size_t)t0 * OC + o, inp + (size_t)t0 * C, row, row_bytes, C, OC, R, TB);
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
    // Each thread takes one contiguous range of output rows (a multiple of 16 rows, so tiles stay whole).
    #pragma omp parallel
    {
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
            if (isa == FAST_ISA_AVX512) { matmul_rows_avx512(out, inp, weight, T, C, OC, first_row, last_row); }
            else
#endif
            { (void)isa; matmul_rows_portable(out, inp, weight, T, C, OC, first_row, last_row); }
        }
    }
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

void attention_forward_fast(float* out, const float* q, const float* key_cache, const float* value_cache,
                            const uint8_t* mask, int T, int P, int NH, int NKV, int HS) {
    // out, q: (T, NH*HS); key_cache, value_cache: (P, NKV*HS); mask: (T, P)
    int group = NH / NKV;
    int KVD = NKV * HS;
    int QD = NH * HS;
    float scale = 1.0f / sqrtf((float)HS);
    int n_chunks = (T + FAST_QUERY_ROWS - 1) / FAST_QUERY_ROWS;
    int n_items = NKV * n_chunks;
    #pragma omp parallel
    {
        // per thread: scores, then weights, of the chunk's queries (FAST_QUERY_ROWS * group, P)
        float* scores = mallocCheck((size_t)FAST_QUERY_ROWS * group * (P > 0 ? P : 1) * sizeof(float));
        float max_scores[FAST_QUERY_ROWS * 64], sums[FAST_QUERY_ROWS * 64];
        int queries_max = FAST_QUERY_ROWS * 64;
        #pragma omp for schedule(static)
        for (int item = 0; item < n_items; item++) {
            int kv_head = item / n_chunks;
            int t0 = (item % n_chunks) * FAST_QUERY_ROWS;
            int rows = T - t0 < FAST_QUERY_ROWS ? T - t0 : FAST_QUERY_ROWS;
            int n_queries = rows * group;   // query i: row t0 + i / group, head kv_head * group + i % group
            if (n_queries > queries_max) {  // group > 64: never for the models we run; keep it correct anyway
                fprintf(stderr, "error: attention_forward_fast: %d query heads per key/value head (at most 64)\n", group);
                exit(EXIT_FAILURE);
            }
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
        free(scores);
    }
}
