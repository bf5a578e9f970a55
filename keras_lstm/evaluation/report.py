"""Human-readable summaries of training and evaluation results."""

from __future__ import annotations

from keras_lstm.data import controller


def _fmt(value, spec=".4f") -> str:
    return "-" if value is None else format(value, spec)


def _decision_quality_lines(summary: dict) -> list[str]:
    """Accuracy on change frames beside both baselines, and the calibration
    error, per head (columns aligned with the loss table's heads). Nothing
    for a summary written before these were measured."""
    if "change_frame_accuracy" not in summary:
        return []
    label = 26  # the loss table's name and loss columns
    counts = summary["change_frames"]
    lines = [
        "on change frames (the target differs from the previous frame's controller):",
        f"{'  change frames':{label}}" + "".join(f"{counts[h]:>10,}" for h in controller.HEADS),
    ]
    rows = [
        ("  policy", summary["change_frame_accuracy"]),
        ("  repeat-prev", summary["baseline_repeat_change_frame_accuracy"]),
        ("  class prior", summary["baseline_prior_change_frame_accuracy"]),
    ]
    for name, acc in rows:
        lines.append(f"{name:{label}}" + "".join(f"{_fmt(acc[h], '.3f'):>10}" for h in controller.HEADS))
    lines.append("(accuracy on those frames, where repeat-prev is 0 by construction; buttons: change events")
    lines.append(" of single buttons, each button scored where it changed, the mean weighted by events)")
    if "predicted_changes" in summary:
        predicted, precision = summary["predicted_changes"], summary["predicted_change_precision"]
        lines.append(f"{'  policy changes':{label}}" + "".join(f"{predicted[h]:>10,}" for h in controller.HEADS))
        lines.append(f"{'  ...right':{label}}" + "".join(f"{_fmt(precision[h], '.3f'):>10}" for h in controller.HEADS))
        lines.append("(the frames where the policy's prediction differs from the previous input, and how often it is")
        lines.append(" right there; for the buttons, below 0.5 means its changes cost accuracy against repeat-prev)")
    if "keep_bias_accuracy" in summary:
        lines.append("accuracy with a bias toward the previous input (nats: a change only where e^bias times as likely as keeping):")
        biased = [("0 (policy)", summary["per_head_accuracy"]), *summary["keep_bias_accuracy"].items()]
        for bias, acc in biased:
            lines.append(f"{'  keep bias ' + bias:{label}}" + "".join(f"{_fmt(acc[h], '.4f'):>10}" for h in controller.HEADS))
        repeat = summary["baseline_repeat_accuracy"]
        lines.append(f"{'  keep bias inf (repeat)':{label}}" + "".join(f"{_fmt(repeat[h], '.4f'):>10}" for h in controller.HEADS))
    ece = summary["calibration_ece"]
    lines.append(f"{'calibration error (ECE)':{label}}" + "".join(f"{_fmt(ece[h], '.4f'):>10}" for h in controller.HEADS))
    bins = len(next(iter(summary["calibration_bins"].values()))["count"]) if summary.get("calibration_bins") else "?"
    lines.append(f"(expected calibration error over {bins} confidence bins: 0 when each head is right as often as it is confident)")
    return lines


F1_COLUMNS = controller.HEADS + ("main_stick", "c_stick")


def _f1_lines(summary: dict) -> list[str]:
    """F1 per head beside both baselines, then the loss and F1 of each group
    of frames (by player, by character), where the summary has them."""
    if "f1" not in summary:
        return []
    label = 26
    lines = ["F1 per head (MIMIC's: macro over the classes present; buttons as 7 combinations):",
             f"{'':{label}}" + "".join(f"{h:>11}" for h in F1_COLUMNS)]
    for name, key in (("  policy", "f1"), ("  repeat-prev", "baseline_repeat_f1"), ("  class prior", "baseline_prior_f1")):
        lines.append(f"{name:{label}}" + "".join(f"{_fmt(summary[key][h], '.3f'):>11}" for h in F1_COLUMNS))
    for title, key in (("by player (seen in training, unseen, anonymous)", "by_player"), ("by character", "by_character")):
        if summary.get(key):
            lines.append(f"{title}: frames, loss (x repeat-prev), F1 buttons / main stick, policy vs repeat-prev")
            for group, g in summary[key].items():
                ratio = g["loss"] / g["baseline_repeat_loss"] if g["baseline_repeat_loss"] else float("nan")
                lines.append(
                    f"  {group:24}{g['frames']:>10,}{g['loss']:>9.4f} ({ratio:.3f}x)"
                    f"  {_fmt(g['f1']['buttons'], '.3f')} / {_fmt(g['f1']['main_stick'], '.3f')}"
                    f"  vs {_fmt(g['baseline_repeat_f1']['buttons'], '.3f')} / {_fmt(g['baseline_repeat_f1']['main_stick'], '.3f')}"
                )
    return lines


def filtered_line(counts: dict) -> str | None:
    """What the filters left out, by filter (`filtered_<name>` counts), or
    None when they left nothing out."""
    left_out = {k[len("filtered_") :]: v for k, v in counts.items() if k.startswith("filtered_") and v}
    if not left_out:
        return None
    return "left out by the filters: " + ", ".join(f"{name.replace('_', '-')} {n:,}" for name, n in left_out.items()) + " (games; characters and opponents: players)"


def format_summary(summary: dict) -> str:
    """The policy beside both baselines on the same frames, then the counts."""
    lines = []
    if summary.get("val_loss") is None:
        lines.append("no validation frames (use --val-fraction > 0 with 2+ replays)")
    else:
        how = f" ({summary['evaluation']})" if summary.get("evaluation") else ""
        lines.append(f"frames evaluated: {summary['frames']:,}{how}")
        lines.append(f"{'':14}{'loss (nats)':>12}" + "".join(f"{h:>10}" for h in controller.HEADS))
        rows = [
            ("policy", summary["val_loss"], summary["per_head_accuracy"]),
            ("repeat-prev", summary["baseline_repeat_loss"], summary["baseline_repeat_accuracy"]),
            ("class prior", summary["baseline_prior_loss"], summary["baseline_prior_accuracy"]),
        ]
        for name, loss, acc in rows:
            lines.append(f"{name:14}{_fmt(loss):>12}" + "".join(f"{_fmt(acc[h], '.3f'):>10}" for h in controller.HEADS))
        lines.append("(columns after the loss: accuracy per controller head; buttons = mean over the 8 buttons)")
        best = min(summary["baseline_repeat_loss"], summary["baseline_prior_loss"])
        verdict = "beats" if summary["val_loss"] < best else "does NOT beat"
        lines.append(f"policy {verdict} both baselines ({summary['val_loss']:.4f} vs best baseline {best:.4f})")
        lines.extend(_decision_quality_lines(summary))
        lines.extend(_f1_lines(summary))
    counts = (
        f"replays used {summary.get('replays_used', 0)}, skipped {summary.get('replays_skipped', 0)} "
        f"(unreadable {summary.get('replays_unreadable', 0)}, not 1v1 {summary.get('replays_not_1v1', 0)}); "
        f"CPU players not imitated {summary.get('cpu_players_not_imitated', 0)}; "
        f"trajectories {summary.get('trajectories', 0)}, frames loaded {summary.get('frames_loaded', 0):,}"
    )
    lines.append(counts)
    split = summary.get("split") or {}
    if split.get("split_by") == "player":
        lines.append(
            f"split by player: {split['train_games']} training games ({split['train_players']} named players), "
            f"{split['val_games']} validation games held out with {split['val_players']} named players never trained on"
        )
    left_out = filtered_line(summary)
    if left_out:
        lines.append(left_out)
    if "parameters" in summary:
        extra = f" (backbone {summary['backbone_parameters']:,})" if "backbone_parameters" in summary else ""
        lines.append(f"parameters: {summary['parameters']:,}{extra}")
    if summary.get("train_frames_per_s"):
        segments = (summary.get("config") or {}).get("carried_state")
        unit = "segment rows/s; a frame = one frame of a game" if segments else "windows/s; a frame = one timestep of one window"
        lines.append(
            f"training: {summary['epochs_run']} epochs in {summary['train_seconds']:.0f} s, "
            f"{summary['train_frames_per_s']:,.0f} frames/s ({summary['train_windows_per_s']:,.0f} {unit})"
        )
    if "output" in summary:
        lines.append(f"model: {summary['model_path']}   logs: {summary['logs_path']}   metrics: {summary['output']}/metrics.json")
    return "\n".join(lines)


def format_prepare_summary(summary: dict, replays) -> str:
    """`keras-lstm prepare`'s summary (from `keras_lstm.data.prepared.prepare`)
    of the replay folder `replays`: the dataset, its counts and size; when the
    dataset was already up to date, that, and the files it skipped (when it is
    prepared, each is named as it is read)."""
    from keras_lstm.data.replays import display_name

    lines = []
    if summary["status"] == "up to date":
        lines.append(f"up to date: {display_name(summary['data_path'])} already holds {display_name(replays)} as it is now (nothing to do)")
    examples = ", ".join(f"{k} {v}" for k, v in summary["examples"].items())
    lines.append(
        f"{summary['dataset']} at {display_name(summary['data_path'])}\n"
        f"files {summary['files']}: used {summary['replays_used']}, skipped {summary['replays_skipped']} "
        f"(unreadable {summary['replays_unreadable']}, not 1v1 {summary['replays_not_1v1']}); "
        f"CPU players not imitated {summary['cpu_players_not_imitated']}\n"
        f"trajectories: {examples}; frames {summary['frames_loaded']:,}; {summary['size_bytes'] / 1e6:.1f} MB on disk"
        + (f"; {summary['seconds']:.1f} s" if summary["status"] != "up to date" else "")
    )
    if summary["status"] != "up to date":
        changes = ", ".join(f"{what} {summary['files_' + what]}" for what in ("added", "changed", "removed") if summary.get("files_" + what))
        lines.append(f"{summary['status']}: parsed {summary['files_parsed']} files" + (f" ({changes})" if changes else "")
                     + f" into {summary['parts_built']} new parts {summary['parsed_by']}; {summary['parts']} parts in all")
    left_out = filtered_line(summary)
    if left_out:
        lines.append(left_out)
    if summary["status"] == "up to date":
        lines.extend(f"  skipped {display_name(name)}: {reason}" for name, reason in summary["skipped"])
    return "\n".join(lines)

