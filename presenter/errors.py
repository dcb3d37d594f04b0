"""The application's exception type, and what counts as an error a user can hit."""

from engine.errors import EngineError


class PresenterError(Exception):
    """An error with a message that tells the user what to do; shown as one line by the CLI."""


USER_ERRORS: tuple[type[Exception], ...] = (PresenterError, EngineError)
"""Errors a user can hit, from the application or from the engine: each is answered with
its one-line message (the CLI, the server's 400s) while everything else goes on."""
