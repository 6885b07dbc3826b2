/*
drafting.c: where draft trees come from. EAGLE-2 style tree drafting (grow candidates depth by depth,
expanding the K best of the newest depth, keep the N-1 best by cumulative draft log-probability), and the
draft sources behind one interface: the EAGLE-3 draft model (with hot-swapped weights), the target itself
(the ceiling), prompt lookup, the suffix draft (suffix.c: a model-free online learner), the hybrid of the
suffix and EAGLE drafts (per pass, whichever is expected to yield more), and none (plain decoding with
recording). With adaptive shapes (adaptive.c) each pass's shape is chosen from measured costs and
acceptance, down to no drafting at all; the EAGLE draft's cache then catches up lazily, in one batch, on
the next pass that drafts.

Contract: a draft source only proposes. Whatever it proposes, the output equals what the target alone
would produce (greedy: token for token; sampling: in distribution); only the speed depends on the draft.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// tree drafting (EAGLE-2 style): grow candidates depth by depth, expanding the K best of the newest
// depth, then keep the N-1 best candidates overall by cumulative draft log-probability.

typedef struct {
    int token;      // target id
    int parent;     // candidate index; -1: a child of the root
    int depth;      // 1 for the root's children
    float score;    // cumulative draft log-probability
    int slot;       // the drafter's cache slot once expanded, else -1
    int rank;       // among its parent's children as drafted, best first
    float chance;   // adaptive, a drafting model: the calibrated chance its path is accepted (adaptive.c); else 1
} Candidate;

// Each depth adds at most K children to each of its K best candidates; the first depth K.
enum { MAX_CANDIDATES = TREE_MAX_DEPTH * MAX_SPEC_K * MAX_SPEC_K + MAX_SPEC_K * MAX_SPEC_K };
// Prompt lookup matches the last n tokens, n from this down to 1.
enum { LOOKUP_MAX_NGRAM = 3 };

struct CandidatePool {
    int n;
    Candidate items[MAX_CANDIDATES];
};

// A logit as top_k_log_probs ranks it: a NaN below every number (as sample_argmax, where a NaN never wins
// but at id 0), so that it can neither take a place in the list nor, once there, bar a larger logit from it.
static float rank_logit(float x) { return isnan(x) ? -INFINITY : x; }

// The k most probable entries of logits (n), as (id, log-probability), best first, ties to the lowest
// id (so that k = 1 is exactly sample_argmax, whose logits are never NaN at id 0 here). One pass, keeping a
// sorted list of the best k so far. Returns how many were written (min(k, n)).
static int top_k_log_probs(int* ids, float* log_probs, const float* logits, int n, int k) {
    if (k > n) { k = n; }
    int count = 0;
    for (int i = 0; i < n; i++) {
        float x = rank_logit(logits[i]);
        if (count == k && !(x > rank_logit(logits[ids[k - 1]]))) { continue; }
        int at = count < k ? count++ : k - 1;
        while (at > 0 && x > rank_logit(logits[ids[at - 1]])) { ids[at] = ids[at - 1]; at--; }
        ids[at] = i;
    }
    float max_logit = rank_logit(logits[ids[0]]);
    if (max_logit == -INFINITY) {   // every logit -inf or NaN: nothing to tell the ids apart
        for (int j = 0; j < k; j++) { log_probs[j] = -logf((float)n); }
        return k;
    }
    if (max_logit == INFINITY) {   // (a diverged draft) the limit of the softmax: the +inf ids share it, the rest 0
        int m = 0;
        for (int i = 0; i < n; i++) { m += rank_logit(logits[i]) == INFINITY; }
        for (int j = 0; j < k; j++) { log_probs[j] = rank_logit(logits[ids[j]]) == INFINITY ? -logf((float)m) : -INFINITY; }
        return k;
    }
    double sum = 0.0;
    for (int i = 0; i < n; i++) { sum += exp((double)rank_logit(logits[i]) - max_logit); }
    float log_normaliser = (float)(max_logit + log(sum));
    for (int j = 0; j < k; j++) { log_probs[j] = rank_logit(logits[ids[j]]) - log_normaliser; }
    return k;
}

static void pool_add_children(CandidatePool* pool, int parent, const int* ids, const float* log_probs, int k,
                              const int32_t* id_map) {
    float base = parent < 0 ? 0.0f : pool->items[parent].score;
    int depth = parent < 0 ? 1 : pool->items[parent].depth + 1;
    for (int j = 0; j < k && pool->n < MAX_CANDIDATES; j++) {
        Candidate* c = &pool->items[pool->n++];
        c->token = id_map ? id_map[ids[j]] : ids[j];
        c->parent = parent;
        c->depth = depth;
        c->score = base + log_probs[j];
        c->slot = -1;
        c->rank = j;
        c->chance = 1.0f;
    }
}

// The chances of candidates [first, pool->n) (a drafting model's, calibrated: adaptive.c): the parent's
// chance times the calibrated chance of the candidate's own probability given the parent.
static void pool_set_chances(CandidatePool* pool, int first, const SpecAdaptive* adaptive) {
    for (int i = first; i < pool->n; i++) {
        Candidate* c = &pool->items[i];
        float parent_score = c->parent < 0 ? 0.0f : pool->items[c->parent].score;
        float parent_chance = c->parent < 0 ? 1.0f : pool->items[c->parent].chance;
        c->chance = parent_chance * (float)spec_adaptive_node_chance(adaptive, c->score - parent_score);
    }
}

// Better candidate first: higher score, then created earlier (so a parent beats a child it ties with).
static int candidate_better(const CandidatePool* pool, int a, int b) {
    if (pool->items[a].score != pool->items[b].score) { return pool->items[a].score > pool->items[b].score; }
    return a < b;
}

// Which candidates may join the tree: a candidate's chance pays for a node (at least min_chance), and so
// do its parent's and its better-ranked siblings'. Calibration is per probability bin (adaptive.c), so a
// noisy bin can give a parent's second child more chance than its first; kept alone, the second would
// sit where the chooser's counts take the first rank to be. A parent's children enter the pool best first,
// though not always side by side (a suffix tree's candidates come best first over the whole tree), so the
// sibling ranked just above a candidate is its parent's latest child before it.
static void pool_eligibility(const CandidatePool* pool, float min_chance, uint8_t* eligible) {
    uint8_t latest_child[MAX_CANDIDATES + 1] = {0};   // [parent + 1]: whether that parent's latest child is eligible
    for (int i = 0; i < pool->n; i++) {
        const Candidate* c = &pool->items[i];
        eligible[i] = c->chance >= min_chance && (c->parent < 0 || eligible[c->parent]) &&
                      (c->rank == 0 || latest_child[c->parent + 1]);
        latest_child[c->parent + 1] = eligible[i];
    }
}

// The (up to) k best eligible candidates at a depth, best first.
static int pool_best_at_depth(const CandidatePool* pool, int depth, int k, float min_chance, int* out) {
    uint8_t eligible[MAX_CANDIDATES];
    pool_eligibility(pool, min_chance, eligible);
    int n = 0;
    for (int i = 0; i < pool->n; i++) {
        if (pool->items[i].depth != depth || !eligible[i]) { continue; }
        int at = n < k ? n++ : k;             // insertion into a sorted list of at most k
        if (at == k && !candidate_better(pool, i, out[k - 1])) { continue; }
        if (at == k) { at = k - 1; }
        while (at > 0 && candidate_better(pool, i, out[at - 1])) { out[at] = out[at - 1]; at--; }
        out[at] = i;
    }
    return n;
}

// Keeps the N-1 best eligible candidates and writes the tree (root first, then by depth, then by
// creation); node_of_candidate: each candidate's tree index, or -1. Ancestors are always kept with their
// descendants (a child never scores above its parent, and is eligible only with it), and a parent's kept
// children are its first ranks (a child never scores above a better-ranked sibling either).
static void pool_to_tree(Tree* tree, const CandidatePool* pool, int root_token, int root_position, int n_nodes,
                         float min_chance, int* node_of_candidate) {
    uint8_t eligible[MAX_CANDIDATES];
    pool_eligibility(pool, min_chance, eligible);
    int n_eligible = 0;
    for (int i = 0; i < pool->n; i++) { n_eligible += eligible[i]; }
    int keep = n_nodes - 1 < n_eligible ? n_nodes - 1 : n_eligible;
    int chosen[MAX_CANDIDATES];
    uint8_t selected[MAX_CANDIDATES] = {0};
    for (int j = 0; j < keep; j++) {
        int best = -1;
        for (int i = 0; i < pool->n; i++) {
            if (!selected[i] && eligible[i] && (best < 0 || candidate_better(pool, i, best))) { best = i; }
        }
        selected[best] = 1;
    }
    int n = 0;
    for (int depth = 1; depth <= TREE_MAX_DEPTH; depth++) {
        for (int i = 0; i < pool->n; i++) { if (selected[i] && pool->items[i].depth == depth) { chosen[n++] = i; } }
    }
    for (int i = 0; i < pool->n; i++) { node_of_candidate[i] = -1; }
    tree->n_nodes = n + 1;
    tree->root_position = root_position;
    tree->tokens[0] = root_token;
    tree->parents[0] = -1;
    tree->scores[0] = 0.0f;
    for (int j = 0; j < n; j++) {
        const Candidate* c = &pool->items[chosen[j]];
        node_of_candidate[chosen[j]] = j + 1;
        tree->tokens[j + 1] = c->token;
        tree->parents[j + 1] = c->parent < 0 ? 0 : node_of_candidate[c->parent];
        tree->scores[j + 1] = c->score;
    }
}

// The candidates left out for their chance (not eligible) whose parent is in the tree (after
// pool_to_tree): written to out, their count returned. Their chance given the parent is the ratio of the
// two paths' chances.
static int pool_left_out(const CandidatePool* pool, const int* node_of_candidate, float min_chance, LeftOutNode* out) {
    uint8_t eligible[MAX_CANDIDATES];
    pool_eligibility(pool, min_chance, eligible);
    int n = 0;
    for (int i = 0; i < pool->n && min_chance > 0; i++) {
        const Candidate* c = &pool->items[i];
        int parent_node = c->parent < 0 ? 0 : node_of_candidate[c->parent];
        if (eligible[i] || parent_node < 0) { continue; }
        float parent_chance = c->parent < 0 ? 1.0f : pool->items[c->parent].chance;
        out[n++] = (LeftOutNode){parent_node, c->depth, c->rank, parent_chance > 0 ? c->chance / parent_chance : 0.0f};
    }
    return n;
}

// After a pass (after spec_adaptive_learn with the same shape): the left-out nodes whose parent the accepted
// path reached, for the chooser's counts.
static void observe_left_out(SpecAdaptive* adaptive, TreeShape shape, const LeftOutNode* left_out, int n,
                             const Acceptance* acceptance) {
    for (int i = 0; i < n; i++) {
        int depth = left_out[i].depth;
        if (depth - 1 <= acceptance->n_accepted && acceptance->path[depth - 1] == left_out[i].parent_node) {
            spec_adaptive_observe_left_out(adaptive, shape, depth, left_out[i].rank, left_out[i].chance);
        }
    }
}

// ----------------------------------------------------------------------------
// the draft sources

int tree_shape_check(TreeShape shape, Error* err) {
    if (shape.k < 1 || shape.k > MAX_SPEC_K) { return error_set(err, "--spec-k is %d, expected 1..%d", shape.k, MAX_SPEC_K); }
    if (shape.depth < 1 || shape.depth > TREE_MAX_DEPTH) {
        return error_set(err, "--spec-depth is %d, expected 1..%d", shape.depth, TREE_MAX_DEPTH);
    }
    if (shape.nodes < 2 || shape.nodes > TREE_MAX_NODES) {
        return error_set(err, "--spec-nodes is %d, expected 2..%d (root included)", shape.nodes, TREE_MAX_NODES);
    }
    return 0;
}

int tree_shape_fits(TreeShape shape, const Target* target, Error* err) {
    int capacity = target->act.max_tokens;
    if (shape.nodes > capacity) {
        return error_set(err, "a pass may verify %d tree nodes, more than the %d tokens one forward call of the target "
                         "holds (--batch, at most --context); expected --batch and --context of at least %d, or a "
                         "smaller --spec-nodes", shape.nodes, capacity, shape.nodes);
    }
    if (shape.k > capacity) {   // (an EAGLE draft's step runs K rows through the target's table)
        return error_set(err, "--spec-k %d is more than the %d tokens one forward call of the target holds (--batch, at "
                         "most --context); expected --spec-k of at most %d, or a larger --batch", shape.k, capacity, capacity);
    }
    return 0;
}

// Target cache slots a proposal may use beyond the committed prefix: the verify pass uses N; self-drafting
// also writes the root and every expanded candidate there. (The EAGLE draft expands into its own cache,
// which keeps MAX_SPEC_K * TREE_MAX_DEPTH slots spare for that; the model-free drafts write nothing.)
static int shape_slots_needed(TreeShape shape, DraftKind kind) {
    int expanded = kind == DRAFT_SELF ? shape.k * (shape.depth - 1) + 1 : 0;
    return expanded > shape.nodes ? expanded : shape.nodes;
}

// Cache slots a proposal may use beyond the committed prefix (the hybrid: whichever of its two shapes needs more)
static int draft_source_slots_needed(const DraftSource* source) {
    int needed = shape_slots_needed(source->shape, source->kind);
    if (source->kind == DRAFT_HYBRID && shape_slots_needed(source->eagle_shape, source->kind) > needed) {
        needed = shape_slots_needed(source->eagle_shape, source->kind);
    }
    return needed;
}

int draft_source_may_draft(const DraftSource* source) {
    return source->shape.nodes > 1 || (source->kind == DRAFT_HYBRID && source->eagle_shape.nodes > 1);
}

// The model-free drafts: their proposals cost microseconds (adaptive shapes judge them in hindsight, below).
static int draft_source_free_proposals(const DraftSource* source) {
    return source->kind == DRAFT_LOOKUP || source->kind == DRAFT_SUFFIX;
}

// The most tokens one forward of the EAGLE draft's catch-up takes (eagle_catch_up runs longer ones in several;
// adaptive.c charges them so).
static int eagle_catch_up_rows(const Draft* draft) {
    return draft->act.max_tokens < TREE_MAX_NODES ? draft->act.max_tokens : TREE_MAX_NODES;
}

void draft_source_init(DraftSource* source, DraftKind kind, TreeShape shape, Draft* draft, Target* target) {
    memset(source, 0, sizeof(*source));
    source->kind = kind;
    // (plain decoding verifies the root alone, whatever shape was asked for: one row of a forward call)
    source->limit = kind == DRAFT_NONE ? (TreeShape){1, 1, 1}
                  : kind == DRAFT_LOOKUP ? (TreeShape){1, shape.depth, shape.depth + 1 < shape.nodes ? shape.depth + 1 : shape.nodes}
                  : shape;
    source->shape = source->eagle_shape = source->limit;
    source->draft = draft;
    source->lookup_max_ngram = LOOKUP_MAX_NGRAM;
    source->pool = mallocCheck(sizeof(CandidatePool));
    int C = target->config.dim;
    source->mask = mallocCheck((size_t)MAX_SPEC_K * (target->cache_capacity + TREE_MAX_NODES * MAX_SPEC_K));
    int rows = target->act.max_tokens > MAX_SPEC_K ? target->act.max_tokens : MAX_SPEC_K;
    source->u_batch = mallocCheck((size_t)rows * C * sizeof(float));
    if (kind == DRAFT_EAGLE || kind == DRAFT_HYBRID) {
        // the draft's cache holds the committed sequence plus every candidate a proposal expands
        draft_alloc_state(draft, target->cache_capacity + MAX_SPEC_K * TREE_MAX_DEPTH, target->act.max_tokens);
        source->root_out = mallocCheck((size_t)C * sizeof(float));
        source->root_logits = mallocCheck((size_t)draft->config.vocab_size * sizeof(float));
        source->expanded_out = mallocCheck((size_t)MAX_CANDIDATES * C * sizeof(float));
    }
    if (kind == DRAFT_SUFFIX || kind == DRAFT_HYBRID) {
        source->suffix_outputs = mallocCheck(sizeof(SuffixIndex));
        suffix_index_init(source->suffix_outputs, SUFFIX_DRAFT_DEPTH, SUFFIX_GLOBAL_MAX_NODES);
        suffix_index_init(&source->suffix_request, SUFFIX_DRAFT_DEPTH, 0);
        source->eagle_accepted = 1.0; // optimistic until measured: the EAGLE draft gets tried
    }
    spec_adaptive_init(&source->adaptive_state, source->limit, source->limit.k);
    spec_adaptive_init(&source->suffix_adaptive_state, source->limit, source->limit.k);
    spec_adaptive_share_costs(&source->suffix_adaptive_state, &source->adaptive_state);   // one target
    source->adaptive_state.calibrates = kind == DRAFT_EAGLE || kind == DRAFT_HYBRID; // its scores are log-probabilities
    source->adaptive_state.root_children_free = kind == DRAFT_EAGLE || kind == DRAFT_HYBRID;
    if (kind == DRAFT_EAGLE || kind == DRAFT_HYBRID) { source->adaptive_state.catch_up_chunk = eagle_catch_up_rows(draft); }
    source->adaptive_state.judged_in_hindsight = draft_source_free_proposals(source);
    if (source->adaptive_state.judged_in_hindsight || kind == DRAFT_HYBRID) { // (the suffix draft's calibration too)
        source->hindsight = mallocCheck(HINDSIGHT_TREES * sizeof(HindsightTree));
    }
}

void draft_source_set_adaptive(DraftSource* source, int adaptive, int deterministic) {
    source->adaptive = adaptive && source->kind != DRAFT_NONE;
    source->adaptive_state.costs->deterministic = deterministic;   // (the suffix draft's chooser shares them)
}

void draft_source_free(DraftSource* source) {
    free(source->root_out);
    free(source->root_logits);
    free(source->expanded_out);
    free(source->mask);
    free(source->u_batch);
    free(source->pool);
    free(source->hindsight);
    if (source->suffix_outputs) {
        suffix_index_free(source->suffix_outputs);
        free(source->suffix_outputs);
        suffix_index_free(&source->suffix_request);
    }
    memset(source, 0, sizeof(*source));
}

void draft_source_begin_request(DraftSource* source, int n_prompt) {
    source->n_extended = 0; // the draft's cache starts empty
    source->n_prompt = n_prompt;
    source->n_hindsight = 0; // (the last request's trees guessed its continuation, which no request will produce)
    spec_adaptive_begin_request(&source->adaptive_state);   // (and the suffix draft's chooser, which shares its costs)
    if (source->suffix_outputs) {
        suffix_index_free(&source->suffix_request);
        suffix_index_init(&source->suffix_request, SUFFIX_DRAFT_DEPTH, 0);
        source->suffix_indexed = 0;
    }
}

void draft_source_end_request(DraftSource* source, const Sequence* sequence, int n_prompt) {
    if (source->suffix_outputs && sequence->n_tokens > n_prompt) {
        suffix_index_add_window(source->suffix_outputs, sequence->tokens + n_prompt, sequence->n_tokens - n_prompt);
    }
}

// The hot swap: the newest published weights, if any, between verify passes (draft_source_sync calls it
// every pass; its time is the pass's swap time, not drafting's).
void draft_source_take_weights(DraftSource* source) {
    if ((source->kind != DRAFT_EAGLE && source->kind != DRAFT_HYBRID) || source->exchange == NULL) { return; }
    double start = now_seconds();
    int version;
    const int32_t* vocabulary;
    float* weights = weight_exchange_take(source->exchange, source->draft_version, &version, &vocabulary);
    if (weights) {
        draft_use_weights(source->draft, weights); // a rebinding on a CPU backend, an upload on a GPU
        draft_use_vocabulary(source->draft, vocabulary);
        source->draft_version = version;
        double elapsed = now_seconds() - start;
        source->pass_swap_seconds += elapsed;
        source->swaps++;
        source->swap_seconds += elapsed;
        if (elapsed > source->swap_seconds_max) { source->swap_seconds_max = elapsed; }
    }
}

// The generated tokens an EAGLE draft must catch up over before it drafts (0 for drafts that need none; the
// prompt is caught up over apart, like a prefill, and not counted).
static int eagle_pending(const DraftSource* source, const Sequence* sequence) {
    if (source->kind != DRAFT_EAGLE && source->kind != DRAFT_HYBRID) { return 0; }
    int caught_up = source->n_extended > source->n_prompt ? source->n_extended : source->n_prompt;
    return sequence->n_committed - caught_up;
}

// The EAGLE draft's cache catches up with the committed sequence (every position since it last drafted):
// it extends its cache over each committed position t, pairing the target's features g_t with the next
// token x_{t+1}; the output at the last committed position predicts the root's children. Lazily, where the
// draft drafts (draft_source_propose).
static void eagle_catch_up(DraftSource* source, const Sequence* sequence) {
    Draft* draft = source->draft;
    int C = draft->config.dim, chunk = eagle_catch_up_rows(draft);
    int positions[TREE_MAX_NODES];
    double start_time = now_seconds();
    // a catch-up that takes in the prompt (a request's first drafting pass, in batches like a prefill) is not a
    // measure of the catch-up over generated tokens that adaptive.c charges by their count: its time still
    // leaves drafting's, its tokens are not counted
    int tokens = source->n_extended >= source->n_prompt ? sequence->n_committed - source->n_extended : 0;
    while (source->n_extended < sequence->n_committed) {
        int start = source->n_extended;
        int T = sequence->n_committed - start;
        if (T > chunk) { T = chunk; }
        for (int t = 0; t < T; t++) { positions[t] = start + t; }
        draft_project_features(draft, source->u_batch, sequence->features + (size_t)start * TAP_LAYERS * C, T);
        draft_extend(draft, sequence->tokens + start + 1, source->u_batch, positions, T, start);
        source->n_extended += T;
        memcpy(source->root_out, draft->host.out, (size_t)C * sizeof(float));   // (the last row's: draft_extend)
        memcpy(source->root_logits, draft->host.logits, (size_t)draft->config.vocab_size * sizeof(float));
    }
    source->pass_catch_up_seconds += now_seconds() - start_time;
    source->pass_catch_up_tokens += tokens;
}

// The request's suffix index catches up with the sequence (its prompt, then each token emitted).
static void suffix_catch_up(DraftSource* source, const Sequence* sequence) {
    for (; source->suffix_indexed < sequence->n_tokens; source->suffix_indexed++) {
        suffix_index_append(&source->suffix_request, sequence->tokens[source->suffix_indexed]);
    }
}

void draft_source_sync(DraftSource* source, const Sequence* sequence) {
    if (source->kind == DRAFT_SUFFIX || source->kind == DRAFT_HYBRID) { suffix_catch_up(source, sequence); }
    if (source->kind != DRAFT_EAGLE && source->kind != DRAFT_HYBRID) { return; }
    // hot swap: between verify passes, switch to the newest published weights. The request in flight
    // keeps the keys/values its earlier positions got from the previous version (any draft is lossless;
    // recomputing them would pause the request).
    draft_source_take_weights(source);
    // (the EAGLE draft catches up where it drafts, in draft_source_propose: caught up here, a draft that adaptive
    // shapes kept from drafting still ran fc and its layer over every token)
}

// The mask of a batch of expanded candidates: the committed prefix, then among the expansion slots
// [n_prefix, n_prefix + n_slots) only the candidate's own ancestors (and, for self-drafting, the root in
// slot n_prefix), then itself.
static void expansion_mask(uint8_t* mask, const CandidatePool* pool, const int* batch, int n_batch, int n_prefix,
                           int n_slots_before, int root_in_first_slot) {
    int P = n_prefix + n_slots_before + n_batch;
    for (int b = 0; b < n_batch; b++) {
        uint8_t* row = mask + (size_t)b * P;
        memset(row, 1, (size_t)n_prefix);
        memset(row + n_prefix, 0, (size_t)(n_slots_before + n_batch));
        if (root_in_first_slot) { row[n_prefix] = 1; }
        for (int c = pool->items[batch[b]].parent; c >= 0; c = pool->items[c].parent) { row[pool->items[c].slot] = 1; }
        row[n_prefix + n_slots_before + b] = 1;
    }
}

// Runs the drafting model over a batch of candidates (all at one depth) and adds their top-K children.
static void expand_candidates(DraftSource* source, Target* target, const Sequence* sequence, CandidatePool* pool,
                              const int* batch, int n_batch, int* n_slots_used) {
    int root_position = sequence->n_tokens - 1, n_prefix = sequence->n_committed, K = source->shape.k;
    int tokens[MAX_SPEC_K], positions[MAX_SPEC_K], ids[MAX_SPEC_K];
    float log_probs[MAX_SPEC_K];
    int first_slot = n_prefix + *n_slots_used;
    for (int b = 0; b < n_batch; b++) {
        Candidate* c = &pool->items[batch[b]];
        tokens[b] = c->token;
        c->slot = first_slot + b;
    }
    if (source->kind == DRAFT_SELF) {
        int V = target->config.vocab_size;
        for (int b = 0; b < n_batch; b++) { positions[b] = root_position + pool->items[batch[b]].depth; }
        expansion_mask(source->mask, pool, batch, n_batch, n_prefix, *n_slots_used, 1);
        target_forward(target, tokens, positions, source->mask, n_batch, first_slot, 1);
        for (int b = 0; b < n_batch; b++) {
            int k = top_k_log_probs(ids, log_probs, target->host.logits + (size_t)b * V, V, K);
            pool_add_children(pool, batch[b], ids, log_probs, k, NULL);
        }
    } else { // DRAFT_EAGLE: u is the parent's output (the root's children read root_out)
        Draft* draft = source->draft;
        int C = draft->config.dim, Vd = draft->config.vocab_size;
        for (int b = 0; b < n_batch; b++) {
            const Candidate* c = &pool->items[batch[b]];
            positions[b] = root_position - 1 + c->depth;
            const float* parent_out = c->parent < 0 ? source->root_out : source->expanded_out + (size_t)c->parent * C;
            memcpy(source->u_batch + (size_t)b * C, parent_out, (size_t)C * sizeof(float));
        }
        expansion_mask(source->mask, pool, batch, n_batch, n_prefix, *n_slots_used, 0);
        draft_forward(draft, tokens, source->u_batch, positions, source->mask, n_batch, first_slot);
        for (int b = 0; b < n_batch; b++) {
            memcpy(source->expanded_out + (size_t)batch[b] * C, draft->host.out + (size_t)b * C, (size_t)C * sizeof(float));
            int k = top_k_log_probs(ids, log_probs, draft->host.logits + (size_t)b * Vd, Vd, K);
            int first = pool->n;
            pool_add_children(pool, batch[b], ids, log_probs, k, draft->d2t);
            if (source->pass_min_chance > 0) { pool_set_chances(pool, first, &source->adaptive_state); }
        }
    }
    *n_slots_used += n_batch;
}

// Prompt lookup: find the latest earlier occurrence of the sequence's last n tokens (n from
// lookup_max_ngram down to 1) and propose the tokens that followed it, as a chain of at most depth.
static void propose_lookup(const DraftSource* source, const Sequence* sequence, CandidatePool* pool, int depth) {
    const int* x = sequence->tokens;
    int n_tokens = sequence->n_tokens;
    for (int n = source->lookup_max_ngram; n >= 1; n--) {
        if (n_tokens < n + 1) { continue; }
        for (int start = n_tokens - n - 1; start >= 0; start--) { // latest match first
            if (memcmp(x + start, x + n_tokens - n, (size_t)n * sizeof(int)) != 0) { continue; }
            int parent = -1;
            for (int j = start + n; j < n_tokens && j - (start + n) < depth; j++) {
                float zero = 0.0f; // a lookup has no probabilities: every node scores 0, so depth decides
                pool_add_children(pool, parent, &x[j], &zero, 1, NULL);
                parent = pool->n - 1;
            }
            return;
        }
    }
}

// The suffix draft's calibration. A suffix tree's nodes carry empirical probabilities (how often each
// continuation followed the match), which overrate a short match and a match among other requests' outputs:
// frozen, 100 unseen requests of the mixed traffic (the 8,000-sample draft in the hybrid, 2,148 trees judged in
// hindsight), the trees got 0.47 of their summed probabilities, this request's 0.32 after a match of one token,
// 0.49 of three, 0.73 of six to eight, 0.91 of 13 or more; every output's 0.05 after one token, 0.16 at most.
// And a node's own chance differs from its path's share of its tree's: once its parent was accepted, a node of
// probability 1 was accepted 0.67 of the time after a one-token match in this request, 0.97 after 13 or more.
// So each node's chance given its parent is calibrated by its tree's class (index and match length) and its
// probability's bin, from every tree judged in hindsight; a path's chance is the product along it, a tree's
// expectation the sum of its nodes' chances. (One calibration for all trees took weak trees for good ones and
// good for weak; a ratio for each class took a deep node's failures for its first levels'.)
static const double SUFFIX_PRIOR_WEIGHT = 1.0, SUFFIX_DECAY = 0.995;   // (a half-life of about 140 passes)

static int suffix_match_class(int length) {
    static const int first_length[SUFFIX_MATCH_CLASSES] = {1, 2, 3, 4, 6, 9, 13};
    int c = 0;
    while (c + 1 < SUFFIX_MATCH_CLASSES && length >= first_length[c + 1]) { c++; }
    return c;
}

// The calibrated chance that a node of a class-`calibration_class` tree is accepted once its parent is (its
// prior: its empirical probability, weighing SUFFIX_PRIOR_WEIGHT observations).
static double suffix_node_chance(const DraftSource* source, int calibration_class, float step_log_prob) {
    double p = spec_step_probability(step_log_prob);
    int bin = spec_probability_bin(p, SUFFIX_STEP_BINS);
    return (source->suffix_hit[calibration_class][bin] + SUFFIX_PRIOR_WEIGHT * p) /
           (source->suffix_reached[calibration_class][bin] + SUFFIX_PRIOR_WEIGHT);
}

// One level of a suffix tree judged in hindsight: each child of `parent` was reached, `accepted` (or -1) hit.
static void suffix_count_level(DraftSource* source, const Tree* tree, int calibration_class, int parent, int accepted) {
    for (int c = 0; c < tree->n_children[parent]; c++) {
        int child = tree->children[parent][c];
        int bin = spec_probability_bin(spec_step_probability(tree->scores[child] - tree->scores[parent]), SUFFIX_STEP_BINS);
        source->suffix_reached[calibration_class][bin] += 1.0;
        source->suffix_hit[calibration_class][bin] += child == accepted;
    }
}

// The suffix draft: the longest match of the sequence's latest tokens, in this request and in every output
// served before, and the best-first continuations after it; of the two indexes, the one whose tree is
// expected to yield more (its nodes' calibrated chances, above, which the candidates keep). Returns that
// expectation and writes the tree's calibration class (-1: no tree).
static float propose_suffix(const DraftSource* source, const Sequence* sequence, CandidatePool* pool, TreeShape shape,
                            int* calibration_class) {
    const SuffixIndex* indexes[2] = {&source->suffix_request, source->suffix_outputs};
    int tokens[2][TREE_MAX_NODES], parents[2][TREE_MAX_NODES];
    float scores[2][TREE_MAX_NODES], steps[2][TREE_MAX_NODES], chances[2][TREE_MAX_NODES], expected[2] = {0, 0};
    int counts[2] = {0, 0}, classes[2] = {-1, -1};
    // a match leaves the index's depth less its length for the continuation: at most what lets the shape's
    // whole depth follow (a 24-token match once capped a 16-deep chain at 8 on a verbatim repeat)
    int max_match = SUFFIX_DRAFT_DEPTH - shape.depth < SUFFIX_DRAFT_MAX_MATCH ? SUFFIX_DRAFT_DEPTH - shape.depth
                                                                              : SUFFIX_DRAFT_MAX_MATCH;
    for (int i = 0; i < 2; i++) {
        int length;
        int node = suffix_match(indexes[i], sequence->tokens, sequence->n_tokens, max_match, &length);
        if (length == 0) { continue; }
        int depth = shape.depth < SUFFIX_DRAFT_DEPTH - length ? shape.depth : SUFFIX_DRAFT_DEPTH - length;
        counts[i] = suffix_propose(indexes[i], node, shape.nodes - 1, depth, tokens[i], parents[i], scores[i]);
        classes[i] = i * SUFFIX_MATCH_CLASSES + suffix_match_class(length);
        for (int j = 0; j < counts[i]; j++) {   // (parents come before their children)
            int parent = parents[i][j];
            steps[i][j] = scores[i][j] - (parent < 0 ? 0.0f : scores[i][parent]);   // (log-probability given the parent)
            chances[i][j] = (float)((parent < 0 ? 1.0 : chances[i][parent]) * suffix_node_chance(source, classes[i], steps[i][j]));
            expected[i] += chances[i][j];
        }
    }
    int best = expected[1] > expected[0] ? 1 : 0;
    if (calibration_class) { *calibration_class = counts[best] > 0 ? classes[best] : -1; }
    int first = pool->n; // the proposal's parents are indexes into it, parents first
    for (int j = 0; j < counts[best]; j++) {
        int parent = parents[best][j] < 0 ? -1 : first + parents[best][j];
        pool_add_children(pool, parent, &tokens[best][j], &steps[best][j], 1, NULL);
        Candidate* c = &pool->items[pool->n - 1];
        c->chance = chances[best][j];
        c->rank = 0;   // among its parent's children, which come best first
        for (int k = first; k < pool->n - 1; k++) { c->rank += pool->items[k].parent == parent; }
    }
    return expected[best];
}

// Of a suffix tree's candidates, those whose chance pays for a node (min_chance): their count, and their
// chances' sum (the expectation of the tree that keeps them) returned.
static float suffix_kept_expectation(const CandidatePool* pool, float min_chance, int* n_kept) {
    uint8_t eligible[MAX_CANDIDATES];
    pool_eligibility(pool, min_chance, eligible);
    float expected = 0.0f;
    *n_kept = 0;
    for (int i = 0; i < pool->n; i++) {
        if (eligible[i]) { expected += pool->items[i].chance; (*n_kept)++; }
    }
    return expected;
}

// The hybrid's choice: the suffix tree (suffix_nodes, with the root) when it is expected to yield at least as
// many tokens per second as the EAGLE draft would in its own shape, or as a plain decode step where that
// shape is the root alone. Each yields its accepted tokens and the bonus token: the suffix tree its
// calibrated expectation; the EAGLE draft what it has been getting accepted per pass (a decayed average,
// drifting towards 1 while unused, so a weak EAGLE draft is tried again as it learns). Each pass's cost, in
// decode steps: its verify pass at the one price both choosers share (measured on every pass, whichever draft
// drafted it: VerifyCosts), and its drafting as that draft's own chooser has measured it (adaptive.c): for the
// EAGLE draft its drafting steps and its catch-up over the `pending` tokens it has not seen, which the suffix
// draft, whose proposal costs microseconds, does not pay. (Comparing tokens alone, a learned draft that got 2.2 tokens a pass in chains
// of 5, at 0.2-0.3 decode steps of drafting and catching up, took the suffix tree in 3-6% of its passes;
// training in the gaps from an 8,000-sample warm start, 100 requests on a 2-core Xeon, the hybrid served at
// 1.01x plain decoding by tokens, 1.14x by tokens per second, taking the suffix tree in 30% and 46% of passes.)
// With fixed shapes nothing is measured, every pass drafts, and what a run measures is tokens a pass: the
// two are weighed by tokens alone (priced by the choosers' priors instead, the suffix tree won near-ties on
// their guesses, and a trained draft getting 5.0 tokens a pass with the hybrid got 4.6).
static int hybrid_prefers_suffix(const DraftSource* source, float suffix_expected, int suffix_nodes, int pending) {
    if (!(suffix_expected > 0) || suffix_nodes < 2) { return 0; }
    TreeShape suffix_shape = source->shape;
    suffix_shape.nodes = suffix_nodes;
    double suffix_rate = (1.0 + suffix_expected) /
                         (source->adaptive ? spec_adaptive_pass_steps(&source->suffix_adaptive_state, suffix_shape, 0) : 1.0);
    double eagle_rate = 1.0;   // the root alone: one token a decode step
    if (source->eagle_shape.nodes > 1) {
        // (its average over passes of every shape, capped at what this shape can accept: its depth; a 1-node
        // probe is not credited with the 3 tokens the draft's deep chains have been getting)
        double accepted = source->eagle_accepted < source->eagle_shape.depth ? source->eagle_accepted
                                                                             : source->eagle_shape.depth;
        eagle_rate = (1.0 + accepted) /
                     (source->adaptive ? spec_adaptive_pass_steps(&source->adaptive_state, source->eagle_shape, pending)
                                       : 1.0);
    }
    return suffix_rate >= eagle_rate;
}

// Hindsight, for the model-free drafts (prompt lookup, the suffix draft) with adaptive shapes: their
// acceptance is measured on trees judged in hindsight rather than on the trees their passes verify. Their
// proposals cost microseconds, so at every pass's root they propose the largest tree, whatever the pass
// drafts, and as the target produces the tokens it guesses, the chooser counts it level by level as if it
// had been verified: its accepted path is the one the produced tokens follow, which is what greedy
// verification accepts (when sampling, a node's children hold the sampled token with the chance that
// verification accepts one of them). So every depth and rank stays measured, at every pass, while the
// passes draft shallow trees or none at all. Counting only the verified trees, a lookup unlucky in its
// first few guesses drafted one node a pass, or none for thirty passes, while the text turned to copying:
// its deeper levels were never measured, and it took five passes of one accepted node to try two (the
// bench's request: the fixed chain 1.55x plain decoding, adaptive 1.31x). The suffix draft's calibration
// (above) learns from the same trees, the suffix draft's and the hybrid's, with fixed shapes too (the hybrid's
// chooser counts the suffix trees it verifies: those it drafted when they were expected to pay).
static void hindsight_propose(DraftSource* source, const Sequence* sequence, CandidatePool* pool) {
    if (source->n_hindsight == HINDSIGHT_TREES) { return; }   // (each pass yields a token: never, in practice)
    if (source->kind != DRAFT_LOOKUP) { suffix_catch_up(source, sequence); }   // (a pass that drafts nothing skips it)
    pool->n = 0;
    HindsightTree* h = &source->hindsight[source->n_hindsight];
    h->suffix_class = -1;
    if (source->kind == DRAFT_LOOKUP) { propose_lookup(source, sequence, pool, source->limit.depth); }
    else {
        for (int c = 0; c < 2 * SUFFIX_MATCH_CLASSES; c++) {   // (the calibration's decay: a pass's worth)
            for (int b = 0; b < SUFFIX_STEP_BINS; b++) {
                source->suffix_reached[c][b] *= SUFFIX_DECAY;
                source->suffix_hit[c][b] *= SUFFIX_DECAY;
            }
        }
        propose_suffix(source, sequence, pool, source->limit, &h->suffix_class);
    }
    if (pool->n == 0) { return; }   // nothing to propose (no match): nothing to judge, and the pass costs a
                                    // decode step whatever its shape, so the estimates are those of a proposal
    int node_of_candidate[MAX_CANDIDATES];
    pool_to_tree(&h->tree, pool, sequence->tokens[sequence->n_tokens - 1], sequence->n_tokens - 1, source->limit.nodes,
                 0.0f, node_of_candidate);
    Error err;
    if (tree_derive(&h->tree, &err) != 0) { // the builder's own output: a failure is a program bug
        fprintf(stderr, "error: internal: hindsight tree is invalid: %s\n", err.message);
        exit(EXIT_FAILURE);
    }
    h->node = 0;
    h->depth = 0;
    source->n_hindsight++;
}

// Counts the levels of each pending tree that the sequence's tokens now decide; a tree ends at a produced
// token none of its node's children has, or below the limit's depth.
static void hindsight_judge(DraftSource* source, const Sequence* sequence) {
    for (int i = 0; i < source->n_hindsight; ) {
        HindsightTree* h = &source->hindsight[i];
        int ended = 0;
        while (!ended && h->tree.root_position + h->depth + 1 < sequence->n_tokens) {
            int d = h->depth + 1, token = sequence->tokens[h->tree.root_position + d], next = -1;
            for (int c = 0; c < h->tree.n_children[h->node]; c++) {
                if (h->tree.tokens[h->tree.children[h->node][c]] == token) { next = h->tree.children[h->node][c]; }
            }
            if (source->adaptive_state.judged_in_hindsight) {
                spec_adaptive_count_level(&source->adaptive_state, source->limit, &h->tree, h->node, next, d);
            }
            if (h->suffix_class >= 0) { suffix_count_level(source, &h->tree, h->suffix_class, h->node, next); }
            h->node = next;
            h->depth = d;
            ended = next < 0 || d >= source->limit.depth;
        }
        if (ended) {
            source->hindsight_judged++;
            *h = source->hindsight[--source->n_hindsight];
        } else {
            i++;
        }
    }
}

// Proposes a tree rooted at the sequence's last token. slots_free: cache slots available beyond the
// committed prefix; when drafting would not fit, the tree is the root alone (a plain decode step).
void draft_source_propose(DraftSource* source, Target* target, const Sequence* sequence, Tree* tree, int slots_free) {
    CandidatePool* pool = source->pool;
    pool->n = 0;
    int root_token = sequence->tokens[sequence->n_tokens - 1], root_position = sequence->n_tokens - 1;
    TreeShape shape = source->shape;
    source->pass_source = DRAFT_NONE;
    source->pass_draft_steps = -1;
    source->pass_no_room = draft_source_may_draft(source) && slots_free < draft_source_slots_needed(source);
    float min_chance = 0.0f;   // set once a draft drafts (its pass_min_chance, the suffix draft's pass_suffix_min_chance)
    if (draft_source_may_draft(source) && !source->pass_no_room) {
        int n_slots_used = 0;
        int ids[MAX_SPEC_K];
        float log_probs[MAX_SPEC_K];
        int use_eagle = source->kind == DRAFT_EAGLE;
        if (source->kind == DRAFT_SUFFIX || source->kind == DRAFT_HYBRID) {
            source->pass_prediction = shape.nodes > 1 ? propose_suffix(source, sequence, pool, shape, NULL) : 0.0f;
            source->pass_source = shape.nodes > 1 ? DRAFT_SUFFIX : DRAFT_NONE;
            // (a probe the suffix draft's chooser is due is drafted whenever the suffix draft has a guess: it is
            // a single node, and left to the comparison it lost to the EAGLE draft's average at every pass, the
            // chooser kept asking for it, and the hybrid, training in the gaps, drafted nothing for the last 56
            // of 100 requests)
            int suffix_probe = source->adaptive && source->pass_prediction > 0 &&
                               source->suffix_adaptive_state.passes_since_drafted >= ADAPTIVE_PROBE_EVERY;
            int suffix_nodes = 1 + (pool->n < shape.nodes - 1 ? pool->n : shape.nodes - 1);
            if (source->pass_suffix_min_chance > 0 && pool->n > 0) {   // its nodes that pay for themselves
                source->pass_prediction = suffix_kept_expectation(pool, source->pass_suffix_min_chance, &suffix_nodes);
                suffix_nodes++;
                min_chance = source->pass_suffix_min_chance;
            }
            if (source->kind == DRAFT_HYBRID && !suffix_probe &&
                !hybrid_prefers_suffix(source, source->pass_prediction, suffix_nodes, eagle_pending(source, sequence))) {
                // the EAGLE draft, in the shape its own measurements chose (or, if that is none, the root alone)
                pool->n = 0;
                source->pass_source = DRAFT_NONE;
                min_chance = 0.0f;
                shape = source->shape = source->eagle_shape;
                use_eagle = 1;
            }
        }
        // the EAGLE draft drafts unless its shape is the root alone, and only then catches up (over every token
        // since it last drafted: a pass that drafts nothing costs it nothing)
        if (use_eagle && shape.nodes <= 1) { use_eagle = 0; }
        if (use_eagle) {
            eagle_catch_up(source, sequence);
            source->pass_source = DRAFT_EAGLE;
            min_chance = source->pass_min_chance;
        }
        if (source->kind == DRAFT_LOOKUP) {
            propose_lookup(source, sequence, pool, shape.depth);
        } else if (source->kind == DRAFT_NONE || (!use_eagle && source->kind != DRAFT_SELF)) {
            // the root alone (plain decoding), or the suffix tree already in the pool
        } else {
            // depth 1: the root's children
            if (use_eagle) {
                int k = top_k_log_probs(ids, log_probs, source->root_logits, source->draft->config.vocab_size, shape.k);
                pool_add_children(pool, -1, ids, log_probs, k, source->draft->d2t);
                if (source->pass_min_chance > 0) { pool_set_chances(pool, 0, &source->adaptive_state); }
            } else { // DRAFT_SELF: run the root through the target (slot n_committed, as the verify pass will)
                target_forward(target, &root_token, &root_position, NULL, 1, sequence->n_committed, 1);
                n_slots_used = 1;
                source->pass_draft_steps = 1;
                int k = top_k_log_probs(ids, log_probs, target->host.logits, target->config.vocab_size, shape.k);
                pool_add_children(pool, -1, ids, log_probs, k, NULL);
            }
            // depths 2..D: expand the K best of the newest depth (of those whose chance pays for a node)
            if (use_eagle) { source->pass_draft_steps = 0; }
            for (int depth = 1; depth < shape.depth; depth++) {
                int batch[MAX_SPEC_K];
                int n_batch = pool_best_at_depth(pool, depth, shape.k, min_chance, batch);
                if (n_batch == 0) { break; }
                expand_candidates(source, target, sequence, pool, batch, n_batch, &n_slots_used);
                source->pass_draft_steps++;
            }
        }
    }
    int node_of_candidate[MAX_CANDIDATES];
    pool_to_tree(tree, pool, root_token, root_position, shape.nodes, min_chance, node_of_candidate);
    source->n_left_out = pool_left_out(pool, node_of_candidate, min_chance, source->left_out);
    Error err;
    if (tree_derive(tree, &err) != 0) { // the builder's own output: a failure is a program bug
        fprintf(stderr, "error: internal: drafted tree is invalid: %s\n", err.message);
        exit(EXIT_FAILURE);
    }
    if (source->hindsight && (source->adaptive || source->kind != DRAFT_LOOKUP)) { hindsight_propose(source, sequence, pool); }
}

// ----------------------------------------------------------------------------
// per pass: the shape, and what adaptive shapes and the hybrid learn from the outcome

// How fast the hybrid's estimate of the EAGLE draft follows its passes, and fades while the suffix draft drafts.
static const double HYBRID_SMOOTHING = 0.1, HYBRID_DRIFT = 0.002;

void draft_source_plan_pass(DraftSource* source, const Sequence* sequence) {
    // the pass's timing starts here (catch-up and hot swap, which are not charged to drafting)
    source->pass_catch_up_seconds = 0;
    source->pass_catch_up_tokens = 0;
    source->pass_swap_seconds = 0;
    source->pass_draft_steps = -1;   // (draft_source_propose counts them)
    source->pass_no_room = 0;
    int pending = eagle_pending(source, sequence);
    if (source->n_hindsight > 0) { hindsight_judge(source, sequence); }
    if (!source->adaptive) {
        source->shape = source->eagle_shape = source->limit;
    } else if (source->kind == DRAFT_HYBRID) {
        // each of the hybrid's drafts in the shape its own measurements choose: the suffix draft's long
        // matches would otherwise choose deep trees for the EAGLE draft too, which its acceptance does not pay
        source->shape = source->suffix_shape = spec_adaptive_choose(&source->suffix_adaptive_state, 0);
        source->eagle_shape = spec_adaptive_choose(&source->adaptive_state, pending);
    } else {
        source->shape = spec_adaptive_choose(&source->adaptive_state, pending);
    }
    // the EAGLE draft's nodes must pay for themselves by their calibrated chance (adaptive.c), and so must
    // the suffix tree's, except on a pass that explores
    source->pass_min_chance = source->pass_suffix_min_chance = 0.0f;
    source->n_left_out = 0;
    TreeShape eagle = source->kind == DRAFT_HYBRID ? source->eagle_shape : source->shape;
    if (source->adaptive && source->adaptive_state.calibrates && eagle.nodes > 1 &&
        !spec_adaptive_explores(&source->adaptive_state)) {
        source->pass_min_chance = (float)spec_adaptive_min_chance(&source->adaptive_state, eagle, pending);
    }
    SpecAdaptive* suffix = source->kind == DRAFT_HYBRID ? &source->suffix_adaptive_state : &source->adaptive_state;
    if (source->adaptive && (source->kind == DRAFT_SUFFIX || source->kind == DRAFT_HYBRID) && source->shape.nodes > 1 &&
        !spec_adaptive_explores(suffix)) {
        source->pass_suffix_min_chance = (float)spec_adaptive_min_chance(suffix, source->shape, 0);
    }
}

void draft_source_observe_pass(DraftSource* source, const Tree* tree, const Acceptance* acceptance,
                               double draft_seconds, double verify_seconds, SpecStats* stats) {
    // the shape of the tree verified: its most children of one node and its depth (a pass planned K=4 whose
    // confidence cut left a chain of 2 counts as K=1 D=2; a suffix tree, not K-ary, by its widest node)
    int k = 1;
    for (int i = 0; i < tree->n_nodes; i++) { if (tree->n_children[i] > k) { k = tree->n_children[i]; } }
    stats->passes_by_shape[k < ADAPTIVE_MAX_K ? k : ADAPTIVE_MAX_K][tree->max_depth]++;
    if (source->kind == DRAFT_HYBRID && source->pass_source == DRAFT_SUFFIX) { stats->passes_suffix++; }
    stats->left_out += source->n_left_out;
    // drafting's cost: the drafting itself, and the catch-up by its token count (charged by what is pending: adaptive.c)
    if (source->adaptive) {
        // the verify pass is the target's price, measured whichever draft drafted it (the hybrid's choosers
        // share it); the rest, in the hybrid, teaches the draft that drafted the pass (a pass neither drafted
        // teaches both)
        // (a hot swap in the pass is not drafting's cost: it comes with a publish, not with a depth drafted; a
        // 16 ms swap charged to one 6-deep suffix tree once made the hybrid's drafting look 25% of a decode step
        // dearer for a hundred passes, and it stopped drafting)
        double drafting = draft_seconds - source->pass_catch_up_seconds - source->pass_swap_seconds;
        if (drafting < 0) { drafting = 0; }
        // a pass that could not draft for want of cache slots planned nothing: no rank was missed
        TreeShape planned = source->pass_no_room ? (TreeShape){1, 0, 1} : source->shape;
        PassTiming timing = verify_costs_observe(source->adaptive_state.costs, tree->n_nodes, verify_seconds);
        if (source->kind != DRAFT_HYBRID || source->pass_source != DRAFT_SUFFIX) {
            spec_adaptive_learn(&source->adaptive_state, timing, planned, tree, acceptance, drafting, source->pass_draft_steps,
                                source->pass_catch_up_seconds, source->pass_catch_up_tokens);
        }
        // (the left-out nodes are counted where the pass's tree is: a suffix draft alone judges its largest
        // tree in hindsight instead)
        if (source->kind == DRAFT_HYBRID && source->pass_source != DRAFT_EAGLE) {
            spec_adaptive_learn(&source->suffix_adaptive_state, timing, planned, tree, acceptance, drafting, -1, 0.0, 0);
        } else if (source->kind == DRAFT_HYBRID && source->suffix_shape.nodes == 1) {
            // a pass the EAGLE draft drafted while the suffix draft's chooser planned none: for that chooser one
            // more pass without drafting, so that its probe comes due (counted only where it learns, a suffix
            // chooser that once chose none was never asked again while the EAGLE draft drafted)
            source->suffix_adaptive_state.passes_since_drafted++;
        }
        if (source->pass_source == DRAFT_EAGLE) {
            observe_left_out(&source->adaptive_state, planned, source->left_out, source->n_left_out, acceptance);
        } else if (source->kind == DRAFT_HYBRID && source->pass_source == DRAFT_SUFFIX) {
            observe_left_out(&source->suffix_adaptive_state, planned, source->left_out, source->n_left_out, acceptance);
        }
    }
    // the EAGLE draft's estimate learns from the passes it drafted, and fades back towards its prior while
    // the suffix draft drafts (so an EAGLE draft that improves as it trains is tried again); the suffix
    // draft's calibration learns in hindsight at every pass
    if (source->kind == DRAFT_HYBRID) {
        if (source->pass_source == DRAFT_SUFFIX) {
            source->eagle_accepted += HYBRID_DRIFT * (1.0 - source->eagle_accepted);
        } else if (source->pass_source == DRAFT_EAGLE) {
            source->eagle_accepted = (1.0 - HYBRID_SMOOTHING) * source->eagle_accepted + HYBRID_SMOOTHING * acceptance->n_accepted;
        }
    }
}
