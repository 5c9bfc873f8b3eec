"""2-D maps of 20 Newsgroups: how well does each map keep topics together, how fast is it?

Methods (all fit on the 11,314 training posts, 2000-word vocabulary from train):

* LSA-2         first two singular directions of the TF-IDF
* UMAP          UMAP over LSA-50, cosine, random_state=0 (umap-learn)
* t-SNE         sklearn Barnes-Hut t-SNE over LSA-50, cosine (cannot place new documents:
                leave-one-out on train only)
* TopicMap, reconstruction only
                semhash deep autoencoder 2000-500-250-125-2, linear code, reconstruction
                fine-tuning (the starting point of the next one)
* semhash TopicMap default
                the same network, then TopicMap's default parametric t-SNE stage
                (semhash.parametric_tsne): what ``TopicMap().fit`` and ``semhash map`` give

Scores: 10-NN label accuracy and precision@100 of the test posts placed in 2-D against
the train points (Euclidean in the map), leave-one-out 10-NN accuracy of the train posts,
fitting time, and time to place 1,000 new documents from their word counts (after one
warm-up call; UMAP's first call also compiles numba code, reported separately).

TopicMap's t-SNE defaults (epochs, input dropout, ...) were chosen by ``--stage select``
on a validation split of train (stratified 20%, seed 0): the reconstruction TopicMap is fit
on the other 80%, each variant in ``SELECT_VARIANTS`` is fine-tuned from it and scored
every 10 epochs by the validation posts' 10-NN accuracy (curves in
``benchmarks/results/maps.selection.json``). The test split is never looked at there;
``--stage final`` (the default) runs the library defaults.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/maps.py --stage select
    OMP_NUM_THREADS=1 python benchmarks/maps.py            # final run, tens of minutes on 1 core
    python benchmarks/maps.py --quick                      # CI: 4 groups, small network, ~1 minute

Writes ``maps.{json,md,png}`` and ``news-map-compare.png`` (semhash | UMAP | LSA-2, for
the README; ``--quick``: ``*.quick.*``) under ``--out`` (``benchmarks/results``); the parts'
results and the fitted TopicMap stay in ``--cache``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np

from _common import (
    NEWSGROUPS,
    TMP,
    add_out_argument,
    count_words,
    fit_or_load,
    log,
    read_documents,
    write_results,
)

QUICK_GROUPS = ("comp.graphics", "rec.sport.hockey", "sci.space", "talk.politics.mideast")
PRETRAIN_LR = 0.1
DEFAULT_CHOICE = {"affinity": "knn", "objective": "tsne", "init": "reconstruction", "n_epochs": None}


# ----------------------------------------------------------------------------- data
def load(quick: bool):
    """``{split: (counts, labels, documents)}`` of train and test, and the vocabulary;
    ``quick``: the first 150 train / 40 test posts of each of 4 groups, 1,000 words."""
    splits = {}
    for split in ("train", "test"):
        docs = read_documents(NEWSGROUPS, f"20news-bydate-{split}")
        if quick:
            per_group = 150 if split == "train" else 40
            taken: dict[str, int] = {}
            kept = []
            for doc in docs:
                if doc.label in QUICK_GROUPS and taken.get(doc.label, 0) < per_group:
                    taken[doc.label] = taken.get(doc.label, 0) + 1
                    kept.append(doc)
            docs = kept
        splits[split] = docs
    counter, counts, kept = count_words({split: [d.text for d in docs] for split, docs in splits.items()},
                                        2000 if not quick else 1000)
    out = {}
    for split in ("train", "test"):
        docs = [splits[split][i] for i in kept[split]]
        out[split] = (counts[split], np.array([d.label for d in docs]), docs)
    return out, counter.words_


# -------------------------------------------------------------------------- scoring
def knn_scores(train_points, train_labels, query_points=None, query_labels=None, k: int = 10, top: int = 100):
    """10-NN vote accuracy and precision@100 of queries against train (Euclidean, 2-D);
    without queries, leave-one-out over train."""
    from sklearn.neighbors import NearestNeighbors

    classes, train_y = np.unique(train_labels, return_inverse=True)
    leave_one_out = query_points is None
    queries = train_points if leave_one_out else query_points
    query_y = train_y if leave_one_out else np.searchsorted(classes, query_labels)
    width = min(top, len(train_points) - 1) + (1 if leave_one_out else 0)
    index = NearestNeighbors(n_neighbors=width).fit(train_points)
    _, neighbours = index.kneighbors(queries)
    if leave_one_out:
        # drop each point itself (it is its own nearest neighbour, barring exact duplicates)
        own = neighbours == np.arange(len(queries))[:, None]
        own[own.sum(1) == 0, -1] = True
        neighbours = neighbours[~own].reshape(len(queries), -1)
    neighbour_y = train_y[neighbours]
    votes = np.zeros((len(queries), len(classes)))
    np.add.at(votes, (np.repeat(np.arange(len(queries)), k), neighbour_y[:, :k].ravel()), 1.0)
    accuracy = float((votes.argmax(1) == query_y).mean())
    precision = float((neighbour_y[:, :top] == query_y[:, None]).mean())
    return accuracy, precision


def time_placement(transform, counts, n: int = 1000):
    """Seconds to place ``n`` documents (after a warm-up call on 10)."""
    rows = np.arange(min(n, counts.shape[0]))
    warm_started = time.perf_counter()
    transform(counts[:10])
    first_call = time.perf_counter() - warm_started
    started = time.perf_counter()
    transform(counts[rows])
    seconds = time.perf_counter() - started
    return seconds * n / len(rows), first_call


# ---------------------------------------------------------------------------- models
def topic_map_params(quick: bool) -> dict:
    if quick:
        return dict(hidden_layers=(200, 100, 50), pretrain_epochs=3, finetune_epochs=10, random_state=0)
    # 2000-500-250-125-2 (library default). pretrain_learning_rate=0.1 instead of the default 0.5:
    # with 0.5 on the full 11,314 train posts, pretraining collapsed (layer-2 RBM error 5.07 and
    # layers 3-4 ~0.002, i.e. saturated/constant units; fine-tuning loss flat at 6.78), so the map
    # was degenerate; 0.1 is the rate the lead's own sweep was testing.
    return dict(random_state=0, pretrain_learning_rate=PRETRAIN_LR)


def tsne_params(quick: bool) -> dict:
    """The t-SNE stage of the library default (TopicMap's own defaults; fewer epochs in --quick)."""
    from semhash import TopicMap

    defaults = TopicMap()
    return dict(n_epochs=12 if quick else defaults.tsne_epochs, perplexity=defaults.perplexity,
                input_dropout=defaults.tsne_input_dropout)


def fit_topic_map(counts, quick: bool, objective: str = "reconstruction", cache: Path | None = None):
    """The TopicMap network with reconstruction fine-tuning only: the starting point of the
    t-SNE stage (the library default = this, then :func:`fit_parametric_tsne`); kept in
    ``cache`` when given. Returns the model and its fit seconds."""
    from semhash import TopicMap

    model, seconds, _ = fit_or_load(TopicMap(verbose=True, objective=objective, **topic_map_params(quick)), counts, cache)
    return model, seconds


def fit_parametric_tsne(counts, quick: bool, choice: dict, base=None):
    """The parametric t-SNE map: RBM pretraining (plus reconstruction fine-tuning when
    ``choice["init"] == "reconstruction"``: a copy of the fitted TopicMap ``base``), then
    t-SNE fine-tuning. Returns the model and the seconds spent beyond ``base``."""
    from semhash import TopicMap
    from semhash.parametric_tsne import tsne_fine_tune_estimator

    started = time.perf_counter()
    if choice.get("init", "reconstruction") == "pretrained":
        model = TopicMap(**(topic_map_params(quick) | {"finetune_epochs": 0})).fit(counts)
    else:
        model = copy.deepcopy(base)
    options = {"affinity": choice["affinity"], "objective": choice["objective"]} | tsne_params(quick)
    if choice.get("n_epochs"):
        options["n_epochs"] = choice["n_epochs"]
    options |= choice.get("options", {})
    if choice["affinity"] == "batch":
        options["batch_size"] = 1000
    model.verbose = True
    tsne_fine_tune_estimator(model, counts, **options)
    return model, time.perf_counter() - started


# ----------------------------------------------------------------------------- stages
# Variants compared by --stage select (fine_tune_tsne options, plus "epochs", "every" = how
# often to score, "perplexity"); all start from the same reconstruction-fine-tuned TopicMap.
SELECT_VARIANTS = {
    "const 80": {"epochs": 80, "every": 10},
    "cosine 40": {"epochs": 40, "schedule": "cosine"},
    "dof 0.5 const 30": {"epochs": 30, "dof": 0.5},
    "dof 0.5 cosine 30": {"epochs": 30, "dof": 0.5, "schedule": "cosine"},
    "perplexity 15 const 30": {"epochs": 30, "perplexity": 15.0},
    "batch 1000 const 30": {"epochs": 30, "batch_size": 1000},
    "negatives 500 const 30": {"epochs": 30, "n_negatives": 500},
    "exaggeration 12x3 const 30": {"epochs": 30, "exaggeration": 12.0},
    "lr 2e-2 const 40": {"epochs": 40, "learning_rate": 0.02},
    "input dropout 0.2 const 40": {"epochs": 40, "input_dropout": 0.2},
    "input dropout 0.5 const 80": {"epochs": 80, "input_dropout": 0.5},
    "input dropout 0.7 const 60": {"epochs": 60, "input_dropout": 0.7},
}


def select(quick: bool, suffix: str, out: Path, variants: dict | None = None) -> dict:
    """Score parametric t-SNE variants on a validation split of train (every ``every``
    epochs, one uninterrupted run each) and write the curves; the best point is the choice."""
    import torch
    from sklearn.model_selection import train_test_split

    from semhash.pipelines import baseline_maps
    from semhash.data import as_generator
    from semhash.parametric_tsne import TSNEConfig, fine_tune_tsne, knn_affinities, lsa_features

    torch.set_num_threads(1)
    data, _ = load(quick)
    counts, labels, _ = data["train"]
    fit_rows, val_rows = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    fit_rows, val_rows = np.sort(fit_rows), np.sort(val_rows)
    X, V = counts[fit_rows], counts[val_rows]
    log(f"selection: fit on {len(fit_rows)}, validate on {len(val_rows)} train posts")
    scores, curves = {}, {}

    def score(model_points, val_points):
        acc, prec = knn_scores(model_points, labels[fit_rows], val_points, labels[val_rows])
        return {"val_10nn_accuracy": round(acc, 4), "val_precision_at_100": round(prec, 4)}

    try:
        points, umap = baseline_maps.umap_map(X)
        scores["UMAP (reference)"] = score(points, umap.transform(V))
        log("UMAP", scores["UMAP (reference)"])
    except ImportError as err:
        log(f"no UMAP reference: {err}")
    base, base_seconds = fit_topic_map(X, quick, objective="reconstruction")
    scores["reconstruction"] = score(base.transform(X), base.transform(V)) | {"seconds": round(base_seconds, 1)}
    log("reconstruction", scores["reconstruction"])
    features = lsa_features(X, random_state=0)
    inputs = base._encoder_input(X)
    variants = variants or ({"const 12": {"epochs": 12, "every": 4}, "input dropout 0.5 const 12":
                             {"epochs": 12, "every": 4, "input_dropout": 0.5}} if quick else SELECT_VARIANTS)
    for name, variant in variants.items():
        options = dict(variant)
        n_epochs, every = options.pop("epochs"), options.pop("every", 10)
        perplexity = options.pop("perplexity", 30.0)
        model = copy.deepcopy(base)
        started, curve = time.perf_counter(), []

        def on_epoch(epoch):
            if epoch % every == 0 or epoch == n_epochs:
                curve.append({"epochs": epoch, "seconds": round(time.perf_counter() - started, 1)}
                             | score(model.transform(X), model.transform(V)))
                log(name, curve[-1])

        fine_tune_tsne(model.model_, inputs, TSNEConfig(perplexity=perplexity, n_epochs=n_epochs, **options),
                       affinities=knn_affinities(features, perplexity), generator=as_generator(0), on_epoch=on_epoch)
        curves[name] = {"config": variant, "curve": curve}
    # the best validation accuracy, or the cheapest point (fewest epochs) within 0.005 of it
    points = [(k, p) for k, c in curves.items() for p in c["curve"]]
    top = max(p["val_10nn_accuracy"] for _, p in points)
    best_name, best_point = min(((k, p) for k, p in points if p["val_10nn_accuracy"] >= top - 0.005),
                                key=lambda kp: (kp[1]["epochs"], -kp[1]["val_10nn_accuracy"]))
    best = dict(variants[best_name])
    best.pop("every", None)
    choice = {"affinity": "knn", "objective": "tsne", "init": "reconstruction",
              "n_epochs": best_point["epochs"], "options": {k: v for k, v in best.items() if k != "epochs"}}
    result = {"choice": choice, "scores": scores, "curves": curves,
              "split": "stratified 20% of train as validation, seed 0; test never used"}
    path = write_results(out, f"maps.selection{suffix}", result)["json"]
    log(f"chose {best_name} at {best_point['epochs']} epochs; wrote {path}")
    return result


def _row(name, train_points, y_train, fit_seconds, test_points=None, y_test=None, place=None, note=""):
    loo_acc, _ = knn_scores(train_points, y_train)
    row = {"method": name, "train_loo_10nn_accuracy": loo_acc, "fit_seconds": round(fit_seconds, 1), "note": note}
    if test_points is not None:
        acc, prec = knn_scores(train_points, y_train, test_points, y_test)
        row |= {"test_10nn_accuracy": acc, "test_precision_at_100": prec}
    if place is not None:
        row |= {"place_1000_seconds": place[0], "first_call_seconds": place[1],
                "placed": int(min(1000, len(test_points)))}
    log(row)
    return row


def run_part(part: str, quick: bool, cache: Path, wait_selection: float = 0.0) -> None:
    """``baselines`` (LSA-2, UMAP, t-SNE) or ``semhash`` (TopicMap, parametric t-SNE): fit,
    score and save rows and train points under ``cache``, so the two can run as two
    processes; :func:`combine` then writes the results."""
    import torch

    from semhash.pipelines import baseline_maps

    torch.set_num_threads(1)
    data, _ = load(quick)
    (train, y_train, _), (test, y_test, _) = data["train"], data["test"]
    log(f"{part}: {train.shape[0]} train, {test.shape[0]} test posts, {train.shape[1]} words")
    rows, points, extra = [], {}, {}

    def record(name, train_points, fit_seconds, test_points=None, place=None, note=""):
        points[name] = train_points
        rows.append(_row(name, train_points, y_train, fit_seconds, test_points, y_test, place, note))

    if part == "baselines":
        started = time.perf_counter()
        lsa_points, lsa = baseline_maps.lsa_map(train)
        record("LSA-2", lsa_points, time.perf_counter() - started, lsa.transform(test),
               time_placement(lsa.transform, test))
        try:
            started = time.perf_counter()
            umap_points, umap = baseline_maps.umap_map(train)
            fit_seconds = time.perf_counter() - started
            record("UMAP (LSA-50, cosine)", umap_points, fit_seconds, umap.transform(test),
                   time_placement(umap.transform, test), note="fit includes numba compilation")
        except ImportError as err:
            log(f"skipping UMAP: {err}")
        started = time.perf_counter()
        tsne_points = baseline_maps.tsne_map(train)
        record("t-SNE (LSA-50, cosine)", tsne_points, time.perf_counter() - started,
               note="non-parametric: cannot place new documents")
    else:
        # A previous run of this part already fit it (same data, parameters and code): reused.
        topic_map, fit_seconds = fit_topic_map(train, quick, cache=cache)
        record("TopicMap, reconstruction only", topic_map.transform(train), fit_seconds, topic_map.transform(test),
               time_placement(topic_map.transform, test), note=f"best epoch {topic_map.best_epoch_}")
        # The library default: the same network, then TopicMap's default t-SNE stage (its
        # defaults were chosen by --stage select on the validation split; see maps.selection.json).
        choice = DEFAULT_CHOICE
        log(f"parametric t-SNE stage: {tsne_params(quick)}")
        ptsne, tsne_seconds = fit_parametric_tsne(train, quick, choice, base=topic_map)
        record("semhash TopicMap default (parametric t-SNE)", ptsne.transform(train),
               tsne_seconds + fit_seconds, ptsne.transform(test), time_placement(ptsne.transform, test),
               note=f"reconstruction fine-tuning, then {len(ptsne.tsne_history_)} t-SNE epochs")
        extra = {"choice": choice | {"tsne": tsne_params(quick)}, "tsne_history": ptsne.tsne_history_,
                 "topic_map_params": {k: list(v) if isinstance(v, tuple) else v
                                      for k, v in topic_map_params(quick).items()}}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(cache / f"{part}.npz", **{f"p{i}": points[row["method"]] for i, row in enumerate(rows)})
    (cache / f"{part}.json").write_text(json.dumps({"rows": rows, "extra": extra,
                                                    "threads": torch.get_num_threads()}, indent=2))
    log(f"{part}: saved under {cache}")


def combine(quick: bool, suffix: str, cache: Path, out: Path, html: str | None = None) -> dict:
    """Write ``maps{suffix}.{json,md,png}`` from the saved parts."""
    from semhash.pipelines import maps

    data, _ = load(quick)
    (train, y_train, train_docs), (test, _, _) = data["train"], data["test"]
    rows, points, extra = [], {}, {}
    for part in ("baselines", "semhash"):
        saved = json.loads((cache / f"{part}.json").read_text())
        arrays = np.load(cache / f"{part}.npz")
        for i, row in enumerate(saved["rows"]):
            rows.append(row)
            points[row["method"]] = arrays[f"p{i}"]
        extra |= saved["extra"]
    corpus = "20 Newsgroups" + (" (4 groups)" if quick else "")
    figure = maps.draw_comparison(points, list(y_train), title=maps.map_title(len(y_train), corpus, "train posts"),
                                  panel_size=5.5)
    out.mkdir(parents=True, exist_ok=True)
    figure.savefig(out / f"maps{suffix}.png", dpi=90, bbox_inches="tight")
    compare_figure(rows, points, list(y_train), corpus, suffix, out)
    if html:
        name = next(k for k in points if k.startswith("semhash"))
        maps.write_html_map(points[name], list(y_train), [d.title for d in train_docs],
                            [d.text[:400] for d in train_docs], html,
                            title=maps.map_title(len(y_train), corpus, "semhash TopicMap"))
    result = {
        "quick": quick,
        "n_train": int(train.shape[0]),
        "n_test": int(test.shape[0]),
        "n_words": int(train.shape[1]),
        **extra,
        "rows": rows,
        "threads": "1 torch/numba thread per process; times are wall-clock, indicative only on a shared machine",
    }
    result.setdefault("choice", DEFAULT_CHOICE)
    write_results(out, f"maps{suffix}", result, markdown(result))
    log(f"wrote {out}/maps{suffix}.{{json,md,png}}")
    return result


def compare_figure(rows, points, labels, corpus: str, suffix: str, out: Path) -> Path:
    """``news-map-compare{suffix}.png``: the library's default map | UMAP | LSA-2 of the train
    posts, each panel titled with its test 10-NN accuracy and time to place 1,000 posts."""
    from semhash.pipelines import maps

    by_name = {row["method"]: row for row in rows}
    semhash_name = next(name for name in by_name if name.startswith("semhash"))
    panels = {}
    for name, short in ((semhash_name, "semhash TopicMap (default)"), ("UMAP (LSA-50, cosine)", "UMAP over LSA-50"),
                        ("LSA-2", "LSA-2")):
        if name in by_name:
            row = by_name[name]
            panels[f"{short}\ntest 10-NN acc {row['test_10nn_accuracy']:.3f}, "
                   f"1,000 placed in {row['place_1000_seconds']:.3f} s"] = points[name]
    figure = maps.draw_comparison(panels, labels, title=maps.map_title(len(labels), corpus, "train posts"),
                                  panel_size=5.5)
    path = out / f"news-map-compare{suffix}.png"
    figure.savefig(path, dpi=80, bbox_inches="tight")
    return path


def final(quick: bool, suffix: str, cache: Path, out: Path, html: str | None, wait_selection: float = 0.0) -> dict:
    run_part("baselines", quick, cache)
    run_part("semhash", quick, cache, wait_selection)
    return combine(quick, suffix, cache, out, html)


def markdown(result) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [
        f"# 2-D maps of 20 Newsgroups{' (quick)' if result['quick'] else ''}",
        "",
        f"{result['n_train']:,} train / {result['n_test']:,} test posts, {result['n_words']}-word vocabulary. "
        "10-NN accuracy: majority label of the 10 nearest train points in the map; P@100: share of the "
        "100 nearest train points with the query's label; LOO: leave-one-out on train. "
        "Placement: seconds for 1,000 new documents from word counts (after a warm-up call).",
        "",
        "| method | test 10-NN acc | test P@100 | train LOO 10-NN acc | fit (s) | place 1,000 (s) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {fmt(row.get('test_10nn_accuracy'), '.3f')} | "
            f"{fmt(row.get('test_precision_at_100'), '.3f')} | {row['train_loo_10nn_accuracy']:.3f} | "
            f"{row['fit_seconds']:.0f} | {fmt(row.get('place_1000_seconds'), '.3f')} | {row['note']} |"
        )
    by_name = {row["method"]: row for row in result["rows"]}
    umap_row = by_name.get("UMAP (LSA-50, cosine)")
    row = by_name.get("semhash TopicMap default (parametric t-SNE)")
    if umap_row and row and row.get("place_1000_seconds"):
        speedup = umap_row["place_1000_seconds"] / row["place_1000_seconds"]
        accuracy_ok = row["test_10nn_accuracy"] >= umap_row["test_10nn_accuracy"]
        lines += [
            "",
            f"Target 1, test 10-NN accuracy >= UMAP's: {row['test_10nn_accuracy']:.3f} vs "
            f"{umap_row['test_10nn_accuracy']:.3f}: **{'PASS' if accuracy_ok else 'MISS'}**.",
            "",
            f"Target 2, placing new documents >= 10x faster than UMAP's transform: {speedup:.0f}x "
            f"({row['place_1000_seconds']:.3f} s vs {umap_row['place_1000_seconds']:.3f} s for 1,000 posts): "
            f"**{'PASS' if speedup >= 10 else 'MISS'}**.",
        ]
    lines += ["", f"{result['threads']}. t-SNE stage (TopicMap defaults, chosen on a validation split of train): {result['choice'].get('tsne')}.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 groups, small network, few epochs (CI)")
    parser.add_argument("--stage", choices=("select", "final", "both"), default="final")
    parser.add_argument("--part", choices=("baselines", "semhash", "combine"), default=None,
                        help="run one part of the final stage (two parts can run as two processes), "
                             "or combine the saved parts")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for the parts' results and the fitted TopicMap (default $TMPDIR/semhash-maps*)")
    add_out_argument(parser)
    parser.add_argument("--html", default=None, help="also write the parametric t-SNE map as an HTML page here")
    parser.add_argument("--wait-selection", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for a concurrent --stage select run's choice")
    args = parser.parse_args(argv)
    suffix = ".quick" if args.quick else ""
    cache = args.cache or TMP / f"semhash-maps{suffix}"
    if args.part:
        if args.part == "combine":
            combine(args.quick, suffix, cache, args.out, args.html)
        else:
            run_part(args.part, args.quick, cache, args.wait_selection)
        return
    if args.stage in ("select", "both"):
        select(args.quick, suffix, args.out)
    if args.stage in ("final", "both"):
        final(args.quick, suffix, cache, args.out, args.html, args.wait_selection)


if __name__ == "__main__":
    main()
