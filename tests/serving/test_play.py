"""The play loop: libmelee game states give the training features, and a
policy plays a real replay frame by frame."""

from __future__ import annotations

import melee
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import GAMES
from keras_lstm.data import controller, features
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME, read_game
from keras_lstm.model.heads import MAX_KEEP_BIAS
from keras_lstm.serving import export, melee_state, play
from test_export import make_run

REPLAY = GAMES / "py-slippi_v3.14.0.slp"  # Slippi 3.14, Falco v Sheik on Dream Land, two humans
N = 1500
STATE_AGE = [i for i, (name, _) in enumerate(features.PLAYER_FIELDS) if name == "state_age"]
STATE_AGE += [i + len(features.PLAYER_FIELDS) for i in STATE_AGE]


def libmelee_rows(replay, port, delay, n=N):
    console = melee.Console(is_dolphin=False, path=str(replay))
    console.connect()
    featurizer = melee_state.FrameFeaturizer(port, delay)
    rows = []
    while len(rows) < n:
        gamestate = console.step()
        if gamestate is None:
            break
        if gamestate.frame >= FIRST_PLAYABLE_FRAME:
            rows.append(featurizer.row(gamestate))
    numeric = np.concatenate([r[0] for r in rows])
    categorical = np.concatenate([r[1] for r in rows])
    targets = {h: np.concatenate([r[2][h] for r in rows]) for h in controller.HEADS}
    return numeric, categorical, targets


@pytest.mark.parametrize("player, delay", [(0, 0), (1, 0), (0, 2)])
def test_libmelee_features_match_peppi_features(player, delay):
    trajectory = features.game_to_trajectories(read_game(REPLAY), REPLAY)[0][player]
    expected = features.align(trajectory, delay)
    numeric, categorical, targets = libmelee_rows(REPLAY, trajectory.port + 1, delay)
    # Row i of libmelee is frame i's inputs for predicting frame i + 1; align's
    # rows start at 1 + delay, and its row j predicts frame j + 1 + delay.
    got_numeric, got_categorical = numeric[delay : delay + N - 10], categorical[delay : delay + N - 10]
    want_numeric, want_categorical = expected.numeric[: N - 10], expected.categorical[: N - 10]
    np.testing.assert_array_equal(got_categorical, want_categorical)
    # libmelee truncates the action's frame count to a whole frame, as the features do (features.WHOLE_FIELDS)
    np.testing.assert_allclose(got_numeric, want_numeric, atol=1e-6)
    assert len(np.unique(want_numeric[:, STATE_AGE])) > 10  # the column varies: the check means something
    for head in controller.HEADS:  # the pad at t is the target at t
        np.testing.assert_array_equal(targets[head][: N - 10], trajectory.targets[head][: N - 10], err_msg=head)
    assert targets["main_x"].std() > 0 and np.abs(numeric[:, 0]).max() > 0  # real play, not zeros


def test_featurizer_rejects_bad_ports():
    with pytest.raises(ValueError, match="port must be"):
        melee_state.FrameFeaturizer(5)
    console = melee.Console(is_dolphin=False, path=str(REPLAY))
    console.connect()
    gamestate = console.step()
    with pytest.raises(ValueError, match="no player on port 3"):
        melee_state.FrameFeaturizer(3).row(gamestate)


def test_play_replay_reports_latency_and_match(tmp_path):
    policy = make_run(tmp_path / "run")
    agent = play.load_agent(tmp_path / "run")
    frames = []
    report = play.play_replay(agent, REPLAY, port=1, max_frames=300, on_frame=lambda f, pad, ms: frames.append(f))
    assert report.frames == 300 and report.scored_frames == 299
    assert frames[0] == FIRST_PLAYABLE_FRAME and frames == list(range(frames[0], frames[0] + 300))
    assert 0 <= report.latency_median_ms <= report.latency_p99_ms <= report.latency_worst_ms
    assert set(report.match) == set(report.repeat_previous_match)
    assert all(0.0 <= v <= 1.0 for v in report.match.values())
    # Inputs persist across frames: the repeat-previous baseline is right most of the time.
    assert report.repeat_previous_match["main_x"] > 0.8
    text = play.format_report(report)
    assert "frames over" in text or "over the" in text
    assert "repeat-previous" in text


def test_saved_model_agent_plays_like_the_run(tmp_path):
    make_run(tmp_path / "run")
    saved = export.export_run(tmp_path / "run", base_dir=tmp_path / "sm", name="bot")
    pads = {}
    for name, model in (("run", tmp_path / "run"), ("saved", tmp_path / "sm" / "bot")):  # name folder: highest version
        agent = play.load_agent(model)
        pads[name] = []
        play.play_replay(agent, REPLAY, port=2, max_frames=60, on_frame=lambda f, pad, ms: pads[name].append(pad))
    assert isinstance(play.load_agent(saved), play.SavedModelAgent)
    for run_pad, saved_pad in zip(pads["run"], pads["saved"]):
        for key in ("buttons_prob", "main_x_prob", "shoulder_prob", "main_y", "buttons"):
            np.testing.assert_allclose(np.asarray(saved_pad[key]).reshape(-1), np.asarray(run_pad[key]).reshape(-1), atol=1e-5)
    # Sampling: the SavedModel returns probabilities, the run logits; with one
    # seed both draw the same pads (and loading the SavedModel draws nothing).
    for name, model in (("run", tmp_path / "run"), ("saved", saved)):
        agent = play.load_agent(model, play.make_sampler(True, temperature=1.5, seed=11))
        pads[name] = []
        report = play.play_replay(agent, REPLAY, port=2, max_frames=60, on_frame=lambda f, pad, ms: pads[name].append(pad))
        assert report.decoding == {"mode": "sample", "temperature": 1.5, "seed": 11}
    for run_pad, saved_pad in zip(pads["run"], pads["saved"]):
        for head in controller.HEADS:
            np.testing.assert_array_equal(np.asarray(saved_pad[head]).reshape(-1), np.asarray(run_pad[head]).reshape(-1), err_msg=head)


def test_cli_play(tmp_path):
    from keras_lstm.cli.main import app

    make_run(tmp_path / "run")
    runner = CliRunner()
    ok = runner.invoke(app, ["play", "--model", str(tmp_path / "run"), "--replay", str(REPLAY), "--port", "1", "--max-frames", "120", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"frames": 120' in ok.output and '"latency_p99_ms"' in ok.output
    bad = [
        (["--port", "5", "--replay", str(REPLAY)], "--port must be"),
        (["--port", "3", "--replay", str(REPLAY)], "no player on port 3"),
        (["--port", "1", "--replay", str(tmp_path / "missing.slp")], "no such replay"),
        (["--port", "1", "--replay", str(tmp_path)], f"{tmp_path}: is a folder, not a replay file (expected one .slp file)"),
        (["--port", "1", "--replay", str(GAMES / "slippi-js_doubles.slp")],
         f"{GAMES / 'slippi-js_doubles.slp'}: not a 1v1 game (4 players on ports [1, 2, 3, 4])"),
        (["--port", "1", "--replay", str(GAMES / "peppi_v0.1.slp")], f"{GAMES / 'peppi_v0.1.slp'}: libmelee cannot read it"),
        (["--port", "1"], "exactly one of"),
    ]
    for args, message in bad:
        result = runner.invoke(app, ["play", "--model", str(tmp_path / "run"), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_press_maps_the_decoded_controller_to_libmelee():
    class FakeController:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            return lambda *args: self.calls.append((name, *args))

    pad = {"buttons": np.array([[1, 0, 0, 0, 0, 0, 0, 1]], np.float32), "main_x": np.array([1.0]), "main_y": np.array([-1.0]),
           "c_x": np.array([0.0]), "c_y": np.array([0.25]), "shoulder": np.array([0.5])}
    fake = FakeController()
    play.press(fake, pad)
    B = melee.enums.Button
    assert ("press_button", B.BUTTON_A) in fake.calls and ("press_button", B.BUTTON_D_UP) in fake.calls
    assert ("release_button", B.BUTTON_B) in fake.calls
    assert ("tilt_analog", B.BUTTON_MAIN, 1.0, 0.0) in fake.calls  # libmelee sticks run 0..1
    assert ("tilt_analog", B.BUTTON_C, 0.5, 0.625) in fake.calls
    assert ("press_shoulder", B.BUTTON_L, 0.5) in fake.calls


def test_cli_play_dolphin_needs_an_iso(tmp_path):
    from keras_lstm.cli.main import app

    make_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["play", "--model", str(tmp_path / "run"), "--port", "1", "--dolphin", str(tmp_path)])
    assert result.exit_code == 2 and "--iso" in result.output


def test_play_reports_change_frames(tmp_path):
    """Frames where the human's input changed: counted from the human's pads,
    scored with the policy's action made the frame before; repeating scores 0."""
    from keras_lstm.evaluation.change_frames import change_frame_accuracy

    make_run(tmp_path / "run")
    pads = []
    report = play.play_replay(play.load_agent(tmp_path / "run"), REPLAY, port=1, max_frames=300,
                              on_frame=lambda f, pad, ms: pads.append(pad))
    assert report.decoding == {"mode": "argmax"}
    _, _, human = libmelee_rows(REPLAY, 1, 0, n=300)
    predicted = {"buttons": np.concatenate([p["buttons"] for p in pads[:-1]])}
    for head in controller.STICK_HEADS:
        predicted[head] = controller.stick_to_class(np.concatenate([p[head] for p in pads[:-1]]))
    predicted["shoulder"] = controller.shoulder_to_class(np.concatenate([p["shoulder"] for p in pads[:-1]]))
    want = change_frame_accuracy(predicted, {h: v[1:] for h, v in human.items()}, {h: v[:-1] for h, v in human.items()})
    assert report.change_frames == want.counts() and report.change_frames["main_x"] > 0
    assert report.change_frame_match == want.rates()
    assert report.change_frame_match_per_button == want.button_rates()
    assert report.policy_changes == want.predicted_counts() and report.policy_change_precision == want.precisions()
    assert all(report.repeat_previous_change_frame_match[h] == (0.0 if n else None) for h, n in report.change_frames.items())
    text = play.format_report(report)
    assert "on change frames" in text and "argmax" in text and "policy's changes" in text
    assert "match with human  policy   repeat-previous baseline" in text  # the lines before stay as they were


def test_play_samples_reproducibly(tmp_path):
    make_run(tmp_path / "run")
    runs = []
    for seed in (3, 3, 4):
        pads = []
        agent = play.load_agent(tmp_path / "run", play.make_sampler(True, 1.0, seed))
        report = play.play_replay(agent, REPLAY, port=1, max_frames=120, on_frame=lambda f, pad, ms: pads.append(pad))
        runs.append(pads)
    assert report.decoding == {"mode": "sample", "temperature": 1.0, "seed": 4}
    assert "sampled from the predicted distributions (temperature 1, seed 4)" in play.format_report(report)
    same = [all(np.array_equal(a[h], b[h]) for h in controller.HEADS) for a, b in zip(runs[0], runs[1])]
    other = [all(np.array_equal(a[h], b[h]) for h in controller.HEADS) for a, b in zip(runs[0], runs[2])]
    assert all(same) and not all(other)
    # the untrained policy is unsure: sampling moves the sticks where argmax would not
    assert len({float(p["main_x"][0]) for p in runs[0]}) > 3


def test_cli_play_sampling_options(tmp_path):
    from keras_lstm.cli.main import app

    make_run(tmp_path / "run")
    runner = CliRunner()
    base = ["play", "--model", str(tmp_path / "run"), "--replay", str(REPLAY), "--port", "1"]
    ok = runner.invoke(app, [*base, "--max-frames", "60", "--sample", "--temperature", "0.5", "--seed", "2", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"mode": "sample"' in ok.output and '"change_frame_match"' in ok.output
    bad = [
        (["--sample", "--temperature", "0"], "error: --temperature must be > 0, got 0.0"),
        (["--sample", "--temperature", "-1"], "error: --temperature must be > 0, got -1.0"),
        (["--temperature", "0.5"], "error: --temperature and --seed apply to sampled actions: add --sample"),
        (["--seed", "1"], "error: --temperature and --seed apply to sampled actions: add --sample"),
        (["--sample", "--seed", "-1"], "error: --seed must be between 0 and 4294967295, got -1"),  # was numpy's words, no option
        (["--sample", "--temperature", "1e-300"], "error: --temperature must be between 1.18e-38 and 3.4e+38 (float32), got 1e-300"),
        (["--opponent-port", "7"], "error: --opponent-port must be 1, 2, 3 or 4, got 7"),
    ]
    for args, message in bad:
        result = runner.invoke(app, [*base, *args])
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith(message), (args, result.output)


def test_a_large_keep_bias_plays_as_repeating_and_exports_the_same(tmp_path):
    """A keep bias far beyond the logits makes the policy press what the human
    pressed the frame before, so it matches the human exactly as often as
    repeating does; exported with the bias, the SavedModel presses the same."""
    from keras_lstm.cli.main import app

    make_run(tmp_path / "run")
    saved = export.export_run(tmp_path / "run", base_dir=tmp_path / "sm", name="bot", keep_bias=50.0)
    assert export.read_metadata(saved)["keep_bias"] == 50.0
    pads = {}
    for name, agent in (("run", play.load_agent(tmp_path / "run", keep_bias=50.0)), ("saved", play.load_agent(saved))):
        pads[name] = []
        report = play.play_replay(agent, REPLAY, port=1, max_frames=200, on_frame=lambda f, pad, ms: pads[name].append(pad))
        assert report.decoding == {"mode": "argmax", "keep_bias": 50.0}
        assert report.match == report.repeat_previous_match, name
        assert report.policy_changes == {h: 0 for h in report.policy_changes}
    assert "keep bias 50 nats toward the previous input" in play.format_report(report)
    for run_pad, saved_pad in zip(pads["run"], pads["saved"]):
        for head in controller.HEADS:
            np.testing.assert_array_equal(np.asarray(saved_pad[head]).reshape(-1), np.asarray(run_pad[head]).reshape(-1), err_msg=head)
    # the largest bias taken keeps the weights finite: the policy never changes its input (1e39 was inf in them)
    top = play.load_agent(tmp_path / "run", keep_bias=MAX_KEEP_BIAS)
    report = play.play_replay(top, REPLAY, port=1, max_frames=100)
    assert report.match == report.repeat_previous_match and report.policy_changes == {h: 0 for h in report.policy_changes}
    # without the bias the untrained policy changes its input
    plain = play.play_replay(play.load_agent(tmp_path / "run"), REPLAY, port=1, max_frames=200)
    assert plain.match != plain.repeat_previous_match
    runner = CliRunner()
    base = ["play", "--replay", str(REPLAY), "--port", "1"]
    for model, args, message in [
        (tmp_path / "run", ["--keep-bias", "-1"], "error: --keep-bias must be a finite number >= 0 and at most 1000 (nats), got -1.0"),
        # 1e39 is finite in float64 but inf in float32 weights: the policy changed on 49 of 50 frames
        (tmp_path / "run", ["--keep-bias", "1e39"], "error: --keep-bias must be a finite number >= 0 and at most 1000 (nats), got 1e+39"),
        (saved, ["--keep-bias", "1"], f"error: {saved}: a SavedModel keeps the keep bias it was exported with"),
    ]:
        result = runner.invoke(app, [*base, "--model", str(model), *args])
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith(message), (args, result.output)
