"""Commands that are planned but not built yet.

Each is its own function so it can be replaced by the real command on its own. They take
any arguments, so `mlbh train --steps 10` still says "not built yet" instead of a usage
error, and exit with status 2.
"""
import click

from .errors import exit_not_built

_ANY_ARGS = dict(ignore_unknown_options=True, allow_extra_args=True)


@click.command(context_settings=_ANY_ARGS)
def compile():  # noqa: A001 (the command is called compile)
    """Compile a model's training step to CUDA or CPU kernels (not built yet)."""
    exit_not_built("compile", "lowering fused graphs to NVRTC/numba kernels")


@click.command(context_settings=_ANY_ARGS)
def train():
    """Train GPT-2 on a prepared corpus (not built yet)."""
    exit_not_built("train", "the GPT-2 training loop")


@click.command(name="eval", context_settings=_ANY_ARGS)
def evaluate():
    """Evaluate a checkpoint's loss on held-out data (not built yet)."""
    exit_not_built("eval", "held-out loss of a checkpoint")


@click.command(context_settings=_ANY_ARGS)
def sample():
    """Generate text from a checkpoint (not built yet)."""
    exit_not_built("sample", "text generation from a checkpoint")


@click.command(context_settings=_ANY_ARGS)
def prepare():
    """Download and tokenize a training corpus (not built yet)."""
    exit_not_built("prepare", "corpus download and tokenization")


PLANNED_COMMANDS = (compile, train, evaluate, sample, prepare)
