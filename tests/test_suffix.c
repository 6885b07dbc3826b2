/*
test_suffix.c: the suffix draft's index and proposals against a brute-force search over the same history.
  - every path's count equals the number of occurrences of that substring in the indexed texts
  - the match is the longest suffix of the context that occurs in the history followed by a token
  - the proposal is the best-first set of continuations by empirical probability, each computed by
    counting continuations in the raw history
  - the node bound holds, and what was indexed before it still answers
  - a node with thousands of continuations still proposes its most frequent first
  - forgetting a text leaves what indexing the others alone makes, and a window of the newest texts stays
    within its node bound without refusing any
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"

enum { MAX_TEXTS = 8, MAX_TEXT = 200 };

typedef struct {
    int n_texts;
    int lengths[MAX_TEXTS];
    int tokens[MAX_TEXTS][MAX_TEXT];
} History;

// Occurrences of pattern (m tokens) in the history as a substring; with followed, only those that have
// a next token, and then counts[next] receives how often each token follows.
static int brute_occurrences(const History* h, const int* pattern, int m, int followed, int* counts, int vocab) {
    int total = 0;
    if (counts) { memset(counts, 0, (size_t)vocab * sizeof(int)); }
    for (int t = 0; t < h->n_texts; t++) {
        for (int start = 0; start + m <= h->lengths[t]; start++) {
            if (m > 0 && memcmp(&h->tokens[t][start], pattern, (size_t)m * sizeof(int)) != 0) { continue; }
            if (followed && start + m >= h->lengths[t]) { continue; }
            total++;
            if (counts) { counts[h->tokens[t][start + m]]++; }
        }
    }
    return total;
}

static void random_history(History* h, uint64_t* rng, int vocab) {
    h->n_texts = 1 + (int)(random_u32(rng) % MAX_TEXTS);
    for (int t = 0; t < h->n_texts; t++) {
        h->lengths[t] = 1 + (int)(random_u32(rng) % MAX_TEXT);
        // repetitive text (a small vocabulary, repeated phrases) so that long matches exist
        for (int i = 0; i < h->lengths[t]; i++) {
            h->tokens[t][i] = i >= 8 && random_u32(rng) % 3 != 0 ? h->tokens[t][i - 8] : (int)(random_u32(rng) % vocab);
        }
    }
}

// Every path of the trie: its count is the substring's occurrence count (depth-first walk).
static void check_counts(const SuffixIndex* index, const History* h, int node, int* path, int depth, int* checked) {
    if (node != 0) {
        int occurrences = brute_occurrences(h, path, depth, 0, NULL, 0);
        if (index->nodes[node].count != occurrences) {
            check(0, "path of length %d: count %d, brute force %d", depth, index->nodes[node].count, occurrences);
        }
        (*checked)++;
    }
    for (int c = index->nodes[node].first_child; c >= 0; c = index->nodes[c].next_sibling) {
        path[depth] = index->nodes[c].token;
        check_counts(index, h, c, path, depth + 1, checked);
    }
}

static void test_against_brute_force(void) {
    uint64_t rng = random_seed_state(11);
    int vocab = 6, depth = 6;
    int matches_checked = 0, proposals_checked = 0;
    for (int trial = 0; trial < 40; trial++) {
        History h;
        random_history(&h, &rng, vocab);
        SuffixIndex index;
        suffix_index_init(&index, depth, 0);
        for (int t = 0; t < h.n_texts; t++) { suffix_index_add(&index, h.tokens[t], h.lengths[t]); }
        int total_tokens = 0;
        for (int t = 0; t < h.n_texts; t++) { total_tokens += h.lengths[t]; }
        check(index.nodes[0].count == total_tokens, "the root counts every token (%d vs %d)", index.nodes[0].count, total_tokens);
        // every substring of length <= depth is a path, with its count
        int path[SUFFIX_MAX_DEPTH], checked = 0;
        check_counts(&index, &h, 0, path, 0, &checked);
        int distinct = 0;   // distinct substrings of length 1..depth, brute force
        for (int m = 1; m <= depth; m++) {
            for (int t = 0; t < h.n_texts; t++) {
                for (int s = 0; s + m <= h.lengths[t]; s++) {
                    int first = 1; // is this the first occurrence?
                    for (int t2 = 0; t2 <= t && first; t2++) {
                        for (int s2 = 0; s2 + m <= h.lengths[t2] && (t2 < t || s2 < s); s2++) {
                            if (memcmp(&h.tokens[t2][s2], &h.tokens[t][s], (size_t)m * sizeof(int)) == 0) { first = 0; break; }
                        }
                    }
                    distinct += first;
                }
            }
        }
        check(checked == distinct && index.n_nodes == distinct + 1, "the trie has %d paths, brute force %d distinct substrings",
              checked, distinct);

        // matches and proposals for random contexts
        for (int q = 0; q < 30; q++) {
            int context[12], n = 1 + (int)(random_u32(&rng) % 12);
            for (int i = 0; i < n; i++) { context[i] = (int)(random_u32(&rng) % vocab); }
            if (q % 2 == 0) { // half the contexts end with a piece of the history
                int t = (int)(random_u32(&rng) % h.n_texts);
                int m = n < h.lengths[t] ? n : h.lengths[t];
                int s = (int)(random_u32(&rng) % (h.lengths[t] - m + 1));
                memcpy(context + n - m, &h.tokens[t][s], (size_t)m * sizeof(int));
            }
            int max_match = 4, length;
            int node = suffix_match(&index, context, n, max_match, &length);
            // brute force: the longest suffix (<= max_match, <= depth - 1) followed somewhere by a token
            int expected = 0;
            for (int m = (n < max_match ? n : max_match); m >= 1; m--) {
                if (m > depth - 1) { continue; }
                if (brute_occurrences(&h, context + n - m, m, 1, NULL, 0) > 0) { expected = m; break; }
            }
            check(length == expected, "match length %d, brute force %d", length, expected);
            matches_checked++;
            if (length == 0) { continue; }
            // the proposal: best first by empirical probability, computed from raw continuation counts
            int tokens[16], parents[16];
            float scores[16];
            int max_nodes = 1 + (int)(random_u32(&rng) % 12), max_depth = depth - length;
            int got = suffix_propose(&index, node, max_nodes, max_depth, tokens, parents, scores);
            check(got >= 1 && got <= max_nodes, "proposal size %d (max %d)", got, max_nodes);
            for (int i = 0; i < got; i++) {
                // the node's path from the match: its ancestors' tokens, then its own
                int chain[SUFFIX_MAX_DEPTH], d = 0;
                for (int j = i; j >= 0; j = parents[j]) { chain[d++] = tokens[j]; check(parents[j] < j, "parents come first"); }
                int pattern[SUFFIX_MAX_DEPTH];
                memcpy(pattern, context + n - length, (size_t)length * sizeof(int));
                for (int k = 0; k < d; k++) { pattern[length + k] = chain[d - 1 - k]; }
                // probability of the continuation = product over its steps of count(next) / count(followed)
                double probability = 1.0;
                for (int k = 0; k < d; k++) {
                    int counts[8];
                    int followed = brute_occurrences(&h, pattern, length + k, 1, counts, vocab);
                    probability *= followed > 0 ? (double)counts[pattern[length + k]] / followed : 0.0;
                }
                check(fabs(exp(scores[i]) - probability) < 1e-5, "node %d: probability %.6f, brute force %.6f", i,
                      exp(scores[i]), probability);
                check(d <= max_depth, "node %d deeper (%d) than allowed (%d)", i, d, max_depth);
                if (i > 0) { check(scores[i] <= scores[i - 1] + 1e-6f, "best first: scores must not rise"); }
            }
            // nothing left out scores above the worst chosen node (best-first optimality), brute force over
            // every continuation of the match of length <= max_depth
            if (got == max_nodes) {
                float worst = scores[got - 1];
                int counts[8];
                int followed = brute_occurrences(&h, context + n - length, length, 1, counts, vocab);
                for (int v = 0; v < vocab; v++) { // depth-1 candidates not chosen must not beat the worst
                    if (counts[v] == 0) { continue; }
                    int chosen = 0;
                    for (int i = 0; i < got; i++) { chosen |= parents[i] == -1 && tokens[i] == v; }
                    if (!chosen) { check(logf((float)counts[v] / followed) <= worst + 1e-6f, "a better first-level continuation was left out"); }
                }
            }
            proposals_checked++;
        }
        suffix_index_free(&index);
    }
    printf("suffix index: 40 histories, %d matches and %d proposals against brute force\n", matches_checked, proposals_checked);
}

// Occurrences of pattern (length L) inside text (n tokens), by brute force.
static int brute_count(const int* text, int n, const int* pattern, int L) {
    int count = 0;
    for (int i = 0; i + L <= n; i++) { count += memcmp(text + i, pattern, (size_t)L * sizeof(int)) == 0; }
    return count;
}

static void test_incremental_and_bound(void) {
    // two texts indexed one after the other (token by token: suffix_index_add), against brute force: every
    // substring of at most max_depth tokens has a node counting its occurrences in the two texts (none
    // spanning both), and there is no other node
    enum { N_TEXT = 64, DEPTH = 6 };
    int texts[2][N_TEXT];
    uint64_t rng = random_seed_state(3);
    for (int k = 0; k < 2; k++) { for (int i = 0; i < N_TEXT; i++) { texts[k][i] = (int)(random_u32(&rng) % 5); } }
    SuffixIndex a;
    suffix_index_init(&a, DEPTH, 0);
    suffix_index_add(&a, texts[0], N_TEXT);
    suffix_index_add(&a, texts[1], N_TEXT);
    int wrong = 0, distinct = 0;
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < N_TEXT; i++) {
            int node = 0;
            for (int L = 1; L <= DEPTH && i + L <= N_TEXT; L++) {
                node = node < 0 ? -1 : suffix_child(&a, node, texts[k][i + L - 1]);
                int expected = brute_count(texts[0], N_TEXT, texts[k] + i, L) + brute_count(texts[1], N_TEXT, texts[k] + i, L);
                if (node < 0 || a.nodes[node].count != expected || a.nodes[node].depth != L) { wrong++; continue; }
                // a substring's first occurrence over both texts counts it once among the distinct ones
                int first = brute_count(texts[0], k == 0 ? i + L - 1 : N_TEXT, texts[k] + i, L) == 0 &&
                            (k == 0 || brute_count(texts[1], i + L - 1, texts[k] + i, L) == 0);
                distinct += first;
            }
        }
    }
    check(wrong == 0, "incremental indexing: %d substrings without a node of their brute-force count", wrong);
    check(a.n_nodes == 1 + distinct && a.nodes[0].count == 2 * N_TEXT,
          "incremental indexing: %d nodes (root count %d), expected %d (1 + the distinct substrings; root %d)", a.n_nodes,
          a.nodes[0].count, 1 + distinct, 2 * N_TEXT);
    suffix_index_free(&a);
    int text[64];
    for (int i = 0; i < 64; i++) { text[i] = texts[0][i]; }
    // the node bound: no more than max_nodes, refusals counted, old paths still answer
    SuffixIndex bounded;
    suffix_index_init(&bounded, 8, 50);
    int phrase[4] = {1, 2, 3, 4};
    suffix_index_add(&bounded, phrase, 4);
    suffix_index_add(&bounded, text, 64);
    check(bounded.n_nodes <= 50 && bounded.refused > 0, "bound: %d nodes, %ld refused", bounded.n_nodes, bounded.refused);
    int length;
    int context[3] = {9, 1, 2};
    int node = suffix_match(&bounded, context, 3, 4, &length);
    check(length == 2 && bounded.nodes[suffix_child(&bounded, node, 3)].count >= 1, "indexed before the bound: still matches");
    suffix_index_free(&bounded);
}

// A node with thousands of distinct continuations (a common token in the global index): the most frequent
// comes first however old it is. Its children are listed newest first, and a frontier filled in that order
// up to a fixed size once dropped it.
static void test_many_continuations(void) {
    enum { FREQUENT = 50, RARE = 5000 };
    int* text = malloc((size_t)2 * (FREQUENT + RARE) * sizeof(int));
    int n = 0;
    for (int i = 0; i < FREQUENT; i++) { text[n++] = 1; text[n++] = 7; }           // "1 7" fifty times, first
    for (int i = 0; i < RARE; i++) { text[n++] = 1; text[n++] = 100 + i; }         // then 1 followed by 5,000 others
    SuffixIndex index;
    suffix_index_init(&index, 4, 1 << 16);
    suffix_index_add(&index, text, n);
    int context[1] = {1}, length, tokens[4], parents[4];
    float scores[4];
    int node = suffix_match(&index, context, 1, 1, &length);
    int got = suffix_propose(&index, node, 3, 1, tokens, parents, scores);
    check(length == 1 && got == 3 && tokens[0] == 7, "many continuations: first proposal %d (expected 7, seen %d times of %d)",
          got > 0 ? tokens[0] : -1, FREQUENT, FREQUENT + RARE);
    check(got == 3 && tokens[1] == 100 && tokens[2] == 101, "many continuations: ties go to the lower ids (%d, %d)",
          got == 3 ? tokens[1] : -1, got == 3 ? tokens[2] : -1);
    suffix_index_free(&index);
    free(text);
}

// Counts of a long-lived index stop at INT_MAX instead of overflowing (signed: undefined behaviour; in
// practice a negative count and a NaN score): the root's count set 2 below it, then 3 tokens appended.
static void test_count_saturates(void) {
    SuffixIndex index;
    suffix_index_init(&index, 4, 0);
    int text[3] = {1, 2, 1};
    suffix_index_add(&index, text, 2);
    index.nodes[0].count = INT_MAX - 2;
    int one = suffix_child(&index, 0, 1);
    index.nodes[one].count = INT_MAX;
    suffix_index_add(&index, text + 2, 1);
    suffix_index_add(&index, text, 2);
    check(index.nodes[0].count == INT_MAX && index.nodes[one].count == INT_MAX,
          "suffix counts at the limit: root %d, token 1 %d, expected %d for both", index.nodes[0].count,
          index.nodes[one].count, INT_MAX);
    suffix_index_free(&index);
}

// Whether two indexes hold the same paths with the same counts and depths: every live node of a found by
// its path in b (and by its edge in a's own table: the deletions kept the table's lookups right), the same
// number of nodes and edges, the same root count. Returns the first difference's description, or NULL.
static const char* suffix_index_differs(const SuffixIndex* a, const SuffixIndex* b) {
    static char why[160];
    if (a->n_nodes != b->n_nodes || a->n_edges != b->n_edges || a->nodes[0].count != b->nodes[0].count) {
        snprintf(why, sizeof(why), "%d nodes, %zu edges, root %d against %d, %zu, %d", a->n_nodes, a->n_edges,
                 a->nodes[0].count, b->n_nodes, b->n_edges, b->nodes[0].count);
        return why;
    }
    int stack_a[4096], stack_b[4096], n = 0, visited = 0;
    stack_a[n] = 0; stack_b[n++] = 0;
    while (n > 0) {
        n--;
        int na = stack_a[n], nb = stack_b[n];
        visited++;
        for (int c = a->nodes[na].first_child; c >= 0; c = a->nodes[c].next_sibling) {
            int token = a->nodes[c].token, cb = suffix_child(b, nb, token);
            if (suffix_child(a, na, token) != c) { snprintf(why, sizeof(why), "node %d: its edge is lost", c); return why; }
            if (cb < 0 || a->nodes[c].count != b->nodes[cb].count || a->nodes[c].depth != b->nodes[cb].depth) {
                snprintf(why, sizeof(why), "node %d (token %d, depth %d): count %d, against %d", c, token, a->nodes[c].depth,
                         a->nodes[c].count, cb < 0 ? -1 : b->nodes[cb].count);
                return why;
            }
            if (n == 4096) { return "test bug: stack"; }
            stack_a[n] = c; stack_b[n++] = cb;
        }
    }
    if (visited != a->n_nodes) { snprintf(why, sizeof(why), "%d nodes reachable of %d live", visited, a->n_nodes); return why; }
    return NULL;
}

// Forgetting texts in any order leaves what the others alone make; slots freed are reused by later texts.
static void test_remove(void) {
    enum { TEXTS = 12, DEPTH = 8, VOCAB = 5 };
    uint64_t rng = random_seed_state(77);
    int texts[2 * TEXTS][40], lengths[2 * TEXTS], present[2 * TEXTS] = {0};
    for (int t = 0; t < 2 * TEXTS; t++) {
        lengths[t] = 1 + (int)(random_u32(&rng) % 40);
        for (int i = 0; i < lengths[t]; i++) { texts[t][i] = (int)(random_u32(&rng) % VOCAB); }
    }
    SuffixIndex index;
    suffix_index_init(&index, DEPTH, 0);
    for (int t = 0; t < TEXTS; t++) { suffix_index_add(&index, texts[t], lengths[t]); present[t] = 1; }
    int wrong = 0, steps = 0, most_live = index.n_nodes;
    for (int step = 0; step < 3 * TEXTS; step++) {
        int t = (int)(random_u32(&rng) % (2 * TEXTS));
        if (present[t]) { suffix_index_remove(&index, texts[t], lengths[t]); present[t] = 0; }
        else { suffix_index_add(&index, texts[t], lengths[t]); present[t] = 1; }
        if (index.n_nodes > most_live) { most_live = index.n_nodes; }
        SuffixIndex fresh;
        suffix_index_init(&fresh, DEPTH, 0);
        for (int u = 0; u < 2 * TEXTS; u++) { if (present[u]) { suffix_index_add(&fresh, texts[u], lengths[u]); } }
        const char* why = suffix_index_differs(&index, &fresh);
        if (why != NULL && wrong++ == 0) { fprintf(stderr, "  step %d (text %d %s): %s\n", step, t, present[t] ? "added" : "forgotten", why); }
        steps++;
        suffix_index_free(&fresh);
    }
    check(wrong == 0, "forgetting texts: %d of %d steps differ from an index of the texts still present", wrong, steps);
    // freed slots are taken before new ones: the slots ever used are the most nodes ever live at once
    check(index.n_slots == most_live, "forgetting texts: %d slots used for at most %d live nodes", index.n_slots, most_live);
    // the negative control: the comparison sees a text not forgotten (one that is absent now, added too)
    int absent = -1;
    for (int u = 0; u < 2 * TEXTS && absent < 0; u++) { if (!present[u]) { absent = u; } }
    SuffixIndex all;
    suffix_index_init(&all, DEPTH, 0);
    for (int u = 0; u < 2 * TEXTS; u++) { if (present[u] || u == absent) { suffix_index_add(&all, texts[u], lengths[u]); } }
    check(absent >= 0 && suffix_index_differs(&index, &all) != NULL, "forgetting texts: the comparison missed a text too "
          "many (text %d)", absent);
    suffix_index_free(&all);
    // everything forgotten: the root alone, every slot free
    for (int u = 0; u < 2 * TEXTS; u++) { if (present[u]) { suffix_index_remove(&index, texts[u], lengths[u]); } }
    int free_slots = 0;
    for (int f = index.free_slot; f >= 0; f = index.nodes[f].next_sibling) { free_slots++; }
    check(index.n_nodes == 1 && index.n_edges == 0 && index.nodes[0].count == 0 && index.nodes[0].first_child < 0 &&
          free_slots == index.n_slots - 1, "everything forgotten: %d nodes, %zu edges, root %d, %d of %d slots free",
          index.n_nodes, index.n_edges, index.nodes[0].count, free_slots, index.n_slots - 1);
    suffix_index_free(&index);
}

// A window of the newest texts within a node bound: never a refusal, never past the bound, the oldest forgotten
// first, and the index always what its window's texts alone make.
static void test_window(void) {
    enum { TEXTS = 60, DEPTH = 6, VOCAB = 7, MAX_NODES = 300 };
    uint64_t rng = random_seed_state(5);
    int texts[TEXTS][30], lengths[TEXTS];
    SuffixIndex index;
    suffix_index_init(&index, DEPTH, MAX_NODES);
    int wrong = 0, over = 0, out_of_order = 0;
    for (int t = 0; t < TEXTS; t++) {
        lengths[t] = 1 + (int)(random_u32(&rng) % 30);
        for (int i = 0; i < lengths[t]; i++) { texts[t][i] = (int)(random_u32(&rng) % VOCAB); }
        suffix_index_add_window(&index, texts[t], lengths[t]);
        over += index.n_nodes > MAX_NODES;
        // the window: texts first .. t, in order, as copies
        int first = t - index.window_count + 1;
        SuffixIndex fresh;
        suffix_index_init(&fresh, DEPTH, 0);
        for (int i = 0; i < index.window_count; i++) {
            int at = (index.window_first + i) % index.window_capacity, u = first + i;
            out_of_order += index.window_lengths[at] != lengths[u] ||
                            memcmp(index.window_texts[at], texts[u], (size_t)lengths[u] * sizeof(int)) != 0;
            suffix_index_add(&fresh, texts[u], lengths[u]);
        }
        const char* why = suffix_index_differs(&index, &fresh);
        if (why != NULL && wrong++ == 0) { fprintf(stderr, "  text %d: %s\n", t, why); }
        suffix_index_free(&fresh);
    }
    check(index.refused == 0 && over == 0, "window: %ld nodes refused, %d times past the bound", index.refused, over);
    check(out_of_order == 0, "window: %d texts not the newest in order", out_of_order);
    check(wrong == 0, "window: %d of %d indexes differ from one of their window's texts", wrong, TEXTS);
    check(index.forgotten > 0 && index.window_count < TEXTS, "window: %ld forgotten, %d kept (expected some forgotten)",
          index.forgotten, index.window_count);
    // a text repeated: it makes no nodes, yet the window's copies stay within max_nodes tokens
    int repeated[20];
    for (int i = 0; i < 20; i++) { repeated[i] = i % VOCAB; }
    long most_tokens = 0;
    for (int r = 0; r < 100; r++) {
        suffix_index_add_window(&index, repeated, 20);
        if (index.window_tokens > most_tokens) { most_tokens = index.window_tokens; }
    }
    long held = 0;
    for (int i = 0; i < index.window_count; i++) { held += index.window_lengths[(index.window_first + i) % index.window_capacity]; }
    check(most_tokens <= MAX_NODES && held == index.window_tokens && index.window_count <= MAX_NODES / 20,
          "window: a repeated text: at most %ld tokens held (bound %d), %d texts kept", most_tokens, MAX_NODES,
          index.window_count);
    // a text longer than the bound allows keeps its end
    int long_text[200];
    for (int i = 0; i < 200; i++) { long_text[i] = i % VOCAB; }
    suffix_index_add_window(&index, long_text, 200);
    int last = (index.window_first + index.window_count - 1) % index.window_capacity;
    check(index.refused == 0 && index.window_lengths[last] == (MAX_NODES - 1) / DEPTH &&
          index.window_texts[last][0] == long_text[200 - (MAX_NODES - 1) / DEPTH],
          "window: a long text: %ld refused, kept %d tokens", index.refused, index.window_lengths[last]);
    suffix_index_free(&index);
}

int main(void) {
    test_against_brute_force();
    test_incremental_and_bound();
    test_many_continuations();
    test_count_saturates();
    test_remove();
    test_window();
    return test_summary();
}
