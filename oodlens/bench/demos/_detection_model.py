"""The detection demo's detector: a small single-scale anchor-free detector (FCOS/CenterNet-style) in torch,
trained on the CPU in under a minute.

Backbone: 3×3 convolutions with batch norm, stride 4 (64×64 image → 16×16 cells, 48 channels). Per cell, a
1×1 hidden layer (the box's *ROI feature*, 48-d) feeds a linear classifier over the K known classes **plus a
background column** (last, as in torchvision / detectron2 ROI heads), and a box branch predicts the distances
(left, top, right, bottom) from the cell centre. Training: cells whose centre lies in the central half of an
object's box are positives for that object (smallest box wins), the rest background; cross-entropy (positives
and background averaged separately) + L1 on log-distances. Inference: confidence = the largest known-class
softmax probability (background column included in the softmax, as VOS's ``cls_prob[:-1].max()``); kept boxes
are 3×3 local maxima of the confidence map above ``min_conf`` (at most ``max_dets`` per image) — no NMS needed.

Per kept box the demo records the logits (with background), the 48-d ROI feature, and a 4×4 ROI feature map of
the backbone (bilinear crop, for PARTICUL).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ...detection import Detections

STRIDE = 4


def _block(i: int, o: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(o), nn.ReLU(inplace=True))


class TinyDetector(nn.Module):
    """Anchor-free detector on 3×64×64 scenes; ``forward`` returns (logits (B, K+1, h, w), ltrb (B, 4, h, w),
    hidden (B, D, h, w), backbone map (B, C, h, w))."""

    def __init__(self, num_classes: int = 6, stem: int = 16, width: int = 32, hidden: int = 48):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = nn.Sequential(_block(3, stem, 2), _block(stem, width, 2), _block(width, width),
                                      _block(width, width, dilation=2))
        self.hidden = nn.Sequential(nn.Conv2d(width, hidden, 1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(hidden, num_classes + 1, 1)
        self.box = nn.Conv2d(width, 4, 3, padding=1)

    def forward(self, x: torch.Tensor):
        f = self.backbone(x)
        h = self.hidden(f)
        return self.cls(h), self.box(f), h, f


def targets(boxes: torch.Tensor, labels: torch.Tensor, image: torch.Tensor, n: int, hw: int, num_classes: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell class target (n, hw, hw) (background = num_classes) and ltrb target (n, 4, hw, hw) in pixels."""
    c = (torch.arange(hw, dtype=torch.float32) + 0.5) * STRIDE
    cy, cx = c.view(1, hw, 1), c.view(1, 1, hw)
    b = boxes[:, :, None, None]
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    mx, my = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    inside = ((cx - mx).abs() <= bw / 4 + STRIDE / 2) & ((cy - my).abs() <= bh / 4 + STRIDE / 2)  # (M, hw, hw)
    area = (bw * bh).expand_as(inside)
    cost = torch.where(inside, area, torch.full_like(area, float("inf")))
    best = torch.full((n, hw, hw), float("inf"))
    best = best.flatten(1).scatter_reduce(0, image[:, None].expand(-1, hw * hw), cost.flatten(1), "amin").view(n, hw, hw)
    owner = torch.full((n, hw, hw), -1, dtype=torch.long)
    rows = torch.arange(boxes.shape[0]).view(-1, 1, 1).expand_as(inside)
    hit = inside & (cost == best[image])
    owner.index_put_((image.view(-1, 1, 1).expand_as(inside)[hit], *torch.nonzero(hit)[:, 1:].T), rows[hit])
    cls = torch.where(owner >= 0, labels[owner.clamp_min(0)], torch.full_like(owner, num_classes))
    ob = boxes[owner.clamp_min(0)]  # (n, hw, hw, 4)
    ltrb = torch.stack([cx.expand(n, hw, hw) - ob[..., 0], cy.expand(n, hw, hw) - ob[..., 1],
                        ob[..., 2] - cx.expand(n, hw, hw), ob[..., 3] - cy.expand(n, hw, hw)], 1)
    return cls, ltrb.clamp_min(0.5)


def train_detector(images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, image: torch.Tensor,
                   num_classes: int = 6, steps: int = 300, batch_size: int = 32, lr: float = 4e-3, seed: int = 0,
                   progress: bool = True) -> TinyDetector:
    """Train :class:`TinyDetector` on known objects only (labels ≥ 0)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = TinyDetector(num_classes)
    n, hw = images.shape[0], images.shape[-1] // STRIDE
    cls_t, box_t = targets(boxes, labels, image, n, hw, num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        logits, ltrb, _, _ = model(images[idx])
        ct, bt = cls_t[idx], box_t[idx]
        ce = F.cross_entropy(logits, ct, reduction="none")
        pos = ct < num_classes
        loss = ce[pos].mean() + ce[~pos].mean()
        if bool(pos.any()):
            pm = pos[:, None].expand_as(ltrb)
            loss = loss + F.l1_loss(ltrb[pm], torch.log(bt[pm] / STRIDE))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step + 1) % 60 == 0:
            print(f"  detector step {step + 1}/{steps}: loss {float(loss.detach()):.3f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return model.eval()


def _roi_maps(fmap: torch.Tensor, boxes: torch.Tensor, image: torch.Tensor, size: int, out: int = 4) -> torch.Tensor:
    """Bilinear crops (N, C, out, out) of the backbone map over each box (align_corners=False sampling)."""
    t = (torch.arange(out, dtype=torch.float32) + 0.5) / out
    x = boxes[:, 0:1] + t * (boxes[:, 2:3] - boxes[:, 0:1])
    y = boxes[:, 1:2] + t * (boxes[:, 3:4] - boxes[:, 1:2])
    gx, gy = x / size * 2 - 1, y / size * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(-1, out, out), gy[:, :, None].expand(-1, out, out)], -1)
    return F.grid_sample(fmap[image], grid, mode="bilinear", align_corners=False)


@torch.no_grad()
def detect(model: TinyDetector, images: torch.Tensor, min_conf: float = 0.05, max_dets: int = 10,
           batch_size: int = 256, frame: torch.Tensor | None = None) -> Detections:
    """Run the detector over images (N, 3, H, W) and return every kept box with logits (background last),
    confidence, ``features`` (hidden vector) and ``roi_map`` (4×4 backbone crop)."""
    k, size = model.num_classes, images.shape[-1]
    parts: dict[str, list[torch.Tensor]] = {k_: [] for k_ in ("image", "boxes", "logits", "conf", "feat", "roi")}
    for s in range(0, images.shape[0], batch_size):
        logits, ltrb, hid, fmap = model(images[s:s + batch_size])
        b, _, hw, _ = logits.shape
        conf = torch.softmax(logits, 1)[:, :k].amax(1)  # (b, hw, hw)
        peak = conf == F.max_pool2d(conf[:, None], 3, 1, 1)[:, 0]
        score = torch.where(peak & (conf >= min_conf), conf, torch.zeros_like(conf)).flatten(1)
        top, pos = score.topk(min(max_dets, hw * hw), 1)
        keep = top > 0
        img = torch.arange(b)[:, None].expand_as(pos)[keep]
        cell = pos[keep]
        cy, cx = (cell // hw).float(), (cell % hw).float()
        d = torch.exp(ltrb.flatten(2)[img, :, cell]) * STRIDE  # (M, 4)
        ccx, ccy = (cx + 0.5) * STRIDE, (cy + 0.5) * STRIDE
        bx = torch.stack([ccx - d[:, 0], ccy - d[:, 1], ccx + d[:, 2], ccy + d[:, 3]], 1).clamp(0, size)
        parts["image"].append(img + s)
        parts["boxes"].append(bx)
        parts["logits"].append(logits.flatten(2)[img, :, cell])
        parts["conf"].append(conf.flatten(1)[img, cell])
        parts["feat"].append(hid.flatten(2)[img, :, cell])
        parts["roi"].append(_roi_maps(fmap, bx, img, size))
    cat = {k_: torch.cat(v) for k_, v in parts.items()}
    fr = frame[cat["image"]] if frame is not None else None
    return Detections(cat["image"], cat["boxes"], cat["logits"], cat["conf"], images.shape[0], k, background=-1,
                      extra={"features": cat["feat"], "roi_map": cat["roi"]}, frame=fr)
