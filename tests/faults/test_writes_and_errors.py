"""Outputs are readable like any other file, a full disk is one line, errors leak no secrets,
Label Studio regions that make no sense are skipped with a warning (issue 11)."""
import errno
import os
import stat

import pytest

from annotation.protocol import box_result, point_result, results_to_instances
from pipeline import io
from pipeline.errors import UserError, describe


def test_outputs_respect_the_umask(tmp_path):
    p = io.write_json(tmp_path / "metrics.json", {"a": 1})
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~io._umask()  # not mkstemp's 0600
    if not io._umask() & 0o044:
        assert stat.S_IMODE(p.stat().st_mode) & 0o044  # group and others may read it


def test_disk_full_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "pseudo_labels.json"
    io.write_json(target, {"old": True})

    def full(*a, **k):  # the real disk cannot be filled on demand in a test
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match=f"no space left in {tmp_path} while writing "
                                        f"pseudo_labels.json; free space and rerun") as e:
        io.write_json(target, {"new": True})
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert io.read_json(target) == {"old": True}
    assert not list(tmp_path.glob(".*.tmp"))


def test_http_errors_never_carry_response_headers():
    from label_studio_sdk.core.api_error import ApiError
    e = ApiError(status_code=500, headers={"set-cookie": "sessionid=SECRET123; Path=/"},
                 body={"detail": "server error"})
    text = describe(e)
    assert "SECRET123" not in text and "set-cookie" not in text
    assert text.startswith("ApiError: HTTP 500") and "server error" in text


W, H = 100, 80
CATS = {"object": 1}


def test_boxes_outside_the_image_or_of_negative_size_are_skipped():
    res = [box_result([10, 10, 20, 20], W, H, "object", "b0"),
           box_result([150, 10, 20, 20], W, H, "object", "b1"),     # right of the image
           box_result([10, 10, -5, 20], W, H, "object", "b2"),      # negative width
           box_result([90, 70, 30, 30], W, H, "object", "b3")]      # partly outside: clipped
    inst, warn = results_to_instances(res, W, H, CATS)
    assert [i["bbox"] for i in inst] == [[10, 10, 20, 20], [90, 70, 10, 10]]
    assert any("'b1' lies outside" in w for w in warn)
    assert any("'b2' has size -5.0x20.0" in w for w in warn)


def test_non_numeric_coordinates_are_skipped_with_a_warning():
    bad = box_result([10, 10, 20, 20], W, H, "object", "b0")
    bad["value"]["x"] = "ten"
    pt = point_result(5, 5, W, H, True, "p9")
    pt["value"]["y"] = None
    inst, warn = results_to_instances([bad, pt], W, H, CATS)
    assert inst == [] and len(warn) == 2 and all("non-numeric" in w for w in warn)


def test_points_of_a_deleted_box_are_dropped_not_reattached():
    # box b1 (and its points) overlapped box b0; the annotator deleted b1 only
    res = [box_result([0, 0, 60, 60], W, H, "object", "b0"),
           point_result(10, 10, W, H, True, "b0p0"),
           point_result(30, 30, W, H, False, "b1p0"),  # background of b1, inside b0
           point_result(40, 40, W, H, True, "b1p1")]
    inst, warn = results_to_instances(res, W, H, CATS)
    assert inst[0]["point_coords"] == [[10, 10]] and inst[0]["point_labels"] == [1]
    assert sum("deleted box 'b1'" in w for w in warn) == 2


def test_points_dragged_out_of_every_box_are_skipped():
    res = [box_result([0, 0, 20, 20], W, H, "object", "b0"),
           point_result(70, 70, W, H, True, "new1")]
    inst, warn = results_to_instances(res, W, H, CATS)
    assert inst[0]["point_coords"] == [] and any("lies in no box" in w for w in warn)


# issue 34: the CLI's last line names the file that failed, and HTTP errors are one line

FULL_DISK = """
import errno, os, sys
def full(fd):  # a disk that is full for every write (a test cannot fill a real one)
    raise OSError(errno.ENOSPC, "No space left on device")
os.fsync = full
sys.argv = ["pipeline", *sys.argv[1:]]
import runpy
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)  # python -m pipeline
"""


def test_disk_full_names_the_file_that_failed_even_when_error_txt_cannot_be_written(
        tiny_sample, tmp_path):
    import subprocess
    import sys
    from tests.conftest import ROOT, TINY_SAMPLE, cli_env
    r = subprocess.run([sys.executable, "-c", FULL_DISK, "stage=baseline",
                        f"paths.data_dir={tiny_sample}", f"paths.output_dir={tmp_path}",
                        *TINY_SAMPLE, "baseline.methods=[threshold_components]",
                        "baseline.splits=[val]", "overlays=0"],
                       cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left in ") and "shard_00000.json" in last, last


@pytest.fixture
def answering(request):
    """A server whose /health is fine and whose API answers every call with one HTTP status
    and a session cookie (Label Studio cannot be made to fail on demand)."""
    import http.server
    import json as _json
    import threading
    code = request.param

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            ok = self.path.startswith("/health")
            body = _json.dumps({"status": "UP"} if ok else {"detail": "server said no"}).encode()
            self.send_response(200 if ok else code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Set-Cookie", "sessionid=SECRET123; Path=/")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield code, srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.mark.e2e
@pytest.mark.parametrize("answering", [400, 404, 500, 503], indirect=True)
def test_http_errors_of_every_status_are_one_line_without_headers(answering, tmp_path):
    import subprocess
    import sys
    from tests.conftest import ROOT, cli_env
    code, port = answering
    r = subprocess.run([sys.executable, "-m", "pipeline", "stage=annotate",
                        "annotation.start_server=false", f"annotation.port={port}",
                        f"paths.output_dir={tmp_path}"],
                       cwd=ROOT, env=dict(cli_env(), LABEL_STUDIO_API_TOKEN="t"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "SECRET123" not in r.stderr + r.stdout
    assert "set-cookie" not in r.stderr.lower()
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: the server answered ApiError: HTTP {code}: ")
    assert "server said no" in lines[-1]
    log = "".join(p.read_text() for p in tmp_path.rglob("*.log"))
    assert "SECRET123" not in log
