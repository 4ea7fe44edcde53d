"""Principal-subspace helpers shared by Residual and ViM (Wang et al., CVPR 2022).

Both methods move the origin of the feature space to ``u = −W⁺b`` (W⁺ the Moore–Penrose pseudo-inverse of the
head weight, b its bias): a point where every logit is as close to 0 as the head allows, so that ``z − u`` is what
the head actually "sees". The principal subspace is spanned by the top-``dim`` eigenvectors of the second-moment
matrix ``(1/N) Σ_i (z_i − u)(z_i − u)ᵀ`` (sklearn's ``EmpiricalCovariance(assume_centered=True)`` in the reference
code); the residual of a feature is its projection onto the orthogonal complement, ``(z − u) R`` with ``R`` the
(D, D − dim) matrix of the remaining eigenvectors.

Numerics: the origin, the second moment and the eigendecomposition are computed in float64 (``eigh`` on the
symmetric matrix, where the reference uses the general ``eig``: same vectors, real and orthonormal by
construction). Scoring runs in the input's dtype (float32 for half-precision inputs) on ``z − u``, projecting
directly onto the complement — never ``‖z − u‖² − ‖P(z − u)‖²``, which cancels catastrophically at large norms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import OODLensError
from ._gaussian import second_moment
from .base import Head


#: eigenvalues of the second moment below this fraction of the largest count as zero when finding its rank
RANK_RCOND = 1e-10


def default_principal_dim(d: int) -> int:
    """The ViM paper's rule for the principal dimension: 1000 if D ≥ 2048, 512 if D ≥ 768, else D // 2."""
    if d >= 2048:
        return 1000
    if d >= 768:
        return 512
    return d // 2


def resolve_principal_dim(dim: int | None, d: int) -> int:
    """``dim`` checked against the feature dimension ``d`` (``None`` = :func:`default_principal_dim`)."""
    k = default_principal_dim(d) if dim is None else dim
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k < d:
        raise OODLensError(f"principal dimension (dim) must be an integer in [1, D-1] = [1, {d - 1}], got {k!r}")
    return k


def head_origin(head: Head, d: int) -> torch.Tensor:
    """``u = −W⁺ b`` in float64, shape (D,). Raises if the head does not act on D-dimensional features."""
    w = head.weight.to(torch.float64)
    if w.shape[1] != d:
        raise OODLensError(f"head weight has shape {tuple(w.shape)} but the features have D={d}; "
                           "pass the classifier's last linear layer for these features")
    return -(torch.linalg.pinv(w) @ head.bias.to(w.device, torch.float64))


@dataclass(frozen=True)
class PrincipalStats:
    """Sufficient statistics of a principal subspace about a fixed origin u: the row count, u (D,) and the sum of
    outer products M = Σ_i (z_i − u)(z_i − u)ᵀ (D, D), float64. The origin is known before any row is read (it
    comes from the head), so shards merge by plain addition: a fit from merged shards equals the fit on all rows
    (``oodlens.scale``); the one-process fit is the fit from the statistics of all rows (``principal_stats``)."""

    count: torch.Tensor
    origin: torch.Tensor
    moment: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.origin.shape[0])

    def merge(self, other: "PrincipalStats") -> "PrincipalStats":
        if other.dim != self.dim:
            raise OODLensError(f"cannot merge principal statistics of {self.dim}-dimensional features with "
                               f"{other.dim}-dimensional ones: every shard must have the same feature width")
        if not torch.equal(self.origin, other.origin.to(self.origin.device)):
            raise OODLensError("cannot merge principal statistics taken about different origins (different heads)")
        return PrincipalStats(self.count + other.count, self.origin, self.moment + other.moment)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"count": self.count, "origin": self.origin, "moment": self.moment}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "PrincipalStats":
        return cls(t["count"].to(torch.float64), t["origin"].to(torch.float64), t["moment"].to(torch.float64))


def principal_stats(z: torch.Tensor, origin: torch.Tensor) -> PrincipalStats:
    """:class:`PrincipalStats` of the rows ``z`` (N, D) about ``origin`` (float64 blocks, no float64 copy of z)."""
    origin = origin.to(z.device, torch.float64)
    n = z.shape[0]
    moment = second_moment(z, lambda i, j: origin) * n if n else z.new_zeros(z.shape[1], z.shape[1], dtype=torch.float64)
    return PrincipalStats(torch.tensor(float(n), dtype=torch.float64), origin, moment)


def residual_basis_from(stats: PrincipalStats, dim: int) -> torch.Tensor:
    """Orthonormal basis (D, D − dim), float64, of the complement of the top-``dim`` eigenvectors of M / N."""
    if not float(stats.count) > 0:
        raise OODLensError("no training rows: the principal subspace is undefined")
    evals, evecs = torch.linalg.eigh(stats.moment / stats.count)  # ascending eigenvalues
    rank = int((evals > RANK_RCOND * float(evals[-1].clamp_min(0))).sum()) if float(evals[-1]) > 0 else 0
    if dim >= rank:
        fix = f"use dim in [1, {rank - 1}] (e.g. dim={max(1, rank // 2)})" if rank >= 2 else \
            "these features cannot be used (they need rank ≥ 2)"
        raise OODLensError(f"the training features span only {rank} dimension(s) about the head's origin −W⁺b "
                           f"(numerical rank of their second moment), so the top-{dim} principal subspace "
                           f"(dim={dim}) is not determined by the data and every residual would be noise; {fix}")
    return evecs[:, : stats.dim - dim].contiguous()


def residual_basis(z: torch.Tensor, origin: torch.Tensor, dim: int) -> torch.Tensor:
    """Orthonormal basis (D, D − dim), float64, of the complement of the top-``dim`` principal subspace of
    ``z − origin`` (second moment about ``origin``, divided by N)."""
    return residual_basis_from(principal_stats(z, origin), dim)


def residual_norm(z: torch.Tensor, origin: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``‖(z − origin) R‖`` per row, in ``z``'s dtype."""
    c = z - origin.to(z.device, z.dtype)
    return torch.linalg.vector_norm(c @ basis.to(z.device, z.dtype), dim=1)
