/*
test_backward.c: every hand-written backward pass in cpu_ref.c against central finite differences of its
own fp32 forward, the accumulation contract (+= twice doubles, NULL skips, rope_backward assigns and works
in place), the losses and AdamW against values worked out by hand, and a whole one-layer decoder block
(rmsnorm, q/k/v, RoPE, causal GQA attention, output projection, residual, rmsnorm, SwiGLU MLP, residual,
final rmsnorm, LM head, each loss) whose backward is chained from these ops and checked against finite
differences of its scalar loss. Exit status is the verdict.

How the finite differences are taken: the objective is a double sum L = sum(r * forward(...)) with a
fixed random r (or the loss itself). For each element x we evaluate the fp32 forward at x + h and x - h
and divide by the step actually taken, (float)(x + h) - (float)(x - h), not by 2h. Outputs that do not
depend on x come out bit-identical in both evaluations and cancel exactly, so the only noise is the
rounding of the outputs that do, divided by 2h.
*/
#define TESTING
#include "../aurora.c"
#include "test_common.h"

static uint64_t rng_state = 0xb4c4;

// ---- the finite-difference machinery ----------------------------------------------------------

typedef double (*Objective)(void* context);

static double weighted_sum(const float* r, const float* out, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) { sum += (double)r[i] * out[i]; }
    return sum;
}

static double central_difference(float* param, size_t i, Objective objective, void* context, float h) {
    float saved = param[i];
    param[i] = saved + h;
    float up = param[i];
    double loss_up = objective(context);
    param[i] = saved - h;
    float down = param[i];
    double loss_down = objective(context);
    param[i] = saved;
    return (loss_up - loss_down) / ((double)up - (double)down);
}

// Every element of param: analytic[i] against the central difference of objective.
static void check_gradient(const char* what, float* param, size_t n, const float* analytic,
                           Objective objective, void* context, float h) {
    float* numeric = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { numeric[i] = (float)central_difference(param, i, objective, context, h); }
    check_tensor(what, analytic, numeric, n, tolerance("finite_difference"));
    free(numeric);
}

// A sample of at most max_samples elements (the first, the last, and random ones in between).
static void check_gradient_sampled(const char* what, float* param, size_t n, const float* analytic,
                                   Objective objective, void* context, float h, int max_samples) {
    if (n <= (size_t)max_samples) { check_gradient(what, param, n, analytic, objective, context, h); return; }
    float* numeric = mallocCheck((size_t)max_samples * sizeof(float));
    float* picked = mallocCheck((size_t)max_samples * sizeof(float));
    for (int k = 0; k < max_samples; k++) {
        size_t i = k == 0 ? 0 : k == max_samples - 1 ? n - 1 : random_u32(&rng_state) % n;
        numeric[k] = (float)central_difference(param, i, objective, context, h);
        picked[k] = analytic[i];
    }
    check_tensor(what, picked, numeric, (size_t)max_samples, tolerance("finite_difference"));
    free(numeric); free(picked);
}

static float* random_tensor(size_t n, float lo, float hi) {
    float* x = mallocCheck(n * sizeof(float));
    fill_uniform(x, n, &rng_state, lo, hi);
    return x;
}

// got == 2 * once (to the summation-order tolerance: a second += onto a non-zero buffer may round differently)
static void check_doubled(const char* what, const float* got, const float* once, size_t n) {
    float* twice = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { twice[i] = 2.0f * once[i]; }
    check_tensor(what, got, twice, n, tolerance("reorder"));
    free(twice);
}

static float* zeros(size_t n) { return callocCheck(n, sizeof(float)); }

// ---- matmul ----------------------------------------------------------------------------------

typedef struct { float *out, *inp, *weight, *r; int T, C, OC; } MatmulCase;

static double matmul_objective(void* context) {
    MatmulCase* m = context;
    matmul_forward_cpu(m->out, m->inp, matrix_f32(m->weight), m->T, m->C, m->OC);
    return weighted_sum(m->r, m->out, (size_t)m->T * m->OC);
}

static void test_matmul_backward(int T, int C, int OC) {
    MatmulCase m = {zeros((size_t)T * OC), random_tensor((size_t)T * C, -1, 1), random_tensor((size_t)OC * C, -1, 1),
                    random_tensor((size_t)T * OC, -1, 1), T, C, OC};
    size_t n_inp = (size_t)T * C, n_weight = (size_t)OC * C;
    float *dinp = zeros(n_inp), *dweight = zeros(n_weight);
    matmul_backward_cpu(dinp, dweight, m.r, m.inp, m.weight, T, C, OC);
    char what[96];
    snprintf(what, sizeof(what), "matmul dinp T=%d C=%d OC=%d", T, C, OC);
    check_gradient(what, m.inp, n_inp, dinp, matmul_objective, &m, 1e-2f);
    snprintf(what, sizeof(what), "matmul dweight T=%d C=%d OC=%d", T, C, OC);
    check_gradient(what, m.weight, n_weight, dweight, matmul_objective, &m, 1e-2f);
    // accumulation: a second call doubles; NULL skips that gradient and leaves the other identical
    float *dinp2 = zeros(n_inp), *dweight2 = zeros(n_weight);
    matmul_backward_cpu(dinp2, dweight2, m.r, m.inp, m.weight, T, C, OC);
    matmul_backward_cpu(dinp2, dweight2, m.r, m.inp, m.weight, T, C, OC);
    check_doubled("matmul dinp after two calls", dinp2, dinp, n_inp);
    check_doubled("matmul dweight after two calls", dweight2, dweight, n_weight);
    memset(dinp2, 0, n_inp * sizeof(float)); memset(dweight2, 0, n_weight * sizeof(float));
    matmul_backward_cpu(dinp2, NULL, m.r, m.inp, m.weight, T, C, OC);
    matmul_backward_cpu(NULL, dweight2, m.r, m.inp, m.weight, T, C, OC);
    check_tensor("matmul dinp alone (dweight NULL)", dinp2, dinp, n_inp, tolerance("exact"));
    check_tensor("matmul dweight alone (dinp NULL)", dweight2, dweight, n_weight, tolerance("exact"));
    free(m.out); free(m.inp); free(m.weight); free(m.r); free(dinp); free(dweight); free(dinp2); free(dweight2);
}

// ---- rmsnorm ---------------------------------------------------------------------------------

typedef struct { float *out, *inp, *weight, *r; int T, C; float eps; } RmsnormCase;

static double rmsnorm_objective(void* context) {
    RmsnormCase* m = context;
    rmsnorm_forward_cpu(m->out, m->inp, m->weight, m->T, m->C, m->eps);
    return weighted_sum(m->r, m->out, (size_t)m->T * m->C);
}

static void test_rmsnorm_backward(int T, int C, float eps, float input_range) {
    RmsnormCase m = {zeros((size_t)T * C), random_tensor((size_t)T * C, -input_range, input_range),
                     random_tensor(C, 0.5f, 1.5f), random_tensor((size_t)T * C, -1, 1), T, C, eps};
    size_t n = (size_t)T * C;
    float *dinp = zeros(n), *dweight = zeros(C);
    rmsnorm_backward_cpu(dinp, dweight, m.r, m.inp, m.weight, T, C, eps);
    char what[96];
    // the step scales with the inputs: near-zero rows with a tiny eps are steep
    float h = 1e-2f * input_range;
    snprintf(what, sizeof(what), "rmsnorm dinp T=%d C=%d eps=%g range=%g", T, C, eps, input_range);
    check_gradient(what, m.inp, n, dinp, rmsnorm_objective, &m, h);
    snprintf(what, sizeof(what), "rmsnorm dweight T=%d C=%d eps=%g range=%g", T, C, eps, input_range);
    check_gradient(what, m.weight, C, dweight, rmsnorm_objective, &m, 1e-2f);
    float *dinp2 = zeros(n), *dweight2 = zeros(C);
    rmsnorm_backward_cpu(dinp2, dweight2, m.r, m.inp, m.weight, T, C, eps);
    rmsnorm_backward_cpu(dinp2, dweight2, m.r, m.inp, m.weight, T, C, eps);
    check_doubled("rmsnorm dinp after two calls", dinp2, dinp, n);
    check_doubled("rmsnorm dweight after two calls", dweight2, dweight, C);
    memset(dinp2, 0, n * sizeof(float)); memset(dweight2, 0, C * sizeof(float));
    rmsnorm_backward_cpu(dinp2, NULL, m.r, m.inp, m.weight, T, C, eps);
    rmsnorm_backward_cpu(NULL, dweight2, m.r, m.inp, m.weight, T, C, eps);
    check_tensor("rmsnorm dinp alone", dinp2, dinp, n, tolerance("exact"));
    check_tensor("rmsnorm dweight alone", dweight2, dweight, C, tolerance("exact"));
    free(m.out); free(m.inp); free(m.weight); free(m.r); free(dinp); free(dweight); free(dinp2); free(dweight2);
}

// ---- RoPE ------------------------------------------------------------------------------------

typedef struct { float *out, *inp, *r; const int* positions; int T, NH, HS; float theta; } RopeCase;

static double rope_objective(void* context) {
    RopeCase* m = context;
    rope_forward_cpu(m->out, m->inp, m->positions, m->T, m->NH, m->HS, m->theta);
    return weighted_sum(m->r, m->out, (size_t)m->T * m->NH * m->HS);
}

static void test_rope_backward(void) {
    // repeated positions (siblings in a draft tree), zero, and large ones (the angle is taken in double)
    int positions[6] = {0, 3, 3, 1000, 123457, 7};
    int T = 6, NH = 3, HS = 6;
    size_t n = (size_t)T * NH * HS;
    RopeCase m = {zeros(n), random_tensor(n, -1, 1), random_tensor(n, -1, 1), positions, T, NH, HS, 10000.0f};
    float* dinp = random_tensor(n, -5, 5); // garbage: rope_backward assigns, it does not accumulate
    rope_backward_cpu(dinp, m.r, positions, T, NH, HS, m.theta);
    check_gradient("rope dinp", m.inp, n, dinp, rope_objective, &m, 1e-2f);
    // in place (dinp == dout) gives the same bits
    float* in_place = mallocCheck(n * sizeof(float));
    memcpy(in_place, m.r, n * sizeof(float));
    rope_backward_cpu(in_place, in_place, positions, T, NH, HS, m.theta);
    check_tensor("rope backward in place", in_place, dinp, n, tolerance("exact"));
    // it is the inverse rotation: backward(forward(x)) == x
    rope_forward_cpu(m.out, m.inp, positions, T, NH, HS, m.theta);
    rope_backward_cpu(m.out, m.out, positions, T, NH, HS, m.theta);
    check_tensor("rope backward undoes forward", m.out, m.inp, n, tolerance("reorder"));
    free(m.out); free(m.inp); free(m.r); free(dinp); free(in_place);
}

// ---- attention -------------------------------------------------------------------------------

typedef struct { float *out, *q, *keys, *values, *r; const uint8_t* mask; int T, P, NH, NKV, HS; } AttentionCase;

static double attention_objective(void* context) {
    AttentionCase* m = context;
    attention_forward_cpu(m->out, m->q, m->keys, m->values, m->mask, m->T, m->P, m->NH, m->NKV, m->HS,
                          cache_by_slot(m->NKV, m->HS));
    return weighted_sum(m->r, m->out, (size_t)m->T * m->NH * m->HS);
}

// mask_kind 0: random (about a third masked), row fully_masked_row all zero (-1: none), slot P-1 never visible
// mask_kind 1: causal with a prefix (query t sees slots 0 .. P - T + t)
static void test_attention_backward(int T, int P, int NH, int NKV, int HS, int mask_kind, int fully_masked_row) {
    size_t nq = (size_t)T * NH * HS, nkv = (size_t)P * NKV * HS;
    uint8_t* mask = mallocCheck((size_t)T * P);
    for (int t = 0; t < T; t++) {
        for (int p = 0; p < P; p++) {
            uint8_t visible = mask_kind == 1 ? p <= P - T + t : random_u32(&rng_state) % 3 != 0;
            if (mask_kind == 0 && (t == fully_masked_row || p == P - 1)) { visible = 0; }
            if (mask_kind == 0 && t != fully_masked_row && p == t % (P - 1)) { visible = 1; } // at least one
            mask[(size_t)t * P + p] = visible;
        }
    }
    AttentionCase m = {zeros(nq), random_tensor(nq, -1.5f, 1.5f), random_tensor(nkv, -1.5f, 1.5f),
                       random_tensor(nkv, -1, 1), random_tensor(nq, -1, 1), mask, T, P, NH, NKV, HS};
    float *dq = zeros(nq), *dkeys = zeros(nkv), *dvalues = zeros(nkv);
    attention_backward_cpu(dq, dkeys, dvalues, m.r, m.q, m.keys, m.values, mask, T, P, NH, NKV, HS);
    char what[128];
    const char* names[3] = {"dq", "dkeys", "dvalues"};
    float* params[3] = {m.q, m.keys, m.values};
    float* grads[3] = {dq, dkeys, dvalues};
    size_t sizes[3] = {nq, nkv, nkv};
    for (int k = 0; k < 3; k++) {
        snprintf(what, sizeof(what), "attention %s T=%d P=%d NH=%d NKV=%d HS=%d mask=%s", names[k], T, P, NH, NKV, HS,
                 mask_kind == 1 ? "causal" : "random");
        check_gradient(what, params[k], sizes[k], grads[k], attention_objective, &m, 1e-2f);
    }
    if (mask_kind == 0) {
        // what no query sees gets exactly nothing; a fully masked query gets exactly nothing
        int untouched = 1;
        for (int kv = 0; kv < NKV * HS; kv++) {
            size_t i = (size_t)(P - 1) * NKV * HS + kv;
            untouched &= dkeys[i] == 0.0f && dvalues[i] == 0.0f;
        }
        if (fully_masked_row >= 0) {
            for (int i = 0; i < NH * HS; i++) { untouched &= dq[(size_t)fully_masked_row * NH * HS + i] == 0.0f; }
        }
        check(untouched, "attention: masked slots and fully masked rows must get exactly zero gradient");
    }
    // accumulation and NULL
    float *dq2 = zeros(nq), *dkeys2 = zeros(nkv), *dvalues2 = zeros(nkv);
    attention_backward_cpu(dq2, dkeys2, dvalues2, m.r, m.q, m.keys, m.values, mask, T, P, NH, NKV, HS);
    attention_backward_cpu(dq2, dkeys2, dvalues2, m.r, m.q, m.keys, m.values, mask, T, P, NH, NKV, HS);
    check_doubled("attention dq after two calls", dq2, dq, nq);
    check_doubled("attention dkeys after two calls", dkeys2, dkeys, nkv);
    check_doubled("attention dvalues after two calls", dvalues2, dvalues, nkv);
    memset(dq2, 0, nq * sizeof(float)); memset(dkeys2, 0, nkv * sizeof(float)); memset(dvalues2, 0, nkv * sizeof(float));
    attention_backward_cpu(dq2, NULL, NULL, m.r, m.q, m.keys, m.values, mask, T, P, NH, NKV, HS);
    attention_backward_cpu(NULL, dkeys2, NULL, m.r, m.q, m.keys, m.values, mask, T, P, NH, NKV, HS);
    attention_backward_cpu(NULL, NULL, dvalues2, m.r, m.q, m.keys, m.values, mask, T, P, NH, NKV, HS);
    check_tensor("attention dq alone", dq2, dq, nq, tolerance("exact"));
    check_tensor("attention dkeys alone", dkeys2, dkeys, nkv, tolerance("exact"));
    check_tensor("attention dvalues alone", dvalues2, dvalues, nkv, tolerance("exact"));
    free(mask); free(m.out); free(m.q); free(m.keys); free(m.values); free(m.r);
    free(dq); free(dkeys); free(dvalues); free(dq2); free(dkeys2); free(dvalues2);
}

// ---- SwiGLU ----------------------------------------------------------------------------------

typedef struct { float *out, *gate, *up, *r; int N; } SwigluCase;

static double swiglu_objective(void* context) {
    SwigluCase* m = context;
    swiglu_forward_cpu(m->out, m->gate, m->up, m->N);
    return weighted_sum(m->r, m->out, (size_t)m->N);
}

static void test_swiglu_backward(void) {
    int N = 23;
    SwigluCase m = {zeros(N), random_tensor(N, -6, 6), random_tensor(N, -2, 2), random_tensor(N, -1, 1), N};
    float *dgate = zeros(N), *dup = zeros(N);
    swiglu_backward_cpu(dgate, dup, m.r, m.gate, m.up, N);
    check_gradient("swiglu dgate", m.gate, N, dgate, swiglu_objective, &m, 1e-2f);
    check_gradient("swiglu dup", m.up, N, dup, swiglu_objective, &m, 1e-2f);
    float *dgate2 = zeros(N), *dup2 = zeros(N);
    swiglu_backward_cpu(dgate2, dup2, m.r, m.gate, m.up, N);
    swiglu_backward_cpu(dgate2, dup2, m.r, m.gate, m.up, N);
    check_doubled("swiglu dgate after two calls", dgate2, dgate, N);
    check_doubled("swiglu dup after two calls", dup2, dup, N);
    memset(dgate2, 0, N * sizeof(float)); memset(dup2, 0, N * sizeof(float));
    swiglu_backward_cpu(dgate2, NULL, m.r, m.gate, m.up, N);
    swiglu_backward_cpu(NULL, dup2, m.r, m.gate, m.up, N);
    check_tensor("swiglu dgate alone", dgate2, dgate, N, tolerance("exact"));
    check_tensor("swiglu dup alone", dup2, dup, N, tolerance("exact"));
    free(m.out); free(m.gate); free(m.up); free(m.r); free(dgate); free(dup); free(dgate2); free(dup2);
}

// ---- distribution losses ---------------------------------------------------------------------

static const char* LOSS_NAMES[3] = {"forward_kl", "reverse_kl", "next_token"};

// a random distribution per row: softmax of random logits, with some exact zeros
static void random_distributions(float* p, int T, int V, int zeros_per_row) {
    fill_uniform(p, (size_t)T * V, &rng_state, -3, 3);
    softmax_forward_cpu(p, p, T, V);
    for (int t = 0; t < T; t++) {
        float* row = p + (size_t)t * V;
        for (int k = 0; k < zeros_per_row; k++) { row[(t + 2 * k) % V] = 0.0f; }
        double sum = 0.0;
        for (int v = 0; v < V; v++) { sum += row[v]; }
        for (int v = 0; v < V; v++) { row[v] = (float)(row[v] / sum); }
    }
}

typedef struct { float *losses, *logits, *p, *weights; int* tokens; int T, V; LossKind kind; } LossCase;

static double loss_objective(void* context) {
    LossCase* m = context;
    distribution_loss_cpu(m->losses, NULL, m->logits, m->p, m->tokens, m->weights, m->T, m->V, m->kind);
    double sum = 0.0;
    for (int t = 0; t < m->T; t++) { sum += (double)m->weights[t] * m->losses[t]; }
    return sum;
}

static void test_distribution_loss_finite_differences(LossKind kind) {
    int T = 4, V = 7;
    size_t n = (size_t)T * V;
    float* distributions = zeros(n);
    random_distributions(distributions, T, V, kind == LOSS_REVERSE_KL ? 1 : 2); // zeros: the clamp, skipped terms
    // NEXT_TOKEN gets p_target = NULL: it must not read it
    LossCase m = {zeros(T), random_tensor(n, -3, 3), kind == LOSS_NEXT_TOKEN ? NULL : distributions,
                  random_tensor(T, 0.25f, 2), mallocCheck(T * sizeof(int)), T, V, kind};
    for (int t = 0; t < T; t++) { m.tokens[t] = (int)(random_u32(&rng_state) % V); }
    float* dlogits = zeros(n);
    distribution_loss_cpu(m.losses, dlogits, m.logits, m.p, m.tokens, m.weights, T, V, kind);
    int finite = 1;
    for (int t = 0; t < T; t++) { finite &= isfinite(m.losses[t]); }
    check(finite, "%s: losses must be finite (p has zeros)", LOSS_NAMES[kind]);
    char what[64];
    snprintf(what, sizeof(what), "distribution_loss %s dlogits", LOSS_NAMES[kind]);
    float* first_losses = mallocCheck(T * sizeof(float));
    memcpy(first_losses, m.losses, T * sizeof(float));
    check_gradient(what, m.logits, n, dlogits, loss_objective, &m, 1e-2f);
    // accumulation: a second call doubles; losses are written, not accumulated
    float* dlogits2 = zeros(n);
    distribution_loss_cpu(m.losses, dlogits2, m.logits, m.p, m.tokens, m.weights, T, V, kind);
    distribution_loss_cpu(m.losses, dlogits2, m.logits, m.p, m.tokens, m.weights, T, V, kind);
    check_doubled("distribution_loss dlogits after two calls", dlogits2, dlogits, n);
    check_tensor("distribution_loss losses are written, not accumulated", m.losses, first_losses, T, tolerance("exact"));
    // weights NULL means 1: the gradient is the weighted one divided by the weight
    memset(dlogits2, 0, n * sizeof(float));
    distribution_loss_cpu(m.losses, dlogits2, m.logits, m.p, m.tokens, NULL, T, V, kind);
    for (size_t i = 0; i < n; i++) { dlogits2[i] *= m.weights[i / V]; }
    check_tensor("distribution_loss weights NULL means 1", dlogits2, dlogits, n, tolerance("reorder"));
    free(m.losses); free(m.logits); free(distributions); free(m.weights); free(m.tokens);
    free(dlogits); free(dlogits2); free(first_losses);
}

// Hand-worked cases on a 3-token vocabulary. logits = (0, ln 2, 0), so q = (1, 2, 1) / 4 = (0.25, 0.5, 0.25).
static void test_distribution_loss_by_hand(void) {
    const float ln2 = 0.69314718f;
    float logits[6] = {0.0f, ln2, 0.0f, 0.0f, ln2, 0.0f};
    // row 0: p = (0.5, 0.25, 0.25); row 1: p = (0.5, 0.5, 0) (a zero: the reverse-KL clamp)
    float p[6] = {0.5f, 0.25f, 0.25f, 0.5f, 0.5f, 0.0f};
    int tokens[2] = {1, 0};
    float weights[2] = {2.0f, 1.0f};
    float losses[2], dlogits[6];
    Tolerance tol = tolerance("hand");

    // FORWARD_KL: -sum p log q
    //   row 0: -(0.5 ln 0.25 + 0.25 ln 0.5 + 0.25 ln 0.25) = (1 + 0.25 + 0.5) ln 2 = 1.75 ln 2 = 1.21300757
    //   row 1: -(0.5 ln 0.25 + 0.5 ln 0.5) = (1 + 0.5) ln 2 = 1.5 ln 2 = 1.03972077
    //   dlogits = w (q - p): row 0: 2 * (-0.25, 0.25, 0) = (-0.5, 0.5, 0); row 1: (-0.25, 0, 0.25)
    memset(dlogits, 0, sizeof(dlogits));
    distribution_loss_cpu(losses, dlogits, logits, p, NULL, weights, 2, 3, LOSS_FORWARD_KL);
    float fkl_losses[2] = {1.21300757f, 1.03972077f};
    float fkl_grad[6] = {-0.5f, 0.5f, 0.0f, -0.25f, 0.0f, 0.25f};
    check_tensor("forward KL by hand: losses", losses, fkl_losses, 2, tol);
    check_tensor("forward KL by hand: dlogits", dlogits, fkl_grad, 6, tol);

    // REVERSE_KL: sum q (ln q - ln p)
    //   row 0: 0.25 ln(0.25/0.5) + 0.5 ln(0.5/0.25) + 0.25 ln(0.25/0.25) = -0.25 ln 2 + 0.5 ln 2 = 0.25 ln 2
    //          = 0.173286795; a = ln q - ln p = (-ln 2, ln 2, 0), L = 0.25 ln 2,
    //          dL/dz = q (a - L) = (0.25 * -1.25, 0.5 * 0.75, 0.25 * -0.25) ln 2 = (-0.3125, 0.375, -0.0625) ln 2
    //          = (-0.216608494, 0.259930193, -0.0433216988); times w = 2: (-0.433216988, 0.519860385, -0.0866433976)
    //   row 1: p(2) = 0 is clamped to 1e-30, ln 1e-30 = -30 ln 10 = -69.0775528:
    //          a = (ln 0.5, 0, ln 0.25 + 69.0775528) = (-0.693147181, 0, 67.6912584)
    //          L = 0.25 * -0.693147181 + 0 + 0.25 * 67.6912584 = -0.173286795 + 16.9228146 = 16.7495278
    //          dL/dz = q (a - L) = (0.25 * -17.4426750, 0.5 * -16.7495278, 0.25 * 50.9417306)
    //                = (-4.36066875, -8.37476390, 12.7354327)       (w = 1; sums to 0)
    memset(dlogits, 0, sizeof(dlogits));
    distribution_loss_cpu(losses, dlogits, logits, p, NULL, weights, 2, 3, LOSS_REVERSE_KL);
    float rkl_losses[2] = {0.173286795f, 16.7495278f};
    float rkl_grad[6] = {-0.433216988f, 0.519860385f, -0.0866433976f, -4.36066875f, -8.37476390f, 12.7354327f};
    check_tensor("reverse KL by hand: losses", losses, rkl_losses, 2, tol);
    check_tensor("reverse KL by hand: dlogits", dlogits, rkl_grad, 6, tol);

    // NEXT_TOKEN: -ln q(x). row 0, x = 1: -ln 0.5 = ln 2 = 0.693147181; dL/dz = q - e1 = (0.25, -0.5, 0.25), w = 2:
    //   (0.5, -1, 0.5). row 1, x = 0: -ln 0.25 = 2 ln 2 = 1.38629436; q - e0 = (-0.75, 0.5, 0.25).
    // p_target is NULL: NEXT_TOKEN does not read it.
    memset(dlogits, 0, sizeof(dlogits));
    distribution_loss_cpu(losses, dlogits, logits, NULL, tokens, weights, 2, 3, LOSS_NEXT_TOKEN);
    float nt_losses[2] = {0.693147181f, 1.38629436f};
    float nt_grad[6] = {0.5f, -1.0f, 0.5f, -0.75f, 0.5f, 0.25f};
    check_tensor("next token by hand: losses", losses, nt_losses, 2, tol);
    check_tensor("next token by hand: dlogits", dlogits, nt_grad, 6, tol);

    // stability: huge logits (a naive exp overflows) give the same answers as the shifted ones
    float shifted[6];
    for (int i = 0; i < 6; i++) { shifted[i] = logits[i] + 1000.0f; }
    memset(dlogits, 0, sizeof(dlogits));
    distribution_loss_cpu(losses, dlogits, shifted, NULL, tokens, weights, 2, 3, LOSS_NEXT_TOKEN);
    Tolerance shifted_tol = {"shifted", 1e-4f, 1e-4f, "logits + 1000 lose the low bits of ln 2 in fp32 (ulp 6e-5)"};
    check_tensor("next token with logits + 1000: losses", losses, nt_losses, 2, shifted_tol);
    check_tensor("next token with logits + 1000: dlogits", dlogits, nt_grad, 6, shifted_tol);
}

// ---- AdamW and the sum of squares ------------------------------------------------------------

static void test_adamw_by_hand(void) {
    // lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0.01; p = (1, -2, 0.5), m = v = 0.
    float params[3] = {1.0f, -2.0f, 0.5f}, m[3] = {0}, v[3] = {0};
    float grads1[3] = {0.1f, -0.2f, 0.0f}, grads2[3] = {-0.05f, 0.1f, 0.3f};
    // step 1: decay p *= 1 - 0.1 * 0.01 = 0.999: (0.999, -1.998, 0.4995)
    //   m = 0.1 g = (0.01, -0.02, 0); v = 0.001 g^2 = (1e-5, 4e-5, 0)
    //   mhat = m / (1 - 0.9) = (0.1, -0.2, 0); vhat = v / (1 - 0.999) = (0.01, 0.04, 0); sqrt = (0.1, 0.2, 0)
    //   mhat / (sqrt + eps) = (0.1 / 0.10000001, -0.2 / 0.20000001, 0) = (0.9999999, -0.99999995, 0)
    //   p = (0.999 - 0.09999999, -1.998 + 0.099999995, 0.4995) = (0.89900001, -1.898000005, 0.4995)
    adamw_update_cpu(params, grads1, 1.0f, m, v, 3, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
    float step1[3] = {0.89900001f, -1.898000005f, 0.4995f};
    float m1[3] = {0.01f, -0.02f, 0.0f}, v1[3] = {1e-5f, 4e-5f, 0.0f};
    check_tensor("adamw step 1 params", params, step1, 3, tolerance("hand"));
    check_tensor("adamw step 1 m", m, m1, 3, tolerance("hand"));
    check_tensor("adamw step 1 v", v, v1, 3, tolerance("hand"));
    // step 2, g = (-0.05, 0.1, 0.3): decay p *= 0.999: (0.89810101, -1.896102005, 0.4990005)
    //   m = 0.9 m + 0.1 g = (0.009 - 0.005, -0.018 + 0.01, 0 + 0.03) = (0.004, -0.008, 0.03)
    //   v = 0.999 v + 0.001 g^2 = (9.99e-6 + 2.5e-6, 3.996e-5 + 1e-5, 0 + 9e-5) = (1.249e-5, 4.996e-5, 9e-5)
    //   1 - 0.9^2 = 0.19; 1 - 0.999^2 = 0.001999
    //   mhat = (0.0210526316, -0.0421052632, 0.157894737); vhat = (0.00624812406, 0.0249924962, 0.0450225113)
    //   sqrt(vhat) = (0.0790450761, 0.158090152, 0.212185087)
    //   mhat / (sqrt + eps) = (0.266337006, -0.266337023, 0.744136788)
    //   p = (0.89810101 - 0.0266337006, -1.896102005 + 0.0266337023, 0.4990005 - 0.0744136788)
    //     = (0.871467309, -1.86946830, 0.424586821)
    adamw_update_cpu(params, grads2, 1.0f, m, v, 3, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 2);
    float step2[3] = {0.871467309f, -1.86946830f, 0.424586821f};
    float m2[3] = {0.004f, -0.008f, 0.03f}, v2[3] = {1.249e-5f, 4.996e-5f, 9e-5f};
    check_tensor("adamw step 2 params", params, step2, 3, tolerance("hand"));
    check_tensor("adamw step 2 m", m, m2, 3, tolerance("hand"));
    check_tensor("adamw step 2 v", v, v2, 3, tolerance("hand"));
}

// The clipping factor AdamW takes (grad_scale) against the gradients scaled in place first, as the trainer
// did before: the same bits for every element, over three steps; and a factor left out differs.
static void test_adamw_grad_scale(void) {
    enum { N = 257 };
    uint64_t rng = 7;
    float p[3][N], m[3][N], v[3][N], grads[N], scaled[N];
    for (int i = 0; i < N; i++) { p[0][i] = random_f32(&rng) * 2 - 1; m[0][i] = v[0][i] = 0.0f; }
    for (int c = 1; c < 3; c++) { memcpy(p[c], p[0], sizeof(p[0])); memcpy(m[c], m[0], sizeof(m[0])); memcpy(v[c], v[0], sizeof(v[0])); }
    for (int t = 1; t <= 3; t++) {
        float clip = 1.0f / (1.0f + 2.7f * t);
        for (int i = 0; i < N; i++) { grads[i] = (random_f32(&rng) * 2 - 1) * 5; scaled[i] = grads[i]; }
        for (int i = 0; i < N; i++) { scaled[i] *= clip; }   // (the in-place scaling the trainer did)
        adamw_update_cpu(p[0], grads, clip, m[0], v[0], N, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
        adamw_update_cpu(p[1], scaled, 1.0f, m[1], v[1], N, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
        adamw_update_cpu(p[2], grads, 1.0f, m[2], v[2], N, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, t);   // the factor left out
    }
    check(memcmp(p[0], p[1], sizeof(p[0])) == 0 && memcmp(m[0], m[1], sizeof(m[0])) == 0 && memcmp(v[0], v[1], sizeof(v[0])) == 0,
          "adamw with grad_scale differs from the gradients scaled first");
    check(memcmp(v[0], v[2], sizeof(v[0])) != 0, "negative control: adamw without the factor matched");
}

static void test_sum_squares(void) {
    float small[3] = {1.0f, -2.0f, 3.0f};
    check(sum_squares_cpu(small, 3) == 14.0, "sum_squares(1, -2, 3) = %g, expected 14", sum_squares_cpu(small, 3));
    // a million 0.1s: the double sum is within 1e-9 (relative) of n * 0.1f^2; an fp32 running sum is 1.3% low
    size_t n = 1000000;
    float* tenths = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) { tenths[i] = 0.1f; }
    double expected = (double)n * ((double)0.1f * (double)0.1f);
    double got = sum_squares_cpu(tenths, n);
    check(fabs(got - expected) <= 1e-9 * expected, "sum_squares of 1e6 tenths = %.15g, expected %.15g", got, expected);
    check(sum_squares_cpu(tenths, 0) == 0.0, "sum_squares of nothing must be 0");
    free(tenths);
}

// ---- a whole decoder block -------------------------------------------------------------------
// x0 -> rmsnorm -> q, k, v -> RoPE(q, k) -> causal GQA attention -> wo -> + x0 = x1
// x1 -> rmsnorm -> gate, up -> SwiGLU -> down -> + x1 = x2 -> rmsnorm -> LM head -> loss (weighted sum)

enum { BT = 5, BC = 8, BNH = 4, BNKV = 2, BHS = 2, BF = 12, BV = 11, BQD = BNH * BHS, BKVD = BNKV * BHS };

typedef struct {
    // parameters (x0 included: its gradient is checked too)
    float x0[BT * BC], attn_norm[BC], wq[BQD * BC], wk[BKVD * BC], wv[BKVD * BC], wo[BC * BQD];
    float ffn_norm[BC], w_gate[BF * BC], w_up[BF * BC], w_down[BC * BF], out_norm[BC], w_lm[BV * BC];
    // activations
    float xn1[BT * BC], q[BT * BQD], k[BT * BKVD], v[BT * BKVD], qr[BT * BQD], kr[BT * BKVD], att[BT * BQD];
    float o[BT * BC], x1[BT * BC], xn2[BT * BC], g[BT * BF], u[BT * BF], hsw[BT * BF], d[BT * BC], x2[BT * BC];
    float xn3[BT * BC], logits[BT * BV], losses[BT];
    // data
    int positions[BT], tokens[BT];
    uint8_t mask[BT * BT];
    float p[BT * BV], weights[BT];
    LossKind kind;
    float eps, theta;
} Block;

static double block_forward(void* context) {
    Block* b = context;
    rmsnorm_forward_cpu(b->xn1, b->x0, b->attn_norm, BT, BC, b->eps);
    matmul_forward_cpu(b->q, b->xn1, matrix_f32(b->wq), BT, BC, BQD);
    matmul_forward_cpu(b->k, b->xn1, matrix_f32(b->wk), BT, BC, BKVD);
    matmul_forward_cpu(b->v, b->xn1, matrix_f32(b->wv), BT, BC, BKVD);
    rope_forward_cpu(b->qr, b->q, b->positions, BT, BNH, BHS, b->theta);
    rope_forward_cpu(b->kr, b->k, b->positions, BT, BNKV, BHS, b->theta);
    attention_forward_cpu(b->att, b->qr, b->kr, b->v, b->mask, BT, BT, BNH, BNKV, BHS, cache_by_slot(BNKV, BHS));
    matmul_forward_cpu(b->o, b->att, matrix_f32(b->wo), BT, BQD, BC);
    residual_forward_cpu(b->x1, b->x0, b->o, BT * BC);
    rmsnorm_forward_cpu(b->xn2, b->x1, b->ffn_norm, BT, BC, b->eps);
    matmul_forward_cpu(b->g, b->xn2, matrix_f32(b->w_gate), BT, BC, BF);
    matmul_forward_cpu(b->u, b->xn2, matrix_f32(b->w_up), BT, BC, BF);
    swiglu_forward_cpu(b->hsw, b->g, b->u, BT * BF);
    matmul_forward_cpu(b->d, b->hsw, matrix_f32(b->w_down), BT, BF, BC);
    residual_forward_cpu(b->x2, b->x1, b->d, BT * BC);
    rmsnorm_forward_cpu(b->xn3, b->x2, b->out_norm, BT, BC, b->eps);
    matmul_forward_cpu(b->logits, b->xn3, matrix_f32(b->w_lm), BT, BC, BV);
    distribution_loss_cpu(b->losses, NULL, b->logits, b->p, b->tokens, b->weights, BT, BV, b->kind);
    double loss = 0.0;
    for (int t = 0; t < BT; t++) { loss += (double)b->weights[t] * b->losses[t]; }
    return loss;
}

typedef struct {
    float x0[BT * BC], attn_norm[BC], wq[BQD * BC], wk[BKVD * BC], wv[BKVD * BC], wo[BC * BQD];
    float ffn_norm[BC], w_gate[BF * BC], w_up[BF * BC], w_down[BC * BF], out_norm[BC], w_lm[BV * BC];
} BlockGradients;

// The backward of block_forward, line by line in reverse; every d-buffer starts at zero and accumulates.
static void block_backward(BlockGradients* grad, Block* b) {
    memset(grad, 0, sizeof(*grad));
    float dlogits[BT * BV] = {0}, dxn3[BT * BC] = {0}, dx2[BT * BC] = {0}, dhsw[BT * BF] = {0};
    float dg[BT * BF] = {0}, du[BT * BF] = {0}, dxn2[BT * BC] = {0}, dx1[BT * BC] = {0}, datt[BT * BQD] = {0};
    float dq[BT * BQD] = {0}, dk[BT * BKVD] = {0}, dv[BT * BKVD] = {0}, dxn1[BT * BC] = {0};
    block_forward(b); // activations
    // loss = sum_t weights[t] * losses[t]
    distribution_loss_cpu(b->losses, dlogits, b->logits, b->p, b->tokens, b->weights, BT, BV, b->kind);
    // logits = matmul(xn3, w_lm)
    matmul_backward_cpu(dxn3, grad->w_lm, dlogits, b->xn3, b->w_lm, BT, BC, BV);
    // xn3 = rmsnorm(x2, out_norm)
    rmsnorm_backward_cpu(dx2, grad->out_norm, dxn3, b->x2, b->out_norm, BT, BC, b->eps);
    // x2 = x1 + d: both get dx2 (d's gradient is dx2 itself)
    for (int i = 0; i < BT * BC; i++) { dx1[i] += dx2[i]; }
    // d = matmul(hsw, w_down)
    matmul_backward_cpu(dhsw, grad->w_down, dx2, b->hsw, b->w_down, BT, BF, BC);
    // hsw = swiglu(g, u)
    swiglu_backward_cpu(dg, du, dhsw, b->g, b->u, BT * BF);
    // g = matmul(xn2, w_gate); u = matmul(xn2, w_up): dxn2 sums both
    matmul_backward_cpu(dxn2, grad->w_gate, dg, b->xn2, b->w_gate, BT, BC, BF);
    matmul_backward_cpu(dxn2, grad->w_up, du, b->xn2, b->w_up, BT, BC, BF);
    // xn2 = rmsnorm(x1, ffn_norm)
    rmsnorm_backward_cpu(dx1, grad->ffn_norm, dxn2, b->x1, b->ffn_norm, BT, BC, b->eps);
    // x1 = x0 + o
    for (int i = 0; i < BT * BC; i++) { grad->x0[i] += dx1[i]; }
    // o = matmul(att, wo)
    matmul_backward_cpu(datt, grad->wo, dx1, b->att, b->wo, BT, BQD, BC);
    // att = attention(qr, kr, v, mask): dq, dk hold the gradients of the rotated qr, kr for now
    attention_backward_cpu(dq, dk, dv, datt, b->qr, b->kr, b->v, b->mask, BT, BT, BNH, BNKV, BHS);
    // qr = rope(q), kr = rope(k): in place, the rotated gradients become the unrotated ones
    rope_backward_cpu(dq, dq, b->positions, BT, BNH, BHS, b->theta);
    rope_backward_cpu(dk, dk, b->positions, BT, BNKV, BHS, b->theta);
    // q, k, v = matmul(xn1, wq / wk / wv): dxn1 sums all three
    matmul_backward_cpu(dxn1, grad->wq, dq, b->xn1, b->wq, BT, BC, BQD);
    matmul_backward_cpu(dxn1, grad->wk, dk, b->xn1, b->wk, BT, BC, BKVD);
    matmul_backward_cpu(dxn1, grad->wv, dv, b->xn1, b->wv, BT, BC, BKVD);
    // xn1 = rmsnorm(x0, attn_norm)
    rmsnorm_backward_cpu(grad->x0, grad->attn_norm, dxn1, b->x0, b->attn_norm, BT, BC, b->eps);
}

static void test_decoder_block(LossKind kind) {
    Block* b = callocCheck(1, sizeof(Block));
    BlockGradients* grad = callocCheck(1, sizeof(BlockGradients));
    b->kind = kind;
    b->eps = 1e-5f;
    b->theta = 10000.0f;
    struct { const char* name; float* param; float* grad; size_t n; float lo, hi; } tensors[] = {
        {"x0", b->x0, grad->x0, BT * BC, -1, 1},
        {"attn_norm", b->attn_norm, grad->attn_norm, BC, 0.5f, 1.5f},
        {"wq", b->wq, grad->wq, BQD * BC, -0.6f, 0.6f},
        {"wk", b->wk, grad->wk, BKVD * BC, -0.6f, 0.6f},
        {"wv", b->wv, grad->wv, BKVD * BC, -0.5f, 0.5f},
        {"wo", b->wo, grad->wo, BC * BQD, -0.5f, 0.5f},
        {"ffn_norm", b->ffn_norm, grad->ffn_norm, BC, 0.5f, 1.5f},
        {"w_gate", b->w_gate, grad->w_gate, BF * BC, -0.5f, 0.5f},
        {"w_up", b->w_up, grad->w_up, BF * BC, -0.5f, 0.5f},
        {"w_down", b->w_down, grad->w_down, BC * BF, -0.4f, 0.4f},
        {"out_norm", b->out_norm, grad->out_norm, BC, 0.5f, 1.5f},
        {"w_lm", b->w_lm, grad->w_lm, BV * BC, -0.6f, 0.6f},
    };
    int n_tensors = (int)(sizeof(tensors) / sizeof(tensors[0]));
    for (int i = 0; i < n_tensors; i++) { fill_uniform(tensors[i].param, tensors[i].n, &rng_state, tensors[i].lo, tensors[i].hi); }
    for (int t = 0; t < BT; t++) {
        b->positions[t] = 3 + t; // a prefill starting at position 3
        b->tokens[t] = (int)(random_u32(&rng_state) % BV);
        b->weights[t] = test_uniform(&rng_state, 0.5f, 1.5f);
        for (int p = 0; p < BT; p++) { b->mask[t * BT + p] = p <= t; } // causal
    }
    random_distributions(b->p, BT, BV, 0);
    block_backward(grad, b);
    for (int i = 0; i < n_tensors; i++) {
        char what[96];
        snprintf(what, sizeof(what), "decoder block (%s) d%s", LOSS_NAMES[kind], tensors[i].name);
        check_gradient_sampled(what, tensors[i].param, tensors[i].n, tensors[i].grad, block_forward, b, 1e-2f, 16);
    }
    free(b); free(grad);
}

int main(void) {
    test_matmul_backward(3, 5, 7);
    test_matmul_backward(1, 9, 2);
    test_rmsnorm_backward(3, 7, 1e-5f, 2.0f);
    test_rmsnorm_backward(2, 5, 0.5f, 0.3f);  // eps comparable to mean(x^2): its placement matters
    test_rope_backward();
    test_attention_backward(3, 5, 4, 2, 4, 0, 1);  // GQA 4/2, random mask, row 1 fully masked
    test_attention_backward(4, 6, 3, 1, 2, 0, 3);  // GQA 3/1, random mask, last row fully masked
    test_attention_backward(3, 7, 4, 2, 6, 1, -1); // GQA 4/2, causal over a 4-slot prefix
    test_attention_backward(5, 5, 2, 2, 4, 1, -1); // plain multi-head, causal
    test_swiglu_backward();
    for (int kind = 0; kind < 3; kind++) { test_distribution_loss_finite_differences((LossKind)kind); }
    test_distribution_loss_by_hand();
    test_adamw_by_hand();
    test_adamw_grad_scale();
    test_sum_squares();
    for (int kind = 0; kind < 3; kind++) { test_decoder_block((LossKind)kind); }
    return test_summary();
}
