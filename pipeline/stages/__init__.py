"""One module per stage, each with `run(cfg)`; stages share data only through files."""
STAGES = ("sample", "pretrain", "freemask", "solo", "student", "maskrcnn", "baseline", "choose", "report",
          "compare", "annotate", "annotate_sync", "points", "refine")
# a stage name that runs another stage's module: stage=maskrcnn is the student with model=maskrcnn
MODULES = {"maskrcnn": "student"}
