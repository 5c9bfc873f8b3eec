import numpy as np
import pytest

from semhash.codes import from_hex, hamming_distances, n_bytes, pack_bits, to_hex, unpack_bits


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
