/*
generate.c: the generation loops. Plain autoregressive decoding (one target step per token), and
speculative decoding (draft a tree, verify it in one target pass, accept, compact the caches). They run
on whatever backend the target lives on and read only host memory (target->host, draft->host).
*/
#include "aurora.h"

// Plain autoregressive generation: prefill the prompt, then one decode step per new token, until
// max_new tokens, an end-of-generation token, or a full cache. out_tokens: (max_new). Returns the count.
// Both generators take a prompt of 1 to cache_capacity tokens: callers refuse others first (an empty prompt
// has no logits to sample the first token from; a longer one does not fit), so reaching here is a program bug.
static void generate_check_prompt(const Target* target, int n_prompt) {
    if (n_prompt < 1 || n_prompt > target->cache_capacity) {
        fprintf(stderr, "error: internal: a prompt of %d tokens; expected 1 to %d (the cache's slots)\n", n_prompt,
                target->cache_capacity);
        exit(EXIT_FAILURE);
    }
}

int generate_plain(Target* target, const int* prompt, int n_prompt, int max_new, SamplerSettings settings,
                   uint64_t seed, int* out_tokens, GenerateStats* stats, TokenCallback on_token, void* context) {
    generate_check_prompt(target, n_prompt);
    int V = target->config.vocab_size;
    float* probs = mallocCheck((size_t)V * sizeof(float));
    ProbIndex* scratch = mallocCheck((size_t)V * sizeof(ProbIndex));
    uint64_t rng = random_seed_state(seed);
    memset(stats, 0, sizeof(*stats));
    stats->n_prompt = n_prompt;

    double start = now_seconds();
    target_prefill(target, prompt, n_prompt, 0, NULL, NULL);
    stats->prefill_seconds = now_seconds() - start;

    start = now_seconds();
    int n_generated = 0;
    int position = n_prompt;
    while (n_generated < max_new) {
        int token = sample_token(target->host.logits, V, settings, random_f64(&rng), probs, scratch);
        out_tokens[n_generated++] = token;
        if (on_token) { on_token(context, token); }
        if (target_is_end(target, token)) { stats->stopped_at_eos = 1; break; }
        if (n_generated == max_new || position >= target->cache_capacity) { break; }
        target_forward(target, &token, &position, NULL, 1, position, 0);
        position++;
    }
    stats->decode_seconds = now_seconds() - start;
    stats->n_generated = n_generated;
    free(probs);
    free(scratch);
    return n_generated;
}


// ----------------------------------------------------------------------------
// speculative generation

static void sequence_init(Sequence* sequence, int capacity, int C) {
    sequence->capacity = capacity;
    sequence->n_tokens = 0;
    sequence->n_committed = 0;
    sequence->tokens = mallocCheck((size_t)capacity * sizeof(int));
    sequence->features = mallocCheck((size_t)capacity * 3 * C * sizeof(float));
    sequence->hidden = mallocCheck((size_t)capacity * C * sizeof(float));
}

static void sequence_free(Sequence* sequence) {
    free(sequence->tokens);
    free(sequence->features);
    free(sequence->hidden);
    memset(sequence, 0, sizeof(*sequence));
}

// Speculative generation: the same contract as generate_plain (same tokens for greedy; the same
// distribution when sampling), faster when the draft source guesses well. Per step: the source drafts a
// tree from the last token, the target verifies every node in one pass, acceptance keeps the longest
// agreeing path plus a bonus token, the target cache keeps only that path, and the source catches up.
// record: when not NULL, receives what the trainer needs (every verify pass's rejected nodes, then the
// finished sequence).
int generate_speculative(Target* target, DraftSource* source, const int* prompt, int n_prompt, int max_new,
                         SamplerSettings settings, uint64_t seed, int* out_tokens, SpecStats* stats,
                         TokenCallback on_token, void* context, Record* record) {
    generate_check_prompt(target, n_prompt);
    TargetConfig* c = &target->config;
    int V = c->vocab_size, C = c->dim, S = target->cache_capacity;
    int N_max = source->limit.nodes;
    float* p_target = mallocCheck((size_t)N_max * V * sizeof(float)); // (N, V) target distributions (sampling)
    float* residual = mallocCheck((size_t)V * sizeof(float));
    ProbIndex* scratch = mallocCheck((size_t)V * sizeof(ProbIndex));
    uint8_t* mask = mallocCheck((size_t)N_max * (S + N_max));
    double uniforms[TREE_MAX_NODES];
    uint64_t rng = random_seed_state(seed);
    memset(stats, 0, sizeof(*stats));
    stats->n_prompt = n_prompt;
    Error fit;
    if (tree_shape_fits(source->limit, target, &fit) != 0) {   // callers check it first: reaching here is a program bug
        fprintf(stderr, "error: internal: %s\n", fit.message);
        exit(EXIT_FAILURE);
    }
    draft_source_begin_request(source, n_prompt);
    double start_time = now_seconds();

    // prefill: the prompt's features go to the sequence, the first token is sampled as in plain decoding
    Sequence sequence;
    sequence_init(&sequence, S + 1, C);
    memcpy(sequence.tokens, prompt, (size_t)n_prompt * sizeof(int));
    target_prefill(target, prompt, n_prompt, 0, sequence.features, sequence.hidden);
    sequence.n_committed = n_prompt;
    // (max_new 0: nothing is emitted, as in generate_plain; the first coin is drawn all the same)
    int first = sample_token(target->host.logits, V, settings, random_f64(&rng), p_target, scratch);
    int n_generated = 0;
    sequence.n_tokens = n_prompt;
    if (max_new > 0) {
        sequence.tokens[n_prompt] = first;
        sequence.n_tokens = n_prompt + 1;
        out_tokens[n_generated++] = first;
        if (on_token) { on_token(context, first); }
        stats->stopped_at_eos = target_is_end(target, first);
    }
    stats->prefill_seconds = now_seconds() - start_time;
    int done = stats->stopped_at_eos || n_generated >= max_new;

    Tree tree;
    Acceptance acceptance;
    while (!done && sequence.n_committed < S) {
        // draft (a tree of the pass's shape; with adaptive shapes possibly the root alone, and then the
        // draft is not even brought up to date: it catches up on the next pass that drafts)
        double t0 = now_seconds();
        draft_source_plan_pass(source, &sequence);
        if (draft_source_may_draft(source)) { draft_source_sync(source, &sequence); }
        else { draft_source_take_weights(source); }
        draft_source_propose(source, target, &sequence, &tree, S - sequence.n_committed);
        double t1 = now_seconds();
        // verify: one pass over every node, each seeing the prefix, its ancestors and itself
        int N = tree.n_nodes, n_prefix = sequence.n_committed;
        tree_attention_mask(mask, &tree, n_prefix);
        target_forward(target, tree.tokens, tree.positions, mask, N, n_prefix, 1);
        // accept: a host function of the verify pass's logits (and, sampling, the pass's uniforms)
        if (settings.temperature == 0.0f) {
            accept_greedy(&acceptance, &tree, target->host.logits, V);
        } else {
            for (int i = 0; i < N; i++) {
                sampling_distribution(p_target + (size_t)i * V, target->host.logits + (size_t)i * V, V, settings, scratch);
            }
            for (int i = 0; i < N; i++) { uniforms[i] = random_f64(&rng); } // N per pass, whatever the outcome
            accept_sampling(&acceptance, &tree, p_target, uniforms, V, residual);
        }
        double t_verified = now_seconds();
        // commit: the path's keys/values move to consecutive slots; its features join the sequence
        int n_path = acceptance.n_accepted + 1;
        int slots[TREE_MAX_DEPTH + 1];
        for (int i = 0; i < n_path; i++) {
            int node = acceptance.path[i];
            slots[i] = n_prefix + node;
            memcpy(sequence.features + (size_t)(n_prefix + i) * TAP_LAYERS * C, target->host.features + (size_t)node * TAP_LAYERS * C,
                   (size_t)TAP_LAYERS * C * sizeof(float));
            memcpy(sequence.hidden + (size_t)(n_prefix + i) * C, target->host.hidden + (size_t)node * C, (size_t)C * sizeof(float));
        }
        if (record) { record_add_verify_step(record, &tree, &acceptance, target->host.features, target->host.hidden, stats->verify_passes); }
        target_compact(target, slots, n_path, n_prefix);
        sequence.n_committed += n_path;
        double t2 = now_seconds();
        stats->draft_seconds += t1 - t0 - source->pass_swap_seconds;   // (a hot swap's time is its own)
        stats->swap_seconds += source->pass_swap_seconds;
        stats->verify_seconds += t2 - t1;
        // statistics
        stats->verify_passes++;
        stats->emitted += n_path;
        stats->proposed += N - 1;
        stats->accepted += acceptance.n_accepted;
        draft_source_observe_pass(source, &tree, &acceptance, t1 - t0, t_verified - t1, stats);
        for (int d = 1; d <= tree.max_depth; d++) { stats->drafted_at_depth[d]++; }
        for (int d = 1; d <= acceptance.n_accepted; d++) { stats->accepted_at_depth[d]++; }
        // emit the accepted tokens, then the bonus
        for (int i = 1; i <= n_path && !done; i++) {
            int token = i < n_path ? tree.tokens[acceptance.path[i]] : acceptance.bonus;
            sequence.tokens[sequence.n_tokens++] = token;
            out_tokens[n_generated++] = token;
            if (on_token) { on_token(context, token); }
            if (target_is_end(target, token)) { stats->stopped_at_eos = 1; done = 1; }
            if (n_generated >= max_new) { done = 1; }
        }
    }
    draft_source_end_request(source, &sequence, n_prompt);
    stats->n_generated = n_generated;
    stats->total_seconds = now_seconds() - start_time;
    if (record) {
        record_finish(record, sequence.tokens, sequence.n_tokens, sequence.n_committed, n_prompt, sequence.features,
                      sequence.hidden, source->draft_version);
    }
    sequence_free(&sequence);
    free(p_target); free(residual); free(scratch); free(mask);
    return n_generated;
}

// The shapes adaptive speculation chose, as shares of the passes ("none": no drafting; a shape is the tree
// verified, after the nodes its confidence left out), the nodes left out, and the hybrid's share of
// suffix-draft passes: one line.
void print_spec_shapes(const SpecStats* stats, FILE* stream) {
    double passes = stats->verify_passes > 0 ? stats->verify_passes : 1;
    fprintf(stream, "tree shapes (passes):");
    for (int k = 1; k <= 8; k++) {
        for (int d = 0; d <= TREE_MAX_DEPTH; d++) {
            if (stats->passes_by_shape[k][d] == 0) { continue; }
            if (d == 0) { fprintf(stream, " none %.0f%%", 100.0 * stats->passes_by_shape[k][d] / passes); }
            else { fprintf(stream, " K=%d D=%d %.0f%%", k, d, 100.0 * stats->passes_by_shape[k][d] / passes); }
        }
    }
    if (stats->left_out > 0) {
        fprintf(stream, "; left out by confidence: %d drafted nodes (%.2f a pass)", stats->left_out, stats->left_out / passes);
    }
    if (stats->passes_suffix > 0) { fprintf(stream, "; hybrid: suffix draft %.0f%% of passes", 100.0 * stats->passes_suffix / passes); }
    fprintf(stream, "\n");
}

// Adds one request's pass counts and times into a running total (a replay's summary).
void spec_stats_add(SpecStats* total, const SpecStats* stats) {
    total->verify_passes += stats->verify_passes;
    total->emitted += stats->emitted;
    total->proposed += stats->proposed;
    total->accepted += stats->accepted;
    total->passes_suffix += stats->passes_suffix;
    total->left_out += stats->left_out;
    total->prefill_seconds += stats->prefill_seconds;
    total->draft_seconds += stats->draft_seconds;
    total->swap_seconds += stats->swap_seconds;
    total->verify_seconds += stats->verify_seconds;
    total->total_seconds += stats->total_seconds;
    total->n_generated += stats->n_generated;
    for (int d = 0; d <= TREE_MAX_DEPTH; d++) {
        total->accepted_at_depth[d] += stats->accepted_at_depth[d];
        total->drafted_at_depth[d] += stats->drafted_at_depth[d];
        for (int k = 0; k < 9; k++) { total->passes_by_shape[k][d] += stats->passes_by_shape[k][d]; }
    }
}

void print_spec_stats(const SpecStats* stats, FILE* stream) {
    double passes = stats->verify_passes > 0 ? stats->verify_passes : 1;
    fprintf(stream, "speculative: %d verify passes, acceptance length %.3f (%d tokens emitted / %d passes), "
            "accept rate %.3f (%d of %d drafted nodes)\n", stats->verify_passes, stats->emitted / passes,
            stats->emitted, stats->verify_passes, stats->proposed ? (double)stats->accepted / stats->proposed : 0.0,
            stats->accepted, stats->proposed);
    fprintf(stream, "acceptance by depth (passes whose accepted path reached depth d / passes whose tree did):");
    for (int d = 1; d <= TREE_MAX_DEPTH && stats->drafted_at_depth[d] > 0; d++) {
        fprintf(stream, " d%d %.2f", d, (double)stats->accepted_at_depth[d] / stats->drafted_at_depth[d]);
    }
    fprintf(stream, "\n");
    print_spec_shapes(stats, stream);
    double generation = stats->total_seconds - stats->prefill_seconds;
    fprintf(stream, "time: prefill %.3f s, draft %.3f s, verify %.3f s; %d tokens in %.3f s (%.1f tokens/s after prefill)\n",
            stats->prefill_seconds, stats->draft_seconds, stats->verify_seconds, stats->n_generated, generation,
            generation > 0 && stats->n_generated > 1 ? (stats->n_generated - 1) / generation : 0.0);
}
