"""Errors meant for users: one line naming the file or setting and what to do."""


class UserError(RuntimeError):
    """A problem with the user's input or configuration (not a bug).

    The CLI prints only the message, without a traceback.
    """
