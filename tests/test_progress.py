"""The training progress line: its ETA leaves out the first step, which compiles."""
import io

from mlbh.runtime import progress


def test_eta_counts_from_the_end_of_the_compiling_first_step(monkeypatch):
    clock = iter([0.0, 10.0, 11.0, 12.0])  # start; step 1 took 10 s (compile), then 1 s a step
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = progress.Progress(11, stream=out)
    for step in (1, 2, 3):
        bar.update(step, {"loss": 1.0, "val_loss": 1.0, "tokens_per_s": 100.0})
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("eta 1:40"), lines[0]  # one step in 10 s: 10 steps left at 10 s each
    assert lines[2].endswith("eta 0:08"), lines[2]  # 1 s a step since the first: 8 steps left
