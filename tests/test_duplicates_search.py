"""The search for duplicate pairs (duplicates.FingerprintStore, multi-index hashing) finds
exactly the pairs of the definition checked pair by pair: exact copies, near copies (resized,
re-compressed) and no distinct look-alikes, whatever the order and the block sizes."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import COLOURS, colour_image
from test_duplicates import resized, scene
from transfer_core import duplicates
from transfer_core.duplicates import (MIN_CORRELATION, NEAR_BITS, DuplicatePair,
                                      check_and_fingerprint, find_pairs)


def reference_pairs(paths, prints, near_bits=NEAR_BITS, min_correlation=MIN_CORRELATION):
    """The definition, pair by pair: equal SHA-256s are an exact copy; otherwise hashes within
    `near_bits` bits and grey pictures correlating at `min_correlation` or more are a near one."""
    found = []
    for i, a in enumerate(prints):
        for j in range(i + 1, len(prints)):
            b = prints[j]
            distance = (a.phash ^ b.phash).bit_count()
            if a.sha256 == b.sha256:
                found.append(DuplicatePair(paths[i], paths[j], "exact", 0))
            elif distance <= near_bits and _correlation(a, b) >= min_correlation:
                found.append(DuplicatePair(paths[i], paths[j], "near", distance))
    return found


def _correlation(a, b) -> float:
    rows = [np.frombuffer(p.grey, np.uint8)[None] for p in (a, b)]
    return float(duplicates._correlations(*rows)[0])


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[list[str], list]:
    """Distinct scenes, their exact, resized and re-compressed copies, distinct colour patches
    of one layout (look-alikes whose hashes coincide), a re-compressed patch, and flat
    pictures (nothing to correlate: only their exact copy counts)."""
    root = tmp_path_factory.mktemp("search")
    for i in range(14):
        scene(500 + i).save(root / f"scene_{i}.jpg", quality=92)
    for i in range(10):
        colour_image(COLOURS["green"], 128, seed=i).save(root / f"patch_{i}.png")
    shutil.copy(root / "scene_0.jpg", root / "copy_exact.jpg")
    shutil.copy(root / "scene_0.jpg", root / "copy_exact_again.jpg")
    resized(Image.open(root / "scene_1.jpg"), 0.5).save(root / "copy_half.jpg", quality=90)
    resized(Image.open(root / "scene_2.jpg"), 1.6).save(root / "copy_big.png")
    Image.open(root / "scene_3.jpg").save(root / "copy_q30.jpg", quality=30)
    Image.open(root / "patch_4.png").save(root / "copy_patch.jpg", quality=60)
    Image.new("RGB", (64, 64), (90, 90, 90)).save(root / "flat.png")
    shutil.copy(root / "flat.png", root / "flat_copy.png")
    Image.new("RGB", (80, 80), (90, 90, 90)).save(root / "flat_other.png")
    paths = sorted(str(p) for p in root.iterdir())
    return paths, [check_and_fingerprint(p)[1] for p in paths]


def _kinds(pairs) -> dict[str, int]:
    return {kind: sum(p.kind == kind for p in pairs) for kind in ("exact", "near")}


def test_the_pairs_are_those_of_the_definition(photos):
    paths, prints = photos
    expected = reference_pairs(paths, prints)
    assert find_pairs(paths, prints) == expected
    # The set has what it is meant to: 3 exact pairs among the scene's copies and 1 of the flat
    # picture, 4 near copies, and look-alike patches whose hashes alone would pair them.
    assert _kinds(expected) == {"exact": 4, "near": 4}
    patches = [p for path, p in zip(paths, prints) if "patch_" in path]
    assert any((a.phash ^ b.phash).bit_count() <= NEAR_BITS
               for n, a in enumerate(patches) for b in patches[n + 1:])


def test_the_pairs_do_not_depend_on_order_or_block_sizes(photos, monkeypatch):
    """Tiny blocks: candidate pairs expanded a few at a time, grey pictures read back in many
    small blocks and runs, correlated two pairs at a time."""
    paths, prints = photos
    order = list(range(len(paths)))
    random.Random(3).shuffle(order)
    paths, prints = [paths[i] for i in order], [prints[i] for i in order]
    for name, value in (("_PAIRS_AT_ONCE", 3), ("_BLOCK", 4), ("_QUERIES", 6), ("_GAP", 2),
                        ("_CORRELATE_AT_ONCE", 2), ("_BATCH_PAIRS", 2)):
        monkeypatch.setattr(duplicates, name, value)
    assert find_pairs(paths, prints) == reference_pairs(paths, prints)
    loose = find_pairs(paths, prints, near_bits=11, min_correlation=0.5)
    assert loose == reference_pairs(paths, prints, 11, 0.5)
    assert _kinds(loose)["near"] > 4  # the looser limits do let more pairs through


@pytest.mark.parametrize("near_bits", [0, 5, 8, 11])
def test_close_hashes_are_every_pair_within_the_limit(near_bits):
    """Hashes in clusters (look-alikes: up to 14 bits flipped from one of 20 centres) and at
    random: the band search finds each close pair exactly once, as comparing all pairs does."""
    rng = np.random.default_rng(near_bits)
    centres = rng.integers(0, 2**64, 20, dtype=np.uint64)
    hashes = centres[rng.integers(0, 20, 1500)]
    flips = rng.integers(0, 15, len(hashes))
    for round_ in range(14):
        some = flips > round_
        hashes[some] ^= np.uint64(1) << rng.integers(0, 64, some.sum()).astype(np.uint64)
    hashes = np.concatenate([hashes, rng.integers(0, 2**64, 500, dtype=np.uint64)])
    found = sorted(pair for first, second in duplicates._close_hashes(hashes, near_bits)
                   for pair in zip(first.tolist(), second.tolist()))
    close = np.bitwise_count(hashes[:, None] ^ hashes[None, :]) <= near_bits
    expected = sorted(zip(*(a.tolist() for a in np.nonzero(np.triu(close, 1)))))
    assert found == expected and len(expected) > 100


def test_a_batch_of_close_pairs_is_cut_at_a_fixed_size(monkeypatch):
    """Look-alikes whose hashes cluster make many close pairs: they come in batches of a
    bounded size (the pair phase's memory), the same pairs as in one batch per photo block."""
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64, 4, dtype=np.uint64)[rng.integers(0, 4, 600)]
    hashes ^= np.uint64(1) << rng.integers(0, 64, len(hashes)).astype(np.uint64)

    def batches():
        return [sorted(zip(first.tolist(), second.tolist()))
                for first, second in duplicates._close_hashes(hashes, NEAR_BITS)]

    whole = batches()
    monkeypatch.setattr(duplicates, "_PAIRS_AT_ONCE", 16)
    monkeypatch.setattr(duplicates, "_BATCH_PAIRS", 40)
    cut = batches()
    assert len(cut) > 10 * len(whole) and max(map(len, cut)) < 40 + 600
    assert sorted(sum(cut, [])) == sorted(sum(whole, [])) and len(sum(whole, [])) > 10_000
