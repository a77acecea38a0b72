"""The mlbh command line: ir show/stats/diff, error reporting, planned commands, demo."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import mlbh.tracer as T
from mlbh.cli import ir_diff, ir_stats
from mlbh.cli.ir_commands import registry_kind
from mlbh.cli.main import cli
from mlbh.tracer import ops
from mlbh.tracer.errors import IRFileError

M, K, N = 8, 16, 4  # the matmul of the small test graph: x[M,K] @ w[K,N]
F32 = 4


def make_runner():
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def invoke(*args, env=None):
    return make_runner().invoke(cli, [str(a) for a in args], env=env)


def tanh_matmul_sum(x, w):
    return ops.sum(ops.tanh(x @ w))


def exp_tanh_matmul_sum(x, w):
    return ops.sum(ops.exp(ops.tanh(x @ w)))


@pytest.fixture
def small_graph_file(tmp_path):
    """sum(tanh(x @ w)) with x f32[8,16], w f32[16,4]: dot_general, tanh, reduce_sum."""
    path = tmp_path / "small.json"
    T.save(T.trace(tanh_matmul_sum, T.Spec((M, K)), T.Spec((K, N))), path)
    return path


@pytest.fixture
def grad_graph_file(tmp_path):
    path = tmp_path / "grad.json"
    graph = T.trace(T.value_and_grad(tanh_matmul_sum, argnums=1), T.Spec((M, K)), T.Spec((K, N)))
    T.save(graph, path)
    return path


# ---- ir show ----------------------------------------------------------------------------

def test_ir_show_prints_the_equations_with_shapes_and_source(small_graph_file):
    result = invoke("ir", "show", small_graph_file)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("{ lambda a:f32[8,16] b:f32[16,4] .")
    assert "c:f32[8,4] = dot_general" in out
    assert "tanh c" in out and "reduce_sum[axes=(0,1)]" in out
    assert "test_cli.py:" in out  # the source line of the traced code


def test_ir_show_no_source_drops_comments(small_graph_file):
    result = invoke("ir", "show", "--no-source", small_graph_file)
    assert result.exit_code == 0
    assert "#" not in result.stdout and "dot_general" in result.stdout


def test_ir_show_optimize_shrinks_the_gradient_graph(grad_graph_file):
    plain = invoke("ir", "show", "--no-source", grad_graph_file).stdout
    optimized = invoke("ir", "show", "--no-source", "--optimize", grad_graph_file).stdout
    eqn_lines = lambda text: [line for line in text.splitlines() if " = " in line]  # noqa: E731
    assert 0 < len(eqn_lines(optimized)) < len(eqn_lines(plain))


# ---- ir stats ---------------------------------------------------------------------------

def test_ir_stats_json_matches_hand_computation(small_graph_file):
    result = invoke("ir", "stats", "--json", small_graph_file)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["eqns"] == 3
    assert stats["ops"] == {"dot_general": 1, "reduce_sum": 1, "tanh": 1}
    assert stats["parameters"] == M * K + K * N
    assert [(v["name"], v["shape"], v["dtype"]) for v in stats["inputs"]] == [
        ("args[0]", [M, K], "float32"), ("args[1]", [K, N], "float32")]
    assert [(v["name"], v["shape"]) for v in stats["outputs"]] == [("out", [])]
    assert stats["flops"]["by_family"] == {"dot": 2 * M * N * K, "elementwise": M * N, "reduction": M * N}
    assert stats["flops"]["total"] == 2 * M * N * K + 2 * M * N
    assert stats["flops_by_op"] == {"dot_general": 1024, "reduce_sum": 32, "tanh": 32}
    dot_bytes = (M * K + K * N + M * N) * F32
    tanh_bytes = 2 * M * N * F32
    sum_bytes = (M * N + 1) * F32
    assert stats["bytes"]["traffic"] == dot_bytes + tanh_bytes + sum_bytes
    assert stats["bytes"]["intermediates"] == 2 * M * N * F32  # the dot and tanh results
    assert stats["bytes"]["inputs"] == (M * K + K * N) * F32
    assert stats["bytes"]["outputs"] == F32


def test_ir_stats_text_report(small_graph_file):
    result = invoke("ir", "stats", small_graph_file)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "eqns: 3" in out
    assert "parameters: 192" in out
    dot_row = next(line for line in out.splitlines() if line.strip().startswith("dot_general"))
    assert dot_row.split() == ["dot_general", "1", "1,024"]
    total_row = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert total_row.split()[1] == "1,088"


def test_ir_stats_of_a_gradient_graph_names_its_outputs(grad_graph_file):
    stats = json.loads(invoke("ir", "stats", "--json", grad_graph_file).stdout)
    assert [v["name"] for v in stats["outputs"]] == ["out[0]", "out[1]"]
    assert stats["outputs"][1]["shape"] == [K, N]
    # forward matmul, plus the one backward matmul for dL/dw (x is not differentiated)
    assert stats["flops"]["by_family"]["dot"] >= 2 * (2 * M * N * K)


# ---- ir_stats as functions ------------------------------------------------------------------

def test_dot_general_flops_counts_batch_dimensions():
    graph = T.trace(lambda a, b: a @ b, T.Spec((2, 3, 4)), T.Spec((2, 4, 5)))
    (eqn,) = graph.eqns
    assert ir_stats.dot_general_flops(eqn) == 2 * 2 * 3 * 5 * 4


def test_dot_general_flops_with_a_broadcast_operand_in_bfloat16():
    graph = T.trace(lambda a, b: a @ b, T.Spec((2, 3, 4), "bfloat16"), T.Spec((4, 5), "bfloat16"))
    stats = ir_stats.graph_stats(graph, registry_kind)
    assert stats["flops"]["by_family"]["dot"] == 2 * (2 * 3) * 5 * 4
    assert stats["bytes"]["traffic"] == (2 * 3 * 4 + 4 * 5 + 2 * 3 * 5) * 2


def test_parameter_count_skips_integer_inputs():
    graph = T.trace(lambda w, ids: ops.take(w, ids, axis=0), T.Spec((10, 3)), T.Spec((5,), "int32"))
    assert ir_stats.parameter_count(graph) == 30


def test_checkpointed_graph_costs_what_it_runs():
    plain = T.trace(lambda x, w: ops.tanh(x @ w), T.Spec((M, K)), T.Spec((K, N)))
    wrapped = T.trace(T.checkpoint(lambda x, w: ops.tanh(x @ w)), T.Spec((M, K)), T.Spec((K, N)))
    assert [e.prim for e in wrapped.eqns] == ["checkpoint"]
    assert (ir_stats.flops_by_family(wrapped, registry_kind)
            == ir_stats.flops_by_family(plain, registry_kind) == {"dot": 1024, "elementwise": 32})


def test_creation_and_movement_cost_no_flops():
    graph = T.trace(lambda x: ops.reshape(x, (4, 2)) + ops.ones((4, 2)), T.Spec((8,)))
    by_family = ir_stats.flops_by_family(graph, registry_kind)
    assert by_family.get("movement", 0) == 0 and by_family.get("creation", 0) == 0
    assert by_family["elementwise"] == 8


def test_leaf_names_follow_the_pytree():
    graph = T.trace(lambda p, x: p["w"] @ x + p["b"], {"w": T.Spec((2, 3)), "b": T.Spec((2,))}, T.Spec((3,)))
    assert ir_stats.leaf_names(graph.in_tree, 3, "args") == ["args[0].b", "args[0].w", "args[1]"]
    assert ir_stats.leaf_names(None, 2, "out") == ["out[0]", "out[1]"]


# ---- ir diff ----------------------------------------------------------------------------

@pytest.fixture
def exp_graph_file(tmp_path):
    path = tmp_path / "with_exp.json"
    T.save(T.trace(exp_tanh_matmul_sum, T.Spec((M, K)), T.Spec((K, N))), path)
    return path


def test_ir_diff_reports_counts_and_op_deltas(small_graph_file, exp_graph_file):
    result = invoke("ir", "diff", small_graph_file, exp_graph_file)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "eqns: 3 -> 4 (+1)" in out
    exp_row = next(line for line in out.splitlines() if line.strip().startswith("exp"))
    assert exp_row.split() == ["exp", "0", "1", "+1"]
    tanh_row = next(line for line in out.splitlines() if line.strip().startswith("tanh"))
    assert tanh_row.split() == ["tanh", "1", "1"]
    assert "inputs: same signature" in out and "outputs: same signature" in out


def test_ir_diff_text_is_a_unified_diff(small_graph_file, exp_graph_file):
    out = invoke("ir", "diff", "--text", small_graph_file, exp_graph_file).stdout
    assert f"--- {small_graph_file}" in out and f"+++ {exp_graph_file}" in out
    assert any(line.startswith("+") and " = exp " in line for line in out.splitlines())
    assert "#" not in out.split("@@", 1)[1]  # source comments are left out by default


def test_ir_diff_shows_signature_changes(tmp_path, small_graph_file):
    wider = tmp_path / "wider.json"
    T.save(T.trace(tanh_matmul_sum, T.Spec((M, 2 * K)), T.Spec((2 * K, N))), wider)
    out = invoke("ir", "diff", small_graph_file, wider).stdout
    assert "eqns: 3 -> 3 (same)" in out
    assert "inputs: 2 differ" in out
    assert "float32[8,16]  ->  float32[8,32]" in out
    assert "outputs: same signature" in out


def test_ir_diff_of_a_graph_with_itself(small_graph_file):
    out = invoke("ir", "diff", "--text", small_graph_file, small_graph_file).stdout
    assert "same eqn count, ops and signatures" in out
    assert "(printed graphs are identical)" in out


def test_signature_changes_mark_missing_values():
    assert ir_diff.signature_changes(["f32[2]"], ["f32[2]", "i32[]"], ["a", "b"]) == [("b", None, "i32[]")]


# ---- errors -------------------------------------------------------------------------------

def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mlbh: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_ir_file_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing.json"
    for command in (["show"], ["stats"], ["diff", missing]):
        result = invoke("ir", *command, missing)
        _assert_one_line_error(result, "missing.json", "no such file")


def test_malformed_ir_files_are_one_line_errors(tmp_path):
    not_json = tmp_path / "not_json.json"
    not_json.write_text("{ this is not json")
    other_json = tmp_path / "other.json"
    other_json.write_text('{"hello": "world"}')
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"format": "mlbh-graph", "version": 1, "graph": {"inputs": []}}')
    _assert_one_line_error(invoke("ir", "show", not_json), "not valid JSON")
    _assert_one_line_error(invoke("ir", "stats", other_json), "not an mlbh graph file")
    _assert_one_line_error(invoke("ir", "show", truncated), "malformed graph")
    _assert_one_line_error(invoke("ir", "show", tmp_path), "cannot read")


def test_mlbh_debug_lets_the_exception_through(tmp_path):
    result = invoke("ir", "show", tmp_path / "missing.json", env={"MLBH_DEBUG": "1"})
    assert isinstance(result.exception, IRFileError)


# ---- help, planned commands, demo ---------------------------------------------------------------

def test_help_teaches_the_pipeline_and_lists_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    out = result.stdout
    for command in ("compile", "train", "eval", "sample", "prepare", "ir", "demo"):
        assert f"\n  {command} " in out, command
    assert "trace" in out and "autodiff" in out and "fusion" in out and "codegen" in out


def test_version_names_the_installed_package():
    from mlbh.cli.main import installed_version
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"mlbh, version {installed_version()}\n"
    assert "--version" in invoke("--help").stdout


def test_demo_checks_the_gradient_and_passes(tmp_path):
    result = invoke("demo", "--save", tmp_path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "dot_general" in out and "value_and_grad" in out
    assert "max relative error" in out
    assert out.rstrip().endswith("PASS")
    stats = json.loads(invoke("ir", "stats", "--json", tmp_path / "mlp_grad.json").stdout)
    assert stats["ops"]["dot_general"] >= 4  # 2 forward + at least 2 backward matmuls


def test_demo_fails_when_the_tolerance_cannot_be_met():
    result = invoke("demo", "--tolerance", "0")
    assert result.exit_code == 1
    assert result.stdout.rstrip().endswith("FAIL")


def _installed_console_script():
    script = Path(sys.executable).parent / ("mlbh.exe" if os.name == "nt" else "mlbh")
    return script if script.exists() else None


@pytest.mark.skipif(_installed_console_script() is None,
                    reason="the mlbh console script is not installed next to this Python")
def test_installed_console_script_runs():
    script = str(_installed_console_script())
    help_run = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and "ir" in help_run.stdout
    missing = subprocess.run([script, "ir", "show", "no-such-file.json"], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "mlbh: error: no-such-file.json: no such file"
