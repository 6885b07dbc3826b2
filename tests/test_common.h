/*
test_common.h: what every test program shares. The one comparison routine for all parity checks
(compare_elements), the one tolerance table, the pass/fail counters, seeded test data.

A test program: #define TESTING, #include "../aurora.c", then this file; call check(...) /
check_tensor(...) as often as needed; `return test_summary();` at the end of main. The exit status is
the verdict, and the last line printed is "N passed, M failed".
*/
#ifndef TEST_COMMON_H
#define TEST_COMMON_H

static int tests_passed = 0;
static int tests_failed = 0;

// A boolean check with a printf-style description (printed only on failure).
#define check(condition, ...) do { \
    if (condition) { tests_passed++; } \
    else { tests_failed++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
           fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } \
} while (0)

static int test_summary(void) {
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed == 0 ? 0 : 1;
}

// ----------------------------------------------------------------------------
// tolerances: one table, each with its reason. Compare with |got - ref| <= atol + rtol * |ref|.

// The last entries are bounds on measured ratios, not element-wise tolerances: atol holds the bound.
typedef struct { const char* name; float atol; float rtol; const char* reason; } Tolerance;
static const Tolerance TOLERANCES[] = {
    {"exact",     0.0f,  0.0f,  "same arithmetic in the same order (copies, integer-valued math, dequantised rows, a row "
                                "computed alone or in a batch, one thread or several)"},
    {"reorder",   1e-5f, 1e-5f, "same fp32 math, different summation order (BLAS, GPU reductions) on one op"},
    {"matmul_reorder", 3e-4f, 1e-5f, "fp32 dot products of up to 1536 terms with |x*w| <= 1: the reference sums left to "
                                     "right (measured against a double sum: up to 1e-4 off at C = 1536), the fast path in "
                                     "16 vector lanes (1e-5 off); measured worst difference 1e-4"},
    {"attention_reorder", 1e-5f, 1e-5f, "the fast attention's HS-term q.k dot products in vector lanes (scores within a "
                                        "few ulp), the softmax with fast_expf (within 2 ulp of exp), the value sums in "
                                        "the reference's order (the backward: the reference's bits)"},
    {"int8_activations", 1e-2f, 0.0f, "one matmul with int8 activations (the fast table on quantised weights): atol per "
                                      "sqrt(C), scaled by sqrt(C) where used, x and w uniform in [-1, 1]: rounding x to "
                                      "steps of its block's max|x| / 127 errs by sd 2.3e-3 per value, so an output by sd "
                                      "sqrt(C) * 2.3e-3 * rms(w) = 1.3e-3 sqrt(C); the bound is 7.6 sd, measured worst "
                                      "5.9e-3 sqrt(C) (4.5 sd over 1e5 outputs; at C = 1536: 0.23)"},
    {"fma_sum",   4e-7f, 1e-6f, "the reference's sum of K terms |a * b| <= 1, in its order, but each term added by a "
                                "fused multiply-add (the product unrounded): each addition may round differently by "
                                "about an ulp of the partial sum; atol per term (times K where used) about 3 ulp of 1, "
                                "measured worst 1.1e-7 per term (short sums of values near 1; tests/test_fast.c)"},
    {"loss_fp32", 1e-6f, 1e-5f, "the trainer's teacher softmax and distribution loss in fp32 with fast_expf (within 2 ulp "
                                "of exp) against the reference's double sums and exp: a row's sums of up to 4,109 terms "
                                "in 16 fp32 lanes; gradients and probabilities are at most 1 (measured worst 3.6e-7), "
                                "losses of about 1 to 10 err by their fp32 rounding (measured worst 1.9e-6 absolute)"},
    {"layer",     2e-4f, 1e-3f, "a whole layer or model: reordering errors compound through norms and softmax"},
    {"int8_model", 0.15f, 0.05f, "a whole tiny model, or the draft's layer, with int8 activations on quantised weights "
                                 "(the fast table; a serving draft's reference computes with the weights as served, rounded to "
                                 "its Q8_0 copy: tests/test_backends.c round_as_served): each matmul's "
                                 "rounding (int8_activations) compounds through the layers, norms and SwiGLU; measured "
                                 "worst over the parity suite 0.085 where the tensors' RMS is 0.4 to 0.9. Loose on "
                                 "purpose: a wrong row, mask or slot errs by the RMS itself; the kernels' arithmetic is "
                                 "checked exactly in tests/test_fast.c and the same tables with fp32 activations at "
                                 "\"layer\" (cpu-fast-exact)"},
    {"quantised", 1e-2f, 1e-2f, "one quantise/dequantise round trip of values in [-1, 1] (Q8_0 and better)"},
    {"finite_difference", 1e-3f, 1e-2f, "analytic gradients against central differences (step 1e-2) of fp32 forwards"},
    {"row_scale", 0.0f,  3e-5f, "not a family: tools/compare_dump.py lets a \"layer\" element of a whole-model dump err by "
                                "rtol times the largest |value| its row carried (fp32 sums err by ulps of the largest "
                                "value they held; the default model's residual stream holds values to 22,000 that later "
                                "layers cancel): measured worst 6.7e-6 (row_scale_slack)"},
    {"hand",      1e-6f, 2e-6f, "fp32 arithmetic against values worked out by hand to 9 significant digits"},
    {"adamw_steps", 2e-4f, 0.0f, "weights after up to 3 AdamW steps at lr 1e-3 from one start: each step moves a weight "
                                 "by about lr whatever its gradient's size, so a wrong gradient shows as ~1e-3 and "
                                 "reordered sums as far less"},
    // bounds on ratios measured on the default model (SmolLM2-135M Q4_1; tests/test_fast.c MODEL.gguf, make
    // test-model), real activations of a reference forward over a prompt, last layer and head, 88 positions
    {"int8_rms_error", 5e-2f, 0.0f, "rms(fast - reference) / rms(reference) per matrix, int8 activations: measured "
                                    "5.8e-3 (attn_q) to 2.0e-2 (attn_v); the residual stream's few large channels "
                                    "coarsen their blocks' steps; the bound leaves 2.5x"},
    {"int8_max_error", 0.5f, 0.0f, "max |fast - reference| / rms(reference) per matrix, int8 activations: measured 5e-2 "
                                   "to 0.23 (ffn_down, whose SwiGLU inputs have the largest outliers)"},
    {"int8_default_logits", 1.5f, 0.0f, "the default model's final logits, default table (int8 activations) against the "
                                        "reference over a 5-token prompt: each matmul's rounding (int8_rms_error) "
                                        "compounds through 30 layers; measured worst 0.83 where the logits' RMS is 3.5 "
                                        "(llama.cpp's own 8-bit activations differ from the reference by up to 0.79)"},
    {"head_argmax_agreement", 0.9f, 0.0f, "fraction of positions whose LM-head argmax is the reference's, int8 "
                                          "activations: measured 86 of 88 (the two flips are near ties: what llama.cpp's "
                                          "Q8 activations also do)"},
};
static Tolerance tolerance(const char* name) {
    for (size_t i = 0; i < sizeof(TOLERANCES) / sizeof(TOLERANCES[0]); i++) {
        if (strcmp(TOLERANCES[i].name, name) == 0) { return TOLERANCES[i]; }
    }
    fprintf(stderr, "test bug: no tolerance named '%s'\n", name);
    exit(2);
}

// The one comparison routine, for every parity check. Floats: NaN anywhere fails, infinities must match
// exactly (masked attention entries are -INFINITY), and every other element must satisfy
// |got - ref| <= atol + rtol*|ref|. Integers and bytes: exact. Prints the first few mismatches and the
// worst one, and returns the number of mismatches; check_elements turns that into the verdict.
static size_t compare_elements(const char* what, ElementKind kind, const void* got, const void* ref, size_t n,
                               Tolerance tol) {
    size_t mismatches = 0, worst_index = 0;
    double worst_excess = -1.0;
    for (size_t i = 0; i < n; i++) {
        int ok;
        double excess = 0.0, g, r;
        if (kind == ELEMENT_F32) {
            g = ((const float*)got)[i];
            r = ((const float*)ref)[i];
            if (isnan(g) || isnan(r)) { ok = 0; excess = INFINITY; }
            else if (isinf(g) || isinf(r)) { ok = g == r; excess = ok ? 0.0 : INFINITY; }
            else {
                double bound = tol.atol + tol.rtol * fabs(r);
                double difference = fabs(g - r);
                ok = difference <= bound;
                excess = difference - bound;
            }
        } else {
            g = kind == ELEMENT_I32 ? ((const int*)got)[i] : ((const uint8_t*)got)[i];
            r = kind == ELEMENT_I32 ? ((const int*)ref)[i] : ((const uint8_t*)ref)[i];
            ok = g == r;
            excess = fabs(g - r);
        }
        if (!ok) {
            if (mismatches < 5) {
                fprintf(stderr, "  %s[%zu]: got %.9g, expected %.9g (tolerance %s)\n", what, i, g, r, tol.name);
            }
            mismatches++;
        }
        if (excess > worst_excess) { worst_excess = excess; worst_index = i; }
    }
    if (mismatches > 0) {
        double g = kind == ELEMENT_F32 ? ((const float*)got)[worst_index]
                 : kind == ELEMENT_I32 ? ((const int*)got)[worst_index] : ((const uint8_t*)got)[worst_index];
        double r = kind == ELEMENT_F32 ? ((const float*)ref)[worst_index]
                 : kind == ELEMENT_I32 ? ((const int*)ref)[worst_index] : ((const uint8_t*)ref)[worst_index];
        fprintf(stderr, "  %s: %zu of %zu elements mismatch; worst at [%zu]: got %.9g, expected %.9g\n",
                what, mismatches, n, worst_index, g, r);
    }
    return mismatches;
}

static int check_elements(const char* what, ElementKind kind, const void* got, const void* ref, size_t n, Tolerance tol) {
    size_t mismatches = compare_elements(what, kind, got, ref, n, tol);
    check(mismatches == 0, "%s differs from the reference", what);
    return mismatches == 0;
}

// n floats equal bit for bit (NaN payloads and the sign of zero included)
static int bits_equal(const float* a, const float* b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

// Fills a draft's floating-point activation buffers (on its backend) with NaN, so that a call that reads a row
// it did not write (a stale row a previous call left) shows in its results
static void poison_draft_activations(Draft* draft) {
    for (int i = 0; i < DRAFT_NUM_ACTIVATIONS; i++) {
        const ActivationInfo* info = &draft->act.table[i];
        if (info->kind != ELEMENT_F32 || *info->data == NULL) { continue; }
        size_t n = info->rows * info->cols;
        float* nan = mallocCheck(n * sizeof(float));
        for (size_t e = 0; e < n; e++) { nan[e] = NAN; }
        draft->backend->upload(*info->data, nan, n * sizeof(float));
        free(nan);
    }
}

// P slots of a (P, NKV*HS) cache laid out head by head, (NKV, S, HS) for S >= P (cache_by_head): the slots
// past P hold NaN, which a correct attention never reads
static float* head_by_head(const float* rows, int P, int NKV, int HS, int S) {
    float* cache = mallocCheck((size_t)NKV * S * HS * sizeof(float));
    for (size_t i = 0; i < (size_t)NKV * S * HS; i++) { cache[i] = NAN; }
    for (int h = 0; h < NKV; h++) {
        for (int p = 0; p < P; p++) {
            memcpy(cache + ((size_t)h * S + p) * HS, rows + ((size_t)p * NKV + h) * HS, (size_t)HS * sizeof(float));
        }
    }
    return cache;
}

static int check_tensor(const char* what, const float* got, const float* ref, size_t n, Tolerance tol) {
    return check_elements(what, ELEMENT_F32, got, ref, n, tol);
}

// draft_extend on the draft's table against draft_forward over the same T rows after n_past cached: the
// same keys and values and the last row's out and logits, bit for bit (a row's result does not depend on the
// call's other rows); extend runs with its cache rows zeroed and its activation buffers NaN, so that only what
// it computes can pass. The buffers are put back after it, so the draft's state is as the forward left it.
static void check_extend(Draft* d, const char* label, const int* tokens, const float* u, const int* positions, int T,
                         int n_past) {
    int C = d->config.dim, V_d = d->config.vocab_size;
    size_t KVD = (size_t)d->config.n_kv_heads * d->config.head_size;   // (the draft's cache is slot by slot)
    size_t cache_bytes = (size_t)d->cache_capacity * KVD * sizeof(float), rows_bytes = (size_t)T * KVD * sizeof(float);
    float* out = mallocCheck((size_t)C * sizeof(float));
    float* logits = mallocCheck((size_t)V_d * sizeof(float));
    float* caches[2][2];   // [before, after][keys, values]
    for (int i = 0; i < 4; i++) { caches[i / 2][i % 2] = mallocCheck(cache_bytes); }
    draft_forward(d, tokens, u, positions, NULL, T, n_past);
    memcpy(out, d->host.out + (size_t)(T - 1) * C, (size_t)C * sizeof(float));
    memcpy(logits, d->host.logits + (size_t)(T - 1) * V_d, (size_t)V_d * sizeof(float));
    // the control: the forward's rows are other vectors, so a wrong row would not pass for the last
    check(T < 2 || !bits_equal(d->host.out, out, (size_t)C), "%s: %s: check_extend: draft_forward's first and last rows "
          "are the same bits (T=%d)", d->backend->name, label, T);
    d->backend->download(caches[0][0], d->key_cache, cache_bytes);
    d->backend->download(caches[0][1], d->value_cache, cache_bytes);
    d->backend->zero(d->key_cache + (size_t)n_past * KVD, rows_bytes);
    d->backend->zero(d->value_cache + (size_t)n_past * KVD, rows_bytes);
    void* saved[DRAFT_NUM_ACTIVATIONS];
    for (int i = 0; i < DRAFT_NUM_ACTIVATIONS; i++) {
        const ActivationInfo* info = &d->act.table[i];
        size_t bytes = info->rows * info->cols * element_size(info->kind);
        saved[i] = *info->data ? mallocCheck(bytes) : NULL;
        if (saved[i]) { d->backend->download(saved[i], *info->data, bytes); }
    }
    poison_draft_activations(d);
    draft_extend(d, tokens, u, positions, T, n_past);
    d->backend->download(caches[1][0], d->key_cache, cache_bytes);
    d->backend->download(caches[1][1], d->value_cache, cache_bytes);
    char what[200];
    if (strcmp(d->backend->name, "cpu-blas") == 0) {   // (sgemm's blocking follows the call's rows: reordered sums)
        snprintf(what, sizeof(what), "%s: %s: draft_extend's out (T=%d, n_past=%d) against draft_forward's last row",
                 d->backend->name, label, T, n_past);
        check_tensor(what, d->host.out, out, (size_t)C, tolerance("layer"));
        snprintf(what, sizeof(what), "%s: %s: draft_extend's logits (T=%d, n_past=%d) against draft_forward's last row",
                 d->backend->name, label, T, n_past);
        check_tensor(what, d->host.logits, logits, (size_t)V_d, tolerance("layer"));
    } else {
        check(bits_equal(d->host.out, out, (size_t)C), "%s: %s: draft_extend's out (T=%d, n_past=%d) differs from "
              "draft_forward's last row", d->backend->name, label, T, n_past);
        check(bits_equal(d->host.logits, logits, (size_t)V_d), "%s: %s: draft_extend's logits (T=%d, n_past=%d) differ "
              "from draft_forward's last row", d->backend->name, label, T, n_past);
    }
    check(bits_equal(caches[1][0], caches[0][0], cache_bytes / sizeof(float)) &&
          bits_equal(caches[1][1], caches[0][1], cache_bytes / sizeof(float)),
          "%s: %s: draft_extend's keys or values (T=%d, n_past=%d) differ from draft_forward's", d->backend->name, label, T, n_past);
    for (int i = 0; i < DRAFT_NUM_ACTIVATIONS; i++) {   // (the buffers as the forward left them, for the comparisons after)
        const ActivationInfo* info = &d->act.table[i];
        if (saved[i]) { d->backend->upload(*info->data, saved[i], info->rows * info->cols * element_size(info->kind)); }
        free(saved[i]);
    }
    for (int i = 0; i < 4; i++) { free(caches[i / 2][i % 2]); }
    free(out); free(logits);
}

// Integers must be exact.
static int check_ints(const char* what, const int* got, const int* ref, size_t n) {
    return check_elements(what, ELEMENT_I32, got, ref, n, tolerance("exact"));
}

// ----------------------------------------------------------------------------
// seeded random numbers for test data (the same generator as the program's sampler)

static float test_uniform(uint64_t* state, float lo, float hi) {
    return lo + (hi - lo) * random_f32(state);
}
static void fill_uniform(float* x, size_t n, uint64_t* state, float lo, float hi) {
    for (size_t i = 0; i < n; i++) { x[i] = test_uniform(state, lo, hi); }
}

// ----------------------------------------------------------------------------
// temporary directories, made and removed without a shell

#include <ftw.h>

static int remove_entry(const char* path, const struct stat* info, int flag, struct FTW* walk) {
    (void)info; (void)flag; (void)walk;
    return remove(path);
}

// Removes a directory and everything under it (depth first, no symlinks followed).
static int remove_tree(const char* path) {
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// ----------------------------------------------------------------------------
// records for the trainer's tests

// A record with rejected branches: a random draft proposing K=2 trees (greedy, so the same every run).
static Record* make_record(Target* target, Draft* draft, const int* prompt, int n_prompt, int max_new) {
    DraftSource source;
    draft_source_init(&source, DRAFT_EAGLE, (TreeShape){2, 3, 7}, draft, target);
    Record* record = record_new(target->config.dim, 1);
    int out[64];
    SpecStats stats;
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    generate_speculative(target, &source, prompt, n_prompt, max_new, greedy, 0, out, &stats, NULL, NULL, record);
    draft_source_free(&source);
    return record;
}

// A hand-made tree for tests: node i's parent parents[i] (the root's -1), token i, scores 0; derived.
static void hand_made_tree(Tree* tree, const int* parents, int n_nodes) {
    memset(tree, 0, sizeof(*tree));
    tree->n_nodes = n_nodes;
    for (int i = 0; i < n_nodes; i++) { tree->parents[i] = parents[i]; tree->tokens[i] = i; }
    Error err;
    if (tree_derive(tree, &err) != 0) { fprintf(stderr, "hand_made_tree: %s\n", err.message); exit(1); }
}

#endif // TEST_COMMON_H
