/*
test_hardening.c: what surrounds the results. Inputs are regular files only (a FIFO or a device is
refused without blocking, text inputs have a size bound), outputs replace their target atomically (a
failed write leaves the old file intact and is an error), directories are made without a shell, the
chat template never turns user text into control tokens, and a model or draft whose RMS epsilon or RoPE
base is not finite is refused. The command-line side of the same guarantees (signals, full disks,
skipped requests) is in tests/test_cli.sh.
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"
#include <sys/resource.h>
#include <sys/wait.h>

static char temp_directory[256];

static const char* temp_path(const char* name) {
    static char paths[16][512];
    static int next = 0;
    char* path = paths[next++ % 16];
    snprintf(path, 512, "%s/%s", temp_directory, name);
    return path;
}

static char* read_all(const char* path, size_t* n) {
    char* text = NULL;
    Error err;
    if (read_text_file(path, 1 << 30, &text, n, &err) != 0) { return NULL; }
    return text;
}

static void test_regular_files_only(void) {
    Error err;
    size_t size;
    const char* fifo = temp_path("fifo");
    check(mkfifo(fifo, 0600) == 0, "mkfifo");
    // every one of these would block forever if the FIFO were opened for a blocking read
    int fd = open_regular_file(fifo, &size, &err);
    check(fd < 0 && strstr(err.message, "FIFO") != NULL, "a FIFO is refused without blocking: %s", err.message);
    GGUFFile gguf;
    check(gguf_open(&gguf, fifo, &err) != 0 && strstr(err.message, "FIFO"), "gguf_open on a FIFO: %s", err.message);
    Traffic traffic;
    check(traffic_load(&traffic, fifo, &err) != 0 && strstr(err.message, "FIFO"), "traffic_load on a FIFO: %s", err.message);
    RequestRows rows;
    check(read_requests_csv(fifo, &rows, &err) != 0 && strstr(err.message, "FIFO"), "read_requests_csv on a FIFO: %s", err.message);
    // nor is an output: the finished file's rename would replace the FIFO (or, as root, a device) with a file
    OutputFile out;
    check(output_open(&out, fifo, &err) != 0 && strstr(err.message, "is a FIFO"), "output_open on a FIFO: %s", err.message);
    check(write_file_atomic("/dev/null", "x", 1, &err) != 0 && strstr(err.message, "character device"),
          "writing over /dev/null is refused: %s", err.message);
    struct stat fifo_info;
    check(stat(fifo, &fifo_info) == 0 && S_ISFIFO(fifo_info.st_mode), "the FIFO is still a FIFO");
    check(traffic_load(&traffic, "/dev/zero", &err) != 0 && strstr(err.message, "character device"),
          "/dev/zero as traffic is refused: %s", err.message);
    check(traffic_load(&traffic, temp_directory, &err) != 0 && strstr(err.message, "directory"),
          "a directory as traffic is refused: %s", err.message);

    // the size bound of text inputs
    const char* big = temp_path("big.txt");
    FILE* f = fopen(big, "w");
    for (int i = 0; i < 1000; i++) { fputs("{\"prompt\": \"a\"}\n", f); }
    fclose(f);
    char* text;
    check(read_text_file(big, 100, &text, &size, &err) != 0 && strstr(err.message, "at most 100 bytes"),
          "a file over the bound is refused: %s", err.message);
    check(read_text_file(big, 1 << 20, &text, &size, &err) == 0 && size == 16000 && text[size] == '\0', "read within the bound");
    free(text);

    // a byte-order mark does not reject a JSONL file
    const char* bom = temp_path("bom.jsonl");
    f = fopen(bom, "w");
    fputs("\xEF\xBB\xBF{\"prompt\": \"first\"}\n{\"prompt\": \"second\"}\n", f);
    fclose(f);
    check(traffic_load(&traffic, bom, &err) == 0 && traffic.n_requests == 2 && strcmp(traffic.requests[0].prompt, "first") == 0,
          "a UTF-8 byte-order mark is skipped: %s", err.message);
    if (traffic.n_requests == 2) { traffic_free(&traffic); }
}

static void test_atomic_outputs(void) {
    Error err;
    const char* path = temp_path("out.bin");
    check(write_file_atomic(path, "old contents", 12, &err) == 0, "write: %s", err.message);
    // a failure mid-write (here: a file-size limit, as a full disk) leaves the old file and no temporary
    pid_t child = fork();
    if (child == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit limit = {4, 4};
        setrlimit(RLIMIT_FSIZE, &limit);
        char big[4096];
        memset(big, 'x', sizeof(big));
        Error child_err;
        int status = write_file_atomic(path, big, sizeof(big), &child_err);
        _exit(status != 0 && strstr(child_err.message, "write failed") ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a write past the size limit must report an error");
    size_t n;
    char* text = read_all(path, &n);
    check(text && n == 12 && memcmp(text, "old contents", 12) == 0, "the old file survives a failed write");
    free(text);
    char temporary[600];
    snprintf(temporary, sizeof(temporary), "%s.tmp.%d", path, (int)child);
    check(access(temporary, F_OK) != 0, "no temporary file is left behind");

    // a write that failed mid-file and was flushed away (a streamed output flushes after each row: glibc then
    // drops the buffer, and the final flush succeeds with errno long since changed) is reported as a failed
    // write, not with whatever errno the program last left (it once read "Interrupted system call")
    child = fork();
    if (child == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit limit = {4, 4};
        setrlimit(RLIMIT_FSIZE, &limit);
        OutputFile streamed;
        Error child_err;
        if (output_open(&streamed, path, &child_err) != 0) { _exit(2); }
        fputs("more than four bytes", streamed.stream);
        fflush(streamed.stream);   // fails: the row is lost, the stream's error flag set
        errno = EINTR;             // what a later, unrelated call leaves
        int failed = output_commit(&streamed, &child_err) != 0;
        _exit(failed && strstr(child_err.message, "write failed") && !strstr(child_err.message, strerror(EINTR)) ? 0 : 1);
    }
    waitpid(child, &status, 0);
    check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a write that failed before the commit must be reported as a failed write, not by a stale errno");
    text = read_all(path, &n);
    check(text && n == 12 && memcmp(text, "old contents", 12) == 0, "the old file survives a failed streamed write");
    free(text);

    // an exit the program did not plan (out of memory, an internal error: exit(EXIT_FAILURE) with an output open)
    // removes the temporary file, and the old file stays; the control: _exit, which runs no exit handlers, leaves it
    for (int planned_control = 0; planned_control < 2; planned_control++) {
        child = fork();
        if (child == 0) {
            exit_signals_install();
            OutputFile open_output;
            Error child_err;
            if (output_open(&open_output, path, &child_err) != 0) { _exit(2); }
            fputs("half a result", open_output.stream);
            fflush(open_output.stream);
            if (planned_control) { _exit(1); }
            exit(EXIT_FAILURE);
        }
        waitpid(child, &status, 0);
        snprintf(temporary, sizeof(temporary), "%s.tmp.%d", path, (int)child);
        int left = access(temporary, F_OK) == 0;
        if (planned_control) {
            check(left, "the control: a child that ends with _exit should leave its temporary file");
            remove(temporary);
        } else {
            check(WIFEXITED(status) && WEXITSTATUS(status) == EXIT_FAILURE && !left,
                  "exit(EXIT_FAILURE) with an output open must remove its temporary file");
        }
    }
    text = read_all(path, &n);
    check(text && n == 12 && memcmp(text, "old contents", 12) == 0, "the old file survives an exit mid-write");
    free(text);

    // output_abandon leaves the target alone
    OutputFile out;
    check(output_open(&out, path, &err) == 0, "output_open");
    fputs("half", out.stream);
    output_abandon(&out);
    text = read_all(path, &n);
    check(text && n == 12, "an abandoned output changes nothing");
    free(text);

    // a link planted at the predictable temporary name (a shared directory): the link is replaced, what
    // it names is left alone
    const char* victim = temp_path("victim.txt");
    check(write_file_atomic(victim, "precious", 8, &err) == 0, "write: %s", err.message);
    char planted[600];
    snprintf(planted, sizeof(planted), "%s.tmp.%ld", path, (long)getpid());
    check(symlink(victim, planted) == 0, "symlink");
    check(write_file_atomic(path, "new contents", 12, &err) == 0, "a write past a planted link: %s", err.message);
    text = read_all(victim, &n);
    check(text && n == 8 && memcmp(text, "precious", 8) == 0, "the link's target is untouched");
    free(text);
    text = read_all(path, &n);
    check(text && n == 12 && memcmp(text, "new contents", 12) == 0, "the output is written");
    free(text);
    // the replacement keeps the replaced file's permissions
    check(chmod(path, 0600) == 0, "chmod");
    check(write_file_atomic(path, "old contents", 12, &err) == 0, "rewrite: %s", err.message);
    struct stat mode_info;
    check(stat(path, &mode_info) == 0 && (mode_info.st_mode & 0777) == 0600, "a 0600 file stays 0600 (got %o)",
          mode_info.st_mode & 0777);

    // unwritable places are found before any work
    const char* file = temp_path("plain_file");
    write_file_atomic(file, "x", 1, &err);
    char under_file[600];
    snprintf(under_file, sizeof(under_file), "%s/draft.gguf", file);
    check(check_writable(under_file, 1, &err) != 0 && strstr(err.message, file), "a path under a file: %s", err.message);
    check(check_writable(temp_directory, 0, &err) != 0 && strstr(err.message, "is a directory"), "a directory as output: %s", err.message);
    char nested[600];
    snprintf(nested, sizeof(nested), "%s/a/b/c/out.txt", temp_directory);
    check(check_writable(nested, 1, &err) == 0, "nested directories are made: %s", err.message);
    check(access(nested, F_OK) != 0, "check_writable leaves no file at the path");
    // mkdir(2), never a shell: a name with quotes and semicolons is only a name
    char hostile[600];
    snprintf(hostile, sizeof(hostile), "%s/x'; touch %s/PWNED; echo '", temp_directory, temp_directory);
    check(make_directories(hostile, &err) == 0, "a hostile directory name is created as a name: %s", err.message);
    check(access(temp_path("PWNED"), F_OK) != 0, "no command ran");
    struct stat info;
    check(stat(hostile, &info) == 0 && S_ISDIR(info.st_mode), "the directory exists under its literal name");
    // a chain that fails part way (a last name of 300 bytes, past NAME_MAX) leaves none of what it made, and
    // nothing that was there before goes: the directories made count from the path's end
    char too_long[1000];
    int at = snprintf(too_long, sizeof(too_long), "%s/made1//made2/", temp_directory);
    snprintf(too_long + at, sizeof(too_long) - (size_t)at, "%0300d", 0);
    check(make_directories(too_long, &err) != 0 && strstr(err.message, "cannot create the directory"),
          "a name past NAME_MAX: %s", err.message);
    check(access(temp_path("made1"), F_OK) != 0 && access(temp_directory, F_OK) == 0,
          "a failed make_directories removes what it made, and only that");
    int created = -1;
    snprintf(nested, sizeof(nested), "%s/a/b/new1/new2/", temp_directory);   // a/b exist (above)
    check(make_directories_counted(nested, &created, &err) == 0 && created == 2, "two directories made: counted %d", created);
    write_file_atomic(temp_path("a/b/kept"), "x", 1, &err);
    remove_directories(nested, created + 1);   // one too many: a/b holds a file, so it stays
    snprintf(nested, sizeof(nested), "%s/a/b/new1", temp_directory);
    check(access(nested, F_OK) != 0 && access(temp_path("a/b/kept"), F_OK) == 0, "remove_directories: the made ones go, a "
          "directory with a file in it stays");
}

// Every tensor of file into writer (through fp32, in the same types).
static void writer_copy_tensors(GGUFWriter* writer, const GGUFFile* file) {
    for (uint64_t i = 0; i < file->n_tensors; i++) {
        const GGUFTensor* t = &file->tensors[i];
        float* data = mallocCheck((size_t)t->n_elements * sizeof(float));
        gguf_tensor_to_f32(t, data);
        gguf_writer_add_tensor(writer, t->name, t->type, t->n_dims, t->shape, data);
        free(data);
    }
}

// A variant of a tiny model: the file `clean` written from spec, then copied to path without the
// metadata keys in skip, with what add writes in their place (values or a whole tokenizer).
typedef struct { const char* key; enum { VALUE_FLOAT, VALUE_STRING, VALUE_BOOL, VALUE_UINT32, VALUE_TOKENIZER } kind;
                 float number; const char* text; } MetadataValue;
static int write_variant(const char* clean, const char* path, const TinyModelSpec* spec, const char* const* skip,
                         MetadataValue value, Error* err) {
    if (tiny_model_write(clean, spec, err) != 0) { return -1; }
    GGUFFile file;
    if (gguf_open(&file, clean, err) != 0) { return -1; }
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_copy_values(writer, &file, skip, err);
    switch (value.kind) {
    case VALUE_FLOAT: gguf_writer_add_float32(writer, value.key, value.number); break;
    case VALUE_STRING: gguf_writer_add_string(writer, value.key, value.text); break;
    case VALUE_BOOL: gguf_writer_add_bool(writer, value.key, value.number != 0.0f); break;
    case VALUE_UINT32: gguf_writer_add_uint32(writer, value.key, (uint32_t)value.number); break;
    case VALUE_TOKENIZER: gguf_writer_add_tiny_tokenizer(writer, (int)value.number); break;
    }
    writer_copy_tensors(writer, &file);
    int status = gguf_writer_save(writer, path, err);
    gguf_writer_free(writer);
    gguf_close(&file);
    return status;
}

// A tiny model (RoPE base theta) without the keys in skip (NULL-terminated), then one metadata value set: a
// float, a string or a bool.
static int write_model_without(const char* path, float theta, const char* const* skip, MetadataValue value, Error* err) {
    TinyModelSpec spec = {32, 1, 4, 2, 32, 300, 64, 1, TYPE_F32, theta, 5};
    return write_variant(temp_path("clean.gguf"), path, &spec, skip, value, err);
}

// The same with that one value replacing the file's own.
static int write_model_with_value(const char* path, float theta, MetadataValue value, Error* err) {
    const char* skip[] = {value.key, NULL};
    return write_model_without(path, theta, skip, value, err);
}

// A tiny model whose epsilon or RoPE base is overridden (INFINITY, NaN).
static int write_model_with(const char* path, float eps, float theta, Error* err) {
    return write_model_with_value(path, theta, (MetadataValue){"llama.attention.layer_norm_rms_epsilon", VALUE_FLOAT, eps, NULL}, err);
}

static void test_config_ranges(void) {
    Error err;
    Target target;
    const char* path = temp_path("config.gguf");
    check(write_model_with(path, 1e-5f, 10000.0f, &err) == 0, "write: %s", err.message);
    check(target_load(&target, path, &backend_cpu_ref, 32, 4, &err) == 0, "a finite config loads: %s", err.message);
    target_free(&target);
    // (an epsilon of 0: RMSNorm of a zero embedding row is 0 / 0, NaN through every later position)
    float bad[][2] = {{INFINITY, 10000.0f}, {NAN, 10000.0f}, {1e-5f, INFINITY}, {1e-5f, NAN}, {-1.0f, 10000.0f}, {1e-5f, 0.0f},
                      {0.0f, 10000.0f}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        check(write_model_with(path, bad[i][0], bad[i][1], &err) == 0, "write: %s", err.message);
        int status = target_load(&target, path, &backend_cpu_ref, 32, 4, &err);
        check(status != 0 && strstr(err.message, "epsilon"), "eps %g, rope base %g must be refused (%s)", bad[i][0], bad[i][1],
              status == 0 ? "loaded" : err.message);
        if (status == 0) { target_free(&target); }
    }
    // a batch whose activations pass 2^31 - 1 elements (the op table counts them in an int): refused at load,
    // naming the largest batch that fits (this model's widest row is its 96 = 3 x 32 draft features)
    check(write_model_with(path, 1e-5f, 10000.0f, &err) == 0, "write: %s", err.message);
    int status = target_load(&target, path, &backend_cpu_ref, 1 << 25, 1 << 25, &err);
    check(status != 0 && strstr(err.message, "expected --batch 22369621 or less"), "a batch of 2^25 tokens at width 96 must be "
          "refused (%s)", status == 0 ? "loaded" : err.message);
    if (status == 0) { target_free(&target); }
}

// What the loader does not implement it refuses, what the file asks for it does: RoPE scaling (linear,
// yarn) refused ('none' loads), a key or value length other than the width over the heads too;
// add_bos_token puts the BOS id first in a prompt; more query heads per key/value head than the attention
// holds refused at load, not at the first forward.
static void test_model_metadata(void) {
    Error err;
    Target target;
    const char* path = temp_path("metadata.gguf");
    // RoPE scaling as llama.cpp reads it: a type (absent: linear) and a factor (absent or 0: none); what
    // changes positions is refused, a factor given without a type too (it once loaded and ran unscaled)
    struct { MetadataValue value; int loads; const char* named; } scalings[] = {
        {{"llama.rope.scaling.type", VALUE_STRING, 0.0f, "none"}, 1, NULL},
        {{"llama.rope.scaling.type", VALUE_STRING, 0.0f, "linear"}, 1, NULL},   // no factor: nothing changes
        {{"llama.rope.scaling.type", VALUE_STRING, 0.0f, "yarn"}, 0, "'yarn'"},
        {{"llama.rope.scaling.factor", VALUE_FLOAT, 1.0f, NULL}, 1, NULL},
        {{"llama.rope.scaling.factor", VALUE_FLOAT, 8.0f, NULL}, 0, "factor 8 from llama.rope.scaling.factor"},
        {{"llama.rope.scale_linear", VALUE_FLOAT, 2.0f, NULL}, 0, "factor 2 from llama.rope.scale_linear"},
        // a head size other than width / heads (here 32 / 4 = 8) is refused by the key's name
        {{"llama.attention.key_length", VALUE_UINT32, 8.0f, NULL}, 1, NULL},
        {{"llama.attention.key_length", VALUE_UINT32, 16.0f, NULL}, 0, "llama.attention.key_length is 16, expected"},
        {{"llama.attention.value_length", VALUE_UINT32, 4.0f, NULL}, 0, "llama.attention.value_length is 4, expected"},
        {{"llama.rope.dimension_count", VALUE_UINT32, 8.0f, NULL}, 1, NULL},
        {{"llama.rope.dimension_count", VALUE_UINT32, 4.0f, NULL}, 0, "partial RoPE is not supported"},
        // the vocabulary's size is the embedding's rows (300 here); the optional key must agree with them
        {{"llama.vocab_size", VALUE_UINT32, 300.0f, NULL}, 1, NULL},
        {{"llama.vocab_size", VALUE_UINT32, 301.0f, NULL}, 0, "'llama.vocab_size' is 301, but tensor 'token_embd.weight' has 300"},
    };
    for (size_t i = 0; i < sizeof(scalings) / sizeof(scalings[0]); i++) {
        check(write_model_with_value(path, 10000.0f, scalings[i].value, &err) == 0, "write: %s", err.message);
        int status = target_load(&target, path, &backend_cpu_ref, 32, 4, &err);
        if (scalings[i].loads) {
            check(status == 0, "metadata case %zu (%s) must load: %s", i, scalings[i].value.key, err.message);
        } else {
            check(status != 0 && strstr(err.message, scalings[i].named), "metadata case %zu must be refused naming %s (%s)",
                  i, scalings[i].named, status == 0 ? "loaded" : err.message);
        }
        if (status == 0) { target_free(&target); }
    }
    // no bos_token_id or eos_token_id: a "gpt2" vocabulary's defaults, 11 for both, as llama.cpp's
    const char* no_ids[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", NULL};
    check(write_model_without(path, 10000.0f, no_ids, (MetadataValue){"tokenizer.ggml.add_bos_token", VALUE_BOOL, 1.0f, NULL},
                              &err) == 0, "write: %s", err.message);
    if (target_load(&target, path, &backend_cpu_ref, 32, 4, &err) != 0) {
        check(0, "load without bos/eos ids: %s", err.message);
    } else {
        int ids[16];
        int n = prompt_encode(&target.tokenizer, "hi", 0, ids, 16, &err);
        check(target.tokenizer.bos_id == 11 && target.tokenizer.eos_id == 11 && n >= 2 && ids[0] == 11 &&
              target_is_end(&target, 11), "no bos/eos ids: bos %d, eos %d (expected llama.cpp's 11), the prompt starts with %d",
              target.tokenizer.bos_id, target.tokenizer.eos_id, n > 0 ? ids[0] : -1);
        target_free(&target);
    }
    // add_bos_token and add_eos_token, as llama.cpp's tokenizer with add_special: BOS first, EOS last (one key
    // set at a time: the tiny model's add_bos_token is false and it has no add_eos_token)
    const struct { const char* key; int value, bos, eos; } flags[] = {
        {"tokenizer.ggml.add_bos_token", 0, 0, 0}, {"tokenizer.ggml.add_bos_token", 1, 1, 0},
        {"tokenizer.ggml.add_eos_token", 1, 0, 1}, {"tokenizer.ggml.add_eos_token", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        MetadataValue flag = {flags[i].key, VALUE_BOOL, (float)flags[i].value, NULL};
        check(write_model_with_value(path, 10000.0f, flag, &err) == 0, "write: %s", err.message);
        if (target_load(&target, path, &backend_cpu_ref, 32, 4, &err) != 0) { check(0, "load: %s", err.message); continue; }
        int ids[16], plain[16], bos = flags[i].bos, eos = flags[i].eos;
        int n = prompt_encode(&target.tokenizer, "hi there", 0, ids, 16, &err);
        int n_plain = tokenizer_encode(&target.tokenizer, "hi there", 8, 0, plain, 16, &err);
        check(n == n_plain + bos + eos && (!bos || ids[0] == target.tokenizer.bos_id) &&
              (!eos || ids[n - 1] == target.tokenizer.eos_id) && memcmp(ids + bos, plain, (size_t)n_plain * sizeof(int)) == 0,
              "%s %d: the prompt is %d ids (text %d), first %d (bos %d), last %d (eos %d)", flags[i].key, flags[i].value, n,
              n_plain, ids[0], target.tokenizer.bos_id, ids[n - 1], target.tokenizer.eos_id);
        target_free(&target);
    }
    TinyModelSpec wide = {264, 1, 66, 1, 32, 300, 64, 1, TYPE_F32, 10000.0f, 5};   // 66 query heads per key/value head
    check(tiny_model_write(path, &wide, &err) == 0, "write: %s", err.message);
    int status = target_load(&target, path, &backend_cpu_fast, 32, 4, &err);
    check(status != 0 && strstr(err.message, "66 query heads per key/value head"), "a group of 66 heads must be refused "
          "at load (%s)", status == 0 ? "loaded" : err.message);
    if (status == 0) { target_free(&target); }
}

// A tensor the model does not read is refused; rope_freqs.weight (Llama 3.1's frequency scaling) by what it
// asks for, so that a user learns why the file does not load rather than that it has a stray tensor.
static void test_rope_freqs_refused(void) {
    Error err;
    TinyModelSpec spec = {32, 1, 4, 2, 32, 300, 64, 1, TYPE_F32, 10000.0f, 5};
    const char* clean = temp_path("rope_freqs_clean.gguf");
    const char* names[2] = {"rope_freqs.weight", "blk.7.attn_q.weight"};
    const char* expected[2] = {"tensor 'rope_freqs.weight' asks for RoPE frequency scaling",
                               "tensor 'blk.7.attn_q.weight' is not part of a llama model with llama.block_count = 1"};
    check(tiny_model_write(clean, &spec, &err) == 0, "write: %s", err.message);
    for (int i = 0; i < 2; i++) {
        const char* path = temp_path(i == 0 ? "rope_freqs.gguf" : "stray.gguf");
        GGUFFile file;
        if (gguf_open(&file, clean, &err) != 0) { check(0, "open: %s", err.message); return; }
        GGUFWriter* writer = gguf_writer_new();
        check(gguf_writer_copy_values(writer, &file, NULL, &err) == 0, "copy: %s", err.message);
        writer_copy_tensors(writer, &file);
        float values[4] = {1.0f, 1.0f, 1.0f, 1.0f};   // (head size 8: 4 frequencies)
        gguf_writer_add_tensor(writer, names[i], TYPE_F32, 1, (int64_t[]){4}, values);
        check(gguf_writer_save(writer, path, &err) == 0, "save: %s", err.message);
        gguf_writer_free(writer);
        gguf_close(&file);
        Target target;
        int status = target_load(&target, path, &backend_cpu_ref, 32, 4, &err);
        check(status != 0 && strstr(err.message, expected[i]) != NULL, "a model with %s must be refused naming it (%s)", names[i],
              status == 0 ? "loaded" : err.message);
        if (status == 0) { target_free(&target); }
    }
}

// An embedding with rows past the tokenizer's list (padded vocabularies: Qwen's 151,936 rows for 151,665
// tokens): the model may sample such an id, and printing it must not read past the tokenizer's arrays
// (the ASan build of this test is the check: print_token_text read token_types[id] unguarded).
static void test_tokenizer_shorter_than_embedding(void) {
    Error err;
    TinyModelSpec spec = {32, 1, 4, 2, 32, 320, 64, 1, TYPE_F32, 10000.0f, 5};
    const char* path = temp_path("padded.gguf");
    const char* skip[] = {"tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                          "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.add_bos_token", NULL};
    MetadataValue tokenizer = {NULL, VALUE_TOKENIZER, 300.0f, NULL};   // 300 tokens over 320 embedding rows
    check(write_variant(temp_path("padded_clean.gguf"), path, &spec, skip, tokenizer, &err) == 0, "write: %s", err.message);
    Target target;
    if (target_load(&target, path, &backend_cpu_ref, 32, 4, &err) != 0) { check(0, "load: %s", err.message); return; }
    check(target.tokenizer.vocab_size == 300 && target.config.vocab_size == 320, "tokenizer %d tokens, embedding %d rows",
          target.tokenizer.vocab_size, target.config.vocab_size);
    fflush(stdout);
    for (int id = 298; id < 320; id++) { print_token_text(&target.tokenizer, id); }   // 300..319: no text, no read
    printf("\n");
    target_free(&target);
}

// A file whose header describes fewer layers than it holds: the model would run on the first layers and
// answer; the loader refuses a tensor it does not read.
static void test_unused_tensors(void) {
    Error err;
    TinyModelSpec spec = {32, 2, 4, 2, 32, 300, 64, 1, TYPE_F32, 10000.0f, 5};
    const char* clean = temp_path("two_layers.gguf"), *path = temp_path("one_layer_header.gguf");
    const char* skip[] = {"llama.block_count", NULL};
    MetadataValue one_layer = {"llama.block_count", VALUE_UINT32, 1.0f, NULL};
    check(write_variant(clean, path, &spec, skip, one_layer, &err) == 0, "write: %s", err.message);
    Target target;
    check(target_load(&target, clean, &backend_cpu_ref, 32, 4, &err) == 0, "the two-layer file loads: %s", err.message);
    target_free(&target);
    int status = target_load(&target, path, &backend_cpu_ref, 32, 4, &err);
    check(status != 0 && strstr(err.message, "tensor 'blk.1.") && strstr(err.message, "llama.block_count = 1"),
          "a tensor past the header's block count must be refused (%s)", status == 0 ? "loaded" : err.message);
    if (status == 0) { target_free(&target); }
}

// Weights the tables cannot run refused at load, naming what is wrong: a feed-forward width of 1 (its down
// projection, one column wide, would pass for a vector: the draft then crashed on a missing LM head) and
// integer tensors as weights (the fast table read them as Q4 blocks: NaN logits, exit 0).
static void test_weight_shapes(void) {
    Error err;
    Target target;
    const char* path = temp_path("shapes.gguf");
    TinyModelSpec narrow = {32, 1, 4, 2, 1, 300, 64, 1, TYPE_F32, 10000.0f, 5};
    check(tiny_model_write(path, &narrow, &err) == 0, "write: %s", err.message);
    int status = target_load(&target, path, &backend_cpu_fast, 32, 4, &err);
    check(status != 0 && strstr(err.message, "llama.feed_forward_length") && strstr(err.message, "[2,"),
          "a feed-forward width of 1 must be refused (%s)", status == 0 ? "loaded" : err.message);
    if (status == 0) { target_free(&target); }
    for (int type = TYPE_I32; type <= TYPE_I64; type++) {
        TinyModelSpec integer = {32, 1, 4, 2, 32, 300, 64, 1, type, 10000.0f, 5};
        check(tiny_model_write(path, &integer, &err) == 0, "write: %s", err.message);
        status = target_load(&target, path, &backend_cpu_fast, 32, 4, &err);
        check(status != 0 && strstr(err.message, "integer type") && strstr(err.message, tensor_type_name(type)),
              "%s weights must be refused (%s)", tensor_type_name(type), status == 0 ? "loaded" : err.message);
        if (status == 0) { target_free(&target); }
    }
}

// Weights that are not finite refused at load, naming the tensor and the element: a NaN or an infinity in a
// matrix (any stored type: the value itself, or a quantised block's scale) or a norm made every logit NaN,
// which greedy decoding answered as token 0 (exit 0, an empty or wrong answer).
static int patch_tensor(const char* path, const char* tensor, size_t byte_offset, const void* bytes, size_t n) {
    GGUFFile file;
    Error err;
    if (gguf_open(&file, path, &err) != 0) { return -1; }
    const GGUFTensor* t = gguf_find_tensor(&file, tensor);
    long at = t ? (long)((const uint8_t*)t->data - file.bytes) + (long)byte_offset : -1;
    gguf_close(&file);
    FILE* f = at >= 0 ? fopen(path, "r+b") : NULL;
    if (f == NULL) { return -1; }
    int ok = fseek(f, at, SEEK_SET) == 0 && fwrite(bytes, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static void test_nonfinite_weights(void) {
    const int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
    const char* path = temp_path("nonfinite.gguf");
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        int type = types[i];
        Error err;
        Target target;
        TinyModelSpec spec = {32, 1, 4, 2, 32, 300, 64, 1, type, 10000.0f, 5};
        check(tiny_model_write(path, &spec, &err) == 0, "write: %s", err.message);
        int status = target_load(&target, path, &backend_cpu_ref, 32, 4, &err);   // the control: it loads as written
        check(status == 0, "%s: the file as written loads (%s)", tensor_type_name(type), status == 0 ? "" : err.message);
        if (status == 0) { target_free(&target); }
        // the second block's first value (or its scale) of a matrix: an infinity in F16 / BF16 / a scale, NaN in F32
        uint32_t f32_nan = 0x7FC00000u;
        uint16_t inf16 = type == TYPE_BF16 ? 0x7F80u : 0x7C00u;
        size_t second = type == TYPE_F32 ? 32 * 4 : type == TYPE_F16 || type == TYPE_BF16 ? 32 * 2 : tensor_type_block_bytes(type);
        check(patch_tensor(path, "blk.0.ffn_up.weight", second, type == TYPE_F32 ? (const void*)&f32_nan : (const void*)&inf16,
                           type == TYPE_F32 ? 4 : 2) == 0, "%s: patch the matrix", tensor_type_name(type));
        status = target_load(&target, path, &backend_cpu_ref, 32, 4, &err);
        check(status != 0 && strstr(err.message, "'blk.0.ffn_up.weight'") && strstr(err.message, "not finite") &&
              strstr(err.message, "element 32"), "%s: a matrix with a value that is not finite must be refused, naming "
              "it and element 32 (%s)", tensor_type_name(type), status == 0 ? "loaded" : err.message);
        if (status == 0) { target_free(&target); }
    }
    // a norm (fp32 in every file), NaN at its fourth element
    Error err;
    Target target;
    TinyModelSpec spec = {32, 1, 4, 2, 32, 300, 64, 1, TYPE_Q8_0, 10000.0f, 5};
    check(tiny_model_write(path, &spec, &err) == 0, "write: %s", err.message);
    float nan_value = NAN;
    check(patch_tensor(path, "output_norm.weight", 3 * sizeof(float), &nan_value, sizeof(float)) == 0, "patch the norm");
    int status = target_load(&target, path, &backend_cpu_fast, 32, 4, &err);
    check(status != 0 && strstr(err.message, "'output_norm.weight'") && strstr(err.message, "element 3;"),
          "a norm holding NaN must be refused, naming it and element 3 (%s)", status == 0 ? "loaded" : err.message);
    if (status == 0) { target_free(&target); }
}

// A draft's weights likewise, in each format a draft is read from (ours, llama.cpp's eagle3 GGUF, a SpecForge
// directory): a NaN in fc made every draft logit NaN, and the trainer rejected every update, so the draft
// never recovered and nothing was said.
static void test_nonfinite_draft(void) {
    const char* model = temp_path("nonfinite_target.gguf");
    Error err;
    TinyModelSpec spec = {32, 4, 4, 2, 32, 300, 64, 1, TYPE_F32, 10000.0f, 5};
    check(tiny_model_write(model, &spec, &err) == 0, "write: %s", err.message);
    Target target;
    if (target_load(&target, model, &backend_cpu_ref, 32, 4, &err) != 0) { check(0, "load the target: %s", err.message); return; }
    Draft draft;
    draft_init_random(&draft, &target, 300, NULL, 3);
    const char* ours = temp_path("nonfinite_draft.gguf");
    const char* llama = temp_path("nonfinite_draft_llama.gguf");
    const char* specforge = temp_path("nonfinite_draft_specforge");
    for (int poisoned = 0; poisoned < 2; poisoned++) {   // the control first: the same files, all finite, load
        if (poisoned) { draft.weights.fc[2 * 3 * 32 + 5] = NAN; }   // row 2, column 5 of fc (32, 96)
        check(draft_save(&draft, ours, &err) == 0, "save: %s", err.message);
        check(draft_export_llama_cpp(&draft, &target, llama, TYPE_F32, &err) == 0, "export llama.cpp: %s", err.message);
        check(draft_export_specforge(&draft, &target, specforge, TYPE_F32, &err) == 0, "export SpecForge: %s", err.message);
        const char* paths[3] = {ours, llama, specforge};
        for (int f = 0; f < 3; f++) {
            Draft loaded;
            int status = draft_load(&loaded, paths[f], &target, &err);
            if (!poisoned) {
                check(status == 0, "%s: the finite draft loads (%s)", paths[f], status == 0 ? "" : err.message);
            } else {
                check(status != 0 && strstr(err.message, "'draft.fc.weight'") && strstr(err.message, "NaN") &&
                      strstr(err.message, "row 2, column 5"), "%s: a draft holding NaN must be refused, naming fc and "
                      "row 2, column 5 (%s)", paths[f], status == 0 ? "loaded" : err.message);
            }
            if (status == 0) { draft_free(&loaded); }
        }
    }
    draft_free(&draft);
    target_free(&target);
}

// convert rewrites general.file_type for the matrices' new type (llama.cpp's numbering), never copies the
// old one: a Q4_1 file converted to F32 claimed to be Q4_1.
static void test_convert_file_type(void) {
    Error err;
    const char* q41 = temp_path("convert_q41.gguf"), *f32 = temp_path("convert_f32.gguf");
    const char* types[] = {"q4_1", "f32"};
    const char* outputs[] = {q41, f32};
    const char* inputs[] = {NULL, q41};
    int64_t expected[] = {3, 0};   // LLAMA_FTYPE_MOSTLY_Q4_1, LLAMA_FTYPE_ALL_F32
    TinyModelSpec spec = {32, 1, 4, 2, 32, 300, 64, 1, TYPE_F32, 10000.0f, 5};
    const char* source = temp_path("convert_source.gguf");
    check(tiny_model_write(source, &spec, &err) == 0, "write: %s", err.message);
    for (int i = 0; i < 2; i++) {
        char* argv[] = {"aurora", "convert", "-m", (char*)(inputs[i] ? inputs[i] : source), "-o", (char*)outputs[i],
                        "--type", (char*)types[i]};
        check(aurora_main(8, argv) == 0, "convert --type %s", types[i]);
        GGUFFile file;
        int64_t value = -1;
        if (gguf_open(&file, outputs[i], &err) != 0) { check(0, "open: %s", err.message); continue; }
        check(gguf_get_int(&file, "general.file_type", &value, &err) == 0 && value == expected[i],
              "convert --type %s: general.file_type %lld, expected %lld", types[i], (long long)value, (long long)expected[i]);
        gguf_close(&file);
    }
}

// convert keeps integer tensors (llama.cpp's eagle3 d2t is I64) in their type: they went to F32 when 1-D,
// and were quantised when 2-D
static void test_convert_integer_tensors(void) {
    Error err;
    const char* source = temp_path("convert_ints.gguf"), *converted = temp_path("convert_ints_q8.gguf");
    float matrix[64 * 2], ids[32];
    for (int i = 0; i < 64 * 2; i++) { matrix[i] = 0.01f * (float)(i % 17) - 0.05f; }
    for (int i = 0; i < 32; i++) { ids[i] = (float)(i * 1000003 % 16777216); }
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_add_tensor(writer, "weights", TYPE_F32, 2, (int64_t[]){64, 2}, matrix);
    gguf_writer_add_tensor(writer, "d2t", TYPE_I64, 1, (int64_t[]){32}, ids);
    gguf_writer_add_tensor(writer, "table", TYPE_I32, 2, (int64_t[]){16, 2}, ids);
    check(gguf_writer_save(writer, source, &err) == 0, "write: %s", err.message);
    gguf_writer_free(writer);
    char* argv[] = {"aurora", "convert", "-m", (char*)source, "-o", (char*)converted, "--type", "q8_0"};
    check(aurora_main(8, argv) == 0, "convert a file with integer tensors");
    GGUFFile file;
    if (gguf_open(&file, converted, &err) != 0) { check(0, "open: %s", err.message); return; }
    const char* names[] = {"weights", "d2t", "table"};
    int types[] = {TYPE_Q8_0, TYPE_I64, TYPE_I32};
    for (int i = 0; i < 3; i++) {
        const GGUFTensor* t = gguf_find_tensor(&file, names[i]);
        check(t != NULL && t->type == types[i], "convert --type q8_0: '%s' is %s, expected %s", names[i],
              t ? tensor_type_name(t->type) : "missing", tensor_type_name(types[i]));
        if (t == NULL || i == 0) { continue; }
        float values[32];
        dequantize_row(t->type, t->data, values, t->n_elements);
        check(memcmp(values, ids, (size_t)t->n_elements * sizeof(float)) == 0, "'%s': the ids are unchanged", names[i]);
    }
    gguf_close(&file);
}

int main(void) {
    snprintf(temp_directory, sizeof(temp_directory), "/tmp/aurora_test_hardening_%d", (int)getpid());
    Error err;
    if (make_directories(temp_directory, &err) != 0) { fprintf(stderr, "%s\n", err.message); return 1; }
    test_regular_files_only();
    test_atomic_outputs();
    test_config_ranges();
    test_model_metadata();
    test_rope_freqs_refused();
    test_tokenizer_shorter_than_embedding();
    test_unused_tensors();
    test_weight_shapes();
    test_nonfinite_weights();
    test_nonfinite_draft();
    test_convert_file_type();
    test_convert_integer_tensors();
    if (remove_tree(temp_directory) != 0) { fprintf(stderr, "warning: could not remove %s\n", temp_directory); }
    return test_summary();
}
