"""A labelling team on one Label Studio server: the invite link, annotator accounts, who is who.

Label Studio 1.23.2 (community edition) has one organization; a person joins it through the
organization's invite link, `/user/signup/?token=<organization token>`, choosing their own
email and password (the server here accepts sign-ups only through that link:
LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK). Each annotation then records its author
(`completed_by`), which sync carries into points.json.

    python -m annotation.team invite [hydra overrides]     print the invite link
    python -m annotation.team add EMAIL [hydra overrides]  make an account with a random
        password (printed once) for someone who cannot open the link themselves
"""
from __future__ import annotations

import http.cookiejar
import json
import re
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request

from pipeline.errors import UserError


def invite(client) -> dict:
    """{"token", "invite_url"} of the organization (invite_url relative to the server)."""
    inv = client.organizations.invites.get_invite_link()
    return {"token": inv.token, "invite_url": inv.invite_url}


def invite_link(client, public_url: str) -> str:
    """The full sign-up link to send annotators, at the address they reach the server by."""
    return public_url.rstrip("/") + invite(client)["invite_url"]


def _session():
    jar = http.cookiejar.CookieJar()
    return jar, urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def _csrf(jar) -> str:
    return next((c.value for c in jar if c.name == "csrftoken"), "")


def sign_up(url: str, invite_token: str, email: str, password: str) -> str:
    """Make an account through the invite link's sign-up form, as a browser does; returns
    the new account's API token. UserError when the server refuses (a wrong invite token, a
    taken email, a password Label Studio finds too weak)."""
    jar, opener = _session()
    page = f"{url.rstrip('/')}/user/signup/?token={urllib.parse.quote(invite_token)}"
    with opener.open(page, timeout=60) as r:
        html = r.read().decode("utf-8", "replace")
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    form = {"csrfmiddlewaretoken": m.group(1) if m else _csrf(jar), "email": email,
            "password": password}
    req = urllib.request.Request(page, data=urllib.parse.urlencode(form).encode(),
                                 headers={"Referer": page, "X-CSRFToken": _csrf(jar)})
    try:
        with opener.open(req, timeout=60) as r:
            after = r.geturl()
            body = r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        raise UserError(f"Label Studio at {url} refused the sign-up of {email} (HTTP {e.code}): "
                        f"is the invite link current?") from None
    if "/user/signup" in urllib.parse.urlparse(after).path:   # the form again: an error on it
        errors = re.findall(r'class="[^"]*error[^"]*"[^>]*>\s*([^<]+)<', body)
        raise UserError(f"Label Studio refused the sign-up of {email}: "
                        f"{'; '.join(e.strip() for e in errors) or 'see the sign-up page'}")
    with opener.open(f"{url.rstrip('/')}/api/current-user/token", timeout=60) as r:
        return json.load(r)["token"]


def members(client) -> dict[int, str]:
    """Every account of the organization: user id -> email."""
    return {u.id: u.email for u in client.users.list()}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from annotation.client import connect
    from annotation.retrain import compose_stage
    from annotation.server import project_token
    try:
        if argv[:1] == ["invite"] or (argv[:1] == ["add"] and len(argv) >= 2):
            add = argv[1] if argv[0] == "add" else None
            a = compose_stage(argv[2:] if add else argv[1:], "stage=annotate").annotation
            url = f"http://{a.host}:{a.port}"
            client = connect(url, project_token(a))
            if add:
                password = secrets.token_urlsafe(12)
                sign_up(url, invite(client)["token"], add, password)
                print(f"account {add} made; password (shown once): {password}")
            else:
                print(invite_link(client, str(a.get("public_url") or url)))
            return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
