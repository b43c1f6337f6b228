"""Start and stop a local Label Studio server (its own venv, process group, sqlite data dir)."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError

LS_VERSION = "1.23.2"
ROOT = Path(__file__).resolve().parents[1]


# Label Studio refuses to call URLs on reserved networks (SSRF protection). The ML backend runs
# beside the server on 127.0.0.1, so loopback is allowed; every other reserved IPv4/IPv6 range
# that Label Studio bans by default stays banned.
BANNED_SUBNETS = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
                  "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
                  "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
                  "233.252.0.0/24", "240.0.0.0/4", "255.255.255.255/32", "::/128",
                  "::ffff:0:0/96", "64:ff9b::/96", "100::/64", "2001::/32", "2002::/16",
                  "fc00::/7", "fe80::/10", "ff00::/8"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_server_venv(venv: Path = ROOT / ".venv-ls") -> Path:
    """Create .venv-ls with the pinned label-studio if it is not there yet; return its exe."""
    exe = venv / "bin" / "label-studio"
    stamp = venv / f".stamp-label-studio-{LS_VERSION}"
    if exe.is_file() and stamp.is_file():
        return exe
    py = "python3.11"
    print(f"installing label-studio=={LS_VERSION} into {venv} (once; about 2 minutes, "
          f"pip's progress follows)", flush=True)
    subprocess.run([py, "-m", "venv", str(venv)], check=True)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "--progress-bar", "on",
                        f"label-studio=={LS_VERSION}"])   # its output to the terminal
    if r.returncode != 0:
        raise UserError(f"could not install label-studio=={LS_VERSION} into {venv} (pip exit "
                        f"code {r.returncode}: its reason is printed above)")
    stamp.touch()
    return exe


@dataclass
class Server:
    url: str
    pid: int
    data_dir: Path
    log: Path

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's whole process group (it spawns workers) by its PID."""
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return
            try:  # reap if it is our child
                if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                    return
            except ChildProcessError:
                pass
            time.sleep(0.2)
        os.killpg(self.pid, signal.SIGKILL)


def health(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# The token the Makefile used to set for everyone (`weakseg-local-<uid>-token`): predictable
DEFAULT_TOKEN = re.compile(r"^weakseg-local-\d+-token$")
MIN_TOKEN_CHARS = 20


def loopback(address: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_bind(bind: str, token: str) -> None:
    """Refuse to serve beyond this machine while the API token is guessable: the admin's
    token opens every project, image and annotation through the API."""
    if loopback(bind):
        return
    if DEFAULT_TOKEN.match(token) or len(token) < MIN_TOKEN_CHARS:
        raise UserError(f"annotation.bind={bind} serves Label Studio to other machines, but "
                        f"the API token is a predictable default or shorter than "
                        f"{MIN_TOKEN_CHARS} characters; unset LABEL_STUDIO_API_TOKEN (a random "
                        f"one is made once and kept in {TOKEN_FILE} in the server's data "
                        f"folder) or set it to {MIN_TOKEN_CHARS}+ random characters")


def local_url(bind: str, port: int) -> str:
    """Where this machine reaches a server bound to `bind` (0.0.0.0 / :: : via loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def start(data_dir, port: int, token: str, username: str, password: str,
          document_root, venv: Path = ROOT / ".venv-ls", wait_s: float = 120.0,
          bind: str = "127.0.0.1") -> Server:
    """Start Label Studio listening on bind:port; return once /health answers.

    The admin user and a fixed API token come from the arguments (never logged); local-file
    serving is confined to `document_root`; analytics and update checks are off; sign-up
    only through the invite link. `bind` is the address the web server listens on
    (Label Studio's --internal-host, which is 0.0.0.0 unless given: every interface);
    a non-loopback address is refused while the token is a guessable one (check_bind).
    """
    check_bind(bind, token)
    exe = ensure_server_venv(venv)
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    Path(document_root).mkdir(parents=True, exist_ok=True)  # linked image folders go there
    env = dict(os.environ,
               LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
               LABEL_STUDIO_USERNAME=username, LABEL_STUDIO_PASSWORD=password,
               LABEL_STUDIO_USER_TOKEN=token, LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
               LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
               LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(Path(document_root).resolve()),
               LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
               COLLECT_ANALYTICS="false", LATEST_VERSION_CHECK="false",
               SENTRY_DSN="", FRONTEND_SENTRY_DSN="", DJANGO_DB="sqlite",
               USE_DEFAULT_BANNED_SUBNETS="false",
               USER_ADDITIONAL_BANNED_SUBNETS=",".join(BANNED_SUBNETS))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = data_dir / "server.log"
    url = local_url(bind, port)
    with open(log, "ab") as out:
        # no --host: Label Studio's URLs stay relative to whatever address reached it
        proc = subprocess.Popen([str(exe), "start", "--internal-host", bind, "--port", str(port),
                                 "--no-browser", "--data-dir", str(data_dir)],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # own process group: stop by PID
    server = Server(url, proc.pid, data_dir, log)
    (data_dir / "server.json").write_text(json.dumps({"url": url, "pid": proc.pid}))
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise UserError(f"Label Studio exited at start-up (code {proc.returncode}); "
                            f"see {log}")
        if health(url):
            return server
        time.sleep(0.5)
    server.stop()
    raise UserError(f"Label Studio did not answer {url}/health within {wait_s:.0f} s; see {log}")


TOKEN_FILE = "api_token.txt"


def password_file(data_dir) -> Path:
    return Path(data_dir) / "admin_password.txt"


def token_file(data_dir) -> Path:
    return Path(data_dir) / TOKEN_FILE


def kept_secret(f: Path, make) -> str:
    """A secret made once by `make()` and kept owner-only (0600) in file f; an existing file
    readable by others is refused (it may have been read)."""
    if f.is_file():
        if f.stat().st_mode & 0o077:
            raise UserError(f"{f} is readable by other users; `chmod 600 {f}` (and, if others "
                            f"may have read it, delete it to make a new one)")
        return f.read_text().strip()
    f.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


def admin_password(data_dir) -> str:
    """The local admin's password: random, made once, kept owner-only in the server's data
    folder (never derived from the API token, which scripts pass around)."""
    return kept_secret(password_file(data_dir), lambda: secrets.token_urlsafe(18))


def api_token(data_dir, env: str = "LABEL_STUDIO_API_TOKEN") -> str:
    """The admin's API token: $LABEL_STUDIO_API_TOKEN when set, else a random one made once
    and kept owner-only beside the admin password. (Label Studio takes it at the server's
    first start, when it creates the admin; a server made with another token keeps that.)"""
    return os.environ.get(env) or kept_secret(token_file(data_dir), lambda: secrets.token_hex(20))


def project_token(a) -> str:
    """The token for the `annotation` config node `a`: $<a.token_env> when set, else the one
    kept in its server's data folder (api_token)."""
    return api_token(a.data_dir, a.token_env)


def running(data_dir) -> Server | None:
    """The server started earlier for `data_dir`, if it still answers."""
    f = Path(data_dir) / "server.json"
    if not f.is_file():
        return None
    info = json.loads(f.read_text())
    if health(info["url"]):
        return Server(info["url"], info["pid"], Path(data_dir), Path(data_dir) / "server.log")
    return None


def main(argv: list[str]) -> int:
    """python -m annotation.server start <data_dir> <port> <document_root> [bind address]
    | stop <data_dir>"""
    if len(argv) in (4, 5) and argv[0] == "start":
        if running(argv[1]):
            print(f"Label Studio already running: {running(argv[1]).url}")
            return 0
        t0 = time.time()
        s = start(argv[1], int(argv[2]), api_token(argv[1]), "admin@weakseg.local",
                  os.environ.get("LABEL_STUDIO_PASSWORD") or admin_password(argv[1]), argv[3],
                  bind=argv[4] if len(argv) == 5 else "127.0.0.1")
        print(f"Label Studio at {s.url} (pid {s.pid}, up in {time.time() - t0:.0f} s); "
              f"log in as admin@weakseg.local, password: $LABEL_STUDIO_PASSWORD if set, "
              f"else the file {password_file(argv[1])}")
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        s = running(argv[1])
        assistant = Path(argv[1]) / "assistant.json"
        if assistant.is_file():
            from annotation.ml_backend import stop as stop_assistant
            pid = stop_assistant(json.loads(assistant.read_text())["run_dir"])
            assistant.unlink()
            if pid:
                print(f"stopped the labelling assistant (pid {pid})")
        if s:
            s.stop()
            print(f"stopped Label Studio (pid {s.pid})")
        else:
            print("no running Label Studio for", argv[1])
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
