"""The shared training loop: reproducible for a seed, best-validation weights, checkpoints, hooks, every method
trains, VOS draws from its Gaussian's low-likelihood tail, the class queue keeps the reference's contents."""

import pytest
import torch
from torch import nn

from oodlens.errors import OODLensError
from oodlens.training import (METHODS, VOS, AbeT, AbeTHead, ClassifierConfig, CrossEntropy, MixtureOutlierExposure,
                              OutlierExposure, class_gaussians, load_checkpoint, sample_virtual_outliers,
                              train_classifier)
from oodlens.training._queue import ClassQueue


class Tiny(nn.Module):
    def __init__(self, d=4, h=16, c=3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, h), nn.ReLU())
        self.fc = nn.Linear(h, c)

    def forward(self, x):
        return self.fc(self.body(x))


def blobs(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return centres[y] + 0.7 * torch.randn(n, 4, generator=g), y


SMALL = {"energy_ft": dict(m_in=-6.0, m_out=-2.0),  # margins sit on the logit scale: the paper's are CIFAR's
         "vos": dict(sample_number=4, sample_from=50, select=1, start_epoch=1),
         "npos": dict(sample_number=6, k=2, select=3, pick_nums=2, id_points_num=2, sample_from=20, start_epoch=1)}


def run(method, seed=0, epochs=6, **kw):
    x, y = blobs()
    xv, yv = blobs(30, 1)
    torch.manual_seed(0)
    model = Tiny()
    outliers = torch.randn(40, 4) * 3
    res = train_classifier(model, x, y, xv, yv, method, ClassifierConfig(epochs=epochs, batch_size=16, lr=3e-2, seed=seed),
                           head="fc", outliers=outliers, progress=False, **kw)
    return model, res


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_and_is_reproducible(name):
    make = lambda: METHODS[name](**SMALL.get(name, {}))  # noqa: E731
    m1, r1 = run(make())
    m2, r2 = run(make())
    assert r1.history == r2.history
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert r1.best_val_acc > 0.8  # three well-separated blobs
    assert r1.best_val_acc == max(h["val_acc"] for h in r1.history)
    _, r3 = run(make(), seed=1)
    assert r3.history != r1.history


def test_method_terms_start_when_configured():
    _, r = run(VOS(**SMALL["vos"]), epochs=3)
    _, base = run(CrossEntropy(), epochs=3)
    assert r.history[0]["train_loss"] == base.history[0]["train_loss"]  # epoch 0: before start_epoch, plain CE
    assert r.history[2]["train_loss"] != base.history[2]["train_loss"]
    model, _ = run(AbeT(), epochs=1)
    assert isinstance(model.fc, AbeTHead)


def test_checkpoint_round_trip_and_validation(tmp_path):
    path = tmp_path / "w.safetensors"
    model, res = run(OutlierExposure(), checkpoint=path)
    other = Tiny()
    meta = load_checkpoint(other, path)
    assert meta["best_epoch"] == res.best_epoch and meta["method"]["name"] == "oe"
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(OODLensError, match="shape"):
        load_checkpoint(Tiny(h=5), path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(OODLensError, match="bad.safetensors"):
        load_checkpoint(Tiny(), bad)
    with pytest.raises(OODLensError, match="does not exist"):
        load_checkpoint(Tiny(), tmp_path / "none.safetensors")


def test_hooks_and_input_errors():
    seen = []

    def extra(ctx):
        seen.append(ctx.outlier_inputs.shape[0])
        return 0.0 * ctx.logits.sum()

    run(MixtureOutlierExposure(), epochs=1, extra_losses=[extra])
    assert seen and all(s == 16 for s in seen[:-1])
    x, y = blobs()
    with pytest.raises(OODLensError, match="outliers"):
        train_classifier(Tiny(), x, y, x, y, OutlierExposure(), progress=False)
    with pytest.raises(OODLensError, match="labels"):
        train_classifier(Tiny(), x, y + 5, x, y, progress=False)
    with pytest.raises(OODLensError, match="submodule"):
        train_classifier(Tiny(), x, y, x, y, head="nope", progress=False)
    with pytest.raises(OODLensError, match="non-finite"):
        train_classifier(Tiny(), x.clone().fill_(float("nan")), y, x, y, progress=False)


def test_vos_samples_lie_in_the_fitted_gaussians_low_likelihood_tail():
    g = torch.Generator().manual_seed(0)
    d, c = 3, 40
    queue = torch.randn(c, 200, d, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    mu, cov = class_gaussians(queue)
    torch.manual_seed(0)
    v = sample_virtual_outliers(mu, cov, sample_from=2000, select=1)  # one per class: 40 independent tail draws
    prec = torch.linalg.inv(cov)
    d2 = torch.einsum("nd,de,ne->n", v - mu, prec, v - mu)
    fresh = torch.distributions.MultivariateNormal(mu[0], cov).sample((200000,))
    f2 = torch.einsum("nd,de,ne->n", fresh - mu[0], prec, fresh - mu[0])
    q99 = torch.quantile(f2, 0.99)
    # the minimum-likelihood draw of 2000 lies beyond the 99 % likelihood contour unless 0.99^2000 ≈ 2e-9 happens
    assert bool((d2 > q99).all())
    # and its squared Mahalanobis radius matches the expected maximum of 2000 χ²_3 draws (≈ 17.9, spread ≈ 2.4)
    assert 15.5 < float(d2.mean()) < 20.5
    # the tail is reached in every direction: no systematic offset from the class mean
    z = torch.linalg.solve(torch.linalg.cholesky(cov), (v - mu).T).T / d2.sqrt()[:, None]
    assert float(z.mean(0).abs().max()) < 0.45


def test_class_queue_matches_reference_semantics():
    q = ClassQueue(2, 3, 1)
    ref = {0: [], 1: []}
    g = torch.Generator().manual_seed(3)
    for _ in range(6):
        y = torch.randint(0, 2, (4,), generator=g)
        f = torch.randn(4, 1, generator=g)
        full = all(len(v) == 3 for v in ref.values())
        for yi, fi in zip(y.tolist(), f[:, 0].tolist()):  # the reference: fill until every class is full, then FIFO
            if not full:
                if len(ref[yi]) < 3:
                    ref[yi].append(fi)
            else:
                ref[yi] = ref[yi][1:] + [fi]
        q.push(f, y)
        for c in range(2):
            got = sorted(q.data[c, : int(q.count[c]), 0].tolist())
            assert got == pytest.approx(sorted(ref[c]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_follows_the_argument():
    x, y = blobs()
    model = Tiny()
    res = train_classifier(model, x, y, x, y, VOS(**SMALL["vos"]), ClassifierConfig(epochs=2, batch_size=16),
                           device="cuda", progress=False)
    assert next(model.parameters()).device.type == "cuda" and res.best_val_acc > 0.5


def test_bad_inputs_found_by_review_are_clear_errors():
    x, y = blobs()
    cfg = ClassifierConfig(epochs=1, batch_size=16)
    cases = [  # each was silently accepted (labels truncated by .long()) or a bare torch exception
        (dict(y=y.float() + 0.5), "integer class indices"),
        (dict(y=torch.full((120,), float("nan"))), "integer class indices"),
        (dict(y=y > 0), "integer class indices"),
        (dict(x=[["a"] * 4] * 120), "numeric"),
        (dict(x=torch.randn(120, 5)), r"cannot run on the training inputs \(rows of shape \(5,\)\)"),
        (dict(xv=torch.randn(30, 5)), "cannot run on the validation inputs"),
        (dict(device="gpu"), "not a torch device name"),
    ]
    for kw, msg in cases:
        args = dict(x=x, y=y, xv=x[:30], yv=y[:30], device="cpu")
        args.update(kw)
        with pytest.raises(OODLensError, match=msg):
            train_classifier(Tiny(), args["x"], args["y"], args["xv"], args["yv"], config=cfg, device=args["device"],
                             progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(OODLensError, match="no CUDA device"):
            train_classifier(Tiny(), x, y, x, y, config=cfg, device="cuda", progress=False)
    for kw in (dict(epochs="5"), dict(epochs=1.5), dict(lr=float("inf")), dict(weight_decay=-1.0),
               dict(weight_decay=float("nan")), dict(outlier_ratio=float("inf")), dict(batch_size=0)):
        with pytest.raises(OODLensError, match=next(iter(kw))):
            ClassifierConfig(**kw)
    import numpy as np

    assert ClassifierConfig(epochs=np.int64(2), seed=np.int64(3), lr=np.float32(0.1)).epochs == 2


def test_method_parameters_are_type_checked():
    # was: ValueError / TypeError from int() or '<', or NaN accepted (VOS loss_weight, OE weight, AbeT eps, ...)
    for name, cls in METHODS.items():
        import inspect

        for p in inspect.signature(cls).parameters.values():
            if isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
                for bad in (float("nan"), "x"):
                    with pytest.raises(OODLensError, match=p.name):
                        cls(**{p.name: bad})
    with pytest.raises(OODLensError, match="integer"):
        VOS(sample_number=2.5)
    with pytest.raises(OODLensError, match="eps"):
        AbeT(eps=-1.0)


def test_probe_sees_training_rows_after_augment():
    x, y = blobs()
    wide = torch.cat([x, torch.zeros(120, 2)], 1)  # stored wider; the augmentation crops to the model's width

    def crop(xb, gen):
        return xb[:, :4]

    res = train_classifier(Tiny(), wide, y, x[:30], y[:30], config=ClassifierConfig(epochs=1, batch_size=16),
                           augment=crop, progress=False)
    assert 0.0 <= res.best_val_acc <= 1.0
