/*
sampling.c: random numbers and token sampling. Every stochastic function takes its uniform random
numbers as arguments (STYLE.md item 7), drawn from one small seeded generator, so runs repeat bit for bit
and the CPU and GPU paths make the same decisions.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// random numbers: one small seeded generator (xorshift64*). Every stochastic function takes its
// uniforms as arguments, drawn from here, so runs repeat bit for bit and CPU and GPU decide alike.

uint32_t random_u32(uint64_t* state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

float random_f32(uint64_t* state) { // uniform in [0, 1), 24 random bits
    return (random_u32(state) >> 8) / 16777216.0f;
}

// Uniform in [0, 1) with 53 random bits (two draws, as genrand_res53): the coins that sample tokens. 24 bits
// would give a token of probability under 2^-24 (6e-8) either none or 2^-24 of the draws, and a vocabulary of
// 49,152 such tail tokens is in every softmax.
double random_f64(uint64_t* state) {
    uint32_t high = random_u32(state) >> 5, low = random_u32(state) >> 6;   // 27 and 26 bits
    return ((double)high * 67108864.0 + (double)low) / 9007199254740992.0;
}

// A seed of 0 would make xorshift emit zeros forever; mix the seed so every value is usable.
uint64_t random_seed_state(uint64_t seed) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z == 0 ? 0x9E3779B97F4A7C15ull : z;
}

// ----------------------------------------------------------------------------
// sampling: greedy is its own exact path; temperature, top-k, top-p and min-p share one function

// The largest logit; ties go to the lowest id (as llama.cpp's greedy sampler and torch.argmax do). A NaN
// never wins, except at id 0, which stays the answer (nothing compares greater than it): the loop
//     best = 0; for i >= 1: if (logits[i] > logits[best]) best = i;
// (tests/test_ops.c checks this function against it). Written as two passes that vectorise: the largest
// value, kept per lane as `x > m ? x : m` (x86's max instruction computes exactly that, NaN never taken),
// then the first id that equals it (the scalar loop took 1.4% of a replay's samples, 2.8% of serving's
// thread, for a greedy verify pass's rows of 49,152 logits).
enum { ARGMAX_LANES = 16 };
int sample_argmax(const float* logits, int V) {
    if (V <= 0 || isnan(logits[0])) { return 0; }
    float lane_max[ARGMAX_LANES];
    for (int k = 0; k < ARGMAX_LANES; k++) { lane_max[k] = logits[0]; }
    int i = 0;
    for (; i + ARGMAX_LANES <= V; i += ARGMAX_LANES) {
        #pragma omp simd
        for (int k = 0; k < ARGMAX_LANES; k++) {
            float x = logits[i + k];
            lane_max[k] = x > lane_max[k] ? x : lane_max[k];
        }
    }
    float max = logits[0];
    for (int k = 0; k < ARGMAX_LANES; k++) { max = lane_max[k] > max ? lane_max[k] : max; }
    for (; i < V; i++) { max = logits[i] > max ? logits[i] : max; }
    for (i = 0; i < V; i++) { if (logits[i] == max) { return i; } }
    return 0;   // (unreachable: max is one of the logits, and not a NaN)
}

// Samples index i with probability probs[i] / sum(probs) (so an unnormalised residual needs no scaling),
// given a uniform coin in [0, 1). The sums are doubles: in fp32 a running sum near 1 moves in steps of 6e-8,
// every tail probability under half of that was lost (about 1e-4 of the mass over SmolLM2's vocabulary),
// and the coins beyond the short total all fell to the last token. The two loops add the same numbers in
// the same order, so the coin's point, coin * total < total, lies inside some token's interval.
int sample_multinomial(const float* probs, int V, double coin) {
    double total = 0.0;
    for (int i = 0; i < V; i++) { total += probs[i]; }
    double point = coin * total, cumulative = 0.0;
    for (int i = 0; i < V; i++) {
        cumulative += probs[i];
        if (point < cumulative) { return i; }
    }
    // (only when nothing has mass: the last token)
    return V - 1;
}

static int compare_prob_descending(const void* a, const void* b) {
    const ProbIndex* x = a;
    const ProbIndex* y = b;
    if (x->prob > y->prob) { return -1; }
    if (x->prob < y->prob) { return 1; }
    return x->index - y->index; // ties by id, so the order (and the sample) is deterministic
}

// Top-p (nucleus): keeps the smallest set of most probable tokens whose mass reaches top_p (ties by
// id), zeroes the rest and renormalises, in place. scratch: (V).
void apply_top_p(float* probs, int V, float top_p, ProbIndex* scratch) {
    // a token below (1 - top_p) / (V - 1) can never be in the nucleus unless it is the most probable (the
    // nucleus always holds that one, the only case where the bound fails: a near-flat distribution with
    // top_p < 1 / V): skip the others before sorting
    const float cutoff = V > 1 ? (1.0f - top_p) / (V - 1) : 0.0f;
    int best = sample_argmax(probs, V);
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (probs[i] >= cutoff || i == best) { scratch[n].index = i; scratch[n].prob = probs[i]; n++; }
    }
    qsort(scratch, n, sizeof(ProbIndex), compare_prob_descending);
    double kept = 0.0;
    int n_kept = n;
    for (int i = 0; i < n; i++) {
        kept += scratch[i].prob;
        if (kept >= top_p) { n_kept = i + 1; break; }
    }
    for (int i = 0; i < V; i++) { probs[i] = 0.0f; }
    for (int i = 0; i < n_kept; i++) { probs[scratch[i].index] = (float)(scratch[i].prob / kept); }
}

// Whether probability entry a ranks below entry b: less probable, or as probable with a higher id (the order
// every filter keeps its ties in, so that its set, and the sample, is deterministic).
static int ranks_below(ProbIndex a, ProbIndex b) { return a.prob < b.prob || (a.prob == b.prob && a.index > b.index); }

// Keeps the n entries of `kept` (any order) and zeroes every other token, renormalised in place: the kept
// probabilities summed in double in id order, so the result does not depend on the order they were found in.
static void keep_only(float* probs, int V, const ProbIndex* kept, int n) {
    for (int i = 0; i < V; i++) { probs[i] = 0.0f; }
    for (int i = 0; i < n; i++) { probs[kept[i].index] = kept[i].prob; }
    double total = 0.0;
    for (int i = 0; i < V; i++) { total += probs[i]; }
    if (!(total > 0.0)) { return; }   // (nothing had mass: no softmax row, which always gives its argmax some)
    for (int i = 0; i < V; i++) { probs[i] = (float)(probs[i] / total); }
}

// Top-k: keeps the k most probable tokens (ties by id), zeroes the rest and renormalises, in place; k <= 0 or
// k >= V changes nothing. The k best so far sit in a heap (scratch: (V)) whose root is the one that ranks
// lowest, so a row costs V log k steps, not a sort of the vocabulary.
void apply_top_k(float* probs, int V, int k, ProbIndex* scratch) {
    if (k <= 0 || k >= V) { return; }
    int n = 0;
    for (int i = 0; i < V; i++) {
        ProbIndex item = {probs[i], i};
        int at;
        if (n < k) {   // sift up from the new leaf
            at = n++;
            while (at > 0 && ranks_below(item, scratch[(at - 1) / 2])) { scratch[at] = scratch[(at - 1) / 2]; at = (at - 1) / 2; }
        } else {
            if (!ranks_below(scratch[0], item)) { continue; }
            at = 0;   // replace the root, sift down
            for (;;) {
                int child = 2 * at + 1;
                if (child >= n) { break; }
                if (child + 1 < n && ranks_below(scratch[child + 1], scratch[child])) { child++; }
                if (!ranks_below(scratch[child], item)) { break; }
                scratch[at] = scratch[child];
                at = child;
            }
        }
        scratch[at] = item;
    }
    keep_only(probs, V, scratch, n);
}

// Min-p: keeps the tokens at least min_p times as probable as the most probable one (which always stays),
// zeroes the rest and renormalises, in place; min_p <= 0 changes nothing. scratch: (V).
void apply_min_p(float* probs, int V, float min_p, ProbIndex* scratch) {
    if (!(min_p > 0.0f)) { return; }
    int best = sample_argmax(probs, V);
    float threshold = min_p * probs[best];
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (probs[i] >= threshold || i == best) { scratch[n].index = i; scratch[n].prob = probs[i]; n++; }
    }
    keep_only(probs, V, scratch, n);
}

// Turns logits into probabilities at a temperature: probs = softmax(logits / temperature). The largest
// logit comes off before the division, so every quotient is <= 0: at a temperature so small that
// logit / temperature overflows (1e-40 is a valid float), the distribution tends to the argmax (ties
// share) instead of inf - inf = NaN, which sampled the last token every time. Logits that are not finite
// follow the argmax's rules: a NaN is never a candidate (except at id 0, where sample_argmax's definition
// starts, as llama.cpp's greedy sampler's does: a NaN there is the argmax, and takes the whole mass), +inf
// logits share the whole mass (the limit of a logit that grows without bound), and a row with no finite or
// +inf logit at all (every one NaN or -inf) puts it on the argmax's token, as greedy decoding would pick.
// (A NaN or +inf anywhere made the whole row NaN, and sampling then returned the last id every time.)
// Finite rows are unchanged, bit for bit.
void logits_to_probs(float* probs, const float* logits, int V, float temperature) {
    int best = sample_argmax(logits, V);
    float max = logits[best];
    if (!(max > -INFINITY)) {
        for (int i = 0; i < V; i++) { probs[i] = 0.0f; }
        probs[best] = 1.0f;
        return;
    }
    for (int i = 0; i < V; i++) {
        float x = logits[i];
        if (isnan(x)) { probs[i] = -INFINITY; }
        else if (isinf(max)) { probs[i] = x == max ? 0.0f : -INFINITY; }
        else { probs[i] = (x - max) / temperature; }
    }
    softmax_forward_cpu(probs, probs, 1, V);
}

// The distribution sampling draws from at temperature > 0: softmax(logits / temperature), then the filters
// that are on, in the order Hugging Face's transformers applies them: top-k, the nucleus (0 < top_p < 1),
// min-p. (llama.cpp's default chain applies the temperature last, after its filters: at a temperature other
// than 1 its nucleus and min-p sets are those of the unscaled logits, so the two differ there.) Speculative
// sampling must reproduce exactly this distribution: its verify pass turns every node's logits into it.
void sampling_distribution(float* probs, const float* logits, int V, SamplerSettings settings, ProbIndex* scratch) {
    logits_to_probs(probs, logits, V, settings.temperature);
    apply_top_k(probs, V, settings.top_k, scratch);
    if (settings.top_p > 0.0f && settings.top_p < 1.0f) { apply_top_p(probs, V, settings.top_p, scratch); }
    apply_min_p(probs, V, settings.min_p, scratch);
}

// Picks the next token. Greedy when temperature == 0 (coin unused). probs, scratch: (V) workspace.
int sample_token(const float* logits, int V, SamplerSettings settings, double coin, float* probs, ProbIndex* scratch) {
    if (settings.temperature == 0.0f) { return sample_argmax(logits, V); }
    sampling_distribution(probs, logits, V, settings, scratch);
    return sample_multinomial(probs, V, coin);
}
