"""A dataset's files held compactly: a few bytes a photo in flat arrays instead of a Python
object per photo, so that scanning and splitting 100,000 photos takes no more memory than
8,000 (issue 19, docs/BENCHMARKS.md). Read as sequences of the old objects, built on access.
"""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

# Any str, lone surrogates too (names that are not UTF-8 on disk), round-trips through this.
_ENCODING = ("utf-8", "surrogatepass")
_DIGIT_RUNS = re.compile(r"(\d+)")
# Text bytes shifted up by one (UTF-8 never holds 0xF5 or above), so 1 ends a text part and 0
# is never in a key: numpy's fixed-width byte strings pad with zeros, and a key that is a
# prefix of another (fewer parts) must sort first, as a shorter list does.
_SHIFT_UP = bytes(range(1, 256)) + b"\xff"
_SORT_ROWS = 8192  # keys copied into the sort matrix at once


class StringTable:
    """Strings in one byte blob with their end offsets: about len(text) + 4 bytes a string
    (up to 4 GB of text)."""

    def __init__(self):
        self._blob = bytearray()
        self._ends = array("I")

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        index = range(len(self._ends))[index]  # negative indices, and IndexError
        start = self._ends[index - 1] if index else 0
        return self._blob[start:self._ends[index]].decode(*_ENCODING)

    def __iter__(self) -> Iterator[str]:
        return (self[index] for index in range(len(self)))

    def append(self, text: str) -> None:
        self._blob += text.encode(*_ENCODING)
        self._ends.append(len(self._blob))

    def take(self, indices: Iterable[int]) -> StringTable:
        """The strings at `indices`, in that order: copied by numpy into a blob of the exact
        size (no growing buffer left behind in the heap)."""
        at, taken = _positions(indices), StringTable()
        ends = np.frombuffer(self._ends, dtype=np.uint32)
        parts = [slice(first, first + _SORT_ROWS) for first in range(0, len(at), _SORT_ROWS)]
        taken._blob = bytearray(sum(int(self._spans(at[part])[1].sum()) for part in parts))
        source, target = np.frombuffer(self._blob, np.uint8), np.frombuffer(taken._blob, np.uint8)
        for part in parts:  # in slices: small index arrays
            starts, lengths = self._spans(at[part])
            begin = taken._ends[-1] if taken._ends else 0
            new_ends = begin + np.cumsum(lengths)
            where = np.repeat(starts - (new_ends - lengths), lengths)
            target[begin:int(new_ends[-1])] = source[where + np.arange(begin, int(new_ends[-1]))]
            taken._ends.frombytes(new_ends.astype(np.uint32).tobytes())
        del source, target, ends  # the blobs' buffers, so that they can grow again
        return taken

    def _spans(self, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the strings at `at` start in the blob, and their lengths (int64)."""
        ends = np.frombuffer(self._ends, dtype=np.uint32)
        starts = np.where(at > 0, ends[at - 1], 0).astype(np.int64)
        return starts, ends[at] - starts


def natural_key_bytes(text: str) -> bytes:
    """A byte string that sorts as `datasets.natural_key(text)` does: a text part as its
    lower-cased UTF-8 (shifted up by one) and a closing 1, a digit run as its number of digits
    (2 bytes, never 0) and its digits without leading zeros."""
    key = bytearray()
    for place, part in enumerate(_DIGIT_RUNS.split(text)):
        if place % 2:
            digits = str(int(part)).encode()
            key += bytes(((len(digits) >> 7) + 1, (len(digits) & 127) + 1)) + digits
        else:
            key += part.lower().encode(*_ENCODING).translate(_SHIFT_UP) + b"\x01"
    return bytes(key)


def natural_order(texts: Sequence[str]) -> np.ndarray:
    """The indices of `texts` in natural order (stable: equal keys keep their order), as
    `sorted(range(n), key=lambda i: natural_key(texts[i]))` but without a list of keys: the
    keys go into one zero-padded byte matrix (n × the longest key's bytes), sorted by numpy.
    The keys are made twice (the longest first), so that none is held."""
    count = len(texts)
    if count < 2:
        return np.arange(count)
    width = max(len(natural_key_bytes(text)) for text in texts)
    matrix = np.zeros((count, width), np.uint8)
    for first in range(0, count, _SORT_ROWS):
        keys = b"".join(natural_key_bytes(texts[index]).ljust(width, b"\0")
                        for index in range(first, min(first + _SORT_ROWS, count)))
        matrix[first:first + _SORT_ROWS] = np.frombuffer(keys, np.uint8).reshape(-1, width)
    return np.argsort(matrix.view(f"S{width}").ravel(), kind="stable")


def _folder_and_name(path: str) -> tuple[str, str]:
    """"/data/cats/cat.1.jpg" → ("/data/cats/", "cat.1.jpg"): the folder is shared."""
    cut = path.rfind(os.sep) + 1
    return path[:cut], path[cut:]


class FileTable(Sequence):
    """Files with a label and a split each: the folder as a number into a list of folders,
    the name in a StringTable, the label and the split as small numbers: 7 bytes a photo plus
    its name while there are at most 256 folders and labels (each number as narrow as it can
    be, `_fitting`). A sequence of `item(path, label, split)`, made on access.

    A table taken with `shared_names` (a manifest's rows from a scan's images) reads its
    names from the other table's StringTable by number (`_name_at`, 4 bytes a file)."""

    _name_at: array | None = None  # None: file k's name is self._names[k]

    def __init__(self, splits: Sequence[str | None] = (None,)):
        self.folders: list[str] = []
        self.labels: list[str] = []
        self.splits: list[str | None] = list(splits)
        self._folder_numbers: dict[str, int] = {}
        self._label_numbers: dict[str, int] = {}
        # 1 byte a file while there are at most 256 folders (labels), wider when more (_fitting)
        self._folder_of = array("B")
        self._names = StringTable()
        self._label_of = array("B")
        self._split_of = array("B")

    @classmethod
    def of(cls, items: Iterable, splits: Sequence[str | None] = (None,)) -> FileTable:
        """A table of the same items (any of ImageEntry, (path, label, split) or this class)."""
        if isinstance(items, cls):
            return items
        table = cls(splits)
        table.extend(items)
        return table

    @classmethod
    def of_names(cls, folder: str, names: StringTable, labels: Iterable[str],
                 split: str | None = None) -> FileTable:
        """The files `names` (taken over, not copied) in `folder` (ending with a separator),
        with one label each, all in `split`: a folder's listing made a table at once."""
        table = cls()
        table.folder_number(folder)
        table._names = names
        table._folder_of = array("B", bytes(len(names)))  # all in folder 0
        numbers = [table._number(table.labels, table._label_numbers, label) for label in labels]
        table._label_of = _fitting(table._label_of, max(numbers, default=0))
        table._label_of.fromlist(numbers)
        table._split_of = array("B", [table._split_number(split)]) * len(names)
        return table

    def extend(self, items: Iterable) -> None:
        for item in items:
            self.append(*self._fields(item))

    @staticmethod
    def _fields(item) -> tuple:
        return tuple(item)

    def __len__(self) -> int:
        return len(self._folder_of)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.take(range(len(self))[index])
        index = range(len(self))[index]
        return self._item(self.path(index), self.labels[self._label_of[index]],
                          self.splits[self._split_of[index]])

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} files)"

    @staticmethod
    def _item(path: str, label: str, split: str | None):
        return path, label, split

    def append(self, path: str, label: str, split: str | None = None) -> None:
        folder, name = _folder_and_name(path)
        self.append_in(self._number(self.folders, self._folder_numbers, folder), name,
                       label, split)

    def append_in(self, folder: int, name: str, label: str, split: str | None = None) -> None:
        """Add the file `name` in `self.folders[folder]` (a folder number from `folder_number`)."""
        self._own_names()
        self._folder_of = _fitting(self._folder_of, folder)
        self._folder_of.append(folder)
        self._names.append(name)
        label_number = self._number(self.labels, self._label_numbers, label)
        self._label_of = _fitting(self._label_of, label_number)
        self._label_of.append(label_number)
        self._split_of.append(self._split_number(split))

    def folder_number(self, folder: str) -> int:
        """The number of a folder (its path ending with a separator), added when new."""
        return self._number(self.folders, self._folder_numbers, folder)

    @staticmethod
    def _number(values: list, numbers: dict, value) -> int:
        number = numbers.get(value)
        if number is None:
            number = numbers[value] = len(values)
            values.append(value)
        return number

    def path(self, index: int) -> str:
        return self.folders[self._folder_of[index]] + self.name(index)

    def paths(self) -> Iterable[str]:
        return (self.path(index) for index in range(len(self)))

    def name(self, index: int) -> str:
        return self._names[index if self._name_at is None else self._name_at[index]]

    def _name_places(self, indices: np.ndarray) -> np.ndarray:
        """Where the names of the files at `indices` are in self._names."""
        if self._name_at is None:
            return indices
        return np.frombuffer(self._name_at, dtype=np.uint32)[indices].astype(np.int64)

    def _own_names(self) -> None:
        """A table that shares another's names gets its own before it grows."""
        if self._name_at is not None:
            self._names = self._names.take(self._name_places(np.arange(len(self))))
            self._name_at = None

    def folder_of(self, index: int) -> int:
        return self._folder_of[index]

    def present_labels(self) -> list[str]:
        """The labels at least one file has."""
        used = np.unique(_values(self._label_of))
        return [self.labels[number] for number in used.tolist()]

    def extend_table(self, other: FileTable) -> None:
        """Add every file of `other` after these, numbers translated into this table's."""
        if not len(other):
            return
        self._own_names()
        for field, values in (("_folder_of", [self.folder_number(f) for f in other.folders]),
                              ("_label_of", [self._number(self.labels, self._label_numbers, name)
                                             for name in other.labels]),
                              ("_split_of", [self._split_number(s) for s in other.splits])):
            mine = _fitting(getattr(self, field), max(values, default=0))
            numbers = np.array(values, dtype=_NUMPY[mine.typecode])
            mine.frombytes(byte_view(numbers[_values(getattr(other, field))]))
            setattr(self, field, mine)
        names = (other._names if other._name_at is None  # its own names: no copy needed
                 else other._names.take(other._name_places(np.arange(len(other)))))
        # the ends as bytes, not tolist(): 36 bytes an int, 2 MB for a class folder of 50,000
        ends = np.frombuffer(names._ends, dtype=np.uint32) + np.uint32(len(self._names._blob))
        self._names._blob += names._blob
        self._names._ends.frombytes(ends.tobytes())

    def _split_number(self, split: str | None) -> int:
        if split not in self.splits:
            self.splits.append(split)
        return self.splits.index(split)

    def label_codes(self, labels: Sequence[str], part: slice = slice(None)) -> np.ndarray:
        """Each file's label (of the files in `part`) as its place in `labels` (-1 for a
        label not in it)."""
        place = np.array([labels.index(name) if name in labels else -1 for name in self.labels]
                         + [-1], dtype=np.int32)
        return place[_values(self._label_of)[part]]

    def split_codes(self, splits: Sequence[str | None], part: slice = slice(None)) -> np.ndarray:
        """Each file's split (of the files in `part`) as its place in `splits` (-1 for a
        split not in it)."""
        place = np.array([list(splits).index(s) if s in splits else -1 for s in self.splits]
                         + [-1], dtype=np.int32)
        return place[_values(self._split_of)[part]]

    def take(self, indices: Iterable[int], kind: type | None = None,
             splits: tuple[Sequence[str], Sequence[int]] | None = None,
             shared_names: bool = False) -> FileTable:
        """The files at `indices`, in that order, as a table of their own (of class `kind`,
        this one's by default); `splits`: (split names, each taken file's place in them) to
        give the files those splits instead of theirs; `shared_names`: the names read from
        this table's by number, not copied."""
        indices = _positions(indices)
        taken = (kind or type(self))(self.splits)
        taken.folders, taken._folder_numbers = list(self.folders), dict(self._folder_numbers)
        taken.labels, taken._label_numbers = list(self.labels), dict(self._label_numbers)
        if shared_names:
            taken._names = self._names
            taken._name_at = array("I")
            taken._name_at.frombytes(byte_view(self._name_places(indices).astype(np.uint32)))
        else:
            taken._names = self._names.take(self._name_places(indices))
        for field in ("_folder_of", "_label_of", "_split_of"):
            source = getattr(self, field)
            target = array(source.typecode)
            target.frombytes(byte_view(_values(source)[indices]))
            setattr(taken, field, target)
        if splits is not None:
            names, places = splits
            taken.splits = list(names)
            taken._split_of = array("B", np.asarray(places, dtype=np.uint8).tobytes())
        return taken


def _positions(indices: Iterable[int]) -> np.ndarray:
    """Indices as an int64 array, from a sequence, an array or an iterator."""
    if isinstance(indices, array) and indices.typecode == "q":
        return np.frombuffer(indices, dtype=np.int64)  # no copy
    if isinstance(indices, np.ndarray | array | range | list | tuple):
        return np.asarray(indices, dtype=np.int64)
    return np.fromiter(indices, dtype=np.int64)


_NUMPY = {"B": np.uint8, "H": np.uint16, "I": np.uint32, "Q": np.uint64}


def _values(numbers: array) -> np.ndarray:
    """An array's numbers as a numpy array (no copy)."""
    return np.frombuffer(numbers, dtype=_NUMPY[numbers.typecode])


def byte_view(values: np.ndarray) -> np.ndarray:
    """An array's bytes as a uint8 view, for array.frombytes (not array(code, view), which
    would read it number by number): not a copy, as tobytes() is (a transient the size of a
    table's column)."""
    return np.ascontiguousarray(values).view(np.uint8)


def _fitting(numbers: array, largest: int) -> array:
    """`numbers`, or a copy of them in the narrowest of B, H and I that holds `largest`: a
    dataset's folder and label numbers take 1 byte a file while there are at most 256."""
    if largest < 1 << (8 * numbers.itemsize):
        return numbers
    return array("H" if largest < 1 << 16 else "I", numbers)
