/*
fuzz_jsonl.c: libFuzzer harness for the traffic reader (JSONL: prompt / text / ShareGPT conversations).
Every input must either parse (and then every request has a non-empty prompt and a bare-word domain,
and both orders work) or fail with an error message; never crash or read out of bounds.

Build and run: make fuzz SECONDS=60 (all harnesses), or
  clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -I. tests/fuzz_jsonl.c -lm -o build/fuzz_jsonl
  build/fuzz_jsonl -max_total_time=60 build/corpus_jsonl traffic
*/
#define TESTING
#include "../aurora.c"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Traffic traffic;
    Error err;
    err.message[0] = '\0';
    if (traffic_parse(&traffic, (const char*)data, size, "fuzz.jsonl", &err) != 0) {
        if (err.message[0] == '\0') { __builtin_trap(); }   // a failure always says why
        return 0;
    }
    if (traffic.n_requests < 1 || traffic.n_domains < 1) { __builtin_trap(); }
    for (int i = 0; i < traffic.n_requests; i++) {
        if (traffic.requests[i].prompt[0] == '\0' || !traffic_domain_is_bare_word(traffic.requests[i].domain)) { __builtin_trap(); }
    }
    traffic_order(&traffic, "mixed", 7);
    traffic_order(&traffic, "ordered", 7);
    if (traffic_select_domain(&traffic, traffic.domains[0], &err) != 0) { __builtin_trap(); }
    traffic_free(&traffic);
    return 0;
}
