/*
trainer.c: the online trainer. The draft is the policy, the target the environment: every finished
request (a Record) teaches the draft what the target said (the accepted path) and what it would have
said after the draft's rejected guesses (the discard loss).

One optimiser step over a batch of records:

  0. the columns trained: a context window of prompt positions before the first completion position
     (TrainerSettings' default 64; replay and train take 512), then the completion; the loss lives on the
     completion tokens, and with prompt_weight > 0 (replay's and train's default 1) on the window's prompt
     tokens too, at that weight (unroll_loss_rows). A window's first columns see only the window, not the
     prompt before it (the cost of a window; their taps g still carry the target's whole context);
  1. the target's distributions, recomputed from the recorded final hidden states h with the frozen
     target LM head restricted to the draft vocabulary: p = softmax(W_lm[d2t] h);
  2. the training-time-test (TTT) unroll of L_ttt steps over each record, teacher-forced:
       step 0   column t: u = fc(g_t), e = Emb(x_{t+1}), position t         -> predicts x_{t+2}
       step k   column t: u = the step k-1 output at t, e = Emb(x_{t+k+1}), position t+k -> x_{t+k+2}
     Keys/values of step k form block k of one key buffer. A query of step k at column t sees block 0
     at columns s <= t (the teacher-forced prefix) and, in each block 1..k, only column t (its own
     earlier unrolled states): the EAGLE-3 TTT mask.
        step 2, column 3:   block 0: [x x x x . . ]   block 1: [. . . x . ]   block 2: [. . . x]
  3. the accepted-path loss: at step k, over the columns whose prediction x_{t+k+2} has a recorded target
     (a completion token, or a prompt token at prompt_weight), the weighted mean of distribution_loss
     (forward KL by default), weighted 0.8^k;
  4. the discard loss: every rejected tree node n (or the top-k per verify pass by draft score) rides
     along in step 0 as an extra row: u = fc(g at its parent), e = Emb(y_n), position pos(n) - 1; it sees
     the block-0 columns before it (prefix_end), its rejected ancestors and itself (tree attention);
     target p(. | prefix, path to n) from the node's recorded hidden state; weight lambda / #nodes;
  4b. the feature loss (off by default, --feature-weight): at each accepted-path loss row, the mean squared
     difference between the draft's normed output and the target's recorded hidden state h at the same
     column (what the target's LM head turns into that row's teacher), computed on the host;
  5. backward through everything by hand (the ops' backward passes in cpu_ref.c), in reverse step
     order, so that the gradient of block k's keys/values is complete when step k is reached;
  6. a non-finite loss or gradient rejects the step (counted; the weights stay); otherwise global
     gradient-norm clipping, linear learning-rate warm-up, AdamW.

Between steps the draft vocabulary may follow the traffic (trainer_adapt_vocabulary): ids the records
use often replace entries they never use; a new entry's LM-head row and teacher row are the target's.

Written once for every backend: the tensors (weights, gradients, moments, activations) live on the
target's backend and every tensor op is a call through its table; the host does the bookkeeping (the
plan, rows, tokens, positions, masks, loss rows and weights, built here and uploaded) and adds the
per-row losses (downloaded) in a fixed order. The trainer owns its own copy of the draft; after every
applied step the weights are on the host too (draft.weight_arena), where flywheel.c publishes them.
*/
#include "aurora.h"

TrainerSettings trainer_default_settings(void) {
    TrainerSettings s = {0};
    s.learning_rate = 3e-4f; s.warmup_steps = 20;
    s.beta1 = 0.9f; s.beta2 = 0.999f; s.adam_eps = 1e-8f; s.weight_decay = 0.0f;
    s.max_grad_norm = 1.0f; s.ttt_length = 5; s.step_decay = 0.8f;
    s.loss = LOSS_FORWARD_KL; s.discard_weight = 0.0f; s.discard_top_k = 0; s.discard_loss = LOSS_FORWARD_KL;
    s.max_positions = TRAINER_DEFAULT_MAX_POSITIONS; s.context_window = TRAINER_DEFAULT_CONTEXT_WINDOW;
    return s;
}

// ----------------------------------------------------------------------------
// setup

void trainer_init(Trainer* trainer, const Draft* draft, const Target* target, TrainerSettings settings) {
    memset(trainer, 0, sizeof(*trainer));
    const Backend* b = target->backend;
    if (settings.bf16_products) {
        Error err;
        b = backend_bf16_twin(target->backend, &err);
        if (b == NULL) {   // the commands check the table first
            fprintf(stderr, "error: internal: trainer_init: %s\n", err.message);
            exit(EXIT_FAILURE);
        }
    }
    trainer->settings = settings;
    trainer->backend = b;
    draft_copy_weights(&trainer->draft, draft);
    trainer->draft.backend = b;
    trainer->draft.target_embedding = target->weights.token_embedding;
    draft_upload_weights(&trainer->draft); // on a CPU backend the host arena itself
    size_t n = draft->n_weight_floats;
    trainer->grads = b->alloc(n * sizeof(float));   // zeroed, as the moments
    trainer->adam_m = b->alloc(n * sizeof(float));
    trainer->adam_v = b->alloc(n * sizeof(float));
    // gradient pointers: the same offsets as the weights (DraftWeights is all float*, in table order)
    float** grad_pointers = (float**)&trainer->grad;
    size_t offset = 0;
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        grad_pointers[i] = trainer->grads + offset;
        offset += trainer->draft.tensors[i].n_elements;
    }
    // the target's LM head rows of the draft vocabulary, read from the model file whatever the backend keeps
    int C = draft->config.dim, V_d = draft->config.vocab_size;
    float* head_rows = mallocCheck((size_t)V_d * C * sizeof(float));
    Error err;
    if (target_read_rows(target, target_output_name(target), draft->d2t, V_d, head_rows, &err) != 0) {
        fprintf(stderr, "error: internal: trainer_init: %s\n", err.message);
        exit(EXIT_FAILURE); // the target loaded this tensor: a program bug
    }
    trainer->head_rows = b->alloc((size_t)V_d * C * sizeof(float));
    b->upload(trainer->head_rows, head_rows, (size_t)V_d * C * sizeof(float));
    free(head_rows);
    trainer->target = target;
    trainer->token_counts = callocCheck((size_t)draft->config.target_vocab_size, sizeof(long));
    // The online trainer's own thread uses these buffers next. On CUDA each host thread has its own stream
    // (kernels.cu), and nothing orders this thread's queued zeroing and uploads before that thread's first
    // kernels, so wait for them here: a download returns when everything queued before it is done.
    float first;
    b->download(&first, trainer->head_rows, sizeof(float));
}

// The buffers the steps share (train_workspace_reserve allocates them all again at once).
static void train_workspace_free_shared(TrainWorkspace* w, const Backend* b) {
    void* on_backend[] = {w->key_buffer, w->value_buffer, w->d_keys, w->d_values, w->p_target, w->gathered, w->loss_rows,
                          w->target_tokens, w->loss_weights, w->losses, w->argmax, w->d_logits, w->d_out_norm, w->d_h,
                          w->d_h_norm, w->d_ffn_hidden, w->d_gate, w->d_up, w->d_attn_out, w->d_q, w->d_attn_in,
                          w->d_half, w->d_u};
    for (size_t i = 0; i < sizeof(on_backend) / sizeof(on_backend[0]); i++) { b->free(on_backend[i]); }
    void* on_host[] = {w->host_rows, w->host_mask, w->host_tokens, w->host_positions, w->host_loss_rows,
                       w->host_target_tokens, w->host_loss_weights, w->host_losses, w->host_argmax,
                       w->host_out_norm};
    for (size_t i = 0; i < sizeof(on_host) / sizeof(on_host[0]); i++) { free(on_host[i]); }
}

static void train_workspace_free(TrainWorkspace* w, const Backend* b) {
    for (int k = 0; k < TTT_MAX_STEPS; k++) {
        draft_activations_free(&w->act[k], b);
        b->free(w->d_out[k]);
    }
    train_workspace_free_shared(w, b);
    memset(w, 0, sizeof(*w));
}

void trainer_free(Trainer* trainer) {
    const Backend* b = trainer->backend;
    train_workspace_free(&trainer->work, b);
    free(trainer->discard.used);
    free(trainer->discard.row);
    b->free(trainer->grads);
    b->free(trainer->adam_m);
    b->free(trainer->adam_v);
    b->free(trainer->head_rows);
    free(trainer->token_counts);
    draft_free(&trainer->draft);
    memset(trainer, 0, sizeof(*trainer));
}

// Grows the workspace to hold a plan's unroll; capacities never shrink. Each step's activations hold its
// own rows and mask columns: a held-back evaluation replays a whole prompt at step 0 but only the
// completion's columns after it, and every step sized as step 0 reserved about 0.9 GB for a 2,000-token
// prompt at depth 5, for the rest of the run (on the CPU mostly pages never touched, so not resident; on a
// GPU, device memory). The buffers the steps share hold the most rows of a step (step 0's: the sequence
// columns and the discard nodes) and the keys of all blocks.
static void train_workspace_reserve(TrainWorkspace* w, const Backend* b, const DraftConfig* c, const UnrollPlan* plan) {
    size_t C = (size_t)c->dim;
    int rows = plan->rows[0], keys = plan->block_offset[plan->n_steps];
    size_t mask = 0;
    for (int k = 0; k < plan->n_steps; k++) {
        int columns = plan->block_offset[k] + plan->rows[k];   // step k's keys: the blocks before it and its own
        if ((size_t)plan->rows[k] * columns > mask) { mask = (size_t)plan->rows[k] * columns; }
        if (plan->rows[k] <= w->step_rows[k] && columns <= w->step_keys[k]) { continue; }
        w->step_rows[k] = plan->rows[k] > w->step_rows[k] ? plan->rows[k] : w->step_rows[k];
        w->step_keys[k] = columns > w->step_keys[k] ? columns : w->step_keys[k];
        draft_activations_free(&w->act[k], b);
        b->free(w->d_out[k]);
        draft_activations_alloc(&w->act[k], b, c, w->step_rows[k], w->step_keys[k]);
        w->d_out[k] = b->alloc((size_t)w->step_rows[k] * C * sizeof(float));
    }
    if (rows <= w->capacity_rows && keys <= w->capacity_keys && mask <= w->capacity_mask) { return; }
    rows = rows > w->capacity_rows ? rows : w->capacity_rows;
    keys = keys > w->capacity_keys ? keys : w->capacity_keys;
    mask = mask > w->capacity_mask ? mask : w->capacity_mask;
    train_workspace_free_shared(w, b);
    size_t R = (size_t)rows, K = (size_t)keys, F = (size_t)c->ffn_dim, V_d = (size_t)c->vocab_size;
    size_t QD = (size_t)c->n_heads * c->head_size, KVD = (size_t)c->n_kv_heads * c->head_size;
    w->capacity_rows = rows;
    w->capacity_keys = keys;
    w->capacity_mask = mask;
    w->key_buffer = b->alloc(K * KVD * sizeof(float));
    w->value_buffer = b->alloc(K * KVD * sizeof(float));
    w->d_keys = b->alloc(K * KVD * sizeof(float));
    w->d_values = b->alloc(K * KVD * sizeof(float));
    w->p_target = b->alloc(R * V_d * sizeof(float));
    w->gathered = b->alloc(R * C * sizeof(float));
    w->loss_rows = b->alloc(R * sizeof(int));
    w->target_tokens = b->alloc(R * sizeof(int));
    w->loss_weights = b->alloc(R * sizeof(float));
    w->losses = b->alloc(R * sizeof(float));
    w->argmax = b->alloc(2 * R * sizeof(int));
    w->d_logits = b->alloc(R * V_d * sizeof(float));
    w->d_out_norm = b->alloc(R * C * sizeof(float));
    w->d_h = b->alloc(R * C * sizeof(float));
    w->d_h_norm = b->alloc(R * C * sizeof(float));
    w->d_ffn_hidden = b->alloc(R * F * sizeof(float));
    w->d_gate = b->alloc(R * F * sizeof(float));
    w->d_up = b->alloc(R * F * sizeof(float));
    w->d_attn_out = b->alloc(R * QD * sizeof(float));
    w->d_q = b->alloc(R * QD * sizeof(float));
    w->d_attn_in = b->alloc(R * 2 * C * sizeof(float));
    w->d_half = b->alloc(R * C * sizeof(float));
    w->d_u = b->alloc(R * C * sizeof(float));
    w->host_rows = mallocCheck(R * TAP_LAYERS * C * sizeof(float));
    w->host_mask = mallocCheck(mask);
    w->host_tokens = mallocCheck(R * sizeof(int));
    w->host_positions = mallocCheck(R * sizeof(int));
    w->host_loss_rows = mallocCheck(R * sizeof(int));
    w->host_target_tokens = mallocCheck(R * sizeof(int));
    w->host_loss_weights = mallocCheck(R * sizeof(float));
    w->host_losses = mallocCheck(R * sizeof(float));
    w->host_argmax = mallocCheck(2 * R * sizeof(int));
    w->host_out_norm = mallocCheck(R * C * sizeof(float));
}

// Grows the discard selection to a record's n rejected nodes.
static void discard_selection_reserve(DiscardSelection* d, int n) {
    if (n <= d->capacity) { return; }
    free(d->used);
    free(d->row);
    d->used = mallocCheck((size_t)n * sizeof(int));
    d->row = mallocCheck((size_t)n * sizeof(int));
    d->capacity = n;
}

// ----------------------------------------------------------------------------
// the unroll: masks and loss rows

// The discard nodes in use: all rejected nodes, or per verify pass the top_k by draft score. A node's
// ancestors score at least as high, so the selection keeps every used node's rejected ancestors. The top_k
// are the drafter's of the whole pass, ranked before the trained columns' window is applied: where a better
// node of the pass falls outside the window (it branched off a position the record cut), the window keeps
// fewer than top_k of that pass.
int select_discard_nodes(const Record* record, int top_k, int max_rows, int first_column, int n_columns, int* used,
                         int* row_of, int first_row) {
    int n = 0;
    int pass_start = 0, pass_end = 0; // node i's verify pass: its nodes are contiguous (recorded pass by pass)
    for (int i = 0; i < record->n_discard; i++) {
        const DiscardNode* node = &record->discard[i];
        if (i >= pass_end) {
            pass_start = i;
            for (pass_end = i + 1; pass_end < record->n_discard && record->discard[pass_end].verify_step == node->verify_step;
                 pass_end++) {}
        }
        row_of[i] = -1;
        if (n == max_rows) { continue; }   // (the rest unselected: a node comes after its parent, so none is orphaned)
        // a node needs its whole context inside the trained columns
        if (node->prefix_end <= first_column || node->prefix_end > first_column + n_columns) { continue; }
        if (node->parent >= 0 && row_of[node->parent] < 0) { continue; }
        if (top_k > 0) {
            int better = 0; // rejected nodes of the same pass that outrank this one
            for (int j = pass_start; j < pass_end; j++) {
                const DiscardNode* other = &record->discard[j];
                if (j == i) { continue; }
                better += other->score > node->score || (other->score == node->score && j < i);
            }
            if (better >= top_k) { continue; }
        }
        row_of[i] = first_row + n;
        used[n++] = i;
    }
    return n;
}

// Step k's mask over the key buffer: sequence column t sees block 0 at s <= t and column t of blocks
// 1..k (their row t - chain_first: blocks 1.. start at chain_first); a discard row (step 0 only) sees
// block-0 columns before prefix_end, its rejected ancestors' rows and itself.
void ttt_mask(uint8_t* mask, int k, int rows, int n_columns, int chain_first, const int* block_offset, int n_keys,
              const Record* record, int first_column, const int* discard_used, const int* discard_row) {
    memset(mask, 0, (size_t)rows * n_keys);
    for (int t = 0; t < rows; t++) {
        uint8_t* row = mask + (size_t)t * n_keys;
        if (k > 0 || t < n_columns) {
            int column = k > 0 ? chain_first + t : t, chain_row = column - chain_first;
            for (int s = 0; s <= column; s++) { row[s] = 1; }
            for (int block = 1; block <= k; block++) { row[block_offset[block] + chain_row] = 1; }
        } else {
            int i = discard_used[t - n_columns];
            const DiscardNode* node = &record->discard[i];
            for (int s = 0; s < node->prefix_end - first_column; s++) { row[s] = 1; }
            for (int a = node->parent; a >= 0; a = record->discard[a].parent) { row[discard_row[a]] = 1; }
            row[t] = 1;
        }
    }
}

// ----------------------------------------------------------------------------
// the unroll's plan for one record

int unroll_plan_columns(UnrollPlan* plan, const Record* record, const TrainerSettings* s) {
    // local column t = 0..T-1 pairs the taps g_{f+t} with the token x_{f+t+1}, f = first_column: the
    // context window before the first completion position, then the completion, at most max_positions
    // columns in all (a long prompt is cut before the window; a window that would leave the completion
    // no room is shortened, so that a window near max_positions cannot train the prompt alone; a long
    // completion is cut at its end)
    memset(plan, 0, sizeof(*plan));
    int completion_start = record->n_prompt - 2 > 0 ? record->n_prompt - 2 : 0;
    plan->first_column = completion_start - s->context_window;
    if (plan->first_column < 0) { plan->first_column = 0; }
    if (record->n_committed - plan->first_column > s->max_positions) {
        int room = record->n_committed - s->max_positions;   // the first column that keeps the completion whole
        int first = room < completion_start ? room : completion_start;
        if (first > plan->first_column) { plan->first_column = first; }
    }
    int end = record->n_committed < plan->first_column + s->max_positions ? record->n_committed
                                                                           : plan->first_column + s->max_positions;
    plan->T = end - plan->first_column;
    if (plan->T < 1 || record->n_tokens < end + 1) { return 0; }
    plan->n_steps = s->ttt_length < plan->T ? s->ttt_length : plan->T;
    return 1;
}

int unroll_loss_rows(const UnrollPlan* plan, const Record* record, const TrainerSettings* s, int k, int* rows,
                     float* weights) {
    int n = 0;
    for (int t = k > 0 ? plan->chain_first : 0; t + k + 1 < plan->T; t++) {
        int predicted = plan->first_column + t + k + 2; // the position of the token this row predicts
        int is_prompt = predicted < record->n_prompt;
        if (is_prompt && s->prompt_weight <= 0.0f) { continue; }
        rows[n] = t;
        weights[n] = is_prompt ? s->prompt_weight : 1.0f;
        n++;
    }
    return n;
}

// Steps 1.. from column chain_first on (0: every column), each keeping at least one row
static void unroll_plan_chains(UnrollPlan* plan, int chain_first) {
    if (chain_first <= 0) { return; }
    plan->chain_first = chain_first < plan->T - 1 ? chain_first : plan->T - 1;
    if (plan->n_steps > plan->T - plan->chain_first) { plan->n_steps = plan->T - plan->chain_first; }
}

void unroll_plan_rows(UnrollPlan* plan, const Record* record, const TrainerSettings* s, int* discard_used, int* discard_row) {
    plan->n_discard = s->discard_weight > 0.0f
            ? select_discard_nodes(record, s->discard_top_k, TRAIN_MAX_DISCARD_ROWS, plan->first_column, plan->T, discard_used,
                                   discard_row, plan->T) : 0;
    plan->block_offset[0] = 0;
    for (int k = 0; k < plan->n_steps; k++) {
        plan->rows[k] = k == 0 ? plan->T + plan->n_discard : plan->T - k - plan->chain_first;
        plan->block_offset[k + 1] = plan->block_offset[k] + plan->rows[k];
    }
}

// ----------------------------------------------------------------------------
// the backward of one decoder layer (draft_layer_forward), from d_out (rows, C) to d_u (rows, C);
// accumulates weight gradients, and the key/value gradients of every block this step attended to.
// On return the gradients of this step's own keys/values (block at key_offset) are complete, so they
// are pushed through rope and the k/v projections here too. Backend memory throughout.

static void draft_layer_backward(Trainer* trainer, const DraftActivations* a, const float* d_out, int rows, int key_offset) {
    const Backend* b = trainer->backend;
    const Draft* draft = &trainer->draft;
    const DraftConfig* c = &draft->config;
    const DraftWeights* w = &draft->device_weights;
    DraftWeights* g = &trainer->grad;
    TrainWorkspace* ws = &trainer->work;
    int C = c->dim, NH = c->n_heads, NKV = c->n_kv_heads, HS = c->head_size, F = c->ffn_dim;
    int QD = NH * HS, KVD = NKV * HS, P = key_offset + rows;
    size_t RC = (size_t)rows * C, RF = (size_t)rows * F;

    // out = h + w_down(ffn_hidden): d_h = d_out, d_ffn_hidden = d_out @ w_down
    b->copy(ws->d_h, d_out, RC * sizeof(float));
    b->zero(ws->d_ffn_hidden, RF * sizeof(float));
    b->matmul_backward(ws->d_ffn_hidden, g->w_down, d_out, a->ffn_hidden, w->w_down, rows, F, C);
    // ffn_hidden = silu(gate) * up
    b->zero(ws->d_gate, RF * sizeof(float));
    b->zero(ws->d_up, RF * sizeof(float));
    b->swiglu_backward(ws->d_gate, ws->d_up, ws->d_ffn_hidden, a->ffn_gate, a->ffn_up, rows * F);
    // gate = w_gate h_norm, up = w_up h_norm
    b->zero(ws->d_h_norm, RC * sizeof(float));
    b->matmul_backward(ws->d_h_norm, g->w_gate, ws->d_gate, a->h_norm, w->w_gate, rows, C, F);
    b->matmul_backward(ws->d_h_norm, g->w_up, ws->d_up, a->h_norm, w->w_up, rows, C, F);
    // h_norm = RMSNorm_ffn(h)
    b->rmsnorm_backward(ws->d_h, g->ffn_norm, ws->d_h_norm, a->h, w->ffn_norm, rows, C, c->norm_eps);
    // h = u + wo(attn_out): d_u = d_h, d_attn_out = d_h @ wo
    b->copy(ws->d_u, ws->d_h, RC * sizeof(float));
    b->zero(ws->d_attn_out, (size_t)rows * QD * sizeof(float));
    b->matmul_backward(ws->d_attn_out, g->wo, ws->d_h, a->attn_out, w->wo, rows, QD, C);
    // attention over the key buffer
    b->zero(ws->d_q, (size_t)rows * QD * sizeof(float));
    b->attention_backward(ws->d_q, ws->d_keys, ws->d_values, ws->d_attn_out, a->q, ws->key_buffer, ws->value_buffer,
                          a->mask, rows, P, NH, NKV, HS);
    // this step's keys and queries were rotated: undo, then through the projections from attn_in
    float* d_k = ws->d_keys + (size_t)key_offset * KVD;
    float* d_v = ws->d_values + (size_t)key_offset * KVD;
    b->rope_backward(ws->d_q, ws->d_q, a->positions, rows, NH, HS, c->rope_theta);
    b->rope_backward(d_k, d_k, a->positions, rows, NKV, HS, c->rope_theta);
    b->zero(ws->d_attn_in, (size_t)rows * 2 * C * sizeof(float));
    b->matmul_backward(ws->d_attn_in, g->wq, ws->d_q, a->attn_in, w->wq, rows, 2 * C, QD);
    b->matmul_backward(ws->d_attn_in, g->wk, d_k, a->attn_in, w->wk, rows, 2 * C, KVD);
    b->matmul_backward(ws->d_attn_in, g->wv, d_v, a->attn_in, w->wv, rows, 2 * C, KVD);
    // attn_in row = [RMSNorm_e(e), RMSNorm_u(u)]: each half made contiguous, then its norm's backward over
    // all rows. The embedding is frozen (only its norm's weight learns); u receives the rest.
    b->copy_strided(ws->d_half, ws->d_attn_in, rows, C, C, 2 * C);
    b->rmsnorm_backward(NULL, g->embed_norm, ws->d_half, a->embed, w->embed_norm, rows, C, c->norm_eps);
    b->copy_strided(ws->d_half, ws->d_attn_in + C, rows, C, C, 2 * C);
    b->rmsnorm_backward(ws->d_u, g->hidden_norm, ws->d_half, a->u, w->hidden_norm, rows, C, c->norm_eps);
}

// ----------------------------------------------------------------------------
// one record: forward (and backward), returns the record's loss

// The unroll of one record under settings s: the forward, the losses (returned), and with backward the
// gradients. With predictions (n_steps * T target ids, -1 where a row carries no loss), the draft's
// argmax at every loss row of every step is written there too (the held-back evaluation).
// chain_first: steps 1.. run only the columns from it on (UnrollPlan.chain_first; 0 when training)
static float record_unroll(Trainer* trainer, const TrainerSettings* s, const Record* record, float scale, int backward,
                           TrainStats* stats, int* predictions, int chain_first) {
    const Backend* b = trainer->backend;
    Draft* draft = &trainer->draft;
    const DraftConfig* c = &draft->config;
    const DraftWeights* w = &draft->device_weights;
    // the matrices of the forward: the fp32 weights; an evaluator's forward (no backward) multiplies with its
    // serving copy when it has one (trainer_evaluate_as_served)
    const DraftMatrices* m = !backward && draft->serving_type != TYPE_F32 ? &draft->serving : NULL;
    TrainWorkspace* ws = &trainer->work;
    int C = c->dim, V_d = c->vocab_size, KVD = c->n_kv_heads * c->head_size, G = TAP_LAYERS * C; // G: g's width, 3C
    UnrollPlan plan;
    if (!unroll_plan_columns(&plan, record, s)) { return 0.0f; }
    unroll_plan_chains(&plan, chain_first);
    // the discard nodes first (when the discard loss is on), then the workspace for the rows of step 0 they
    // add: those inside the trained columns and the top-k, not every node a long completion rejected
    DiscardSelection* discard = &trainer->discard;
    if (s->discard_weight > 0.0f) { discard_selection_reserve(discard, record->n_discard); }
    unroll_plan_rows(&plan, record, s, discard->used, discard->row);
    train_workspace_reserve(ws, b, c, &plan);
    int first_column = plan.first_column, T = plan.T, n_steps = plan.n_steps, D = plan.n_discard;
    int chain = plan.chain_first;
    const int* rows = plan.rows;
    const int* block_offset = plan.block_offset;
    int total_keys = block_offset[n_steps];

    // step-0 inputs of fc: the sequence's taps, then each discard node's parent's taps
    record_rows_f32(ws->host_rows, record->features + (size_t)first_column * G, T, G);
    for (int j = 0; j < D; j++) {
        record_rows_f32(ws->host_rows + (size_t)(T + j) * G, record->discard_features + (size_t)discard->used[j] * G, 1, G);
    }
    b->upload(ws->act[0].features, ws->host_rows, (size_t)(T + D) * G * sizeof(float));

    float total_loss = 0.0f;
    float weight_k = 1.0f;
    // The teacher (the target's distribution) of a sequence row depends only on its column j = t + k, and
    // step k's rows are step 0's from column k on: computed once at step 0 (every sequence row, then the
    // discard rows), each later step reads a suffix of them.
    int n_teacher = 0;
    int step0_correct = 0, step0_positions = 0;
    // the gradient of each step's output starts at zero: its loss rows add to it during the forward,
    // the next step's u adds to it during the backward
    if (backward) { for (int k = 0; k < n_steps; k++) { b->zero(ws->d_out[k], (size_t)rows[k] * C * sizeof(float)); } }
    for (int k = 0; k < n_steps; k++, weight_k *= s->step_decay) {
        DraftActivations* a = &ws->act[k];
        int R = rows[k], shift = k > 0 ? chain : 0;   // row t is column t + shift
        for (int t = 0; t < R; t++) {
            if (k > 0 || t < T) {
                ws->host_tokens[t] = record->tokens[first_column + t + shift + k + 1];
                ws->host_positions[t] = first_column + t + shift + k;
            } else {
                const DiscardNode* node = &record->discard[discard->used[t - T]];
                ws->host_tokens[t] = node->token;
                ws->host_positions[t] = node->position - 1;
            }
        }
        b->upload(a->tokens, ws->host_tokens, (size_t)R * sizeof(int));
        b->upload(a->positions, ws->host_positions, (size_t)R * sizeof(int)); // kept: the backward's RoPE reads them
        const float* u;
        if (k == 0) {
            b->matmul_forward(a->u, a->features, m ? m->fc : matrix_f32(w->fc), R, G, C); // u = fc(g)
            u = a->u;
        } else {   // the previous step's rows from this step's first column
            u = ws->act[k - 1].out + (k == 1 ? (size_t)chain * C : 0);
        }
        int P = block_offset[k] + R;
        ttt_mask(ws->host_mask, k, R, T, chain, block_offset, P, record, first_column, discard->used, discard->row);
        b->upload(a->mask, ws->host_mask, (size_t)R * P);
        draft_layer_forward(draft, w, m, a, ws->key_buffer, ws->value_buffer, a->tokens, u, a->positions, a->mask, R,
                            block_offset[k], 0);

        // loss rows: sequence columns with a teacher (completion positions, and prompt positions when
        // prompt_weight > 0), weighted to a weighted mean; then (step 0) the discard rows. host_loss_rows
        // holds columns until the upload below, rows (column - shift) after it.
        int n_loss = unroll_loss_rows(&plan, record, s, k, ws->host_loss_rows, ws->host_loss_weights);
        int n_sequence_loss = n_loss;
        // the next-token loss needs a draft id: a row whose token is outside the draft vocabulary teaches it
        // nothing, and carries no weight (nor a share of the mean's denominator)
        if (s->loss == LOSS_NEXT_TOKEN) {
            for (int i = 0; i < n_sequence_loss; i++) {
                if (draft->t2d[record->tokens[first_column + ws->host_loss_rows[i] + k + 2]] < 0) { ws->host_loss_weights[i] = 0.0f; }
            }
        }
        float weight_sum = 0.0f;
        for (int i = 0; i < n_sequence_loss; i++) {
            weight_sum += ws->host_loss_weights[i];
            if (stats) { stats->n_weighted += ws->host_loss_weights[i] > 0.0f; }
        }
        if (k == 0) { for (int j = 0; j < D; j++) { ws->host_loss_rows[n_loss++] = T + j; } }
        if (n_loss == 0) { continue; }
        // target distributions of the loss rows: softmax over the draft vocabulary of W_lm[d2t] h (step 0)
        for (int i = 0; i < n_loss; i++) {
            int row = ws->host_loss_rows[i];
            if (k == 0) {
                const uint16_t* h = row < T ? record->hidden + (size_t)(first_column + row + 1) * C
                                            : record->discard_hidden + (size_t)discard->used[row - T] * C;
                record_rows_f32(ws->host_rows + (size_t)i * C, h, 1, C);
            }
            ws->host_target_tokens[i] = row < T ? record->tokens[first_column + row + k + 2] : -1;
            ws->host_loss_weights[i] = row < T ? (weight_sum > 0.0f ? scale * weight_k * ws->host_loss_weights[i] / weight_sum : 0.0f)
                                               : scale * s->discard_weight / D;
        }
        if (k == 0) {
            b->upload(ws->gathered, ws->host_rows, (size_t)n_loss * C * sizeof(float));
            // the teacher is the target's, on the target's table (with bf16 products only the draft's matmuls take them)
            trainer->target->backend->matmul_forward(ws->p_target, ws->gathered, matrix_f32(trainer->head_rows), n_loss, C, V_d);
            b->softmax_forward(ws->p_target, ws->p_target, n_loss, V_d);
            n_teacher = n_sequence_loss;
        }
        const float* p_target = ws->p_target + (size_t)(n_teacher - n_sequence_loss) * V_d;   // step 0: the start
        // the draft's logits at the loss rows
        for (int i = 0; i < n_sequence_loss; i++) { ws->host_loss_rows[i] -= shift; }
        b->upload(ws->loss_rows, ws->host_loss_rows, (size_t)n_loss * sizeof(int));
        b->gather_rows(ws->gathered, a->out, ws->loss_rows, n_loss, C);
        draft_head_forward(draft, w, m, a->logits, a->out_norm, ws->gathered, n_loss);
        // the losses (sequence rows and discard rows use their own kinds); the next-token loss's rows outside
        // the draft vocabulary (weight 0, above) take draft id 0
        for (int i = 0; i < n_sequence_loss; i++) {
            int target_id = ws->host_target_tokens[i];
            ws->host_target_tokens[i] = target_id >= 0 ? draft->t2d[target_id] : -1;
            if (s->loss == LOSS_NEXT_TOKEN && ws->host_target_tokens[i] < 0) {
                ws->host_loss_weights[i] = 0.0f;
                ws->host_target_tokens[i] = 0;
            }
        }
        b->upload(ws->target_tokens, ws->host_target_tokens, (size_t)n_loss * sizeof(int));
        b->upload(ws->loss_weights, ws->host_loss_weights, (size_t)n_loss * sizeof(float));
        // one call per kind gives each row's loss and, when training, adds its weighted gradient to d_logits
        float* d_logits = backward ? ws->d_logits : NULL;
        if (backward) { b->zero(ws->d_logits, (size_t)n_loss * V_d * sizeof(float)); }
        b->distribution_loss(ws->losses, d_logits, a->logits, p_target, ws->target_tokens, ws->loss_weights,
                             n_sequence_loss, V_d, s->loss);
        if (n_loss > n_sequence_loss) {
            size_t offset = (size_t)n_sequence_loss * V_d;
            b->distribution_loss(ws->losses + n_sequence_loss, d_logits ? d_logits + offset : NULL, a->logits + offset,
                                 ws->p_target + offset, NULL, ws->loss_weights + n_sequence_loss, n_loss - n_sequence_loss,
                                 V_d, s->discard_loss);
        }
        // the sums on the host, in row order
        b->download(ws->host_losses, ws->losses, (size_t)n_loss * sizeof(float));
        float sequence_part = 0.0f;
        for (int i = 0; i < n_sequence_loss; i++) { sequence_part += ws->host_loss_weights[i] * ws->host_losses[i]; }
        total_loss += sequence_part;
        if (stats) { stats->accepted_loss += sequence_part; }
        if (n_loss > n_sequence_loss) {
            float discard_part = 0.0f;
            for (int i = n_sequence_loss; i < n_loss; i++) { discard_part += ws->host_loss_weights[i] * ws->host_losses[i]; }
            total_loss += discard_part;
            if (stats) { stats->discard_loss += discard_part; stats->n_discard += D; }
        }
        // the feature loss, on the host (a few hundred rows of C: small beside the layer): w * mean((y - h)^2)
        // per sequence row, y = RMSNorm_out(out) and h the target's hidden state at the row's column t + k
        // (the state its teacher distribution comes from), and its gradient w * 2 (y - h) / C into
        // d_out_norm (the LM head's is added to it below)
        int feature_loss = s->feature_weight > 0.0f && n_sequence_loss > 0;
        if (feature_loss) {
            float* y = ws->host_out_norm;
            float* h = ws->host_rows;   // (free again: its rows went up before the layer)
            for (int i = 0; i < n_sequence_loss; i++) {
                int column = ws->host_loss_rows[i] + shift + k;
                record_rows_f32(h + (size_t)i * C, record->hidden + (size_t)(first_column + column + 1) * C, 1, C);
            }
            b->download(y, a->out_norm, (size_t)n_sequence_loss * C * sizeof(float));
            float feature_part = 0.0f;
            for (int i = 0; i < n_sequence_loss; i++) {
                float* yi = y + (size_t)i * C;
                const float* hi = h + (size_t)i * C;
                float weight = s->feature_weight * ws->host_loss_weights[i], squares = 0.0f;
                for (int j = 0; j < C; j++) {
                    float d = yi[j] - hi[j];
                    squares += d * d;
                    yi[j] = weight * 2.0f * d / C;   // the gradient replaces y
                }
                feature_part += weight * squares / C;
            }
            total_loss += feature_part;
            if (stats) { stats->feature_loss += feature_part; }
        }
        if (k == 0 && n_sequence_loss > 0) { // step-0 accuracy: the draft's argmax against the target's
            b->argmax_rows(ws->argmax, a->logits, n_sequence_loss, V_d);
            b->argmax_rows(ws->argmax + n_sequence_loss, ws->p_target, n_sequence_loss, V_d);
            b->download(ws->host_argmax, ws->argmax, (size_t)2 * n_sequence_loss * sizeof(int));
            for (int i = 0; i < n_sequence_loss; i++) { step0_correct += ws->host_argmax[i] == ws->host_argmax[n_sequence_loss + i]; }
        }
        if (k == 0) { step0_positions += n_sequence_loss; }
        if (predictions && n_sequence_loss > 0) { // the draft's guesses, as target ids
            b->argmax_rows(ws->argmax, a->logits, n_sequence_loss, V_d);
            b->download(ws->host_argmax, ws->argmax, (size_t)n_sequence_loss * sizeof(int));
            for (int i = 0; i < n_sequence_loss; i++) {
                predictions[(size_t)k * T + ws->host_loss_rows[i] + shift] = draft->d2t[ws->host_argmax[i]];
            }
        }
        if (backward) {
            // logits = lm_head(RMSNorm_out(out)) over the gathered rows, then scattered back to the loss rows
            b->zero(ws->d_out_norm, (size_t)n_loss * C * sizeof(float));
            if (feature_loss) { b->upload(ws->d_out_norm, ws->host_out_norm, (size_t)n_sequence_loss * C * sizeof(float)); }
            float* d_head = trainer->settings.freeze_lm_head ? NULL : trainer->grad.lm_head; // frozen: stays zero
            b->matmul_backward(ws->d_out_norm, d_head, ws->d_logits, a->out_norm, w->lm_head, n_loss, C, V_d);
            b->zero(ws->d_h, (size_t)n_loss * C * sizeof(float));
            b->rmsnorm_backward(ws->d_h, trainer->grad.output_norm, ws->d_out_norm, ws->gathered, w->output_norm,
                                n_loss, C, c->norm_eps);
            b->scatter_add_rows(ws->d_out[k], ws->d_h, ws->loss_rows, n_loss, C);
        }
    }
    if (stats) { stats->n_positions += step0_positions; stats->step0_accuracy += step0_correct; }
    if (!backward) { return total_loss; }

    // backward, last step first: block k's key/value gradients are complete once step k is reached
    b->zero(ws->d_keys, (size_t)total_keys * KVD * sizeof(float));
    b->zero(ws->d_values, (size_t)total_keys * KVD * sizeof(float));
    for (int k = n_steps - 1; k >= 0; k--) {
        int R = rows[k];
        draft_layer_backward(trainer, &ws->act[k], ws->d_out[k], R, block_offset[k]);
        if (k > 0) {
            float* d_previous = ws->d_out[k - 1] + (k == 1 ? (size_t)chain * C : 0);   // its rows from this step's first column
            b->residual_forward(d_previous, d_previous, ws->d_u, R * C); // d_previous += d_u
        } else {
            // u = fc(features): the features are data
            b->matmul_backward(NULL, trainer->grad.fc, ws->d_u, ws->act[0].features, w->fc, R, G, C);
        }
    }
    return total_loss;
}

static float record_train(Trainer* trainer, const Record* record, float scale, int backward, TrainStats* stats) {
    return record_unroll(trainer, &trainer->settings, record, scale, backward, stats, NULL, 0);
}

// ----------------------------------------------------------------------------
// the draft vocabulary follows the traffic

void trainer_count_tokens(Trainer* trainer, const Record* record) {
    for (int i = 1; i < record->n_tokens; i++) { trainer->token_counts[record->tokens[i]]++; } // the first is never predicted
}

typedef struct { long count; int32_t id; int slot; } VocabEntry;

// the eviction order: least counted first, then the highest id (BPE numbers later merges higher)
static int vocab_evict_first(const void* a, const void* b) {
    const VocabEntry* x = a; const VocabEntry* y = b;
    if (x->count != y->count) { return x->count < y->count ? -1 : 1; }
    return x->id > y->id ? -1 : (x->id < y->id);
}
// the admission order: most counted first, then the lowest id
static int vocab_admit_first(const void* a, const void* b) {
    const VocabEntry* x = a; const VocabEntry* y = b;
    if (x->count != y->count) { return x->count > y->count ? -1 : 1; }
    return x->id < y->id ? -1 : (x->id > y->id);
}

int vocabulary_swaps(const long* counts, const int32_t* d2t, const int32_t* t2d, int V_d, int V, int* slots,
                     int32_t* ids) {
    VocabEntry* members = mallocCheck((size_t)V_d * sizeof(VocabEntry));
    for (int i = 0; i < V_d; i++) { members[i] = (VocabEntry){counts[d2t[i]], d2t[i], i}; }
    VocabEntry* candidates = mallocCheck((size_t)(V - V_d + 1) * sizeof(VocabEntry)); // at most the ids outside
    int n_candidates = 0;
    for (int id = 0; id < V; id++) {
        if (t2d[id] < 0 && counts[id] >= VOCAB_MIN_COUNT) { candidates[n_candidates++] = (VocabEntry){counts[id], id, -1}; }
    }
    qsort(members, (size_t)V_d, sizeof(VocabEntry), vocab_evict_first);
    qsort(candidates, (size_t)n_candidates, sizeof(VocabEntry), vocab_admit_first);
    // both orders are monotone: once a candidate is not more than twice its evictee, none after it is
    int n = 0;
    while (n < n_candidates && n < V_d && candidates[n].count > 2 * members[n].count) {
        slots[n] = members[n].slot;
        ids[n] = candidates[n].id;
        n++;
    }
    free(members);
    free(candidates);
    return n;
}

// The target's LM-head rows of n target ids, (n, C) on the host (malloc'd).
static float* target_head_rows(const Trainer* trainer, const int32_t* ids, int n) {
    float* rows = mallocCheck((size_t)n * trainer->draft.config.dim * sizeof(float));
    Error err;
    if (target_read_rows(trainer->target, target_output_name(trainer->target), ids, n, rows, &err) != 0) {
        fprintf(stderr, "error: internal: reading the target's LM-head rows: %s\n", err.message);
        exit(EXIT_FAILURE); // the target loaded this tensor: a program bug
    }
    return rows;
}

int trainer_adapt_vocabulary(Trainer* trainer) {
    Draft* draft = &trainer->draft;
    const Backend* b = trainer->backend;
    int C = draft->config.dim, V_d = draft->config.vocab_size, V = draft->config.target_vocab_size;
    int* slots = mallocCheck((size_t)V_d * sizeof(int));
    int32_t* ids = mallocCheck((size_t)V_d * sizeof(int32_t));
    int n = vocabulary_swaps(trainer->token_counts, draft->d2t, draft->t2d, V_d, V, slots, ids);
    if (n > 0) {
        float* rows = target_head_rows(trainer, ids, n);
        float* zeros = callocCheck((size_t)C, sizeof(float));
        size_t head = (size_t)(draft->weights.lm_head - draft->weight_arena); // the LM head's offset in every arena
        size_t row_bytes = (size_t)C * sizeof(float);
        for (int i = 0; i < n; i++) {
            size_t at = (size_t)slots[i] * C;
            draft->t2d[draft->d2t[slots[i]]] = -1;
            draft->d2t[slots[i]] = ids[i];
            draft->t2d[ids[i]] = slots[i];
            memcpy(draft->weights.lm_head + at, rows + (size_t)i * C, row_bytes);
            if (!b->host_memory) { b->upload(draft->device_weights.lm_head + at, rows + (size_t)i * C, row_bytes); }
            b->upload(trainer->head_rows + at, rows + (size_t)i * C, row_bytes);
            // its moments start at zero under the global step's bias correction, so its first steps are
            // 2.5-6.5 times the learning rate late in a run; moments at the staying rows' means instead
            // learned no better (docs/learning-study.md, twelfth session), so they stay at zero
            b->upload(trainer->adam_m + head + at, zeros, row_bytes);
            b->upload(trainer->adam_v + head + at, zeros, row_bytes);
        }
        trainer->vocabulary_swaps += n;
        free(rows);
        free(zeros);
    }
    free(slots);
    free(ids);
    return n;
}

// ----------------------------------------------------------------------------
// the held-back evaluation: greedy chain acceptance, replayed exactly from a record

void trainer_set_weights(Trainer* trainer, const float* weights, const int32_t* d2t) {
    Draft* draft = &trainer->draft;
    int C = draft->config.dim, V_d = draft->config.vocab_size;
    memcpy(draft->weight_arena, weights, draft->n_weight_floats * sizeof(float));
    draft_upload_weights(draft); // on a host-memory backend the arena itself
    // the vocabulary the weights go with: the teacher's rows of the entries that changed follow
    int* slots = mallocCheck((size_t)V_d * sizeof(int));
    int32_t* ids = mallocCheck((size_t)V_d * sizeof(int32_t));
    int n = 0;
    for (int i = 0; i < V_d; i++) {
        if (draft->d2t[i] != d2t[i]) { slots[n] = i; ids[n] = d2t[i]; n++; }
    }
    if (n > 0) {
        float* rows = target_head_rows(trainer, ids, n);
        for (int i = 0; i < n; i++) {
            trainer->backend->upload(trainer->head_rows + (size_t)slots[i] * C, rows + (size_t)i * C, (size_t)C * sizeof(float));
        }
        free(rows);
        draft_use_vocabulary(draft, d2t);
    }
    free(slots);
    free(ids);
}

// An evaluator measures the draft as served: its forward multiplies with a copy of the weights in the serving
// draft's type (its Draft.serving_type: by default Q8_0 on the int8 table), made now and again by every trainer_set_weights,
// as a serving draft's is at every hot swap. (Against the fp32 weights, the tiny models' held-back replay
// differed from serving's in 2 of 18 requests with a Q4_1 copy; it matched a Q8_0 copy's only while the
// rounding flipped no choice.) serving_type TYPE_F32: the fp32 weights.
void trainer_evaluate_as_served(Trainer* trainer, int serving_type) {
    draft_serve_as(&trainer->draft, serving_type);
}

// The settings and plan of trainer_evaluate's unroll of `depth` steps over a record (0: nothing to measure)
static int evaluate_plan(const Trainer* trainer, const Record* record, int depth, TrainerSettings* s, UnrollPlan* plan) {
    if (depth < 1) {   // (callers resolve the shape first: a program bug)
        fprintf(stderr, "error: internal: trainer_evaluate at depth %d; expected 1 to %d\n", depth, TTT_MAX_STEPS);
        exit(EXIT_FAILURE);
    }
    *s = trainer->settings;
    s->ttt_length = depth < TTT_MAX_STEPS ? depth : TTT_MAX_STEPS;
    s->prompt_weight = 0.0f;
    s->discard_weight = 0.0f;
    s->feature_weight = 0.0f;   // (its loss is not used here: only the guesses)
    // serving's draft attends to every prompt position: so does the replay (the training window is narrower)
    s->context_window = record->n_prompt;
    s->max_positions = record->n_committed;
    if (!unroll_plan_columns(plan, record, s)) { return 0; }
    // steps 1.. need only the columns of the roots, from the last prompt position on (their chains see
    // step 0's keys over the whole prefix and their own columns' keys of the steps before)
    unroll_plan_chains(plan, record->n_prompt - 1 - plan->first_column);
    unroll_plan_rows(plan, record, s, NULL, NULL);
    return 1;
}

// Whether an unroll's last step, which attends to every step's keys, fits the table's attention (the
// evaluation's: the whole record at step 0, then each step's completion columns, about n_committed + (depth -
// 1) * completion, past a serving pass's context and tree)
static int plan_fits_attention(const Trainer* trainer, const UnrollPlan* plan) {
    const Backend* b = trainer->backend;
    return b->attention_max_slots == NULL ||
           plan->block_offset[plan->n_steps] <= b->attention_max_slots(trainer->draft.config.head_size);
}

int trainer_evaluate_fits(const Trainer* trainer, const Record* record, int depth) {
    TrainerSettings s;
    UnrollPlan plan;
    return !evaluate_plan(trainer, record, depth, &s, &plan) || plan_fits_attention(trainer, &plan);
}

int trainer_evaluate(Trainer* trainer, const Record* record, int depth, long* emitted, long* passes) {
    // the unroll of `depth` steps over the completion, teacher-forced: while the draft's guesses are right
    // they ARE the teacher's tokens, so step k at column t is exactly what serving drafts k+1 tokens after
    // a root at position t + 1 (the mask and positions of training-time test are those of drafting)
    TrainerSettings s;
    UnrollPlan plan;
    if (!evaluate_plan(trainer, record, depth, &s, &plan)) { return 0; }
    if (!plan_fits_attention(trainer, &plan)) {   // (callers leave such records out: a program bug)
        fprintf(stderr, "error: internal: trainer_evaluate: the unroll of a record of %d tokens at depth %d attends to "
                "%d slots, more than the %s table's attention takes\n", record->n_committed, depth,
                plan.block_offset[plan.n_steps], trainer->backend->name);
        exit(EXIT_FAILURE);
    }
    int* predictions = mallocCheck((size_t)s.ttt_length * plan.T * sizeof(int));
    for (size_t i = 0; i < (size_t)s.ttt_length * plan.T; i++) { predictions[i] = -1; }
    record_unroll(trainer, &s, record, 1.0f, 0, NULL, predictions, record->n_prompt - 1 - plan.first_column);
    // generation replayed: the first completion token comes from the prefill; then each pass from root
    // m drafts x_{m+1..m+depth} (column m - 1 - first_column, steps 0..depth-1), accepts the agreeing
    // prefix a, and emits a + 1 tokens (the bonus is the target's own next token)
    int n_steps = plan.n_steps;
    for (int m = record->n_prompt; m < record->n_tokens - 1; ) {
        int t = m - 1 - plan.first_column, accepted = 0;
        while (accepted < n_steps && m + accepted + 1 < record->n_tokens - 1 && t >= 0 && t < plan.T &&
               predictions[(size_t)accepted * plan.T + t] == record->tokens[m + accepted + 1]) {
            accepted++;
        }
        *emitted += accepted + 1;
        *passes += 1;
        m += accepted + 1;
    }
    free(predictions);
    return 1;
}

// ----------------------------------------------------------------------------
// one optimiser step over a batch of records

// Linear warm-up over warmup_steps (step s of it, from 0, at (s + 1) / warmup_steps of the setting: the first step
// already moves), then the setting; with decay_steps, a cosine from the setting after the warm-up to 0 at step
// decay_steps (SpecForge's offline schedule): the last step's rate is small, not zero, and past decay_steps the
// rate stays 0.
float trainer_learning_rate(const Trainer* trainer) {
    const TrainerSettings* s = &trainer->settings;
    if (s->warmup_steps > 0 && trainer->step < s->warmup_steps) {
        return s->learning_rate * (trainer->step + 1) / s->warmup_steps;
    }
    if (s->decay_steps > s->warmup_steps) {
        double progress = (double)(trainer->step - s->warmup_steps) / (s->decay_steps - s->warmup_steps);
        if (progress >= 1.0) { return 0.0f; }
        return (float)(s->learning_rate * 0.5 * (1.0 + cos(M_PI * progress)));
    }
    return s->learning_rate;
}

long trainer_step_rows(Trainer* trainer, Record* const* records, int n_records) {
    const TrainerSettings* s = &trainer->settings;
    DiscardSelection* discard = &trainer->discard;
    long rows = 0;
    for (int i = 0; i < n_records; i++) {
        UnrollPlan plan;
        if (!unroll_plan_columns(&plan, records[i], s)) { continue; }
        if (s->discard_weight > 0.0f) { discard_selection_reserve(discard, records[i]->n_discard); }
        unroll_plan_rows(&plan, records[i], s, discard->used, discard->row);
        rows += plan.block_offset[plan.n_steps];
    }
    return rows;
}

// Whether a record gives a step any loss row: columns, and a weighted row at step 0 (a prompt row at
// --prompt-weight 0 has none; nor a record of one column), or rejected nodes for the discard loss. (With the
// next-token loss a row whose target is outside the draft vocabulary still counts: known only in the step.)
static int record_has_loss_rows(const Record* record, const TrainerSettings* s) {
    UnrollPlan plan;
    if (!unroll_plan_columns(&plan, record, s)) { return 0; }
    if (s->discard_weight > 0.0f && record->n_discard > 0) { return 1; }
    int* rows = mallocCheck((size_t)plan.T * sizeof(int));
    float* weights = mallocCheck((size_t)plan.T * sizeof(float));
    int n = unroll_loss_rows(&plan, record, s, 0, rows, weights);
    free(rows);
    free(weights);
    return n > 0;
}

int trainer_step(Trainer* trainer, Record* const* records, int n_records, TrainStats* stats) {
    const Backend* b = trainer->backend;
    const TrainerSettings* s = &trainer->settings;
    size_t n = trainer->draft.n_weight_floats;
    memset(stats, 0, sizeof(*stats));
    b->zero(trainer->grads, n * sizeof(float));
    // the batch's mean over the records that have something to train (a record too short for any loss row,
    // counted in the divisor, once scaled the loss and the gradient down by the batch's share of such records)
    int n_trainable = 0;
    for (int i = 0; i < n_records; i++) { n_trainable += record_has_loss_rows(records[i], s); }
    float scale = n_trainable > 0 ? 1.0f / n_trainable : 0.0f;
    for (int i = 0; i < n_records; i++) { stats->loss += record_train(trainer, records[i], scale, 1, stats); }
    stats->step0_accuracy = stats->n_positions ? stats->step0_accuracy / stats->n_positions : 0.0f;
    double norm = sqrt(b->sum_squares(trainer->grads, n));
    stats->grad_norm = (float)norm;
    if (!isfinite(stats->loss) || !isfinite(norm)) { // the weights (host and backend) stay as they are
        stats->rejected = 1;
        trainer->rejected_updates++;
        return 1;
    }
    // a batch without a single loss row of any weight (records too short, only prompt rows at --prompt-weight 0,
    // or, with the next-token loss, only tokens outside the draft vocabulary) has nothing to teach: AdamW's
    // moments would still move every weight, and the step count and warm-up advance
    if (stats->n_weighted == 0 && stats->n_discard == 0) { return 2; }
    // clipping: the optimiser takes each gradient times the factor (one pass over the weights fewer than
    // scaling the gradients in place first, which it equals bit for bit)
    float clip = s->max_grad_norm > 0.0f && norm > s->max_grad_norm ? (float)(s->max_grad_norm / norm) : 1.0f;
    stats->clip_factor = clip;
    float learning_rate = trainer_learning_rate(trainer);
    trainer->step++;
    // the backend's arena: the host arena itself on a host-memory backend
    float* weights = b->host_memory ? trainer->draft.weight_arena : trainer->draft.device_arena;
    // a frozen LM head (the arena's last tensor) is left out: its gradient is zero, but weight decay would
    // still shrink it
    size_t n_update = s->freeze_lm_head ? (size_t)(trainer->draft.weights.lm_head - trainer->draft.weight_arena) : n;
    b->adamw_update(weights, trainer->grads, clip, trainer->adam_m, trainer->adam_v, n_update, learning_rate, s->beta1,
                    s->beta2, s->adam_eps, s->weight_decay, trainer->step);
    // the new weights on the host, where they are published and saved (a CPU backend updated them there)
    b->download(trainer->draft.weight_arena, weights, n * sizeof(float));
    return 0;
}
