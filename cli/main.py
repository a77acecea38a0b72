"""The `mlbh` command: the click group and the console-script entry point."""
import click

from .compile_command import compile
from .demo import demo
from .errors import ReportingGroup
from .eval_command import evaluate, sample
from .hf_commands import export_hf, import_hf
from .ir_commands import ir
from .prepare_command import prepare
from .train_command import train


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("mlbh")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def _print_version(ctx, _param, value):
    """--version, looked up only when asked (importlib.metadata costs ~40 ms at start-up)."""
    if value and not ctx.resilient_parsing:
        click.echo(f"mlbh, version {installed_version()}")
        ctx.exit()


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
def cli():
    """mlbh: a functional autodiff compiler in plain Python (no JAX), built to train GPT-2.

    \b
    You write a model as a pure function of numpy-like arrays (mlbh.tracer.ops).
    mlbh compiles it in stages:
      trace     run the function on abstract arrays, record a graph (the IR)
      autodiff  grad / value_and_grad / vjp / jvp build the backward graph
      passes    simplify, fold, cse, dce shrink the graph
      fusion    group equations into row kernels and GEMM calls
      codegen   CUDA C via NVRTC, CPU via LLVM IR; one memory arena

    \b
    Examples:
      mlbh train                         train a small GPT on Shakespeare (CPU or GPU)
      mlbh compile gpt2                  compile GPT-2 124M's train step, print a summary
      mlbh demo                          trace, differentiate and check a small MLP
      mlbh demo --save graphs/           ... and keep its graphs as JSON
      mlbh ir show graphs/mlp_grad.json  print a graph, one equation a line
      mlbh ir stats graphs/mlp_grad.json op counts, parameters, FLOPs, bytes
      mlbh ir diff a.json b.json --text  what changed between two graphs

    \b
    Errors print one line; set MLBH_DEBUG=1 for the full traceback.
    """


for command in (train, compile, prepare, evaluate, sample, import_hf, export_hf, demo, ir):
    cli.add_command(command)


def main():
    cli(prog_name="mlbh")
