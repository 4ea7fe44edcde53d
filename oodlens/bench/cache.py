"""A folder of cached splits: features (safetensors), labels, and the model's weights, keyed by a version string.
A second run with the same key loads instead of recomputing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..features import Features
from ..safetensors_io import load_tensors, save_tensors


class SplitCache:
    def __init__(self, root: str | os.PathLike, key: str):
        self.folder = Path(root) / key
        self.key = key

    @property
    def complete(self) -> bool:
        meta = self.folder / "meta.json"
        return meta.is_file() and json.loads(meta.read_text()).get("key") == self.key

    def save(self, features: Mapping[str, Features], labels: Mapping[str, torch.Tensor], model: nn.Module | None,
             extra: Mapping[str, object] | None = None) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        for i, (name, feats) in enumerate(features.items()):
            feats.save(self.folder / f"split{i:03d}.safetensors", metadata={"split": name})
        save_tensors(dict(labels), self.folder / "labels.safetensors")
        if model is not None:
            save_tensors(model.state_dict(), self.folder / "model.safetensors")
        meta = {"key": self.key, "splits": list(features), "extra": dict(extra or {})}
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks completeness

    def load(self, model: nn.Module | None = None) -> tuple[dict[str, Features], dict[str, torch.Tensor], dict]:
        meta = json.loads((self.folder / "meta.json").read_text())
        features = {name: Features.load(self.folder / f"split{i:03d}.safetensors") for i, name in enumerate(meta["splits"])}
        labels, _ = load_tensors(self.folder / "labels.safetensors", mmap=False)
        if model is not None:
            state, _ = load_tensors(self.folder / "model.safetensors", mmap=False)
            model.load_state_dict(state)
            model.eval()
        return features, labels, meta["extra"]
