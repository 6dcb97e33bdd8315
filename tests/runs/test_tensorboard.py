"""TensorBoard event files, read back with TensorBoard's own reader and its own server."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tf_lottery as tfl
from tf_lottery.runs.tensorboard import jaccard
from tf_lottery.zoo.data import load_dataset
from tf_lottery.zoo.models import lenet_300_100

from helpers import compile_for_classification, small_mlp


def _events(path):
    accumulator = EventAccumulator(str(path), size_guidance={"tensors": 0, "images": 0,
                                                             "histograms": 0})
    accumulator.Reload()
    return accumulator


def _scalars(events, tag):
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    data = load_dataset("mnist", validation_size=200, train_size=600)
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5,
                                     layer_rates={"output": 0.2})
    run_dir = tmp_path_factory.mktemp("tb") / "run"
    result = tfl.LotteryTicketSearch(
        lambda seed: lenet_300_100((28, 28, 1), seed=seed), schedule, run_dir, eval_every=5,
        verbose=0).run(data.train, data.validation, (data.test[0][:200], data.test[1][:200]))
    return run_dir, result


def test_round_level_scalars_equal_the_search_records(searched):
    run_dir, result = searched
    for variant in ("ticket", "random_reinit", "random_pruning"):
        events = _events(run_dir / "logs" / "rounds" / "trial_0" / variant)
        records = {r.round: r for r in result.records if r.variant == variant}
        for name in ("weights_remaining", "test_accuracy", "early_stop_iteration",
                     "final_test_accuracy"):
            logged = _scalars(events, f"imp/{name}")
            assert logged == pytest.approx({k: getattr(r, name) for k, r in records.items()})
        assert sorted(logged) == ([0, 1, 2] if variant == "ticket" else [1, 2])


def test_sparsity_overlap_and_histograms_follow_the_masks(searched):
    run_dir, _ = searched
    events = _events(run_dir / "logs" / "rounds" / "trial_0" / "ticket")
    masks = [tfl.Masks.load(run_dir / "trial_0" / f"round_{r:02d}" / "ticket" / "masks.npz")
             for r in range(3)]
    for path in masks[0]:
        assert _scalars(events, f"sparsity/{path}") == pytest.approx(
            {r: m.sparsity()[path] for r, m in enumerate(masks)})
        assert _scalars(events, f"mask_overlap_previous/{path}") == pytest.approx(
            {r: jaccard(masks[r][path], masks[r - 1][path]) for r in (1, 2)})
        assert _scalars(events, f"mask_overlap_final/{path}") == pytest.approx(
            {r: jaccard(masks[r][path], masks[2][path]) for r in range(3)})
        histograms = events.Tensors(f"surviving_weights/{path}")
        assert [event.step for event in histograms] == [0, 1, 2]
        assert events.SummaryMetadata(f"surviving_weights/{path}").plugin_data.plugin_name \
            == "histograms"  # TensorBoard's Histograms dashboard shows it
        for event in histograms:
            buckets = tf.make_ndarray(event.tensor_proto)  # (left edge, right edge, count)
            assert buckets.shape == (30, 3) and np.all(buckets[:, 0] <= buckets[:, 1])
            assert buckets[:, 2].sum() == masks[event.step][path].sum()
    assert _scalars(events, "sparsity/hidden_1/kernel")[2] == pytest.approx(0.75)


def test_config_hparams_and_both_figures(searched):
    run_dir, _ = searched
    ticket = run_dir / "logs" / "rounds" / "trial_0" / "ticket"
    events = _events(ticket)
    tags = events.Tags()["tensors"]
    assert "config" in tags and "_hparams_/session_start_info" in tags
    config_text = tf.make_ndarray(events.Tensors("config")[0].tensor_proto)
    assert b'"steps_per_round": 10' in config_text.item()
    for tag in ("imp/accuracy_vs_sparsity", "imp/curves"):
        images = events.Tensors(tag)
        assert [e.step for e in images] == [0, 1, 2]
        png = tf.make_ndarray(images[-1].tensor_proto)[2]  # (width, height, encoded image)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_evaluation_is_a_point_of_its_rounds_curve(searched):
    run_dir, result = searched
    curves = tfl.SearchResult.load(run_dir).curves
    for record in result.records:
        run = run_dir / "logs" / f"trial_{record.trial}" / record.variant / \
            f"round_{record.round:02d}"
        events = _events(run)
        stored = curves[(record.trial, record.round, record.variant)]
        assert [p["iteration"] for p in stored] == [5, 10]  # eval_every=5, 10 steps
        for tag, key in (("val/loss", "val_loss"), ("test/accuracy", "test_accuracy"),
                         ("train/loss", "train_loss")):
            assert _scalars(events, tag) == pytest.approx({p["iteration"]: p[key]
                                                           for p in stored})
        early = _scalars(events, "early_stop/val_loss")
        assert early == pytest.approx({record.early_stop_iteration: record.val_loss})
    levels = tfl.SearchResult.load(run_dir).curve_levels()  # the rounds near 100%, 51.3%
    assert levels[0] == 100.0 and levels[1] == pytest.approx(50.1, abs=0.1)


def test_one_call_callback_writes_the_same_round_summaries(mnist_slice, tmp_path):
    (x, y), _ = mnist_slice
    schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.4)
    pruned = compile_for_classification(tfl.prune_with_rewinding(
        small_mlp(seed=21), schedule, checkpoint_dir=tmp_path / "c"))
    pruned.fit(x, y, batch_size=60, epochs=3, verbose=0,
               callbacks=[tfl.TensorBoardRounds(tmp_path / "logs")])
    events = _events(tmp_path / "logs" / "summary")
    assert _scalars(events, "imp/weights_remaining") == pytest.approx(
        {r.round: r.weights_remaining for r in pruned.rounds})
    assert _scalars(events, "imp/loss") == pytest.approx(
        {r.round: r.metrics["loss"] for r in pruned.rounds})
    for path in ("hidden/kernel", "output/kernel"):
        assert _scalars(events, f"sparsity/{path}") == pytest.approx(
            {r.round: r.layer_sparsity[path] for r in pruned.rounds})
    assert sorted(_scalars(events, "mask_overlap_previous/hidden/kernel")) == [1, 2]
    assert np.isclose(_scalars(events, "sparsity/hidden/kernel")[2], 1 - 0.6 ** 2, atol=1e-3)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url, data=None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}
                                     if data else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def test_tensorboard_serves_the_curves_images_and_hparams(searched):
    run_dir, result = searched
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(run_dir / "logs"),
         "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false",
         "--reload_interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline, tags = time.monotonic() + 90, {}
        while "trial_0/ticket/round_02" not in tags:
            assert time.monotonic() < deadline and server.poll() is None, server.stderr.read()
            time.sleep(0.5)
            try:
                tags = json.loads(_get(f"{base}/scalars/tags"))
            except (urllib.error.URLError, ConnectionError):
                continue
        assert {"val/loss", "test/accuracy", "train/loss", "early_stop/val_loss"} <= set(
            tags["trial_0/ticket/round_02"])
        assert "imp/weights_remaining" in tags["rounds/trial_0/ticket"]
        query = urllib.parse.urlencode({"run": "trial_0/random_pruning/round_01",
                                        "tag": "test/accuracy"})
        served = json.loads(_get(f"{base}/scalars/scalars?{query}"))  # [wall time, step, value]
        curve = tfl.SearchResult.load(run_dir).curves[(0, 1, "random_pruning")]
        assert [(step, pytest.approx(value)) for _, step, value in served] == \
            [(p["iteration"], p["test_accuracy"]) for p in curve]
        query = urllib.parse.urlencode({"run": "rounds/trial_0/ticket", "tag": "imp/curves"})
        images = json.loads(_get(f"{base}/images/images?{query}"))
        assert [image["step"] for image in images] == [0, 1, 2]
        png = _get(f"{base}/images/individualImage?{images[-1]['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        experiment = json.loads(_get(f"{base}/hparams/experiment",
                                     json.dumps({"experimentName": ""}).encode()))
        names = {info["name"] for info in experiment["hparamInfos"]}
        assert {"prune_rate", "steps_per_round", "variant", "trial"} <= names
    finally:
        server.terminate()
        server.wait(timeout=30)
