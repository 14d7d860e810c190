"""agg_numpy.py -- the NumPy baseline of `spirt bench agg`.

The same aggregation rules as src/agg, written the way one writes them with
NumPy (one (n, d) float32 array, vectorised calls), on the very data spirt
aggregated. It runs as a server driven by `spirt bench agg`, so that spirt's
and NumPy's timed runs can alternate (a burst of other work on a shared
machine then hits both alike):

usage: agg_numpy.py INPUTS.f32 N D F OUT_PREFIX
  INPUTS.f32   n * d float32 values, row-major (input i is row i)
  OUT_PREFIX   spirt's result for RULE is OUT_PREFIX-RULE.f32 (d float32)

It loads the inputs, prints {"ready": true, "numpy": VERSION}, then answers
each line of stdin with one line of JSON:
  run RULE     times one run of RULE: {"numpy_ms": ..., "iterations": ...}
  check RULE   compares its last result of RULE with spirt's file:
               {"match": bool, "max_diff": ..., "tolerance": ...}
until end of input.

Parameters match spirt's defaults: trim = f, m = n - f, geomed nu = 1e-6 and
tolerance = 1e-6 relative to the spread (mean distance to the mean), at most
100 iterations; cclip tau = 10, 3 iterations, starting at the median.
"""
import json
import sys
import time

import numpy as np


def krum_scores(distances, f, active):
    """Krum score of each index in `active` among `active`."""
    sub = distances[np.ix_(active, active)]
    nearest = max(len(active) - f - 2, 0)
    # Row-wise sort; column 0 is the distance to itself (0).
    return np.sort(sub, axis=1)[:, 1:1 + nearest].sum(axis=1)


def pairwise(x):
    gram = x @ x.T
    norms = np.diag(gram)
    return np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)


def rule_mean(x, f):
    return x.mean(axis=0), {}


def rule_median(x, f):
    return np.median(x, axis=0), {}


def rule_trimmed(x, f):
    n = x.shape[0]
    return np.sort(x, axis=0)[f:n - f].mean(axis=0), {}


def rule_krum(x, f):
    distances = pairwise(x)
    scores = krum_scores(distances, f, np.arange(x.shape[0]))
    best = int(np.argmin(scores))
    return x[best].copy(), {"selected": [best]}


def rule_multi_krum(x, f):
    n = x.shape[0]
    distances = pairwise(x)
    scores = krum_scores(distances, f, np.arange(n))
    chosen = np.argsort(scores, kind="stable")[:n - f]
    return x[chosen].mean(axis=0), {"selected": [int(i) for i in chosen]}


def rule_bulyan(x, f):
    n = x.shape[0]
    distances = pairwise(x)
    active = list(range(n))
    chosen = []
    for _ in range(n - 2 * f):
        scores = krum_scores(distances, f, np.array(active))
        pick = active[int(np.argmin(scores))]
        chosen.append(pick)
        active.remove(pick)
    # Per coordinate, the beta values nearest to the median. Distances in
    # float64 (in float32, rounding flips near-ties: at d = 10M a coordinate
    # or two would differ from spirt's exact choice for that reason alone);
    # a stable argsort over sorted values keeps the smaller value on a tie.
    ordered = np.sort(x[chosen], axis=0)
    theta = len(chosen)
    beta = theta - 2 * f
    if theta % 2:
        median = ordered[theta // 2].astype(np.float64)
    else:
        median = (ordered[theta // 2 - 1].astype(np.float64) + ordered[theta // 2]) / 2
    nearest = np.argsort(np.abs(ordered - median), axis=0, kind="stable")[:beta]
    return np.take_along_axis(ordered, nearest, axis=0).mean(axis=0, dtype=np.float64), {"selected": chosen}


def rule_geomed(x, f, nu=1e-6, tolerance=1e-6, max_iterations=100):
    z = x.mean(axis=0)
    distances = np.linalg.norm(x - z, axis=1)
    spread = distances.mean()
    iterations = 0
    if spread == 0:
        return z, {"iterations": 0}
    for iterations in range(1, max_iterations + 1):
        weights = 1.0 / np.maximum(distances, nu * spread)
        new = (weights @ x) / weights.sum()
        change = np.linalg.norm(new - z)
        z = new.astype(np.float32)
        distances = np.linalg.norm(x - z, axis=1)
        if change <= tolerance * (spread + np.linalg.norm(z)):
            break
    return z, {"iterations": iterations}


def rule_cclip(x, f, tau=10.0, iterations=3):
    v = np.median(x, axis=0)
    n = x.shape[0]
    for _ in range(iterations):
        difference = x - v
        norms = np.linalg.norm(difference, axis=1)
        scale = np.minimum(1.0, tau / np.maximum(norms, 1e-300))
        v = v + (scale[:, None] * difference).sum(axis=0) / n
    return v, {"iterations": iterations}


RULES = {
    "mean": rule_mean,
    "median": rule_median,
    "trimmed-mean": rule_trimmed,
    "krum": rule_krum,
    "multi-krum": rule_multi_krum,
    "bulyan": rule_bulyan,
    "geomed": rule_geomed,
    "cclip": rule_cclip,
}

# Relative tolerance (of the inputs' largest magnitude) for spirt vs NumPy:
# both compute the same thing, NumPy in float32 where spirt sums in double,
# and the iterative rules stop on a tolerance.
TOLERANCE = {"mean": 1e-5, "median": 1e-6, "trimmed-mean": 1e-5, "krum": 1e-6, "multi-krum": 1e-5,
             "bulyan": 1e-5, "geomed": 1e-3, "cclip": 1e-4}


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    path, n, d, f, out_prefix = sys.argv[1:6]
    n, d, f = int(n), int(d), int(f)
    x = np.fromfile(path, dtype=np.float32, count=n * d).reshape(n, d)
    magnitude = float(np.abs(x).max())
    last = {}
    reply({"ready": True, "numpy": np.__version__})
    for line in sys.stdin:
        words = line.split()
        if len(words) != 2 or words[1] not in RULES:
            reply({"error": f"bad request {line.strip()!r}"})
            continue
        verb, name = words
        if verb == "run":
            start = time.perf_counter()
            out, info = RULES[name](x, f)
            entry = {"numpy_ms": (time.perf_counter() - start) * 1e3}
            last[name] = out
            entry.update(info)
            reply(entry)
        elif verb == "check" and name in last:
            mine = np.fromfile(f"{out_prefix}-{name}.f32", dtype=np.float32, count=d)
            max_diff = float(np.abs(mine.astype(np.float64) - np.asarray(last[name], dtype=np.float64)).max())
            tolerance = TOLERANCE[name] * magnitude
            reply({"max_diff": max_diff, "tolerance": tolerance, "match": bool(max_diff <= tolerance)})
        else:
            reply({"error": f"bad request {line.strip()!r}"})


if __name__ == "__main__":
    main()
