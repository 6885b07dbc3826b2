/*
test_draft.c: the EAGLE-3 draft model (draft.c) over a project-made tiny target.

  - init: config copied from the target, the d2t / t2d maps (given, default, full vocabulary),
    norms 1 and matrices with variance about 1/fan_in
  - checkpoints: save -> load gives every tensor bit for bit, the config and the maps; loading into a
    target of another width or vocabulary fails naming the key; malformed checkpoints fail naming
    the tensor or key that is wrong
  - the multi-token causal forward equals the same inputs one at a time
  - a tree-masked call with repeated positions gives each node the result of its path run alone
  - one forward recomputed independently with plain double loops (complex-number RoPE)
  - the OpenBLAS path equals the reference path
*/
#define TESTING
#include <unistd.h>
#include <complex.h>
#include "../aurora.c"
#include "test_common.h"

static char temp_dir[256];

static const char* temp_path(const char* name) {
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s.gguf", temp_dir, name);
    return path;
}

// the target: grouped-query attention (2 query heads per key/value head), untied LM head
#define TARGET_SPEC_LABEL "target"
static const TinyModelSpec TARGET_SPEC = {48, 4, 4, 2, 80, 300, 128, 0, TYPE_F32, 10000.0f, 1};

static int load_tiny_target(Target* target, const char* label, TinyModelSpec spec) {
    Error err;
    const char* path = temp_path(label);
    check(tiny_model_write(path, &spec, &err) == 0, "%s: write: %s", label, err.message);
    if (target_load(target, path, &backend_cpu_ref, 64, 16, &err) != 0) { // the draft's semantics, on the oracle
        check(0, "%s: load: %s", label, err.message);
        return -1;
    }
    return 0;
}

// Every tensor random (norms 1 +- 0.3, so swapping two norms changes the output), lm_head full size.
static void randomize_draft_weights(Draft* draft, uint64_t seed) {
    uint64_t rng = random_seed_state(seed);
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        float* values = *info->data;
        float scale = info->cols == 1 ? 0.3f : sqrtf(3.0f / info->cols);
        for (size_t j = 0; j < info->n_elements; j++) {
            float u = test_uniform(&rng, -1.0f, 1.0f);
            values[j] = info->cols == 1 ? 1.0f + scale * u : scale * u;
        }
    }
}

static void reset_draft_cache(Draft* draft) {
    size_t n = (size_t)draft->cache_capacity * draft->config.n_kv_heads * draft->config.head_size;
    memset(draft->key_cache, 0, n * sizeof(float));
    memset(draft->value_cache, 0, n * sizeof(float));
}

static int* test_tokens(int n, int V, uint64_t seed) {
    int* tokens = mallocCheck((size_t)n * sizeof(int));
    uint64_t rng = random_seed_state(seed);
    for (int i = 0; i < n; i++) { tokens[i] = (int)(random_u32(&rng) % (uint32_t)V); }
    return tokens;
}

// u for T tokens the way the system makes it: the target's taps, projected by fc.
static float* u_from_target(Draft* draft, Target* target, const int* tokens, int T) {
    int C = draft->config.dim;
    int* positions = mallocCheck((size_t)T * sizeof(int));
    for (int t = 0; t < T; t++) { positions[t] = t; }
    memset(target->key_cache, 0, (size_t)target->config.n_layers * target->cache_capacity *
                                 target->config.n_kv_heads * target->config.head_size * sizeof(float));
    target_forward(target, tokens, positions, NULL, T, 0, 0);
    float* hidden = mallocCheck((size_t)T * C * sizeof(float));
    draft_project_features(draft, hidden, target->host.features, T);
    // fc(g) by hand for one row: the projection reads the (T, 3C) taps row by row
    float* expected = mallocCheck((size_t)C * sizeof(float));
    matmul_forward_cpu(expected, target->host.features + (size_t)(T - 1) * 3 * C, matrix_f32(draft->weights.fc), 1, 3 * C, C);
    check_tensor("draft_project_features last row", hidden + (size_t)(T - 1) * C, expected, C, tolerance("reorder"));
    free(expected);
    free(positions);
    return hidden;
}

// ---- init ------------------------------------------------------------------------------------
static void check_vocabulary_maps(const Draft* draft, const char* label) {
    int V = draft->config.target_vocab_size, V_draft = draft->config.vocab_size;
    int inside = 0, consistent = 1;
    for (int i = 0; i < V_draft; i++) { consistent &= draft->t2d[draft->d2t[i]] == i; }
    for (int id = 0; id < V; id++) {
        if (draft->t2d[id] == -1) { continue; }
        inside++;
        consistent &= draft->t2d[id] >= 0 && draft->t2d[id] < V_draft && draft->d2t[draft->t2d[id]] == id;
    }
    check(consistent && inside == V_draft, "%s: d2t and t2d are not inverse maps (%d ids inside, expected %d)",
          label, inside, V_draft);
}

static void test_init(Target* target) {
    const TargetConfig* tc = &target->config;
    int V = tc->vocab_size;
    Draft draft;

    // default vocabulary: the lowest ids
    draft_init_random(&draft, target, 100, NULL, 7);
    DraftConfig* c = &draft.config;
    check(c->dim == tc->dim && c->n_heads == tc->n_heads && c->n_kv_heads == tc->n_kv_heads &&
          c->head_size == tc->head_size && c->ffn_dim == tc->ffn_dim && c->vocab_size == 100 &&
          c->target_vocab_size == V && c->rope_theta == tc->rope_theta && c->norm_eps == tc->norm_eps,
          "init: config not copied from the target");
    check(draft.target_embedding.data == target->weights.token_embedding.data && draft.backend == target->backend,
          "init: target_embedding must be the target's table, on its backend");
    int lowest = 1;
    for (int i = 0; i < 100; i++) { lowest &= draft.d2t[i] == i; }
    for (int id = 0; id < V; id++) { lowest &= draft.t2d[id] == (id < 100 ? id : -1); }
    check(lowest, "init: d2t NULL must give the 100 lowest ids");
    check_vocabulary_maps(&draft, "init default");
    size_t counted = 0;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft.tensors[i];
        counted += info->n_elements;
        const float* values = *info->data;
        check(values >= draft.weight_arena && values + info->n_elements <= draft.weight_arena + draft.n_weight_floats,
              "init: %s lies outside the arena", info->gguf_name);
        if (info->cols == 1) {
            int ones = 1;
            for (size_t j = 0; j < info->n_elements; j++) { ones &= values[j] == 1.0f; }
            check(ones, "init: norm %s must be all ones", info->gguf_name);
            continue;
        }
        double sum = 0.0, sum_squares = 0.0;
        for (size_t j = 0; j < info->n_elements; j++) { sum += values[j]; sum_squares += (double)values[j] * values[j]; }
        double mean = sum / info->n_elements, variance = sum_squares / info->n_elements - mean * mean;
        double expected = 1.0 / info->cols;
        if (info->data == &draft.weights.lm_head) { expected *= 0.01; } // the LM head is 10x smaller
        check(fabs(mean) < 0.1 * sqrt(expected) + 1e-3 && variance > 0.8 * expected && variance < 1.2 * expected,
              "init: %s has mean %g variance %g, expected about 0 and %g", info->gguf_name, mean, variance, expected);
    }
    check(counted == draft.n_weight_floats, "init: table covers %zu floats, arena has %zu", counted, draft.n_weight_floats);
    check(draft.tensors[0].rows == tc->dim && draft.tensors[0].cols == 3 * tc->dim, "init: fc must be (C, 3C)");
    check(draft.tensors[3].cols == 2 * tc->dim, "init: wq must read the 2C-wide concat");
    // the same seed gives the same weights, another seed other weights
    Draft again;
    draft_init_random(&again, target, 100, NULL, 7);
    check(memcmp(again.weight_arena, draft.weight_arena, draft.n_weight_floats * sizeof(float)) == 0,
          "init: the same seed must give the same weights");
    draft_free(&again);
    draft_init_random(&again, target, 100, NULL, 8);
    check(memcmp(again.weight_arena, draft.weight_arena, draft.n_weight_floats * sizeof(float)) != 0,
          "init: another seed must give other weights");
    draft_free(&again);
    draft_free(&draft);

    // a given vocabulary: 50 scattered ids (7i + 3 mod 300 is one-to-one since gcd(7, 300) = 1)
    int32_t d2t[50];
    for (int i = 0; i < 50; i++) { d2t[i] = (7 * i + 3) % V; }
    draft_init_random(&draft, target, 50, d2t, 9);
    check(memcmp(draft.d2t, d2t, sizeof(d2t)) == 0, "init: d2t not copied");
    check_vocabulary_maps(&draft, "init given d2t");
    check(draft.t2d[3] == 0 && draft.t2d[10] == 1 && draft.t2d[0] == -1, "init: t2d of a given map");
    draft_free(&draft);

    // the full vocabulary
    draft_init_random(&draft, target, V, NULL, 10);
    check_vocabulary_maps(&draft, "init full vocabulary");
    check(draft.tensors[DRAFT_NUM_TENSORS - 1].rows == V, "init: lm_head must have V_d rows");
    draft_free(&draft);

    // draft_free is safe on a zeroed struct and twice in a row
    Draft zero;
    memset(&zero, 0, sizeof(zero));
    draft_free(&zero);
    draft_free(&zero);
    check(1, "draft_free on a zeroed struct");
}

// ---- checkpoints -----------------------------------------------------------------------------
static void test_round_trip(Target* target, Target* other_width, Target* other_vocabulary) {
    int V = target->config.vocab_size;
    int32_t d2t[120];
    for (int i = 0; i < 120; i++) { d2t[i] = (int32_t)((11 * i + 5) % V); }
    Draft draft, loaded;
    draft_init_random(&draft, target, 120, d2t, 21);
    randomize_draft_weights(&draft, 22);
    Error err;
    const char* path = temp_path("draft");
    check(draft_save(&draft, path, &err) == 0, "save: %s", err.message);
    if (draft_load(&loaded, path, target, &err) != 0) {
        check(0, "load: %s", err.message);
        draft_free(&draft);
        return;
    }
    check(memcmp(&loaded.config, &draft.config, sizeof(DraftConfig)) == 0, "round trip: config differs");
    check(memcmp(loaded.d2t, draft.d2t, sizeof(d2t)) == 0, "round trip: d2t differs");
    check(memcmp(loaded.t2d, draft.t2d, (size_t)V * sizeof(int32_t)) == 0, "round trip: t2d differs");
    check(loaded.target_embedding.data == target->weights.token_embedding.data && loaded.backend == target->backend,
          "round trip: target_embedding");
    check(loaded.n_weight_floats == draft.n_weight_floats, "round trip: arena size");
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* a = &draft.tensors[i];
        const DraftTensorInfo* b = &loaded.tensors[i];
        check(strcmp(a->gguf_name, b->gguf_name) == 0 && a->rows == b->rows && a->cols == b->cols,
              "round trip: table row %d differs", i);
        check_tensor(a->gguf_name, *b->data, *a->data, a->n_elements, tolerance("exact"));
    }
    draft_free(&loaded);

    // the draft must fit the target it is loaded for
    err.message[0] = '\0';
    check(draft_load(&loaded, path, other_width, &err) != 0 && strstr(err.message, "aurora.draft.dim") &&
          strstr(err.message, path), "load into a target of another width: message '%s'", err.message);
    err.message[0] = '\0';
    check(draft_load(&loaded, path, other_vocabulary, &err) != 0 &&
          strstr(err.message, "aurora.draft.target_vocab_size") && strstr(err.message, path),
          "load into a target with another vocabulary: message '%s'", err.message);
    err.message[0] = '\0';
    check(draft_load(&loaded, temp_path("no-such-draft"), target, &err) != 0 && strstr(err.message, "no-such-draft"),
          "a missing file must fail naming the file: '%s'", err.message);
    err.message[0] = '\0';
    check(draft_load(&loaded, temp_path(TARGET_SPEC_LABEL), target, &err) != 0 &&
          strstr(err.message, "architecture"), "a target model is not a draft: message '%s'", err.message);
    draft_free(&draft);
}

// Rewrites a valid checkpoint with one thing wrong; loading must fail with a message naming it.
typedef struct {
    const char* drop_key;         // left out
    const char* int_key;          // replaced by int_value (uint32)
    int int_value;
    const char* architecture;     // general.architecture replaced
    int d2t_change;               // 1: a duplicate id, 2: an id = V, 3: a negative id, 4: one id short
    const char* drop_tensor;
    const char* transpose_tensor; // same element count, wrong shape
    const char* shrink_tensor;    // one row short
    int taps_change;              // aurora.draft.target_tap_layers: 1 another target's layers, 2 two layers only
} DraftMutation;

static void test_malformed_checkpoints(Target* target) {
    const struct { DraftMutation mutation; const char* expected_in_message; } cases[] = {
        {{.drop_key = "aurora.draft.head_count_kv"}, "aurora.draft.head_count_kv"},
        {{.drop_key = "aurora.draft.layer_norm_rms_epsilon"}, "aurora.draft.layer_norm_rms_epsilon"},
        {{.drop_key = "aurora.draft.d2t"}, "aurora.draft.d2t"},
        {{.int_key = "aurora.draft.head_count", .int_value = 5}, "aurora.draft.head_count"},
        {{.int_key = "aurora.draft.vocab_size", .int_value = 100000}, "aurora.draft.vocab_size"},
        {{.int_key = "aurora.draft.feed_forward_length", .int_value = 81}, "draft.ffn_gate.weight"},
        // rows times the widest row must fit the ops' int counts: refused before the tensors are read
        {{.int_key = "aurora.draft.feed_forward_length", .int_value = 1000000}, "widest activation row"},
        // the head size's own key: within 2 .. 2^16, even (RoPE), and the projections' shapes must follow it
        {{.int_key = "aurora.draft.attention.key_length", .int_value = 70000}, "aurora.draft.attention.key_length"},
        {{.int_key = "aurora.draft.attention.key_length", .int_value = 7}, "head size 7 is odd"},
        {{.int_key = "aurora.draft.attention.key_length", .int_value = 64}, "draft.attn_q.weight"},
        {{.architecture = "llama"}, "architecture"},
        {{.d2t_change = 1}, "aurora.draft.d2t"},
        {{.d2t_change = 2}, "aurora.draft.d2t"},
        {{.d2t_change = 3}, "aurora.draft.d2t"},
        {{.d2t_change = 4}, "aurora.draft.d2t"},
        {{.drop_tensor = "draft.attn_k.weight"}, "draft.attn_k.weight"},
        {{.drop_tensor = "draft.hidden_norm.weight"}, "draft.hidden_norm.weight"},
        {{.transpose_tensor = "draft.fc.weight"}, "draft.fc.weight"},
        {{.transpose_tensor = "draft.attn_k.weight"}, "draft.attn_k.weight"},
        {{.shrink_tensor = "draft.lm_head.weight"}, "draft.lm_head.weight"},
        // trained for a deeper target of the same width and vocabulary: fc would read other layers' features
        {{.taps_change = 1}, "is [1, 14, 26] (3 layers), but this target taps layers"},
        {{.taps_change = 2}, "(2 layers)"},
    };
    Draft draft;
    draft_init_random(&draft, target, 64, NULL, 31);
    Error err;
    const char* good_path = temp_path("draft-good");
    check(draft_save(&draft, good_path, &err) == 0, "save: %s", err.message);
    GGUFFile good;
    if (gguf_open(&good, good_path, &err) != 0) { check(0, "reopen: %s", err.message); draft_free(&draft); return; }
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const DraftMutation* m = &cases[k].mutation;
        GGUFWriter* writer = gguf_writer_new();
        const char* skip_keys[6] = {m->drop_key ? m->drop_key : "", m->int_key ? m->int_key : "",
                                    m->architecture ? "general.architecture" : "",
                                    m->d2t_change ? "aurora.draft.d2t" : "",
                                    m->taps_change ? "aurora.draft.target_tap_layers" : "", NULL};
        check(gguf_writer_copy_values(writer, &good, skip_keys, &err) == 0, "copy metadata: %s", err.message);
        if (m->int_key) { gguf_writer_add_uint32(writer, m->int_key, (uint32_t)m->int_value); }
        if (m->architecture) { gguf_writer_add_string(writer, "general.architecture", m->architecture); }
        if (m->d2t_change) {
            int32_t d2t[64];
            memcpy(d2t, draft.d2t, sizeof(d2t));
            if (m->d2t_change == 1) { d2t[10] = d2t[3]; }
            if (m->d2t_change == 2) { d2t[5] = target->config.vocab_size; }
            if (m->d2t_change == 3) { d2t[0] = -1; }
            gguf_writer_add_array(writer, "aurora.draft.d2t", GGUF_TYPE_INT32, d2t, m->d2t_change == 4 ? 63 : 64);
        }
        if (m->taps_change) {
            int32_t taps[3] = {1, 14, 26};   // SmolLM2's 30 layers
            gguf_writer_add_array(writer, "aurora.draft.target_tap_layers", GGUF_TYPE_INT32, taps, m->taps_change == 2 ? 2 : 3);
        }
        for (uint64_t i = 0; i < good.n_tensors; i++) {
            const GGUFTensor* t = &good.tensors[i];
            if (m->drop_tensor && strcmp(t->name, m->drop_tensor) == 0) { continue; }
            float* data = mallocCheck((size_t)t->n_elements * sizeof(float));
            gguf_tensor_to_f32(t, data);
            int64_t shape[GGUF_MAX_DIMS];
            memcpy(shape, t->shape, sizeof(shape));
            if (m->transpose_tensor && strcmp(t->name, m->transpose_tensor) == 0) { shape[0] = t->shape[1]; shape[1] = t->shape[0]; }
            if (m->shrink_tensor && strcmp(t->name, m->shrink_tensor) == 0) { shape[t->n_dims - 1] -= 1; }
            gguf_writer_add_tensor(writer, t->name, TYPE_F32, t->n_dims, shape, data);
            free(data);
        }
        const char* path = temp_path("draft-malformed");
        check(gguf_writer_save(writer, path, &err) == 0, "write malformed case %zu: %s", k, err.message);
        gguf_writer_free(writer);
        Draft loaded;
        err.message[0] = '\0';
        int status = draft_load(&loaded, path, target, &err);
        check(status != 0, "malformed draft case %zu (%s) loaded without error", k, cases[k].expected_in_message);
        check(strstr(err.message, cases[k].expected_in_message) != NULL && strstr(err.message, path) != NULL,
              "malformed draft case %zu: message '%s' should name '%s' and the file", k, err.message,
              cases[k].expected_in_message);
        if (status == 0) { draft_free(&loaded); }
    }
    // a checkpoint written before the key: its taps are the target's, unchecked (it loads, and saves with them)
    GGUFWriter* writer = gguf_writer_new();
    const char* without[2] = {"aurora.draft.target_tap_layers", NULL};
    check(gguf_writer_copy_values(writer, &good, without, &err) == 0, "copy metadata: %s", err.message);
    for (uint64_t i = 0; i < good.n_tensors; i++) { gguf_writer_add_tensor_from(writer, good.tensors[i].name, TYPE_F32, &good.tensors[i]); }
    const char* older = temp_path("draft-before-taps");
    check(gguf_writer_save(writer, older, &err) == 0, "write: %s", err.message);
    gguf_writer_free(writer);
    Draft loaded;
    if (draft_load(&loaded, older, target, &err) != 0) {
        check(0, "a checkpoint without aurora.draft.target_tap_layers should load: %s", err.message);
    } else {
        check(memcmp(loaded.config.target_taps, target->config.tap_layers, sizeof(loaded.config.target_taps)) == 0,
              "a checkpoint without the taps key takes the target's");
        draft_free(&loaded);
    }
    gguf_close(&good);
    draft_free(&draft);
}

// ---- causal batch == one at a time -------------------------------------------------------------
static void test_batch_equals_sequential(Draft* draft, Target* target) {
    int T = 7, V = target->config.vocab_size, C = draft->config.dim, V_draft = draft->config.vocab_size;
    int* tokens = test_tokens(T, V, 41);
    float* hidden = u_from_target(draft, target, tokens, T);
    int positions[7];
    for (int t = 0; t < T; t++) { positions[t] = t; }
    reset_draft_cache(draft);
    draft_forward(draft, tokens, hidden, positions, NULL, T, 0);
    float* batch_out = mallocCheck((size_t)T * C * sizeof(float));
    float* batch_logits = mallocCheck((size_t)T * V_draft * sizeof(float));
    memcpy(batch_out, draft->host.out, (size_t)T * C * sizeof(float));
    memcpy(batch_logits, draft->host.logits, (size_t)T * V_draft * sizeof(float));
    reset_draft_cache(draft);
    char what[128];
    for (int t = 0; t < T; t++) {
        draft_forward(draft, &tokens[t], hidden + (size_t)t * C, &positions[t], NULL, 1, t);
        snprintf(what, sizeof(what), "draft out of token %d, batch vs one at a time", t);
        check_tensor(what, draft->host.out, batch_out + (size_t)t * C, C, tolerance("layer"));
        snprintf(what, sizeof(what), "draft logits of token %d, batch vs one at a time", t);
        check_tensor(what, draft->host.logits, batch_logits + (size_t)t * V_draft, V_draft, tolerance("layer"));
    }
    // u may be act.out of the previous call (a draft step feeds its own output back)
    reset_draft_cache(draft);
    draft_forward(draft, tokens, hidden, positions, NULL, 1, 0);
    float* fed_back = mallocCheck((size_t)C * sizeof(float));
    memcpy(fed_back, draft->host.out, (size_t)C * sizeof(float));
    draft_forward(draft, &tokens[1], fed_back, &positions[1], NULL, 1, 1);
    memcpy(batch_out, draft->host.out, (size_t)C * sizeof(float));
    reset_draft_cache(draft);
    draft_forward(draft, tokens, hidden, positions, NULL, 1, 0);
    draft_forward(draft, &tokens[1], draft->host.out, &positions[1], NULL, 1, 1);
    check_tensor("draft step with u = act.out", draft->host.out, batch_out, C, tolerance("exact"));
    free(fed_back); free(tokens); free(hidden); free(batch_out); free(batch_logits);
}

// ---- tree mask with repeated positions ------------------------------------------------------
static void test_tree(Draft* draft, Target* target) {
    int C = draft->config.dim, V = target->config.vocab_size, V_draft = draft->config.vocab_size;
    int prefix = 4, n_nodes = 4;
    int* tokens = test_tokens(prefix + n_nodes, V, 51);
    float* hidden = u_from_target(draft, target, tokens, prefix + n_nodes);
    // the nodes' u: arbitrary rows (in a draft step they are the parents' outputs)
    uint64_t rng = random_seed_state(52);
    float* node_hidden = hidden + (size_t)prefix * C;
    fill_uniform(node_hidden, (size_t)n_nodes * C, &rng, -2.0f, 2.0f);
    const int* node_tokens = tokens + prefix;
    //      0 (pos 4)
    //     / \          .
    //    1   2 (pos 5)
    //    |
    //    3 (pos 6)
    int parent[4] = {-1, 0, 0, 1}, depth[4] = {0, 1, 1, 2};
    int positions[8], node_positions[4];
    uint8_t tree_mask[4 * (4 + 4)] = {0}; // (T, n_past + T): the whole prefix, then ancestors and self
    int P = prefix + n_nodes;
    for (int i = 0; i < prefix; i++) { positions[i] = i; }
    for (int i = 0; i < n_nodes; i++) {
        node_positions[i] = prefix + depth[i];
        memset(tree_mask + i * P, 1, (size_t)prefix);
        for (int j = i; j >= 0; j = parent[j]) { tree_mask[i * P + prefix + j] = 1; }
    }
    reset_draft_cache(draft);
    draft_forward(draft, tokens, hidden, positions, NULL, prefix, 0);
    draft_forward(draft, node_tokens, node_hidden, node_positions, tree_mask, n_nodes, prefix);
    float* tree_out = mallocCheck((size_t)n_nodes * C * sizeof(float));
    float* tree_logits = mallocCheck((size_t)n_nodes * V_draft * sizeof(float));
    memcpy(tree_out, draft->host.out, (size_t)n_nodes * C * sizeof(float));
    memcpy(tree_logits, draft->host.logits, (size_t)n_nodes * V_draft * sizeof(float));
    char what[128];
    for (int node = 0; node < n_nodes; node++) {
        int path[3], n_path = 0;
        for (int j = node; j >= 0; j = parent[j]) { path[n_path++] = j; }
        int sequence[8], sequence_positions[8];
        float* sequence_hidden = mallocCheck((size_t)(prefix + n_path) * C * sizeof(float));
        for (int i = 0; i < prefix; i++) {
            sequence[i] = tokens[i];
            memcpy(sequence_hidden + (size_t)i * C, hidden + (size_t)i * C, (size_t)C * sizeof(float));
        }
        for (int i = 0; i < n_path; i++) {
            int j = path[n_path - 1 - i];
            sequence[prefix + i] = node_tokens[j];
            memcpy(sequence_hidden + (size_t)(prefix + i) * C, node_hidden + (size_t)j * C, (size_t)C * sizeof(float));
        }
        for (int i = 0; i < prefix + n_path; i++) { sequence_positions[i] = i; }
        reset_draft_cache(draft);
        draft_forward(draft, sequence, sequence_hidden, sequence_positions, NULL, prefix + n_path, 0);
        int last = prefix + n_path - 1;
        snprintf(what, sizeof(what), "draft tree node %d out vs its path run alone", node);
        check_tensor(what, tree_out + (size_t)node * C, draft->host.out + (size_t)last * C, C, tolerance("layer"));
        snprintf(what, sizeof(what), "draft tree node %d logits vs its path run alone", node);
        check_tensor(what, tree_logits + (size_t)node * V_draft, draft->host.logits + (size_t)last * V_draft, V_draft,
                     tolerance("layer"));
        free(sequence_hidden);
    }
    free(tokens); free(hidden); free(tree_out); free(tree_logits);
}

// ---- one forward recomputed independently, in double ---------------------------------------
// y (rows) = W (rows, cols) x (cols)
static void reference_matvec(double* y, const float* W, const double* x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        double sum = 0.0;
        for (int c = 0; c < cols; c++) { sum += (double)W[(size_t)r * cols + c] * x[c]; }
        y[r] = sum;
    }
}
static void reference_rmsnorm(double* y, const double* x, const float* weight, int C, double eps) {
    double sum_squares = 0.0;
    for (int c = 0; c < C; c++) { sum_squares += x[c] * x[c]; }
    double scale = 1.0 / sqrt(sum_squares / C + eps);
    for (int c = 0; c < C; c++) { y[c] = x[c] * scale * weight[c]; }
}
// RoPE as a complex rotation: the pair (x[2i], x[2i+1]) is x[2i] + i x[2i+1], multiplied by
// exp(i * position * theta^(-2i/HS)), in every head.
static void reference_rope(double* x, int n_heads, int HS, int position, double theta) {
    for (int h = 0; h < n_heads; h++) {
        for (int i = 0; i < HS / 2; i++) {
            double* pair = x + (size_t)h * HS + 2 * i;
            double complex z = pair[0] + I * pair[1];
            z *= cexp(I * position * pow(theta, -2.0 * i / HS));
            pair[0] = creal(z);
            pair[1] = cimag(z);
        }
    }
}
// The attention-side inputs of one row: a_in = [RMSNorm_e(e), RMSNorm_u(u)], then k, v (k roped).
static void reference_row_kv(double* attn_in, double* k, double* v, const Draft* draft, int token, const float* u,
                             int position) {
    const DraftConfig* c = &draft->config;
    int C = c->dim, KVD = c->n_kv_heads * c->head_size;
    double e_row[64], u_row[64];
    for (int i = 0; i < C; i++) { e_row[i] = ((const float*)draft->target_embedding.data)[(size_t)token * C + i]; u_row[i] = u[i]; }
    reference_rmsnorm(attn_in, e_row, draft->weights.embed_norm, C, c->norm_eps);
    reference_rmsnorm(attn_in + C, u_row, draft->weights.hidden_norm, C, c->norm_eps);
    reference_matvec(k, draft->weights.wk, attn_in, KVD, 2 * C);
    reference_matvec(v, draft->weights.wv, attn_in, KVD, 2 * C);
    reference_rope(k, c->n_kv_heads, c->head_size, position, c->rope_theta);
}

static void test_independent_forward(Draft* draft, Target* target) {
    const DraftConfig* c = &draft->config;
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim, V_draft = c->vocab_size;
    int QD = NH * HS, KVD = NKV * HS;
    if (C > 64 || QD > 64 || KVD > 64 || F > 128) { check(0, "test bug: the fixed-size rows below are too small"); return; }
    // two calls: 2 tokens, then 3 more; recompute the last token of the second call (it sees 4 of the 5)
    int n_rows = 5, first_call = 2;
    int* tokens = test_tokens(n_rows, target->config.vocab_size, 61);
    float* hidden = mallocCheck((size_t)n_rows * C * sizeof(float));
    uint64_t rng = random_seed_state(62);
    fill_uniform(hidden, (size_t)n_rows * C, &rng, -3.0f, 3.0f);
    int positions[5] = {10, 11, 12, 13, 14};
    reset_draft_cache(draft);
    draft_forward(draft, tokens, hidden, positions, NULL, first_call, 0);
    // the second call's mask: causal, except that the last token does not see cached slot 1
    int T = n_rows - first_call, hidden_slot = 1;
    uint8_t mask[3 * 5];
    for (int t = 0; t < T; t++) {
        for (int p = 0; p < n_rows; p++) { mask[t * n_rows + p] = p <= first_call + t; }
    }
    mask[(T - 1) * n_rows + hidden_slot] = 0;
    draft_forward(draft, tokens + first_call, hidden + (size_t)first_call * C, positions + first_call, mask, T,
                  first_call);
    int row = n_rows - 1, row_in_call = T - 1;

    double attn_in[5][128], k[5][64], v[5][64];
    for (int j = 0; j < n_rows; j++) {
        reference_row_kv(attn_in[j], k[j], v[j], draft, tokens[j], hidden + (size_t)j * C, positions[j]);
    }
    double q[64], attention[64], projected[64], h[64], h_norm[64], gate[128], up[128], out[64], out_norm[64];
    reference_matvec(q, draft->weights.wq, attn_in[row], QD, 2 * C);
    reference_rope(q, NH, HS, positions[row], c->rope_theta);
    for (int head = 0; head < NH; head++) {
        int kv_head = head / (NH / NKV);
        double scores[5], max_score = -INFINITY, sum = 0.0;
        for (int j = 0; j <= row; j++) {
            if (j == hidden_slot) { scores[j] = -INFINITY; continue; }
            double dot = 0.0;
            for (int i = 0; i < HS; i++) { dot += q[head * HS + i] * k[j][kv_head * HS + i]; }
            scores[j] = dot / sqrt((double)HS);
            if (scores[j] > max_score) { max_score = scores[j]; }
        }
        for (int j = 0; j <= row; j++) { scores[j] = exp(scores[j] - max_score); sum += scores[j]; }
        for (int i = 0; i < HS; i++) {
            double weighted = 0.0;
            for (int j = 0; j <= row; j++) { weighted += scores[j] / sum * v[j][kv_head * HS + i]; }
            attention[head * HS + i] = weighted;
        }
    }
    reference_matvec(projected, draft->weights.wo, attention, C, QD);
    for (int i = 0; i < C; i++) { h[i] = hidden[(size_t)row * C + i] + projected[i]; }  // residual on u
    reference_rmsnorm(h_norm, h, draft->weights.ffn_norm, C, c->norm_eps);
    reference_matvec(gate, draft->weights.w_gate, h_norm, F, C);
    reference_matvec(up, draft->weights.w_up, h_norm, F, C);
    for (int i = 0; i < F; i++) { gate[i] = gate[i] / (1.0 + exp(-gate[i])) * up[i]; }
    reference_matvec(projected, draft->weights.w_down, gate, C, F);
    for (int i = 0; i < C; i++) { out[i] = h[i] + projected[i]; }                        // residual on h
    reference_rmsnorm(out_norm, out, draft->weights.output_norm, C, c->norm_eps);
    double* logits = mallocCheck((size_t)V_draft * sizeof(double));
    reference_matvec(logits, draft->weights.lm_head, out_norm, V_draft, C);

    float expected_out[64];
    float* expected_logits = mallocCheck((size_t)V_draft * sizeof(float));
    for (int i = 0; i < C; i++) { expected_out[i] = (float)out[i]; }
    for (int i = 0; i < V_draft; i++) { expected_logits[i] = (float)logits[i]; }
    check_tensor("draft out vs independent double recomputation", draft->host.out + (size_t)row_in_call * C,
                 expected_out, C, tolerance("layer"));
    check_tensor("draft logits vs independent double recomputation", draft->host.logits + (size_t)row_in_call * V_draft,
                 expected_logits, V_draft, tolerance("layer"));
    free(logits); free(expected_logits); free(tokens); free(hidden);
}

// ---- OpenBLAS vs reference ------------------------------------------------------------------
// draft_extend (the catch-up over committed tokens), two calls as serving makes them (the prompt, then tokens
// after it): check_extend (test_common.h), draft_forward's keys and values and its last row's out and logits
// bit for bit, extend running on NaN-filled activations
static void test_extend(Draft* draft, Target* target) {
    int T = 7, C = draft->config.dim;
    int* tokens = test_tokens(T, target->config.vocab_size, 83);
    float* hidden = u_from_target(draft, target, tokens, T);
    int positions[7] = {0, 1, 2, 3, 4, 5, 6};
    reset_draft_cache(draft);
    check_extend(draft, "draft", tokens, hidden, positions, 3, 0);
    check_extend(draft, "draft", tokens + 3, hidden + (size_t)3 * C, positions + 3, T - 3, 3);
    free(tokens); free(hidden);
}

static void test_blas(Draft* draft, Target* target) {
    int T = 6, C = draft->config.dim, V_draft = draft->config.vocab_size;
    int* tokens = test_tokens(T, target->config.vocab_size, 71);
    float* hidden = u_from_target(draft, target, tokens, T);
    int positions[6] = {0, 1, 2, 3, 4, 5};
    // the reference and OpenBLAS tables keep the same fp32 weights in host memory, so a test may switch a draft
    // between them (the fast tables: tests/test_backends.c)
    const Backend* saved = draft->backend;
    draft->backend = &backend_cpu_ref;
    reset_draft_cache(draft);
    draft_forward(draft, tokens, hidden, positions, NULL, T, 0);
    float* reference_out = mallocCheck((size_t)T * C * sizeof(float));
    float* reference_logits = mallocCheck((size_t)T * V_draft * sizeof(float));
    memcpy(reference_out, draft->host.out, (size_t)T * C * sizeof(float));
    memcpy(reference_logits, draft->host.logits, (size_t)T * V_draft * sizeof(float));
#ifdef USE_BLAS
    draft->backend = &backend_cpu_blas;
    reset_draft_cache(draft);
    draft_forward(draft, tokens, hidden, positions, NULL, T, 0);
    check_tensor("draft out, BLAS vs reference", draft->host.out, reference_out, (size_t)T * C, tolerance("layer"));
    check_tensor("draft logits, BLAS vs reference", draft->host.logits, reference_logits, (size_t)T * V_draft,
                 tolerance("layer"));
#endif
    draft->backend = saved;
    free(tokens); free(hidden); free(reference_out); free(reference_logits);
}

// The warm starts: LM head rows and final norm from the target (draft_init_from_target), and the decoder
// layer from the target's last layer (draft_init_from_target_layer), checked against the model file.
static void test_warm_starts(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 150, NULL, 9);
    draft_init_from_target(&draft, target);
    draft_init_from_target_layer(&draft, target);
    const DraftConfig* c = &draft.config;
    int C = c->dim, QD = c->n_heads * c->head_size, F = c->ffn_dim, last = target->config.n_layers - 1;
    Error err;
    char name[64];
    float* rows = mallocCheck((size_t)F * C * sizeof(float));
    snprintf(name, sizeof(name), "blk.%d.attn_q.weight", last);
    check(target_read_rows(target, name, NULL, QD, rows, &err) == 0, "read: %s", err.message);
    int bad = 0;
    for (int r = 0; r < QD; r++) {
        for (int j = 0; j < C; j++) {
            bad += draft.weights.wq[(size_t)r * 2 * C + j] != 0.0f;                       // the e half: zero
            bad += draft.weights.wq[(size_t)r * 2 * C + C + j] != rows[(size_t)r * C + j]; // the u half: the target's
        }
    }
    check(bad == 0, "warm start: wq is [0 | the target's last attn_q] (%d elements differ)", bad);
    snprintf(name, sizeof(name), "blk.%d.ffn_down.weight", last);
    check(target_read_rows(target, name, NULL, C, rows, &err) == 0, "read: %s", err.message);
    check(memcmp(draft.weights.w_down, rows, (size_t)C * F * sizeof(float)) == 0, "warm start: w_down is the target's");
    snprintf(name, sizeof(name), "blk.%d.attn_norm.weight", last);
    check(target_read_rows(target, name, NULL, 1, rows, &err) == 0, "read: %s", err.message);
    check(memcmp(draft.weights.hidden_norm, rows, (size_t)C * sizeof(float)) == 0 && draft.weights.embed_norm[0] == 1.0f,
          "warm start: hidden_norm is the target's attention norm, embed_norm 1");
    check(target_read_rows(target, target_output_name(target), draft.d2t, 1, rows, &err) == 0, "read: %s", err.message);
    check(memcmp(draft.weights.lm_head, rows, (size_t)C * sizeof(float)) == 0, "warm start: the LM head rows are the target's");
    free(rows);
    draft_free(&draft);
}

int main(void) {
    snprintf(temp_dir, sizeof(temp_dir), "/tmp/aurora_test_draft_%d", (int)getpid());
    Error mkdir_err;
    if (make_directories(temp_dir, &mkdir_err) != 0) { fprintf(stderr, "%s\n", mkdir_err.message); return 1; }
    Target target, other_width, other_vocabulary;
    TinyModelSpec spec = TARGET_SPEC;
    TinyModelSpec wider = TARGET_SPEC;
    wider.dim = 64;
    TinyModelSpec bigger_vocabulary = TARGET_SPEC;
    bigger_vocabulary.vocab_size = 320;
    if (load_tiny_target(&target, TARGET_SPEC_LABEL, spec) != 0 ||
        load_tiny_target(&other_width, "target-wider", wider) != 0 ||
        load_tiny_target(&other_vocabulary, "target-bigger-vocabulary", bigger_vocabulary) != 0) {
        return test_summary();
    }
    test_init(&target);
    test_round_trip(&target, &other_width, &other_vocabulary);
    test_malformed_checkpoints(&target);
    test_warm_starts(&target);

    // the forward tests: random weights everywhere (norms too), a draft vocabulary smaller than V
    Draft draft;
    int32_t d2t[200];
    for (int i = 0; i < 200; i++) { d2t[i] = (int32_t)((7 * i + 1) % target.config.vocab_size); }
    draft_init_random(&draft, &target, 200, d2t, 81);
    randomize_draft_weights(&draft, 82);
    draft_alloc_state(&draft, 32, 8);
    check(draft.act.max_tokens == 8 && draft.cache_capacity == 32, "alloc_state: capacity");
    test_batch_equals_sequential(&draft, &target);
    test_tree(&draft, &target);
    test_independent_forward(&draft, &target);
    test_extend(&draft, &target);
    test_blas(&draft, &target);
    draft_free(&draft);

    target_free(&target);
    target_free(&other_width);
    target_free(&other_vocabulary);
    if (remove_tree(temp_dir) != 0) { fprintf(stderr, "warning: could not remove %s\n", temp_dir); }
    return test_summary();
}
