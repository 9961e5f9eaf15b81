"""Errors raised at the pipeline's boundaries; the CLI turns them into a message and exit code."""


class RobustmerError(Exception):
    """A problem the user can fix; the message names the file or sample and the fix."""


class ConfigError(RobustmerError):
    """params.yaml (or a preset) does not match the schema."""


class DataError(RobustmerError):
    """Input data is missing, corrupt or inconsistent."""


class ValidationFailed(RobustmerError):
    """The validation gate rejected the data; nothing downstream may run."""
