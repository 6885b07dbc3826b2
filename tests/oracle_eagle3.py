#!/usr/bin/env python3
"""oracle_eagle3.py: an independent implementation of the EAGLE-3 draft, its training-time-test (TTT) unroll
and its loss, in numpy (float64), run on an `aurora dump` file and compared with what the C computed there.

usage: python3 tests/oracle_eagle3.py DUMP.safetensors [--negative-control mask|position] [--fd-checks N] [--quiet]

Written from the published semantics (SpecForge `specforge/modeling/draft/llama3_eagle.py` and SGLang
`models/llama_eagle3.py` as ../shared/reference/eagle3_formats.md and aurora_research.md sections 2-3
describe them), not from the C: the C keeps one flat key buffer and one (rows, keys) mask per step; this
file follows SpecForge's SDPA formulation (a dense causal block over the step-0 keys plus one dot product per
later block, softmaxed jointly), works in Hugging Face's layout (rotate_half RoPE on the q_proj / k_proj rows
as the dump stores them) and in float64, and takes from the dump only inputs: the draft's weights, the
request's tokens, the target's features and final hidden states, the embedding rows, the target's LM head
rows, and the run's settings (its metadata).

What it checks (the tolerance family of every comparison is compare_dump.py's, the C table's copy):
  1. drafting: every draft_forward call of the first proposal. Extend calls: tokens x_{t+1}, positions t,
     causal mask, u = fc(g_t) from the live features of the target's pass (the drafter reads them in fp32;
     the request's record keeps them rounded to fp16, so the two must agree after that rounding, exactly);
     expand calls: u = the oracle's own output at
     each candidate's parent, position = root position - 1 + depth, the mask (the prefix, the candidate's
     expanded ancestors, itself) from the candidate tree; every intermediate (u, attn_in, q, k, v,
     attn_out, h, ..., logits). Then the drafting decisions: each node's children are the top-K of its
     logits (d2t-mapped, scores = parent score + log_softmax), the tree is the N-1 best candidates, the
     verify pass's tokens, positions, parents and tree mask follow from it, and greedy acceptance from the
     verify logits (path, bonus, emitted tokens);
  2. the TTT unroll of the trainer step, step by step: tokens (teacher-forced, shifted k+1), position ids
     shifted by k, the EAGLE-3 mask (causal over the step-0 keys, plus only the same column in each later
     block; compared with the C's in its flat layout), every intermediate, the loss rows, the teacher
     p = softmax(W_lm[d2t] h_{t+k+1}) over the draft vocabulary, each row's loss, L_k (the weighted mean
     over the valid positions) and the loss sum_k 0.8^k L_k;
  3. gradients: central finite differences of the oracle's loss (float64) for every draft tensor: along
     the C's gradient direction, along a random direction, and at its largest and at random elements;
  4. the step: global-norm clipping and AdamW from zero moments, applied to the C's gradients, against the
     C's updated weights;
  5. NEGATIVE CONTROLS: the same unroll with a deliberately wrong mask (later blocks causal over all
     earlier columns, instead of the same column only) and with position ids not shifted by k: each
     must make the comparison FAIL, and this program fails if either passes. --negative-control X runs
     the whole comparison with defect X instead (its exit status is then 1: the comparison caught it).

Valid positions (the loss mask): row t of step k predicts the token at position first_column + t + k + 2; it
carries a loss when the target's hidden state at first_column + t + k + 1 was recorded (the teacher
exists) and the predicted token is a completion token (weight 1) or a prompt token with --prompt-weight
> 0 (that weight): the "clean" mask of aurora_research.md 2.5, which is what this project trains with.
The released Aurora/SpecForge code masks by the loss mask shifted by k instead (two positions earlier) and,
with a pruned vocabulary, drops positions whose target argmax is outside it; we do neither (stated in the
README). The discard (rejected-branch) loss is not implemented here: a dump with --discard-weight > 0 is
refused.

Exit status is the verdict: 0 everything agrees and both negative controls were caught, 1 otherwise.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import compare_dump  # noqa: E402  (the safetensors reader, the tolerance table, the comparison rule)

WEIGHT_NAMES = [
    "fc.weight", "midlayer.input_layernorm.weight", "midlayer.hidden_norm.weight",
    "midlayer.self_attn.q_proj.weight", "midlayer.self_attn.k_proj.weight", "midlayer.self_attn.v_proj.weight",
    "midlayer.self_attn.o_proj.weight", "midlayer.post_attention_layernorm.weight", "midlayer.mlp.gate_proj.weight",
    "midlayer.mlp.up_proj.weight", "midlayer.mlp.down_proj.weight", "norm.weight", "lm_head.weight",
]


# ---- the EAGLE-3 draft layer (SpecForge LlamaForCausalLMEagle3 / SGLang LlamaForCausalLMEagle3) --------------
class Config:
    def __init__(self, config):
        d = config["draft_config"]
        self.dim, self.n_heads, self.n_kv_heads = d["dim"], d["n_heads"], d["n_kv_heads"]
        self.head_size, self.vocab_size = d["head_size"], d["vocab_size"]
        self.rope_theta, self.eps = float(d["rope_theta"]), float(d["norm_eps"])


def rms_norm(x, weight, eps):
    """LlamaRMSNorm: weight * x / sqrt(mean(x^2) + eps)."""
    return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x, positions, theta):
    """Hugging Face LlamaRotaryEmbedding + apply_rotary_pos_emb. x: (heads, T, HS); positions: (T,)."""
    head_size = x.shape[-1]
    inv_freq = 1.0 / (theta ** (np.arange(0, head_size, 2, dtype=np.float64) / head_size))
    angles = np.outer(np.asarray(positions, dtype=np.float64), inv_freq)     # (T, HS/2)
    emb = np.concatenate([angles, angles], axis=-1)                          # (T, HS)
    return x * np.cos(emb)[None] + rotate_half(x) * np.sin(emb)[None]


def silu(x):
    return x / (1.0 + np.exp(-x))


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def layer_inputs(w, cfg, embed, u, positions):
    """The decoder layer up to q, k, v: x = concat(input_layernorm(e), hidden_norm(u)), embedding first;
    q, k after RoPE, as (heads, T, HS)."""
    T = u.shape[0]
    attn_in = np.concatenate([rms_norm(embed, w["midlayer.input_layernorm.weight"], cfg.eps),
                              rms_norm(u, w["midlayer.hidden_norm.weight"], cfg.eps)], axis=-1)
    q = (attn_in @ w["midlayer.self_attn.q_proj.weight"].T).reshape(T, cfg.n_heads, cfg.head_size).transpose(1, 0, 2)
    k = (attn_in @ w["midlayer.self_attn.k_proj.weight"].T).reshape(T, cfg.n_kv_heads, cfg.head_size).transpose(1, 0, 2)
    v = (attn_in @ w["midlayer.self_attn.v_proj.weight"].T).reshape(T, cfg.n_kv_heads, cfg.head_size).transpose(1, 0, 2)
    q = apply_rope(q, positions, cfg.rope_theta)
    k = apply_rope(k, positions, cfg.rope_theta)
    return attn_in, q, k, v


def layer_outputs(w, cfg, u, attn_heads, record):
    """The rest of the layer from the attention output (heads, T, HS): o_proj, residual on u (before its
    norm), post_attention_layernorm, SwiGLU MLP, residual."""
    T = u.shape[0]
    attn_out = attn_heads.transpose(1, 0, 2).reshape(T, cfg.n_heads * cfg.head_size)
    h = u + attn_out @ w["midlayer.self_attn.o_proj.weight"].T
    h_norm = rms_norm(h, w["midlayer.post_attention_layernorm.weight"], cfg.eps)
    gate = h_norm @ w["midlayer.mlp.gate_proj.weight"].T
    up = h_norm @ w["midlayer.mlp.up_proj.weight"].T
    hidden = silu(gate) * up
    down = hidden @ w["midlayer.mlp.down_proj.weight"].T
    out = h + down
    if record is not None:
        record.update(attn_out=attn_out, h=h, h_norm=h_norm, ffn_gate=gate, ffn_up=up, ffn_hidden=hidden,
                      ffn_down_out=down, out=out)
    return out


def head(w, cfg, out):
    """logits = lm_head(norm(out)) over the draft vocabulary."""
    out_norm = rms_norm(out, w["norm.weight"], cfg.eps)
    return out_norm, out_norm @ w["lm_head.weight"].T


def as_record_keeps(x):
    """x rounded to fp16 as the C's record stores target states: round to nearest even, saturating at
    +-65504 (numpy would overflow to inf there), NaN kept; back to float32."""
    x = np.asarray(x, dtype=np.float32)
    return np.clip(x, -65504.0, 65504.0).astype(np.float16).astype(np.float32)


def repeat_kv(x, groups):
    return np.repeat(x, groups, axis=0)


def heads_to_rows(x):
    """(heads, T, HS) -> (T, heads*HS)"""
    return x.transpose(1, 0, 2).reshape(x.shape[1], -1)


# ---- the TTT unroll (SpecForge OnlineEagle3Model.forward + LlamaAttention's SDPA path) ---------------------------
class Unroll:
    """The request's training columns and the settings: what the unroll reads."""

    def __init__(self, tensors, config, cfg):
        request, trainer = config["request"], config["trainer"]
        self.cfg = cfg
        self.tokens = tensors["request.tokens"].astype(np.int64)
        self.features = tensors["request.features"].astype(np.float64)
        self.hidden = tensors["request.hidden"].astype(np.float64)
        self.embeddings = tensors["request.token_embeddings"].astype(np.float64)   # Emb(tokens[i]) at row i
        self.target_head = tensors["request.target_head"].astype(np.float64)
        self.d2t = tensors["vocab.d2t"].astype(np.int64)
        self.n_prompt, self.n_committed = request["n_prompt"], request["n_committed"]
        self.steps_wanted = trainer["ttt_length"]
        self.decay = float(trainer["step_decay"])
        self.loss_kind = trainer["loss"]
        self.prompt_weight = float(trainer["prompt_weight"])
        if float(trainer["discard_weight"]) > 0:
            print("oracle_eagle3: the dump was made with --discard-weight > 0; the oracle implements the accepted-path "
                  "loss only (make the dump without it)", file=sys.stderr)
            sys.exit(2)
        # the columns: the trainer's context window before the completion (first_column), then the completion
        n_columns = min(self.n_committed, trainer["max_positions"])
        self.first = max(0, self.n_prompt - 2 - trainer["context_window"])
        self.T = n_columns - self.first
        self.n_steps = min(self.steps_wanted, self.T)
        self.t2d = {int(target): i for i, target in enumerate(self.d2t)}

    def step_inputs(self, k, position_shift=True):
        """Step k, all T columns (SpecForge keeps T rows per step, the tail padded): the teacher-forced token
        ids x_{first+t+k+1} (-1 past the sequence), their embeddings (zero rows there), position ids."""
        T, first = self.T, self.first
        index = first + np.arange(T) + k + 1
        valid = index < len(self.tokens)
        ids = np.where(valid, self.tokens[np.minimum(index, len(self.tokens) - 1)], -1)
        embed = np.where(valid[:, None], self.embeddings[np.minimum(index, len(self.tokens) - 1)], 0.0)
        positions = first + np.arange(T) + (k if position_shift else 0)
        return ids, embed, positions

    def loss_rows(self, k):
        """(rows, weights): row t predicts the token at first + t + k + 2, its teacher is the target at
        first + t + k + 1 (recorded: t + k + 1 < T); it counts with weight 1 for a completion token,
        prompt_weight for a prompt token."""
        rows, weights = [], []
        for t in range(self.T):
            if t + k + 1 >= self.T:
                break
            predicted = self.first + t + k + 2
            weight = 1.0 if predicted >= self.n_prompt else self.prompt_weight
            if weight > 0:
                rows.append(t)
                weights.append(weight)
        return np.array(rows, dtype=np.int64), np.array(weights)

    def teacher(self, k, rows):
        """p = softmax over the draft vocabulary of W_lm[d2t] h_{first + t + k + 1}."""
        h = self.hidden[self.first + rows + k + 1]
        return np.exp(log_softmax(h @ self.target_head.T))

    def row_losses(self, logits, p, k, rows):
        log_q = log_softmax(logits)
        if self.loss_kind == "fkl":     # forward KL as SpecForge computes it: soft cross-entropy
            return -(p * log_q).sum(axis=-1), None
        if self.loss_kind == "rkl":     # KL(q || p)
            q = np.exp(log_q)
            return (q * (log_q - np.log(np.maximum(p, 1e-30)))).sum(axis=-1), None
        # next token: -log q(x); a token outside the draft vocabulary counts nothing (nor in the mean's denominator)
        targets = [self.t2d.get(int(self.tokens[self.first + t + k + 2]), -1) for t in rows]
        losses = np.array([-log_q[i, j] if j >= 0 else 0.0 for i, j in enumerate(targets)])
        return losses, np.array([j >= 0 for j in targets], dtype=np.float64)

    def run(self, w, defect=None, collect=False):
        """The unroll: returns (loss = sum_k decay^k L_k, [per-step records] when collect)."""
        cfg = self.cfg
        groups = cfg.n_heads // cfg.n_kv_heads
        scale = 1.0 / np.sqrt(cfg.head_size)
        T = self.T
        causal = np.tril(np.ones((T, T), dtype=bool))
        keys, values = [], []                      # cache_hidden: one (NH, T, HS) block per step, kv repeated
        u = self.features[self.first:self.first + T] @ w["fc.weight"].T     # u = fc(g), step 0 only
        total, steps = 0.0, []
        for k in range(self.n_steps):
            ids, embed, positions = self.step_inputs(k, position_shift=defect != "position")
            attn_in, q, key, value = layer_inputs(w, cfg, embed, u, positions)
            keys.append(repeat_kv(key, groups))
            values.append(repeat_kv(value, groups))
            # block 0: q . k0 over s <= t; blocks 1..k: q . k_i at the same column only (SpecForge's SDPA path)
            scores = [np.where(causal[None], q @ keys[0].transpose(0, 2, 1) * scale, -np.inf)]
            for i in range(1, k + 1):
                if defect == "mask":   # NEGATIVE CONTROL: later blocks causal over every earlier column
                    scores.append(np.where(causal[None], q @ keys[i].transpose(0, 2, 1) * scale, -np.inf))
                else:
                    scores.append(((q * keys[i]).sum(axis=-1) * scale)[..., None])
            joint = np.concatenate(scores, axis=-1)
            joint = np.exp(joint - joint.max(axis=-1, keepdims=True))
            joint /= joint.sum(axis=-1, keepdims=True)
            attn = joint[..., :T] @ values[0]
            offset = T
            for i in range(1, k + 1):
                width = scores[i].shape[-1]
                if width == 1:
                    attn = attn + joint[..., offset:offset + 1] * values[i]
                else:
                    attn = attn + joint[..., offset:offset + width] @ values[i]
                offset += width
            record = {} if collect else None
            out = layer_outputs(w, cfg, u, attn, record)
            rows, weights = self.loss_rows(k)
            step = {"ids": ids, "positions": positions, "rows": rows, "weights": weights}
            if len(rows):
                out_norm, logits = head(w, cfg, out[rows])
                p = self.teacher(k, rows)
                losses, counted = self.row_losses(logits, p, k, rows)
                effective = weights * counted if counted is not None else weights
                step_loss = float((effective * losses).sum() / effective.sum()) if effective.sum() > 0 else 0.0
                total += self.decay ** k * step_loss
                step.update(out_norm=out_norm, logits=logits, p=p, losses=losses, loss=step_loss,
                            counted=np.ones(len(rows), dtype=bool) if counted is None else counted > 0)
            if collect:
                step.update(record, u=u, embed=embed, attn_in=attn_in, q=heads_to_rows(q), k=heads_to_rows(key),
                            v=heads_to_rows(value))
                steps.append(step)
            u = out                                  # the next step reads this step's hidden state
        return total, steps


# ---- the comparisons --------------------------------------------------------------------------------------------
def group_of(name, family):
    """Which row of the summary a comparison belongs to."""
    last = name.split(" ")[0].split(".")[-1]
    if family == "exact":
        return "integers and copied inputs (ids, positions, masks, decisions, g, e)"
    if name.startswith("drafting.candidate_scores"):
        return "drafting: candidate scores (log-probabilities)"
    if name.startswith("drafting."):
        return "drafting: logits" if last in ("logits", "out_norm") else "drafting: layer activations and caches"
    if name.startswith("train.grad."):
        return "gradients: C vs central differences"
    if name.startswith("train.updated.") or name in ("train.grad_norm", "train.clip_factor"):
        return "clipping + AdamW step"
    if last in ("p_target", "row_losses", "loss", "accepted_loss"):
        return "unroll: teacher, row losses, L_k, total loss"
    if last in ("logits", "out_norm"):
        return "unroll: logits"
    return "unroll: layer activations"


class Checker:
    def __init__(self, quiet=False):
        self.failed, self.passed, self.quiet = [], 0, quiet
        self.worst = {}   # summary group: (max |diff|, name, family)
        self.failed_values = []   # failed comparisons of real values (not integers)

    def compare(self, name, got, ref, family=None):
        """got: the C's value (the dump), ref: the oracle's."""
        ok, max_diff, family = compare_dump.compare_tensor(name, np.asarray(got), np.asarray(ref), family=family,
                                                           out=sys.stdout, label="%s (C vs oracle)" % name)
        group = group_of(name, family)
        if max_diff > self.worst.get(group, (-1.0, "", ""))[0]:
            self.worst[group] = (max_diff, name, family)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
            if family != "exact":
                self.failed_values.append(name)
        return ok

    def require(self, condition, message):
        if condition:
            self.passed += 1
        else:
            self.failed.append(message)
            print("  FAIL: %s" % message)


def attend(q, keys, values, mask, groups, scale):
    """Masked attention of T queries over a cache: q (NH, T, HS), keys/values (NKV, P, HS), mask (T, P) bool."""
    k = repeat_kv(keys, groups)
    v = repeat_kv(values, groups)
    scores = np.where(mask[None], q @ k.transpose(0, 2, 1) * scale, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores @ v


def top_k(logits, k):
    """The k largest, best first, ties to the lowest index."""
    order = np.lexsort((np.arange(len(logits)), -logits.astype(np.float64)))
    return order[:k]


def check_drafting(tensors, config, cfg, w, check):
    """1. The first proposal's draft_forward calls, then its tree, verify-pass inputs and acceptance."""
    tokens = tensors["request.tokens"]
    n_prompt = config["request"]["n_prompt"]
    K = config["tree"]["k"]
    d2t = tensors["vocab.d2t"]
    groups, scale = cfg.n_heads // cfg.n_kv_heads, 1.0 / np.sqrt(cfg.head_size)
    cand_tokens = tensors["drafting.candidate_tokens"]
    cand_parents = tensors["drafting.candidate_parents"]
    cand_depths = tensors["drafting.candidate_depths"]
    cand_slots = tensors["drafting.candidate_slots"]
    cand_scores = tensors["drafting.candidate_scores"].astype(np.float64)
    n_slots = tensors["drafting.key_cache"].shape[0]
    cache_k = np.zeros((cfg.n_kv_heads, n_slots, cfg.head_size))
    cache_v = np.zeros((cfg.n_kv_heads, n_slots, cfg.head_size))
    root_position = n_prompt                     # the root is the first generated token, at position n_prompt
    root_out, out_of_candidate, logits_of_candidate, root_logits, root_oracle_logits = None, {}, {}, None, None
    embed_of_token = {int(t): tensors["request.token_embeddings"][i] for i, t in enumerate(tokens)}
    for call in range(int(tensors["drafting.n_calls"][0])):
        prefix = "drafting.call%d." % call
        kind, n_past = int(tensors[prefix + "kind"][0]), int(tensors[prefix + "n_past"][0])
        T = tensors[prefix + "tokens"].shape[0]
        if kind == 0:     # extend: row t pairs g_t with x_{t+1} at position t, causal
            slots = n_past + np.arange(T)
            want_tokens, want_positions = tokens[slots + 1], slots
            mask = np.zeros((T, n_past + T), dtype=bool)
            for t in range(T):
                mask[t, :n_past + t + 1] = True
            live = tensors[prefix + "features"]         # the target's pass, fp32: an input
            check.compare(prefix + "features (rounded to fp16)", as_record_keeps(live), tensors["request.features"][slots],
                          "exact")
            u = live.astype(np.float64) @ w["fc.weight"].T
        else:             # expand: each candidate at depth `kind`, u = its parent's output
            rows = tensors[prefix + "candidates"]
            want_tokens = cand_tokens[rows]
            want_positions = np.full(T, root_position - 1 + kind)
            check.require(list(cand_slots[rows]) == list(n_past + np.arange(T)),
                          "%scandidates: slots %s, expected consecutive from %d" % (prefix, list(cand_slots[rows]), n_past))
            check.require(all(cand_depths[rows] == kind), prefix + "candidates: not all of depth %d" % kind)
            mask = np.zeros((T, n_past + T), dtype=bool)
            u = np.zeros((T, cfg.dim))
            for r, c in enumerate(rows):
                mask[r, :n_prompt] = True                       # the verified prefix in the draft's cache
                a = cand_parents[c]
                while a >= 0:                                   # the candidate's expanded ancestors
                    mask[r, cand_slots[a]] = True
                    a = cand_parents[a]
                mask[r, n_past + r] = True                      # itself
                parent = cand_parents[c]
                u[r] = root_out if parent < 0 else out_of_candidate[parent]
        check.compare(prefix + "tokens", tensors[prefix + "tokens"], want_tokens)
        check.compare(prefix + "positions", tensors[prefix + "positions"], want_positions)
        check.compare(prefix + "mask", tensors[prefix + "mask"], mask.astype(np.uint8))
        embed = tensors[prefix + "embed"].astype(np.float64)    # Emb rows: an input (the target's table)
        for r, token in enumerate(tensors[prefix + "tokens"]):
            if int(token) in embed_of_token:
                check.require(np.array_equal(tensors[prefix + "embed"][r], embed_of_token[int(token)]),
                              "%sembed row %d is not Emb(%d)" % (prefix, r, token))
        attn_in, q, k, v = layer_inputs(w, cfg, embed, u, want_positions)
        cache_k[:, n_past:n_past + T] = k
        cache_v[:, n_past:n_past + T] = v
        attn = attend(q, cache_k[:, :n_past + T], cache_v[:, :n_past + T], mask, groups, scale)
        record = {}
        out = layer_outputs(w, cfg, u, attn, record)
        out_norm, logits = head(w, cfg, out)
        expected = dict(record, u=u, attn_in=attn_in, q=heads_to_rows(q), k=heads_to_rows(k), v=heads_to_rows(v),
                        out_norm=out_norm, logits=logits)
        for name in ["u", "attn_in", "q", "k", "v", "attn_out", "h", "h_norm", "ffn_gate", "ffn_up", "ffn_hidden",
                     "ffn_down_out", "out", "out_norm", "logits"]:
            check.compare(prefix + name, tensors[prefix + name], expected[name])
        c_logits = tensors[prefix + "logits"]
        if kind == 0:
            root_out, root_logits, root_oracle_logits = out[-1], c_logits[-1], logits[-1]
        else:
            for r, c in enumerate(tensors[prefix + "candidates"]):
                out_of_candidate[int(c)] = out[r]
                logits_of_candidate[int(c)] = (c_logits[r], logits[r])
    check.compare("drafting.key_cache", tensors["drafting.key_cache"], heads_to_rows(cache_k))
    check.compare("drafting.value_cache", tensors["drafting.value_cache"], heads_to_rows(cache_v))

    # the children of every expanded node: the top-K of its logits (the C's logits decide the order: near-ties
    # may legitimately order differently in float64), mapped by d2t; scores = parent score + log_softmax
    def children_of(parent):
        return [i for i in range(len(cand_tokens)) if cand_parents[i] == parent]
    # (the root's children too: their scores are the root's log-softmax, checked against the oracle's logits)
    parents = [(-1, root_logits, root_oracle_logits)] + [(c, *logits_of_candidate[c]) for c in sorted(logits_of_candidate)]
    for parent, c_logits, oracle_logits in parents:
        children = children_of(parent)
        best = top_k(c_logits, min(K, len(c_logits)))
        check.require(list(cand_tokens[children]) == list(d2t[best]),
                      "children of candidate %d: tokens %s, expected d2t[top-%d] = %s" %
                      (parent, list(cand_tokens[children]), K, list(d2t[best])))
        base = 0.0 if parent < 0 else cand_scores[parent]
        if oracle_logits is not None and len(children) == len(best):
            check.compare("drafting.candidate_scores (children of %d)" % parent, cand_scores[children],
                          base + log_softmax(oracle_logits)[best])
    # the tree: the N-1 best candidates (ties: created first), ordered by depth, then creation
    N = tensors["verify.tokens"].shape[0]
    ranked = sorted(range(len(cand_tokens)), key=lambda i: (-cand_scores[i], i))[:N - 1]
    kept = sorted(ranked, key=lambda i: (cand_depths[i], i))
    node_of = {c: j + 1 for j, c in enumerate(kept)}
    want_tokens = [int(tokens[n_prompt])] + [int(cand_tokens[c]) for c in kept]
    want_parents = [-1] + [0 if cand_parents[c] < 0 else node_of[cand_parents[c]] for c in kept]
    want_depth = [0] + [int(cand_depths[c]) for c in kept]
    check.compare("verify.tokens", tensors["verify.tokens"], np.array(want_tokens))
    check.compare("verify.parents", tensors["verify.parents"], np.array(want_parents))
    check.compare("verify.depth", tensors["verify.depth"], np.array(want_depth))
    check.compare("verify.positions", tensors["verify.positions"], root_position + np.array(want_depth))
    tree_mask = np.zeros((N, n_prompt + N), dtype=np.uint8)
    for i in range(N):
        tree_mask[i, :n_prompt] = 1
        a = i
        while a >= 0:
            tree_mask[i, n_prompt + a] = 1
            a = want_parents[a]
    check.compare("verify.mask", tensors["verify.mask"], tree_mask)
    # the caches as dumped, (L, P, NKV*HS): the last layer's node slots hold that layer's own keys and values
    # (the dump reads the target's head-by-head cache back into slots: a wrong head or slot order shows here)
    for cache, own in (("verify.key_cache", "verify.last_layer.k"), ("verify.value_cache", "verify.last_layer.v")):
        check.compare(cache + " (the last layer's node slots)", tensors[cache][-1, n_prompt:n_prompt + N], tensors[own],
                      "exact")
    # greedy acceptance from the target's logits at every node
    argmax = np.argmax(tensors["verify.logits"], axis=-1)           # numpy: ties to the lowest index
    check.compare("accept.target_argmax", tensors["accept.target_argmax"], argmax)
    path, node = [0], 0
    while True:
        match = [c for c in range(N) if want_parents[c] == node and want_tokens[c] == argmax[node]]
        if not match:
            break
        node = match[0]
        path.append(node)
    check.compare("accept.path", tensors["accept.path"], np.array(path))
    check.compare("accept.bonus", tensors["accept.bonus"], np.array([argmax[node]]))
    check.compare("accept.emitted", tensors["accept.emitted"], np.array([want_tokens[i] for i in path[1:]] + [argmax[node]]))
    # what the request recorded for the accepted path is what the verify pass computed there
    for i, node in enumerate(path):
        if n_prompt + i < tensors["request.features"].shape[0]:
            check.require(np.array_equal(tensors["request.features"][n_prompt + i],
                                         as_record_keeps(tensors["verify.features"][node])) and
                          np.array_equal(tensors["request.hidden"][n_prompt + i],
                                         as_record_keeps(tensors["verify.hidden"][node])),
                          "request.features/hidden at position %d differ from the verify pass's node %d rounded to "
                          "fp16" % (n_prompt + i, node))


def flat_mask(unroll, k):
    """The EAGLE-3 mask of step k in the C's flat layout: the C computes T - j rows at step j (the rows whose
    token exists) and stacks the steps' keys; query t sees block 0 at s <= t and column t of blocks 1..k."""
    T = unroll.T
    rows = [T - j for j in range(k + 1)]
    offsets = np.concatenate([[0], np.cumsum(rows)])
    mask = np.zeros((rows[k], offsets[-1]), dtype=np.uint8)
    for t in range(rows[k]):
        mask[t, :t + 1] = 1
        for block in range(1, k + 1):
            mask[t, offsets[block] + t] = 1
    return mask


def check_unroll(tensors, unroll, w, check, defect=None):
    """2. The TTT unroll, step by step, against the dump. Returns the oracle's loss."""
    check.compare("train.first_column", tensors["train.first_column"], np.array([unroll.first]))
    loss, steps = unroll.run(w, defect=defect, collect=True)
    for k, step in enumerate(steps):
        prefix = "train.step%d." % k
        R = unroll.T - k                  # the C computes the rows whose token exists
        check.compare(prefix + "tokens", tensors[prefix + "tokens"], step["ids"][:R])
        check.compare(prefix + "positions", tensors[prefix + "positions"], step["positions"][:R])
        check.compare(prefix + "mask", tensors[prefix + "mask"], flat_mask(unroll, k))
        if k == 0:
            check.compare(prefix + "features", tensors[prefix + "features"],
                          unroll.features[unroll.first:unroll.first + unroll.T], "exact")
        check.compare(prefix + "embed", tensors[prefix + "embed"], step["embed"][:R], "exact")
        for name in ["u", "attn_in", "q", "k", "v", "attn_out", "h", "h_norm", "ffn_gate", "ffn_up", "ffn_hidden",
                     "ffn_down_out", "out"]:
            check.compare(prefix + name, tensors[prefix + name], step[name][:R])
        check.compare(prefix + "loss_rows", tensors[prefix + "loss_rows"], step["rows"])
        check.compare(prefix + "loss_weights", tensors[prefix + "loss_weights"], step["weights"], "exact")
        if len(step["rows"]):
            for name, key in [("out_norm", "out_norm"), ("logits", "logits"), ("p_target", "p")]:
                check.compare(prefix + name, tensors[prefix + name], step[key])
            counted = step["counted"]  # (the next-token loss: rows whose token is outside the draft vocabulary count 0)
            check.compare(prefix + "row_losses", tensors[prefix + "row_losses"][counted], step["losses"][counted])
            check.compare(prefix + "loss", tensors[prefix + "loss"], np.array([step["loss"]]))
    check.require(len(steps) == sum(1 for n in tensors if n.startswith("train.step") and n.endswith(".tokens")),
                  "the C unrolled %d steps, the oracle %d" % (
                      sum(1 for n in tensors if n.startswith("train.step") and n.endswith(".tokens")), len(steps)))
    check.compare("train.accepted_loss", tensors["train.accepted_loss"], np.array([loss]))
    check.compare("train.loss", tensors["train.loss"], np.array([loss]))
    return loss, steps


def check_gradients(tensors, unroll, w, check, n_checks, rng):
    """3. Central differences of the oracle's float64 loss against the C's gradients."""
    def loss_at(name, direction, h):
        w2 = dict(w)
        w2[name] = w[name] + h * direction
        return unroll.run(w2)[0]
    print("gradients: central differences of the oracle's loss (float64) against train.grad.*")
    for name in WEIGHT_NAMES:
        grad = tensors["train.grad." + name].astype(np.float64)
        norm = np.linalg.norm(grad)
        probes = []
        if norm > 0:
            probes.append(("along the C's gradient", grad / norm, norm))
        direction = rng.standard_normal(grad.shape)
        direction /= np.linalg.norm(direction)
        probes.append(("along a random direction", direction, float((grad * direction).sum())))
        flat = np.abs(grad).ravel()
        elements = [int(np.argmax(flat))] + [int(i) for i in rng.integers(0, flat.size, size=max(0, n_checks - 3))]
        for i in elements:
            e = np.zeros(grad.size)
            e[i] = 1.0
            probes.append(("element %s" % compare_dump.index_text(i, grad.shape), e.reshape(grad.shape), grad.ravel()[i]))
        got, want = [], []
        for label, direction, analytic in probes[:max(n_checks, 2)]:
            h = 1e-4
            numeric = (loss_at(name, direction, h) - loss_at(name, direction, -h)) / (2 * h)
            got.append(analytic)
            want.append(numeric)
        check.compare("train.grad.%s (directional derivatives)" % name, np.array(got), np.array(want), "layer")
        if not check.quiet:
            print("  %-44s |grad| %.4g  d/d(grad direction): C %.6g, finite difference %.6g" %
                  (name, norm, got[0], want[0]))


def check_update(tensors, config, check):
    """4. Clipping and AdamW (one step from zero moments) on the C's gradients. The step itself cannot show the
    clipping factor (from zero moments AdamW moves a weight by about lr * sign(g), whatever g's scale), so the
    factor the C applied is compared on its own."""
    trainer = config["trainer"]
    grads = {n: tensors["train.grad." + n].astype(np.float64) for n in WEIGHT_NAMES}
    norm = np.sqrt(sum((g * g).sum() for g in grads.values()))
    check.compare("train.grad_norm", tensors["train.grad_norm"], np.array([norm]))
    clip = float(trainer["max_grad_norm"])
    factor = clip / norm if clip > 0 and norm > clip else 1.0
    check.compare("train.clip_factor", tensors["train.clip_factor"], np.array([factor]))
    lr = float(tensors["train.learning_rate"][0])
    b1, b2, eps, wd = (float(trainer[k]) for k in ("beta1", "beta2", "adam_eps", "weight_decay"))
    for n in WEIGHT_NAMES:
        g = grads[n] * factor
        m, v = (1 - b1) * g, (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1), v / (1 - b2)
        weight = tensors["weights." + n].astype(np.float64)
        updated = weight * (1 - lr * wd) - lr * m_hat / (np.sqrt(v_hat) + eps)
        check.compare("train.updated." + n, tensors["train.updated." + n], updated)


def main(argv):
    args = list(argv)
    defect, n_checks, quiet, path = None, 4, False, None
    while args:
        arg = args.pop(0)
        if arg == "--negative-control" and args:
            defect = args.pop(0)
            if defect not in ("mask", "position"):
                print("oracle_eagle3: --negative-control expects mask or position", file=sys.stderr)
                return 2
        elif arg == "--fd-checks" and args:
            n_checks = int(args.pop(0))
        elif arg == "--quiet":
            quiet = True
        elif arg in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            path = arg
    if path is None:
        print("usage: oracle_eagle3.py DUMP.safetensors [--negative-control mask|position] [--fd-checks N]", file=sys.stderr)
        return 2
    metadata, tensors = compare_dump.read_safetensors(path)
    config = compare_dump.dump_config(metadata)
    if config.get("format") != "aurora-dump":
        print("oracle_eagle3: %s is not an aurora dump (no aurora.dump.config metadata)" % path, file=sys.stderr)
        return 2
    cfg = Config(config)
    w = {n: tensors["weights." + n].astype(np.float64) for n in WEIGHT_NAMES}
    unroll = Unroll(tensors, config, cfg)
    print("oracle_eagle3: %s: draft C=%d, %d heads (%d kv), V_d=%d; request %d + %d tokens; unroll T=%d columns from "
          "position %d, %d steps, loss %s%s" % (path, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size,
                                                 unroll.n_prompt, len(unroll.tokens) - unroll.n_prompt, unroll.T,
                                                 unroll.first, unroll.n_steps, unroll.loss_kind,
                                                 "; NEGATIVE CONTROL: %s" % defect if defect else ""))
    check = Checker(quiet)
    print("1. drafting: every draft_forward call of the first proposal, the tree, the verify inputs, acceptance")
    check_drafting(tensors, config, cfg, w, check)
    print("2. the TTT unroll, step by step")
    loss, steps = check_unroll(tensors, unroll, w, check, defect)
    print("   loss: C %.9g, oracle %.9g; per step L_k (C / oracle): %s" % (
        tensors["train.loss"][0], loss, ", ".join("%.6g / %.6g" % (tensors["train.step%d.loss" % k][0], s["loss"])
                                                   for k, s in enumerate(steps) if "loss" in s)))
    if defect is None:
        print("3.", end=" ")
        check_gradients(tensors, unroll, w, check, n_checks, np.random.default_rng(1))
        print("4. clipping and AdamW on the C's gradients")
        check_update(tensors, config, check)
        print("5. negative controls: each defect must make the unroll's comparison fail")
        for control in ("mask", "position"):
            control_check = Checker(quiet=True)
            import io
            import contextlib
            with contextlib.redirect_stdout(io.StringIO()):
                check_unroll(tensors, unroll, w, control_check, defect=control)
            caught = len(control_check.failed_values) > 0   # by the values, not only by the integer inputs
            by_loss = [n for n in control_check.failed_values if n.endswith(".loss") or n == "train.loss"]
            print("   %s: %s: %d comparisons failed (%d of real values; the first: %s; step losses that failed: %s)" % (
                control, "caught" if caught else "NOT CAUGHT", len(control_check.failed), len(control_check.failed_values),
                control_check.failed_values[0] if caught else "-", ", ".join(by_loss) if by_loss else "none"))
            check.require(caught, "the negative control '%s' was not caught" % control)
    print("worst |C - oracle| by group (tolerance family):")
    for group, (diff, name, family) in sorted(check.worst.items()):
        atol, rtol, _ = compare_dump.TOLERANCES[family]
        print("  %-66s %-11s %.3g (%s)" % (group, family, diff, name))
    if check.failed:
        print("oracle_eagle3: %d comparisons FAILED (the first: %s), %d passed" % (len(check.failed), check.failed[0],
                                                                                  check.passed))
        return 1
    print("oracle_eagle3: all %d comparisons agree" % check.passed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
