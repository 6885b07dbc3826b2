#!/bin/sh
# experiments.sh: the flywheel experiments of SPEC section 8, one command each, on the default model.
# usage: sh tools/experiments.sh day0|shift|mixed [REQUESTS]
#   day0   a fresh draft (INIT=target: random layer, the target's LM head; INIT=random) trained online
#          from the traffic it serves; acceptance length against requests, then the last quarter of the
#          requests again with plain decoding and with the trained draft frozen: the speedup
#   shift  a static draft (trained offline on domain c) against the same draft trained online, on a stream
#          ordered by domain (c, python, prose, shell)
#   mixed  online from scratch against the static draft on a mixed stream
# Outputs go to out/<experiment>/: each run's requests.csv, summary.txt, acceptance.svg, and a chart of
# the runs together. Sizes default to what a 2-core CPU does in minutes; pass REQUESTS for longer runs.
set -eu
AURORA=${AURORA:-./aurora}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
TRAFFIC=${TRAFFIC:-traffic/default.jsonl}
MAX_NEW=${MAX_NEW:-32}
TRAIN="--lr 3e-3 --warmup 5"
experiment=${1:-day0}
out=out/$experiment
mkdir -p "$out"

case "$experiment" in
day0)
    N=${2:-48}
    LAST=$(( N / 4 > 8 ? N / 4 : 8 ))
    "$AURORA" replay -m "$MODEL" --traffic "$TRAFFIC" --order mixed --online --draft-init "${INIT:-target}" \
        --requests "$N" --max-new "$MAX_NEW" $TRAIN --save-draft "$out/online.gguf" --out "$out/online" --label "online (day 0)"
    # the last requests of the same stream again: plain decoding, and the trained draft frozen: the speedup
    FROM=$(( N - LAST ))
    "$AURORA" replay -m "$MODEL" --traffic "$TRAFFIC" --order mixed --no-spec --from "$FROM" --requests "$LAST" \
        --max-new "$MAX_NEW" --out "$out/plain" --label plain > /dev/null 2>&1
    "$AURORA" replay -m "$MODEL" --traffic "$TRAFFIC" --order mixed --static "$out/online.gguf" --from "$FROM" \
        --requests "$LAST" --max-new "$MAX_NEW" --out "$out/learned" --label "learned draft" > /dev/null 2>&1
    speed() { awk -F, 'NR > 1 && $9 == "served" { tokens += $4; seconds += $7 } END { printf "%.3f", tokens / seconds }' "$1"; }
    acceptance() { awk -F, 'NR > 1 && $9 == "served" { a += $6; n++ } END { printf "%.3f", a / n }' "$1"; }
    plain=$(speed "$out/plain/requests.csv")
    learned=$(speed "$out/learned/requests.csv")
    awk -v plain="$plain" -v learned="$learned" -v last="$LAST" -v a="$(acceptance "$out/learned/requests.csv")" 'BEGIN {
        printf "the last %d requests again: plain decoding %.2f tok/s; the learned draft (frozen) %.2f tok/s, acceptance length %.2f: speedup %.2fx\n",
               last, plain, learned, a, learned / plain }' | tee "$out/speedup.txt"
    "$AURORA" plot -o "$out/acceptance.svg" --title "day 0: a draft learning online from the traffic it serves" \
        "$out/online/requests.csv:online (day 0)"
    ;;
shift)
    N=${2:-200}
    "$AURORA" train -m "$MODEL" --traffic "$TRAFFIC" --domain c --requests "${STATIC_REQUESTS:-100}" --epochs 2 \
        --max-new "$MAX_NEW" $TRAIN -o "$out/static-c.gguf"
    PER_DOMAIN=$(( N / 4 ))
    # an ordered stream with PER_DOMAIN requests of each domain
    python3 - "$TRAFFIC" "$PER_DOMAIN" > "$out/stream.jsonl" <<'PY'
import json, sys
path, per = sys.argv[1], int(sys.argv[2])
seen = {}
for line in open(path):
    d = json.loads(line)["domain"]
    seen[d] = seen.get(d, 0) + 1
    if seen[d] <= per: sys.stdout.write(line)
PY
    "$AURORA" replay -m "$MODEL" --traffic "$out/stream.jsonl" --order ordered --static "$out/static-c.gguf" \
        --max-new "$MAX_NEW" --out "$out/static" --label "static (trained on c)"
    "$AURORA" replay -m "$MODEL" --traffic "$out/stream.jsonl" --order ordered --online --draft-init "$out/static-c.gguf" \
        --max-new "$MAX_NEW" $TRAIN --out "$out/online" --label "online (from the static draft)"
    "$AURORA" plot -o "$out/acceptance.svg" --title "domain shift: c, python, prose, shell" \
        "$out/static/requests.csv:static" "$out/online/requests.csv:online"
    ;;
mixed)
    N=${2:-200}
    test -f out/shift/static-c.gguf || "$AURORA" train -m "$MODEL" --traffic "$TRAFFIC" --domain c \
        --requests "${STATIC_REQUESTS:-100}" --epochs 2 --max-new "$MAX_NEW" $TRAIN -o out/shift/static-c.gguf
    "$AURORA" replay -m "$MODEL" --traffic "$TRAFFIC" --order mixed --requests "$N" --static out/shift/static-c.gguf \
        --max-new "$MAX_NEW" --out "$out/static" --label "static (trained on c)"
    "$AURORA" replay -m "$MODEL" --traffic "$TRAFFIC" --order mixed --requests "$N" --online --draft-init random \
        --max-new "$MAX_NEW" $TRAIN --out "$out/online" --label "online from scratch"
    "$AURORA" plot -o "$out/acceptance.svg" --title "mixed stream: online from scratch against static" \
        "$out/static/requests.csv:static" "$out/online/requests.csv:online"
    ;;
*)
    echo "usage: sh tools/experiments.sh day0|shift|mixed [REQUESTS]" >&2
    exit 1
    ;;
esac
echo "wrote $out/"
