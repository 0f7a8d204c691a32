"""Errors about bad inputs or a diverged run. Their messages name the file, field or loss at
fault, so the `metarl` command prints them without a traceback. Kept free of heavy imports:
the command catches them whatever it runs."""


class CheckpointError(RuntimeError):
    """A checkpoint or model file that cannot be used (corrupt, truncated or unsafe)."""


class TasksetError(ValueError):
    """A task-set file that does not describe its family's tasks (e.g. after a hand edit)."""


class NonFiniteError(RuntimeError):
    """A loss or parameter became NaN or infinite: training cannot recover from it."""


USER_ERRORS = (CheckpointError, TasksetError, NonFiniteError)
