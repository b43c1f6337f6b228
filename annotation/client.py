"""Connect to Label Studio through the SDK, turning connection and auth failures into one line."""
from __future__ import annotations

import urllib.error
import urllib.request

from pipeline.errors import UserError


def connect(url: str, token: str, timeout: float = 60.0):
    """A client whose calls give up after `timeout` s (a frozen server ends a sync)."""
    from label_studio_sdk import LabelStudio

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            ok = r.status == 200
    except (urllib.error.URLError, OSError):
        ok = False
    if not ok:
        raise UserError(f"Label Studio is not reachable at {url}; start it with "
                        f"`make label-studio` or set annotation.host and annotation.port")
    client = LabelStudio(base_url=url, api_key=token, timeout=timeout)
    try:
        client.users.whoami()
    except Exception as e:  # the SDK raises ApiError with status_code 401
        code = getattr(e, "status_code", None)
        if code in (401, 403):
            raise UserError(f"Label Studio at {url} refused the API token (HTTP {code}); set "
                            f"LABEL_STUDIO_API_TOKEN to the token of your account (a server "
                            f"keeps the token it was first started with)") from None
        raise
    return client
