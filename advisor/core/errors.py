"""The one error type the CLI turns into a single line and exit code 2."""


class AdvisorError(ValueError):
    """Bad input from the user: the message names what is wrong and the accepted form."""
