/*
test_cuda.c: CPU/GPU parity, tensor by tensor. Every op of kernels.cu against its reference in cpu_ref.c on
random inputs of several shapes (odd sizes, T = 1, grouped-query heads, causal / tree-like / random masks
with fully masked rows, -inf logits, in-place calls), then the whole target on tiny random models:
a causal prefill, three single-token decodes and a tree-masked verify with repeated positions, comparing
every layer's output, the taps, the final hidden state and the logits, and that the argmax tokens agree.
Then the speculative-decoding twins: kv_compact_cuda (exact), the draft model (draft_project_features_cuda,
draft_forward_cuda over a causal extend and a tree-masked step, and after draft_cuda_upload_weights),
acceptance on random trees (accept_greedy_cuda / accept_sampling_cuda must give identical Acceptance
structs: ties, -inf rows, duplicate sibling tokens, everything rejected, leaves), and generate_speculative
end to end on a GPU engine vs a CPU engine (eagle, self, lookup; chain and trees): identical greedy tokens
and acceptance counts.
Then training: every backward op and training op (matmul, rmsnorm, rope (also in place), attention (GQA,
masks with fully masked rows, NULL d-buffers, two runs bit-identical), swiglu, distribution_loss for each
LossKind, adamw_update, sum_squares) against its CPU twin, with d-buffers that start non-zero (the ops
accumulate); trainer_step_cuda against trainer_step from one start for K = 3 steps per loss kind (losses,
counters and weights after each step), a rejected non-finite step, and a 20-step learning curve (per-step
losses). The GPU trainer uses trainer.c's own unroll plan and masks (unroll_plan_*, ttt_mask), so
only the arithmetic differs.
Single ops use the "reorder" tolerance (copies "exact"), whole-model outputs and trainer losses "layer"
(test_common.h); the trainer's weights one made from the learning rates (see test_trainer_steps).

Where there is no GPU (or no driver) it says so and exits 0 (after the host-only mirror checks). Exit
status is the verdict.
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"
#include <unistd.h>
#include <cuda_runtime_api.h>

static uint64_t rng_state = 0xC0DA;

// ---- device memory helpers (the test's own: the ops take device pointers) ---------------------

static void cuda_test_check(cudaError_t error, const char* file, int line) {
    if (error != cudaSuccess) {
        fprintf(stderr, "[CUDA ERROR] at file %s:%d:\n%s\n", file, line, cudaGetErrorString(error));
        exit(EXIT_FAILURE);
    }
}
#define cudaTestCheck(error) cuda_test_check((error), __FILE__, __LINE__)

// A device copy of bytes of host memory.
static void* to_device(const void* host, size_t bytes) {
    void* device = NULL;
    cudaTestCheck(cudaMalloc(&device, bytes > 0 ? bytes : 1));
    if (bytes > 0) { cudaTestCheck(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice)); }
    return device;
}
static void* device_alloc(size_t bytes) {
    void* device = NULL;
    cudaTestCheck(cudaMalloc(&device, bytes > 0 ? bytes : 1));
    return device;
}
static void from_device(void* host, const void* device, size_t bytes) {
    cudaTestCheck(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost)); // also waits for the kernels
}
static float* random_floats(size_t n, float lo, float hi) {
    float* x = mallocCheck((n > 0 ? n : 1) * sizeof(float));
    fill_uniform(x, n, &rng_state, lo, hi);
    return x;
}

// ---- embedding --------------------------------------------------------------------------------
static void test_embedding(int T, int C, int V) {
    int* tokens = mallocCheck((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) { tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V); }
    tokens[0] = V - 1; // the last row of the table too
    float* table = random_floats((size_t)V * C, -1, 1);
    float* expected = mallocCheck((size_t)T * C * sizeof(float));
    float* got = mallocCheck((size_t)T * C * sizeof(float));
    embedding_forward_cpu(expected, tokens, table, T, C, V);
    int* d_tokens = to_device(tokens, (size_t)T * sizeof(int));
    float* d_table = to_device(table, (size_t)V * C * sizeof(float));
    float* d_out = device_alloc((size_t)T * C * sizeof(float));
    embedding_forward_cuda(d_out, d_tokens, d_table, T, C, V);
    from_device(got, d_out, (size_t)T * C * sizeof(float));
    char what[96];
    snprintf(what, sizeof(what), "embedding T=%d C=%d V=%d", T, C, V);
    check_tensor(what, got, expected, (size_t)T * C, tolerance("exact"));
    cudaFree(d_tokens); cudaFree(d_table); cudaFree(d_out);
    free(tokens); free(table); free(expected); free(got);
}

// ---- rmsnorm ----------------------------------------------------------------------------------
static void test_rmsnorm(int T, int C) {
    size_t n = (size_t)T * C;
    float* inp = random_floats(n, -3, 3);
    float* weight = random_floats(C, 0.5f, 1.5f);
    float* expected = mallocCheck(n * sizeof(float));
    float* got = mallocCheck(n * sizeof(float));
    float eps = 1e-5f;
    rmsnorm_forward_cpu(expected, inp, weight, T, C, eps);
    float* d_inp = to_device(inp, n * sizeof(float));
    float* d_weight = to_device(weight, C * sizeof(float));
    float* d_out = device_alloc(n * sizeof(float));
    rmsnorm_forward_cuda(d_out, d_inp, d_weight, T, C, eps);
    from_device(got, d_out, n * sizeof(float));
    char what[96];
    snprintf(what, sizeof(what), "rmsnorm T=%d C=%d", T, C);
    check_tensor(what, got, expected, n, tolerance("reorder"));
    rmsnorm_forward_cuda(d_inp, d_inp, d_weight, T, C, eps); // in place
    from_device(got, d_inp, n * sizeof(float));
    snprintf(what, sizeof(what), "rmsnorm in place T=%d C=%d", T, C);
    check_tensor(what, got, expected, n, tolerance("reorder"));
    cudaFree(d_inp); cudaFree(d_weight); cudaFree(d_out);
    free(inp); free(weight); free(expected); free(got);
}

// ---- matmul -----------------------------------------------------------------------------------
static void test_matmul(int T, int C, int OC) {
    float* inp = random_floats((size_t)T * C, -1, 1);
    float* weight = random_floats((size_t)OC * C, -1, 1);
    float* expected = mallocCheck((size_t)T * OC * sizeof(float));
    float* got = mallocCheck((size_t)T * OC * sizeof(float));
    matmul_forward_cpu(expected, inp, weight, T, C, OC);
    float* d_inp = to_device(inp, (size_t)T * C * sizeof(float));
    float* d_weight = to_device(weight, (size_t)OC * C * sizeof(float));
    float* d_out = device_alloc((size_t)T * OC * sizeof(float));
    matmul_forward_cuda(d_out, d_inp, d_weight, T, C, OC);
    from_device(got, d_out, (size_t)T * OC * sizeof(float));
    char what[96];
    snprintf(what, sizeof(what), "matmul T=%d C=%d OC=%d", T, C, OC);
    check_tensor(what, got, expected, (size_t)T * OC, tolerance("reorder"));
    cudaFree(d_inp); cudaFree(d_weight); cudaFree(d_out);
    free(inp); free(weight); free(expected); free(got);
}

// ---- RoPE -------------------------------------------------------------------------------------
static void test_rope(int T, int n_heads, int HS, float theta, int max_position) {
    size_t n = (size_t)T * n_heads * HS;
    float* inp = random_floats(n, -1, 1);
    int* positions = mallocCheck((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) { positions[t] = (int)(random_u32(&rng_state) % (uint32_t)(max_position + 1)); }
    positions[0] = max_position;
    if (T > 2) { positions[2] = positions[1]; } // siblings in a tree share a position
    float* expected = mallocCheck(n * sizeof(float));
    float* got = mallocCheck(n * sizeof(float));
    rope_forward_cpu(expected, inp, positions, T, n_heads, HS, theta);
    float* d_inp = to_device(inp, n * sizeof(float));
    int* d_positions = to_device(positions, (size_t)T * sizeof(int));
    float* d_out = device_alloc(n * sizeof(float));
    rope_forward_cuda(d_out, d_inp, d_positions, T, n_heads, HS, theta);
    from_device(got, d_out, n * sizeof(float));
    char what[128];
    snprintf(what, sizeof(what), "rope T=%d heads=%d HS=%d theta=%g max_position=%d", T, n_heads, HS, theta, max_position);
    check_tensor(what, got, expected, n, tolerance("reorder"));
    rope_forward_cuda(d_inp, d_inp, d_positions, T, n_heads, HS, theta); // in place
    from_device(got, d_inp, n * sizeof(float));
    snprintf(what, sizeof(what), "rope in place T=%d heads=%d HS=%d", T, n_heads, HS);
    check_tensor(what, got, expected, n, tolerance("reorder"));
    cudaFree(d_inp); cudaFree(d_positions); cudaFree(d_out);
    free(inp); free(positions); free(expected); free(got);
}

// ---- attention --------------------------------------------------------------------------------
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

static void test_attention(int T, int P, int NH, int NKV, int HS, int mask_kind, const int* fully_masked) {
    size_t q_size = (size_t)T * NH * HS, kv_size = (size_t)P * NKV * HS;
    float* q = random_floats(q_size, -1, 1);
    float* key_cache = random_floats(kv_size, -1, 1);
    float* value_cache = random_floats(kv_size, -1, 1);
    uint8_t* mask = mallocCheck((size_t)T * P);
    make_mask(mask, mask_kind, T, P, fully_masked);
    float* expected = mallocCheck(q_size * sizeof(float));
    float* got = mallocCheck(q_size * sizeof(float));
    attention_forward_cpu(expected, q, key_cache, value_cache, mask, T, P, NH, NKV, HS);
    float* d_q = to_device(q, q_size * sizeof(float));
    float* d_key = to_device(key_cache, kv_size * sizeof(float));
    float* d_value = to_device(value_cache, kv_size * sizeof(float));
    uint8_t* d_mask = to_device(mask, (size_t)T * P);
    float* d_out = device_alloc(q_size * sizeof(float));
    cudaTestCheck(cudaMemset(d_out, 0xFF, q_size * sizeof(float))); // NaNs: every element must be written
    attention_forward_cuda(d_out, d_q, d_key, d_value, d_mask, T, P, NH, NKV, HS);
    from_device(got, d_out, q_size * sizeof(float));
    char what[128];
    snprintf(what, sizeof(what), "attention %s T=%d P=%d NH=%d NKV=%d HS=%d", MASK_NAMES[mask_kind], T, P, NH, NKV, HS);
    check_tensor(what, got, expected, q_size, tolerance("reorder"));
    for (int i = 0; fully_masked != NULL && fully_masked[i] >= 0; i++) { // zeros, exactly
        int t = fully_masked[i];
        if (t >= T) { continue; }
        int zeros = 1;
        for (size_t j = 0; j < (size_t)NH * HS; j++) { zeros &= got[(size_t)t * NH * HS + j] == 0.0f; }
        check(zeros, "%s: fully masked row %d is not all zeros", what, t);
    }
    cudaFree(d_q); cudaFree(d_key); cudaFree(d_value); cudaFree(d_mask); cudaFree(d_out);
    free(q); free(key_cache); free(value_cache); free(mask); free(expected); free(got);
}

// ---- swiglu and residual ----------------------------------------------------------------------
static void test_swiglu(int N) {
    float* gate = random_floats(N, -8, 8);
    float* up = random_floats(N, -2, 2);
    float* expected = mallocCheck((size_t)N * sizeof(float));
    float* got = mallocCheck((size_t)N * sizeof(float));
    swiglu_forward_cpu(expected, gate, up, N);
    float* d_gate = to_device(gate, (size_t)N * sizeof(float));
    float* d_up = to_device(up, (size_t)N * sizeof(float));
    float* d_out = device_alloc((size_t)N * sizeof(float));
    swiglu_forward_cuda(d_out, d_gate, d_up, N);
    from_device(got, d_out, (size_t)N * sizeof(float));
    char what[96];
    snprintf(what, sizeof(what), "swiglu N=%d", N);
    check_tensor(what, got, expected, N, tolerance("reorder"));
    swiglu_forward_cuda(d_gate, d_gate, d_up, N); // in place, as target_forward calls it
    from_device(got, d_gate, (size_t)N * sizeof(float));
    snprintf(what, sizeof(what), "swiglu in place N=%d", N);
    check_tensor(what, got, expected, N, tolerance("reorder"));
    cudaFree(d_gate); cudaFree(d_up); cudaFree(d_out);
    free(gate); free(up); free(expected); free(got);
}

static void test_residual(int N) {
    float* a = random_floats(N, -4, 4);
    float* b = random_floats(N, -4, 4);
    float* expected = mallocCheck((size_t)N * sizeof(float));
    float* got = mallocCheck((size_t)N * sizeof(float));
    residual_forward_cpu(expected, a, b, N);
    float* d_a = to_device(a, (size_t)N * sizeof(float));
    float* d_b = to_device(b, (size_t)N * sizeof(float));
    residual_forward_cuda(d_a, d_a, d_b, N); // in place, as target_forward calls it
    from_device(got, d_a, (size_t)N * sizeof(float));
    char what[96];
    snprintf(what, sizeof(what), "residual N=%d", N);
    check_tensor(what, got, expected, N, tolerance("exact"));
    cudaFree(d_a); cudaFree(d_b);
    free(a); free(b); free(expected); free(got);
}

// ---- softmax ----------------------------------------------------------------------------------
static void test_softmax(int T, int V, int with_minus_infinity) {
    size_t n = (size_t)T * V;
    float* logits = random_floats(n, -10, 10);
    if (with_minus_infinity && V > 1) { // some -inf logits (never a whole row: that is undefined)
        for (int t = 0; t < T; t++) {
            for (int i = 1; i < V; i += 3) { logits[(size_t)t * V + i] = -INFINITY; }
        }
    }
    float* expected = mallocCheck(n * sizeof(float));
    float* got = mallocCheck(n * sizeof(float));
    softmax_forward_cpu(expected, logits, T, V);
    float* d_logits = to_device(logits, n * sizeof(float));
    float* d_probs = device_alloc(n * sizeof(float));
    softmax_forward_cuda(d_probs, d_logits, T, V);
    from_device(got, d_probs, n * sizeof(float));
    char what[96];
    snprintf(what, sizeof(what), "softmax T=%d V=%d%s", T, V, with_minus_infinity ? " with -inf" : "");
    check_tensor(what, got, expected, n, tolerance("reorder"));
    softmax_forward_cuda(d_logits, d_logits, T, V); // in place
    from_device(got, d_logits, n * sizeof(float));
    snprintf(what, sizeof(what), "softmax in place T=%d V=%d", T, V);
    check_tensor(what, got, expected, n, tolerance("reorder"));
    cudaFree(d_logits); cudaFree(d_probs);
    free(logits); free(expected); free(got);
}

// ---- the whole target -------------------------------------------------------------------------

// Compares everything one forward call produced on the CPU (cpu) and the GPU (gpu->act): every layer's
// output, the taps, the hidden state, the logits rows the call fills, and the argmax of each row.
static void compare_forward(const char* step, const Target* cpu, const Target* gpu, int T, int all_logits) {
    const TargetConfig* c = &cpu->config;
    int C = c->dim, V = c->vocab_size, rows = all_logits ? T : 1;
    char what[160];
    for (int l = 0; l < c->n_layers; l++) {
        snprintf(what, sizeof(what), "%s: layer %d output", step, l);
        check_tensor(what, gpu->act.layer_outputs + (size_t)l * T * C, cpu->act.layer_outputs + (size_t)l * T * C,
                     (size_t)T * C, tolerance("layer"));
    }
    snprintf(what, sizeof(what), "%s: taps", step);
    check_tensor(what, gpu->act.taps, cpu->act.taps, (size_t)T * 3 * C, tolerance("layer"));
    snprintf(what, sizeof(what), "%s: hidden", step);
    check_tensor(what, gpu->act.hidden, cpu->act.hidden, (size_t)T * C, tolerance("layer"));
    snprintf(what, sizeof(what), "%s: logits", step);
    check_tensor(what, gpu->act.logits, cpu->act.logits, (size_t)rows * V, tolerance("layer"));
    for (int r = 0; r < rows; r++) {
        int cpu_token = sample_argmax(cpu->act.logits + (size_t)r * V, V);
        int gpu_token = sample_argmax(gpu->act.logits + (size_t)r * V, V);
        check(cpu_token == gpu_token, "%s: argmax of logits row %d: GPU %d, CPU %d", step, r, gpu_token, cpu_token);
    }
}

// Runs the same call on the CPU target and on the GPU twin (whose results land in gpu->act) and compares.
static void forward_both(const char* step, Target* cpu, Target* gpu, TargetCuda* gpu_cuda, const int* tokens,
                         const int* positions, const uint8_t* tree_mask, int T, int n_past, int all_logits) {
    target_forward(cpu, tokens, positions, tree_mask, T, n_past, all_logits);
    target_forward_cuda(gpu_cuda, gpu, tokens, positions, tree_mask, T, n_past, all_logits);
    compare_forward(step, cpu, gpu, T, all_logits);
}

static void test_target(const TinyModelSpec* spec) {
    char path[256];
    snprintf(path, sizeof(path), "/tmp/aurora_test_cuda_%d_%llu.gguf", (int)getpid(), (unsigned long long)spec->seed);
    Error err;
    if (tiny_model_write(path, spec, &err) != 0) {
        check(0, "tiny_model_write: %s", err.message);
        return;
    }
    // two copies of the model: one runs on the CPU, the other carries the GPU twin's results
    Target cpu, gpu;
    int cache_capacity = 32, max_tokens = 16;
    if (target_load(&cpu, path, cache_capacity, max_tokens, &err) != 0) { check(0, "target_load: %s", err.message); remove(path); return; }
    if (target_load(&gpu, path, cache_capacity, max_tokens, &err) != 0) { check(0, "target_load: %s", err.message); target_free(&cpu); remove(path); return; }
    remove(path);
    const TargetConfig* c = &cpu.config;
    size_t layer_floats = (size_t)c->n_layers * max_tokens * c->dim;
    cpu.act.layer_outputs = mallocCheck(layer_floats * sizeof(float));
    gpu.act.layer_outputs = mallocCheck(layer_floats * sizeof(float));
    TargetCuda* gpu_cuda = target_cuda_create(&gpu);
    char step[128];
    const char* model = spec->tied_output ? "tied" : "untied";

    // prefill: 7 tokens, causal, logits of the last row only
    int prompt[7], positions[7];
    for (int t = 0; t < 7; t++) { prompt[t] = (int)(random_u32(&rng_state) % (uint32_t)c->vocab_size); positions[t] = t; }
    snprintf(step, sizeof(step), "%s NH=%d NKV=%d: prefill T=7", model, c->n_heads, c->n_kv_heads);
    forward_both(step, &cpu, &gpu, gpu_cuda, prompt, positions, NULL, 7, 0, 0);
    int n_past = 7;

    // decode: three single tokens, each the CPU's greedy choice
    for (int i = 0; i < 3; i++) {
        int token = sample_argmax(cpu.act.logits, c->vocab_size);
        int position = n_past;
        snprintf(step, sizeof(step), "%s NH=%d NKV=%d: decode %d (n_past=%d)", model, c->n_heads, c->n_kv_heads, i, n_past);
        forward_both(step, &cpu, &gpu, gpu_cuda, &token, &position, NULL, 1, n_past, 0);
        n_past++;
    }

    // tree verify: 6 nodes, parents {-, 0, 0, 1, 2, 1}; siblings share positions (depth-based)
    enum { NODES = 6 };
    int parent[NODES] = {-1, 0, 0, 1, 2, 1};
    int tree_tokens[NODES], tree_positions[NODES];
    // the (T, n_past + T) mask: the whole prefix, then each node's ancestors and itself
    int P = n_past + NODES;
    uint8_t* tree_mask = callocCheck((size_t)NODES * P, 1);
    for (int t = 0; t < NODES; t++) {
        tree_tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)c->vocab_size);
        memset(tree_mask + (size_t)t * P, 1, (size_t)n_past);
        int depth = 0;
        for (int node = t; node >= 0; node = parent[node]) { tree_mask[(size_t)t * P + n_past + node] = 1; depth += node != t; }
        tree_positions[t] = n_past + depth;
    }
    snprintf(step, sizeof(step), "%s NH=%d NKV=%d: tree verify T=%d (n_past=%d)", model, c->n_heads, c->n_kv_heads, NODES, n_past);
    forward_both(step, &cpu, &gpu, gpu_cuda, tree_tokens, tree_positions, tree_mask, NODES, n_past, 1);
    free(tree_mask);

    // after the tree, decode again from the prefix (overwriting the tree's cache slots, as a rejected
    // draft would): the caches must still agree
    int token = tree_tokens[0], position = n_past;
    snprintf(step, sizeof(step), "%s NH=%d NKV=%d: decode after tree (n_past=%d)", model, c->n_heads, c->n_kv_heads, n_past);
    forward_both(step, &cpu, &gpu, gpu_cuda, &token, &position, NULL, 1, n_past, 1);

    target_cuda_free(gpu_cuda);
    free(cpu.act.layer_outputs); cpu.act.layer_outputs = NULL;
    free(gpu.act.layer_outputs); gpu.act.layer_outputs = NULL;
    target_free(&cpu);
    target_free(&gpu);
}

// ---- key/value cache compaction -----------------------------------------------------------------
// A path's slots as engine_compact passes them: increasing, slots[i] >= destination + i (sources only move
// down). identity: every slot already in place (nothing moves).
static void test_kv_compact(int L, int S, int KVD, int destination, int n, int identity) {
    size_t floats = (size_t)L * S * KVD;
    float* key_cache = random_floats(floats, -1, 1);
    float* value_cache = random_floats(floats, -1, 1);
    float* got = mallocCheck(floats * sizeof(float));
    int slots[TREE_MAX_DEPTH + 1];
    for (int i = 0; i < n; i++) {
        int gap = identity ? 0 : (int)(random_u32(&rng_state) % 3u);
        slots[i] = i == 0 ? destination + gap : slots[i - 1] + 1 + gap;
    }
    if (slots[n - 1] >= S) { check(0, "test bug: kv_compact slots exceed the cache"); free(key_cache); free(value_cache); free(got); return; }
    float* d_key = to_device(key_cache, floats * sizeof(float));
    float* d_value = to_device(value_cache, floats * sizeof(float));
    kv_compact_cpu(key_cache, value_cache, slots, n, destination, L, S, KVD);
    kv_compact_cuda(d_key, d_value, slots, n, destination, L, S, KVD);
    char what[128];
    snprintf(what, sizeof(what), "kv_compact keys L=%d S=%d KVD=%d n=%d -> %d%s", L, S, KVD, n, destination, identity ? " (in place)" : "");
    from_device(got, d_key, floats * sizeof(float));
    check_tensor(what, got, key_cache, floats, tolerance("exact"));
    snprintf(what, sizeof(what), "kv_compact values L=%d S=%d KVD=%d n=%d -> %d%s", L, S, KVD, n, destination, identity ? " (in place)" : "");
    from_device(got, d_value, floats * sizeof(float));
    check_tensor(what, got, value_cache, floats, tolerance("exact"));
    cudaFree(d_key); cudaFree(d_value);
    free(key_cache); free(value_cache); free(got);
}

// ---- the draft model ----------------------------------------------------------------------------
// Two identical random drafts for one tiny target: one runs draft_forward, the other its GPU twin
// (results in its act). A causal extend of 5 positions, then a tree step of 4 nodes over it with an
// explicit (T, n_past + T) mask, then the same tree step after new weights are uploaded (hot swap).
static void compare_draft(const char* step, const Draft* cpu, const Draft* gpu, int T) {
    char what[160];
    snprintf(what, sizeof(what), "%s: draft out", step);
    check_tensor(what, gpu->act.out, cpu->act.out, (size_t)T * cpu->config.dim, tolerance("layer"));
    snprintf(what, sizeof(what), "%s: draft logits", step);
    check_tensor(what, gpu->act.logits, cpu->act.logits, (size_t)T * cpu->config.vocab_size, tolerance("layer"));
}

static void test_draft(const TinyModelSpec* spec, int draft_vocab) {
    char path[256];
    snprintf(path, sizeof(path), "/tmp/aurora_test_cuda_draft_%d_%llu.gguf", (int)getpid(), (unsigned long long)spec->seed);
    Error err;
    Target target;
    if (tiny_model_write(path, spec, &err) != 0 || target_load(&target, path, 32, 16, &err) != 0) {
        check(0, "draft test setup: %s", err.message);
        remove(path);
        return;
    }
    remove(path);
    Draft cpu, gpu;
    draft_init_random(&cpu, &target, draft_vocab, NULL, 5);
    draft_init_random(&gpu, &target, draft_vocab, NULL, 5);
    draft_alloc_state(&cpu, 24, 8);
    draft_alloc_state(&gpu, 24, 8);
    DraftCuda* gpu_cuda = draft_cuda_create(&gpu);
    int C = cpu.config.dim, V = target.config.vocab_size;
    char step[160];

    // u = fc(g), then the causal extend over positions 0..4
    enum { T1 = 5, NODES = 4 };
    float* features = random_floats((size_t)T1 * 3 * C, -2, 2);
    float* hidden_cpu = mallocCheck((size_t)T1 * C * sizeof(float));
    float* hidden_gpu = mallocCheck((size_t)T1 * C * sizeof(float));
    draft_project_features(&cpu, hidden_cpu, features, T1);
    draft_project_features_cuda(gpu_cuda, &gpu, hidden_gpu, features, T1);
    snprintf(step, sizeof(step), "draft C=%d V_d=%d: project features T=%d", C, draft_vocab, T1);
    check_tensor(step, hidden_gpu, hidden_cpu, (size_t)T1 * C, tolerance("reorder"));
    int tokens[T1], positions[T1];
    for (int t = 0; t < T1; t++) { tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V); positions[t] = t; }
    tokens[T1 - 1] = V - 1; // the last row of the embedding table too
    draft_forward(&cpu, tokens, hidden_cpu, positions, NULL, T1, 0);
    draft_forward_cuda(gpu_cuda, &gpu, tokens, hidden_cpu, positions, NULL, T1, 0);
    snprintf(step, sizeof(step), "draft C=%d V_d=%d: causal extend T=%d", C, draft_vocab, T1);
    compare_draft(step, &cpu, &gpu, T1);

    // tree step: parents {-, 0, 0, 1}; u of node i is a CPU output row (the same input for both)
    int parent[NODES] = {-1, 0, 0, 1};
    int node_tokens[NODES], node_positions[NODES];
    int P = T1 + NODES;
    uint8_t mask[NODES * (T1 + NODES)];
    memset(mask, 0, sizeof(mask));
    float* node_hidden = mallocCheck((size_t)NODES * C * sizeof(float));
    for (int t = 0; t < NODES; t++) {
        node_tokens[t] = (int)(random_u32(&rng_state) % (uint32_t)V);
        memset(mask + (size_t)t * P, 1, T1);
        int depth = 0;
        for (int node = t; node >= 0; node = parent[node]) { mask[(size_t)t * P + T1 + node] = 1; depth += node != t; }
        node_positions[t] = T1 - 1 + depth;
        memcpy(node_hidden + (size_t)t * C, cpu.act.out + (size_t)(T1 - 1 - t % 2) * C, (size_t)C * sizeof(float));
    }
    draft_forward(&cpu, node_tokens, node_hidden, node_positions, mask, NODES, T1);
    draft_forward_cuda(gpu_cuda, &gpu, node_tokens, node_hidden, node_positions, mask, NODES, T1);
    snprintf(step, sizeof(step), "draft C=%d V_d=%d: tree step T=%d (n_past=%d)", C, draft_vocab, NODES, T1);
    compare_draft(step, &cpu, &gpu, NODES);

    // hot swap: new weights on both hosts, uploaded to the twin; the same tree step again
    uint64_t perturb = random_seed_state(77);
    for (size_t i = 0; i < cpu.n_weight_floats; i++) { cpu.weight_arena[i] += 0.05f * (2.0f * random_f32(&perturb) - 1.0f); }
    memcpy(gpu.weight_arena, cpu.weight_arena, cpu.n_weight_floats * sizeof(float));
    draft_cuda_upload_weights(gpu_cuda, &gpu);
    draft_forward(&cpu, node_tokens, node_hidden, node_positions, mask, NODES, T1);
    draft_forward_cuda(gpu_cuda, &gpu, node_tokens, node_hidden, node_positions, mask, NODES, T1);
    snprintf(step, sizeof(step), "draft C=%d V_d=%d: tree step after draft_cuda_upload_weights", C, draft_vocab);
    compare_draft(step, &cpu, &gpu, NODES);

    draft_cuda_free(gpu_cuda);
    free(features); free(hidden_cpu); free(hidden_gpu); free(node_hidden);
    draft_free(&cpu);
    draft_free(&gpu);
    target_free(&target);
}

// ---- acceptance ---------------------------------------------------------------------------------
// A random tree of N nodes with tokens in [0, n_tokens): each parent a random earlier node (so some nodes
// have several children and the leaves none); a small n_tokens gives siblings with the same token.
static void random_tree(Tree* tree, int N, int n_tokens) {
    memset(tree, 0, sizeof(*tree));
    tree->n_nodes = N;
    tree->root_position = 3;
    int depth[TREE_MAX_NODES];
    for (int i = 0; i < N; i++) {
        int parent = i == 0 ? -1 : (int)(random_u32(&rng_state) % (uint32_t)i);
        if (parent >= 0 && depth[parent] >= TREE_MAX_DEPTH) { parent = 0; }
        depth[i] = parent < 0 ? 0 : depth[parent] + 1;
        tree->parents[i] = parent;
        tree->tokens[i] = (int)(random_u32(&rng_state) % (uint32_t)n_tokens);
    }
    Error err;
    if (tree_derive(tree, &err) != 0) { fprintf(stderr, "test bug: %s\n", err.message); exit(2); }
}

// Acceptance structs must be identical: the count, the path, the bonus.
static void compare_acceptance(const char* what, const Acceptance* got, const Acceptance* expected) {
    check(got->n_accepted == expected->n_accepted, "%s: n_accepted GPU %d, CPU %d", what, got->n_accepted, expected->n_accepted);
    check(got->bonus == expected->bonus, "%s: bonus GPU %d, CPU %d", what, got->bonus, expected->bonus);
    if (got->n_accepted == expected->n_accepted) {
        char name[200];
        snprintf(name, sizeof(name), "%s: path", what);
        check_ints(name, got->path, expected->path, (size_t)expected->n_accepted + 1);
    }
}

// Greedy: logits with few distinct values (ties everywhere); every third trial each node's argmax is made
// one of its children's tokens (long accepted paths, ending at a leaf), every seventh a row of -inf.
static void test_accept_greedy(int trials, int N_max, int V, int n_levels) {
    int reached_leaf = 0, rejected_at_root = 0;
    for (int trial = 0; trial < trials; trial++) {
        Tree tree;
        int N = 1 + (int)(random_u32(&rng_state) % (uint32_t)N_max);
        random_tree(&tree, N, V < 6 ? V : 6 + trial % (V - 5));
        float* logits = mallocCheck((size_t)N * V * sizeof(float));
        for (size_t i = 0; i < (size_t)N * V; i++) { logits[i] = (float)(random_u32(&rng_state) % (uint32_t)n_levels); }
        if (trial % 3 == 0) {
            for (int node = 0; node < N; node++) {
                if (tree.n_children[node] == 0) { continue; }
                int child = tree.children[node][random_u32(&rng_state) % (uint32_t)tree.n_children[node]];
                logits[(size_t)node * V + tree.tokens[child]] = (float)n_levels;
            }
        }
        if (trial % 7 == 3) { for (int i = 0; i < V; i++) { logits[i] = -INFINITY; } }
        Acceptance expected, got;
        memset(&expected, 0, sizeof(expected));
        memset(&got, 0, sizeof(got));
        accept_greedy(&expected, &tree, logits, V);
        float* d_logits = to_device(logits, (size_t)N * V * sizeof(float));
        accept_greedy_cuda(&got, &tree, d_logits, V);
        char what[128];
        snprintf(what, sizeof(what), "accept_greedy_cuda trial %d (N=%d V=%d)", trial, N, V);
        compare_acceptance(what, &got, &expected);
        int last = expected.path[expected.n_accepted];
        reached_leaf += expected.n_accepted > 0 && tree.n_children[last] == 0;
        rejected_at_root += expected.n_accepted == 0 && tree.n_children[0] > 0;
        cudaFree(d_logits);
        free(logits);
    }
    check(reached_leaf > 0 && rejected_at_root > 0, "accept_greedy_cuda V=%d: the trials never reached a leaf (%d) or "
          "never rejected every child of the root (%d)", V, reached_leaf, rejected_at_root);
}

// Sampling: random distributions with zeros; every fifth trial each node's children's tokens get most of
// the mass (acceptances); uniforms random, all near 1 (reject nearly everything) or all 0 (accept the
// first child with any mass). With V small and many children, the residual mass reaches 0.
static void test_accept_sampling(int trials, int N_max, int V) {
    int accepted_some = 0, rejected_all = 0;
    for (int trial = 0; trial < trials; trial++) {
        Tree tree;
        int N = 1 + (int)(random_u32(&rng_state) % (uint32_t)N_max);
        random_tree(&tree, N, V < 8 ? V : 8);
        float* p_target = mallocCheck((size_t)N * V * sizeof(float));
        for (int node = 0; node < N; node++) {
            float* row = p_target + (size_t)node * V;
            for (int i = 0; i < V; i++) { row[i] = (random_u32(&rng_state) & 3u) == 0 ? 0.0f : random_f32(&rng_state); }
            if (trial % 5 == 0) {
                for (int c = 0; c < tree.n_children[node]; c++) { row[tree.tokens[tree.children[node][c]]] += 0.5f * V; }
            }
            float sum = 0.0f;
            for (int i = 0; i < V; i++) { sum += row[i]; }
            if (sum == 0.0f) { row[0] = sum = 1.0f; }
            for (int i = 0; i < V; i++) { row[i] /= sum; }
        }
        float uniforms[TREE_MAX_NODES];
        for (int i = 0; i < N; i++) {
            uniforms[i] = trial % 6 == 1 ? 0.99999f : trial % 6 == 2 ? 0.0f : random_f32(&rng_state);
        }
        Acceptance expected, got;
        memset(&expected, 0, sizeof(expected));
        memset(&got, 0, sizeof(got));
        float* residual = mallocCheck((size_t)V * sizeof(float));
        accept_sampling(&expected, &tree, p_target, uniforms, V, residual);
        float* d_p_target = to_device(p_target, (size_t)N * V * sizeof(float));
        float* d_residual = device_alloc((size_t)V * sizeof(float));
        accept_sampling_cuda(&got, &tree, d_p_target, uniforms, V, d_residual);
        char what[128];
        snprintf(what, sizeof(what), "accept_sampling_cuda trial %d (N=%d V=%d)", trial, N, V);
        compare_acceptance(what, &got, &expected);
        accepted_some += expected.n_accepted > 0;
        rejected_all += expected.n_accepted == 0 && tree.n_children[0] > 0;
        cudaFree(d_p_target); cudaFree(d_residual);
        free(p_target); free(residual);
    }
    check(accepted_some > 0 && rejected_all > 0, "accept_sampling_cuda V=%d: the trials never accepted (%d) or never "
          "rejected every child of the root (%d)", V, accepted_some, rejected_all);
}

// ---- speculative generation end to end ----------------------------------------------------------
// The same requests through a CPU engine and a GPU engine (each with its own Target, and for the EAGLE
// source its own copy of one random draft): greedy output tokens and acceptance counts must be identical.
static void test_speculative_end_to_end(void) {
    char path[256];
    snprintf(path, sizeof(path), "/tmp/aurora_test_cuda_spec_%d.gguf", (int)getpid());
    TinyModelSpec spec = {64, 3, 4, 2, 96, 300, 256, 1, TYPE_F32, 10000.0f, 21};
    Error err;
    Target cpu_target, gpu_target;
    if (tiny_model_write(path, &spec, &err) != 0 || target_load(&cpu_target, path, 256, 64, &err) != 0) {
        check(0, "end-to-end setup: %s", err.message);
        remove(path);
        return;
    }
    if (target_load(&gpu_target, path, 256, 64, &err) != 0) {
        check(0, "end-to-end setup: %s", err.message);
        target_free(&cpu_target);
        remove(path);
        return;
    }
    remove(path);
    cpu_target.tokenizer.eos_id = -1; // random weights: run to max_new
    gpu_target.tokenizer.eos_id = -1;
    int V = cpu_target.config.vocab_size;
    Engine cpu_engine = {&cpu_target, NULL};
    Engine gpu_engine = {&gpu_target, target_cuda_create(&gpu_target)};
    Draft cpu_draft, gpu_draft;
    draft_init_random(&cpu_draft, &cpu_target, V / 2, NULL, 7);
    draft_init_random(&gpu_draft, &gpu_target, V / 2, NULL, 7);
    SamplerSettings greedy = {0.0f, 1.0f};
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
            for (int s = 0; s < (int)(sizeof(shapes) / sizeof(shapes[0])); s++) {
                DraftSource cpu_source, gpu_source;
                draft_source_init(&cpu_source, kinds[k], shapes[s], kinds[k] == DRAFT_EAGLE ? &cpu_draft : NULL, &cpu_engine);
                draft_source_init(&gpu_source, kinds[k], shapes[s], kinds[k] == DRAFT_EAGLE ? &gpu_draft : NULL, &gpu_engine);
                char what[160];
                snprintf(what, sizeof(what), "speculative %s %s prompt %d", kind_names[k], shape_names[s], p);
                check(kinds[k] != DRAFT_EAGLE || gpu_source.draft_cuda != NULL, "%s: the GPU engine's source has no DraftCuda", what);
                int cpu_tokens[MAX_NEW], gpu_tokens[MAX_NEW];
                SpecStats cpu_stats, gpu_stats;
                int n_cpu = generate_speculative(&cpu_engine, &cpu_source, prompt, n_prompt, MAX_NEW, greedy, 0, cpu_tokens,
                                                 &cpu_stats, NULL, NULL, NULL);
                int n_gpu = generate_speculative(&gpu_engine, &gpu_source, prompt, n_prompt, MAX_NEW, greedy, 0, gpu_tokens,
                                                 &gpu_stats, NULL, NULL, NULL);
                check(n_gpu == n_cpu, "%s: GPU generated %d tokens, CPU %d", what, n_gpu, n_cpu);
                if (n_gpu == n_cpu) { check_ints(what, gpu_tokens, cpu_tokens, (size_t)n_cpu); }
                check(gpu_stats.accepted == cpu_stats.accepted && gpu_stats.verify_passes == cpu_stats.verify_passes,
                      "%s: GPU accepted %d in %d passes, CPU %d in %d", what, gpu_stats.accepted, gpu_stats.verify_passes,
                      cpu_stats.accepted, cpu_stats.verify_passes);
                draft_source_free(&cpu_source);
                draft_source_free(&gpu_source);
                runs++;
            }
        }
    }
    printf("speculative end to end: %d runs (3 sources x 3 shapes x 2 prompts), GPU vs CPU engine\n", runs);
    target_cuda_free(gpu_engine.cuda);
    draft_free(&cpu_draft);
    draft_free(&gpu_draft);
    target_free(&cpu_target);
    target_free(&gpu_target);
}

// ==== backward passes and training ops ===========================================================
// Each against its CPU twin on random inputs. The d-buffers start with random contents on both sides
// (the ops accumulate), and NULL d-buffers are tried; rope_backward (which assigns) starts from NaNs.

static float* copy_floats(const float* x, size_t n) {
    float* copy = mallocCheck((n > 0 ? n : 1) * sizeof(float));
    memcpy(copy, x, n * sizeof(float));
    return copy;
}

// Downloads n floats of device memory and compares them with the CPU's.
static void check_device(const char* what, const float* device, const float* expected, size_t n, const char* tol) {
    float* got = mallocCheck((n > 0 ? n : 1) * sizeof(float));
    from_device(got, device, n * sizeof(float));
    check_tensor(what, got, expected, n, tolerance(tol));
    free(got);
}

static void test_matmul_backward(int T, int C, int OC) {
    float* dout = random_floats((size_t)T * OC, -1, 1);
    float* inp = random_floats((size_t)T * C, -1, 1);
    float* weight = random_floats((size_t)OC * C, -1, 1);
    float* dinp = random_floats((size_t)T * C, -1, 1);
    float* dweight = random_floats((size_t)OC * C, -1, 1);
    float* d_dout = to_device(dout, (size_t)T * OC * sizeof(float));
    float* d_inp = to_device(inp, (size_t)T * C * sizeof(float));
    float* d_weight = to_device(weight, (size_t)OC * C * sizeof(float));
    float* d_dinp = to_device(dinp, (size_t)T * C * sizeof(float));
    float* d_dweight = to_device(dweight, (size_t)OC * C * sizeof(float));
    char what[128];
    matmul_backward_cpu(dinp, dweight, dout, inp, weight, T, C, OC);
    matmul_backward_cuda(d_dinp, d_dweight, d_dout, d_inp, d_weight, T, C, OC);
    snprintf(what, sizeof(what), "matmul_backward dinp T=%d C=%d OC=%d", T, C, OC);
    check_device(what, d_dinp, dinp, (size_t)T * C, "reorder");
    snprintf(what, sizeof(what), "matmul_backward dweight T=%d C=%d OC=%d", T, C, OC);
    check_device(what, d_dweight, dweight, (size_t)OC * C, "reorder");
    // a NULL d-buffer is skipped: once each way, accumulating onto the results above
    matmul_backward_cpu(NULL, dweight, dout, inp, weight, T, C, OC);
    matmul_backward_cuda(NULL, d_dweight, d_dout, d_inp, d_weight, T, C, OC);
    matmul_backward_cpu(dinp, NULL, dout, inp, weight, T, C, OC);
    matmul_backward_cuda(d_dinp, NULL, d_dout, d_inp, d_weight, T, C, OC);
    snprintf(what, sizeof(what), "matmul_backward dinp (second call, NULL dweight) T=%d C=%d OC=%d", T, C, OC);
    check_device(what, d_dinp, dinp, (size_t)T * C, "reorder");
    snprintf(what, sizeof(what), "matmul_backward dweight (second call, NULL dinp) T=%d C=%d OC=%d", T, C, OC);
    check_device(what, d_dweight, dweight, (size_t)OC * C, "reorder");
    cudaFree(d_dout); cudaFree(d_inp); cudaFree(d_weight); cudaFree(d_dinp); cudaFree(d_dweight);
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
    float* d_dout = to_device(dout, n * sizeof(float));
    float* d_inp = to_device(inp, n * sizeof(float));
    float* d_weight = to_device(weight, C * sizeof(float));
    float* d_dinp = to_device(dinp, n * sizeof(float));
    float* d_dweight = to_device(dweight, C * sizeof(float));
    rmsnorm_backward_cpu(null_dinp ? NULL : dinp, dweight, dout, inp, weight, T, C, eps);
    rmsnorm_backward_cuda(null_dinp ? NULL : d_dinp, d_dweight, d_dout, d_inp, d_weight, T, C, eps);
    char what[128];
    snprintf(what, sizeof(what), "rmsnorm_backward dinp T=%d C=%d%s", T, C, null_dinp ? " (NULL: untouched)" : "");
    check_device(what, d_dinp, dinp, n, "reorder");
    snprintf(what, sizeof(what), "rmsnorm_backward dweight T=%d C=%d", T, C);
    check_device(what, d_dweight, dweight, C, "reorder");
    rmsnorm_backward_cpu(dinp, NULL, dout, inp, weight, T, C, eps);
    rmsnorm_backward_cuda(d_dinp, NULL, d_dout, d_inp, d_weight, T, C, eps);
    snprintf(what, sizeof(what), "rmsnorm_backward dinp (NULL dweight) T=%d C=%d", T, C);
    check_device(what, d_dinp, dinp, n, "reorder");
    cudaFree(d_dout); cudaFree(d_inp); cudaFree(d_weight); cudaFree(d_dinp); cudaFree(d_dweight);
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
    float* d_dout = to_device(dout, n * sizeof(float));
    int* d_positions = to_device(positions, (size_t)T * sizeof(int));
    float* d_dinp = device_alloc(n * sizeof(float));
    cudaTestCheck(cudaMemset(d_dinp, 0xFF, n * sizeof(float))); // NaNs: it assigns, every element must be written
    rope_backward_cuda(d_dinp, d_dout, d_positions, T, n_heads, HS, theta);
    char what[128];
    snprintf(what, sizeof(what), "rope_backward T=%d heads=%d HS=%d theta=%g max_position=%d", T, n_heads, HS, theta, max_position);
    check_device(what, d_dinp, expected, n, "reorder");
    rope_backward_cuda(d_dout, d_dout, d_positions, T, n_heads, HS, theta); // in place
    snprintf(what, sizeof(what), "rope_backward in place T=%d heads=%d HS=%d", T, n_heads, HS);
    check_device(what, d_dout, expected, n, "reorder");
    cudaFree(d_dout); cudaFree(d_positions); cudaFree(d_dinp);
    free(dout); free(positions); free(expected);
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
    float* d_q = to_device(q, q_size * sizeof(float));
    float* d_keys = to_device(keys, kv_size * sizeof(float));
    float* d_values = to_device(values, kv_size * sizeof(float));
    float* d_dout = to_device(dout, q_size * sizeof(float));
    float* d_dq = to_device(dq, q_size * sizeof(float));
    float* d_dkeys = to_device(dkeys, kv_size * sizeof(float));
    float* d_dvalues = to_device(dvalues, kv_size * sizeof(float));
    uint8_t* d_mask = to_device(mask, (size_t)T * P);
    attention_backward_cpu(which == 1 ? NULL : dq, which == 2 ? NULL : dkeys, which == 2 ? NULL : dvalues, dout, q, keys,
                           values, mask, T, P, NH, NKV, HS);
    attention_backward_cuda(which == 1 ? NULL : d_dq, which == 2 ? NULL : d_dkeys, which == 2 ? NULL : d_dvalues, d_dout, d_q,
                            d_keys, d_values, d_mask, T, P, NH, NKV, HS);
    const char* nulls[3] = {"", " (dq NULL)", " (dkeys, dvalues NULL)"};
    char what[160];
    snprintf(what, sizeof(what), "attention_backward dq T=%d P=%d NH=%d NKV=%d HS=%d %s%s", T, P, NH, NKV, HS,
             MASK_NAMES[mask_kind], nulls[which]);
    check_device(what, d_dq, dq, q_size, "reorder");
    snprintf(what, sizeof(what), "attention_backward dkeys T=%d P=%d NH=%d NKV=%d HS=%d %s%s", T, P, NH, NKV, HS,
             MASK_NAMES[mask_kind], nulls[which]);
    check_device(what, d_dkeys, dkeys, kv_size, "reorder");
    snprintf(what, sizeof(what), "attention_backward dvalues T=%d P=%d NH=%d NKV=%d HS=%d %s%s", T, P, NH, NKV, HS,
             MASK_NAMES[mask_kind], nulls[which]);
    check_device(what, d_dvalues, dvalues, kv_size, "reorder");
    // deterministic: two runs from the same start give the same bits (no atomics)
    if (which == 0) {
        float* first = mallocCheck(kv_size * sizeof(float));
        float* second = mallocCheck(kv_size * sizeof(float));
        float* d_start = to_device(dkeys, kv_size * sizeof(float)); // any start will do
        for (int run = 0; run < 2; run++) {
            cudaTestCheck(cudaMemcpy(d_dkeys, d_start, kv_size * sizeof(float), cudaMemcpyDeviceToDevice));
            attention_backward_cuda(NULL, d_dkeys, NULL, d_dout, d_q, d_keys, d_values, d_mask, T, P, NH, NKV, HS);
            from_device(run == 0 ? first : second, d_dkeys, kv_size * sizeof(float));
        }
        check(memcmp(first, second, kv_size * sizeof(float)) == 0, "attention_backward T=%d P=%d: two runs differ", T, P);
        cudaFree(d_start);
        free(first); free(second);
    }
    cudaFree(d_q); cudaFree(d_keys); cudaFree(d_values); cudaFree(d_dout); cudaFree(d_dq); cudaFree(d_dkeys);
    cudaFree(d_dvalues); cudaFree(d_mask);
    free(q); free(keys); free(values); free(dout); free(dq); free(dkeys); free(dvalues); free(mask);
}

static void test_swiglu_backward(int N) {
    float* dout = random_floats(N, -1, 1);
    float* gate = random_floats(N, -6, 6);
    float* up = random_floats(N, -2, 2);
    float* dgate = random_floats(N, -1, 1);
    float* dup = random_floats(N, -1, 1);
    float* d_dout = to_device(dout, (size_t)N * sizeof(float));
    float* d_gate = to_device(gate, (size_t)N * sizeof(float));
    float* d_up = to_device(up, (size_t)N * sizeof(float));
    float* d_dgate = to_device(dgate, (size_t)N * sizeof(float));
    float* d_dup = to_device(dup, (size_t)N * sizeof(float));
    swiglu_backward_cpu(dgate, dup, dout, gate, up, N);
    swiglu_backward_cuda(d_dgate, d_dup, d_dout, d_gate, d_up, N);
    swiglu_backward_cpu(NULL, dup, dout, gate, up, N);
    swiglu_backward_cuda(NULL, d_dup, d_dout, d_gate, d_up, N);
    swiglu_backward_cpu(dgate, NULL, dout, gate, up, N);
    swiglu_backward_cuda(d_dgate, NULL, d_dout, d_gate, d_up, N);
    char what[96];
    snprintf(what, sizeof(what), "swiglu_backward dgate N=%d", N);
    check_device(what, d_dgate, dgate, N, "reorder");
    snprintf(what, sizeof(what), "swiglu_backward dup N=%d", N);
    check_device(what, d_dup, dup, N, "reorder");
    cudaFree(d_dout); cudaFree(d_gate); cudaFree(d_up); cudaFree(d_dgate); cudaFree(d_dup);
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
    float* d_logits = to_device(logits, n * sizeof(float));
    float* d_p = to_device(p_target, n * sizeof(float));
    int* d_tokens = to_device(tokens, (size_t)T * sizeof(int));
    float* d_weights = to_device(weights, (size_t)T * sizeof(float));
    float* d_dlogits = to_device(dlogits, n * sizeof(float));
    float* d_losses = device_alloc((size_t)T * sizeof(float));
    const char* names[3] = {"forward KL", "reverse KL", "next token"};
    const float* p_arg = kind == LOSS_NEXT_TOKEN ? NULL : p_target; // NULL allowed where unused
    const float* d_p_arg = kind == LOSS_NEXT_TOKEN ? NULL : d_p;
    const int* tokens_arg = kind == LOSS_NEXT_TOKEN ? tokens : NULL;
    const int* d_tokens_arg = kind == LOSS_NEXT_TOKEN ? d_tokens : NULL;
    char what[128];
    // losses only
    distribution_loss_cpu(losses, NULL, logits, p_arg, tokens_arg, NULL, T, V, kind);
    distribution_loss_cuda(d_losses, NULL, d_logits, d_p_arg, d_tokens_arg, NULL, T, V, kind);
    snprintf(what, sizeof(what), "distribution_loss %s losses T=%d V=%d", names[kind], T, V);
    check_device(what, d_losses, losses, T, "reorder");
    // losses and weighted gradients, accumulated; then unweighted (weights NULL)
    distribution_loss_cpu(losses, dlogits, logits, p_arg, tokens_arg, weights, T, V, kind);
    distribution_loss_cuda(d_losses, d_dlogits, d_logits, d_p_arg, d_tokens_arg, d_weights, T, V, kind);
    distribution_loss_cpu(losses, dlogits, logits, p_arg, tokens_arg, NULL, T, V, kind);
    distribution_loss_cuda(d_losses, d_dlogits, d_logits, d_p_arg, d_tokens_arg, NULL, T, V, kind);
    snprintf(what, sizeof(what), "distribution_loss %s losses (with gradient) T=%d V=%d", names[kind], T, V);
    check_device(what, d_losses, losses, T, "reorder");
    snprintf(what, sizeof(what), "distribution_loss %s dlogits T=%d V=%d", names[kind], T, V);
    check_device(what, d_dlogits, dlogits, n, "reorder");
    cudaFree(d_logits); cudaFree(d_p); cudaFree(d_tokens); cudaFree(d_weights); cudaFree(d_dlogits); cudaFree(d_losses);
    free(logits); free(p_target); free(tokens); free(weights); free(dlogits); free(losses);
}

// Three AdamW steps from zero moments (bias corrections t = 1, 2, 3), with weight decay.
static void test_adamw(size_t N) {
    float* params = random_floats(N, -1, 1);
    float* m = mallocCheck(N * sizeof(float));
    float* v = mallocCheck(N * sizeof(float));
    memset(m, 0, N * sizeof(float));
    memset(v, 0, N * sizeof(float));
    float* d_params = to_device(params, N * sizeof(float));
    float* d_m = to_device(m, N * sizeof(float));
    float* d_v = to_device(v, N * sizeof(float));
    float* d_grads = device_alloc(N * sizeof(float));
    for (int t = 1; t <= 3; t++) {
        float* grads = random_floats(N, -1, 1);
        grads[0] = 0.0f;
        if (N > 1) { grads[1] = 1e-9f; } // far below eps: the update stays small
        cudaTestCheck(cudaMemcpy(d_grads, grads, N * sizeof(float), cudaMemcpyHostToDevice));
        adamw_update_cpu(params, grads, m, v, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
        adamw_update_cuda(d_params, d_grads, d_m, d_v, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
        free(grads);
    }
    char what[96];
    snprintf(what, sizeof(what), "adamw_update params N=%zu (3 steps)", N);
    check_device(what, d_params, params, N, "reorder");
    snprintf(what, sizeof(what), "adamw_update m N=%zu", N);
    check_device(what, d_m, m, N, "reorder");
    snprintf(what, sizeof(what), "adamw_update v N=%zu", N);
    check_device(what, d_v, v, N, "reorder");
    cudaFree(d_params); cudaFree(d_m); cudaFree(d_v); cudaFree(d_grads);
    free(params); free(m); free(v);
}

static void test_sum_squares(size_t N) {
    float* values = random_floats(N, -3, 3);
    float* d_values = to_device(values, N * sizeof(float));
    double expected = sum_squares_cpu(values, N);
    double got = sum_squares_cuda(d_values, N);
    double again = sum_squares_cuda(d_values, N);
    // both sums in double: their different orders differ by a few units of 1e-16 per term at most
    check(fabs(got - expected) <= 1e-11 * fabs(expected), "sum_squares N=%zu: GPU %.17g, CPU %.17g", N, got, expected);
    check(memcmp(&got, &again, sizeof(double)) == 0, "sum_squares N=%zu: two runs differ (%.17g, %.17g)", N, got, again);
    cudaFree(d_values);
    free(values);
}

// ==== the trainer on the GPU =====================================================================
// trainer_step_cuda against trainer_step from the same start, on records made on a tiny target.

// A tiny target: 2 layers (as tests/test_trainer.c), GQA.
static int load_trainer_target(Target* target, uint64_t seed) {
    char path[256];
    snprintf(path, sizeof(path), "/tmp/aurora_test_cuda_trainer_%d.gguf", (int)getpid());
    TinyModelSpec spec = {32, 2, 4, 2, 64, 300, 256, 1, TYPE_F32, 10000.0f, seed};
    Error err;
    if (tiny_model_write(path, &spec, &err) != 0 || target_load(target, path, 256, 64, &err) != 0) {
        check(0, "trainer test setup: %s", err.message);
        remove(path);
        return -1;
    }
    remove(path);
    target->tokenizer.eos_id = -1; // random weights: always generate max_new tokens
    return 0;
}

// A record with rejected branches: a random draft proposing K=2 trees (as tests/test_trainer.c).
static Record* make_record(Engine* engine, Draft* draft, const int* prompt, int n_prompt, int max_new) {
    DraftSource source;
    draft_source_init(&source, DRAFT_EAGLE, (TreeShape){2, 3, 7}, draft, engine);
    Record* record = record_new(engine->target->config.dim);
    int out[64];
    SpecStats stats;
    SamplerSettings greedy = {0.0f, 1.0f};
    generate_speculative(engine, &source, prompt, n_prompt, max_new, greedy, 0, out, &stats, NULL, NULL, record);
    draft_source_free(&source);
    return record;
}

// n records of prompts of 4 to 9 random tokens, max_new 8 to 13.
static Record** make_records(Engine* engine, Draft* draft, int n) {
    Record** records = mallocCheck((size_t)n * sizeof(Record*));
    int V = engine->target->config.vocab_size;
    for (int i = 0; i < n; i++) {
        int prompt[16];
        int n_prompt = 4 + i % 6;
        for (int j = 0; j < n_prompt; j++) { prompt[j] = (int)(random_u32(&rng_state) % (uint32_t)V); }
        records[i] = make_record(engine, draft, prompt, n_prompt, 8 + i % 6);
    }
    return records;
}

// One training step's statistics, GPU against CPU.
static void compare_step_stats(const char* what, const TrainStats* gpu, const TrainStats* cpu) {
    float got[4] = {gpu->loss, gpu->accepted_loss, gpu->discard_loss, gpu->grad_norm};
    float expected[4] = {cpu->loss, cpu->accepted_loss, cpu->discard_loss, cpu->grad_norm};
    char name[200];
    snprintf(name, sizeof(name), "%s: loss, accepted loss, discard loss, gradient norm", what);
    check_tensor(name, got, expected, 4, tolerance("layer"));
    float one_position = cpu->n_positions > 0 ? 1.0f / cpu->n_positions : 0.0f;
    check(fabsf(gpu->step0_accuracy - cpu->step0_accuracy) <= one_position + 1e-6f, "%s: step-0 accuracy GPU %g, CPU %g",
          what, gpu->step0_accuracy, cpu->step0_accuracy);
    check(gpu->n_positions == cpu->n_positions && gpu->n_discard == cpu->n_discard && gpu->rejected == cpu->rejected,
          "%s: GPU %d positions, %d discard nodes, rejected %d; CPU %d, %d, %d", what, gpu->n_positions, gpu->n_discard,
          gpu->rejected, cpu->n_positions, cpu->n_discard, cpu->rejected);
}

// K = 3 steps of trainer_step_cuda vs trainer_step from the same start, batches of 2 records, for each
// accepted-path loss kind (with the discard loss, top-k selection, the reverse KL discard loss, a cut
// context window and a max_positions cut along the way). After each step: the same losses, the same
// counters, and the same weights. The weights are compared with a tolerance made from the learning
// rates (below): AdamW moves each weight by about lr per step whatever its gradient's size.
static void test_trainer_steps(void) {
    Target target;
    if (load_trainer_target(&target, 3) != 0) { return; }
    Engine engine = {&target, NULL};
    Draft draft;
    draft_init_random(&draft, &target, 120, NULL, 5);
    uint64_t perturb = random_seed_state(8); // larger weights than the init: every gradient far from zero
    for (size_t i = 0; i < draft.n_weight_floats; i++) { draft.weight_arena[i] += 0.05f * (2.0f * random_f32(&perturb) - 1.0f); }
    enum { K = 3, BATCH = 2 };
    Record** records = make_records(&engine, &draft, K * BATCH);
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
        settings.learning_rate = 1e-3f;
        settings.warmup_steps = 2;          // the warm-up and then the full rate
        settings.weight_decay = 0.01f;
        settings.max_grad_norm = kind == 0 ? 0.5f : 1.0f;
        // eps = 1e-3 (not 1e-8): the update lr * m / (sqrt(v) + eps) is then a smooth function of the gradient
        // near 0, so a gradient that is float noise on both devices gives the same small step on both (with
        // 1e-8 it would give about +lr on one and -lr on the other, and the weights could not be compared)
        settings.adam_eps = 1e-3f;
        Trainer cpu, gpu;
        trainer_init(&cpu, &draft, &target, settings);
        trainer_init(&gpu, &draft, &target, settings);
        TrainerCuda* gpu_cuda = trainer_cuda_create(&gpu);
        float learning_rate_sum = 0.0f;
        int discard_trained = 0;
        for (int step = 0; step < K; step++) {
            learning_rate_sum += trainer_learning_rate(&cpu);
            TrainStats cpu_stats, gpu_stats;
            int cpu_rejected = trainer_step(&cpu, records + step * BATCH, BATCH, &cpu_stats);
            int gpu_rejected = trainer_step_cuda(gpu_cuda, &gpu, records + step * BATCH, BATCH, &gpu_stats);
            char what[160];
            snprintf(what, sizeof(what), "trainer_step_cuda loss kind %d, step %d", kind, step + 1);
            check(gpu_rejected == cpu_rejected && gpu.step == cpu.step && gpu.rejected_updates == cpu.rejected_updates,
                  "%s: GPU rejected %d (step %d, %ld rejections), CPU %d (step %d, %ld)", what, gpu_rejected, gpu.step,
                  gpu.rejected_updates, cpu_rejected, cpu.step, cpu.rejected_updates);
            compare_step_stats(what, &gpu_stats, &cpu_stats);
            check(!cpu_stats.rejected, "%s: the step should be applied", what);
            discard_trained += cpu_stats.n_discard;
            // the weights: |GPU - CPU| <= 5% of the learning rates summed so far, whatever the weight's size (a
            // wrong gradient would show as differences of about the learning rate itself)
            Tolerance weights_tolerance = {"adamw_steps", 5e-2f * learning_rate_sum, 0.0f,
                                           "weights after AdamW steps from one start: each step moves a weight by about lr"};
            snprintf(what, sizeof(what), "trainer_step_cuda loss kind %d, weights after step %d", kind, step + 1);
            check_tensor(what, gpu.draft.weight_arena, cpu.draft.weight_arena, cpu.draft.n_weight_floats, weights_tolerance);
        }
        check(discard_trained > 0, "trainer_step_cuda loss kind %d: the steps should train on discard nodes", kind);
        printf("trainer_step_cuda vs trainer_step, loss kind %d: %d steps of %d records (%d discard nodes), same losses and "
               "weights\n", kind, K, BATCH, discard_trained);
        trainer_cuda_free(gpu_cuda);
        trainer_free(&cpu);
        trainer_free(&gpu);
    }

    // a non-finite record is rejected on the GPU too: the weights stay bit-identical, the rejection counts
    Record* bad = make_record(&engine, &draft, (const int[]){20, 21, 22, 23, 24}, 5, 8);
    bad->hidden[(size_t)(bad->n_committed - 1) * target.config.dim] = NAN;
    Trainer gpu;
    trainer_init(&gpu, &draft, &target, trainer_default_settings());
    TrainerCuda* gpu_cuda = trainer_cuda_create(&gpu);
    float* before = mallocCheck(draft.n_weight_floats * sizeof(float));
    memcpy(before, gpu.draft.weight_arena, draft.n_weight_floats * sizeof(float));
    TrainStats stats;
    int rejected = trainer_step_cuda(gpu_cuda, &gpu, &bad, 1, &stats);
    check(rejected == 1 && stats.rejected && gpu.rejected_updates == 1 && gpu.step == 0,
          "trainer_step_cuda: a non-finite loss must reject the update (rejected %d, counted %ld)", rejected, gpu.rejected_updates);
    check(memcmp(before, gpu.draft.weight_arena, draft.n_weight_floats * sizeof(float)) == 0,
          "trainer_step_cuda: a rejected update must leave the weights bit-identical");
    // and the next good step still matches the CPU's first step (the device weights were not touched)
    Trainer cpu;
    trainer_init(&cpu, &draft, &target, trainer_default_settings());
    TrainStats cpu_stats;
    trainer_step(&cpu, records, 1, &cpu_stats);
    trainer_step_cuda(gpu_cuda, &gpu, records, 1, &stats);
    compare_step_stats("trainer_step_cuda after a rejected step", &stats, &cpu_stats);
    free(before);
    trainer_cuda_free(gpu_cuda);
    trainer_free(&gpu);
    trainer_free(&cpu);
    record_free(bad);

    for (int i = 0; i < K * BATCH; i++) { record_free(records[i]); }
    free(records);
    draft_free(&draft);
    target_free(&target);
}

// The learning curve: 20 steps, one record each from a stream (as a lockstep replay trains, but on a
// fixed stream: records served by two diverging drafts could not be compared), default settings except a
// shorter unroll and the discard loss on. The per-step losses of the CPU and GPU trainers must agree.
static void test_trainer_learning_curve(void) {
    Target target;
    if (load_trainer_target(&target, 4) != 0) { return; }
    Engine engine = {&target, NULL};
    Draft draft;
    draft_init_random(&draft, &target, 150, NULL, 9);
    enum { STEPS = 20 };
    Record** records = make_records(&engine, &draft, STEPS);
    TrainerSettings settings = trainer_default_settings();
    settings.ttt_length = 3;
    settings.discard_weight = 0.3f;
    settings.learning_rate = 1e-3f;
    settings.warmup_steps = 5;
    Trainer cpu, gpu;
    trainer_init(&cpu, &draft, &target, settings);
    trainer_init(&gpu, &draft, &target, settings);
    TrainerCuda* gpu_cuda = trainer_cuda_create(&gpu);
    float cpu_losses[STEPS], gpu_losses[STEPS];
    for (int step = 0; step < STEPS; step++) {
        TrainStats cpu_stats, gpu_stats;
        trainer_step(&cpu, records + step, 1, &cpu_stats);
        trainer_step_cuda(gpu_cuda, &gpu, records + step, 1, &gpu_stats);
        cpu_losses[step] = cpu_stats.loss;
        gpu_losses[step] = gpu_stats.loss;
    }
    check_tensor("learning curve: per-step loss, GPU trainer vs CPU trainer (20 steps)", gpu_losses, cpu_losses, STEPS,
                 tolerance("layer"));
    check(gpu.step == cpu.step && gpu.rejected_updates == cpu.rejected_updates, "learning curve: GPU %d steps (%ld rejected), "
          "CPU %d (%ld)", gpu.step, gpu.rejected_updates, cpu.step, cpu.rejected_updates);
    printf("learning curve, 20 steps: loss %.4f -> %.4f (CPU), %.4f -> %.4f (GPU)\n", cpu_losses[0], cpu_losses[STEPS - 1],
           gpu_losses[0], gpu_losses[STEPS - 1]);
    trainer_cuda_free(gpu_cuda);
    trainer_free(&cpu);
    trainer_free(&gpu);
    for (int i = 0; i < STEPS; i++) { record_free(records[i]); }
    free(records);
    draft_free(&draft);
    target_free(&target);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("test_cuda: no CUDA device found; skipping the GPU parity tests\n");
        return 0;
    }
    printf("test_cuda: %s\n", cuda_device_name());

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

    test_swiglu(1);
    test_swiglu(7);
    test_swiglu(1000);

    test_residual(1);
    test_residual(1001);

    test_softmax(1, 1, 0);
    test_softmax(3, 7, 1);
    test_softmax(4, 1000, 0);
    test_softmax(2, 1001, 1);

    // whole model: grouped-query heads with a tied LM head, then plain multi-head with its own LM head
    TinyModelSpec gqa = {0};
    gqa.dim = 64; gqa.n_layers = 4; gqa.n_heads = 4; gqa.n_kv_heads = 2; gqa.ffn_dim = 96; gqa.vocab_size = 300;
    gqa.context_length = 64; gqa.tied_output = 1; gqa.weight_type = TYPE_F32; gqa.rope_theta = 10000.0f; gqa.seed = 1;
    test_target(&gqa);
    TinyModelSpec mha = gqa;
    mha.dim = 48; mha.n_layers = 5; mha.n_heads = 3; mha.n_kv_heads = 3; mha.ffn_dim = 77; mha.vocab_size = 301;
    mha.tied_output = 0; mha.rope_theta = 500000.0f; mha.seed = 2;
    test_target(&mha);

    // key/value cache compaction (exact copies)
    test_kv_compact(1, 8, 1, 0, 1, 0);
    test_kv_compact(3, 40, 16, 5, 6, 0);
    test_kv_compact(2, 64, 24, 7, TREE_MAX_DEPTH + 1, 0);
    test_kv_compact(4, 30, 8, 3, 5, 1);

    // the draft model: GQA with a reduced draft vocabulary, then plain multi-head with the full one
    test_draft(&gqa, 150);
    test_draft(&mha, mha.vocab_size);

    // acceptance: ties, -inf rows, duplicate sibling tokens, residual mass reaching zero, large V
    test_accept_greedy(200, 12, 5, 3);
    test_accept_greedy(100, 40, 300, 4);
    test_accept_greedy(30, 20, 1000, 2);
    test_accept_sampling(200, 12, 3);
    test_accept_sampling(200, 20, 6);
    test_accept_sampling(60, 40, 1000);

    // speculative generation: CPU engine vs GPU engine
    test_speculative_end_to_end();

    // backward passes and training ops: odd shapes, GQA, masked and fully masked rows, NULL d-buffers
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

    // the trainer: three steps against the CPU trainer per loss kind, a rejection, a learning curve
    test_trainer_steps();
    test_trainer_learning_curve();

    return test_summary();
}
