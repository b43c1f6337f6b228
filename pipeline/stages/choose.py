"""Stage `choose`: pick one pseudo-label source for the dataset without ground truth
(pipeline/choose.py) and write it as `chosen_pseudo_labels.json` (plain COCO), with which
source won and why in `choice.json`; `stage=report` prints the pick."""
from __future__ import annotations

from pathlib import Path

from pipeline import choose
from pipeline.data.coco import load_coco, make_coco, scored_at_least
from pipeline.errors import UserError
from pipeline.io import write_json
from pipeline.provenance import file_identity


def run(cfg) -> dict:
    c = cfg.choose
    files = {name: Path(p) for name, p in c.sources.items()}
    found = {name: p for name, p in files.items() if p.is_file()}
    missing = [f"{name} ({p})" for name, p in files.items() if name not in found]
    if not found:
        raise UserError(f"none of choose.sources exists yet ({'; '.join(missing)}); run "
                        f"make pseudo-labels (stage=freemask, solo, baseline) first")
    low = dict(c.get("min_score") or {})
    sources = {name: scored_at_least(load_coco(p, f"choose.sources {name!r}"),
                                     float(low.get(name, 0.0)))
               for name, p in found.items()}
    result = choose.choose(sources, dict(c.get("families") or {}))
    win = result["winner"]
    chosen = sources[win]
    plain = [{k: v for k, v in a.items() if k != "embedding"} for a in chosen["annotations"]]
    out_dir = Path(cfg.run_dir)
    out = out_dir / "chosen_pseudo_labels.json"
    write_json(out, make_coco(chosen["images"], plain, chosen.get("categories"),
                              {"description": f"weakseg pseudo-labels chosen from {win}"}))
    result |= {"file": str(found[win]), "chosen": str(out), "split": c.split,
               "not_found": missing, "min_score": low,
               # what it was chosen from: report says when a source changed since
               "inputs": {name: [str(p), file_identity(p)] for name, p in found.items()}}
    write_json(out_dir / "choice.json", result, indent=1)
    print("\n" + choose.describe(result) + "\n")
    return result

