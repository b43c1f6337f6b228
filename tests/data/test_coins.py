"""The coins dev set: a real photograph with instance masks, generated on first use."""
from pycocotools.coco import COCO

from pipeline.data.datasets import get_split
from tests.conftest import make_cfg


def test_coins_generated_on_first_use(tmp_path):
    cfg = make_cfg(tmp_path, "dataset=coins", f"paths.data_dir={tmp_path / 'data'}")
    train, val = get_split(cfg.dataset, "train"), get_split(cfg.dataset, "val")
    assert len(train.images) == 18 and len(val.images) == 1
    assert {(im["height"], im["width"]) for im in train.images} == {(128, 128)}
    assert (val.images[0]["height"], val.images[0]["width"]) == (303, 192)
    api = COCO(str(val.json_path))
    anns = api.loadAnns(api.getAnnIds())
    assert 10 <= len(anns) <= 14                     # the right half's coins, edge ones cut
    for a in anns:                                   # one coin each: up to ~70 px across
        assert 20 <= a["area"] and max(a["bbox"][2:]) <= 72
    # one object per mask: masks of one image never overlap
    masks = sum(api.annToMask(a).astype(int) for a in anns)
    assert masks.max() == 1
