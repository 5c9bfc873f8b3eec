"""Large text corpora for ``benchmarks/scale.py``: perturbed copies of 20 Newsgroups posts.

The first documents are the 11,314 training posts themselves (their words, lower-cased);
every further document is a perturbed copy of one, as ``benchmarks/search_speed.py`` makes
them but as text: its words are drawn (with replacement) from a training post's words, its
length is that post's times U(0.5, 1.5) (at least 5, at most :data:`MAX_WORDS`), and half the
copies draw 20-50% of their words from a second post of the same newsgroup. A copy carries its
post's newsgroup as its label, so precision@100 of the 20 Newsgroups test posts (never in the
corpus) stays meaningful at any size. Written as JSON lines in one pass, seeded, so a corpus
of n documents is the first n lines of any larger one.

    python benchmarks/scale_corpus.py OUT.jsonl 1000000
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import NEWSGROUPS, log, read_documents

MAX_WORDS = 400  # keeps a 10M corpus near 10 GB; a longer post is drawn from, not copied whole
CHUNK = 20_000
_WORD = re.compile(r"[a-z][a-z0-9']+")


def posts():
    """(words of each training post as an id array, the words, labels, external ids)."""
    documents = read_documents(NEWSGROUPS, "20news-bydate-train")
    ids: dict[str, int] = {}
    rows = [np.array([ids.setdefault(w, len(ids)) for w in _WORD.findall(d.text.lower())], dtype=np.int64)
            for d in documents]
    words = np.array(list(ids), dtype=object)
    return rows, words, np.array([d.label for d in documents]), [d.external_id for d in documents]


def write_corpus(path: Path, n: int, seed: int = 0, verbose: bool = True) -> Path:
    """``n`` documents as JSON lines in ``path`` (written beside it, then renamed)."""
    rows, words, labels, names = posts()
    keep = [i for i, r in enumerate(rows) if len(r) >= 5]
    by_label = {label: np.array([i for i in keep if labels[i] == label]) for label in np.unique(labels)}
    rng = np.random.default_rng(seed)
    partial = path.with_name(path.name + ".partial")
    done = 0
    with open(partial, "w", encoding="utf-8") as out:
        for i in range(min(n, len(rows))):
            text = " ".join(words[rows[i][:MAX_WORDS]].tolist())
            out.write(json.dumps({"id": names[i], "text": text, "label": str(labels[i])}) + "\n")
        done = min(n, len(rows))
        keep = np.array(keep)
        start = np.r_[0, np.cumsum([len(r) for r in rows])[:-1]]
        size = np.array([len(r) for r in rows])
        flat = np.concatenate(rows)
        while done < n:
            m = min(CHUNK, n - done)
            source = keep[rng.integers(0, len(keep), m)]
            partner = np.array([rng.choice(by_label[labels[s]]) for s in source])
            share = np.where(rng.random(m) < 0.5, rng.uniform(0.2, 0.5, m), 0.0)
            length = np.clip(np.round(size[source] * rng.uniform(0.5, 1.5, m)), 5, MAX_WORDS).astype(np.int64)
            other = rng.binomial(length, share)
            # All the chunk's draws at once: each document's own words, then its partner's.
            post = np.concatenate([np.repeat(source, length - other), np.repeat(partner, other)])
            document = np.concatenate([np.repeat(np.arange(m), length - other), np.repeat(np.arange(m), other)])
            order = np.argsort(document, kind="stable")
            post = post[order]
            drawn = words[flat[start[post] + (rng.random(len(post)) * size[post]).astype(np.int64)]].tolist()
            ends = np.cumsum(length).tolist()
            # Words are [a-z0-9'] only: no JSON escaping needed in the text.
            lines = [f'{{"id": "copy-{done + j}", "text": "{" ".join(drawn[e - length[j]:e])}", '
                     f'"label": "{labels[source[j]]}"}}' for j, e in enumerate(ends)]
            out.write("\n".join(lines) + "\n")
            done += m
            if verbose and done % 500_000 < CHUNK:
                log(f"  corpus: {done:,} / {n:,} documents")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    return path


if __name__ == "__main__":
    write_corpus(Path(sys.argv[1]), int(sys.argv[2]))
