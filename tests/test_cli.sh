#!/bin/sh
# test_cli.sh: the command-line interface end to end on a project-made tiny model: every command works,
# and every bad input (flag, file, prompt) gives a clear error and exit status 1, never a crash.
# usage: sh tests/test_cli.sh ./aurora
set -u
AURORA=${1:-./aurora}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }

# expect_ok DESCRIPTION COMMAND...: exit status 0
expect_ok() {
    description=$1; shift
    if "$@" > "$work/out" 2> "$work/err"; then pass; else fail "$description (exit $?): $(cat "$work/err")"; fi
}

# expect_error DESCRIPTION PATTERN COMMAND...: exit status exactly 1 (not a signal) and PATTERN in stderr
expect_error() {
    description=$1; pattern=$2; shift 2
    "$@" > "$work/out" 2> "$work/err"
    status=$?
    if [ "$status" -ne 1 ]; then fail "$description: exit status $status, expected 1"; return; fi
    if grep -q -- "$pattern" "$work/err"; then pass; else fail "$description: stderr lacks '$pattern': $(cat "$work/err")"; fi
}

model="$work/tiny.gguf"
expect_ok "tiny-model" "$AURORA" tiny-model -o "$model" --seed 3
expect_ok "tiny-model q4_1 untied" "$AURORA" tiny-model -o "$work/tiny_q41.gguf" --type q4_1 --untied --ffn 64

# ---- the commands work
expect_ok "top-level --help" "$AURORA" --help
for command in generate tokenize logits info tiny-model convert draft-init replay train plot; do
    expect_ok "$command --help" "$AURORA" "$command" --help
done
expect_ok "info" "$AURORA" info -m "$model"
grep -q "dim 64, layers 4, heads 4, kv heads 2" "$work/out" && pass || fail "info does not print the config"
grep -q "blk.3.ffn_down.weight" "$work/out" && pass || fail "info does not print the tensor table"

expect_ok "tokenize" "$AURORA" tokenize -m "$model" "hello world"
ids=$(cat "$work/out")
echo "$ids" | grep -E -q '^[0-9]+( [0-9]+)*$' && pass || fail "tokenize output '$ids' is not space-separated ids"
expect_ok "tokenize --special" "$AURORA" tokenize -m "$model" --special "<|im_start|>hi"
[ "$(cut -d' ' -f1 "$work/out")" = "1" ] && pass || fail "--special should map <|im_start|> to id 1: $(cat "$work/out")"

expect_ok "generate --print-ids" "$AURORA" generate -m "$model" -p "the cat" -n 8 --print-ids
first=$(cat "$work/out")
[ "$(echo "$first" | wc -w)" -ge 1 ] && pass || fail "generate printed no ids"
grep -q "decode:.*tokens/s" "$work/err" && grep -q "prefill:.*tokens/s" "$work/err" && pass || fail "no speed report on stderr"
"$AURORA" generate -m "$model" -p "the cat" -n 8 --print-ids > "$work/out2" 2>/dev/null
cmp -s "$work/out" "$work/out2" && pass || fail "greedy generation is not repeatable"
"$AURORA" generate -m "$model" -p "the cat" -n 8 --print-ids --no-blas > "$work/out2" 2>/dev/null
cmp -s "$work/out" "$work/out2" && pass || fail "--no-blas changes the greedy output"
expect_ok "generate sampled" "$AURORA" generate -m "$model" -p "the cat" -n 8 --temp 0.9 --top-p 0.9 --seed 5 --print-ids
cp "$work/out" "$work/sampled"
"$AURORA" generate -m "$model" -p "the cat" -n 8 --temp 0.9 --top-p 0.9 --seed 5 --print-ids > "$work/out2" 2>/dev/null
cmp -s "$work/sampled" "$work/out2" && pass || fail "sampling with a fixed seed is not repeatable"
expect_ok "generate --chat text" "$AURORA" generate -m "$model" -p "hi" -n 4 --chat
expect_ok "logits --top 3" "$AURORA" logits -m "$model" -p "the cat" --top 3
[ "$(wc -l < "$work/out")" -eq 3 ] && pass || fail "logits --top 3 printed $(wc -l < "$work/out") lines"
expect_ok "generate on a q4_1 untied model" "$AURORA" generate -m "$work/tiny_q41.gguf" -p "abc" -n 4

# ---- speculative decoding: every draft source gives the plain greedy output, with statistics
"$AURORA" generate -m "$model" -p "the cat sat on the mat. the cat" -n 24 --print-ids > "$work/plain" 2>/dev/null
expect_ok "draft-init" "$AURORA" draft-init -m "$model" -o "$work/draft.gguf" --seed 4 --draft-vocab 200
for draft in self lookup random "$work/draft.gguf"; do
    for shape in "--spec-k 1 --spec-depth 5" "--spec-k 4 --spec-depth 3 --spec-nodes 9"; do
        expect_ok "generate --draft $draft $shape" "$AURORA" generate -m "$model" -p "the cat sat on the mat. the cat" -n 24 \
            --print-ids --draft "$draft" $shape
        cmp -s "$work/out" "$work/plain" && pass || fail "--draft $draft $shape: output differs from plain greedy"
        grep -q "acceptance length" "$work/err" && pass || fail "--draft $draft: no statistics on stderr"
    done
done
expect_ok "speculative sampling" "$AURORA" generate -m "$model" -p "abc" -n 16 --temp 0.8 --draft self --print-ids
expect_error "missing draft file" "$work/nope-draft.gguf" "$AURORA" generate -m "$model" -p x --draft "$work/nope-draft.gguf"
expect_error "a model is not a draft" "aurora-draft" "$AURORA" generate -m "$model" -p x --draft "$model"
expect_error "bad --spec-k" "--spec-k expects an integer" "$AURORA" generate -m "$model" -p x --draft self --spec-k 0
expect_error "bad --spec-nodes" "--spec-nodes expects an integer" "$AURORA" generate -m "$model" -p x --draft self --spec-nodes 65
expect_error "bad --draft-vocab" "larger than the target vocabulary" "$AURORA" draft-init -m "$model" -o "$work/d.gguf" --draft-vocab 100000
expect_error "draft-init without -o" "missing -o" "$AURORA" draft-init -m "$model"

# ---- the flywheel commands on the tiny model and the shipped sample traffic
traffic=traffic/sample.jsonl
[ -f "$traffic" ] || traffic="$(dirname "$0")/../traffic/sample.jsonl"
expect_ok "replay online (lockstep)" "$AURORA" replay -m "$model" --traffic "$traffic" --requests 6 --max-new 8 \
    --sync-schedule 2 --discard-weight 0.5 --spec-k 2 --spec-depth 3 --save-draft "$work/online.gguf" --out "$work/replay"
for file in requests.csv summary.txt acceptance.svg; do
    [ -s "$work/replay/$file" ] && pass || fail "replay did not write $file"
done
[ "$(wc -l < "$work/replay/requests.csv")" -eq 7 ] && pass || fail "requests.csv should have a header and 6 rows"
grep -q "optimiser steps" "$work/replay/summary.txt" && pass || fail "summary.txt lacks the training line"
expect_ok "replay online (thread)" "$AURORA" replay -m "$model" --traffic "$traffic" --requests 4 --max-new 8 --out "$work/threaded"
expect_ok "replay static" "$AURORA" replay -m "$model" --traffic "$traffic" --requests 3 --max-new 8 --static "$work/online.gguf" \
    --order ordered --from 2 --out "$work/static"
expect_ok "replay no-spec" "$AURORA" replay -m "$model" --traffic "$traffic" --requests 3 --max-new 8 --no-spec --domain c --out "$work/plain-replay"
expect_ok "train offline" "$AURORA" train -m "$model" --traffic "$traffic" --requests 4 --max-new 8 --epochs 2 -o "$work/trained.gguf"
expect_ok "generate with the trained draft" "$AURORA" generate -m "$model" -p "abc" -n 8 --draft "$work/trained.gguf"
expect_ok "plot" "$AURORA" plot -o "$work/chart.svg" "$work/replay/requests.csv:online" "$work/static/requests.csv"
grep -q "<svg" "$work/chart.svg" && pass || fail "plot did not write an SVG"
expect_error "replay without traffic" "missing --traffic" "$AURORA" replay -m "$model"
expect_error "replay bad order" "--order expects" "$AURORA" replay -m "$model" --traffic "$traffic" --order random
expect_error "replay unknown domain" "domain" "$AURORA" replay -m "$model" --traffic "$traffic" --domain klingon --out "$work/x"
printf '{"prompt": "ok"}\n{"prompt": 12}\n' > "$work/bad.jsonl"
expect_error "malformed traffic" "bad.jsonl:2" "$AURORA" replay -m "$model" --traffic "$work/bad.jsonl" --out "$work/x"
expect_error "replay bad loss" "--loss expects" "$AURORA" replay -m "$model" --traffic "$traffic" --loss l2
expect_error "train without -o" "expected -m MODEL" "$AURORA" train -m "$model" --traffic "$traffic"

# ---- bad flags
expect_error "no command" "usage" "$AURORA"
expect_error "unknown command" "unknown command" "$AURORA" frobnicate
expect_error "unknown flag" "unknown flag '--bogus'" "$AURORA" generate -m "$model" -p x --bogus
expect_error "missing model" "missing -m" "$AURORA" generate -p x
expect_error "missing prompt" "missing -p" "$AURORA" generate -m "$model"
expect_error "flag without value" "needs a value" "$AURORA" generate -m "$model" -p
expect_error "bad integer" "-n expects an integer" "$AURORA" generate -m "$model" -p x -n 12abc
expect_error "negative count" "-n expects an integer" "$AURORA" generate -m "$model" -p x -n -1
expect_error "bad temperature" "--temp expects a number" "$AURORA" generate -m "$model" -p x --temp hot
expect_error "bad top-p" "--top-p expects a number" "$AURORA" generate -m "$model" -p x --top-p 1.5
expect_error "bad device" "--device expects" "$AURORA" generate -m "$model" -p x --device tpu
expect_error "bad tensor type" "--type expects" "$AURORA" tiny-model -o "$work/x.gguf" --type q5_k
expect_error "tokenize without text" "expected exactly one TEXT" "$AURORA" tokenize -m "$model"

# ---- bad files
expect_error "missing file" "$work/nope.gguf" "$AURORA" info -m "$work/nope.gguf"
: > "$work/empty.gguf"
expect_error "empty file" "empty.gguf" "$AURORA" info -m "$work/empty.gguf"
printf 'NOTAGGUFFILE-------------------------' > "$work/magic.gguf"
expect_error "bad magic" "magic" "$AURORA" generate -m "$work/magic.gguf" -p x
size=$(wc -c < "$model")
for cut in 7 100 1000 $((size / 2)) $((size - 1)); do
    head -c "$cut" "$model" > "$work/truncated.gguf"
    expect_error "truncated at $cut bytes" "truncated.gguf" "$AURORA" generate -m "$work/truncated.gguf" -p x
done

# ---- an overlong prompt, and output already produced is kept when the context fills
long_prompt=$(awk 'BEGIN { for (i = 0; i < 300; i++) printf "word%d ", i }')
expect_error "overlong prompt" "context holds" "$AURORA" generate -m "$model" -p "$long_prompt" --context 64
expect_ok "generation stops at a full context" "$AURORA" generate -m "$model" -p "abc" -n 500 --context 32 --print-ids
[ "$(wc -w < "$work/out")" -ge 20 ] && pass || fail "a full context should still return the tokens generated so far"

# ---- CUDA requested where it cannot run (no GPU here, or a CPU-only build)
"$AURORA" generate -m "$model" -p x -n 2 --device cuda > "$work/out" 2> "$work/err"
status=$?
if [ "$status" -eq 0 ]; then pass  # a GPU is present and the CUDA path ran
elif [ "$status" -eq 1 ] && grep -q "device cuda" "$work/err"; then pass
else fail "--device cuda without a GPU: exit $status, stderr: $(cat "$work/err")"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
