/*
target.c: the target model. Configuration and weights from GGUF (every tensor dequantised into one fp32
arena, described by a tensor table), the forward pass over any set of new tokens with explicit positions
and an attention mask, and tiny random models written with our GGUF writer.

The forward is a sequence of calls to the reference ops in cpu_ref.c (matmuls through matmul_forward,
which takes the OpenBLAS fast path when built with it); kernels.cu runs the same sequence on a GPU.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// fast paths: the reference op stays the definition; these are checked against it in tests

static int use_blas = 1; // switched off by --no-blas (and absent without USE_BLAS)

// Called once before any forward pass (target_load): with OpenMP, OpenBLAS runs single-threaded.
static void blas_init(void) {
#if defined(USE_BLAS) && defined(_OPENMP)
    openblas_set_num_threads(1);
#endif
}

#ifdef USE_BLAS
// One threading system. OpenMP's idle workers spin after each parallel region, and OpenBLAS's own
// threads would fight them for the cores (measured: decode at half speed on 2 cores). So with OpenMP,
// OpenBLAS runs single-threaded and OpenMP splits the output columns between threads.
static void matmul_forward_blas(float* out, const float* inp, const float* weight, int T, int C, int OC) {
    int n_parts = 1;
#ifdef _OPENMP
    n_parts = omp_get_max_threads(); // OpenBLAS itself runs single-threaded: see blas_init
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

// matmul_backward_cpu through OpenBLAS: dinp (T, C) += dout (T, OC) @ weight (OC, C) and
// dweight (OC, C) += dout^T @ inp (T, C); NULL skips, as in the reference.
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                     int T, int C, int OC) {
#ifdef USE_BLAS
    if (use_blas) {
        if (dinp) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
        }
        if (dweight) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, T, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
        }
        return;
    }
#endif
    matmul_backward_cpu(dinp, dweight, dout, inp, weight, T, C, OC);
}

void matmul_forward(float* out, const float* inp, const float* weight, int T, int C, int OC) {
#ifdef USE_BLAS
    if (use_blas) { matmul_forward_blas(out, inp, weight, T, C, OC); return; }
#else
    (void)use_blas; // a build without OpenBLAS has only the reference
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
    if (!(c->rope_theta > 0.0f) || !(c->norm_eps >= 0.0f) || !isfinite(c->rope_theta) || !isfinite(c->norm_eps)) {
        return error_set(err, "%s: rope freq_base %g / rms epsilon %g out of range, expected finite values, the base "
                         "positive and the epsilon not negative",
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
    blas_init();
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

// The (T, P) attention mask of one call, P = n_past + T: the caller's mask when given, else causal
// (every new token sees the n_past cached slots, and the new tokens up to itself).
static void build_attention_mask(uint8_t* out, const uint8_t* mask, int T, int n_past) {
    int P = n_past + T;
    if (mask != NULL) { memcpy(out, mask, (size_t)T * P); return; }
    for (int t = 0; t < T; t++) {
        uint8_t* row = out + (size_t)t * P;
        memset(row, 1, (size_t)n_past);
        for (int j = 0; j < T; j++) { row[n_past + j] = j <= t; }
    }
}

void target_forward(Target* target, const int* tokens, const int* positions, const uint8_t* mask,
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
    build_attention_mask(a->mask, mask, T, n_past);
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
// tiny models: seeded random weights written with our GGUF writer (tests, demos, parity checks)

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


static void engine_forward(Engine* engine, const int* tokens, const int* positions, const uint8_t* mask,
                           int T, int n_past, int all_logits) {
#ifdef USE_CUDA
    if (engine->cuda) {
        target_forward_cuda(engine->cuda, engine->target, tokens, positions, mask, T, n_past, all_logits);
        return;
    }
#endif
    target_forward(engine->target, tokens, positions, mask, T, n_past, all_logits);
}

// Feeds n tokens at cache slots (and positions) [n_past, n_past + n) in chunks of at most max_tokens.
// Leaves the logits of the last token in act.logits row 0. When features / hidden are not NULL, they
// receive every token's taps (n, 3C) and final hidden state (n, C): what the draft and the trainer read.
static void engine_prefill(Engine* engine, const int* tokens, int n, int n_past, float* features, float* hidden) {
    TargetActivations* a = &engine->target->act;
    int C = engine->target->config.dim;
    int chunk = a->max_tokens;
    int* positions = mallocCheck((size_t)chunk * sizeof(int));
    for (int start = 0; start < n; start += chunk) {
        int T = n - start < chunk ? n - start : chunk;
        for (int t = 0; t < T; t++) { positions[t] = n_past + start + t; }
        engine_forward(engine, tokens + start, positions, NULL, T, n_past + start, 0);
        if (features) { memcpy(features + (size_t)start * 3 * C, a->taps, (size_t)T * 3 * C * sizeof(float)); }
        if (hidden) { memcpy(hidden + (size_t)start * C, a->hidden, (size_t)T * C * sizeof(float)); }
    }
    free(positions);
}

// Keeps only the accepted path in the target's cache: slot slots[i] moves to slot destination + i.
static void engine_compact(Engine* engine, const int* slots, int n, int destination) {
    Target* target = engine->target;
    TargetConfig* c = &target->config;
    int KVD = c->n_kv_heads * c->head_size;
#ifdef USE_CUDA
    if (engine->cuda) {
        kv_compact_cuda(target_cuda_key_cache(engine->cuda), target_cuda_value_cache(engine->cuda), slots, n,
                        destination, c->n_layers, target->cache_capacity, KVD);
        return;
    }
#endif
    kv_compact_cpu(target->key_cache, target->value_cache, slots, n, destination, c->n_layers, target->cache_capacity, KVD);
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

