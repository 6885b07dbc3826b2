#!/bin/sh
# experiments.sh: the flywheel experiments of SPEC section 8 (and issue 10's study), one command each, on
# the default model. usage: sh tools/experiments.sh EXPERIMENT [REQUESTS]
#
#   day0     a fresh draft trained online from the traffic it serves (the demo at small sizes): the online
#            curve, the held-back curve (the served draft, frozen, on requests it never sees), then the
#            speedup: requests it never saw served by plain decoding and by the learned draft, frozen
#   shift    a stream ordered by domain (c, python, prose, shell): a static draft trained offline on c
#            against the same draft trained online
#   mixed    a mixed stream: online from scratch against the static draft
#   sources  a mixed stream: the learned draft (online), the suffix draft, and both (hybrid, online)
#   live     serving with the trainer running against plain decoding, on the same cores and requests:
#            plain decoding on every core and on one (the faster counts), then the learned draft online and
#            the hybrid online (adaptive shapes), each serving on one core while its trainer runs on the other,
#            then both again training in the gaps between requests at an offered load of LOAD (0.5): serving
#            and training each on every core, never at once; and at that load plain decoding (idle in the
#            gaps) and the hybrid with its start frozen (nothing trains); the runs at that load in a palindrome
#   sync     how often weights are published (--sync-every 1, 4, 16, 64) against adaptation and speed
#   discard  the discard loss off and on, at lookahead 5 and 10
#   ttt      the TTT unroll's length (1, 2, 3, 5) at equal time: day 0 online, threaded (the trainer beside
#            serving, as the day-0 run trains), one run after another on all cores; a shorter unroll is a
#            cheaper optimiser step, so more steps per request served
#   selfstart a draft trained on the target's own text before any traffic (train --self-samples), then day 0
#            from it against day 0 from the target's layer (lockstep), and each draft frozen on unseen requests
#   study    one lever at a time against a base configuration (lockstep, so runs compare exactly): learning
#            rate, warm-up, pool, steps per request, batch, TTT length, clipping, prompt-position weight,
#            warm starts, draft vocabulary and its adaptation, a frozen LM head, a wider context window
#            (LEVERS="base prompt-0 ...": only those runs)
# Environment: AURORA, MODEL, TRAFFIC, MAX_NEW (64), JOBS (runs at a time, 2), THREADS (OpenMP threads per
# run: 1 when JOBS > 1), AURORA_DEVICE (cuda: every replay and train runs on the GPU, --device cuda;
# empty or cpu: the CPU; make demo DEVICE=cuda sets it); selfstart: SELF_SAMPLES (500), EVAL_FROM (3100).
# Outputs: out/EXPERIMENT/RUN/{requests.csv,summary.txt,acceptance.svg,held_back.csv}
# and out/EXPERIMENT/*.svg, the runs on one chart. Acceptance is measured with chains of depth 5 (the
# papers' lookahead 5: --spec-fixed), speed with adaptive shapes.
set -eu
AURORA=${AURORA:-./aurora}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
TRAFFIC=${TRAFFIC:-traffic/default.jsonl}
MAX_NEW=${MAX_NEW:-64}
JOBS=${JOBS:-2}
DEVICE=${AURORA_DEVICE:-}
case "$DEVICE" in
    ""|cpu|cuda) ;;
    *) echo "error: AURORA_DEVICE=$DEVICE: expected cpu or cuda" >&2; exit 1 ;;
esac
# the cores this process may use (its CPU affinity, as a container's cpuset pins it; OpenMP's variables ignored,
# which GNU nproc would otherwise report back: `nproc --all` counted a 64-core host's cores in a 2-CPU container)
CORES=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
if [ -z "${THREADS:-}" ]; then THREADS=$([ "$JOBS" -gt 1 ] && echo 1 || echo "$CORES"); fi
export OMP_NUM_THREADS=$THREADS
experiment=${1:-day0}
out=out/$experiment
mkdir -p "$out"
rm -f "$out/.failed"   # (a run that fails marks it; finish stops the experiment there)

# the configuration the experiments use, from the study (docs/learning-study.md, 48 lockstep requests): the warm
# start target-layer, lr 5e-4 (threaded day 0 at 300 requests: 1.84 over the last 50 against 1.66 at 1e-3 and
# 1.74 at 2.5e-4; at 48 lockstep requests 1e-3 had beaten 3e-3 and 1e-2), and every prompt position up to 512
# at full weight (served acceptance over requests 25-48: 1.37 against 1.20 with 128 at half weight); the
# vocabulary follows the traffic; a TTT unroll of 2 steps (the `ttt` experiment: at equal time, threaded as
# online training runs, 2 beat 1, 3 and 5). These are replay's defaults too; they are spelled out here so that
# a run's flags say what it did.
# One is not: the trainer's precision. The experiments take bf16 products where the CPU has the instruction
# (auto: about 1.4 times the optimiser steps in the same time on AVX-512 BF16; fp32 elsewhere); replay's
# default stays fp32, the trainer every table runs alike and the oracle checks describe.
INIT=${INIT:-target-layer}
TRAIN=${TRAIN:---lr 5e-4 --warmup 5 --prompt-weight 1 --context-window 512 --ttt-length 2 --train-precision auto}
EVAL=${EVAL:---eval-every 50 --eval-requests 16}
LOOKAHEAD5="--spec-fixed --spec-k 1 --spec-depth 5"
# the study's base over N requests: lockstep after every request, 4 steps per request (replay's default), so
# runs are repeatable and fair between levers; mixed traffic, chains of depth 5, the held-back curve
lockstep_base() { echo "--order mixed --requests $1 --online --sync-schedule 1 $LOOKAHEAD5 $EVAL"; }

log() { echo "$(date +%H:%M:%S) $*" >&2; }

# run NAME FLAGS...: one replay into out/EXPERIMENT/NAME, its stderr in NAME.log; at most JOBS at a time. An
# earlier run's outputs there are removed first, and a run that fails stops the experiment at the next finish:
# replay replaces its files only when it succeeds, so a failed run would leave an earlier session's results
# (or its --save-draft file) to be read as this one's.
running=0
run() {
    name=$1; shift
    if [ "$running" -ge "$JOBS" ]; then finish; fi
    rm -rf "$out/$name"
    log "start $name"
    ( "$AURORA" replay -m "$MODEL" --traffic "$TRAFFIC" --max-new "$MAX_NEW" --out "$out/$name" --label "$name" ${DEVICE:+--device "$DEVICE"} "$@" \
        > "$out/$name.log" 2>&1 && log "done  $name" || { log "FAILED $name (see $out/$name.log)"; echo "$name" >> "$out/.failed"; } ) &
    running=$((running + 1))
}
finish() {
    wait
    running=0
    if [ -e "$out/.failed" ]; then log "stopped: $(tr '\n' ' ' < "$out/.failed")failed"; exit 1; fi
}

# mean acceptance of a run's served rows in [from, to) (1-based request rows), and its tokens/s: of whole
# requests (speed), or after each request's prefill (decode_speed: decoding alone, what speculation
# changes; the prefill is the same work)
acceptance() { awk -F, -v from="$2" -v to="$3" 'NR > 1 && $9 == "served" && NR - 1 > from && NR - 1 <= to { a += $6; n++ }
                                               END { printf "%.3f", n ? a / n : 0 }' "$1/requests.csv"; }
# (several runs' directories: their tokens over their seconds, together)
# (after the prefill, a request's first token, which its prefill made, is not counted)
tokens_per_second() { prefill=$1; shift; for d in "$@"; do cat "$d/requests.csv"; done |
                      awk -F, -v prefill="$prefill" '$1 != "request" && $9 == "served" { t += $4 - prefill; s += $7 - prefill * $10 }
                                                     END { printf "%.2f", s ? t / s : 0 }'; }
speed() { tokens_per_second 0 "$@"; }
decode_speed() { tokens_per_second 1 "$@"; }
# the last held-back point: all the set's tokens over all its passes (the chart's dashed curve), then the mean of
# each request's (how the served windows beside it count)
held_back() { awk -F, 'NR > 1 { last = $3; per = $4 } END { printf "%.3f (the mean per request %.3f)", last, per }' \
                  "$1/held_back.csv" 2>/dev/null || echo "-"; }
# (tables: the mean per request alone, as the served windows beside it count)
held_back_per_request() { awk -F, 'NR > 1 { per = $4 } END { printf "%.3f", per }' "$1/held_back.csv" 2>/dev/null || echo "-"; }
# a summary.txt line's first number after a label ("training: 512 optimiser steps" -> 512; "-" if absent)
summary_number() { sed -n "s/^$2 *\([0-9.]*\).*/\1/p" "$1/summary.txt" | head -1 | grep . || echo "-"; }
# mean acceptance of a run's served rows per window of W requests: "1.234 1.456 ..."
windows() { awk -F, -v w="$2" 'NR > 1 && $9 == "served" { i = int(n / w); a[i] += $6; c[i]++; n++ }
                               END { for (j = 0; j * w < n; j++) printf "%s%.3f", j ? " " : "", a[j] / c[j] }' "$1/requests.csv"; }
# per domain in stream order: "domain mean" lines of a run's served rows
domain_means() { awk -F, 'NR > 1 && $9 == "served" { if (!($2 in c)) order[k++] = $2; a[$2] += $6; c[$2]++ }
                          END { for (j = 0; j < k; j++) printf "%s %.3f %d\n", order[j], a[order[j]] / c[order[j]], c[order[j]] }' "$1/requests.csv"; }
# recovery after each domain shift of an ordered stream: the level before it (the mean of the last 50 served
# requests of the previous domain), and how many requests of the new domain pass before the trailing mean of
# 25 comes back within 10% of that level (0.9 x), or "not within N" (N: the domain's served requests)
recovery() { awk -F, 'NR > 1 && $9 == "served" {
        if ($2 != domain) {
            if (domain != "") {
                report(); m = n < 50 ? n : 50; pre = 0; for (j = n - m; j < n; j++) pre += v[j]; pre /= m; from = domain; shifted = 1
            }
            domain = $2; n = 0; back = 0
        }
        v[n++] = $6
        if (shifted && !back && n >= 25) { t = 0; for (j = n - 25; j < n; j++) t += v[j]; if (t / 25 >= 0.9 * pre) back = n }
    }
    function report() { if (shifted) printf "  %s -> %s: level before %.3f; within 10%% (a trailing mean of 25 >= %.3f) %s\n",
                                            from, domain, pre, 0.9 * pre, back ? "after " back " requests" : "not within its " n }
    END { report() }' "$1/requests.csv"; }

case "$experiment" in
day0)
    N=${2:-1000}
    run online --order mixed --online --draft-init "$INIT" --requests "$N" $TRAIN $EVAL $LOOKAHEAD5 \
        --save-draft "$out/online.gguf"
    finish
    # the speedup on requests the draft never saw: the stream after the first N, plain and learned (frozen,
    # adaptive shapes), served one after the other on every core, as a user serves with a frozen draft: the
    # same conditions for both (SPEEDUP_THREADS=1 serves on one core, as the online run served while its
    # trainer had the other: on the 2-core EPYC the same ratios, 1.04x and 1.11x, and 42 s longer; `live`
    # measures serving with the trainer running)
    # (the held-back set came out of the stream, so the first N served requests reach a little past N: start
    # after N + 16, the most held back)
    M=${SPEEDUP_REQUESTS:-40}
    FROM=$((N + 16))
    JOBS=1
    OMP_NUM_THREADS=${SPEEDUP_THREADS:-$CORES}
    # A shared machine drifts by several percent within a minute (plain decoding 142 then 168 tok/s in one
    # demo), so the runs go in a palindrome, plain, learned, hybrid, hybrid, learned, plain: each kind's
    # runs are centred on the same moment and a steady drift cancels. Each figure is over both of its runs;
    # plain's two are printed apart too (their gap is the noise).
    run plain --order mixed --no-spec --from "$FROM" --requests "$M"
    finish
    run learned --order mixed --static "$out/online.gguf" --from "$FROM" --requests "$M"
    finish
    run learned-hybrid --order mixed --static "$out/online.gguf" --source hybrid --from "$FROM" --requests "$M"
    finish
    run learned-hybrid-2 --order mixed --static "$out/online.gguf" --source hybrid --from "$FROM" --requests "$M"
    finish
    run learned-2 --order mixed --static "$out/online.gguf" --from "$FROM" --requests "$M"
    finish
    run plain-after --order mixed --no-spec --from "$FROM" --requests "$M"
    finish
    {
        echo "day 0 over $N requests (mixed traffic, max-new $MAX_NEW, chains of depth 5, warm start $INIT)"
        echo "  online acceptance, all $N requests: $(acceptance "$out/online" 0 "$N")"
        for w in 50 100 200 300 500 1000; do
            [ "$w" -le "$N" ] && echo "  online acceptance, requests $((w - 49))-$w (moving average of 50): $(acceptance "$out/online" $((w - 50)) "$w")"
        done
        echo "  held-back acceptance at the end: $(held_back "$out/online")"
        for measure in speed decode_speed; do
            before=$($measure "$out/plain"); after=$($measure "$out/plain-after"); plain=$($measure "$out/plain" "$out/plain-after")
            learned=$($measure "$out/learned" "$out/learned-2"); hybrid=$($measure "$out/learned-hybrid" "$out/learned-hybrid-2")
            what=$([ "$measure" = speed ] && echo "whole requests" || echo "after the prefill")
            awk -v p="$plain" -v b="$before" -v a="$after" -v l="$learned" -v h="$hybrid" -v m="$M" -v threads="$OMP_NUM_THREADS" -v what="$what" 'BEGIN {
                printf "  %d requests it never saw (%d thread(s), each run twice), %s: plain %.2f tok/s (%.2f first, %.2f last), learned draft (frozen, adaptive) %.2f tok/s (%.2fx), with the suffix draft (hybrid) %.2f tok/s (%.2fx)\n",
                       m, threads, what, p, b, a, l, l / p, h, h / p }'
        done
    } | tee "$out/result.txt"
    # the online run's own chart: its acceptance per request and the held-back curve (dashed)
    cp "$out/online/acceptance.svg" "$out/acceptance.svg"
    ;;
shift)
    PER=${2:-250}
    # an ordered stream with PER requests of each domain, and a static draft trained offline on c
    awk -v per="$PER" '{ match($0, /"domain": *"[^"]*"/); d = substr($0, RSTART, RLENGTH); if (++seen[d] <= per) print }' \
        "$TRAFFIC" > "$out/stream.jsonl"
    OMP_NUM_THREADS=$CORES "$AURORA" train ${DEVICE:+--device "$DEVICE"} -m "$MODEL" --traffic "$TRAFFIC" --domain c --requests "${STATIC_REQUESTS:-250}" \
        --epochs 2 --max-new "$MAX_NEW" --draft-init "$INIT" $TRAIN -o "$out/static-c.gguf" > "$out/train.log" 2>&1
    TRAFFIC="$out/stream.jsonl"
    run static --order ordered --static "$out/static-c.gguf" $LOOKAHEAD5 $EVAL
    run online --order ordered --online --draft-init "$out/static-c.gguf" $TRAIN $LOOKAHEAD5 $EVAL
    finish
    {
        echo "domain shift: a static draft trained offline on ${STATIC_REQUESTS:-250} c requests (2 epochs), then an ordered stream of"
        echo "$PER requests per domain (c, python, prose, shell; held back: $EVAL), served by it frozen and by the same"
        echo "draft training online (side by side, $THREADS thread(s) each; chains of depth 5)"
        echo " mean acceptance length per domain (served requests):"
        for name in static online; do
            domain_means "$out/$name" | awk -v n="$name" '{ printf "  %-7s %-7s %.3f (%d requests)\n", n, $1, $2, $3 }'
        done
        # the new domains: every served request after the first domain's, static against online
        for name in static online; do
            awk -F, 'NR > 1 && $9 == "served" { if (first == "") first = $2; if ($2 != first) { a += $6; n++ } }
                     END { printf "%.3f\n", n ? a / n : 0 }' "$out/$name/requests.csv"
        done | { read -r s; read -r o; awk -v s="$s" -v o="$o" 'BEGIN { printf " the new domains (all requests after c): static %.3f, online %.3f: %.2fx static\n", s, o, (s > 0 ? o / s : 0) }'; }
        echo " recovery of the online draft after each shift:"
        recovery "$out/online"
        echo " held-back acceptance at the end (4 requests of each domain): static $(held_back "$out/static"), online $(held_back "$out/online")"
        echo " online: $(summary_number "$out/online" "training:") optimiser steps, $(summary_number "$out/online" "draft vocabulary:") vocabulary entries replaced, $(summary_number "$out/online" "hot swaps:") hot swaps"
        echo " speed (whole requests / after the prefill): static $(speed "$out/static") / $(decode_speed "$out/static") tok/s, online (trainer beside it) $(speed "$out/online") / $(decode_speed "$out/online") tok/s"
    } | tee "$out/result.txt"
    "$AURORA" plot -o "$out/acceptance.svg" --title "domain shift: c, python, prose, shell ($PER requests each)" \
        "$out/static/requests.csv:static (trained on c)" "$out/online/requests.csv:online"
    ;;
mixed)
    N=${2:-1000}
    test -f out/shift/static-c.gguf || { echo "run 'sh tools/experiments.sh shift' first (its static draft)"; exit 1; }
    run static --order mixed --requests "$N" --static out/shift/static-c.gguf $LOOKAHEAD5 $EVAL
    run online --order mixed --requests "$N" --online --draft-init "$INIT" $TRAIN $LOOKAHEAD5 $EVAL
    finish
    {
        W=$((N >= 200 ? N / 10 : N / 2))
        echo "mixed stream: $N requests (held back: $EVAL), the static draft of 'shift' (trained offline on c) frozen"
        echo "against a fresh draft (warm start $INIT) training online, side by side, $THREADS thread(s) each; chains of depth 5"
        echo " mean acceptance length per $W requests:"
        for name in static online; do printf "  %-7s %s\n" "$name" "$(windows "$out/$name" "$W")"; done
        s_all=$(acceptance "$out/static" 0 "$N"); o_all=$(acceptance "$out/online" 0 "$N")
        s_last=$(acceptance "$out/static" $((N - 50)) "$N"); o_last=$(acceptance "$out/online" $((N - 50)) "$N")
        awk -v sa="$s_all" -v oa="$o_all" -v sl="$s_last" -v ol="$o_last" 'BEGIN {
            printf " all requests: static %.3f, online %.3f (%.2fx); the last 50: static %.3f, online %.3f (%.2fx)\n", sa, oa, oa / sa, sl, ol, ol / sl }'
        echo " online passes the static draft (a trailing mean of 50 above the static's over the same requests) at request $(paste -d, "$out/static/requests.csv" "$out/online/requests.csv" |
            awk -F, 'NR > 1 && $9 == "served" && $19 == "served" { s[n % 50] = $6; o[n % 50] = $16; n++
                     if (n >= 50 && !at) { ts = to = 0; for (j = 0; j < 50; j++) { ts += s[j]; to += o[j] } if (to > ts) at = n } }
                     END { print at ? at : "- (never)" }')"
        echo " held-back acceptance at the end: static $(held_back "$out/static"), online $(held_back "$out/online")"
        echo " online: $(summary_number "$out/online" "training:") optimiser steps, $(summary_number "$out/online" "hot swaps:") hot swaps"
        echo " speed (whole requests / after the prefill): static $(speed "$out/static") / $(decode_speed "$out/static") tok/s, online (trainer beside it) $(speed "$out/online") / $(decode_speed "$out/online") tok/s"
    } | tee "$out/result.txt"
    "$AURORA" plot -o "$out/acceptance.svg" --title "mixed stream: online from scratch against static" \
        "$out/static/requests.csv:static" "$out/online/requests.csv:online"
    ;;
sources)
    N=${2:-1000}
    run learned --order mixed --requests "$N" --online --draft-init "$INIT" $TRAIN $LOOKAHEAD5
    run suffix --order mixed --requests "$N" --source suffix $LOOKAHEAD5
    finish
    run hybrid --order mixed --requests "$N" --online --source hybrid --draft-init "$INIT" $TRAIN $LOOKAHEAD5
    finish
    "$AURORA" plot -o "$out/acceptance.svg" --title "mixed stream: the learned draft, the suffix draft, both" \
        "$out/learned/requests.csv:learned (online)" "$out/suffix/requests.csv:suffix" "$out/hybrid/requests.csv:hybrid"
    ;;
live)
    N=${2:-100}
    JOBS=1
    # plain decoding on every core, and on one (on a shared VM one thread can be the faster: the better counts)
    OMP_NUM_THREADS=$CORES
    run plain --order mixed --requests "$N" --no-spec
    finish
    OMP_NUM_THREADS=1
    run plain-1 --order mixed --requests "$N" --no-spec
    finish
    OMP_NUM_THREADS=$CORES
    run learned --order mixed --requests "$N" --online --draft-init "$INIT" $TRAIN
    finish
    run hybrid --order mixed --requests "$N" --online --source hybrid --draft-init "$INIT" $TRAIN
    finish
    # training in the gaps: at an offered load of LOAD the server is idle for t (1 - LOAD) / LOAD after a request
    # of t seconds; the trainer trains only then, on every core, and serving has every core (tok/s below are of
    # serving: the gaps are not its time; what requests waited for a step in flight is in each summary.txt)
    LOAD=${LOAD:-0.5}
    # plain decoding at the same load too: idle in the gaps, which on a shared VM slows the next request's first
    # passes (2-core Xeon, fifty-first session: prefills 12.5-13.3 s against 11.7-11.9 back to back); and the
    # hybrid with its start frozen at that load (nothing trains: what the trainer adds). The runs at that load
    # go in a palindrome (each twice, the second time in reverse order), so that the shared machine's drift
    # during them weighs on each alike (one such pair of runs moved from 1.23x to 1.11x as the host slowed);
    # each figure is over both of its runs
    gaps_run() {
        case $1 in
        plain-gaps*)   run "$1" --order mixed --requests "$N" --no-spec --load "$LOAD" ;;
        frozen-gaps*)  run "$1" --order mixed --requests "$N" --static "$INIT" --source hybrid --load "$LOAD" ;;
        learned-gaps*) run "$1" --order mixed --requests "$N" --online --draft-init "$INIT" $TRAIN --load "$LOAD" ;;
        hybrid-gaps*)  run "$1" --order mixed --requests "$N" --online --source hybrid --draft-init "$INIT" $TRAIN --load "$LOAD" ;;
        esac
        finish
    }
    for name in plain-gaps hybrid-gaps frozen-gaps learned-gaps; do gaps_run "$name"; done
    for name in learned-gaps frozen-gaps hybrid-gaps plain-gaps; do gaps_run "$name-2"; done
    {
        echo "live: $N requests (mixed traffic, max-new $MAX_NEW), $CORES cores: plain decoding on all of them and on one"
        echo "(the faster is the baseline); learned and hybrid serve on one core (adaptive shapes) while the trainer uses"
        echo "the other; the -gaps runs serve on every core and train only between requests, at an offered load of $LOAD"
        for measure in speed decode_speed; do
            [ "$measure" = speed ] && echo " whole requests:" || echo " after the prefill (decoding alone):"
            plain_all=$($measure "$out/plain"); plain_one=$($measure "$out/plain-1")
            plain=$(awk -v a="$plain_all" -v b="$plain_one" 'BEGIN { print (a > b ? a : b) }')
            echo "  plain          $plain_all tok/s on $CORES threads, $plain_one tok/s on 1"
            plain_gaps=$($measure "$out/plain-gaps" "$out/plain-gaps-2")
            echo "  plain-gaps     $plain_gaps tok/s on $CORES threads at load $LOAD (idle in the gaps; runs $($measure "$out/plain-gaps"), $($measure "$out/plain-gaps-2"))"
            for name in learned hybrid learned-gaps hybrid-gaps frozen-gaps; do
                # (a pair's tok/s: both runs' tokens over both runs' seconds; its acceptance: the runs' mean)
                dirs="$out/$name"; case $name in *-gaps) dirs="$out/$name $out/$name-2" ;; esac
                runs=$(for d in $dirs; do $measure "$d"; echo; done | paste -sd, - | sed "s/,/, /g")
                a=$(for d in $dirs; do acceptance "$d" 0 "$N"; echo; done | awk '{ s += $1 } END { printf "%.3f", s / NR }')
                last=$(for d in $dirs; do acceptance "$d" $((N - N / 2)) "$N"; echo; done | awk '{ s += $1 } END { printf "%.3f", s / NR }')
                # shellcheck disable=SC2086
                awk -v p="$plain" -v g="$plain_gaps" -v s="$($measure $dirs)" -v n="$name" -v runs="$runs" -v a="$a" \
                    -v last="$last" 'BEGIN {
                    printf "  %-12s %6.2f tok/s against plain %6.2f: %.2fx", n, s, p, s / p
                    if (n ~ /-gaps$/) printf ", against plain at the same load %.2fx (runs %s)", s / g, runs
                    printf " (acceptance length %.2f, last half %.2f)\n", a, last }'
            done
        done
        for name in learned-gaps learned-gaps-2 hybrid-gaps hybrid-gaps-2; do
            echo " $name: $(grep -h "^training:" "$out/$name/summary.txt" | cut -d, -f1); $(grep -h "^training in the gaps" "$out/$name/summary.txt")"
        done
    } | tee "$out/result.txt"
    "$AURORA" plot -o "$out/acceptance.svg" --title "live: serving with the trainer running (adaptive shapes)" \
        "$out/learned/requests.csv:learned (online)" "$out/hybrid/requests.csv:hybrid (online)" \
        "$out/learned-gaps/requests.csv:learned (in the gaps)" "$out/hybrid-gaps/requests.csv:hybrid (in the gaps)" \
        "$out/frozen-gaps/requests.csv:hybrid frozen (its start, at the same load)"
    ;;
sync)
    N=${2:-300}
    for every in 1 4 16 64; do run "sync-$every" --order mixed --requests "$N" --online --draft-init "$INIT" $TRAIN \
        $LOOKAHEAD5 --sync-every "$every"; done
    finish
    {
        echo "publishing the trainer's weights every 1, 4, 16, 64 optimiser steps: $N requests (mixed traffic), day 0 online,"
        echo "$JOBS runs at a time, $THREADS thread(s) each and a trainer thread; chains of depth 5"
        printf "  %-8s %9s %9s %9s %7s %10s %14s %12s\n" run "1-$((N / 2))" "$((N / 2 + 1))-$N" all steps "hot swaps" "switch (ms)" "tok/s"
        for every in 1 4 16 64; do
            d=$out/sync-$every
            printf "  %-8s %9s %9s %9s %7s %10s %14s %12s\n" "every $every" "$(acceptance "$d" 0 $((N / 2)))" \
                "$(acceptance "$d" $((N / 2)) "$N")" "$(acceptance "$d" 0 "$N")" "$(summary_number "$d" "training:")" \
                "$(summary_number "$d" "hot swaps:")" "$(sed -n 's/^hot swaps: [0-9]*, switch time mean \([0-9.]*\) ms.*/\1/p' "$d/summary.txt")" \
                "$(speed "$d")"
        done
    } | tee "$out/result.txt"
    "$AURORA" plot -o "$out/acceptance.svg" --title "publishing every 1, 4, 16, 64 optimiser steps" \
        "$out/sync-1/requests.csv:every 1" "$out/sync-4/requests.csv:every 4" "$out/sync-16/requests.csv:every 16" \
        "$out/sync-64/requests.csv:every 64"
    ;;
discard)
    N=${2:-300}
    for depth in 5 10; do
        for weight in 0 0.5; do
            run "depth$depth-discard$weight" --order mixed --requests "$N" --online --draft-init "$INIT" $TRAIN \
                --sync-schedule 1 --steps-per-request 4 --spec-fixed --spec-k 2 --spec-depth "$depth" \
                --spec-nodes $((2 * depth + 1)) --ttt-length "$depth" --discard-weight "$weight" $EVAL
        done
    done
    finish
    "$AURORA" plot -o "$out/acceptance.svg" --title "the discard loss off and on, lookahead 5 and 10" \
        "$out/depth5-discard0/requests.csv:lookahead 5, off" "$out/depth5-discard0.5/requests.csv:lookahead 5, on" \
        "$out/depth10-discard0/requests.csv:lookahead 10, off" "$out/depth10-discard0.5/requests.csv:lookahead 10, on"
    ;;
ttt)
    N=${2:-100}
    # threaded like day 0 (serving on one thread, the trainer on the other core), one run at a time
    OMP_NUM_THREADS=1
    for length in 1 2 3 5; do
        run "ttt-$length" --order mixed --requests "$N" --online --draft-init "$INIT" $TRAIN \
            --ttt-length "$length" $LOOKAHEAD5 --eval-every $((N / 4)) --eval-requests 16
        finish
    done
    {
        printf "%-8s %12s %12s %14s %16s\n" run "1-$((N / 2))" "$((N / 2 + 1))-$N" "held-back/req" "optimiser steps"
        for length in 1 2 3 5; do
            d=$out/ttt-$length
            printf "%-8s %12s %12s %14s %16s\n" "ttt-$length" "$(acceptance "$d" 0 $((N / 2)))" "$(acceptance "$d" $((N / 2)) "$N")" \
                "$(held_back_per_request "$d")" "$(sed -n 's/^training: \([0-9]*\) optimiser steps.*/\1/p' "$d/summary.txt")"
        done
    } | tee "$out/result.txt"
    "$AURORA" plot -o "$out/acceptance.svg" --title "the TTT unroll's length at equal time (threaded)" \
        "$out/ttt-1/requests.csv:TTT 1" "$out/ttt-2/requests.csv:TTT 2" "$out/ttt-3/requests.csv:TTT 3" "$out/ttt-5/requests.csv:TTT 5"
    ;;
selfstart)
    N=${2:-300}
    SAMPLES=${SELF_SAMPLES:-500}
    FROM=${EVAL_FROM:-3100}
    # a draft trained before the first request on the target's own text alone (train --self-samples: samples
    # from its start-of-text token at temperature 1, each continued greedily for MAX_NEW), then day 0 from it
    # against day 0 from the target's layer alone, both lockstep (4 steps a request, as the study's base); then
    # each draft, frozen, on 100 requests none of them saw (EVAL_FROM on; the default traffic has 4,000)
    OMP_NUM_THREADS=$CORES "$AURORA" train ${DEVICE:+--device "$DEVICE"} -m "$MODEL" --self-samples "$SAMPLES" \
        --epochs 2 --max-new "$MAX_NEW" --draft-init "$INIT" $TRAIN -o "$out/self.gguf" > "$out/train.log" 2>&1
    BASE=$(lockstep_base "$N")
    run "$INIT" $BASE --draft-init "$INIT" $TRAIN --save-draft "$out/$INIT.gguf"
    run self $BASE --draft-init "$out/self.gguf" $TRAIN --save-draft "$out/self-online.gguf"
    finish
    for draft in self "$INIT" self-online; do
        run "unseen-$draft" --order mixed --static "$out/$draft.gguf" $LOOKAHEAD5 --from "$FROM" --requests 100
    done
    finish
    {
        echo "a warm start from the target's own text: $SAMPLES samples, 2 epochs ($(sed -n 's/.*(\([0-9]*\) optimiser steps.*/\1/p' "$out/train.log") steps); then $N lockstep requests"
        printf "%-28s %8s %8s %8s %14s %22s\n" run "1-50" "$((N - 49))-$N" "all" "held-back/req" "unseen 100 (frozen)"
        printf "%-28s %8s %8s %8s %14s %22s\n" "self-trained, no traffic" - - - - "$(acceptance "$out/unseen-self" 0 100)"
        for pair in "$INIT:$INIT" "self:self-online"; do
            d=$out/${pair%%:*}
            printf "%-28s %8s %8s %8s %14s %22s\n" "day 0 from ${pair%%:*}" "$(acceptance "$d" 0 50)" "$(acceptance "$d" $((N - 50)) "$N")" \
                "$(acceptance "$d" 0 "$N")" "$(held_back_per_request "$d")" "$(acceptance "$out/unseen-${pair#*:}" 0 100)"
        done
    } | tee "$out/result.txt"
    "$AURORA" plot -o "$out/acceptance.svg" --title "day 0 from a draft trained on the target's own text (lockstep)" \
        "$out/$INIT/requests.csv:from $INIT" "$out/self/requests.csv:from the target's own text"
    ;;
study)
    N=${2:-200}
    BASE=$(lockstep_base "$N")
    # LEVERS="base prompt-0 ..." runs only the runs named (default: all)
    # (the table and the chart read these runs alone: directories an earlier study left in $out are not this one's)
    RAN=""
    lever() { case " ${LEVERS:-$1} " in *" $1 "*) run "$@"; RAN="$RAN $1" ;; esac; }
    lever base $BASE --draft-init "$INIT" $TRAIN
    lever lr-3e-4 $BASE --draft-init "$INIT" $TRAIN --lr 3e-4
    lever lr-3e-3 $BASE --draft-init "$INIT" $TRAIN --lr 3e-3
    lever warmup-50 $BASE --draft-init "$INIT" $TRAIN --warmup 50
    lever pool-16 $BASE --draft-init "$INIT" $TRAIN --pool 16
    lever pool-256 $BASE --draft-init "$INIT" $TRAIN --pool 256
    lever steps-1 $BASE --draft-init "$INIT" $TRAIN --steps-per-request 1
    lever steps-16 $BASE --draft-init "$INIT" $TRAIN --steps-per-request 16
    lever batch-4 $BASE --draft-init "$INIT" $TRAIN --batch-requests 4
    lever ttt-1 $BASE --draft-init "$INIT" $TRAIN --ttt-length 1
    lever ttt-3 $BASE --draft-init "$INIT" $TRAIN --ttt-length 3
    lever ttt-5 $BASE --draft-init "$INIT" $TRAIN --ttt-length 5
    lever clip-off $BASE --draft-init "$INIT" $TRAIN --clip 0
    lever prompt-0 $BASE --draft-init "$INIT" $TRAIN --prompt-weight 0
    lever prompt-0.5 $BASE --draft-init "$INIT" $TRAIN --prompt-weight 0.5
    lever init-random $BASE --draft-init random $TRAIN
    lever init-target $BASE --draft-init target $TRAIN
    lever vocab-4096 $BASE --draft-init "$INIT" $TRAIN --draft-vocab 4096
    lever vocab-16384 $BASE --draft-init "$INIT" $TRAIN --draft-vocab 16384
    lever vocab-fixed $BASE --draft-init "$INIT" $TRAIN --adapt-vocab 0
    lever head-frozen $BASE --draft-init "$INIT" $TRAIN --freeze-head 1
    lever context-128 $BASE --draft-init "$INIT" $TRAIN --prompt-weight 0.5 --context-window 128
    finish
    {
        W=$((N < 100 ? N / 2 : 50))   # the windows: the first and the last W requests
        printf "%-14s %10s %10s %14s %12s\n" run "1-$W" "$((N - W + 1))-$N" "held-back/req" "tok/s"
        for name in $RAN; do
            d=$out/$name
            printf "%-14s %10s %10s %14s %12s\n" "$name" "$(acceptance "$d" 0 "$W")" "$(acceptance "$d" $((N - W)) "$N")" \
                "$(held_back_per_request "$d")" "$(speed "$d")"
        done
    } | tee "$out/result.txt"
    set --
    for name in $RAN; do set -- "$@" "$out/$name/requests.csv:$name"; done
    "$AURORA" plot -o "$out/acceptance.svg" --title "the learning study: one lever at a time (lockstep)" "$@"
    ;;
*)
    echo "usage: sh tools/experiments.sh day0|shift|mixed|sources|live|sync|discard|ttt|selfstart|study [REQUESTS]" >&2
    exit 1
    ;;
esac
echo "wrote $out/"
