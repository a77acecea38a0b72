"""Hugging Face GPT-2 directories <-> mlbh checkpoints (`mlbh import-hf`, `mlbh export-hf`).

A transformers GPT-2 directory holds config.json, model.safetensors (or
pytorch_model.bin, read with torch when it is installed) and the tokenizer as vocab.json +
merges.txt (the formats of OpenAI's encoder.json and vocab.bpe). Import writes an mlbh
checkpoint (step 0, no optimizer state) with its tokenizer inside; export writes a
directory that transformers' GPT2LMHeadModel.from_pretrained loads.
"""
import json
import os
import tempfile

import numpy as np

from mlbh.runtime.atomic import atomic_write_json, atomic_write_text
from mlbh.runtime.bpe_bytes import bytes_to_text
from mlbh.runtime.checkpoint import load_checkpoint, save_checkpoint
from mlbh.runtime.safetensors_io import load_safetensors, save_safetensors
from mlbh.runtime.tokenizer import Tokenizer
from mlbh.tracer.errors import CheckpointError, ConfigError

from .config import GPT2Config
from .hf import params_from_hf, params_to_hf


def _read_config(directory):
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: no config.json (is this a transformers GPT-2 directory?)") from None
    except ValueError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if cfg.get("model_type") not in (None, "gpt2"):
        raise ConfigError(f"{path}: model_type {cfg.get('model_type')!r} is not gpt2")
    if cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ConfigError(f"{path}: activation {cfg['activation_function']!r}; mlbh's GPT-2 uses the tanh GELU")
    return cfg


def _read_weights(directory):
    st = os.path.join(directory, "model.safetensors")
    if os.path.exists(st):
        return load_safetensors(st)[0]
    binary = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(binary):
        try:
            import torch
        except ImportError:
            raise CheckpointError(f"{binary}: reading pytorch_model.bin needs torch; convert it to "
                                  "model.safetensors or install torch") from None
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{directory}: neither model.safetensors nor pytorch_model.bin")


def import_hf(directory, out_dir):
    """Convert a transformers GPT-2 directory into an mlbh checkpoint in out_dir."""
    cfg = _read_config(directory)
    config, params = params_from_hf(_read_weights(directory), n_head=cfg.get("n_head"),
                                    layer_norm_eps=cfg.get("layer_norm_epsilon", 1e-5))
    if cfg.get("n_positions", config.block_size) != config.block_size:
        raise ConfigError(f"{directory}: n_positions {cfg['n_positions']} but wpe has {config.block_size} rows")
    tokenizer = None
    vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
    with tempfile.TemporaryDirectory() as scratch:
        if os.path.exists(vocab) and os.path.exists(merges):
            tokenizer = os.path.join(scratch, "tokenizer.json")
            Tokenizer.from_gpt2_files(vocab, merges).save(tokenizer)
        save_checkpoint(out_dir, 0, params, {}, {"model": config.to_dict(),
                                                 "imported_from": os.path.abspath(directory)},
                        tokenizer=tokenizer)
    return config, tokenizer is not None


def export_hf(checkpoint_path, directory):
    """Write a checkpoint as a transformers GPT-2 directory (model.safetensors, config.json,
    and vocab.json + merges.txt when the checkpoint has a tokenizer)."""
    ck = load_checkpoint(checkpoint_path)
    if not ck.state.get("model"):
        raise CheckpointError(f"{ck.path}: no model config in state.json")
    config = GPT2Config.from_dict(ck.state["model"])
    os.makedirs(directory, exist_ok=True)
    state = params_to_hf(ck.params, config, prefix=True)
    state.pop("lm_head.weight")  # tied to wte: transformers re-ties it on load
    save_safetensors(os.path.join(directory, "model.safetensors"),
                     {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}, {"format": "pt"})
    atomic_write_json(os.path.join(directory, "config.json"), {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": config.n_layer,
        "n_head": config.n_head, "n_embd": config.n_embd, "n_positions": config.block_size,
        "n_ctx": config.block_size, "vocab_size": config.vocab_size, "layer_norm_epsilon": config.layer_norm_eps,
        "activation_function": "gelu_new", "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout, "tie_word_embeddings": True,
        "bos_token_id": config.vocab_size - 1, "eos_token_id": config.vocab_size - 1})
    if ck.tokenizer_path:
        _write_gpt2_tokenizer(Tokenizer.load(ck.tokenizer_path), directory)
    return directory


def _write_gpt2_tokenizer(tok, directory):
    encoder = {bytes_to_text(tok.token_bytes(i)) if i not in tok.special_tokens.values()
               else _special_text(tok, i): i for i in range(tok.vocab_size)}
    atomic_write_json(os.path.join(directory, "vocab.json"), encoder, indent=None)
    lines = ["#version: 0.2"] + [f"{bytes_to_text(tok.token_bytes(a))} {bytes_to_text(tok.token_bytes(b))}"
                                 for a, b, _ in tok.merges]
    atomic_write_text(os.path.join(directory, "merges.txt"), "\n".join(lines) + "\n")


def _special_text(tok, token_id):
    return next(text for text, i in tok.special_tokens.items() if i == token_id)
