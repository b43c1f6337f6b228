"""Scale jitter (LSJ) in the instance loader: masks, boxes and points follow the zoomed content."""
import numpy as np
import torch
from PIL import Image

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.data.datasets import Split
from pipeline.data.instances import InstanceBank, jitter


def sample():
    image = torch.full((3, 100, 120), 10.0)
    masks = torch.zeros(2, 100, 120, dtype=torch.bool)
    masks[0, 10:30, 20:50] = True      # top left
    masks[1, 80:100, 100:120] = True   # bottom-right corner
    image[:, masks.any(0)] = 200.0
    return {"image": image, "id": 1, "labels": torch.tensor([0, 0]),
            "boxes": torch.tensor([[20.0, 10, 50, 30], [100, 80, 120, 100]]), "masks": masks,
            "points": torch.tensor([[[25.0, 15], [5, 5]], [[110, 90], [101, 81]]]),
            "point_labels": torch.tensor([[1.0, 0], [1, 1]]),
            "embeddings": torch.tensor([[1.0], [2.0]])}


def test_zoom_out_shrinks_content_onto_a_mean_colour_canvas():
    out = jitter(sample(), 0.5, (0.0, 0.0))
    assert out["image"].shape == (3, 100, 120)
    assert out["boxes"].tolist() == [[10, 5, 25, 15], [50, 40, 60, 50]]
    assert out["masks"].flatten(1).sum(1).tolist() == [150, 100]
    # boxes are the masks' extents; points moved with the content, labels kept
    assert torch.equal(out["points"][0, 0], torch.tensor([12.5, 7.5]))
    assert out["point_labels"].tolist() == [[1, 0], [1, 1]]
    # the canvas outside the content is the image's mean colour, not black
    assert torch.equal(out["image"][:, 90, 110], sample()["image"].mean((1, 2)).round())
    # the object pixels are where the masks are
    assert (out["image"][0][out["masks"][0]] > 150).all()


def test_zoom_in_crops_and_drops_instances_cut_away():
    out = jitter(sample(), 1.5, (1.0, 1.0))   # window at the bottom right
    assert out["masks"].shape[0] == 1 and out["labels"].tolist() == [0]
    assert out["embeddings"].tolist() == [[2.0]]           # the surviving instance's own
    assert out["boxes"].tolist() == [[90, 70, 120, 100]]
    assert out["masks"].sum() == 900
    # a point falling outside the window is ignored, not moved inside
    out = jitter(sample(), 1.5, (0.0, 0.0))
    assert out["labels"].tolist() == [0]
    assert out["point_labels"].tolist() == [[1, 0]]
    cut = jitter(dict(sample(), points=torch.tensor([[[25.0, 15], [90, 5]], [[110, 90], [101, 81]]])),
                 1.5, (0.0, 0.0))
    assert cut["point_labels"].tolist() == [[1, -1]]


def test_jitter_off_keeps_the_batches_and_on_is_seeded(tmp_path):
    (tmp_path / "img").mkdir()
    images, anns = [], []
    for i in range(3):
        arr = np.zeros((64, 80, 3), np.uint8)
        arr[10 + i:40, 20:50] = 255
        Image.fromarray(arr).save(tmp_path / "img" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 80})
        anns.append(mask_to_annotation(arr[..., 0] > 0, i + 1, 1))
    coco = make_coco(images, anns, [{"id": 1, "name": "object"}])
    bank = InstanceBank(Split("train", tmp_path / "img", coco, True), coco)
    plain = bank.batch(0, 2, 0, (64,), 200)
    off = bank.batch(0, 2, 0, (64,), 200, scale_jitter=(1.0, 1.0))
    on = bank.batch(0, 2, 0, (64,), 200, scale_jitter=(0.5, 1.5))
    again = bank.batch(0, 2, 0, (64,), 200, scale_jitter=(0.5, 1.5))
    for a, b in zip(plain, off):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
    assert any(not torch.equal(a["masks"], b["masks"]) for a, b in zip(plain, on))
    for a, b in zip(on, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
        assert a["image"].shape == (3, 64, 80)


def test_letterbox_resizes_the_longer_side_and_pads_a_square_in_the_mean_colour(tmp_path):
    from pipeline.data.instances import pad_batch, pad_square
    batch = torch.zeros(1, 3, 50, 100)
    batch[..., :25, :] = 200.0
    out = pad_square(batch)
    assert out.shape == (1, 3, 128, 128)
    assert torch.equal(out[..., :50, :100], batch)
    assert torch.allclose(out[0, :, 100, 10], torch.full((3,), 100.0))   # mean, not black
    images, valid = pad_batch([{"image": batch[0]}], square=True)
    assert images.shape == (1, 3, 128, 128) and valid.sum() == 50 * 100
    assert pad_batch([{"image": batch[0]}])[0].shape == (1, 3, 64, 128)
    # the loader: a 64x80 image under letterbox to 40 is 32x40 (longer side 40)
    (tmp_path / "img").mkdir()
    arr = np.zeros((64, 80, 3), np.uint8)
    arr[10:40, 20:50] = 255
    Image.fromarray(arr).save(tmp_path / "img" / "0.png")
    coco = make_coco([{"id": 1, "file_name": "0.png", "height": 64, "width": 80}],
                     [mask_to_annotation(arr[..., 0] > 0, 1, 1)], [{"id": 1, "name": "object"}])
    bank = InstanceBank(Split("train", tmp_path / "img", coco, True), coco)
    assert bank.batch(0, 1, 0, (40,), 200, letterbox=True)[0]["image"].shape == (3, 32, 40)
    assert bank.batch(0, 1, 0, (40,), 200)[0]["image"].shape == (3, 40, 50)


def test_letterboxed_solo_predicts_at_the_images_own_size(tmp_path):
    from pipeline.models.solo import build_solo
    from pipeline.models.solo_predictor import SoloPredictor
    from tests.conftest import make_cfg
    cfg = make_cfg(tmp_path, "backbone.weights=null", "solo.letterbox=true",
                   "solo.inference.short_side=64", "solo.inference.score_threshold=0.0",
                   "solo.inference.update_threshold=0.0", "solo.inference.max_per_image=3")
    torch.manual_seed(0)
    model = build_solo(cfg, torch.device("cpu"))
    pred = SoloPredictor(model, cfg.solo, torch.device("cpu"))
    assert pred.max_size == 64                     # the longer side goes to 64
    arr = np.random.default_rng(0).integers(0, 255, (90, 40, 3), dtype=np.uint8)
    anns = pred([({"id": 7, "height": 90, "width": 40}, arr)])[0]
    assert anns and all(a["segmentation"]["size"] == [90, 40] for a in anns)
