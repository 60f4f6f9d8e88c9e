"""Errors that reach users: each message names the problem and what to do about it."""


class UserFacingError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class ModelLoadError(UserFacingError):
    """A model directory or checkpoint cannot be loaded (missing files, corrupt data, wrong size)."""


class AudioInputError(UserFacingError):
    """Input audio is empty, too short, undecodable, or in an unsupported rate/channel layout."""


class PromptError(UserFacingError):
    """A prompt cannot be used with this model (e.g. text without a text encoder, bad span)."""
