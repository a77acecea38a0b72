"""Finding the user's source line for an op: the innermost frame outside mlbh's compiler."""
import functools
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
# Frames in these folders are the compiler's own; models/ and user code count as "user".
_INTERNAL = tuple(os.path.join(_ROOT, d) + os.sep for d in ("tracer", "codegen", "runtime"))
_SKIP = ("<frozen", os.sep + "click" + os.sep, os.sep + "contextlib.py")


def user_source() -> str | None:
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_INTERNAL) and not any(s in filename for s in _SKIP):
            return f"{_short(filename, os.getcwd())}:{frame.f_lineno}"
        frame = frame.f_back
    return None


@functools.lru_cache(maxsize=256)
def _short(filename: str, cwd: str) -> str:
    try:
        rel = os.path.relpath(filename, cwd)
    except ValueError:
        return filename
    return rel if not rel.startswith("..") else filename
