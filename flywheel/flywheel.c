/*
flywheel.c: serving and training together. The inference side serves requests with speculative
decoding and records them; the training side turns records into draft updates and publishes them; the
inference side switches to each new version between verify passes.

    serving thread                                   training (a thread, or lockstep)
    --------------                                   --------------------------------
    for each request:                                loop:
      generate_speculative(..., record)                move new records into the pool (the newest N)
        each pass: take newer weights, if any  <----   trainer_step on a batch sampled from the pool
      push the record (never waits;          ---->     every sync_every steps: publish the weights
        full buffer: drop the oldest)

The two sides share nothing but the RecordBuffer and the WeightExchange (recorder.c), so the trainer
could live in another process. With lockstep_every = M > 0 there is no thread: after every M requests
the serving loop itself trains on everything recorded and publishes, so a run is bitwise repeatable.

Where the trainer runs: beside serving on a core of its own (the default; serving's OpenMP team takes the
others, since teams on oversubscribed cores wait at every barrier for a descheduled thread), optionally on a
share of that core (train_share, a duty cycle: the rest of that core idles); or, with an offered load below 1, only in the gaps between
requests (in_gaps). A server is not busy all the time: at load F, after a request that took t seconds it
is idle for t (1 - F) / F (a replay simulates the gap). There the serving thread itself trains, on every
core, and idles for what is left; so serving always has every core, and no trainer beside it. A step starts
only where it is expected to end inside the gap: its batch's rows at the last GAP_STEP_HISTORY steps'
seconds per row fit in what is left of it (a step that ran past a gap's end delayed the next request by
336 ms on average in the live experiment on a 2-core EPYC; the mean of the last 8 steps' durations as the
estimate: 24 ms, at half the steps; the per-row estimate: 9 ms). The batch is drawn once and kept until
it trains, so long records are not passed over for short ones. So that training never starves, a gap
after GAP_STARVED gaps without a step runs one whatever its length. The wait a step in flight still
causes is counted.
(Not a second thread that waits for the gaps: with two OpenMP teams on two cores libgomp stops spinning
at its barriers, and every one of a decode step's ~400 parallel regions then wakes a sleeping thread:
serving ran 5x slower.)
A failing step (a non-finite update) is rejected and counted, not fatal: training goes on with the next
batch, and serving is never stopped by it.
*/
#include <pthread.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "aurora.h"

enum { GAP_STEP_HISTORY = 8, GAP_STARVED = 4 };   // training in the gaps: the fit rule (flywheel_gap)

typedef struct {
    Trainer trainer;        // on the target's backend
    RecordBuffer* records;
    WeightExchange* exchange;
    int sync_every;         // publish every this many optimiser steps (threaded mode)
    int batch_requests;     // records per optimiser step
    int lockstep_every;     // > 0: train in the serving thread after every this many requests
    int steps_per_request;  // lockstep: optimiser steps per request served
    float train_share;      // threaded: the share of one core the trainer may use (a duty cycle; 1: all of it)
    // training in the gaps (offered load below 1): the serving thread trains while it is idle
    int in_gaps;
    double gap_seconds, wait_seconds; // idle time given to training; time requests waited for a step to end
    long gaps, gap_steps;   // gap_steps: every step tried (the fit rule's history), applied or not
    long gap_steps_unapplied; // of those, the steps that changed nothing (non-finite; nothing to teach)
    double gap_step_seconds[GAP_STEP_HISTORY]; // the last steps' durations and rows (a ring: the fit rule's
    long gap_step_rows[GAP_STEP_HISTORY];      // seconds per row)
    int gap_batch[FLYWHEEL_MAX_BATCH], gap_batch_size; // the next step's pool slots (0: none drawn yet)
    int gaps_without_step;
    // the training pool: the newest pool_capacity records; each step samples its batch from them, so a
    // record teaches more than once (Aurora's sample pool) while the trainer keeps pace with serving.
    // With pool_new_first, a step's batch first takes the records no step has drawn yet, oldest first,
    // and samples the rest: every record teaches at least once, however large the pool (uniform sampling at
    // s steps a request, every record kept, leaves a record that arrived as the n-th a chance of about
    // (n / N)^s of never being drawn by the N-th request: at 4 steps, two thirds or more of the last tenth).
    int pool_capacity;
    int pool_count, pool_next;
    int pool_new_first;
    int pool_undrawn;       // the newest records no step has drawn yet (pool_new_first)
    Record** pool;          // (pool_capacity)
    size_t pool_bytes;      // what the records in it hold (record_bytes), and the most it held
    size_t pool_peak_bytes;
    uint64_t pool_rng;
    long records_taken;
    int unpublished;        // the trainer's draft changed since the last publish (a step, or vocabulary entries
                            // replaced when records were taken, which needs no step); on the training side
    pthread_t thread;
    int thread_started;
    int stopping;           // set by flywheel_stop (atomic access)
    // what the trainer reports (written by the training side, read by the progress bar)
    pthread_mutex_t stats_lock;
    TrainStats last_stats;
    int steps, published_version;
    long rejected;
} Flywheel;

static void flywheel_report(Flywheel* flywheel, const TrainStats* stats, int version) {
    pthread_mutex_lock(&flywheel->stats_lock);
    if (stats) { flywheel->last_stats = *stats; }
    flywheel->steps = flywheel->trainer.step;
    flywheel->rejected = flywheel->trainer.rejected_updates;
    if (version > 0) { flywheel->published_version = version; }
    pthread_mutex_unlock(&flywheel->stats_lock);
}

// A record leaves the pool: a batch kept for the next gap (flywheel_gap) drops that slot, which is about to
// hold a newer record no step has drawn (with new-first still counted as undrawn: kept in the batch as well,
// it would train twice, and the record drawn there would not train at all).
static void flywheel_forget_slot(Flywheel* flywheel, int slot) {
    int kept = 0;
    for (int i = 0; i < flywheel->gap_batch_size; i++) {
        if (flywheel->gap_batch[i] != slot) { flywheel->gap_batch[kept++] = flywheel->gap_batch[i]; }
    }
    flywheel->gap_batch_size = kept;
}

// Moves every newly recorded request into the pool (the oldest leave it; with wait, waits for the first).
// Returns how many arrived.
static int flywheel_take_records(Flywheel* flywheel, int wait) {
    int total = 0, n;
    do { // in pops of at most FLYWHEEL_MAX_BATCH: a lockstep round of more requests than that takes them all
        Record* arrived[FLYWHEEL_MAX_BATCH];
        n = record_buffer_pop(flywheel->records, arrived, FLYWHEEL_MAX_BATCH, total == 0 ? wait : 0);
        for (int i = 0; i < n; i++) {
            if (flywheel->pool_count == flywheel->pool_capacity) {
                flywheel_forget_slot(flywheel, flywheel->pool_next);
                flywheel->pool_bytes -= record_bytes(flywheel->pool[flywheel->pool_next]);
                record_free(flywheel->pool[flywheel->pool_next]);
            } else {
                flywheel->pool_count++;
            }
            flywheel->pool[flywheel->pool_next] = arrived[i];
            if (flywheel->pool_undrawn < flywheel->pool_count) { flywheel->pool_undrawn++; }
            flywheel->pool_bytes += record_bytes(arrived[i]);
            if (flywheel->pool_bytes > flywheel->pool_peak_bytes) { flywheel->pool_peak_bytes = flywheel->pool_bytes; }
            flywheel->pool_next = (flywheel->pool_next + 1) % flywheel->pool_capacity;
            if (flywheel->trainer.settings.adapt_vocabulary) { trainer_count_tokens(&flywheel->trainer, arrived[i]); }
        }
        total += n;
    } while (n == FLYWHEEL_MAX_BATCH);
    if (total > 0 && flywheel->trainer.settings.adapt_vocabulary && trainer_adapt_vocabulary(&flywheel->trainer) > 0) {
        flywheel->unpublished = 1;
    }
    flywheel->records_taken += total;
    return total;
}

// The next step's batch: batch_requests pool slots, with pool_new_first the undrawn records first (oldest
// first), the rest drawn with replacement (seeded, so lockstep runs repeat). Returns how many.
static int flywheel_draw_batch(Flywheel* flywheel, int* slots) {
    int n = flywheel->batch_requests < flywheel->pool_count ? flywheel->batch_requests : flywheel->pool_count;
    for (int i = 0; i < n; i++) {
        if (flywheel->pool_new_first && flywheel->pool_undrawn > 0) {
            slots[i] = (flywheel->pool_next - flywheel->pool_undrawn + flywheel->pool_capacity) % flywheel->pool_capacity;
            flywheel->pool_undrawn--;
        } else {
            slots[i] = (int)(random_u32(&flywheel->pool_rng) % (uint32_t)flywheel->pool_count);
        }
    }
    return n;
}

// The records in those slots now (the pool moves on: a slot drawn earlier may hold a newer record).
static void flywheel_batch_records(const Flywheel* flywheel, const int* slots, int n, Record** batch) {
    for (int i = 0; i < n; i++) { batch[i] = flywheel->pool[slots[i]]; }
}

// The trainer's weights and vocabulary to the free half of the exchange; returns the new version.
static int flywheel_publish(Flywheel* flywheel) {
    flywheel->unpublished = 0;
    return weight_exchange_publish(flywheel->exchange, flywheel->trainer.draft.weight_arena, flywheel->trainer.draft.d2t);
}

// One optimiser step on the batch, then a publish every sync_every steps (threaded and in the gaps).
// Returns whether the step was applied (not rejected as non-finite, and the batch had something to teach).
static int flywheel_train_batch(Flywheel* flywheel, Record** batch, int n) {
    TrainStats stats;
    int applied = trainer_step(&flywheel->trainer, batch, n, &stats) == 0;
    if (applied) { flywheel->unpublished = 1; }
    int version = 0;
    if (applied && flywheel->lockstep_every == 0 && flywheel->trainer.step % flywheel->sync_every == 0) {
        version = flywheel_publish(flywheel);
    }
    flywheel_report(flywheel, &stats, version);
    return applied;
}

// One optimiser step on a batch drawn from the pool.
static void flywheel_train_step(Flywheel* flywheel) {
    int slots[FLYWHEEL_MAX_BATCH];
    Record* batch[FLYWHEEL_MAX_BATCH];
    int n = flywheel_draw_batch(flywheel, slots);
    flywheel_batch_records(flywheel, slots, n, batch);
    flywheel_train_batch(flywheel, batch, n);
}

static void* flywheel_thread_main(void* argument) {
    Flywheel* flywheel = argument;
#ifdef _OPENMP
    omp_set_num_threads(1); // serving keeps the cores' OpenMP teams; training runs beside it on one thread
#endif
    while (!__atomic_load_n(&flywheel->stopping, __ATOMIC_ACQUIRE)) {
        flywheel_take_records(flywheel, flywheel->pool_count == 0); // wait only when there is nothing to train on
        if (flywheel->pool_count == 0) { continue; }                // woken by close
        double start = now_seconds();
        flywheel_train_step(flywheel);
        // the trainer's share of a core: after a step of t seconds, rest t * (1 - share) / share
        if (flywheel->train_share < 1.0f) {
            double rest = (now_seconds() - start) * (1.0 - flywheel->train_share) / flywheel->train_share;
            while (rest > 0 && !__atomic_load_n(&flywheel->stopping, __ATOMIC_ACQUIRE)) {
                double slice = rest < 0.01 ? rest : 0.01; // short sleeps: a stop request is seen at once
                struct timespec pause = {0, (long)(slice * 1e9)};
                nanosleep(&pause, NULL);
                rest -= slice;
            }
        }
    }
    return NULL;
}

// Lockstep: take everything recorded, train steps_per_request steps for each request served since the last
// round (a request skipped for its length recorded nothing), then publish (called by the serving loop; no
// thread). An interrupt stops it after the step in flight, and one before it starts skips the round.
static void flywheel_lockstep_round(Flywheel* flywheel) {
    // (stopped: no round at all, rather than one of no steps that still takes the records, adapts the
    // vocabulary and publishes a version the saved draft would carry untrained)
    if (stop_requested()) { return; }
    int served = flywheel_take_records(flywheel, 0);
    if (served == 0) { return; }
    long long steps = (long long)served * flywheel->steps_per_request;
    for (long long i = 0; i < steps && !stop_requested(); i++) {
        flywheel_train_step(flywheel);
    }
    int version = flywheel_publish(flywheel);
    flywheel_report(flywheel, NULL, version);
}

// How a flywheel trains (replay's options; every field in use, zero meaning its stated default where noted).
typedef struct {
    int buffer_capacity;    // records the serving thread may queue for the trainer
    int sync_every;         // publish every this many optimiser steps (threaded and in the gaps; < 1: 1)
    int batch_requests;     // records per optimiser step (1 to FLYWHEEL_MAX_BATCH)
    int lockstep_every;     // > 0: train in the serving thread after every this many requests (no thread)
    int pool_capacity;      // the training pool's records
    int steps_per_request;  // lockstep: optimiser steps per request served (< 1: 1)
    int in_gaps;            // train in the serving thread's gaps (an offered load below 1; no thread)
    float train_share;      // threaded: the share of one core the trainer may use (0: all of it)
    int pool_new_first;     // each batch first takes the records no step has drawn yet
    uint64_t seed;          // the pool's draws
} FlywheelSettings;

// Every field is set before the training thread starts (it reads train_share and, through the pool,
// pool_new_first).
static void flywheel_start(Flywheel* flywheel, const Draft* draft, const Target* target, TrainerSettings settings,
                           FlywheelSettings f) {
    memset(flywheel, 0, sizeof(*flywheel));
    trainer_init(&flywheel->trainer, draft, target, settings);
    // lockstep trains on everything recorded: the buffer holds a round's records (it drops the oldest when full)
    flywheel->records = record_buffer_new(f.lockstep_every > f.buffer_capacity ? f.lockstep_every : f.buffer_capacity);
    flywheel->exchange = weight_exchange_new(draft->n_weight_floats, draft->config.vocab_size);
    flywheel->sync_every = f.sync_every < 1 ? 1 : f.sync_every;
    flywheel->batch_requests = f.batch_requests < 1 ? 1 : (f.batch_requests > FLYWHEEL_MAX_BATCH ? FLYWHEEL_MAX_BATCH : f.batch_requests);
    flywheel->lockstep_every = f.lockstep_every;
    flywheel->steps_per_request = f.steps_per_request < 1 ? 1 : f.steps_per_request;
    flywheel->train_share = f.train_share > 0.0f && f.train_share < 1.0f ? f.train_share : 1.0f;
    flywheel->pool_new_first = f.pool_new_first;
    flywheel->pool_capacity = f.pool_capacity < 1 ? 1 : f.pool_capacity;
    flywheel->pool = callocCheck((size_t)flywheel->pool_capacity, sizeof(Record*));
    flywheel->pool_rng = random_seed_state(f.seed);
    pthread_mutex_init(&flywheel->stats_lock, NULL);
    flywheel->in_gaps = f.lockstep_every == 0 && f.in_gaps;
    if (f.lockstep_every == 0 && !flywheel->in_gaps) {
        if (pthread_create(&flywheel->thread, NULL, flywheel_thread_main, flywheel) != 0) {
            fprintf(stderr, "warning: could not start the training thread; serving continues without training\n");
        } else {
            flywheel->thread_started = 1;
        }
    }
}

// The server idles until `end` (now_seconds' clock), as if the next request had not yet arrived: in short
// sleeps, so a stop request is seen at once.
static void idle_until(double end) {
    for (double left = end - now_seconds(); left > 0 && !stop_requested(); left = end - now_seconds()) {
        double slice = left < 0.01 ? left : 0.01;
        struct timespec pause = {0, (long)(slice * 1e9)};
        nanosleep(&pause, NULL);
    }
}

// A gap between requests (training in the gaps), in the serving thread: the next step's batch (drawn once,
// kept until it trains, so a long record is not skipped for a short one) trains while it is expected to fit
// in what is left of the gap, or anyway after GAP_STARVED gaps without a step; then idle for the rest. The
// expectation is the batch's rows (trainer_step_rows: records differ several times over, a prompt of 40
// tokens or of 500) at the last GAP_STEP_HISTORY steps' seconds per row, 0 before the first step. A step
// that still runs past the gap's end is the next request's wait, counted. Returns early on a stop request.
static double flywheel_gap_step_estimate(const Flywheel* flywheel, long rows) {
    int n = flywheel->gap_steps < GAP_STEP_HISTORY ? (int)flywheel->gap_steps : GAP_STEP_HISTORY;
    double seconds = 0.0;
    long history_rows = 0;
    for (int i = 0; i < n; i++) { seconds += flywheel->gap_step_seconds[i]; history_rows += flywheel->gap_step_rows[i]; }
    return history_rows > 0 ? seconds / (double)history_rows * (double)rows : 0.0;
}

// Returns the seconds a step ran past the gap's end: the next request's wait.
static double flywheel_gap(Flywheel* flywheel, double seconds) {
    double start = now_seconds();
    int stepped = 0;
    flywheel_take_records(flywheel, 0);
    while (flywheel->pool_count > 0 && !stop_requested()) {
        if (flywheel->gap_batch_size == 0) { flywheel->gap_batch_size = flywheel_draw_batch(flywheel, flywheel->gap_batch); }
        int n = flywheel->gap_batch_size;
        Record* batch[FLYWHEEL_MAX_BATCH];
        flywheel_batch_records(flywheel, flywheel->gap_batch, n, batch);
        long rows = trainer_step_rows(&flywheel->trainer, batch, n);
        int fits = now_seconds() - start + flywheel_gap_step_estimate(flywheel, rows) <= seconds;
        int starved = !stepped && flywheel->gaps_without_step >= GAP_STARVED;
        if (!fits && !starved) { break; }
        double step_start = now_seconds();
        if (!flywheel_train_batch(flywheel, batch, n)) { flywheel->gap_steps_unapplied++; }
        flywheel->gap_batch_size = 0;
        int slot = (int)(flywheel->gap_steps % GAP_STEP_HISTORY);
        flywheel->gap_step_seconds[slot] = now_seconds() - step_start;
        flywheel->gap_step_rows[slot] = rows > 0 ? rows : 1;
        flywheel->gap_steps++;
        stepped = 1;
    }
    flywheel->gaps_without_step = stepped ? 0 : flywheel->gaps_without_step + 1;
    double left = seconds - (now_seconds() - start);
    if (left < 0) { flywheel->wait_seconds -= left; }
    idle_until(start + seconds);
    double elapsed = now_seconds() - start;   // (less than the gap where a stop request cut it short)
    flywheel->gap_seconds += elapsed < seconds ? elapsed : seconds;
    flywheel->gaps++;
    return left < 0 ? -left : 0.0;
}

// A run that ended before its trainer's first step (a threaded run of a few short requests, whose serving
// finished before the thread took a record; training in the gaps with gaps too short for a step) has
// trained on none of what it served: it takes that one step now, on what was recorded. Not after a step, a
// rejected step (the records' own fault: replay reports it), or a stop request (training ends then).
static void flywheel_train_untrained(Flywheel* flywheel) {
    if (flywheel->trainer.step > 0 || flywheel->trainer.rejected_updates > 0 || stop_requested()) { return; }
    flywheel_take_records(flywheel, 0);
    if (flywheel->pool_count == 0) { return; }
    flywheel_train_step(flywheel);
}

// What changed after the last publish (up to sync_every - 1 steps, or that first step, and vocabulary entries
// replaced since, which take no step) is published at the end, so that the last held-back measurement and the
// summary's final version describe the draft --save-draft writes.
static void flywheel_publish_last(Flywheel* flywheel) {
    if (flywheel->trainer.step == 0 || !flywheel->unpublished) { return; }
    int version = flywheel_publish(flywheel);
    flywheel_report(flywheel, NULL, version);
}

// Stops training (the step in progress finishes), then joins the thread; a run that trained nothing takes its
// one step here (flywheel_train_untrained), and the steps not yet published are. Once: flywheel_free calls it
// again, and a second call would try that step again where the first found no loss rows.
static void flywheel_stop(Flywheel* flywheel) {
    if (__atomic_load_n(&flywheel->stopping, __ATOMIC_ACQUIRE)) { return; }
    __atomic_store_n(&flywheel->stopping, 1, __ATOMIC_RELEASE);
    record_buffer_close(flywheel->records);
    int trains_alone = flywheel->thread_started || flywheel->in_gaps;   // (lockstep trains its last round itself)
    if (flywheel->thread_started) { pthread_join(flywheel->thread, NULL); }
    flywheel->thread_started = 0;
    if (trains_alone) {
        flywheel_train_untrained(flywheel);
        flywheel_publish_last(flywheel);
    }
}

static void flywheel_free(Flywheel* flywheel) {
    flywheel_stop(flywheel);
    record_buffer_free(flywheel->records);
    for (int i = 0; i < flywheel->pool_count; i++) { record_free(flywheel->pool[i]); }
    free(flywheel->pool);
    weight_exchange_free(flywheel->exchange);
    trainer_free(&flywheel->trainer);
    pthread_mutex_destroy(&flywheel->stats_lock);
}

// ----------------------------------------------------------------------------
// replaying traffic through the flywheel

// The defaults of replay and train (the CLI's flag table shows them in --help). The training settings are
// the learning study's winners on the default model (docs/learning-study.md), not the trainer's library
// defaults (trainer_default_settings, which the tests pin): the warm start target-layer, lr 5e-4 after 5
// warm-up steps (threaded day 0 over 300 requests, 2 cores: 1.84 over requests 251-300 against 1.66 at 1e-3
// and 1.74 at 2.5e-4; offline, 250 requests in 2 epochs, 1.75 per request on unseen requests against 1.60;
// the 48-request study had chosen 1e-3 over 3e-3 and 1e-2), every prompt position up to 512 before the
// completion at full weight, and a TTT unroll of 2 steps. The last was chosen at equal time, as online
// training runs (a thread beside serving, 2 cores): a shorter unroll buys more optimiser steps per request
// served (100 requests: 127 steps with 5, 192 with 3, 283 with 2, 466 with 1), and 2 served and held back
// best.
Options replay_default_options(void) {
    Options o;
    memset(&o, 0, sizeof(o));
    o.order = "mixed"; o.mode = "online"; o.draft = REPLAY_DEFAULT_DRAFT_INIT; o.out_dir = "out/replay";
    o.max_new = REPLAY_DEFAULT_MAX_NEW; o.context = REPLAY_DEFAULT_CONTEXT; o.batch = DEFAULT_BATCH_TOKENS;
    o.parallel = RECORD_DEFAULT_PARALLEL;
    o.shape = (TreeShape){0, 0, 0}; o.source_name = "eagle"; o.draft_type_name = "auto";
    o.sampling = (SamplerSettings){.temperature = 0.0f, .top_p = 1.0f}; o.seed = 1; o.epochs = 1;
    o.train = trainer_default_settings();
    o.train.adapt_vocabulary = 1; // the vocabulary follows the traffic (online; train applies the rule once, before its first step)
    o.train.learning_rate = 5e-4f; o.train.warmup_steps = 5;
    o.train.prompt_weight = 1.0f; o.train.context_window = 512; o.train.ttt_length = 2;
    o.loss_name = "fkl";
    o.lr_schedule = "constant";
    o.train_precision = "fp32";
    o.sync_every = 4; o.batch_requests = 1; o.lockstep_every = 0; o.buffer_capacity = 16;
    o.pool_capacity = REPLAY_DEFAULT_POOL; o.pool_sampling = "uniform"; o.steps_per_request = 4;
    o.eval_every = 0; o.eval_requests = REPLAY_DEFAULT_EVAL_REQUESTS; o.train_share = 1.0f; o.load = 1.0f;
    return o;
}

void options_resolve_shape(TreeShape* shape, int fixed) {
    if (shape->k == 0) { shape->k = fixed ? 1 : ADAPTIVE_DEFAULT_K; }
    if (shape->depth == 0) { shape->depth = fixed ? DEFAULT_SPEC_DEPTH : ADAPTIVE_DEFAULT_DEPTH; }
    if (shape->nodes == 0) {
        int full = 1 + shape->k * shape->depth, most = fixed ? TREE_MAX_NODES : ADAPTIVE_DEFAULT_NODES;
        shape->nodes = full < most ? full : most;
    }
}

// A fresh draft's vocabulary size: requested (an error if the target has fewer tokens), or by default
// the DRAFT_DEFAULT_VOCAB lowest ids (all of them for a smaller vocabulary).
int choose_draft_vocab(const Target* target, int requested, int* vocab_size, Error* err) {
    int V = target->config.vocab_size;
    if (requested > V) {
        return error_set(err, "--draft-vocab %d is larger than the target vocabulary %d; expected 1..%d", requested, V, V);
    }
    *vocab_size = requested > 0 ? requested : (V < DRAFT_DEFAULT_VOCAB ? V : DRAFT_DEFAULT_VOCAB);
    return 0;
}

int draft_type_resolve(const char* name, int has_model, const Backend* backend, int* type, Error* err) {
    if (name == NULL || strcmp(name, "auto") == 0) { *type = backend->draft_type; return 0; }
    if (!has_model) {
        return error_set(err, "--draft-type %s: no draft model is served (its matrices are what it sets); expected an "
                         "EAGLE draft (a checkpoint or random, alone or in the hybrid)", name);
    }
    *type = strcmp(name, "q8_0") == 0 ? TYPE_Q8_0 : strcmp(name, "q4_1") == 0 ? TYPE_Q4_1 : TYPE_F32;
    if (strcmp(name, "f32") != 0 && *type == TYPE_F32) {
        return error_set(err, "--draft-type %s: unknown; expected auto, f32, q8_0 or q4_1", name);
    }
    if (*type != TYPE_F32 && !backend->host_memory) {
        return error_set(err, "--draft-type %s: the %s table serves the draft's fp32 weights (a quantised serving copy "
                         "is made on tables in host memory); expected auto or f32 there", name, backend->name);
    }
    return 0;
}

// The draft a run starts from: "random" (seeded), "target" (random, with the target's LM head: a warm
// start), "target-layer" (that, and the decoder layer from the target's last layer), or a checkpoint file.
int draft_start_is_fresh(const char* what) {
    return strcmp(what, "random") == 0 || strcmp(what, "target") == 0 || strcmp(what, "target-layer") == 0;
}

int replay_load_draft(Draft* draft, const char* what, const Target* target, int draft_vocab, uint64_t seed,
                             Error* err) {
    int warm = strcmp(what, "target") == 0, warm_layer = strcmp(what, "target-layer") == 0;
    if (draft_start_is_fresh(what)) {
        int vocab_size = 0;
        if (choose_draft_vocab(target, draft_vocab, &vocab_size, err) != 0) { return -1; }
        draft_init_random(draft, target, vocab_size, NULL, seed);
        if (warm || warm_layer) { draft_init_from_target(draft, target); }
        if (warm_layer) { draft_init_from_target_layer(draft, target); }
        return 0;
    }
    return draft_load(draft, what, target, err);
}

static void replay_progress(int index, int total, double mean_recent, const Flywheel* flywheel, int version,
                            double tokens_per_second, int final) {
    static int is_terminal = -1;
    if (is_terminal < 0) { is_terminal = isatty(2); }
    if (!is_terminal && !final && (index + 1) % 25 != 0) { return; }
    char training[160] = "";
    if (flywheel) {
        Flywheel* f = (Flywheel*)flywheel;
        int depth = 0;
        long dropped = 0;
        record_buffer_counts(f->records, NULL, &dropped, &depth);
        pthread_mutex_lock(&f->stats_lock);
        snprintf(training, sizeof(training), "  steps %d  loss %.3f  buffer %d  dropped %ld", f->steps,
                 f->last_stats.loss, depth, dropped);
        pthread_mutex_unlock(&f->stats_lock);
    }
    fprintf(stderr, "%s[%4d/%d] acceptance %.2f (last 25)  draft v%d  %.1f tok/s%s%s", is_terminal ? "\r" : "",
            index + 1, total, mean_recent, version, tokens_per_second, training, is_terminal && !final ? "   " : "\n");
    fflush(stderr);
}

// The path DIR/NAME in a malloc'd string.
static char* path_join(const char* directory, const char* name) {
    size_t n = strlen(directory) + strlen(name) + 2;
    char* path = mallocCheck(n);
    snprintf(path, n, "%s/%s", directory, name);
    return path;
}

// Room the context leaves for a prompt: the KV cache holds the prompt, max_new generated tokens and
// one verify pass's tree (TREE_MAX_NODES slots). Errors when max_new alone does not fit.
static int prompt_room(const Target* target, int max_new, int* room, Error* err) {
    *room = target->cache_capacity - max_new - TREE_MAX_NODES;
    if (*room < 1) {
        return error_set(err, "--max-new %d does not fit the context of %d slots (it needs max-new + %d tree slots + a "
                         "prompt); lower --max-new or raise --context", max_new, target->cache_capacity, TREE_MAX_NODES);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// the target's outputs recorded, many sequences at once (held-back evaluation, offline training)
//
// A job is a list of prompts: traffic requests, each continued greedily for max_new tokens; or samples of the
// target's own text (train --self-samples), each drawn from a start token at the sampling settings for up to
// `length` tokens, ending before an end token, then continued greedily for max_new tokens like a prompt. Each
// is recorded as plain greedy serving would record it (generate_speculative with no draft): its tokens, and
// the target's taps and final hidden state at every position that ran.
//
// Up to `parallel` of them run at once, as lanes: each lane keeps its sequence in its own slots of the
// target's cache, and one forward call carries every lane's next token (target_forward_spans), so that a
// decode step reads the weights once for all of them. A lane's arithmetic is the same as alone: the records
// are the same bits whatever `parallel` is (test_trainer checks it, and against generate_plain and
// generate_speculative one prompt at a time).

typedef struct {
    const TrafficRequest* requests; // the prompts, or NULL: samples of the target's own text
    int room;                       // the longest prompt (tokens) a request may have; longer ones are skipped
    int start_token, length;        // samples: their first token and most tokens drawn after it
    SamplerSettings sampling;       // samples: how they are drawn (sample i with seed + i)
    uint64_t seed;
    int n;                          // requests or samples
    int max_new, parallel;
    const char* what;               // the progress line's name (NULL: quiet)
    RecordSpill* spill;             // where the records' states go as each finishes (NULL: they stay in memory); a
                                    // write error stops the job (the spill holds it)
} RecordJob;

typedef struct {
    int index;              // the request's or sample's place in the job (and its record's)
    int base, capacity;     // its cache slots [base, base + capacity): the most tokens it holds
    int n_tokens;           // tokens so far; all but the last have run, and their states are in the rows below
    int n_prompt;           // the prompt's tokens (a sample's: those drawn so far, while drawing)
    int drawing;            // a sample still being drawn (else: the greedy continuation)
    int n_new;              // tokens of the greedy continuation so far
    uint64_t rng;
    int* tokens;            // (capacity)
    float* features;        // (capacity, 3C) the taps at each position that ran
    float* hidden;          // (capacity, C) the final hidden states
} Lane;

// What a lane does next: its last token runs; its record is complete; it is not kept (a sample shorter than
// SELF_SAMPLE_MIN_TOKENS); (lane_start) it waits for free cache slots.
enum { LANE_RUNS, LANE_DONE, LANE_DROPPED, LANE_WAITS };

// The base of `need` free slots of the cache beside the running lanes (the first that fits, trying slot 0 and
// the slot after each lane's), or -1 when none is free now.
static int lane_find_slots(const Lane* lanes, int n_lanes, int need, int S) {
    for (int c = -1; c < n_lanes; c++) {
        int base = c < 0 ? 0 : lanes[c].base + lanes[c].capacity, fits = base + need <= S;
        for (int j = 0; j < n_lanes && fits; j++) {
            fits = base + need <= lanes[j].base || lanes[j].base + lanes[j].capacity <= base;
        }
        if (fits) { return base; }
    }
    return -1;
}

// The lane's next token from the logits of its last token: LANE_RUNS (the new token runs next), LANE_DONE (an
// end token or max_new reached) or LANE_DROPPED (a sample shorter than SELF_SAMPLE_MIN_TOKENS).
static int lane_take(Lane* lane, const float* logits, const RecordJob* job, const Target* target, float* probs,
                     ProbIndex* scratch) {
    int V = target->config.vocab_size;
    if (lane->drawing) {
        int token = sample_token(logits, V, job->sampling, random_f64(&lane->rng), probs, scratch);
        int ends = target_is_end(target, token);
        if (!ends) { lane->tokens[lane->n_tokens++] = token; }
        lane->n_prompt = lane->n_tokens;
        lane->drawing = !ends && lane->n_tokens - 1 < job->length;
        if (!lane->drawing && lane->n_tokens - 1 < SELF_SAMPLE_MIN_TOKENS) { return LANE_DROPPED; }
        // drawn to its length, its last token runs and its logits start the continuation; ended by an end token
        // (not text: not kept), these logits start it
        if (!ends) { return LANE_RUNS; }
    }
    if (lane->n_new == job->max_new) { return LANE_DONE; }
    int token = sample_argmax(logits, V);
    lane->tokens[lane->n_tokens++] = token;
    lane->n_new++;
    return target_is_end(target, token) || lane->n_new == job->max_new ? LANE_DONE : LANE_RUNS;
}

static void lane_free(Lane* lane) {
    free(lane->tokens); free(lane->features); free(lane->hidden);
    memset(lane, 0, sizeof(*lane));
}

// Starts prompt `index` (n_prompt tokens) in a lane at free cache slots beside the running lanes: the prompt
// runs (a prefill) and its first token is taken. Returns lane_take's answer, or LANE_WAITS (no free slots
// now; the lane is not written).
static int lane_start(Lane* lane, Target* target, const RecordJob* job, int index, const int* prompt, int n_prompt,
                      const Lane* running, int n_running, float* probs, ProbIndex* scratch) {
    int capacity = (job->requests ? n_prompt : 1 + job->length) + job->max_new;
    int base = lane_find_slots(running, n_running, capacity, target->cache_capacity);
    if (base < 0) { return LANE_WAITS; }
    int C = target->config.dim;
    memset(lane, 0, sizeof(*lane));
    lane->index = index;
    lane->base = base;
    lane->capacity = capacity;
    lane->tokens = mallocCheck((size_t)capacity * sizeof(int));
    lane->features = mallocCheck((size_t)capacity * TAP_LAYERS * C * sizeof(float));
    lane->hidden = mallocCheck((size_t)capacity * C * sizeof(float));
    memcpy(lane->tokens, prompt, (size_t)n_prompt * sizeof(int));
    lane->n_tokens = lane->n_prompt = n_prompt;
    lane->drawing = job->requests == NULL;
    lane->rng = random_seed_state(job->seed + (uint64_t)index);
    target_prefill_span(target, base, prompt, n_prompt, 0, lane->features, lane->hidden);
    return lane_take(lane, target->host.logits, job, target, probs, scratch);
}

// A lane that is done (its record to by_index, its states to the job's spill if it has one) or dropped
// (counted in *skipped), freed.
static void lane_finish(Lane* lane, int status, const RecordJob* job, Record** by_index, int* skipped, int C) {
    if (status == LANE_DONE) {
        Record* record = record_new(C, 0);   // drafted by nothing: no rejected nodes
        record_finish(record, lane->tokens, lane->n_tokens, lane->n_tokens - 1, lane->n_prompt, lane->features,
                      lane->hidden, 0);
        if (job->spill) { record_spill_write(job->spill, record); }
        by_index[lane->index] = record;
    } else {
        (*skipped)++;
    }
    lane_free(lane);
}

// Runs the job. records: (job->n) receives the records in the job's order, those skipped or dropped left
// out; *skipped counts them. Stops early on SIGINT/SIGTERM, or when the spill cannot be written. Returns the
// records made.
static int record_batch(Target* target, const RecordJob* job, Record** records, int* skipped) {
    int V = target->config.vocab_size, C = target->config.dim;
    int parallel = job->parallel < target->act.max_tokens ? job->parallel : target->act.max_tokens;
    if (parallel < 1) { parallel = 1; }
    Lane* lanes = callocCheck((size_t)parallel, sizeof(Lane));              // (parallel) the running lanes first
    Record** by_index = callocCheck((size_t)(job->n > 0 ? job->n : 1), sizeof(Record*));   // (n) NULL: none
    int* prompt = mallocCheck((size_t)(job->room > 0 ? job->room : 1) * sizeof(int));    // (room) the next prompt
    int* tokens = mallocCheck((size_t)parallel * sizeof(int));              // (parallel) a step's tokens,
    int* positions = mallocCheck((size_t)parallel * sizeof(int));           // their positions
    SequenceSpan* spans = mallocCheck((size_t)parallel * sizeof(SequenceSpan));   // and spans, one per lane
    float* probs = mallocCheck((size_t)V * sizeof(float));
    ProbIndex* scratch = mallocCheck((size_t)V * sizeof(ProbIndex));
    int n_lanes = 0, next = 0, n_prompt = -1, shown = 0;   // n_prompt: the next prompt's tokens (-1: not read yet)
    *skipped = 0;
    double start = now_seconds();
    while (!stop_requested() && !(job->spill && job->spill->failed) && (n_lanes > 0 || next < job->n)) {
        // start prompts while lanes and cache slots are free (in order: one that must wait holds the rest)
        while (n_lanes < parallel && next < job->n) {
            Error err;
            if (n_prompt < 0 && job->requests) {
                n_prompt = prompt_encode(&target->tokenizer, job->requests[next].prompt, job->requests[next].chat, prompt,
                                         job->room, &err);
                if (n_prompt < 0) { (*skipped)++; next++; continue; }   // longer than the room, or no token
            } else if (n_prompt < 0) {
                prompt[0] = job->start_token;
                n_prompt = 1;
            }
            int status = lane_start(&lanes[n_lanes], target, job, next, prompt, n_prompt, lanes, n_lanes, probs, scratch);
            if (status == LANE_WAITS && n_lanes == 0) {   // callers size prompts to the cache: a program bug
                fprintf(stderr, "error: internal: prompt %d does not fit an empty cache of %d slots\n", next,
                        target->cache_capacity);
                exit(EXIT_FAILURE);
            }
            if (status == LANE_WAITS) { break; }
            next++;
            n_prompt = -1;
            if (status == LANE_RUNS) { n_lanes++; }
            else { lane_finish(&lanes[n_lanes], status, job, by_index, skipped, C); }
        }
        if (n_lanes > 0) {
            // one decode step for every lane: its last token, at its slots
            for (int j = 0; j < n_lanes; j++) {
                int position = lanes[j].n_tokens - 1;
                tokens[j] = lanes[j].tokens[position];
                positions[j] = position;
                spans[j] = (SequenceSpan){j, 1, lanes[j].base, position};
            }
            target_forward_spans(target, tokens, positions, NULL, spans, n_lanes, 1);
            int kept = 0;
            for (int j = 0; j < n_lanes; j++) {
                Lane* lane = &lanes[j];
                int position = lane->n_tokens - 1;
                memcpy(lane->features + (size_t)position * TAP_LAYERS * C,
                       target->host.features + (size_t)j * TAP_LAYERS * C, (size_t)TAP_LAYERS * C * sizeof(float));
                memcpy(lane->hidden + (size_t)position * C, target->host.hidden + (size_t)j * C, (size_t)C * sizeof(float));
                int status = lane_take(lane, target->host.logits + (size_t)j * V, job, target, probs, scratch);
                if (status == LANE_RUNS) { lanes[kept++] = *lane; }
                else { lane_finish(lane, status, job, by_index, skipped, C); }
            }
            n_lanes = kept;
        }
        if (job->what && next - n_lanes > shown) {
            shown = next - n_lanes;
            fprintf(stderr, "\r%s: %d/%d (%.0f s)", job->what, shown, job->n, now_seconds() - start);
        }
    }
    for (int j = 0; j < n_lanes; j++) { lane_free(&lanes[j]); }   // interrupted
    int n_records = 0;
    for (int i = 0; i < job->n; i++) {
        if (by_index[i]) { records[n_records++] = by_index[i]; }
    }
    if (job->what) { fprintf(stderr, "\n"); }
    free(lanes); free(by_index); free(prompt); free(tokens); free(positions); free(spans); free(probs); free(scratch);
    return n_records;
}

// The token a sample of the target's own text starts from: the tokenizer's BOS, else its end-of-text token
// (both mark a document's start to a model trained on concatenated documents); an error when it has neither.
static int self_sample_start(const Tokenizer* tokenizer, int* token, Error* err) {
    *token = tokenizer->bos_id >= 0 ? tokenizer->bos_id : tokenizer->eos_id;
    if (*token < 0) {
        return error_set(err, "the model's tokenizer has neither a beginning- nor an end-of-text token to start a sample "
                         "from; train on a traffic file instead (--traffic)");
    }
    return 0;
}

// ----------------------------------------------------------------------------
// the held-back evaluation: eval_requests requests spread evenly over the stream, never served or trained
// on; before serving request 0, every eval_every requests, and at the end, the draft being served (the
// newest published weights), frozen, is measured on them: the greedy chain acceptance it would get at the
// serving depth, replayed exactly from the target's recorded outputs (trainer_evaluate: draft work only)

typedef struct {
    int n_requests;         // held back from the stream (--eval-requests, or fewer in a short stream)
    int n_records;
    int n_skipped;          // held-back prompts longer than the context leaves (not measured; said in the summary)
    int n_past_attention;   // held-back records whose evaluation attends past the table's bound (CUDA; left out, said)
    Record** records;       // (n_records) the target's greedy outputs for the held-back prompts
    Trainer evaluator;      // a copy of the served weights and its own workspace (never stepped)
    int depth;              // the serving depth
    int n_points, capacity;
    int* at_request;        // (n_points) measured before serving this request index
    float* acceptance;      // (n_points) acceptance length over the held-back set: all its tokens over all its passes
    float* mean_per_request; // (n_points) the mean of each request's acceptance length (the served curve's measure)
    int* version;           // (n_points) the draft version measured
    double seconds;         // time spent evaluating
} HeldBack;

// Moves n requests, evenly spaced, out of the stream into held (n malloc'd entries).
static void held_back_split(Traffic* traffic, int n, TrafficRequest* held) {
    int total = traffic->n_requests, kept = 0;
    for (int i = 0, j = 0; i < total; i++) {
        int take = j < n && i == (int)(((long)j * total + total / 2) / n);
        if (take) { held[j++] = traffic->requests[i]; } else { traffic->requests[kept++] = traffic->requests[i]; }
    }
    traffic->n_requests = kept;
}

static void held_back_measure(HeldBack* h, DraftSource* source, int at_request) {
    double start = now_seconds();
    draft_source_take_weights(source); // the newest published weights, as the next pass would serve them
    trainer_set_weights(&h->evaluator, *source->draft->tensors[0].data, source->draft->d2t);
    long emitted = 0, passes = 0;
    double sum_of_means = 0.0;
    int n_measured = 0;
    for (int i = 0; i < h->n_records; i++) {
        long request_emitted = 0, request_passes = 0;
        trainer_evaluate(&h->evaluator, h->records[i], h->depth, &request_emitted, &request_passes);
        if (request_passes > 0) { sum_of_means += (double)request_emitted / request_passes; n_measured++; }
        emitted += request_emitted;
        passes += request_passes;
    }
    if (h->n_points == h->capacity) {
        h->capacity = h->capacity ? 2 * h->capacity : 64;
        h->at_request = realloc(h->at_request, (size_t)h->capacity * sizeof(int));
        h->acceptance = realloc(h->acceptance, (size_t)h->capacity * sizeof(float));
        h->mean_per_request = realloc(h->mean_per_request, (size_t)h->capacity * sizeof(float));
        h->version = realloc(h->version, (size_t)h->capacity * sizeof(int));
        if (!h->at_request || !h->acceptance || !h->mean_per_request || !h->version) {
            fprintf(stderr, "error: out of memory\n");
            exit(EXIT_FAILURE);
        }
    }
    h->at_request[h->n_points] = at_request;
    h->acceptance[h->n_points] = passes ? (float)emitted / passes : 1.0f;
    h->mean_per_request[h->n_points] = n_measured ? (float)(sum_of_means / n_measured) : 1.0f;
    h->version[h->n_points] = source->draft_version;
    h->n_points++;
    h->seconds += now_seconds() - start;
}

static void held_back_free(HeldBack* h) {
    for (int i = 0; i < h->n_records; i++) { record_free(h->records[i]); }
    free(h->records);
    if (h->evaluator.backend) { trainer_free(&h->evaluator); }
    free(h->at_request); free(h->acceptance); free(h->mean_per_request); free(h->version);
    memset(h, 0, sizeof(*h));
}

// ----------------------------------------------------------------------------
// replay

// The summary of a replay, written to each of the streams.
typedef struct {
    int n_requests;         // in the stream
    int n_done;             // reached (served or skipped) before the end or an interruption
    int n_served, n_skipped;
    int n_empty;            // prompts with no token the vocabulary can spell (bytes it lacks): skipped too
    const float* acceptance;    // (n_served) per served request
    const char** domains;       // (n_served)
    SpecStats spec;             // every served request's tokens, passes, shapes and times, summed
    long vocab_tokens, vocab_held; // an EAGLE draft: generated tokens after each request's first, and how
                                   // many of them its vocabulary (as served at the request's end) holds
    double idle_seconds;        // an offered load below 1 with no trainer in the gaps: the server's idle time
} ReplayTotals;

static void replay_write_summary(FILE* f, const Options* o, const ReplayTotals* r, const Traffic* traffic,
                                 const DraftSource* source, Flywheel* flywheel, const HeldBack* held_back, int room,
                                 const Backend* backend) {
    int no_draft = strcmp(o->mode, "none") == 0 || strcmp(o->mode, "suffix") == 0;
    char served[48] = "";
    if (source->draft != NULL) { snprintf(served, sizeof(served), " (its matrices %s)", tensor_type_name(source->draft->serving_type)); }
    fprintf(f, "run: %s  mode %s  draft %s%s  traffic %s (%s order%s%s)\n", o->label ? o->label : o->out_dir, o->mode,
            no_draft ? o->mode : o->draft, served, o->traffic_path, o->order, o->domain ? ", domain " : "", o->domain ? o->domain : "");
    if (stop_requested()) {
        fprintf(f, "interrupted by signal %d after %d of %d requests: the figures below cover the requests served\n",
                stop_requested(), r->n_done, r->n_requests);
    }
    fprintf(f, "requests %d served, %d skipped (prompt longer than the %d tokens the context of %d leaves after "
            "--max-new %d and a tree), tokens %d, tree K=%d D=%d N=%d (%s)\n", r->n_served, r->n_skipped, room,
            room + o->max_new + TREE_MAX_NODES, o->max_new, r->spec.n_generated, source->limit.k, source->limit.depth,
            source->limit.nodes, source->adaptive ? "adaptive, at most" : "fixed");
    if (r->n_empty > 0) {
        fprintf(f, "requests skipped because their prompt has no token the vocabulary can spell: %d\n", r->n_empty);
    }
    const SamplerSettings* sampling = &o->sampling;
    if (sampling->temperature == 0.0f) { fprintf(f, "sampling: greedy\n"); }
    else {
        fprintf(f, "sampling: temperature %g, top-k %d, top-p %g, min-p %g (off: 0, 1, 0), seed %d\n", sampling->temperature,
                sampling->top_k, sampling->top_p, sampling->min_p, o->seed);
    }
    int n = r->n_served, window = n < 100 ? n : 100;
    double first_mean = 0, last_mean = 0, all_mean = 0;
    for (int i = 0; i < window; i++) { first_mean += r->acceptance[i]; last_mean += r->acceptance[n - window + i]; }
    for (int i = 0; i < n; i++) { all_mean += r->acceptance[i]; }
    if (window > 0) {   // (the per-request means are the served curve's and the goals' measure)
        fprintf(f, "acceptance length, the mean of each request's: all %d requests %.3f, first %d %.3f, last %d %.3f; all "
                "tokens over all passes %.3f\n", n, all_mean / n, window, first_mean / window, window, last_mean / window,
                r->spec.verify_passes ? (double)r->spec.emitted / r->spec.verify_passes : 1.0);
    }
    for (int d = 0; d < traffic->n_domains; d++) {
        double sum = 0;
        int count = 0;
        for (int i = 0; i < n; i++) { if (strcmp(r->domains[i], traffic->domains[d]) == 0) { sum += r->acceptance[i]; count++; } }
        if (count) { fprintf(f, "  domain %-10s %4d requests, mean acceptance length %.3f\n", traffic->domains[d], count, sum / count); }
    }
    if (r->vocab_tokens > 0) { // a token outside the draft vocabulary can never be proposed, so never accepted
        fprintf(f, "draft vocabulary coverage: %.1f%% of the tokens generated after each request's first (%ld of %ld); "
                "the rest the draft could not have proposed\n", 100.0 * r->vocab_held / r->vocab_tokens, r->vocab_held,
                r->vocab_tokens);
    }
    if (r->spec.verify_passes > 0) {
        print_spec_shapes(&r->spec, f);
        fprintf(f, "time in passes: drafting %.1f s, verifying and committing %.1f s, hot swaps %.3f s\n",
                r->spec.draft_seconds, r->spec.verify_seconds, r->spec.swap_seconds);
    }
    // tokens/s of whole requests, and of their decoding alone (after each prefill: what speculation changes;
    // each request's first token came from its prefill, as `aurora generate` counts it)
    double decoding = r->spec.total_seconds - r->spec.prefill_seconds;
    long decoded = (long)r->spec.n_generated - r->n_served;
    fprintf(f, "speed: %.2f tokens/s over %.1f s of generation (prefills %.1f s of it); after the prefill %.2f tokens/s\n",
            r->spec.total_seconds > 0 ? r->spec.n_generated / r->spec.total_seconds : 0.0, r->spec.total_seconds,
            r->spec.prefill_seconds, decoding > 0 && decoded > 0 ? decoded / decoding : 0.0);
    if (o->load < 1.0f && !(flywheel && flywheel->in_gaps)) {   // (training in the gaps reports its gaps below)
        fprintf(f, "offered load %.2f: %d gaps, %.3f s idle between requests (not in the tokens/s)\n", o->load,
                r->n_served, r->idle_seconds);
    }
    char description[256];
    backend_describe(backend, description, sizeof(description));
    fprintf(f, "backend: %s\n", description);
    if (flywheel) {
        backend_describe(flywheel->trainer.backend, description, sizeof(description));
        fprintf(f, "trainer: %s\n", description);
        long pushed, dropped;
        int waiting;
        record_buffer_counts(flywheel->records, &pushed, &dropped, &waiting);
        // every record pushed was dropped from the full buffer, taken into the training pool (where steps
        // sample it until newer records push it out), or is still waiting in the buffer at the end
        fprintf(f, "training: %d optimiser steps, %ld rejected (non-finite), records %ld pushed / %ld dropped / %ld "
                "taken into the pool / %d left in the buffer, final version %d, %ld publishes superseded before the server took them\n",
                flywheel->trainer.step, flywheel->trainer.rejected_updates, pushed, dropped, flywheel->records_taken, waiting,
                flywheel->published_version, weight_exchange_superseded(flywheel->exchange));
        fprintf(f, "training pool: %d of %d records at the end (%.1f MB; at most %.1f MB)\n", flywheel->pool_count,
                flywheel->pool_capacity, flywheel->pool_bytes / 1e6, flywheel->pool_peak_bytes / 1e6);
        if (flywheel->trainer.settings.adapt_vocabulary) {
            fprintf(f, "draft vocabulary: %ld entries replaced by tokens of the traffic\n", flywheel->trainer.vocabulary_swaps);
        }
        if (flywheel->in_gaps) {
            char unapplied[96] = "";
            if (flywheel->gap_steps_unapplied > 0) {
                snprintf(unapplied, sizeof(unapplied), " and %ld that changed nothing (non-finite, or nothing to teach)",
                         flywheel->gap_steps_unapplied);
            }
            fprintf(f, "training in the gaps (offered load %.2f): %ld gaps, %.1f s of idle time given to training, %ld "
                    "optimiser steps%s (each started where its rows at the last %d steps' seconds per row fit in what is "
                    "left of its gap, or after %d gaps without one); requests waited %.1f s in all for a step in flight "
                    "(%.0f ms a request; each wait in the seconds of the request it delayed, so in the speed above)\n",
                    o->load, flywheel->gaps, flywheel->gap_seconds, flywheel->gap_steps - flywheel->gap_steps_unapplied,
                    unapplied, GAP_STEP_HISTORY, GAP_STARVED, flywheel->wait_seconds,
                    flywheel->gaps ? 1e3 * flywheel->wait_seconds / flywheel->gaps : 0.0);
        }
        fprintf(f, "hot swaps: %d, switch time mean %.3f ms, max %.3f ms\n", source->swaps,
                source->swaps ? 1e3 * source->swap_seconds / source->swaps : 0.0, 1e3 * source->swap_seconds_max);
    }
    if (held_back->n_skipped > 0) {
        fprintf(f, "held-back: %d of %d requests skipped (prompt longer than the %d tokens the context leaves, or with no token)%s\n",
                held_back->n_skipped, held_back->n_requests, room,
                held_back->n_records == 0 ? "; no held-back measurement" : "");
    }
    if (held_back->n_past_attention > 0) {
        fprintf(f, "held-back: %d requests left out (their measurement at depth %d attends past the table's attention)\n",
                held_back->n_past_attention, held_back->depth);
    }
    if (held_back->n_points > 0) {
        int last = held_back->n_points - 1;
        fprintf(f, "held-back: %d requests never served or trained on, greedy chains of depth %d, the served draft frozen: "
                "acceptance length %.3f at request %d, %.3f at request %d (all tokens over all passes; the mean of each "
                "request's, as the served curve counts: %.3f, %.3f) (%d measurements, %.1f s)\n", held_back->n_records,
                held_back->depth, held_back->acceptance[0], held_back->at_request[0], held_back->acceptance[last],
                held_back->at_request[last], held_back->mean_per_request[0], held_back->mean_per_request[last],
                held_back->n_points, held_back->seconds);
    }
}

// Removes an output file an earlier run left (absent is fine; another failure is a warning: the run's own
// results are written).
static void remove_stale_output(const char* path) {
    if (unlink(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "warning: could not remove %s, an earlier run's output: %s\n", path, strerror(errno));
    }
}

// Serves every request of the traffic and writes DIR/requests.csv, DIR/summary.txt, DIR/acceptance.svg
// (and the trained draft with save_draft). Every output is checked before any work starts and written
// atomically; a write error is reported after everything else has been saved. Returns the exit status:
// 0, 1 after an "error: ..." line, or 128 + the signal when interrupted (results saved as for a normal end).
int replay_run(const Options* o) {
    Error err;
    // modes: online (the EAGLE or hybrid draft trained while serving), static (frozen), suffix (the model-free
    // suffix draft alone: nothing to load or train), none (plain decoding)
    int online = strcmp(o->mode, "online") == 0, no_draft = strcmp(o->mode, "none") == 0 || strcmp(o->mode, "suffix") == 0;
    char* csv_path = path_join(o->out_dir, "requests.csv");
    char* summary_path = path_join(o->out_dir, "summary.txt");
    char* chart_path = path_join(o->out_dir, "acceptance.svg");
    char* eval_path = path_join(o->out_dir, "held_back.csv");
    Target target;
    Traffic traffic;
    int room = 0;
    // every input (the model, the traffic, the stream asked of it, the tree shape, the draft), then whether every
    // output can be written (after the inputs are read: a bad model, traffic file or draft leaves no empty output
    // directory behind), before any work; the first failure's message is in err
    const Backend* backend = backend_by_name(o->backend_name ? o->backend_name : o->use_cuda ? "cuda" : "cpu", &err);
    int status = backend == NULL || target_load(&target, o->model_path, backend, o->context, o->batch, &err) != 0;
    int have_target = !status, have_traffic = 0, have_draft = 0;
    if (status == 0) { status = traffic_load(&traffic, o->traffic_path, &err) != 0; have_traffic = !status; }
    if (status == 0) {
        status = (o->domain && traffic_select_domain(&traffic, o->domain, &err) != 0) ||
                 traffic_chat_check(&traffic, &target.tokenizer, &err) != 0 ||
                 prompt_room(&target, o->max_new, &room, &err) != 0;
    }
    int n_held = 0, n_requests = 0;
    TrafficRequest* held = NULL;
    if (status == 0) {
        traffic_order(&traffic, o->order, (uint64_t)o->seed);
        if (o->from > 0) { // drop the first requests of the ordered stream
            int from = o->from < traffic.n_requests ? o->from : traffic.n_requests;
            for (int i = 0; i < from; i++) { free(traffic.requests[i].prompt); }
            memmove(traffic.requests, traffic.requests + from, (size_t)(traffic.n_requests - from) * sizeof(TrafficRequest));
            traffic.n_requests -= from;
        }
        // the held-back set leaves the stream before anything is served
        n_held = o->eval_every > 0 ? o->eval_requests : 0;
        if (traffic.n_requests == 0) {
            n_held = 0;   // (nothing to hold back: "no requests to replay" below)
        } else if (n_held > 0 && n_held >= traffic.n_requests) {
            error_set(&err, "--eval-requests %d: the stream has only %d requests; expected fewer", n_held, traffic.n_requests);
            status = 1;
        } else if (n_held > 0) {
            held = mallocCheck((size_t)n_held * sizeof(TrafficRequest));
            held_back_split(&traffic, n_held, held);
        }
        n_requests = o->requests > 0 && o->requests < traffic.n_requests ? o->requests : traffic.n_requests;
    }
    Draft draft;
    memset(&draft, 0, sizeof(draft));
    int serving_type = TYPE_F32;   // (--draft-type, resolved below)
    TreeShape shape = o->shape;
    options_resolve_shape(&shape, o->spec_fixed);
    if (status != 0) {
        // the message is set
    } else if (n_requests == 0) {
        error_set(&err, "%s: no requests to replay (the stream has %d after --from %d)", o->traffic_path, traffic.n_requests, o->from);
        status = 1;
    } else if (strcmp(o->mode, "none") != 0 && tree_shape_fits(shape, &target, &err) != 0) {
        status = 1;   // before any output is opened
    } else if (draft_type_resolve(o->draft_type_name, !no_draft, target.backend, &serving_type, &err) != 0) {
        status = 1;
    } else if (!no_draft && replay_load_draft(&draft, o->draft, &target, o->draft_vocab, (uint64_t)o->seed, &err) != 0) {
        status = 1;
    } else {
        have_draft = !no_draft;
        status = make_directories(o->out_dir, &err) != 0 || check_writable(csv_path, 0, &err) != 0 ||
                 check_writable(summary_path, 0, &err) != 0 || check_writable(chart_path, 0, &err) != 0 ||
                 (o->eval_every > 0 && check_writable(eval_path, 0, &err) != 0) ||
                 (o->save_draft && check_writable(o->save_draft, 1, &err) != 0);
    }
    // --save-draft is never one of the files written under --out (the summary would replace the trained
    // draft); checked once both directories exist, so that any spelling of the path is caught
    const char* const written[4] = {csv_path, summary_path, chart_path, eval_path};
    for (int i = 0; i < 4 && status == 0 && o->save_draft; i++) {
        if (same_path(o->save_draft, written[i])) {
            status = error_set(&err, "--save-draft %s is %s, a file this run writes under --out %s; choose another path",
                               o->save_draft, written[i], o->out_dir) != 0;
        }
    }
    if (status != 0) {
        fprintf(stderr, "error: %s\n", err.message);
        if (have_draft) { draft_free(&draft); }
        for (int i = 0; held && i < n_held; i++) { free(held[i].prompt); }
        free(held);
        if (have_traffic) { traffic_free(&traffic); }
        if (have_target) { target_free(&target); }
        free(csv_path); free(summary_path); free(chart_path); free(eval_path);
        return 1;
    }
    DraftSource source;
    DraftKind kind = strcmp(o->mode, "none") == 0 ? DRAFT_NONE : strcmp(o->mode, "suffix") == 0 ? DRAFT_SUFFIX
                   : strcmp(o->source_name, "hybrid") == 0 ? DRAFT_HYBRID : DRAFT_EAGLE;
    draft_source_init(&source, kind, shape, kind == DRAFT_EAGLE || kind == DRAFT_HYBRID ? &draft : NULL, &target);
    if ((kind == DRAFT_EAGLE || kind == DRAFT_HYBRID) && serving_type != draft.serving_type) { draft_serve_as(&draft, serving_type); }
    draft_source_set_adaptive(&source, !o->spec_fixed, o->lockstep_every > 0); // lockstep: repeatable shapes
    Flywheel flywheel;
    if (online) {
        flywheel_start(&flywheel, &draft, &target, o->train,
                       (FlywheelSettings){.buffer_capacity = o->buffer_capacity, .sync_every = o->sync_every,
                                          .batch_requests = o->batch_requests, .lockstep_every = o->lockstep_every,
                                          .pool_capacity = o->pool_capacity, .steps_per_request = o->steps_per_request,
                                          .in_gaps = o->load < 1.0f, .train_share = o->train_share,
                                          .pool_new_first = strcmp(o->pool_sampling, "new-first") == 0,
                                          .seed = (uint64_t)o->seed});
        source.exchange = flywheel.exchange;
    }
    stop_signals_install();   // (before the held-back set: an interrupt there still writes the summary)
    HeldBack held_back;
    memset(&held_back, 0, sizeof(held_back));
    if (n_held > 0 && kind != DRAFT_NONE && kind != DRAFT_SUFFIX) { // the target's outputs for the held-back prompts, once
        held_back.n_requests = n_held;
        held_back.records = callocCheck((size_t)n_held, sizeof(Record*));
        RecordJob job = {.requests = held, .room = room, .n = n_held, .max_new = o->max_new, .parallel = o->parallel,
                         .what = o->quiet ? NULL : "held-back set: the target's outputs"};
        held_back.n_records = record_batch(&target, &job, held_back.records, &held_back.n_skipped);
        if (held_back.n_skipped > 0) {   // (a warning, not only a summary line: the evaluation asked for is smaller or none)
            fprintf(stderr, "warning: held-back set: %d of its %d requests skipped (prompt longer than the %d tokens the "
                    "context leaves after --max-new %d and a tree, or with no token)%s\n", held_back.n_skipped, n_held, room, o->max_new,
                    held_back.n_records == 0 ? "; no held-back measurement" : "");
        }
        TrainerSettings measure = o->train;   // the measure is the same whatever the trainer's precision: fp32
        measure.bf16_products = 0;
        trainer_init(&held_back.evaluator, &draft, &target, measure);
        trainer_evaluate_as_served(&held_back.evaluator, draft.serving_type);   // as it is served
        held_back.depth = shape.depth < TTT_MAX_STEPS ? shape.depth : TTT_MAX_STEPS;
        // a record whose evaluation would attend to more slots than the table's attention takes (a CUDA
        // table near its longest context: the unroll's keys run depth - 1 completions past the record) is left
        // out, said as a skipped prompt is
        int kept = 0;
        for (int i = 0; i < held_back.n_records; i++) {
            if (trainer_evaluate_fits(&held_back.evaluator, held_back.records[i], held_back.depth)) {
                held_back.records[kept++] = held_back.records[i];
            } else {
                record_free(held_back.records[i]);
                held_back.n_past_attention++;
            }
        }
        held_back.n_records = kept;
        if (held_back.n_past_attention > 0) {
            fprintf(stderr, "warning: held-back set: %d requests left out: measuring them at depth %d attends past what "
                    "the %s table's attention takes (lower --context, --max-new or the depth)%s\n", held_back.n_past_attention,
                    held_back.depth, target.backend->name, held_back.n_records == 0 ? "; no held-back measurement" : "");
        }
    }
#ifdef _OPENMP
    // with a training thread beside it, serving's team leaves the trainer its core (one thread on 2 cores): OpenMP
    // teams on oversubscribed cores wait at every barrier for a descheduled thread (measured: 3x slower serving)
    int serving_threads = omp_get_max_threads();
    if (online && flywheel.thread_started) { omp_set_num_threads(serving_threads > 1 ? serving_threads - 1 : 1); }
#endif

    OutputFile csv;
    if (output_open(&csv, csv_path, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); status = 1; }
    FILE* rows = csv.stream ? csv.stream : NULL;
    if (rows) { fprintf(rows, "%s\n", REQUESTS_CSV_HEADER); }

    float* acceptance = mallocCheck((size_t)n_requests * sizeof(float));
    const char** domains = mallocCheck((size_t)n_requests * sizeof(char*));
    int* served_at = mallocCheck((size_t)n_requests * sizeof(int)); // the request index of each served request
    int* prompt = mallocCheck((size_t)(room + 1) * sizeof(int));
    int* out = mallocCheck((size_t)(o->max_new + 1) * sizeof(int));
    ReplayTotals totals;
    memset(&totals, 0, sizeof(totals));
    totals.n_requests = n_requests;
    totals.acceptance = acceptance;
    totals.domains = domains;
    double gap_overrun = 0.0;   // (training in the gaps: how long the last gap's step kept the next request waiting)
    for (int r = 0; r < n_requests && status == 0 && !stop_requested(); r++) {
        const TrafficRequest* request = &traffic.requests[r];
        if (held_back.n_records > 0 && r % o->eval_every == 0) { held_back_measure(&held_back, &source, r); }
        totals.n_done = r + 1;
        int n_prompt = prompt_encode(&target.tokenizer, request->prompt, request->chat, prompt, room, &err);
        if (n_prompt < 0) { // does not fit, or tokenizes to nothing: recorded as skipped, not measured
            int empty = n_prompt == PROMPT_EMPTY;
            totals.n_skipped += !empty;
            totals.n_empty += empty;
            fprintf(rows, "%d,%s,0,0,0,0,0,%d,%s,0\n", r, request->domain, source.draft_version,
                    empty ? "skipped_prompt_empty" : "skipped_prompt_too_long");
            fflush(rows);
        } else {
            Record* record = online ? record_new(target.config.dim, o->train.discard_weight > 0.0f) : NULL;
            SpecStats stats;
            int n = generate_speculative(&target, &source, prompt, n_prompt, o->max_new, o->sampling,
                                         (uint64_t)o->seed + (uint64_t)r, out, &stats, NULL, NULL, record);
            if (online) { record_buffer_push(flywheel.records, record); }
            // at an offered load below 1, the idle time after the request: the trainer's (training in the gaps), or
            // idle (plain decoding and frozen drafts at the same load: the baseline a live run is compared with)
            double gap = stats.total_seconds * (1.0 - o->load) / o->load;
            // a step of the last gap that ran past its end delayed this request: its seconds include that wait,
            // so that serving with training in the gaps is charged for it (requests.csv, the summary's speed)
            stats.total_seconds += gap_overrun;
            gap_overrun = 0.0;
            if (online && flywheel.in_gaps) { gap_overrun = flywheel_gap(&flywheel, gap); }
            else if (o->load < 1.0f) {
                double idle_start = now_seconds();
                idle_until(idle_start + gap);
                double idle = now_seconds() - idle_start;   // (less than the gap where a stop request cut it short)
                totals.idle_seconds += idle < gap ? idle : gap;
            }
            float accepted = stats.verify_passes ? (float)stats.emitted / stats.verify_passes : 1.0f;
            acceptance[totals.n_served] = accepted;
            served_at[totals.n_served] = r;
            domains[totals.n_served] = request->domain;
            totals.n_served++;
            spec_stats_add(&totals.spec, &stats);
            if (source.draft) { // the EAGLE draft, alone or in the hybrid (the sources without one have none)
                for (int i = 1; i < n; i++) { totals.vocab_tokens++; totals.vocab_held += source.draft->t2d[out[i]] >= 0; }
            }
            fprintf(rows, "%d,%s,%d,%d,%d,%.4f,%.4f,%d,served,%.4f\n", r, request->domain, n_prompt, n, stats.verify_passes,
                    accepted, stats.total_seconds, source.draft_version, stats.prefill_seconds);
            fflush(rows); // a long replay can be watched row by row (in the temporary file beside requests.csv)
            double recent = 0.0;
            int window = totals.n_served < 25 ? totals.n_served : 25;
            for (int i = totals.n_served - window; i < totals.n_served; i++) { recent += acceptance[i]; }
            if (!o->quiet) {
                replay_progress(r, n_requests, recent / window, online ? &flywheel : NULL, source.draft_version,
                                totals.spec.total_seconds > 0 ? totals.spec.n_generated / totals.spec.total_seconds : 0.0,
                                r == n_requests - 1);
            }
        }
        // a lockstep round after every lockstep_every requests of the stream, served or skipped (its steps
        // count the served ones)
        if (online && o->lockstep_every > 0 && (r + 1) % o->lockstep_every == 0) { flywheel_lockstep_round(&flywheel); }
    }
    // the requests after the last full round are trained on too (not when stopped: the user asked to end)
    if (online && status == 0 && o->lockstep_every > 0 && totals.n_done % o->lockstep_every != 0 && !stop_requested()) {
        flywheel_lockstep_round(&flywheel);
    }
    if (online) { flywheel_stop(&flywheel); } // the training step in flight finishes
    if (stop_requested() && !o->quiet) {
        fprintf(stderr, "stopped after %d of %d requests; saving the results\n", totals.n_done, n_requests);
    }
    // the results, most valuable first: the trained draft before anything else runs (a second stop signal
    // exits at once, and the final held-back measurement below takes a while)
    int wrote_draft = 0;
    if (online && o->save_draft && flywheel.trainer.step == 0) {
        // (as train: an interrupt before any step must not replace an earlier result with the initial draft;
        // without one, nothing trained is an error: nothing served, every step rejected, or no training thread;
        // after an error already reported, such as an output that could not be opened, only its consequence)
        int cause = stop_requested() || status != 0;
        fprintf(stderr, "%snothing trained (0 optimiser steps, %ld rejected): %s not written\n",
                cause ? "" : "error: ", flywheel.trainer.rejected_updates, o->save_draft);
        if (!cause) { status = 1; }
    } else if (online && o->save_draft) {
        if (draft_save(&flywheel.trainer.draft, o->save_draft, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); status = 1; }
        else { wrote_draft = 1; }
    }
    // then the per-request rows, complete now: before the final held-back measurement, which can take minutes
    // (a second interrupt during it would otherwise remove them with the temporary files)
    if (rows && output_commit(&csv, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); status = 1; }
    // (requests.csv not opened: nothing served, and nothing else is written, so no output of an earlier run in
    // the directory is replaced or removed beside its rows)
    if (rows && held_back.n_records > 0 &&
        (held_back.n_points == 0 || held_back.at_request[held_back.n_points - 1] != totals.n_done)) {
        if (online) { // the last weights the trainer published
            int version;
            const int32_t* vocabulary;
            float* weights = weight_exchange_take(flywheel.exchange, source.draft_version, &version, &vocabulary);
            if (weights) {
                draft_use_weights(&draft, weights);
                draft_use_vocabulary(&draft, vocabulary);
                source.draft_version = version;
            }
        }
        held_back_measure(&held_back, &source, totals.n_done);
    }
#ifdef _OPENMP
    omp_set_num_threads(serving_threads);
#endif

    // then the held-back curve, the summary, the chart
    if (rows && held_back.n_points > 0) {
        OutputFile eval;
        if (output_open(&eval, eval_path, &err) != 0) {
            fprintf(stderr, "error: %s\n", err.message);
            status = 1;
        } else {
            fprintf(eval.stream, "request,draft_version,held_back_acceptance,held_back_mean_per_request\n");
            for (int i = 0; i < held_back.n_points; i++) {
                fprintf(eval.stream, "%d,%d,%.4f,%.4f\n", held_back.at_request[i], held_back.version[i], held_back.acceptance[i],
                        held_back.mean_per_request[i]);
            }
            if (output_commit(&eval, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); status = 1; }
        }
    }
    if (rows) {   // (else nothing: see requests.csv above)
        OutputFile summary;
        if (output_open(&summary, summary_path, &err) != 0) {
            fprintf(stderr, "error: %s\n", err.message);
            status = 1;
        } else {
            replay_write_summary(summary.stream, o, &totals, &traffic, &source, online ? &flywheel : NULL, &held_back, room,
                                 target.backend);
            if (output_commit(&summary, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); status = 1; }
        }
        if (!o->quiet) {
            replay_write_summary(stderr, o, &totals, &traffic, &source, online ? &flywheel : NULL, &held_back, room, target.backend);
        }
        if (totals.n_served > 0) {
            ChartSeries series[2] = {
                {.label = o->label ? o->label : o->mode, .n = totals.n_served, .acceptance = acceptance, .domains = domains,
                 .x = served_at},
                {.label = "held-back requests, the draft frozen", .n = held_back.n_points, .acceptance = held_back.acceptance,
                 .x = held_back.at_request, .measured_curve = 1},
            };
            if (svg_acceptance_chart(chart_path, series, held_back.n_points > 0 ? 2 : 1, "acceptance length per request", &err) != 0) {
                fprintf(stderr, "error: %s\n", err.message);
                status = 1;
            }
        } else if (totals.n_done > 0 && !stop_requested()) { // (stopped: the run ended early, as asked, with 128 + signal)
            fprintf(stderr, "error: %s: none of the %d requests could be served: %d prompts are longer than the %d tokens the "
                    "context leaves after --max-new %d%s, %d have no token the vocabulary can spell\n", o->traffic_path,
                    totals.n_done, totals.n_skipped, room, o->max_new, totals.n_skipped > 0 ? " (raise --context or lower --max-new)" : "",
                    totals.n_empty);
            status = 1;
        }
        // a chart or held-back file this run did not write would be an earlier run's beside this run's rows
        if (totals.n_served == 0) { remove_stale_output(chart_path); }
        if (held_back.n_points == 0) { remove_stale_output(eval_path); }
    }
    if (!o->quiet) {
        if (wrote_draft) { fprintf(stderr, "saved the trained draft (%d optimiser steps) to %s\n", flywheel.trainer.step, o->save_draft); }
        if (status == 0) { // the chart only when a request was served (an interrupt can come before any)
            fprintf(stderr, "wrote %s, %s%s%s%s%s\n", csv_path, summary_path, totals.n_served ? ", " : "",
                    totals.n_served ? chart_path : "", held_back.n_points ? ", " : "", held_back.n_points ? eval_path : "");
        }
    }
    if (status == 0 && stop_requested()) { status = 128 + stop_requested(); }
    stop_signals_restore();

    free(acceptance); free(domains); free(served_at); free(prompt); free(out);
    free(csv_path); free(summary_path); free(chart_path); free(eval_path);
    held_back_free(&held_back);
    for (int i = 0; held && i < n_held; i++) { free(held[i].prompt); }
    free(held);
    if (online) { flywheel_free(&flywheel); }
    draft_source_free(&source);
    if (!no_draft) { draft_free(&draft); }
    traffic_free(&traffic);
    target_free(&target);
    return status;
}

// ----------------------------------------------------------------------------
// offline training (the static baseline): the target's own greedy outputs, the same trainer

// Generates the target's outputs for the traffic's prompts, trains a draft on them for o->epochs, and
// writes it to o->out_path (checked writable once the inputs are read, before any work). Returns the exit
// status as replay_run.
int train_offline(const Options* o) {
    Error err;
    Target target;
    const Backend* backend = backend_by_name(o->backend_name ? o->backend_name : "cpu", &err); // (resolved by the command)
    // the context: --context, else replay's; and with --self-samples and no --context, one that holds --parallel
    // samples at once, each in its own slots (at most the positions the model was trained on: its lanes' positions
    // stay short, but a longer context is the user's to ask for)
    int context = o->context > 0 ? o->context : REPLAY_DEFAULT_CONTEXT;
    if (backend == NULL || target_load(&target, o->model_path, backend, context, o->batch, &err) != 0) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    int lanes = o->parallel < o->batch ? o->parallel : o->batch, sample_slots = 1 + o->sample_length + o->max_new;
    long wanted = (long)lanes * sample_slots, trained = target.config.context_length;
    if (o->context == 0 && o->self_samples > 0 && sample_slots + TREE_MAX_NODES <= context && wanted > context &&
        trained > context) {
        context = (int)(wanted < trained ? wanted : trained);
        target_free(&target);
        if (target_load(&target, o->model_path, backend, context, o->batch, &err) != 0) {
            fprintf(stderr, "error: %s\n", err.message);
            return 1;
        }
    }
    // the data: a traffic file's prompts, or (--self-samples) the target's own text, no file at all
    Traffic traffic = {0};
    if (o->traffic_path && traffic_load(&traffic, o->traffic_path, &err) != 0) {
        fprintf(stderr, "error: %s\n", err.message);
        target_free(&target);
        return 1;
    }
    int room, start_token = -1;
    Draft draft;
    if ((o->domain && traffic_select_domain(&traffic, o->domain, &err) != 0) ||
        traffic_chat_check(&traffic, &target.tokenizer, &err) != 0 || prompt_room(&target, o->max_new, &room, &err) != 0 ||
        (o->self_samples > 0 && self_sample_start(&target.tokenizer, &start_token, &err) != 0) ||
        (o->self_samples > 0 && o->sample_length >= room &&
         error_set(&err, "--sample-length %d does not fit the context: a sample and its --max-new %d continuation need "
                   "at most %d tokens of prompt here; lower --sample-length or --max-new, or raise --context",
                   o->sample_length, o->max_new, room - 1) != 0) ||
        replay_load_draft(&draft, o->draft, &target, o->draft_vocab, (uint64_t)o->seed, &err) != 0) {
        fprintf(stderr, "error: %s\n", err.message);
        traffic_free(&traffic);
        target_free(&target);
        return 1;
    }
    if (check_writable(o->out_path, 1, &err) != 0) { // before any work, after every input (the draft's start too)
        fprintf(stderr, "error: %s\n", err.message);
        draft_free(&draft);
        traffic_free(&traffic);
        target_free(&target);
        return 1;
    }
    traffic_order(&traffic, "mixed", (uint64_t)o->seed);
    int n_requests = o->self_samples > 0 ? o->self_samples
                   : o->requests > 0 && o->requests < traffic.n_requests ? o->requests : traffic.n_requests;
    // the records' states go to a file beside the output as each is made (RecordSpill): memory holds their tokens
    RecordSpill spill;
    size_t spill_name_bytes = strlen(o->out_path) + 48;
    char* spill_path = mallocCheck(spill_name_bytes);
    snprintf(spill_path, spill_name_bytes, "%s.rec.%ld", o->out_path, (long)getpid());
    if (record_spill_open(&spill, spill_path, &err) != 0) {
        fprintf(stderr, "error: %s (it is made beside -o and removed at once)\n", err.message);
        free(spill_path);
        draft_free(&draft);
        traffic_free(&traffic);
        target_free(&target);
        return 1;
    }
    free(spill_path);
    // the most the records can take (every sample or prompt at its longest) against the space free there: a
    // warning, since they are usually shorter
    struct statvfs disk;
    double most = (double)n_requests * record_state_bytes((o->self_samples > 0 ? 1 + o->sample_length : room) + o->max_new,
                                                          target.config.dim);
    if (fstatvfs(spill.fd, &disk) == 0 && most > (double)disk.f_bavail * disk.f_frsize) {
        fprintf(stderr, "warning: the records may take up to %.0f MB beside %s, and %.0f MB are free there\n",
                most / 1048576.0, o->out_path, (double)disk.f_bavail * disk.f_frsize / 1048576.0);
    }
    Record** records = callocCheck((size_t)n_requests, sizeof(Record*));
    int n_skipped = 0, n_records;
    stop_signals_install();
    RecordJob job = {.requests = o->self_samples > 0 ? NULL : traffic.requests, .room = room, .start_token = start_token,
                     .length = o->sample_length, .sampling = o->sampling, .seed = (uint64_t)o->seed, .n = n_requests,
                     .max_new = o->max_new, .parallel = o->parallel,
                     .what = o->self_samples > 0 ? "sampling the target's own text" : "generating the target's outputs",
                     .spill = &spill};
    int fit = o->self_samples > 0 ? target.cache_capacity / sample_slots : lanes;   // (prompts: as their lengths allow)
    fprintf(stderr, "recording %s%d %s at once, in a context of %d slots\n", o->self_samples > 0 ? "" : "up to ",
            fit < lanes ? fit : lanes, o->self_samples > 0 ? "samples" : "prompts", target.cache_capacity);
    n_records = record_batch(&target, &job, records, &n_skipped);
    int status = 0, mapped = record_spill_map(&spill, records, n_records, &err) == 0;   // (else a write error)
    if (mapped && o->self_samples > 0) {
        fprintf(stderr, "the target's own text: %d samples kept, %d under %d tokens (it ended them) not kept\n", n_records,
                n_skipped, SELF_SAMPLE_MIN_TOKENS);
    } else if (mapped && n_skipped > 0) {
        fprintf(stderr, "skipped %d requests whose prompt is longer than the %d tokens the context leaves after "
                "--max-new %d, or has no token\n", n_skipped, room, o->max_new);
    }
    if (mapped && spill.bytes > 0) {
        fprintf(stderr, "records: %.1f MB of the target's states in a file beside %s (unlinked: read back from the page "
                "cache or the disk as the trainer needs them)\n", spill.bytes / 1048576.0, o->out_path);
    }
    Trainer trainer;
    trainer_init(&trainer, &draft, &target, o->train);
    if (mapped && o->train.adapt_vocabulary) { // the vocabulary of the data: all records are known before the first step
        for (int i = 0; i < n_records; i++) { trainer_count_tokens(&trainer, records[i]); }
        fprintf(stderr, "draft vocabulary: %d entries replaced by the training records' frequent tokens\n",
                trainer_adapt_vocabulary(&trainer));
    }
    int batch = o->batch_requests < 1 ? 1 : o->batch_requests;
    int64_t planned_steps = (int64_t)o->epochs * ((n_records + batch - 1) / batch);
    if (!mapped) {
        fprintf(stderr, "error: %s; nothing trained, %s not written\n", err.message, o->out_path);
        status = 1;
    } else if (stop_requested()) {
        fprintf(stderr, "interrupted before training: nothing trained, %s not written\n", o->out_path);
        status = 128 + stop_requested();
    } else if (n_records == 0 && o->self_samples > 0) {
        fprintf(stderr, "error: none of the %d samples of the target's own text reached %d tokens before an end token; "
                "nothing to train on (try more --self-samples or another --seed)\n", n_requests, SELF_SAMPLE_MIN_TOKENS);
        status = 1;
    } else if (n_records == 0) {
        fprintf(stderr, "error: %s: none of the %d requests could be served: every prompt is longer than the %d tokens the "
                "context leaves after --max-new %d, or has no token\n", o->traffic_path, n_requests, room, o->max_new);
        status = 1;
    } else if (planned_steps > INT_MAX) {
        fprintf(stderr, "error: --epochs %d over %d records is more than %d optimiser steps (the step counter's range); "
                "expected fewer epochs or records\n", o->epochs, n_records, INT_MAX);
        status = 1;
    } else {
        if (strcmp(o->lr_schedule, "cosine") == 0) { // down to 0 by the run's last step
            trainer.settings.decay_steps = (int)planned_steps;
            if (trainer.settings.decay_steps > trainer.settings.warmup_steps) {
                fprintf(stderr, "learning rate: warm-up over %d steps to %g, then a cosine down to 0 at step %d\n",
                        trainer.settings.warmup_steps, trainer.settings.learning_rate, trainer.settings.decay_steps);
            } else {   // (trainer_learning_rate decays only after the warm-up)
                fprintf(stderr, "warning: --lr-schedule cosine over %d steps, no more than the %d steps of --warmup: the "
                        "rate warms up and never decays (lower --warmup to decay it)\n", trainer.settings.decay_steps,
                        trainer.settings.warmup_steps);
            }
        }
        uint64_t rng = random_seed_state((uint64_t)o->seed);
        for (int epoch = 0; epoch < o->epochs && !stop_requested(); epoch++) {
            for (int i = n_records - 1; i > 0; i--) { // a fresh order each epoch
                int j = (int)(random_u32(&rng) % (uint32_t)(i + 1));
                Record* swap = records[i]; records[i] = records[j]; records[j] = swap;
            }
            double loss = 0, accuracy = 0;
            int steps = 0;
            for (int first = 0; first < n_records && !stop_requested(); first += batch) {
                int n = n_records - first < batch ? n_records - first : batch;
                TrainStats stats;
                // the epoch's means are over the steps applied (a rejected step's loss is not finite; a batch
                // without a loss row taught nothing)
                if (trainer_step(&trainer, records + first, n, &stats) != 0) { continue; }
                loss += stats.loss;
                accuracy += stats.step0_accuracy;
                steps++;
                fprintf(stderr, "\repoch %d/%d  step %d  loss %.3f  step-0 accuracy %.3f   ", epoch + 1, o->epochs, trainer.step,
                        loss / steps, accuracy / steps);
            }
            fprintf(stderr, "\n");
        }
        if (trainer.step == 0) {
            // every step rejected (a non-finite gradient), or an interrupt before the first: the initial draft
            // must not replace an earlier result (as replay --save-draft)
            fprintf(stderr, "%s: nothing trained (0 optimiser steps, %ld rejected): %s not written\n",
                    stop_requested() ? "interrupted" : "error", trainer.rejected_updates, o->out_path);
            status = stop_requested() ? 128 + stop_requested() : 1;
        } else if (draft_save(&trainer.draft, o->out_path, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); status = 1; }
        else {
            char description[256], trainer_description[256];
            backend_describe(backend, description, sizeof(description));
            backend_describe(trainer.backend, trainer_description, sizeof(trainer_description));
            fprintf(stderr, "wrote %s: trained on %d %s x %d epochs (%d optimiser steps, %ld rejected)%s\nbackend: %s\n"
                    "trainer: %s\n", o->out_path, n_records, o->self_samples > 0 ? "samples of the target's own text" : "requests",
                    o->epochs, trainer.step, trainer.rejected_updates,
                    stop_requested() ? " (interrupted: the steps taken so far)" : "", description, trainer_description);
            if (stop_requested()) { status = 128 + stop_requested(); }
        }
    }
    stop_signals_restore();
    trainer_free(&trainer);
    draft_free(&draft);
    for (int i = 0; i < n_records; i++) { record_free(records[i]); }
    free(records);
    record_spill_close(&spill);
    traffic_free(&traffic);
    target_free(&target);
    return status;
}
