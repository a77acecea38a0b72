"""`mlbh import-hf` and `mlbh export-hf`: Hugging Face GPT-2 directories <-> checkpoints."""
import click


@click.command(name="import-hf")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
def import_hf(directory, out):
    """Turn a transformers GPT-2 directory (config.json, model.safetensors or
    pytorch_model.bin, vocab.json + merges.txt) into an mlbh checkpoint with its tokenizer.

    \b
    Example (OpenAI's GPT-2 small, downloaded elsewhere with huggingface-cli):
      mlbh import-hf ./gpt2 runs/gpt2-openai && mlbh sample runs/gpt2-openai --prompt "Hello"
    """
    from mlbh.models.hf_files import import_hf as run
    config, tokenizer = run(directory, out)
    click.echo(f"imported {config.n_layer}-layer {config.n_embd}-wide GPT-2 (vocab {config.vocab_size}) "
               f"into {out}" + (" with its tokenizer" if tokenizer else " (no vocab.json/merges.txt found)"))


@click.command(name="export-hf")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("directory", type=click.Path(file_okay=False))
def export_hf(checkpoint, directory):
    """Write a checkpoint as a directory transformers' GPT2LMHeadModel.from_pretrained loads."""
    from mlbh.models.hf_files import export_hf as run
    click.echo(f"exported to {run(checkpoint, directory)}")
