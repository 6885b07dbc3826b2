#!/usr/bin/env python3
"""bench_spec.py: `make bench-spec`. Speculative decoding side by side, llama.cpp and ours, on the same
prompts, the same GGUF file, the same draft and the same threads, in one run: tokens/s and acceptance length.

usage: python3 tools/bench_spec.py ./aurora MODEL.gguf LLAMA_BIN_DIR WORK_DIR
  THREADS (default: the core count), BENCH_TOKENS (new tokens per prompt, default 64), BENCH_ROUNDS
  (default 2: every configuration runs over every prompt that many times, alternating; the faster round counts),
  BENCH_PROMPTS (how many of the prompts, default all 22)

Rows:
  llama.cpp plain            llama-completion (llama-speculative-simple will not run without a draft)
  llama.cpp + our draft      --spec-type draft-eagle3 with our draft exported by `aurora draft-export
                             --format llama.cpp`, a chain of DEPTH tokens (llama.cpp drafts chains)
  llama.cpp n-gram           --spec-type ngram-simple (lookup n-gram 3, draft up to DEPTH tokens)
  ours plain                 aurora generate
  ours + our draft           the same draft, a chain of DEPTH (--spec-fixed), and adaptive shapes (default)
  ours lookup, suffix        the model-free drafts, adaptive shapes
The draft is tests/test_interop.py's: trained by `aurora train` on the F32 target's continuations of these
same prompts (made once into WORK_DIR, shared with `make test-interop`), so its acceptance is an upper view;
what the table compares is the two engines running the same draft. Tokens/s: generated tokens over the time
after the prompt's prefill (llama.cpp's "decoded N tokens in S seconds"; ours "tokens/s after prefill").
Acceptance length: emitted tokens per verify pass (the bonus token included: 1.0 means nothing accepted).
No shell: every program gets an argument list.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import test_interop  # noqa: E402  (the prompts and the draft, made the same way)

DEPTH = test_interop.DEPTH
PROMPTS = test_interop.PROMPTS


def run(args, env=None):
    """A program's stderr (test_interop.run: no shell, no stdin, exits on a failure)."""
    return test_interop.run(args, timeout=600, env=env)[1]


def number(pattern, text, what):
    m = re.search(pattern, text)
    if not m:
        sys.exit("bench_spec: no %s in:\n%s" % (what, text[-2000:]))
    return float(m.group(1))


def llama(llama_bin, model, threads, n, prompt, spec):
    """(tokens, seconds, passes, emitted) of one llama-speculative-simple run."""
    err = run([os.path.join(llama_bin, "llama-speculative-simple"), "-m", model, "-p", prompt, "-n", str(n),
               "--temp", "0", "--top-k", "1", "-t", threads, "-c", "1024", "-lv", "5"] + spec)
    tokens = number(r"decoded\s+(\d+) tokens in", err, "decoded tokens")
    seconds = number(r"decoded\s+\d+ tokens in\s+([0-9.]+) seconds", err, "decode time")
    passes = re.findall(r"accepted (\d+)/(\d+) draft tokens", err)
    emitted = sum(int(a) + 1 for a, _ in passes)
    return tokens, seconds, len(passes), emitted


def llama_plain(llama_bin, model, threads, n, prompt):
    """(tokens, seconds, 0, 0) of one llama-completion run: its decode steps ("eval time = S ms / N runs")."""
    err = run([os.path.join(llama_bin, "llama-completion"), "-m", model, "-p", prompt, "-n", str(n),
               "--temp", "0", "--top-k", "1", "-t", threads, "-c", "1024", "-no-cnv"])
    milliseconds = number(r"\beval time =\s+([0-9.]+) ms /\s+\d+ runs", err, "eval time")
    runs = number(r"\beval time =\s+[0-9.]+ ms /\s+(\d+) runs", err, "eval runs")
    return runs, milliseconds / 1e3, 0, 0


def ours(aurora, model, threads, n, prompt, flags):
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    err = run([aurora, "generate", "-m", model, "-p", prompt, "-n", str(n), "--print-ids"] + flags, env)
    if "speculative:" not in err:   # plain decoding: the first token comes from the prefill
        tokens = number(r"decode: (\d+) tokens", err, "decode tokens")
        seconds = number(r"decode: \d+ tokens in ([0-9.]+) s", err, "decode time")
        return tokens, seconds, 0, 0
    # (the count includes the first token, which the prefill made and the time after the prefill does not
    # cover: the rate generate prints is the count less one over that time, as the plain row counts)
    tokens = number(r"; (\d+) tokens in [0-9.]+ s \([0-9.]+ tokens/s after prefill\)", err, "tokens") - 1
    seconds = number(r"; \d+ tokens in ([0-9.]+) s \([0-9.]+ tokens/s after prefill\)", err, "time")
    passes = number(r"speculative: (\d+) verify passes", err, "verify passes")
    emitted = number(r"acceptance length [0-9.]+ \((\d+) tokens emitted", err, "tokens emitted")
    return tokens, seconds, passes, emitted


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    aurora, model, llama_bin, work = sys.argv[1:5]
    if not os.access(os.path.join(llama_bin, "llama-speculative-simple"), os.X_OK):
        sys.exit("bench_spec: %s/llama-speculative-simple is missing; run 'make oracle-llama-tools' first" % llama_bin)
    threads = os.environ.get("THREADS", str(os.cpu_count()))
    n = int(os.environ.get("BENCH_TOKENS", "64"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    prompts = PROMPTS[:int(os.environ.get("BENCH_PROMPTS", str(len(PROMPTS))))]
    os.makedirs(work, exist_ok=True)
    f32_model, draft = test_interop.prepare(aurora, model, work)
    llama_draft = os.path.join(work, "draft.llama.gguf")
    run([aurora, "draft-export", "-m", f32_model, "--draft", draft, "--format", "llama.cpp", "-o", llama_draft])

    chain = ["--spec-fixed", "--spec-k", "1", "--spec-depth", str(DEPTH)]
    configurations = [
        ("llama.cpp plain", lambda p: llama_plain(llama_bin, model, threads, n, p)),
        ("llama.cpp + our draft (chain %d)" % DEPTH, lambda p: llama(llama_bin, model, threads, n, p, [
            "-md", llama_draft, "--spec-type", "draft-eagle3", "--spec-draft-n-max", str(DEPTH), "--spec-draft-n-min", "0",
            "--spec-draft-p-min", "0"])),
        ("llama.cpp n-gram (ngram-simple)", lambda p: llama(llama_bin, model, threads, n, p, [
            "--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3", "--spec-ngram-simple-size-m", str(DEPTH)])),
        ("ours plain", lambda p: ours(aurora, model, threads, n, p, [])),
        ("ours + our draft (chain %d)" % DEPTH, lambda p: ours(aurora, model, threads, n, p, ["--draft", draft] + chain)),
        ("ours + our draft (adaptive)", lambda p: ours(aurora, model, threads, n, p, ["--draft", draft])),
        ("ours lookup (adaptive)", lambda p: ours(aurora, model, threads, n, p, ["--draft", "lookup"])),
        ("ours suffix (adaptive)", lambda p: ours(aurora, model, threads, n, p, ["--draft", "suffix"])),
    ]
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    print("machine: %s, %d cores; %s threads for every program; model %s; %d prompts, %d new tokens each, greedy; "
          "best of %d rounds" % (cpu, os.cpu_count(), threads, model, len(prompts), n, rounds), flush=True)
    best = {}
    for r in range(rounds):
        for name, measure in configurations:
            totals = [0.0, 0.0, 0.0, 0.0]
            for prompt in prompts:
                for i, value in enumerate(measure(prompt)):
                    totals[i] += value
            if name not in best or totals[1] < best[name][1]:
                best[name] = totals
        print("round %d of %d done" % (r + 1, rounds), file=sys.stderr)
    print("%-36s %10s %12s %s" % ("", "tokens/s", "vs llama.cpp", "acceptance length"))
    base = best["llama.cpp plain"][0] / best["llama.cpp plain"][1]
    for name, _ in configurations:
        tokens, seconds, passes, emitted = best[name]
        acceptance = "%.2f" % (emitted / passes) if passes else "-"
        print("%-36s %10.2f %11.2fx %s" % (name, tokens / seconds, tokens / seconds / base, acceptance))
    mine = best["ours + our draft (chain %d)" % DEPTH]
    theirs = best["llama.cpp + our draft (chain %d)" % DEPTH]
    print("\nsummary")
    print("learned_draft_vs_llamacpp_same_draft %.3f" % ((mine[0] / mine[1]) / (theirs[0] / theirs[1])))
    adaptive = best["ours + our draft (adaptive)"]
    print("learned_draft_adaptive_vs_llamacpp_same_draft %.3f" % ((adaptive[0] / adaptive[1]) / (theirs[0] / theirs[1])))
    plain = best["ours plain"]
    print("plain_vs_llamacpp_plain %.3f" % ((plain[0] / plain[1]) / base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
