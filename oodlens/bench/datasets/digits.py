"""The built-in ``digits`` benchmark data: scikit-learn's 8×8 handwritten digits, nothing downloaded.

* ID: digits 0–5, split 60 / 20 / 20 into train / validation / test (stratified, seeded);
* near-OOD: digits 6–9;
* far-OOD: 8×8 patches of scikit-learn's ``china.jpg`` photograph, and uniform noise;
* validation OOD (tuning only): patches of the other photograph, ``flower.jpg`` — never a test distribution;
* covariate shift: ID test digits rotated, noised and blurred at severities 1–5.

Pixels are scaled to [0, 1] (digits are 0–16 in scikit-learn); photo patches are grey levels in [0, 1] taken
from the image downsampled 4× so strokes and patches have comparable scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...errors import OODLensError
from .shifts import SHIFTS, apply_shift

ID_CLASSES = (0, 1, 2, 3, 4, 5)


@dataclass
class DigitsSplits:
    """Inputs (N, 1, 8, 8) per split; labels for the ID splits and covariate sets."""

    inputs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    kinds: dict[str, str]  # test-set name -> near / far / covariate
    groups: dict[str, tuple[str, int]]  # covariate set -> (shift, severity)


def photo_patches(index: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(images):
        raise OODLensError(f"index must be 0..{len(images) - 1} (scikit-learn's sample photos), got {index!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise OODLensError(f"n must be a positive integer, got {n!r}")
    img = images[index].astype(np.float32).mean(axis=2) / 255.0
    h, w = (img.shape[0] // 4) * 4, (img.shape[1] // 4) * 4
    small = img[:h, :w].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))
    ys = rng.integers(0, small.shape[0] - 8, n)
    xs = rng.integers(0, small.shape[1] - 8, n)
    patches = np.stack([small[y:y + 8, x:x + 8] for y, x in zip(ys, xs)])
    return torch.from_numpy(patches).unsqueeze(1)


def load_digits_splits(seed: int = 0, n_far: int = 400) -> DigitsSplits:
    """Build every split of the digits benchmark, deterministically for ``seed``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    is_id = np.isin(d.target, ID_CLASSES)
    train_idx, val_idx, test_idx = [], [], []
    for c in ID_CLASSES:  # stratified 60/20/20
        idx = rng.permutation(np.flatnonzero(d.target == c))
        a, b = int(0.6 * len(idx)), int(0.8 * len(idx))
        train_idx += idx[:a].tolist()
        val_idx += idx[a:b].tolist()
        test_idx += idx[b:].tolist()
    inputs = {"train": x[train_idx], "val": x[val_idx], "test": x[test_idx]}
    labels = {"train": y[train_idx], "val": y[val_idx], "test": y[test_idx]}
    inputs["val_ood"] = photo_patches(1, n_far, rng)
    inputs["digits 6-9"] = x[torch.from_numpy(np.flatnonzero(~is_id))]
    inputs["photo patches"] = photo_patches(0, n_far, rng)
    g = torch.Generator().manual_seed(seed)
    inputs["uniform noise"] = torch.rand(n_far, 1, 8, 8, generator=g)
    kinds = {"digits 6-9": "near", "photo patches": "far", "uniform noise": "far"}
    groups = {}
    for shift in SHIFTS:
        for sev in range(1, 6):
            name = f"{shift}-{sev}"
            inputs[name] = apply_shift(inputs["test"], shift, sev, seed)
            labels[name] = labels["test"]
            kinds[name] = "covariate"
            groups[name] = (shift, sev)
    return DigitsSplits(inputs, labels, kinds, groups)


class DigitsCNN(nn.Module):
    """A small CNN for 8×8 digits: three conv blocks (``layer1``–``layer3``), global average pool (``pool``,
    the penultimate 64-D ``features``) and a linear head (``fc``)."""

    def __init__(self, num_classes: int = len(ID_CLASSES)):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layer3(self.layer2(self.layer1(x)))))


def train_digits_cnn(x: torch.Tensor, y: torch.Tensor, seed: int = 0, epochs: int = 20, batch_size: int = 64,
                     progress: bool = True) -> DigitsCNN:
    """Train on CPU with Adam, deterministic for ``seed`` (small random shifts of ±1 pixel as augmentation)."""
    from tqdm.auto import tqdm

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        g = torch.Generator().manual_seed(seed)
        model.train()
        for _ in tqdm(range(epochs), desc="train digits CNN", disable=not progress, leave=False, unit="epoch"):
            order = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0], batch_size):
                idx = order[i:i + batch_size]
                xb = x[idx]
                dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
                opt.zero_grad()
                nn.functional.cross_entropy(model(xb), y[idx]).backward()
                opt.step()
            sched.step()
    return model.eval()
