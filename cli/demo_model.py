"""The demo's model: a 2-layer MLP classifier with a cross-entropy loss, and its data."""
import numpy as np

from mlbh.tracer import ops

IN_FEATURES, HIDDEN, CLASSES, BATCH = 4, 16, 3, 8


def mlp_loss(params, x, labels):
    """Mean cross-entropy of softmax(tanh(x w1 + b1) w2 + b2) against integer labels."""
    hidden = ops.tanh(x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return ops.cross_entropy(logits, labels)


def init_params(rng):
    def dense(fan_in, fan_out):
        return (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)

    # Small random biases rather than zeros, so their gradients are not trivially tiny.
    return {"w1": dense(IN_FEATURES, HIDDEN),
            "b1": (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32),
            "w2": dense(HIDDEN, CLASSES),
            "b2": (0.1 * rng.standard_normal(CLASSES)).astype(np.float32)}


def example_batch(rng):
    x = rng.standard_normal((BATCH, IN_FEATURES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, size=BATCH).astype(np.int32)
    return x, labels
