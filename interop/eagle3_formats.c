/*
interop/eagle3_formats.c: EAGLE-3 drafts in the formats other systems use, written and read.

  our GGUF          architecture "aurora-draft" (draft.c: draft_save / draft_load)
  llama.cpp         one GGUF file, architecture "eagle3" (llama.cpp: src/models/eagle3.cpp)
  SpecForge         a directory with model.safetensors + config.json, the layout SpecForge exports and
                    SGLang and vLLM load (reference/eagle3_formats.md; our safetensors code: safetensors.c)

  draft_export_llama_cpp / draft_export_specforge   a Draft to another system's format
  eagle3_format_of / eagle3_import                  recognise and read either; draft_load (draft.c)
                                                    calls them, so --draft and --draft-init take any of
                                                    the three formats

The conventions, as read from llama.cpp's source (the copy in llama-cpp-python 0.3.36, vendor/llama.cpp)
and from SGLang's (for SpecForge):
- Feature layers. Our taps are the residual-stream OUTPUTS of layers a, b, c (default 1, L/2-1, L-4).
  llama.cpp's `eagle3.target_layers` holds INPUT indices: common/speculative.cpp turns on
  llama_set_embeddings_layer_inp(ctx_tgt, id), and src/models/llama.cpp stores the input of layer il as
  t_layer_inp[il], the output of layer il-1. So target_layers = [a+1, b+1, c+1]; its converter's default
  (conversion/llama.py) is [2, L//2, L-3], our default. SGLang's `eagle_config.
  eagle_aux_hidden_state_layer_ids` holds OUTPUT indices (set_eagle3_layers_to_capture adds 1 before
  capturing layer inputs), so we write our taps there unchanged. A top-level
  `eagle_aux_hidden_state_layer_ids` (vLLM, and what llama.cpp's converter copies into target_layers)
  holds INPUT indices: we never write it, and read it as taps + 1. A draft whose layers differ from the
  target's taps is refused: its fc would read the wrong features without any error.
- fc input order: the three features concatenated low, mid, high, in the order of the layer list
  (common/speculative.cpp interleaves target_layer_ids[k] into slot k; SGLang concatenates its captures).
- d2t: llama.cpp stores absolute target ids as a GGML I64 tensor "d2t" [V_d] (its converter adds the
  index to SpecForge's offsets; the graph scatters draft logit i to target id d2t[i] with ggml_set_rows);
  absent means V_d = V and the identity. SpecForge stores offsets, target id = i + d2t[i], as int64 [V_d],
  and t2d as bool [V] (true where a target id is in the draft vocabulary). We write both and check, on
  reading, that t2d agrees with d2t.
- Q and K rows: llama.cpp's RoPE for eagle3 is LLAMA_ROPE_TYPE_NORM (src/llama-model.cpp), the adjacent-
  pair layout our weights are in, so the llama.cpp export is our rows unchanged. SpecForge is Hugging
  Face's rotate_half layout: we undo llama.cpp's converter permutation (LlamaModel.permute) on export and
  redo it on import.
- The layer (src/models/eagle3.cpp; SGLang llama_eagle3.py): attention input concat(input_layernorm(e),
  hidden_norm(g)), embedding first; residual on g before its norm (norm_before_residual false, the only
  variant we read); no norm before fc (norm_before_fc / fc_norm refused).
- Embedding: neither export writes one (llama.cpp's token_embd and SpecForge's embed_tokens are
  optional; both systems then use the target's, which is what our draft reads). On import a stored
  embedding is ignored: our draft always reads the target's.
- LM head: always written (llama.cpp "output.weight" [V_d rows], SpecForge "lm_head.weight"), and
  `tie_word_embeddings: false` in config.json (true makes SGLang bind lm_head to embed_tokens and ignore
  draft_vocab_size). A llama.cpp draft without "output.weight" inherits the target's LM head, as
  llama.cpp does.
- Numbers: rope theta and the RMSNorm epsilon are copied (float32 in GGUF; the shortest decimal that
  reads back to the same float32 in config.json), max_position_embeddings is the target's context.
- Types: written in F32 (bit-exact round trips) or BF16 (--dtype bf16); read from F32, F16 or BF16 (and,
  in GGUF, our quantised types).

Included by aurora.c after safetensors.c (one translation unit). It uses the Draft's public contract
(aurora.h: DraftConfig, the tensor table, d2t, draft_init_random) and base/json.c's JSON parser.
*/
#include <sys/stat.h>
#include "aurora.h"


// ----------------------------------------------------------------------------
// names: one row per draft tensor, in our table's order

typedef enum { ROPE_ROWS_NONE = 0, ROPE_ROWS_Q, ROPE_ROWS_K } RopeRows;
typedef struct {
    const char* ours;           // DraftTensorInfo.gguf_name
    const char* llama_cpp;      // src/llama-arch.cpp names, block 0
    const char* specforge;      // SpecForge / SGLang (vLLM's speculators format says layers.0. for midlayer.)
    RopeRows rope_rows;         // Q / K projections: rows reordered between GGUF and Hugging Face layouts
} Eagle3TensorName;

static const Eagle3TensorName EAGLE3_TENSOR_NAMES[DRAFT_NUM_TENSORS] = {
    {"draft.fc.weight",          "fc.weight",                "fc.weight",                                ROPE_ROWS_NONE},
    {"draft.embed_norm.weight",  "blk.0.attn_norm.weight",   "midlayer.input_layernorm.weight",          ROPE_ROWS_NONE},
    {"draft.hidden_norm.weight", "blk.0.attn_norm_2.weight", "midlayer.hidden_norm.weight",              ROPE_ROWS_NONE},
    {"draft.attn_q.weight",      "blk.0.attn_q.weight",      "midlayer.self_attn.q_proj.weight",         ROPE_ROWS_Q},
    {"draft.attn_k.weight",      "blk.0.attn_k.weight",      "midlayer.self_attn.k_proj.weight",         ROPE_ROWS_K},
    {"draft.attn_v.weight",      "blk.0.attn_v.weight",      "midlayer.self_attn.v_proj.weight",         ROPE_ROWS_NONE},
    {"draft.attn_output.weight", "blk.0.attn_output.weight", "midlayer.self_attn.o_proj.weight",         ROPE_ROWS_NONE},
    {"draft.ffn_norm.weight",    "blk.0.ffn_norm.weight",    "midlayer.post_attention_layernorm.weight", ROPE_ROWS_NONE},
    {"draft.ffn_gate.weight",    "blk.0.ffn_gate.weight",    "midlayer.mlp.gate_proj.weight",            ROPE_ROWS_NONE},
    {"draft.ffn_up.weight",      "blk.0.ffn_up.weight",      "midlayer.mlp.up_proj.weight",              ROPE_ROWS_NONE},
    {"draft.ffn_down.weight",    "blk.0.ffn_down.weight",    "midlayer.mlp.down_proj.weight",            ROPE_ROWS_NONE},
    {"draft.output_norm.weight", "output_norm.weight",       "norm.weight",                              ROPE_ROWS_NONE},
    {"draft.lm_head.weight",     "output.weight",            "lm_head.weight",                           ROPE_ROWS_NONE},
};

// The draft's table row with our name (a missing row is a program bug: the table and this file disagree).
static const DraftTensorInfo* eagle3_draft_tensor(const Draft* draft, const char* ours) {
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        if (strcmp(draft->tensors[i].gguf_name, ours) == 0) { return &draft->tensors[i]; }
    }
    fprintf(stderr, "error: interop: the draft has no tensor '%s' (aurora.h's table changed?)\n", ours);
    exit(EXIT_FAILURE);
}

// Q and K rows. Our layout (GGUF, RoPE mode NORM) rotates the pair (2j, 2j+1) of each head; Hugging
// Face's rotate_half rotates (j, j + HS/2). llama.cpp's converter (conversion/llama.py,
// LlamaModel.permute: reshape(n_head, 2, HS/2, in).swapaxes(1, 2)) maps HF to GGUF:
//   GGUF row h*HS + 2j + k  =  HF row h*HS + k*HS/2 + j        (k = 0, 1; j < HS/2)
// to_hf = 1 applies the inverse. out and in are (n_heads*HS, cols) and must not overlap.
static void eagle3_permute_rope_rows(float* out, const float* in, int n_heads, int head_size, int cols, int to_hf) {
    for (int h = 0; h < n_heads; h++) {
        for (int j = 0; j < head_size / 2; j++) {
            for (int k = 0; k < 2; k++) {
                size_t gguf_row = (size_t)h * head_size + 2 * j + k;
                size_t hf_row = (size_t)h * head_size + (size_t)k * (head_size / 2) + j;
                memcpy(out + (to_hf ? hf_row : gguf_row) * cols, in + (to_hf ? gguf_row : hf_row) * cols,
                       (size_t)cols * sizeof(float));
            }
        }
    }
}

static int eagle3_rope_heads(const DraftConfig* c, RopeRows rows) {
    return rows == ROPE_ROWS_Q ? c->n_heads : c->n_kv_heads;
}

// ----------------------------------------------------------------------------
// building a Draft from another format's pieces

// A Draft of the given layer shape and vocabulary, through the public initialiser: draft_init_random
// takes its shape from a target, so it gets a copy of the target with the file's layer shape (config
// fields only; the copy shares the target's pointers and is dropped, never freed). Every weight is
// then overwritten by the caller. d2t must already be checked (distinct ids in [0, V)).
static void eagle3_draft_alloc(Draft* draft, const Target* target, const DraftConfig* shape, const int32_t* d2t) {
    Target* shaped = mallocCheck(sizeof(Target));
    memcpy(shaped, target, sizeof(Target));
    shaped->config.n_heads = shape->n_heads;
    shaped->config.n_kv_heads = shape->n_kv_heads;
    shaped->config.head_size = shape->head_size;
    shaped->config.ffn_dim = shape->ffn_dim;
    shaped->config.rope_theta = shape->rope_theta;
    shaped->config.norm_eps = shape->norm_eps;
    draft_init_random(draft, shaped, shape->vocab_size, d2t, 0);
    free(shaped);
}

// The tensor table of a layer shape, without weights: every tensor of a file is checked against it before
// the draft, whose size the file's config sets, is allocated (a config asking for a huge FFN over tensors
// of the ordinary size must fail on the first tensor, not after allocating gigabytes).
static void eagle3_shape_table(Draft* shape_only, const DraftConfig* c) {
    memset(shape_only, 0, sizeof(*shape_only));
    shape_only->config = *c;
    draft_build_tensor_table(shape_only);
}

// Checks a layer shape read from a file against the target (the draft's width is the target's: it
// reads the target's embedding) and against itself.
static int eagle3_check_shape(const DraftConfig* c, const Target* target, const char* path, Error* err) {
    const TargetConfig* tc = &target->config;
    if (c->dim != tc->dim) {
        return error_set(err, "%s: draft width %d, expected the target's width %d (the draft reads the target's "
                         "embedding)", path, c->dim, tc->dim);
    }
    if (c->n_heads < 1 || c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads != 0 || c->head_size < 2 ||
        c->head_size % 2 != 0 || c->head_size > 4096 || c->n_heads > 1024 || c->ffn_dim < MODEL_MIN_FFN || c->ffn_dim > (1 << 20)) {
        return error_set(err, "%s: draft heads %d, key/value heads %d, head size %d, FFN width %d: expected the "
                         "heads to divide into key/value groups, an even head size and sizes in range", path,
                         c->n_heads, c->n_kv_heads, c->head_size, c->ffn_dim);
    }
    if (model_check_head_group(path, "draft heads", c->n_heads, c->n_kv_heads, err)) { return -1; }
    if (!(c->rope_theta > 0.0f) || !isfinite(c->rope_theta) || !(c->norm_eps > 0.0f) || !isfinite(c->norm_eps)) {
        return error_set(err, "%s: rope theta %g / RMSNorm epsilon %g, expected positive finite values", path,
                         c->rope_theta, c->norm_eps);
    }
    if (c->vocab_size < 1 || c->vocab_size > tc->vocab_size) {
        return error_set(err, "%s: draft vocabulary of %d ids, expected 1 to %d (the target's)", path, c->vocab_size,
                         tc->vocab_size);
    }
    return 0;
}

// The taps a file asks for (output indices) must be the target's: fc was trained on those features.
static int eagle3_check_taps(const int* taps, const Target* target, const char* path, const char* where, Error* err) {
    const int* ours = target->config.tap_layers;
    if (taps[0] != ours[0] || taps[1] != ours[1] || taps[2] != ours[2]) {
        return error_set(err, "%s: %s asks for the outputs of target layers %d, %d, %d, but this target taps %d, %d, "
                         "%d (Aurora's 1, L/2-1, L-4); the draft's fc would read the wrong features", path, where,
                         taps[0], taps[1], taps[2], ours[0], ours[1], ours[2]);
    }
    return 0;
}

// A draft file's own token embedding is not read: the draft runs on the target's, as SGLang runs it (it
// overwrites the file's) and as SpecForge trains by default (a frozen copy of the target's). vLLM and
// llama.cpp use the file's instead, so a draft trained with another embedding would run differently there
// than here; and an export from here drops it, so that llama.cpp then uses the target's, as here.
static void eagle3_warn_own_embedding(const char* path, const char* name) {
    fprintf(stderr, "warning: %s: tensor '%s' (the draft's own token embedding) is not read: the draft runs on the "
            "target's embedding, as SGLang runs it (vLLM and llama.cpp would use the file's)\n", path, name);
}

// Absolute target ids (int64) to d2t: each in [0, V) and distinct.
static int eagle3_check_ids(int32_t* d2t, const int64_t* ids, int Vd, int V, const char* path, const char* what,
                            Error* err) {
    uint8_t* seen = callocCheck((size_t)V, 1);
    int status = 0;
    for (int i = 0; i < Vd && status == 0; i++) {
        if (ids[i] < 0 || ids[i] >= V) {
            status = error_set(err, "%s: %s maps draft id %d to target id %lld, expected an id in [0, %d)", path, what,
                               i, (long long)ids[i], V);
        } else if (seen[ids[i]]) {
            status = error_set(err, "%s: %s maps two draft ids to target id %lld (the second is draft id %d), expected "
                               "distinct ids", path, what, (long long)ids[i], i);
        } else {
            seen[ids[i]] = 1;
            d2t[i] = (int32_t)ids[i];
        }
    }
    free(seen);
    return status;
}

// ----------------------------------------------------------------------------
// llama.cpp: one GGUF file, architecture "eagle3"

// Writes every metadata key of the target whose name starts with "tokenizer." (llama.cpp loads a
// vocabulary for every model, the draft included, and its graph sizes the d2t scatter by it).
static int eagle3_copy_tokenizer(GGUFWriter* writer, const GGUFFile* file, Error* err) {
    const char** skip = mallocCheck((size_t)(file->n_values + 1) * sizeof(char*));
    size_t n_skip = 0;
    for (uint64_t i = 0; i < file->n_values; i++) {
        if (strncmp(file->values[i].key, "tokenizer.", 10) != 0) { skip[n_skip++] = file->values[i].key; }
    }
    skip[n_skip] = NULL;
    int status = gguf_writer_copy_values(writer, file, skip, err);
    free(skip);
    return status;
}

int draft_export_llama_cpp(const Draft* draft, const Target* target, const char* path, int type, Error* err) {
    const DraftConfig* c = &draft->config;
    const TargetConfig* tc = &target->config;
    if (gguf_find(&target->file, "tokenizer.ggml.model") == NULL) {
        return error_set(err, "%s: the target has no tokenizer (key 'tokenizer.ggml.model'); llama.cpp needs it in the "
                         "draft file too", target->file.path);
    }
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_add_string(writer, "general.architecture", "eagle3");
    gguf_writer_add_string(writer, "general.name", "aurora-eagle3-draft");
    gguf_writer_add_uint32(writer, "eagle3.context_length", (uint32_t)tc->context_length);
    gguf_writer_add_uint32(writer, "eagle3.embedding_length", (uint32_t)c->dim);
    gguf_writer_add_uint32(writer, "eagle3.block_count", 1);
    gguf_writer_add_uint32(writer, "eagle3.feed_forward_length", (uint32_t)c->ffn_dim);
    gguf_writer_add_uint32(writer, "eagle3.attention.head_count", (uint32_t)c->n_heads);
    gguf_writer_add_uint32(writer, "eagle3.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    gguf_writer_add_uint32(writer, "eagle3.attention.key_length", (uint32_t)c->head_size);
    gguf_writer_add_uint32(writer, "eagle3.attention.value_length", (uint32_t)c->head_size);
    gguf_writer_add_uint32(writer, "eagle3.rope.dimension_count", (uint32_t)c->head_size);
    gguf_writer_add_float32(writer, "eagle3.rope.freq_base", c->rope_theta);
    gguf_writer_add_float32(writer, "eagle3.attention.layer_norm_rms_epsilon", c->norm_eps);
    int32_t target_layers[3];   // input indices: our taps are layer outputs (see the top of this file)
    for (int i = 0; i < 3; i++) { target_layers[i] = tc->tap_layers[i] + 1; }
    gguf_writer_add_array(writer, "eagle3.target_layers", GGUF_TYPE_INT32, target_layers, 3);
    gguf_writer_add_uint32(writer, "eagle3.target_hidden_size", (uint32_t)tc->dim);
    gguf_writer_add_bool(writer, "eagle3.norm_before_residual", 0);
    if (eagle3_copy_tokenizer(writer, &target->file, err) != 0) { gguf_writer_free(writer); return -1; }
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = eagle3_draft_tensor(draft, EAGLE3_TENSOR_NAMES[i].ours);
        int64_t shape[2] = {info->cols, info->rows};   // GGUF order: row length first
        int is_vector = info->cols == 1;
        gguf_writer_add_tensor(writer, EAGLE3_TENSOR_NAMES[i].llama_cpp, is_vector ? TYPE_F32 : type,
                               is_vector ? 1 : 2, is_vector ? &shape[1] : shape, *info->data);
    }
    // d2t as absolute ids in I64 (through float: exact, ids are below 2^24)
    float* ids = mallocCheck((size_t)c->vocab_size * sizeof(float));
    for (int i = 0; i < c->vocab_size; i++) { ids[i] = (float)draft->d2t[i]; }
    int64_t d2t_shape[1] = {c->vocab_size};
    gguf_writer_add_tensor(writer, "d2t", TYPE_I64, 1, d2t_shape, ids);
    free(ids);
    int status = gguf_writer_save(writer, path, err);
    gguf_writer_free(writer);
    return status;
}

// An integer key in [lo, hi]; when not required, an absent key leaves *out unchanged.
static int eagle3_gguf_count(const GGUFFile* file, const char* key, int required, int lo, int hi, int* out, Error* err) {
    if (!required && gguf_find(file, key) == NULL) { return 0; }
    int64_t value;
    if (gguf_get_int(file, key, &value, err) != 0) { return -1; }
    if (value < lo || value > hi) {
        return error_set(err, "%s: key '%s' is %lld, expected a value in [%d, %d]", file->path, key, (long long)value, lo, hi);
    }
    *out = (int)value;
    return 0;
}

// An optional bool that must be false (a variant our draft does not implement).
static int eagle3_gguf_false(const GGUFFile* file, const char* key, const char* why, Error* err) {
    if (gguf_find(file, key) == NULL) { return 0; }
    int value;
    if (gguf_get_bool(file, key, &value, err) != 0) { return -1; }
    if (value) { return error_set(err, "%s: key '%s' is true (%s), which this draft does not implement; expected false", file->path, key, why); }
    return 0;
}

// "[a, b]" for a tensor's shape (n_dims of them; GGUF's or safetensors' order, as given) into out.
static const char* eagle3_shape_text(char* out, size_t size, int n_dims, const int64_t* shape) {
    size_t n = (size_t)snprintf(out, size, "[");
    for (int i = 0; i < n_dims && n < size; i++) { n += (size_t)snprintf(out + n, size - n, "%s%lld", i ? ", " : "", (long long)shape[i]); }
    if (n < size) { snprintf(out + n, size - n, "]"); }
    return out;
}

// A float tensor of shape (rows, cols) (vector: cols == 1) into out.
static int eagle3_gguf_tensor(const GGUFFile* file, const GGUFTensor* tensor, int rows, int cols, float* out, Error* err) {
    int shape_ok = cols == 1 ? tensor->n_dims == 1 && tensor->shape[0] == rows
                             : tensor->n_dims == 2 && tensor->shape[0] == cols && tensor->shape[1] == rows;
    if (!shape_ok) {
        char got[96], expected[64];
        int64_t want[2] = {cols == 1 ? rows : cols, rows};
        return error_set(err, "%s: tensor '%s' has %d dimensions %s, expected %s (GGUF order)", file->path, tensor->name,
                         tensor->n_dims, eagle3_shape_text(got, sizeof(got), tensor->n_dims, tensor->shape),
                         eagle3_shape_text(expected, sizeof(expected), cols == 1 ? 1 : 2, want));
    }
    if (tensor_type_is_integer(tensor->type)) {
        return error_set(err, "%s: tensor '%s' has integer type %s, expected a float type", file->path, tensor->name,
                         tensor_type_name(tensor->type));
    }
    if (out != NULL) { gguf_tensor_to_f32(tensor, out); }   // (NULL: the check alone)
    return 0;
}

// An eagle3 GGUF carries a tokenizer (the export copies the target's; llama.cpp's converter copies the target
// model's, padded to the config's vocabulary size). Where it has one, it must be the target's by the rule
// llama.cpp applies to a separate draft model's vocabulary (common_speculative_are_compatible; its eagle3 path
// checks nothing): token counts at most EAGLE3_VOCAB_MAX_DIFFERENCE apart, and the same text for every id from
// EAGLE3_VOCAB_CHECK_FROM up to the shorter count. A draft made for another tokenizer would otherwise load and
// propose that tokenizer's ids.
enum { EAGLE3_VOCAB_MAX_DIFFERENCE = 128, EAGLE3_VOCAB_CHECK_FROM = 5 };
static int eagle3_check_tokenizer(const GGUFFile* file, const Target* target, Error* err) {
    if (gguf_find(file, "tokenizer.ggml.tokens") == NULL || !target->has_tokenizer) { return 0; }
    char** tokens = NULL;
    uint64_t n = 0;
    if (gguf_get_string_array(file, "tokenizer.ggml.tokens", &tokens, &n, err) != 0) { return -1; }
    const Tokenizer* t = &target->tokenizer;
    uint64_t n_target = (uint64_t)t->vocab_size, shorter = n < n_target ? n : n_target;
    int status = 0;
    if ((n > n_target ? n - n_target : n_target - n) > EAGLE3_VOCAB_MAX_DIFFERENCE) {
        status = error_set(err, "%s: its tokenizer has %llu tokens and the target's %d, more than %d apart; expected the "
                           "target's tokenizer (the draft was made for another model)", file->path, (unsigned long long)n,
                           t->vocab_size, EAGLE3_VOCAB_MAX_DIFFERENCE);
    }
    for (uint64_t i = EAGLE3_VOCAB_CHECK_FROM; i < shorter && status == 0; i++) {
        if (strcmp(tokens[i], t->tokens[i]) != 0) {
            char mine[48], theirs[48];
            status = error_set(err, "%s: token %llu of its tokenizer is \"%s\" and the target's \"%s\"; expected the target's "
                               "tokenizer (the draft was made for another model)", file->path, (unsigned long long)i,
                               printable_text(tokens[i], mine, sizeof(mine)), printable_text(t->tokens[i], theirs, sizeof(theirs)));
        }
    }
    free_string_array(tokens, n);
    return status;
}

static int eagle3_import_llama_cpp(Draft* draft, const char* path, const Target* target, Error* err) {
    GGUFFile file;
    if (gguf_open(&file, path, err) != 0) { return -1; }
    const TargetConfig* tc = &target->config;
    DraftConfig c = {0};
    int n_layers = 0, status = 0;
    int32_t* target_layers = NULL;
    uint64_t n_target_layers = 0;
    int target_hidden = 0;
    double value = 10000.0;   // llama.cpp's default rope base when the key is absent
    c.rope_theta = 10000.0f;
    if (eagle3_gguf_count(&file, "eagle3.embedding_length", 1, 1, 1 << 16, &c.dim, err) ||
        eagle3_gguf_count(&file, "eagle3.block_count", 1, 1, 1024, &n_layers, err) ||
        eagle3_gguf_count(&file, "eagle3.feed_forward_length", 1, MODEL_MIN_FFN, 1 << 20, &c.ffn_dim, err) ||
        eagle3_gguf_count(&file, "eagle3.attention.head_count", 1, 1, 1024, &c.n_heads, err) ||
        eagle3_gguf_count(&file, "eagle3.target_hidden_size", 1, 1, 1 << 16, &target_hidden, err) ||
        eagle3_gguf_false(&file, "eagle3.norm_before_residual", "the residual taken after hidden_norm", err) ||
        eagle3_gguf_false(&file, "eagle3.norm_before_fc", "an RMSNorm before fc, EAGLE 3.1", err)) {
        status = -1;
    }
    if (status == 0) {
        c.n_kv_heads = c.n_heads;
        c.head_size = c.n_heads > 0 ? c.dim / c.n_heads : 0;
        int value_length = -1, rope_dims = -1;
        if (eagle3_gguf_count(&file, "eagle3.attention.head_count_kv", 0, 1, 1024, &c.n_kv_heads, err) ||
            eagle3_gguf_count(&file, "eagle3.attention.key_length", 0, 1, 1 << 16, &c.head_size, err) ||
            eagle3_gguf_count(&file, "eagle3.attention.value_length", 0, 1, 1 << 16, &value_length, err) ||
            eagle3_gguf_count(&file, "eagle3.rope.dimension_count", 0, 1, 1 << 16, &rope_dims, err)) {
            status = -1;
        } else if (n_layers != 1) {
            status = error_set(err, "%s: key 'eagle3.block_count' is %d, expected 1 (an EAGLE-3 draft has one layer)", path, n_layers);
        } else if ((value_length == -1 ? c.dim / c.n_heads : value_length) != c.head_size ||
                   (rope_dims != -1 && rope_dims != c.head_size)) {
            // (an absent value length is the width over the heads, as llama.cpp reads it, not the key length)
            status = error_set(err, "%s: head size %d, value length %d%s, rope dimension count %d: expected all equal "
                               "(full rotary, one head size)", path, c.head_size,
                               value_length == -1 ? c.dim / c.n_heads : value_length,
                               value_length == -1 ? " (absent: the width over the heads)" : "", rope_dims);
        } else if (target_hidden != tc->dim) {
            status = error_set(err, "%s: key 'eagle3.target_hidden_size' is %d, expected the target's width %d", path,
                               target_hidden, tc->dim);
        }
    }
    if (status == 0 && gguf_find(&file, "eagle3.rope.freq_base") != NULL && gguf_get_float(&file, "eagle3.rope.freq_base", &value, err) != 0) { status = -1; }
    c.rope_theta = (float)value;
    if (status == 0 && gguf_get_float(&file, "eagle3.attention.layer_norm_rms_epsilon", &value, err) != 0) { status = -1; }
    c.norm_eps = (float)value;
    if (status == 0 && rope_scaling_check(&file, "eagle3", err) != 0) { status = -1; }
    if (status == 0) { status = eagle3_check_tokenizer(&file, target, err); }
    if (status == 0 && gguf_get_int_array(&file, "eagle3.target_layers", &target_layers, &n_target_layers, err) != 0) { status = -1; }
    if (status == 0) {
        if (n_target_layers != 3) {
            status = error_set(err, "%s: key 'eagle3.target_layers' has %llu entries, expected 3", path,
                               (unsigned long long)n_target_layers);
        } else {
            int taps[3];
            for (int i = 0; i < 3 && status == 0; i++) {
                if (target_layers[i] < 1 || target_layers[i] > tc->n_layers) {
                    status = error_set(err, "%s: key 'eagle3.target_layers' has %d at index %d, expected a layer number in "
                                       "[1, %d] (the input of that layer)", path, target_layers[i], i, tc->n_layers);
                } else {
                    taps[i] = target_layers[i] - 1;
                }
            }
            if (status == 0) {
                status = eagle3_check_taps(taps, target, path, "key 'eagle3.target_layers' (layer inputs, i.e. outputs of the "
                                           "layer before)", err);
            }
        }
    }
    free(target_layers);

    // tensors: every one known; d2t (optional) gives the draft vocabulary
    const GGUFTensor* found[DRAFT_NUM_TENSORS] = {0};
    const GGUFTensor* d2t_tensor = NULL;
    for (uint64_t t = 0; t < file.n_tensors && status == 0; t++) {
        const GGUFTensor* tensor = &file.tensors[t];
        int known = 0;
        for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
            if (strcmp(tensor->name, EAGLE3_TENSOR_NAMES[i].llama_cpp) == 0) { found[i] = tensor; known = 1; }
        }
        if (strcmp(tensor->name, "d2t") == 0) { d2t_tensor = tensor; known = 1; }
        if (strcmp(tensor->name, "token_embd.weight") == 0) { known = 1; eagle3_warn_own_embedding(path, tensor->name); }
        if (!known) {
            status = error_set(err, "%s: unexpected tensor '%s' (%s); this reader takes a plain EAGLE-3 draft: fc, blk.0.*, "
                               "output_norm, output, d2t, token_embd", path, tensor->name,
                               strcmp(tensor->name, "rope_freqs.weight") == 0 ? "RoPE frequency scaling is not implemented"
                               : strcmp(tensor->name, "enc.output_norm.weight") == 0 ? "a norm before fc, EAGLE 3.1" : "unknown");
        }
    }
    for (int i = 0; i < DRAFT_NUM_TENSORS && status == 0; i++) {
        if (found[i] == NULL && strcmp(EAGLE3_TENSOR_NAMES[i].llama_cpp, "output.weight") != 0) {
            status = error_set(err, "%s: required tensor '%s' is missing", path, EAGLE3_TENSOR_NAMES[i].llama_cpp);
        }
    }
    const GGUFTensor* output = found[DRAFT_NUM_TENSORS - 1];
    int32_t* d2t = NULL;
    if (status == 0) {
        c.vocab_size = tc->vocab_size;
        if (d2t_tensor != NULL) {
            if (d2t_tensor->n_dims != 1 || (d2t_tensor->type != TYPE_I64 && d2t_tensor->type != TYPE_I32)) {
                status = error_set(err, "%s: tensor 'd2t' has %d dimensions of type %s, expected one dimension of I64 "
                                   "(absolute target ids)", path, d2t_tensor->n_dims, tensor_type_name(d2t_tensor->type));
            } else if (d2t_tensor->shape[0] > tc->vocab_size) {
                status = error_set(err, "%s: tensor 'd2t' has %lld ids, expected at most the target's vocabulary %d", path,
                                   (long long)d2t_tensor->shape[0], tc->vocab_size);
            } else {
                c.vocab_size = (int)d2t_tensor->shape[0];
                int64_t* ids = mallocCheck((size_t)c.vocab_size * sizeof(int64_t));
                const uint8_t* bytes = d2t_tensor->data;
                for (int i = 0; i < c.vocab_size; i++) {
                    if (d2t_tensor->type == TYPE_I64) { memcpy(&ids[i], bytes + 8 * (size_t)i, 8); }
                    else { int32_t v; memcpy(&v, bytes + 4 * (size_t)i, 4); ids[i] = v; }
                }
                d2t = mallocCheck((size_t)c.vocab_size * sizeof(int32_t));
                status = eagle3_check_ids(d2t, ids, c.vocab_size, tc->vocab_size, path, "tensor 'd2t'", err);
                free(ids);
            }
        } else if (output != NULL && output->n_dims == 2 && output->shape[1] != tc->vocab_size) {
            status = error_set(err, "%s: tensor 'output.weight' has %lld rows but there is no 'd2t'; expected the target's "
                               "%d rows (no d2t means the draft vocabulary is the target's)", path,
                               (long long)output->shape[1], tc->vocab_size);
        }
        if (status == 0 && output == NULL && c.vocab_size != tc->vocab_size) {
            status = error_set(err, "%s: no 'output.weight' (the target's LM head is inherited) but 'd2t' has %d ids; "
                               "expected the target's %d", path, c.vocab_size, tc->vocab_size);
        }
        // an inherited head's row i is target id i, so a d2t beside it must say the same: any other order would
        // name every proposal wrongly (llama.cpp would compute the same wrong thing: the file is incoherent)
        for (int i = 0; status == 0 && output == NULL && d2t != NULL && i < c.vocab_size; i++) {
            if (d2t[i] != i) {
                status = error_set(err, "%s: no 'output.weight' (the target's LM head is inherited, row i for target id "
                                   "i) but 'd2t' maps draft id %d to target id %d; expected the identity", path, i, d2t[i]);
            }
        }
    }
    if (status == 0) { status = eagle3_check_shape(&c, target, path, err); }
    Draft shape_only;   // (a checked shape only: its sizes are products of the config's)
    if (status == 0) { eagle3_shape_table(&shape_only, &c); }
    for (int i = 0; i < DRAFT_NUM_TENSORS && status == 0; i++) {
        const DraftTensorInfo* info = eagle3_draft_tensor(&shape_only, EAGLE3_TENSOR_NAMES[i].ours);
        if (found[i] != NULL) { status = eagle3_gguf_tensor(&file, found[i], info->rows, info->cols, NULL, err); }
    }
    if (status != 0) { free(d2t); gguf_close(&file); return -1; }

    eagle3_draft_alloc(draft, target, &c, d2t);
    free(d2t);
    for (int i = 0; i < DRAFT_NUM_TENSORS && status == 0; i++) {
        const DraftTensorInfo* info = eagle3_draft_tensor(draft, EAGLE3_TENSOR_NAMES[i].ours);
        if (found[i] != NULL) {
            status = eagle3_gguf_tensor(&file, found[i], info->rows, info->cols, *info->data, err);
        } else {   // output.weight absent: the target's LM head, as llama.cpp inherits it
            matrix_to_host_f32(target->backend, target->weights.output, info->rows, info->cols, *info->data);
        }
    }
    gguf_close(&file);
    if (status != 0) { draft_free(draft); return -1; }
    return 0;
}

// ----------------------------------------------------------------------------
// SpecForge / SGLang: a directory with model.safetensors and config.json

// The shortest decimal that reads back (through strtod, as our reader does) to the same float32.
// Whole numbers (rope theta) keep Hugging Face's look, 10000.0.
static void json_write_float(FILE* out, float value) {
    char text[48];
    if (value == floorf(value) && fabsf(value) < 1e15f) { fprintf(out, "%.1f", (double)value); return; }
    for (int precision = 1; precision <= 9; precision++) {
        snprintf(text, sizeof(text), "%.*g", precision, (double)value);
        if ((float)strtod(text, NULL) == value) { break; }
    }
    fputs(text, out);
}

static char* eagle3_join(const char* directory, const char* name) {
    size_t n = strlen(directory) + strlen(name) + 2;
    char* path = mallocCheck(n);
    snprintf(path, n, "%s/%s", directory, name);
    return path;
}

// config.json into out, finished (output_finish): the caller renames it once the weights are written too.
static int eagle3_write_config(const Draft* draft, const Target* target, const char* path, int type, OutputFile* out,
                               Error* err) {
    const DraftConfig* c = &draft->config;
    const TargetConfig* tc = &target->config;
    if (output_open(out, path, err) != 0) { return -1; }
    FILE* f = out->stream;
    fprintf(f, "{\n  \"architectures\": [\"LlamaForCausalLMEagle3\"],\n  \"model_type\": \"llama\",\n");
    fprintf(f, "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n", c->dim, c->ffn_dim);
    fprintf(f, "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n", c->n_heads,
            c->n_kv_heads, c->head_size);
    fprintf(f, "  \"num_hidden_layers\": 1,\n  \"hidden_act\": \"silu\",\n  \"attention_bias\": false,\n");
    fprintf(f, "  \"rms_norm_eps\": ");
    json_write_float(f, c->norm_eps);
    fprintf(f, ",\n  \"rope_theta\": ");
    json_write_float(f, c->rope_theta);
    fprintf(f, ",\n  \"rope_scaling\": null,\n  \"max_position_embeddings\": %d,\n", tc->context_length);
    fprintf(f, "  \"vocab_size\": %d,\n  \"draft_vocab_size\": %d,\n  \"target_hidden_size\": %d,\n", tc->vocab_size,
            c->vocab_size, tc->dim);
    fprintf(f, "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"%s\",\n", type == TYPE_BF16 ? "bfloat16" : "float32");
    fprintf(f, "  \"eagle_config\": {\"use_aux_hidden_state\": true, \"eagle_aux_hidden_state_layer_ids\": [%d, %d, %d]}\n}\n",
            tc->tap_layers[0], tc->tap_layers[1], tc->tap_layers[2]);
    return output_finish(out, err);
}

// Whether a SpecForge directory holds a sharded checkpoint's index (model.safetensors.index.json).
static int eagle3_has_shard_index(const char* directory) {
    char* index = eagle3_join(directory, "model.safetensors.index.json");
    struct stat info;
    int present = stat(index, &info) == 0;
    free(index);
    return present;
}

int draft_export_specforge(const Draft* draft, const Target* target, const char* directory, int type, Error* err) {
    const DraftConfig* c = &draft->config;
    if (type != TYPE_F32 && type != TYPE_BF16) {
        return error_set(err, "%s: SpecForge drafts are written in F32 or BF16, not %s", directory, tensor_type_name(type));
    }
    if (eagle3_has_shard_index(directory)) {
        return error_set(err, "%s: holds model.safetensors.index.json, a sharded checkpoint's index: SGLang and vLLM would "
                         "load the shards it names, not the model.safetensors written here; expected a directory without it",
                         directory);
    }
    int created = 0;   // (a failed export removes the directories it made: nothing is left that was not there)
    if (make_directories_counted(directory, &created, err) != 0) { return -1; }
    SafetensorsWriter writer = {0};
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const Eagle3TensorName* name = &EAGLE3_TENSOR_NAMES[i];
        const DraftTensorInfo* info = eagle3_draft_tensor(draft, name->ours);
        const float* values = *info->data;
        float* permuted = NULL;
        if (name->rope_rows != ROPE_ROWS_NONE) {
            permuted = mallocCheck(info->n_elements * sizeof(float));
            eagle3_permute_rope_rows(permuted, values, eagle3_rope_heads(c, name->rope_rows), c->head_size, info->cols, 1);
            values = permuted;
        }
        int64_t shape[2] = {info->rows, info->cols};   // PyTorch order: (out, in)
        int n_dims = info->cols == 1 ? 1 : 2;
        if (type == TYPE_F32) {
            safetensors_writer_add(&writer, name->specforge, "F32", n_dims, shape, values, info->n_elements * 4);
        } else {
            uint8_t* packed = mallocCheck(info->n_elements * 2);
            quantize_row(TYPE_BF16, values, packed, (int64_t)info->n_elements);
            safetensors_writer_add(&writer, name->specforge, "BF16", n_dims, shape, packed, info->n_elements * 2);
            free(packed);
        }
        free(permuted);
    }
    // d2t as offsets (target id = i + d2t[i]), t2d as a mask over the target vocabulary
    int V = c->target_vocab_size;
    int64_t* offsets = mallocCheck((size_t)c->vocab_size * sizeof(int64_t));
    uint8_t* mask = callocCheck((size_t)V, 1);
    for (int i = 0; i < c->vocab_size; i++) {
        offsets[i] = (int64_t)draft->d2t[i] - i;
        mask[draft->d2t[i]] = 1;
    }
    int64_t d2t_shape[1] = {c->vocab_size}, t2d_shape[1] = {V};
    safetensors_writer_add(&writer, "d2t", "I64", 1, d2t_shape, offsets, (size_t)c->vocab_size * 8);
    safetensors_writer_add(&writer, "t2d", "BOOL", 1, t2d_shape, mask, (size_t)V);
    free(offsets);
    free(mask);
    char* weights_path = eagle3_join(directory, "model.safetensors");
    char* config_path = eagle3_join(directory, "config.json");
    // both files written in full before either replaces an older export (then two renames in one directory)
    OutputFile config;
    int status = eagle3_write_config(draft, target, config_path, type, &config, err);
    if (status == 0) {
        status = safetensors_writer_save(&writer, weights_path, err);
        if (status == 0) { status = output_commit(&config, err); } else { output_abandon(&config); }
    }
    safetensors_writer_free(&writer);
    free(weights_path);
    free(config_path);
    if (status != 0) { remove_directories(directory, created); }
    return status;
}

// config.json getters: a member that must be an integer in [lo, hi] / a finite number / a bool.
static int eagle3_json_int(const JsonValue* root, const char* path, const char* key, int required, int lo, int hi,
                           int* out, Error* err) {
    const JsonValue* value = json_get(root, key);
    if (value == NULL || (!required && value->type == JSON_NULL)) {
        return required ? error_set(err, "%s: required key '%s' is missing", path, key) : 0;
    }
    if (value->type != JSON_NUMBER || value->number != floor(value->number) || value->number < lo || value->number > hi) {
        return error_set(err, "%s: key '%s' is %s, expected an integer in [%d, %d]", path, key,
                         value->type == JSON_NUMBER ? "out of range" : json_type_name(value->type), lo, hi);
    }
    *out = (int)value->number;
    return 0;
}

static int eagle3_json_number(const JsonValue* root, const char* path, const char* key, float* out, Error* err) {
    const JsonValue* value = json_get(root, key);
    if (value == NULL || value->type == JSON_NULL) { return 0; }
    if (value->type != JSON_NUMBER) {
        return error_set(err, "%s: key '%s' is %s, expected a finite number", path, key, json_type_name(value->type));
    }
    if (!isfinite((float)value->number)) {   // (finite as a double, past the float range)
        return error_set(err, "%s: key '%s' is %g, expected a number within the float range", path, key, value->number);
    }
    *out = (float)value->number;
    return 0;
}

// An optional flag that must be false / absent (a variant our draft does not implement).
static int eagle3_json_false(const JsonValue* root, const char* path, const char* key, const char* why, Error* err) {
    const JsonValue* value = json_get(root, key);
    if (value == NULL || value->type == JSON_NULL || value->type == JSON_FALSE) { return 0; }
    return error_set(err, "%s: key '%s' is %s (%s), which this draft does not implement; expected false", path, key,
                     json_type_name(value->type), why);
}

// Three layer ids in an array, into taps; shift converts input indices to outputs.
static int eagle3_json_taps(const JsonValue* value, const char* path, const char* key, int shift, int* taps, Error* err) {
    if (value->type != JSON_ARRAY) {
        return error_set(err, "%s: key '%s' is %s, expected an array of 3 layer ids", path, key, json_type_name(value->type));
    }
    if (value->n != 3) {
        return error_set(err, "%s: key '%s' has %d elements, expected an array of 3 layer ids", path, key, value->n);
    }
    for (int i = 0; i < 3; i++) {
        const JsonValue* id = &value->items[i];
        if (id->type != JSON_NUMBER || id->number != floor(id->number) || fabs(id->number) > 1e6) {
            return error_set(err, "%s: key '%s' element %d is not an integer layer id", path, key, i);
        }
        taps[i] = (int)id->number - shift;
    }
    return 0;
}

// Parses config.json (text of length bytes, path for messages) into a layer shape and the vocabulary
// size, and checks it against the target (vocabulary, width, taps).
static int eagle3_parse_config(DraftConfig* c, const char* text, size_t length, const char* path, const Target* target,
                               Error* err) {
    const TargetConfig* tc = &target->config;
    size_t first = 0;
    while (first < length && (text[first] == ' ' || text[first] == '\t' || text[first] == '\r' || text[first] == '\n')) { first++; }
    if (first >= length || text[first] != '{') {
        return error_set(err, "%s: expected one JSON object (a Hugging Face config.json)", path);
    }
    JsonValue root;
    int status = json_parse_line(text, length, path, 1, &root, err);
    if (status != 0) { return -1; }
    // vLLM's speculators format nests the layer's Llama keys in transformer_layer_config (and names its tensors
    // and its d2t otherwise): said as such, rather than as the first Llama key missing at the top level
    const char* speculators = json_get(&root, "transformer_layer_config") ? "transformer_layer_config"
                            : json_get(&root, "speculators_config") ? "speculators_config" : NULL;
    if (speculators != NULL) {
        json_free(&root);
        return error_set(err, "%s: has key '%s': a vLLM speculators config, which is not read here; expected a SpecForge / "
                         "SGLang config.json (architectures LlamaForCausalLMEagle3, the layer's keys at the top level)",
                         path, speculators);
    }
    int n_layers = 0, target_vocab = 0, target_hidden = tc->dim;
    memset(c, 0, sizeof(*c));
    c->rope_theta = 10000.0f;   // Hugging Face LlamaConfig defaults
    c->norm_eps = 1e-6f;
    if (eagle3_json_int(&root, path, "num_hidden_layers", 1, 1, 1024, &n_layers, err) ||
        eagle3_json_int(&root, path, "hidden_size", 1, 1, 1 << 16, &c->dim, err) ||
        eagle3_json_int(&root, path, "intermediate_size", 1, MODEL_MIN_FFN, 1 << 20, &c->ffn_dim, err) ||
        eagle3_json_int(&root, path, "num_attention_heads", 1, 1, 1024, &c->n_heads, err) ||
        eagle3_json_int(&root, path, "vocab_size", 1, 1, 1 << 24, &target_vocab, err) ||
        eagle3_json_int(&root, path, "target_hidden_size", 0, 1, 1 << 16, &target_hidden, err) ||
        eagle3_json_number(&root, path, "rms_norm_eps", &c->norm_eps, err) ||
        eagle3_json_number(&root, path, "rope_theta", &c->rope_theta, err) ||
        eagle3_json_false(&root, path, "norm_before_residual", "the residual taken after hidden_norm", err) ||
        eagle3_json_false(&root, path, "norm_before_fc", "an RMSNorm before fc, EAGLE 3.1", err) ||
        eagle3_json_false(&root, path, "attention_bias", "biases on q, k, v, o", err) ||
        eagle3_json_false(&root, path, "tie_word_embeddings", "the LM head tied to the token embedding: SGLang then "
                          "uses the embedding, not lm_head.weight", err)) {
        status = -1;
    }
    // newer Hugging Face configs keep RoPE's settings in rope_parameters, read before rope_theta (as llama.cpp's
    // converter reads them)
    const JsonValue* rope = json_get(&root, "rope_parameters");
    if (status == 0 && rope != NULL && rope->type != JSON_NULL) {
        const JsonValue* rope_type = rope->type == JSON_OBJECT ? json_get(rope, "rope_type") : NULL;
        if (rope->type != JSON_OBJECT) {
            status = error_set(err, "%s: key 'rope_parameters' is %s, expected an object", path, json_type_name(rope->type));
        } else if (rope_type != NULL && (rope_type->type != JSON_STRING || strcmp(rope_type->string, "default") != 0)) {
            status = error_set(err, "%s: key 'rope_parameters.rope_type' is %s%s%s, expected \"default\" (RoPE scaling is not "
                               "implemented)", path, rope_type->type == JSON_STRING ? "\"" : json_type_name(rope_type->type),
                               rope_type->type == JSON_STRING ? rope_type->string : "", rope_type->type == JSON_STRING ? "\"" : "");
        } else if (eagle3_json_number(rope, path, "rope_theta", &c->rope_theta, err) != 0) {
            status = -1;
        }
    }
    if (status == 0) {
        c->n_kv_heads = c->n_heads;
        c->head_size = c->dim / c->n_heads;
        c->vocab_size = target_vocab;
        if (eagle3_json_int(&root, path, "num_key_value_heads", 0, 1, 1024, &c->n_kv_heads, err) ||
            eagle3_json_int(&root, path, "head_dim", 0, 1, 1 << 16, &c->head_size, err) ||
            eagle3_json_int(&root, path, "draft_vocab_size", 0, 1, 1 << 24, &c->vocab_size, err)) {
            status = -1;
        }
    }
    const JsonValue* scaling = json_get(&root, "rope_scaling");
    const JsonValue* activation = json_get(&root, "hidden_act");
    if (status != 0) {
    } else if (n_layers != 1) {
        status = error_set(err, "%s: key 'num_hidden_layers' is %d, expected 1 (an EAGLE-3 draft has one layer)", path, n_layers);
    } else if (target_vocab != tc->vocab_size) {
        status = error_set(err, "%s: key 'vocab_size' is %d, expected the target's vocabulary %d", path, target_vocab, tc->vocab_size);
    } else if (target_hidden != tc->dim) {
        status = error_set(err, "%s: key 'target_hidden_size' is %d, expected the target's width %d", path, target_hidden, tc->dim);
    } else if (scaling != NULL && scaling->type != JSON_NULL) {
        status = error_set(err, "%s: key 'rope_scaling' is set, expected null (RoPE scaling is not implemented)", path);
    } else if (activation != NULL && (activation->type != JSON_STRING || strcmp(activation->string, "silu") != 0)) {
        status = error_set(err, "%s: key 'hidden_act' is not \"silu\", expected the SwiGLU MLP", path);
    } else if (json_get(&root, "fc_norm") != NULL && json_get(&root, "fc_norm")->type == JSON_TRUE) {
        status = error_set(err, "%s: key 'fc_norm' is true (EAGLE 3.1), which this draft does not implement", path);
    }
    // feature layers: SGLang's eagle_config ids are layer outputs; a top-level list is layer inputs
    if (status == 0) {
        int taps[3] = {tc->tap_layers[0], tc->tap_layers[1], tc->tap_layers[2]};
        const JsonValue* eagle = json_get(&root, "eagle_config");
        const JsonValue* nested = eagle != NULL && eagle->type == JSON_OBJECT ? json_get(eagle, "eagle_aux_hidden_state_layer_ids") : NULL;
        const JsonValue* top = json_get(&root, "eagle_aux_hidden_state_layer_ids");
        const char* where = NULL;
        const JsonValue* aux = eagle != NULL && eagle->type == JSON_OBJECT ? json_get(eagle, "use_aux_hidden_state") : NULL;
        if (eagle != NULL && eagle->type != JSON_NULL && eagle->type != JSON_OBJECT) {
            status = error_set(err, "%s: key 'eagle_config' is %s, expected an object (SGLang's, holding "
                               "eagle_aux_hidden_state_layer_ids) or null", path, json_type_name(eagle->type));
        } else if (aux != NULL && aux->type != JSON_NULL && aux->type != JSON_TRUE) {
            // (false: SGLang gives the draft the target's last hidden state alone, and the draft has no fc over
            // three tapped layers)
            status = error_set(err, "%s: key 'eagle_config.use_aux_hidden_state' is %s: the draft would read the target's "
                               "last hidden state alone, which this draft does not implement; expected true (fc over three "
                               "tapped layers)", path, json_type_name(aux->type));
        } else if (nested != NULL && nested->type != JSON_NULL) {
            where = "eagle_config.eagle_aux_hidden_state_layer_ids (layer outputs, SGLang)";
            status = eagle3_json_taps(nested, path, "eagle_config.eagle_aux_hidden_state_layer_ids", 0, taps, err);
            // both lists: SGLang reads the first, vLLM and llama.cpp the second, so they must name the same taps
            int top_taps[3];
            if (status == 0 && top != NULL && top->type != JSON_NULL &&
                (status = eagle3_json_taps(top, path, "eagle_aux_hidden_state_layer_ids", 1, top_taps, err)) == 0 &&
                memcmp(taps, top_taps, sizeof(taps)) != 0) {
                status = error_set(err, "%s: eagle_config.eagle_aux_hidden_state_layer_ids [%d, %d, %d] (layer outputs) and "
                                   "eagle_aux_hidden_state_layer_ids [%d, %d, %d] (layer inputs) name different layers; "
                                   "expected the second to be the first plus 1", path, taps[0], taps[1], taps[2],
                                   top_taps[0] + 1, top_taps[1] + 1, top_taps[2] + 1);
            }
        } else if (top != NULL && top->type != JSON_NULL) {
            where = "eagle_aux_hidden_state_layer_ids (layer inputs, vLLM and llama.cpp)";
            status = eagle3_json_taps(top, path, "eagle_aux_hidden_state_layer_ids", 1, taps, err);
        } else {   // everyone's default: inputs of [2, L//2, L-3]
            int L = tc->n_layers;
            int defaults[3] = {1, L / 2 - 1, L - 4};
            memcpy(taps, defaults, sizeof(taps));
            where = "the default (inputs of layers 2, L//2, L-3, as SGLang, vLLM and llama.cpp use)";
        }
        if (status == 0) { status = eagle3_check_taps(taps, target, path, where, err); }
    }
    json_free(&root);
    return status;
}

static int eagle3_read_config(DraftConfig* c, const char* path, const Target* target, Error* err) {
    char* text = NULL;
    size_t length = 0;
    if (read_text_file(path, 1 << 24, &text, &length, err) != 0) { return -1; }
    int status = eagle3_parse_config(c, text, length, path, target, err);
    free(text);
    return status;
}

// A float tensor of shape (rows, cols) (vector: cols == 1) from safetensors into out.
static int eagle3_safetensors_tensor(const SafetensorsFile* file, const SafetensorsTensor* tensor, int rows, int cols,
                                     float* out, Error* err) {
    int shape_ok = cols == 1 ? tensor->n_dims == 1 && tensor->shape[0] == rows
                             : tensor->n_dims == 2 && tensor->shape[0] == rows && tensor->shape[1] == cols;
    if (!shape_ok) {
        char got[96], expected[64];
        int64_t want[2] = {rows, cols};
        return error_set(err, "%s: tensor '%s' has %d dimensions %s, expected %s", file->path, tensor->name, tensor->n_dims,
                         eagle3_shape_text(got, sizeof(got), tensor->n_dims, tensor->shape),
                         eagle3_shape_text(expected, sizeof(expected), cols == 1 ? 1 : 2, want));
    }
    // (NULL: the check alone, the dtype included, so that a weight of the right shape and an unread dtype is
    // refused before the draft is allocated)
    return safetensors_tensor_to_f32(file, tensor, out, err);
}

// The tensor with this SpecForge name, or its vLLM speculators alias (layers.0. for midlayer.).
static const SafetensorsTensor* eagle3_find_specforge(const SafetensorsFile* file, const char* name) {
    const SafetensorsTensor* tensor = safetensors_find(file, name);
    if (tensor == NULL && strncmp(name, "midlayer.", 9) == 0) {
        char alias[160];
        snprintf(alias, sizeof(alias), "layers.0.%s", name + 9);
        tensor = safetensors_find(file, alias);
    }
    return tensor;
}

// d2t offsets (and t2d, if present) into absolute ids; absent d2t means the identity (V_d = V).
static int eagle3_read_vocabulary(int32_t* d2t, const SafetensorsFile* file, int Vd, int V, Error* err) {
    const SafetensorsTensor* offsets = safetensors_find(file, "d2t");
    const SafetensorsTensor* mask = safetensors_find(file, "t2d");
    int64_t* ids = mallocCheck((size_t)Vd * sizeof(int64_t));
    int status = 0;
    if (offsets == NULL) {
        if (Vd != V) {
            status = error_set(err, "%s: no tensor 'd2t' but draft_vocab_size %d differs from vocab_size %d; expected a d2t "
                               "map", file->path, Vd, V);
        }
        for (int i = 0; i < Vd; i++) { ids[i] = i; }
    } else if (offsets->n_dims != 1 || offsets->shape[0] != Vd ||
               (strcmp(offsets->dtype, "I64") != 0 && strcmp(offsets->dtype, "I32") != 0)) {
        status = error_set(err, "%s: tensor 'd2t' has dtype %s and %d dimensions [%lld], expected I64 [%d] "
                           "(draft_vocab_size offsets)", file->path, offsets->dtype, offsets->n_dims,
                           offsets->n_dims > 0 ? (long long)offsets->shape[0] : 0ll, Vd);
    } else {
        int is_i64 = offsets->dtype[1] == '6';
        for (int i = 0; i < Vd; i++) {
            int64_t offset;
            if (is_i64) { memcpy(&offset, offsets->data + 8 * (size_t)i, 8); }
            else { int32_t v; memcpy(&v, offsets->data + 4 * (size_t)i, 4); offset = v; }
            // offsets are bounded before the addition so it cannot overflow
            if (offset > (int64_t)V || offset < -(int64_t)V - Vd) {
                status = error_set(err, "%s: tensor 'd2t' (offsets: target id = i + d2t[i]) holds %lld at draft id %d, "
                                   "expected an offset to an id in [0, %d)", file->path, (long long)offset, i, V);
                break;
            }
            ids[i] = offset + i;
        }
    }
    if (status == 0) { status = eagle3_check_ids(d2t, ids, Vd, V, file->path, "tensor 'd2t' (offsets: target id = i + d2t[i])", err); }
    free(ids);
    if (status == 0 && mask != NULL) {
        if (mask->n_dims != 1 || mask->shape[0] != V || (strcmp(mask->dtype, "BOOL") != 0 && strcmp(mask->dtype, "U8") != 0)) {
            status = error_set(err, "%s: tensor 't2d' has dtype %s and %d dimensions, expected BOOL [%d] (vocab_size)",
                               file->path, mask->dtype, mask->n_dims, V);
        } else {
            uint8_t* in_draft = callocCheck((size_t)V, 1);
            for (int i = 0; i < Vd; i++) { in_draft[d2t[i]] = 1; }
            for (int t = 0; t < V && status == 0; t++) {
                if ((mask->data[t] != 0) != in_draft[t]) {
                    status = error_set(err, "%s: tensor 't2d' says target id %d is %sin the draft vocabulary, but d2t %s; "
                                       "expected them to agree", file->path, t, mask->data[t] ? "" : "not ",
                                       in_draft[t] ? "maps a draft id to it" : "does not map to it");
                }
            }
            free(in_draft);
        }
    }
    return status;
}

static int eagle3_import_specforge(Draft* draft, const char* path, const Target* target, Error* err) {
    // path: the directory, or its model.safetensors
    struct stat info;
    int is_directory = stat(path, &info) == 0 && S_ISDIR(info.st_mode);
    char* directory = NULL;
    char* weights_path = NULL;
    if (is_directory) {
        directory = mallocCheck(strlen(path) + 1);
        strcpy(directory, path);
        weights_path = eagle3_join(directory, "model.safetensors");
    } else {
        directory = directory_of(path);
        weights_path = mallocCheck(strlen(path) + 1);
        strcpy(weights_path, path);
    }
    char* config_path = eagle3_join(directory, "config.json");
    DraftConfig c;
    int status = eagle3_read_config(&c, config_path, target, err);
    if (status == 0) { status = eagle3_check_shape(&c, target, config_path, err); }
    SafetensorsFile file = {0};
    // a sharded checkpoint's index: SGLang and vLLM load the shards it names (and no model.safetensors beside them),
    // so a directory holding one is refused whether or not a model.safetensors is there too
    if (status == 0 && eagle3_has_shard_index(directory)) {
        status = error_set(err, "%s: holds model.safetensors.index.json, a sharded checkpoint, which is not supported (SGLang "
                           "and vLLM would load the shards it names); expected one model.safetensors and no index", directory);
    }
    if (status == 0 && safetensors_open(&file, weights_path, err) != 0) { status = -1; }
    // every tensor known; the 13 weights present
    const SafetensorsTensor* found[DRAFT_NUM_TENSORS] = {0};
    for (int i = 0; i < DRAFT_NUM_TENSORS && status == 0; i++) {
        found[i] = eagle3_find_specforge(&file, EAGLE3_TENSOR_NAMES[i].specforge);
        if (found[i] == NULL) {
            status = error_set(err, "%s: required tensor '%s' is missing%s", weights_path, EAGLE3_TENSOR_NAMES[i].specforge,
                               strcmp(EAGLE3_TENSOR_NAMES[i].specforge, "lm_head.weight") == 0
                               ? " (a draft with tie_word_embeddings has none; expected its own LM head)" : "");
        }
    }
    for (int t = 0; t < file.n_tensors && status == 0; t++) {
        const char* name = file.tensors[t].name;
        int known = strcmp(name, "d2t") == 0 || strcmp(name, "t2d") == 0 || strcmp(name, "embed_tokens.weight") == 0;
        if (strcmp(name, "embed_tokens.weight") == 0) { eagle3_warn_own_embedding(weights_path, name); }
        for (int i = 0; i < DRAFT_NUM_TENSORS; i++) { known |= found[i] == &file.tensors[t]; }
        if (!known) {
            status = error_set(err, "%s: unexpected tensor '%s'; this reader takes a plain EAGLE-3 draft (fc, midlayer.*, "
                               "norm, lm_head, d2t, t2d, embed_tokens)%s", weights_path, name,
                               strncmp(name, "fc_norm", 7) == 0 || strcmp(name, "input_norm.weight") == 0
                               ? "; EAGLE 3.1's norms before fc are not implemented" : "");
        }
    }
    int32_t* d2t = NULL;
    if (status == 0) {
        d2t = mallocCheck((size_t)c.vocab_size * sizeof(int32_t));
        status = eagle3_read_vocabulary(d2t, &file, c.vocab_size, target->config.vocab_size, err);
    }
    Draft shape_only;   // (a checked shape only: its sizes are products of the config's)
    if (status == 0) { eagle3_shape_table(&shape_only, &c); }
    for (int i = 0; i < DRAFT_NUM_TENSORS && status == 0; i++) {
        const DraftTensorInfo* info = eagle3_draft_tensor(&shape_only, EAGLE3_TENSOR_NAMES[i].ours);
        status = eagle3_safetensors_tensor(&file, found[i], info->rows, info->cols, NULL, err);
    }
    if (status == 0) {
        eagle3_draft_alloc(draft, target, &c, d2t);
        for (int i = 0; i < DRAFT_NUM_TENSORS && status == 0; i++) {
            const Eagle3TensorName* name = &EAGLE3_TENSOR_NAMES[i];
            const DraftTensorInfo* tensor = eagle3_draft_tensor(draft, name->ours);
            status = eagle3_safetensors_tensor(&file, found[i], tensor->rows, tensor->cols, *tensor->data, err);
            if (status == 0 && name->rope_rows != ROPE_ROWS_NONE) {
                float* hf = mallocCheck(tensor->n_elements * sizeof(float));
                memcpy(hf, *tensor->data, tensor->n_elements * sizeof(float));
                eagle3_permute_rope_rows(*tensor->data, hf, eagle3_rope_heads(&c, name->rope_rows), c.head_size,
                                         tensor->cols, 0);
                free(hf);
            }
        }
        if (status != 0) { draft_free(draft); }
    }
    free(d2t);
    safetensors_close(&file);
    free(directory);
    free(config_path);
    free(weights_path);
    return status;
}

// ----------------------------------------------------------------------------
// recognising a format, and the one entry point draft_load uses

// A directory or a .safetensors file is SpecForge; a GGUF whose general.architecture is "eagle3" is
// llama.cpp's; anything else (our GGUF, a missing file, garbage) is left to draft_load to read or report.
int eagle3_format_of(const char* path) {
    struct stat info;
    if (stat(path, &info) != 0) { return DRAFT_FORMAT_AURORA; }
    if (S_ISDIR(info.st_mode)) { return DRAFT_FORMAT_SPECFORGE; }
    size_t n = strlen(path);
    if (n >= 12 && strcmp(path + n - 12, ".safetensors") == 0) { return DRAFT_FORMAT_SPECFORGE; }
    if (!S_ISREG(info.st_mode)) { return DRAFT_FORMAT_AURORA; }
    GGUFFile file;
    Error ignored;
    if (gguf_open(&file, path, &ignored) != 0) { return DRAFT_FORMAT_AURORA; }
    const GGUFValue* architecture = gguf_find(&file, "general.architecture");
    int is_eagle3 = architecture != NULL && architecture->type == GGUF_TYPE_STRING && architecture->string_length == 6 &&
                    memcmp(architecture->string, "eagle3", 6) == 0;
    gguf_close(&file);
    return is_eagle3 ? DRAFT_FORMAT_LLAMA_CPP : DRAFT_FORMAT_AURORA;
}

int eagle3_import(Draft* draft, const char* path, int format, const Target* target, Error* err) {
    memset(draft, 0, sizeof(*draft));
    if (format == DRAFT_FORMAT_LLAMA_CPP) { return eagle3_import_llama_cpp(draft, path, target, err); }
    if (format == DRAFT_FORMAT_SPECFORGE) { return eagle3_import_specforge(draft, path, target, err); }
    return error_set(err, "%s: not a llama.cpp or SpecForge draft", path);
}

