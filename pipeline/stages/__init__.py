"""One module per stage, each with `run(cfg)`; stages share data only through files."""
STAGES = ("sample", "pretrain", "freemask", "solo", "maskrcnn", "baseline", "report", "compare",
          "annotate", "annotate_sync", "points")
