/*
backends/cpu_fast.h: what the fast CPU ops (cpu_fast.c, whose top comment is the contract) and their x86
kernels (cpu_fast_kernels.c) share: the instruction-set switches, the stored types read one value or block
at a time, the portable bodies of the matmul and of attention (cpu_fast.c runs them as they are,
cpu_fast_kernels.c compiles them again for AVX2 and AVX-512), the layout of int8 input rows, and the
kernels' entry points.

Why the kernels are a file of their own: their unrolled tiles (a hundred shapes) took two thirds of the
compile time of the whole program, in every test binary. The Makefile compiles cpu_fast_kernels.c once
into an object that ./aurora and every test binary link (-DFAST_KERNELS_SEPARATE), so the kernels the
tests check are the program's, byte for byte. Without that switch cpu_fast.c includes the file, and
`cc -std=c11 -ffp-contract=off -fopenmp aurora.c -lm` alone still builds the whole program (the bit-for-bit
contracts need -ffp-contract=off, or -std=c11 with GCC: no fused multiply-adds the code does not write).
*/
#ifndef CPU_FAST_H
#define CPU_FAST_H

#include "aurora.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define FAST_X86 1
#include <immintrin.h>
#else
#define FAST_X86 0
#endif
#define FAST_INLINE static inline __attribute__((always_inline))
// AMX's tiles (cpu_fast_kernels.c): GCC 11 and clang 12 first know them, and their tile intrinsics exist for
// x86-64 only. The bf16 tile's shape is used by the portable packing too (cpu_fast.c), so it is defined on
// every architecture.
#if FAST_X86 && defined(__x86_64__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define FAST_AMX_KERNEL 1
#else
#define FAST_AMX_KERNEL 0
#endif
#define FAST_BF16_AMX_PAIRS 16   // pairs of k per tile multiply (a tile row: 64 bytes)
#define FAST_BF16_AMX_ROWS 16    // rows of A per tile
#if FAST_X86
// the same portable C, compiled for wider vectors (no intrinsics): the AVX2 level, and attention on AVX-512
#define FAST_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define FAST_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define FAST_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
// An empty statement that claims to change a vector register's value: GCC may no longer reassociate the
// chain of integer adds through it. In the AVX2 int8 tiles it rebuilt each block's chain of int16 pair sums
// into a tree of partial sums, which spilled to the stack (2-core EPYC, one thread, a 576 x 1536 Q4_1
// matrix over 64 rows: 60 GMAC/s as written, 72-78 with the chain kept). The sums are the same integers.
#define FAST_KEEP_CHAIN(v) __asm__("" : "+x"(v))
#endif

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
static inline size_t fast_row_bytes(int type, int cols) { return tensor_bytes(type, cols); }

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

// ----------------------------------------------------------------------------
// bf16 products (the trainer's mixed precision, backend_cpu_fast_bf16): both operands rounded to bf16, the
// products (exact in fp32: 8-bit by 8-bit significands) summed in fp32. Operands are packed in pairs along k,
// one 32-bit word holding the bf16 of element 2i in its low half and of 2i + 1 in its high half, which is
// what vdpbf16ps reads: per fp32 lane it adds the high halves' product to the sum, rounds, then the low
// halves' product, rounds, a sum below fp32's normal range flushed to a signed zero (measured on Zen 4: the
// two-step sum below, bit for bit, on 16 million random lanes of normal values; one rounding per pair, or
// the low product first, differ). So the portable tile below and the AVX-512 BF16 one are the same
// arithmetic, except near and below the normal range (|x| < 2^-126, where the instruction also rounds a
// subnormal product its own way: 485 of 32 million lanes of such values differed) and in which NaN's
// payload a result keeps: gradients are nowhere near there, and a NaN rejects the step either way. AMX's
// tdpbf16ps (fast_bf16_tile_amx, below) sums the same exact products with its own roundings: not these
// bits, but closer to the exact sum (measured on sums of 32 to 1,536 products of normal values: within
// 4-8e-8 of the sum of |terms| where the two-step sum is within 1.2-1.3e-7); tests/test_fast.c bounds it.
// Both operands are packed into blocks of `width` rows (A: FAST_BF16_TILE_ROWS rows of M, B: FAST_BF16_PANEL
// columns of N), each block k2-major: the words of its rows for pair 0, then pair 1, ... (so a tile reads
// one contiguous run a pair); rows past M or N, and the odd k's high half, are zero.

#define FAST_BF16_TILE_ROWS 12
#define FAST_BF16_PANEL 32

// fp32 -> bf16, round to nearest even; NaN stays NaN (quiet); zero and the subnormals become a signed zero
// (vdpbf16ps treats subnormal inputs as zero: flushing here keeps both tiles' inputs the same). gguf.c's
// fp32_to_bf16 of the flushed value, in selects rather than branches, so that the packing loops vectorise.
static inline uint32_t fast_bf16_round(float f) {
    uint32_t u = fast_float_bits(f);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;   // a carry into the exponent is the right rounding
    uint32_t nan = (u >> 16) | 0x0040u, zero = (u >> 16) & 0x8000u;
    rounded = (u & 0x7f800000u) == 0 ? zero : rounded;
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}
// x, or a zero of its sign where it is below fp32's normal range (FTZ: the instruction's results)
static inline float fast_flush_subnormal(float x) { return fabsf(x) < 0x1p-126f ? copysignf(0.0f, x) : x; }

// out (rows x cols of the tile, out_row apart) = [out +] sum over the K2 pairs, in order, of the high product
// then the low one, from zero; a: the tile's block of A, b: the panel's block of B (packed as above).
static inline void fast_bf16_tile_portable(float* out, size_t out_row, const uint32_t* a, const uint32_t* b, int K2,
                                           int rows, int cols, int accumulate) {
    for (int r = 0; r < rows; r++) {
        for (int j = 0; j < cols; j++) {
            float sum = 0.0f;
            for (int k2 = 0; k2 < K2; k2++) {
                uint32_t x = a[(size_t)k2 * FAST_BF16_TILE_ROWS + r], y = b[(size_t)k2 * FAST_BF16_PANEL + j];
                sum = fast_flush_subnormal(sum + bf16_to_fp32((uint16_t)(x >> 16)) * bf16_to_fp32((uint16_t)(y >> 16)));
                sum = fast_flush_subnormal(sum + bf16_to_fp32((uint16_t)(x & 0xffffu)) * bf16_to_fp32((uint16_t)(y & 0xffffu)));
            }
            out[(size_t)r * out_row + j] = accumulate ? out[(size_t)r * out_row + j] + sum : sum;
        }
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

// ----------------------------------------------------------------------------
// matmul backward over fp32 weights (the trainer's draft), the portable tile (AVX-512 and AVX2 CPUs run
// the register-tiled kernels in cpu_fast_kernels.c instead). Both gradients have one form,
//   out[r][c] += sum over k of a(r, k) * b[k][c],   a(r, k) = a[r * a_row + k * a_k], b: (K, C)
//   dinp:    r = t, k = o: a = dout (a_row OC, a_k 1), b = weight
//   dweight: r = o, k = t: a = dout (a_row 1, a_k OC), b = inp
// computed for a tile of FAST_BACKWARD_ROWS rows by FAST_BACKWARD_COLUMNS columns (16 KB, in L1) with the
// innermost loop along a row of b (vectorised over c). Each element's sum runs over k in order from zero
// and is then added to out: the reference's arithmetic (matmul_backward_cpu), in the same order, so the
// result is the reference's bit for bit (no fp contraction: -ffp-contract=off, the Makefile's).
#define FAST_BACKWARD_ROWS 16
#define FAST_BACKWARD_COLUMNS 256

// The tile at rows [r0, r0 + 16) and columns [c0, c0 + 256) of out (R, C), clipped to its edges.
FAST_INLINE void matmul_backward_tile_body(float* restrict out, const float* restrict a, size_t a_row, size_t a_k,
                                           const float* restrict b, int R, int K, int C, int r0, int c0) {
    int nr = R - r0 < FAST_BACKWARD_ROWS ? R - r0 : FAST_BACKWARD_ROWS;
    int nc = C - c0 < FAST_BACKWARD_COLUMNS ? C - c0 : FAST_BACKWARD_COLUMNS;
    float tile[FAST_BACKWARD_ROWS][FAST_BACKWARD_COLUMNS];
    for (int i = 0; i < nr; i++) {
        for (int c = 0; c < nc; c++) { tile[i][c] = 0.0f; }
    }
    for (int k = 0; k < K; k++) {
        const float* b_row = b + (size_t)k * C + c0;
        for (int i = 0; i < nr; i++) {
            float factor = a[(size_t)(r0 + i) * a_row + (size_t)k * a_k];
            float* t = tile[i];
            #pragma omp simd
            for (int c = 0; c < nc; c++) { t[c] += factor * b_row[c]; }
        }
    }
    for (int i = 0; i < nr; i++) {
        float* o = out + (size_t)(r0 + i) * C + c0;
        #pragma omp simd
        for (int c = 0; c < nc; c++) { o[c] += tile[i][c]; }
    }
}

// ----------------------------------------------------------------------------
// attention: attention_forward_cpu's contract; each cached key and value row is read once for a chunk of
// FAST_QUERY_ROWS query rows and all query heads of its group. Per (key/value head, chunk of rows):
//   pass 1: for each slot p some query of the chunk sees, score every query against k_p (masked: -inf)
//   softmax per query in slot order (exact max first, as the reference), weights kept in the score buffer
//   pass 2: for each slot p, add weight * v_p into every query that sees it; divide by the sum at the end
// Per query the arithmetic is the reference's except for the order of the HS-term dot products (vector
// lanes), so a query's result does not depend on T or on the other queries. The two passes are bodies
// (compiled again for AVX2 in cpu_fast_kernels.c); the softmax between them is one function the portable
// and AVX2 paths share. The AVX-512 kernel (cpu_fast_kernels.c) has its own layout and order (fused
// multiply-adds; the same independence of T and of the other queries).

#define FAST_QUERY_ROWS 16
// The AVX-512 kernel (cpu_fast_kernels.c) runs a key/value head's queries in groups of up to 16 lanes, for
// head sizes that are multiples of 16 up to FAST_AVX512_MAX_HS (the others: the portable passes); groups of
// FAST_FEW_QUERIES or fewer one query at a time. 5: a decode step's 3 queries (the default model's group)
// go one at a time, a 2-row pass's 6 sixteen to a vector. With 7 those 6 went one at a time, split by
// query head over the threads (each head's items reading the key and value rows again): attention alone,
// 30 layers, two threads, the median of 8 alternated runs' fastest, 2 rows after 128 / 300 / 600 slots:
// 0.330 / 0.705 / 1.995 ms, with 5: 0.247 / 0.565 / 1.318 (2-core Zen 5). One query at a time stays the
// faster for 3 (T = 1 after 128 slots 0.210 ms, sixteen to a vector 0.273).
#define FAST_AVX512_MAX_HS 128
#define FAST_FEW_QUERIES 5
static inline int fast_attention_lanes_fit(int HS) { return HS % 16 == 0 && HS <= FAST_AVX512_MAX_HS; }
#define FAST_MAX_GROUP MODEL_MAX_HEAD_GROUP   // query heads per key/value head (the loaders refuse more)

// A work item: key/value head kv_head, `heads` of its group's query heads from the group's head h0, and
// query rows [t0, t0 + rows); its query i is row t0 + i / heads, head kv_head * group + h0 + i % heads.
// scores: (rows * heads, P), max_scores and sums: (rows * heads). (Items of fewer heads read the same key
// and value rows more often; they exist so that a verify pass's three key/value heads make more than three
// items for the threads to share: attention_forward_fast.) keys and values: the head's slot 0; slot p's
// row is keys + p * slot_stride (HS floats in a row in either cache layout: aurora.h's CacheLayout).
typedef struct {
    float* out;
    const float* q;
    const float* keys;
    const float* values;
    size_t slot_stride;
    const uint8_t* mask;
    int T, P, NH, NKV, HS, kv_head, t0;
    int group, h0, heads, n_queries;
    float* scores;
    float* max_scores;
    float* sums;
    uint16_t* lanes;   // (P): the AVX-512 kernel's slot masks (cpu_fast_kernels.c); NULL where not needed
} AttentionItem;

static inline AttentionItem attention_item(float* out, const float* q, const float* key_cache, const float* value_cache,
                                           CacheLayout layout, const uint8_t* mask, int T, int P, int NH, int NKV,
                                           int HS, int kv_head, int t0, int chunk_rows, int h0, int heads,
                                           float* scores, float* max_scores, float* sums, uint16_t* lanes) {
    int rows = T - t0 < chunk_rows ? T - t0 : chunk_rows;
    AttentionItem item = {out, q, key_cache + kv_head * layout.head_stride, value_cache + kv_head * layout.head_stride,
                          layout.slot_stride, mask, T, P, NH, NKV, HS, kv_head, t0, NH / NKV, h0, heads, rows * heads,
                          scores, max_scores, sums, lanes};
    return item;
}
static inline size_t attention_offset(const AttentionItem* a, int i) {
    return (size_t)(a->t0 + i / a->heads) * a->NH * a->HS + (size_t)(a->kv_head * a->group + a->h0 + i % a->heads) * a->HS;
}
static inline const float* attention_query(const AttentionItem* a, int i) { return a->q + attention_offset(a, i); }
static inline float* attention_output(const AttentionItem* a, int i) { return a->out + attention_offset(a, i); }
static inline const uint8_t* attention_mask_row(const AttentionItem* a, int i) {
    return a->mask + (size_t)(a->t0 + i / a->heads) * a->P;
}

// pass 1: for each slot p some query of the item sees, every query's score against k_p (masked: -inf)
// and each query's maximum (a NaN score never becomes the maximum)
FAST_INLINE void attention_scores_body(const AttentionItem* a) {
    int HS = a->HS;
    float scale = 1.0f / sqrtf((float)HS);
    for (int i = 0; i < a->n_queries; i++) { a->max_scores[i] = -INFINITY; }
    for (int p = 0; p < a->P; p++) {
        const float* restrict k_p = a->keys + p * a->slot_stride;
        for (int i = 0; i < a->n_queries; i++) {
            float* score_ip = a->scores + (size_t)i * a->P + p;
            if (!attention_mask_row(a, i)[p]) { *score_ip = -INFINITY; continue; }
            const float* restrict q_th = attention_query(a, i);
            float score = 0.0f;
            #pragma omp simd reduction(+:score)
            for (int d = 0; d < HS; d++) { score += q_th[d] * k_p[d]; }
            score *= scale;
            *score_ip = score;
            if (score > a->max_scores[i]) { a->max_scores[i] = score; }
        }
    }
}

// ----------------------------------------------------------------------------
// exp for the fast tables' softmax and SwiGLU. libm's expf was 27% of the attention of a verify pass and
// most of its SwiGLU (a scalar call per score and per hidden unit), so these ops compute
//   n = round(x * log2 e), r = x - n * C1 - n * C2 (C1 + C2 = ln 2, C1 exact in 9 bits: Cody and Waite),
//   exp(x) = 2^n * (1 + r + r^2/2! + ... + r^7/7!)  (|r| <= 0.35: the series' remainder is 5e-9 relative)
// in fp32 with separate multiplies and adds, the polynomial in Horner form, 2^n applied exactly (ldexpf, or
// vscalefps in the AVX-512 twin, fast_expf_avx512, which gives the same bits). x is clamped to [-104, 89]
// first (exp underflows to 0 below -103.97 and overflows above 88.73, as here) and NaN is returned as it
// is. Measured against exp in double over [-104, 89] (tests/test_fast.c): at most FAST_EXP_MAX_ULP units in
// the last place where the result is normal (measured 1.19). The reference keeps libm's expf; the fast
// tables' results differ from it by that much per exponential, far inside their op tolerances. The
// coefficients 1/7!, ..., 1/1!, 1/0! are one table, FAST_EXP_POLY, for the function and its twin.
#define FAST_EXP_MAX_ULP 2
#define FAST_EXP_LOG2E 1.44269504088896341f
#define FAST_EXP_C1 0.693359375f
#define FAST_EXP_C2 -2.12194440e-4f
#define FAST_EXP_LOW -104.0f
#define FAST_EXP_HIGH 89.0f
static const float FAST_EXP_POLY[8] = {1.0f / 5040.0f, 1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f,
                                        0.5f, 1.0f, 1.0f};
static inline float fast_expf(float x) {
    if (x != x) { return x; }
    x = x < FAST_EXP_LOW ? FAST_EXP_LOW : x > FAST_EXP_HIGH ? FAST_EXP_HIGH : x;
    float n = rintf(x * FAST_EXP_LOG2E);
    float r = x - n * FAST_EXP_C1;
    r = r - n * FAST_EXP_C2;
    float p = FAST_EXP_POLY[0];
    for (int k = 1; k < 8; k++) { p = p * r + FAST_EXP_POLY[k]; }
    return ldexpf(p, (int)n);
}

// ----------------------------------------------------------------------------
// the trainer's softmax and distribution loss (softmax_forward_fast, distribution_loss_fast: cpu_fast.c), one
// row at a time: the reference's expressions (cpu_ref.c) in fp32 with fast_expf for exp, the reference's
// double sums replaced by sums over FAST_ROW_LANES lanes (element v into lane v % 16, in order; then the lanes
// added pairwise, (l, l + 8), (l, l + 4), (l, l + 2), (0, 1)). The AVX2 twins (cpu_fast_kernels.c; AVX-512 CPUs
// run them too) hold the lanes in vectors and give the same bits; every row's result is the same for any T and
// thread count.
// In plain C these loops are slower than the reference's (fast_expf's rounding and scaling are library calls
// where the compiler may not assume SSE4.1: 44 against 25 ms over 190 rows of 8,192, one thread), so the
// portable level runs the reference's code; these functions stay the twins' definition, and the tests' oracle.

#define FAST_ROW_LANES 16
static inline float fast_lanes_total(float* lanes) {
    for (int width = FAST_ROW_LANES / 2; width >= 1; width /= 2) {
        for (int l = 0; l < width; l++) { lanes[l] += lanes[l + width]; }
    }
    return lanes[0];
}

// The largest of a row (NaN skipped, as the reference's `>` skips it; exact in any order)
static inline float fast_row_max(const float* z, int V) {
    float max = -INFINITY;
    for (int v = 0; v < V; v++) { if (z[v] > max) { max = z[v]; } }
    return max;
}

// One row of softmax_forward_fast (y may be x)
static inline void fast_softmax_row(float* y, const float* x, int V) {
    float max = fast_row_max(x, V), lanes[FAST_ROW_LANES] = {0};
    for (int v = 0; v < V; v++) { y[v] = fast_expf(x[v] - max); lanes[v % FAST_ROW_LANES] += y[v]; }
    float inverse = 1.0f / fast_lanes_total(lanes);
    for (int v = 0; v < V; v++) { y[v] *= inverse; }
}

// One row of distribution_loss_fast, forward KL (p: the teacher's row) or next-token (p NULL, the target
// token `target`): returns the row's loss and, if dz is not NULL, adds weight * dloss/dz to dz:
//   log Z = max + log sum_v exp(z(v) - max)
//   forward KL  loss = -sum_{p(v) != 0} p(v) (z(v) - log Z)   dz(j) += weight (exp(z(j) - log Z) sum_p - p(j))
//   next token  loss = log Z - z(x)                           dz(j) += weight (exp(z(j) - log Z) 1 - [j == x])
static inline float fast_loss_row(float* dz, const float* z, const float* p, int target, int V, float weight) {
    float max = fast_row_max(z, V), lanes[FAST_ROW_LANES] = {0};
    for (int v = 0; v < V; v++) { lanes[v % FAST_ROW_LANES] += fast_expf(z[v] - max); }
    float log_normaliser = max + logf(fast_lanes_total(lanes)), loss, sum_p = 1.0f;
    if (p != NULL) {
        float terms[FAST_ROW_LANES] = {0}, mass[FAST_ROW_LANES] = {0};
        for (int v = 0; v < V; v++) {
            if (p[v] == 0.0f) { continue; }   // 0 * log q = 0, even where q underflows
            terms[v % FAST_ROW_LANES] += p[v] * (z[v] - log_normaliser);
            mass[v % FAST_ROW_LANES] += p[v];
        }
        loss = -fast_lanes_total(terms);
        sum_p = fast_lanes_total(mass);
    } else {
        loss = log_normaliser - z[target];
    }
    if (dz != NULL) {
        for (int j = 0; j < V; j++) {
            float teacher = p != NULL ? p[j] : j == target ? 1.0f : 0.0f;
            dz[j] += weight * (fast_expf(z[j] - log_normaliser) * sum_p - teacher);
        }
    }
    return loss;
}

// softmax weights per query in slot order (exact max first, as the reference), kept in the score buffer;
// a masked slot (or a -inf score) gets weight 0. (The AVX-512 table has a vector twin: cpu_fast_kernels.c.)
static inline void attention_softmax(const AttentionItem* a) {
    for (int i = 0; i < a->n_queries; i++) {
        float* weights = a->scores + (size_t)i * a->P;
        const uint8_t* mask_row = attention_mask_row(a, i);
        float sum_weights = 0.0f;
        if (a->max_scores[i] == -INFINITY) { a->sums[i] = 0.0f; continue; }   // fully masked row: zeros
        for (int p = 0; p < a->P; p++) {
            if (!mask_row[p]) { weights[p] = 0.0f; continue; }
            weights[p] = fast_expf(weights[p] - a->max_scores[i]);
            sum_weights += weights[p];
        }
        a->sums[i] = sum_weights;
    }
}

// The per-query state of the vector kernels' values pass over queries [i0, i0 + nq) of an item (nq <= 4):
// each query's softmax sum (added in slot order as the slots are read, as attention_softmax adds it), its
// mask row and weights, and whether it sees any slot (a fully masked query gives zeros)
typedef struct {
    float sum_weights[4];
    const uint8_t* mask_rows[4];
    const float* weights[4];
    int active[4];
} ValuesQueries;
static inline void values_queries_begin(ValuesQueries* v, const AttentionItem* a, int i0, int nq) {
    for (int j = 0; j < nq; j++) {
        v->sum_weights[j] = 0.0f;
        v->mask_rows[j] = attention_mask_row(a, i0 + j);
        v->weights[j] = a->scores + (size_t)(i0 + j) * a->P;
        v->active[j] = a->max_scores[i0 + j] != -INFINITY;
    }
}

// pass 2: weighted values in slot order per query, each value row read once for the whole item; then
// divided by the sum (a fully masked query: zeros)
FAST_INLINE void attention_values_body(const AttentionItem* a) {
    int HS = a->HS;
    for (int i = 0; i < a->n_queries; i++) {
        float* out_th = attention_output(a, i);
        for (int d = 0; d < HS; d++) { out_th[d] = 0.0f; }
    }
    for (int p = 0; p < a->P; p++) {
        const float* restrict v_p = a->values + p * a->slot_stride;
        for (int i = 0; i < a->n_queries; i++) {
            if (!attention_mask_row(a, i)[p] || a->max_scores[i] == -INFINITY) { continue; }
            float weight = a->scores[(size_t)i * a->P + p];
            float* restrict out_th = attention_output(a, i);
            #pragma omp simd
            for (int d = 0; d < HS; d++) { out_th[d] += weight * v_p[d]; }
        }
    }
    for (int i = 0; i < a->n_queries; i++) {
        if (a->max_scores[i] == -INFINITY) { continue; }
        float* out_th = attention_output(a, i);
        for (int d = 0; d < HS; d++) { out_th[d] /= a->sums[i]; }
    }
}

// ----------------------------------------------------------------------------
// attention backward (the trainer's draft): attention_backward_cpu's contract, arithmetic and order, bit for
// bit, for one key/value head (its dkeys and dvalues columns belong to it alone). The reference walks one
// (query head, row) at a time and each of its dot products is a serial chain of HS adds; here the same sums
// are grouped into small matrix products whose vector lanes are independent outputs, each lane's sum still
// running over its terms in the reference's order:
//   per query head h, per block of FAST_BACKWARD_QUERY_ROWS rows, per block of 16 slots some row sees:
//   scores      q_t . k_p            lanes over slots (the keys transposed once a call)
//   softmax     per row over its visible slots in order (the reference's expressions)
//   da_p        dout_t . v_p         lanes over slots (the values transposed)
//   dvalues_p  += a_p dout_t         lanes over the head's dimensions, rows of the block in order
//   dkeys_p    += ds_p q_t           likewise
//   dq_t       += ds_p k_p           likewise, slots in order
// A term the reference skips (a slot the row does not see, or any slot of a row whose visible scores give no
// maximum) is skipped here, so non-finite values there change nothing. Each gradient element starts from what
// is in memory and adds its terms in the reference's order: h, then the rows, then the slots.
#define FAST_BACKWARD_QUERY_ROWS 16
#define FAST_BACKWARD_SLOTS 16

// The scratch one thread's key/value heads use (attention_backward_fast allocates it per thread).
typedef struct {
    int P16;            // P rounded up to whole blocks of slots
    float* keys_t;      // (HS, P16) this key/value head's keys, transposed (padding zero)
    float* values_t;    // (HS, P16) its values
    float* weights;     // (ROWS, P16) a block's scores, then its attention weights a_p
    float* dweights;    // (ROWS, P16) da_p, then ds_p
    uint8_t* keep;      // (ROWS, P16) 1 where a term exists: the slot visible and the row's maximum finite
    const uint8_t* seen; // (row blocks, P16 / 16) a block of slots some row of a block of query rows sees (one
                        // array for every thread: it depends on the mask alone)
} AttentionBackwardScratch;

// 16 floats as one value (GCC's and Clang's vector extension, not an instruction set's intrinsics: AVX-512
// holds it in one register, AVX2 in two, SSE in four), so a register tile stays in registers; its arithmetic
// is lane by lane, each lane the scalar expression's bits (-ffp-contract=off: no fused multiply-adds).
typedef float FastLanes __attribute__((vector_size(64)));
#define FAST_LANES_LOAD(v, p) memcpy(&(v), (p), sizeof(FastLanes))   // (macros: a function passing a
#define FAST_LANES_STORE(p, v) memcpy((p), &(v), sizeof(FastLanes))  // vector by value changes its ABI per target)

// attention_combine_body's arithmetic one output and lane at a time (its edges)
FAST_INLINE void attention_combine_edge(float* restrict out, size_t out_s, int n_out, int width, int accumulate,
                                        const float* restrict coef, size_t c_o, size_t c_b, const uint8_t* restrict keep,
                                        size_t k_o, size_t k_b, const float* restrict x, size_t x_s, int n_in) {
    for (int o = 0; o < n_out; o++) {
        for (int l = 0; l < width; l++) {
            float sum = accumulate ? out[(size_t)o * out_s + l] : 0.0f;
            for (int b = 0; b < n_in; b++) {
                if (keep == NULL || keep[(size_t)o * k_o + (size_t)b * k_b]) { sum += coef[(size_t)o * c_o + (size_t)b * c_b] * x[(size_t)b * x_s + l]; }
            }
            out[(size_t)o * out_s + l] = sum;
        }
    }
}

// out[o][l] = (accumulate ? out[o][l] : 0) + the sum over b in [0, n_in), in order, of coef(o, b) * x[b][l],
// for o < n_out, l < width, each term added only where keep(o, b) (keep NULL: everywhere). Strides in floats
// (bytes for keep): out[o * out_s + l], coef[o * c_o + b * c_b], keep[o * k_o + b * k_b], x[b * x_s + l].
// Register tiles of 4 outputs by 16 lanes run along b; the edges one output and lane at a time, in the same order.
FAST_INLINE void attention_combine_body(float* restrict out, size_t out_s, int n_out, int width, int accumulate,
                                        const float* restrict coef, size_t c_o, size_t c_b, const uint8_t* restrict keep,
                                        size_t k_o, size_t k_b, const float* restrict x, size_t x_s, int n_in) {
    enum { L = 16 };
    int o = 0;
    for (; o + 4 <= n_out; o += 4) {
        float* o0 = out + (size_t)o * out_s;
        const float* c0 = coef + (size_t)o * c_o;
        const uint8_t* k0 = keep != NULL ? keep + (size_t)o * k_o : NULL;
        int l = 0;
        for (; l + L <= width; l += L) {
            FastLanes zero = {0}, a0 = zero, a1 = zero, a2 = zero, a3 = zero;
            if (accumulate) {
                FAST_LANES_LOAD(a0, o0 + l); FAST_LANES_LOAD(a1, o0 + out_s + l);
                FAST_LANES_LOAD(a2, o0 + 2 * out_s + l); FAST_LANES_LOAD(a3, o0 + 3 * out_s + l);
            }
            for (int b = 0; b < n_in; b++) {
                FastLanes xb;
                FAST_LANES_LOAD(xb, x + (size_t)b * x_s + l);
                const float* cb = c0 + (size_t)b * c_b;
                if (k0 == NULL) {
                    a0 += cb[0] * xb; a1 += cb[c_o] * xb; a2 += cb[2 * c_o] * xb; a3 += cb[3 * c_o] * xb;
                    continue;
                }
                const uint8_t* kb = k0 + (size_t)b * k_b;
                if (kb[0]) { a0 += cb[0] * xb; }
                if (kb[k_o]) { a1 += cb[c_o] * xb; }
                if (kb[2 * k_o]) { a2 += cb[2 * c_o] * xb; }
                if (kb[3 * k_o]) { a3 += cb[3 * c_o] * xb; }
            }
            FAST_LANES_STORE(o0 + l, a0); FAST_LANES_STORE(o0 + out_s + l, a1);
            FAST_LANES_STORE(o0 + 2 * out_s + l, a2); FAST_LANES_STORE(o0 + 3 * out_s + l, a3);
        }
        if (l < width) {   // the last lanes: the edge loop below, these four outputs
            attention_combine_edge(out + (size_t)o * out_s + l, out_s, 4, width - l, accumulate, coef + (size_t)o * c_o, c_o,
                                   c_b, keep != NULL ? keep + (size_t)o * k_o : NULL, k_o, k_b, x + l, x_s, n_in);
        }
    }
    if (o < n_out) {
        attention_combine_edge(out + (size_t)o * out_s, out_s, n_out - o, width, accumulate, coef + (size_t)o * c_o, c_o, c_b,
                               keep != NULL ? keep + (size_t)o * k_o : NULL, k_o, k_b, x, x_s, n_in);
    }
}

FAST_INLINE void attention_backward_head_body(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                                              const float* keys, const float* values, const uint8_t* mask, int T, int P,
                                              int NH, int NKV, int HS, int kv_head, const AttentionBackwardScratch* s) {
    enum { ROWS = FAST_BACKWARD_QUERY_ROWS, SLOTS = FAST_BACKWARD_SLOTS };
    int group = NH / NKV, KVD = NKV * HS, QD = NH * HS, P16 = s->P16, n_blocks = P16 / SLOTS;
    float scale = 1.0f / sqrtf((float)HS);
    for (int i = 0; i < HS; i++) {   // the head's keys and values, transposed: slots along a row
        for (int p = 0; p < P16; p++) {
            s->keys_t[(size_t)i * P16 + p] = p < P ? keys[(size_t)p * KVD + (size_t)kv_head * HS + i] : 0.0f;
            s->values_t[(size_t)i * P16 + p] = p < P ? values[(size_t)p * KVD + (size_t)kv_head * HS + i] : 0.0f;
        }
    }
    for (int h = kv_head * group; h < (kv_head + 1) * group; h++) {
        for (int t0 = 0; t0 < T; t0 += ROWS) {
            int nr = T - t0 < ROWS ? T - t0 : ROWS;
            const uint8_t* seen = s->seen + (size_t)(t0 / ROWS) * n_blocks;
            const float* q_block = q + (size_t)t0 * QD + (size_t)h * HS;
            const float* dout_block = dout + (size_t)t0 * QD + (size_t)h * HS;
            // scores (unscaled dot products) and da_p = dout_t . v_p of every slot of a seen block
            for (int blk = 0; blk < n_blocks; blk++) {
                if (!seen[blk]) { continue; }
                attention_combine_body(s->weights + blk * SLOTS, (size_t)P16, nr, SLOTS, 0, q_block, (size_t)QD, 1, NULL, 0, 0,
                                       s->keys_t + blk * SLOTS, (size_t)P16, HS);
                attention_combine_body(s->dweights + blk * SLOTS, (size_t)P16, nr, SLOTS, 0, dout_block, (size_t)QD, 1, NULL, 0,
                                       0, s->values_t + blk * SLOTS, (size_t)P16, HS);
            }
            // per row, as the reference: a_p = expf(score * scale - max) / sum over the visible slots, then
            // ds_p = a_p (da_p - sum_j a_j da_j) * scale. Sums in slot order (a skipped slot adds +0 to a sum
            // that started at +0: nothing); the lane-by-lane steps also run on slots without a term, whose
            // values nothing reads.
            for (int r = 0; r < nr; r++) {
                const uint8_t* m = mask + (size_t)(t0 + r) * P;
                float* w = s->weights + (size_t)r * P16;
                float* dw = s->dweights + (size_t)r * P16;
                uint8_t* keep = s->keep + (size_t)r * P16;
                float max_score = -INFINITY;
                for (int blk = 0; blk < n_blocks; blk++) {
                    if (!seen[blk]) { continue; }
                    for (int p = blk * SLOTS; p < (blk + 1) * SLOTS; p++) {
                        float score = p < P && m[p] ? w[p] * scale : -INFINITY;
                        max_score = score > max_score ? score : max_score;
                    }
                }
                int active = max_score != -INFINITY;   // else a fully masked row: no gradient flows
                float sum_weights = 0.0f;
                for (int blk = 0; blk < n_blocks; blk++) {
                    if (!seen[blk]) { continue; }
                    for (int p = blk * SLOTS; p < (blk + 1) * SLOTS; p++) {
                        keep[p] = p < P && active && m[p];
                        if (keep[p]) { w[p] = expf(w[p] * scale - max_score); sum_weights += w[p]; }
                    }
                }
                float weighted_dweights = 0.0f;
                for (int blk = 0; blk < n_blocks; blk++) {
                    if (!seen[blk]) { continue; }
                    float* wb = w + blk * SLOTS;
                    #pragma omp simd
                    for (int p = 0; p < SLOTS; p++) { wb[p] /= sum_weights; }
                    for (int p = blk * SLOTS; p < (blk + 1) * SLOTS; p++) { weighted_dweights += keep[p] ? w[p] * dw[p] : 0.0f; }
                }
                for (int blk = 0; blk < n_blocks; blk++) {
                    if (!seen[blk]) { continue; }
                    float* wb = w + blk * SLOTS;
                    float* dwb = dw + blk * SLOTS;
                    #pragma omp simd
                    for (int p = 0; p < SLOTS; p++) { dwb[p] = wb[p] * (dwb[p] - weighted_dweights) * scale; }
                }
            }
            // the gradients: per seen block of slots, its slots' rows over the block's query rows in order; dq's
            // rows over the seen blocks' slots in order
            for (int blk = 0; blk < n_blocks; blk++) {
                if (!seen[blk]) { continue; }
                int p0 = blk * SLOTS, np = P - p0 < SLOTS ? P - p0 : SLOTS;
                const uint8_t* keep = s->keep + p0;
                if (dvalues != NULL) {
                    attention_combine_body(dvalues + (size_t)p0 * KVD + (size_t)kv_head * HS, (size_t)KVD, np, HS, 1,
                                           s->weights + p0, 1, (size_t)P16, keep, 1, (size_t)P16, dout_block, (size_t)QD, nr);
                }
                if (dkeys != NULL) {
                    attention_combine_body(dkeys + (size_t)p0 * KVD + (size_t)kv_head * HS, (size_t)KVD, np, HS, 1,
                                           s->dweights + p0, 1, (size_t)P16, keep, 1, (size_t)P16, q_block, (size_t)QD, nr);
                }
                if (dq != NULL) {
                    attention_combine_body(dq + (size_t)t0 * QD + (size_t)h * HS, (size_t)QD, nr, HS, 1, s->dweights + p0,
                                           (size_t)P16, 1, keep, (size_t)P16, 1, keys + (size_t)p0 * KVD + (size_t)kv_head * HS,
                                           (size_t)KVD, np);
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// Packed quantised matrices: the int8 table's form of a Q8_0, Q4_0 or Q4_1 matrix (upload_matrix packs it
// once, on AVX-512 VNNI and AVX2 CPUs). The same bytes as stored, regrouped so that one vpdpbusd serves 16 weight
// rows: int32 lane r of a vector holds 4 consecutive elements of row r. Rows go in groups of 16 (the last
// group padded with zero rows); a group's blocks follow each other; one block of a group is
//   d[16]    the 16 rows' fp16 scales, as stored                                           32 bytes
//   m[16]    Q4_1 only: the 16 rows' fp16 minimums                                         32 bytes
//   quads    Q4_0, Q4_1: 4 vectors of 64 bytes; byte 4r + i of vector j is the stored byte 4j + i of
//            row r's block (low nibble: element 4j + i, high nibble: element 16 + 4j + i)  256 bytes
//            Q8_0: 8 vectors; byte 4r + i of vector j is element 4j + i of row r, plus 128  512 bytes
// so a group's block takes exactly the bytes of 16 stored blocks: packing costs no memory. Matrix.type
// is the stored type plus FAST_PACKED.
#define FAST_PACKED 0x1000
#define FAST_GROUP 16   // weight rows per packed group
static inline int fast_is_packed(int type) { return (type & FAST_PACKED) != 0; }
static inline int fast_stored_type(int type) { return type & ~FAST_PACKED; }
// bytes of one block of a group, and of where its quads start
static inline size_t fast_packed_block_bytes(int type) {
    type = fast_stored_type(type);
    return type == TYPE_Q8_0 ? 32 + 512 : type == TYPE_Q4_0 ? 32 + 256 : 64 + 256;
}
static inline size_t fast_packed_quads_offset(int type) { return fast_stored_type(type) == TYPE_Q4_1 ? 64 : 32; }
static inline size_t fast_packed_group_bytes(int type, int cols) { return (size_t)(cols / FAST_QK) * fast_packed_block_bytes(type); }
// bytes of a whole packed matrix (rows rounded up to whole groups)
static inline size_t fast_packed_bytes(int type, int rows, int cols) {
    return (size_t)((rows + FAST_GROUP - 1) / FAST_GROUP) * fast_packed_group_bytes(type, cols);
}

// Row `row` of a packed matrix (cols values) dequantised into out: dequantize_row's values exactly.
static inline void fast_packed_dequantize_row(float* out, const uint8_t* data, int type, int cols, int row) {
    int stored = fast_stored_type(type), lane = row % FAST_GROUP;
    size_t block_bytes = fast_packed_block_bytes(type), quads = fast_packed_quads_offset(type);
    const uint8_t* group = data + (size_t)(row / FAST_GROUP) * fast_packed_group_bytes(type, cols);
    for (int b = 0; b < cols / FAST_QK; b++) {
        const uint8_t* block = group + (size_t)b * block_bytes;
        float d = fast_fp16_to_fp32(fast_load_u16(block + 2 * lane)), *w = out + (size_t)b * FAST_QK;
        float m = stored == TYPE_Q4_1 ? fast_fp16_to_fp32(fast_load_u16(block + 32 + 2 * lane)) : 0.0f;
        for (int j = 0; j < (stored == TYPE_Q8_0 ? 8 : 4); j++) {
            for (int i = 0; i < 4; i++) {
                uint8_t byte = block[quads + (size_t)j * 64 + 4 * lane + i];
                if (stored == TYPE_Q8_0) { w[4 * j + i] = d * (float)((int)byte - 128); continue; }
                int low = byte & 0x0f, high = byte >> 4;
                if (stored == TYPE_Q4_0) {
                    w[4 * j + i] = d * (float)(low - 8);
                    w[16 + 4 * j + i] = d * (float)(high - 8);
                } else {
                    w[4 * j + i] = d * (float)low + m;
                    w[16 + 4 * j + i] = d * (float)high + m;
                }
            }
        }
    }
}

// Input rows quantised for the packed kernel (its arithmetic: cpu_fast_kernels.c), in column order, with
// each block's scale, integer correction and sum.
typedef struct {
    int T, C;
    int8_t* q;             // (T, C)
    float* scales;         // (T, n_blocks)
    int32_t* starts;       // (T, n_blocks): -(8 or 128) * sum(q) (Q4_0, Q8_0), 0 (Q4_1)
    float* sums;           // (T, n_blocks): scale * sum(q), Q4_1's m term
    uint8_t* finite;       // (T): the row holds no infinity or NaN (else its blocks are zeros: see matmul_packed)
    void* memory;
} FastInt8Blocks;

static inline void fast_int8_blocks_allocate(FastInt8Blocks* x, int T, int C) {
    size_t n = (size_t)T * (C / FAST_QK), q_bytes = ((size_t)T * C + 63) / 64 * 64, field = (n * 4 + 63) / 64 * 64;
    uint8_t* memory = aligned_alloc(64, q_bytes + 3 * field + ((size_t)T + 63) / 64 * 64);
    if (!memory) { fprintf(stderr, "error: out of memory (%s:%d)\n", __FILE__, __LINE__); exit(EXIT_FAILURE); }
    x->T = T;
    x->C = C;
    x->memory = memory;
    x->q = (int8_t*)memory;
    x->scales = (float*)(memory + q_bytes);
    x->starts = (int32_t*)(memory + q_bytes + field);
    x->sums = (float*)(memory + q_bytes + 2 * field);
    x->finite = memory + q_bytes + 3 * field;
}

// The quantisation rule both kernels' quantisers share (cpu_fast_kernels.c), per block of 32 values whose
// largest magnitude is amax: scale = amax / 127, q = x * (1 / scale) rounded to nearest even; a block under
// 1e-30 in magnitude is all zeros (its products are far below any tolerance, and the inverse of a
// subnormal scale would overflow). Returns the scale, *inverse the multiplier.
static inline float fast_int8_scale(float amax, float* inverse) {
    float scale = amax / 127.0f;
    *inverse = amax > 1e-30f ? 1.0f / scale : 0.0f;
    return *inverse == 0.0f ? 0.0f : scale;
}
// Block `at` (row-major over (T, n_blocks)) quantised with scale and its values' sum: the scale, the
// kernels' integer correction for weights of `type` and Q4_1's m term.
static inline void fast_int8_block_store(FastInt8Blocks* x, size_t at, float scale, int sum, int type) {
    int correction = type == TYPE_Q8_0 ? 128 : type == TYPE_Q4_0 ? 8 : 0;
    x->scales[at] = scale;
    x->starts[at] = -correction * sum;
    x->sums[at] = scale * (float)sum;
}
// A block with an infinity or a NaN: zeros (its row then takes the exact path)
static inline void fast_int8_block_empty(FastInt8Blocks* x, int8_t* q, size_t at) {
    memset(q, 0, FAST_QK);
    x->scales[at] = 0.0f; x->starts[at] = 0; x->sums[at] = 0.0f;
}

// ----------------------------------------------------------------------------
// the x86 kernels (cpu_fast_kernels.c). Each computes out[:, first_row:last_row] of a matmul, or one
// attention work item, exactly as the portable code of cpu_fast.c defines it (see the contract).

#if FAST_X86
void fast_matmul_rows_avx2(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row, int last_row);
void fast_matmul_rows_avx512(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row, int last_row);
// Quantises input row t for weights of `type`; -1 if a value is not finite. (VNNI and AVX2: the same bits.)
int fast_vnni_quantize_blocks(FastInt8Blocks* x, const float* v, int t, int type);
int fast_avx2_quantize_blocks(FastInt8Blocks* x, const float* v, int t, int type);
// out[:, first_row:last_row] (first_row a multiple of FAST_GROUP) of a packed matrix. (VNNI and AVX2: the
// same bits.)
void fast_matmul_packed_vnni(float* out, const FastInt8Blocks* x, Matrix weight, int T, int C, int OC, int first_row,
                             int last_row);
void fast_matmul_packed_avx2(float* out, const FastInt8Blocks* x, Matrix weight, int T, int C, int OC, int first_row,
                             int last_row);
// The same on AMX's int8 tiles (Sapphire Rapids and later; the VNNI kernel's bits): several input rows.
void fast_matmul_packed_amx(float* out, const FastInt8Blocks* x, Matrix weight, int T, int C, int OC, int first_row,
                            int last_row);
void fast_attention_item_avx2(const AttentionItem* item);
// AdamW over n elements, n a multiple of 8: adamw_update_cpu's results bit for bit (cpu_fast.c)
void fast_adamw_avx2(float* params, const float* grads, float grad_scale, float* m, float* v, size_t n, float learning_rate,
                     float beta1, float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2);
// RoPE's rotation with per-element cos and signed sin rows `stride` apart (HS % 8 == 0; cpu_fast.c)
void fast_rope_avx2(float* out, const float* inp, const float* cos_dup, const float* sin_signed, size_t stride, int T,
                    int n_heads, int HS);
// One row of the trainer's softmax and distribution loss with fast_expf's twin: fast_softmax_row's and
// fast_loss_row's bits (cpu_fast.h); AVX2 and AVX-512 CPUs
void fast_softmax_row_avx2(float* y, const float* x, int V);
float fast_loss_row_avx2(float* dz, const float* z, const float* p, int target, int V, float weight);
// SwiGLU over n elements with fast_expf's twin: the same bits as the portable loop (cpu_fast.c)
void fast_swiglu_avx512(float* out, const float* gate, const float* up, int n);
void fast_swiglu_avx2(float* out, const float* gate, const float* up, int n);
void fast_attention_item_avx512(const AttentionItem* item);
void fast_attention_backward_head_avx2(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                                       const float* keys, const float* values, const uint8_t* mask, int T, int P, int NH,
                                       int NKV, int HS, int kv_head, const AttentionBackwardScratch* scratch);
void fast_attention_backward_head_avx512(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                                         const float* keys, const float* values, const uint8_t* mask, int T, int P, int NH,
                                         int NKV, int HS, int kv_head, const AttentionBackwardScratch* scratch);
// The AVX-512 backward's work item: rows [r0, r0 + FAST_BACKWARD_BLOCK_ROWS), columns [c0, c0 + 64).
#define FAST_BACKWARD_BLOCK_ROWS 128
void fast_matmul_backward_block_avx512(float* out, const float* a, size_t a_row, size_t a_k, const float* b, int R, int K,
                                       int C, int r0, int c0);
// The AVX2 backward's work item: rows [r0, r0 + FAST_BACKWARD_BLOCK_ROWS_AVX2), columns [c0, c0 + 16); the
// same bits as the AVX-512 block. a's rows are contiguous in k (a_row apart).
#define FAST_BACKWARD_BLOCK_ROWS_AVX2 120   // a multiple of its register tile's 6 rows
void fast_matmul_backward_block_avx2(float* out, const float* a, size_t a_row, const float* b, int R, int K, int C,
                                     int r0, int c0);
// One tile of the bf16 product matmul (cpu_fast.c, fast_gemm_bf16): FAST_BF16_TILE_ROWS rows of packed A by
// FAST_BF16_PANEL columns of one packed B panel, over k2 pairs; the portable tile's results bit for bit.
// (GCC 10 and clang 9 first know the instruction set; an older compiler builds the portable tile alone)
#if (defined(__clang__) && __clang_major__ >= 9) || (!defined(__clang__) && __GNUC__ >= 10)
#define FAST_BF16_KERNEL 1
#else
#define FAST_BF16_KERNEL 0
#endif
#define FAST_BF16_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))
void fast_bf16_tile_avx512(float* out, size_t out_row, const uint32_t* a, const uint32_t* b, int K2, int rows, int cols,
                           int accumulate);
// The same product on AMX's tiles (Sapphire Rapids and later): A packed rows first (row r's K2p words
// contiguous, K2p a multiple of FAST_BF16_AMX_PAIRS; rows past 16 in the next block of 16), B as above with
// K2p pairs; out (rows x cols of at most 32 x 32) [+]= the sums. Two blocks of A (rows > 16) keep four tiles
// of sums, so that each tile loaded feeds two multiplies: one thread, the trainer's matmuls over 600 rows
// (576 -> 576, 1536 and 4096, their backward), 59 -> 47 ms against one block's two tiles; each sum is the
// same tdpbf16ps chain either way, so the same bits. tdpbf16ps rounds its sums its own way (measured: closer
// to the exact sum than the portable tile's sequential one), so these are not the portable tile's bits
// (cpu_fast.c, fast_gemm_bf16). A thread
// calls fast_bf16_amx_begin before its tiles and fast_bf16_amx_end after. (FAST_AMX_KERNEL: above.)
void fast_bf16_amx_begin(void);
void fast_bf16_amx_end(void);
void fast_bf16_pack_rows_amx(uint32_t* block, const float* first, size_t s_i, int rows, int K, int K2p);
// the same block from rows side by side (row i's k-th value at first[i + k * s_k])
void fast_bf16_pack_columns_amx(uint32_t* block, const float* first, size_t s_k, int rows, int K, int K2p);
void fast_bf16_tile_amx(float* out, size_t out_row, const uint32_t* a, const uint32_t* b, int K2p, int rows, int cols,
                        int accumulate);
// Rows [0, rows) of one packed block (rows side by side: s_i == 1; or rows along k: s_k == 1), the portable
// packing's words bit for bit.
void fast_bf16_pack_block_avx512(uint32_t* block, const float* first, size_t s_i, size_t s_k, int rows, int K, int width);
// n_blocks blocks of 32 values to Q8_0, exactly as quantize_row.
void fast_quantize_q8_0_avx512(uint8_t* out, const float* x, int64_t n_blocks);
void fast_quantize_q8_0_avx2(uint8_t* out, const float* x, int64_t n_blocks);
// ... and to Q4_1 (a serving draft's copy with --draft-type q4_1)
void fast_quantize_q4_1_avx512(uint8_t* out, const float* x, int64_t n_blocks);
void fast_quantize_q4_1_avx2(uint8_t* out, const float* x, int64_t n_blocks);
#endif

#endif // CPU_FAST_H
