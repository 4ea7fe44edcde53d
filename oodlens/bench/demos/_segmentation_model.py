"""The segmentation demo's network: a small fully convolutional net (encoder to 1/4 resolution with dilated
convolutions, a skip decoder back to full resolution) trained on the CPU on synthetic scenes; its AbeT variant
replaces the 1×1 classifier by :class:`oodlens.training.abet.AbeTHead` (per-pixel, on the same features)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import OODLensError
from ...safetensors_io import load_tensors, save_tensors
from ...training.abet import AbeTHead

NUM_CLASSES = 7  # background + digits 0-5
WIDTHS = (16, 32, 96, 24)  # enc1, enc2, enc3, features


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SceneFCN(nn.Module):
    """enc1 (16 ch, 1/1) → enc2 (32 ch, 1/2) → enc3 (96 ch, 1/4: four 3×3 convolutions, dilations 1, 2, 4, 1) →
    ``features``: enc3 upsampled ×4 and concatenated with enc1, a 1×1 then a 3×3 convolution (24 ch, 1/1) →
    ``head`` (1×1 conv, or an AbeT head with ``abet=True``). Most of the work happens at 1/4 resolution."""

    def __init__(self, num_classes: int = NUM_CLASSES, abet: bool = False):
        super().__init__()
        w1, w2, w3, wf = WIDTHS
        self.enc1 = _block(3, w1)
        self.enc2 = _block(w1, w2, 2)
        self.enc3 = nn.Sequential(_block(w2, w3, 2), _block(w3, w3, dilation=2), _block(w3, w3, dilation=4),
                                  _block(w3, w3))
        self.features = nn.Sequential(nn.Conv2d(w3 + w1, wf, 1, bias=False), nn.BatchNorm2d(wf), nn.ReLU(inplace=True),
                                      _block(wf, wf))
        self.head = AbeTHead(wf, num_classes) if abet else nn.Conv2d(wf, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e3 = self.enc3(self.enc2(e1))
        up = F.interpolate(e3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.features(torch.cat([up, e1], 1)))


def train_fcn(model: SceneFCN, images: torch.Tensor, targets: torch.Tensor, *, epochs: int, seed: int,
              lr: float = 3e-3, batch_size: int = 16, background_weight: float = 0.25, progress: bool = True,
              desc: str = "train FCN") -> SceneFCN:
    """Adam + one-cycle schedule, cross-entropy per pixel (targets: class per pixel, 255 ignored; the background
    class weighted ``background_weight`` so the digits' identities drive learning), random shifts of up to
    4 px as augmentation; deterministic for ``seed``."""
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
        steps = epochs * -(-images.shape[0] // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
        weight = torch.ones(NUM_CLASSES)
        weight[0] = background_weight
        model.train()
        for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False, unit="epoch"):
            order = torch.randperm(images.shape[0], generator=g)
            for i in range(0, images.shape[0], batch_size):
                idx = order[i:i + batch_size]
                dx, dy = (int(v) for v in torch.randint(-4, 5, (2,), generator=g))
                xb = torch.roll(images[idx], (dy, dx), (2, 3))
                yb = torch.roll(targets[idx], (dy, dx), (1, 2))
                loss = F.cross_entropy(model(xb), yb, weight=weight, ignore_index=255)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def fit_head(head: nn.Module, features: torch.Tensor, targets: torch.Tensor, *, steps: int, seed: int,
             lr: float = 1e-2, rows_per_step: int = 8192, background_weight: float = 0.25) -> nn.Module:
    """Train a per-pixel head alone on fixed features (B, D, H, W) — pixels as rows, random row batches, Adam,
    the same weighted cross-entropy as :func:`train_fcn` (255 ignored)."""
    rows = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    y = targets.reshape(-1)
    keep = (y != 255).nonzero().flatten()
    rows, y = rows[keep], y[keep]
    weight = torch.ones(NUM_CLASSES)
    weight[0] = background_weight
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for _ in range(steps):
        idx = torch.randint(0, rows.shape[0], (rows_per_step,), generator=g)
        loss = F.cross_entropy(head(rows[idx]), y[idx], weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval()


def save_fcn(model: SceneFCN, path: Path, meta: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path, meta)


def load_fcn(path: Path, abet: bool) -> SceneFCN:
    model = SceneFCN(abet=abet)
    tensors, _ = load_tensors(path, mmap=False)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise OODLensError(f"{path}: the cached weights do not fit the demo network ({e}); delete the file") from e
    return model.eval()


@torch.inference_mode()
def forward_maps(model: SceneFCN, images: torch.Tensor, batch_size: int = 64
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits (B, C, H, W), penultimate features (B, 24, H, W), encoder map (B, 96, H/4, W/4))."""
    outs: dict[str, torch.Tensor] = {}
    hooks = [model.features.register_forward_hook(lambda m, i, o: outs.__setitem__("features", o)),
             model.enc3.register_forward_hook(lambda m, i, o: outs.__setitem__("enc3", o))]
    logits, feats, enc = [], [], []
    try:
        for i in range(0, images.shape[0], batch_size):
            logits.append(model(images[i:i + batch_size]))
            feats.append(outs["features"])
            enc.append(outs["enc3"])
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(logits), torch.cat(feats), torch.cat(enc)
