"""Errors that mlbh raises on purpose.

Every error a user can cause derives from MlbhError so the CLI can print a one-line
message instead of a traceback. Trace-time errors carry the user's file:line.
"""


class MlbhError(Exception):
    """Base of every error mlbh raises on purpose."""


class TraceError(MlbhError):
    """A problem in the user's traced code: shapes, dtypes, control flow on a tracer."""

    def __init__(self, message, source=None):
        self.source = source
        super().__init__(f"{message} (at {source})" if source else message)


class ShapeError(TraceError):
    """Operand shapes do not fit the op."""


class DTypeError(TraceError):
    """An operand dtype the op cannot take, or a dtype name mlbh does not know."""


class ConcretizationError(TraceError):
    """Python control flow (bool, int, index) asked for the value of a traced array."""


class IRFileError(MlbhError):
    """A graph file that is missing or malformed."""


class CompileError(MlbhError):
    """Generated code that a compiler (NVRTC, LLVM) refused."""


class DataError(MlbhError):
    """Missing, corrupt or out-of-range training data."""


class CheckpointError(MlbhError):
    """Missing or corrupt checkpoint."""


class ConfigError(MlbhError):
    """A configuration or set of flags that cannot work."""
