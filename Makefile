# Aurora in C. The CPU build always works; OpenBLAS and nvcc are probed, announced and optional.
#   make              build ./aurora (OpenBLAS fast path and CUDA twin when found)
#   make model        fetch the default model (SmolLM2-135M-Instruct Q4_1 GGUF) into models/
#   make demo         the main job on the default model (DEVICE=cuda: its replays on the GPU)
#   make test         unit and end-to-end tests on project-made tiny models (no network, no model file)
#   make test-model   tests on the default model and the llama.cpp oracle checks (needs make oracle-deps)
#   make test-cuda    backend parity, tensor by tensor, with the CUDA table (CUDA reported as skipped, exit 0,
#                     where there is no GPU; the CPU tables are checked either way)
#   make bench        speed figures on the default model
#   make bench-spec   speculative decoding, llama.cpp and ours side by side (after oracle-llama-tools)
#   make bench-ops    the fast CPU ops against the reference and OpenBLAS, shape by shape (not a test)
#   make bench-cuda   bench_speed on the CUDA table (a GPU; BENCH_MODEL=FILE picks the model)
#   make oracle-deps  install llama-cpp-python (builds llama.cpp from source) for the oracle checks
#   make oracle-llama-tools  build llama.cpp's tools (llama-speculative-simple, llama-bench, ...) into build/llama.cpp
#   make test-interop our drafts in llama.cpp's EAGLE-3 speculative decoding vs ours (after oracle-llama-tools),
#                     then the numpy oracle on the default model (and make test-oracle)
#   make test-oracle  aurora dump, tools/compare_dump.py and the numpy oracle of the EAGLE-3 draft, the TTT unroll
#                     and the loss (tests/oracle_eagle3.py) on tiny models (needs numpy: make oracle-deps)
#   make fuzz         libFuzzer on every reader of untrusted input (clang; SECONDS=30 each)
# Switches: NO_BLAS=1, NO_CUDA=1, CUDA_ARCH=sm_90 (default sm_90).

CC ?= cc
NVCC ?= nvcc
PYTHON ?= python3
CUDA_ARCH ?= sm_90
# The checking build: -O2, no fast-math (STYLE.md item 5); OpenMP only parallelises outer loops. No fused
# multiply-adds but those written as such: the kernels' bit-for-bit contracts (the reference's sums, every ISA
# level alike) hold only without contraction, which is GCC's setting under -std=c11 but not clang's.
CFLAGS = -O2 -std=c11 -ffp-contract=off -Wall -Wextra -D_GNU_SOURCE -I.
# Tests #include the whole program (TESTING), so the command-line functions they do not call are unused there.
TEST_CFLAGS = -Wno-unused-function
LDLIBS = -lm -lpthread
SANITIZE = -O1 -g -ffp-contract=off -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -Wno-unknown-pragmas

MODEL_FILE = models/SmolLM2-135M-Instruct.Q4_1.gguf

# libgomp's idle threads spin for milliseconds after every parallel region (its default). Tests run several
# programs at once on a shared machine, where that spinning takes the core the awaited thread needs (measured
# on the project's loaded 2-core machine: test_backends 87 s with the default, 2.4 s with passive waiting), so
# the test recipes wait passively unless the caller set OMP_WAIT_POLICY. Serving must not: a decode step
# has about 400 parallel regions, and a sleeping thread woken through the kernel at each made two-thread
# decoding 5.8x slower (26.7 against 155.3 tok/s after the prefill, `aurora generate`, 2-core Xeon), so the
# demo, the experiments and the benchmarks keep libgomp's default.
TEST_TARGETS = test test-unit test-sanitize test-tsan test-cli test-cli-asan test-model test-cuda test-interop test-oracle fuzz
$(TEST_TARGETS): export OMP_WAIT_POLICY ?= passive

# ---- probes ------------------------------------------------------------------------------------
HASH := \#
OPENMP_FOUND := $(shell printf 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes)
ifeq ($(OPENMP_FOUND),yes)
  CFLAGS += -fopenmp
  $(info OpenMP: found)
else
  $(info OpenMP: not found, single-threaded reference ops)
endif

ifeq ($(NO_BLAS),1)
  $(info OpenBLAS: off (NO_BLAS=1))
else
  BLAS_FOUND := $(shell printf '$(HASH)include <cblas.h>\nint main(void){return 0;}' | $(CC) -x c - -lopenblas -o /dev/null 2>/dev/null && echo yes)
  ifeq ($(BLAS_FOUND),yes)
    CFLAGS += -DUSE_BLAS
    LDLIBS += -lopenblas
    $(info OpenBLAS: found, sgemm fast path on (apt-get install libopenblas-dev provides it))
  else
    $(info OpenBLAS: not found, plain reference matmul only (apt-get install libopenblas-dev for the fast path))
  endif
endif

ifeq ($(NO_CUDA),1)
  $(info CUDA: off (NO_CUDA=1))
else
  NVCC_FOUND := $(shell command -v $(NVCC) 2>/dev/null)
  ifneq ($(NVCC_FOUND),)
    CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC_FOUND))
    CUDA_CFLAGS = -DUSE_CUDA -I$(CUDA_HOME)/include
    CUDA_LDLIBS = -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lpthread -lstdc++
    $(info CUDA: nvcc found at $(NVCC_FOUND), building the CUDA twin for $(CUDA_ARCH))
  else
    $(info CUDA: nvcc not found, CPU only)
  endif
endif

# ---- build -------------------------------------------------------------------------------------
BIN = build
# The build's configuration (the compiler, its flags, the optional parts found or switched off), in a file
# rewritten only when it changes; every object and program depends on it, so `make NO_BLAS=1` after a build
# with OpenBLAS, or `make CC=clang test` after GCC, rebuilds instead of reusing the other configuration's.
# ($(file) rather than a shell: flags may hold quotes; the rule makes it again after `make clean` in one command line)
BUILD_CONFIG := $(CC) | $(CFLAGS) | $(LDLIBS) | $(SANITIZE) | $(CUDA_CFLAGS) $(CUDA_LDLIBS) | $(NVCC) $(CUDA_ARCH)
CONFIG_STAMP := $(BIN)/build-config
ifneq ($(file < $(CONFIG_STAMP)),$(BUILD_CONFIG))
  $(shell mkdir -p $(BIN))
  $(file > $(CONFIG_STAMP),$(BUILD_CONFIG))
endif
$(CONFIG_STAMP):
	$(shell mkdir -p $(BIN))$(file > $(CONFIG_STAMP),$(BUILD_CONFIG))
SOURCES = aurora.c aurora.h cpu_ref.c $(CONFIG_STAMP) $(wildcard base/*.c backends/*.c backends/*.h model/*.c model/*.h speculation/*.c flywheel/*.c interop/*.c)

# The fast CPU kernels (backends/cpu_fast_kernels.c: a hundred unrolled tile shapes, most of the compile
# time) are compiled once per flavour and linked into ./aurora and every test (backends/cpu_fast.h says
# why): the kernels the tests check are the program's, byte for byte. `cc aurora.c` alone still works.
FAST_KERNELS = $(BIN)/cpu_fast_kernels.o
FAST_KERNELS_ASAN = $(BIN)/cpu_fast_kernels_asan.o
KERNEL_SOURCES = backends/cpu_fast_kernels.c backends/cpu_fast.h aurora.h $(CONFIG_STAMP)
LINK_KERNELS = -DFAST_KERNELS_SEPARATE

.PHONY: oracle-llama-tools test-interop test-oracle bench-spec
.PHONY: bench-cuda bench-ops test-cli-asan fuzz all model demo test test-unit test-sanitize test-tsan test-cli test-model test-cuda bench oracle-deps clean

all: aurora

ifneq ($(CUDA_CFLAGS),)
NVCC_FLAGS = -O2 -fmad=false --default-stream per-thread -arch=$(CUDA_ARCH) -I.
$(BIN)/kernels.o: kernels.cu aurora.h $(CONFIG_STAMP) | $(BIN)
	@echo "$(NVCC) $(NVCC_FLAGS) -c kernels.cu -o $@"
	@$(NVCC) $(NVCC_FLAGS) -c kernels.cu -o $@ || { echo "error: $(NVCC) could not build kernels.cu for $(CUDA_ARCH) (an \
	older CUDA, or a host compiler it does not take): make NO_CUDA=1 builds without the CUDA twin; CUDA_ARCH=sm_XY picks \
	another GPU"; exit 1; }

aurora: $(SOURCES) $(BIN)/kernels.o $(FAST_KERNELS)
	$(CC) $(CFLAGS) $(CUDA_CFLAGS) $(LINK_KERNELS) aurora.c $(FAST_KERNELS) $(BIN)/kernels.o -o $@ $(LDLIBS) $(CUDA_LDLIBS)
else
aurora: $(SOURCES) $(FAST_KERNELS)
	$(CC) $(CFLAGS) $(LINK_KERNELS) aurora.c $(FAST_KERNELS) -o $@ $(LDLIBS)
endif

$(FAST_KERNELS): $(KERNEL_SOURCES) | $(BIN)
	$(CC) $(CFLAGS) -c backends/cpu_fast_kernels.c -o $@

$(FAST_KERNELS_ASAN): $(KERNEL_SOURCES) | $(BIN)
	$(CC) $(SANITIZE) -std=c11 -Wall -Wextra -D_GNU_SOURCE -I. -c backends/cpu_fast_kernels.c -o $@

$(BIN):
	mkdir -p $(BIN)

# ---- default model -----------------------------------------------------------------------------
model: $(MODEL_FILE)

$(MODEL_FILE):
	sh tools/fetch_model.sh

# the day-0 flywheel: a fresh draft learning online from mixed traffic, its acceptance-length chart
# (out/day0/acceptance.svg) and the measured speedup (a few minutes on 2 cores)
# the day-0 story at demo size: a fresh draft learns online from DEMO_REQUESTS requests (the held-back curve
# measured every 12), then plain decoding, the learned draft and the hybrid serve 16 requests none of them saw
demo: aurora $(MODEL_FILE)
	EVAL="--eval-every 12 --eval-requests 8" SPEEDUP_REQUESTS=16 AURORA_DEVICE="$(DEVICE)" sh tools/experiments.sh day0 $(DEMO_REQUESTS)

DEMO_REQUESTS ?= 48

EXPERIMENTS = experiment-day0 experiment-shift experiment-mixed experiment-sources experiment-live experiment-sync experiment-discard experiment-ttt experiment-selfstart experiment-study
.PHONY: $(EXPERIMENTS)
$(EXPERIMENTS): aurora $(MODEL_FILE)
	sh tools/experiments.sh $(subst experiment-,,$@) $(REQUESTS)

# ---- tests -------------------------------------------------------------------------------------
UNIT_TESTS = test_ops test_fast test_gguf test_tokenizer test_model test_draft test_speculative test_backward test_traffic test_trainer test_backends test_hardening test_suffix test_adaptive test_interop

$(BIN)/%: tests/%.c tests/test_common.h $(SOURCES) $(FAST_KERNELS) | $(BIN)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(LINK_KERNELS) $< $(FAST_KERNELS) -o $@ $(LDLIBS)

$(BIN)/%_asan: tests/%.c tests/test_common.h $(SOURCES) $(FAST_KERNELS_ASAN) | $(BIN)
	$(CC) $(SANITIZE) -std=c11 -Wall -Wextra -Wno-unused-function -D_GNU_SOURCE -I. $(LINK_KERNELS) $< $(FAST_KERNELS_ASAN) -o $@ -lm -lpthread

# Every test program is built first, as many at a time as there are cores (each is one translation unit of
# the whole program), then the five groups of tests run as many at a time as there are cores too, each
# group's output held back and printed whole when it ends (--output-sync). The longest group (the command
# line under ASan: about 170 s on a 2-core EPYC, against about 150 s for the other four together) starts
# first. Tests that write files name them by process id, so a test and its sanitized build can run at once.
JOBS ?= $(shell env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 2)
TEST_PROGRAMS = aurora $(addprefix $(BIN)/,$(UNIT_TESTS)) $(addprefix $(BIN)/,$(addsuffix _asan,$(SANITIZED_TESTS))) \
                $(BIN)/test_trainer_tsan $(BIN)/aurora_asan
test:
	@$(MAKE) --no-print-directory -j$(JOBS) $(TEST_PROGRAMS)
	@$(MAKE) --no-print-directory -j$(JOBS) --output-sync=target test-cli-asan test-sanitize test-unit test-tsan test-cli
	@echo "make test: all passed"

# Tests run their tiny models on one thread: a second OpenMP thread buys nothing at these sizes, and on a
# shared machine a team waiting at every barrier for a descheduled thread made the suite 20x slower
# (measured here: test_speculative 85 s with two threads under load, 4 s with one). Thread counts that
# matter are tested explicitly (test_fast: one thread against two, bit for bit).
TEST_ENV = OMP_NUM_THREADS=1
test-unit: $(addprefix $(BIN)/,$(UNIT_TESTS))
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $(TEST_ENV) ./$(BIN)/$$t; done

# the parsers (GGUF, tokenizer, traffic, safetensors) and the model on malformed and hard inputs, the
# hardening, and the backend orchestration (through the simulated device's memory paths), under ASan + UBSan
SANITIZED_TESTS = test_fast test_gguf test_tokenizer test_model test_draft test_speculative test_backward test_traffic test_trainer test_backends test_hardening test_suffix test_adaptive test_interop
test-sanitize: $(addprefix $(BIN)/,$(addsuffix _asan,$(SANITIZED_TESTS)))
	@set -e; for t in $(SANITIZED_TESTS); do echo "== $${t}_asan"; $(TEST_ENV) ./$(BIN)/$${t}_asan; done

# serving and training threads under ThreadSanitizer (the hot-swap test); without OpenMP and OpenBLAS,
# whose uninstrumented threads TSan cannot see into
$(BIN)/test_trainer_tsan: tests/test_trainer.c tests/test_common.h $(SOURCES) | $(BIN)
	$(CC) -O1 -g -ffp-contract=off -fsanitize=thread -std=c11 -Wall -Wextra -Wno-unused-function -Wno-unknown-pragmas -D_GNU_SOURCE -I. $< -o $@ -lm -lpthread

test-tsan: $(BIN)/test_trainer_tsan
	./$(BIN)/test_trainer_tsan --hot-swap-only

test-cli: aurora
	@echo "== test_cli"; $(TEST_ENV) sh tests/test_cli.sh ./aurora
	@echo "== test_interop_cli"; $(TEST_ENV) sh tests/test_interop_cli.sh ./aurora

# the command line under ASan + UBSan: every bad input, signal, full disk and FIFO of test_cli.sh
$(BIN)/aurora_asan: $(SOURCES) $(FAST_KERNELS_ASAN) | $(BIN)
	$(CC) $(SANITIZE) -std=c11 -Wall -Wextra -Wno-unused-function -D_GNU_SOURCE -I. $(LINK_KERNELS) aurora.c $(FAST_KERNELS_ASAN) -o $@ -lm -lpthread

# (a sanitizer's exit status is 1 by default, which is also an error path's: 86 tells them apart, and
# cli_common.sh fails any check whose output holds a sanitizer's report)
SANITIZER_ENV = ASAN_OPTIONS=exitcode=86 UBSAN_OPTIONS=exitcode=86:print_stacktrace=1 LSAN_OPTIONS=exitcode=86
test-cli-asan: $(BIN)/aurora_asan
	@echo "== test_cli under ASan + UBSan"; $(TEST_ENV) $(SANITIZER_ENV) sh tests/test_cli.sh ./$(BIN)/aurora_asan

test-model: aurora $(BIN)/test_default_model $(BIN)/test_tokenizer $(BIN)/test_fast
	@test -f $(MODEL_FILE) || { echo "test-model: $(MODEL_FILE) is missing; run 'make model' first"; exit 1; }
	@echo "== test_fast on the model's weights"; ./$(BIN)/test_fast $(MODEL_FILE)
	@echo "== test_default_model"; ./$(BIN)/test_default_model $(MODEL_FILE)
	@echo "== oracle: tokenizer vs llama.cpp"; $(PYTHON) tests/oracle_tokenizer.py ./$(BIN)/test_tokenizer $(MODEL_FILE)
	@echo "== oracle: CLI, logits and greedy output vs llama.cpp"; $(PYTHON) tests/oracle.py ./aurora $(MODEL_FILE)

# the parity suite with the CUDA table linked in: every op, a verify pass, the draft and K trainer steps
# against the reference on every backend this build and machine have (no GPU: CUDA reported as skipped)
ifneq ($(CUDA_CFLAGS),)
$(BIN)/test_backends_cuda: tests/test_backends.c tests/test_common.h $(SOURCES) $(BIN)/kernels.o $(FAST_KERNELS) | $(BIN)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(CUDA_CFLAGS) $(LINK_KERNELS) $< $(FAST_KERNELS) $(BIN)/kernels.o -o $@ $(LDLIBS) $(CUDA_LDLIBS)

# where nvidia-smi lists a GPU the CUDA table must run (REQUIRE_CUDA=1 turns its skip into a failure)
test-cuda: $(BIN)/test_backends_cuda
	@if nvidia-smi -L > /dev/null 2>&1; then echo "test-cuda: a GPU is listed (nvidia-smi -L): the CUDA table must run"; \
	    REQUIRE_CUDA=1 ./$(BIN)/test_backends_cuda; else ./$(BIN)/test_backends_cuda; fi
else
test-cuda: $(BIN)/test_backends
	@echo "test-cuda: nvcc not found (or NO_CUDA=1): the CUDA table is not built; the CPU tables only"
	./$(BIN)/test_backends
endif

# ---- benchmarks and tools ----------------------------------------------------------------------
$(BIN)/bench_speed: tools/bench_speed.c tools/bench_common.h $(SOURCES) $(FAST_KERNELS) | $(BIN)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(LINK_KERNELS) $< $(FAST_KERNELS) -o $@ $(LDLIBS)

bench: aurora $(MODEL_FILE) $(BIN)/bench_speed
	PYTHON=$(PYTHON) sh tools/bench.sh ./aurora ./$(BIN)/bench_speed $(MODEL_FILE) $(BIN)/llama.cpp/bin

# bench_speed on the CUDA table alone (a CUDA build and a GPU): decode, prefill, verify cost by node count,
# the draft step and speculative generation, against the device's copy bandwidth; BENCH_MODEL=FILE picks the model
BENCH_MODEL ?= $(MODEL_FILE)
BENCH_ROUNDS ?= 5
ifneq ($(CUDA_CFLAGS),)
$(BIN)/bench_speed_cuda: tools/bench_speed.c tools/bench_common.h $(SOURCES) $(BIN)/kernels.o $(FAST_KERNELS) | $(BIN)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(CUDA_CFLAGS) $(LINK_KERNELS) $< $(FAST_KERNELS) $(BIN)/kernels.o -o $@ $(LDLIBS) $(CUDA_LDLIBS)

bench-cuda: $(BIN)/bench_speed_cuda
	@test -f $(BENCH_MODEL) || { echo "bench-cuda: $(BENCH_MODEL) is missing; run 'make model' or set BENCH_MODEL"; exit 1; }
	./$(BIN)/bench_speed_cuda $(BENCH_MODEL) $(BENCH_ROUNDS) --backend cuda
else
bench-cuda:
	@echo "bench-cuda: nvcc not found (or NO_CUDA=1): there is no CUDA table to measure"; exit 1
endif

# speculative decoding side by side: llama.cpp (plain, our draft, n-gram) and ours (plain, our draft, lookup,
# suffix) on the same prompts, file and threads (needs make oracle-llama-tools; trains test-interop's draft once)
bench-spec: aurora $(MODEL_FILE)
	@test -x $(BIN)/llama.cpp/bin/llama-speculative-simple || { echo "bench-spec: run 'make oracle-llama-tools' first"; exit 1; }
	$(PYTHON) tools/bench_spec.py ./aurora $(MODEL_FILE) $(BIN)/llama.cpp/bin $(INTEROP_WORK)

# the fast CPU ops, one by one, on the default model's shapes and the machine's measured bandwidth
$(BIN)/bench_ops: tools/bench_ops.c tools/bench_common.h $(SOURCES) $(FAST_KERNELS) | $(BIN)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(LINK_KERNELS) $< $(FAST_KERNELS) -o $@ $(LDLIBS)

bench-ops: $(BIN)/bench_ops $(MODEL_FILE)
	./$(BIN)/bench_ops $(MODEL_FILE)

# libFuzzer harnesses (clang): the GGUF reader, the JSONL traffic reader, the tokenizer and prompt path, the
# safetensors and config.json readers (seeded with a tiny model's exported SpecForge draft; byte 0 picks the reader);
# each runs SECONDS seconds from its corpus in build/ (seeded with valid inputs), e.g. make fuzz SECONDS=60
FUZZERS = fuzz_gguf fuzz_jsonl fuzz_tokenizer fuzz_safetensors
SECONDS ?= 30
FUZZ_CC ?= clang
$(BIN)/fuzz_%: tests/fuzz_%.c $(SOURCES) | $(BIN)
	$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE -I. $< -lm -lpthread -o $@

fuzz: aurora $(addprefix $(BIN)/,$(FUZZERS)) $(BIN)/test_gguf
	@mkdir -p $(BIN)/corpus_gguf $(BIN)/corpus_jsonl $(BIN)/corpus_tokenizer $(BIN)/seeds_gguf
	@./$(BIN)/test_gguf $(BIN)/seeds_gguf > /dev/null
	./$(BIN)/fuzz_gguf -max_total_time=$(SECONDS) -print_final_stats=1 $(BIN)/corpus_gguf $(BIN)/seeds_gguf
	./$(BIN)/fuzz_jsonl -max_total_time=$(SECONDS) -max_len=8192 -print_final_stats=1 $(BIN)/corpus_jsonl traffic
	./$(BIN)/fuzz_tokenizer -max_total_time=$(SECONDS) -max_len=4096 -print_final_stats=1 $(BIN)/corpus_tokenizer traffic
	@rm -rf $(BIN)/fuzz_seeds && mkdir -p $(BIN)/fuzz_seeds/safetensors $(BIN)/corpus_safetensors
	@./aurora tiny-model -o $(BIN)/fuzz_seeds/target.gguf --layers 8 > /dev/null 2>&1
	@./aurora draft-init -m $(BIN)/fuzz_seeds/target.gguf -o $(BIN)/fuzz_seeds/draft.gguf --draft-vocab 100 > /dev/null 2>&1
	@./aurora draft-export -m $(BIN)/fuzz_seeds/target.gguf --draft $(BIN)/fuzz_seeds/draft.gguf --format specforge \
	    -o $(BIN)/fuzz_seeds/draft > /dev/null 2>&1
	@{ printf '\000'; cat $(BIN)/fuzz_seeds/draft/model.safetensors; } > $(BIN)/fuzz_seeds/safetensors/weights
	@{ printf '\001'; cat $(BIN)/fuzz_seeds/draft/config.json; } > $(BIN)/fuzz_seeds/safetensors/config
	./$(BIN)/fuzz_safetensors -max_total_time=$(SECONDS) -print_final_stats=1 $(BIN)/corpus_safetensors $(BIN)/fuzz_seeds/safetensors

oracle-deps:
	CMAKE_ARGS="$$(sh tools/llama_isa.sh)" $(PYTHON) -m pip install llama-cpp-python==0.3.36

# llama.cpp's own tools from the same source package (the EAGLE-3 oracle, side-by-side speed), built with
# JOBS parallel jobs (default: the cores, as make test's) under nice
oracle-llama-tools:
	sh tools/build_llama_tools.sh $(JOBS)

# our draft in llama.cpp's EAGLE-3 speculative decoding (needs make oracle-llama-tools and the default
# model): identical greedy outputs on 22 prompts, acceptance compared; INTEROP_WORK keeps the F32 target
# and the trained draft between runs
INTEROP_WORK ?= $(BIN)/interop
test-interop: aurora $(BIN)/spec_passes $(MODEL_FILE)
	@test -x $(BIN)/llama.cpp/bin/llama-speculative-simple || { echo "test-interop: run 'make oracle-llama-tools' first"; exit 1; }
	$(PYTHON) tests/test_interop.py ./aurora ./$(BIN)/spec_passes $(MODEL_FILE) $(BIN)/llama.cpp/bin $(INTEROP_WORK)
	PYTHON=$(PYTHON) sh tests/test_oracle.sh ./aurora $(INTEROP_WORK)/target-f32.gguf $(INTEROP_WORK)/draft.gguf

# aurora dump (every named intermediate of a request), tools/compare_dump.py (two dumps through the tolerance
# table) and the independent numpy implementation of the EAGLE-3 draft, the TTT unroll and the forward-KL loss
# (tests/oracle_eagle3.py, with its negative controls), on project-made tiny models: about 30 s. numpy only
# (make oracle-deps installs it with llama-cpp-python); make test-interop runs it on the default model too
test-oracle: aurora
	PYTHON=$(PYTHON) sh tests/test_oracle.sh ./aurora

clean:
	rm -rf $(BIN) aurora
