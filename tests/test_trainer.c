/*
test_trainer.c: the flywheel's training side on project-made tiny models.

  - the whole training loss (TTT unroll, accepted-path loss, discard loss with its tree mask) against
    finite differences, for sampled weights of every draft tensor and every loss kind
  - the TTT mask and the discard tree mask against plain oracles
  - the learning-rate schedule: warm-up, then constant or a cosine to 0
  - a non-finite record is rejected and leaves the weights bit-identical (counted)
  - the ring buffer drops the oldest record when full, and counts it
  - the weight exchange never hands out a buffer being written, and carries the vocabulary
  - --freeze-head: two steps leave the LM head bit for bit and move the rest
  - the draft vocabulary follows the traffic: the swaps chosen against a one-at-a-time oracle (with a
    negative control), the trainer's rows and moments after a swap, the serving draft following
  - learning: on a learnable stream the acceptance length rises from about 1.0 past a threshold
  - lockstep replays are bitwise repeatable (weights and logs)
  - hot swap under load: a training thread publishing after every step (and changing the draft
    vocabulary) while requests are served; every output equals plain greedy decoding and every record arrives (also run under ThreadSanitizer
    by `make test-tsan`: pass --hot-swap-only)
*/
#define TESTING
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#include "../aurora.c"
#include "test_common.h"

static char temp_dir[256];

// A path inside the test's temporary directory; each call gets its own buffer from a fixed pool.
static const char* temp_path(const char* name) {
    static char paths[32][512];
    static int next = 0;
    char* path = paths[next++ % 32];
    snprintf(path, 512, "%s/%s", temp_dir, name);
    return path;
}

// A tiny target: 2 layers, so the tapped layer 1 is the last layer and the draft can learn it quickly.
static void load_tiny_target_on(Target* target, int n_layers, uint64_t seed, const Backend* backend) {
    TinyModelSpec spec = {32, n_layers, 4, 2, 64, 300, 256, 1, TYPE_F32, 10000.0f, seed};
    Error err;
    const char* path = temp_path("target.gguf");
    if (tiny_model_write(path, &spec, &err) != 0 || target_load(target, path, backend, 256, 64, &err) != 0) {
        fprintf(stderr, "setup: %s\n", err.message);
        exit(1);
    }
    target->tokenizer.eos_id = -1; target->tokenizer.n_end_ids = 0; // random weights: always generate max_new tokens
}

static void load_tiny_target(Target* target, int n_layers, uint64_t seed) { load_tiny_target_on(target, n_layers, seed, backend_cpu()); }

// ---- the learning-rate schedule ------------------------------------------------------------------

// Warm-up, then constant or a cosine to 0 (train --lr-schedule cosine): the rate at the steps where the
// curve's value is known without the formula (the warm-up's ramp, the peak, the half-way point, zero at the
// end), falling step by step, and 0 past the end; decay_steps 0 keeps the rate.
static void test_learning_rate_schedule(void) {
    Trainer trainer;
    memset(&trainer, 0, sizeof(trainer));
    TrainerSettings* s = &trainer.settings;
    s->learning_rate = 1e-3f; s->warmup_steps = 4; s->decay_steps = 0;
    int ok = 1;
    for (int step = 0; step < 4; step++) { trainer.step = step; ok &= fabsf(trainer_learning_rate(&trainer) - 1e-3f * (step + 1) / 4) < 1e-9f; }
    for (int step = 4; step < 100; step += 7) { trainer.step = step; ok &= trainer_learning_rate(&trainer) == 1e-3f; }
    check(ok, "learning rate: linear warm-up over 4 steps, then constant without decay_steps");
    s->decay_steps = 104;   // 100 steps of decay after the warm-up: half-way at step 54
    trainer.step = 3; float last_warmup = trainer_learning_rate(&trainer);
    trainer.step = 4; float peak = trainer_learning_rate(&trainer);
    trainer.step = 54; float half = trainer_learning_rate(&trainer);
    trainer.step = 103; float final = trainer_learning_rate(&trainer);
    check(last_warmup == 1e-3f && peak == 1e-3f && fabsf(half - 0.5e-3f) < 1e-8f && final > 0.0f && final < 1e-6f,
          "cosine: the warm-up reaches the rate, the decay starts there, half the rate half-way, nearly 0 at the last "
          "step (%g %g %g %g)", last_warmup, peak, half, final);
    int falling = 1;
    float previous = peak;
    for (int step = 5; step < 104; step++) {
        trainer.step = step;
        float rate = trainer_learning_rate(&trainer);
        falling &= rate < previous;
        previous = rate;
    }
    trainer.step = 104; float at_end = trainer_learning_rate(&trainer);
    trainer.step = 500; float past_end = trainer_learning_rate(&trainer);
    check(falling && at_end == 0.0f && past_end == 0.0f, "cosine: falls at every step, 0 at step decay_steps and after");
    // the curve is symmetric about its midpoint: rate(54 - d) + rate(54 + d) = the full rate
    int symmetric = 1;
    for (int d = 1; d < 50; d += 3) {
        trainer.step = 54 - d; float before = trainer_learning_rate(&trainer);
        trainer.step = 54 + d; float after = trainer_learning_rate(&trainer);
        symmetric &= fabsf(before + after - 1e-3f) < 1e-8f;
    }
    check(symmetric, "cosine: symmetric about the half-way point (a linear decay would be too, a shifted one not)");
}

// ---- the target's outputs recorded many at once (record_batch) ------------------------------------

static int self_samples(Target* target, int start, int n, int length, SamplerSettings sampling, uint64_t seed,
                        int max_new, int parallel, Record** records, int* dropped) {
    RecordJob job = {.start_token = start, .length = length, .sampling = sampling, .seed = seed, .n = n,
                     .max_new = max_new, .parallel = parallel};
    return record_batch(target, &job, records, dropped);
}

// Two records hold the same tokens, lengths and states, bit for bit.
static int records_equal(const Record* a, const Record* b) {
    size_t C = (size_t)a->dim;
    return a->dim == b->dim && a->n_tokens == b->n_tokens && a->n_committed == b->n_committed &&
           a->n_prompt == b->n_prompt && a->draft_version == b->draft_version && a->n_discard == b->n_discard &&
           memcmp(a->tokens, b->tokens, (size_t)a->n_tokens * sizeof(int)) == 0 &&
           memcmp(a->features, b->features, (size_t)a->n_committed * TAP_LAYERS * C * sizeof(uint16_t)) == 0 &&
           memcmp(a->hidden, b->hidden, (size_t)a->n_committed * C * sizeof(uint16_t)) == 0;
}

// The oracle: one prompt alone, recorded as greedy serving records it (generate_speculative, no draft: the
// prompt in one prefill, then a pass per token).
static Record* record_alone(Target* target, const int* prompt, int n_prompt, int max_new) {
    DraftSource none;
    draft_source_init(&none, DRAFT_NONE, (TreeShape){1, 1, 2}, NULL, target);
    Record* record = record_new(target->config.dim, 0);
    int* out = mallocCheck((size_t)(max_new + 1) * sizeof(int));
    SpecStats stats;
    generate_speculative(target, &none, prompt, n_prompt, max_new, (SamplerSettings){.temperature = 0.0f, .top_p = 1.0f}, 0, out, &stats, NULL,
                         NULL, record);
    free(out);
    draft_source_free(&none);
    return record;
}

// Samples and traffic prompts recorded in lanes: each record equals its prompt recorded alone (the oracle),
// whatever the lanes (one; a few; more than the cache's slots hold, so that prompts wait for slots), in the
// job's order, with a prompt longer than the room skipped; a negative control shows the comparison fails
// for other samples. On the target's table and on the reference.
static void test_record_batch(Target* target, const char* table) {
    enum { N = 12, LENGTH = 20, MAX_NEW = 6, N_PROMPTS = 7, ROOM = 40 };
    SamplerSettings sampling = {.temperature = 1.0f, .top_p = 1.0f};
    int start = target->tokenizer.bos_id >= 0 ? target->tokenizer.bos_id : target->tokenizer.eos_id;
    Record *alone[N], *lanes[N], *control[N];
    int dropped = -1, made = self_samples(target, start, N, LENGTH, sampling, 5, MAX_NEW, 1, alone, &dropped);
    check(made == N && dropped == 0, "%s: one lane: %d samples made, %d dropped, expected %d and 0", table, made, dropped, N);
    int oracle = 0;
    for (int i = 0; i < made; i++) {
        Record* r = record_alone(target, alone[i]->tokens, alone[i]->n_prompt, MAX_NEW);
        oracle += records_equal(r, alone[i]);
        record_free(r);
    }
    check(oracle == N, "%s: %d of %d samples' records equal their sample recorded alone", table, oracle, N);
    // lanes that fit at once (3), and more than fit (16 lanes of 27 slots in a cache of 256: 9 at a time)
    int parallels[2] = {3, 16};
    for (int k = 0; k < 2; k++) {
        made = self_samples(target, start, N, LENGTH, sampling, 5, MAX_NEW, parallels[k], lanes, &dropped);
        int same = made == N;
        for (int i = 0; i < made && same; i++) { same = records_equal(lanes[i], alone[i]); }
        check(same && dropped == 0, "%s: %d lanes: %d samples, the same records as one lane: %s", table, parallels[k], made,
              same ? "yes" : "no");
        for (int i = 0; i < made; i++) { record_free(lanes[i]); }
    }
    made = self_samples(target, start, N, LENGTH, sampling, 6, MAX_NEW, 3, control, &dropped);
    int equal = 0;
    for (int i = 0; i < made; i++) { equal += records_equal(control[i], alone[i]); record_free(control[i]); }
    check(made == N && equal == 0, "negative control (%s): %d of %d records of other samples equal", table, equal, made);
    for (int i = 0; i < N; i++) { record_free(alone[i]); }

    // traffic prompts: one longer than the room is skipped, the others' records in order
    char long_prompt[400];
    memset(long_prompt, 'x', sizeof(long_prompt) - 1);
    long_prompt[sizeof(long_prompt) - 1] = '\0';
    char* texts[N_PROMPTS] = {"hello", "the quick brown fox", long_prompt, "a", "jumps over the lazy dog again",
                              "speculative", "decoding"};
    TrafficRequest requests[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) { requests[i] = (TrafficRequest){.domain = "default", .prompt = texts[i], .line = i + 1}; }
    Record* records[N_PROMPTS];
    int skipped = -1;
    RecordJob job = {.requests = requests, .room = ROOM, .n = N_PROMPTS, .max_new = MAX_NEW, .parallel = 4};
    made = record_batch(target, &job, records, &skipped);
    int matches = 0;
    for (int i = 0, r = 0; i < N_PROMPTS && r < made; i++) {
        int prompt[ROOM + 1];
        Error err;
        int n_prompt = prompt_encode(&target->tokenizer, texts[i], 0, prompt, ROOM, &err);
        if (n_prompt < 0) { continue; }
        Record* oracle_record = record_alone(target, prompt, n_prompt, MAX_NEW);
        matches += records_equal(oracle_record, records[r++]);
        record_free(oracle_record);
    }
    check(made == N_PROMPTS - 1 && skipped == 1 && matches == made, "%s: traffic in 4 lanes: %d made (%d skipped), %d equal "
          "their prompt recorded alone, expected %d, 1 and all", table, made, skipped, matches, N_PROMPTS - 1);
    for (int i = 0; i < made; i++) { record_free(records[i]); }
}

// Records whose states went to a file (train's RecordSpill): the same bytes as the job kept in memory, and a
// draft trained on them the same bits; the file's name is gone once it is open; a write error (a file-size
// limit) stops the job with an error that names the file, and the records made keep their states in memory.
static void test_record_spill(Target* target) {
    enum { N = 6, LENGTH = 20, MAX_NEW = 6 };
    SamplerSettings sampling = {.temperature = 1.0f, .top_p = 1.0f};
    int start = target->tokenizer.bos_id >= 0 ? target->tokenizer.bos_id : target->tokenizer.eos_id;
    Record *memory[N], *spilled[N];
    int dropped = -1;
    int made = self_samples(target, start, N, LENGTH, sampling, 9, MAX_NEW, 3, memory, &dropped);
    check(made == N, "spill: %d of %d samples made in memory", made, N);
    if (made != N) { return; }
    char path[600];
    snprintf(path, sizeof(path), "%s/spill.records", temp_dir);
    RecordSpill spill;
    Error err;
    int opened = record_spill_open(&spill, path, &err) == 0;
    check(opened && access(path, F_OK) != 0, "the records' file is created and its name removed at once (%s)",
          opened ? path : err.message);
    if (!opened) { return; }
    RecordJob job = {.start_token = start, .length = LENGTH, .sampling = sampling, .seed = 9, .n = N, .max_new = MAX_NEW,
                     .parallel = 3, .spill = &spill};
    int made_spilled = record_batch(target, &job, spilled, &dropped);
    int all_spilled = made_spilled == made;
    for (int i = 0; i < made_spilled; i++) { all_spilled &= spilled[i]->spilled && spilled[i]->features == NULL; }
    check(all_spilled && !spill.failed && spill.bytes > 0, "every record's states went to the file (%d of %d, %zu bytes)",
          made_spilled, made, spill.bytes);
    int mapped = all_spilled && record_spill_map(&spill, spilled, made_spilled, &err) == 0;
    check(mapped, "the records' file maps: %s", all_spilled ? err.message : "not every record was written");
    if (!mapped) { return; }
    int same = 0, shifted = 0;
    for (int i = 0; i < made_spilled; i++) {
        same += records_equal(spilled[i], memory[i]);
        shifted += records_equal(spilled[i], memory[(i + 1) % made]);   // the negative control
    }
    check(same == made && shifted == 0, "spilled records equal the records kept in memory (%d of %d; another's: %d)", same,
          made, shifted);
    // a trainer step on each gives the same weights
    Draft draft;
    draft_init_random(&draft, target, 100, NULL, 4);
    Trainer from_memory, from_file;
    trainer_init(&from_memory, &draft, target, trainer_default_settings());
    trainer_init(&from_file, &draft, target, trainer_default_settings());
    TrainStats stats;
    trainer_step(&from_memory, memory, 3, &stats);
    trainer_step(&from_file, spilled, 3, &stats);
    check(from_memory.step == 1 && memcmp(from_memory.draft.weight_arena, from_file.draft.weight_arena,
                                          draft.n_weight_floats * sizeof(float)) == 0,
          "a trainer step on spilled records gives the weights of one on records in memory, bit for bit");
    trainer_free(&from_memory);
    trainer_free(&from_file);
    draft_free(&draft);
    for (int i = 0; i < made_spilled; i++) { record_free(spilled[i]); }
    record_spill_close(&spill);

    // a record with no committed position (nothing to write): spilled, mapped (an empty file maps to nothing), freed
    int one_token = start;
    Record* empty = record_new(target->config.dim, 0);
    record_finish(empty, &one_token, 1, 0, 1, NULL, NULL, 0);
    int empty_ok = record_spill_open(&spill, path, &err) == 0 && record_spill_write(&spill, empty) == 0 &&
                   record_spill_map(&spill, &empty, 1, &err) == 0 && empty->spilled && spill.bytes == 0 &&
                   empty->features == NULL && empty->hidden == NULL;
    check(empty_ok, "a record with no states spills and maps to nothing");
    record_free(empty);
    record_spill_close(&spill);

    // a file-size limit of about one and a half records (about 6.5 kB each here): the first record goes to the
    // file, the second fails part-way and keeps its states in memory, the job stops, and nothing maps
    size_t record_file_bytes = record_state_bytes(memory[0]->n_committed, memory[0]->dim);
    struct rlimit old_limit, small;
    int limited = getrlimit(RLIMIT_FSIZE, &old_limit) == 0;
    small.rlim_cur = record_file_bytes * 3 / 2;
    small.rlim_max = old_limit.rlim_max;
    fflush(stdout);
    fflush(stderr);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);   // (else the signal ends the process)
    limited = limited && small.rlim_cur <= old_limit.rlim_max && setrlimit(RLIMIT_FSIZE, &small) == 0;
    int reopened = limited && record_spill_open(&spill, path, &err) == 0;
    made_spilled = reopened ? record_batch(target, &job, spilled, &dropped) : 0;
    if (limited) { setrlimit(RLIMIT_FSIZE, &old_limit); }
    signal(SIGXFSZ, old_handler);
    if (!limited) {
        printf("(skipped: the file-size limit could not be lowered)\n");
        for (int i = 0; i < made; i++) { record_free(memory[i]); }
        return;
    }
    int n_in_file = 0, n_in_memory_equal = 0;
    for (int i = 0; i < made_spilled; i++) {
        if (spilled[i]->spilled) { n_in_file++; }
        else { n_in_memory_equal += records_equal(spilled[i], memory[i]); }
    }
    int refused = reopened && record_spill_map(&spill, spilled, made_spilled, &err) != 0;
    check(reopened && spill.failed && made_spilled < N && n_in_file == 1 && n_in_memory_equal == made_spilled - 1 &&
          refused && strstr(err.message, path) && strstr(err.message, "cannot write the records"),
          "a write error stops the job and is reported with the file's name (%d of %d made, %d in the file, %d in memory "
          "and whole): %s", made_spilled, N, n_in_file, n_in_memory_equal, spill.failed ? spill.err.message : "no error");
    for (int i = 0; i < made_spilled; i++) { record_free(spilled[i]); }
    record_spill_close(&spill);
    for (int i = 0; i < made; i++) { record_free(memory[i]); }
}

// ---- the target's own text (train --self-samples) -------------------------------------------------

// Draw i is what generate_plain samples from the start token with seed + i, then the target's greedy
// continuation; draws differ; one cut short by an end token is not kept; no start token is an error.
static void test_self_samples(Target* target) {
    enum { N = 4, LENGTH = 20, MAX_NEW = 6 };
    SamplerSettings sampling = {.temperature = 1.0f, .top_p = 1.0f}, greedy = {.temperature = 0.0f, .top_p = 1.0f};
    Record* records[N];
    int dropped = -1;
    Error err;
    int start = target->tokenizer.bos_id >= 0 ? target->tokenizer.bos_id : target->tokenizer.eos_id, found = -1;
    check(self_sample_start(&target->tokenizer, &found, &err) == 0 && found == start, "start token %d, expected %d",
          found, start);
    int made = self_samples(target, start, N, LENGTH, sampling, 77, MAX_NEW, 3, records, &dropped);
    check(made == N && dropped == 0, "self samples: %d made, %d dropped, expected %d and 0", made, dropped, N);
    int matches = 0, wrong_seed_matches = 0, distinct = 0;
    for (int i = 0; i < made; i++) {
        const Record* r = records[i];
        int sample[LENGTH], continuation[MAX_NEW], other[LENGTH];
        GenerateStats stats;
        generate_plain(target, &start, 1, LENGTH, sampling, 77 + (uint64_t)i, sample, &stats, NULL, NULL);
        generate_plain(target, r->tokens, 1 + LENGTH, MAX_NEW, greedy, 0, continuation, &stats, NULL, NULL);
        generate_plain(target, &start, 1, LENGTH, sampling, 78 + (uint64_t)i, other, &stats, NULL, NULL); // control
        matches += r->n_prompt == 1 + LENGTH && r->n_tokens == 1 + LENGTH + MAX_NEW && r->tokens[0] == start &&
                   memcmp(r->tokens + 1, sample, sizeof(sample)) == 0 &&
                   memcmp(r->tokens + 1 + LENGTH, continuation, sizeof(continuation)) == 0;
        wrong_seed_matches += memcmp(r->tokens + 1, other, sizeof(other)) == 0;
        distinct += i > 0 && memcmp(r->tokens, records[0]->tokens, (size_t)r->n_tokens * sizeof(int)) != 0;
    }
    check(matches == N, "self samples: %d of %d records are the start token, generate_plain's draw with seed + i and "
          "the greedy continuation", matches, N);
    check(wrong_seed_matches == 0, "negative control: %d records equal the draw of the next seed", wrong_seed_matches);
    check(distinct == N - 1, "self samples: %d of %d draws differ from the first", distinct, N - 1);
    // a token of draw 1 past SELF_SAMPLE_MIN_TOKENS, not earlier in it, made an end token: draw 1 ends before it
    // and is kept, continued greedily from there, and equals that prompt recorded alone (every record does)
    int cut_at = -1, saved_eos = target->tokenizer.eos_id;
    for (int k = SELF_SAMPLE_MIN_TOKENS + 1; k <= LENGTH && cut_at < 0; k++) {
        int earlier = 0;
        for (int j = 1; j < k; j++) { earlier |= records[1]->tokens[j] == records[1]->tokens[k]; }
        if (!earlier) { cut_at = k; }
    }
    check(cut_at > 0, "test setup: draw 1 has a token past %d tokens not earlier in it", SELF_SAMPLE_MIN_TOKENS);
    if (cut_at > 0) {
        Record* cut[N];
        target->tokenizer.eos_id = records[1]->tokens[cut_at];
        int n_cut = self_samples(target, start, N, LENGTH, sampling, 77, MAX_NEW, 3, cut, &dropped), alone_equal = 0;
        int draw_1 = -1;
        for (int i = 0; i < n_cut; i++) {
            Record* alone = record_alone(target, cut[i]->tokens, cut[i]->n_prompt, MAX_NEW);
            alone_equal += records_equal(alone, cut[i]);
            record_free(alone);
            if (memcmp(cut[i]->tokens, records[1]->tokens, (size_t)cut_at * sizeof(int)) == 0) { draw_1 = i; }
        }
        check(n_cut >= 1 && alone_equal == n_cut && draw_1 >= 0 && cut[draw_1]->n_prompt == cut_at,
              "an end token at draw 1's token %d: %d records (%d equal to their prompt recorded alone), draw 1's prompt "
              "%d tokens", cut_at, n_cut, alone_equal, draw_1 >= 0 ? cut[draw_1]->n_prompt : -1);
        for (int i = 0; i < n_cut; i++) { record_free(cut[i]); }
        target->tokenizer.eos_id = saved_eos;
    }
    // draw 0's first token made an end token: that draw ends at once and is not kept
    int first = records[0]->tokens[1];
    for (int i = 0; i < made; i++) { record_free(records[i]); }
    target->tokenizer.eos_id = first;
    made = self_samples(target, start, N, LENGTH, sampling, 77, MAX_NEW, 3, records, &dropped);
    check(made + dropped == N && dropped >= 1 && (made == 0 || records[0]->tokens[1] != first),
          "an end token cuts draw 0: %d made, %d dropped", made, dropped);
    for (int i = 0; i < made; i++) { record_free(records[i]); }
    int saved_bos = target->tokenizer.bos_id;
    target->tokenizer.bos_id = -1; target->tokenizer.eos_id = -1;
    check(self_sample_start(&target->tokenizer, &found, &err) != 0 &&
          strstr(err.message, "neither a beginning- nor an end-of-text token") != NULL, "no start token: '%s'", err.message);
    target->tokenizer.bos_id = saved_bos; target->tokenizer.eos_id = saved_eos;
}

// ---- gradients ---------------------------------------------------------------------------------
static void test_gradients(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 120, NULL, 5);
    // larger random weights than the init, so every tensor's gradient is far from zero
    uint64_t rng = random_seed_state(8);
    for (size_t i = 0; i < draft.n_weight_floats; i++) { draft.weight_arena[i] += 0.05f * (2.0f * random_f32(&rng) - 1.0f); }
    int prompt[6] = {10, 11, 12, 13, 14, 15};
    Record* record = make_record(target, &draft, prompt, 6, 10);
    check(record->n_discard > 0, "the test record should have rejected nodes (has %d)", record->n_discard);
    const LossKind kinds[3] = {LOSS_FORWARD_KL, LOSS_REVERSE_KL, LOSS_NEXT_TOKEN};
    for (int kind = 0; kind < 3; kind++) {
        TrainerSettings settings = trainer_default_settings();
        settings.ttt_length = 3;
        settings.loss = kinds[kind];
        settings.discard_weight = 0.7f;
        settings.discard_top_k = kind == 1 ? 2 : 0; // also the top-k selection once
        settings.discard_loss = kind == 1 ? LOSS_REVERSE_KL : LOSS_FORWARD_KL;
        settings.context_window = kind == 2 ? 1 : 64; // once with most of the prompt cut from the unroll
        settings.prompt_weight = kind == 0 ? 0.5f : 0.0f; // once with the prompt positions carrying loss too
        settings.feature_weight = kind == 1 ? 0.0f : kind == 0 ? 0.3f : 2.0f; // the feature loss on, twice
        Trainer trainer;
        trainer_init(&trainer, &draft, target, settings);
        memset(trainer.grads, 0, trainer.draft.n_weight_floats * sizeof(float));
        TrainStats stats;
        memset(&stats, 0, sizeof(stats));
        float loss = record_train(&trainer, record, 1.0f, 1, &stats);
        check(isfinite(loss) && loss > 0.0f && stats.n_discard > 0, "loss %g with %d discard nodes", loss, stats.n_discard);
        check((stats.feature_loss > 0.0f) == (settings.feature_weight > 0.0f) && stats.feature_loss < loss,
              "the feature loss is %g of %g at weight %g", stats.feature_loss, loss, settings.feature_weight);
        int bad = 0, checked = 0;
        for (int t = 0; t < DRAFT_NUM_TENSORS; t++) {
            const DraftTensorInfo* info = &trainer.draft.tensors[t];
            float* weights = *info->data;
            float* grads = trainer.grads + (weights - trainer.draft.weight_arena);
            for (int sample = 0; sample < 6; sample++) {
                // sample the elements with the largest gradients half the time: they carry the signal
                size_t i = (size_t)(random_u32(&rng) % (uint32_t)info->n_elements);
                if (sample % 2 == 0) {
                    for (int probe = 0; probe < 64; probe++) {
                        size_t j = (size_t)(random_u32(&rng) % (uint32_t)info->n_elements);
                        if (fabsf(grads[j]) > fabsf(grads[i])) { i = j; }
                    }
                }
                float original = weights[i];
                float h = 1e-2f * fmaxf(1.0f, fabsf(original));
                weights[i] = original + h;
                double plus = record_train(&trainer, record, 1.0f, 0, NULL);
                weights[i] = original - h;
                double minus = record_train(&trainer, record, 1.0f, 0, NULL);
                weights[i] = original;
                double numeric = (plus - minus) / (2.0 * h);
                double analytic = grads[i];
                checked++;
                if (fabs(numeric - analytic) > 2e-3 + 5e-2 * fabs(numeric)) {
                    if (bad < 8) {
                        fprintf(stderr, "  loss %d, %s[%zu]: analytic %.6g, finite difference %.6g\n", kind,
                                info->gguf_name, i, analytic, numeric);
                    }
                    bad++;
                }
            }
        }
        check(bad == 0, "loss kind %d: %d of %d sampled gradients disagree with finite differences", kind, bad, checked);
        printf("gradient check, loss kind %d: %d sampled weights over %d tensors agree with finite differences\n",
               kind, checked, DRAFT_NUM_TENSORS);
        trainer_free(&trainer);
    }
    // the discard loss off: the record's rejected nodes take no room in the workspace (rows: the unroll's)
    Trainer trainer;
    trainer_init(&trainer, &draft, target, trainer_default_settings());
    TrainStats stats;
    memset(&stats, 0, sizeof(stats));
    record_train(&trainer, record, 1.0f, 1, &stats);
    check(trainer.work.capacity_rows <= record->n_committed && stats.n_discard == 0,
          "the discard loss off: the workspace holds %d rows for a record of %d positions and %d rejected nodes",
          trainer.work.capacity_rows, record->n_committed, record->n_discard);
    // a step's rows (training in the gaps prices a step by them): T columns at step 0, one fewer at each later step
    UnrollPlan plan;
    check(unroll_plan_columns(&plan, record, &trainer.settings), "the test record has columns");
    long rows_without = trainer_step_rows(&trainer, &record, 1);
    long expected_rows = (long)plan.T * plan.n_steps - (long)plan.n_steps * (plan.n_steps - 1) / 2;
    check(rows_without == expected_rows, "a step's rows without the discard loss: %ld (expected %ld: %d columns, %d steps)",
          rows_without, expected_rows, plan.T, plan.n_steps);
    trainer_free(&trainer);
    // on, with the top 1 per pass: rows for the nodes chosen, not for every rejected node
    TrainerSettings top1 = trainer_default_settings();
    top1.discard_weight = 0.5f;
    top1.discard_top_k = 1;
    trainer_init(&trainer, &draft, target, top1);
    memset(&stats, 0, sizeof(stats));
    record_train(&trainer, record, 1.0f, 1, &stats);
    long rows_with = trainer_step_rows(&trainer, &record, 1);
    check(rows_with == rows_without + stats.n_discard, "a step's rows with the discard loss: %ld (expected %ld and the %d "
          "discard rows in use)", rows_with, rows_without, (int)stats.n_discard);
    check(stats.n_discard > 0 && stats.n_discard < record->n_discard &&
          trainer.work.capacity_rows <= record->n_committed + stats.n_discard,
          "the top rejected node per pass: the workspace holds %d rows for a record of %d positions and %d of its %d rejected "
          "nodes in use", trainer.work.capacity_rows, record->n_committed, (int)stats.n_discard, record->n_discard);
    trainer_free(&trainer);
    record_free(record);
    draft_free(&draft);
}

// ---- the next-token loss over a vocabulary that misses tokens ------------------------------------------
// With the draft's final norm zero its logits are 0, q is uniform over its V_d ids, and each row's next-token
// loss is ln V_d. A step's loss is the weighted mean over the rows whose token the draft vocabulary holds (a
// row outside it teaches nothing), so the record's is ln V_d x the sum of 0.8^k over the steps with such a row.
// Negative control: the rows outside counted in the mean's denominator (the old rule) give less.
static void test_next_token_outside_vocabulary(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 40, NULL, 13);   // the 40 lowest ids
    for (int i = 0; i < draft.config.dim; i++) { draft.weights.output_norm[i] = 0.0f; }
    int prompt[5] = {20, 21, 22, 23, 24};
    Record* record = make_record(target, &draft, prompt, 5, 12);
    TrainerSettings settings = trainer_default_settings();
    settings.ttt_length = 3;
    settings.prompt_weight = 1.0f;
    settings.loss = LOSS_NEXT_TOKEN;
    Trainer trainer;
    trainer_init(&trainer, &draft, target, settings);
    TrainStats stats;
    memset(&stats, 0, sizeof(stats));
    record_train(&trainer, record, 1.0f, 0, &stats);
    int T = record->n_committed, outside = 0;
    double want = 0.0, old_rule = 0.0, step_weight = 1.0, ln_v = log((double)draft.config.vocab_size);
    for (int k = 0; k < settings.ttt_length; k++, step_weight *= 0.8) {
        int n = T - k - 1, inside = 0;
        for (int t = 0; t < n; t++) { inside += draft.t2d[record->tokens[t + k + 1]] >= 0; }
        outside += n - inside;
        if (inside > 0) { want += step_weight * ln_v; }
        old_rule += step_weight * ln_v * inside / n;
    }
    check(outside > 0, "the record's tokens must include some outside the draft vocabulary (none: the test proves nothing)");
    check(fabs(stats.accepted_loss - want) <= 1e-4 * want, "the next-token loss %.7g, against the oracle's %.7g",
          stats.accepted_loss, want);
    check(fabs(old_rule - want) > 1e-3 * want, "negative control: the rows outside counted give %.7g, the oracle %.7g",
          old_rule, want);
    trainer_free(&trainer);
    record_free(record);
    draft_free(&draft);
}

// ---- the feature loss's targets, against a plain oracle ---------------------------------------------
// A finite-difference check cannot see a loss compared with the wrong rows (it stays consistent with its own
// targets), so the targets are checked directly: with the draft's final norm zero its normed output y is 0,
// and the feature loss is W x sum over steps k of 0.8^k / n_k x sum over its rows t of mean_c h^2, h the
// target's hidden state at column t + k + 1 (every column a loss row: a short prompt inside the window, prompt
// weight 1). Negative control: the same sum with the hidden state at column t + 1 (k left out) differs.
static void test_feature_loss_targets(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 120, NULL, 11);
    int C = draft.config.dim;
    for (int i = 0; i < C; i++) { draft.weights.output_norm[i] = 0.0f; }
    int prompt[5] = {20, 21, 22, 23, 24};
    Record* record = make_record(target, &draft, prompt, 5, 12);
    TrainerSettings settings = trainer_default_settings();
    settings.ttt_length = 3;
    settings.prompt_weight = 1.0f;
    settings.feature_weight = 1.5f;
    Trainer trainer;
    trainer_init(&trainer, &draft, target, settings);
    TrainStats stats;
    memset(&stats, 0, sizeof(stats));
    record_train(&trainer, record, 1.0f, 0, &stats);
    int T = record->n_committed;
    float* h = mallocCheck((size_t)C * sizeof(float));
    double want = 0.0, wrong = 0.0, step_weight = 1.0;
    for (int k = 0; k < settings.ttt_length; k++, step_weight *= 0.8) {
        int n = T - k - 1;
        for (int t = 0; t < n; t++) {
            for (int shifted = 0; shifted < 2; shifted++) {
                record_rows_f32(h, record->hidden + (size_t)(t + (shifted ? 0 : k) + 1) * C, 1, C);
                double squares = 0.0;
                for (int c = 0; c < C; c++) { squares += (double)h[c] * h[c]; }
                *(shifted ? &wrong : &want) += settings.feature_weight * step_weight / n * squares / C;
            }
        }
    }
    check(fabs(stats.feature_loss - want) <= 1e-4 * want, "the feature loss %.7g, against the oracle's %.7g",
          stats.feature_loss, want);
    check(fabs(wrong - want) > 1e-3 * want, "negative control: the targets at column t + 1 give %.7g, the oracle %.7g",
          wrong, want);
    free(h);
    trainer_free(&trainer);
    record_free(record);
    draft_free(&draft);
}

// ---- which positions carry loss, against a plain oracle --------------------------------------------
static void test_loss_rows(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 100, NULL, 3);
    int prompt[9] = {30, 31, 32, 33, 34, 35, 36, 37, 38};
    Record* record = make_record(target, &draft, prompt, 9, 8);
    int checked = 0, cut_completion_rows = 0;
    for (int window = 0; window <= 9; window += 3) {
        for (int with_prompt = 0; with_prompt <= 2; with_prompt++) {   // 2: no prompt rows, at most 5 columns
            TrainerSettings s = trainer_default_settings();
            s.context_window = window;
            s.prompt_weight = with_prompt == 1 ? 0.25f : 0.0f;
            s.max_positions = with_prompt == 2 ? 5 : TRAINER_DEFAULT_MAX_POSITIONS;
            s.ttt_length = 4;
            UnrollPlan plan;
            check(unroll_plan_columns(&plan, record, &s), "the record has columns");
            // the columns, completion first: as many completion columns as max_positions holds, then as many
            // of the window's (those before the completion's first prediction) as are left
            int completion_start = record->n_prompt - 2;
            int completion = record->n_committed - completion_start;
            int kept_completion = completion < s.max_positions ? completion : s.max_positions;
            int kept_window = window < completion_start ? window : completion_start;
            if (kept_window > s.max_positions - kept_completion) { kept_window = s.max_positions - kept_completion; }
            int first = completion_start - kept_window;
            int end = record->n_committed < first + s.max_positions ? record->n_committed : first + s.max_positions;
            check(plan.first_column == first && plan.T == end - first, "window %d, max_positions %d: columns [%d, +%d), oracle [%d, +%d)",
                  window, s.max_positions, plan.first_column, plan.T, first, end - first);
            for (int k = 0; k < plan.n_steps; k++) {
                int rows[64];
                float weights[64];
                int n = unroll_loss_rows(&plan, record, &s, k, rows, weights);
                // oracle: column t predicts the token at absolute position f + t + k + 2 from the target's
                // recorded distribution at f + t + k + 1, which exists iff that index < n_committed, and is
                // in the unroll iff it is one of its columns (< end)
                int expected = 0;
                for (int t = 0; t < plan.T; t++) {
                    int teacher = plan.first_column + t + k + 1, predicted = teacher + 1;
                    if (teacher >= record->n_committed || teacher >= end) { continue; }
                    int is_prompt = predicted < record->n_prompt;
                    if (is_prompt && with_prompt != 1) { continue; }
                    cut_completion_rows += with_prompt == 2;
                    check(expected < n && rows[expected] == t && weights[expected] == (is_prompt ? 0.25f : 1.0f),
                          "window %d, prompt %d, step %d: loss row %d should be column %d", window, with_prompt, k, expected, t);
                    expected++;
                    checked++;
                }
                check(n == expected, "window %d, prompt %d, step %d: %d loss rows, oracle %d", window, with_prompt, k, n, expected);
            }
        }
    }
    // a record longer than max_positions keeps the window and the completion's first positions (it was cut
    // from its start, which left a long prompt's completion out)
    check(cut_completion_rows > 0, "a max_positions cut left no completion row");
    printf("loss rows: %d (column, step) pairs agree with the oracle\n", checked);
    record_free(record);
    draft_free(&draft);
}

// ---- masks against oracles ---------------------------------------------------------------------
static void test_masks(void) {
    // TTT: T = 6 columns, steps 0..3, no discard rows
    int T = 6, L = 4;
    int block_offset[5] = {0, 6, 11, 15, 18};
    Record empty = {0};
    uint8_t mask[6 * 18];
    int bad = 0;
    for (int k = 0; k < L; k++) {
        int rows = T - k, P = block_offset[k] + rows;
        ttt_mask(mask, k, rows, T, 0, block_offset, P, &empty, 0, NULL, NULL);
        for (int t = 0; t < rows; t++)
            for (int p = 0; p < P; p++) {
                int block = 0;
                while (block < k && p >= block_offset[block + 1]) { block++; }
                int column = p - block_offset[block];
                int expected = block == 0 ? column <= t : column == t;
                bad += mask[t * P + p] != expected;
            }
    }
    check(bad == 0, "TTT mask differs from the oracle in %d entries", bad);

    // discard rows: 4 sequence columns, 3 rejected nodes: node 0 (prefix 2), node 1 its child, node 2 (prefix 3)
    Record record = {0};
    DiscardNode nodes[3] = {{5, 3, -1, 2, 0, -1.0f}, {6, 4, 0, 2, 0, -2.0f}, {7, 4, -1, 3, 0, -1.5f}};
    record.discard = nodes;
    record.n_discard = 3;
    int used[3] = {0, 1, 2}, row_of[3] = {4, 5, 6};
    int offsets[2] = {0, 7};
    uint8_t discard_mask[7 * 7];
    ttt_mask(discard_mask, 0, 7, 4, 0, offsets, 7, &record, 0, used, row_of);
    const uint8_t expected[7][7] = {
        {1, 0, 0, 0, 0, 0, 0}, {1, 1, 0, 0, 0, 0, 0}, {1, 1, 1, 0, 0, 0, 0}, {1, 1, 1, 1, 0, 0, 0},
        {1, 1, 0, 0, 1, 0, 0},  // node 0: prefix columns 0..1, itself
        {1, 1, 0, 0, 1, 1, 0},  // node 1: prefix 0..1, its parent node 0, itself
        {1, 1, 1, 0, 0, 0, 1},  // node 2: prefix 0..2, itself
    };
    bad = 0;
    for (int i = 0; i < 7; i++) for (int j = 0; j < 7; j++) { bad += discard_mask[i * 7 + j] != expected[i][j]; }
    check(bad == 0, "discard tree mask differs from the hand-written oracle in %d entries", bad);
    // top-k selection keeps ancestors: with k = 1 per pass only node 0 (score -1.0) survives
    int used_k[3], row_k[3];
    int n = select_discard_nodes(&record, 1, TRAIN_MAX_DISCARD_ROWS, 0, 4, used_k, row_k, 4);
    check(n == 1 && used_k[0] == 0, "top-1 discard selection should keep node 0 only (kept %d)", n);
    // at most max_rows rows, the first nodes in order (a parent before its child): 2 keeps nodes 0 and 1
    n = select_discard_nodes(&record, 0, 2, 0, 4, used_k, row_k, 4);
    check(n == 2 && used_k[0] == 0 && used_k[1] == 1 && row_k[2] == -1, "at most 2 discard rows: kept %d (expected nodes 0 "
          "and 1, node 2 without a row)", n);
    n = select_discard_nodes(&record, 0, TRAIN_MAX_DISCARD_ROWS, 0, 4, used_k, row_k, 4);
    check(n == 3, "all 3 discard nodes under the cap: kept %d", n);
}

// ---- what a record keeps: the target's states in fp16, rejected nodes only when asked -----------
static void test_record_storage(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 100, NULL, 3);
    int prompt[7] = {30, 31, 32, 33, 34, 35, 36}, C = target->config.dim, G = TAP_LAYERS * C;
    Record* with = make_record(target, &draft, prompt, 7, 10);   // keeps rejected nodes
    DraftSource source;
    draft_source_init(&source, DRAFT_EAGLE, (TreeShape){2, 3, 7}, &draft, target);
    Record* without = record_new(C, 0);
    int out[64];
    SpecStats stats;
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    generate_speculative(target, &source, prompt, 7, 10, greedy, 0, out, &stats, NULL, NULL, without);
    draft_source_free(&source);
    check(with->n_discard > 0 && without->n_discard == 0 && without->discard_features == NULL,
          "a record without keep_discard keeps no rejected nodes (%d, with it %d)", without->n_discard, with->n_discard);
    check(with->n_committed == without->n_committed && with->n_tokens == without->n_tokens &&
          memcmp(with->tokens, without->tokens, (size_t)with->n_tokens * sizeof(int)) == 0 &&
          memcmp(with->features, without->features, (size_t)with->n_committed * G * sizeof(uint16_t)) == 0 &&
          memcmp(with->hidden, without->hidden, (size_t)with->n_committed * C * sizeof(uint16_t)) == 0,
          "keeping the rejected nodes must not change the sequence or its states");
    check(record_bytes(without) < record_bytes(with), "record_bytes counts the rejected nodes (%zu vs %zu)",
          record_bytes(without), record_bytes(with));
    // the states are the target's, each rounded to the nearest fp16: the prompt's from a plain prefill
    float* features = mallocCheck((size_t)7 * G * sizeof(float));
    float* hidden = mallocCheck((size_t)7 * C * sizeof(float));
    float* stored = mallocCheck((size_t)7 * G * sizeof(float));
    target_prefill(target, prompt, 7, 0, features, hidden);
    long off = 0, not_nearest = 0;
    for (int part = 0; part < 2; part++) {
        const float* want = part == 0 ? features : hidden;
        int n = part == 0 ? 7 * G : 7 * C;
        record_rows_f32(stored, part == 0 ? without->features : without->hidden, 7, part == 0 ? G : C);
        for (int i = 0; i < n; i++) {
            off += stored[i] != fp16_to_fp32(fp32_to_fp16(want[i]));
            // half a unit in the last place: 2^-11 relative for a normal fp16, 2^-25 for a subnormal
            not_nearest += fabsf(stored[i] - want[i]) > fmaxf(fabsf(want[i]) * (1.0f / 2048.0f), 1.0f / 33554432.0f);
        }
    }
    check(off == 0 && not_nearest == 0, "the record's states must be the target's rounded to fp16 (%ld differ, %ld beyond "
          "half a unit)", off, not_nearest);
    // beyond fp16's range a finite state saturates (a massive activation stays large and finite); NaN stays NaN,
    // and an infinity stays one (so a step on it is rejected, as on a NaN; it once became a finite 65504)
    float extremes[7] = {1e6f, -70000.0f, 65504.0f, NAN, 3.0f, INFINITY, -INFINITY}, back[7];
    uint16_t packed[7];
    record_rows_store(packed, extremes, 1, 7);
    record_rows_f32(back, packed, 1, 7);
    check(back[0] == 65504.0f && back[1] == -65504.0f && back[2] == 65504.0f && isnan(back[3]) && back[4] == 3.0f &&
          back[5] == INFINITY && back[6] == -INFINITY, "saturation: %g %g %g %g %g %g %g, expected 65504 -65504 65504 "
          "nan 3 inf -inf", back[0], back[1], back[2], back[3], back[4], back[5], back[6]);
    free(features); free(hidden); free(stored);
    record_free(with);
    record_free(without);
    draft_free(&draft);
}

// ---- non-finite updates, ring buffer, exchange -------------------------------------------------
static void test_rejection_and_buffers(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 100, NULL, 2);
    int prompt[5] = {20, 21, 22, 23, 24};
    Record* record = make_record(target, &draft, prompt, 5, 8);
    record->hidden[(size_t)(record->n_committed - 1) * target->config.dim] = fp32_to_fp16(NAN); // a corrupted target state
    Trainer trainer;
    trainer_init(&trainer, &draft, target, trainer_default_settings());
    float* before = mallocCheck(draft.n_weight_floats * sizeof(float));
    memcpy(before, trainer.draft.weight_arena, draft.n_weight_floats * sizeof(float));
    TrainStats stats;
    int rejected = trainer_step(&trainer, &record, 1, &stats);
    check(rejected == 1 && stats.rejected && trainer.rejected_updates == 1 && trainer.step == 0,
          "a non-finite loss must reject the update (rejected %d, counted %ld)", rejected, trainer.rejected_updates);
    check(memcmp(before, trainer.draft.weight_arena, draft.n_weight_floats * sizeof(float)) == 0,
          "a rejected update must leave the weights bit-identical");
    trainer_free(&trainer);
    // a batch without a loss row (one column: nothing after it to predict): no update, no step
    record->hidden[(size_t)(record->n_committed - 1) * target->config.dim] = fp32_to_fp16(0.0f);
    TrainerSettings prompt_only = trainer_default_settings();
    prompt_only.prompt_weight = 0.0f;
    prompt_only.max_positions = 1;
    prompt_only.warmup_steps = 0;
    trainer_init(&trainer, &draft, target, prompt_only);
    int empty = trainer_step(&trainer, &record, 1, &stats);
    check(empty == 2 && trainer.step == 0 && stats.n_positions == 0 &&
          memcmp(before, trainer.draft.weight_arena, draft.n_weight_floats * sizeof(float)) == 0,
          "a batch without loss rows must leave the weights and the step count as they were (returned %d, step %d)",
          empty, trainer.step);
    trainer_free(&trainer);
    // the next-token loss with none of the record's tokens in the draft vocabulary: loss rows, all of weight 0,
    // teach nothing either (an AdamW step on a zero gradient still moved the weights by their moments)
    int V = target->config.vocab_size, n_ids = 0;
    uint8_t* seen = callocCheck((size_t)V, 1);
    for (int i = 0; i < record->n_tokens; i++) { seen[record->tokens[i]] = 1; }
    int32_t outside[50];
    for (int id = 0; id < V && n_ids < 50; id++) { if (!seen[id]) { outside[n_ids++] = id; } }
    free(seen);
    Draft elsewhere;
    draft_init_random(&elsewhere, target, n_ids, outside, 3);
    TrainerSettings next_token = trainer_default_settings();
    next_token.loss = LOSS_NEXT_TOKEN;
    next_token.warmup_steps = 0;
    trainer_init(&trainer, &elsewhere, target, next_token);
    float* start = mallocCheck(elsewhere.n_weight_floats * sizeof(float));
    memcpy(start, trainer.draft.weight_arena, elsewhere.n_weight_floats * sizeof(float));
    int unweighted = trainer_step(&trainer, &record, 1, &stats);
    check(unweighted == 2 && trainer.step == 0 && stats.n_positions > 0 && stats.n_weighted == 0 &&
          memcmp(start, trainer.draft.weight_arena, elsewhere.n_weight_floats * sizeof(float)) == 0,
          "next-token loss, every token outside the draft vocabulary: no update, no step (returned %d, step %d, %d rows, "
          "%d weighted)", unweighted, trainer.step, stats.n_positions, stats.n_weighted);
    free(start);
    draft_free(&elsewhere);
    free(before);
    trainer_free(&trainer);
    record_free(record);
    draft_free(&draft);

    RecordBuffer* buffer = record_buffer_new(3);
    Record* records[5];
    for (int i = 0; i < 5; i++) { records[i] = record_new(4, 0); records[i]->n_prompt = i; record_buffer_push(buffer, records[i]); }
    long pushed, dropped;
    int depth;
    record_buffer_counts(buffer, &pushed, &dropped, &depth);
    check(pushed == 5 && dropped == 2 && depth == 3, "ring buffer: pushed %ld dropped %ld depth %d, expected 5, 2, 3", pushed, dropped, depth);
    Record* popped[5];
    int n = record_buffer_pop(buffer, popped, 5, 0);
    check(n == 3 && popped[0]->n_prompt == 2 && popped[1]->n_prompt == 3 && popped[2]->n_prompt == 4,
          "the ring buffer must drop the oldest and keep order");
    for (int i = 0; i < n; i++) { record_free(popped[i]); }
    record_buffer_close(buffer);
    check(record_buffer_pop(buffer, popped, 5, 1) == 0, "pop on a closed empty buffer must return at once");
    record_buffer_free(buffer);

    WeightExchange* exchange = weight_exchange_new(4, 2);
    float a[4] = {1, 1, 1, 1}, b[4] = {2, 2, 2, 2}, c[4] = {3, 3, 3, 3};
    int32_t ids_a[2] = {5, 6}, ids_b[2] = {7, 8}, ids_c[2] = {9, 4};
    int version = 0;
    const int32_t* ids = NULL;
    check(weight_exchange_take(exchange, 0, &version, &ids) == NULL, "nothing published yet");
    check(weight_exchange_publish(exchange, a, ids_a) == 1, "first publish is version 1");
    // a publish while the previous one waits supersedes it: the server takes the newest weights (it once
    // skipped the publish, and a server that takes nothing for a while got the first of them)
    check(weight_exchange_publish(exchange, b, ids_b) == 2, "a publish while the previous one waits is version 2");
    float* served = weight_exchange_take(exchange, 0, &version, &ids);
    check(served && version == 2 && served[0] == 2.0f && ids[0] == 7 && ids[1] == 8, "take returns the newest, version 2, "
          "and its vocabulary (got version %d, weight %g)", version, served ? served[0] : -1.0f);
    const int32_t* served_ids = ids;
    check(weight_exchange_publish(exchange, c, ids_c) == 3, "after the take the next publish is version 3");
    check(served[0] == 2.0f && served_ids[0] == 7, "publishing must not write the buffer being served");
    float* newer = weight_exchange_take(exchange, version, &version, &ids);
    check(newer && newer != served && newer[0] == 3.0f && version == 3 && ids[0] == 9 && ids[1] == 4,
          "take returns version 3 and its vocabulary in the other buffer");
    check(weight_exchange_superseded(exchange) == 1, "one superseded publish counted");
    weight_exchange_free(exchange);
}

// The start of the single-step tests below (--freeze-head, clipping): a draft of 120 entries with the target's
// LM head, one record of a 6-token prompt, and settings with no warm-up and lr 1e-3
static Record* one_step_start(Target* target, Draft* draft, TrainerSettings* settings) {
    draft_init_random(draft, target, 120, NULL, 6);
    draft_init_from_target(draft, target);
    int prompt[6] = {30, 31, 32, 33, 34, 35};
    *settings = trainer_default_settings();
    settings->warmup_steps = 0;
    settings->learning_rate = 1e-3f;
    return make_record(target, draft, prompt, 6, 10);
}

// ---- --freeze-head: the LM head keeps its rows, everything else trains ---------------------------
// (with weight decay too, which shrank the frozen rows though their gradient is zero)
static void test_freeze_head(Target* target) {
    for (int decay = 0; decay < 2; decay++) {
        Draft draft;
        TrainerSettings settings;
        Record* record = one_step_start(target, &draft, &settings);
        settings.freeze_lm_head = 1;
        settings.weight_decay = decay ? 0.1f : 0.0f;
        Trainer trainer;
        trainer_init(&trainer, &draft, target, settings);
        size_t n = draft.n_weight_floats, head = (size_t)(trainer.draft.weights.lm_head - trainer.draft.weight_arena);
        size_t head_floats = (size_t)draft.config.vocab_size * draft.config.dim;
        check(head + head_floats == n, "the LM head is the arena's last tensor (%zu + %zu of %zu floats)", head, head_floats, n);
        float* before = mallocCheck(n * sizeof(float));
        memcpy(before, trainer.draft.weight_arena, n * sizeof(float));
        TrainStats stats;
        check(trainer_step(&trainer, &record, 1, &stats) == 0 && trainer_step(&trainer, &record, 1, &stats) == 0,
              "frozen head: steps applied");
        size_t head_changed = 0, rest_changed = 0;
        for (size_t i = 0; i < n; i++) {
            int in_head = i >= head && i < head + head_floats;
            if (trainer.draft.weight_arena[i] != before[i]) { head_changed += in_head; rest_changed += !in_head; }
        }
        check(head_changed == 0 && rest_changed > n / 4, "--freeze-head, weight decay %g: %zu LM-head weights changed "
              "(expected 0), %zu others changed", (double)settings.weight_decay, head_changed, rest_changed);
        free(before);
        record_free(record);
        trainer_free(&trainer);
        draft_free(&draft);
    }
}

// ---- gradient clipping: the step AdamW takes is the clipped gradient's --------------------------------
// A step with clipping on (a threshold far below the gradient's norm) against AdamW written out on the
// unclipped gradients of the same step (a trainer with clipping off leaves them in its buffer) times the
// factor threshold / norm: the same weights bit for bit; the factor left out (1) must differ.
static void test_clipping(Target* target) {
    Draft draft;
    TrainerSettings settings;
    Record* record = one_step_start(target, &draft, &settings);
    settings.max_grad_norm = 1e-3f;
    TrainerSettings unclipped = settings;
    unclipped.max_grad_norm = 0.0f;
    Trainer clipped_trainer, plain_trainer;
    trainer_init(&clipped_trainer, &draft, target, settings);
    trainer_init(&plain_trainer, &draft, target, unclipped);
    size_t n = draft.n_weight_floats;
    float* expected[2];
    for (int i = 0; i < 2; i++) { expected[i] = mallocCheck(n * sizeof(float)); memcpy(expected[i], clipped_trainer.draft.weight_arena, n * sizeof(float)); }
    TrainStats stats;
    check(trainer_step(&clipped_trainer, &record, 1, &stats) == 0, "clipping: the clipped step applied");
    check(trainer_step(&plain_trainer, &record, 1, &stats) == 0, "clipping: the unclipped step applied");
    const Backend* b = plain_trainer.backend;
    check(b->host_memory, "clipping: the test's table keeps the gradients on the host");
    double norm = sqrt(b->sum_squares(plain_trainer.grads, n));
    check(norm > 10 * settings.max_grad_norm, "clipping: the gradient's norm %g is over the threshold", norm);
    float factors[2] = {(float)(settings.max_grad_norm / norm), 1.0f};
    for (int i = 0; i < 2; i++) {
        float* m = callocCheck(n, sizeof(float));
        float* v = callocCheck(n, sizeof(float));
        adamw_update_cpu(expected[i], plain_trainer.grads, factors[i], m, v, n, settings.learning_rate, settings.beta1,
                         settings.beta2, settings.adam_eps, settings.weight_decay, 1);
        free(m); free(v);
    }
    check(memcmp(clipped_trainer.draft.weight_arena, expected[0], n * sizeof(float)) == 0,
          "clipping: the clipped step differs from AdamW on the gradient times threshold / norm");
    check(memcmp(clipped_trainer.draft.weight_arena, expected[1], n * sizeof(float)) != 0,
          "negative control: the clipped step matched AdamW on the unclipped gradient");
    for (int i = 0; i < 2; i++) { free(expected[i]); }
    record_free(record);
    trainer_free(&clipped_trainer);
    trainer_free(&plain_trainer);
    draft_free(&draft);
}

// ---- bf16 products (--train-precision bf16): the same steps within their rounding -----------------
// Three steps from the same draft and record with fp32 and with bf16 products: the trainer runs on the fast
// table's twin, the losses and gradient norms agree within 0.1% and 0.5% (measured: 6e-5 and 3e-4 at most),
// the weights end within a tenth of the distance the three steps moved them (measured: 3%), and they are not
// the fp32 bits (the twin really ran).
static void test_bf16_steps(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 120, NULL, 8);
    draft_init_from_target_layer(&draft, target);
    int prompt[7] = {40, 41, 42, 43, 44, 45, 46};
    Record* record = make_record(target, &draft, prompt, 7, 12);
    float* start = mallocCheck(draft.n_weight_floats * sizeof(float));
    memcpy(start, draft.weight_arena, draft.n_weight_floats * sizeof(float));
    float* after[2];
    TrainStats stats[2][3];
    for (int bf16 = 0; bf16 < 2; bf16++) {
        TrainerSettings settings = trainer_default_settings();
        settings.warmup_steps = 0;
        settings.learning_rate = 1e-3f;
        settings.bf16_products = bf16;
        Trainer trainer;
        trainer_init(&trainer, &draft, target, settings);
        check(trainer.backend == (bf16 ? &backend_cpu_fast_bf16 : target->backend), "bf16 %d: the trainer's table", bf16);
        for (int k = 0; k < 3; k++) { check(trainer_step(&trainer, &record, 1, &stats[bf16][k]) == 0, "bf16 %d: step %d applied", bf16, k); }
        after[bf16] = mallocCheck(draft.n_weight_floats * sizeof(float));
        memcpy(after[bf16], trainer.draft.weight_arena, draft.n_weight_floats * sizeof(float));
        trainer_free(&trainer);
    }
    for (int k = 0; k < 3; k++) {
        double loss = stats[0][k].loss, norm = stats[0][k].grad_norm;
        check(fabs(stats[1][k].loss - loss) <= 1e-3 * fabs(loss) && fabs(stats[1][k].grad_norm - norm) <= 5e-3 * norm,
              "bf16 step %d: loss %.6g and gradient norm %.6g against fp32's %.6g and %.6g", k, stats[1][k].loss,
              stats[1][k].grad_norm, loss, norm);
    }
    double moved = 0.0, apart = 0.0;
    for (size_t i = 0; i < draft.n_weight_floats; i++) {
        moved += ((double)after[0][i] - start[i]) * ((double)after[0][i] - start[i]);
        apart += ((double)after[1][i] - after[0][i]) * ((double)after[1][i] - after[0][i]);
    }
    check(apart > 0.0 && sqrt(apart) <= 0.1 * sqrt(moved), "bf16 steps: weights %.3g from fp32's after three steps that moved "
          "them %.3g (expected a small, nonzero fraction)", sqrt(apart), sqrt(moved));
    free(after[0]); free(after[1]); free(start);
    record_free(record);
    draft_free(&draft);
}

// ---- the draft vocabulary follows the traffic --------------------------------------------------
// The oracle: one swap at a time, searching every id: evict the least counted entry (ties: the highest
// id), admit the most counted id outside (ties: the lowest; at least VOCAB_MIN_COUNT), while the admitted
// count is more than twice the evicted one.
static int vocabulary_swaps_oracle(const long* counts, const int32_t* d2t_in, int V_d, int V, int* slots, int32_t* ids) {
    int32_t* d2t = mallocCheck((size_t)V_d * sizeof(int32_t));
    memcpy(d2t, d2t_in, (size_t)V_d * sizeof(int32_t));
    uint8_t* inside = callocCheck((size_t)V, 1);
    for (int i = 0; i < V_d; i++) { inside[d2t[i]] = 1; }
    int n = 0;
    for (;;) {
        int evict = -1, admit = -1;
        for (int i = 0; i < V_d; i++) {
            if (evict < 0 || counts[d2t[i]] < counts[d2t[evict]] ||
                (counts[d2t[i]] == counts[d2t[evict]] && d2t[i] > d2t[evict])) { evict = i; }
        }
        for (int id = 0; id < V; id++) {
            if (inside[id] || counts[id] < VOCAB_MIN_COUNT) { continue; }
            if (admit < 0 || counts[id] > counts[admit]) { admit = id; }
        }
        if (evict < 0 || admit < 0 || counts[admit] <= 2 * counts[d2t[evict]]) { break; }
        slots[n] = evict; ids[n] = admit; n++;
        inside[d2t[evict]] = 0; inside[admit] = 1; d2t[evict] = admit;
    }
    free(d2t);
    free(inside);
    return n;
}

static void test_vocabulary(Target* target) {
    enum { V_D = 100 };
    int V = target->config.vocab_size, C = target->config.dim;
    uint64_t rng = random_seed_state(21);
    // the choice against the oracle, on counts with many zeros and ties
    for (int trial = 0; trial < 20; trial++) {
        Draft draft;
        int32_t d2t[V_D];
        for (int i = 0; i < V_D; i++) { d2t[i] = (int32_t)((i * 7 + trial * 13) % V); } // distinct: 7 is prime to V = 300
        draft_init_random(&draft, target, V_D, d2t, 3);
        long* counts = callocCheck((size_t)V, sizeof(long));
        for (int id = 0; id < V; id++) { counts[id] = random_u32(&rng) % 3 == 0 ? (long)(random_u32(&rng) % (trial + 2)) : 0; }
        int slots[V_D], slots_oracle[V_D];
        int32_t ids[V_D], ids_oracle[V_D];
        int n = vocabulary_swaps(counts, draft.d2t, draft.t2d, V_D, V, slots, ids);
        int n_oracle = vocabulary_swaps_oracle(counts, draft.d2t, V_D, V, slots_oracle, ids_oracle);
        int same = n == n_oracle && memcmp(slots, slots_oracle, sizeof(int) * n) == 0 && memcmp(ids, ids_oracle, sizeof(int32_t) * n) == 0;
        check(same, "trial %d: vocabulary swaps (%d) differ from the one-at-a-time oracle (%d)", trial, n, n_oracle);
        if (trial == 5) { // negative control: one admitted id's count lowered below its evictee's: the oracle disagrees
            check(n > 0, "trial 5 should swap");
            if (n > 0) {
                counts[ids[0]] = 0;
                int n_control = vocabulary_swaps_oracle(counts, draft.d2t, V_D, V, slots_oracle, ids_oracle);
                check(n_control != n || memcmp(ids, ids_oracle, sizeof(int32_t) * n) != 0,
                      "negative control: the oracle should see the changed counts");
            }
        }
        free(counts);
        draft_free(&draft);
    }

    // the trainer's swap: vocabulary, LM-head rows from the target, teacher rows, moments reset, the rest untouched
    Draft draft;
    draft_init_random(&draft, target, V_D, NULL, 9);
    TrainerSettings settings = trainer_default_settings();
    settings.adapt_vocabulary = 1;
    Trainer trainer;
    trainer_init(&trainer, &draft, target, settings);
    size_t n_floats = draft.n_weight_floats, head = (size_t)(trainer.draft.weights.lm_head - trainer.draft.weight_arena);
    for (size_t i = 0; i < n_floats; i++) { trainer.adam_m[i] = 1.0f; trainer.adam_v[i] = 2.0f; }
    float* before = mallocCheck(n_floats * sizeof(float));
    memcpy(before, trainer.draft.weight_arena, n_floats * sizeof(float));
    int prompt[12] = {150, 151, 150, 151, 150, 151, 152, 152, 152, 5, 6, 7};
    Record* record = record_new(C, 0);
    record->n_tokens = 12;
    record->tokens = mallocCheck(sizeof(prompt));
    memcpy(record->tokens, prompt, sizeof(prompt));
    trainer_count_tokens(&trainer, record);
    check(trainer.token_counts[150] == 2 && trainer.token_counts[151] == 3 && trainer.token_counts[152] == 3 &&
          trainer.token_counts[5] == 1, "counts: every token after the first, once per occurrence");
    int n = trainer_adapt_vocabulary(&trainer);
    // 151 and 152 (3 each) and 150 (2) come in, in that order, replacing the highest unseen ids 99, 98, 97
    int expect_slot[3] = {99, 98, 97}, expect_id[3] = {151, 152, 150};
    check(n == 3 && trainer.vocabulary_swaps == 3, "three ids should enter the vocabulary (got %d)", n);
    float* row = mallocCheck((size_t)C * sizeof(float));
    Error err;
    for (int i = 0; i < 3 && i < n; i++) {
        int slot = expect_slot[i], id = expect_id[i];
        check(trainer.draft.d2t[slot] == id && trainer.draft.t2d[id] == slot && trainer.draft.t2d[slot] == -1,
              "swap %d: slot %d should map to %d and back (d2t %d, t2d %d)", i, slot, id, trainer.draft.d2t[slot],
              trainer.draft.t2d[id]);
        check(target_read_rows(target, target_output_name(target), &trainer.draft.d2t[slot], 1, row, &err) == 0, "read row");
        size_t at = (size_t)slot * C;
        check(memcmp(trainer.draft.weights.lm_head + at, row, (size_t)C * sizeof(float)) == 0 &&
              memcmp(trainer.head_rows + at, row, (size_t)C * sizeof(float)) == 0,
              "swap %d: the LM-head row and the teacher's row should be the target's row of id %d", i, id);
        int zeroed = 1;
        for (int c = 0; c < C; c++) { zeroed &= trainer.adam_m[head + at + c] == 0.0f && trainer.adam_v[head + at + c] == 0.0f; }
        check(zeroed, "swap %d: the new row's moments should start at zero", i);
    }
    size_t changed = 0, moments_changed = 0;
    for (size_t i = 0; i < n_floats; i++) {
        int swapped_row = i >= head + (size_t)97 * C && i < head + (size_t)100 * C;
        changed += !swapped_row && trainer.draft.weight_arena[i] != before[i];
        moments_changed += !swapped_row && (trainer.adam_m[i] != 1.0f || trainer.adam_v[i] != 2.0f);
    }
    check(changed == 0 && moments_changed == 0, "a swap must touch only its rows (%zu weights, %zu moments elsewhere changed)",
          changed, moments_changed);
    int consistent = 1;
    for (int i = 0; i < V_D; i++) { consistent &= trainer.draft.t2d[trainer.draft.d2t[i]] == i; }
    int inside = 0;
    for (int id = 0; id < V; id++) { inside += trainer.draft.t2d[id] >= 0; }
    check(consistent && inside == V_D, "t2d must stay the inverse of d2t (%d ids inside, expected %d)", inside, V_D);
    check(trainer_adapt_vocabulary(&trainer) == 0, "nothing more to swap on the same counts");
    // the held-back evaluator (a trainer made from the original draft) takes weights and vocabulary together
    Trainer evaluator;
    trainer_init(&evaluator, &draft, target, trainer_default_settings());
    trainer_set_weights(&evaluator, trainer.draft.weight_arena, trainer.draft.d2t);
    check(memcmp(evaluator.draft.d2t, trainer.draft.d2t, V_D * sizeof(int32_t)) == 0 && evaluator.draft.t2d[151] == 99 &&
          evaluator.draft.t2d[99] == -1 && memcmp(evaluator.head_rows, trainer.head_rows, (size_t)V_D * C * sizeof(float)) == 0 &&
          memcmp(evaluator.draft.weight_arena, trainer.draft.weight_arena, n_floats * sizeof(float)) == 0,
          "trainer_set_weights: the evaluator's vocabulary, teacher rows and weights should follow the trainer's");
    trainer_free(&evaluator);
    // the serving side takes the vocabulary with the weights
    draft_use_vocabulary(&draft, trainer.draft.d2t);
    check(memcmp(draft.d2t, trainer.draft.d2t, V_D * sizeof(int32_t)) == 0 && draft.t2d[151] == 99 && draft.t2d[99] == -1,
          "draft_use_vocabulary: the serving draft's d2t and t2d follow");
    free(row);
    free(before);
    record_free(record);
    trainer_free(&trainer);
    draft_free(&draft);
}

// ---- replays: learning, lockstep repeatability -------------------------------------------------
// A learnable stream: prompts cycling through a few short phrases of the tiny tokenizer's text.
static void write_traffic(const char* path, int n) {
    FILE* f = fopen(path, "w");
    const char* phrases[4] = {"the cat sat on the mat and the dog", "int main(void) { return 0; }",
                              "for i in range(10): print(i)", "hello world, hello world"};
    for (int i = 0; i < n; i++) { fprintf(f, "{\"domain\": \"d%d\", \"prompt\": \"%s\"}\n", i % 2, phrases[i % 4]); }
    fclose(f);
}

static Options tiny_replay(const char* model, const char* traffic, const char* out_dir) {
    Options o = replay_default_options();
    o.model_path = model; o.traffic_path = traffic; o.out_dir = out_dir; o.order = "ordered";
    o.max_new = 24; o.context = 256; o.draft_vocab = 300;
    o.train.learning_rate = 3e-3f; o.train.warmup_steps = 5; o.train.ttt_length = 3;
    // a random start, trained on the completion (not replay's defaults for the default model): these
    // tests' thresholds were set for it, and it must not move when those defaults do
    o.draft = "random"; o.train.prompt_weight = 0.0f; o.train.context_window = TRAINER_DEFAULT_CONTEXT_WINDOW;
    o.steps_per_request = 1;
    o.quiet = 1;
    return o;
}

static double mean_acceptance(const char* csv_path, int from, int to) {
    RequestRows rows;
    Error err;
    if (read_requests_csv(csv_path, &rows, &err) != 0) { fprintf(stderr, "%s\n", err.message); return -1; }
    double sum = 0;
    int n = 0;
    for (int i = from; i < to && i < rows.n; i++) { sum += rows.acceptance[i]; n++; }
    request_rows_free(&rows);
    return n ? sum / n : -1;
}

// The CSV without the seconds column (wall time differs between runs).
static char* csv_without_seconds(const char* path) {
    FILE* f = fopen(path, "r");
    if (!f) { return strdup(""); }
    char line[512];
    size_t capacity = 1 << 16, used = 0;
    char* text = callocCheck(capacity, 1);
    while (fgets(line, sizeof(line), f)) {
        char* fields[9];
        int n = 0;
        for (char* p = strtok(line, ",\n"); p && n < 9; p = strtok(NULL, ",\n")) { fields[n++] = p; }
        for (int i = 0; i < n; i++) {
            if (i == 6) { continue; }
            used += (size_t)snprintf(text + used, capacity - used, "%s,", fields[i]);
        }
        used += (size_t)snprintf(text + used, capacity - used, "\n");
    }
    fclose(f);
    return text;
}

// ---- the held-back evaluation replays greedy chain serving exactly ------------------------------

// On a table whose attention is bounded (CUDA), trainer_evaluate_fits compares the unroll's keys with the
// bound: the whole record at step 0, then each later step's completion columns from the last prompt position
// (a record of n tokens, prompt p: n + sum over k = 1..depth-1 of (n - k - (p - 1))), written out here.
static int evaluation_limit;
static int evaluation_limited(int HS) { (void)HS; return evaluation_limit; }
static void check_evaluation_bound(Trainer* evaluator, const Record* record, int depth) {
    int n = record->n_committed, p = record->n_prompt, keys = n;
    for (int k = 1; k < depth && k < n - (p - 1); k++) { keys += n - k - (p - 1); }
    const Backend* saved = evaluator->backend;
    Backend limited = *saved;
    limited.attention_max_slots = evaluation_limited;
    evaluator->backend = &limited;
    evaluation_limit = keys;
    int at = trainer_evaluate_fits(evaluator, record, depth);
    evaluation_limit = keys - 1;
    int below = trainer_evaluate_fits(evaluator, record, depth);
    evaluator->backend = saved;
    check(at && !below && trainer_evaluate_fits(evaluator, record, depth), "depth %d, %d tokens (prompt %d): the unroll's "
          "%d keys fit a bound of %d (%d) and not %d (%d), and always an unbounded table", depth, n, p, keys, keys, at,
          keys - 1, below);
}
static void test_evaluation(const char* model, const char* traffic_path, const char* draft_path) {
    Target target;
    Error err;
    if (target_load(&target, model, backend_cpu(), 256, 64, &err) != 0) { check(0, "load: %s", err.message); return; }
    target.tokenizer.eos_id = -1; target.tokenizer.n_end_ids = 0;
    Draft trained, fresh;
    check(draft_load(&trained, draft_path, &target, &err) == 0, "load the trained draft: %s", err.message);
    draft_init_random(&fresh, &target, trained.config.vocab_size, trained.d2t, 123);
    Traffic traffic;
    check(traffic_load(&traffic, traffic_path, &err) == 0, "traffic: %s", err.message);
    int depths[3] = {1, 3, 5};
    int exact = 0, differs = 0, max_new = 20;
    double best = 0;
    for (int d = 0; d < 3; d++) {
        DraftSource source;
        draft_source_init(&source, DRAFT_EAGLE, (TreeShape){1, depths[d], depths[d] + 1}, &trained, &target);
        Trainer evaluator, control;
        TrainerSettings narrow = trainer_default_settings();
        narrow.context_window = 2; // shorter than every prompt: serving's draft attends to the whole prompt, so must the replay
        trainer_init(&evaluator, &trained, &target, narrow);
        trainer_evaluate_as_served(&evaluator, trained.serving_type);   // the served draft's copy (Q8_0 on the int8 table)
        trainer_init(&control, &fresh, &target, trainer_default_settings());
        for (int r = 0; r < 6; r++) {
            int prompt[256], out[64];
            int n_prompt = prompt_encode(&target.tokenizer, traffic.requests[r].prompt, 0, prompt, 200, &err);
            Record* record = record_new(target.config.dim, 1);
            SpecStats stats;
            SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
            int n = generate_speculative(&target, &source, prompt, n_prompt, max_new, greedy, 0, out, &stats, NULL, NULL, record);
            long emitted = 0, passes = 0, control_emitted = 0, control_passes = 0;
            check(trainer_evaluate(&evaluator, record, depths[d], &emitted, &passes), "evaluate");
            trainer_evaluate(&control, record, depths[d], &control_emitted, &control_passes);
            // serving's last pass may run past max_new (its emitted count includes what was cut); the pass
            // count is exact, and the replay emits exactly the tokens after the prefill's
            check(passes == stats.verify_passes && emitted == n - 1, "depth %d request %d: replay %ld passes / %ld tokens, "
                  "serving %d passes / %d tokens", depths[d], r, passes, emitted, stats.verify_passes, n - 1);
            exact += passes == stats.verify_passes;
            differs += control_passes != stats.verify_passes; // negative control: another draft, other passes
            if ((double)stats.emitted / stats.verify_passes > best) { best = (double)stats.emitted / stats.verify_passes; }
            if (r == 0) { check_evaluation_bound(&evaluator, record, depths[d]); }
            record_free(record);
        }
        trainer_free(&evaluator);
        trainer_free(&control);
        draft_source_free(&source);
    }
    printf("held-back evaluation: %d of 18 replays match serving's passes exactly (best acceptance length %.2f); "
           "a different draft differs on %d\n", exact, best, differs);
    check(best > 1.5, "the trained draft should accept something (best %.2f)", best);
    check(differs > 0, "negative control: a different draft must replay differently");
    traffic_free(&traffic);
    draft_free(&trained);
    draft_free(&fresh);
    target_free(&target);
}

// ---- the hybrid takes, per pass, the better of the suffix and EAGLE drafts ----------------------
// On the learnable stream with the trained draft: the hybrid's acceptance must be at least about the better
// of the two sources' (it cannot know a pass's outcome in advance, so a little is lost to its estimates).
static void test_hybrid_choice(const char* model, const char* traffic_path, const char* draft_path) {
    Target target;
    Error err;
    if (target_load(&target, model, backend_cpu(), 256, 64, &err) != 0) { check(0, "load: %s", err.message); return; }
    target.tokenizer.eos_id = -1; target.tokenizer.n_end_ids = 0;
    Draft draft;
    check(draft_load(&draft, draft_path, &target, &err) == 0, "load the trained draft: %s", err.message);
    Traffic traffic;
    check(traffic_load(&traffic, traffic_path, &err) == 0, "traffic: %s", err.message);
    DraftKind kinds[3] = {DRAFT_EAGLE, DRAFT_SUFFIX, DRAFT_HYBRID};
    const char* names[3] = {"eagle", "suffix", "hybrid"};
    double acceptance[3];
    int suffix_passes = 0, passes_hybrid = 0;
    for (int k = 0; k < 3; k++) {
        DraftSource source;
        draft_source_init(&source, kinds[k], (TreeShape){1, 4, 5}, kinds[k] == DRAFT_SUFFIX ? NULL : &draft, &target);
        long emitted = 0, passes = 0;
        for (int r = 0; r < 24; r++) {
            int prompt[256], out[64];
            int n_prompt = prompt_encode(&target.tokenizer, traffic.requests[r].prompt, 0, prompt, 200, &err);
            SpecStats stats;
            SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
            generate_speculative(&target, &source, prompt, n_prompt, 20, greedy, 0, out, &stats, NULL, NULL, NULL);
            emitted += stats.emitted;
            passes += stats.verify_passes;
            if (kinds[k] == DRAFT_HYBRID) { suffix_passes += stats.passes_suffix; passes_hybrid += stats.verify_passes; }
        }
        acceptance[k] = (double)emitted / passes;
        draft_source_free(&source);
    }
    printf("hybrid choice: acceptance length eagle %.2f, suffix %.2f, hybrid %.2f (the suffix draft in %d of %d passes)\n",
           acceptance[0], acceptance[1], acceptance[2], suffix_passes, passes_hybrid);
    double best = acceptance[0] > acceptance[1] ? acceptance[0] : acceptance[1];
    check(acceptance[2] >= 0.95 * best, "the hybrid (%.2f) should be about as good as the better source (%.2f)",
          acceptance[2], best);
    check(suffix_passes > 0 && suffix_passes < passes_hybrid, "the hybrid should use both sources (%d of %d suffix)",
          suffix_passes, passes_hybrid);
    (void)names;
    traffic_free(&traffic);
    draft_free(&draft);
    target_free(&target);
}

// A lockstep round follows every lockstep_every requests, skipped ones included: a prompt too long for the
// context at a round's boundary once moved the round to the next boundary, and the requests between were
// served by stale weights.
static void test_lockstep_round_after_a_skip(const char* model) {
    const char* traffic = temp_path("skip.jsonl");
    FILE* f = fopen(traffic, "w");
    fprintf(f, "{\"domain\": \"d\", \"prompt\": \"the cat sat on the mat\"}\n{\"domain\": \"d\", \"prompt\": \"");
    for (int i = 0; i < 400; i++) { fprintf(f, "w%d ", i); }   // far more tokens than the context holds
    fprintf(f, "\"}\n{\"domain\": \"d\", \"prompt\": \"hello world\"}\n{\"domain\": \"d\", \"prompt\": \"int main\"}\n");
    fclose(f);
    Options o = tiny_replay(model, traffic, temp_path("skip_out"));
    o.lockstep_every = 2;
    // an earlier run's held-back file and chart in the directory: this run (no held-back set) removes the file
    // and replaces the chart
    Error err;
    char stale_eval[600], stale_chart[600];
    snprintf(stale_eval, sizeof(stale_eval), "%s/held_back.csv", o.out_dir);
    snprintf(stale_chart, sizeof(stale_chart), "%s/acceptance.svg", o.out_dir);
    check(make_directories(o.out_dir, &err) == 0, "mkdir %s", o.out_dir);
    for (int i = 0; i < 2; i++) {
        FILE* stale = fopen(i == 0 ? stale_eval : stale_chart, "w");
        if (stale) { fputs("an earlier run\n", stale); fclose(stale); }
    }
    check(replay_run(&o) == 0, "replay with a skipped request failed");
    struct stat info;
    check(stat(stale_eval, &info) != 0 && stat(stale_chart, &info) == 0 && info.st_size > 100,
          "an earlier run's held_back.csv must go and its chart be replaced");
    char csv[600], line[512];
    snprintf(csv, sizeof(csv), "%s/requests.csv", o.out_dir);
    FILE* rows = fopen(csv, "r");
    int versions[4] = {-1, -1, -1, -1};
    char status[4][8] = {{0}};
    while (rows && fgets(line, sizeof(line), rows)) {
        int r, version;
        char domain[32], state[64];
        if (sscanf(line, "%d,%31[^,],%*d,%*d,%*d,%*f,%*f,%d,%63[^,]", &r, domain, &version, state) == 4 && r >= 0 && r < 4) {
            versions[r] = version;
            snprintf(status[r], sizeof(status[r]), "%.3s", state);
        }
    }
    if (rows) { fclose(rows); }
    check(versions[1] >= 0 && strncmp(status[1], "ski", 3) == 0, "request 1 should be skipped (its prompt is too long)");
    check(versions[2] >= 1, "request 2 was served by draft version %d: the lockstep round after requests 0-1 (one of them "
          "skipped) did not run", versions[2]);
    // a run that serves nothing (every prompt too long: an error) leaves no chart of the run before it
    f = fopen(traffic, "w");
    fprintf(f, "{\"domain\": \"d\", \"prompt\": \"");
    for (int i = 0; i < 400; i++) { fprintf(f, "w%d ", i); }
    fprintf(f, "\"}\n");
    fclose(f);
    check(replay_run(&o) == 1 && stat(stale_chart, &info) != 0, "a replay that served nothing must fail and leave no chart");
}

// The requests after the last full lockstep round are trained on at the end (5 requests, rounds of 2: the
// fifth was recorded and left in the buffer, its steps never taken, and --save-draft left it out).
static void test_lockstep_tail(const char* model, const char* traffic) {
    Options o = tiny_replay(model, traffic, temp_path("tail_out"));
    o.requests = 5;
    o.lockstep_every = 2;
    check(replay_run(&o) == 0, "the lockstep replay of 5 requests failed");
    char path[600], line[1024];
    snprintf(path, sizeof(path), "%s/summary.txt", o.out_dir);
    FILE* f = fopen(path, "r");
    int steps = -1, pushed = -1, taken = -1, left = -1;
    while (f && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "training: ", 10) != 0) { continue; }
        const char* records = strstr(line, "records ");
        sscanf(line, "training: %d optimiser steps", &steps);
        if (records) { sscanf(records, "records %d pushed / %*d dropped / %d taken into the pool / %d left", &pushed, &taken, &left); }
    }
    if (f) { fclose(f); }
    check(steps == 5 && pushed == 5 && taken == 5 && left == 0, "5 requests in rounds of 2: %d optimiser steps (expected 5), "
          "records %d pushed / %d taken / %d left (expected 5 / 5 / 0)", steps, pushed, taken, left);
}

// train whose every step is rejected (a draft start of NaN weights: every loss non-finite) writes nothing and
// exits 1: the earlier file at -o stays as it was (it had been replaced by the untrained start)
static void test_train_nothing_trained(const char* model, const char* traffic) {
    Error err;
    Target target;
    Draft huge_draft;
    check(target_load(&target, model, backend_cpu(), 256, 64, &err) == 0, "load: %s", err.message);
    draft_init_random(&huge_draft, &target, 300, NULL, 3);
    // weights finite (a NaN one is refused at load) but so large that every forward overflows: every step's
    // loss is not finite, so every update is rejected
    float* weights = *huge_draft.tensors[0].data;
    for (size_t i = 0; i < huge_draft.n_weight_floats; i++) { weights[i] = 1e38f; }
    const char* start = temp_path("huge_start.gguf"), *out = temp_path("kept.gguf");
    check(draft_save(&huge_draft, start, &err) == 0, "save: %s", err.message);
    draft_free(&huge_draft);
    Draft loads;
    int loaded = draft_load(&loads, start, &target, &err) == 0;
    check(loaded, "the start loads (finite weights): %s", loaded ? "" : err.message);
    if (loaded) { draft_free(&loads); }
    target_free(&target);
    check(write_file_atomic(out, "an earlier result", 17, &err) == 0, "write: %s", err.message);
    char* argv[] = {"aurora", "train", "-m", (char*)model, "--traffic", (char*)traffic, "--requests", "2", "--max-new", "4",
                    "--draft-init", (char*)start, "-o", (char*)out};
    int status = aurora_main(14, argv);
    size_t n = 0;
    char* kept = NULL;
    check(status == 1, "train with every step rejected: exit status %d, expected 1", status);
    check(read_text_file(out, 1 << 20, &kept, &n, &err) == 0 && n == 17 && memcmp(kept, "an earlier result", 17) == 0,
          "train with every step rejected must leave the earlier -o file as it was");
    free(kept);
}

static void test_learning_and_lockstep(void) {
    const char* model = temp_path("learn_target.gguf");
    TinyModelSpec spec = {32, 2, 4, 2, 64, 300, 256, 1, TYPE_F32, 10000.0f, 77};
    Error err;
    check(tiny_model_write(model, &spec, &err) == 0, "write: %s", err.message);
    const char* traffic = temp_path("learn.jsonl");
    write_traffic(traffic, 120);
    test_train_nothing_trained(model, traffic);

    // learning: lockstep after every 2 requests, 120 requests
    Options o = tiny_replay(model, traffic, temp_path("learn_out"));
    o.lockstep_every = 2;
    o.label = "learning";
    o.save_draft = temp_path("learned.gguf");
    check(replay_run(&o) == 0, "learning replay failed");
    char csv[600];
    snprintf(csv, sizeof(csv), "%s/requests.csv", o.out_dir);
    // the first two requests are served by the random draft (the first lockstep round follows them)
    double first = mean_acceptance(csv, 0, 2), last = mean_acceptance(csv, 100, 120);
    printf("learning: acceptance length %.2f for the first 2 requests (random draft), %.2f over requests 100-119\n", first, last);
    check(first < 1.2, "a random draft should start near 1.0 (got %.2f)", first);
    check(last >= 2.5, "acceptance length should reach 2.5 within 120 requests on the learnable stream (got %.2f)", last);
    test_evaluation(model, traffic, o.save_draft);
    test_hybrid_choice(model, traffic, o.save_draft);
    test_lockstep_round_after_a_skip(model);
    test_lockstep_tail(model, traffic);

    // lockstep: two runs give bit-identical weights and logs
    Options a = tiny_replay(model, traffic, temp_path("lockstep_a"));
    Options b = tiny_replay(model, traffic, temp_path("lockstep_b"));
    a.requests = b.requests = 24;
    a.lockstep_every = b.lockstep_every = 3;
    a.train.discard_weight = b.train.discard_weight = 0.5f;
    a.shape = b.shape = (TreeShape){2, 3, 7};
    a.draft_vocab = b.draft_vocab = 200; // and the vocabulary follows the traffic (ids above 200 come in)
    a.save_draft = temp_path("lockstep_a.gguf");
    b.save_draft = temp_path("lockstep_b.gguf");
    check(replay_run(&a) == 0 && replay_run(&b) == 0, "lockstep replays failed");
    char path_a[600], path_b[600];
    snprintf(path_a, sizeof(path_a), "%s/requests.csv", a.out_dir);
    snprintf(path_b, sizeof(path_b), "%s/requests.csv", b.out_dir);
    char* log_a = csv_without_seconds(path_a);
    char* log_b = csv_without_seconds(path_b);
    check(strlen(log_a) > 100 && strcmp(log_a, log_b) == 0, "lockstep logs differ between two runs");
    free(log_a); free(log_b);
    GGUFFile file_a, file_b;
    check(gguf_open(&file_a, a.save_draft, &err) == 0 && gguf_open(&file_b, b.save_draft, &err) == 0, "open saved drafts");
    check(file_a.size == file_b.size && memcmp(file_a.bytes, file_b.bytes, file_a.size) == 0,
          "lockstep runs must give bit-identical weights");
    gguf_close(&file_a); gguf_close(&file_b);
    char summary_path[600], line[512];
    snprintf(summary_path, sizeof(summary_path), "%s/summary.txt", a.out_dir);
    FILE* summary = fopen(summary_path, "r");
    long swaps = -1;
    while (summary && fgets(line, sizeof(line), summary)) { sscanf(line, "draft vocabulary: %ld entries replaced", &swaps); }
    if (summary) { fclose(summary); }
    check(swaps > 0, "the lockstep runs should have adapted the draft vocabulary (summary: %ld entries replaced)", swaps);
}

static long flywheel_buffered(Flywheel* flywheel) {
    int depth = 0;
    record_buffer_counts(flywheel->records, NULL, NULL, &depth);
    return depth;
}

// A flywheel on a tiny target for the pool tests (no thread when lockstep_every > 0; the vocabulary fixed):
// batch_requests records a step, pool_capacity records kept.
static void start_pool_flywheel(Flywheel* flywheel, Target* target, Draft* draft, uint64_t seed, int batch_requests,
                                int lockstep_every, int pool_capacity) {
    load_tiny_target(target, 2, seed);
    draft_init_random(draft, target, 150, NULL, 4);
    TrainerSettings settings = trainer_default_settings();
    settings.adapt_vocabulary = 0;
    flywheel_start(flywheel, draft, target, settings,
                   (FlywheelSettings){.buffer_capacity = 64, .sync_every = 1, .batch_requests = batch_requests,
                                      .lockstep_every = lockstep_every, .pool_capacity = pool_capacity, .in_gaps = 0,
                                      .seed = 1});
}

static void stop_pool_flywheel(Flywheel* flywheel, Target* target, Draft* draft) {
    flywheel_stop(flywheel);
    flywheel_free(flywheel);
    draft_free(draft);
    target_free(target);
}

// Empty records numbered by n_prompt, pushed and taken into the pool; then the record numbers of `steps` batches.
static void push_numbered(Flywheel* flywheel, int n, int* next_id, int dim) {
    for (int i = 0; i < n; i++) {
        Record* record = record_new(dim, 0);
        record->n_prompt = (*next_id)++;
        record_buffer_push(flywheel->records, record);
    }
    flywheel_take_records(flywheel, 0);
}

static int drawn_numbers(Flywheel* flywheel, int steps, int* got) {
    int slots[FLYWHEEL_MAX_BATCH], n_got = 0;
    Record* batch[FLYWHEEL_MAX_BATCH];
    for (int step = 0; step < steps; step++) {
        int n = flywheel_draw_batch(flywheel, slots);
        flywheel_batch_records(flywheel, slots, n, batch);
        for (int i = 0; i < n; i++) { got[n_got++] = batch[i]->n_prompt; }
    }
    return n_got;
}

// --pool-sampling new-first: a step's batch takes the records no step has drawn yet, oldest first, then samples
static void test_pool_new_first(void) {
    Target target;
    Draft draft;
    Flywheel flywheel;
    start_pool_flywheel(&flywheel, &target, &draft, 36, 3, 1, 8);   // batches of 3, a pool of 8
    flywheel.pool_new_first = 1;
    int next_id = 0, got[9];
    push_numbered(&flywheel, 5, &next_id, target.config.dim);
    drawn_numbers(&flywheel, 3, got);
    check(got[0] == 0 && got[1] == 1 && got[2] == 2 && got[3] == 3 && got[4] == 4 && got[5] >= 0 && got[5] < 5 &&
          got[8] >= 0 && got[8] < 5 && flywheel.pool_undrawn == 0,
          "new-first: records 0-4 first in order, then samples of them (got %d %d %d %d %d %d ... %d)", got[0], got[1],
          got[2], got[3], got[4], got[5], got[8]);
    // ten more into a pool of 8: the 8 newest (7..14) are undrawn, drawn oldest first
    push_numbered(&flywheel, 10, &next_id, target.config.dim);
    drawn_numbers(&flywheel, 3, got);
    int in_order = 1;
    for (int i = 0; i < 8; i++) { in_order &= got[i] == 7 + i; }
    check(in_order && got[8] >= 7 && got[8] <= 14 && flywheel.pool_count == 8,
          "new-first past the pool's capacity: 7-14 in order, then a sample (got %d %d ... %d %d)", got[0], got[1], got[7], got[8]);
    stop_pool_flywheel(&flywheel, &target, &draft);
}

// A batch kept for the next gap (training in the gaps: drawn, then not trained because the step did not fit)
// whose slots are overwritten by newer records before it trains: it keeps only the records it drew, so with
// new-first every record still trains once (it once trained the newer records in those slots, and then
// again when new-first drew them as undrawn).
static void test_gap_batch_pool_wrap(void) {
    Target target;
    Draft draft;
    Flywheel flywheel;
    start_pool_flywheel(&flywheel, &target, &draft, 37, 3, 1, 4);   // batches of 3, a pool of 4
    flywheel.pool_new_first = 1;
    int next_id = 0, got[6];
    push_numbered(&flywheel, 4, &next_id, target.config.dim);     // 0-3
    flywheel.gap_batch_size = flywheel_draw_batch(&flywheel, flywheel.gap_batch);   // 0, 1, 2; kept
    push_numbered(&flywheel, 2, &next_id, target.config.dim);     // 4 and 5 replace 0 and 1
    Record* batch[FLYWHEEL_MAX_BATCH];
    flywheel_batch_records(&flywheel, flywheel.gap_batch, flywheel.gap_batch_size, batch);
    int kept = flywheel.gap_batch_size, kept_first = kept > 0 ? batch[0]->n_prompt : -1;
    drawn_numbers(&flywheel, 1, got);
    check(kept == 1 && kept_first == 2 && got[0] == 3 && got[1] == 4 && got[2] == 5,
          "a kept gap batch after the pool wrapped: it holds %d record(s), the first %d (expected 1: record 2, the one "
          "it drew that is still in the pool); the next batch %d %d %d (expected the undrawn 3 4 5)", kept, kept_first,
          got[0], got[1], got[2]);
    stop_pool_flywheel(&flywheel, &target, &draft);
}

// A lockstep round takes every record of its requests, however many (it once took one pop of at most
// FLYWHEEL_MAX_BATCH and left the rest to be dropped as the next round's records arrived).
static void test_lockstep_takes_all(void) {
    enum { ROUND = FLYWHEEL_MAX_BATCH + 36 };
    Target target;
    Draft draft;
    Flywheel flywheel;
    start_pool_flywheel(&flywheel, &target, &draft, 35, 1, ROUND, 2 * ROUND);
    for (int i = 0; i < ROUND; i++) { record_buffer_push(flywheel.records, record_new(target.config.dim, 0)); }
    int taken = flywheel_take_records(&flywheel, 0);
    check(taken == ROUND && flywheel.pool_count == ROUND && flywheel_buffered(&flywheel) == 0,
          "a lockstep round of %d requests took %d records (pool %d, %ld left in the buffer)", ROUND, taken,
          flywheel.pool_count, flywheel_buffered(&flywheel));
    stop_pool_flywheel(&flywheel, &target, &draft);
}

// A stop requested before a lockstep round skips it: the round's records stay in the buffer, the pool and the
// published version unchanged (a round of no steps once still took them, adapted the vocabulary and published a
// version that the saved draft then carried untrained).
static void test_lockstep_round_after_stop(void) {
    Target target;
    Draft draft;
    Flywheel flywheel;
    start_pool_flywheel(&flywheel, &target, &draft, 38, 1, 2, 8);
    for (int i = 0; i < 2; i++) { record_buffer_push(flywheel.records, record_new(target.config.dim, 0)); }
    stop_signals_install();
    raise(SIGINT);   // (the handler notes the request and prints a line; the run would finish the work in flight)
    flywheel_lockstep_round(&flywheel);
    int version = 0;
    const int32_t* vocabulary = NULL;
    int published = weight_exchange_take(flywheel.exchange, 0, &version, &vocabulary) != NULL;
    check(stop_requested() && flywheel.pool_count == 0 && flywheel_buffered(&flywheel) == 2 && !published,
          "a lockstep round after a stop: %d records taken into the pool (expected 0), %ld left in the buffer (expected 2), "
          "a version published: %s (expected none)", flywheel.pool_count, flywheel_buffered(&flywheel), published ? "yes" : "no");
    stop_signals_install();   // (the request cleared for the tests after this one)
    stop_pool_flywheel(&flywheel, &target, &draft);
}


// ---- hot swap under load -----------------------------------------------------------------------
// With the EAGLE draft alone and with the hybrid (whose EAGLE draft learns too: its swaps were once never
// taken, so the hybrid served its initial draft however long it trained); and training in the gaps between
// requests (in_gaps: the serving thread trains between requests; no thread beside it).

static void test_hot_swap(DraftKind kind, int in_gaps) {
    Target target;
    load_tiny_target(&target, 2, 31);
    Draft draft;
    draft_init_random(&draft, &target, 150, NULL, 4); // prompts use ids up to 202: the vocabulary changes while serving
    TrainerSettings settings = trainer_default_settings();
    settings.learning_rate = 3e-3f;
    settings.ttt_length = 2;
    settings.adapt_vocabulary = 1;
    Flywheel flywheel;
    // publish after every step
    flywheel_start(&flywheel, &draft, &target, settings, (FlywheelSettings){.buffer_capacity = 64, .sync_every = 1,
                       .batch_requests = 1, .pool_capacity = 8, .in_gaps = in_gaps, .seed = 1});
    DraftSource source;
    draft_source_init(&source, kind, (TreeShape){2, 3, 7}, &draft, &target);
    source.exchange = flywheel.exchange;
    const char* name = kind == DRAFT_HYBRID ? "hybrid" : in_gaps ? "eagle, training in the gaps" : "eagle";

    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    enum { REQUESTS = 40, MAX_NEW = 20 };
    int mismatches = 0;
    uint64_t rng = random_seed_state(6);
    // at least REQUESTS, and more (up to 20 times as many) until the server has switched weights twice: a trainer
    // thread starved by a loaded machine publishes late, and the count of swaps must not depend on the schedule
    int served = 0;
    double swap_seconds = 0.0;   // the requests' own count of their passes' hot swaps (SpecStats)
    for (int r = 0; r < REQUESTS || (source.swaps < 2 && r < 20 * REQUESTS); r++, served++) {
        int prompt[8];
        for (int i = 0; i < 8; i++) { prompt[i] = 3 + (int)(random_u32(&rng) % 200); }
        int plain[MAX_NEW], speculative[MAX_NEW];
        GenerateStats plain_stats;
        SpecStats stats;
        int n_plain = generate_plain(&target, prompt, 8, MAX_NEW, greedy, 0, plain, &plain_stats, NULL, NULL);
        Record* record = record_new(target.config.dim, 1);
        int n = generate_speculative(&target, &source, prompt, 8, MAX_NEW, greedy, 0, speculative, &stats, NULL, NULL, record);
        record_buffer_push(flywheel.records, record);
        swap_seconds += stats.swap_seconds;
        if (in_gaps) { flywheel_gap(&flywheel, 0.01); }
        else if (r >= REQUESTS) { nanosleep(&(struct timespec){0, 10000000}, NULL); }   // (10 ms for a late trainer thread)
        mismatches += n != n_plain || memcmp(plain, speculative, sizeof(int) * n) != 0;
    }
    flywheel_stop(&flywheel);
    long pushed, dropped;
    record_buffer_counts(flywheel.records, &pushed, &dropped, NULL);
    printf("hot swap under load (%s): %d requests, %d swaps (mean %.3f ms, max %.3f ms), %d optimiser steps, %ld records "
           "dropped\n", name, served, source.swaps, source.swaps ? 1e3 * source.swap_seconds / source.swaps : 0.0,
           1e3 * source.swap_seconds_max, flywheel.trainer.step, dropped);
    check(mismatches == 0, "%d of %d requests differ from plain greedy while the draft was being swapped", mismatches, served);
    check(pushed == served && dropped == 0 && flywheel.records_taken + flywheel_buffered(&flywheel) == served &&
          flywheel.trainer.step > 0, "every record must reach the trainer (pushed %ld, dropped %ld, taken %ld, steps %d)",
          pushed, dropped, flywheel.records_taken, flywheel.trainer.step);
    check(source.swaps >= 2, "%s: the server should have switched weights several times (%d)", name, source.swaps);
    // every swap happened in a pass here (no held-back measurement), so the passes' swap time is the source's
    check(fabs(swap_seconds - source.swap_seconds) <= 1e-9 * (1.0 + source.swap_seconds), "%s: the passes counted %.6f s "
          "of hot swaps, the source %.6f s", name, swap_seconds, source.swap_seconds);
    if (in_gaps) {
        check(!flywheel.thread_started && flywheel.gaps == served && fabs(flywheel.gap_seconds - 0.01 * served) < 1e-9,
              "%s: no trainer thread, %d gaps of 10 ms (thread %d, %ld gaps, %.3f s)", name, served, flywheel.thread_started,
              flywheel.gaps, flywheel.gap_seconds);
    }
    check(flywheel.trainer.vocabulary_swaps > 0, "the draft vocabulary should have changed while serving");
    draft_source_free(&source);
    flywheel_free(&flywheel);
    draft_free(&draft);
    target_free(&target);
}

// n requests of 8 prompt tokens (token base + stride * r + i) served greedily by the source, each recorded
// and pushed to the flywheel's buffer, as serving does
static void serve_recorded(Flywheel* flywheel, Target* target, DraftSource* source, int n, int base, int stride) {
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    for (int r = 0; r < n; r++) {
        int prompt[8], out[12];
        for (int i = 0; i < 8; i++) { prompt[i] = base + stride * r + i; }
        SpecStats stats;
        Record* record = record_new(target->config.dim, 1);
        generate_speculative(target, source, prompt, 8, 12, greedy, 0, out, &stats, NULL, NULL, record);
        record_buffer_push(flywheel->records, record);
    }
}

// A run that ends before its trainer's first step takes that step when it stops, and publishes it (a threaded
// run of a few short requests could end before its thread took a record: replay then wrote no --save-draft,
// and said so with exit status 0). Training in the gaps (no thread) with no gap long enough: the same.
static void test_untrained_at_stop(void) {
    Target target;
    load_tiny_target(&target, 2, 35);
    Draft draft;
    draft_init_random(&draft, &target, 150, NULL, 4);
    Flywheel flywheel;
    // in the gaps, a publish every 4 steps
    FlywheelSettings gaps = {.buffer_capacity = 64, .sync_every = 4, .batch_requests = 1, .pool_capacity = 8,
                             .steps_per_request = 1, .in_gaps = 1, .seed = 1};
    flywheel_start(&flywheel, &draft, &target, trainer_default_settings(), gaps);
    flywheel_stop(&flywheel);   // nothing recorded: nothing to train on, no step
    check(flywheel.trainer.step == 0, "a stop with nothing recorded took %d steps (expected 0)", flywheel.trainer.step);
    flywheel_free(&flywheel);
    flywheel_start(&flywheel, &draft, &target, trainer_default_settings(), gaps);
    DraftSource source;
    draft_source_init(&source, DRAFT_EAGLE, (TreeShape){2, 3, 7}, &draft, &target);
    serve_recorded(&flywheel, &target, &source, 2, 5, 13);   // two requests served, no gap
    check(flywheel.trainer.step == 0, "no gap ran, yet %d steps were taken", flywheel.trainer.step);
    flywheel_stop(&flywheel);
    int version = 0;
    const int32_t* ids = NULL;
    float* weights = weight_exchange_take(flywheel.exchange, 0, &version, &ids);
    check(flywheel.trainer.step == 1 && flywheel.records_taken == 2,
          "a stop after two requests and no step: %d steps on %ld records (expected 1 on 2)", flywheel.trainer.step,
          flywheel.records_taken);
    check(weights != NULL && version == 1 && memcmp(weights, flywheel.trainer.draft.weight_arena,
                                                    draft.n_weight_floats * sizeof(float)) == 0,
          "the step taken at the stop is published (version %d; expected 1, the trainer's weights)", version);
    flywheel_stop(&flywheel);   // (again, as flywheel_free does: no second step)
    check(flywheel.trainer.step == 1, "a second stop took another step (%d)", flywheel.trainer.step);
    draft_source_free(&source);
    flywheel_free(&flywheel);
    draft_free(&draft);
    target_free(&target);
}

// ---- training in the gaps: a step starts only where it is expected to fit -----------------------------
// Deterministic whatever the machine's speed: with no step measured yet a 50 ms gap runs at least one;
// the estimate is the batch's rows at the history's seconds per row (checked by hand); with the last steps
// recorded at 1 s a row no step fits (nor after one short step joins them), so four gaps run none, the
// batch drawn for them stays the next one, and the fifth gap (after GAP_STARVED gaps without a step) runs
// exactly one.
static void test_gap_fit(void) {
    Target target;
    load_tiny_target(&target, 2, 33);
    Draft draft;
    draft_init_random(&draft, &target, 150, NULL, 4);
    Flywheel flywheel;
    flywheel_start(&flywheel, &draft, &target, trainer_default_settings(),
                   (FlywheelSettings){.buffer_capacity = 64, .sync_every = 1, .batch_requests = 1,
                                      .pool_capacity = 8, .in_gaps = 1, .seed = 1});
    DraftSource source;
    draft_source_init(&source, DRAFT_EAGLE, (TreeShape){2, 3, 7}, &draft, &target);
    serve_recorded(&flywheel, &target, &source, 3, 3, 17);
    flywheel_gap(&flywheel, 0.05);
    long first = flywheel.gap_steps;
    check(first >= 1, "gap fit: a 50 ms gap with no step measured yet ran %ld steps (expected at least one)", first);
    // every step published (sync every step) while nothing was served: the next request takes the last
    // (publishes made while one waited were once skipped, and the next request got the gap's first step)
    int taken_version = 0;
    const int32_t* taken_ids = NULL;
    weight_exchange_take(flywheel.exchange, 0, &taken_version, &taken_ids);
    check(taken_version == first, "after a gap of %ld steps, each published, the server took version %d (expected %ld)",
          first, taken_version, first);
    // the ring's steps: 50 + 10i rows each at 17.5 ms a row (whichever of them the ring holds yet: fewer
    // than 8 steps may have run), so 40 rows: 0.7 s (the mean duration would say 1.05 s or more)
    for (int i = 0; i < GAP_STEP_HISTORY; i++) {
        flywheel.gap_step_rows[i] = 50 + 10 * i;
        flywheel.gap_step_seconds[i] = 0.0175 * flywheel.gap_step_rows[i];
    }
    double estimate = flywheel_gap_step_estimate(&flywheel, 40);
    check(fabs(estimate - 0.7) < 1e-9, "gap fit: 40 rows at 17.5 ms a row estimated %.9f s (expected 0.7)", estimate);
    for (int i = 0; i < GAP_STEP_HISTORY; i++) { flywheel.gap_step_seconds[i] = 10.0; flywheel.gap_step_rows[i] = 10; }
    long counts[5];
    int drawn[FLYWHEEL_MAX_BATCH], n_drawn = 0, kept = 1;
    for (int g = 0; g < 5; g++) {
        flywheel_gap(&flywheel, 0.05);
        counts[g] = flywheel.gap_steps - first;
        if (g == 0) { n_drawn = flywheel.gap_batch_size; memcpy(drawn, flywheel.gap_batch, sizeof(drawn)); }
        else if (g < 4) { kept = kept && flywheel.gap_batch_size == n_drawn && memcmp(drawn, flywheel.gap_batch, n_drawn * sizeof(int)) == 0; }
    }
    check(counts[3] == 0 && counts[4] == 1, "gap fit: at 1 s a row, gaps of 50 ms ran %ld, %ld, %ld, %ld, %ld steps in all "
          "after each of five gaps (expected 0, 0, 0, 0, then 1: a step after %d gaps without one)", counts[0], counts[1],
          counts[2], counts[3], counts[4], GAP_STARVED);
    check(n_drawn >= 1 && kept, "gap fit: the batch drawn in a gap it did not fit (%d record(s)) was not kept for the next gaps",
          n_drawn);
    // a starved gap of no time at all still runs its step: the time past the gap's end is returned (replay adds
    // it to the next request's seconds) and counted as the requests' wait
    flywheel.gaps_without_step = GAP_STARVED;
    long steps_before = flywheel.gap_steps;
    double wait_before = flywheel.wait_seconds;
    double overrun = flywheel_gap(&flywheel, 0.0);
    check(flywheel.gap_steps == steps_before + 1 && overrun > 0.0 && fabs(flywheel.wait_seconds - wait_before - overrun) < 1e-12,
          "gap fit: a starved gap of 0 s ran %ld step(s) and returned %.6f s past its end (the wait grew %.6f s)",
          flywheel.gap_steps - steps_before, overrun, flywheel.wait_seconds - wait_before);
    check(flywheel.gap_steps_unapplied == 0 && flywheel.trainer.step == flywheel.gap_steps,
          "gap fit: %ld steps tried, %d applied, %ld counted as changing nothing (expected every one applied)",
          flywheel.gap_steps, flywheel.trainer.step, flywheel.gap_steps_unapplied);
    printf("gap fit: %ld step(s) in a first 50 ms gap; 40 rows at 17.5 ms a row: %.3f s; at 1 s a row, steps after each "
           "of five gaps: %ld %ld %ld %ld %ld, the batch drawn kept until it trained\n", first, estimate, counts[0], counts[1],
           counts[2], counts[3], counts[4]);
    flywheel_stop(&flywheel);
    draft_source_free(&source);
    flywheel_free(&flywheel);
    draft_free(&draft);
    target_free(&target);
}

// A record of two tokens and nothing committed: no column to train.
static Record* record_without_columns(const Target* target) {
    int ids[2] = {5, 6};
    Record* record = record_new(target->config.dim, 0);
    record->n_tokens = 2;
    record->tokens = mallocCheck(sizeof(ids));
    memcpy(record->tokens, ids, sizeof(ids));
    return record;
}

// A step in a gap that changes nothing (a batch with no loss row) is tried and timed like any other, but the
// summary's count of optimiser steps in the gaps leaves it out (it once counted every step tried).
static void test_gap_unapplied(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 100, NULL, 9);
    Flywheel flywheel;
    flywheel_start(&flywheel, &draft, target, trainer_default_settings(),
                   (FlywheelSettings){.buffer_capacity = 16, .sync_every = 1, .batch_requests = 1, .pool_capacity = 8,
                                      .in_gaps = 1, .seed = 3});
    record_buffer_push(flywheel.records, record_without_columns(target));
    flywheel_gap(&flywheel, 0.02);
    check(flywheel.gap_steps >= 1 && flywheel.gap_steps_unapplied == flywheel.gap_steps && flywheel.trainer.step == 0,
          "gap steps with nothing to teach: %ld tried, %ld counted as changing nothing, %d optimiser steps (expected "
          "every one tried counted, none applied)", flywheel.gap_steps, flywheel.gap_steps_unapplied, flywheel.trainer.step);
    flywheel_stop(&flywheel);
    flywheel_free(&flywheel);
    draft_free(&draft);
}

// A batch's mean is over the records that have a loss row: a record too short for any beside a real one gives
// the step the loss and the weights of the real one alone, bit for bit (it once counted in the divisor, halving
// both the loss reported and the gradient).
static void test_batch_mean_trainable(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 100, NULL, 9);
    int prompt[5] = {20, 21, 22, 23, 24};
    Record* real = make_record(target, &draft, prompt, 5, 8);
    Record* empty = record_without_columns(target);
    TrainerSettings settings = trainer_default_settings();
    settings.adapt_vocabulary = 0;
    Trainer alone, beside;
    trainer_init(&alone, &draft, target, settings);
    trainer_init(&beside, &draft, target, settings);
    TrainStats stats_alone, stats_beside;
    Record* batch[2] = {real, empty};
    int status_alone = trainer_step(&alone, batch, 1, &stats_alone);
    int status_beside = trainer_step(&beside, batch, 2, &stats_beside);
    int same_weights = bits_equal(alone.draft.weight_arena, beside.draft.weight_arena, draft.n_weight_floats);
    check(status_alone == 0 && status_beside == 0 && stats_alone.loss == stats_beside.loss && same_weights,
          "a record with nothing to train beside a real one: loss %.6f against %.6f alone, the weights %s",
          stats_beside.loss, stats_alone.loss, same_weights ? "the same" : "different");
    trainer_free(&alone);
    trainer_free(&beside);
    record_free(real);
    record_free(empty);
    draft_free(&draft);
}

// The draft is published at the end whenever it changed since the last publish: vocabulary entries replaced
// when records are taken (no optimiser step) after a step that published (sync_every 1) are published by
// flywheel_stop, so that --save-draft and the last held-back measurement describe the same draft. (Deciding
// by the step count alone, the swaps were saved but never published.)
static void test_publish_last_vocabulary(Target* target) {
    Draft draft;
    draft_init_random(&draft, target, 100, NULL, 9);
    TrainerSettings settings = trainer_default_settings();
    settings.adapt_vocabulary = 1;
    Flywheel flywheel;
    // in the gaps: no thread
    flywheel_start(&flywheel, &draft, target, settings, (FlywheelSettings){.buffer_capacity = 16, .sync_every = 1,
                       .batch_requests = 1, .pool_capacity = 64, .steps_per_request = 4, .in_gaps = 1, .seed = 7});
    int prompt[5] = {20, 21, 22, 23, 24};
    record_buffer_push(flywheel.records, make_record(target, &draft, prompt, 5, 8));
    flywheel_take_records(&flywheel, 0);
    flywheel_train_step(&flywheel);   // published: sync_every 1
    int version = 0;
    const int32_t* vocabulary = NULL;
    check(flywheel.trainer.step == 1 && weight_exchange_take(flywheel.exchange, 0, &version, &vocabulary) != NULL,
          "publish last: one step, published (step %d)", flywheel.trainer.step);
    // a record of ids outside the draft's vocabulary (its 100 lowest): taken, it swaps entries in, no step
    int ids[12] = {150, 151, 150, 151, 150, 151, 152, 152, 152, 5, 6, 7};
    Record* swapping = record_new(target->config.dim, 0);
    swapping->n_tokens = 12;
    swapping->tokens = mallocCheck(sizeof(ids));
    memcpy(swapping->tokens, ids, sizeof(ids));
    record_buffer_push(flywheel.records, swapping);
    long swaps_before = flywheel.trainer.vocabulary_swaps;
    flywheel_take_records(&flywheel, 0);
    check(flywheel.trainer.vocabulary_swaps > swaps_before && flywheel.trainer.step == 1,
          "publish last: the record should swap vocabulary entries without a step (%ld swaps, step %d)",
          flywheel.trainer.vocabulary_swaps - swaps_before, flywheel.trainer.step);
    flywheel_stop(&flywheel);
    int last = version;
    float* weights = weight_exchange_take(flywheel.exchange, version, &last, &vocabulary);
    check(weights != NULL && last > version && vocabulary != NULL && memcmp(vocabulary, flywheel.trainer.draft.d2t,
          100 * sizeof(int32_t)) == 0, "publish last: the swapped vocabulary should be published at the end (version %d "
          "after %d)", last, version);
    flywheel_free(&flywheel);
    draft_free(&draft);
}

int main(int argc, char** argv) {
    snprintf(temp_dir, sizeof(temp_dir), "/tmp/aurora_test_trainer_%d", (int)getpid());
    Error mkdir_err;
    if (make_directories(temp_dir, &mkdir_err) != 0) { fprintf(stderr, "%s\n", mkdir_err.message); return 1; }
    int hot_swap_only = argc > 1 && strcmp(argv[1], "--hot-swap-only") == 0;
    if (!hot_swap_only) {
        Target target;
        load_tiny_target(&target, 3, 12);
        test_gradients(&target);
        test_feature_loss_targets(&target);
        test_next_token_outside_vocabulary(&target);
        test_loss_rows(&target);
        test_masks();
        test_learning_rate_schedule();
        test_rejection_and_buffers(&target);
        test_record_storage(&target);
        test_vocabulary(&target);
        test_publish_last_vocabulary(&target);
        test_gap_unapplied(&target);
        test_batch_mean_trainable(&target);
        test_freeze_head(&target);
        test_clipping(&target);
        test_bf16_steps(&target);
        test_self_samples(&target);
        test_record_batch(&target, "fast table");
        test_record_spill(&target);
        target_free(&target);
        load_tiny_target_on(&target, 3, 12, &backend_cpu_ref);
        test_record_batch(&target, "reference");
        target_free(&target);
        test_learning_and_lockstep();
    }
    test_hot_swap(DRAFT_EAGLE, 0);
    test_hot_swap(DRAFT_HYBRID, 0);
    test_hot_swap(DRAFT_EAGLE, 1);
    test_gap_fit();
    test_untrained_at_stop();
    test_lockstep_takes_all();
    test_lockstep_round_after_stop();
    test_pool_new_first();
    test_gap_batch_pool_wrap();
    if (remove_tree(temp_dir) != 0) { fprintf(stderr, "warning: could not remove %s\n", temp_dir); }
    return test_summary();
}
