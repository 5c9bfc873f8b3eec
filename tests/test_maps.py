"""Maps: static figures, interactive pages, placement of new documents, parametric t-SNE."""

from __future__ import annotations

import logging
import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection

from semhash.pipelines import baseline_maps, maps
from semhash import TopicMap
from semhash.parametric_tsne import (
    TSNEConfig,
    batch_affinities,
    fine_tune_tsne,
    knn_affinities,
    lsa_features,
    tsne_fine_tune_estimator,
    tsne_kl,
)
from tests.conftest import topic_counts

GROUPS = ["alpha", "beta", "gamma", "delta"]


def _blobs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    centres = np.array([[0, 0], [6, 0], [0, 6], [6, 6]], dtype=float)
    return centres[labels] + rng.normal(size=(n, 2)), labels


def _scatter_offsets(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_draw_map_one_mark_per_document_and_legend_of_group_names(tmp_path):
    points, ids = _blobs()
    labels = [GROUPS[i] for i in ids]
    fig = maps.draw_map(points, labels, title=maps.map_title(len(points), "Toy", "2-D code"))
    ax = fig.axes[0]
    assert _scatter_offsets(ax) == len(points)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == sorted(GROUPS)
    assert ax.get_title() == "Toy: 300 documents, 2-D code"
    path = tmp_path / "map.png"
    fig.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_map_query_points_and_unlabelled_documents():
    points, ids = _blobs(100)
    labels = [GROUPS[i] if i else None for i in ids]
    fig = maps.draw_map(points, labels, query_points=[[1.0, 1.0]])
    ax = fig.axes[0]
    assert _scatter_offsets(ax) == len(points) + 1  # the documents and one query star
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "(no label)" in legend and "query" in legend


def test_unlabelled_map_clusters_are_named_by_their_words():
    counts, topics = topic_counts(n_docs=200, n_topics=4, n_words=40, seed=1)
    words = [f"t{j // 10}w{j % 10}" for j in range(40)]  # topic k favours words "tk..."
    centres = np.array([[0, 0], [8, 0], [0, 8], [8, 8]], dtype=float)
    points = centres[topics] + np.random.default_rng(0).normal(scale=0.5, size=(200, 2))
    fig = maps.draw_map(points, None, counts=counts, words=words, n_clusters=4)
    names = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(names) == 4
    # each cluster is one topic, so all of its name's words come from that topic's block
    prefixes = set()
    for name in names:
        heads = {word.split("w")[0] for word in name.split(", ")}
        assert len(heads) == 1, name
        prefixes |= heads
    assert prefixes == {"t0", "t1", "t2", "t3"}
    assert _scatter_offsets(fig.axes[0]) == 200


def test_draw_comparison_panels_of_equal_size():
    points, ids = _blobs(120)
    labels = [GROUPS[i] for i in ids]
    fig = maps.draw_comparison({"a": points, "b": points * 3, "c": -points}, labels, title="three maps")
    panels = [ax for ax in fig.axes if ax.collections]
    assert len(panels) == 3
    sizes = {tuple(np.round(ax.get_position().size, 4)) for ax in panels}
    assert len(sizes) == 1
    assert all(_scatter_offsets(ax) == 120 for ax in panels)
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == sorted(GROUPS)


def _network_references(page: str) -> list[str]:
    patterns = [
        r"<script[^>]*\ssrc\s*=\s*[\"']?(?:https?:)?//",
        r"<link[^>]*\shref\s*=\s*[\"']?(?:https?:)?//",
        r"@import\s+url\(",
    ]
    return [m.group(0) for p in patterns for m in re.finditer(p, page, flags=re.IGNORECASE)]


@pytest.mark.parametrize("engine", ["plotly", "svg"])
def test_html_map_is_self_contained_with_one_point_per_document(tmp_path, engine):
    if engine == "plotly":
        pytest.importorskip("plotly")
    points, ids = _blobs(150)
    labels = [GROUPS[i] for i in ids]
    titles = [f"document-title-{i:04d}" for i in range(150)]
    snippets = [f"snippet <b>{i}</b> & more" for i in range(150)]
    path = maps.write_html_map(points, labels, titles, snippets, tmp_path / "map.html",
                               query_points=[[3.0, 3.0]], title="Toy map", engine=engine)
    page = path.read_text(encoding="utf-8")
    assert _network_references(page) == []
    for t in titles:
        assert page.count(t) == 1, t  # one hover entry, hence one point, per document
    for group in GROUPS:
        assert group in page
    assert "&lt;b&gt;0&lt;" in page  # snippets are escaped, not rendered as HTML
    if engine == "plotly":
        assert page.count('"name":"query"') == 1
        traces = re.findall(r'"name":"(alpha|beta|gamma|delta)"', page)
        assert sorted(traces) == sorted(GROUPS)  # one toggleable legend entry per group
    else:
        assert page.count("<circle class=\"g") == 150


def test_network_reference_check_catches_cdn_scripts():
    assert _network_references('<script src="https://cdn.plot.ly/plotly.min.js"></script>')
    assert _network_references('<link rel="stylesheet" href="//example.org/x.css">')
    assert _network_references("<style>@import url(foo.css);</style>")
    assert not _network_references('<script type="text/javascript">var u = "https://plot.ly";</script>')


def test_lsa_map_places_new_documents_consistently():
    counts, _ = topic_counts(n_docs=120)
    points, mapper = baseline_maps.lsa_map(counts)
    assert points.shape == (120, 2)
    np.testing.assert_allclose(mapper.transform(counts[:5]), points[:5], rtol=1e-4, atol=1e-5)


def test_umap_places_new_documents_and_leaves_torchs_threads_as_they_were():
    pytest.importorskip("umap")
    counts, _ = topic_counts(n_docs=200)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a job sharing its cores sets it; numba would raise it to one a core
    try:
        points, mapper = baseline_maps.umap_map(counts)
        assert torch.get_num_threads() == 1
        placed = mapper.transform(counts[:5])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert points.shape == (200, 2) and placed.shape == (5, 2) and np.isfinite(placed).all()


def test_umap_missing_gives_install_hint(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "umap":
            raise ImportError("no umap")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    counts, _ = topic_counts(n_docs=50)
    with pytest.raises(ImportError, match="pip install umap-learn"):
        baseline_maps.umap_map(counts)


@pytest.fixture(scope="module")
def small_topic_map():
    counts, labels = topic_counts(n_docs=300, seed=2)
    model = TopicMap(hidden_layers=(40, 20), pretrain_epochs=2, finetune_epochs=3, neighbour_targets=0, objective="reconstruction",
                     random_state=0).fit(counts)
    return model, counts, labels


def test_a_document_is_placed_the_same_alone_or_in_a_batch(small_topic_map):
    model, counts, _ = small_topic_map
    batch = model.transform(counts[:50])
    for row in (0, 17, 49):
        alone = model.transform(counts[row : row + 1])
        np.testing.assert_allclose(alone[0], batch[row], rtol=1e-5, atol=1e-5)


def test_knn_affinities_are_a_symmetric_distribution():
    features, _ = _blobs(200)
    P = knn_affinities(features + 10.0, perplexity=10)
    assert P.shape == (200, 200)
    assert abs(P.sum() - 1.0) < 1e-9
    assert abs(P - P.T).max() < 1e-12
    assert P.diagonal().sum() == 0
    B = batch_affinities(features[:50] + 10.0, perplexity=10)
    assert np.allclose(B, B.T) and abs(B.sum() - 1.0) < 1e-9 and np.all(np.diag(B) == 0)


@pytest.mark.parametrize("affinity", ["knn", "batch"])
def test_parametric_tsne_lowers_its_kl_on_clustered_data(small_topic_map, affinity):
    import copy

    base, counts, labels = small_topic_map
    model = copy.deepcopy(base)
    features = lsa_features(counts, n_components=10)
    P = knn_affinities(features, perplexity=10)
    inputs = base._encoder_input(counts)  # what the fitted model sees (scaled log counts)

    def codes():
        with torch.no_grad():
            return model.model_.encode(torch.from_numpy(inputs.toarray())).numpy()

    before = tsne_kl(codes(), P)
    config = TSNEConfig(affinity=affinity, perplexity=10, n_epochs=15, batch_size=100, learning_rate=1e-2)
    result = fine_tune_tsne(model.model_, inputs, config, affinities=P, features=features,
                            generator=torch.Generator().manual_seed(0))
    after = tsne_kl(codes(), P)
    assert len(result.history) == 15
    # the reconstruction-trained map already separates these four topics, so the stage
    # refines it rather than transforming it: a clear, not a large, drop
    assert after < before - 0.02, (before, after)


def test_tsne_fine_tuning_of_a_topic_map_keeps_one_pass_placement(small_topic_map):
    import copy

    base, counts, labels = small_topic_map
    model = tsne_fine_tune_estimator(copy.deepcopy(base), counts, objective="both", n_epochs=3, perplexity=10,
                                     batch_size=100)
    assert len(model.tsne_history_) == 3
    batch = model.transform(counts[:20])
    np.testing.assert_allclose(model.transform(counts[5:6])[0], batch[5], rtol=1e-5, atol=1e-5)
    assert not np.allclose(batch, base.transform(counts[:20]))


def test_a_small_collection_gets_the_epochs_that_pass_the_minimum_documents(small_topic_map):
    """An epoch passes each of the n documents once: more than 2 epochs' worth asks for more
    epochs; a collection that passes them in its epochs keeps its epochs."""
    import copy

    base, counts, _ = small_topic_map
    n = counts.shape[0]
    model = tsne_fine_tune_estimator(copy.deepcopy(base), counts, n_epochs=2, perplexity=10, min_documents=5 * n - 3)
    assert len(model.tsne_history_) == 5
    model = tsne_fine_tune_estimator(copy.deepcopy(base), counts, n_epochs=2, perplexity=10, min_documents=2 * n)
    assert len(model.tsne_history_) == 2
    with pytest.raises(ValueError, match="tsne_min_documents"):
        TopicMap(tsne_min_documents=-1).fit(counts)


def test_tsne_schedule_negatives_and_epoch_callback(small_topic_map):
    import copy

    base, counts, _ = small_topic_map
    features = lsa_features(counts, n_components=10)
    P = knn_affinities(features, perplexity=10)
    inputs = base._encoder_input(counts)  # what the fitted model sees (scaled log counts)
    model = copy.deepcopy(base)
    seen = []

    def on_epoch(epoch):
        assert not model.model_.training  # scored in eval mode
        seen.append(epoch)

    config = TSNEConfig(perplexity=10, n_epochs=4, batch_size=100, schedule="cosine", n_negatives=50,
                        input_dropout=0.2)
    result = fine_tune_tsne(model.model_, inputs, config, affinities=P, on_epoch=on_epoch,
                            generator=torch.Generator().manual_seed(0))
    assert seen == [1, 2, 3, 4] and len(result.history) == 4
    assert all(np.isfinite(result.history))
    with pytest.raises(ValueError, match="schedule"):
        TSNEConfig(n_epochs=1, schedule="linear")


def test_tsne_config_checks_its_settings_and_is_frozen():
    import dataclasses

    config = TSNEConfig()
    assert (config.affinity, config.perplexity, config.n_epochs, config.learning_rate) == ("knn", 30.0, 50, 1e-2)
    with pytest.raises(ValueError, match="unknown affinity 'umap'"):
        TSNEConfig(affinity="umap")
    with pytest.raises(ValueError, match=re.escape("input_dropout must be in [0, 1), got 1.0")):
        TSNEConfig(input_dropout=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_epochs = 3


def test_tsne_collapse_guard_starts_over_and_at_worst_keeps_the_input_model(small_topic_map, monkeypatch, caplog):
    import copy

    from semhash import parametric_tsne
    from semhash.parametric_tsne import code_spread

    base, counts, _ = small_topic_map
    P = knn_affinities(lsa_features(counts, n_components=10), perplexity=10)
    inputs = base._encoder_input(counts)  # what the fitted model sees (scaled log counts)
    dense = torch.from_numpy(inputs.toarray()).float()
    real_spread = code_spread
    # every attempt collapses (the spread after each epoch reads 0): warned, and the model
    # is left as it came in rather than a point
    calls = []

    def spread_always_collapsing(net, x):
        calls.append(1)
        return real_spread(net, x) if len(calls) == 1 else 0.0  # call 1 is the start

    monkeypatch.setattr(parametric_tsne, "code_spread", spread_always_collapsing)
    model = copy.deepcopy(base)
    config = TSNEConfig(perplexity=10, n_epochs=3, batch_size=100, learning_rate=3e-3)
    with pytest.warns(RuntimeWarning, match="collapsed the map 4 times"):
        result = fine_tune_tsne(model.model_, inputs, config, affinities=P, generator=torch.Generator().manual_seed(0))
    assert result.collapsed and result.restarts == parametric_tsne.MAX_RESTARTS
    for mine, theirs in zip(model.model_.state_dict().values(), base.model_.state_dict().values()):
        assert torch.equal(mine, theirs)
    # a collapse that a smaller step avoids: only the first attempt collapses
    calls = []

    def spread_collapsing_once(net, x):
        calls.append(1)
        return 0.0 if len(calls) == 2 else real_spread(net, x)  # call 1 is the start

    monkeypatch.setattr(parametric_tsne, "code_spread", spread_collapsing_once)
    model = copy.deepcopy(base)
    with caplog.at_level(logging.INFO, logger="semhash"):
        result = fine_tune_tsne(model.model_, inputs, config, affinities=P, generator=torch.Generator().manual_seed(0))
    assert result.restarts == 1 and not result.collapsed and len(result.history) == 3
    assert any("starting over at learning rate 0.00075" in line for line in caplog.messages)
    assert real_spread(model.model_, dense) > 0.01


def test_topic_map_sparse_transform_matches_the_network_and_follows_fine_tuning(small_topic_map):
    import copy

    base, counts, _ = small_topic_map
    model = copy.deepcopy(base)
    np.testing.assert_allclose(model.transform(counts), model.transform_real(counts), rtol=1e-4, atol=1e-4)
    before = model.transform(counts[:20])
    tsne_fine_tune_estimator(model, counts, n_epochs=2, perplexity=10, batch_size=100)
    after = model.transform(counts[:20])  # the cached NumPy weights must not be stale
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, model.transform_real(counts[:20]), rtol=1e-4, atol=1e-4)
