"""Sync faults against the real server (issue 11): nothing stale, nothing mislabelled, a
server that stops answering ends in one line with what was pulled kept."""
import json

import httpx
import pytest

from annotation import sync as ls_sync
from pipeline.errors import UserError
from tests.annotation.test_label_studio import annotated, gt, project  # noqa: F401

pytestmark = pytest.mark.e2e
CATS = [{"id": 1, "name": "object"}]


def _convert(tmp_path, images, root):
    return ls_sync.convert(tmp_path / "raw", images, CATS, root)


def test_deleting_every_annotation_of_a_task_drops_its_points(project, gt, tiny_sample,
                                                              tmp_path):
    client, pid = project
    images, cats, root = annotated(client, pid, gt, tiny_sample, n_points=2)
    ls_sync.pull(client, pid, tmp_path / "raw")
    before, _ = _convert(tmp_path, images, root)
    task = next(iter(client.tasks.list(project=pid, fields="all")))
    image_id = task.data["weakseg_image_id"]
    assert any(a["image_id"] == image_id for a in before["annotations"])
    for a in client.annotations.list(id=task.id):
        client.annotations.delete(id=a.id)
    ls_sync.pull(client, pid, tmp_path / "raw")
    after, _ = _convert(tmp_path, images, root)
    assert not any(a["image_id"] == image_id for a in after["annotations"])
    assert len(after["images"]) == len(before["images"]) - 1
    kept = tmp_path / "raw" / f"annotations_deleted_task_{task.id}.json"
    assert json.loads(kept.read_text())["annotations"]  # the old export is not lost


def test_task_whose_file_name_is_not_its_images_is_skipped(project, gt, tiny_sample, tmp_path):
    client, pid = project
    images, cats, root = annotated(client, pid, gt, tiny_sample, n_points=1)
    ls_sync.pull(client, pid, tmp_path / "raw")
    f = sorted((tmp_path / "raw").glob("task_*.json"))[0]
    raw = json.loads(f.read_text())
    other = next(im for im in gt["images"] if im["id"] != raw["data"]["weakseg_image_id"])
    raw["data"]["file_name"] = other["file_name"]  # ids and names swapped by a hand edit
    f.write_text(json.dumps(raw))
    coco, warnings = _convert(tmp_path, images, root)
    assert any(f"task shows {other['file_name']!r}" in w for w in warnings)
    assert raw["data"]["weakseg_image_id"] not in {im["id"] for im in coco["images"]}


class _Dying:
    """The real client whose task listing fails after `after` tasks (a server that dies
    mid-sync, at a moment a test cannot otherwise pick)."""

    def __init__(self, client, after):
        self._c, self._after = client, after
        self.projects = client.projects
        self._client_wrapper = client._client_wrapper
        outer = self

        class Tasks:
            def list(self, **kw):
                for i, t in enumerate(outer._c.tasks.list(**kw)):
                    if i == outer._after:
                        raise httpx.ConnectError("connection refused")
                    yield t
        self.tasks = Tasks()


def test_server_dying_mid_sync_is_one_line_and_keeps_what_was_pulled(project, gt, tiny_sample,
                                                                     tmp_path):
    client, pid = project
    annotated(client, pid, gt, tiny_sample, n_points=1)
    with pytest.raises(UserError, match=r"stopped answering during sync .*ConnectError.*; "
                                        r"3 of 8 tasks pulled and kept; rerun to continue"):
        ls_sync.pull(_Dying(client, 3), pid, tmp_path / "raw")
    assert len(list((tmp_path / "raw").glob("task_*.json"))) == 3
    res = ls_sync.pull(client, pid, tmp_path / "raw")
    assert res["changed"] == 5 and res["tasks"] == 8  # the 3 kept ones are not pulled again
