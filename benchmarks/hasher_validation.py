"""Choose SemanticHasher settings on a validation split, never on the test posts.

The validation split is carved from the 20 Newsgroups *training* posts with a fixed seed:
1,500 of them are the queries, the other ones the database the hasher is fit on. Every
default of the hasher was chosen with this script; the history is in
``benchmarks/README.md`` ("What was tried"). ``--split test`` fits on all training posts
and scores the test posts, for reporting a chosen setting, not for choosing one.

Usage::

    python benchmarks/hasher_validation.py --bits 64                       # the defaults
    python benchmarks/hasher_validation.py --bits 64 --params '{"input_dropout": 0.2}'
    python benchmarks/hasher_validation.py --bits 64 --split test           # report only

Prints one JSON line per run (p@10, p@100, fit seconds, best epoch, share of undecided
code units) and appends it to ``benchmarks/results/hasher_validation.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from _common import NEWSGROUPS_CACHE, RESULTS, folder_or_none, newsgroups_counts
from semhash.pipelines.evaluate import evaluate_codes
from semhash.hasher import SemanticHasher

N_VALIDATION_QUERIES = 1500
SPLIT_SEED = 0


def split_counts(data: dict, split: str):
    """(query counts, query labels, database counts, database labels) for the split."""
    X, y = data["train"], data["train_labels"]
    if split == "test":
        return data["test"], data["test_labels"], X, y
    order = np.random.default_rng(SPLIT_SEED).permutation(X.shape[0])
    queries, database = np.sort(order[:N_VALIDATION_QUERIES]), np.sort(order[N_VALIDATION_QUERIES:])
    return X[queries], y[queries], X[database], y[database]


def run(vocab: int, bits: int, params: dict, split: str, cache: Path | None, seed: int = 0) -> dict:
    data = newsgroups_counts(vocab, False, cache)
    Xq, yq, Xd, yd = split_counts(data, split)
    started = time.perf_counter()
    hasher = SemanticHasher(bits, random_state=seed, **params).fit(Xd)
    seconds = time.perf_counter() - started
    report = evaluate_codes("semhash", hasher.transform(Xq), hasher.transform(Xd), bits, yq, yd, full=False)
    real = hasher.transform_real(Xd)
    return {
        "split": split,
        "vocab": vocab,
        "bits": bits,
        "seed": seed,
        "params": params,
        "p_at_10": round(report.p_at_10, 4),
        "p_at_100": round(report.p_at_100, 4),
        "fit_seconds": round(seconds, 1),
        "best_epoch": hasher.best_epoch_,
        "undecided": round(float(((real > 0.1) & (real < 0.9)).mean()), 4),
        "threads": torch.get_num_threads(),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--params", default="{}", help="JSON overrides of SemanticHasher's defaults")
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--seed", type=int, default=0, help="the hasher's random_state (the split is fixed)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: runs can go side by side)")
    parser.add_argument("--cache", type=folder_or_none, default=NEWSGROUPS_CACHE, help="word-count cache folder ('none': off)")
    parser.add_argument("--log", default=str(RESULTS / "hasher_validation.jsonl"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args.vocab, args.bits, json.loads(args.params), args.split, args.cache, args.seed)
    line = json.dumps(result)
    print(line, flush=True)
    if args.log:
        with open(args.log, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
