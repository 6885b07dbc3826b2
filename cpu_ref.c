/*
cpu_ref.c: the CPU reference of every op, and the reference backend table.

What this file is: plain fp32 loops, one function per op, written to be read next to the math: the
forward ops, their backward passes, the training losses and AdamW, the small data-movement ops the
orchestration needs (gathers, scatters, strided copies, argmax), the CPU memory ops, and the table that
bundles them (backend_cpu_ref). It is the oracle for everything else: the OpenBLAS table (backends.c) and
the CUDA kernels in kernels.cu (same name root with _cuda, same argument order) are tested against these
functions (tests/test_backends.c). What it refuses to do: intrinsics, clever blocking, fused special
cases, weights in any type but fp32 (a Matrix of another type is an internal error). The only concession
to speed is an OpenMP pragma on the outer loop of the ops that dominate run time (matmul, attention),
taken when the call has PARALLEL_MIN_WORK multiply-adds or more; each output element is still computed by
one thread in one fixed order, so results are identical with or without OpenMP.

Arguments: outputs first, then inputs, then weights, then dimensions (see the legend in aurora.h).
Every op tolerates out == inp where it says so.
*/
#include "aurora.h"

// The reference computes in fp32 only: a weight in another type reaching it is a program bug (the
// reference backend's upload_matrix dequantises every matrix).
static const float* matrix_expect_f32(Matrix matrix, const char* op) {
    if (matrix.type != TYPE_F32) {
        fprintf(stderr, "error: internal: %s received a %s matrix; the reference computes in fp32 only (upload "
                "weights with the reference backend's upload_matrix, which dequantises)\n", op, tensor_type_name(matrix.type));
        exit(EXIT_FAILURE);
    }
    return (const float*)matrix.data;
}

// ----------------------------------------------------------------------------
// embedding: out[t] = table[tokens[t]]

void embedding_forward_cpu(float* out, const int* tokens, Matrix table, int T, int C, int V) {
    // out: (T, C); tokens: (T), each in [0, V) (target_forward and draft_forward check them); table: (V, C)
    (void)V; // V documents the table's shape
    const float* rows = matrix_expect_f32(table, "embedding_forward_cpu");
    for (int t = 0; t < T; t++) {
        memcpy(out + (size_t)t * C, rows + (size_t)tokens[t] * C, (size_t)C * sizeof(float));
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

void matmul_forward_cpu(float* out, const float* inp, Matrix weight_matrix, int T, int C, int OC) {
    // out: (T, OC); inp: (T, C); weight: (OC, C)
    const float* weight = matrix_expect_f32(weight_matrix, "matmul_forward_cpu");
    #pragma omp parallel for collapse(2) if ((long)T * OC * C >= PARALLEL_MIN_WORK)
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

// The angle of pair i at a position: cos and sin, rounded to float (the fast table keeps these per thread).
void rope_angle(float* cos_angle, float* sin_angle, int position, int i, int HS, float theta) {
    // in double: positions reach thousands and a float angle would lose the low digits
    double frequency = pow((double)theta, -2.0 * i / HS);
    double angle = (double)position * frequency;
    *cos_angle = (float)cos(angle);
    *sin_angle = (float)sin(angle);
}

// The rotation itself: direction +1 rotates by +angle (the forward), -1 by -angle (its transpose,
// the backward). One loop, so the two cannot drift apart.
static void rope_rotate(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta,
                        float direction) {
    // out, inp: (T, n_heads * HS) (out == inp allowed); positions: (T)
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < HS / 2; i++) {
            float cos_angle, sin_angle;
            rope_angle(&cos_angle, &sin_angle, positions[t], i, HS, theta);
            sin_angle *= direction;
            for (int h = 0; h < n_heads; h++) {
                size_t base = (size_t)t * n_heads * HS + (size_t)h * HS + 2 * i;
                float x0 = inp[base], x1 = inp[base + 1];
                out[base]     = x0 * cos_angle - x1 * sin_angle;
                out[base + 1] = x0 * sin_angle + x1 * cos_angle;
            }
        }
    }
}

void rope_forward_cpu(float* out, const float* inp, const int* positions, int T, int n_heads, int HS, float theta) {
    rope_rotate(out, inp, positions, T, n_heads, HS, theta, +1.0f);
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
                           const uint8_t* mask, int T, int P, int NH, int NKV, int HS, CacheLayout layout) {
    // out, q: (T, NH*HS); key_cache, value_cache: P slots laid out as `layout`; mask: (T, P)
    int group = NH / NKV;
    float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for collapse(2) if ((long)T * P * NH * HS >= PARALLEL_MIN_WORK)
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < NH; h++) {
            const float* q_th = q + (size_t)t * NH * HS + (size_t)h * HS;
            const uint8_t* mask_t = mask + (size_t)t * P;
            int kv_head = h / group;
            const float* keys = key_cache + kv_head * layout.head_stride;   // slot p: keys + p * slot_stride
            const float* values = value_cache + kv_head * layout.head_stride;
            float* out_th = out + (size_t)t * NH * HS + (size_t)h * HS;
            // pass 1: the largest visible score (for a stable softmax)
            float max_score = -INFINITY;
            for (int p = 0; p < P; p++) {
                if (!mask_t[p]) { continue; }
                const float* k_p = keys + p * layout.slot_stride;
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
                const float* k_p = keys + p * layout.slot_stride;
                const float* v_p = values + p * layout.slot_stride;
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
    #pragma omp simd   // (out may be inp1: each element is read before it is written)
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
// slot source_slots[i] moves to slot destination + i, in every plane (the target's cache: one per layer
// and key/value head). Sources are increasing and never below their destination (a path's tree indices
// only grow), so copying in order is safe.

void kv_compact_cpu(float* key_cache, float* value_cache, const int* source_slots, int n, int destination,
                    int n_planes, int S, int width) {
    // key_cache, value_cache: (n_planes, S, width); source_slots: (n)
    for (int plane = 0; plane < n_planes; plane++) {
        for (int i = 0; i < n; i++) {
            if (source_slots[i] == destination + i) { continue; }
            size_t from = ((size_t)plane * S + source_slots[i]) * width, to = ((size_t)plane * S + destination + i) * width;
            memmove(key_cache + to, key_cache + from, (size_t)width * sizeof(float));
            memmove(value_cache + to, value_cache + from, (size_t)width * sizeof(float));
        }
    }
}

// ============================================================================
// Backward passes: each differentiates the forward op of the same name root above, line by line (the
// forward line is quoted in a comment next to its derivative). Gradients ACCUMULATE (+=) into the
// d-buffers and a NULL d-buffer is skipped, except rope_backward_cpu, which ASSIGNS (see there).
// Arguments: outputs (the d-buffers) first, then the upstream gradient, then the forward's inputs and
// weights, then dimensions.

// ----------------------------------------------------------------------------
// matmul backward
//   forward: out[t][o] = sum_c inp[t][c] * weight[o][c]
//   dinp[t][c]    += sum_o dout[t][o] * weight[o][c]        (dinp = dout @ weight)
//   dweight[o][c] += sum_t dout[t][o] * inp[t][c]           (dweight = dout^T @ inp)

void matmul_backward_cpu(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                         int T, int C, int OC) {
    // dinp, inp: (T, C); dweight, weight: (OC, C); dout: (T, OC)
    if (dinp != NULL) {
        // each dinp[t][c] is owned by one thread: no races, one fixed summation order
        #pragma omp parallel for collapse(2) if ((long)T * OC * C >= PARALLEL_MIN_WORK)
        for (int t = 0; t < T; t++) {
            for (int c = 0; c < C; c++) {
                const float* dout_t = dout + (size_t)t * OC;
                float sum = 0.0f;
                for (int o = 0; o < OC; o++) { sum += dout_t[o] * weight[(size_t)o * C + c]; }
                dinp[(size_t)t * C + c] += sum;
            }
        }
    }
    if (dweight != NULL) {
        // each dweight[o][c] is owned by one thread
        #pragma omp parallel for collapse(2) if ((long)T * OC * C >= PARALLEL_MIN_WORK)
        for (int o = 0; o < OC; o++) {
            for (int c = 0; c < C; c++) {
                float sum = 0.0f;
                for (int t = 0; t < T; t++) { sum += dout[(size_t)t * OC + o] * inp[(size_t)t * C + c]; }
                dweight[(size_t)o * C + c] += sum;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// RMSNorm backward. Forward, per row: s = 1/sqrt(sum_c x[c]^2 / C + eps); y[c] = x[c] * s * w[c].
// With ds/dx[j] = -s^3 x[j] / C:
//   dx[j] += s * w[j] * dy[j] - x[j] * s^3 / C * sum_c w[c] dy[c] x[c]
//   dw[c] += dy[c] * x[c] * s

void rmsnorm_backward_cpu(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          int T, int C, float eps) {
    // dinp, dout, inp: (T, C); dweight, weight: (C). No pragma: dweight is shared by every row.
    for (int t = 0; t < T; t++) {
        const float* x = inp + (size_t)t * C;
        const float* dy = dout + (size_t)t * C;
        // double sum_squares = 0.0; for (...) sum_squares += x[c]*x[c];   (recomputed, as in the forward)
        double sum_squares = 0.0;
        for (int c = 0; c < C; c++) { sum_squares += (double)x[c] * x[c]; }
        // float scale = 1 / sqrt(sum_squares / C + eps);   (kept in double here: it only feeds gradients)
        double scale = 1.0 / sqrt(sum_squares / C + eps);
        if (dinp != NULL) {
            // the reduction through the scale: sum_c w[c] dy[c] x[c], in double like the forward's
            double dot = 0.0;
            for (int c = 0; c < C; c++) { dot += (double)weight[c] * dy[c] * x[c]; }
            double through_scale = scale * scale * scale / C * dot;
            float* dx = dinp + (size_t)t * C;
            // y[c] = x[c] * scale * weight[c]
            for (int c = 0; c < C; c++) { dx[c] += (float)(scale * weight[c] * dy[c] - x[c] * through_scale); }
        }
        if (dweight != NULL) {
            // y[c] = x[c] * scale * weight[c]
            for (int c = 0; c < C; c++) { dweight[c] += (float)(dy[c] * x[c] * scale); }
        }
    }
}

// ----------------------------------------------------------------------------
// RoPE backward. The forward rotates each pair by +angle, a linear map R with R^T = R^-1 = rotation by
// -angle, so the gradient is dinp = R^T dout:
//   out0 = x0 cos - x1 sin      ->   dx0 =  d0 cos + d1 sin
//   out1 = x0 sin + x1 cos      ->   dx1 = -d0 sin + d1 cos
// Unlike every other backward this ASSIGNS dinp (it does not accumulate), exactly like rope_forward_cpu
// applied with the opposite angle, so dinp == dout (in place) is allowed and is the intended use: the
// gradient of the rotated q/k is turned into the gradient of the unrotated q/k in its own buffer.

void rope_backward_cpu(float* dinp, const float* dout, const int* positions, int T, int n_heads, int HS, float theta) {
    // dinp, dout: (T, n_heads * HS) (dinp == dout allowed): dinp = R^T dout, the rotation by -angle
    rope_rotate(dinp, dout, positions, T, n_heads, HS, theta, -1.0f);
}

// ----------------------------------------------------------------------------
// Attention backward. The softmax weights are recomputed from q, keys and mask with the forward's two
// passes, then for query t, head h (kv head h / group), with a = softmax(score) over the visible p:
//   out_t = sum_p a_p v_p                 ->  dv_p += a_p dout_t;  da_p = dout_t . v_p
//   a = softmax(score)                    ->  ds_p = a_p (da_p - sum_j a_j da_j)
//   score_p = q_t . k_p * scale           ->  dq_t += scale * ds_p k_p;  dk_p += scale * ds_p q_t
// Masked slots have a_p = 0 and get nothing; a fully masked row output zeros and gets zero gradients.
// A kv head's dkeys/dvalues collect the gradients of all its query heads at every t, so the parallel loop
// is over kv heads: one thread owns one kv head's dkeys/dvalues and the dq of its query heads.

void attention_backward_cpu(float* dq, float* dkeys, float* dvalues, const float* dout, const float* q,
                            const float* keys, const float* values, const uint8_t* mask,
                            int T, int P, int NH, int NKV, int HS) {
    // dq, dout, q: (T, NH*HS); dkeys, dvalues, keys, values: (P, NKV*HS); mask: (T, P)
    int group = NH / NKV;
    int KVD = NKV * HS;
    float scale = 1.0f / sqrtf((float)HS);
    #pragma omp parallel for if ((long)T * P * NH * HS >= PARALLEL_MIN_WORK)
    for (int kv_head = 0; kv_head < NKV; kv_head++) {
        float* attention_weights = mallocCheck((size_t)(P > 0 ? P : 1) * sizeof(float)); // a_p, per thread
        float* dweights = mallocCheck((size_t)(P > 0 ? P : 1) * sizeof(float));          // da_p
        for (int h = kv_head * group; h < (kv_head + 1) * group; h++) {
            for (int t = 0; t < T; t++) {
                const float* q_th = q + (size_t)t * NH * HS + (size_t)h * HS;
                const float* dout_th = dout + (size_t)t * NH * HS + (size_t)h * HS;
                const uint8_t* mask_t = mask + (size_t)t * P;
                // forward pass 1: the largest visible score
                float max_score = -INFINITY;
                for (int p = 0; p < P; p++) {
                    if (!mask_t[p]) { continue; }
                    const float* k_p = keys + (size_t)p * KVD + (size_t)kv_head * HS;
                    float score = 0.0f;
                    for (int i = 0; i < HS; i++) { score += q_th[i] * k_p[i]; }
                    score *= scale;
                    if (score > max_score) { max_score = score; }
                }
                if (max_score == -INFINITY) { continue; } // fully masked row: out = 0, no gradient flows
                // forward pass 2: weight = expf(score * scale - max_score); normalised by sum_weights
                float sum_weights = 0.0f;
                for (int p = 0; p < P; p++) {
                    attention_weights[p] = 0.0f;
                    if (!mask_t[p]) { continue; }
                    const float* k_p = keys + (size_t)p * KVD + (size_t)kv_head * HS;
                    float score = 0.0f;
                    for (int i = 0; i < HS; i++) { score += q_th[i] * k_p[i]; }
                    attention_weights[p] = expf(score * scale - max_score);
                    sum_weights += attention_weights[p];
                }
                // out_t = sum_p a_p v_p: dv_p += a_p dout_t; da_p = dout_t . v_p
                float weighted_dweights = 0.0f; // sum_j a_j da_j
                for (int p = 0; p < P; p++) {
                    dweights[p] = 0.0f;
                    if (!mask_t[p]) { continue; }
                    attention_weights[p] /= sum_weights;
                    const float* v_p = values + (size_t)p * KVD + (size_t)kv_head * HS;
                    float da = 0.0f;
                    for (int i = 0; i < HS; i++) { da += dout_th[i] * v_p[i]; }
                    dweights[p] = da;
                    weighted_dweights += attention_weights[p] * da;
                    if (dvalues != NULL) {
                        float* dv_p = dvalues + (size_t)p * KVD + (size_t)kv_head * HS;
                        for (int i = 0; i < HS; i++) { dv_p[i] += attention_weights[p] * dout_th[i]; }
                    }
                }
                // a = softmax(score): ds_p = a_p (da_p - sum_j a_j da_j)
                // score_p = q_t . k_p * scale: dq_t += scale ds_p k_p; dk_p += scale ds_p q_t
                float* dq_th = dq != NULL ? dq + (size_t)t * NH * HS + (size_t)h * HS : NULL;
                for (int p = 0; p < P; p++) {
                    if (!mask_t[p]) { continue; }
                    float dscore = attention_weights[p] * (dweights[p] - weighted_dweights) * scale;
                    const float* k_p = keys + (size_t)p * KVD + (size_t)kv_head * HS;
                    if (dq_th != NULL) {
                        for (int i = 0; i < HS; i++) { dq_th[i] += dscore * k_p[i]; }
                    }
                    if (dkeys != NULL) {
                        float* dk_p = dkeys + (size_t)p * KVD + (size_t)kv_head * HS;
                        for (int i = 0; i < HS; i++) { dk_p[i] += dscore * q_th[i]; }
                    }
                }
            }
        }
        free(attention_weights);
        free(dweights);
    }
}

// ----------------------------------------------------------------------------
// SwiGLU backward. Forward: out = g * sig(g) * u, sig(g) = 1 / (1 + exp(-g)).
//   dgate += dout * u * (sig + g * sig * (1 - sig))      (d silu(g) / dg)
//   dup   += dout * g * sig                               (silu(g))

void swiglu_backward_cpu(float* dgate, float* dup, const float* dout, const float* gate, const float* up, int N) {
    for (int i = 0; i < N; i++) {
        float g = gate[i];
        float sig = 1.0f / (1.0f + expf(-g));
        // out[i] = g / (1.0f + expf(-g)) * up[i];
        if (dgate != NULL) { dgate[i] += dout[i] * up[i] * (sig + g * sig * (1.0f - sig)); }
        if (dup != NULL) { dup[i] += dout[i] * g * sig; }
    }
}

// ----------------------------------------------------------------------------
// Training losses, one row t at a time, in double: log q = logits - logsumexp(logits) (max-subtracted).
// With z = logits[t] and d log q(v) / d z(j) = [v == j] - q(j):
//   FORWARD_KL  L = -sum_v p(v) log q(v)                 dL/dz(j) = q(j) sum_v p(v) - p(j)
//   REVERSE_KL  L = sum_v q(v) (log q(v) - log p(v))     dL/dz(j) = q(j) (log q(j) - log p(j) - L)
//   NEXT_TOKEN  L = -log q(x)                            dL/dz(j) = q(j) - [j == x]
// REVERSE_KL clamps log p at log(1e-30) (about -69.08): a token the target gives probability 0 would make
// the loss infinite (and 0 * inf a NaN gradient), so it is treated as probability 1e-30 instead; the loss
// then strongly but finitely pushes q(v) towards 0. FORWARD_KL needs no clamp (p(v) = 0 terms vanish).
// p_target may be NULL for NEXT_TOKEN, target_tokens may be NULL for the KL kinds, weights NULL means 1.


void distribution_loss_cpu(float* losses, float* dlogits, const float* logits, const float* p_target,
                           const int* target_tokens, const float* weights, int T, int V, LossKind kind) {
    // losses: (T); dlogits, logits, p_target: (T, V); target_tokens, weights: (T)
    for (int t = 0; t < T; t++) {
        const float* z = logits + (size_t)t * V;
        const float* p = p_target != NULL ? p_target + (size_t)t * V : NULL;
        // log-softmax: log q(v) = z(v) - max - log sum_v exp(z(v) - max)
        double max_logit = -INFINITY;
        for (int v = 0; v < V; v++) { if (z[v] > max_logit) { max_logit = z[v]; } }
        double sum_exp = 0.0;
        for (int v = 0; v < V; v++) { sum_exp += exp((double)z[v] - max_logit); }
        double log_normaliser = max_logit + log(sum_exp);
        double loss = 0.0, sum_p = 0.0;
        if (kind == LOSS_FORWARD_KL) {
            for (int v = 0; v < V; v++) {
                if (p[v] == 0.0f) { continue; } // 0 * log q = 0, even where q underflows
                loss -= (double)p[v] * ((double)z[v] - log_normaliser);
                sum_p += p[v];
            }
        } else if (kind == LOSS_REVERSE_KL) {
            for (int v = 0; v < V; v++) {
                double log_q = (double)z[v] - log_normaliser;
                double log_p = log(fmax((double)p[v], REVERSE_KL_MIN_PROBABILITY));
                loss += exp(log_q) * (log_q - log_p);
            }
        } else { // LOSS_NEXT_TOKEN
            loss = -((double)z[target_tokens[t]] - log_normaliser);
        }
        losses[t] = (float)loss;
        if (dlogits == NULL) { continue; }
        double row_weight = weights != NULL ? weights[t] : 1.0;
        float* dz = dlogits + (size_t)t * V;
        int target_token = kind == LOSS_NEXT_TOKEN ? target_tokens[t] : -1;
        for (int j = 0; j < V; j++) {
            double log_q = (double)z[j] - log_normaliser;
            dz[j] += (float)(row_weight * distribution_loss_gradient(kind, log_q, p, j, sum_p, loss, target_token));
        }
    }
}

// ----------------------------------------------------------------------------
// AdamW, in PyTorch's order (torch.optim.AdamW, the default single-tensor path):
//   p = p * (1 - lr * wd)                                       decoupled weight decay first
//   m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
//   p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
// which equals p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p_old). Bias corrections in double.

// AdamW's bias corrections at step t (1, 2, ...): 1 - beta^t, in double, rounded once
void adamw_bias_corrections(float beta1, float beta2, int t, float* bias_correction1, float* bias_correction2) {
    *bias_correction1 = (float)(1.0 - pow((double)beta1, t));
    *bias_correction2 = (float)(1.0 - pow((double)beta2, t));
}

void adamw_update_cpu(float* params, const float* grads, float grad_scale, float* m, float* v, size_t N,
                      float learning_rate, float beta1, float beta2, float eps, float weight_decay, int t) {
    float bias_correction1, bias_correction2;
    adamw_bias_corrections(beta1, beta2, t, &bias_correction1, &bias_correction2);
    for (size_t i = 0; i < N; i++) {
        float g = grads[i] * grad_scale;
        params[i] *= 1.0f - learning_rate * weight_decay;
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        float m_hat = m[i] / bias_correction1;
        float v_hat = v[i] / bias_correction2;
        params[i] -= learning_rate * m_hat / (sqrtf(v_hat) + eps);
    }
}

// ----------------------------------------------------------------------------
// sum of squares, accumulated in double (for global gradient-norm clipping)

double sum_squares_cpu(const float* values, size_t N) {
    double sum = 0.0;
    for (size_t i = 0; i < N; i++) { sum += (double)values[i] * values[i]; }
    return sum;
}

// ============================================================================
// Data movement: the small ops the orchestration needs so that no host loop touches backend memory.

// gather: out row i = source row rows[i]
void gather_rows_cpu(float* out, const float* source, const int* rows, int n, int C) {
    // out: (n, C); source: (any, C); rows: (n)
    for (int i = 0; i < n; i++) { memcpy(out + (size_t)i * C, source + (size_t)rows[i] * C, (size_t)C * sizeof(float)); }
}

// scatter-add: destination row rows[i] += source row i (the rows are distinct)
void scatter_add_rows_cpu(float* destination, const float* source, const int* rows, int n, int C) {
    // destination: (any, C); source: (n, C); rows: (n)
    for (int i = 0; i < n; i++) {
        float* row = destination + (size_t)rows[i] * C;
        const float* add = source + (size_t)i * C;
        for (int c = 0; c < C; c++) { row[c] += add[c]; }
    }
}

// A block of columns: out[t * out_stride + c] = inp[t * inp_stride + c], c < width (no overlap)
void copy_strided_cpu(float* out, const float* inp, int T, int width, int out_stride, int inp_stride) {
    for (int t = 0; t < T; t++) {
        memcpy(out + (size_t)t * out_stride, inp + (size_t)t * inp_stride, (size_t)width * sizeof(float));
    }
}

// The rows of a call's keys and values into its cache slots, one key/value head's HS floats at a time
void cache_store_cpu(float* key_cache, float* value_cache, const float* k, const float* v, CacheLayout layout, int T,
                     int n_past, int NKV, int HS) {
    // k, v: (T, NKV*HS); key_cache, value_cache: slots laid out as `layout`
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < NKV; h++) {
            size_t to = h * layout.head_stride + (size_t)(n_past + t) * layout.slot_stride, from = ((size_t)t * NKV + h) * HS;
            memcpy(key_cache + to, k + from, (size_t)HS * sizeof(float));
            memcpy(value_cache + to, v + from, (size_t)HS * sizeof(float));
        }
    }
}

// The argmax of each row, exactly sample_argmax (sampling.c): ties to the lowest index; a NaN never wins,
// except that a NaN at index 0 stays the answer (nothing compares greater than it)
void argmax_rows_cpu(int* out, const float* values, int T, int V) {
    // out: (T); values: (T, V)
    for (int t = 0; t < T; t++) { out[t] = sample_argmax(values + (size_t)t * V, V); }
}

// ============================================================================
// The reference backend: host memory, every op above, every matrix dequantised to fp32 at upload.

// Zeroed and aligned to a cache line (CPU_ALIGNMENT): calloc's large blocks start 16 bytes into a page, so
// a 32-byte load at every other offset of a row straddled two lines. Aligned, the AVX2 attention's passes
// over a cache hot in L2 (18 queries after 300 slots, 2-core Zen 3) took 7.9 -> 7.2 TSC ticks per slot and
// query (scores) and 6.5 -> 5.0 (values). The block calloc returned (whose pages stay
// untouched until used: a large cache costs no memory until it fills) is kept just before the pointer given
// out, for cpu_free.
#define CPU_ALIGNMENT 64
void* cpu_alloc(size_t bytes) {
    if (bytes > SIZE_MAX - CPU_ALIGNMENT - sizeof(void*)) {
        fprintf(stderr, "error: out of memory allocating %zu bytes (cpu_alloc)\n", bytes);
        exit(EXIT_FAILURE);
    }
    char* block = callocCheck(bytes + CPU_ALIGNMENT + sizeof(void*), 1);
    uintptr_t start = ((uintptr_t)(block + sizeof(void*)) + CPU_ALIGNMENT - 1) & ~(uintptr_t)(CPU_ALIGNMENT - 1);
    ((void**)start)[-1] = block;
    return (void*)start;
}
void cpu_free(void* pointer) {
    if (pointer != NULL) { free(((void**)pointer)[-1]); }
}
// upload, download and copy are one memcpy on the CPU; a buffer aliased to itself is left alone
void cpu_copy(void* destination, const void* source, size_t bytes) {
    if (destination != source && bytes > 0) { memcpy(destination, source, bytes); }
}
void cpu_zero(void* destination, size_t bytes) { memset(destination, 0, bytes); }

Matrix cpu_upload_matrix_f32(const void* gguf_data, int gguf_type, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    float* values = mallocCheck((n > 0 ? n : 1) * sizeof(float));
    dequantize_row(gguf_type, gguf_data, values, (int64_t)n); // the rows are whole blocks: one call does them all
    return matrix_f32(values);
}
void cpu_free_matrix(Matrix matrix) { free((void*)matrix.data); }

const Backend backend_cpu_ref = {
    .name = "cpu-ref", .device = "CPU", .host_memory = 1,
    .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_copy, .download = cpu_copy, .copy = cpu_copy, .zero = cpu_zero,
    .upload_matrix = cpu_upload_matrix_f32, .free_matrix = cpu_free_matrix,
    .embedding_forward = embedding_forward_cpu, .rmsnorm_forward = rmsnorm_forward_cpu,
    .matmul_forward = matmul_forward_cpu, .rope_forward = rope_forward_cpu,
    .attention_forward = attention_forward_cpu, .swiglu_forward = swiglu_forward_cpu,
    .residual_forward = residual_forward_cpu, .softmax_forward = softmax_forward_cpu, .kv_compact = kv_compact_cpu,
    .matmul_backward = matmul_backward_cpu, .rmsnorm_backward = rmsnorm_backward_cpu,
    .rope_backward = rope_backward_cpu, .attention_backward = attention_backward_cpu,
    .swiglu_backward = swiglu_backward_cpu, .distribution_loss = distribution_loss_cpu,
    .adamw_update = adamw_update_cpu, .sum_squares = sum_squares_cpu,
    .gather_rows = gather_rows_cpu, .scatter_add_rows = scatter_add_rows_cpu,
    .copy_strided = copy_strided_cpu, .cache_store = cache_store_cpu, .argmax_rows = argmax_rows_cpu,
};
