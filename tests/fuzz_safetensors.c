/*
fuzz_safetensors.c: libFuzzer harness for the safetensors reader and the config.json reader of
SpecForge drafts (interop/). Every input must either open (and then every tensor converts) or fail
with an error; never crash or read out of bounds. The first byte picks the reader: even, the input
after it is a model.safetensors; odd, a config.json checked against a small target's config.

Build and run (make fuzz does this; seeds: a tiny model's exported SpecForge draft):
  clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -I. \
      tests/fuzz_safetensors.c -lm -lpthread -o build/fuzz_safetensors
  ./aurora tiny-model -o /tmp/t.gguf --layers 8 && ./aurora draft-init -m /tmp/t.gguf -o /tmp/d.gguf &&
  ./aurora draft-export -m /tmp/t.gguf --draft /tmp/d.gguf --format specforge -o /tmp/d.specforge
  (seed files: byte 0x00 + model.safetensors, byte 0x01 + config.json)
  build/fuzz_safetensors -max_total_time=60 CORPUS_DIR SEED_DIR
*/
#define TESTING
#include "../aurora.c"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) { return 0; }
    Error err;
    if (data[0] % 2 == 0) {
        SafetensorsFile file;
        if (safetensors_open_memory(&file, data + 1, size - 1, "fuzz.safetensors", &err) != 0) { return 0; }
        // an opened file is trusted by the rest of the program: read every tensor it offers
        for (int i = 0; i < file.n_tensors; i++) {
            const SafetensorsTensor* tensor = &file.tensors[i];
            if (tensor->data < file.bytes || tensor->data + tensor->n_bytes > file.bytes + file.size) { __builtin_trap(); }
            if (tensor->n_elements > (1 << 20)) { continue; }   // bounded by the input size anyway
            float* values = mallocCheck((size_t)tensor->n_elements * sizeof(float) + 1);
            safetensors_tensor_to_f32(&file, tensor, values, &err);
            free(values);
            if (safetensors_find(&file, tensor->name) != tensor) { __builtin_trap(); }   // names are unique
        }
        safetensors_close(&file);
    } else {
        // the tiny target of the seeds (8 layers, width 64, vocabulary 320): only its config is read
        Target target;
        memset(&target, 0, sizeof(target));
        TargetConfig* c = &target.config;
        c->dim = 64; c->n_layers = 8; c->vocab_size = 320; c->context_length = 256;
        c->tap_layers[0] = 1; c->tap_layers[1] = 3; c->tap_layers[2] = 4;
        DraftConfig config;
        eagle3_parse_config(&config, (const char*)data + 1, size - 1, "fuzz/config.json", &target, &err);
    }
    return 0;
}
