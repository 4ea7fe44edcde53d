"""NegLabel (Jiang et al., ICLR 2024, "Negative Label Guided OOD Detection with Pretrained Vision-Language Models").

Negative mining (NegMining): each candidate label c̃ of a large vocabulary (WordNet's nouns by default, embedded
with the same prompt template as the ID classes) is ranked by the η-quantile of its similarities to the K ID
prompts, q(c̃) = quantile_η{cos(c̃, t_k)}; the M candidates with the *lowest* q — the farthest from every ID label
— become the negative labels ñ_1..ñ_M.

Score with grouping: the negatives are shuffled (fixed seed) and cut into G groups of ⌊M/G⌋ (the remainder is
dropped); per group

    S_g(x) = Σ_k e^{cos(x,t_k)/τ} / ( Σ_k e^{cos(x,t_k)/τ} + Σ_{j∈g} e^{cos(x,ñ_j)/τ} ),

and ``score(x) = − mean_g S_g(x)`` (higher = more OOD). Defaults from the reference code (XueJiang16/NegLabel,
``custom_config/clip.py`` and ``mmcls/models/ood/clip_ood.py``): η = 0.95 (``pencentile``), M = 10 000 (the paper's
figure; the code keeps 15 % of its ~70k WordNet nouns), G = 100 groups (``ngroup``), τ = 0.01 (``t=1`` on
100·cos), shuffle seed 0.

Fit: ``fit(prompts=<ID prompt embeddings>, candidates=<(V, D) embeddings of the vocabulary>)``, or
``candidates=<a function list[str] -> (V, D)>`` that NegLabel calls on ``template.format(word)`` for the words
of ``vocabulary`` (``"wordnet"``: the 117 798 WordNet 3.0 nouns shipped in ``oodlens.data``; ``subsample`` draws
that many of them with ``seed`` first, as the reference's ``neg_subsample``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import torch

from .._checks import as_float, check_finite
from ..encoders.clip import prompt_texts
from ..encoders.zero_shot import cosine, unit
from ..errors import OODLensError
from ._zero_shot import check_positive, id_prompts
from .base import Detector


def vocabulary_words(vocabulary: str | Sequence[str], subsample: int | None, seed: int) -> list[str]:
    """The candidate words: WordNet's nouns or a given list, optionally a seeded random subsample."""
    if isinstance(vocabulary, str):
        if vocabulary != "wordnet":
            raise OODLensError(f"vocabulary must be 'wordnet' or a list of words, got {vocabulary!r}")
        from ..data import wordnet_nouns

        words = list(wordnet_nouns())
    else:
        words = list(dict.fromkeys(str(w) for w in vocabulary))
    if subsample is not None and subsample < len(words):
        g = torch.Generator().manual_seed(int(seed))
        words = [words[i] for i in torch.randperm(len(words), generator=g)[:int(subsample)].sort().values.tolist()]
    return words


def mine_negatives(candidates: torch.Tensor, prompts: torch.Tensor, n: int, percentile: float,
                   block: int = 1024) -> torch.Tensor:
    """Indices of the ``n`` candidates with the lowest ``percentile``-quantile cosine similarity to the prompts."""
    q = torch.cat([torch.quantile(cosine(candidates[i:i + block], prompts), percentile, dim=1)
                   for i in range(0, candidates.shape[0], block)])
    return torch.argsort(q, stable=True)[:n]


class NegLabel(Detector):
    name = "neglabel"
    needs_prompts = True
    param_grid = {"groups": [1, 10, 100], "temperature": [0.01, 0.05]}
    score_only_params = frozenset({"temperature", "groups"})

    def __init__(self, n_negatives: int = 10000, percentile: float = 0.95, groups: int = 100,
                 temperature: float = 0.01, vocabulary: str | list = "wordnet", template: str = "a photo of a {}.",
                 subsample: int | None = None, seed: int = 0, features: str = "features"):
        self.n_negatives = n_negatives
        self.percentile = percentile
        self.groups = groups
        self.temperature = temperature
        self.vocabulary = vocabulary
        self.template = template
        self.subsample = subsample
        self.seed = seed
        self.features = features

    def required_features(self) -> tuple[str, ...]:
        return (self.features,)

    def fit(self, train: Any = None, labels: Any = None, head: Any = None, model: Any = None, prompts: Any = None,
            candidates: torch.Tensor | Callable[[list[str]], Any] | None = None) -> "NegLabel":
        """As :meth:`Detector.fit`, plus ``candidates``: the vocabulary's embeddings (V, D), or a function that
        embeds a list of prompt texts (called on ``template.format(w)`` for the vocabulary's words)."""
        self._candidates = candidates
        try:
            return super().fit(train, labels, head, model, prompts=prompts)  # type: ignore[return-value]
        finally:
            self._candidates = None

    def _candidate_embeddings(self, width: int) -> tuple[torch.Tensor, list[str] | None]:
        c = self._candidates
        words = None
        if c is None:
            warnings.warn("NegLabel got no candidates=...: using seeded random unit vectors as candidate labels (a "
                          "stand-in for tests). Pass candidates= the encoder's embeddings of the vocabulary, or a "
                          "function that embeds texts.", UserWarning, stacklevel=4)
            g = torch.Generator().manual_seed(int(self.seed))
            c = torch.randn(max(4 * int(self.n_negatives), 1000), width, generator=g)
        elif callable(c):
            words = vocabulary_words(self.vocabulary, self.subsample, self.seed)
            c = c(prompt_texts(words, self.template))  # checks the template's single {} (else one prompt for all)
        c = as_float(c, "candidates").detach()
        if c.ndim != 2 or c.shape[1] != width:
            raise OODLensError(f"candidates must be (V, {width}) embeddings, got shape {tuple(c.shape)}")
        check_finite(c, "candidates")
        if words is not None and len(words) != c.shape[0]:
            raise OODLensError(f"the candidates function returned {c.shape[0]} rows for {len(words)} words")
        return c, words

    def _fit(self, train, labels, head, model) -> None:
        check_positive(self.temperature, "temperature")
        n, g = int(self.n_negatives), int(self.groups)
        if n < 1 or g < 1 or n < g:
            raise OODLensError(f"need n_negatives ≥ groups ≥ 1, got n_negatives={self.n_negatives}, groups={self.groups}")
        if not 0.0 <= float(self.percentile) <= 1.0:
            raise OODLensError(f"percentile must be in [0, 1], got {self.percentile}")
        self.concepts_ = unit(id_prompts(self, train, labels, head).float())
        cand, words = self._candidate_embeddings(self.concepts_.shape[1])
        if cand.shape[0] < n:
            raise OODLensError(f"only {cand.shape[0]} candidate labels for n_negatives={n}: lower n_negatives or give "
                               "a larger vocabulary")
        idx = mine_negatives(cand, self.concepts_, n, float(self.percentile))
        self.negatives_ = unit(cand[idx])
        self.negative_words_ = [words[i] for i in idx.tolist()] if words is not None else []

    def _score(self, x) -> torch.Tensor:
        t = float(self.temperature)
        g = int(self.groups)
        neg = self.negatives_
        per = neg.shape[0] // g
        order = torch.randperm(neg.shape[0], generator=torch.Generator().manual_seed(int(self.seed)))
        neg = neg[order.to(neg.device)][:per * g]
        z = x[self.features]
        out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
        rows = max(1, (1 << 22) // max(1, neg.shape[0]))  # ≤ 4M similarities at a time
        for i in range(0, z.shape[0], rows):
            zi = z[i:i + rows]
            pos = torch.logsumexp(cosine(zi, self.concepts_) / t, dim=1)  # log Σ_k e^{s_k/τ}
            negs = torch.logsumexp((cosine(zi, neg) / t).view(zi.shape[0], g, per), dim=2)  # per group
            out[i:i + rows] = -torch.sigmoid(pos[:, None] - negs).mean(1)  # S_g = 1 / (1 + e^{neg_g − pos})
        return out
