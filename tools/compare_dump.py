#!/usr/bin/env python3
"""compare_dump.py: two `aurora dump` files (or a dump and another implementation's file in the same
names), tensor by tensor, with the project's one comparison rule and tolerance table.

usage: python3 tools/compare_dump.py [options] REFERENCE CANDIDATE
       python3 tools/compare_dump.py --check-table tests/test_common.h

  REFERENCE, CANDIDATE   safetensors files; REFERENCE's names are compared in its file order, and
                         |candidate - reference| <= atol + rtol * |reference| must hold element by element
  --only REGEX           compare only the names REGEX matches (re.search)
  --allow-missing        a name of REFERENCE absent from CANDIDATE is reported and skipped, not a failure
                         (an implementation that dumps only some intermediates)
  --list                 print every tensor's line, not only the failing ones
  --records-may-differ   where the two dumps' records differ (request.features or request.hidden), the trainer
                         step's real-valued tensors (train.*, all but the exact family) are reported and skipped:
                         they were computed from different inputs (two tables whose fp32 target states differ
                         in the last bits round some of them to neighbouring fp16 values in the record). Check
                         each dump's trainer step on its own with tests/oracle_eagle3.py instead
  --check-table FILE     check that TOLERANCES below equals the C table in FILE (tests/test_common.h)

Exit status is the verdict: 0 every compared tensor agrees, 1 a tensor differs (the first one is named,
with its first mismatches and its worst element), 2 a file or usage error, or nothing compared (no name in
common, or an --only that matches none).

The rule (tests/test_common.h, compare_elements; STYLE.md item 4): NaN anywhere fails, infinities must match
exactly (masked attention entries are -inf), integers and bytes must be equal, and every other element
satisfies |got - ref| <= atol + rtol * |ref|, with two stated additions to atol: a weight after the AdamW step
whose gradient is within its tolerance of zero may move by +-lr either way (updated_weight_slack), and an element
of a "layer" tensor may err by a small fraction of the largest value its row carried (row_scale_slack: the
residual stream's massive activations). The tolerance of a tensor
comes from its family (FAMILIES below:
the first pattern that matches its name); the families' numbers are TOLERANCES, a copy of the element-wise families of
the C table in tests/test_common.h (`make test-oracle` checks the copy with --check-table).

numpy only; safetensors files are read by read_safetensors below (the `safetensors` package is not needed).
"""
import json
import re
import struct
import sys

import numpy as np

# ---- the tolerance table: a copy of tests/test_common.h's TOLERANCES (name: atol, rtol, reason) --------------
TOLERANCES = {
    "exact": (0.0, 0.0, "same arithmetic in the same order (copies, integer-valued math)"),
    "reorder": (1e-5, 1e-5, "same fp32 math, different summation order (BLAS, GPU reductions) on one op"),
    "layer": (2e-4, 1e-3, "a whole layer or model: reordering errors compound through norms and softmax"),
    "quantised": (1e-2, 1e-2, "one quantise/dequantise round trip of values in [-1, 1] (Q8_0 and better)"),
    "finite_difference": (1e-3, 1e-2, "analytic gradients against central differences (step 1e-2) of fp32 forwards"),
    "row_scale": (0.0, 3e-5, "not a family: the fraction of a row's largest magnitude that a \"layer\" element may "
                             "err by on top of its own tolerance (row_scale_slack; measured worst 6.7e-6)"),
    "hand": (1e-6, 2e-6, "fp32 arithmetic against values worked out by hand to 9 significant digits"),
    "adamw_steps": (2e-4, 0.0, "weights after up to 3 AdamW steps at lr 1e-3 from one start: each step moves a weight "
                               "by about lr whatever its gradient's size, so a wrong gradient shows as ~1e-3 and "
                               "reordered sums as far less"),
}

# ---- which family each tensor of a dump belongs to: the first matching pattern, with its reason ----------------
# (integer tensors are always "exact", whatever their name)
FAMILIES = [
    (r"^weights\.", "exact", "the draft's weights before the step: both sides load the same F32 checkpoint"),
    (r"^request\.(token_embeddings|target_head)$", "exact", "rows of the target's weights, read from the same file"),
    (r"^train\.learning_rate$", "exact", "a setting"),
    (r"^train\.updated\.", "adamw_steps", "the weights after one AdamW step at lr 1e-3 (tests/test_backends.c compares "
                                          "trained weights so)"),
    (r"^train\.grad\.", "layer", "gradients through the whole unroll: reordered sums compound (tests/test_backends.c "
                                 "compares the trainer's gradients so)"),
    (r".", "layer", "activations, logits and losses of a whole model or layer"),
]


def family_of(name, is_integer):
    """(family, reason) of a tensor."""
    if is_integer:
        return "exact", "integers (token ids, positions, masks, tree and acceptance decisions) must be equal"
    for pattern, family, reason in FAMILIES:
        if re.search(pattern, name):
            return family, reason
    return "layer", ""


# ---- safetensors, read with numpy -----------------------------------------------------------------------------
DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "u1",
}


class DumpError(Exception):
    pass


def printable(text):
    """A name from a file, quoted, with control characters escaped (a terminal never sees the file's own bytes)."""
    return "'" + "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 256 else "\\u%04x" % ord(c)
                         for c in str(text)) + "'"


def read_safetensors(path):
    """(metadata dict, {name: numpy array} in file order). BF16 becomes float32; every other dtype stays."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise DumpError("%s: %d bytes, expected at least the 8-byte header length" % (path, len(data)))
    (header_length,) = struct.unpack("<Q", data[:8])
    if header_length > len(data) - 8 or header_length > 100_000_000:
        raise DumpError("%s: header of %d bytes does not fit in the file (%d bytes)" % (path, header_length, len(data)))
    try:
        header = json.loads(data[8:8 + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DumpError("%s: the header is not JSON: %s" % (path, error))
    if not isinstance(header, dict):
        raise DumpError("%s: the header is not a JSON object" % path)
    metadata = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + header_length:]
    entries = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise DumpError("%s: tensor %s: expected dtype, shape and data_offsets" % (path, printable(name)))
        # (JSON integers only: a float offset truncated, or true read as 1, would be accepted wherever it fits)
        if not isinstance(shape, list) or not all(type(n) is int for n in shape + [begin, end]):
            raise DumpError("%s: tensor %s: shape and data_offsets must be integers" % (path, printable(name)))
        if any(n < 0 for n in shape):
            raise DumpError("%s: tensor %s: shape %s has a negative dimension" % (path, printable(name), shape))
        if dtype not in DTYPES:
            raise DumpError("%s: tensor %s: unknown dtype %s" % (path, printable(name), printable(dtype)))
        count = int(np.prod(shape)) if shape else 1
        if not (0 <= begin <= end <= len(body)) or end - begin != count * np.dtype(DTYPES[dtype]).itemsize:
            raise DumpError("%s: tensor %s: data_offsets [%d, %d] do not hold %s %s" % (path, printable(name), begin, end,
                                                                                       dtype, shape))
        entries.append((begin, name, dtype, shape, end))
    tensors = {}
    for begin, name, dtype, shape, end in sorted(entries):  # file order = data order
        values = np.frombuffer(body[begin:end], dtype=DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            values = (values.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = values
    return metadata, tensors


def dump_config(metadata):
    """The run's configuration (metadata "aurora.dump.config"), or {}."""
    text = metadata.get("aurora.dump.config")
    return json.loads(text) if text else {}


# ---- the one comparison rule ----------------------------------------------------------------------------------
def compare_arrays(got, ref, family, slack=None):
    """(mismatch count, worst index, got, ref at the worst, first mismatches [(index, got, ref)]), as
    tests/test_common.h's compare_elements: NaN fails, infinities match exactly, integers exact. slack: an
    optional per-element addition to atol (see updated_weight_slack)."""
    atol, rtol, _ = TOLERANCES[family]
    if slack is not None:
        atol = atol + np.asarray(slack, dtype=np.float64).ravel()
    got = np.asarray(got)
    ref = np.asarray(ref)
    integer = got.dtype.kind in "iub" and ref.dtype.kind in "iub"
    g = got.astype(np.float64).ravel()
    r = ref.astype(np.float64).ravel()
    if integer:
        excess = np.abs(g - r)
        bad = excess != 0
    else:
        with np.errstate(invalid="ignore"):
            nan = np.isnan(g) | np.isnan(r)
            inf = (np.isinf(g) | np.isinf(r)) & ~nan
            finite = ~nan & ~inf
            excess = np.zeros_like(g)
            bound = atol + rtol * np.abs(r)
            excess[finite] = np.abs(g[finite] - r[finite]) - bound[finite]
            bad = np.zeros(g.shape, dtype=bool)
            bad[finite] = excess[finite] > 0
            bad[nan] = True
            bad[inf] = g[inf] != r[inf]
            excess[nan | (inf & bad)] = np.inf
    n_bad = int(bad.sum())
    if g.size == 0:
        return 0, None, None, None, []
    worst = int(np.argmax(excess))
    first = [(int(i), g[i], r[i]) for i in np.flatnonzero(bad)[:5]]
    return n_bad, worst, g[worst], r[worst], first


def index_text(flat_index, shape):
    return "[" + ", ".join(str(i) for i in np.unravel_index(flat_index, shape)) + "]" if shape else "[0]"


def updated_weight_slack(name, reference):
    """The one exception to "one tolerance per tensor": the weights after the step (train.updated.X). The first
    AdamW step from zero moments moves a weight by lr * g / (|g| + eps), about lr * sign(g): a gradient element
    that is within its own tolerance of zero ("layer": two correct implementations may give it either sign)
    moves its weight by +lr or -lr whichever way reordered sums round. Where the reference's gradient
    (train.grad.X) is that small, the bound gains 2 * lr; everywhere else "adamw_steps" holds as it is (a wrong
    gradient, or a wrong optimiser, still shows). None when the reference lacks the gradient or the rate."""
    rest = name[len("train.updated."):] if name.startswith("train.updated.") else None
    if rest is None or "train.grad." + rest not in reference or "train.learning_rate" not in reference:
        return None
    grad = np.abs(reference["train.grad." + rest].astype(np.float64))
    atol, rtol, _ = TOLERANCES["layer"]
    undetermined = grad <= atol + rtol * grad
    return np.where(undetermined, 2.0 * float(reference["train.learning_rate"][0]), 0.0)


def row_scale_slack(name, reference):
    """The second addition to atol, for "layer" tensors of a whole model: rtol("row_scale") times the largest
    |value| the element's row carried. An fp32 sum errs by a few ulp of the largest value it held, not of its
    result, and RMSNorm spreads a row's errors over the row in proportion to its largest element. SmolLM2's
    residual stream holds massive activations (|x| up to 22,000 at the first position, 870 at some later ones,
    where a row's other values are 1 to 50); a later layer cancels them, so a small element can carry the
    rounding error of a value 10 to 1000 times its size. Measured on the default model (F32, reference against
    the fast table with fp32 activations): worst |diff| 6.7e-6 of that peak, so the bound 3e-5 leaves 4.5x, while a
    wrong row, mask or position errs by the row's RMS. A row is the last axis; for verify.layer_outputs
    [L, N, C] the peak is over the layers up to and including this one (the stream of token n so far), and
    verify.last_layer.residual (its last layer) takes the peak over every layer. None for other families and
    integers."""
    ref = reference[name]
    if np.asarray(ref).dtype.kind in "iub" or family_of(name, False)[0] != "layer":
        return None
    magnitude = np.abs(np.asarray(ref, dtype=np.float64))
    if magnitude.ndim == 0:
        peak = magnitude
    elif name in ("verify.layer_outputs", "verify.last_layer.residual") and "verify.layer_outputs" in reference \
            and np.asarray(reference["verify.layer_outputs"]).ndim == 3:
        stream = np.abs(np.asarray(reference["verify.layer_outputs"], dtype=np.float64)).max(axis=2)   # [L, N]
        stream = np.maximum.accumulate(stream, axis=0)
        peak = stream[:, :, None] if name == "verify.layer_outputs" else stream[-1][:, None]
        if peak.ndim != magnitude.ndim or peak.shape[:-1] != magnitude.shape[:-1]:
            return None     # not the shapes dump.c writes: the element-wise rule alone
    else:
        peak = magnitude.max(axis=-1, keepdims=True) if magnitude.size else magnitude
    return np.broadcast_to(TOLERANCES["row_scale"][1] * peak, magnitude.shape)


def compare_tensor(name, got, ref, family=None, out=sys.stderr, label=None, slack=None):
    """Compares one tensor; prints the first mismatches and the worst one when it differs. Returns
    (ok, max |diff|, family). The reference's dtype decides: ids stored as floats by the candidate (save_file of
    .float() tensors) are still compared exactly."""
    integer = np.asarray(ref).dtype.kind in "iub"
    if family is None:
        family, _ = family_of(name, integer)
    label = label or name
    if np.asarray(got).shape != np.asarray(ref).shape:
        print("  %s: shape %s, expected %s" % (label, list(np.asarray(got).shape), list(np.asarray(ref).shape)), file=out)
        return False, float("inf"), family
    n_bad, worst, g, r, first = compare_arrays(got, ref, family, slack)
    with np.errstate(invalid="ignore"):
        diff = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(ref, dtype=np.float64))
    max_diff = float(np.nanmax(diff)) if diff.size and not np.all(np.isnan(diff)) else 0.0
    if n_bad:
        shape = np.asarray(ref).shape
        for i, gi, ri in first:
            print("  %s%s: got %.9g, expected %.9g (tolerance %s)" % (label, index_text(i, shape), gi, ri, family), file=out)
        print("  %s: %d of %d elements mismatch; worst at %s: got %.9g, expected %.9g" %
              (label, n_bad, np.asarray(ref).size, index_text(worst, shape), g, r), file=out)
    return n_bad == 0, max_diff, family


# ---- --check-table ---------------------------------------------------------------------------------------------
def check_table(path):
    """Every family of TOLERANCES must be in the C table in test_common.h with the same atol and rtol (as
    float32). The C table has more: per-op and int8 families and bounds on measured ratios, which only the
    C tests use."""
    text = open(path).read()
    block = text[text.index("TOLERANCES[] = {"):]
    block = block[:block.index("};")]
    rows = re.findall(r'\{"(\w+)",\s*([-0-9.eE+]+)f?,\s*([-0-9.eE+]+)f?,', block)
    c_table = {name: (np.float32(atol), np.float32(rtol)) for name, atol, rtol in rows}
    ours = {name: (np.float32(v[0]), np.float32(v[1])) for name, v in TOLERANCES.items()}
    differing = [name for name in ours if c_table.get(name) != ours[name]]
    if differing or not ours:
        for name in differing:
            print("compare_dump: family %s: Python %s, %s %s" % (name, ours[name], path, c_table.get(name, "missing")),
                  file=sys.stderr)
        return 1
    print("compare_dump: the tolerance table's %d families equal %s's" % (len(ours), path))
    return 0


# ---- the comparison of two files --------------------------------------------------------------------------------
RECORD_STATES = ("request.features", "request.hidden")


def record_difference(reference, candidate):
    """How the two dumps' records differ: (elements, largest |diff|) over RECORD_STATES, (0, 0) where equal, None
    where a file lacks them or their shapes differ (then their own comparison says so)."""
    elements, largest = 0, 0.0
    for name in RECORD_STATES:
        if name not in reference or name not in candidate or \
                np.asarray(reference[name]).shape != np.asarray(candidate[name]).shape:
            return None
        diff = np.abs(np.asarray(reference[name], dtype=np.float64) - np.asarray(candidate[name], dtype=np.float64))
        elements += int((diff != 0).sum())
        largest = max(largest, float(diff.max()) if diff.size else 0.0)
    return elements, largest


def from_the_record(name, reference):
    """A real-valued tensor of the trainer step, computed from the record (not the exact family)."""
    return name.startswith("train.") and np.asarray(reference[name]).dtype.kind not in "iub" and \
        family_of(name, False)[0] != "exact"


def compare_files(reference_path, candidate_path, only=None, allow_missing=False, list_all=False, out=sys.stdout,
                  records_may_differ=False):
    _, reference = read_safetensors(reference_path)
    _, candidate = read_safetensors(candidate_path)
    names = [n for n in reference if only is None or re.search(only, n)]
    records = record_difference(reference, candidate)
    records_differ = records is not None and records[0] > 0
    skipped = []
    if records_differ and records_may_differ:
        skipped = [n for n in names if from_the_record(n, reference)]
        names = [n for n in names if n not in skipped]
    print("compare_dump: reference %s (%d tensors), candidate %s (%d tensors), %d compared" %
          (reference_path, len(reference), candidate_path, len(candidate), len(names)), file=out)
    if not names:   # (nothing compared is no verdict: a mistyped --only would otherwise read "agree")
        print("error: no tensor of the reference to compare%s" %
              (": --only %r matches none of its %d names" % (only, len(reference)) if only is not None else ""), file=out)
        return 2
    if records_differ:
        print("note: the records differ: %d elements of %s, by up to %.3g; the trainer step's tensors were computed "
              "from different inputs (%s)" % (records[0], " and ".join(RECORD_STATES), records[1],
                                             "%d skipped: --records-may-differ" % len(skipped) if records_may_differ
                                             else "compared all the same; --records-may-differ skips them"), file=out)
    stats = {}      # family: [tensors, failed, worst |diff|, its name]
    first_failure = None
    missing = []
    for name in names:
        if name not in candidate:
            missing.append(name)
            continue
        weight_slack = updated_weight_slack(name, reference)
        slack = weight_slack if weight_slack is not None else row_scale_slack(name, reference)
        ok, max_diff, family = compare_tensor(name, candidate[name], reference[name], out=out, slack=slack)
        if weight_slack is not None and ok and np.asarray(candidate[name]).shape == np.asarray(reference[name]).shape:
            atol = TOLERANCES[family][0]
            moved = int((np.abs(candidate[name].astype(np.float64) - reference[name].astype(np.float64)) > atol).sum())
            if moved:
                print("note: %s: %d of %d weights moved another way, each where the reference's gradient is within "
                      "its tolerance of zero (allowed 2 * lr: see updated_weight_slack)" % (name, moved,
                                                                                            reference[name].size), file=out)
        entry = stats.setdefault(family, [0, 0, 0.0, ""])
        entry[0] += 1
        entry[1] += 0 if ok else 1
        if max_diff >= entry[2]:
            entry[2], entry[3] = max_diff, name
        if list_all or not ok:
            print("%s %-52s %-11s max |diff| %.3g" % ("ok  " if ok else "FAIL", name, family, max_diff), file=out)
        if not ok and first_failure is None:
            first_failure = name
    extra = [n for n in candidate if n not in reference and (only is None or re.search(only, n))]
    if missing:
        print("%s %d names of the reference are missing from the candidate: %s%s" %
              ("skipped:" if allow_missing else "FAIL:", len(missing), ", ".join(missing[:8]),
               " ..." if len(missing) > 8 else ""), file=out)
    if extra:
        print("note: %d names of the candidate are not in the reference (not compared): %s%s" %
              (len(extra), ", ".join(printable(n) for n in extra[:8]), " ..." if len(extra) > 8 else ""), file=out)
    if not stats:   # every name missing, and --allow-missing: nothing was compared, which is no verdict
        print("error: none of the %d names of the reference is in the candidate: nothing compared" % len(names), file=out)
        return 2
    print("%-18s %-22s %7s %6s  %s" % ("family", "tolerance", "tensors", "failed", "worst |diff| (tensor)"), file=out)
    for family, (count, failed, worst, worst_name) in stats.items():
        atol, rtol, _ = TOLERANCES[family]
        print("%-18s atol %-6g rtol %-6g %7d %6d  %.3g (%s)" % (family, atol, rtol, count, failed, worst, worst_name), file=out)
    failed = sum(entry[1] for entry in stats.values()) + (0 if allow_missing else len(missing))
    if first_failure is not None:
        family, reason = family_of(first_failure, np.asarray(reference[first_failure]).dtype.kind in "iub")
        print("first difference: %s (family %s: %s)" % (first_failure, family, reason), file=out)
        if records_differ and from_the_record(first_failure, reference):
            print("note: %s was computed from the record, and the records differ (above): check each dump's trainer "
                  "step with tests/oracle_eagle3.py, or give both the same record" % first_failure, file=out)
    elif missing and not allow_missing:
        print("first difference: %s is missing from the candidate" % missing[0], file=out)
    print("verdict: %s" % ("agree" if failed == 0 else "%d tensors differ" % failed), file=out)
    return 0 if failed == 0 else 1


def main(argv):
    args = list(argv)
    only, allow_missing, list_all, table, records_may_differ = None, False, False, None, False
    paths = []
    while args:
        arg = args.pop(0)
        if arg == "--only" and args:
            only = args.pop(0)
        elif arg == "--allow-missing":
            allow_missing = True
        elif arg == "--list":
            list_all = True
        elif arg == "--records-may-differ":
            records_may_differ = True
        elif arg == "--check-table" and args:
            table = args.pop(0)
        elif arg in ("-h", "--help"):
            print(__doc__)
            return 0
        elif arg.startswith("-"):
            print("compare_dump: unknown option %s (see --help)" % arg, file=sys.stderr)
            return 2
        else:
            paths.append(arg)
    if table:
        return check_table(table)
    if only is not None:
        try:
            re.compile(only)
        except re.error as error:
            print("compare_dump: error: --only %s is not a regular expression: %s" % (printable(only), error), file=sys.stderr)
            return 2
    if len(paths) != 2:
        print("usage: compare_dump.py [--only REGEX] [--allow-missing] [--list] [--records-may-differ] REFERENCE "
              "CANDIDATE", file=sys.stderr)
        return 2
    try:
        return compare_files(paths[0], paths[1], only, allow_missing, list_all, records_may_differ=records_may_differ)
    except (OSError, DumpError) as error:
        print("compare_dump: error: %s" % error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
