"""Model blocks, trainer determinism, best-validation checkpointing (safetensors), presets and loss assembly."""

import pytest
import torch

from oodlens.errors import OODLensError
from oodlens.multimodal import MultimodalClassifier, TrainConfig, Trainer, mlp_encoder, train
from oodlens.multimodal.losses import a2d_loss


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: extra intra-op threads only add synchronisation on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def toy_data(n=96, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    pv, pf = torch.randn(c, 6, generator=g) * 2, torch.randn(c, 5, generator=g) * 2
    x = {"video": pv[y] + torch.randn(n, 6, generator=g), "flow": pf[y] + torch.randn(n, 5, generator=g)}
    return x, y


def make_model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return MultimodalClassifier({"video": mlp_encoder(6, 16, 8), "flow": None}, {"video": 8, "flow": 5}, 4,
                                dropout=dropout)


def test_forward_and_extract_names():
    model = make_model()
    x, _ = toy_data(10)
    out = model(x)
    assert out.fused_logits.shape == (10, 4) and out.logits["flow"].shape == (10, 4)
    assert out.embeddings["flow"] is x["flow"] or torch.equal(out.embeddings["flow"], x["flow"])  # identity encoder
    w, b = model.fused_head.weight, model.fused_head.bias
    assert torch.allclose(out.fused_logits, torch.cat([out.embeddings["video"], x["flow"]], 1) @ w.T + b, atol=1e-6)
    feats = model.extract(x, batch_size=3)
    assert set(feats) == {"logits", "features", "video/logits", "video/features", "flow/logits", "flow/features"}
    assert feats["features"].shape == (10, 13)
    assert torch.allclose(feats["logits"], out.fused_logits, atol=1e-6)
    assert torch.allclose(model.head_of("video").logits(feats["video/features"]), feats["video/logits"], atol=1e-5)
    parts = model.split(feats["features"])
    assert [p.shape[1] for p in parts] == [8, 5]


def test_model_errors():
    with pytest.raises(OODLensError, match="at least 2 modalities"):
        MultimodalClassifier({"video": None}, {"video": 3}, 3)
    with pytest.raises(OODLensError, match="dimension"):
        MultimodalClassifier({"video": None, "flow": None}, {"video": 3}, 3)
    model = make_model()
    with pytest.raises(OODLensError, match="lack modalities"):
        model({"video": torch.randn(2, 6)})
    with pytest.raises(OODLensError, match="expected"):
        model({"video": torch.randn(2, 6), "flow": torch.randn(2, 7)})


def trained_weights(cfg, seed=0):
    x, y = toy_data()
    xv, yv = toy_data(40, seed=1)
    model = make_model(seed, dropout=0.2)
    res = train(model, x, y, xv, yv, cfg, progress=False)
    return model, res


@pytest.mark.parametrize("method", ["baseline", "a2d_npmix", "a2d_feature_mixing"])
def test_training_is_deterministic(method):
    cfg = TrainConfig.preset(method, epochs=3, batch_size=16, lr=1e-2, start_epoch=1, sample_number=4, seed=5)
    m1, r1 = trained_weights(cfg)
    m2, r2 = trained_weights(cfg)
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert r1.history == r2.history
    assert len(r1.history) == 3 and 0 <= r1.best_epoch < 3
    assert r1.best_val_acc == max(h["val_acc"] for h in r1.history)


def test_outlier_terms_appear_after_start_epoch():
    cfg = TrainConfig.preset("a2d_npmix", epochs=1, batch_size=16, start_epoch=1, sample_number=2)
    model = make_model()
    tr = Trainer(model, cfg, progress=False)
    x, y = toy_data(32)
    b = {k: v[:16] for k, v in x.items()}
    t0 = tr.losses(b, y[:16], epoch=0)
    assert "ood_entropy" not in t0 and "a2d" in t0
    tr.losses(b, y[:16], epoch=1)  # fills / pushes
    tr.npmix.count.fill_(2)  # force full queues
    t1 = tr.losses(b, y[:16], epoch=1)
    assert {"ood_entropy", "ood_disc"} <= set(t1)
    want = t1["ce"] + 0.5 * t1["a2d"] + 0.5 * t1["ood_entropy"] + 0.5 * t1["ood_disc"]
    assert torch.allclose(t1["loss"], want)


def test_single_pred_and_a2d_assembly():
    cfg = TrainConfig.preset("a2d")
    assert cfg.single_pred and cfg.a2d and cfg.a2d_ratio == 1.0 and cfg.outliers is None
    model = make_model()
    model.eval()  # no dropout: compare exactly
    tr = Trainer(model, cfg, progress=False)
    x, y = toy_data(8)
    t = tr.losses(x, y, epoch=0)
    out = model(x)
    ce = torch.nn.functional.cross_entropy
    want_ce = (ce(out.fused_logits, y) + ce(out.logits["video"], y) + ce(out.logits["flow"], y)) / 3
    assert torch.allclose(t["ce"], want_ce)
    assert torch.allclose(t["loss"], want_ce + 1.0 * a2d_loss([out.logits["video"], out.logits["flow"]], y))


def test_defaults_are_multiood_argparse_defaults():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.lr, c.optimizer) == (50, 16, 1e-4, "adam")
    assert (c.a2d_ratio, c.a2d_ratio_ood, c.ood_entropy_ratio) == (0.5, 0.5, 0.5)
    assert (c.start_epoch, c.sample_number, c.nn_k, c.mixup_alpha) == (10, 65, 3, 10.0)
    assert TrainConfig.preset("a2d_npmix", ratio=0.1).a2d_ratio_ood == 0.1
    with pytest.raises(OODLensError, match="outliers"):
        TrainConfig(outliers="vos")
    with pytest.raises(OODLensError, match="preset"):
        TrainConfig.preset("magic")


def test_checkpoint_keeps_best_and_round_trips(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2, seed=2)
    x, y = toy_data()
    xv, yv = toy_data(40, seed=1)
    model = make_model()
    path = tmp_path / "mm.safetensors"
    res = train(model, x, y, xv, yv, cfg, progress=False, checkpoint=path)
    head = path.read_bytes()[:8]
    assert len(head) == 8 and b"PK" not in path.read_bytes()[:64]  # a safetensors file, not a zip/pickle
    other = make_model(seed=9)
    meta = other.load_weights(path)
    assert meta["best_val_acc"] == res.best_val_acc and meta["best_epoch"] == res.best_epoch
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k
    # the loaded model's validation accuracy is the best one
    tr = Trainer(other, cfg, progress=False)
    assert tr.accuracy(xv, yv) == pytest.approx(res.best_val_acc)
    wrong = MultimodalClassifier({"video": None, "flow": None}, {"video": 6, "flow": 5}, 4)
    with pytest.raises(OODLensError, match="holds a model"):
        wrong.load_weights(path)


def test_trainer_input_errors():
    model = make_model()
    x, y = toy_data(32)
    with pytest.raises(OODLensError, match="labels must be in"):
        train(model, x, y + 10, x, y, TrainConfig(epochs=1), progress=False)
    bad = dict(x)
    bad["flow"] = bad["flow"].clone()
    bad["flow"][0, 0] = float("nan")
    with pytest.raises(OODLensError, match="non-finite"):
        train(model, bad, y, x, y, TrainConfig(epochs=1), progress=False)
    with pytest.raises(OODLensError, match="fewer than one batch"):
        train(model, {k: v[:4] for k, v in x.items()}, y[:4], x, y, TrainConfig(epochs=1), progress=False)


def test_float16_inputs_train_and_extract():
    x, y = toy_data(48)
    xh = {k: v.half() for k, v in x.items()}
    model = make_model()
    res = train(model, xh, y, xh, y, TrainConfig(epochs=2, batch_size=16, lr=1e-2), progress=False)
    assert 0.0 <= res.best_val_acc <= 1.0
    f16, f32 = model.extract(xh), model.extract({k: v.half().float() for k, v in x.items()})
    assert f16["logits"].dtype == torch.float32 and torch.equal(f16["logits"], f32["logits"])


def test_three_modalities_train_with_pairwise_terms():
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 3, (48,), generator=g)
    x = {m: torch.eye(3, d)[y] * 3 + torch.randn(48, d, generator=g) for m, d in (("rgb", 4), ("flow", 5), ("audio", 3))}
    torch.manual_seed(0)
    model = MultimodalClassifier({m: None for m in x}, {"rgb": 4, "flow": 5, "audio": 3}, 3)
    for outliers in ("a2d_npmix", "a2d_feature_mixing"):
        cfg = TrainConfig.preset(outliers, epochs=6, batch_size=16, lr=3e-2, start_epoch=1, sample_number=3)
        tr = Trainer(model, cfg, progress=False)
        res = tr.fit(x, y, x, y)
        assert res.best_val_acc > 0.6  # chance is 1/3
        terms = tr.losses(x, y, epoch=2)
        assert {"a2d", "ood_disc", "ood_entropy"} <= set(terms) and torch.isfinite(terms["loss"])


def test_bad_inputs_found_by_review():
    from oodlens.multimodal import hellinger

    m = MultimodalClassifier({"a": None, "b": None}, {"a": 4, "b": 5}, num_classes=3)
    with pytest.raises(OODLensError, match="disagree on the number of inputs"):  # was: RuntimeError from torch.cat
        m({"a": torch.randn(2, 4), "b": torch.randn(3, 5)})
    with pytest.raises(OODLensError, match="differ in shape"):  # was: RuntimeError
        hellinger(torch.rand(3, 4), torch.rand(3, 5))
    with pytest.raises(OODLensError, match="epochs must be an integer"):  # was: TypeError
        TrainConfig(epochs="3")
    with pytest.raises(OODLensError, match="lr must be a finite number"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(OODLensError, match="not a torch device name"):
        Trainer(m, TrainConfig(epochs=1), device="gpu0")
