/*
bench_speed.c: the whole model's speed on every CPU table of this build, side by side in one run (tools/bench.sh
adds llama.cpp and prints the summary). A benchmark, not a test: it prints numbers and asserts nothing except
that speculative and plain greedy outputs agree.

On a shared machine a timing is slowed whenever another process takes a core (with OpenMP, every parallel
region then waits for the displaced thread), so everything is measured in rounds spread over the run, the
variants alternating, and the fastest time of each is kept (for speculative runs: the fastest run). A
speculative run's ratio to plain decoding is paired instead: each round runs plain, every draft, every draft
again in reverse order and plain again, and the ratio is the median over the rounds of the mean of the run's
two speeds over the mean of its round's two plain runs (the fastest runs of two variants can come from different minutes of a drifting machine: single
ratios moved by 10-25% between runs of the same code). The "@ NAME_tps" lines are the fastest runs, the
"@ NAME_vs_plain" lines the paired medians.

  decode      one single-token step after CONTEXT cached tokens (the slot is rewritten each time); and on the
              fast table after LONG_CONTEXT, where the key/value cache is read beside the weights
  prefill     PREFILL tokens from an empty cache, in one call
  verify      a chain of N nodes after CONTEXT cached tokens (every row's logits), against a decode step measured
              right before it: the cost of checking N - 1 draft tokens, in decode steps; the same for a few N after
              SERVED_CONTEXT cached tokens (about where a served request's passes run: a 230-token prompt and
              its 64 new tokens), where each extra row's attention over the cache costs more; and beside it the
              compute limit, the int8 multiply-add instruction's measured peak (every thread at once) and the
              time that N nodes' matmuls need at that peak, in decode steps
  draft       a random EAGLE-3 draft (the default vocabulary, DRAFT_DEFAULT_VOCAB) on the fast table, in serving
              order after a target step: the catch-up over 3 accepted tokens, then drafting steps (1 row, and K
              rows as a tree's depth does); a step straight after a target step (cold); a request's first
              catch-up, over its prompt (draft_extend, against the whole layer over every row); a hot swap; and the
              target step after that drafting against the step after it (the draft's bytes evict the target's
              from the caches: a cost of drafting that the draft's own timings do not show)
  generation  plain greedy decoding and speculative decoding with the `self`, `lookup` and `random` drafts
              (a chain of depth 5, and adaptive shapes), GENERATE tokens after each of three prompts: tokens/s
              after the prefills, over the three; and the random draft (adaptive) over 60 requests, alternating
              with plain decoding request by request (a useless draft's price, judged at the percent level)
  recording   the target's outputs for train's data (samples of its own text, each continued greedily), one
              sample at a time and RECORD_LANES at once (record_batch): tokens/s and the ratio
  memory      read bandwidth (every thread summing its share of 1 GiB) and the limit it sets on a decode step:
              the bytes one step must read (weights as stored, the key/value cache) / bandwidth; and the same
              over a buffer of one step's bytes, which a large L3 holds as it holds the model (the step-sized
              limit: on such a host the step streams from the cache, and beats the 1 GiB limit)

With --backend NAME (make bench-cuda: --backend cuda) one table is measured alone and everything above that
says "fast table" is that table (the output names it); on a table whose memory is not the host's (CUDA)
the memory limit is the table's own copy bandwidth (backend->copy of 1 GiB: read and write counted) and
its fp32 weights, and the int8 peak is not measured.

Lines starting with "@ " are for tools/bench.sh (key value).

usage: bench_speed MODEL.gguf [ROUNDS] [--fast-only | --backend NAME]     (threads: OMP_NUM_THREADS;
--fast-only: the fast tables only, for a quick look while tuning)
*/
#define TESTING
#include "../aurora.c"
#include "bench_common.h"

enum { CONTEXT = 128, PREFILL = 128, GENERATE = 64, DRAFT_VOCAB = DRAFT_DEFAULT_VOCAB, DRAFT_CHAIN = 4, REF_ROUNDS = 2,
       MAX_ROUNDS = 64, VERIFY_REPEATS = 12, LONG_CONTEXT = 1000, SERVED_CONTEXT = 320 };
// recording: RECORD_SAMPLES samples of RECORD_LENGTH tokens and RECORD_NEW greedy ones, one at a time and in
// RECORD_LANES lanes (train's default --parallel)
enum { RECORD_SAMPLES = 16, RECORD_LENGTH = 48, RECORD_NEW = 16, RECORD_LANES = RECORD_DEFAULT_PARALLEL };
static const int VERIFY_NODES[] = {2, 4, 6, 8, 12, 16};
enum { N_VERIFY = sizeof(VERIFY_NODES) / sizeof(VERIFY_NODES[0]) };
static const int SERVED_NODES[] = {2, 3, 6};
enum { N_SERVED = sizeof(SERVED_NODES) / sizeof(SERVED_NODES[0]) };

// Generation runs over three requests, each GENERATE tokens after its prompt, and a run's speed is theirs
// together: one request's greedy text decides how much a model-free draft can copy, and one arithmetic
// change that flips a near-tie moves it (the nineteenth session's flipped the first prompt's text after its
// 30th token, and the lookup's acceptance there went from 1.88 to 1.32).
static const char* BENCH_PROMPTS[] = {
    "Speculative decoding makes a large language model faster without changing its output. A small draft model "
    "guesses the next few tokens, and the large target model checks all of the guesses in a single forward pass. "
    "Every guess that matches what the target would have produced is kept for free, so the speedup depends on how "
    "often the draft is right. Explain how this works, step by step:",
    "Write a Python function is_prime(n) that returns True when n is a prime number, with a docstring, then "
    "three tests for it:",
    "List the planets of the solar system in order from the Sun, one line each, with the planet's name, its "
    "distance from the Sun and one fact about it:"};
enum { N_PROMPTS = sizeof(BENCH_PROMPTS) / sizeof(BENCH_PROMPTS[0]) };

static int context_tokens[PREFILL];

static double min_of(double a, double b) { return a < b ? a : b; }

// One decode step after P cached tokens (rewrites slot P: the cache stays as it was).
static double time_decode_after(Target* target, int P) {
    int token = 300, position = P;
    double start = now_seconds();
    target_forward(target, &token, &position, NULL, 1, P, 0);
    return now_seconds() - start;
}
static double time_decode(Target* target) { return time_decode_after(target, CONTEXT); }
// DECODE_RUN steps one after another from P cached tokens, the mean a step: what llama-bench's tg32 after P
// times (the fastest single step, time_decode, flatters a comparison with a run's mean)
enum { DECODE_RUN = 32 };
static double time_decode_run(Target* target, int P) {
    double start = now_seconds();
    for (int i = 0; i < DECODE_RUN; i++) {
        int token = 300 + i, position = P + i;
        target_forward(target, &token, &position, NULL, 1, P + i, 0);
    }
    return (now_seconds() - start) / DECODE_RUN;
}

// PREFILL tokens from an empty cache in one call: the context's own tokens, so the cache ends as it was.
static double time_prefill(Target* target) {
    double start = now_seconds();
    target_prefill(target, context_tokens, PREFILL, 0, NULL, NULL);
    return now_seconds() - start;
}

// A chain of N nodes after P cached tokens, every row's logits (what a verify pass computes).
static double time_verify_after(Target* target, int N, int P, uint8_t* mask) {
    Tree tree;
    memset(&tree, 0, sizeof(tree));
    tree.n_nodes = N;
    tree.root_position = P;
    for (int i = 0; i < N; i++) { tree.tokens[i] = 300 + i; tree.parents[i] = i - 1; }
    Error err;
    if (tree_derive(&tree, &err) != 0) { fprintf(stderr, "bench bug: %s\n", err.message); exit(1); }
    tree_attention_mask(mask, &tree, P);
    double start = now_seconds();
    target_forward(target, tree.tokens, tree.positions, mask, N, P, 1);
    return now_seconds() - start;
}
static double time_verify(Target* target, int N, uint8_t* mask) { return time_verify_after(target, N, CONTEXT, mask); }

typedef struct {
    const char* label;
    const Backend* backend;
    Target target;
    double decode, prefill;
} Subject;

// Bytes one decode step reads: every weight matrix as the backend keeps it (the embedding gives one row;
// a tied LM head reads the embedding table whole), the norms, and the key/value cache over P slots.
static double decode_bytes(const Target* target, int fp32, int P) {
    const TargetConfig* c = &target->config;
    double bytes = 0;
    for (uint64_t i = 0; i < target->file.n_tensors; i++) {
        const GGUFTensor* t = &target->file.tensors[i];
        int is_embedding = strcmp(t->name, "token_embd.weight") == 0;
        if (is_embedding && !c->tied_output) { continue; }   // one row only
        bytes += fp32 ? (double)t->n_elements * 4 : (double)t->n_bytes;
    }
    bytes += 2.0 * c->n_layers * P * c->n_kv_heads * c->head_size * sizeof(float);
    return bytes;
}

// The table's name in the "@ " keys
static const char* backend_key(const Backend* backend) {
    if (backend == &backend_cpu_ref) { return "ref"; }
    if (backend == &backend_cpu_fast) { return "fast"; }
    if (backend == &backend_cpu_fast_exact) { return "fast_exact"; }
    return strcmp(backend->name, "cpu-blas") == 0 ? "blas" : backend->name;
}

// Copy bandwidth of a table whose memory is not the host's, in GB/s of traffic (a byte read and a byte
// written count two): backend->copy of `bytes`, best of `repeats`, finished by a download of one float
static double device_copy_bandwidth(const Backend* backend, size_t bytes, int repeats) {
    char* a = backend->alloc(bytes);
    char* b = backend->alloc(bytes);
    float sink;
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double start = now_seconds();
        backend->copy(b, a, bytes);
        backend->download(&sink, b + bytes - sizeof(float), sizeof(float));
        best = min_of(best, now_seconds() - start);
    }
    backend->free(a);
    backend->free(b);
    return 2.0 * bytes / best / 1e9;
}

// The draft in serving order after a target step: the catch-up over 3 accepted tokens (draft_extend: fc and
// the keys and values of each, the rest of the layer and the head for the last), then a chain of DRAFT_CHAIN
// drafting steps of 1 row. The fastest catch-up and mean step so far are kept; the chain's last output is
// left in draft->host.out.
static void time_draft_chain(Draft* draft, Target* target, const float* features, float* u, double* catch_up, double* step) {
    int C = draft->config.dim, positions[3];
    time_decode(target);
    for (int t = 0; t < 3; t++) { positions[t] = CONTEXT - 3 + t; }
    double start = now_seconds();
    draft_project_features(draft, u, features + (size_t)(CONTEXT - 3) * TAP_LAYERS * C, 3);
    draft_extend(draft, context_tokens + CONTEXT - 3, u, positions, 3, CONTEXT - 3);
    *catch_up = min_of(*catch_up, now_seconds() - start);
    start = now_seconds();
    for (int s = 0; s < DRAFT_CHAIN; s++) {
        int position = CONTEXT + s, token = 400 + s;
        draft_forward(draft, &token, draft->host.out, &position, NULL, 1, CONTEXT + s);
    }
    *step = min_of(*step, (now_seconds() - start) / DRAFT_CHAIN);
}

// A request's first drafting pass catches the draft up over its prompt (here the CONTEXT - 1 positions of the
// context, in forwards of at most 64 rows, as drafting.c runs it): draft_extend (keys and values of every row,
// the rest of the layer and the head for a forward's last row) against the catch-up before the fifty-seventh
// session (the whole layer over every row, the head for the last: draft_forward_rows(..., 0, T - 1)), the
// first of the two alternating with the repetition r; the fastest of each is kept.
static void time_prompt_catch_up(Draft* draft, const float* features, float* u, int r, double* extend, double* full) {
    int C = draft->config.dim, positions[64];
    for (int k = 0; k < 2; k++) {
        int whole_layer = (k + r) % 2;
        double start = now_seconds();
        for (int first = 0; first < CONTEXT - 1; first += 64) {
            int T = CONTEXT - 1 - first < 64 ? CONTEXT - 1 - first : 64;
            for (int t = 0; t < T; t++) { positions[t] = first + t; }
            draft_project_features(draft, u, features + (size_t)first * TAP_LAYERS * C, T);
            draft_forward_rows(draft, context_tokens + first + 1, u, positions, NULL, T, first, whole_layer ? 0 : T - 1, T - 1);
        }
        double* best = whole_layer ? full : extend;
        *best = min_of(*best, now_seconds() - start);
    }
}

// The median of n values (n >= 1; sorts a copy)
static double median_of(const double* values, int n) {
    double sorted[MAX_ROUNDS];
    memcpy(sorted, values, (size_t)n * sizeof(double));
    for (int i = 1; i < n; i++) {
        double v = sorted[i];
        int j = i;
        for (; j > 0 && sorted[j - 1] > v; j--) { sorted[j] = sorted[j - 1]; }
        sorted[j] = v;
    }
    return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

// Speculative (or plain, kind < 0) greedy generation after each bench prompt: tokens/s after the prefills,
// over all the requests; stats: their statistics added up (plain: zeros)
static double generate_speed(Target* target, Draft* draft, int kind, int adaptive, int prompts[][256],
                             const int* n_prompts, int out[][GENERATE], SpecStats* stats) {
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    double seconds = 0;
    int tokens = 0;
    memset(stats, 0, sizeof(*stats));
    for (int p = 0; p < N_PROMPTS; p++) {
        if (kind < 0) {
            GenerateStats plain;
            tokens += generate_plain(target, prompts[p], n_prompts[p], GENERATE, greedy, 1, out[p], &plain, NULL, NULL) - 1;
            seconds += plain.decode_seconds;
            continue;
        }
        DraftSource source;
        TreeShape shape = adaptive ? (TreeShape){ADAPTIVE_DEFAULT_K, ADAPTIVE_DEFAULT_DEPTH, ADAPTIVE_DEFAULT_NODES}
                                   : (TreeShape){1, DEFAULT_SPEC_DEPTH, DEFAULT_SPEC_DEPTH + 1};
        draft_source_init(&source, (DraftKind)kind, shape, kind == DRAFT_EAGLE ? draft : NULL, target);
        draft_source_set_adaptive(&source, adaptive, 0);
        SpecStats one;
        tokens += generate_speculative(target, &source, prompts[p], n_prompts[p], GENERATE, greedy, 1, out[p], &one, NULL,
                                       NULL, NULL) - 1;
        draft_source_free(&source);
        seconds += one.total_seconds - one.prefill_seconds;
        stats->verify_passes += one.verify_passes;
        stats->emitted += one.emitted;
        stats->draft_seconds += one.draft_seconds;
        stats->total_seconds += one.total_seconds;
        stats->prefill_seconds += one.prefill_seconds;
    }
    return tokens / seconds;
}

static int usage(const char* program) {
    fprintf(stderr, "usage: %s MODEL.gguf [ROUNDS] [--fast-only | --backend NAME]\n", program);
    return 2;
}

int main(int argc, char** argv) {
    if (argc < 2) { return usage(argv[0]); }
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    int fast_only = argc == 4 && strcmp(argv[3], "--fast-only") == 0;
    const Backend* only = NULL;   // --backend NAME: that table alone
    if (argc > 3 && !fast_only) {   // else "--backend NAME" and nothing after it
        if (strcmp(argv[3], "--backend") != 0 || argc != 5) { return usage(argv[0]); }
        Error err;
        only = backend_by_name(argv[4], &err);
        if (only == NULL) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    }
    if (rounds < REF_ROUNDS) { rounds = REF_ROUNDS; }
    if (rounds > MAX_ROUNDS) { rounds = MAX_ROUNDS; }
    char cpu[256];
    cpu_model_name(cpu, sizeof(cpu));
    for (int i = 0; i < PREFILL; i++) { context_tokens[i] = 200 + (i * 37) % 5000; }

    static Subject subjects[4];
    int n_subjects = 0;
    const char* labels[4] = {"aurora reference", "aurora OpenBLAS", "aurora fast, fp32 act.", "aurora fast"};
    const Backend* tables[4] = {&backend_cpu_ref, NULL, &backend_cpu_fast_exact, &backend_cpu_fast};
#ifdef USE_BLAS
    tables[1] = &backend_cpu_blas;
#endif
    for (int s = 0; s < 4; s++) {
        if (only != NULL) {   // the one table in the fast slot
            if (s < 3) { continue; }
            tables[s] = only;
            labels[s] = only->name;
        }
        if (tables[s] == NULL || (fast_only && s < 2)) { continue; }
        subjects[n_subjects].label = labels[s];
        subjects[n_subjects].backend = tables[s];
        subjects[n_subjects].decode = subjects[n_subjects].prefill = 1e30;
        n_subjects++;
    }
    Subject* fast = &subjects[n_subjects - 1];
    Error err;
    for (int s = 0; s < n_subjects; s++) {
        if (target_load(&subjects[s].target, argv[1], subjects[s].backend, 512, DEFAULT_BATCH_TOKENS, &err) != 0) {
            fprintf(stderr, "error: %s\n", err.message);
            return 1;
        }
        target_prefill(&subjects[s].target, context_tokens, CONTEXT, 0, NULL, NULL);
    }
    // the fast table again, its cache LONG_CONTEXT tokens long (the context's tokens over and over)
    Target long_target;
    if (target_load(&long_target, argv[1], fast->backend, LONG_CONTEXT + DECODE_RUN, DEFAULT_BATCH_TOKENS, &err) != 0) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    int* long_tokens = mallocCheck(LONG_CONTEXT * sizeof(int));
    for (int i = 0; i < LONG_CONTEXT; i++) { long_tokens[i] = context_tokens[i % CONTEXT]; }
    target_prefill(&long_target, long_tokens, LONG_CONTEXT, 0, NULL, NULL);
    free(long_tokens);
    double long_decode = 1e30, decode_run = 1e30, long_decode_run = 1e30;   // (the runs: the fast table's, time_decode_run)
    char description[256];
    backend_describe(fast->backend, description, sizeof(description));
    printf("CPU: %s, %d threads (OpenMP); %s table: %s; load average at start %.2f\n", cpu, n_threads(),
           only ? "measured" : "fast", description, load_average());
    int on_device = !fast->backend->host_memory;

    // the draft on the fast table, its cache extended over the context
    Target* target = &fast->target;
    int C = target->config.dim;
    // (and its twin with the matrices in the other quantised type --draft-type offers, on a host-memory table)
    Draft draft, other;
    int other_type = on_device ? TYPE_F32 : fast->backend->draft_type == TYPE_Q4_1 ? TYPE_Q8_0 : TYPE_Q4_1;
    float* features = mallocCheck((size_t)CONTEXT * TAP_LAYERS * C * sizeof(float));
    float* u = mallocCheck((size_t)64 * C * sizeof(float));
    target_prefill(target, context_tokens, CONTEXT, 0, features, NULL);
    for (int d = 0; d < (other_type != TYPE_F32 ? 2 : 1); d++) {
        Draft* each = d ? &other : &draft;
        draft_init_random(each, target, DRAFT_VOCAB < target->config.vocab_size ? DRAFT_VOCAB : target->config.vocab_size,
                          NULL, 7);
        draft_alloc_state(each, 512, 64);
        if (d) { draft_serve_as(each, other_type); }
        int positions[64];
        for (int start = 0; start < CONTEXT - 1; start += 64) {
            int T = CONTEXT - 1 - start < 64 ? CONTEXT - 1 - start : 64;
            for (int t = 0; t < T; t++) { positions[t] = start + t; }
            draft_project_features(each, u, features + (size_t)start * TAP_LAYERS * C, T);
            draft_forward(each, context_tokens + start + 1, u, positions, NULL, T, start);
        }
    }
    float* published = mallocCheck(draft.n_weight_floats * sizeof(float));
    memcpy(published, draft.weight_arena, draft.n_weight_floats * sizeof(float));
    const int K = 4;
    uint8_t* draft_mask = mallocCheck((size_t)K * (CONTEXT + K));
    for (int k = 0; k < K; k++) {   // K siblings: each sees the context and itself
        memset(draft_mask + (size_t)k * (CONTEXT + K), 1, CONTEXT);
        memset(draft_mask + (size_t)k * (CONTEXT + K) + CONTEXT, 0, K);
        draft_mask[(size_t)k * (CONTEXT + K) + CONTEXT + k] = 1;
    }
    double draft_step = 1e30, draft_step_k = 1e30, draft_step_cold = 1e30, catch_up = 1e30, swap = 1e30, swap_total = 0;
    double other_step = 1e30, other_catch_up = 1e30;   // the twin's
    double prompt_catch_up = 1e30, prompt_catch_up_full = 1e30;
    double after_draft_total = 0, back_to_back_total = 0;   // target steps after drafting, and straight after those
    int swaps = 0, after_draft_steps = 0;

    // the prompts for generation
    int prompts[N_PROMPTS][256], n_prompts[N_PROMPTS];
    for (int p = 0; p < N_PROMPTS; p++) {
        n_prompts[p] = tokenizer_encode(&target->tokenizer, BENCH_PROMPTS[p], strlen(BENCH_PROMPTS[p]), 0, prompts[p], 256, &err);
        if (n_prompts[p] < 1) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    }
    // plain, then each draft fixed (a chain of depth 5) and adaptive (shapes up to K=4, depth 8, 33 nodes)
    enum { RUN_PLAIN, RUN_SELF, RUN_LOOKUP, RUN_RANDOM, RUN_SELF_ADAPTIVE, RUN_LOOKUP_ADAPTIVE, RUN_RANDOM_ADAPTIVE, N_RUNS };
    const char* kind_names[N_RUNS] = {"plain", "self", "lookup", "random", "self_adaptive", "lookup_adaptive", "random_adaptive"};
    const int kinds[N_RUNS] = {-1, DRAFT_SELF, DRAFT_LOOKUP, DRAFT_EAGLE, DRAFT_SELF, DRAFT_LOOKUP, DRAFT_EAGLE};
    const int adaptive[N_RUNS] = {0, 0, 0, 0, 1, 1, 1};
    double speed[N_RUNS] = {0};
    double paired[N_RUNS][MAX_ROUNDS];   // per round: tokens/s over the round's plain tokens/s
    SpecStats last_stats[N_RUNS];
    static int outputs[N_RUNS][N_PROMPTS][GENERATE];
    int n_out_mismatch = 0;

    double verify[N_VERIFY], verify_decode[N_VERIFY];
    for (int v = 0; v < N_VERIFY; v++) { verify[v] = verify_decode[v] = 1e30; }
    double served[N_SERVED], served_decode[N_SERVED];
    for (int v = 0; v < N_SERVED; v++) { served[v] = served_decode[v] = 1e30; }
    uint8_t* mask = mallocCheck((size_t)16 * (SERVED_CONTEXT + 16));
    double bandwidth = 0, int8_peak = 0;
    // (on a host table also over a buffer of one decode step's bytes: a large L3 can hold the model, and then
    // the step streams from it, faster than from memory)
    double bytes = decode_bytes(target, on_device, CONTEXT), step_bandwidth = 0;   // (one step's bytes)

    fprintf(stderr, "measuring in %d rounds:", rounds);
    for (int round = 0; round < rounds; round++) {
        fprintf(stderr, " %d", round + 1);
        double b = on_device ? device_copy_bandwidth(fast->backend, (size_t)1 << 30, 3) : read_bandwidth((size_t)1 << 30, 2);
        if (b > bandwidth) { bandwidth = b; }
        double sb = on_device ? 0 : read_bandwidth((size_t)bytes, 5);
        if (sb > step_bandwidth) { step_bandwidth = sb; }
        double p = on_device ? 0 : int8_peak_macs(3);
        if (p > int8_peak) { int8_peak = p; }
        for (int s = 0; s < n_subjects; s++) {
            Subject* subject = &subjects[s];
            int is_reference = subject->backend == &backend_cpu_ref;
            if (is_reference && round >= REF_ROUNDS) { continue; }
            for (int r = 0; r < (is_reference ? 2 : 8); r++) { subject->decode = min_of(subject->decode, time_decode(&subject->target)); }
            if (subject == fast) { decode_run = min_of(decode_run, time_decode_run(&subject->target, CONTEXT)); }
            subject->prefill = min_of(subject->prefill, time_prefill(&subject->target));
        }
        for (int r = 0; r < 8; r++) { long_decode = min_of(long_decode, time_decode_after(&long_target, LONG_CONTEXT)); }
        long_decode_run = min_of(long_decode_run, time_decode_run(&long_target, LONG_CONTEXT));
        // a verify pass is compute on both cores, which another process on the machine stretches more than a
        // memory-bound decode step: many samples of each pair, so that the fastest is a quiet moment's
        for (int v = 0; v < N_VERIFY; v++) {
            for (int r = 0; r < VERIFY_REPEATS; r++) {
                verify_decode[v] = min_of(verify_decode[v], time_decode(target));
                verify[v] = min_of(verify[v], time_verify(target, VERIFY_NODES[v], mask));
            }
        }
        // (the long cache's first SERVED_CONTEXT slots: slots from SERVED_CONTEXT on are rewritten, which only
        // the timing of the long decode step reads, and it reads any values alike)
        for (int v = 0; v < N_SERVED; v++) {
            for (int r = 0; r < VERIFY_REPEATS / 2; r++) {
                served_decode[v] = min_of(served_decode[v], time_decode_after(&long_target, SERVED_CONTEXT));
                served[v] = min_of(served[v], time_verify_after(&long_target, SERVED_NODES[v], SERVED_CONTEXT, mask));
            }
        }
        // the draft in serving order: a target step (which streams the target's weights through the caches),
        // the catch-up and a chain of drafting steps (time_draft_chain), one step of K rows (a tree's depth);
        // then a step straight after a target step with no catch-up before it (the draft's weights cold), a hot
        // swap, and the twin's catch-up and chain
        for (int r = 0; r < 8; r++) {
            int step_positions[8], tokens[8] = {400, 401, 402, 403, 404, 405, 406, 407};
            time_draft_chain(&draft, target, features, u, &catch_up, &draft_step);
            for (int k = 0; k < K; k++) { step_positions[k] = CONTEXT; memcpy(u + (size_t)k * C, draft.host.out, (size_t)C * sizeof(float)); }
            double start = now_seconds();
            draft_forward(&draft, tokens, u, step_positions, draft_mask, K, CONTEXT);
            draft_step_k = min_of(draft_step_k, now_seconds() - start);
            // the target's next step, on the caches the draft's work left, and one more back to back
            after_draft_total += time_decode(target);
            back_to_back_total += time_decode(target);
            after_draft_steps++;
            int token = 400, position = CONTEXT - 1;
            start = now_seconds();
            draft_forward(&draft, &token, draft.host.out, &position, NULL, 1, CONTEXT - 1);
            draft_step_cold = min_of(draft_step_cold, now_seconds() - start);
            start = now_seconds();
            draft_use_weights(&draft, r % 2 ? draft.weight_arena : published);
            double seconds = now_seconds() - start;
            swap = min_of(swap, seconds);
            swap_total += seconds;
            swaps++;
            if (other_type != TYPE_F32) { time_draft_chain(&other, target, features, u, &other_catch_up, &other_step); }
            time_prompt_catch_up(&draft, features, u, r, &prompt_catch_up, &prompt_catch_up_full);
        }
        draft_use_weights(&draft, draft.weight_arena);
        // generation in a palindrome: plain, each draft source, each again in reverse order, plain again; a
        // run's round speed is the mean of its two, so a drift that is steady over the round cancels for every
        // run alike (with plain, the sources, plain, the last source before the second plain run read a third of
        // the round's drift against the first: the random draft's ratio, judged at the percent level, by most)
        double round_speed[N_RUNS];
        static int again[N_PROMPTS][GENERATE];
        for (int k = 0; k < 2 * N_RUNS; k++) {
            int run = k < N_RUNS ? k : 2 * N_RUNS - 1 - k;
            int (*out)[GENERATE] = k < N_RUNS ? outputs[run] : again;
            double tokens_per_second = generate_speed(target, &draft, kinds[run], adaptive[run], prompts, n_prompts, out,
                                                      &last_stats[run]);
            if (tokens_per_second > speed[run]) { speed[run] = tokens_per_second; }
            round_speed[run] = k < N_RUNS ? tokens_per_second : (round_speed[run] + tokens_per_second) / 2;
            if (k > 0 && memcmp(out, outputs[0], sizeof(outputs[0])) != 0) { n_out_mismatch++; }   // vs the first plain run
        }
        for (int k = 0; k < N_RUNS; k++) { paired[k][round] = round_speed[k] / round_speed[0]; }
        target_prefill(target, context_tokens, CONTEXT, 0, NULL, NULL);   // the context again, for the next round
    }
    fprintf(stderr, "\n");
    // A useless draft's price over many requests: plain decoding and the random draft (adaptive shapes, a fresh
    // chooser for each request, as each `generate` call has) alternate, the order swapped every round, over
    // RANDOM_ROUNDS rounds of the 3 prompts; the ratio is plain's decoding seconds over the draft's (the same
    // tokens: outputs equal). The rounds' paired medians above take 3 requests a run and moved by several
    // percent between runs of the same code, too much to judge a goal set at 0.97x.
    enum { RANDOM_ROUNDS = 20 };
    double random_plain_time = 0.0, random_draft_time = 0.0, random_drafting = 0.0;
    static int random_out[N_PROMPTS][GENERATE];
    for (int r = 0; r < RANDOM_ROUNDS; r++) {
        for (int i = 0; i < 2; i++) {
            int random_run = (i + r) % 2;   // 0: plain, 1: the random draft
            int run = random_run ? RUN_RANDOM_ADAPTIVE : RUN_PLAIN;
            SpecStats stats;
            double tokens_per_second = generate_speed(target, &draft, kinds[run], adaptive[run], prompts, n_prompts,
                                                      random_out, &stats);
            // (seconds per token: the same token count in both, so their sums are the decoding seconds' ratio)
            if (random_run) { random_draft_time += 1.0 / tokens_per_second; random_drafting += stats.draft_seconds; }
            else { random_plain_time += 1.0 / tokens_per_second; }
            if (memcmp(random_out, outputs[0], sizeof(outputs[0])) != 0) { n_out_mismatch++; }
        }
    }
    target_prefill(target, context_tokens, CONTEXT, 0, NULL, NULL);

    printf("\nwhole model, %d host threads (fastest of the rounds): decode = one token after %d cached; prefill = %d tokens in one call\n",
           n_threads(), CONTEXT, PREFILL);
    printf("%-24s %12s %12s %12s %12s\n", "", "decode ms", "decode tok/s", "prefill ms", "prefill tok/s");
    for (int s = 0; s < n_subjects; s++) {
        Subject* subject = &subjects[s];
        printf("%-24s %12.2f %12.1f %12.1f %12.1f\n", subject->label, subject->decode * 1e3, 1.0 / subject->decode,
               subject->prefill * 1e3, PREFILL / subject->prefill);
        const char* key = backend_key(subject->backend);
        printf("@ %s_decode_tps %.3f\n@ %s_prefill_tps %.3f\n", key, 1.0 / subject->decode, key, PREFILL / subject->prefill);
    }
    printf("%s, %d decode steps one after another from %d cached (as llama-bench's tg%d), the mean a step: %.2f ms "
           "(%.1f tok/s; the fastest single step above %.1f)\n", fast->label, DECODE_RUN, CONTEXT, DECODE_RUN, decode_run * 1e3,
           1.0 / decode_run, 1.0 / fast->decode);
    printf("@ %s_decode_run_tps %.3f\n", backend_key(fast->backend), 1.0 / decode_run);

    const char* table = fast->backend->name;   // the fast table, or --backend's
    printf("\nverify pass over a chain of N nodes after %d cached tokens, %s: time / a decode step measured beside it\n", CONTEXT,
           table);
    for (int v = 0; v < N_VERIFY; v++) {
        printf("  N = %2d: %7.2f ms, decode %6.2f ms, ratio %.2fx\n", VERIFY_NODES[v], verify[v] * 1e3,
               verify_decode[v] * 1e3, verify[v] / verify_decode[v]);
        printf("@ verify%d_vs_decode %.3f\n", VERIFY_NODES[v], verify[v] / verify_decode[v]);
    }
    printf("  after %d cached tokens (a served request's passes: about a 230-token prompt and its new tokens):",
           SERVED_CONTEXT);
    for (int v = 0; v < N_SERVED; v++) {
        printf("%s N = %d %.2fx", v ? "," : "", SERVED_NODES[v], served[v] / served_decode[v]);
    }
    printf(" (decode %.2f ms)\n", served_decode[0] * 1e3);
    for (int v = 0; v < N_SERVED; v++) {
        printf("@ verify%d_at_%d_vs_decode %.3f\n", SERVED_NODES[v], SERVED_CONTEXT, served[v] / served_decode[v]);
    }
    // The compute limit beside the memory limit: a pass's matmuls at the int8 instruction's peak alone (every
    // weight's multiply-adds for every node, nothing else), in decode steps. Where it is over a goal's
    // ratio no kernel of this arithmetic reaches the goal on this CPU.
    const TargetConfig* tc = &target->config;
    double qd = (double)tc->n_heads * tc->head_size, kvd = (double)tc->n_kv_heads * tc->head_size;
    double macs_per_row = tc->n_layers * ((double)tc->dim * (2 * qd + 2 * kvd) + 3.0 * tc->dim * tc->ffn_dim) +
                          (double)tc->vocab_size * tc->dim;
    if (int8_peak > 0) {
        int vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw");
        printf("  int8 compute: %.1f G multiply-adds/s (%s alone, %d threads); one node's matmuls %.1f M; so the "
               "matmuls of N nodes alone need at least (in decode steps):", int8_peak / 1e9,
               vnni ? "vpdpbusd" : "the AVX2 kernel's integer steps", n_threads(), macs_per_row / 1e6);
        for (int v = 0; v < N_VERIFY; v++) {
            printf("%s%d: %.2f", v ? ", " : " ", VERIFY_NODES[v], VERIFY_NODES[v] * macs_per_row / int8_peak / verify_decode[v]);
        }
        printf("\n");
        int twelve = 0;
        while (VERIFY_NODES[twelve] != 12) { twelve++; }
        printf("@ int8_peak_gmacs %.2f\n@ verify12_matmul_floor_vs_decode %.3f\n", int8_peak / 1e9,
               12 * macs_per_row / int8_peak / verify_decode[twelve]);
    } else if (!on_device) {
        printf("  int8 compute: neither AVX-512 VNNI nor AVX2 on this CPU, its peak not measured\n");
    }

    printf("\ndraft (random EAGLE-3 draft, vocabulary %d, on %s, its serving copy %s; a decode step %.2f ms):\n",
           draft.config.vocab_size, table, tensor_type_name(draft.serving_type), fast->decode * 1e3);
    printf("  in serving order, after a target step:\n");
    printf("    catch-up over 3 accepted tokens (fc, keys and values; the layer and the head for the last): %.3f ms (%.1f%% of a decode step)\n",
           catch_up * 1e3, 100 * catch_up / fast->decode);
    printf("    one drafting step, 1 row (the mean of a chain of %d after the catch-up): %.3f ms (%.1f%%)\n", DRAFT_CHAIN,
           draft_step * 1e3, 100 * draft_step / fast->decode);
    printf("    one drafting step, %d rows: %.3f ms (%.1f%%)\n", K, draft_step_k * 1e3, 100 * draft_step_k / fast->decode);
    printf("  one drafting step, 1 row, straight after a target step (the draft's weights cold): %.3f ms (%.1f%%)\n",
           draft_step_cold * 1e3, 100 * draft_step_cold / fast->decode);
    printf("  a request's first catch-up, over its prompt (%d tokens, forwards of 64 rows): %.3f ms (%.1f%% of a decode "
           "step); the whole layer over every row (the catch-up until the fifty-seventh session): %.3f ms (%.2fx)\n", CONTEXT - 1, prompt_catch_up * 1e3,
           100 * prompt_catch_up / fast->decode, prompt_catch_up_full * 1e3, prompt_catch_up_full / prompt_catch_up);
    printf("@ draft_prompt_catch_up_vs_decode %.4f\n@ draft_prompt_catch_up_full_layer_vs_extend %.3f\n",
           prompt_catch_up / fast->decode, prompt_catch_up_full / prompt_catch_up);
    printf("  hot swap (draft_use_weights): %.3f ms fastest, %.3f ms mean over %d\n", swap * 1e3, swap_total / swaps * 1e3, swaps);
    if (other_type != TYPE_F32) {
        printf("  the same draft served with its matrices %s (--draft-type), in serving order: catch-up %.3f ms (%.1f%%), "
               "one drafting step %.3f ms (%.1f%%)\n", tensor_type_name(other_type), other_catch_up * 1e3,
               100 * other_catch_up / fast->decode, other_step * 1e3, 100 * other_step / fast->decode);
        printf("@ draft_step_%s_vs_decode %.4f\n", other_type == TYPE_Q4_1 ? "q4_1" : "q8_0", other_step / fast->decode);
    }
    // (the draft's weights and caches evict some of the target's from the CPU's caches, and the next target step
    // reads them again from memory: a cost of drafting that its own timings do not show)
    double after_draft = after_draft_total / after_draft_steps, back_to_back = back_to_back_total / after_draft_steps;
    printf("  a target step straight after the catch-up and the drafting steps: %.3f ms, against %.3f ms for the step "
           "after it (means over %d): %.3fx\n", after_draft * 1e3, back_to_back * 1e3, after_draft_steps, after_draft / back_to_back);
    printf("@ draft_step_vs_decode %.4f\n@ draft_step_cold_vs_decode %.4f\n@ draft_catch_up_vs_decode %.4f\n@ draft_swap_ms %.3f\n",
           draft_step / fast->decode, draft_step_cold / fast->decode, catch_up / fast->decode, swap_total / swaps * 1e3);
    printf("@ decode_after_draft_vs_back_to_back %.3f\n", after_draft / back_to_back);

    printf("\ngeneration on %s, greedy, %d tokens after each of %d prompts (%d, %d and %d tokens: an explanation, code, "
           "a list), a run's speed over the three; fixed: a chain of depth %d, adaptive: shapes up to K=%d, depth %d, %d nodes "
           "(fastest run; the ratio: the median over the %d rounds of the mean of a run's two speeds, the round being a "
           "palindrome, over the mean of the plain runs that begin and end it):\n", table, GENERATE, N_PROMPTS, n_prompts[0], n_prompts[1], n_prompts[2], DEFAULT_SPEC_DEPTH,
           ADAPTIVE_DEFAULT_K, ADAPTIVE_DEFAULT_DEPTH, ADAPTIVE_DEFAULT_NODES, rounds);
    for (int k = 0; k < N_RUNS; k++) {
        double ratio = median_of(paired[k], rounds);
        printf("  %-16s %8.2f tok/s  %.2fx plain", kind_names[k], speed[k], ratio);
        if (k > 0) {
            const SpecStats* st = &last_stats[k];
            printf("   acceptance length %.2f, draft %.0f%% of the time", (double)st->emitted / (st->verify_passes ? st->verify_passes : 1),
                   100 * st->draft_seconds / (st->total_seconds - st->prefill_seconds));
        }
        printf("\n@ %s_tps %.3f\n", kind_names[k], speed[k]);
        if (k > 0) { printf("@ %s_vs_plain %.4f\n", kind_names[k], ratio); }
    }
    printf("  the random draft (adaptive) over %d requests, alternating with plain decoding request by request: %.3fx plain "
           "(its drafting %.0f ms in all)\n", RANDOM_ROUNDS * N_PROMPTS, random_plain_time / random_draft_time, random_drafting * 1e3);
    printf("@ random_requests_vs_plain %.4f\n", random_plain_time / random_draft_time);
    printf("  outputs identical to plain greedy: %s\n", n_out_mismatch == 0 ? "yes" : "NO");

    // recording the target's outputs (train's data): samples of its own text one at a time and in lanes
    Target recorder;
    if (target_load(&recorder, argv[1], fast->backend, RECORD_LANES * (1 + RECORD_LENGTH + RECORD_NEW),
                    DEFAULT_BATCH_TOKENS, &err) != 0) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    int start_token = -1;
    if (self_sample_start(&recorder.tokenizer, &start_token, &err) != 0) { start_token = 0; }
    double record_time[2] = {1e30, 1e30}, record_ratio[MAX_ROUNDS];
    long record_tokens = 0;
    int records_same = 1, record_rounds = rounds < 3 ? rounds : 3;
    for (int r = 0; r < record_rounds; r++) {
        Record* made[2][RECORD_SAMPLES];
        int n_made[2], dropped;
        double seconds[2];
        for (int m = 0; m < 2; m++) {
            RecordJob job = {.start_token = start_token, .length = RECORD_LENGTH, .sampling = {.temperature = 1.0f, .top_p = 1.0f}, .seed = 1,
                             .n = RECORD_SAMPLES, .max_new = RECORD_NEW, .parallel = m == 0 ? 1 : RECORD_LANES};
            double t0 = now_seconds();
            n_made[m] = record_batch(&recorder, &job, made[m], &dropped);
            seconds[m] = now_seconds() - t0;
            record_time[m] = min_of(record_time[m], seconds[m]);
        }
        record_ratio[r] = seconds[0] / seconds[1];
        records_same &= n_made[0] == n_made[1];
        record_tokens = 0;
        for (int i = 0; i < n_made[0]; i++) {
            record_tokens += made[0][i]->n_committed;
            records_same &= i < n_made[1] && made[0][i]->n_tokens == made[1][i]->n_tokens &&
                            memcmp(made[0][i]->tokens, made[1][i]->tokens, (size_t)made[0][i]->n_tokens * sizeof(int)) == 0 &&
                            memcmp(made[0][i]->hidden, made[1][i]->hidden,
                                   (size_t)made[0][i]->n_committed * made[0][i]->dim * sizeof(uint16_t)) == 0;
        }
        for (int m = 0; m < 2; m++) { for (int i = 0; i < n_made[m]; i++) { record_free(made[m][i]); } }
    }
    printf("\nrecording the target's outputs on %s (train --self-samples' data: %d samples of %d tokens, each continued "
           "greedily for %d; the tokens that ran / the fastest run; the ratio: the median over %d rounds):\n", table,
           RECORD_SAMPLES, RECORD_LENGTH, RECORD_NEW, record_rounds);
    printf("  one at a time   %8.1f tok/s\n  %d lanes        %8.1f tok/s  %.2fx one at a time; records identical: %s\n",
           record_tokens / record_time[0], RECORD_LANES, record_tokens / record_time[1], median_of(record_ratio, record_rounds),
           records_same ? "yes" : "NO");
    printf("@ record_one_tps %.3f\n@ record_lanes_tps %.3f\n@ record_lanes_vs_one %.4f\n", record_tokens / record_time[0],
           record_tokens / record_time[1], median_of(record_ratio, record_rounds));
    target_free(&recorder);

    // the CUDA table keeps fp32 weights
    double bytes_fp32 = decode_bytes(target, 1, CONTEXT);
    double limit = bytes / (bandwidth * 1e9);
    char measured[384];   // (a device's name may take 255 of them)
    if (on_device) {
        snprintf(measured, sizeof(measured), "%s copy bandwidth %.1f GB/s (backend->copy of 1 GiB, a read and a write a "
                 "byte)", fast->backend->device, bandwidth);
    } else {
        snprintf(measured, sizeof(measured), "read bandwidth %.1f GB/s (%d threads, 1 GiB)", bandwidth, n_threads());
    }
    // (every "x the limit" below is a speed: the limit's time over the step's, as the summary's keys are)
    printf("\nmemory: %s; one decode step reads %.1f MB (weights as %s, the key/value cache at %d tokens; %.1f MB "
           "with fp32 weights): limit %.2f ms (%.0f tok/s); %s decode %.2f ms runs at %.2fx the limit's speed\n", measured,
           bytes / 1e6, on_device ? "the table keeps them, fp32" : "stored", CONTEXT, bytes_fp32 / 1e6, limit * 1e3, 1 / limit,
           table, fast->decode * 1e3, limit / fast->decode);
    printf("@ bandwidth_gbs %.2f\n@ decode_limit_ms %.4f\n@ decode_vs_memory_limit %.4f\n", bandwidth, limit * 1e3,
           limit / fast->decode);
    if (!on_device) {
        double step_limit = bytes / (step_bandwidth * 1e9);
        printf("over a buffer of the step's %.1f MB (it may stay in the caches, as the model's weights then do): read "
               "bandwidth %.1f GB/s, limit %.2f ms (%.0f tok/s); the decode step runs at %.2fx that limit's speed\n",
               bytes / 1e6, step_bandwidth, step_limit * 1e3, 1 / step_limit, step_limit / fast->decode);
        printf("@ step_bandwidth_gbs %.2f\n@ decode_vs_step_sized_limit %.4f\n", step_bandwidth, step_limit / fast->decode);
    }
    double long_bytes = decode_bytes(target, on_device, LONG_CONTEXT), long_limit = long_bytes / (bandwidth * 1e9);
    printf("after %d cached tokens a %s decode step reads %.1f MB (the cache %.1f MB of it): limit %.2f ms (%.0f tok/s); "
           "it took %.2f ms (%.1f tok/s), %.2fx the limit's speed\n", LONG_CONTEXT, table, long_bytes / 1e6,
           (long_bytes - decode_bytes(target, on_device, 0)) / 1e6, long_limit * 1e3, 1 / long_limit, long_decode * 1e3,
           1 / long_decode, long_limit / long_decode);
    printf("@ %s_decode_long_tps %.3f\n@ decode_long_vs_memory_limit %.4f\n", backend_key(fast->backend), 1 / long_decode,
           long_limit / long_decode);
    printf("  %d steps one after another from %d cached (as llama-bench's tg%d): %.2f ms a step (%.1f tok/s)\n", DECODE_RUN,
           LONG_CONTEXT, DECODE_RUN, long_decode_run * 1e3, 1 / long_decode_run);
    printf("@ %s_decode_long_run_tps %.3f\n", backend_key(fast->backend), 1 / long_decode_run);
    printf("load average at the end: %.2f\n", load_average());

    free(mask); free(draft_mask); free(features); free(u); free(published);
    draft_free(&draft);
    if (other_type != TYPE_F32) { draft_free(&other); }
    for (int s = 0; s < n_subjects; s++) { target_free(&subjects[s].target); }
    target_free(&long_target);
    return 0;
}
