"""The standard-library docstring corpus (landscape.data.text): offline, pinned, split, keyed.

The corpus is built once per module (a few seconds), with the network blocked and the cache
cleared first, and every other test reuses that build. Integer data only: the module runs in
one dtype pass.
"""

from __future__ import annotations

import hashlib
import socket

import jax
import numpy as np
import pytest

from landscape.data import text

pytestmark = pytest.mark.single_dtype


def _no_network(*args, **kwargs):
    raise AssertionError("the text corpus tried to open a network connection")


@pytest.fixture(scope="module")
def corpus():
    """The corpus built from scratch while every socket constructor raises."""
    text.stdlib_corpus.cache_clear()
    text.corpus_fingerprint.cache_clear()
    text._corpus_ids.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "socket", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        mp.setattr(socket, "getaddrinfo", _no_network)
        built = text.stdlib_corpus()
        fingerprint = text.corpus_fingerprint()
        data = text.stdlib_text(jax.random.key(0), seq_len=32, num_train=64, num_valid=32)
    return built, fingerprint, data


def test_built_offline_and_fingerprint_is_the_hash_of_the_text(corpus):
    built, fp, data = corpus
    assert fp["sha256"] == hashlib.sha256(built.encode("utf-8")).hexdigest()
    assert fp["num_chars"] == len(built) > 500_000
    assert fp["python_version"].count(".") == 2
    assert data.fingerprint["sha256"] == fp["sha256"]
    with pytest.raises(AssertionError, match="network"):  # the guard itself works
        _no_network()


def test_same_key_same_windows_other_key_other_windows(corpus):
    _, _, data = corpus
    again = text.stdlib_text(jax.random.key(0), seq_len=32, num_train=64, num_valid=32)
    other = text.stdlib_text(jax.random.key(1), seq_len=32, num_train=64, num_valid=32)
    for part in ("train", "valid"):
        a, b, c = (np.asarray(getattr(d, part)["tokens"]) for d in (data, again, other))
        assert a.dtype == np.int32 and a.shape == ((64 if part == "train" else 32), 33)
        np.testing.assert_array_equal(a, b)
        assert (a != c).any(axis=1).mean() > 0.9


def _offsets(haystack: str, row) -> list[int]:
    """Every start offset at which the decoded ``row`` occurs in ``haystack`` (ids index
    characters one to one, so text offsets are id offsets)."""
    needle, found = text.decode(np.asarray(row)), []
    at = haystack.find(needle)
    while at >= 0:
        found.append(at)
        at = haystack.find(needle, at + 1)
    return found


def test_windows_are_substrings_of_their_own_region(corpus):
    built, _, data = corpus
    split = data.fingerprint["split_index"]
    assert split == int(np.floor(0.9 * len(built)))
    for part, lo, hi in (("train", 0, split), ("valid", split, len(built))):
        rows = np.asarray(getattr(data, part)["tokens"])
        rows = rows[(rows != text.UNKNOWN_ID).all(axis=1)]
        assert len(rows) >= 16
        for row in rows:
            starts = np.array(_offsets(built, row))
            assert ((starts >= lo) & (starts + len(row) <= hi)).any(), part


def test_windows_never_cross_the_split(corpus):
    """With a tiny validation region every validation window is squeezed against its bounds."""
    built, _, _ = corpus
    frac = 40 / len(built)  # the validation region holds 40-41 characters; windows of 33
    d = text.stdlib_text(jax.random.key(3), seq_len=32, num_train=2, num_valid=50,
                         valid_fraction=frac)
    region = built[d.fingerprint["split_index"]:]
    offsets = {o for row in np.asarray(d.valid["tokens"]) for o in _offsets(region, row)}
    assert offsets and offsets <= set(range(len(region) - 32))
    assert len(offsets) > 1  # the offsets are drawn, not fixed
    with pytest.raises(ValueError, match="seq_len"):
        text.stdlib_text(jax.random.key(3), seq_len=64, num_train=2, num_valid=2,
                         valid_fraction=frac)


def test_round_trip_and_fixed_vocabulary():
    sample = "def f(x):\n    return {'a': x ~ 1}\t"
    ids = text.encode(sample)
    assert text.VOCAB_SIZE == 97 and ids.max() < text.VOCAB_SIZE
    assert text.decode(ids[:-1]) == sample[:-1]
    assert ids[-1] == text.UNKNOWN_ID and text.decode(text.encode("é")) == "\ufffd"
    assert text.encode("\n").tolist() == [0] and text.encode(" ~").tolist() == [1, 95]
    with pytest.raises(ValueError, match="ids"):
        text.decode(np.array([0, 97]))


def test_wrong_pin_names_the_argument_and_both_hashes(corpus):
    _, fp, _ = corpus
    wrong = "0" * 64
    with pytest.raises(ValueError, match="expected_sha256") as err:
        text.stdlib_text(jax.random.key(0), seq_len=8, num_train=1, num_valid=1,
                         expected_sha256=wrong)
    assert wrong in str(err.value) and fp["sha256"] in str(err.value)
    assert fp["python_version"] in str(err.value)
    ok = text.stdlib_text(jax.random.key(0), seq_len=8, num_train=1, num_valid=1,
                          expected_sha256=fp["sha256"])
    assert ok.train["tokens"].shape == (1, 9)


def test_bad_sizes_are_named():
    for kwargs, name in (({"seq_len": 0}, "seq_len"), ({"num_train": 0}, "num_train"),
                         ({"valid_fraction": 1.0}, "valid_fraction")):
        args = {"seq_len": 8, "num_train": 1, "num_valid": 1, **kwargs}
        with pytest.raises(ValueError, match=name):
            text.stdlib_text(jax.random.key(0), **args)


def test_exclusions_and_source_order(tmp_path):
    """Test suites and unparsable files are skipped; docstrings come in source order."""
    (tmp_path / "a.py").write_text(
        '"""Module a."""\nif True:\n    class C:\n        """Class C."""\n'
        '        def m(self):\n            """Method m."""\n'
        'try:\n    pass\nexcept E:\n    def g():\n        """In handler."""\n'
        'def f():\n    """Function f."""\n    async def h():\n        """Nested h."""\n'
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "b.py").write_text('"""Skipped test."""\n')
    (tmp_path / "bad.py").write_text('"""Broken."""\ndef (:\n')
    (tmp_path / "latin.py").write_bytes(b'"""caf\xe9"""\n')
    got = text.stdlib_corpus(str(tmp_path))
    want = ["Module a.", "Class C.", "Method m.", "In handler.", "Function f.", "Nested h."]
    assert got == text.SEPARATOR.join(want)
