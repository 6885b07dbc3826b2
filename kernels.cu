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

__global__ void rope_forward_kernel(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta) {
    int pairs = HS / 2;
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)T * n_heads * pairs) { return; }
    int t = (int)(index / ((size_t)n_heads * pairs));
    int h = (int)(index / pairs % n_heads);
    int i = (int)(index % pairs);
    double frequency = pow((double)theta, -2.0 * i / HS);
    double angle = (double)positions[t] * frequency;
    float cos_angle = (float)cos(angle);
    float sin_angle = (float)sin(angle);
    size_t base = (size_t)t * n_heads * HS + (size_t)h * HS + 2 * i;
    float x0 = inp[base], x1 = inp[base + 1];
    out[base]     = __fsub_rn(__fmul_rn(x0, cos_angle), __fmul_rn(x1, sin_angle));
    out[base + 1] = __fadd_rn(__fmul_rn(x0, sin_angle), __fmul_rn(x1, cos_angle));
}

extern "C" void rope_forward_cuda(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta) {
    // out, inp: (T, n_heads * HS); positions: (T)
    size_t total = (size_t)T * n_heads * (HS / 2);
    if (total == 0) { return; }
    rope_forward_kernel<<<ceil_div(total, BLOCK_SIZE), BLOCK_SIZE>>>(out, inp, positions, T, n_heads, HS, theta);
    cudaCheckLaunch("rope_forward_kernel");
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
    float* k;                   // (T, KVD)
    float* v;                   // (T, KVD)
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
    g->k = (float*)deviceMalloc(T * KVD * sizeof(float));
    g->v = (float*)deviceMalloc(T * KVD * sizeof(float));
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
                       g->mask, g->features, g->hidden_in, g->embed, g->attn_in, g->q, g->k, g->v, g->attn_out,
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

extern "C" void draft_forward_cuda(DraftCuda* g, Draft* draft, const int* tokens, const float* hidden, const int* positions,
                                   const uint8_t* mask, int T, int n_past) {
    const DraftConfig* c = &g->config;
    const DraftWeights* w = &g->weights;
    DraftActivations* host = &draft->act;
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim;
    int V = c->target_vocab_size, V_draft = c->vocab_size;
    int QD = NH * HS, KVD = NKV * HS, S = g->cache_capacity, P = n_past + T;
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
    // results are written back), the (T, P) mask, and e_t = the target's embedding of tokens[t]
    cudaCheck(cudaMemcpy(g->tokens, tokens, (size_t)T * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(g->positions, positions, (size_t)T * sizeof(int), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(g->hidden_in, hidden, (size_t)T * C * sizeof(float), cudaMemcpyHostToDevice));
    build_attention_mask_cuda(g->mask, mask, T, n_past);
    embedding_forward_cuda(g->embed, g->tokens, g->target_embedding, T, C, V);
    // attn_in row t = [RMSNorm_e(e_t), RMSNorm_u(u_t)]: each norm writes its half of the row
    for (int t = 0; t < T; t++) {
        float* row = g->attn_in + (size_t)t * 2 * C;
        rmsnorm_forward_cuda(row, g->embed + (size_t)t * C, w->embed_norm, 1, C, c->norm_eps);
        rmsnorm_forward_cuda(row + C, g->hidden_in + (size_t)t * C, w->hidden_norm, 1, C, c->norm_eps);
    }

    // attention block: h = u + wo(attention(rope(wq a_in), rope(wk a_in), wv a_in))
    matmul_forward_cuda(g->q, g->attn_in, w->wq, T, 2 * C, QD);
    matmul_forward_cuda(g->k, g->attn_in, w->wk, T, 2 * C, KVD);
    matmul_forward_cuda(g->v, g->attn_in, w->wv, T, 2 * C, KVD);
    rope_forward_cuda(g->q, g->q, g->positions, T, NH, HS, c->rope_theta);
    rope_forward_cuda(g->k, g->k, g->positions, T, NKV, HS, c->rope_theta);
    cudaCheck(cudaMemcpy(g->key_cache + (size_t)n_past * KVD, g->k, (size_t)T * KVD * sizeof(float), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemcpy(g->value_cache + (size_t)n_past * KVD, g->v, (size_t)T * KVD * sizeof(float), cudaMemcpyDeviceToDevice));
    attention_forward_cuda(g->attn_out, g->q, g->key_cache, g->value_cache, g->mask, T, P, NH, NKV, HS);
    matmul_forward_cuda(g->proj, g->attn_out, w->wo, T, QD, C);
    residual_forward_cuda(g->h, g->hidden_in, g->proj, T * C);

    // MLP block: out = h + w_down(silu(w_gate n) * w_up n), n = RMSNorm_ffn(h)
    rmsnorm_forward_cuda(g->h_norm, g->h, w->ffn_norm, T, C, c->norm_eps);
    matmul_forward_cuda(g->ffn_gate, g->h_norm, w->w_gate, T, C, F);
    matmul_forward_cuda(g->ffn_up, g->h_norm, w->w_up, T, C, F);
    swiglu_forward_cuda(g->ffn_gate, g->ffn_gate, g->ffn_up, T * F);
    matmul_forward_cuda(g->proj, g->ffn_gate, w->w_down, T, F, C);
    residual_forward_cuda(g->out, g->h, g->proj, T * C);

    // LM head over the draft vocabulary, every row
    rmsnorm_forward_cuda(g->out_norm, g->out, w->output_norm, T, C, c->norm_eps);
    matmul_forward_cuda(g->logits, g->out_norm, w->lm_head, T, C, V_draft);

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
