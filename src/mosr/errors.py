"""The one exception type that the command line turns into a one-line error."""


class MosrError(Exception):
    """Invalid input or a failed step that the user can fix; the CLI prints it without a traceback."""
