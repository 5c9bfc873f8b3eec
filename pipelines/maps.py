"""Maps of a document collection: static figures, interactive pages, and baseline 2-D maps.

* :func:`draw_map` -- a matplotlib scatter of 2-D codes, coloured by label (legend of group
  names outside the axes) or, without labels, by k-means clusters of the map named by their
  most characteristic words.
* :func:`draw_comparison` -- several maps of the same documents side by side.
* :func:`draw_thumbnail_map` -- a map of images: thumbnails at their 2-D codes.
* :func:`write_html_map` -- a self-contained interactive page (plotly, inlined; no network
  access needed to open it): hover shows title, label and snippet, the legend toggles groups.
* :func:`lsa_map`, :func:`umap_map`, :func:`tsne_map` -- baseline 2-D maps of word counts.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = [
    "draw_map",
    "draw_comparison",
    "draw_thumbnail_map",
    "write_html_map",
    "cluster_names",
    "map_title",
    "marker_style",
]

QUERY_STYLE = dict(marker="*", s=260, c="black", edgecolors="white", linewidths=1.2, zorder=5)


# ---------------------------------------------------------------------------- helpers
def map_title(n_documents: int, corpus: str | None = None, method: str | None = None) -> str:
    """``"20 Newsgroups: 11,314 documents, deep autoencoder 2-D code"``."""
    text = f"{n_documents:,} documents"
    if corpus:
        text = f"{corpus}: {text}"
    if method:
        text = f"{text}, {method}"
    return text


def marker_style(n_points: int) -> tuple[float, float]:
    """Marker area (points^2) and alpha that stay readable from 100 to 100,000 points."""
    n = max(int(n_points), 1)
    size = float(np.clip(30.0 * math.sqrt(1000.0 / n), 0.8, 30.0))
    alpha = float(np.clip(0.9 * (2000.0 / n) ** 0.3, 0.2, 0.9))
    return size, alpha


def _palette(n_groups: int) -> list:
    import matplotlib

    if n_groups <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n_groups)]
    if n_groups <= 20:
        # tab20 pairs a strong and a light shade; strong ones first keeps neighbours distinct.
        cmap = matplotlib.colormaps["tab20"]
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return [cmap(i) for i in order[:n_groups]]
    cmap = matplotlib.colormaps["hsv"]
    return [cmap(i / n_groups) for i in range(n_groups)]


def _groups(labels: Sequence) -> list:
    """Distinct labels, most frequent first (ties by name); ``None`` last."""
    values, counts = np.unique(np.array([str(v) for v in labels if v is not None], dtype=object), return_counts=True)
    order = sorted(zip(values.tolist(), counts.tolist()), key=lambda t: (-t[1], t[0]))
    groups = [v for v, _ in order]
    if any(v is None for v in labels):
        groups.append(None)
    return groups


def cluster_names(
    cluster_ids: np.ndarray, counts, words: Sequence[str], n_words: int = 3, min_docs: int = 3
) -> dict[int, str]:
    """Name each cluster by the words most characteristic of it.

    A word's score is its share of the cluster's (length-normalised) word mass times the
    log of how much more it occurs in the cluster than in the whole collection (a
    KL-style lift), so names favour words both frequent in and specific to the cluster.
    """
    X = sp.csr_matrix(counts, dtype=np.float64)
    if X.shape[1] != len(words):
        raise ValueError(f"counts have {X.shape[1]} columns but {len(words)} words were given")
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    X = sp.diags(1.0 / totals) @ X
    overall = np.asarray(X.mean(axis=0)).ravel() + 1e-9
    names = {}
    for cluster in np.unique(cluster_ids):
        members = np.flatnonzero(cluster_ids == cluster)
        share = np.asarray(X[members].mean(axis=0)).ravel() + 1e-9
        # words in too few of the cluster's documents say nothing about the cluster
        present = np.asarray((X[members] > 0).sum(axis=0)).ravel()
        score = share * np.log(share / overall)
        score[present < min(min_docs, len(members))] = -np.inf
        top = [words[j] for j in np.argsort(-score)[:n_words] if np.isfinite(score[j])]
        names[int(cluster)] = ", ".join(top) if top else f"cluster {cluster}"
    return names


def cluster_map(points: np.ndarray, n_clusters: int | None = None, random_state: int = 0) -> np.ndarray:
    """k-means cluster ids of the 2-D points (default ``min(20, max(2, n / 100))`` clusters)."""
    from sklearn.cluster import KMeans

    n = len(points)
    k = n_clusters or int(np.clip(n // 100, 2, 20))
    k = max(1, min(k, n))
    scaled = (points - points.mean(0)) / np.maximum(points.std(0), 1e-12)
    return KMeans(n_clusters=k, n_init=4, random_state=random_state).fit_predict(scaled)


def _labels_or_clusters(points, labels, counts, words, n_clusters, cluster_label_names):
    """Per-document group names: the labels, or named k-means clusters of the map."""
    if labels is not None and any(v is not None for v in labels):
        return [None if v is None else str(v) for v in labels]
    ids = cluster_map(points, n_clusters)
    if cluster_label_names is None:
        if counts is not None and words is not None:
            cluster_label_names = cluster_names(ids, counts, words)
        else:
            cluster_label_names = {int(c): f"cluster {c}" for c in np.unique(ids)}
    return [cluster_label_names[int(c)] for c in ids]


def _view_limits(points: np.ndarray, margin: float = 0.05) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits holding all but the most extreme 0.2% of points on each side."""
    if len(points) >= 500:
        lo, hi = np.percentile(points, 0.2, axis=0), np.percentile(points, 99.8, axis=0)
    else:
        lo, hi = points.min(0), points.max(0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - margin * span, hi + margin * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


# ------------------------------------------------------------------------ static maps
def draw_map(
    points,
    labels: Sequence[str | None] | None = None,
    *,
    title: str | None = None,
    texts: Sequence[str] | None = None,
    counts=None,
    words: Sequence[str] | None = None,
    n_clusters: int | None = None,
    cluster_label_names: dict[int, str] | None = None,
    ax=None,
    query_points=None,
    query_label: str = "query",
    legend: bool = True,
    seed: int = 0,
):
    """Scatter the 2-D ``points``, one mark per document, and return the Figure.

    With ``labels``, colours are groups (20 distinct colours from tab20; more groups cycle
    through hues) with a legend of the group names outside the axes, most frequent group
    first. Without labels, the map is cut into k-means clusters (``n_clusters``), each
    named by its most characteristic words when ``counts`` (per-document word counts) and
    ``words`` (the vocabulary) are given. ``texts`` is accepted for symmetry with
    :func:`write_html_map` and unused in a static figure. Points are drawn in a random
    order (``seed``) so no group hides another; marker size and alpha follow the number
    of points. ``query_points`` are drawn as black stars.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (n, 2), got shape {points.shape}")
    n = len(points)
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} points")
    groups_of = _labels_or_clusters(points, labels, counts, words, n_clusters, cluster_label_names) if n else []
    groups = _groups(groups_of)
    colours = dict(zip([g for g in groups if g is not None], _palette(sum(g is not None for g in groups))))
    colours[None] = (0.6, 0.6, 0.6, 1.0)

    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 7.5), dpi=110)
    else:
        fig = ax.figure
    size, alpha = marker_style(n)
    order = np.random.default_rng(seed).permutation(n)
    point_colours = np.array([colours[groups_of[i]] for i in order]).reshape(-1, 4)
    ax.scatter(
        points[order, 0], points[order, 1], s=size, c=point_colours, alpha=alpha, linewidths=0, rasterized=n > 5000
    )
    if query_points is not None:
        query = np.asarray(query_points, dtype=np.float64).reshape(-1, 2)
        ax.scatter(query[:, 0], query[:, 1], **QUERY_STYLE)
    if n:
        xlim, ylim = _view_limits(points if query_points is None else np.vstack([points, query]))
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else map_title(n), fontsize=11)
    if legend:
        handles = [
            Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor=colours[g], markeredgewidth=0,
                   label="(no label)" if g is None else g)
            for g in groups
        ]
        if query_points is not None:
            handles.append(Line2D([], [], marker="*", linestyle="", markersize=12, markerfacecolor="black",
                                  markeredgecolor="white", label=query_label))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  fontsize=8 if len(handles) <= 20 else 6, frameon=False,
                  title="groups" if labels is not None and any(v is not None for v in labels) else "clusters")
        fig.tight_layout()
    return fig


def draw_thumbnail_map(
    points,
    pixels,
    labels: Sequence[str | None] | None = None,
    *,
    title: str | None = None,
    max_thumbnails: int = 1000,
    zoom: float | None = None,
    seed: int = 0,
):
    """Draw small images at their 2-D ``points`` and return the Figure.

    ``pixels`` are ``(n, 32, 32, 3)`` uint8 (or ``(n, 3072)``), row-aligned with
    ``points``. Every point is a faint dot; a seeded sample of at most ``max_thumbnails``
    of them also gets its thumbnail (matplotlib ``AnnotationBbox``), drawn in random order.
    With ``labels`` each thumbnail has a frame in its group's colour and the legend names
    the groups, most frequent first. The default ``zoom`` shrinks thumbnails as there
    are more of them (from 32 pixels for a few dozen to about 14 for 1,000).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (n, 2), got shape {points.shape}")
    n = len(points)
    images = np.asarray(pixels, dtype=np.uint8).reshape(n, 32, 32, 3) if n else np.zeros((0, 32, 32, 3), np.uint8)
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} points")
    if max_thumbnails < 0:
        raise ValueError(f"max_thumbnails must be >= 0, got {max_thumbnails}")
    labelled = labels is not None and any(v is not None for v in labels)
    groups = _groups(labels) if labelled else []
    colours = dict(zip([g for g in groups if g is not None], _palette(sum(g is not None for g in groups))))
    colours[None] = (0.6, 0.6, 0.6, 1.0)
    group_of = [None if not labelled or v is None else str(v) for v in (labels if labelled else [None] * n)]

    fig, ax = plt.subplots(figsize=(12, 9.5), dpi=110)
    if n:
        dot_colours = np.array([colours[g] for g in group_of]).reshape(-1, 4)
        ax.scatter(points[:, 0], points[:, 1], s=4, c=dot_colours, alpha=0.35, linewidths=0, zorder=1)
        xlim, ylim = _view_limits(points, margin=0.06)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
    shown = np.random.default_rng(seed).permutation(n)[: min(n, max_thumbnails)]
    if zoom is None:
        zoom = float(np.clip(2.2 / math.sqrt(max(len(shown), 1) / 10.0), 0.45, 1.0))
    for i in shown:
        frame = dict(edgecolor=colours[group_of[i]], linewidth=1.2) if labelled else dict(linewidth=0)
        box = AnnotationBbox(OffsetImage(images[i], zoom=zoom, interpolation="nearest"), tuple(points[i]),
                             frameon=labelled, bboxprops=frame, pad=0.05)
        box.set_zorder(2)
        ax.add_artist(box)
    ax.set_xticks([])
    ax.set_yticks([])
    default = f"{n:,} images" + (f", {len(shown):,} shown as thumbnails" if len(shown) < n else "")
    ax.set_title(title if title is not None else default, fontsize=11)
    if labelled:
        handles = [Line2D([], [], marker="s", linestyle="", markersize=8, markerfacecolor="none",
                          markeredgecolor=colours[g], markeredgewidth=2, label="(no label)" if g is None else g)
                   for g in groups]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  fontsize=8 if len(handles) <= 20 else 6, frameon=False, title="labels (frame colour)")
    fig.tight_layout()
    return fig


def draw_comparison(
    maps: dict[str, np.ndarray],
    labels: Sequence[str | None] | None = None,
    *,
    title: str | None = None,
    counts=None,
    words: Sequence[str] | None = None,
    ncols: int | None = None,
    panel_size: float = 5.0,
    query_points: dict[str, np.ndarray] | None = None,
):
    """Several maps of the same documents side by side, panels of equal size, one legend.

    ``maps`` is ``{name: (n, 2) points}`` (the panel titles); without ``labels`` every
    panel is coloured by the k-means clusters of the first map (so colours mean the same
    documents across panels).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if not maps:
        raise ValueError("no maps to draw")
    names = list(maps)
    n = len(next(iter(maps.values())))
    for name in names:
        if len(maps[name]) != n:
            raise ValueError(f"map {name!r} has {len(maps[name])} points, the first has {n}")
    first = np.asarray(maps[names[0]], dtype=np.float64)
    groups_of = _labels_or_clusters(first, labels, counts, words, None, None)
    groups = _groups(groups_of)
    ncols = ncols or min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols + 3.2, panel_size * nrows), dpi=100,
                             squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        draw_map(maps[name], groups_of, title=name, ax=ax, legend=False,
                 query_points=None if query_points is None else query_points.get(name))
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    colours = dict(zip([g for g in groups if g is not None], _palette(sum(g is not None for g in groups))))
    colours[None] = (0.6, 0.6, 0.6, 1.0)
    handles = [Line2D([], [], marker="o", linestyle="", markersize=7, markerfacecolor=colours[g], markeredgewidth=0,
                      label="(no label)" if g is None else g) for g in groups]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0 - 3.0 / fig.get_figwidth(), 0.5),
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1.0 - 3.1 / fig.get_figwidth(), 0.96 if title else 1.0))
    return fig


# -------------------------------------------------------------------- interactive map
def _hover_text(value, limit: int) -> str:
    text = " ".join(str(value or "").split())
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return html.escape(text)


def write_html_map(
    points,
    labels: Sequence[str | None] | None,
    titles: Sequence[str | None] | None,
    snippets: Sequence[str | None] | None,
    path,
    *,
    query_points=None,
    query_titles: Sequence[str] | None = None,
    title: str | None = None,
    counts=None,
    words: Sequence[str] | None = None,
    snippet_chars: int = 200,
    engine: str = "auto",
):
    """Write a self-contained interactive map to ``path`` (one HTML file, no network needed).

    One point per document; hovering shows its title, label and the first
    ``snippet_chars`` characters of its snippet; clicking a legend entry hides or shows a
    group. ``query_points`` are drawn as black stars. Without labels, groups are named
    k-means clusters as in :func:`draw_map`. ``engine="plotly"`` (inlined plotly.js,
    WebGL scatter), ``"svg"`` (a small hand-written SVG page) or ``"auto"`` (plotly when
    installed). Returns the path.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (n, 2), got shape {points.shape}")
    n = len(points)
    for name, values in (("labels", labels), ("titles", titles), ("snippets", snippets)):
        if values is not None and len(values) != n:
            raise ValueError(f"{len(values)} {name} for {n} points")
    groups_of = _labels_or_clusters(points, labels, counts, words, None, None) if n else []
    titles = list(titles) if titles is not None else [""] * n
    snippets = list(snippets) if snippets is not None else [""] * n
    query = None if query_points is None else np.asarray(query_points, dtype=np.float64).reshape(-1, 2)
    query_titles = list(query_titles) if query_titles is not None else (
        None if query is None else [f"query {i + 1}" for i in range(len(query))])
    page_title = title or map_title(n)
    if engine == "auto":
        try:
            import plotly  # noqa: F401

            engine = "plotly"
        except ImportError:
            engine = "svg"
    writer = {"plotly": _write_plotly, "svg": _write_svg}.get(engine)
    if writer is None:
        raise ValueError(f"engine must be 'auto', 'plotly' or 'svg', got {engine!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer(points, groups_of, titles, snippets, path, query, query_titles, page_title, snippet_chars)
    return path


def _write_plotly(points, groups_of, titles, snippets, path, query, query_titles, page_title, snippet_chars):
    import matplotlib.colors
    import plotly.graph_objects as go

    groups = _groups(groups_of)
    colours = dict(zip([g for g in groups if g is not None], _palette(sum(g is not None for g in groups))))
    colours[None] = (0.6, 0.6, 0.6, 1.0)
    size = float(np.clip(8.0 * (2000.0 / max(len(points), 1)) ** 0.25, 3.0, 8.0))
    _, alpha = marker_style(len(points))
    labels_array = np.array(groups_of, dtype=object)
    fig = go.Figure()
    for group in groups:
        rows = np.flatnonzero(labels_array == group) if group is not None else np.flatnonzero(
            [g is None for g in groups_of])
        name = "(no label)" if group is None else group
        hover = [
            f"<b>{_hover_text(titles[i], 120)}</b><br><i>{html.escape(name)}</i><br>"
            f"{_hover_text(snippets[i], snippet_chars)}"
            for i in rows
        ]
        fig.add_trace(go.Scattergl(
            x=points[rows, 0], y=points[rows, 1], mode="markers", name=name, text=hover,
            hovertemplate="%{text}<extra></extra>",
            marker=dict(size=size, color=matplotlib.colors.to_hex(colours[group]), opacity=max(alpha, 0.5)),
        ))
    if query is not None:
        fig.add_trace(go.Scatter(
            x=query[:, 0], y=query[:, 1], mode="markers", name="query",
            text=[f"<b>{_hover_text(t, 120)}</b>" for t in query_titles], hovertemplate="%{text}<extra></extra>",
            marker=dict(symbol="star", size=18, color="black", line=dict(color="white", width=1.5)),
        ))
    fig.update_layout(
        title=dict(text=html.escape(page_title)), template="plotly_white", hovermode="closest",
        legend=dict(itemsizing="constant", title="click to hide / show"), width=None, height=800,
        xaxis=dict(showticklabels=False, zeroline=False), yaxis=dict(showticklabels=False, zeroline=False,
                                                                       scaleanchor="x"),
    )
    fig.write_html(str(path), include_plotlyjs=True, include_mathjax=False, full_html=True,
                   config={"displaylogo": False})


def _write_svg(points, groups_of, titles, snippets, path, query, query_titles, page_title, snippet_chars):
    """A dependency-free page: one SVG circle per document with a <title> tooltip, and
    legend checkboxes that hide or show groups (a few lines of inline JavaScript)."""
    import matplotlib.colors

    groups = _groups(groups_of)
    colours = dict(zip([g for g in groups if g is not None], _palette(sum(g is not None for g in groups))))
    colours[None] = (0.6, 0.6, 0.6, 1.0)
    index = {g: i for i, g in enumerate(groups)}
    width, height, pad = 900.0, 700.0, 20.0
    all_points = points if query is None else np.vstack([points, query])
    (x0, x1), (y0, y1) = _view_limits(all_points) if len(all_points) else ((0, 1), (0, 1))

    def xy(p):
        return pad + (p[0] - x0) / (x1 - x0) * (width - 2 * pad), height - pad - (p[1] - y0) / (y1 - y0) * (height - 2 * pad)

    radius = float(np.clip(4.0 * math.sqrt(1000.0 / max(len(points), 1)), 0.8, 4.0))
    _, alpha = marker_style(len(points))
    marks = []
    for i, p in enumerate(points):
        cx, cy = xy(p)
        group = groups_of[i]
        tip = f"{_hover_text(titles[i], 120)}\n[{html.escape('(no label)' if group is None else group)}]\n" \
              f"{_hover_text(snippets[i], snippet_chars)}"
        marks.append(f'<circle class="g{index[group]}" cx="{cx:.1f}" cy="{cy:.1f}" r="{radius:.2f}" '
                     f'fill="{matplotlib.colors.to_hex(colours[group])}" fill-opacity="{alpha:.2f}"><title>{tip}</title></circle>')
    if query is not None:
        for p, t in zip(query, query_titles):
            cx, cy = xy(p)
            marks.append(f'<g class="query"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="9" fill="black" stroke="white" '
                         f'stroke-width="2"><title>{_hover_text(t, 120)}</title></circle></g>')
    legend = "".join(
        f'<label style="display:block"><input type="checkbox" checked data-g="g{index[g]}"> '
        f'<span style="color:{matplotlib.colors.to_hex(colours[g])}">&#9679;</span> '
        f'{html.escape("(no label)" if g is None else g)}</label>'
        for g in groups
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(page_title)}</title>
<style>body{{font-family:sans-serif;display:flex;gap:16px}} #legend{{font-size:13px}}</style></head>
<body><div><h3>{html.escape(page_title)}</h3>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" style="border:1px solid #ddd">
{''.join(marks)}
</svg></div><div id="legend"><h4>groups (click to hide / show)</h4>{legend}</div>
<script>
document.querySelectorAll('#legend input').forEach(function(box){{
  box.addEventListener('change', function(){{
    document.querySelectorAll('circle.' + box.dataset.g).forEach(function(c){{
      c.style.display = box.checked ? '' : 'none';}});}});}});
</script></body></html>
"""
    path.write_text(page, encoding="utf-8")
