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
A node bound (max_nodes) caps the memory: past it, paths that would need new nodes stop growing (counted).
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
    index->n_nodes = 1;
    index->edge_capacity = 2048;
    index->edge_keys = mallocCheck(index->edge_capacity * sizeof(uint64_t));
    index->edge_children = mallocCheck(index->edge_capacity * sizeof(int));
    for (size_t i = 0; i < index->edge_capacity; i++) { index->edge_children[i] = -1; }
    index->cursor = mallocCheck((size_t)(max_depth + 1) * sizeof(int));
    index->n_cursor = 0;
}

void suffix_index_free(SuffixIndex* index) {
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
    if (index->n_nodes == index->capacity) {
        index->capacity *= 2;
        SuffixNode* grown = mallocCheck((size_t)index->capacity * sizeof(SuffixNode));
        memcpy(grown, index->nodes, (size_t)index->n_nodes * sizeof(SuffixNode));
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
    child = index->n_nodes++;
    SuffixNode* parent_node = &index->nodes[parent];
    index->nodes[child] = (SuffixNode){token, 0, parent_node->depth + 1, -1, parent_node->first_child};
    parent_node->first_child = child;
    suffix_edges_insert(index, suffix_edge_key(parent, token), child);
    index->n_edges++;
    return child;
}

void suffix_index_begin(SuffixIndex* index) { index->n_cursor = 0; }

// One more occurrence of a node's path. The index of everything served lives as long as the server, and
// the root and the frequent first tokens count every token: at INT_MAX they stay there (2^31 tokens, some
// 80 days at 300 tokens a second) rather than overflow.
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
