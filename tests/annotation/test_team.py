"""A team, not one laptop: the bind address, the kept token, annotator accounts through the
invite link, and who annotated what carried into points.json (a real server on 127.0.0.2)."""
import os
import secrets
import socket

import pytest

from annotation import server as ls_server
from annotation import sync as ls_sync, tasks
from bench.annotator import simulate
from annotation.client import connect
from annotation.team import invite, members, sign_up
from pipeline.data.coco import load_coco
from pipeline.errors import UserError
from pipeline.io import read_json


def test_beyond_loopback_only_with_a_token_nobody_can_guess():
    strong = secrets.token_hex(20)
    for bind in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        ls_server.check_bind(bind, "weakseg-local-1000-token")     # this machine only: fine
    for bind in ("0.0.0.0", "192.168.1.20", "::"):
        with pytest.raises(UserError, match=f"annotation.bind={bind} .*predictable"):
            ls_server.check_bind(bind, "weakseg-local-1000-token")
        with pytest.raises(UserError, match="shorter than 20"):
            ls_server.check_bind(bind, "short-token")
        ls_server.check_bind(bind, strong)


def test_the_token_is_made_once_and_kept_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_API_TOKEN", raising=False)
    t = ls_server.api_token(tmp_path)
    f = ls_server.token_file(tmp_path)
    assert len(t) == 40 and oct(f.stat().st_mode & 0o777) == "0o600"
    assert ls_server.api_token(tmp_path) == t                      # kept, not made again
    monkeypatch.setenv("LABEL_STUDIO_API_TOKEN", "mine-" + "x" * 20)
    assert ls_server.api_token(tmp_path) == "mine-" + "x" * 20     # the environment wins
    monkeypatch.delenv("LABEL_STUDIO_API_TOKEN")
    os.chmod(f, 0o644)                                             # others could read it
    with pytest.raises(UserError, match="readable by other users"):
        ls_server.api_token(tmp_path)


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.e2e
def test_two_annotators_on_127_0_0_2_and_who_did_what_in_points_json(
        tmp_path_factory, tiny_sample, monkeypatch):
    """A server bound to 127.0.0.2 (not every interface), two accounts made through the
    invite link, each annotating through its own token; one task skipped. Sync says who
    placed which points, how long it took, and which task was skipped."""
    monkeypatch.delenv("LABEL_STUDIO_API_TOKEN", raising=False)
    data = tmp_path_factory.mktemp("team_ls")
    port = ls_server.free_port()
    token = ls_server.api_token(data)
    srv = ls_server.start(data, port, token, "lead@weakseg.local", "pw-" + secrets.token_hex(8),
                          tiny_sample, bind="127.0.0.2")
    try:
        assert srv.url == f"http://127.0.0.2:{port}"
        assert not answers("127.0.0.1", port)     # bound where asked, not on every interface
        lead = connect(srv.url, token)
        gt = load_coco(tiny_sample / "sample" / "annotations" / "instances_train.json")
        coco = dict(gt, categories=[{"id": 1, "name": "object"}],
                    annotations=[dict(a, category_id=1) for a in gt["annotations"]])
        pid = tasks.get_or_create_project(lead, f"team-{secrets.token_hex(3)}", ["object"], 3)
        root = tiny_sample / "sample" / "train"
        tasks.import_coco(lead, pid, coco, root, tiny_sample, n_points=3)

        inv = invite(lead)
        assert inv["invite_url"].startswith("/user/signup/?token=")
        with pytest.raises(UserError, match="refused the sign-up"):
            sign_up(srv.url, "not-the-invite-token", "eve@example.org", "Str0ng-pass-1")
        people = {}
        for email in ("ann@example.org", "bob@example.org"):
            people[email] = connect(srv.url, sign_up(srv.url, inv["token"], email,
                                                     "Str0ng-pass-" + secrets.token_hex(4)))
            assert people[email].users.whoami().email == email
        ids = {v: k for k, v in members(lead).items()}
        assert {"ann@example.org", "bob@example.org"} <= set(ids)

        assert simulate.annotate_all(people["ann@example.org"], pid, gt, limit=3,
                                     seconds=40.0) == 3
        assert simulate.annotate_all(people["bob@example.org"], pid, gt, limit=2,
                                     seconds=25.0) == 2
        left = [t.id for t in lead.tasks.list(project=pid, fields="all")
                if not t.model_dump()["annotations"]]
        people["bob@example.org"].annotations.create(id=left[0], result=[],
                                                      was_cancelled=True, lead_time=3.0)

        work = tmp_path_factory.mktemp("team_sync")
        out = work / "points.json"
        res = ls_sync.sync(lead, pid, work, {im["id"]: im for im in gt["images"]},
                           coco["categories"], root, out, 3)
        assert res["images"] == 5 and res["skipped"] == 1 and res["annotated"] == 5
        assert res["annotators"] == 2
        rows = {r["task"]: r for r in read_json(work / "tasks.json")}
        assert rows[left[0]]["skipped"] and rows[left[0]]["annotator_email"] == "bob@example.org"
        done = [r for r in rows.values() if r["annotations"] and not r["skipped"]]
        assert sorted(r["annotator_email"] for r in done) == ["ann@example.org"] * 3 + \
            ["bob@example.org"] * 2
        assert {r["lead_time"] for r in done if r["annotator"] == ids["ann@example.org"]} == {40.0}
        by_task = {r["task"]: r["annotator_email"] for r in done}
        anns = load_coco(out)["annotations"]
        assert anns and all(a["annotator"] == by_task[a["task"]] for a in anns)
        assert sum(len(r["file_name"] or "") > 0 for r in rows.values()) == len(rows)
    finally:
        srv.stop()
