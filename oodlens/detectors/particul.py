"""PARTICUL (Xu-Darme, Quénot, Chihani, Rousset, "PARTICUL: Part Identification with Confidence measure using
Unsupervised Learning", ICPR-W 2022; OOD use: "Out-of-distribution detection using PARTICUL", 2022).

On a frozen backbone's feature maps F ∈ R^{D×H×W}, each class c has P part detectors, 1×1 convolutions without
bias w_{c,p} ∈ R^D (Glorot-normal init): activation map A_{c,p} = w_{c,p}·F. They are learned without part
labels from the training images of class c, on the maps normalised by a softmax over the H·W positions
(Ā = softmax_hw(A)):

    L = mean_p [ −mean_n max_hw (Ā_{c,p} ∗ U_k) ]  +  λ_u · mean_n relu(max_hw Σ_p Ā_{c,p} − 1)

(locality: a k×k all-ones kernel U_k, k = 3, relaxes "one location"; unicity: parts must not fire at the same
place, threshold 1, λ_u = 1; the clustering term has weight 0 by default in the reference and is left out).
**Calibration**: for each (c, p), a logistic distribution (μ, σ) is fitted by maximum likelihood to the
*unnormalised* max activation max_hw A_{c,p} over the training images of class c (the reference uses
``scipy.stats.logistic.fit``). **Confidence** of part p: C_p(x) = sigmoid((max_hw A_{ĉ,p} − μ_{ĉ,p}) / σ_{ĉ,p})
for the predicted class ĉ = argmax logits; the reference's production score averages them over parts.

    score(x) = − (1/P) Σ_p C_p(x)         (higher = more OOD)

Defaults and formulas as the reference code (xudarme/PARTICUL: ``PatternDetector``, ``ConfidenceMeasure``,
``LocalityLoss`` ksize 3, ``UnicityLoss`` threshold 1, ratio 1; ``calibrate.py``). Differences: all classes'
detectors are trained at once (each image only updates its own class's detectors, so this equals class-wise
training up to batch composition) with Adam for ``steps`` minibatches; ``class_wise=False`` is the reference's
``--od2-no-class`` mode (one set of P detectors, no labels). Works on image feature maps (N, D, H, W), on ROI
feature maps of detected boxes (N_boxes, D, h, w), and on pooled vectors (N, D) as 1×1 maps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OODLensError
from .base import Detector


def _as_maps(t: torch.Tensor) -> torch.Tensor:
    return t[:, :, None, None] if t.ndim == 2 else t


def particul_loss(norm_maps: torch.Tensor, ksize: int = 3, unicity: float = 1.0) -> torch.Tensor:
    """Locality + λ·unicity on softmax-normalised activation maps (N, P, H, W)."""
    # the k×k all-ones kernel with zero padding ('same') is a box sum: k² × average pooling counting the padding
    local = (F.avg_pool2d(norm_maps, ksize, 1, ksize // 2, count_include_pad=True) * ksize * ksize).flatten(2).amax(2)
    loc = -local.mean(0).mean()
    uni = torch.relu(norm_maps.sum(1).flatten(1).amax(1) - 1.0).mean()
    return loc + unicity * uni


def logistic_fit(x: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood logistic (μ, σ) as scipy.stats.logistic.fit (with a floor on σ for constant data)."""
    from scipy.stats import logistic

    if x.size < 2 or float(np.ptp(x)) == 0.0:
        return float(x.mean()) if x.size else 0.0, 1e-6
    mu, s = logistic.fit(x)
    return float(mu), max(float(s), 1e-6)


class Particul(Detector):
    name = "particul"
    spatial_inputs = True
    test_params = {"maps": "block2_map", "n_patterns": 8}
    param_grid = {"n_patterns": [2, 4, 6]}

    def __init__(self, maps: str = "roi_map", logits: str = "logits", n_patterns: int = 4, class_wise: bool = True,
                 steps: int = 300, batch_size: int = 128, lr: float = 1e-2, locality_ksize: int = 3,
                 unicity: float = 1.0, seed: int = 0):
        self.maps, self.logits, self.n_patterns, self.class_wise = maps, logits, n_patterns, class_wise
        self.steps, self.batch_size, self.lr = steps, batch_size, lr
        self.locality_ksize, self.unicity, self.seed = locality_ksize, unicity, seed

    @property
    def needs_labels(self) -> bool:  # type: ignore[override]
        """Class labels are needed at fit in the class-wise mode (the default), not with ``class_wise=False``."""
        return bool(self.class_wise)

    def required_features(self) -> tuple[str, ...]:
        return (self.maps, self.logits) if self.class_wise else (self.maps,)

    def _fit(self, train, labels, head, model) -> None:
        if self.n_patterns < 1 or self.steps < 0 or self.batch_size < 1 or self.locality_ksize < 1 \
                or self.locality_ksize % 2 == 0:
            raise OODLensError("PARTICUL needs n_patterns ≥ 1, steps ≥ 0, batch_size ≥ 1 and an odd locality_ksize")
        maps = _as_maps(train[self.maps])
        if maps.ndim != 4:
            raise OODLensError(f"PARTICUL needs feature maps (N, D, H, W) or vectors (N, D), got {tuple(maps.shape)}")
        if self.class_wise:
            if labels is None:
                raise OODLensError("PARTICUL with class_wise=True needs class labels at fit (labels=...)")
            y = labels.to(maps.device)
            n_cls = train[self.logits].shape[1]
            if int(y.max()) >= n_cls:  # a part detector per label, chosen at scoring by the logits' argmax
                raise OODLensError(f"PARTICUL: labels go up to {int(y.max())} but {self.logits!r} has {n_cls} "
                                   f"classes; the labels must be the classifier's classes 0..{n_cls - 1}")
        else:
            y, n_cls = torch.zeros(maps.shape[0], dtype=torch.long, device=maps.device), 1
        d, p = maps.shape[1], self.n_patterns
        g = torch.Generator().manual_seed(self.seed)
        w = (torch.randn(n_cls, p, d, generator=g) * (2.0 / (d + 1)) ** 0.5).to(maps)  # Glorot normal, 1×1 conv
        w.requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        n = maps.shape[0]
        with torch.enable_grad():
            for _ in range(self.steps):
                idx = torch.randint(0, n, (min(self.batch_size, n),), generator=g).to(maps.device)
                m = maps[idx]
                a = torch.bmm(w[y[idx]], m.flatten(2)).view(m.shape[0], p, *m.shape[2:])
                norm = torch.softmax(a.flatten(2), 2).view_as(a)
                loss = particul_loss(norm, self.locality_ksize, self.unicity)
                opt.zero_grad()
                loss.backward()
                opt.step()
        w = w.detach()
        with torch.no_grad():
            vmax = torch.einsum("ndhw,npd->nphw", maps, w[y]).flatten(2).amax(2).cpu().double().numpy()  # (N, P)
        yy = y.cpu().numpy()
        mu, sigma = np.zeros((n_cls, p)), np.ones((n_cls, p))
        for c in range(n_cls):  # one maximum-likelihood fit per (class, part), as the reference's calibration
            rows = vmax[yy == c] if (yy == c).any() else vmax
            for j in range(p):
                mu[c, j], sigma[c, j] = logistic_fit(rows[:, j])
        self.weight_ = w
        self.mu_ = torch.from_numpy(mu).to(maps)
        self.sigma_ = torch.from_numpy(sigma).to(maps)

    def part_confidence(self, x) -> torch.Tensor:
        """(N, P) calibrated confidence of each part detector of the predicted class."""
        maps = _as_maps(x[self.maps])
        c = x[self.logits].argmax(1).clamp_max(self.weight_.shape[0] - 1) if self.class_wise else \
            torch.zeros(maps.shape[0], dtype=torch.long, device=maps.device)
        vmax = torch.einsum("ndhw,npd->nphw", maps, self.weight_[c].to(maps)).flatten(2).amax(2)
        return torch.sigmoid((vmax - self.mu_[c].to(maps)) / self.sigma_[c].to(maps))

    def _score(self, x) -> torch.Tensor:
        return -self.part_confidence(x).mean(1)
