"""mlbh.tracer.ops: the numpy-like functions a model is written with."""
from .array_ops import (abs, add, arange, argmax, asarray, astype, broadcast_to, concatenate,  # noqa: F401
                        divide, equal, erf, exp, expand_dims, full, getitem, greater, greater_equal,
                        less, less_equal, log, matmul, max, maximum, mean, minimum, multiply,
                        negative, not_equal, ones, power, reshape, rsqrt, split, sqrt, squeeze,
                        stop_gradient, subtract, sum, take, tanh, transpose, var, where, zeros,
                        zeros_like)
from .nn_ops import (causal_attention, cross_entropy, dropout, fold_in, gelu, layer_norm,  # noqa: F401
                     log_softmax, random_key, softmax)
