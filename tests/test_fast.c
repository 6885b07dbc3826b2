/*
test_fast.c: the fast CPU ops (backends/cpu_fast.c) against the reference ops (cpu_ref.c), op by op, on
every instruction-set path this CPU has (portable C always; AVX2, AVX-512 and AVX-512 VNNI where present), for
every weight type and odd sizes. Exit status is the verdict.

  test_fast              synthetic data only (make test; no model file needed)
  test_fast MODEL.gguf   also the model's own weights with real activations (make test-model)

The reference for a quantised weight is matmul_forward_cpu on its fp32 dequantisation (dequantize_row):
the fast matmul reads the same values in place. With fp32 activations (portable C, AVX-512) the only
difference allowed is the order of the fp32 sums. The int8 path (AVX-512 VNNI or AVX2, quantised weights)
quantises the activations in blocks of 32 as cpu_fast.c's contract says; it is checked twice: against
the reference run on those quantised activations (fp32 reordering only: the kernel's arithmetic), and
against the reference on the original activations (the quantisation error: a bound measured here on
synthetic data and, in model mode, on the default model's weights and real activations, with the LM
head's argmax agreement); and a third time, bit for bit, against the kernels' arithmetic written out
(int8_kernel_oracle), which makes the VNNI and AVX2 kernels give the same bits.
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"
#include <float.h>

// Tolerances and bounds: the one table in test_common.h ("exact", "matmul_reorder", "int8_activations",
// "attention_reorder"; in model mode "int8_rms_error", "int8_max_error", "head_argmax_agreement").
static double model_bound(const char* name) { return tolerance(name).atol; }
static Tolerance fast_tolerance(const char* name) { return tolerance(name); }

static uint64_t rng_state = 0x5eed;
static double worst_matmul_error = 0.0, worst_attention_error = 0.0,
              worst_backward_error_per_term = 0.0, worst_int8_error_per_sqrt_c = 0.0;

static double max_abs_difference(const float* a, const float* b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst || d != d) { worst = d; }
    }
    return worst;
}


// ----------------------------------------------------------------------------
// fp16: the branch-free conversion against gguf.c's, for all 65,536 inputs, bit for bit (NaN payloads too)

static void test_fp16_conversion(void) {
    int mismatches = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = fast_fp16_to_fp32((uint16_t)h), expected = fp16_to_fp32((uint16_t)h);
        if (fast_float_bits(got) != fast_float_bits(expected)) {
            if (mismatches++ < 5) { fprintf(stderr, "  fp16 0x%04x: got 0x%08x, expected 0x%08x\n", h, fast_float_bits(got), fast_float_bits(expected)); }
        }
    }
    check(mismatches == 0, "fast_fp16_to_fp32 differs from fp16_to_fp32 on %d of 65536 inputs", mismatches);
}

// ----------------------------------------------------------------------------
// weights: random values in [-1, 1] stored in `type` (quantised by gguf.c's reference quantisers) and
// their fp32 dequantisation, the reference's input

static const int WEIGHT_TYPES[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
#define N_WEIGHT_TYPES (int)(sizeof(WEIGHT_TYPES) / sizeof(WEIGHT_TYPES[0]))

static void* make_weight(int type, int rows, int cols, float* dequantised) {
    // dequantised: (rows, cols)
    size_t row_bytes = tensor_bytes(type, cols);
    uint8_t* stored = mallocCheck((size_t)rows * row_bytes);
    float* values = mallocCheck((size_t)cols * sizeof(float));
    for (int r = 0; r < rows; r++) {
        fill_uniform(values, (size_t)cols, &rng_state, -1, 1);
        quantize_row(type, values, stored + (size_t)r * row_bytes, cols);
        dequantize_row(type, stored + (size_t)r * row_bytes, dequantised + (size_t)r * cols, cols);
    }
    free(values);
    return stored;
}

// ----------------------------------------------------------------------------
// matmul: one (type, T, C, OC) case on the current path, against the reference; then batch invariance
// (each row alone gives the same bits as in the batch) and thread-count invariance

// The int8 path's activations, from the contract in cpu_fast.c (written here independently): per block of
// 32, scale = max|x| / 127, q = x * (1 / scale) rounded to nearest even; a block under 1e-30 is zeros.
// One block of 32: its integers into q, its scale returned (0 for a block of zeros).
static float quantise_block_like_the_contract(int* q, const float* x) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) { amax = fmaxf(amax, fabsf(x[j])); }
    float scale = amax / 127.0f;
    float inverse = amax > 1e-30f ? 1.0f / scale : 0.0f;
    for (int j = 0; j < 32; j++) { q[j] = (int)nearbyintf(x[j] * inverse); }
    return inverse == 0.0f ? 0.0f : scale;
}
// The activations as the int8 path sees them: each value its integer times its block's scale.
static void quantise_like_the_contract(float* quantised, const float* x, size_t n) {
    int q[32];
    for (size_t b = 0; b < n; b += 32) {
        float scale = quantise_block_like_the_contract(q, x + b);
        for (int j = 0; j < 32; j++) { quantised[b + j] = (float)q[j] * scale; }
    }
}

// type: the Matrix's (packed weights carry FAST_PACKED): only packed weights take the int8 kernel
static int int8_path_runs(int type) {
    return fast_int8_activations && fast_isa_has_int8(fast_isa) && fast_is_packed(type);
}

// Checks one matmul_forward_fast result against the reference on the dequantised weights, as the path
// that ran requires (see the top of this file).
static void check_matmul(const char* what, int type, const float* got, const float* inp, const float* dequantised,
                         int T, int C, int OC) {
    float* expected = mallocCheck((size_t)T * OC * sizeof(float));
    matmul_forward_cpu(expected, inp, matrix_f32(dequantised), T, C, OC);
    double error = max_abs_difference(got, expected, (size_t)T * OC);
    if (int8_path_runs(type)) {
        // the kernel's arithmetic: the reference on the quantised activations
        float* quantised = mallocCheck((size_t)T * C * sizeof(float));
        float* expected_quantised = mallocCheck((size_t)T * OC * sizeof(float));
        quantise_like_the_contract(quantised, inp, (size_t)T * C);
        matmul_forward_cpu(expected_quantised, quantised, matrix_f32(dequantised), T, C, OC);
        char what_quantised[256];
        snprintf(what_quantised, sizeof(what_quantised), "%s on int8 activations", what);
        check_tensor(what_quantised, got, expected_quantised, (size_t)T * OC, fast_tolerance("matmul_reorder"));
        double reorder = max_abs_difference(got, expected_quantised, (size_t)T * OC);
        if (reorder > worst_matmul_error) { worst_matmul_error = reorder; }
        // the quantisation error against the original activations
        Tolerance tol = fast_tolerance("int8_activations");
        tol.atol *= sqrtf((float)C);
        check_tensor(what, got, expected, (size_t)T * OC, tol);
        if (error / sqrt((double)C) > worst_int8_error_per_sqrt_c) { worst_int8_error_per_sqrt_c = error / sqrt((double)C); }
        free(expected_quantised); free(quantised);
    } else {
        check_tensor(what, got, expected, (size_t)T * OC, fast_tolerance("matmul_reorder"));
        if (error > worst_matmul_error) { worst_matmul_error = error; }
    }
    free(expected);
}

// The forms a matrix of `type` takes in the fast tables: as stored (form 0) and, for the quantised types,
// packed (form 1, cpu_fast.h; the int8 table's form on VNNI CPUs; on every path here, so the fallback of
// the other levels is checked too). Returns 0 where the type has no such form; *owned is freed by the caller.
static int weight_form(Matrix* weight, const void* stored, int type, int rows, int cols, int form, void** owned) {
    *owned = NULL;
    if (form == 0) { *weight = (Matrix){stored, type}; return 1; }
    if (type != TYPE_Q8_0 && type != TYPE_Q4_0 && type != TYPE_Q4_1) { return 0; }
    size_t bytes = fast_packed_bytes(type, rows, cols);
    *owned = aligned_alloc(64, (bytes + 63) / 64 * 64);
    fast_pack_matrix(*owned, stored, type, rows, cols);
    *weight = (Matrix){*owned, type | FAST_PACKED};
    return 1;
}

static void test_matmul_case(int type, int T, int C, int OC) {
    float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
    void* stored = make_weight(type, OC, C, dequantised);
    for (int form = 0; form < 2; form++) {
        Matrix weight;
        void* owned;
        if (!weight_form(&weight, stored, type, OC, C, form, &owned)) { continue; }
        float* inp = mallocCheck((size_t)T * C * sizeof(float));
        fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
        float* got = mallocCheck((size_t)T * OC * sizeof(float));
        for (size_t i = 0; i < (size_t)T * OC; i++) { got[i] = NAN; }   // every element must be written
        matmul_forward_fast(got, inp, weight, T, C, OC);
        char what[160];
        snprintf(what, sizeof(what), "matmul_forward_fast [%s] %s%s T=%d C=%d OC=%d", fast_isa_name(fast_isa),
                 tensor_type_name(type), form ? " packed" : "", T, C, OC);
        check_matmul(what, weight.type, got, inp, dequantised, T, C, OC);
        // batch invariance: rows 0 and T-1 computed alone
        float* alone = mallocCheck((size_t)OC * sizeof(float));
        int rows_to_check[2] = {0, T - 1};
        for (int k = 0; k < 2; k++) {
            int t = rows_to_check[k];
            matmul_forward_fast(alone, inp + (size_t)t * C, weight, 1, C, OC);
            check(bits_equal(alone, got + (size_t)t * OC, (size_t)OC),
                  "%s: row %d computed alone differs from the same row in the batch (tolerance exact)", what, t);
        }
#ifdef _OPENMP
        // thread-count invariance: one thread gives the same bits
        float* one_thread = mallocCheck((size_t)T * OC * sizeof(float));
        int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        matmul_forward_fast(one_thread, inp, weight, T, C, OC);
        omp_set_num_threads(threads);
        check(bits_equal(one_thread, got, (size_t)T * OC), "%s: one thread differs from %d (tolerance exact)", what, threads);
        free(one_thread);
#endif
        free(alone); free(got); free(inp); free(owned);
    }
    free(stored); free(dequantised);
}

// ----------------------------------------------------------------------------
// The int8 kernels' arithmetic, written out here from the contract (cpu_fast.c) and the kernels' comment
// (cpu_fast_kernels.c), one output at a time: the activations quantised per block of 32 (integers qx,
// scale dx), and per block in order the exact integer dot product of the weight's quants (Q4_0: q - 8;
// Q8_0 and Q4_1: q) with qx, then acc = fma(float(sum), d * dx, acc) and, for Q4_1, acc = fma(m, dx *
// float(sum qx), acc). Both int8 kernels (VNNI, AVX2) must give exactly these bits, for any tile shape and
// thread count, so they give each other's.
static void int8_kernel_oracle(float* out, const float* inp, const uint8_t* stored, int type, int T, int C, int OC) {
    int n_blocks = C / 32;
    size_t row_bytes = tensor_bytes(type, C), block_bytes = tensor_type_block_bytes(type);
    int* qx = mallocCheck((size_t)C * sizeof(int));
    float* dx = mallocCheck((size_t)n_blocks * sizeof(float));
    for (int t = 0; t < T; t++) {
        const float* x = inp + (size_t)t * C;
        for (int b = 0; b < n_blocks; b++) { dx[b] = quantise_block_like_the_contract(qx + 32 * b, x + 32 * b); }
        for (int o = 0; o < OC; o++) {
            float acc = 0.0f;
            for (int b = 0; b < n_blocks; b++) {
                const uint8_t* block = stored + (size_t)o * row_bytes + (size_t)b * block_bytes;
                float d = fp16_to_fp32(tensor_load_u16(block));
                int sum = 0, sum_x = 0;
                for (int j = 0; j < 32; j++) {
                    int q = type == TYPE_Q8_0 ? (int)(int8_t)block[2 + j]
                          : j < 16 ? block[(type == TYPE_Q4_1 ? 4 : 2) + j] & 0x0f : block[(type == TYPE_Q4_1 ? 4 : 2) + j - 16] >> 4;
                    if (type == TYPE_Q4_0) { q -= 8; }
                    sum += q * qx[32 * b + j];
                    sum_x += qx[32 * b + j];
                }
                acc = fmaf((float)sum, d * dx[b], acc);
                if (type == TYPE_Q4_1) { acc = fmaf(fp16_to_fp32(tensor_load_u16(block + 2)), dx[b] * (float)sum_x, acc); }
            }
            out[(size_t)t * OC + o] = acc;
        }
    }
    free(dx); free(qx);
}

// On every level with an int8 kernel: packed Q8_0, Q4_0 and Q4_1 weights give the oracle's bits at odd
// shapes, every batch size up to 17 (all tile shapes and their tails) and 35 (AMX's tiles of 16 rows, twice,
// and a tail) and one thread or all; Q8_0's quants include -128 (a file may hold it; the AVX2 kernel's sign
// trick must not overflow on it). Where AMX's int8 tiles exist, twice: the VNNI kernel alone, then AMX's
// from one row on (by default they take calls of fast_amx_int8_min_rows rows or more). Where the machine
// has no int8 level this test reports that and checks nothing.
static void int8_kernel_exact_cases(const char* kernel) {
    const int shapes[][2] = {{32, 7}, {96, 33}, {576, 150}, {1536, 9}};
    const int types[] = {TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
    int checked = 0;
    for (int k = 0; k < 3; k++) {
        for (int s = 0; s < 4; s++) {
            int C = shapes[s][0], OC = shapes[s][1], T = 35;
            float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
            uint8_t* stored = make_weight(types[k], OC, C, dequantised);
            if (types[k] == TYPE_Q8_0) {
                for (int o = 0; o < OC; o += 3) { stored[(size_t)o * tensor_bytes(TYPE_Q8_0, C) + 2 + o % 32] = 0x80; }
            }
            Matrix weight;
            void* owned;
            weight_form(&weight, stored, types[k], OC, C, 1, &owned);
            float* inp = mallocCheck((size_t)T * C * sizeof(float));
            fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
            for (int c = 0; c < 32; c++) { inp[c] = 0.0f; }          // a block of zeros (scale 0)
            inp[C + 5] = -4.0f; inp[C + 6] = 4.0f;                   // quants of +-127
            float* expected = mallocCheck((size_t)T * OC * sizeof(float));
            float* got = mallocCheck((size_t)T * OC * sizeof(float));
            int8_kernel_oracle(expected, inp, stored, types[k], T, C, OC);
            for (int rows = 1; rows <= T; rows = rows == 17 ? T : rows + 1) {
                for (int one_thread = 0; one_thread < 2; one_thread++) {
#ifdef _OPENMP
                    int threads = omp_get_max_threads();
                    if (one_thread) { omp_set_num_threads(1); }
#else
                    if (one_thread) { continue; }
#endif
                    for (size_t i = 0; i < (size_t)rows * OC; i++) { got[i] = NAN; }   // (an output not written fails)
                    matmul_forward_fast(got, inp, weight, rows, C, OC);
#ifdef _OPENMP
                    omp_set_num_threads(threads);
#endif
                    check(bits_equal(got, expected, (size_t)rows * OC), "int8 kernel [%s] %s packed T=%d C=%d OC=%d%s: "
                          "not the oracle's bits (first row %g against %g)", kernel, tensor_type_name(types[k]),
                          rows, C, OC, one_thread ? ", one thread" : "", got[0], expected[0]);
                    checked++;
                }
            }
            free(got); free(expected); free(inp); free(owned); free(stored); free(dequantised);
        }
    }
    printf("int8 kernel [%s]: %d calls gave the oracle's bits\n", kernel, checked);
}

static void test_int8_kernel_exact(void) {
    if (!int8_path_runs(TYPE_Q4_1 | FAST_PACKED)) { printf("int8 kernel [%s]: no int8 kernel on this level, nothing to check\n", fast_isa_name(fast_isa)); return; }
    int saved_amx = fast_amx_kernel, saved_min_rows = fast_amx_int8_min_rows, amx_runs = fast_int8_amx();
    for (int amx = 0; amx <= amx_runs; amx++) {
        fast_amx_kernel = amx;
        fast_amx_int8_min_rows = amx ? 1 : saved_min_rows;
        int8_kernel_exact_cases(amx ? "AMX int8 tiles" : fast_isa_name(fast_isa));
    }
    if (!amx_runs && fast_isa == FAST_ISA_AVX512_VNNI) { printf("int8 kernel: no AMX int8 tiles on this machine, the AMX kernel not checked\n"); }
    fast_amx_kernel = saved_amx;
    fast_amx_int8_min_rows = saved_min_rows;
}

// Inputs that are not finite: the int8 path hands those rows to the fp32 arithmetic, so infinities and NaNs
// come out where the reference puts them, and the call's finite rows keep the bits they have alone (the whole
// call once took the fp32 arithmetic, so one overflowed node of a verify pass changed its siblings' logits).
static void test_matmul_not_finite(void) {
    const int T = 3, C = 64, OC = 5;
    for (int k = 0; k < N_WEIGHT_TYPES; k++) {
        int type = WEIGHT_TYPES[k];
        float dequantised[5 * 64], inp[3 * 64], expected[3 * 5], got[3 * 5];
        void* stored = make_weight(type, OC, C, dequantised);
        for (int form = 0; form < 2; form++) {
            Matrix weight;
            void* owned;
            if (!weight_form(&weight, stored, type, OC, C, form, &owned)) { continue; }
            fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
            inp[1 * C + 7] = INFINITY;   // row 1: +-inf outputs (or NaN where a weight is 0)
            inp[2 * C + 9] = NAN;        // row 2: NaN outputs
            matmul_forward_cpu(expected, inp, matrix_f32(dequantised), T, C, OC);
            matmul_forward_fast(got, inp, weight, T, C, OC);
            int mismatches = 0;
            for (int i = 0; i < T * OC; i++) {
                int same_class = isnan(got[i]) ? isnan(expected[i]) != 0 : isinf(got[i]) ? got[i] == expected[i]
                                 : !isnan(expected[i]) && !isinf(expected[i]);
                mismatches += !same_class;
            }
            check(mismatches == 0, "matmul_forward_fast [%s] %s%s with inf and NaN inputs: %d outputs of another class "
                  "(finite / inf / NaN) than the reference's", fast_isa_name(fast_isa), tensor_type_name(type),
                  form ? " packed" : "", mismatches);
            float alone[5];
            matmul_forward_fast(alone, inp, weight, 1, C, OC);   // row 0 by itself
            check(bits_equal(got, alone, OC), "matmul_forward_fast [%s] %s%s: the finite row beside inf and NaN rows "
                  "differs from its result alone", fast_isa_name(fast_isa), tensor_type_name(type), form ? " packed" : "");
            free(owned);
        }
        free(stored);
    }
}

static void test_matmul_all(void) {
    const int Ts[] = {1, 2, 3, 6, 7, 16, 33, 256};
    // (C, OC) for the float types: C not a multiple of the vector width (16) or of a block (32)
    const int float_shapes[][2] = {{37, 13}, {5, 3}, {64, 33}, {100, 17}, {576, 67}};
    // (C, OC) for the quantised types: C a multiple of 32
    const int quantised_shapes[][2] = {{32, 7}, {96, 33}, {576, 67}, {1536, 19}};
    for (int k = 0; k < N_WEIGHT_TYPES; k++) {
        int type = WEIGHT_TYPES[k];
        int quantised = tensor_type_block_size(type) > 1;
        int n_shapes = quantised ? 4 : 5;
        for (int s = 0; s < n_shapes; s++) {
            int C = quantised ? quantised_shapes[s][0] : float_shapes[s][0];
            int OC = quantised ? quantised_shapes[s][1] : float_shapes[s][1];
            for (size_t i = 0; i < sizeof(Ts) / sizeof(Ts[0]); i++) {
                if (Ts[i] == 256 && C * OC > 576 * 67) { continue; }   // keeps the sanitizer run short
                test_matmul_case(type, Ts[i], C, OC);
            }
        }
    }
}

// matmuls of one input (backend_matmuls on the int8 table: one region over every weight's rows) give the
// bits of one matmul_forward call per weight: three packed weights of one type (a layer's q, k, v; row
// counts that end mid-group), two of different types and a packed weight beside an unpacked one (taken one
// at a time), an input with a NaN (the fp32 path), and a batch past the private quantisation's size.
static void test_matmul_shared(void) {
    const int C = 96, OCs[3] = {37, 16, 50}, Ts[] = {1, 6, 100};
    const int type_sets[][3] = {{TYPE_Q4_1, TYPE_Q4_1, TYPE_Q4_1}, {TYPE_Q8_0, TYPE_Q8_0, TYPE_Q8_0},
                                {TYPE_Q4_0, TYPE_Q4_0, TYPE_Q4_0}, {TYPE_Q4_1, TYPE_Q8_0, TYPE_Q4_1}, {TYPE_F32, TYPE_Q4_1, TYPE_Q4_1}};
    for (size_t s = 0; s < sizeof(type_sets) / sizeof(type_sets[0]); s++) {
        for (size_t k = 0; k < sizeof(Ts) / sizeof(Ts[0]); k++) {
            for (int nan_input = 0; nan_input < 2; nan_input++) {
                int T = Ts[k];
                Matrix weights[3];
                void* stored[3];
                void* owned[3];
                float* separate[3];
                float* shared[3];
                for (int i = 0; i < 3; i++) {
                    float* dequantised = mallocCheck((size_t)OCs[i] * C * sizeof(float));
                    stored[i] = make_weight(type_sets[s][i], OCs[i], C, dequantised);
                    free(dequantised);
                    // packed (the int8 table's form), fp32 as stored
                    weight_form(&weights[i], stored[i], type_sets[s][i], OCs[i], C, type_sets[s][i] != TYPE_F32, &owned[i]);
                    separate[i] = mallocCheck((size_t)T * OCs[i] * sizeof(float));
                    shared[i] = mallocCheck((size_t)T * OCs[i] * sizeof(float));
                }
                float* inp = mallocCheck((size_t)T * C * sizeof(float));
                fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
                if (nan_input) { inp[(size_t)(T - 1) * C + 3] = NAN; }
                for (int i = 0; i < 3; i++) { backend_cpu_fast.matmul_forward(separate[i], inp, weights[i], T, C, OCs[i]); }
                backend_matmuls(&backend_cpu_fast, shared, inp, weights, OCs, 3, T, C);
                for (int i = 0; i < 3; i++) {
                    check(bits_equal(shared[i], separate[i], (size_t)T * OCs[i]),
                          "backend_matmuls [%s] %s, %s, %s T=%d%s: weight %d differs from its own matmul_forward",
                          fast_isa_name(fast_isa), tensor_type_name(type_sets[s][0]), tensor_type_name(type_sets[s][1]),
                          tensor_type_name(type_sets[s][2]), T, nan_input ? " (a NaN input)" : "", i);
                    free(owned[i]); free(stored[i]); free(separate[i]); free(shared[i]);
                }
                free(inp);
            }
        }
    }
}

// ----------------------------------------------------------------------------
// embedding: every type, dequantised rows equal dequantize_row bit for bit

static void test_embedding(void) {
    const int V = 50, C = 96;
    int tokens[7] = {0, 49, 3, 3, 17, 25, 48};
    for (int k = 0; k < N_WEIGHT_TYPES; k++) {
        int type = WEIGHT_TYPES[k];
        float* dequantised = mallocCheck((size_t)V * C * sizeof(float));
        void* stored = make_weight(type, V, C, dequantised);
        float got[7 * 96], expected[7 * 96];
        embedding_forward_cpu(expected, tokens, matrix_f32(dequantised), 7, C, V);
        for (int form = 0; form < 2; form++) {
            Matrix table;
            void* owned;
            if (!weight_form(&table, stored, type, V, C, form, &owned)) { continue; }
            embedding_forward_fast(got, tokens, table, 7, C, V);
            char what[96];
            snprintf(what, sizeof(what), "embedding_forward_fast %s%s", tensor_type_name(type), form ? " packed" : "");
            check_tensor(what, got, expected, 7 * (size_t)C, fast_tolerance("exact"));
            if (form == 1) {   // and the whole matrix back on the host, as the trainer and the exporters read it
                float* host = mallocCheck((size_t)V * C * sizeof(float));
                matrix_to_host_f32(&backend_cpu_fast, table, V, C, host);
                check(bits_equal(host, dequantised, (size_t)V * C), "matrix_to_host_f32 of a packed %s matrix: not "
                      "dequantize_row's values (tolerance exact)", tensor_type_name(type));
                free(host);
            }
            free(owned);
        }
        free(stored); free(dequantised);
    }
}

// ----------------------------------------------------------------------------
// attention: causal, tree and random masks with fully masked rows, odd P, several head layouts

typedef enum { MASK_CAUSAL, MASK_TREE, MASK_RANDOM } MaskKind;

// mask: (T, P). Causal: query t is the cache's last T slots' t-th. Tree: the last T slots form a tree
// (node i's parent is (i - 1) / 2), each node sees the prefix, its ancestors and itself. Random: each
// entry 50%, and rows 0 and T/2 fully masked (they must give zeros).
static void make_mask(uint8_t* mask, MaskKind kind, int T, int P) {
    int prefix = P - T;
    for (int t = 0; t < T; t++) {
        uint8_t* row = mask + (size_t)t * P;
        for (int p = 0; p < P; p++) {
            if (kind == MASK_RANDOM) { row[p] = random_f32(&rng_state) < 0.5f; }
            else if (p < prefix) { row[p] = 1; }
            else if (kind == MASK_CAUSAL) { row[p] = p - prefix <= t; }
            else {
                row[p] = 0;
                for (int node = t; node >= 0; node = node == 0 ? -1 : (node - 1) / 2) { if (node == p - prefix) { row[p] = 1; } }
            }
        }
        if (kind == MASK_RANDOM && (t == 0 || t == T / 2)) { memset(row, 0, (size_t)P); }
    }
}

static void test_attention_case(MaskKind kind, int T, int P, int NH, int NKV, int HS) {
    size_t q_size = (size_t)T * NH * HS, kv_size = (size_t)P * NKV * HS;
    float* q = mallocCheck(q_size * sizeof(float));
    float* keys = mallocCheck(kv_size * sizeof(float));
    float* values = mallocCheck(kv_size * sizeof(float));
    uint8_t* mask = mallocCheck((size_t)T * P);
    fill_uniform(q, q_size, &rng_state, -1, 1);
    fill_uniform(keys, kv_size, &rng_state, -1, 1);
    fill_uniform(values, kv_size, &rng_state, -1, 1);
    make_mask(mask, kind, T, P);
    float* expected = mallocCheck(q_size * sizeof(float));
    float* got = mallocCheck(q_size * sizeof(float));
    CacheLayout by_slot = cache_by_slot(NKV, HS);
    attention_forward_cpu(expected, q, keys, values, mask, T, P, NH, NKV, HS, by_slot);
    for (size_t i = 0; i < q_size; i++) { got[i] = NAN; }
    attention_forward_fast(got, q, keys, values, mask, T, P, NH, NKV, HS, by_slot);
    const char* kinds[] = {"causal", "tree", "random"};
    char what[160];
    snprintf(what, sizeof(what), "attention_forward_fast %s T=%d P=%d NH=%d NKV=%d HS=%d", kinds[kind], T, P, NH, NKV, HS);
    check_tensor(what, got, expected, q_size, fast_tolerance("attention_reorder"));
    double error = max_abs_difference(got, expected, q_size);
    if (error > worst_attention_error) { worst_attention_error = error; }
    if (kind == MASK_RANDOM) {   // fully masked rows: exactly zero
        float* zeros = callocCheck((size_t)NH * HS, sizeof(float));
        check(memcmp(got, zeros, (size_t)NH * HS * sizeof(float)) == 0, "%s: fully masked row 0 is not zero", what);
        free(zeros);
    }
    // batch invariance: every row alone (with its mask row) gives the same bits (on AVX-512 a row's queries
    // may sit in a vector of sixteen in the batch and be scored one by one alone: the same sums either way)
    float* alone = mallocCheck((size_t)NH * HS * sizeof(float));
    for (int t = 0; t < T; t++) {
        attention_forward_fast(alone, q + (size_t)t * NH * HS, keys, values, mask + (size_t)t * P, 1, P, NH, NKV, HS, by_slot);
        check(bits_equal(alone, got + (size_t)t * NH * HS, (size_t)NH * HS), "%s: row %d alone differs from the batch", what, t);
    }
#ifdef _OPENMP
    // thread-count invariance: 1, 2 and 3 threads give the same bits (how a pass's rows and heads are cut
    // into items depends on the thread count: attention_forward_fast)
    int saved_threads = omp_get_max_threads();
    float* by_threads = mallocCheck(q_size * sizeof(float));
    float* first = mallocCheck(q_size * sizeof(float));
    for (int threads = 1; threads <= 3; threads++) {
        omp_set_num_threads(threads);
        attention_forward_fast(threads == 1 ? first : by_threads, q, keys, values, mask, T, P, NH, NKV, HS, by_slot);
        if (threads > 1) {
            check(bits_equal(by_threads, first, q_size), "%s: %d threads differ from one", what, threads);
        }
    }
    omp_set_num_threads(saved_threads);
    check(bits_equal(first, got, q_size), "%s: one thread differs from %d", what, saved_threads);
    free(by_threads); free(first);
#endif
    // layout invariance: the same rows head by head (the target's cache: S > P, NaN past P), the batch and
    // every row alone, give the same bits
    int S = P + 5;
    float* key_heads = head_by_head(keys, P, NKV, HS, S);
    float* value_heads = head_by_head(values, P, NKV, HS, S);
    float* got_heads = mallocCheck(q_size * sizeof(float));
    attention_forward_fast(got_heads, q, key_heads, value_heads, mask, T, P, NH, NKV, HS, cache_by_head(S, HS));
    check(bits_equal(got_heads, got, q_size), "%s: the cache head by head differs from slot by slot", what);
    for (int t = 0; t < T; t++) {
        attention_forward_fast(alone, q + (size_t)t * NH * HS, key_heads, value_heads, mask + (size_t)t * P, 1, P, NH, NKV,
                               HS, cache_by_head(S, HS));
        check(bits_equal(alone, got + (size_t)t * NH * HS, (size_t)NH * HS),
              "%s: row %d alone, the cache head by head, differs from the batch", what, t);
    }
    free(key_heads); free(value_heads); free(got_heads);
    // a slot a row does not see is never read for it: with every such slot's key and value NaN (slots other
    // rows see included, whose outputs then carry the NaN), the row's output keeps its bits (a tree's
    // siblings, or a stale slot, cannot leak into a node that does not see it)
    float* poisoned_keys = mallocCheck(kv_size * sizeof(float));
    float* poisoned_values = mallocCheck(kv_size * sizeof(float));
    float* poisoned_out = mallocCheck(q_size * sizeof(float));
    for (int t = 0; t < T; t += T > 4 ? T / 4 : 1) {
        memcpy(poisoned_keys, keys, kv_size * sizeof(float));
        memcpy(poisoned_values, values, kv_size * sizeof(float));
        for (int p = 0; p < P; p++) {
            if (mask[(size_t)t * P + p]) { continue; }
            for (int e = 0; e < NKV * HS; e++) { poisoned_keys[(size_t)p * NKV * HS + e] = poisoned_values[(size_t)p * NKV * HS + e] = NAN; }
        }
        attention_forward_fast(poisoned_out, q, poisoned_keys, poisoned_values, mask, T, P, NH, NKV, HS, by_slot);
        check(bits_equal(poisoned_out + (size_t)t * NH * HS, got + (size_t)t * NH * HS, (size_t)NH * HS),
              "%s: row %d read a slot it does not see (NaN there changed its output)", what, t);
    }
    free(poisoned_keys); free(poisoned_values); free(poisoned_out);
    // compaction invariance (verify = decode): the last row against only the slots it sees, moved together
    // to the front of the cache (what acceptance does) and all visible, gives the same bits
    int KVD = NKV * HS, seen = 0;
    float* compact_keys = mallocCheck(kv_size * sizeof(float));
    float* compact_values = mallocCheck(kv_size * sizeof(float));
    for (int p = 0; p < P; p++) {
        if (!mask[(size_t)(T - 1) * P + p]) { continue; }
        memcpy(compact_keys + (size_t)seen * KVD, keys + (size_t)p * KVD, (size_t)KVD * sizeof(float));
        memcpy(compact_values + (size_t)seen * KVD, values + (size_t)p * KVD, (size_t)KVD * sizeof(float));
        seen++;
    }
    if (seen > 0) {
        uint8_t* all_visible = mallocCheck((size_t)seen);
        memset(all_visible, 1, (size_t)seen);
        attention_forward_fast(alone, q + (size_t)(T - 1) * NH * HS, compact_keys, compact_values, all_visible, 1, seen, NH,
                               NKV, HS, by_slot);
        check(bits_equal(alone, got + (size_t)(T - 1) * NH * HS, (size_t)NH * HS),
              "%s: the last row over its %d visible slots, compacted, differs from the batch", what, seen);
        free(all_visible);
    }
    free(compact_keys); free(compact_values);
    free(alone); free(got); free(expected); free(mask); free(values); free(keys); free(q);
}

// attention_forward_spans_fast (several sequences in one call, each at its own slots of a head-by-head cache):
// the same bits as attention_forward_fast per span, on 1, 2 and 3 threads; a span reads only its own slots
// (every slot outside all spans NaN leaves the outputs' bits; a NaN inside a span's slots reaches that span's
// rows: the negative control that the poisoning is seen at all).
static void test_attention_spans_case(int NH, int NKV, int HS) {
    enum { N_SPANS = 6 };
    // (a long span: every head shape's work is past PARALLEL_MIN_WORK, so that the threads share it)
    const int rows[N_SPANS] = {1, 1, 3, 1, 2, 1}, pasts[N_SPANS] = {0, 40, 7, 2000, 16, 1};
    SequenceSpan spans[N_SPANS];
    int T = 0, S = 0;
    size_t mask_bytes = 0;
    for (int i = 0; i < N_SPANS; i++) {
        spans[i] = (SequenceSpan){T, rows[i], S + 3, pasts[i]};   // 3 unused slots before each sequence
        T += rows[i];
        S += 3 + pasts[i] + rows[i];
        mask_bytes += (size_t)rows[i] * (pasts[i] + rows[i]);
    }
    S += 5;
    size_t q_size = (size_t)T * NH * HS, kv_size = (size_t)S * NKV * HS;
    float* q = mallocCheck(q_size * sizeof(float));
    float* keys = mallocCheck(kv_size * sizeof(float));
    float* values = mallocCheck(kv_size * sizeof(float));
    uint8_t* mask = mallocCheck(mask_bytes);
    fill_uniform(q, q_size, &rng_state, -1, 1);
    fill_uniform(keys, kv_size, &rng_state, -1, 1);
    fill_uniform(values, kv_size, &rng_state, -1, 1);
    for (int i = 0, offset = 0; i < N_SPANS; offset += rows[i] * (pasts[i] + rows[i]), i++) {
        make_mask(mask + offset, i == 2 ? MASK_TREE : MASK_CAUSAL, rows[i], pasts[i] + rows[i]);
    }
    CacheLayout layout = cache_by_head(S, HS);
    float* expected = mallocCheck(q_size * sizeof(float));
    float* got = mallocCheck(q_size * sizeof(float));
    for (int i = 0, offset = 0; i < N_SPANS; offset += rows[i] * (pasts[i] + rows[i]), i++) {
        size_t base = (size_t)spans[i].base * HS, row = (size_t)spans[i].row * NH * HS;
        attention_forward_fast(expected + row, q + row, keys + base, values + base, mask + offset, rows[i], pasts[i] + rows[i],
                               NH, NKV, HS, layout);
    }
    char what[128];
    snprintf(what, sizeof(what), "attention_forward_spans_fast NH=%d NKV=%d HS=%d, %d spans", NH, NKV, HS, N_SPANS);
#ifdef _OPENMP
    int saved_threads = omp_get_max_threads();
    for (int threads = 1; threads <= 3; threads++) {
        omp_set_num_threads(threads);
        for (size_t i = 0; i < q_size; i++) { got[i] = NAN; }
        attention_forward_spans_fast(got, q, keys, values, mask, spans, N_SPANS, NH, NKV, HS, layout);
        check(bits_equal(got, expected, q_size), "%s on %d threads: not the bits of a call per span", what, threads);
    }
    omp_set_num_threads(saved_threads);
#else
    attention_forward_spans_fast(got, q, keys, values, mask, spans, N_SPANS, NH, NKV, HS, layout);
    check(bits_equal(got, expected, q_size), "%s: not the bits of a call per span", what);
#endif
    // every slot outside the spans' own slots NaN: the same bits; then one slot inside span 1's: its row changes
    uint8_t* inside = callocCheck((size_t)S, 1);
    for (int i = 0; i < N_SPANS; i++) { memset(inside + spans[i].base, 1, (size_t)(pasts[i] + rows[i])); }
    for (int h = 0; h < NKV; h++) {
        for (int p = 0; p < S; p++) {
            if (inside[p]) { continue; }
            for (int e = 0; e < HS; e++) { keys[((size_t)h * S + p) * HS + e] = values[((size_t)h * S + p) * HS + e] = NAN; }
        }
    }
    attention_forward_spans_fast(got, q, keys, values, mask, spans, N_SPANS, NH, NKV, HS, layout);
    check(bits_equal(got, expected, q_size), "%s: a span read a slot outside its own (NaN there reached an output)", what);
    values[(size_t)(spans[1].base + 5) * HS] = NAN;   // key/value head 0, a slot span 1 sees
    attention_forward_spans_fast(got, q, keys, values, mask, spans, N_SPANS, NH, NKV, HS, layout);
    check(isnan(got[(size_t)spans[1].row * NH * HS]) && bits_equal(got, expected, (size_t)spans[1].row * NH * HS),
          "negative control (%s): a NaN in span 1's own slots reaches its row and no earlier one", what);
    free(inside); free(got); free(expected); free(mask); free(values); free(keys); free(q);
}

static void test_attention_spans(void) {
    const int heads[][3] = {{9, 3, 64}, {4, 4, 12}, {8, 1, 16}, {6, 2, 7}, {4, 2, 128}};   // NH, NKV, HS
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
        test_attention_spans_case(heads[h][0], heads[h][1], heads[h][2]);
    }
}

// attention_backward_fast against attention_backward_cpu, bit for bit (the same sums in the same order, its
// products grouped into tiles): every gradient accumulates into what is there; some calls without dq or
// without the key/value gradients (the trainer asks for all three); with `poison`, the last slot is seen by
// no row and its key and value are NaN (a skipped term must not be computed: 0 x NaN would reach the sums)
static void test_attention_backward_case(MaskKind kind, int T, int P, int NH, int NKV, int HS, int with_dq, int with_kv,
                                         int poison) {
    size_t q_size = (size_t)T * NH * HS, kv_size = (size_t)P * NKV * HS;
    float* q = mallocCheck(q_size * sizeof(float));
    float* dout = mallocCheck(q_size * sizeof(float));
    float* keys = mallocCheck(kv_size * sizeof(float));
    float* values = mallocCheck(kv_size * sizeof(float));
    uint8_t* mask = mallocCheck((size_t)T * P);
    fill_uniform(q, q_size, &rng_state, -1, 1);
    fill_uniform(dout, q_size, &rng_state, -1, 1);
    fill_uniform(keys, kv_size, &rng_state, -1, 1);
    fill_uniform(values, kv_size, &rng_state, -1, 1);
    make_mask(mask, kind, T, P);
    if (poison) {
        for (int t = 0; t < T; t++) { mask[(size_t)t * P + P - 1] = 0; }
        for (int i = 0; i < NKV * HS; i++) { keys[(size_t)(P - 1) * NKV * HS + i] = values[(size_t)(P - 1) * NKV * HS + i] = NAN; }
    }
    float* grads[2][3];   // [reference, fast][dq, dkeys, dvalues]
    size_t sizes[3] = {q_size, kv_size, kv_size};
    for (int k = 0; k < 2; k++) {
        for (int g = 0; g < 3; g++) {
            grads[k][g] = mallocCheck(sizes[g] * sizeof(float));
            for (size_t i = 0; i < sizes[g]; i++) { grads[k][g][i] = 0.125f * (float)((i + g) % 5); }
        }
    }
    attention_backward_cpu(with_dq ? grads[0][0] : NULL, with_kv ? grads[0][1] : NULL, with_kv ? grads[0][2] : NULL,
                           dout, q, keys, values, mask, T, P, NH, NKV, HS);
    attention_backward_fast(with_dq ? grads[1][0] : NULL, with_kv ? grads[1][1] : NULL, with_kv ? grads[1][2] : NULL,
                            dout, q, keys, values, mask, T, P, NH, NKV, HS);
    const char* kinds[] = {"causal", "tree", "random"};
    const char* names[] = {"dq", "dkeys", "dvalues"};
    for (int g = 0; g < 3; g++) {
        check(memcmp(grads[1][g], grads[0][g], sizes[g] * sizeof(float)) == 0,
              "attention_backward_fast [%s] %s %s T=%d P=%d NH=%d NKV=%d HS=%d%s: not attention_backward_cpu's bits "
              "(largest difference %g)", fast_isa_name(fast_isa), names[g], kinds[kind], T, P, NH, NKV, HS,
              poison ? ", NaN in a slot no row sees" : "", max_abs_difference(grads[1][g], grads[0][g], sizes[g]));
    }
    for (int k = 0; k < 2; k++) { for (int g = 0; g < 3; g++) { free(grads[k][g]); } }
    free(mask); free(values); free(keys); free(dout); free(q);
}

static void test_attention_backward_all(void) {
    const int heads[][3] = {{9, 3, 64}, {4, 4, 12}, {6, 2, 7}, {2, 1, 20}};   // NH, NKV, HS
    // T, P (P >= T): single rows and slots, blocks of 16 rows and slots cut at odd places, and a trainer-like
    // key buffer of two TTT blocks
    const int shapes[][2] = {{1, 1}, {3, 37}, {17, 200}, {33, 41}, {40, 80}};
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            for (int kind = 0; kind < 3; kind++) {
                test_attention_backward_case((MaskKind)kind, shapes[s][0], shapes[s][1], heads[h][0], heads[h][1],
                                             heads[h][2], 1, 1, 0);
            }
        }
    }
    test_attention_backward_case(MASK_CAUSAL, 7, 20, 9, 3, 64, 0, 1, 0);
    test_attention_backward_case(MASK_TREE, 7, 20, 9, 3, 64, 1, 0, 0);
    test_attention_backward_case(MASK_RANDOM, 33, 41, 9, 3, 64, 1, 1, 1);
    test_attention_backward_case(MASK_TREE, 17, 50, 4, 4, 12, 1, 1, 1);
}

static void test_attention_all(void) {
    // (AVX-512 runs head sizes 16 to 128 in steps of 16 with its own register shapes per size: 16, 32, 48,
    // 64, 80 and 128 here; 12 and 7 take the portable passes)
    const int heads[][3] = {{9, 3, 64}, {4, 4, 12}, {8, 1, 16}, {6, 2, 7}, {4, 2, 32}, {3, 1, 48}, {2, 1, 80},
                            {4, 2, 128}};   // NH, NKV, HS
    const int shapes[][2] = {{1, 1}, {1, 37}, {1, 300}, {3, 37}, {6, 310}, {7, 130}, {16, 16}, {17, 200}, {33, 41}};   // T, P (P >= T)
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            for (int kind = 0; kind < 3; kind++) {
                test_attention_case((MaskKind)kind, shapes[s][0], shapes[s][1], heads[h][0], heads[h][1], heads[h][2]);
            }
        }
    }
    // a pass of 100 rows of a multi-query model with 32 query heads: on two threads it makes few items, cut
    // into chunks of 50 rows, 1,600 queries an item (the per-thread maxima and sums once held 1,024, on the
    // stack: ASan's stack-buffer-overflow, a segfault without it)
    for (int kind = 0; kind < 3; kind++) { test_attention_case((MaskKind)kind, 100, 100, 32, 1, 64); }
}

// ----------------------------------------------------------------------------
// quantize_rows_fast: quantize_row's bytes exactly, for every quantised type, on hard blocks (zeros, ties of
// x * inverse at .5, tiny and huge values, zeros of both signs, an infinity and a NaN, which go to quantize_row
// itself)

static void test_quantize_rows(void) {
    const int rows = 37, cols = 96;
    float* x = mallocCheck((size_t)rows * cols * sizeof(float));
    fill_uniform(x, (size_t)rows * cols, &rng_state, -1, 1);
    for (int j = 0; j < 32; j++) {
        x[32 + j] = 0.0f;                            // row 0, block 1: all zero
        x[cols + j] = (float)(j - 16) * 127.0f / 16.0f / 2.0f;   // row 1, block 0: many exact halves
        x[2 * cols + j] = 1e-30f * (float)(j + 1);   // row 2, block 0: tiny (a subnormal fp16 scale, or zero)
        x[3 * cols + j] = 6e4f * (j % 2 ? 1.0f : -1.0f);   // row 3, block 0: near fp16's largest scale
    }
    for (int j = 0; j < 32; j++) {   // row 6, block 0: zeros of both signs beside positive values (a block's
        x[6 * cols + j] = j % 3 == 0 ? 0.0f : j % 3 == 1 ? -0.0f : 0.25f * (float)j;   // min or max a zero)
        x[7 * cols + j] = 100.0f + (float)j / 64.0f;   // row 7, block 0: a narrow range far from zero
    }
    x[4 * cols + 5] = INFINITY;
    x[5 * cols + 40] = NAN;
    const int types[] = {TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1, TYPE_F16, TYPE_BF16};
    for (int k = 0; k < 5; k++) {
        size_t row_bytes = tensor_bytes(types[k], cols);
        uint8_t* expected = mallocCheck((size_t)rows * row_bytes);
        uint8_t* got = mallocCheck((size_t)rows * row_bytes);
        for (int r = 0; r < rows; r++) { quantize_row(types[k], x + (size_t)r * cols, expected + (size_t)r * row_bytes, cols); }
        memset(got, 0xAB, (size_t)rows * row_bytes);
        quantize_rows_fast(types[k], x, got, rows, cols);
        check(memcmp(got, expected, (size_t)rows * row_bytes) == 0, "quantize_rows_fast [%s] %s differs from quantize_row",
              fast_isa_name(fast_isa), tensor_type_name(types[k]));
        free(expected); free(got);
    }
    free(x);
}

// ----------------------------------------------------------------------------
// The optimiser's passes: adamw_update_fast is adamw_update_cpu bit for bit (sizes around its chunk, one
// thread and two, several steps so the moments and bias corrections move, zero and huge gradients);
// sum_squares_fast is sum_squares_cpu within double rounding and the same bits on one thread and two

static void test_optimiser_passes(void) {
    const size_t sizes[] = {1, 7, 16383, 16384, 16385, 100003};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t N = sizes[k];
        float* grads = mallocCheck(N * sizeof(float));
        float *params[3], *m[3], *v[3];   // the reference, the fast op on all threads, the fast op on one
        fill_uniform(grads, N, &rng_state, -2, 2);
        grads[0] = 0.0f;
        if (N > 5) { grads[5] = 3e4f; }
        for (int c = 0; c < 3; c++) {
            params[c] = mallocCheck(N * sizeof(float)); m[c] = mallocCheck(N * sizeof(float)); v[c] = mallocCheck(N * sizeof(float));
        }
        fill_uniform(params[0], N, &rng_state, -1, 1);
        fill_uniform(m[0], N, &rng_state, -0.1f, 0.1f);
        fill_uniform(v[0], N, &rng_state, 0, 0.01f);
        for (int c = 1; c < 3; c++) {
            memcpy(params[c], params[0], N * sizeof(float)); memcpy(m[c], m[0], N * sizeof(float)); memcpy(v[c], v[0], N * sizeof(float));
        }
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_max_threads();
#endif
        for (int step = 1; step <= 3; step++) {
            float clip = step == 2 ? 0.37f : 1.0f;   // a clipping factor on one step
            adamw_update_cpu(params[0], grads, clip, m[0], v[0], N, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.01f, step);
            adamw_update_fast(params[1], grads, clip, m[1], v[1], N, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.01f, step);
#ifdef _OPENMP
            omp_set_num_threads(1);
#endif
            adamw_update_fast(params[2], grads, clip, m[2], v[2], N, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.01f, step);
#ifdef _OPENMP
            omp_set_num_threads(threads);
#endif
        }
        for (int c = 1; c < 3; c++) {
            check(bits_equal(params[c], params[0], N) && bits_equal(m[c], m[0], N) && bits_equal(v[c], v[0], N),
                  "adamw_update_fast [%s] (%s) N=%zu differs from adamw_update_cpu after 3 steps", fast_isa_name(fast_isa),
                  c == 1 ? "all threads" : "one thread", N);
        }
        double expected = sum_squares_cpu(grads, N), got = sum_squares_fast(grads, N);
#ifdef _OPENMP
        omp_set_num_threads(1);
#endif
        double got_one = sum_squares_fast(grads, N);
#ifdef _OPENMP
        omp_set_num_threads(threads);
#endif
        check(fabs(got - expected) <= 1e-12 * expected, "sum_squares_fast N=%zu: %.17g against sum_squares_cpu's %.17g", N, got, expected);
        check(got == got_one, "sum_squares_fast N=%zu: %.17g on %d threads, %.17g on one", N, got, threads, got_one);
        for (int c = 0; c < 3; c++) { free(params[c]); free(m[c]); free(v[c]); }
        free(grads);
    }
    // negative control: the comparison sees one element's last bit
    float a[2] = {1.0f, 2.0f}, b[2] = {1.0f, nextafterf(2.0f, 3.0f)};
    check(!bits_equal(a, b, 2), "negative control: bits_equal must see a one-ulp difference");
}

// ----------------------------------------------------------------------------
// matmul_backward_fast: matmul_backward_cpu's gradients (both accumulate into what is there): bit for bit on
// the portable path, within fused multiply-add rounding on AVX2 and AVX-512 (the same bits on both); two
// threads as one, bit for bit, on sizes around the portable tile's 16 rows and 256 columns, the AVX-512
// block's 128 rows and 64 columns, the AVX2 block's 120 rows (tiles of 6) and 16 columns, and chunks of 128
// k; T = 0 (every sum zero); one thread and two; with an infinity in dout

// The portable tiles: the reference's bits. AVX2 and AVX-512: the same order with fused multiply-adds,
// within "fma_sum" of the reference per term summed (K terms of |a * b| <= 1).
static void check_backward(const char* what, const float* got, const float* expected, size_t n, int K) {
    if (fast_isa < FAST_ISA_AVX2) {
        check(memcmp(got, expected, n * sizeof(float)) == 0, "%s differs from matmul_backward_cpu", what);
        return;
    }
    Tolerance tolerance = fast_tolerance("fma_sum");
    tolerance.atol *= (float)(K > 0 ? K : 1);
    check_tensor(what, got, expected, n, tolerance);
    double error = max_abs_difference(got, expected, n) / (K > 0 ? K : 1);
    if (error > worst_backward_error_per_term) { worst_backward_error_per_term = error; }
}

// The AVX2 and AVX-512 backward blocks promise the same bits (each sum over k in order with fused
// multiply-adds): checked where the CPU has both.
static void test_matmul_backward_levels_agree(void) {
    if (fast_isa_best() < FAST_ISA_AVX512) { printf("matmul backward: no AVX-512 here, AVX2 against AVX-512 not checked\n"); return; }
    const int T = 133, C = 70, OC = 261;
    float* inp = mallocCheck((size_t)T * C * sizeof(float));
    float* weight = mallocCheck((size_t)OC * C * sizeof(float));
    float* dout = mallocCheck((size_t)T * OC * sizeof(float));
    fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
    fill_uniform(weight, (size_t)OC * C, &rng_state, -1, 1);
    fill_uniform(dout, (size_t)T * OC, &rng_state, -1, 1);
    float* grads[2][2];
    int saved = fast_isa;
    for (int k = 0; k < 2; k++) {
        grads[k][0] = calloc((size_t)T * C, sizeof(float));
        grads[k][1] = calloc((size_t)OC * C, sizeof(float));
        fast_isa = k == 0 ? FAST_ISA_AVX2 : FAST_ISA_AVX512;
        matmul_backward_fast(grads[k][0], grads[k][1], dout, inp, weight, T, C, OC);
    }
    fast_isa = saved;
    check(memcmp(grads[0][0], grads[1][0], (size_t)T * C * sizeof(float)) == 0 &&
          memcmp(grads[0][1], grads[1][1], (size_t)OC * C * sizeof(float)) == 0,
          "matmul_backward_fast: the AVX2 and AVX-512 blocks differ");
    for (int k = 0; k < 2; k++) { free(grads[k][0]); free(grads[k][1]); }
    free(inp); free(weight); free(dout);
}

static void test_matmul_backward(void) {
    const int shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {16, 256, 16}, {17, 257, 33}, {40, 576, 9}, {5, 300, 513},
                             {0, 5, 3}, {133, 70, 261}};   // T, C, OC (the last: across the AVX-512 blocks and k chunks)
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        int T = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        size_t n_inp = (size_t)T * C, n_weight = (size_t)OC * C, n_out = (size_t)T * OC;
        float* inp = mallocCheck(n_inp * sizeof(float));
        float* weight = mallocCheck(n_weight * sizeof(float));
        float* dout = mallocCheck(n_out * sizeof(float));
        float* grads[2][2];   // [reference, fast][dinp, dweight]
        fill_uniform(inp, n_inp, &rng_state, -1, 1);
        fill_uniform(weight, n_weight, &rng_state, -1, 1);
        fill_uniform(dout, n_out, &rng_state, -1, 1);
        if (s == 3) { dout[OC + 2] = INFINITY; }
        for (int k = 0; k < 2; k++) {
            grads[k][0] = mallocCheck(n_inp * sizeof(float));
            grads[k][1] = mallocCheck(n_weight * sizeof(float));
            for (size_t i = 0; i < n_inp; i++) { grads[k][0][i] = 0.25f * (float)(i % 7); }   // accumulates
            for (size_t i = 0; i < n_weight; i++) { grads[k][1][i] = -0.5f * (float)(i % 5); }
        }
        matmul_backward_cpu(grads[0][0], grads[0][1], dout, inp, weight, T, C, OC);
        float* one_thread = mallocCheck((n_inp + n_weight + 1) * sizeof(float));   // one thread's dinp, dweight
        for (int threads = 1; threads <= 2; threads++) {
#ifdef _OPENMP
            int saved = omp_get_max_threads();
            omp_set_num_threads(threads);
#endif
            float* dinp = mallocCheck(n_inp * sizeof(float));
            float* dweight = mallocCheck(n_weight * sizeof(float));
            memcpy(dinp, grads[1][0], n_inp * sizeof(float));
            memcpy(dweight, grads[1][1], n_weight * sizeof(float));
            matmul_backward_fast(dinp, dweight, dout, inp, weight, T, C, OC);
            char what[128];
            snprintf(what, sizeof(what), "matmul_backward_fast [%s] dinp T=%d C=%d OC=%d, %d thread(s)", fast_isa_name(fast_isa), T, C, OC, threads);
            check_backward(what, dinp, grads[0][0], n_inp, T == 0 ? 0 : OC);
            snprintf(what, sizeof(what), "matmul_backward_fast [%s] dweight T=%d C=%d OC=%d, %d thread(s)", fast_isa_name(fast_isa), T, C, OC, threads);
            check_backward(what, dweight, grads[0][1], n_weight, T);
            if (threads == 1) {   // the reference for the two-thread run: bit for bit
                memcpy(one_thread, dinp, n_inp * sizeof(float));
                memcpy(one_thread + n_inp, dweight, n_weight * sizeof(float));
            } else {
                check(memcmp(dinp, one_thread, n_inp * sizeof(float)) == 0 &&
                      memcmp(dweight, one_thread + n_inp, n_weight * sizeof(float)) == 0,
                      "matmul_backward_fast [%s] T=%d C=%d OC=%d: two threads differ from one", fast_isa_name(fast_isa), T, C, OC);
            }
            free(dinp); free(dweight);
#ifdef _OPENMP
            omp_set_num_threads(saved);
#endif
        }
        free(one_thread); free(inp); free(weight); free(dout);
        for (int k = 0; k < 2; k++) { free(grads[k][0]); free(grads[k][1]); }
    }
}

// ----------------------------------------------------------------------------
// negative control: the comparison must reject an output perturbed just past the bound, and a NaN

// stderr to /dev/null and back, around a comparison whose report of mismatches is expected (a negative control)
static int stderr_silence(void) {
    fflush(stderr);
    int saved = dup(2), null_fd = open("/dev/null", O_WRONLY);
    if (null_fd >= 0) { dup2(null_fd, 2); close(null_fd); }
    return saved;
}
static void stderr_restore(int saved) {
    fflush(stderr);
    if (saved >= 0) { dup2(saved, 2); close(saved); }
}

static void test_negative_control(void) {
    const int T = 3, C = 64, OC = 9;
    float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
    void* stored = make_weight(TYPE_Q4_1, OC, C, dequantised);
    Matrix weight = {stored, TYPE_Q4_1};
    float inp[3 * 64], expected[3 * 9], got[3 * 9];
    fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
    matmul_forward_cpu(expected, inp, matrix_f32(dequantised), T, C, OC);
    int saved_isa = fast_isa;
    fast_isa = FAST_ISA_PORTABLE;   // fp32 activations: the output must pass the reorder bound unperturbed
    matmul_forward_fast(got, inp, weight, T, C, OC);
    fast_isa = saved_isa;
    Tolerance tol = fast_tolerance("matmul_reorder");
    check_tensor("negative control, unperturbed", got, expected, (size_t)T * OC, tol);
    int perturbations = 2, rejected = 0;
    int saved_stderr = stderr_silence();   // the comparison's report of these mismatches is expected
    for (int k = 0; k < perturbations; k++) {
        float saved = got[4];
        got[4] = k == 0 ? expected[4] + 2.0f * (tol.atol + tol.rtol * fabsf(expected[4])) : NAN;
        int passed_before = tests_passed, failed_before = tests_failed;
        int accepted = check_tensor("negative control", got, expected, (size_t)T * OC, tol);
        tests_passed = passed_before; tests_failed = failed_before;
        rejected += !accepted;
        got[4] = saved;
    }
    stderr_restore(saved_stderr);
    printf("negative control: the comparison rejected %d of %d perturbed outputs (one past the bound, one NaN)\n",
           rejected, perturbations);
    check(rejected == perturbations, "the comparison accepted %d of %d perturbed outputs", perturbations - rejected, perturbations);
    free(stored); free(dequantised);
}

// ----------------------------------------------------------------------------
// a real model file: (1) every weight matrix with inputs in [-1, 1], T = 1 and 7 (the first 256 rows of
// the large ones); (2) real activations: a reference forward pass over a prompt leaves the last layer's
// inputs in the activation buffers (the FFN-normed residual stream for q, k, v, gate and up, the
// attention output for the output projection, the SwiGLU output for down, the final hidden state for the
// LM head); each meets its matrix of the last layer on the current path. The int8 path's error relative
// to the output's RMS and the head's argmax agreement are printed and bounded (MODEL_BOUNDS).

static void test_model_weights(const GGUFFile* gguf) {
    int n_checked = 0;
    for (uint64_t i = 0; i < gguf->n_tensors; i++) {
        const GGUFTensor* tensor = &gguf->tensors[i];
        if (tensor->n_dims != 2 || !tensor_type_supported(tensor->type)) { continue; }
        int C = (int)tensor->shape[0], rows = (int)tensor->shape[1];
        int OC = rows < 256 ? rows : 256;
        float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
        dequantize_row(tensor->type, tensor->data, dequantised, (int64_t)OC * C);
        for (int form = 0; form < 2; form++) {
            Matrix weight;
            void* owned;
            if (!weight_form(&weight, tensor->data, tensor->type, OC, C, form, &owned)) { continue; }
            for (int T = 1; T <= 7; T += 6) {
                float* inp = mallocCheck((size_t)T * C * sizeof(float));
                float* got = mallocCheck((size_t)T * OC * sizeof(float));
                fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
                matmul_forward_fast(got, inp, weight, T, C, OC);
                char what[200];
                snprintf(what, sizeof(what), "%s (%s%s, %d x %d) [%s] T=%d", tensor->name, tensor_type_name(tensor->type),
                         form ? " packed" : "", rows, C, fast_isa_name(fast_isa), T);
                check_matmul(what, weight.type, got, inp, dequantised, T, C, OC);
                free(got); free(inp);
            }
            free(owned);
        }
        free(dequantised);
        n_checked++;
    }
    printf("  %d weight matrices checked with inputs in [-1, 1]\n", n_checked);
    check(n_checked > 0, "no weight matrix found");
}

static int argmax_of(const float* x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) { if (x[i] > x[best]) { best = i; } }
    return best;
}

static void test_model_activations(Target* target, const int* tokens, int n_tokens) {
    TargetConfig* c = &target->config;
    int positions[256];
    for (int t = 0; t < n_tokens; t++) { positions[t] = t; }
    target_forward(target, tokens, positions, NULL, n_tokens, 0, 1);   // the reference path
    TargetActivations* a = &target->act;
    int last = c->n_layers - 1, T = n_tokens;
    struct { const char* tensor; const float* inp; } cases[] = {
        {"attn_q", a->x_norm}, {"attn_k", a->x_norm}, {"attn_v", a->x_norm}, {"attn_output", a->attn_out},
        {"ffn_gate", a->x_norm}, {"ffn_up", a->x_norm}, {"ffn_down", a->ffn_gate}, {"token_embd", a->hidden},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char name[96];
        if (strcmp(cases[k].tensor, "token_embd") == 0) { snprintf(name, sizeof(name), "token_embd.weight"); }
        else { snprintf(name, sizeof(name), "blk.%d.%s.weight", last, cases[k].tensor); }
        const GGUFTensor* tensor = gguf_find_tensor(&target->file, name);
        if (!tensor) { check(0, "no tensor %s in the model", name); continue; }
        int C = (int)tensor->shape[0], OC = (int)tensor->shape[1];
        float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
        dequantize_row(tensor->type, tensor->data, dequantised, (int64_t)OC * C);
        float* expected = mallocCheck((size_t)T * OC * sizeof(float));
        float* got = mallocCheck((size_t)T * OC * sizeof(float));
        matmul_forward_cpu(expected, cases[k].inp, matrix_f32(dequantised), T, C, OC);
        for (int form = 0; form < 2; form++) {
            Matrix weight;
            void* owned;
            if (!weight_form(&weight, tensor->data, tensor->type, OC, C, form, &owned)) { continue; }
            matmul_forward_fast(got, cases[k].inp, weight, T, C, OC);
            double sum_squares = 0, sum_error_squares = 0, max_error = 0;
            for (size_t i = 0; i < (size_t)T * OC; i++) {
                double e = fabs((double)got[i] - expected[i]);
                sum_squares += (double)expected[i] * expected[i];
                sum_error_squares += e * e;
                if (e > max_error || e != e) { max_error = e; }
            }
            double rms = sqrt(sum_squares / ((double)T * OC));
            double rms_error = sqrt(sum_error_squares / ((double)T * OC)) / rms, max_relative = max_error / rms;
            char what[200];
            snprintf(what, sizeof(what), "%s (%s%s) on real activations [%s] T=%d", name, tensor_type_name(tensor->type),
                     form ? " packed" : "", fast_isa_name(fast_isa), T);
            if (int8_path_runs(weight.type)) {
                check(rms_error <= model_bound("int8_rms_error"), "%s: rms error %.3g of the output rms (bound %.3g)", what,
                      rms_error, model_bound("int8_rms_error"));
                check(max_relative <= model_bound("int8_max_error"), "%s: max error %.3g of the output rms (bound %.3g)",
                      what, max_relative, model_bound("int8_max_error"));
            } else {
                check_tensor(what, got, expected, (size_t)T * OC, fast_tolerance("matmul_reorder"));
            }
            printf("  %-24s %-5s%s rms(ref) %8.4f  rms error %.2e  max error %.2e (of rms(ref))", name,
                   tensor_type_name(tensor->type), form ? " packed" : "       ", rms, rms_error, max_relative);
            if (strcmp(cases[k].tensor, "token_embd") == 0) {
                int agree = 0;
                double widest_flipped_margin = 0;   // the reference's top-1 minus the fast path's pick, where they differ
                for (int t = 0; t < T; t++) {
                    const float* reference_row = expected + (size_t)t * OC;
                    int reference_pick = argmax_of(reference_row, OC), fast_pick = argmax_of(got + (size_t)t * OC, OC);
                    agree += reference_pick == fast_pick;
                    double margin = reference_row[reference_pick] - reference_row[fast_pick];
                    if (margin > widest_flipped_margin) { widest_flipped_margin = margin; }
                }
                double agreement = (double)agree / T;
                printf("  argmax agrees at %d of %d positions (flips within %.3f of the reference's top logit)", agree, T,
                       widest_flipped_margin);
                check(agreement >= model_bound("head_argmax_agreement"), "%s: argmax agrees at %d of %d positions", what, agree, T);
            }
            printf("\n");
            free(owned);
        }
        free(got); free(expected); free(dequantised);
    }
}

static const char* MODEL_PROMPT =
    "The history of the bicycle begins in the early nineteenth century. In 1817 Karl Drais rode a two-wheeled "
    "running machine through Mannheim; pedals came decades later, and with them chains, gears and pneumatic "
    "tyres. def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n";

static void test_model_file(const char* path) {
    Target target;
    Error err;
    if (target_load(&target, path, &backend_cpu_ref, 256, 256, &err) != 0) { check(0, "cannot load %s: %s", path, err.message); return; }
    int tokens[256];
    int n_tokens = tokenizer_encode(&target.tokenizer, MODEL_PROMPT, strlen(MODEL_PROMPT), 0, tokens, 256, &err);
    check(n_tokens > 16, "tokenizing the prompt: %s", n_tokens > 0 ? "too short" : err.message);
    int best = fast_isa_best();
    for (int isa = FAST_ISA_PORTABLE; isa <= best && n_tokens > 16; isa++) {
        fast_isa = isa;
        printf("model %s, path %s\n", path, fast_isa_name(isa));
        test_model_weights(&target.file);
        test_model_activations(&target, tokens, n_tokens);
    }
    target_free(&target);
}

// fast_expf (cpu_fast.h) against exp in double: units in the last place of the float result, over a sweep of
// [-104, 89] (every 1/4096, and 2^20 random points), where the result is normal; subnormal results within
// 2 of their spacing; the special values; and a negative control (libm's expf with its argument rounded to
// 1/64 must be caught: the sweep can fail)
static double exp_ulp_error(float got, double x) {
    double exact = exp(x);
    if (isinf(got) || exact >= 3.4028235677973366e38) {   // past FLT_MAX by half its spacing: rounds to inf
        return isinf(got) && exact >= 3.4028235677973366e38 ? 0.0 : INFINITY;
    }
    if (exact < 1.1754943508222875e-38) { return fabs(got - exact) / 1.401298464324817e-45; }   // in subnormal spacings
    int exponent;
    frexp(exact, &exponent);
    return fabs(got - exact) / ldexp(1.0, exponent - 24);
}
static double exp_sweep(float (*f)(float), double* worst_x) {
    double worst = 0;
    for (int k = 0; k < 2 * (104 + 89) * 4096; k++) {
        float x = k < (104 + 89) * 4096 ? -104.0f + (float)k / 4096.0f : test_uniform(&rng_state, -104.0f, 89.0f);
        double e = exp_ulp_error(f(x), (double)x);
        if (e > worst) { worst = e, *worst_x = x; }
    }
    return worst;
}
static float expf_coarse(float x) { return expf(roundf(x * 64.0f) / 64.0f); }
static void test_fast_exp(void) {
    double worst_x = 0, worst = exp_sweep(fast_expf, &worst_x);
    printf("fast_expf: worst %.2f ulp (at x = %.6g), bound %d\n", worst, worst_x, FAST_EXP_MAX_ULP);
    check(worst <= FAST_EXP_MAX_ULP, "fast_expf: %.2f ulp from exp at x = %.9g, expected at most %d", worst, worst_x,
          FAST_EXP_MAX_ULP);
    double control = exp_sweep(expf_coarse, &worst_x);
    check(control > FAST_EXP_MAX_ULP, "negative control: expf of x rounded to 1/64 passed the sweep (%.2f ulp)", control);
    check(fast_expf(0.0f) == 1.0f && fast_expf(-INFINITY) == 0.0f && fast_expf(-200.0f) == 0.0f &&
          isinf(fast_expf(INFINITY)) && isinf(fast_expf(100.0f)) && isnan(fast_expf(NAN)),
          "fast_expf: exp(0) = 1, exp(-inf) = exp(-200) = 0, exp(inf) = exp(100) = inf, exp(NaN) = NaN");
}

// SwiGLU: the portable expression with fast_expf bit for bit at every CPU level, on one thread and in
// parallel (N from 7 to past the parallel threshold), and the reference's within "reorder"
static void test_swiglu(void) {
    const int sizes[] = {7, 1536, 9216, 20001};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        int N = sizes[k];
        float* gate = mallocCheck((size_t)N * sizeof(float));
        float* up = mallocCheck((size_t)N * sizeof(float));
        float* expected = mallocCheck((size_t)N * sizeof(float));
        float* reference = mallocCheck((size_t)N * sizeof(float));
        float* got = mallocCheck((size_t)N * sizeof(float));
        fill_uniform(gate, (size_t)N, &rng_state, -12, 12);
        fill_uniform(up, (size_t)N, &rng_state, -3, 3);
        if (N > 2) { gate[0] = 95.0f; gate[1] = -95.0f; }   // exp(-g) overflows, and underflows
        for (int i = 0; i < N; i++) { expected[i] = gate[i] / (1.0f + fast_expf(-gate[i])) * up[i]; }
        swiglu_forward_cpu(reference, gate, up, N);
        swiglu_forward_fast(got, gate, up, N);
        check(bits_equal(got, expected, (size_t)N), "swiglu_forward_fast N=%d (%s) differs from its expression "
              "(tolerance exact)", N, fast_isa_name(fast_isa));
        char what[96];
        snprintf(what, sizeof(what), "swiglu_forward_fast N=%d (%s) against the reference", N, fast_isa_name(fast_isa));
        check_tensor(what, got, reference, (size_t)N, fast_tolerance("reorder"));
        free(gate); free(up); free(expected); free(reference); free(got);
    }
    // the scalar tail after the vectors (N % 8 elements on AVX2), many times: compiled for an FMA target
    // with contraction on (clang's default without -ffp-contract=off), fast_expf's multiply-adds fuse there
    // and about 1 element in 14,000 differs from the same expression elsewhere
    {
        enum { CALLS = 50000, TAIL = 7 };
        float gate[TAIL], up[TAIL], out[TAIL];
        long differ = 0;
        for (int c = 0; c < CALLS; c++) {
            fill_uniform(gate, TAIL, &rng_state, -12, 12);
            fill_uniform(up, TAIL, &rng_state, -3, 3);
            swiglu_forward_fast(out, gate, up, TAIL);
            for (int i = 0; i < TAIL; i++) { differ += !bits_equal(&out[i], &(float){gate[i] / (1.0f + fast_expf(-gate[i])) * up[i]}, 1); }
        }
        check(differ == 0, "swiglu_forward_fast (%s): %ld of %d tail elements differ from the expression (contracted "
              "multiply-adds?)", fast_isa_name(fast_isa), differ, CALLS * TAIL);
    }
    // the exponential's vector twins over their whole range: gate from -110 to 110 in steps of 1/256, so
    // exp(-gate) runs through overflow, normal results, subnormal ones (where 2^n is applied in two steps)
    // and underflow; up = 1
    int N = 220 * 256 + 1;
    float* gate = mallocCheck((size_t)N * sizeof(float));
    float* up = mallocCheck((size_t)N * sizeof(float));
    float* expected = mallocCheck((size_t)N * sizeof(float));
    float* got = mallocCheck((size_t)N * sizeof(float));
    for (int i = 0; i < N; i++) {
        gate[i] = -110.0f + (float)i / 256.0f;
        up[i] = 1.0f;
        expected[i] = gate[i] / (1.0f + fast_expf(-gate[i])) * up[i];
    }
    swiglu_forward_fast(got, gate, up, N);
    check(bits_equal(got, expected, (size_t)N), "swiglu_forward_fast (%s) over gate in [-110, 110] differs from its "
          "expression (tolerance exact)", fast_isa_name(fast_isa));
    free(gate); free(up); free(expected); free(got);
}

// The trainer's teacher softmax and distribution loss (forward KL and next-token): the row functions' bits
// (cpu_fast.h) on AVX2 and AVX-512, for any T, one thread against several (rows are independent), the gradient
// added to what dlogits held, the arguments the contract lets be NULL passed NULL (the teacher for next-token,
// the tokens for the KL kinds, the weights: 1), targets at both ends of a row and at vector edges, -inf
// logits, -0.0 and exact zeros in the teacher; within "loss_fp32" of the reference; the reverse KL, and every
// kind on the portable level, the reference's own code, bit for bit; and negative controls: one gradient
// element moved by twice the bound, and the loss against the next row's teacher, must fail the comparison.
static double worst_loss_gradient_error, worst_loss_error;
static void test_loss_ops(void) {
    const struct { int T, V; } cases[] = {{3, 7}, {2, 16}, {5, 27}, {5, 33}, {4, 4096}, {40, 4096}, {3, 4109}};   // tails of 0 to 13
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int T = cases[c].T, V = cases[c].V;
        size_t n = (size_t)T * V;
        float* logits = mallocCheck(n * sizeof(float));
        float* teacher = mallocCheck(n * sizeof(float));
        float* start = mallocCheck(n * sizeof(float));
        float* dz[3];   // the row functions, the op, the reference
        for (int k = 0; k < 3; k++) { dz[k] = mallocCheck(n * sizeof(float)); }
        float weights[40], losses[3][40];
        int tokens[40];
        fill_uniform(logits, n, &rng_state, -8, 8);
        fill_uniform(teacher, n, &rng_state, -6, 6);
        softmax_forward_cpu(teacher, teacher, T, V);
        for (size_t i = 0; i < n; i += 5) { teacher[i] = i % 10 == 0 ? 0.0f : -0.0f; }   // zeros: their terms skipped
        for (size_t i = 3; i < n; i += 11) { logits[i] = -INFINITY; }   // (q = 0 there)
        fill_uniform(start, n, &rng_state, -1e-3f, 1e-3f);
        fill_uniform(weights, (size_t)T, &rng_state, 0.2f, 1.5f);
        for (int t = 0; t < T; t++) { tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V); }
        const int edges[4] = {V - 1, 0, 15 % V, 8 % V};   // a row's ends, the last of a 16- and the first of an 8-vector
        for (int t = 0; t < T && t < 4; t++) { tokens[t] = edges[t]; logits[(size_t)t * V + (size_t)edges[t]] = 1.0f; }
        char what[160];
        for (int pass = 0; pass < 4; pass++) {   // forward KL, reverse KL, next token; then next token, weights NULL
            int kind = pass < 3 ? pass : LOSS_NEXT_TOKEN;
            const float* p_target = kind == LOSS_NEXT_TOKEN ? NULL : teacher;
            const int* targets = kind == LOSS_NEXT_TOKEN ? tokens : NULL;
            const float* row_weights = pass == 3 ? NULL : weights;
            const char* name = pass == 3 ? "next token, no weights" : kind == LOSS_FORWARD_KL ? "forward KL"
                             : kind == LOSS_REVERSE_KL ? "reverse KL" : "next token";
            for (int k = 0; k < 3; k++) { memcpy(dz[k], start, n * sizeof(float)); }
            distribution_loss_fast(losses[1], dz[1], logits, p_target, targets, row_weights, T, V, (LossKind)kind);
            distribution_loss_cpu(losses[2], dz[2], logits, p_target, targets, row_weights, T, V, (LossKind)kind);
            snprintf(what, sizeof(what), "distribution_loss_fast [%s] %s T=%d V=%d", fast_isa_name(fast_isa), name, T, V);
            if (kind == LOSS_REVERSE_KL || fast_isa < FAST_ISA_AVX2) {
                check(bits_equal(losses[1], losses[2], (size_t)T) && bits_equal(dz[1], dz[2], n),
                      "%s: not the reference's bits (tolerance exact)", what);
                continue;
            }
            for (int t = 0; t < T; t++) {
                losses[0][t] = fast_loss_row(dz[0] + (size_t)t * V, logits + (size_t)t * V,
                                             kind == LOSS_FORWARD_KL ? teacher + (size_t)t * V : NULL, tokens[t], V,
                                             row_weights ? row_weights[t] : 1.0f);
            }
            check(bits_equal(losses[1], losses[0], (size_t)T) && bits_equal(dz[1], dz[0], n),
                  "%s: not the row functions' bits (tolerance exact)", what);
            check_tensor(what, losses[1], losses[2], (size_t)T, fast_tolerance("loss_fp32"));
            check_tensor(what, dz[1], dz[2], n, fast_tolerance("loss_fp32"));
            for (size_t i = 0; i < n; i++) { worst_loss_gradient_error = fmax(worst_loss_gradient_error, fabs((double)dz[1][i] - dz[2][i])); }
            for (int t = 0; t < T; t++) { worst_loss_error = fmax(worst_loss_error, fabs((double)losses[1][t] - losses[2][t])); }
            float alone[40];   // no gradient asked: the same losses
            distribution_loss_fast(alone, NULL, logits, p_target, targets, row_weights, T, V, (LossKind)kind);
            check(bits_equal(alone, losses[1], (size_t)T), "%s: the losses without a gradient differ (tolerance exact)", what);
#ifdef _OPENMP
            int threads = omp_get_max_threads();
            memcpy(dz[0], start, n * sizeof(float));
            omp_set_num_threads(1);
            distribution_loss_fast(alone, dz[0], logits, p_target, targets, row_weights, T, V, (LossKind)kind);
            omp_set_num_threads(threads);
            check(bits_equal(alone, losses[1], (size_t)T) && bits_equal(dz[0], dz[1], n),
                  "%s: one thread differs from %d (tolerance exact)", what, threads);
#endif
            if (kind == LOSS_FORWARD_KL && T > 1) {   // the negative controls
                Tolerance tol = fast_tolerance("loss_fp32");
                int saved_stderr = stderr_silence();
                memcpy(dz[0], dz[1], n * sizeof(float));   // one element past the bound
                dz[0][1] = dz[2][1] + 2.0f * (tol.atol + tol.rtol * fabsf(dz[2][1]));
                size_t moved = compare_elements("negative control", ELEMENT_F32, dz[0], dz[2], n, tol);
                memcpy(dz[0], start, n * sizeof(float));   // another row's teacher
                distribution_loss_fast(alone, dz[0], logits, teacher + V, NULL, weights, T - 1, V, (LossKind)kind);
                size_t shifted = compare_elements("negative control", ELEMENT_F32, dz[0], dz[2], (size_t)(T - 1) * V, tol);
                stderr_restore(saved_stderr);
                check(moved == 1 && shifted > 0, "%s: the comparison passed a perturbed gradient (%zu of 1 moved element, %zu "
                      "against shifted teacher rows)", what, moved, shifted);
            }
        }
        // the teacher's softmax
        softmax_forward_fast(dz[1], logits, T, V);
        for (int t = 0; t < T; t++) { fast_softmax_row(dz[0] + (size_t)t * V, logits + (size_t)t * V, V); }
        softmax_forward_cpu(dz[2], logits, T, V);
        snprintf(what, sizeof(what), "softmax_forward_fast [%s] T=%d V=%d", fast_isa_name(fast_isa), T, V);
        check(bits_equal(dz[1], fast_isa < FAST_ISA_AVX2 ? dz[2] : dz[0], n), "%s: not the %s bits (tolerance exact)", what,
              fast_isa < FAST_ISA_AVX2 ? "reference's" : "row function's");
        check_tensor(what, dz[1], dz[2], n, fast_tolerance("loss_fp32"));
        memcpy(dz[0], logits, n * sizeof(float));
        softmax_forward_fast(dz[0], dz[0], T, V);   // in place, as the trainer calls it
        check(bits_equal(dz[0], dz[1], n), "%s: in place differs (tolerance exact)", what);
        free(logits); free(teacher); free(start);
        for (int k = 0; k < 3; k++) { free(dz[k]); }
    }
}

// RoPE: the reference's bits, in place and not, through runs of calls at the same positions (the kept
// angles), other positions, head sizes and theta (each must recompute them), and more rows than are kept
static void test_rope(void) {
    struct { int T, n_heads, HS; float theta; int first; } cases[] = {
        {6, 9, 64, 10000.0f, 128}, {6, 3, 64, 10000.0f, 128}, {6, 9, 64, 10000.0f, 129}, {6, 9, 64, 100000.0f, 129},
        {5, 9, 64, 100000.0f, 129}, {1, 9, 64, 10000.0f, 4000}, {3, 2, 32, 10000.0f, 7}, {100, 3, 64, 10000.0f, 0},
        {6, 9, 64, 10000.0f, 128},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int T = cases[k].T, D = cases[k].n_heads * cases[k].HS;
        int positions[100];
        for (int t = 0; t < T; t++) { positions[t] = cases[k].first + (t * 7) % (T + 3); }   // not in order, as a tree's
        float* inp = mallocCheck((size_t)T * D * sizeof(float));
        float* expected = mallocCheck((size_t)T * D * sizeof(float));
        float* got = mallocCheck((size_t)T * D * sizeof(float));
        fill_uniform(inp, (size_t)T * D, &rng_state, -3, 3);
        rope_forward_cpu(expected, inp, positions, T, cases[k].n_heads, cases[k].HS, cases[k].theta);
        for (int call = 0; call < 2; call++) {
            rope_forward_fast(got, inp, positions, T, cases[k].n_heads, cases[k].HS, cases[k].theta);
            check(bits_equal(got, expected, (size_t)T * D), "rope_forward_fast case %zu call %d differs from the reference "
                  "(tolerance exact)", k, call);
        }
        memcpy(got, inp, (size_t)T * D * sizeof(float));
        rope_forward_fast(got, got, positions, T, cases[k].n_heads, cases[k].HS, cases[k].theta);
        check(bits_equal(got, expected, (size_t)T * D), "rope_forward_fast in place, case %zu, differs from the reference", k);
        free(inp); free(expected); free(got);
    }
}

// RMSNorm: the reference's bits, one row, small batches (blocks of rows, a partial block) and batches past
// the parallel threshold; out of place and in place
static void test_rmsnorm(void) {
    const int shapes[][2] = {{1, 576}, {2, 7}, {6, 576}, {8, 64}, {13, 576}, {16, 576}, {33, 100}, {71, 576}};   // T, C (from 16 rows: in parallel)
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        int T = shapes[k][0], C = shapes[k][1];
        float* inp = mallocCheck((size_t)T * C * sizeof(float));
        float* weight = mallocCheck((size_t)C * sizeof(float));
        float* expected = mallocCheck((size_t)T * C * sizeof(float));
        float* got = mallocCheck((size_t)T * C * sizeof(float));
        fill_uniform(inp, (size_t)T * C, &rng_state, -30, 30);
        fill_uniform(weight, (size_t)C, &rng_state, -2, 2);
        rmsnorm_forward_cpu(expected, inp, weight, T, C, 1e-5f);
        rmsnorm_forward_fast(got, inp, weight, T, C, 1e-5f);
        check(bits_equal(got, expected, (size_t)T * C), "rmsnorm_forward_fast T=%d C=%d differs from the reference", T, C);
        memcpy(got, inp, (size_t)T * C * sizeof(float));   // in place (out = inp), as the reference allows
        rmsnorm_forward_fast(got, got, weight, T, C, 1e-5f);
        check(bits_equal(got, expected, (size_t)T * C), "rmsnorm_forward_fast T=%d C=%d in place differs from the reference", T, C);
        free(inp); free(weight); free(expected); free(got);
    }
}

// ----------------------------------------------------------------------------
// bf16 products (backend_cpu_fast_bf16, --train-precision bf16): the rounding against a plain oracle (the
// nearer of the two bf16 neighbours, ties to the even one), and the three matmuls against the arithmetic
// written out (operands rounded, each output's pairs in order, the high product added first), bit for bit, on
// the portable tile and where the CPU has it the AVX-512 BF16 one; and against the fp32 reference within
// the rounding's bound.

static uint32_t bf16_oracle(float f) {
    uint32_t u = fast_float_bits(f);
    if (isnan(f)) { return (u >> 16) | 0x40u; }
    if (fpclassify(f) == FP_ZERO || fpclassify(f) == FP_SUBNORMAL) { return (u >> 16) & 0x8000u; }
    if (isinf(f)) { return u >> 16; }
    uint32_t down = u >> 16, up = down + 1;   // the neighbours toward zero and away from it (same sign)
    double x = fabs((double)f), low = fabs((double)bf16_to_fp32((uint16_t)down));
    double high = (up & 0x7f80u) == 0x7f80u ? ldexp(1.0, 128) : fabs((double)bf16_to_fp32((uint16_t)up));
    if (x - low < high - x) { return down; }
    if (x - low > high - x) { return up; }
    return (down & 1u) ? up : down;
}

static void test_bf16_rounding(void) {
    float specials[] = {0.0f, -0.0f, 1.0f, -1.0f, 1.00390625f /* a tie: 1 + 2^-8 */, 1.01171875f /* a tie, odd */,
                        FLT_MAX, -FLT_MAX, 3.3895314e38f /* rounds up to infinity */, FLT_MIN, 1e-40f, -1e-42f,
                        INFINITY, -INFINITY, NAN, -NAN, 0.1f, 3.14159265f};
    int mismatches = 0;
    for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
        mismatches += fast_bf16_round(specials[i]) != bf16_oracle(specials[i]);
    }
    uint64_t state = 7;
    for (int i = 0; i < 1000000; i++) {   // random bit patterns: every exponent, NaN payloads, subnormals
        uint32_t bits = random_u32(&state);
        float f = fast_bits_float(bits);
        uint32_t got = fast_bf16_round(f), expected = bf16_oracle(f);
        if (got != expected && mismatches++ < 5) { fprintf(stderr, "  bf16 of 0x%08x: got 0x%04x, expected 0x%04x\n", bits, got, expected); }
        // and gguf.c's conversion of the same value with its subnormals flushed (the twin it stands for)
        float flushed = fpclassify(f) == FP_SUBNORMAL ? copysignf(0.0f, f) : f;
        if (got != fp32_to_bf16(flushed) && mismatches++ < 5) { fprintf(stderr, "  bf16 of 0x%08x: 0x%04x, fp32_to_bf16 0x%04x\n", bits, got, fp32_to_bf16(flushed)); }
    }
    check(mismatches == 0, "fast_bf16_round differs from the plain rounding or from fp32_to_bf16 on %d inputs", mismatches);
}

// out (M, N) [+]= A (M, K) @ B (K, N), elements at a[m * a_m + k * a_k] and b[k * b_k + n * b_n], written
// out: each operand rounded to bf16, each output summed from zero over k = 0, 2, 4, ...: the product of the
// odd element first, then the even one (swap_order: the even first, the negative control), each partial sum
// below the normal range flushed to zero.
static void bf16_matmul_oracle(float* out, int accumulate, int M, int N, int K, const float* a, size_t a_m, size_t a_k,
                               const float* b, size_t b_k, size_t b_n, int swap_order) {
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            float sum = 0.0f;
            for (int k = 0; k < K; k += 2) {
                float p[2];
                for (int e = 0; e < 2; e++) {
                    int kk = k + e;
                    p[e] = kk < K ? bf16_to_fp32((uint16_t)bf16_oracle(a[(size_t)m * a_m + (size_t)kk * a_k])) *
                                    bf16_to_fp32((uint16_t)bf16_oracle(b[(size_t)kk * b_k + (size_t)n * b_n])) : 0.0f;
                }
                float first = swap_order ? p[0] : p[1], second = swap_order ? p[1] : p[0];
                sum = sum + first;   // a sum below the normal range is a zero of its sign (the instruction's FTZ)
                if (fabsf(sum) < FLT_MIN) { sum = copysignf(0.0f, sum); }
                sum = sum + second;
                if (fabsf(sum) < FLT_MIN) { sum = copysignf(0.0f, sum); }
            }
            out[(size_t)m * N + n] = accumulate ? out[(size_t)m * N + n] + sum : sum;
        }
    }
}

// The AMX tile's contract (cpu_fast.h): the exact products of the same bf16 operands as the portable tile,
// summed with other roundings. The portable tile rounds once a product (K of them, each at most 2^-24 of the
// sum of |terms|), the tile fewer (measured: 4-8e-8 of that sum from the exact sum, against the portable
// tile's 1.2-1.3e-7), so the two are within (K + 2) * 2^-24 * sum |terms| of each other, plus an ulp of the
// result (an accumulating add rounds the two sums to neighbours where they straddle a rounding boundary) and
// 2^-120 for sums flushed below the normal range. NaN where NaN, the same infinities. abs_sum: the oracle's
// sums over |a| and |b|. Returns how many elements are outside it.
static double bf16_amx_bound(int K, float abs_sum, float result) {
    return (K + 2) * 0x1p-24 * abs_sum + 0x1p-23 * fabsf(result) + 0x1p-120;
}
static int bf16_amx_outside(const float* got, const float* expected, const float* abs_sum, size_t n, int K, int quiet) {
    int outside = 0;
    for (size_t j = 0; j < n; j++) {
        float x = got[j], y = expected[j];
        int ok;
        if (isnan(y) || isnan(x)) { ok = isnan(x) && isnan(y); }
        else if (isinf(x) || isinf(y)) { ok = x == y; }
        else if (!isfinite(abs_sum[j])) { ok = 1; }   // (terms past fp32's range: no bound from them)
        else { ok = fabs((double)x - y) <= bf16_amx_bound(K, abs_sum[j], y); }
        if (!ok && outside++ < 3 && !quiet) {
            fprintf(stderr, "  bf16 AMX element %zu: %a, portable arithmetic %a (sum |terms| %a)\n", j, x, y, abs_sum[j]);
        }
    }
    return outside;
}

static float* abs_copy(const float* x, size_t n) {
    float* y = mallocCheck(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) { y[i] = fabsf(x[i]); }
    return y;
}

static void test_bf16_matmuls(void) {
    const int shapes[][3] = {{1, 1, 1}, {3, 7, 5}, {12, 32, 64}, {13, 33, 65}, {0, 5, 3}, {25, 576, 100}, {190, 96, 40},
                             {7, 1, 300}, {40, 600, 70}};   // T, C, OC
    int saved_amx = fast_amx_kernel, has_amx = fast_bf16_amx(), amx_checked = 0;
    int kernels = (fast_bf16_native() ? 2 : 1) + has_amx, saved_kernel = fast_bf16_kernel, swapped_differs = 0;
    for (int kernel = 0; kernel < kernels; kernel++) {
        int level = kernels - 1 - kernel;   // AMX first where there is one, then the AVX-512 BF16 tile, then portable C
        fast_amx_kernel = level == 2;
        fast_bf16_kernel = level >= 1;
        int amx = fast_bf16_amx();
        const char* name = amx ? "AMX" : fast_bf16_native() ? "AVX-512 BF16" : "portable C";
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            int T = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
            size_t n_inp = (size_t)T * C, n_weight = (size_t)OC * C, n_out = (size_t)T * OC;
            float* inp = mallocCheck(n_inp * sizeof(float) + 4);
            float* weight = mallocCheck(n_weight * sizeof(float) + 4);
            float* dout = mallocCheck(n_out * sizeof(float) + 4);
            fill_uniform(inp, n_inp, &rng_state, -2, 2);
            fill_uniform(weight, n_weight, &rng_state, -0.5, 0.5);
            fill_uniform(dout, n_out, &rng_state, -1e-3, 1e-3);
            float* got[3], *expected[3], *reference[3];
            size_t sizes[3] = {n_out, n_inp, n_weight};
            for (int i = 0; i < 3; i++) {
                got[i] = mallocCheck(sizes[i] * sizeof(float) + 4);
                expected[i] = mallocCheck(sizes[i] * sizeof(float) + 4);
                reference[i] = mallocCheck(sizes[i] * sizeof(float) + 4);
                for (size_t j = 0; j < sizes[i]; j++) { got[i][j] = expected[i][j] = reference[i][j] = i ? 0.125f * (float)(j % 5) : 0.0f; }
            }
            for (int threads = 1; threads <= 2; threads++) {
#ifdef _OPENMP
                omp_set_num_threads(threads);
#endif
                float* run[3];
                for (int i = 0; i < 3; i++) { run[i] = mallocCheck(sizes[i] * sizeof(float) + 4); memcpy(run[i], expected[i], sizes[i] * sizeof(float)); }   // (the start values, both runs)
                matmul_forward_fast_bf16(run[0], inp, matrix_f32(weight), T, C, OC);
                matmul_backward_fast_bf16(run[1], run[2], dout, inp, weight, T, C, OC);
                if (threads == 1) { for (int i = 0; i < 3; i++) { float* t = got[i]; got[i] = run[i]; run[i] = t; } }
                else {
                    for (int i = 0; i < 3; i++) {
                        check(memcmp(run[i], got[i], sizes[i] * sizeof(float)) == 0, "bf16 matmuls [%s] T=%d C=%d OC=%d: two threads differ from one (output %d)", name, T, C, OC, i);
                    }
                }
                for (int i = 0; i < 3; i++) { free(run[i]); }
            }
#ifdef _OPENMP
            omp_set_num_threads(2);
#endif
            bf16_matmul_oracle(expected[0], 0, T, OC, C, inp, (size_t)C, 1, weight, 1, (size_t)C, 0);
            bf16_matmul_oracle(expected[1], 1, T, C, OC, dout, (size_t)OC, 1, weight, (size_t)C, 1, 0);
            bf16_matmul_oracle(expected[2], 1, OC, C, T, dout, 1, (size_t)OC, inp, (size_t)C, 1, 0);
            const char* what[3] = {"forward", "backward dinp", "backward dweight"};
            if (amx) {   // within the bound of the arithmetic written out (and outside it, a perturbed element)
                float *abs_inp = abs_copy(inp, n_inp), *abs_weight = abs_copy(weight, n_weight), *abs_dout = abs_copy(dout, n_out);
                float* abs_sum[3];
                for (int i = 0; i < 3; i++) { abs_sum[i] = mallocCheck(sizes[i] * sizeof(float) + 4); }
                bf16_matmul_oracle(abs_sum[0], 0, T, OC, C, abs_inp, (size_t)C, 1, abs_weight, 1, (size_t)C, 0);
                bf16_matmul_oracle(abs_sum[1], 0, T, C, OC, abs_dout, (size_t)OC, 1, abs_weight, (size_t)C, 1, 0);
                bf16_matmul_oracle(abs_sum[2], 0, OC, C, T, abs_dout, 1, (size_t)OC, abs_inp, (size_t)C, 1, 0);
                int Ks[3] = {C, OC, T};
                for (int i = 0; i < 3; i++) {
                    check(bf16_amx_outside(got[i], expected[i], abs_sum[i], sizes[i], Ks[i], 0) == 0, "bf16 %s [AMX] T=%d C=%d OC=%d: "
                          "outside its bound of the arithmetic written out", what[i], T, C, OC);
                    if (sizes[i] == 0 || abs_sum[i][0] == 0.0f) { continue; }
                    float saved = got[i][0];   // the negative control: an element moved by twice its bound
                    got[i][0] = (float)(expected[i][0] + 2.0 * bf16_amx_bound(Ks[i], abs_sum[i][0], expected[i][0]));
                    check(bf16_amx_outside(got[i], expected[i], abs_sum[i], 1, Ks[i], 1) == 1, "negative control: bf16 %s [AMX] T=%d "
                          "C=%d OC=%d: an element past its bound passed", what[i], T, C, OC);
                    got[i][0] = saved;
                    amx_checked++;
                }
                for (int i = 0; i < 3; i++) { free(abs_sum[i]); }
                free(abs_inp); free(abs_weight); free(abs_dout);
            } else {
                for (int i = 0; i < 3; i++) {
                    check(bits_equal(got[i], expected[i], sizes[i]), "bf16 %s [%s] T=%d C=%d OC=%d differs from its arithmetic written out",
                          what[i], name, T, C, OC);
                }
            }
            // the negative control: the even element's product first is another arithmetic (on sums of enough terms)
            float* swapped = mallocCheck(n_out * sizeof(float) + 4);
            bf16_matmul_oracle(swapped, 0, T, OC, C, inp, (size_t)C, 1, weight, 1, (size_t)C, 1);
            swapped_differs += C >= 64 && !bits_equal(swapped, got[0], n_out);
            free(swapped);
            // against fp32: each product's operands within 2^-9 relative, so |error| <= 2^-8 * sum |a b| (+ fp32 sums)
            matmul_forward_cpu(reference[0], inp, matrix_f32(weight), T, C, OC);
            matmul_backward_cpu(reference[1], reference[2], dout, inp, weight, T, C, OC);
            double bound[3] = {2.0 * 0.5 * C, 1e-3 * 0.5 * OC, 1e-3 * 2.0 * T};   // sum |a b| at the fills' largest values
            for (int i = 0; i < 3; i++) {
                double error = max_abs_difference(got[i], reference[i], sizes[i]);
                check(error <= bound[i] * (0x1p-8 + 1e-6), "bf16 %s [%s] T=%d C=%d OC=%d: %.3g from fp32 (bound %.3g)",
                      what[i], name, T, C, OC, error, bound[i] * 0x1p-8);
            }
            for (int i = 0; i < 3; i++) { free(got[i]); free(expected[i]); free(reference[i]); }
            free(inp); free(weight); free(dout);
        }
    }
    fast_bf16_kernel = saved_kernel;
    fast_amx_kernel = saved_amx;
    check(swapped_differs > 0, "negative control: the even-first order should differ from the bf16 matmul somewhere");
    if (has_amx) { printf("bf16 matmuls [AMX]: %d products within their bound of the portable arithmetic\n", amx_checked); }
    else { printf("bf16 matmuls [AMX]: no AMX on this CPU (or no leave from the kernel to use it), nothing to check\n"); }
    // special values through both tiles (and both packings): NaN, infinities, subnormal inputs (zeros in bf16),
    // products and sums near and below the normal range. Where they meet the two tiles may differ in a NaN's
    // payload and, below 2^-126, in rounding (cpu_fast.h): NaN where NaN, the same infinities, and finite
    // results within 2^-120 of each other.
    if (fast_bf16_native()) {
        int T = 13, C = 70, OC = 45;
        fast_amx_kernel = 0;   // (the AVX-512 BF16 tile against portable C; AMX after)
        float* inp = mallocCheck((size_t)T * C * sizeof(float));
        float* weight = mallocCheck((size_t)OC * C * sizeof(float));
        for (int i = 0; i < T * C; i++) { inp[i] = test_uniform(&rng_state, -1, 1) * ldexpf(1.0f, -(int)(random_u32(&rng_state) % 70)); }
        for (int i = 0; i < OC * C; i++) { weight[i] = test_uniform(&rng_state, -1, 1) * ldexpf(1.0f, -(int)(random_u32(&rng_state) % 70)); }
        inp[5] = NAN; inp[C + 3] = INFINITY; inp[2 * C + 1] = -1e-40f; weight[7] = -INFINITY; weight[C + 9] = 1e-39f;
        weight[3 * C + 2] = NAN;
        float* out[2][3];
        for (int k = 0; k < 2; k++) {
            fast_bf16_kernel = k == 0;
            for (int i = 0; i < 3; i++) { out[k][i] = callocCheck((size_t)(i == 0 ? T * OC : i == 1 ? T * C : OC * C), sizeof(float)); }
            matmul_forward_fast_bf16(out[k][0], inp, matrix_f32(weight), T, C, OC);
            matmul_backward_fast_bf16(out[k][1], out[k][2], out[k][0], inp, weight, T, C, OC);   // dout: the forward's output
        }
        fast_bf16_kernel = saved_kernel;
        int bad = 0, nans = 0;
        for (int i = 0; i < 3; i++) {
            int n = i == 0 ? T * OC : i == 1 ? T * C : OC * C;
            for (int j = 0; j < n; j++) {
                float x = out[0][i][j], y = out[1][i][j];
                nans += isnan(x);
                int same = isnan(x) ? isnan(y) : isinf(x) || isinf(y) ? x == y : fabsf(x - y) <= 0x1p-120f;
                if (!same && bad++ < 3) { fprintf(stderr, "  bf16 specials output %d[%d]: AVX-512 BF16 %a, portable %a\n", i, j, x, y); }
            }
        }
        check(bad == 0 && nans > 0, "bf16 special values: %d outputs differ between the AVX-512 BF16 and portable tiles beyond the "
              "contract (%d NaNs: expected some)", bad, nans);
        fast_amx_kernel = saved_amx;
        if (has_amx) {   // the AMX tile's forward against the portable one's, within its bound (NaN where NaN)
            float* amx_out = callocCheck((size_t)T * OC, sizeof(float));
            float *abs_inp = abs_copy(inp, (size_t)T * C), *abs_weight = abs_copy(weight, (size_t)OC * C);
            float* abs_sum = mallocCheck((size_t)T * OC * sizeof(float));
            bf16_matmul_oracle(abs_sum, 0, T, OC, C, abs_inp, (size_t)C, 1, abs_weight, 1, (size_t)C, 0);
            matmul_forward_fast_bf16(amx_out, inp, matrix_f32(weight), T, C, OC);
            check(bf16_amx_outside(amx_out, out[1][0], abs_sum, (size_t)T * OC, C, 0) == 0, "bf16 special values: the AMX tile's "
                  "forward outside its bound of the portable tile's");
            free(amx_out); free(abs_inp); free(abs_weight); free(abs_sum);
        }
        for (int k = 0; k < 2; k++) { for (int i = 0; i < 3; i++) { free(out[k][i]); } }
        free(inp); free(weight);
    }
    // a weight not in fp32 (the target's, the serving draft's) is the int8 table's matmul, bit for bit
    int T = 5, C = 64, OC = 40;
    float* inp = mallocCheck((size_t)T * C * sizeof(float));
    float* values = mallocCheck((size_t)OC * C * sizeof(float));
    uint8_t* stored = mallocCheck(tensor_bytes(TYPE_Q8_0, (int64_t)OC * C));
    fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
    fill_uniform(values, (size_t)OC * C, &rng_state, -1, 1);
    quantize_row(TYPE_Q8_0, values, stored, (int64_t)OC * C);
    Matrix q8 = backend_cpu_fast_bf16.upload_matrix(stored, TYPE_Q8_0, OC, C);
    float* a = mallocCheck((size_t)T * OC * sizeof(float));
    float* b = mallocCheck((size_t)T * OC * sizeof(float));
    backend_cpu_fast_bf16.matmul_forward(a, inp, q8, T, C, OC);
    backend_cpu_fast.matmul_forward(b, inp, q8, T, C, OC);
    check(bits_equal(a, b, (size_t)T * OC), "the bf16 table's matmul on a Q8_0 weight differs from the int8 table's");
    backend_cpu_fast_bf16.free_matrix(q8);
    free(a); free(b); free(stored); free(values); free(inp);
}

int main(int argc, char** argv) {
#ifdef _OPENMP
    // The thread-count checks compare one thread with omp_get_max_threads(): at least two, whatever
    // OMP_NUM_THREADS the suite runs under (make test runs its programs on one thread)
    if (omp_get_max_threads() < 2) { omp_set_num_threads(2); }
    printf("threads: %d (the thread-count checks compare one thread with these)\n", omp_get_max_threads());
#endif
    int best = fast_isa_best();
    test_fp16_conversion();
    test_fast_exp();
    for (int isa = FAST_ISA_PORTABLE; isa <= best; isa++) {
        fast_isa = isa;
        printf("path: %s\n", fast_isa_name(isa));
        test_rope();
        test_rmsnorm();
        test_swiglu();
        test_loss_ops();
        test_matmul_all();
        test_matmul_not_finite();
        test_matmul_shared();
        test_int8_kernel_exact();
        test_embedding();
        test_attention_all();
        test_attention_spans();
        test_attention_backward_all();
        test_quantize_rows();
        test_matmul_backward();
        test_optimiser_passes();
    }
    test_matmul_backward_levels_agree();
    fast_isa = best;
    test_bf16_rounding();
    test_bf16_matmuls();
    test_negative_control();
    if (argc > 1) { test_model_file(argv[1]); }
    printf("worst |fast - reference|: matmul %.3g (fp32 reordering), attention %.3g (its backward: the reference's bits), matmul "
           "backward (AVX2 / AVX-512 fused multiply-adds) %.3g per term; int8 activations %.3g * sqrt(C); the trainer's loss %.3g "
           "(its gradient; the loss itself %.3g)\n",
           worst_matmul_error, worst_attention_error, worst_backward_error_per_term,
           worst_int8_error_per_sqrt_c, worst_loss_gradient_error, worst_loss_error);
    return test_summary();
}
