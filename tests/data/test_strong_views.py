"""FreeSOLO's training views: copy-paste occludes and adds instances; strong views keep shape."""
import numpy as np
import torch

from pipeline.data.strong_views import copy_paste, masks_to_boxes, strong_view, training_views


def sample(h, w, boxes, value):
    masks = torch.zeros((len(boxes), h, w), dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return {"image": torch.full((3, h, w), float(value)), "masks": masks,
            "labels": torch.zeros(len(boxes), dtype=torch.long),
            "boxes": masks_to_boxes(masks)}


def test_pasted_instances_occlude_and_join_the_targets():
    dst = sample(40, 40, [(0, 0, 20, 20), (25, 25, 30, 30)], 10)
    src = sample(40, 40, [(10, 10, 30, 30)], 200)
    out = copy_paste(dst, src, np.random.default_rng(0), max_instances=1)
    assert len(out["masks"]) == 2          # the 5x5 instance is fully covered: dropped
    first, pasted = out["masks"]
    assert first.sum() == 400 - 100        # its 10x10 corner lies under the pasted square
    assert pasted.sum() == 400 and out["boxes"][1].tolist() == [10, 10, 30, 30]
    assert out["image"][0, 15, 15] == 200 and out["image"][0, 5, 5] == 10
    assert out["boxes"][0].tolist() == [0, 0, 20, 20]  # box of what is still visible


def test_source_of_another_size_is_resized_to_the_destination():
    dst = sample(40, 40, [(0, 0, 4, 4)], 10)
    src = sample(20, 20, [(5, 5, 10, 10)], 200)
    out = copy_paste(dst, src, np.random.default_rng(0), max_instances=1)
    assert out["masks"].shape[-2:] == (40, 40) and out["boxes"][-1].tolist() == [10, 10, 20, 20]


def test_strong_view_is_seeded_and_keeps_geometry():
    img = torch.rand(3, 32, 48) * 255
    a = strong_view(img, np.random.default_rng(3))
    b = strong_view(img, np.random.default_rng(3))
    assert a.shape == img.shape and torch.equal(a, b)
    assert not torch.equal(a, img) and 0 <= a.min() and a.max() <= 255


def test_training_views_keep_the_weak_image_for_the_colour_loss():
    batch = [sample(40, 40, [(0, 0, 10, 10)], 10), sample(40, 40, [(20, 20, 30, 30)], 200)]
    out = training_views(batch, [0, 1, 2, 0], copy_paste_p=1.0, strong=True)
    assert all("strong" in s for s in out)
    assert len(out[0]["masks"]) == 2 and out[0]["image"][0, 25, 25] == 200  # pasted, weak
    again = training_views(batch, [0, 1, 2, 0], copy_paste_p=1.0, strong=True)
    assert torch.equal(out[0]["strong"], again[0]["strong"])                # resume: same
