"""The multimodal pipeline on a CUDA device (skipped without one): training, NP-Mix state, extraction, scoring."""

import pytest
import torch

from oodlens.features import Features
from oodlens.multimodal import (Benchmark, MultimodalClassifier, ModalityWiseDetector, NPMix, TrainConfig, Trainer,
                                a2d_loss, evaluate, mlp_encoder)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def data(n, g, c=4):
    y = torch.randint(0, c, (n,), generator=g)
    pv, pf = torch.eye(c, 6) * 4, torch.eye(c, 5) * 4
    return {"video": pv[y] + torch.randn(n, 6, generator=g), "flow": pf[y] + torch.randn(n, 5, generator=g)}, y


@cuda
def test_training_and_scoring_on_cuda(tmp_path):
    g = torch.Generator().manual_seed(0)
    (xtr, ytr), (xva, yva), (xte, yte), (xood, _) = (data(n, g) for n in (256, 64, 64, 64))
    xood = {k: v + 5 for k, v in xood.items()}
    torch.manual_seed(0)
    model = MultimodalClassifier({"video": mlp_encoder(6, 16, 8), "flow": None}, {"video": 8, "flow": 5}, 4)
    cfg = TrainConfig.preset("a2d_npmix", epochs=4, batch_size=16, lr=1e-2, start_epoch=1, sample_number=8, seed=3)
    tr = Trainer(model, cfg, device="cuda", progress=False)
    res = tr.fit(xtr, ytr, xva, yva, checkpoint=tmp_path / "m.safetensors")
    assert next(model.parameters()).is_cuda and tr.npmix.queue.is_cuda and tr.npmix.full
    assert res.best_val_acc > 0.8
    feats = {k: model.extract(v) for k, v in {"train": xtr, "val": xva, "test": xte, "ood": xood}.items()}
    bench = Benchmark(feats["train"], ytr, feats["val"], yva, feats["test"], yte, {"ood": feats["ood"]}, {"ood": "far"})
    df, acc = evaluate(bench, ["msp", "mahalanobis"], heads=model.all_heads())
    assert acc["fused"] > 0.8 and len(df) == 4
    assert (df[df.detector == "mahalanobis"]["auroc"] > 0.9).all()  # shifted inputs: far in feature space
    # detectors follow the device of the features
    gpu = {k: v.cuda() for k, v in feats["test"].items()}
    mw = ModalityWiseDetector("energy", ["video", "flow"]).fit(feats["train"], ytr, heads=model.all_heads())
    mw.calibrate(feats["val"])
    assert torch.allclose(mw.score(Features(gpu)).cpu(), mw.score(feats["test"]), atol=1e-4)


@cuda
def test_losses_and_npmix_on_cuda_half():
    logits = [torch.randn(8, 5, device="cuda").half() for _ in range(2)]
    y = torch.randint(0, 5, (8,), device="cuda")
    assert torch.isfinite(a2d_loss([l.float() for l in logits], y))
    mix = NPMix(3, 4, sample_number=2, device="cuda")
    e, lab = torch.randn(6, 4, device="cuda").half(), torch.tensor([0, 1, 2, 0, 1, 2], device="cuda")
    mix.push(e, lab)
    assert mix.full and mix.sample().outliers.is_cuda
