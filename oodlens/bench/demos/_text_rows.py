"""The detectors of ``oodlens demo text``, by family, and how each is fitted on the MiniLM embeddings:

* zero-shot (topic-name prompts only, no ID rows): MCM, NegLabel, Energy and MaxLogit on similarity logits;
* label-free (ID embeddings, no labels): KNN, one-class Mahalanobis, SSD (cluster-conditioned);
* class-conditional (ID embeddings + topic labels, no head): Mahalanobis (shrinkage covariance), RMDS;
* trained head (a logistic-regression head on the embeddings): MSP, Energy, MaxLogit, GEN, ViM;
* ensemble in the spirit of COOkeD: MCM + the head's MSP + KNN, combined by Fisher's method on p-values
  calibrated on the ID validation split only (``oodlens.fusion.ScoreFusion``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...detectors import Head, create
from ...encoders import similarity_logits
from ...features import Features

#: CLIP's logit scale (100 = 1/0.01), used for the Energy row on cosine similarities
SIM_TEMPERATURE = 0.01
KNN_K = 5


@dataclass(frozen=True)
class Row:
    family: str
    label: str
    detector: str
    params: dict
    inputs: str  # "prompts" | "neglabel" | "similarity" | "features" | "labels" | "head"


ROWS = (
    Row("zero-shot", "MCM (τ=1)", "mcm", {}, "prompts"),
    Row("zero-shot", "NegLabel", "neglabel", {}, "neglabel"),
    Row("zero-shot", "Energy on cos/0.01", "energy", {}, "similarity"),
    Row("zero-shot", "MaxLogit on cos", "maxlogit", {}, "similarity"),
    Row("label-free", f"KNN (k={KNN_K})", "knn", {"k": KNN_K}, "features"),
    Row("label-free", "Mahalanobis, one class", "mahalanobis_one_class", {}, "features"),
    Row("label-free", "SSD (7 clusters of ~22 texts)", "ssd", {"clusters": 7}, "features"),
    Row("class labels", "Mahalanobis (shrinkage)", "mahalanobis", {"covariance": "shrinkage"}, "labels"),
    Row("class labels", "RMDS", "rmds", {"covariance": "shrinkage"}, "labels"),
    Row("trained head", "MSP", "msp", {}, "head"),
    Row("trained head", "Energy", "energy", {}, "head"),
    Row("trained head", "MaxLogit", "maxlogit", {}, "head"),
    Row("trained head", "GEN", "gen", {"M": 7}, "head"),
    Row("trained head", "ViM (dim 64)", "vim", {"dim": 64}, "head"),
)
ENSEMBLE_MEMBERS = ("MCM (τ=1)", f"KNN (k={KNN_K})", "MSP")


def fit_head(x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
             seed: int) -> tuple[Head, float, float]:
    """Multinomial logistic regression on the embeddings, its C chosen on validation accuracy; (head, C, val acc)."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in (1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x.numpy(), y.numpy())
        acc = float((clf.predict(x_val.numpy()) == y_val.numpy()).mean())
        if best is None or acc > best[2]:
            best = (clf, c, acc)
    clf, c, acc = best
    head = Head(torch.as_tensor(clf.coef_, dtype=torch.float32), torch.as_tensor(clf.intercept_, dtype=torch.float32))
    return head, c, acc


def fit_row(row: Row, train: Features, labels: torch.Tensor, head: Head, prompts: torch.Tensor,
            nouns: torch.Tensor, neglabel: dict[str, Any]) -> Any:
    """The fitted detector of ``row`` (every row reads ``features``; head and similarity rows read ``logits``)."""
    params = {**row.params, **(neglabel if row.inputs == "neglabel" else {})}
    det = create(row.detector, **params)
    if row.inputs == "prompts":
        return det.fit(None, prompts=prompts)
    if row.inputs == "neglabel":
        return det.fit(None, prompts=prompts, candidates=nouns)
    if row.inputs == "similarity":
        return det.fit(similarity_logits(train, prompts, temperature=SIM_TEMPERATURE))
    if row.inputs == "features":
        return det.fit(train)
    if row.inputs == "labels":
        return det.fit(train, labels)
    return det.fit(train.merge({"logits": head.logits(train["features"])}), labels, head=head)


def row_inputs(row: Row, x: Features, head: Head, prompts: torch.Tensor) -> Features:
    if row.inputs == "similarity":
        return similarity_logits(x, prompts, temperature=SIM_TEMPERATURE)
    if row.inputs == "head":
        return x.merge({"logits": head.logits(x["features"])})
    return x


def fisher_ensemble(val_scores: dict[str, np.ndarray], test_scores: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Fisher combination of the members' conformal p-values, calibrated on ID validation scores only."""
    from ...fusion import ScoreFusion

    fusion = ScoreFusion(method="fisher").fit({m: val_scores[m] for m in ENSEMBLE_MEMBERS})
    return {name: fusion.score({m: s[m] for m in ENSEMBLE_MEMBERS}).numpy() for name, s in test_scores.items()}
