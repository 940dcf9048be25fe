"""The one error type the CLI turns into a single line and exit code 2."""


class AdvisorError(ValueError):
    """Bad input from the user: the message names what is wrong and the accepted form; `flag`, where one is to blame,
    the command-line flag that set it (a `--json` error carries it as its own key)."""

    def __init__(self, message: str, flag: str | None = None):
        super().__init__(message)
        self.flag = flag
