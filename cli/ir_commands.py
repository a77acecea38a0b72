"""`mlbh ir`: look at graph files written by mlbh.tracer.save (show, stats, diff)."""
import json

import click

from . import ir_diff, ir_stats
from .text_format import bytes_text, count_text, signed, table


def load_graph(path: str, optimize: bool = False):
    """A graph file as a Graph; missing or malformed files raise IRFileError."""
    import mlbh.tracer as T
    graph = T.load(path)
    return T.optimize(graph) if optimize else graph


def registry_kind(prim: str) -> str:
    from mlbh.tracer.registry import REGISTRY
    return REGISTRY[prim].kind if prim in REGISTRY else "other"


def printed(graph, show_source: bool) -> str:
    from mlbh.tracer.printer import format_graph
    text = format_graph(graph, show_source=show_source)
    return "\n".join(line.rstrip() for line in text.splitlines())  # the printer pads columns


_FILE = click.argument("file", metavar="FILE")
_OPTIMIZE = click.option("--optimize", is_flag=True,
                         help="Run mlbh.tracer.optimize (simplify, fold, cse, dce) first.")


@click.group()
def ir():
    """Inspect graph files (JSON written by mlbh.tracer.save).

    \b
    Make one:
      import mlbh.tracer as T
      T.save(T.trace(fn, *example_args), "fn.json")
    """


@ir.command()
@_FILE
@click.option("--no-source", is_flag=True, help="Leave out the '# file:line' comments.")
@_OPTIMIZE
def show(file, no_source, optimize):
    """Print a graph as text: one equation a line, with shapes, dtypes and source lines."""
    click.echo(printed(load_graph(file, optimize), show_source=not no_source))


@ir.command()
@_FILE
@_OPTIMIZE
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def stats(file, optimize, as_json):
    """Op histogram, inputs/outputs, parameter count, FLOP and byte estimates.

    \b
    FLOPs: dot_general 2*batch*M*N*K; elementwise 1 per output element;
    reductions 1 per input element; movement and constants 0.
    Bytes: traffic = inputs+outputs of every eqn (one kernel per eqn, no fusion);
    intermediates = values that are neither graph inputs nor outputs.
    """
    result = ir_stats.graph_stats(load_graph(file, optimize), registry_kind)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo("\n".join(stats_report(file, result)))


def _value_rows(values):
    return [(v["name"], f"{v['dtype']}[{','.join(map(str, v['shape']))}]", bytes_text(v["bytes"]))
            for v in values]


def stats_report(file: str, result: dict) -> list:
    lines = [f"graph: {file}",
             f"eqns: {result['eqns']}",
             f"parameters: {count_text(result['parameters'])} (elements of float inputs)",
             f"inputs ({len(result['inputs'])}):"]
    lines += table(_value_rows(result["inputs"]), right_aligned={2})
    lines.append(f"outputs ({len(result['outputs'])}):")
    lines += table(_value_rows(result["outputs"]), right_aligned={2})
    lines.append("ops:")
    op_rows = [("op", "count", "FLOPs")]
    op_rows += [(op, n, count_text(result["flops_by_op"][op])) for op, n in result["ops"].items()]
    lines += table(op_rows, right_aligned={1, 2})
    lines.append("estimates by family:")
    flops, traffic = result["flops"]["by_family"], result["bytes"]["traffic_by_family"]
    family_rows = [("family", "FLOPs", "traffic")]
    family_rows += [(f, count_text(flops.get(f, 0)), bytes_text(traffic.get(f, 0)))
                    for f in ir_stats.FAMILIES if f in flops or f in traffic]
    family_rows.append(("total", count_text(result["flops"]["total"]),
                        bytes_text(result["bytes"]["traffic"])))
    lines += table(family_rows, right_aligned={1, 2})
    b = result["bytes"]
    lines += [f"bytes: intermediates {bytes_text(b['intermediates'])}, "
              f"graph inputs {bytes_text(b['inputs'])}, graph outputs {bytes_text(b['outputs'])}"]
    return lines


@ir.command()
@click.argument("file_a", metavar="A")
@click.argument("file_b", metavar="B")
@click.option("--text", is_flag=True, help="Also print a unified diff of the printed graphs.")
@click.option("--source", is_flag=True,
              help="Keep the '# file:line' comments in the --text diff (off: they shift with every edit).")
def diff(file_a, file_b, text, source):
    """Compare two graph files: eqn counts, op counts, input/output signatures."""
    graph_a, graph_b = load_graph(file_a), load_graph(file_b)
    result = ir_diff.graph_diff(graph_a, graph_b)
    click.echo("\n".join(diff_report(file_a, file_b, result)))
    if text:
        unified = ir_diff.text_diff(printed(graph_a, source), printed(graph_b, source), file_a, file_b)
        click.echo(unified if unified else "(printed graphs are identical)")


def _signature_lines(label, changes):
    if not changes:
        return [f"{label}: same signature"]
    rows = [(name, a or "(none)", "->", b or "(none)") for name, a, b in changes]
    return [f"{label}: {len(changes)} differ"] + table(rows)


def diff_report(file_a: str, file_b: str, result: dict) -> list:
    count_a, count_b = result["eqns"]
    lines = [f"A: {file_a}", f"B: {file_b}",
             f"eqns: {count_a} -> {count_b} ({signed(count_b - count_a) or 'same'})",
             "ops:"]
    rows = [("op", "A", "B", "delta")] + [(op, a, b, signed(b - a)) for op, a, b in result["ops"]]
    lines += table(rows, right_aligned={1, 2, 3})
    lines += _signature_lines("inputs", result["inputs"])
    lines += _signature_lines("outputs", result["outputs"])
    if ir_diff.is_structurally_equal(result):
        lines.append("same eqn count, ops and signatures")
    return lines
