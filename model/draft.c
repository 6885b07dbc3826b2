/*
draft.c: the EAGLE-3 draft model (see the contract in aurora.h, section "draft model").

What it is: one Llama-style decoder layer that reads the target's tapped hidden states instead of a
token embedding. Its configuration comes from the target (same width, heads and FFN width) except the
vocabulary: the draft predicts over V_d ids, and d2t maps each draft id to a target id. Weights live in
one fp32 arena described by a tensor table, exactly like the target's (target.c), so save, load, tests
and the optimizer can all loop "for every tensor".

  draft_init_random       fresh seeded weights for a target (norms 1, matrices with variance 1/fan_in)
  draft_save / draft_load GGUF checkpoints: architecture "aurora-draft", aurora.draft.* keys, the d2t map
                          as an INT32 array, the 13 tensors in F32; loading checks the draft fits the target
  draft_alloc_state       the key/value cache (one layer) and the per-call activations, on the backend
  draft_serve_as          the matrices a serving draft multiplies with, in another type (--draft-type)
  draft_use_weights       a hot swap: the host weights bound to another arena, the backend's brought along
  draft_project_features  u = fc(g)
  draft_forward           the layer over T inputs with explicit positions and a (T, n_past + T) mask,
                          then the LM head
  draft_extend            the catch-up over committed tokens: every row's key and value, the rest of the
                          layer and the head for the last row only (draft_layer_forward's first_out)

The draft lives on its target's backend (it reads the target's embedding table there). Its weights are
kept on the host (init, load, save, training and publishing work there) and, for the forward, on the
backend (device_weights: the host weights themselves on a CPU backend). A draft that serves
(draft_alloc_state) multiplies with its backend's serving form of the matrices (Backend.draft_type: on the
fast CPU table a Q8_0 copy, quantised from the fp32 weights at every hot swap; elsewhere the fp32 weights),
or with the form draft_serve_as asks for (--draft-type: a Q4_1 copy, say); the trainer's copy computes in
fp32 (its held-back evaluator with a serving copy of its own: trainer_evaluate_as_served). The forward is
written once, a sequence of calls to the backend's ops, shared by serving (draft_forward) and the training
unroll (trainer.c) through draft_layer_forward and draft_head_forward.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// draft model: configuration, tensor table, vocabulary map

// Fills the tensor table from the config (shapes) and the weight struct (where each pointer lives).
static void draft_build_tensor_table(Draft* draft) {
    DraftConfig* c = &draft->config;
    DraftWeights* w = &draft->weights;
    int C = c->dim, QD = c->n_heads * c->head_size, KVD = c->n_kv_heads * c->head_size;
    DraftTensorInfo table[DRAFT_NUM_TENSORS] = {
        {"draft.fc.weight",          C,             3 * C,     &w->fc,          0},
        {"draft.embed_norm.weight",  C,             1,         &w->embed_norm,  0},
        {"draft.hidden_norm.weight", C,             1,         &w->hidden_norm, 0},
        {"draft.attn_q.weight",      QD,            2 * C,     &w->wq,          0},
        {"draft.attn_k.weight",      KVD,           2 * C,     &w->wk,          0},
        {"draft.attn_v.weight",      KVD,           2 * C,     &w->wv,          0},
        {"draft.attn_output.weight", C,             QD,        &w->wo,          0},
        {"draft.ffn_norm.weight",    C,             1,         &w->ffn_norm,    0},
        {"draft.ffn_gate.weight",    c->ffn_dim,    C,         &w->w_gate,      0},
        {"draft.ffn_up.weight",      c->ffn_dim,    C,         &w->w_up,        0},
        {"draft.ffn_down.weight",    C,             c->ffn_dim, &w->w_down,     0},
        {"draft.output_norm.weight", C,             1,         &w->output_norm, 0},
        {"draft.lm_head.weight",     c->vocab_size, C,         &w->lm_head,     0},
    };
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        table[i].n_elements = (size_t)table[i].rows * table[i].cols;
        draft->tensors[i] = table[i];
    }
}

// Points every host weight into an arena laid out by the tensor table.
static void draft_bind_arena(Draft* draft, float* arena) {
    float* cursor = arena;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        *draft->tensors[i].data = cursor;
        cursor += draft->tensors[i].n_elements;
    }
}

// Allocates the weight arena for the current config and points every weight into it.
static void draft_alloc_weights(Draft* draft) {
    draft_build_tensor_table(draft);
    size_t total = 0;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) { total += draft->tensors[i].n_elements; }
    draft->n_weight_floats = total;
    draft->weight_arena = mallocCheck(total * sizeof(float));
    draft_bind_arena(draft, draft->weight_arena);
}

// Stores the draft vocabulary: d2t (V_d) = the given target ids, t2d (V) its inverse (-1 outside).
// The ids must be distinct and in [0, V); `where` names the source for the message (a file and key).
static int draft_set_vocabulary(Draft* draft, const int32_t* d2t, int vocab_size, int target_vocab_size,
                                const char* where, Error* err) {
    int32_t* draft_to_target = mallocCheck((size_t)vocab_size * sizeof(int32_t));
    int32_t* target_to_draft = mallocCheck((size_t)target_vocab_size * sizeof(int32_t));
    for (int i = 0; i < target_vocab_size; i++) { target_to_draft[i] = -1; }
    for (int i = 0; i < vocab_size; i++) {
        int32_t id = d2t ? d2t[i] : i;
        if (id < 0 || id >= target_vocab_size) {
            error_set(err, "%s: draft id %d maps to target id %d, expected an id in [0, %d)", where, i, (int)id,
                      target_vocab_size);
        } else if (target_to_draft[id] != -1) {
            error_set(err, "%s: target id %d appears twice (draft ids %d and %d), expected distinct ids", where,
                      (int)id, (int)target_to_draft[id], i);
        } else {
            draft_to_target[i] = id;
            target_to_draft[id] = i;
            continue;
        }
        free(draft_to_target);
        free(target_to_draft);
        return -1;
    }
    draft->d2t = draft_to_target;
    draft->t2d = target_to_draft;
    return 0;
}

void draft_init_random(Draft* draft, const Target* target, int vocab_size, const int32_t* d2t, uint64_t seed) {
    const TargetConfig* tc = &target->config;
    if (vocab_size < 1 || vocab_size > tc->vocab_size) {
        fprintf(stderr, "error: draft_init_random: draft vocabulary of %d ids, expected 1 to %d (the target's)\n",
                vocab_size, tc->vocab_size);
        exit(EXIT_FAILURE); // callers validate user input first; reaching here is a program bug
    }
    memset(draft, 0, sizeof(*draft));
    DraftConfig* c = &draft->config;
    c->dim = tc->dim;
    c->n_heads = tc->n_heads;
    c->n_kv_heads = tc->n_kv_heads;
    c->head_size = tc->head_size;
    c->ffn_dim = tc->ffn_dim;
    c->vocab_size = vocab_size;
    c->target_vocab_size = tc->vocab_size;
    c->rope_theta = tc->rope_theta;
    c->norm_eps = tc->norm_eps;
    memcpy(c->target_taps, tc->tap_layers, sizeof(c->target_taps));
    Error err;
    if (draft_set_vocabulary(draft, d2t, vocab_size, tc->vocab_size, "draft_init_random: d2t", &err) != 0) {
        fprintf(stderr, "error: %s\n", err.message);
        exit(EXIT_FAILURE); // as above: a program bug
    }
    draft->backend = target->backend;
    draft->target_embedding = target->weights.token_embedding;
    draft_alloc_weights(draft);

    // norms 1; matrices uniform with variance 1/cols (so activations stay O(1), as in tiny_model_write);
    // the LM head 10x smaller, so a fresh draft starts close to uniform over its vocabulary
    uint64_t rng = random_seed_state(seed);
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        float* values = *info->data;
        int is_vector = info->cols == 1;
        float scale = sqrtf(3.0f / info->cols);
        if (info->data == &draft->weights.lm_head) { scale *= 0.1f; }
        for (size_t j = 0; j < info->n_elements; j++) {
            values[j] = is_vector ? 1.0f : scale * (2.0f * random_f32(&rng) - 1.0f);
        }
    }
}

// A warmer start than random (an option, measured in the README): the LM head and final norm copied
// from the target's (rows of the draft vocabulary), and fc initialised to pass the deepest tapped layer
// through, so the draft starts in the target's own representation and only has to learn the step
// from "what is at t" to "what comes at t+2". Everything else stays as draft_init_random made it.
void draft_init_from_target(Draft* draft, const Target* target) {
    const DraftConfig* c = &draft->config;
    int C = c->dim;
    // read from the model file, whatever the backend keeps: the rows of the draft vocabulary, the final norm
    Error err;
    if (target_read_rows(target, target_output_name(target), draft->d2t, c->vocab_size, draft->weights.lm_head, &err) != 0 ||
        target_read_rows(target, "output_norm.weight", NULL, 1, draft->weights.output_norm, &err) != 0) {
        fprintf(stderr, "error: internal: draft_init_from_target: %s\n", err.message);
        exit(EXIT_FAILURE); // the target loaded these tensors: a program bug
    }
    // fc (C, 3C): u = the deepest tap (rows of the identity on its C columns): the last slot, except where a
    // model of 2 to 4 layers clamps the taps (2 layers tap {1, 0, 0}: the last slot is layer 0)
    int deepest = TAP_LAYERS - 1;
    for (int slot = TAP_LAYERS - 2; slot >= 0; slot--) {
        if (target->config.tap_layers[slot] > target->config.tap_layers[deepest]) { deepest = slot; }
    }
    memset(draft->weights.fc, 0, (size_t)C * TAP_LAYERS * C * sizeof(float));
    for (int i = 0; i < C; i++) { draft->weights.fc[(size_t)i * TAP_LAYERS * C + (size_t)deepest * C + i] = 1.0f; }
}

// The decoder layer from the target's last layer, for the warm start "target-layer": the u half of the
// q/k/v projections is the target layer's (the e half zero, so at first the layer ignores the token
// embedding), hidden_norm is its attention norm, embed_norm is 1, and wo, ffn_norm and the MLP are the
// target's. With fc passing the deepest tap through, step 0 then computes the target's last layer over
// the deepest tap's residual stream: a rough guess at the target's final state from the start.
void draft_init_from_target_layer(Draft* draft, const Target* target) {
    const DraftConfig* c = &draft->config;
    int C = c->dim, QD = c->n_heads * c->head_size, KVD = c->n_kv_heads * c->head_size, F = c->ffn_dim;
    int last = target->config.n_layers - 1;
    DraftWeights* w = &draft->weights;
    struct { const char* name; float* destination; int rows, cols, into_u_half; } parts[] = {
        {"attn_q", w->wq, QD, C, 1}, {"attn_k", w->wk, KVD, C, 1}, {"attn_v", w->wv, KVD, C, 1},
        {"attn_output", w->wo, C, QD, 0}, {"ffn_gate", w->w_gate, F, C, 0}, {"ffn_up", w->w_up, F, C, 0},
        {"ffn_down", w->w_down, C, F, 0}, {"attn_norm", w->hidden_norm, 1, C, 0}, {"ffn_norm", w->ffn_norm, 1, C, 0},
    };
    float* rows = mallocCheck((size_t)(QD > F ? QD : F) * (C > F ? C : F) * sizeof(float));
    Error err;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        char name[96];
        snprintf(name, sizeof(name), "blk.%d.%s.weight", last, parts[i].name);
        if (target_read_rows(target, name, NULL, parts[i].rows, rows, &err) != 0) {
            fprintf(stderr, "error: internal: draft_init_from_target_layer: %s\n", err.message);
            exit(EXIT_FAILURE); // the target loaded these tensors: a program bug
        }
        if (!parts[i].into_u_half) {
            memcpy(parts[i].destination, rows, (size_t)parts[i].rows * parts[i].cols * sizeof(float));
            continue;
        }
        for (int r = 0; r < parts[i].rows; r++) { // (rows, 2C): [e half | u half]
            memset(parts[i].destination + (size_t)r * 2 * C, 0, (size_t)C * sizeof(float));
            memcpy(parts[i].destination + (size_t)r * 2 * C + C, rows + (size_t)r * C, (size_t)C * sizeof(float));
        }
    }
    for (int i = 0; i < C; i++) { w->embed_norm[i] = 1.0f; }
    free(rows);
}

// ----------------------------------------------------------------------------
// draft model: checkpoints (GGUF)

int draft_save(const Draft* draft, const char* path, Error* err) {
    const DraftConfig* c = &draft->config;
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_add_string(writer, "general.architecture", "aurora-draft");
    gguf_writer_add_string(writer, "general.name", "aurora-eagle3-draft");
    gguf_writer_add_uint32(writer, "aurora.draft.dim", (uint32_t)c->dim);
    gguf_writer_add_uint32(writer, "aurora.draft.head_count", (uint32_t)c->n_heads);
    gguf_writer_add_uint32(writer, "aurora.draft.head_count_kv", (uint32_t)c->n_kv_heads);
    gguf_writer_add_uint32(writer, "aurora.draft.attention.key_length", (uint32_t)c->head_size);
    gguf_writer_add_uint32(writer, "aurora.draft.feed_forward_length", (uint32_t)c->ffn_dim);
    gguf_writer_add_uint32(writer, "aurora.draft.vocab_size", (uint32_t)c->vocab_size);
    gguf_writer_add_uint32(writer, "aurora.draft.target_vocab_size", (uint32_t)c->target_vocab_size);
    gguf_writer_add_float32(writer, "aurora.draft.rope.freq_base", c->rope_theta);
    gguf_writer_add_float32(writer, "aurora.draft.layer_norm_rms_epsilon", c->norm_eps);
    gguf_writer_add_array(writer, "aurora.draft.d2t", GGUF_TYPE_INT32, draft->d2t, (uint64_t)c->vocab_size);
    gguf_writer_add_array(writer, "aurora.draft.target_tap_layers", GGUF_TYPE_INT32, c->target_taps, TAP_LAYERS);
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        int64_t shape[2] = {info->cols, info->rows}; // GGUF order: row length first
        int is_vector = info->cols == 1;
        gguf_writer_add_tensor(writer, info->gguf_name, TYPE_F32, is_vector ? 1 : 2, is_vector ? &shape[1] : shape,
                               *info->data);
    }
    int status = gguf_writer_save(writer, path, err);
    gguf_writer_free(writer);
    return status;
}

// A call's activations count their elements in an int (the op table's n), as the target's do (target_load):
// rows times the draft's widest row, with the draft's own sizes (a file's FFN and head sizes need not be the
// target's; checked before the tensors are read, and again for an imported draft). The most rows a call
// carries: a trainer step's (its positions and discard nodes), a held-back evaluation's (a whole record: up to
// the target's context), a serving call's (the target's batch, within its context).
static int draft_check_widths(const DraftConfig* c, const Target* target, const char* path, Error* err) {
    int64_t widest = c->ffn_dim > 3 * c->dim ? c->ffn_dim : 3 * c->dim;
    if (widest < (int64_t)c->n_heads * c->head_size) { widest = (int64_t)c->n_heads * c->head_size; }
    int64_t rows = TRAINER_DEFAULT_MAX_POSITIONS + TRAIN_MAX_DISCARD_ROWS;
    if (rows < target->cache_capacity) { rows = target->cache_capacity; }
    if (rows * widest > INT_MAX) {
        return error_set(err, "%s: the draft's widest activation row (%lld values: feed_forward_length %d, %d heads of %d) "
                         "times the %lld rows a call can carry is more than %d elements; expected rows of at most %lld values",
                         path, (long long)widest, c->ffn_dim, c->n_heads, c->head_size, (long long)rows, INT_MAX,
                         (long long)(INT_MAX / rows));
    }
    return 0;
}

// Reads the aurora.draft.* keys and checks them against the target (width, vocabulary).
static int draft_read_config(DraftConfig* c, const GGUFFile* file, const Target* target, Error* err) {
    const TargetConfig* tc = &target->config;
    char* architecture = NULL;
    if (gguf_get_string(file, "general.architecture", &architecture, err) != 0) { return -1; }
    int is_draft = strcmp(architecture, "aurora-draft") == 0;
    if (!is_draft) {
        error_set(err, "%s: general.architecture is '%s', expected 'aurora-draft' (a draft checkpoint)",
                  file->path, architecture);
    }
    free(architecture);
    if (!is_draft) { return -1; }
    if (model_read_config_int(file, "aurora.draft.dim", 1, 1 << 16, &c->dim, err) ||
        model_read_config_int(file, "aurora.draft.head_count", 1, 1024, &c->n_heads, err) ||
        model_read_config_int(file, "aurora.draft.head_count_kv", 1, 1024, &c->n_kv_heads, err) ||
        model_read_config_int(file, "aurora.draft.feed_forward_length", MODEL_MIN_FFN, 1 << 20, &c->ffn_dim, err) ||
        model_read_config_int(file, "aurora.draft.target_vocab_size", 1, 1 << 24, &c->target_vocab_size, err)) {
        return -1;
    }
    if (c->dim != tc->dim) {
        return error_set(err, "%s: key 'aurora.draft.dim' is %d, expected the target's width %d", file->path,
                         c->dim, tc->dim);
    }
    if (c->target_vocab_size != tc->vocab_size) {
        return error_set(err, "%s: key 'aurora.draft.target_vocab_size' is %d, expected the target's vocabulary size %d",
                         file->path, c->target_vocab_size, tc->vocab_size);
    }
    if (model_read_config_int(file, "aurora.draft.vocab_size", 1, tc->vocab_size, &c->vocab_size, err)) { return -1; }
    // the head size: its own key (an imported draft's may differ from dim / head_count, as in llama.cpp's
    // eagle3 files), or, in files written before the key, dim / head_count
    int has_head_size = gguf_find(file, "aurora.draft.attention.key_length") != NULL;
    if (has_head_size &&
        model_read_config_int(file, "aurora.draft.attention.key_length", 2, 1 << 16, &c->head_size, err)) { return -1; }
    if ((!has_head_size && c->dim % c->n_heads != 0) || c->n_heads % c->n_kv_heads != 0) {
        return error_set(err, "%s: aurora.draft.dim %d, aurora.draft.head_count %d, aurora.draft.head_count_kv %d: "
                         "expected the width to divide into heads and the heads into key/value groups",
                         file->path, c->dim, c->n_heads, c->n_kv_heads);
    }
    if (model_check_head_group(file->path, "aurora.draft.head_count", c->n_heads, c->n_kv_heads, err)) { return -1; }
    if (!has_head_size) { c->head_size = c->dim / c->n_heads; }
    if (c->head_size % 2 != 0) {
        return error_set(err, "%s: draft head size %d is odd, expected an even head size for RoPE", file->path, c->head_size);
    }
    if (draft_check_widths(c, target, file->path, err) != 0) { return -1; }
    double value;
    if (gguf_get_float(file, "aurora.draft.rope.freq_base", &value, err)) { return -1; }
    c->rope_theta = (float)value;
    if (gguf_get_float(file, "aurora.draft.layer_norm_rms_epsilon", &value, err)) { return -1; }
    c->norm_eps = (float)value;
    if (!(c->rope_theta > 0.0f) || !(c->norm_eps > 0.0f) || !isfinite(c->rope_theta) || !isfinite(c->norm_eps)) {
        return error_set(err, "%s: aurora.draft.rope.freq_base %g / aurora.draft.layer_norm_rms_epsilon %g out of "
                         "range, expected finite positive values (as a float)", file->path, c->rope_theta, c->norm_eps);
    }
    // the target layers the draft was trained on (a target of the same width and vocabulary but another depth
    // taps other layers: fc would read features it never saw, and acceptance collapse with no error). Files
    // written before the key: the target's, unchecked.
    memcpy(c->target_taps, tc->tap_layers, sizeof(c->target_taps));
    if (gguf_find(file, "aurora.draft.target_tap_layers") != NULL) {
        int32_t* taps = NULL;
        uint64_t count = 0;
        if (gguf_get_int_array(file, "aurora.draft.target_tap_layers", &taps, &count, err) != 0) { return -1; }
        int same = count == TAP_LAYERS;
        for (uint64_t i = 0; same && i < count; i++) { same = taps[i] == tc->tap_layers[i]; }
        if (!same) {
            char got[64] = "";
            for (uint64_t i = 0, n = 0; i < count && i < 4 && n < sizeof(got); i++) {
                n += (size_t)snprintf(got + n, sizeof(got) - n, "%s%d", i ? ", " : "", taps[i]);
            }
            error_set(err, "%s: key 'aurora.draft.target_tap_layers' is [%s%s] (%llu layers), but this target taps layers "
                      "%d, %d, %d (%d layers deep); expected the target the draft was trained for", file->path, got,
                      count > 4 ? ", ..." : "", (unsigned long long)count, tc->tap_layers[0], tc->tap_layers[1],
                      tc->tap_layers[2], tc->n_layers);
        }
        free(taps);
        if (!same) { return -1; }
    }
    return 0;
}

// Other systems' formats, llama.cpp's eagle3 GGUF and SpecForge directories (interop/eagle3_formats.c):
// recognised here, so every caller of draft_load reads them too.

static int draft_load_ours(Draft* draft, const char* path, const Target* target, Error* err);

// A weight that is not finite makes every draft logit NaN: the draft would propose nothing useful and never
// train (every step's loss is not finite, so every update is rejected). Refused, naming the tensor (by our
// name, whatever the file's format) and the element, as the target's load does.
static int draft_check_finite(const Draft* draft, const char* path, Error* err) {
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        const float* values = *info->data;
        for (size_t j = 0; j < info->n_elements; j++) {
            if (isfinite(values[j])) { continue; }
            return error_set(err, "%s: the draft's tensor '%s' holds %s at element %zu (row %zu, column %zu of (%d, %d)); "
                             "expected finite weights", path, info->gguf_name, isnan(values[j]) ? "NaN" : "an infinity", j,
                             j / (size_t)info->cols, j % (size_t)info->cols, info->rows, info->cols);
        }
    }
    return 0;
}

int draft_load(Draft* draft, const char* path, const Target* target, Error* err) {
    int format = eagle3_format_of(path);
    int status = format != 0 ? eagle3_import(draft, path, format, target, err) : draft_load_ours(draft, path, target, err);
    if (status == 0 && (draft_check_finite(draft, path, err) != 0 ||
                        (format != 0 && draft_check_widths(&draft->config, target, path, err) != 0) ||   // (ours: at its config)
                        attention_fits(target->backend, target->cache_capacity, draft->config.head_size, path, err) != 0)) {
        draft_free(draft);   // (the draft's own head size: an imported draft's may differ from the target's)
        status = -1;
    }
    return status;
}

// Our own GGUF checkpoint.
static int draft_load_ours(Draft* draft, const char* path, const Target* target, Error* err) {
    memset(draft, 0, sizeof(*draft));
    GGUFFile file;
    if (gguf_open(&file, path, err) != 0) { return -1; }
    DraftConfig* c = &draft->config;
    if (draft_read_config(c, &file, target, err) != 0) { gguf_close(&file); return -1; }

    // the vocabulary map: vocab_size distinct target ids
    int32_t* d2t = NULL;
    uint64_t count = 0;
    if (gguf_get_int_array(&file, "aurora.draft.d2t", &d2t, &count, err) != 0) { gguf_close(&file); return -1; }
    char where[600];
    snprintf(where, sizeof(where), "%s: key 'aurora.draft.d2t'", file.path);
    int status = 0;
    if (count != (uint64_t)c->vocab_size) {
        status = error_set(err, "%s has %llu ids, expected aurora.draft.vocab_size = %d", where,
                           (unsigned long long)count, c->vocab_size);
    } else {
        status = draft_set_vocabulary(draft, d2t, c->vocab_size, c->target_vocab_size, where, err);
    }
    free(d2t);
    if (status != 0) { gguf_close(&file); draft_free(draft); return -1; }

    // Before allocating, every tensor must exist and hold as many elements as its shape says, so a
    // malformed file cannot make us allocate more than it holds. model_find_tensor checks the exact
    // shape (a transposed matrix has the right count) before copying.
    draft_build_tensor_table(draft);
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        const GGUFTensor* tensor = gguf_find_tensor(&file, info->gguf_name);
        if (tensor == NULL) {
            status = error_set(err, "%s: required tensor '%s' is missing", file.path, info->gguf_name);
        } else if ((uint64_t)tensor->n_elements != info->n_elements) {
            status = error_set(err, "%s: tensor '%s' has %lld elements, expected %zu (shape (%d, %d))", file.path,
                               info->gguf_name, (long long)tensor->n_elements, info->n_elements, info->rows, info->cols);
        }
        if (status != 0) { gguf_close(&file); draft_free(draft); return -1; }
    }
    // and nothing else: a tensor the draft does not read (its own embedding, say) would be silently ignored
    for (uint64_t t = 0; t < file.n_tensors; t++) {
        int known = 0;
        for (int i = 0; i < DRAFT_NUM_TENSORS; i++) { known |= strcmp(file.tensors[t].name, draft->tensors[i].gguf_name) == 0; }
        if (!known) {
            error_set(err, "%s: tensor '%.200s' is not part of an aurora draft; expected only its %d tensors (draft.fc.weight "
                      "to draft.lm_head.weight: it reads the target's embedding)", file.path, file.tensors[t].name,
                      DRAFT_NUM_TENSORS);
            gguf_close(&file);
            draft_free(draft);
            return -1;
        }
    }
    draft_alloc_weights(draft);
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        const GGUFTensor* tensor = model_find_tensor(&file, info->gguf_name, info->rows, info->cols, err);
        if (tensor == NULL) {
            gguf_close(&file);
            draft_free(draft);
            return -1;
        }
        gguf_tensor_to_f32(tensor, *info->data);
    }
    gguf_close(&file);
    draft->backend = target->backend;
    draft->target_embedding = target->weights.token_embedding;
    return 0;
}

// ----------------------------------------------------------------------------
// draft model: weights on the backend, and a copy for the trainer

DraftMatrices draft_matrices_f32(const DraftWeights* w) {
    DraftMatrices m = {matrix_f32(w->fc), matrix_f32(w->wq), matrix_f32(w->wk), matrix_f32(w->wv), matrix_f32(w->wo),
                       matrix_f32(w->w_gate), matrix_f32(w->w_up), matrix_f32(w->w_down), matrix_f32(w->lm_head)};
    return m;
}

// Whether a serving copy in `type` quantises this tensor: a matrix (cols > 1) whose rows are whole blocks
// of the type; other matrices serve in fp32, vectors are not matrices.
static int draft_serving_quantises(const DraftTensorInfo* info, int type) {
    return info->cols > 1 && info->cols % tensor_type_block_size(type) == 0;
}

// Frees the matrices the last serving copy uploaded (a table may keep a form of its own, e.g. packed).
static void draft_free_serving_copy(Draft* draft) {
    if (draft->serving_bytes == NULL) { return; }   // no quantised copy was made
    Matrix* matrices = (Matrix*)&draft->serving;
    int m = 0;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        if (info->cols == 1) { continue; }
        if (draft_serving_quantises(info, draft->serving_type)) { draft->backend->free_matrix(matrices[m]); }
        m++;
    }
}

// The serving copy in serving_type (a host-memory backend: upload_matrix reads the bytes in
// place, or keeps a form of its own). Each matrix tensor (cols > 1; DraftMatrices lists them in table
// order) is quantised exactly as quantize_row does (quantize_rows_fast: in parallel, vectorised); a matrix
// whose rows are not whole blocks of the type stays fp32.
static void draft_quantise_serving_copy(Draft* draft) {
    const Backend* b = draft->backend;
    int type = draft->serving_type;
    double start = now_seconds();
    draft_free_serving_copy(draft);
    if (draft->serving_bytes == NULL) {
        size_t bytes = 0;
        for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
            const DraftTensorInfo* info = &draft->tensors[i];
            if (draft_serving_quantises(info, type)) { bytes += (size_t)info->rows * tensor_bytes(type, info->cols); }
        }
        draft->serving_bytes = mallocCheck(bytes > 0 ? bytes : 1);
    }
    Matrix* matrices = (Matrix*)&draft->serving; // DraftMatrices is all Matrix, the matrix tensors in table order
    uint8_t* cursor = draft->serving_bytes;
    int m = 0;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        if (info->cols == 1) { continue; }
        const float* weights = *info->data;
        if (!draft_serving_quantises(info, type)) { matrices[m++] = matrix_f32(weights); continue; }
        quantize_rows_fast(type, weights, cursor, info->rows, info->cols);
        matrices[m++] = b->upload_matrix(cursor, type, info->rows, info->cols);
        cursor += (size_t)info->rows * tensor_bytes(type, info->cols);
    }
    draft->serving_updates++;
    draft->serving_seconds += now_seconds() - start;
}

void draft_upload_weights(Draft* draft) {
    const Backend* b = draft->backend;
    if (b->host_memory) {
        draft->device_weights = draft->weights; // the host weights themselves
    } else {
        if (draft->device_arena == NULL) { draft->device_arena = b->alloc(draft->n_weight_floats * sizeof(float)); }
        // the host weights may be bound to another arena (a published copy): the table's first entry is its start
        const float* bound_arena = *draft->tensors[0].data;
        b->upload(draft->device_arena, bound_arena, draft->n_weight_floats * sizeof(float));
        float** device_pointers = (float**)&draft->device_weights; // DraftWeights is all float*, in table order
        const float* cursor = draft->device_arena;
        for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
            device_pointers[i] = (float*)cursor;
            cursor += draft->tensors[i].n_elements;
        }
    }
    // a serving draft: its matrices follow (a quantised copy only on host-memory tables, which read it in place)
    if (draft->serving_type != TYPE_F32 && b->host_memory) { draft_quantise_serving_copy(draft); }
    else { draft->serving = draft_matrices_f32(&draft->device_weights); }
}

void draft_serve_as(Draft* draft, int type) {
    draft_free_serving_copy(draft);   // (freed in the type it was made in)
    free(draft->serving_bytes);       // (its size follows the type)
    draft->serving_bytes = NULL;
    draft->serving_type = type;
    draft_upload_weights(draft);
}

void draft_use_weights(Draft* draft, float* arena) {
    draft_bind_arena(draft, arena);
    draft_upload_weights(draft);
}

void draft_use_vocabulary(Draft* draft, const int32_t* d2t) {
    int V_d = draft->config.vocab_size;
    if (memcmp(draft->d2t, d2t, (size_t)V_d * sizeof(int32_t)) == 0) { return; } // the usual case: unchanged
    for (int i = 0; i < V_d; i++) { draft->t2d[draft->d2t[i]] = -1; }
    for (int i = 0; i < V_d; i++) {
        draft->d2t[i] = d2t[i];
        draft->t2d[d2t[i]] = i;
    }
}

void draft_copy_weights(Draft* copy, const Draft* source) {
    memset(copy, 0, sizeof(*copy));
    copy->config = source->config;
    copy->n_weight_floats = source->n_weight_floats;
    copy->weight_arena = mallocCheck(source->n_weight_floats * sizeof(float));
    memcpy(copy->weight_arena, *source->tensors[0].data, source->n_weight_floats * sizeof(float)); // the bound arena
    draft_build_tensor_table(copy);
    draft_bind_arena(copy, copy->weight_arena);
    int V_d = source->config.vocab_size, V = source->config.target_vocab_size;
    copy->d2t = mallocCheck((size_t)V_d * sizeof(int32_t));
    memcpy(copy->d2t, source->d2t, (size_t)V_d * sizeof(int32_t));
    copy->t2d = mallocCheck((size_t)V * sizeof(int32_t));
    memcpy(copy->t2d, source->t2d, (size_t)V * sizeof(int32_t));
    copy->backend = source->backend;
    copy->target_embedding = source->target_embedding;
}

// ----------------------------------------------------------------------------
// draft model: state

void draft_activations_alloc(DraftActivations* a, const Backend* backend, const DraftConfig* c, int max_tokens,
                             int mask_columns) {
    size_t T = (size_t)max_tokens, C = (size_t)c->dim, F = (size_t)c->ffn_dim, V_d = (size_t)c->vocab_size;
    size_t QD = (size_t)c->n_heads * c->head_size, KVD = (size_t)c->n_kv_heads * c->head_size;
    a->max_tokens = max_tokens;
    a->mask_columns = mask_columns;
    ActivationInfo table[DRAFT_NUM_ACTIVATIONS] = {
        {"tokens",     ELEMENT_I32, T, 1,                       (void**)&a->tokens},
        {"positions",  ELEMENT_I32, T, 1,                       (void**)&a->positions},
        {"mask",       ELEMENT_U8,  T, (size_t)mask_columns,    (void**)&a->mask},
        {"features",   ELEMENT_F32, T, TAP_LAYERS * C,          (void**)&a->features},
        {"u",          ELEMENT_F32, T, C,                       (void**)&a->u},
        {"embed",      ELEMENT_F32, T, C,                       (void**)&a->embed},
        {"attn_in",    ELEMENT_F32, T, 2 * C,                   (void**)&a->attn_in},
        {"q",          ELEMENT_F32, T, QD,                      (void**)&a->q},
        {"k",          ELEMENT_F32, T, KVD,                     (void**)&a->k},
        {"v",          ELEMENT_F32, T, KVD,                     (void**)&a->v},
        {"attn_out",   ELEMENT_F32, T, QD,                      (void**)&a->attn_out},
        {"proj",       ELEMENT_F32, T, C,                       (void**)&a->proj},
        {"h",          ELEMENT_F32, T, C,                       (void**)&a->h},
        {"h_norm",     ELEMENT_F32, T, C,                       (void**)&a->h_norm},
        {"ffn_gate",   ELEMENT_F32, T, F,                       (void**)&a->ffn_gate},
        {"ffn_up",     ELEMENT_F32, T, F,                       (void**)&a->ffn_up},
        {"ffn_hidden", ELEMENT_F32, T, F,                       (void**)&a->ffn_hidden},
        {"out",        ELEMENT_F32, T, C,                       (void**)&a->out},
        {"out_norm",   ELEMENT_F32, T, C,                       (void**)&a->out_norm},
        {"logits",     ELEMENT_F32, T, V_d,                     (void**)&a->logits},
    };
    for (int i = 0; i < DRAFT_NUM_ACTIVATIONS; i++) {
        a->table[i] = table[i];
        *table[i].data = backend->alloc(table[i].rows * table[i].cols * element_size(table[i].kind));
    }
}

void draft_activations_free(DraftActivations* a, const Backend* backend) {
    if (a->max_tokens > 0) {
        for (int i = 0; i < DRAFT_NUM_ACTIVATIONS; i++) { backend->free(*a->table[i].data); }
    }
    memset(a, 0, sizeof(*a));
}

static void draft_free_state(Draft* draft) {
    if (draft->cache_capacity == 0) { return; }
    const Backend* b = draft->backend;
    backend_free_host_buffer(b, draft->host.mask);
    backend_free_host_buffer(b, draft->host.out);
    backend_free_host_buffer(b, draft->host.logits);
    memset(&draft->host, 0, sizeof(draft->host));
    draft_activations_free(&draft->act, b);
    b->free(draft->key_cache);
    b->free(draft->value_cache);
    draft->key_cache = NULL;
    draft->value_cache = NULL;
    draft->cache_capacity = 0;
}

void draft_alloc_state(Draft* draft, int cache_capacity, int max_tokens) {
    DraftConfig* c = &draft->config;
    if (cache_capacity < 1 || draft->backend == NULL) {
        fprintf(stderr, "error: draft_alloc_state: cache capacity %d (expected at least 1 slot), backend %s (expected the "
                "target's, from draft_init_random or draft_load)\n", cache_capacity, draft->backend ? draft->backend->name : "none");
        exit(EXIT_FAILURE); // a program bug
    }
    draft_free_state(draft); // calling it again resizes
    if (max_tokens <= 0 || max_tokens > cache_capacity) { max_tokens = cache_capacity; }
    const Backend* b = draft->backend;
    size_t KVD = (size_t)c->n_kv_heads * c->head_size, T = (size_t)max_tokens;
    draft->cache_capacity = cache_capacity;
    draft->key_cache = b->alloc((size_t)cache_capacity * KVD * sizeof(float));
    draft->value_cache = b->alloc((size_t)cache_capacity * KVD * sizeof(float));
    draft_activations_alloc(&draft->act, b, c, max_tokens, cache_capacity);
    draft->host.mask = backend_host_buffer(b, draft->act.mask, T * cache_capacity);
    draft->host.out = backend_host_buffer(b, draft->act.out, T * c->dim * sizeof(float));
    draft->host.logits = backend_host_buffer(b, draft->act.logits, T * c->vocab_size * sizeof(float));
    draft_serve_as(draft, b->draft_type); // it serves now: its matrices in the backend's serving type
}

void draft_free(Draft* draft) {
    draft_free_state(draft);
    if (draft->device_arena != NULL) { draft->backend->free(draft->device_arena); }
    draft_free_serving_copy(draft);
    free(draft->serving_bytes);
    free(draft->weight_arena);
    free(draft->d2t);
    free(draft->t2d);
    memset(draft, 0, sizeof(*draft));
}

// ----------------------------------------------------------------------------
// draft model: forward, written once on the backend's ops

// The decoder layer over T rows, up to the layer output a->out (the next step's u). Every pointer is
// backend memory: w the backend's weights, tokens / positions / mask the call's (mask (T, n_past + T),
// the full mask), u the hidden input (copied into a->u first, so it may be the previous step's out).
// Keys and values of the rows go to key_buffer / value_buffer rows [n_past, n_past + T). The serving
// forward and the training unroll (trainer.c) both run exactly this.
// Rows [0, first_out) only extend the cache: a row's key and value are projections of its own input (its
// token's embedding and its u), never of the other rows, so they are computed for every row, and the rest
// of the layer (the query, attention, wo, the MLP) for rows [first_out, T) alone; a->out holds those
// T - first_out rows. A catch-up over committed tokens needs only the last row's output (draft_extend):
// the others' would be the query, attention, wo and MLP of rows nobody reads (the default model's draft:
// 89% of a row's multiply-adds in the layer, 72% counting fc's projection, which every row needs). Each
// row's result does not depend on the other rows of a call (every table's contract but OpenBLAS's, whose
// sgemm blocks by the rows), so a row's output is the same bits either way (tests/test_draft.c,
// tests/test_backends.c).
void draft_layer_forward(const Draft* draft, const DraftWeights* w, const DraftMatrices* m, DraftActivations* a,
                         float* key_buffer, float* value_buffer, const int* tokens, const float* u, const int* positions,
                         const uint8_t* mask, int T, int n_past, int first_out) {
    const Backend* b = draft->backend;
    DraftMatrices f32;
    if (m == NULL) { f32 = draft_matrices_f32(w); m = &f32; }
    const DraftConfig* c = &draft->config;
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim;
    int V = c->target_vocab_size, QD = NH * HS, KVD = NKV * HS, P = n_past + T, R = T - first_out;
    if (first_out < 0 || first_out >= T) {
        fprintf(stderr, "error: draft_layer_forward called with first_out=%d for T=%d rows (expected 0 <= first_out < T)\n",
                first_out, T);
        exit(EXIT_FAILURE); // a program bug: callers pass 0 or T - 1
    }

    // inputs: u, and e_t, the target's embedding of tokens[t]
    b->copy(a->u, u, (size_t)T * C * sizeof(float));
    b->embedding_forward(a->embed, tokens, draft->target_embedding, T, C, V);
    // attn_in row t = [RMSNorm_e(e_t), RMSNorm_u(u_t)]: each norm over all rows into proj (free until the
    // output projection below), then copied into its half of attn_in
    b->rmsnorm_forward(a->proj, a->embed, w->embed_norm, T, C, c->norm_eps);
    b->copy_strided(a->attn_in, a->proj, T, C, 2 * C, C);
    b->rmsnorm_forward(a->proj, a->u, w->hidden_norm, T, C, c->norm_eps);
    b->copy_strided(a->attn_in + C, a->proj, T, C, 2 * C, C);

    // attention block: h = u + wo(attention(rope(wq a_in), rope(wk a_in), wv a_in)), over rows [first_out, T)
    if (first_out == 0) {   // (the three in one call: the input prepared once, one parallel region)
        float* qkv[3] = {a->q, a->k, a->v};
        backend_matmuls(b, qkv, a->attn_in, (Matrix[3]){m->wq, m->wk, m->wv}, (int[3]){QD, KVD, KVD}, 3, T, 2 * C);
    } else {
        float* kv[2] = {a->k, a->v};
        backend_matmuls(b, kv, a->attn_in, (Matrix[2]){m->wk, m->wv}, (int[2]){KVD, KVD}, 2, T, 2 * C);
        b->matmul_forward(a->q, a->attn_in + (size_t)first_out * 2 * C, m->wq, R, 2 * C, QD);
    }
    b->rope_forward(a->q, a->q, positions + first_out, R, NH, HS, c->rope_theta);
    b->rope_forward(a->k, a->k, positions, T, NKV, HS, c->rope_theta);
    CacheLayout layout = cache_by_slot(NKV, HS);   // (the trainer's buffers are slot by slot too)
    b->cache_store(key_buffer, value_buffer, a->k, a->v, layout, T, n_past, NKV, HS);
    b->attention_forward(a->attn_out, a->q, key_buffer, value_buffer, mask + (size_t)first_out * P, R, P, NH, NKV, HS,
                         layout);
    b->matmul_forward(a->proj, a->attn_out, m->wo, R, QD, C);
    b->residual_forward(a->h, a->u + (size_t)first_out * C, a->proj, R * C);

    // MLP block: out = h + w_down(silu(w_gate n) * w_up n), n = RMSNorm_ffn(h)
    b->rmsnorm_forward(a->h_norm, a->h, w->ffn_norm, R, C, c->norm_eps);
    float* gate_up[2] = {a->ffn_gate, a->ffn_up};
    backend_matmuls(b, gate_up, a->h_norm, (Matrix[2]){m->w_gate, m->w_up}, (int[2]){F, F}, 2, R, C);
    b->swiglu_forward(a->ffn_hidden, a->ffn_gate, a->ffn_up, R * F);
    b->matmul_forward(a->proj, a->ffn_hidden, m->w_down, R, F, C);
    b->residual_forward(a->out, a->h, a->proj, R * C);
}

// The LM head over the draft vocabulary: logits (T, V_d) = lm_head(RMSNorm_out(out)); out_norm (T, C).
// Backend memory, as draft_layer_forward.
void draft_head_forward(const Draft* draft, const DraftWeights* w, const DraftMatrices* m, float* logits,
                        float* out_norm, const float* out, int T) {
    const Backend* b = draft->backend;
    const DraftConfig* c = &draft->config;
    b->rmsnorm_forward(out_norm, out, w->output_norm, T, c->dim, c->norm_eps);
    b->matmul_forward(logits, out_norm, m != NULL ? m->lm_head : matrix_f32(w->lm_head), T, c->dim, c->vocab_size);
}

void draft_project_features(Draft* draft, float* u, const float* features, int T) {
    // u: (T, C) host; features: (T, 3C) host; fc: (C, 3C)
    const Backend* b = draft->backend;
    DraftActivations* a = &draft->act;
    int C = draft->config.dim;
    if (T < 1 || T > a->max_tokens) {
        fprintf(stderr, "error: draft_project_features called with T=%d (max %d per call)\n", T, a->max_tokens);
        exit(EXIT_FAILURE); // callers chunk their rows; reaching here is a program bug
    }
    b->upload(a->features, features, (size_t)T * TAP_LAYERS * C * sizeof(float));
    b->matmul_forward(a->u, a->features, draft->serving.fc, T, TAP_LAYERS * C, C);
    b->download(u, a->u, (size_t)T * C * sizeof(float));
}

// The layer over T rows with the outputs of rows [first_out, T) (draft_layer_forward; host.out from its row
// 0), and the head over rows [head_first, T) (first_out <= head_first; host.logits from its row 0).
static void draft_forward_rows(Draft* draft, const int* tokens, const float* u, const int* positions,
                               const uint8_t* mask, int T, int n_past, int first_out, int head_first) {
    const Backend* b = draft->backend;
    DraftActivations* a = &draft->act;
    int C = draft->config.dim, V = draft->config.target_vocab_size, V_d = draft->config.vocab_size;
    int S = draft->cache_capacity, P = n_past + T;
    if (T < 1 || T > a->max_tokens || n_past < 0 || P > S) {
        fprintf(stderr, "error: draft_forward called with T=%d n_past=%d (max %d tokens per call, %d cache slots)\n",
                T, n_past, a->max_tokens, S);
        exit(EXIT_FAILURE); // callers check these bounds first; reaching here is a program bug
    }
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= V) {
            fprintf(stderr, "error: draft_forward: token %d is %d, expected a target id in [0, %d)\n", t, tokens[t], V);
            exit(EXIT_FAILURE); // as above
        }
    }
    // the call's inputs (u first: it may be host.out, which this call overwrites) and its (T, P) mask
    b->upload(a->u, u, (size_t)T * C * sizeof(float));
    b->upload(a->tokens, tokens, (size_t)T * sizeof(int));
    b->upload(a->positions, positions, (size_t)T * sizeof(int));
    build_attention_mask(draft->host.mask, mask, T, n_past);
    b->upload(a->mask, draft->host.mask, (size_t)T * P);
    draft_layer_forward(draft, &draft->device_weights, &draft->serving, a, draft->key_cache, draft->value_cache, a->tokens,
                        a->u, a->positions, a->mask, T, n_past, first_out);
    draft_head_forward(draft, &draft->device_weights, &draft->serving, a->logits, a->out_norm,
                       a->out + (size_t)(head_first - first_out) * C, T - head_first);
    b->download(draft->host.out, a->out, (size_t)(T - first_out) * C * sizeof(float));
    b->download(draft->host.logits, a->logits, (size_t)(T - head_first) * V_d * sizeof(float));
}

void draft_forward(Draft* draft, const int* tokens, const float* u, const int* positions,
                   const uint8_t* mask, int T, int n_past) {
    draft_forward_rows(draft, tokens, u, positions, mask, T, n_past, 0, 0);
}

void draft_extend(Draft* draft, const int* tokens, const float* u, const int* positions, int T, int n_past) {
    draft_forward_rows(draft, tokens, u, positions, NULL, T, n_past, T - 1, T - 1);   // (T < 1 is refused there)
}
