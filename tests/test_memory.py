"""Tests for semhash.memory: Willshaw associative memory and sparse code patterns."""

from __future__ import annotations

import math

import numpy as np
import pytest

import semhash.memory as memory_module
from semhash.codes import pack_bits
from semhash.memory import WillshawMemory, false_positive_rate, willshaw_capacity, willshaw_load
from semhash.sparse_codes import SparseCodeMap, nearest_addresses, sparse_address


def dense(indices: list[list[int]], n: int) -> np.ndarray:
    out = np.zeros((len(indices), n), dtype=bool)
    for row, active in enumerate(indices):
        out[row, active] = True
    return out


# Three overlapping auto-associative patterns in 16 units.
A, B, C = [0, 1, 2, 3], [2, 3, 4, 5], [6, 7, 8, 9]


@pytest.fixture
def auto_memory() -> WillshawMemory:
    return WillshawMemory(16).store([A, B, C])


# --------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("threshold", ["soft", "hard"])
def test_recalls_stored_pattern_from_half_its_ones(auto_memory, threshold):
    result = auto_memory.recall([[0, 1], [4, 5], [6, 9]], threshold=threshold)
    np.testing.assert_array_equal(result.patterns, dense([A, B, C], 16))
    np.testing.assert_array_equal(result.thresholds, [2, 2, 2])
    np.testing.assert_array_equal(result.confidence, [1.0, 1.0, 1.0])


@pytest.mark.parametrize("threshold", ["soft", "hard"])
def test_recalls_stored_pattern_from_complete_question(auto_memory, threshold):
    result = auto_memory.recall(dense([A, B, C], 16), threshold=threshold)
    np.testing.assert_array_equal(result.patterns, dense([A, B, C], 16))


def test_hard_threshold_can_return_nothing(auto_memory):
    # Units 12, 13 were never trained; {0, 12} has one wrong unit, so nothing is
    # connected to the whole question.
    result = auto_memory.recall([[12, 13], [0, 12]], threshold="hard")
    assert not result.patterns.any()
    np.testing.assert_array_equal(result.max_sums, [0, 1])
    np.testing.assert_array_equal(result.confidence, [0.0, 0.5])


def test_soft_threshold_answers_question_with_a_wrong_unit(auto_memory):
    result = auto_memory.recall([[0, 12], [12, 13]], threshold="soft")
    np.testing.assert_array_equal(result.patterns[0], dense([A], 16)[0])
    assert not result.patterns[1].any()  # no overlap with stored data: nothing to say
    assert result.thresholds[1] == 1  # T never drops to 0 (which would fire every unit)


def test_soft_threshold_never_empty_when_question_overlaps_stored_data():
    rng = np.random.default_rng(0)
    memory = WillshawMemory(300, 200, threshold="soft")
    memory.store(sparse_address(np.arange(400), 300, 6, seed=1), sparse_address(np.arange(400), 200, 5, seed=2))
    trained = np.flatnonzero(np.unpackbits(memory.weights_, axis=1).any(axis=1))
    questions = [
        np.concatenate([rng.choice(trained, 1 + k % 3), rng.choice(300, k % 4)]) for k in range(200)
    ]
    soft = memory.recall(questions)
    hard = memory.recall(questions, threshold="hard")
    assert soft.patterns.any(axis=1).all()
    assert not hard.patterns.any(axis=1).all()  # the hard threshold does give up on some


def test_empty_question_gives_empty_answer(auto_memory):
    for threshold in ("soft", "hard", 1):
        result = auto_memory.recall([[]], threshold=threshold)
        assert not result.patterns.any()


def test_hetero_association():
    questions = [[0, 1, 2], [3, 4, 5], [2, 6, 7]]
    answers = [[0, 5], [1, 2], [3]]
    memory = WillshawMemory(10, 6).store(questions, answers)
    assert memory.n_stored_ == 3
    np.testing.assert_array_equal(
        memory.dendritic_sums([[0, 1, 2]]), [[3, 0, 0, 1, 0, 3]]  # unit 2 also feeds answer 3
    )
    for threshold in ("soft", "hard"):
        result = memory.recall(questions, threshold=threshold)
        np.testing.assert_array_equal(result.patterns, dense(answers, 6))
        partial = memory.recall([[0, 1], [4], [6, 7]], threshold=threshold)
        np.testing.assert_array_equal(partial.patterns, dense(answers, 6))
    with pytest.raises(ValueError, match="auto-associative"):
        memory.recall(questions, iterations=3)
    with pytest.raises(ValueError, match="needs answers"):
        memory.store(questions)


def test_iterated_auto_association_converges():
    # {0, 1, 2} is half of P; unit 6 is spurious (Q links it to 0, 1 and R to 2).
    P, Q, R = [0, 1, 2, 3, 4, 5], [0, 1, 6, 7, 8, 9], [2, 6, 10, 11, 12, 13]
    memory = WillshawMemory(16, threshold="hard").store([P, Q, R])
    one_step = memory.recall([[0, 1, 2]])
    np.testing.assert_array_equal(one_step.patterns[0], dense([P + [6]], 16)[0])
    assert not one_step.converged[0]

    # Fixed threshold M = 6 after the first step drops the spurious unit: P, then P again.
    iterated = memory.recall([[0, 1, 2]], iterations=10, feedback_threshold=6)
    np.testing.assert_array_equal(iterated.patterns[0], dense([P], 16)[0])
    assert iterated.converged[0] and iterated.n_iterations[0] == 3

    # A stored pattern is a fixed point at once.
    stored = memory.recall([P], iterations=10)
    assert stored.converged[0] and stored.n_iterations[0] == 1

    # The plain hard rule swings between {0, 1, 2} and P + {6}: stops at the step limit.
    swinging = memory.recall([[0, 1, 2]], iterations=4)
    assert not swinging.converged[0] and swinging.n_iterations[0] == 4


# --------------------------------------------------------------------------- storage


@pytest.mark.parametrize("store_path", ["bits", "rows"])
def test_packed_storage_matches_dense_reference(monkeypatch, store_path):
    # Tiny scratch budget: forces many store/recall batches.
    monkeypatch.setattr(memory_module, "_BATCH_BYTES", 64)
    # Steer store() to one of its two ways of ORing in the outer products.
    monkeypatch.setattr(memory_module, "_SCATTER_BYTES_PER_BIT", 1 if store_path == "bits" else 10**6)
    rng = np.random.default_rng(42)
    n_in, n_out, n_pairs = 37, 45, 60  # not multiples of 8: exercises the packing tail
    X = rng.random((n_pairs, n_in)) < 0.12
    Y = rng.random((n_pairs, n_out)) < 0.1
    X[5] = False  # an empty question stores nothing
    memory = WillshawMemory(n_in, n_out)
    memory.store(X[:20], Y[:20])  # dense boolean form
    memory.store([np.flatnonzero(x) for x in X[20:45]], [np.flatnonzero(y) for y in Y[20:45]])
    memory.store(X[45:].astype(np.int8), Y[45:].astype(np.int64))  # 0/1 integer form

    reference = (Y.T.astype(int) @ X.astype(int)) > 0  # (n_out, n_in)
    unpacked = np.unpackbits(memory.weights_, axis=1, count=n_out).astype(bool)
    np.testing.assert_array_equal(unpacked, reference.T)
    assert memory.load_ == pytest.approx(reference.mean())
    assert memory.n_stored_ == n_pairs

    questions = rng.random((30, n_in)) < 0.15
    sums = questions.astype(int) @ reference.T.astype(int)
    np.testing.assert_array_equal(memory.dendritic_sums(questions), sums)
    sizes = questions.sum(axis=1)
    hard = sums >= np.maximum(sizes, 1)[:, None]
    soft = sums >= np.maximum(sums.max(axis=1), 1)[:, None]
    np.testing.assert_array_equal(memory.recall(questions, threshold="hard").patterns, hard)
    np.testing.assert_array_equal(memory.recall(questions, threshold="soft").patterns, soft)


def test_repeated_indices_count_once(auto_memory):
    np.testing.assert_array_equal(
        auto_memory.dendritic_sums([[0, 0, 1]]), auto_memory.dendritic_sums([[1, 0]])
    )


def test_rejects_bad_patterns(auto_memory):
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        auto_memory.recall([[3, 16]])
    with pytest.raises(ValueError, match="units"):
        auto_memory.recall(np.zeros((2, 15), dtype=bool))
    with pytest.raises(ValueError, match="0/1 patterns of 20 units"):
        auto_memory.recall(np.zeros((2, 20), dtype=np.int64))
    with pytest.raises(ValueError, match="answers=None"):
        auto_memory.store([A], [B])
    with pytest.raises(ValueError, match="threshold"):
        auto_memory.recall([A], threshold="medium")


def test_refuses_oversized_memory_and_allows_large_one():
    with pytest.raises(ValueError, match=r"1,000,000 x 1,000,000 .* 125 GB"):
        WillshawMemory(10**6)
    # 100,000 x 100,000 = 1.25 GB packed; zero pages are mapped lazily, so only the rows
    # written here cost memory.
    big = WillshawMemory(100_000, 100_000)
    assert big.nbytes == 1_250_000_000
    pattern = [[7, 99_999, 50_000, 12_345]]
    big.store(pattern, pattern)
    np.testing.assert_array_equal(big.recall([[7, 50_000]]).indices()[0], sorted(pattern[0]))
    del big


# --------------------------------------------------------------------------- theory


def test_load_and_capacity_formulas():
    n, m = 2000, 10
    capacity = willshaw_capacity(n, n, m, m)
    assert capacity == pytest.approx(math.log(2) * n * n / (m * m))
    assert capacity == pytest.approx(27725.887, rel=1e-6)
    # The capacity is where the load reaches 1/2.
    assert willshaw_load(capacity, n, n, m, m) == pytest.approx(0.5, abs=1e-4)
    assert willshaw_load(1, n, n, m, m) == pytest.approx(m * m / (n * n))
    assert willshaw_load(0, n, n, m, m) == 0.0
    assert false_positive_rate(0.5, 10) == pytest.approx(2**-10)

    memory = WillshawMemory(n, 1000)
    assert memory.expected_capacity(10, 5) == pytest.approx(math.log(2) * n * 1000 / 50)
    assert memory.expected_load(500, 10, 5) == pytest.approx(1 - (1 - 50 / (n * 1000)) ** 500)


def test_measured_load_follows_theory(auto_memory):
    assert auto_memory.load_ == pytest.approx(3 * 16 / 256 - 4 / 256)  # A and B share a 2x2 block
    n_in, n_out, m, n_pairs = 500, 400, 5, 3000
    memory = WillshawMemory(n_in, n_out).store(
        sparse_address(np.arange(n_pairs), n_in, m, seed=3),
        sparse_address(np.arange(n_pairs), n_out, m, seed=4),
    )
    expected = memory.expected_load(n_pairs, m)
    assert memory.load_ == pytest.approx(expected, abs=0.01)
    assert memory.false_positive_rate(m) == pytest.approx(memory.load_**m)


# --------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path, auto_memory):
    path = auto_memory.save(tmp_path / "memory")
    assert path.suffix == ".npz"
    with np.load(path, allow_pickle=False) as data:  # readable without pickle
        assert set(data.files) == {"weights", "config"}
    loaded = WillshawMemory.load(path)
    assert loaded.is_auto_associative and loaded.n_stored_ == 3
    assert loaded.threshold == auto_memory.threshold
    np.testing.assert_array_equal(loaded.weights_, auto_memory.weights_)
    questions = [[0, 1], [12]]
    np.testing.assert_array_equal(loaded.recall(questions).patterns, auto_memory.recall(questions).patterns)

    hetero = WillshawMemory(10, 6, threshold="hard").store([[0, 1]], [[5]])
    reloaded = WillshawMemory.load(hetero.save(tmp_path / "hetero.npz"))
    assert (reloaded.n_inputs, reloaded.n_outputs, reloaded.threshold) == (10, 6, "hard")


# --------------------------------------------------------------------------- codes


def test_sparse_code_map_encodes_blocks():
    code_map = SparseCodeMap(16, block_bits=8)
    assert (code_map.n_units, code_map.n_active) == (512, 2)
    codes = np.array([[0x00, 0x00], [0xFF, 0x01]], dtype=np.uint8)
    np.testing.assert_array_equal(code_map.encode(codes), [[0, 256], [255, 257]])
    assert SparseCodeMap(64, block_bits=8).n_units == 2048


@pytest.mark.parametrize("n_bits,block_bits", [(64, 8), (12, 3), (32, 4), (10, 1)])
def test_sparse_code_map_round_trip(n_bits, block_bits):
    rng = np.random.default_rng(n_bits + block_bits)
    codes = pack_bits(rng.random((50, n_bits)) < 0.5)
    code_map = SparseCodeMap(n_bits, block_bits)
    active = code_map.encode(codes)
    assert active.shape == (50, n_bits // block_bits)
    for patterns in (active, code_map.encode(codes, as_bool=True)):
        decoded, exact = code_map.decode(patterns)
        np.testing.assert_array_equal(decoded, codes)
        assert exact.all()


def test_sparse_code_map_best_effort_decode():
    code_map = SparseCodeMap(8, block_bits=4)  # two blocks of 16 units
    # Block 0: values 0b0011 and 0b0111 and 0b0001 -> bitwise majority 0b0011.
    # Block 1: nothing active -> 0b0000.
    decoded, exact = code_map.decode([[0b0011, 0b0111, 0b0001]])
    np.testing.assert_array_equal(decoded, [[0b0011_0000]])
    assert not exact[0]
    scores = np.zeros((1, 32))
    scores[0, 0b0111] = 2.0  # the best-scored active unit of block 0
    scores[0, 16 + 0b1010] = 1.0  # the best unit of the empty block 1
    decoded, exact = code_map.decode([[0b0011, 0b0111, 0b0001]], scores=scores)
    np.testing.assert_array_equal(decoded, [[0b0111_1010]])
    with pytest.raises(ValueError, match="multiple"):
        SparseCodeMap(10, block_bits=4)


def test_sparse_address_is_a_function_of_seed_and_id():
    addresses = sparse_address(np.arange(100), 2048, 8, seed=5)
    assert addresses.shape == (100, 8)
    assert (np.diff(addresses, axis=1) > 0).all() and addresses.max() < 2048
    np.testing.assert_array_equal(sparse_address([42, 7], 2048, 8, seed=5), addresses[[42, 7]])
    assert not np.array_equal(sparse_address([42], 2048, 8, seed=6)[0], addresses[42])
    dense_ones = sparse_address(np.arange(5), 10, 8, seed=0)  # more than half the units
    assert (np.diff(dense_ones, axis=1) > 0).all()


def test_codes_to_document_ids():
    rng = np.random.default_rng(7)
    code_map = SparseCodeMap(64, block_bits=8)
    doc_ids = np.arange(1000, 1300)
    codes = pack_bits(rng.random((len(doc_ids), 64)) < 0.5)
    addresses = sparse_address(doc_ids, 2048, 8, seed=0)
    memory = WillshawMemory(code_map.n_units, 2048).store(code_map.encode(codes), addresses)

    found = memory.recall(code_map.encode(codes))
    rows, overlap = nearest_addresses(found.patterns, addresses)
    np.testing.assert_array_equal(doc_ids[rows], doc_ids)
    assert (overlap == 8).all()

    noisy = codes.copy()
    noisy[:, 3] ^= 0x10  # one flipped bit: one wrong active unit of 8
    soft = memory.recall(code_map.encode(noisy), threshold="soft")
    rows, _ = nearest_addresses(soft.patterns, addresses)
    assert (doc_ids[rows] == doc_ids).mean() > 0.95
    assert not memory.recall(code_map.encode(noisy), threshold="hard").patterns.any(axis=1).all()
