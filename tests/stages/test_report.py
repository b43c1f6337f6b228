from pipeline.stages.report import best_baseline_verdict


def rows(**aps):
    return {k.replace("_", " "): {"segm": {"AP": v}} for k, v in aps.items()}


def test_verdict_names_the_best_baseline_and_the_last_row():
    r = {"baseline: a": {"segm": {"AP": 5.0}}, "baseline: b": {"segm": {"AP": 20.0}},
         "free masks": {"segm": {"AP": 30.0}}, "SOLO r2": {"segm": {"AP": 12.5}}}
    v = best_baseline_verdict(r)
    assert "baseline: b (20.0" in v and "SOLO r2 does NOT beat it" in v and "-7.5" in v
    r["SOLO r2"] = {"segm": {"AP": 21.0}}
    assert "SOLO r2 beats it (21.0, +1.0)" in best_baseline_verdict(r)
    assert best_baseline_verdict({"free masks": {"segm": {"AP": 1.0}}}) == ""
