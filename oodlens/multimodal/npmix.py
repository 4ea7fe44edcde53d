"""NP-Mix outlier synthesis (Nearest-Prototype Mixup) from MultiOOD (Dong, Zhao, Chatzi, Fink, NeurIPS 2024).

State: for each of C classes a queue of the last S detached, concatenated multimodal embeddings
``z = [z_video, z_flow, ...]`` (FIFO once full). At a synthesis step:

    μ_c = mean of queue c                                   (class prototypes, C × D)
    N(i) = the (k − 1) classes whose prototypes are nearest to μ_i, i itself excluded
    for every class i:  j ~ Uniform(N(i)),  a ~ Uniform(queue i),  b ~ Uniform(queue j),  λ ~ Beta(α, α)
                        outlier_i = λ · queue_i[a] + (1 − λ) · queue_j[b]

giving C outliers per step, one per class, that lie on segments between real stored samples of two classes whose
prototypes are neighbours. The outliers are split back into per-modality parts and fed to the per-modality heads
(see :mod:`oodlens.multimodal.losses` for the discrepancy and entropy terms).

Defaults are the argparse defaults of MultiOOD's ``HMDB-rgb-flow/train_video_flow.py``: ``sample_number`` S = 65,
``nn_k`` k = 3 (the query counts the class itself, which the reference drops with ``ind[1:]``, so each class has 2
neighbour classes), ``mixup_alpha`` α = 10; synthesis starts at epoch ``start_epoch`` = 10 (handled by the
trainer). Queue semantics follow the reference: while any class queue is not yet full, samples are appended to
queues with room (and dropped from full ones), and nothing is synthesised; from the step after every queue is full,
each batch is pushed FIFO first, then prototypes are recomputed and outliers drawn.

Deliberate differences: the reference rebuilds a KD-tree over the prototypes and queries it once per class every
step; here one C × C squared-distance matrix (``_gaussian.sq_dist_to_means``, float64) gives every class's
neighbours at once, with the class itself excluded explicitly rather than assumed to be the first hit. The queues
are ring buffers (same contents as the reference's shift-and-append, in rotated order; sampling is uniform over
rows so the distribution of outliers is identical). Random draws use a seeded ``numpy.random.Generator`` (the
reference uses the global numpy state), so synthesis is reproducible and independent of the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..detectors._gaussian import sq_dist_to_means
from ..errors import OODLensError


@dataclass
class NPMixDraw:
    """One synthesis step: the outliers (C, D) and how each was made (for inspection and tests)."""

    outliers: torch.Tensor
    classes: torch.Tensor  # (C,) class i of each outlier
    neighbours: torch.Tensor  # (C,) neighbour class j
    lam: torch.Tensor  # (C,) mixing weight on class i
    rows_i: torch.Tensor  # (C,) queue row taken from class i
    rows_j: torch.Tensor  # (C,) queue row taken from class j
    candidates: torch.Tensor  # (C, k − 1) neighbour classes of each class, nearest first


def _rank_within_class(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample, its 0-based rank among the batch's samples of the same class (batch order), and the
    number of samples of its class in the batch."""
    n = labels.shape[0]
    order = torch.argsort(labels, stable=True)
    sorted_y = labels[order]
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(n, device=labels.device) - starts[sorted_y]
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank, counts[labels]


class NPMix:
    """Per-class embedding queues and NP-Mix synthesis.

    >>> mix = NPMix(num_classes=25, dim=4352, seed=0)
    >>> draw = mix.step(embeddings.detach(), labels, synthesize=epoch >= 10)   # None while filling
    """

    def __init__(self, num_classes: int, dim: int, sample_number: int = 65, nn_k: int = 3, alpha: float = 10.0,
                 seed: int = 0, device: str | torch.device | None = None):
        if num_classes < 2:
            raise OODLensError(f"NP-Mix needs at least 2 classes, got {num_classes}")
        if sample_number < 1:
            raise OODLensError(f"sample_number must be ≥ 1, got {sample_number}")
        if nn_k < 2:
            raise OODLensError(f"nn_k counts the class itself and must be ≥ 2, got {nn_k}")
        if alpha <= 0:
            raise OODLensError(f"mixup alpha must be > 0, got {alpha}")
        self.num_classes, self.dim, self.sample_number = int(num_classes), int(dim), int(sample_number)
        self.nn_k, self.alpha = int(nn_k), float(alpha)
        self.rng = np.random.default_rng(seed)
        self.queue = torch.zeros(self.num_classes, self.sample_number, self.dim, device=device)
        self.count = torch.zeros(self.num_classes, dtype=torch.long, device=device)
        self.head = torch.zeros(self.num_classes, dtype=torch.long, device=device)  # ring position of the oldest row

    @property
    def full(self) -> bool:
        """Whether every class queue holds ``sample_number`` embeddings."""
        return bool((self.count == self.sample_number).all())

    def push(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of (detached) embeddings: fill queues with room while filling, FIFO once all are full."""
        emb = emb.detach()
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise OODLensError(f"NP-Mix embeddings must be (N, {self.dim}), got {tuple(emb.shape)}")
        labels = labels.to(self.queue.device).long()
        if labels.shape != (emb.shape[0],):
            raise OODLensError(f"labels must have shape ({emb.shape[0]},), got {tuple(labels.shape)}")
        if labels.numel() == 0:
            return
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise OODLensError(f"labels must be in 0..{self.num_classes - 1}")
        emb = emb.to(self.queue.device, self.queue.dtype)
        rank, n_same = _rank_within_class(labels)
        s = self.sample_number
        if not self.full:
            pos = self.count[labels] + rank
            keep = pos < s
            self.queue[labels[keep], pos[keep]] = emb[keep]
            self.count += torch.bincount(labels[keep], minlength=self.num_classes)
        else:
            keep = rank >= n_same - s  # only the newest S of a class survive this push
            pos = (self.head[labels] + rank) % s
            self.queue[labels[keep], pos[keep]] = emb[keep]
            self.head = (self.head + torch.bincount(labels, minlength=self.num_classes)) % s

    def prototypes(self) -> torch.Tensor:
        """Class means of the queues (C, D)."""
        return self.queue.mean(1)

    def neighbour_classes(self) -> torch.Tensor:
        """(C, k − 1): for each class, the classes with the nearest prototypes (itself excluded), nearest first."""
        proto = self.prototypes().to(torch.float64)
        d = sq_dist_to_means(proto, proto)
        d.fill_diagonal_(float("inf"))
        k = min(self.nn_k - 1, self.num_classes - 1)
        return torch.topk(d, k, dim=1, largest=False).indices

    def sample(self) -> NPMixDraw:
        """Draw one outlier per class (requires full queues)."""
        if not self.full:
            raise OODLensError("NP-Mix queues are not full yet; push more batches before sampling")
        c, s = self.num_classes, self.sample_number
        cand = self.neighbour_classes()
        dev = self.queue.device
        pick = torch.as_tensor(self.rng.integers(0, cand.shape[1], size=c), device=dev)
        rows_i = torch.as_tensor(self.rng.integers(0, s, size=c), device=dev)
        rows_j = torch.as_tensor(self.rng.integers(0, s, size=c), device=dev)
        lam = torch.as_tensor(self.rng.beta(self.alpha, self.alpha, size=c), dtype=self.queue.dtype, device=dev)
        classes = torch.arange(c, device=dev)
        nb = cand[classes, pick]
        out = lam[:, None] * self.queue[classes, rows_i] + (1 - lam[:, None]) * self.queue[nb, rows_j]
        return NPMixDraw(out, classes, nb, lam, rows_i, rows_j, cand)

    def step(self, emb: torch.Tensor, labels: torch.Tensor, synthesize: bool = True) -> NPMixDraw | None:
        """One training step, as in the reference: if all queues were already full, push FIFO and (when
        ``synthesize``) draw outliers; otherwise fill and return None."""
        was_full = self.full
        self.push(emb, labels)
        if was_full and synthesize:
            return self.sample()
        return None
