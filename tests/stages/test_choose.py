"""stage=choose writes the picked source as plain COCO with why; stage=report prints it."""
from omegaconf import open_dict

from pipeline.__main__ import run_stage
from pipeline.data.coco import load_coco, save_coco
from pipeline.io import read_json
from pipeline.stages.report import describe_choice
from tests.conftest import make_cfg
from tests.test_choose import exact, junk, partial, source


def test_choose_writes_the_pick_and_report_prints_it(tmp_path, capsys):
    files = {}
    # the exact masks are the centre: two other families find most of them, each with its
    # own misses (SOLO's rounds share theirs); two thresholds agree only with each other
    made = {"free masks": source(exact), "SOLO round 1": source(partial(0, 2)),
            "SOLO round 2": source(partial(0, 1)), "baseline: colour": source(partial(2, -2)),
            "baseline: Otsu": source(junk(0)), "baseline: watershed": source(junk(0))}
    made["free masks"]["annotations"][0]["embedding"] = [0.5] * 4  # not in the plain COCO
    for i, (name, coco) in enumerate(made.items()):
        files[name] = str(save_coco(tmp_path / f"source{i}.json", coco))
    cfg = make_cfg(tmp_path, "stage=choose", run_name="choose")
    with open_dict(cfg):
        cfg.choose.sources = dict(files, missing=str(tmp_path / "nope.json"))
        cfg.choose.families = {"SOLO round 1": "SOLO", "SOLO round 2": "SOLO",
                               "baseline: Otsu": "Otsu", "baseline: watershed": "Otsu"}
    res = run_stage(cfg)
    assert res["winner"] == "free masks"
    out = tmp_path / "outputs" / "cpu_sample" / "choose"
    chosen = load_coco(out / "chosen_pseudo_labels.json")
    assert len(chosen["annotations"]) == len(made["free masks"]["annotations"])
    assert all("embedding" not in a for a in chosen["annotations"])
    choice = read_json(out / "choice.json")
    assert choice["winner"] == "free masks" and choice["file"] == files["free masks"]
    assert "missing" in choice["not_found"][0]
    printed = capsys.readouterr().out
    assert "free masks **(chosen)**" in printed and "why:" in printed

    text = describe_choice(out / "choice.json")
    assert "chosen pseudo-labels (no ground truth used): free masks" in text
    assert "NOTE" not in text
    save_coco(files["SOLO round 2"], source(exact))   # a source changed after the pick
    assert "NOTE: SOLO round 2 changed" in describe_choice(out / "choice.json")
    assert describe_choice(tmp_path / "none.json") == ""
