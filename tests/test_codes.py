import numpy as np
import pytest

from semhash import codes
from semhash.codes import (as_words, from_hex, hamming_distances, n_bytes, pack_bits, popcount, to_hex, unpack_bits,
                           word_distances)


def test_pack_unpack_round_trip_for_lengths_not_multiple_of_8():
    rng = np.random.default_rng(0)
    for n_bits in (1, 7, 8, 20, 28, 64, 129):
        bits = rng.integers(0, 2, (5, n_bits)).astype(np.uint8)
        packed = pack_bits(bits)
        assert packed.shape == (5, n_bytes(n_bits)) and packed.dtype == np.uint8
        assert np.array_equal(unpack_bits(packed, n_bits), bits)


def test_most_significant_bit_first():
    assert pack_bits(np.array([[1, 0, 0, 0, 0, 0, 0, 1]]))[0, 0] == 0b10000001


def test_hamming_distances_match_bit_counting():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, (6, 37)), rng.integers(0, 2, (9, 37))
    expected = (a[:, None, :] != b[None, :, :]).sum(axis=2)
    assert np.array_equal(hamming_distances(pack_bits(a), pack_bits(b)), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_popcount_and_its_numpy_1_fallback_count_set_bits(dtype):
    values = np.random.default_rng(3).integers(0, np.iinfo(dtype).max, (4, 5), dtype=dtype, endpoint=True)
    values[0, 0], values[0, 1] = 0, np.iinfo(dtype).max
    expected = np.array([[bin(int(v)).count("1") for v in row] for row in values])
    for count in (popcount, codes._popcount_by_bytes):
        result = count(values)
        assert result.dtype == np.uint8 and np.array_equal(result, expected)
    assert np.array_equal(codes._popcount_by_bytes(values[:, ::2]), expected[:, ::2])  # not contiguous


def test_hamming_distances_without_bitwise_count(monkeypatch):
    rng = np.random.default_rng(4)
    a, b = pack_bits(rng.integers(0, 2, (5, 70))), pack_bits(rng.integers(0, 2, (8, 70)))
    expected = hamming_distances(a, b)
    monkeypatch.setattr(codes, "_popcount", codes._popcount_by_bytes)
    assert np.array_equal(hamming_distances(a, b), expected)


def test_words_are_zero_padded_and_distances_keep_their_dtype():
    rng = np.random.default_rng(5)
    for n_bits in (8, 20, 64, 72, 129):
        a, b = rng.integers(0, 2, (3, n_bits)), rng.integers(0, 2, (6, n_bits))
        words = as_words(pack_bits(a))
        assert words.dtype == np.uint64 and words.shape == (3, -(-n_bits // 64)) and words.flags.c_contiguous
        expected = (a[:, None, :] != b[None, :, :]).sum(axis=2)
        for dtype in (np.int32, np.uint8, np.uint16):
            distances = word_distances(words, as_words(pack_bits(b)), dtype)
            assert distances.dtype == dtype and np.array_equal(distances, expected)
    code = pack_bits(rng.integers(0, 2, (1, 64)))
    assert np.shares_memory(as_words(code), code)  # whole words: a view, no copy
    assert np.array_equal(as_words(code[0]), as_words(code))  # one code is one row


def test_hex_round_trip_and_errors():
    code = pack_bits(np.random.default_rng(2).integers(0, 2, (1, 64)))
    text = to_hex(code[0])
    assert len(text) == 16
    assert np.array_equal(from_hex(text, 64), code)
    assert np.array_equal(from_hex("0x" + text.upper(), 64), code)
    with pytest.raises(ValueError, match="hex digits"):
        from_hex(text[:-2], 64)
    with pytest.raises(ValueError, match="not a hex code"):
        from_hex("zz" * 8, 64)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="0 or 1"):
        pack_bits(np.array([[0, 2]]))
    with pytest.raises(ValueError, match="uint8"):
        hamming_distances(np.zeros((1, 2), np.int64), np.zeros((1, 2), np.uint8))
    with pytest.raises(ValueError, match="code lengths differ"):
        hamming_distances(np.zeros((1, 2), np.uint8), np.zeros((1, 3), np.uint8))
