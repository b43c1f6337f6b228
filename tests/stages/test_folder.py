"""The main job on a user's own folder of images, anywhere on disk, no ground truth: the
stages of `make pseudo-labels DATA=...` end to end, the report, and `stage=annotate` on it."""
import http.cookiejar
import re
import secrets
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.__main__ import run_stage
from pipeline.data.coco import load_coco
from pipeline.io import read_json

pytestmark = pytest.mark.e2e

TINY = ["backbone.weights=null", "overlays=2",
        "pretrain.max_iter=2", "pretrain.batch_size=4", "pretrain.crop_size=32",
        "pretrain.queue_size=8", "pretrain.hidden=32",
        "freemask.short_side=128", "freemask.max_size=256", "freemask.shard_size=8",
        "solo.train.max_iter=3", "solo.train.batch_size=2", "solo.inference.shard_size=8",
        "solo.targets_min_score=0.0", "solo.self_training.score_threshold=0.0",
        "solo.inference.score_threshold=0.0", "solo.inference.update_threshold=0.0"]
STAGES = ["sample", "pretrain", "freemask", "solo", "baseline", "report"]


def blank_images(folder: Path) -> None:
    """Two images without any object: flat grey and grey noise."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((160, 160, 3), 128, np.uint8)).save(folder / "grey.png")
    noise = np.clip(128 + rng.normal(0, 20, (160, 160, 1)), 0, 255).astype(np.uint8)
    Image.fromarray(noise.repeat(3, 2)).save(folder / "noise.png")


@pytest.fixture
def photos(tmp_path, tiny_sample):
    """A user's folder outside every data folder of the project: 4 photos in a sub-folder
    (the sample's images, nothing else of them) and 2 object-free images."""
    folder = tmp_path / "elsewhere" / "my_photos"
    (folder / "day1").mkdir(parents=True)
    for p in sorted((tiny_sample / "sample" / "train").glob("*.png"))[:4]:
        shutil.copy(p, folder / "day1" / p.name)
    blank_images(folder)
    return folder


def folder_cfg(sample_cfg, folder, stage, *extra):
    return sample_cfg(f"stage={stage}", "dataset=folder", f"dataset.images={folder}", *TINY,
                      *extra, run_name=stage)


def test_pseudo_labels_on_a_bare_folder_end_to_end(sample_cfg, photos, capsys):
    """make pseudo-labels DATA=<folder>: every stage runs; the report, with no ground truth,
    describes the pseudo-labels, points at the overlays and warns (two of six images hold
    nothing, and the colour graph still cuts them)."""
    for stage in STAGES:
        run_stage(folder_cfg(sample_cfg, photos, stage))
    cfg = folder_cfg(sample_cfg, photos, "report")
    work = Path(cfg.paths.work_dir)
    labels = load_coco(work / "solo" / "pseudo_labels.json")
    assert len(labels["images"]) == 6
    assert (work / "freemask" / "overlays" / "train").is_dir()
    table = (Path(cfg.run_dir) / "table.md").read_text()
    assert "has no ground truth" in table and "not run yet" not in table
    for source in ("free masks", "SOLO round 1", "SOLO round 2", "pseudo-labels"):
        assert re.search(rf"^\| {source} \| 6 \| \d+ \|", table, re.M), source
    assert "overlays (image | masks)" in table
    assert isinstance(read_json(Path(cfg.run_dir) / "warnings.json"), list)


def test_report_warns_on_object_free_images(sample_cfg, tmp_path):
    """Flat grey and noise hold no object; the free-mask stage still returns masks there.
    The report says so from the masks alone."""
    folder = tmp_path / "blank"
    blank_images(folder)
    run_stage(folder_cfg(sample_cfg, folder, "freemask"))
    assert load_coco(Path(folder_cfg(sample_cfg, folder, "freemask").run_dir)
                     / "free_masks_train.json")["annotations"], "the free masks found nothing"
    run_stage(folder_cfg(sample_cfg, folder, "report"))
    out = Path(folder_cfg(sample_cfg, folder, "report").run_dir)
    warned = read_json(out / "warnings.json")
    assert warned and all(w.startswith("free masks:") for w in warned)
    assert "WARNING: these pseudo-labels look like colour regions" in \
        (out / "table.md").read_text()


def logged_in(url, username, password):
    """A urllib opener holding a Label Studio session (the UI's login form)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{url}/user/login").read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    data = urllib.parse.urlencode({"email": username, "password": password,
                                   "csrfmiddlewaretoken": csrf}).encode()
    opener.open(urllib.request.Request(f"{url}/user/login", data=data,
                                       headers={"Referer": f"{url}/user/login"})).read()
    return opener


def test_annotate_a_folder_outside_the_document_root(label_studio, sample_cfg, photos,
                                                     monkeypatch):
    """The server serves files under its document root only (here the tiny sample's data
    folder); the user's folder lies elsewhere: stage=annotate imports it all the same, and
    Label Studio serves its images (also from a sub-folder) to a logged-in annotator."""
    from annotation.client import connect
    monkeypatch.setenv("LABEL_STUDIO_API_TOKEN", label_studio.token)
    run_stage(folder_cfg(sample_cfg, photos, "freemask"))
    cfg = folder_cfg(sample_cfg, photos, "freemask")
    source = Path(cfg.run_dir) / "free_masks_train.json"
    port = label_studio.url.rsplit(":", 1)[1]
    res = run_stage(sample_cfg(
        "stage=annotate", "dataset=folder", f"dataset.images={photos}",
        f"annotation.port={port}", "annotation.start_server=false",
        "annotation.assistant.enabled=false", f"annotation.source={source}",
        f"annotation.project=folder-{secrets.token_hex(3)}", run_name="annotate"))
    assert res["imported"] == 6
    client = connect(label_studio.url, label_studio.token)
    urls = {t.data["file_name"]: t.data["image"] for t in client.tasks.list(project=res["project"],
                                                                            fields="all")}
    opener = logged_in(label_studio.url, label_studio.username, label_studio.password)
    for name in ("day1/" + sorted(p.name for p in (photos / "day1").iterdir())[0], "grey.png"):
        body = opener.open(label_studio.url + urls[name]).read()
        assert body == (photos / name).read_bytes(), name


@pytest.mark.parametrize("inside", [True, False])
def test_a_folder_anywhere_gets_an_url_that_the_assistant_resolves(tmp_path, inside):
    """A folder under the document root is served as it is; any other through a link under
    it, made once; the labelling assistant finds the file behind the task's URL either way,
    and `..` still cannot climb out of the root."""
    from annotation.ml_backend import image_path
    from annotation.tasks import local_url, served_root
    from pipeline.errors import UserError
    root = tmp_path / "data"
    folder = (root / "mine") if inside else (tmp_path / "far" / "away")
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.png").write_bytes(b"png")
    served = served_root(folder, root)
    assert served == folder if inside else (served.parent == root / "linked-images"
                                            and served.is_symlink())
    assert served_root(folder, root) == served  # a rerun reuses it
    url = local_url(served, root, "sub/x.png")
    assert url.startswith("/data/local-files/?d=") and ".." not in url
    assert image_path(url, root).read_bytes() == b"png"
    with pytest.raises(UserError, match="outside the document root"):
        image_path("/data/local-files/?d=linked-images/../../far/away/sub/x.png", root)
