#!/usr/bin/env python3
"""test_interop.py: our EAGLE-3 draft served by llama.cpp's speculative decoding, against ours.

usage: python3 tests/test_interop.py ./aurora build/spec_passes MODEL.gguf LLAMA_BIN_DIR [WORK_DIR]
(`make test-interop` runs it on the default model after `make oracle-llama-tools`.)

Orchestration only: every number comes from the two programs; subprocesses get argument lists (no
shell). Steps:
  1. An F32 copy of the target (`aurora convert`), run by llama.cpp with F32 KV caches: both programs
     then do the same fp32 math (tests/oracle.py: final logits within 1e-3), so greedy outputs can be
     compared token for token. (On the Q4_1 file llama.cpp quantises activations to 8 bits.)
  2. A draft that accepts tokens: `aurora train` on the target's greedy continuations of the test
     prompts, warm-started from the target's LM head. (A random draft accepts nothing, so it would
     not show whether llama.cpp reads the draft right: wrong feature layers, d2t or Q/K rows make
     llama.cpp's acceptance collapse while the output stays correct.)
  3. The draft exported with `aurora draft-export --format llama.cpp`; the SpecForge export of it must
     convert back to the same llama.cpp file byte for byte.
  4. For every prompt: our plain greedy output, our speculative decoding pass by pass (tests/spec_passes.c,
     a chain of depth DEPTH) and llama.cpp's `llama-speculative-simple --spec-type draft-eagle3
     --spec-draft-n-max DEPTH --spec-draft-p-min 0 -lv 5`: the three texts must agree (llama.cpp may stop
     up to DEPTH tokens later: its text must be a prefix of our longer run, and cover our N tokens).
  5. Acceptance, pass by pass. The pass boundaries differ by construction at the start: llama.cpp
     evaluates the prompt's last token together with a draft (its draft also guesses the first new
     token), we sample the first token from the prefill and start drafting after it. So passes are
     matched by where they start (the number of tokens known when drafting): passes that start at the
     same point see the same prefix and must accept the same number of tokens (PASS_AGREEMENT of them,
     the issue's goal; near-ties in fp32 may flip a few). Totals are printed too, and llama.cpp's accept
     rate must be at least ACCEPT_RATIO of ours (a misread draft accepts about nothing). The negative control:
     a fresh random draft, exported the same way, stays below that in llama.cpp.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

DEPTH = 4            # draft tokens per pass (a chain)
N_TOKENS = 32        # tokens compared per prompt
ACCEPT_RATIO = 0.5   # llama.cpp's total accept rate / ours must reach this
PASS_AGREEMENT = 0.95  # aligned passes with equal accepted counts (the goal)
THREADS = "1"        # llama.cpp's threads spin at barriers: on a shared 2-core machine one is faster

PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, there was a little",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The three primary colors are",
    "In C, a pointer is",
    "1, 2, 3, 4, 5, 6,",
    "The quick brown fox",
    "Photosynthesis is the process by which",
    "#include <stdio.h>\n\nint main(void) {\n",
    "The largest planet in our solar system is",
    "To make a cup of tea, first",
    "Monday, Tuesday, Wednesday,",
    "The theory of relativity was developed by",
    "for i in range(10):\n",
    "A haiku about the sea:\n",
    "The main ingredients of bread are",
    "SELECT name, age FROM users WHERE",
    "The human heart has four chambers:",
    "Dear John,\n\nThank you for your letter. I",
    "The speed of light in a vacuum is",
    "Here is a list of fruits: apple, banana,",
]


def run(args, timeout=1800, env=None):
    """(stdout bytes, stderr text, seconds) of a program (no stdin, no shell); exits on a failure."""
    started = time.time()
    result = subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL, env=env, timeout=timeout)
    if result.returncode != 0:
        sys.exit("command failed (%d): %s\n%s" % (result.returncode, " ".join(args),
                 result.stderr.decode(errors="replace")[-3000:]))
    return result.stdout, result.stderr.decode(errors="replace"), time.time() - started


def ours_plain(aurora, model, prompt, n):
    out, _, seconds = run([aurora, "generate", "-m", model, "-p", prompt, "-n", str(n)])
    assert out.endswith(b"\n"), "generate output should end with a newline"
    return out[:-1], seconds


def ours_passes(spec_passes, model, draft, prompt, n):
    """Our speculative decoding pass by pass (tests/spec_passes.c): {start: (accepted, drafted)}, text."""
    out, _, seconds = run([spec_passes, model, draft, str(DEPTH), str(n), prompt])
    passes, text, n_prompt = {}, None, None
    for line in out.decode().splitlines():
        fields = line.split()
        if fields[0] == "prompt":
            n_prompt = int(fields[1])
        elif fields[0] == "pass":
            start, accepted, drafted = int(fields[2]), int(fields[3]), int(fields[4])
            passes[start] = (accepted, drafted)
        elif fields[0] == "text":
            text = bytes.fromhex(fields[1]) if len(fields) > 1 else b""
    return passes, text, n_prompt, seconds


def llama_generate(llama_bin, model, draft, prompt, n):
    """llama.cpp's speculative decoding: text, totals and [(accepted, drafted)] per pass (its -lv 5 log)."""
    args = [os.path.join(llama_bin, "llama-speculative-simple"), "-m", model, "-md", draft,
            "--spec-type", "draft-eagle3", "--spec-draft-n-max", str(DEPTH), "--spec-draft-n-min", "0",
            "--spec-draft-p-min", "0", "-p", prompt, "-n", str(n), "--temp", "0", "--top-k", "1",
            "-t", THREADS, "-c", "1024", "-ctk", "f32", "-ctv", "f32", "-ctkd", "f32", "-ctvd", "f32", "-lv", "5"]
    out, err, seconds = run(args)
    head = b"\n\n" + prompt.encode()
    if not out.startswith(head) or not out.endswith(b"\n\n\n\n"):
        sys.exit("test_interop: unexpected llama-speculative-simple output: %r" % out[:200])
    text = out[len(head):-4]
    stats = {}
    for key in ("n_predict", "n_drafted", "n_accept"):
        m = re.search(r"%s\s*=\s*(\d+)" % key, err)
        if not m:
            sys.exit("test_interop: llama-speculative-simple printed no %s:\n%s" % (key, err[-2000:]))
        stats[key] = int(m.group(1))
    passes = [(int(a), int(d)) for a, d in re.findall(r"accepted (\d+)/(\d+) draft tokens", err)]
    return text, stats, passes, seconds


def compare_passes(ours, theirs, n_prompt):
    """Passes that start with the same known tokens must accept the same number of draft tokens.

    llama.cpp's first pass drafts after the prompt alone (its start is n_prompt); each pass then adds its
    accepted tokens and one more. A llama.cpp pass that drafted d tokens should accept min(ours, d)."""
    matched, equal, differences = 0, 0, []
    start = n_prompt
    for accepted, drafted in theirs:
        if start in ours:
            matched += 1
            expected = min(ours[start][0], drafted)
            if accepted == expected:
                equal += 1
            else:
                differences.append((start, ours[start][0], accepted, drafted))
        start += accepted + 1
    return matched, equal, differences


def prepare(aurora, model, work):
    """The F32 copy of the target and a draft trained on its continuations of PROMPTS, made once into work
    (tools/bench_spec.py uses them too). Returns their paths."""
    # (made again when older than the binary or the model: files an older aurora wrote test nothing of this one)
    def stale(path):
        return not os.path.exists(path) or os.path.getmtime(path) < max(os.path.getmtime(aurora), os.path.getmtime(model))
    f32_model = os.path.join(work, "target-f32.gguf")
    if stale(f32_model):
        run([aurora, "convert", "-m", model, "-o", f32_model, "--type", "f32"])
    draft = os.path.join(work, "draft.gguf")
    if stale(draft):
        traffic = os.path.join(work, "prompts.jsonl")
        with open(traffic, "w") as f:
            for prompt in PROMPTS:
                f.write('{"domain": "interop", "prompt": %s}\n' % json_string(prompt))
        # the training settings spelled out (the trainer library's defaults), so that the draft this test
        # compares, and so the trees it builds, do not change when replay's learning defaults move
        _, err, seconds = run([aurora, "train", "-m", f32_model, "--traffic", traffic, "--max-new", str(N_TOKENS + DEPTH + 2),
                               "--epochs", "3", "--draft-init", "target", "--lr", "3e-4", "--warmup", "20",
                               "--ttt-length", "5", "--prompt-weight", "0", "--context-window", "64", "-o", draft])
        print("draft trained in %.0f s (aurora train, %d prompts, 3 epochs, warm start from the target's LM head)"
              % (seconds, len(PROMPTS)))
    return f32_model, draft


def main():
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    aurora, spec_passes, model, llama_bin = sys.argv[1:5]
    for tool in ("llama-speculative-simple",):
        if not os.access(os.path.join(llama_bin, tool), os.X_OK):
            sys.exit("test_interop: %s/%s is missing; run 'make oracle-llama-tools' first" % (llama_bin, tool))
    work = sys.argv[5] if len(sys.argv) == 6 else tempfile.mkdtemp(prefix="aurora_interop_")
    os.makedirs(work, exist_ok=True)
    started = time.time()
    failed = 0

    # 1. the F32 target; 2. a draft that accepts
    f32_model, draft = prepare(aurora, model, work)

    # 3. exports
    llama_draft = os.path.join(work, "draft.llama.gguf")
    specforge = os.path.join(work, "draft.specforge")
    again = os.path.join(work, "draft.again.gguf")
    run([aurora, "draft-export", "-m", f32_model, "--draft", draft, "--format", "llama.cpp", "-o", llama_draft])
    run([aurora, "draft-export", "-m", f32_model, "--draft", draft, "--format", "specforge", "-o", specforge])
    run([aurora, "draft-export", "-m", f32_model, "--draft", specforge, "--format", "llama.cpp", "-o", again])
    with open(llama_draft, "rb") as a, open(again, "rb") as b:
        same = a.read() == b.read()
    print("SpecForge export -> llama.cpp export: %s" % ("byte-identical" if same else "DIFFERS"))
    failed += not same

    # 4. and 5. the prompts
    totals = {"ours_accepted": 0, "ours_drafted": 0, "ours_passes": 0, "llama_accept": 0, "llama_drafted": 0,
              "llama_passes": 0, "matched": 0, "equal": 0}
    times = {"plain": 0.0, "ours": 0.0, "llama": 0.0}
    agree = 0
    print("%-40s %6s %16s %16s %14s  %s" % ("prompt", "tokens", "ours acc/drafted", "llama acc/drafted",
                                            "passes same", "output"))
    for prompt in PROMPTS:
        n_long = N_TOKENS + DEPTH + 1
        plain, t_plain = ours_plain(aurora, f32_model, prompt, n_long)
        ours, spec, n_prompt, t_ours = ours_passes(spec_passes, f32_model, draft, prompt, n_long)
        theirs, llama, llama_passes, t_llama = llama_generate(llama_bin, f32_model, llama_draft, prompt, N_TOKENS)
        times["plain"] += t_plain
        times["ours"] += t_ours
        times["llama"] += t_llama
        # llama.cpp stops after N_TOKENS..N_TOKENS+DEPTH tokens (or at end-of-sequence), and prints each
        # token with "%s", so a token's bytes end at a NUL: compare the texts without NUL bytes
        ok = spec == plain and plain.replace(b"\0", b"").startswith(theirs) and (
            llama["n_predict"] >= N_TOKENS or len(theirs) == len(plain.replace(b"\0", b"")))
        agree += ok
        failed += not ok
        ours_accepted = sum(a for a, _ in ours.values())
        ours_drafted = sum(d for _, d in ours.values())
        matched, equal, differences = compare_passes(ours, llama_passes, n_prompt)
        totals["ours_accepted"] += ours_accepted
        totals["ours_drafted"] += ours_drafted
        totals["ours_passes"] += len(ours)
        totals["llama_accept"] += llama["n_accept"]
        totals["llama_drafted"] += llama["n_drafted"]
        totals["llama_passes"] += len(llama_passes)
        totals["matched"] += matched
        totals["equal"] += equal
        print("%-40r %6d %7d / %-6d %7d / %-6d %6d / %-6d %s" % (prompt[:38], llama["n_predict"], ours_accepted,
              ours_drafted, llama["n_accept"], llama["n_drafted"], equal, matched, "same" if ok else "DIFFERENT"))
        for start, a_ours, a_llama, d_llama in differences:
            print("    pass starting after %d tokens: ours accepted %d, llama.cpp %d of %d" % (start, a_ours, a_llama, d_llama))
        if not ok:
            print("    ours plain: %r\n    ours spec:  %r\n    llama.cpp:  %r" % (plain, spec, theirs))

    ours_rate = totals["ours_accepted"] / max(totals["ours_drafted"], 1)
    llama_rate = totals["llama_accept"] / max(totals["llama_drafted"], 1)
    print("outputs: %d of %d prompts identical (ours plain = ours speculative = llama.cpp speculative)" % (agree, len(PROMPTS)))
    print("accept rate: ours %.3f (%d of %d drafted, %d passes), llama.cpp %.3f (%d of %d drafted, %d passes)" % (
        ours_rate, totals["ours_accepted"], totals["ours_drafted"], totals["ours_passes"], llama_rate,
        totals["llama_accept"], totals["llama_drafted"], totals["llama_passes"]))
    share = totals["equal"] / max(totals["matched"], 1)
    passes_ok = totals["matched"] > 0 and share >= PASS_AGREEMENT
    print("passes starting at the same point: %d of %d accept the same number of tokens (%.1f%%, goal %.0f%%): %s" % (
        totals["equal"], totals["matched"], 100 * share, 100 * PASS_AGREEMENT, "ok" if passes_ok else "FAIL"))
    failed += not passes_ok
    accept_ok = ours_rate > 0 and llama_rate >= ACCEPT_RATIO * ours_rate
    print("acceptance check (ours > 0, llama.cpp >= %.1f x ours): %s" % (ACCEPT_RATIO, "ok" if accept_ok else "FAIL"))
    failed += not accept_ok
    # the negative control: a fresh random draft, exported the same way, served by llama.cpp on a few prompts: its
    # accept rate falls below the bound, so the acceptance check above can fail (a misread draft is such a draft)
    random_draft, random_llama = os.path.join(work, "random.gguf"), os.path.join(work, "random.llama.gguf")
    run([aurora, "draft-init", "-m", f32_model, "-o", random_draft, "--seed", "3"])
    run([aurora, "draft-export", "-m", f32_model, "--draft", random_draft, "--format", "llama.cpp", "-o", random_llama])
    random_accept = random_drafted = 0
    for prompt in PROMPTS[:3]:
        _, llama, _, _ = llama_generate(llama_bin, f32_model, random_llama, prompt, N_TOKENS)
        random_accept += llama["n_accept"]
        random_drafted += llama["n_drafted"]
    random_rate = random_accept / max(random_drafted, 1)
    control_ok = random_drafted > 0 and random_rate < ACCEPT_RATIO * ours_rate
    print("negative control: a random draft in llama.cpp accepts %.3f (%d of %d drafted; must be under %.1f x ours): %s"
          % (random_rate, random_accept, random_drafted, ACCEPT_RATIO, "ok" if control_ok else "FAIL"))
    failed += not control_ok
    print("time: ours plain %.0f s, ours speculative %.0f s, llama.cpp speculative %.0f s; total %.0f s"
          % (times["plain"], times["ours"], times["llama"], time.time() - started))
    print("test_interop: %s" % ("passed" if failed == 0 else "%d FAILED" % failed))
    return 0 if failed == 0 else 1


def json_string(text):
    import json
    return json.dumps(text)


if __name__ == "__main__":
    sys.exit(main())
