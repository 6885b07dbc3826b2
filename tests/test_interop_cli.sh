#!/bin/sh
# test_interop_cli.sh: `aurora draft-export` and drafts in other systems' formats through the CLI, on a
# project-made tiny model: exports round-trip byte for byte, generate / replay / train take every format
# with the same results, and every bad input is a clear error with exit status 1, never a crash.
# usage: sh tests/test_interop_cli.sh ./aurora
set -u
AURORA=${1:-./aurora}
. "$(dirname "$0")/cli_common.sh"   # $work, pass/fail, expect_ok, expect_error, expect_status

# 8 layers: the taps 1, 3, 4 are distinct
model="$work/tiny.gguf"
expect_ok "tiny-model" "$AURORA" tiny-model -o "$model" --layers 8 --untied --vocab 400 --seed 5
expect_ok "draft-init" "$AURORA" draft-init -m "$model" -o "$work/draft.gguf" --draft-vocab 300 --seed 9
expect_ok "draft-export --help" "$AURORA" draft-export --help

# ---- exports, and back to our format byte for byte
expect_ok "export llama.cpp" "$AURORA" draft-export -m "$model" --draft "$work/draft.gguf" --format llama.cpp -o "$work/draft.llama.gguf"
grep -q "llama.cpp eagle3 GGUF, F32, draft vocabulary 300 of 400, feature layers 1, 3, 4" "$work/err" && pass || fail "export summary: $(cat "$work/err")"
expect_ok "export specforge" "$AURORA" draft-export -m "$model" --draft "$work/draft.gguf" --format specforge -o "$work/draft.specforge"
[ -s "$work/draft.specforge/model.safetensors" ] && [ -s "$work/draft.specforge/config.json" ] && pass || fail "specforge files"
expect_ok "export specforge bf16" "$AURORA" draft-export -m "$model" --draft "$work/draft.gguf" --format specforge --dtype bf16 -o "$work/bf16.specforge"
grep -q '"torch_dtype": "bfloat16"' "$work/bf16.specforge/config.json" && pass || fail "bf16 config"
for format in llama specforge; do
    source="$work/draft.llama.gguf"; [ "$format" = specforge ] && source="$work/draft.specforge"
    expect_ok "import $format" "$AURORA" draft-export -m "$model" --draft "$source" --format aurora -o "$work/back.$format.gguf"
    cmp -s "$work/draft.gguf" "$work/back.$format.gguf" && pass || fail "$format round trip is not byte-identical"
done
expect_ok "llama.cpp -> specforge" "$AURORA" draft-export -m "$model" --draft "$work/draft.llama.gguf" --format specforge -o "$work/across"
cmp -s "$work/draft.specforge/model.safetensors" "$work/across/model.safetensors" && pass || fail "llama.cpp -> SpecForge differs"
cmp -s "$work/draft.specforge/config.json" "$work/across/config.json" && pass || fail "llama.cpp -> SpecForge config differs"

# ---- generate: every format gives the same tokens and the same acceptance
expect_ok "generate --draft ours" "$AURORA" generate -m "$model" -p "the cat sat" -n 24 --print-ids --draft "$work/draft.gguf" --spec-k 2 --spec-depth 3 --spec-fixed
cp "$work/out" "$work/ids.ours"
grep -v "seconds\|tokens/s\|resident memory" "$work/err" > "$work/stats.ours"
for source in "$work/draft.llama.gguf" "$work/draft.specforge" "$work/draft.specforge/model.safetensors"; do
    expect_ok "generate --draft $source" "$AURORA" generate -m "$model" -p "the cat sat" -n 24 --print-ids --draft "$source" --spec-k 2 --spec-depth 3 --spec-fixed
    cmp -s "$work/out" "$work/ids.ours" && pass || fail "generate with $source gives other tokens"
    grep -v "seconds\|tokens/s\|resident memory" "$work/err" | sed "s|$source|DRAFT|" > "$work/stats.other"
    sed "s|$work/draft.gguf|DRAFT|" "$work/stats.ours" | cmp -s - "$work/stats.other" && pass || fail "generate with $source: other statistics"
done

# ---- replay and train start from a SpecForge directory or a llama.cpp file
traffic=traffic/sample.jsonl
[ -f "$traffic" ] || traffic="$(dirname "$0")/../traffic/sample.jsonl"
expect_ok "replay --draft-init specforge" "$AURORA" replay -m "$model" --traffic "$traffic" --requests 2 --max-new 8 \
    --draft-init "$work/draft.specforge" --save-draft "$work/replayed.gguf" --out "$work/replay"
expect_ok "train --draft-init llama.cpp" "$AURORA" train -m "$model" --traffic "$traffic" --requests 2 --max-new 8 \
    --draft-init "$work/draft.llama.gguf" -o "$work/trained.gguf"
expect_ok "export the trained draft" "$AURORA" draft-export -m "$model" --draft "$work/trained.gguf" --format specforge -o "$work/trained.specforge"

# ---- bad inputs: exit status 1 and a message
expect_error "no --format" "missing --format" "$AURORA" draft-export -m "$model" --draft "$work/draft.gguf" -o "$work/x"
expect_error "bad --format" "--format expects" "$AURORA" draft-export -m "$model" --draft "$work/draft.gguf" --format onnx -o "$work/x"
expect_error "bad --dtype" "--dtype expects" "$AURORA" draft-export -m "$model" --draft "$work/draft.gguf" --format specforge --dtype f8 -o "$work/x"
expect_error "no -o" "missing -o" "$AURORA" draft-export -m "$model" --draft "$work/draft.gguf" --format specforge
expect_error "unknown flag" "unknown flag '--fast'" "$AURORA" draft-export -m "$model" --draft "$work/draft.gguf" --format specforge -o "$work/x" --fast
expect_error "missing draft" "no-such" "$AURORA" draft-export -m "$model" --draft "$work/no-such" --format specforge -o "$work/x"
"$AURORA" tiny-model -o "$work/other.gguf" --layers 8 --dim 32 --vocab 400 > /dev/null 2>&1
expect_error "draft for another target" "expected the target's width 32" "$AURORA" draft-export -m "$work/other.gguf" --draft "$work/draft.specforge" --format aurora -o "$work/x"

mkdir -p "$work/broken"
cp "$work/draft.specforge/config.json" "$work/broken/config.json"
head -c 1000 "$work/draft.specforge/model.safetensors" > "$work/broken/model.safetensors"
expect_error "truncated safetensors" "model.safetensors: header length" "$AURORA" generate -m "$model" -p x -n 2 --draft "$work/broken"
size=$(wc -c < "$work/draft.specforge/model.safetensors")
head -c $((size - 100)) "$work/draft.specforge/model.safetensors" > "$work/broken/model.safetensors"
expect_error "truncated safetensors data" "truncated" "$AURORA" generate -m "$model" -p x -n 2 --draft "$work/broken"
cp "$work/draft.specforge/model.safetensors" "$work/broken/model.safetensors"
sed 's/"num_hidden_layers": 1/"num_hidden_layers": 2/' "$work/draft.specforge/config.json" > "$work/broken/config.json"
expect_error "two-layer config" "num_hidden_layers' is 2" "$AURORA" replay -m "$model" --traffic "$traffic" --requests 1 --draft-init "$work/broken" --out "$work/x"
printf '{"hidden_size": 64,' > "$work/broken/config.json"
expect_error "cut config.json" "config.json:1:" "$AURORA" generate -m "$model" -p x -n 2 --draft "$work/broken"
rm "$work/broken/config.json"
expect_error "no config.json" "config.json: cannot open" "$AURORA" generate -m "$model" -p x -n 2 --draft "$work/broken"
head -c 5000 "$work/draft.llama.gguf" > "$work/cut.gguf"
expect_error "truncated llama.cpp GGUF" "cut.gguf" "$AURORA" generate -m "$model" -p x -n 2 --draft "$work/cut.gguf"

# ---- aurora dump (the numpy checks of its contents are make test-oracle's): deterministic, read back by our
# own safetensors reader (through the SpecForge import, which refuses anything malformed: here a dump is not a
# draft, so it must say which tensor is missing), every draft format gives the same tensors, bad inputs
for source in "$work/draft.gguf" "$work/draft.llama.gguf" "$work/draft.specforge"; do
    name=$(basename "$source")
    expect_ok "dump with $name" "$AURORA" dump -m "$model" --draft "$source" -p "the cat sat" -n 8 --spec-k 2 --spec-depth 2 -o "$work/dump.$name.safetensors"
done
expect_ok "dump again" "$AURORA" dump -m "$model" --draft "$work/draft.gguf" -p "the cat sat" -n 8 --spec-k 2 --spec-depth 2 -o "$work/dump.again.safetensors"
cmp -s "$work/dump.draft.gguf.safetensors" "$work/dump.again.safetensors" && pass || fail "two identical dumps differ"
# the files differ only in the header's metadata (the draft's path): everything after the header (8 bytes of
# its length, little-endian, then the JSON header) is the same, the imported weights included
data_section() {   # FILE OUT: the data section of a safetensors file
    header=$(od -An -t u8 -N 8 "$1" | tr -d ' ')
    tail -c +$((8 + header + 1)) "$1" > "$2"
}
data_section "$work/dump.draft.gguf.safetensors" "$work/data.ours"
[ -s "$work/data.ours" ] && pass || fail "the dump's data section is empty"
for name in draft.llama.gguf draft.specforge; do
    data_section "$work/dump.$name.safetensors" "$work/data.$name"
    cmp -s "$work/data.$name" "$work/data.ours" && pass || fail "dump with $name: other values"
done
mkdir -p "$work/dump_as_draft"
cp "$work/draft.specforge/config.json" "$work/dump_as_draft/config.json"
cp "$work/dump.draft.gguf.safetensors" "$work/dump_as_draft/model.safetensors"
expect_error "a dump is not a draft" "fc.weight" "$AURORA" generate -m "$model" -p x -n 2 --draft "$work/dump_as_draft"
expect_error "dump: --draft self" "dump needs an EAGLE-3 draft" "$AURORA" dump -m "$model" --draft self -p x -o "$work/x.safetensors"
expect_error "dump: -o is -m" "is the same file as -m" "$AURORA" dump -m "$model" -p x -o "$model"
expect_error "dump: bad --backend" "--backend expects" "$AURORA" dump -m "$model" -p x -o "$work/x.safetensors" --backend gpu
expect_error "dump: no -p" "missing -p" "$AURORA" dump -m "$model" -o "$work/x.safetensors"
expect_error "dump: a tree wider than --batch" "raise --context" "$AURORA" dump -m "$model" -p x -o "$work/x.safetensors" --spec-k 4 --spec-depth 4 --batch 4

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
