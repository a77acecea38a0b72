"""`mlbh eval` and `mlbh sample`: use a trained checkpoint."""
import json
import sys

import click


@click.command(name="eval")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--data", type=click.Path(file_okay=False), help="Prepared dataset dir: score its split.")
@click.option("--split", default="val", show_default=True)
@click.option("--seq-len", type=int, help="Window length [default: the training seq_len].")
@click.option("--max-tokens", type=int, help="Score only the first N tokens of the split.")
@click.option("--tasks", help="Comma-separated lm-evaluation-harness tasks, e.g. lambada_openai,wikitext.")
@click.option("--task-dir", "task_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of extra lm-eval task YAML files (repeatable).")
@click.option("--limit", type=float, help="Tasks: at most this many documents per task (a fraction if < 1).")
@click.option("--num-fewshot", type=int, help="Tasks: few-shot examples per prompt [default: the task's].")
@click.option("--bootstrap-iters", default=1000, show_default=True,
              help="Tasks: bootstrap resamples for the standard errors (0 = none).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--backend", type=click.Choice(["cpu", "cuda", "reference"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(checkpoint, data, split, seq_len, max_tokens, tasks, task_dirs, limit, num_fewshot, bootstrap_iters,
             batch_size, backend, as_json):
    """Evaluate a checkpoint: on a prepared split (--data), loss, perplexity, bits per token
    and bits per byte, scoring every token of the split exactly once in non-overlapping
    windows; on lm-evaluation-harness tasks (--tasks; pip install 'mlbh[eval]'), the
    harness's metrics through the compiled forward.

    \b
    Examples:
      mlbh eval runs/shakespeare --data ~/.cache/mlbh/data/shakespeare-bpe2048
      mlbh eval runs/gpt2-openai --tasks lambada_openai,wikitext --batch-size 16
      mlbh eval runs/mine --tasks my_task --task-dir ./my_tasks --limit 100
    """
    from mlbh.tracer.errors import ConfigError
    if not data and not tasks:
        raise ConfigError("mlbh eval needs --data PREPARED_DIR, --tasks TASK[,TASK...], or both")
    if data:
        _evaluate_split(checkpoint, data, split, batch_size, seq_len, max_tokens, backend, as_json)
    if tasks:
        _evaluate_tasks(checkpoint, [t.strip() for t in tasks.split(",") if t.strip()], task_dirs, batch_size,
                        backend, limit, num_fewshot, bootstrap_iters, as_json)


def _evaluate_split(checkpoint, data, split, batch_size, seq_len, max_tokens, backend, as_json):
    from mlbh.runtime.eval_report import evaluate_checkpoint
    from mlbh.runtime.jitted import default_backend
    from mlbh.runtime.model_families import load_model
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


def _evaluate_tasks(checkpoint, tasks, task_dirs, batch_size, backend, limit, num_fewshot, bootstrap_iters,
                    as_json):
    try:
        from lm_eval.utils import make_table

        from mlbh.runtime.harness import run_tasks
    except ImportError:
        from mlbh.tracer.errors import ConfigError
        raise ConfigError("--tasks needs lm-evaluation-harness: pip install 'mlbh[eval]'") from None
    if limit is not None and limit >= 1:
        limit = int(limit)
    results = run_tasks(checkpoint, tasks, task_dirs, batch_size, backend, limit, num_fewshot, bootstrap_iters)
    if as_json:
        click.echo(json.dumps({"results": results["results"], "n-samples": results.get("n-samples")},
                              indent=2, default=str))
        return
    click.echo(make_table(results))
    if results.get("groups"):
        click.echo(make_table(results, "groups"))


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--prompt", "prompts", multiple=True, default=["\n"], show_default=True,
              help="Text to continue; repeat for several prompts.")
@click.option("--max-new-tokens", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(min=0.0), help="0 = greedy.")
@click.option("--top-k", default=50, show_default=True, type=click.IntRange(min=0), help="0 = no top-k cut.")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True),
              help="Nucleus sampling: keep the most likely tokens up to this much probability.")
@click.option("--seed", default=0, show_default=True)
@click.option("--backend", type=click.Choice(["cpu", "cuda", "reference"]), default=None)
def sample(checkpoint, prompts, max_new_tokens, temperature, top_k, top_p, seed, backend):
    """Generate text from a checkpoint, streaming tokens as they come: a compiled prefill of
    the prompt, then one compiled KV-cache decode step per token.

    \b
    Examples:
      mlbh sample runs/shakespeare --prompt "ROMEO:" --prompt "JULIET:" --max-new-tokens 100
      mlbh sample runs/shakespeare --prompt "To be" --temperature 0      (greedy)
      mlbh sample runs/shakespeare --prompt "To be" --top-p 0.9 --top-k 0   (nucleus)
    """
    from mlbh.runtime.jitted import default_backend
    from mlbh.runtime.model_families import load_model
    from mlbh.runtime.sampling import KVSampler, check_sampling
    from mlbh.runtime.tokenizer import Tokenizer
    from mlbh.tracer.errors import CheckpointError
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    ck, model = load_model(checkpoint)
    if ck.tokenizer_path is None:
        raise CheckpointError(f"{ck.path}: the checkpoint has no tokenizer")
    tok = Tokenizer.load(ck.tokenizer_path)
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

        sampler.generate(ck.params, prompt_ids, max_new_tokens, temperature, top_k, seed + n, stream, top_p)
        if pending:
            sys.stdout.write(tok.decode(pending))
        sys.stdout.write("\n")


def _complete(tok, ids):
    try:
        tok.decode_bytes(ids).decode("utf-8", errors="strict")
        return True
    except UnicodeDecodeError:
        return False
