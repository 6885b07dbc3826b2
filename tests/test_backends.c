/*
test_backends.c: every backend against the reference (backend_cpu_ref), tensor by tensor. One
orchestration, many tables: the same code runs on each table and its results are compared, with the one
comparison routine (compare_elements) and the one tolerance table (tests/test_common.h).

  ops          every op of the table against cpu_ref.c on random inputs of several shapes (odd sizes,
               T = 1, grouped-query heads, causal / tree / random masks with fully masked rows, -inf
               logits, in-place calls, d-buffers that start non-zero, NULL d-buffers, two runs
               bit-identical where the op promises determinism), upload_matrix for every tensor type
  target       a prefill, three decodes, a tree-masked verify with repeated positions, a compaction, a
               decode, and three sequences at their own slots in one call (target_forward_spans): after
               every call every named activation (the table, the key/value caches and every layer's
               output) and what the host reads, and the argmax tokens
  draft        u = fc(g), a causal extend, a tree-masked step, the step after new weights and after a hot
               swap: every named activation, the cache, what the host reads
  trainer      K = 3 steps per loss kind (discard loss, top-k, reverse KL, cut windows along the way): the
               losses and counters, and every parameter tensor, gradient and AdamW moment by name; a
               rejected non-finite step; a 20-step learning curve
  end to end   speculative generation (EAGLE, self, lookup; chains and trees): identical greedy tokens
  control      the comparison catches a perturbed element, a NaN, a wrong infinity, a wrong integer

Acceptance is a host function of downloaded logits (speculation/acceptance.c), so a backend contributes only the
argmax of its rows (argmax_rows: ties, -inf rows and NaNs are checked here) and the logits themselves.

Backends: the OpenBLAS table where built with it, CUDA where built with it and a GPU is visible (else it
says "CUDA: skipped" and why), and always a simulated device: the reference's ops behind memory the host
cannot read (below), so the paths a GPU takes (uploads, downloads, separate host buffers, device
arenas) run and are checked on every machine. Exit status is the verdict.
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"
#include <unistd.h>

static uint64_t rng_state = 0xBAC0;
static const Backend* B;    // the backend under test; the reference is backend_cpu_ref
// The tolerance of whole-model comparisons (activations, caches, what the host reads): "layer", or
// "int8_model" where the backend under test computes with int8 activations (set per model and draft).
static const char* model_tolerance = "layer";

// Whether the backend under test multiplies weights of this type with int8 activations (the fast table on
// quantised weights, where the CPU has AVX-512 VNNI or AVX2): its results then differ from the reference's by the
// activations' rounding (tolerances "int8_activations", "int8_model"), not by reordering alone.
static int int8_arithmetic(int weight_type) {
    return B == &backend_cpu_fast && fast_isa_has_int8(fast_isa_current()) && tensor_type_block_size(weight_type) == 32;
}
// Whether a serving draft on the backend under test computes with int8 activations (its matrices in type:
// the backend's draft_type or --draft-type's, quantised when its width allows).
static int draft_int8_arithmetic(int type) { return type != TYPE_F32 && int8_arithmetic(type); }

// ---- memory through the backend under test ------------------------------------------------------

static void* on_backend(const void* host, size_t bytes) {
    void* buffer = B->alloc(bytes);
    B->upload(buffer, host, bytes);
    return buffer;
}
static float* random_floats(size_t n, float lo, float hi) {
    float* x = mallocCheck((n > 0 ? n : 1) * sizeof(float));
    fill_uniform(x, n, &rng_state, lo, hi);
    return x;
}
static float* copy_floats(const float* x, size_t n) {
    float* copy = mallocCheck((n > 0 ? n : 1) * sizeof(float));
    memcpy(copy, x, n * sizeof(float));
    return copy;
}
// Downloads n elements of the backend's memory and compares them with the reference's (host) values.
static void check_backend(const char* what, ElementKind kind, const void* got_on_backend, const void* expected, size_t n,
                          const char* tol) {
    void* got = mallocCheck(n * element_size(kind) + 1);
    B->download(got, got_on_backend, n * element_size(kind));
    char name[256];
    snprintf(name, sizeof(name), "%s: %s", B->name, what);
    check_elements(name, kind, got, expected, n, tolerance(tol));
    free(got);
}
static void check_floats(const char* what, const float* got_on_backend, const float* expected, size_t n, const char* tol) {
    check_backend(what, ELEMENT_F32, got_on_backend, expected, n, tol);
}

// ==== ops ==========================================================================================

static void test_upload_matrix(int type, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    float* values = random_floats(n, -1, 1);
    size_t bytes = tensor_bytes(type, (int64_t)n);
    void* gguf_data = mallocCheck(bytes);
    quantize_row(type, values, gguf_data, (int64_t)n);
    float* expected = mallocCheck(n * sizeof(float));
    dequantize_row(type, gguf_data, expected, (int64_t)n);
    Matrix matrix = B->upload_matrix(gguf_data, type, rows, cols);
    float* got = mallocCheck(n * sizeof(float));
    matrix_to_host_f32(B, matrix, rows, cols, got);
    char what[128];
    snprintf(what, sizeof(what), "%s: upload_matrix %s (%d, %d)", B->name, tensor_type_name(type), rows, cols);
    check_tensor(what, got, expected, n, tolerance("exact"));
    B->free_matrix(matrix);
    free(values); free(gguf_data); free(expected); free(got);
}

static void test_embedding(int T, int C, int V) {
    int* tokens = mallocCheck((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) { tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V); }
    tokens[0] = V - 1; // the last row of the table too
    float* table = random_floats((size_t)V * C, -1, 1);
    float* expected = mallocCheck((size_t)T * C * sizeof(float));
    embedding_forward_cpu(expected, tokens, matrix_f32(table), T, C, V);
    int* d_tokens = on_backend(tokens, (size_t)T * sizeof(int));
    Matrix d_table = B->upload_matrix(table, TYPE_F32, V, C);
    float* d_out = B->alloc((size_t)T * C * sizeof(float));
    B->embedding_forward(d_out, d_tokens, d_table, T, C, V);
    char what[96];
    snprintf(what, sizeof(what), "embedding T=%d C=%d V=%d", T, C, V);
    check_floats(what, d_out, expected, (size_t)T * C, "exact");
    B->free(d_tokens); B->free_matrix(d_table); B->free(d_out);
    free(tokens); free(table); free(expected);
}

static void test_rmsnorm(int T, int C) {
    size_t n = (size_t)T * C;
    float* inp = random_floats(n, -3, 3);
    float* weight = random_floats(C, 0.5f, 1.5f);
    float* expected = mallocCheck(n * sizeof(float));
    float eps = 1e-5f;
    rmsnorm_forward_cpu(expected, inp, weight, T, C, eps);
    float* d_inp = on_backend(inp, n * sizeof(float));
    float* d_weight = on_backend(weight, C * sizeof(float));
    float* d_out = B->alloc(n * sizeof(float));
    B->rmsnorm_forward(d_out, d_inp, d_weight, T, C, eps);
    char what[96];
    snprintf(what, sizeof(what), "rmsnorm T=%d C=%d", T, C);
    check_floats(what, d_out, expected, n, "reorder");
    B->rmsnorm_forward(d_inp, d_inp, d_weight, T, C, eps); // in place
    snprintf(what, sizeof(what), "rmsnorm in place T=%d C=%d", T, C);
    check_floats(what, d_inp, expected, n, "reorder");
    B->free(d_inp); B->free(d_weight); B->free(d_out);
    free(inp); free(weight); free(expected);
}

static void test_matmul(int T, int C, int OC) {
    float* inp = random_floats((size_t)T * C, -1, 1);
    float* weight = random_floats((size_t)OC * C, -1, 1);
    float* expected = mallocCheck((size_t)T * OC * sizeof(float));
    matmul_forward_cpu(expected, inp, matrix_f32(weight), T, C, OC);
    float* d_inp = on_backend(inp, (size_t)T * C * sizeof(float));
    Matrix d_weight = B->upload_matrix(weight, TYPE_F32, OC, C);
    float* d_out = B->alloc((size_t)T * OC * sizeof(float));
    B->matmul_forward(d_out, d_inp, d_weight, T, C, OC);
    char what[96];
    snprintf(what, sizeof(what), "matmul T=%d C=%d OC=%d", T, C, OC);
    check_floats(what, d_out, expected, (size_t)T * OC, "reorder");
    B->free(d_inp); B->free_matrix(d_weight); B->free(d_out);
    free(inp); free(weight); free(expected);
}

// A weight stored in every type, through upload_matrix (the fast table reads it in place), against the
// reference on its fp32 dequantisation; the int8 arithmetic gets its per-op bound.
static void test_matmul_types(int T, int C, int OC) {
    const int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
    float* inp = random_floats((size_t)T * C, -1, 1);
    float* values = random_floats((size_t)OC * C, -1, 1);
    float* dequantised = mallocCheck((size_t)OC * C * sizeof(float));
    float* expected = mallocCheck((size_t)T * OC * sizeof(float));
    float* d_inp = on_backend(inp, (size_t)T * C * sizeof(float));
    float* d_out = B->alloc((size_t)T * OC * sizeof(float));
    for (int k = 0; k < 6; k++) {
        int type = types[k];
        if (C % tensor_type_block_size(type) != 0) { continue; }
        size_t bytes = tensor_bytes(type, (int64_t)OC * C);
        void* stored = mallocCheck(bytes);
        quantize_row(type, values, stored, (int64_t)OC * C);
        dequantize_row(type, stored, dequantised, (int64_t)OC * C);
        matmul_forward_cpu(expected, inp, matrix_f32(dequantised), T, C, OC);
        Matrix d_weight = B->upload_matrix(stored, type, OC, C);
        B->matmul_forward(d_out, d_inp, d_weight, T, C, OC);
        char what[128];
        snprintf(what, sizeof(what), "matmul %s weights T=%d C=%d OC=%d", tensor_type_name(type), T, C, OC);
        if (int8_arithmetic(type)) {
            Tolerance tol = tolerance("int8_activations");
            tol.atol *= sqrtf((float)C);
            float* got = mallocCheck((size_t)T * OC * sizeof(float));
            B->download(got, d_out, (size_t)T * OC * sizeof(float));
            char name[256];
            snprintf(name, sizeof(name), "%s: %s (int8 activations)", B->name, what);
            check_tensor(name, got, expected, (size_t)T * OC, tol);
            free(got);
        } else {
            check_floats(what, d_out, expected, (size_t)T * OC, "matmul_reorder");
        }
        B->free_matrix(d_weight);
        // the embedding of the same table: rows dequantised exactly
        int tokens[3] = {0, OC - 1, OC / 2};
        int* d_tokens = on_backend(tokens, sizeof(tokens));
        float* d_rows = B->alloc((size_t)3 * C * sizeof(float));
        Matrix d_table = B->upload_matrix(stored, type, OC, C);
        B->embedding_forward(d_rows, d_tokens, d_table, 3, C, OC);
        float rows[3 * 96];
        for (int t = 0; t < 3 && C <= 96; t++) { memcpy(rows + (size_t)t * C, dequantised + (size_t)tokens[t] * C, (size_t)C * sizeof(float)); }
        snprintf(what, sizeof(what), "embedding %s table C=%d V=%d", tensor_type_name(type), C, OC);
        if (C <= 96) { check_floats(what, d_rows, rows, (size_t)3 * C, "exact"); }
        B->free_matrix(d_table);
        B->free(d_tokens); B->free(d_rows);
        free(stored);
    }
    B->free(d_inp); B->free(d_out);
    free(inp); free(values); free(dequantised); free(expected);
}

static void test_rope(int T, int n_heads, int HS, float theta, int max_position) {
    size_t n = (size_t)T * n_heads * HS;
    float* inp = random_floats(n, -1, 1);
    int* positions = mallocCheck((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) { positions[t] = (int)(random_u32(&rng_state) % (uint32_t)(max_position + 1)); }
    positions[0] = max_position;
    if (T > 2) { positions[2] = positions[1]; } // siblings in a tree share a position
    float* expected = mallocCheck(n * sizeof(float));
    rope_forward_cpu(expected, inp, positions, T, n_heads, HS, theta);
    float* d_inp = on_backend(inp, n * sizeof(float));
    int* d_positions = on_backend(positions, (size_t)T * sizeof(int));
    float* d_out = B->alloc(n * sizeof(float));
    B->rope_forward(d_out, d_inp, d_positions, T, n_heads, HS, theta);
    char what[128];
    snprintf(what, sizeof(what), "rope T=%d heads=%d HS=%d theta=%g max_position=%d", T, n_heads, HS, theta, max_position);
    check_floats(what, d_out, expected, n, "reorder");
    B->rope_forward(d_inp, d_inp, d_positions, T, n_heads, HS, theta); // in place
    snprintf(what, sizeof(what), "rope in place T=%d heads=%d HS=%d", T, n_heads, HS);
    check_floats(what, d_inp, expected, n, "reorder");
    B->free(d_inp); B->free(d_positions); B->free(d_out);
    free(inp); free(positions); free(expected);
}

enum { MASK_CAUSAL, MASK_TREE, MASK_RANDOM };
static const char* MASK_NAMES[] = {"causal", "tree", "random"};

// Fills a (T, P) mask. causal: the last T slots are the new tokens, token t sees slots < P - T + t + 1.
// tree: the prefix, then a random tree over the new tokens (each node's parent an earlier node; a node
// sees its ancestors and itself). random: each entry on with probability 1/2. Rows in fully_masked
// (a list of row indices, -1 terminated) are then cleared.
static void make_mask(uint8_t* mask, int kind, int T, int P, const int* fully_masked) {
    int n_past = P - T;
    int* parent = mallocCheck((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) { parent[t] = t == 0 ? -1 : (int)(random_u32(&rng_state) % (uint32_t)t); }
    for (int t = 0; t < T; t++) {
        uint8_t* row = mask + (size_t)t * P;
        for (int p = 0; p < P; p++) {
            if (kind == MASK_CAUSAL) { row[p] = p <= n_past + t; }
            else if (kind == MASK_RANDOM) { row[p] = random_u32(&rng_state) & 1; }
            else { row[p] = p < n_past; }
        }
        if (kind == MASK_TREE) {
            for (int node = t; node >= 0; node = parent[node]) { row[n_past + node] = 1; }
        }
    }
    for (int i = 0; fully_masked != NULL && fully_masked[i] >= 0; i++) {
        if (fully_masked[i] < T) { memset(mask + (size_t)fully_masked[i] * P, 0, (size_t)P); }
    }
    free(parent);
}

// One layout's run on the table under test against the reference's output (slot by slot)
static void check_attention_layout(const float* q, const float* key_cache, const float* value_cache, size_t kv_size,
                                   CacheLayout layout, const uint8_t* mask, const float* expected, int T, int P, int NH,
                                   int NKV, int HS, const char* what, const int* fully_masked) {
    size_t q_size = (size_t)T * NH * HS;
    float* d_q = on_backend(q, q_size * sizeof(float));
    float* d_key = on_backend(key_cache, kv_size * sizeof(float));
    float* d_value = on_backend(value_cache, kv_size * sizeof(float));
    uint8_t* d_mask = on_backend(mask, (size_t)T * P);
    float* nans = mallocCheck(q_size * sizeof(float));
    for (size_t i = 0; i < q_size; i++) { nans[i] = NAN; } // every element must be written
    float* d_out = on_backend(nans, q_size * sizeof(float));
    B->attention_forward(d_out, d_q, d_key, d_value, d_mask, T, P, NH, NKV, HS, layout);
    check_floats(what, d_out, expected, q_size, "reorder");
    float* got = mallocCheck(q_size * sizeof(float));
    B->download(got, d_out, q_size * sizeof(float));
    for (int i = 0; fully_masked != NULL && fully_masked[i] >= 0; i++) { // zeros, exactly
        int t = fully_masked[i];
        if (t >= T) { continue; }
        int zeros = 1;
        for (size_t j = 0; j < (size_t)NH * HS; j++) { zeros &= got[(size_t)t * NH * HS + j] == 0.0f; }
        check(zeros, "%s: %s: fully masked row %d is not all zeros", B->name, what, t);
    }
    B->free(d_q); B->free(d_key); B->free(d_value); B->free(d_mask); B->free(d_out);
    free(nans); free(got);
}

// Attention with the cache slot by slot and head by head: the table under test against the reference in
// both, and the reference's two layouts bit for bit (the layout moves rows, never the arithmetic)
static void test_attention(int T, int P, int NH, int NKV, int HS, int mask_kind, const int* fully_masked) {
    size_t q_size = (size_t)T * NH * HS, kv_size = (size_t)P * NKV * HS;
    int S = P + 3;
    float* q = random_floats(q_size, -1, 1);
    float* key_cache = random_floats(kv_size, -1, 1);
    float* value_cache = random_floats(kv_size, -1, 1);
    float* key_heads = head_by_head(key_cache, P, NKV, HS, S);
    float* value_heads = head_by_head(value_cache, P, NKV, HS, S);
    uint8_t* mask = mallocCheck((size_t)T * P);
    make_mask(mask, mask_kind, T, P, fully_masked);
    float* expected = mallocCheck(q_size * sizeof(float));
    float* expected_heads = mallocCheck(q_size * sizeof(float));
    attention_forward_cpu(expected, q, key_cache, value_cache, mask, T, P, NH, NKV, HS, cache_by_slot(NKV, HS));
    attention_forward_cpu(expected_heads, q, key_heads, value_heads, mask, T, P, NH, NKV, HS, cache_by_head(S, HS));
    char what[160];
    snprintf(what, sizeof(what), "attention %s T=%d P=%d NH=%d NKV=%d HS=%d", MASK_NAMES[mask_kind], T, P, NH, NKV, HS);
    check(memcmp(expected, expected_heads, q_size * sizeof(float)) == 0,
          "%s: the reference head by head differs from slot by slot", what);
    check_attention_layout(q, key_cache, value_cache, kv_size, cache_by_slot(NKV, HS), mask, expected, T, P, NH, NKV, HS,
                           what, fully_masked);
    snprintf(what, sizeof(what), "attention %s T=%d P=%d NH=%d NKV=%d HS=%d, head by head", MASK_NAMES[mask_kind], T, P,
             NH, NKV, HS);
    check_attention_layout(q, key_heads, value_heads, (size_t)NKV * S * HS, cache_by_head(S, HS), mask, expected, T, P, NH,
                           NKV, HS, what, fully_masked);
    free(q); free(key_cache); free(value_cache); free(key_heads); free(value_heads); free(mask); free(expected);
    free(expected_heads);
}

static void test_swiglu_and_residual(int N) {
    float* gate = random_floats(N, -8, 8);
    float* up = random_floats(N, -2, 2);
    float* expected = mallocCheck((size_t)N * sizeof(float));
    swiglu_forward_cpu(expected, gate, up, N);
    float* d_gate = on_backend(gate, (size_t)N * sizeof(float));
    float* d_up = on_backend(up, (size_t)N * sizeof(float));
    float* d_out = B->alloc((size_t)N * sizeof(float));
    B->swiglu_forward(d_out, d_gate, d_up, N);
    char what[96];
    snprintf(what, sizeof(what), "swiglu N=%d", N);
    check_floats(what, d_out, expected, N, "reorder");
    B->swiglu_forward(d_gate, d_gate, d_up, N); // in place, as target_forward calls it
    snprintf(what, sizeof(what), "swiglu in place N=%d", N);
    check_floats(what, d_gate, expected, N, "reorder");
    // residual, in place as the models call it
    residual_forward_cpu(expected, up, gate, N);
    B->upload(d_gate, gate, (size_t)N * sizeof(float));
    B->residual_forward(d_up, d_up, d_gate, N);
    snprintf(what, sizeof(what), "residual N=%d", N);
    check_floats(what, d_up, expected, N, "exact");
    B->free(d_gate); B->free(d_up); B->free(d_out);
    free(gate); free(up); free(expected);
}

static void test_softmax(int T, int V, int with_minus_infinity) {
    size_t n = (size_t)T * V;
    float* logits = random_floats(n, -10, 10);
    if (with_minus_infinity && V > 1) { // some -inf logits (never a whole row: that is undefined)
        for (int t = 0; t < T; t++) {
            for (int i = 1; i < V; i += 3) { logits[(size_t)t * V + i] = -INFINITY; }
        }
    }
    float* expected = mallocCheck(n * sizeof(float));
    softmax_forward_cpu(expected, logits, T, V);
    float* d_logits = on_backend(logits, n * sizeof(float));
    float* d_probs = B->alloc(n * sizeof(float));
    B->softmax_forward(d_probs, d_logits, T, V);
    char what[96];
    snprintf(what, sizeof(what), "softmax T=%d V=%d%s", T, V, with_minus_infinity ? " with -inf" : "");
    check_floats(what, d_probs, expected, n, "reorder");
    B->softmax_forward(d_logits, d_logits, T, V); // in place
    snprintf(what, sizeof(what), "softmax in place T=%d V=%d", T, V);
    check_floats(what, d_logits, expected, n, "reorder");
    B->free(d_logits); B->free(d_probs);
    free(logits); free(expected);
}

// A path's slots as target_compact passes them: increasing, slots[i] >= destination + i (sources only move
// down). identity: every slot already in place (nothing moves).
static void test_kv_compact(int n_planes, int S, int width, int destination, int n, int identity) {
    size_t floats = (size_t)n_planes * S * width;
    float* key_cache = random_floats(floats, -1, 1);
    float* value_cache = random_floats(floats, -1, 1);
    int slots[TREE_MAX_DEPTH + 1];
    for (int i = 0; i < n; i++) {
        int gap = identity ? 0 : (int)(random_u32(&rng_state) % 3u);
        slots[i] = i == 0 ? destination + gap : slots[i - 1] + 1 + gap;
    }
    if (slots[n - 1] >= S) { check(0, "test bug: kv_compact slots exceed the cache"); free(key_cache); free(value_cache); return; }
    float* d_key = on_backend(key_cache, floats * sizeof(float));
    float* d_value = on_backend(value_cache, floats * sizeof(float));
    int* d_slots = on_backend(slots, (size_t)n * sizeof(int));
    kv_compact_cpu(key_cache, value_cache, slots, n, destination, n_planes, S, width);
    B->kv_compact(d_key, d_value, d_slots, n, destination, n_planes, S, width);
    char what[128];
    snprintf(what, sizeof(what), "kv_compact keys planes=%d S=%d width=%d n=%d -> %d%s", n_planes, S, width, n, destination, identity ? " (in place)" : "");
    check_floats(what, d_key, key_cache, floats, "exact");
    snprintf(what, sizeof(what), "kv_compact values planes=%d S=%d width=%d n=%d -> %d%s", n_planes, S, width, n, destination, identity ? " (in place)" : "");
    check_floats(what, d_value, value_cache, floats, "exact");
    B->free(d_key); B->free(d_value); B->free(d_slots);
    free(key_cache); free(value_cache);
}

// cache_store: a call's T rows of keys and of values, (T, NKV*HS), into slots [n_past, n_past + T) of two
// caches of S slots in each layout, against the elements placed one by one; every other slot keeps its NaN
static void test_cache_store(int T, int n_past, int S, int NKV, int HS) {
    size_t rows_size = (size_t)T * NKV * HS, cache_size = (size_t)S * NKV * HS;
    float* rows[2] = {random_floats(rows_size, -1, 1), random_floats(rows_size, -1, 1)};   // k, v
    float* nans = mallocCheck(cache_size * sizeof(float));
    for (size_t i = 0; i < cache_size; i++) { nans[i] = NAN; }
    float* d_rows[2] = {on_backend(rows[0], rows_size * sizeof(float)), on_backend(rows[1], rows_size * sizeof(float))};
    for (int by_head = 0; by_head <= 1; by_head++) {
        CacheLayout layout = by_head ? cache_by_head(S, HS) : cache_by_slot(NKV, HS);
        float* d_caches[2] = {on_backend(nans, cache_size * sizeof(float)), on_backend(nans, cache_size * sizeof(float))};
        B->cache_store(d_caches[0], d_caches[1], d_rows[0], d_rows[1], layout, T, n_past, NKV, HS);
        for (int kind = 0; kind < 2; kind++) {
            float* expected = mallocCheck(cache_size * sizeof(float));
            memcpy(expected, nans, cache_size * sizeof(float));
            for (int t = 0; t < T; t++) {
                for (int h = 0; h < NKV; h++) {
                    for (int e = 0; e < HS; e++) {
                        expected[h * layout.head_stride + (size_t)(n_past + t) * layout.slot_stride + e] =
                            rows[kind][((size_t)t * NKV + h) * HS + e];
                    }
                }
            }
            float* got = mallocCheck(cache_size * sizeof(float));
            B->download(got, d_caches[kind], cache_size * sizeof(float));
            check(memcmp(got, expected, cache_size * sizeof(float)) == 0, "%s: cache_store %s, %s T=%d n_past=%d S=%d NKV=%d HS=%d",
                  B->name, kind ? "values" : "keys", by_head ? "head by head" : "slot by slot", T, n_past, S, NKV, HS);
            free(expected); free(got);
        }
        B->free(d_caches[0]); B->free(d_caches[1]);
    }
    B->free(d_rows[0]); B->free(d_rows[1]); free(rows[0]); free(rows[1]); free(nans);
}

// ---- backward passes and training ops: d-buffers start random on both sides (the ops accumulate) ------

static void test_matmul_backward(int T, int C, int OC) {
    float* dout = random_floats((size_t)T * OC, -1, 1);
    float* inp = random_floats((size_t)T * C, -1, 1);
    float* weight = random_floats((size_t)OC * C, -1, 1);
    float* dinp = random_floats((size_t)T * C, -1, 1);
    float* dweight = random_floats((size_t)OC * C, -1, 1);
    float* d_dout = on_backend(dout, (size_t)T * OC * sizeof(float));
    float* d_inp = on_backend(inp, (size_t)T * C * sizeof(float));
    float* d_weight = on_backend(weight, (size_t)OC * C * sizeof(float));
    float* d_dinp = on_backend(dinp, (size_t)T * C * sizeof(float));
    float* d_dweight = on_backend(dweight, (size_t)OC * C * sizeof(float));
    char what[128];
    matmul_backward_cpu(dinp, dweight, dout, inp, weight, T, C, OC);
    B->matmul_backward(d_dinp, d_dweight, d_dout, d_inp, d_weight, T, C, OC);
    snprintf(what, sizeof(what), "matmul_backward dinp T=%d C=%d OC=%d", T, C, OC);
    check_floats(what, d_dinp, dinp, (size_t)T * C, "reorder");
    snprintf(what, sizeof(what), "matmul_backward dweight T=%d C=%d OC=%d", T, C, OC);
    check_floats(what, d_dweight, dweight, (size_t)OC * C, "reorder");
    // a NULL d-buffer is skipped: once each way, accumulating onto the results above
    matmul_backward_cpu(NULL, dweight, dout, inp, weight, T, C, OC);
    B->matmul_backward(NULL, d_dweight, d_dout, d_inp, d_weight, T, C, OC);
    matmul_backward_cpu(dinp, NULL, dout, inp, weight, T, C, OC);
    B->matmul_backward(d_dinp, NULL, d_dout, d_inp, d_weight, T, C, OC);
    snprintf(what, sizeof(what), "matmul_backward dinp (second call, NULL dweight) T=%d C=%d OC=%d", T, C, OC);
    check_floats(what, d_dinp, dinp, (size_t)T * C, "reorder");
    snprintf(what, sizeof(what), "matmul_backward dweight (second call, NULL dinp) T=%d C=%d OC=%d", T, C, OC);
    check_floats(what, d_dweight, dweight, (size_t)OC * C, "reorder");
    B->free(d_dout); B->free(d_inp); B->free(d_weight); B->free(d_dinp); B->free(d_dweight);
    free(dout); free(inp); free(weight); free(dinp); free(dweight);
}

static void test_rmsnorm_backward(int T, int C, int null_dinp) {
    size_t n = (size_t)T * C;
    float* dout = random_floats(n, -1, 1);
    float* inp = random_floats(n, -3, 3);
    float* weight = random_floats(C, 0.5f, 1.5f);
    float* dinp = random_floats(n, -1, 1);
    float* dweight = random_floats(C, -1, 1);
    float eps = 1e-5f;
    float* d_dout = on_backend(dout, n * sizeof(float));
    float* d_inp = on_backend(inp, n * sizeof(float));
    float* d_weight = on_backend(weight, C * sizeof(float));
    float* d_dinp = on_backend(dinp, n * sizeof(float));
    float* d_dweight = on_backend(dweight, C * sizeof(float));
    rmsnorm_backward_cpu(null_dinp ? NULL : dinp, dweight, dout, inp, weight, T, C, eps);
    B->rmsnorm_backward(null_dinp ? NULL : d_dinp, d_dweight, d_dout, d_inp, d_weight, T, C, eps);
    char what[128];
    snprintf(what, sizeof(what), "rmsnorm_backward dinp T=%d C=%d%s", T, C, null_dinp ? " (NULL: untouched)" : "");
    check_floats(what, d_dinp, dinp, n, "reorder");
    snprintf(what, sizeof(what), "rmsnorm_backward dweight T=%d C=%d", T, C);
    check_floats(what, d_dweight, dweight, C, "reorder");
    rmsnorm_backward_cpu(dinp, NULL, dout, inp, weight, T, C, eps);
    B->rmsnorm_backward(d_dinp, NULL, d_dout, d_inp, d_weight, T, C, eps);
    snprintf(what, sizeof(what), "rmsnorm_backward dinp (NULL dweight) T=%d C=%d", T, C);
    check_floats(what, d_dinp, dinp, n, "reorder");
    B->free(d_dout); B->free(d_inp); B->free(d_weight); B->free(d_dinp); B->free(d_dweight);
    free(dout); free(inp); free(weight); free(dinp); free(dweight);
}

static void test_rope_backward(int T, int n_heads, int HS, float theta, int max_position) {
    size_t n = (size_t)T * n_heads * HS;
    float* dout = random_floats(n, -1, 1);
    int* positions = mallocCheck((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) { positions[t] = (int)(random_u32(&rng_state) % (uint32_t)(max_position + 1)); }
    positions[0] = max_position;
    if (T > 2) { positions[2] = positions[1]; }
    float* expected = mallocCheck(n * sizeof(float));
    rope_backward_cpu(expected, dout, positions, T, n_heads, HS, theta);
    float* d_dout = on_backend(dout, n * sizeof(float));
    int* d_positions = on_backend(positions, (size_t)T * sizeof(int));
    float* nans = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { nans[i] = NAN; } // it assigns: every element must be written
    float* d_dinp = on_backend(nans, n * sizeof(float));
    B->rope_backward(d_dinp, d_dout, d_positions, T, n_heads, HS, theta);
    char what[128];
    snprintf(what, sizeof(what), "rope_backward T=%d heads=%d HS=%d theta=%g max_position=%d", T, n_heads, HS, theta, max_position);
    check_floats(what, d_dinp, expected, n, "reorder");
    B->rope_backward(d_dout, d_dout, d_positions, T, n_heads, HS, theta); // in place
    snprintf(what, sizeof(what), "rope_backward in place T=%d heads=%d HS=%d", T, n_heads, HS);
    check_floats(what, d_dout, expected, n, "reorder");
    B->free(d_dout); B->free(d_positions); B->free(d_dinp);
    free(dout); free(positions); free(expected); free(nans);
}

// which: 0 all three d-buffers, 1 dq NULL, 2 dkeys and dvalues NULL
static void test_attention_backward(int T, int P, int NH, int NKV, int HS, int mask_kind, const int* fully_masked, int which) {
    size_t q_size = (size_t)T * NH * HS, kv_size = (size_t)P * NKV * HS;
    float* q = random_floats(q_size, -1, 1);
    float* keys = random_floats(kv_size, -1, 1);
    float* values = random_floats(kv_size, -1, 1);
    float* dout = random_floats(q_size, -1, 1);
    float* dq = random_floats(q_size, -1, 1);
    float* dkeys = random_floats(kv_size, -1, 1);
    float* dvalues = random_floats(kv_size, -1, 1);
    uint8_t* mask = mallocCheck((size_t)T * P);
    make_mask(mask, mask_kind, T, P, fully_masked);
    float* d_q = on_backend(q, q_size * sizeof(float));
    float* d_keys = on_backend(keys, kv_size * sizeof(float));
    float* d_values = on_backend(values, kv_size * sizeof(float));
    float* d_dout = on_backend(dout, q_size * sizeof(float));
    float* d_dq = on_backend(dq, q_size * sizeof(float));
    float* d_dkeys = on_backend(dkeys, kv_size * sizeof(float));
    float* d_dvalues = on_backend(dvalues, kv_size * sizeof(float));
    uint8_t* d_mask = on_backend(mask, (size_t)T * P);
    float* start = copy_floats(dkeys, kv_size); // for the determinism check below
    attention_backward_cpu(which == 1 ? NULL : dq, which == 2 ? NULL : dkeys, which == 2 ? NULL : dvalues, dout, q, keys,
                           values, mask, T, P, NH, NKV, HS);
    B->attention_backward(which == 1 ? NULL : d_dq, which == 2 ? NULL : d_dkeys, which == 2 ? NULL : d_dvalues, d_dout, d_q,
                          d_keys, d_values, d_mask, T, P, NH, NKV, HS);
    const char* nulls[3] = {"", " (dq NULL)", " (dkeys, dvalues NULL)"};
    char what[160];
    snprintf(what, sizeof(what), "attention_backward dq T=%d P=%d NH=%d NKV=%d HS=%d %s%s", T, P, NH, NKV, HS,
             MASK_NAMES[mask_kind], nulls[which]);
    check_floats(what, d_dq, dq, q_size, "reorder");
    snprintf(what, sizeof(what), "attention_backward dkeys T=%d P=%d NH=%d NKV=%d HS=%d %s%s", T, P, NH, NKV, HS,
             MASK_NAMES[mask_kind], nulls[which]);
    check_floats(what, d_dkeys, dkeys, kv_size, "reorder");
    snprintf(what, sizeof(what), "attention_backward dvalues T=%d P=%d NH=%d NKV=%d HS=%d %s%s", T, P, NH, NKV, HS,
             MASK_NAMES[mask_kind], nulls[which]);
    check_floats(what, d_dvalues, dvalues, kv_size, "reorder");
    // deterministic: two runs from the same start give the same bits (no atomics)
    if (which == 0) {
        float* runs[2];
        for (int run = 0; run < 2; run++) {
            B->upload(d_dkeys, start, kv_size * sizeof(float));
            B->attention_backward(NULL, d_dkeys, NULL, d_dout, d_q, d_keys, d_values, d_mask, T, P, NH, NKV, HS);
            runs[run] = mallocCheck(kv_size * sizeof(float));
            B->download(runs[run], d_dkeys, kv_size * sizeof(float));
        }
        check(memcmp(runs[0], runs[1], kv_size * sizeof(float)) == 0, "%s: attention_backward T=%d P=%d: two runs differ",
              B->name, T, P);
        free(runs[0]); free(runs[1]);
    }
    B->free(d_q); B->free(d_keys); B->free(d_values); B->free(d_dout); B->free(d_dq); B->free(d_dkeys);
    B->free(d_dvalues); B->free(d_mask);
    free(q); free(keys); free(values); free(dout); free(dq); free(dkeys); free(dvalues); free(mask); free(start);
}

static void test_swiglu_backward(int N) {
    float* dout = random_floats(N, -1, 1);
    float* gate = random_floats(N, -6, 6);
    float* up = random_floats(N, -2, 2);
    float* dgate = random_floats(N, -1, 1);
    float* dup = random_floats(N, -1, 1);
    float* d_dout = on_backend(dout, (size_t)N * sizeof(float));
    float* d_gate = on_backend(gate, (size_t)N * sizeof(float));
    float* d_up = on_backend(up, (size_t)N * sizeof(float));
    float* d_dgate = on_backend(dgate, (size_t)N * sizeof(float));
    float* d_dup = on_backend(dup, (size_t)N * sizeof(float));
    swiglu_backward_cpu(dgate, dup, dout, gate, up, N);
    B->swiglu_backward(d_dgate, d_dup, d_dout, d_gate, d_up, N);
    swiglu_backward_cpu(NULL, dup, dout, gate, up, N);
    B->swiglu_backward(NULL, d_dup, d_dout, d_gate, d_up, N);
    swiglu_backward_cpu(dgate, NULL, dout, gate, up, N);
    B->swiglu_backward(d_dgate, NULL, d_dout, d_gate, d_up, N);
    char what[96];
    snprintf(what, sizeof(what), "swiglu_backward dgate N=%d", N);
    check_floats(what, d_dgate, dgate, N, "reorder");
    snprintf(what, sizeof(what), "swiglu_backward dup N=%d", N);
    check_floats(what, d_dup, dup, N, "reorder");
    B->free(d_dout); B->free(d_gate); B->free(d_up); B->free(d_dgate); B->free(d_dup);
    free(dout); free(gate); free(up); free(dgate); free(dup);
}

// p_target rows: softmax of random logits with about a quarter of the entries exactly 0 (the forward KL
// skips them, the reverse KL clamps their log); weights random, one 0; dlogits start random.
static void test_distribution_loss(int T, int V, LossKind kind) {
    size_t n = (size_t)T * V;
    float* logits = random_floats(n, -4, 4);
    float* p_target = random_floats(n, -3, 3);
    softmax_forward_cpu(p_target, p_target, T, V);
    for (size_t i = 0; i < n; i++) { if ((random_u32(&rng_state) & 3u) == 0) { p_target[i] = 0.0f; } }
    int* tokens = mallocCheck((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) { tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V); }
    float* weights = random_floats(T, 0, 2);
    weights[0] = 0.0f;
    float* dlogits = random_floats(n, -1, 1);
    float* losses = mallocCheck((size_t)T * sizeof(float));
    float* d_logits = on_backend(logits, n * sizeof(float));
    float* d_p = on_backend(p_target, n * sizeof(float));
    int* d_tokens = on_backend(tokens, (size_t)T * sizeof(int));
    float* d_weights = on_backend(weights, (size_t)T * sizeof(float));
    float* d_dlogits = on_backend(dlogits, n * sizeof(float));
    float* d_losses = B->alloc((size_t)T * sizeof(float));
    const char* names[3] = {"forward KL", "reverse KL", "next token"};
    const float* p_arg = kind == LOSS_NEXT_TOKEN ? NULL : p_target; // NULL allowed where unused
    const float* d_p_arg = kind == LOSS_NEXT_TOKEN ? NULL : d_p;
    const int* tokens_arg = kind == LOSS_NEXT_TOKEN ? tokens : NULL;
    const int* d_tokens_arg = kind == LOSS_NEXT_TOKEN ? d_tokens : NULL;
    char what[128];
    // losses only
    distribution_loss_cpu(losses, NULL, logits, p_arg, tokens_arg, NULL, T, V, kind);
    B->distribution_loss(d_losses, NULL, d_logits, d_p_arg, d_tokens_arg, NULL, T, V, kind);
    snprintf(what, sizeof(what), "distribution_loss %s losses T=%d V=%d", names[kind], T, V);
    check_floats(what, d_losses, losses, T, "reorder");
    // losses and weighted gradients, accumulated; then unweighted (weights NULL)
    distribution_loss_cpu(losses, dlogits, logits, p_arg, tokens_arg, weights, T, V, kind);
    B->distribution_loss(d_losses, d_dlogits, d_logits, d_p_arg, d_tokens_arg, d_weights, T, V, kind);
    distribution_loss_cpu(losses, dlogits, logits, p_arg, tokens_arg, NULL, T, V, kind);
    B->distribution_loss(d_losses, d_dlogits, d_logits, d_p_arg, d_tokens_arg, NULL, T, V, kind);
    snprintf(what, sizeof(what), "distribution_loss %s losses (with gradient) T=%d V=%d", names[kind], T, V);
    check_floats(what, d_losses, losses, T, "reorder");
    snprintf(what, sizeof(what), "distribution_loss %s dlogits T=%d V=%d", names[kind], T, V);
    check_floats(what, d_dlogits, dlogits, n, "reorder");
    B->free(d_logits); B->free(d_p); B->free(d_tokens); B->free(d_weights); B->free(d_dlogits); B->free(d_losses);
    free(logits); free(p_target); free(tokens); free(weights); free(dlogits); free(losses);
}

// Three AdamW steps from zero moments (bias corrections t = 1, 2, 3), with weight decay.
static void test_adamw(size_t N) {
    float* params = random_floats(N, -1, 1);
    float* m = callocCheck(N, sizeof(float));
    float* v = callocCheck(N, sizeof(float));
    float* d_params = on_backend(params, N * sizeof(float));
    float* d_m = on_backend(m, N * sizeof(float));
    float* d_v = on_backend(v, N * sizeof(float));
    float* d_grads = B->alloc(N * sizeof(float));
    for (int t = 1; t <= 3; t++) {
        float* grads = random_floats(N, -1, 1);
        grads[0] = 0.0f;
        if (N > 1) { grads[1] = 1e-9f; } // far below eps: the update stays small
        B->upload(d_grads, grads, N * sizeof(float));
        float clip = t == 2 ? 0.37f : 1.0f;   // a clipping factor on one step
        adamw_update_cpu(params, grads, clip, m, v, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
        B->adamw_update(d_params, d_grads, clip, d_m, d_v, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
        free(grads);
    }
    char what[96];
    snprintf(what, sizeof(what), "adamw_update params N=%zu (3 steps)", N);
    check_floats(what, d_params, params, N, "reorder");
    snprintf(what, sizeof(what), "adamw_update m N=%zu", N);
    check_floats(what, d_m, m, N, "reorder");
    snprintf(what, sizeof(what), "adamw_update v N=%zu", N);
    check_floats(what, d_v, v, N, "reorder");
    B->free(d_params); B->free(d_m); B->free(d_v); B->free(d_grads);
    free(params); free(m); free(v);
}

static void test_sum_squares(size_t N) {
    float* values = random_floats(N, -3, 3);
    float* d_values = on_backend(values, N * sizeof(float));
    double expected = sum_squares_cpu(values, N);
    double got = B->sum_squares(d_values, N);
    double again = B->sum_squares(d_values, N);
    // both sums in double: their different orders differ by a few units of 1e-16 per term at most
    check(fabs(got - expected) <= 1e-11 * fabs(expected), "%s: sum_squares N=%zu: %.17g, reference %.17g", B->name, N,
          got, expected);
    check(memcmp(&got, &again, sizeof(double)) == 0, "%s: sum_squares N=%zu: two runs differ (%.17g, %.17g)", B->name, N,
          got, again);
    B->free(d_values);
    free(values);
}

// ---- data movement ---------------------------------------------------------------------------------

static void test_data_movement(int n, int C) {
    int source_rows = 2 * n + 3;
    float* source = random_floats((size_t)source_rows * C, -1, 1);
    int* rows = mallocCheck((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) { rows[i] = 2 * i + (int)(random_u32(&rng_state) % 2u); } // distinct, in any order below
    if (n > 1) { int swap = rows[0]; rows[0] = rows[n - 1]; rows[n - 1] = swap; }
    float* d_source = on_backend(source, (size_t)source_rows * C * sizeof(float));
    int* d_rows = on_backend(rows, (size_t)n * sizeof(int));
    char what[96];
    // gather
    float* gathered = mallocCheck((size_t)n * C * sizeof(float));
    gather_rows_cpu(gathered, source, rows, n, C);
    float* d_gathered = B->alloc((size_t)n * C * sizeof(float));
    B->gather_rows(d_gathered, d_source, d_rows, n, C);
    snprintf(what, sizeof(what), "gather_rows n=%d C=%d", n, C);
    check_floats(what, d_gathered, gathered, (size_t)n * C, "exact");
    // scatter-add into a non-zero destination
    scatter_add_rows_cpu(source, gathered, rows, n, C);
    B->scatter_add_rows(d_source, d_gathered, d_rows, n, C);
    snprintf(what, sizeof(what), "scatter_add_rows n=%d C=%d", n, C);
    check_floats(what, d_source, source, (size_t)source_rows * C, "exact");
    // a column block: rows of width C - 1 from a stride-C matrix into the middle of a stride-(2C + 1) one
    int width = C > 1 ? C - 1 : 1, out_stride = 2 * C + 1;
    float* wide = random_floats((size_t)source_rows * out_stride, -1, 1);
    float* d_wide = on_backend(wide, (size_t)source_rows * out_stride * sizeof(float));
    copy_strided_cpu(wide + 1, source, source_rows, width, out_stride, C);
    B->copy_strided(d_wide + 1, d_source, source_rows, width, out_stride, C);
    snprintf(what, sizeof(what), "copy_strided T=%d width=%d", source_rows, width);
    check_floats(what, d_wide, wide, (size_t)source_rows * out_stride, "exact");
    B->free(d_source); B->free(d_rows); B->free(d_gathered); B->free(d_wide);
    free(source); free(rows); free(gathered); free(wide);
}

// argmax_rows must be sample_argmax exactly: values with few distinct levels (ties everywhere), rows of
// -inf, NaNs (never chosen, except at index 0, which stays the answer), +inf.
static void test_argmax_rows(int T, int V, int n_levels) {
    size_t n = (size_t)T * V;
    float* values = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { values[i] = (float)(random_u32(&rng_state) % (uint32_t)n_levels); }
    for (int t = 0; t < T; t++) {
        float* row = values + (size_t)t * V;
        if (t % 5 == 1) { for (int i = 0; i < V; i++) { row[i] = -INFINITY; } }
        if (t % 5 == 2 && V > 2) { row[V / 2] = NAN; row[V - 1] = (float)n_levels; }
        if (t % 5 == 3) { row[0] = NAN; }
        if (t % 5 == 4 && V > 1) { row[V - 1] = INFINITY; }
    }
    int* expected = mallocCheck((size_t)T * sizeof(int));
    argmax_rows_cpu(expected, values, T, V);
    float* d_values = on_backend(values, n * sizeof(float));
    int* d_out = B->alloc((size_t)T * sizeof(int));
    B->argmax_rows(d_out, d_values, T, V);
    char what[96];
    snprintf(what, sizeof(what), "argmax_rows T=%d V=%d levels=%d", T, V, n_levels);
    check_backend(what, ELEMENT_I32, d_out, expected, T, "exact");
    B->free(d_values); B->free(d_out);
    free(values); free(expected);
}

static void test_ops(void) {
    const int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
    for (int i = 0; i < 6; i++) { test_upload_matrix(types[i], 7, 64); }
    test_embedding(1, 1, 1);
    test_embedding(5, 7, 11);
    test_embedding(33, 64, 50);
    test_rmsnorm(1, 1);
    test_rmsnorm(3, 7);
    test_rmsnorm(17, 300);
    test_rmsnorm(4, 1000);
    test_matmul(1, 1, 1);
    test_matmul(1, 17, 33);
    test_matmul(7, 37, 19);
    test_matmul(33, 64, 100);
    test_matmul(20, 129, 257);
    test_matmul_types(1, 64, 37);
    test_matmul_types(6, 96, 50);
    test_matmul_types(17, 96, 33);
    test_rope(1, 1, 2, 10000.0f, 0);
    test_rope(5, 3, 8, 10000.0f, 1000);
    test_rope(9, 4, 64, 10000.0f, 4000);
    test_rope(3, 2, 64, 500000.0f, 30000);
    int no_rows[] = {-1};
    int rows_0_and_3[] = {0, 3, -1};
    int row_1[] = {1, -1};
    test_attention(1, 1, 1, 1, 2, MASK_CAUSAL, no_rows);
    test_attention(1, 9, 4, 2, 8, MASK_CAUSAL, no_rows);      // decode, GQA
    test_attention(7, 7, 4, 4, 16, MASK_CAUSAL, no_rows);     // prefill, plain multi-head
    test_attention(5, 12, 6, 3, 10, MASK_TREE, no_rows);      // tree verify over a prefix
    test_attention(6, 13, 6, 2, 10, MASK_RANDOM, rows_0_and_3); // random mask, fully masked rows
    test_attention(4, 4, 8, 1, 6, MASK_TREE, row_1);          // no prefix, one key/value head
    test_attention(5, 300, 8, 2, 64, MASK_CAUSAL, no_rows);   // a longer cache
    test_attention(3, 257, 9, 3, 64, MASK_RANDOM, row_1);
    // long caches: on CUDA the scores of every slot sit in shared memory beside the kernel's static buffers;
    // 12,100 slots need the opt-in past 48 KiB only with those buffers counted, 13,000 need it anyway
    test_attention(1, 12100, 2, 1, 64, MASK_CAUSAL, no_rows);
    test_attention(2, 13000, 2, 2, 64, MASK_TREE, no_rows);
    test_swiglu_and_residual(1);
    test_swiglu_and_residual(7);
    test_swiglu_and_residual(1001);
    test_softmax(1, 1, 0);
    test_softmax(3, 7, 1);
    test_softmax(4, 1000, 0);
    test_softmax(2, 1001, 1);
    test_kv_compact(1, 8, 1, 0, 1, 0);
    test_kv_compact(3, 40, 16, 5, 6, 0);
    test_kv_compact(2, 64, 24, 7, TREE_MAX_DEPTH + 1, 0);
    test_kv_compact(4, 30, 8, 3, 5, 1);
    test_cache_store(1, 0, 1, 1, 2);
    test_cache_store(1, 9, 12, 3, 64);
    test_cache_store(6, 20, 30, 3, 64);
    test_cache_store(5, 0, 5, 2, 10);
    test_matmul_backward(1, 1, 1);
    test_matmul_backward(7, 37, 19);
    test_matmul_backward(33, 64, 100);
    test_matmul_backward(20, 129, 257);
    test_rmsnorm_backward(1, 1, 0);
    test_rmsnorm_backward(3, 7, 0);
    test_rmsnorm_backward(17, 300, 1);
    test_rmsnorm_backward(40, 1000, 0);
    test_rope_backward(1, 1, 2, 10000.0f, 0);
    test_rope_backward(5, 3, 8, 10000.0f, 1000);
    test_rope_backward(9, 4, 64, 500000.0f, 30000);
    test_attention_backward(1, 1, 1, 1, 2, MASK_CAUSAL, no_rows, 0);
    test_attention_backward(7, 7, 4, 4, 16, MASK_CAUSAL, no_rows, 0);     // plain multi-head
    test_attention_backward(5, 12, 6, 3, 10, MASK_TREE, no_rows, 0);      // GQA, tree over a prefix
    test_attention_backward(6, 13, 6, 2, 10, MASK_RANDOM, rows_0_and_3, 0); // fully masked rows
    test_attention_backward(6, 13, 6, 2, 10, MASK_RANDOM, rows_0_and_3, 1);
    test_attention_backward(4, 4, 8, 1, 6, MASK_TREE, row_1, 2);          // one key/value head
    test_attention_backward(21, 300, 9, 3, 64, MASK_RANDOM, row_1, 0);    // a longer key buffer
    test_swiglu_backward(1);
    test_swiglu_backward(1000);
    const LossKind kinds[3] = {LOSS_FORWARD_KL, LOSS_REVERSE_KL, LOSS_NEXT_TOKEN};
    for (int kind = 0; kind < 3; kind++) {
        test_distribution_loss(1, 1, kinds[kind]);
        test_distribution_loss(5, 7, kinds[kind]);
        test_distribution_loss(9, 1001, kinds[kind]);
    }
    test_adamw(1);
    test_adamw(1000);
    test_adamw(100003);
    test_sum_squares(1);
    test_sum_squares(1000);
    test_sum_squares((1 << 20) + 3);
    test_data_movement(1, 1);
    test_data_movement(9, 33);
    test_argmax_rows(25, 12, 3);
    test_argmax_rows(10, 1000, 4);
    test_argmax_rows(5, 49152, 2);
}

// ==== the orchestration: every named intermediate ===================================================

// Every buffer of an activation table, on the backend under test against the reference's (host memory).
// Buffers absent on both sides are skipped; absent on one side only is a failure.
static void compare_activation_tables(const char* step, const ActivationInfo* got_table, const ActivationInfo* ref_table,
                                      int n) {
    for (int i = 0; i < n; i++) {
        const ActivationInfo* got = &got_table[i];
        const ActivationInfo* ref = &ref_table[i];
        char what[200];
        snprintf(what, sizeof(what), "%s: %s", step, ref->name);
        if (*got->data == NULL || *ref->data == NULL) {
            check(*got->data == NULL && *ref->data == NULL, "%s: %s: allocated on one backend only", B->name, what);
            continue;
        }
        check(got->rows == ref->rows && got->cols == ref->cols && got->kind == ref->kind, "%s: %s: shapes differ", B->name, what);
        int is_float = ref->kind == ELEMENT_F32;
        check_backend(what, ref->kind, *got->data, *ref->data, ref->rows * ref->cols, is_float ? model_tolerance : "exact");
    }
}

// What the host reads after a target call, and the argmax tokens of each logits row.
// The argmax of a logits row must be the reference's; with int8 arithmetic ("int8_model") a different pick is
// allowed only as a near tie: the reference's own logit there within the tolerance of its top logit.
static void check_argmax(const char* step, int r, const float* got_row, const float* ref_row, int V) {
    int ref_token = sample_argmax(ref_row, V), got_token = sample_argmax(got_row, V);
    if (strcmp(model_tolerance, "layer") == 0 || ref_token == got_token) {
        check(ref_token == got_token, "%s: %s: argmax of logits row %d: %d, reference %d", B->name, step, r, got_token, ref_token);
        return;
    }
    Tolerance tol = tolerance(model_tolerance);
    float margin = ref_row[ref_token] - ref_row[got_token];
    check(margin <= tol.atol + tol.rtol * fabsf(ref_row[ref_token]), "%s: %s: argmax of logits row %d: %d, reference %d, "
          "which the reference prefers by %g (beyond %s)", B->name, step, r, got_token, ref_token, margin, tol.name);
}

static void compare_target_host(const char* step, const Target* got, const Target* ref, int T, int all_logits) {
    const TargetConfig* c = &ref->config;
    int C = c->dim, V = c->vocab_size, rows = all_logits ? T : 1;
    char what[200];
    snprintf(what, sizeof(what), "%s: %s: host features", B->name, step);
    check_tensor(what, got->host.features, ref->host.features, (size_t)T * TAP_LAYERS * C, tolerance(model_tolerance));
    snprintf(what, sizeof(what), "%s: %s: host hidden", B->name, step);
    check_tensor(what, got->host.hidden, ref->host.hidden, (size_t)T * C, tolerance(model_tolerance));
    snprintf(what, sizeof(what), "%s: %s: host logits", B->name, step);
    check_tensor(what, got->host.logits, ref->host.logits, (size_t)rows * V, tolerance(model_tolerance));
    for (int r = 0; r < rows; r++) { check_argmax(step, r, got->host.logits + (size_t)r * V, ref->host.logits + (size_t)r * V, V); }
}

static void forward_spans_both(const char* step, Target* ref, Target* got, const int* tokens, const int* positions,
                               const uint8_t* mask, const SequenceSpan* spans, int n_spans, int all_logits) {
    target_forward_spans(ref, tokens, positions, mask, spans, n_spans, all_logits);
    target_forward_spans(got, tokens, positions, mask, spans, n_spans, all_logits);
    compare_activation_tables(step, got->act.table, ref->act.table, TARGET_NUM_ACTIVATIONS);
    compare_target_host(step, got, ref, spans[n_spans - 1].row + spans[n_spans - 1].n, all_logits);
}

static void forward_both(const char* step, Target* ref, Target* got, const int* tokens, const int* positions,
                         const uint8_t* mask, int T, int n_past, int all_logits) {
    SequenceSpan span = {0, T, 0, n_past};   // (target_forward's one span)
    forward_spans_both(step, ref, got, tokens, positions, mask, &span, 1, all_logits);
}

static int load_pair(const TinyModelSpec* spec, Target* ref, Target* got, int cache_capacity, int max_tokens) {
    char path[256];
    snprintf(path, sizeof(path), "/tmp/aurora_test_backends_%d_%llu.gguf", (int)getpid(), (unsigned long long)spec->seed);
    Error err;
    int status = tiny_model_write(path, spec, &err);
    if (status == 0) { status = target_load(ref, path, &backend_cpu_ref, cache_capacity, max_tokens, &err); }
    if (status == 0 && target_load(got, path, B, cache_capacity, max_tokens, &err) != 0) { target_free(ref); status = -1; }
    remove(path);
    check(status == 0, "model setup: %s", err.message);
    return status;
}

// A prefill, three decodes, a tree verify, a decode after the tree, a compaction and a decode; then a second
// sequence's prefill at its own slots and one call of three sequences' spans.
static void test_target(const TinyModelSpec* spec) {
    Target ref, got;
    if (load_pair(spec, &ref, &got, 32, 16) != 0) { return; }
    model_tolerance = int8_arithmetic(spec->weight_type) ? "int8_model" : "layer";
    target_keep_layer_outputs(&ref);
    target_keep_layer_outputs(&got);
    const TargetConfig* c = &ref.config;
    char step[160];
    char model[64];
    snprintf(model, sizeof(model), "%s %s NH=%d NKV=%d", spec->tied_output ? "tied" : "untied",
             tensor_type_name(spec->weight_type), c->n_heads, c->n_kv_heads);

    // prefill: 7 tokens, causal, logits of the last row only
    int prompt[7], positions[7];
    for (int t = 0; t < 7; t++) { prompt[t] = (int)(random_u32(&rng_state) % (uint32_t)c->vocab_size); positions[t] = t; }
    snprintf(step, sizeof(step), "%s: prefill T=7", model);
    forward_both(step, &ref, &got, prompt, positions, NULL, 7, 0, 0);
    int n_past = 7;
    // decode: three single tokens, each the reference's greedy choice
    for (int i = 0; i < 3; i++) {
        int token = sample_argmax(ref.host.logits, c->vocab_size), position = n_past;
        snprintf(step, sizeof(step), "%s: decode %d (n_past=%d)", model, i, n_past);
        forward_both(step, &ref, &got, &token, &position, NULL, 1, n_past, 0);
        n_past++;
    }
    // tree verify: 6 nodes, parents {-, 0, 0, 1, 2, 1}; siblings share positions (depth-based)
    Tree tree;
    memset(&tree, 0, sizeof(tree));
    tree.n_nodes = 6;
    tree.root_position = n_past;
    const int parents[6] = {-1, 0, 0, 1, 2, 1};
    for (int i = 0; i < 6; i++) { tree.parents[i] = parents[i]; tree.tokens[i] = (int)(random_u32(&rng_state) % (uint32_t)c->vocab_size); }
    Error err;
    if (tree_derive(&tree, &err) != 0) { check(0, "test bug: %s", err.message); }
    uint8_t mask[6 * (32 + 6)];
    tree_attention_mask(mask, &tree, n_past);
    snprintf(step, sizeof(step), "%s: tree verify T=6 (n_past=%d)", model, n_past);
    forward_both(step, &ref, &got, tree.tokens, tree.positions, mask, 6, n_past, 1);
    // keep the path 0-1-5, as an acceptance would, then decode after it
    int slots[3] = {n_past + 0, n_past + 1, n_past + 5};
    target_compact(&ref, slots, 3, n_past);
    target_compact(&got, slots, 3, n_past);
    snprintf(step, sizeof(step), "%s: after compacting a path of 3", model);
    compare_activation_tables(step, got.act.table, ref.act.table, TARGET_NUM_ACTIVATIONS);
    n_past += 3;
    int token = tree.tokens[5], position = n_past;
    snprintf(step, sizeof(step), "%s: decode after the path (n_past=%d)", model, n_past);
    forward_both(step, &ref, &got, &token, &position, NULL, 1, n_past, 1);
    n_past++;
    // several sequences in one call (record_batch): a second sequence's 4 tokens at slots from 16, then one
    // call of three spans: the first sequence's next token, the second's next 2, a third's first token at 24
    int second[6], third = 5;
    for (int t = 0; t < 6; t++) { second[t] = (int)(random_u32(&rng_state) % (uint32_t)c->vocab_size); }
    snprintf(step, sizeof(step), "%s: a second sequence's prefill at slot 16", model);
    SequenceSpan prefill = {0, 4, 16, 0};
    forward_spans_both(step, &ref, &got, second, (int[4]){0, 1, 2, 3}, NULL, &prefill, 1, 1);
    int tokens[4] = {tree.tokens[2], second[4], second[5], third}, span_positions[4] = {n_past, 4, 5, 0};
    SequenceSpan spans[3] = {{0, 1, 0, n_past}, {1, 2, 16, 4}, {3, 1, 24, 0}};
    snprintf(step, sizeof(step), "%s: three sequences in one call", model);
    forward_spans_both(step, &ref, &got, tokens, span_positions, NULL, spans, 3, 1);
    target_free(&ref);
    target_free(&got);
    model_tolerance = "layer";
}

// ---- the draft --------------------------------------------------------------------------------------

static void compare_draft(const char* step, Draft* got, Draft* ref, int T) {
    compare_activation_tables(step, got->act.table, ref->act.table, DRAFT_NUM_ACTIVATIONS);
    size_t cache = (size_t)ref->cache_capacity * ref->config.n_kv_heads * ref->config.head_size;
    char what[200];
    snprintf(what, sizeof(what), "%s: key_cache", step);
    check_floats(what, got->key_cache, ref->key_cache, cache, model_tolerance);
    snprintf(what, sizeof(what), "%s: value_cache", step);
    check_floats(what, got->value_cache, ref->value_cache, cache, model_tolerance);
    snprintf(what, sizeof(what), "%s: %s: host out", B->name, step);
    check_tensor(what, got->host.out, ref->host.out, (size_t)T * ref->config.dim, tolerance(model_tolerance));
    snprintf(what, sizeof(what), "%s: %s: host logits", B->name, step);
    check_tensor(what, got->host.logits, ref->host.logits, (size_t)T * ref->config.vocab_size, tolerance(model_tolerance));
}

// The reference computes with the weights the backend under test serves: every matrix its serving copy
// quantises (in type; draft_serving_quantises) rounded in place through that type, so what remains
// between the two is the arithmetic (int8 activations: "int8_model"), not the copy's rounding of the weights
// (a Q4_1 copy's is a tenth of their RMS and more, compounded through the layer, past that bound). The draft is
// bound to arena.
static void round_as_served(Draft* ref, float* arena, int type) {
    if (type == TYPE_F32) { return; }
    const float* bound = *ref->tensors[0].data;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &ref->tensors[i];
        if (!draft_serving_quantises(info, type)) { continue; }
        float* values = arena + (*info->data - bound);
        int64_t n = (int64_t)info->rows * info->cols;
        uint8_t* stored = mallocCheck(tensor_bytes(type, n));
        quantize_row(type, values, stored, n);
        dequantize_row(type, stored, values, n);
        free(stored);
    }
    draft_upload_weights(ref);
}

// u = fc(g), a causal extend of 5 positions, a tree step of 4 nodes with an explicit mask, the step again
// after new host weights are uploaded, and after a hot swap to another arena; the draft under test served with
// its matrices in type (draft_serve_as: the backend's draft_type, or another as --draft-type asks).
static void test_draft(const TinyModelSpec* spec, int draft_vocab, int type) {
    Target ref_target, got_target;
    if (load_pair(spec, &ref_target, &got_target, 32, 16) != 0) { return; }
    Draft ref, got;
    draft_init_random(&ref, &ref_target, draft_vocab, NULL, 5);
    draft_init_random(&got, &got_target, draft_vocab, NULL, 5);
    draft_alloc_state(&ref, 24, 16);
    draft_alloc_state(&got, 24, 16);
    if (type != got.serving_type) { draft_serve_as(&got, type); }
    check(got.serving_type == type, "draft_serve_as: serving type %s, expected %s", tensor_type_name(got.serving_type),
          tensor_type_name(type));
    round_as_served(&ref, ref.weight_arena, type);
    int C = ref.config.dim, V = ref_target.config.vocab_size;
    model_tolerance = draft_int8_arithmetic(type) ? "int8_model" : "layer";
    char step[160], label[64];
    snprintf(label, sizeof(label), "draft C=%d V_d=%d served %s", C, draft_vocab, tensor_type_name(type));

    enum { T1 = 5, NODES = 4 };
    float* features = random_floats((size_t)T1 * TAP_LAYERS * C, -2, 2);
    float* ref_u = mallocCheck((size_t)T1 * C * sizeof(float));
    float* got_u = mallocCheck((size_t)T1 * C * sizeof(float));
    draft_project_features(&ref, ref_u, features, T1);
    draft_project_features(&got, got_u, features, T1);
    snprintf(step, sizeof(step), "%s: %s: project features T=%d", B->name, label, T1);
    check_tensor(step, got_u, ref_u, (size_t)T1 * C, tolerance(draft_int8_arithmetic(type) ? "int8_model" : "reorder"));
    int tokens[T1], positions[T1];
    for (int t = 0; t < T1; t++) { tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V); positions[t] = t; }
    tokens[T1 - 1] = V - 1; // the last row of the embedding table too
    draft_forward(&ref, tokens, ref_u, positions, NULL, T1, 0);
    draft_forward(&got, tokens, ref_u, positions, NULL, T1, 0); // the same input on both
    snprintf(step, sizeof(step), "%s: causal extend T=%d", label, T1);
    compare_draft(step, &got, &ref, T1);
    check_extend(&got, label, tokens, ref_u, positions, T1, 0);
    if (type != B->draft_type) {   // negative control: a draft still served in the table's own type (a copy
        Draft stale;               // draft_serve_as did not re-make) differs from this reference past the tolerance
        draft_init_random(&stale, &got_target, draft_vocab, NULL, 5);
        draft_alloc_state(&stale, 24, 8);
        draft_forward(&stale, tokens, ref_u, positions, NULL, T1, 0);
        // counted over the activations from q on (the first product with the served matrices; before it come the
        // inputs and the embedding, which the serving copy does not touch), host-memory tables
        Tolerance tol = tolerance(model_tolerance);
        long mismatches = 0;
        int from_q = 0;
        for (int i = 0; i < DRAFT_NUM_ACTIVATIONS; i++) {
            const ActivationInfo* a = &stale.act.table[i];
            from_q |= strcmp(a->name, "q") == 0;
            if (!from_q || *a->data == NULL || a->kind != ELEMENT_F32) { continue; }
            const float* g = *a->data;
            const float* r = *ref.act.table[i].data;
            for (size_t e = 0; e < a->rows * a->cols; e++) { mismatches += !(fabsf(g[e] - r[e]) <= tol.atol + tol.rtol * fabsf(r[e])); }
        }
        check(mismatches > 0, "%s: a draft served in %s instead of %s went unnoticed", label,
              tensor_type_name(stale.serving_type), tensor_type_name(type));
        draft_free(&stale);
    }

    // tree step: parents {-, 0, 0, 1}; u of node i is a reference output row (the same input for both)
    int parent[NODES] = {-1, 0, 0, 1};
    int node_tokens[NODES], node_positions[NODES];
    int P = T1 + NODES;
    uint8_t mask[NODES * (T1 + NODES)];
    memset(mask, 0, sizeof(mask));
    float* node_u = mallocCheck((size_t)NODES * C * sizeof(float));
    for (int t = 0; t < NODES; t++) {
        node_tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V);
        memset(mask + (size_t)t * P, 1, T1);
        int depth = 0;
        for (int node = t; node >= 0; node = parent[node]) { mask[(size_t)t * P + T1 + node] = 1; depth += node != t; }
        node_positions[t] = T1 - 1 + depth;
        memcpy(node_u + (size_t)t * C, ref.host.out + (size_t)(T1 - 1 - t % 2) * C, (size_t)C * sizeof(float));
    }
    draft_forward(&ref, node_tokens, node_u, node_positions, mask, NODES, T1);
    draft_forward(&got, node_tokens, node_u, node_positions, mask, NODES, T1);
    snprintf(step, sizeof(step), "%s: tree step T=%d (n_past=%d)", label, NODES, T1);
    compare_draft(step, &got, &ref, NODES);

    // new host weights on both, brought to the backend; the same tree step again
    uint64_t perturb = random_seed_state(77);
    for (size_t i = 0; i < ref.n_weight_floats; i++) { ref.weight_arena[i] += 0.05f * (2.0f * random_f32(&perturb) - 1.0f); }
    memcpy(got.weight_arena, ref.weight_arena, ref.n_weight_floats * sizeof(float));
    round_as_served(&ref, ref.weight_arena, type);
    draft_upload_weights(&got);
    draft_forward(&ref, node_tokens, node_u, node_positions, mask, NODES, T1);
    draft_forward(&got, node_tokens, node_u, node_positions, mask, NODES, T1);
    snprintf(step, sizeof(step), "%s: tree step after draft_upload_weights", label);
    compare_draft(step, &got, &ref, NODES);

    // a hot swap: the weights of another arena (as a publish hands them over)
    float* published = mallocCheck(ref.n_weight_floats * sizeof(float));
    float* published_ref = mallocCheck(ref.n_weight_floats * sizeof(float));
    for (size_t i = 0; i < ref.n_weight_floats; i++) { published[i] = got.weight_arena[i] * 0.9f; }
    memcpy(published_ref, published, ref.n_weight_floats * sizeof(float));
    draft_use_weights(&ref, published_ref);
    round_as_served(&ref, published_ref, type);
    draft_use_weights(&got, published);
    draft_forward(&ref, node_tokens, node_u, node_positions, mask, NODES, T1);
    draft_forward(&got, node_tokens, node_u, node_positions, mask, NODES, T1);
    snprintf(step, sizeof(step), "%s: tree step after draft_use_weights (hot swap)", label);
    compare_draft(step, &got, &ref, NODES);
    draft_use_weights(&ref, ref.weight_arena); // before freeing: the draft does not own published
    draft_use_weights(&got, got.weight_arena);

    // a catch-up after cached positions and of more rows (12 after 5: a prompt's chunk, whose query call has 1
    // row where draft_forward's has 12, which runs on AMX's tiles from 9 rows where the CPU has them)
    enum { T2 = 12 };
    int more_tokens[T2], more_positions[T2];
    float* more_u = random_floats((size_t)T2 * C, -2, 2);
    for (int t = 0; t < T2; t++) { more_tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V); more_positions[t] = T1 + t; }
    check_extend(&got, label, more_tokens, more_u, more_positions, T2, T1);
    free(more_u);

    free(published); free(published_ref); free(features); free(ref_u); free(got_u); free(node_u);
    draft_free(&ref);
    draft_free(&got);
    model_tolerance = "layer";
    target_free(&ref_target);
    target_free(&got_target);
}

// ---- the trainer ------------------------------------------------------------------------------------

// n records of prompts of 4 to 9 random tokens, max_new 8 to 13.
static Record** make_records(Target* target, Draft* draft, int n) {
    Record** records = mallocCheck((size_t)n * sizeof(Record*));
    int V = target->config.vocab_size;
    for (int i = 0; i < n; i++) {
        int prompt[16];
        int n_prompt = 4 + i % 6;
        for (int j = 0; j < n_prompt; j++) { prompt[j] = (int)(random_u32(&rng_state) % (uint32_t)V); }
        records[i] = make_record(target, draft, prompt, n_prompt, 8 + i % 6);
    }
    return records;
}

static void compare_step_stats(const char* what, const TrainStats* got, const TrainStats* ref) {
    float got_values[4] = {got->loss, got->accepted_loss, got->discard_loss, got->grad_norm};
    float ref_values[4] = {ref->loss, ref->accepted_loss, ref->discard_loss, ref->grad_norm};
    char name[240];
    snprintf(name, sizeof(name), "%s: %s: loss, accepted loss, discard loss, gradient norm", B->name, what);
    check_tensor(name, got_values, ref_values, 4, tolerance("layer"));
    float one_position = ref->n_positions > 0 ? 1.0f / ref->n_positions : 0.0f;
    check(fabsf(got->step0_accuracy - ref->step0_accuracy) <= one_position + 1e-6f, "%s: %s: step-0 accuracy %g, reference %g",
          B->name, what, got->step0_accuracy, ref->step0_accuracy);
    check(got->n_positions == ref->n_positions && got->n_discard == ref->n_discard && got->rejected == ref->rejected,
          "%s: %s: %d positions, %d discard nodes, rejected %d; reference %d, %d, %d", B->name, what, got->n_positions,
          got->n_discard, got->rejected, ref->n_positions, ref->n_discard, ref->rejected);
}

// Every parameter tensor by name: the weights (host, where they are published), the gradients and the
// AdamW moments (on the backend), each cut by the draft's tensor table.
static void compare_trainer_tensors(const char* what, const Trainer* got, const Trainer* ref) {
    size_t offset = 0;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &ref->draft.tensors[i];
        size_t n = info->n_elements;
        char name[240];
        snprintf(name, sizeof(name), "%s: %s: %s", B->name, what, info->gguf_name);
        check_tensor(name, got->draft.weight_arena + offset, ref->draft.weight_arena + offset, n, tolerance("adamw_steps"));
        snprintf(name, sizeof(name), "%s: gradient of %s", what, info->gguf_name);
        check_floats(name, got->grads + offset, ref->grads + offset, n, "layer");
        snprintf(name, sizeof(name), "%s: AdamW m of %s", what, info->gguf_name);
        check_floats(name, got->adam_m + offset, ref->adam_m + offset, n, "layer");
        snprintf(name, sizeof(name), "%s: AdamW v of %s", what, info->gguf_name);
        check_floats(name, got->adam_v + offset, ref->adam_v + offset, n, "layer");
        offset += n;
    }
}

// K = 3 steps on each backend from one start, batches of 2 records, for each accepted-path loss kind (with
// the discard loss, top-k selection, the reverse KL discard loss, a cut context window, a max_positions
// cut and a change of the draft vocabulary along the way).
static void test_trainer_steps(void) {
    TinyModelSpec spec = {32, 2, 4, 2, 64, 300, 256, 1, TYPE_F32, 10000.0f, 3};
    Target ref_target, got_target;
    if (load_pair(&spec, &ref_target, &got_target, 256, 64) != 0) { return; }
    ref_target.tokenizer.eos_id = -1; ref_target.tokenizer.n_end_ids = 0; // random weights: always generate max_new tokens
    Draft draft;
    draft_init_random(&draft, &ref_target, 120, NULL, 5);
    uint64_t perturb = random_seed_state(8); // larger weights than the init: every gradient far from zero
    for (size_t i = 0; i < draft.n_weight_floats; i++) { draft.weight_arena[i] += 0.05f * (2.0f * random_f32(&perturb) - 1.0f); }
    enum { K = 3, BATCH = 2 };
    Record** records = make_records(&ref_target, &draft, K * BATCH);
    const LossKind kinds[3] = {LOSS_FORWARD_KL, LOSS_REVERSE_KL, LOSS_NEXT_TOKEN};
    for (int kind = 0; kind < 3; kind++) {
        TrainerSettings settings = trainer_default_settings();
        settings.ttt_length = 3;
        settings.loss = kinds[kind];
        settings.discard_weight = 0.7f;
        settings.discard_top_k = kind == 1 ? 2 : 0;
        settings.discard_loss = kind == 1 ? LOSS_REVERSE_KL : LOSS_FORWARD_KL;
        settings.context_window = kind == 2 ? 1 : 64;
        settings.max_positions = kind == 1 ? 12 : 1024;
        settings.learning_rate = 1e-3f;     // adamw_steps in the tolerance table assumes this rate and K <= 3
        settings.warmup_steps = 2;          // the warm-up and then the full rate
        settings.weight_decay = 0.01f;
        settings.max_grad_norm = kind == 0 ? 0.5f : 1.0f;
        // eps = 1e-3 (not 1e-8): the update lr * m / (sqrt(v) + eps) is then a smooth function of the gradient
        // near 0, so a gradient that is float noise on both backends gives the same small step on both (with
        // 1e-8 it would give about +lr on one and -lr on the other, and the weights could not be compared)
        settings.adam_eps = 1e-3f;
        Trainer ref, got;
        trainer_init(&ref, &draft, &ref_target, settings);
        trainer_init(&got, &draft, &got_target, settings);
        int discard_trained = 0;
        for (int step = 0; step < K; step++) {
            if (kind == 0 && step == 1) { // the vocabulary follows the records (draft vocabulary 120 of 300 ids)
                for (int i = 0; i < K * BATCH; i++) {
                    trainer_count_tokens(&ref, records[i]);
                    trainer_count_tokens(&got, records[i]);
                }
                int ref_swaps = trainer_adapt_vocabulary(&ref), got_swaps = trainer_adapt_vocabulary(&got);
                check(ref_swaps > 0 && got_swaps == ref_swaps &&
                      memcmp(got.draft.d2t, ref.draft.d2t, (size_t)draft.config.vocab_size * sizeof(int32_t)) == 0,
                      "%s: vocabulary adaptation: %d swaps, reference %d, the same ids", B->name, got_swaps, ref_swaps);
                compare_trainer_tensors("after the vocabulary adaptation", &got, &ref);
            }
            TrainStats ref_stats, got_stats;
            int ref_rejected = trainer_step(&ref, records + step * BATCH, BATCH, &ref_stats);
            int got_rejected = trainer_step(&got, records + step * BATCH, BATCH, &got_stats);
            char what[160];
            snprintf(what, sizeof(what), "trainer loss kind %d, step %d", kind, step + 1);
            check(got_rejected == ref_rejected && got.step == ref.step && got.rejected_updates == ref.rejected_updates,
                  "%s: %s: rejected %d (step %d, %ld rejections), reference %d (step %d, %ld)", B->name, what, got_rejected,
                  got.step, got.rejected_updates, ref_rejected, ref.step, ref.rejected_updates);
            compare_step_stats(what, &got_stats, &ref_stats);
            check(!ref_stats.rejected, "%s: the step should be applied", what);
            discard_trained += ref_stats.n_discard;
            compare_trainer_tensors(what, &got, &ref);
        }
        check(discard_trained > 0, "trainer loss kind %d: the steps should train on discard nodes", kind);
        printf("%s: trainer loss kind %d: %d steps of %d records (%d discard nodes): the same losses, weights, gradients "
               "and moments\n", B->name, kind, K, BATCH, discard_trained);
        trainer_free(&ref);
        trainer_free(&got);
    }

    // a non-finite record is rejected on every backend: the weights stay bit-identical, the rejection counts
    Record* bad = make_record(&ref_target, &draft, (const int[]){20, 21, 22, 23, 24}, 5, 8);
    bad->hidden[(size_t)(bad->n_committed - 1) * ref_target.config.dim] = fp32_to_fp16(NAN);   // records keep fp16
    Trainer got;
    trainer_init(&got, &draft, &got_target, trainer_default_settings());
    float* before = copy_floats(got.draft.weight_arena, draft.n_weight_floats);
    TrainStats stats;
    int rejected = trainer_step(&got, &bad, 1, &stats);
    check(rejected == 1 && stats.rejected && got.rejected_updates == 1 && got.step == 0,
          "%s: a non-finite loss must reject the update (rejected %d, counted %ld)", B->name, rejected, got.rejected_updates);
    check(memcmp(before, got.draft.weight_arena, draft.n_weight_floats * sizeof(float)) == 0,
          "%s: a rejected update must leave the weights bit-identical", B->name);
    // and the next good step still matches the reference's first step
    Trainer ref;
    trainer_init(&ref, &draft, &ref_target, trainer_default_settings());
    TrainStats ref_stats;
    trainer_step(&ref, records, 1, &ref_stats);
    trainer_step(&got, records, 1, &stats);
    compare_step_stats("trainer step after a rejected step", &stats, &ref_stats);
    free(before);
    trainer_free(&got);
    trainer_free(&ref);
    record_free(bad);
    for (int i = 0; i < K * BATCH; i++) { record_free(records[i]); }
    free(records);
    draft_free(&draft);
    target_free(&ref_target);
    target_free(&got_target);
}

// The learning curve: 20 steps, one record each from a fixed stream, default settings except a shorter
// unroll and the discard loss on: the per-step losses must agree.
static void test_trainer_learning_curve(void) {
    TinyModelSpec spec = {32, 2, 4, 2, 64, 300, 256, 1, TYPE_F32, 10000.0f, 4};
    Target ref_target, got_target;
    if (load_pair(&spec, &ref_target, &got_target, 256, 64) != 0) { return; }
    ref_target.tokenizer.eos_id = -1; ref_target.tokenizer.n_end_ids = 0;
    Draft draft;
    draft_init_random(&draft, &ref_target, 150, NULL, 9);
    enum { STEPS = 20 };
    Record** records = make_records(&ref_target, &draft, STEPS);
    TrainerSettings settings = trainer_default_settings();
    settings.ttt_length = 3;
    settings.discard_weight = 0.3f;
    settings.learning_rate = 1e-3f;
    settings.warmup_steps = 5;
    Trainer ref, got;
    trainer_init(&ref, &draft, &ref_target, settings);
    trainer_init(&got, &draft, &got_target, settings);
    float ref_losses[STEPS], got_losses[STEPS];
    for (int step = 0; step < STEPS; step++) {
        TrainStats ref_stats, got_stats;
        trainer_step(&ref, records + step, 1, &ref_stats);
        trainer_step(&got, records + step, 1, &got_stats);
        ref_losses[step] = ref_stats.loss;
        got_losses[step] = got_stats.loss;
    }
    char what[160];
    snprintf(what, sizeof(what), "%s: learning curve: per-step loss (20 steps)", B->name);
    check_tensor(what, got_losses, ref_losses, STEPS, tolerance("layer"));
    check(got.step == ref.step && got.rejected_updates == ref.rejected_updates, "%s: learning curve: %d steps (%ld rejected), "
          "reference %d (%ld)", B->name, got.step, got.rejected_updates, ref.step, ref.rejected_updates);
    // (each step's loss is on a new record of a random tiny target: the curve is compared, not expected to fall)
    printf("%s: learning curve, 20 steps of one new record each: losses first %.4f, last %.4f (reference %.4f, %.4f)\n",
           B->name, got_losses[0], got_losses[STEPS - 1], ref_losses[0], ref_losses[STEPS - 1]);
    trainer_free(&ref);
    trainer_free(&got);
    for (int i = 0; i < STEPS; i++) { record_free(records[i]); }
    free(records);
    draft_free(&draft);
    target_free(&ref_target);
    target_free(&got_target);
}

// ---- speculative generation end to end --------------------------------------------------------------
// The same requests on a reference target and a target on the backend under test (each source with its
// own copy of one random draft): greedy output tokens and acceptance counts must be identical.
static void test_speculative_end_to_end(void) {
    TinyModelSpec spec = {64, 3, 4, 2, 96, 300, 256, 1, TYPE_F32, 10000.0f, 21};
    Target ref_target, got_target;
    if (load_pair(&spec, &ref_target, &got_target, 256, 64) != 0) { return; }
    ref_target.tokenizer.eos_id = -1; ref_target.tokenizer.n_end_ids = 0; // random weights: run to max_new
    got_target.tokenizer.eos_id = -1; got_target.tokenizer.n_end_ids = 0;
    int V = ref_target.config.vocab_size;
    Draft ref_draft, got_draft;
    draft_init_random(&ref_draft, &ref_target, V / 2, NULL, 7);
    draft_init_random(&got_draft, &got_target, V / 2, NULL, 7);
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    enum { MAX_NEW = 24 };
    const TreeShape shapes[] = {{1, 4, 5}, {2, 3, 7}, {4, 3, 12}};
    const char* shape_names[] = {"chain K=1 S=4 N=5", "tree K=2 S=3 N=7", "tree K=4 S=3 N=12"};
    DraftKind kinds[3] = {DRAFT_EAGLE, DRAFT_SELF, DRAFT_LOOKUP};
    const char* kind_names[3] = {"eagle (random draft)", "self", "lookup"};
    int runs = 0;
    for (int p = 0; p < 2; p++) {
        int prompt[12];
        int n_prompt = p == 0 ? 9 : 6;
        for (int i = 0; i < n_prompt; i++) { prompt[i] = p == 0 ? 10 + i % 3 : (int)(random_u32(&rng_state) % (uint32_t)V); }
        for (int k = 0; k < 3; k++) {
            for (int s = 0; s < 3; s++) {
                DraftSource ref_source, got_source;
                draft_source_init(&ref_source, kinds[k], shapes[s], kinds[k] == DRAFT_EAGLE ? &ref_draft : NULL, &ref_target);
                draft_source_init(&got_source, kinds[k], shapes[s], kinds[k] == DRAFT_EAGLE ? &got_draft : NULL, &got_target);
                char what[200];
                snprintf(what, sizeof(what), "%s: speculative %s %s prompt %d", B->name, kind_names[k], shape_names[s], p);
                int ref_tokens[MAX_NEW], got_tokens[MAX_NEW];
                SpecStats ref_stats, got_stats;
                int n_ref = generate_speculative(&ref_target, &ref_source, prompt, n_prompt, MAX_NEW, greedy, 0, ref_tokens,
                                                 &ref_stats, NULL, NULL, NULL);
                int n_got = generate_speculative(&got_target, &got_source, prompt, n_prompt, MAX_NEW, greedy, 0, got_tokens,
                                                 &got_stats, NULL, NULL, NULL);
                check(n_got == n_ref, "%s: generated %d tokens, reference %d", what, n_got, n_ref);
                if (n_got == n_ref) { check_ints(what, got_tokens, ref_tokens, (size_t)n_ref); }
                // the same proposals, hence the same acceptance, wherever the drafter computes as the reference
                // does (a serving draft with int8 arithmetic proposes from rounded logits: the output stays exact)
                if (kinds[k] != DRAFT_EAGLE || !draft_int8_arithmetic(B->draft_type)) {
                    check(got_stats.accepted == ref_stats.accepted && got_stats.verify_passes == ref_stats.verify_passes,
                          "%s: accepted %d in %d passes, reference %d in %d", what, got_stats.accepted, got_stats.verify_passes,
                          ref_stats.accepted, ref_stats.verify_passes);
                }
                draft_source_free(&ref_source);
                draft_source_free(&got_source);
                runs++;
            }
        }
    }
    printf("%s: speculative end to end: %d runs (3 sources x 3 shapes x 2 prompts), identical to the reference\n", B->name, runs);
    draft_free(&ref_draft);
    draft_free(&got_draft);
    target_free(&ref_target);
    target_free(&got_target);
}

// ==== the comparison itself: a negative control =======================================================
// One perturbed element beyond the tolerance, a NaN, a wrong infinity and a wrong integer must each be
// caught (compare_elements counts them; a pass here means it found exactly the planted mismatch).
static void test_negative_control(void) {
    enum { N = 100 };
    float ref[N], got[N];
    fill_uniform(ref, N, &rng_state, -1, 1);
    ref[7] = -INFINITY; // as a masked attention score
    memcpy(got, ref, sizeof(ref));
    Tolerance layer = tolerance("layer");
    check(compare_elements("control: identical", ELEMENT_F32, got, ref, N, layer) == 0, "control: identical tensors must match");
    fprintf(stderr, "negative control: the next four mismatch reports are expected\n");
    got[42] = ref[42] + 2.0f * (layer.atol + layer.rtol * fabsf(ref[42]));
    check(compare_elements("control: perturbed element", ELEMENT_F32, got, ref, N, layer) == 1,
          "control: a perturbed element beyond the tolerance must be caught");
    got[42] = ref[42];
    got[3] = NAN;
    check(compare_elements("control: NaN", ELEMENT_F32, got, ref, N, layer) == 1, "control: a NaN must be caught");
    got[3] = ref[3];
    got[7] = -3.0e38f; // finite, as large as a float gets
    check(compare_elements("control: infinity", ELEMENT_F32, got, ref, N, layer) == 1, "control: a lost -inf must be caught");
    int ref_ints[4] = {1, 2, 3, 4}, got_ints[4] = {1, 2, 3, 5};
    check(compare_elements("control: integers", ELEMENT_I32, got_ints, ref_ints, 4, tolerance("layer")) == 1,
          "control: integers are exact whatever the float tolerance");
}

// ==== a simulated device ============================================================================
// The CPU ops behind a table whose memory is NOT host memory: a pointer it hands out is a handle (the real
// address with its top bit flipped, which no CPU can dereference), translated back inside every op. So
// the paths a GPU takes run here without one (separate host buffers, uploads and downloads, the draft's
// and the trainer's device arenas), and a host pointer passed as backend memory, or a backend pointer
// read on the host, crashes instead of silently working. Arithmetic on handles (a row offset) is fine.

#define SIM_TAG ((uintptr_t)1 << 63)
static void* sim_real(const void* handle) { return handle ? (void*)((uintptr_t)handle ^ SIM_TAG) : NULL; }
static void* sim_handle(const void* real) { return real ? (void*)((uintptr_t)real ^ SIM_TAG) : NULL; }
#define R(pointer) sim_real(pointer)
static Matrix sim_matrix(Matrix m) { Matrix real = {sim_real(m.data), m.type}; return real; }

static void* sim_alloc(size_t bytes) { return sim_handle(cpu_alloc(bytes)); }
static void sim_free(void* pointer) { cpu_free(sim_real(pointer)); }
static void sim_upload(void* destination, const void* host, size_t bytes) { if (bytes) { memcpy(R(destination), host, bytes); } }
static void sim_download(void* host, const void* source, size_t bytes) { if (bytes) { memcpy(host, R(source), bytes); } }
static void sim_copy(void* destination, const void* source, size_t bytes) { cpu_copy(R(destination), R(source), bytes); }
static void sim_zero(void* destination, size_t bytes) { cpu_zero(R(destination), bytes); }
static Matrix sim_upload_matrix(const void* gguf_data, int gguf_type, int rows, int cols) {
    Matrix m = cpu_upload_matrix_f32(gguf_data, gguf_type, rows, cols);
    m.data = sim_handle(m.data);
    return m;
}
static void sim_free_matrix(Matrix m) { cpu_free_matrix(sim_matrix(m)); }
static void sim_embedding_forward(float* out, const int* tokens, Matrix table, int T, int C, int V) {
    embedding_forward_cpu(R(out), R(tokens), sim_matrix(table), T, C, V);
}
static void sim_rmsnorm_forward(float* out, const float* inp, const float* weight, int T, int C, float eps) {
    rmsnorm_forward_cpu(R(out), R(inp), R(weight), T, C, eps);
}
static void sim_matmul_forward(float* out, const float* inp, Matrix weight, int T, int C, int OC) {
    matmul_forward_cpu(R(out), R(inp), sim_matrix(weight), T, C, OC);
}
static void sim_rope_forward(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta) {
    rope_forward_cpu(R(out), R(inp), R(positions), T, n_heads, HS, theta);
}
static void sim_attention_forward(float* out, const float* q, const float* key_cache, const float* value_cache,
                                  const uint8_t* mask, int T, int P, int NH, int NKV, int HS, CacheLayout layout) {
    attention_forward_cpu(R(out), R(q), R(key_cache), R(value_cache), R(mask), T, P, NH, NKV, HS, layout);
}
static void sim_swiglu_forward(float* out, const float* gate, const float* up, int N) { swiglu_forward_cpu(R(out), R(gate), R(up), N); }
static void sim_residual_forward(float* out, const float* inp1, const float* inp2, int N) {
    residual_forward_cpu(R(out), R(inp1), R(inp2), N);
}
static void sim_softmax_forward(float* probs, const float* logits, int T, int V) { softmax_forward_cpu(R(probs), R(logits), T, V); }
static void sim_kv_compact(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                           int n_planes, int S, int width) {
    kv_compact_cpu(R(key_cache), R(value_cache), R(source_slots), n, destination, n_planes, S, width);
}
static void sim_matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight, int T,
                                int C, int OC) {
    matmul_backward_cpu(R(dinp), R(dweight), R(dout), R(inp), R(weight), T, C, OC);
}
static void sim_rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight, int T,
                                 int C, float eps) {
    rmsnorm_backward_cpu(R(dinp), R(dweight), R(dout), R(inp), R(weight), T, C, eps);
}
static void sim_rope_backward(float* dinp, const float* dout, const int* positions, int T, int n_heads, int HS, float theta) {
    rope_backward_cpu(R(dinp), R(dout), R(positions), T, n_heads, HS, theta);
}
static void sim_attention_backward(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q, const float* keys,
                                   const float* values, const uint8_t* mask, int T, int P, int NH, int NKV, int HS) {
    attention_backward_cpu(R(dq), R(dkeys), R(dvalues), R(dout), R(q), R(keys), R(values), R(mask), T, P, NH, NKV, HS);
}
static void sim_swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N) {
    swiglu_backward_cpu(R(dgate), R(dup), R(dout), R(gate), R(up), N);
}
static void sim_distribution_loss(float* losses, float* dlogits, const float* logits, const float* p_target,
                                  const int* target_tokens, const float* weights, int T, int V, LossKind kind) {
    distribution_loss_cpu(R(losses), R(dlogits), R(logits), R(p_target), R(target_tokens), R(weights), T, V, kind);
}
static void sim_adamw_update(float* params, const float* grads, float grad_scale, float* m, float* v, size_t N,
                             float learning_rate, float beta1, float beta2, float eps, float weight_decay, int t) {
    adamw_update_cpu(R(params), R(grads), grad_scale, R(m), R(v), N, learning_rate, beta1, beta2, eps, weight_decay, t);
}
static double sim_sum_squares(const float* values, size_t N) { return sum_squares_cpu(R(values), N); }
static void sim_gather_rows(float* out, const float* source, const int* rows, int n, int C) {
    gather_rows_cpu(R(out), R(source), R(rows), n, C);
}
static void sim_scatter_add_rows(float* destination, const float* source, const int* rows, int n, int C) {
    scatter_add_rows_cpu(R(destination), R(source), R(rows), n, C);
}
static void sim_cache_store(float* key_cache, float* value_cache, const float* k, const float* v, CacheLayout layout, int T,
                            int n_past, int NKV, int HS) {
    cache_store_cpu(R(key_cache), R(value_cache), R(k), R(v), layout, T, n_past, NKV, HS);
}
static void sim_copy_strided(float* out, const float* inp, int T, int width, int out_stride, int inp_stride) {
    copy_strided_cpu(R(out), R(inp), T, width, out_stride, inp_stride);
}
static void sim_argmax_rows(int* out, const float* values, int T, int V) { argmax_rows_cpu(R(out), R(values), T, V); }
#undef R

static const Backend backend_simulated_device = {
    .name = "simulated-device", .device = "CPU behind handles", .host_memory = 0,
    .alloc = sim_alloc, .free = sim_free, .upload = sim_upload, .download = sim_download, .copy = sim_copy, .zero = sim_zero,
    .upload_matrix = sim_upload_matrix, .free_matrix = sim_free_matrix,
    .embedding_forward = sim_embedding_forward, .rmsnorm_forward = sim_rmsnorm_forward,
    .matmul_forward = sim_matmul_forward, .rope_forward = sim_rope_forward, .attention_forward = sim_attention_forward,
    .swiglu_forward = sim_swiglu_forward, .residual_forward = sim_residual_forward, .softmax_forward = sim_softmax_forward,
    .kv_compact = sim_kv_compact, .matmul_backward = sim_matmul_backward, .rmsnorm_backward = sim_rmsnorm_backward,
    .rope_backward = sim_rope_backward, .attention_backward = sim_attention_backward, .swiglu_backward = sim_swiglu_backward,
    .distribution_loss = sim_distribution_loss, .adamw_update = sim_adamw_update, .sum_squares = sim_sum_squares,
    .gather_rows = sim_gather_rows, .scatter_add_rows = sim_scatter_add_rows,
    .copy_strided = sim_copy_strided, .cache_store = sim_cache_store, .argmax_rows = sim_argmax_rows,
};

// The CPU tables' allocator: zeroed, every byte writable (ASan builds check the bound), and the start on a
// CPU_ALIGNMENT-byte line (the fast kernels' rows: a 32-byte load across two lines costs two)
static void test_cpu_alloc(void) {
    const size_t sizes[] = {0, 1, 17, 63, 64, 65, 4095, 4096, 131071, 131072 + 5, (size_t)3 << 20};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char* block = cpu_alloc(sizes[i]);
        check((uintptr_t)block % CPU_ALIGNMENT == 0, "cpu_alloc(%zu) = %p: not on a %d-byte line", sizes[i], (void*)block,
              CPU_ALIGNMENT);
        size_t first_nonzero = sizes[i];
        for (size_t b = 0; b < sizes[i]; b++) { if (block[b] != 0) { first_nonzero = b; break; } }
        check(first_nonzero == sizes[i], "cpu_alloc(%zu): byte %zu is not zero", sizes[i], first_nonzero);
        memset(block, 0xA5, sizes[i]);
        cpu_free(block);
    }
    cpu_free(NULL);
}

// --draft-type's resolution: auto is the table's own type; a named type is refused where no draft model serves,
// and a quantised one on a table whose memory is off the host (it serves the fp32 weights), each error naming why.
static void test_draft_type_resolve(void) {
    Backend off_host = backend_cpu_fast;
    off_host.host_memory = 0;
    Error err;
    int type = -1;
    check(draft_type_resolve("auto", 1, &backend_cpu_fast, &type, &err) == 0 && type == backend_cpu_fast.draft_type,
          "--draft-type auto: type %d, expected the table's %d", type, backend_cpu_fast.draft_type);
    check(draft_type_resolve(NULL, 0, &off_host, &type, &err) == 0 && type == off_host.draft_type, "--draft-type unset");
    const char* names[] = {"f32", "q8_0", "q4_1"};
    const int types[] = {TYPE_F32, TYPE_Q8_0, TYPE_Q4_1};
    for (int i = 0; i < 3; i++) {
        check(draft_type_resolve(names[i], 1, &backend_cpu_fast, &type, &err) == 0 && type == types[i],
              "--draft-type %s: type %d, expected %d", names[i], type, types[i]);
        int refused = draft_type_resolve(names[i], 0, &backend_cpu_fast, &type, &err) != 0;
        check(refused && strstr(err.message, "no draft model") != NULL, "--draft-type %s without a draft model: %s", names[i],
              refused ? err.message : "accepted");
        refused = draft_type_resolve(names[i], 1, &off_host, &type, &err) != 0;
        check(refused == (types[i] != TYPE_F32) && (!refused || strstr(err.message, "fp32 weights") != NULL),
              "--draft-type %s on a table off the host: %s", names[i], refused ? err.message : "accepted");
    }
    check(draft_type_resolve("q4_0", 1, &backend_cpu_fast, &type, &err) != 0 && strstr(err.message, "unknown") != NULL,
          "--draft-type q4_0 (not offered) accepted");
}

int main(void) {
    test_negative_control();
    test_cpu_alloc();
    test_draft_type_resolve();
    const Backend* backends[6];
    int n_backends = 0;
    backends[n_backends++] = &backend_cpu_fast;       // the default CPU table (int8 activations on VNNI and AVX2 CPUs)
    backends[n_backends++] = &backend_cpu_fast_exact; // the same kernels, fp32 activations
    const char* names[2] = {"blas", "cuda"};
    // REQUIRE_CUDA=1 (make test-cuda sets it where nvidia-smi lists a GPU): a CUDA table that cannot start is a
    // failure, not a skip, so a broken CUDA build on a GPU machine cannot pass as "no GPU"
    const char* require = getenv("REQUIRE_CUDA");
    int cuda_required = require != NULL && strcmp(require, "1") == 0;
    for (int i = 0; i < 2; i++) {
        Error err;
        const Backend* backend = backend_by_name(names[i], &err);
        int is_cuda = strcmp(names[i], "cuda") == 0;
        if (backend != NULL) { backends[n_backends++] = backend; }
        else if (is_cuda && cuda_required) { check(0, "CUDA: REQUIRE_CUDA=1 (a GPU is present), but %s", err.message); }
        else { printf("%s: skipped: %s\n", is_cuda ? "CUDA" : "OpenBLAS", err.message); }
    }
    backends[n_backends++] = &backend_simulated_device; // the reference's ops through a GPU's memory paths
    for (int i = 0; i < n_backends; i++) {
        B = backends[i];
        printf("backend %s (%s) against the reference\n", B->name, B->device);
        test_ops();
        TinyModelSpec gqa = {64, 4, 4, 2, 96, 300, 64, 1, TYPE_F32, 10000.0f, 1};
        test_target(&gqa);
        TinyModelSpec mha = {48, 5, 3, 3, 64, 301, 64, 0, TYPE_F32, 500000.0f, 2};
        test_target(&mha);
        TinyModelSpec quantised = {64, 2, 4, 1, 96, 288, 64, 0, TYPE_Q4_1, 10000.0f, 6};
        test_target(&quantised);
        test_draft(&gqa, 150, B->draft_type);
        test_draft(&mha, mha.vocab_size, B->draft_type);
        const int serving_types[] = {TYPE_F32, TYPE_Q8_0, TYPE_Q4_1};   // --draft-type (quantised: host memory only)
        for (int t = 0; t < 3 && B->host_memory; t++) {
            if (serving_types[t] != B->draft_type) { test_draft(&gqa, 150, serving_types[t]); }
        }
        test_trainer_steps();
        test_trainer_learning_curve();
        test_speculative_end_to_end();
    }
    return test_summary();
}
