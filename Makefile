# Aurora in C. The CPU build always works; OpenBLAS and nvcc are probed, announced and optional.
#   make              build ./aurora (OpenBLAS fast path and CUDA twin when found)
#   make model        fetch the default model (SmolLM2-135M-Instruct Q4_1 GGUF) into models/
#   make demo         the main job on the default model
#   make test         unit and end-to-end tests on project-made tiny models (no network, no model file)
#   make test-model   tests on the default model (and llama.cpp oracle checks when llama-cpp-python is installed)
#   make test-cuda    CPU/GPU parity, tensor by tensor (says so and exits 0 where there is no GPU)
#   make bench        speed figures on the default model
#   make bench-ops    the fast CPU ops against the reference and OpenBLAS, shape by shape (not a test)
#   make oracle-deps  install llama-cpp-python (builds llama.cpp from source) for the oracle checks
# Switches: NO_BLAS=1, NO_CUDA=1, CUDA_ARCH=sm_90 (default sm_90).

CC ?= cc
NVCC ?= nvcc
PYTHON ?= python3
CUDA_ARCH ?= sm_90
# The checking build: -O2, no fast-math (STYLE.md item 5); OpenMP only parallelises outer loops.
CFLAGS = -O2 -std=c11 -Wall -Wextra -Wno-unused-function -D_GNU_SOURCE -I.
LDLIBS = -lm -lpthread
SANITIZE = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -Wno-unknown-pragmas

MODEL_FILE = models/SmolLM2-135M-Instruct.Q4_1.gguf

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
SOURCES = aurora.c aurora.h util.c cpu_ref.c backends/cpu_fast.c gguf.c tokenizer.c unicode_data.h sampling.c target.c draft.c speculative.c recorder.c trainer.c generate.c traffic.c plot.c flywheel.c traffic.c plot.c
BIN = build

.PHONY: all model demo bench-ops experiment-day0 experiment-shift experiment-mixed test test-unit test-sanitize test-tsan test-cli test-model test-cuda bench oracle-deps clean

all: aurora

ifneq ($(CUDA_CFLAGS),)
$(BIN)/kernels.o: kernels.cu aurora.h | $(BIN)
	$(NVCC) -O2 -arch=$(CUDA_ARCH) -I. -c kernels.cu -o $@

aurora: $(SOURCES) $(BIN)/kernels.o
	$(CC) $(CFLAGS) $(CUDA_CFLAGS) aurora.c $(BIN)/kernels.o -o $@ $(LDLIBS) $(CUDA_LDLIBS)
else
aurora: $(SOURCES)
	$(CC) $(CFLAGS) aurora.c -o $@ $(LDLIBS)
endif

$(BIN):
	mkdir -p $(BIN)

# ---- default model -----------------------------------------------------------------------------
model: $(MODEL_FILE)

$(MODEL_FILE):
	sh tools/fetch_model.sh

# the day-0 flywheel: a fresh draft learning online from mixed traffic, its acceptance-length chart
# (out/day0/acceptance.svg) and the measured speedup (a few minutes on 2 cores)
demo: aurora $(MODEL_FILE)
	sh tools/experiments.sh day0 $(DEMO_REQUESTS)

DEMO_REQUESTS ?= 48

experiment-day0 experiment-shift experiment-mixed: aurora $(MODEL_FILE)
	sh tools/experiments.sh $(subst experiment-,,$@) $(REQUESTS)

# ---- tests -------------------------------------------------------------------------------------
UNIT_TESTS = test_ops test_fast test_gguf test_tokenizer test_model test_draft test_speculative test_backward test_traffic test_trainer

$(BIN)/%: tests/%.c tests/test_common.h $(SOURCES) | $(BIN)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

$(BIN)/%_asan: tests/%.c tests/test_common.h $(SOURCES) | $(BIN)
	$(CC) $(SANITIZE) -std=c11 -Wall -Wextra -Wno-unused-function -D_GNU_SOURCE -I. $< -o $@ -lm -lpthread

test: test-unit test-sanitize test-tsan test-cli
	@echo "make test: all passed"

test-unit: $(addprefix $(BIN)/,$(UNIT_TESTS))
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; ./$(BIN)/$$t; done

# the parsers (GGUF, tokenizer) and the model on malformed and hard inputs, under ASan + UBSan
test-sanitize: $(BIN)/test_fast_asan $(BIN)/test_gguf_asan $(BIN)/test_tokenizer_asan $(BIN)/test_model_asan $(BIN)/test_draft_asan $(BIN)/test_speculative_asan $(BIN)/test_backward_asan $(BIN)/test_traffic_asan $(BIN)/test_trainer_asan
	@set -e; for t in test_fast_asan test_gguf_asan test_tokenizer_asan test_model_asan test_draft_asan test_speculative_asan test_backward_asan test_traffic_asan test_trainer_asan; do echo "== $$t"; ./$(BIN)/$$t; done

# serving and training threads under ThreadSanitizer (the hot-swap test); without OpenMP and OpenBLAS,
# whose uninstrumented threads TSan cannot see into
$(BIN)/test_trainer_tsan: tests/test_trainer.c tests/test_common.h $(SOURCES) | $(BIN)
	$(CC) -O1 -g -fsanitize=thread -std=c11 -Wall -Wextra -Wno-unused-function -Wno-unknown-pragmas -D_GNU_SOURCE -I. $< -o $@ -lm -lpthread

test-tsan: $(BIN)/test_trainer_tsan
	./$(BIN)/test_trainer_tsan --hot-swap-only

test-cli: aurora
	@echo "== test_cli"; sh tests/test_cli.sh ./aurora

test-model: aurora $(BIN)/test_default_model $(BIN)/test_tokenizer $(BIN)/test_fast
	@test -f $(MODEL_FILE) || { echo "test-model: $(MODEL_FILE) is missing; run 'make model' first"; exit 1; }
	@echo "== test_fast on the model's weights"; ./$(BIN)/test_fast $(MODEL_FILE)
	@echo "== test_default_model"; ./$(BIN)/test_default_model $(MODEL_FILE)
	@echo "== oracle: tokenizer vs llama.cpp"; $(PYTHON) tests/oracle_tokenizer.py ./$(BIN)/test_tokenizer $(MODEL_FILE)
	@echo "== oracle: CLI, logits and greedy output vs llama.cpp"; $(PYTHON) tests/oracle.py ./aurora $(MODEL_FILE)

ifneq ($(CUDA_CFLAGS),)
$(BIN)/test_cuda: tests/test_cuda.c tests/test_common.h $(SOURCES) $(BIN)/kernels.o | $(BIN)
	$(CC) $(CFLAGS) $(CUDA_CFLAGS) $< $(BIN)/kernels.o -o $@ $(LDLIBS) $(CUDA_LDLIBS)

test-cuda: $(BIN)/test_cuda
	./$(BIN)/test_cuda
else
test-cuda:
	@echo "test-cuda: nvcc not found (or NO_CUDA=1); the CUDA twin was not built, nothing to test"
endif

# ---- benchmarks and tools ----------------------------------------------------------------------
$(BIN)/bench_verify: tools/bench_verify.c $(SOURCES) | $(BIN)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

bench: aurora $(MODEL_FILE) $(BIN)/bench_verify
	sh tools/bench.sh ./aurora $(MODEL_FILE)
	./$(BIN)/bench_verify $(MODEL_FILE)

# the fast CPU ops, one by one, on the default model's shapes and the machine's measured bandwidth
$(BIN)/bench_ops: tools/bench_ops.c $(SOURCES) | $(BIN)
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

bench-ops: $(BIN)/bench_ops $(MODEL_FILE)
	./$(BIN)/bench_ops $(MODEL_FILE)

oracle-deps:
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	  $(PYTHON) -m pip install llama-cpp-python==0.3.36

clean:
	rm -rf $(BIN) aurora
