"""An independent float64 NumPy implementation of the class selectivity index, written from the definition
(Leavitt & Morcos, ICLR 2021, Sec. 2.2) with plain loops, to test `selectivity_jax` against."""

import numpy as np


def reference_unit_selectivity(acts, labels, num_classes, mask=None, eps=1e-7):
    """acts [B, ..., U], labels [B], optional mask [B] -> SI [U] in float64."""
    a = np.asarray(acts, dtype=np.float64)
    if a.ndim > 2:
        a = a.mean(axis=tuple(range(1, a.ndim - 1)))
    labels = np.asarray(labels)
    if mask is not None:
        keep = np.asarray(mask).astype(bool)
        a, labels = a[keep], labels[keep]
    units = a.shape[1]
    present = [c for c in range(num_classes) if np.any(labels == c)]
    si = np.zeros(units)
    if len(present) < 2:
        return si
    for u in range(units):
        means = [a[labels == c, u].mean() for c in present]
        if all(m == 0 for m in means):
            continue
        top = int(np.argmax(means))
        mu_max = means[top]
        mu_rest = np.mean(means[:top] + means[top + 1:])
        si[u] = (mu_max - mu_rest) / (mu_max + mu_rest + eps)
    return si


def reference_network_selectivity(acts_dict, labels, num_classes, mask=None, eps=1e-7):
    return float(np.mean([reference_unit_selectivity(a, labels, num_classes, mask, eps).mean()
                          for a in acts_dict.values()]))
