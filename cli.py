"""semhash command line: index a collection, then search it by meaning.

Every command works on one database file (``--db``), which holds the documents, the
vocabulary, the trained models and their codes; FAISS index files sit beside it in
``<db>.faiss/`` and are rebuilt from the database whenever they are missing or stale.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

DB_OPTION = click.option(
    "--db",
    "database",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="SEMHASH_DB",
    help="Database file (or set SEMHASH_DB).",
)
QUIET_OPTION = click.option("--quiet", "-q", is_flag=True, help="Print no progress, only results and errors.")
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print results as JSON, for scripts.")
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
@main.command()
@click.argument("corpus")
@DB_OPTION
@click.option("--subdir", help="Only read this sub-folder of a folder or archive (e.g. 20news-bydate-train).")
@click.option("--bits", default=128, show_default=True, type=click.IntRange(8, 1024), help="Length of the binary codes.")
@click.option("--vocab", default=2000, show_default=True, type=click.IntRange(10, 100_000), help="Vocabulary size (words of highest document frequency).")
@click.option("--map-dims", default=2, show_default=True, type=click.IntRange(0, 64), help="Dimensions of the real-valued map code (0: no map model).")
@click.option("--epochs", type=click.IntRange(1, 1000), help="Fine-tuning epochs (default 50, with early stopping).")
@click.option("--pretrain-epochs", type=click.IntRange(0, 1000), help="CD epochs per RBM layer (default 5).")
@click.option("--text-column", default="text", show_default=True, help="JSONL/CSV/hf: column holding the text.")
@click.option("--label-column", default="label", show_default=True, help="JSONL/CSV/hf: column holding the label.")
@click.option("--title-column", default="title", show_default=True, help="JSONL/CSV/hf: column holding the title.")
@click.option("--id-column", default="id", show_default=True, help="JSONL/CSV/hf: column holding a unique id.")
@click.option("--split", default="train", show_default=True, help="hf: which split of the dataset.")
@click.option("--limit", type=click.IntRange(1), help="Read at most this many documents (to try things quickly).")
@click.option("--seed", default=0, show_default=True, help="Random seed: same seed and corpus, same model.")
@click.option("--overwrite", is_flag=True, help="Replace an existing database (atomically, once the new one is complete).")
@QUIET_OPTION
@JSON_OPTION
def index(corpus, database, subdir, bits, vocab, map_dims, epochs, pretrain_epochs, text_column, label_column,
          title_column, id_column, split, limit, seed, overwrite, quiet, as_json):
    """Read CORPUS, train the models, and store documents and codes in a new database.

    \b
    CORPUS is one of:
      a folder with one file per document (sub-folder name = label)
      a .tar.gz / .tgz / .zip of such a folder (read in memory, never extracted)
      a .jsonl or .csv file with a text column (and optional label, title, id)
      hf:NAME, a Hugging Face dataset (needs `pip install datasets` and internet)

    Trains a semantic hasher (binary codes, Hamming search) and a map model (2-D code,
    for `semhash map` and Euclidean search), pretraining each as a stack of RBMs and
    fine-tuning it as a deep autoencoder. About 3 minutes for 11,000 posts on 2 cores.
    """
    from pipelines.indexing import index_corpus

    fine_tuning = {k: v for k, v in {"finetune_epochs": epochs, "pretrain_epochs": pretrain_epochs}.items() if v}
    read_options = {"text_column": text_column, "label_column": label_column, "title_column": title_column,
                    "id_column": id_column, "split": split, "limit": limit}
    with _friendly_errors(quiet):
        report = index_corpus(
            corpus, database, subdir=subdir, n_bits=bits, map_dims=map_dims, vocabulary_size=vocab,
            overwrite=overwrite, hasher_params=fine_tuning, map_params=fine_tuning, read_options=read_options,
            random_state=seed, verbose=not quiet, log=None if quiet else _progress,
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


@main.command()
@click.argument("corpus")
@DB_OPTION
@click.option("--subdir", help="Only read this sub-folder of a folder or archive.")
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(1), help="Documents stored per transaction.")
@QUIET_OPTION
@JSON_OPTION
def add(corpus, database, subdir, batch_size, quiet, as_json):
    """Encode the documents of CORPUS with the stored models and add them (no retraining).

    Documents whose id is already stored are skipped, so an interrupted run can simply
    be started again: it resumes where it stopped.
    """
    from pipelines.indexing import add_documents

    with _friendly_errors(quiet):
        result = add_documents(database, corpus, subdir=subdir, batch_size=batch_size, verbose=not quiet,
                               log=None if quiet else _progress)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"Added {result['added']} documents ({result['already_stored']} already stored) in {result['seconds']:.1f}s.")


# --------------------------------------------------------------------------- search
SPACE_OPTION = click.option(
    "--space", type=click.Choice(["hamming", "euclidean"]), default="hamming", show_default=True,
    help="hamming: binary codes; euclidean: the real-valued map code.",
)
RERANK_OPTION = click.option("--rerank", is_flag=True, help="Re-rank the Hamming candidates by TF-IDF cosine (slower, more precise).")
CANDIDATES_OPTION = click.option("--candidates", default=100, show_default=True, type=click.IntRange(1), help="With --rerank: how many Hamming candidates to re-rank.")


@main.command()
@click.argument("text")
@DB_OPTION
@K_OPTION
@SPACE_OPTION
@RERANK_OPTION
@CANDIDATES_OPTION
@click.option("--code", "is_code", is_flag=True, help="TEXT is a binary code in hex (as printed by `semhash encode`).")
@JSON_OPTION
def search(text, database, k, space, rerank, candidates, is_code, as_json):
    """Find the stored documents nearest in meaning to TEXT.

    TEXT is encoded with the collection's vocabulary and model; results are ranked by
    Hamming distance between binary codes (or Euclidean distance in the map space).

    \b
      semhash search "graphics card driver for windows" --db news.db -k 5
      semhash search "encryption key escrow" --db news.db --rerank --json
    """
    from index.search import SearchEngine

    with _friendly_errors(True):
        engine = SearchEngine(database)
        if is_code:
            hits = engine.search_code(text, k)
        else:
            hits = engine.search(text, k, space=space, rerank=rerank, candidates=candidates)
    _print_hits(hits, as_json, "cosine distance" if rerank else f"{space} distance")


@main.command()
@click.argument("doc_id")
@DB_OPTION
@K_OPTION
@SPACE_OPTION
@RERANK_OPTION
@CANDIDATES_OPTION
@JSON_OPTION
def similar(doc_id, database, k, space, rerank, candidates, as_json):
    """Find the documents nearest to a stored one.

    DOC_ID is the document's external id (e.g. a path like sci.space/60154, as shown in
    search results) or its numeric id.
    """
    from index.search import SearchEngine

    with _friendly_errors(True):
        hits = SearchEngine(database).similar(doc_id, k, space=space, rerank=rerank, candidates=candidates)
    _print_hits(hits, as_json, "cosine distance" if rerank else f"{space} distance")


@main.command()
@click.argument("text")
@DB_OPTION
@SPACE_OPTION
def encode(text, database, space):
    """Print the code of TEXT: hex for binary codes, numbers for the map code."""
    from index.search import SearchEngine
    from semhash.codes import to_hex

    with _friendly_errors(True):
        code = SearchEngine(database).encode(text, space)
    click.echo(to_hex(code[0]) if space == "hamming" else " ".join(f"{x:.4f}" for x in code[0]))


# --------------------------------------------------------------------------- info / map
@main.command()
@DB_OPTION
@JSON_OPTION
def info(database, as_json):
    """Describe a database: documents, labels, models and the memory they use."""
    from index.database import Database

    with _friendly_errors(True):
        with Database(database, create=False) as db:
            stats = db.stats()
            models = {row.name: row for row in db.list_models()}
    for model in stats["models"]:
        row = models[model["name"]]
        model["class"] = row.config.get("class")
        model["layers"] = row.config.get("layers")
        model["code_bytes_per_document"] = row.code_width * row.code_dtype.itemsize
        # FAISS keeps the code and an 8-byte document id per document in memory.
        model["search_bytes_per_document"] = model["code_bytes_per_document"] + 8
    search_bytes = sum(model["search_bytes_per_document"] for model in stats["models"])
    stats["search_bytes_per_document"] = search_bytes
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
    click.echo(f"Search memory per document: {search_bytes} bytes (codes and ids in the FAISS indexes)")


@main.command(name="map")
@DB_OPTION
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("map.png"), show_default=True, help="PNG file to write.")
@click.option("--title", help="Title of the plot (default: says what and how many).")
@QUIET_OPTION
def map_command(database, out, title, quiet):
    """Draw every document at its 2-D code, coloured by label: a map of the collection."""
    from index.database import Database
    from pipelines.indexing import MAP_MODEL
    from pipelines.maps import draw_map

    with _friendly_errors(quiet):
        with Database(database, create=False) as db:
            model = db.get_model(MAP_MODEL, with_weights=False)
            if model.n_dims != 2:
                raise click.ClickException(f"the map model has {model.n_dims} dimensions; `semhash map` draws 2-D codes")
            ids, points = db.get_codes(model.id)
            labels = [doc.label for doc in db.get_documents(ids.tolist())]
        figure = draw_map(points, labels, title=title or f"{Path(database).stem}: {len(ids):,} documents, deep autoencoder 2-D code")
        figure.savefig(out, dpi=110)
    click.echo(f"Wrote {out} ({len(ids)} documents).")


# --------------------------------------------------------------------------- helpers
def _print_hits(hits, as_json: bool, distance_name: str) -> None:
    if as_json:
        click.echo(json.dumps([hit.to_dict() for hit in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        click.echo("No results.")
        return
    for rank, hit in enumerate(hits, 1):
        label = f"[{hit.label}] " if hit.label else ""
        click.echo(f"{rank:3d}. {distance_name} {hit.distance:g}  {label}{hit.external_id}  {hit.title or ''}")
        click.echo(f"     {hit.snippet}")


def _progress(line: str) -> None:
    click.echo(line, err=True)


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

    Warnings (skipped files, rebuilt indexes) are shown as one line each unless quiet.
    """

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __enter__(self):
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore" if self.quiet else "always")
        warnings.showwarning = lambda message, category, *args, **kwargs: click.echo(
            f"warning: {message}", err=True
        )
        return self

    def __exit__(self, exc_type, exc, tb):
        self._warnings.__exit__(exc_type, exc, tb)
        if exc is None or isinstance(exc, (click.ClickException, KeyboardInterrupt)):
            return False
        from index.database import DatabaseError
        from index.faiss_index import IndexFileError
        from index.search import QueryError
        from pipelines.corpus import CorpusError
        from semhash.estimator import ModelFormatError

        expected = (CorpusError, DatabaseError, IndexFileError, QueryError, ModelFormatError, KeyError, ValueError, FileNotFoundError)
        if isinstance(exc, expected):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise click.ClickException(str(message)) from None
        return False


if __name__ == "__main__":
    sys.exit(main())
