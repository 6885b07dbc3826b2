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

Build: nvcc -arch=sm_90 -O2 -c kernels.cu -o kernels.o -I.   (link with -lcudart)
*/
#ifndef USE_CUDA
#define USE_CUDA // the CUDA twin section of aurora.h is what this file implements
#endif
#include "aurora.h"
#include <cuda_runtime.h>

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
    return g;
}

extern "C" void target_cuda_free(TargetCuda* g) {
    if (g == NULL) { return; }
    void* buffers[] = {g->weight_arena, g->key_cache, g->value_cache, g->tokens, g->positions, g->mask,
                       g->x, g->x_norm, g->q, g->k, g->v, g->attn_out, g->proj, g->ffn_gate, g->ffn_up,
                       g->taps, g->hidden, g->logits, g->layer_outputs};
    for (size_t i = 0; i < sizeof(buffers) / sizeof(buffers[0]); i++) {
        if (buffers[i] != NULL) { cudaCheck(cudaFree(buffers[i])); }
    }
    free(g);
}

extern "C" float* target_cuda_key_cache(TargetCuda* g) { return g->key_cache; }
extern "C" float* target_cuda_value_cache(TargetCuda* g) { return g->value_cache; }

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
