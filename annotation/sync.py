"""Pull annotations from Label Studio: keep the raw export first, then convert to COCO points.

Incremental and restartable: raw task exports are stored one file per task under
`raw/` (atomically) before any conversion, so an interrupted or failing sync loses nothing
and a rerun refreshes only tasks whose annotations changed.
"""
from __future__ import annotations

import logging
from pathlib import Path

from annotation.protocol import results_to_instances
from pipeline.data.coco import make_coco, save_coco
from pipeline.errors import UserError, describe
from pipeline.io import read_json, write_json

log = logging.getLogger(__name__)


def _dump(obj):
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else dict(obj)


def _tasks(client, project: int, state: dict, state_f: Path):
    """The project's tasks; a server that stops answering ends the sync in one line, with
    what was pulled so far kept (raw files and their state)."""
    n = 0
    try:
        total = getattr(client.projects.get(id=project), "task_number", None)
        for t in client.tasks.list(project=project, fields="all"):
            n += 1
            yield t
    except Exception as e:  # httpx transport errors, SDK ApiError, timeouts
        if isinstance(e, UserError):
            raise
        write_json(state_f, state)
        url = str(getattr(getattr(client, "_client_wrapper", None), "_base_url", "") or
                  "the server")
        raise UserError(f"Label Studio at {url} stopped answering during sync ({describe(e)}); "
                        f"{n} of {total if total is not None else '?'} tasks pulled and kept; "
                        f"rerun to continue") from None


def pull(client, project: int, raw_dir: Path) -> dict:
    """Store every annotated task's export under raw_dir; skip unchanged ones."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    state_f = raw_dir / "_state.json"
    state = read_json(state_f) if state_f.is_file() else {}
    seen, changed = set(), 0
    for t in _tasks(client, project, state, state_f):
        task = _dump(t)
        seen.add(str(task["id"]))
        anns = task.get("annotations") or []
        raw = raw_dir / f"task_{task['id']}.json"
        if not anns and not raw.is_file():
            continue
        stamp = (max(str(a.get("updated_at") or a.get("created_at") or a.get("id"))
                     for a in anns) if anns else "no annotations")
        if state.get(str(task["id"])) == stamp and raw.is_file():
            continue
        if not anns:  # every annotation deleted on the server: its old points must go too
            log.warning("task %s lost all its annotations on the server; its points are "
                        "dropped (last export kept as %s)", task["id"],
                        f"annotations_deleted_task_{task['id']}.json")
            raw.replace(raw_dir / f"annotations_deleted_task_{task['id']}.json")
        write_json(raw, task)
        state[str(task["id"])] = stamp
        changed += 1
    # tasks deleted on the server: their raw files stay (nothing lost) but are marked
    gone = [k for k in state if k not in seen]
    for k in gone:
        log.warning("task %s was deleted on the server; its last export is kept but not "
                    "converted", k)
        state.pop(k)
        f = raw_dir / f"task_{k}.json"
        if f.is_file():
            f.rename(raw_dir / f"deleted_task_{k}.json")
    write_json(state_f, state)
    try:   # who is who: annotations name their author by account id only
        from annotation.team import members
        write_json(raw_dir / USERS, {str(k): v for k, v in members(client).items()})
    except Exception as e:  # an account that may not list users: ids stay as they are
        log.warning("could not list Label Studio accounts (%s); annotators kept as ids",
                    describe(e))
    return {"changed": changed, "deleted": len(gone), "tasks": len(seen)}


USERS = "_users.json"


def annotator(a: dict, users: dict[str, str]) -> dict:
    """The author of an exported annotation: {"id", "email"} (email None when unknown)."""
    who = a.get("completed_by")
    if isinstance(who, dict):
        return {"id": who.get("id"), "email": who.get("email")}
    return {"id": who, "email": users.get(str(who))}


def task_row(task: dict, users: dict[str, str]) -> dict:
    """What one task's export says of the work on it: who, how long, skipped or not."""
    anns = task.get("annotations") or []
    latest = max(anns, key=lambda a: str(a.get("updated_at") or a.get("created_at")),
                 default=None)
    data = task.get("data") or {}
    row = {"task": task.get("id"), "image_id": data.get("weakseg_image_id"),
           "file_name": data.get("file_name"), "annotations": len(anns)}
    if latest is not None:
        who = annotator(latest, users)
        row.update(annotator=who["id"], annotator_email=who["email"],
                   lead_time=latest.get("lead_time"), skipped=bool(latest.get("was_cancelled")),
                   updated_at=latest.get("updated_at") or latest.get("created_at"))
    return row


def convert(raw_dir: Path, images: dict[int, dict], categories: list[dict],
            image_root: Path, points_per_box: int = 0) -> tuple[dict, list[str]]:
    """Raw task exports -> COCO with point_coords/point_labels (+ lead_time per instance,
    its task and its annotator's email, or account id when unknown); instances with fewer
    than `points_per_box` points carry `"fewer_points": true`."""
    cat_ids = {c["name"]: c["id"] for c in categories}
    out_images, anns, warnings = {}, [], []
    root = image_root.resolve()
    users = read_json(raw_dir / USERS) if (raw_dir / USERS).is_file() else {}
    for f in sorted(raw_dir.glob("task_*.json"), key=lambda p: int(p.stem.split("_")[1])):
        task = read_json(f)
        data = task.get("data", {})
        image_id = data.get("weakseg_image_id")
        name = str(data.get("file_name", ""))
        try:
            image_id = int(image_id)
        except (TypeError, ValueError):
            warnings.append(f"{f.name}: image id {image_id!r} is not a number; skipped")
            continue
        if image_id not in images:
            warnings.append(f"{f.name}: image {image_id} is not in this dataset; skipped")
            continue
        if not (root / name).resolve().is_relative_to(root):
            warnings.append(f"{f.name}: image path {name!r} escapes the dataset root; skipped")
            continue
        info = images[image_id]
        if name != info["file_name"]:  # points placed on one image must not land on another
            warnings.append(f"{f.name}: task shows {name!r} but image {image_id} is "
                            f"{info['file_name']!r} in this dataset; skipped")
            continue
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not done:
            continue
        latest = max(done, key=lambda a: str(a.get("updated_at") or a.get("created_at")))
        inst, warn = results_to_instances(latest.get("result") or [], info["width"],
                                          info["height"], cat_ids, points_per_box)
        warnings += [f"{f.name}: {w}" for w in warn]
        lead = latest.get("lead_time")
        who = annotator(latest, users)
        for a in inst:
            a["image_id"] = info["id"]
            a["task"] = task.get("id")
            a["annotator"] = who["email"] or who["id"]   # who placed these points
            if lead and inst:
                a["lead_time"] = float(lead) / len(inst)  # seconds per instance
            anns.append(a)
        out_images[info["id"]] = info
    coco = make_coco([out_images[k] for k in sorted(out_images)], anns, categories,
                     {"description": "weakseg points from Label Studio"})
    return coco, warnings


def sync(client, project: int, work_dir: Path, images: dict[int, dict], categories: list[dict],
         image_root: Path, out_json: Path, points_per_box: int = 0) -> dict:
    raw_dir = Path(work_dir) / "raw"
    counts = pull(client, project, raw_dir)
    coco, warnings = convert(raw_dir, images, categories, image_root, points_per_box)
    for w in warnings:
        log.warning("%s", w)
    if not coco["annotations"] and not counts["tasks"]:
        raise UserError(f"project {project} has no tasks; run `make annotate` first")
    save_coco(out_json, coco)
    rows = work_log(raw_dir)
    write_json(out_json.with_name(TASKS), rows, indent=1)   # beside points.json
    skipped = sum(bool(r.get("skipped")) for r in rows)
    if skipped:
        log.warning("%d task(s) skipped by their annotator (not in %s): %s", skipped,
                    out_json.name, ", ".join(str(r["task"]) for r in rows if r.get("skipped")))
    dropped = sum("belonged to deleted box" in w for w in warnings)
    fewer = sum(bool(a.get("fewer_points")) for a in coco["annotations"])
    if dropped or fewer:
        log.warning("%d point(s) of deleted boxes dropped (never re-attached); %d box(es) with "
                    "fewer than %d points kept and flagged fewer_points in %s", dropped, fewer,
                    points_per_box, out_json)
    return dict(counts, images=len(coco["images"]), instances=len(coco["annotations"]),
                warnings=len(warnings), dropped_points=dropped, fewer_points=fewer,
                skipped=skipped, annotated=sum(1 for r in rows if r.get("annotations")
                                                and not r.get("skipped")),
                annotators=len({r["annotator"] for r in rows
                                if r.get("annotations") and not r.get("skipped")}))


TASKS = "tasks.json"   # one row per synced task: annotator, lead time, skipped


def work_log(raw_dir: Path) -> list[dict]:
    """task_row for every synced task (raw exports), in task order."""
    users = read_json(raw_dir / USERS) if (raw_dir / USERS).is_file() else {}
    return [task_row(read_json(f), users)
            for f in sorted(raw_dir.glob("task_*.json"), key=lambda p: int(p.stem.split("_")[1]))]
