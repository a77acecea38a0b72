"""lm-evaluation-harness: the same random-weight GPT-2 scored through lm-eval's `hf` model
(transformers) and through `mlbh` (the compiled forward) gives the same numbers, on local
tasks in lm-eval's own YAML format (offline: dataset_path json with local data files)."""
import json
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lm_eval.tasks import TaskManager  # noqa: E402
from test_cli import make_runner  # noqa: E402
from test_hf_interop import save_random_gpt2  # noqa: E402

import mlbh.runtime.harness  # noqa: E402,F401  (registers the model "mlbh")
from mlbh.cli.main import cli  # noqa: E402
from mlbh.runtime.harness import bucket_length  # noqa: E402

CONTEXT = 64
CONTEXTS = [
    "The king walked slowly into the great hall and",
    "She opened the letter, read it twice, and then",
    "After the storm had passed, the fishermen went back to",
    "My lord, I have news from the northern border that",
    "In the morning the bells of the old church rang for",
    "He said that the price of bread had risen again because",
    "They sailed for three days without seeing any",
    "The children ran down to the river to watch the",
    "Nobody in the village could remember a winter as",
    "When the play was over the audience stood and",
    "I will not speak of this again, for it",
    "The soldiers waited at the gate until the",
]
ROLLING_DOCS = [
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings "
    "and arrows of outrageous fortune, or to take arms against a sea of troubles, and by opposing end "
    "them. To die, to sleep; no more; and by a sleep to say we end the heart-ache and the thousand "
    "natural shocks that flesh is heir to.",
    "Now is the winter of our discontent made glorious summer by this sun of York.",
    "Friends, Romans, countrymen, lend me your ears; I come to bury Caesar, not to praise him. The evil "
    "that men do lives after them; the good is oft interred with their bones. So let it be with Caesar.",
    "All the world's a stage, and all the men and women merely players; they have their exits and "
    "their entrances, and one man in his time plays many parts, his acts being seven ages. ünïcödé!",
]

TASKS = {
    "mlbh_local_cloze": """
task: mlbh_local_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "mlbh_local_rolling": """
task: mlbh_local_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
    "mlbh_local_generate": """
task: mlbh_local_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
doc_to_text: "{{{{text}}}}"
doc_to_target: "{{{{text}}}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
""",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random-weight transformers GPT-2 directory, the mlbh checkpoint imported from it,
    and a directory of local tasks."""
    root = tmp_path_factory.mktemp("harness")
    hf_dir = root / "hf"
    model = save_random_gpt2(hf_dir, CONTEXT)
    result = make_runner().invoke(cli, ["import-hf", str(hf_dir), str(root / "ck")])
    assert result.exit_code == 0, result.output

    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    docs = {"mlbh_local_cloze": _cloze_docs(model, tokenizer), "mlbh_local_rolling": ROLLING_DOCS,
            "mlbh_local_generate": CONTEXTS[:4]}
    task_dir = root / "tasks"
    task_dir.mkdir()
    for name, text in TASKS.items():
        data = task_dir / f"{name}.jsonl"
        data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[name]))
        (task_dir / f"{name}.yaml").write_text(text.format(data=data))
    return hf_dir, root / "ck", task_dir


def _cloze_docs(model, tokenizer):
    """Each context completed two ways: by a fixed word, and by the word the model itself
    predicts greedily (so accuracy is not trivially 0)."""
    docs = []
    for context in CONTEXTS:
        ids = tokenizer(context, return_tensors="pt").input_ids
        with torch.no_grad():
            best = int(model(ids).logits[0, -1].argmax())
        word = tokenizer.decode([best])
        docs.append(context + " table")
        if word.startswith(" ") and word[1:].isalpha() and tokenizer(context + word).input_ids == ids[0].tolist() + [best]:
            docs.append(context + word)
    assert len(docs) > len(CONTEXTS) + 1, "too few greedy continuations to test accuracy"
    return docs


def _evaluate(model, model_args, task_dir, tasks):
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=tasks, device="cpu",
                                   task_manager=TaskManager(include_path=str(task_dir)),
                                   bootstrap_iters=0, log_samples=True)


@pytest.fixture(scope="module")
def both(setup):
    hf_dir, ck, task_dir = setup
    tasks = list(TASKS)
    hf = _evaluate("hf", f"pretrained={hf_dir},dtype=float32", task_dir, tasks)
    ours = _evaluate("mlbh", f"checkpoint={ck},backend=cpu,batch_size=4", task_dir, tasks)
    return hf, ours


def test_loglikelihood_task_matches_transformers(both):
    hf, ours = (r["results"]["mlbh_local_cloze"] for r in both)
    assert hf["acc,none"] > 0
    assert ours["acc,none"] == hf["acc,none"]
    assert ours["perplexity,none"] == pytest.approx(hf["perplexity,none"], rel=1e-4)
    per_doc = [[s["filtered_resps"][0][0] for s in r["samples"]["mlbh_local_cloze"]] for r in both]
    assert per_doc[1] == pytest.approx(per_doc[0], rel=1e-4, abs=1e-4)


def test_rolling_task_matches_transformers(setup, both):
    hf, ours = (r["results"]["mlbh_local_rolling"] for r in both)
    for metric in ("bits_per_byte,none", "byte_perplexity,none", "word_perplexity,none"):
        assert ours[metric] == pytest.approx(hf[metric], rel=1e-4), metric
    # Some documents are longer than the context, so several rolling windows were scored.
    tokenizer = transformers.AutoTokenizer.from_pretrained(setup[0])
    assert max(len(tokenizer(d).input_ids) for d in ROLLING_DOCS) > CONTEXT


def test_greedy_generation_matches_transformers(both):
    hf, ours = ([s["resps"][0][0] for s in r["samples"]["mlbh_local_generate"]] for r in both)
    assert ours == hf
    assert any(text.strip() for text in hf)


def test_bucket_lengths_are_powers_of_two_capped_by_the_context():
    assert [bucket_length(n, 64) for n in (1, 16, 17, 33, 64)] == [16, 16, 32, 64, 64]
    assert bucket_length(100, 48) == 48


def test_eval_command_runs_tasks_and_prints_the_table(setup):
    _, ck, task_dir = setup
    result = make_runner().invoke(cli, ["eval", str(ck), "--tasks", "mlbh_local_cloze", "--task-dir", str(task_dir),
                                        "--backend", "cpu", "--batch-size", "4", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert "mlbh_local_cloze" in result.stdout and "perplexity" in result.stdout


def test_eval_command_rejects_an_unknown_task(setup):
    _, ck, task_dir = setup
    result = make_runner().invoke(cli, ["eval", str(ck), "--tasks", "no_such_task", "--task-dir", str(task_dir)])
    assert result.exit_code != 0
    assert "no_such_task" in result.stderr


def test_a_checkpoint_without_a_tokenizer_is_a_clear_error(tmp_path):
    from mlbh.models.gpt2 import from_preset
    from mlbh.runtime.checkpoint import save_checkpoint
    model = from_preset("tiny", vocab_size=300)
    save_checkpoint(tmp_path, 0, model.init_params(0), {}, {"model": model.to_dict()})
    with pytest.raises(Exception, match="no tokenizer"):
        mlbh.runtime.harness.MlbhLM(checkpoint=str(tmp_path), backend="reference")


def test_a_continuation_longer_than_the_context_scores_its_tail(setup):
    _, ck, _ = setup
    lm = mlbh.runtime.harness.MlbhLM(checkpoint=str(ck), backend="reference", batch_size=2)
    continuation = list(range(100, 100 + CONTEXT + 16))
    (whole, _), = lm._loglikelihood_tokens([(None, [5], continuation)])
    (tail, _), = lm._loglikelihood_tokens([(None, continuation[-CONTEXT - 1:-CONTEXT], continuation[-CONTEXT:])])
    assert whole == tail and whole < 0
