"""Stage `annotate`: start Label Studio if needed, create/update the point-labelling project from
a pseudo-label (or ground-truth) file, and print its URL."""
from __future__ import annotations

import logging
import os

from annotation import server as ls_server
from annotation import tasks
from annotation.client import connect
from pipeline.data.coco import load_coco
from pipeline.data.datasets import get_split
from pipeline.errors import UserError

log = logging.getLogger(__name__)


def token(a) -> str:
    t = os.environ.get(a.token_env)
    if not t:
        raise UserError(f"set the Label Studio API token in the environment variable "
                        f"{a.token_env} (make annotate sets a local default)")
    return t


def ensure_server(a) -> str:
    url = f"http://{a.host}:{a.port}"
    if ls_server.health(url):
        return url
    if not a.start_server:
        raise UserError(f"Label Studio is not running at {url}; run `make label-studio`")
    password = os.environ.get(a.password_env) or ls_server.admin_password(a.data_dir)
    s = ls_server.start(a.data_dir, int(a.port), token(a), a.username, password,
                        a.document_root)
    log.info("started Label Studio (pid %d) at %s; stop it with `make label-studio-stop`",
             s.pid, s.url)
    return s.url


def run(cfg) -> dict:
    a = cfg.annotation
    url = ensure_server(a)
    client = connect(url, token(a))
    split = get_split(cfg.dataset, a.split)
    coco = split.coco if a.source == "gt" else load_coco(a.source, "annotation.source")
    names = [c["name"] for c in coco["categories"]]
    pid = tasks.get_or_create_project(client, a.project, names, int(a.points_per_box))
    res = tasks.import_coco(client, pid, coco, split.image_root, a.document_root,
                            n_points=int(a.points_per_box), seed=int(a.seed))
    print(f"\nLabel Studio project {a.project!r}: {url}/projects/{pid}/data "
          f"({res['imported']} new tasks, {res['existing']} already there)\n"
          f"log in as {a.username}; password: ${a.password_env} if set, else the file "
          f"{ls_server.password_file(a.data_dir)}\n")
    return dict(res, project=pid, url=url)
