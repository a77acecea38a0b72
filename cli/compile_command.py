"""`mlbh compile gpt2`: trace, differentiate, optimize, fuse and compile the train step."""
import json

import click


@click.command()
@click.argument("model", type=click.Choice(["gpt2"]))
@click.option("--preset", default="gpt2", show_default=True, help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, mini")
@click.option("--micro-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Sequences per micro-step.")
@click.option("--seq-len", type=click.IntRange(min=1), default=1024, show_default=True, help="Tokens per sequence.")
@click.option("--backend", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True,
              help="cuda generates CUDA C and compiles it to cubin with NVRTC (no GPU needed).")
@click.option("--arch", default="sm_90", show_default=True, help="CUDA architecture for the cubin.")
@click.option("--dtype", "compute_dtype", type=click.Choice(["float32", "bfloat16"]), default="float32",
              show_default=True, help="Compute dtype of the forward/backward.")
@click.option("--remat-attention", is_flag=True,
              help="Recompute each layer's attention in the backward pass (compare the arena with and without).")
@click.option("--dump-ir", type=click.Path(file_okay=False), help="Write every stage (graphs, kernels, sources) here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compile(model, preset, micro_batch, seq_len, backend, arch, compute_dtype, remat_attention, dump_ir,  # noqa: A001
            as_json):
    """Compile the GPT-2 train step and the AdamW update without training, and report each
    stage: parameters, graph size after tracing and passes, kernels, GEMM calls, arena
    memory, time per stage, compile-cache hits, registers and spills.

    \b
    Examples:
      mlbh compile gpt2                          124M, micro-batch 8 x 1024, CUDA sm_90
      mlbh compile gpt2 --preset tiny --seq-len 256 --backend cpu
      mlbh compile gpt2 --dtype bfloat16 --remat-attention    the arena without saved attention
      mlbh compile gpt2 --dump-ir ir/            then read ir/micro_step/04_kernels.txt
    """
    from mlbh.models.gpt2 import from_preset
    from mlbh.runtime.compile_report import compile_model
    log = (lambda *_: None) if as_json else click.echo
    if not as_json:
        click.echo(f"compiling {preset} train step: micro-batch {micro_batch} x {seq_len} tokens, "
                   f"{backend} ({arch if backend == 'cuda' else 'LLVM'}), {compute_dtype}"
                   + (", attention recomputed in the backward pass" if remat_attention else ""))
    model = from_preset(preset, compute_dtype=compute_dtype, remat_attention=remat_attention)
    report = compile_model(model, micro_batch, seq_len, backend, dump_ir, arch, log=log)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"parameters: {report['params']:,}")
