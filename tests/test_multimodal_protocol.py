"""MultiOOD split lists, feature files with modality prefixes, and the evaluation table."""

import pytest
import torch

from oodlens.errors import OODLensError
from oodlens.features import Features
from oodlens.metrics import ood_metrics
from oodlens.detectors import create
from oodlens.multimodal import (Benchmark, evaluate, flow_stem, load_modal_features, multiood_split_files,
                                read_hac_split, read_split_list)


def test_read_split_list_formats(tmp_path):
    p = tmp_path / "HMDB_test_near_ood.txt"
    p.write_text("brush_hair/Haarek_mmen_brush_hair_h_cm_np1_fr_goo_1.avi 0\n\ncartwheel/How_to_do_a_Cartwheel.avi 1\n")
    paths, y = read_split_list(p)
    assert paths == ["brush_hair/Haarek_mmen_brush_hair_h_cm_np1_fr_goo_1.avi", "cartwheel/How_to_do_a_Cartwheel.avi"]
    assert y.tolist() == [0, 1] and y.dtype == torch.long
    k = tmp_path / "Kinetics_train_near_ood.txt"
    k.write_text("acting in play/abc_000010_000020.mp4 12\n")  # Kinetics class folders contain spaces
    assert read_split_list(k) == (["acting in play/abc_000010_000020.mp4"], pytest.approx(torch.tensor([12])))
    bad = tmp_path / "bad.txt"
    bad.write_text("video.avi notanumber\n")
    with pytest.raises(OODLensError, match="not an integer"):
        read_split_list(bad)
    with pytest.raises(OODLensError, match="no such split list"):
        read_split_list(tmp_path / "missing.txt")
    h = tmp_path / "HAC_test_only_animal.csv"
    h.write_text("dog_run_01.mp4,3\ncat_jump_02.mp4,5\n")
    assert read_hac_split(h, "animal") == (["animal/dog_run_01.mp4", "animal/cat_jump_02.mp4"], pytest.approx(torch.tensor([3, 5])))


def test_split_file_names(tmp_path):
    for name in ("HMDB_train_near_ood.txt", "HMDB_val_near_ood.txt", "HMDB_test_near_ood.txt",
                 "HMDB_eval_near_ood.txt", "HMDB_train.txt", "HMDB_val.txt", "HMDB_test.txt", "ID_HMDB_OOD_UCF.txt"):
        (tmp_path / name).write_text("a.avi 0\n")
    near = multiood_split_files(tmp_path, "HMDB", "near")
    assert set(near) == {"train", "val", "test", "near:HMDB"}
    assert near["near:HMDB"].name == "HMDB_eval_near_ood.txt"
    far = multiood_split_files(tmp_path, "HMDB", "far", ["UCF"])
    assert far["far:UCF"].name == "ID_HMDB_OOD_UCF.txt" and far["train"].name == "HMDB_train.txt"
    with pytest.raises(OODLensError, match="ID_HMDB_OOD_Kinetics.txt"):
        multiood_split_files(tmp_path, "HMDB", "far", ["Kinetics"])


def test_flow_stem_follows_their_dataloader():
    assert flow_stem("brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "HMDB") == "April_09_brush_hair_u_nm_np1_ba_goo_0"
    assert flow_stem("v_ApplyEyeMakeup_g20_c04.avi", "UCF") == "v_ApplyEyeMakeup_g20_c04"
    assert flow_stem("acting in play/x_1.mp4", "Kinetics") == "acting in play/x_1"
    with pytest.raises(OODLensError):
        flow_stem("a.avi", "EPIC")


def test_load_modal_features_one_file_per_modality(tmp_path):
    Features({"features": torch.randn(4, 3), "logits": torch.randn(4, 2)}).save(tmp_path / "v.safetensors")
    Features({"features": torch.randn(4, 5), "logits": torch.randn(4, 2)}).save(tmp_path / "f.safetensors")
    f = load_modal_features({"video": tmp_path / "v.safetensors", "flow": tmp_path / "f.safetensors"})
    assert set(f) == {"video/features", "video/logits", "flow/features", "flow/logits"}
    f.save(tmp_path / "both.safetensors")
    assert set(load_modal_features(tmp_path / "both.safetensors")) == set(f)


def make_split(n, g, shift=0.0):
    y = torch.randint(0, 3, (n,), generator=g)
    protos = torch.eye(3) * 4
    v = protos[y] + torch.randn(n, 3, generator=g) + shift
    fl = protos[y] + torch.randn(n, 3, generator=g)
    feats = {"video/features": v, "flow/features": fl, "video/logits": v, "flow/logits": fl,
             "features": torch.cat([v, fl], 1), "logits": v + fl}
    return Features(feats), y


def test_evaluate_rows_equal_direct_computation():
    g = torch.Generator().manual_seed(0)
    tr, ytr = make_split(150, g)
    va, yva = make_split(60, g)
    te, yte = make_split(60, g)
    far, _ = make_split(60, g, shift=6.0)
    bench = Benchmark(tr, ytr, va, yva, te, yte, {"far": far}, {"far": "far"})
    assert bench.modalities == ["video", "flow"]
    skipped = []
    df, acc = evaluate(bench, ["energy", "mahalanobis"], on_skip=skipped.append)
    assert set(df["scope"]) == {"fused", "modalities:max_z"} and len(df) == 4
    row = df[(df.detector == "mahalanobis") & (df.scope == "fused")].iloc[0]
    det = create("mahalanobis").fit(tr, ytr)
    want = ood_metrics(det.score(te), det.score(far))
    assert row["auroc"] == pytest.approx(want["auroc"]) and row["kind"] == "far"
    assert row["ood_accepted_at_95_id"] == pytest.approx(want["ood_accepted_at_95_id"])
    assert acc["fused"] > 0.9 and set(acc) == {"fused", "video", "flow"}
    with pytest.raises(OODLensError, match="unknown detector"):
        evaluate(bench, ["nope"])
    with pytest.raises(OODLensError, match="do not exist"):
        Benchmark(tr, ytr, va, yva, te, yte, {"far": far}, {"near": "near"})
