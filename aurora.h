/*
aurora.h: every type, every tensor and every public function of Aurora-in-C, in one place.

Aurora-in-C is a reference implementation of self-improving speculative decoding: a real target LLM
(Llama architecture, loaded from GGUF) verifies the guesses of a small draft model, and the draft is
trained online from the requests it serves. This header is the map of the code:

  cpu_ref.c   every op of the forward pass as plain, readable fp32 loops (the reference)
  kernels.cu  the CUDA twin of every op in cpu_ref.c: same name root with _cuda, same argument order
  gguf.c      GGUF reader (validated, memory-mapped), writer, tensor-type (de)quantisation
  tokenizer.c byte-level BPE tokenizer built from GGUF metadata, ChatML template
  aurora.c    the system: target model, sampling, CLI; #includes cpu_ref.c, gguf.c, tokenizer.c

Dimension legend (used in every shape comment):
  T   tokens processed in one forward call       C    model width (embedding_length)
  L   layers                                     NH   query heads
  NKV key/value heads (grouped-query attention)  HS   head size = C / NH
  F   feed-forward hidden width                  V    vocabulary size
  P   key/value cache slots visible to a call    S    cache capacity (slots)
  KVD key/value width = NKV * HS                 QD   query width = NH * HS

Matrices are row-major. A weight of shape (OUT, IN) maps an input row of IN floats to OUT floats; this
is GGUF's shape [IN, OUT] (GGUF lists the fastest-varying dimension first).

Errors: loading and parsing functions never exit. They return 0 on success and -1 on failure, with a
message in an Error that names the file, the key or tensor, and what was expected.
*/
#ifndef AURORA_H
#define AURORA_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#ifdef __cplusplus
extern "C" { // kernels.cu (C++ under nvcc) calls and defines functions of this header with C linkage
#endif

// ----------------------------------------------------------------------------
// errors

typedef struct {
    char message[1024];
} Error;

// Formats a message into err (if err is not NULL) and returns -1, so callers can write
// `return error_set(err, "%s: ...", path);`.
int error_set(Error* err, const char* format, ...) __attribute__((format(printf, 2, 3)));

// For allocation failures and internal invariants: prints file:line and exits. Not for bad input.
void* checked_malloc(size_t size, const char* file, int line);
void* checked_calloc(size_t count, size_t size, const char* file, int line);
#define mallocCheck(size) checked_malloc(size, __FILE__, __LINE__)
#define callocCheck(count, size) checked_calloc(count, size, __FILE__, __LINE__)

// ----------------------------------------------------------------------------
// files (util.c): inputs are regular files only, outputs are replaced atomically

// Opens a regular file for reading. The open itself never blocks (O_NONBLOCK, so a FIFO or a device is
// refused by fstat on the opened descriptor, not waited on); returns the descriptor (blocking again)
// and the file size, or -1 with a message naming the path and what it is.
int open_regular_file(const char* path, size_t* size, Error* err);
// Reads a whole regular file of at most max_bytes into a malloc'd, NUL-terminated buffer.
int read_text_file(const char* path, size_t max_bytes, char** text, size_t* length, Error* err);
// Creates a directory and its parents with mkdir(2) (no shell); existing directories are fine.
int make_directories(const char* path, Error* err);
// Checks, before any work starts, that path can be written: its directory exists (or, with
// create_directory, is created) and a file can be created in it. Nothing at path itself changes.
int check_writable(const char* path, int create_directory, Error* err);

// An output written to a temporary file in the same directory and renamed over the target only when
// every byte is written, flushed and synced: a failure leaves the old file intact.
//   OutputFile out; if (output_open(&out, path, err) != 0) ...; fprintf(out.stream, ...);
//   if (output_commit(&out, err) != 0) ...   (or output_abandon(&out) to drop it)
typedef struct {
    FILE* stream;
    char* path;                 // the target
    char* temporary_path;       // PATH.tmp.PID beside it
} OutputFile;
int output_open(OutputFile* out, const char* path, Error* err);
int output_commit(OutputFile* out, Error* err);  // write errors (a full disk, a size limit) are errors here
void output_abandon(OutputFile* out);
// Writes n bytes to path atomically (output_open, fwrite, output_commit).
int write_file_atomic(const char* path, const void* bytes, size_t n, Error* err);

// ----------------------------------------------------------------------------
// tensor types (numbering is GGUF's ggml_type)

enum {
    TYPE_F32  = 0,
    TYPE_F16  = 1,
    TYPE_Q4_0 = 2,   // blocks of 32: fp16 scale d, 16 bytes of nibbles; x = d * (q - 8)
    TYPE_Q4_1 = 3,   // blocks of 32: fp16 scale d, fp16 min m, 16 bytes of nibbles; x = d * q + m
    TYPE_Q8_0 = 8,   // blocks of 32: fp16 scale d, 32 int8; x = d * q
    TYPE_I32  = 26,  // integer tensors (llama.cpp's eagle3 d2t is I64): values convert to and from float,
    TYPE_I64  = 27,  // exactly for |x| < 2^24
    TYPE_BF16 = 30,
};

int tensor_type_supported(int type);          // 1 for the eight types above
const char* tensor_type_name(int type);       // "F32", "Q4_1", ... ("unknown" otherwise)
int64_t tensor_type_block_size(int type);     // elements per block (1 for F32/F16/BF16, 32 for Q*)
size_t tensor_type_block_bytes(int type);     // bytes per block
// Bytes of n elements (n must be a multiple of the block size; returns 0 otherwise or if unsupported).
size_t tensor_bytes(int type, int64_t n);
// Converts n elements (a multiple of the block size) between fp32 and a supported type.
void dequantize_row(int type, const void* source, float* destination, int64_t n);
void quantize_row(int type, const float* source, void* destination, int64_t n);
// A weight matrix as a backend keeps it: (rows, cols) row-major, each row cols values stored in `type`
// (TYPE_*; a row of a quantised type is cols / block_size blocks). The reference backend keeps every
// matrix in TYPE_F32; the fast CPU backend reads the GGUF type in place. Dimensions travel beside it, as
// in every op (matmul_forward(out, inp, weight, T, C, OC): weight is (OC, C)).
typedef struct {
    const void* data;
    int type;
} Matrix;
static inline Matrix matrix_f32(const float* data) { Matrix m = {data, TYPE_F32}; return m; }
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);               // round to nearest even
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);               // round to nearest even

// ----------------------------------------------------------------------------
// GGUF: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md

enum {
    GGUF_TYPE_UINT8 = 0, GGUF_TYPE_INT8 = 1, GGUF_TYPE_UINT16 = 2, GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4, GGUF_TYPE_INT32 = 5, GGUF_TYPE_FLOAT32 = 6, GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8, GGUF_TYPE_ARRAY = 9, GGUF_TYPE_UINT64 = 10, GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
};

typedef struct {
    char* key;                  // NUL-terminated copy
    uint32_t type;              // GGUF_TYPE_*
    // scalars, converted: integers and bools in integer (signed view) / uinteger, floats in real
    int64_t integer;
    uint64_t uinteger;
    double real;
    // strings: pointer into the mapping (NOT NUL-terminated) and length in bytes
    const char* string;
    uint64_t string_length;
    // arrays: element type, count, and the raw bytes of the elements inside the mapping.
    // For arrays of strings, raw points at the first (length, bytes) pair.
    uint32_t array_type;
    uint64_t array_count;
    const uint8_t* array_raw;
} GGUFValue;

#define GGUF_MAX_DIMS 4
typedef struct {
    char* name;                 // NUL-terminated copy
    int type;                   // TYPE_*
    int n_dims;
    int64_t shape[GGUF_MAX_DIMS]; // GGUF order: shape[0] is the row length (fastest varying); unused = 1
    int64_t n_elements;
    uint64_t offset;            // from the start of the data section
    size_t n_bytes;
    const void* data;           // inside the mapping
} GGUFTensor;

typedef struct {
    char* path;                 // for messages
    const uint8_t* bytes;       // the whole file (memory-mapped, or a caller-owned buffer)
    size_t size;
    int is_mapped;
    uint32_t version;           // 2 or 3
    uint64_t n_values;
    GGUFValue* values;
    uint64_t n_tensors;
    GGUFTensor* tensors;
    uint64_t alignment;         // general.alignment, default 32
    size_t data_offset;         // start of the tensor data section
} GGUFFile;

// Opens and fully validates a GGUF file: header, every key/value, the tensor table, and that every
// tensor lies inside the file. On failure nothing needs freeing.
int gguf_open(GGUFFile* gguf, const char* path, Error* err);
// The same over a caller-owned buffer (tests, fuzzing). name is used in messages.
int gguf_open_memory(GGUFFile* gguf, const void* bytes, size_t size, const char* name, Error* err);
void gguf_close(GGUFFile* gguf);

const GGUFValue* gguf_find(const GGUFFile* gguf, const char* key);   // NULL if absent
const GGUFTensor* gguf_find_tensor(const GGUFFile* gguf, const char* name);
// Typed getters. A missing key or a value of the wrong kind is an error naming the key, what was
// found and what was expected. get_int accepts any integer type (and checks the value fits).
int gguf_get_int(const GGUFFile* gguf, const char* key, int64_t* out, Error* err);
int gguf_get_float(const GGUFFile* gguf, const char* key, double* out, Error* err); // any float or int
int gguf_get_bool(const GGUFFile* gguf, const char* key, int* out, Error* err);
// Returns a malloc'd NUL-terminated copy (error if the string contains a NUL byte).
int gguf_get_string(const GGUFFile* gguf, const char* key, char** out, Error* err);
// Array of strings: *out is a malloc'd array of count malloc'd NUL-terminated strings; free with
// free_string_array. Array of integers: *out is a malloc'd int32 array (values must fit in int32).
int gguf_get_string_array(const GGUFFile* gguf, const char* key, char*** out, uint64_t* count, Error* err);
int gguf_get_int_array(const GGUFFile* gguf, const char* key, int32_t** out, uint64_t* count, Error* err);
void free_string_array(char** strings, uint64_t count);
// Dequantises a whole tensor to fp32 into destination (n_elements floats).
void gguf_tensor_to_f32(const GGUFTensor* tensor, float* destination);

// GGUF writer: collects metadata and tensors in memory, then writes a version-3 file.
typedef struct GGUFWriter GGUFWriter;
GGUFWriter* gguf_writer_new(void);
void gguf_writer_free(GGUFWriter* writer);
void gguf_writer_set_alignment(GGUFWriter* writer, uint32_t alignment);   // default 32
void gguf_writer_add_uint32(GGUFWriter* writer, const char* key, uint32_t value);
void gguf_writer_add_int32(GGUFWriter* writer, const char* key, int32_t value);
void gguf_writer_add_uint64(GGUFWriter* writer, const char* key, uint64_t value);
void gguf_writer_add_float32(GGUFWriter* writer, const char* key, float value);
void gguf_writer_add_bool(GGUFWriter* writer, const char* key, int value);
void gguf_writer_add_string(GGUFWriter* writer, const char* key, const char* value);
// Arrays of fixed-size elements (element_type not STRING/ARRAY); data holds count elements.
void gguf_writer_add_array(GGUFWriter* writer, const char* key, uint32_t element_type, const void* data, uint64_t count);
void gguf_writer_add_string_array(GGUFWriter* writer, const char* key, const char* const* strings, uint64_t count);
// Adds a tensor given in fp32, stored as `type` (quantised on write). shape in GGUF order.
void gguf_writer_add_tensor(GGUFWriter* writer, const char* name, int type, int n_dims, const int64_t* shape, const float* data);
int gguf_writer_save(GGUFWriter* writer, const char* path, Error* err);
// Copies a file's metadata (all but general.alignment and the NULL-terminated skip_keys) into writer.
int gguf_writer_copy_values(GGUFWriter* writer, const GGUFFile* file, const char* const* skip_keys, Error* err);

// ----------------------------------------------------------------------------
// tokenizer: byte-level BPE (GPT-2 style) with the model's pre-tokenizer

enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6 };

typedef struct TokenizerMergeTable TokenizerMergeTable;   // private to tokenizer.c
typedef struct {
    int vocab_size;
    char** tokens;              // (V) token text as stored in GGUF (GPT-2 byte-to-unicode form)
    int* token_types;           // (V) TOKEN_*
    char** token_bytes;         // (V) decoded raw bytes of each token
    int* token_bytes_length;    // (V)
    int pre_tokenizer;          // which regex split the text before BPE (see tokenizer.c)
    int bos_id, eos_id;         // -1 if absent
    int add_bos;
    TokenizerMergeTable* merges;
    void* token_lookup;         // private: text -> id
} Tokenizer;

int tokenizer_load_gguf(Tokenizer* tokenizer, const GGUFFile* gguf, Error* err);
void tokenizer_free(Tokenizer* tokenizer);
// Encodes len bytes of text. With parse_special, the text of control / user-defined tokens (e.g.
// "<|im_start|>") becomes that token; otherwise it is tokenized as plain text (except user-defined
// tokens, which like in llama.cpp are always matched). Writes at most
// max_ids ids and returns the count, or -1 (with err) if the text needs more than max_ids ids.
int tokenizer_encode(const Tokenizer* tokenizer, const char* text, size_t len, int parse_special,
                     int* ids, int max_ids, Error* err);
// The raw bytes of one token (control tokens give their text). *length receives the byte count.
const char* tokenizer_token_bytes(const Tokenizer* tokenizer, int id, int* length);
// Decodes ids into a malloc'd buffer of bytes (NUL-terminated for convenience; may hold any bytes).
char* tokenizer_decode(const Tokenizer* tokenizer, const int* ids, int n_ids, size_t* length);
// Wraps a user message in the SmolLM2-Instruct ChatML template; returns a malloc'd string.
char* chat_template_apply(const char* user_message);
// Adds tokenizer.ggml.* keys for a tiny byte-level BPE vocabulary of exactly vocab_size (>= 259)
// tokens: <|endoftext|> <|im_start|> <|im_end|> (control, ids 0-2; bos 1, eos 2), the 256 byte
// tokens (ids 3..258, byte b is id 3 + b), then merges learned deterministically from a built-in
// English + code sample (padded with unused tokens if the sample runs out of pairs). For test models.
void gguf_writer_add_tiny_tokenizer(GGUFWriter* writer, int vocab_size);

// ----------------------------------------------------------------------------
// CPU reference ops (cpu_ref.c). Arguments: outputs, inputs, weights, dimensions.

void embedding_forward_cpu(float* out, const int* tokens, const float* table, int T, int C, int V);
void rmsnorm_forward_cpu(float* out, const float* inp, const float* weight, int T, int C, float eps);
void matmul_forward_cpu(float* out, const float* inp, const float* weight, int T, int C, int OC);
void rope_forward_cpu(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta);
void attention_forward_cpu(float* out, const float* q, const float* key_cache, const float* value_cache,
                           const uint8_t* mask, int T, int P, int NH, int NKV, int HS);
void swiglu_forward_cpu(float* out, const float* gate, const float* up, int N);
void residual_forward_cpu(float* out, const float* inp1, const float* inp2, int N);
void softmax_forward_cpu(float* probs, const float* logits, int T, int V);
void kv_compact_cpu(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                    int L, int S, int KVD);

// Backward passes (cpu_ref.c). Each differentiates the forward op of the same name root; gradients
// ACCUMULATE (+=) into d-buffers, so a buffer used twice sums its contributions; a NULL d-buffer is
// skipped. Shapes as in the forward.
void matmul_backward_cpu(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                         int T, int C, int OC);
void rmsnorm_backward_cpu(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          int T, int C, float eps);
// the one exception: rope_backward ASSIGNS dinp = R^T dout (the inverse rotation), dinp == dout allowed
void rope_backward_cpu(float* dinp, const float* dout, const int* positions, int T, int n_heads, int HS, float theta);
// dkeys, dvalues: (P, NKV*HS), the gradients of key_cache / value_cache rows the queries attended to
void attention_backward_cpu(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                            const float* keys, const float* values, const uint8_t* mask,
                            int T, int P, int NH, int NKV, int HS);
void swiglu_backward_cpu(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N);

// Training losses over draft logits (T, V) against a target, one per row, each with a weight:
//   LOSS_FORWARD_KL  soft cross-entropy -sum_v p(v) log q(v) (= KL(p || q) + H(p)); the released Aurora loss
//   LOSS_REVERSE_KL  KL(q || p) = sum_v q(v) (log q(v) - log p(v))
//   LOSS_NEXT_TOKEN  -log q(x), x = target_tokens[t] (the token the target emitted)
// q = softmax(logits[t]); p = p_target[t] (rows of a distribution; unused for NEXT_TOKEN). Writes
// losses[t]; if dlogits is not NULL, ADDS weights[t] * d losses[t] / d logits[t] to it.
// REVERSE_KL clamps log p(v) at log(1e-30) so p(v) = 0 stays finite; weights NULL means 1; p_target may
// be NULL for NEXT_TOKEN and target_tokens NULL for the KL kinds.
typedef enum { LOSS_FORWARD_KL = 0, LOSS_REVERSE_KL = 1, LOSS_NEXT_TOKEN = 2 } LossKind;
void distribution_loss_cpu(float* losses, float* dlogits, const float* logits, const float* p_target,
                           const int* target_tokens, const float* weights, int T, int V, LossKind kind);
// AdamW (decoupled weight decay), step t >= 1 for the bias correction; updates params, m, v in place.
void adamw_update_cpu(float* params, const float* grads, float* m, float* v, size_t N, float learning_rate,
                      float beta1, float beta2, float eps, float weight_decay, int t);
// sum of squares of grads (for global gradient-norm clipping), accumulated in double
double sum_squares_cpu(const float* values, size_t N);

// ----------------------------------------------------------------------------
// random numbers and sampling (sampling.c)

uint32_t random_u32(uint64_t* state);       // xorshift64*
float random_f32(uint64_t* state);          // uniform in [0, 1)
uint64_t random_seed_state(uint64_t seed);  // any seed (0 included) to a usable generator state

typedef struct {
    float temperature;  // 0: greedy (argmax, exact); > 0: sample from softmax(logits / temperature)
    float top_p;        // nucleus: keep the smallest set of tokens whose probability reaches top_p (1 = off)
} SamplerSettings;

typedef struct { float prob; int index; } ProbIndex; // scratch for top-p sorting

int sample_argmax(const float* logits, int V);
int sample_multinomial(const float* probs, int V, float coin);
// Nucleus: zero all but the smallest most-probable set reaching top_p, renormalise (in place).
void apply_top_p(float* probs, int V, float top_p, ProbIndex* scratch);
void logits_to_probs(float* probs, const float* logits, int V, float temperature);
// The exact distribution sample_token draws from when temperature > 0 (temperature, then top-p).
void sampling_distribution(float* probs, const float* logits, int V, SamplerSettings settings, ProbIndex* scratch);
// Greedy when settings.temperature == 0 (coin unused). probs, scratch: (V) workspace.
int sample_token(const float* logits, int V, SamplerSettings settings, float coin, float* probs, ProbIndex* scratch);

// ----------------------------------------------------------------------------
// target model: Llama (token embedding; L x [RMSNorm, GQA attention with RoPE, residual, RMSNorm,
// SwiGLU MLP, residual]; final RMSNorm; LM head, possibly tied to the embedding)

typedef struct {
    int dim;            // C
    int n_layers;       // L
    int n_heads;        // NH
    int n_kv_heads;     // NKV
    int head_size;      // HS = C / NH
    int ffn_dim;        // F
    int vocab_size;     // V
    int context_length; // longest sequence the model was trained for (llama.context_length)
    float rope_theta;   // llama.rope.freq_base
    float norm_eps;     // llama.attention.layer_norm_rms_epsilon
    int tied_output;    // 1 if output.weight is absent and the LM head reuses token_embd.weight
    int tap_layers[3];  // layers whose residual-stream output feeds the draft (default 1, L/2-1, L-4)
} TargetConfig;

// All weights live in one fp32 arena (dequantised at load); the pointers below point into it.
typedef struct {
    float* token_embedding; // (V, C)
    float* attn_norm;       // (L, C)
    float* wq;              // (L, QD, C)
    float* wk;              // (L, KVD, C)
    float* wv;              // (L, KVD, C)
    float* wo;              // (L, C, QD)
    float* ffn_norm;        // (L, C)
    float* w_gate;          // (L, F, C)
    float* w_up;            // (L, F, C)
    float* w_down;          // (L, C, F)
    float* output_norm;     // (C)
    float* output;          // (V, C); == token_embedding when tied
} TargetWeights;

// The tensor table: one row per weight array, so tests and tools can loop "for every tensor".
enum { TARGET_NUM_TENSORS = 12 };
typedef struct {
    const char* gguf_name;  // GGUF name; per-layer names have one %d for the layer
    int per_layer;          // 1: L copies, one per layer
    int rows, cols;         // shape of one copy: (rows, cols), cols fastest (cols == 1 for vectors)
    float** data;           // where the pointer to the (L,) rows, cols array lives in TargetWeights
    size_t n_elements;      // total over all layers
    int required;           // 0 only for output.weight (absent when tied)
} TargetTensorInfo;

// Per-call activations, sized for up to max_tokens tokens per forward call.
typedef struct {
    int max_tokens;         // T capacity
    float* x;               // (T, C) residual stream
    float* x_norm;          // (T, C) normed input of the current sublayer
    float* q;               // (T, QD)
    float* k;               // (T, KVD) (written into the cache after RoPE)
    float* v;               // (T, KVD)
    float* attn_out;        // (T, QD)
    float* proj;            // (T, C) output of wo or w_down before the residual add
    float* ffn_gate;        // (T, F)
    float* ffn_up;          // (T, F)
    float* taps;            // (T, 3*C) residual-stream outputs of the three tap layers, concatenated
    float* hidden;          // (T, C) final normed hidden state (input of the LM head)
    float* logits;          // (T, V)
    uint8_t* mask;          // (T, S) attention mask of the current call
    float* layer_outputs;   // (L, T, C) residual stream after each layer; NULL unless a test asks
} TargetActivations;

typedef struct {
    TargetConfig config;
    TargetWeights weights;
    float* weight_arena;        // every weight, fp32
    size_t n_weight_floats;
    TargetTensorInfo tensors[TARGET_NUM_TENSORS];
    int cache_capacity;         // S: key/value cache slots
    float* key_cache;           // (L, S, KVD)
    float* value_cache;         // (L, S, KVD)
    TargetActivations act;
    Tokenizer tokenizer;
    int has_tokenizer;
    GGUFFile file;
} Target;

// Loads config, weights (every tensor dequantised to fp32) and tokenizer from a GGUF file.
// cache_capacity 0 means min(context_length, 4096); max_tokens is the most tokens per forward call.
int target_load(Target* target, const char* path, int cache_capacity, int max_tokens, Error* err);
void target_free(Target* target);

// Runs the target over T new tokens and writes their keys/values into cache slots
// [n_past, n_past + T). positions: (T) RoPE positions. mask: (T, n_past + T), token t may attend to
// cache slot p iff mask[t*(n_past+T) + p]; NULL means causal (all n_past slots, and the new tokens up
// to itself). One mechanism for prefill, decode and tree verification. Fills act.taps and act.hidden
// for all T rows, and act.logits for all T rows if all_logits, else only the last row (in row 0).
void target_forward(Target* target, const int* tokens, const int* positions, const uint8_t* mask,
                    int T, int n_past, int all_logits);

// Tiny models with seeded random weights and a small byte-level BPE tokenizer (tests, experiments).
typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, context_length;
    int tied_output;     // 1: no output.weight (the LM head reuses the embedding)
    int weight_type;     // TYPE_* for the matrices (norm weights are always F32, as in real GGUFs)
    float rope_theta;
    uint64_t seed;
} TinyModelSpec;
int tiny_model_write(const char* path, const TinyModelSpec* spec, Error* err);

// matmul with the fast path: OpenBLAS sgemm when built with it and enabled, else matmul_forward_cpu.
void matmul_forward(float* out, const float* inp, const float* weight, int T, int C, int OC);
// matmul_backward_cpu with the same fast path (sgemm accumulating into dinp and dweight).
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                     int T, int C, int OC);

// The target on its device: one forward entry point (engine_forward), CPU reference or CUDA.
typedef struct TargetCuda TargetCuda; // declared always so CPU-only code can hold a NULL pointer
typedef struct DraftCuda DraftCuda;
typedef struct {
    Target* target;
    TargetCuda* cuda;   // NULL: the CPU reference path
} Engine;

// ----------------------------------------------------------------------------
// draft model: EAGLE-3 style head over the target's tapped hidden states (draft.c)
//
// At sequence position t the draft reads g_t (the three tapped target hidden states, concatenated,
// 3H wide) and the embedding e_t = Emb(x_{t+1}) from the target's frozen table, and predicts x_{t+2}:
//
//   u_t   = fc(g_t)                                   (extend: over tokens the target has verified)
//   u_t   = the draft's own output at the parent node (draft step: over tokens the draft proposed)
//   a_in  = concat(RMSNorm_e(e_t), RMSNorm_u(u_t))    (2C wide; q, k, v project from it)
//   h_t   = u_t + wo(attention(rope(wq a_in), rope(wk a_in), wv a_in))
//   out_t = h_t + w_down(silu(w_gate n) * w_up n),  n = RMSNorm_ffn(h_t)
//   logits_t = lm_head(RMSNorm_out(out_t))            (V_d draft-vocabulary logits; d2t maps to target ids)
//
// H is the target width; the draft width C equals it (the embedding e_t is C wide).

typedef struct {
    int dim;                // C (= target dim)
    int n_heads;            // NH
    int n_kv_heads;         // NKV
    int head_size;          // HS
    int ffn_dim;            // F
    int vocab_size;         // V_d, the draft vocabulary
    int target_vocab_size;  // V, for the d2t map and the embedding table
    float rope_theta;
    float norm_eps;
} DraftConfig;

typedef struct {
    float* fc;              // (C, 3C)   projects the tapped features
    float* embed_norm;      // (C)       RMSNorm of e
    float* hidden_norm;     // (C)       RMSNorm of u
    float* wq;              // (QD, 2C)
    float* wk;              // (KVD, 2C)
    float* wv;              // (KVD, 2C)
    float* wo;              // (C, QD)
    float* ffn_norm;        // (C)
    float* w_gate;          // (F, C)
    float* w_up;            // (F, C)
    float* w_down;          // (C, F)
    float* output_norm;     // (C)
    float* lm_head;         // (V_d, C)
} DraftWeights;

enum { DRAFT_NUM_TENSORS = 13 };
typedef struct {
    const char* gguf_name;  // e.g. "draft.fc.weight"
    int rows, cols;         // (rows, cols), cols fastest; cols == 1 for vectors
    float** data;           // where the pointer lives in DraftWeights
    size_t n_elements;
} DraftTensorInfo;

typedef struct {
    int max_tokens;         // T capacity
    float* hidden_in;       // (T, C) u
    float* embed;           // (T, C) e
    float* attn_in;         // (T, 2C) concat(RMSNorm_e(e), RMSNorm_u(u))
    float* q;               // (T, QD)
    float* k;               // (T, KVD)
    float* v;               // (T, KVD)
    float* attn_out;        // (T, QD)
    float* proj;            // (T, C)
    float* h;               // (T, C) residual stream after attention
    float* h_norm;          // (T, C)
    float* ffn_gate;        // (T, F)
    float* ffn_up;          // (T, F)
    float* ffn_hidden;      // (T, F) silu(ffn_gate) * ffn_up (kept apart: training needs the gate)
    float* out;             // (T, C) layer output: the next draft step's u
    float* out_norm;        // (T, C)
    float* logits;          // (T, V_d)
    uint8_t* mask;          // (T, S)
} DraftActivations;

typedef struct {
    DraftConfig config;
    DraftWeights weights;
    float* weight_arena;
    size_t n_weight_floats;
    DraftTensorInfo tensors[DRAFT_NUM_TENSORS];
    int32_t* d2t;               // (V_d) draft id -> target id
    int32_t* t2d;               // (V) target id -> draft id, or -1 when the token is outside the draft vocabulary
    const float* target_embedding; // (V, C) the target's token embedding (frozen, not owned)
    int cache_capacity;         // S
    float* key_cache;           // (S, KVD)
    float* value_cache;         // (S, KVD)
    DraftActivations act;
} Draft;

// A fresh draft for a target: same width, heads and FFN width as the target's layers, a draft
// vocabulary of vocab_size ids (vocab_size = V allowed), weights seeded from seed. The draft
// vocabulary is given by d2t (vocab_size distinct target ids); NULL means the vocab_size lowest ids.
void draft_init_random(Draft* draft, const Target* target, int vocab_size, const int32_t* d2t, uint64_t seed);
// Warm start (optional): LM head and final norm from the target, fc passing the deepest tap through.
void draft_init_from_target(Draft* draft, const Target* target);
// Checkpoints are GGUF: config keys, the d2t map, and the 13 tensors (F32).
int draft_save(const Draft* draft, const char* path, Error* err);
// Loads a checkpoint and checks it fits the target (width, vocabulary); errors name the file and key.
int draft_load(Draft* draft, const char* path, const Target* target, Error* err);
// Allocates the KV cache and activations (call after init or load).
void draft_alloc_state(Draft* draft, int cache_capacity, int max_tokens);
void draft_free(Draft* draft);
// u = fc(g): hidden (T, C) from features (T, 3C).
void draft_project_features(Draft* draft, float* hidden, const float* features, int T);
// Runs the draft layer over T inputs: tokens (T) are target ids (their embedding is e), hidden (T, C)
// is u. Keys/values go to cache slots [n_past, n_past + T); positions (T) are RoPE positions; mask is
// (T, n_past + T) as for target_forward (NULL: causal). Fills act.out (T, C) and act.logits (T, V_d).
void draft_forward(Draft* draft, const int* tokens, const float* hidden, const int* positions,
                   const uint8_t* mask, int T, int n_past);

// ----------------------------------------------------------------------------
// speculative decoding (speculative.c): draft a tree, verify it in one target pass, accept losslessly

enum { TREE_MAX_NODES = 64, TREE_MAX_DEPTH = 16 };

// A draft tree is described once, by each node's token and parent (node 0 is the root: the last token
// already decided, whose position is root_position). tree_derive computes every other buffer from that.
typedef struct {
    int n_nodes;                        // N, root included
    int root_position;
    int tokens[TREE_MAX_NODES];         // (N) target token ids
    int parents[TREE_MAX_NODES];        // (N) parents[0] = -1; parents[i] < i (parents before children)
    float scores[TREE_MAX_NODES];       // (N) cumulative draft log-probability (root 0); informational
    // derived by tree_derive
    int depth[TREE_MAX_NODES];          // (N) root 0
    int positions[TREE_MAX_NODES];      // (N) root_position + depth
    uint8_t ancestor[TREE_MAX_NODES * TREE_MAX_NODES]; // (N, N): [i*N + j] = j is i or an ancestor of i
    int n_children[TREE_MAX_NODES];     // (N)
    int children[TREE_MAX_NODES][TREE_MAX_NODES]; // (N, n_children[i]) in index order
    int n_leaves;
    int leaves[TREE_MAX_NODES];         // nodes without children, in index order
    int path_length[TREE_MAX_NODES];    // (n_leaves) nodes on the root-to-leaf path
    int paths[TREE_MAX_NODES][TREE_MAX_DEPTH + 1]; // (n_leaves, path_length) tree indices, root first
    int max_depth;
} Tree;

// Validates the description (root first, parents before children, depth <= TREE_MAX_DEPTH) and derives
// the rest. Returns 0, or -1 with a message naming the bad node.
int tree_derive(Tree* tree, Error* err);
// The (N, n_prefix + N) mask of a pass over the tree: node i sees the n_prefix cached slots, its
// ancestors and itself (tree attention).
void tree_attention_mask(uint8_t* mask, const Tree* tree, int n_prefix);

// The outcome of one verify pass: the accepted path through the tree and the bonus token.
typedef struct {
    int n_accepted;                     // draft nodes accepted (the root is not counted)
    int path[TREE_MAX_DEPTH + 1];       // (n_accepted + 1) tree indices, root first
    int bonus;                          // the token the target emits after the path
} Acceptance;

// Greedy acceptance. Contract: target_logits holds the target's logits at every node, (N, V); from the
// root, follow the child whose token is the target's argmax, while one exists; the bonus is the argmax at
// the last accepted node. Always yields at least one token (the bonus). Exact.
void accept_greedy(Acceptance* out, const Tree* tree, const float* target_logits, int V);
// Sampling acceptance (lossless multi-draft rejection sampling for deterministic top-K children).
// Contract: p_target holds the target's sampling distribution at every node, (N, V); uniforms (N) are
// the random numbers: uniforms[i] decides the test of node i (i >= 1), uniforms[0] draws the bonus.
// At each node the children are tested in index order against the residual distribution (the target's,
// with every rejected child's token removed and renormalised); the bonus comes from the residual.
// residual: (V) scratch. Yields at least one token; the emitted sequence is distributed exactly as the
// target's own sampling.
void accept_sampling(Acceptance* out, const Tree* tree, const float* p_target, const float* uniforms, int V,
                     float* residual);

// Where draft trees come from: one interface, three kinds.
typedef enum {
    DRAFT_EAGLE,    // the EAGLE-3 draft model (a checkpoint, or random)
    DRAFT_SELF,     // the target drafting for itself: the speedup ceiling (greedy acceptance is complete)
    DRAFT_LOOKUP,   // prompt lookup: the continuation of the latest earlier match of the last n-gram
    DRAFT_NONE,     // no draft: every pass verifies the root alone (plain decoding, with recording)
} DraftKind;

typedef struct {
    int k;          // children per expanded node (1: a chain)
    int depth;      // S: drafting steps (tree depth)
    int nodes;      // N: nodes kept, root included
} TreeShape;

typedef struct {
    int verify_passes;
    int emitted;                        // tokens emitted by verify passes (accepted + bonus)
    int proposed;                       // draft nodes verified (root excluded)
    int accepted;                       // draft nodes accepted
    int accepted_at_depth[TREE_MAX_DEPTH + 1]; // passes whose accepted path reached depth d
    int drafted_at_depth[TREE_MAX_DEPTH + 1];  // passes whose tree reached depth d
    double prefill_seconds, draft_seconds, verify_seconds, total_seconds;
    int n_prompt, n_generated, stopped_at_eos;
} SpecStats;

// ----------------------------------------------------------------------------
// recording (recorder.c): what the inference side hands the trainer

// A rejected tree node of one verify pass: what the discard loss needs.
typedef struct {
    int token;          // y_n, the node's token
    int position;       // its sequence position: root position + depth
    int parent;         // index of its parent among the record's discard nodes, or -1 when the parent
                        // is the root or an accepted node (then it is part of the sequence)
    int prefix_end;     // the sequence positions [0, prefix_end) precede it: the root position plus
                        // the number of its accepted ancestors
    int verify_step;    // which verify pass of the request it came from
    float score;        // the drafter's cumulative log-probability (for top-k selection)
} DiscardNode;

// One finished request.
typedef struct {
    int n_tokens;       // prompt + generated tokens
    int n_committed;    // positions with target features (n_tokens - 1: the last token never ran)
    int n_prompt;
    int draft_version;  // the draft version that served it
    int* tokens;        // (n_tokens)
    float* features;    // (n_committed, 3C) the target's taps g_t
    float* hidden;      // (n_committed, C) the target's final hidden state h_t
    int n_discard, discard_capacity;
    DiscardNode* discard;       // (n_discard)
    float* discard_features;    // (n_discard, 3C) the taps at each node's parent
    float* discard_hidden;      // (n_discard, C) the target's final hidden state at the node
    int dim;            // C
} Record;

Record* record_new(int dim);
void record_free(Record* record);
// Appends the rejected nodes of one verify pass. taps (N, 3C) and hidden (N, C) are the verify pass's.
void record_add_verify_step(Record* record, const Tree* tree, const Acceptance* acceptance, const float* taps,
                            const float* hidden, int verify_step);
// Copies the finished sequence into the record.
void record_finish(Record* record, const int* tokens, int n_tokens, int n_committed, int n_prompt,
                   const float* features, const float* hidden, int draft_version);

// A bounded ring buffer between serving and training: push never blocks (when full, the oldest
// record is dropped and counted); pop waits for records unless told not to.
typedef struct RecordBuffer RecordBuffer;
RecordBuffer* record_buffer_new(int capacity);
void record_buffer_free(RecordBuffer* buffer);      // frees the records still inside
void record_buffer_push(RecordBuffer* buffer, Record* record);
// Takes up to max records (oldest first) into out; with wait, blocks until at least one is there or
// the buffer is closed. Returns the number taken.
int record_buffer_pop(RecordBuffer* buffer, Record** out, int max, int wait);
void record_buffer_close(RecordBuffer* buffer);     // wakes waiting consumers; pushes still accepted
void record_buffer_counts(RecordBuffer* buffer, long* pushed, long* dropped, int* depth);

// The weight exchange: a double buffer of draft weights (n floats each) with a version number.
typedef struct WeightExchange WeightExchange;
WeightExchange* weight_exchange_new(size_t n);
void weight_exchange_free(WeightExchange* exchange);
// Trainer side: copies weights into the buffer nobody reads and publishes it with the next version.
// Returns the version, or 0 if skipped because the server has not yet taken the previous publish.
int weight_exchange_publish(WeightExchange* exchange, const float* weights);
// Server side: if a version newer than current_version is published, marks it served and returns its
// weights (valid until the server takes another), writing its version; else NULL. Never blocks on a copy.
float* weight_exchange_take(WeightExchange* exchange, int current_version, int* version);
long weight_exchange_skipped(WeightExchange* exchange);

// ----------------------------------------------------------------------------
// training (trainer.c)

enum { TTT_MAX_STEPS = 10 };

typedef struct {
    float learning_rate;    // after warm-up
    int warmup_steps;       // linear warm-up from 0
    float beta1, beta2, adam_eps, weight_decay;
    float max_grad_norm;    // global clipping threshold (0: off)
    int ttt_length;         // L_ttt, the unroll length (1..TTT_MAX_STEPS)
    float step_decay;       // weight of step k is step_decay^k (0.8)
    LossKind loss;          // accepted-path loss
    float discard_weight;   // lambda_discard (0: off)
    int discard_top_k;      // rejected nodes per verify pass (0: all)
    LossKind discard_loss;  // LOSS_FORWARD_KL or LOSS_REVERSE_KL
    int max_positions;      // longest record trained on (longer ones keep their first max_positions)
    int context_window;     // prompt positions kept before the first completion token (the rest of
                            // the prompt is dropped from training: it costs a full layer per step)
} TrainerSettings;

typedef struct {
    float loss;             // total (accepted + discard), batch mean
    float accepted_loss;    // step-weighted accepted-path loss
    float discard_loss;
    float step0_accuracy;   // share of step-0 positions where the draft's argmax is the target's
    float grad_norm;        // before clipping
    int n_positions;        // step-0 loss positions
    int n_discard;          // discard nodes trained on
    int rejected;           // 1: non-finite loss or gradient, update skipped
} TrainStats;

// Per-step workspace of the unroll, sized by the longest record seen (grown on demand).
typedef struct {
    int capacity_rows;      // rows of step 0 (sequence columns + discard nodes)
    int capacity_keys;      // rows of all blocks together
    DraftActivations act[TTT_MAX_STEPS];
    float* d_out[TTT_MAX_STEPS];    // (rows, C) gradient of each step's layer output
    float* key_buffer;      // (keys, KVD) blocks 0..L-1
    float* value_buffer;    // (keys, KVD)
    float* d_keys;          // (keys, KVD)
    float* d_values;        // (keys, KVD)
    uint8_t* masks[TTT_MAX_STEPS];  // (rows, keys) each step's mask
    float* features;        // (rows, 3C) step-0 inputs of fc: sequence taps, then discard parents' taps
    float* p_target;        // (rows, V_d) target distributions of the loss rows
    int* loss_rows;         // (rows) which rows of a step carry a loss
    int* target_tokens;     // (rows) the token at each loss row (next-token loss, accuracy)
    float* loss_weights;    // (rows)
    float* losses;          // (rows)
    float* d_logits;        // (rows, V_d)
    float* d_out_norm;      // (rows, C)
    float* d_h;             // (rows, C)
    float* d_h_norm;        // (rows, C)
    float* d_ffn_hidden;    // (rows, F)
    float* d_gate;          // (rows, F)
    float* d_up;            // (rows, F)
    float* d_attn_out;      // (rows, QD)
    float* d_q;             // (rows, QD)
    float* d_attn_in;       // (rows, 2C)
    float* d_u;             // (rows, C)
    float* gathered;        // (rows, C) layer outputs of the loss rows
    int* tokens;            // (rows)
    int* positions;         // (rows)
    int* discard_used;      // (rows) indices of the record's discard nodes in use
    int* discard_row;       // (record's discard nodes) their row in step 0, or -1
} TrainWorkspace;

typedef struct {
    TrainerSettings settings;
    Draft draft;            // the weights being trained (the trainer's own copy)
    float* grads;           // (n_weight_floats) same layout as draft.weight_arena
    DraftWeights grad;      // pointers into grads, one per weight
    float* adam_m;          // (n_weight_floats)
    float* adam_v;          // (n_weight_floats)
    int step;               // optimiser steps taken
    long rejected_updates;  // steps skipped for a non-finite loss or gradient
    float* head_rows;       // (V_d, C) the target's LM head rows of the draft vocabulary (frozen)
    TrainWorkspace work;
} Trainer;

// The unroll of one record: which columns (a context window before the completion, then the
// completion), how many steps, how many discard rows, each step's rows and key-block offset.
typedef struct {
    int first_column;   // absolute position of local column 0
    int T;              // sequence columns
    int L;              // unrolled steps
    int D;              // discard rows (step 0 only)
    int rows[TTT_MAX_STEPS];             // rows of each step: T + D, then T - k
    int block_offset[TTT_MAX_STEPS + 1]; // where each step's keys start in the key buffer
} UnrollPlan;
// Fills first_column, T and L; returns 0 when the record has nothing to train on.
int unroll_plan_columns(UnrollPlan* plan, const Record* record, const TrainerSettings* settings);
// Then selects the discard rows (discard_used, discard_row sized by the record's discard nodes) and
// fills D, rows and block_offset.
void unroll_plan_rows(UnrollPlan* plan, const Record* record, const TrainerSettings* settings, int* discard_used,
                      int* discard_row);

// The discard nodes a record trains on (all rejected nodes, or the top_k per verify pass by draft
// score; ancestors are kept with their descendants): used (D) their indices, row_of (n_discard) each
// node's row in step 0 or -1. Returns D.
int select_discard_nodes(const Record* record, int top_k, int first_column, int n_columns, int* used, int* row_of,
                         int first_row);
// Step k's attention mask over the unroll's key buffer: the EAGLE-3 TTT mask, and at step 0 the
// discard rows' tree mask (the prefix before each node, its rejected ancestors, itself).
void ttt_mask(uint8_t* mask, int k, int rows, int n_columns, const int* block_offset, int n_keys,
              const Record* record, int first_column, const int* discard_used, const int* discard_row);

// ----------------------------------------------------------------------------
// traffic (traffic.c) and charts (plot.c)

// One request of replayed traffic. domain points at one of Traffic.domains (not separately allocated).
typedef struct {
    char* domain;   // a bare word ("c", "prose", ...); "default" when the line has no "domain"
    char* prompt;   // UTF-8, NUL-terminated
    int chat;       // 1: from a ShareGPT "conversations" turn; the caller applies the chat template
} TrafficRequest;
typedef struct {
    int n_requests;
    TrafficRequest* requests;   // (n_requests)
    int n_domains;
    char** domains;             // (n_domains) in order of first appearance
} Traffic;

// Reads a JSONL file: one JSON object per non-empty line; the prompt is "prompt", else "text", else
// the first human/user turn of "conversations" (chat); optional "domain". Errors name the file, line,
// column and what was expected; on error nothing needs freeing.
int traffic_load(Traffic* traffic, const char* path, Error* err);
void traffic_free(Traffic* traffic);
// order "mixed": seeded Fisher-Yates shuffle (random_seed_state / random_u32); "ordered": grouped by
// domain in order of first appearance, stable within a domain. Any other order is a caller bug (exits).
void traffic_order(Traffic* traffic, const char* order, uint64_t seed);
// Keeps only the requests of one domain; error (listing the domains present) if it is absent.
int traffic_select_domain(Traffic* traffic, const char* domain, Error* err);

// One run on the acceptance chart.
typedef struct {
    const char* label;              // legend text
    int n;                          // requests
    const float* acceptance;        // (n) acceptance length per request (tokens per verify pass)
    const char* const* domains;     // (n) domain per request, or NULL
} ChartSeries;
// Writes a self-contained SVG: raw points faint, a 25-request moving average per series, axes, legend,
// dashed lines where the first series' domain changes.
int svg_acceptance_chart(const char* path, const ChartSeries* series, int n_series, const char* title, Error* err);

// The replay's per-request CSV, header exactly
// request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version
typedef struct {
    int n;
    char** domains;     // (n)
    float* acceptance;  // (n)
} RequestRows;
int read_requests_csv(const char* path, RequestRows* rows, Error* err);
void request_rows_free(RequestRows* rows);
// `aurora plot -o CHART.svg [--title T] RUN/requests.csv[:LABEL] ...` (argv after "plot"); returns the
// exit status (0, or 1 after an "error: ..." line).
int command_plot_main(int argc, char** argv);

// ----------------------------------------------------------------------------
// the CUDA twin (kernels.cu), present when built with USE_CUDA

typedef struct TrainerCuda TrainerCuda; // declared always so CPU-only code can hold a NULL pointer

#ifdef USE_CUDA
#ifdef __cplusplus
extern "C" {
#endif
int cuda_device_count(void);                 // 0 when no GPU (or no driver)
const char* cuda_device_name(void);
// ops: same name root and argument order as cpu_ref.c; every pointer is device memory
void embedding_forward_cuda(float* out, const int* tokens, const float* table, int T, int C, int V);
void rmsnorm_forward_cuda(float* out, const float* inp, const float* weight, int T, int C, float eps);
void matmul_forward_cuda(float* out, const float* inp, const float* weight, int T, int C, int OC);
void rope_forward_cuda(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta);
void attention_forward_cuda(float* out, const float* q, const float* key_cache, const float* value_cache,
                            const uint8_t* mask, int T, int P, int NH, int NKV, int HS);
void swiglu_forward_cuda(float* out, const float* gate, const float* up, int N);
void residual_forward_cuda(float* out, const float* inp1, const float* inp2, int N);
void softmax_forward_cuda(float* probs, const float* logits, int T, int V);
// source_slots is host memory (a handful of ints); the caches are device memory
void kv_compact_cuda(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                     int L, int S, int KVD);
// the whole target on the GPU: weights uploaded once, cache and activations on the device
TargetCuda* target_cuda_create(const Target* target);
void target_cuda_free(TargetCuda* target_cuda);
float* target_cuda_key_cache(TargetCuda* target_cuda);    // (L, S, KVD) device memory
float* target_cuda_value_cache(TargetCuda* target_cuda);  // (L, S, KVD) device memory
// Same contract as target_forward; results (taps, hidden, logits, and layer_outputs if the host
// activations have it) are copied back into target->act so callers read them in one place.
void target_forward_cuda(TargetCuda* target_cuda, Target* target, const int* tokens, const int* positions,
                         const uint8_t* mask, int T, int n_past, int all_logits);
// the draft on the GPU, and acceptance reading device memory
float* target_cuda_logits(TargetCuda* target_cuda);    // (T, V) device logits of the last forward call
// Copies n host floats into a device staging buffer (grown as needed) and returns its device address.
float* target_cuda_stage(TargetCuda* target_cuda, const float* host, size_t n);
float* target_cuda_residual(TargetCuda* target_cuda);  // (V) device scratch for accept_sampling_cuda
DraftCuda* draft_cuda_create(const Draft* draft);      // uploads weights and the target embedding once
void draft_cuda_free(DraftCuda* draft_cuda);
void draft_cuda_upload_weights(DraftCuda* draft_cuda, const Draft* draft); // after the host weights change
// Same contracts as draft_project_features / draft_forward; host inputs, results copied back into
// draft->act (out, logits) and hidden (host) so the drafting logic reads them in one place.
void draft_project_features_cuda(DraftCuda* draft_cuda, Draft* draft, float* hidden, const float* features, int T);
void draft_forward_cuda(DraftCuda* draft_cuda, Draft* draft, const int* tokens, const float* hidden, const int* positions,
                        const uint8_t* mask, int T, int n_past);
// Same contracts as accept_greedy / accept_sampling; target_logits, p_target and residual are device
// memory, uniforms host memory.
void accept_greedy_cuda(Acceptance* out, const Tree* tree, const float* target_logits, int V);
void accept_sampling_cuda(Acceptance* out, const Tree* tree, const float* p_target, const float* uniforms, int V,
                          float* residual);
// backward passes and training ops: same contracts as cpu_ref.c's (gradients accumulate, NULL d-buffers
// skipped, rope_backward assigns and may run in place); every pointer is device memory. Deterministic:
// no atomics, every sum in a fixed order, so two runs agree bit for bit.
void matmul_backward_cuda(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          int T, int C, int OC);
void rmsnorm_backward_cuda(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                           int T, int C, float eps);
void rope_backward_cuda(float* dinp, const float* dout, const int* positions, int T, int n_heads, int HS, float theta);
// keeps a device scratch of 2*T*NH*P floats between calls (grown on demand; one caller at a time)
void attention_backward_cuda(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                             const float* keys, const float* values, const uint8_t* mask,
                             int T, int P, int NH, int NKV, int HS);
void swiglu_backward_cuda(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N);
void distribution_loss_cuda(float* losses, float* dlogits, const float* logits, const float* p_target,
                            const int* target_tokens, const float* weights, int T, int V, LossKind kind);
void adamw_update_cuda(float* params, const float* grads, float* m, float* v, size_t N, float learning_rate,
                       float beta1, float beta2, float eps, float weight_decay, int t);
double sum_squares_cuda(const float* values, size_t N);   // values: device memory; the sum is returned to the host
// The trainer on the GPU (trainer_step's algorithm, every tensor op on the device). create uploads the
// trainer's draft weights, AdamW moments, frozen head rows and the target embedding; from then on the
// TrainerCuda owns the weights, gradients and moments: drive the Trainer only through trainer_step_cuda.
// trainer_step_cuda has trainer_step's contract (returns 0 if applied, 1 if rejected; stats filled;
// trainer->step and rejected_updates counted) and copies the new weights into trainer->draft.weight_arena.
TrainerCuda* trainer_cuda_create(const Trainer* trainer);
int trainer_step_cuda(TrainerCuda* trainer_cuda, Trainer* trainer, Record* const* records, int n_records, TrainStats* stats);
void trainer_cuda_free(TrainerCuda* trainer_cuda);
#ifdef __cplusplus
}
#endif
#endif

#ifdef __cplusplus
}
#endif

#endif // AURORA_H
