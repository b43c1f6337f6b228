"""The pasted-coins dev set: real coin cut-outs on real textures, masks by construction."""
import numpy as np
from pycocotools.coco import COCO

from pipeline.data.datasets import get_split
from pipeline.data.pasted import coin_cutouts, render_image
from tests.conftest import make_cfg


def test_pasted_coins_generated_on_first_use_and_seeded(tmp_path):
    sizes = ["dataset.generate.num.train=4", "dataset.generate.num.val=2",
             "dataset.generate.num.test=2"]
    cfg = make_cfg(tmp_path, "dataset=pasted", f"paths.data_dir={tmp_path / 'a'}", *sizes)
    splits = {s: get_split(cfg.dataset, s) for s in ("train", "val", "test")}
    assert [len(s.images) for s in splits.values()] == [4, 2, 2]
    api = COCO(str(splits["train"].json_path))
    anns = api.loadAnns(api.getAnnIds())
    assert len(anns) >= 4 and all(a["area"] >= 80 for a in anns)
    for image_id in api.getImgIds():   # visible parts: the masks of an image never overlap
        masks = [api.annToMask(a) for a in api.loadAnns(api.getAnnIds(imgIds=image_id))]
        assert not masks or sum(m.astype(int) for m in masks).max() == 1
    again = make_cfg(tmp_path, "dataset=pasted", f"paths.data_dir={tmp_path / 'b'}", *sizes)
    b = get_split(again.dataset, "train")
    for im in splits["train"].images:
        assert (splits["train"].image_root / im["file_name"]).read_bytes() == \
            (b.image_root / im["file_name"]).read_bytes()


def test_coins_are_where_their_masks_say_and_splits_share_no_coin():
    left, right = coin_cutouts("left"), coin_cutouts("right")
    assert len(left) >= 8 and len(right) >= 8
    sizes = lambda cs: {(m.shape, int(m.sum())) for _, m in cs}  # noqa: E731
    assert not sizes(left) & sizes(right)
    image, masks = render_image(0, "val", 3)
    assert image.shape == (160, 160, 3) and masks
    # a pasted coin differs from the texture it covers: its pixels are the coin's own
    plain, _ = render_image(0, "val", 3, objects=(0, 0))
    for m in masks:
        assert np.abs(image[m].astype(int) - plain[m].astype(int)).mean() > 5
