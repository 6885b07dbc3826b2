/*
backends/cpu_fast.c: the fast CPU ops. Weights stay in their stored GGUF type and are read in place;
each weight row is streamed once for all T input rows of a call; the loops are vectorised without
fast-math. The readable definitions are the ops of the same name root in cpu_ref.c, and
tests/test_fast.c checks every op here against them.

Contract:
  - matmul_forward_fast(out, inp, weight, T, C, OC): out (T, OC) = inp (T, C) @ weight (OC, C)^T for a
    weight of type F32, F16, BF16, Q8_0, Q4_0 or Q4_1, read in place (quantised types need C % 32 == 0),
    or a quantised weight packed by the int8 table (FAST_PACKED, cpu_fast.h). Two arithmetics:
      fp32 activations (every CPU; every weight type): each weight value is dequantised exactly (as
        dequantize_row does) into registers or an L1-sized span and multiplied with every input row before
        the next is read; the products are summed in fp32 in another order than the reference (vector
        lanes), so results differ from matmul_forward_cpu on the dequantised weights by reordering only.
        (A packed weight off the int8 kernel: each row dequantised, its dot products summed in order.)
      int8 activations (packed Q8_0, Q4_0, Q4_1 weights on CPUs with AVX-512 VNNI or AVX2; the default
        table's arithmetic, fast-exact's never): each input row is quantised in blocks of 32 as llama.cpp quantises
        its activations (scale = max|x| / 127, q = x * (1 / scale) rounded to nearest even; a block below
        1e-30 is zeros), integer dot products per block, scales applied in fp32. Results equal the fp32
        arithmetic on those quantised inputs up to reordering; against the original inputs, on the default
        model's weights and real activations, the error is 0.6% to 2% of an output's RMS and the LM head's
        argmax agrees at 86 of 88 positions (flips within 0.02 logits): tests/test_fast.c measures it. A
        row with a non-finite input takes the fp32 arithmetic, so infinities and NaNs land where the
        reference puts them.
    Each row of out depends only on its own input row (not on T, the other rows or the thread count; bit
    for bit), so a verify pass computes what decode computes; on the int8 arithmetic a row with a non-finite
    value takes the fp32 arithmetic alone, the call's other rows keeping their int8 results.
    Parallel over output rows with OpenMP.
  - attention_forward_fast: attention_forward_cpu's contract (grouped-query heads, the (T, P) mask, a
    fully masked row gives zeros, -inf scores handled the same way), but each cached key and value row
    is read once for a chunk of query rows and all query heads of its group (or, for few rows, one query
    head). Per query the same arithmetic as the reference except the order of the q.k dot products'
    terms, and fast_expf for expf; on AVX-512 also fused multiply-adds, and a verify pass's queries
    sixteen to a vector (cpu_fast_kernels.c). A query's result never depends on T or the other queries.
  - swiglu_forward_fast: swiglu_forward_cpu's expression with fast_expf (cpu_fast.h: at most 2 ulp from
    exp) for expf, in parallel over elements; the same bits on every CPU level, N and thread count.
  - rmsnorm_forward_fast: rmsnorm_forward_cpu's results bit for bit, rows in parallel for a prefill's batch.
  - rope_forward_fast: rope_forward_cpu's results bit for bit; the angles of the last positions are kept
    per thread (a forward pass rotates at the same positions 60 times).
  - embedding_forward_fast: embedding_forward_cpu's contract for a table stored in any supported type
    (rows dequantised exactly: the result equals dequantize_row of the row).
  - attention_backward_fast: attention_backward_cpu's results bit for bit (the same sums in the same order,
    grouped into register tiles whose lanes are independent outputs; any thread count).
  - matmul_backward_fast: matmul_backward_cpu's contract, each element's sum over the same terms in the
    same order: on AVX-512 and AVX2 in register tiles with fused multiply-adds (the same bits on both,
    within a few ulp of the reference's, measured in tests/test_fast.c), in portable C in tiles of 16 rows
    by 256 columns with a multiply and an add (the reference's results bit for bit). Any thread count gives the same bits. The
    trainer's gradients: tools/bench_ops.c measures them (the README's speed section).

  - softmax_forward_fast / distribution_loss_fast (the trainer's teacher distribution and loss):
    softmax_forward_cpu's and distribution_loss_cpu's contracts, their expressions in fp32 with fast_expf,
    each row's sums over 16 lanes (cpu_fast.h; one AVX2 twin, which AVX-512 CPUs run too); within "loss_fp32"
    of the reference (tests/test_fast.c); the same bits for any T and thread count. The reverse KL, and every
    kind on the portable level, run the reference's code.

  - matmul_forward_fast_bf16 / matmul_backward_fast_bf16 (backend_cpu_fast_bf16, the trainer's mixed
    precision): the same contracts for fp32 weights with bf16 products: both operands rounded to bf16
    (nearest even), the exact products summed in fp32, each output's terms in order (cpu_fast.h has the
    arithmetic and the one exception between its two tiles, below 2^-126); any thread count, the same bits.
    Any other weight type: matmul_forward_fast's int8 arithmetic, as backend_cpu_fast.

What it refuses to do: fast-math, an exp without a measured bound (fast_expf has one), dequantising a
whole matrix into an fp32 copy, and orchestration (which ops run in which order belongs to the backend
table).

Instruction sets. The checking build is plain -O2 for any x86-64 (no -march), so the fast path gets its
ISA at run time, four levels chosen by __builtin_cpu_supports on the first call (fast_isa; tests set it to
check every level the machine has):
  portable C         any CPU (ARM included): spans, `restrict`, `omp simd`; the compiler vectorises it
  AVX2               intrinsics at 8 lanes: the int8 kernel for the packed quantised types (vpmaddubsw,
                     vpmaddwd: the VNNI kernel's bits), fp32 weights in register tiles, attention, SwiGLU,
                     RoPE, the trainer's backward; other weight types take the portable C compiled for AVX2
  AVX-512            intrinsics, fp32 activations (matmul), attention (head sizes 16 to 128 in steps of 16)
  AVX-512 VNNI       as AVX-512, plus the int8 kernel for the packed quantised types; where the CPU has
                     AMX's int8 tiles, that kernel's calls of fast_amx_int8_min_rows rows or more make
                     their integer sums on the tiles (the same bits; a CPUID bit, not a level)
Why not -march=native: the binary must run on any x86-64, and one dispatch point keeps the portable path
compiled and tested on every machine. Why intrinsics: one core of this project's Xeon (Sapphire Rapids),
a Q4_1 576 -> 1536 matrix in L2, one input row, per block of 32 weights: portable C 10.4 ns, portable C
for AVX2 9.7 ns, AVX-512 2.0 ns, AVX-512 VNNI 1.3 ns (the nibble unpacking and the int8 dot products are
not what a compiler finds on its own). On an AVX2-only CPU (AMD EPYC, Zen 3) the default model decoded at
15 tok/s on fp32 activations, about a tenth of llama.cpp: hence the AVX2 int8 kernel (README, Speed).
*/
#include "cpu_fast.h"
#include <pthread.h>
#ifndef FAST_KERNELS_SEPARATE
#include "cpu_fast_kernels.c"   // else linked: the Makefile's build/cpu_fast_kernels.o
#endif

// ----------------------------------------------------------------------------
// which path runs: chosen once from the CPU, overridable (tests check every path the CPU has)

enum { FAST_ISA_UNSET = -1, FAST_ISA_PORTABLE = 0, FAST_ISA_AVX2 = 1, FAST_ISA_AVX512 = 2, FAST_ISA_AVX512_VNNI = 3 };
static int fast_isa = FAST_ISA_UNSET;

#if FAST_X86
#include <cpuid.h>
// F16C (the fp16 conversions the kernels use): CPUID leaf 1, ECX bit 29. (Clang 14's __builtin_cpu_supports
// does not know "f16c": asked there, the program did not compile.)
static int fast_cpu_has_f16c(void) {
    unsigned int eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
}
#endif

// The best path this CPU supports.
static int fast_isa_best(void) {
#if FAST_X86
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && fast_cpu_has_f16c();
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
        return __builtin_cpu_supports("avx512vnni") ? FAST_ISA_AVX512_VNNI : FAST_ISA_AVX512;
    }
    if (avx2) { return FAST_ISA_AVX2; }
#endif
    return FAST_ISA_PORTABLE;
}

static const char* fast_isa_name(int isa) {
    static const char* names[] = {"portable C", "AVX2", "AVX-512", "AVX-512 VNNI"};
    return isa >= 0 && isa <= FAST_ISA_AVX512_VNNI ? names[isa] : "unset";
}

// The int8 path (activations quantised, see matmul_forward_fast) where the CPU has it; 0 keeps the public
// matmul_forward_fast on fp32 activations (results within fp32 reordering of the reference, slower). The
// tables' own matmuls choose their arithmetic themselves (below: the int8, fast-exact and bf16 tables).
static int fast_int8_activations = 1;

// The levels with an int8 kernel for packed weights: AVX-512 VNNI (vpdpbusd) and AVX2 (vpmaddubsw and
// vpmaddwd), the same results bit for bit. (AVX-512 without VNNI keeps fp32 activations: no such CPU
// was at hand to measure whether the AVX2 kernel beats its fp32 kernel there.)
static int fast_isa_has_int8(int isa) { return isa == FAST_ISA_AVX512_VNNI || isa == FAST_ISA_AVX2; }

// Chosen on the first call; atomic because serving and training threads may make that call together.
static int fast_isa_current(void) {
    int isa = __atomic_load_n(&fast_isa, __ATOMIC_RELAXED);
    if (isa == FAST_ISA_UNSET) {
        isa = fast_isa_best();
        __atomic_store_n(&fast_isa, isa, __ATOMIC_RELAXED);
    }
    return isa;
}

// Misuse by the program, not bad input (the loader validates types and shapes): print and exit.
static void fast_check_matrix(int type, int cols, const char* function) {
    int64_t block = tensor_type_block_size(type);
    int weight_type = type == TYPE_F32 || type == TYPE_F16 || type == TYPE_BF16 || type == TYPE_Q8_0 || type == TYPE_Q4_0 ||
                      type == TYPE_Q4_1;   // (an integer tensor has blocks of 1, and would be read as Q4_1)
    if (!weight_type || block == 0 || cols <= 0 || cols % block != 0) {
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
    if (fast_is_packed(table.type)) {
        for (int t = 0; t < T; t++) { fast_packed_dequantize_row(out + (size_t)t * C, (const uint8_t*)table.data, table.type, C, tokens[t]); }
        return;
    }
    fast_check_matrix(table.type, C, "embedding_forward_fast");
    size_t row_bytes = fast_row_bytes(table.type, C);
    for (int t = 0; t < T; t++) {
        const uint8_t* row = (const uint8_t*)table.data + (size_t)tokens[t] * row_bytes;
        fast_dequantize_span(out + (size_t)t * C, row, table.type, 0, C);
    }
}

// ----------------------------------------------------------------------------
// matmul, portable C: dequantise FAST_SPAN columns of one weight row into an L1 buffer, then take its dot
// product with up to FAST_ROWS input rows; next span. Each weight byte is read once per FAST_ROWS rows
// (the body is matmul_rows_portable_body in cpu_fast.h).

// The portable body (cpu_fast.h), compiled for the baseline ISA (cpu_fast_kernels.c compiles it for AVX2).
static void matmul_rows_portable(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row,
                                 int last_row) {
    matmul_rows_portable_body(out, inp, weight, T, C, OC, first_row, last_row);
}

// ----------------------------------------------------------------------------
// matmul: out[t][o] = sum_c inp[t][c] * weight[o][c], weight in its stored type

// The one matmul. A weight in its stored type: fp32 activations, the widest path the CPU has. A packed
// weight (the int8 table's form of the quantised types, cpu_fast.h): int8_activations 1 takes the int8
// kernel where it runs, 0 the exact path. The tables pass their arithmetic (backend_cpu_fast: 1,
// backend_cpu_fast_exact: 0, whose matrices are never packed); matmul_forward_fast passes
// fast_int8_activations.
static void matmul_packed(float* const* outs, const float* inp, const Matrix* weights, const int* OCs, int n, int T,
                          int C, int int8_activations);

static void matmul_forward_fast_arithmetic(float* out, const float* inp, Matrix weight, int T, int C, int OC,
                                           int int8_activations) {
    // out: (T, OC); inp: (T, C); weight: (OC, C)
    if (fast_is_packed(weight.type)) { matmul_packed(&out, inp, &weight, &OC, 1, T, C, int8_activations); return; }
    fast_check_matrix(weight.type, C, "matmul_forward_fast");
    int isa = fast_isa_current();
    #pragma omp parallel if ((long)T * OC * C >= PARALLEL_MIN_WORK)
    {
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
            if (isa >= FAST_ISA_AVX512) { fast_matmul_rows_avx512(out, inp, weight, T, C, OC, first_row, last_row); }
            else if (isa == FAST_ISA_AVX2) { fast_matmul_rows_avx2(out, inp, weight, T, C, OC, first_row, last_row); }
            else
#endif
            { (void)isa; matmul_rows_portable(out, inp, weight, T, C, OC, first_row, last_row); }
        }
    }
}

// A packed matrix (cpu_fast.h): the packed int8 kernel (VNNI or AVX2); where it cannot run (fp32 activations asked for, an
// input row with a non-finite value, a CPU level set lower by a test) each row is dequantised exactly and its dot products
// summed in order: the reference's arithmetic on the same values.
// The input rows are quantised once per call. A small input (FAST_PRIVATE_QUANTISE values or fewer: a decode
// step, a verify pass) is quantised by every thread for itself, which costs less than the barrier that
// sharing the rows needs before any thread may read them (a parallel region with a barrier inside 0.9-2
// us on the 2-core Zen 5, without 0.6 us; a decode step of the default model runs 121 matmul regions, 211
// before q, k, v and gate, up shared one); a prefill's rows are shared.
enum { FAST_PRIVATE_QUANTISE = 8192 };
// From how many input rows AMX's int8 tiles run the packed matmul (where the CPU has them): a tile multiply
// takes its time for 16 rows whatever the rows it has, and a Q4 block's nibbles must be stored unpacked for
// it, so it pays only over many rows. Measured on a 2-core Xeon (KVM), the default model's verify pass after
// 300 cached positions, two threads, VNNI against AMX (the same bits): 8 nodes 7.1 -> 7.4 ms, 9 nodes 8.1 ->
// 7.7, 12 nodes 9.5 -> 9.1, 16 nodes 11.2 -> 9.9; a 256-token prefill 1.13x; one thread, 30 up-projections
// of 6 rows, 1.07 -> 1.24 ms.
int fast_amx_int8_min_rows = 9;

// Rows t0..t1-1 quantised, each row's finiteness in x->finite; returns whether all of them are finite.
static int quantise_rows(FastInt8Blocks* x, const float* inp, int t0, int t1, int C, int isa, int stored) {
    int finite = 1;
#if FAST_X86
    for (int t = t0; t < t1; t++) {
        const float* row = inp + (size_t)t * C;
        x->finite[t] = (isa == FAST_ISA_AVX2 ? fast_avx2_quantize_blocks(x, row, t, stored) : fast_vnni_quantize_blocks(x, row, t, stored)) == 0;
        finite &= x->finite[t];
    }
#else
    (void)x; (void)inp; (void)t0; (void)t1; (void)C; (void)isa; (void)stored;
#endif
    return finite;
}

// Output rows [first_row, last_row) of a packed weight in the reference's arithmetic: each row dequantised
// exactly, its dot products summed in order; only the input rows not marked in skip (NULL: all of them).
static void matmul_packed_exact(float* out, const float* inp, Matrix weight, int T, int C, int OC, int first_row,
                                int last_row, const uint8_t* skip) {
    float* row = mallocCheck((size_t)C * sizeof(float));
    for (int o = first_row; o < last_row; o++) {
        fast_packed_dequantize_row(row, (const uint8_t*)weight.data, weight.type, C, o);
        for (int t = 0; t < T; t++) {
            if (skip != NULL && skip[t]) { continue; }
            const float* x = inp + (size_t)t * C;
            float sum = 0.0f;
            for (int c = 0; c < C; c++) { sum += x[c] * row[c]; }
            out[(size_t)t * OC + o] = sum;
        }
    }
    free(row);
}

// n packed weights of one stored type, one input: each thread takes one contiguous range of the weights'
// rows counted end to end (in groups of FAST_GROUP), so one region serves a layer's q, k and v.
static void matmul_packed(float* const* outs, const float* inp, const Matrix* weights, const int* OCs, int n, int T,
                          int C, int int8_activations) {
    int isa = fast_isa_current(), stored = fast_stored_type(weights[0].type);
    fast_check_matrix(stored, C, "matmul_forward_fast");
    int shared_finite = 1, int8_path = 0, units = 0;
    long work = 0;
    for (int i = 0; i < n; i++) { units += (OCs[i] + FAST_GROUP - 1) / FAST_GROUP; work += (long)T * OCs[i] * C; }
    (void)work;   // (read only by the parallel region's `if`: a build without OpenMP has none)
    FastInt8Blocks shared;
#if FAST_X86
    int8_path = int8_activations && fast_isa_has_int8(isa);
#else
    (void)int8_activations;
#endif
    int private_rows = (long)T * C <= FAST_PRIVATE_QUANTISE;
#if FAST_AMX_KERNEL
    int amx = int8_path && T >= fast_amx_int8_min_rows && fast_int8_amx();
#endif
    if (int8_path && !private_rows) { fast_int8_blocks_allocate(&shared, T, C); }
    #pragma omp parallel if (work >= PARALLEL_MIN_WORK)
    {
        FastInt8Blocks own, *quantised = &shared;
        int finite = 1;
        if (int8_path && private_rows) {
            fast_int8_blocks_allocate(&own, T, C);
            quantised = &own;
            finite = quantise_rows(&own, inp, 0, T, C, isa, stored);
        } else if (int8_path) {
            #pragma omp for schedule(static) reduction(&:shared_finite)
            for (int t = 0; t < T; t++) { shared_finite &= quantise_rows(&shared, inp, t, t + 1, C, isa, stored); }
            // (the loop's barrier: every thread sees every row quantised and the reduced `shared_finite`)
            finite = shared_finite;
        }
        int n_threads = 1, thread = 0;
#ifdef _OPENMP
        n_threads = omp_get_num_threads();
        thread = omp_get_thread_num();
#endif
        int first_unit = (int)((long)units * thread / n_threads), end_unit = (int)((long)units * (thread + 1) / n_threads);
        for (int i = 0, base = 0; i < n; i++) {   // weight i: units [base, base + its units) of the count
            int OC = OCs[i], own_units = (OC + FAST_GROUP - 1) / FAST_GROUP;
            int first = first_unit - base > 0 ? first_unit - base : 0;
            int end = end_unit - base < own_units ? end_unit - base : own_units;
            base += own_units;
            if (first >= end) { continue; }
            int first_row = first * FAST_GROUP, last_row = end * FAST_GROUP < OC ? end * FAST_GROUP : OC;
            float* out = outs[i];
#if FAST_X86
            if (int8_path && isa == FAST_ISA_AVX2) { fast_matmul_packed_avx2(out, quantised, weights[i], T, C, OC, first_row, last_row); }
#if FAST_AMX_KERNEL
            else if (int8_path && amx) { fast_matmul_packed_amx(out, quantised, weights[i], T, C, OC, first_row, last_row); }
#endif
            else if (int8_path) { fast_matmul_packed_vnni(out, quantised, weights[i], T, C, OC, first_row, last_row); }
#endif
            // the exact arithmetic: every row off the int8 path, and on it the rows with an infinity or a NaN
            // (their blocks were zeros; each row's outputs depend on that row alone, so the others keep theirs)
            if (!int8_path || !finite) {
                matmul_packed_exact(out, inp, weights[i], T, C, OC, first_row, last_row, int8_path ? quantised->finite : NULL);
            }
        }
        if (quantised == &own) { free(own.memory); }
    }
    if (int8_path && !private_rows) { free(shared.memory); }
}

void matmul_forward_fast(float* out, const float* inp, Matrix weight, int T, int C, int OC) {
    matmul_forward_fast_arithmetic(out, inp, weight, T, C, OC, fast_int8_activations);
}

// ----------------------------------------------------------------------------
// attention (the algorithm and its portable passes: cpu_fast.h)

// The portable passes (cpu_fast.h), compiled for the baseline ISA (cpu_fast_kernels.c: AVX2, and AVX-512).
static void attention_item_portable(const AttentionItem* item) {
    attention_scores_body(item);
    attention_softmax(item);
    attention_values_body(item);
}

enum { FAST_ATTENTION_MIN_ITEMS = 8 };

enum { FAST_FEW_SPANS = 16 };

// The AVX-512 kernel does a group of up to 16 queries per pass over the key rows in about the time of a few
// queries one by one (cpu_fast_kernels.c), so its chunks are as many rows as fill 16 lanes (5 rows of 3 heads);
// the other paths' work is per query, and their chunks are FAST_QUERY_ROWS rows.
static int attention_chunk_rows(int lane_groups, int group) {
    return lane_groups ? (group < 16 ? 16 / group : 1) : FAST_QUERY_ROWS;
}

// The query heads a key/value head serves, checked (the per-thread arrays hold FAST_MAX_GROUP of a row's)
static int attention_group(int NH, int NKV, const char* function) {
    int group = NH / NKV;
    if (group > FAST_MAX_GROUP) {   // never for the models we run; refuse rather than overflow
        fprintf(stderr, "error: %s: %d query heads per key/value head (at most %d)\n", function, group, FAST_MAX_GROUP);
        exit(EXIT_FAILURE);
    }
    return group;
}

// Runs the items of several spans' attention in one parallel region (when their work is worth sharing): span
// s's rows [row, row + n) see its cache slots from base, its mask after the spans' before it; each key/value
// head's queries of a span in chunks of chunk_rows rows, each chunk cut into `splits` items by query head. Each
// query's arithmetic is the same whichever items, spans and calls it is in.
static void attention_run_spans(float* out, const float* q, const float* key_cache, const float* value_cache,
                                const uint8_t* mask, const SequenceSpan* spans, int n_spans, int NH, int NKV, int HS,
                                CacheLayout layout, int chunk_rows, int splits, int lane_groups, int isa) {
    int heads = NH / NKV / splits, QD = NH * HS, max_P = 1;
    // (n_spans + 1) span s's items are [first_item[s], first_item[s + 1]), and (n_spans) its mask starts at
    // mask_offsets[s] (on the stack for a few spans)
    int few_items[FAST_FEW_SPANS + 1];
    size_t few_offsets[FAST_FEW_SPANS];
    int few = n_spans <= FAST_FEW_SPANS;
    int* first_item = few ? few_items : mallocCheck((size_t)(n_spans + 1) * sizeof(int));
    size_t* mask_offsets = few ? few_offsets : mallocCheck((size_t)n_spans * sizeof(size_t));
    first_item[0] = 0;
    size_t mask_bytes = 0;
    for (int s = 0; s < n_spans; s++) {
        int n_chunks = (spans[s].n + chunk_rows - 1) / chunk_rows, P = spans[s].n_past + spans[s].n;
        first_item[s + 1] = first_item[s] + NKV * n_chunks * splits;
        mask_offsets[s] = mask_bytes;
        mask_bytes += span_mask_bytes(&spans[s]);
        if (P > max_P) { max_P = P; }
    }
    int n_items = first_item[n_spans];
    int parallel = (long)mask_bytes * NH * HS >= PARALLEL_MIN_WORK;   // every query's work over its slots
    (void)parallel;   // (without OpenMP)
    #pragma omp parallel if (parallel)
    {
        // per thread: scores, then weights, of one item's queries (chunk_rows * heads, P; AVX-512: at least 16),
        // and each query's maximum and sum (sized so too: a pass cut into few chunks has items of more than
        // FAST_QUERY_ROWS rows, and arrays of FAST_QUERY_ROWS * FAST_MAX_GROUP on the stack overflowed for a
        // group of 32 query heads at 100 rows on two threads)
        int item_queries = chunk_rows * heads > 16 ? chunk_rows * heads : 16;
        float* scores = mallocCheck((size_t)item_queries * max_P * sizeof(float));
        uint16_t* lanes = lane_groups ? mallocCheck((size_t)max_P * sizeof(uint16_t)) : NULL;
        float* max_scores = mallocCheck((size_t)item_queries * sizeof(float));
        float* sums = mallocCheck((size_t)item_queries * sizeof(float));
        int s = 0;   // the span of this thread's last item (a thread's items mostly increase: a dynamic schedule
                     // may hand out an earlier one, so the search goes both ways)
        #pragma omp for schedule(dynamic, 1)
        for (int index = 0; index < n_items; index++) {
            while (index >= first_item[s + 1]) { s++; }
            while (index < first_item[s]) { s--; }
            const SequenceSpan* span = &spans[s];
            size_t base = (size_t)span->base * layout.slot_stride;
            // chunk-major within a span: every key/value head's first (whole) chunks before the last (partial)
            // ones, so the dynamic schedule hands out the larger items first
            int local = index - first_item[s];
            int t0 = local / (NKV * splits) * chunk_rows, kv_head = local / splits % NKV;
            int h0 = local % splits * heads;
            AttentionItem item = attention_item(out + (size_t)span->row * QD, q + (size_t)span->row * QD, key_cache + base,
                                                value_cache + base, layout, mask + mask_offsets[s], span->n,
                                                span->n_past + span->n, NH, NKV, HS, kv_head, t0, chunk_rows, h0, heads,
                                                scores, max_scores, sums, lanes);
#if FAST_X86
            if (isa >= FAST_ISA_AVX512) { fast_attention_item_avx512(&item); }
            else if (isa == FAST_ISA_AVX2) { fast_attention_item_avx2(&item); }
            else
#endif
            { (void)isa; attention_item_portable(&item); }
        }
        free(lanes);
        free(scores);
        free(max_scores);
        free(sums);
    }
    if (!few) { free(first_item); free(mask_offsets); }
}

void attention_forward_fast(float* out, const float* q, const float* key_cache, const float* value_cache,
                            const uint8_t* mask, int T, int P, int NH, int NKV, int HS, CacheLayout layout) {
    // out, q: (T, NH*HS); key_cache, value_cache: P slots laid out as `layout`; mask: (T, P)
    int group = attention_group(NH, NKV, "attention_forward_fast");
    int isa = fast_isa_current();
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    // Items: a key/value head's queries in chunks of query rows (all heads of its group; attention_chunk_rows).
    // A verify pass makes few items for the threads to share. The AVX2 and portable paths then cut its rows
    // into the fewest chunks whose items divide evenly among the threads (6 items of 3 rows for 6 rows, 3
    // key/value heads and two threads). Measured, 2-core Zen 3, AVX2, attention alone, 30 layers, median of
    // alternated runs, rather than 9 items of one query head each (each reading the key and value rows
    // again): P = 300, T = 2 / 3 / 6 / 12: 2.39 -> 1.95, 4.09 -> 3.44, 3.99 -> 3.65, 6.84 -> 6.40 ms; P = 1000,
    // T = 6 / 12: 16.4 -> 14.9, 25.8 -> 24.8 ms. AVX-512 groups of a few queries (FAST_FEW_QUERIES) are split
    // by query head instead (9 items rather than 3); larger ones stay whole (their work would triple). A
    // decode step (one row: little work per key row read) and one thread keep whole groups (measured, 2-core
    // Xeon, P = 134, the portable path: T = 1 on two threads 7.4 -> 8.3 us split, on one 8.7 -> 12.4 us).
    // Each query's arithmetic is the same whichever items it is in.
    int lane_groups = isa >= FAST_ISA_AVX512 && fast_attention_lanes_fit(HS);
    int chunk_rows = attention_chunk_rows(lane_groups, group);
    int n_chunks = (T + chunk_rows - 1) / chunk_rows;
    int few_items = T > 1 && threads > 1 && NKV * n_chunks < FAST_ATTENTION_MIN_ITEMS;
    int splits = 1;
    if (few_items && !lane_groups) {
        int chunks = 2;
        while (chunks < T && NKV * chunks % threads != 0) { chunks++; }
        chunk_rows = (T + chunks - 1) / chunks;
        n_chunks = (T + chunk_rows - 1) / chunk_rows;
    } else if (few_items && (T < chunk_rows ? T : chunk_rows) * group <= FAST_FEW_QUERIES) {
        splits = group;
    }
    SequenceSpan span = {0, T, 0, P - T};
    attention_run_spans(out, q, key_cache, value_cache, mask, &span, 1, NH, NKV, HS, layout, chunk_rows, splits, lane_groups,
                        isa);
}

// Several sequences' rows at once (Backend.attention_forward_spans): a decode step of many sequences is
// many one-row spans, each too little work to share among the threads alone, so all their items are shared in
// one region. Chunks as attention_forward_fast's when the items are many (no span is cut by query head).
void attention_forward_spans_fast(float* out, const float* q, const float* key_cache, const float* value_cache,
                                  const uint8_t* mask, const SequenceSpan* spans, int n_spans, int NH, int NKV, int HS,
                                  CacheLayout layout) {
    int group = attention_group(NH, NKV, "attention_forward_spans_fast");
    int isa = fast_isa_current();
    int lane_groups = isa >= FAST_ISA_AVX512 && fast_attention_lanes_fit(HS);
    attention_run_spans(out, q, key_cache, value_cache, mask, spans, n_spans, NH, NKV, HS, layout,
                        attention_chunk_rows(lane_groups, group), 1, lane_groups, isa);
}

// ----------------------------------------------------------------------------
// matmul backward (fp32 weights: the trainer's draft): matmul_backward_cpu's sums in its order, in blocks
// (AVX-512 and AVX2, cpu_fast_kernels.c: fused multiply-adds, the same bits on both) or tiles
// (matmul_backward_tile_body in cpu_fast.h: the reference's bits), each owned by one thread

#if FAST_X86   // (the AVX2 backward's)
// a (R, K) with a_row = K, a_k = 1 from one with any strides (the weight gradient's dout^T), 32 x 32 at a time
static float* transpose_copy(const float* a, size_t a_row, size_t a_k, int R, int K) {
    float* copy = mallocCheck((size_t)R * K * sizeof(float) + 1);
    int n_row_blocks = (R + 31) / 32;
    #pragma omp parallel for schedule(static) if ((long)R * K >= PARALLEL_MIN_WORK)
    for (int block = 0; block < n_row_blocks; block++) {
        int i0 = block * 32, i1 = i0 + 32 < R ? i0 + 32 : R;
        for (int k0 = 0; k0 < K; k0 += 32) {
            int k1 = k0 + 32 < K ? k0 + 32 : K;
            for (int k = k0; k < k1; k++) {
                for (int i = i0; i < i1; i++) { copy[(size_t)i * K + k] = a[(size_t)i * a_row + (size_t)k * a_k]; }
            }
        }
    }
    return copy;
}
#endif

static void matmul_backward_tiles(float* out, const float* a, size_t a_row, size_t a_k, const float* b, int R, int K,
                                  int C, int isa) {
#if FAST_X86
    if (isa >= FAST_ISA_AVX2) {   // blocks of 128 rows by 64 columns (AVX-512) or 120 by 16 (AVX2)
        int width = isa >= FAST_ISA_AVX512 ? 64 : 16, n_columns = (C + width - 1) / width;
        int height = isa >= FAST_ISA_AVX512 ? FAST_BACKWARD_BLOCK_ROWS : FAST_BACKWARD_BLOCK_ROWS_AVX2;
        int n_blocks = (R + height - 1) / height * n_columns;
        float* a_copy = NULL;   // AVX2 reads a's rows contiguous in k (a strided read crossed a page per k)
        if (isa < FAST_ISA_AVX512 && a_k != 1) { a_copy = transpose_copy(a, a_row, a_k, R, K); a = a_copy; a_row = (size_t)K; a_k = 1; }
        #pragma omp parallel for schedule(static) if ((long)R * K * C >= PARALLEL_MIN_WORK)
        for (int block = 0; block < n_blocks; block++) {
            int r0 = block / n_columns * height, c0 = block % n_columns * width;
            if (isa >= FAST_ISA_AVX512) { fast_matmul_backward_block_avx512(out, a, a_row, a_k, b, R, K, C, r0, c0); }
            else { fast_matmul_backward_block_avx2(out, a, a_row, b, R, K, C, r0, c0); }
        }
        free(a_copy);
        return;
    }
#endif
    int n_columns = (C + FAST_BACKWARD_COLUMNS - 1) / FAST_BACKWARD_COLUMNS;
    int n_tiles = (R + FAST_BACKWARD_ROWS - 1) / FAST_BACKWARD_ROWS * n_columns;
    #pragma omp parallel for schedule(static) if ((long)R * K * C >= PARALLEL_MIN_WORK)
    for (int tile = 0; tile < n_tiles; tile++) {
        int r0 = tile / n_columns * FAST_BACKWARD_ROWS, c0 = tile % n_columns * FAST_BACKWARD_COLUMNS;
        { (void)isa; matmul_backward_tile_body(out, a, a_row, a_k, b, R, K, C, r0, c0); }
    }
}

void matmul_backward_fast(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          int T, int C, int OC) {
    // dinp, inp: (T, C); dweight, weight: (OC, C); dout: (T, OC)
    int isa = fast_isa_current();
    if (dinp != NULL) { matmul_backward_tiles(dinp, dout, (size_t)OC, 1, weight, T, OC, C, isa); }
    if (dweight != NULL) { matmul_backward_tiles(dweight, dout, 1, (size_t)OC, inp, OC, T, C, isa); }
}

// ----------------------------------------------------------------------------
// bf16 products (backend_cpu_fast_bf16, the trainer's mixed precision; the arithmetic and the packing are in
// cpu_fast.h): out (M, N) [+]= A (M, K) @ B (K, N), each operand read from fp32 with its own strides
// (element (m, k) of A at a[m * a_m + k * a_k], (k, n) of B at b[k * b_k + n * b_n]), so the forward and both
// backward products are one routine: packing rounds and transposes, the tiles only multiply. Each output is
// its own sum over k in order (the same bits for any tiling, thread count and kernel), except on AMX, whose
// tile sums its own way (cpu_fast.h; the same bits for any thread count). Measured on a 2-core Xeon with
// AMX, `make bench-ops`' LM head (190 x 576 by 8192): forward 11.2 -> 4.0 ms, dinp 10.3 -> 4.1, dweight 11.1
// -> 3.8 against the AVX-512 BF16 tile, which there ran at the speed of the fp32 kernels; a bf16 `train`
// of 100 steps over 10 requests, one thread, 38.4 -> 22.4 s whole (about 4.5 s of it the target generating).

// Where the AVX-512 BF16 tile runs (and tests may turn it off, to check the portable tile on the same CPU).
int fast_bf16_kernel = 1;
static int fast_cpu_has_bf16(void) {
    static int has = -1;   // asked once (CPUID is slow under a hypervisor); racing first calls store the same answer
    int known = __atomic_load_n(&has, __ATOMIC_RELAXED);
    if (known >= 0) { return known; }
    known = 0;
#if FAST_X86 && FAST_BF16_KERNEL
    unsigned int eax, ebx, ecx, edx;   // CPUID leaf 7, subleaf 1: EAX bit 5 is AVX512_BF16
    known = fast_isa_best() >= FAST_ISA_AVX512 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5));
#endif
    __atomic_store_n(&has, known, __ATOMIC_RELAXED);
    return known;
}
int fast_bf16_native(void) { return fast_bf16_kernel && fast_isa_current() >= FAST_ISA_AVX512 && fast_cpu_has_bf16(); }

// Where AMX's tiles run (tests may turn them off): AMX-TILE with AMX-BF16 (the bf16 products) or AMX-INT8
// (the packed int8 matmul), CPUID leaf 7, EDX bits 24, 22 and 25, and Linux's leave to use the tiles: their
// 8 KB of state is saved only for a process that asked (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA,
// feature 18; Linux 5.16 on), granted once for every thread.
int fast_amx_kernel = 1;
#if FAST_X86 && FAST_AMX_KERNEL && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
// CPUID leaf 7's EDX where the tiles are usable, else 0 (its bit 31 dropped: the cache's "not asked" is negative)
static unsigned int fast_cpu_amx_bits(void) {
    static int has = -1;   // asked once, as fast_cpu_has_bf16
    int known = __atomic_load_n(&has, __ATOMIC_RELAXED);
    if (known >= 0) { return (unsigned int)known; }
    unsigned int eax, ebx, ecx, edx;
    enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };
    known = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx & (1u << 24)) &&
            syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? (int)(edx & 0x7fffffffu) : 0;
    __atomic_store_n(&has, known, __ATOMIC_RELAXED);
    return (unsigned int)known;
}
#else
static unsigned int fast_cpu_amx_bits(void) { return 0; }
#endif
int fast_bf16_amx(void) { return fast_amx_kernel && fast_bf16_native() && (fast_cpu_amx_bits() & (1u << 22)); }
int fast_int8_amx(void) {
    return fast_amx_kernel && fast_isa_current() == FAST_ISA_AVX512_VNNI && (fast_cpu_amx_bits() & (1u << 25));
}

// Packs rows [0, n) of an operand, element (i, k) at src[i * s_i + k * s_k], into blocks of `width` rows
// (cpu_fast.h's layout), in parallel over blocks; the loops run along whichever stride is 1, so the reads
// are contiguous for every operand the matmuls pass.
static void fast_bf16_pack(uint32_t* out, const float* src, size_t s_i, size_t s_k, int n, int K, int width, int K2p,
                           int native) {
    // (K2p >= K2: the pairs a block holds, those past K2 zero)
    int K2 = (K + 1) / 2, n_blocks = (n + width - 1) / width;
    #pragma omp for schedule(static)
    for (int blk = 0; blk < n_blocks; blk++) {
        uint32_t* block = out + (size_t)blk * width * K2p;
        int rows = n - blk * width < width ? n - blk * width : width;
        if (rows < width) { memset(block, 0, (size_t)width * K2p * sizeof(uint32_t)); }
        else if (K2p > K2) { memset(block + (size_t)K2 * width, 0, (size_t)(K2p - K2) * width * sizeof(uint32_t)); }
        const float* first = src + (size_t)blk * width * s_i;
#if FAST_X86 && FAST_BF16_KERNEL
        if (native && (s_k == 1 || s_i == 1)) { fast_bf16_pack_block_avx512(block, first, s_i, s_k, rows, K, width); continue; }
#endif
        (void)native;
        if (s_k == 1) {   // each row's k contiguous
            for (int i = 0; i < rows; i++) {
                const float* row = first + (size_t)i * s_i;
                for (int k2 = 0; k2 < K / 2; k2++) {
                    block[(size_t)k2 * width + i] = fast_bf16_round(row[2 * k2]) | fast_bf16_round(row[2 * k2 + 1]) << 16;
                }
                if (K % 2) { block[(size_t)(K2 - 1) * width + i] = fast_bf16_round(row[K - 1]); }
            }
        } else {          // each k's rows contiguous (s_i == 1) or not: rows inner
            for (int k2 = 0; k2 < K2; k2++) {
                const float* lo = first + (size_t)(2 * k2) * s_k;
                uint32_t* words = block + (size_t)k2 * width;
                if (2 * k2 + 1 < K) {
                    const float* hi = lo + s_k;
                    for (int i = 0; i < rows; i++) { words[i] = fast_bf16_round(lo[(size_t)i * s_i]) | fast_bf16_round(hi[(size_t)i * s_i]) << 16; }
                } else {
                    for (int i = 0; i < rows; i++) { words[i] = fast_bf16_round(lo[(size_t)i * s_i]); }
                }
            }
        }
    }
}

// A's blocks for the AMX tile: each block of 16 rows from pairs first (as packed) to rows first (row r's K2p
// words contiguous, what a tile load reads), 16 pairs at a time (their cache lines stay in L1 across the rows)
static void fast_bf16_rows_first(uint32_t* dst, const uint32_t* src, int n_blocks, int K2p) {
    enum { B = FAST_BF16_AMX_ROWS };
    #pragma omp for schedule(static)
    for (int blk = 0; blk < n_blocks; blk++) {
        const uint32_t* in = src + (size_t)blk * B * K2p;
        uint32_t* o = dst + (size_t)blk * B * K2p;
        for (int k0 = 0; k0 < K2p; k0 += FAST_BF16_AMX_PAIRS) {
            for (int r = 0; r < B; r++) {
                for (int k2 = k0; k2 < k0 + FAST_BF16_AMX_PAIRS; k2++) { o[(size_t)r * K2p + k2] = in[(size_t)k2 * B + r]; }
            }
        }
    }
}

static void fast_gemm_bf16(float* out, int accumulate, int M, int N, int K, const float* a, size_t a_m, size_t a_k,
                           const float* b, size_t b_k, size_t b_n) {
    if (M <= 0 || N <= 0) { return; }
    // AMX: tiles of 16 rows, and the pairs padded to whole tile rows (zeros add nothing)
    int amx = fast_bf16_amx(), native = fast_bf16_native();
    int K2 = (K + 1) / 2, R = amx ? FAST_BF16_AMX_ROWS : FAST_BF16_TILE_ROWS, W = FAST_BF16_PANEL;
    int K2p = amx ? (K2 + FAST_BF16_AMX_PAIRS - 1) / FAST_BF16_AMX_PAIRS * FAST_BF16_AMX_PAIRS : K2;
    int n_tiles = (M + R - 1) / R, n_panels = (N + W - 1) / W;
    // an item: a panel's columns by item_rows of A (AMX: two blocks, four tiles of sums, so that each tile
    // loaded feeds two multiplies)
    int item_rows = amx ? 2 * R : R, n_items = (M + item_rows - 1) / item_rows;
    uint32_t* pa = mallocCheck((size_t)n_tiles * R * K2p * sizeof(uint32_t) + 1);
    uint32_t* pb = mallocCheck((size_t)n_panels * W * K2p * sizeof(uint32_t) + 1);
    // A for the AMX tile goes rows first: packed so directly where its k or its rows are contiguous (the
    // weight gradient's A, the output gradient transposed), else packed pairs first as for the other tiles,
    // then transposed into a second buffer
    int amx_direct = amx && (a_k == 1 || a_m == 1), amx_transposed = amx && !amx_direct;
    uint32_t* pa_rows = amx_transposed ? mallocCheck((size_t)n_tiles * R * K2p * sizeof(uint32_t) + 1) : NULL;
    const uint32_t* tiles_a = amx_transposed ? pa_rows : pa;
    #pragma omp parallel if ((long)M * N * K >= PARALLEL_MIN_WORK)
    {
#if FAST_X86 && FAST_AMX_KERNEL
        if (amx_direct) {
            #pragma omp for schedule(static)
            for (int t = 0; t < n_tiles; t++) {
                int rows = M - t * R < R ? M - t * R : R;
                if (a_k == 1) { fast_bf16_pack_rows_amx(pa + (size_t)t * R * K2p, a + (size_t)t * R * a_m, a_m, rows, K, K2p); }
                else { fast_bf16_pack_columns_amx(pa + (size_t)t * R * K2p, a + (size_t)t * R, a_k, rows, K, K2p); }
            }
        }
#endif
        if (!amx_direct) { fast_bf16_pack(pa, a, a_m, a_k, M, K, R, K2p, native); }
        if (amx_transposed) { fast_bf16_rows_first(pa_rows, pa, n_tiles, K2p); }
        fast_bf16_pack(pb, b, b_n, b_k, N, K, W, K2p, native);
#if FAST_X86 && FAST_AMX_KERNEL
        if (amx) { fast_bf16_amx_begin(); }
#endif
        // panel-major: the tiles of one panel run one after another, its K2 x 32 words staying in cache
        #pragma omp for schedule(static)
        for (long item = 0; item < (long)n_panels * n_items; item++) {
            int p = (int)(item / n_items), r0 = (int)(item % n_items) * item_rows;
            int rows = M - r0 < item_rows ? M - r0 : item_rows, cols = N - p * W < W ? N - p * W : W;
            float* o = out + (size_t)r0 * N + (size_t)p * W;
            const uint32_t* ta = tiles_a + (size_t)r0 * K2p;
            const uint32_t* tb = pb + (size_t)p * W * K2p;
#if FAST_X86 && FAST_AMX_KERNEL
            if (amx) { fast_bf16_tile_amx(o, (size_t)N, ta, tb, K2p, rows, cols, accumulate); continue; }
#endif
#if FAST_X86 && FAST_BF16_KERNEL
            if (native) { fast_bf16_tile_avx512(o, (size_t)N, ta, tb, K2, rows, cols, accumulate); continue; }
#endif
            fast_bf16_tile_portable(o, (size_t)N, ta, tb, K2, rows, cols, accumulate);
        }
#if FAST_X86 && FAST_AMX_KERNEL
        if (amx) { fast_bf16_amx_end(); }
#endif
    }
    free(pa);
    free(pb);
    free(pa_rows);
}

// matmul_forward_cpu's contract with bf16 products for an fp32 weight (the trainer's draft); any other weight
// (the target's, the serving draft's) as the int8 table computes it.
void matmul_forward_fast_bf16(float* out, const float* inp, Matrix weight, int T, int C, int OC) {
    if (weight.type != TYPE_F32) { matmul_forward_fast_arithmetic(out, inp, weight, T, C, OC, 1); return; }
    const float* w = (const float*)weight.data;   // out (T, OC) = inp (T, C) @ w (OC, C)^T
    fast_gemm_bf16(out, 0, T, OC, C, inp, (size_t)C, 1, w, 1, (size_t)C);
}

// matmul_backward_cpu's contract (both gradients added to) with bf16 products.
void matmul_backward_fast_bf16(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                               int T, int C, int OC) {
    // dinp (T, C) += dout (T, OC) @ weight (OC, C); dweight (OC, C) += dout^T (OC, T) @ inp (T, C)
    if (dinp != NULL) { fast_gemm_bf16(dinp, 1, T, C, OC, dout, (size_t)OC, 1, weight, (size_t)C, 1); }
    if (dweight != NULL) { fast_gemm_bf16(dweight, 1, OC, C, T, dout, 1, (size_t)OC, inp, (size_t)C, 1); }
}

// ----------------------------------------------------------------------------
// attention backward (the trainer's draft; attention_backward_head_body in cpu_fast.h), parallel over
// key/value heads as the reference. Measured against the body it replaced (the reference's loop with its
// dot products in vector lanes), one thread, 2-core Zen 4 EPYC: a trainer-shaped call (500 rows, a causal
// block and a TTT block of 500 slots each, 9 heads of 64) 62 -> 20 ms; `make bench-ops`' row 10.1 -> 7.0 ms;
// a bf16 `train` step (40 requests x 5 epochs) 1.12x faster.

// seen[row block][slot block] (P16 / 16 blocks a row): some row of the block of FAST_BACKWARD_QUERY_ROWS sees
// some slot of the block of FAST_BACKWARD_SLOTS (the block's mask rows OR-ed; any: P16 bytes of scratch)
static void attention_backward_seen(uint8_t* seen, uint8_t* any, const uint8_t* mask, int T, int P, int P16) {
    int n_blocks = P16 / FAST_BACKWARD_SLOTS;
    for (int t0 = 0; t0 < T; t0 += FAST_BACKWARD_QUERY_ROWS) {
        memset(any, 0, (size_t)P16);
        for (int t = t0; t < T && t < t0 + FAST_BACKWARD_QUERY_ROWS; t++) {
            for (int p = 0; p < P; p++) { any[p] |= mask[(size_t)t * P + p]; }
        }
        for (int blk = 0; blk < n_blocks; blk++) {
            uint8_t bits = 0;
            for (int p = 0; p < FAST_BACKWARD_SLOTS; p++) { bits |= any[blk * FAST_BACKWARD_SLOTS + p]; }
            seen[(size_t)(t0 / FAST_BACKWARD_QUERY_ROWS) * n_blocks + blk] = bits != 0;
        }
    }
}

void attention_backward_fast(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                             const float* keys, const float* values, const uint8_t* mask, int T, int P, int NH, int NKV,
                             int HS) {
    // dq, dout, q: (T, NH*HS); dkeys, dvalues, keys, values: (P, NKV*HS); mask: (T, P)
    int isa = fast_isa_current();
    int P16 = (P + FAST_BACKWARD_SLOTS - 1) / FAST_BACKWARD_SLOTS * FAST_BACKWARD_SLOTS;
    size_t n = (size_t)(P16 > 0 ? P16 : 1);
    uint8_t* seen = mallocCheck(((size_t)T / FAST_BACKWARD_QUERY_ROWS + 1) * (n / FAST_BACKWARD_SLOTS));
    uint8_t* any = mallocCheck(n);
    attention_backward_seen(seen, any, mask, T, P, P16);
    free(any);
    #pragma omp parallel if ((long)T * P * NH * HS >= PARALLEL_MIN_WORK)
    {
        AttentionBackwardScratch s;
        s.P16 = P16;
        s.seen = seen;
        s.keys_t = mallocCheck((size_t)HS * n * sizeof(float));
        s.values_t = mallocCheck((size_t)HS * n * sizeof(float));
        s.weights = mallocCheck(FAST_BACKWARD_QUERY_ROWS * n * sizeof(float));
        s.dweights = mallocCheck(FAST_BACKWARD_QUERY_ROWS * n * sizeof(float));
        s.keep = mallocCheck(FAST_BACKWARD_QUERY_ROWS * n);
        #pragma omp for schedule(static)
        for (int kv_head = 0; kv_head < NKV; kv_head++) {
#if FAST_X86
            if (isa >= FAST_ISA_AVX512) {
                fast_attention_backward_head_avx512(dq, dkeys, dvalues, dout, q, keys, values, mask, T, P, NH, NKV, HS,
                                                    kv_head, &s);
            } else if (isa == FAST_ISA_AVX2) {
                fast_attention_backward_head_avx2(dq, dkeys, dvalues, dout, q, keys, values, mask, T, P, NH, NKV, HS,
                                                  kv_head, &s);
            } else
#endif
            {
                (void)isa;
                attention_backward_head_body(dq, dkeys, dvalues, dout, q, keys, values, mask, T, P, NH, NKV, HS, kv_head, &s);
            }
        }
        free(s.keys_t); free(s.values_t); free(s.weights); free(s.dweights); free(s.keep);
    }
    free(seen);
}

// ----------------------------------------------------------------------------
// RMSNorm: rmsnorm_forward_cpu's results bit for bit. Its double sum of squares is one long dependency
// chain per row (0.7 us at C = 576), so the rows of a block run their chains side by side, each in the
// reference's order (the product of two floats is exact in double, so a contracted multiply-add changes
// nothing): a block of 8 rows costs little more than one row. Rows in parallel for a prefill's batch; below
// 16 rows a parallel region costs what it saves, and even an OpenMP region that is not taken (`if` false)
// costs a call into libgomp, so small batches return before it. Measured at the default model's sizes,
// 2-core Zen 5, the 61 RMSNorms of a verify pass: 6 rows 0.149 ms row by row, 0.060 in blocks (the scaling
// loop vectorised too: without `omp simd` the compiler, unsure of aliasing, left it scalar); 12 rows 0.300
// and 0.126 ms; one row 0.025 either way.

enum { FAST_RMSNORM_PARALLEL_ROWS = 16, FAST_RMSNORM_BLOCK = 8 };

// rows t0 .. t0 + n - 1 (n a constant at each call: the sums stay in registers)
static inline void rmsnorm_block(float* out, const float* inp, const float* weight, int C, float eps, int n) {
    double sum_squares[FAST_RMSNORM_BLOCK] = {0.0};
    for (int c = 0; c < C; c++) {
        #pragma GCC unroll 8
        for (int j = 0; j < n; j++) {
            double x = inp[(size_t)j * C + c];
            sum_squares[j] += x * x;
        }
    }
    for (int j = 0; j < n; j++) {
        const float* x = inp + (size_t)j * C;
        float* y = out + (size_t)j * C;
        float scale = (float)(1.0 / sqrt(sum_squares[j] / C + eps));
        #pragma omp simd   // (elementwise: y may be x itself, never a shifted copy of it)
        for (int c = 0; c < C; c++) { y[c] = x[c] * scale * weight[c]; }
    }
}

static void rmsnorm_rows(float* out, const float* inp, const float* weight, int T, int C, float eps) {
    for (int t0 = 0; t0 < T; t0 += FAST_RMSNORM_BLOCK) {
        float* y = out + (size_t)t0 * C;
        const float* x = inp + (size_t)t0 * C;
        switch (T - t0 < FAST_RMSNORM_BLOCK ? T - t0 : FAST_RMSNORM_BLOCK) {
            case 1: rmsnorm_block(y, x, weight, C, eps, 1); break;
            case 2: rmsnorm_block(y, x, weight, C, eps, 2); break;
            case 3: rmsnorm_block(y, x, weight, C, eps, 3); break;
            case 4: rmsnorm_block(y, x, weight, C, eps, 4); break;
            case 5: rmsnorm_block(y, x, weight, C, eps, 5); break;
            case 6: rmsnorm_block(y, x, weight, C, eps, 6); break;
            case 7: rmsnorm_block(y, x, weight, C, eps, 7); break;
            default: rmsnorm_block(y, x, weight, C, eps, 8); break;
        }
    }
}

void rmsnorm_forward_fast(float* out, const float* inp, const float* weight, int T, int C, float eps) {
    if (T < FAST_RMSNORM_PARALLEL_ROWS) { rmsnorm_rows(out, inp, weight, T, C, eps); return; }
    int n_blocks = (T + FAST_RMSNORM_BLOCK - 1) / FAST_RMSNORM_BLOCK;
    #pragma omp parallel for schedule(static)
    for (int b = 0; b < n_blocks; b++) {
        int t0 = b * FAST_RMSNORM_BLOCK, n = T - t0 < FAST_RMSNORM_BLOCK ? T - t0 : FAST_RMSNORM_BLOCK;
        rmsnorm_rows(out + (size_t)t0 * C, inp + (size_t)t0 * C, weight, n, C, eps);
    }
}

// ----------------------------------------------------------------------------
// RoPE: rope_forward_cpu's arithmetic bit for bit (the same double angle, cos and sin, the same float
// rotation), but each (position, pair)'s cos and sin are computed once for a run of calls with the same
// positions: a forward pass rotates q and k in each of 30 layers at the same positions, and the 60 calls'
// pow, cos and sin were 7% of a 6-node verify pass (0.6 ms of 9.0 on two threads), and 4% of the samples of
// a replay of 40 requests while the table held at most 64 rows (the prefills and the draft's catch-up over
// each prompt, up to 512 rows a call, took the reference's loop). The table of the last positions is per
// thread (the serving and training threads rotate independently), on the heap, grown to the most rows a
// call has asked for and freed when its thread ends. It holds each element's factors (cos_dup: c_i at 2i
// and 2i + 1; sin_signed: -s_i at 2i, s_i at 2i + 1), so that on AVX2 CPUs a rotation is whole vectors'
// multiplies and adds (fast_rope_avx2). The default model's 60 rotations of a pass (2-core Zen 5,
// alternated with the scalar loop in one process): 6 rows 55 -> 11 us, 12 rows 111 -> 22 us, one row 9 -> 2 us.

typedef struct {
    int valid, T, HS, capacity;   // capacity: rows of HS factors each table holds
    float theta;
    int* positions;               // (capacity)
    float* cos_dup;               // (capacity, HS)
    float* sin_signed;            // (capacity, HS)
} RopeMemo;
static _Thread_local RopeMemo rope_memo;
static pthread_key_t rope_memo_key;   // its destructor frees a thread's tables when the thread ends
static pthread_once_t rope_memo_key_once = PTHREAD_ONCE_INIT;

static void rope_memo_free(void* memo_pointer) {
    RopeMemo* memo = memo_pointer;
    free(memo->positions); free(memo->cos_dup); free(memo->sin_signed);
    memset(memo, 0, sizeof *memo);
}
static void rope_memo_key_create(void) {
    if (pthread_key_create(&rope_memo_key, rope_memo_free) != 0) {
        fprintf(stderr, "error: rope_forward_fast: pthread_key_create failed\n");
        exit(EXIT_FAILURE);
    }
}

void rope_forward_fast(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta) {
    RopeMemo* memo = &rope_memo;
    if (T > memo->capacity || HS != memo->HS) {   // grow (or reshape) the tables
        pthread_once(&rope_memo_key_once, rope_memo_key_create);
        int was_registered = memo->capacity > 0;
        free(memo->positions); free(memo->cos_dup); free(memo->sin_signed);
        memo->capacity = T, memo->HS = HS, memo->valid = 0;
        memo->positions = mallocCheck((size_t)T * sizeof(int) + 1);
        memo->cos_dup = mallocCheck((size_t)T * HS * sizeof(float) + 1);
        memo->sin_signed = mallocCheck((size_t)T * HS * sizeof(float) + 1);
        if (!was_registered) { pthread_setspecific(rope_memo_key, memo); }
    }
    if (!memo->valid || memo->T != T || memo->theta != theta || memcmp(memo->positions, positions, (size_t)T * sizeof(int)) != 0) {
        for (int t = 0; t < T; t++) {
            for (int i = 0; i < HS / 2; i++) {
                float cos_angle, sin_angle;
                rope_angle(&cos_angle, &sin_angle, positions[t], i, HS, theta);
                size_t at = (size_t)t * HS + 2 * i;
                memo->cos_dup[at] = memo->cos_dup[at + 1] = cos_angle;
                memo->sin_signed[at] = -sin_angle;
                memo->sin_signed[at + 1] = sin_angle;
            }
        }
        memcpy(memo->positions, positions, (size_t)T * sizeof(int));
        memo->T = T, memo->theta = theta, memo->valid = 1;
    }
#if FAST_X86
    if (HS % 8 == 0 && fast_isa_current() >= FAST_ISA_AVX2) {
        fast_rope_avx2(out, inp, memo->cos_dup, memo->sin_signed, (size_t)HS, T, n_heads, HS);
        return;
    }
#endif
    for (int t = 0; t < T; t++) {
        const float* cos_t = memo->cos_dup + (size_t)t * HS;
        const float* sin_t = memo->sin_signed + (size_t)t * HS;
        for (int h = 0; h < n_heads; h++) {
            size_t base = (size_t)t * n_heads * HS + (size_t)h * HS;
            for (int i = 0; i < HS / 2; i++) {
                float x0 = inp[base + 2 * i], x1 = inp[base + 2 * i + 1];
                float c = cos_t[2 * i], s = sin_t[2 * i + 1];
                out[base + 2 * i]     = x0 * c - x1 * s;
                out[base + 2 * i + 1] = x0 * s + x1 * c;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// The optimiser's two passes over every weight of the draft (about 10 M floats): AdamW and the gradient's
// sum of squares (for clipping). adamw_update_cpu's loop stays scalar (the compiler keeps sqrtf's errno
// path; 28 ms a step for 9.8 M floats on the 2-core Zen 5); here the chunks are shared by the threads and,
// on AVX2 CPUs, computed 8 lanes at a time (fast_adamw_avx2; a chunk's last few elements, and every
// element on other CPUs, by adamw_update_cpu itself). Every element's arithmetic is the reference's
// (multiplies, adds, a division and a square root, each correctly rounded in a vector lane as in a scalar
// one, nothing contracted), so the result is the reference's bit for bit for any thread count: 4.6 ms a
// step on one thread. The sum of squares is one dependency chain of double adds in the reference (5.3 ms);
// here each chunk of FAST_SUM_CHUNK values sums in 8 interleaved chains, the chains add in a fixed order,
// and the chunks in chunk order: the same bits for any thread count, within double rounding of the
// reference's (the clipping norm it feeds is a float), 3.5 ms on one thread.

enum { FAST_ADAMW_CHUNK = 16384, FAST_SUM_CHUNK = 16384, FAST_SUM_CHAINS = 8 };

void adamw_update_fast(float* params, const float* grads, float grad_scale, float* m, float* v, size_t N,
                       float learning_rate, float beta1, float beta2, float eps, float weight_decay, int t) {
    float bias_correction1, bias_correction2;   // (adamw_update_cpu computes its own for the lanes' remainder)
    adamw_bias_corrections(beta1, beta2, t, &bias_correction1, &bias_correction2);
    long n_chunks = (long)((N + FAST_ADAMW_CHUNK - 1) / FAST_ADAMW_CHUNK);
    int isa = fast_isa_current();
    #pragma omp parallel for schedule(static) if (N >= (size_t)PARALLEL_MIN_WORK)
    for (long chunk = 0; chunk < n_chunks; chunk++) {
        size_t first = (size_t)chunk * FAST_ADAMW_CHUNK, n = N - first < FAST_ADAMW_CHUNK ? N - first : FAST_ADAMW_CHUNK;
        size_t vectorised = 0;   // elements done 8 lanes at a time; the rest by the reference itself
#if FAST_X86
        if (isa >= FAST_ISA_AVX2) {
            vectorised = n / 8 * 8;
            fast_adamw_avx2(params + first, grads + first, grad_scale, m + first, v + first, vectorised, learning_rate,
                            beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2);
        }
#endif
        (void)isa; (void)bias_correction1; (void)bias_correction2;
        size_t at = first + vectorised;
        adamw_update_cpu(params + at, grads + at, grad_scale, m + at, v + at, n - vectorised, learning_rate, beta1,
                         beta2, eps, weight_decay, t);
    }
}

double sum_squares_fast(const float* values, size_t N) {
    long n_chunks = (long)((N + FAST_SUM_CHUNK - 1) / FAST_SUM_CHUNK);
    if (n_chunks == 0) { return 0.0; }
    double* partial = mallocCheck((size_t)n_chunks * sizeof(double));
    #pragma omp parallel for schedule(static) if (N >= (size_t)PARALLEL_MIN_WORK)
    for (long chunk = 0; chunk < n_chunks; chunk++) {
        size_t first = (size_t)chunk * FAST_SUM_CHUNK, end = first + FAST_SUM_CHUNK < N ? first + FAST_SUM_CHUNK : N;
        double chains[FAST_SUM_CHAINS] = {0.0};
        size_t i = first;
        for (; i + FAST_SUM_CHAINS <= end; i += FAST_SUM_CHAINS) {
            #pragma omp simd
            for (int k = 0; k < FAST_SUM_CHAINS; k++) { chains[k] += (double)values[i + k] * values[i + k]; }
        }
        for (int k = 0; i < end; i++, k++) { chains[k] += (double)values[i] * values[i]; }
        double sum = 0.0;
        for (int k = 0; k < FAST_SUM_CHAINS; k++) { sum += chains[k]; }
        partial[chunk] = sum;
    }
    double total = 0.0;
    for (long chunk = 0; chunk < n_chunks; chunk++) { total += partial[chunk]; }
    free(partial);
    return total;
}

// ----------------------------------------------------------------------------
// SwiGLU: swiglu_forward_cpu's expression with fast_expf (cpu_fast.h) for expf, element by element (16 at a
// time on AVX-512, the same bits), in parallel for a batch of rows: its exponentials were the largest serial
// part of a verify pass (9,216 a layer at 6 rows, 1,536 at decode, which stays on one thread: a parallel
// region costs more than it saves there). Each element's result is the same for any N and thread count.

enum { FAST_SWIGLU_PARALLEL_MIN = 4096, FAST_SWIGLU_CHUNK = 1024 };

static void swiglu_span(float* out, const float* gate, const float* up, int n, int isa) {
#if FAST_X86
    if (isa >= FAST_ISA_AVX512) { fast_swiglu_avx512(out, gate, up, n); return; }
    if (isa == FAST_ISA_AVX2) { fast_swiglu_avx2(out, gate, up, n); return; }
#endif
    (void)isa;
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + fast_expf(-g)) * up[i];
    }
}

void swiglu_forward_fast(float* out, const float* gate, const float* up, int N) {
    int isa = fast_isa_current(), n_chunks = (N + FAST_SWIGLU_CHUNK - 1) / FAST_SWIGLU_CHUNK;
    if (N < FAST_SWIGLU_PARALLEL_MIN) { swiglu_span(out, gate, up, N, isa); return; }   // (no libgomp call)
    #pragma omp parallel for schedule(static)
    for (int chunk = 0; chunk < n_chunks; chunk++) {
        int first = chunk * FAST_SWIGLU_CHUNK, n = N - first < FAST_SWIGLU_CHUNK ? N - first : FAST_SWIGLU_CHUNK;
        swiglu_span(out + first, gate + first, up + first, n, isa);
    }
}

// ----------------------------------------------------------------------------
// The trainer's softmax (the teacher's distribution) and distribution loss: one row at a time (cpu_fast.h's
// fast_softmax_row and fast_loss_row, by their AVX2 twins, the same bits), rows in parallel. These were a tenth
// of a bf16 trainer step in the reference's double exp (2-core Zen 4, perf: exp and the loss's loops over 4,096
// columns a row, two exponentials an element). The reverse KL (a lever, not the default) and CPUs below AVX2
// (where the row functions in plain C are slower than the reference) keep the reference's code.

#if FAST_X86
static int fast_rows_parallel(int T, int V) { return (long)T * V >= PARALLEL_MIN_WORK && T > 1; }
#endif

void softmax_forward_fast(float* probs, const float* logits, int T, int V) {
#if FAST_X86
    if (fast_isa_current() >= FAST_ISA_AVX2) {
        #pragma omp parallel for schedule(static) if (fast_rows_parallel(T, V))
        for (int t = 0; t < T; t++) { fast_softmax_row_avx2(probs + (size_t)t * V, logits + (size_t)t * V, V); }
        return;
    }
#endif
    softmax_forward_cpu(probs, logits, T, V);   // (plain C: the reference's is faster)
}

void distribution_loss_fast(float* losses, float* dlogits, const float* logits, const float* p_target,
                            const int* target_tokens, const float* weights, int T, int V, LossKind kind) {
#if FAST_X86
    if (kind != LOSS_REVERSE_KL && fast_isa_current() >= FAST_ISA_AVX2) {
        #pragma omp parallel for schedule(static) if (fast_rows_parallel(T, V))
        for (int t = 0; t < T; t++) {
            losses[t] = fast_loss_row_avx2(dlogits != NULL ? dlogits + (size_t)t * V : NULL, logits + (size_t)t * V,
                                           kind == LOSS_FORWARD_KL ? p_target + (size_t)t * V : NULL,
                                           kind == LOSS_NEXT_TOKEN ? target_tokens[t] : -1, V,
                                           weights != NULL ? weights[t] : 1.0f);
        }
        return;
    }
#endif
    distribution_loss_cpu(losses, dlogits, logits, p_target, target_tokens, weights, T, V, kind);
}

// ----------------------------------------------------------------------------
// quantisation: quantize_row's results (bit for bit), in parallel, vectorised for Q8_0 on AVX-512 and AVX2

void quantize_rows_fast(int type, const float* source, void* destination, int rows, int cols) {
    // source: (rows, cols); destination: rows of tensor_bytes(type, cols) bytes
    fast_check_matrix(type, cols, "quantize_rows_fast");   // (the vector paths below assume whole blocks, as quantize_row checks)
    size_t row_bytes = tensor_bytes(type, cols);
    int isa = fast_isa_current();
    #pragma omp parallel for schedule(static) if ((long)rows * cols >= PARALLEL_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        const float* x = source + (size_t)r * cols;
        uint8_t* out = (uint8_t*)destination + (size_t)r * row_bytes;
#if FAST_X86
        if (type == TYPE_Q8_0 && isa >= FAST_ISA_AVX512) { fast_quantize_q8_0_avx512(out, x, cols / FAST_QK); continue; }
        if (type == TYPE_Q8_0 && isa == FAST_ISA_AVX2) { fast_quantize_q8_0_avx2(out, x, cols / FAST_QK); continue; }
        if (type == TYPE_Q4_1 && isa >= FAST_ISA_AVX512) { fast_quantize_q4_1_avx512(out, x, cols / FAST_QK); continue; }
        if (type == TYPE_Q4_1 && isa == FAST_ISA_AVX2) { fast_quantize_q4_1_avx2(out, x, cols / FAST_QK); continue; }
#endif
        (void)isa;
        quantize_row(type, x, out, cols);
    }
}

// ============================================================================
// The fast CPU tables: host memory (the reference's memory ops), every matrix read in its GGUF type in
// place (upload_matrix keeps the caller's bytes: the target's file mapping, which outlives the Matrix; no
// copy, no fp32 duplicate), the fast ops above, and the reference's ops elsewhere (measured: together
// they take a few percent of a decode step; see tools/bench.sh). Two arithmetics, one kernel:
//   backend_cpu_fast        int8 activations on quantised weights where the CPU has AVX-512 VNNI or AVX2 (the
//                           default CPU table: measured faster, its error bounded in tests/test_common.h)
//   backend_cpu_fast_exact  fp32 activations everywhere: the reference's results up to fp32 reordering

static Matrix fast_upload_matrix(const void* gguf_data, int gguf_type, int rows, int cols) {
    (void)rows;
    fast_check_matrix(gguf_type, cols, "upload_matrix (cpu-fast)");
    Matrix matrix = {gguf_data, gguf_type};
    return matrix;
}

// Packs a stored Q8_0, Q4_0 or Q4_1 matrix (rows, cols) into out (cpu_fast.h's layout; padding rows zero).
void fast_pack_matrix(uint8_t* out, const uint8_t* stored, int type, int rows, int cols) {
    int n_blocks = cols / FAST_QK, n_groups = (rows + FAST_GROUP - 1) / FAST_GROUP;
    size_t row_bytes = tensor_bytes(type, cols), block_bytes = tensor_type_block_bytes(type);
    size_t packed_block = fast_packed_block_bytes(type), quads = fast_packed_quads_offset(type);
    size_t head = type == TYPE_Q4_1 ? 4 : 2;   // a stored block's scale (and minimum) before its values
    #pragma omp parallel for schedule(static) if ((long)rows * cols >= PARALLEL_MIN_WORK)
    for (int g = 0; g < n_groups; g++) {
        for (int b = 0; b < n_blocks; b++) {
            uint8_t* block = out + ((size_t)g * n_blocks + b) * packed_block;
            memset(block, 0, packed_block);
            for (int lane = 0; lane < FAST_GROUP && g * FAST_GROUP + lane < rows; lane++) {
                const uint8_t* source = stored + (size_t)(g * FAST_GROUP + lane) * row_bytes + (size_t)b * block_bytes;
                memcpy(block + 2 * lane, source, 2);                                          // d
                if (type == TYPE_Q4_1) { memcpy(block + 32 + 2 * lane, source + 2, 2); }      // m
                // values (Q4: bytes of two nibbles) four at a time: stored bytes 4j .. 4j + 3 are the lane's word
                // of quad j (Q8_0: q + 128, each byte's top bit flipped). Byte by byte, this loop was two thirds
                // of a draft's hot swap (2-core Xeon: 4.3 of 6.8 ms on two threads)
                for (int j = 0; j < (type == TYPE_Q8_0 ? FAST_QK : FAST_QK / 2) / 4; j++) {
                    uint32_t word;
                    memcpy(&word, source + head + 4 * j, 4);
                    if (type == TYPE_Q8_0) { word ^= 0x80808080u; }
                    memcpy(block + quads + (size_t)j * 64 + 4 * lane, &word, 4);
                }
            }
        }
    }
}

// The int8 table packs the quantised types where its packed kernel runs (AVX-512 VNNI or AVX2) into a copy
// of its own (the same size as the stored bytes); everything else is read in place, as by the exact table.
static Matrix fast_upload_matrix_packed(const void* gguf_data, int gguf_type, int rows, int cols) {
    fast_check_matrix(gguf_type, cols, "upload_matrix (cpu-fast)");
    int packable = gguf_type == TYPE_Q8_0 || gguf_type == TYPE_Q4_0 || gguf_type == TYPE_Q4_1;
    if (!packable || !fast_isa_has_int8(fast_isa_current()) || rows <= 0) { return fast_upload_matrix(gguf_data, gguf_type, rows, cols); }
    size_t bytes = fast_packed_bytes(gguf_type, rows, cols);
    uint8_t* packed = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (packed == NULL) { fprintf(stderr, "error: out of memory packing a %d x %d matrix\n", rows, cols); exit(EXIT_FAILURE); }
    fast_pack_matrix(packed, gguf_data, gguf_type, rows, cols);
    Matrix matrix = {packed, gguf_type | FAST_PACKED};
    return matrix;
}
// The stored bytes belong to the caller (the model file's mapping): only a packed copy is freed.
static void fast_free_matrix(Matrix matrix) { if (fast_is_packed(matrix.type)) { free((void*)matrix.data); } }

static void matmul_forward_fast_int8(float* out, const float* inp, Matrix weight, int T, int C, int OC) {
    matmul_forward_fast_arithmetic(out, inp, weight, T, C, OC, 1);
}
static void matmul_forward_fast_fp32(float* out, const float* inp, Matrix weight, int T, int C, int OC) {
    matmul_forward_fast_arithmetic(out, inp, weight, T, C, OC, 0);
}
// The int8 table's shared-input matmuls: packed weights of one stored type in one region (matmul_packed);
// anything else (fp32 or mixed weights) one matmul at a time.
static void matmul_forward_shared_fast_int8(float* const* outs, const float* inp, const Matrix* weights, const int* OCs,
                                            int n, int T, int C) {
    int together = 1;
    for (int i = 0; i < n && together; i++) {
        together = fast_is_packed(weights[i].type) && fast_stored_type(weights[i].type) == fast_stored_type(weights[0].type);
    }
    if (together) { matmul_packed(outs, inp, weights, OCs, n, T, C, 1); return; }
    for (int i = 0; i < n; i++) { matmul_forward_fast_int8(outs[i], inp, weights[i], T, C, OCs[i]); }
}

#define FAST_TABLE(NAME, MATMUL, MATMUL_SHARED, UPLOAD_MATRIX, DRAFT_TYPE, MATMUL_BACKWARD) \
    .name = NAME, .device = "CPU", .host_memory = 1, \
    .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_copy, .download = cpu_copy, .copy = cpu_copy, .zero = cpu_zero, \
    .upload_matrix = UPLOAD_MATRIX, .free_matrix = fast_free_matrix, .draft_type = DRAFT_TYPE, \
    .embedding_forward = embedding_forward_fast, .rmsnorm_forward = rmsnorm_forward_fast, \
    .matmul_forward = MATMUL, .matmul_forward_shared = MATMUL_SHARED, .rope_forward = rope_forward_fast, \
    .attention_forward = attention_forward_fast, .attention_forward_spans = attention_forward_spans_fast, \
    .swiglu_forward = swiglu_forward_fast, \
    .residual_forward = residual_forward_cpu, .softmax_forward = softmax_forward_fast, .kv_compact = kv_compact_cpu, \
    .matmul_backward = MATMUL_BACKWARD, .rmsnorm_backward = rmsnorm_backward_cpu, \
    .rope_backward = rope_backward_cpu, .attention_backward = attention_backward_fast, \
    .swiglu_backward = swiglu_backward_cpu, .distribution_loss = distribution_loss_fast, \
    .adamw_update = adamw_update_fast, .sum_squares = sum_squares_fast, \
    .gather_rows = gather_rows_cpu, .scatter_add_rows = scatter_add_rows_cpu, \
    .copy_strided = copy_strided_cpu, .cache_store = cache_store_cpu, .argmax_rows = argmax_rows_cpu,

// A serving draft's matrices: Q8_0 on the int8 table (the VNNI kernel's cheapest weights to unpack: a drafting
// step reads a quarter of the fp32 bytes), fp32 on the exact one. A Q4_1 copy halves the step (measured on a
// 2-core Xeon, AVX-512 VNNI without AMX, two threads, after 128 cached tokens: 138 us against 79, 6.0% and 3.4%
// of a decode step) and kept a trained draft's chains (acceptance 1.622 against 1.625 on 60 unseen requests;
// trees of 3 x 4: 1.911 against 1.892), but serving was not faster with it where the adaptive shapes and the
// hybrid choose (the forty-ninth session: live 0.95x, frozen hybrid 1.00x, fixed chains of 3 1.05x, each
// within that host's noise; the fifty-third, with the hybrid's verify prices shared: frozen hybrid 1.03x over
// three pairs, live 0.92x over four), so Q8_0 stays, and --draft-type q4_1 asks for the Q4_1 copy (draft_serve_as;
// README, speed section).
const Backend backend_cpu_fast = { FAST_TABLE("cpu-fast", matmul_forward_fast_int8, matmul_forward_shared_fast_int8,
                                              fast_upload_matrix_packed, TYPE_Q8_0, matmul_backward_fast) };
const Backend backend_cpu_fast_exact = { FAST_TABLE("cpu-fast-exact", matmul_forward_fast_fp32, NULL, fast_upload_matrix, TYPE_F32,
                                                    matmul_backward_fast) };
// The trainer's table in mixed precision (--train-precision bf16): the int8 table, except that matmuls with fp32
// weights (the trainer's draft: its forward and both backward products) take bf16 products. The same
// matrices and memory as backend_cpu_fast, so a trainer on it reads what the target on that table keeps.
const Backend backend_cpu_fast_bf16 = { FAST_TABLE("cpu-fast-bf16", matmul_forward_fast_bf16, NULL, fast_upload_matrix_packed,
                                                   TYPE_Q8_0, matmul_backward_fast_bf16) };
