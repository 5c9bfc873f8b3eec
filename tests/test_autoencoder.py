import numpy as np
import torch

from semhash.autoencoder import DeepAutoencoder, evaluate_loss, fine_tune
from semhash.data import as_generator
from semhash.estimator import encoder_input, word_distribution
from semhash.rbm import RBM
from tests.conftest import topic_counts


def _stack(counts, sizes=(30, 8)):
    rbms, data = [], encoder_input(counts)
    for depth, size in enumerate(sizes):
        rbm = RBM(size, visible="poisson" if depth == 0 else "binary", learning_rate=0.05 if depth else 0.005,
                  n_epochs=3, random_state=depth).fit(data)
        rbms.append(rbm)
        data = rbm.transform(data)
    return rbms


def test_unrolled_network_computes_the_stacks_up_down_pass():
    counts, _ = topic_counts(n_docs=60)
    rbms = _stack(counts)
    model = DeepAutoencoder.from_rbms(rbms, code="binary", output="softmax")
    x = torch.from_numpy(encoder_input(counts).toarray())
    h = x
    for rbm in rbms:
        h = rbm.hidden_mean(h)
    assert torch.allclose(model.encode(x), h, atol=1e-5)
    down = h
    for rbm in reversed(rbms[1:]):
        down = torch.sigmoid(down @ rbm.weights_.T + rbm.visible_bias_)
    logits = down @ rbms[0].weights_.T + rbms[0].visible_bias_
    assert torch.allclose(model.decode(h), logits, atol=1e-4)


def test_fine_tuning_lowers_the_reconstruction_loss():
    counts, _ = topic_counts(n_docs=200)
    model = DeepAutoencoder.from_rbms(_stack(counts), code="binary", output="softmax")
    inputs, targets = encoder_input(counts), word_distribution(counts)
    before = evaluate_loss(model, inputs, targets)
    fine_tune(model, inputs, targets, n_epochs=5, learning_rate=3e-3, code_noise=4.0, generator=as_generator(0))
    assert evaluate_loss(model, inputs, targets) < before


def test_early_stopping_keeps_the_best_validation_epoch():
    counts, _ = topic_counts(n_docs=200)
    model = DeepAutoencoder.from_rbms(_stack(counts), code="linear", output="softmax")
    inputs, targets = encoder_input(counts), word_distribution(counts)
    result = fine_tune(model, inputs[:150], targets[:150], validation=(inputs[150:], targets[150:]),
                       n_epochs=8, learning_rate=1e-2, patience=2, generator=as_generator(0))
    val_losses = [val for _, val in result.history]
    assert result.best_epoch == int(np.argmin(val_losses))
    assert abs(evaluate_loss(model, inputs[150:], targets[150:]) - min(val_losses)) < 1e-4


def test_training_runs_to_convergence_lowering_the_step_at_each_plateau():
    counts, _ = topic_counts(n_docs=200)
    inputs, targets = encoder_input(counts), word_distribution(counts)

    def run(tol, drops):
        model = DeepAutoencoder.from_rbms(_stack(counts), code="linear", output="softmax")
        return fine_tune(model, inputs[:150], targets[:150], validation=(inputs[150:], targets[150:]),
                         n_epochs=300, learning_rate=1e-2, patience=3, tol=tol, learning_rate_drops=drops,
                         warmup_epochs=2, generator=as_generator(0))

    creeping = run(0.0, 0)  # every tiny improvement counts: runs long
    converged = run(0.01, 0)  # 1% in 3 epochs, or stop
    assert len(converged.history) < len(creeping.history)
    assert converged.drop_epochs == []
    dropped = run(0.01, 2)
    # the same run up to the first plateau, where the step is lowered instead of stopping
    assert dropped.drop_epochs[0] == len(converged.history) - 1
    assert len(dropped.drop_epochs) == 2 and len(dropped.history) > len(converged.history)
    val_losses = [val for _, val in dropped.history]
    assert dropped.best_epoch == int(np.argmin(val_losses)) and min(val_losses) <= min(
        val for _, val in converged.history)


def test_input_dropout_still_trains_and_makes_codes_robust_to_missing_words():
    counts, _ = topic_counts(n_docs=300)
    inputs, targets = encoder_input(counts), word_distribution(counts)
    half = inputs.copy()
    half.data[np.random.default_rng(0).random(half.nnz) < 0.5] = 0.0  # half of each post's words

    def agreement(model):
        with torch.no_grad():
            full = model.encode(torch.from_numpy(inputs.toarray())) > 0.5
            part = model.encode(torch.from_numpy(half.toarray())) > 0.5
        return float((full == part).float().mean())

    scores = {}
    for dropout in (0.0, 0.5):
        model = DeepAutoencoder.from_rbms(_stack(counts), code="binary", output="softmax")
        before = evaluate_loss(model, inputs, targets)
        fine_tune(model, inputs, targets, n_epochs=15, learning_rate=3e-3, code_noise=4.0, input_dropout=dropout,
                  generator=as_generator(0))
        assert evaluate_loss(model, inputs, targets) < before
        scores[dropout] = agreement(model)
    assert scores[0.5] >= scores[0.0]


def test_sparse_rows_are_encoded_as_densified_ones():
    from semhash.autoencoder import SPARSE_MIN_ROWS

    counts, _ = topic_counts(n_docs=SPARSE_MIN_ROWS + 50)
    inputs = encoder_input(counts)
    for code in ("binary", "linear"):
        model = DeepAutoencoder.from_rbms(_stack(counts), code=code, output="softmax")
        with torch.no_grad():
            sparse = model.encode_matrix(inputs)  # many rows: the sparse first layer
            dense = model.encode(torch.from_numpy(inputs.toarray()))
            few = model.encode_matrix(inputs[:3])  # few rows: densified
        assert torch.allclose(sparse, dense, atol=1e-5)
        assert torch.allclose(few, dense[:3], atol=1e-5)


def test_sparse_batches_train_as_dense_ones():
    """SparseInputLinear: same outputs and same weight gradients as the dense layer."""
    import scipy.sparse as sp

    counts, _ = topic_counts(n_docs=40)
    x = sp.csr_matrix(encoder_input(counts), dtype=np.float32)
    torch.manual_seed(0)
    model = DeepAutoencoder([x.shape[1], 12, 4], code="binary", output="softmax")
    target = torch.from_numpy(word_distribution(counts).toarray().astype(np.float32))
    grads = []
    for batch in (x, torch.from_numpy(x.toarray())):
        model.zero_grad()
        _, logits = model(batch)
        model.reconstruction_loss(logits, target).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        assert logits.shape == (40, x.shape[1])
    for sparse_grad, dense_grad in zip(*grads):
        torch.testing.assert_close(sparse_grad, dense_grad, rtol=1e-4, atol=1e-6)


def test_sparse_input_dropout_keeps_zeros_and_drops_a_share_of_the_rest():
    import scipy.sparse as sp

    from semhash.data import drop_inputs, iterate_batches

    x = sp.random(200, 300, density=0.2, format="csr", dtype=np.float32, random_state=0)
    dropped = drop_inputs(x, 0.5, as_generator(0), rescale=True)
    assert sp.issparse(dropped) and dropped.shape == x.shape
    kept = dropped.toarray() != 0
    assert not (kept & (x.toarray() == 0)).any()
    assert abs(kept.sum() / x.nnz - 0.5) < 0.03
    np.testing.assert_allclose(dropped.toarray()[kept], 2 * x.toarray()[kept])
    assert x.nnz == 12000  # the input is untouched
    batches = list(iterate_batches(x, 64, extra=x, keep_sparse=True))
    assert sp.issparse(batches[0][0]) and isinstance(batches[0][1], torch.Tensor) and len(batches) == 4


def test_batches_with_rows_line_up_with_their_rows():
    from semhash.data import iterate_batches

    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    seen = []
    for rows, batch, extra in iterate_batches(X, 4, shuffle=True, generator=torch.Generator().manual_seed(0),
                                              extra=X * 10, with_rows=True):
        np.testing.assert_array_equal(batch.numpy(), X[rows])
        np.testing.assert_array_equal(extra.numpy(), X[rows] * 10)
        seen.extend(rows.tolist())
    assert sorted(seen) == list(range(10))
