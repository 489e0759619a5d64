"""Duplicate photos in a dataset: exact copies (the same bytes) and near copies (the same picture
resized, re-compressed or re-saved), and the leaks they make when they land in different splits.

Each photo gets fingerprints while the scan decodes it anyway: a SHA-256 of its file bytes, a
64-bit perceptual hash (pHash: the signs of the lowest 8×8 frequencies of the 32×32 grey picture,
as in Zauner 2010 and the `imagehash` package) and that 32×32 grey picture itself. Resizing and
re-compression change the high frequencies and leave the hash nearly untouched, so photos whose
hashes differ in at most NEAR_BITS of 64 bits are candidates; a candidate pair is a copy when
the two grey pictures also correlate at MIN_CORRELATION or more. The second test is what keeps
distinct pictures of one plain layout apart (a coloured patch with a square in a similar place:
one hash, different pixels). Figures and the choice of both limits: docs/BENCHMARKS.md,
`bench/duplicates.py`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import ImageError
from .images import _to_rgb, decode_checked

# Measured on the 8,000 shared photos (docs/BENCHMARKS.md): copies resized to a quarter or
# re-saved at JPEG quality 10 stayed within 6 bits and correlated at 0.977 or more; the closest
# distinct photos were 8 bits apart and correlated at 0.84 at most. Distinct synthetic patches
# of one layout share a hash and correlate up to 0.95 (the tests' colour patches): hence both.
NEAR_BITS = 8
MIN_CORRELATION = 0.97
_SIDE, _LOW = 32, 8  # pHash: the grey picture's size, and the low frequencies kept per axis


@dataclass(frozen=True)
class Fingerprint:
    sha256: str  # of the file's bytes: equal means an exact copy
    phash: int  # 64 bits: a small Hamming distance means perhaps the same picture
    grey: bytes  # the 32×32 grey picture the hash is made from, to confirm a candidate pair


@dataclass(frozen=True)
class DuplicatePair:
    """Two photos that are one picture; `first` comes before `second` in the scan's order."""

    first: str
    second: str
    kind: str  # "exact" (same bytes) or "near" (same picture, other bytes)
    distance: int  # Hamming distance of the perceptual hashes (bits of 64)

    def to_dict(self) -> dict:
        return asdict(self)


def check_and_fingerprint(path: str | Path) -> tuple[str | None, Fingerprint | None]:
    """What `images.check_image` does (None or the reason the file is skipped), plus the
    photo's fingerprints from the same read and the same decode."""
    name = Path(path).name
    try:
        data = Path(path).read_bytes()
        image = decode_checked(data, name)
    except ImageError as exc:
        return str(exc), None
    except OSError as exc:  # unreadable file (permissions, vanished)
        return f"{name} cannot be read ({exc.strerror or exc})", None
    phash, grey = perceptual_hash(image)
    return None, Fingerprint(hashlib.sha256(data).hexdigest(), phash, grey.tobytes())


def _dct_rows(size: int, keep: int) -> np.ndarray:
    """The first `keep` rows of the (unscaled) DCT-II matrix of length `size`: the hash compares
    coefficients with their median, which no common scale factor changes."""
    k, n = np.arange(keep)[:, None], np.arange(size)[None, :]
    return np.cos(np.pi * k * (2 * n + 1) / (2 * size))


_DCT = _dct_rows(_SIDE, _LOW)
_BIT_VALUES = 1 << np.arange(_LOW * _LOW, dtype=np.uint64)[::-1]


def perceptual_hash(image: Image.Image) -> tuple[int, np.ndarray]:
    """The 64-bit pHash of a decoded picture (any of Pillow's modes), as an int, and the 32×32
    grey picture (uint8) it was made from."""
    if image.mode not in ("RGB", "L"):
        image = _to_rgb(image)
    # Grey first, then reducing_gap: shrink by whole factors before Lanczos. 0.09 ms for a
    # 200×200 photo instead of 0.24 ms, and a 12 Mpx photo in a few ms.
    small = image.convert("L").resize((_SIDE, _SIDE), Image.LANCZOS, reducing_gap=2.0)
    grey = np.asarray(small, dtype=np.uint8)
    low = _DCT @ grey.astype(np.float64) @ _DCT.T
    bits = (low > np.median(low)).ravel()
    return int(np.sum(_BIT_VALUES[bits], dtype=np.uint64)), grey


def find_pairs(paths: list[str], prints: list[Fingerprint], near_bits: int = NEAR_BITS,
               min_correlation: float = MIN_CORRELATION) -> list[DuplicatePair]:
    """Every pair of photos that are copies of one picture, in the order of `paths`.

    Exact copies by equal SHA-256; near copies by comparing every hash with every later one
    (in blocks, so memory stays small: 8,000 photos are 32 M comparisons, about 0.3 s), each
    candidate confirmed by the correlation of the two grey pictures.
    """
    pairs = _exact_pairs(paths, prints)
    if len(prints) < 2:
        return pairs
    exact = {(p.first, p.second) for p in pairs}
    hashes = np.array([p.phash for p in prints], dtype=np.uint64)
    greys = np.frombuffer(b"".join(p.grey for p in prints), np.uint8).reshape(len(prints), -1)
    block = 512
    for start in range(0, len(hashes), block):
        distances = np.bitwise_count(hashes[start:start + block, None] ^ hashes[None, :])
        rows, later = np.nonzero(distances <= near_bits)
        keep = later > rows + start
        rows, later = rows[keep], later[keep]
        similar = _correlations(greys[rows + start], greys[later]) >= min_correlation
        for i, j in zip(rows[similar], later[similar]):
            first, second = paths[start + int(i)], paths[int(j)]
            if (first, second) not in exact:
                pairs.append(DuplicatePair(first, second, "near", int(distances[i, j])))
    order = {path: i for i, path in enumerate(paths)}
    return sorted(pairs, key=lambda p: (order[p.first], order[p.second]))


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `a` with the same row of `b`; 0 for a flat picture
    (one grey level has no pattern to compare: only an exact copy of it is found)."""
    a, b = _centred(a), _centred(b)
    return np.einsum("ij,ij->i", a, b)


def _centred(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 1e-3)


def _exact_pairs(paths: list[str], prints: list[Fingerprint]) -> list[DuplicatePair]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, fingerprint in enumerate(prints):
        groups[fingerprint.sha256].append(i)
    return [DuplicatePair(paths[a], paths[b], "exact", 0)
            for members in groups.values() if len(members) > 1
            for n, a in enumerate(members) for b in members[n + 1:]]


def locate(pairs: list[DuplicatePair], rows: list[tuple[str, str, str]]) -> list[dict]:
    """Each pair with where its photos sit: `rows` are a split's (path, label, split); a photo
    left out of every split sits in None. A leak is a pair across two splits."""
    where = {path: (label, split) for path, label, split in rows}
    located = []
    for pair in pairs:
        first_label, first_split = where.get(pair.first, (None, None))
        second_label, second_split = where.get(pair.second, (None, None))
        leak = None not in (first_split, second_split) and first_split != second_split
        located.append({**pair.to_dict(), "first_split": first_split, "first_label": first_label,
                        "second_split": second_split, "second_label": second_label,
                        "leak": leak})
    return located


def later_copies(pairs: list[DuplicatePair], rows: list[tuple[str, str, str]],
                 splits: tuple[str, ...]) -> dict[str, dict]:
    """The photos to drop so that no two copies of one picture stay in the split: of each
    pair, the later one (test after validation after train, then the split's order), so a
    training photo is kept and its copy leaves the evaluation. Returns {path: {"reason",
    "copy_of", "kind"}}. A photo is dropped only for a copy that is itself kept (in a chain
    a ≈ b ≈ c where a and c differ, b goes and c stays)."""
    position = {path: (splits.index(split), i) for i, (path, _, split) in enumerate(rows)}
    partners: dict[str, list[tuple[str, DuplicatePair]]] = defaultdict(list)
    for pair in pairs:
        if pair.first in position and pair.second in position:
            partners[pair.first].append((pair.second, pair))
            partners[pair.second].append((pair.first, pair))
    dropped: dict[str, dict] = {}
    for path in sorted(partners, key=position.get):
        earlier = [(other, pair) for other, pair in partners[path]
                   if position[other] < position[path] and other not in dropped]
        if earlier:
            other, pair = min(earlier, key=lambda item: position[item[0]])
            split = rows[position[other][1]][2]
            how = ("exact copy" if pair.kind == "exact"
                   else f"near copy ({pair.distance} of 64 hash bits differ)")
            dropped[path] = {"reason": f"{how} of {Path(other).name} ({split})",
                             "copy_of": other, "kind": pair.kind}
    return dropped


def summary(located: list[dict]) -> dict:
    """Counts for `scan`/`split --json` and the page: pairs by kind, and leaks across splits."""
    return {"exact": sum(p["kind"] == "exact" for p in located),
            "near": sum(p["kind"] == "near" for p in located),
            "leaks": sum(p["leak"] for p in located), "pairs": located}
