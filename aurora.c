/*
aurora.c: the system. One translation unit: it #includes the rest of the implementation, and tests
#define TESTING and #include this file to reach every static function.

  util.c       errors, checked allocation
  cpu_ref.c    the reference ops (plain fp32 loops)
  gguf.c       GGUF reader and writer, tensor types
  tokenizer.c  byte-level BPE tokenizer, ChatML template
  sampling.c   the seeded random generator, greedy / temperature / top-p sampling
  target.c     the target model: load from GGUF, forward pass, tiny random models
  draft.c      the EAGLE-3 draft model: init, save/load, forward
  speculative.c draft trees, tree attention masks, lossless acceptance, the draft sources
  recorder.c   records of finished requests, the bounded buffer between serving and training
  trainer.c    the online trainer: TTT unroll, accepted and discard losses, hand-written backward, AdamW
  generate.c   plain and speculative generation loops
  traffic.c    JSONL traffic (prompt / text / ShareGPT conversations), mixed and ordered streams
  plot.c       SVG acceptance charts
  flywheel.c   serving and training together: trainer thread or lockstep, hot swap, replay, offline train
  this file    the command-line interface

Contract: every command exits 0 on success and 1 with a one-line "error: ..." message on bad input
(unknown flag, unreadable or malformed model, prompt longer than the context); output already streamed
stays streamed.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <time.h>
#include <errno.h>
#include <unistd.h>
#ifdef USE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif
#include "aurora.h"
#include "util.c"
#include "cpu_ref.c"
#include "backends/cpu_fast.c"
#include "gguf.c"
#include "tokenizer.c"
#include "sampling.c"
#include "target.c"
#include "draft.c"
#include "speculative.c"
#include "recorder.c"
#include "trainer.c"
#include "generate.c"
#include "traffic.c"
#include "plot.c"
#include "flywheel.c"

// ----------------------------------------------------------------------------
// command-line interface

#ifndef TESTING

typedef struct {
    const char* model_path;
    const char* prompt;
    int n_predict;
    float temperature;
    float top_p;
    uint64_t seed;
    int chat;
    int parse_special;   // tokenize: turn special-token text such as <|im_start|> into that token
    int print_ids;
    int top_k;
    int use_cuda;
    int no_blas;
    int max_tokens;      // tokens per forward call (prefill chunk)
    const char* draft;   // speculative decoding: a draft checkpoint, or "random", "self", "lookup"
    int spec_k, spec_depth, spec_nodes;
    int draft_vocab;     // draft-init / --draft random: draft vocabulary size
    const char* out_path;
    int context;         // KV cache capacity; 0 = model default (capped at 4096)
} Options;

static const char* USAGE_MAIN =
    "usage: aurora <command> [options]\n"
    "commands:\n"
    "  generate   generate text from a prompt\n"
    "  tokenize   print the token ids of a text\n"
    "  logits     print the largest final-position logits of a prompt\n"
    "  info       print a model's configuration and tensor table\n"
    "  tiny-model write a small model with seeded random weights\n"
    "  convert    rewrite a GGUF model with its matrices in another tensor type\n"
    "  draft-init write a fresh random EAGLE-3 draft for a model\n"
    "  replay     serve a traffic file with speculative decoding, training the draft online\n"
    "  train      train a draft offline on the target's outputs\n"
    "  plot       draw several replays' acceptance on one chart\n"
    "run 'aurora <command> --help' for the options of a command\n";

static const char* USAGE_GENERATE =
    "usage: aurora generate -m MODEL -p PROMPT [options]\n"
    "  -m, --model FILE     GGUF model (Llama architecture)\n"
    "  -p, --prompt TEXT    prompt text\n"
    "  -n, --n-predict N    tokens to generate (default 64)\n"
    "  --temp T             temperature; 0 = exact greedy (default 0)\n"
    "  --top-p P            nucleus sampling threshold in (0, 1] (default 1 = off)\n"
    "  --seed S             random seed for sampling (default 42)\n"
    "  --chat               wrap the prompt in the model's ChatML template\n"
    "  --print-ids          print the generated token ids on one line instead of text\n"
    "  --device cpu|cuda    where the forward pass runs (default cpu)\n"
    "  --no-blas            use the plain reference matmul even when built with OpenBLAS\n"
    "  --context N          KV cache slots (default: model context, at most 4096)\n"
    "  --batch N            most tokens per forward call during prefill (default 256)\n"
    "speculative decoding (output identical to the above; statistics on stderr):\n"
    "  --draft SOURCE       DRAFT.gguf (an EAGLE-3 draft checkpoint), random (a fresh random draft),\n"
    "                       self (the target drafts for itself: the ceiling), lookup (prompt lookup)\n"
    "  --spec-k K           children per expanded node, 1 = a chain (default 1)\n"
    "  --spec-depth S       drafting steps = tree depth (default 5)\n"
    "  --spec-nodes N       tree nodes verified per pass, root included (default 1 + K*S, at most 64)\n"
    "  --draft-vocab N      with --draft random: draft vocabulary size (default min(V, 8192))\n";

static const char* USAGE_DRAFT_INIT =
    "usage: aurora draft-init -m MODEL -o DRAFT.gguf [--seed S] [--draft-vocab N]\n"
    "  writes a fresh EAGLE-3 draft for MODEL with seeded random weights; its vocabulary is the N\n"
    "  (default min(V, 8192)) lowest target ids: byte-level BPE numbers tokens in merge order, so low ids\n"
    "  are the frequent ones (the first 8192 cover 83-86%% of tokens in English prose and C code)\n";

static const char* USAGE_TOKENIZE =
    "usage: aurora tokenize -m MODEL [--special] TEXT\n"
    "  prints the token ids of TEXT, space-separated, on one line\n"
    "  --special            parse special-token text such as <|im_start|> as that token\n";

static const char* USAGE_LOGITS =
    "usage: aurora logits -m MODEL -p PROMPT [--top K] [--chat] [--no-blas]\n"
    "  prints the K (default 10) largest final-position logits as 'id logit' lines, largest first\n";

static const char* USAGE_TINY_MODEL =
    "usage: aurora tiny-model -o FILE [options]\n"
    "  writes a Llama model with seeded random weights and a small byte-level BPE tokenizer (for tests,\n"
    "  experiments and CPU/GPU parity checks)\n"
    "  --dim N (64)  --layers N (4)  --heads N (4)  --kv-heads N (2)  --ffn N (96)  --vocab N (320, >= 259)\n"
    "  --context N (256)  --type f32|f16|bf16|q8_0|q4_0|q4_1 (f32)  --untied  --seed S (1)\n";

static const char* USAGE_CONVERT =
    "usage: aurora convert -m MODEL -o OUT --type f32|f16|bf16|q8_0|q4_0|q4_1\n"
    "  rewrites a GGUF model with every matrix stored as the given type (vectors stay F32) and the\n"
    "  metadata unchanged; e.g. an F32 copy of a quantised model for exact comparisons with llama.cpp\n";

static const char* USAGE_REPLAY =
    "usage: aurora replay -m MODEL --traffic FILE [options]\n"
    "  serves every request of FILE (JSONL: prompt / text / ShareGPT conversations) with speculative\n"
    "  decoding and writes DIR/requests.csv, DIR/summary.txt and DIR/acceptance.svg\n"
    "  --online               train the draft from the traffic while serving (default)\n"
    "  --static DRAFT         serve a frozen draft (a checkpoint, or random)\n"
    "  --no-spec              plain decoding (the speed baseline)\n"
    "  --draft-init random|target|FILE  the online draft's start: random, random with the target's LM head\n"
    "                         (a warm start), or a checkpoint (default random)\n"
    "  --order mixed|ordered  shuffled with --seed, or grouped by domain (default mixed)\n"
    "  --domain D             only requests of domain D\n"
    "  --requests N           at most N requests (default all)     --max-new T  tokens per request (default 32)\n"
    "  --from R               start at request R of the ordered stream (default 0)\n"
    "  --out DIR              output directory (default out/replay) --label TEXT  name in the chart and summary\n"
    "  --save-draft FILE      write the trained draft at the end (resume with --draft-init FILE)\n"
    "  --sync-every N         publish new weights every N optimiser steps (default 4)\n"
    "  --sync-schedule M      lockstep: after every M requests, train on everything recorded, then publish\n"
    "                         (no thread; bitwise repeatable)\n"
    "  --batch-requests B     records per optimiser step (default 1)    --buffer N  record buffer size (default 16)\n"
    "  --pool N               records kept for training; each step samples its batch from the newest N (default 64)\n"
    "  --steps-per-request R  lockstep: optimiser steps per request served (default 4; threaded: as fast as it goes)\n"
    "  --lr X (3e-4)  --warmup N (20)  --clip X (1.0)  --ttt-length L (5)  --loss fkl|rkl|ntp (fkl)\n"
    "  --discard-weight X     weight of the rejected-branch loss (default 0: off)\n"
    "  --discard-top-k K      rejected nodes per verify pass used by it (default 0: all)\n"
    "  --spec-k K --spec-depth S --spec-nodes N   tree shape (default chain of depth 5)\n"
    "  --temp T --top-p P --seed S --draft-vocab N --context N --device cpu|cuda\n";

static const char* USAGE_TRAIN =
    "usage: aurora train -m MODEL --traffic FILE -o DRAFT.gguf [options]\n"
    "  trains a draft offline on the target's own greedy outputs for the traffic's prompts (the static\n"
    "  baseline), with the same trainer as the online flywheel\n"
    "  --domain D  --requests N (default all)  --max-new T (32)  --epochs E (1)  --draft-init random|FILE\n"
    "  --lr X  --warmup N  --clip X  --ttt-length L  --loss fkl|rkl|ntp  --batch-requests B  --seed S\n";

static const char* USAGE_INFO =
    "usage: aurora info -m MODEL\n"
    "  prints the model configuration and the GGUF tensor table\n";

static void usage_error(const char* usage, const char* format, const char* what) {
    fprintf(stderr, "error: ");
    fprintf(stderr, format, what);
    fprintf(stderr, "\n%s", usage);
    exit(EXIT_FAILURE);
}

static long parse_long(const char* usage, const char* flag, const char* text, long lo, long hi) {
    char* end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < lo || value > hi) {
        fprintf(stderr, "error: %s expects an integer in [%ld, %ld], got '%s'\n%s", flag, lo, hi, text, usage);
        exit(EXIT_FAILURE);
    }
    return value;
}

static float parse_float(const char* usage, const char* flag, const char* text, float lo, float hi) {
    char* end = NULL;
    errno = 0;
    float value = strtof(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= lo && value <= hi)) {
        fprintf(stderr, "error: %s expects a number in [%g, %g], got '%s'\n%s", flag, lo, hi, text, usage);
        exit(EXIT_FAILURE);
    }
    return value;
}

// Parses the options shared by all commands. Positional arguments are collected in positional.
static Options parse_options(int argc, char** argv, const char* usage, const char** positional, int* n_positional) {
    Options o = {0};
    o.n_predict = 64; o.temperature = 0.0f; o.top_p = 1.0f; o.seed = 42; o.top_k = 10; o.max_tokens = 256;
    o.spec_k = 1; o.spec_depth = 5;
    *n_positional = 0;
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { printf("%s", usage); exit(EXIT_SUCCESS); }
        if (arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (*n_positional >= 1) { usage_error(usage, "unexpected extra argument '%s'", arg); }
            positional[(*n_positional)++] = arg;
            continue;
        }
        // flags without a value
        if (strcmp(arg, "--chat") == 0) { o.chat = 1; continue; }
        if (strcmp(arg, "--print-ids") == 0) { o.print_ids = 1; continue; }
        if (strcmp(arg, "--no-blas") == 0) { o.no_blas = 1; continue; }
        if (strcmp(arg, "--special") == 0) { o.parse_special = 1; continue; }
        // flags with a value
        const char* valued[] = {"-m", "--model", "-p", "--prompt", "-n", "--n-predict", "--temp", "--top-p", "--seed",
                                "--top", "--context", "--batch", "--device", "-o", "--draft", "--spec-k", "--spec-depth",
                                "--spec-nodes", "--draft-vocab"};
        int known = 0;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++) { known |= strcmp(arg, valued[k]) == 0; }
        if (!known) { usage_error(usage, "unknown flag '%s'", arg); }
        if (i + 1 >= argc) { usage_error(usage, "flag %s needs a value", arg); }
        const char* value = argv[++i];
        if (strcmp(arg, "-m") == 0 || strcmp(arg, "--model") == 0) { o.model_path = value; }
        else if (strcmp(arg, "-p") == 0 || strcmp(arg, "--prompt") == 0) { o.prompt = value; }
        else if (strcmp(arg, "-n") == 0 || strcmp(arg, "--n-predict") == 0) { o.n_predict = (int)parse_long(usage, arg, value, 0, 1 << 20); }
        else if (strcmp(arg, "--temp") == 0) { o.temperature = parse_float(usage, arg, value, 0.0f, 100.0f); }
        else if (strcmp(arg, "--top-p") == 0) { o.top_p = parse_float(usage, arg, value, 1e-6f, 1.0f); }
        else if (strcmp(arg, "--seed") == 0) { o.seed = (uint64_t)parse_long(usage, arg, value, 0, 0x7fffffffL); }
        else if (strcmp(arg, "--top") == 0) { o.top_k = (int)parse_long(usage, arg, value, 1, 1 << 24); }
        else if (strcmp(arg, "--context") == 0) { o.context = (int)parse_long(usage, arg, value, 1, 1 << 20); }
        else if (strcmp(arg, "--batch") == 0) { o.max_tokens = (int)parse_long(usage, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "-o") == 0) { o.out_path = value; }
        else if (strcmp(arg, "--draft") == 0) { o.draft = value; }
        else if (strcmp(arg, "--spec-k") == 0) { o.spec_k = (int)parse_long(usage, arg, value, 1, MAX_SPEC_K); }
        else if (strcmp(arg, "--spec-depth") == 0) { o.spec_depth = (int)parse_long(usage, arg, value, 1, TREE_MAX_DEPTH); }
        else if (strcmp(arg, "--spec-nodes") == 0) { o.spec_nodes = (int)parse_long(usage, arg, value, 2, TREE_MAX_NODES); }
        else if (strcmp(arg, "--draft-vocab") == 0) { o.draft_vocab = (int)parse_long(usage, arg, value, 1, 1 << 24); }
        else if (strcmp(arg, "--device") == 0) {
            if (strcmp(value, "cpu") == 0) { o.use_cuda = 0; }
            else if (strcmp(value, "cuda") == 0) { o.use_cuda = 1; }
            else { usage_error(usage, "--device expects 'cpu' or 'cuda', got '%s'", value); }
        }
        else { usage_error(usage, "unknown flag '%s'", arg); }
    }
    if (o.model_path == NULL) { usage_error(usage, "%s", "missing -m MODEL"); }
    if (o.spec_nodes == 0) { o.spec_nodes = 1 + o.spec_k * o.spec_depth < TREE_MAX_NODES ? 1 + o.spec_k * o.spec_depth : TREE_MAX_NODES; }
    return o;
}

static void die(const Error* err) {
    fprintf(stderr, "error: %s\n", err->message);
    exit(EXIT_FAILURE);
}

static void load_or_die(Target* target, const char* path, int context, int max_tokens) {
    Error err;
    if (target_load(target, path, context, max_tokens, &err) != 0) { die(&err); }
    if (!target->has_tokenizer) {
        fprintf(stderr, "error: %s has no tokenizer (key 'tokenizer.ggml.tokens' is missing); expected a GGUF "
                "with an embedded byte-level BPE tokenizer\n", path);
        exit(EXIT_FAILURE);
    }
}

// Encodes the prompt (optionally in the chat template) into a malloc'd id array; errors if it is empty
// or does not leave room for at least one generated token.
static int* encode_prompt_or_die(Target* target, const char* prompt, int chat, int* n_out) {
    char* text = chat ? chat_template_apply(prompt) : strdup(prompt);
    int capacity = target->cache_capacity;
    int* ids = mallocCheck((size_t)(capacity + 1) * sizeof(int));
    Error err;
    int n = tokenizer_encode(&target->tokenizer, text, strlen(text), chat, ids, capacity + 1, &err);
    free(text);
    if (n < 0 || n >= capacity) {
        fprintf(stderr, "error: the prompt is %s%d tokens, but the context holds %d tokens (at least one must be "
                "left for generation); shorten the prompt or raise --context\n", n < 0 ? "more than " : "",
                n < 0 ? capacity : n, capacity);
        exit(EXIT_FAILURE);
    }
    if (n == 0) {
        fprintf(stderr, "error: the prompt is empty after tokenization; expected at least one token\n");
        exit(EXIT_FAILURE);
    }
    *n_out = n;
    return ids;
}

static void setup_engine(Engine* engine, Target* target, int use_cuda) {
    engine->target = target;
    engine->cuda = NULL;
    if (!use_cuda) { return; }
#ifdef USE_CUDA
    if (cuda_device_count() == 0) {
        fprintf(stderr, "error: --device cuda: no CUDA device is visible; run without --device cuda for the CPU path\n");
        exit(EXIT_FAILURE);
    }
    engine->cuda = target_cuda_create(target);
    fprintf(stderr, "device: %s\n", cuda_device_name());
#else
    fprintf(stderr, "error: --device cuda: this binary was built without CUDA (nvcc was not found, or NO_CUDA=1); "
            "rebuild with the CUDA toolkit installed\n");
    exit(EXIT_FAILURE);
#endif
}

static void free_engine(Engine* engine) {
#ifdef USE_CUDA
    if (engine->cuda) { target_cuda_free(engine->cuda); }
#endif
    engine->cuda = NULL;
}

// What generate and logits share: the matmul path, the model, the encoded prompt, the engine.
static int* start_session(const Options* o, Target* target, Engine* engine, int* n_prompt) {
    use_blas = !o->no_blas;
    load_or_die(target, o->model_path, o->context, o->max_tokens);
    int* prompt = encode_prompt_or_die(target, o->prompt, o->chat, n_prompt);
    setup_engine(engine, target, o->use_cuda);
    return prompt;
}

static void print_token_text(void* context, int token) {
    const Tokenizer* tokenizer = context;
    int length = 0;
    const char* bytes = tokenizer_token_bytes(tokenizer, token, &length);
    if (tokenizer->token_types[token] == TOKEN_CONTROL) { return; } // never print <|im_end|> and kin
    fwrite(bytes, 1, (size_t)length, stdout);
    fflush(stdout);
}

static void print_generated_ids(const int* ids, int n, int print_ids) {
    if (print_ids) {
        for (int i = 0; i < n; i++) { printf(i ? " %d" : "%d", ids[i]); }
    }
    printf("\n");
    fflush(stdout);
}

static int default_draft_vocab(const Target* target, int requested) {
    int V = target->config.vocab_size;
    if (requested > V) {
        fprintf(stderr, "error: --draft-vocab %d is larger than the target vocabulary %d\n", requested, V);
        exit(EXIT_FAILURE);
    }
    return requested > 0 ? requested : (V < 8192 ? V : 8192);
}

// --draft: a checkpoint, a random draft, the target itself, or prompt lookup
static DraftKind setup_draft_source(DraftSource* source, Draft* draft, Engine* engine, const Options* o, TreeShape shape) {
    Target* target = engine->target;
    Error err;
    if (tree_shape_check(shape, &err) != 0) { die(&err); }
    DraftKind kind;
    if (strcmp(o->draft, "self") == 0) { kind = DRAFT_SELF; }
    else if (strcmp(o->draft, "lookup") == 0) { kind = DRAFT_LOOKUP; }
    else {
        kind = DRAFT_EAGLE;
        if (strcmp(o->draft, "random") == 0) {
            draft_init_random(draft, target, default_draft_vocab(target, o->draft_vocab), NULL, o->seed);
        } else if (draft_load(draft, o->draft, target, &err) != 0) {
            die(&err);
        }
    }
    draft_source_init(source, kind, shape, kind == DRAFT_EAGLE ? draft : NULL, engine);
    return kind;
}

static int command_generate(int argc, char** argv) {
    const char* positional[1];
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_GENERATE, positional, &n_positional);
    if (n_positional > 0) { usage_error(USAGE_GENERATE, "unexpected argument '%s' (the prompt goes after -p)", positional[0]); }
    if (o.prompt == NULL) { usage_error(USAGE_GENERATE, "%s", "missing -p PROMPT"); }
    Target target;
    Engine engine;
    int n_prompt;
    int* prompt = start_session(&o, &target, &engine, &n_prompt);
    SamplerSettings settings = {o.temperature, o.top_p};
    int* out = mallocCheck((size_t)(o.n_predict + 1) * sizeof(int));
    TokenCallback stream = o.print_ids ? NULL : print_token_text;
    if (o.draft != NULL) {
        Draft draft;
        DraftSource source;
        TreeShape shape = {o.spec_k, o.spec_depth, o.spec_nodes};
        DraftKind kind = setup_draft_source(&source, &draft, &engine, &o, shape);
        SpecStats stats;
        int n = generate_speculative(&engine, &source, prompt, n_prompt, o.n_predict, settings, o.seed, out, &stats,
                                     stream, &target.tokenizer, NULL);
        print_generated_ids(out, n, o.print_ids);
        fprintf(stderr, "draft: %s, tree K=%d S=%d N=%d\n", o.draft, source.shape.k, source.shape.depth, source.shape.nodes);
        print_spec_stats(&stats, stderr);
        draft_source_free(&source);
        if (kind == DRAFT_EAGLE) { draft_free(&draft); }
    } else {
        GenerateStats stats;
        int n = generate_plain(&engine, prompt, n_prompt, o.n_predict, settings, o.seed, out, &stats, stream,
                               &target.tokenizer);
        print_generated_ids(out, n, o.print_ids);
        int decode_steps = stats.n_generated > 0 ? stats.n_generated - 1 : 0; // the first token comes from prefill
        fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tokens/s)\n", stats.n_prompt, stats.prefill_seconds,
                stats.prefill_seconds > 0 ? stats.n_prompt / stats.prefill_seconds : 0.0);
        fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tokens/s)%s\n", decode_steps, stats.decode_seconds,
                stats.decode_seconds > 0 ? decode_steps / stats.decode_seconds : 0.0,
                stats.stopped_at_eos ? ", stopped at end-of-sequence" : "");
    }
    free(out);
    free(prompt);
    free_engine(&engine);
    target_free(&target);
    return 0;
}

static int command_tokenize(int argc, char** argv) {
    const char* positional[1] = {NULL};
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_TOKENIZE, positional, &n_positional);
    if (n_positional != 1) { usage_error(USAGE_TOKENIZE, "%s", "expected exactly one TEXT argument"); }
    // the tokenizer alone: no need to dequantise weights
    GGUFFile file;
    Tokenizer tokenizer;
    Error err;
    if (gguf_open(&file, o.model_path, &err) != 0) { die(&err); }
    if (tokenizer_load_gguf(&tokenizer, &file, &err) != 0) { die(&err); }
    const char* text = positional[0];
    size_t length = strlen(text);
    int max_ids = (int)length + 16;
    int* ids = mallocCheck((size_t)max_ids * sizeof(int));
    int n = tokenizer_encode(&tokenizer, text, length, o.parse_special, ids, max_ids, &err);
    if (n < 0) { die(&err); }
    for (int i = 0; i < n; i++) { printf(i ? " %d" : "%d", ids[i]); }
    printf("\n");
    free(ids);
    tokenizer_free(&tokenizer);
    gguf_close(&file);
    return 0;
}

static int command_logits(int argc, char** argv) {
    const char* positional[1];
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_LOGITS, positional, &n_positional);
    if (n_positional > 0) { usage_error(USAGE_LOGITS, "unexpected argument '%s' (the prompt goes after -p)", positional[0]); }
    if (o.prompt == NULL) { usage_error(USAGE_LOGITS, "%s", "missing -p PROMPT"); }
    Target target;
    Engine engine;
    int n_prompt;
    int* prompt = start_session(&o, &target, &engine, &n_prompt);
    engine_prefill(&engine, prompt, n_prompt, 0, NULL, NULL);
    int V = target.config.vocab_size;
    int K = o.top_k < V ? o.top_k : V;
    ProbIndex* order = mallocCheck((size_t)V * sizeof(ProbIndex));
    for (int i = 0; i < V; i++) { order[i].prob = target.act.logits[i]; order[i].index = i; }
    qsort(order, V, sizeof(ProbIndex), compare_prob_descending);
    for (int i = 0; i < K; i++) { printf("%d %.6f\n", order[i].index, order[i].prob); }
    free(order);
    free(prompt);
    free_engine(&engine);
    target_free(&target);
    return 0;
}

static int command_info(int argc, char** argv) {
    const char* positional[1];
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_INFO, positional, &n_positional);
    if (n_positional > 0) { usage_error(USAGE_INFO, "unexpected argument '%s'", positional[0]); }
    Target target;
    load_or_die(&target, o.model_path, 16, 1);
    TargetConfig* c = &target.config;
    GGUFFile* file = &target.file;
    printf("file: %s (GGUF v%u, %llu metadata keys, %llu tensors, alignment %llu)\n", o.model_path, file->version,
           (unsigned long long)file->n_values, (unsigned long long)file->n_tensors, (unsigned long long)file->alignment);
    printf("architecture: llama\n");
    printf("dim %d, layers %d, heads %d, kv heads %d, head size %d, ffn %d, vocab %d, context %d\n", c->dim,
           c->n_layers, c->n_heads, c->n_kv_heads, c->head_size, c->ffn_dim, c->vocab_size, c->context_length);
    printf("rope theta %g, rms eps %g, output %s, tap layers %d %d %d\n", c->rope_theta, c->norm_eps,
           c->tied_output ? "tied to the embedding" : "separate", c->tap_layers[0], c->tap_layers[1], c->tap_layers[2]);
    printf("tokenizer: %d tokens, bos %d, eos %d\n", target.tokenizer.vocab_size, target.tokenizer.bos_id,
           target.tokenizer.eos_id);
    printf("parameters: %zu (fp32 in memory: %.1f MiB)\n", target.n_weight_floats,
           target.n_weight_floats * 4.0 / (1 << 20));
    printf("%-32s %-6s %-20s %12s %12s\n", "tensor", "type", "shape", "offset", "bytes");
    for (uint64_t i = 0; i < file->n_tensors; i++) {
        const GGUFTensor* t = &file->tensors[i];
        char shape[64];
        int used = snprintf(shape, sizeof(shape), "[%lld", (long long)t->shape[0]);
        for (int d = 1; d < t->n_dims; d++) { used += snprintf(shape + used, sizeof(shape) - used, ", %lld", (long long)t->shape[d]); }
        snprintf(shape + used, sizeof(shape) - used, "]");
        printf("%-32s %-6s %-20s %12llu %12zu\n", t->name, tensor_type_name(t->type), shape,
               (unsigned long long)t->offset, t->n_bytes);
    }
    target_free(&target);
    return 0;
}

static int parse_tensor_type(const char* usage, const char* text) {
    const char* names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"};
    const int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
    for (int i = 0; i < 6; i++) { if (strcmp(text, names[i]) == 0) { return types[i]; } }
    usage_error(usage, "--type expects one of f32, f16, bf16, q8_0, q4_0, q4_1; got '%s'", text);
    return -1;
}

static int command_tiny_model(int argc, char** argv) {
    TinyModelSpec spec = {64, 4, 4, 2, 96, 320, 256, 1, TYPE_F32, 10000.0f, 1};
    const char* out_path = NULL;
    const char* u = USAGE_TINY_MODEL;
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { printf("%s", u); return 0; }
        if (strcmp(arg, "--untied") == 0) { spec.tied_output = 0; continue; }
        if (arg[0] != '-') { usage_error(u, "unexpected argument '%s'", arg); }
        if (i + 1 >= argc) { usage_error(u, "flag %s needs a value (or is unknown)", arg); }
        const char* value = argv[++i];
        if (strcmp(arg, "-o") == 0) { out_path = value; }
        else if (strcmp(arg, "--dim") == 0) { spec.dim = (int)parse_long(u, arg, value, 2, 8192); }
        else if (strcmp(arg, "--layers") == 0) { spec.n_layers = (int)parse_long(u, arg, value, 1, 256); }
        else if (strcmp(arg, "--heads") == 0) { spec.n_heads = (int)parse_long(u, arg, value, 1, 256); }
        else if (strcmp(arg, "--kv-heads") == 0) { spec.n_kv_heads = (int)parse_long(u, arg, value, 1, 256); }
        else if (strcmp(arg, "--ffn") == 0) { spec.ffn_dim = (int)parse_long(u, arg, value, 1, 65536); }
        else if (strcmp(arg, "--vocab") == 0) { spec.vocab_size = (int)parse_long(u, arg, value, 259, 1 << 20); }
        else if (strcmp(arg, "--context") == 0) { spec.context_length = (int)parse_long(u, arg, value, 2, 1 << 20); }
        else if (strcmp(arg, "--type") == 0) { spec.weight_type = parse_tensor_type(u, value); }
        else if (strcmp(arg, "--seed") == 0) { spec.seed = (uint64_t)parse_long(u, arg, value, 0, 0x7fffffffL); }
        else { usage_error(u, "unknown flag '%s'", arg); }
    }
    if (out_path == NULL) { usage_error(u, "%s", "missing -o FILE"); }
    int head_size = spec.dim / spec.n_heads;
    if (spec.dim % spec.n_heads != 0 || head_size % 2 != 0 || spec.n_heads % spec.n_kv_heads != 0) {
        fprintf(stderr, "error: --dim %d, --heads %d, --kv-heads %d: expected dim = heads * an even head size, and "
                "heads a multiple of kv-heads\n", spec.dim, spec.n_heads, spec.n_kv_heads);
        return 1;
    }
    int64_t block = tensor_type_block_size(spec.weight_type);
    if (spec.dim % block != 0 || spec.ffn_dim % block != 0) {
        fprintf(stderr, "error: --type %s stores rows in blocks of %lld, expected --dim and --ffn to be multiples of it "
                "(got %d and %d)\n", tensor_type_name(spec.weight_type), (long long)block, spec.dim, spec.ffn_dim);
        return 1;
    }
    Error err;
    if (tiny_model_write(out_path, &spec, &err) != 0) { die(&err); }
    fprintf(stderr, "wrote %s\n", out_path);
    return 0;
}

static int command_convert(int argc, char** argv) {
    const char *in_path = NULL, *out_path = NULL;
    int type = -1;
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { printf("%s", USAGE_CONVERT); return 0; }
        if (strcmp(arg, "-m") != 0 && strcmp(arg, "-o") != 0 && strcmp(arg, "--type") != 0) {
            usage_error(USAGE_CONVERT, "unknown flag '%s'", arg);
        }
        if (i + 1 >= argc) { usage_error(USAGE_CONVERT, "flag %s needs a value", arg); }
        const char* value = argv[++i];
        if (strcmp(arg, "-m") == 0) { in_path = value; }
        else if (strcmp(arg, "-o") == 0) { out_path = value; }
        else { type = parse_tensor_type(USAGE_CONVERT, value); }
    }
    if (in_path == NULL || out_path == NULL || type < 0) { usage_error(USAGE_CONVERT, "%s", "expected -m MODEL, -o OUT and --type"); }
    GGUFFile file;
    Error err;
    if (gguf_open(&file, in_path, &err) != 0) { die(&err); }
    GGUFWriter* writer = gguf_writer_new();
    if (gguf_writer_copy_values(writer, &file, NULL, &err) != 0) { die(&err); }
    for (uint64_t i = 0; i < file.n_tensors; i++) {
        const GGUFTensor* t = &file.tensors[i];
        int is_matrix = t->n_dims >= 2;
        if (is_matrix && t->shape[0] % tensor_type_block_size(type) != 0) {
            fprintf(stderr, "error: %s: tensor '%s' has rows of %lld values, expected a multiple of %s's block of %lld\n",
                    in_path, t->name, (long long)t->shape[0], tensor_type_name(type), (long long)tensor_type_block_size(type));
            return 1;
        }
        float* data = mallocCheck((size_t)t->n_elements * sizeof(float));
        gguf_tensor_to_f32(t, data);
        gguf_writer_add_tensor(writer, t->name, is_matrix ? type : TYPE_F32, t->n_dims, t->shape, data);
        free(data);
    }
    if (gguf_writer_save(writer, out_path, &err) != 0) { die(&err); }
    gguf_writer_free(writer);
    gguf_close(&file);
    fprintf(stderr, "wrote %s (matrices as %s)\n", out_path, tensor_type_name(type));
    return 0;
}

static int command_draft_init(int argc, char** argv) {
    const char* positional[1];
    int n_positional;
    Options o = parse_options(argc, argv, USAGE_DRAFT_INIT, positional, &n_positional);
    if (n_positional > 0) { usage_error(USAGE_DRAFT_INIT, "unexpected argument '%s'", positional[0]); }
    if (o.out_path == NULL) { usage_error(USAGE_DRAFT_INIT, "%s", "missing -o DRAFT.gguf"); }
    Target target;
    load_or_die(&target, o.model_path, 16, 1);
    Draft draft;
    draft_init_random(&draft, &target, default_draft_vocab(&target, o.draft_vocab), NULL, o.seed);
    Error err;
    if (draft_save(&draft, o.out_path, &err) != 0) { die(&err); }
    fprintf(stderr, "wrote %s: EAGLE-3 draft, width %d, %d heads (%d kv), ffn %d, draft vocabulary %d of %d, %zu parameters\n",
            o.out_path, draft.config.dim, draft.config.n_heads, draft.config.n_kv_heads, draft.config.ffn_dim,
            draft.config.vocab_size, draft.config.target_vocab_size, draft.n_weight_floats);
    draft_free(&draft);
    target_free(&target);
    return 0;
}

static LossKind parse_loss_kind(const char* usage, const char* text) {
    if (strcmp(text, "fkl") == 0) { return LOSS_FORWARD_KL; }
    if (strcmp(text, "rkl") == 0) { return LOSS_REVERSE_KL; }
    if (strcmp(text, "ntp") == 0) { return LOSS_NEXT_TOKEN; }
    usage_error(usage, "--loss expects fkl, rkl or ntp; got '%s'", text);
    return LOSS_FORWARD_KL;
}

// The trainer's flags, shared by replay and train. Returns 1 if arg was one of them (value consumed).
static int parse_trainer_flag(const char* usage, const char* arg, const char* value, TrainerSettings* t) {
    if (strcmp(arg, "--lr") == 0) { t->learning_rate = parse_float(usage, arg, value, 0.0f, 1.0f); }
    else if (strcmp(arg, "--warmup") == 0) { t->warmup_steps = (int)parse_long(usage, arg, value, 0, 1 << 24); }
    else if (strcmp(arg, "--clip") == 0) { t->max_grad_norm = parse_float(usage, arg, value, 0.0f, 1e6f); }
    else if (strcmp(arg, "--ttt-length") == 0) { t->ttt_length = (int)parse_long(usage, arg, value, 1, TTT_MAX_STEPS); }
    else if (strcmp(arg, "--loss") == 0) { t->loss = parse_loss_kind(usage, value); }
    else if (strcmp(arg, "--discard-weight") == 0) { t->discard_weight = parse_float(usage, arg, value, 0.0f, 100.0f); }
    else if (strcmp(arg, "--discard-top-k") == 0) { t->discard_top_k = (int)parse_long(usage, arg, value, 0, TREE_MAX_NODES); }
    else { return 0; }
    return 1;
}

static int command_replay(int argc, char** argv) {
    ReplayOptions o = replay_default_options();
    const char* u = USAGE_REPLAY;
    int spec_nodes = 0;
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { printf("%s", u); return 0; }
        if (strcmp(arg, "--online") == 0) { o.mode = "online"; continue; }
        if (strcmp(arg, "--no-spec") == 0) { o.mode = "none"; continue; }
        if (arg[0] != '-') { usage_error(u, "unexpected argument '%s'", arg); }
        if (i + 1 >= argc) { usage_error(u, "flag %s needs a value (or is unknown)", arg); }
        const char* value = argv[++i];
        if (parse_trainer_flag(u, arg, value, &o.train)) { continue; }
        if (strcmp(arg, "-m") == 0 || strcmp(arg, "--model") == 0) { o.model_path = value; }
        else if (strcmp(arg, "--traffic") == 0) { o.traffic_path = value; }
        else if (strcmp(arg, "--static") == 0) { o.mode = "static"; o.draft = value; }
        else if (strcmp(arg, "--draft-init") == 0) { o.draft = value; }
        else if (strcmp(arg, "--order") == 0) {
            if (strcmp(value, "mixed") != 0 && strcmp(value, "ordered") != 0) { usage_error(u, "--order expects mixed or ordered, got '%s'", value); }
            o.order = value;
        }
        else if (strcmp(arg, "--domain") == 0) { o.domain = value; }
        else if (strcmp(arg, "--requests") == 0) { o.requests = (int)parse_long(u, arg, value, 1, 1 << 24); }
        else if (strcmp(arg, "--from") == 0) { o.from = (int)parse_long(u, arg, value, 0, 1 << 24); }
        else if (strcmp(arg, "--max-new") == 0) { o.max_new = (int)parse_long(u, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "--out") == 0) { o.out_dir = value; }
        else if (strcmp(arg, "--label") == 0) { o.label = value; }
        else if (strcmp(arg, "--save-draft") == 0) { o.save_draft = value; }
        else if (strcmp(arg, "--sync-every") == 0) { o.sync_every = (int)parse_long(u, arg, value, 1, 1 << 24); }
        else if (strcmp(arg, "--sync-schedule") == 0) { o.lockstep_every = (int)parse_long(u, arg, value, 1, 1 << 24); }
        else if (strcmp(arg, "--batch-requests") == 0) { o.batch_requests = (int)parse_long(u, arg, value, 1, 64); }
        else if (strcmp(arg, "--buffer") == 0) { o.buffer_capacity = (int)parse_long(u, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "--pool") == 0) { o.pool_capacity = (int)parse_long(u, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "--steps-per-request") == 0) { o.steps_per_request = (int)parse_long(u, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "--spec-k") == 0) { o.shape.k = (int)parse_long(u, arg, value, 1, MAX_SPEC_K); }
        else if (strcmp(arg, "--spec-depth") == 0) { o.shape.depth = (int)parse_long(u, arg, value, 1, TREE_MAX_DEPTH); }
        else if (strcmp(arg, "--spec-nodes") == 0) { spec_nodes = (int)parse_long(u, arg, value, 2, TREE_MAX_NODES); }
        else if (strcmp(arg, "--temp") == 0) { o.sampling.temperature = parse_float(u, arg, value, 0.0f, 100.0f); }
        else if (strcmp(arg, "--top-p") == 0) { o.sampling.top_p = parse_float(u, arg, value, 1e-6f, 1.0f); }
        else if (strcmp(arg, "--seed") == 0) { o.seed = (uint64_t)parse_long(u, arg, value, 0, 0x7fffffffL); }
        else if (strcmp(arg, "--draft-vocab") == 0) { o.draft_vocab = (int)parse_long(u, arg, value, 1, 1 << 24); }
        else if (strcmp(arg, "--context") == 0) { o.context = (int)parse_long(u, arg, value, 64, 1 << 20); }
        else if (strcmp(arg, "--device") == 0) {
            if (strcmp(value, "cpu") == 0) { o.use_cuda = 0; }
            else if (strcmp(value, "cuda") == 0) { o.use_cuda = 1; }
            else { usage_error(u, "--device expects 'cpu' or 'cuda', got '%s'", value); }
        }
        else { usage_error(u, "unknown flag '%s'", arg); }
    }
    if (o.model_path == NULL) { usage_error(u, "%s", "missing -m MODEL"); }
    if (o.traffic_path == NULL) { usage_error(u, "%s", "missing --traffic FILE"); }
    o.shape.nodes = spec_nodes ? spec_nodes : (1 + o.shape.k * o.shape.depth < TREE_MAX_NODES ? 1 + o.shape.k * o.shape.depth : TREE_MAX_NODES);
    Error err;
    if (tree_shape_check(o.shape, &err) != 0) { die(&err); }
    if (o.use_cuda) {
#ifdef USE_CUDA
        if (cuda_device_count() == 0) { fprintf(stderr, "error: --device cuda: no CUDA device is visible\n"); return 1; }
#else
        fprintf(stderr, "error: --device cuda: this binary was built without CUDA\n");
        return 1;
#endif
    }
    return replay_run(&o);
}

static int command_train(int argc, char** argv) {
    TrainOptions o;
    memset(&o, 0, sizeof(o));
    o.max_new = 32; o.epochs = 1; o.context = 2048; o.batch_requests = 1; o.seed = 1;
    o.train = trainer_default_settings();
    const char* u = USAGE_TRAIN;
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) { printf("%s", u); return 0; }
        if (arg[0] != '-') { usage_error(u, "unexpected argument '%s'", arg); }
        if (i + 1 >= argc) { usage_error(u, "flag %s needs a value (or is unknown)", arg); }
        const char* value = argv[++i];
        if (parse_trainer_flag(u, arg, value, &o.train)) { continue; }
        if (strcmp(arg, "-m") == 0 || strcmp(arg, "--model") == 0) { o.model_path = value; }
        else if (strcmp(arg, "--traffic") == 0) { o.traffic_path = value; }
        else if (strcmp(arg, "-o") == 0) { o.out_path = value; }
        else if (strcmp(arg, "--domain") == 0) { o.domain = value; }
        else if (strcmp(arg, "--draft-init") == 0) { o.draft = value; }
        else if (strcmp(arg, "--requests") == 0) { o.requests = (int)parse_long(u, arg, value, 1, 1 << 24); }
        else if (strcmp(arg, "--max-new") == 0) { o.max_new = (int)parse_long(u, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "--epochs") == 0) { o.epochs = (int)parse_long(u, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "--batch-requests") == 0) { o.batch_requests = (int)parse_long(u, arg, value, 1, 1 << 16); }
        else if (strcmp(arg, "--seed") == 0) { o.seed = (uint64_t)parse_long(u, arg, value, 0, 0x7fffffffL); }
        else if (strcmp(arg, "--draft-vocab") == 0) { o.draft_vocab = (int)parse_long(u, arg, value, 1, 1 << 24); }
        else { usage_error(u, "unknown flag '%s'", arg); }
    }
    if (o.model_path == NULL || o.traffic_path == NULL || o.out_path == NULL) {
        usage_error(u, "%s", "expected -m MODEL, --traffic FILE and -o DRAFT.gguf");
    }
    return train_offline(&o);
}

int main(int argc, char** argv) {
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc < 2 ? stderr : stdout, "%s", USAGE_MAIN);
        return argc < 2 ? EXIT_FAILURE : EXIT_SUCCESS;
    }
    const char* command = argv[1];
    if (strcmp(command, "generate") == 0) { return command_generate(argc - 2, argv + 2); }
    if (strcmp(command, "tokenize") == 0) { return command_tokenize(argc - 2, argv + 2); }
    if (strcmp(command, "logits") == 0) { return command_logits(argc - 2, argv + 2); }
    if (strcmp(command, "info") == 0) { return command_info(argc - 2, argv + 2); }
    if (strcmp(command, "tiny-model") == 0) { return command_tiny_model(argc - 2, argv + 2); }
    if (strcmp(command, "convert") == 0) { return command_convert(argc - 2, argv + 2); }
    if (strcmp(command, "draft-init") == 0) { return command_draft_init(argc - 2, argv + 2); }
    if (strcmp(command, "replay") == 0) { return command_replay(argc - 2, argv + 2); }
    if (strcmp(command, "train") == 0) { return command_train(argc - 2, argv + 2); }
    if (strcmp(command, "plot") == 0) { return command_plot_main(argc - 2, argv + 2); }
    fprintf(stderr, "error: unknown command '%s'\n%s", command, USAGE_MAIN);
    return EXIT_FAILURE;
}

#endif // TESTING
