/*
adaptive.c: adaptive speculation. Before each verify pass, choose the tree shape (children per node K,
depth D, nodes N, or no speculation at all) that maximises the expected tokens per second, from what
serving has measured so far:

  - costs: a verify pass by node count (an average per N; unmeasured counts from a line through the
    measured ones), a drafting step (the draft source's time per depth drafted), and an EAGLE draft's
    catch-up by token count (its forward over the tokens committed since it last drafted; the same kind
    of table and line as a verify pass's). A verify pass's price is the target's, not the draft's: choosers
    drafting for one target share it (VerifyCosts: the hybrid's two);
  - acceptance by depth and sibling rank: q[d][r], how often the accepted path, having reached depth
    d-1, continues through the rank-r child (children ranked by the draft's score), counted over recent
    passes (counts decay, so an improving draft is noticed and a stale estimate fades). A model-free draft
    (prompt lookup, the suffix draft) is counted on trees judged in hindsight instead: the largest tree,
    proposed at every pass's root for free and judged against the tokens the target goes on to produce
    (drafting.c), so its deeper levels stay measured while its passes draft shallow trees or none.

For a shape (K, D), the chance of going one level deeper is s_d(K) = sum over r < K of q[d][r], and

    expected tokens per pass   E(K, D) = 1 + sum_{d=1..D} prod_{j=1..d} s_j(K)     (the bonus is the 1)
    seconds per pass           T(K, D) = catch_up(pending) + D' * draft_step + verify(N),  N = 1 + K * D
                               (D' = D - 1 for an EAGLE draft, whose depth-1 children come with the catch-up)
                               (shapes over the menu's N are not considered; pending: generated tokens the
                               draft has not seen)
    choose the shape maximising E / T;  no speculation: E = 1, T = verify(1) (one decode step)

Estimates are the decayed counts shrunk towards a prior (below), and the counts decay every pass,
including passes without speculation. So a draft that is never right is soon not drafted at all. What it
still costs is a probe: after ADAPTIVE_PROBE_EVERY passes in a row without drafting, one pass drafts a
single node (about (verify(2) - verify(1)) / 32 of a step on average), at a pass with little to catch up
over (ADAPTIVE_PROBE_MAX_PENDING: for an EAGLE draft, a request's start). Probes matter twice: a cost is
measured only when its node count is used, so one slow measurement (the first pass after a prefill, a
descheduled thread) would otherwise price multi-node passes out for good; and a draft that starts being
right (a learning draft, a suffix index that has filled) is found again within a few probes. A good draft gets a deep tree.
The mirror image: a draft that drafts every pass never measures the decode step it is weighed against, so
one slow plain pass (a descheduled thread: up to 12 ms against 3.3) kept its price for as long as drafting
looked better at that price. Online, training in the gaps (100 requests, 2-core Zen 5): one such pass
priced the decode step at 4.2 ms and the draft drafted the next 295 passes; the estimate stood more than
10% above the median plain pass for two thirds of the run, and the learned draft (acceptance 1.1-1.2) served
0.83-0.89x plain decoding after the prefill. So a decode step not measured for ADAPTIVE_COST_MEMORY passes
is measured again by a plain pass (the plain probe).
A request's first passes (ADAPTIVE_COLD_PASSES) run on the caches its prefill left: on a 2-core Xeon (VM)
the decode steps after a 200-token prefill took 5.3, 4.9, 4.0, 3.2, 2.9 ms and then 2.6-2.8 (after an
8-token prefill 2.3 from the first), and the drafting probe falls on a request's first pass. Taken as they
came, those times priced every multi-node pass there: a learned draft (acceptance 2.0 in chains of 5) was
probed at a verify(2) of 6.6-6.9 ms against a decode step of 3.0-3.5 (the bench: 1.11x), with a drafting
step of 0.34 ms from the first passes (the bench: 0.13), and drafted in 2% of its passes in five replays of
six (100 requests each). So each of those passes has a slowdown of its own, measured on its plain passes
against the decode step's steady price (they teach nothing else), and its other times count divided by
it (the probe's pass, which is never plain when a probe is due at every request, by the next pass's). Until
one is measured, such a pass measures only costs never measured, and provisionally: the next measurement
replaces them (taking none, a fresh chooser drafted a request's first passes at the prior's prices, and
self-drafting, whose drafting step is a decode step, served 0.89x plain decoding where it had served 0.99x;
averaging them in, a 2-node pass first measured cold took 900 passes to come down to its price). Not
measuring them at all did not do either: the probe's 2-node pass, its price forgotten (ADAPTIVE_COST_MEMORY)
where the probe no longer renewed it, came back from the prior's slope, cheaper than it was, and a draft that
loses wherever it drafts was drafted again every few requests (a simulated world, 30 seeds: 0.950x plain
decoding against 0.964).
Randomness plays no part: the same measurements give the same choices.

Within a pass's shape, a drafting model's confidence decides each node (EAGLE-2's observation: a draft's
probability predicts acceptance). Its probability of a node given the parent is calibrated: in ten bins,
how often verified nodes of that bin were accepted once their parent was (decayed as above, the draft's
own probability the prior). A node's chance of being accepted in the pass is the product of the calibrated
values along its path, and it joins the tree only if that pays for its share of the verify pass:

    chance >= (verify(N) - verify(1)) / (N - 1) * E(K, D) / T(K, D)

(the tokens the node's verify time would yield at the shape's expected rate). Nodes below it are not
expanded either, so a low-confidence pass drafts less too; a pass whose every node falls below it is a
plain decode step. The chooser counts each left-out node as reached and hit with its calibrated chance, so
its estimates stay those of the whole shape (a draft never confident is soon not drafted at all). Every
ADAPTIVE_EXPLORE_EVERY-th drafting pass, and every probe, keeps every node, so that each bin is measured.
Measured on a draft trained online over 1,000 requests (40 unseen requests, chains of depth 5): nodes the
draft gave under 0.1 were accepted 4% of the time, 0.4-0.5: 39%, over 0.9: 97%.

Why the catch-up is charged by what is pending: a draft that drafts every pass catches up over the last
pass's tokens (one pass's worth), but one that drafts every third pass catches up over three passes' tokens
each time it drafts. A learned draft right a third of the time, on one thread, drafted 28% of passes (one
node each), caught up over 6 generated tokens per drafting pass while charged for 1.3, and served 0.93x
plain decoding (day 0 at 300 requests, 40 unseen requests). What those tokens cost is measured by their
count, as a verify pass's nodes are (cost_by_rows): a catch-up is one forward over them, most of whose time
is the pass over the draft's weights. The prompt is not charged: a request's first drafting pass catches up
over it in batches, once, like a prefill.
*/
#include "aurora.h"

// The prior an estimate falls back to where evidence is thin: acceptance PRIOR_ACCEPT at depth 1, rank 0;
// at depth 1, rank r > 0: RANK_PRIOR_SHARE of what the better ranks leave; deeper: the estimate of the
// depth above (a draft right at depth d is likely right at d+1, and one wrong at d likely wrong below).
// It weighs PRIOR_WEIGHT observations; the evidence decays by DECAY per pass (half-life about 70 passes).
static const double PRIOR_ACCEPT = 0.5, RANK_PRIOR_SHARE = 0.25, PRIOR_WEIGHT = 1.0, DECAY = 0.99;
// Costs before anything is measured: a forward over n rows (a verify pass of n nodes, a catch-up over n
// tokens) costs (1 + (n - 1) * ROWS_SLOPE_PRIOR) times one row's; a decode step is one row of a verify pass,
// a drafting step DRAFT_STEP_PRIOR decode steps, and a catch-up over one token CATCH_UP_PRIOR.
static const double ROWS_SLOPE_PRIOR = 0.1, DRAFT_STEP_PRIOR = 0.05, CATCH_UP_PRIOR = 0.05;
// Averages of measured times: each new measurement weighs this much, and counts at most OUTLIER_CAP times the
// average (a descheduled thread makes a pass several times slower: one 12 ms decode step beside 3.3 ms ones
// raised the average by a quarter, where capped it moves it by a tenth; a real slowdown is still followed,
// by up to a tenth a pass).
static const double COST_SMOOTHING = 0.1, OUTLIER_CAP = 2.0;

void spec_adaptive_init(SpecAdaptive* a, TreeShape limit, int max_k) {
    memset(a, 0, sizeof(*a));
    a->limit = limit;
    a->max_k = max_k < limit.k ? max_k : limit.k;
    if (a->max_k > ADAPTIVE_MAX_K) { a->max_k = ADAPTIVE_MAX_K; }
    if (a->max_k < 1) { a->max_k = 1; }
    a->costs = &a->own_costs;
    a->costs->request_passes = ADAPTIVE_COLD_PASSES;   // no request has begun: no prefill to be cold after
}

void spec_adaptive_share_costs(SpecAdaptive* a, SpecAdaptive* with) { a->costs = with->costs; }

// The acceptance estimates q[d][r] for depths 1..depth and ranks 0..k-1: decayed evidence shrunk
// towards the prior above.
static void adaptive_estimates(const SpecAdaptive* a, int k, int depth, double q[][ADAPTIVE_MAX_K]) {
    for (int d = 1; d <= depth; d++) {
        double taken = 0.0;
        for (int r = 0; r < k; r++) {
            double prior = d > 1 ? q[d - 1][r] : r == 0 ? PRIOR_ACCEPT : RANK_PRIOR_SHARE * (taken < 1.0 ? 1.0 - taken : 0.0);
            q[d][r] = (a->hit[d][r] + PRIOR_WEIGHT * prior) / (a->reached[d][r] + PRIOR_WEIGHT);
            taken += q[d][r];
        }
    }
}

double spec_adaptive_expected_tokens(const SpecAdaptive* a, int k, int depth) {
    double q[TREE_MAX_DEPTH + 1][ADAPTIVE_MAX_K];
    adaptive_estimates(a, k, depth, q);
    double expected = 1.0, reach = 1.0;
    for (int d = 1; d <= depth; d++) {
        double step = 0.0;
        for (int r = 0; r < k; r++) { step += q[d][r]; }
        if (step > 1.0) { step = 1.0; } // ranks are exclusive; estimates from few passes can overshoot
        reach *= step;
        expected += reach;
    }
    return expected;
}

// Seconds of a forward over n rows, n = 1..max_n, from the measured averages by row count (measured[n];
// 0: unmeasured): the measured average, else a line through (1, one row's cost) and the measured counts
// (least squares on the slope), else the prior. One row's cost is its own average, else the smallest
// measured count's by the prior slope, else unmeasured_one. A count's average starts from the line's value
// when it is first measured (verify_costs_observe), not from that pass's time alone: timings are noisy (a
// descheduled thread, a busy neighbour), and one slow first pass at 4 nodes, 1.75x a decode step where the
// bench measures 1.3x, priced every deeper chain out of a 64-token request.
// Both a verify pass and an EAGLE draft's catch-up are such forwards. The catch-up's line matters most: it
// is mostly measured over the 1-3 tokens a drafting pass leaves, and its cost is mostly the pass over the
// weights, not the tokens (2-core Zen 5: 0.22 ms over 1 token, 0.38 over 16, 0.66 over 32), so a catch-up
// over the tokens of a stretch of plain passes costs little more than one over a single token; charged as
// that many times one token's (as it was), 17 pending tokens cost 3.7 ms where they took 0.45, and a frozen
// day-0 draft, once it had stopped drafting, did not draft again in that request (24% of its passes plain;
// 1.14x plain decoding where a fixed tree of 2 children and depth 2 ran at 1.30x).
static void cost_by_rows(const double* measured, int max_n, double unmeasured_one, double* cost) {
    double one = measured[1];
    for (int m = 2; m <= TREE_MAX_NODES && one <= 0; m++) {
        if (measured[m] > 0) { one = measured[m] / (1 + (m - 1) * ROWS_SLOPE_PRIOR); }
    }
    if (one <= 0) { one = unmeasured_one; }
    double numerator = 0, denominator = 0;
    for (int m = 2; m <= TREE_MAX_NODES; m++) {
        if (measured[m] <= 0) { continue; }
        numerator += (m - 1) * (measured[m] / one - 1.0);
        denominator += (double)(m - 1) * (m - 1);
    }
    double slope = denominator > 0 ? numerator / denominator : ROWS_SLOPE_PRIOR;
    if (slope < 0) { slope = 0; }
    for (int n = 1; n <= max_n; n++) { cost[n] = measured[n] > 0 ? measured[n] : one * (1.0 + slope * (n - 1)); }
}

// A verify cost by node count not measured for ADAPTIVE_COST_MEMORY passes (aurora.h): forgotten for 2 or more
// nodes, measured again by the plain probe for one.
static int verify_cost_stale(const VerifyCosts* c, int n) {
    return c->passes - c->measured_at[n] > ADAPTIVE_COST_MEMORY;
}

// Seconds of a verify pass by node count, 1..max_n (nothing measured at all: relative units, a decode step 1).
// A count of 2 or more not measured for ADAPTIVE_COST_MEMORY passes counts as unmeasured (aurora.h).
static void verify_table(const VerifyCosts* c, int max_n, double* verify) {
    double fresh[TREE_MAX_NODES + 1];
    for (int n = 1; n <= TREE_MAX_NODES; n++) {
        int forgotten = n > 1 && verify_cost_stale(c, n);
        fresh[n] = forgotten ? 0.0 : c->seconds[n];
    }
    cost_by_rows(fresh, max_n, 1.0, verify);
}

double verify_costs_seconds(const VerifyCosts* c, int n) {
    double verify[TREE_MAX_NODES + 1];
    verify_table(c, n, verify);
    return verify[n];
}

static double adaptive_draft_step_seconds(const SpecAdaptive* a, const double* verify) {
    return a->draft_step_seconds > 0 ? a->draft_step_seconds : DRAFT_STEP_PRIOR * verify[1];
}

static int catch_up_chunk(const SpecAdaptive* a) {
    return a->catch_up_chunk > 0 && a->catch_up_chunk < TREE_MAX_NODES ? a->catch_up_chunk : TREE_MAX_NODES;
}

// Seconds of the catch-up over `pending` generated tokens, in forwards of at most catch_up_chunk rows as
// drafting.c runs it; verify: verify_table's.
static double adaptive_catch_up_seconds(const SpecAdaptive* a, int pending, const double* verify) {
    if (pending <= 0) { return 0.0; }
    int chunk = catch_up_chunk(a);
    double cost[TREE_MAX_NODES + 1];
    cost_by_rows(a->catch_up_seconds, chunk, CATCH_UP_PRIOR * verify[1], cost);
    return (pending / chunk) * cost[chunk] + (pending % chunk ? cost[pending % chunk] : 0.0);
}

// The seconds of a pass of this shape: drafting (catch_up: the catch-up over what is pending; the draft
// steps) and verifying (verify: verify_table's, up to the shape's nodes); no drafting: one decode step.
static double adaptive_pass_seconds(const SpecAdaptive* a, TreeShape shape, double catch_up, const double* verify) {
    if (shape.nodes <= 1) { return verify[1]; }
    int steps = shape.depth - a->root_children_free;
    return catch_up + steps * adaptive_draft_step_seconds(a, verify) + verify[shape.nodes];
}

double spec_adaptive_pass_steps(const SpecAdaptive* a, TreeShape shape, int pending) {
    double verify[TREE_MAX_NODES + 1];
    verify_table(a->costs, shape.nodes > 1 ? shape.nodes : 1, verify);
    return adaptive_pass_seconds(a, shape, adaptive_catch_up_seconds(a, pending, verify), verify) / verify[1];
}

TreeShape spec_adaptive_choose(const SpecAdaptive* a, int pending) {
    TreeShape best = {1, 0, 1}; // no speculation: the root alone
    if (a->passes_since_drafted >= ADAPTIVE_PROBE_EVERY && pending <= ADAPTIVE_PROBE_MAX_PENDING &&
        a->limit.depth >= 1 && a->limit.nodes >= 2) {
        return (TreeShape){1, 1, 2};   // the probe (see ADAPTIVE_PROBE_EVERY)
    }
    if (!a->costs->deterministic && verify_cost_stale(a->costs, 1)) {
        return best;   // the plain probe (see ADAPTIVE_COST_MEMORY)
    }
    double verify[TREE_MAX_NODES + 1];
    verify_table(a->costs, a->limit.nodes > 1 ? a->limit.nodes : 1, verify);
    double catch_up = adaptive_catch_up_seconds(a, pending, verify);
    double best_rate = 1.0 / adaptive_pass_seconds(a, best, catch_up, verify);
    for (int k = 1; k <= a->max_k; k++) {
        for (int depth = 1; depth <= a->limit.depth; depth++) {
            TreeShape shape = {k, depth, 1 + k * depth};
            if (shape.nodes > a->limit.nodes) { break; }
            double rate = spec_adaptive_expected_tokens(a, k, depth) / adaptive_pass_seconds(a, shape, catch_up, verify);
            if (rate > best_rate * (1.0 + 1e-9)) { best_rate = rate; best = shape; }
        }
    }
    return best;
}

void spec_adaptive_begin_request(SpecAdaptive* a) { a->costs->request_passes = 0; }

double spec_step_probability(double step_log_prob) {
    double p = exp(step_log_prob);
    return !(p >= 0.0) ? 0.0 : p > 1.0 ? 1.0 : p;
}

int spec_probability_bin(double p, int n_bins) {
    int bin = (int)(p * n_bins);
    return bin < n_bins ? bin : n_bins - 1;
}
static int confidence_bin(double p) { return spec_probability_bin(p, ADAPTIVE_CONFIDENCE_BUCKETS); }

double spec_adaptive_node_chance(const SpecAdaptive* a, float step_log_prob) {
    double p = spec_step_probability(step_log_prob);
    int bin = confidence_bin(p);
    return (a->confidence_hit[bin] + PRIOR_WEIGHT * p) / (a->confidence_reached[bin] + PRIOR_WEIGHT);
}

double spec_adaptive_min_chance(const SpecAdaptive* a, TreeShape shape, int pending) {
    if (shape.nodes <= 1 || shape.depth < 1) { return 0.0; }
    double verify[TREE_MAX_NODES + 1];
    verify_table(a->costs, shape.nodes, verify);
    double per_node = (verify[shape.nodes] - verify[1]) / (shape.nodes - 1);
    double rate = spec_adaptive_expected_tokens(a, shape.k, shape.depth) /
                  adaptive_pass_seconds(a, shape, adaptive_catch_up_seconds(a, pending, verify), verify);
    return per_node > 0 ? per_node * rate : 0.0;
}

int spec_adaptive_explores(SpecAdaptive* a) {
    a->drafting_passes++;
    return a->passes_since_drafted >= ADAPTIVE_PROBE_EVERY || a->drafting_passes % ADAPTIVE_EXPLORE_EVERY == 0;
}

void spec_adaptive_observe_left_out(SpecAdaptive* a, TreeShape shape, int depth, int rank, double chance) {
    // only the ranks spec_adaptive_count_level counted as reached (a rank the tree lacks, below the shape's K):
    // a suffix tree gives a node every child its index has, so its left-out ranks can pass K, and hit without
    // being reached they drove their estimates above 1 and made every wider shape look certain
    int ranks = shape.k < ADAPTIVE_MAX_K ? shape.k : ADAPTIVE_MAX_K;
    if (depth < 1 || depth > TREE_MAX_DEPTH || rank < 0 || rank >= ranks) { return; }
    a->hit[depth][rank] += chance;
}

static void adaptive_average(double* average, double value) {
    if (*average > 0 && value > OUTLIER_CAP * *average) { value = OUTLIER_CAP * *average; }
    *average = *average > 0 ? (1.0 - COST_SMOOTHING) * *average + COST_SMOOTHING * value : value;
}

// The acceptance evidence of one tree: along the accepted path, at each depth of the shape the path
// reached, the K ranks of the shape (the parent's children in index order: the drafter adds a node's
// children best first), each reached, and which child, if any, was accepted (one level at a time:
// spec_adaptive_count_level). A rank the tree lacks is a miss: the drafter keeps the N - 1 = K * D best candidates overall,
// so a node on the path often has fewer than K children, and a tree can end above depth D; E(K, D) counts
// K children at every depth, so its estimates must include those cuts (counting only the children present
// overestimated a K = 4, D = 8 tree's tokens per pass by half, and the chooser drafted trees deeper than the
// best). Children left out for low confidence are hit by their calibrated chance
// (spec_adaptive_observe_left_out).
void spec_adaptive_count_level(SpecAdaptive* a, TreeShape shape, const Tree* tree, int parent, int accepted, int depth) {
    if (depth < 1 || depth > TREE_MAX_DEPTH) { return; }
    int ranks = shape.k < ADAPTIVE_MAX_K ? shape.k : ADAPTIVE_MAX_K;
    int n_children = tree->n_children[parent];
    int counted = n_children > ranks ? n_children : ranks;
    for (int r = 0; r < counted && r < ADAPTIVE_MAX_K; r++) {
        a->reached[depth][r] += 1.0;
        if (r < n_children && tree->children[parent][r] == accepted) { a->hit[depth][r] += 1.0; }
    }
}

void spec_adaptive_count(SpecAdaptive* a, TreeShape shape, const Tree* tree, const Acceptance* acceptance) {
    int depth = shape.depth > tree->max_depth ? shape.depth : tree->max_depth;
    for (int d = 1; shape.nodes > 1 && d <= depth && d <= TREE_MAX_DEPTH && d - 1 <= acceptance->n_accepted; d++) {
        spec_adaptive_count_level(a, shape, tree, acceptance->path[d - 1], d <= acceptance->n_accepted ? acceptance->path[d] : -1, d);
    }
}

// A request's first passes (aurora.h: ADAPTIVE_COLD_PASSES) run slower than the steady ones by a factor
// measured for each of them on its plain passes (which teach only that); a cold pass's times, divided by
// its factor (or, unmeasured, the first measured one after it), count as steady ones. Before any is
// measured, a cold pass measures only costs never measured or forgotten (which even a cold pass prices
// better than the prior or a stale price does), and provisionally: the next measurement of the cost replaces it, as a first one would.
// (Averaged in instead, a 2-node pass first measured cold at 6.0 ms, then only by probes, came down to
// its 2.9 over 900 passes, and a learned draft training in the gaps drafted 3% of its passes.)
// Each cost: a provisional price (only ever met by a measurement that counts: not only_new) is taken as
// unmeasured. A count first measured, or measured again once forgotten, starts from the line; the decode
// step, measured again by the plain probe, starts from this measurement (its old average is the stale price
// the probe is there to replace: averaged in, one 10 ms pass would move a 30 ms price to 28).
PassTiming verify_costs_observe(VerifyCosts* c, int n, double verify_seconds) {
    c->passes++;
    int cold = c->request_passes < ADAPTIVE_COLD_PASSES, index = c->request_passes;
    c->request_passes++;
    PassTiming timing = {1, 0, 1.0};
    if (c->deterministic) {   // a deterministic chooser keeps the prior cost model: the same acceptance, the same shapes
        timing.measures = 0;
        return timing;
    }
    if (cold && n == 1 && c->seconds[1] > 0 && !c->provisional[1] && !verify_cost_stale(c, 1)) {
        adaptive_average(&c->cold_slowdown[index], verify_seconds / c->seconds[1]);
        timing.measures = 0;
        return timing;
    }
    if (cold) {   // (unmeasured: the next pass's, a little less cold; the probe's pass has no plain ones)
        int j = index;
        while (j < ADAPTIVE_COLD_PASSES && c->cold_slowdown[j] <= 0) { j++; }
        timing.only_new = j == ADAPTIVE_COLD_PASSES;
        timing.slowdown = timing.only_new ? 1.0 : c->cold_slowdown[j];
    }
    // (a stale price counts as unmeasured here too: else a decode step that went stale while every plain pass
    // was a cold one measured nothing, and the chooser's plain probe ran on every pass from then on)
    int forgotten = verify_cost_stale(c, n);
    if (!timing.only_new || c->seconds[n] <= 0 || forgotten) {
        if (c->provisional[n]) { c->seconds[n] = 0; }
        if (n > 1 && (c->seconds[n] <= 0 || forgotten) && c->seconds[1] > 0) { c->seconds[n] = verify_costs_seconds(c, n); }
        if (n == 1 && forgotten) { c->seconds[1] = 0; }
        adaptive_average(&c->seconds[n], verify_seconds / timing.slowdown);
        c->measured_at[n] = c->passes;
        c->provisional[n] = (uint8_t)timing.only_new;
    }
    return timing;
}

void spec_adaptive_learn(SpecAdaptive* a, PassTiming timing, TreeShape shape, const Tree* tree,
                         const Acceptance* acceptance, double draft_seconds, int draft_steps, double catch_up_seconds,
                         int catch_up_tokens) {
    // the evidence fades a little each pass, drafted or not
    for (int d = 1; d <= TREE_MAX_DEPTH; d++) {
        for (int r = 0; r < ADAPTIVE_MAX_K; r++) { a->reached[d][r] *= DECAY; a->hit[d][r] *= DECAY; }
    }
    for (int bin = 0; bin < ADAPTIVE_CONFIDENCE_BUCKETS; bin++) {
        a->confidence_reached[bin] *= DECAY;
        a->confidence_hit[bin] *= DECAY;
    }
    // the draft's own costs, as verify_costs_observe judged the pass's times (a cold pass: divided by its slowdown)
    int n = tree->n_nodes, t = catch_up_tokens, only_new = timing.only_new;
    int steps = draft_steps >= 0 ? draft_steps : tree->max_depth - a->root_children_free;
    // (steps: those the pass ran, which confidence can leave deeper than the tree it kept)
    if (timing.measures && n > 1 && steps > 0 && (!only_new || a->draft_step_seconds <= 0)) {
        if (a->draft_step_provisional) { a->draft_step_seconds = 0; }
        adaptive_average(&a->draft_step_seconds, draft_seconds / steps / timing.slowdown);
        a->draft_step_provisional = only_new;
    }
    if (timing.measures && t > 0 && t <= catch_up_chunk(a) && (!only_new || a->catch_up_seconds[t] <= 0)) {
        // (longer ones ran in several forwards)
        if (a->catch_up_provisional[t]) { a->catch_up_seconds[t] = 0; }
        int measured = 0;
        for (int m = 1; m <= TREE_MAX_NODES; m++) { measured |= a->catch_up_seconds[m] > 0; }
        if (a->catch_up_seconds[t] <= 0 && measured) {   // first measured: from the line, as a verify pass's
            double cost[TREE_MAX_NODES + 1];
            cost_by_rows(a->catch_up_seconds, t, 0.0, cost);
            a->catch_up_seconds[t] = cost[t];
        }
        adaptive_average(&a->catch_up_seconds[t], catch_up_seconds / timing.slowdown);
        a->catch_up_provisional[t] = (uint8_t)only_new;
    }
    if (!a->judged_in_hindsight) { spec_adaptive_count(a, shape, tree, acceptance); }
    if (tree->n_nodes == 1) {
        a->passes_without_drafting++;
        a->passes_since_drafted++;
        return;
    }
    a->passes_since_drafted = 0;
    // the calibration: every child of each node the accepted path reached, by its probability given the parent
    for (int d = 1; a->calibrates && d <= tree->max_depth && d - 1 <= acceptance->n_accepted; d++) {
        int parent = acceptance->path[d - 1];
        int accepted = d <= acceptance->n_accepted ? acceptance->path[d] : -1;
        for (int r = 0; r < tree->n_children[parent]; r++) {
            int child = tree->children[parent][r];
            int bin = confidence_bin(spec_step_probability((double)tree->scores[child] - tree->scores[parent]));
            a->confidence_reached[bin] += 1.0;
            if (child == accepted) { a->confidence_hit[bin] += 1.0; }
        }
    }
}

void spec_adaptive_observe(SpecAdaptive* a, TreeShape shape, const Tree* tree, const Acceptance* acceptance,
                           double draft_seconds, int draft_steps, double catch_up_seconds, int catch_up_tokens,
                           double verify_seconds) {
    PassTiming timing = verify_costs_observe(a->costs, tree->n_nodes, verify_seconds);
    spec_adaptive_learn(a, timing, shape, tree, acceptance, draft_seconds, draft_steps, catch_up_seconds, catch_up_tokens);
}
