/*
aurora.h: every type, every tensor and every public function of Aurora-in-C, in one place.

Aurora-in-C is a reference implementation of self-improving speculative decoding: a real target LLM
(Llama architecture, loaded from GGUF) verifies the guesses of a small draft model, and the draft is
trained online from the requests it serves. This header is the map of the code:

  aurora.c      the command-line interface (one flag table); #includes every .c file (one translation unit)
  cpu_ref.c     the CPU reference: every op, forward and backward (and the losses, AdamW and the small
                data-movement ops), as plain fp32 loops; the reference backend table (the oracle)
  kernels.cu    the CUDA twin of every op in cpu_ref.c (same name root with _cuda, same argument order)
                and the CUDA backend table: kernels only, no orchestration
  base/         util.c: errors, allocation, regular-file inputs, atomic outputs, signals; json.c: JSON
  backends/     backends.c: the registry, the OpenBLAS table; cpu_fast.c: the fast CPU table
  model/        gguf.c: GGUF reader and writer, tensor types; tokenizer.c: byte-level BPE, the prompt path;
                target.c: the target (load onto a backend, forward, prefill, compaction, tiny models);
                draft.c: the EAGLE-3 draft (init, checkpoints, forward on the target's backend)
  speculation/  sampling.c: seeded generator, samplers; tree.c: draft trees and their buffers;
                acceptance.c: lossless acceptance (host functions); drafting.c: tree drafting, the draft
                sources; suffix.c: the suffix draft's index; adaptive.c: adaptive tree shapes;
                generate.c: plain and speculative generation loops
  flywheel/     recorder.c: records, the ring buffer, the weight exchange; trainer.c: the online trainer
                (TTT unroll, accepted and discard losses, backward, AdamW); traffic.c: JSONL traffic;
                plot.c: SVG charts; flywheel.c: serving and training together, replay, offline training
  interop/      other systems' draft formats (llama.cpp's eagle3 GGUF, SpecForge safetensors + config.json)
  tests/, tools/, models/ (models/README.md), traffic/, docs/

One model code, many backends: the orchestration (target forward, draft forward, the trainer step) is
written once, in model/target.c, model/draft.c and flywheel/trainer.c, and calls every op through a
Backend table (section "backends"). Host-side bookkeeping (masks, positions, loss rows, acceptance) is plain C on host memory.

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
// Creates a directory and its parents with mkdir(2) (no shell); existing directories are fine. With created
// not NULL, *created is the number of trailing components it made (0: path existed), for remove_directories.
int make_directories(const char* path, Error* err);
int make_directories_counted(const char* path, int* created, Error* err);
// Undoes make_directories_counted after a failed write: removes path and the created - 1 directories above it,
// each only if empty (rmdir(2)), so nothing is left that was not there before and nothing put there is lost.
void remove_directories(const char* path, int created);
// Checks, before any work starts, that path can be written: its directory exists (or, with
// create_directory, is created) and a file can be created in it. Nothing at path itself changes.
int check_writable(const char* path, int create_directory, Error* err);
// Whether two paths name the same file, existing or not (the same name in the same existing directory).
int same_path(const char* a, const char* b);
// The length of the valid UTF-8 sequence at s (n bytes available), or 0 if there is none.
size_t utf8_valid_length(const unsigned char* s, size_t n);
// An output must never replace one of the run's inputs (draft-init -m X -o X would destroy the model):
// 1 after a one-line "error:" naming both when output is the same file as one of them, else 0.
int path_is_directory(const char* path);   // stat(2) says a directory (a path that cannot be stat'ed: no)
int check_not_input(const char* output, const char* flag, const char* const* inputs, const char* const* input_flags,
                    int n_inputs);

// SIGINT / SIGTERM during a long run (replay, train): the first asks the run to stop after the work in
// flight (stop_requested() returns the signal number), a second exits at once. Runs poll stop_requested
// between requests and training steps, then save as for a normal end and exit with 128 + the signal.
void stop_signals_install(void);
// Every other command: SIGINT / SIGTERM exits at once, removing the temporary files open (aurora_main).
void exit_signals_install(void);
void stop_signals_restore(void);
int stop_requested(void);

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
// The first half of a commit: every byte written, flushed and synced, only the rename left (output_commit
// or output_abandon next). Files that belong together finish all before any is renamed.
int output_finish(OutputFile* out, Error* err);
void output_abandon(OutputFile* out);
// Writes n bytes to path atomically (output_open, fwrite, output_commit).
int write_file_atomic(const char* path, const void* bytes, size_t n, Error* err);

// Small helpers (base/util.c).
char* string_copy(const char* text);        // a malloc'd copy (exits on out of memory)
// text for a message: control bytes (an escape sequence from a hostile file must not reach a terminal) as
// \xNN, cut with "..." at a character boundary to fit size bytes; returns out
const char* printable_text(const char* text, char* out, size_t size);
double now_seconds(void);                   // a monotonic clock
// The process's resident memory now and at its peak (VmRSS, VmHWM of /proc/self/status), in kB; -1 where
// the system does not say. File-backed pages count: a model read in place counts the pages touched.
void resident_memory_kb(long* current, long* peak);

// ----------------------------------------------------------------------------
// JSON (base/json.c): strict RFC 8259, UTF-8; errors name the file, line, column and what was expected

typedef enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct JsonValue {
    JsonType type;
    double number;              // JSON_NUMBER
    int integer_literal;        // JSON_NUMBER written as an integer (no fraction, no exponent): 12, not 12.0 or 1.2e1
    char* string;               // JSON_STRING: UTF-8, NUL-terminated (NUL itself is refused)
    int n;                      // JSON_ARRAY / JSON_OBJECT: element or member count
    struct JsonValue* items;    // (n) elements, or member values
    char** keys;                // (n) member names (JSON_OBJECT)
    int line, column;           // where the value starts (for messages)
} JsonValue;
// Parses length bytes that must hold exactly one JSON object (a JSONL line, a config.json, a safetensors
// header); line numbers the messages. On error nothing needs freeing.
int json_parse_line(const char* text, size_t length, const char* path, int line, JsonValue* out, Error* err);
void json_free(JsonValue* value);
const JsonValue* json_get(const JsonValue* object, const char* key);   // the first member named key, or NULL
const char* json_type_name(JsonType type);                            // "a string", "an object", ...
void json_write_string(FILE* out, const char* text);                  // text as a JSON string literal

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
int tensor_type_is_integer(int type);         // 1 for I32 and I64: index maps, never weights
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
enum { GGUF_MAX_KEYS = 1 << 16, GGUF_MAX_TENSORS = 1 << 16 };   // a file claiming more is refused
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

// RoPE scaling as llama.cpp reads ARCH.rope.scaling.* and ARCH.rope.scale_linear: 0 when it changes nothing
// (type none, or a linear factor of 1 or 0), else an error naming the key (scaling is not implemented).
int rope_scaling_check(const GGUFFile* file, const char* arch, Error* err);

// Opens and fully validates a GGUF file: header, every key/value, the tensor table, and that every
// tensor lies inside the file. On failure nothing needs freeing.
int gguf_open(GGUFFile* gguf, const char* path, Error* err);
// The same over a caller-owned buffer (tests, fuzzing). name is used in messages.
int gguf_open_memory(GGUFFile* gguf, const void* bytes, size_t size, const char* name, Error* err);
// The whole pages inside [data, data + bytes) of a mapped file leave the process's resident memory (read
// again, they come back from the page cache); nothing happens to a file opened from memory.
void gguf_release_pages(const GGUFFile* gguf, const void* data, size_t bytes);
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
// The first element of a tensor whose value is not finite (NaN or an infinity), or -1 if there is none:
// every value of an F32, F16 or BF16 tensor; a quantised one's block scales (d, and Q4_1's m), the first
// element of the block named. A target with one would answer NaN logits, which decode as token 0.
int64_t gguf_tensor_first_nonfinite(const GGUFTensor* tensor);

// GGUF writer: collects metadata and tensors (or where to read them), then writes a version-3 file.
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
// Adds a tensor of an open file, stored as `type`: converted chunk by chunk while the file is written
// (the source file stays open until gguf_writer_save), so a model's conversion never holds the model.
void gguf_writer_add_tensor_from(GGUFWriter* writer, const char* name, int type, const GGUFTensor* source);
// Writes the file (the head built in memory, each tensor streamed) to a temporary name, then renames it.
int gguf_writer_save(GGUFWriter* writer, const char* path, Error* err);
// The same file in memory (malloc'd; for gguf_open_memory, as the tests and fuzzers use it). Returns its size.
size_t gguf_writer_to_memory(const GGUFWriter* writer, uint8_t** bytes);
// Copies a file's metadata (all but general.alignment and the NULL-terminated skip_keys) into writer.
int gguf_writer_copy_values(GGUFWriter* writer, const GGUFFile* file, const char* const* skip_keys, Error* err);

// ----------------------------------------------------------------------------
// tokenizer: byte-level BPE (GPT-2 style) with the model's pre-tokenizer

enum { TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6 };

typedef struct TokenizerMergeTable TokenizerMergeTable;   // private to tokenizer.c
enum { TOKENIZER_MAX_END_IDS = 32 };
typedef struct {
    int vocab_size;
    char** tokens;              // (V) token text as stored in GGUF (GPT-2 byte-to-unicode form)
    int* token_types;           // (V) TOKEN_*
    char** token_bytes;         // (V) decoded raw bytes of each token
    int* token_bytes_length;    // (V)
    int max_token_bytes;        // the longest token's bytes: n ids cover at most n times as many text bytes
    int pre_tokenizer;          // which regex split the text before BPE (see tokenizer.c)
    int bos_id, eos_id;         // -1 if absent
    // the other tokens that end generation, as llama.cpp finds them (tokenizer_is_end): the end-of-turn,
    // end-of-message and fill-in-the-middle ids the file names, then tokens by their text (<|endoftext|>,
    // <|im_end|>, <|eot_id|>, ...)
    int end_ids[TOKENIZER_MAX_END_IDS], n_end_ids;
    int add_bos, add_eos;       // a prompt starts with BOS / ends with EOS (tokenizer.ggml.add_{bos,eos}_token)
    TokenizerMergeTable* merges;
    void* token_lookup;         // private: text -> id
} Tokenizer;

int tokenizer_load_gguf(Tokenizer* tokenizer, const GGUFFile* gguf, Error* err);
void tokenizer_free(Tokenizer* tokenizer);
// Whether generation stops at token: the end-of-sequence id or any other end-of-generation token
// (llama.cpp's llama_vocab_is_eog). A test that must run to max_new clears both (eos_id -1, n_end_ids 0).
int tokenizer_is_end(const Tokenizer* tokenizer, int token);
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
// The one prompt-to-tokens path: text as plain text (special-token spellings stay text), or with chat
// the SmolLM2-Instruct ChatML template around it, whose markers (<|im_start|>, <|im_end|>) are the only
// special tokens (a tokenizer with add_bos_token puts its BOS id first). Returns the count (>= 1), or with err
// -1 (more than max_ids tokens), PROMPT_EMPTY, or PROMPT_NO_TEMPLATE (chat, and the vocabulary lacks the
// template's control tokens: prompt_chat_check).
enum { PROMPT_EMPTY = -2, PROMPT_NO_TEMPLATE = -3 };
int prompt_encode(const Tokenizer* tokenizer, const char* text, int chat, int* ids, int max_ids, Error* err);
// 0 if the vocabulary has the ChatML template's control tokens (<|im_start|>, <|im_end|>), else -1 with err.
int prompt_chat_check(const Tokenizer* tokenizer, Error* err);
// Adds tokenizer.ggml.* keys for a tiny byte-level BPE vocabulary of exactly vocab_size (>= 259)
// tokens: <|endoftext|> <|im_start|> <|im_end|> (control, ids 0-2; bos 1, eos 2), the 256 byte
// tokens (ids 3..258, byte b is id 3 + b), then merges learned deterministically from a built-in
// English + code sample (padded with unused tokens if the sample runs out of pairs). For test models.
void gguf_writer_add_tiny_tokenizer(GGUFWriter* writer, int vocab_size);

// The least work (multiply-adds) for which an op opens an OpenMP region: below it the fork and join cost
// more than the threads save (microseconds on an idle machine, milliseconds when another process holds a
// core and the region waits for the thread it displaced: measured, the tiny models of the tests ran 40x
// slower on 2 threads than on 1 on this project's loaded 2-core machine). Results never depend on it.
enum { PARALLEL_MIN_WORK = 1 << 16 };

// ----------------------------------------------------------------------------
// Where a key/value cache keeps its rows: slot p of key/value head h is the HS floats at
// cache + h * head_stride + p * slot_stride. Two layouts are used:
//   slot by slot, (P, NKV*HS): a layer's k and v as the projections write them; the draft's cache and the
//     trainer's buffers, whose rows the attention backward reads and writes as they are;
//   head by head, (NKV, S, HS): the target's cache, so that one key/value head's rows, which one attention
//     item reads from first to last slot, are one stream of memory. Slot by slot, a head's rows of 64
//     floats lie 768 bytes apart and were read at about half the speed (2-core Zen 3: 30 layers of one
//     decode step's attention after 300 / 1000 slots 1.82 -> 1.44 / 6.89 -> 4.93 ms; the README's speed
//     section).
// The arithmetic never depends on the layout: the same rows give the same bits.
typedef struct { size_t slot_stride, head_stride; } CacheLayout;
static inline CacheLayout cache_by_slot(int NKV, int HS) { CacheLayout l = {(size_t)NKV * HS, (size_t)HS}; return l; }
static inline CacheLayout cache_by_head(int S, int HS) { CacheLayout l = {(size_t)HS, (size_t)S * HS}; return l; }
// Several sequences in one forward call, each with its own slots of the cache: rows [row, row + n) of the call
// continue the sequence whose slots start at `base`; they are its slots [n_past, n_past + n) from there and
// see only its slots (target_forward_spans, Backend.attention_forward_spans).
typedef struct { int row, n, base, n_past; } SequenceSpan;
// The bytes of a span's mask, (n, n_past + n): the spans' masks lie one after another.
static inline size_t span_mask_bytes(const SequenceSpan* span) { return (size_t)span->n * (span->n_past + span->n); }

// ----------------------------------------------------------------------------
// CPU reference ops (cpu_ref.c). Arguments: outputs, inputs, weights, dimensions. Every backend has
// each of these ops with exactly this signature (its table, below); in a table every pointer is the
// backend's memory. Ops that read a weight matrix take a Matrix; the reference accepts TYPE_F32 only.

void embedding_forward_cpu(float* out, const int* tokens, Matrix table, int T, int C, int V);
void rmsnorm_forward_cpu(float* out, const float* inp, const float* weight, int T, int C, float eps);
void matmul_forward_cpu(float* out, const float* inp, Matrix weight, int T, int C, int OC);
void rope_forward_cpu(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta);
// The cos and sin of pair i's angle at a position (rope_forward_cpu's, rounded to float)
void rope_angle(float* cos_angle, float* sin_angle, int position, int i, int HS, float theta);
void attention_forward_cpu(float* out, const float* q, const float* key_cache, const float* value_cache,
                           const uint8_t* mask, int T, int P, int NH, int NKV, int HS, CacheLayout layout);
void swiglu_forward_cpu(float* out, const float* gate, const float* up, int N);
void residual_forward_cpu(float* out, const float* inp1, const float* inp2, int N);
void softmax_forward_cpu(float* probs, const float* logits, int T, int V);
// The caches as n_planes planes of S slots, each slot a row of `width` floats (the target's: a plane per
// layer and key/value head, rows of HS): slot source_slots[i] moves to slot destination + i in every plane
// (sources increasing, never below their destination). source_slots: (n), the backend's memory like every
// other argument.
void kv_compact_cpu(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                    int n_planes, int S, int width);

// Backward passes (cpu_ref.c). Each differentiates the forward op of the same name root; gradients
// ACCUMULATE (+=) into d-buffers, so a buffer used twice sums its contributions; a NULL d-buffer is
// skipped. Shapes as in the forward. Training is fp32: the weight is a plain float array.
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
#define REVERSE_KL_MIN_PROBABILITY 1e-30
// One element of distribution_loss's gradient, dL/dz(j), written once for cpu_ref.c and kernels.cu: with
// log q(j) = z(j) - logsumexp(z), the row's loss L and, for FORWARD_KL, sum_p = sum_v p(v):
//   FORWARD_KL  q(j) sum_p - p(j)      REVERSE_KL  q(j) (log q(j) - log p(j) - L)      NEXT_TOKEN  q(j) - [j == x]
// p is read only by the KL kinds (it may be NULL for NEXT_TOKEN).
#ifdef __CUDACC__
__host__ __device__
#endif
static inline double distribution_loss_gradient(LossKind kind, double log_q, const float* p, int j, double sum_p,
                                                double loss, int target_token) {
    double q = exp(log_q);
    if (kind == LOSS_FORWARD_KL) { return q * sum_p - p[j]; }
    if (kind == LOSS_REVERSE_KL) { return q * (log_q - log(fmax((double)p[j], REVERSE_KL_MIN_PROBABILITY)) - loss); }
    return q - (j == target_token ? 1.0 : 0.0);
}
void distribution_loss_cpu(float* losses, float* dlogits, const float* logits, const float* p_target,
                           const int* target_tokens, const float* weights, int T, int V, LossKind kind);
// AdamW's bias corrections 1 - beta^t at step t (in double, rounded once), every table's
void adamw_bias_corrections(float beta1, float beta2, int t, float* bias_correction1, float* bias_correction2);
// AdamW (decoupled weight decay), step t >= 1 for the bias correction; updates params, m, v in place. Each
// gradient is grads[i] * grad_scale (the clipping's factor, 1 for none: the product then the gradient itself),
// as if the gradients had been scaled in place first.
void adamw_update_cpu(float* params, const float* grads, float grad_scale, float* m, float* v, size_t N,
                      float learning_rate, float beta1, float beta2, float eps, float weight_decay, int t);
// sum of squares of values (for global gradient-norm clipping), accumulated in double; returned to the host
double sum_squares_cpu(const float* values, size_t N);

// Data movement (cpu_ref.c): what the orchestration needs so that no host loop touches backend memory.
// out (n, C): row i = source row rows[i]
void gather_rows_cpu(float* out, const float* source, const int* rows, int n, int C);
// destination row rows[i] += source row i (rows distinct)
void scatter_add_rows_cpu(float* destination, const float* source, const int* rows, int n, int C);
// T rows of width floats: out[t * out_stride + c] = inp[t * inp_stride + c] (a column block of a wider
// matrix: a tap into the features, a half of the draft's attention input)
void copy_strided_cpu(float* out, const float* inp, int T, int width, int out_stride, int inp_stride);
// A forward call's keys and values into its cache slots: the (T, NKV*HS) rows k and v to slots
// [n_past, n_past + T) of key_cache and value_cache, laid out as `layout`
void cache_store_cpu(float* key_cache, float* value_cache, const float* k, const float* v, CacheLayout layout, int T,
                     int n_past, int NKV, int HS);
// out[t] = the index of the largest value of row t (ties to the lowest index; NaNs never win): sample_argmax
void argmax_rows_cpu(int* out, const float* values, int T, int V);

// ----------------------------------------------------------------------------
// backends: one struct of function pointers per device (cpu_ref.c, backends.c, kernels.cu)
//
// The orchestration (target.c, draft.c, trainer.c) is written once and calls every op through a table.
// Memory: every pointer an op receives is the backend's memory; upload / download move bytes between it
// and the host. A table whose memory IS host memory (host_memory = 1: the CPU tables) lets callers alias
// host buffers to backend buffers: upload and download then skip the copy when both pointers are equal.
// Weights: upload_matrix takes a GGUF tensor's bytes (host, the file's mapping, which outlives the
// Matrix) and returns the matrix in the type this backend computes with: the reference, OpenBLAS and
// CUDA tables dequantise to fp32; a fast CPU table may keep the GGUF type in place (no copy).
// Adding a backend is filling a table: memory ops (the CPU ones below can be reused), upload_matrix, and
// every op (the reference's where nothing faster exists).

typedef struct {
    const char* name;       // "cpu-ref", "cpu-blas", "cuda"
    const char* device;     // what it runs on, for messages ("CPU", the GPU's name)
    int host_memory;        // 1: its memory is host memory (pointers usable on the host)
    // memory
    void* (*alloc)(size_t bytes);                                       // zeroed; exits on failure
    void (*free)(void* pointer);                                        // NULL allowed
    void (*upload)(void* destination, const void* host_source, size_t bytes);
    void (*download)(void* host_destination, const void* source, size_t bytes);
    void (*copy)(void* destination, const void* source, size_t bytes);  // within the backend's memory
    void (*zero)(void* destination, size_t bytes);
    Matrix (*upload_matrix)(const void* gguf_data, int gguf_type, int rows, int cols);
    void (*free_matrix)(Matrix matrix);
    int draft_type;         // TYPE_* of a serving draft's matrices by default (draft_upload_weights quantises the
                            // fp32 weights to it; draft_serve_as, --draft-type, picks another); TYPE_F32 (0, the
                            // default): the fp32 weights themselves
    // forward ops
    void (*embedding_forward)(float* out, const int* tokens, Matrix table, int T, int C, int V);
    void (*rmsnorm_forward)(float* out, const float* inp, const float* weight, int T, int C, float eps);
    void (*matmul_forward)(float* out, const float* inp, Matrix weight, int T, int C, int OC);
    // outs[i] = matmul_forward(inp, weights[i]) for n weights of one input (a layer's q, k and v; gate and up):
    // the same bits as n matmul_forward calls, in one pass that prepares the input once (the fast table: one
    // quantisation, one parallel region over every weight's rows). Optional: NULL makes backend_matmuls call
    // matmul_forward n times.
    void (*matmul_forward_shared)(float* const* outs, const float* inp, const Matrix* weights, const int* OCs, int n,
                                  int T, int C);
    void (*rope_forward)(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta);
    void (*attention_forward)(float* out, const float* q, const float* key_cache, const float* value_cache,
                              const uint8_t* mask, int T, int P, int NH, int NKV, int HS, CacheLayout layout);
    // attention_forward over several sequences' spans of rows in one call (each span's mask, (n, n_past + n),
    // one after another from mask; its slots from its base, in the layout's slot stride; spans: host memory):
    // the same bits as a call per span. Optional: NULL makes backend_attention_spans call attention_forward
    // per span (the CUDA table: a launch per span and layer, correct and slower for many lanes).
    void (*attention_forward_spans)(float* out, const float* q, const float* key_cache, const float* value_cache,
                                    const uint8_t* mask, const SequenceSpan* spans, int n_spans, int NH, int NKV, int HS,
                                    CacheLayout layout);
    // The most cache slots P one attention_forward call takes at head size HS (the CUDA table keeps a row's
    // scores in shared memory); NULL: no limit. target_load refuses a longer context.
    int (*attention_max_slots)(int HS);
    void (*swiglu_forward)(float* out, const float* gate, const float* up, int N);
    void (*residual_forward)(float* out, const float* inp1, const float* inp2, int N);
    void (*softmax_forward)(float* probs, const float* logits, int T, int V);
    void (*kv_compact)(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                       int n_planes, int S, int width);
    // backward passes and training ops
    void (*matmul_backward)(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                            int T, int C, int OC);
    void (*rmsnorm_backward)(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                             int T, int C, float eps);
    void (*rope_backward)(float* dinp, const float* dout, const int* positions, int T, int n_heads, int HS, float theta);
    void (*attention_backward)(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                               const float* keys, const float* values, const uint8_t* mask,
                               int T, int P, int NH, int NKV, int HS);
    void (*swiglu_backward)(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N);
    void (*distribution_loss)(float* losses, float* dlogits, const float* logits, const float* p_target,
                              const int* target_tokens, const float* weights, int T, int V, LossKind kind);
    void (*adamw_update)(float* params, const float* grads, float grad_scale, float* m, float* v, size_t N,
                         float learning_rate, float beta1, float beta2, float eps, float weight_decay, int t);
    double (*sum_squares)(const float* values, size_t N);
    // data movement
    void (*gather_rows)(float* out, const float* source, const int* rows, int n, int C);
    void (*scatter_add_rows)(float* destination, const float* source, const int* rows, int n, int C);
    void (*copy_strided)(float* out, const float* inp, int T, int width, int out_stride, int inp_stride);
    void (*cache_store)(float* key_cache, float* value_cache, const float* k, const float* v, CacheLayout layout, int T,
                        int n_past, int NKV, int HS);
    void (*argmax_rows)(int* out, const float* values, int T, int V);
} Backend;

// The tables. The reference is the oracle every other table is tested against (tests/test_backends.c).
extern const Backend backend_cpu_ref;       // cpu_ref.c: plain loops, fp32 weights
extern const Backend backend_cpu_fast;      // cpu_fast.c: weights in their GGUF type, int8 activations on VNNI and AVX2 CPUs
extern const Backend backend_cpu_fast_exact; // cpu_fast.c: the same kernels with fp32 activations
extern const Backend backend_cpu_fast_bf16;  // cpu_fast.c: backend_cpu_fast with bf16 products for fp32 weights (a trainer's)
#ifdef USE_BLAS
extern const Backend backend_cpu_blas;      // backends.c: the reference with OpenBLAS matmuls
#endif
// kernels.cu: the CUDA table, or NULL with err saying why: no device (or no driver) visible, or a GPU this
// binary has no kernels for. Defined only in a build with CUDA; call it through backend_by_name.
const Backend* backend_cuda(Error* err);
// The default CPU table: the fast one (backend_cpu_fast).
const Backend* backend_cpu(void);
// By name: "cpu" (the default CPU table), "fast", "fast-exact", "ref" (the reference), "blas", "cuda". NULL
// with a message when the name is unknown or the backend is not available in this build or on this machine.
const Backend* backend_by_name(const char* name, Error* err);
// The table a trainer with bf16 products (TrainerSettings.bf16_products) computes on, beside serving's table:
// the fast CPU table's mixed-precision twin (backend_cpu_fast_bf16: the same matrices and memory). NULL with
// err for any other table (they have none).
const Backend* backend_bf16_twin(const Backend* serving, Error* err);
// 1 where the bf16 products run on the CPU's own instruction (AVX-512 BF16: twice an fp32 FMA's multiply-adds);
// elsewhere a portable loop gives the same results, slower than the fp32 kernels.
int fast_bf16_native(void);
int fast_bf16_amx(void);   // and the AMX tile runs its products (cpu_fast.c)
int fast_int8_amx(void);   // 1 where AMX's int8 tiles run the packed int8 matmul of several input rows (cpu_fast.c)
// One line for reports: the table's name, what it runs on (the fast tables: the instruction set and the
// activations' arithmetic) and the OpenMP threads.
void backend_describe(const Backend* backend, char* text, size_t size);
// Attention over several sequences' spans (Backend.attention_forward_spans): the table's op where it has one
// and there are several spans, else attention_forward per span (the same bits).
void backend_attention_spans(const Backend* backend, float* out, const float* q, const float* key_cache,
                             const float* value_cache, const uint8_t* mask, const SequenceSpan* spans, int n_spans, int NH,
                             int NKV, int HS, CacheLayout layout);
// outs[i] = inp @ weights[i]^T, (T, OCs[i]), for n weights of one input (T, C): the table's
// matmul_forward_shared where it has one, else n matmul_forward calls (the same bits).
void backend_matmuls(const Backend* backend, float* const* outs, const float* inp, const Matrix* weights,
                     const int* OCs, int n, int T, int C);

// The fast CPU ops (backends/cpu_fast.c; contract there): weights in any supported GGUF type, read in place.
// matmul_forward_fast takes the int8 path on quantised weights packed by the int8 table's upload_matrix
// (fast_upload_matrix_packed) where the CPU has AVX-512 VNNI or AVX2; quantised weights as stored take fp32
// activations (the tables choose their arithmetic explicitly).
void embedding_forward_fast(float* out, const int* tokens, Matrix table, int T, int C, int V);
void matmul_forward_fast(float* out, const float* inp, Matrix weight, int T, int C, int OC);
// swiglu_forward_cpu's expression with the fast tables' exp (cpu_fast.h: fast_expf), in parallel for large N
void swiglu_forward_fast(float* out, const float* gate, const float* up, int N);
// the trainer's teacher softmax and distribution loss: the reference's expressions in fp32 with fast_expf, each
// row's sums over 16 lanes, on AVX2 and AVX-512; rows in parallel (the reverse KL, and plain C: the reference's code)
void softmax_forward_fast(float* probs, const float* logits, int T, int V);
void distribution_loss_fast(float* losses, float* dlogits, const float* logits, const float* p_target,
                            const int* target_tokens, const float* weights, int T, int V, LossKind kind);
// rmsnorm_forward_cpu's results bit for bit, rows in parallel for a prefill's batch
void rmsnorm_forward_fast(float* out, const float* inp, const float* weight, int T, int C, float eps);
// rope_forward_cpu's results bit for bit, each position's angles computed once for a run of calls
void rope_forward_fast(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta);
// adamw_update_cpu's results bit for bit, vectorised and in parallel
void adamw_update_fast(float* params, const float* grads, float grad_scale, float* m, float* v, size_t N,
                       float learning_rate, float beta1, float beta2, float eps, float weight_decay, int t);
// sum_squares_cpu within double rounding (chunks of 8 interleaved chains, added in a fixed order: the same
// bits for any thread count)
double sum_squares_fast(const float* values, size_t N);
// Packs a stored Q8_0, Q4_0 or Q4_1 matrix (rows, cols) into the int8 table's packed form (the layout:
// backends/cpu_fast.h), out holding the same number of bytes rounded up to whole groups of 16 rows.
void fast_pack_matrix(uint8_t* out, const uint8_t* stored, int type, int rows, int cols);
// matmul_backward_cpu's sums in its order, tiled and vectorised (fp32 weights: the trainer's draft): its
// results bit for bit in portable C, or on AVX2 and AVX-512 within fused multiply-add rounding
void matmul_backward_fast(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          int T, int C, int OC);
// The same contracts with bf16 products for fp32 weights (backends/cpu_fast.h: both operands rounded to bf16,
// exact products summed in fp32, each output's terms in order): backend_cpu_fast_bf16's matmuls.
void matmul_forward_fast_bf16(float* out, const float* inp, Matrix weight, int T, int C, int OC);
void matmul_backward_fast_bf16(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                               int T, int C, int OC);
void attention_forward_fast(float* out, const float* q, const float* key_cache, const float* value_cache,
                            const uint8_t* mask, int T, int P, int NH, int NKV, int HS, CacheLayout layout);
void attention_forward_spans_fast(float* out, const float* q, const float* key_cache, const float* value_cache,
                                  const uint8_t* mask, const SequenceSpan* spans, int n_spans, int NH, int NKV, int HS,
                                  CacheLayout layout);
// attention_backward_cpu's gradients bit for bit (its sums in register tiles)
void attention_backward_fast(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                             const float* keys, const float* values, const uint8_t* mask, int T, int P, int NH, int NKV,
                             int HS);
// quantize_row over rows rows of cols values, bit for bit, in parallel (Q8_0 vectorised where the CPU has
// AVX-512): what a serving draft's copy is made with at every hot swap.
void quantize_rows_fast(int type, const float* source, void* destination, int rows, int cols);

// The CPU memory ops (cpu_ref.c), for every table whose memory is host memory.
void* cpu_alloc(size_t bytes);
void cpu_free(void* pointer);
void cpu_copy(void* destination, const void* source, size_t bytes);  // upload, download and copy; skips dst == src
void cpu_zero(void* destination, size_t bytes);
// Every matrix dequantised into a new fp32 host array (the reference's and OpenBLAS's upload_matrix).
Matrix cpu_upload_matrix_f32(const void* gguf_data, int gguf_type, int rows, int cols);
void cpu_free_matrix(Matrix matrix);
// A host buffer for a backend buffer: the backend buffer itself on a host-memory backend (nothing to
// copy), else a new host allocation; and its release.
void* backend_host_buffer(const Backend* backend, void* backend_buffer, size_t bytes);
void backend_free_host_buffer(const Backend* backend, void* host_buffer);
// A matrix of the backend, as fp32 on the host (rows, cols): downloaded, and dequantised if need be.
void matrix_to_host_f32(const Backend* backend, Matrix matrix, int rows, int cols, float* out);

// ----------------------------------------------------------------------------
// random numbers and sampling (sampling.c)

uint32_t random_u32(uint64_t* state);       // xorshift64*
float random_f32(uint64_t* state);          // uniform in [0, 1), 24 bits
double random_f64(uint64_t* state);         // uniform in [0, 1), 53 bits: the coins of token sampling
uint64_t random_seed_state(uint64_t seed);  // any seed (0 included) to a usable generator state

typedef struct {
    float temperature;  // 0: greedy (argmax, exact); > 0: sample from softmax(logits / temperature)
    float top_p;        // nucleus: keep the smallest set of tokens whose probability reaches top_p (1 = off)
    int top_k;          // keep the top_k most probable tokens (0 = off)
    float min_p;        // keep the tokens at least min_p times as probable as the most probable (0 = off)
} SamplerSettings;

typedef struct { float prob; int index; } ProbIndex; // scratch for the sampling filters (top-k, top-p, min-p)

int sample_argmax(const float* logits, int V);
// Index i with probability probs[i] / sum(probs), for a uniform coin in [0, 1) (sums in double).
int sample_multinomial(const float* probs, int V, double coin);
// Nucleus: zero all but the smallest most-probable set reaching top_p, renormalise (in place).
void apply_top_p(float* probs, int V, float top_p, ProbIndex* scratch);
// Top-k: zero all but the k most probable (ties by id), renormalise (in place); k <= 0 or k >= V: unchanged.
void apply_top_k(float* probs, int V, int k, ProbIndex* scratch);
// Min-p: zero the tokens under min_p times the largest probability, renormalise (in place); min_p <= 0: unchanged.
void apply_min_p(float* probs, int V, float min_p, ProbIndex* scratch);
void logits_to_probs(float* probs, const float* logits, int V, float temperature);
// The exact distribution sample_token draws from when temperature > 0 (temperature, then top-k, top-p, min-p).
void sampling_distribution(float* probs, const float* logits, int V, SamplerSettings settings, ProbIndex* scratch);
// Greedy when settings.temperature == 0 (coin unused). probs, scratch: (V) workspace.
int sample_token(const float* logits, int V, SamplerSettings settings, double coin, float* probs, ProbIndex* scratch);

// ----------------------------------------------------------------------------
// target model: Llama (token embedding; L x [RMSNorm, GQA attention with RoPE, residual, RMSNorm,
// SwiGLU MLP, residual]; final RMSNorm; LM head, possibly tied to the embedding)

// The draft reads the residual stream of this many target layers (their outputs, concatenated: g, 3C wide).
enum { TAP_LAYERS = 3 };

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
    int tap_layers[TAP_LAYERS]; // layers whose residual-stream output feeds the draft (default 1, L/2-1, L-4)
} TargetConfig;
// Query heads per key/value head a model may have (the fast attention keeps a group's scores per thread;
// real models have 1 to 16)
enum { MODEL_MAX_HEAD_GROUP = 64 };
// The narrowest feed-forward layer a model may have: the tensor tables take a tensor of one column for a
// vector (a norm's weight), and the down projection has one column per feed-forward unit
enum { MODEL_MIN_FFN = 2 };

// The weights on the target's backend: matrices as the backend keeps them (upload_matrix), norm weights
// fp32. One struct per layer, since GGUF stores each layer's tensors apart (a fast CPU backend reads
// them in place).
typedef struct {
    float* attn_norm;       // (C)
    Matrix wq;              // (QD, C)
    Matrix wk;              // (KVD, C)
    Matrix wv;              // (KVD, C)
    Matrix wo;              // (C, QD)
    float* ffn_norm;        // (C)
    Matrix w_gate;          // (F, C)
    Matrix w_up;            // (F, C)
    Matrix w_down;          // (C, F)
} TargetLayerWeights;

typedef struct {
    Matrix token_embedding;     // (V, C)
    TargetLayerWeights* layers; // (L) host array of the per-layer weights
    float* output_norm;         // (C)
    Matrix output;              // (V, C); the embedding's Matrix when tied
} TargetWeights;

// The tensor table: one row per weight, so tests and tools can loop "for every tensor".
enum { TARGET_NUM_TENSORS = 12 };
typedef struct {
    const char* gguf_name;  // GGUF name; per-layer names have one %d for the layer
    int per_layer;          // 1: L copies, one per layer, in TargetLayerWeights; 0: one, in TargetWeights
    int rows, cols;         // shape of one copy: (rows, cols), cols fastest (cols == 1 for vectors)
    size_t offset;          // offsetof the field (a Matrix, or a float* for vectors) in its struct
    size_t n_elements;      // total over all layers
    int required;           // 0 only for output.weight (absent when tied)
} TargetTensorInfo;

// One named buffer of a model's activations or state, as the tensor table is for weights: tests loop
// "for every named intermediate" and compare backends with it.
typedef enum { ELEMENT_F32 = 0, ELEMENT_I32 = 1, ELEMENT_U8 = 2 } ElementKind;
size_t element_size(ElementKind kind);
typedef struct {
    const char* name;       // "x", "logits", "key_cache", ...
    ElementKind kind;
    size_t rows, cols;      // shape at capacity (a call fills a prefix)
    void** data;            // where the pointer to the backend buffer lives (a NULL pointer: not allocated)
} ActivationInfo;

// Per-call activations on the backend, sized for up to max_tokens tokens per forward call. The
// per-layer buffers hold the last layer's values after a call.
enum { TARGET_NUM_ACTIVATIONS = 19 };
typedef struct {
    int max_tokens;         // T capacity
    int* tokens;            // (T) this call's tokens
    int* positions;         // (T) their RoPE positions
    uint8_t* mask;          // (T, S) attention mask of the current call, used as (T, P)
    int* slots;             // (TREE_MAX_DEPTH + 1) source slots of a compaction
    float* x;               // (T, C) residual stream
    float* x_norm;          // (T, C) normed input of the current sublayer
    float* q;               // (T, QD)
    float* k;               // (T, KVD) (written into the cache after RoPE)
    float* v;               // (T, KVD)
    float* attn_out;        // (T, QD)
    float* proj;            // (T, C) output of wo or w_down before the residual add
    float* ffn_gate;        // (T, F)
    float* ffn_up;          // (T, F)
    float* features;        // (T, 3C) g: residual-stream outputs of the three tap layers, concatenated
    float* hidden;          // (T, C) h: final normed hidden state (input of the LM head)
    float* logits;          // (T, V)
    float* layer_outputs;   // (L, T, C) residual stream after each layer; NULL unless target_keep_layer_outputs
    ActivationInfo table[TARGET_NUM_ACTIVATIONS]; // the buffers above and the key/value caches, by name
} TargetActivations;

// What a forward call builds on the host and hands back to it (host memory). On a host-memory backend
// these are the activation buffers themselves, so nothing is copied.
typedef struct {
    uint8_t* mask;          // (T, S) the call's mask, built here and uploaded
    float* features;        // (T, 3C) downloaded after every call
    float* hidden;          // (T, C)
    float* logits;          // (T, V): all rows, or the last row in row 0
} TargetHost;

typedef struct {
    TargetConfig config;
    const Backend* backend;     // where the weights, the cache and the activations live
    TargetWeights weights;
    size_t n_weight_floats;     // parameters: elements of every tensor (a tied LM head once)
    TargetTensorInfo tensors[TARGET_NUM_TENSORS];
    int cache_capacity;         // S: key/value cache slots
    float* key_cache;           // (L, NKV, S, HS) backend memory: each layer's cache head by head (cache_by_head)
    float* value_cache;         // (L, NKV, S, HS)
    TargetActivations act;
    TargetHost host;
    Tokenizer tokenizer;
    int has_tokenizer;
    GGUFFile file;              // kept open: the weights' source (a backend may read it in place)
} Target;

// The cache capacity when the caller gives none: the model's context, at most this many slots.
enum { TARGET_DEFAULT_CACHE_CAPACITY = 4096 };

// Loads config, weights (onto the backend: upload_matrix) and tokenizer from a GGUF file.
// cache_capacity 0 means min(context_length, TARGET_DEFAULT_CACHE_CAPACITY); max_tokens is the most
// tokens per forward call.
int target_load(Target* target, const char* path, const Backend* backend, int cache_capacity, int max_tokens,
                Error* err);
// 0 when the backend's attention holds a context of cache_capacity slots and a draft tree beyond it at this
// head size (Backend.attention_max_slots), else an error naming path and the longest context that fits.
int attention_fits(const Backend* backend, int cache_capacity, int head_size, const char* path, Error* err);
void target_free(Target* target);
// Where tensor i of the table lives for one layer (layer ignored for whole-model tensors): a Matrix*
// for matrices, a float** (backend memory) for vectors.
void* target_tensor_field(Target* target, int i, int layer);
// Tensor i (one layer) in fp32 on the host: rows * cols floats.
void target_tensor_to_host(Target* target, int i, int layer, float* out);
// Rows of a GGUF matrix of the model file dequantised to fp32 on the host (rows NULL: the first n):
// the draft and the trainer copy LM-head rows and the final norm with it, whatever the backend.
int target_read_rows(const Target* target, const char* gguf_name, const int32_t* rows, int n, float* out, Error* err);
// The LM head's GGUF name: "output.weight", or "token_embd.weight" when tied.
const char* target_output_name(const Target* target);
// Allocates act.layer_outputs (L, max_tokens, C): every later forward call fills it (parity tests).
void target_keep_layer_outputs(Target* target);

// Runs the target over T new tokens and writes their keys/values into cache slots
// [n_past, n_past + T). positions: (T) RoPE positions. mask: (T, n_past + T), token t may attend to
// cache slot p iff mask[t*(n_past+T) + p]; NULL means causal (all n_past slots, and the new tokens up
// to itself). One mechanism for prefill, decode and tree verification. Inputs are host memory. Fills
// host.features and host.hidden for all T rows, and host.logits for all T rows if all_logits, else only
// the last row (in row 0).
void target_forward(Target* target, const int* tokens, const int* positions, const uint8_t* mask,
                    int T, int n_past, int all_logits);
// Feeds n tokens at cache slots (and positions) [n_past, n_past + n) in chunks of at most max_tokens.
// Leaves the logits of the last token in host.logits row 0. When features / hidden (host) are not NULL,
// they receive every token's features g (n, 3C) and final hidden state h (n, C).
void target_prefill(Target* target, const int* tokens, int n, int n_past, float* features, float* hidden);

// Several sequences in one call (record_batch: the target's outputs for many prompts at once). The cache
// holds each sequence in its own slots [base, base + its length); a span (SequenceSpan) is the rows of the
// call that continue one of them. The rows' arithmetic is the same as in a call of their span alone (each op's rows are
// independent; attention reads one span's slots), so a sequence's tokens, states and logits do not depend
// on what runs beside it. Spans cover rows [0, T) in order; mask, when not NULL, is each span's
// (n, n_past + n) mask one after another (NULL: causal in each). target_forward is one span at base 0.
void target_forward_spans(Target* target, const int* tokens, const int* positions, const uint8_t* mask,
                          const SequenceSpan* spans, int n_spans, int all_logits);
// target_prefill of a sequence whose slots start at base.
void target_prefill_span(Target* target, int base, const int* tokens, int n, int n_past, float* features, float* hidden);
// Whether generation ends at this token: one of the tokenizer's end tokens (a model without one never ends).
int target_is_end(const Target* target, int token);
// Keeps only the accepted path in the cache: slot slots[i] (host) moves to slot destination + i.
void target_compact(Target* target, const int* slots, int n, int destination);

// Tiny models with seeded random weights and a small byte-level BPE tokenizer (tests, experiments).
typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, context_length;
    int tied_output;     // 1: no output.weight (the LM head reuses the embedding)
    int weight_type;     // TYPE_* for the matrices (norm weights are always F32, as in real GGUFs)
    float rope_theta;
    uint64_t seed;
} TinyModelSpec;
int tiny_model_write(const char* path, const TinyModelSpec* spec, Error* err);

// Model-file helpers shared by the target and the draft (target.c).
// An integer hyperparameter that must lie in [lo, hi].
int model_read_config_int(const GGUFFile* file, const char* key, int lo, int hi, int* out, Error* err);
// 0, or -1 with err naming heads_key when a key/value head serves more than MODEL_MAX_HEAD_GROUP query heads
int model_check_head_group(const char* path, const char* heads_key, int n_heads, int n_kv_heads, Error* err);
// The tensor named name, checked to have shape (rows, cols) (cols == 1: a vector of rows) and a weight type.
const GGUFTensor* model_find_tensor(const GGUFFile* file, const char* name, int rows, int cols, Error* err);
// The (T, n_past + T) attention mask of one call: the caller's mask when given, else causal.
void build_attention_mask(uint8_t* out, const uint8_t* mask, int T, int n_past);

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

// A fresh draft's default vocabulary: the DRAFT_DEFAULT_VOCAB lowest target ids (byte-level BPE numbers
// tokens in merge order, so low ids are the frequent ones), or the whole vocabulary when it is smaller;
// online it then follows the traffic (trainer.c). Why 4096: the draft's LM head is most of a drafting
// step (at 8192 entries, half of it), while 4096 entries cost nothing measurable in acceptance: on the
// shipped traffic the 4096 most frequent ids of 300 requests hold 95.7% of 100 other requests' tokens
// (8192: 96.1%; the lowest ids, before adaptation: 73.5% and 79.6%), and in the learning study's lockstep
// runs (48 requests) 4096 entries served 1.310 / 1.436 (requests 1-24 / 25-48) and 1.340 held back,
// against 1.246 / 1.420 and 1.323 with 8192.
enum { DRAFT_DEFAULT_VOCAB = 4096 };

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
    int target_taps[TAP_LAYERS]; // the target layers whose outputs fc reads (the target's tap_layers): what the
                                 // draft was trained on, saved with it and checked against the target at load
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

// The matrices a draft's forward multiplies with: the fp32 weights (draft_matrices_f32: the trainer, and
// every table whose draft_type is F32), or a serving draft's copy in its serving_type.
typedef struct {
    Matrix fc;              // (C, 3C)
    Matrix wq, wk, wv;      // (QD, 2C), (KVD, 2C), (KVD, 2C)
    Matrix wo;              // (C, QD)
    Matrix w_gate, w_up;    // (F, C)
    Matrix w_down;          // (C, F)
    Matrix lm_head;         // (V_d, C)
} DraftMatrices;
DraftMatrices draft_matrices_f32(const DraftWeights* w);

enum { DRAFT_NUM_TENSORS = 13 };
typedef struct {
    const char* gguf_name;  // e.g. "draft.fc.weight"
    int rows, cols;         // (rows, cols), cols fastest; cols == 1 for vectors
    float** data;           // where the pointer lives in DraftWeights
    size_t n_elements;
} DraftTensorInfo;

// The activations of the draft layer on the backend, for up to max_tokens rows with masks over up to
// mask_columns slots. Serving has one (Draft.act); the trainer one per unrolled step.
enum { DRAFT_NUM_ACTIVATIONS = 20 };
typedef struct {
    int max_tokens;         // T capacity
    int mask_columns;       // columns of mask
    int* tokens;            // (T) target ids x whose embedding is e
    int* positions;         // (T) RoPE positions
    uint8_t* mask;          // (T, mask_columns) used as (T, P)
    float* features;        // (T, 3C) g, the input of fc
    float* u;               // (T, C) u: fc(g), or the previous step's out
    float* embed;           // (T, C) e
    float* attn_in;         // (T, 2C) concat(RMSNorm_e(e), RMSNorm_u(u))
    float* q;               // (T, QD)
    float* k;               // (T, KVD)
    float* v;               // (T, KVD)
    float* attn_out;        // (T, QD)
    float* proj;            // (T, C) output of wo or w_down (also scratch for each half of attn_in)
    float* h;               // (T, C) residual stream after attention
    float* h_norm;          // (T, C)
    float* ffn_gate;        // (T, F)
    float* ffn_up;          // (T, F)
    float* ffn_hidden;      // (T, F) silu(ffn_gate) * ffn_up (kept apart: training needs the gate)
    float* out;             // (T, C) layer output: the next draft step's u
    float* out_norm;        // (T, C)
    float* logits;          // (T, V_d)
    ActivationInfo table[DRAFT_NUM_ACTIVATIONS]; // the buffers above, by name
    // (after a call with first_out > 0, draft_extend's, q, attn_out, h, h_norm, the ffn buffers, out, out_norm
    // and logits hold rows [first_out, T) from their row 0; their other rows are stale)
} DraftActivations;
void draft_activations_alloc(DraftActivations* a, const Backend* backend, const DraftConfig* c, int max_tokens,
                             int mask_columns);
void draft_activations_free(DraftActivations* a, const Backend* backend);

// What a draft call builds on the host and hands back (host memory; the activation buffers themselves
// on a host-memory backend).
typedef struct {
    uint8_t* mask;          // (T, S) the call's mask, built here and uploaded
    float* out;             // (T, C) the layer outputs (the next step's u), downloaded after every call
    float* logits;          // (T, V_d)
} DraftHost;

typedef struct {
    DraftConfig config;
    DraftWeights weights;       // host: the weights as initialised, loaded, trained, saved and published
    float* weight_arena;        // host; weights point into it (or into a published copy: draft_use_weights)
    size_t n_weight_floats;
    DraftTensorInfo tensors[DRAFT_NUM_TENSORS];
    int32_t* d2t;               // (V_d) draft id -> target id
    int32_t* t2d;               // (V) target id -> draft id, or -1 when the token is outside the draft vocabulary
    const Backend* backend;     // the target's: the draft reads the target's embedding table there
    Matrix target_embedding;    // (V, C) the target's token embedding on the backend (frozen, not owned)
    DraftWeights device_weights; // what the backend computes with: the host weights themselves on a
                                 // host-memory backend, else pointers into device_arena
    float* device_arena;        // (n_weight_floats) backend memory; NULL on a host-memory backend
    // serving (draft_alloc_state): the matrices draft_forward reads, in serving_type (the backend's
    // draft_type unless draft_serve_as chose another). With
    // TYPE_F32 they are device_weights' own; otherwise a copy quantised from the fp32 weights whenever
    // they change (draft_upload_weights: every hot swap), kept in serving_bytes (host) and uploaded. The
    // trainer's copy of a draft never serves: it computes with the fp32 weights.
    DraftMatrices serving;
    int serving_type;           // TYPE_*: the copy's type (TYPE_F32: no copy)
    uint8_t* serving_bytes;     // host: the quantised matrices, in table order; NULL without a copy
    int serving_updates;        // copies made (the first at draft_alloc_state, then one per weight change)
    double serving_seconds;     // time spent making them
    int cache_capacity;         // S
    float* key_cache;           // (S, KVD) backend memory, slot by slot (cache_by_slot), as the trainer's buffers
    float* value_cache;         // (S, KVD)
    DraftActivations act;
    DraftHost host;
} Draft;

// A fresh draft for a target (on its backend): same width, heads and FFN width as the target's layers,
// a draft vocabulary of vocab_size ids (vocab_size = V allowed), weights seeded from seed. The draft
// vocabulary is given by d2t (vocab_size distinct target ids); NULL means the vocab_size lowest ids.
void draft_init_random(Draft* draft, const Target* target, int vocab_size, const int32_t* d2t, uint64_t seed);
// Warm start (optional): LM head and final norm from the target, fc passing the deepest tap through.
void draft_init_from_target(Draft* draft, const Target* target);
// A further warm start: the decoder layer from the target's last layer (on top of draft_init_from_target).
void draft_init_from_target_layer(Draft* draft, const Target* target);
// Checkpoints are GGUF: config keys, the d2t map, and the 13 tensors (F32).
int draft_save(const Draft* draft, const char* path, Error* err);
// Loads a checkpoint and checks it fits the target (width, vocabulary); errors name the file and key.
int draft_load(Draft* draft, const char* path, const Target* target, Error* err);
// A copy of a draft's host weights and vocabulary (no serving state, no backend weights): what the
// trainer trains and the flywheel publishes.
void draft_copy_weights(Draft* copy, const Draft* source);
// Points the host weights into arena (laid out by the tensor table: the draft's own, or a published
// copy) and brings the backend's weights up to date (draft_upload_weights). A hot swap is this call and
// draft_use_vocabulary.
void draft_use_weights(Draft* draft, float* arena);
// Takes a published draft vocabulary (V_d distinct target ids, as the trainer keeps them: see
// trainer_adapt_vocabulary) with the weights that go with it; d2t and t2d follow.
void draft_use_vocabulary(Draft* draft, const int32_t* d2t);
// Makes device_weights match the host weights: on a host-memory backend they ARE the host weights (no
// copy); otherwise the bound host arena is uploaded into device_arena (allocated on first use). A serving
// draft's matrices follow (quantised again when it serves in another type: serving_type). Call after the host
// weights change.
void draft_upload_weights(Draft* draft);
// Allocates the KV cache and activations on the backend (call after init or load). The draft serves from
// then on: its matrices in the backend's draft_type.
void draft_alloc_state(Draft* draft, int cache_capacity, int max_tokens);
// A serving draft's matrices in `type` from now on instead (--draft-type): TYPE_F32 (the fp32 weights), or a
// copy quantised to TYPE_Q8_0 or TYPE_Q4_1 at every hot swap. A table that keeps its memory off the host
// serves fp32 only (draft_type_resolve refuses the others there).
void draft_serve_as(Draft* draft, int type);
void draft_free(Draft* draft);
// u = fc(g): u (T, C) from features (T, 3C), both host memory; T <= act.max_tokens.
void draft_project_features(Draft* draft, float* u, const float* features, int T);
// Runs the draft layer over T inputs: tokens (T) are target ids (their embedding is e), u (T, C) the
// hidden input. Keys/values go to cache slots [n_past, n_past + T); positions (T) are RoPE positions;
// mask is (T, n_past + T) as for target_forward (NULL: causal). Inputs are host memory (u may be
// host.out of the previous call). Fills host.out (T, C) and host.logits (T, V_d).
void draft_forward(Draft* draft, const int* tokens, const float* u, const int* positions,
                   const uint8_t* mask, int T, int n_past);
// draft_forward for catching the cache up over committed tokens: the same keys and values, but the layer's
// output and the LM head for the last row only (host.out row 0 and host.logits row 0, draft_forward's last
// row bit for bit; on OpenBLAS, whose sgemm blocks by the rows, within the layer tolerance): the rows before
// it are never drafted from, so only their keys and values are computed.
void draft_extend(Draft* draft, const int* tokens, const float* u, const int* positions, int T, int n_past);
// The two halves of draft_forward on backend memory, shared by serving and the training unroll: the
// decoder layer over T rows (tokens, u, positions, mask (T, n_past + T) and the weights w all backend
// memory; keys/values into rows [n_past, n_past + T) of key_buffer / value_buffer; u is copied into
// a->u first, so it may be the previous step's out), and the LM head logits = lm_head(RMSNorm_out(out)).
// m: the matrices (NULL: w's own fp32 matrices, as the trainer computes); the norms always come from w.
// first_out: rows before it only store their keys and values; a->out holds rows [first_out, T) (draft.c).
void draft_layer_forward(const Draft* draft, const DraftWeights* w, const DraftMatrices* m, DraftActivations* a,
                         float* key_buffer, float* value_buffer, const int* tokens, const float* u, const int* positions,
                         const uint8_t* mask, int T, int n_past, int first_out);
void draft_head_forward(const Draft* draft, const DraftWeights* w, const DraftMatrices* m, float* logits,
                        float* out_norm, const float* out, int T);

// ----------------------------------------------------------------------------
// speculative decoding (speculation/tree.c, acceptance.c): draft a tree, verify it in one target pass, accept losslessly

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
void accept_sampling(Acceptance* out, const Tree* tree, const float* p_target, const double* uniforms, int V,
                     float* residual);

// Where draft trees come from: one interface, six kinds.
typedef enum {
    DRAFT_EAGLE,    // the EAGLE-3 draft model (a checkpoint, or random)
    DRAFT_SELF,     // the target drafting for itself: the speedup ceiling (greedy acceptance is complete)
    DRAFT_LOOKUP,   // prompt lookup: the continuation of the latest earlier match of the last n-gram
    DRAFT_NONE,     // no draft: every pass verifies the root alone (plain decoding, with recording)
    DRAFT_SUFFIX,   // the suffix draft: continuations of the longest match in the request so far and in
                    // every output served before (SuffixDecoding; model-free, learns from every request)
    DRAFT_HYBRID,   // per pass, the suffix draft's tree or the EAGLE draft's, whichever is expected to yield more
} DraftKind;

typedef struct {
    int k;          // children per expanded node (1: a chain)
    int depth;      // D: drafting steps (tree depth)
    int nodes;      // N: nodes kept, root included
} TreeShape;

typedef struct {
    int verify_passes;
    int emitted;                        // tokens verify passes yielded (accepted + bonus; the last pass's
                                        // count whole, past an end-of-sequence token or max_new too)
    int proposed;                       // draft nodes verified (root excluded)
    int accepted;                       // draft nodes accepted
    int accepted_at_depth[TREE_MAX_DEPTH + 1]; // passes whose accepted path reached depth d
    int drafted_at_depth[TREE_MAX_DEPTH + 1];  // passes whose tree reached depth d
    double prefill_seconds, draft_seconds, verify_seconds, total_seconds;
    double swap_seconds;                // hot swaps in the passes (not in draft_seconds)
    int n_prompt, n_generated, stopped_at_eos;
    int passes_by_shape[9][TREE_MAX_DEPTH + 1]; // passes by the tree verified: its most children of one node
                                                // (up to 8) and its depth; [1][0]: no speculation
    int passes_suffix;                  // hybrid: passes whose tree came from the suffix draft
    int left_out;                       // adaptive: drafted nodes whose calibrated chance did not pay (adaptive.c)
} SpecStats;

// ----------------------------------------------------------------------------
// adaptive speculation (speculation/adaptive.c): the tree shape of each pass chosen from measured costs
// and measured acceptance by depth and sibling rank, maximising expected tokens per second

enum { ADAPTIVE_MAX_K = 8 };   // the most children per node the chooser considers (= MAX_SPEC_K)
// After this many passes in a row without drafting, one pass drafts the cheapest tree (one node): a probe
// that measures again both a multi-node pass's cost and the draft's acceptance.
// A probe waits for a pass with at most ADAPTIVE_PROBE_MAX_PENDING generated tokens to catch up over (for
// an EAGLE draft: the start of a request, whose prompt it catches up over in batches), since drafting after
// n tokens without it costs the catch-up over them (on one thread of a 2-core Zen 3, 5% of a decode step
// each; on two of a Zen 5, 8% for one token and about 0.5% for each one more).
enum { ADAPTIVE_PROBE_EVERY = 32, ADAPTIVE_PROBE_MAX_PENDING = 2 };
// A verify cost by node count not measured for ADAPTIVE_COST_MEMORY passes is forgotten (read from the line
// through the counts measured since, or the prior), as acceptance evidence fades towards its prior: a pass
// that drafts nothing measures only the decode step, so a count measured in a busy minute would otherwise
// keep that minute's price until the draft drafted it again, which that price prevents.
// The decode step's cost is the one the others are weighed against, and a draft that drafts every pass never
// measures it: one that has not been measured for ADAPTIVE_COST_MEMORY passes (a fresh chooser counts from
// its first pass, pricing the step from the prior and its verify passes until then) is measured by a plain
// pass (a plain probe; the mirror of the drafting probe above; not on a deterministic chooser, which measures
// nothing).
enum { ADAPTIVE_COST_MEMORY = 2 * ADAPTIVE_PROBE_EVERY };
// The first ADAPTIVE_COLD_PASSES passes of a request run on the caches the prefill left (or whatever ran
// while the server idled), up to twice a pass's steady time, and a request's first pass is where the
// drafting probe falls: their times count divided by a slowdown measured for each on its plain passes.
enum { ADAPTIVE_COLD_PASSES = 4 };
// Confidence (a drafting model's: the EAGLE draft's): a node's draft probability given its parent, in
// ADAPTIVE_CONFIDENCE_BUCKETS equal bins, calibrated by how often such nodes were accepted; a node whose
// calibrated chance of acceptance does not pay for its share of the verify pass is left out of the tree.
// Every ADAPTIVE_EXPLORE_EVERY-th drafting pass keeps them all, so that every bin stays measured.
enum { ADAPTIVE_CONFIDENCE_BUCKETS = 10, ADAPTIVE_EXPLORE_EVERY = 16 };

// A verify pass's price is the target's, whichever draft drafted the pass: the seconds of a verify pass by
// node count, how much slower a request's first passes run, and the pass count both are dated by. One
// VerifyCosts serves every chooser drafting for the same target (the hybrid's two: spec_adaptive_share_costs).
// (Each of the hybrid's choosers once measured only the passes its own draft drafted: while the EAGLE draft
// drafted, the suffix draft's prices, its pass count and its count of a request's passes stood still, so a
// slow spell's price of a suffix tree was neither measured again nor forgotten, and a request's twentieth
// pass counted as its first, cold one.)
typedef struct {
    double seconds[TREE_MAX_NODES + 1];      // average seconds of a verify pass by node count (0: unmeasured)
    long measured_at[TREE_MAX_NODES + 1];    // the pass (counting passes) that last measured each count
    uint8_t provisional[TREE_MAX_NODES + 1]; // 1: the price was measured cold, no slowdown known: the next
                                             // measurement replaces it (a chooser's other costs likewise)
    double cold_slowdown[ADAPTIVE_COLD_PASSES]; // a request's pass i (i < ADAPTIVE_COLD_PASSES): its plain
                                             // passes' average time over the decode step's price (0: unmeasured)
    long passes;                             // verify passes observed
    int request_passes;                      // passes since the request began (spec_adaptive_begin_request)
    int deterministic;                       // 1: costs from the prior model, not measured times (lockstep runs
                                             // repeat bit for bit); acceptance is still measured
} VerifyCosts;

// What one pass's times are worth to a chooser's own costs (its drafting step, its catch-up), as
// verify_costs_observe judges them: measures (0: a cold plain pass, which teaches only its slowdown, and
// every pass of deterministic costs),
// only_new (1: cold, slowdown unknown: only costs never measured, provisionally), slowdown (its times' divisor).
typedef struct {
    int measures, only_new;
    double slowdown;
} PassTiming;

typedef struct {
    TreeShape limit;            // the largest shape allowed (depth and nodes bound the menu)
    int max_k;                  // children per node considered: 1..max_k
    VerifyCosts* costs;         // the verify costs it prices with: its own (own_costs), or shared with another
                                // chooser's (spec_adaptive_share_costs; so a SpecAdaptive is not copied)
    VerifyCosts own_costs;
    double draft_step_seconds;  // average seconds per depth drafted (0: unmeasured)
    double catch_up_seconds[TREE_MAX_NODES + 1]; // average seconds to bring the draft up to date over n
                                // committed tokens (an EAGLE draft's forward over them; 0: unmeasured)
    int catch_up_chunk;         // the most tokens one catch-up forward takes (more run in several; 0: TREE_MAX_NODES)
    double reached[TREE_MAX_DEPTH + 1][ADAPTIVE_MAX_K]; // decayed count: the accepted path reached depth d-1
                                                        // and its node had a rank-r child
    double hit[TREE_MAX_DEPTH + 1][ADAPTIVE_MAX_K];     // ... and that child was accepted
    int judged_in_hindsight;    // 1: acceptance is counted on trees judged in hindsight (a model-free draft:
                                // drafting.c), not on the passes observed
    long passes_without_drafting; // passes this chooser observed that drafted nothing
    int passes_since_drafted;   // passes in a row that drafted nothing (a probe is due at ADAPTIVE_PROBE_EVERY)
    uint8_t catch_up_provisional[TREE_MAX_NODES + 1]; // 1: measured cold, no slowdown known (VerifyCosts)
    int draft_step_provisional;
    int calibrates;             // 1: the draft's scores are its log-probabilities (an EAGLE draft): calibrate them
    int root_children_free;     // 1: the depth-1 children come with the catch-up (an EAGLE draft's logits at the
                                // root), so a tree of depth D costs D - 1 drafting steps; 0: D steps (self-drafting
                                // runs the root through the target; the model-free drafts are charged per depth)
    double confidence_reached[ADAPTIVE_CONFIDENCE_BUCKETS]; // decayed count: a verified node whose parent was on
                                                            // the accepted path, by its draft probability's bin
    double confidence_hit[ADAPTIVE_CONFIDENCE_BUCKETS];     // ... and it was accepted
    long drafting_passes;       // passes planned to draft (every ADAPTIVE_EXPLORE_EVERY-th keeps every node)
} SpecAdaptive;

void spec_adaptive_init(SpecAdaptive* a, TreeShape limit, int max_k);
// From now on `a` prices verify passes with `with`'s costs (choosers drafting for one target: the hybrid's two).
// Whoever runs the passes then measures each pass once, verify_costs_observe, and each chooser it teaches
// learns from it, spec_adaptive_learn (spec_adaptive_observe on each would count the pass twice).
void spec_adaptive_share_costs(SpecAdaptive* a, SpecAdaptive* with);
// A request begins (its prefill has run): its first ADAPTIVE_COLD_PASSES passes are cold (aurora.h above).
void spec_adaptive_begin_request(SpecAdaptive* a);
// The shape for the next pass; nodes == 1 (depth 0) means no speculation (a plain decode step). pending:
// the generated tokens the draft must catch up over before it can draft (0 for drafts that need none).
TreeShape spec_adaptive_choose(const SpecAdaptive* a, int pending);
// Counts one tree's acceptance evidence by depth and rank (part of spec_adaptive_learn), and one level of
// it: node `parent` on the accepted path at depth - 1, and its child `accepted` (-1: none) at depth (a tree
// judged in hindsight, level by level as the target produces its tokens: drafting.c).
void spec_adaptive_count(SpecAdaptive* a, TreeShape shape, const Tree* tree, const Acceptance* acceptance);
void spec_adaptive_count_level(SpecAdaptive* a, TreeShape shape, const Tree* tree, int parent, int accepted, int depth);
// After a pass, once whatever drafted it: its verify pass (node count, seconds) measured into the costs; returns
// what the pass's other times are worth (PassTiming) to the choosers it teaches (spec_adaptive_learn).
PassTiming verify_costs_observe(VerifyCosts* costs, int n_nodes, double verify_seconds);
// After a pass, for a chooser it teaches: the pass's timing (verify_costs_observe's), the shape it was planned
// with, its tree (the shape's, cut by the node budget and by confidence), the acceptance, the seconds spent
// drafting it (not catching the draft up) and the drafting steps they bought (-1: as many as the tree is deep),
// and the catch-up's seconds and tokens (0, 0 for none).
void spec_adaptive_learn(SpecAdaptive* a, PassTiming timing, TreeShape shape, const Tree* tree,
                         const Acceptance* acceptance, double draft_seconds, int draft_steps, double catch_up_seconds,
                         int catch_up_tokens);
// Both, for a chooser alone: verify_costs_observe on its costs, then spec_adaptive_learn.
void spec_adaptive_observe(SpecAdaptive* a, TreeShape shape, const Tree* tree, const Acceptance* acceptance,
                           double draft_seconds, int draft_steps, double catch_up_seconds, int catch_up_tokens,
                           double verify_seconds);
double spec_adaptive_expected_tokens(const SpecAdaptive* a, int k, int depth);
// Seconds of a verify pass of n_nodes as the costs price it (measured, or from the line through those measured).
double verify_costs_seconds(const VerifyCosts* costs, int n_nodes);
// The cost of a pass of this shape (catching up over `pending` tokens, the drafting steps, the verify pass)
// in decode steps, as this chooser prices it: a ratio, so two choosers' prices compare whatever each has
// measured (the hybrid's choice between its two drafts).
double spec_adaptive_pass_steps(const SpecAdaptive* a, TreeShape shape, int pending);
// The calibrated chance that a node is accepted once its parent is, from its draft log-probability given
// the parent (step_log_prob); the prior is the draft's own probability.
double spec_adaptive_node_chance(const SpecAdaptive* a, float step_log_prob);
// A node's draft probability given its parent, from the log-probabilities' difference, in [0, 1] (NaN: 0), and
// its bin among n_bins equal ones (the confidence calibrations: here, and the suffix draft's in drafting.c).
double spec_step_probability(double step_log_prob);
int spec_probability_bin(double p, int n_bins);
// The least chance of acceptance (a path's product of node chances) that pays for a node in a pass of this
// shape: a node's share of the verify pass times the tokens per second the shape is expected to yield.
// 0 for no drafting. (Its caller skips it on an exploring pass, spec_adaptive_explores: every node then.)
double spec_adaptive_min_chance(const SpecAdaptive* a, TreeShape shape, int pending);
// Counts a pass planned to draft; returns 1 if it keeps every node (every ADAPTIVE_EXPLORE_EVERY-th, and
// probes), 0 if it may leave nodes out.
int spec_adaptive_explores(SpecAdaptive* a);
// After spec_adaptive_learn (with the same shape): a node left out of the pass's tree (depth, sibling rank),
// whose parent was on the accepted path: spec_adaptive_learn counted its rank as reached (a child the tree
// lacks) if it is below the shape's K; such a rank is hit by its calibrated chance, any other is ignored.
void spec_adaptive_observe_left_out(SpecAdaptive* a, TreeShape shape, int depth, int rank, double chance);

// ----------------------------------------------------------------------------
// the suffix draft (speculation/suffix.c): a depth-bounded suffix trie over served text, each node counting
// the occurrences of its path; a model-free draft that learns from every request at once

enum { SUFFIX_MAX_DEPTH = 64 };

typedef struct {
    int token;              // the edge from the parent (-1 at the root)
    int count;              // occurrences of the path from the root in the indexed text
    int depth;              // path length
    int first_child, next_sibling;  // children as a list (-1 ends it), newest first
} SuffixNode;

typedef struct {
    int max_depth;          // D: substrings of at most D tokens are indexed (2..SUFFIX_MAX_DEPTH)
    int max_nodes;          // node bound (0: none); appending past it, paths needing more nodes stop growing;
                            // suffix_index_add_window forgets the oldest texts instead
    long refused;           // nodes not made because of the bound
    int n_nodes;            // live nodes, the root included
    int n_slots, capacity;  // slots ever used (live or on the free list), allocated
    int free_slot;          // a removed node's slot for reuse, chained by next_sibling (-1: none)
    SuffixNode* nodes;      // (capacity) node 0 is the root; its count is the number of tokens indexed
    size_t n_edges, edge_capacity;
    uint64_t* edge_keys;    // (edge_capacity) (parent << 32 | token), open addressing
    int* edge_children;     // (edge_capacity) the child, -1 for an empty slot
    int n_cursor;
    int* cursor;            // (D) nodes of the suffixes ending at the last appended token
    // the texts suffix_index_add_window indexed, oldest first (a ring of copies), each forgotten in turn
    int** window_texts;
    int* window_lengths;
    int window_first, window_count, window_capacity;
    long window_tokens;     // their tokens: at most max_nodes (copies too are bounded where texts repeat)
    long forgotten;         // texts forgotten to stay within max_nodes
} SuffixIndex;

void suffix_index_init(SuffixIndex* index, int max_depth, int max_nodes);
void suffix_index_free(SuffixIndex* index);
// Indexes a text token by token: begin, then append each token (every suffix ending at it gains one
// occurrence). suffix_index_add indexes a whole text (begin, append each, begin).
void suffix_index_begin(SuffixIndex* index);
void suffix_index_append(SuffixIndex* index, int token);
void suffix_index_add(SuffixIndex* index, const int* tokens, int n);
// Forgets a text indexed by suffix_index_add (every occurrence it added removed; nodes left with none freed):
// the index is then what indexing the other texts alone makes, path for path and count for count. The text
// must have been indexed whole (nothing refused by the bound).
void suffix_index_remove(SuffixIndex* index, const int* tokens, int n);
// suffix_index_add over a window of the newest texts: first forgets the oldest (suffix_index_remove) until a
// text of n tokens is sure to fit within max_nodes (n x D new nodes at most), so nothing is ever refused and
// the index keeps learning as a server's traffic moves on, and until the window's copies hold at most
// max_nodes tokens (traffic that repeats itself makes few nodes); a text longer than max_nodes / D keeps its end.
void suffix_index_add_window(SuffixIndex* index, const int* tokens, int n);
int suffix_child(const SuffixIndex* index, int parent, int token);   // -1 when absent
// The deepest node whose path is a suffix of context[0..n) (at most max_match long, and at most D-1 so
// that a continuation can follow) with at least one continuation; *match_length its length (0: none).
int suffix_match(const SuffixIndex* index, const int* context, int n, int max_match, int* match_length);
// Up to max_nodes continuations of node, at most max_depth deep, the best by empirical probability
// first: tokens, parents (-1: a child of node, else an earlier output index), scores (log-probabilities
// given the match). Returns the count.
int suffix_propose(const SuffixIndex* index, int node, int max_nodes, int max_depth, int* tokens, int* parents,
                   float* scores);

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

// One finished request. The target's states are kept in fp16: half the memory of fp32, so that a pool can
// hold every request served (a record of the shipped traffic at max-new 64 is about 1.4 MB: 315 positions of 4C);
// the trainer reads them back as fp32 (record_rows_f32). fp16 rather than bf16 (what SpecForge stores, its
// targets running in bf16): 3 more bits of mantissa, and the residual stream's massive activations (up to
// 22,272 in SmolLM2's middle and deep taps, at the first token) fit below fp16's 65,504; a larger value is
// kept as +-65,504 rather than infinity. docs/learning-study.md measures the rounding's effect on learning.
#define RECORD_TYPE TYPE_F16
typedef struct {
    int n_tokens;       // prompt + generated tokens
    int n_committed;    // positions with target features (n_tokens - 1: the last token never ran)
    int n_prompt;
    int draft_version;  // the draft version that served it
    int* tokens;        // (n_tokens)
    uint16_t* features; // (n_committed, 3C) fp16 g_t: the target's tapped residual streams, concatenated
    uint16_t* hidden;   // (n_committed, C) fp16 the target's final hidden state h_t
    int keep_discard;   // record the rejected nodes (only the discard loss reads them: they are as many as
                        // the completion's positions times the rejected depth, more than the sequence's own)
    int n_discard, discard_capacity;
    DiscardNode* discard;       // (n_discard)
    uint16_t* discard_features; // (n_discard, 3C) fp16 g at each node's parent
    uint16_t* discard_hidden;   // (n_discard, C) fp16 the target's final hidden state at the node
    int dim;            // C
    int spilled;        // features and hidden are in a RecordSpill's file (record_spill_map points them into its
                        // read-only mapping; record_free leaves them): NULL until then
    size_t spill_offset; // where they start in that file (features, then hidden)
} Record;

// keep_discard: whether record_add_verify_step keeps the rejected nodes (the discard loss is on).
Record* record_new(int dim, int keep_discard);
void record_free(Record* record);
// Appends the rejected nodes of one verify pass (nothing without keep_discard). features (N, 3C) and
// hidden (N, C) are the verify pass's (target->host).
void record_add_verify_step(Record* record, const Tree* tree, const Acceptance* acceptance, const float* features,
                            const float* hidden, int verify_step);
// Copies the finished sequence into the record.
void record_finish(Record* record, const int* tokens, int n_tokens, int n_committed, int n_prompt,
                   const float* features, const float* hidden, int draft_version);
// n_rows rows of width values of a record's states (features, hidden or the discard nodes') as fp32, and
// back (rounded to nearest, saturating at +-65,504; NaN stays NaN).
void record_rows_f32(float* out, const uint16_t* rows, int n_rows, int width);
void record_rows_store(uint16_t* rows, const float* values, int n_rows, int width);
// Bytes a record holds (its states, tokens and rejected nodes): what a pool of them costs.
size_t record_bytes(const Record* record);
// Bytes the states (taps and final hidden state, fp16) of n_positions positions take at width dim.
size_t record_state_bytes(int n_positions, int dim);

// Records whose states live in a file instead of memory (train's data: at the warm-start recipe about 1.2 MB
// a sample, 9.8 GB for 8,000 held in memory). The file is created beside the output and unlinked at once, so
// nothing is left behind however the run ends; once every record is written, one read-only mapping of it
// serves the trainer, whose pages the kernel may drop and read again when memory is short (on a disk: a file
// on tmpfs is memory). The states are the same bytes either way: a draft trained from spilled records is the
// one trained from records in memory.
typedef struct {
    int fd;                     // the unlinked file; -1: closed
    char* path;                 // its name while it existed (messages)
    size_t bytes;               // written so far
    void* map;                  // (bytes) the read-only mapping, after record_spill_map; NULL before
    Error err;                  // the first failure, when `failed` is set
    int failed;
} RecordSpill;
// Creates the file at `path` (a leftover of that name is replaced; an error if it cannot be created or mapped)
// and unlinks it.
int record_spill_open(RecordSpill* spill, const char* path, Error* err);
// Moves a finished record's states to the end of the file (freeing them in memory). A write error is kept in
// the spill (the first one) and the record keeps its states in memory; returns -1 then, and after a failure or
// record_spill_map (the record left in memory).
int record_spill_write(RecordSpill* spill, Record* record);
// Syncs and maps the file, and points each spilled record's features and hidden into the mapping (the others
// are left); the spill's write error, if any, instead.
int record_spill_map(RecordSpill* spill, Record** records, int n_records, Error* err);
void record_spill_close(RecordSpill* spill);   // unmaps and closes (free the records that point into it first)

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

// The weight exchange: a double buffer of draft weights (n floats each) and the draft vocabulary they go
// with (n_ids target ids, d2t: it changes when the vocabulary follows the traffic), with a version number.
typedef struct WeightExchange WeightExchange;
WeightExchange* weight_exchange_new(size_t n, int n_ids);
void weight_exchange_free(WeightExchange* exchange);
// Trainer side: copies weights into the buffer not served and publishes it with the next version (one not
// taken yet is superseded); returns the version. One publisher at a time.
int weight_exchange_publish(WeightExchange* exchange, const float* weights, const int32_t* vocabulary);
// Server side: if a version newer than current_version is published, marks it served and returns its
// weights and vocabulary (valid until the server takes another), writing its version; else NULL. Never
// blocks on a copy (during a publish's copy it returns NULL).
float* weight_exchange_take(WeightExchange* exchange, int current_version, int* version, const int32_t** vocabulary);
long weight_exchange_superseded(WeightExchange* exchange);   // publishes rewritten before the server took them

// ----------------------------------------------------------------------------
// draft sources (speculation/drafting.c, suffix.c, adaptive.c) and generation (generate.c)

enum { MAX_SPEC_K = 8 };     // most children per expanded node (--spec-k)

typedef struct CandidatePool CandidatePool; // private to drafting.c: the candidates of one tree
// A drafted node left out of a pass's tree for its confidence (adaptive.c), whose parent is in the tree
// (its index): the chooser counts it as reached, when the accepted path reaches the parent, and hit by its
// calibrated chance given the parent.
typedef struct { int parent_node, depth, rank; float chance; } LeftOutNode;
// A model-free draft's tree judged in hindsight: the node its produced tokens have followed to, at depth.
// (the suffix draft's also records its calibration class: drafting.c)
typedef struct { Tree tree; int node, depth, suffix_class; } HindsightTree;
enum { HINDSIGHT_TREES = TREE_MAX_DEPTH + 1 };   // a tree per pass, each judged within TREE_MAX_DEPTH tokens
enum { SUFFIX_DRAFT_DEPTH = 32, SUFFIX_DRAFT_MAX_MATCH = 24, SUFFIX_GLOBAL_MAX_NODES = 4 << 20 };
enum { SUFFIX_MATCH_CLASSES = 7 };   // match lengths 1, 2, 3, 4-5, 6-8, 9-12, 13 and more (drafting.c)
enum { SUFFIX_STEP_BINS = 5 };       // a suffix node's probability given its parent, in fifths
typedef struct {
    DraftKind kind;
    TreeShape limit;            // the shape asked for: the largest tree with adaptive shapes, else every tree's
    TreeShape shape;            // the shape of the pass being drafted (the hybrid: its suffix draft's, until the
                                // EAGLE draft is chosen)
    TreeShape eagle_shape;      // DRAFT_HYBRID: the EAGLE draft's shape for the pass, should it draft
    TreeShape suffix_shape;     // DRAFT_HYBRID: its suffix draft's chooser's plan for the pass (kept: shape
                                // becomes eagle_shape when the EAGLE draft drafts)
    int adaptive;               // choose each pass's shape (adaptive.c), from 1 node (no drafting) to limit
    SpecAdaptive adaptive_state;         // the (EAGLE, lookup, ...) draft's measured costs and acceptance
    SpecAdaptive suffix_adaptive_state;  // DRAFT_HYBRID: its suffix draft's acceptance and drafting costs, apart
                                         // (the two accept differently); its verify costs are adaptive_state's
                                         // (so a DraftSource is not copied either)
    Draft* draft;               // DRAFT_EAGLE (on the target's backend)
    int n_extended;             // DRAFT_EAGLE: sequence positions held in the draft cache
    float* root_out;            // DRAFT_EAGLE: (C) the draft's layer output at the last extended position
    float* root_logits;         // DRAFT_EAGLE: (V_d) its logits: the distribution of the root's children
    float* expanded_out;        // DRAFT_EAGLE: (candidates, C) layer output of each expanded candidate
    int lookup_max_ngram;       // DRAFT_LOOKUP: longest n-gram matched (default 3)
    int draft_version;          // DRAFT_EAGLE: the version of the weights being served (recorded)
    WeightExchange* exchange;   // DRAFT_EAGLE online: where newer weights are published (NULL: frozen)
    int swaps;                  // weight versions switched to
    double swap_seconds, swap_seconds_max; // time spent switching (rebinding, and uploading on a GPU)
    CandidatePool* pool;        // the candidates of the tree being drafted
    uint8_t* mask;              // scratch: (MAX_SPEC_K, cache slots)
    float* u_batch;             // scratch: (max(T, MAX_SPEC_K), C) the draft's u for one call
    // the suffix draft (DRAFT_SUFFIX, DRAFT_HYBRID)
    SuffixIndex* suffix_outputs;    // every output served so far (kept across requests; bounded)
    SuffixIndex suffix_request;     // this request's prompt and output so far
    int suffix_indexed;             // tokens of the sequence already in suffix_request
    // the suffix draft's calibration: how often a node is accepted once its parent is, by its tree's class
    // (index * SUFFIX_MATCH_CLASSES + the class of the match's length: this request's or every output's index)
    // and its probability given its parent (SUFFIX_STEP_BINS bins); decayed counts over the trees judged in
    // hindsight (drafting.c)
    double suffix_reached[2 * SUFFIX_MATCH_CLASSES][SUFFIX_STEP_BINS], suffix_hit[2 * SUFFIX_MATCH_CLASSES][SUFFIX_STEP_BINS];
    float pass_prediction;          // the suffix tree's expected accepted tokens (its kept nodes' calibrated chances)
    // hybrid: which source drafted the pass, and what the EAGLE draft is expected to yield
    DraftKind pass_source;          // DRAFT_SUFFIX or DRAFT_EAGLE (DRAFT_NONE: no tree this pass)
    double eagle_accepted;          // decayed average of tokens the EAGLE draft got accepted per pass
    // timing of the pass (adaptive costs): drafting, and the catching up over earlier passes' tokens
    double pass_catch_up_seconds;
    double pass_swap_seconds;       // a hot swap's time in the pass (not charged to drafting)
    int pass_catch_up_tokens;
    int pass_draft_steps;           // the drafting steps the pass ran (an EAGLE draft's forward calls after the
                                    // catch-up, self-drafting's target calls; -1: a model-free draft, charged
                                    // per depth of its tree)
    int pass_no_room;               // 1: the pass could not draft for want of cache slots (the root alone)
    int n_prompt;                   // the request's prompt tokens (catching up over them is not charged to drafting)
    // adaptive, the EAGLE draft (adaptive.c): the pass's least chance for a node (0: every node is kept),
    // and the nodes it left out whose parent is in the tree (its index), for the chooser's counts
    float pass_min_chance;
    float pass_suffix_min_chance;   // the same for the suffix tree's nodes
    int n_left_out;
    LeftOutNode left_out[TREE_MAX_NODES * MAX_SPEC_K];
    // adaptive, a model-free draft (lookup, suffix): the trees proposed at recent passes' roots, judged in
    // hindsight as the target produces the tokens they guess (drafting.c)
    HindsightTree* hindsight;       // (HINDSIGHT_TREES)
    int n_hindsight;
    long hindsight_judged;          // trees judged to their end so far
} DraftSource;

// A sequence being generated: what the target has committed and what the draft reads.
typedef struct {
    int capacity;               // most tokens it can hold
    int n_tokens;               // prompt + emitted
    int n_committed;            // tokens whose keys/values (and features) the target holds
    int* tokens;                // (capacity)
    float* features;            // (capacity, 3C) g, the target's taps at each committed token
    float* hidden;              // (capacity, C) the target's final hidden state at each committed token
} Sequence;

// A tree shape the drafters support (K, S, N in range); the message names the flag.
int tree_shape_check(TreeShape shape, Error* err);
// 0 if a pass of this shape fits the target's forward call (N nodes and K rows at most act.max_tokens);
// else -1 with err naming --batch, --context and --spec-nodes
int tree_shape_fits(TreeShape shape, const Target* target, Error* err);
// A draft source on the target's backend (draft: the EAGLE draft for DRAFT_EAGLE and DRAFT_HYBRID, else
// NULL). shape: every tree's shape, or with draft_source_set_adaptive the largest.
void draft_source_init(DraftSource* source, DraftKind kind, TreeShape shape, Draft* draft, Target* target);
// Adaptive shapes (on or off); deterministic: costs from the prior model (lockstep runs).
void draft_source_set_adaptive(DraftSource* source, int adaptive, int deterministic);
// A request starts (the per-request state: the draft's cache, the request's suffix index) and ends (its
// output joins the suffix draft's index of outputs).
void draft_source_begin_request(DraftSource* source, int n_prompt);
void draft_source_end_request(DraftSource* source, const Sequence* sequence, int n_prompt);
// The shape of the next pass (adaptive, or the fixed one) into source->shape; starts the pass's timing
// (its catch-up and hot swap, which draft_source_observe_pass does not charge to drafting).
void draft_source_plan_pass(DraftSource* source, const Sequence* sequence);
int draft_source_may_draft(const DraftSource* source);   // after plan_pass: 0 when the pass drafts nothing
// After the pass: what adaptive shapes and the hybrid learn (seconds: drafting, the pass's catch-up and hot
// swap excluded; verifying).
void draft_source_observe_pass(DraftSource* source, const Tree* tree, const Acceptance* acceptance,
                               double draft_seconds, double verify_seconds, SpecStats* stats);
void draft_source_free(DraftSource* source);
// Brings the draft up to date with the sequence between verify passes: the suffix drafts index the new
// tokens, and an EAGLE draft switches to newer published weights (its cache catches up over the committed
// positions later, lazily, in draft_source_propose, when a pass drafts).
void draft_source_sync(DraftSource* source, const Sequence* sequence);
// The hot swap alone: switch to newer published weights, if any (draft_source_sync does it every pass).
void draft_source_take_weights(DraftSource* source);
// Proposes a tree rooted at the sequence's last token; slots_free: cache slots beyond the committed
// prefix (when drafting would not fit, the tree is the root alone).
void draft_source_propose(DraftSource* source, Target* target, const Sequence* sequence, Tree* tree, int slots_free);

typedef struct {
    int n_prompt, n_generated;
    double prefill_seconds, decode_seconds;
    int stopped_at_eos;
} GenerateStats;

typedef void (*TokenCallback)(void* context, int token);

// Plain autoregressive generation: prefill the prompt, then one decode step per new token, until
// max_new tokens, the end-of-sequence token, or a full cache. out_tokens: (max_new). Returns the count.
// Both generators take a prompt of 1 to target->cache_capacity tokens (callers refuse others first).
int generate_plain(Target* target, const int* prompt, int n_prompt, int max_new, SamplerSettings settings,
                   uint64_t seed, int* out_tokens, GenerateStats* stats, TokenCallback on_token, void* context);
// Speculative generation: the same tokens as generate_plain when greedy, the same distribution when
// sampling. record: when not NULL, receives what the trainer needs.
int generate_speculative(Target* target, DraftSource* source, const int* prompt, int n_prompt, int max_new,
                         SamplerSettings settings, uint64_t seed, int* out_tokens, SpecStats* stats,
                         TokenCallback on_token, void* context, Record* record);
void print_spec_stats(const SpecStats* stats, FILE* stream);
void print_spec_shapes(const SpecStats* stats, FILE* stream);   // the chosen shapes' shares: one line
void spec_stats_add(SpecStats* total, const SpecStats* stats);   // a running total over requests

// ----------------------------------------------------------------------------
// training (trainer.c)

enum { TTT_MAX_STEPS = 10 };

typedef struct {
    float learning_rate;    // after warm-up
    int warmup_steps;       // linear warm-up: step s (from 0) at (s + 1) / warmup_steps of the rate
    int decay_steps;        // 0: the rate stays after warm-up; N: it follows a cosine from the setting down to 0
                            // at step N (offline training sets N to the run's steps: --lr-schedule cosine)
    float beta1, beta2, adam_eps, weight_decay;
    float max_grad_norm;    // global clipping threshold (0: off)
    int ttt_length;         // L_ttt, the unroll length (1..TTT_MAX_STEPS)
    float step_decay;       // weight of step k is step_decay^k (0.8)
    LossKind loss;          // accepted-path loss
    float discard_weight;   // lambda_discard (0: off)
    int discard_top_k;      // rejected nodes per verify pass (0: all)
    LossKind discard_loss;  // LOSS_FORWARD_KL or LOSS_REVERSE_KL
    int max_positions;      // the most columns one record trains on: the context window, then the
                            // completion (a longer completion keeps its first positions)
                            // (default TRAINER_DEFAULT_MAX_POSITIONS)
    int context_window;     // prompt positions kept before the first completion token (the rest of
                            // the prompt is dropped from training: it costs a full layer per step)
                            // (default TRAINER_DEFAULT_CONTEXT_WINDOW)
    float prompt_weight;    // loss weight of a prompt position relative to a completion position (0: the
                            // loss lives on the completion only). Every recorded position has an exact
                            // teacher (the target's distribution from its recorded hidden state).
    int freeze_lm_head;     // 1: the LM head matrix keeps its initial rows (the target's, with a warm start;
                            // rows entering the vocabulary come from the target too): fewer weights to fit
                            // a few hundred requests with, and no LM-head weight gradient to compute
    int adapt_vocabulary;   // 1: the draft vocabulary follows the traffic (trainer_adapt_vocabulary); 0: it
                            // stays as initialised
    float feature_weight;   // the feature loss's weight (0: off). At every sequence loss row it adds
                            // feature_weight x the row's weight x mean_c (y_c - h_c)^2, y = RMSNorm_out(out) the
                            // draft's normed output and h the target's final normed hidden state at the same
                            // column: the vector the target's LM head maps to the teacher distribution, which the
                            // draft's head (the target's rows, with a warm start) is to reproduce; EAGLE-1's
                            // feature regression beside EAGLE-3's distribution loss. It takes the row's weight,
                            // so with --loss ntp a row whose token is outside the draft vocabulary has neither
    int bf16_products;      // 1: the matmuls of the trainer's draft (forward and backward) take bf16 products on
                            // the serving table's mixed-precision twin (backend_bf16_twin; the fast CPU table's),
                            // the weights, gradients, moments, the teacher (the target's head, on the target's
                            // table) and everything else staying fp32: PyTorch's bf16 autocast, twice an fp32
                            // FMA's multiply-adds where the CPU has AVX-512 BF16. The held-back measure stays fp32.
} TrainerSettings;
enum { TRAINER_DEFAULT_MAX_POSITIONS = 1024, TRAINER_DEFAULT_CONTEXT_WINDOW = 64 };

typedef struct {
    float loss;             // total (accepted + discard + feature), batch mean
    float accepted_loss;    // step-weighted accepted-path loss
    float discard_loss;
    float feature_loss;     // the feature loss's part of loss (0 when it is off)
    float step0_accuracy;   // share of step-0 positions where the draft's argmax is the target's
    float grad_norm;        // before clipping
    float clip_factor;      // what every gradient was multiplied by: max_grad_norm / grad_norm when above it, else 1
    int n_positions;        // step-0 loss positions
    int n_weighted;         // loss rows of any step with a weight above 0 (what the step can learn from)
    int n_discard;          // discard nodes trained on
    int rejected;           // 1: non-finite loss or gradient, update skipped
} TrainStats;

// The unroll's workspace, sized by the longest record seen (grown on demand): backend buffers for the
// forward and backward, host buffers for the bookkeeping uploaded each step.
typedef struct {
    int capacity_rows;      // rows of step 0 (sequence columns + discard nodes), the most of any step
    int capacity_keys;      // rows of all blocks together
    size_t capacity_mask;   // the largest step mask, rows x keys
    int step_rows[TTT_MAX_STEPS], step_keys[TTT_MAX_STEPS]; // each step's own rows and mask columns
    // backend memory
    DraftActivations act[TTT_MAX_STEPS]; // per step, its own size; act[k].mask (rows, keys) is step k's mask,
                                         // act[0].features the step-0 inputs of fc: sequence taps, then
                                         // discard parents' taps
    float* d_out[TTT_MAX_STEPS];    // (step rows, C) gradient of each step's layer output
    float* key_buffer;      // (keys, KVD) blocks 0..L-1
    float* value_buffer;    // (keys, KVD)
    float* d_keys;          // (keys, KVD)
    float* d_values;        // (keys, KVD)
    float* p_target;        // (rows, V_d) target distributions of the loss rows
    float* gathered;        // (rows, C) target hidden states, then layer outputs, of the loss rows
    int* loss_rows;         // (rows) which rows of a step carry a loss
    int* target_tokens;     // (rows) the token at each loss row (next-token loss)
    float* loss_weights;    // (rows)
    float* losses;          // (rows)
    int* argmax;            // (2 rows) step-0 argmax of the draft's logits, then of the target's p
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
    float* d_half;          // (rows, C) one half of d_attn_in, made contiguous
    float* d_u;             // (rows, C)
    // host memory: what is built here and uploaded, or downloaded and read here
    float* host_rows;       // (rows, 3C) features, or target hidden states, staged for upload
    uint8_t* host_mask;     // (capacity_mask) one step's mask
    int* host_tokens;       // (rows)
    int* host_positions;    // (rows)
    int* host_loss_rows;    // (rows)
    int* host_target_tokens; // (rows)
    float* host_loss_weights; // (rows)
    float* host_losses;     // (rows)
    int* host_argmax;       // (2 rows)
    float* host_out_norm;   // (rows, C) the draft's normed outputs at the loss rows, then the feature loss's
                            // gradient
} TrainWorkspace;
// The discard loss's choice of rejected nodes for one record, sized by its rejected nodes (the workspace
// is then sized by the nodes chosen, not by every node a long completion rejected).
typedef struct {
    int capacity;           // the record's discard nodes it holds
    int* used;              // (capacity) indices of the record's discard nodes in use
    int* row;               // (capacity) each node's row in step 0, or -1
} DiscardSelection;

typedef struct {
    TrainerSettings settings;
    const Backend* backend; // the target's: where the weights, gradients, moments and workspace live
    Draft draft;            // the weights being trained (the trainer's own copy): draft.weight_arena on the
                            // host (published, saved), draft.device_weights on the backend (the same
                            // memory on a host-memory backend; downloaded after every applied step)
    float* grads;           // (n_weight_floats) backend memory, same layout as draft.weight_arena
    DraftWeights grad;      // pointers into grads, one per weight
    float* adam_m;          // (n_weight_floats) backend memory
    float* adam_v;          // (n_weight_floats)
    int step;               // optimiser steps taken
    long rejected_updates;  // steps skipped for a non-finite loss or gradient
    float* head_rows;       // (V_d, C) backend memory: the target's LM head rows of the draft vocabulary (frozen)
    const Target* target;   // where head rows come from (a vocabulary change reads new ones)
    long* token_counts;     // (V) how often each target id occurred in the records counted (trainer_count_tokens)
    long vocabulary_swaps;  // draft-vocabulary entries replaced so far
    TrainWorkspace work;
    DiscardSelection discard;
} Trainer;

TrainerSettings trainer_default_settings(void);
// The trainer's own copy of draft's weights, on target's backend (zero moments, step 0).
void trainer_init(Trainer* trainer, const Draft* draft, const Target* target, TrainerSettings settings);
void trainer_free(Trainer* trainer);
// Forward and backward over the batch (the loss is the mean over records), then clipping, warm-up and
// AdamW. A non-finite loss or gradient leaves the weights untouched and counts the rejection. Returns 0
// if the update was applied, 1 if it was rejected, 2 if the batch had no loss row (no update, no step);
// stats filled either way.
int trainer_step(Trainer* trainer, Record* const* records, int n_records, TrainStats* stats);
// The learning rate of the next step: a linear warm-up over warmup_steps (the first at 1 / warmup_steps of the
// setting), then the setting, or with decay_steps a cosine from it to 0 at step decay_steps.
float trainer_learning_rate(const Trainer* trainer);
// What a step over these records costs, in rows the unroll runs (each record's rows of every unrolled step,
// its discard rows among step 0's, as record_train plans them): a step's time grows with it (training in the
// gaps predicts from it). Uses the trainer's discard selection as scratch.
long trainer_step_rows(Trainer* trainer, Record* const* records, int n_records);

// The unroll of one record: which columns (a context window before the completion, then the
// completion), how many steps, how many discard rows, each step's rows and key-block offset.
typedef struct {
    int first_column;   // absolute position of local column 0
    int T;              // sequence columns (the tokens of step 0)
    int n_steps;        // unrolled steps (L_ttt, or fewer for a short record)
    int n_discard;              // discard rows (step 0 only)
    int chain_first;    // steps 1.. run columns [chain_first, T - k) (row r is column chain_first + r): 0 when
                        // training; the held-back evaluation needs only the completion's columns there
    int rows[TTT_MAX_STEPS];             // rows of each step: T + D, then T - k - chain_first
    int block_offset[TTT_MAX_STEPS + 1]; // where each step's keys start in the key buffer
} UnrollPlan;
// Fills first_column, T and n_steps (chain_first 0); returns 0 when the record has nothing to train on.
int unroll_plan_columns(UnrollPlan* plan, const Record* record, const TrainerSettings* settings);
// Then selects the discard rows (discard_used, discard_row sized by the record's discard nodes) and
// fills D, rows and block_offset.
void unroll_plan_rows(UnrollPlan* plan, const Record* record, const TrainerSettings* settings, int* discard_used,
                      int* discard_row);

// The sequence columns of step k that carry a loss, and each one's relative weight: column t predicts the
// token at position first_column + t + k + 2 and has a teacher when its target distribution was recorded
// (t + k + 1 < T). It carries loss if that token is a completion token (weight 1), or a prompt token when
// prompt_weight > 0 (weight prompt_weight); for k > 0 only columns the step runs (t >= chain_first).
// rows (T), weights (T); returns the count.
int unroll_loss_rows(const UnrollPlan* plan, const Record* record, const TrainerSettings* settings, int k, int* rows,
                     float* weights);

// The draft vocabulary follows the traffic (settings.adapt_vocabulary). A fresh draft's vocabulary is a
// guess made before any request (the lowest ids: 73.5% of the default traffic's tokens at 4096); the
// trainer counts the tokens of every record it receives and swaps an entry out for an id outside the
// vocabulary that occurred at least VOCAB_MIN_COUNT times and more than twice as often. The entry
// evicted is the least counted (ties: the highest id, the later BPE merge). The new entry's LM-head row
// starts as the target's own row for that id (as the `target` warm start), its Adam moments at zero; the
// teacher's head row follows. The vocabulary is published with the weights (WeightExchange).
enum { VOCAB_MIN_COUNT = 2 };
void trainer_count_tokens(Trainer* trainer, const Record* record);
// The swaps the counts call for: slots (draft ids) and the target ids that replace them, strongest
// first; returns how many (at most V_d). Pure: counts (V), d2t (V_d) and t2d (V) are only read.
int vocabulary_swaps(const long* counts, const int32_t* d2t, const int32_t* t2d, int V_d, int V, int* slots,
                     int32_t* ids);
// Applies vocabulary_swaps to the trainer's draft; returns the number of entries replaced.
int trainer_adapt_vocabulary(Trainer* trainer);

// Replaces the trainer's draft weights (n_weight_floats, host memory) and the vocabulary they go with (d2t,
// V_d target ids; the teacher's rows follow) without touching its optimiser state.
void trainer_set_weights(Trainer* trainer, const float* weights, const int32_t* d2t);
// The held-back evaluation: the greedy chain acceptance the trainer's current draft would get serving the
// recorded request (prompt and the target's greedy output) with chains of `depth` (1 to TTT_MAX_STEPS; deeper
// is cut to TTT_MAX_STEPS),
// replayed exactly from the record with one teacher-forced unroll and no target pass. Adds the tokens
// emitted by verify passes and the passes to *emitted and *passes (acceptance length = emitted / passes);
// returns 0 when the record has nothing to evaluate.
int trainer_evaluate(Trainer* trainer, const Record* record, int depth, long* emitted, long* passes);
// Whether trainer_evaluate's unroll of a record at `depth` fits the table's attention (a CUDA row's scores
// in shared memory; always on the CPU tables): its keys run past a serving pass's context and tree
int trainer_evaluate_fits(const Trainer* trainer, const Record* record, int depth);
// An evaluator's forward from now on multiplies with a copy of its weights in serving_type (the serving
// draft's Draft.serving_type), refreshed by trainer_set_weights: the draft measured as it is served. Never
// for a trainer that steps (its forward stays fp32: the gradients are of the fp32 weights).
void trainer_evaluate_as_served(Trainer* trainer, int serving_type);

// The discard nodes a record trains on (all rejected nodes, or the top_k per verify pass by draft
// score; ancestors are kept with their descendants), at most max_rows of them, the earliest passes' first:
// used (D) their indices, row_of (n_discard) each node's row in step 0 or -1. Returns D.
int select_discard_nodes(const Record* record, int top_k, int max_rows, int first_column, int n_columns, int* used,
                         int* row_of, int first_row);
// The most discard rows one record adds to step 0 (which attends over its rows and theirs: a mask of (T + D)^2,
// and on CUDA a row's scores in shared memory): deep trees over long completions reject tens of thousands.
enum { TRAIN_MAX_DISCARD_ROWS = 4096 };
// Step k's attention mask over the unroll's key buffer: the EAGLE-3 TTT mask, and at step 0 the
// discard rows' tree mask (the prefix before each node, its rejected ancestors, itself). For k > 0 row r
// is column chain_first + r (UnrollPlan.chain_first).
void ttt_mask(uint8_t* mask, int k, int rows, int n_columns, int chain_first, const int* block_offset, int n_keys,
              const Record* record, int first_column, const int* discard_used, const int* discard_row);

// ----------------------------------------------------------------------------
// traffic (traffic.c) and charts (plot.c)

// One request of replayed traffic. domain points at one of Traffic.domains (not separately allocated).
typedef struct {
    char* domain;   // a bare word ("c", "prose", ...); "default" when the line has no "domain"
    char* prompt;   // UTF-8, NUL-terminated
    int chat;       // 1: from a ShareGPT "conversations" turn; the caller applies the chat template
    int line;       // its line in the file (from 1), which messages name: --order and --domain move requests
} TrafficRequest;
typedef struct {
    int n_requests;
    TrafficRequest* requests;   // (n_requests)
    int n_domains;
    char** domains;             // (n_domains <= TRAFFIC_MAX_DOMAINS) in order of first appearance
    char* path;                 // the file's name, for messages (a copy)
} Traffic;
enum { TRAFFIC_MAX_DOMAINS = 1024 };   // distinct domains in one traffic file

// Traffic files are read whole; larger ones are refused (an error naming the bound), never streamed.
enum { TRAFFIC_MAX_BYTES = 256 << 20 };
// Reads a JSONL file (at most TRAFFIC_MAX_BYTES; a leading UTF-8 byte-order mark is skipped): one JSON
// object per non-empty line; the prompt is "prompt", else "text", else
// the first human/user turn of "conversations" (chat); optional "domain". Errors name the file, line,
// column and what was expected; on error nothing needs freeing.
int traffic_load(Traffic* traffic, const char* path, Error* err);
// The same over n_bytes of JSONL in memory (tests, fuzzing); path names it in messages.
int traffic_parse(Traffic* traffic, const char* bytes, size_t n_bytes, const char* path, Error* err);
void traffic_free(Traffic* traffic);
// order "mixed": seeded Fisher-Yates shuffle (random_seed_state / random_u32); "ordered": grouped by
// domain in order of first appearance, stable within a domain. Any other order is a caller bug (exits).
void traffic_order(Traffic* traffic, const char* order, uint64_t seed);
// Keeps only the requests of one domain; error (listing the domains present) if it is absent.
int traffic_select_domain(Traffic* traffic, const char* domain, Error* err);
// 0 if no request is a chat turn or the tokenizer has the chat template's control tokens (prompt_chat_check),
// else -1 with err naming the first chat request: checked before a run, so that no request is skipped for it.
int traffic_chat_check(const Traffic* traffic, const Tokenizer* tokenizer, Error* err);

// One run on the acceptance chart.
typedef struct {
    const char* label;              // legend text
    int n;                          // points
    const float* acceptance;        // (n) acceptance length per point (tokens per verify pass)
    const char* const* domains;     // (n) domain per request, or NULL
    const int* x;                   // (n) the request index of each point; NULL: 0..n-1
    int measured_curve;             // 1: the points joined as they are, with markers (a held-back evaluation
                                    // every M requests); 0: faint points and a 25-request moving average
} ChartSeries;
// Writes a self-contained SVG: per series faint points and a 25-request moving average (or a measured
// curve), axes, legend, dashed lines where the first series' domain changes.
int svg_acceptance_chart(const char* path, const ChartSeries* series, int n_series, const char* title, Error* err);

// The replay's per-request CSV, header exactly
// request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version,status,prefill_seconds
// status is "served", "skipped_prompt_too_long" or "skipped_prompt_empty" (no token the vocabulary can
// spell; a skipped request was not served: no measurement); seconds
// is the whole request, prefill_seconds its prompt's part (the rest is the decoding speculation speeds up).
#define REQUESTS_CSV_HEADER \
    "request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version,status,prefill_seconds"
typedef struct {
    int n;
    char** domains;     // (n) served requests only
    float* acceptance;  // (n)
    int* request;       // (n) each row's request index (its x on a chart: a skipped request leaves a gap)
} RequestRows;
// Reads the served rows (files of older runs, whose header is the first 8 or 9 columns, too: without the
// status column every row is a served one).
int read_requests_csv(const char* path, RequestRows* rows, Error* err);
void request_rows_free(RequestRows* rows);
// `aurora plot`: draws runs (RUN/requests.csv[:LABEL]) on one chart at out_path; returns the exit
// status (0, or 1 after an "error: ..." line).
int plot_runs(const char* out_path, const char* title, const char* const* runs, int n_runs);

// ----------------------------------------------------------------------------
// interop (interop/): drafts in the formats other systems use. Safetensors and config.json are read and
// written by the project's own code (interop/safetensors.c); the conventions are in eagle3_formats.c.

// Safetensors: 8 bytes of header length, a JSON header (name: dtype, shape, data_offsets), the data.
enum { SAFETENSORS_MAX_DIMS = 8 };
typedef struct {
    char* name;
    const char* dtype;              // one of SAFETENSORS_DTYPES' names
    size_t dtype_size;
    int n_dims;
    int64_t shape[SAFETENSORS_MAX_DIMS]; // row-major: shape[n_dims-1] varies fastest (PyTorch order)
    int64_t n_elements;
    uint64_t begin, end;            // data_offsets, relative to the data section
    const uint8_t* data;            // inside the mapping (no alignment promised: read with memcpy)
    size_t n_bytes;
} SafetensorsTensor;

typedef struct {
    char* path;                     // for messages
    const uint8_t* bytes;           // the whole file
    size_t size;
    int is_mapped;
    int n_tensors;
    SafetensorsTensor* tensors;
} SafetensorsFile;

// Opens and validates a file (memory-mapped) or a caller's buffer: the rules of the reference reader
// (header within the file and 100 MB, one JSON object, known dtypes, shapes matching byte counts, the
// tensors tiling the data section exactly, unique names). On failure nothing needs freeing.
int safetensors_open(SafetensorsFile* file, const char* path, Error* err);
int safetensors_open_memory(SafetensorsFile* file, const void* bytes, size_t size, const char* name, Error* err);
void safetensors_close(SafetensorsFile* file);
const SafetensorsTensor* safetensors_find(const SafetensorsFile* file, const char* name);   // NULL if absent
// F32, F16 or BF16 data to fp32 (n_elements floats); another dtype is an error naming the tensor. out NULL: the
// dtype's check alone.
int safetensors_tensor_to_f32(const SafetensorsFile* file, const SafetensorsTensor* tensor, float* out, Error* err);

// The writer: collects tensors (copies), then writes the file atomically.
typedef struct {
    char* name;
    const char* dtype;
    int n_dims;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    uint8_t* bytes;                 // owned copy
    size_t n_bytes;
} SafetensorsWriterTensor;
typedef struct {
    SafetensorsWriterTensor* tensors;
    int n_tensors;
    char error[512];                // the first misuse, reported by safetensors_writer_save
    int n_metadata;                 // "__metadata__" entries after "format": "pt" (copies)
    char** metadata_keys;           // (n_metadata)
    char** metadata_values;         // (n_metadata)
} SafetensorsWriter;
void safetensors_writer_add(SafetensorsWriter* writer, const char* name, const char* dtype, int n_dims,
                            const int64_t* shape, const void* bytes, size_t n_bytes);
// A "__metadata__" string entry (the format allows string values only; "format" is always "pt").
void safetensors_writer_add_metadata(SafetensorsWriter* writer, const char* key, const char* value);
int safetensors_writer_save(SafetensorsWriter* writer, const char* path, Error* err);
void safetensors_writer_free(SafetensorsWriter* writer);

enum { DRAFT_FORMAT_AURORA = 0, DRAFT_FORMAT_LLAMA_CPP = 1, DRAFT_FORMAT_SPECFORGE = 2 };
// Which format path holds: a directory or a *.safetensors file (SpecForge; its config.json beside it), a GGUF
// with architecture eagle3 (llama.cpp), else ours.
int eagle3_format_of(const char* path);
// Reads a llama.cpp or SpecForge draft for target (draft_load calls this for those formats).
int eagle3_import(Draft* draft, const char* path, int format, const Target* target, Error* err);
// Writes draft for llama.cpp (one GGUF, the target's tokenizer copied in) or SpecForge / SGLang / vLLM (a
// directory with model.safetensors + config.json); type TYPE_F32 (bit-exact round trips) or TYPE_BF16.
int draft_export_llama_cpp(const Draft* draft, const Target* target, const char* path, int type, Error* err);
int draft_export_specforge(const Draft* draft, const Target* target, const char* directory, int type, Error* err);

// ----------------------------------------------------------------------------
// command-line options: one struct for every command (aurora.c fills it from its flag table, where every
// flag is listed once with its type, range and help; replay and train runs in flywheel.c read it)

// The tree shape options mean: with --spec-fixed every pass's shape (default a chain of depth 5), else the
// largest shape adaptive speculation may choose (default K=4, depth 8, 33 nodes). Fills what was not given.
void options_resolve_shape(TreeShape* shape, int fixed);
enum { ADAPTIVE_DEFAULT_K = 4, ADAPTIVE_DEFAULT_DEPTH = 8, ADAPTIVE_DEFAULT_NODES = 33 };

// Defaults the commands share: tokens per forward call (a prefill chunk), the drafting depth; replay's
// and train's KV cache, tokens per request and training pool; the most records per optimiser step.
enum {
    DEFAULT_BATCH_TOKENS = 256, DEFAULT_SPEC_DEPTH = 5,
    REPLAY_DEFAULT_CONTEXT = 2048, REPLAY_DEFAULT_MAX_NEW = 32, REPLAY_DEFAULT_POOL = 64, FLYWHEEL_MAX_BATCH = 64,
    REPLAY_DEFAULT_EVAL_REQUESTS = 16,
    RECORD_DEFAULT_PARALLEL = 16,   // --parallel (recording, flywheel.c: three times one at a time, 2-core Xeon)
};
// replay's and train's warm start (--draft-init): the study's best (docs/learning-study.md)
#define REPLAY_DEFAULT_DRAFT_INIT "target-layer"

typedef struct {
    // files
    const char* model_path;     // -m: the target GGUF
    const char* out_path;       // -o: the file a command writes (draft-init, train, convert, tiny-model, plot)
    const char* traffic_path;   // --traffic: JSONL requests (replay, train)
    const char* out_dir;        // replay --out: requests.csv, summary.txt, acceptance.svg
    // generation
    const char* prompt;         // -p TEXT, or the text of -f FILE (then in prompt_owned)
    const char* prompt_file;    // -f FILE
    char* prompt_owned;         // the file's text, freed with the options
    int n_predict;
    int chat;                   // wrap the prompt in the chat template
    int print_ids;
    int verbose_prompt;         // print the prompt's token ids on stderr
    int parse_special;          // tokenize --special
    int top_logits;             // logits --top
    SamplerSettings sampling;
    int seed;
    const char* device;         // "cpu" or "cuda"; NULL when --device was not given (the CPU)
    int use_cuda;               // derived from device
    int no_blas;                // --no-blas: the reference table (the same as --backend ref)
    const char* backend_name;   // --backend fast|fast-exact|blas|ref|cuda; resolved: backend_by_name's name
    int context;                // KV cache slots (0: the model's context, capped)
    int batch;                  // most tokens per forward call
    int parallel;               // train, and replay's held-back set: prompts whose outputs are recorded at once
    // speculative decoding
    const char* draft;          // generate --draft SOURCE; replay/train: the draft a run starts from (derived)
    TreeShape shape;            // 0s until resolved (options_resolve_shape): the fixed shape, or adaptive's largest
    int spec_fixed;             // every pass drafts `shape` (default: adaptive shapes up to it)
    int hybrid;                 // generate: the EAGLE draft with the suffix draft, per pass the better
    const char* source_name;    // replay: eagle, suffix or hybrid (the draft source served)
    int draft_vocab;            // a fresh draft's vocabulary size (0: min(V, DRAFT_DEFAULT_VOCAB))
    const char* draft_type_name; // --draft-type auto|f32|q8_0|q4_1: a serving draft's matrices (draft_type_resolve)
    // replay and train
    const char* mode;           // replay: "online", "static" or "none" (derived from the three flags below)
    int online, no_spec;        // --online, --no-spec
    const char* static_draft;   // --static DRAFT
    const char* draft_init;     // --draft-init random|target|FILE
    const char* order;          // "mixed" or "ordered"
    const char* domain;
    const char* label;          // a run's name in its chart and summary
    const char* title;          // plot --title
    const char* save_draft;
    const char* loss_name;      // --loss fkl|rkl|ntp
    const char* lr_schedule;    // train: "constant" after the warm-up, or "cosine" down to 0 by the last step
    const char* train_precision; // --train-precision fp32|bf16|auto (TrainerSettings.bf16_products)
    int requests, from, max_new, epochs;
    int self_samples;           // train: samples of the target's own text to train on instead of a traffic file
    int sample_length;          // train: tokens per such sample
    int eval_every;             // replay: measure the served draft on the held-back set every this many requests (0: off)
    int eval_requests;          // replay: requests held back from the stream for that
    int sync_every, lockstep_every, batch_requests, buffer_capacity, pool_capacity, steps_per_request;
    const char* pool_sampling;  // replay: "uniform" (each step samples the pool) or "new-first" (records no step
                                // has drawn first, then samples)
    float train_share;          // replay: the share of one core the trainer thread may use (duty cycle)
    float load;                 // replay: the offered load (1: requests back to back; below 1: idle gaps, and an
                                // online trainer trains only in them)
    TrainerSettings train;
    int quiet;                  // no progress or summary on stderr (tests)
    // tiny-model, convert
    TinyModelSpec tiny;
    const char* type_name;      // --type f32|f16|bf16|q8_0|q4_0|q4_1
    // draft-export
    const char* format;         // llama.cpp, specforge or aurora
    const char* dtype;          // f32 or bf16
    int untied;
    // positional arguments (tokenize: TEXT; plot: RUN/requests.csv[:LABEL] ...)
    int n_positional;
    const char** positional;
} Options;

// Runs (flywheel/flywheel.c): the defaults of replay and train; replay (serve a traffic file, training
// online) and offline training, each returning the exit status (0, 1 after an "error: ..." line, 128 + the
// signal when interrupted, results saved); a fresh draft's vocabulary size (an error when requested > V);
// the draft a run starts from ("random", "target" or a checkpoint).
Options replay_default_options(void);
int replay_run(const Options* o);
int train_offline(const Options* o);
// train --self-samples: a sample of the target's own text shorter than this (it ended it) is not kept
enum { SELF_SAMPLE_MIN_TOKENS = 16 };
int choose_draft_vocab(const Target* target, int requested, int* vocab_size, Error* err);
// --draft-type: the TYPE_* a serving draft's matrices take on backend ("auto" or NULL: its draft_type). An error
// for another where no draft model serves (has_model 0: plain, self, lookup, suffix), and for a quantised type on
// a table whose memory is off the host, which serves the fp32 weights.
int draft_type_resolve(const char* name, int has_model, const Backend* backend, int* type, Error* err);
int replay_load_draft(Draft* draft, const char* what, const Target* target, int draft_vocab, uint64_t seed, Error* err);
// Whether replay_load_draft makes `what` fresh (random, target, target-layer) rather than reading a checkpoint.
int draft_start_is_fresh(const char* what);

#ifdef __cplusplus
}
#endif

#endif // AURORA_H
