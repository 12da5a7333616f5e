"""The demo's scores plot: HS, FA and over-refusal bars for every method."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bds.report.demo_report import draw_scores  # noqa: E402


def methods(**scores):
    """methods[name]['headline'][metric]['value'] as method_row gives them."""
    return {
        name: {"headline": {k: {"value": v} for k, v in values.items() if v is not None}}
        for name, values in scores.items()
    }


def bars_by_label(ax):
    """{legend label: [bar heights, method order]}."""
    return {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}


def test_scores_plot_shows_over_refusal_beside_hs_and_fa():
    fig, ax = plt.subplots()
    draw_scores(
        ax,
        methods(
            aligned={"harmful_score": 2.0, "finetune_accuracy": 55.0, "over_refusal": 18.0},
            sft={"harmful_score": 61.0, "finetune_accuracy": 90.0, "over_refusal": 5.0},
            bds={"harmful_score": 4.0, "finetune_accuracy": 88.0, "over_refusal": 22.5},
        ),
    )
    assert bars_by_label(ax) == {
        "harmful score": [2.0, 61.0, 4.0],
        "fine-tune accuracy": [55.0, 90.0, 88.0],
        "over-refusal": [18.0, 5.0, 22.5],
    }
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "harmful score",
        "fine-tune accuracy",
        "over-refusal",
    ]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["aligned", "sft", "bds"]
    # each method's three bars side by side, centred on its tick, none overlapping
    xs = sorted(p.get_x() for c in ax.containers for p in c.patches)
    width = ax.containers[0].patches[0].get_width()
    assert all(b - a >= width - 1e-9 for a, b in zip(xs, xs[1:], strict=False))
    labels = [t.get_text() for t in ax.texts]
    assert "22" in labels or "23" in labels  # values written on the bars
    plt.close(fig)


def test_a_metric_nobody_was_evaluated_on_gets_no_bars():
    fig, ax = plt.subplots()
    draw_scores(
        ax,
        methods(
            aligned={"harmful_score": 2.0, "over_refusal": 30.0},
            sft={"harmful_score": 50.0, "over_refusal": None},
        ),
    )
    got = bars_by_label(ax)
    assert set(got) == {"harmful score", "over-refusal"}
    assert got["over-refusal"][0] == 30.0 and got["over-refusal"][1] != got["over-refusal"][1]
    plt.close(fig)
