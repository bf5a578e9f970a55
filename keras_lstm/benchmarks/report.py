"""The training benchmark's report: the Markdown tables (`format_markdown`,
written to `report.md`) and the plots (`write_plots`) from the results that
`keras_lstm.benchmarks.train_protocol.run_protocol` collects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from keras_lstm.benchmarks.protocol import GAP_THRESHOLD, SKIP_FIRST_STEPS, succeeded
from keras_lstm.data.controller import HEADS


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def _fmt(value, spec=".3f", missing="-") -> str:
    return missing if value is None else format(value, spec)


def _by_name(results: dict) -> dict:
    return {r["name"]: r for r in results["runs"]}


def _mean_accuracy(run) -> float | None:
    acc = run.get("per_head_accuracy") if run else None
    return float(np.mean([acc[h] for h in HEADS])) if acc else None


def _label(run: dict) -> str:
    if run["mode"] == "carried":
        return f"{run['backbone'].upper()}, state carried across segments"
    k = run["truncate_bptt"]
    return f"{run['backbone'].upper()}, " + ("full BPTT" if k is None else f"truncate {k}")


def _latency_cell(run: dict) -> str:
    lat = run.get("latency") or {}
    parts = []
    if "inference_step_ms" in lat:
        parts.append(f"{lat['inference_step_ms']:.3f} (step)")
    if "policy_stepper_ms" in lat:
        parts.append(f"{lat['policy_stepper_ms']:.3f} (policy, numpy)")
    if "tf_function_step_ms" in lat:
        parts.append(f"{lat['tf_function_step_ms']:.3f} (policy, tf.function)")
    return " / ".join(parts) or "-"


def backbone_table(results: dict) -> str:
    runs = _by_name(results)
    rows = [runs.get("lstm_full"), runs.get("gru_full")]
    head = "| backbone | parameters (backbone) | parameters (policy) | train frames/s (steady) | train frames/s (fit, incl. tracing) | peak RSS during fit (MB) | extra over pre-fit RSS (MB) | val loss (nats) | " + " | ".join(f"acc {h}" for h in HEADS) + " | step latency, batch 1 (ms) |"
    lines = [head, _separator(head)]
    for run in rows:
        if run is None:
            continue
        if not succeeded(run):
            lines.append(f"| {run['name']} | failed: {run['error']} |")
            continue
        acc = run["per_head_accuracy"] or {}
        lines.append(
            f"| {run['backbone'].upper()} | {run['backbone_parameters']:,} | {run['parameters']:,} | "
            f"{_fmt(run['steady_frames_per_s'], ',.0f')} | {_fmt(run['fit_frames_per_s'], ',.0f')} | "
            f"{_fmt(run['peak_rss_fit_mb'], ',.0f')} | {_fmt(run['peak_extra_fit_mb'], ',.0f')} | {_fmt(run['val_loss'], '.4f')} | "
            + " | ".join(_fmt(acc.get(h)) for h in HEADS)
            + f" | {_latency_cell(run)} |"
        )
    base = next((r for r in rows if succeeded(r)), None)
    if base:
        lines.append(
            f"| *repeat previous input* | | | | | | | {_fmt(base['baseline_repeat_loss'], '.4f')} | "
            + " | ".join(_fmt((base.get("baseline_repeat_accuracy") or {}).get(h)) for h in HEADS)
            + " | |"
        )
    return "\n".join(lines)


def truncation_table(results: dict) -> str:
    runs = [r for r in results["runs"] if r["mode"] == "windows" and r["backbone"] == "lstm"]
    full = next((r for r in runs if r["truncate_bptt"] is None and succeeded(r)), None)
    head = "| truncation | step time (ms, median) | speed-up vs full | peak RSS during fit (MB) | extra over pre-fit RSS (MB) | val loss (nats) | loss vs full | mean head accuracy | accuracy vs full (points) | " + " | ".join(f"acc {h}" for h in HEADS) + " |"
    lines = [head, _separator(head)]
    for run in runs:
        label = "full (60)" if run["truncate_bptt"] is None else str(run["truncate_bptt"])
        if not succeeded(run):
            lines.append(f"| {label} | failed: {run['error']} |")
            continue
        acc = run["per_head_accuracy"] or {}
        speed = loss_change = acc_change = None
        if full:
            speed = full["step_ms_median"] / run["step_ms_median"] if run["step_ms_median"] else None
            loss_change = (run["val_loss"] / full["val_loss"] - 1) * 100
            acc_change = (_mean_accuracy(run) - _mean_accuracy(full)) * 100
        lines.append(
            f"| {label} | {_fmt(run['step_ms_median'], '.1f')} | {_fmt(speed, '.2f')}x | {_fmt(run['peak_rss_fit_mb'], ',.0f')} | "
            f"{_fmt(run['peak_extra_fit_mb'], ',.0f')} | {_fmt(run['val_loss'], '.4f')} | {_fmt(loss_change, '+.1f')} % | "
            f"{_fmt(_mean_accuracy(run))} | {_fmt(acc_change, '+.2f')} | " + " | ".join(_fmt(acc.get(h)) for h in HEADS) + " |"
        )
    return "\n".join(lines)


def gap_table(results: dict) -> str:
    head = "| model | windowed val loss (as trained) | deployed, same frames | deployed / windowed | deployed, every frame | repeat-previous baseline, same frames | train frames/s (steady) |"
    lines = [head, _separator(head)]
    for run in results["runs"]:
        if not succeeded(run) or not run.get("deploy"):
            if not succeeded(run):
                lines.append(f"| {_label(run)} | failed: {run['error']} |")
            continue
        d = run["deploy"]
        lines.append(
            f"| {_label(run)} | {d['windowed']['loss']:.4f} | {d['deployed_same_frames']['loss']:.4f} | "
            f"{d['gap_ratio']:.3f}x | {d['deployed_all_frames']['loss']:.4f} | {_fmt(d.get('baseline_repeat_same_frames'), '.4f')} | "
            f"{_fmt(run['steady_frames_per_s'], ',.0f')} |"
        )
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    p, m = results["protocol"], results["machine"]
    runs = _by_name(results)
    any_run = next((r for r in results["runs"] if succeeded(r)), None)
    lines = [
        f"# Training benchmark ({p['name']} protocol)",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores; TensorFlow {m.get('tensorflow')}, Keras {m.get('keras')}, "
        f"Python {m.get('python')}. Load average at start {_loadavg(m.get('load_average'))}, at end {_loadavg(m.get('load_average_end'))}.",
        f"Started {results.get('started')}, took {_fmt(results.get('total_seconds'), '.0f')} s. "
        f"Code: commit {(m.get('code') or {}).get('commit') or '-'}"
        + (f", with uncommitted changes on the training path: {', '.join((m.get('code') or {}).get('uncommitted'))}" if (m.get("code") or {}).get("uncommitted") else "")
        + ".",
        "",
        f"Protocol: replays `{p['replays']}`, seed {p['seed']}, validation fraction {p['val_fraction']} (split by game), "
        f"embed {p['embed_size']}, {p['num_layers']} x {p['hidden_size']}, window {p['window_size']}, windows every "
        f"{p['stride']} frames, batch {p['batch_size']}, {p['epochs']} epoch(s), Adam {p['learning_rate']}, "
        f"max frames {p['max_frames'] or 'all'}."
        + (f" {any_run['train_windows']:,} training windows, {any_run['val_frames']:,} validation frames." if any_run else ""),
        "Each configuration ran in its own process, one after another. Step time = median over training steps "
        f"after the first {SKIP_FIRST_STEPS} (graph tracing); peak RSS = the process's VmHWM, reset just before `fit`.",
        "",
        "## Backbones",
        "",
        backbone_table(results),
        "",
        "## Truncated BPTT (LSTM)",
        "",
        truncation_table(results),
        "",
        "## Train/deploy gap",
        "",
        "Windowed: each validation frame predicted from a window starting at the zero state (as trained). "
        "Deployed: each whole validation game stepped from its first frame with the state carried; "
        "'same frames' are the windows' last frames, 'every frame' all aligned frames.",
        "",
        gap_table(results),
    ]
    if results.get("carried_decision"):
        lines += ["", f"Training with the state carried across segments (`keras_lstm.training.carried_training`): {results['carried_decision']['reason']}."]
    lstm = runs.get("lstm_full")
    if succeeded(lstm) and lstm.get("deploy"):
        lines += [
            "",
            "By time since the start of the game (LSTM, full BPTT; windowed and deployed on the same frames, deployed also on every frame):",
            "",
            "| frames since start | frames compared | windowed | deployed | deployed / windowed | every frame: count | every frame: deployed |",
            "|---|---|---|---|---|---|---|",
        ]
        every = {b["from_frame"]: b for b in lstm["deploy"]["deployed_loss_by_position"]}
        for b in lstm["deploy"].get("gap_by_position", []):
            e = every.get(b["from_frame"], {})
            span = f"{b['from_frame']:,}-{b['to_frame']:,}" if b["to_frame"] is not None else f"{b['from_frame']:,}+"
            lines.append(
                f"| {span} | {b['frames']:,} | {b['windowed_loss']:.4f} | {b['deployed_loss']:.4f} | {b['ratio']:.3f}x | "
                f"{e.get('frames', 0):,} | {_fmt(e.get('loss'), '.4f')} |"
            )
    if any_run and any_run.get("latency"):
        lines += ["", "Latency: " + "; ".join(f"{v}" for k, v in any_run["latency"].items() if k.endswith("_what")) + "."]
    if results.get("plots"):
        lines += ["", *[f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]]]
    failed = [r for r in results["runs"] if not succeeded(r)]
    if failed:
        lines += ["", "Failed: " + "; ".join(f"{r['name']} ({r['error']}, log {r['log']})" for r in failed)]
    return "\n".join(lines) + "\n"


def _loadavg(values) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "-"


# ---------------------------------------------------------------------------
# Plots


def _figure(panels: int, size: tuple[float, float]):
    """A figure of `panels` side by side (no pyplot: no global state)."""
    fig = Figure(figsize=size)
    return fig, fig.subplots(1, panels)


def _save_figure(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)


def write_plots(results: dict, out_dir: Path) -> list[str]:
    """`backbones.png`, `truncation.png`, `deploy_gap.png` in `out_dir`."""
    out_dir = Path(out_dir)
    runs = _by_name(results)
    written = []

    pair = [r for r in (runs.get("lstm_full"), runs.get("gru_full")) if succeeded(r)]
    if pair:
        fig, axes = _figure(4, (14, 3.2))
        names = [r["backbone"].upper() for r in pair]
        panels = [
            ("backbone parameters", [r["backbone_parameters"] for r in pair]),
            ("training frames/s (steady)", [r["steady_frames_per_s"] or 0 for r in pair]),
            ("peak RSS during fit (MB; hatched: above pre-fit RSS)", [r["peak_rss_fit_mb"] or 0 for r in pair]),
            ("validation loss (nats)", [r["val_loss"] or 0 for r in pair]),
        ]
        for ax, (title, values) in zip(axes, panels):
            ax.bar(names, values, color=["tab:blue", "tab:orange"][: len(values)])
            ax.set_title(title, fontsize=9)
        extra = [r.get("peak_extra_fit_mb") for r in pair]
        if all(e is not None for e in extra):
            axes[2].bar(names, extra, bottom=[p - e for p, e in zip(panels[2][1], extra)], fill=False, hatch="//")
        if "baseline_repeat_loss" in pair[0]:
            axes[3].axhline(pair[0]["baseline_repeat_loss"], color="gray", ls="--", lw=1, label="repeat previous")
            axes[3].legend(fontsize=7)
        written.append(_save_figure(fig, out_dir / "backbones.png"))

    trunc = [r for r in results["runs"] if r["mode"] == "windows" and r["backbone"] == "lstm" and succeeded(r)]
    if trunc:
        fig, axes = _figure(4, (15, 3.2))
        labels = ["full" if r["truncate_bptt"] is None else f"K={r['truncate_bptt']}" for r in trunc]
        axes[3].bar(labels, [r.get("peak_extra_fit_mb") or 0 for r in trunc], color="tab:gray")
        axes[3].set_title("peak RSS above pre-fit RSS (MB)", fontsize=9)
        axes[0].bar(labels, [r["step_ms_median"] or 0 for r in trunc])
        axes[0].set_title("training step (ms, median)", fontsize=9)
        axes[1].bar(labels, [r["val_loss"] or 0 for r in trunc], color="tab:green")
        axes[1].set_title("validation loss (nats)", fontsize=9)
        axes[1].set_ylim(min(r["val_loss"] for r in trunc) * 0.95, max(r["val_loss"] for r in trunc) * 1.02)
        axes[2].bar(labels, [_mean_accuracy(r) or 0 for r in trunc], color="tab:purple")
        axes[2].set_title("mean head accuracy", fontsize=9)
        lo = min(_mean_accuracy(r) for r in trunc)
        axes[2].set_ylim(lo * 0.98, max(_mean_accuracy(r) for r in trunc) * 1.01)
        written.append(_save_figure(fig, out_dir / "truncation.png"))

    deployed = [r for r in results["runs"] if succeeded(r) and r.get("deploy")]
    if deployed:
        fig, axes = _figure(2, (12, 3.6))
        labels = [r["name"] for r in deployed]
        x = np.arange(len(deployed))
        ratios = [r["deploy"]["gap_ratio"] for r in deployed]
        axes[0].bar(x, ratios, color=["tab:red" if v > GAP_THRESHOLD else "tab:blue" for v in ratios])
        axes[0].axhline(1.0, color="black", lw=1)
        axes[0].axhline(GAP_THRESHOLD, color="gray", ls="--", lw=1, label=f"{GAP_THRESHOLD}x threshold")
        axes[0].set_ylim(min(0.95, min(ratios) - 0.02), max(1.1, max(ratios) + 0.05))
        axes[0].set_xticks(x, labels, rotation=20, fontsize=8)
        axes[0].set_title("deployed / windowed validation loss, same frames", fontsize=9)
        axes[0].legend(fontsize=7)
        plotted = False
        for r in deployed:
            bins = r["deploy"].get("gap_by_position") or []
            centres = [b["from_frame"] * 1.5 + 1 if b["to_frame"] is None else (b["from_frame"] + b["to_frame"]) / 2 for b in bins]
            if bins:
                axes[1].plot(centres, [b["ratio"] for b in bins], marker="o", label=r["name"])
                plotted = True
        axes[1].axhline(1.0, color="black", lw=1)
        axes[1].axhline(GAP_THRESHOLD, color="gray", ls="--", lw=1)
        axes[1].set_ylim(axes[0].get_ylim())
        if plotted:
            axes[1].set_xscale("log")
        axes[1].set_xlabel("frames since the start of the game (bin centre)", fontsize=8)
        axes[1].set_title("deployed / windowed loss by time in game (1 = no gap)", fontsize=9)
        axes[1].legend(fontsize=7)
        written.append(_save_figure(fig, out_dir / "deploy_gap.png"))
    return written
