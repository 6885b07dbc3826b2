/*
test_speculative.c: speculative decoding is lossless, and its buffers are what they claim to be.

  - tree buffers (ancestor mask, positions, children, root-to-leaf paths) against a plain is-ancestor
    oracle on many random trees; malformed tree descriptions are refused
  - the verify pass: every node's logits equal those of its root-to-node path run one token at a time
  - KV compaction: after any accepted path, the next token's logits equal a fresh prefill's
  - greedy losslessness: speculative output == plain greedy output, token for token, for every draft
    source (EAGLE random draft, self, lookup) and many tree shapes, over many prompts
  - sampling losslessness: a chi-square test that the tokens emitted by speculative sampling follow the
    target's distribution, on a small-vocabulary Markov target; and a negative control showing the test
    catches a plausible bug (acceptance without the residual update)
  - statistics add up
*/
#define TESTING
#include <unistd.h>
#include "../aurora.c"
#include "test_common.h"

static char model_path[256];

// ---- tree buffers against an oracle ------------------------------------------------------------
static int is_ancestor_oracle(const int* parents, int ancestor, int node) {
    for (int j = node; j >= 0; j = parents[j]) { if (j == ancestor) { return 1; } }
    return 0;
}

static void random_tree(Tree* tree, int n_nodes, uint64_t* rng) {
    tree->n_nodes = n_nodes;
    tree->root_position = (int)(random_u32(rng) % 100);
    tree->parents[0] = -1;
    for (int i = 0; i < n_nodes; i++) {
        tree->tokens[i] = (int)(random_u32(rng) % 50);
        if (i > 0) { tree->parents[i] = (int)(random_u32(rng) % (uint32_t)i); }
    }
}

static void test_tree_buffers(void) {
    uint64_t rng = random_seed_state(1);
    int bad = 0;
    for (int trial = 0; trial < 500; trial++) {
        Tree tree;
        int N = 1 + (int)(random_u32(&rng) % 20);
        random_tree(&tree, N, &rng);
        Error err;
        if (tree_derive(&tree, &err) != 0) {
            // deep random chains may exceed TREE_MAX_DEPTH: that must be the only reason
            int depth = 0;
            for (int j = N - 1; j > 0; j = tree.parents[j]) { depth++; }
            bad += strstr(err.message, "depth") == NULL;
            continue;
        }
        for (int i = 0; i < N; i++) {
            int depth = 0;
            for (int j = i; j > 0; j = tree.parents[j]) { depth++; }
            bad += tree.depth[i] != depth || tree.positions[i] != tree.root_position + depth;
            int n_children = 0;
            for (int j = 0; j < N; j++) {
                bad += tree.ancestor[i * N + j] != is_ancestor_oracle(tree.parents, j, i);
                n_children += j > 0 && tree.parents[j] == i;
            }
            bad += tree.n_children[i] != n_children;
            for (int c = 0; c < tree.n_children[i]; c++) { bad += tree.parents[tree.children[i][c]] != i; }
        }
        // paths: one per leaf, root first, each step a parent-child edge, ending at the leaf
        int n_leaves = 0;
        for (int i = 0; i < N; i++) { n_leaves += tree.n_children[i] == 0; }
        bad += tree.n_leaves != n_leaves;
        for (int l = 0; l < tree.n_leaves; l++) {
            bad += tree.paths[l][0] != 0 || tree.paths[l][tree.path_length[l] - 1] != tree.leaves[l];
            for (int k = 1; k < tree.path_length[l]; k++) { bad += tree.parents[tree.paths[l][k]] != tree.paths[l][k - 1]; }
        }
        // the verify mask: all of the prefix, then the ancestor rows
        int n_prefix = (int)(random_u32(&rng) % 5);
        uint8_t mask[20 * (4 + 20)];
        tree_attention_mask(mask, &tree, n_prefix);
        for (int i = 0; i < N; i++)
            for (int p = 0; p < n_prefix + N; p++)
                bad += mask[i * (n_prefix + N) + p] != (p < n_prefix ? 1 : is_ancestor_oracle(tree.parents, p - n_prefix, i));
    }
    check(bad == 0, "tree buffers disagree with the is-ancestor oracle in %d places", bad);

    Tree tree = {0};
    Error err;
    tree.n_nodes = 3; tree.parents[0] = -1; tree.parents[1] = 0; tree.parents[2] = 2;
    check(tree_derive(&tree, &err) != 0 && strstr(err.message, "node 2"), "a node that is its own parent must be refused");
    tree.parents[0] = 0;
    check(tree_derive(&tree, &err) != 0 && strstr(err.message, "root"), "a root with a parent must be refused");
    tree.n_nodes = TREE_MAX_NODES + 1;
    check(tree_derive(&tree, &err) != 0, "too many nodes must be refused");
}

// ---- the verify pass and compaction on a tiny target --------------------------------------------
static void reset_cache(Target* target) {
    size_t n = (size_t)target->config.n_layers * target->cache_capacity * target->config.n_kv_heads * target->config.head_size;
    memset(target->key_cache, 0, n * sizeof(float));
    memset(target->value_cache, 0, n * sizeof(float));
}

static void test_verify_and_compaction(Target* target) {
    int V = target->config.vocab_size;
    uint64_t rng = random_seed_state(5);
    int prefix[6];
    for (int i = 0; i < 6; i++) { prefix[i] = (int)(random_u32(&rng) % (uint32_t)V); }
    float* node_logits = mallocCheck((size_t)TREE_MAX_NODES * V * sizeof(float));
    float* next_logits = mallocCheck((size_t)V * sizeof(float));
    uint8_t* mask = mallocCheck((size_t)TREE_MAX_NODES * (6 + TREE_MAX_NODES));
    for (int trial = 0; trial < 6; trial++) {
        Tree tree;
        random_tree(&tree, 3 + trial * 2, &rng);
        for (int i = 0; i < tree.n_nodes; i++) { tree.tokens[i] = (int)(random_u32(&rng) % (uint32_t)V); }
        tree.root_position = 6;
        Error err;
        tree_derive(&tree, &err);
        reset_cache(target);
        target_prefill(target, prefix, 6, 0, NULL, NULL);
        tree_attention_mask(mask, &tree, 6);
        target_forward(target, tree.tokens, tree.positions, mask, tree.n_nodes, 6, 1);
        memcpy(node_logits, target->host.logits, (size_t)tree.n_nodes * V * sizeof(float));
        // every node's logits vs its root-to-node path run one token at a time after a fresh prefill
        for (int node = 0; node < tree.n_nodes; node++) {
            int path[TREE_MAX_DEPTH + 1], n_path = 0;
            for (int j = node; j >= 0; j = tree.parents[j]) { path[n_path++] = j; }
            reset_cache(target);
            target_prefill(target, prefix, 6, 0, NULL, NULL);
            for (int k = n_path - 1; k >= 0; k--) {
                int position = 6 + (n_path - 1 - k);
                target_forward(target, &tree.tokens[path[k]], &position, NULL, 1, position, 1);
            }
            char what[96];
            snprintf(what, sizeof(what), "verify logits of node %d (tree of %d) vs its path", node, tree.n_nodes);
            check_tensor(what, node_logits + (size_t)node * V, target->host.logits, V, tolerance("layer"));
        }
        // compaction: accept the path to the last leaf, then one more token; compare to a fresh prefill
        int leaf = tree.leaves[tree.n_leaves - 1];
        int path_length = tree.depth[leaf] + 1;
        int slots[TREE_MAX_DEPTH + 1], sequence[6 + TREE_MAX_DEPTH + 2];
        memcpy(sequence, prefix, sizeof(prefix));
        for (int j = leaf; j >= 0; j = tree.parents[j]) {
            slots[tree.depth[j]] = 6 + j;
            sequence[6 + tree.depth[j]] = tree.tokens[j];
        }
        reset_cache(target);
        target_prefill(target, prefix, 6, 0, NULL, NULL);
        target_forward(target, tree.tokens, tree.positions, mask, tree.n_nodes, 6, 1);
        target_compact(target, slots, path_length, 6);
        int next = (int)(random_u32(&rng) % (uint32_t)V), position = 6 + path_length;
        sequence[position] = next;
        target_forward(target, &next, &position, NULL, 1, position, 1);
        memcpy(next_logits, target->host.logits, (size_t)V * sizeof(float));
        reset_cache(target);
        target_prefill(target, sequence, position + 1, 0, NULL, NULL);
        char what[96];
        snprintf(what, sizeof(what), "logits after compacting a path of %d nodes vs a fresh prefill", path_length);
        check_tensor(what, next_logits, target->host.logits, V, tolerance("layer"));
    }
    free(node_logits); free(next_logits); free(mask);
}

// ---- greedy losslessness -----------------------------------------------------------------------

// A chooser's evidence: at every depth and sibling rank, hits (accepted, or left out and hit by its chance)
// never outnumber the times the rank was reached, so no estimate passes 1 (a hybrid's suffix chooser once
// credited left-out ranks past its K, which no pass counted as reached).
static void check_chooser_counts(const SpecAdaptive* a, const char* what) {
    for (int d = 1; d <= TREE_MAX_DEPTH; d++) {
        for (int r = 0; r < ADAPTIVE_MAX_K; r++) {
            if (a->hit[d][r] > a->reached[d][r] + 1e-9) {
                check(0, "%s: depth %d rank %d hit %.3f times but reached %.3f", what, d, r, a->hit[d][r], a->reached[d][r]);
                return;
            }
        }
    }
}

static void test_greedy_lossless(Target* target) {
    int V = target->config.vocab_size;
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    target->tokenizer.eos_id = -1; target->tokenizer.n_end_ids = 0; // random weights: run to max_new
    enum { MAX_NEW = 24, PROMPTS = 6 };
    int plain[MAX_NEW], speculative[MAX_NEW];
    const TreeShape shapes[] = {
        {1, 1, 2}, {1, 3, 4}, {1, 5, 6}, {1, 6, 7}, {2, 1, 3}, {2, 2, 5}, {2, 4, 7}, {2, 6, 13},
        {4, 1, 5}, {4, 2, 9}, {4, 3, 8}, {4, 5, 21}, {4, 6, 25}, {4, 6, 64}, {8, 4, 32},
    };
    int n_shapes = sizeof(shapes) / sizeof(shapes[0]);
    Draft draft;
    draft_init_random(&draft, target, V / 2, NULL, 7);
    enum { N_KINDS = 5 };
    DraftKind kinds[N_KINDS] = {DRAFT_EAGLE, DRAFT_SELF, DRAFT_LOOKUP, DRAFT_SUFFIX, DRAFT_HYBRID};
    const char* names[N_KINDS] = {"eagle (random draft)", "self", "lookup", "suffix", "hybrid"};
    uint64_t rng = random_seed_state(9);
    int mismatches = 0, runs = 0;
    long accepted_self = 0, proposed_self = 0, accepted_lookup = 0, accepted_suffix = 0, left_out = 0;
    for (int p = 0; p < PROMPTS; p++) {
        int prompt[16];
        int n_prompt = 3 + p * 2;
        // half the prompts repeat a pattern, so prompt lookup has something to find
        for (int i = 0; i < n_prompt; i++) { prompt[i] = p % 2 ? (int)(random_u32(&rng) % (uint32_t)V) : 10 + i % 3; }
        GenerateStats plain_stats;
        int n_plain = generate_plain(target, prompt, n_prompt, MAX_NEW, greedy, 0, plain, &plain_stats, NULL, NULL);
        for (int k = 0; k < N_KINDS; k++) {
            for (int s = 0; s <= n_shapes; s++) { // every fixed shape, then adaptive shapes (s == n_shapes)
                int adaptive = s == n_shapes;
                TreeShape shape = adaptive ? (TreeShape){ADAPTIVE_DEFAULT_K, ADAPTIVE_DEFAULT_DEPTH, ADAPTIVE_DEFAULT_NODES} : shapes[s];
                DraftSource source;
                draft_source_init(&source, kinds[k], shape, kinds[k] == DRAFT_EAGLE || kinds[k] == DRAFT_HYBRID ? &draft : NULL,
                                  target);
                draft_source_set_adaptive(&source, adaptive, 1);
                if (kinds[k] == DRAFT_SUFFIX || kinds[k] == DRAFT_HYBRID) { // something served before, to match
                    suffix_index_add(source.suffix_outputs, plain, n_plain);
                }
                SpecStats stats;
                int n = generate_speculative(target, &source, prompt, n_prompt, MAX_NEW, greedy, 0, speculative, &stats, NULL, NULL, NULL);
                runs++;
                if (n != n_plain || memcmp(plain, speculative, sizeof(int) * n) != 0) {
                    mismatches++;
                    fprintf(stderr, "  %s K=%d D=%d N=%d%s prompt %d: speculative output differs from plain greedy\n",
                            names[k], shape.k, shape.depth, shape.nodes, adaptive ? " adaptive" : "", p);
                }
                // the statistics add up: every emitted token but the first came from a verify pass
                check(stats.emitted >= n - 1 && stats.emitted <= n - 1 + source.limit.depth + 1 &&
                      stats.accepted + stats.verify_passes == stats.emitted,
                      "%s: statistics do not add up (emitted %d, passes %d, accepted %d, generated %d)",
                      names[k], stats.emitted, stats.verify_passes, stats.accepted, n);
                if (kinds[k] == DRAFT_SELF && !adaptive && shape.k == 1) {
                    // the target drafting a chain for itself proposes its own argmax at every step: every
                    // pass accepts the whole chain. (A wider tree may prune the argmax path in favour of
                    // a path with a higher cumulative draft probability, so only chains are complete.)
                    accepted_self += stats.accepted;
                    proposed_self += stats.proposed;
                }
                if (kinds[k] == DRAFT_LOOKUP) { accepted_lookup += stats.accepted; }
                if (kinds[k] == DRAFT_EAGLE && adaptive) { left_out += stats.left_out; }
                if (kinds[k] == DRAFT_SUFFIX) { accepted_suffix += stats.accepted; }
                if (adaptive) {
                    check_chooser_counts(&source.adaptive_state, names[k]);
                    if (kinds[k] == DRAFT_HYBRID) { check_chooser_counts(&source.suffix_adaptive_state, "hybrid's suffix chooser"); }
                }
                draft_source_free(&source);
            }
        }
    }
    check(mismatches == 0, "greedy speculative decoding differs from plain greedy in %d of %d runs", mismatches, runs);
    check(accepted_self == proposed_self && proposed_self > 0, "self-drafted chains: %ld of %ld nodes accepted, expected all",
          accepted_self, proposed_self);
    check(accepted_lookup > 0, "prompt lookup never had a draft accepted on repetitive prompts (the partial case)");
    check(accepted_suffix > 0, "the suffix draft, having served the same output before, never had a draft accepted");
    // the random draft's probabilities are low: with adaptive shapes its confidence leaves nodes out, and the
    // outputs above stayed equal
    check(left_out > 0, "adaptive shapes never left a random draft's node out for its confidence");
    printf("adaptive, the random EAGLE draft: %ld drafted nodes left out for their confidence\n", left_out);
    printf("greedy losslessness: %d runs (%d sources x (%d fixed tree shapes + adaptive) x %d prompts), all equal to plain "
           "greedy\n", runs, N_KINDS, n_shapes, PROMPTS);
    draft_free(&draft);
}

// The hybrid probe tests' request: a phrase of 60 tokens, then its first 30 again, so that the suffix draft's
// match proposes tokens[30]; 89 tokens committed (the root, the last, is not in the cache yet), and the
// target's features the EAGLE draft catches up over (any values do here; the caller frees them).
static Sequence hybrid_probe_sequence(const Target* target, int tokens[100]) {
    for (int i = 0; i < 60; i++) { tokens[i] = 20 + (i * 37) % 200; }
    for (int i = 0; i < 30; i++) { tokens[60 + i] = tokens[i]; }
    Sequence sequence;
    memset(&sequence, 0, sizeof(sequence));
    sequence.tokens = tokens;
    sequence.n_tokens = sequence.capacity = 90;
    sequence.n_committed = 89;
    sequence.features = calloc((size_t)100 * TAP_LAYERS * target->config.dim, sizeof(float));
    return sequence;
}

// The hybrid's suffix chooser, once it plans no drafting, must still come due for its probe while the EAGLE
// draft drafts every pass: those passes count as passes without drafting for it (they once did not, and a
// suffix draft that chose none early was never asked again while the EAGLE draft drafted). Through the
// passes as serving runs them: plan, propose, observe.
static void test_hybrid_suffix_probe_due(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, target->config.vocab_size, NULL, 9);
    int tokens[100];
    Sequence sequence = hybrid_probe_sequence(target, tokens);
    DraftSource source;
    draft_source_init(&source, DRAFT_HYBRID, (TreeShape){4, 8, 33}, &draft, target);
    draft_source_set_adaptive(&source, 1, 1);
    source.eagle_accepted = 20.0;   // the EAGLE draft: every node accepted so far; the suffix draft: none
    for (int d = 0; d <= TREE_MAX_DEPTH; d++) {
        for (int r = 0; r < ADAPTIVE_MAX_K; r++) {
            source.adaptive_state.reached[d][r] = source.adaptive_state.hit[d][r] = 1000.0;
            source.suffix_adaptive_state.reached[d][r] = 1000.0;
            source.suffix_adaptive_state.hit[d][r] = 0.0;
        }
    }
    draft_source_begin_request(&source, 89);
    int first_suffix = -1, eagle_passes = 0, suffix_planned_none = 0;
    SpecStats stats;
    memset(&stats, 0, sizeof(stats));
    for (int pass = 0; pass < 2 * ADAPTIVE_PROBE_EVERY && first_suffix < 0; pass++) {
        draft_source_plan_pass(&source, &sequence);
        suffix_planned_none += source.suffix_shape.nodes == 1;
        draft_source_sync(&source, &sequence);
        Tree tree;
        draft_source_propose(&source, target, &sequence, &tree, 64);
        if (source.pass_source == DRAFT_SUFFIX) { first_suffix = pass; break; }
        eagle_passes += source.pass_source == DRAFT_EAGLE;   // (its tree cut to the root by confidence or not)
        // every node of its first branch accepted (the EAGLE draft keeps earning its passes); the sequence stays
        // where it is, which the chooser does not see
        Acceptance acceptance = {0, {0}, tokens[30]};
        for (int node = 0; tree.n_children[node] > 0 && acceptance.n_accepted < TREE_MAX_DEPTH; ) {
            node = tree.children[node][0];
            acceptance.path[++acceptance.n_accepted] = node;
        }
        draft_source_observe_pass(&source, &tree, &acceptance, 1e-4, 1e-3, &stats);
    }
    check(suffix_planned_none >= 1 && eagle_passes == ADAPTIVE_PROBE_EVERY && first_suffix == ADAPTIVE_PROBE_EVERY,
          "hybrid: the suffix chooser planned none (%d passes) and the EAGLE draft drafted %d passes; the suffix "
          "draft's probe came at pass %d, expected after %d EAGLE passes", suffix_planned_none, eagle_passes,
          first_suffix, ADAPTIVE_PROBE_EVERY);
    draft_source_free(&source);
    free(sequence.features);
    draft_free(&draft);
}

// Stops inside an accepted path: max_new from 0 to 3 and an end-of-sequence token the plain output reaches
// early, for every source on a chain and a tree: the same tokens as plain greedy, nothing past the stop.
static void test_stop_conditions(Target* target) {
    int V = target->config.vocab_size;
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    enum { MAX_NEW = 16 };
    int prompt[6] = {10, 11, 12, 10, 11, 12}, plain[MAX_NEW], speculative[MAX_NEW + TREE_MAX_DEPTH + 1];
    Draft draft;
    draft_init_random(&draft, target, V / 2, NULL, 7);
    DraftKind kinds[5] = {DRAFT_EAGLE, DRAFT_SELF, DRAFT_LOOKUP, DRAFT_SUFFIX, DRAFT_HYBRID};
    TreeShape shapes[2] = {{1, 5, 6}, {4, 3, 13}};
    int mismatches = 0, runs = 0;
    for (int eos_case = 0; eos_case < 2; eos_case++) {
        target->tokenizer.eos_id = -1; target->tokenizer.n_end_ids = 0;
        GenerateStats plain_stats;
        if (eos_case) {   // the end-of-sequence token: the plain output's fourth token
            generate_plain(target, prompt, 6, MAX_NEW, greedy, 0, plain, &plain_stats, NULL, NULL);
            target->tokenizer.eos_id = plain[3];
        }
        for (int max_new = eos_case ? MAX_NEW : 0; max_new <= (eos_case ? MAX_NEW : 3); max_new++) {
            int n_plain = generate_plain(target, prompt, 6, max_new, greedy, 0, plain, &plain_stats, NULL, NULL);
            for (int k = 0; k < 5; k++) {
                for (int s = 0; s < 2; s++) {
                    DraftSource source;
                    draft_source_init(&source, kinds[k], shapes[s], kinds[k] == DRAFT_EAGLE || kinds[k] == DRAFT_HYBRID ? &draft : NULL,
                                      target);
                    draft_source_set_adaptive(&source, 0, 1);
                    if (kinds[k] == DRAFT_SUFFIX || kinds[k] == DRAFT_HYBRID) { suffix_index_add(source.suffix_outputs, plain, n_plain); }
                    SpecStats stats;
                    int n = generate_speculative(target, &source, prompt, 6, max_new, greedy, 0, speculative, &stats, NULL, NULL, NULL);
                    runs++;
                    if (n != n_plain || memcmp(plain, speculative, sizeof(int) * (size_t)n) != 0 ||
                        stats.stopped_at_eos != plain_stats.stopped_at_eos) {
                        mismatches++;
                        fprintf(stderr, "  source %d shape %d max_new %d eos %d: %d tokens, plain %d\n", k, s, max_new,
                                target->tokenizer.eos_id, n, n_plain);
                    }
                    draft_source_free(&source);
                }
            }
        }
    }
    target->tokenizer.eos_id = -1; target->tokenizer.n_end_ids = 0;
    check(mismatches == 0, "stops inside an accepted path: %d of %d runs differ from plain greedy", mismatches, runs);
    printf("stop conditions: %d runs (max_new 0-3, an early end-of-sequence token), all equal to plain greedy\n", runs);
    draft_free(&draft);
}

// ---- sampling losslessness ----------------------------------------------------------------------
// A Markov "target" over V tokens: p_target(next | previous) fixed random tables; the "draft" proposes
// the top-K tokens of a different table q. Speculative sampling from x0 must emit (x1, x2) with
// probability p(x1 | x0) p(x2 | x1) exactly.
enum { SV = 6 };
static float markov_p[SV][SV], markov_q[SV][SV];

static void build_markov(uint64_t* rng) {
    for (int a = 0; a < SV; a++) {
        float sum_p = 0, sum_q = 0;
        for (int b = 0; b < SV; b++) {
            markov_p[a][b] = 0.05f + random_f32(rng); sum_p += markov_p[a][b];
            markov_q[a][b] = 0.05f + random_f32(rng); sum_q += markov_q[a][b];
        }
        for (int b = 0; b < SV; b++) { markov_p[a][b] /= sum_p; markov_q[a][b] /= sum_q; }
    }
}

// A depth-2 top-K tree under q from root token `root` (K children, each with K children).
static void markov_tree(Tree* tree, int root, int K) {
    int n = 1;
    tree->tokens[0] = root; tree->parents[0] = -1; tree->root_position = 0;
    int ids[SV];
    float log_probs[SV], logits[SV];
    for (int b = 0; b < SV; b++) { logits[b] = logf(markov_q[root][b]); }
    top_k_log_probs(ids, log_probs, logits, SV, K);
    int first_level[SV];
    for (int j = 0; j < K; j++) { tree->tokens[n] = ids[j]; tree->parents[n] = 0; first_level[j] = n++; }
    for (int j = 0; j < K; j++) {
        for (int b = 0; b < SV; b++) { logits[b] = logf(markov_q[tree->tokens[first_level[j]]][b]); }
        top_k_log_probs(ids, log_probs, logits, SV, K);
        for (int i = 0; i < K; i++) { tree->tokens[n] = ids[i]; tree->parents[n] = first_level[j]; n++; }
    }
    tree->n_nodes = n;
    Error err;
    tree_derive(tree, &err);
}

// The deliberately wrong acceptance of the negative control: tests each child against the target's
// probability without removing rejected tokens (and draws the bonus from the unmodified target).
static void accept_without_residual(Acceptance* out, const Tree* tree, const float* p_target, const double* uniforms, int V) {
    int node = 0;
    out->n_accepted = 0;
    for (;;) {
        int next = -1;
        for (int c = 0; c < tree->n_children[node]; c++) {
            int child = tree->children[node][c];
            if (uniforms[child] < p_target[(size_t)node * V + tree->tokens[child]]) { next = child; break; }
        }
        if (next < 0) { out->bonus = sample_multinomial(p_target + (size_t)node * V, V, uniforms[0]); return; }
        out->path[++out->n_accepted] = next;
        node = next;
    }
}

// Draws (x1, x2) pairs by speculative sampling from x0 and returns the chi-square statistic against
// the exact joint distribution (SV*SV cells, SV*SV - 1 degrees of freedom).
static double sampling_chi_square(int K, int draws, int broken, uint64_t seed) {
    uint64_t rng = random_seed_state(seed);
    long counts[SV][SV] = {{0}};
    float p_target[TREE_MAX_NODES * SV], residual[SV];
    double uniforms[TREE_MAX_NODES];
    int x0 = 2;
    for (int draw = 0; draw < draws; draw++) {
        int emitted[2 + TREE_MAX_DEPTH + 1], n_emitted = 0, last = x0;
        while (n_emitted < 2) {
            Tree tree;
            markov_tree(&tree, last, K);
            for (int i = 0; i < tree.n_nodes; i++) { memcpy(p_target + i * SV, markov_p[tree.tokens[i]], sizeof(float) * SV); }
            for (int i = 0; i < tree.n_nodes; i++) { uniforms[i] = random_f64(&rng); }
            Acceptance acceptance;
            if (broken) { accept_without_residual(&acceptance, &tree, p_target, uniforms, SV); }
            else { accept_sampling(&acceptance, &tree, p_target, uniforms, SV, residual); }
            for (int i = 1; i <= acceptance.n_accepted; i++) { emitted[n_emitted++] = tree.tokens[acceptance.path[i]]; }
            emitted[n_emitted++] = acceptance.bonus;
            last = emitted[n_emitted - 1];
        }
        counts[emitted[0]][emitted[1]]++;
    }
    double chi2 = 0;
    for (int a = 0; a < SV; a++)
        for (int b = 0; b < SV; b++) {
            double expected = (double)draws * markov_p[x0][a] * markov_p[a][b];
            chi2 += (counts[a][b] - expected) * (counts[a][b] - expected) / expected;
        }
    return chi2;
}

static double chi_square_quantile_999(int df) { // Wilson-Hilferty approximation
    double z = 3.090232, h = 2.0 / (9.0 * df);
    return df * pow(1.0 - h + z * sqrt(h), 3.0);
}

static void test_sampling_lossless(void) {
    uint64_t rng = random_seed_state(3);
    build_markov(&rng);
    // 200,000 draws: a 1% absolute error in one cell of probability ~0.03 adds about
    // 200000 * 0.01^2 / 0.03 = 667 to the statistic, far above the 0.999 quantile (~70 for 35 df).
    // False-failure rate of the threshold: 0.1% per check (the seed is fixed, so runs repeat exactly).
    int draws = 200000, df = SV * SV - 1;
    double threshold = chi_square_quantile_999(df);
    for (int K = 1; K <= 3; K++) {
        double chi2 = sampling_chi_square(K, draws, 0, 100 + K);
        printf("sampling losslessness K=%d: chi-square %.1f (threshold %.1f at 0.999, %d df)\n", K, chi2, threshold, df);
        check(chi2 < threshold, "speculative sampling (K=%d) does not follow the target distribution: chi-square %.1f >= %.1f",
              K, chi2, threshold);
    }
    double broken = sampling_chi_square(2, draws, 1, 200);
    printf("negative control (no residual update): chi-square %.1f\n", broken);
    check(broken > threshold, "the chi-square test failed to catch acceptance without the residual update (%.1f)", broken);
}

// ---- sampling's edge cases: the nucleus always holds the most probable token; a sibling that is the
// residual's only token left is accepted whatever rounding left of its ratio ------------------------
static void test_sampling_edges(void) {
    ProbIndex scratch[8];
    float two[2] = {0.6f, 0.4f};   // top_p below 1 / V: the nucleus is the top token alone
    apply_top_p(two, 2, 0.3f, scratch);
    check(two[0] == 1.0f && two[1] == 0.0f, "top-p 0.3 of {0.6, 0.4}: {%g, %g}, expected {1, 0}", two[0], two[1]);
    float flat[4] = {0.25f, 0.25f, 0.25f, 0.25f};   // ties: the lowest id
    apply_top_p(flat, 4, 0.1f, scratch);
    check(flat[0] == 1.0f && flat[1] == 0.0f && flat[2] == 0.0f && flat[3] == 0.0f,
          "top-p 0.1 of a flat distribution over 4: {%g %g %g %g}, expected {1 0 0 0}", flat[0], flat[1], flat[2], flat[3]);
    // two tokens whose fp32 probabilities sum to just under 1 (as a renormalised nucleus can), both drafted
    // as siblings, the first rejected: the second is the residual's only token and must be accepted even
    // at the largest uniform (a running mass started at 1.0 rejected it there and drew the bonus from zeros)
    enum { V4 = 4 };
    float p_target[3 * V4] = {0};
    p_target[0] = 0.500024974f, p_target[1] = 0.499974996f;   // sum 0.99999997
    for (int node = 1; node < 3; node++) { p_target[node * V4 + 2] = 1.0f; }
    Tree tree = {0};
    tree.n_nodes = 3;
    tree.parents[0] = -1, tree.parents[1] = 0, tree.parents[2] = 0;
    tree.tokens[0] = 0, tree.tokens[1] = 0, tree.tokens[2] = 1;
    Error err;
    check(tree_derive(&tree, &err) == 0, "sampling edges: tree: %s", err.message);
    float residual[V4];
    double uniforms[3] = {0.5, 0.99, 9007199254740991.0 / 9007199254740992.0};   // the largest coin
    Acceptance acceptance;
    accept_sampling(&acceptance, &tree, p_target, uniforms, V4, residual);
    check(acceptance.n_accepted == 1 && acceptance.path[1] == 2 && acceptance.bonus == 2,
          "the residual's last token, drafted: accepted %d (path node %d), bonus %d; expected node 2 accepted, bonus 2",
          acceptance.n_accepted, acceptance.path[1], acceptance.bonus);
    printf("sampling edges: top-p keeps the top token; the residual's last token is accepted\n");
}

// ---- sampling end to end on the tiny model: repeatable, and a valid sample -----------------------
static void test_sampling_end_to_end(Target* target) {
    SamplerSettings settings = {.temperature = 0.9f, .top_p = 0.95f};
    int prompt[4] = {5, 6, 7, 8};
    int first[20], second[20];
    Draft draft;
    draft_init_random(&draft, target, target->config.vocab_size, NULL, 3);
    DraftSource source;
    draft_source_init(&source, DRAFT_SELF, (TreeShape){2, 3, 7}, NULL, target);
    SpecStats stats;
    int n1 = generate_speculative(target, &source, prompt, 4, 20, settings, 11, first, &stats, NULL, NULL, NULL);
    int n2 = generate_speculative(target, &source, prompt, 4, 20, settings, 11, second, &stats, NULL, NULL, NULL);
    check(n1 == n2 && memcmp(first, second, sizeof(int) * n1) == 0, "speculative sampling is not repeatable for a seed");
    check(stats.accepted > 0, "self-drafting under sampling never accepted a draft");
    draft_source_free(&source);
    draft_free(&draft);
}

// Speculative sampling end to end through generate_speculative with the new sources (suffix, hybrid, the
// EAGLE draft with adaptive shapes): the second token is drawn by the first verify pass, so given the first
// it must follow the target's own distribution p(. | prompt, first). Each draw's randomized probability
// integral transform u = F(x-) + w p(x) (F the cumulative distribution over token ids, w uniform) is then
// uniform on [0, 1): a chi-square over 10 bins. Negative control: the same transform against a wrong
// distribution (the target at another temperature) must fail.
static double pit_value(const float* p, int token, float w) {
    double below = 0.0;
    for (int v = 0; v < token; v++) { below += p[v]; }
    return below + w * p[token];
}

static void test_sampling_sources(Target* target) {
    int V = target->config.vocab_size;
    // the four sources at temperature 2 (the control: 1.2), then two of them with every filter on (the control:
    // the same temperature, unfiltered): a verify pass must turn each node's logits into the filtered distribution
    SamplerSettings plain = {.temperature = 2.0f, .top_p = 1.0f}, plain_wrong = {.temperature = 1.2f, .top_p = 1.0f};
    SamplerSettings filtered = {.temperature = 2.0f, .top_p = 0.9f, .top_k = 20, .min_p = 0.05f};
    int prompt[8] = {11, 12, 13, 11, 12, 13, 11, 12};
    Draft draft, confident;
    draft_init_random(&draft, target, V, NULL, 5);
    // a draft sure of itself (its LM head 20x the random one's): with adaptive shapes its confidence keeps some
    // nodes and leaves others out, so that trees cut by confidence are verified under sampling
    draft_init_random(&confident, target, V, NULL, 6);
    for (size_t i = 0; i < (size_t)V * target->config.dim; i++) { confident.weights.lm_head[i] *= 20.0f; }
    float* p = mallocCheck((size_t)V * sizeof(float));
    float* q = mallocCheck((size_t)V * sizeof(float));
    ProbIndex* scratch = mallocCheck((size_t)V * sizeof(ProbIndex));
    enum { CASES = 6 };
    DraftKind kinds[CASES] = {DRAFT_SUFFIX, DRAFT_HYBRID, DRAFT_SELF, DRAFT_EAGLE, DRAFT_SUFFIX, DRAFT_SELF};
    const char* names[CASES] = {"suffix", "hybrid", "self (adaptive)", "eagle (adaptive, confidence)",
                                "suffix, top-k 20, top-p 0.9, min-p 0.05", "self (adaptive), top-k 20, top-p 0.9, min-p 0.05"};
    enum { BINS = 10, DRAWS = 1200 };
    double threshold = 27.9; // chi-square, 9 degrees of freedom, 0.999
    uint64_t rng = random_seed_state(77);
    for (int k = 0; k < CASES; k++) {
        SamplerSettings settings = k < 4 ? plain : filtered, wrong = k < 4 ? plain_wrong : plain;
        DraftSource source;
        Draft* eagle = kinds[k] == DRAFT_HYBRID ? &draft : kinds[k] == DRAFT_EAGLE ? &confident : NULL;
        draft_source_init(&source, kinds[k], (TreeShape){2, 3, 7}, eagle, target);
        draft_source_set_adaptive(&source, kinds[k] == DRAFT_SELF || kinds[k] == DRAFT_EAGLE, 1);
        if (source.suffix_outputs) { // a history in which the prompt continues in many ways
            for (int v = 0; v < 60; v++) {
                int text[8] = {11, 12, (v * 7) % V, (v * 13) % V, (v * 29) % V, 13, 11, 12};
                suffix_index_add(source.suffix_outputs, text, 8);
            }
        }
        double counts[BINS] = {0}, counts_wrong[BINS] = {0};
        int drafted = 0, suffix_passes = 0;
        long accepted = 0, left_out = 0;
        for (int i = 0; i < DRAWS; i++) {
            int out[2];
            SpecStats stats;
            if (kinds[k] == DRAFT_EAGLE) {   // a fresh chooser each draw: it drafts, and its confidence decides the nodes
                draft_source_free(&source);
                draft_source_init(&source, kinds[k], (TreeShape){2, 3, 7}, eagle, target);
                draft_source_set_adaptive(&source, 1, 1);
            }
            generate_speculative(target, &source, prompt, 8, 2, settings, 1000 + (uint64_t)i, out, &stats, NULL, NULL, NULL);
            drafted += stats.proposed > 0;
            accepted += stats.accepted;
            suffix_passes += stats.passes_suffix;
            left_out += stats.left_out;
            // the target's distribution of the second token given the first
            int extended[9];
            memcpy(extended, prompt, sizeof(prompt));
            extended[8] = out[0];
            target_prefill(target, extended, 9, 0, NULL, NULL);
            sampling_distribution(p, target->host.logits, V, settings, scratch);
            sampling_distribution(q, target->host.logits, V, wrong, scratch);
            float w = random_f32(&rng);
            int bin = (int)(pit_value(p, out[1], w) * BINS), bin_wrong = (int)(pit_value(q, out[1], w) * BINS);
            counts[bin < BINS ? bin : BINS - 1]++;
            counts_wrong[bin_wrong < BINS ? bin_wrong : BINS - 1]++;
        }
        double chi2 = 0, chi2_wrong = 0, expected = (double)DRAWS / BINS;
        for (int b = 0; b < BINS; b++) {
            chi2 += (counts[b] - expected) * (counts[b] - expected) / expected;
            chi2_wrong += (counts_wrong[b] - expected) * (counts_wrong[b] - expected) / expected;
        }
        printf("sampling end to end, %s: %d draws (%d with a drafted tree, %ld drafted tokens accepted), chi-square %.1f "
               "(threshold %.1f at 0.999); against %s %.1f\n", names[k], DRAWS, drafted, accepted, chi2,
               threshold, k < 4 ? "the wrong temperature" : "no filters", chi2_wrong);
        if (kinds[k] == DRAFT_HYBRID) { printf("  the hybrid drafted %d of %d passes with the suffix draft\n", suffix_passes, DRAWS); }
        if (kinds[k] == DRAFT_EAGLE) {
            printf("  %ld drafted nodes left out for their confidence\n", left_out);
            check(left_out > 0, "%s: no node was left out for its confidence", names[k]);
        }
        check(drafted > DRAWS / 4 && accepted > 0, "%s: too few drafted passes (%d) or none accepted", names[k], drafted);
        check(chi2 < threshold, "%s: speculative sampling does not follow the target: chi-square %.1f", names[k], chi2);
        check(chi2_wrong > threshold, "%s: negative control: the wrong distribution passed (%.1f)", names[k], chi2_wrong);
        draft_source_free(&source);
    }
    free(p); free(q); free(scratch);
    draft_free(&draft);
    draft_free(&confident);
}

// The draft's top k against a brute-force order (larger logit first, ties to the lower id, a NaN below every
// number) on rows with NaNs and infinities; NaN = {1, NaN, 5} at k = 2 once kept 5 out (the NaN sat in the
// list and no logit compared larger than it).
static void test_top_k_non_finite(void) {
    float logits[3] = {1.0f, NAN, 5.0f};
    int ids[4];
    float log_probs[4];
    top_k_log_probs(ids, log_probs, logits, 3, 2);
    check(ids[0] == 2 && ids[1] == 0 && isfinite(log_probs[0]) && isfinite(log_probs[1]),
          "top 2 of {1, NaN, 5}: ids %d %d (expected 2 0), log-probabilities %g %g", ids[0], ids[1], log_probs[0], log_probs[1]);
    float none[3] = {NAN, -INFINITY, NAN};
    top_k_log_probs(ids, log_probs, none, 3, 3);
    check(ids[0] == 0 && ids[1] == 1 && ids[2] == 2 && log_probs[0] == log_probs[2] && isfinite(log_probs[0]),
          "top 3 of {NaN, -inf, NaN}: ids %d %d %d (expected 0 1 2), log-probabilities %g %g %g (expected equal, finite)",
          ids[0], ids[1], ids[2], log_probs[0], log_probs[1], log_probs[2]);
    // +inf (a diverged draft): the softmax's limit, the +inf ids sharing it (not inf - inf, NaN everywhere)
    float overflow[4] = {2.0f, INFINITY, NAN, INFINITY};
    top_k_log_probs(ids, log_probs, overflow, 4, 3);
    check(ids[0] == 1 && ids[1] == 3 && ids[2] == 0 && fabsf(log_probs[0] - logf(0.5f)) < 1e-6f &&
          log_probs[1] == log_probs[0] && log_probs[2] == -INFINITY,
          "top 3 of {2, +inf, NaN, +inf}: ids %d %d %d (expected 1 3 0), log-probabilities %g %g %g (expected log 0.5 twice, "
          "then -inf)", ids[0], ids[1], ids[2], log_probs[0], log_probs[1], log_probs[2]);
    uint64_t rng = 12345;
    int agree = 0, rows = 0;
    for (int row = 0; row < 500; row++) {
        enum { N = 12 };
        float x[N];
        for (int i = 0; i < N; i++) {
            uint32_t r = random_u32(&rng) % 10;
            x[i] = r == 0 ? NAN : r == 1 ? -INFINITY : (float)(random_u32(&rng) % 5);   // ties on purpose
        }
        int k = 1 + row % 4;
        top_k_log_probs(ids, log_probs, x, N, k);
        int expected[N], used[N] = {0};
        for (int j = 0; j < k; j++) {   // brute force: the best unused each time
            int best = -1;
            for (int i = 0; i < N; i++) {
                if (used[i]) { continue; }
                float a = isnan(x[i]) ? -INFINITY : x[i], b = best < 0 ? 0 : (isnan(x[best]) ? -INFINITY : x[best]);
                if (best < 0 || a > b) { best = i; }
            }
            used[best] = 1;
            expected[j] = best;
        }
        int same = 1;
        for (int j = 0; j < k; j++) { same &= ids[j] == expected[j] && !isnan(log_probs[j]); }
        agree += same;
        rows++;
    }
    check(agree == rows, "top k with NaNs and infinities: %d of %d rows in the brute-force order", agree, rows);
}

// Confidence keeps a parent's first ranks: a child is eligible only if its better-ranked siblings and its
// parent are (the calibrated chance of a noisy bin can rank a second child above the first, and the
// chooser's counts take a parent's kept children for its first ranks). Root -> ranks 0, 1, 2 with chances
// 0.2, 0.9, 0.9 and rank 1 -> a child of chance 0.8: at least 0.5 keeps none of them, and all three of the
// root's children are left out with their own ranks.
static void test_eligibility(void) {
    CandidatePool pool;
    pool.n = 0;
    int ids[3] = {10, 11, 12};
    float log_probs[3] = {-0.1f, -0.5f, -0.9f};
    pool_add_children(&pool, -1, ids, log_probs, 3, NULL);
    pool_add_children(&pool, 1, ids, log_probs, 1, NULL);
    float chances[4] = {0.2f, 0.9f, 0.9f, 0.8f};
    for (int i = 0; i < 4; i++) { pool.items[i].chance = chances[i]; }
    Tree tree;
    int node_of_candidate[MAX_CANDIDATES];
    pool_to_tree(&tree, &pool, 3, 7, 5, 0.5f, node_of_candidate);
    LeftOutNode left_out[8];
    int n_left_out = pool_left_out(&pool, node_of_candidate, 0.5f, left_out);
    check(tree.n_nodes == 1, "rank 0 left out for its chance: its siblings and their children must go too (tree of %d nodes)",
          tree.n_nodes);
    check(n_left_out == 3 && left_out[0].rank == 0 && left_out[1].rank == 1 && left_out[2].rank == 2,
          "the root's three children are left out with their ranks (%d left out)", n_left_out);
    pool.items[0].chance = 0.6f;   // rank 0 pays now: ranks 0, 1, 2 and rank 1's child are kept
    pool_to_tree(&tree, &pool, 3, 7, 5, 0.5f, node_of_candidate);
    check(tree.n_nodes == 5, "every candidate eligible: a tree of %d nodes (expected 5)", tree.n_nodes);

    // A suffix tree's candidates come best first over the whole tree, siblings not side by side: root ->
    // A (rank 0), B (rank 1), C (rank 2), and A -> A1 (rank 0), A2 (rank 1), in the order A, A1, B, A2, C.
    // B does not pay for a node, A2 does: C must go with B (its sibling ranked just above is B, not A2).
    pool.n = 0;
    static const struct { int parent, rank; float score, chance; } order[5] = {
        {-1, 0, -0.2f, 0.9f}, {0, 0, -0.9f, 0.8f}, {-1, 1, -1.0f, 0.3f}, {0, 1, -1.1f, 0.7f}, {-1, 2, -1.2f, 0.9f}};
    for (int i = 0; i < 5; i++) {
        Candidate* c = &pool.items[pool.n++];
        c->token = 20 + i; c->parent = order[i].parent; c->rank = order[i].rank; c->score = order[i].score;
        c->chance = order[i].chance; c->slot = -1;
        c->depth = order[i].parent < 0 ? 1 : 2;
    }
    pool_to_tree(&tree, &pool, 3, 7, 8, 0.5f, node_of_candidate);
    check(tree.n_nodes == 4 && node_of_candidate[2] < 0 && node_of_candidate[4] < 0,
          "interleaved siblings: the root's rank 2 goes with its rank 1 (a tree of %d nodes, rank 2 %s; expected 4, left out)",
          tree.n_nodes, node_of_candidate[4] < 0 ? "left out" : "kept");
}

// The suffix draft on a verbatim repeat proposes the whole depth asked for: a 16-deep chain after a phrase
// seen before (a match as long as the index allows once left the continuation 8 levels).
static void test_suffix_depth(Target* target) {
    DraftSource source;
    draft_source_init(&source, DRAFT_SUFFIX, (TreeShape){1, 16, 17}, NULL, target);
    int tokens[100];
    for (int i = 0; i < 60; i++) { tokens[i] = 20 + (i * 37) % 200; }     // a 60-token phrase, no token repeated
    for (int i = 0; i < 30; i++) { tokens[60 + i] = tokens[i]; }          // and its first 30 tokens again
    Sequence sequence;
    memset(&sequence, 0, sizeof(sequence));
    sequence.tokens = tokens;
    sequence.n_tokens = sequence.n_committed = sequence.capacity = 90;
    draft_source_begin_request(&source, 90);
    draft_source_sync(&source, &sequence);
    Tree tree;
    draft_source_propose(&source, target, &sequence, &tree, 64);
    int right = tree.n_nodes == 17 && tree.max_depth == 16;
    for (int i = 1; right && i < tree.n_nodes; i++) { right = tree.tokens[i] == tokens[30 + i - 1]; }
    check(right, "a 16-deep suffix chain on a verbatim repeat: %d nodes, depth %d (expected 17 nodes, depth 16, the "
          "phrase's continuation)", tree.n_nodes, tree.max_depth);
    draft_source_free(&source);
}

// The suffix draft's calibration by its tree's class (index and match length) and its nodes' probabilities.
// This request has seen 5 followed by 6 and by 8 (after a one-token match, 4 nodes best first: 6 and 8 at 0.5,
// then 7 and 9 at 1 given their parents, 2.0 expected at the prior); every output's index has seen "9 10 5"
// followed by 11 12 13 14 (a three-token match, 4.0). Uncalibrated, every output's tree; with that class's
// nodes of probability 1 accepted 1 time in 10 once their parents were, this request's (every output's: 0.1 +
// 0.01 + ... = 0.11). Then, in hindsight, this request's tree as the sequence goes on with 6 9: at depth 1 both
// nodes of probability 0.5 were reached and one hit, at depth 2 the node of probability 1 after 6 reached and
// missed.
static void test_suffix_calibration(Target* target) {
    int outputs[7] = {9, 10, 5, 11, 12, 13, 14};
    int tokens[12] = {5, 6, 7, 5, 8, 9, 10, 5};
    Sequence sequence;
    memset(&sequence, 0, sizeof(sequence));
    sequence.tokens = tokens;
    sequence.capacity = 12;
    int outputs_class = SUFFIX_MATCH_CLASSES + 2, request_class = 0;
    for (int calibrated = 0; calibrated < 2; calibrated++) {
        DraftSource source;
        draft_source_init(&source, DRAFT_SUFFIX, (TreeShape){1, 4, 5}, NULL, target);
        suffix_index_add(source.suffix_outputs, outputs, 7);
        if (calibrated) { source.suffix_reached[outputs_class][SUFFIX_STEP_BINS - 1] = 9.0; }   // (0 + 1) / (9 + 1)
        sequence.n_tokens = sequence.n_committed = 8;
        draft_source_begin_request(&source, 8);
        draft_source_plan_pass(&source, &sequence);
        draft_source_sync(&source, &sequence);
        Tree tree;
        draft_source_propose(&source, target, &sequence, &tree, 64);
        int first = calibrated ? 6 : 11;   // (this request's: 6 and 8 tie, the lower id first)
        float expected = calibrated ? 2.0f : 4.0f;
        check(tree.n_nodes == 5 && tree.tokens[1] == first && fabsf(source.pass_prediction - expected) < 0.01f,
              "suffix calibration (%s): the %s index's chain expected (first token %d, %.2f expected), got %d nodes, "
              "first token %d, %.3f expected", calibrated ? "every output's index calibrated" : "uncalibrated",
              calibrated ? "request's" : "outputs'", first, expected, tree.n_nodes, tree.n_nodes > 1 ? tree.tokens[1] : -1,
              source.pass_prediction);
        if (calibrated) {   // the hindsight tree (the same chain) judged as the sequence goes on
            tokens[8] = 6, tokens[9] = 9;
            sequence.n_tokens = sequence.n_committed = 10;
            draft_source_plan_pass(&source, &sequence);
            double reached_half = source.suffix_reached[request_class][2], hit_half = source.suffix_hit[request_class][2];
            double reached_one = source.suffix_reached[request_class][SUFFIX_STEP_BINS - 1];
            double hit_one = source.suffix_hit[request_class][SUFFIX_STEP_BINS - 1];
            check(reached_half == 2.0 && hit_half == 1.0 && reached_one == 1.0 && hit_one == 0.0,
                  "suffix calibration in hindsight: at depth 1 two nodes of probability 0.5 reached and one hit, at depth "
                  "2 one of probability 1 reached and missed; got %.3f / %.3f and %.3f / %.3f", hit_half, reached_half,
                  hit_one, reached_one);
        }
        draft_source_free(&source);
    }
}

// The suffix tree's nodes pay for themselves as the EAGLE draft's do: every output's index has seen "1 2 3"
// followed by 4 twice and by 5 once; with adaptive shapes a node is kept when its calibrated chance reaches
// the pass's least chance. At 0.5 and the prior (its probability), 4 (0.67) is kept and 5 (0.33, its parent's
// second child) left out; with that class's nodes calibrated to about half their probability, neither.
static void test_suffix_confidence(Target* target) {
    DraftSource source;
    draft_source_init(&source, DRAFT_SUFFIX, (TreeShape){2, 1, 3}, NULL, target);
    int a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5};
    suffix_index_add(source.suffix_outputs, a, 4);
    suffix_index_add(source.suffix_outputs, b, 4);
    suffix_index_add(source.suffix_outputs, a, 4);
    int tokens[4] = {1, 2, 3};
    Sequence sequence;
    memset(&sequence, 0, sizeof(sequence));
    sequence.tokens = tokens;
    sequence.n_tokens = sequence.n_committed = 3;
    sequence.capacity = 4;
    draft_source_begin_request(&source, 3);
    draft_source_sync(&source, &sequence);
    int outputs_class = SUFFIX_MATCH_CLASSES + 2;
    for (int calibrated = 0; calibrated < 2; calibrated++) {
        if (calibrated) {   // bins 1 (0.33) and 3 (0.67): hit at half the probability, weighing 99 observations
            source.suffix_reached[outputs_class][1] = source.suffix_reached[outputs_class][3] = 99.0;
            source.suffix_hit[outputs_class][1] = 99.0 / 6, source.suffix_hit[outputs_class][3] = 99.0 / 3;
        }
        int c;
        source.pool->n = 0;
        float expected = propose_suffix(&source, &sequence, source.pool, source.limit, &c);
        int n_kept;
        float kept = suffix_kept_expectation(source.pool, 0.5f, &n_kept);
        Tree tree;
        int node_of_candidate[MAX_CANDIDATES];
        pool_to_tree(&tree, source.pool, 3, 2, 3, 0.5f, node_of_candidate);
        LeftOutNode left_out[4];
        int n_left_out = pool_left_out(source.pool, node_of_candidate, 0.5f, left_out);
        if (!calibrated) {
            check(c == outputs_class && source.pool->n == 2 && fabsf(expected - 1.0f) < 1e-5f && n_kept == 1 &&
                  fabsf(kept - 2.0f / 3) < 1e-5f && tree.n_nodes == 2 && tree.tokens[1] == 4 && n_left_out == 1 &&
                  left_out[0].rank == 1,
                  "suffix confidence: 4 (0.67) kept, 5 (0.33, rank 1) left out at 0.5; got class %d, %d candidates, "
                  "expected %.3f, %d kept (%.3f), %d nodes, %d left out (rank %d)", c, source.pool->n, expected, n_kept,
                  kept, tree.n_nodes, n_left_out, n_left_out ? left_out[0].rank : -1);
        } else {
            check(fabsf(expected - 0.5f) < 0.01f && n_kept == 0 && kept == 0.0f && tree.n_nodes == 1 && n_left_out == 2,
                  "suffix confidence: calibrated to half, 0.5 expected and neither node pays at 0.5 (%.3f expected, %d "
                  "kept, %d nodes, %d left out)", expected, n_kept, tree.n_nodes, n_left_out);
        }
    }
    draft_source_free(&source);
}

// The hybrid's suffix draft is probed as any draft is. Its chooser, after ADAPTIVE_PROBE_EVERY passes without
// drafting, asks for a single node; left to the hybrid's comparison, one node's expectation lost to the
// EAGLE draft's average every pass, the probe never ran, and the chooser kept asking for it (training in
// the gaps, the hybrid drafted nothing for the last 56 of 100 requests). Here the EAGLE draft has been
// getting 20 tokens a pass and is expected to go on (every node of its deepest tree accepted): a probe due
// drafts the suffix draft's one node; with none due, the EAGLE draft drafts. Each case checks that the
// comparison alone would not have drafted the suffix tree (what the probe overrides).
static void test_hybrid_suffix_probe(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, target->config.vocab_size, NULL, 9);
    int tokens[100];
    Sequence sequence = hybrid_probe_sequence(target, tokens);
    for (int due = 0; due < 2; due++) {
        DraftSource source;
        draft_source_init(&source, DRAFT_HYBRID, (TreeShape){4, 8, 33}, &draft, target);
        draft_source_set_adaptive(&source, 1, 1);
        source.eagle_accepted = 20.0;
        for (int d = 1; d <= TREE_MAX_DEPTH; d++) {
            for (int r = 0; r < ADAPTIVE_MAX_K; r++) {
                source.adaptive_state.reached[d][r] = source.adaptive_state.hit[d][r] = 1000.0;
            }
        }
        source.suffix_adaptive_state.passes_since_drafted = due ? ADAPTIVE_PROBE_EVERY : 0;
        draft_source_begin_request(&source, 89);
        draft_source_plan_pass(&source, &sequence);
        draft_source_sync(&source, &sequence);
        Tree tree;
        draft_source_propose(&source, target, &sequence, &tree, 64);
        check(source.pass_prediction > 0 && !hybrid_prefers_suffix(&source, source.pass_prediction, 2, 0),
              "hybrid probe (%s): the suffix draft should have a guess (expected %.2f tokens) that the comparison alone "
              "does not draft", due ? "due" : "not due", source.pass_prediction);
        if (due) {
            check(source.pass_source == DRAFT_SUFFIX && tree.n_nodes == 2 && tree.tokens[1] == tokens[30],
                  "hybrid probe due: the suffix draft's one node should be drafted (source %d, %d nodes)",
                  source.pass_source, tree.n_nodes);
        } else {
            check(source.pass_source == DRAFT_EAGLE, "hybrid, no probe due: the EAGLE draft expected (source %d)",
                  source.pass_source);
        }
        draft_source_free(&source);
    }
    free(sequence.features);
    draft_free(&draft);
}

// The EAGLE draft catches up only on a pass that drafts: a pass whose shape is the root alone (adaptive shapes
// chose not to draft) leaves its cache where it was, and the next pass that drafts catches up over every token
// since, in one batch, and proposes the tree a draft caught up at every pass proposes, bit for bit. (Caught
// up at every pass, as serving did from 8128cae to the fifty-first session, a draft kept from drafting still
// ran fc and its layer over every token.)
static void test_eagle_lazy_catch_up(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, target->config.vocab_size, NULL, 5);
    int C = target->config.dim, tokens[40];
    for (int i = 0; i < 40; i++) { tokens[i] = 3 + (i * 29) % 150; }
    Sequence sequence;
    memset(&sequence, 0, sizeof(sequence));
    sequence.tokens = tokens;
    sequence.capacity = 40;
    sequence.features = malloc((size_t)40 * TAP_LAYERS * C * sizeof(float));
    for (size_t i = 0; i < (size_t)40 * TAP_LAYERS * C; i++) { sequence.features[i] = 0.5f * sinf(0.37f * (float)i); }
    TreeShape chain = {2, 3, 7}, root_alone = {1, 1, 1};
    DraftSource lazy, eager;
    draft_source_init(&lazy, DRAFT_EAGLE, chain, &draft, target);
    draft_source_init(&eager, DRAFT_EAGLE, chain, &draft, target);
    int n_prompt = 10;
    draft_source_begin_request(&lazy, n_prompt);
    draft_source_begin_request(&eager, n_prompt);
    Tree lazy_tree, eager_tree;
    int skipped_ok = 1;
    for (int committed = n_prompt; committed <= 30; committed += 4) {   // passes that accept 3 tokens and a bonus
        sequence.n_committed = committed;
        sequence.n_tokens = committed + 1;
        int drafts = committed == n_prompt || committed == 30;   // the lazy source drafts at the first and last
        lazy.shape = drafts ? chain : root_alone;
        eager.shape = chain;
        int before = lazy.n_extended;
        draft_source_sync(&lazy, &sequence);
        draft_source_propose(&lazy, target, &sequence, &lazy_tree, 64);
        draft_source_sync(&eager, &sequence);
        draft_source_propose(&eager, target, &sequence, &eager_tree, 64);
        if (!drafts) { skipped_ok &= lazy.n_extended == before && lazy_tree.n_nodes == 1; }
    }
    check(skipped_ok, "lazy catch-up: a pass drafting the root alone should leave the EAGLE draft's cache as it was");
    int same = lazy.n_extended == 30 && eager.n_extended == 30 && lazy_tree.n_nodes == eager_tree.n_nodes &&
               lazy_tree.n_nodes == 7;
    for (int i = 0; same && i < lazy_tree.n_nodes; i++) {
        same = lazy_tree.tokens[i] == eager_tree.tokens[i] && lazy_tree.scores[i] == eager_tree.scores[i];
    }
    check(same, "lazy catch-up: caught up over 20 tokens at once (%d cached, %d nodes) should propose the tree of a draft "
          "caught up at every pass (%d cached, %d nodes), bit for bit", lazy.n_extended, lazy_tree.n_nodes, eager.n_extended,
          eager_tree.n_nodes);
    check(lazy.pass_catch_up_tokens == 20, "lazy catch-up: the last pass should count the 20 tokens it caught up over (%d)",
          lazy.pass_catch_up_tokens);
    draft_source_free(&lazy);
    draft_source_free(&eager);
    free(sequence.features);
    draft_free(&draft);
}

// The hybrid weighs tokens per second, not tokens: each draft's pass priced in decode steps by its own
// chooser's measurements. Both choosers here measured a decode step at 1 ms and a 6-node verify pass at 1.6;
// the EAGLE draft's drafting step 0.05 ms, the suffix draft's 1 microsecond per depth. By hand, in decode
// steps: the EAGLE chain of 5 (1 + 2.0 tokens) costs 1.6 + 4 steps x 0.05 + its catch-up over one pending
// token (never measured: the prior's 0.05) = 1.85, 1.62 tokens a step; the suffix chain of 5 expecting 1.8
// accepted costs 1.605, 1.74 a step: the suffix tree, though it expects fewer tokens a pass. With the EAGLE
// draft's steps and catch-up free (as at its depth-1 root): 1.875 a step, the EAGLE draft. Where the EAGLE
// draft would draft nothing, the suffix tree is weighed against a plain decode step (1 token a step).
static void test_hybrid_prices(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, target->config.vocab_size, NULL, 9);
    DraftSource source;
    draft_source_init(&source, DRAFT_HYBRID, (TreeShape){1, 5, 6}, &draft, target);
    draft_source_set_adaptive(&source, 1, 0);
    VerifyCosts* costs = source.adaptive_state.costs;   // (the suffix draft's chooser's too)
    costs->seconds[1] = 1e-3;
    costs->seconds[6] = 1.6e-3;
    costs->seconds[2] = 1.1e-3;
    source.adaptive_state.draft_step_seconds = 0.05e-3;
    source.suffix_adaptive_state.draft_step_seconds = 1e-6;
    source.shape = source.eagle_shape = (TreeShape){1, 5, 6};
    source.eagle_accepted = 2.0;
    int pending = 1;
    check(hybrid_prefers_suffix(&source, 1.8f, 6, pending), "hybrid prices: the suffix chain expecting 1.8 tokens (1.74 a "
          "decode step) should win over the EAGLE chain getting 2.0 at its drafting's price (1.62 a step)");
    check(hybrid_prefers_suffix(&source, 2.1f, 6, pending), "hybrid prices: the suffix chain expecting more tokens should win");
    source.adaptive_state.draft_step_seconds = 1e-9;
    pending = 0;
    check(!hybrid_prefers_suffix(&source, 1.8f, 6, pending), "hybrid prices: with the EAGLE draft's drafting free (1.875 tokens "
          "a step) the EAGLE chain should win over the suffix chain (1.74)");
    check(!hybrid_prefers_suffix(&source, 1.05f, 6, pending), "hybrid prices: expecting 1.05 tokens the suffix chain (1.28 a "
          "step) should lose to the EAGLE chain (1.875)");
    // the EAGLE draft's chooser asks for a 1-node probe while its deep chains have been getting 3 tokens: the
    // probe can accept 1 at most (2 a pass, 1.8 a step), so a suffix chain of 2 expecting 1.6 (2.2 a step) wins
    source.eagle_shape = (TreeShape){1, 1, 2};
    source.eagle_accepted = 3.0;
    check(hybrid_prefers_suffix(&source, 1.6f, 3, pending), "hybrid prices: a 1-node EAGLE probe credited with more than "
          "its depth (the draft's average of 3 tokens) beat a suffix chain expecting 1.6");
    source.eagle_shape = (TreeShape){1, 0, 1};   // the EAGLE draft would draft nothing: the alternative is plain
    check(!hybrid_prefers_suffix(&source, 0.5f, 6, pending), "hybrid prices: 1.5 tokens for a 6-node pass (0.94 a step) "
          "should lose to a plain decode step");
    check(hybrid_prefers_suffix(&source, 0.5f, 2, pending), "hybrid prices: 1.5 tokens for a 2-node pass (1.36 a step) "
          "should win over a plain decode step");
    check(!hybrid_prefers_suffix(&source, 0.0f, 2, pending), "hybrid prices: a suffix draft with no guess is never drafted");
    draft_source_free(&source);
    draft_free(&draft);
}

// The hybrid's two choosers price a verify pass alike, whoever drafted the passes that measured it: a slow
// spell's price of the suffix draft's 6-node trees (3 ms against a 1 ms decode step) is forgotten after
// ADAPTIVE_COST_MEMORY passes of the EAGLE draft's 2-node chains (1.1 ms), which price it again from the line
// through the fresh counts (1.5 ms). (With a table each, the suffix draft's stood still while the EAGLE draft
// drafted, and kept the 3 ms; the EAGLE draft's never saw it.)
static void test_hybrid_shared_costs(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, target->config.vocab_size, NULL, 9);
    DraftSource source;
    draft_source_init(&source, DRAFT_HYBRID, (TreeShape){1, 5, 6}, &draft, target);
    draft_source_set_adaptive(&source, 1, 0);
    Tree root, chain2, chain6;
    hand_made_tree(&root, (int[]){-1}, 1);
    hand_made_tree(&chain2, (int[]){-1, 0}, 2);
    hand_made_tree(&chain6, (int[]){-1, 0, 1, 2, 3, 4}, 6);
    Acceptance none = {0, {0}, 7}, one = {1, {0, 1}, 7};
    SpecStats stats;
    memset(&stats, 0, sizeof(stats));
    TreeShape suffix_chain = {1, 5, 6};
    struct { DraftKind source; Tree* tree; double seconds; int times; } passes[] = {
        {DRAFT_NONE, &root, 1e-3, 10}, {DRAFT_SUFFIX, &chain6, 3e-3, 30}, {DRAFT_EAGLE, &chain2, 1.1e-3, ADAPTIVE_COST_MEMORY + 8},
    };
    Sequence sequence;   // (nothing committed: nothing for the EAGLE draft to catch up over)
    memset(&sequence, 0, sizeof(sequence));
    double eagle_saw = 0, suffix_saw = 0;
    for (int p = 0; p < 3; p++) {
        for (int i = 0; i < passes[p].times; i++) {
            draft_source_plan_pass(&source, &sequence);   // (the pass's own state; then its draft and shape by hand)
            int n = passes[p].tree->n_nodes;
            source.pass_source = passes[p].source;
            source.shape = (TreeShape){1, n - 1, n};
            draft_source_observe_pass(&source, passes[p].tree, i % 2 ? &one : &none, 1e-5, passes[p].seconds, &stats);
        }
        if (p == 1) {
            eagle_saw = spec_adaptive_pass_steps(&source.adaptive_state, suffix_chain, 0);
            suffix_saw = spec_adaptive_pass_steps(&source.suffix_adaptive_state, suffix_chain, 0);
        }
    }
    double suffix_price = spec_adaptive_pass_steps(&source.suffix_adaptive_state, suffix_chain, 0);
    check(eagle_saw > 2.5 && suffix_saw > 2.5, "hybrid costs: the suffix draft's passes priced a 6-node pass at 3 decode "
          "steps, the EAGLE draft's chooser at %.2f, the suffix draft's at %.2f", eagle_saw, suffix_saw);
    check(suffix_price > 1.4 && suffix_price < 1.7, "hybrid costs: after %d of the EAGLE draft's passes the suffix draft's "
          "6-node pass should be priced from the line again (1.5 decode steps), not at the slow spell's 3: %.2f",
          ADAPTIVE_COST_MEMORY + 8, suffix_price);
    draft_source_free(&source);
    draft_free(&draft);
}

// A pass's costs as adaptive speculation learns them: a hot swap in the pass is not drafting's cost (it
// comes with a publish), nor is the catch-up (charged per token apart).
static void test_pass_costs(Target* target) {
    DraftSource source;   // (self-drafting: a draft whose acceptance is counted on the passes it verifies)
    draft_source_init(&source, DRAFT_SELF, (TreeShape){1, 4, 5}, NULL, target);
    draft_source_set_adaptive(&source, 1, 0);
    Sequence sequence;
    memset(&sequence, 0, sizeof(sequence));
    draft_source_plan_pass(&source, &sequence);
    source.pass_swap_seconds = 0.016;   // as draft_source_take_weights adds a swap's time
    Tree tree;
    hand_made_tree(&tree, (int[]){-1, 0, 1}, 3);
    Acceptance acceptance = {1, {0, 1}, 5};
    SpecStats stats;
    memset(&stats, 0, sizeof(stats));
    draft_source_observe_pass(&source, &tree, &acceptance, 0.016 + 2 * 0.0003, 0.004, &stats);
    check(fabs(source.adaptive_state.draft_step_seconds - 0.0003) < 1e-12,
          "a pass's hot swap was charged to drafting: %.6f s a step, expected 0.000300", source.adaptive_state.draft_step_seconds);
    check(stats.passes_by_shape[1][2] == 1, "a chain of 2 verified counts as K=1 D=2");
    // the statistics' shape is the tree verified, not the one planned: planned K=1, a root of two children
    // (a suffix tree's, or the hybrid's) is K=2
    draft_source_plan_pass(&source, &sequence);
    hand_made_tree(&tree, (int[]){-1, 0, 0, 1}, 4);
    memset(&stats, 0, sizeof(stats));
    draft_source_observe_pass(&source, &tree, &acceptance, 0.001, 0.004, &stats);
    check(source.shape.k == 1 && stats.passes_by_shape[2][2] == 1 && stats.passes_by_shape[1][2] == 0,
          "a tree of two children at the root and depth 2, planned K=%d, counts as K=2 D=2", source.shape.k);
    draft_source_plan_pass(&source, &sequence);
    check(source.pass_swap_seconds == 0.0, "a new pass starts with no swap time");
    // no cache slots to draft in: the tree is the root alone, and the chooser counts no rank of the shape it
    // planned as missed (it once did, and a full context taught it that drafting never pays)
    int tokens[8] = {5, 6, 7, 5, 6, 7, 5, 6};
    sequence.tokens = tokens;
    sequence.n_tokens = sequence.n_committed = sequence.capacity = 8;
    double reached = source.adaptive_state.reached[1][0] * 0.99;   // one pass's decay
    check(source.shape.nodes > 1, "self-drafting plans to draft (shape of %d nodes)", source.shape.nodes);
    draft_source_propose(&source, target, &sequence, &tree, 0);
    Acceptance bonus_only = {0, {0}, 7};
    draft_source_observe_pass(&source, &tree, &bonus_only, 0.0, 0.004, &stats);
    check(tree.n_nodes == 1 && fabs(source.adaptive_state.reached[1][0] - reached) < 1e-12,
          "a pass without room to draft: tree of %d nodes, depth-1 rank 0 reached %.4f times (expected %.4f)", tree.n_nodes,
          source.adaptive_state.reached[1][0], reached);
    draft_source_free(&source);
}

// Room to draft: a tree needs its N nodes' slots of the target's cache beyond the committed prefix, and
// self-drafting also the candidates it expands there, K (D - 1) + 1; the other drafts expand nowhere in it
// (the EAGLE draft in its own cache). A shape of 8 nodes that expands 13, with exactly 8 slots free: the
// suffix draft drafts (every draft once needed 13, and a fixed wide shape then drafted nothing near the end
// of the context), self-drafting does not.
static void test_room_to_draft(Target* target) {
    TreeShape shape = {4, 4, 8};
    int tokens[12] = {5, 6, 7, 8, 5, 6, 7, 8, 5, 6, 7, 8};
    Sequence sequence;
    memset(&sequence, 0, sizeof(sequence));
    sequence.tokens = tokens;
    sequence.n_tokens = sequence.n_committed = sequence.capacity = 12;
    DraftKind kinds[2] = {DRAFT_SUFFIX, DRAFT_SELF};
    int nodes[2] = {0, 0}, no_room[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        DraftSource source;
        draft_source_init(&source, kinds[k], shape, NULL, target);
        draft_source_set_adaptive(&source, 0, 1);
        draft_source_begin_request(&source, 12);
        if (kinds[k] == DRAFT_SUFFIX) { suffix_index_add(source.suffix_outputs, tokens, 12); }
        Tree tree;
        draft_source_propose(&source, target, &sequence, &tree, shape.nodes);
        nodes[k] = tree.n_nodes;
        no_room[k] = source.pass_no_room;
        draft_source_free(&source);
    }
    check(nodes[0] > 1 && !no_room[0] && nodes[1] == 1 && no_room[1],
          "room to draft with 8 slots free, a shape of 8 nodes expanding 13: suffix tree of %d nodes (no room: %d; expected "
          "a tree), self-drafting %d (no room: %d; expected the root alone)", nodes[0], no_room[0], nodes[1], no_room[1]);
}

// Hindsight (drafting.c): a model-free draft with adaptive shapes proposes the largest tree at every pass's
// root, whatever the pass drafts, and the chooser counts it level by level as the target produces the tokens
// it guesses; the passes themselves count nothing.
static void test_hindsight(Target* target) {
    DraftSource source;
    draft_source_init(&source, DRAFT_LOOKUP, (TreeShape){1, 4, 5}, NULL, target);
    draft_source_set_adaptive(&source, 1, 1);
    int tokens[16] = {5, 6, 7, 8, 5, 6};   // the lookup: "5 6" was followed by 7 8 5 6
    Sequence sequence;
    memset(&sequence, 0, sizeof(sequence));
    sequence.tokens = tokens;
    sequence.n_tokens = sequence.n_committed = 6;
    sequence.capacity = 16;
    SpecAdaptive* a = &source.adaptive_state;
    draft_source_plan_pass(&source, &sequence);
    source.shape = (TreeShape){1, 0, 1};   // the pass drafts nothing (as if the chooser had chosen so)
    Tree tree;
    draft_source_propose(&source, target, &sequence, &tree, 64);
    check(tree.n_nodes == 1 && source.n_hindsight == 1 && source.hindsight[0].tree.n_nodes == 5,
          "a pass drafting nothing: tree of %d nodes (expected 1), %d trees pending (expected 1) of %d nodes (expected "
          "5: the lookup's chain at the largest shape)", tree.n_nodes, source.n_hindsight,
          source.n_hindsight ? source.hindsight[0].tree.n_nodes : 0);
    Acceptance bonus_only = {0, {0}, 7};
    SpecStats stats;
    memset(&stats, 0, sizeof(stats));
    draft_source_observe_pass(&source, &tree, &bonus_only, 0.0, 0.004, &stats);
    check(a->reached[1][0] == 0.0, "the pass itself was counted: depth 1 reached %.3f times", a->reached[1][0]);
    // the target produced 7: depth 1 is decided (right), depth 2 not yet
    tokens[6] = 7;
    sequence.n_tokens = sequence.n_committed = 7;
    draft_source_plan_pass(&source, &sequence);
    check(a->reached[1][0] == 1.0 && a->hit[1][0] == 1.0 && a->reached[2][0] == 0.0 && source.n_hindsight == 1,
          "after one produced token: depth 1 reached %.1f, hit %.1f (expected 1, 1); depth 2 reached %.1f (expected 0); "
          "%d trees pending (expected 1)", a->reached[1][0], a->hit[1][0], a->reached[2][0], source.n_hindsight);
    draft_source_propose(&source, target, &sequence, &tree, 64);   // a second tree, at this pass's root
    check(source.n_hindsight == 2, "a tree at every pass's root: %d pending (expected 2)", source.n_hindsight);
    draft_source_observe_pass(&source, &tree, &bonus_only, 0.0, 0.004, &stats);
    // then 8 and 9: the first tree's depth 2 is right, depth 3 (5) wrong, and it ends; the second tree ("5 6 7"
    // was followed by 8: its chain 8 5 6 7) is right at depth 1 and wrong at depth 2
    tokens[7] = 8;
    tokens[8] = 9;
    sequence.n_tokens = sequence.n_committed = 9;
    draft_source_plan_pass(&source, &sequence);
    // (depth 1's first count has decayed by one observed pass)
    double expect_reached[5] = {0, 1.0 * 0.99 + 1.0, 1.0 + 1.0, 1.0, 0.0}, expect_hit[5] = {0, 1.0 * 0.99 + 1.0, 1.0, 0.0, 0.0};
    int right = source.n_hindsight == 0 && source.hindsight_judged == 2;
    for (int d = 1; d <= 4; d++) {
        right = right && fabs(a->reached[d][0] - expect_reached[d]) < 1e-12 && fabs(a->hit[d][0] - expect_hit[d]) < 1e-12;
    }
    check(right, "two trees judged to their end: pending %d (expected 0), judged %ld (expected 2); reached/hit by depth "
          "%.2f/%.2f %.2f/%.2f %.2f/%.2f %.2f/%.2f (expected 1.99/1.99 2/1 1/0 0/0)", source.n_hindsight,
          source.hindsight_judged, a->reached[1][0], a->hit[1][0], a->reached[2][0], a->hit[2][0], a->reached[3][0],
          a->hit[3][0], a->reached[4][0], a->hit[4][0]);
    draft_source_free(&source);
    // fixed shapes judge nothing in hindsight
    draft_source_init(&source, DRAFT_LOOKUP, (TreeShape){1, 4, 5}, NULL, target);
    sequence.n_tokens = sequence.n_committed = 6;
    draft_source_plan_pass(&source, &sequence);
    draft_source_propose(&source, target, &sequence, &tree, 64);
    check(tree.n_nodes == 5 && source.n_hindsight == 0, "a fixed-shape lookup: %d nodes (expected 5), %d trees in "
          "hindsight (expected 0)", tree.n_nodes, source.n_hindsight);
    draft_source_free(&source);
}

int main(void) {
    snprintf(model_path, sizeof(model_path), "/tmp/aurora_test_speculative_%d.gguf", (int)getpid());
    TinyModelSpec spec = {64, 3, 4, 2, 96, 300, 256, 1, TYPE_F32, 10000.0f, 21};
    Error err;
    Target target;
    if (tiny_model_write(model_path, &spec, &err) != 0 || target_load(&target, model_path, backend_cpu(), 256, 64, &err) != 0) {
        fprintf(stderr, "setup: %s\n", err.message);
        return 1;
    }
    remove(model_path);
    test_tree_buffers();
    test_verify_and_compaction(&target);
    test_greedy_lossless(&target);
    test_stop_conditions(&target);
    test_hybrid_suffix_probe_due(&target);
    test_pass_costs(&target);
    test_room_to_draft(&target);
    test_hindsight(&target);
    test_eligibility();
    test_top_k_non_finite();
    test_suffix_depth(&target);
    test_suffix_calibration(&target);
    test_suffix_confidence(&target);
    test_hybrid_suffix_probe(&target);
    test_eagle_lazy_catch_up(&target);
    test_hybrid_prices(&target);
    test_hybrid_shared_costs(&target);
    test_sampling_lossless();
    test_sampling_edges();
    test_sampling_end_to_end(&target);
    test_sampling_sources(&target);
    target_free(&target);
    return test_summary();
}
