"""How the CLI reports failures: one line on stderr, never a traceback (unless MLBH_DEBUG=1).

ReportingGroup is the click group class of `mlbh`: an MlbhError raised by any subcommand
(a shape error in traced code, a missing or malformed IR file, ...) becomes
`mlbh: error: <message>` on stderr and exit status 1.
"""
import os
import sys

import click

from mlbh.tracer.errors import MlbhError

EXIT_ERROR = 1


def debug_enabled() -> bool:
    return os.environ.get("MLBH_DEBUG", "") not in ("", "0")


def report_error(message: str) -> None:
    # Keep it to one line so scripts and CI logs show the whole message.
    one_line = " ".join(str(message).split())
    click.echo(f"mlbh: error: {one_line}", err=True)


class ReportingGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlbhError as err:
            if debug_enabled():
                raise
            report_error(str(err))
            sys.exit(EXIT_ERROR)
