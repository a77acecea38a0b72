"""Training checkpoints: a run directory of complete, self-contained step directories.

    run_dir/
      latest.json            {"checkpoint": "ckpt_00001000", "step": 1000}
      best.json              {"checkpoint": ..., "step": ..., "metric": ...}  (lowest metric)
      ckpt_00001000/
        params.safetensors
        optimizer.safetensors
        state.json           {"format", "version", "step", "metric", "state": <caller's dict>}
        tokenizer.json       (optional) the tokenizer the model reads, copied in

A checkpoint is written into a hidden temporary directory and renamed into place only
once every file in it is complete and fsynced; latest.json is replaced atomically after
that. So whatever point a save dies at, latest.json names a complete checkpoint.
"""

import contextlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlbh.runtime.atomic import (atomic_write_bytes, atomic_write_json, atomic_write_text, fsync_directory,
                                 read_json, temporary_sibling)
from mlbh.runtime.safetensors_io import load_safetensors, save_safetensors
from mlbh.tracer.errors import CheckpointError

FORMAT = "mlbh-checkpoint"
VERSION = 1
PARAMS_FILE = "params.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LATEST_FILE = "latest.json"
BEST_FILE = "best.json"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT_NAME = re.compile(r"ckpt_(\d{8,})")
# Hidden leftovers of interrupted saves or deletions; never valid checkpoints.
LEFTOVER_NAME = re.compile(r"\.ckpt_(\d{8,})\.(tmp|old|del)-.*")


@dataclass
class Checkpoint:
    path: Path
    step: int
    params: dict
    opt_state: dict
    state: dict
    metric: float | None = None

    @property
    def tokenizer_path(self):
        """The tokenizer saved with this checkpoint (None when it has none). Checkpoints of
        mlbh before tokenizers were copied in name an external file in state["tokenizer"]."""
        inside = self.path / TOKENIZER_FILE
        if inside.exists():
            return inside
        legacy = (self.state or {}).get("tokenizer")
        return Path(legacy) if legacy and Path(legacy).exists() else None


def checkpoint_name(step):
    return f"ckpt_{step:08d}"


def save_checkpoint(out_dir, step, params, opt_state, state, keep_last=3, best_metric=None, tokenizer=None):
    """Write out_dir/ckpt_{step:08d}/ and point out_dir/latest.json at it.

    `tokenizer`, a tokenizer.json path, is copied into the checkpoint, so a checkpoint
    directory alone is enough to evaluate and sample.

    `state` must be JSON-serializable. `best_metric` (lower is better, e.g. val loss) makes
    this checkpoint a candidate for best.json; the best checkpoint survives retention.
    `keep_last` keeps the N highest-step checkpoints (None keeps all); the latest and the
    best are always kept. Saving a step that already exists replaces it. Returns the
    checkpoint directory.
    """
    out_dir = Path(out_dir)
    if not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{out_dir}: step must be a non-negative int, got {step!r}")
    if keep_last is not None and keep_last < 1:
        raise CheckpointError(f"{out_dir}: keep_last must be at least 1 or None, got {keep_last}")
    metric = None if best_metric is None else float(best_metric)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out_dir)

    final = out_dir / checkpoint_name(step)
    staging = temporary_sibling(final, "tmp")
    staging.mkdir()
    published = False  # once latest.json may name `staging`, it must not be deleted
    try:
        save_safetensors(staging / PARAMS_FILE, params, {"format": FORMAT, "step": str(step)})
        save_safetensors(staging / OPTIMIZER_FILE, opt_state, {"format": FORMAT, "step": str(step)})
        record = {"format": FORMAT, "version": VERSION, "step": step, "metric": metric, "state": state}
        try:
            text = json.dumps(record, indent=2)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{final / STATE_FILE}: state is not JSON-serializable: {e}") from None
        atomic_write_text(staging / STATE_FILE, text + "\n")
        if tokenizer is not None:
            try:
                data = Path(tokenizer).read_bytes()
            except OSError as e:
                raise CheckpointError(f"{tokenizer}: cannot read the tokenizer to save with the checkpoint: "
                                      f"{e.strerror}") from None
            atomic_write_bytes(staging / TOKENIZER_FILE, data)
        fsync_directory(staging)
        if final.exists():
            # Replacing a step that latest.json may name: point latest.json at the complete
            # staging copy while the old directory is swapped out.
            atomic_write_json(out_dir / LATEST_FILE, {"checkpoint": staging.name, "step": step})
            published = True
            retired = temporary_sibling(final, "old")
            os.rename(final, retired)
            os.rename(staging, final)
            fsync_directory(out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, final)
            fsync_directory(out_dir)
    except BaseException:
        if not published:
            shutil.rmtree(staging, ignore_errors=True)
        raise

    atomic_write_json(out_dir / LATEST_FILE, {"checkpoint": final.name, "step": step})
    if metric is not None and not math.isnan(metric):
        _update_best(out_dir, final.name, step, metric)
    _apply_retention(out_dir, keep_last)
    return final


def check_tensors(tensors, shapes, what):
    """CheckpointError naming the first tensor missing, extra, or of the wrong shape."""
    for name in sorted(set(shapes) | set(tensors)):
        if name not in tensors:
            raise CheckpointError(f"{what} {name} is missing")
        if name not in shapes:
            raise CheckpointError(f"{what} {name} is not a tensor of this model")
        if tuple(tensors[name].shape) != tuple(shapes[name]):
            raise CheckpointError(f"{what} {name} has shape {list(tensors[name].shape)}, the model needs "
                                  f"{list(shapes[name])}")


def load_checkpoint(path):
    """Load a checkpoint from a run directory (follows latest.json) or a ckpt directory."""
    directory = resolve_checkpoint_dir(path)
    state_path = directory / STATE_FILE
    record = _read_json(state_path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{state_path}: not an {FORMAT} state file")
    if record.get("version") != VERSION:
        raise CheckpointError(
            f"{state_path}: checkpoint version {record.get('version')!r} is not supported (expected {VERSION})"
        )
    step = record.get("step")
    if not isinstance(step, int):
        raise CheckpointError(f"{state_path}: missing or invalid 'step'")
    params, _ = load_safetensors(directory / PARAMS_FILE)
    opt_state, _ = load_safetensors(directory / OPTIMIZER_FILE)
    return Checkpoint(
        path=directory,
        step=step,
        params=params,
        opt_state=opt_state,
        state=record.get("state"),
        metric=record.get("metric"),
    )


def resolve_checkpoint_dir(path):
    """The checkpoint directory that `path` (run dir or ckpt dir) designates."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: is a file; expected a run directory or a ckpt_* directory")
    if (path / STATE_FILE).exists():
        return path
    latest_path = path / LATEST_FILE
    if not latest_path.exists():
        raise CheckpointError(
            f"{path}: neither a run directory (no {LATEST_FILE}) nor a checkpoint directory (no {STATE_FILE})"
        )
    directory = _pointed_directory(latest_path)
    if not (directory / STATE_FILE).exists():
        raise CheckpointError(f"{latest_path}: points to {directory}, which has no {STATE_FILE}")
    return directory


def latest_checkpoint(out_dir):
    """The directory latest.json names, or None when `out_dir` holds no checkpoint yet."""
    latest_path = Path(out_dir) / LATEST_FILE
    if not latest_path.exists():
        return None
    return _pointed_directory(latest_path)


def best_checkpoint(out_dir):
    """(directory, metric) of the best checkpoint recorded in best.json, or None."""
    best_path = Path(out_dir) / BEST_FILE
    if not best_path.exists():
        return None
    record = _read_json(best_path)
    return _pointed_directory(best_path), record.get("metric")


def _pointed_directory(pointer_path):
    directory = pointer_path.parent / _checkpoint_entry(pointer_path)
    leftover = LEFTOVER_NAME.fullmatch(directory.name)
    if leftover and not directory.exists():
        # A save died between renaming its staging directory into place and updating
        # latest.json; the staging copy now lives under the final name.
        directory = directory.with_name(checkpoint_name(int(leftover.group(1))))
    return directory


def _checkpoint_entry(pointer_path):
    record = _read_json(pointer_path)
    name = record.get("checkpoint") if isinstance(record, dict) else None
    # Pointers may only name a sibling directory, never an arbitrary path.
    if not isinstance(name, str) or not (CHECKPOINT_NAME.fullmatch(name) or LEFTOVER_NAME.fullmatch(name)):
        raise CheckpointError(f"{pointer_path}: invalid 'checkpoint' entry {name!r}")
    return name


def _read_json(path):
    return read_json(path, CheckpointError)


def _update_best(out_dir, name, step, metric):
    best_path = out_dir / BEST_FILE
    current = None
    if best_path.exists():
        with contextlib.suppress(CheckpointError):
            current = _read_json(best_path)
    still_valid = (
        isinstance(current, dict)
        and isinstance(current.get("metric"), (int, float))
        and current.get("checkpoint") != name  # that directory's content was just replaced
        and (out_dir / str(current.get("checkpoint")) / STATE_FILE).exists()
    )
    if not still_valid or metric < current["metric"]:
        atomic_write_json(best_path, {"checkpoint": name, "step": step, "metric": metric})


def _apply_retention(out_dir, keep_last):
    if keep_last is None:
        return
    steps = {}
    for entry in out_dir.iterdir():
        match = CHECKPOINT_NAME.fullmatch(entry.name)
        if match and entry.is_dir():
            steps[entry.name] = int(match.group(1))
    keep = set(sorted(steps, key=steps.get)[-keep_last:])
    for pointer in (LATEST_FILE, BEST_FILE):
        with contextlib.suppress(CheckpointError):
            keep.add(_pointed_directory(out_dir / pointer).name)
    for name in steps:
        if name not in keep:
            _remove_directory(out_dir / name)


def _remove_directory(directory):
    # Rename first so a half-deleted directory never looks like a checkpoint.
    doomed = temporary_sibling(directory, "del")
    os.rename(directory, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_leftovers(out_dir):
    protected = set()
    for pointer in (LATEST_FILE, BEST_FILE):
        with contextlib.suppress(CheckpointError):
            if (out_dir / pointer).exists():
                protected.add(_checkpoint_entry(out_dir / pointer))
    for entry in out_dir.iterdir():
        if LEFTOVER_NAME.fullmatch(entry.name) and entry.name not in protected:
            shutil.rmtree(entry, ignore_errors=True)
