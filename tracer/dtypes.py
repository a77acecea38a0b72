"""The dtypes mlbh knows, by name, and the promotion rule of the user-facing ops."""
import ml_dtypes
import numpy as np

from .errors import DTypeError

NUMPY = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "uint32": np.dtype(np.uint32),
    "uint16": np.dtype(np.uint16),
    "bool": np.dtype(np.bool_),
}
FLOATS = ("float64", "float32", "float16", "bfloat16")
INTS = ("int64", "int32", "uint32", "uint16")
SHORT = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
         "int64": "i64", "int32": "i32", "uint32": "u32", "uint16": "u16", "bool": "bool"}
ITEMSIZE = {name: dt.itemsize for name, dt in NUMPY.items()}
_NAME_OF_NUMPY = {dt: name for name, dt in NUMPY.items()}


def name_of(dtype) -> str:
    """Canonical dtype name of a string, numpy dtype or numpy scalar type."""
    if isinstance(dtype, str) and dtype in NUMPY:
        return dtype
    if isinstance(dtype, np.dtype) and dtype in _NAME_OF_NUMPY:  # every call's arrays: keep it cheap
        return _NAME_OF_NUMPY[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    for name, known in NUMPY.items():
        if dt == known:
            return name
    raise DTypeError(f"unsupported dtype {dtype!r}; mlbh supports {', '.join(NUMPY)}")


def to_numpy(name: str) -> np.dtype:
    return NUMPY[name]


def is_float(name: str) -> bool:
    return name in FLOATS


def is_int(name: str) -> bool:
    return name in INTS


_FLOAT_RANK = {"float16": 1, "bfloat16": 1, "float32": 2, "float64": 3}
_INT_RANK = {"uint16": 1, "int32": 2, "uint32": 2, "int64": 3}


def promote(a: str, b: str) -> str:
    """Result dtype of a binary op on two arrays (weak Python scalars are handled by ops)."""
    if a == b:
        return a
    if is_float(a) and is_float(b):
        ra, rb = _FLOAT_RANK[a], _FLOAT_RANK[b]
        if ra == rb:  # float16 with bfloat16: neither holds the other
            return "float32"
        return a if ra > rb else b
    if is_float(a) or is_float(b):
        return a if is_float(a) else b
    if a == "bool" or b == "bool":
        return b if a == "bool" else a
    ra, rb = _INT_RANK[a], _INT_RANK[b]
    if ra == rb:
        return "int64"
    return a if ra > rb else b


def compute_dtype(name: str) -> np.dtype:
    """numpy dtype the reference interpreter computes a value of this dtype in."""
    return NUMPY["float32"] if name in ("float16", "bfloat16") else NUMPY[name]
