"""agg_numpy.py -- the NumPy baseline of `spirt bench agg`.

The same aggregation rules as src/agg, written the way one writes them with
NumPy (one (n, d) float32 array, vectorised calls), on the very data spirt
aggregated: spirt writes the inputs and its own results to files, this script
times each rule, checks its result against spirt's, and prints one JSON object:
  {"rules": {RULE: {"numpy_ms": ..., "match": bool, "max_diff": ...,
                    "tolerance": ..., "iterations": ..., "note": ...}}}

usage: agg_numpy.py INPUTS.f32 N D F RULES REPEATS OUT_PREFIX
  INPUTS.f32   n * d float32 values, row-major (input i is row i)
  RULES        comma-separated rule names
  OUT_PREFIX   spirt's result for RULE is OUT_PREFIX-RULE.f32 (d float32)

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


def main():
    path, n, d, f, rules, repeats, out_prefix = sys.argv[1:8]
    n, d, f, repeats = int(n), int(d), int(f), int(repeats)
    x = np.fromfile(path, dtype=np.float32, count=n * d).reshape(n, d)
    magnitude = float(np.abs(x).max())
    results = {}
    for name in rules.split(","):
        rule = RULES[name]
        times = []
        for repeat in range(repeats):
            start = time.perf_counter()
            out, info = rule(x, f)
            times.append((time.perf_counter() - start) * 1e3)
            if times[-1] > 3000:  # slow rules: one timed run is enough
                break
        mine = np.fromfile(f"{out_prefix}-{name}.f32", dtype=np.float32, count=d)
        max_diff = float(np.abs(mine.astype(np.float64) - np.asarray(out, dtype=np.float64)).max())
        tolerance = TOLERANCE[name] * magnitude
        entry = {"numpy_ms": float(np.median(times)), "runs": len(times), "max_diff": max_diff,
                 "tolerance": tolerance, "match": bool(max_diff <= tolerance)}
        entry.update(info)
        results[name] = entry
    print(json.dumps({"rules": results, "numpy": np.__version__}))


if __name__ == "__main__":
    main()
