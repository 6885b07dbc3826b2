/*
bench_ops.c: the fast CPU ops (backends/cpu_fast.c), shape by shape, against the reference and OpenBLAS,
on the default model's own weight matrices, with the machine's measured read bandwidth beside them. A
benchmark, not a test: it prints numbers and asserts nothing.

For each matmul shape of the model and T input rows it times one call of
  fast     matmul_forward_fast on the weights in their stored type (Q4_1 layers, Q8_0 LM head)
  ref      matmul_forward_cpu on fp32 copies (the readable reference)
  blas     OpenBLAS sgemm on the same fp32 copies (built with USE_BLAS)
cycling over the 30 layers' matrices of that shape, as a decode step does (so a matrix is not served from
the core's own cache on the next call), alternating the variants pass by pass (so drift in the load of a
shared machine hits them alike) and keeping each one's fastest pass. Then the whole step: one token's 211
matmuls (30 layers x 7 + the head) in order, against the memory limit, weight bytes / read bandwidth.

usage: bench_ops MODEL.gguf
*/
#define TESTING
#include "../aurora.c"

// ----------------------------------------------------------------------------
// the machine

static void cpu_model_name(char* name, size_t size) {
    snprintf(name, size, "unknown CPU");
    FILE* f = fopen("/proc/cpuinfo", "r");
    if (!f) { return; }
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char* colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ' || *colon == '\t') { colon++; }
                snprintf(name, size, "%s", colon);
                name[strcspn(name, "\n")] = 0;
            }
            break;
        }
    }
    fclose(f);
}

static int n_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Sum of n floats with 8 independent accumulators (so the adds keep up with memory), widest vectors the
// CPU has; the result is only printed to keep the reads alive.
#if FAST_X86
static FAST_AVX512_TARGET float bench_sum_avx512(const float* x, size_t n) {
    __m512 acc[8];
    for (int k = 0; k < 8; k++) { acc[k] = _mm512_setzero_ps(); }
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        for (int k = 0; k < 8; k++) { acc[k] = _mm512_add_ps(acc[k], _mm512_loadu_ps(x + i + 16 * k)); }
    }
    for (int k = 1; k < 8; k++) { acc[0] = _mm512_add_ps(acc[0], acc[k]); }
    float sum = _mm512_reduce_add_ps(acc[0]);
    for (; i < n; i++) { sum += x[i]; }
    return sum;
}
#endif
static float bench_sum(const float* x, size_t n) {
#if FAST_X86
    if (fast_isa_current() == FAST_ISA_AVX512) { return bench_sum_avx512(x, n); }
#endif
    float acc[32] = {0};
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        #pragma omp simd
        for (int k = 0; k < 32; k++) { acc[k] += x[i + k]; }
    }
    float sum = 0.0f;
    for (int k = 0; k < 32; k++) { sum += acc[k]; }
    for (; i < n; i++) { sum += x[i]; }
    return sum;
}

// Read bandwidth in GB/s: every thread sums its share of a buffer of `bytes`, best of `repeats`.
static double read_bandwidth(size_t bytes, int repeats) {
    size_t n = bytes / sizeof(float);
    float* buffer = mallocCheck(n * sizeof(float));
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { buffer[i] = (float)(i & 7); }   // touch every page, on its thread
    double best = 1e30;
    volatile float sink = 0.0f;
    for (int r = 0; r < repeats; r++) {
        double start = now_seconds();
        float total = 0.0f;
        #pragma omp parallel reduction(+:total)
        {
            int parts = 1, part = 0;
#ifdef _OPENMP
            parts = omp_get_num_threads();
            part = omp_get_thread_num();
#endif
            size_t first = n * part / parts, last = n * (part + 1) / parts;
            total += bench_sum(buffer + first, last - first);
        }
        double seconds = now_seconds() - start;
        sink += total;
        if (seconds < best) { best = seconds; }
    }
    (void)sink;
    free(buffer);
    return (double)bytes / best / 1e9;
}

// ----------------------------------------------------------------------------
// the model's matrices

typedef struct {
    const char* name;        // for the table
    const char* tensor;      // printf pattern of the GGUF name, %d the layer
    int per_layer;           // 1: one per layer (30 instances); 0: one in all (the head)
    int count_per_token;     // matmuls of this shape in one token's forward pass (per layer, or 1)
} Shape;

static const Shape SHAPES[] = {
    {"576->576 (q, output)", "blk.%d.attn_q.weight", 1, 2},
    {"576->192 (k, v)", "blk.%d.attn_k.weight", 1, 2},
    {"576->1536 (gate, up)", "blk.%d.ffn_gate.weight", 1, 2},
    {"1536->576 (down)", "blk.%d.ffn_down.weight", 1, 1},
    {"576->49152 (LM head)", "token_embd.weight", 0, 1},
};
#define N_SHAPES (int)(sizeof(SHAPES) / sizeof(SHAPES[0]))

typedef struct {
    int n;                  // instances (layers)
    int C, OC, type;
    const void* stored[64]; // in the file's type, inside the mapping
    float* fp32[64];        // (OC, C) dequantised copies for the reference and OpenBLAS
    size_t stored_bytes;    // of one instance
} Instances;

static int load_instances(Instances* in, const GGUFFile* gguf, const Shape* shape, int n_layers, int with_fp32) {
    memset(in, 0, sizeof(*in));
    in->n = shape->per_layer ? n_layers : 1;
    if (in->n > 64) { in->n = 64; }
    for (int l = 0; l < in->n; l++) {
        char name[128];
        snprintf(name, sizeof(name), shape->tensor, l);
        const GGUFTensor* t = gguf_find_tensor(gguf, name);
        if (!t || t->n_dims != 2) { fprintf(stderr, "error: %s: no 2-D tensor %s\n", gguf->path, name); return -1; }
        in->C = (int)t->shape[0];
        in->OC = (int)t->shape[1];
        in->type = t->type;
        in->stored[l] = t->data;
        in->stored_bytes = t->n_bytes;
        if (with_fp32) {
            in->fp32[l] = mallocCheck((size_t)in->OC * in->C * sizeof(float));
            dequantize_row(t->type, t->data, in->fp32[l], t->n_elements);
        }
    }
    return 0;
}

static void free_instances(Instances* in) {
    for (int l = 0; l < in->n; l++) { free(in->fp32[l]); }
}

// ----------------------------------------------------------------------------
// timing

enum { VARIANT_FAST, VARIANT_FAST_FP32, VARIANT_REF, VARIANT_BLAS, N_VARIANTS };
static const char* VARIANT_LABELS[] = {"fast", "fast fp32", "ref", "blas"};

static int variant_available(int variant) {
    if (variant == VARIANT_FAST_FP32) { return fast_isa_current() == FAST_ISA_AVX512_VNNI; }   // else the same as fast
#ifdef USE_BLAS
    return 1;
#else
    return variant != VARIANT_BLAS;
#endif
}

static void run_variant(int variant, float* out, const float* inp, const Instances* in, int l, int T) {
    if (variant == VARIANT_FAST || variant == VARIANT_FAST_FP32) {
        Matrix weight = {in->stored[l], in->type};
        fast_int8_activations = variant == VARIANT_FAST;
        matmul_forward_fast(out, inp, weight, T, in->C, in->OC);
        fast_int8_activations = 1;
    } else if (variant == VARIANT_REF) {
        matmul_forward_cpu(out, inp, in->fp32[l], T, in->C, in->OC);
    } else {
#ifdef USE_BLAS
        matmul_forward_blas(out, inp, in->fp32[l], T, in->C, in->OC);
#endif
    }
}

// Seconds per call of each variant: passes over every instance, alternating variants pass by pass; for
// each instance its fastest call is kept (an interruption by another process spoils one call, not a
// pass), and the result is the mean of those over the instances. A variant stops after `budget` seconds
// (at least 3 passes) to keep the slow reference short.
static void time_shape(double seconds[N_VARIANTS], const Instances* in, int T, const float* inp, float* out,
                       double budget) {
    double spent[N_VARIANTS] = {0};
    int passes[N_VARIANTS] = {0};
    double best[N_VARIANTS][64];
    for (int v = 0; v < N_VARIANTS; v++) { for (int l = 0; l < in->n; l++) { best[v][l] = 1e30; } }
    for (int round = 0; round < 60; round++) {
        int any = 0;
        for (int v = 0; v < N_VARIANTS; v++) {
            if (!variant_available(v) || (passes[v] >= 3 && spent[v] > budget)) { continue; }
            any = 1;
            for (int l = 0; l < in->n; l++) {
                double start = now_seconds();
                run_variant(v, out, inp, in, l, T);
                double call = now_seconds() - start;
                spent[v] += call;
                if (call < best[v][l]) { best[v][l] = call; }
            }
            passes[v]++;
        }
        if (!any) { break; }
    }
    for (int v = 0; v < N_VARIANTS; v++) {
        seconds[v] = -1;
        if (!variant_available(v)) { continue; }
        double sum = 0;
        for (int l = 0; l < in->n; l++) { sum += best[v][l]; }
        seconds[v] = sum / in->n;
    }
}

// ----------------------------------------------------------------------------

int main(int argc, char** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]); return 2; }
    GGUFFile gguf;
    Error err;
    if (gguf_open(&gguf, argv[1], &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    blas_init();
    char cpu[256];
    cpu_model_name(cpu, sizeof(cpu));
    int threads = n_threads();
    printf("CPU: %s, %d threads (OpenMP), fast path: %s\n", cpu, threads, fast_isa_name(fast_isa_current()));

    // weight bytes of one token's matmuls, in the stored types and in fp32
    int n_layers = 30;
    double stored_bytes = 0, fp32_bytes = 0;
    Instances shapes[N_SHAPES];
    for (int s = 0; s < N_SHAPES; s++) {
        if (load_instances(&shapes[s], &gguf, &SHAPES[s], n_layers, 0) != 0) { return 1; }
        double copies = SHAPES[s].count_per_token * (SHAPES[s].per_layer ? n_layers : 1);
        stored_bytes += copies * shapes[s].stored_bytes;
        fp32_bytes += copies * (double)shapes[s].C * shapes[s].OC * 4;
    }

    double bandwidth_dram = read_bandwidth((size_t)1 << 30, 5);
    double bandwidth_model = read_bandwidth((size_t)stored_bytes, 10);
    printf("read bandwidth (%d threads, best of several sums): %.1f GB/s over 1 GiB, %.1f GB/s over %.0f MB "
           "(the model's weight bytes, which may stay in a large L3)\n", threads, bandwidth_dram, bandwidth_model,
           stored_bytes / 1e6);
    printf("weights of one token's matmuls: %.1f MB stored (Q4_1 layers, Q8_0 head), %.1f MB as fp32\n\n",
           stored_bytes / 1e6, fp32_bytes / 1e6);

    // ---- shape by shape
    const int Ts[] = {1, 2, 4, 6, 8, 12, 16};
    const int n_Ts = (int)(sizeof(Ts) / sizeof(Ts[0]));
    float* inp = mallocCheck((size_t)16 * 1536 * sizeof(float));
    float* out = mallocCheck((size_t)16 * 49152 * sizeof(float));
    uint64_t rng = 7;
    for (size_t i = 0; i < (size_t)16 * 1536; i++) { inp[i] = 2.0f * random_f32(&rng) - 1.0f; }
    printf("per call (microseconds), cycling over the model's matrices of each shape; GB/s: weight bytes read per "
           "second (stored type for fast, fp32 for ref and blas); T/1: time over the 1-row time.\n"
           "fast: int8 activations where the CPU has AVX-512 VNNI (else = fast fp32); fast fp32: fp32 activations; "
           "ref: the reference on fp32 weights; blas: OpenBLAS sgemm on fp32 weights\n");
    printf("%-22s %-5s %3s %9s %9s %9s %9s %7s %7s %7s %7s %7s\n", "shape", "type", "T", "fast", "fast fp32", "ref",
           "blas", "GB/s", "blasGB/s", "T/1", "fp32T/1", "blasT/1");
    double step_estimate[N_VARIANTS][16] = {{0}};   // [variant][T index]: one token's matmuls, summed
    for (int s = 0; s < N_SHAPES; s++) {
        Instances* in = &shapes[s];
        free_instances(in);
        load_instances(in, &gguf, &SHAPES[s], n_layers, 1);
        double one_row[N_VARIANTS] = {0};
        double copies = SHAPES[s].count_per_token * (SHAPES[s].per_layer ? n_layers : 1);
        for (int k = 0; k < n_Ts; k++) {
            int T = Ts[k];
            double seconds[N_VARIANTS];
            time_shape(seconds, in, T, inp, out, 0.3);
            if (T == 1) { memcpy(one_row, seconds, sizeof(one_row)); }
            for (int v = 0; v < N_VARIANTS; v++) { step_estimate[v][k] += copies * seconds[v]; }
            double fp32_bytes_one = (double)in->C * in->OC * 4;
            printf("%-22s %-5s %3d %9.1f %9.1f %9.1f %9.1f %7.1f %7.1f %6.2fx %6.2fx %6.2fx\n", SHAPES[s].name,
                   tensor_type_name(in->type), T, seconds[VARIANT_FAST] * 1e6, seconds[VARIANT_FAST_FP32] * 1e6,
                   seconds[VARIANT_REF] * 1e6, seconds[VARIANT_BLAS] * 1e6, in->stored_bytes / seconds[VARIANT_FAST] / 1e9,
                   seconds[VARIANT_BLAS] > 0 ? fp32_bytes_one / seconds[VARIANT_BLAS] / 1e9 : 0.0,
                   seconds[VARIANT_FAST] / one_row[VARIANT_FAST],
                   seconds[VARIANT_FAST_FP32] > 0 ? seconds[VARIANT_FAST_FP32] / one_row[VARIANT_FAST_FP32] : 0.0,
                   seconds[VARIANT_BLAS] > 0 ? seconds[VARIANT_BLAS] / one_row[VARIANT_BLAS] : 0.0);
        }
        free_instances(in);
        load_instances(in, &gguf, &SHAPES[s], n_layers, 0);
    }
    printf("\none token's matmuls (30 layers x 7 + head), the sum of the per-call times above (ms), and T/1\n");
    printf("%3s", "T");
    for (int v = 0; v < N_VARIANTS; v++) { if (variant_available(v)) { printf(" %10s %6s", VARIANT_LABELS[v], "T/1"); } }
    printf("\n");
    for (int k = 0; k < n_Ts; k++) {
        printf("%3d", Ts[k]);
        for (int v = 0; v < N_VARIANTS; v++) {
            if (variant_available(v)) { printf(" %10.2f %5.2fx", step_estimate[v][k] * 1e3, step_estimate[v][k] / step_estimate[v][0]); }
        }
        printf("\n");
    }

    // ---- one token's matmuls in model order (per layer: q, k, v, output, gate, up, down; then the head)
    printf("\nthe same, measured in model order (the weights stream as in decode), fast path, each call's best of 20, summed\n");
    printf("%3s %10s %10s %9s %12s\n", "T", "ms/step", "GB/s", "T/1", "tok/s (T=1)");
    const char* layer_tensors[] = {"blk.%d.attn_q.weight", "blk.%d.attn_k.weight", "blk.%d.attn_v.weight",
                                   "blk.%d.attn_output.weight", "blk.%d.ffn_gate.weight", "blk.%d.ffn_up.weight",
                                   "blk.%d.ffn_down.weight"};
    int n_step = 0;
    Matrix step_weights[30 * 7 + 1];
    int step_C[30 * 7 + 1], step_OC[30 * 7 + 1];
    for (int l = 0; l < n_layers; l++) {
        for (int k = 0; k < 7; k++) {
            char name[128];
            snprintf(name, sizeof(name), layer_tensors[k], l);
            const GGUFTensor* t = gguf_find_tensor(&gguf, name);
            if (!t) { fprintf(stderr, "error: no tensor %s\n", name); return 1; }
            step_weights[n_step] = (Matrix){t->data, t->type};
            step_C[n_step] = (int)t->shape[0];
            step_OC[n_step] = (int)t->shape[1];
            n_step++;
        }
    }
    const GGUFTensor* head = gguf_find_tensor(&gguf, "token_embd.weight");
    step_weights[n_step] = (Matrix){head->data, head->type};
    step_C[n_step] = (int)head->shape[0];
    step_OC[n_step] = (int)head->shape[1];
    n_step++;
    // each matmul's fastest call over the repeats, summed in model order
    double step_one_row = 0;
    for (int k = 0; k < n_Ts; k++) {
        int T = Ts[k];
        double best[30 * 7 + 1];
        for (int i = 0; i < n_step; i++) { best[i] = 1e30; }
        for (int r = 0; r < 20; r++) {
            for (int i = 0; i < n_step; i++) {
                double start = now_seconds();
                matmul_forward_fast(out, inp, step_weights[i], T, step_C[i], step_OC[i]);
                double seconds = now_seconds() - start;
                if (seconds < best[i]) { best[i] = seconds; }
            }
        }
        double step = 0;
        for (int i = 0; i < n_step; i++) { step += best[i]; }
        if (T == 1) { step_one_row = step; }
        printf("%3d %10.2f %10.1f %8.2fx %12.1f\n", T, step * 1e3, stored_bytes / step / 1e9, step / step_one_row,
               T == 1 ? 1.0 / step : 0.0);
    }
    double limit_dram = stored_bytes / (bandwidth_dram * 1e9), limit_model = stored_bytes / (bandwidth_model * 1e9);
    printf("memory limit of one decode step (weight bytes / bandwidth): %.2f ms at %.1f GB/s (1 GiB sum), "
           "%.2f ms at %.1f GB/s (model-sized sum)\n", limit_dram * 1e3, bandwidth_dram, limit_model * 1e3, bandwidth_model);
    printf("decode step (T=1) / memory limit: %.2fx (1 GiB bandwidth), %.2fx (model-sized)\n",
           step_one_row / limit_dram, step_one_row / limit_model);

    // ---- attention over the cache, one layer's call
    printf("\nattention per layer call (9 heads, 3 kv heads, head size 64; causal mask over P cached slots)\n");
    printf("%5s %3s %10s %10s %8s\n", "P", "T", "fast us", "ref us", "fast T/1");
    int NH = 9, NKV = 3, HS = 64;
    const int Ps[] = {128, 1024};
    for (int pi = 0; pi < 2; pi++) {
        int P = Ps[pi];
        float* keys = mallocCheck((size_t)P * NKV * HS * sizeof(float));
        float* values = mallocCheck((size_t)P * NKV * HS * sizeof(float));
        for (size_t i = 0; i < (size_t)P * NKV * HS; i++) { keys[i] = random_f32(&rng) - 0.5f; values[i] = random_f32(&rng) - 0.5f; }
        uint8_t* mask = mallocCheck((size_t)16 * P);
        double fast_one = 0;
        const int attention_Ts[] = {1, 6, 12};
        for (int k = 0; k < 3; k++) {
            int T = attention_Ts[k];
            for (int t = 0; t < T; t++) { for (int p = 0; p < P; p++) { mask[(size_t)t * P + p] = p <= P - T + t; } }
            double best[2] = {1e30, 1e30};
            for (int r = 0; r < 20; r++) {
                for (int v = 0; v < 2; v++) {
                    double start = now_seconds();
                    if (v == 0) { attention_forward_fast(out, inp, keys, values, mask, T, P, NH, NKV, HS); }
                    else { attention_forward_cpu(out, inp, keys, values, mask, T, P, NH, NKV, HS); }
                    double seconds = now_seconds() - start;
                    if (seconds < best[v]) { best[v] = seconds; }
                }
            }
            if (T == 1) { fast_one = best[0]; }
            printf("%5d %3d %10.1f %10.1f %7.2fx\n", P, T, best[0] * 1e6, best[1] * 1e6, best[0] / fast_one);
        }
        free(mask); free(values); free(keys);
    }
    free(out); free(inp);
    gguf_close(&gguf);
    return 0;
}
