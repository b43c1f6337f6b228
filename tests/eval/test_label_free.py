"""Pseudo-labels described without ground truth, and the warnings drawn from them."""
import numpy as np
from omegaconf import OmegaConf

from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.eval import label_free

LIMITS = OmegaConf.create({"confident": 0.1, "border": 0.6, "coverage": 0.6, "regions": 0.1,
                           "agreement": 0.3})


def coco_of(masks_per_image, score=0.9):
    images = [{"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 64}
              for i in range(len(masks_per_image))]
    anns = [mask_to_annotation(m, i + 1, 1, score=score)
            for i, ms in enumerate(masks_per_image) for m in ms]
    for k, a in enumerate(anns, 1):
        a["id"] = k
    return make_coco(images, anns, [{"id": 1, "name": "object"}])


def disc(cy, cx, r=8):
    yy, xx = np.mgrid[:64, :64]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def tiles():
    """A partition of the image into four quadrants: colour regions, not objects."""
    out = []
    for y in (0, 32):
        for x in (0, 32):
            m = np.zeros((64, 64), bool)
            m[y:y + 32, x:x + 32] = True
            out.append(m)
    return out


def test_objects_inside_the_image_raise_no_warning():
    objects = coco_of([[disc(20, 20), disc(40, 44)], [disc(30, 30)], []])
    s = label_free.describe(objects)
    assert s["images"] == 3 and s["masks"] == 3 and abs(s["empty_images"] - 1 / 3) < 1e-9
    assert s["border"] == 0.0 and s["coverage"] < 0.2 and s["score_p50"] == 0.9
    assert label_free.warnings({"free masks": s}, {}, LIMITS) == []


def test_a_partition_of_the_image_is_called_colour_regions():
    s = label_free.describe(coco_of([tiles(), tiles()]))
    assert s["border"] == 1.0 and s["coverage"] == 1.0
    (w,) = label_free.warnings({"free masks": s}, {}, LIMITS)
    assert w.startswith("free masks: 100% of the masks scoring >= 0.9 run into the image "
                        "border") and "colour regions" in w
    faint = label_free.describe(coco_of([[disc(20, 20)], [disc(30, 30)]], score=0.4))
    assert faint["confident"] == 0.0
    (w,) = label_free.warnings({"free masks": faint}, {}, LIMITS)
    assert w.startswith("free masks: 0% of the masks score >= 0.9: no region stands out")


def test_large_regions_at_the_border_are_called_surfaces():
    """A table top: a large mask running into the border beside small objects inside."""
    top = np.zeros((64, 64), bool)
    top[30:, :] = True
    s = label_free.describe(coco_of([[disc(12, 12, 6), disc(12, 40, 6), top & ~disc(45, 30)]]))
    assert abs(s["regions"] - 1 / 3) < 1e-9 and s["border"] < 0.6
    (w,) = label_free.warnings({"free masks": s}, {}, LIMITS)
    assert "33% of the masks scoring >= 0.9 are large regions" in w


def test_agreement_between_rounds():
    a = coco_of([[disc(20, 20), disc(40, 44)]])
    b = coco_of([[disc(20, 21), disc(10, 50, 5)]])
    assert label_free.agreement(a, a) == 1.0
    assert label_free.agreement(a, b) == 0.5          # one of two masks each way
    assert label_free.agreement(coco_of([[]]), coco_of([[]])) is None
    far = coco_of([[disc(10, 10)]]), coco_of([[disc(50, 50)]])
    (w,) = label_free.warnings({}, {"SOLO round 1 and SOLO round 2": label_free.agreement(*far)},
                               LIMITS)
    assert "agree on 0%" in w
