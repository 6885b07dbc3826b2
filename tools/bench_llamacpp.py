"""
bench_llamacpp.py: llama.cpp's cost of one forward pass over T new tokens after a 128-token prefix, on a
GGUF file, through llama-cpp-python (make oracle-deps installs it): the number that bench_ops and the
fast ops are compared with, side by side in one session. Only the last token's logits are computed (as
in decode), so for T > 1 it slightly underestimates what a verify pass, which needs every row's logits,
costs there. Prints the fastest of 40 passes per T.

usage: python3 tools/bench_llamacpp.py MODEL.gguf [THREADS]
"""
import sys
import time

import llama_cpp

path = sys.argv[1]
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, n_batch=512,
                      logits_all=False, verbose=False)
prefix = [200 + (i * 37) % 5000 for i in range(128)]
llm.eval(prefix)
print(f"llama.cpp {llama_cpp.__version__}, {threads} threads; {llama_cpp.llama_print_system_info().decode().strip()}")
one_token = None
for T in [1, 2, 4, 6, 8, 12, 16]:
    best = float("inf")
    for _ in range(40):
        llm.n_tokens = len(prefix)  # eval drops the cache past n_tokens: the same T tokens again
        start = time.perf_counter()
        llm.eval([300 + i for i in range(T)])
        best = min(best, time.perf_counter() - start)
    one_token = one_token or best
    print(f"T={T:2d}: {best * 1e3:7.2f} ms  T/1 {best / one_token:.2f}x" + (f"  ({1 / best:.1f} tokens/s)" if T == 1 else ""))
