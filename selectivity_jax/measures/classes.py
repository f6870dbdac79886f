"""Per-class views of a network: each unit's preferred class and per-class accuracy (Leavitt & Morcos, ICLR 2021).

The class selectivity index of a unit (Sec. 2.2, `selectivity_jax.selectivity`) compares its largest class-mean
response, mu_max, with the mean of the others; the class of mu_max is the unit's **preferred class**. The histogram
of preferred classes over a layer's units says whether selectivity regularisation spreads units evenly over the
classes or piles them onto a few; per-class accuracy says whether the classes are learned evenly.

Conventions (float64 NumPy on the host; pure functions, no files):

- ``responses [N, U]`` are unit responses (conv channels spatially averaged), ``labels [N]`` ints in [0, C).
- Class means are over the classes present in ``labels``; an absent class is never a preferred class.
- A **dead** unit has every present class mean exactly 0 (post-ReLU: it never fired on the examples), the rule
  under which the selectivity index is 0. It has no preferred class (`DEAD`) unless ``count_dead=True``, which gives
  it the first present class, as a plain argmax of its all-zero class means does.
- Ties between class means of a live unit go to the lowest class index (``np.argmax``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEAD = -1  # the preferred class of a dead unit when dead units are not counted


def _labels(labels: Any, num_examples: int, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (num_examples,):
        raise ValueError(f"labels must have shape [N] = [{num_examples}]; got {labels.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= num_classes):
        raise ValueError(f"labels must be integers in [0, {num_classes}); got {labels.dtype} in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def class_means(responses: Any, labels: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-conditional mean responses: responses [N, U], labels [N] -> (means [C, U] float64, NaN for a class
    absent from ``labels``; counts [C] int64)."""
    responses = np.asarray(responses, np.float64)
    if responses.ndim != 2:
        raise ValueError(f"responses must be a matrix [examples, units]; got shape {responses.shape}")
    labels = _labels(labels, responses.shape[0], num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.zeros((num_classes, responses.shape[1]), np.float64)
    np.add.at(sums, labels, responses)
    means = np.full_like(sums, np.nan)
    present = counts > 0
    means[present] = sums[present] / counts[present, None]
    return means, counts


def dead_units(means: Any) -> np.ndarray:
    """Class means [C, U] (NaN: absent class) -> bool [U], True where every present class mean is exactly 0."""
    means = np.asarray(means, np.float64)
    return np.all(np.isnan(means) | (means == 0.0), axis=0)


def preferred_classes(responses: Any, labels: Any, num_classes: int, count_dead: bool = False) -> np.ndarray:
    """Each unit's preferred class, the argmax over present classes of its class means: responses [N, U], labels
    [N] -> int64 [U]; a dead unit (`dead_units`) gets `DEAD`, or with ``count_dead`` the first present class.
    Raises ValueError when ``labels`` is empty."""
    means, counts = class_means(responses, labels, num_classes)
    present = counts > 0
    if not present.any():
        raise ValueError("labels is empty: no class mean, no preferred class")
    preferred = np.argmax(np.where(present[:, None], means, -np.inf), axis=0)
    if not count_dead:
        preferred = np.where(dead_units(means), DEAD, preferred)
    return preferred.astype(np.int64)


def preferred_class_histogram(preferred: Any, num_classes: int) -> np.ndarray:
    """Units preferring each class: preferred classes [U] (`DEAD` left out) -> int64 counts [C]."""
    preferred = np.asarray(preferred)
    if preferred.ndim != 1:
        raise ValueError(f"preferred must be a vector [units]; got shape {preferred.shape}")
    live = preferred[preferred != DEAD].astype(np.int64)
    if live.size and (live.min() < 0 or live.max() >= num_classes):
        raise ValueError(f"preferred classes must be in [0, {num_classes}) or DEAD; got [{live.min()}, {live.max()}]")
    return np.bincount(live, minlength=num_classes).astype(np.int64)


def histogram_evenness(counts: Any) -> float:
    """How evenly units spread over the classes: the entropy of the preferred-class distribution over log C, counts
    [C] -> 1 when every class is preferred equally often, 0 when one class takes all; NaN with no unit or C < 2.
    Fewer units U than classes reach at most log U / log C."""
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or np.any(counts < 0):
        raise ValueError(f"counts must be a non-negative vector [classes]; got shape {counts.shape}")
    total = counts.sum()
    if total == 0 or counts.size < 2:
        return float("nan")
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(counts.size))


def per_class_accuracy(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 accuracy within each true class: logits [N, C], labels [N] -> (accuracy [C] float64, NaN for a class
    absent from ``labels``; counts [C] int64). ``(accuracy * counts).nansum() / counts.sum()`` is the accuracy."""
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be a matrix [examples, classes]; got shape {logits.shape}")
    num_classes = logits.shape[1]
    labels = _labels(labels, logits.shape[0], num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels, weights=(np.argmax(logits, axis=1) == labels).astype(np.float64),
                          minlength=num_classes)
    accuracy = np.full(num_classes, np.nan)
    accuracy[counts > 0] = correct[counts > 0] / counts[counts > 0]
    return accuracy, counts.astype(np.int64)


def weighted_accuracy(accuracy: Any, counts: Any) -> float:
    """The overall accuracy from per-class accuracies [C] and class counts [C] (absent classes, NaN, weigh 0)."""
    accuracy, counts = np.asarray(accuracy, np.float64), np.asarray(counts, np.float64)
    if accuracy.shape != counts.shape or counts.sum() <= 0:
        raise ValueError(f"accuracy and counts must be vectors of one length with counts summing > 0; got "
                         f"{accuracy.shape}, {counts.shape}")
    return float(np.sum(np.where(counts > 0, accuracy, 0.0) * counts) / counts.sum())
