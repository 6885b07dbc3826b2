/*
suffix.c: the suffix draft, a model-free online learner (after SuffixDecoding, Oliveira et al. 2024). It
indexes token sequences as they are served (every output so far in a global index, the current request's
prompt and output in a per-request one) and proposes a tree of the continuations that followed the
longest match of the sequence's latest tokens, most frequent first. It learns instantly (one served
request is enough to repeat itself) and costs almost nothing to run: the baseline a learned draft must beat.

The index is a suffix trie bounded in depth: every substring of the indexed text of at most max_depth
tokens is a path from the root, and each node counts the occurrences of its path. So a node's children,
weighted by their counts, are the empirical distribution of the token that follows its path.

    text "a b a c" (max_depth 3)       root
                                       ├─ a (2) ─┬─ b (1) ── a (1)
                                       │         └─ c (1)
                                       ├─ b (1) ── a (1) ── c (1)
                                       └─ c (1)

Edges live in one open-addressing table keyed by (parent, token), so appending a token costs one lookup
per suffix still shorter than max_depth (a cursor keeps the nodes of the suffixes ending at the last token).
A node bound (max_nodes) caps the memory: past it, paths that would need new nodes stop growing (counted),
or, for the index of everything served (suffix_index_add_window), the oldest texts are forgotten first:
their occurrences removed, and the nodes left with none freed for reuse (SuffixDecoding's global tree keeps a
window of recent requests likewise), so the draft keeps learning from a traffic that moves on.
*/
#include "aurora.h"

static uint64_t suffix_edge_key(int parent, int token) { return ((uint64_t)(uint32_t)parent << 32) | (uint32_t)token; }

static size_t suffix_hash(uint64_t key, size_t capacity) {
    key ^= key >> 33; key *= 0xff51afd7ed558ccdULL; key ^= key >> 33; // a 64-bit mix (murmur3's finaliser)
    return (size_t)key & (capacity - 1);
}

void suffix_index_init(SuffixIndex* index, int max_depth, int max_nodes) {
    memset(index, 0, sizeof(*index));
    if (max_depth < 2 || max_depth > SUFFIX_MAX_DEPTH) {
        fprintf(stderr, "error: internal: suffix index depth %d, expected 2..%d\n", max_depth, SUFFIX_MAX_DEPTH);
        exit(EXIT_FAILURE); // callers pass constants: a program bug
    }
    index->max_depth = max_depth;
    index->max_nodes = max_nodes;
    index->capacity = 1024;
    index->nodes = mallocCheck((size_t)index->capacity * sizeof(SuffixNode));
    index->nodes[0] = (SuffixNode){-1, 0, 0, -1, -1};
    index->n_nodes = index->n_slots = 1;
    index->free_slot = -1;
    index->edge_capacity = 2048;
    index->edge_keys = mallocCheck(index->edge_capacity * sizeof(uint64_t));
    index->edge_children = mallocCheck(index->edge_capacity * sizeof(int));
    for (size_t i = 0; i < index->edge_capacity; i++) { index->edge_children[i] = -1; }
    index->cursor = mallocCheck((size_t)(max_depth + 1) * sizeof(int));
    index->n_cursor = 0;
}

void suffix_index_free(SuffixIndex* index) {
    for (int i = 0; i < index->window_count; i++) { free(index->window_texts[(index->window_first + i) % index->window_capacity]); }
    free(index->window_texts);
    free(index->window_lengths);
    free(index->nodes);
    free(index->edge_keys);
    free(index->edge_children);
    free(index->cursor);
    memset(index, 0, sizeof(*index));
}

// The child of parent along token, or -1.
int suffix_child(const SuffixIndex* index, int parent, int token) {
    uint64_t key = suffix_edge_key(parent, token);
    for (size_t i = suffix_hash(key, index->edge_capacity); ; i = (i + 1) & (index->edge_capacity - 1)) {
        if (index->edge_children[i] < 0) { return -1; }
        if (index->edge_keys[i] == key) { return index->edge_children[i]; }
    }
}

static void suffix_edges_insert(SuffixIndex* index, uint64_t key, int child) {
    size_t i = suffix_hash(key, index->edge_capacity);
    while (index->edge_children[i] >= 0) { i = (i + 1) & (index->edge_capacity - 1); }
    index->edge_keys[i] = key;
    index->edge_children[i] = child;
}

// The child of parent along token, made (count 0) when absent; -1 when the node bound is reached.
static int suffix_child_or_new(SuffixIndex* index, int parent, int token) {
    int child = suffix_child(index, parent, token);
    if (child >= 0) { return child; }
    if (index->max_nodes > 0 && index->n_nodes >= index->max_nodes) { index->refused++; return -1; }
    if (index->free_slot < 0 && index->n_slots == index->capacity) {
        index->capacity *= 2;
        SuffixNode* grown = mallocCheck((size_t)index->capacity * sizeof(SuffixNode));
        memcpy(grown, index->nodes, (size_t)index->n_slots * sizeof(SuffixNode));
        free(index->nodes);
        index->nodes = grown;
    }
    if (2 * (index->n_edges + 1) > index->edge_capacity) { // keep the table at most half full
        size_t old_capacity = index->edge_capacity;
        uint64_t* old_keys = index->edge_keys;
        int* old_children = index->edge_children;
        index->edge_capacity *= 2;
        index->edge_keys = mallocCheck(index->edge_capacity * sizeof(uint64_t));
        index->edge_children = mallocCheck(index->edge_capacity * sizeof(int));
        for (size_t i = 0; i < index->edge_capacity; i++) { index->edge_children[i] = -1; }
        for (size_t i = 0; i < old_capacity; i++) {
            if (old_children[i] >= 0) { suffix_edges_insert(index, old_keys[i], old_children[i]); }
        }
        free(old_keys);
        free(old_children);
    }
    if (index->free_slot >= 0) {   // a forgotten node's slot
        child = index->free_slot;
        index->free_slot = index->nodes[child].next_sibling;
    } else {
        child = index->n_slots++;
    }
    index->n_nodes++;
    SuffixNode* parent_node = &index->nodes[parent];
    index->nodes[child] = (SuffixNode){token, 0, parent_node->depth + 1, -1, parent_node->first_child};
    parent_node->first_child = child;
    suffix_edges_insert(index, suffix_edge_key(parent, token), child);
    index->n_edges++;
    return child;
}

void suffix_index_begin(SuffixIndex* index) { index->n_cursor = 0; }

// One more occurrence of a node's path. A count covers the texts in the index: one request's, or the
// window of served outputs (suffix_index_add_window), at most max_nodes tokens, so it stays far below
// INT_MAX; the saturation is a guard, not a path any index reaches.
static void suffix_count(SuffixNode* node) {
    if (node->count < INT_MAX) { node->count++; }
}

// Appends one token to the text being indexed: every suffix ending at it (at most max_depth tokens)
// gains one occurrence. The cursor holds the nodes of the suffixes ending at the previous token.
void suffix_index_append(SuffixIndex* index, int token) {
    int next[SUFFIX_MAX_DEPTH]; // the new cursor: at most max_depth nodes
    int n_next = 0;
    int child = suffix_child_or_new(index, 0, token); // the suffix of length 1
    if (child >= 0) { suffix_count(&index->nodes[child]); next[n_next++] = child; }
    for (int i = 0; i < index->n_cursor; i++) {
        int node = index->cursor[i];
        if (index->nodes[node].depth >= index->max_depth) { continue; }
        child = suffix_child_or_new(index, node, token);
        if (child >= 0) { suffix_count(&index->nodes[child]); next[n_next++] = child; }
    }
    suffix_count(&index->nodes[0]);
    memcpy(index->cursor, next, (size_t)n_next * sizeof(int));
    index->n_cursor = n_next;
}

void suffix_index_add(SuffixIndex* index, const int* tokens, int n) {
    suffix_index_begin(index);
    for (int i = 0; i < n; i++) { suffix_index_append(index, tokens[i]); }
    suffix_index_begin(index);
}

// Removes the edge (parent, token) from the open-addressing table, shifting back the entries after it that
// would no longer be found (linear probing's deletion: no tombstones, so lookups stay as short as inserts left them).
static void suffix_edges_delete(SuffixIndex* index, int parent, int token) {
    uint64_t key = suffix_edge_key(parent, token);
    size_t mask = index->edge_capacity - 1, i = suffix_hash(key, index->edge_capacity);
    while (index->edge_keys[i] != key || index->edge_children[i] < 0) { i = (i + 1) & mask; }   // (present: the caller's)
    for (size_t j = (i + 1) & mask; index->edge_children[j] >= 0; j = (j + 1) & mask) {
        size_t home = suffix_hash(index->edge_keys[j], index->edge_capacity);
        // entry j stays if its home lies cyclically in (i, j]: a lookup from there reaches j without passing i
        int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays) { continue; }
        index->edge_keys[i] = index->edge_keys[j];
        index->edge_children[i] = index->edge_children[j];
        i = j;
    }
    index->edge_children[i] = -1;
    index->n_edges--;
}

// Frees a node whose count came to 0 (its children, counting only occurrences of its path, are already gone):
// out of its parent's list and the edge table, its slot onto the free list.
static void suffix_node_release(SuffixIndex* index, int node, int parent) {
    SuffixNode* n = &index->nodes[node];
    int* link = &index->nodes[parent].first_child;
    while (*link != node) { link = &index->nodes[*link].next_sibling; }
    *link = n->next_sibling;
    suffix_edges_delete(index, parent, n->token);
    *n = (SuffixNode){-1, 0, 0, -1, index->free_slot};
    index->free_slot = node;
    index->n_nodes--;
}

void suffix_index_remove(SuffixIndex* index, const int* tokens, int n) {
    int path[SUFFIX_MAX_DEPTH + 1];
    for (int start = 0; start < n; start++) {
        // the occurrences starting here, one a length: decremented deepest first, so that a node whose count
        // comes to 0 has none left below it
        int length = 0;
        path[0] = 0;
        while (length < index->max_depth && start + length < n) {
            int child = suffix_child(index, path[length], tokens[start + length]);
            if (child < 0) {   // (only a text the bound cut, which the contract excludes)
                fprintf(stderr, "error: internal: suffix_index_remove: a text that was not indexed whole\n");
                exit(EXIT_FAILURE);
            }
            path[++length] = child;
        }
        for (int d = length; d >= 1; d--) {
            SuffixNode* node = &index->nodes[path[d]];
            if (node->count == INT_MAX) { continue; }   // (saturated: suffix_count; it stays)
            if (--node->count == 0) { suffix_node_release(index, path[d], path[d - 1]); }
        }
    }
    index->nodes[0].count -= index->nodes[0].count < INT_MAX ? n : 0;
    index->n_cursor = 0;
}

void suffix_index_add_window(SuffixIndex* index, const int* tokens, int n) {
    if (n <= 0) { return; }
    if (index->max_nodes > 0) {
        int longest = (index->max_nodes - 1) / index->max_depth;   // a text that surely fits an empty index
        if (n > longest) { tokens += n - longest; n = longest; }
        while (index->window_count > 0 && ((int64_t)index->n_nodes + (int64_t)n * index->max_depth > index->max_nodes ||
                                           index->window_tokens + n > index->max_nodes)) {
            int oldest = index->window_first;
            suffix_index_remove(index, index->window_texts[oldest], index->window_lengths[oldest]);
            free(index->window_texts[oldest]);
            index->window_tokens -= index->window_lengths[oldest];
            index->window_first = (oldest + 1) % index->window_capacity;
            index->window_count--;
            index->forgotten++;
        }
    }
    if (n <= 0) { return; }
    if (index->window_count == index->window_capacity) {   // the ring grows, its oldest first
        int capacity = index->window_capacity ? 2 * index->window_capacity : 64;
        int** texts = mallocCheck((size_t)capacity * sizeof(int*));
        int* lengths = mallocCheck((size_t)capacity * sizeof(int));
        for (int i = 0; i < index->window_count; i++) {
            int from = (index->window_first + i) % index->window_capacity;
            texts[i] = index->window_texts[from];
            lengths[i] = index->window_lengths[from];
        }
        free(index->window_texts);
        free(index->window_lengths);
        index->window_texts = texts;
        index->window_lengths = lengths;
        index->window_first = 0;
        index->window_capacity = capacity;
    }
    int at = (index->window_first + index->window_count) % index->window_capacity;
    index->window_texts[at] = mallocCheck((size_t)n * sizeof(int));
    memcpy(index->window_texts[at], tokens, (size_t)n * sizeof(int));
    index->window_lengths[at] = n;
    index->window_count++;
    index->window_tokens += n;
    suffix_index_add(index, tokens, n);
}

// The deepest node whose path is a suffix of context (n tokens), at most max_match long and with at
// least one continuation; *match_length receives its length (0: the root, nothing matched).
int suffix_match(const SuffixIndex* index, const int* context, int n, int max_match, int* match_length) {
    int longest = n < max_match ? n : max_match;
    if (longest > index->max_depth - 1) { longest = index->max_depth - 1; }
    for (int length = longest; length >= 1; length--) {
        int node = 0;
        for (int i = n - length; i < n && node >= 0; i++) { node = suffix_child(index, node, context[i]); }
        if (node >= 0 && index->nodes[node].first_child >= 0) {
            *match_length = length;
            return node;
        }
    }
    *match_length = 0;
    return 0;
}

typedef struct { int node; int parent_out; int depth; float score; } SuffixCandidate;

// Whether candidate a ranks before b: the higher score, ties to the lower token id.
static int suffix_ranks_before(const SuffixIndex* index, const SuffixCandidate* a, const SuffixCandidate* b) {
    return a->score > b->score || (a->score == b->score && index->nodes[a->node].token < index->nodes[b->node].token);
}

// The children of node `from` onto the frontier, scored base_score + log(count(child) / count(children)):
// only its `keep` best, since no more of one node's children can be chosen. So the frontier stays small
// however many continuations a node has seen (a common token in the global index has thousands, newest
// first in its list: a frontier filled in list order once dropped the oldest, often the most frequent).
static void suffix_push_children(const SuffixIndex* index, int from, int parent_out, float base_score, int base_depth,
                                 int keep, SuffixCandidate* frontier, int* n_frontier, int capacity) {
    SuffixCandidate best[TREE_MAX_NODES];   // the best so far, best first
    if (keep > TREE_MAX_NODES) { keep = TREE_MAX_NODES; }
    if (keep > capacity - *n_frontier) { keep = capacity - *n_frontier; }
    float total = 0.0f;
    for (int c = index->nodes[from].first_child; c >= 0; c = index->nodes[c].next_sibling) { total += (float)index->nodes[c].count; }
    int n = 0;
    for (int c = index->nodes[from].first_child; c >= 0 && keep > 0; c = index->nodes[c].next_sibling) {
        SuffixCandidate candidate = {c, parent_out, base_depth + 1, base_score + logf((float)index->nodes[c].count / total)};
        if (n == keep && !suffix_ranks_before(index, &candidate, &best[n - 1])) { continue; }
        int i = n < keep ? n++ : keep - 1;   // its place, the worst dropped when full
        for (; i > 0 && suffix_ranks_before(index, &candidate, &best[i - 1]); i--) { best[i] = best[i - 1]; }
        best[i] = candidate;
    }
    for (int i = 0; i < n; i++) { frontier[(*n_frontier)++] = best[i]; }
}

// Proposes up to max_nodes continuations of node, at most max_depth deep, best first: a candidate's score
// is the log of its empirical probability given the match (the product of count(child) / count(children
// of the parent) along its path), and the max_nodes best-scoring candidates are taken (scores only fall
// along a path, so every chosen node's parent is chosen too). Writes tokens, parents (-1: a child of the
// match, else an index into the output) and scores; returns the count. Ties go to the lower token id.
int suffix_propose(const SuffixIndex* index, int node, int max_nodes, int max_depth, int* tokens, int* parents,
                   float* scores) {
    enum { FRONTIER_MAX = TREE_MAX_NODES * TREE_MAX_NODES };   // each push adds at most the nodes still to choose
    SuffixCandidate frontier[FRONTIER_MAX];
    int n_frontier = 0, n_out = 0;
    if (max_depth < 1) { return 0; }
    suffix_push_children(index, node, -1, 0.0f, 0, max_nodes, frontier, &n_frontier, FRONTIER_MAX);
    while (n_out < max_nodes && n_frontier > 0) {
        int best = 0;
        for (int i = 1; i < n_frontier; i++) {
            if (suffix_ranks_before(index, &frontier[i], &frontier[best])) { best = i; }
        }
        SuffixCandidate chosen = frontier[best];
        frontier[best] = frontier[--n_frontier];
        tokens[n_out] = index->nodes[chosen.node].token;
        parents[n_out] = chosen.parent_out;
        scores[n_out] = chosen.score;
        int out_index = n_out++;
        if (chosen.depth < max_depth) {
            suffix_push_children(index, chosen.node, out_index, chosen.score, chosen.depth, max_nodes - n_out, frontier,
                                 &n_frontier, FRONTIER_MAX);
        }
    }
    return n_out;
}
