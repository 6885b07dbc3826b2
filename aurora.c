/*
aurora.c: the system. One translation unit: it #includes the rest of the implementation, and tests
#define TESTING and #include this file to reach every static function.

  util.c       errors, checked allocation
  cpu_ref.c    the reference ops (plain fp32 loops)
  gguf.c       GGUF reader and writer, tensor types
  tokenizer.c  byte-level BPE tokenizer, ChatML template
  this file    the target model (load, forward), sampling, generation and the command-line interface

Contract: every command exits 0 on success and 1 with a one-line "error: ..." message on bad input
(unknown flag, unreadable or malformed model, prompt longer than the context); output already streamed
stays streamed.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <time.h>
#include <errno.h>
#ifdef USE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif
#include "aurora.h"
#include "util.c"
#include "cpu_ref.c"
#include "gguf.c"
#include "tokenizer.c"

// ----------------------------------------------------------------------------
// fast paths: the reference op stays the definition; these are checked against it in tests

static int use_blas = 1; // switched off by --no-blas (and absent without USE_BLAS)

#ifdef USE_BLAS
// One threading system. OpenMP's idle workers spin after each parallel region, and OpenBLAS's own
// threads would fight them for the cores (measured: decode at half speed on 2 cores). So with OpenMP,
// OpenBLAS runs single-threaded and OpenMP splits the output columns between threads.
static void matmul_forward_blas(float* out, const float* inp, const float* weight, int T, int C, int OC) {
    int n_parts = 1;
#ifdef _OPENMP
    static int blas_single_threaded = 0;
    if (!blas_single_threaded) { openblas_set_num_threads(1); blas_single_threaded = 1; }
    n_parts = omp_get_max_threads();
    if (n_parts > OC) { n_parts = OC; }
#endif
    #pragma omp parallel for
    for (int part = 0; part < n_parts; part++) {
        int first = (int)((long)OC * part / n_parts), last = (int)((long)OC * (part + 1) / n_parts);
        // out[:, first:last] (T, last-first) = inp (T, C) @ weight[first:last]^T (C, last-first)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, last - first, C,
                    1.0f, inp, C, weight + (size_t)first * C, C, 0.0f, out + first, OC);
    }
}
#endif

void matmul_forward(float* out, const float* inp, const float* weight, int T, int C, int OC) {
#ifdef USE_BLAS
    if (use_blas) { matmul_forward_blas(out, inp, weight, T, C, OC); return; }
#endif
    matmul_forward_cpu(out, inp, weight, T, C, OC);
}

// ----------------------------------------------------------------------------
// target model: configuration and weights from GGUF

// Fills the tensor table from the config (shapes) and the weight struct (where each pointer lives).
static void target_build_tensor_table(Target* target) {
    TargetConfig* c = &target->config;
    TargetWeights* w = &target->weights;
    int QD = c->n_heads * c->head_size, KVD = c->n_kv_heads * c->head_size;
    TargetTensorInfo table[TARGET_NUM_TENSORS] = {
        {"token_embd.weight",       0, c->vocab_size, c->dim,     &w->token_embedding, 0, 1},
        {"blk.%d.attn_norm.weight", 1, c->dim,        1,          &w->attn_norm,       0, 1},
        {"blk.%d.attn_q.weight",    1, QD,            c->dim,     &w->wq,              0, 1},
        {"blk.%d.attn_k.weight",    1, KVD,           c->dim,     &w->wk,              0, 1},
        {"blk.%d.attn_v.weight",    1, KVD,           c->dim,     &w->wv,              0, 1},
        {"blk.%d.attn_output.weight", 1, c->dim,      QD,         &w->wo,              0, 1},
        {"blk.%d.ffn_norm.weight",  1, c->dim,        1,          &w->ffn_norm,        0, 1},
        {"blk.%d.ffn_gate.weight",  1, c->ffn_dim,    c->dim,     &w->w_gate,          0, 1},
        {"blk.%d.ffn_up.weight",    1, c->ffn_dim,    c->dim,     &w->w_up,            0, 1},
        {"blk.%d.ffn_down.weight",  1, c->dim,        c->ffn_dim, &w->w_down,          0, 1},
        {"output_norm.weight",      0, c->dim,        1,          &w->output_norm,     0, 1},
        {"output.weight",           0, c->vocab_size, c->dim,     &w->output,          0, 0},
    };
    for (int i = 0; i < TARGET_NUM_TENSORS; i++) {
        table[i].n_elements = (size_t)table[i].rows * table[i].cols * (table[i].per_layer ? c->n_layers : 1);
        target->tensors[i] = table[i];
    }
}

// Reads an integer hyperparameter and checks it lies in [lo, hi].
static int read_config_int(const GGUFFile* file, const char* key, int lo, int hi, int* out, Error* err) {
    int64_t value;
    if (gguf_get_int(file, key, &value, err) != 0) { return -1; }
    if (value < lo || value > hi) {
        return error_set(err, "%s: key '%s' is %lld, expected a value in [%d, %d]",
                         file->path, key, (long long)value, lo, hi);
    }
    *out = (int)value;
    return 0;
}

static int target_read_config(TargetConfig* c, const GGUFFile* file, Error* err) {
    char* architecture = NULL;
    if (gguf_get_string(file, "general.architecture", &architecture, err) != 0) { return -1; }
    int is_llama = strcmp(architecture, "llama") == 0;
    if (!is_llama) {
        error_set(err, "%s: general.architecture is '%s', expected 'llama' (the only architecture supported)",
                  file->path, architecture);
    }
    free(architecture);
    if (!is_llama) { return -1; }
    if (read_config_int(file, "llama.embedding_length", 1, 1 << 16, &c->dim, err) ||
        read_config_int(file, "llama.block_count", 1, 1024, &c->n_layers, err) ||
        read_config_int(file, "llama.attention.head_count", 1, 1024, &c->n_heads, err) ||
        read_config_int(file, "llama.feed_forward_length", 1, 1 << 20, &c->ffn_dim, err) ||
        read_config_int(file, "llama.context_length", 1, 1 << 24, &c->context_length, err)) {
        return -1;
    }
    c->n_kv_heads = c->n_heads; // absent key means plain multi-head attention
    if (gguf_find(file, "llama.attention.head_count_kv") &&
        read_config_int(file, "llama.attention.head_count_kv", 1, c->n_heads, &c->n_kv_heads, err)) {
        return -1;
    }
    if (c->dim % c->n_heads != 0 || c->n_heads % c->n_kv_heads != 0) {
        return error_set(err, "%s: embedding_length %d, head_count %d, head_count_kv %d: expected the width to "
                         "divide into heads and the heads into key/value groups", file->path, c->dim, c->n_heads, c->n_kv_heads);
    }
    c->head_size = c->dim / c->n_heads;
    if (c->head_size % 2 != 0) {
        return error_set(err, "%s: head size %d is odd, expected an even head size for RoPE", file->path, c->head_size);
    }
    if (gguf_find(file, "llama.rope.dimension_count")) {
        int rope_dims;
        if (read_config_int(file, "llama.rope.dimension_count", 1, 1 << 16, &rope_dims, err)) { return -1; }
        if (rope_dims != c->head_size) {
            return error_set(err, "%s: llama.rope.dimension_count is %d, expected the head size %d (partial RoPE "
                             "is not supported)", file->path, rope_dims, c->head_size);
        }
    }
    double value = 10000.0;
    if (gguf_find(file, "llama.rope.freq_base") && gguf_get_float(file, "llama.rope.freq_base", &value, err)) { return -1; }
    c->rope_theta = (float)value;
    if (gguf_get_float(file, "llama.attention.layer_norm_rms_epsilon", &value, err)) { return -1; }
    c->norm_eps = (float)value;
    if (!(c->rope_theta > 0.0f) || !(c->norm_eps >= 0.0f)) {
        return error_set(err, "%s: rope freq_base %g / rms epsilon %g out of range, expected positive values",
                         file->path, c->rope_theta, c->norm_eps);
    }
    // the vocabulary size comes from the embedding tensor (llama.vocab_size is optional in GGUF)
    const GGUFTensor* embedding = gguf_find_tensor(file, "token_embd.weight");
    if (embedding == NULL) {
        return error_set(err, "%s: required tensor 'token_embd.weight' is missing", file->path);
    }
    if (embedding->n_dims != 2 || embedding->shape[0] != c->dim || embedding->shape[1] > (1 << 24)) {
        return error_set(err, "%s: tensor 'token_embd.weight' has shape [%lld, %lld], expected [%d, vocab]",
                         file->path, (long long)embedding->shape[0], (long long)embedding->shape[1], c->dim);
    }
    c->vocab_size = (int)embedding->shape[1];
    c->tied_output = gguf_find_tensor(file, "output.weight") == NULL;
    // Aurora taps layers 1, L/2-1 and L-4 (0-indexed); tiny models clamp into [0, L-1]
    int defaults[3] = {1, c->n_layers / 2 - 1, c->n_layers - 4};
    for (int i = 0; i < 3; i++) {
        int layer = defaults[i];
        if (layer < 0) { layer = 0; }
        if (layer > c->n_layers - 1) { layer = c->n_layers - 1; }
        c->tap_layers[i] = layer;
    }
    return 0;
}

// Copies one GGUF tensor into the fp32 arena after checking its shape is (rows, cols).
static int target_load_tensor(const GGUFFile* file, const char* name, int rows, int cols, float* destination, Error* err) {
    const GGUFTensor* tensor = gguf_find_tensor(file, name);
    if (tensor == NULL) { return error_set(err, "%s: required tensor '%s' is missing", file->path, name); }
    int is_vector = cols == 1;
    int shape_ok = is_vector ? (tensor->n_dims == 1 && tensor->shape[0] == rows)
                             : (tensor->n_dims == 2 && tensor->shape[0] == cols && tensor->shape[1] == rows);
    if (!shape_ok) {
        if (is_vector) {
            return error_set(err, "%s: tensor '%s' has %d dims [%lld, %lld], expected shape [%d]", file->path, name,
                             tensor->n_dims, (long long)tensor->shape[0], (long long)tensor->shape[1], rows);
        }
        return error_set(err, "%s: tensor '%s' has %d dims [%lld, %lld], expected shape [%d, %d]", file->path, name,
                         tensor->n_dims, (long long)tensor->shape[0], (long long)tensor->shape[1], cols, rows);
    }
    gguf_tensor_to_f32(tensor, destination);
    return 0;
}

static void target_alloc_activations(Target* target, int max_tokens) {
    TargetConfig* c = &target->config;
    TargetActivations* a = &target->act;
    size_t T = (size_t)max_tokens;
    int QD = c->n_heads * c->head_size, KVD = c->n_kv_heads * c->head_size;
    a->max_tokens = max_tokens;
    a->x = mallocCheck(T * c->dim * sizeof(float));
    a->x_norm = mallocCheck(T * c->dim * sizeof(float));
    a->q = mallocCheck(T * QD * sizeof(float));
    a->k = mallocCheck(T * KVD * sizeof(float));
    a->v = mallocCheck(T * KVD * sizeof(float));
    a->attn_out = mallocCheck(T * QD * sizeof(float));
    a->proj = mallocCheck(T * c->dim * sizeof(float));
    a->ffn_gate = mallocCheck(T * c->ffn_dim * sizeof(float));
    a->ffn_up = mallocCheck(T * c->ffn_dim * sizeof(float));
    a->taps = mallocCheck(T * 3 * c->dim * sizeof(float));
    a->hidden = mallocCheck(T * c->dim * sizeof(float));
    a->logits = mallocCheck(T * c->vocab_size * sizeof(float));
    a->mask = mallocCheck(T * target->cache_capacity);
    a->layer_outputs = NULL;
}

int target_load(Target* target, const char* path, int cache_capacity, int max_tokens, Error* err) {
    memset(target, 0, sizeof(*target));
    GGUFFile* file = &target->file;
    if (gguf_open(file, path, err) != 0) { return -1; }
    TargetConfig* c = &target->config;
    if (target_read_config(c, file, err) != 0) { gguf_close(file); return -1; }
    target_build_tensor_table(target);

    // one arena for every weight; the tied LM head is not stored twice
    size_t total = 0;
    for (int i = 0; i < TARGET_NUM_TENSORS; i++) {
        if (i == TARGET_NUM_TENSORS - 1 && c->tied_output) { continue; }
        total += target->tensors[i].n_elements;
    }
    target->n_weight_floats = total;
    target->weight_arena = mallocCheck(total * sizeof(float));
    float* cursor = target->weight_arena;
    for (int i = 0; i < TARGET_NUM_TENSORS; i++) {
        TargetTensorInfo* info = &target->tensors[i];
        if (i == TARGET_NUM_TENSORS - 1 && c->tied_output) {
            *info->data = target->weights.token_embedding;
            continue;
        }
        *info->data = cursor;
        int copies = info->per_layer ? c->n_layers : 1;
        for (int layer = 0; layer < copies; layer++) {
            char name[128];
            snprintf(name, sizeof(name), info->gguf_name, layer);
            float* destination = cursor + (size_t)layer * info->rows * info->cols;
            if (target_load_tensor(file, name, info->rows, info->cols, destination, err) != 0) {
                target_free(target);
                return -1;
            }
        }
        cursor += info->n_elements;
    }

    target->has_tokenizer = gguf_find(file, "tokenizer.ggml.tokens") != NULL;
    if (target->has_tokenizer && tokenizer_load_gguf(&target->tokenizer, file, err) != 0) {
        target->has_tokenizer = 0;
        target_free(target);
        return -1;
    }
    if (target->has_tokenizer && target->tokenizer.vocab_size > c->vocab_size) {
        error_set(err, "%s: tokenizer has %d tokens but token_embd.weight has %d rows, expected at most as many tokens as rows",
                  path, target->tokenizer.vocab_size, c->vocab_size);
        target_free(target);
        return -1;
    }

    if (cache_capacity <= 0) { cache_capacity = c->context_length < 4096 ? c->context_length : 4096; }
    if (max_tokens <= 0 || max_tokens > cache_capacity) { max_tokens = cache_capacity; }
    target->cache_capacity = cache_capacity;
    size_t cache_floats = (size_t)c->n_layers * cache_capacity * c->n_kv_heads * c->head_size;
    target->key_cache = callocCheck(cache_floats, sizeof(float));
    target->value_cache = callocCheck(cache_floats, sizeof(float));
    target_alloc_activations(target, max_tokens);
    return 0;
}

void target_free(Target* target) {
    TargetActivations* a = &target->act;
    float* buffers[] = {a->x, a->x_norm, a->q, a->k, a->v, a->attn_out, a->proj, a->ffn_gate, a->ffn_up,
                        a->taps, a->hidden, a->logits, target->key_cache, target->value_cache, target->weight_arena};
    for (size_t i = 0; i < sizeof(buffers) / sizeof(buffers[0]); i++) { free(buffers[i]); }
    free(a->mask);
    if (target->has_tokenizer) { tokenizer_free(&target->tokenizer); }
    gguf_close(&target->file);
    memset(target, 0, sizeof(*target));
}

// ----------------------------------------------------------------------------
// target model: forward

// The (T, P) attention mask of one call: every new token sees the n_past cached slots, and the new
// tokens among themselves follow tree_mask (or causality when it is NULL).
static void build_attention_mask(uint8_t* mask, const uint8_t* tree_mask, int T, int n_past) {
    int P = n_past + T;
    for (int t = 0; t < T; t++) {
        uint8_t* row = mask + (size_t)t * P;
        memset(row, 1, (size_t)n_past);
        for (int j = 0; j < T; j++) {
            row[n_past + j] = tree_mask ? (tree_mask[(size_t)t * T + j] != 0) : (j <= t);
        }
    }
}

void target_forward(Target* target, const int* tokens, const int* positions, const uint8_t* tree_mask,
                    int T, int n_past, int all_logits) {
    TargetConfig* c = &target->config;
    TargetWeights* w = &target->weights;
    TargetActivations* a = &target->act;
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim, V = c->vocab_size;
    int QD = NH * HS, KVD = NKV * HS, S = target->cache_capacity, P = n_past + T;
    if (T < 1 || T > a->max_tokens || n_past < 0 || P > S) {
        fprintf(stderr, "error: target_forward called with T=%d n_past=%d (max %d tokens per call, %d cache slots)\n",
                T, n_past, a->max_tokens, S);
        exit(EXIT_FAILURE); // callers check these bounds first; reaching here is a program bug
    }
    build_attention_mask(a->mask, tree_mask, T, n_past);
    embedding_forward_cpu(a->x, tokens, w->token_embedding, T, C, V);

    for (int l = 0; l < c->n_layers; l++) {
        float* key_cache = target->key_cache + (size_t)l * S * KVD;     // (S, KVD)
        float* value_cache = target->value_cache + (size_t)l * S * KVD; // (S, KVD)
        // attention block: x = x + wo(attention(rope(wq xn), rope(wk xn), wv xn)), xn = rmsnorm(x)
        rmsnorm_forward_cpu(a->x_norm, a->x, w->attn_norm + (size_t)l * C, T, C, c->norm_eps);
        matmul_forward(a->q, a->x_norm, w->wq + (size_t)l * QD * C, T, C, QD);
        matmul_forward(a->k, a->x_norm, w->wk + (size_t)l * KVD * C, T, C, KVD);
        matmul_forward(a->v, a->x_norm, w->wv + (size_t)l * KVD * C, T, C, KVD);
        rope_forward_cpu(a->q, a->q, positions, T, NH, HS, c->rope_theta);
        rope_forward_cpu(a->k, a->k, positions, T, NKV, HS, c->rope_theta);
        memcpy(key_cache + (size_t)n_past * KVD, a->k, (size_t)T * KVD * sizeof(float));
        memcpy(value_cache + (size_t)n_past * KVD, a->v, (size_t)T * KVD * sizeof(float));
        attention_forward_cpu(a->attn_out, a->q, key_cache, value_cache, a->mask, T, P, NH, NKV, HS);
        matmul_forward(a->proj, a->attn_out, w->wo + (size_t)l * C * QD, T, QD, C);
        residual_forward_cpu(a->x, a->x, a->proj, T * C);
        // MLP block: x = x + w_down(silu(w_gate xn) * w_up xn), xn = rmsnorm(x)
        rmsnorm_forward_cpu(a->x_norm, a->x, w->ffn_norm + (size_t)l * C, T, C, c->norm_eps);
        matmul_forward(a->ffn_gate, a->x_norm, w->w_gate + (size_t)l * F * C, T, C, F);
        matmul_forward(a->ffn_up, a->x_norm, w->w_up + (size_t)l * F * C, T, C, F);
        swiglu_forward_cpu(a->ffn_gate, a->ffn_gate, a->ffn_up, T * F);
        matmul_forward(a->proj, a->ffn_gate, w->w_down + (size_t)l * C * F, T, F, C);
        residual_forward_cpu(a->x, a->x, a->proj, T * C);
        // taps for the draft, and per-layer outputs when a parity test asks for them
        for (int i = 0; i < 3; i++) {
            if (c->tap_layers[i] != l) { continue; }
            for (int t = 0; t < T; t++) {
                memcpy(a->taps + (size_t)t * 3 * C + (size_t)i * C, a->x + (size_t)t * C, (size_t)C * sizeof(float));
            }
        }
        if (a->layer_outputs) { memcpy(a->layer_outputs + (size_t)l * T * C, a->x, (size_t)T * C * sizeof(float)); }
    }
    rmsnorm_forward_cpu(a->hidden, a->x, w->output_norm, T, C, c->norm_eps);
    if (all_logits) {
        matmul_forward(a->logits, a->hidden, w->output, T, C, V);
    } else {
        matmul_forward(a->logits, a->hidden + (size_t)(T - 1) * C, w->output, 1, C, V);
    }
}

// ----------------------------------------------------------------------------
// random numbers: one small seeded generator (xorshift64*). Every stochastic function takes its
// uniforms as arguments, drawn from here, so runs repeat bit for bit and CPU and GPU decide alike.

uint32_t random_u32(uint64_t* state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

float random_f32(uint64_t* state) { // uniform in [0, 1), 24 random bits
    return (random_u32(state) >> 8) / 16777216.0f;
}

// A seed of 0 would make xorshift emit zeros forever; mix the seed so every value is usable.
uint64_t random_seed_state(uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z == 0 ? 0x9E3779B97F4A7C15ull : z;
}

// ----------------------------------------------------------------------------
// sampling: greedy is its own exact path; temperature and top-p share one function

typedef struct {
    float temperature;  // 0: greedy (argmax, exact); > 0: sample from softmax(logits / temperature)
    float top_p;        // nucleus: keep the smallest set of tokens whose probability reaches top_p (1 = off)
} SamplerSettings;

typedef struct { float prob; int index; } ProbIndex; // scratch for top-p sorting

// The largest logit; ties go to the lowest id (as llama.cpp's greedy sampler and torch.argmax do).
int sample_argmax(const float* logits, int V) {
    int best = 0;
    for (int i = 1; i < V; i++) { if (logits[i] > logits[best]) { best = i; } }
    return best;
}

// Samples index i with probability probs[i], given a uniform coin in [0, 1).
int sample_multinomial(const float* probs, int V, float coin) {
    float cumulative = 0.0f;
    for (int i = 0; i < V; i++) {
        cumulative += probs[i];
        if (coin < cumulative) { return i; }
    }
    // rounding left the total just under the coin: return the last token with nonzero probability
    for (int i = V - 1; i >= 0; i--) { if (probs[i] > 0.0f) { return i; } }
    return V - 1;
}

static int compare_prob_descending(const void* a, const void* b) {
    const ProbIndex* x = a;
    const ProbIndex* y = b;
    if (x->prob > y->prob) { return -1; }
    if (x->prob < y->prob) { return 1; }
    return x->index - y->index; // ties by id, so the order (and the sample) is deterministic
}

// Top-p (nucleus) sampling: sort by probability, keep the shortest prefix whose mass reaches top_p,
// sample within it. scratch: (V).
int sample_top_p(const float* probs, int V, float top_p, float coin, ProbIndex* scratch) {
    // tokens below (1 - top_p) / (V - 1) can never be in the nucleus: skip them before sorting
    const float cutoff = (1.0f - top_p) / (V - 1);
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (probs[i] >= cutoff) { scratch[n].index = i; scratch[n].prob = probs[i]; n++; }
    }
    qsort(scratch, n, sizeof(ProbIndex), compare_prob_descending);
    float cumulative = 0.0f;
    int last = n - 1;
    for (int i = 0; i < n; i++) {
        cumulative += scratch[i].prob;
        if (cumulative >= top_p) { last = i; break; }
    }
    float r = coin * cumulative;
    float running = 0.0f;
    for (int i = 0; i <= last; i++) {
        running += scratch[i].prob;
        if (r < running) { return scratch[i].index; }
    }
    return scratch[last].index;
}

// Turns logits into probabilities at a temperature: probs = softmax(logits / temperature).
void logits_to_probs(float* probs, const float* logits, int V, float temperature) {
    for (int i = 0; i < V; i++) { probs[i] = logits[i] / temperature; }
    softmax_forward_cpu(probs, probs, 1, V);
}

// Picks the next token. Greedy when temperature == 0 (coin unused). probs, scratch: (V) workspace.
int sample_token(const float* logits, int V, SamplerSettings settings, float coin, float* probs, ProbIndex* scratch) {
    if (settings.temperature == 0.0f) { return sample_argmax(logits, V); }
    logits_to_probs(probs, logits, V, settings.temperature);
    if (settings.top_p <= 0.0f || settings.top_p >= 1.0f) { return sample_multinomial(probs, V, coin); }
    return sample_top_p(probs, V, settings.top_p, coin, scratch);
}

// ----------------------------------------------------------------------------
// tiny models: seeded random weights written with our GGUF writer (tests, demos, parity checks)

typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, context_length;
    int tied_output;     // 1: no output.weight (the LM head reuses the embedding)
    int weight_type;     // TYPE_* for the matrices (norm weights are always F32, as in real GGUFs)
    float rope_theta;
    uint64_t seed;
} TinyModelSpec;

int tiny_model_write(const char* path, const TinyModelSpec* spec, Error* err) {
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_add_string(writer, "general.architecture", "llama");
    gguf_writer_add_string(writer, "general.name", "aurora-tiny-random");
    gguf_writer_add_uint32(writer, "llama.context_length", (uint32_t)spec->context_length);
    gguf_writer_add_uint32(writer, "llama.embedding_length", (uint32_t)spec->dim);
    gguf_writer_add_uint32(writer, "llama.block_count", (uint32_t)spec->n_layers);
    gguf_writer_add_uint32(writer, "llama.feed_forward_length", (uint32_t)spec->ffn_dim);
    gguf_writer_add_uint32(writer, "llama.attention.head_count", (uint32_t)spec->n_heads);
    gguf_writer_add_uint32(writer, "llama.attention.head_count_kv", (uint32_t)spec->n_kv_heads);
    gguf_writer_add_uint32(writer, "llama.rope.dimension_count", (uint32_t)(spec->dim / spec->n_heads));
    gguf_writer_add_float32(writer, "llama.rope.freq_base", spec->rope_theta);
    gguf_writer_add_float32(writer, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_writer_add_uint32(writer, "llama.vocab_size", (uint32_t)spec->vocab_size);
    gguf_writer_add_tiny_tokenizer(writer, spec->vocab_size);

    TargetConfig config = {0};
    config.dim = spec->dim; config.n_layers = spec->n_layers; config.n_heads = spec->n_heads;
    config.n_kv_heads = spec->n_kv_heads; config.head_size = spec->dim / spec->n_heads;
    config.ffn_dim = spec->ffn_dim; config.vocab_size = spec->vocab_size;
    Target shapes;
    memset(&shapes, 0, sizeof(shapes));
    shapes.config = config;
    target_build_tensor_table(&shapes);
    uint64_t rng = random_seed_state(spec->seed);
    for (int i = 0; i < TARGET_NUM_TENSORS; i++) {
        const TargetTensorInfo* info = &shapes.tensors[i];
        if (i == TARGET_NUM_TENSORS - 1 && spec->tied_output) { continue; }
        int copies = info->per_layer ? spec->n_layers : 1;
        size_t n = (size_t)info->rows * info->cols;
        float* values = mallocCheck(n * sizeof(float));
        for (int layer = 0; layer < copies; layer++) {
            int is_vector = info->cols == 1;
            // norms near 1; matrices uniform with variance about 1/cols so activations stay O(1)
            float scale = is_vector ? 0.2f : sqrtf(3.0f / info->cols);
            for (size_t j = 0; j < n; j++) {
                float u = 2.0f * random_f32(&rng) - 1.0f;
                values[j] = is_vector ? 1.0f + scale * u : scale * u;
            }
            if (i == 0) { for (size_t j = 0; j < n; j++) { values[j] *= 4.0f; } } // embeddings larger
            char name[128];
            snprintf(name, sizeof(name), info->gguf_name, layer);
            int64_t shape[2] = {info->cols, info->rows};
            gguf_writer_add_tensor(writer, name, is_vector ? TYPE_F32 : spec->weight_type, is_vector ? 1 : 2,
                                   is_vector ? &shape[1] : shape, values);
        }
        free(values);
    }
    int status = gguf_writer_save(writer, path, err);
    gguf_writer_free(writer);
    return status;
}

// ----------------------------------------------------------------------------
// engine: the target on its device. One forward entry point, CPU or CUDA.

typedef struct {
    Target* target;
    TargetCuda* cuda;   // NULL: the CPU reference path
} Engine;

static void engine_forward(Engine* engine, const int* tokens, const int* positions, const uint8_t* tree_mask,
                           int T, int n_past, int all_logits) {
#ifdef USE_CUDA
    if (engine->cuda) {
        target_forward_cuda(engine->cuda, engine->target, tokens, positions, tree_mask, T, n_past, all_logits);
        return;
    }
#endif
    target_forward(engine->target, tokens, positions, tree_mask, T, n_past, all_logits);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Feeds n tokens at cache slots (and positions) [n_past, n_past + n) in chunks of at most max_tokens.
// Leaves the logits of the last token in act.logits row 0.
static void engine_prefill(Engine* engine, const int* tokens, int n, int n_past) {
    int chunk = engine->target->act.max_tokens;
    int* positions = mallocCheck((size_t)chunk * sizeof(int));
    for (int start = 0; start < n; start += chunk) {
        int T = n - start < chunk ? n - start : chunk;
        for (int t = 0; t < T; t++) { positions[t] = n_past + start + t; }
        engine_forward(engine, tokens + start, positions, NULL, T, n_past + start, 0);
    }
    free(positions);
}

// Every token id must index the embedding table: a guard on ids that come from users (--ids) or files.
static int check_token_ids(const Target* target, const int* tokens, int n, Error* err) {
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= target->config.vocab_size) {
            return error_set(err, "token id %d at index %d is out of range, expected 0 <= id < %d",
                             tokens[i], i, target->config.vocab_size);
        }
    }
    return 0;
}

typedef struct {
    int n_prompt, n_generated;
    double prefill_seconds, decode_seconds;
    int stopped_at_eos;
} GenerateStats;

typedef void (*TokenCallback)(void* context, int token);

// Plain autoregressive generation: prefill the prompt, then one decode step per new token, until
// max_new tokens, the end-of-sequence token, or a full cache. out_tokens: (max_new). Returns the count.
static int generate_plain(Engine* engine, const int* prompt, int n_prompt, int max_new, SamplerSettings settings,
                          uint64_t seed, int* out_tokens, GenerateStats* stats, TokenCallback on_token, void* context) {
    Target* target = engine->target;
    int V = target->config.vocab_size;
    int eos = target->has_tokenizer ? target->tokenizer.eos_id : -1;
    float* probs = mallocCheck((size_t)V * sizeof(float));
    ProbIndex* scratch = mallocCheck((size_t)V * sizeof(ProbIndex));
    uint64_t rng = random_seed_state(seed);
    memset(stats, 0, sizeof(*stats));
    stats->n_prompt = n_prompt;

    double start = now_seconds();
    engine_prefill(engine, prompt, n_prompt, 0);
    stats->prefill_seconds = now_seconds() - start;

    start = now_seconds();
    int n_generated = 0;
    int position = n_prompt;
    while (n_generated < max_new) {
        int token = sample_token(target->act.logits, V, settings, random_f32(&rng), probs, scratch);
        out_tokens[n_generated++] = token;
        if (on_token) { on_token(context, token); }
        if (token == eos) { stats->stopped_at_eos = 1; break; }
        if (n_generated == max_new || position >= target->cache_capacity) { break; }
        engine_forward(engine, &token, &position, NULL, 1, position, 0);
        position++;
    }
    stats->decode_seconds = now_seconds() - start;
    stats->n_generated = n_generated;
    free(probs);
    free(scratch);
    return n_generated;
}

// ----------------------------------------------------------------------------
// command-line interface

#ifndef TESTING

typedef struct {
    const char* model_path;
    const char* prompt;
    int n_predict;
    float temperature;
    float top_p;
    uint64_t seed;
    int chat;
    int parse_special;   // tokenize: turn special-token text such as <|im_start|> into that token
    int print_ids;
    int top_k;
    int use_cuda;
    int no_blas;
    int max_tokens;      // tokens per forward call (prefill chunk)
    int context;         // KV cache capacity; 0 = model default (capped at 4096)
} Options;

static const char* USAGE_MAIN =
    "usage: aurora <command> [options]\n"
    "commands:\n"
    "  generate   generate text from a prompt\n"
    "  tokenize   print the token ids of a text\n"
    "  logits     print the largest final-position logits of a prompt\n"
    "  info       print a model's configuration and tensor table\n"
    "  tiny-model write a small model with seeded random weights\n"
    "  convert    rewrite a GGUF model with its matrices in another tensor type\n"
    "run 'aurora <command> --help' for the options of a command\n";

static const char* USAGE_GENERATE =
    "usage: aurora generate -m MODEL -p PROMPT [options]\n"
    "  -m, --model FILE     GGUF model (Llama architecture)\n"
    "  -p, --prompt TEXT    prompt text\n"
    "  -n, --n-predict N    tokens to generate (default 64)\n"
    "  --temp T             temperature; 0 = exact greedy (default 0)\n"
    "  --top-p P            nucleus sampling threshold in (0, 1] (default 1 = off)\n"
    "  --seed S             random seed for sampling (default 42)\n"
    "  --chat               wrap the prompt in the model's ChatML template\n"
    "  --print-ids          print the generated token ids on one line instead of text\n"
    "  --device cpu|cuda    where the forward pass runs (default cpu)\n"
    "  --no-blas            use the plain reference matmul even when built with OpenBLAS\n"
    "  --context N          KV cache slots (default: model context, at most 4096)\n"
    "  --batch N            most tokens per forward call during prefill (default 256)\n";

static const char* USAGE_TOKENIZE =
    "usage: aurora tokenize -m MODEL [--special] TEXT\n"
    "  prints the token ids of TEXT, space-separated, on one line\n"
    "  --special            parse special-token text such as <|im_start|> as that token\n";

static const char* USAGE_LOGITS =
    "usage: aurora logits -m MODEL -p PROMPT [--top K] [--chat] [--no-blas]\n"
    "  prints the K (default 10) largest final-position logits as 'id logit' lines, largest first\n";

static const char* USAGE_TINY_MODEL =
    "usage: aurora tiny-model -o FILE [options]\n"
    "  writes a Llama model with seeded random weights and a small byte-level BPE tokenizer (for tests,\n"
    "  experiments and CPU/GPU parity checks)\n"
    "  --dim N (64)  --layers N (4)  --heads N (4)  --kv-heads N (2)  --ffn N (96)  --vocab N (320, >= 259)\n"
    "  --context N (256)  --type f32|f16|bf16|q8_0|q4_0|q4_1 (f32)  --untied  --seed S (1)\n";

static const char* USAGE_CONVERT =
    "usage: aurora convert -m MODEL -o OUT --type f32|f16|bf16|q8_0|q4_0|q4_1\n"
    "  rewrites a GGUF model with every matrix stored as the given type (vectors stay F32) and the\n"
    "  metadata unchanged; e.g. an F32 copy of a quantised model for exact comparisons with llama.cpp\n";

static const char* USAGE_INFO =
    "usage: aurora info -m MODEL\n"
    "  prints the model configuration and the GGUF tensor table\n";

static void usage_error(const char* usage, const char* format, const char* what) {
    fprintf(stderr, "error: ");
    fprintf(stderr, format, what);
    fprintf(stderr, "\n%s", usage);
    exit(EXIT_FAILURE);
}

static long parse_long(const char* usage, const char* flag, const char* text, long lo, long hi) {
    char* end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < lo || value > hi) {
        fprintf(stderr, "error: %s expects an integer in [%ld, %ld], got '%s'\n%s", flag, lo, hi, text, usage);
        exit(EXIT_FAILURE);
    }
    return value;
}

static float parse_float(const char* usage, const char* flag, const char* text, float lo, float hi) {
    char* end = NULL;
    errno = 0;
    float value = strtof(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= lo && value <= hi)) {
        fprintf(stderr, "error: %s expects a number in [%g, %g], got '%s'\n%s", flag, lo, hi, text, usage);
        exit(EXIT_FAILURE);
    }
    return value;
}

// Parses the options shared by all commands. Positional arguments are collected in positional.
static Options parse_options(int argc, char** argv, const char* usage, const char** positional, int* n_positional) {
    Options o = {0};
    o.n_predict = 64; o.temperature = 0.0f; o.top_p = 1.0f; o.seed = 42; o.top_k = 10; o.max_tokens = 256;
    *n_positional = 0;
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { printf("%s", usage); exit(EXIT_SUCCESS); }
        if (arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (*n_positional >= 1) { usage_error(usage, "unexpected extra argument '%s'", arg); }
            positional[(*n_positional)++] = arg;
            continue;
        }
        // flags without a value
        if (strcmp(arg, "--chat") == 0) { o.chat = 1; continue; }
        if (strcmp(arg, "--print-ids") == 0) { o.print_ids = 1; continue; }
        if (strcmp(arg, "--no-blas") == 0) { o.no_blas = 1; continue; }
        if (strcmp(arg, "--special") == 0) { o.parse_special = 1; continue; }
        // flags with a value
        const char* valued[] = {"-m", "--model", "-p", "--prompt", "-n", "--n-predict", "--temp", "--top-p", "--seed",
                                "--top", "--context", "--batch", "--device"};
        int known = 0;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++) { known |= strcmp(arg, valued[k]) == 0; }
        if (!known) { usage_error(usage, "unknown flag '%s'", arg); }
        if (i + 1 >= argc) { usage_error(usage, "flag %s needs a value", arg); }
        const char* value = argv[++i];
        if (strcmp(arg, "-m") == 0 || strcmp(arg, "--model") == 0) { o.model_path = value; }
        else if (strcmp(arg, "-p") == 0 || strcmp(arg, "--prompt") == 0) { o.prompt = value; }
        else if (strcmp(arg, "-n") == 0 || strcmp(arg, "--n-predict") == 0) { o.n_predict = (int)parse_long(usage, arg, value, 0, 1 << 20); }
        else if (strcmp(arg, "--temp") == 0) { o.temperature = parse_float(usage, arg, value, 0.0f, 100.0f); }
        else if (strcmp(arg, "--top-p") == 0) { o.top_p = parse_float(usage, arg, value, 1e-6f, 1.0f); }
        else if (strcmp(arg, "--seed") == 0) { o.seed = (uint64_t)parse_long(usage, arg, value, 0, 0x7fffffffL); }
        else if (strcmp(arg, "--top") == 0) { o.top_k = (int)parse_long(usage, arg, value, 1, 1 << 24); }
        else if (strcmp(arg, "--context") == 0) { o.context = (int)parse_long(usage, arg, value, 1, 1 << 20); }
        else if (strcmp(arg, "--batch") == 0) { o.max_tokens = (int)parse_long(usage, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "--device") == 0) {
            if (strcmp(value, "cpu") == 0) { o.use_cuda = 0; }
            else if (strcmp(value, "cuda") == 0) { o.use_cuda = 1; }
            else { usage_error(usage, "--device expects 'cpu' or 'cuda', got '%s'", value); }
        }
        else { usage_error(usage, "unknown flag '%s'", arg); }
    }
    if (o.model_path == NULL) { usage_error(usage, "%s", "missing -m MODEL"); }
    return o;
}

static void die(const Error* err) {
    fprintf(stderr, "error: %s\n", err->message);
    exit(EXIT_FAILURE);
}

static void load_or_die(Target* target, const char* path, int context, int max_tokens) {
    Error err;
    if (target_load(target, path, context, max_tokens, &err) != 0) { die(&err); }
    if (!target->has_tokenizer) {
        fprintf(stderr, "error: %s has no tokenizer (key 'tokenizer.ggml.tokens' is missing); expected a GGUF "
                "with an embedded byte-level BPE tokenizer\n", path);
        exit(EXIT_FAILURE);
    }
}

// Encodes the prompt (optionally in the chat template) into a malloc'd id array; errors if it is empty
// or does not leave room for at least one generated token.
static int* encode_prompt_or_die(Target* target, const char* prompt, int chat, int* n_out) {
    char* text = chat ? chat_template_apply(prompt) : strdup(prompt);
    int capacity = target->cache_capacity;
    int* ids = mallocCheck((size_t)(capacity + 1) * sizeof(int));
    Error err;
    int n = tokenizer_encode(&target->tokenizer, text, strlen(text), chat, ids, capacity + 1, &err);
    free(text);
    if (n < 0 || n >= capacity) {
        fprintf(stderr, "error: the prompt is %s%d tokens, but the context holds %d tokens (at least one must be "
                "left for generation); shorten the prompt or raise --context\n", n < 0 ? "more than " : "",
                n < 0 ? capacity : n, capacity);
        exit(EXIT_FAILURE);
    }
    if (n == 0) {
        fprintf(stderr, "error: the prompt is empty after tokenization; expected at least one token\n");
        exit(EXIT_FAILURE);
    }
    *n_out = n;
    return ids;
}

static void setup_engine(Engine* engine, Target* target, int use_cuda) {
    engine->target = target;
    engine->cuda = NULL;
    if (!use_cuda) { return; }
#ifdef USE_CUDA
    if (cuda_device_count() == 0) {
        fprintf(stderr, "error: --device cuda: no CUDA device is visible; run without --device cuda for the CPU path\n");
        exit(EXIT_FAILURE);
    }
    engine->cuda = target_cuda_create(target);
    fprintf(stderr, "device: %s\n", cuda_device_name());
#else
    fprintf(stderr, "error: --device cuda: this binary was built without CUDA (nvcc was not found, or NO_CUDA=1); "
            "rebuild with the CUDA toolkit installed\n");
    exit(EXIT_FAILURE);
#endif
}

static void free_engine(Engine* engine) {
#ifdef USE_CUDA
    if (engine->cuda) { target_cuda_free(engine->cuda); }
#endif
    engine->cuda = NULL;
}

static void print_token_text(void* context, int token) {
    const Tokenizer* tokenizer = context;
    int length = 0;
    const char* bytes = tokenizer_token_bytes(tokenizer, token, &length);
    if (tokenizer->token_types[token] == TOKEN_CONTROL) { return; } // never print <|im_end|> and kin
    fwrite(bytes, 1, (size_t)length, stdout);
    fflush(stdout);
}

static int command_generate(int argc, char** argv) {
    const char* positional[1];
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_GENERATE, positional, &n_positional);
    if (n_positional > 0) { usage_error(USAGE_GENERATE, "unexpected argument '%s' (the prompt goes after -p)", positional[0]); }
    if (o.prompt == NULL) { usage_error(USAGE_GENERATE, "%s", "missing -p PROMPT"); }
    use_blas = !o.no_blas;
    Target target;
    load_or_die(&target, o.model_path, o.context, o.max_tokens);
    int n_prompt;
    int* prompt = encode_prompt_or_die(&target, o.prompt, o.chat, &n_prompt);
    Engine engine;
    setup_engine(&engine, &target, o.use_cuda);
    SamplerSettings settings = {o.temperature, o.top_p};
    int* out = mallocCheck((size_t)(o.n_predict + 1) * sizeof(int));
    GenerateStats stats;
    int n = generate_plain(&engine, prompt, n_prompt, o.n_predict, settings, o.seed, out, &stats,
                           o.print_ids ? NULL : print_token_text, &target.tokenizer);
    if (o.print_ids) {
        for (int i = 0; i < n; i++) { printf(i ? " %d" : "%d", out[i]); }
    }
    printf("\n");
    fflush(stdout);
    int decode_steps = stats.n_generated > 0 ? stats.n_generated - 1 : 0; // the first token comes from prefill
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tokens/s)\n", stats.n_prompt, stats.prefill_seconds,
            stats.prefill_seconds > 0 ? stats.n_prompt / stats.prefill_seconds : 0.0);
    fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tokens/s)%s\n", decode_steps, stats.decode_seconds,
            stats.decode_seconds > 0 ? decode_steps / stats.decode_seconds : 0.0,
            stats.stopped_at_eos ? ", stopped at end-of-sequence" : "");
    free(out);
    free(prompt);
    free_engine(&engine);
    target_free(&target);
    return 0;
}

static int command_tokenize(int argc, char** argv) {
    const char* positional[1] = {NULL};
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_TOKENIZE, positional, &n_positional);
    if (n_positional != 1) { usage_error(USAGE_TOKENIZE, "%s", "expected exactly one TEXT argument"); }
    // the tokenizer alone: no need to dequantise weights
    GGUFFile file;
    Tokenizer tokenizer;
    Error err;
    if (gguf_open(&file, o.model_path, &err) != 0) { die(&err); }
    if (tokenizer_load_gguf(&tokenizer, &file, &err) != 0) { die(&err); }
    const char* text = positional[0];
    size_t length = strlen(text);
    int max_ids = (int)length + 16;
    int* ids = mallocCheck((size_t)max_ids * sizeof(int));
    int n = tokenizer_encode(&tokenizer, text, length, o.parse_special, ids, max_ids, &err);
    if (n < 0) { die(&err); }
    for (int i = 0; i < n; i++) { printf(i ? " %d" : "%d", ids[i]); }
    printf("\n");
    free(ids);
    tokenizer_free(&tokenizer);
    gguf_close(&file);
    return 0;
}

static int command_logits(int argc, char** argv) {
    const char* positional[1];
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_LOGITS, positional, &n_positional);
    if (n_positional > 0) { usage_error(USAGE_LOGITS, "unexpected argument '%s' (the prompt goes after -p)", positional[0]); }
    if (o.prompt == NULL) { usage_error(USAGE_LOGITS, "%s", "missing -p PROMPT"); }
    use_blas = !o.no_blas;
    Target target;
    load_or_die(&target, o.model_path, o.context, o.max_tokens);
    int n_prompt;
    int* prompt = encode_prompt_or_die(&target, o.prompt, o.chat, &n_prompt);
    Engine engine;
    setup_engine(&engine, &target, o.use_cuda);
    engine_prefill(&engine, prompt, n_prompt, 0);
    int V = target.config.vocab_size;
    int K = o.top_k < V ? o.top_k : V;
    ProbIndex* order = mallocCheck((size_t)V * sizeof(ProbIndex));
    for (int i = 0; i < V; i++) { order[i].prob = target.act.logits[i]; order[i].index = i; }
    qsort(order, V, sizeof(ProbIndex), compare_prob_descending);
    for (int i = 0; i < K; i++) { printf("%d %.6f\n", order[i].index, order[i].prob); }
    free(order);
    free(prompt);
    free_engine(&engine);
    target_free(&target);
    return 0;
}

static int command_info(int argc, char** argv) {
    const char* positional[1];
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_INFO, positional, &n_positional);
    if (n_positional > 0) { usage_error(USAGE_INFO, "unexpected argument '%s'", positional[0]); }
    Target target;
    load_or_die(&target, o.model_path, 16, 1);
    TargetConfig* c = &target.config;
    GGUFFile* file = &target.file;
    printf("file: %s (GGUF v%u, %llu metadata keys, %llu tensors, alignment %llu)\n", o.model_path, file->version,
           (unsigned long long)file->n_values, (unsigned long long)file->n_tensors, (unsigned long long)file->alignment);
    printf("architecture: llama\n");
    printf("dim %d, layers %d, heads %d, kv heads %d, head size %d, ffn %d, vocab %d, context %d\n", c->dim,
           c->n_layers, c->n_heads, c->n_kv_heads, c->head_size, c->ffn_dim, c->vocab_size, c->context_length);
    printf("rope theta %g, rms eps %g, output %s, tap layers %d %d %d\n", c->rope_theta, c->norm_eps,
           c->tied_output ? "tied to the embedding" : "separate", c->tap_layers[0], c->tap_layers[1], c->tap_layers[2]);
    printf("tokenizer: %d tokens, bos %d, eos %d\n", target.tokenizer.vocab_size, target.tokenizer.bos_id,
           target.tokenizer.eos_id);
    printf("parameters: %zu (fp32 in memory: %.1f MiB)\n", target.n_weight_floats,
           target.n_weight_floats * 4.0 / (1 << 20));
    printf("%-32s %-6s %-20s %12s %12s\n", "tensor", "type", "shape", "offset", "bytes");
    for (uint64_t i = 0; i < file->n_tensors; i++) {
        const GGUFTensor* t = &file->tensors[i];
        char shape[64];
        int used = snprintf(shape, sizeof(shape), "[%lld", (long long)t->shape[0]);
        for (int d = 1; d < t->n_dims; d++) { used += snprintf(shape + used, sizeof(shape) - used, ", %lld", (long long)t->shape[d]); }
        snprintf(shape + used, sizeof(shape) - used, "]");
        printf("%-32s %-6s %-20s %12llu %12zu\n", t->name, tensor_type_name(t->type), shape,
               (unsigned long long)t->offset, t->n_bytes);
    }
    target_free(&target);
    return 0;
}

static int parse_tensor_type(const char* usage, const char* text) {
    const char* names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"};
    const int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
    for (int i = 0; i < 6; i++) { if (strcmp(text, names[i]) == 0) { return types[i]; } }
    usage_error(usage, "--type expects one of f32, f16, bf16, q8_0, q4_0, q4_1; got '%s'", text);
    return -1;
}

static int command_tiny_model(int argc, char** argv) {
    TinyModelSpec spec = {64, 4, 4, 2, 96, 320, 256, 1, TYPE_F32, 10000.0f, 1};
    const char* out_path = NULL;
    const char* u = USAGE_TINY_MODEL;
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { printf("%s", u); return 0; }
        if (strcmp(arg, "--untied") == 0) { spec.tied_output = 0; continue; }
        if (arg[0] != '-') { usage_error(u, "unexpected argument '%s'", arg); }
        if (i + 1 >= argc) { usage_error(u, "flag %s needs a value (or is unknown)", arg); }
        const char* value = argv[++i];
        if (strcmp(arg, "-o") == 0) { out_path = value; }
        else if (strcmp(arg, "--dim") == 0) { spec.dim = (int)parse_long(u, arg, value, 2, 8192); }
        else if (strcmp(arg, "--layers") == 0) { spec.n_layers = (int)parse_long(u, arg, value, 1, 256); }
        else if (strcmp(arg, "--heads") == 0) { spec.n_heads = (int)parse_long(u, arg, value, 1, 256); }
        else if (strcmp(arg, "--kv-heads") == 0) { spec.n_kv_heads = (int)parse_long(u, arg, value, 1, 256); }
        else if (strcmp(arg, "--ffn") == 0) { spec.ffn_dim = (int)parse_long(u, arg, value, 1, 65536); }
        else if (strcmp(arg, "--vocab") == 0) { spec.vocab_size = (int)parse_long(u, arg, value, 259, 1 << 20); }
        else if (strcmp(arg, "--context") == 0) { spec.context_length = (int)parse_long(u, arg, value, 2, 1 << 20); }
        else if (strcmp(arg, "--type") == 0) { spec.weight_type = parse_tensor_type(u, value); }
        else if (strcmp(arg, "--seed") == 0) { spec.seed = (uint64_t)parse_long(u, arg, value, 0, 0x7fffffffL); }
        else { usage_error(u, "unknown flag '%s'", arg); }
    }
    if (out_path == NULL) { usage_error(u, "%s", "missing -o FILE"); }
    int head_size = spec.dim / spec.n_heads;
    if (spec.dim % spec.n_heads != 0 || head_size % 2 != 0 || spec.n_heads % spec.n_kv_heads != 0) {
        fprintf(stderr, "error: --dim %d, --heads %d, --kv-heads %d: expected dim = heads * an even head size, and "
                "heads a multiple of kv-heads\n", spec.dim, spec.n_heads, spec.n_kv_heads);
        return 1;
    }
    int64_t block = tensor_type_block_size(spec.weight_type);
    if (spec.dim % block != 0 || spec.ffn_dim % block != 0) {
        fprintf(stderr, "error: --type %s stores rows in blocks of %lld, expected --dim and --ffn to be multiples of it "
                "(got %d and %d)\n", tensor_type_name(spec.weight_type), (long long)block, spec.dim, spec.ffn_dim);
        return 1;
    }
    Error err;
    if (tiny_model_write(out_path, &spec, &err) != 0) { die(&err); }
    fprintf(stderr, "wrote %s\n", out_path);
    return 0;
}

static int command_convert(int argc, char** argv) {
    const char *in_path = NULL, *out_path = NULL;
    int type = -1;
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { printf("%s", USAGE_CONVERT); return 0; }
        if (strcmp(arg, "-m") != 0 && strcmp(arg, "-o") != 0 && strcmp(arg, "--type") != 0) {
            usage_error(USAGE_CONVERT, "unknown flag '%s'", arg);
        }
        if (i + 1 >= argc) { usage_error(USAGE_CONVERT, "flag %s needs a value", arg); }
        const char* value = argv[++i];
        if (strcmp(arg, "-m") == 0) { in_path = value; }
        else if (strcmp(arg, "-o") == 0) { out_path = value; }
        else { type = parse_tensor_type(USAGE_CONVERT, value); }
    }
    if (in_path == NULL || out_path == NULL || type < 0) { usage_error(USAGE_CONVERT, "%s", "expected -m MODEL, -o OUT and --type"); }
    GGUFFile file;
    Error err;
    if (gguf_open(&file, in_path, &err) != 0) { die(&err); }
    GGUFWriter* writer = gguf_writer_new();
    if (gguf_writer_copy_values(writer, &file, NULL, &err) != 0) { die(&err); }
    for (uint64_t i = 0; i < file.n_tensors; i++) {
        const GGUFTensor* t = &file.tensors[i];
        int is_matrix = t->n_dims >= 2;
        if (is_matrix && t->shape[0] % tensor_type_block_size(type) != 0) {
            fprintf(stderr, "error: %s: tensor '%s' has rows of %lld values, expected a multiple of %s's block of %lld\n",
                    in_path, t->name, (long long)t->shape[0], tensor_type_name(type), (long long)tensor_type_block_size(type));
            return 1;
        }
        float* data = mallocCheck((size_t)t->n_elements * sizeof(float));
        gguf_tensor_to_f32(t, data);
        gguf_writer_add_tensor(writer, t->name, is_matrix ? type : TYPE_F32, t->n_dims, t->shape, data);
        free(data);
    }
    if (gguf_writer_save(writer, out_path, &err) != 0) { die(&err); }
    gguf_writer_free(writer);
    gguf_close(&file);
    fprintf(stderr, "wrote %s (matrices as %s)\n", out_path, tensor_type_name(type));
    return 0;
}

int main(int argc, char** argv) {
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc < 2 ? stderr : stdout, "%s", USAGE_MAIN);
        return argc < 2 ? EXIT_FAILURE : EXIT_SUCCESS;
    }
    const char* command = argv[1];
    if (strcmp(command, "generate") == 0) { return command_generate(argc - 2, argv + 2); }
    if (strcmp(command, "tokenize") == 0) { return command_tokenize(argc - 2, argv + 2); }
    if (strcmp(command, "logits") == 0) { return command_logits(argc - 2, argv + 2); }
    if (strcmp(command, "info") == 0) { return command_info(argc - 2, argv + 2); }
    if (strcmp(command, "tiny-model") == 0) { return command_tiny_model(argc - 2, argv + 2); }
    if (strcmp(command, "convert") == 0) { return command_convert(argc - 2, argv + 2); }
    fprintf(stderr, "error: unknown command '%s'\n%s", command, USAGE_MAIN);
    return EXIT_FAILURE;
}

#endif // TESTING
