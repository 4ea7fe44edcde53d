"""Property-based fuzzing of ``oodlens.extract`` (issue 10, items 1 and 5): lists of batches of random sizes,
models returning a tensor, a tuple, a dict or an output object, float16/float64/integer inputs, empty data and
inputs of the wrong rank. Either one clear OODLensError or the model's own logits for every row, in order."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from fuzz_strategies import outcome, scaled
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from oodlens import extract

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Output:  # a HuggingFace-style output object
    logits: torch.Tensor
    hidden: torch.Tensor


class Net(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.body = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        h = self.body(x)
        y = self.fc(h)
        if self.kind == "tuple":
            return y, h
        if self.kind == "dict":
            return {"logits": y, "hidden": h}
        if self.kind == "object":
            return Output(y, h)
        return y


batch_sizes = st.lists(st.integers(0, 5), min_size=0, max_size=4)
output_kinds = st.sampled_from(["tensor", "tuple", "dict", "object"])
forms = st.sampled_from(["list", "tensor", "loader"])


@scaled(ci=25, long=400)
@given(sizes=batch_sizes, kind=output_kinds, form=forms, wrong_rank=st.booleans())
def test_extract_gives_every_row_or_a_clear_error(sizes, kind, form, wrong_rank):
    _check_extract(sizes, kind, torch.float32, form, wrong_rank)


@scaled(ci=10, long=200)
@given(sizes=batch_sizes, kind=output_kinds, form=forms,
       dtype=st.sampled_from([torch.float64, torch.float16, torch.int64]))
def test_extract_inputs_of_another_dtype(sizes, kind, form, dtype):
    _check_extract(sizes, kind, dtype, form, False)


def _check_extract(sizes, kind, dtype, form, wrong_rank):
    torch.manual_seed(0)
    model = Net(kind).eval()
    g = torch.Generator().manual_seed(len(sizes))
    batches = [(torch.randn(n, 6, generator=g) * 3).to(dtype) for n in sizes]
    if wrong_rank and batches:
        batches[0] = batches[0][:, :, None]
    if form == "list":
        data = batches
    elif form == "tensor":
        data = torch.cat(batches) if batches and not wrong_rank else torch.zeros(0, 6)
    else:
        data = torch.utils.data.DataLoader(torch.cat(batches) if batches and not wrong_rank else torch.zeros(0, 6),
                                           batch_size=2)
    status, result = outcome(lambda: extract(model, data, progress=False))  # the model's own errors come back clear
    total = sum(sizes)
    if status == "error":
        # integer inputs to a float model fail in the model: extract names the batch and the inputs' dtype
        assert total == 0 or wrong_rank or not dtype.is_floating_point, result
        if total and not wrong_rank:
            assert "int64" in str(result), result
        return
    assert dtype.is_floating_point or total == 0
    feats, _ = result
    x = torch.cat(batches).float() if form != "tensor" or total else torch.zeros(0, 6)
    assert feats.n == total and "logits" in feats
    with torch.no_grad():
        ref = model.fc(model.body(x))
    torch.testing.assert_close(feats["logits"].float(), ref, rtol=1e-4, atol=1e-4)
