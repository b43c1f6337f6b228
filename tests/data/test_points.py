import numpy as np
import torch

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.data.instances import (InstanceBank, flip_resize_boxes, flip_resize_masks,
                                     flip_resize_points)
from pipeline.data.points import points_from_masks


def coco_with_shape():
    m = np.zeros((30, 40), bool)
    m[5:20, 8:30] = True
    m[5:12, 8:15] = False                       # a notch, so the box holds background
    return make_coco([{"id": 1, "file_name": "a.png", "height": 30, "width": 40}],
                     [mask_to_annotation(m, 1)]), m


def test_labels_match_masks_and_points_in_box():
    coco, m = coco_with_shape()
    out = points_from_masks(coco, n=50, seed=3)
    a = out["annotations"][0]
    assert "segmentation" not in a and len(a["point_coords"]) == 50
    x, y, w, h = a["bbox"]
    for (px, py), lab in zip(a["point_coords"], a["point_labels"]):
        assert x <= px < x + w and y <= py < y + h
        assert lab == int(m[py, px])
    assert 0 in a["point_labels"] and 1 in a["point_labels"]


def test_seeded_versions():
    coco, _ = coco_with_shape()
    v1a = points_from_masks(coco, 10, seed=1)["annotations"][0]["point_coords"]
    v1b = points_from_masks(coco, 10, seed=1)["annotations"][0]["point_coords"]
    v2 = points_from_masks(coco, 10, seed=2)["annotations"][0]["point_coords"]
    assert v1a == v1b and v1a != v2


def test_points_follow_flip_and_resize_like_masks():
    """A point on a mask pixel stays on the transformed mask, for flips and resizes."""
    rng = np.random.default_rng(0)
    m = torch.zeros(1, 30, 40, dtype=torch.bool)
    m[0, 6:22, 5:17] = True
    ys, xs = torch.nonzero(m[0], as_tuple=True)
    pick = rng.choice(len(ys), 20, replace=False)
    pts = torch.stack([xs[pick], ys[pick]], -1).float()[None] + 0.5    # pixel centres
    for (nh, nw), flip in (((30, 40), True), ((60, 80), False), ((60, 80), True),
                           ((45, 60), True)):
        scale = (nw / 40, nh / 30)
        mm = flip_resize_masks(m, (nh, nw), flip)[0]
        p = flip_resize_points(pts, scale, flip, nw)[0]
        inside = mm[p[:, 1].long().clamp(0, nh - 1), p[:, 0].long().clamp(0, nw - 1)]
        assert inside.all(), (nh, nw, flip)
        box = flip_resize_boxes(torch.tensor([[5.0, 6.0, 17.0, 22.0]]), scale, flip, nw)[0]
        yy, xx = torch.nonzero(mm, as_tuple=True)
        assert abs(box[0] - xx.min()) <= 1 and abs(box[2] - (xx.max() + 1)) <= 1


def test_bank_applies_pixel_centre_and_flip(tmp_path):
    from PIL import Image
    from pipeline.data.datasets import Split
    coco, m = coco_with_shape()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    pts = points_from_masks(coco, 5, seed=0)
    split = Split("train", tmp_path, coco, True)
    bank = InstanceBank(split, pts)
    raw = torch.tensor(pts["annotations"][0]["point_coords"], dtype=torch.float32) + 0.5
    same = bank.augment(bank._load(0), 0, 0, flip=False)
    assert torch.equal(same["points"][0], raw)
    flipped = bank.augment(bank._load(0), 0, 0, flip=True)
    assert torch.allclose(flipped["points"][0, :, 0], 40 - raw[:, 0])


def test_points_stage_writes_versions_pycocotools_reads(sample_cfg):
    from pathlib import Path
    from pycocotools.coco import COCO
    from pipeline.__main__ import run_stage
    cfg = sample_cfg("stage=points", "points.n=4", "points.versions=2", run_name="points")
    out = run_stage(cfg)
    v1, v2 = COCO(out["v1"]), COCO(out["v2"])
    a1, a2 = v1.loadAnns(v1.getAnnIds()), v2.loadAnns(v2.getAnnIds())
    assert len(a1) == len(a2) > 0 and all(len(a["point_coords"]) == 4 for a in a1)
    assert [a["point_coords"] for a in a1] != [a["point_coords"] for a in a2]
    assert Path(out["v1"]).name == "sample_train_n4_v1.json"


def test_crowd_regions_get_no_points_and_are_no_training_instance(tmp_path):
    from PIL import Image
    from pipeline.data.datasets import Split
    coco, m = coco_with_shape()
    crowd = np.zeros((30, 40), bool)
    crowd[22:28, 2:38] = True
    coco["annotations"].append(dict(mask_to_annotation(crowd, 1), id=2, iscrowd=1))
    pts = points_from_masks(coco, 5, seed=0)
    assert [a["id"] for a in pts["annotations"]] == [1]
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    bank = InstanceBank(Split("train", tmp_path, coco, True), coco)
    assert [len(anns) for _, anns in bank.items] == [1]


def test_point_subsampling_is_seeded_per_instance_in_the_data_path(tmp_path):
    from PIL import Image
    from pipeline.data.datasets import Split
    coco, m = coco_with_shape()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "a.png")
    pts = points_from_masks(coco, 10, seed=0)
    bank = InstanceBank(Split("train", tmp_path, coco, True), pts)
    torch.manual_seed(123)
    a = bank.batch(0, 2, seed=5, flip=False, sample_points=4)
    torch.manual_seed(456)                               # the global RNG plays no part
    b = bank.batch(0, 2, seed=5, flip=False, sample_points=4)
    assert a[0]["points"].shape == (1, 4, 2)
    assert torch.equal(a[0]["points"], b[0]["points"]) and torch.equal(a[1]["points"],
                                                                       b[1]["points"])
    full = {tuple(p) for p in (torch.tensor(pts["annotations"][0]["point_coords"]) + 0.5).tolist()}
    assert {tuple(p) for p in a[0]["points"][0].tolist()} <= full   # a subset, labels kept
    c = bank.batch(1, 2, seed=5, flip=False, sample_points=4)
    assert not torch.equal(a[0]["points"], c[0]["points"])         # another draw next step


def test_has_points_only_when_every_annotation_carries_them():
    from pipeline.data.points import has_points
    pts = {"point_coords": [[1, 2]], "point_labels": [1]}
    assert has_points({"annotations": [dict(pts), dict(pts)]})
    assert not has_points({"annotations": [dict(pts), {"segmentation": []}]})
    assert not has_points({"annotations": []})
