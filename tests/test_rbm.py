import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from semhash.rbm import RBM
from tests.conftest import topic_counts


def _binary_patterns(n=300, seed=0):
    """Noisy copies of 3 prototype patterns over 40 units."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 2, (3, 40))
    data = prototypes[rng.integers(0, 3, n)]
    flips = rng.random(data.shape) < 0.05
    return np.where(flips, 1 - data, data).astype(np.float32)


def test_binary_rbm_training_lowers_reconstruction_error():
    data = _binary_patterns()
    untrained = RBM(16, n_epochs=0, random_state=0).fit(data).reconstruction_error(data)
    rbm = RBM(16, learning_rate=0.1, n_epochs=30, random_state=0).fit(data)
    assert rbm.reconstruction_error(data) < 0.5 * untrained
    assert rbm.history_[-1] < rbm.history_[0]


def test_poisson_rbm_learns_word_counts():
    counts, _ = topic_counts(n_docs=300)
    untrained = RBM(20, visible="poisson", n_epochs=0).fit(counts).reconstruction_error(counts)
    rbm = RBM(20, visible="poisson", learning_rate=0.01, n_epochs=20, random_state=0).fit(counts)
    # Cross-entropy of the reconstructed word distribution, in nats per document.
    assert rbm.reconstruction_error(counts) < untrained - 0.2


def test_poisson_reconstruction_keeps_document_length():
    counts, _ = topic_counts(n_docs=50)
    rbm = RBM(10, visible="poisson", n_epochs=2, random_state=0).fit(counts)
    v = torch.from_numpy(counts.toarray())
    length = v.sum(dim=1, keepdim=True)
    rates = rbm.visible_mean(rbm.hidden_mean(v), length)
    assert torch.allclose(rates.sum(dim=1), length.squeeze(1), rtol=1e-4)


def test_gaussian_visible_and_linear_hidden_units_train():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (3, 12))
    data = (centres[rng.integers(0, 3, 400)] + rng.normal(0, 0.3, (400, 12))).astype(np.float32)
    data = (data - data.mean(0)) / data.std(0)
    before = RBM(8, visible="gaussian", n_epochs=0).fit(data).reconstruction_error(data)
    rbm = RBM(8, visible="gaussian", learning_rate=0.01, n_epochs=30, random_state=0).fit(data)
    assert rbm.reconstruction_error(data) < 0.7 * before
    linear = RBM(4, hidden="linear", learning_rate=0.001, n_epochs=20, random_state=0).fit(_binary_patterns())
    codes = linear.transform(_binary_patterns())
    assert codes.min() < 0 or codes.max() > 1  # linear units are not squashed into (0, 1)


def test_same_seed_same_weights_and_other_seed_differs():
    data = _binary_patterns()
    a = RBM(8, n_epochs=3, random_state=5).fit(data)
    b = RBM(8, n_epochs=3, random_state=5).fit(data)
    c = RBM(8, n_epochs=3, random_state=6).fit(data)
    assert torch.equal(a.weights_, b.weights_)
    assert not torch.equal(a.weights_, c.weights_)


def test_bad_parameters_and_inputs_are_named():
    with pytest.raises(ValueError, match="unknown visible units"):
        RBM(4, visible="softmax").fit(_binary_patterns())
    with pytest.raises(ValueError, match="Found array with 0 sample"):
        RBM(4).fit(np.zeros((0, 5), np.float32))
    rbm = RBM(4, n_epochs=1).fit(_binary_patterns())
    with pytest.raises(ValueError, match="X has 7 features, but RBM is expecting 40 features"):
        rbm.transform(np.zeros((2, 7), np.float32))
    with pytest.raises(NotFittedError, match="not fitted"):
        RBM(4).transform(_binary_patterns())
    with pytest.raises(ValueError, match="Negative values in data passed to RBM"):
        RBM(4, visible="poisson").fit(-_binary_patterns())


def test_divergence_is_reported_not_hidden():
    data = _binary_patterns() * 1e4
    with pytest.raises(FloatingPointError, match="learning rate"):
        RBM(8, visible="gaussian", learning_rate=10.0, n_epochs=5, random_state=0).fit(data)


def test_progress_goes_to_the_logger_and_verbose_shows_it_on_stderr(capsys, caplog):
    import logging

    data = _binary_patterns()
    RBM(8, n_epochs=2, verbose=True).fit(data)
    out = capsys.readouterr()
    assert "epoch   2/2  reconstruction error" in out.err and out.out == ""
    RBM(8, n_epochs=2).fit(data)
    assert capsys.readouterr().err == ""  # verbose=True above left nothing behind
    with caplog.at_level(logging.INFO, logger="semhash"):
        RBM(8, n_epochs=1).fit(data)
    assert [r.name for r in caplog.records] == ["semhash.rbm"]
    assert "epoch   1/1" in caplog.messages[0]
