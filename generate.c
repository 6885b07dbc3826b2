/*
generate.c: the generation loops. Plain autoregressive decoding (one target step per token), and
speculative decoding (draft a tree, verify it in one target pass, accept, compact the caches).
*/
#include "aurora.h"

typedef struct {
    int n_prompt, n_generated;
    double prefill_seconds, decode_seconds;
    int stopped_at_eos;
} GenerateStats;

typedef void (*TokenCallback)(void* context, int token);

// Plain autoregressive generation: prefill the prompt, then one decode step per new token, until
// max_new tokens, the end-of-sequence token, or a full cache. out_tokens: (max_new). Returns the count.
static int generate_plain(Engine* engine, const int* prompt, int n_prompt, int max_new, SamplerSettings settings,
                          uint64_t seed, int* out_tokens, GenerateStats* stats, TokenCallback on_token, void* context) {
    Target* target = engine->target;
    int V = target->config.vocab_size;
    int eos = target->has_tokenizer ? target->tokenizer.eos_id : -1;
    float* probs = mallocCheck((size_t)V * sizeof(float));
    ProbIndex* scratch = mallocCheck((size_t)V * sizeof(ProbIndex));
    uint64_t rng = random_seed_state(seed);
    memset(stats, 0, sizeof(*stats));
    stats->n_prompt = n_prompt;

    double start = now_seconds();
    engine_prefill(engine, prompt, n_prompt, 0);
    stats->prefill_seconds = now_seconds() - start;

    start = now_seconds();
    int n_generated = 0;
    int position = n_prompt;
    while (n_generated < max_new) {
        int token = sample_token(target->act.logits, V, settings, random_f32(&rng), probs, scratch);
        out_tokens[n_generated++] = token;
        if (on_token) { on_token(context, token); }
        if (token == eos) { stats->stopped_at_eos = 1; break; }
        if (n_generated == max_new || position >= target->cache_capacity) { break; }
        engine_forward(engine, &token, &position, NULL, 1, position, 0);
        position++;
    }
    stats->decode_seconds = now_seconds() - start;
    stats->n_generated = n_generated;
    free(probs);
    free(scratch);
    return n_generated;
}

