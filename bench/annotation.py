"""Benchmark: the labelling assistant's /predict latency over HTTP, as Label Studio sees it.

A Mask R-CNN with the CPU experiment's architecture (the weights do not change the work of a
drawn box: one RoI through the mask head) is served by the ML backend on 127.0.0.1; each
request is one task of the sample's val split, with one drawn box (interactive) or none
(pre-annotation: the model's own instances, at most `maskrcnn.inference.max_per_image`).
Target: < 300 ms per interactive request on CPU at the sample's image size.
    .venv/bin/python bench/annotation.py [--iters 32] [--threads 2] [hydra overrides...]
"""
from __future__ import annotations

import json
import threading
import time

from common import ROOT, config, parse_args


def main():
    args, overrides = parse_args()
    import numpy as np
    import requests
    import torch
    from omegaconf import OmegaConf

    from annotation import protocol
    from annotation.ml_backend import Backend, serve
    from annotation.server import free_port
    from annotation.tasks import local_url
    from pipeline.data.datasets import get_split
    from pipeline.models.students import MaskRCNNStudent

    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # no line per request
    torch.set_num_threads(args.threads)
    cfg = config("backbone.weights=null", "supervision.agnostic=true", *overrides)
    run = ROOT / "bench" / "results" / "assistant_model"
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(MaskRCNNStudent(cfg, 1).model.state_dict(), run / "model.pt")
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    split = get_split(cfg.dataset, "val")
    root = ROOT / "data"
    backend = Backend(run, root, points=10, score_threshold=0.3, state_dir=run / "state")
    port = free_port()
    server = serve(backend, "127.0.0.1", port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{port}/predict"
    by_image = {}
    for a in split.coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images = [im for im in split.images if by_image.get(im["id"])][:args.iters]

    def task(im):
        return {"id": im["id"], "data": {"image": local_url(split.image_root, root,
                                                            im["file_name"])}}

    def request(im, interactive):
        body = {"tasks": [task(im)], "label_config": protocol.labeling_config()}
        if interactive:
            a = by_image[im["id"]][0]
            body["params"] = {"context": {"result": [protocol.box_result(
                a["bbox"], im["width"], im["height"], "object", "drawn")]}}
        t0 = time.perf_counter()
        r = requests.post(url, json=body, timeout=60)
        r.raise_for_status()
        return time.perf_counter() - t0, r.json()["results"][0]

    request(images[0], True)   # warm-up: model load, first-call allocations
    request(images[0], False)
    rows = {}
    for name, interactive in (("interactive (one drawn box)", True),
                              ("pre-annotation (whole task)", False)):
        times, regions = [], []
        for im in images:
            t, res = request(im, interactive)
            times.append(t)
            regions.append(len(res["result"]))
        ms = 1000 * np.array(times)
        rows[name] = {"median_ms": round(float(np.median(ms)), 1),
                      "p95_ms": round(float(np.percentile(ms, 95)), 1),
                      "requests": len(ms), "regions_per_task": float(np.mean(regions))}
    server.shutdown()
    h, w = images[0]["height"], images[0]["width"]
    out = {"image_size": f"{w}x{h}", "threads": args.threads, "target_ms": 300, **rows}
    print(json.dumps(out, indent=1))
    (ROOT / "bench" / "results" / "annotation.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
