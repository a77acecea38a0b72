"""A one-line progress display for training: step, loss, tokens/s, ETA."""
import sys
import time


class Progress:
    def __init__(self, total, start=0, stream=None, width=24):
        self.total = total
        self.start = start
        self.stream = stream or sys.stderr
        self.width = width
        self.t0 = time.perf_counter()
        self.t_first = None  # when the first step (the one that compiles) ended
        self.tty = self.stream.isatty()
        self.last_print = 0.0

    def update(self, step, record):
        done = step - self.start
        now = time.perf_counter()
        if done == 1:  # the first step compiles: the rate (and ETA) counts from its end
            self.t_first = now
        since, steps = (self.t_first, done - 1) if done > 1 else (self.t0, done)
        rate = steps / (now - since) if now > since else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        frac = step / self.total
        bar = "#" * int(frac * self.width) + "-" * (self.width - int(frac * self.width))
        text = (f"[{bar}] step {step}/{self.total} loss {record['loss']:.4f}"
                + (f" val {record['val_loss']:.4f}" if "val_loss" in record else "")
                + f" | {record['tokens_per_s']:,.0f} tok/s | eta {_fmt_time(eta)}")
        if self.tty:
            self.stream.write("\r" + text.ljust(100))
            if "val_loss" in record:
                self.stream.write("\n")
            self.stream.flush()
        elif "val_loss" in record or now - self.last_print > 10 or step == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_print = now

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_time(seconds):
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
