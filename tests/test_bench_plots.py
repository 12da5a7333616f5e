"""The bench report's plots tell every defense of a full grid apart."""

from __future__ import annotations

from bds.bench.config import cell_defenses
from bds.bench.report import plot_styles


def test_every_registered_defense_gets_its_own_colour_and_marker():
    names = sorted(cell_defenses())
    assert len(names) > 10  # more than matplotlib's default cycle of colours
    styles = plot_styles(names, ["sft", "mix", "bds"])
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == len(names)
    assert len({s["color"] for s in styles.values()}) == len(names)
    assert styles["sft"]["markersize"] > styles["lisa"]["markersize"]
    assert styles["bds"]["zorder"] > styles["lisa"]["zorder"]
