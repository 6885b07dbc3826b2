/*
spec_passes.c: our greedy speculative decoding with a chain of draft tokens, pass by pass, for the
llama.cpp comparison (tests/test_interop.py). Prints the prompt's token count (prompt N), then one line
per verify pass:
    pass K START ACCEPTED DRAFTED
where START is the number of tokens known when the pass drafted (prompt + generated), then
    tokens ID ID ...
    text HEX
the generated ids and their text (bytes in hex, control tokens left out). The per-pass counts come from the request's record: a chain pass of D drafted nodes
that accepts a rejects D - a of them, and the recorder keeps every rejected node with its pass index.

usage: spec_passes MODEL DRAFT DEPTH N_TOKENS PROMPT
*/
#define TESTING
#include "../aurora.c"

int main(int argc, char** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: spec_passes MODEL DRAFT DEPTH N_TOKENS PROMPT\n");
        return 2;
    }
    int depth = atoi(argv[3]), n_tokens = atoi(argv[4]);
    if (depth < 1 || depth > TREE_MAX_DEPTH || n_tokens < 1) { fprintf(stderr, "error: bad DEPTH or N_TOKENS\n"); return 2; }
    Error err;
    Target target;
    if (target_load(&target, argv[1], backend_cpu(), 1024, 256, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    int* prompt = mallocCheck(1025 * sizeof(int));
    int n_prompt = tokenizer_encode(&target.tokenizer, argv[5], strlen(argv[5]), 0, prompt, 1024, &err);
    if (n_prompt < 1) { fprintf(stderr, "error: the prompt does not tokenize\n"); return 1; }
    Draft draft;
    if (draft_load(&draft, argv[2], &target, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    DraftSource source;
    TreeShape shape = {1, depth, depth + 1};
    draft_source_init(&source, DRAFT_EAGLE, shape, &draft, &target);
    Record* record = record_new(target.config.dim, 1);
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    SpecStats stats;
    int* out = mallocCheck((size_t)(n_tokens + 1) * sizeof(int));
    int n = generate_speculative(&target, &source, prompt, n_prompt, n_tokens, greedy, 1, out, &stats, NULL, NULL, record);

    // rejected nodes per pass; every pass of a chain drafts `depth` nodes unless the context runs out
    int* rejected = callocCheck((size_t)stats.verify_passes + 1, sizeof(int));
    for (int i = 0; i < record->n_discard; i++) {
        int step = record->discard[i].verify_step;
        if (step >= 0 && step < stats.verify_passes) { rejected[step]++; }
    }
    printf("prompt %d\n", n_prompt);
    int start = n_prompt + 1, accepted_total = 0;   // the first token comes from the prefill
    for (int pass = 0; pass < stats.verify_passes; pass++) {
        int accepted = depth - rejected[pass];
        printf("pass %d %d %d %d\n", pass, start, accepted, depth);
        start += accepted + 1;
        accepted_total += accepted;
    }
    printf("tokens");
    for (int i = 0; i < n; i++) { printf(" %d", out[i]); }
    printf("\ntext ");   // the generated text's bytes in hex, control tokens left out (as generate prints it)
    for (int i = 0; i < n; i++) {
        int length = 0;
        const char* bytes = tokenizer_token_bytes(&target.tokenizer, out[i], &length);
        if (target.tokenizer.token_types[out[i]] == TOKEN_CONTROL) { continue; }
        for (int b = 0; b < length; b++) { printf("%02x", (unsigned char)bytes[b]); }
    }
    printf("\n");
    if (accepted_total != stats.accepted || stats.proposed != depth * stats.verify_passes) {
        fprintf(stderr, "error: per-pass counts (%d accepted) disagree with the statistics (%d of %d)\n", accepted_total,
                stats.accepted, stats.proposed);
        return 1;
    }
    record_free(record);
    draft_source_free(&source);
    draft_free(&draft);
    free(rejected); free(out); free(prompt);
    target_free(&target);
    return 0;
}
