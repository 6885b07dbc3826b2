/*
aurora.c: the command-line interface, and the one translation unit: it #includes the rest of the
implementation in dependency order; tests #define TESTING and #include this file to reach every static
function. The layout, one folder per layer (aurora.h has the same map with every public function):

  base/         util.c      errors, checked allocation, files (regular inputs, atomic outputs), signals
                json.c      a strict JSON parser (traffic, interop formats)
  cpu_ref.c     the reference ops (plain fp32 loops, forward and backward) and the reference backend table
  backends/     cpu_fast.c  the fast CPU ops: weights read in their GGUF type, each row streamed once per batch
                backends.c  the backend registry and the OpenBLAS table (kernels.cu holds the CUDA table)
  model/        gguf.c      GGUF reader and writer, tensor types
                tokenizer.c byte-level BPE tokenizer, the prompt path (plain text, ChatML template)
                target.c    the target model: load from GGUF, forward over any mask, prefill, compaction
                draft.c     the EAGLE-3 draft model: init, checkpoints, forward
  speculation/  sampling.c  the seeded random generator, greedy / temperature / top-k / top-p / min-p sampling
                tree.c      draft trees and every buffer derived from them, the verify mask
                acceptance.c lossless greedy and sampling acceptance
                drafting.c  tree drafting and the draft sources (EAGLE-3, self, lookup)
                suffix.c    the suffix draft's index (a model-free online learner)
                adaptive.c  adaptive speculation: the tree shape from measured costs and acceptance
                generate.c  plain and speculative generation loops
  flywheel/     recorder.c  records of finished requests, the ring buffer, the weight exchange
                trainer.c   the online trainer: TTT unroll, accepted and discard losses, backward, AdamW
                traffic.c   JSONL traffic (prompt / text / ShareGPT conversations), mixed and ordered streams
                plot.c      SVG acceptance charts
                flywheel.c  serving and training together: trainer thread or lockstep, hot swap, replay, train
  interop/      safetensors.c the safetensors format, read and written; eagle3_formats.c: drafts in
                llama.cpp's eagle3 GGUF and SpecForge's safetensors + config.json, both ways
  this file     the command-line interface: one flag table, one parser, the commands

Contract: every command exits 0 on success and 1 with a one-line "error: ..." message on bad input
(unknown flag, unreadable or malformed model, prompt longer than the context); output already streamed
stays streamed; an interrupted replay or train saves its results and exits with 128 + the signal.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <time.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <signal.h>
#include <sys/stat.h>
#ifdef USE_BLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif
#include "aurora.h"
#include "base/util.c"
#include "base/json.c"
#include "cpu_ref.c"
#include "backends/cpu_fast.c"
#include "backends/backends.c"
#include "model/gguf.c"
#include "model/tokenizer.c"
#include "speculation/sampling.c"
#include "model/target.c"
#include "model/draft.c"
#include "speculation/tree.c"
#include "speculation/acceptance.c"
#include "speculation/drafting.c"
#include "speculation/suffix.c"
#include "speculation/adaptive.c"
#include "flywheel/recorder.c"
#include "flywheel/trainer.c"
#include "speculation/generate.c"
#include "flywheel/traffic.c"
#include "flywheel/plot.c"
#include "flywheel/flywheel.c"
#include "interop/safetensors.c"
#include "interop/eagle3_formats.c"

// ----------------------------------------------------------------------------
// command-line interface: one flag table (every flag once: its type, range and help), one parser, and a
// table of commands naming the flags each accepts. --help and every error message come from the tables.

typedef enum { FLAG_SWITCH, FLAG_INT, FLAG_FLOAT, FLAG_TEXT, FLAG_CHOICE } FlagKind;

typedef struct {
    const char* key;            // how commands name the flag (unique)
    const char* short_name;     // "-m", or NULL
    const char* name;           // "--model"
    FlagKind kind;              // SWITCH sets an int to 1; INT/FLOAT check [min, max]; CHOICE checks `choices`
    const char* value_name;     // shown in --help ("FILE", "N")
    double min, max;
    const char* choices;        // FLAG_CHOICE: "cpu|cuda"
    size_t offset;              // where the value goes in Options (int, float or const char*)
    const char* help;
} Flag;

#define OPTION(field) offsetof(Options, field)
#define INT_LIMIT 2147483647.0
static const Flag FLAGS[] = {
    // files
    {"model", "-m", "--model", FLAG_TEXT, "FILE", 0, 0, NULL, OPTION(model_path), "GGUF target model (Llama architecture)"},
    {"out", "-o", "--output", FLAG_TEXT, "FILE", 0, 0, NULL, OPTION(out_path), "the file to write (replaced atomically)"},
    {"traffic", NULL, "--traffic", FLAG_TEXT, "FILE", 0, 0, NULL, OPTION(traffic_path),
     "requests, JSONL (prompt / text / ShareGPT conversations), at most 256 MiB"},
    {"out-dir", NULL, "--out", FLAG_TEXT, "DIR", 0, 0, NULL, OPTION(out_dir), "output directory (requests.csv, summary.txt, acceptance.svg)"},
    // generation
    {"prompt", "-p", "--prompt", FLAG_TEXT, "TEXT", 0, 0, NULL, OPTION(prompt), "prompt text (plain text: control-token spellings stay text; a vocabulary's user-defined tokens match, as in llama.cpp)"},
    {"file", "-f", "--file", FLAG_TEXT, "FILE", 0, 0, NULL, OPTION(prompt_file),
     "the prompt from FILE instead of -p (its whole text, one trailing newline dropped, as llama.cpp's -f)"},
    {"n-predict", "-n", "--n-predict", FLAG_INT, "N", 0, 1 << 20, NULL, OPTION(n_predict), "tokens to generate"},
    {"temp", NULL, "--temp", FLAG_FLOAT, "T", 0, 100, NULL, OPTION(sampling.temperature), "temperature; 0 = exact greedy"},
    {"top-p", NULL, "--top-p", FLAG_FLOAT, "P", 1e-6, 1, NULL, OPTION(sampling.top_p), "nucleus sampling threshold (1 = off)"},
    {"top-k", NULL, "--top-k", FLAG_INT, "K", 0, INT_LIMIT, NULL, OPTION(sampling.top_k),
     "sample from the K most probable tokens only (0 = off)"},
    {"min-p", NULL, "--min-p", FLAG_FLOAT, "P", 0, 1, NULL, OPTION(sampling.min_p),
     "sample from the tokens at least P times as probable as the most probable only (0 = off); the filters apply "
     "after the temperature, top-k then top-p then min-p"},
    {"seed", NULL, "--seed", FLAG_INT, "S", 0, INT_LIMIT, NULL, OPTION(seed), "random seed"},
    {"chat", NULL, "--chat", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(chat), "wrap the prompt in the model's ChatML template"},
    {"verbose-prompt", NULL, "--verbose-prompt", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(verbose_prompt),
     "print the prompt's token ids on stderr before generating"},
    {"print-ids", NULL, "--print-ids", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(print_ids), "print the generated token ids instead of text"},
    {"special", NULL, "--special", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(parse_special),
     "parse special-token text such as <|im_start|> as that token"},
    {"top", NULL, "--top", FLAG_INT, "K", 1, 1 << 24, NULL, OPTION(top_logits), "how many of the largest logits to print"},
    {"device", NULL, "--device", FLAG_CHOICE, "DEVICE", 0, 0, "cpu|cuda", OPTION(device), "where the model runs"},
    {"no-blas", NULL, "--no-blas", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(no_blas), "the reference ops (the same as --backend ref)"},
    {"backend", NULL, "--backend", FLAG_CHOICE, "TABLE", 0, 0, "cpu|fast|fast-exact|blas|ref|cuda", OPTION(backend_name),
     "the op table: fast (the default on a CPU: weights read in their GGUF type, int8 activations on AVX-512 VNNI "
     "and AVX2 CPUs), fast-exact (the same with fp32 activations), blas (fp32 weights, OpenBLAS matmuls), ref (the readable "
     "reference, fp32 weights), cuda (as --device cuda)"},
    {"context", NULL, "--context", FLAG_INT, "N", 1, 1 << 20, NULL, OPTION(context),
     "KV cache slots (absent: the model's context, at most 4096; replay and train 2048, and train --self-samples as "
     "many as hold --parallel samples, up to the model's context)"},
    {"batch", NULL, "--batch", FLAG_INT, "N", 1, 1 << 16, NULL, OPTION(batch), "most tokens per forward call (prefill chunk)"},
    {"parallel", NULL, "--parallel", FLAG_INT, "N", 1, 256, NULL, OPTION(parallel),
     "prompts whose target outputs are recorded at once, each in its own slots of the context (train's data, replay's "
     "held-back set; the same records for any N, bit for bit, on the fast and reference tables)"},
    // speculative decoding
    {"draft", NULL, "--draft", FLAG_TEXT, "SOURCE", 0, 0, NULL, OPTION(draft),
     "speculative decoding from DRAFT (an EAGLE-3 draft: our GGUF, llama.cpp's eagle3 GGUF or a SpecForge "
     "directory), random (a fresh random draft), self (the target drafts for itself: the ceiling), lookup (prompt "
     "lookup) or suffix (the suffix draft over the prompt and the output so far); the output is the same, "
     "statistics go to stderr"},
    {"spec-k", NULL, "--spec-k", FLAG_INT, "K", 1, MAX_SPEC_K, NULL, OPTION(shape.k),
     "children per expanded node (1: a chain); default 1 with --spec-fixed, else adaptive shapes use up to 4"},
    {"spec-depth", NULL, "--spec-depth", FLAG_INT, "D", 1, TREE_MAX_DEPTH, NULL, OPTION(shape.depth),
     "drafting steps = tree depth; default 5 with --spec-fixed, else adaptive shapes go up to 8"},
    {"spec-nodes", NULL, "--spec-nodes", FLAG_INT, "N", 2, TREE_MAX_NODES, NULL, OPTION(shape.nodes),
     "tree nodes verified per pass, root included (default 1 + K*D, at most 64 with --spec-fixed, 33 adaptive)"},
    {"spec-fixed", NULL, "--spec-fixed", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(spec_fixed),
     "every pass drafts the same shape (--spec-k/-depth/-nodes); default: adaptive speculation chooses each pass's "
     "shape, down to no drafting at all, from measured costs and acceptance (the shape flags are then its largest)"},
    {"hybrid", NULL, "--hybrid", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(hybrid),
     "with an EAGLE draft (--draft FILE or random): the suffix draft beside it, per pass whichever is expected to "
     "yield more"},
    {"source", NULL, "--source", FLAG_CHOICE, "SOURCE", 0, 0, "eagle|suffix|hybrid", OPTION(source_name),
     "what drafts: the EAGLE draft (online or --static), the model-free suffix draft (nothing trained), or both "
     "(hybrid: per pass the one expected to yield more)"},
    {"draft-vocab", NULL, "--draft-vocab", FLAG_INT, "N", 1, 1 << 24, NULL, OPTION(draft_vocab),
     "a fresh draft's vocabulary: the N lowest target ids (default min(V, 4096): byte-level BPE numbers tokens "
     "in merge order, so low ids are the frequent ones; online it follows the traffic)"},
    {"draft-type", NULL, "--draft-type", FLAG_CHOICE, "TYPE", 0, 0, "auto|f32|q8_0|q4_1", OPTION(draft_type_name),
     "the serving draft's matrices: a copy quantised from its fp32 weights at every hot swap (q8_0; q4_1, 0.6 of its "
     "bytes) or the fp32 weights themselves; auto: the backend's choice (q8_0 on the fast CPU table, f32 elsewhere)"},
    // replay and train
    {"online", NULL, "--online", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(online), "train the draft from the traffic while serving (the default)"},
    {"static", NULL, "--static", FLAG_TEXT, "DRAFT", 0, 0, NULL, OPTION(static_draft), "serve a frozen draft (a checkpoint, or random)"},
    {"no-spec", NULL, "--no-spec", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(no_spec), "plain decoding (the speed baseline)"},
    {"draft-init", NULL, "--draft-init", FLAG_TEXT, "START", 0, 0, NULL, OPTION(draft_init),
     "the trained draft's start: random, target (random with the target's LM head and final norm: a warm start), "
     "target-layer (that, and the decoder layer from the target's last layer) or a checkpoint FILE (default "
     REPLAY_DEFAULT_DRAFT_INIT ")"},
    {"order", NULL, "--order", FLAG_CHOICE, "ORDER", 0, 0, "mixed|ordered", OPTION(order), "shuffled with --seed, or grouped by domain"},
    {"domain", NULL, "--domain", FLAG_TEXT, "D", 0, 0, NULL, OPTION(domain), "only requests of domain D"},
    {"requests", NULL, "--requests", FLAG_INT, "N", 1, 1 << 24, NULL, OPTION(requests), "at most N requests (default all)"},
    {"from", NULL, "--from", FLAG_INT, "R", 0, 1 << 24, NULL, OPTION(from), "start at request R of the ordered stream"},
    {"max-new", NULL, "--max-new", FLAG_INT, "T", 1, 1 << 20, NULL, OPTION(max_new), "tokens generated per request"},
    {"epochs", NULL, "--epochs", FLAG_INT, "E", 1, 1 << 16, NULL, OPTION(epochs), "passes over the generated outputs"},
    {"self-samples", NULL, "--self-samples", FLAG_INT, "N", 1, 1 << 20, NULL, OPTION(self_samples),
     "train on N samples of the target's own text (from its start-of-text token, at --temp) instead of --traffic"},
    {"sample-length", NULL, "--sample-length", FLAG_INT, "L", SELF_SAMPLE_MIN_TOKENS, 1 << 20, NULL,
     OPTION(sample_length), "tokens per sample of --self-samples (each then continued greedily for --max-new)"},
    {"label", NULL, "--label", FLAG_TEXT, "TEXT", 0, 0, NULL, OPTION(label), "the run's name in the chart and summary"},
    {"save-draft", NULL, "--save-draft", FLAG_TEXT, "FILE", 0, 0, NULL, OPTION(save_draft),
     "write the trained draft at the end, also when interrupted (resume with --draft-init FILE)"},
    {"sync-every", NULL, "--sync-every", FLAG_INT, "N", 1, 1 << 24, NULL, OPTION(sync_every), "publish new weights every N optimiser steps"},
    {"sync-schedule", NULL, "--sync-schedule", FLAG_INT, "M", 1, 1 << 24, NULL, OPTION(lockstep_every),
     "lockstep: after every M requests, train on everything recorded, then publish (no thread; bitwise repeatable)"},
    {"batch-requests", NULL, "--batch-requests", FLAG_INT, "B", 1, FLYWHEEL_MAX_BATCH, NULL, OPTION(batch_requests), "records per optimiser step"},
    {"buffer", NULL, "--buffer", FLAG_INT, "N", 1, 1 << 16, NULL, OPTION(buffer_capacity), "record buffer size (the oldest is dropped when full)"},
    {"pool", NULL, "--pool", FLAG_INT, "N", 1, 1 << 16, NULL, OPTION(pool_capacity), "records kept for training; each step samples from the newest N"},
    {"pool-sampling", NULL, "--pool-sampling", FLAG_CHOICE, "HOW", 0, 0, "uniform|new-first", OPTION(pool_sampling),
     "a step's records: sampled from the pool, or first the ones no step has drawn yet"},
    {"steps-per-request", NULL, "--steps-per-request", FLAG_INT, "R", 1, 1 << 16, NULL, OPTION(steps_per_request),
     "lockstep: optimiser steps per request served (threaded: as fast as it goes)"},
    {"train-share", NULL, "--train-share", FLAG_FLOAT, "F", 0.01, 1, NULL, OPTION(train_share),
     "the share of one core the trainer thread may use: after each step it rests so that training takes at most this "
     "fraction of a core's time (the rest of that core idles; serving's threads keep the other cores)"},
    {"load", NULL, "--load", FLAG_FLOAT, "F", 0.01, 1, NULL, OPTION(load),
     "the offered load: after a request that took t seconds the server is idle for t (1 - F) / F (the replay waits; "
     "not in its tokens/s), and an online trainer trains only then, on every core (serving too keeps every core); 1: "
     "requests back to back, an online trainer beside serving on a core of its own"},
    {"lr", NULL, "--lr", FLAG_FLOAT, "X", 0, 1, NULL, OPTION(train.learning_rate), "learning rate after warm-up"},
    {"warmup", NULL, "--warmup", FLAG_INT, "N", 0, 1 << 24, NULL, OPTION(train.warmup_steps), "linear warm-up steps"},
    {"lr-schedule", NULL, "--lr-schedule", FLAG_CHOICE, "HOW", 0, 0, "constant|cosine", OPTION(lr_schedule),
     "after the warm-up: the learning rate stays, or follows a cosine down to 0 by the run's last step"},
    {"adam-beta2", NULL, "--adam-beta2", FLAG_FLOAT, "B", 0, 0.9999, NULL, OPTION(train.beta2),
     "AdamW's second-moment decay: each step's squared gradient enters the moment with weight 1 - B (a window of "
     "about 1 / (1 - B) steps)"},
    {"clip", NULL, "--clip", FLAG_FLOAT, "X", 0, 1e6, NULL, OPTION(train.max_grad_norm), "global gradient-norm clipping (0: off)"},
    {"ttt-length", NULL, "--ttt-length", FLAG_INT, "L", 1, TTT_MAX_STEPS, NULL, OPTION(train.ttt_length), "training-time-test unroll length"},
    {"loss", NULL, "--loss", FLAG_CHOICE, "KIND", 0, 0, "fkl|rkl|ntp", OPTION(loss_name),
     "accepted-path loss: forward KL, reverse KL or next-token cross-entropy"},
    {"prompt-weight", NULL, "--prompt-weight", FLAG_FLOAT, "W", 0, 100, NULL, OPTION(train.prompt_weight),
     "loss weight of a prompt position against a completion position: every recorded position has an exact teacher "
     "(0: completion only)"},
    {"feature-weight", NULL, "--feature-weight", FLAG_FLOAT, "W", 0, 100, NULL, OPTION(train.feature_weight),
     "weight of the feature loss: the mean squared difference between the draft's normed output and the target's "
     "final hidden state at each loss position, beside the distribution loss (0: off)"},
    {"train-precision", NULL, "--train-precision", FLAG_CHOICE, "P", 0, 0, "fp32|bf16|auto", OPTION(train_precision),
     "the trainer's matmuls: fp32, or bf16 products (operands rounded to bf16, sums and everything else fp32: "
     "PyTorch's bf16 autocast; twice the multiply-adds a cycle on a CPU with AVX-512 BF16, and AMX's tiles where the "
     "CPU has them; the fast CPU table only), "
     "or auto: bf16 where the table is the fast CPU one and the CPU has AVX-512 BF16, else fp32"},
    {"context-window", NULL, "--context-window", FLAG_INT, "N", 0, 1 << 20, NULL, OPTION(train.context_window),
     "prompt positions trained on before the first completion token (with the completion at most 1,024 columns: "
     "the window gives way to the completion)"},
    {"freeze-head", NULL, "--freeze-head", FLAG_INT, "0|1", 0, 1, NULL, OPTION(train.freeze_lm_head),
     "1: the draft's LM head keeps its initial rows (the target's with --draft-init target or target-layer) and only "
     "the rest of the draft trains"},
    {"adapt-vocab", NULL, "--adapt-vocab", FLAG_INT, "0|1", 0, 1, NULL, OPTION(train.adapt_vocabulary),
     "the draft vocabulary follows the traffic (an id seen at least twice and more than twice as often as the "
     "least-seen entry replaces it, its LM-head row from the target's; replay: as requests arrive, train: from all the "
     "records before the first step) (0: it stays as --draft-vocab made it)"},
    {"eval-every", NULL, "--eval-every", FLAG_INT, "M", 0, 1 << 24, NULL, OPTION(eval_every),
     "every M requests, measure the served draft, frozen, on held-back requests it never serves or trains on "
     "(DIR/held_back.csv and a curve in the chart; 0: off)"},
    {"eval-requests", NULL, "--eval-requests", FLAG_INT, "E", 1, 4096, NULL, OPTION(eval_requests),
     "requests held back from the stream for --eval-every, spread evenly over it"},
    {"discard-weight", NULL, "--discard-weight", FLAG_FLOAT, "X", 0, 100, NULL, OPTION(train.discard_weight),
     "weight of the rejected-branch (discard) loss (0: off)"},
    {"discard-top-k", NULL, "--discard-top-k", FLAG_INT, "K", 0, TREE_MAX_NODES, NULL, OPTION(train.discard_top_k),
     "rejected nodes per verify pass used by it (0: all)"},
    // tiny-model, convert
    {"dim", NULL, "--dim", FLAG_INT, "N", 2, 8192, NULL, OPTION(tiny.dim), "model width"},
    {"layers", NULL, "--layers", FLAG_INT, "N", 1, 256, NULL, OPTION(tiny.n_layers), "layers"},
    {"heads", NULL, "--heads", FLAG_INT, "N", 1, 256, NULL, OPTION(tiny.n_heads), "query heads"},
    {"kv-heads", NULL, "--kv-heads", FLAG_INT, "N", 1, 256, NULL, OPTION(tiny.n_kv_heads), "key/value heads"},
    {"ffn", NULL, "--ffn", FLAG_INT, "N", MODEL_MIN_FFN, 65536, NULL, OPTION(tiny.ffn_dim), "feed-forward width"},
    {"vocab", NULL, "--vocab", FLAG_INT, "N", 259, 1 << 20, NULL, OPTION(tiny.vocab_size), "vocabulary size (3 control + 256 byte tokens + merges)"},
    {"model-context", NULL, "--context", FLAG_INT, "N", 2, 1 << 20, NULL, OPTION(tiny.context_length), "the model's context length"},
    {"type", NULL, "--type", FLAG_CHOICE, "TYPE", 0, 0, "f32|f16|bf16|q8_0|q4_0|q4_1", OPTION(type_name),
     "tensor type of the matrices (vectors stay F32)"},
    {"untied", NULL, "--untied", FLAG_SWITCH, NULL, 0, 0, NULL, OPTION(untied), "a separate output matrix (default: tied to the embedding)"},
    // draft-export
    {"draft-file", NULL, "--draft", FLAG_TEXT, "DRAFT", 0, 0, NULL, OPTION(draft),
     "the draft to export: our GGUF, llama.cpp's eagle3 GGUF or a SpecForge directory"},
    {"format", NULL, "--format", FLAG_CHOICE, "FORMAT", 0, 0, "llama.cpp|specforge|aurora", OPTION(format),
     "llama.cpp: one GGUF for llama-speculative-simple --spec-type draft-eagle3 -md OUT (the target's tokenizer "
     "copied in); specforge: OUT is a directory, model.safetensors + config.json, the layout SpecForge writes and "
     "SGLang / vLLM load (Hugging Face Q/K layout, d2t offsets, t2d mask); aurora: our own GGUF checkpoint"},
    {"dtype", NULL, "--dtype", FLAG_CHOICE, "TYPE", 0, 0, "f32|bf16", OPTION(dtype),
     "matrix type written (f32: a bit-exact round trip)"},
    // plot
    {"title", NULL, "--title", FLAG_TEXT, "TEXT", 0, 0, NULL, OPTION(title), "chart title"},
};
enum { N_FLAGS = sizeof(FLAGS) / sizeof(FLAGS[0]) };

typedef struct Command Command;
struct Command {
    const char* name;
    const char* usage;          // the synopsis after "aurora"
    const char* summary;        // one line for the command list
    const char* description;    // shown under the synopsis in --help (may be NULL)
    const char* flags;          // the keys of the flags it accepts, space-separated
    const char* required;       // keys that must be given, space-separated
    int min_positional, max_positional;
    const char* positional_name;
    void (*defaults)(Options* o);
    int (*run)(Options* o);
};

static const Flag* flag_by_key(const char* key, size_t length) {
    for (int i = 0; i < N_FLAGS; i++) {
        if (strlen(FLAGS[i].key) == length && strncmp(FLAGS[i].key, key, length) == 0) { return &FLAGS[i]; }
    }
    fprintf(stderr, "internal error: a command names the unknown flag key '%.*s'\n", (int)length, key);
    abort(); // the tables are inconsistent: a program bug, caught by any run of the command
}

// Calls visit for each flag key in a space-separated list; stops at the first non-zero return.
static const Flag* flag_list_find(const char* list, int (*match)(const Flag* flag, const void* context), const void* context) {
    for (const char* p = list; *p; ) {
        while (*p == ' ') { p++; }
        const char* end = p;
        while (*end && *end != ' ') { end++; }
        if (end > p) {
            const Flag* flag = flag_by_key(p, (size_t)(end - p));
            if (match(flag, context)) { return flag; }
        }
        p = end;
    }
    return NULL;
}

static int flag_has_name(const Flag* flag, const void* context) {
    const char* name = context;
    return strcmp(flag->name, name) == 0 || (flag->short_name && strcmp(flag->short_name, name) == 0);
}
static int flag_print_help(const Flag* flag, const void* context);

static void command_print_help(const Command* command, const Options* defaults, FILE* stream) {
    fprintf(stream, "usage: aurora %s\n", command->usage);
    if (command->description) { fprintf(stream, "%s\n", command->description); }
    const void* context[2] = {defaults, stream};
    flag_list_find(command->flags, flag_print_help, context);
}

// One help line: names, value, help, and the default when the flag has one.
static int flag_print_help(const Flag* flag, const void* context) {
    const Options* defaults = ((const void* const*)context)[0];
    FILE* stream = (FILE*)((const void* const*)context)[1];
    char names[64];
    snprintf(names, sizeof(names), "%s%s%s%s%s", flag->short_name ? flag->short_name : "", flag->short_name ? ", " : "",
             flag->name, flag->value_name ? " " : "", flag->kind == FLAG_CHOICE ? flag->choices : flag->value_name ? flag->value_name : "");
    char text[640];
    int used = snprintf(text, sizeof(text), "%s", flag->help);
    const char* field = (const char*)defaults + flag->offset;
    if (flag->kind == FLAG_INT && *(const int*)field != 0) {
        used += snprintf(text + used, sizeof(text) - used, " (default %d)", *(const int*)field);
    } else if (flag->kind == FLAG_FLOAT && *(const float*)field != 0.0f) {
        used += snprintf(text + used, sizeof(text) - used, " (default %g)", *(const float*)field);
    } else if ((flag->kind == FLAG_TEXT || flag->kind == FLAG_CHOICE) && *(const char* const*)field != NULL) {
        used += snprintf(text + used, sizeof(text) - used, " (default %s)", *(const char* const*)field);
    }
    // the help column wrapped at HELP_WIDTH characters, continuation lines indented under it
    enum { HELP_INDENT = 29, HELP_WIDTH = 110 };
    fprintf(stream, "  %-26s ", names);
    int column = HELP_INDENT;
    for (const char* word = text; *word; ) {
        const char* end = word;
        while (*end && *end != ' ') { end++; }
        int length = (int)(end - word);
        if (column > HELP_INDENT && column + 1 + length > HELP_WIDTH) {
            fprintf(stream, "\n%*s", HELP_INDENT, "");
            column = HELP_INDENT;
        } else if (column > HELP_INDENT) {
            fputc(' ', stream);
            column++;
        }
        fwrite(word, 1, (size_t)length, stream);
        column += length;
        word = *end ? end + 1 : end;
    }
    fprintf(stream, "\n");
    return 0;
}

static int usage_error(const Command* command, const char* format, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const Command* command, const char* format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "error: ");
    vfprintf(stderr, format, args);
    va_end(args);
    fprintf(stderr, "\nrun 'aurora %s --help' for its options\n", command->name);
    return 1;
}

// Stores one flag's value into o; returns 0, or 1 after an error naming the flag and what it expects.
static int flag_set(const Command* command, const Flag* flag, const char* typed_name, const char* value, Options* o) {
    char* field = (char*)o + flag->offset;
    char* end = NULL;
    errno = 0;
    switch (flag->kind) {
    case FLAG_SWITCH: *(int*)field = 1; return 0;
    case FLAG_TEXT:
        // a file, directory, draft or domain cannot be empty (`-m ""` said ": cannot open", naming no flag); a
        // prompt, label or title may be
        if (value[0] == '\0' && strcmp(flag->value_name, "TEXT") != 0) {
            return usage_error(command, "%s expects a %s, got an empty value", typed_name, flag->value_name);
        }
        *(const char**)field = value;
        return 0;
    case FLAG_INT: {
        long long number = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || number < flag->min || number > flag->max) {
            return usage_error(command, "%s expects an integer in [%.0f, %.0f], got '%s'", typed_name, flag->min, flag->max, value);
        }
        *(int*)field = (int)number;
        return 0;
    }
    case FLAG_FLOAT: {
        // parsed and range-checked in double (the bounds are doubles: 0.01f < 0.01), stored as float; a
        // value strtod can only underflow (1e-320) is still a number, judged by the range
        double number = strtod(value, &end);
        int overflow = errno == ERANGE && (number == HUGE_VAL || number == -HUGE_VAL);
        if (overflow || end == value || *end != '\0' || !(number >= flag->min && number <= flag->max)) {
            return usage_error(command, "%s expects a number in [%g, %g], got '%s'", typed_name, flag->min, flag->max, value);
        }
        // and as a float: a value below float's smallest (1e-50) would be 0, a switch turned off unannounced
        if (number != 0.0 && (float)number == 0.0f) {
            return usage_error(command, "%s expects a number in [%g, %g], got '%s', which is 0 as a float", typed_name,
                               flag->min, flag->max, value);
        }
        *(float*)field = (float)number;
        return 0;
    }
    case FLAG_CHOICE: {
        size_t n = strlen(value);
        for (const char* c = flag->choices; ; ) {
            const char* bar = strchr(c, '|');
            size_t length = bar ? (size_t)(bar - c) : strlen(c);
            if (length == n && strncmp(c, value, n) == 0) { *(const char**)field = value; return 0; }
            if (!bar) { break; }
            c = bar + 1;
        }
        return usage_error(command, "%s expects one of %s, got '%s'", typed_name, flag->choices, value);
    }
    }
    return 1;
}

// The largest prompt file read (-f): more text than any context holds (--context is at most 2^20 slots).
#define PROMPT_FILE_MAX_BYTES (16u << 20)

// The prompt of a command that takes one: -p TEXT or -f FILE, exactly one. The file is read whole, as text: a NUL
// byte in it is refused (the text would end there, unannounced), and one trailing newline dropped (as llama.cpp's
// -f does, so a prompt written by an editor ends where its text does).
static int prompt_from_flags(const Command* command, Options* o) {
    // (a command takes both flags or neither: its list names them together)
    if (flag_list_find(command->flags, flag_has_name, "--prompt") == NULL && flag_list_find(command->flags, flag_has_name, "--file") == NULL) {
        return 0;
    }
    if (o->prompt != NULL && o->prompt_file != NULL) { return usage_error(command, "-p and -f both give the prompt; give one"); }
    if (o->prompt == NULL && o->prompt_file == NULL) { return usage_error(command, "missing -p TEXT or -f FILE (the prompt)"); }
    if (o->prompt_file == NULL) { return 0; }
    Error err;
    size_t length = 0;
    if (read_text_file(o->prompt_file, PROMPT_FILE_MAX_BYTES, &o->prompt_owned, &length, &err) != 0) {
        fprintf(stderr, "error: -f: %s\n", err.message);
        return 1;
    }
    size_t text_length = strlen(o->prompt_owned);
    if (text_length != length) {
        fprintf(stderr, "error: -f: %s holds a NUL byte at offset %zu; expected text\n", o->prompt_file, text_length);
        return 1;
    }
    if (length > 0 && o->prompt_owned[length - 1] == '\n') { o->prompt_owned[length - 1] = '\0'; }
    o->prompt = o->prompt_owned;
    return 0;
}

// Parses argv (after the command name) into o, which holds the command's defaults. Returns 0, 1 after an
// error, or -1 when --help was printed.
static int parse_flags(const Command* command, int argc, char** argv, Options* o) {
    const Options defaults = *o;
    o->positional = mallocCheck((size_t)(argc > 0 ? argc : 1) * sizeof(char*));
    o->n_positional = 0;
    int options_end = 0;   // after "--" every argument is positional ("tokenize -m M -- -5 degrees")
    for (int i = 0; i < argc; i++) {
        const char* arg = argv[i];
        if (!options_end && strcmp(arg, "--") == 0) { options_end = 1; continue; }
        if (!options_end && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            command_print_help(command, &defaults, stdout);
            return -1;
        }
        if (options_end || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (o->n_positional >= command->max_positional) {
                return command->max_positional == 0
                    ? usage_error(command, "unexpected argument '%s'%s", arg,
                                  flag_list_find(command->flags, flag_has_name, "--prompt") ? " (the prompt goes after -p, or in a file after -f)" : "")
                    : usage_error(command, "unexpected extra argument '%s'", arg);
            }
            o->positional[o->n_positional++] = arg;
            continue;
        }
        // --name=value or --name value
        char name[64];
        const char* value = NULL;
        const char* equals = strchr(arg, '=');
        size_t name_length = equals && arg[1] == '-' ? (size_t)(equals - arg) : strlen(arg);
        if (name_length >= sizeof(name)) { return usage_error(command, "unknown flag '%.60s...'", arg); }
        memcpy(name, arg, name_length);
        name[name_length] = '\0';
        if (equals && arg[1] == '-') { value = equals + 1; }
        const Flag* flag = flag_list_find(command->flags, flag_has_name, name);
        if (flag == NULL) {
            for (int f = 0; f < N_FLAGS; f++) { // another command's flag: say so, not "unknown"
                if (flag_has_name(&FLAGS[f], name)) { return usage_error(command, "%s is not an option of %s", name, command->name); }
            }
            return usage_error(command, "unknown flag '%s'", name);
        }
        if (flag->kind == FLAG_SWITCH) {
            if (value) { return usage_error(command, "flag %s takes no value", name); }
        } else if (value == NULL) {
            if (i + 1 >= argc) { return usage_error(command, "flag %s needs a value (%s)", name, flag->value_name); }
            value = argv[++i];
            // a value that is one of this command's flags is a forgotten value (`--save-draft --online` saved to
            // a file named --online), except in free text (a prompt, a label, a title); --flag=VALUE gives one anyway
            int free_text = strcmp(flag->key, "prompt") == 0 || strcmp(flag->key, "label") == 0 || strcmp(flag->key, "title") == 0;
            char value_name[64] = "";   // (the flag part of a forgotten value: --save-draft --lr=1e-3 names --lr)
            size_t value_name_length = strcspn(value, "=");
            if (value_name_length < sizeof(value_name)) { memcpy(value_name, value, value_name_length); value_name[value_name_length] = '\0'; }
            if (!free_text && value[0] == '-' && flag_list_find(command->flags, flag_has_name, value_name) != NULL) {
                return usage_error(command, "flag %s needs a value (%s), but the next argument is the flag %s (to give "
                                   "that text as the value: %s=%s)", name, flag->value_name, value, name, value);
            }
        }
        if (flag_set(command, flag, name, value, o) != 0) { return 1; }
    }
    // required flags
    for (const char* p = command->required; p && *p; ) {
        while (*p == ' ') { p++; }
        const char* end = p;
        while (*end && *end != ' ') { end++; }
        if (end > p) {
            const Flag* flag = flag_by_key(p, (size_t)(end - p));
            const char* field = (const char*)o + flag->offset;
            if (*(const char* const*)field == NULL) {
                return usage_error(command, "missing %s %s", flag->short_name ? flag->short_name : flag->name, flag->value_name);
            }
        }
        p = end;
    }
    if (o->n_positional < command->min_positional) {
        return usage_error(command, "expected %s%s", command->max_positional == 1 ? "exactly one " : "at least one ", command->positional_name);
    }
    return prompt_from_flags(command, o);
}

// ---- what commands share

static int fail(const Error* err) {
    fprintf(stderr, "error: %s\n", err->message);
    return 1;
}

// That, and the output can be written (with create_directory, its directory is made).
static int check_output(const char* output, const char* flag, const char* const* inputs, const char* const* input_flags,
                        int n_inputs, int create_directory) {
    if (check_not_input(output, flag, inputs, input_flags, n_inputs) != 0) { return 1; }
    Error err;
    if (check_writable(output, create_directory, &err) != 0) { return fail(&err); }
    return 0;
}

// --train-precision: bf16 products need the serving table's mixed-precision twin (the fast CPU table's); auto takes
// them where they run on the CPU's own instruction
static int resolve_train_precision(Options* o, const Backend* backend) {
    Error err;
    if (strcmp(o->train_precision, "auto") == 0) {
        o->train.bf16_products = fast_bf16_native() && backend_bf16_twin(backend, &err) != NULL;
        return 0;
    }
    o->train.bf16_products = strcmp(o->train_precision, "bf16") == 0;
    if (o->train.bf16_products && backend_bf16_twin(backend, &err) == NULL) {
        fprintf(stderr, "error: --train-precision bf16: %s\n", err.message);
        return 1;
    }
    return 0;
}

// --backend, --device and --no-blas: the backend the model runs on (--backend when given; else CUDA for
// --device cuda, the reference for --no-blas, the default CPU table otherwise); an error when it is not in
// this build or on this machine. o->backend_name becomes the name resolved (replay reads it).
static const Backend* resolve_backend(Options* o) {
    const char* flag = "--backend";
    int cuda_device = o->device && strcmp(o->device, "cuda") == 0;
    // (o->device is NULL unless --device was given, so an explicit --device cpu is told from the default)
    if (o->backend_name && o->device && !cuda_device && strcmp(o->backend_name, "cuda") == 0) {
        fprintf(stderr, "error: --backend cuda disagrees with --device %s (a CPU table); give one of them\n", o->device);
        return NULL;
    }
    if (o->backend_name && ((cuda_device && strcmp(o->backend_name, "cuda") != 0) || (o->no_blas && strcmp(o->backend_name, "ref") != 0))) {
        fprintf(stderr, "error: --backend %s disagrees with %s (which means --backend %s); give one of them\n", o->backend_name,
                cuda_device ? "--device cuda" : "--no-blas", cuda_device ? "cuda" : "ref");
        return NULL;
    }
    if (cuda_device && o->no_blas) {
        fprintf(stderr, "error: --device cuda runs the CUDA table; --no-blas asks for the reference CPU table: give one of them\n");
        return NULL;
    }
    if (o->backend_name == NULL) {
        flag = "--device";
        o->backend_name = cuda_device ? "cuda" : o->no_blas ? "ref" : "cpu";
    }
    o->use_cuda = strcmp(o->backend_name, "cuda") == 0;
    Error err;
    const Backend* backend = backend_by_name(o->backend_name, &err);
    if (backend == NULL) { fprintf(stderr, "error: %s %s: %s\n", flag, o->backend_name, err.message); return NULL; }
    if (!backend->host_memory) { fprintf(stderr, "device: %s\n", backend->device); }
    return backend;
}

static void resolve_tree_shape(Options* o) { options_resolve_shape(&o->shape, o->spec_fixed); }

// The context of the commands that read a model and run no forward pass (info, draft-init, draft-export): one
// slot, which no model's llama.context_length is shorter than (16 once warned of a context the user never
// asked for, on a model trained on fewer positions).
enum { MODEL_ONLY_CONTEXT = 1 };

static int load_target(Target* target, const Options* o, const Backend* backend, int context, int max_tokens) {
    Error err;
    if (target_load(target, o->model_path, backend, context, max_tokens, &err) != 0) { return fail(&err); }
    if (!target->has_tokenizer) {
        fprintf(stderr, "error: %s has no tokenizer (key 'tokenizer.ggml.tokens' is missing); expected a GGUF "
                "with an embedded byte-level BPE tokenizer\n", o->model_path);
        target_free(target);
        return 1;
    }
    return 0;
}

// What generate and logits share: the model on its backend and the encoded prompt (at least one cache
// slot left for generation). Returns the prompt (malloc'd), or NULL after an error.
static int* start_session(Options* o, Target* target, int* n_prompt) {
    const Backend* backend = resolve_backend(o);
    if (backend == NULL || load_target(target, o, backend, o->context, o->batch) != 0) { return NULL; }
    int capacity = target->cache_capacity;
    int* prompt = mallocCheck((size_t)capacity * sizeof(int));
    Error err;
    *n_prompt = prompt_encode(&target->tokenizer, o->prompt, o->chat, prompt, capacity - 1, &err);
    if (*n_prompt < 0) {
        if (*n_prompt != -1) { fprintf(stderr, "error: %s\n", err.message); }   // (empty; no chat template)
        else {
            fprintf(stderr, "error: %s; the context holds %d slots and at least one must be left for generation: shorten "
                    "the prompt or raise --context\n", err.message, capacity);
        }
        free(prompt);
        target_free(target);
        return NULL;
    }
    if (o->verbose_prompt) {
        fprintf(stderr, "prompt: %d tokens:", *n_prompt);
        for (int i = 0; i < *n_prompt; i++) { fprintf(stderr, " %d", prompt[i]); }
        fprintf(stderr, "\n");
    }
    return prompt;
}

static void print_token_text(void* context, int token) {
    const Tokenizer* tokenizer = context;
    // a model's embedding may have rows past its tokenizer's list (padding): such an id has no text
    if (token < 0 || token >= tokenizer->vocab_size) { return; }
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

// --draft: a checkpoint, a random draft, the target itself, or prompt lookup. Returns 0 or 1 (error).
static int setup_draft_source(DraftSource* source, Draft* draft, DraftKind* kind, Target* target, const Options* o) {
    Error err;
    if (tree_shape_check(o->shape, &err) != 0) { return fail(&err); }
    int model_free = strcmp(o->draft, "self") == 0 || strcmp(o->draft, "lookup") == 0 || strcmp(o->draft, "suffix") == 0;
    if (o->hybrid && model_free) {
        fprintf(stderr, "error: --hybrid pairs the suffix draft with an EAGLE draft; expected --draft FILE or random, "
                "got '%s'\n", o->draft);
        return 1;
    }
    if (strcmp(o->draft, "self") == 0) { *kind = DRAFT_SELF; }
    else if (strcmp(o->draft, "lookup") == 0) { *kind = DRAFT_LOOKUP; }
    else if (strcmp(o->draft, "suffix") == 0) { *kind = DRAFT_SUFFIX; }
    else {
        *kind = o->hybrid ? DRAFT_HYBRID : DRAFT_EAGLE;
        if (replay_load_draft(draft, o->draft, target, o->draft_vocab, (uint64_t)o->seed, &err) != 0) { return fail(&err); }
    }
    int has_model = *kind == DRAFT_EAGLE || *kind == DRAFT_HYBRID;
    if (tree_shape_fits(o->shape, target, &err) != 0) {
        if (has_model) { draft_free(draft); }
        return fail(&err);
    }
    int serving_type = TYPE_F32;
    if (draft_type_resolve(o->draft_type_name, has_model, target->backend, &serving_type, &err) != 0) {
        if (has_model) { draft_free(draft); }
        return fail(&err);
    }
    draft_source_init(source, *kind, o->shape, has_model ? draft : NULL, target);
    if (has_model && serving_type != draft->serving_type) { draft_serve_as(draft, serving_type); }
    draft_source_set_adaptive(source, !o->spec_fixed, 0);
    return 0;
}

// ---- the commands

static void no_defaults(Options* o) { (void)o; }

static void generate_defaults(Options* o) {
    o->n_predict = 64; o->sampling = (SamplerSettings){.temperature = 0.0f, .top_p = 1.0f}; o->seed = 42; o->top_logits = 10;
    o->batch = DEFAULT_BATCH_TOKENS; o->shape = (TreeShape){0, 0, 0}; o->draft_type_name = "auto";
}

// --discard-top-k chooses among the rejected nodes the discard loss trains on: without the loss it is unused.
// (Its default is trainer_default_settings' 0 in every command that takes it.)
static int discard_top_k_check(const TrainerSettings* t) {
    if (t->discard_top_k == 0 || t->discard_weight > 0.0f) { return 0; }
    fprintf(stderr, "error: --discard-top-k chooses the rejected nodes the discard loss trains on, and the discard loss "
            "is off (--discard-weight %g): give --discard-weight too, or drop it\n", t->discard_weight);
    return 1;
}

// --draft-vocab sizes a fresh draft (random, target, target-layer); a checkpoint brings its own vocabulary, and
// the model-free drafts have none: there it would be taken and not used.
static int draft_vocab_check(const Options* o, const char* start) {
    if (o->draft_vocab == 0 || (start != NULL && draft_start_is_fresh(start))) { return 0; }
    fprintf(stderr, "error: --draft-vocab sizes a fresh draft's vocabulary (random, target or target-layer); %s%s%s: "
            "drop --draft-vocab\n", start ? "the draft '" : "no draft model is made here", start ? start : "",
            start ? "' brings its own, or drafts without one" : "");
    return 1;
}

// The sampling filters shape what is drawn at a temperature above 0; greedy decoding (--temp 0, the default)
// takes the argmax, which every filter keeps. A flag that would not be used is refused, as everywhere: a user
// giving one likely meant to sample.
static int sampling_filters_check(const Options* o) {
    const SamplerSettings* s = &o->sampling;
    if (s->temperature == 0.0f && (s->top_k > 0 || s->top_p < 1.0f || s->min_p > 0.0f)) {
        fprintf(stderr, "error: --top-k, --top-p and --min-p shape sampling, and at --temp 0 (greedy, the default) they "
                "change nothing: give --temp above 0 to sample, or drop them\n");
        return 1;
    }
    return 0;
}

static int command_generate(Options* o) {
    if (o->draft == NULL && (o->hybrid || o->spec_fixed || o->shape.k || o->shape.depth || o->shape.nodes ||
                             strcmp(o->draft_type_name, "auto") != 0)) {
        fprintf(stderr, "error: --hybrid, --spec-fixed, --spec-k, --spec-depth, --spec-nodes and --draft-type shape "
                "speculative decoding, which needs --draft (a checkpoint, random, self, lookup or suffix)\n");
        return 1;
    }
    if (draft_vocab_check(o, o->draft) != 0 || sampling_filters_check(o) != 0) { return 1; }
    resolve_tree_shape(o);
    Target target;
    int n_prompt;
    int* prompt = start_session(o, &target, &n_prompt);
    if (prompt == NULL) { return 1; }
    int room = target.cache_capacity - n_prompt;
    int* out = mallocCheck((size_t)(o->n_predict + 1) * sizeof(int));
    TokenCallback stream = o->print_ids ? NULL : print_token_text;
    int n = 0, status = 0, eos = 0;
    if (o->draft != NULL) {
        Draft draft;
        DraftSource source;
        DraftKind kind;
        if (setup_draft_source(&source, &draft, &kind, &target, o) != 0) {
            status = 1;
        } else {
            SpecStats stats;
            n = generate_speculative(&target, &source, prompt, n_prompt, o->n_predict, o->sampling, (uint64_t)o->seed, out,
                                     &stats, stream, &target.tokenizer, NULL);
            print_generated_ids(out, n, o->print_ids);
            char served[48] = "";
            if (kind == DRAFT_EAGLE || kind == DRAFT_HYBRID) {
                snprintf(served, sizeof(served), " (its matrices %s)", tensor_type_name(draft.serving_type));
            }
            fprintf(stderr, "draft: %s%s%s, tree K=%d D=%d N=%d (%s)\n", o->draft, served, o->hybrid ? " with the suffix draft" : "",
                    source.limit.k, source.limit.depth, source.limit.nodes, source.adaptive ? "adaptive, at most" : "fixed");
            print_spec_stats(&stats, stderr);
            eos = stats.stopped_at_eos;
            draft_source_free(&source);
            if (kind == DRAFT_EAGLE || kind == DRAFT_HYBRID) { draft_free(&draft); }
        }
    } else {
        GenerateStats stats;
        n = generate_plain(&target, prompt, n_prompt, o->n_predict, o->sampling, (uint64_t)o->seed, out, &stats, stream,
                           &target.tokenizer);
        print_generated_ids(out, n, o->print_ids);
        int decode_steps = stats.n_generated > 0 ? stats.n_generated - 1 : 0; // the first token comes from prefill
        fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tokens/s)\n", stats.n_prompt, stats.prefill_seconds,
                stats.prefill_seconds > 0 ? stats.n_prompt / stats.prefill_seconds : 0.0);
        fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tokens/s)%s\n", decode_steps, stats.decode_seconds,
                stats.decode_seconds > 0 ? decode_steps / stats.decode_seconds : 0.0,
                stats.stopped_at_eos ? ", stopped at end-of-sequence" : "");
        eos = stats.stopped_at_eos;
    }
    if (status == 0 && n < o->n_predict && !eos) {
        fprintf(stderr, "warning: stopped after %d of the %d tokens asked for: the context of %d slots is full (the prompt "
                "takes %d); raise --context for longer outputs\n", n, o->n_predict, target.cache_capacity, n_prompt);
    }
    if (status == 0) {
        char description[256];
        long resident_kb, peak_kb;
        backend_describe(target.backend, description, sizeof(description));
        resident_memory_kb(&resident_kb, &peak_kb);
        // (MB: 10^6 bytes, as every other size the program prints; /proc counts kB of 1,024 bytes)
        fprintf(stderr, "backend: %s; resident memory %.1f MB (peak %.1f MB)\n", description, resident_kb * 1.024e-3,
                peak_kb * 1.024e-3);
    }
    (void)room;
    free(out);
    free(prompt);
    target_free(&target);
    return status;
}


static int command_tokenize(Options* o) {
    // the tokenizer alone: no need to load the weights
    GGUFFile file;
    Tokenizer tokenizer;
    Error err;
    if (gguf_open(&file, o->model_path, &err) != 0) { return fail(&err); }
    if (tokenizer_load_gguf(&tokenizer, &file, &err) != 0) { gguf_close(&file); return fail(&err); }
    const char* text = o->positional[0];
    size_t length = strlen(text);
    int max_ids = (int)length + 16;
    int* ids = mallocCheck((size_t)max_ids * sizeof(int));
    int n = tokenizer_encode(&tokenizer, text, length, o->parse_special, ids, max_ids, &err);
    int status = n < 0 ? fail(&err) : 0;
    for (int i = 0; i < n; i++) { printf(i ? " %d" : "%d", ids[i]); }
    if (n >= 0) { printf("\n"); }
    free(ids);
    tokenizer_free(&tokenizer);
    gguf_close(&file);
    return status;
}

static int command_logits(Options* o) {
    Target target;
    int n_prompt;
    int* prompt = start_session(o, &target, &n_prompt);
    if (prompt == NULL) { return 1; }
    target_prefill(&target, prompt, n_prompt, 0, NULL, NULL);
    int V = target.config.vocab_size;
    int K = o->top_logits < V ? o->top_logits : V;
    ProbIndex* order = mallocCheck((size_t)V * sizeof(ProbIndex));
    for (int i = 0; i < V; i++) { order[i].prob = target.host.logits[i]; order[i].index = i; }
    qsort(order, V, sizeof(ProbIndex), compare_prob_descending);
    for (int i = 0; i < K; i++) { printf("%d %.6f\n", order[i].index, order[i].prob); }
    free(order);
    free(prompt);
    target_free(&target);
    return 0;
}

static int command_info(Options* o) {
    Target target;
    if (load_target(&target, o, &backend_cpu_ref, MODEL_ONLY_CONTEXT, 1) != 0) { return 1; }
    TargetConfig* c = &target.config;
    GGUFFile* file = &target.file;
    printf("file: %s (GGUF v%u, %llu metadata keys, %llu tensors, alignment %llu)\n", o->model_path, file->version,
           (unsigned long long)file->n_values, (unsigned long long)file->n_tensors, (unsigned long long)file->alignment);
    printf("architecture: llama\n");
    printf("dim %d, layers %d, heads %d, kv heads %d, head size %d, ffn %d, vocab %d, context %d\n", c->dim,
           c->n_layers, c->n_heads, c->n_kv_heads, c->head_size, c->ffn_dim, c->vocab_size, c->context_length);
    printf("rope theta %g, rms eps %g, output %s, tap layers %d %d %d\n", c->rope_theta, c->norm_eps,
           c->tied_output ? "tied to the embedding" : "separate", c->tap_layers[0], c->tap_layers[1], c->tap_layers[2]);
    printf("tokenizer: %d tokens, bos %d, eos %d, end of generation:", target.tokenizer.vocab_size, target.tokenizer.bos_id,
           target.tokenizer.eos_id);
    for (int id = 0; id < target.tokenizer.vocab_size; id++) {   // (ascending: the oracle compares llama.cpp's list)
        if (tokenizer_is_end(&target.tokenizer, id)) { printf(" %d", id); }
    }
    printf("\n");
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

static int tensor_type_from_name(const char* name) {
    static const char* names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"};
    static const int types[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
    for (int i = 0; i < 6; i++) { if (strcmp(name, names[i]) == 0) { return types[i]; } }
    return TYPE_F32; // unreachable: the flag table accepts only these names
}

static void tiny_model_defaults(Options* o) {
    o->tiny = (TinyModelSpec){64, 4, 4, 2, 96, 320, 256, 1, TYPE_F32, 10000.0f, 1};
    o->type_name = "f32"; o->seed = 1;
}

static int command_tiny_model(Options* o) {
    TinyModelSpec spec = o->tiny;
    spec.tied_output = !o->untied;
    spec.weight_type = tensor_type_from_name(o->type_name);
    spec.seed = (uint64_t)o->seed;
    int head_size = spec.dim / spec.n_heads;
    if (spec.dim % spec.n_heads != 0 || head_size % 2 != 0 || spec.n_heads % spec.n_kv_heads != 0 ||
        spec.n_heads / spec.n_kv_heads > MODEL_MAX_HEAD_GROUP) {
        fprintf(stderr, "error: --dim %d, --heads %d, --kv-heads %d: expected dim = heads * an even head size, and "
                "heads a multiple of kv-heads, at most %d query heads to one kv-head (what a model load takes)\n", spec.dim,
                spec.n_heads, spec.n_kv_heads, MODEL_MAX_HEAD_GROUP);
        return 1;
    }
    int64_t block = tensor_type_block_size(spec.weight_type);
    if (spec.dim % block != 0 || spec.ffn_dim % block != 0) {
        fprintf(stderr, "error: --type %s stores rows in blocks of %lld, expected --dim and --ffn to be multiples of it "
                "(got %d and %d)\n", tensor_type_name(spec.weight_type), (long long)block, spec.dim, spec.ffn_dim);
        return 1;
    }
    Error err;
    if (check_writable(o->out_path, 1, &err) != 0 || tiny_model_write(o->out_path, &spec, &err) != 0) {
        fprintf(stderr, "error: -o %s: %s\n", o->out_path, err.message);
        return 1;
    }
    fprintf(stderr, "wrote %s\n", o->out_path);
    return 0;
}

// general.file_type as llama.cpp numbers it (llama_ftype: "mostly" the matrices' type)
static uint32_t llama_file_type(int type) {
    switch (type) {
    case TYPE_F16:  return 1;
    case TYPE_Q4_0: return 2;
    case TYPE_Q4_1: return 3;
    case TYPE_Q8_0: return 7;
    case TYPE_BF16: return 32;
    default:        return 0;   // all F32
    }
}

static int command_convert(Options* o) {
    int type = tensor_type_from_name(o->type_name);
    const char* inputs[1] = {o->model_path};
    const char* input_flags[1] = {"-m"};
    GGUFFile file;
    Error err;
    if (gguf_open(&file, o->model_path, &err) != 0) { return fail(&err); }
    if (check_output(o->out_path, "-o", inputs, input_flags, 1, 1) != 0) { gguf_close(&file); return 1; }
    GGUFWriter* writer = gguf_writer_new();
    const char* const replaced[] = {"general.file_type", NULL};   // it names the old type
    int status = gguf_writer_copy_values(writer, &file, replaced, &err) != 0 ? fail(&err) : 0;
    gguf_writer_add_uint32(writer, "general.file_type", llama_file_type(type));
    for (uint64_t i = 0; i < file.n_tensors && status == 0; i++) {
        const GGUFTensor* t = &file.tensors[i];
        int is_matrix = t->n_dims >= 2 && !tensor_type_is_integer(t->type);
        if (is_matrix && t->shape[0] % tensor_type_block_size(type) != 0) {
            fprintf(stderr, "error: %s: tensor '%s' has rows of %lld values, expected a multiple of %s's block of %lld\n",
                    o->model_path, t->name, (long long)t->shape[0], tensor_type_name(type), (long long)tensor_type_block_size(type));
            status = 1;
            break;
        }
        // an integer tensor (an index map such as eagle3's d2t) keeps its type: as a float its ids past 2^24
        // would round, and its readers expect I64 / I32
        int out_type = tensor_type_is_integer(t->type) ? t->type : is_matrix ? type : TYPE_F32;
        gguf_writer_add_tensor_from(writer, t->name, out_type, t);
    }
    if (status == 0 && gguf_writer_save(writer, o->out_path, &err) != 0) { status = fail(&err); }
    gguf_writer_free(writer);
    gguf_close(&file);
    if (status == 0) { fprintf(stderr, "wrote %s (matrices as %s)\n", o->out_path, tensor_type_name(type)); }
    return status;
}

static void draft_init_defaults(Options* o) { o->seed = 42; }

static int command_draft_init(Options* o) {
    const char* inputs[1] = {o->model_path};
    const char* input_flags[1] = {"-m"};
    Target target;
    if (load_target(&target, o, &backend_cpu_ref, MODEL_ONLY_CONTEXT, 1) != 0) { return 1; }
    if (check_output(o->out_path, "-o", inputs, input_flags, 1, 1) != 0) { target_free(&target); return 1; }
    Draft draft;
    Error err;
    int vocab_size = 0, status = 0;
    if (choose_draft_vocab(&target, o->draft_vocab, &vocab_size, &err) != 0) {
        status = fail(&err);
    } else {
        draft_init_random(&draft, &target, vocab_size, NULL, (uint64_t)o->seed);
        if (draft_save(&draft, o->out_path, &err) != 0) { status = fail(&err); }
        else {
            fprintf(stderr, "wrote %s: EAGLE-3 draft, width %d, %d heads (%d kv), ffn %d, draft vocabulary %d of %d, %zu parameters\n",
                    o->out_path, draft.config.dim, draft.config.n_heads, draft.config.n_kv_heads, draft.config.ffn_dim,
                    draft.config.vocab_size, draft.config.target_vocab_size, draft.n_weight_floats);
        }
        draft_free(&draft);
    }
    target_free(&target);
    return status;
}

static LossKind loss_kind_from_name(const char* name) {
    if (strcmp(name, "rkl") == 0) { return LOSS_REVERSE_KL; }
    if (strcmp(name, "ntp") == 0) { return LOSS_NEXT_TOKEN; }
    return LOSS_FORWARD_KL;
}

// What replay and train check before any work: no output is one of their inputs. Whether the outputs can
// be written, replay_run and train_offline check once the model and traffic are read, so a bad input
// leaves no directory behind.
static int run_check_outputs(const Options* o, const char* output, const char* output_flag) {
    if (output == NULL) { return 0; }
    const char* inputs[2] = {o->model_path, o->traffic_path};
    const char* input_flags[2] = {"-m", "--traffic"};
    if (check_not_input(output, output_flag, inputs, input_flags, 2) != 0) { return 1; }
    // the start's own checkpoint may be replaced (--draft-init ck.gguf --save-draft ck.gguf resumes, safely: the
    // start is read before any work), but not a file inside a start given as a directory (a SpecForge draft)
    const char* start[1] = {o->draft_init};
    const char* start_flag[1] = {"--draft-init"};
    int start_is_directory = o->draft_init != NULL && path_is_directory(o->draft_init);
    return start_is_directory ? check_not_input(output, output_flag, start, start_flag, 1) : 0;
}

// Flags replay would accept and then not use, refused (a run must not look as if it used a setting it did
// not): the trainer's with nothing trained (--static, --no-spec, --source suffix), --eval-requests without
// --eval-every, and the training thread's with lockstep training (--sync-schedule). A flag counts as given
// when its value differs from the default.
static int replay_check_flags(const Options* o) {
    Options d = replay_default_options();
    const TrainerSettings *t = &o->train, *dt = &d.train;
    int training_flags = t->learning_rate != dt->learning_rate || t->warmup_steps != dt->warmup_steps ||
                         t->max_grad_norm != dt->max_grad_norm || t->ttt_length != dt->ttt_length || t->beta2 != dt->beta2 ||
                         strcmp(o->loss_name, d.loss_name) != 0 || t->prompt_weight != dt->prompt_weight ||
                         t->feature_weight != dt->feature_weight || strcmp(o->train_precision, d.train_precision) != 0 ||
                         t->context_window != dt->context_window || t->freeze_lm_head != dt->freeze_lm_head ||
                         t->adapt_vocabulary != dt->adapt_vocabulary || t->discard_weight != dt->discard_weight ||
                         t->discard_top_k != dt->discard_top_k || o->sync_every != d.sync_every ||
                         o->lockstep_every != d.lockstep_every || o->batch_requests != d.batch_requests ||
                         o->buffer_capacity != d.buffer_capacity || o->pool_capacity != d.pool_capacity ||
                         strcmp(o->pool_sampling, d.pool_sampling) != 0 || o->steps_per_request != d.steps_per_request ||
                         o->train_share != d.train_share;
    if (strcmp(o->mode, "online") != 0 && training_flags) {
        fprintf(stderr, "error: the training flags (--lr, --warmup, --ttt-length, --loss, --pool, --sync-every, "
                "--sync-schedule and kin) set how --online trains; with %s nothing is trained: drop them\n",
                o->static_draft ? "--static" : o->no_spec ? "--no-spec" : "--source suffix");
        return 1;
    }
    if (o->eval_requests != d.eval_requests && o->eval_every == 0) {
        fprintf(stderr, "error: --eval-requests sizes the held-back set that --eval-every measures; give --eval-every too\n");
        return 1;
    }
    if (discard_top_k_check(t) != 0) { return 1; }
    if (o->lockstep_every > 0 && (o->sync_every != d.sync_every || o->train_share != d.train_share)) {
        fprintf(stderr, "error: --sync-every and --train-share set the training thread's publishing and share of a core; "
                "with --sync-schedule there is no thread (each round publishes): drop them\n");
        return 1;
    }
    int model_free = strcmp(o->mode, "none") == 0 || strcmp(o->mode, "suffix") == 0;
    if (strcmp(o->mode, "none") == 0 && (o->spec_fixed || o->shape.k || o->shape.depth || o->shape.nodes)) {
        fprintf(stderr, "error: --spec-fixed, --spec-k, --spec-depth and --spec-nodes shape the drafted trees; --no-spec "
                "drafts nothing: drop them\n");
        return 1;
    }
    if (model_free && o->eval_every > 0) {
        fprintf(stderr, "error: --eval-every measures a draft model on held-back requests; %s has none: drop it\n",
                strcmp(o->mode, "none") == 0 ? "--no-spec" : "--source suffix");
        return 1;
    }
    if (o->eval_every == 0 && o->parallel != d.parallel) {
        fprintf(stderr, "error: --parallel sets how many held-back requests replay records at once; give --eval-every "
                "too, or drop it\n");
        return 1;
    }
    if (draft_vocab_check(o, model_free ? NULL : o->draft) != 0) { return 1; }
    if (o->lockstep_every == 0 && o->steps_per_request != d.steps_per_request) {
        fprintf(stderr, "error: --steps-per-request sets the steps of a lockstep round (--sync-schedule M); the training "
                "thread, and training in the gaps, step as fast as they go: give --sync-schedule, or drop it\n");
        return 1;
    }
    if (o->load < 1.0f && o->train_share != d.train_share) {
        fprintf(stderr, "error: --train-share caps the training thread beside serving; at --load %g training runs in the "
                "gaps between requests, on every core, with no thread: drop --train-share\n", (double)o->load);
        return 1;
    }
    return 0;
}

static int command_replay(Options* o) {
    int modes = (o->online != 0) + (o->static_draft != NULL) + (o->no_spec != 0);
    if (modes > 1) { fprintf(stderr, "error: --online, --static and --no-spec exclude each other; give one\n"); return 1; }
    o->mode = o->static_draft ? "static" : o->no_spec ? "none" : "online";
    if (strcmp(o->mode, "online") != 0 && o->save_draft) {
        fprintf(stderr, "error: --save-draft saves a draft trained online; with --%s nothing is trained (drop --save-draft, "
                "or use --online)\n", o->static_draft ? "static" : "no-spec");
        return 1;
    }
    if (strcmp(o->mode, "online") != 0 && o->draft_init) {
        fprintf(stderr, "error: --draft-init sets where online training starts; with --%s give the draft to serve with "
                "--static DRAFT\n", o->static_draft ? "static" : "no-spec");
        return 1;
    }
    if (strcmp(o->source_name, "suffix") == 0) { // model-free: nothing to load, serve or train but the suffix index
        if (o->static_draft || o->no_spec || o->online || o->draft_init || o->save_draft) {
            fprintf(stderr, "error: --source suffix drafts without a model; drop --online, --static, --no-spec, "
                    "--draft-init and --save-draft\n");
            return 1;
        }
        o->mode = "suffix";
    }
    if (o->load < 1.0f && o->lockstep_every > 0) {
        fprintf(stderr, "error: --load %g makes an online trainer train in the gaps between requests; --sync-schedule "
                "trains in lockstep with serving instead: drop one of them\n", o->load);
        return 1;
    }
    if (strcmp(o->mode, "none") == 0 && strcmp(o->source_name, "eagle") != 0) {
        fprintf(stderr, "error: --no-spec drafts nothing; drop --source %s\n", o->source_name);
        return 1;
    }
    o->draft = o->static_draft ? o->static_draft : o->draft_init ? o->draft_init : REPLAY_DEFAULT_DRAFT_INIT;
    if (replay_check_flags(o) != 0 || sampling_filters_check(o) != 0) { return 1; }
    // a lockstep round trains on the pool after its requests: a pool smaller than the round would drop the
    // round's oldest records before any step drew them
    if (o->lockstep_every > o->pool_capacity) {
        fprintf(stderr, "error: --sync-schedule %d trains after every %d requests, on the records in the pool; --pool %d "
                "holds the newest %d, so %d of each round's records would be dropped untrained: give --pool %d or more\n",
                o->lockstep_every, o->lockstep_every, o->pool_capacity, o->pool_capacity,
                o->lockstep_every - o->pool_capacity, o->lockstep_every);
        return 1;
    }
    o->train.loss = loss_kind_from_name(o->loss_name);
    resolve_tree_shape(o);
    Error err;
    if (tree_shape_check(o->shape, &err) != 0) { return fail(&err); }
    const Backend* backend = resolve_backend(o);
    if (backend == NULL || resolve_train_precision(o, backend) != 0 || run_check_outputs(o, o->save_draft, "--save-draft") != 0) {
        return 1;
    }
    return replay_run(o);
}

// train's defaults: replay's, and the temperature of --self-samples (the target's own distribution)
static void train_defaults(Options* o) {
    *o = replay_default_options();
    o->sampling.temperature = 1.0f;
    o->sample_length = 224;
    o->context = 0;   // train_offline chooses: replay's, or with --self-samples enough for --parallel samples
}

static int command_train(Options* o) {
    if ((o->traffic_path != NULL) == (o->self_samples > 0)) {
        fprintf(stderr, "error: train needs its data from exactly one of --traffic FILE (the target's outputs for those "
                "prompts) and --self-samples N (the target's own text); %s\n", o->traffic_path ? "both were given" : "neither was given");
        return 1;
    }
    if (o->self_samples > 0 && (o->domain || o->requests > 0)) {
        fprintf(stderr, "error: %s selects requests of --traffic; --self-samples N already says how many samples\n",
                o->domain ? "--domain" : "--requests");
        return 1;
    }
    if (o->self_samples > 0 && o->sampling.temperature <= 0.0f) {
        fprintf(stderr, "error: --self-samples needs --temp above 0: greedy draws from one start token are all the same\n");
        return 1;
    }
    Options d;
    train_defaults(&d);
    if (o->self_samples == 0 && (o->sampling.temperature != d.sampling.temperature || o->sample_length != d.sample_length)) {
        fprintf(stderr, "error: --temp and --sample-length shape the samples of --self-samples; the outputs for --traffic "
                "are the target's greedy ones: drop them\n");
        return 1;
    }
    o->draft = o->draft_init ? o->draft_init : REPLAY_DEFAULT_DRAFT_INIT;
    if (draft_vocab_check(o, o->draft) != 0) { return 1; }
    o->train.loss = loss_kind_from_name(o->loss_name);
    const Backend* backend = resolve_backend(o);
    if (backend == NULL || resolve_train_precision(o, backend) != 0 || run_check_outputs(o, o->out_path, "-o") != 0) { return 1; }
    return train_offline(o);
}

static void run_defaults(Options* o) { *o = replay_default_options(); }

static void draft_export_defaults(Options* o) { o->dtype = "f32"; }

static int command_draft_export(Options* o) {
    int type = strcmp(o->dtype, "bf16") == 0 ? TYPE_BF16 : TYPE_F32;
    int format = strcmp(o->format, "llama.cpp") == 0 ? DRAFT_FORMAT_LLAMA_CPP
               : strcmp(o->format, "specforge") == 0 ? DRAFT_FORMAT_SPECFORGE : DRAFT_FORMAT_AURORA;
    if (format == DRAFT_FORMAT_AURORA && type != TYPE_F32) {
        fprintf(stderr, "error: --format aurora writes f32 only (got --dtype %s)\n", o->dtype);
        return 1;
    }
    const char* inputs[2] = {o->model_path, o->draft};
    const char* input_flags[2] = {"-m", "--draft"};
    Error err;
    Target target;
    Draft draft;
    if (load_target(&target, o, &backend_cpu_ref, MODEL_ONLY_CONTEXT, 1) != 0) { return 1; }
    if (draft_load(&draft, o->draft, &target, &err) != 0) { target_free(&target); return fail(&err); }
    int status = 0, created = 0;   // (directories made here: removed again if the export fails)
    if (format == DRAFT_FORMAT_SPECFORGE) {
        // a directory (made now that the inputs are read) whose two files are written: neither may be an input
        size_t n = strlen(o->out_path) + 32;
        char* weights = mallocCheck(n);
        char* config = mallocCheck(n);
        snprintf(weights, n, "%s/model.safetensors", o->out_path);
        snprintf(config, n, "%s/config.json", o->out_path);
        status = make_directories_counted(o->out_path, &created, &err) != 0 ? fail(&err)
               : check_output(weights, "-o", inputs, input_flags, 2, 0) != 0 ? 1
               : check_output(config, "-o", inputs, input_flags, 2, 0);
        free(weights);
        free(config);
    } else {
        status = check_output(o->out_path, "-o", inputs, input_flags, 2, 1);
    }
    if (status == 0) {
        status = format == DRAFT_FORMAT_LLAMA_CPP ? draft_export_llama_cpp(&draft, &target, o->out_path, type, &err)
               : format == DRAFT_FORMAT_SPECFORGE ? draft_export_specforge(&draft, &target, o->out_path, type, &err)
               : draft_save(&draft, o->out_path, &err);
        if (status != 0) { fail(&err); }
    }
    if (status != 0 && created > 0) { remove_directories(o->out_path, created); }
    if (status == 0) {
        fprintf(stderr, "wrote %s: %s, %s, draft vocabulary %d of %d, feature layers %d, %d, %d (outputs)\n", o->out_path,
                format == DRAFT_FORMAT_LLAMA_CPP ? "llama.cpp eagle3 GGUF"
                : format == DRAFT_FORMAT_SPECFORGE ? "SpecForge directory (model.safetensors + config.json)" : "our GGUF checkpoint",
                type == TYPE_F32 ? "F32" : "BF16", draft.config.vocab_size, target.config.vocab_size,
                target.config.tap_layers[0], target.config.tap_layers[1], target.config.tap_layers[2]);
    }
    draft_free(&draft);
    target_free(&target);
    return status == 0 ? 0 : 1;
}

static int command_plot(Options* o) {
    return plot_runs(o->out_path, o->title, o->positional, o->n_positional);
}

// aurora dump: every named intermediate of a request, to check other implementations against (it uses the
// command helpers above, so it is included here)
#include "interop/dump.c"

static const Command COMMANDS[] = {
    {"generate", "generate -m MODEL (-p PROMPT | -f FILE) [options]", "generate text from a prompt",
     "  prints the generated text (or ids) on stdout and speed figures on stderr",
     "model prompt file n-predict temp top-p top-k min-p seed chat verbose-prompt print-ids device no-blas backend context batch draft hybrid "
     "spec-k spec-depth spec-nodes spec-fixed draft-vocab draft-type", "model", 0, 0, NULL, generate_defaults, command_generate},
    {"tokenize", "tokenize -m MODEL [--special] TEXT", "print the token ids of a text",
     "  prints the token ids of TEXT, space-separated, on one line", "model special", "model", 1, 1, "TEXT argument",
     no_defaults, command_tokenize},
    {"logits", "logits -m MODEL (-p PROMPT | -f FILE) [options]", "print the largest final-position logits of a prompt",
     "  prints the K largest final-position logits as 'id logit' lines, largest first",
     "model prompt file top chat no-blas backend context batch device", "model", 0, 0, NULL, generate_defaults, command_logits},
    {"info", "info -m MODEL", "print a model's configuration and tensor table", NULL, "model", "model", 0, 0, NULL,
     no_defaults, command_info},
    {"tiny-model", "tiny-model -o FILE [options]", "write a small model with seeded random weights",
     "  a Llama model with seeded random weights and a small byte-level BPE tokenizer (for tests, experiments\n"
     "  and CPU/GPU parity checks)", "out dim layers heads kv-heads ffn vocab model-context type untied seed", "out",
     0, 0, NULL, tiny_model_defaults, command_tiny_model},
    {"convert", "convert -m MODEL -o OUT --type TYPE", "rewrite a GGUF model with its matrices in another tensor type",
     "  every matrix stored as TYPE (vectors stay F32), the metadata unchanged; e.g. an F32 copy of a quantised\n"
     "  model for exact comparisons with llama.cpp", "model out type", "model out type", 0, 0, NULL, no_defaults,
     command_convert},
    {"draft-init", "draft-init -m MODEL -o DRAFT.gguf [options]", "write a fresh random EAGLE-3 draft for a model",
     "  a fresh EAGLE-3 draft for MODEL with seeded random weights", "model out seed draft-vocab", "model out", 0, 0,
     NULL, draft_init_defaults, command_draft_init},
    {"draft-export", "draft-export -m MODEL --draft DRAFT --format FORMAT -o OUT [--dtype f32|bf16]",
     "write a draft for llama.cpp or SpecForge / SGLang / vLLM",
     "  writes DRAFT (any of the three formats) for another system; --draft and --draft-init read all three",
     "model draft-file format out dtype", "model draft-file format out", 0, 0, NULL, draft_export_defaults,
     command_draft_export},
    {"replay", "replay -m MODEL --traffic FILE [options]",
     "serve a traffic file with speculative decoding, training the draft online",
     "  serves every request of FILE with speculative decoding and writes DIR/requests.csv, DIR/summary.txt and\n"
     "  DIR/acceptance.svg. Ctrl-C stops after the request in flight and saves everything (a second Ctrl-C exits).",
     "model traffic online static no-spec draft-init order domain requests from max-new out-dir label save-draft "
     "sync-every sync-schedule batch-requests buffer pool pool-sampling steps-per-request train-share load eval-every "
     "eval-requests lr warmup adam-beta2 clip "
     "ttt-length loss prompt-weight feature-weight train-precision context-window freeze-head adapt-vocab discard-weight discard-top-k source "
     "spec-k spec-depth "
     "spec-nodes spec-fixed temp top-p top-k min-p seed draft-vocab draft-type context batch parallel device backend",
     "model traffic", 0, 0, NULL, run_defaults, command_replay},
    {"train", "train -m MODEL (--traffic FILE | --self-samples N) -o DRAFT.gguf [options]",
     "train a draft offline on the target's outputs",
     "  trains a draft offline on the target's own greedy outputs for the traffic's prompts (the static baseline),\n"
     "  or, with --self-samples N and no traffic at all, on N samples of the target's own text, each continued\n"
     "  greedily (a warm start before the first request), with the same trainer as the online flywheel.\n"
     "  The target's states it records go to a file beside -o, its name removed at once and its space freed when\n"
     "  the run ends (about 1.2 MB a sample at --max-new 64: disk, not memory). Ctrl-C stops after the step in\n"
     "  flight and saves the draft.",
     "model traffic out domain requests self-samples sample-length temp max-new epochs draft-init lr warmup lr-schedule adam-beta2 clip "
     "ttt-length "
     "loss prompt-weight feature-weight train-precision context-window freeze-head adapt-vocab batch-requests seed draft-vocab context batch "
     "parallel device backend",
     "model out", 0, 0, NULL, train_defaults, command_train},
    {"dump", "dump -m MODEL (-p PROMPT | -f FILE) -o DUMP.safetensors [--draft DRAFT] [options]",
     "write every named intermediate of a request (draft, verify pass, acceptance, a trainer step) to one file",
     "  one safetensors file: the draft's weights (SpecForge names), a request generated greedily with speculative\n"
     "  decoding, its first verify pass in detail (every drafting call, the target's activations over the tree,\n"
     "  acceptance) and one trainer step on it (each TTT step's activations and loss, every gradient, the updated\n"
     "  weights); every name's meaning is in the file's metadata. Compare two with tools/compare_dump.py.",
     "model out prompt file chat n-predict seed draft spec-k spec-depth spec-nodes draft-vocab context batch backend lr warmup "
     "clip ttt-length loss prompt-weight context-window discard-weight discard-top-k", "model out", 0, 0, NULL,
     dump_defaults, command_dump},
    {"plot", "plot -o CHART.svg [--title T] RUN/requests.csv[:LABEL] ...", "draw several replays' acceptance on one chart",
     "  acceptance length per request of one or more replays on one chart (a self-contained SVG): faint dots per\n"
     "  request, a moving average over 25 requests per run, dashed lines where the first run's domain changes.\n"
     "  LABEL names a run in the legend (default: the CSV file's directory name).", "out title", "out", 1, 1 << 20,
     "RUN/requests.csv", no_defaults, command_plot},
};
enum { N_COMMANDS = sizeof(COMMANDS) / sizeof(COMMANDS[0]) };

static void print_commands(FILE* stream) {
    fprintf(stream, "usage: aurora <command> [options]\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) { fprintf(stream, "  %-11s %s\n", COMMANDS[i].name, COMMANDS[i].summary); }
    fprintf(stream, "run 'aurora <command> --help' for the options of a command\n");
}

// The whole program: returns the exit status (tests call it with argv as the shell would).
static int aurora_main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "error: missing command\n");
        print_commands(stderr);
        return 1;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) { print_commands(stdout); return 0; }
    for (int i = 0; i < N_COMMANDS; i++) {
        const Command* command = &COMMANDS[i];
        if (strcmp(argv[1], command->name) != 0) { continue; }
        Options o;
        memset(&o, 0, sizeof(o));
        command->defaults(&o);
        int status = parse_flags(command, argc - 2, argv + 2, &o);
        if (status == 0) { status = command->run(&o); }
        else if (status < 0) { status = 0; } // --help
        free(o.positional);
        free(o.prompt_owned);
        return status;
    }
    fprintf(stderr, "error: unknown command '%s'\n", argv[1]);
    print_commands(stderr);
    return 1;
}

#ifndef TESTING
int main(int argc, char** argv) {
    // a write past a file-size limit (ulimit -f) must fail as a write error, not kill the process
    signal(SIGXFSZ, SIG_IGN);
    exit_signals_install();   // an interrupt removes the temporary files (replay and train stop more gently)
    int status = aurora_main(argc, argv);
    // what went to the standard output (info, tokenize, logits, generate's text) must have arrived: a full
    // disk or a file-size limit there is an error, not an exit status 0 over a truncated result
    if ((fflush(stdout) != 0 || ferror(stdout)) && status == 0) {
        fprintf(stderr, "error: writing the standard output failed: %s\n", errno ? strerror(errno) : "a write error");
        status = 1;
    }
    return status;
}
#endif
