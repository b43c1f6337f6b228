import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from pipeline.data.coco import (decode_segmentation, encode_mask, load_coco, make_coco,
                                mask_to_annotation, save_coco)
from pipeline.errors import UserError


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    rle = encode_mask(m)
    assert isinstance(rle["counts"], str)  # JSON-serialisable
    back = decode_segmentation(json.loads(json.dumps(rle)), 37, 53)
    assert np.array_equal(back.astype(bool), m)


def test_polygon_decodes():
    m = decode_segmentation([[2, 2, 8, 2, 8, 8, 2, 8]], 12, 12)
    assert m[5, 5] == 1 and m[0, 0] == 0


def test_annotation_box_and_area():
    m = np.zeros((10, 20), bool)
    m[2:5, 3:10] = True
    a = mask_to_annotation(m, image_id=7, score=0.5)
    assert a["bbox"] == [3.0, 2.0, 7.0, 3.0]
    assert a["area"] == 21.0 and a["score"] == 0.5 and a["image_id"] == 7


def test_written_file_loads_in_pycocotools(tmp_path):
    m = np.zeros((10, 10), bool)
    m[1:4, 1:4] = True
    data = make_coco([{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
                     [mask_to_annotation(m, 1, score=0.9), mask_to_annotation(~m, 1)])
    p = save_coco(tmp_path / "x.json", data)
    api = COCO(str(p))
    assert sorted(api.getAnnIds()) == [1, 2]
    assert api.annToMask(api.loadAnns(1)[0]).sum() == 9


def test_malformed_json_names_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"images": [1, 2,')
    with pytest.raises(UserError, match="bad.json.*not valid JSON"):
        load_coco(p)


def test_missing_file_and_wrong_shape(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_coco(tmp_path / "nope.json")
    p = tmp_path / "list.json"
    p.write_text("[]")
    with pytest.raises(UserError, match="no 'images'"):
        load_coco(p)


def test_unknown_image_id(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                             "annotations": [{"id": 1, "image_id": 2}]}))
    with pytest.raises(UserError, match="unknown image_id 2"):
        load_coco(p)


def test_mask_values_at_equal_the_full_decode_for_polygons_anywhere():
    """Point labels read off the run lengths equal the full-image mask's, for polygons
    (partly outside the image, several parts), compressed and uncompressed RLE."""
    import numpy as np

    from pipeline.data.coco import decode_segmentation, encode_mask, mask_values_at
    from pipeline.data.coco_checks import rle_counts
    rng = np.random.default_rng(0)
    h, w = 37, 53
    for _ in range(300):
        parts = []
        for _ in range(rng.integers(1, 3)):
            k = int(rng.integers(3, 9))
            cx, cy = rng.uniform(-10, w + 10), rng.uniform(-10, h + 10)
            pts = np.stack([cx + rng.uniform(-15, 15, k), cy + rng.uniform(-15, 15, k)], 1)
            parts.append(pts.round(2).ravel().tolist())
        c = np.concatenate(parts)
        # points in the polygon's box (as point sampling draws them): the window is shifted
        bx0, bx1 = int(np.clip(c[0::2].min(), 0, w - 1)), int(np.clip(c[0::2].max(), 0, w - 1))
        by0, by1 = int(np.clip(c[1::2].min(), 0, h - 1)), int(np.clip(c[1::2].max(), 0, h - 1))
        xs, ys = rng.integers(bx0, bx1 + 1, 20), rng.integers(by0, by1 + 1, 20)
        full = decode_segmentation(parts, h, w)
        assert (mask_values_at(parts, h, w, xs, ys) == full[ys, xs]).all()
        rle = encode_mask(full)
        assert (mask_values_at(rle, h, w, xs, ys) == full[ys, xs]).all()
        runs = {"size": [h, w], "counts": [int(v) for v in rle_counts(rle["counts"])]}
        assert (mask_values_at(runs, h, w, xs, ys) == full[ys, xs]).all()   # uncompressed


def test_embeddings_live_beside_the_json_and_never_pair_with_another_runs(tmp_path):
    m = np.zeros((8, 8), bool)
    m[2:5, 2:6] = True
    anns = [mask_to_annotation(m, 1, 1, score=0.9, embedding=[0.5, -0.25]),
            mask_to_annotation(m, 1, 1, score=0.8, embedding=[1.0, 2.0])]
    coco = make_coco([{"id": 1, "file_name": "a.png", "height": 8, "width": 8}], anns)
    save_coco(tmp_path / "f.json", coco)
    raw = json.loads((tmp_path / "f.json").read_text())
    assert all("embedding" not in a for a in raw["annotations"])          # small JSON
    assert raw["info"]["embeddings"]["file"] == "f.embeddings.npz"
    assert [a["embedding"] for a in load_coco(tmp_path / "f.json")["annotations"]] == \
        [[0.5, -0.25], [1.0, 2.0]]
    assert COCO(str(tmp_path / "f.json")).getAnnIds() == [1, 2]           # pycocotools reads it
    other = dict(coco, annotations=[dict(a, embedding=[9.0, 9.0]) for a in anns])
    save_coco(tmp_path / "g.json", other)
    (tmp_path / "g.embeddings.npz").replace(tmp_path / "f.embeddings.npz")  # a stale sidecar
    with pytest.raises(UserError, match="does not hold the embeddings"):
        load_coco(tmp_path / "f.json")
    (tmp_path / "f.embeddings.npz").unlink()
    with pytest.raises(UserError, match="cannot be read"):
        load_coco(tmp_path / "f.json")
    # loaded with embeddings, saved without over the same file: its old sidecar (still there,
    # checksum intact) must not pair with it again
    save_coco(tmp_path / "h.json", other)
    loaded = load_coco(tmp_path / "h.json")
    save_coco(tmp_path / "h.json", dict(loaded, annotations=[
        {k: v for k, v in a.items() if k != "embedding"} for a in loaded["annotations"]]))
    assert (tmp_path / "h.embeddings.npz").is_file()
    assert all("embedding" not in a for a in load_coco(tmp_path / "h.json")["annotations"])
