"""semhash command line: index a collection, then search it by meaning.

Every command works on one database file (``--db``), which holds the documents, the
vocabulary, the trained models and their codes; FAISS index files sit beside it in
``<db>.faiss/`` and are rebuilt from the database whenever they are missing or stale.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import warnings
from pathlib import Path

import click

def _sets_environment(variable: str):
    """An option callback that sets ``variable`` for the command (and what it starts), then
    restores it: how --index-dir and --codes reach every database the command opens."""

    def callback(ctx: click.Context, _param, value) -> None:
        if value is None:
            return
        import os

        previous = os.environ.get(variable)
        os.environ[variable] = value
        ctx.call_on_close(lambda: os.environ.pop(variable) if previous is None
                          else os.environ.__setitem__(variable, previous))

    return callback


def DB_OPTION(function):
    """--db (a file or an SQLAlchemy URL), --index-dir and --codes, on every command that opens one."""
    function = click.option(
        "--codes", expose_value=False, callback=_sets_environment("SEMHASH_CODES"), is_eager=True,
        help="Keep and search the codes in a vector database: milvus://HOST:PORT, or a milvus-lite file "
             "(a path ending in .db). Default: beside the documents. Or set SEMHASH_CODES.",
    )(function)
    function = click.option(
        "--index-dir", expose_value=False, callback=_sets_environment("SEMHASH_INDEX_DIR"), is_eager=True,
        help="Folder for the derived search files (default: DB.faiss beside a file; for a server, "
             "a per-URL folder of ~/.cache/semhash). Or set SEMHASH_INDEX_DIR.",
    )(function)
    return click.option(
        "--db", "database", required=True, envvar="SEMHASH_DB",
        help="Database file, or an SQLAlchemy URL such as postgresql+psycopg://user@host/db (or set SEMHASH_DB).",
    )(function)


QUIET_OPTION = click.option("--quiet", "-q", is_flag=True, help="Print no progress, only results and errors.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print results as JSON, for scripts.")


def hits_output(function):
    """--json, --nl or --csv: how hits are printed (default: ranked lines for people)."""
    formats = [("--json", "json", "Print the hits as a JSON list."),
               ("--nl", "nl", "Print one JSON object per hit and line (newline-delimited JSON)."),
               ("--csv", "csv", "Print the hits as CSV with a header row.")]
    for flag, value, text in reversed(formats):
        function = click.option(flag, "output", flag_value=value, help=text)(function)
    return function
def corpus_bounds(function):
    """--max-document-mb and --max-corpus-mb: how much text reading a corpus may take."""
    from semhash.pipelines.corpus import MAX_CORPUS_BYTES, MAX_DOCUMENT_BYTES

    function = click.option("--max-corpus-mb", default=MAX_CORPUS_BYTES // 2**20, show_default=True,
                            type=click.IntRange(1), help="Refuse a corpus holding more text than this.")(function)
    return click.option("--max-document-mb", default=MAX_DOCUMENT_BYTES // 2**20, show_default=True,
                        type=click.IntRange(1), help="Refuse a document larger than this.")(function)


def _bounds(max_document_mb: int, max_corpus_mb: int) -> dict:
    return {"max_document_bytes": max_document_mb * 2**20, "max_corpus_bytes": max_corpus_mb * 2**20}


K_OPTION = click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 10_000), help="Number of results.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="semhash")
def main() -> None:
    """Semantic hashing: learn short binary codes for documents, search by meaning.

    \b
    Typical session:
      semhash index data/20news-bydate.tar.gz --subdir 20news-bydate-train --db news.db
      semhash search "nasa shuttle launch orbit" --db news.db
      semhash similar sci.space/60154 --db news.db -k 5
      semhash map --db news.db --out news-map.png
      semhash info --db news.db
    """


# --------------------------------------------------------------------------- index / add
RAY_OPTION = click.option(
    "--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
    help="Encode on Ray workers (pip install ray): alone, a local cluster of 2 CPUs started for the run; "
         "with an ADDRESS (auto, ray://HOST:10001), an existing cluster with semhash installed. Same codes.",
)


def train_sample_option(function):
    """--train-sample: how many documents the vocabulary and the models are fitted on."""
    from semhash.pipelines.streaming import DEFAULT_TRAIN_SAMPLE

    return click.option(
        "--train-sample", type=click.IntRange(1), default=DEFAULT_TRAIN_SAMPLE, show_default=True,
        help="Fit the vocabulary and the models on a seeded sample of N documents: all documents of a corpus of up "
             "to N, else a uniform sample of N, so that training time grows with N, not with the corpus (the "
             "README gives timings); every document is then encoded and stored.",
    )(function)


@main.command()
@click.argument("corpus")
@DB_OPTION
@click.option("--subdir", help="Only read this sub-folder of a folder or archive (e.g. 20news-bydate-train).")
@click.option("--bits", default=128, show_default=True, type=click.IntRange(8, 1024), help="Length of the binary codes.")
@click.option("--vocab", default=2000, show_default=True, type=click.IntRange(10, 100_000), help="Vocabulary size (words of highest document frequency).")
@click.option("--address-bits", default=24, show_default=True, type=click.IntRange(0, 32), help="Length of the address codes for `search --mode address` (0: no address model).")
@click.option("--map-dims", default=2, show_default=True, type=click.IntRange(0, 64), help="Dimensions of the real-valued map code (0: no map model).")
@click.option("--epochs", type=click.IntRange(1, 1000), help="Most fine-tuning epochs (default 100 for the codes, 50 for the map; early stopping ends most fits sooner).")
@click.option("--pretrain-epochs", type=click.IntRange(0, 1000), help="CD epochs per RBM layer (default 5).")
@click.option("--text-column", default="text", show_default=True, help="JSONL/CSV/hf: column holding the text.")
@click.option("--label-column", default="label", show_default=True, help="JSONL/CSV/hf: column holding the label.")
@click.option("--labels-column", default="labels", show_default=True,
              help="JSONL/CSV/hf: column holding several labels (a JSON list; in CSV, separated by commas).")
@click.option("--title-column", default="title", show_default=True, help="JSONL/CSV/hf: column holding the title.")
@click.option("--id-column", default="id", show_default=True, help="JSONL/CSV/hf: column holding a unique id.")
@click.option("--split", default="train", show_default=True, help="hf: which split of the dataset.")
@click.option("--limit", type=click.IntRange(1), help="Read only the first N documents (in the corpus's order).")
@click.option("--sample", type=click.IntRange(1), help="Index a seeded sample of N documents, spread across labels as the corpus is.")
@train_sample_option
@click.option("--seed", default=0, show_default=True, help="Random seed (of the models and of the samples): same seed and corpus, same result.")
@click.option("--overwrite", is_flag=True, help="Replace an existing database (atomically, once the new one is complete).")
@RAY_OPTION
@corpus_bounds
@QUIET_OPTION
@JSON_OPTION
def index(corpus, database, subdir, bits, address_bits, vocab, map_dims, epochs, pretrain_epochs, text_column, label_column,
          labels_column, title_column, id_column, split, limit, sample, train_sample, seed, overwrite, ray_address,
          max_document_mb, max_corpus_mb, quiet, as_json):
    """Read CORPUS, train the models, and store documents and codes in a new database.

    \b
    CORPUS is one of:
      a folder with one file per document (sub-folder name = label; an optional
        labels.tsv of lines "relative/path<TAB>label,label" gives several labels)
      a .tar.gz / .tgz / .zip of such a folder (read in memory, never extracted)
      a .jsonl or .csv file with a text column (and optional label, labels, title, id)
      -, JSONL records on standard input
      hf:NAME, a Hugging Face dataset (from the Hub, or a folder written by save_to_disk)

    \b
      semhash index data/20news-bydate.tar.gz --subdir 20news-bydate-train --db news.db
      semhash index posts.jsonl --db posts.db --sample 2000 --bits 64
      cat posts.jsonl | semhash index - --db posts.db

    Trains a semantic hasher (binary codes, Hamming search) and a map model (2-D code,
    for `semhash map` and Euclidean search), pretraining each as a stack of RBMs and
    fine-tuning it as a deep autoencoder (the README gives timings).

    The corpus is read twice and never held: once for the training sample, once to
    encode and store every document in batches. An interrupted run leaves the new
    database's temporary file; the same command run again resumes it.
    """
    from semhash.pipelines.indexing import index_corpus

    fine_tuning = {k: v for k, v in {"finetune_epochs": epochs, "pretrain_epochs": pretrain_epochs}.items() if v}
    read_options = {"text_column": text_column, "label_column": label_column, "labels_column": labels_column,
                    "title_column": title_column, "id_column": id_column, "split": split, "limit": limit,
                    **_bounds(max_document_mb, max_corpus_mb)}
    with _friendly_errors(quiet):
        report = index_corpus(
            corpus, database, subdir=subdir, n_bits=bits, address_bits=address_bits, map_dims=map_dims, vocabulary_size=vocab,
            overwrite=overwrite, hasher_params=fine_tuning, map_params=fine_tuning, read_options=read_options,
            sample=sample, train_sample=train_sample, ray=ray_address, random_state=seed,
        )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        seconds = sum(report.seconds.values())
        click.echo(
            f"Indexed {report.documents} documents into {report.database} in {seconds:.0f}s "
            f"({report.vocabulary}-word vocabulary, {bits}-bit codes"
            f"{f', {map_dims}-D map' if map_dims else ''})."
        )
        if report.skipped_empty:
            click.echo(f"Skipped {report.skipped_empty} documents with no vocabulary word.")
        if report.resumed:
            click.echo(f"Resumed an interrupted build: {report.resumed} documents were already stored.")
        elif report.trained_on < report.documents + report.skipped_empty:
            click.echo(f"The models were trained on a seeded sample of {report.trained_on} documents (--train-sample).")


@main.command()
@click.argument("corpus")
@DB_OPTION
@click.option("--subdir", help="Only read this sub-folder of a folder or archive.")
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(1), help="Documents stored per transaction.")
@RAY_OPTION
@corpus_bounds
@QUIET_OPTION
@JSON_OPTION
def add(corpus, database, subdir, batch_size, ray_address, max_document_mb, max_corpus_mb, quiet, as_json):
    """Encode the documents of CORPUS with the stored models and add them (no retraining).

    Documents whose id is already stored are skipped, so an interrupted run can simply
    be started again: it resumes where it stopped. Two runs at once wait for each other.

    \b
      semhash add more-posts/ --db news.db
      cat new.jsonl | semhash add - --db news.db
    """
    from semhash.pipelines.indexing import add_documents

    with _friendly_errors(quiet):
        result = add_documents(database, corpus, subdir=subdir, batch_size=batch_size, ray=ray_address,
                               read_options=_bounds(max_document_mb, max_corpus_mb))
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"Added {result['added']} documents ({result['already_stored']} already stored) in {result['seconds']:.1f}s.")


@main.command()
@click.argument("keys", nargs=-1)
@DB_OPTION
@click.option("--from-file", "from_file", type=click.File("r", encoding="utf-8"),
              help="Also delete the documents named in this file, one id or external id a line (-: standard input).")
@click.option("--missing-ok", is_flag=True,
              help="Skip keys that name no document (default: name them and delete nothing).")
@QUIET_OPTION
@JSON_OPTION
def delete(keys, database, from_file, missing_ok, quiet, as_json):
    """Delete documents, with their codes, by id or external id (KEY ...).

    All of them are deleted in one transaction, or none: a KEY that names no document is
    an error (unless --missing-ok) and leaves the collection as it was. Searches, similar
    items, address and cells searches, maps and recall no longer find them; derived
    search files (and codes kept in Milvus) follow on their next use.

    \b
      semhash delete sci.space/60154 comp.graphics/38851 --db news.db
      semhash delete 42 --db news.db --json
      grep -l spam posts/* | semhash delete --from-file - --db news.db --missing-ok
    """
    from semhash.pipelines.deleting import delete_documents

    wanted = list(keys)
    if from_file is not None:
        wanted += [line.strip() for line in from_file if line.strip()]
    elif not wanted:
        raise click.UsageError("name the documents to delete: KEY ... or --from-file FILE")
    with _friendly_errors(quiet):
        result = delete_documents(database, wanted, missing_ok=missing_ok)
    if as_json:
        click.echo(json.dumps(result))
    else:
        skipped = f"; {len(result['missing'])} keys named no document" if result["missing"] else ""
        click.echo(f"Deleted {result['deleted']} documents ({result['documents']} left{skipped}) "
                   f"in {result['seconds']:.1f}s.")


# --------------------------------------------------------------------------- search
SPACE_OPTION = click.option(
    "--space", type=click.Choice(["hamming", "euclidean"]), default="hamming", show_default=True,
    help="hamming: binary codes; euclidean: the real-valued map code.",
)
RERANK_OPTION = click.option("--rerank", is_flag=True, help="Re-rank the Hamming candidates by TF-IDF cosine (slower, more precise).")
MODE_OPTION = click.option(
    "--mode", type=click.Choice(["exhaustive", "address", "cells"]), default="exhaustive", show_default=True,
    help="Fast search on large collections. address: only items whose address code is within --radius bits of "
         "the query's; cells: only the k-means cells of codes nearest the query's (built on first use).",
)
RADIUS_OPTION = click.option("--radius", type=click.IntRange(0, 6), help="With --mode address: Hamming radius of the address ball (default: the collection's, 2 for documents, 3 for images).")
MAX_CANDIDATES_OPTION = click.option("--max-candidates", type=click.IntRange(1), help="With --mode address: stop collecting candidates, nearest addresses first, at this many (default 500).")
PROBES_OPTION = click.option("--probes", type=click.IntRange(1), help="With --mode cells: how many cells to visit (default 16; more is slower and closer to exhaustive).")


def fast_search_options(function):
    """--mode, --radius, --max-candidates, --probes: the same for documents and images."""
    for option in (PROBES_OPTION, MAX_CANDIDATES_OPTION, RADIUS_OPTION, MODE_OPTION):
        function = option(function)
    return function


def _search_options(**given):
    """The library's SearchOptions, with what the command line gave (None: the default)."""
    from semhash.index.search import SearchOptions

    return SearchOptions.given(**given)


CANDIDATES_OPTION = click.option("--candidates", default=100, show_default=True, type=click.IntRange(1), help="With --rerank: how many Hamming candidates to re-rank.")


@main.command()
@click.argument("text")
@DB_OPTION
@K_OPTION
@SPACE_OPTION
@RERANK_OPTION
@CANDIDATES_OPTION
@fast_search_options
@click.option("--code", "is_code", is_flag=True, help="TEXT is a binary code in hex (as printed by `semhash encode`).")
@hits_output
def search(text, database, k, space, rerank, candidates, mode, radius, max_candidates, probes, is_code, output):
    """Find the stored documents nearest in meaning to TEXT.

    TEXT is encoded with the collection's vocabulary and model; results are ranked by
    Hamming distance between binary codes (or Euclidean distance in the map space).

    \b
      semhash search "graphics card driver for windows" --db news.db -k 5
      cat question.txt | semhash search - --db news.db --csv
      semhash search "encryption key escrow" --db news.db --rerank --json
    """
    from semhash.index.search import SearchEngine

    with _friendly_errors(progress=False):
        options = _search_options(k=k, space=space, rerank=rerank, candidates=candidates, mode=mode, radius=radius,
                                  max_candidates=max_candidates, probes=probes)
        text = _text_argument(text)
        with SearchEngine(database) as engine:
            hits = engine.search_code(text, options=options) if is_code else engine.search(text, options=options)
    _print_hits(hits, output, "cosine distance" if rerank else f"{space} distance")


@main.command()
@click.argument("doc_id")
@DB_OPTION
@K_OPTION
@SPACE_OPTION
@RERANK_OPTION
@CANDIDATES_OPTION
@fast_search_options
@hits_output
def similar(doc_id, database, k, space, rerank, candidates, mode, radius, max_candidates, probes, output):
    """Find the documents nearest to a stored one.

    DOC_ID is the document's external id (e.g. a path like sci.space/60154, as shown in
    search results) or its numeric id.
    """
    from semhash.index.search import SearchEngine

    with _friendly_errors(progress=False):
        options = _search_options(k=k, space=space, rerank=rerank, candidates=candidates, mode=mode, radius=radius,
                                  max_candidates=max_candidates, probes=probes)
        with SearchEngine(database) as engine:
            hits = engine.similar(doc_id, options=options)
    _print_hits(hits, output, "cosine distance" if rerank else f"{space} distance")


@main.command()
@click.argument("text")
@DB_OPTION
@SPACE_OPTION
@JSON_OPTION
def encode(text, database, space, as_json):
    """Print the code of TEXT: hex for binary codes, numbers for the map code.

    \b
      semhash encode "nasa shuttle launch" --db news.db
      echo "nasa shuttle launch" | semhash encode - --db news.db --space euclidean --json
    """
    from semhash.codes import to_hex
    from semhash.index.search import SearchEngine

    with _friendly_errors(progress=False):
        with SearchEngine(database) as engine:
            code = engine.encode(_text_argument(text), space)[0]
    if as_json:
        click.echo(json.dumps({"space": space, "code": to_hex(code) if space == "hamming" else code.tolist()}))
    else:
        click.echo(to_hex(code) if space == "hamming" else " ".join(f"{x:.4f}" for x in code))


# --------------------------------------------------------------------------- evaluate
@main.command()
@DB_OPTION
@click.option("--queries", "queries_source", help="Labelled corpus to use as queries (any CORPUS format); default: hold out --fraction of the stored documents.")
@click.option("--subdir", help="With --queries: only read this sub-folder.")
@click.option("--fraction", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Share of stored documents held out as queries when no --queries.")
@click.option("--max-queries", type=click.IntRange(1), help="Use at most this many queries (a seeded sample).")
@click.option("--seed", default=0, show_default=True, help="Seed of the held-out sample.")
@QUIET_OPTION
@JSON_OPTION
def evaluate(database, queries_source, subdir, fraction, max_queries, seed, quiet, as_json):
    """Measure retrieval quality on a labelled database: precision@10/@100 and mAP
    (relevant = shares a label with the query) of its codes, beside TF-IDF cosine and LSA.

    \b
      semhash evaluate --db news.db --queries data/20news-bydate.tar.gz --subdir 20news-bydate-test
    """
    from semhash.pipelines.benchmark import evaluate_database, format_report

    with _friendly_errors(quiet):
        report = evaluate_database(database, queries_source or fraction, seed=seed, subdir=subdir,
                                   max_queries=max_queries)
    click.echo(json.dumps(report, indent=2, default=float) if as_json else format_report(report))


# --------------------------------------------------------------------------- recall
@main.command()
@click.argument("fragment", required=False)
@DB_OPTION
@click.option("--code", "hex_code", help="Recall from a binary code in hex (possibly damaged) instead of text.")
@click.option("-k", "k", default=1, show_default=True, type=click.IntRange(1, 10_000), help="Number of documents.")
@click.option("--codes-only", is_flag=True,
              help="Store and query the codes alone, without word units (a smaller memory; a fragment then "
                   "finds its topic's documents rather than the document itself).")
@hits_output
def recall(fragment, database, hex_code, k, codes_only, output):
    """Bring back whole stored documents from a FRAGMENT of one, or from a damaged code.

    Each document is stored in a Willshaw associative memory (cached in
    <db>.faiss/recall.npz, rebuilt when the codes change) under a sparse pattern of its
    binary code and of the vocabulary words it contains. A FRAGMENT activates its code's
    units and its words' units; --code HEX activates the code's units alone. The memory
    returns the documents whose whole address the question reaches; confidence is the
    share of the question's units that do (1.0: e.g. a document's own code, or a
    fragment whose every word is in the document and whose code equals the document's).
    Recall grows with the fragment (measured in benchmarks/results/document_recall.md).

    \b
      semhash recall "the shuttle launch was delayed by a faulty valve" --db news.db
      semhash recall --code 9f0c3e... --db news.db -k 3 --json
      semhash recall "shuttle launch delayed" --db news.db --codes-only   # no word units
    """
    from semhash.index.recall import DocumentMemory

    if (fragment is None) == (hex_code is None):
        raise click.UsageError("give either a FRAGMENT of text or --code HEX (not both)")
    with _friendly_errors(progress=False):
        with DocumentMemory(database, words=not codes_only) as memory:
            hits = memory.recall_code(hex_code, k) if hex_code is not None else memory.recall_text(_text_argument(fragment), k)
    _print_hits(hits, output, score=lambda hit: f"confidence {hit.confidence:.2f}")


# --------------------------------------------------------------------------- info / map
@main.command()
@DB_OPTION
@JSON_OPTION
def info(database, as_json):
    """Describe a database: documents, labels, models and the memory they use."""
    from semhash.index.database import Database

    with _friendly_errors(progress=False):
        with Database(database, create=False) as db:
            stats = db.stats()
    if as_json:
        click.echo(json.dumps(stats, indent=2, default=str))
        return
    click.echo(f"Database {database}: {stats['documents']} documents, {stats['labels']} labels, "
               f"{_human_bytes(stats.get('file_size'))} on disk (texts, models and codes)")
    for model in stats["models"]:
        layers = "-".join(map(str, model["layers"] or []))
        click.echo(f"  model {model['name']!r}: {model['class']} {layers}, {model['kind']} code of {model['n_dims']} "
                   f"{'bits' if model['kind'] == 'binary' else 'dims'}, {model['codes']} codes "
                   f"({model['code_bytes_per_document']} bytes each)")
    click.echo(f"Search memory per document: {stats['search_bytes_per_document']} bytes (codes and ids in the FAISS indexes)")


@main.command(name="map")
@DB_OPTION
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("map.png"), show_default=True, help="PNG file to write.")
@click.option("--compare", type=click.Choice(["lsa", "umap"]), help="Draw the LSA or UMAP map of the same documents beside it (umap needs `pip install umap-learn`).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write a self-contained interactive page (hover for title and snippet; works offline).")
@click.option("--query", "queries", multiple=True, help="Mark where this text lands on the map (repeatable).")
@click.option("--title", help="Title of the plot (default: says what and how many).")
@QUIET_OPTION
@JSON_OPTION
def map_command(database, out, compare, html_out, queries, title, quiet, as_json):
    """Draw every document at its 2-D code, coloured by label: a map of the collection.

    Unlabelled collections are coloured by clusters of the map, each named by its most
    characteristic words. New text given with --query is placed by the same model.

    \b
      semhash map --db news.db --out map.png --compare lsa
      semhash map --db news.db --html map.html --query "hubble telescope images"
    """
    from semhash.pipelines.collection_maps import draw_collection_map

    with _friendly_errors(quiet):
        n = draw_collection_map(database, out, compare=compare, html_out=html_out, queries=queries, title=title)
    if as_json:
        click.echo(json.dumps({"out": str(out), "html": None if html_out is None else str(html_out), "documents": n}))
    else:
        click.echo(f"Wrote {out}{f' and {html_out}' if html_out else ''} ({n} documents).")


# --------------------------------------------------------------------------- images
@main.group()
def images() -> None:
    """Small colour images: 256-bit codes, search by similar image, 2-D maps.

    \b
      semhash images index photos/ --db photos.db
      semhash images search query.jpg --db photos.db -k 16 --montage result.png
      semhash images similar image:cat/0001.jpg --db photos.db
      semhash images map --db photos.db --out map.png
    """


@images.command(name="index")
@click.argument("source")
@DB_OPTION
@click.option("--subdir", help="Only read this sub-folder of a folder or archive (e.g. cifar10-jpg/train).")
@click.option("--bits", default=256, show_default=True, type=click.IntRange(8, 1024), help="Length of the image codes.")
@click.option("--address-bits", default=28, show_default=True, type=click.IntRange(0, 32), help="Length of the short address codes (0: none).")
@click.option("--limit", type=click.IntRange(1), help="Read at most this many images.")
@click.option("--epochs", type=click.IntRange(1, 1000), help="Fine-tuning epochs (default 30).")
@click.option("--retrain", is_flag=True, help="Train new models even if the database has some (re-encodes every stored image).")
@QUIET_OPTION
@JSON_OPTION
def images_index(source, database, subdir, bits, address_bits, limit, epochs, retrain, quiet, as_json):
    """Read images from SOURCE (a folder with one sub-folder per label, a .tar.gz of one,
    a .npz/.npy array of 32x32 RGB images, or hf:NAME), resize them to 32x32, train the
    models if the database has none, and store images and codes.
    """
    from semhash.pipelines.images import index_images

    params = {"finetune_epochs": epochs} if epochs else None
    with _friendly_errors(quiet):
        report = index_images(source, database, n_bits=bits, address_bits=address_bits, subdir=subdir, limit=limit,
                              retrain=retrain, hasher_params=params)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        click.echo(f"Stored {report.added} images ({report.already_stored} already stored) in {report.database}.")


def _image_hits(hits, database, query_pixels, montage_path, output):
    if montage_path:
        from semhash.index.database import Database
        from semhash.pipelines.images import montage, stored_pixels

        with Database(database, create=False) as db:
            pixels = stored_pixels(db, [hit.id for hit in hits])
        montage(query_pixels, pixels, [hit.distance for hit in hits], montage_path)
    _print_hits(hits, output, "hamming distance", snippets=False)
    if montage_path and output is None:
        click.echo(f"Wrote {montage_path}.", err=True)


MONTAGE_OPTION = click.option("--montage", "montage_path", type=click.Path(dir_okay=False, path_type=Path),
                              help="Write the query and its hits, with Hamming distances, as a PNG grid.")
ADDRESS_OPTION = click.option("--address", "use_address", is_flag=True, help="Short for --mode address.")
CELLS_OPTION = click.option("--cells", "use_cells", is_flag=True, help="Short for --mode cells.")


def _image_search_options(k, mode, use_address, use_cells, **given):
    """SearchOptions of `images search/similar`, where --address and --cells name a mode."""
    flags = [name for name, on in (("address", use_address), ("cells", use_cells)) if on]
    if len(flags) > 1 or (flags and mode not in ("exhaustive", flags[0])):
        raise click.UsageError("--address, --cells and --mode name ways of fast search: choose one")
    return _search_options(k=k, mode=flags[0] if flags else mode, **given)


@images.command(name="search")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@DB_OPTION
@K_OPTION
@fast_search_options
@ADDRESS_OPTION
@CELLS_OPTION
@MONTAGE_OPTION
@hits_output
def images_search(image, database, k, mode, radius, max_candidates, probes, use_address, use_cells, montage_path, output):
    """Find the stored images nearest to IMAGE (PNG or JPEG) by Hamming distance of their codes.

    Exhaustive (exact) by default. On large collections --mode cells looks only in the
    k-means cells of codes nearest to the query's, and --mode address is semantic hashing
    by the short address code (a Hamming ball around the query's address); the README
    gives their speed and precision.

    \b
      semhash images search cat.jpg --db photos.db -k 16 --montage hits.png
      semhash images search cat.jpg --db photos.db --cells --json
    """
    from semhash.index.database import Database
    from semhash.pipelines.image_reading import read_images
    from semhash.pipelines.images import search_image

    with _friendly_errors(progress=False):
        query = read_images(image).pixels[0]
        with Database(database, create=False) as db:
            options = _image_search_options(k, mode, use_address, use_cells, radius=radius,
                                            max_candidates=max_candidates, probes=probes)
            hits = search_image(db, query, options=options)
        _image_hits(hits, database, query, montage_path, output)


@images.command(name="similar")
@click.argument("image_id")
@DB_OPTION
@K_OPTION
@fast_search_options
@ADDRESS_OPTION
@CELLS_OPTION
@MONTAGE_OPTION
@hits_output
def images_similar(image_id, database, k, mode, radius, max_candidates, probes, use_address, use_cells, montage_path, output):
    """Find the images nearest to a stored one (its id, or external id such as image:cat/0001.jpg)."""
    from semhash.index.database import Database
    from semhash.pipelines.images import similar_image, stored_pixels

    with _friendly_errors(progress=False):
        with Database(database, create=False) as db:
            document = db.find_document(image_id)
            options = _image_search_options(k, mode, use_address, use_cells, radius=radius,
                                            max_candidates=max_candidates, probes=probes)
            hits = similar_image(db, document.id, options=options)
            query = stored_pixels(db, [document.id])[0] if montage_path else None
        _image_hits(hits, database, query, montage_path, output)



@images.command(name="map")
@DB_OPTION
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("map.png"), show_default=True, help="PNG file to write.")
@click.option("--max-thumbnails", default=1000, show_default=True, type=click.IntRange(0, 20_000), help="Draw at most this many images (a seeded sample) as thumbnails; every image is still a dot.")
@click.option("--epochs", type=click.IntRange(1, 1000), help="t-SNE fine-tuning epochs when training (default 30).")
@click.option("--retrain", is_flag=True, help="Train a new map model even if the database has one.")
@click.option("--title", help="Title of the plot (default: says what and how many).")
@QUIET_OPTION
@JSON_OPTION
def images_map(database, out, max_thumbnails, epochs, retrain, title, quiet, as_json):
    """Draw the stored images as thumbnails at their 2-D codes: a map of the collection.

    The first run trains a 2-D ImageMap (a deep autoencoder with a linear 2-D code,
    fine-tuned as a parametric t-SNE over PCA-50 neighbours of the pixels) on the stored
    images and keeps it and the codes in the database; later runs reuse it and only place
    images added since (--retrain starts over). Labelled images get a frame in their
    label's colour.

    \b
      semhash images index photos/ --db photos.db
      semhash images map --db photos.db --out photos-map.png --max-thumbnails 800
    """
    from semhash.pipelines.collection_maps import draw_image_map

    params = {"tsne_epochs": epochs} if epochs else None
    with _friendly_errors(quiet):
        n, shown = draw_image_map(database, out, max_thumbnails=max_thumbnails, retrain=retrain, map_params=params,
                                  title=title)
    if as_json:
        click.echo(json.dumps({"out": str(out), "images": n, "thumbnails": shown}))
    else:
        click.echo(f"Wrote {out} ({n} images, {shown} thumbnails).")


# --------------------------------------------------------------------------- serve
@main.command()
@DB_OPTION
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 opens it to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--token", envvar="SEMHASH_TOKEN",
              help="Accept writes (POST and DELETE /api/documents) that send this bearer token (or set SEMHASH_TOKEN); "
                   "without one the server is read-only.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes answering requests; each loads the collection once.")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0),
              help="Seconds between looks for documents other processes added (0: never).")
@click.option("--max-k", default=1000, show_default=True, type=click.IntRange(1), help="Most hits one request may ask for.")
@click.option("--max-upload-mb", default=8, show_default=True, type=click.IntRange(1, 64), help="Largest image upload.")
@QUIET_OPTION
def serve(database, host, port, token, workers, poll, max_k, max_upload_mb, quiet):
    """Serve a search page and a JSON API over the collection, until interrupted.

    Models and indexes are loaded once; documents that `semhash add` writes meanwhile
    become searchable without a restart. The API's schema and docs are at /docs.

    \b
      semhash serve --db news.db                       # then open http://127.0.0.1:8000
      curl 'http://127.0.0.1:8000/api/search?q=shuttle+launch&k=5'
      SEMHASH_TOKEN=s3cret semhash serve --db news.db --port 9000
    """
    from semhash.server.app import ServerConfig, serve as run_server

    with _friendly_errors(quiet):
        config = ServerConfig(database=database, token=token or None, poll_seconds=poll, max_k=max_k,
                              max_upload_bytes=max_upload_mb * 2**20)
        run_server(config, host=host, port=port, workers=workers, log_level="warning" if quiet else "info")


# --------------------------------------------------------------------------- helpers
MAX_QUERY_BYTES = 2**20


def _text_argument(text: str) -> str:
    """TEXT as given, or read from standard input when it is "-" (at most a MiB)."""
    if text != "-":
        return text
    data = sys.stdin.read(MAX_QUERY_BYTES + 1)
    if len(data) > MAX_QUERY_BYTES:
        raise click.ClickException(f"the query on standard input is over {MAX_QUERY_BYTES // 2**20} MiB")
    return data


def _print_hits(hits, output: str | None, distance_name: str = "distance", score=None, snippets: bool = True) -> None:
    """Hits as JSON, newline-delimited JSON or CSV, or for people: one ranked line each
    (score, label, id, title) and a snippet."""
    rows = [hit.to_dict() for hit in hits]
    if output == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif output == "nl":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(buffer.getvalue(), nl=False)
    elif not hits:
        click.echo("No results.")
    else:
        score = score or (lambda hit: f"{distance_name} {hit.distance:g}")
        for rank, hit in enumerate(hits, 1):
            label = f"[{hit.label}] " if hit.label else ""
            click.echo(f"{rank:3d}. {score(hit)}  {label}{hit.external_id}  {hit.title or ''}")
            if snippets:
                click.echo(f"     {hit.snippet}")


def _human_bytes(size) -> str:
    if not size:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    return str(size)


class _friendly_errors:
    """Turn expected failures (bad input, missing files) into one clear line, exit 1.

    Warnings (skipped files, rebuilt indexes) are shown as one line each unless quiet;
    progress lines too, for the commands that do long work (``progress``).
    """

    def __init__(self, quiet: bool = False, *, progress: bool = True):
        self.quiet, self.progress = quiet, progress

    def __enter__(self):
        from semhash.progress import shown_while

        self._progress = shown_while(self.progress and not self.quiet)  # every library step reports through logging
        self._progress.__enter__()
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore" if self.quiet else "always")
        warnings.showwarning = lambda message, category, *args, **kwargs: click.echo(
            f"warning: {message}", err=True
        )
        return self

    def __exit__(self, exc_type, exc, tb):
        self._warnings.__exit__(exc_type, exc, tb)
        self._progress.__exit__(exc_type, exc, tb)
        if exc is None or isinstance(exc, (click.ClickException, KeyboardInterrupt)):
            return False
        from semhash.pipelines.errors import user_message

        message = user_message(exc)
        if message is not None:
            raise click.ClickException(message) from None
        return False


if __name__ == "__main__":
    sys.exit(main())
