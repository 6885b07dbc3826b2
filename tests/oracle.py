#!/usr/bin/env python3
"""oracle.py: our tokenizer, logits and greedy output against llama.cpp on the same GGUF file.

llama.cpp is the reference implementation of GGUF; llama-cpp-python builds it from source
(`make oracle-deps`). When it is not importable this script says so and fails (exit 1: an oracle that is
absent has checked nothing); when it is, every disagreement fails it.

usage: python3 tests/oracle.py ./aurora MODEL.gguf
Checks:
  1. `aurora tokenize` gives llama.cpp's ids on varied strings (plain text, and special-token parsing);
     tests/oracle_tokenizer.py checks the tokenizer itself far more widely.
  2. On an F32 copy of the model (`aurora convert --type f32`), with llama.cpp's KV cache in F32 too,
     both programs do the same fp32 math: final logits must agree within F32_LOGIT_BOUND and greedy
     continuations must agree token for token.
  3. On the quantised file itself, llama.cpp's CPU kernels quantise activations to 8 bits (blocks of 32)
     before the Q4_1 and Q8_0 dot products. We check both of our arithmetics on it:
     - `--backend fast-exact` (fp32 activations, the reference's arithmetic): logits differ from
       llama.cpp's by tenths; the argmax must agree and the difference stay under Q_LOGIT_BOUND.
     - the default `cpu` table (int8 activations on AVX-512 VNNI and AVX2 CPUs, else the same as fast-exact):
       both sides round activations to 8 bits, but independently (llama.cpp keeps its scales in fp16,
       ours in fp32, so values near a rounding boundary go different ways and the noise does not
       cancel); measured max |diff| 1.17 on these prompts, bound INT8_LOGIT_BOUND.
     Greedy agreement is reported (the first token must agree): two roundings of a 135M model drift
     apart after a few tokens where the top two logits are close.
"""
import os
import subprocess
import sys
import tempfile

F32_LOGIT_BOUND = 1e-3
Q_LOGIT_BOUND = 1.0
INT8_LOGIT_BOUND = 1.5

# the tokenizer's thorough oracle is tests/oracle_tokenizer.py; here the CLI path on its strings
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_tokenizer import STRINGS as TOKENIZER_STRINGS  # noqa: E402
SPECIAL_STRINGS = [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|>text after<|endoftext|>",
]
LOGIT_PROMPTS = [
    "The capital of France is",
    "def add(a, b):\n    return",
    "Once upon a time, there was a",
    "1, 2, 3, 4, 5,",
]
GREEDY_PROMPTS = ["The capital of France is", "Water boils at a temperature of"]


def run(args):
    result = subprocess.run(args, capture_output=True)
    if result.returncode != 0:
        sys.exit("oracle: command failed (%d): %s\n%s" % (result.returncode, " ".join(args), result.stderr.decode(errors="replace")))
    return result.stdout.decode()


def compare_logits(aurora, model, llm, np, bound, backend=()):
    """Largest |ours - llama.cpp| over all logits, per prompt; returns (passed, failed). With a negative
    control: each prompt's logits against the next prompt's llama.cpp logits must exceed the bound."""
    passed = failed = 0
    worst = 0.0
    pairs = []
    vocab = llm.n_vocab()
    for prompt in LOGIT_PROMPTS:
        lines = run([aurora, "logits", "-m", model, "-p", prompt, "--top", str(vocab)] + list(backend)).split("\n")
        ours = np.zeros(vocab, dtype=np.float64)
        for line in lines:
            if line:
                token, logit = line.split()
                ours[int(token)] = float(logit)
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=False)
        llm.reset()
        llm.eval(tokens)
        theirs = np.array(llm.scores[len(tokens) - 1], dtype=np.float64)
        difference = float(np.max(np.abs(ours - theirs)))
        worst = max(worst, difference)
        pairs.append((ours, theirs))
        ok = int(np.argmax(ours)) == int(np.argmax(theirs)) and difference <= bound
        passed += ok
        failed += not ok
        print("  logits %-34r argmax ours %5d llama.cpp %5d  max |diff| %.2e  %s" % (
            prompt, int(np.argmax(ours)), int(np.argmax(theirs)), difference, "ok" if ok else "FAIL"))
    print("  largest absolute difference over %d prompts x %d logits: %.2e (bound %g)" % (len(LOGIT_PROMPTS), vocab, worst, bound))
    shifted = [float(np.max(np.abs(pairs[i][0] - pairs[(i + 1) % len(pairs)][1]))) for i in range(len(pairs))]
    control_ok = min(shifted) > bound
    print("  negative control: each prompt's logits against the next prompt's llama.cpp logits differ by at least %.2e "
          "(must exceed the bound): %s" % (min(shifted), "ok" if control_ok else "FAIL"))
    passed += control_ok
    failed += not control_ok
    return passed, failed


def greedy_agreement(aurora, model, llm, prompt, n=32, backend=(), their_prompt=None):
    ours = [int(x) for x in run([aurora, "generate", "-m", model, "-p", prompt, "-n", str(n), "--print-ids"] + list(backend)).split()]
    tokens = llm.tokenize((their_prompt or prompt).encode(), add_bos=False, special=False)
    llm.reset()
    theirs = []
    for token in llm.generate(tokens, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        theirs.append(int(token))
        if len(theirs) == len(ours) or token == llm.token_eos():
            break
    agree = 0
    while agree < min(len(ours), len(theirs)) and ours[agree] == theirs[agree]:
        agree += 1
    return agree, len(ours), len(theirs)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    aurora, model = sys.argv[1], sys.argv[2]
    try:
        from llama_cpp import Llama
        import numpy as np
    except ImportError as e:
        print("oracle: FAIL: llama-cpp-python (with numpy) is not importable (%s); run 'make oracle-deps'" % e)
        return 1
    GGML_TYPE_F32 = 0
    llm = Llama(model_path=model, n_ctx=512, n_threads=2, logits_all=True, verbose=False,
                type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    passed = failed = 0

    # 1. the tokenize command
    cases = [(s, False) for s in TOKENIZER_STRINGS] + [(s, True) for s in SPECIAL_STRINGS]
    for text, special in cases:
        ours = [int(x) for x in run([aurora, "tokenize", "-m", model] + (["--special"] if special else []) + [text]).split()]
        theirs = llm.tokenize(text.encode(), add_bos=False, special=special)
        if ours == list(theirs):
            passed += 1
        else:
            failed += 1
            print("FAIL tokenize %r (special=%s):\n  ours   %s\n  llama  %s" % (text, special, ours, list(theirs)))
    print("tokenize: %d of %d strings give llama.cpp's ids" % (passed, len(cases)))

    # 1b. the tokens that end generation (`aurora info`'s list against llama_vocab_is_eog over the vocabulary)
    import llama_cpp
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    theirs = [i for i in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    info = [line for line in run([aurora, "info", "-m", model]).splitlines() if line.startswith("tokenizer:")]
    ours = [int(x) for x in info[0].split("end of generation:")[1].split()] if info else None
    if ours == theirs:
        passed += 1
        print("end of generation: ids %s, as llama.cpp's" % ours)
    else:
        failed += 1
        print("FAIL end of generation:\n  ours   %s\n  llama  %s" % (ours, theirs))

    # 2. an F32 copy: the same fp32 math on both sides
    with tempfile.TemporaryDirectory() as directory:
        f32_model = os.path.join(directory, "model-f32.gguf")
        run([aurora, "convert", "-m", model, "-o", f32_model, "--type", "f32"])
        f32_llm = Llama(model_path=f32_model, n_ctx=512, n_threads=2, logits_all=True, verbose=False,
                        type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
        print("F32 copy of the model, llama.cpp with an F32 KV cache:")
        p, f = compare_logits(aurora, f32_model, f32_llm, np, F32_LOGIT_BOUND)
        passed += p
        failed += f
        for prompt in GREEDY_PROMPTS:
            agree, n_ours, n_theirs = greedy_agreement(aurora, f32_model, f32_llm, prompt)
            ok = agree == n_ours == n_theirs
            passed += ok
            failed += not ok
            print("  greedy %-34r %d of %d tokens agree  %s" % (prompt, agree, n_ours, "ok" if ok else "FAIL"))
        # the negative control: our continuation of one prompt against llama.cpp's of another must not agree
        agree, n_ours, _ = greedy_agreement(aurora, f32_model, f32_llm, GREEDY_PROMPTS[0],
                                            their_prompt=GREEDY_PROMPTS[1])
        control_ok = agree < n_ours
        print("  negative control: ours for %r against llama.cpp's for %r: %d of %d tokens agree (must be fewer than all): %s" % (
            GREEDY_PROMPTS[0], GREEDY_PROMPTS[1], agree, n_ours, "ok" if control_ok else "FAIL"))
        passed += control_ok
        failed += not control_ok
        del f32_llm

    # 3. the quantised file as it is, with each of our arithmetics
    for title, backend, bound in [("fp32 activations (--backend fast-exact)", ["--backend", "fast-exact"], Q_LOGIT_BOUND),
                                  ("the default table (int8 activations where the CPU has AVX-512 VNNI or AVX2)", [], INT8_LOGIT_BOUND)]:
        print("quantised file as is, ours with %s; llama.cpp quantises activations to 8 bits:" % title)
        p, f = compare_logits(aurora, model, llm, np, bound, backend)
        passed += p
        failed += f
        for prompt in GREEDY_PROMPTS:
            agree, n_ours, n_theirs = greedy_agreement(aurora, model, llm, prompt, backend=backend)
            passed += agree >= 1
            failed += agree < 1
            print("  greedy %-34r first %d of %d tokens agree (reported; the first must)" % (prompt, agree, n_ours))

    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
