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
A failing trainer (non-finite updates are rejected, not fatal) stops training and never serving.
*/
#include <pthread.h>
#include "aurora.h"

typedef struct {
    Trainer trainer;        // on the target's backend
    RecordBuffer* records;
    WeightExchange* exchange;
    int sync_every;         // publish every this many optimiser steps (threaded mode)
    int batch_requests;     // records per optimiser step
    int lockstep_every;     // > 0: train in the serving thread after every this many requests
    int steps_per_request;  // lockstep: optimiser steps per request served
    // the training pool: the newest pool_capacity records; each step samples its batch from them, so a
    // record teaches more than once (Aurora's sample pool) while the trainer keeps pace with serving
    int pool_capacity;
    int pool_count, pool_next;
    Record** pool;          // (pool_capacity)
    uint64_t pool_rng;
    long records_taken;
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

// Moves newly recorded requests into the pool (the oldest leave it). Returns how many arrived.
static int flywheel_take_records(Flywheel* flywheel, int wait) {
    Record* arrived[64];
    int n = record_buffer_pop(flywheel->records, arrived, 64, wait);
    for (int i = 0; i < n; i++) {
        if (flywheel->pool_count == flywheel->pool_capacity) { record_free(flywheel->pool[flywheel->pool_next]); }
        else { flywheel->pool_count++; }
        flywheel->pool[flywheel->pool_next] = arrived[i];
        flywheel->pool_next = (flywheel->pool_next + 1) % flywheel->pool_capacity;
    }
    flywheel->records_taken += n;
    return n;
}

// One optimiser step on a batch drawn from the pool (seeded, so lockstep runs repeat).
static void flywheel_train_step(Flywheel* flywheel) {
    Record* batch[64];
    int n = flywheel->batch_requests < flywheel->pool_count ? flywheel->batch_requests : flywheel->pool_count;
    for (int i = 0; i < n; i++) { batch[i] = flywheel->pool[random_u32(&flywheel->pool_rng) % (uint32_t)flywheel->pool_count]; }
    TrainStats stats;
    trainer_step(&flywheel->trainer, batch, n, &stats);
    int version = 0;
    if (flywheel->lockstep_every == 0 && flywheel->trainer.step % flywheel->sync_every == 0) {
        version = weight_exchange_publish(flywheel->exchange, flywheel->trainer.draft.weight_arena);
    }
    flywheel_report(flywheel, &stats, version);
}

static void* flywheel_thread_main(void* argument) {
    Flywheel* flywheel = argument;
#ifdef _OPENMP
    omp_set_num_threads(1); // serving keeps the cores' OpenMP teams; training runs beside it on one thread
#endif
    while (!__atomic_load_n(&flywheel->stopping, __ATOMIC_ACQUIRE)) {
        flywheel_take_records(flywheel, flywheel->pool_count == 0); // wait only when there is nothing to train on
        if (flywheel->pool_count == 0) { continue; }                // woken by close
        flywheel_train_step(flywheel);
    }
    return NULL;
}

// Lockstep: take everything recorded, train steps_per_request steps per request since the last round,
// then publish (called by the serving loop; no thread).
static void flywheel_lockstep_round(Flywheel* flywheel) {
    flywheel_take_records(flywheel, 0);
    if (flywheel->pool_count == 0) { return; }
    for (int i = 0; i < flywheel->lockstep_every * flywheel->steps_per_request; i++) { flywheel_train_step(flywheel); }
    int version = weight_exchange_publish(flywheel->exchange, flywheel->trainer.draft.weight_arena);
    flywheel_report(flywheel, NULL, version);
}

static void flywheel_start(Flywheel* flywheel, const Draft* draft, const Target* target, TrainerSettings settings,
                           int buffer_capacity, int sync_every, int batch_requests, int lockstep_every,
                           int pool_capacity, int steps_per_request, uint64_t seed) {
    memset(flywheel, 0, sizeof(*flywheel));
    trainer_init(&flywheel->trainer, draft, target, settings);
    flywheel->records = record_buffer_new(buffer_capacity);
    flywheel->exchange = weight_exchange_new(draft->n_weight_floats);
    flywheel->sync_every = sync_every < 1 ? 1 : sync_every;
    flywheel->batch_requests = batch_requests < 1 ? 1 : (batch_requests > 64 ? 64 : batch_requests);
    flywheel->lockstep_every = lockstep_every;
    flywheel->steps_per_request = steps_per_request < 1 ? 1 : steps_per_request;
    flywheel->pool_capacity = pool_capacity < 1 ? 1 : pool_capacity;
    flywheel->pool = callocCheck((size_t)flywheel->pool_capacity, sizeof(Record*));
    flywheel->pool_rng = random_seed_state(seed);
    pthread_mutex_init(&flywheel->stats_lock, NULL);
    if (lockstep_every == 0) {
        if (pthread_create(&flywheel->thread, NULL, flywheel_thread_main, flywheel) != 0) {
            fprintf(stderr, "warning: could not start the training thread; serving continues without training\n");
        } else {
            flywheel->thread_started = 1;
        }
    }
}

// Stops training (the step in progress finishes), then joins the thread.
static void flywheel_stop(Flywheel* flywheel) {
    __atomic_store_n(&flywheel->stopping, 1, __ATOMIC_RELEASE);
    record_buffer_close(flywheel->records);
    if (flywheel->thread_started) { pthread_join(flywheel->thread, NULL); }
    flywheel->thread_started = 0;
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

typedef struct {
    const char* model_path;
    const char* traffic_path;
    const char* order;          // "mixed" or "ordered"
    const char* domain;         // keep only this domain (NULL: all)
    const char* mode;           // "online" (train while serving), "static" (a frozen draft), "none" (no drafting)
    const char* draft;          // online: the starting draft ("random" or FILE); static: FILE ("random" allowed)
    const char* save_draft;     // online: write the final trained draft here
    const char* out_dir;
    const char* label;          // for the chart legend and the summary
    int requests;               // at most this many (0: all)
    int from;                   // start at this request of the ordered stream (0: the first)
    int max_new;
    int context;
    int draft_vocab;
    int use_cuda;
    TreeShape shape;
    SamplerSettings sampling;
    uint64_t seed;
    TrainerSettings train;
    int sync_every, batch_requests, lockstep_every, buffer_capacity;
    int pool_capacity, steps_per_request;
    int quiet;                  // no progress bar or summary on stderr (tests)
} ReplayOptions;

static ReplayOptions replay_default_options(void) {
    ReplayOptions o = {0};
    o.order = "mixed"; o.mode = "online"; o.draft = "random"; o.out_dir = "out/replay";
    o.max_new = 32; o.context = 2048; o.shape = (TreeShape){1, 5, 6};
    o.sampling = (SamplerSettings){0.0f, 1.0f}; o.seed = 1;
    o.train = trainer_default_settings();
    o.sync_every = 4; o.batch_requests = 1; o.lockstep_every = 0; o.buffer_capacity = 16;
    o.pool_capacity = 64; o.steps_per_request = 4;
    return o;
}

static void make_directory(const char* path) {
    char command[1200];
    snprintf(command, sizeof(command), "mkdir -p '%s'", path);
    if (system(command) != 0) { fprintf(stderr, "error: cannot create the directory %s\n", path); exit(EXIT_FAILURE); }
}

// Loads a draft for replay or training: "random" (seeded), or a checkpoint file.
static void replay_load_draft(Draft* draft, const char* what, const Target* target, int draft_vocab, uint64_t seed) {
    Error err;
    if (strcmp(what, "random") == 0 || strcmp(what, "target") == 0) {
        int V = target->config.vocab_size;
        draft_init_random(draft, target, draft_vocab > 0 && draft_vocab <= V ? draft_vocab : (V < 8192 ? V : 8192), NULL, seed);
        if (strcmp(what, "target") == 0) { draft_init_from_target(draft, target); }
    } else if (draft_load(draft, what, target, &err) != 0) {
        fprintf(stderr, "error: %s\n", err.message);
        exit(EXIT_FAILURE);
    }
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

// Serves every request of the traffic and writes DIR/requests.csv, DIR/summary.txt, DIR/acceptance.svg.
static int replay_run(const ReplayOptions* o) {
    Error err;
    Target target;
    const Backend* backend = backend_by_name(o->use_cuda ? "cuda" : "cpu", &err);
    if (backend == NULL) { fprintf(stderr, "error: --device %s: %s\n", o->use_cuda ? "cuda" : "cpu", err.message); return 1; }
    if (target_load(&target, o->model_path, backend, o->context, 256, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    Traffic traffic;
    if (traffic_load(&traffic, o->traffic_path, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    if (o->domain && traffic_select_domain(&traffic, o->domain, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    traffic_order(&traffic, o->order, o->seed);
    if (o->from > 0) { // drop the first requests of the ordered stream
        int from = o->from < traffic.n_requests ? o->from : traffic.n_requests;
        for (int i = 0; i < from; i++) { free(traffic.requests[i].prompt); }
        memmove(traffic.requests, traffic.requests + from, (size_t)(traffic.n_requests - from) * sizeof(TrafficRequest));
        traffic.n_requests -= from;
    }
    int n_requests = o->requests > 0 && o->requests < traffic.n_requests ? o->requests : traffic.n_requests;
    if (n_requests == 0) { fprintf(stderr, "error: %s: no requests to replay\n", o->traffic_path); return 1; }
    int online = strcmp(o->mode, "online") == 0, no_draft = strcmp(o->mode, "none") == 0;
    Draft draft;
    memset(&draft, 0, sizeof(draft));
    DraftSource source;
    if (no_draft) {
        draft_source_init(&source, DRAFT_NONE, o->shape, NULL, &target);
    } else {
        replay_load_draft(&draft, o->draft, &target, o->draft_vocab, o->seed);
        draft_source_init(&source, DRAFT_EAGLE, o->shape, &draft, &target);
    }
    Flywheel flywheel;
    if (online) {
        flywheel_start(&flywheel, &draft, &target, o->train, o->buffer_capacity, o->sync_every, o->batch_requests,
                       o->lockstep_every, o->pool_capacity, o->steps_per_request, o->seed);
        source.exchange = flywheel.exchange;
    }
#ifdef _OPENMP
    // with a training thread beside it, serving takes one core: OpenMP teams on oversubscribed cores
    // wait at every barrier for a descheduled thread (measured: 3x slower serving)
    int serving_threads = omp_get_max_threads();
    if (online && o->lockstep_every == 0) { omp_set_num_threads(1); }
#endif

    make_directory(o->out_dir);
    char path[1100];
    snprintf(path, sizeof(path), "%s/requests.csv", o->out_dir);
    FILE* csv = fopen(path, "w");
    if (csv == NULL) { fprintf(stderr, "error: cannot write %s\n", path); return 1; }
    fprintf(csv, "request,domain,prompt_tokens,output_tokens,verify_passes,acceptance_length,seconds,draft_version\n");

    float* acceptance = mallocCheck((size_t)n_requests * sizeof(float));
    const char** domains = mallocCheck((size_t)n_requests * sizeof(char*));
    int* prompt = mallocCheck((size_t)(target.cache_capacity + 1) * sizeof(int));
    int* out = mallocCheck((size_t)(o->max_new + 1) * sizeof(int));
    long total_tokens = 0, total_passes = 0, total_emitted = 0;
    double total_seconds = 0.0;
    int skipped_prompts = 0;
    for (int r = 0; r < n_requests; r++) {
        const TrafficRequest* request = &traffic.requests[r];
        char* text = request->chat ? chat_template_apply(request->prompt) : strdup(request->prompt);
        int room = target.cache_capacity - o->max_new - TREE_MAX_NODES;
        int n_prompt = tokenizer_encode(&target.tokenizer, text, strlen(text), request->chat, prompt, room, &err);
        free(text);
        if (n_prompt <= 0) { // too long for the context: keep going, and say so in the summary
            skipped_prompts++;
            acceptance[r] = 1.0f;
            domains[r] = request->domain;
            continue;
        }
        Record* record = online ? record_new(target.config.dim) : NULL;
        SpecStats stats;
        int n = generate_speculative(&target, &source, prompt, n_prompt, o->max_new, o->sampling, o->seed + (uint64_t)r,
                                     out, &stats, NULL, NULL, record);
        if (online) { record_buffer_push(flywheel.records, record); }
        double seconds = stats.total_seconds;
        acceptance[r] = stats.verify_passes ? (float)stats.emitted / stats.verify_passes : 1.0f;
        domains[r] = request->domain;
        total_tokens += n;
        total_seconds += seconds;
        total_passes += stats.verify_passes;
        total_emitted += stats.emitted;
        fprintf(csv, "%d,%s,%d,%d,%d,%.4f,%.4f,%d\n", r, request->domain, n_prompt, n, stats.verify_passes, acceptance[r],
                seconds, source.draft_version);
        fflush(csv); // a long replay can be watched (and survives an interruption) row by row
        double recent = 0.0;
        int window = r + 1 < 25 ? r + 1 : 25;
        for (int i = r + 1 - window; i <= r; i++) { recent += acceptance[i]; }
        if (!o->quiet) {
            replay_progress(r, n_requests, recent / window, online ? &flywheel : NULL, source.draft_version,
                            total_seconds > 0 ? total_tokens / total_seconds : 0.0, r == n_requests - 1);
        }
        if (online && o->lockstep_every > 0 && (r + 1) % o->lockstep_every == 0) { flywheel_lockstep_round(&flywheel); }
    }
    fclose(csv);
    if (online) { flywheel_stop(&flywheel); }
#ifdef _OPENMP
    omp_set_num_threads(serving_threads);
#endif

    // summary
    snprintf(path, sizeof(path), "%s/summary.txt", o->out_dir);
    FILE* summary = fopen(path, "w");
    if (summary == NULL) { fprintf(stderr, "error: cannot write %s\n", path); return 1; }
    FILE* streams[2] = {summary, stderr};
    int n_streams = o->quiet ? 1 : 2;
    double first_mean = 0, last_mean = 0;
    int window = n_requests < 100 ? n_requests : 100;
    for (int i = 0; i < window; i++) { first_mean += acceptance[i]; last_mean += acceptance[n_requests - window + i]; }
    for (int s = 0; s < n_streams; s++) {
        FILE* f = streams[s];
        fprintf(f, "run: %s  mode %s  draft %s  traffic %s (%s order%s%s)\n", o->label ? o->label : o->out_dir, o->mode,
                no_draft ? "none" : o->draft, o->traffic_path, o->order, o->domain ? ", domain " : "", o->domain ? o->domain : "");
        fprintf(f, "requests %d (%d skipped: prompt longer than the context), tokens %ld, max new %d, tree K=%d S=%d N=%d\n",
                n_requests, skipped_prompts, total_tokens, o->max_new, source.shape.k, source.shape.depth, source.shape.nodes);
        fprintf(f, "acceptance length: overall %.3f, first %d requests %.3f, last %d requests %.3f\n",
                total_passes ? (double)total_emitted / total_passes : 1.0, window, first_mean / window, window, last_mean / window);
        for (int d = 0; d < traffic.n_domains; d++) {
            double sum = 0;
            int count = 0;
            for (int i = 0; i < n_requests; i++) { if (strcmp(domains[i], traffic.domains[d]) == 0) { sum += acceptance[i]; count++; } }
            if (count) { fprintf(f, "  domain %-10s %4d requests, mean acceptance length %.3f\n", traffic.domains[d], count, sum / count); }
        }
        fprintf(f, "speed: %.2f tokens/s over %.1f s of generation\n", total_seconds > 0 ? total_tokens / total_seconds : 0.0, total_seconds);
        if (online) {
            long pushed, dropped;
            record_buffer_counts(flywheel.records, &pushed, &dropped, NULL);
            fprintf(f, "training: %d optimiser steps, %ld rejected (non-finite), records %ld pushed / %ld dropped / %ld "
                    "trained on, final version %d, %ld publishes skipped\n", flywheel.trainer.step,
                    flywheel.trainer.rejected_updates, pushed, dropped, flywheel.records_taken, flywheel.published_version,
                    weight_exchange_skipped(flywheel.exchange));
            fprintf(f, "hot swaps: %d, switch time mean %.3f ms, max %.3f ms\n", source.swaps,
                    source.swaps ? 1e3 * source.swap_seconds / source.swaps : 0.0, 1e3 * source.swap_seconds_max);
        }
    }
    fclose(summary);

    // the chart
    snprintf(path, sizeof(path), "%s/acceptance.svg", o->out_dir);
    ChartSeries series = {o->label ? o->label : o->mode, n_requests, acceptance, domains};
    if (svg_acceptance_chart(path, &series, 1, "acceptance length per request", &err) != 0) {
        fprintf(stderr, "error: %s\n", err.message);
    }
    if (online && o->save_draft) {
        if (draft_save(&flywheel.trainer.draft, o->save_draft, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); }
        else if (!o->quiet) { fprintf(stderr, "saved the trained draft (version %d) to %s\n", flywheel.published_version, o->save_draft); }
    }
    if (!o->quiet) { fprintf(stderr, "wrote %s/requests.csv, summary.txt, acceptance.svg\n", o->out_dir); }

    free(acceptance); free(domains); free(prompt); free(out);
    if (online) { flywheel_free(&flywheel); }
    draft_source_free(&source);
    if (!no_draft) { draft_free(&draft); }
    traffic_free(&traffic);
    target_free(&target);
    return 0;
}

// ----------------------------------------------------------------------------
// offline training (the static baseline): the target's own greedy outputs, the same trainer

typedef struct {
    const char* model_path, *traffic_path, *domain, *out_path, *draft;
    int requests, max_new, epochs, context, draft_vocab, batch_requests;
    uint64_t seed;
    TrainerSettings train;
} TrainOptions;

static int train_offline(const TrainOptions* o) {
    Error err;
    Target target;
    if (target_load(&target, o->model_path, backend_cpu(), o->context, 256, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    Traffic traffic;
    if (traffic_load(&traffic, o->traffic_path, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    if (o->domain && traffic_select_domain(&traffic, o->domain, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    traffic_order(&traffic, "mixed", o->seed);
    int n_requests = o->requests > 0 && o->requests < traffic.n_requests ? o->requests : traffic.n_requests;
    DraftSource source;
    draft_source_init(&source, DRAFT_NONE, (TreeShape){1, 1, 2}, NULL, &target);
    Record** records = callocCheck((size_t)n_requests, sizeof(Record*));
    int* prompt = mallocCheck((size_t)(target.cache_capacity + 1) * sizeof(int));
    int* out = mallocCheck((size_t)(o->max_new + 1) * sizeof(int));
    SamplerSettings greedy = {0.0f, 1.0f};
    int n_records = 0;
    double start = now_seconds();
    for (int r = 0; r < n_requests; r++) {
        const TrafficRequest* request = &traffic.requests[r];
        char* text = request->chat ? chat_template_apply(request->prompt) : strdup(request->prompt);
        int n_prompt = tokenizer_encode(&target.tokenizer, text, strlen(text), request->chat, prompt,
                                        target.cache_capacity - o->max_new - TREE_MAX_NODES, &err);
        free(text);
        if (n_prompt <= 0) { continue; }
        Record* record = record_new(target.config.dim);
        SpecStats stats;
        generate_speculative(&target, &source, prompt, n_prompt, o->max_new, greedy, 0, out, &stats, NULL, NULL, record);
        records[n_records++] = record;
        fprintf(stderr, "\rgenerating the target's outputs: %d/%d requests (%.0f s)", r + 1, n_requests, now_seconds() - start);
    }
    fprintf(stderr, "\n");
    Draft draft;
    replay_load_draft(&draft, o->draft ? o->draft : "random", &target, o->draft_vocab, o->seed);
    Trainer trainer;
    trainer_init(&trainer, &draft, &target, o->train);
    int batch = o->batch_requests < 1 ? 1 : o->batch_requests;
    uint64_t rng = random_seed_state(o->seed);
    for (int epoch = 0; epoch < o->epochs; epoch++) {
        for (int i = n_records - 1; i > 0; i--) { // a fresh order each epoch
            int j = (int)(random_u32(&rng) % (uint32_t)(i + 1));
            Record* swap = records[i]; records[i] = records[j]; records[j] = swap;
        }
        double loss = 0, accuracy = 0;
        int steps = 0;
        for (int first = 0; first < n_records; first += batch) {
            int n = n_records - first < batch ? n_records - first : batch;
            TrainStats stats;
            trainer_step(&trainer, records + first, n, &stats);
            loss += stats.loss;
            accuracy += stats.step0_accuracy;
            steps++;
            fprintf(stderr, "\repoch %d/%d  step %d  loss %.3f  step-0 accuracy %.3f   ", epoch + 1, o->epochs, trainer.step,
                    loss / steps, accuracy / steps);
        }
        fprintf(stderr, "\n");
    }
    int status = 0;
    if (draft_save(&trainer.draft, o->out_path, &err) != 0) { fprintf(stderr, "error: %s\n", err.message); status = 1; }
    else {
        fprintf(stderr, "wrote %s: trained on %d requests x %d epochs (%d optimiser steps, %ld rejected)\n", o->out_path,
                n_records, o->epochs, trainer.step, trainer.rejected_updates);
    }
    trainer_free(&trainer);
    draft_free(&draft);
    for (int i = 0; i < n_records; i++) { record_free(records[i]); }
    free(records); free(prompt); free(out);
    draft_source_free(&source);
    traffic_free(&traffic);
    target_free(&target);
    return status;
}
