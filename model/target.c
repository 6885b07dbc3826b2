/*
target.c: the target model on a backend. Configuration from GGUF, every weight uploaded to the backend
(upload_matrix decides how the backend keeps a matrix: fp32, or the GGUF type in place), the forward
pass over any set of new tokens with explicit positions and an attention mask, cache compaction, and tiny
random models written with our GGUF writer.

The forward is written once: a sequence of calls to the backend's ops (cpu_ref.c's signatures), on
weights, cache and activations in the backend's memory. The host uploads a call's tokens, positions and
mask, and reads back the taps, hidden states and logits (target->host; on a CPU backend these are the
activation buffers themselves). Both tables, weights and activations, name every tensor.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// target model: configuration and tensor table

// Fills the tensor table from the config: names, shapes, and where each weight lives.
static void target_build_tensor_table(Target* target) {
    TargetConfig* c = &target->config;
    int QD = c->n_heads * c->head_size, KVD = c->n_kv_heads * c->head_size;
    TargetTensorInfo table[TARGET_NUM_TENSORS] = {
        {"token_embd.weight",         0, c->vocab_size, c->dim,     offsetof(TargetWeights, token_embedding),   0, 1},
        {"blk.%d.attn_norm.weight",   1, c->dim,        1,          offsetof(TargetLayerWeights, attn_norm),   0, 1},
        {"blk.%d.attn_q.weight",      1, QD,            c->dim,     offsetof(TargetLayerWeights, wq),          0, 1},
        {"blk.%d.attn_k.weight",      1, KVD,           c->dim,     offsetof(TargetLayerWeights, wk),          0, 1},
        {"blk.%d.attn_v.weight",      1, KVD,           c->dim,     offsetof(TargetLayerWeights, wv),          0, 1},
        {"blk.%d.attn_output.weight", 1, c->dim,        QD,         offsetof(TargetLayerWeights, wo),          0, 1},
        {"blk.%d.ffn_norm.weight",    1, c->dim,        1,          offsetof(TargetLayerWeights, ffn_norm),    0, 1},
        {"blk.%d.ffn_gate.weight",    1, c->ffn_dim,    c->dim,     offsetof(TargetLayerWeights, w_gate),      0, 1},
        {"blk.%d.ffn_up.weight",      1, c->ffn_dim,    c->dim,     offsetof(TargetLayerWeights, w_up),        0, 1},
        {"blk.%d.ffn_down.weight",    1, c->dim,        c->ffn_dim, offsetof(TargetLayerWeights, w_down),      0, 1},
        {"output_norm.weight",        0, c->dim,        1,          offsetof(TargetWeights, output_norm),       0, 1},
        {"output.weight",             0, c->vocab_size, c->dim,     offsetof(TargetWeights, output),            0, 0},
    };
    for (int i = 0; i < TARGET_NUM_TENSORS; i++) {
        table[i].n_elements = (size_t)table[i].rows * table[i].cols * (table[i].per_layer ? c->n_layers : 1);
        target->tensors[i] = table[i];
    }
}

// The table's last row is the LM head; when tied it is the embedding's Matrix, not a tensor of its own.
static int target_is_tied_output(const Target* target, int i) {
    return i == TARGET_NUM_TENSORS - 1 && target->config.tied_output;
}

void* target_tensor_field(Target* target, int i, int layer) {
    const TargetTensorInfo* info = &target->tensors[i];
    char* base = info->per_layer ? (char*)&target->weights.layers[layer] : (char*)&target->weights;
    return base + info->offset;
}

void target_tensor_to_host(Target* target, int i, int layer, float* out) {
    const TargetTensorInfo* info = &target->tensors[i];
    void* field = target_tensor_field(target, i, layer);
    if (info->cols == 1) {
        target->backend->download(out, *(float**)field, (size_t)info->rows * sizeof(float));
    } else {
        matrix_to_host_f32(target->backend, *(Matrix*)field, info->rows, info->cols, out);
    }
}

const char* target_output_name(const Target* target) {
    return target->config.tied_output ? "token_embd.weight" : "output.weight";
}

int target_read_rows(const Target* target, const char* gguf_name, const int32_t* rows, int n, float* out, Error* err) {
    const GGUFTensor* tensor = gguf_find_tensor(&target->file, gguf_name);
    if (tensor == NULL) { return error_set(err, "%s: tensor '%s' is missing", target->file.path, gguf_name); }
    int64_t cols = tensor->shape[0], n_rows = tensor->n_elements / cols;
    size_t row_bytes = tensor_bytes(tensor->type, cols);
    for (int r = 0; r < n; r++) {
        int64_t row = rows != NULL ? rows[r] : r;
        if (row < 0 || row >= n_rows) {
            return error_set(err, "%s: row %lld of tensor '%s', expected a row in [0, %lld)", target->file.path,
                             (long long)row, gguf_name, (long long)n_rows);
        }
        dequantize_row(tensor->type, (const uint8_t*)tensor->data + (size_t)row * row_bytes, out + (size_t)r * cols, cols);
    }
    return 0;
}

int model_read_config_int(const GGUFFile* file, const char* key, int lo, int hi, int* out, Error* err) {
    int64_t value;
    if (gguf_get_int(file, key, &value, err) != 0) { return -1; }
    if (value < lo || value > hi) {
        return error_set(err, "%s: key '%s' is %lld, expected a value in [%d, %d]",
                         file->path, key, (long long)value, lo, hi);
    }
    *out = (int)value;
    return 0;
}

int model_check_head_group(const char* path, const char* heads_key, int n_heads, int n_kv_heads, Error* err) {
    if (n_heads / n_kv_heads <= MODEL_MAX_HEAD_GROUP) { return 0; }
    return error_set(err, "%s: %s %d over head_count_kv %d is %d query heads per key/value head, expected at most %d",
                     path, heads_key, n_heads, n_kv_heads, n_heads / n_kv_heads, MODEL_MAX_HEAD_GROUP);
}


// RoPE scaling as llama.cpp reads it: ARCH.rope.scaling.type (absent: linear) and a factor,
// ARCH.rope.scaling.factor or the older ARCH.rope.scale_linear (absent or 0: none). Positions are rescaled
// unless the type is none or a linear factor is 1 (or 0): anything else is refused, as scaling is not
// implemented here (a factor given without a type once loaded silently, and ran unscaled where llama.cpp
// scales; a linear type with factor 1, which changes nothing, was refused).
int rope_scaling_check(const GGUFFile* file, const char* arch, Error* err) {
    char type_key[96], factor_key[96], linear_key[96];
    snprintf(type_key, sizeof(type_key), "%s.rope.scaling.type", arch);
    snprintf(factor_key, sizeof(factor_key), "%s.rope.scaling.factor", arch);
    snprintf(linear_key, sizeof(linear_key), "%s.rope.scale_linear", arch);
    char* type = NULL;
    if (gguf_find(file, type_key) && gguf_get_string(file, type_key, &type, err)) { return -1; }
    double factor = 0.0;
    const char* factor_from = gguf_find(file, factor_key) ? factor_key : gguf_find(file, linear_key) ? linear_key : NULL;
    if (factor_from && gguf_get_float(file, factor_from, &factor, err)) { free(type); return -1; }
    int none = type != NULL && strcmp(type, "none") == 0;
    int linear = type == NULL || strcmp(type, "linear") == 0;
    int status = 0;
    if (!none && !(linear && (factor == 0.0 || factor == 1.0))) {
        status = error_set(err, "%s: RoPE scaling %s%s%s with factor %g%s%s; expected none, or a linear factor of 1 (RoPE "
                           "scaling is not implemented)", file->path, type ? "'" : "linear (no ", type ? type : type_key,
                           type ? "'" : ")", factor, factor_from ? " from " : "", factor_from ? factor_from : "");
    }
    free(type);
    return status;
}

// The longest attention a pass runs covers the context and a tree's candidates beyond it (the draft's cache);
// on a table whose attention is bounded (CUDA: a row's scores in shared memory) it must fit at the model's
// head size. target_load checks the target's, draft_load a draft's (an imported draft's may differ).
int attention_fits(const Backend* backend, int cache_capacity, int head_size, const char* path, Error* err) {
    if (backend->attention_max_slots == NULL) { return 0; }
    int spare = MAX_SPEC_K * TREE_MAX_DEPTH, most = backend->attention_max_slots(head_size);
    if (cache_capacity + spare <= most) { return 0; }
    return error_set(err, "%s: a context of %d slots is more than the %s device's attention takes at head size %d (at most "
                     "%d slots, %d of them kept for a draft's tree beyond the context); expected --context %d or less, or "
                     "the cpu device", path, cache_capacity, backend->name, head_size, most, spare,
                     most - spare > 1 ? most - spare : 1);
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
    if (model_read_config_int(file, "llama.embedding_length", 1, 1 << 16, &c->dim, err) ||
        model_read_config_int(file, "llama.block_count", 1, 1024, &c->n_layers, err) ||
        model_read_config_int(file, "llama.attention.head_count", 1, 1024, &c->n_heads, err) ||
        model_read_config_int(file, "llama.feed_forward_length", MODEL_MIN_FFN, 1 << 20, &c->ffn_dim, err) ||
        model_read_config_int(file, "llama.context_length", 1, 1 << 24, &c->context_length, err)) {
        return -1;
    }
    c->n_kv_heads = c->n_heads; // absent key means plain multi-head attention
    if (gguf_find(file, "llama.attention.head_count_kv") &&
        model_read_config_int(file, "llama.attention.head_count_kv", 1, c->n_heads, &c->n_kv_heads, err)) {
        return -1;
    }
    if (c->dim % c->n_heads != 0 || c->n_heads % c->n_kv_heads != 0) {
        return error_set(err, "%s: embedding_length %d, head_count %d, head_count_kv %d: expected the width to "
                         "divide into heads and the heads into key/value groups", file->path, c->dim, c->n_heads, c->n_kv_heads);
    }
    if (model_check_head_group(file->path, "head_count", c->n_heads, c->n_kv_heads, err)) { return -1; }
    c->head_size = c->dim / c->n_heads;
    if (c->head_size % 2 != 0) {
        return error_set(err, "%s: head size %d is odd, expected an even head size for RoPE", file->path, c->head_size);
    }
    // keys that restate the head size (width / heads): another value asks for what is not implemented, refused
    // by the key's name rather than later by a tensor shape
    static const struct { const char* key; const char* unsupported; } head_size_keys[] = {
        {"llama.attention.key_length", "a key size other than the width over the heads"},
        {"llama.attention.value_length", "a value size other than the width over the heads"},
        {"llama.rope.dimension_count", "partial RoPE"},
    };
    for (size_t i = 0; i < sizeof(head_size_keys) / sizeof(head_size_keys[0]); i++) {
        int length;
        if (gguf_find(file, head_size_keys[i].key) == NULL) { continue; }
        if (model_read_config_int(file, head_size_keys[i].key, 1, 1 << 16, &length, err)) { return -1; }
        if (length != c->head_size) {
            return error_set(err, "%s: %s is %d, expected the head size %d (embedding_length / head_count: %s is not "
                             "supported)", file->path, head_size_keys[i].key, length, c->head_size,
                             head_size_keys[i].unsupported);
        }
    }
    if (rope_scaling_check(file, "llama", err) != 0) { return -1; }
    double value = 10000.0;
    if (gguf_find(file, "llama.rope.freq_base") && gguf_get_float(file, "llama.rope.freq_base", &value, err)) { return -1; }
    c->rope_theta = (float)value;
    if (gguf_get_float(file, "llama.attention.layer_norm_rms_epsilon", &value, err)) { return -1; }
    c->norm_eps = (float)value;
    // (an epsilon of 0 makes RMSNorm of a zero row 0 / 0: NaN through every later position)
    if (!(c->rope_theta > 0.0f) || !(c->norm_eps > 0.0f) || !isfinite(c->rope_theta) || !isfinite(c->norm_eps)) {
        return error_set(err, "%s: rope freq_base %g / rms epsilon %g out of range, expected finite positive values "
                         "(as a float)", file->path, c->rope_theta, c->norm_eps);
    }
    // the vocabulary size comes from the embedding tensor (llama.vocab_size is optional in GGUF)
    const GGUFTensor* embedding = gguf_find_tensor(file, "token_embd.weight");
    if (embedding == NULL) {
        return error_set(err, "%s: required tensor 'token_embd.weight' is missing", file->path);
    }
    if (embedding->n_dims != 2 || embedding->shape[0] != c->dim || embedding->shape[1] > (1 << 24)) {
        return error_set(err, "%s: tensor 'token_embd.weight' has shape [%lld, %lld], expected [%d, vocab] with a "
                         "vocabulary of at most %d", file->path, (long long)embedding->shape[0],
                         (long long)embedding->shape[1], c->dim, 1 << 24);
    }
    c->vocab_size = (int)embedding->shape[1];
    if (gguf_find(file, "llama.vocab_size") != NULL) {   // (optional; where present it must agree)
        int declared = 0;
        if (model_read_config_int(file, "llama.vocab_size", 1, 1 << 24, &declared, err)) { return -1; }
        if (declared != c->vocab_size) {
            return error_set(err, "%s: key 'llama.vocab_size' is %d, but tensor 'token_embd.weight' has %d rows; expected "
                             "them to agree", file->path, declared, c->vocab_size);
        }
    }
    c->tied_output = gguf_find_tensor(file, "output.weight") == NULL;
    // Aurora taps layers 1, L/2-1 and L-4 (0-indexed); tiny models clamp into [0, L-1]
    int defaults[TAP_LAYERS] = {1, c->n_layers / 2 - 1, c->n_layers - 4};
    for (int i = 0; i < TAP_LAYERS; i++) {
        int layer = defaults[i];
        if (layer < 0) { layer = 0; }
        if (layer > c->n_layers - 1) { layer = c->n_layers - 1; }
        c->tap_layers[i] = layer;
    }
    return 0;
}

const GGUFTensor* model_find_tensor(const GGUFFile* file, const char* name, int rows, int cols, Error* err) {
    const GGUFTensor* tensor = gguf_find_tensor(file, name);
    if (tensor == NULL) { error_set(err, "%s: required tensor '%s' is missing", file->path, name); return NULL; }
    int is_vector = cols == 1;
    int shape_ok = is_vector ? (tensor->n_dims == 1 && tensor->shape[0] == rows)
                             : (tensor->n_dims == 2 && tensor->shape[0] == cols && tensor->shape[1] == rows);
    if (!shape_ok) {
        if (is_vector) {
            error_set(err, "%s: tensor '%s' has %d dims [%lld, %lld], expected shape [%d]", file->path, name,
                      tensor->n_dims, (long long)tensor->shape[0], (long long)tensor->shape[1], rows);
        } else {
            error_set(err, "%s: tensor '%s' has %d dims [%lld, %lld], expected shape [%d, %d]", file->path, name,
                      tensor->n_dims, (long long)tensor->shape[0], (long long)tensor->shape[1], cols, rows);
        }
        return NULL;
    }
    if (tensor_type_is_integer(tensor->type)) {
        error_set(err, "%s: tensor '%s' has integer type %s, expected a weight type (F32, F16, BF16, Q8_0, Q4_0 or "
                  "Q4_1)", file->path, name, tensor_type_name(tensor->type));
        return NULL;
    }
    return tensor;
}

// ----------------------------------------------------------------------------
// target model: activations on the backend, and what the host reads back

static void target_alloc_activations(Target* target, int max_tokens) {
    const Backend* b = target->backend;
    TargetConfig* c = &target->config;
    TargetActivations* a = &target->act;
    size_t T = (size_t)max_tokens, S = (size_t)target->cache_capacity, C = (size_t)c->dim;
    size_t NKV = (size_t)c->n_kv_heads, HS = (size_t)c->head_size, QD = (size_t)c->n_heads * HS, KVD = NKV * HS;
    size_t F = (size_t)c->ffn_dim, V = (size_t)c->vocab_size, L = (size_t)c->n_layers;
    a->max_tokens = max_tokens;
    ActivationInfo table[TARGET_NUM_ACTIVATIONS] = {
        {"tokens",        ELEMENT_I32, T,     1,                     (void**)&a->tokens},
        {"positions",     ELEMENT_I32, T,     1,                     (void**)&a->positions},
        {"mask",          ELEMENT_U8,  T,     S,                     (void**)&a->mask},
        {"slots",         ELEMENT_I32, TREE_MAX_DEPTH + 1, 1,        (void**)&a->slots},
        {"x",             ELEMENT_F32, T,     C,                     (void**)&a->x},
        {"x_norm",        ELEMENT_F32, T,     C,                     (void**)&a->x_norm},
        {"q",             ELEMENT_F32, T,     QD,                    (void**)&a->q},
        {"k",             ELEMENT_F32, T,     KVD,                   (void**)&a->k},
        {"v",             ELEMENT_F32, T,     KVD,                   (void**)&a->v},
        {"attn_out",      ELEMENT_F32, T,     QD,                    (void**)&a->attn_out},
        {"proj",          ELEMENT_F32, T,     C,                     (void**)&a->proj},
        {"ffn_gate",      ELEMENT_F32, T,     F,                     (void**)&a->ffn_gate},
        {"ffn_up",        ELEMENT_F32, T,     F,                     (void**)&a->ffn_up},
        {"features",      ELEMENT_F32, T,     TAP_LAYERS * C,        (void**)&a->features},
        {"hidden",        ELEMENT_F32, T,     C,                     (void**)&a->hidden},
        {"logits",        ELEMENT_F32, T,     V,                     (void**)&a->logits},
        // head by head: rows of one layer's key/value head (cache_by_head)
        {"key_cache",     ELEMENT_F32, L * NKV * S, HS,              (void**)&target->key_cache},
        {"value_cache",   ELEMENT_F32, L * NKV * S, HS,              (void**)&target->value_cache},
        {"layer_outputs", ELEMENT_F32, L * T, C,                     (void**)&a->layer_outputs},
    };
    // every buffer but the last (layer_outputs: target_keep_layer_outputs), zeroed
    for (int i = 0; i < TARGET_NUM_ACTIVATIONS; i++) {
        a->table[i] = table[i];
        if (i < TARGET_NUM_ACTIVATIONS - 1) { *table[i].data = b->alloc(table[i].rows * table[i].cols * element_size(table[i].kind)); }
    }
    target->host.mask = backend_host_buffer(b, a->mask, T * S);
    target->host.features = backend_host_buffer(b, a->features, T * TAP_LAYERS * C * sizeof(float));
    target->host.hidden = backend_host_buffer(b, a->hidden, T * C * sizeof(float));
    target->host.logits = backend_host_buffer(b, a->logits, T * V * sizeof(float));
}

void target_keep_layer_outputs(Target* target) {
    TargetActivations* a = &target->act;
    if (a->layer_outputs != NULL) { return; }
    const TargetConfig* c = &target->config;
    a->layer_outputs = target->backend->alloc((size_t)c->n_layers * a->max_tokens * c->dim * sizeof(float));
}

// ----------------------------------------------------------------------------
// target model: load, free

int target_load(Target* target, const char* path, const Backend* backend, int cache_capacity, int max_tokens,
                Error* err) {
    memset(target, 0, sizeof(*target));
    target->backend = backend;
    GGUFFile* file = &target->file;
    if (gguf_open(file, path, err) != 0) { return -1; }
    TargetConfig* c = &target->config;
    if (target_read_config(c, file, err) != 0) { gguf_close(file); return -1; }
    target_build_tensor_table(target);

    // every weight onto the backend, checked against the table's shape first; the tied LM head is the
    // embedding's Matrix, not a second copy
    target->weights.layers = callocCheck((size_t)c->n_layers, sizeof(TargetLayerWeights));
    uint8_t* used = callocCheck(file->n_tensors > 0 ? (size_t)file->n_tensors : 1, 1);
    for (int i = 0; i < TARGET_NUM_TENSORS; i++) {
        const TargetTensorInfo* info = &target->tensors[i];
        if (target_is_tied_output(target, i)) { target->weights.output = target->weights.token_embedding; continue; }
        int copies = info->per_layer ? c->n_layers : 1;
        for (int layer = 0; layer < copies; layer++) {
            char name[128];
            snprintf(name, sizeof(name), info->gguf_name, layer);
            const GGUFTensor* tensor = model_find_tensor(file, name, info->rows, info->cols, err);
            if (tensor == NULL) { free(used); target_free(target); return -1; }
            int64_t nonfinite = gguf_tensor_first_nonfinite(tensor);
            if (nonfinite >= 0) {   // every logit would be NaN: refused here rather than answered as token 0
                error_set(err, "%s: tensor '%s' (%s) holds a value that is not finite (NaN or an infinity) at element "
                          "%lld%s; expected finite weights", path, name, tensor_type_name(tensor->type),
                          (long long)nonfinite, tensor_type_block_size(tensor->type) > 1 ? " (its block's scale)" : "");
                free(used);
                target_free(target);
                return -1;
            }
            used[tensor - file->tensors] = 1;
            void* field = target_tensor_field(target, i, layer);
            if (info->cols == 1) { // a norm's weight: fp32 on every backend
                size_t bytes = (size_t)info->rows * sizeof(float);
                float* values = mallocCheck(bytes);
                gguf_tensor_to_f32(tensor, values);
                float* on_backend = backend->alloc(bytes);
                backend->upload(on_backend, values, bytes);
                free(values);
                *(float**)field = on_backend;
            } else {
                *(Matrix*)field = backend->upload_matrix(tensor->data, tensor->type, info->rows, info->cols);
                // a table that keeps a form of its own (fp32, packed, on a device) does not read the file's
                // bytes again: their pages need not stay resident
                if (((Matrix*)field)->data != tensor->data) { gguf_release_pages(file, tensor->data, tensor->n_bytes); }
            }
        }
        target->n_weight_floats += info->n_elements;
    }
    // a tensor the model does not read means the configuration does not describe the file (a block count
    // lowered in the header would otherwise run a shallower model on the first layers, and answer)
    for (uint64_t t = 0; t < file->n_tensors; t++) {
        if (used[t]) { continue; }
        if (strcmp(file->tensors[t].name, "rope_freqs.weight") == 0) {   // (Llama 3.1 and later ship it)
            error_set(err, "%s: tensor 'rope_freqs.weight' asks for RoPE frequency scaling (Llama 3.1's and later's), "
                      "which is not implemented; expected a model with plain RoPE", path);
        } else {
            error_set(err, "%s: tensor '%.200s' is not part of a llama model with llama.block_count = %d; expected only "
                      "the attention, norm and feed-forward tensors of those %d layers, the embedding, the output norm and "
                      "the output", path, file->tensors[t].name, c->n_layers, c->n_layers);
        }
        free(used);
        target_free(target);
        return -1;
    }
    free(used);

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

    if (cache_capacity <= 0) {
        cache_capacity = c->context_length < TARGET_DEFAULT_CACHE_CAPACITY ? c->context_length : TARGET_DEFAULT_CACHE_CAPACITY;
    }
    if (cache_capacity > c->context_length) { // as llama.cpp does: allowed, but the model never saw such positions
        fprintf(stderr, "warning: a context of %d slots is longer than the %d positions %s was trained on "
                "(llama.context_length): positions past %d may give poor output\n", cache_capacity, c->context_length,
                path, c->context_length);
    }
    if (attention_fits(backend, cache_capacity, c->head_size, path, err) != 0) { target_free(target); return -1; }
    if (max_tokens <= 0 || max_tokens > cache_capacity) { max_tokens = cache_capacity; }
    // a call's activations count their elements in an int (the op table's n): T rows of the widest row
    int64_t widest = c->ffn_dim > 3 * c->dim ? c->ffn_dim : 3 * c->dim;   // (3C: the draft's features)
    if (widest < (int64_t)c->n_heads * c->head_size) { widest = (int64_t)c->n_heads * c->head_size; }
    if ((int64_t)max_tokens * widest > INT_MAX) {
        error_set(err, "%s: %d tokens a call times the model's widest activation row (%lld values) is more than %d "
                  "elements; expected --batch %lld or less", path, max_tokens, (long long)widest, INT_MAX,
                  (long long)(INT_MAX / widest));
        target_free(target);
        return -1;
    }
    target->cache_capacity = cache_capacity;
    target_alloc_activations(target, max_tokens); // the key/value caches too: they are in its table
    return 0;
}

void target_free(Target* target) {
    const Backend* b = target->backend;
    if (target->weights.layers != NULL) {
        for (int i = 0; i < TARGET_NUM_TENSORS; i++) {
            if (target_is_tied_output(target, i)) { continue; }
            int copies = target->tensors[i].per_layer ? target->config.n_layers : 1;
            for (int layer = 0; layer < copies; layer++) {
                void* field = target_tensor_field(target, i, layer);
                if (target->tensors[i].cols == 1) { b->free(*(float**)field); }
                else if (((Matrix*)field)->data != NULL) { b->free_matrix(*(Matrix*)field); }
            }
        }
        free(target->weights.layers);
    }
    TargetActivations* a = &target->act;
    if (a->max_tokens > 0) {
        backend_free_host_buffer(b, target->host.mask);
        backend_free_host_buffer(b, target->host.features);
        backend_free_host_buffer(b, target->host.hidden);
        backend_free_host_buffer(b, target->host.logits);
        for (int i = 0; i < TARGET_NUM_ACTIVATIONS; i++) { b->free(*a->table[i].data); }
    }
    if (target->has_tokenizer) { tokenizer_free(&target->tokenizer); }
    gguf_close(&target->file);
    memset(target, 0, sizeof(*target));
}

// ----------------------------------------------------------------------------
// target model: forward

void build_attention_mask(uint8_t* out, const uint8_t* mask, int T, int n_past) {
    // out: (T, P), P = n_past + T: the caller's mask when given, else causal (every new token sees the
    // n_past cached slots, and the new tokens up to itself)
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
    SequenceSpan span = {0, T, 0, n_past};
    target_forward_spans(target, tokens, positions, mask, &span, 1, all_logits);
}

// Checks the spans of one call (callers check them first: a failure here is a program bug) and returns the
// bytes of its masks.
static size_t target_check_spans(const Target* target, const SequenceSpan* spans, int n_spans) {
    int S = target->cache_capacity;
    size_t mask_bytes = 0;
    for (int i = 0, row = 0; i < n_spans; i++) {
        const SequenceSpan* s = &spans[i];
        if (s->row != row || s->n < 1 || s->base < 0 || s->n_past < 0 || s->base + s->n_past + s->n > S) {
            fprintf(stderr, "error: target_forward: span %d of %d is rows [%d, %d) at cache slots %d + %d, expected rows "
                    "from %d inside the %d slots\n", i, n_spans, s->row, s->row + s->n, s->base, s->n_past, row, S);
            exit(EXIT_FAILURE);
        }
        row += s->n;
        mask_bytes += span_mask_bytes(s);
    }
    return mask_bytes;
}

void target_forward_spans(Target* target, const int* tokens, const int* positions, const uint8_t* mask,
                          const SequenceSpan* spans, int n_spans, int all_logits) {
    const Backend* b = target->backend;
    TargetConfig* c = &target->config;
    TargetWeights* w = &target->weights;
    TargetActivations* a = &target->act;
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim, V = c->vocab_size;
    int QD = NH * HS, KVD = NKV * HS, S = target->cache_capacity;
    int T = n_spans > 0 ? spans[n_spans - 1].row + spans[n_spans - 1].n : 0;
    if (n_spans < 1 || T < 1 || T > a->max_tokens) {
        fprintf(stderr, "error: target_forward called with %d spans of %d tokens (max %d tokens per call, %d cache slots)\n",
                n_spans, T, a->max_tokens, S);
        exit(EXIT_FAILURE); // callers check these bounds first; reaching here is a program bug
    }
    size_t mask_bytes = target_check_spans(target, spans, n_spans);
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= V) { // the embedding would read outside its table
            fprintf(stderr, "error: target_forward: token %d is %d, expected an id in [0, %d)\n", t, tokens[t], V);
            exit(EXIT_FAILURE); // as above
        }
    }
    // the call's inputs: tokens, positions and each span's (n, n_past + n) mask, one after another, built on
    // the host
    b->upload(a->tokens, tokens, (size_t)T * sizeof(int));
    b->upload(a->positions, positions, (size_t)T * sizeof(int));
    for (size_t i = 0, offset = 0; i < (size_t)n_spans; offset += span_mask_bytes(&spans[i]), i++) {
        build_attention_mask(target->host.mask + offset, mask ? mask + offset : NULL, spans[i].n, spans[i].n_past);
    }
    b->upload(a->mask, target->host.mask, mask_bytes);
    b->embedding_forward(a->x, a->tokens, w->token_embedding, T, C, V);

    CacheLayout layout = cache_by_head(S, HS);   // every layer's cache head by head
    for (int l = 0; l < c->n_layers; l++) {
        const TargetLayerWeights* lw = &w->layers[l];
        float* key_cache = target->key_cache + (size_t)l * S * KVD;     // (NKV, S, HS): `layout`
        float* value_cache = target->value_cache + (size_t)l * S * KVD;
        // attention block: x = x + wo(attention(rope(wq xn), rope(wk xn), wv xn)), xn = rmsnorm(x)
        b->rmsnorm_forward(a->x_norm, a->x, lw->attn_norm, T, C, c->norm_eps);
        float* qkv[3] = {a->q, a->k, a->v};
        backend_matmuls(b, qkv, a->x_norm, (Matrix[3]){lw->wq, lw->wk, lw->wv}, (int[3]){QD, KVD, KVD}, 3, T, C);
        b->rope_forward(a->q, a->q, a->positions, T, NH, HS, c->rope_theta);
        b->rope_forward(a->k, a->k, a->positions, T, NKV, HS, c->rope_theta);
        // each span's rows see its own slots: the cache from its base (a sequence's slots, in every head's plane)
        for (int i = 0; i < n_spans; i++) {
            const SequenceSpan* s = &spans[i];
            size_t base = (size_t)s->base * layout.slot_stride;
            b->cache_store(key_cache + base, value_cache + base, a->k + (size_t)s->row * KVD, a->v + (size_t)s->row * KVD,
                           layout, s->n, s->n_past, NKV, HS);
        }
        backend_attention_spans(b, a->attn_out, a->q, key_cache, value_cache, a->mask, spans, n_spans, NH, NKV, HS, layout);
        b->matmul_forward(a->proj, a->attn_out, lw->wo, T, QD, C);
        b->residual_forward(a->x, a->x, a->proj, T * C);
        // MLP block: x = x + w_down(silu(w_gate xn) * w_up xn), xn = rmsnorm(x)
        b->rmsnorm_forward(a->x_norm, a->x, lw->ffn_norm, T, C, c->norm_eps);
        float* gate_up[2] = {a->ffn_gate, a->ffn_up};
        backend_matmuls(b, gate_up, a->x_norm, (Matrix[2]){lw->w_gate, lw->w_up}, (int[2]){F, F}, 2, T, C);
        b->swiglu_forward(a->ffn_gate, a->ffn_gate, a->ffn_up, T * F);
        b->matmul_forward(a->proj, a->ffn_gate, lw->w_down, T, F, C);
        b->residual_forward(a->x, a->x, a->proj, T * C);
        // taps for the draft: row t of x into columns [i*C, (i+1)*C) of row t of features
        for (int i = 0; i < TAP_LAYERS; i++) {
            if (c->tap_layers[i] == l) { b->copy_strided(a->features + (size_t)i * C, a->x, T, C, TAP_LAYERS * C, C); }
        }
        if (a->layer_outputs) { b->copy(a->layer_outputs + (size_t)l * T * C, a->x, (size_t)T * C * sizeof(float)); }
    }
    b->rmsnorm_forward(a->hidden, a->x, w->output_norm, T, C, c->norm_eps);
    int logit_rows = all_logits ? T : 1;
    b->matmul_forward(a->logits, a->hidden + (size_t)(T - logit_rows) * C, w->output, logit_rows, C, V);

    // what the host reads (on a host-memory backend these are the same buffers: nothing moves)
    b->download(target->host.features, a->features, (size_t)T * TAP_LAYERS * C * sizeof(float));
    b->download(target->host.hidden, a->hidden, (size_t)T * C * sizeof(float));
    b->download(target->host.logits, a->logits, (size_t)logit_rows * V * sizeof(float));
}

void target_prefill(Target* target, const int* tokens, int n, int n_past, float* features, float* hidden) {
    target_prefill_span(target, 0, tokens, n, n_past, features, hidden);
}

void target_prefill_span(Target* target, int base, const int* tokens, int n, int n_past, float* features, float* hidden) {
    int C = target->config.dim;
    int chunk = target->act.max_tokens;
    int* positions = mallocCheck((size_t)chunk * sizeof(int));
    for (int start = 0; start < n; start += chunk) {
        int T = n - start < chunk ? n - start : chunk;
        for (int t = 0; t < T; t++) { positions[t] = n_past + start + t; }
        SequenceSpan span = {0, T, base, n_past + start};
        target_forward_spans(target, tokens + start, positions, NULL, &span, 1, 0);
        if (features) {
            memcpy(features + (size_t)start * TAP_LAYERS * C, target->host.features, (size_t)T * TAP_LAYERS * C * sizeof(float));
        }
        if (hidden) { memcpy(hidden + (size_t)start * C, target->host.hidden, (size_t)T * C * sizeof(float)); }
    }
    free(positions);
}

int target_is_end(const Target* target, int token) {
    return target->has_tokenizer && tokenizer_is_end(&target->tokenizer, token);
}

void target_compact(Target* target, const int* slots, int n, int destination) {
    const Backend* b = target->backend;
    TargetConfig* c = &target->config;
    if (n < 1 || n > TREE_MAX_DEPTH + 1) {
        fprintf(stderr, "error: target_compact: %d slots, expected 1 to %d (a path through a tree)\n", n, TREE_MAX_DEPTH + 1);
        exit(EXIT_FAILURE); // a program bug
    }
    // kv_compact moves slot slots[i] to destination + i in place: the slots must rise, from destination on, and
    // stay in the cache (so no move overwrites a slot still to be read)
    for (int i = 0; i < n; i++) {
        if (destination < 0 || slots[i] < destination + i || slots[i] >= target->cache_capacity || (i > 0 && slots[i] <= slots[i - 1])) {
            fprintf(stderr, "error: target_compact: slot %d (of %d, to %d) is %d; expected rising slots from %d, below %d\n",
                    i, n, destination + i, slots[i], destination, target->cache_capacity);
            exit(EXIT_FAILURE); // a program bug
        }
    }
    b->upload(target->act.slots, slots, (size_t)n * sizeof(int));
    // the cache as planes of one layer's key/value head: (L * NKV, S, HS)
    b->kv_compact(target->key_cache, target->value_cache, target->act.slots, n, destination, c->n_layers * c->n_kv_heads,
                  target->cache_capacity, c->head_size);
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
