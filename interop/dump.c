/*
interop/dump.c: `aurora dump`, one request taken apart: every named intermediate of the draft, the target's
verify pass over a tree, the acceptance decisions and one trainer step, written to ONE safetensors file,
so that another implementation (PyTorch, SGLang, SpecForge, a GPU port of this one) can check itself
against this one tensor by tensor (tools/compare_dump.py; tests/oracle_eagle3.py is such a check).

What runs (greedy, on one backend: the reference by default, --backend to pick another):
  1. the request: the prompt, then speculative generation of -n tokens with the draft (any draft --draft
     reads; default a seeded random one) and the tree shape given; its Record is what the trainer sees;
  2. its FIRST verify pass again, in detail: the prefill, the draft catching up over the prompt (the
     "extend" calls, u = fc(g)), the tree drafting depth by depth (the "expand" calls, u = the parent's
     output), the target's verify pass over the tree and greedy acceptance;
  3. one trainer step on the request's record: the TTT unroll step by step, each step's loss, the
     gradient of every draft tensor (before clipping and AdamW) and the weights after the step.
The drafting calls are replayed through draft_forward with the inputs the drafter used (the candidate
pool holds them) and checked bit for bit against what the drafter kept (an error otherwise), and the trainer
step's loss against trainer_step's: the file shows what the program computes, not a re-derivation. (One
exception: serving's catch-up, draft_extend, computes only the keys and values of an extend call's rows
before its last; the file shows the whole layer over them, and the last row is checked by running the last
extend call through draft_extend again.)

Conventions of the file (every tensor's name, shape and meaning is also in its "__metadata__" under
"aurora.dump.doc", and the run's configuration under "aurora.dump.config"; README "Check your
implementation against this one" has the table):
  - F32 for real values, I32 for integers, U8 for masks (1 = may attend). Shapes are PyTorch's (row-major).
  - Hugging Face layout throughout: the draft's weights under SpecForge's names, and every Q/K-derived
    tensor (q_proj / k_proj rows and their gradients, q, k, key caches) in rotate_half order (head h, index
    k*HS/2 + j holds our adjacent-pair element 2j + k), so a PyTorch implementation compares directly.
  - Positions are RoPE position ids; draft row t pairs the target's features at position t with the token
    at t + 1, at position t (EAGLE-3's alignment).

Included by aurora.c just before the command table: it uses the command helpers defined there
(load_target, check_output, resolve_tree_shape, loss_kind_from_name, fail) and, being in the same
translation unit, the drafter's candidate pool and the trainer's record_unroll.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// the file being built: tensors, and a JSON object of their meanings (metadata)

typedef struct {
    SafetensorsWriter writer;
    FILE* doc;              // open_memstream: {"name": "meaning", ...}
    char* doc_text;
    size_t doc_length;
    int n_documented;
    const Backend* backend;
} Dump;

static void dump_document(Dump* d, const char* name, const char* meaning) {
    fputs(d->n_documented++ ? ",\n" : "{\n", d->doc);
    json_write_string(d->doc, name);
    fputs(": ", d->doc);
    json_write_string(d->doc, meaning);
}

// A host array of n_dims dimensions, kind F32 / I32 / U8.
static void dump_add(Dump* d, const char* name, const char* meaning, ElementKind kind, int n_dims, const int64_t* shape,
                     const void* data) {
    size_t n = 1;
    for (int i = 0; i < n_dims; i++) { n *= (size_t)shape[i]; }
    const char* dtype = kind == ELEMENT_F32 ? "F32" : kind == ELEMENT_I32 ? "I32" : "U8";
    safetensors_writer_add(&d->writer, name, dtype, n_dims, shape, data, n * element_size(kind));
    dump_document(d, name, meaning);
}

// (a matrix stays [rows, cols] when it has one column: a one-token prompt's mask is [1, 1], not [1])
static void dump_add_2d(Dump* d, const char* name, const char* meaning, ElementKind kind, int64_t rows, int64_t cols,
                        const void* data) {
    int64_t shape[2] = {rows, cols};
    dump_add(d, name, meaning, kind, 2, shape, data);
}

static void dump_add_1d(Dump* d, const char* name, const char* meaning, ElementKind kind, int64_t n, const void* data) {
    int64_t shape[1] = {n};
    dump_add(d, name, meaning, kind, 1, shape, data);
}

static void dump_add_scalar_f32(Dump* d, const char* name, const char* meaning, float value) {
    int64_t shape[1] = {1};
    dump_add(d, name, meaning, ELEMENT_F32, 1, shape, &value);
}

static void dump_add_scalar_i32(Dump* d, const char* name, const char* meaning, int value) {
    int64_t shape[1] = {1};
    dump_add(d, name, meaning, ELEMENT_I32, 1, shape, &value);
}

// Our adjacent-pair RoPE layout to Hugging Face's rotate_half, in place, over the last dimension of a
// (rows, n_heads * HS) array: HF element h*HS + k*HS/2 + j = ours h*HS + 2j + k (eagle3_formats.c's
// permutation, applied to activations' columns instead of weights' rows).
static void dump_rope_to_hf(float* values, size_t rows, int n_heads, int head_size) {
    size_t width = (size_t)n_heads * head_size;
    float* row_copy = mallocCheck(width * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        float* row = values + r * width;
        memcpy(row_copy, row, width * sizeof(float));
        eagle3_permute_rope_rows(row, row_copy, n_heads, head_size, 1, 1);
    }
    free(row_copy);
}

// rows x cols of a backend buffer (kind), downloaded ([rows] where it is a vector: cols 1); rope_heads > 0: q/k
// columns to the HF layout.
static void dump_add_backend(Dump* d, const char* name, const char* meaning, ElementKind kind, size_t rows, size_t cols,
                             int vector, const void* buffer, int rope_heads, int head_size) {
    size_t bytes = rows * cols * element_size(kind);
    void* host = mallocCheck(bytes > 0 ? bytes : 1);
    d->backend->download(host, buffer, bytes);
    if (rope_heads > 0) { dump_rope_to_hf(host, rows, rope_heads, head_size); }
    if (vector) { dump_add_1d(d, name, meaning, kind, (int64_t)rows, host); }
    else { dump_add_2d(d, name, meaning, kind, (int64_t)rows, (int64_t)cols, host); }
    free(host);
}

// Whether an activation table's buffer is a vector (one value a row, dumped as [T]): the token ids and
// positions; a buffer added to a table after this file, if its table gives it one column. Not the shape at
// hand: a mask over one slot or logits over a vocabulary of one id are still matrices.
static int dump_buffer_is_vector(const char* table_name, int known, size_t table_cols) {
    if (strcmp(table_name, "tokens") == 0 || strcmp(table_name, "positions") == 0) { return 1; }
    return !known && table_cols == 1;
}

// ----------------------------------------------------------------------------
// the draft: its weights by SpecForge name, and its activation table

// The 13 tensors of an arena laid out by the draft's table (weights, gradients, updated weights), each
// under prefix + its SpecForge name, q_proj / k_proj rows in the HF layout.
static void dump_draft_arena(Dump* d, const Draft* draft, const float* arena, const char* prefix, const char* meaning) {
    const DraftConfig* c = &draft->config;
    size_t offset = 0;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        const Eagle3TensorName* names = &EAGLE3_TENSOR_NAMES[i];
        if (strcmp(names->ours, info->gguf_name) != 0) {
            fprintf(stderr, "error: internal: dump: the draft's tensor %d is '%s', interop's table says '%s'\n", i,
                    info->gguf_name, names->ours);
            exit(EXIT_FAILURE); // aurora.h's table changed without eagle3_formats.c: a program bug
        }
        const float* values = arena + offset;
        float* permuted = NULL;
        if (names->rope_rows != ROPE_ROWS_NONE) {
            permuted = mallocCheck(info->n_elements * sizeof(float));
            eagle3_permute_rope_rows(permuted, values, eagle3_rope_heads(c, names->rope_rows), c->head_size, info->cols, 1);
            values = permuted;
        }
        char name[160], text[320];
        snprintf(name, sizeof(name), "%s%s", prefix, names->specforge);
        snprintf(text, sizeof(text), "%s (our %s%s)", meaning, info->gguf_name,
                 names->rope_rows != ROPE_ROWS_NONE ? "; rows in Hugging Face rotate_half order" : "");
        if (info->cols == 1) { dump_add_1d(d, name, text, ELEMENT_F32, info->rows, values); }   // a norm's weight
        else { dump_add_2d(d, name, text, ELEMENT_F32, info->rows, info->cols, values); }
        free(permuted);
        offset += info->n_elements;
    }
}

// How each buffer of the draft's activation table is dumped.
typedef struct {
    const char* table_name;     // DraftActivations.table[i].name
    const char* dump_name;      // the name in the file (after the call's prefix)
    int head_rows;              // 1: only the rows that went through the LM head (out_norm, logits)
    const char* meaning;
} DraftBufferName;
static const DraftBufferName DRAFT_BUFFER_NAMES[] = {
    {"tokens",     "tokens",       0, "I32 [T]: target ids x whose embedding is e (row t pairs the features at position t with x_{t+1})"},
    {"positions",  "positions",    0, "I32 [T]: RoPE position ids"},
    {"mask",       "mask",         0, "U8 [T, P]: 1 where row t may attend to key slot p (P = n_past + T)"},
    {"features",   "features",     0, "F32 [T, 3C]: g, the target's tapped residual streams (low, mid, high), the input of fc"},
    {"u",          "u",            0, "F32 [T, C]: the hidden input: fc(g), or the previous step's / parent's output"},
    {"embed",      "embed",        0, "F32 [T, C]: e = Emb(tokens), the target's frozen embedding"},
    {"attn_in",    "attn_in",      0, "F32 [T, 2C]: concat(input_layernorm(e), hidden_norm(u)), embedding first"},
    {"q",          "q",            0, "F32 [T, NH*HS]: q_proj(attn_in) after RoPE, rotate_half layout"},
    {"k",          "k",            0, "F32 [T, NKV*HS]: k_proj(attn_in) after RoPE, rotate_half layout"},
    {"v",          "v",            0, "F32 [T, NKV*HS]: v_proj(attn_in)"},
    {"attn_out",   "attn_out",     0, "F32 [T, NH*HS]: softmax(q k^T / sqrt(HS), masked) v, heads concatenated (before o_proj)"},
    {"proj",       "ffn_down_out", 0, "F32 [T, C]: down_proj(ffn_hidden), before the residual add"},
    {"h",          "h",            0, "F32 [T, C]: u + o_proj(attn_out)"},
    {"h_norm",     "h_norm",       0, "F32 [T, C]: post_attention_layernorm(h)"},
    {"ffn_gate",   "ffn_gate",     0, "F32 [T, F]: gate_proj(h_norm)"},
    {"ffn_up",     "ffn_up",       0, "F32 [T, F]: up_proj(h_norm)"},
    {"ffn_hidden", "ffn_hidden",   0, "F32 [T, F]: silu(ffn_gate) * ffn_up"},
    {"out",        "out",          0, "F32 [T, C]: h + ffn_down_out, the layer output (the next step's u)"},
    {"out_norm",   "out_norm",     1, "F32 [rows, C]: norm(out) at the rows through the LM head"},
    {"logits",     "logits",       1, "F32 [rows, V_d]: lm_head(out_norm), draft vocabulary (vocab.d2t maps to target ids)"},
};
enum { N_DRAFT_BUFFER_NAMES = sizeof(DRAFT_BUFFER_NAMES) / sizeof(DRAFT_BUFFER_NAMES[0]) };

// Every buffer of one draft call's activation table: T rows (head_rows through the LM head), mask (T, P);
// with_features: features hold this call's fc input. Buffers the table has and this file does not know
// are dumped under their own name, so nothing is left out silently.
static void dump_draft_activations(Dump* d, const Draft* draft, const DraftActivations* a, const char* prefix, int T,
                                   int P, int head_rows, int with_features, const char* head_note) {
    const DraftConfig* c = &draft->config;
    for (int i = 0; i < DRAFT_NUM_ACTIVATIONS; i++) {
        const ActivationInfo* info = &a->table[i];
        const DraftBufferName* known = NULL;
        for (int j = 0; j < N_DRAFT_BUFFER_NAMES; j++) {
            if (strcmp(DRAFT_BUFFER_NAMES[j].table_name, info->name) == 0) { known = &DRAFT_BUFFER_NAMES[j]; }
        }
        if (strcmp(info->name, "features") == 0 && !with_features) { continue; }
        size_t rows = known && known->head_rows ? (size_t)head_rows : (size_t)T;
        size_t cols = strcmp(info->name, "mask") == 0 ? (size_t)P : info->cols;
        if (rows == 0) { continue; }
        int rope_heads = strcmp(info->name, "q") == 0 ? c->n_heads : strcmp(info->name, "k") == 0 ? c->n_kv_heads : 0;
        char name[160], meaning[512];
        snprintf(name, sizeof(name), "%s.%s", prefix, known ? known->dump_name : info->name);
        snprintf(meaning, sizeof(meaning), "%s%s", known ? known->meaning : "(a buffer added to the draft's activation table after dump.c)",
                 known && known->head_rows ? head_note : "");
        dump_add_backend(d, name, meaning, info->kind, rows, cols, dump_buffer_is_vector(info->name, known != NULL, info->cols),
                         *info->data, rope_heads, c->head_size);
    }
}

// ----------------------------------------------------------------------------
// the first verify pass: drafting (replayed call by call), the target over the tree, acceptance

// Bit-for-bit: the replayed call gave what the drafter kept.
static void dump_check_same(const float* replayed, const float* kept, size_t n, const char* what) {
    if (memcmp(replayed, kept, n * sizeof(float)) != 0) {
        fprintf(stderr, "error: internal: dump: replaying the drafter's %s did not reproduce it bit for bit\n", what);
        exit(EXIT_FAILURE); // the drafter and this replay disagree on its inputs: a program bug
    }
}

// The drafting of one proposal, replayed through draft_forward with the drafter's own inputs (after
// draft_source_sync + draft_source_propose on the same sequence): the extend calls over the committed
// positions, then one expand call per depth (the candidates the drafter expanded, in slot order).
static void dump_drafting(Dump* d, DraftSource* source, const Sequence* sequence) {
    Draft* draft = source->draft;
    const DraftConfig* c = &draft->config;
    int C = c->dim, V_d = c->vocab_size, KVD = c->n_kv_heads * c->head_size;
    int n_prefix = sequence->n_committed, root_position = sequence->n_tokens - 1;
    int chunk = draft->act.max_tokens < TREE_MAX_NODES ? draft->act.max_tokens : TREE_MAX_NODES;
    int positions[TREE_MAX_NODES], tokens[MAX_SPEC_K], batch[MAX_SPEC_K];
    float* u = mallocCheck((size_t)(chunk > MAX_SPEC_K ? chunk : MAX_SPEC_K) * C * sizeof(float));
    const CandidatePool* pool = source->pool;
    int n_expand = 0;
    for (int depth = 1; depth <= TREE_MAX_DEPTH; depth++, n_expand++) {
        int expanded = 0;
        for (int i = 0; i < pool->n; i++) { expanded |= pool->items[i].depth == depth && pool->items[i].slot >= 0; }
        if (!expanded) { break; }
    }
    dump_add_scalar_i32(d, "drafting.n_calls", "I32 [1]: draft_forward calls of this proposal (drafting.call0, call1, ...): "
                        "the extend calls, then one expand call per depth", (n_prefix + chunk - 1) / chunk + n_expand);
    int call = 0;
    char prefix[64], text[256];
    // extend: draft row t = (g_t, x_{t+1}) at position t, causal over the draft's cache
    for (int start = 0; start < n_prefix; start += chunk, call++) {
        int T = n_prefix - start < chunk ? n_prefix - start : chunk;
        for (int t = 0; t < T; t++) { positions[t] = start + t; }
        draft_project_features(draft, u, sequence->features + (size_t)start * TAP_LAYERS * C, T);
        draft_forward(draft, sequence->tokens + start + 1, u, positions, NULL, T, start);
        snprintf(prefix, sizeof(prefix), "drafting.call%d", call);
        snprintf(text, sizeof(text), "%s.kind", prefix);
        dump_add_scalar_i32(d, text, "I32 [1]: 0 = extend (u = fc(g) over verified positions), d >= 1 = expand the "
                            "candidates of depth d (u = each parent's output)", 0);
        snprintf(text, sizeof(text), "%s.n_past", prefix);
        dump_add_scalar_i32(d, text, "I32 [1]: key slots before this call's rows (its keys/values go to slots n_past..n_past+T-1)", start);
        dump_draft_activations(d, draft, &draft->act, prefix, T, start + T, T, 1, " (all T rows)");
        if (start + T == n_prefix) { // the last row's output and logits are the root's: the first depth
            // (serving caught up through draft_extend, which computes the rest of the layer for a call's last row
            // only: the same call again through it, the same keys and values, gives the drafter's row as it did)
            draft_extend(draft, sequence->tokens + start + 1, u, positions, T, start);
            dump_check_same(draft->host.out, source->root_out, (size_t)C, "extend output");
            dump_check_same(draft->host.logits, source->root_logits, (size_t)V_d, "extend logits");
        }
    }
    // expand: depth by depth, the candidates the drafter ran (slot >= 0), in slot order
    int n_slots_used = 0;
    for (int depth = 1; depth <= TREE_MAX_DEPTH; depth++, call++) {
        int n_batch = 0;
        for (int i = 0; i < pool->n; i++) {
            if (pool->items[i].depth == depth && pool->items[i].slot >= 0) { batch[n_batch++] = i; }
        }
        if (n_batch == 0) { break; }
        for (int b = 1; b < n_batch; b++) { // insertion sort by slot
            int item = batch[b], at = b;
            while (at > 0 && pool->items[batch[at - 1]].slot > pool->items[item].slot) { batch[at] = batch[at - 1]; at--; }
            batch[at] = item;
        }
        int first_slot = n_prefix + n_slots_used;
        for (int b = 0; b < n_batch; b++) {
            const Candidate* candidate = &pool->items[batch[b]];
            if (candidate->slot != first_slot + b) {
                fprintf(stderr, "error: internal: dump: candidate %d of depth %d has slot %d, expected %d\n", batch[b], depth,
                        candidate->slot, first_slot + b);
                exit(EXIT_FAILURE); // the drafter's slot order changed: a program bug
            }
            tokens[b] = candidate->token;
            positions[b] = root_position - 1 + depth;
            const float* parent_out = candidate->parent < 0 ? source->root_out : source->expanded_out + (size_t)candidate->parent * C;
            memcpy(u + (size_t)b * C, parent_out, (size_t)C * sizeof(float));
        }
        expansion_mask(source->mask, pool, batch, n_batch, n_prefix, n_slots_used, 0);
        draft_forward(draft, tokens, u, positions, source->mask, n_batch, first_slot);
        for (int b = 0; b < n_batch; b++) {
            dump_check_same(draft->host.out + (size_t)b * C, source->expanded_out + (size_t)batch[b] * C, (size_t)C, "expand output");
        }
        snprintf(prefix, sizeof(prefix), "drafting.call%d", call);
        snprintf(text, sizeof(text), "%s.kind", prefix);
        dump_add_scalar_i32(d, text, "I32 [1]: 0 = extend (u = fc(g) over verified positions), d >= 1 = expand the "
                            "candidates of depth d (u = each parent's output)", depth);
        snprintf(text, sizeof(text), "%s.n_past", prefix);
        dump_add_scalar_i32(d, text, "I32 [1]: key slots before this call's rows (its keys/values go to slots n_past..n_past+T-1)", first_slot);
        snprintf(text, sizeof(text), "%s.candidates", prefix);
        dump_add_1d(d, text, "I32 [T]: the candidate (index into drafting.candidate_*) each row expands", ELEMENT_I32, n_batch, batch);
        dump_draft_activations(d, draft, &draft->act, prefix, n_batch, first_slot + n_batch, n_batch, 0, " (all T rows)");
        n_slots_used += n_batch;
    }
    free(u);
    // the candidate pool: every candidate the drafter scored, kept in the tree or not
    int n = pool->n;
    int* values = mallocCheck((size_t)(n > 0 ? n : 1) * 4 * sizeof(int));
    float* scores = mallocCheck((size_t)(n > 0 ? n : 1) * sizeof(float));
    const char* what[4] = {"drafting.candidate_tokens", "drafting.candidate_parents", "drafting.candidate_depths",
                           "drafting.candidate_slots"};
    const char* meanings[4] = {
        "I32 [n]: each candidate's target id (children of a node: the top-K of its logits, best first, mapped by d2t)",
        "I32 [n]: each candidate's parent candidate, -1 for the root's children (the root's logits: the last extend row)",
        "I32 [n]: depth (1 = a child of the root)",
        "I32 [n]: the draft cache slot it was expanded in, -1 if never expanded"};
    for (int i = 0; i < n; i++) {
        values[i] = pool->items[i].token;
        values[n + i] = pool->items[i].parent;
        values[2 * n + i] = pool->items[i].depth;
        values[3 * n + i] = pool->items[i].slot;
        scores[i] = pool->items[i].score;
    }
    if (n > 0) {
        for (int j = 0; j < 4; j++) { dump_add_1d(d, what[j], meanings[j], ELEMENT_I32, n, values + (size_t)j * n); }
        dump_add_1d(d, "drafting.candidate_scores", "F32 [n]: cumulative draft log-probability (log_softmax over the draft "
                    "vocabulary, summed along the path)", ELEMENT_F32, n, scores);
    }
    free(values);
    free(scores);
    // the draft's cache after drafting: the prefix, then every expanded candidate's slot
    int n_slots = n_prefix + n_slots_used;
    dump_add_backend(d, "drafting.key_cache", "F32 [slots, NKV*HS]: the draft's keys after drafting (slot = n_past + row), "
                     "rotate_half layout", ELEMENT_F32, (size_t)n_slots, (size_t)KVD, 0, draft->key_cache, c->n_kv_heads, c->head_size);
    dump_add_backend(d, "drafting.value_cache", "F32 [slots, NKV*HS]: the draft's values after drafting", ELEMENT_F32,
                     (size_t)n_slots, (size_t)KVD, 0, draft->value_cache, 0, c->head_size);
}

// How each buffer of the target's activation table is dumped (per-layer buffers hold the last layer's values).
typedef struct {
    const char* table_name;
    const char* dump_name;      // NULL: not dumped
    const char* meaning;
} TargetBufferName;
static const TargetBufferName TARGET_BUFFER_NAMES[] = {
    {"tokens",        "verify.tokens",                 "I32 [N]: the tree's tokens, root first (the root is the last verified token)"},
    {"positions",     "verify.positions",              "I32 [N]: RoPE position ids: root position + depth"},
    {"mask",          "verify.mask",                   "U8 [N, P]: 1 where node i may attend to cache slot p (P = n_prefix + N): the prefix, its ancestors, itself"},
    {"slots",         NULL,                            NULL},  // the compaction's source slots: not part of the pass
    {"x",             "verify.last_layer.residual",    "F32 [N, C]: the residual stream after the last layer (= verify.layer_outputs[L-1])"},
    {"x_norm",        "verify.last_layer.ffn_norm_out","F32 [N, C]: the last layer's post_attention_layernorm output (the MLP's input)"},
    {"q",             "verify.last_layer.q",           "F32 [N, NH*HS]: the last layer's queries after RoPE, rotate_half layout"},
    {"k",             "verify.last_layer.k",           "F32 [N, NKV*HS]: the last layer's keys after RoPE, rotate_half layout"},
    {"v",             "verify.last_layer.v",           "F32 [N, NKV*HS]: the last layer's values"},
    {"attn_out",      "verify.last_layer.attn_out",    "F32 [N, NH*HS]: the last layer's attention output before o_proj"},
    {"proj",          "verify.last_layer.ffn_down_out","F32 [N, C]: the last layer's down_proj output, before the residual add"},
    {"ffn_gate",      "verify.last_layer.ffn_hidden",  "F32 [N, F]: the last layer's silu(gate_proj(x)) * up_proj(x) (the buffer is reused)"},
    {"ffn_up",        "verify.last_layer.ffn_up",      "F32 [N, F]: the last layer's up_proj output"},
    {"features",      "verify.features",               "F32 [N, 3C]: g at each node: the residual stream after the tap layers (low, mid, high) concatenated"},
    {"hidden",        "verify.hidden",                 "F32 [N, C]: the final norm's output (the LM head's input)"},
    {"logits",        "verify.logits",                 "F32 [N, V]: the target's logits at every node (full target vocabulary)"},
    {"key_cache",     "verify.key_cache",              "F32 [L, P, NKV*HS]: every layer's keys after the pass (slots 0..n_prefix-1: the prompt; then the nodes), rotate_half layout"},
    {"value_cache",   "verify.value_cache",            "F32 [L, P, NKV*HS]: every layer's values after the pass"},
    {"layer_outputs", "verify.layer_outputs",          "F32 [L, N, C]: the residual stream after each layer"},
};
enum { N_TARGET_BUFFER_NAMES = sizeof(TARGET_BUFFER_NAMES) / sizeof(TARGET_BUFFER_NAMES[0]) };

static void dump_verify_pass(Dump* d, Target* target, int N, int n_prefix) {
    const TargetConfig* c = &target->config;
    int L = c->n_layers, S = target->cache_capacity, P = n_prefix + N, KVD = c->n_kv_heads * c->head_size;
    for (int i = 0; i < TARGET_NUM_ACTIVATIONS; i++) {
        const ActivationInfo* info = &target->act.table[i];
        const TargetBufferName* known = NULL;
        for (int j = 0; j < N_TARGET_BUFFER_NAMES; j++) {
            if (strcmp(TARGET_BUFFER_NAMES[j].table_name, info->name) == 0) { known = &TARGET_BUFFER_NAMES[j]; }
        }
        if (known && known->dump_name == NULL) { continue; }
        char fallback[128];
        snprintf(fallback, sizeof(fallback), "verify.%s", info->name);
        const char* name = known ? known->dump_name : fallback;
        const char* meaning = known ? known->meaning : "(a buffer added to the target's activation table after dump.c)";
        int rope_heads = strcmp(info->name, "q") == 0 ? c->n_heads
                       : strcmp(info->name, "k") == 0 || strcmp(info->name, "key_cache") == 0 ? c->n_kv_heads : 0;
        if (strcmp(info->name, "key_cache") == 0 || strcmp(info->name, "value_cache") == 0) {
            // (L, NKV, S, HS) at capacity, head by head (cache_by_head): slots 0..P-1 of every layer, written
            // slot by slot, (L, P, KVD), as the other programs hold a layer's keys
            int NKV = c->n_kv_heads, HS = c->head_size;
            float* values = mallocCheck((size_t)L * P * KVD * sizeof(float));
            float* head_rows = mallocCheck((size_t)P * HS * sizeof(float));
            for (int l = 0; l < L; l++) {
                for (int h = 0; h < NKV; h++) {
                    d->backend->download(head_rows, (const float*)*info->data + ((size_t)l * NKV + h) * S * HS,
                                         (size_t)P * HS * sizeof(float));
                    for (int p = 0; p < P; p++) {
                        memcpy(values + ((size_t)l * P + p) * KVD + (size_t)h * HS, head_rows + (size_t)p * HS,
                               (size_t)HS * sizeof(float));
                    }
                }
            }
            free(head_rows);
            if (rope_heads) { dump_rope_to_hf(values, (size_t)L * P, rope_heads, c->head_size); }
            int64_t shape[3] = {L, P, KVD};
            dump_add(d, name, meaning, ELEMENT_F32, 3, shape, values);
            free(values);
        } else if (strcmp(info->name, "layer_outputs") == 0) {
            if (*info->data == NULL) { continue; }
            float* values = mallocCheck((size_t)L * N * c->dim * sizeof(float)); // a call of N rows fills (L, N, C)
            d->backend->download(values, *info->data, (size_t)L * N * c->dim * sizeof(float));
            int64_t shape[3] = {L, N, c->dim};
            dump_add(d, name, meaning, ELEMENT_F32, 3, shape, values);
            free(values);
        } else {
            size_t cols = strcmp(info->name, "mask") == 0 ? (size_t)P : info->cols;
            dump_add_backend(d, name, meaning, info->kind, (size_t)N, cols,
                             dump_buffer_is_vector(info->name, known != NULL, info->cols), *info->data, rope_heads, c->head_size);
        }
    }
}

// ----------------------------------------------------------------------------
// the trainer step

// The step-by-step view of one forward unroll that has just run on trainer (record_unroll): each step's
// activations, loss rows, target distributions, per-row losses and loss L_k = the weighted mean over
// its loss rows. Returns sum_k decay^k L_k (the accepted-path loss as trainer_step weighs it).
static double dump_unroll_steps(Dump* d, Trainer* trainer, const Record* record, const TrainerSettings* s) {
    const Backend* b = trainer->backend;
    const Draft* draft = &trainer->draft;
    const DraftConfig* c = &draft->config;
    TrainWorkspace* ws = &trainer->work;
    int C = c->dim, V_d = c->vocab_size;
    UnrollPlan plan;
    unroll_plan_columns(&plan, record, s);
    int* discard_used = mallocCheck((size_t)(record->n_discard + plan.T + 1) * sizeof(int));
    int* discard_row = mallocCheck((size_t)(record->n_discard + 1) * sizeof(int));
    unroll_plan_rows(&plan, record, s, discard_used, discard_row);
    int T = plan.T, D = plan.n_discard;
    int* rows = mallocCheck((size_t)T * sizeof(int));
    float* weights = mallocCheck((size_t)T * sizeof(float));
    int* target_tokens = mallocCheck((size_t)T * sizeof(int));
    float* hidden = mallocCheck((size_t)T * C * sizeof(float));
    float* row_losses = mallocCheck((size_t)T * sizeof(float));
    float* device_hidden = b->alloc((size_t)T * C * sizeof(float));
    float* device_p = b->alloc((size_t)T * V_d * sizeof(float));
    int* device_tokens = b->alloc((size_t)T * sizeof(int));
    float* device_losses = b->alloc((size_t)T * sizeof(float));
    double weighted_sum = 0.0, decay = 1.0;
    char prefix[64], name[128];
    for (int k = 0; k < plan.n_steps; k++, decay *= s->step_decay) {
        int R = plan.rows[k], P = plan.block_offset[k] + R;
        int n_sequence = unroll_loss_rows(&plan, record, s, k, rows, weights);
        int n_head = n_sequence + (k == 0 ? D : 0); // the rows the trainer ran through the LM head
        snprintf(prefix, sizeof(prefix), "train.step%d", k);
        dump_draft_activations(d, draft, &ws->act[k], prefix, R, P, n_head, k == 0,
                               " (one row per loss row, in train.stepK.loss_rows order, then the discard rows at step 0)");
        snprintf(name, sizeof(name), "%s.loss_rows", prefix);
        dump_add_1d(d, name, "I32 [n]: the step's rows that carry a loss (row t predicts the token at position first_column "
                    "+ t + k + 2: a completion token whose teacher, the target at first_column + t + k + 1, was recorded)",
                    ELEMENT_I32, n_sequence, rows);
        snprintf(name, sizeof(name), "%s.loss_weights", prefix);
        dump_add_1d(d, name, "F32 [n]: each loss row's relative weight (1 for completion tokens, --prompt-weight for prompt "
                    "tokens)", ELEMENT_F32, n_sequence, weights);
        if (n_sequence == 0) { continue; }
        // the teacher: p = softmax(W_lm[d2t] h) at the position before the predicted token
        for (int i = 0; i < n_sequence; i++) {
            record_rows_f32(hidden + (size_t)i * C, record->hidden + (size_t)(plan.first_column + rows[i] + k + 1) * C, 1, C);
            int target_id = record->tokens[plan.first_column + rows[i] + k + 2];
            target_tokens[i] = draft->t2d[target_id];
        }
        b->upload(device_hidden, hidden, (size_t)n_sequence * C * sizeof(float));
        b->matmul_forward(device_p, device_hidden, matrix_f32(trainer->head_rows), n_sequence, C, V_d);
        b->softmax_forward(device_p, device_p, n_sequence, V_d);
        // the next-token loss counts a token outside the draft vocabulary as nothing: weight 0, and no share of
        // the mean's denominator, as the trainer does (the distribution losses need no draft id)
        for (int i = 0; i < n_sequence; i++) {
            if (target_tokens[i] < 0) { target_tokens[i] = 0; if (s->loss == LOSS_NEXT_TOKEN) { weights[i] = 0.0f; } }
        }
        double weight_sum = 0.0;
        for (int i = 0; i < n_sequence; i++) { weight_sum += weights[i]; }
        b->upload(device_tokens, target_tokens, (size_t)n_sequence * sizeof(int));
        b->distribution_loss(device_losses, NULL, ws->act[k].logits, device_p, device_tokens, NULL, n_sequence, V_d, s->loss);
        b->download(row_losses, device_losses, (size_t)n_sequence * sizeof(float));
        snprintf(name, sizeof(name), "%s.p_target", prefix);
        dump_add_backend(d, name, "F32 [n, V_d]: the teacher at each loss row: softmax over the draft vocabulary of "
                         "request.target_head . request.hidden[first_column + t + k + 1]", ELEMENT_F32, (size_t)n_sequence,
                         (size_t)V_d, 0, device_p, 0, c->head_size);
        snprintf(name, sizeof(name), "%s.row_losses", prefix);
        dump_add_1d(d, name, "F32 [n]: each loss row's loss, q = softmax(logits): fkl -sum_v p(v) log q(v); rkl sum_v "
                    "q(v) (log q(v) - log max(p(v), 1e-30)); ntp -log q(x) (a token outside the draft vocabulary: the loss "
                    "of draft id 0, weight 0)",
                    ELEMENT_F32, n_sequence, row_losses);
        double loss_sum = 0.0;
        for (int i = 0; i < n_sequence; i++) { loss_sum += (double)weights[i] * row_losses[i]; }
        float step_loss = weight_sum > 0.0 ? (float)(loss_sum / weight_sum) : 0.0f;
        snprintf(name, sizeof(name), "%s.loss", prefix);
        dump_add_scalar_f32(d, name, "F32 [1]: L_k, the weighted mean of row_losses over the loss rows (ntp: the rows whose "
                            "token is in the draft vocabulary)", step_loss);
        weighted_sum += decay * step_loss;
    }
    b->free(device_hidden); b->free(device_p); b->free(device_tokens); b->free(device_losses);
    free(rows); free(weights); free(target_tokens); free(hidden); free(row_losses); free(discard_used); free(discard_row);
    return weighted_sum;
}

// ----------------------------------------------------------------------------
// the run's configuration, as a JSON object (metadata "aurora.dump.config")

// Closes an open_memstream text; a stream that ran out of memory (a short text: a truncated JSON document in
// the file) is the same error as one that could not be opened.
static void dump_close_memory(FILE* stream, char** text) {
    int failed = ferror(stream);
    failed |= fclose(stream) != 0;
    if (failed || *text == NULL) { fprintf(stderr, "error: out of memory\n"); exit(EXIT_FAILURE); }
}

static char* dump_config_json(const Options* o, const Target* target, const Draft* draft, const TrainerSettings* s,
                              const Record* record, int first_column, const char* backend_name) {
    char* text = NULL;
    size_t length = 0;
    FILE* out = open_memstream(&text, &length);
    if (out == NULL) { fprintf(stderr, "error: out of memory\n"); exit(EXIT_FAILURE); }
    const TargetConfig* tc = &target->config;
    const DraftConfig* c = &draft->config;
    const char* loss = s->loss == LOSS_REVERSE_KL ? "rkl" : s->loss == LOSS_NEXT_TOKEN ? "ntp" : "fkl";
    fprintf(out, "{\"format\": \"aurora-dump\", \"version\": 1, \"backend\": ");
    json_write_string(out, backend_name);
    fprintf(out, ", \"model\": ");
    json_write_string(out, o->model_path);
    fprintf(out, ", \"draft\": ");
    json_write_string(out, o->draft);
    fprintf(out, ", \"prompt\": ");
    json_write_string(out, o->prompt);
    fprintf(out, ", \"chat\": %d, \"n_predict\": %d, \"seed\": %d, \"greedy\": true,\n", o->chat, o->n_predict, o->seed);
    fprintf(out, " \"target\": {\"dim\": %d, \"n_layers\": %d, \"n_heads\": %d, \"n_kv_heads\": %d, \"head_size\": %d, "
            "\"ffn_dim\": %d, \"vocab_size\": %d, \"rope_theta\": %.9g, \"norm_eps\": %.9g, \"tap_layers\": [%d, %d, %d]},\n",
            tc->dim, tc->n_layers, tc->n_heads, tc->n_kv_heads, tc->head_size, tc->ffn_dim, tc->vocab_size, tc->rope_theta,
            tc->norm_eps, tc->tap_layers[0], tc->tap_layers[1], tc->tap_layers[2]);
    fprintf(out, " \"draft_config\": {\"dim\": %d, \"n_heads\": %d, \"n_kv_heads\": %d, \"head_size\": %d, \"ffn_dim\": %d, "
            "\"vocab_size\": %d, \"target_vocab_size\": %d, \"rope_theta\": %.9g, \"norm_eps\": %.9g},\n", c->dim, c->n_heads,
            c->n_kv_heads, c->head_size, c->ffn_dim, c->vocab_size, c->target_vocab_size, c->rope_theta, c->norm_eps);
    fprintf(out, " \"tree\": {\"k\": %d, \"depth\": %d, \"nodes\": %d},\n", o->shape.k, o->shape.depth, o->shape.nodes);
    fprintf(out, " \"request\": {\"n_prompt\": %d, \"n_tokens\": %d, \"n_committed\": %d, \"first_column\": %d},\n",
            record->n_prompt, record->n_tokens, record->n_committed, first_column);
    fprintf(out, " \"trainer\": {\"ttt_length\": %d, \"step_decay\": %.9g, \"loss\": \"%s\", \"prompt_weight\": %.9g, "
            "\"context_window\": %d, \"max_positions\": %d, \"discard_weight\": %.9g, \"discard_top_k\": %d, "
            "\"learning_rate\": %.9g, \"warmup_steps\": %d, \"beta1\": %.9g, \"beta2\": %.9g, \"adam_eps\": %.9g, "
            "\"weight_decay\": %.9g, \"max_grad_norm\": %.9g}}", s->ttt_length, s->step_decay, loss, s->prompt_weight,
            s->context_window, s->max_positions, s->discard_weight, s->discard_top_k, s->learning_rate, s->warmup_steps,
            s->beta1, s->beta2, s->adam_eps, s->weight_decay, s->max_grad_norm);
    dump_close_memory(out, &text);
    return text;
}

// ----------------------------------------------------------------------------
// the command

static void dump_defaults(Options* o) {
    o->n_predict = 24; o->seed = 42; o->batch = DEFAULT_BATCH_TOKENS; o->context = 512; o->backend_name = "ref";
    o->shape = (TreeShape){1, DEFAULT_SPEC_DEPTH, 0}; o->draft = "random";
    o->train = trainer_default_settings();
    // one AdamW step from zero moments moves each weight by about lr (tolerance "adamw_steps"): 1e-3 makes a
    // wrong gradient sign visible; no warm-up, so the step uses that rate
    o->train.learning_rate = 1e-3f;
    o->train.warmup_steps = 0;
    o->loss_name = "fkl";
}

static int command_dump(Options* o) {
    resolve_tree_shape(o);
    o->train.loss = loss_kind_from_name(o->loss_name);
    Error err;
    if (tree_shape_check(o->shape, &err) != 0) { return fail(&err); }
    if (strcmp(o->draft, "self") == 0 || strcmp(o->draft, "lookup") == 0 || strcmp(o->draft, "suffix") == 0) {
        fprintf(stderr, "error: --draft %s: dump needs an EAGLE-3 draft (a checkpoint in any format --draft reads, random or "
                "target)\n", o->draft);
        return 1;
    }
    if (draft_vocab_check(o, o->draft) != 0 || discard_top_k_check(&o->train) != 0) { return 1; }
    // the inputs an output may not be: the model, the draft, and the prompt's file (NULL: none)
    const char* inputs[3] = {o->model_path, o->draft, o->prompt_file};
    const char* input_flags[3] = {"-m", "--draft", "-f"};
    const Backend* backend = backend_by_name(o->backend_name, &err);
    if (backend == NULL) { fprintf(stderr, "error: --backend %s: %s\n", o->backend_name, err.message); return 1; }
    Target target;
    if (load_target(&target, o, backend, o->context, o->batch) != 0) { return 1; }
    target_keep_layer_outputs(&target);
    int S = target.cache_capacity, C = target.config.dim, V = target.config.vocab_size;
    int room = o->n_predict + TREE_MAX_NODES + MAX_SPEC_K * TREE_MAX_DEPTH + 1; // generation, a tree, the drafter's slots
    int* prompt = mallocCheck((size_t)S * sizeof(int));
    int n_prompt = S > room ? prompt_encode(&target.tokenizer, o->prompt, o->chat, prompt, S - room, &err) : -1;
    if (n_prompt == PROMPT_EMPTY || n_prompt == PROMPT_NO_TEMPLATE) {
        fprintf(stderr, "error: %s\n", err.message);
        free(prompt);
        target_free(&target);
        return 1;
    }
    if (n_prompt < 0 || o->shape.nodes > target.act.max_tokens) {
        if (n_prompt < 0 && S > room) { fprintf(stderr, "error: %s; ", err.message); } else { fprintf(stderr, "error: "); }
        fprintf(stderr, "the context (--context %d) must hold the prompt, -n %d tokens and a tree's slots (%d), and --batch "
                "(%d) the tree's %d nodes: raise --context or shorten the prompt\n", S, o->n_predict,
                room - o->n_predict, target.act.max_tokens, o->shape.nodes);
        free(prompt);
        target_free(&target);
        return 1;
    }
    Draft draft;
    if (replay_load_draft(&draft, o->draft, &target, o->draft_vocab, (uint64_t)o->seed, &err) != 0) {
        free(prompt);
        target_free(&target);
        return fail(&err);
    }
    // (the output checked, its directory made, once every input is read: a bad draft leaves no directory)
    if (check_output(o->out_path, "-o", inputs, input_flags, 3, 1) != 0) {
        draft_free(&draft);
        free(prompt);
        target_free(&target);
        return 1;
    }
    DraftSource source;
    draft_source_init(&source, DRAFT_EAGLE, o->shape, &draft, &target);
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    Dump d;
    memset(&d, 0, sizeof(d));
    d.backend = backend;
    d.doc = open_memstream(&d.doc_text, &d.doc_length);
    if (d.doc == NULL) { fprintf(stderr, "error: out of memory\n"); exit(EXIT_FAILURE); }

    // 1. the request: speculative generation with a record (what the trainer trains on)
    Record* record = record_new(C, o->train.discard_weight > 0.0f);
    int* generated = mallocCheck((size_t)(o->n_predict + 1) * sizeof(int));
    SpecStats stats;
    generate_speculative(&target, &source, prompt, n_prompt, o->n_predict, greedy, (uint64_t)o->seed, generated, &stats,
                         NULL, NULL, record);
    const DraftConfig* dc = &draft.config;
    int V_d = dc->vocab_size;
    dump_draft_arena(&d, &draft, draft.weight_arena, "weights.", "F32: the draft's weight");
    dump_add_1d(&d, "vocab.d2t", "I32 [V_d]: the target id of each draft id (absolute; SpecForge stores d2t[i] - i)",
                ELEMENT_I32, V_d, draft.d2t);
    dump_add_1d(&d, "request.prompt", "I32 [n_prompt]: the prompt's token ids", ELEMENT_I32, n_prompt, prompt);
    dump_add_1d(&d, "request.tokens", "I32 [n_tokens]: prompt + generated tokens (greedy speculative decoding)", ELEMENT_I32,
                record->n_tokens, record->tokens);
    // the record keeps the target's states in fp16: dumped as the fp32 values the trainer reads
    float* states = mallocCheck((size_t)record->n_committed * TAP_LAYERS * C * sizeof(float));
    record_rows_f32(states, record->features, record->n_committed, TAP_LAYERS * C);
    dump_add_2d(&d, "request.features", "F32 [n_committed, 3C]: g_t, the target's tapped residual streams (outputs of the "
                "tap layers, low, mid, high) at every verified position, rounded to fp16 as the record keeps them",
                ELEMENT_F32, record->n_committed, 3 * C, states);
    record_rows_f32(states, record->hidden, record->n_committed, C);
    dump_add_2d(&d, "request.hidden", "F32 [n_committed, C]: h_t, the target's final-norm output at every verified position "
                "(the teacher: softmax(target_head h_t) is the target's distribution of token t + 1), rounded to fp16 as "
                "the record keeps them", ELEMENT_F32, record->n_committed, C, states);
    free(states);
    float* rows = mallocCheck((size_t)(record->n_tokens > V_d ? record->n_tokens : V_d) * C * sizeof(float));
    if (target_read_rows(&target, "token_embd.weight", record->tokens, record->n_tokens, rows, &err) != 0) {
        fprintf(stderr, "error: internal: dump: %s\n", err.message);
        exit(EXIT_FAILURE); // the target loaded this tensor: a program bug
    }
    dump_add_2d(&d, "request.token_embeddings", "F32 [n_tokens, C]: Emb(request.tokens), rows of the target's (frozen) "
                "embedding table, which the draft reads", ELEMENT_F32, record->n_tokens, C, rows);
    if (target_read_rows(&target, target_output_name(&target), draft.d2t, V_d, rows, &err) != 0) {
        fprintf(stderr, "error: internal: dump: %s\n", err.message);
        exit(EXIT_FAILURE);
    }
    dump_add_2d(&d, "request.target_head", "F32 [V_d, C]: the target's LM head rows of the draft vocabulary (W_lm[d2t], "
                "frozen): the teacher's logits", ELEMENT_F32, V_d, C, rows);
    free(rows);

    // 2. its first verify pass, in detail
    Sequence sequence;
    sequence_init(&sequence, S + 1, C);
    memcpy(sequence.tokens, prompt, (size_t)n_prompt * sizeof(int));
    target_prefill(&target, prompt, n_prompt, 0, sequence.features, sequence.hidden);
    sequence.n_committed = n_prompt;
    sequence.tokens[n_prompt] = sample_argmax(target.host.logits, V);
    sequence.n_tokens = n_prompt + 1;
    source.n_extended = 0;
    Tree tree;
    draft_source_sync(&source, &sequence);
    draft_source_propose(&source, &target, &sequence, &tree, S - sequence.n_committed);
    dump_drafting(&d, &source, &sequence);
    int N = tree.n_nodes, n_prefix = sequence.n_committed;
    uint8_t* mask = mallocCheck((size_t)N * (n_prefix + N));
    tree_attention_mask(mask, &tree, n_prefix);
    target_forward(&target, tree.tokens, tree.positions, mask, N, n_prefix, 1);
    dump_verify_pass(&d, &target, N, n_prefix);
    dump_add_1d(&d, "verify.parents", "I32 [N]: each node's parent node (-1 for the root); nodes are the N-1 best "
                "candidates by score, by depth then creation", ELEMENT_I32, N, tree.parents);
    dump_add_1d(&d, "verify.depth", "I32 [N]: each node's depth (root 0)", ELEMENT_I32, N, tree.depth);
    dump_add_1d(&d, "verify.scores", "F32 [N]: each node's cumulative draft log-probability (root 0)", ELEMENT_F32, N, tree.scores);
    Acceptance acceptance;
    accept_greedy(&acceptance, &tree, target.host.logits, V);
    int argmax[TREE_MAX_NODES], emitted[TREE_MAX_DEPTH + 2];
    for (int i = 0; i < N; i++) { argmax[i] = sample_argmax(target.host.logits + (size_t)i * V, V); }
    int n_path = acceptance.n_accepted + 1;
    for (int i = 1; i < n_path; i++) { emitted[i - 1] = tree.tokens[acceptance.path[i]]; }
    emitted[n_path - 1] = acceptance.bonus;
    dump_add_1d(&d, "accept.target_argmax", "I32 [N]: the target's argmax at each node (ties to the lowest id)", ELEMENT_I32,
                N, argmax);
    dump_add_1d(&d, "accept.path", "I32 [n_accepted + 1]: the accepted path's nodes, root first (greedy: from the root, the "
                "child whose token is the target's argmax, while one exists)", ELEMENT_I32, n_path, acceptance.path);
    dump_add_scalar_i32(&d, "accept.n_accepted", "I32 [1]: draft tokens accepted", acceptance.n_accepted);
    dump_add_scalar_i32(&d, "accept.bonus", "I32 [1]: the target's token after the path (its argmax at the last accepted node)",
                        acceptance.bonus);
    dump_add_1d(&d, "accept.emitted", "I32 [n_accepted + 1]: the tokens this pass emits: the accepted tokens, then the bonus",
                ELEMENT_I32, n_path, emitted);
    // the request ran the same pass first: it emitted the same tokens (unless it stopped earlier)
    for (int i = 0; i < n_path && n_prompt + 1 + i < record->n_tokens; i++) {
        if (record->tokens[n_prompt + 1 + i] != emitted[i]) {
            fprintf(stderr, "error: internal: dump: the detailed first pass emitted token %d where the request emitted %d\n",
                    emitted[i], record->tokens[n_prompt + 1 + i]);
            exit(EXIT_FAILURE); // generation is deterministic: a program bug
        }
    }
    free(mask);
    sequence_free(&sequence);

    // 3. one trainer step on the record
    TrainerSettings s = o->train;
    UnrollPlan plan;
    int status = 0;
    float step_loss = 0.0f;
    if (!unroll_plan_columns(&plan, record, &s)) {
        fprintf(stderr, "error: the request (%d prompt + %d generated tokens) has nothing to train on: raise -n\n", n_prompt,
                record->n_tokens - n_prompt);
        status = 1;
    } else {
        Trainer trainer;
        trainer_init(&trainer, &draft, &target, s);
        dump_add_scalar_i32(&d, "train.first_column", "I32 [1]: the position of the unroll's column 0 (column t pairs "
                            "request.features[first_column + t] with request.tokens[first_column + t + 1]): max(0, n_prompt - "
                            "2 - context_window)", plan.first_column);
        dump_add_scalar_i32(&d, "train.n_prompt", "I32 [1]: prompt tokens (a position >= n_prompt is a completion token)", n_prompt);
        // forward and backward as trainer_step runs them, without the update: the gradients before clipping
        TrainStats unroll_stats;
        memset(&unroll_stats, 0, sizeof(unroll_stats));
        size_t n_floats = trainer.draft.n_weight_floats;
        backend->zero(trainer.grads, n_floats * sizeof(float));
        float unroll_loss = record_unroll(&trainer, &s, record, 1.0f, 1, &unroll_stats, NULL, 0);
        double steps_loss = dump_unroll_steps(&d, &trainer, record, &s);
        float* grads = mallocCheck(n_floats * sizeof(float));
        backend->download(grads, trainer.grads, n_floats * sizeof(float));
        float learning_rate = trainer_learning_rate(&trainer);
        TrainStats step_stats;
        trainer_step(&trainer, &record, 1, &step_stats);
        // the same computation twice: equal on the CPU tables; a GPU's reductions may round differently per run
        if (fabsf(step_stats.loss - unroll_loss) > 1e-5f * (1.0f + fabsf(unroll_loss)) || step_stats.rejected) {
            fprintf(stderr, "error: internal: dump: trainer_step's loss %.9g (rejected %d) differs from its unroll's %.9g\n",
                    step_stats.loss, step_stats.rejected, unroll_loss);
            exit(EXIT_FAILURE); // a program bug
        }
        if (fabs(steps_loss - unroll_stats.accepted_loss) > 1e-5 * (1.0 + fabs(steps_loss))) {
            fprintf(stderr, "error: internal: dump: the steps' losses sum to %.9g, the trainer's accepted loss is %.9g\n",
                    steps_loss, unroll_stats.accepted_loss);
            exit(EXIT_FAILURE); // this file's per-step view and the trainer disagree: a program bug
        }
        step_loss = step_stats.loss;
        dump_add_scalar_f32(&d, "train.loss", "F32 [1]: the step's loss: sum_k step_decay^k L_k (+ the discard loss when "
                            "--discard-weight > 0)", step_stats.loss);
        dump_add_scalar_f32(&d, "train.accepted_loss", "F32 [1]: sum_k step_decay^k L_k", step_stats.accepted_loss);
        dump_add_scalar_f32(&d, "train.discard_loss", "F32 [1]: the discard (rejected-branch) loss, 0 when off",
                            step_stats.discard_loss);
        dump_add_scalar_f32(&d, "train.grad_norm", "F32 [1]: the global gradient norm before clipping", step_stats.grad_norm);
        dump_add_scalar_f32(&d, "train.clip_factor", "F32 [1]: the factor every gradient was multiplied by before AdamW: "
                            "max_grad_norm / grad_norm when the norm is above it, else 1", step_stats.clip_factor);
        dump_add_scalar_f32(&d, "train.learning_rate", "F32 [1]: the learning rate of this step (after warm-up)", learning_rate);
        dump_draft_arena(&d, &draft, grads, "train.grad.", "F32: d train.loss / d weight, before clipping and AdamW");
        dump_draft_arena(&d, &draft, trainer.draft.weight_arena, "train.updated.", "F32: the weight after the step (clip to "
                         "max_grad_norm, AdamW from zero moments, step 1)");
        free(grads);
        char* config = dump_config_json(o, &target, &draft, &s, record, plan.first_column, backend->name);
        safetensors_writer_add_metadata(&d.writer, "aurora.dump.config", config);
        free(config);
        trainer_free(&trainer);
    }
    fputs("\n}", d.doc);
    dump_close_memory(d.doc, &d.doc_text);
    if (status == 0) {
        safetensors_writer_add_metadata(&d.writer, "aurora.dump.doc", d.doc_text);
        if (safetensors_writer_save(&d.writer, o->out_path, &err) != 0) { status = fail(&err); }
        else {
            fprintf(stderr, "wrote %s: %d tensors; request of %d + %d tokens, first pass: %d drafted nodes, %d accepted; "
                    "trainer step loss %.6f\n", o->out_path, d.writer.n_tensors, n_prompt, record->n_tokens - n_prompt, N - 1,
                    acceptance.n_accepted, step_loss);
        }
    }
    free(d.doc_text);
    safetensors_writer_free(&d.writer);
    free(generated);
    record_free(record);
    draft_source_free(&source);
    draft_free(&draft);
    free(prompt);
    target_free(&target);
    return status;
}
