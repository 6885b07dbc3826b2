/*
test_ops.c: every reference op in cpu_ref.c against an independent formulation (different algebra, double
precision), the OpenBLAS matmul against the plain one, and the samplers (exact greedy, a chi-square test
of multinomial sampling, top-p's nucleus). Exit status is the verdict.
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"
#include <complex.h> // after the implementation: complex.h defines the macro I

static uint64_t rng_state = 0x1234;

// ---- matmul ----------------------------------------------------------------------------------
static void test_matmul(int T, int C, int OC) {
    float* inp = mallocCheck((size_t)T * C * sizeof(float));
    float* weight = mallocCheck((size_t)OC * C * sizeof(float));
    float* out = mallocCheck((size_t)T * OC * sizeof(float));
    float* expected = mallocCheck((size_t)T * OC * sizeof(float));
    fill_uniform(inp, (size_t)T * C, &rng_state, -1, 1);
    fill_uniform(weight, (size_t)OC * C, &rng_state, -1, 1);
    // independent: accumulate in double, column-outer order
    double* accumulator = callocCheck((size_t)T * OC, sizeof(double));
    for (int c = 0; c < C; c++)
        for (int t = 0; t < T; t++)
            for (int o = 0; o < OC; o++) accumulator[(size_t)t * OC + o] += (double)inp[(size_t)t * C + c] * weight[(size_t)o * C + c];
    for (size_t i = 0; i < (size_t)T * OC; i++) { expected[i] = (float)accumulator[i]; }
    char what[96];
    matmul_forward_cpu(out, inp, matrix_f32(weight), T, C, OC);
    Tolerance tol = {"matmul", 1e-5f * sqrtf((float)C), 1e-5f, "fp32 sum of C products against a double sum"};
    snprintf(what, sizeof(what), "matmul_cpu T=%d C=%d OC=%d", T, C, OC);
    check_tensor(what, out, expected, (size_t)T * OC, tol);
    // the default CPU table (OpenBLAS when built with it) against the reference
    float* fast = mallocCheck((size_t)T * OC * sizeof(float));
    backend_cpu()->matmul_forward(fast, inp, matrix_f32(weight), T, C, OC);
    snprintf(what, sizeof(what), "matmul fast path T=%d C=%d OC=%d", T, C, OC);
    check_tensor(what, fast, out, (size_t)T * OC, tol);
    // the backward: the fast path against the reference, both accumulating into non-zero buffers
    float* dout = mallocCheck((size_t)T * OC * sizeof(float));
    float* dinp[2], *dweight[2];
    fill_uniform(dout, (size_t)T * OC, &rng_state, -1, 1);
    for (int path = 0; path < 2; path++) {
        dinp[path] = mallocCheck((size_t)T * C * sizeof(float));
        dweight[path] = mallocCheck((size_t)OC * C * sizeof(float));
        for (size_t i = 0; i < (size_t)T * C; i++) { dinp[path][i] = 0.5f; }
        for (size_t i = 0; i < (size_t)OC * C; i++) { dweight[path][i] = -0.25f; }
    }
    matmul_backward_cpu(dinp[0], dweight[0], dout, inp, weight, T, C, OC);
    backend_cpu()->matmul_backward(dinp[1], dweight[1], dout, inp, weight, T, C, OC);
    Tolerance backward_tol = {"matmul backward", 1e-5f * sqrtf((float)(OC > T ? OC : T)), 1e-5f, "fp32 sums in another order"};
    snprintf(what, sizeof(what), "matmul_backward dinp fast path T=%d C=%d OC=%d", T, C, OC);
    check_tensor(what, dinp[1], dinp[0], (size_t)T * C, backward_tol);
    snprintf(what, sizeof(what), "matmul_backward dweight fast path T=%d C=%d OC=%d", T, C, OC);
    check_tensor(what, dweight[1], dweight[0], (size_t)OC * C, backward_tol);
    for (int path = 0; path < 2; path++) { free(dinp[path]); free(dweight[path]); }
    free(dout);
    free(inp); free(weight); free(out); free(expected); free(accumulator); free(fast);
}

// ---- rmsnorm ---------------------------------------------------------------------------------
static void test_rmsnorm(int T, int C) {
    float* inp = mallocCheck((size_t)T * C * sizeof(float));
    float* weight = mallocCheck((size_t)C * sizeof(float));
    float* out = mallocCheck((size_t)T * C * sizeof(float));
    float* expected = mallocCheck((size_t)T * C * sizeof(float));
    fill_uniform(inp, (size_t)T * C, &rng_state, -3, 3);
    fill_uniform(weight, C, &rng_state, 0.5f, 1.5f);
    float eps = 1e-5f;
    for (int t = 0; t < T; t++) {
        // independent: divide by the root mean square computed with hypot-style scaling
        double largest = 0;
        for (int c = 0; c < C; c++) { largest = fmax(largest, fabs(inp[(size_t)t * C + c])); }
        double scaled_sum = 0;
        for (int c = 0; c < C; c++) { double v = inp[(size_t)t * C + c] / largest; scaled_sum += v * v; }
        double rms = sqrt(largest * largest * scaled_sum / C + eps);
        for (int c = 0; c < C; c++) { expected[(size_t)t * C + c] = (float)(inp[(size_t)t * C + c] / rms * weight[c]); }
    }
    rmsnorm_forward_cpu(out, inp, weight, T, C, eps);
    check_tensor("rmsnorm", out, expected, (size_t)T * C, tolerance("reorder"));
    rmsnorm_forward_cpu(inp, inp, weight, T, C, eps); // in place
    check_tensor("rmsnorm in place", inp, out, (size_t)T * C, tolerance("exact"));
    free(inp); free(weight); free(out); free(expected);
}

// ---- RoPE ------------------------------------------------------------------------------------
static void test_rope(void) {
    int T = 5, NH = 3, HS = 8;
    float theta = 10000.0f;
    int positions[5] = {0, 1, 7, 7, 1000};
    float inp[5 * 3 * 8], out[5 * 3 * 8], expected[5 * 3 * 8];
    fill_uniform(inp, T * NH * HS, &rng_state, -1, 1);
    rope_forward_cpu(out, inp, positions, T, NH, HS, theta);
    // independent: each pair is a complex number multiplied by exp(i * position * theta^(-2i/HS))
    for (int t = 0; t < T; t++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < HS / 2; i++) {
                size_t base = (size_t)t * NH * HS + h * HS + 2 * i;
                double complex z = inp[base] + I * inp[base + 1];
                z *= cexp(I * positions[t] * exp(-2.0 * i / HS * log(theta)));
                expected[base] = (float)creal(z);
                expected[base + 1] = (float)cimag(z);
            }
    check_tensor("rope", out, expected, (size_t)T * NH * HS, tolerance("reorder"));
    // position 0 is the identity
    check_tensor("rope at position 0", out, inp, HS * NH, tolerance("exact"));
    // relative positions: <rope(q, m), rope(k, n)> depends only on m - n
    float q[8], k[8], q_rot[8], k_rot[8];
    fill_uniform(q, 8, &rng_state, -1, 1);
    fill_uniform(k, 8, &rng_state, -1, 1);
    double dots[2];
    int shifts[2] = {0, 333};
    for (int s = 0; s < 2; s++) {
        int m = 12 + shifts[s], n = 5 + shifts[s];
        rope_forward_cpu(q_rot, q, &m, 1, 1, 8, theta);
        rope_forward_cpu(k_rot, k, &n, 1, 1, 8, theta);
        dots[s] = 0;
        for (int i = 0; i < 8; i++) { dots[s] += q_rot[i] * k_rot[i]; }
    }
    check(fabs(dots[0] - dots[1]) < 1e-4, "rope: q.k should depend only on the position difference (%g vs %g)", dots[0], dots[1]);
}

// ---- attention -------------------------------------------------------------------------------
// independent: build the full (NH, T, P) score tensor in double with -inf for masked entries, an
// explicit softmax, and key/value heads expanded by repetition (Hugging Face's repeat_kv)
static void attention_independent(float* out, const float* q, const float* keys, const float* values,
                                  const uint8_t* mask, int T, int P, int NH, int NKV, int HS) {
    int group = NH / NKV;
    double* scores = mallocCheck((size_t)P * sizeof(double));
    for (int h = 0; h < NH; h++) {
        int kv = h / group;
        for (int t = 0; t < T; t++) {
            double max_score = -INFINITY;
            for (int p = 0; p < P; p++) {
                double s = 0;
                for (int i = 0; i < HS; i++) s += (double)q[(size_t)t * NH * HS + h * HS + i] * keys[(size_t)p * NKV * HS + kv * HS + i];
                scores[p] = mask[(size_t)t * P + p] ? s / sqrt((double)HS) : -INFINITY;
                max_score = fmax(max_score, scores[p]);
            }
            double total = 0;
            for (int p = 0; p < P; p++) { scores[p] = isinf(scores[p]) ? 0.0 : exp(scores[p] - max_score); total += scores[p]; }
            for (int i = 0; i < HS; i++) {
                double acc = 0;
                for (int p = 0; p < P; p++) acc += total > 0 ? scores[p] / total * values[(size_t)p * NKV * HS + kv * HS + i] : 0.0;
                out[(size_t)t * NH * HS + h * HS + i] = (float)acc;
            }
        }
    }
    free(scores);
}

static void test_attention(int T, int P, int NH, int NKV, int HS, int mask_kind) {
    size_t q_size = (size_t)T * NH * HS, kv_size = (size_t)P * NKV * HS;
    float* q = mallocCheck(q_size * sizeof(float));
    float* keys = mallocCheck(kv_size * sizeof(float));
    float* values = mallocCheck(kv_size * sizeof(float));
    float* out = mallocCheck(q_size * sizeof(float));
    float* expected = mallocCheck(q_size * sizeof(float));
    uint8_t* mask = mallocCheck((size_t)T * P);
    fill_uniform(q, q_size, &rng_state, -2, 2);
    fill_uniform(keys, kv_size, &rng_state, -2, 2);
    fill_uniform(values, kv_size, &rng_state, -1, 1);
    for (int t = 0; t < T; t++)
        for (int p = 0; p < P; p++) {
            uint8_t visible = 1;
            if (mask_kind == 1) { visible = p <= P - T + t; }                // causal over the new tokens
            if (mask_kind == 2) { visible = random_u32(&rng_state) % 3 != 0; } // arbitrary (tree-like)
            if (mask_kind == 2 && t == 0) { visible = 0; }                    // a fully masked row
            mask[(size_t)t * P + p] = visible;
        }
    attention_forward_cpu(out, q, keys, values, mask, T, P, NH, NKV, HS, cache_by_slot(NKV, HS));
    attention_independent(expected, q, keys, values, mask, T, P, NH, NKV, HS);
    char what[96];
    snprintf(what, sizeof(what), "attention T=%d P=%d NH=%d NKV=%d HS=%d mask=%d", T, P, NH, NKV, HS, mask_kind);
    check_tensor(what, out, expected, q_size, tolerance("reorder"));
    free(q); free(keys); free(values); free(out); free(expected); free(mask);
}

// ---- pointwise ops ---------------------------------------------------------------------------
static void test_pointwise(void) {
    enum { N = 1000 };
    float gate[N], up[N], out[N], expected[N], a[N], b[N];
    fill_uniform(gate, N, &rng_state, -8, 8);
    fill_uniform(up, N, &rng_state, -2, 2);
    swiglu_forward_cpu(out, gate, up, N);
    // independent: sigmoid(x) = (1 + tanh(x / 2)) / 2
    for (int i = 0; i < N; i++) { expected[i] = (float)(gate[i] * 0.5 * (1.0 + tanh(gate[i] / 2.0)) * up[i]); }
    check_tensor("swiglu", out, expected, N, tolerance("reorder"));
    fill_uniform(a, N, &rng_state, -1, 1);
    fill_uniform(b, N, &rng_state, -1, 1);
    residual_forward_cpu(out, a, b, N);
    for (int i = 0; i < N; i++) { expected[i] = a[i] + b[i]; }
    check_tensor("residual", out, expected, N, tolerance("exact"));
    // embedding: rows gathered by id
    float table[6 * 4];
    fill_uniform(table, 24, &rng_state, -1, 1);
    int tokens[3] = {5, 0, 5};
    embedding_forward_cpu(out, tokens, matrix_f32(table), 3, 4, 6);
    check_tensor("embedding row 5", out, table + 20, 4, tolerance("exact"));
    check_tensor("embedding row 0", out + 4, table, 4, tolerance("exact"));
    // softmax: independent double formulation via log-sum-exp, sums to 1, -inf gives exactly 0
    float logits[2 * 7] = {1, 2, 3, 4, 5, 6, 7, -1000, 0, -INFINITY, 3, 3, 88, -88};
    float probs[14], expected_probs[14];
    for (int t = 0; t < 2; t++) {
        double m = -INFINITY, s = 0;
        for (int i = 0; i < 7; i++) m = fmax(m, logits[t * 7 + i]);
        for (int i = 0; i < 7; i++) s += exp(logits[t * 7 + i] - m);
        for (int i = 0; i < 7; i++) expected_probs[t * 7 + i] = (float)exp(logits[t * 7 + i] - m - log(s));
    }
    softmax_forward_cpu(probs, logits, 2, 7);
    check_tensor("softmax", probs, expected_probs, 14, tolerance("reorder"));
    check(probs[9] == 0.0f, "softmax of -inf must be exactly 0, got %g", probs[9]);
}

// ---- sampling --------------------------------------------------------------------------------
// Chi-square statistic's upper 0.999 quantile for df degrees of freedom (Wilson-Hilferty approximation).
static double chi_square_quantile_999(int df) {
    double z = 3.090232; // standard normal 0.999 quantile
    double h = 2.0 / (9.0 * df);
    return df * pow(1.0 - h + z * sqrt(h), 3.0);
}

// sample_argmax against its definition, the plain loop, on rows built to catch a vectorised argmax out: few
// distinct levels (ties everywhere), NaNs (at id 0 too), both zeros, infinities, every length from 1 to 70
// (lane remainders) and the default model's vocabulary size
static int argmax_definition(const float* logits, int V) {
    int best = 0;
    for (int i = 1; i < V; i++) { if (logits[i] > logits[best]) { best = i; } }
    return best;
}

// the negative control's argmax: ties to the highest id
static int argmax_ties_last(const float* logits, int V) {
    int best = 0;
    for (int i = 1; i < V; i++) { if (logits[i] >= logits[best]) { best = i; } }
    return best;
}

static int argmax_mismatches(int (*argmax)(const float*, int), int* checked) {
    static float row[49152];
    uint64_t rng = random_seed_state(11);
    const float levels[] = {-INFINITY, -1.0f, -0.0f, 0.0f, 0.5f, 2.0f, INFINITY, NAN};
    int mismatches = 0;
    *checked = 0;
    for (int trial = 0; trial < 4000; trial++) {
        int V = trial < 3500 ? 1 + trial % 70 : 49152;
        int mode = trial % 5;   // 0: continuous values; 1-4: a few levels, with more NaNs and infinities as it rises
        for (int i = 0; i < V; i++) {
            float u = random_f32(&rng);
            row[i] = mode == 0 ? u * 8.0f - 4.0f : levels[(int)(random_f32(&rng) * (2 + 2 * mode)) % 8];
            if (mode == 0 && u < 0.01f) { row[i] = NAN; }
        }
        if (trial % 7 == 0) { row[0] = NAN; }
        (*checked)++;
        if (argmax(row, V) != argmax_definition(row, V)) { mismatches++; }
    }
    return mismatches;
}

static void test_argmax_definition(void) {
    int checked, mismatches = argmax_mismatches(sample_argmax, &checked);
    check(mismatches == 0, "sample_argmax differs from the plain loop on %d of %d rows", mismatches, checked);
    int control = argmax_mismatches(argmax_ties_last, &checked);
    check(control > 0, "negative control: an argmax with ties to the highest id should differ on some of %d rows", checked);
}

static void test_sampling(void) {
    // greedy: exact argmax, ties to the lowest id
    float logits[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9999f, -INFINITY};
    check(sample_argmax(logits, 6) == 1, "argmax should pick id 1 (first of the tied maxima)");
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    float probs[6];
    ProbIndex scratch[6];
    check(sample_token(logits, 6, greedy, 0.99f, probs, scratch) == 1, "temperature 0 must be exact greedy");

    // multinomial: chi-square goodness of fit over many draws (false-failure rate 0.1% per test)
    enum { V = 8, DRAWS = 200000 };
    float target_probs[V] = {0.30f, 0.20f, 0.15f, 0.12f, 0.10f, 0.08f, 0.04f, 0.01f};
    long counts[V] = {0};
    uint64_t rng = random_seed_state(7);
    for (int i = 0; i < DRAWS; i++) { counts[sample_multinomial(target_probs, V, random_f64(&rng))]++; }
    double chi2 = 0;
    for (int i = 0; i < V; i++) { double e = DRAWS * target_probs[i]; chi2 += (counts[i] - e) * (counts[i] - e) / e; }
    check(chi2 < chi_square_quantile_999(V - 1), "multinomial sampling: chi-square %.2f exceeds the 0.999 quantile %.2f",
          chi2, chi_square_quantile_999(V - 1));

    // the tail of a large vocabulary: one token at 0.99995904 and 4,095 at 1e-8 each (each under half of
    // fp32's step near 1: an fp32 running sum lost all of them, and every coin past the first token fell
    // to the last id). The coin at the middle of each tail token's interval must pick that token, and
    // the largest coin the last token.
    {
        enum { VT = 4096 };
        static float tail[VT];
        tail[0] = 0.99995904f;
        for (int i = 1; i < VT; i++) { tail[i] = 1e-8f; }
        long double total = 0;
        for (int i = 0; i < VT; i++) { total += tail[i]; }
        const int picks[5] = {1, 2, 100, 2048, VT - 1};
        int right = 0, got_first = -1;
        for (int k = 0; k < 5; k++) {
            long double before = tail[0] + (long double)(picks[k] - 1) * 1e-8f;
            int got = sample_multinomial(tail, VT, (double)((before + 0.5L * 1e-8f) / total));
            right += got == picks[k];
            if (k == 0) { got_first = got; }
        }
        int last = sample_multinomial(tail, VT, 9007199254740991.0 / 9007199254740992.0);
        check(right == 5 && last == VT - 1, "multinomial over a long tail of 1e-8 tokens: %d of 5 mid-interval coins picked "
              "their token (token 1's coin picked %d); the largest coin picked %d, expected %d", right, got_first, last, VT - 1);
    }

    // top-p: with p = 0.6 the nucleus is {0, 1, 2} (0.30 + 0.20 + 0.15 >= 0.6), renormalised
    long nucleus_counts[V] = {0};
    ProbIndex top_scratch[V];
    float nucleus[V];
    memcpy(nucleus, target_probs, sizeof(nucleus));
    apply_top_p(nucleus, V, 0.6f, top_scratch);
    for (int i = 0; i < DRAWS; i++) { nucleus_counts[sample_multinomial(nucleus, V, random_f64(&rng))]++; }
    long outside = 0;
    for (int i = 3; i < V; i++) { outside += nucleus_counts[i]; }
    check(outside == 0, "top-p 0.6 sampled %ld tokens outside the nucleus", outside);
    chi2 = 0;
    for (int i = 0; i < 3; i++) { double e = DRAWS * target_probs[i] / 0.65; chi2 += (nucleus_counts[i] - e) * (nucleus_counts[i] - e) / e; }
    check(chi2 < chi_square_quantile_999(2), "top-p sampling: chi-square %.2f exceeds %.2f", chi2, chi_square_quantile_999(2));

    // temperature: the distribution is softmax(logits / T)
    float small_logits[3] = {0.0f, 1.0f, 2.0f};
    float tempered[3];
    logits_to_probs(tempered, small_logits, 3, 2.0f);
    double z = 1 + exp(0.5) + exp(1.0);
    float expected[3] = {(float)(1 / z), (float)(exp(0.5) / z), (float)(exp(1.0) / z)};
    check_tensor("temperature softmax", tempered, expected, 3, tolerance("reorder"));
    // a temperature so small that logit / T overflows (a valid float the flag accepts) tends to the argmax,
    // ties sharing it; dividing before taking the largest logit off gave inf - inf = NaN everywhere
    float tied_logits[4] = {0.5f, 3.0f, -2.0f, 3.0f}, tiny[4];
    logits_to_probs(tiny, tied_logits, 4, 1e-40f);
    float tied_expected[4] = {0.0f, 0.5f, 0.0f, 0.5f};
    check_tensor("softmax at temperature 1e-40", tiny, tied_expected, 4, tolerance("exact"));
    // logits that are not finite follow the argmax: a NaN is never a candidate, +inf logits share the mass,
    // a row of NaN and -inf gives it to the argmax's id (the negative control, inf - inf and NaN propagated
    // through the softmax, made every such row NaN, and sampling returned the last id)
    {
        float inf_row[5] = {-INFINITY, 1.0f, INFINITY, 2.0f, INFINITY}, nan_row[4] = {0.0f, NAN, 1.0f, NAN};
        float dead_row[4] = {NAN, -INFINITY, NAN, -INFINITY}, got[5], naive[5];
        logits_to_probs(got, inf_row, 5, 0.7f);
        float inf_expected[5] = {0.0f, 0.0f, 0.5f, 0.0f, 0.5f};
        check_tensor("sampling distribution of a row with +inf logits", got, inf_expected, 5, tolerance("exact"));
        logits_to_probs(got, nan_row, 4, 1.0f);
        double zn = 1 + exp(1.0);
        float nan_expected[4] = {(float)(1 / zn), 0.0f, (float)(exp(1.0) / zn), 0.0f};
        check_tensor("sampling distribution of a row with NaN logits", got, nan_expected, 4, tolerance("reorder"));
        logits_to_probs(got, dead_row, 4, 1.0f);
        float dead_expected[4] = {1.0f, 0.0f, 0.0f, 0.0f};   // sample_argmax's answer for this row: id 0
        check(sample_argmax(dead_row, 4) == 0, "argmax of a row of NaN and -inf: id 0");
        check_tensor("sampling distribution of a row of NaN and -inf", got, dead_expected, 4, tolerance("exact"));
        SamplerSettings warm = {.temperature = 0.7f, .top_p = 1.0f};
        int picks_inf = 1;
        for (int k = 0; k < 8; k++) {
            int t = sample_token(inf_row, 5, warm, (k + 0.5) / 8, got, scratch);
            picks_inf &= t == 2 || t == 4;
        }
        check(picks_inf, "sampling a row with +inf logits must pick one of them");
        float max = INFINITY;   // the control: the plain formula on the +inf row
        for (int i = 0; i < 5; i++) { naive[i] = (inf_row[i] - max) / 0.7f; }
        softmax_forward_cpu(naive, naive, 1, 5);
        int naive_nan = 0;
        for (int i = 0; i < 5; i++) { naive_nan += isnan(naive[i]); }
        check(naive_nan > 0, "negative control: the plain (logit - max) / T softmax of a +inf row should hold NaNs");
    }

    // the generator: same seed, same stream; uniforms in [0, 1)
    uint64_t a = random_seed_state(99), b = random_seed_state(99);
    int same = 1, in_range = 1;
    for (int i = 0; i < 1000; i++) {
        float x = random_f32(&a);
        same &= x == random_f32(&b);
        in_range &= x >= 0.0f && x < 1.0f;
    }
    check(same && in_range, "random_f32: the same seed must repeat, values in [0, 1)");
    uint64_t zero_seed = random_seed_state(0);
    check(random_u32(&zero_seed) != 0 || random_u32(&zero_seed) != 0, "seed 0 must not give a stuck generator");
}

// The sampling filters against their definitions, written out plainly: top-k takes the best unused token k
// times (more probable first, ties to the lower id), min-p every token at least min_p times the largest, and
// both renormalise the kept probabilities summed in double in id order. Rows of many ties, zeros and every k
// from 0 to past V; each filter's output must be the definition's bit for bit. Negative controls: top-k with
// ties to the higher id, and min-p dropping the tokens at its threshold, must each differ on some rows (the
// rows exercise the tie rule and the threshold).
static void filter_definition(float* probs, int V, const uint8_t* keep) {
    double total = 0.0;
    for (int i = 0; i < V; i++) { if (keep[i]) { total += probs[i]; } }
    for (int i = 0; i < V; i++) { probs[i] = keep[i] && total > 0.0 ? (float)(probs[i] / total) : 0.0f; }
}

static void top_k_definition(float* probs, int V, int k, int ties_high) {
    if (k <= 0 || k >= V) { return; }
    uint8_t keep[70] = {0};
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int i = 0; i < V; i++) {
            if (keep[i]) { continue; }
            if (best < 0 || probs[i] > probs[best] || (ties_high && probs[i] == probs[best])) { best = i; }
        }
        keep[best] = 1;
    }
    filter_definition(probs, V, keep);
}

// (strict: the negative control, which drops the tokens exactly at the threshold: those tied with the largest at
// min_p = 1)
static void min_p_definition(float* probs, int V, float min_p, int strict) {
    if (min_p <= 0.0f) { return; }
    float largest = 0.0f;
    for (int i = 0; i < V; i++) { largest = probs[i] > largest ? probs[i] : largest; }
    uint8_t keep[70] = {0};
    for (int i = 0; i < V; i++) { keep[i] = strict ? probs[i] > min_p * largest : probs[i] >= min_p * largest; }
    filter_definition(probs, V, keep);
}

static void test_sampling_filters(void) {
    enum { MAX_V = 70, ROWS = 6000 };
    uint64_t rng = random_seed_state(31);
    ProbIndex scratch[MAX_V];
    int top_k_mismatches = 0, control_mismatches = 0, min_p_mismatches = 0, min_p_control_mismatches = 0, composed_mismatches = 0;
    for (int row = 0; row < ROWS; row++) {
        int V = 1 + row % MAX_V;
        float probs[MAX_V], got[MAX_V], want[MAX_V];
        int levels = 2 + row % 6;   // few levels: many ties; a level of 0 now and then
        double total = 0.0;
        for (int i = 0; i < V; i++) {
            probs[i] = row % 3 == 0 ? random_f32(&rng) : (float)(random_u32(&rng) % levels) / levels;
            total += probs[i];
        }
        if (total == 0.0) { probs[0] = 1.0f; total = 1.0; }
        for (int i = 0; i < V; i++) { probs[i] = (float)(probs[i] / total); }
        int k = (int)(random_u32(&rng) % (V + 2));
        float min_p = row % 4 == 0 ? 0.0f : row % 4 == 1 ? 1.0f : random_f32(&rng);
        // each filter against its definition (control 0) and against the negative control's (1)
        int* mismatches[2][2] = {{&top_k_mismatches, &control_mismatches}, {&min_p_mismatches, &min_p_control_mismatches}};
        for (int filter = 0; filter < 2; filter++) {
            memcpy(got, probs, sizeof(float) * V);
            if (filter == 0) { apply_top_k(got, V, k, scratch); } else { apply_min_p(got, V, min_p, scratch); }
            for (int control = 0; control < 2; control++) {
                memcpy(want, probs, sizeof(float) * V);
                if (filter == 0) { top_k_definition(want, V, k, control); } else { min_p_definition(want, V, min_p, control); }
                *mismatches[filter][control] += memcmp(got, want, sizeof(float) * V) != 0;
            }
        }
        // the chain: temperature, top-k, top-p, min-p, in that order
        float logits[MAX_V];
        for (int i = 0; i < V; i++) { logits[i] = (float)(random_u32(&rng) % 9) * 0.5f; }
        SamplerSettings all = {.temperature = 0.8f, .top_p = 0.9f, .top_k = k, .min_p = min_p * 0.5f};
        sampling_distribution(got, logits, V, all, scratch);
        logits_to_probs(want, logits, V, 0.8f);
        top_k_definition(want, V, k, 0);
        apply_top_p(want, V, 0.9f, scratch);
        min_p_definition(want, V, min_p * 0.5f, 0);
        composed_mismatches += memcmp(got, want, sizeof(float) * V) != 0;
    }
    check(top_k_mismatches == 0, "top-k differs from its definition on %d of %d rows", top_k_mismatches, ROWS);
    check(min_p_mismatches == 0, "min-p differs from its definition on %d of %d rows", min_p_mismatches, ROWS);
    check(composed_mismatches == 0, "sampling_distribution differs from temperature, top-k, top-p, min-p in turn on %d "
          "of %d rows", composed_mismatches, ROWS);
    check(control_mismatches > 0, "negative control: top-k with ties to the higher id should differ on some of %d rows", ROWS);
    check(min_p_control_mismatches > 0, "negative control: min-p dropping the tokens at its threshold should differ on some "
          "of %d rows", ROWS);
    // the vocabulary's size: 49,152 tokens of few levels (a heap of k = 40 among many ties), against the definition
    {
        enum { VL = 49152, K = 40 };
        static float big[VL], big_want[VL];
        static ProbIndex big_scratch[VL];
        for (int i = 0; i < VL; i++) { big[i] = (float)(random_u32(&rng) % 1000) + 1.0f; }
        memcpy(big_want, big, sizeof(big));
        apply_top_k(big, VL, K, big_scratch);
        // the definition: the K largest values, ties to the lower id, by counting from the top level down
        uint8_t* keep = calloc(VL, 1);
        int kept = 0;
        for (int level = 1000; level >= 1 && kept < K; level--) {
            for (int i = 0; i < VL && kept < K; i++) { if (big_want[i] == (float)level) { keep[i] = 1; kept++; } }
        }
        double total = 0.0;
        for (int i = 0; i < VL; i++) { if (keep[i]) { total += big_want[i]; } }
        int wrong = 0, nonzero = 0;
        for (int i = 0; i < VL; i++) {
            float expected = keep[i] ? (float)(big_want[i] / total) : 0.0f;
            wrong += big[i] != expected;
            nonzero += big[i] != 0.0f;
        }
        check(wrong == 0 && nonzero == K, "top-%d of %d tokens: %d outputs differ from the definition, %d kept", K, VL, wrong, nonzero);
        free(keep);
    }
    printf("sampling filters: top-k and min-p equal their definitions on %d rows, and the chain its steps in turn\n", ROWS);
}

int main(void) {
    test_matmul(1, 1, 1);
    test_matmul(3, 17, 5);
    test_matmul(7, 64, 33);
    test_matmul(16, 576, 96);
    test_rmsnorm(1, 1);
    test_rmsnorm(4, 37);
    test_rmsnorm(3, 576);
    test_rope();
    test_attention(1, 1, 1, 1, 2, 0);
    test_attention(1, 9, 4, 2, 8, 0);   // one-token decode over a cache, GQA
    test_attention(5, 12, 6, 3, 16, 1); // causal prefill after 7 cached slots
    test_attention(6, 10, 9, 3, 64, 2); // arbitrary mask, a fully masked row, SmolLM2's head layout
    test_attention(4, 4, 3, 1, 6, 1);   // multi-query attention
    test_pointwise();
    test_argmax_definition();
    test_sampling();
    test_sampling_filters();
    return test_summary();
}
