"""Self-training targets: confident predictions, plus the previous targets they miss."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.stages.solo import self_training_filter


def box_mask(y0, x0, size=10, hw=(40, 40)):
    m = np.zeros(hw, bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


def test_previous_targets_the_student_missed_are_kept():
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 40}]
    preds = make_coco(images, [
        mask_to_annotation(box_mask(0, 0), 1, score=0.9),          # found object A
        mask_to_annotation(box_mask(20, 20), 1, score=0.1)])       # too unsure: dropped
    previous = make_coco(images, [
        mask_to_annotation(box_mask(1, 1), 1, score=0.8, embedding=[0.0]),   # A again
        mask_to_annotation(box_mask(20, 0), 1, score=0.7, embedding=[0.0])])  # B: missed
    st = OmegaConf.create({"score_threshold": 0.3, "max_per_image": 20,
                           "max_box_width_frac": 0.95, "keep_previous_iou": 0.5})
    out = self_training_filter(preds, st, {1: 40}, previous)
    boxes = sorted(a["bbox"][:2] for a in out["annotations"])
    assert boxes == [[0.0, 0.0], [0.0, 20.0]]            # A (predicted) and B (kept)
    assert all("embedding" not in a for a in out["annotations"])
    st.keep_previous_iou = 0
    assert len(self_training_filter(preds, st, {1: 40}, previous)["annotations"]) == 1


def test_round_fingerprint_follows_targets_and_settings(tmp_path):
    from pipeline.data.datasets import Split
    from pipeline.stages.solo import round_fingerprint
    from tests.conftest import make_cfg
    cfg = make_cfg(tmp_path, "backbone.weights=null")
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 40}]
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"one")
    split = Split("train", tmp_path / "imgs", {"images": images, "annotations": []}, False)
    t1 = make_coco(images, [mask_to_annotation(box_mask(0, 0), 1, score=0.9)])
    t2 = make_coco(images, [mask_to_annotation(box_mask(5, 0), 1, score=0.9)])
    key = round_fingerprint(cfg, 1, t1, None, split)
    assert key == round_fingerprint(cfg, 1, t1, None, split)
    assert key != round_fingerprint(cfg, 1, t2, None, split)          # other free masks
    assert key != round_fingerprint(cfg, 2, t1, None, split)
    other = make_cfg(tmp_path, "backbone.weights=null", "solo.loss.dice=0.5")
    assert key != round_fingerprint(other, 1, t1, None, split)        # other loss settings
    for changed in (f"solo.letterbox={not cfg.solo.letterbox}",
                    "solo.train.scale_jitter=[0.7,1.3]"):
        assert key != round_fingerprint(make_cfg(tmp_path, "backbone.weights=null", changed),
                                        1, t1, None, split), changed
    shorter = make_cfg(tmp_path, "backbone.weights=null", "solo.self_training.iter_fraction=0.5")
    assert key == round_fingerprint(shorter, 1, t1, None, split)      # round 1 as before
    assert (round_fingerprint(shorter, 2, t1, None, split)
            != round_fingerprint(cfg, 2, t1, None, split))           # round 2 trains less
    averaged = make_cfg(tmp_path, "backbone.weights=null", "solo.train.ema=0.9")
    assert key != round_fingerprint(averaged, 1, t1, None, split)
    bf16, fp32 = (make_cfg(tmp_path, "backbone.weights=null", f"solo.train.amp={a}")
                  for a in ("true", "false"))   # bfloat16 and float32 weights differ
    assert round_fingerprint(bf16, 1, t1, None, split) != round_fingerprint(fp32, 1, t1, None,
                                                                             split)
    same = make_cfg(tmp_path, "backbone.weights=null", "solo.inference.batch_size=3",
                    "solo.train.log_every=7")
    assert key == round_fingerprint(same, 1, t1, None, split)         # no effect on weights
    (tmp_path / "imgs" / "a.png").write_bytes(b"other image")
    assert key != round_fingerprint(cfg, 1, t1, None, split)          # image replaced


def test_round_one_learns_only_from_confident_free_masks():
    import pytest
    from pipeline.errors import UserError
    from pipeline.stages.solo import confident_targets
    images = [{"id": 1, "file_name": "a.png", "height": 40, "width": 40}]
    free = make_coco(images, [mask_to_annotation(box_mask(0, 0), 1, score=0.95, embedding=[1.0]),
                              mask_to_annotation(box_mask(20, 0), 1, score=0.2, embedding=[2.0])])
    kept = confident_targets(free, 0.7, "free.json")["annotations"]
    assert [a["score"] for a in kept] == [0.95] and kept[0]["embedding"] == [1.0]
    assert confident_targets(free, 0.0, "free.json") is free          # 0: every free mask
    assert len(free["annotations"]) == 2                             # the input is untouched
    with pytest.raises(UserError, match="free.json.*targets_min_score=0.99.*0.950"):
        confident_targets(free, 0.99, "free.json")
