"""Number and table formatting for the CLI's human-readable reports."""


def count_text(n: int) -> str:
    """1234567 -> "1,234,567 (1.23 M)"; small numbers stay plain."""
    for scale, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= 10 * scale:
            return f"{n:,} ({n / scale:.3g} {suffix})"
    return f"{n:,}"


def bytes_text(n: int) -> str:
    """1536 -> "1,536 B (1.5 KiB)"."""
    for scale, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n:,} B ({n / scale:.3g} {suffix})"
    return f"{n:,} B"


def signed(n: int) -> str:
    """A delta: "+3", "-2", or "" for no change."""
    return f"{n:+d}" if n else ""


def table(rows, right_aligned=(), indent="  ") -> list:
    """Lines of a plain text table; columns whose index is in right_aligned are right-justified."""
    rows = [[str(cell) for cell in row] for row in rows]
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i in right_aligned else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines
