"""One exception type for every mistake a user can make in their input.

The CLI turns a :class:`UserError` into a single line on stderr and exit code 2, with no
traceback; Python callers get the same message as an exception they can catch.
"""


class UserError(Exception):
    """Bad input: a file, a field or a value the user must fix.

    ``where`` names the file (and line, when known), ``field`` the offending field and the
    message says what is allowed.  ``str(err)`` is the one-line message the CLI prints.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None):
        self.message = message
        self.where = where
        self.field = field
        parts = []
        if where:
            parts.append(str(where))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        super().__init__(" ".join(text.split()))
