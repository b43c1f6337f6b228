import numpy as np

from pipeline.data.coco import decode_segmentation, load_coco
from pipeline.data.sample import generate, render_image


def test_deterministic_and_seed_dependent():
    a, ia = render_image(0, "train", 3)
    b, ib = render_image(0, "train", 3)
    c, _ = render_image(1, "train", 3)
    assert np.array_equal(a, b) and len(ia) == len(ib)
    assert not np.array_equal(a, c)


def test_visible_masks_do_not_overlap():
    for i in range(10):
        _, inst = render_image(0, "val", i)
        total = sum(m.astype(int) for _, m in inst)
        assert total.max() <= 1
        assert all(m.sum() >= 80 for _, m in inst)


def test_written_dataset(tmp_path):
    out = generate(tmp_path, seed=0, splits={"train": 3, "val": 2}, progress=False)
    data = load_coco(out["train"][1])
    assert len(data["images"]) == 3 and len(data["categories"]) == 5
    a = data["annotations"][0]
    m = decode_segmentation(a["segmentation"], 160, 160)
    assert m.sum() == a["area"]
    assert (tmp_path / "val" / "val_00001.png").is_file()
