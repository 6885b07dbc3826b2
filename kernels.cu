/*
kernels.cu: the CUDA twin of every op in cpu_ref.c, and the CUDA backend table. Kernels only: the
orchestration (target forward, draft forward, the trainer step) is written once in target.c, draft.c and
trainer.c and reaches these ops through the table (backend_cuda()).

Contract: every op here computes the same math, with the same semantics, as the op of the same name root
in cpu_ref.c (embedding_forward_cpu -> embedding_forward_cuda), with the same argument order; every
pointer argument is device memory. Masks, grouped-query head mapping (query head h reads key/value head
h / (NH / NKV)), fully-masked attention rows (zeros), RoPE angles (position * theta^(-2i/HS), computed
in double), rmsnorm's double-precision sum of squares: all as in the reference. (Its sums in double are
taken in a tree, not in the reference's order, and CUDA's expf is within 2 ulp where glibc's is nearly
correctly rounded: softmax, SwiGLU and attention weights may differ by an ulp, the double sums by a double
rounding, and RoPE's double pow, cos and sin may be an ulp or two from glibc's, which moves a float-rounded
angle only in rare cases; the tolerance table's families carry that.) fp32 everywhere, no
cuBLAS, no TF32, no fast-math. tests/test_backends.c checks every op, a verify pass, the draft and K
trainer steps against the reference, tensor by tensor.

What this file is: plain, readable CUDA in the style of llm.c's dev/cuda: one kernel per op, a launcher
that checks the launch, a block-wide reduction written out, a tiled shared-memory matmul. What it
refuses to do: clever fusion, tensor cores, reduced precision. Where it matters it also mirrors the
CPU's order of operations: the matmul and attention dot products add the products in the CPU's order,
and use __fmul_rn / __fadd_rn so the compiler cannot fuse them into FMAs the CPU does not do, and the
file is compiled with -fmad=false so that no other expression is fused either (the double-precision
sums of rmsnorm's backward and the loss were); the two agree to the last bit or nearly so, which keeps
the parity tests tight. The backward passes are
deterministic (no atomics: every sum is owned by one thread or block and taken in a fixed order).

Weights: upload_matrix dequantises a GGUF tensor to fp32 on the host with the reference's own
dequantize_row (gguf.c), then uploads it: the GPU computes on exactly the reference's values, with no
second dequantiser to keep in step; it happens once per load.

Streams: built with --default-stream per-thread, so that each host thread's kernels and copies are ordered
among themselves only: the online trainer's thread and the serving thread share the GPU without waiting for
each other (with the legacy default stream every copy of one waited for every kernel of the other). What
they share: the target's weights (read only; the trainer reads the embedding) and, here, the statics of the
training ops (attention_backward's scratch, sum_squares' partials: one training thread per process). New
weights travel through the host (trainer.c, flywheel.c), and trainer_init, on the serving thread, waits for
what it queued before the training thread starts.

Build: nvcc -arch=sm_90 -O2 -fmad=false --default-stream per-thread -c kernels.cu -o kernels.o -I.
(link with -lcudart)
*/
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

// cudaMalloc that exits with the place on failure (the backend's alloc adds the zeroing)
static void* device_malloc(size_t bytes, const char* file, int line) {
    void* pointer = NULL;
    cuda_check(cudaMalloc(&pointer, bytes > 0 ? bytes : 1), file, line);
    return pointer;
}
#define deviceMalloc(bytes) device_malloc((bytes), __FILE__, __LINE__)

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

// The CUDA table computes in fp32 (upload_matrix dequantises): another type reaching an op is a program bug.
static const float* matrix_expect_f32_cuda(Matrix matrix, const char* op) {
    if (matrix.type != TYPE_F32) {
        fprintf(stderr, "error: internal: %s received a %s matrix; the CUDA table computes in fp32 only\n", op,
                tensor_type_name(matrix.type));
        exit(EXIT_FAILURE);
    }
    return (const float*)matrix.data;
}

// ----------------------------------------------------------------------------
// embedding: out[t] = table[tokens[t]]; one thread per output element

__global__ void embedding_forward_kernel(float* out, const int* tokens, const float* table, int T, int C) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)T * C) { return; }
    int t = (int)(index / C), c = (int)(index % C);
    out[index] = table[(size_t)tokens[t] * C + c];
}

static void embedding_forward_cuda(float* out, const int* tokens, Matrix table, int T, int C, int V) {
    // out: (T, C); tokens: (T), each in [0, V) (target_forward and draft_forward check them); table: (V, C)
    (void)V; // V documents the table's shape
    const float* rows = matrix_expect_f32_cuda(table, "embedding_forward_cuda");
    if ((size_t)T * C == 0) { return; }
    embedding_forward_kernel<<<ceil_div((size_t)T * C, BLOCK_SIZE), BLOCK_SIZE>>>(out, tokens, rows, T, C);
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

static void rmsnorm_forward_cuda(float* out, const float* inp, const float* weight, int T, int C, float eps) {
    // out, inp: (T, C); weight: (C)
    if (T == 0) { return; }
    rmsnorm_forward_kernel<<<T, BLOCK_SIZE>>>(out, inp, weight, C, eps);
    cudaCheckLaunch("rmsnorm_forward_kernel");
}

// ----------------------------------------------------------------------------
// matmul: out[t][o] = sum_c inp[t][c] * weight[o][c]. A block computes MATMUL_ROWS outputs o for MATMUL_T
// input rows t, walking c in chunks of MATMUL_CHUNK staged in shared memory (the next chunk loaded into
// registers while the current one is added up); each thread owns one (t, o) and adds its products in
// increasing c, as the CPU does, without FMA contraction, so the result is the reference's to the bit
// whatever the shape.
// The shape is for the small T of decoding (1), verifying and drafting (up to a few tens): a block's 256
// threads all load (a chunk is 32 weight rows x 128 floats, a warp reading 128 contiguous bytes a load and
// four warps a row's 512, 16 loads in flight per thread), so a decode step's matmul takes ceil(C / 128)
// trips to memory rather than one per 16 columns. With T = 1 the seven warps of rows t >= T add up rows of
// zeros that are never written (measured on an H200 as they are; skipping them is not tried).

#define MATMUL_ROWS 32
#define MATMUL_T 8              // MATMUL_ROWS * MATMUL_T = BLOCK_SIZE threads, one output each
#define MATMUL_CHUNK 128
#define MATMUL_WEIGHT_LOADS (MATMUL_ROWS * MATMUL_CHUNK / BLOCK_SIZE) // per thread per chunk: 16
#define MATMUL_INP_LOADS (MATMUL_T * MATMUL_CHUNK / BLOCK_SIZE)       // 4

// Thread i's share of the chunk at c0, into registers: element j * BLOCK_SIZE + i of the chunk (row-major),
// so consecutive threads read consecutive c of one row (coalesced); entries outside the matrix read as 0
// and are never added.
__device__ void matmul_load_chunk(float* weight_regs, float* inp_regs, const float* inp, const float* weight, int T,
                                  int C, int OC, int t0, int o0, int c0) {
    #pragma unroll
    for (int j = 0; j < MATMUL_WEIGHT_LOADS; j++) {
        int i = j * BLOCK_SIZE + threadIdx.x, row = o0 + i / MATMUL_CHUNK, c = c0 + i % MATMUL_CHUNK;
        weight_regs[j] = (row < OC && c < C) ? weight[(size_t)row * C + c] : 0.0f;
    }
    #pragma unroll
    for (int j = 0; j < MATMUL_INP_LOADS; j++) {
        int i = j * BLOCK_SIZE + threadIdx.x, row = t0 + i / MATMUL_CHUNK, c = c0 + i % MATMUL_CHUNK;
        inp_regs[j] = (row < T && c < C) ? inp[(size_t)row * C + c] : 0.0f;
    }
}

__global__ void matmul_forward_kernel(float* out, const float* inp, const float* weight, int T, int C, int OC) {
    __shared__ float weight_chunk[MATMUL_ROWS][MATMUL_CHUNK + 1]; // +1: a warp's 32 rows at one c hit 32 banks
    __shared__ float inp_chunk[MATMUL_T][MATMUL_CHUNK];
    int o0 = blockIdx.x * MATMUL_ROWS, t0 = blockIdx.y * MATMUL_T;
    int o_local = threadIdx.x % MATMUL_ROWS, t_local = threadIdx.x / MATMUL_ROWS; // a warp: 32 o of one t
    float weight_regs[MATMUL_WEIGHT_LOADS], inp_regs[MATMUL_INP_LOADS];
    matmul_load_chunk(weight_regs, inp_regs, inp, weight, T, C, OC, t0, o0, 0);
    float sum = 0.0f;
    for (int c0 = 0; c0 < C; c0 += MATMUL_CHUNK) {
        #pragma unroll
        for (int j = 0; j < MATMUL_WEIGHT_LOADS; j++) {
            int i = j * BLOCK_SIZE + threadIdx.x;
            weight_chunk[i / MATMUL_CHUNK][i % MATMUL_CHUNK] = weight_regs[j];
        }
        #pragma unroll
        for (int j = 0; j < MATMUL_INP_LOADS; j++) {
            int i = j * BLOCK_SIZE + threadIdx.x;
            inp_chunk[i / MATMUL_CHUNK][i % MATMUL_CHUNK] = inp_regs[j];
        }
        __syncthreads();
        // the next chunk's loads go out now and arrive while this chunk is added up
        if (c0 + MATMUL_CHUNK < C) { matmul_load_chunk(weight_regs, inp_regs, inp, weight, T, C, OC, t0, o0, c0 + MATMUL_CHUNK); }
        int n = C - c0 < MATMUL_CHUNK ? C - c0 : MATMUL_CHUNK;
        #pragma unroll 8
        for (int k = 0; k < n; k++) {
            sum = __fadd_rn(sum, __fmul_rn(inp_chunk[t_local][k], weight_chunk[o_local][k]));
        }
        __syncthreads();
    }
    int t = t0 + t_local, o = o0 + o_local;
    if (t < T && o < OC) { out[(size_t)t * OC + o] = sum; }
}

static void matmul_forward_cuda(float* out, const float* inp, Matrix weight_matrix, int T, int C, int OC) {
    // out: (T, OC); inp: (T, C); weight: (OC, C)
    const float* weight = matrix_expect_f32_cuda(weight_matrix, "matmul_forward_cuda");
    if (T == 0 || OC == 0) { return; }
    dim3 grid(ceil_div(OC, MATMUL_ROWS), ceil_div(T, MATMUL_T));
    matmul_forward_kernel<<<grid, BLOCK_SIZE>>>(out, inp, weight, T, C, OC);
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

static void rope_forward_cuda(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta) {
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

#define ATTENTION_MASKED -1.0f

__global__ void attention_forward_kernel(float* out, const float* q, const float* key_cache, const float* value_cache,
                                         CacheLayout layout, const uint8_t* mask, int P, int NH, int NKV, int HS,
                                         float scale) {
    extern __shared__ float shared[];
    float* q_shared = shared;        // (HS)
    float* weights = shared + HS;    // (P) scaled scores, then exp weights
    int t = blockIdx.x / NH, h = blockIdx.x % NH;
    int kv_head = h / (NH / NKV);
    const float* keys = key_cache + kv_head * layout.head_stride;   // slot p: keys + p * slot_stride
    const float* values = value_cache + kv_head * layout.head_stride;
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
            const float* k_p = keys + p * layout.slot_stride;
            score = 0.0f;
            #pragma unroll 8
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

    // pass 2: exponentiate (a masked slot's weight becomes ATTENTION_MASKED, which no exponential is, NaN
    // included), then accumulate the weighted values in increasing p. Every slot's value is loaded, masked or
    // not (all P slots are the cache's memory), so that the unrolled loop has its loads in flight together; a
    // masked one is not added (it may hold anything, NaN included).
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        weights[p] = mask_t[p] ? expf(weights[p] - max_score) : ATTENTION_MASKED;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < HS; i += blockDim.x) {
        float sum = 0.0f, sum_weights = 0.0f;
        #pragma unroll 8
        for (int p = 0; p < P; p++) {
            float weight = weights[p], value = values[(size_t)p * layout.slot_stride + i];
            if (weight != ATTENTION_MASKED) {
                sum_weights = __fadd_rn(sum_weights, weight);
                sum = __fadd_rn(sum, __fmul_rn(weight, value));
            }
        }
        out_th[i] = sum / sum_weights;
    }
}

// The dynamic shared memory attention_forward_kernel may use: the device's opt-in limit less the kernel's own
// reduction buffers, opted into once when the table is made (backend_cuda). (Set before each launch that
// needed more than the default 48 KiB, the setting, one for the whole process, raced between the serving
// thread and the trainer's: one's smaller setting could land between the other's setting and its launch.)
static size_t attention_dynamic_bytes;

// The most cache slots one attention call takes at head size HS: its scores live in shared memory
static int attention_max_slots_cuda(int HS) {
    size_t floats = attention_dynamic_bytes / sizeof(float);
    return floats > (size_t)HS ? (int)(floats - (size_t)HS < (size_t)INT_MAX ? floats - (size_t)HS : (size_t)INT_MAX) : 0;
}

static void attention_forward_cuda(float* out, const float* q, const float* key_cache, const float* value_cache,
                                       const uint8_t* mask, int T, int P, int NH, int NKV, int HS, CacheLayout layout) {
    // out, q: (T, NH*HS); key_cache, value_cache: P slots laid out as `layout`; mask: (T, P)
    if (T == 0) { return; }
    float scale = 1.0f / sqrtf((float)HS); // on the host, exactly as the CPU computes it
    // the scores of all P slots live in shared memory (dynamic), beside the kernel's own reduction buffers
    // (static); target_load refuses a context longer than attention_max_slots allows, so this is a program bug
    size_t shared_bytes = ((size_t)HS + P) * sizeof(float);
    if (shared_bytes > attention_dynamic_bytes) {
        fprintf(stderr, "[CUDA ERROR] attention_forward_cuda at %s:%d: %d slots need %zu bytes of shared memory, the "
                "device allows %zu\n", __FILE__, __LINE__, P, shared_bytes, attention_dynamic_bytes);
        exit(EXIT_FAILURE);
    }
    attention_forward_kernel<<<T * NH, BLOCK_SIZE, shared_bytes>>>(out, q, key_cache, value_cache, layout, mask, P, NH, NKV,
                                                                     HS, scale);
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

static void swiglu_forward_cuda(float* out, const float* gate, const float* up, int N) {
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

static void residual_forward_cuda(float* out, const float* inp1, const float* inp2, int N) {
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

static void softmax_forward_cuda(float* probs, const float* logits, int T, int V) {
    // probs, logits: (T, V)
    if (T == 0) { return; }
    softmax_forward_kernel<<<T, BLOCK_SIZE>>>(probs, logits, V);
    cudaCheckLaunch("softmax_forward_kernel");
}


// ----------------------------------------------------------------------------
// KV cache compaction, as kv_compact_cpu: slot source_slots[i] moves to slot destination + i in every
// plane, sources increasing and never below their destination. One thread per (plane, element of a
// row) walks the path in order, as the CPU's in-order copies do, so a row that is both a source and a
// later destination is read before it is overwritten.

__global__ void kv_compact_kernel(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                                  int n_planes, int S, int width) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)n_planes * width) { return; }
    int plane = (int)(index / width), c = (int)(index % width);
    for (int i = 0; i < n; i++) {
        if (source_slots[i] == destination + i) { continue; }
        size_t from = ((size_t)plane * S + source_slots[i]) * width + c, to = ((size_t)plane * S + destination + i) * width + c;
        key_cache[to] = key_cache[from];
        value_cache[to] = value_cache[from];
    }
}

static void kv_compact_cuda(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                            int n_planes, int S, int width) {
    // key_cache, value_cache: (n_planes, S, width); source_slots: (n)
    if (n == 0 || (size_t)n_planes * width == 0) { return; }
    kv_compact_kernel<<<ceil_div((size_t)n_planes * width, BLOCK_SIZE), BLOCK_SIZE>>>(key_cache, value_cache, source_slots,
                                                                                      n, destination, n_planes, S, width);
    cudaCheckLaunch("kv_compact_kernel");
}

// ============================================================================
// Backward passes: the twins of cpu_ref.c's backward section, same name root with _cuda, same argument
// order, same semantics: gradients ACCUMULATE (+=) into the d-buffers and a NULL d-buffer is skipped,
// except rope_backward_cuda, which ASSIGNS (dinp == dout allowed). Every reduction is deterministic:
// each output element is summed by one thread, or one block, in a fixed order (the CPU's order wherever
// that costs nothing), never with atomics, so two runs give identical bits. Products and sums that the
// CPU rounds one by one use __fmul_rn / __fadd_rn (no FMA contraction), as in the forward kernels.

// ----------------------------------------------------------------------------
// matmul backward, two tiled kernels: a block computes a TILE x TILE patch of the gradient, walking the
// summed index in tiles staged in shared memory:
//   dinp[t][c]    += sum_o dout[t][o] * weight[o][c]     thread (t, c) adds the products in increasing o
//   dweight[o][c] += sum_t dout[t][o] * inp[t][c]        thread (o, c) adds the products in increasing t
// Each thread sums from zero and adds its sum to the d-buffer once, exactly as matmul_backward_cpu.

#define TILE 16

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

static void matmul_backward_cuda(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
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

static void rmsnorm_backward_cuda(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
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

static void rope_backward_cuda(float* dinp, const float* dout, const int* positions, int T, int n_heads, int HS, float theta) {
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

static void attention_backward_cuda(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
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

static void swiglu_backward_cuda(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N) {
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
    int target_token = kind == LOSS_NEXT_TOKEN ? target_tokens[t] : -1;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        double log_q = (double)z[j] - log_normaliser;
        dz[j] = __fadd_rn(dz[j], (float)(row_weight * distribution_loss_gradient((LossKind)kind, log_q, p, j, sum_p, loss, target_token)));
    }
}

static void distribution_loss_cuda(float* losses, float* dlogits, const float* logits, const float* p_target,
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

__global__ void adamw_update_kernel(float* params, const float* grads, float grad_scale, float* m, float* v, size_t N,
                                    float learning_rate, float beta1, float beta2, float eps, float weight_decay,
                                    float bias_correction1, float bias_correction2) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) { return; }
    float g = __fmul_rn(grads[i], grad_scale);
    params[i] = __fmul_rn(params[i], __fsub_rn(1.0f, __fmul_rn(learning_rate, weight_decay)));
    m[i] = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(__fsub_rn(1.0f, beta1), g));
    v[i] = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, beta2), g), g));
    float m_hat = __fdiv_rn(m[i], bias_correction1);
    float v_hat = __fdiv_rn(v[i], bias_correction2);
    params[i] = __fsub_rn(params[i], __fdiv_rn(__fmul_rn(learning_rate, m_hat), __fadd_rn(__fsqrt_rn(v_hat), eps)));
}

static void adamw_update_cuda(float* params, const float* grads, float grad_scale, float* m, float* v, size_t N,
                              float learning_rate, float beta1, float beta2, float eps, float weight_decay, int t) {
    if (N == 0) { return; }
    float bias_correction1, bias_correction2;
    adamw_bias_corrections(beta1, beta2, t, &bias_correction1, &bias_correction2);
    adamw_update_kernel<<<ceil_div(N, BLOCK_SIZE), BLOCK_SIZE>>>(params, grads, grad_scale, m, v, N, learning_rate, beta1,
                                                                beta2, eps, weight_decay, bias_correction1, bias_correction2);
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

static double sum_squares_cuda(const float* values, size_t N) {
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
// Data movement, as in cpu_ref.c: gathers and scatters of rows, scaling, strided copies, argmax

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

static void gather_rows_cuda(float* out, const float* source, const int* rows, int n, int C) {
    if ((size_t)n * C == 0) { return; }
    gather_rows_kernel<<<ceil_div((size_t)n * C, BLOCK_SIZE), BLOCK_SIZE>>>(out, source, rows, n, C);
    cudaCheckLaunch("gather_rows_kernel");
}

static void scatter_add_rows_cuda(float* destination, const float* source, const int* rows, int n, int C) {
    if ((size_t)n * C == 0) { return; }
    scatter_add_rows_kernel<<<ceil_div((size_t)n * C, BLOCK_SIZE), BLOCK_SIZE>>>(destination, source, rows, n, C);
    cudaCheckLaunch("scatter_add_rows_kernel");
}

// out[t * out_stride + c] = inp[t * inp_stride + c], c < width; one thread per element
__global__ void copy_strided_kernel(float* out, const float* inp, int T, int width, int out_stride, int inp_stride) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)T * width) { return; }
    int t = (int)(index / width), c = (int)(index % width);
    out[(size_t)t * out_stride + c] = inp[(size_t)t * inp_stride + c];
}

static void copy_strided_cuda(float* out, const float* inp, int T, int width, int out_stride, int inp_stride) {
    if ((size_t)T * width == 0) { return; }
    copy_strided_kernel<<<ceil_div((size_t)T * width, BLOCK_SIZE), BLOCK_SIZE>>>(out, inp, T, width, out_stride, inp_stride);
    cudaCheckLaunch("copy_strided_kernel");
}

// cache_store_cpu: one thread per element of the call's keys (and the same element of its values)
__global__ void cache_store_kernel(float* key_cache, float* value_cache, const float* k, const float* v,
                                   CacheLayout layout, int T, int n_past, int NKV, int HS) {
    size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (index >= (size_t)T * NKV * HS) { return; }
    int t = (int)(index / ((size_t)NKV * HS)), h = (int)(index / HS % NKV), e = (int)(index % HS);
    size_t to = h * layout.head_stride + (size_t)(n_past + t) * layout.slot_stride + e;
    key_cache[to] = k[index];
    value_cache[to] = v[index];
}

static void cache_store_cuda(float* key_cache, float* value_cache, const float* k, const float* v, CacheLayout layout,
                             int T, int n_past, int NKV, int HS) {
    if ((size_t)T * NKV * HS == 0) { return; }
    cache_store_kernel<<<ceil_div((size_t)T * NKV * HS, BLOCK_SIZE), BLOCK_SIZE>>>(key_cache, value_cache, k, v, layout, T,
                                                                                 n_past, NKV, HS);
    cudaCheckLaunch("cache_store_kernel");
}

// Is (value_a, index_a) a better argmax than (value_b, index_b)? Larger value, then lower index.
__device__ int argmax_better(float value_a, int index_a, float value_b, int index_b) {
    return value_a > value_b || (value_a == value_b && index_a < index_b);
}

// out[row] = sample_argmax(logits row, V), one block per row. sample_argmax's strict > never picks a NaN, except that a NaN
// at index 0 stays the answer; the same here: NaNs are skipped and a row with no other winner gives 0.
__global__ void argmax_rows_kernel(int* out, const float* logits, int V) {
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


static void argmax_rows_cuda(int* out, const float* values, int T, int V) {
    // out: (T); values: (T, V)
    if (T == 0) { return; }
    if (V < 1) {   // (no ids: the kernel would read x[0]; the reference's argmax gives 0, as here)
        cudaCheck(cudaMemset(out, 0, (size_t)T * sizeof(int)));
        return;
    }
    argmax_rows_kernel<<<T, BLOCK_SIZE>>>(out, values, V);
    cudaCheckLaunch("argmax_rows_kernel");
}

// ============================================================================
// Memory, and the table

static void* alloc_cuda(size_t bytes) {
    void* pointer = deviceMalloc(bytes);
    cudaCheck(cudaMemset(pointer, 0, bytes > 0 ? bytes : 1));
    return pointer;
}
static void free_cuda(void* pointer) {
    if (pointer != NULL) { cudaCheck(cudaFree(pointer)); }
}
static void upload_cuda(void* destination, const void* host_source, size_t bytes) {
    if (bytes > 0) { cudaCheck(cudaMemcpy(destination, host_source, bytes, cudaMemcpyHostToDevice)); }
}
static void download_cuda(void* host_destination, const void* source, size_t bytes) {
    // cudaMemcpy to the host waits for the kernels before it
    if (bytes > 0) { cudaCheck(cudaMemcpy(host_destination, source, bytes, cudaMemcpyDeviceToHost)); }
}
static void copy_cuda(void* destination, const void* source, size_t bytes) {
    if (bytes > 0 && destination != source) { cudaCheck(cudaMemcpy(destination, source, bytes, cudaMemcpyDeviceToDevice)); }
}
static void zero_cuda(void* destination, size_t bytes) {
    if (bytes > 0) { cudaCheck(cudaMemset(destination, 0, bytes)); }
}

// A GGUF tensor as an fp32 device matrix: dequantised on the host by the reference's dequantize_row, then
// uploaded (see the top of the file)
static Matrix upload_matrix_cuda(const void* gguf_data, int gguf_type, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    float* values = (float*)malloc((n > 0 ? n : 1) * sizeof(float));
    if (values == NULL) { fprintf(stderr, "error: out of memory at %s:%d\n", __FILE__, __LINE__); exit(EXIT_FAILURE); }
    dequantize_row(gguf_type, gguf_data, values, (int64_t)n);
    float* device = (float*)deviceMalloc(n * sizeof(float));
    upload_cuda(device, values, n * sizeof(float));
    free(values);
    Matrix matrix = {device, TYPE_F32};
    return matrix;
}
static void free_matrix_cuda(Matrix matrix) { free_cuda((void*)matrix.data); }

static Backend cuda_table;
static char cuda_device[256];

extern "C" const Backend* backend_cuda(Error* err) {
    static int probed = 0, available = 0;
    static char unavailable[512];   // why not, for every call after the first (room for a 255-byte device name)
    if (probed) {
        if (!available) { error_set(err, "%s", unavailable); }
        return available ? &cuda_table : NULL;
    }
    probed = 1;
    int count = 0, device = 0;
    cudaDeviceProp properties;
    cudaFuncAttributes attributes;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0 || cudaGetDevice(&device) != cudaSuccess ||
        cudaGetDeviceProperties(&properties, device) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" / "no driver" error
        snprintf(unavailable, sizeof(unavailable), "backend 'cuda': no CUDA device is visible; use 'cpu'");
        error_set(err, "%s", unavailable);
        return NULL;
    }
    // a GPU this binary has no kernels for (built for CUDA_ARCH, another architecture) fails here, not at the
    // first launch in the middle of a run
    if (cudaFuncGetAttributes(&attributes, swiglu_forward_kernel) != cudaSuccess) {
        cudaGetLastError();
        snprintf(unavailable, sizeof(unavailable), "backend 'cuda': this binary has no kernels for %s (compute "
                 "capability %d.%d); rebuild with CUDA_ARCH=sm_%d%d, or use 'cpu'", properties.name, properties.major,
                 properties.minor, properties.major, properties.minor);
        error_set(err, "%s", unavailable);
        return NULL;
    }
    // attention's shared memory: the device's opt-in limit, opted into once (attention_dynamic_bytes)
    int optin = 0;
    cudaFuncAttributes attention;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess ||
        cudaFuncGetAttributes(&attention, attention_forward_kernel) != cudaSuccess || (size_t)optin <= attention.sharedSizeBytes ||
        cudaFuncSetAttribute(attention_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             optin - (int)attention.sharedSizeBytes) != cudaSuccess) {
        cudaGetLastError();
        snprintf(unavailable, sizeof(unavailable), "backend 'cuda': could not size the attention kernel's shared memory on %s",
                 properties.name);
        error_set(err, "%s", unavailable);
        return NULL;
    }
    attention_dynamic_bytes = (size_t)optin - attention.sharedSizeBytes;
    snprintf(cuda_device, sizeof(cuda_device), "%s", properties.name);
    Backend* t = &cuda_table;
    t->name = "cuda"; t->device = cuda_device; t->host_memory = 0;
    t->alloc = alloc_cuda; t->free = free_cuda; t->upload = upload_cuda; t->download = download_cuda;
    t->copy = copy_cuda; t->zero = zero_cuda; t->upload_matrix = upload_matrix_cuda; t->free_matrix = free_matrix_cuda;
    t->embedding_forward = embedding_forward_cuda; t->rmsnorm_forward = rmsnorm_forward_cuda;
    t->matmul_forward = matmul_forward_cuda; t->rope_forward = rope_forward_cuda;
    t->attention_forward = attention_forward_cuda; t->attention_max_slots = attention_max_slots_cuda;
    t->swiglu_forward = swiglu_forward_cuda;
    t->residual_forward = residual_forward_cuda; t->softmax_forward = softmax_forward_cuda; t->kv_compact = kv_compact_cuda;
    t->matmul_backward = matmul_backward_cuda; t->rmsnorm_backward = rmsnorm_backward_cuda;
    t->rope_backward = rope_backward_cuda; t->attention_backward = attention_backward_cuda;
    t->swiglu_backward = swiglu_backward_cuda; t->distribution_loss = distribution_loss_cuda;
    t->adamw_update = adamw_update_cuda; t->sum_squares = sum_squares_cuda;
    t->gather_rows = gather_rows_cuda; t->scatter_add_rows = scatter_add_rows_cuda;
    t->copy_strided = copy_strided_cuda; t->cache_store = cache_store_cuda; t->argmax_rows = argmax_rows_cuda;
    available = 1;
    return t;
}
