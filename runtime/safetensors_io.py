"""Read and write the safetensors format with numpy alone.

Layout: an 8-byte little-endian header length N, N bytes of JSON header, then the raw
little-endian tensor bytes. The header maps each tensor name to
{"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the byte right
after the header) and may hold "__metadata__": {str: str}. Tensors must tile the data
area exactly, with no gaps or overlaps.
"""

import json
import math
import os
from pathlib import Path

import ml_dtypes
import numpy as np

from mlbh.runtime.atomic import atomic_writer
from mlbh.tracer.errors import CheckpointError

DTYPE_BY_CODE = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
CODE_BY_DTYPE = {dtype: code for code, dtype in DTYPE_BY_CODE.items()}

METADATA_KEY = "__metadata__"
# Same cap as the reference implementation: a larger header means a corrupt length field.
MAX_HEADER_BYTES = 100_000_000
HEADER_ALIGNMENT = 8


def save_safetensors(path, tensors, metadata=None):
    """Atomically write `tensors` (name -> np.ndarray) and string `metadata` to `path`."""
    path = Path(path)
    arrays = {name: _little_endian_contiguous(path, name, value) for name, value in tensors.items()}
    _check_metadata(path, metadata)

    # Widest dtypes first keeps every tensor aligned to its itemsize, as the reference writer does.
    order = sorted(arrays, key=lambda name: (-arrays[name].dtype.itemsize, name))
    header = {}
    if metadata:
        header[METADATA_KEY] = dict(metadata)
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {
            "dtype": CODE_BY_DTYPE[array.dtype.newbyteorder("=")],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % HEADER_ALIGNMENT)
    with atomic_writer(path) as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for name in order:
            if arrays[name].nbytes:
                f.write(memoryview(arrays[name].reshape(-1).view(np.uint8)))


def load_safetensors(path):
    """Read `path`; return (dict name -> np.ndarray, metadata dict).

    The file is fully validated before any tensor is read; every problem raises
    CheckpointError naming the file.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open: {e.strerror}") from None
    with f:
        file_size = os.fstat(f.fileno()).st_size
        header, metadata, data_start = _read_header(path, f, file_size)
        entries = _validated_entries(path, header, file_size - data_start)
        tensors = {}
        f.seek(data_start)
        for name, dtype, shape, begin, end in entries:
            array = np.empty(shape, dtype)
            if end > begin:
                read = f.readinto(memoryview(array.reshape(-1).view(np.uint8)))
                if read != end - begin:
                    raise CheckpointError(f"{path}: file ended while reading tensor {name!r}")
            tensors[name] = array
    return tensors, metadata


def _little_endian_contiguous(path, name, value):
    if not isinstance(name, str) or name == METADATA_KEY:
        raise CheckpointError(f"{path}: tensor name {name!r} is not allowed")
    array = np.asarray(value)
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder in "<>" else array.dtype
    if native not in CODE_BY_DTYPE:
        raise CheckpointError(
            f"{path}: tensor {name!r} has dtype {array.dtype}, which safetensors_io cannot store "
            f"(supported: {', '.join(DTYPE_BY_CODE)})"
        )
    # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
    return np.require(array, dtype=native.newbyteorder("<"), requirements="C")


def _check_metadata(path, metadata):
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f"{path}: metadata must be a dict of str to str")


def _read_header(path, f, file_size):
    prefix = f.read(8)
    if len(prefix) < 8:
        raise CheckpointError(f"{path}: truncated ({file_size} bytes) — not a safetensors file")
    header_len = int.from_bytes(prefix, "little")
    if header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
        raise CheckpointError(
            f"{path}: header length {header_len} does not fit the file ({file_size} bytes); "
            "the file is truncated or not safetensors"
        )
    raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object")
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f"{path}: {METADATA_KEY} must map strings to strings")
    return header, metadata, 8 + header_len


def _validated_entries(path, header, data_len):
    """Return (name, dtype, shape, begin, end) sorted by offset, after checking each entry."""
    entries = []
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict):
            raise CheckpointError(f"{where}: header entry is not an object")
        code = info.get("dtype")
        if code not in DTYPE_BY_CODE:
            raise CheckpointError(f"{where}: unknown dtype {code!r}")
        shape = info.get("shape")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise CheckpointError(f"{where}: bad shape {shape!r}")
        offsets = info.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
            raise CheckpointError(f"{where}: bad data_offsets {offsets!r}")
        begin, end = offsets
        if not begin <= end <= data_len:
            raise CheckpointError(
                f"{where}: data_offsets {offsets} outside the {data_len}-byte data area"
            )
        dtype = DTYPE_BY_CODE[code]
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            raise CheckpointError(
                f"{where}: {code}{shape} needs {expected} bytes but data_offsets span {end - begin}"
            )
        entries.append((name, dtype.newbyteorder("<"), tuple(shape), begin, end))

    entries.sort(key=lambda e: (e[3], e[4]))
    position = 0
    for name, _, _, begin, end in entries:
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise CheckpointError(f"{path}: tensor {name!r} at byte {begin} {problem}")
        position = end
    if position != data_len:
        raise CheckpointError(
            f"{path}: tensors cover {position} bytes but the data area holds {data_len}"
        )
    return entries


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
