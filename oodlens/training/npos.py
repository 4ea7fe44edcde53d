"""NPOS — Non-Parametric Outlier Synthesis (Tao, Du, Zhu, Li, ICLR 2023).

Per class c a queue of the last S penultimate features; with ẑ = z / ‖z‖ and d_K(q) the distance from q̂ to its
K-th nearest neighbour among the class's normalised queue (the query itself counts when it is in the queue):

1. boundary points: the ``select`` queue features with the largest d_K; ``pick_nums`` of them drawn at random;
2. candidates around each picked point b: b + σ·ε, ε ~ N(0, I), ``sample_from`` of them (σ = ``cov_mat``;
   one shared set of ε per step, as in the reference);
3. keep, per picked point, the ``id_points_num`` candidates with the largest d_K: outliers v beyond the boundary.

An MLP g (D → 128 → 1) on penultimate features learns ID (1) vs synthesized outliers (0) by binary cross-entropy:

    L = L_ID + β · BCE([g(z); g(v)], [1; 0])

Reference defaults (CIFAR, ``train_KNN.py``): S = 1000, K = 100, ``select`` = 50, ``pick_nums`` = 2,
``id_points_num`` = 2, ``sample_from`` = 600, σ = 0.1, β = 0.1, the MLP's learning rate × 0.1, synthesis from
epoch 0 (once every queue is full). The reference's ID loss is CIDER's (compactness + dispersion on a projection
head) while fine-tuning a CIDER model; here L_ID is cross-entropy so that every method trains the same network —
a stated deviation. The paper scores with KNN distance on normalised features: this method's own score is the
registered ``knn`` detector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OODLensError
from ._queue import ClassQueue, QueuedSynthesis
from .base import StepContext, check_numbers


def kth_distance(queries: Tensor, bank: Tensor, k: int) -> Tensor:
    """Batched: distance from each normalised query (B, Q, D) to its k-th nearest normalised bank row (B, S, D)."""
    q = F.normalize(queries, dim=-1)
    b = F.normalize(bank, dim=-1)
    d = torch.cdist(q, b)  # (B, Q, S): B·Q·S numbers, bounded by the queue size
    return d.topk(k, dim=-1, largest=False).values[..., -1]


def synthesize_outliers(queue: Tensor, noise: Tensor, k: int = 100, select: int = 50, pick_nums: int = 2,
                        id_points_num: int = 2, cov_mat: float = 0.1,
                        generator: torch.Generator | None = None) -> Tensor:
    """NPOS outliers from a (C, S, D) queue and (sample_from, D) standard-normal ``noise``: (C·pick·keep, D)."""
    c, s, d = queue.shape
    if not (1 <= k <= s and 1 <= select <= s and 1 <= pick_nums <= select and 1 <= id_points_num <= noise.shape[0]):
        raise OODLensError(f"NPOS needs 1 <= K, select <= S={s}, pick_nums <= select, id_points_num <= sample_from; "
                           f"got K={k}, select={select}, pick_nums={pick_nums}, id_points_num={id_points_num}")
    boundary = kth_distance(queue, queue, k).topk(select, dim=1).indices  # (C, select)
    choice = torch.rand(c, select, generator=generator).argsort(dim=1)[:, :pick_nums].to(boundary.device)
    picked = queue.gather(1, boundary.gather(1, choice)[..., None].expand(-1, -1, d))  # (C, pick, D)
    cand = picked[:, :, None, :] + cov_mat * noise.to(queue)[None, None]  # (C, pick, sample_from, D)
    dk = kth_distance(cand.reshape(c, -1, d), queue, k).reshape(c, pick_nums, -1)
    keep = dk.topk(id_points_num, dim=2).indices  # (C, pick, keep)
    return cand.gather(2, keep[..., None].expand(-1, -1, -1, d)).reshape(-1, d)


def binary_outlier_loss(g_in: Tensor, g_out: Tensor) -> Tensor:
    """BCE-with-logits of the MLP outputs, ID → 1, outliers → 0 (mean over all rows)."""
    logits = torch.cat([g_in.reshape(-1), g_out.reshape(-1)])
    labels = torch.cat([torch.ones(g_in.numel()), torch.zeros(g_out.numel())]).to(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


class NPOS(QueuedSynthesis):
    name = "npos"
    term_name = "outlier_bce"
    paper = "Tao et al., ICLR 2023"
    score = ("knn", {})

    def __init__(self, sample_number: int = 1000, k: int = 100, select: int = 50, pick_nums: int = 2,
                 id_points_num: int = 2, sample_from: int = 600, cov_mat: float = 0.1, loss_weight: float = 0.1,
                 start_epoch: int = 0, mlp_dim: int = 128, mlp_lr_scale: float = 0.1):
        check_numbers("NPOS", ints=dict(sample_number=sample_number, k=k, select=select, pick_nums=pick_nums,
                                        id_points_num=id_points_num, sample_from=sample_from, start_epoch=start_epoch,
                                        mlp_dim=mlp_dim),
                      floats=dict(cov_mat=cov_mat, loss_weight=loss_weight, mlp_lr_scale=mlp_lr_scale))
        if min(sample_number, k, select, pick_nums, id_points_num, sample_from, mlp_dim) < 1:
            raise OODLensError("NPOS sizes must be >= 1")
        if cov_mat <= 0 or loss_weight < 0 or start_epoch < 0 or mlp_lr_scale <= 0:
            raise OODLensError("NPOS needs cov_mat > 0, loss_weight >= 0, start_epoch >= 0, mlp_lr_scale > 0")
        self.sample_number, self.k, self.select, self.pick_nums = int(sample_number), int(k), int(select), int(pick_nums)
        self.id_points_num, self.sample_from, self.cov_mat = int(id_points_num), int(sample_from), float(cov_mat)
        self.loss_weight, self.start_epoch, self.mlp_dim = float(loss_weight), int(start_epoch), int(mlp_dim)
        self.mlp_lr_scale = float(mlp_lr_scale)

    def setup(self, model, head_name, num_classes, feature_dim) -> None:
        device = self._make_queue(model, num_classes, feature_dim)
        self.mlp = nn.Sequential(nn.Linear(feature_dim, self.mlp_dim), nn.ReLU(), nn.Linear(self.mlp_dim, 1)).to(device)

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.mlp.parameters()), "lr_scale": self.mlp_lr_scale}]

    def outlier_term(self, ctx: StepContext, queue: ClassQueue) -> Tensor:
        noise = torch.randn(self.sample_from, queue.dim, generator=ctx.generator)
        outliers = synthesize_outliers(queue.data, noise, self.k, self.select, self.pick_nums, self.id_points_num,
                                       self.cov_mat, ctx.generator)
        return binary_outlier_loss(self.mlp(ctx.features), self.mlp(outliers))
