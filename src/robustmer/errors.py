"""Errors raised at the pipeline's boundaries; the CLI turns them into a message and exit code."""


class RobustmerError(Exception):
    """A problem the user can fix; the message names the file or sample and the fix."""


class ConfigError(RobustmerError):
    """params.yaml (or a preset) does not match the schema."""


class DataError(RobustmerError):
    """Input data is missing, corrupt or inconsistent."""


class ValidationFailed(RobustmerError):
    """The validation gate rejected the data; nothing downstream may run."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM (SLURM and Snakemake stop jobs with it) reached a running stage.

    A KeyboardInterrupt, so everything that cleans up after Ctrl-C (MLflow runs ended KILLED,
    worker pools ended, temporary folders removed) does the same for SIGTERM.
    """

    def __init__(self, signum: int, name: str):
        super().__init__(name)
        self.signum = signum
        self.name = name
