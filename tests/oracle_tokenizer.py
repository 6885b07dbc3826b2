#!/usr/bin/env python3
"""
oracle_tokenizer.py: checks our tokenizer against llama.cpp (through llama-cpp-python) on varied text.

Usage: python3 tests/oracle_tokenizer.py build/test_tokenizer models/SmolLM2-135M-Instruct.Q4_1.gguf

For every hand-picked test string, and for both special=False and special=True, runs
    <driver> --tokenize <model> [--special]      (text on stdin, ids on stdout)
then 400 seeded random strings and this repository's source files (in 4 KB slices) through
    <driver> --tokenize-batch <model>
and compares the ids with Llama(model, vocab_only=True).tokenize(text, add_bos=False, special=...).
Prints each mismatch (both id lists and their pieces), then "N passed, M failed"; exits 1 on any mismatch.
Strings are valid UTF-8 only: for invalid UTF-8 llama.cpp substitutes U+FFFD (lossy), we keep the bytes.
"""
import os
import random
import subprocess
import sys

STRINGS = [
    # prose and contractions
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll like it; they're here, we've seen it, she'd go, it's fine, don't.",
    "I'M SHOUTING, DON'T", "'s 't 're 've 'm 'll 'd '' 'x",
    "Once upon a time, there was a little girl named Lily. She loved to play outside!",
    # code
    "int main(int argc, char** argv) {\n    printf(\"%d\\n\", argc);\n    return 0;\n}\n",
    "def f(x):\n\tif x > 0:\n\t\treturn x ** 2\n\treturn -x  # comment\n",
    "for (i = 0; i < n; i++) { sum += a[i] * b[i]; }",
    "<div class=\"a\">&nbsp;</div> {{ jinja }} $PATH=/usr/bin:~/x",
    "x=>x+1; a!==b && c||d ?? e; @decorator #include <stdio.h>",
    # whitespace runs
    "a  b   c    d", "trailing spaces   ", "   leading spaces", "\n\n\nnewlines\n\n", "tabs\t\t\there\t",
    "mixed \t\n \r\n  \u00a0 \u3000 end", " ", "  ", "\n", "\r\n", " \n ", "a \n b",
    # digits and numbers
    "1234567890", "3.14159 2,718 1e-10 0x1F -42", "year 2024, 12:30pm, $1,000,000.00", "a1b22c333d4444",
    "٣٤٥ ⅫⅣ ½ ²³ 𝟘𝟙",
    # unicode
    "café naïve résumé Ångström façade", "Größenwahn straße ÆØÅ æøå",
    "日本語のテキストです。中文文本。한국어 텍스트.", "Привет, мир! Γειά σου Κόσμε",
    "שלום עולם مرحبا بالعالم", "e\u0301 a\u0300 n\u0303 combining marks\u0336", "zero\u200bwidth\u200djoiner\ufeff",
    "ﬁ ﬂ ligatures, ℌ𝔢𝔩𝔩𝔬 mathematical", "\u00ad soft\u00adhyphen \u2028 line sep \u2029 para",
    # emoji
    "emoji 😀😃 👍🏽 🇺🇸 flags", "family 👨\u200d👩\u200d👧\u200d👦 and ❤️ heart", "🙂🙂🙂🙂",
    # special-token text (tokenized as text with special=False, as tokens with special=True)
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "a<|im_end|>b<|im_end|><|im_end|>", "<|im_start|", "<repo_name>x<file_sep>y<filename>",
    # long and mixed
    "A" * 300, " " * 200 + "x", "word " * 100, "Mixed: abc123def, 4.5kg, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 & more... (ok?)",
]


# Seeded random strings from a pool of pieces that stress the pre-tokenizer's boundaries.
POOL = (list("abcXYZ019 '\t\n\r.,;:!?-_()[]{}<>|/\\\"#$%&*+=@^`~") +
        ["'s", "'t", "'re", "'ve", "'ll", "'d", "'m", "  ", "   ", "\n\n", " \n", "\u00a0", "\u3000", "\u2003",
         "\u0085", "\u200b", "\u200d", "\ufeff", "é", "ß", "Ω", "ж", "ש", "م", "中", "日本", "한", "\u0301", "\u0336",
         "٣", "Ⅻ", "½", "²", "𝟙", "😀", "👍🏽", "🇺🇸", "👨\u200d👩", "❤️", "\u1680", "\u2028", "<|im_start|>",
         "<|im_end|>", "<|endoftext|>", "<|im_", "|>", "hello", " world", "123456", " 42", "don't", "I'M"])


def random_strings(count, seed=1234):
    rng = random.Random(seed)
    return ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def source_texts():
    """Real text: these of this repository's source files (each must exist), in 4 KB slices."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    texts = []
    for name in ["aurora.h", "model/tokenizer.c", "model/gguf.c", "tools/gen_unicode.py", "tests/oracle_tokenizer.py"]:
        path = os.path.join(root, name)
        assert os.path.exists(path), "oracle_tokenizer: source text %s is missing (moved? update source_texts)" % path
        data = open(path, encoding="utf-8").read()
        texts += [data[i:i + 4096] for i in range(0, len(data), 4096)]
    return texts


def run_ours_batch(driver, model, texts, special):
    """All texts in one driver process; returns a list of id lists."""
    payload = b"".join(b"%d %d\n" % (int(special), len(t.encode("utf-8"))) + t.encode("utf-8") for t in texts)
    result = subprocess.run([driver, "--tokenize-batch", model], input=payload, capture_output=True)
    lines = result.stdout.decode().split("\n")
    return [[int(x) for x in lines[i].split()] if i < len(lines) else None for i in range(len(texts))]


def run_ours(driver, model, text, special):
    command = [driver, "--tokenize", model] + (["--special"] if special else [])
    result = subprocess.run(command, input=text.encode("utf-8"), capture_output=True)
    if result.returncode != 0:
        return None, result.stderr.decode(errors="replace")
    return [int(x) for x in result.stdout.split()], ""


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    driver, model_path = sys.argv[1], sys.argv[2]
    try:
        from llama_cpp import Llama
    except ImportError as e:
        print("oracle_tokenizer: FAIL: llama-cpp-python is not importable (%s); run 'make oracle-deps'" % e)
        return 1
    llama = Llama(model_path=model_path, vocab_only=True, verbose=False)

    def pieces(ids):
        return [llama.detokenize([i], special=True).decode("utf-8", errors="backslashreplace") for i in ids]

    passed = failed = 0
    for text in STRINGS:
        for special in (False, True):
            expected = llama.tokenize(text.encode("utf-8"), add_bos=False, special=special)
            got, error = run_ours(driver, model_path, text, special)
            if got == expected:
                passed += 1
                continue
            failed += 1
            print(f"MISMATCH special={special} text={text!r}")
            if got is None:
                print(f"  driver failed: {error.strip()}")
            else:
                print(f"  ours:     {got}\n            {pieces(got)}")
            print(f"  llama.cpp: {expected}\n            {pieces(expected)}")
    # many more strings through the batch driver: seeded random mixes and real source text
    batch = random_strings(400) + source_texts()
    for special in (False, True):
        ours = run_ours_batch(driver, model_path, batch, special)
        for text, got in zip(batch, ours):
            expected = llama.tokenize(text.encode("utf-8"), add_bos=False, special=special)
            if got == expected:
                passed += 1
                continue
            failed += 1
            print(f"MISMATCH (batch) special={special} text={text!r}")
            print(f"  ours:      {got}\n             {pieces(got) if got is not None else None}")
            print(f"  llama.cpp: {expected}\n             {pieces(expected)}")
    # the negative control: with the special flag crossed (ours parsing special tokens, llama.cpp not), the
    # strings that hold special-token text must differ: the comparison sees the mode, and the strings reach it
    crossed = 0
    for text in STRINGS:
        got, _ = run_ours(driver, model_path, text, True)
        crossed += got is not None and got != llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    control_ok = crossed > 0
    print(f"negative control: {crossed} of {len(STRINGS)} strings differ with the special flag crossed "
          f"({'ok' if control_ok else 'FAIL: expected some'})")
    passed += control_ok
    failed += not control_ok
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
