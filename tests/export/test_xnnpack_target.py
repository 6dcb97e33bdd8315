"""export_tflite(target="arm_xnnpack_sparse"): the written file is checked for XNNPACK's
sparse inference conditions (real conversion, LiteRT), refused with nothing left on disk
otherwise, and the report says the speed-up is ARM's; `tf-lottery export --target` too."""

import json

import keras
import numpy as np
import pytest

import tf_lottery as tfl
from tf_lottery.cli import main

from helpers import mobilenet_like

TARGET = "arm_xnnpack_sparse"


def _ticket(zeros=0.75, layers=("pw1", "pw2"), keepdims=True):
    """The tiny MobileNet-like model with exactly ``zeros`` of ``layers``' kernels 0."""
    model = mobilenet_like(keras, keepdims=keepdims)
    rng = np.random.default_rng(0)
    for name in layers:
        kernel = model.get_layer(name).kernel
        values = kernel.numpy().reshape(-1)
        values[rng.permutation(values.size)[:round(zeros * values.size)]] = 0
        kernel.assign(values.reshape(kernel.shape))
    return model


def _export(model, path, **options):
    return tfl.export_tflite(model, path, verbose=False, latency_runs=3, target=TARGET,
                             **options)


def test_a_ticket_meeting_the_conditions_exports_with_the_arm_note(tmp_path):
    report = _export(_ticket(), tmp_path / "arm.tflite")
    assert (tmp_path / "arm.tflite").is_file() and report.target == TARGET
    assert report.encoding == "sparse float32" and report.max_abs_diff < 1e-4
    assert "DENSIFY" in report.kernel_summary  # the 1x1 filters are stored sparse
    assert f"target {TARGET}: XNNPACK's sparse inference runs" in str(report)
    assert "ARM devices only; on x86" in str(report)
    saved = json.loads((tmp_path / "arm.tflite.report.json").read_text())
    assert saved["target"] == TARGET
    assert tfl.ExportReport.from_json(report.to_json()) == report


@pytest.mark.parametrize("ticket, expected", [
    (lambda: _ticket(zeros=0.5), "pw1_1/convolution' stores 50.0% of its weights"),
    (lambda: _ticket(zeros=0.0), "is stored dense; XNNPACK runs it sparse only with at "
                                 "least 2/3 zeros"),
    (lambda: _ticket(keepdims=False), "no MEAN keeping its dimensions"),
    (lambda: _ticket(layers=("stem", "pw1", "pw2")), "the first CONV_2D's filter"),
])
def test_a_file_short_of_the_conditions_is_refused_and_nothing_is_left(tmp_path, ticket,
                                                                       expected):
    with pytest.raises(tfl.ExportError, match="does not meet XNNPACK's sparse inference") \
            as refused:
        _export(ticket(), tmp_path / "arm.tflite")
    assert expected in str(refused.value)
    assert "tfl.xnnpack_sparse_settings" in str(refused.value)
    assert str(refused.value).endswith(f"Nothing was written to {tmp_path / 'arm.tflite'}.")
    assert list(tmp_path.iterdir()) == []


def test_the_target_is_a_sparse_float32_file():
    with pytest.raises(tfl.SettingError, match="sparse float32 file.*leave quantize and sparse"):
        tfl.export_tflite(_ticket(), target=TARGET, sparse=False)
    with pytest.raises(tfl.SettingError, match="target must be one of"):
        tfl.export_tflite(_ticket(), target="arm")


def test_the_cli_target_flag_reaches_the_check(tmp_path, capsys):
    """A real search with the settings (5 rounds at 0.2); round 3 has 48.8% zeros in the
    1x1 convolutions and is refused, the final round (67.2%) is written."""
    model = mobilenet_like(keras)
    schedule = tfl.RewindingSchedule(rounds=5, steps_per_round=2, prune_rate=0.2)
    rng = np.random.default_rng(0)
    data = rng.random((20, 16, 16, 3), np.float32), rng.integers(0, 4, 20)
    tfl.LotteryTicketSearch(model, schedule, tmp_path / "run", controls=(), batch_size=10,
                            eval_every=2, verbose=0, tensorboard=False,
                            **tfl.xnnpack_sparse_settings(model, schedule)).run(data, data, data)
    run = str(tmp_path / "run")
    assert main(["export", run, "--round", "3", "--target", TARGET,
                 "--output", str(tmp_path / "a")]) == 2
    assert "stores 51.2% of its weights" in capsys.readouterr().err
    assert main(["export", run, "--target", TARGET, "--output", str(tmp_path / "b")]) == 0
    assert "ARM devices only" in capsys.readouterr().out
    assert json.loads((tmp_path / "b.report.json").read_text())["target"] == TARGET
    assert main(["export", run, "--format", "saved_model", "--target", TARGET]) == 2
    assert "target applies to TFLite exports only" in capsys.readouterr().err


def test_a_ticket_pruned_with_the_settings_passes_the_check(tmp_path):
    """The two halves fit: IMP with xnnpack_sparse_settings (5 rounds at 0.2: 67.2% zeros
    in the 1x1 convolutions only), then the export's check of the written file."""
    model = mobilenet_like(keras)
    schedule = tfl.RewindingSchedule(rounds=5, steps_per_round=2, prune_rate=0.2)
    pruned = tfl.prune_with_rewinding(model, schedule,
                                      **tfl.xnnpack_sparse_settings(model, schedule))
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 16, 16, 3), np.float32), rng.integers(0, 4, 20)
    pruned.fit(x, y, batch_size=10, epochs=pruned.epochs(2), verbose=0)
    report = _export(pruned, tmp_path / "imp.tflite")
    assert report.target == TARGET
    assert report.layer_sparsity["stem/kernel"] == 0
    assert report.layer_sparsity["pw1/kernel"] == pytest.approx(0.672, abs=0.01)
