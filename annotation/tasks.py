"""Create or update a Label Studio project from a COCO file: one task per image, with boxes and
pre-placed points as predictions (pre-annotations) the annotator corrects."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from annotation.protocol import box_result, instructions, labeling_config, point_result
from pipeline.data.coco import annotations_by_image, decode_segmentation
from pipeline.errors import UserError

log = logging.getLogger(__name__)


# annotation.queue -> Label Studio's task sampling. "uncertainty": the label stream serves
# first the tasks whose prediction of the project's model version scores lowest (the mean
# score of its masks), i.e. the images the pseudo-labels are least sure of
QUEUES = {"uncertainty": "Uncertainty sampling", "sequential": "Sequential sampling",
          "uniform": "Uniform sampling"}


def get_or_create_project(client, title: str, category_names: list[str],
                          points_per_box: int = 10, mask_overlay: bool = False,
                          queue: str = "sequential") -> int:
    """The project named `title`, created with our labeling config and instructions; an
    existing one gets the current config, instructions and queue order (same labels, so
    annotations made under the old layout stay valid)."""
    if queue not in QUEUES:
        raise UserError(f"annotation.queue={queue!r} unknown; use one of {', '.join(QUEUES)}")
    settings = dict(label_config=labeling_config(category_names, mask_overlay),
                    expert_instruction=instructions(points_per_box), show_instruction=True,
                    sampling=QUEUES[queue])
    for p in client.projects.list():
        if p.title == title:
            try:
                client.projects.update(p.id, **settings)
            except Exception as e:  # e.g. a config edited by hand in the UI: keep it
                log.warning("project %r keeps its own labeling config (%s)", title, e)
            return p.id
    p = client.projects.create(title=title, **settings,
                               description="weakseg point annotation (box + points per object)")
    return p.id


def show_version(client, project: int, model_version: str) -> bool:
    """Make the project show, and queue by, the predictions of `model_version`. False (with
    a warning; the queue is then random) when Label Studio holds no prediction of it."""
    try:
        client.projects.update(project, model_version=model_version)
        return True
    except Exception as e:  # the SDK's ApiError, 400: "Model version doesn't exist ..."
        if getattr(e, "status_code", None) != 400:
            raise
        log.warning("project %d: no prediction of model version %r yet; Label Studio orders "
                    "its queue at random", project, model_version)
        return False


def _absolute(path) -> Path:
    """The absolute path, `..` folded, symbolic links NOT followed: how Label Studio itself
    compares local-files paths (a link under its document root stays under it)."""
    return Path(os.path.abspath(path))


def served_root(image_root, document_root) -> Path:
    """The image folder as Label Studio can serve it. The server serves files under its
    document root only (fixed when it starts; annotation.server.start resolves it): a folder
    under it is served as it is; any other gets a symbolic link under
    `<document_root>/linked-images/`, so a folder anywhere on disk can be annotated, also by
    a server that is already running."""
    root, real = Path(document_root).resolve(), Path(image_root).resolve()
    if root in real.parents:
        return real
    digest = hashlib.sha1(str(real).encode()).hexdigest()[:10]
    link = root / "linked-images" / f"{real.name or 'root'}-{digest}"
    if not (link.is_symlink() and link.resolve() == real):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(real, target_is_directory=True)
        os.replace(tmp, link)  # atomic: two runs may link the same folder at once
        log.info("Label Studio serves %s through the link %s (outside its document root %s)",
                 real, link, root)
    return link


def ensure_local_storage(client, project: int, image_root: Path) -> None:
    """Label Studio serves /data/local-files/ only under a local storage of the project: add
    one for the image folder (never synced: tasks come from import_coco)."""
    path = str(_absolute(image_root))
    if any(st.path == path for st in client.import_storage.local.list(project=project)):
        return
    client.import_storage.local.create(project=project, path=path, title="weakseg images",
                                       use_blob_urls=False, recursive_scan=False,
                                       regex_filter="^$")


def existing_image_ids(client, project: int) -> set[int]:
    ids = set()
    for t in client.tasks.list(project=project, fields="all"):
        v = (t.data or {}).get("weakseg_image_id")
        if v is not None:
            ids.add(int(v))
    return ids


def local_url(image_root: Path, document_root: Path, file_name: str) -> str:
    """/data/local-files/?d=<path relative to the server's document root>."""
    path, root = _absolute(image_root / file_name), Path(document_root).resolve()
    try:
        rel = path.relative_to(root) if root in path.parents else \
            path.resolve().relative_to(root)
    except ValueError:
        raise UserError(f"image {path} is outside the Label Studio document root "
                        f"{document_root}; set annotation.document_root to a parent "
                        f"folder of the images") from None
    return f"/data/local-files/?d={rel.as_posix()}"


def make_task(info: dict, anns: list[dict], image_url: str, n_points: int, seed: int,
              cat_names: dict[int, str], model_version: str) -> dict:
    """A task with one prediction: each box, and n points uniform in it labelled by the
    pseudo-mask (object where the mask is, background elsewhere) for the annotator to check.
    Every point is listed before every box: Label Studio stacks regions in list order, and a
    box listed first lies over its points, taking their clicks, drags and deletes."""
    w, h = info["width"], info["height"]
    rng = np.random.default_rng([seed, info["id"]])
    points, boxes = [], []
    for k, a in enumerate(anns):
        x, y, bw, bh = a["bbox"]
        boxes.append(box_result(a["bbox"], w, h, cat_names.get(a["category_id"], "object"),
                                f"b{k}"))
        mask = decode_segmentation(a["segmentation"], h, w) if "segmentation" in a else None
        for j in range(n_points):
            px, py = x + rng.random() * bw, y + rng.random() * bh
            inside = bool(mask[min(int(py), h - 1), min(int(px), w - 1)]) if mask is not None \
                else True
            points.append(point_result(px, py, w, h, inside, f"b{k}p{j}", f"b{k}"))
    result = points + boxes
    return {"data": {"image": image_url, "weakseg_image_id": info["id"],
                     "file_name": info["file_name"], "width": w, "height": h},
            "predictions": [{"model_version": model_version, "result": result,
                             "score": float(np.mean([a.get("score", 1.0) for a in anns]))
                             if anns else 0.0}]}


def import_coco(client, project: int, coco: dict, image_root, document_root, n_points: int = 10,
                seed: int = 0, model_version: str = "weakseg", batch: int = 200) -> dict:
    """Import the images of `coco` that the project does not hold yet. Returns counts."""
    image_root = served_root(image_root, document_root)
    ensure_local_storage(client, project, image_root)
    have = existing_image_ids(client, project)
    by_image = annotations_by_image(coco)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    new = [im for im in coco["images"] if im["id"] not in have]
    tasks = [make_task(im, by_image[im["id"]],
                       local_url(Path(image_root), Path(document_root), im["file_name"]),
                       n_points, seed, names, model_version) for im in new]
    for i in range(0, len(tasks), batch):
        client.projects.import_tasks(project, request=tasks[i:i + batch])
    log.info("imported %d new tasks (%d already there)", len(tasks), len(have))
    return {"imported": len(tasks), "existing": len(have)}


def find_project(client, title: str) -> int:
    """The id of the Label Studio project named `title`."""
    for p in client.projects.list():
        if p.title == title:
            return p.id
    raise UserError(f"no Label Studio project named {title!r}; run `make annotate`")


def repredict_tasks(client, project: int, model_version: str, predict) -> int:
    """Pre-annotate every task nobody has annotated yet with `predict(task)` (a prediction
    dict with result and score; None: leave the task), as predictions of `model_version`,
    and make the project show that version. Finished work is not touched; a task that has
    this version already is skipped (a rerun adds nothing)."""
    n = 0
    for t in client.tasks.list(project=project, fields="all"):
        task = t.model_dump(mode="json")
        if task.get("annotations") or any(p.get("model_version") == model_version
                                           for p in task.get("predictions") or []):
            continue
        pred = predict(task)
        if pred is None:
            continue
        client.predictions.create(task=task["id"], result=pred["result"], score=pred["score"],
                                  model_version=model_version)
        n += 1
    show_version(client, project, model_version)
    log.info("pre-annotated %d unlabelled task(s) from %s", n, model_version)
    return n


def repredict_unlabelled(client, project: int, coco: dict, n_points: int = 10, seed: int = 0,
                         model_version: str = "weakseg") -> int:
    """`repredict_tasks` from the masks of `coco` (tasks of other images are left alone)."""
    by_image = annotations_by_image(coco)
    infos = {im["id"]: im for im in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}

    def predict(task):
        image_id = (task.get("data") or {}).get("weakseg_image_id")
        if image_id is None or int(image_id) not in infos:
            return None
        info = infos[int(image_id)]
        return make_task(info, by_image[info["id"]], task["data"]["image"], n_points, seed,
                         names, model_version)["predictions"][0]
    return repredict_tasks(client, project, model_version, predict)
