"""lm-evaluation-harness adapter: the model `mlbh`, registered when this module is imported.

    import mlbh.runtime.harness, lm_eval
    lm_eval.simple_evaluate(model="mlbh", model_args="checkpoint=runs/gpt2,batch_size=16",
                            tasks=["lambada_openai"])

Scoring runs a compiled forward whose outputs are per-token negative log-likelihoods and
greedy flags (cross-entropy and argmax fused after the LM head), so only (batch, seq)
arrays leave the device. Tokenisation, windowing and the empty-context rule are the
harness's own (TemplateLM, get_rolling_token_windows), so mlbh scores exactly the tokens
its `hf` model scores. Rows are sorted longest first and batched; each batch is padded to
batch_size rows and a power-of-two length, so an evaluation compiles a handful of shapes.
"""
import numpy as np

try:
    import lm_eval.models  # noqa: F401  (lm-eval loads its own models only into an empty registry)
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("mlbh.runtime.harness needs lm-evaluation-harness: pip install 'mlbh[eval]'") from e
from tqdm import tqdm

from mlbh.tracer import ops
from mlbh.tracer.errors import CheckpointError, ConfigError

from .executable import to_host
from .jitted import default_backend, jit
from .sampling import KVSampler
from .tokenizer import Tokenizer

MIN_BUCKET = 16
DEFAULT_MAX_GEN_TOKS = 256


def make_token_scores(model):
    """(params, tokens, targets) -> (negative log-likelihood of each target, whether it is
    the argmax), both (batch, seq); targets of -100 score 0."""
    def token_scores(params, tokens, targets):
        logits = model.forward(params, tokens)
        nll = ops.cross_entropy(logits, targets, ignore_index=-100, reduction="none")
        return nll, ops.equal(ops.argmax(logits, -1), targets)
    return token_scores


def bucket_length(n, limit):
    """The padded length of a batch whose longest row has n tokens."""
    return min(limit, max(MIN_BUCKET, 1 << max(n - 1, 0).bit_length()))


@register_model("mlbh")
class MlbhLM(TemplateLM):
    """An mlbh checkpoint as an lm-eval model. model_args: checkpoint=PATH (a run or ckpt
    directory holding its tokenizer), batch_size (rows per compiled call, default 8),
    backend (cpu, cuda or reference; default cuda when there is a GPU), max_length."""

    def __init__(self, checkpoint=None, batch_size=8, backend=None, max_length=None, device=None,
                 max_batch_size=None, model=None, params=None, tokenizer=None):
        super().__init__()
        if checkpoint is not None:
            from .model_families import load_model
            ck, model = load_model(checkpoint)
            if ck.tokenizer_path is None:
                raise CheckpointError(f"{ck.path}: the checkpoint has no tokenizer, which lm-eval needs")
            params, tokenizer = ck.params, Tokenizer.load(ck.tokenizer_path)
        if model is None or params is None or tokenizer is None:
            raise ConfigError("the mlbh lm-eval model needs model_args checkpoint=PATH")
        if backend is None and device is not None:
            backend = "cuda" if str(device).startswith("cuda") else "cpu"
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.backend = backend or default_backend()
        self.batch_size = _batch_size(batch_size)
        self._max_length = int(max_length) if max_length else model.context
        if not 1 <= self._max_length <= model.context:
            raise ConfigError(f"max_length {self._max_length} must be in [1, {model.context}] (the model context)")
        self._scores = jit(make_token_scores(model), backend=self.backend, warn_on_retrace=False)
        self.params = self._scores.device_put(params)
        self._sampler = None

    # ---- tokens ------------------------------------------------------------------------
    @property
    def eot_token_id(self):
        return self.tokenizer.eot_id

    @property
    def max_length(self):
        return self._max_length

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        # Special-token text counts as the special token, as in transformers' GPT-2 tokenizer.
        return self.tokenizer.encode(string, allowed_special="all")

    def tok_decode(self, ids):
        return self.tokenizer.decode(ids)

    # ---- scoring -----------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
        rows = [(context + continuation)[-(self.max_length + 1):] for _, context, continuation in requests]
        scored = self._score_rows(rows, [len(c) for _, _, c in requests], disable_tqdm)
        out = []
        for (key, _, _), (nll, greedy) in zip(requests, scored):
            answer = (-float(nll), bool(greedy))
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
            out.append(answer)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        rows, counts, owners = [], [], []
        for n, (text,) in enumerate(req.args for req in requests):
            windows = get_rolling_token_windows(self.tok_encode(text), self.prefix_token_id, self.max_length, 1)
            for context, continuation in map(make_disjoint_window, windows):
                rows.append((context + continuation)[-(self.max_length + 1):])
                counts.append(len(continuation))
                owners.append(n)
        totals = [0.0] * len(requests)
        for n, (nll, _) in zip(owners, self._score_rows(rows, counts, disable_tqdm)):
            totals[n] -= nll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def _score_rows(self, rows, counts, disable_tqdm):
        """(summed nll, all greedy) of the last counts[i] tokens of each row, where a row is
        the model input followed by one more token."""
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        results = [None] * len(rows)
        for start in tqdm(range(0, len(order), self.batch_size), desc="mlbh scoring",
                          disable=disable_tqdm or not order):
            batch = order[start:start + self.batch_size]
            width = bucket_length(max(len(rows[i]) - 1 for i in batch), self.max_length)
            tokens = np.zeros((self.batch_size, width), np.int32)
            targets = np.full((self.batch_size, width), -100, np.int32)
            for r, i in enumerate(batch):
                row = rows[i]
                n_in = len(row) - 1
                n_scored = min(counts[i], n_in)  # a continuation longer than the window: its tail
                tokens[r, :n_in] = row[:-1]
                targets[r, n_in - n_scored:n_in] = row[n_in - n_scored + 1:]
            self.model.check_tokens(tokens, "lm-eval request tokens")
            nll, greedy = (to_host(x) for x in self._scores(self.params, tokens, targets))
            supervised = targets != -100
            for r, i in enumerate(batch):
                results[i] = (float(nll[r][supervised[r]].astype(np.float64).sum()),
                              bool(greedy[r][supervised[r]].all()))
        return results

    # ---- generation --------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm=False):
        if self._sampler is None:
            self._sampler = KVSampler(self.model, self.backend)
        out = []
        for req in tqdm(requests, desc="mlbh generating", disable=disable_tqdm):
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
            sampled = gen_kwargs.pop("do_sample", False)
            temperature = float(gen_kwargs.pop("temperature", 0.0)) if sampled else 0.0
            keep = max(1, self.max_length - max_new)
            prompt = self.tok_encode(context)[-keep:]
            new = []

            def stop(token_id):
                new.append(token_id)
                return token_id == self.eot_token_id or any(s in self.tok_decode(new) for s in until)

            self._sampler.generate(self.params, prompt, max_new, temperature=temperature, top_k=0,
                                   seed=int(gen_kwargs.pop("seed", 0)), on_token=stop,
                                   top_p=float(gen_kwargs.pop("top_p", 1.0)))
            text = self.tok_decode([t for t in new if t != self.eot_token_id])
            for s in until:
                text = text.split(s)[0]
            self.cache_hook.add_partial("generate_until", req.args, text)
            out.append(text)
        return out


def _batch_size(value):
    if value in (None, "auto") or str(value).startswith("auto"):
        return 8
    try:
        size = int(value)
    except ValueError:
        raise ConfigError(f"batch_size must be a positive integer or 'auto', got {value!r}") from None
    if size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {size}")
    return size


def run_tasks(checkpoint, tasks, task_dirs=(), batch_size=8, backend=None, limit=None, num_fewshot=None,
              bootstrap_iters=1000):
    """lm_eval.simple_evaluate of a checkpoint on named tasks (lm-eval's own, or YAML tasks
    in task_dirs); returns its results dict."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    manager = TaskManager(include_path=[str(d) for d in task_dirs] or None)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ConfigError(f"lm-eval knows no task {', '.join(map(repr, unknown))}"
                          + ("" if task_dirs else " (local YAML tasks need --task-dir)"))
    lm = MlbhLM(checkpoint=checkpoint, batch_size=batch_size, backend=backend)
    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                   num_fewshot=num_fewshot, bootstrap_iters=bootstrap_iters, log_samples=False)
