"""A series of counts as the points of an inline SVG polyline (drawn server-side: no
script, no chart library)."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 336, 48  # viewBox units; the line keeps 2 units off the edges
PAD = 2


@dataclass(frozen=True)
class Sparkline:
    points: str  # "x,y x,y …" for <polyline points>
    total: int
    peak: int
    width: int = WIDTH
    height: int = HEIGHT


def sparkline(counts: list[int]) -> Sparkline:
    """Oldest first; the highest count touches the top, zero lies on the bottom."""
    peak = max(counts, default=0)
    step = (WIDTH - 2 * PAD) / max(len(counts) - 1, 1)
    span = HEIGHT - 2 * PAD
    points = " ".join(
        f"{PAD + i * step:.1f},{HEIGHT - PAD - (n / peak * span if peak else 0):.1f}"
        for i, n in enumerate(counts)
    )
    return Sparkline(points, sum(counts), peak)
