"""mlbh.runtime: jit, the executables of the CPU and CUDA back ends, and the training
runtime (data, tokenizer, optimizer, checkpoints).

    from mlbh.runtime import jit
    step = jit(train_step, backend="cpu", donate_argnums=(0,))

`jit` is imported on first use (it brings in the compiler), so that importing a light
module of this package (the tokenizer, a config) stays fast.
"""


def __getattr__(name):
    if name == "jit":
        from .jitted import jit
        return jit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
