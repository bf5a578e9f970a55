"""The reliability plot (`keras-lstm evaluate --reliability-plot PATH.png`):
one panel per head, accuracy against confidence per bin beside the diagonal
of perfect calibration, with the bin counts underneath; drawn from the
evaluation summary's `calibration_bins` (`keras_lstm.evaluation.calibration`)."""

from __future__ import annotations

from pathlib import Path

from keras_lstm.data import controller
from keras_lstm.files import atomic


def check_plot_destination(path: str | Path) -> Path:
    """`path` as a Path, or an error naming it: not a `.png` name, a folder,
    or in a folder that does not exist or cannot be written (checked before
    an evaluation that may take minutes)."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: the reliability plot is a PNG image; give a path ending in .png")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a file path ending in .png")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: cannot write the reliability plot, the folder {path.parent} does not exist")
    atomic.check_writable(path)
    return path


def _draw_panel(ax, counts_ax, head: str, bins: dict, ece) -> None:
    """Accuracy per bin beside the diagonal on `ax`; predictions per bin
    (how much each accuracy rests on) on `counts_ax` below it."""
    n = len(bins["count"])
    width = 1.0 / n
    left = [i * width for i in range(n)]
    filled = [i for i, c in enumerate(bins["count"]) if c]
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="calibrated")
    ax.bar([left[i] for i in filled], [bins["accuracy"][i] for i in filled], width=width, align="edge",
           color="tab:blue", alpha=0.35, edgecolor="tab:blue", label="accuracy per bin")
    ax.plot([bins["confidence"][i] for i in filled], [bins["accuracy"][i] for i in filled], "o", color="tab:blue",
            markersize=3, label="at the bin's mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.tick_params(labelbottom=False)
    ece_text = "-" if ece is None else f"{ece:.4f}"
    ax.set_title(f"{head} (ECE {ece_text})", fontsize=10)
    counts_ax.bar(left, bins["count"], width=width, align="edge", color="tab:orange", alpha=0.6)
    counts_ax.set_yscale("symlog")
    counts_ax.set_xlim(0, 1)
    counts_ax.set_xlabel("confidence")
    counts_ax.set_ylabel("count", fontsize=8)
    counts_ax.tick_params(axis="y", labelsize=7)


def write_reliability_plot(summary: dict, path: str | Path) -> Path:
    """Draw `summary["calibration_bins"]` (and `calibration_ece`) to `path`,
    a PNG written atomically (whole or not at all). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = check_plot_destination(path)
    bins_by_head = summary["calibration_bins"]
    fig = Figure(figsize=(13, 9))
    FigureCanvasAgg(fig)  # Agg: no display needed, no pyplot state
    # per head: accuracy above, counts below; two rows of three heads
    grid = fig.subplots(4, 3, sharex="col", gridspec_kw={"height_ratios": [3, 1, 3, 1]})
    for i, head in enumerate(controller.HEADS):
        row, col = 2 * (i // 3), i % 3
        _draw_panel(grid[row, col], grid[row + 1, col], head, bins_by_head[head], summary.get("calibration_ece", {}).get(head))
    grid[0, 0].legend(loc="upper left", fontsize=8)
    note = "buttons: each of the 8 buttons as one binary prediction, confidence max(p, 1-p)"
    fig.suptitle(f"Reliability per head over {summary.get('frames', '?')} frames ({note})", fontsize=10)
    fig.tight_layout()
    try:
        with atomic.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    except atomic.DiskError as err:  # a full disk, found only now
        err.advice = "the reliability plot was not written"
        raise
    return path
