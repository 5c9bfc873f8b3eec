"""Capacity of the Willshaw associative memory: measured against theory.

Stores L random pairs of sparse patterns (M ones in n units) in a
:class:`semhash.memory.WillshawMemory` and, for growing L, recalls a sample of stored pairs
from complete questions (all M ones) and from half-deleted questions (M/2 ones kept),
measuring the fraction of perfect recalls, the mean number of wrong output bits and the
load of the weight matrix. Theory (random patterns, independent weights):

    p1(L)            = 1 - (1 - M^2 / n^2)^L            load
    wrong bits       = (n - M) p1^k                      k = ones in the question
    perfect recalls  = (1 - p1^k)^(n - M)
    capacity         = ln 2 * n^2 / M^2                  pairs at load 1/2

The knee (L where the perfect-recall fraction from complete questions falls below 1/2,
interpolated) must lie within a factor 2 of the capacity; the script exits with status 1
otherwise.

In ``--mode auto`` the weight matrix is symmetric and a pattern sets w_ij (i != j) with
probability M(M-1)/(n(n-1)) rather than M^2/n^2, so the theory above (kept as the common
reference) slightly overstates the load and understates the knee.

The hard threshold (T = ones in the question) is used. For questions that are (part of) a
stored question it gives the same answers as the soft one: the correct units reach T,
the largest possible sum.

Usage::

    python benchmarks/willshaw_capacity.py            # full run, ~seconds
    python benchmarks/willshaw_capacity.py --quick    # CI: fewer points and probes

Writes ``willshaw_capacity.{json,md,png}`` under ``--out`` (``benchmarks/results``;
``--quick``: ``willshaw_capacity.quick.*``, so CI never overwrites the full results).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from _common import add_out_argument, write_results
from semhash.memory import WillshawMemory, willshaw_capacity, willshaw_load
from semhash.sparse_codes import sparse_address

FULL_GRID = [1_000, 2_000, 5_000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000]
QUICK_GRID = [5_000, 10_000, 20_000, 30_000, 40_000]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer L values and probes (CI)")
    parser.add_argument("--mode", choices=["hetero", "auto"], default="hetero",
                        help="hetero: random answers (the classic setting); auto: answer = question")
    parser.add_argument("--n", type=int, default=2000, help="units per pattern")
    parser.add_argument("--m", type=int, default=10, help="ones per pattern")
    parser.add_argument("--probes", type=int, default=None, help="stored pairs recalled per L")
    parser.add_argument("--seed", type=int, default=0)
    add_out_argument(parser)
    return parser.parse_args(argv)


def theory_perfect(p1: np.ndarray, k: int, n: int, m: int) -> np.ndarray:
    return (1.0 - p1**k) ** (n - m)


def knee(grid: np.ndarray, perfect: np.ndarray, level: float = 0.5) -> float | None:
    """First L where ``perfect`` falls below ``level``, linearly interpolated; None if never."""
    for i in range(1, len(grid)):
        if perfect[i - 1] >= level > perfect[i]:
            frac = (perfect[i - 1] - level) / (perfect[i - 1] - perfect[i])
            return float(grid[i - 1] + frac * (grid[i] - grid[i - 1]))
    return None


def theory_knee(n: int, m: int, k: int, level: float = 0.5) -> float:
    """L where ``(1 - p1^k)^(n - m) = level`` in the random-pattern approximation."""
    p1 = (1.0 - level ** (1.0 / (n - m))) ** (1.0 / k)
    return float(np.log1p(-p1) / np.log1p(-(m * m) / (n * n)))


def score(patterns: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(perfect-recall fraction, mean wrong bits, mean missed bits)."""
    wrong = (patterns != truth).sum(axis=1)
    missed = (truth & ~patterns).sum(axis=1)
    return float((wrong == 0).mean()), float(wrong.mean()), float(missed.mean())


def run(args: argparse.Namespace) -> dict:
    n, m = args.n, args.m
    grid = QUICK_GRID if args.quick else FULL_GRID
    n_probes = args.probes or (200 if args.quick else 500)
    half = m // 2
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    questions = sparse_address(np.arange(max(grid)), n, m, seed=args.seed)
    if args.mode == "hetero":
        answers = sparse_address(np.arange(max(grid)), n, m, seed=args.seed + 1)
        memory = WillshawMemory(n, n, threshold="hard")
    else:
        answers = questions
        memory = WillshawMemory(n, threshold="hard")

    rows, store_s, recall_s, n_recalled = [], 0.0, 0.0, 0
    for n_stored in grid:
        t0 = time.perf_counter()
        new = slice(memory.n_stored_, n_stored)
        memory.store(questions[new], None if args.mode == "auto" else answers[new])
        store_s += time.perf_counter() - t0

        probes = rng.choice(n_stored, size=min(n_probes, n_stored), replace=False)
        truth = np.zeros((len(probes), n), dtype=bool)
        truth[np.arange(len(probes))[:, None], answers[probes]] = True
        complete = questions[probes]
        halved = np.sort(rng.permuted(complete, axis=1)[:, :half], axis=1)

        t0 = time.perf_counter()
        found_complete = memory.recall(complete).patterns
        found_half = memory.recall(halved).patterns
        recall_s += time.perf_counter() - t0
        n_recalled += 2 * len(probes)

        p1 = willshaw_load(n_stored, n, n, m, m)
        perfect_c, wrong_c, missed_c = score(found_complete, truth)
        perfect_h, wrong_h, missed_h = score(found_half, truth)
        rows.append({
            "n_stored": n_stored,
            "load": memory.load_,
            "load_theory": p1,
            "perfect_complete": perfect_c,
            "perfect_complete_theory": float(theory_perfect(p1, m, n, m)),
            "wrong_bits_complete": wrong_c,
            "wrong_bits_complete_theory": (n - m) * p1**m,
            "missed_bits_complete": missed_c,
            "perfect_half": perfect_h,
            "perfect_half_theory": float(theory_perfect(p1, half, n, m)),
            "wrong_bits_half": wrong_h,
            "wrong_bits_half_theory": (n - m) * p1**half,
            "missed_bits_half": missed_h,
        })

    grid_arr = np.array(grid, dtype=float)
    capacity = willshaw_capacity(n, n, m, m)
    measured_knee = knee(grid_arr, np.array([r["perfect_complete"] for r in rows]))
    ratio = None if measured_knee is None else measured_knee / capacity
    return {
        "benchmark": "willshaw_capacity",
        "settings": {
            "mode": args.mode, "n": n, "m": m, "half_question_ones": half,
            "grid": grid, "probes_per_point": n_probes, "seed": args.seed,
            "threshold": "hard", "quick": args.quick,
        },
        "rows": rows,
        "capacity_theory": capacity,
        "knee_theory": theory_knee(n, m, m),
        "knee_measured": measured_knee,
        "knee_over_capacity": ratio,
        "knee_half_measured": knee(grid_arr, np.array([r["perfect_half"] for r in rows])),
        "knee_half_theory": theory_knee(n, m, half),
        "within_factor_2": ratio is not None and 0.5 <= ratio <= 2.0,
        "memory_bytes": memory.nbytes,
        "store_pairs_per_s": max(grid) / store_s,
        "recall_questions_per_s": n_recalled / recall_s,
        "runtime_s": time.perf_counter() - started,
        "numpy": np.__version__,
    }


def table(result: dict) -> str:
    lines = [
        "|      L | load  | load th. | perfect (M) | th.   | wrong bits (M) | th.    "
        "| perfect (M/2) | th.   | wrong bits (M/2) | th.    |",
        "|-------:|------:|---------:|------------:|------:|---------------:|-------:"
        "|--------------:|------:|-----------------:|-------:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['n_stored']:6d} | {r['load']:.3f} | {r['load_theory']:8.3f} "
            f"| {r['perfect_complete']:11.3f} | {r['perfect_complete_theory']:.3f} "
            f"| {r['wrong_bits_complete']:14.3f} | {r['wrong_bits_complete_theory']:6.3f} "
            f"| {r['perfect_half']:13.3f} | {r['perfect_half_theory']:.3f} "
            f"| {r['wrong_bits_half']:16.2f} | {r['wrong_bits_half_theory']:6.2f} |"
        )
    return "\n".join(lines)


def summary(result: dict) -> str:
    s = result["settings"]
    def pairs(value: float | None) -> str:
        return "none in range" if value is None else f"{value:,.0f}"

    ratio = result["knee_over_capacity"]
    ratio_text = "n/a" if ratio is None else f"{ratio:.3f}"
    verdict = "PASS" if result["within_factor_2"] else "FAIL"
    return "\n".join([
        f"Willshaw memory, {s['mode']}-association, n = {s['n']}, M = {s['m']}, "
        f"{s['probes_per_point']} probes per L, hard threshold, seed {s['seed']}",
        f"theory capacity ln2 n^2/M^2      = {pairs(result['capacity_theory'])} pairs (load 1/2)",
        f"theory knee (perfect = 0.5)      = {pairs(result['knee_theory'])} pairs",
        f"measured knee (complete, M ones) = {pairs(result['knee_measured'])} pairs",
        f"knee / capacity                  = {ratio_text} ({verdict}: must lie in [0.5, 2])",
        f"measured knee from M/2 ones      = {pairs(result['knee_half_measured'])} "
        f"(theory {pairs(result['knee_half_theory'])})",
        f"weights {result['memory_bytes']:,} bytes packed; store {result['store_pairs_per_s']:,.0f} "
        f"pairs/s; recall {result['recall_questions_per_s']:,.0f} questions/s; "
        f"runtime {result['runtime_s']:.1f} s",
    ])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, rows = result["settings"], result["rows"]
    n, m, half = s["n"], s["m"], s["half_question_ones"]
    grid = np.array([r["n_stored"] for r in rows])
    fine = np.linspace(1, max(grid), 400)
    p1 = np.array([willshaw_load(L, n, n, m, m) for L in fine])
    capacity = result["capacity_theory"]

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    ax.plot(grid, [r["perfect_complete"] for r in rows], "o", color="C0", label=f"measured, {m} ones")
    ax.plot(fine, theory_perfect(p1, m, n, m), "-", color="C0", label="theory $(1-p_1^M)^{n-M}$")
    ax.plot(grid, [r["perfect_half"] for r in rows], "s", color="C1", label=f"measured, {half} ones")
    ax.plot(fine, theory_perfect(p1, half, n, m), "-", color="C1", label=f"theory, {half} ones")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    if result["knee_measured"] is not None:
        ax.axvline(result["knee_measured"], color="C0", ls="--", lw=1,
                   label=f"measured knee {result['knee_measured']:,.0f}")
    ax.set(xlabel="stored pairs L", ylabel="fraction of perfect recalls", title="Perfect recall")

    ax = axes[1]
    # Zero wrong bits cannot be drawn on a log axis: those points are left out.
    def positive(key: str) -> tuple[np.ndarray, np.ndarray]:
        values = np.array([r[key] for r in rows])
        return grid[values > 0], values[values > 0]

    ax.semilogy(*positive("wrong_bits_complete"), "o", color="C0", label=f"measured, {m} ones")
    ax.semilogy(fine, (n - m) * p1**m, "-", color="C0", label="theory $(n-M)p_1^M$")
    ax.semilogy(*positive("wrong_bits_half"), "s", color="C1", label=f"measured, {half} ones")
    ax.semilogy(fine, (n - m) * p1**half, "-", color="C1", label=f"theory, {half} ones")
    ax.set_ylim(1e-3, None)
    ax.set(xlabel="stored pairs L", ylabel="mean wrong bits per recall", title="Wrong output bits")

    ax = axes[2]
    ax.plot(grid, [r["load"] for r in rows], "o", color="C2", label="measured")
    ax.plot(fine, p1, "-", color="C2", label="theory $1-(1-M^2/n^2)^L$")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="stored pairs L", ylabel="load $p_1$ (fraction of ones in W)", title="Matrix load")

    for ax in axes:
        ax.axvline(capacity, color="k", ls="--", lw=1, label=f"capacity ln2 n²/M² = {capacity:,.0f}")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Willshaw memory, {s['mode']}-association, n = {n}, M = {m}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    text = table(result)
    head = summary(result)
    print(text)
    print()
    print(head)

    stem = "willshaw_capacity.quick" if args.quick else "willshaw_capacity"
    write_results(args.out, stem, result,
                  "# Willshaw memory capacity\n\n"
                  "Generated by `benchmarks/willshaw_capacity.py"
                  f"{' --quick' if args.quick else ''}`. `(M)`: complete questions; `(M/2)`: half of "
                  "the question's ones deleted; `th.`: random-pattern theory.\n\n"
                  + text + "\n\n```\n" + head + "\n```\n")
    plot(result, args.out / f"{stem}.png")
    print(f"\nwrote {args.out / stem}.{{json,md,png}}")
    return 0 if result["within_factor_2"] else 1


if __name__ == "__main__":
    sys.exit(main())
