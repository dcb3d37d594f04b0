"""The engine's one exception type for errors a user can hit (bad input, missing device, bad
file)."""


class EngineError(Exception):
    """An error with a message that tells the user what to do; shown as one line by the CLI."""
