/*
fuzz_tokenizer.c: libFuzzer harness for the byte-level BPE tokenizer and the prompt path, on the tiny
tokenizer (all 256 byte tokens, merges, control tokens). Any bytes must encode without crashing, with
and without special tokens and the chat template; every id must be in range; and without special tokens
decoding gives back exactly the input bytes (byte-level BPE loses nothing), while the prompt path never
produces a control token outside the template's own.

Build and run: make fuzz SECONDS=60 (all harnesses), or
  clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -I. tests/fuzz_tokenizer.c -lm -o build/fuzz_tokenizer
  build/fuzz_tokenizer -max_total_time=60 build/corpus_tokenizer
*/
#define TESTING
#include "../aurora.c"

static GGUFFile fuzz_gguf;
static Tokenizer fuzz_tokenizer;
static GGUFBuffer fuzz_file;

int LLVMFuzzerInitialize(int* argc, char*** argv) {
    (void)argc; (void)argv;
    GGUFWriter* writer = gguf_writer_new();
    gguf_writer_add_tiny_tokenizer(writer, 400);
    fuzz_file.size = fuzz_file.capacity = gguf_writer_to_memory(writer, &fuzz_file.data);
    gguf_writer_free(writer);
    Error err;
    if (gguf_open_memory(&fuzz_gguf, fuzz_file.data, fuzz_file.size, "tiny", &err) != 0 ||
        tokenizer_load_gguf(&fuzz_tokenizer, &fuzz_gguf, &err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err.message);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size > 4096) { return 0; }
    const Tokenizer* t = &fuzz_tokenizer;
    int max_ids = (int)size + 64;
    int* ids = mallocCheck((size_t)max_ids * sizeof(int));
    Error err;
    for (int special = 0; special <= 1; special++) {
        int n = tokenizer_encode(t, (const char*)data, size, special, ids, max_ids, &err);
        if (n < 0 || n > (int)size) { __builtin_trap(); }   // at most one token per byte
        for (int i = 0; i < n; i++) { if (ids[i] < 0 || ids[i] >= t->vocab_size) { __builtin_trap(); } }
        if (!special) {
            size_t length = 0;
            char* decoded = tokenizer_decode(t, ids, n, &length);
            if (length != size || memcmp(decoded, data, size) != 0) { __builtin_trap(); }
            free(decoded);
        }
    }
    // the prompt path (a NUL-terminated copy): user text never becomes a control token
    char* text = mallocCheck(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    for (int chat = 0; chat <= 1; chat++) {
        int capacity = (int)size + 256;
        int* prompt = mallocCheck((size_t)capacity * sizeof(int));
        int n = prompt_encode(t, text, chat, prompt, capacity, &err);
        int control = 0;
        for (int i = 0; i < n; i++) { control += t->token_types[prompt[i]] == TOKEN_CONTROL; }
        if (n > 0 && control != (chat ? 5 : 0)) { __builtin_trap(); }
        if (n < 0 && strlen(text) > 0 && !chat) { __builtin_trap(); } // only an empty text fails here
        free(prompt);
    }
    free(text);
    free(ids);
    return 0;
}
