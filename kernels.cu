/*
kernels.cu: the CUDA twin of cpu_ref.c, and the whole target model on the GPU.

Contract: every op here computes the same math, with the same semantics, as the op of the same name root
in cpu_ref.c (embedding_forward_cpu -> embedding_forward_cuda), with the same argument order; every
pointer argument is device memory. Masks, grouped-query head mapping (query head h reads key/value head
h / (NH / NKV)), fully-masked attention rows (zeros), RoPE angles (position * theta^(-2i/HS), computed
in double), rmsnorm's double-precision sum of squares: all as in the reference. fp32 everywhere, no
cuBLAS, no TF32, no fast-math. tests/test_cuda.c checks every op and the whole model against the CPU.

What this file is: plain, readable CUDA in the style of llm.c's dev/cuda: one kernel per op, a launcher
that checks the launch, a block-wide reduction written out, a tiled shared-memory matmul. What it
refuses to do: clever fusion, tensor cores, reduced precision. Where it matters it also mirrors the
CPU's order of operations: the matmul and attention dot products add the products in the CPU's order,
and use __fmul_rn / __fadd_rn so the compiler cannot fuse them into FMAs the CPU does not do; the two
agree to the last bit or nearly so, which keeps the parity tests tight.

target_cuda_create uploads the fp32 weight arena once (every weight pointer is mirrored by its offset in
the arena, so the tied LM head stays the embedding), and allocates the key/value cache (L, S, KVD) and
the activations for act.max_tokens tokens on the device. target_forward_cuda runs exactly the op
sequence of target_forward (aurora.c) and copies taps, hidden, logits and (if the host asks for them)
layer_outputs back into target->act.

The draft (DraftCuda) follows the same plan: draft_cuda_create uploads the draft's arena and the target's
embedding table once, draft_forward_cuda runs the op sequence of draft_forward (draft.c) and copies
act.out and act.logits back. Acceptance (accept_greedy_cuda, accept_sampling_cuda) reads the target's
device logits / distributions; the GPU computes only what is exact (argmax, gathers, the one-thread
multinomial draw) and the walk over the tree runs on the host, so decisions equal the CPU's bit for bit.

Training: the backward passes and training ops of cpu_ref.c (matmul, rmsnorm, rope, attention, swiglu,
distribution_loss, adamw_update, sum_squares) have twins here too, deterministic (no atomics: every sum
is owned by one thread or block and taken in a fixed order), and trainer_step_cuda runs trainer_step
(trainer.c) with every tensor op on the device: the same unroll, losses, backward order and update, the
host doing only the integer bookkeeping (rows, masks, loss weights) and the final loss sums.

Build: nvcc -arch=sm_90 -O2 -c kernels.cu -o kernels.o -I.   (link with -lcudart)
*/
#ifndef USE_CUDA
#define USE_CUDA // the CUDA twin section of aurora.h is what this file implements
#endif
#include "aurora.h"
#include <cuda_runtime.h>
#include <limits.h>

// ----------------------------------------------------------------------------
// error checking: any CUDA error is a program bug or a broken device; print where and exit

static void cuda_check(cudaError_t error, const char* file, int line) {
    if (error != cudaSuccess) {
        fprintf(stderr, "[CUDA ERROR] at file %s:%d:\n%s\n", file, line, cudaGetErrorString(error));
        exit(EXIT_FAILURE);
    }
}
#define cudaCheck(error) (cuda_check((error), __FILE__, __LINE__))

// After every kernel launch: catches bad launch configurations (and earlier asynchronous errors).
static void cuda_check_launch(const char* kernel, const char* file, int line) {
    cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) {
        fprintf(stderr, "[CUDA ERROR] launching %s at file %s:%d:\n%s\n", kernel, file, line, cudaGetErrorString(error));
        exit(EXIT_FAILURE);
    }
}
#define cudaCheckLaunch(kernel) (cuda_check_launch((kernel), __FILE__, __LINE__))

static int ceil_div(size_t a, int b) { return (int)((a + b - 1) / b); }

// ----------------------------------------------------------------------------
// device queries

extern "C" int cuda_device_count(void) {
    int count = 0;
    cudaError_t error = cudaGetDeviceCount(&count);
    if (error != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" / "no driver" error
        return 0;
    }
    return count;
}

extern "C" const char* cuda_device_name(void) {
    static char name[256];
    int device = 0;
    cudaDeviceProp properties;
    if (cuda_device_count() == 0 || cudaGetDevice(&device) != cudaSuccess ||
        cudaGetDeviceProperties(&properties, device) != cudaSuccess) {
        cudaGetLastError();
        return "no CUDA device";
    }
    snprintf(name, sizeof(name), "%s", properties.name);
    return name;
}

// ----------------------------------------------------------------------------
// block-wide reductions (blockDim.x must be BLOCK_SIZE, a power of two); every thread gets the result

#define BLOCK_SIZE 256

__device__ float block_max(float value) {
    __shared__ float partial[BLOCK_SIZE];
    partial[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) { partial[threadIdx.x] = fmaxf(partial[threadIdx.x], partial[threadIdx.x + stride]); }
        __syncthreads();
    }
    float result = partial[0];
    __syncthreads(); // everyone has read partial[0] before a later call overwrites it
    return result;
}

__device__ double block_sum(double value) {
    __shared__ double partial[BLOCK_SIZE];
    partial[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) { partial[threadIdx.x] += partial[threadIdx.x + stride]; }
        __syncthreads();
    }
    double result = partial[0];
    __syncthreads();
    return result;
}

// ----------------------------------------------------------------------------
// embedding: out[t] = table[tokens[t]]; one thread per output element

__global__ void embedding_forward_kernel(float* out, const int* tokens, const float* table, int T, int C) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)T * C) { return; }
    int t = (int)(index / C), c = (int)(index % C);
    out[index] = table[(size_t)tokens[t] * C + c];
}

extern "C" void embedding_forward_cuda(float* out, const int* tokens, const float* table, int T, int C, int V) {
    // out: (T, C); tokens: (T), each in [0, V); table: (V, C)
    (void)V; // token ids are validated by the caller
    if ((size_t)T * C == 0) { return; }
    embedding_forward_kernel<<<ceil_div((size_t)T * C, BLOCK_SIZE), BLOCK_SIZE>>>(out, tokens, table, T, C);
    cudaCheckLaunch("embedding_forward_kernel");
}

// ----------------------------------------------------------------------------
// RMSNorm: out = inp / sqrt(mean(inp^2) + eps) * weight; one block per row (out == inp allowed:
// the whole row is reduced before any thread writes)

__global__ void rmsnorm_forward_kernel(float* out, const float* inp, const float* weight, int C, float eps) {
    const float* x = inp + (size_t)blockIdx.x * C;
    float* y = out + (size_t)blockIdx.x * C;
    double sum_squares = 0.0; // double, as the CPU: the product of two floats is exact in double
    for (int c = threadIdx.x; c < C; c += blockDim.x) { sum_squares += (double)x[c] * x[c]; }
    sum_squares = block_sum(sum_squares);
    float scale = (float)(1.0 / sqrt(sum_squares / C + eps));
    for (int c = threadIdx.x; c < C; c += blockDim.x) { y[c] = x[c] * scale * weight[c]; }
}

extern "C" void rmsnorm_forward_cuda(float* out, const float* inp, const float* weight, int T, int C, float eps) {
    // out, inp: (T, C); weight: (C)
    if (T == 0) { return; }
    rmsnorm_forward_kernel<<<T, BLOCK_SIZE>>>(out, inp, weight, C, eps);
    cudaCheckLaunch("rmsnorm_forward_kernel");
}

// ----------------------------------------------------------------------------
// matmul: out[t][o] = sum_c inp[t][c] * weight[o][c]. Tiled: a block computes a TILE x TILE patch of
// out (rows t, columns o), walking c in tiles staged in shared memory. Each thread adds its products
// in increasing c, as the CPU does, and without FMA contraction.

#define TILE 16

__global__ void matmul_forward_kernel(float* out, const float* inp, const float* weight, int T, int C, int OC) {
    __shared__ float inp_tile[TILE][TILE];        // [t][c]
    __shared__ float weight_tile[TILE][TILE + 1]; // [o][c]; +1 column so reads down a column hit distinct banks
    int t0 = blockIdx.y * TILE, o0 = blockIdx.x * TILE;
    int t = t0 + threadIdx.y, o = o0 + threadIdx.x;   // the output element this thread computes
    float sum = 0.0f;
    for (int c0 = 0; c0 < C; c0 += TILE) {
        // thread (y, x) stages inp[t0 + y][c0 + x] and weight[o0 + y][c0 + x] (coalesced along c)
        int c = c0 + threadIdx.x;
        int row_t = t0 + threadIdx.y, row_o = o0 + threadIdx.y;
        inp_tile[threadIdx.y][threadIdx.x] = (row_t < T && c < C) ? inp[(size_t)row_t * C + c] : 0.0f;
        weight_tile[threadIdx.y][threadIdx.x] = (row_o < OC && c < C) ? weight[(size_t)row_o * C + c] : 0.0f;
        __syncthreads();
        int n = C - c0 < TILE ? C - c0 : TILE;
        for (int k = 0; k < n; k++) {
            sum = __fadd_rn(sum, __fmul_rn(inp_tile[threadIdx.y][k], weight_tile[threadIdx.x][k]));
        }
        __syncthreads();
    }
    if (t < T && o < OC) { out[(size_t)t * OC + o] = sum; }
}

extern "C" void matmul_forward_cuda(float* out, const float* inp, const float* weight, int T, int C, int OC) {
    // out: (T, OC); inp: (T, C); weight: (OC, C)
    if (T == 0 || OC == 0) { return; }
    dim3 block(TILE, TILE);
    dim3 grid(ceil_div(OC, TILE), ceil_div(T, TILE));
    matmul_forward_kernel<<<grid, block>>>(out, inp, weight, T, C, OC);
    cudaCheckLaunch("matmul_forward_kernel");
}

// ----------------------------------------------------------------------------
// RoPE ("normal" layout: adjacent pairs): the pair (x[2i], x[2i+1]) of each head is rotated by
// position * theta^(-2i/HS), the angle computed in double as on the CPU. One thread per pair
// (out == inp allowed: each thread reads and writes only its own pair).

__global__ void rope_rotate_kernel(float* out, const float* inp, const int* positions, int T, int n_heads, int HS,
                                   float theta, float direction) {
    // direction +1: the forward rotation; -1: its transpose (rope_backward_cuda), as rope_rotate on the CPU
    int pairs = HS / 2;
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)T * n_heads * pairs) { return; }
    int t = (int)(index / ((size_t)n_heads * pairs));
    int h = (int)(index / pairs % n_heads);
    int i = (int)(index % pairs);
    double frequency = pow((double)theta, -2.0 * i / HS);
    double angle = (double)positions[t] * frequency;
    float cos_angle = (float)cos(angle);
    float sin_angle = direction * (float)sin(angle);
    size_t base = (size_t)t * n_heads * HS + (size_t)h * HS + 2 * i;
    float x0 = inp[base], x1 = inp[base + 1];
    out[base]     = __fsub_rn(__fmul_rn(x0, cos_angle), __fmul_rn(x1, sin_angle));
    out[base + 1] = __fadd_rn(__fmul_rn(x0, sin_angle), __fmul_rn(x1, cos_angle));
}

extern "C" void rope_forward_cuda(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta) {
    // out, inp: (T, n_heads * HS); positions: (T)
    size_t total = (size_t)T * n_heads * (HS / 2);
    if (total == 0) { return; }
    rope_rotate_kernel<<<ceil_div(total, BLOCK_SIZE), BLOCK_SIZE>>>(out, inp, positions, T, n_heads, HS, theta, 1.0f);
    cudaCheckLaunch("rope_rotate_kernel");
}

// ----------------------------------------------------------------------------
// Masked grouped-query attention over a key/value cache; one block per (query t, head h), the same
// two passes as the CPU:
//   pass 1: every visible score q_t . k_p / sqrt(HS) (threads split the slots p), then the block max;
//           a row with no visible slot writes zeros and stops
//   pass 2: weight_p = exp(score_p - max); thread i then accumulates out[i] = sum_p weight_p v_p[i]
//           and sum_p weight_p over p in increasing order (the CPU's order) and divides.
// Shared memory (dynamic): the query (HS floats) and one score / weight per slot (P floats).

__global__ void attention_forward_kernel(float* out, const float* q, const float* key_cache, const float* value_cache,
                                         const uint8_t* mask, int P, int NH, int NKV, int HS, float scale) {
    extern __shared__ float shared[];
    float* q_shared = shared;        // (HS)
    float* weights = shared + HS;    // (P) scaled scores, then exp weights
    int t = blockIdx.x / NH, h = blockIdx.x % NH;
    int kv_head = h / (NH / NKV);
    int KVD = NKV * HS;
    const float* q_th = q + (size_t)t * NH * HS + (size_t)h * HS;
    const uint8_t* mask_t = mask + (size_t)t * P;
    float* out_th = out + (size_t)t * NH * HS + (size_t)h * HS;
    for (int i = threadIdx.x; i < HS; i += blockDim.x) { q_shared[i] = q_th[i]; }
    __syncthreads();

    // pass 1: scores and their maximum
    float max_score = -INFINITY;
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        float score = -INFINITY;
        if (mask_t[p]) {
            const float* k_p = key_cache + (size_t)p * KVD + (size_t)kv_head * HS;
            score = 0.0f;
            for (int i = 0; i < HS; i++) { score = __fadd_rn(score, __fmul_rn(q_shared[i], k_p[i])); }
            score = __fmul_rn(score, scale);
            max_score = fmaxf(max_score, score);
        }
        weights[p] = score;
    }
    max_score = block_max(max_score); // (also a barrier: every score is in shared memory now)
    if (max_score == -INFINITY) { // fully masked row (the same for every thread of the block)
        for (int i = threadIdx.x; i < HS; i += blockDim.x) { out_th[i] = 0.0f; }
        return;
    }

    // pass 2: exponentiate, then accumulate the weighted values in increasing p
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        weights[p] = mask_t[p] ? expf(weights[p] - max_score) : 0.0f;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float sum = 0.0f, sum_weights = 0.0f;
        for (int p = 0; p < P; p++) {
            if (!mask_t[p]) { continue; }
            const float* v_p = value_cache + (size_t)p * KVD + (size_t)kv_head * HS;
            sum_weights = __fadd_rn(sum_weights, weights[p]);
            sum = __fadd_rn(sum, __fmul_rn(weights[p], v_p[i]));
        }
        out_th[i] = sum / sum_weights;
    }
}

extern "C" void attention_forward_cuda(float* out, const float* q, const float* key_cache, const float* value_cache,
                                       const uint8_t* mask, int T, int P, int NH, int NKV, int HS) {
    // out, q: (T, NH*HS); key_cache, value_cache: (P, NKV*HS); mask: (T, P)
    if (T == 0) { return; }
    float scale = 1.0f / sqrtf((float)HS); // on the host, exactly as the CPU computes it
    size_t shared_bytes = ((size_t)HS + P) * sizeof(float);
    if (shared_bytes > 48 * 1024) {
        // beyond the default 48 KiB of dynamic shared memory a kernel must opt in (up to the device limit)
        int device = 0, limit = 0;
        cudaCheck(cudaGetDevice(&device));
        cudaCheck(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        if (shared_bytes + BLOCK_SIZE * (sizeof(float) + sizeof(double)) > (size_t)limit) {
            fprintf(stderr, "[CUDA ERROR] attention_forward_cuda at %s:%d: P=%d slots need %zu bytes of shared memory, "
                    "the device allows %d\n", __FILE__, __LINE__, P, shared_bytes, limit);
            exit(EXIT_FAILURE);
        }
        cudaCheck(cudaFuncSetAttribute(attention_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared_bytes));
    }
    attention_forward_kernel<<<T * NH, BLOCK_SIZE, shared_bytes>>>(out, q, key_cache, value_cache, mask, P, NH, NKV, HS, scale);
    cudaCheckLaunch("attention_forward_kernel");
}

// ----------------------------------------------------------------------------
// SwiGLU: out = silu(gate) * up, silu(x) = x / (1 + exp(-x)); elementwise (out == gate or up allowed)

__global__ void swiglu_forward_kernel(float* out, const float* gate, const float* up, int N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N) { return; }
    float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
}

extern "C" void swiglu_forward_cuda(float* out, const float* gate, const float* up, int N) {
    if (N == 0) { return; }
    swiglu_forward_kernel<<<ceil_div(N, BLOCK_SIZE), BLOCK_SIZE>>>(out, gate, up, N);
    cudaCheckLaunch("swiglu_forward_kernel");
}

// ----------------------------------------------------------------------------
// residual: out = inp1 + inp2; elementwise (out == inp1 or inp2 allowed)

__global__ void residual_forward_kernel(float* out, const float* inp1, const float* inp2, int N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)N) { out[i] = inp1[i] + inp2[i]; }
}

extern "C" void residual_forward_cuda(float* out, const float* inp1, const float* inp2, int N) {
    if (N == 0) { return; }
    residual_forward_kernel<<<ceil_div(N, BLOCK_SIZE), BLOCK_SIZE>>>(out, inp1, inp2, N);
    cudaCheckLaunch("residual_forward_kernel");
}

// ----------------------------------------------------------------------------
// softmax over each row: probs = exp(logits - max) / sum; one block per row, the sum in double as on
// the CPU (probs == logits allowed: each thread reads element i before it writes element i, and the
// max is complete before anyone writes)

__global__ void softmax_forward_kernel(float* probs, const float* logits, int V) {
    const float* x = logits + (size_t)blockIdx.x * V;
    float* y = probs + (size_t)blockIdx.x * V;
    float max_value = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) { max_value = fmaxf(max_value, x[i]); }
    max_value = block_max(max_value);
    double sum = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) { y[i] = expf(x[i] - max_value); sum += y[i]; }
    sum = block_sum(sum);
    float inverse = (float)(1.0 / sum);
    for (int i = threadIdx.x; i < V; i += blockDim.x) { y[i] *= inverse; }
}

extern "C" void softmax_forward_cuda(float* probs, const float* logits, int T, int V) {
    // probs, logits: (T, V)
    if (T == 0) { return; }
    softmax_forward_kernel<<<T, BLOCK_SIZE>>>(probs, logits, V);
    cudaCheckLaunch("softmax_forward_kernel");
}

// ----------------------------------------------------------------------------
// KV cache compaction, as kv_compact_cpu: slot source_slots[i] moves to slot destination + i in every
// layer. Sources only move down and a path holds at most TREE_MAX_DEPTH + 1 slots, so one
// device-to-device copy per (layer, slot), in order, is both simple and safe (source and destination
// rows never overlap).

extern "C" void kv_compact_cuda(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                                int L, int S, int KVD) {
    size_t row_bytes = (size_t)KVD * sizeof(float);
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < n; i++) {
            if (source_slots[i] == destination + i) { continue; }
            size_t from = ((size_t)l * S + source_slots[i]) * KVD, to = ((size_t)l * S + destination + i) * KVD;
            cudaCheck(cudaMemcpy(key_cache + to, key_cache + from, row_bytes, cudaMemcpyDeviceToDevice));
            cudaCheck(cudaMemcpy(value_cache + to, value_cache + from, row_bytes, cudaMemcpyDeviceToDevice));
        }
    }
}

// ----------------------------------------------------------------------------
// the causal attention mask of one call, as build_attention_mask in target.c: (T, P) with
// P = n_past + T; every new token sees the n_past cached slots and the new tokens up to itself.
// (A caller's explicit mask is copied from the host instead.) One thread per mask entry.

__global__ void causal_mask_kernel(uint8_t* mask, int T, int n_past) {
    int P = n_past + T;
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)T * P) { return; }
    int t = (int)(index / P), p = (int)(index % P);
    mask[index] = p < n_past || p - n_past <= t;
}

static void build_attention_mask_cuda(uint8_t* device_mask, const uint8_t* host_mask, int T, int n_past) {
    size_t n = (size_t)T * (n_past + T);
    if (host_mask != NULL) {
        cudaCheck(cudaMemcpy(device_mask, host_mask, n, cudaMemcpyHostToDevice));
        return;
    }
    causal_mask_kernel<<<ceil_div(n, BLOCK_SIZE), BLOCK_SIZE>>>(device_mask, T, n_past);
    cudaCheckLaunch("causal_mask_kernel");
}

// ----------------------------------------------------------------------------
// the target model on the GPU

struct TargetCuda {
    TargetConfig config;
    int cache_capacity;         // S
    int max_tokens;             // T capacity
    float* weight_arena;        // device copy of target->weight_arena
    TargetWeights weights;      // device pointers into weight_arena, at the host pointers' offsets
    float* key_cache;           // (L, S, KVD)
    float* value_cache;         // (L, S, KVD)
    int* tokens;                // (T)
    int* positions;             // (T)
    uint8_t* mask;              // (T, S), used as (T, P)
    float* x;                   // (T, C)
    float* x_norm;              // (T, C)
    float* q;                   // (T, QD)
    float* k;                   // (T, KVD)
    float* v;                   // (T, KVD)
    float* attn_out;            // (T, QD)
    float* proj;                // (T, C)
    float* ffn_gate;            // (T, F)
    float* ffn_up;              // (T, F)
    float* taps;                // (T, 3*C)
    float* hidden;              // (T, C)
    float* logits;              // (T, V)
    float* layer_outputs;       // (L, T, C), allocated on the first call whose host activations ask for it
    float* stage;               // host floats staged for the device (target_cuda_stage), grown as needed
    size_t stage_floats;        // its capacity
    float* residual;            // (V) scratch for accept_sampling_cuda
};

static void* device_malloc(size_t bytes, const char* file, int line) {
    void* pointer = NULL;
    cuda_check(cudaMalloc(&pointer, bytes > 0 ? bytes : 1), file, line);
    return pointer;
}
#define deviceMalloc(bytes) device_malloc((bytes), __FILE__, __LINE__)

// The device pointer at the same offset in the arena as host_pointer (which must lie in the host arena).
static float* mirror_weight(const Target* target, const TargetCuda* target_cuda, const float* host_pointer, const char* name) {
    if (host_pointer < target->weight_arena || host_pointer >= target->weight_arena + target->n_weight_floats) {
        fprintf(stderr, "error: target_cuda_create: weight '%s' does not lie in the weight arena\n", name);
        exit(EXIT_FAILURE);
    }
    return target_cuda->weight_arena + (host_pointer - target->weight_arena);
}

extern "C" TargetCuda* target_cuda_create(const Target* target) {
    const TargetConfig* c = &target->config;
    TargetCuda* g = (TargetCuda*)calloc(1, sizeof(TargetCuda));
    if (g == NULL) { fprintf(stderr, "error: out of memory at %s:%d\n", __FILE__, __LINE__); exit(EXIT_FAILURE); }
    g->config = *c;
    g->cache_capacity = target->cache_capacity;
    g->max_tokens = target->act.max_tokens;

    // weights: the arena once, and every pointer mirrored by its offset (tied: output == token_embedding)
    g->weight_arena = (float*)deviceMalloc(target->n_weight_floats * sizeof(float));
    cudaCheck(cudaMemcpy(g->weight_arena, target->weight_arena, target->n_weight_floats * sizeof(float), cudaMemcpyHostToDevice));
    const TargetWeights* hw = &target->weights;
    TargetWeights* dw = &g->weights;
    dw->token_embedding = mirror_weight(target, g, hw->token_embedding, "token_embedding");
    dw->attn_norm = mirror_weight(target, g, hw->attn_norm, "attn_norm");
    dw->wq = mirror_weight(target, g, hw->wq, "wq");
    dw->wk = mirror_weight(target, g, hw->wk, "wk");
    dw->wv = mirror_weight(target, g, hw->wv, "wv");
    dw->wo = mirror_weight(target, g, hw->wo, "wo");
    dw->ffn_norm = mirror_weight(target, g, hw->ffn_norm, "ffn_norm");
    dw->w_gate = mirror_weight(target, g, hw->w_gate, "w_gate");
    dw->w_up = mirror_weight(target, g, hw->w_up, "w_up");
    dw->w_down = mirror_weight(target, g, hw->w_down, "w_down");
    dw->output_norm = mirror_weight(target, g, hw->output_norm, "output_norm");
    dw->output = mirror_weight(target, g, hw->output, "output");

    // key/value cache (zeroed like the host's) and activations for max_tokens tokens
    size_t T = (size_t)g->max_tokens, S = (size_t)g->cache_capacity;
    size_t QD = (size_t)c->n_heads * c->head_size, KVD = (size_t)c->n_kv_heads * c->head_size;
    size_t cache_floats = (size_t)c->n_layers * S * KVD;
    g->key_cache = (float*)deviceMalloc(cache_floats * sizeof(float));
    g->value_cache = (float*)deviceMalloc(cache_floats * sizeof(float));
    cudaCheck(cudaMemset(g->key_cache, 0, cache_floats * sizeof(float)));
    cudaCheck(cudaMemset(g->value_cache, 0, cache_floats * sizeof(float)));
    g->tokens = (int*)deviceMalloc(T * sizeof(int));
    g->positions = (int*)deviceMalloc(T * sizeof(int));
    g->mask = (uint8_t*)deviceMalloc(T * S);
    g->x = (float*)deviceMalloc(T * c->dim * sizeof(float));
    g->x_norm = (float*)deviceMalloc(T * c->dim * sizeof(float));
    g->q = (float*)deviceMalloc(T * QD * sizeof(float));
    g->k = (float*)deviceMalloc(T * KVD * sizeof(float));
    g->v = (float*)deviceMalloc(T * KVD * sizeof(float));
    g->attn_out = (float*)deviceMalloc(T * QD * sizeof(float));
    g->proj = (float*)deviceMalloc(T * c->dim * sizeof(float));
    g->ffn_gate = (float*)deviceMalloc(T * c->ffn_dim * sizeof(float));
    g->ffn_up = (float*)deviceMalloc(T * c->ffn_dim * sizeof(float));
    g->taps = (float*)deviceMalloc(T * 3 * c->dim * sizeof(float));
    g->hidden = (float*)deviceMalloc(T * c->dim * sizeof(float));
    g->logits = (float*)deviceMalloc(T * c->vocab_size * sizeof(float));
    g->layer_outputs = NULL;
    g->stage = NULL;
    g->stage_floats = 0;
    g->residual = (float*)deviceMalloc((size_t)c->vocab_size * sizeof(float));
    return g;
}

extern "C" void target_cuda_free(TargetCuda* g) {
    if (g == NULL) { return; }
    void* buffers[] = {g->weight_arena, g->key_cache, g->value_cache, g->tokens, g->positions, g->mask,
                       g->x, g->x_norm, g->q, g->k, g->v, g->attn_out, g->proj, g->ffn_gate, g->ffn_up,
                       g->taps, g->hidden, g->logits, g->layer_outputs, g->stage, g->residual};
    for (size_t i = 0; i < sizeof(buffers) / sizeof(buffers[0]); i++) {
        if (buffers[i] != NULL) { cudaCheck(cudaFree(buffers[i])); }
    }
    free(g);
}

extern "C" float* target_cuda_key_cache(TargetCuda* g) { return g->key_cache; }
extern "C" float* target_cuda_value_cache(TargetCuda* g) { return g->value_cache; }
extern "C" float* target_cuda_logits(TargetCuda* g) { return g->logits; }
extern "C" float* target_cuda_residual(TargetCuda* g) { return g->residual; }

extern "C" float* target_cuda_stage(TargetCuda* g, const float* host, size_t n) {
    if (n > g->stage_floats) { // grow (the old contents need not survive: every call restages)
        if (g->stage != NULL) { cudaCheck(cudaFree(g->stage)); }
        g->stage = (float*)deviceMalloc(n * sizeof(float));
        g->stage_floats = n;
    }
    if (n > 0) { cudaCheck(cudaMemcpy(g->stage, host, n * sizeof(float), cudaMemcpyHostToDevice)); }
    return g->stage;
}

extern "C" void target_forward_cuda(TargetCuda* g, Target* target, const int* tokens, const int* positions,
                                    const uint8_t* mask, int T, int n_past, int all_logits) {
    const TargetConfig* c = &g->config;
    const TargetWeights* w = &g->weights;
    TargetActivations* host = &target->act;
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim, V = c->vocab_size;
    int QD = NH * HS, KVD = NKV * HS, S = g->cache_capacity, P = n_past + T;
    if (T < 1 || T > g->max_tokens || T > host->max_tokens || n_past < 0 || P > S) {
        fprintf(stderr, "error: target_forward_cuda called with T=%d n_past=%d (max %d tokens per call, %d cache slots)\n",
                T, n_past, g->max_tokens, S);
        exit(EXIT_FAILURE); // callers check these bounds first; reaching here is a program bug
    }
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= V) { // on the GPU a bad id would read outside the table
            fprintf(stderr, "error: target_forward_cuda: token %d at %d is outside the vocabulary [0, %d)\n", tokens[t], t, V);
            exit(EXIT_FAILURE);
        }
    }
    if (host->layer_outputs != NULL && g->layer_outputs == NULL) {
        g->layer_outputs = (float*)deviceMalloc((size_t)c->n_layers * g->max_tokens * C * sizeof(float));
    }

    // inputs to the device, and the (T, P) mask
    cudaCheck(cudaMemcpy(g->tokens, tokens, (size_t)T * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(g->positions, positions, (size_t)T * sizeof(int), cudaMemcpyHostToDevice));
    build_attention_mask_cuda(g->mask, mask, T, n_past);
    embedding_forward_cuda(g->x, g->tokens, w->token_embedding, T, C, V);

    for (int l = 0; l < c->n_layers; l++) {
        float* key_cache = g->key_cache + (size_t)l * S * KVD;     // (S, KVD)
        float* value_cache = g->value_cache + (size_t)l * S * KVD; // (S, KVD)
        // attention block: x = x + wo(attention(rope(wq xn), rope(wk xn), wv xn)), xn = rmsnorm(x)
        rmsnorm_forward_cuda(g->x_norm, g->x, w->attn_norm + (size_t)l * C, T, C, c->norm_eps);
        matmul_forward_cuda(g->q, g->x_norm, w->wq + (size_t)l * QD * C, T, C, QD);
        matmul_forward_cuda(g->k, g->x_norm, w->wk + (size_t)l * KVD * C, T, C, KVD);
        matmul_forward_cuda(g->v, g->x_norm, w->wv + (size_t)l * KVD * C, T, C, KVD);
        rope_forward_cuda(g->q, g->q, g->positions, T, NH, HS, c->rope_theta);
        rope_forward_cuda(g->k, g->k, g->positions, T, NKV, HS, c->rope_theta);
        cudaCheck(cudaMemcpy(key_cache + (size_t)n_past * KVD, g->k, (size_t)T * KVD * sizeof(float), cudaMemcpyDeviceToDevice));
        cudaCheck(cudaMemcpy(value_cache + (size_t)n_past * KVD, g->v, (size_t)T * KVD * sizeof(float), cudaMemcpyDeviceToDevice));
        attention_forward_cuda(g->attn_out, g->q, key_cache, value_cache, g->mask, T, P, NH, NKV, HS);
        matmul_forward_cuda(g->proj, g->attn_out, w->wo + (size_t)l * C * QD, T, QD, C);
        residual_forward_cuda(g->x, g->x, g->proj, T * C);
        // MLP block: x = x + w_down(silu(w_gate xn) * w_up xn), xn = rmsnorm(x)
        rmsnorm_forward_cuda(g->x_norm, g->x, w->ffn_norm + (size_t)l * C, T, C, c->norm_eps);
        matmul_forward_cuda(g->ffn_gate, g->x_norm, w->w_gate + (size_t)l * F * C, T, C, F);
        matmul_forward_cuda(g->ffn_up, g->x_norm, w->w_up + (size_t)l * F * C, T, C, F);
        swiglu_forward_cuda(g->ffn_gate, g->ffn_gate, g->ffn_up, T * F);
        matmul_forward_cuda(g->proj, g->ffn_gate, w->w_down + (size_t)l * C * F, T, F, C);
        residual_forward_cuda(g->x, g->x, g->proj, T * C);
        // taps: row t of x goes to columns [i*C, (i+1)*C) of row t of taps (a strided 2D copy)
        for (int i = 0; i < 3; i++) {
            if (c->tap_layers[i] != l) { continue; }
            cudaCheck(cudaMemcpy2D(g->taps + (size_t)i * C, 3 * C * sizeof(float), g->x, C * sizeof(float),
                                   C * sizeof(float), T, cudaMemcpyDeviceToDevice));
        }
        if (g->layer_outputs != NULL && host->layer_outputs != NULL) {
            cudaCheck(cudaMemcpy(g->layer_outputs + (size_t)l * T * C, g->x, (size_t)T * C * sizeof(float), cudaMemcpyDeviceToDevice));
        }
    }
    rmsnorm_forward_cuda(g->hidden, g->x, w->output_norm, T, C, c->norm_eps);
    int logit_rows = all_logits ? T : 1;
    if (all_logits) {
        matmul_forward_cuda(g->logits, g->hidden, w->output, T, C, V);
    } else {
        matmul_forward_cuda(g->logits, g->hidden + (size_t)(T - 1) * C, w->output, 1, C, V);
    }

    // results back to the host activations (cudaMemcpy to the host waits for the kernels)
    cudaCheck(cudaMemcpy(host->taps, g->taps, (size_t)T * 3 * C * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(host->hidden, g->hidden, (size_t)T * C * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(host->logits, g->logits, (size_t)logit_rows * V * sizeof(float), cudaMemcpyDeviceToHost));
    if (host->layer_outputs != NULL) {
        cudaCheck(cudaMemcpy(host->layer_outputs, g->layer_outputs, (size_t)c->n_layers * T * C * sizeof(float),
                             cudaMemcpyDeviceToHost));
    }
}

// ----------------------------------------------------------------------------
// the draft model on the GPU: the same layout as the target's twin. The fp32 weight arena is uploaded
// once (every pointer mirrored by its offset), the target's embedding table once (the draft reads e_t
// from it, frozen), and the draft's one-layer key/value cache (S, KVD) and activations for
// act.max_tokens tokens live on the device. draft_forward_cuda runs exactly the op sequence of
// draft_forward (draft.c) and copies act.out and act.logits back, so the drafting logic above it
// (speculative.c) reads host memory whichever device ran the draft.

struct DraftCuda {
    DraftConfig config;
    int cache_capacity;         // S
    int max_tokens;             // T capacity
    float* weight_arena;        // device copy of draft->weight_arena
    size_t n_weight_floats;
    DraftWeights weights;       // device pointers into weight_arena, at the host pointers' offsets
    float* target_embedding;    // (V, C) device copy of the target's token embedding
    float* key_cache;           // (S, KVD)
    float* value_cache;         // (S, KVD)
    int* tokens;                // (T)
    int* positions;             // (T)
    uint8_t* mask;              // (T, S), used as (T, P)
    float* features;            // (T, 3C) input of draft_project_features_cuda
    float* hidden_in;           // (T, C) u
    float* embed;               // (T, C) e
    float* attn_in;             // (T, 2C)
    float* q;                   // (T, QD)
    float* attn_out;            // (T, QD)
    float* proj;                // (T, C)
    float* h;                   // (T, C)
    float* h_norm;              // (T, C)
    float* ffn_gate;            // (T, F)
    float* ffn_up;              // (T, F)
    float* out;                 // (T, C)
    float* out_norm;            // (T, C)
    float* logits;              // (T, V_d)
};

// The device pointer at the same offset in the draft's arena as host_pointer.
static float* mirror_draft_weight(const Draft* draft, const DraftCuda* draft_cuda, const float* host_pointer, const char* name) {
    if (host_pointer < draft->weight_arena || host_pointer >= draft->weight_arena + draft->n_weight_floats) {
        fprintf(stderr, "error: draft_cuda_create: weight '%s' does not lie in the weight arena\n", name);
        exit(EXIT_FAILURE);
    }
    return draft_cuda->weight_arena + (host_pointer - draft->weight_arena);
}

extern "C" DraftCuda* draft_cuda_create(const Draft* draft) {
    const DraftConfig* c = &draft->config;
    if (draft->cache_capacity < 1 || draft->act.max_tokens < 1 || draft->target_embedding == NULL) {
        fprintf(stderr, "error: draft_cuda_create: the draft has no state (call draft_alloc_state first) or no target embedding\n");
        exit(EXIT_FAILURE); // a program bug
    }
    DraftCuda* g = (DraftCuda*)calloc(1, sizeof(DraftCuda));
    if (g == NULL) { fprintf(stderr, "error: out of memory at %s:%d\n", __FILE__, __LINE__); exit(EXIT_FAILURE); }
    g->config = *c;
    g->cache_capacity = draft->cache_capacity;
    g->max_tokens = draft->act.max_tokens;

    // weights: the arena, every pointer mirrored by its offset; the target's embedding table
    g->n_weight_floats = draft->n_weight_floats;
    g->weight_arena = (float*)deviceMalloc(draft->n_weight_floats * sizeof(float));
    draft_cuda_upload_weights(g, draft);
    const DraftWeights* hw = &draft->weights;
    DraftWeights* dw = &g->weights;
    dw->fc = mirror_draft_weight(draft, g, hw->fc, "fc");
    dw->embed_norm = mirror_draft_weight(draft, g, hw->embed_norm, "embed_norm");
    dw->hidden_norm = mirror_draft_weight(draft, g, hw->hidden_norm, "hidden_norm");
    dw->wq = mirror_draft_weight(draft, g, hw->wq, "wq");
    dw->wk = mirror_draft_weight(draft, g, hw->wk, "wk");
    dw->wv = mirror_draft_weight(draft, g, hw->wv, "wv");
    dw->wo = mirror_draft_weight(draft, g, hw->wo, "wo");
    dw->ffn_norm = mirror_draft_weight(draft, g, hw->ffn_norm, "ffn_norm");
    dw->w_gate = mirror_draft_weight(draft, g, hw->w_gate, "w_gate");
    dw->w_up = mirror_draft_weight(draft, g, hw->w_up, "w_up");
    dw->w_down = mirror_draft_weight(draft, g, hw->w_down, "w_down");
    dw->output_norm = mirror_draft_weight(draft, g, hw->output_norm, "output_norm");
    dw->lm_head = mirror_draft_weight(draft, g, hw->lm_head, "lm_head");
    size_t embedding_floats = (size_t)c->target_vocab_size * c->dim;
    g->target_embedding = (float*)deviceMalloc(embedding_floats * sizeof(float));
    cudaCheck(cudaMemcpy(g->target_embedding, draft->target_embedding, embedding_floats * sizeof(float), cudaMemcpyHostToDevice));

    // key/value cache (zeroed like the host's) and activations for max_tokens tokens
    size_t T = (size_t)g->max_tokens, S = (size_t)g->cache_capacity, C = (size_t)c->dim;
    size_t QD = (size_t)c->n_heads * c->head_size, KVD = (size_t)c->n_kv_heads * c->head_size;
    g->key_cache = (float*)deviceMalloc(S * KVD * sizeof(float));
    g->value_cache = (float*)deviceMalloc(S * KVD * sizeof(float));
    cudaCheck(cudaMemset(g->key_cache, 0, S * KVD * sizeof(float)));
    cudaCheck(cudaMemset(g->value_cache, 0, S * KVD * sizeof(float)));
    g->tokens = (int*)deviceMalloc(T * sizeof(int));
    g->positions = (int*)deviceMalloc(T * sizeof(int));
    g->mask = (uint8_t*)deviceMalloc(T * S);
    g->features = (float*)deviceMalloc(T * 3 * C * sizeof(float));
    g->hidden_in = (float*)deviceMalloc(T * C * sizeof(float));
    g->embed = (float*)deviceMalloc(T * C * sizeof(float));
    g->attn_in = (float*)deviceMalloc(T * 2 * C * sizeof(float));
    g->q = (float*)deviceMalloc(T * QD * sizeof(float));
    g->attn_out = (float*)deviceMalloc(T * QD * sizeof(float));
    g->proj = (float*)deviceMalloc(T * C * sizeof(float));
    g->h = (float*)deviceMalloc(T * C * sizeof(float));
    g->h_norm = (float*)deviceMalloc(T * C * sizeof(float));
    g->ffn_gate = (float*)deviceMalloc(T * c->ffn_dim * sizeof(float));
    g->ffn_up = (float*)deviceMalloc(T * c->ffn_dim * sizeof(float));
    g->out = (float*)deviceMalloc(T * C * sizeof(float));
    g->out_norm = (float*)deviceMalloc(T * C * sizeof(float));
    g->logits = (float*)deviceMalloc(T * c->vocab_size * sizeof(float));
    return g;
}

extern "C" void draft_cuda_free(DraftCuda* g) {
    if (g == NULL) { return; }
    void* buffers[] = {g->weight_arena, g->target_embedding, g->key_cache, g->value_cache, g->tokens, g->positions,
                       g->mask, g->features, g->hidden_in, g->embed, g->attn_in, g->q, g->attn_out,
                       g->proj, g->h, g->h_norm, g->ffn_gate, g->ffn_up, g->out, g->out_norm, g->logits};
    for (size_t i = 0; i < sizeof(buffers) / sizeof(buffers[0]); i++) {
        if (buffers[i] != NULL) { cudaCheck(cudaFree(buffers[i])); }
    }
    free(g);
}

// Re-uploads the whole arena (the layout is fixed by the config, so the mirrored pointers stay valid).
extern "C" void draft_cuda_upload_weights(DraftCuda* g, const Draft* draft) {
    if (draft->n_weight_floats != g->n_weight_floats) {
        fprintf(stderr, "error: draft_cuda_upload_weights: the draft has %zu weights, its GPU twin %zu\n",
                draft->n_weight_floats, g->n_weight_floats);
        exit(EXIT_FAILURE); // a different draft: a program bug
    }
    // the weights may be bound to another arena (a hot swap rebinds them to a published copy); the
    // tensor table's first entry is the start of whichever arena is bound
    const float* bound_arena = *draft->tensors[0].data;
    cudaCheck(cudaMemcpy(g->weight_arena, bound_arena, draft->n_weight_floats * sizeof(float), cudaMemcpyHostToDevice));
}

extern "C" void draft_project_features_cuda(DraftCuda* g, Draft* draft, float* hidden, const float* features, int T) {
    // hidden: (T, C) host; features: (T, 3C) host; fc: (C, 3C). In chunks of the device's T capacity.
    (void)draft;
    int C = g->config.dim;
    for (int start = 0; start < T; start += g->max_tokens) {
        int n = T - start < g->max_tokens ? T - start : g->max_tokens;
        cudaCheck(cudaMemcpy(g->features, features + (size_t)start * 3 * C, (size_t)n * 3 * C * sizeof(float),
                             cudaMemcpyHostToDevice));
        matmul_forward_cuda(g->hidden_in, g->features, g->weights.fc, n, 3 * C, C);
        cudaCheck(cudaMemcpy(hidden + (size_t)start * C, g->hidden_in, (size_t)n * C * sizeof(float), cudaMemcpyDeviceToHost));
    }
}

// The decoder layer over T rows on the device, op for op as draft_layer_forward (draft.c), which serving
// and the training unroll share; this twin is shared the same way by draft_forward_cuda and
// trainer_step_cuda. Every pointer is device memory: a holds device buffers (hidden_in, embed, attn_in,
// q, attn_out, proj, h, h_norm, ffn_gate, ffn_up, ffn_hidden, out; k and v are not used: the keys and
// values are projected straight into their rows [n_past, n_past + T) of key_buffer / value_buffer).
// mask is the full (T, n_past + T) mask. ffn_hidden may equal ffn_gate (serving keeps no gate).
static void draft_layer_forward_cuda(const DraftConfig* c, const DraftWeights* w, const float* target_embedding,
                                     DraftActivations* a, float* key_buffer, float* value_buffer, const int* tokens,
                                     const float* hidden, const int* positions, const uint8_t* mask, int T, int n_past) {
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim;
    int V = c->target_vocab_size, QD = NH * HS, KVD = NKV * HS, P = n_past + T;
    float* k = key_buffer + (size_t)n_past * KVD;
    float* v = value_buffer + (size_t)n_past * KVD;

    // inputs: u (hidden may be the previous step's out), e_t = the target's embedding of tokens[t]
    if (hidden != a->hidden_in) {
        cudaCheck(cudaMemcpy(a->hidden_in, hidden, (size_t)T * C * sizeof(float), cudaMemcpyDeviceToDevice));
    }
    embedding_forward_cuda(a->embed, tokens, target_embedding, T, C, V);
    // attn_in row t = [RMSNorm_e(e_t), RMSNorm_u(u_t)]: each norm over all rows into proj (free until the
    // output projection below), then a strided copy into its half of attn_in
    rmsnorm_forward_cuda(a->proj, a->embed, w->embed_norm, T, C, c->norm_eps);
    cudaCheck(cudaMemcpy2D(a->attn_in, 2 * C * sizeof(float), a->proj, C * sizeof(float), C * sizeof(float), T,
                           cudaMemcpyDeviceToDevice));
    rmsnorm_forward_cuda(a->proj, a->hidden_in, w->hidden_norm, T, C, c->norm_eps);
    cudaCheck(cudaMemcpy2D(a->attn_in + C, 2 * C * sizeof(float), a->proj, C * sizeof(float), C * sizeof(float), T,
                           cudaMemcpyDeviceToDevice));

    // attention block: h = u + wo(attention(rope(wq a_in), rope(wk a_in), wv a_in))
    matmul_forward_cuda(a->q, a->attn_in, w->wq, T, 2 * C, QD);
    matmul_forward_cuda(k, a->attn_in, w->wk, T, 2 * C, KVD);
    matmul_forward_cuda(v, a->attn_in, w->wv, T, 2 * C, KVD);
    rope_forward_cuda(a->q, a->q, positions, T, NH, HS, c->rope_theta);
    rope_forward_cuda(k, k, positions, T, NKV, HS, c->rope_theta);
    attention_forward_cuda(a->attn_out, a->q, key_buffer, value_buffer, mask, T, P, NH, NKV, HS);
    matmul_forward_cuda(a->proj, a->attn_out, w->wo, T, QD, C);
    residual_forward_cuda(a->h, a->hidden_in, a->proj, T * C);

    // MLP block: out = h + w_down(silu(w_gate n) * w_up n), n = RMSNorm_ffn(h)
    rmsnorm_forward_cuda(a->h_norm, a->h, w->ffn_norm, T, C, c->norm_eps);
    matmul_forward_cuda(a->ffn_gate, a->h_norm, w->w_gate, T, C, F);
    matmul_forward_cuda(a->ffn_up, a->h_norm, w->w_up, T, C, F);
    swiglu_forward_cuda(a->ffn_hidden, a->ffn_gate, a->ffn_up, T * F);
    matmul_forward_cuda(a->proj, a->ffn_hidden, w->w_down, T, F, C);
    residual_forward_cuda(a->out, a->h, a->proj, T * C);
}

// The LM head over the draft vocabulary, as draft_head_forward: logits (T, V_d) = lm_head(RMSNorm_out(out)).
static void draft_head_forward_cuda(const DraftConfig* c, const DraftWeights* w, float* logits, float* out_norm,
                                    const float* out, int T) {
    rmsnorm_forward_cuda(out_norm, out, w->output_norm, T, c->dim, c->norm_eps);
    matmul_forward_cuda(logits, out_norm, w->lm_head, T, c->dim, c->vocab_size);
}

extern "C" void draft_forward_cuda(DraftCuda* g, Draft* draft, const int* tokens, const float* hidden, const int* positions,
                                   const uint8_t* mask, int T, int n_past) {
    const DraftConfig* c = &g->config;
    DraftActivations* host = &draft->act;
    int C = c->dim, V = c->target_vocab_size, V_draft = c->vocab_size, S = g->cache_capacity, P = n_past + T;
    if (T < 1 || T > g->max_tokens || T > host->max_tokens || n_past < 0 || P > S) {
        fprintf(stderr, "error: draft_forward_cuda called with T=%d n_past=%d (max %d tokens per call, %d cache slots)\n",
                T, n_past, g->max_tokens, S);
        exit(EXIT_FAILURE); // callers check these bounds first; reaching here is a program bug
    }
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= V) { // on the GPU a bad id would read outside the table
            fprintf(stderr, "error: draft_forward_cuda: token %d is %d, expected a target id in [0, %d)\n", t, tokens[t], V);
            exit(EXIT_FAILURE);
        }
    }

    // inputs to the device (hidden may be host act.out of the previous call: it is read before the
    // results are written back) and the (T, P) mask
    cudaCheck(cudaMemcpy(g->tokens, tokens, (size_t)T * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(g->positions, positions, (size_t)T * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(g->hidden_in, hidden, (size_t)T * C * sizeof(float), cudaMemcpyHostToDevice));
    build_attention_mask_cuda(g->mask, mask, T, n_past);

    // the layer (serving keeps no SwiGLU gate: ffn_hidden is computed in place over ffn_gate), the head
    DraftActivations a;
    memset(&a, 0, sizeof(a));
    a.hidden_in = g->hidden_in; a.embed = g->embed; a.attn_in = g->attn_in; a.q = g->q; a.attn_out = g->attn_out;
    a.proj = g->proj; a.h = g->h; a.h_norm = g->h_norm; a.ffn_gate = g->ffn_gate; a.ffn_up = g->ffn_up;
    a.ffn_hidden = g->ffn_gate; a.out = g->out;
    draft_layer_forward_cuda(c, &g->weights, g->target_embedding, &a, g->key_cache, g->value_cache, g->tokens, g->hidden_in,
                             g->positions, g->mask, T, n_past);
    draft_head_forward_cuda(c, &g->weights, g->logits, g->out_norm, g->out, T);

    // results back to the host activations (cudaMemcpy to the host waits for the kernels)
    cudaCheck(cudaMemcpy(host->out, g->out, (size_t)T * C * sizeof(float), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(host->logits, g->logits, (size_t)T * V_draft * sizeof(float), cudaMemcpyDeviceToHost));
}

// ----------------------------------------------------------------------------
// acceptance reading device memory. The decisions must be bit-identical to accept_greedy /
// accept_sampling (speculative.c) given the same inputs, so the GPU does only what is exact:
//   greedy:   the argmax of every node's logits row (one block per row, ties to the lowest index, as
//             sample_argmax); the walk from the root over those N ints runs on the host
//   sampling: a gather of each node's token probability under its parent's distribution (the only
//             numbers the walk tests), the walk on the host with the same double-precision residual
//             mass, then the residual (the last node's row with every rejected token zeroed) built in
//             device memory and the bonus drawn from it by one thread, adding in the CPU's order.
// Device scratch for these few ints and floats is allocated on first use and kept for the process.

static int* accept_ints = NULL;        // (TREE_MAX_NODES) argmax per node; [0] also the bonus draw
static float* accept_values = NULL;    // (TREE_MAX_NODES) gathered probabilities
static size_t* accept_offsets = NULL;  // (TREE_MAX_NODES) where each gathered value lives

static void accept_scratch_init(void) {
    if (accept_ints != NULL) { return; }
    accept_ints = (int*)deviceMalloc(TREE_MAX_NODES * sizeof(int));
    accept_values = (float*)deviceMalloc(TREE_MAX_NODES * sizeof(float));
    accept_offsets = (size_t*)deviceMalloc(TREE_MAX_NODES * sizeof(size_t));
}

// Is (value_a, index_a) a better argmax than (value_b, index_b)? Larger value, then lower index.
__device__ int argmax_better(float value_a, int index_a, float value_b, int index_b) {
    return value_a > value_b || (value_a == value_b && index_a < index_b);
}

// out[row] = sample_argmax(logits row, V). sample_argmax's strict > never picks a NaN, except that a NaN
// at index 0 stays the answer; the same here: NaNs are skipped and a row with no other winner gives 0.
__global__ void argmax_kernel(int* out, const float* logits, int V) {
    __shared__ float best_values[BLOCK_SIZE];
    __shared__ int best_indices[BLOCK_SIZE];
    const float* x = logits + (size_t)blockIdx.x * V;
    float best_value = -INFINITY;
    int best_index = INT_MAX; // worse than any entry (an entry of -inf wins the tie by its lower index)
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        if (!isnan(x[i]) && argmax_better(x[i], i, best_value, best_index)) { best_value = x[i]; best_index = i; }
    }
    best_values[threadIdx.x] = best_value;
    best_indices[threadIdx.x] = best_index;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) {
            int other = threadIdx.x + stride;
            if (argmax_better(best_values[other], best_indices[other], best_values[threadIdx.x], best_indices[threadIdx.x])) {
                best_values[threadIdx.x] = best_values[other];
                best_indices[threadIdx.x] = best_indices[other];
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) { out[blockIdx.x] = isnan(x[0]) || best_indices[0] == INT_MAX ? 0 : best_indices[0]; }
}

// out[i] = source[offsets[i]]; one thread per value
__global__ void gather_kernel(float* out, const float* source, const size_t* offsets, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) { out[i] = source[offsets[i]]; }
}

// *out = sample_multinomial(probs, V, coin), on one thread: the cumulative float sum in the CPU's order
__global__ void sample_multinomial_kernel(int* out, const float* probs, int V, float coin) {
    float cumulative = 0.0f;
    for (int i = 0; i < V; i++) {
        cumulative = __fadd_rn(cumulative, probs[i]);
        if (coin < cumulative) { *out = i; return; }
    }
    for (int i = V - 1; i >= 0; i--) { if (probs[i] > 0.0f) { *out = i; return; } }
    *out = V - 1;
}

extern "C" void accept_greedy_cuda(Acceptance* out, const Tree* tree, const float* target_logits, int V) {
    // target_logits: (N, V) device memory
    int N = tree->n_nodes;
    int choices[TREE_MAX_NODES];
    accept_scratch_init();
    argmax_kernel<<<N, BLOCK_SIZE>>>(accept_ints, target_logits, V);
    cudaCheckLaunch("argmax_kernel");
    cudaCheck(cudaMemcpy(choices, accept_ints, (size_t)N * sizeof(int), cudaMemcpyDeviceToHost));
    // the walk of accept_greedy, reading the argmax of each node from choices
    int node = 0;
    out->n_accepted = 0;
    out->path[0] = 0;
    for (;;) {
        int target_choice = choices[node];
        int next = -1;
        for (int c = 0; c < tree->n_children[node]; c++) {
            int child = tree->children[node][c];
            if (tree->tokens[child] == target_choice) { next = child; break; }
        }
        if (next < 0) { out->bonus = target_choice; return; }
        out->path[++out->n_accepted] = next;
        node = next;
    }
}

extern "C" void accept_sampling_cuda(Acceptance* out, const Tree* tree, const float* p_target, const float* uniforms, int V,
                                     float* residual) {
    // p_target: (N, V) device memory; uniforms: (N) host; residual: (V) device scratch
    int N = tree->n_nodes;
    accept_scratch_init();
    // probability[i] = p_target[parent(i)][token(i)]: node i's value in its parent's residual until a
    // sibling with the same token is rejected (then 0, as the CPU's zeroed entry)
    float probability[TREE_MAX_NODES];
    if (N > 1) {
        size_t offsets[TREE_MAX_NODES];
        for (int i = 1; i < N; i++) { offsets[i - 1] = (size_t)tree->parents[i] * V + tree->tokens[i]; }
        cudaCheck(cudaMemcpy(accept_offsets, offsets, (size_t)(N - 1) * sizeof(size_t), cudaMemcpyHostToDevice));
        gather_kernel<<<ceil_div(N - 1, BLOCK_SIZE), BLOCK_SIZE>>>(accept_values, p_target, accept_offsets, N - 1);
        cudaCheckLaunch("gather_kernel");
        cudaCheck(cudaMemcpy(probability + 1, accept_values, (size_t)(N - 1) * sizeof(float), cudaMemcpyDeviceToHost));
    }
    // the walk of accept_sampling, with the residual's tested entries tracked on the host
    int node = 0;
    out->n_accepted = 0;
    out->path[0] = 0;
    for (;;) {
        double residual_mass = 1.0;
        int rejected[TREE_MAX_NODES]; // tokens zeroed in the residual at this node
        int n_rejected = 0;
        int next = -1;
        for (int c = 0; c < tree->n_children[node]; c++) {
            int child = tree->children[node][c];
            int token = tree->tokens[child];
            float residual_token = probability[child];
            for (int r = 0; r < n_rejected; r++) { if (rejected[r] == token) { residual_token = 0.0f; } }
            if (residual_mass > 0.0 && uniforms[child] < residual_token / residual_mass) { next = child; break; }
            residual_mass -= residual_token;
            rejected[n_rejected++] = token;
        }
        if (next < 0) {
            // the bonus: residual = this node's row with the rejected tokens zeroed, then one draw
            cudaCheck(cudaMemcpy(residual, p_target + (size_t)node * V, (size_t)V * sizeof(float), cudaMemcpyDeviceToDevice));
            for (int r = 0; r < n_rejected; r++) { cudaCheck(cudaMemset(residual + rejected[r], 0, sizeof(float))); }
            float coin = (float)(uniforms[0] * (residual_mass > 0.0 ? residual_mass : 0.0));
            sample_multinomial_kernel<<<1, 1>>>(accept_ints, residual, V, coin);
            cudaCheckLaunch("sample_multinomial_kernel");
            cudaCheck(cudaMemcpy(&out->bonus, accept_ints, sizeof(int), cudaMemcpyDeviceToHost));
            return;
        }
        out->path[++out->n_accepted] = next;
        node = next;
    }
}

// ============================================================================
// Backward passes: the twins of cpu_ref.c's backward section, same name root with _cuda, same argument
// order, same semantics: gradients ACCUMULATE (+=) into the d-buffers and a NULL d-buffer is skipped,
// except rope_backward_cuda, which ASSIGNS (dinp == dout allowed). Every reduction is deterministic:
// each output element is summed by one thread, or one block, in a fixed order (the CPU's order wherever
// that costs nothing), never with atomics, so two runs give identical bits. Products and sums that the
// CPU rounds one by one use __fmul_rn / __fadd_rn (no FMA contraction), as in the forward kernels.

// ----------------------------------------------------------------------------
// matmul backward, two tiled kernels shaped like matmul_forward_kernel:
//   dinp[t][c]    += sum_o dout[t][o] * weight[o][c]     thread (t, c) adds the products in increasing o
//   dweight[o][c] += sum_t dout[t][o] * inp[t][c]        thread (o, c) adds the products in increasing t
// Each thread sums from zero and adds its sum to the d-buffer once, exactly as matmul_backward_cpu.

__global__ void matmul_backward_dinp_kernel(float* dinp, const float* dout, const float* weight, int T, int C, int OC) {
    __shared__ float dout_tile[TILE][TILE];     // [t][o]
    __shared__ float weight_tile[TILE][TILE];   // [o][c]
    int t0 = blockIdx.y * TILE, c0 = blockIdx.x * TILE;
    int t = t0 + threadIdx.y, c = c0 + threadIdx.x;   // the dinp element this thread computes
    float sum = 0.0f;
    for (int o0 = 0; o0 < OC; o0 += TILE) {
        // thread (y, x) stages dout[t0 + y][o0 + x] and weight[o0 + y][c0 + x] (both coalesced along x)
        int o_column = o0 + threadIdx.x, o_row = o0 + threadIdx.y;
        dout_tile[threadIdx.y][threadIdx.x] = (t < T && o_column < OC) ? dout[(size_t)t * OC + o_column] : 0.0f;
        weight_tile[threadIdx.y][threadIdx.x] = (o_row < OC && c < C) ? weight[(size_t)o_row * C + c] : 0.0f;
        __syncthreads();
        int n = OC - o0 < TILE ? OC - o0 : TILE;
        for (int k = 0; k < n; k++) {
            sum = __fadd_rn(sum, __fmul_rn(dout_tile[threadIdx.y][k], weight_tile[k][threadIdx.x]));
        }
        __syncthreads();
    }
    if (t < T && c < C) { dinp[(size_t)t * C + c] = __fadd_rn(dinp[(size_t)t * C + c], sum); }
}

__global__ void matmul_backward_dweight_kernel(float* dweight, const float* dout, const float* inp, int T, int C, int OC) {
    __shared__ float dout_tile[TILE][TILE + 1]; // [t][o]; +1: reads down a column hit distinct banks
    __shared__ float inp_tile[TILE][TILE];      // [t][c]
    int o0 = blockIdx.y * TILE, c0 = blockIdx.x * TILE;
    int o = o0 + threadIdx.y, c = c0 + threadIdx.x;   // the dweight element this thread computes
    float sum = 0.0f;
    for (int s0 = 0; s0 < T; s0 += TILE) {
        // thread (y, x) stages dout[s0 + y][o0 + x] and inp[s0 + y][c0 + x] (both coalesced along x)
        int row = s0 + threadIdx.y, o_column = o0 + threadIdx.x;
        dout_tile[threadIdx.y][threadIdx.x] = (row < T && o_column < OC) ? dout[(size_t)row * OC + o_column] : 0.0f;
        inp_tile[threadIdx.y][threadIdx.x] = (row < T && c < C) ? inp[(size_t)row * C + c] : 0.0f;
        __syncthreads();
        int n = T - s0 < TILE ? T - s0 : TILE;
        for (int k = 0; k < n; k++) {
            sum = __fadd_rn(sum, __fmul_rn(dout_tile[k][threadIdx.y], inp_tile[k][threadIdx.x]));
        }
        __syncthreads();
    }
    if (o < OC && c < C) { dweight[(size_t)o * C + c] = __fadd_rn(dweight[(size_t)o * C + c], sum); }
}

extern "C" void matmul_backward_cuda(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                                     int T, int C, int OC) {
    // dinp, inp: (T, C); dweight, weight: (OC, C); dout: (T, OC)
    if (T == 0 || C == 0 || OC == 0) { return; } // every sum is empty: nothing to add
    dim3 block(TILE, TILE);
    if (dinp != NULL) {
        dim3 grid(ceil_div(C, TILE), ceil_div(T, TILE));
        matmul_backward_dinp_kernel<<<grid, block>>>(dinp, dout, weight, T, C, OC);
        cudaCheckLaunch("matmul_backward_dinp_kernel");
    }
    if (dweight != NULL) {
        dim3 grid(ceil_div(C, TILE), ceil_div(OC, TILE));
        matmul_backward_dweight_kernel<<<grid, block>>>(dweight, dout, inp, T, C, OC);
        cudaCheckLaunch("matmul_backward_dweight_kernel");
    }
}

// ----------------------------------------------------------------------------
// RMSNorm backward. Per row, s = 1/sqrt(sum_c x[c]^2 / C + eps) (the sum of squares in double, as in the
// forward), then
//   dx[j] += s * w[j] * dy[j] - x[j] * s^3 / C * sum_c w[c] dy[c] x[c]    one block per row
//   dw[c] += dy[c] * x[c] * s                                              one thread per column c, the
// rows in increasing order (the CPU's order); its block recomputes each row's s with a block reduction.

__global__ void rmsnorm_backward_dinp_kernel(float* dinp, const float* dout, const float* inp, const float* weight, int C,
                                             float eps) {
    const float* x = inp + (size_t)blockIdx.x * C;
    const float* dy = dout + (size_t)blockIdx.x * C;
    float* dx = dinp + (size_t)blockIdx.x * C;
    double sum_squares = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { sum_squares += (double)x[c] * x[c]; }
    sum_squares = block_sum(sum_squares);
    double scale = 1.0 / sqrt(sum_squares / C + eps);
    // the reduction through the scale: sum_c w[c] dy[c] x[c], in double like the CPU's
    double dot = 0.0;
    for (int c = threadIdx.x; c < C; c += blockDim.x) { dot += (double)weight[c] * dy[c] * x[c]; }
    dot = block_sum(dot);
    double through_scale = scale * scale * scale / C * dot;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        dx[c] = __fadd_rn(dx[c], (float)(scale * weight[c] * dy[c] - x[c] * through_scale));
    }
}

__global__ void rmsnorm_backward_dweight_kernel(float* dweight, const float* dout, const float* inp, int T, int C, float eps) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;  // this thread's column (threads past C only help reduce)
    float accumulated = c < C ? dweight[c] : 0.0f;
    for (int t = 0; t < T; t++) {
        const float* x = inp + (size_t)t * C;
        double sum_squares = 0.0;
        for (int j = threadIdx.x; j < C; j += blockDim.x) { sum_squares += (double)x[j] * x[j]; }
        sum_squares = block_sum(sum_squares); // every thread of the block takes part, every row
        double scale = 1.0 / sqrt(sum_squares / C + eps);
        if (c < C) {
            float product = __fmul_rn(dout[(size_t)t * C + c], x[c]); // dy[c] * x[c] is a float product in C
            accumulated = __fadd_rn(accumulated, (float)(product * scale));
        }
    }
    if (c < C) { dweight[c] = accumulated; }
}

extern "C" void rmsnorm_backward_cuda(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                                      int T, int C, float eps) {
    // dinp, dout, inp: (T, C); dweight, weight: (C)
    if (T == 0 || C == 0) { return; }
    if (dinp != NULL) {
        rmsnorm_backward_dinp_kernel<<<T, BLOCK_SIZE>>>(dinp, dout, inp, weight, C, eps);
        cudaCheckLaunch("rmsnorm_backward_dinp_kernel");
    }
    if (dweight != NULL) {
        rmsnorm_backward_dweight_kernel<<<ceil_div(C, BLOCK_SIZE), BLOCK_SIZE>>>(dweight, dout, inp, T, C, eps);
        cudaCheckLaunch("rmsnorm_backward_dweight_kernel");
    }
}

// ----------------------------------------------------------------------------
// RoPE backward: dinp = R^T dout, the rotation by -angle: rope_rotate_kernel with direction -1 (one
// thread per pair, so dinp == dout is allowed). ASSIGNS, like rope_backward_cpu.

extern "C" void rope_backward_cuda(float* dinp, const float* dout, const int* positions, int T, int n_heads, int HS, float theta) {
    // dinp, dout: (T, n_heads * HS) (dinp == dout allowed); positions: (T)
    size_t total = (size_t)T * n_heads * (HS / 2);
    if (total == 0) { return; }
    rope_rotate_kernel<<<ceil_div(total, BLOCK_SIZE), BLOCK_SIZE>>>(dinp, dout, positions, T, n_heads, HS, theta, -1.0f);
    cudaCheckLaunch("rope_rotate_kernel");
}

// ----------------------------------------------------------------------------
// Attention backward (masked, grouped-query), deterministic, in two kernels:
//   1. one block per (query t, head h), the CPU's per-row math: recompute the softmax weights a_p with
//      the forward's two passes, da_p = dout_t . v_p, ds_p = a_p (da_p - sum_j a_j da_j) * scale, and
//      dq_t += sum_p ds_p k_p (thread i adds over p in increasing order). a_p and ds_p of every (t, h, p)
//      are written to a scratch (T, NH, P) pair for kernel 2 (zeros where masked).
//   2. one thread per element (p, kv head, i) of dkeys / dvalues: it owns that element and adds, over the
//      kv head's query heads h (outer) and the queries t (inner) that see p, the terms
//      dv_p[i] += a_p dout_t[i] and dk_p[i] += ds_p q_t[i]: the CPU's order of accumulation, no atomics.
// The scratch (2 T NH P floats) is device memory kept between calls and grown on demand (not thread-safe:
// one trainer per process drives the GPU backward).

static float* attention_scratch = NULL;
static size_t attention_scratch_floats = 0;

__global__ void attention_backward_scores_kernel(float* dq, float* weights_scratch, float* dscores_scratch, const float* dout,
                                                 const float* q, const float* keys, const float* values, const uint8_t* mask,
                                                 int P, int NH, int NKV, int HS, float scale) {
    extern __shared__ float shared[];
    float* q_shared = shared;          // (HS)
    float* dout_shared = shared + HS;  // (HS)
    __shared__ float sum_weights, weighted_dweights;
    int t = blockIdx.x / NH, h = blockIdx.x % NH;
    int kv_head = h / (NH / NKV);
    int KVD = NKV * HS;
    const float* q_th = q + (size_t)t * NH * HS + (size_t)h * HS;
    const float* dout_th = dout + (size_t)t * NH * HS + (size_t)h * HS;
    const uint8_t* mask_t = mask + (size_t)t * P;
    float* a = weights_scratch + ((size_t)t * NH + h) * P;   // (P) scores, then weights a_p
    float* ds = dscores_scratch + ((size_t)t * NH + h) * P;  // (P) da_p, then ds_p
    for (int i = threadIdx.x; i < HS; i += blockDim.x) { q_shared[i] = q_th[i]; dout_shared[i] = dout_th[i]; }
    __syncthreads();

    // forward pass 1: the visible scores and their maximum (masked slots: a = ds = 0)
    float max_score = -INFINITY;
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        float score = 0.0f;
        if (mask_t[p]) {
            const float* k_p = keys + (size_t)p * KVD + (size_t)kv_head * HS;
            for (int i = 0; i < HS; i++) { score = __fadd_rn(score, __fmul_rn(q_shared[i], k_p[i])); }
            score = __fmul_rn(score, scale);
            max_score = fmaxf(max_score, score);
        }
        a[p] = score;
        ds[p] = 0.0f;
    }
    max_score = block_max(max_score); // (also a barrier)
    if (max_score == -INFINITY) { // fully masked row: out = 0, no gradient flows (a and ds stay 0)
        for (int p = threadIdx.x; p < P; p += blockDim.x) { a[p] = 0.0f; }
        return;
    }
    // forward pass 2: weight = expf(score * scale - max), normalised by their sum (added in increasing p)
    for (int p = threadIdx.x; p < P; p += blockDim.x) { a[p] = mask_t[p] ? expf(a[p] - max_score) : 0.0f; }
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.0f;
        for (int p = 0; p < P; p++) { if (mask_t[p]) { sum = __fadd_rn(sum, a[p]); } }
        sum_weights = sum;
    }
    __syncthreads();
    // out_t = sum_p a_p v_p: da_p = dout_t . v_p
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        if (!mask_t[p]) { continue; }
        a[p] = a[p] / sum_weights;
        const float* v_p = values + (size_t)p * KVD + (size_t)kv_head * HS;
        float da = 0.0f;
        for (int i = 0; i < HS; i++) { da = __fadd_rn(da, __fmul_rn(dout_shared[i], v_p[i])); }
        ds[p] = da;
    }
    __syncthreads();
    if (threadIdx.x == 0) { // sum_j a_j da_j, in increasing j
        float sum = 0.0f;
        for (int p = 0; p < P; p++) { if (mask_t[p]) { sum = __fadd_rn(sum, __fmul_rn(a[p], ds[p])); } }
        weighted_dweights = sum;
    }
    __syncthreads();
    // a = softmax(score): ds_p = a_p (da_p - sum_j a_j da_j), times the score's scale
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        if (mask_t[p]) { ds[p] = __fmul_rn(__fmul_rn(a[p], __fsub_rn(ds[p], weighted_dweights)), scale); }
    }
    __syncthreads();
    // score_p = q_t . k_p * scale: dq_t += sum_p ds_p k_p
    if (dq == NULL) { return; }
    float* dq_th = dq + (size_t)t * NH * HS + (size_t)h * HS;
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float accumulated = dq_th[i];
        for (int p = 0; p < P; p++) {
            if (!mask_t[p]) { continue; }
            accumulated = __fadd_rn(accumulated, __fmul_rn(ds[p], keys[(size_t)p * KVD + (size_t)kv_head * HS + i]));
        }
        dq_th[i] = accumulated;
    }
}

__global__ void attention_backward_kv_kernel(float* dkeys, float* dvalues, const float* weights_scratch,
                                             const float* dscores_scratch, const float* dout, const float* q,
                                             const uint8_t* mask, int T, int P, int NH, int NKV, int HS) {
    int KVD = NKV * HS, group = NH / NKV;
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;  // element (p, kv_head, i) of (P, KVD)
    if (index >= (size_t)P * KVD) { return; }
    int p = (int)(index / KVD), kv_head = (int)(index % KVD) / HS, i = (int)(index % HS);
    float dk = dkeys != NULL ? dkeys[index] : 0.0f;
    float dv = dvalues != NULL ? dvalues[index] : 0.0f;
    for (int h = kv_head * group; h < (kv_head + 1) * group; h++) {
        for (int t = 0; t < T; t++) {
            if (!mask[(size_t)t * P + p]) { continue; }
            size_t score = ((size_t)t * NH + h) * P + p;
            size_t element = (size_t)t * NH * HS + (size_t)h * HS + i;
            dv = __fadd_rn(dv, __fmul_rn(weights_scratch[score], dout[element]));
            dk = __fadd_rn(dk, __fmul_rn(dscores_scratch[score], q[element]));
        }
    }
    if (dkeys != NULL) { dkeys[index] = dk; }
    if (dvalues != NULL) { dvalues[index] = dv; }
}

extern "C" void attention_backward_cuda(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                                        const float* keys, const float* values, const uint8_t* mask,
                                        int T, int P, int NH, int NKV, int HS) {
    // dq, dout, q: (T, NH*HS); dkeys, dvalues, keys, values: (P, NKV*HS); mask: (T, P)
    if (T == 0 || P == 0 || (dq == NULL && dkeys == NULL && dvalues == NULL)) { return; }
    float scale = 1.0f / sqrtf((float)HS); // on the host, exactly as the CPU computes it
    size_t n_scores = (size_t)T * NH * P;
    if (2 * n_scores > attention_scratch_floats) {
        if (attention_scratch != NULL) { cudaCheck(cudaFree(attention_scratch)); }
        attention_scratch = (float*)deviceMalloc(2 * n_scores * sizeof(float));
        attention_scratch_floats = 2 * n_scores;
    }
    float* weights_scratch = attention_scratch;
    float* dscores_scratch = attention_scratch + n_scores;
    size_t shared_bytes = 2 * (size_t)HS * sizeof(float);
    attention_backward_scores_kernel<<<T * NH, BLOCK_SIZE, shared_bytes>>>(dq, weights_scratch, dscores_scratch, dout, q, keys,
                                                                          values, mask, P, NH, NKV, HS, scale);
    cudaCheckLaunch("attention_backward_scores_kernel");
    if (dkeys != NULL || dvalues != NULL) {
        size_t total = (size_t)P * NKV * HS;
        attention_backward_kv_kernel<<<ceil_div(total, BLOCK_SIZE), BLOCK_SIZE>>>(dkeys, dvalues, weights_scratch,
                                                                                 dscores_scratch, dout, q, mask, T, P, NH, NKV, HS);
        cudaCheckLaunch("attention_backward_kv_kernel");
    }
}

// ----------------------------------------------------------------------------
// SwiGLU backward, elementwise. Forward: out = g * sig(g) * u.
//   dgate += dout * u * (sig + g * sig * (1 - sig))
//   dup   += dout * g * sig

__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N) { return; }
    float g = gate[i];
    float sig = 1.0f / (1.0f + expf(-g));
    if (dgate != NULL) {
        float dsilu = __fadd_rn(sig, __fmul_rn(__fmul_rn(g, sig), __fsub_rn(1.0f, sig)));
        dgate[i] = __fadd_rn(dgate[i], __fmul_rn(__fmul_rn(dout[i], up[i]), dsilu));
    }
    if (dup != NULL) { dup[i] = __fadd_rn(dup[i], __fmul_rn(__fmul_rn(dout[i], g), sig)); }
}

extern "C" void swiglu_backward_cuda(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N) {
    if (N == 0) { return; }
    swiglu_backward_kernel<<<ceil_div(N, BLOCK_SIZE), BLOCK_SIZE>>>(dgate, dup, dout, gate, up, N);
    cudaCheckLaunch("swiglu_backward_kernel");
}

// ----------------------------------------------------------------------------
// Training losses over logits (T, V), one block per row, all in double as distribution_loss_cpu:
// log q = z - (max + log sum exp(z - max)), and with the row's sums reduced over the block:
//   FORWARD_KL  L = -sum_v p(v) log q(v)                 dL/dz(j) = q(j) sum_v p(v) - p(j)
//   REVERSE_KL  L = sum_v q(v) (log q(v) - log p(v))     dL/dz(j) = q(j) (log q(j) - log p(j) - L)
//   NEXT_TOKEN  L = -log q(x)                            dL/dz(j) = q(j) - [j == x]
// REVERSE_KL clamps log p at log(1e-30), the same constant as cpu_ref.c. Writes losses[t]; if dlogits is
// not NULL, ADDS weights[t] * dL/dz to it (weights NULL means 1).

#define REVERSE_KL_MIN_PROBABILITY 1e-30 // as in cpu_ref.c

__global__ void distribution_loss_kernel(float* losses, float* dlogits, const float* logits, const float* p_target,
                                         const int* target_tokens, const float* weights, int V, int kind) {
    int t = blockIdx.x;
    const float* z = logits + (size_t)t * V;
    const float* p = p_target != NULL ? p_target + (size_t)t * V : NULL;
    // log-softmax: log q(v) = z(v) - max - log sum_v exp(z(v) - max)
    float max_float = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x) { max_float = fmaxf(max_float, z[v]); }
    double max_logit = (double)block_max(max_float);
    double sum_exp = 0.0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) { sum_exp += exp((double)z[v] - max_logit); }
    sum_exp = block_sum(sum_exp);
    double log_normaliser = max_logit + log(sum_exp);
    double loss = 0.0, sum_p = 0.0;
    if (kind == LOSS_FORWARD_KL) {
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            if (p[v] == 0.0f) { continue; } // 0 * log q = 0, even where q underflows
            loss -= (double)p[v] * ((double)z[v] - log_normaliser);
            sum_p += p[v];
        }
        loss = block_sum(loss);
        sum_p = block_sum(sum_p);
    } else if (kind == LOSS_REVERSE_KL) {
        for (int v = threadIdx.x; v < V; v += blockDim.x) {
            double log_q = (double)z[v] - log_normaliser;
            double log_p = log(fmax((double)p[v], REVERSE_KL_MIN_PROBABILITY));
            loss += exp(log_q) * (log_q - log_p);
        }
        loss = block_sum(loss);
    } else { // LOSS_NEXT_TOKEN
        loss = -((double)z[target_tokens[t]] - log_normaliser);
    }
    if (threadIdx.x == 0) { losses[t] = (float)loss; }
    if (dlogits == NULL) { return; }
    double row_weight = weights != NULL ? weights[t] : 1.0;
    float* dz = dlogits + (size_t)t * V;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        double log_q = (double)z[j] - log_normaliser;
        double q = exp(log_q);
        double gradient;
        if (kind == LOSS_FORWARD_KL) {
            gradient = q * sum_p - p[j];
        } else if (kind == LOSS_REVERSE_KL) {
            gradient = q * (log_q - log(fmax((double)p[j], REVERSE_KL_MIN_PROBABILITY)) - loss);
        } else {
            gradient = q - (j == target_tokens[t] ? 1.0 : 0.0);
        }
        dz[j] = __fadd_rn(dz[j], (float)(row_weight * gradient));
    }
}

extern "C" void distribution_loss_cuda(float* losses, float* dlogits, const float* logits, const float* p_target,
                                       const int* target_tokens, const float* weights, int T, int V, LossKind kind) {
    // losses: (T); dlogits, logits, p_target: (T, V); target_tokens, weights: (T)
    if (T == 0) { return; }
    distribution_loss_kernel<<<T, BLOCK_SIZE>>>(losses, dlogits, logits, p_target, target_tokens, weights, V, (int)kind);
    cudaCheckLaunch("distribution_loss_kernel");
}

// ----------------------------------------------------------------------------
// AdamW, elementwise, PyTorch's order as adamw_update_cpu; the bias corrections are computed on the host
// exactly as the CPU computes them, and each float operation is rounded on its own (no FMA contraction,
// IEEE division and square root), as the CPU build does, so given the same gradients the two steps agree
// to the last bit or nearly so.

__global__ void adamw_update_kernel(float* params, const float* grads, float* m, float* v, size_t N, float learning_rate,
                                    float beta1, float beta2, float eps, float weight_decay, float bias_correction1,
                                    float bias_correction2) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) { return; }
    float g = grads[i];
    params[i] = __fmul_rn(params[i], __fsub_rn(1.0f, __fmul_rn(learning_rate, weight_decay)));
    m[i] = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(__fsub_rn(1.0f, beta1), g));
    v[i] = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, beta2), g), g));
    float m_hat = __fdiv_rn(m[i], bias_correction1);
    float v_hat = __fdiv_rn(v[i], bias_correction2);
    params[i] = __fsub_rn(params[i], __fdiv_rn(__fmul_rn(learning_rate, m_hat), __fadd_rn(__fsqrt_rn(v_hat), eps)));
}

extern "C" void adamw_update_cuda(float* params, const float* grads, float* m, float* v, size_t N, float learning_rate,
                                  float beta1, float beta2, float eps, float weight_decay, int t) {
    if (N == 0) { return; }
    float bias_correction1 = (float)(1.0 - pow((double)beta1, t));
    float bias_correction2 = (float)(1.0 - pow((double)beta2, t));
    adamw_update_kernel<<<ceil_div(N, BLOCK_SIZE), BLOCK_SIZE>>>(params, grads, m, v, N, learning_rate, beta1, beta2, eps,
                                                                weight_decay, bias_correction1, bias_correction2);
    cudaCheckLaunch("adamw_update_kernel");
}

// ----------------------------------------------------------------------------
// sum of squares in double, deterministic: a fixed grid of SUM_SQUARES_BLOCKS blocks (whatever N and the
// device), each thread a fixed grid-strided slice, each block a fixed tree reduction; the block partials
// are added on the host in block order. Returns the sum on the host.

#define SUM_SQUARES_BLOCKS 256

__global__ void sum_squares_kernel(double* partials, const float* values, size_t N) {
    double sum = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (size_t)gridDim.x * blockDim.x) {
        sum += (double)values[i] * values[i]; // exact in double
    }
    sum = block_sum(sum);
    if (threadIdx.x == 0) { partials[blockIdx.x] = sum; }
}

extern "C" double sum_squares_cuda(const float* values, size_t N) {
    static double* partials = NULL; // device, allocated on first use and kept for the process
    if (N == 0) { return 0.0; }
    if (partials == NULL) { partials = (double*)deviceMalloc(SUM_SQUARES_BLOCKS * sizeof(double)); }
    sum_squares_kernel<<<SUM_SQUARES_BLOCKS, BLOCK_SIZE>>>(partials, values, N);
    cudaCheckLaunch("sum_squares_kernel");
    double host_partials[SUM_SQUARES_BLOCKS];
    cudaCheck(cudaMemcpy(host_partials, partials, sizeof(host_partials), cudaMemcpyDeviceToHost));
    double sum = 0.0;
    for (int b = 0; b < SUM_SQUARES_BLOCKS; b++) { sum += host_partials[b]; }
    return sum;
}

// ============================================================================
// The trainer on the GPU: trainer_step_cuda runs trainer_step (trainer.c) with every tensor op on the
// device. The algorithm is trainer.c's, step for step (record_train's TTT unroll, the loss rows and their
// weights, the backward in reverse step order, the rejection of a non-finite loss or gradient, clipping,
// warm-up, the AdamW step counter); only where the numbers live differs:
//   - on the device: the draft's weights, gradients and AdamW moments (uploaded once by
//     trainer_cuda_create, then owned by the TrainerCuda), the frozen head rows, the target embedding,
//     and a workspace like the CPU one (per-step activations, key/value buffers and their gradients);
//   - on the host: the bookkeeping (which rows, tokens, positions, masks, loss rows and weights), which
//     is integer work, and the loss sums, added in the CPU's order from the device's per-row losses;
//   - after each applied step the new weights are copied back into trainer->draft.weight_arena, so
//     publishing is unchanged. trainer->grads / adam_m / adam_v on the host are NOT kept up to date: once a
//     TrainerCuda drives a Trainer, drive it only through trainer_step_cuda.

// ----------------------------------------------------------------------------
// small helpers of the trainer: row gathers and scatters, scaling

// out[i] = source[rows[i]], rows of C floats; one thread per element
__global__ void gather_rows_kernel(float* out, const float* source, const int* rows, int n, int C) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)n * C) { return; }
    int i = (int)(index / C), c = (int)(index % C);
    out[index] = source[(size_t)rows[i] * C + c];
}

// destination[rows[i]] += source[i]; the rows are distinct, so every element has one writer
__global__ void scatter_add_rows_kernel(float* destination, const float* source, const int* rows, int n, int C) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)n * C) { return; }
    int i = (int)(index / C), c = (int)(index % C);
    float* element = destination + (size_t)rows[i] * C + c;
    *element = __fadd_rn(*element, source[index]);
}

// values[i] *= factor
__global__ void scale_kernel(float* values, float factor, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) { values[i] = __fmul_rn(values[i], factor); }
}

static void device_free(void* pointer) {
    if (pointer != NULL) { cudaCheck(cudaFree(pointer)); }
}

static void* host_malloc(size_t bytes) {
    void* pointer = malloc(bytes > 0 ? bytes : 1);
    if (pointer == NULL) { fprintf(stderr, "error: out of memory at %s:%d\n", __FILE__, __LINE__); exit(EXIT_FAILURE); }
    return pointer;
}

// ----------------------------------------------------------------------------
// the GPU trainer's state

struct TrainerCuda {
    DraftConfig config;
    size_t n_weight_floats;
    float* weight_arena;        // device copy of the trainer's draft weights
    DraftWeights weights;       // device pointers into weight_arena, at the host pointers' offsets
    float* grads;               // (n_weight_floats) same layout
    DraftWeights grad;          // device pointers into grads
    float* adam_m;              // (n_weight_floats)
    float* adam_v;              // (n_weight_floats)
    float* head_rows;           // (V_d, C) the target's LM head rows of the draft vocabulary (frozen)
    float* target_embedding;    // (V, C) the target's token embedding (frozen)
    // device workspace, as TrainWorkspace: rows of step 0, keys of all blocks, unrolled steps
    int capacity_rows, capacity_keys, capacity_steps;
    DraftActivations act[TTT_MAX_STEPS];   // per step (hidden_in .. out; k, v, out_norm, logits, mask unused)
    float* d_out[TTT_MAX_STEPS];    // (rows, C) gradient of each step's layer output
    uint8_t* masks[TTT_MAX_STEPS];  // (rows, keys) each step's mask
    int* positions[TTT_MAX_STEPS];  // (rows) each step's positions (kept for the backward's RoPE)
    int* tokens;                // (rows)
    float* key_buffer;          // (keys, KVD) blocks 0..L-1
    float* value_buffer;        // (keys, KVD)
    float* d_keys;              // (keys, KVD)
    float* d_values;            // (keys, KVD)
    float* features;            // (rows, 3C) step-0 inputs of fc
    float* p_target;            // (rows, V_d) target distributions of the loss rows
    int* loss_rows;             // (rows)
    int* target_tokens;         // (rows)
    float* loss_weights;        // (rows)
    float* losses;              // (rows)
    int* argmax;                // (2 rows) step-0 argmax of the draft's logits, then of p
    float* logits;              // (rows, V_d) the loss rows' logits of the current step
    float* out_norm;            // (rows, C)
    float* gathered;            // (rows, C) target hidden states, then layer outputs of the loss rows
    float* d_logits;            // (rows, V_d)
    float* d_out_norm;          // (rows, C)
    float* d_h;                 // (rows, C)
    float* d_h_norm;            // (rows, C)
    float* d_ffn_hidden;        // (rows, F)
    float* d_gate;              // (rows, F)
    float* d_up;                // (rows, F)
    float* d_attn_out;          // (rows, QD)
    float* d_q;                 // (rows, QD)
    float* d_attn_in;           // (rows, 2C)
    float* d_half;              // (rows, C) one half of d_attn_in, made contiguous
    float* d_u;                 // (rows, C)
    // host scratch of the bookkeeping (same capacities)
    uint8_t* host_mask;         // (rows, keys)
    int* host_tokens;           // (rows)
    int* host_positions;        // (rows)
    int* host_loss_rows;        // (rows)
    int* host_target_tokens;    // (rows)
    float* host_loss_weights;   // (rows)
    float* host_losses;         // (rows)
    int* host_argmax;           // (2 rows)
    float* host_rows;           // (rows, 3C) features, or target hidden states, staged for upload
    int* discard_used;          // (rows)
    int* discard_row;           // (rows) >= the record's discard nodes
};

// The device pointer at the same offset in `device_arena` as host_pointer in the trainer's arena.
static float* mirror_trainer_weight(const Draft* draft, float* device_arena, const float* host_pointer) {
    if (host_pointer < draft->weight_arena || host_pointer >= draft->weight_arena + draft->n_weight_floats) {
        fprintf(stderr, "error: trainer_cuda_create: a draft weight does not lie in the trainer's weight arena\n");
        exit(EXIT_FAILURE);
    }
    return device_arena + (host_pointer - draft->weight_arena);
}

static void trainer_cuda_workspace_free(TrainerCuda* g) {
    for (int k = 0; k < TTT_MAX_STEPS; k++) {
        DraftActivations* a = &g->act[k];
        void* activations[] = {a->hidden_in, a->embed, a->attn_in, a->q, a->attn_out, a->proj, a->h, a->h_norm,
                               a->ffn_gate, a->ffn_up, a->ffn_hidden, a->out};
        for (size_t i = 0; i < sizeof(activations) / sizeof(activations[0]); i++) { device_free(activations[i]); }
        memset(a, 0, sizeof(*a));
        device_free(g->d_out[k]);
        device_free(g->masks[k]);
        device_free(g->positions[k]);
        g->d_out[k] = NULL;
        g->masks[k] = NULL;
        g->positions[k] = NULL;
    }
    void* device_buffers[] = {g->tokens, g->key_buffer, g->value_buffer, g->d_keys, g->d_values, g->features, g->p_target,
                              g->loss_rows, g->target_tokens, g->loss_weights, g->losses, g->argmax, g->logits, g->out_norm,
                              g->gathered, g->d_logits, g->d_out_norm, g->d_h, g->d_h_norm, g->d_ffn_hidden, g->d_gate,
                              g->d_up, g->d_attn_out, g->d_q, g->d_attn_in, g->d_half, g->d_u};
    for (size_t i = 0; i < sizeof(device_buffers) / sizeof(device_buffers[0]); i++) { device_free(device_buffers[i]); }
    void* host_buffers[] = {g->host_mask, g->host_tokens, g->host_positions, g->host_loss_rows, g->host_target_tokens,
                            g->host_loss_weights, g->host_losses, g->host_argmax, g->host_rows, g->discard_used, g->discard_row};
    for (size_t i = 0; i < sizeof(host_buffers) / sizeof(host_buffers[0]); i++) { free(host_buffers[i]); }
    g->tokens = NULL; g->key_buffer = NULL; g->value_buffer = NULL; g->d_keys = NULL; g->d_values = NULL;
    g->features = NULL; g->p_target = NULL; g->loss_rows = NULL; g->target_tokens = NULL; g->loss_weights = NULL;
    g->losses = NULL; g->argmax = NULL; g->logits = NULL; g->out_norm = NULL; g->gathered = NULL; g->d_logits = NULL;
    g->d_out_norm = NULL; g->d_h = NULL; g->d_h_norm = NULL; g->d_ffn_hidden = NULL; g->d_gate = NULL; g->d_up = NULL;
    g->d_attn_out = NULL; g->d_q = NULL; g->d_attn_in = NULL; g->d_half = NULL; g->d_u = NULL;
    g->host_mask = NULL; g->host_tokens = NULL; g->host_positions = NULL; g->host_loss_rows = NULL;
    g->host_target_tokens = NULL; g->host_loss_weights = NULL; g->host_losses = NULL; g->host_argmax = NULL;
    g->host_rows = NULL; g->discard_used = NULL; g->discard_row = NULL;
    g->capacity_rows = g->capacity_keys = g->capacity_steps = 0;
}

// Grows the workspace to hold rows (step 0), keys (all blocks) and steps unrolled steps, as
// train_workspace_reserve; capacities never shrink (a device reallocation is expensive).
static void trainer_cuda_reserve(TrainerCuda* g, int rows, int keys, int discard_nodes, int steps) {
    if (rows <= g->capacity_rows && keys <= g->capacity_keys && discard_nodes <= g->capacity_rows &&
        steps <= g->capacity_steps) {
        return;
    }
    rows = rows > discard_nodes ? rows : discard_nodes;
    rows = rows > g->capacity_rows ? rows : g->capacity_rows;
    keys = keys > g->capacity_keys ? keys : g->capacity_keys;
    steps = steps > g->capacity_steps ? steps : g->capacity_steps;
    trainer_cuda_workspace_free(g);
    const DraftConfig* c = &g->config;
    size_t R = (size_t)rows, K = (size_t)keys, C = (size_t)c->dim, F = (size_t)c->ffn_dim, V_d = (size_t)c->vocab_size;
    size_t QD = (size_t)c->n_heads * c->head_size, KVD = (size_t)c->n_kv_heads * c->head_size;
    g->capacity_rows = rows;
    g->capacity_keys = keys;
    g->capacity_steps = steps;
    for (int k = 0; k < steps; k++) {
        DraftActivations* a = &g->act[k];
        a->max_tokens = rows;
        a->hidden_in = (float*)deviceMalloc(R * C * sizeof(float));
        a->embed = (float*)deviceMalloc(R * C * sizeof(float));
        a->attn_in = (float*)deviceMalloc(R * 2 * C * sizeof(float));
        a->q = (float*)deviceMalloc(R * QD * sizeof(float));
        a->attn_out = (float*)deviceMalloc(R * QD * sizeof(float));
        a->proj = (float*)deviceMalloc(R * C * sizeof(float));
        a->h = (float*)deviceMalloc(R * C * sizeof(float));
        a->h_norm = (float*)deviceMalloc(R * C * sizeof(float));
        a->ffn_gate = (float*)deviceMalloc(R * F * sizeof(float));
        a->ffn_up = (float*)deviceMalloc(R * F * sizeof(float));
        a->ffn_hidden = (float*)deviceMalloc(R * F * sizeof(float));
        a->out = (float*)deviceMalloc(R * C * sizeof(float));
        g->d_out[k] = (float*)deviceMalloc(R * C * sizeof(float));
        g->masks[k] = (uint8_t*)deviceMalloc(R * K);
        g->positions[k] = (int*)deviceMalloc(R * sizeof(int));
    }
    g->tokens = (int*)deviceMalloc(R * sizeof(int));
    g->key_buffer = (float*)deviceMalloc(K * KVD * sizeof(float));
    g->value_buffer = (float*)deviceMalloc(K * KVD * sizeof(float));
    g->d_keys = (float*)deviceMalloc(K * KVD * sizeof(float));
    g->d_values = (float*)deviceMalloc(K * KVD * sizeof(float));
    g->features = (float*)deviceMalloc(R * 3 * C * sizeof(float));
    g->p_target = (float*)deviceMalloc(R * V_d * sizeof(float));
    g->loss_rows = (int*)deviceMalloc(R * sizeof(int));
    g->target_tokens = (int*)deviceMalloc(R * sizeof(int));
    g->loss_weights = (float*)deviceMalloc(R * sizeof(float));
    g->losses = (float*)deviceMalloc(R * sizeof(float));
    g->argmax = (int*)deviceMalloc(2 * R * sizeof(int));
    g->logits = (float*)deviceMalloc(R * V_d * sizeof(float));
    g->out_norm = (float*)deviceMalloc(R * C * sizeof(float));
    g->gathered = (float*)deviceMalloc(R * C * sizeof(float));
    g->d_logits = (float*)deviceMalloc(R * V_d * sizeof(float));
    g->d_out_norm = (float*)deviceMalloc(R * C * sizeof(float));
    g->d_h = (float*)deviceMalloc(R * C * sizeof(float));
    g->d_h_norm = (float*)deviceMalloc(R * C * sizeof(float));
    g->d_ffn_hidden = (float*)deviceMalloc(R * F * sizeof(float));
    g->d_gate = (float*)deviceMalloc(R * F * sizeof(float));
    g->d_up = (float*)deviceMalloc(R * F * sizeof(float));
    g->d_attn_out = (float*)deviceMalloc(R * QD * sizeof(float));
    g->d_q = (float*)deviceMalloc(R * QD * sizeof(float));
    g->d_attn_in = (float*)deviceMalloc(R * 2 * C * sizeof(float));
    g->d_half = (float*)deviceMalloc(R * C * sizeof(float));
    g->d_u = (float*)deviceMalloc(R * C * sizeof(float));
    g->host_mask = (uint8_t*)host_malloc(R * K);
    g->host_tokens = (int*)host_malloc(R * sizeof(int));
    g->host_positions = (int*)host_malloc(R * sizeof(int));
    g->host_loss_rows = (int*)host_malloc(R * sizeof(int));
    g->host_target_tokens = (int*)host_malloc(R * sizeof(int));
    g->host_loss_weights = (float*)host_malloc(R * sizeof(float));
    g->host_losses = (float*)host_malloc(R * sizeof(float));
    g->host_argmax = (int*)host_malloc(2 * R * sizeof(int));
    g->host_rows = (float*)host_malloc(R * 3 * C * sizeof(float));
    g->discard_used = (int*)host_malloc(R * sizeof(int));
    g->discard_row = (int*)host_malloc(R * sizeof(int));
}

extern "C" TrainerCuda* trainer_cuda_create(const Trainer* trainer) {
    const Draft* draft = &trainer->draft;
    const DraftConfig* c = &draft->config;
    TrainerCuda* g = (TrainerCuda*)calloc(1, sizeof(TrainerCuda));
    if (g == NULL) { fprintf(stderr, "error: out of memory at %s:%d\n", __FILE__, __LINE__); exit(EXIT_FAILURE); }
    g->config = *c;
    size_t n = draft->n_weight_floats;
    g->n_weight_floats = n;
    // weights and AdamW moments uploaded (the trainer may have taken steps already), gradients zeroed
    g->weight_arena = (float*)deviceMalloc(n * sizeof(float));
    g->grads = (float*)deviceMalloc(n * sizeof(float));
    g->adam_m = (float*)deviceMalloc(n * sizeof(float));
    g->adam_v = (float*)deviceMalloc(n * sizeof(float));
    cudaCheck(cudaMemcpy(g->weight_arena, draft->weight_arena, n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemset(g->grads, 0, n * sizeof(float)));
    cudaCheck(cudaMemcpy(g->adam_m, trainer->adam_m, n * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(g->adam_v, trainer->adam_v, n * sizeof(float), cudaMemcpyHostToDevice));
    // every weight and gradient pointer mirrored by its offset in the arena (DraftWeights is all float*)
    const float* const* host_pointers = (const float* const*)&draft->weights;
    float** weight_pointers = (float**)&g->weights;
    float** grad_pointers = (float**)&g->grad;
    for (size_t i = 0; i < sizeof(DraftWeights) / sizeof(float*); i++) {
        weight_pointers[i] = mirror_trainer_weight(draft, g->weight_arena, host_pointers[i]);
        grad_pointers[i] = mirror_trainer_weight(draft, g->grads, host_pointers[i]);
    }
    // the frozen tables
    size_t head_floats = (size_t)c->vocab_size * c->dim, embedding_floats = (size_t)c->target_vocab_size * c->dim;
    g->head_rows = (float*)deviceMalloc(head_floats * sizeof(float));
    g->target_embedding = (float*)deviceMalloc(embedding_floats * sizeof(float));
    cudaCheck(cudaMemcpy(g->head_rows, trainer->head_rows, head_floats * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(g->target_embedding, draft->target_embedding, embedding_floats * sizeof(float), cudaMemcpyHostToDevice));
    return g; // the workspace is allocated by the first step, sized by its records
}

extern "C" void trainer_cuda_free(TrainerCuda* g) {
    if (g == NULL) { return; }
    trainer_cuda_workspace_free(g);
    void* buffers[] = {g->weight_arena, g->grads, g->adam_m, g->adam_v, g->head_rows, g->target_embedding};
    for (size_t i = 0; i < sizeof(buffers) / sizeof(buffers[0]); i++) { device_free(buffers[i]); }
    free(g);
}

// ----------------------------------------------------------------------------
// the backward of one decoder layer on the device, op for op as draft_layer_backward (trainer.c): from
// d_out (rows, C) to g->d_u (rows, C); accumulates the weight gradients and the key/value gradients of
// every block this step attended to, then (its own block's being complete) pushes those through RoPE
// and the k/v projections.

static void draft_layer_backward_cuda(TrainerCuda* g, const DraftActivations* a, const float* d_out, const int* positions,
                                      const uint8_t* mask, int rows, int key_offset) {
    const DraftConfig* c = &g->config;
    const DraftWeights* w = &g->weights;
    const DraftWeights* gr = &g->grad;
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim;
    int QD = NH * HS, KVD = NKV * HS, P = key_offset + rows;
    size_t RC = (size_t)rows * C, RF = (size_t)rows * F;

    // out = h + w_down(ffn_hidden): d_h = d_out, d_ffn_hidden = d_out @ w_down
    cudaCheck(cudaMemcpy(g->d_h, d_out, RC * sizeof(float), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemset(g->d_ffn_hidden, 0, RF * sizeof(float)));
    matmul_backward_cuda(g->d_ffn_hidden, gr->w_down, d_out, a->ffn_hidden, w->w_down, rows, F, C);
    // ffn_hidden = silu(gate) * up
    cudaCheck(cudaMemset(g->d_gate, 0, RF * sizeof(float)));
    cudaCheck(cudaMemset(g->d_up, 0, RF * sizeof(float)));
    swiglu_backward_cuda(g->d_gate, g->d_up, g->d_ffn_hidden, a->ffn_gate, a->ffn_up, rows * F);
    // gate = w_gate h_norm, up = w_up h_norm
    cudaCheck(cudaMemset(g->d_h_norm, 0, RC * sizeof(float)));
    matmul_backward_cuda(g->d_h_norm, gr->w_gate, g->d_gate, a->h_norm, w->w_gate, rows, C, F);
    matmul_backward_cuda(g->d_h_norm, gr->w_up, g->d_up, a->h_norm, w->w_up, rows, C, F);
    // h_norm = RMSNorm_ffn(h)
    rmsnorm_backward_cuda(g->d_h, gr->ffn_norm, g->d_h_norm, a->h, w->ffn_norm, rows, C, c->norm_eps);
    // h = u + wo(attn_out): d_u = d_h, d_attn_out = d_h @ wo
    cudaCheck(cudaMemcpy(g->d_u, g->d_h, RC * sizeof(float), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemset(g->d_attn_out, 0, (size_t)rows * QD * sizeof(float)));
    matmul_backward_cuda(g->d_attn_out, gr->wo, g->d_h, a->attn_out, w->wo, rows, QD, C);
    // attention over the key buffer
    cudaCheck(cudaMemset(g->d_q, 0, (size_t)rows * QD * sizeof(float)));
    attention_backward_cuda(g->d_q, g->d_keys, g->d_values, g->d_attn_out, a->q, g->key_buffer, g->value_buffer, mask, rows, P,
                            NH, NKV, HS);
    // this step's keys and queries were rotated: undo, then through the projections from attn_in
    float* d_k = g->d_keys + (size_t)key_offset * KVD;
    float* d_v = g->d_values + (size_t)key_offset * KVD;
    rope_backward_cuda(g->d_q, g->d_q, positions, rows, NH, HS, c->rope_theta);
    rope_backward_cuda(d_k, d_k, positions, rows, NKV, HS, c->rope_theta);
    cudaCheck(cudaMemset(g->d_attn_in, 0, (size_t)rows * 2 * C * sizeof(float)));
    matmul_backward_cuda(g->d_attn_in, gr->wq, g->d_q, a->attn_in, w->wq, rows, 2 * C, QD);
    matmul_backward_cuda(g->d_attn_in, gr->wk, d_k, a->attn_in, w->wk, rows, 2 * C, KVD);
    matmul_backward_cuda(g->d_attn_in, gr->wv, d_v, a->attn_in, w->wv, rows, 2 * C, KVD);
    // attn_in row = [RMSNorm_e(e), RMSNorm_u(u)]: each half made contiguous, then its norm's backward over
    // all rows (the norm weights accumulate row by row in increasing order, as the CPU's per-row calls);
    // the embedding is frozen (only its norm's weight learns), u receives the rest
    cudaCheck(cudaMemcpy2D(g->d_half, C * sizeof(float), g->d_attn_in, 2 * C * sizeof(float), C * sizeof(float), rows,
                           cudaMemcpyDeviceToDevice));
    rmsnorm_backward_cuda(NULL, gr->embed_norm, g->d_half, a->embed, w->embed_norm, rows, C, c->norm_eps);
    cudaCheck(cudaMemcpy2D(g->d_half, C * sizeof(float), g->d_attn_in + C, 2 * C * sizeof(float), C * sizeof(float), rows,
                           cudaMemcpyDeviceToDevice));
    rmsnorm_backward_cuda(g->d_u, gr->hidden_norm, g->d_half, a->hidden_in, w->hidden_norm, rows, C, c->norm_eps);
}

// ----------------------------------------------------------------------------
// one record, forward and backward: record_train (trainer.c) with backward = 1, on the device. Returns the
// record's loss (the weighted per-row losses added on the host in the CPU's order) and adds to stats.

static float record_train_cuda(TrainerCuda* g, Trainer* trainer, const Record* record, float scale, TrainStats* stats) {
    const Draft* draft = &trainer->draft;
    const DraftConfig* c = &g->config;
    const TrainerSettings* s = &trainer->settings;
    const DraftWeights* w = &g->weights;
    int C = c->dim, V_d = c->vocab_size, KVD = c->n_kv_heads * c->head_size;
    // the same plan as record_train (trainer.c): columns, steps, discard rows, key blocks
    UnrollPlan plan;
    if (!unroll_plan_columns(&plan, record, s)) { return 0.0f; }
    trainer_cuda_reserve(g, plan.T + record->n_discard, plan.T + record->n_discard + plan.T * plan.L, record->n_discard, plan.L);
    unroll_plan_rows(&plan, record, s, g->discard_used, g->discard_row);
    int first_column = plan.first_column, T = plan.T, L = plan.L, D = plan.D;
    const int* rows = plan.rows;
    const int* block_offset = plan.block_offset;
    int total_keys = block_offset[L];

    // step-0 inputs of fc: the sequence's taps, then each discard node's parent's taps
    memcpy(g->host_rows, record->features + (size_t)first_column * 3 * C, (size_t)T * 3 * C * sizeof(float));
    for (int j = 0; j < D; j++) {
        memcpy(g->host_rows + (size_t)(T + j) * 3 * C, record->discard_features + (size_t)g->discard_used[j] * 3 * C,
               (size_t)3 * C * sizeof(float));
    }
    cudaCheck(cudaMemcpy(g->features, g->host_rows, (size_t)(T + D) * 3 * C * sizeof(float), cudaMemcpyHostToDevice));

    float total_loss = 0.0f;
    float weight_k = 1.0f;
    int step0_correct = 0, step0_positions = 0;
    // the gradient of each step's output starts at zero: its loss rows add to it during the forward, the
    // next step's u adds to it during the backward
    for (int k = 0; k < L; k++) { cudaCheck(cudaMemset(g->d_out[k], 0, (size_t)rows[k] * C * sizeof(float))); }
    for (int k = 0; k < L; k++, weight_k *= s->step_decay) {
        DraftActivations* a = &g->act[k];
        int R = rows[k];
        for (int t = 0; t < R; t++) {
            if (k > 0 || t < T) {
                g->host_tokens[t] = record->tokens[first_column + t + k + 1];
                g->host_positions[t] = first_column + t + k;
            } else {
                const DiscardNode* node = &record->discard[g->discard_used[t - T]];
                g->host_tokens[t] = node->token;
                g->host_positions[t] = node->position - 1;
            }
        }
        cudaCheck(cudaMemcpy(g->tokens, g->host_tokens, (size_t)R * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(g->positions[k], g->host_positions, (size_t)R * sizeof(int), cudaMemcpyHostToDevice));
        const float* u;
        if (k == 0) {
            matmul_forward_cuda(a->hidden_in, g->features, w->fc, R, 3 * C, C); // draft_project_features
            u = a->hidden_in;
        } else {
            u = g->act[k - 1].out; // the first R rows of the previous step are columns 0..R-1
        }
        int P = block_offset[k] + R;
        ttt_mask(g->host_mask, k, R, T, block_offset, P, record, first_column, g->discard_used, g->discard_row);
        cudaCheck(cudaMemcpy(g->masks[k], g->host_mask, (size_t)R * P, cudaMemcpyHostToDevice));
        draft_layer_forward_cuda(c, w, g->target_embedding, a, g->key_buffer, g->value_buffer, g->tokens, u, g->positions[k],
                                 g->masks[k], R, block_offset[k]);

        // loss rows: sequence columns whose prediction x_{t+k+2} is a completion token with a recorded
        // target (hidden state index t+k+1 < T), then (step 0) the discard rows
        int n_loss = 0;
        int first = record->n_prompt - k - 2 - first_column > 0 ? record->n_prompt - k - 2 - first_column : 0;
        for (int t = first; t + k + 1 < T; t++) { g->host_loss_rows[n_loss++] = t; }
        int n_sequence_loss = n_loss;
        if (k == 0) { for (int j = 0; j < D; j++) { g->host_loss_rows[n_loss++] = T + j; } }
        if (n_loss == 0) { continue; }
        // target distributions of the loss rows: softmax over the draft vocabulary of W_lm[d2t] h
        for (int i = 0; i < n_loss; i++) {
            int row = g->host_loss_rows[i];
            const float* h = row < T ? record->hidden + (size_t)(first_column + row + k + 1) * C
                                     : record->discard_hidden + (size_t)g->discard_used[row - T] * C;
            memcpy(g->host_rows + (size_t)i * C, h, (size_t)C * sizeof(float));
            g->host_target_tokens[i] = row < T ? record->tokens[first_column + row + k + 2] : -1;
            g->host_loss_weights[i] = row < T ? scale * weight_k / n_sequence_loss : scale * s->discard_weight / D;
        }
        cudaCheck(cudaMemcpy(g->gathered, g->host_rows, (size_t)n_loss * C * sizeof(float), cudaMemcpyHostToDevice));
        matmul_forward_cuda(g->p_target, g->gathered, g->head_rows, n_loss, C, V_d);
        softmax_forward_cuda(g->p_target, g->p_target, n_loss, V_d);
        // the draft's logits at the loss rows
        cudaCheck(cudaMemcpy(g->loss_rows, g->host_loss_rows, (size_t)n_loss * sizeof(int), cudaMemcpyHostToDevice));
        gather_rows_kernel<<<ceil_div((size_t)n_loss * C, BLOCK_SIZE), BLOCK_SIZE>>>(g->gathered, a->out, g->loss_rows, n_loss, C);
        cudaCheckLaunch("gather_rows_kernel");
        draft_head_forward_cuda(c, w, g->logits, g->out_norm, g->gathered, n_loss);
        // the losses (sequence rows and discard rows use their own kinds); the next-token loss needs a
        // draft id: a token outside the draft vocabulary contributes nothing to it
        for (int i = 0; i < n_sequence_loss; i++) {
            int target_id = g->host_target_tokens[i];
            g->host_target_tokens[i] = target_id >= 0 ? draft->t2d[target_id] : -1;
            if (s->loss == LOSS_NEXT_TOKEN && g->host_target_tokens[i] < 0) {
                g->host_loss_weights[i] = 0.0f;
                g->host_target_tokens[i] = 0;
            }
        }
        cudaCheck(cudaMemcpy(g->target_tokens, g->host_target_tokens, (size_t)n_loss * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(g->loss_weights, g->host_loss_weights, (size_t)n_loss * sizeof(float), cudaMemcpyHostToDevice));
        // losses and d logits in one pass (the CPU computes the losses, then again with the gradient: the
        // loss values do not depend on it)
        cudaCheck(cudaMemset(g->d_logits, 0, (size_t)n_loss * V_d * sizeof(float)));
        distribution_loss_cuda(g->losses, g->d_logits, g->logits, g->p_target, g->target_tokens, g->loss_weights,
                               n_sequence_loss, V_d, s->loss);
        if (n_loss > n_sequence_loss) {
            distribution_loss_cuda(g->losses + n_sequence_loss, g->d_logits + (size_t)n_sequence_loss * V_d,
                                   g->logits + (size_t)n_sequence_loss * V_d, g->p_target + (size_t)n_sequence_loss * V_d,
                                   NULL, g->loss_weights + n_sequence_loss, n_loss - n_sequence_loss, V_d, s->discard_loss);
        }
        cudaCheck(cudaMemcpy(g->host_losses, g->losses, (size_t)n_loss * sizeof(float), cudaMemcpyDeviceToHost));
        float sequence_part = 0.0f;
        for (int i = 0; i < n_sequence_loss; i++) { sequence_part += g->host_loss_weights[i] * g->host_losses[i]; }
        total_loss += sequence_part;
        if (stats) { stats->accepted_loss += sequence_part; }
        if (n_loss > n_sequence_loss) {
            float discard_part = 0.0f;
            for (int i = n_sequence_loss; i < n_loss; i++) { discard_part += g->host_loss_weights[i] * g->host_losses[i]; }
            total_loss += discard_part;
            if (stats) { stats->discard_loss += discard_part; stats->n_discard += D; }
        }
        if (k == 0 && n_sequence_loss > 0) { // step-0 accuracy: the argmax of the draft's logits vs the target's p
            argmax_kernel<<<n_sequence_loss, BLOCK_SIZE>>>(g->argmax, g->logits, V_d);
            cudaCheckLaunch("argmax_kernel");
            argmax_kernel<<<n_sequence_loss, BLOCK_SIZE>>>(g->argmax + n_sequence_loss, g->p_target, V_d);
            cudaCheckLaunch("argmax_kernel");
            cudaCheck(cudaMemcpy(g->host_argmax, g->argmax, (size_t)2 * n_sequence_loss * sizeof(int), cudaMemcpyDeviceToHost));
            for (int i = 0; i < n_sequence_loss; i++) { step0_correct += g->host_argmax[i] == g->host_argmax[n_sequence_loss + i]; }
        }
        if (k == 0) { step0_positions += n_sequence_loss; }
        // logits = lm_head(RMSNorm_out(out)) over the gathered rows, then scattered back to the loss rows
        cudaCheck(cudaMemset(g->d_out_norm, 0, (size_t)n_loss * C * sizeof(float)));
        matmul_backward_cuda(g->d_out_norm, g->grad.lm_head, g->d_logits, g->out_norm, w->lm_head, n_loss, C, V_d);
        cudaCheck(cudaMemset(g->d_h, 0, (size_t)n_loss * C * sizeof(float)));
        rmsnorm_backward_cuda(g->d_h, g->grad.output_norm, g->d_out_norm, g->gathered, w->output_norm, n_loss, C, c->norm_eps);
        scatter_add_rows_kernel<<<ceil_div((size_t)n_loss * C, BLOCK_SIZE), BLOCK_SIZE>>>(g->d_out[k], g->d_h, g->loss_rows,
                                                                                          n_loss, C);
        cudaCheckLaunch("scatter_add_rows_kernel");
    }
    if (stats) { stats->n_positions += step0_positions; stats->step0_accuracy += step0_correct; }

    // backward, last step first: block k's key/value gradients are complete once step k is reached
    cudaCheck(cudaMemset(g->d_keys, 0, (size_t)total_keys * KVD * sizeof(float)));
    cudaCheck(cudaMemset(g->d_values, 0, (size_t)total_keys * KVD * sizeof(float)));
    for (int k = L - 1; k >= 0; k--) {
        int R = rows[k];
        draft_layer_backward_cuda(g, &g->act[k], g->d_out[k], g->positions[k], g->masks[k], R, block_offset[k]);
        if (k > 0) {
            residual_forward_cuda(g->d_out[k - 1], g->d_out[k - 1], g->d_u, R * C); // d_previous += d_u
        } else {
            // u = fc(features): the features are data
            matmul_backward_cuda(NULL, g->grad.fc, g->d_u, g->features, w->fc, R, 3 * C, C);
        }
    }
    return total_loss;
}

// ----------------------------------------------------------------------------
// one optimiser step over a batch of records: trainer_step (trainer.c) on the device

// as trainer_learning_rate (trainer.c): linear warm-up from 0, then the setting
static float trainer_cuda_learning_rate(const Trainer* trainer) {
    const TrainerSettings* s = &trainer->settings;
    if (s->warmup_steps > 0 && trainer->step < s->warmup_steps) {
        return s->learning_rate * (trainer->step + 1) / s->warmup_steps;
    }
    return s->learning_rate;
}

extern "C" int trainer_step_cuda(TrainerCuda* g, Trainer* trainer, Record* const* records, int n_records, TrainStats* stats) {
    const TrainerSettings* s = &trainer->settings;
    size_t n = g->n_weight_floats;
    if (trainer->draft.n_weight_floats != n) {
        fprintf(stderr, "error: trainer_step_cuda: the trainer has %zu weights, its GPU twin %zu\n", trainer->draft.n_weight_floats, n);
        exit(EXIT_FAILURE); // a different trainer: a program bug
    }
    memset(stats, 0, sizeof(*stats));
    cudaCheck(cudaMemset(g->grads, 0, n * sizeof(float)));
    for (int i = 0; i < n_records; i++) { stats->loss += record_train_cuda(g, trainer, records[i], 1.0f / n_records, stats); }
    stats->step0_accuracy = stats->n_positions ? stats->step0_accuracy / stats->n_positions : 0.0f;
    double norm = sqrt(sum_squares_cuda(g->grads, n));
    stats->grad_norm = (float)norm;
    if (!isfinite(stats->loss) || !isfinite(norm)) { // the weights (device and host) stay as they are
        stats->rejected = 1;
        trainer->rejected_updates++;
        return 1;
    }
    if (s->max_grad_norm > 0.0f && norm > s->max_grad_norm) {
        float clip = (float)(s->max_grad_norm / norm);
        scale_kernel<<<ceil_div(n, BLOCK_SIZE), BLOCK_SIZE>>>(g->grads, clip, n);
        cudaCheckLaunch("scale_kernel");
    }
    float learning_rate = trainer_cuda_learning_rate(trainer);
    trainer->step++;
    adamw_update_cuda(g->weight_arena, g->grads, g->adam_m, g->adam_v, n, learning_rate, s->beta1, s->beta2, s->adam_eps,
                      s->weight_decay, trainer->step);
    // the new weights back into the trainer's arena: publishing reads them there
    cudaCheck(cudaMemcpy(trainer->draft.weight_arena, g->weight_arena, n * sizeof(float), cudaMemcpyDeviceToHost));
    return 0;
}
