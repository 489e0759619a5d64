"""Class imbalance: how uneven the classes of a training split are, and the class weights that
make each class count as much as the others in the loss."""

from __future__ import annotations

from collections import Counter

# Above this ratio of the largest class to the smallest, the Dataset page warns: a model can
# then reach a good accuracy by favouring the large class.
IMBALANCE_RATIO = 1.5
CLASS_WEIGHTS = ("none", "balanced")


def imbalance(counts: dict[str, int]) -> dict | None:
    """The largest and smallest class and their ratio, when it is above IMBALANCE_RATIO."""
    if len(counts) < 2:
        return None
    largest = max(counts, key=counts.get)
    smallest = min(counts, key=counts.get)
    big, small = counts[largest], counts[smallest]
    ratio = big / small if small else float("inf")
    if ratio <= IMBALANCE_RATIO:
        return None
    return {"largest": largest, "largest_count": big, "smallest": smallest,
            "smallest_count": small, "ratio": ratio}


def class_weights(labels, num_classes: int, mode: str) -> dict[int, float] | None:
    """Keras' `class_weight` for `mode`: None for "none"; for "balanced", each class weighs
    n / (classes × n_class), scikit-learn's rule, so every class adds the same to the loss
    and the mean weight of a photo is 1 (the learning rate keeps its meaning)."""
    if mode == "none":
        return None
    counts = Counter(int(label) for label in labels)
    total = sum(counts.values())
    present = [c for c in range(num_classes) if counts[c]]
    return {c: total / (len(present) * counts[c]) for c in present}
