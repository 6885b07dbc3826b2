#!/bin/sh
# bench.sh: prefill and decode speed on the default model, our reference path, our OpenBLAS path and
# llama.cpp (when llama-cpp-python is installed) side by side in one run, so the ratios are meaningful
# on a shared, noisy machine. usage: sh tools/bench.sh ./aurora MODEL.gguf
set -eu
AURORA=$1
MODEL=$2
N=${BENCH_TOKENS:-64}
PROMPT="Speculative decoding makes a large language model faster without changing its output. A small draft model guesses the next few tokens, and the large target model checks all of the guesses in a single forward pass. Every guess that matches what the target would have produced is kept for free, so the speedup depends on how often the draft is right. Explain how this works, step by step:"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "model: $MODEL, greedy, $N new tokens"

run() { # label, extra flags
    label=$1; shift
    "$AURORA" generate -m "$MODEL" -p "$PROMPT" -n "$N" --print-ids "$@" 2>&1 >/dev/null |
        awk -v label="$label" '/^prefill:/ { p = $2; ps = $7; gsub(/\(/, "", ps) }
                               /^decode:/  { d = $2; ds = $7; gsub(/\(/, "", ds) }
                               END { printf "%-22s prefill %4d tokens %8.1f tok/s   decode %4d tokens %7.2f tok/s\n", label, p, ps, d, ds }'
}
run "aurora reference" --no-blas
run "aurora OpenBLAS"

# speculative decoding, greedy, chain of depth 5 (N = 6): the ceiling (self), the model-free baseline
# (lookup) and the overhead floor (a random draft, which is never right)
spec() { # label, flags
    label=$1; shift
    "$AURORA" generate -m "$MODEL" -p "$PROMPT" -n "$N" --print-ids "$@" 2>&1 >/dev/null |
        awk -v label="$label" '/^speculative:/ { a = $7 } /^time:/ { s = $(NF-3); gsub(/\(/, "", s) }
                               END { printf "%-22s acceptance length %5.2f   %7.2f tok/s after prefill\n", label, a, s }'
}
spec "speculative: self" --draft self
spec "speculative: lookup" --draft lookup
spec "speculative: random" --draft random

python3 - "$MODEL" "$PROMPT" "$N" <<'PY'
import sys, time
try:
    from llama_cpp import Llama
except ImportError:
    print("llama.cpp: llama-cpp-python not installed (make oracle-deps); skipped")
    sys.exit(0)
model, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
import os
llm = Llama(model_path=model, n_ctx=1024, n_threads=os.cpu_count(), n_batch=512, verbose=False)
tokens = llm.tokenize(prompt.encode(), add_bos=False)
start = time.time(); llm.eval(tokens); prefill = time.time() - start
generated = 0
start = time.time()
for token in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0, reset=False):
    generated += 1
    if generated == n: break
decode = time.time() - start
# the first token comes from the prefill's logits; the rest are decode steps
print("%-22s prefill %4d tokens %8.1f tok/s   decode %4d tokens %7.2f tok/s" % (
    "llama.cpp (Q4_1 kernels)", len(tokens), len(tokens) / prefill, generated - 1, (generated - 1) / decode))
PY
