/*
test_fast.c: the fast CPU ops (backends/cpu_fast.c) against the reference ops (cpu_ref.c), op by op, on
every instruction-set path this CPU has (portable C always; AVX-512 where present), for every weight type
and odd sizes. Exit status is the verdict.

  test_fast              synthetic data only (make test; no model file needed)
  test_fast MODEL.gguf   also every weight matrix of a real model file (make test-model)

The reference for a quantised weight is matmul_forward_cpu on its fp32 dequantisation (dequantize_row):
the fast matmul reads the same values in place, so the only difference allowed is the order of the fp32
sums. The activations are never quantised (cpu_fast.c's contract), so no bound depends on the model.
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"

// ----------------------------------------------------------------------------
// tolerances of this file, each with its reason (compared with |got - ref| <= atol + rtol * |ref|).
// Inputs in [-1, 1]; the worst difference seen over every case is printed at the end of a run.

static const Tolerance FAST_TOLERANCES[] = {
    {"exact", 0.0f, 0.0f, "the same values by the same arithmetic: dequantised rows, a row computed alone or in a "
                          "batch, one thread or several"},
    {"matmul_reorder", 3e-4f, 1e-5f, "fp32 dot products of up to 1536 terms with |x*w| <= 1: the reference sums left "
                                     "to right (measured against a double sum: up to 1e-4 off at C = 1536), the fast "
                                     "path in 16 vector lanes (1e-5 off); measured worst difference 1e-4"},
    {"attention_reorder", 1e-5f, 1e-5f, "the HS-term q.k dot products in vector lanes (scores within a few ulp), "
                                        "then the reference's exact softmax and value sums"},
};
static Tolerance fast_tolerance(const char* name) {
    for (size_t i = 0; i < sizeof(FAST_TOLERANCES) / sizeof(FAST_TOLERANCES[0]); i++) {
        if (strcmp(FAST_TOLERANCES[i].name, name) == 0) { return FAST_TOLERANCES[i]; }
    }
    fprintf(stderr, "test bug: no tolerance named '%s'\n", name);
    exit(2);
}

static uint64_t rng_state = 0x5eed;
static double worst_matmul_error = 0.0, worst_attention_error = 0.0;

static double max_abs_difference(const float* a, const float* b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst || d != d) { worst = d; }
    }
    return worst;
}

static int bits_equal(const float* a, const float* b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

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

static void test_matmul_case(int type, int T, int C, int OC) {
    float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
    void* stored = make_weight(type, OC, C, dequantised);
    Matrix weight = {stored, type};
    float* inp = mallocCheck((size_t)T * C * sizeof(float));
    fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
    float* expected = mallocCheck((size_t)T * OC * sizeof(float));
    float* got = mallocCheck((size_t)T * OC * sizeof(float));
    matmul_forward_cpu(expected, inp, dequantised, T, C, OC);
    for (size_t i = 0; i < (size_t)T * OC; i++) { got[i] = NAN; }   // every element must be written
    matmul_forward_fast(got, inp, weight, T, C, OC);
    char what[160];
    snprintf(what, sizeof(what), "matmul_forward_fast [%s] %s T=%d C=%d OC=%d", fast_isa_name(fast_isa),
             tensor_type_name(type), T, C, OC);
    check_tensor(what, got, expected, (size_t)T * OC, fast_tolerance("matmul_reorder"));
    double error = max_abs_difference(got, expected, (size_t)T * OC);
    if (error > worst_matmul_error) { worst_matmul_error = error; }
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
    free(alone); free(got); free(expected); free(inp); free(stored); free(dequantised);
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
        embedding_forward_cpu(expected, tokens, dequantised, 7, C, V);
        Matrix table = {stored, type};
        embedding_forward_fast(got, tokens, table, 7, C, V);
        char what[96];
        snprintf(what, sizeof(what), "embedding_forward_fast %s", tensor_type_name(type));
        check_tensor(what, got, expected, 7 * (size_t)C, fast_tolerance("exact"));
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
    attention_forward_cpu(expected, q, keys, values, mask, T, P, NH, NKV, HS);
    for (size_t i = 0; i < q_size; i++) { got[i] = NAN; }
    attention_forward_fast(got, q, keys, values, mask, T, P, NH, NKV, HS);
    const char* kinds[] = {"causal", "tree", "random"};
    char what[160];
    snprintf(what, sizeof(what), "attention_forward_fast %s T=%d P=%d NH=%d NKV=%d HS=%d", kinds[kind], T, P, NH, NKV, HS);
    check_tensor(what, got, expected, q_size, fast_tolerance("attention_reorder"));
    double error = max_abs_difference(got, expected, q_size);
    if (error > worst_attention_error) { worst_attention_error = error; }
    if (kind == MASK_RANDOM) {   // fully masked rows: exactly zero
        float zeros[64 * 16] = {0};
        check(memcmp(got, zeros, (size_t)NH * HS * sizeof(float)) == 0, "%s: fully masked row 0 is not zero", what);
    }
    // batch invariance: the last row alone (with its mask row) gives the same bits
    float* alone = mallocCheck((size_t)NH * HS * sizeof(float));
    attention_forward_fast(alone, q + (size_t)(T - 1) * NH * HS, keys, values, mask + (size_t)(T - 1) * P, 1, P, NH, NKV, HS);
    check(bits_equal(alone, got + (size_t)(T - 1) * NH * HS, (size_t)NH * HS), "%s: the last row alone differs from the batch", what);
    free(alone); free(got); free(expected); free(mask); free(values); free(keys); free(q);
}

static void test_attention_all(void) {
    const int heads[][3] = {{9, 3, 64}, {4, 4, 12}, {8, 1, 16}, {6, 2, 7}};   // NH, NKV, HS
    const int shapes[][2] = {{1, 1}, {1, 37}, {3, 37}, {7, 130}, {16, 16}, {17, 200}, {33, 41}};   // T, P (P >= T)
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            for (int kind = 0; kind < 3; kind++) {
                test_attention_case((MaskKind)kind, shapes[s][0], shapes[s][1], heads[h][0], heads[h][1], heads[h][2]);
            }
        }
    }
}

// ----------------------------------------------------------------------------
// negative control: the comparison must reject an output perturbed just past the bound, and a NaN

static void test_negative_control(void) {
    const int T = 3, C = 64, OC = 9;
    float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
    void* stored = make_weight(TYPE_Q4_1, OC, C, dequantised);
    Matrix weight = {stored, TYPE_Q4_1};
    float inp[3 * 64], expected[3 * 9], got[3 * 9];
    fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
    matmul_forward_cpu(expected, inp, dequantised, T, C, OC);
    matmul_forward_fast(got, inp, weight, T, C, OC);
    Tolerance tol = fast_tolerance("matmul_reorder");
    int perturbations = 2, rejected = 0;
    // the comparison's report of these mismatches is expected: silence stderr around it
    fflush(stderr);
    int saved_stderr = dup(2), null_fd = open("/dev/null", O_WRONLY);
    if (null_fd >= 0) { dup2(null_fd, 2); close(null_fd); }
    for (int k = 0; k < perturbations; k++) {
        float saved = got[4];
        got[4] = k == 0 ? expected[4] + 2.0f * (tol.atol + tol.rtol * fabsf(expected[4])) : NAN;
        int passed_before = tests_passed, failed_before = tests_failed;
        int accepted = check_tensor("negative control", got, expected, (size_t)T * OC, tol);
        tests_passed = passed_before; tests_failed = failed_before;
        rejected += !accepted;
        got[4] = saved;
    }
    fflush(stderr);
    if (saved_stderr >= 0) { dup2(saved_stderr, 2); close(saved_stderr); }
    printf("negative control: the comparison rejected %d of %d perturbed outputs (one past the bound, one NaN)\n",
           rejected, perturbations);
    check(rejected == perturbations, "the comparison accepted %d of %d perturbed outputs", perturbations - rejected, perturbations);
    free(stored); free(dequantised);
}

// ----------------------------------------------------------------------------
// a real model file: every weight matrix, T = 1 and 7, inputs in [-1, 1], against the reference on its
// dequantised rows (the first 256 rows of the large ones, to keep it quick)

static void test_model_file(const char* path) {
    GGUFFile gguf;
    Error err;
    if (gguf_open(&gguf, path, &err) != 0) { check(0, "cannot open %s: %s", path, err.message); return; }
    int n_checked = 0;
    for (uint64_t i = 0; i < gguf.n_tensors; i++) {
        const GGUFTensor* tensor = &gguf.tensors[i];
        if (tensor->n_dims != 2 || !tensor_type_supported(tensor->type)) { continue; }
        int C = (int)tensor->shape[0], rows = (int)tensor->shape[1];
        int OC = rows < 256 ? rows : 256;
        float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
        dequantize_row(tensor->type, tensor->data, dequantised, (int64_t)OC * C);
        Matrix weight = {tensor->data, tensor->type};
        for (int T = 1; T <= 7; T += 6) {
            float* inp = mallocCheck((size_t)T * C * sizeof(float));
            float* expected = mallocCheck((size_t)T * OC * sizeof(float));
            float* got = mallocCheck((size_t)T * OC * sizeof(float));
            fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
            matmul_forward_cpu(expected, inp, dequantised, T, C, OC);
            matmul_forward_fast(got, inp, weight, T, C, OC);
            char what[200];
            snprintf(what, sizeof(what), "%s (%s, %d x %d) [%s] T=%d", tensor->name, tensor_type_name(tensor->type), rows, C,
                     fast_isa_name(fast_isa), T);
            // real weights are small (|w| < 0.5 mostly), so the synthetic bound covers them
            check_tensor(what, got, expected, (size_t)T * OC, fast_tolerance("matmul_reorder"));
            double error = max_abs_difference(got, expected, (size_t)T * OC);
            if (error > worst_matmul_error) { worst_matmul_error = error; }
            free(got); free(expected); free(inp);
        }
        free(dequantised);
        n_checked++;
    }
    printf("model %s: %d weight matrices checked\n", path, n_checked);
    check(n_checked > 0, "no weight matrix found in %s", path);
    gguf_close(&gguf);
}

int main(int argc, char** argv) {
    int best = fast_isa_best();
    test_fp16_conversion();
    for (int isa = FAST_ISA_PORTABLE; isa <= best; isa++) {
        fast_isa = isa;
        printf("path: %s\n", fast_isa_name(isa));
        test_matmul_all();
        test_embedding();
        test_attention_all();
        if (argc > 1) { test_model_file(argv[1]); }
    }
    test_negative_control();
    printf("worst |fast - reference|: matmul %.3g, attention %.3g\n", worst_matmul_error, worst_attention_error);
    return test_summary();
}
