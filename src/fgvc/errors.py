"""The one error type whose message is the whole story: the CLI prints it without a traceback."""

__all__ = ["UserError"]


class UserError(RuntimeError):
    """A problem the user can fix; the message says what and how."""
