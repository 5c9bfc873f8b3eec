"""Image search on a million codes: 28-bit address lookup against exhaustive 256-bit search.

Krizhevsky & Hinton's two-stage retrieval: a short address code finds a Hamming ball of
candidates in time that does not grow with the collection, and the 256-bit codes re-rank
them. This measures it where it matters, on 1,000,000 images (and on the 50,000 CIFAR-10
train images for reference):

* Collection: the 50,000 CIFAR-10 train images, then augmented copies of them up to the
  size (a horizontal flip half the time, a random crop of 24-32 pixels resized back to
  32x32, and colour jitter: brightness, contrast and saturation each x0.8-1.2). A copy
  carries its source image's label. Every image is encoded by the models of
  ``benchmarks/images.py`` (its ``--models`` cache; fitted there if missing).
* Queries: the 1,000 test images of ``benchmarks/images.py`` (100 per class, same seed),
  never in the collection; relevant = same class.
* Methods, one thread each: ``binary flat`` (FAISS ``IndexBinaryFlat`` over the 256-bit
  codes, exhaustive) and ``address r=R max=C`` (:class:`semhash.index.address.AddressIndex`, as
  ``semhash images search --address`` runs it: addresses within radius R of the query's,
  nearest first, up to C candidates, re-ranked by the 256-bit codes; ``all``: the whole
  ball), and ``cells C probes=P`` (:class:`semhash.index.cells.CellIndex`, as ``semhash images
  search --cells`` runs it: the long codes in C k-means cells, the P cells nearest the
  query scanned). Per method: p50/p99 latency of one query (k=100), precision@100,
  recall of the exhaustive top 100 (ties counted as equal), mean candidates (codes
  looked at) and fallback rate.
* The library's defaults (``IMAGES.radius`` in ``semhash.index.models``, ``max_candidates``
  and ``probes`` of ``semhash.index.search.SearchOptions``) are chosen on validation queries, never on the test images: fresh
  augmented copies of 300 train images, whose own source and its copies are left out of
  their results (else the query would find itself). The rule follows the targets, for
  each method: the best validation p@100 among the settings at least 20x faster than
  exhaustive search; if none is, the fastest that keeps at least 95% of exhaustive p@100.

Targets (issue 7): at 1M codes, address lookup + re-ranking keeps >= 95% of exhaustive
256-bit p@100 and answers >= 20x faster (p50 latency). Both fast methods are checked
at their defaults.

    OMP_NUM_THREADS=1 python benchmarks/image_search_speed.py            # 50k and 1M
    OMP_NUM_THREADS=1 python benchmarks/image_search_speed.py --quick    # 5k and 50k, quick models

Writes ``image_search_speed[.quick].{json,md}`` under ``--out`` (``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _common import TMP, add_out_argument, folder_or_none, log, write_results  # noqa: E402

K = 100
SETTINGS = [(2, 500), (3, 500), (3, 1000), (4, 500), (4, 1000), (4, 2000), (5, 500), (5, 1000), (5, 2000), (4, None)]
CELL_PROBES = [1, 2, 4, 8, 12, 16, 24, 32]
VALIDATION_QUERIES = 300
TARGET_KEPT, TARGET_SPEEDUP = 0.95, 20.0  # issue 7: share of exhaustive p@100, and x faster (p50)


# ----------------------------------------------------------------------------- augmentation
def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Augmented copies of uint8 ``(n, 32, 32, 3)`` images: flip, crop-and-resize, colour jitter."""
    n, side = len(images), images.shape[1]
    flipped = np.where(rng.random(n)[:, None, None, None] < 0.5, images[:, :, ::-1], images)
    # Crop of size s at (y0, x0), resized back to side x side by nearest neighbour.
    size = rng.integers(24, side + 1, n)
    y0 = (rng.random(n) * (side - size + 1)).astype(int)
    x0 = (rng.random(n) * (side - size + 1)).astype(int)
    steps = (np.arange(side)[None, :] * size[:, None]) // side  # (n, side) in [0, size)
    rows, cols = y0[:, None] + steps, x0[:, None] + steps
    cropped = flipped[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].astype(np.float32)
    # Colour jitter: brightness, contrast (around the image's mean grey), saturation.
    grey = cropped @ np.array([0.299, 0.587, 0.114], np.float32)
    brightness, contrast, saturation = (rng.uniform(0.8, 1.2, (n, 1, 1, 1)).astype(np.float32) for _ in range(3))
    out = grey[..., None] + saturation * (cropped - grey[..., None])
    out = grey.mean(axis=(1, 2))[:, None, None, None] + contrast * (out - grey.mean(axis=(1, 2))[:, None, None, None])
    return np.clip(out * brightness, 0, 255).astype(np.uint8)


def collection(train: np.ndarray, size: int, seed: int, chunk: int = 25_000):
    """``(source rows, pixels)`` chunks: the train images, then augmented copies up to ``size``."""
    rng = np.random.default_rng(seed)
    yield np.arange(min(size, len(train))), train[: min(size, len(train))]
    made = len(train)
    while made < size:
        n = min(chunk, size - made)
        sources = rng.integers(0, len(train), n)
        yield sources, augment(train[sources], rng)
        made += n


def encoded_collection(models: dict, train: np.ndarray, size: int, seed: int, cache: Path | None, quiet: bool):
    """``{"sources", "long", "address"}`` for a collection of ``size``, cached by model bytes and size."""
    key = hashlib.sha256(b"".join(m.to_bytes() for m in models.values()) + f"{size}-{seed}-{len(train)}".encode())
    path = cache / f"codes-{key.hexdigest()[:16]}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    parts: dict[str, list] = {"sources": [], "long": [], "address": []}
    started, done = time.perf_counter(), 0
    for sources, pixels in collection(train, size, seed):
        parts["sources"].append(sources)
        for name, model in models.items():
            parts[name].append(model.transform(pixels))
        done += len(sources)
        if not quiet:
            log(f"encoded {done:,} / {size:,} images ({time.perf_counter() - started:.0f}s)")
    codes = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, **codes)
        partial.replace(path)
    return codes


# ----------------------------------------------------------------------------- measuring
def measure(data: dict, labels: np.ndarray, queries: dict, q_labels: np.ndarray, n_latency: int,
            settings, validation: dict | None = None) -> dict:
    """Every method's latency and quality on one collection."""
    import faiss

    from search_speed import latencies, summary, tie_aware_recall
    from semhash.index.address import AddressIndex
    from semhash.pipelines.evaluate import precision_at_k

    n, bits = len(data["long"]), data["long"].shape[1] * 8
    out = {"images": n, "methods": {}}
    started = time.perf_counter()
    flat = faiss.IndexBinaryFlat(bits)
    flat.add(data["long"])
    build = time.perf_counter() - started
    lat = latencies(lambda i: flat.search(queries["long"][i : i + 1], K), n_latency)
    started = time.perf_counter()
    exact_d, exact_i = flat.search(queries["long"], K)
    batch = time.perf_counter() - started
    out["methods"]["binary flat"] = {**summary(lat, batch, len(q_labels)), "build_s": round(build, 3),
                                     "p_at_100": round(precision_at_k(exact_i, q_labels, labels, (K,))[K], 4),
                                     "memory_mb": round(data["long"].nbytes / 2**20, 1)}
    started = time.perf_counter()
    table = AddressIndex.build(np.arange(n), data["address"], data["long"],
                               address_bits=queries["address_bits"], long_bits=bits)
    build = time.perf_counter() - started
    for radius, budget in settings:
        table.search_batch(queries["address"][:2], queries["long"][:2], K, radius, max_candidates=budget)  # warm-up
        lat = latencies(lambda i: table.search(queries["address"][i], queries["long"][i], K, radius,
                                               max_candidates=budget), n_latency)
        started = time.perf_counter()
        found = table.search_batch(queries["address"], queries["long"], K, radius, max_candidates=budget)
        batch = time.perf_counter() - started
        name = f"address r={radius} max={budget or 'all'}"
        out["methods"][name] = {
            **summary(lat, batch, len(q_labels)), "build_s": round(build, 3), "radius": radius, "max_candidates": budget,
            "memory_mb": round(table.nbytes / 2**20, 1),
            "p_at_100": round(precision_at_k(np.stack([r.ids for r in found]), q_labels, labels, (K,))[K], 4),
            "recall_at_100": round(float(np.mean([tie_aware_recall(r.distances, exact_d[i], K)
                                                  for i, r in enumerate(found)])), 4),
            "mean_candidates": round(float(np.mean([r.n_candidates for r in found])), 1),
            "fallback_rate": round(float(np.mean([r.fell_back for r in found])), 4),
        }
        flat_p50 = out["methods"]["binary flat"]["p50_us"]
        out["methods"][name]["x_faster_than_flat"] = round(flat_p50 / max(out["methods"][name]["p50_us"], 1e-3), 1)
        log(f"{n:>9,} images  {name:22s} p50 {out['methods'][name]['p50_us']:8.1f} µs  "
            f"p@100 {out['methods'][name]['p_at_100']:.4f}  (flat {flat_p50:.1f} µs, "
            f"{out['methods']['binary flat']['p_at_100']:.4f})")
    cells, cell_probes = measure_cells(data, labels, queries, q_labels, n_latency, exact_d, out)
    if validation is not None:
        out["default_selection"] = choose_defaults(flat, {"address": table, "cells": cells}, data, labels, validation,
                                                   {"address": settings, "cells": cell_probes}, n_latency)
    return out


def measure_cells(data: dict, labels, queries: dict, q_labels, n_latency: int, exact_d, out: dict):
    """Cell search (:class:`semhash.index.cells.CellIndex`, default cells) at each probe count, into ``out``."""
    from search_speed import latencies, summary, tie_aware_recall
    from semhash.index.cells import CellIndex
    from semhash.pipelines.evaluate import precision_at_k

    n, bits = len(data["long"]), data["long"].shape[1] * 8
    started = time.perf_counter()
    cells = CellIndex.build(np.arange(n), data["long"], long_bits=bits)
    build = time.perf_counter() - started
    sizes = cells.cell_sizes()
    probes = [p for p in CELL_PROBES if p <= cells.n_cells]
    flat_p50 = out["methods"]["binary flat"]["p50_us"]
    for n_probe in probes:
        cells.search(queries["long"][:2], K, n_probe)  # warm-up
        lat = latencies(lambda i: cells.search(queries["long"][i], K, n_probe), n_latency)
        started = time.perf_counter()
        distances, ids = cells.search(queries["long"], K, n_probe)
        batch = time.perf_counter() - started
        visited = cells.nearest_cells(queries["long"], n_probe)
        name = f"cells {cells.n_cells} probes={n_probe}"
        out["methods"][name] = {
            **summary(lat, batch, len(q_labels)), "build_s": round(build, 3), "cells": cells.n_cells, "probes": n_probe,
            "p_at_100": round(precision_at_k(ids, q_labels, labels, (K,))[K], 4),
            "recall_at_100": round(float(np.mean([tie_aware_recall(d, e, K) for d, e in zip(distances, exact_d)])), 4),
            "mean_candidates": round(float(sizes[visited].sum(axis=1).mean()), 1),
            "x_faster_than_flat": round(flat_p50 / max(float(np.percentile(lat, 50)) * 1e6, 1e-3), 1),
        }
        log(f"{n:>9,} images  {name:22s} p50 {out['methods'][name]['p50_us']:8.1f} µs  "
            f"p@100 {out['methods'][name]['p_at_100']:.4f}  (flat {flat_p50:.1f} µs)")
    return cells, probes


def validation_precision(ids, sources, labels, query_source, query_label) -> float:
    """p@100 over the results that are not the query's own source or a copy of it."""
    keep = ids[sources[ids] != query_source][:K]
    return float((labels[keep] == query_label).mean()) if len(keep) else 0.0


def choose_defaults(flat, indexes: dict, data, labels, validation, settings: dict, n_latency) -> dict:
    """Each fast method's library default, chosen on validation queries (rule: module docstring).

    ``indexes``/``settings``: ``{"address": (AddressIndex, [(radius, budget), ...]),
    "cells": (CellIndex, [probes, ...])}`` as two dicts keyed by method.
    """
    from search_speed import latencies

    extra = 64  # room for the query's own source and copies, which are left out
    _, exact_i = flat.search(validation["long"], K + extra)
    exact = np.mean([validation_precision(ids, data["sources"], labels, s, y)
                     for ids, s, y in zip(exact_i, validation["sources"], validation["labels"])])
    flat_p50 = float(np.median(latencies(lambda i: flat.search(validation["long"][i : i + 1], K), n_latency)))

    def kept_and_speed(row: dict, found_ids, one_query) -> dict:
        p = np.mean([validation_precision(ids, data["sources"], labels, s, y)
                     for ids, s, y in zip(found_ids, validation["sources"], validation["labels"])])
        lat = float(np.median(latencies(one_query, n_latency)))
        return {**row, "p_at_100": round(float(p), 4), "kept": round(float(p / exact), 4),
                "p50_us": round(lat * 1e6, 1), "x_faster": round(flat_p50 / lat, 1)}

    table, cells = indexes["address"], indexes["cells"]
    rows = {"address": [], "cells": []}
    for radius, budget in settings["address"]:
        found = table.search_batch(validation["address"], validation["long"], K + extra, radius,
                                   max_candidates=None if budget is None else budget + extra)
        rows["address"].append(kept_and_speed(
            {"radius": radius, "max_candidates": budget}, [r.ids for r in found],
            lambda i: table.search(validation["address"][i], validation["long"][i], K, radius, max_candidates=budget)))
    for n_probe in settings["cells"]:
        _, found = cells.search(validation["long"], K + extra, n_probe)
        rows["cells"].append(kept_and_speed({"probes": n_probe}, found,
                                            lambda i: cells.search(validation["long"][i], K, n_probe)))
    return {"rule": f"best p@100 among >= {TARGET_SPEEDUP:g}x faster, else fastest keeping >= {TARGET_KEPT}",
            "exhaustive_p_at_100": round(float(exact), 4), "exhaustive_p50_us": round(flat_p50 * 1e6, 1),
            "settings": rows, "chosen": {method: pick(method_rows) for method, method_rows in rows.items()}}


def pick(rows: list[dict]) -> dict:
    """The rule: best p@100 among the rows >= TARGET_SPEEDUP faster, else the fastest that
    keeps >= TARGET_KEPT, else the best p@100."""
    fast = [r for r in rows if r["x_faster"] >= TARGET_SPEEDUP]
    keeping = [r for r in rows if r["kept"] >= TARGET_KEPT]
    if fast:
        return max(fast, key=lambda r: r["p_at_100"])
    if keeping:
        return min(keeping, key=lambda r: r["p50_us"])
    return max(rows, key=lambda r: r["p_at_100"])


def targets(result: dict) -> list[dict]:
    """Issue 7's two targets for each fast method at its library default, at the largest size."""
    from semhash.index.models import IMAGES
    from semhash.index.search import SearchOptions

    defaults = SearchOptions()
    largest = result["sizes"][-1]
    flat = largest["methods"]["binary flat"]
    names = [f"address r={IMAGES.radius} max={defaults.max_candidates or 'all'}"]
    names += [name for name in largest["methods"] if name.startswith("cells ") and name.endswith(f" probes={defaults.probes}")]
    out = []
    for name in names:
        row = largest["methods"].get(name)
        if row is None:
            continue
        kept = row["p_at_100"] / flat["p_at_100"]
        out += [
            {"target": f"{name} vs binary flat at {largest['images']:,}: p@100 kept", "value": round(kept, 3),
             "need": f">= {TARGET_KEPT}", "status": "PASS" if kept >= TARGET_KEPT else "MISS"},
            {"target": f"{name} vs binary flat at {largest['images']:,}: x faster (p50)",
             "value": row["x_faster_than_flat"], "need": f">= {TARGET_SPEEDUP:g}",
             "status": "PASS" if row["x_faster_than_flat"] >= TARGET_SPEEDUP else "MISS"},
        ]
    return out


def markdown(result: dict) -> str:
    lines = [f"# Image search speed ({'quick' if result['quick'] else 'full'} run)", "",
             "One thread per query; "
             f"k={K}; {result['n_latency']} single-query latencies per method; CIFAR-10 test images as queries, "
             "relevant = same class. Long code 256 bits, address 28 bits; cells: k-means cells of "
             "the long codes (semhash.index.cells).", ""]
    columns = ("p50_us", "p99_us", "qps", "p_at_100", "recall_at_100", "mean_candidates", "fallback_rate",
               "x_faster_than_flat", "memory_mb")
    for size in result["sizes"]:
        lines += [f"## {size['images']:,} images", "", "| method | " + " | ".join(columns) + " |",
                  "|---|" + "---:|" * len(columns)]
        for name, row in size["methods"].items():
            lines.append(f"| {name} | " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
        lines.append("")
        if "default_selection" in size:
            sel = size["default_selection"]
            address, cells = sel["chosen"]["address"], sel["chosen"]["cells"]
            lines += [f"Defaults chosen on {VALIDATION_QUERIES} validation queries ({sel['rule']}; exhaustive "
                      f"{sel['exhaustive_p_at_100']}): address radius {address['radius']}, max candidates "
                      f"{address['max_candidates']} (kept {address['kept']}, {address['x_faster']}x); cells "
                      f"probes {cells['probes']} (kept {cells['kept']}, {cells['x_faster']}x).", ""]
    if result["targets"]:
        lines += ["| target | value | need | status |", "|---|---:|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | {t['need']} | {t['status']} |" for t in result["targets"]]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5k and 50k images with the quick models of images.py --quick")
    parser.add_argument("--sizes", type=str, default=None, help="collection sizes, comma-separated (default 50000,1000000)")
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 tarball (default: benchmarks/images.py's)")
    parser.add_argument("--models", type=str, default=str(TMP / "semhash-image-models"),
                        help="benchmarks/images.py's folder of fitted models ('none': fit them now)")
    parser.add_argument("--cache", type=folder_or_none, default=TMP / "semhash-image-codes",
                        help="encoded collections ('none': encode every time)")
    add_out_argument(parser)
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from images import fitted_setup

    encode_threads = os.cpu_count() or 1  # encoding a million images is the slow part: use every core
    torch.set_num_threads(encode_threads)
    sizes = [int(s) for s in (args.sizes or ("5000,50000" if args.quick else "50000,1000000")).split(",")]
    started = time.perf_counter()
    flags = ["--quick"] * args.quick + ["--models", args.models, "--seed", str(args.seed)]
    setup = fitted_setup(flags + (["--data", str(args.data)] if args.data else []))
    train, train_labels, models = setup["db_pixels"], setup["db_labels"], setup["models"]
    q_pixels, q_labels = setup["query_pixels"], setup["query_labels"]
    queries = {"long": models["long"].transform(q_pixels), "address": models["address"].transform(q_pixels),
               "address_bits": models["address"].n_bits}
    rng = np.random.default_rng(args.seed + 1)
    v_sources = rng.choice(len(train), VALIDATION_QUERIES, replace=False)
    v_pixels = augment(train[v_sources], rng)
    validation = {"sources": v_sources, "labels": train_labels[v_sources],
                  "long": models["long"].transform(v_pixels), "address": models["address"].transform(v_pixels)}
    result = {"benchmark": "image search speed (issue 7)", "quick": args.quick, "n_latency": args.latency_queries,
              "sizes": []}
    for size in sizes:
        torch.set_num_threads(encode_threads)
        data = encoded_collection(models, train, size, args.seed, args.cache, args.quiet)
        torch.set_num_threads(1)
        labels = train_labels[data["sources"]]
        result["sizes"].append(measure(data, labels, queries, q_labels, args.latency_queries, SETTINGS,
                                       validation if size == sizes[-1] else None))
    result["targets"] = targets(result)
    result["seconds_total"] = round(time.perf_counter() - started, 1)
    stem = "image_search_speed.quick" if args.quick else "image_search_speed"
    write_results(args.out, stem, result, markdown(result))
    for t in result["targets"]:
        log(f"{t['status']} {t['target']}: {t['value']} (need {t['need']})")
    return result


if __name__ == "__main__":
    main()
