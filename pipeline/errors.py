"""Errors meant for users: one line naming the file or setting and what to do."""


class UserError(RuntimeError):
    """A problem with the user's input or configuration (not a bug).

    The CLI prints only the message, without a traceback.
    """


def describe(e: BaseException) -> str:
    """One line for an error file or log. HTTP errors (e.g. the Label Studio SDK's ApiError)
    keep their status and body but never their response headers: those carry session cookies."""
    if hasattr(e, "status_code") and hasattr(e, "headers"):
        body = " ".join(str(getattr(e, "body", "") or "").split())[:300]
        return f"{type(e).__name__}: HTTP {e.status_code}: {body}"
    return f"{type(e).__name__}: {e}"
