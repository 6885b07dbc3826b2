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
`cc aurora.c` alone still builds the whole program.
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
#if FAST_X86
// the same portable C, compiled for wider vectors (no intrinsics): the AVX2 level, and attention on AVX-512
#define FAST_AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
#define FAST_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define FAST_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
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
// attention: attention_forward_cpu's contract; each cached key and value row is read once for a chunk of
// FAST_QUERY_ROWS query rows and all query heads of its group. Per (key/value head, chunk of rows):
//   pass 1: for each slot p some query of the chunk sees, score every query against k_p (masked: -inf)
//   softmax per query in slot order (exact max first, as the reference), weights kept in the score buffer
//   pass 2: for each slot p, add weight * v_p into every query that sees it; divide by the sum at the end
// Per query the arithmetic is the reference's except for the order of the HS-term dot products (vector
// lanes), so a query's result does not depend on T or on the other queries.

// ----------------------------------------------------------------------------
// matmul backward over fp32 weights (the trainer's draft). Both gradients have one form,
//   out[r][c] += sum over k of a(r, k) * b[k][c],   a(r, k) = a[r * a_row + k * a_k], b: (K, C)
//   dinp:    r = t, k = o: a = dout (a_row OC, a_k 1), b = weight
//   dweight: r = o, k = t: a = dout (a_row 1, a_k OC), b = inp
// computed for a tile of FAST_BACKWARD_ROWS rows by FAST_BACKWARD_COLUMNS columns (16 KB, in L1) with the
// innermost loop along a row of b (vectorised over c). Each element's sum runs over k in order from zero
// and is then added to out: the reference's arithmetic (matmul_backward_cpu), in the same order, so the
// result is the reference's bit for bit (no fp contraction under -std=c11).
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

// ----------------------------------------------------------------------------
// int8 input rows (the AVX-512 VNNI matmul in cpu_fast_kernels.c; its arithmetic is described there)

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

static inline void fast_int8_rows_allocate(FastInt8Rows* x, int T, int C) {
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

// ----------------------------------------------------------------------------
// the x86 kernels (cpu_fast_kernels.c). Each computes out[:, first_row:last_row] of a matmul, or one
// attention work item, exactly as the portable code of cpu_fast.c defines it (see the contract).

#if FAST_X86
void fast_matmul_rows_avx2(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row, int last_row);
void fast_matmul_rows_avx512(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row, int last_row);
// Quantises input row t for weights of `type`; -1 if a value is not finite.
int fast_vnni_quantize_row(FastInt8Rows* x, const float* v, int t, int C, int type);
void fast_matmul_rows_vnni(float* out, const FastInt8Rows* x, Matrix weight, int T, int C, int OC, int first_row,
                           int last_row);
void fast_attention_item_avx2(float* out, const float* q, const float* key_cache, const float* value_cache,
                              const uint8_t* mask, int T, int P, int NH, int NKV, int HS, int kv_head, int t0, float* scores);
void fast_attention_item_avx512(float* out, const float* q, const float* key_cache, const float* value_cache,
                                const uint8_t* mask, int T, int P, int NH, int NKV, int HS, int kv_head, int t0,
                                float* scores);
void fast_matmul_backward_tile_avx2(float* out, const float* a, size_t a_row, size_t a_k, const float* b, int R, int K,
                                    int C, int r0, int c0);
void fast_matmul_backward_tile_avx512(float* out, const float* a, size_t a_row, size_t a_k, const float* b, int R, int K,
                                      int C, int r0, int c0);
// n_blocks blocks of 32 values to Q8_0, exactly as quantize_row.
void fast_quantize_q8_0_avx512(uint8_t* out, const float* x, int64_t n_blocks);
#endif

#endif // CPU_FAST_H
