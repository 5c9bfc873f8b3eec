"""One harness over many corpora: do semhash's default codes beat the baselines everywhere?

Every labelled text corpus under ``--data`` (``../shared/data``) is found by its layout --
an archive or folder holding ``<name>/train/<label>/...`` and ``<name>/test/<label>/...``
(or ``<name>-train`` / ``<name>-test``) of text files -- and 20 Newsgroups is also run in
four variants that change the regime:

* ``20news-short``   the first 40 words of each post (short documents);
* ``20news-coarse``  the 6 top-level hierarchies (comp, rec, sci, talk, alt+soc, misc) as
  labels: coarser relevance, same documents (the fitted models of ``20news`` are reused:
  fitting never sees labels);
* ``20news-small``   2,000 training posts (seeded sample), all test posts;
* ``20news-v10000``  the 10,000-word vocabulary.

Protocol per corpus: train = database, test = queries, relevant = shares a label,
precision@100. Methods: semhash defaults (``SemanticHasher(n_bits=B)``) at 32, 64 and 128
bits (Hamming); TF-IDF cosine with raw and sublinear TF; LSA at 32/64/128 dimensions and
ITQ at 32/64/128 bits, each on the better of raw and sublinear TF-IDF; the default 2-D
``TopicMap`` beside LSA-2 and UMAP, by 10-NN accuracy of the test documents against the
train points. Also each fit's seconds, the epoch early stopping chose, and the codes'
spread (distinct codes, live bits). The ratio reported is semhash / best baseline at the
same size (best of TF-IDF raw/sublinear, LSA and ITQ).

``--validation`` replaces test by a seeded 20% of train (the rest is the database): the
split on which defaults are chosen. ``--params '{"pretrain_epochs": 10}'`` overrides
SemanticHasher defaults (for trying settings on validation). Fitted models are cached
(``--cache``) so an interrupted run resumes.

Usage::

    python benchmarks/corpora.py                       # full run: writes corpora.{md,json,png}
    python benchmarks/corpora.py --validation          # the same on validation splits
    python benchmarks/corpora.py --quick               # CI: small subsets, small networks
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from _common import (
    SHARED_DATA,
    TMP,
    add_out_argument,
    count_words,
    environment,
    environment_line,
    fit_or_load,
    load_arrays,
    log,
    read_documents,
    save_arrays,
    write_results,
)
from semhash.pipelines.evaluate import evaluate_codes, evaluate_vectors
from semhash.codes import code_spread

DEFAULT_CACHE = TMP / "semhash-corpora-cache"
BITS = (32, 64, 128)
QUICK_BITS = (32,)
QUICK_SIZES = (1500, 500)  # train, test documents per corpus in --quick
QUICK_NEURAL = dict(hidden_layers=(200, 100), pretrain_epochs=2, finetune_epochs=15)
QUICK_MAP = dict(hidden_layers=(200, 50, 20), pretrain_epochs=2, finetune_epochs=10)
VALIDATION_SHARE, VALIDATION_SEED = 0.2, 0
TARGET_RATIO = 1.10
SHORT_WORDS = 40
SMALL_TRAIN = 2000
COARSE = {"comp": "comp", "rec": "rec", "sci": "sci", "talk": "talk", "alt": "alt+soc", "soc": "alt+soc", "misc": "misc"}


# ---------------------------------------------------------------------- corpora
@dataclass
class Corpus:
    """Where a corpus's train and test documents are (``subdir`` of ``source``)."""

    name: str
    source: Path
    train: str
    test: str
    vocab: int = 2000
    variant: str | None = None  # None, "short", "coarse", "small"
    notes: list[str] = field(default_factory=list)


_SPLIT = re.compile(r"^(?P<root>.*?)(?:/|-)(?P<split>train|test)$")


def discover(data: Path) -> list[Corpus]:
    """Labelled text corpora under ``data``: archives (or folders) whose members include
    ``<root>/train/<label>/<file>`` and ``<root>/test/<label>/<file>`` (or ``<root>-train``
    ...), with text files (no suffix or ``.txt``). Image collections are skipped."""
    found = []
    for path in sorted(data.iterdir()):
        if path.name.startswith("."):
            continue
        splits = _splits(path)
        if splits:
            root, (train, test) = splits
            name = root.split("/")[-1].removesuffix("-bydate") or path.name.split(".")[0]
            found.append(Corpus(name=name, source=path, train=train, test=test))
    return found


def _splits(path: Path) -> tuple[str, tuple[str, str]] | None:
    """The train/test folders of a corpus archive or folder, or None if it is not one."""
    seen: dict[str, dict[str, str]] = {}
    for member in _member_names(path):
        parts = member.split("/")
        if len(parts) < 3:
            continue
        parent, filename = "/".join(parts[:-2]), parts[-1]
        match = _SPLIT.match(parent)
        if not match:
            continue
        if "." in filename and not filename.endswith(".txt"):
            return None  # images or other data
        seen.setdefault(match["root"], {})[match["split"]] = parent
        if len(seen[match["root"]]) == 2:
            return match["root"], (seen[match["root"]]["train"], seen[match["root"]]["test"])
    return None


def _member_names(path: Path):
    if path.is_dir():
        for file in path.rglob("*"):
            if file.is_file():
                yield file.relative_to(path).as_posix()
    elif path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile():
                    yield member.name.lstrip("./")


def variants(base: Corpus) -> list[Corpus]:
    """The 20 Newsgroups variants (see the module docstring)."""
    make = lambda suffix, **kw: Corpus(name=f"{base.name}-{suffix}", source=base.source, train=base.train, test=base.test, **kw)
    return [
        make("short", variant="short", notes=[f"first {SHORT_WORDS} words of each post"]),
        make("coarse", variant="coarse", notes=["6 top-level hierarchies as labels"]),
        make("small", variant="small", notes=[f"{SMALL_TRAIN} training posts"]),
        make("v10000", vocab=10000, notes=["10,000-word vocabulary"]),
    ]


def load(corpus: Corpus, *, quick: bool, validation: bool, cache: Path) -> dict:
    """Word counts (vocabulary fit on the database part) and labels of database and queries."""
    mode = f"{'quick-' if quick else ''}{'val-' if validation else ''}"
    # "words-", not the "counts-" of caches in the older layout (matrices "db" and "q").
    path = cache / f"words-{corpus.name}-{mode}v{corpus.vocab}.npz"
    if path.exists():
        out = load_arrays(path)
        out.update(db_labels=out["db_labels"].astype(str), query_labels=out["query_labels"].astype(str))
        return out
    db = read_documents(corpus.source, corpus.train)
    queries = None if validation else read_documents(corpus.source, corpus.test)
    if validation:  # queries from a seeded share of train; the test part is never read
        order = np.random.default_rng(VALIDATION_SEED).permutation(len(db))
        n_val = int(round(VALIDATION_SHARE * len(db)))
        queries, db = [db[i] for i in np.sort(order[:n_val])], [db[i] for i in np.sort(order[n_val:])]
    if corpus.variant == "small":
        db = [db[i] for i in np.sort(np.random.default_rng(0).choice(len(db), min(SMALL_TRAIN, len(db)), replace=False))]
    if quick:
        db, queries = ([docs[i] for i in np.sort(np.random.default_rng(0).choice(len(docs), min(n, len(docs)), replace=False))]
                       for docs, n in zip((db, queries), QUICK_SIZES))
    texts = {part: [_text(d.text, corpus.variant) for d in docs] for part, docs in (("db", db), ("queries", queries))}
    labels = {part: [_label(d.label, corpus.variant) for d in docs] for part, docs in (("db", db), ("queries", queries))}
    _, out, kept = count_words(texts, corpus.vocab)  # the vocabulary is fit on the database part
    out["db_labels"] = np.array(labels["db"], dtype=str)[kept["db"]]
    out["query_labels"] = np.array(labels["queries"], dtype=str)[kept["queries"]]
    out["mean_words"] = float(np.mean([len(t.split()) for t in texts["db"]]))
    save_arrays(path, out)
    return out


def _text(text: str, variant: str | None) -> str:
    return " ".join(text.split()[:SHORT_WORDS]) if variant == "short" else text


def _label(label: str, variant: str | None) -> str:
    return COARSE.get(label.split(".")[0], "misc") if variant == "coarse" else label


# ----------------------------------------------------------------------- methods
def _best_of_tf(make, db, queries, yq, ydb, score):
    """Fit ``make(sublinear)`` on raw and sublinear TF; the better p@100 and which TF won."""
    results = []
    for sublinear in (False, True):
        results.append((score(make(sublinear), db, queries, yq, ydb), "sublinear" if sublinear else "raw"))
    return max(results)


def _vector_p100(model, db, queries, yq, ydb) -> float:
    model.fit(db)
    return evaluate_vectors("x", model.transform(queries), model.transform(db), yq, ydb, full=False).p_at_100


def _code_p100(model, db, queries, yq, ydb) -> float:
    model.fit(db)
    return evaluate_codes("x", model.transform(queries), model.transform(db), model.n_bits, yq, ydb, full=False).p_at_100


def knn_accuracy(train_points, train_labels, query_points, query_labels, k: int = 10) -> float:
    """Share of queries whose k nearest train points (Euclidean) vote for the query's label."""
    from sklearn.neighbors import KNeighborsClassifier

    classifier = KNeighborsClassifier(n_neighbors=min(k, len(train_points))).fit(train_points, train_labels)
    return float((classifier.predict(query_points) == np.asarray(query_labels)).mean())


def run_corpus(corpus: Corpus, data: dict, args, cache: Path, fit_map: bool = True) -> dict:
    from semhash.baselines import ITQ, LSA, TfidfCosine
    from semhash.hasher import SemanticHasher
    from semhash.pipelines.baseline_maps import LSAMap, UMAPMap
    from semhash.topic_map import TopicMap

    db, queries, ydb, yq = data["db"], data["queries"], data["db_labels"], data["query_labels"]
    bits = QUICK_BITS if args.quick else tuple(args.bits)
    params = dict(QUICK_NEURAL if args.quick else {}, **args.params)
    row = {"corpus": corpus.name, "notes": corpus.notes, "n_db": db.shape[0], "n_queries": queries.shape[0],
           "n_labels": len(set(ydb)), "vocab": corpus.vocab, "mean_words": round(data["mean_words"], 1),
           "chance": float(np.mean([np.mean(ydb == label) for label in yq])), "sizes": {}}
    started = time.perf_counter()
    for tf_name, sublinear in (("tfidf-raw", False), ("tfidf-sublinear", True)):
        row[tf_name] = _vector_p100(TfidfCosine(sublinear_tf=sublinear), db, queries, yq, ydb)
    for size in bits:
        entry = {}
        entry["lsa"], entry["lsa_tf"] = _best_of_tf(lambda s: LSA(n_components=size, sublinear_tf=s), db, queries, yq, ydb, _vector_p100)
        entry["itq"], entry["itq_tf"] = _best_of_tf(lambda s: ITQ(n_bits=size, sublinear_tf=s), db, queries, yq, ydb, _code_p100)
        model, _, cached = fit_or_load(SemanticHasher(n_bits=size, **params), db, cache)
        db_codes = model.transform(db)
        entry["semhash"] = evaluate_codes("x", model.transform(queries), db_codes, size, yq, ydb, full=False).p_at_100
        spread = code_spread(np.unpackbits(db_codes, axis=1)[:, :size])  # over the whole database, cached or not
        entry.update(fit_seconds=round(model.fit_seconds_, 1), best_epoch=model.best_epoch_, cached=cached,
                     distinct_codes=spread.distinct, live_bits=spread.live_bits, collapsed=spread.collapsed,
                     warnings=getattr(model, "fit_warnings_", []))
        best = max(row["tfidf-raw"], row["tfidf-sublinear"], entry["lsa"], entry["itq"])
        entry["best_baseline"] = best
        entry["ratio"] = entry["semhash"] / best if best else None
        row["sizes"][str(size)] = entry
        log(f"{corpus.name} {size} bits: semhash {entry['semhash']:.3f}, best baseline {best:.3f} "
            f"(ratio {entry['ratio']:.2f}; fit {entry['fit_seconds']:.0f}s, best epoch {entry['best_epoch']})")
    if fit_map:
        map_params = dict(QUICK_MAP if args.quick else {}, **args.map_params)
        model, _, _ = fit_or_load(TopicMap(n_components=2, **map_params), db, cache)
        row["map"] = {"topicmap": knn_accuracy(model.transform(db), ydb, model.transform(queries), yq),
                      "topicmap_fit_seconds": round(model.fit_seconds_, 1)}
        lsa2 = LSAMap().fit(db)
        row["map"]["lsa2"] = knn_accuracy(lsa2.transform(db), ydb, lsa2.transform(queries), yq)
        try:
            umap = UMAPMap().fit(db)
            row["map"]["umap"] = knn_accuracy(umap.embedding_, ydb, umap.transform(queries), yq)
        except ImportError as err:
            row["map"]["umap"] = None
            log(f"UMAP skipped: {err}")
        log(f"{corpus.name} map 10-NN accuracy: TopicMap {row['map']['topicmap']:.3f}, LSA-2 {row['map']['lsa2']:.3f}, "
            f"UMAP {row['map']['umap'] if row['map']['umap'] is None else round(row['map']['umap'], 3)}")
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _earlier_maps(path: Path | None) -> dict:
    """Each corpus's map row of an earlier run's JSON (``--maps-from``): a change that
    leaves ``TopicMap`` as it was need not re-fit the maps."""
    if path is None:
        return {}
    return {row["corpus"]: row["map"] for row in json.loads(path.read_text())["corpora"] if "map" in row}


def _with_earlier_maps(rows: list[dict], earlier: dict, path: Path | None) -> list[dict]:
    """``rows``, those without a map given their ``earlier`` row from ``path`` (and a note saying so)."""
    return [dict(row, map=earlier[row["corpus"]], notes=[*row["notes"], f"map row from {path.name} (an earlier run)"])
            if "map" not in row and row["corpus"] in earlier else row for row in rows]


# ----------------------------------------------------------------------- report
def format_markdown(rows: list[dict], settings: dict) -> str:
    split = "validation (20% of train as queries)" if settings["validation"] else "test"
    lines = [f"# semhash defaults on every corpus ({split} split, precision@100)", "",
             f"semhash parameters: "
             f"{json.dumps(settings['params']) if settings['params'] else 'library defaults'}. "
             f"Ratio = semhash / best baseline of the same size (TF-IDF raw or sublinear, LSA, ITQ); "
             f"target >= {TARGET_RATIO:.2f}.", "",
             "| corpus | docs (db / queries) | labels | words/doc | bits | semhash | TF-IDF raw / sub | LSA | ITQ | ratio | target | fit s | best epoch | distinct codes | live bits |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for size, e in row["sizes"].items():
            verdict = "PASS" if e["ratio"] is not None and e["ratio"] >= TARGET_RATIO else "MISS"
            lines.append(
                f"| {row['corpus']} | {row['n_db']} / {row['n_queries']} | {row['n_labels']} | {row['mean_words']} | {size} | "
                f"{e['semhash']:.3f} | {row['tfidf-raw']:.3f} / {row['tfidf-sublinear']:.3f} | {e['lsa']:.3f} ({e['lsa_tf']}) | "
                f"{e['itq']:.3f} ({e['itq_tf']}) | {e['ratio']:.2f} | {verdict} | {e['fit_seconds']:.0f} | {e['best_epoch']} | "
                f"{e['distinct_codes']} | {e['live_bits']} |")
    maps = [row for row in rows if "map" in row]
    if maps:
        lines += ["", "## 2-D maps: 10-NN accuracy of the queries against the database points", "",
                  "| corpus | TopicMap (default) | LSA-2 | UMAP | TopicMap / UMAP | target | TopicMap fit s |", "|---|---|---|---|---|---|---|"]
        for row in maps:
            m = row["map"]
            ratio = m["topicmap"] / m["umap"] if m.get("umap") else None
            umap = "-" if m["umap"] is None else f"{m['umap']:.3f}"
            verdict = "-" if ratio is None else f"{ratio:.2f} | {'PASS' if ratio > 1 else 'MISS'}"
            lines.append(f"| {row['corpus']} | {m['topicmap']:.3f} | {m['lsa2']:.3f} | {umap} | {verdict} | "
                         f"{m['topicmap_fit_seconds']:.0f} |")
    notes = [f"- {row['corpus']}: {'; '.join(row['notes'])}" for row in rows if row["notes"]]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def draw(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["corpus"] for row in rows]
    sizes = sorted({int(s) for row in rows for s in row["sizes"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    width = 0.8 / max(1, len(sizes))
    for i, size in enumerate(sizes):
        ratios = [row["sizes"].get(str(size), {}).get("ratio") or 0 for row in rows]
        ax.bar(np.arange(len(names)) + (i - (len(sizes) - 1) / 2) * width, ratios, width, label=f"{size} bits")
    ax.axhline(1.0, color="grey", lw=1)
    ax.axhline(TARGET_RATIO, color="red", lw=1, ls="--", label=f"target {TARGET_RATIO:.2f}")
    ax.set_xticks(np.arange(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("semhash p@100 / best baseline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    add_out_argument(parser)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--quick", action="store_true", help="small subsets and networks (CI)")
    parser.add_argument("--validation", action="store_true", help="queries from a seeded 20%% of train, never test")
    parser.add_argument("--bits", type=int, nargs="+", default=list(BITS))
    parser.add_argument("--params", type=json.loads, default={}, help="SemanticHasher overrides, JSON")
    parser.add_argument("--map-params", type=json.loads, default={}, help="TopicMap overrides, JSON")
    parser.add_argument("--only", nargs="+", help="run only these corpora (names as in the table)")
    parser.add_argument("--no-maps", action="store_true", help="skip the 2-D maps")
    parser.add_argument("--maps-from", type=Path, help="take each corpus's map row from this earlier corpora.json "
                        "instead of fitting it (for changes that leave TopicMap as it was)")
    parser.add_argument("--no-variants", action="store_true", help="skip the 20 Newsgroups variants")
    parser.add_argument("--merge", type=Path, nargs="+", help="only combine these corpora*.json (runs of disjoint --only sets) into one report")
    args = parser.parse_args(argv)
    suffix = ".quick" if args.quick else ".validation" if args.validation else ""
    earlier_maps = _earlier_maps(args.maps_from)
    if args.merge:
        runs = [json.loads(path.read_text()) for path in args.merge]
        settings, rows = runs[0]["settings"], [row for run in runs for row in run["corpora"]]
        return _report(_with_earlier_maps(rows, earlier_maps, args.maps_from), settings, args.out, suffix, runs[0].get("environment") or environment())
    if not args.data.is_dir():
        parser.error(f"no data folder at {args.data}")
    corpora = discover(args.data)
    if not corpora:
        parser.error(f"no labelled text corpora under {args.data}")
    if not args.no_variants:
        corpora += [v for c in corpora if c.name == "20news" for v in variants(c)]
    if args.only:
        unknown = sorted(set(args.only) - {c.name for c in corpora})
        if unknown:
            parser.error(f"unknown corpora {', '.join(unknown)}; found: {', '.join(c.name for c in corpora)}")
        corpora = [c for c in corpora if c.name in args.only]
    rows = []
    settings = {"validation": args.validation, "quick": args.quick, "params": args.params, "map_params": args.map_params}
    env = environment()
    for corpus in corpora:
        log(f"corpus {corpus.name}: {corpus.source.name} [{corpus.train} | {corpus.test}]")
        data = load(corpus, quick=args.quick, validation=args.validation, cache=args.cache)
        row = run_corpus(corpus, data, args, args.cache, fit_map=not args.no_maps and corpus.name not in earlier_maps)
        rows += _with_earlier_maps([row], earlier_maps, args.maps_from)
        _report(rows, settings, args.out, suffix, env, show=False)  # an interrupted run keeps what it finished
    return _report(rows, settings, args.out, suffix, env)


def _report(rows: list[dict], settings: dict, out: Path, suffix: str, env: dict, show: bool = True) -> int:
    text = format_markdown(rows, settings)
    write_results(out, f"corpora{suffix}", {"settings": settings, "environment": env, "corpora": rows}, text)
    draw(rows, out / f"corpora{suffix}.png")
    if show:
        print(text + "\n" + environment_line(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
