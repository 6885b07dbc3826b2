/*
cpu_ref.c: the CPU reference of every op in the forward pass.

What this file is: plain fp32 loops, one function per op, written to be read next to the math. It is the
oracle for everything else: the OpenBLAS fast path and the CUDA kernels in kernels.cu (same name root
with _cuda, same argument order) are tested against these functions. What it refuses to do: intrinsics,
clever blocking, fused special cases. The only concession to speed is an OpenMP pragma on the outer loop
of the two ops that dominate run time (matmul, attention); each output element is still computed by one
thread in one fixed order, so results are identical with or without OpenMP.

Arguments: outputs first, then inputs, then weights, then dimensions (see the legend in aurora.h).
Every op tolerates out == inp where it says so.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// embedding: out[t] = table[tokens[t]]

void embedding_forward_cpu(float* out, const int* tokens, const float* table, int T, int C, int V) {
    // out: (T, C); tokens: (T), each in [0, V); table: (V, C)
    (void)V; // token ids are validated by the caller (model_check_tokens), V documents the table shape
    for (int t = 0; t < T; t++) {
        memcpy(out + (size_t)t * C, table + (size_t)tokens[t] * C, (size_t)C * sizeof(float));
    }
}

// ----------------------------------------------------------------------------
// RMSNorm: out = inp / sqrt(mean(inp^2) + eps) * weight      (out == inp allowed)

void rmsnorm_forward_cpu(float* out, const float* inp, const float* weight, int T, int C, float eps) {
    // out, inp: (T, C); weight: (C)
    for (int t = 0; t < T; t++) {
        const float* x = inp + (size_t)t * C;
        float* y = out + (size_t)t * C;
        double sum_squares = 0.0; // double: the mean of C squares is the one reduction where fp32 drifts
        for (int c = 0; c < C; c++) { sum_squares += (double)x[c] * x[c]; }
        float scale = (float)(1.0 / sqrt(sum_squares / C + eps));
        for (int c = 0; c < C; c++) { y[c] = x[c] * scale * weight[c]; }
    }
}

// ----------------------------------------------------------------------------
// matmul: out[t][o] = sum_c inp[t][c] * weight[o][c]       (no bias: Llama has none)

void matmul_forward_cpu(float* out, const float* inp, const float* weight, int T, int C, int OC) {
    // out: (T, OC); inp: (T, C); weight: (OC, C)
    #pragma omp parallel for collapse(2)
    for (int t = 0; t < T; t++) {
        for (int o = 0; o < OC; o++) {
            const float* x = inp + (size_t)t * C;
            const float* w = weight + (size_t)o * C;
            float sum = 0.0f;
            for (int c = 0; c < C; c++) { sum += x[c] * w[c]; }
            out[(size_t)t * OC + o] = sum;
        }
    }
}

// ----------------------------------------------------------------------------
// RoPE, the "normal" (GPT-J / llama.cpp mode 0) layout: within each head, the pair (x[2i], x[2i+1])
// is rotated by the angle position * theta^(-2i/HS). GGUF converters permute the Q and K weights of
// Hugging Face checkpoints so that this layout gives the same result as HF's rotate_half.
// Positions are explicit per token: a tree-verify pass gives sibling nodes the same position.

void rope_forward_cpu(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta) {
    // out, inp: (T, n_heads * HS) (out == inp allowed); positions: (T)
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < HS / 2; i++) {
            // angle in double: positions reach thousands and a float angle would lose the low digits
            double frequency = pow((double)theta, -2.0 * i / HS);
            double angle = (double)positions[t] * frequency;
            float cos_angle = (float)cos(angle);
            float sin_angle = (float)sin(angle);
            for (int h = 0; h < n_heads; h++) {
                size_t base = (size_t)t * n_heads * HS + (size_t)h * HS + 2 * i;
                float x0 = inp[base], x1 = inp[base + 1];
                out[base]     = x0 * cos_angle - x1 * sin_angle;
                out[base + 1] = x0 * sin_angle + x1 * cos_angle;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// Masked multi-head attention over a key/value cache, with grouped-query heads.
// Query t may attend to cache slot p iff mask[t][p] != 0. One mechanism serves every case: causal
// prefill, one-token decode, tree verification (each node sees the prefix, its ancestors, itself) and,
// later, the training-time-test masks. Query head h reads key/value head h / (NH / NKV), as llama.cpp
// and Hugging Face's repeat_kv do. A row whose mask is all zero outputs zeros (nothing to attend to).
//
//   score[p] = q_t . k_p / sqrt(HS)        (masked: -inf)
//   out_t    = sum_p softmax(score)[p] * v_p

void attention_forward_cpu(float* out, const float* q, const float* key_cache, const float* value_cache,
                           const uint8_t* mask, int T, int P, int NH, int NKV, int HS) {
    // out, q: (T, NH*HS); key_cache, value_cache: (P, NKV*HS); mask: (T, P)
    int group = NH / NKV;
    int KVD = NKV * HS;
    float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for collapse(2)
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < NH; h++) {
            const float* q_th = q + (size_t)t * NH * HS + (size_t)h * HS;
            const uint8_t* mask_t = mask + (size_t)t * P;
            int kv_head = h / group;
            float* out_th = out + (size_t)t * NH * HS + (size_t)h * HS;
            // pass 1: the largest visible score (for a stable softmax)
            float max_score = -INFINITY;
            for (int p = 0; p < P; p++) {
                if (!mask_t[p]) { continue; }
                const float* k_p = key_cache + (size_t)p * KVD + (size_t)kv_head * HS;
                float score = 0.0f;
                for (int i = 0; i < HS; i++) { score += q_th[i] * k_p[i]; }
                score *= scale;
                if (score > max_score) { max_score = score; }
            }
            for (int i = 0; i < HS; i++) { out_th[i] = 0.0f; }
            if (max_score == -INFINITY) { continue; } // fully masked row
            // pass 2: exponentiate, accumulate the weighted values, normalise at the end
            float sum_weights = 0.0f;
            for (int p = 0; p < P; p++) {
                if (!mask_t[p]) { continue; }
                const float* k_p = key_cache + (size_t)p * KVD + (size_t)kv_head * HS;
                const float* v_p = value_cache + (size_t)p * KVD + (size_t)kv_head * HS;
                float score = 0.0f;
                for (int i = 0; i < HS; i++) { score += q_th[i] * k_p[i]; }
                float weight = expf(score * scale - max_score);
                sum_weights += weight;
                for (int i = 0; i < HS; i++) { out_th[i] += weight * v_p[i]; }
            }
            for (int i = 0; i < HS; i++) { out_th[i] /= sum_weights; }
        }
    }
}

// ----------------------------------------------------------------------------
// SwiGLU: out = silu(gate) * up, silu(x) = x / (1 + exp(-x))      (out == gate or up allowed)

void swiglu_forward_cpu(float* out, const float* gate, const float* up, int N) {
    for (int i = 0; i < N; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// ----------------------------------------------------------------------------
// residual: out = inp1 + inp2      (out == inp1 or inp2 allowed)

void residual_forward_cpu(float* out, const float* inp1, const float* inp2, int N) {
    for (int i = 0; i < N; i++) { out[i] = inp1[i] + inp2[i]; }
}

// ----------------------------------------------------------------------------
// softmax over each row: probs = exp(logits - max) / sum      (probs == logits allowed)
// -inf logits get probability 0; a row of all -inf is undefined (never produced by the model).

void softmax_forward_cpu(float* probs, const float* logits, int T, int V) {
    // probs, logits: (T, V)
    for (int t = 0; t < T; t++) {
        const float* x = logits + (size_t)t * V;
        float* y = probs + (size_t)t * V;
        float max_value = -INFINITY;
        for (int i = 0; i < V; i++) { if (x[i] > max_value) { max_value = x[i]; } }
        double sum = 0.0;
        for (int i = 0; i < V; i++) { y[i] = expf(x[i] - max_value); sum += y[i]; }
        float inverse = (float)(1.0 / sum);
        for (int i = 0; i < V; i++) { y[i] *= inverse; }
    }
}

// ----------------------------------------------------------------------------
// KV cache compaction: after a verify pass over a tree, keep only the accepted path. The entry in
// slot source_slots[i] moves to slot destination + i, in every layer. Sources are increasing and never
// below their destination (a path's tree indices only grow), so copying in order is safe.

void kv_compact_cpu(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                    int L, int S, int KVD) {
    // key_cache, value_cache: (L, S, KVD); source_slots: (n)
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < n; i++) {
            if (source_slots[i] == destination + i) { continue; }
            size_t from = ((size_t)l * S + source_slots[i]) * KVD, to = ((size_t)l * S + destination + i) * KVD;
            memmove(key_cache + to, key_cache + from, (size_t)KVD * sizeof(float));
            memmove(value_cache + to, value_cache + from, (size_t)KVD * sizeof(float));
        }
    }
}
