"""`mlbh eval` and `mlbh sample`: use a trained checkpoint."""
import json
import sys

import click


@click.command(name="eval")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Prepared dataset dir.")
@click.option("--split", default="val", show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--seq-len", type=int, help="Window length [default: the training seq_len].")
@click.option("--max-tokens", type=int, help="Score only the first N tokens of the split.")
@click.option("--backend", type=click.Choice(["cpu", "cuda", "reference"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(checkpoint, data, split, batch_size, seq_len, max_tokens, backend, as_json):
    """Loss, perplexity, bits per token and bits per byte of a checkpoint, scoring every
    token of the split exactly once in non-overlapping windows.

    \b
    Example:
      mlbh eval runs/shakespeare --data ~/.cache/mlbh/data/shakespeare-bpe2048
    """
    from mlbh.runtime.eval_report import evaluate_checkpoint
    from mlbh.runtime.jit import default_backend
    ck, model = load_model(checkpoint)

    def progress(i, n):
        if not as_json:
            click.echo(f"\r  batch {i}/{n}", nl=False, err=True)

    result = evaluate_checkpoint(model, ck, data, split, batch_size, seq_len, max_tokens,
                                 backend or default_backend(), progress)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo("", err=True)
    for key in ("checkpoint", "step", "split", "tokens", "loss", "perplexity", "bits_per_token", "bits_per_byte"):
        if key in result:
            value = result[key]
            click.echo(f"{key:>15}: {value:.4f}" if isinstance(value, float) else f"{key:>15}: {value}")


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--prompt", "prompts", multiple=True, default=["\n"], show_default=True,
              help="Text to continue; repeat for several prompts.")
@click.option("--max-new-tokens", default=200, show_default=True)
@click.option("--temperature", default=0.8, show_default=True, help="0 = greedy.")
@click.option("--top-k", default=50, show_default=True, help="0 = no top-k cut.")
@click.option("--seed", default=0, show_default=True)
@click.option("--backend", type=click.Choice(["cpu", "cuda", "reference"]), default=None)
def sample(checkpoint, prompts, max_new_tokens, temperature, top_k, seed, backend):
    """Generate text from a checkpoint, streaming tokens as they come: a compiled prefill of
    the prompt, then one compiled KV-cache decode step per token.

    \b
    Examples:
      mlbh sample runs/shakespeare --prompt "ROMEO:" --prompt "JULIET:" --max-new-tokens 100
      mlbh sample runs/shakespeare --prompt "To be" --temperature 0      (greedy)
    """
    from mlbh.runtime.jit import default_backend
    from mlbh.runtime.sampling import KVSampler
    from mlbh.runtime.tokenizer import Tokenizer
    from mlbh.tracer.errors import CheckpointError
    ck, model = load_model(checkpoint)
    path = ck.state.get("tokenizer")
    if not path:
        raise CheckpointError(f"{ck.path}: the checkpoint names no tokenizer")
    tok = Tokenizer.load(path)
    sampler = KVSampler(model, backend or default_backend())
    for n, prompt in enumerate(prompts):
        click.echo(f"--- prompt {n + 1} " + "-" * 40)
        sys.stdout.write(prompt)
        prompt_ids = tok.encode(prompt)
        pending = []

        def stream(token_id):
            pending.append(token_id)
            text = tok.decode_bytes(pending).decode("utf-8", errors="strict") if _complete(tok, pending) else None
            if text is not None:
                sys.stdout.write(text)
                sys.stdout.flush()
                pending.clear()

        sampler.generate(ck.params, prompt_ids, max_new_tokens, temperature, top_k, seed + n, stream)
        if pending:
            sys.stdout.write(tok.decode(pending))
        sys.stdout.write("\n")


def load_model(path):
    """(checkpoint, model) for a run directory or checkpoint directory."""
    from mlbh.models.gpt2 import GPT2
    from mlbh.runtime.checkpoint import load_checkpoint
    from mlbh.tracer.errors import CheckpointError
    ck = load_checkpoint(path)
    if not ck.state.get("model"):
        raise CheckpointError(f"{ck.path}: no model config in state.json")
    return ck, GPT2.from_dict(ck.state["model"])


def _complete(tok, ids):
    try:
        tok.decode_bytes(ids).decode("utf-8", errors="strict")
        return True
    except UnicodeDecodeError:
        return False
