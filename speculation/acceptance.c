/*
acceptance.c: lossless acceptance of a verified tree: greedy (exact: the target's argmax, token for token)
and sampling (multi-draft rejection sampling against the residual distribution, so the emitted sequence
is distributed exactly as the target's own sampling).

Contract: acceptance functions are pure host functions. Their inputs are the tree, the target's logits or
distributions (host memory, whatever backend computed them) and the random numbers; they never draw
randomness themselves (STYLE.md items 7, 8), so every backend decides identically.
*/
#include "aurora.h"

// ----------------------------------------------------------------------------
// acceptance

void accept_greedy(Acceptance* out, const Tree* tree, const float* target_logits, int V) {
    int node = 0;
    out->n_accepted = 0;
    out->path[0] = 0;
    for (;;) {
        int target_choice = sample_argmax(target_logits + (size_t)node * V, V);
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

// Whether any token keeps a positive residual probability (stops at the first).
static int residual_has_mass(const float* residual, int V) {
    for (int i = 0; i < V; i++) { if (residual[i] > 0.0f) { return 1; } }
    return 0;
}

void accept_sampling(Acceptance* out, const Tree* tree, const float* p_target, const double* uniforms, int V,
                     float* residual) {
    int node = 0;
    out->n_accepted = 0;
    out->path[0] = 0;
    for (;;) {
        // residual = the target's distribution at this node, unnormalised; residual_mass is its sum
        memcpy(residual, p_target + (size_t)node * V, (size_t)V * sizeof(float));
        double residual_mass = 0.0;
        for (int i = 0; i < V; i++) { residual_mass += residual[i]; }
        int next = -1;
        for (int c = 0; c < tree->n_children[node]; c++) {
            int child = tree->children[node][c];
            int token = tree->tokens[child];
            // the child is a point-mass draft: accept with probability residual(token) / residual_mass
            if (residual_mass > 0.0 && uniforms[child] < residual[token] / residual_mass) { next = child; break; }
            // rejected: remove its token from the residual. If it was the residual's only token left, its
            // ratio was 1 up to rounding (the mass is a running sum) and the rejection an artefact of that
            // rounding: accept it (a residual of zeros has no bonus token to give).
            float removed = residual[token];
            residual[token] = 0.0f;
            if (removed > 0.0f && !residual_has_mass(residual, V)) { residual[token] = removed; next = child; break; }
            residual_mass -= removed;
        }
        if (next < 0) {
            // the bonus token: from the residual (the target's distribution if nothing was rejected)
            out->bonus = sample_multinomial(residual, V, uniforms[0]);
            return;
        }
        out->path[++out->n_accepted] = next;
        node = next;
    }
}
