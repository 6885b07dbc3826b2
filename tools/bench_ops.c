/*
bench_ops.c: the fast CPU ops (backends/cpu_fast.c), shape by shape, against the reference and OpenBLAS,
on the default model's own weight matrices, with the machine's measured read bandwidth beside them. A
benchmark, not a test: it prints numbers and asserts nothing.

For each matmul shape of the model and T input rows it times one call of
  fast     the default table's matmul on its form of the weights (Q4_1 layers, Q8_0 LM head; packed
           into groups of 16 rows on AVX-512 VNNI and AVX2 CPUs)
  ref      matmul_forward_cpu on fp32 copies (the readable reference)
  blas     OpenBLAS sgemm on the same fp32 copies (built with USE_BLAS)
cycling over the 30 layers' matrices of that shape, as a decode step does (so a matrix is not served from
the core's own cache on the next call). On a shared machine a call is slowed whenever another process
takes a core (with OpenMP, the whole call waits for the descheduled thread), so everything is measured in
rounds spread over the run, the variants alternating, and each call's fastest time is kept. Then one
token's 211 matmuls (30 layers x 7 + the head): the sum of those times, and the same measured in model
order, against the memory limit (weight bytes / read bandwidth); attention over the cache; and the
trainer's fp32 ops (the LM head forward and backward over a step's loss rows, the attention backward).

usage: bench_ops MODEL.gguf [ROUNDS]     (threads: OMP_NUM_THREADS)
*/
#define TESTING
#include "../aurora.c"

#include "bench_common.h"

// ----------------------------------------------------------------------------
// the model's matrices

typedef struct {
    const char* name;        // for the table
    const char* tensor;      // printf pattern of the GGUF name, %d the layer
    int per_layer;           // 1: one per layer; 0: one in all (the head)
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
#define MAX_INSTANCES 64

typedef struct {
    int n;                           // instances (layers)
    int C, OC, type;
    const void* stored[MAX_INSTANCES]; // in the file's type, inside the mapping
    Matrix fast[MAX_INSTANCES];      // as the default table keeps it (upload_matrix: packed on VNNI and AVX2 CPUs)
    float* fp32[MAX_INSTANCES];      // (OC, C) dequantised copies for the reference and OpenBLAS
    size_t stored_bytes;             // of one instance
} Instances;

static int load_instances(Instances* in, const GGUFFile* gguf, const Shape* shape, int n_layers) {
    memset(in, 0, sizeof(*in));
    in->n = shape->per_layer ? n_layers : 1;
    if (in->n > MAX_INSTANCES) { in->n = MAX_INSTANCES; }
    for (int l = 0; l < in->n; l++) {
        char name[128];
        snprintf(name, sizeof(name), shape->tensor, l);
        const GGUFTensor* t = gguf_find_tensor(gguf, name);
        if (!t || t->n_dims != 2) { fprintf(stderr, "error: %s: no 2-D tensor %s\n", gguf->path, name); return -1; }
        in->C = (int)t->shape[0];
        in->OC = (int)t->shape[1];
        in->type = t->type;
        in->stored[l] = t->data;
        in->fast[l] = backend_cpu_fast.upload_matrix(t->data, t->type, in->OC, in->C);
        in->stored_bytes = t->n_bytes;
        in->fp32[l] = mallocCheck((size_t)in->OC * in->C * sizeof(float));
        dequantize_row(t->type, t->data, in->fp32[l], t->n_elements);
    }
    return 0;
}

// ----------------------------------------------------------------------------
// variants and timing

enum { VARIANT_FAST, VARIANT_FAST_VNNI, VARIANT_FAST_FP32, VARIANT_REF, VARIANT_BLAS, N_VARIANTS };
static const char* VARIANT_LABELS[] = {"fast", "fast VNNI", "fast fp32", "ref", "blas"};
#define REF_ROUNDS 2   // the reference's calls are long (noise averages out within them) and slow

static int variant_available(int variant) {
    if (variant == VARIANT_FAST_FP32) { return fast_isa_has_int8(fast_isa_current()); }   // else = fast
    if (variant == VARIANT_FAST_VNNI) { return fast_int8_amx(); }   // else = fast (and below fast_amx_int8_min_rows)
#ifdef USE_BLAS
    return 1;
#else
    return variant != VARIANT_BLAS;
#endif
}

static void run_variant(int variant, float* out, const float* inp, const Instances* in, int l, int T) {
    if (variant == VARIANT_FAST || variant == VARIANT_FAST_VNNI || variant == VARIANT_FAST_FP32) {
        Matrix weight = variant == VARIANT_FAST_FP32 ? (Matrix){in->stored[l], in->type} : in->fast[l];
        int saved_amx = fast_amx_kernel;
        fast_int8_activations = variant != VARIANT_FAST_FP32;
        fast_amx_kernel = saved_amx && variant == VARIANT_FAST;
        matmul_forward_fast(out, inp, weight, T, in->C, in->OC);
        fast_int8_activations = 1;
        fast_amx_kernel = saved_amx;
    } else if (variant == VARIANT_REF) {
        matmul_forward_cpu(out, inp, matrix_f32(in->fp32[l]), T, in->C, in->OC);
    } else {
#ifdef USE_BLAS
        matmul_forward_blas(out, inp, matrix_f32(in->fp32[l]), T, in->C, in->OC);
#endif
    }
}

// ----------------------------------------------------------------------------

// ----------------------------------------------------------------------------
// the trainer's ops: one TTT step's LM-head matmuls over TRAIN_ROWS loss rows (the draft vocabulary's
// 8,192 rows, fp32), and the layer's attention backward over a TTT step's key buffer (causal in block 0,
// plus each row's own slot in the K - 1 later blocks), fast against the reference (and OpenBLAS)

enum { TRAIN_ROWS = 190, TRAIN_VOCAB = 8192, TRAIN_DIM = 576, TRAIN_BLOCKS = 5 };

static void bench_trainer_ops(int rounds) {
    int T = TRAIN_ROWS, C = TRAIN_DIM, V = TRAIN_VOCAB, NH = 9, NKV = 3, HS = 64;
    int P = T * TRAIN_BLOCKS;
    uint64_t rng = 11;
    float* inp = mallocCheck((size_t)T * C * sizeof(float));
    float* weight = mallocCheck((size_t)V * C * sizeof(float));
    float* dout = mallocCheck((size_t)T * V * sizeof(float));
    float* dinp = mallocCheck((size_t)T * C * sizeof(float));
    float* dweight = mallocCheck((size_t)V * C * sizeof(float));
    for (size_t i = 0; i < (size_t)T * C; i++) { inp[i] = random_f32(&rng) - 0.5f; }
    for (size_t i = 0; i < (size_t)V * C; i++) { weight[i] = (random_f32(&rng) - 0.5f) * 0.1f; }
    for (size_t i = 0; i < (size_t)T * V; i++) { dout[i] = (random_f32(&rng) - 0.5f) * 1e-3f; }
    size_t q_size = (size_t)T * NH * HS, kv_size = (size_t)P * NKV * HS;
    float* q = mallocCheck(q_size * sizeof(float));
    float* dq = mallocCheck(q_size * sizeof(float));
    float* d_attn = mallocCheck(q_size * sizeof(float));
    float* keys = mallocCheck(kv_size * sizeof(float));
    float* values = mallocCheck(kv_size * sizeof(float));
    float* dkeys = mallocCheck(kv_size * sizeof(float));
    float* dvalues = mallocCheck(kv_size * sizeof(float));
    for (size_t i = 0; i < q_size; i++) { q[i] = random_f32(&rng) - 0.5f; d_attn[i] = random_f32(&rng) - 0.5f; }
    for (size_t i = 0; i < kv_size; i++) { keys[i] = random_f32(&rng) - 0.5f; values[i] = random_f32(&rng) - 0.5f; }
    uint8_t* mask = mallocCheck((size_t)T * P);
    memset(mask, 0, (size_t)T * P);
    for (int t = 0; t < T; t++) {
        for (int p = 0; p <= t; p++) { mask[(size_t)t * P + p] = 1; }
        for (int b = 1; b < TRAIN_BLOCKS; b++) { mask[(size_t)t * P + b * T + t] = 1; }
    }
    Matrix head = {weight, TYPE_F32};
    // the distribution loss's inputs: the draft's logits (dout's buffer) against a teacher distribution, softmax of
    // other logits, a gradient row per loss row
    float* teacher = mallocCheck((size_t)T * V * sizeof(float));
    float* dlogits = mallocCheck((size_t)T * V * sizeof(float));
    float* teacher_logits = mallocCheck((size_t)T * V * sizeof(float));
    float losses[TRAIN_ROWS], loss_weights[TRAIN_ROWS];
    for (size_t i = 0; i < (size_t)T * V; i++) { teacher_logits[i] = 8.0f * (random_f32(&rng) - 0.5f); }
    for (int t = 0; t < T; t++) { loss_weights[t] = 1.0f; }
    // [variant][op]: op 0 forward, 1 dinp, 2 dweight, 3 attention backward, 4 the teacher's softmax and the
    // loss with its gradient; variant 0 fast, 1 ref, 2 blas, 3 bf16 products (the fast table's mixed-precision
    // twin: --train-precision bf16) on AVX-512 BF16 (or portable C), 4 the same on AMX's tiles where the CPU has them
    enum { TRAIN_OPS = 5 };
    double best[5][TRAIN_OPS];
    for (int v = 0; v < 5; v++) { for (int o = 0; o < TRAIN_OPS; o++) { best[v][o] = 1e30; } }
    int amx = fast_bf16_amx(), saved_amx = fast_amx_kernel;
    const Backend* tables[5] = {&backend_cpu_fast_exact, &backend_cpu_ref, NULL, &backend_cpu_fast_bf16,
                                amx ? &backend_cpu_fast_bf16 : NULL};
#ifdef USE_BLAS
    tables[2] = &backend_cpu_blas;
#endif
    for (int round = 0; round < rounds; round++) {
        for (int v = 0; v < 5; v++) {
            const Backend* b = tables[v];
            if (b == NULL || (v == 1 && round >= REF_ROUNDS)) { continue; }
            fast_amx_kernel = v == 4;
            double start = now_seconds();
            b->matmul_forward(dout, inp, head, T, C, V);
            best[v][0] = fmin(best[v][0], now_seconds() - start);
            start = now_seconds();
            b->matmul_backward(dinp, NULL, dout, inp, weight, T, C, V);
            best[v][1] = fmin(best[v][1], now_seconds() - start);
            start = now_seconds();
            b->matmul_backward(NULL, dweight, dout, inp, weight, T, C, V);
            best[v][2] = fmin(best[v][2], now_seconds() - start);
            if (v >= 2) { continue; }   // (the OpenBLAS and bf16 tables' other ops: the reference's, the fast one's)
            start = now_seconds();
            b->attention_backward(dq, dkeys, dvalues, d_attn, q, keys, values, mask, T, P, NH, NKV, HS);
            best[v][3] = fmin(best[v][3], now_seconds() - start);
            memset(dlogits, 0, (size_t)T * V * sizeof(float));
            start = now_seconds();
            b->softmax_forward(teacher, teacher_logits, T, V);
            b->distribution_loss(losses, dlogits, dout, teacher, NULL, loss_weights, T, V, LOSS_FORWARD_KL);
            best[v][4] = fmin(best[v][4], now_seconds() - start);
        }
        fast_amx_kernel = saved_amx;
    }
    printf("\nthe trainer's ops (fp32; bf16: bf16 products, %s), one call, ms: the LM head over %d loss rows (%d x %d), and "
           "the attention backward of a TTT step (%d rows, %d keys), the teacher's softmax and the loss (forward KL) with its gradient over the LM head's rows\n%-26s %10s %10s %10s %10s %8s %9s\n",
           fast_bf16_native() ? "AVX-512 BF16" : "portable C", T, V, C, T, P, "", "fast", "ref", "blas", "bf16", "ref/fast",
           "fast/bf16");
    const char* ops[TRAIN_OPS] = {"LM head forward", "LM head backward, dinp", "LM head backward, dweight",
                                  "attention backward", "softmax and loss"};
    for (int o = 0; o < TRAIN_OPS; o++) {
        printf("%-26s %10.1f %10.1f ", ops[o], best[0][o] * 1e3, best[1][o] * 1e3);
        if (tables[2] != NULL && o < 3) { printf("%10.1f", best[2][o] * 1e3); } else { printf("%10s", "-"); }
        if (o < 3) { printf(" %10.1f", best[3][o] * 1e3); } else { printf(" %10s", "-"); }
        printf(" %7.1fx", best[1][o] / best[0][o]);
        if (o < 3) { printf(" %8.2fx", best[0][o] / best[3][o]); }
        printf("\n");
    }
    if (amx) {   // the bf16 products on AMX's tiles (not the AVX-512 tile's bits: cpu_fast.h)
        printf("the same bf16 products on AMX's tiles, ms (and the AVX-512 BF16 tile's time over it):\n");
        for (int o = 0; o < 3; o++) { printf("%-26s %10.1f %8.2fx\n", ops[o], best[4][o] * 1e3, best[3][o] / best[4][o]); }
    }
    free(teacher); free(dlogits); free(teacher_logits);
    free(mask); free(dvalues); free(dkeys); free(values); free(keys); free(d_attn); free(dq); free(q);
    free(dweight); free(dinp); free(dout); free(weight); free(inp);
}

int main(int argc, char** argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s MODEL.gguf [ROUNDS]\n", argv[0]); return 2; }
    int rounds = argc > 2 ? atoi(argv[2]) : 12;
    if (rounds < REF_ROUNDS) { rounds = REF_ROUNDS; }
    GGUFFile gguf;
    Error err;
    if (gguf_open(&gguf, argv[1], &err) != 0) { fprintf(stderr, "error: %s\n", err.message); return 1; }
    char cpu[256];
    cpu_model_name(cpu, sizeof(cpu));
    int threads = n_threads();
    printf("CPU: %s, %d threads (OpenMP), fast path: %s, load average at start %.2f\n", cpu, threads,
           fast_isa_name(fast_isa_current()), load_average());

    int n_layers = 30;
    double stored_bytes = 0, fp32_bytes = 0;   // of one token's matmuls
    static Instances shapes[N_SHAPES];
    for (int s = 0; s < N_SHAPES; s++) {
        if (load_instances(&shapes[s], &gguf, &SHAPES[s], n_layers) != 0) { return 1; }
        double copies = SHAPES[s].count_per_token * (SHAPES[s].per_layer ? n_layers : 1);
        stored_bytes += copies * shapes[s].stored_bytes;
        fp32_bytes += copies * (double)shapes[s].C * shapes[s].OC * 4;
    }
    // one token's matmuls in model order (per layer: q, k, v, output, gate, up, down; then the head)
    const char* layer_tensors[] = {"blk.%d.attn_q.weight", "blk.%d.attn_k.weight", "blk.%d.attn_v.weight",
                                   "blk.%d.attn_output.weight", "blk.%d.ffn_gate.weight", "blk.%d.ffn_up.weight",
                                   "blk.%d.ffn_down.weight"};
    int n_step = 0;
    Matrix step_weights[30 * 7 + 1];
    int step_C[30 * 7 + 1], step_OC[30 * 7 + 1];
    for (int l = 0; l <= n_layers; l++) {
        for (int k = 0; k < (l < n_layers ? 7 : 1); k++) {
            char name[128];
            if (l < n_layers) { snprintf(name, sizeof(name), layer_tensors[k], l); }
            else { snprintf(name, sizeof(name), "token_embd.weight"); }
            const GGUFTensor* t = gguf_find_tensor(&gguf, name);
            if (!t) { fprintf(stderr, "error: no tensor %s\n", name); return 1; }
            step_weights[n_step] = backend_cpu_fast.upload_matrix(t->data, t->type, (int)t->shape[1], (int)t->shape[0]);
            step_C[n_step] = (int)t->shape[0];
            step_OC[n_step] = (int)t->shape[1];
            n_step++;
        }
    }

    const int Ts[] = {1, 2, 4, 6, 8, 12, 16};
    enum { N_TS = 7 };
    float* inp = mallocCheck((size_t)16 * 1536 * sizeof(float));
    float* out = mallocCheck((size_t)16 * 49152 * sizeof(float));
    uint64_t rng = 7;
    for (size_t i = 0; i < (size_t)16 * 1536; i++) { inp[i] = 2.0f * random_f32(&rng) - 1.0f; }

    // attention: one layer's call over P cached slots, causal mask
    const int NH = 9, NKV = 3, HS = 64;
    const int Ps[] = {128, 1024};
    const int attention_Ts[] = {1, 6, 12};
    enum { N_PS = 2, N_ATTENTION_TS = 3 };
    float* keys = mallocCheck((size_t)1024 * NKV * HS * sizeof(float));
    float* values = mallocCheck((size_t)1024 * NKV * HS * sizeof(float));
    for (size_t i = 0; i < (size_t)1024 * NKV * HS; i++) { keys[i] = random_f32(&rng) - 0.5f; values[i] = random_f32(&rng) - 0.5f; }
    uint8_t* mask = mallocCheck((size_t)16 * 1024);

    // fastest times seen: per call, per instance
    static double best[N_VARIANTS][N_SHAPES][N_TS][MAX_INSTANCES];
    static double best_step[N_TS][30 * 7 + 1];
    double best_attention[2][N_PS][N_ATTENTION_TS];
    for (int v = 0; v < N_VARIANTS; v++) for (int s = 0; s < N_SHAPES; s++) for (int k = 0; k < N_TS; k++)
        for (int l = 0; l < MAX_INSTANCES; l++) { best[v][s][k][l] = 1e30; }
    for (int k = 0; k < N_TS; k++) for (int i = 0; i < n_step; i++) { best_step[k][i] = 1e30; }
    for (int v = 0; v < 2; v++) for (int p = 0; p < N_PS; p++) for (int k = 0; k < N_ATTENTION_TS; k++) { best_attention[v][p][k] = 1e30; }
    double bandwidth_dram = 0, bandwidth_model = 0;

    fprintf(stderr, "measuring in %d rounds:", rounds);
    for (int round = 0; round < rounds; round++) {
        fprintf(stderr, " %d", round + 1);
        double b = read_bandwidth((size_t)1 << 30, 2);
        if (b > bandwidth_dram) { bandwidth_dram = b; }
        b = read_bandwidth((size_t)stored_bytes, 4);
        if (b > bandwidth_model) { bandwidth_model = b; }
        for (int s = 0; s < N_SHAPES; s++) {
            const Instances* in = &shapes[s];
            for (int k = 0; k < N_TS; k++) {
                // the variants forwards in even rounds and backwards in odd ones: a call right after an fp32
                // variant's (4-8 times the bytes) finds its weights out of the caches, and in one order the
                // first variant always came after blas (decode's matmuls 4.4 ms against 3.4 for the same code)
                for (int i = 0; i < N_VARIANTS; i++) {
                    int v = round % 2 == 0 ? i : N_VARIANTS - 1 - i;
                    if (!variant_available(v) || (v == VARIANT_REF && round >= REF_ROUNDS)) { continue; }
                    if (v == VARIANT_FAST_VNNI && Ts[k] < fast_amx_int8_min_rows) { continue; }   // (fast's code)
                    for (int l = 0; l < in->n; l++) {
                        double start = now_seconds();
                        run_variant(v, out, inp, in, l, Ts[k]);
                        double seconds = now_seconds() - start;
                        if (seconds < best[v][s][k][l]) { best[v][s][k][l] = seconds; }
                    }
                }
            }
        }
        for (int k = 0; k < N_TS; k++) {
            // timed after untimed passes: as decoding runs them, each call finds the weights the last step left in
            // the caches, where the first passes follow the fp32 variants above (on a 2-core Xeon under KVM the
            // steps after them take 5.3, 4.9, 4.0, 3.2, 2.9 ms and then 2.6-2.8; here T=1's 4.5 ms against 3.4)
            for (int warm = 0; warm < (k == 0 ? 8 : 1); warm++) {
                for (int i = 0; i < n_step; i++) { matmul_forward_fast(out, inp, step_weights[i], Ts[k], step_C[i], step_OC[i]); }
            }
            for (int i = 0; i < n_step; i++) {
                double start = now_seconds();
                matmul_forward_fast(out, inp, step_weights[i], Ts[k], step_C[i], step_OC[i]);
                double seconds = now_seconds() - start;
                if (seconds < best_step[k][i]) { best_step[k][i] = seconds; }
            }
        }
        for (int p = 0; p < N_PS; p++) {
            int P = Ps[p];
            for (int k = 0; k < N_ATTENTION_TS; k++) {
                int T = attention_Ts[k];
                for (int t = 0; t < T; t++) { for (int j = 0; j < P; j++) { mask[(size_t)t * P + j] = j <= P - T + t; } }
                for (int v = 0; v < 2; v++) {
                    if (v == 1 && round >= REF_ROUNDS) { continue; }
                    double start = now_seconds();
                    CacheLayout layout = cache_by_head(1024, HS);   // the target's cache: 1024 slots, head by head
                    if (v == 0) { attention_forward_fast(out, inp, keys, values, mask, T, P, NH, NKV, HS, layout); }
                    else { attention_forward_cpu(out, inp, keys, values, mask, T, P, NH, NKV, HS, layout); }
                    double seconds = now_seconds() - start;
                    if (seconds < best_attention[v][p][k]) { best_attention[v][p][k] = seconds; }
                }
            }
        }
    }
    fprintf(stderr, "\n");

    printf("read bandwidth (%d threads, best sum over the rounds): %.1f GB/s over 1 GiB, %.1f GB/s over %.0f MB "
           "(the size of the model's weights, which may stay in a large L3)\n", threads, bandwidth_dram, bandwidth_model,
           stored_bytes / 1e6);
    printf("weights of one token's matmuls: %.1f MB stored (Q4_1 layers, Q8_0 head), %.1f MB as fp32\n\n",
           stored_bytes / 1e6, fp32_bytes / 1e6);

    // ---- shape by shape
    printf("per call (microseconds; each instance's fastest call, averaged over the instances). GB/s: weight bytes "
           "read per second (stored type for fast, fp32 for blas); T/1: time over the 1-row time.\n"
           "fast: int8 activations where the CPU has AVX-512 VNNI or AVX2 (else = fast fp32), on AMX's int8 tiles from %d rows "
           "where the CPU has them; VNNI: the same without AMX (- where it is the same); fast fp32: fp32 activations; "
           "ref: the reference on fp32 weights; blas: OpenBLAS sgemm on fp32 weights\n", fast_amx_int8_min_rows);
    printf("%-22s %-5s %3s %9s %9s %9s %9s %9s %6s %7s %6s %7s %7s\n", "shape", "type", "T", "fast", "VNNI", "fast fp32", "ref",
           "blas", "GB/s", "blasGB/s", "T/1", "fp32T/1", "blasT/1");
    double seconds[N_VARIANTS][N_SHAPES][N_TS];
    double step_sum[N_VARIANTS][N_TS] = {{0}};
    for (int s = 0; s < N_SHAPES; s++) {
        const Instances* in = &shapes[s];
        double copies = SHAPES[s].count_per_token * (SHAPES[s].per_layer ? n_layers : 1);
        for (int k = 0; k < N_TS; k++) {
            for (int v = 0; v < N_VARIANTS; v++) {
                double sum = 0;
                for (int l = 0; l < in->n; l++) { sum += best[v][s][k][l]; }
                seconds[v][s][k] = variant_available(v) ? sum / in->n : -1;
                if (v == VARIANT_FAST_VNNI && Ts[k] < fast_amx_int8_min_rows) { seconds[v][s][k] = seconds[VARIANT_FAST][s][k]; }
                step_sum[v][k] += copies * seconds[v][s][k];
            }
            #define T_OVER_1(v) (seconds[v][s][k] > 0 ? seconds[v][s][k] / seconds[v][s][0] : 0.0)
            printf("%-22s %-5s %3d", SHAPES[s].name, tensor_type_name(in->type), Ts[k]);
            for (int v = 0; v < N_VARIANTS; v++) {
                int same = v == VARIANT_FAST_VNNI && Ts[k] < fast_amx_int8_min_rows;   // the same code as fast
                if (seconds[v][s][k] > 0 && !same) { printf(" %9.1f", seconds[v][s][k] * 1e6); } else { printf(" %9s", "-"); }
            }
            printf(" %6.1f %7.1f %5.2fx %6.2fx %6.2fx\n",
                   in->stored_bytes / seconds[VARIANT_FAST][s][k] / 1e9,
                   seconds[VARIANT_BLAS][s][k] > 0 ? (double)in->C * in->OC * 4 / seconds[VARIANT_BLAS][s][k] / 1e9 : 0.0,
                   T_OVER_1(VARIANT_FAST), T_OVER_1(VARIANT_FAST_FP32), T_OVER_1(VARIANT_BLAS));
        }
    }

    // ---- one token's matmuls
    printf("\none token's matmuls (30 layers x 7 + head): the sum of the per-call times above (ms), T/1\n");
    printf("%3s", "T");
    for (int v = 0; v < N_VARIANTS; v++) { if (variant_available(v)) { printf(" %10s %6s", VARIANT_LABELS[v], "T/1"); } }
    printf(" %14s %6s\n", "fast in order", "T/1");
    double step_in_order[N_TS];
    for (int k = 0; k < N_TS; k++) {
        step_in_order[k] = 0;
        for (int i = 0; i < n_step; i++) { step_in_order[k] += best_step[k][i]; }
        printf("%3d", Ts[k]);
        for (int v = 0; v < N_VARIANTS; v++) {
            if (variant_available(v)) { printf(" %10.2f %5.2fx", step_sum[v][k] * 1e3, step_sum[v][k] / step_sum[v][0]); }
        }
        printf(" %14.2f %5.2fx\n", step_in_order[k] * 1e3, step_in_order[k] / step_in_order[0]);
    }
    double limit_dram = stored_bytes / (bandwidth_dram * 1e9), limit_model = stored_bytes / (bandwidth_model * 1e9);
    printf("memory limit of one decode step's matmuls (weight bytes / bandwidth): %.2f ms at %.1f GB/s (1 GiB sum), "
           "%.2f ms at %.1f GB/s (model-sized sum); fp32 weights: %.2f ms at %.1f GB/s\n", limit_dram * 1e3,
           bandwidth_dram, limit_model * 1e3, bandwidth_model, fp32_bytes / (bandwidth_dram * 1e9) * 1e3, bandwidth_dram);
    printf("decode (T=1) matmuls, fast, measured in model order: %.2f ms (%.0f tokens/s from matmuls alone), %.2fx the "
           "1 GiB memory limit, %.2fx the model-sized one\n", step_in_order[0] * 1e3, 1.0 / step_in_order[0],
           step_in_order[0] / limit_dram, step_in_order[0] / limit_model);

    // ---- attention
    printf("\nattention, one layer's call (9 heads, 3 kv heads, head size 64; causal mask over P cached slots), "
           "microseconds\n%5s %3s %10s %10s %8s %14s\n", "P", "T", "fast", "ref", "fast T/1", "fast x 30 (ms)");
    for (int p = 0; p < N_PS; p++) {
        for (int k = 0; k < N_ATTENTION_TS; k++) {
            printf("%5d %3d %10.1f %10.1f %7.2fx %14.2f\n", Ps[p], attention_Ts[k], best_attention[0][p][k] * 1e6,
                   best_attention[1][p][k] * 1e6, best_attention[0][p][k] / best_attention[0][p][0],
                   best_attention[0][p][k] * 30 * 1e3);
        }
    }
    bench_trainer_ops(rounds);
    printf("load average at the end: %.2f (timings of %d threads are unreliable while it exceeds the core count)\n",
           load_average(), threads);
    free(mask); free(values); free(keys); free(out); free(inp);
    gguf_close(&gguf);
    return 0;
}
