"""User-facing errors: each carries one sentence that says what is wrong and what to do.

The command-line scripts catch `DeltaWorldError`, print its message on one line
and exit with its `exit_status` (2; 130 for `Interrupted`); anything else is a bug and keeps its traceback.
"""


class DeltaWorldError(Exception):
    """Base class for mistakes a user can fix (bad config, bad input, bad file)."""

    exit_status = 2  # what the command-line scripts exit with


class ConfigError(DeltaWorldError):
    """A config file or override is missing, malformed, misspelled or of the wrong type."""


class CheckpointError(DeltaWorldError):
    """A checkpoint is missing, corrupt, truncated, or made for another configuration."""


class InputError(DeltaWorldError):
    """Tensors or arguments of the wrong shape, dtype, size or value."""


class DataError(DeltaWorldError):
    """A dataset root is missing or empty, or every file in it failed to load."""


class TrainingError(DeltaWorldError):
    """Training cannot go on (non-finite loss, an output directory holding another run)."""


class Interrupted(TrainingError):
    """Ctrl-C stopped a run; the message says where, and how to continue it."""

    exit_status = 130  # the shell's status for a process ended by SIGINT
