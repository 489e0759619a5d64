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
import itertools
import mmap
import os
import tempfile
from array import array
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
_GREY = _SIDE * _SIDE
_ROW = _GREY + 32  # a photo in FingerprintStore's file: its grey picture, then its SHA-256
_BANDS = 3  # of the hash, for the search of close hashes (_close_hashes)
_PAIRS_AT_ONCE = 1 << 16  # candidate pairs expanded at once: a few MB of index arrays
_QUERIES = 8192  # photos whose close pairs are looked up together (a batch of pairs)
# Close pairs confirmed at once: a batch is cut here too, so that memory stays the same however
# densely the photos' hashes cluster (docs/BENCHMARKS.md, rounds 5 and 6 of issue 19: half
# this costs the look-alikes' pair phase a fifth more CPU, each group of pairs being smaller).
_BATCH_PAIRS = 1 << 16
_BLOCK = 1024  # photos whose grey pictures are read back and centred together
_GAP = 64  # indices closer than this are read back in one read (the rows between included)
_CORRELATE_AT_ONCE = 128  # pairs correlated at once: 2 × 512 KB of float32 rows
_NORM_ROWS = 64  # rows whose norms are taken at once (a 256 KB temporary)


@dataclass(frozen=True)
class Fingerprint:
    sha256: bytes  # the 32-byte digest of the file's bytes: equal means an exact copy
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
    return None, Fingerprint(hashlib.sha256(data).digest(), phash, grey.tobytes())


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
    """Every pair of photos that are copies of one picture, in the order of `paths` (each
    photo's fingerprints in `prints`): see FingerprintStore.pairs."""
    with FingerprintStore() as store:
        for fingerprint in prints:
            store.add(fingerprint)
        return store.pairs(paths, near_bits, min_correlation)


class FingerprintStore:
    """The fingerprints of a scan's photos, added one by one as the decodes finish, kept so
    that memory does not grow by a kilobyte a photo: in memory only each pHash (8 bytes a
    photo); each grey picture and SHA-256 go to an unnamed temporary file (1,056 bytes a
    photo on disk), read back for the search of exact copies and for the photos of a
    candidate pair."""

    def __init__(self):
        self._hashes = array("Q")
        self._file = tempfile.TemporaryFile(prefix="transfer-lab-fingerprints-")

    def __len__(self) -> int:
        return len(self._hashes)

    def __enter__(self) -> FingerprintStore:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def add(self, fingerprint: Fingerprint) -> None:
        self._hashes.append(fingerprint.phash)
        self._file.write(fingerprint.grey + fingerprint.sha256)

    def pairs(self, paths: list[str], near_bits: int = NEAR_BITS,
              min_correlation: float = MIN_CORRELATION) -> list[DuplicatePair]:
        """Every pair of photos that are copies of one picture, `paths[i]` being the i-th
        photo added, sorted by the first photo's place, then the second's.

        Exact copies have equal SHA-256s. Near copies are the pairs whose hashes differ in at
        most `near_bits` bits (found by multi-index hashing, `_close_hashes`, instead of
        comparing every hash with every other) and whose grey pictures correlate at
        `min_correlation` or more; exact copies are not counted again as near ones.
        """
        if len(paths) != len(self):
            raise ValueError(f"{len(paths)} paths for {len(self)} fingerprints")
        exact = self._exact_pairs()
        found = [(i, j, "exact", 0) for i, j in exact]
        exact_keys = np.array(sorted(i * len(self) + j for i, j in exact), dtype=np.int64)
        hashes = np.frombuffer(self._hashes, dtype=np.uint64)
        scratch = _scratch()
        for first, second in _close_hashes(hashes, near_bits):
            if len(exact_keys):  # the exact copies found already are not near ones too
                fresh = ~np.isin(first.astype(np.int64) * len(self) + second, exact_keys)
                first, second = first[fresh], second[fresh]
            similar = self._correlations(first, second, scratch) >= min_correlation
            first, second = first[similar], second[similar]
            distances = np.bitwise_count(hashes[first] ^ hashes[second])
            found += zip(first.tolist(), second.tolist(), ["near"] * len(first),
                         distances.tolist())
        found.sort(key=lambda pair: pair[:2])
        return [DuplicatePair(paths[i], paths[j], kind, distance)
                for i, j, kind, distance in found]

    def _exact_pairs(self) -> list[tuple[int, int]]:
        """(i, j), i < j, of the photos with equal SHA-256s: grouped by the digests' first 8
        bytes, then confirmed on the full digests read back for those photos only."""
        heads = self._digest_heads()
        order = np.argsort(heads, kind="stable")
        same = heads[order[1:]] == heads[order[:-1]]
        shared = np.zeros(len(heads), dtype=bool)
        shared[1:] |= same
        shared[:-1] |= same
        groups: dict[bytes, list[int]] = defaultdict(list)
        for index in np.sort(order[shared]).tolist():
            groups[self._rows(index, 1)[0, _GREY:].tobytes()].append(index)
        return [(a, b) for members in groups.values()
                for n, a in enumerate(members) for b in members[n + 1:]]

    def _digest_heads(self) -> np.ndarray:
        """Each photo's SHA-256's first 8 bytes (as little-endian uint64s), read back from the
        file a block of rows at a time: held only while exact copies are searched, not
        during the rest of the search (8 bytes a photo)."""
        heads = np.empty(len(self), dtype=np.uint64)
        for first in range(0, len(self), _BLOCK):
            rows = self._rows(first, min(_BLOCK, len(self) - first))
            heads[first:first + len(rows)] = rows[:, _GREY:_GREY + 8].copy().view("<u8")[:, 0]
        return heads

    def _correlations(self, first: np.ndarray, second: np.ndarray,
                      scratch: tuple[np.ndarray, ...]) -> np.ndarray:
        """The grey pictures' correlation for each pair (first[k], second[k]), the pairs
        taken by blocks of _BLOCK photos of `first`, then of `second`: each block's pictures
        are read and centred once (`_close_hashes`' batches hold a few blocks of `first`).
        Memory holds two blocks and the rows of _CORRELATE_AT_ONCE pairs, in the search's
        `scratch` buffers, filled again for each block (no fresh 4 MB array per block for the
        heap to keep), whatever the number of photos. The same arithmetic as `_correlations`
        (row by row), so the same values to the bit."""
        result = np.empty(len(first), dtype=np.float32)
        if not len(first):
            return result
        a_block, b_block, a, b = scratch
        order = np.lexsort((second, first // _BLOCK)).astype(np.int32)  # held: half the size
        for part in _runs(first[order] // _BLOCK, order):
            a_at = np.unique(first[part])
            a_rows = self._centred_block(a_at, a_block)
            for group in _runs(second[part] // _BLOCK, part):
                b_at = np.unique(second[group])
                b_rows = self._centred_block(b_at, b_block)
                for start in range(0, len(group), _CORRELATE_AT_ONCE):
                    pairs = group[start:start + _CORRELATE_AT_ONCE]
                    n = len(pairs)  # mode="clip": into `out` directly (the indices are valid)
                    np.take(a_rows, np.searchsorted(a_at, first[pairs]), 0, a[:n], "clip")
                    np.take(b_rows, np.searchsorted(b_at, second[pairs]), 0, b[:n], "clip")
                    result[pairs] = np.einsum("ij,ij->i", a[:n], b[:n])
        return result

    def _centred_block(self, indices: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The centred grey pictures of sorted, distinct `indices` (at most len(out)), in the
        first rows of `out`: one read per run of indices less than _GAP apart."""
        rows = out[:len(indices)]
        cuts = np.flatnonzero(np.diff(indices) >= _GAP) + 1
        for run in np.split(np.arange(len(indices)), cuts):
            first = int(indices[run[0]])
            span = self._rows(first, int(indices[run[-1]]) - first + 1)
            rows[run[0]:run[-1] + 1] = span[indices[run] - first, :_GREY]  # as astype(float32)
        _centre(rows)
        return rows

    def _rows(self, first: int, count: int) -> np.ndarray:
        self._file.flush()
        rows = np.empty((count, _ROW), dtype=np.uint8)
        got = os.preadv(self._file.fileno(), [rows], first * _ROW)
        if got != rows.nbytes:
            raise OSError(f"the fingerprints' temporary file ended early ({got} bytes)")
        return rows


def _scratch() -> tuple[np.ndarray, ...]:
    """FingerprintStore._correlations' buffers, made once a search: two blocks' centred grey
    pictures and the rows of the pairs correlated at once, filled again for each block (no
    fresh 4 MB array per block for the heap to keep: docs/BENCHMARKS.md, round 6 of issue
    19). A page costs memory only once a block has filled it (`_small_pages`)."""
    return tuple(_small_pages((rows, _GREY)) for rows in
                 (_BLOCK, _BLOCK, _CORRELATE_AT_ONCE, _CORRELATE_AT_ONCE))


def _small_pages(shape: tuple[int, int]) -> np.ndarray:
    """An empty float32 array in an anonymous memory map of its own, kept out of transparent
    huge pages where the system can say so: numpy asks for huge pages for arrays of 4 MB and
    more, and then the first row a block writes past a 2 MB boundary makes 2 MB resident (a
    block of 1,024 pictures is often filled only to a few hundred rows)."""
    buffer = mmap.mmap(-1, shape[0] * shape[1] * 4)
    if hasattr(buffer, "madvise") and hasattr(mmap, "MADV_NOHUGEPAGE"):
        buffer.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buffer, dtype=np.float32).reshape(shape)


def _runs(values: np.ndarray, items: np.ndarray) -> list[np.ndarray]:
    """`items` cut where the (sorted) `values` change."""
    return np.split(items, np.flatnonzero(values[1:] != values[:-1]) + 1)


def _close_hashes(hashes: np.ndarray, near_bits: int):
    """(first, second) index arrays of every pair i < j whose hashes differ in at most
    `near_bits` bits, each pair once, in batches: per band, per _QUERIES photos i.

    Multi-index hashing (Norouzi, Punjani and Fleet, CVPR 2012): the 64 bits are dealt into
    _BANDS bands; two hashes within `near_bits` bits differ in at most `near_bits // _BANDS`
    bits of at least one band (pigeonhole). Per band, each photo looks up the photos whose
    band value is within that radius of its own (sorted by the band's value, with a table of
    where each value starts); a pair is kept in the first band where it is found, and only if
    the whole hashes are close enough. Bit b goes to band b % 3: pHash's low frequencies,
    whose bits vary together, then spread over the bands (4.5× fewer candidate pairs than
    contiguous bands on the benchmark's photos). The work is the lookups (linear in the
    photos) plus the candidate pairs: few for distinct photos, many for look-alikes whose
    hashes cluster (docs/BENCHMARKS.md). A batch holds the close pairs of at most _QUERIES
    photos and about _BATCH_PAIRS pairs, so memory grows neither with the photos' number nor
    with their look-alikes.
    """
    radius = near_bits // _BANDS
    if radius > 3:
        raise ValueError(f"near_bits {near_bits}: the band search takes at most {4 * _BANDS - 1}")
    bands = [list(range(band, 64, _BANDS)) for band in range(_BANDS)]
    masks = [np.uint64(sum(1 << bit for bit in bits)) for bits in bands]
    flips = {width: _flips(width, radius) for width in {len(bits) for bits in bands}}
    for number, bits in enumerate(bands):
        order = starts = None  # the last band's tables go before this band's are made
        key = _band_key(hashes, bits)
        order = np.argsort(key, kind="stable").astype(np.int32)
        key = key[order]  # sorted, for the table; then let go (each block's keys are made again)
        starts = _bucket_starts(key, len(bits))
        del key
        for block in range(0, len(hashes), _QUERIES):
            found_first, found_second, held = [], [], 0
            block_key = _band_key(hashes[block:block + _QUERIES], bits)
            for flip in flips[len(bits)]:
                wanted = block_key ^ flip
                lower = starts[wanted]
                counts = starts[wanted + 1] - lower
                for first, second in _expand(lower, counts, order):
                    first += block
                    differ = hashes[first] ^ hashes[second]
                    keep = (second > first) & (np.bitwise_count(differ) <= near_bits)
                    for mask in masks[:number]:  # found in an earlier band already
                        keep &= np.bitwise_count(differ & mask) > radius
                    found_first.append(first[keep].astype(np.int32))
                    found_second.append(second[keep].astype(np.int32))
                    held += len(found_first[-1])
                    del first, second, differ, keep  # not held while a batch is confirmed
                    if held >= _BATCH_PAIRS:
                        yield _emptied(found_first), _emptied(found_second)
                        held = 0
            if held:
                yield _emptied(found_first), _emptied(found_second)


def _emptied(parts: list[np.ndarray]) -> np.ndarray:
    """The parts joined, the list emptied: a paused generator holds no copy of a batch."""
    joined = np.concatenate(parts)
    parts.clear()
    return joined


def _band_key(hashes: np.ndarray, bits: list[int]) -> np.ndarray:
    """Each hash's bits `bits` as one number (int32), made a slice of hashes at a time so
    that the uint64 temporaries stay small."""
    key = np.zeros(len(hashes), dtype=np.int32)
    for start in range(0, len(hashes), _QUERIES):
        part = hashes[start:start + _QUERIES]
        for place, bit in enumerate(bits):
            key[start:start + _QUERIES] |= ((part >> np.uint64(bit)) & np.uint64(1)
                                            ).astype(np.int32) << place
    return key


def _bucket_starts(sorted_keys: np.ndarray, width: int) -> np.ndarray:
    """starts[v]: where value v begins in `sorted_keys` (2**width + 1 entries, int32: 16 MB
    for 22 bits whatever the photos), built in slices to keep the looked-up values small."""
    starts = np.empty((1 << width) + 1, dtype=np.int32)
    step = 1 << 18
    for value in range(0, len(starts), step):
        wanted = np.arange(value, min(value + step, len(starts)), dtype=np.int32)
        starts[value:value + step] = np.searchsorted(sorted_keys, wanted)
    return starts


def _flips(width: int, radius: int) -> list[int]:
    """Every value of `width` bits with at most `radius` bits set (XOR masks)."""
    return [sum(1 << bit for bit in chosen) for count in range(radius + 1)
            for chosen in itertools.combinations(range(width), count)]


def _expand(lower: np.ndarray, counts: np.ndarray, order: np.ndarray):
    """(first, second) arrays of photo i against each photo in order[lower[i]:lower[i] +
    counts[i]], about _PAIRS_AT_ONCE pairs at a time (at least one photo's whole bucket)."""
    photos = np.flatnonzero(counts)
    if not len(photos):
        return
    ends = np.cumsum(counts[photos], dtype=np.int64)
    cuts = np.searchsorted(ends, np.arange(_PAIRS_AT_ONCE, ends[-1], _PAIRS_AT_ONCE))
    for chunk in np.split(photos, np.unique(cuts[(cuts > 0) & (cuts < len(photos))])):
        yield _pairs_of(chunk, lower, counts, order)  # no array of it held while paused


def _pairs_of(chunk: np.ndarray, lower: np.ndarray, counts: np.ndarray,
              order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, second): each photo i of `chunk` against each photo of its bucket."""
    sizes = counts[chunk].astype(np.int64)
    first = np.repeat(chunk, sizes)
    offsets = np.arange(len(first)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return first, order[np.repeat(lower[chunk], sizes) + offsets].astype(np.int64)


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `a` with the same row of `b`; 0 for a flat picture
    (one grey level has no pattern to compare: only an exact copy of it is found)."""
    a, b = _centred(a), _centred(b)
    return np.einsum("ij,ij->i", a, b)


def _centred(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    _centre(rows)
    return rows


def _centre(rows: np.ndarray) -> None:
    """Each float32 row minus its mean, over its norm (0 for a flat row), in place. The norms
    a few rows at a time: np.linalg.norm squares its whole input into a temporary first (4 MB
    for a block), and a row's norm is the same to the bit however many rows go with it."""
    rows -= rows.mean(axis=1, keepdims=True)
    norms = np.empty((len(rows), 1), dtype=np.float32)
    for start in range(0, len(rows), _NORM_ROWS):
        norms[start:start + _NORM_ROWS] = np.linalg.norm(rows[start:start + _NORM_ROWS],
                                                         axis=1, keepdims=True)
    flat = norms[:, 0] <= 1e-3
    np.divide(rows, norms, out=rows, where=~flat[:, None])  # in place: half the memory
    rows[flat] = 0


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
