#!/bin/sh
# bench.sh: `make bench`. Our CPU tables (tools/bench_speed.c) and llama.cpp (llama-bench, from
# `make oracle-llama-tools`) on the same GGUF file and an F32 copy of it, the same threads, in one run; then
# the summary, one `name value` line each. On a shared machine every figure is the fastest of several
# repetitions, and llama.cpp runs before and after our measurements (the better run counts).
#
# usage: sh tools/bench.sh AURORA BENCH_SPEED MODEL.gguf [LLAMA_BIN_DIR]
#   THREADS (default: the core count), BENCH_ROUNDS (default 5), BENCH_WORK (default build/bench: the F32 copy)
set -eu
AURORA=$1
BENCH_SPEED=$2
MODEL=$3
LLAMA_BIN=${4:-build/llama.cpp/bin}
THREADS=${THREADS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}   # (the cores this process may use)
ROUNDS=${BENCH_ROUNDS:-5}
WORK=${BENCH_WORK:-build/bench}
mkdir -p "$WORK"
F32="$WORK/$(basename "$MODEL" .gguf).F32.gguf"
if [ ! -f "$F32" ]; then
    "$AURORA" convert -m "$MODEL" -o "$F32" --type f32 2> "$WORK/convert.err" || { cat "$WORK/convert.err" >&2; exit 1; }
fi
export OMP_NUM_THREADS="$THREADS"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc --all) cores ($(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) usable); $THREADS threads for" \
     "everything; OpenMP waiting ${OMP_WAIT_POLICY:-libgomp's default}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model: $MODEL (F32 copy: $F32)"

# llama.cpp: prefill (128 tokens from an empty cache), decode (tg32) and batch passes of N tokens after 128 cached
LLAMA=""
if [ -x "$LLAMA_BIN/llama-bench" ]; then
    LLAMA="$LLAMA_BIN/llama-bench"
    llama() { # output file, model
        # (its messages kept beside the results, and shown when it fails: set -e ends the run there)
        "$LLAMA" -m "$2" -t "$THREADS" -p 128 -n 0 -d 0 -r 3 -o json > "$1.prefill" 2> "$1.err" || { cat "$1.err" >&2; exit 1; }
        "$LLAMA" -m "$2" -t "$THREADS" -p 1,2,4,6,8,12,16 -n 32 -d 128 -r 3 -o json > "$1.passes" 2> "$1.err" ||
            { cat "$1.err" >&2; exit 1; }
        "$LLAMA" -m "$2" -t "$THREADS" -p 0 -n 32 -d 1000 -r 3 -o json > "$1.long" 2> "$1.err" || { cat "$1.err" >&2; exit 1; }
    }
    llama "$WORK/llama_q_before" "$MODEL"
else
    echo "llama.cpp: $LLAMA_BIN/llama-bench not found (make oracle-llama-tools builds it); its rows are skipped"
fi

"$BENCH_SPEED" "$MODEL" "$ROUNDS" > "$WORK/ours.txt"
grep -v '^@ ' "$WORK/ours.txt"

if [ -n "$LLAMA" ]; then
    llama "$WORK/llama_q_after" "$MODEL"
    llama "$WORK/llama_f32" "$F32"
fi

# resident memory of `generate` on the model, the default table and the reference (fp32 weights)
"$AURORA" generate -m "$MODEL" -p "Explain speculative decoding:" -n 32 --print-ids 2> "$WORK/generate.err" > /dev/null
"$AURORA" generate -m "$MODEL" -p "Explain speculative decoding:" -n 4 --print-ids --backend ref 2> "$WORK/generate_ref.err" > /dev/null

"${PYTHON:-python3}" - "$WORK" "$LLAMA" <<'PY'
import json, os, re, sys
work, have_llama = sys.argv[1], sys.argv[2] != ""
ours = {}
for line in open(os.path.join(work, "ours.txt")):
    if line.startswith("@ "):
        key, value = line[2:].split()
        ours[key] = float(value)

def llama_runs(prefix):
    # {(n_prompt, n_gen, n_depth): seconds per test, fastest repetition} over the files of a prefix
    best = {}
    for suffix in ("prefill", "passes", "long"):
        path = prefix + "." + suffix
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            continue
        for r in json.load(open(path)):
            key = (r["n_prompt"], r["n_gen"], r["n_depth"])
            seconds = min(r["samples_ns"]) / 1e9
            best[key] = min(best.get(key, seconds), seconds)
    return best

def merge(*runs):
    out = {}
    for run in runs:
        for k, v in run.items():
            out[k] = min(out.get(k, v), v)
    return out

def resident(path):
    m = re.search(r"resident memory ([0-9.]+) MB \(peak ([0-9.]+) MB\)", open(path).read())
    return (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))

q = merge(llama_runs(os.path.join(work, "llama_q_before")), llama_runs(os.path.join(work, "llama_q_after"))) if have_llama else {}
f = llama_runs(os.path.join(work, "llama_f32")) if have_llama else {}
def decode_tps(run): return 32 / run[(0, 32, 128)] if (0, 32, 128) in run else float("nan")
def prefill_tps(run): return 128 / run[(128, 0, 0)] if (128, 0, 0) in run else float("nan")
def long_decode_tps(run): return 32 / run[(0, 32, 1000)] if (0, 32, 1000) in run else float("nan")

print("\ndecode: one token after 128 cached (llama.cpp: tg32 after 128); prefill: 128 tokens from an empty cache")
print("%-38s %12s %12s" % ("", "decode tok/s", "prefill tok/s"))
rows = [("aurora reference (fp32 weights)", "ref"), ("aurora OpenBLAS (fp32 weights)", "blas"),
        ("aurora fast, fp32 activations", "fast_exact"), ("aurora fast (default)", "fast")]
for label, key in rows:
    if key + "_decode_tps" in ours:
        print("%-38s %12.1f %12.1f" % (label, ours[key + "_decode_tps"], ours[key + "_prefill_tps"]))
if "fast_decode_run_tps" in ours:
    print("%-38s %12.1f %12s" % ("aurora fast, 32 steps in a row", ours["fast_decode_run_tps"], "-"))
if have_llama:
    print("%-38s %12.1f %12.1f" % ("llama.cpp, same file", decode_tps(q), prefill_tps(q)))
    print("%-38s %12.1f %12.1f" % ("llama.cpp, F32 copy", decode_tps(f), prefill_tps(f)))
    print("\ndecode after 1000 cached (llama.cpp: tg32 after 1000; its cache F16, ours F32), tok/s")
    print("%-38s %12.1f" % ("aurora fast (default)", ours.get("fast_decode_long_tps", float("nan"))))
    print("%-38s %12.1f" % ("aurora fast, 32 steps in a row", ours.get("fast_decode_long_run_tps", float("nan"))))
    print("%-38s %12.1f" % ("llama.cpp, same file", long_decode_tps(q)))
    print("\nverify cost: a pass over N tokens after 128 cached / one decode step")
    print("%-38s" % "N" + "".join("%7d" % n for n in (2, 4, 6, 8, 12, 16)))
    print("%-38s" % "aurora fast (chain, every row's logits)" + "".join("%6.2fx" % ours.get("verify%d_vs_decode" % n, float("nan")) for n in (2, 4, 6, 8, 12, 16)))
    for label, run in (("llama.cpp, same file (batch pass)", q), ("llama.cpp, F32 copy (batch pass)", f)):
        print("%-38s" % label + "".join("%6.2fx" % (run[(n, 0, 128)] / run[(1, 0, 128)]) if (n, 0, 128) in run and (1, 0, 128) in run
                                          else "     - " for n in (2, 4, 6, 8, 12, 16)))

now, peak = resident(os.path.join(work, "generate.err"))
ref_now, ref_peak = resident(os.path.join(work, "generate_ref.err"))
print("\nresident memory of `aurora generate` on this model: %.1f MB (peak %.1f MB); with --backend ref (fp32 copies "
      "of the weights): %.1f MB" % (now, peak, ref_peak))

nan = float("nan")
def ratio(a, b): return a / b if b == b and b != 0 and a == a else nan
summary = [
    # (ours: 32 steps one after another, as llama-bench's tg32, not the fastest single step)
    ("decode_vs_llamacpp", ratio(ours.get("fast_decode_run_tps", nan), decode_tps(q) if have_llama else nan)),
    ("prefill_vs_llamacpp", ratio(ours.get("fast_prefill_tps", nan), prefill_tps(q) if have_llama else nan)),
    ("decode_1000_vs_llamacpp", ratio(ours.get("fast_decode_long_run_tps", nan), long_decode_tps(q) if have_llama else nan)),
    ("verify6_vs_decode", ours.get("verify6_vs_decode", nan)),
    ("verify12_vs_decode", ours.get("verify12_vs_decode", nan)),
    ("verify12_matmul_floor_vs_decode", ours.get("verify12_matmul_floor_vs_decode", nan)),
    ("verify2_at_320_vs_decode", ours.get("verify2_at_320_vs_decode", nan)),
    ("verify6_at_320_vs_decode", ours.get("verify6_at_320_vs_decode", nan)),
    ("draft_step_vs_decode", ours.get("draft_step_vs_decode", nan)),
    ("draft_catch_up_vs_decode", ours.get("draft_catch_up_vs_decode", nan)),
    ("draft_step_cold_vs_decode", ours.get("draft_step_cold_vs_decode", nan)),
    ("draft_prompt_catch_up_vs_decode", ours.get("draft_prompt_catch_up_vs_decode", nan)),
    ("draft_prompt_catch_up_full_layer_vs_extend", ours.get("draft_prompt_catch_up_full_layer_vs_extend", nan)),
    ("draft_step_q4_1_vs_decode", ours.get("draft_step_q4_1_vs_decode", nan)),
    ("decode_after_draft_vs_back_to_back", ours.get("decode_after_draft_vs_back_to_back", nan)),
    ("random_draft_vs_plain", ours.get("random_requests_vs_plain", nan)),
    ("random_draft_rounds_vs_plain", ours.get("random_adaptive_vs_plain", nan)),
    ("self_draft_vs_plain", ours.get("self_adaptive_vs_plain", nan)),
    ("lookup_draft_vs_plain", ours.get("lookup_adaptive_vs_plain", nan)),
    ("random_fixed_vs_plain", ours.get("random_vs_plain", nan)),
    ("self_fixed_vs_plain", ours.get("self_vs_plain", nan)),
    ("lookup_fixed_vs_plain", ours.get("lookup_vs_plain", nan)),
    ("record_lanes_vs_one", ours.get("record_lanes_vs_one", nan)),
    ("decode_vs_memory_limit", ours.get("decode_vs_memory_limit", nan)),
    ("decode_vs_step_sized_limit", ours.get("decode_vs_step_sized_limit", nan)),
    ("decode_1000_vs_memory_limit", ours.get("decode_long_vs_memory_limit", nan)),
    ("resident_mb", peak),
]
print("\nsummary")
for name, value in summary:
    print("%s %.3f" % (name, value) if name != "resident_mb" else "%s %.1f" % (name, value))
PY
