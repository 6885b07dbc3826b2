/*
fuzz_gguf.c: libFuzzer harness for the GGUF reader and writer. Every input must either open (and then be
readable through every getter and every tensor) or fail with an error; never crash or read out of
bounds. What opens is copied through the writer (as convert does) and must read back with the same keys
and tensors.

Build and run (seeds: /tmp/test_gguf SEED_DIR writes two small valid files):
  clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -I. \
      tests/fuzz_gguf.c -lm -o /tmp/fuzz_gguf
  mkdir -p /tmp/gguf_corpus /tmp/gguf_seeds && /tmp/test_gguf /tmp/gguf_seeds
  /tmp/fuzz_gguf -max_total_time=60 /tmp/gguf_corpus /tmp/gguf_seeds
*/
#define TESTING
#include "../aurora.c"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    GGUFFile gguf;
    Error err;
    if (gguf_open_memory(&gguf, data, size, "fuzz.gguf", &err) != 0) { return 0; }
    // an opened file is trusted by the rest of the program: walk everything it offers
    for (uint64_t i = 0; i < gguf.n_values; i++) {
        const char* key = gguf.values[i].key;
        int64_t integer; double real; int flag; char* text; char** strings; int32_t* ints; uint64_t count;
        gguf_get_int(&gguf, key, &integer, &err);
        gguf_get_float(&gguf, key, &real, &err);
        gguf_get_bool(&gguf, key, &flag, &err);
        if (gguf_get_string(&gguf, key, &text, &err) == 0) { free(text); }
        if (gguf_get_string_array(&gguf, key, &strings, &count, &err) == 0) { free_string_array(strings, count); }
        if (gguf_get_int_array(&gguf, key, &ints, &count, &err) == 0) { free(ints); }
        if (gguf_find(&gguf, key) != &gguf.values[i]) { __builtin_trap(); }   // keys are unique
    }
    for (uint64_t i = 0; i < gguf.n_tensors; i++) {
        const GGUFTensor* tensor = &gguf.tensors[i];
        if (tensor->n_elements > (1 << 20)) { continue; }   // bounded by the input size anyway
        float* values = mallocCheck((size_t)tensor->n_elements * sizeof(float));
        gguf_tensor_to_f32(tensor, values);
        free(values);
    }
    // the writer on what the reader took (convert's path): every value and tensor copied, written in memory,
    // and read back with the same counts. A writer may refuse what it cannot write (a nested array, a misuse it
    // remembers); a file it wrote that its own reader refuses is a bug.
    GGUFWriter* writer = gguf_writer_new();
    if (gguf_writer_copy_values(writer, &gguf, NULL, &err) == 0) {
        for (uint64_t i = 0; i < gguf.n_tensors; i++) {
            gguf_writer_add_tensor_from(writer, gguf.tensors[i].name, gguf.tensors[i].type, &gguf.tensors[i]);
        }
        if (writer->error[0] == '\0') {
            uint8_t* bytes = NULL;
            size_t n = gguf_writer_to_memory(writer, &bytes);
            GGUFFile copy;
            if (gguf_open_memory(&copy, bytes, n, "copy.gguf", &err) != 0) { __builtin_trap(); }
            int has_alignment = gguf_find(&gguf, "general.alignment") != NULL;
            if (copy.n_tensors != gguf.n_tensors || copy.n_values + has_alignment != gguf.n_values +
                (gguf_find(&copy, "general.alignment") != NULL)) { __builtin_trap(); }
            gguf_close(&copy);
            free(bytes);
        }
    }
    gguf_writer_free(writer);
    gguf_close(&gguf);
    return 0;
}
