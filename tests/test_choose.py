"""The no-ground-truth chooser on hand-made COCO files whose right pick is known."""
import numpy as np
import pytest

from pipeline import choose
from pipeline.data.coco import make_coco, mask_to_annotation
from pipeline.eval.coco_eval import evaluate

H = W = 64


def square(x, y, s):
    m = np.zeros((H, W), bool)
    m[y:y + s, x:x + s] = True
    return m


# the objects of 6 images (x, y, side): what no source is told
TRUTH = {i: [(4 + 3 * i, 6, 14), (30, 8 + 2 * i, 12), (10, 36, 18 - i), (40, 40, 16)]
         for i in range(6)}


def source(masks_of, name_of=lambda i: f"im{i}.png", id_of=lambda i: i + 1):
    """A COCO dict: masks_of(image index) -> [(mask, score)]."""
    images = [{"id": id_of(i), "file_name": name_of(i), "height": H, "width": W}
              for i in TRUTH]
    anns = [mask_to_annotation(m, id_of(i), score=s) for i in TRUTH for m, s in masks_of(i)]
    return make_coco(images, anns)


def exact(i):
    return [(square(*o), 0.9) for o in TRUTH[i]]


def partial(skip, shift):
    """Misses object `skip` of each image; the others moved by `shift` pixels."""
    return lambda i: [(square(x + shift, y, s), 0.8) for k, (x, y, s) in enumerate(TRUTH[i])
                      if k != skip]


def junk(seed):
    rng = np.random.default_rng(seed)
    return lambda i: [(square(*rng.integers(0, 40, 2), int(rng.integers(6, 24))), 0.95)
                      for _ in range(5)]


def truth_ap(coco):
    gt = source(lambda i: [(square(*o), 1.0) for o in TRUTH[i]])
    for a in gt["annotations"]:
        a.pop("score")
    return evaluate(gt, coco["annotations"], iou_types=("segm",))["segm"]["AP"]


def test_the_source_the_others_agree_with_is_the_accurate_one():
    sources = {"rough A": source(partial(0, 2)), "rough B": source(partial(2, -2)),
               "accurate": source(exact), "junk": source(junk(0))}
    res = choose.choose(sources)
    assert res["winner"] == "accurate"
    # ...which is indeed the best by ground truth, and junk has the smallest share
    assert max(sources, key=lambda n: truth_ap(sources[n])) == "accurate"
    assert min(res["scores"], key=res["scores"].get) == "junk"
    assert res["agreement"]["accurate"]["rough A"] > res["agreement"]["junk"]["rough A"]
    assert res["images"] == len(TRUTH) and "accurate" in res["why"]


def test_a_family_votes_once_and_never_for_itself():
    # two files of one method with the same errors agree perfectly with each other
    sources = {"accurate": source(exact), "rough A": source(partial(1, 2)),
               "rough B": source(partial(3, -2)), "junk 1": source(junk(3)),
               "junk 2": source(junk(3))}
    assert choose.choose(sources)["winner"] in ("junk 1", "junk 2")   # no families: fooled
    res = choose.choose(sources, {"junk 1": "junk", "junk 2": "junk"})
    assert res["winner"] == "accurate"
    assert res["families"]["junk 2"] == "junk"


def test_images_are_matched_by_file_name_not_id():
    shifted_ids = source(exact, id_of=lambda i: 100 - i)
    extra = source(partial(0, 1))
    extra["images"].append({"id": 99, "file_name": "only_here.png", "height": H, "width": W})
    extra["annotations"].append(dict(extra["annotations"][0], image_id=99, id=999))
    aligned = choose.align({"a": shifted_ids, "b": extra, "c": source(junk(1))})
    assert len(aligned["a"]["images"]) == len(TRUTH)
    assert {a["image_id"] for a in aligned["b"]["annotations"]} <= \
        {im["id"] for im in aligned["a"]["images"]}
    assert choose.pair_ap(aligned["a"], aligned["b"]) > 50     # same objects, ids apart
    assert choose.choose({"a": shifted_ids, "b": extra, "c": source(junk(1))})["winner"] != "c"


def test_one_family_cannot_be_judged():
    res = choose.choose({"r1": source(exact), "r2": source(junk(2))}, {"r1": "s", "r2": "s"})
    assert res["winner"] == "r1" and "nothing independent" in res["why"]
    with pytest.raises(ValueError):
        choose.choose({})


def test_empty_source_gets_no_share():
    res = choose.choose({"accurate": source(exact), "rough": source(partial(3, 1)),
                         "empty": source(lambda i: [])})
    assert res["scores"]["empty"] == 0.0 and res["winner"] != "empty"
