"""The tf-lottery command end to end, and the config errors it reports."""

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tf_lottery.cli import TF_LOG_LINE
from tf_lottery.cli.commands import main
from tf_lottery.cli.config import ConfigError, RunConfig
from tf_lottery.foundations.errors import UserCodeError

TINY = """\
run_dir: {run_dir}
model: lenet_300_100
dataset: mnist
validation_size: 100
train_size: 300
test_size: 100
rounds: 1
steps_per_round: 5
prune_rate: 0.5
layer_rates: {{output: 0.25}}
controls: [random_pruning]
eval_every: 5
verbose: 2
jit_compile: false   # XLA has tests of its own; here it would only cost compile time
"""


def _tiny(tmp_path, **extra):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(run_dir=tmp_path / "run") +
                    "".join(f"{k}: {v}\n" for k, v in extra.items()))
    return path


def test_run_and_report_end_to_end_through_the_console_script(tmp_path):
    script = Path(sys.executable).parent / "tf-lottery"
    assert script.is_file(), "pip install -e . installs the tf-lottery console script"
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([str(script), "run", str(_tiny(tmp_path)), "seed=4"],
                          capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr
    assert not [line for line in done.stderr.splitlines() if TF_LOG_LINE.match(line)]
    assert "trial 1/1, round 1/1: 50.09% of weights" in done.stdout  # (117600+15000+750)/266200
    assert "random_pruning" in done.stdout
    for name in ("results.csv", "results.json", "plot.png", "config.json", "model.json"):
        assert (tmp_path / "run" / name).is_file()
    assert '"seed": 4' in (tmp_path / "run" / "config.json").read_text()
    (tmp_path / "run" / "plot.png").unlink()
    report = subprocess.run([str(script), "report", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert report.stdout.splitlines()[0].split()[:3] == ["round", "variant", "weights"]
    assert len(report.stdout.splitlines()) == 1 + 3 + 1  # header, 3 records, paths
    assert (tmp_path / "run" / "plot.png").stat().st_size > 10_000
    exported = subprocess.run([str(script), "export", str(tmp_path / "run"), "--round", "1",
                               "--output", str(tmp_path / "ticket.tflite")],
                              capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr
    assert "exporting trial 0, round 1" in exported.stdout
    assert (tmp_path / "ticket.tflite").stat().st_size > 0
    report = json.loads((tmp_path / "ticket.tflite.report.json").read_text())
    assert report["samples"] == 100 and report["exported_accuracy"] is not None  # test split
    again = subprocess.run([str(script), "export", str(tmp_path / "run"), "--round", "2"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "round 2 is not completed" in again.stderr


def test_unknown_keys_are_named_with_the_nearest_one(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown config key 'prune_rat'.*'prune_rate'"):
        RunConfig.load(_tiny(tmp_path, prune_rat=0.3))
    with pytest.raises(ConfigError, match="unknown config key 'round'.*'rounds'"):
        RunConfig.load(_tiny(tmp_path), ["round=3"])
    assert main(["run", str(_tiny(tmp_path)), "stepsperround=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'stepsperround'" in err and "'steps_per_round'" in err
    assert not (tmp_path / "run").exists()


def test_overrides_are_parsed_as_yaml(tmp_path):
    config = RunConfig.load(_tiny(tmp_path), ["rounds=4", "layer_rates={output: 0.1}",
                                              "rewind_to=null", "controls=[]"])
    assert config.schedule.rounds == 4 and config.schedule.layer_rates == {"output": 0.1}
    assert config.settings.rewind_to is None and config.options.controls == ()
    with pytest.raises(ConfigError, match="not of the form key=value"):
        RunConfig.load(_tiny(tmp_path), ["rounds"])


def test_missing_data_files_say_where_they_were_looked_for(tmp_path, capsys):
    config = _tiny(tmp_path, data_dir=tmp_path / "nowhere")
    text = config.read_text().replace("dataset: mnist", "dataset: fashion_mnist")
    config.write_text(text)
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nowhere' / 'train-images-idx3-ubyte.gz'} does not exist" in err


@pytest.mark.parametrize("text, message", [
    ("rounds: 3\n", "has no run_dir"),
    ("run_dir: r\n  bad: [\n", "is not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_malformed_configs(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        RunConfig.load(path)


def test_report_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a tf_lottery run directory" in capsys.readouterr().err


def _tiny_console(tmp_path, name):
    return [str(Path(sys.executable).parent / "tf-lottery"), "run", str(_tiny(tmp_path)),
            f"run_dir={tmp_path / name}", "verbose=1"]


def test_progress_is_plain_lines_in_a_file_and_bars_in_a_terminal(tmp_path):
    piped = subprocess.run(_tiny_console(tmp_path, "piped"), capture_output=True, text=True,
                           timeout=300)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert "\r" not in piped.stdout and not any(line.startswith("Epoch") for line in lines)
    trainings = [line for line in lines if " it 5/5 val_loss " in line]
    assert len(trainings) == 3  # round 0's ticket, round 1's ticket and control
    assert trainings[1].startswith("trial 1/1 round 1/1 ticket") and "left" in trainings[1]
    assert any(line.startswith("trial 1/1, round 1/1: 50.09% of weights") for line in lines)

    import pty
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the same run with a terminal as its output
        os.execv(_tiny_console(tmp_path, "terminal")[0], _tiny_console(tmp_path, "terminal"))
    shown = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, shown[-2000:]
    text = shown.decode(errors="replace")
    assert re.search(r"\rtrial 1/1 round 1/1 random_pruning +50\.1% \|#{10}\| it +5/5 "
                     r"val_loss [0-9.]+ \(best [0-9.]+ @ 5\) \| \S+ left", text)  # a bar


@pytest.mark.parametrize("keras_version", [2, 3])
def test_an_optimizer_mapping_in_yaml_keeps_its_options(tmp_path, keras_version):
    """EMA, weight decay and clipping from YAML, as the Python API takes them (tf_keras read
    a mapping as its legacy optimizer, which has none of them)."""
    config = _tiny(tmp_path, keras=keras_version, verbose=0, controls="[]",
                   optimizer="{class_name: adam, config: {use_ema: true, clipnorm: 1.0, "
                             "weight_decay: 0.01}}")
    assert main(["run", str(config)]) == 0
    optimizer = json.loads((tmp_path / "run" / "config.json").read_text())["optimizer"]
    assert optimizer["class_name"] == "Adam"
    assert {key: optimizer["config"][key] for key in ("use_ema", "clipnorm", "weight_decay")} \
        == {"use_ema": True, "clipnorm": 1.0, "weight_decay": 0.01}


OWN_CODE = '''
import numpy as np

GIVEN = []


def load(seed, train_size=90, validation_size=30, test_size=None):
    GIVEN.append(dict(seed=seed, train_size=train_size, validation_size=validation_size,
                      test_size=test_size))
    x = np.random.default_rng(seed).random((200, 6), dtype=np.float32)
    y = x[:, :3].argmax(axis=1)
    test = 200 - 120 if test_size is None else test_size
    return (x[:train_size], y[:train_size]), (x[90:90 + validation_size],
                                              y[90:90 + validation_size]), (x[-test:], y[-test:])


def load_anything(**given):
    splits = load(given.get("seed", 0))
    GIVEN.append(given)
    return splits


def missing_file(seed):
    return read_digits("digits.npz")


def read_digits(path):
    return np.load(path)


def build(seed):
    return make_layers(seed)


def make_layers(seed):
    raise ValueError(f"no architecture for seed {seed}")
'''


@pytest.fixture
def own_code(tmp_path):
    """A module of the user's beside a config: (the config's path, the module once run)."""
    (tmp_path / "own_code.py").write_text(OWN_CODE)
    config = tmp_path / "own.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\nrounds: 1\nsteps_per_round: 4\n"
                      "eval_every: 2\nbatch_size: 30\nverbose: 0\ncontrols: []\n")
    yield config, lambda: sys.modules["own_code"]
    sys.modules.pop("own_code", None)


def test_a_dataset_function_keeps_its_own_defaults_and_gets_the_runs_seed(own_code):
    config, module = own_code
    splits = RunConfig.load(config, ["dataset=own_code:load", "seed=7"]).data()
    assert module().GIVEN == [dict(seed=7, train_size=90, validation_size=30, test_size=None)]
    assert [len(part[0]) for part in (splits.train, splits.validation, splits.test)] == \
        [90, 30, 80]
    RunConfig.load(config, ["dataset=own_code:load", "test_size=20"]).data()
    assert module().GIVEN[-1] == dict(seed=0, train_size=90, validation_size=30, test_size=20)
    RunConfig.load(config, ["dataset=own_code:load_anything", "train_size=60"]).data()
    assert module().GIVEN[-1] == dict(seed=0, train_size=60)  # only what the config sets


def test_an_error_in_your_own_function_is_reported_as_yours(own_code, capsys):
    config, _ = own_code
    assert main(["run", str(config), "dataset=own_code:missing_file"]) == 2
    err = capsys.readouterr().err
    first, header, *traceback = err.splitlines()
    assert first.startswith(
        "tf-lottery run: error: your dataset function 'own_code:missing_file' raised "
        "FileNotFoundError: [Errno 2] No such file or directory: 'digits.npz'. The error is "
        "in your code, not tf_lottery's")
    assert "operating system" not in err and "Committed rounds" not in err
    assert header == "Traceback of your code (most recent call last):"
    assert _functions(traceback) == ["missing_file", "read_digits"]  # not numpy's own
    assert 'return read_digits("digits.npz")' in err and "return np.load(path)" in err
    assert main(["run", str(config), "dataset=own_code:load", "model=own_code:build",
                 "seed=3"]) == 2
    first, header, *traceback = capsys.readouterr().err.splitlines()
    assert first.startswith("tf-lottery run: error: your model function 'own_code:build' "
                            "raised ValueError: no architecture for seed 3. The error is in "
                            "your code")
    assert _functions(traceback) == ["build", "make_layers"]
    assert not (config.parent / "run").exists()


def _functions(traceback) -> list:
    """The functions of a printed traceback's frames, outermost first."""
    return [line.rsplit(", in ", 1)[1] for line in traceback if line.startswith("  File ")]


def test_a_user_code_error_keeps_its_traceback_across_processes(own_code):
    """A Ray worker's error comes back pickled: the user's frames come with it."""
    config, _ = own_code
    with pytest.raises(UserCodeError) as raised:
        RunConfig.load(config, ["dataset=own_code:missing_file"]).data()
    again = pickle.loads(pickle.dumps(raised.value))
    assert str(again) == str(raised.value) and "read_digits" in again.frames


def _tf_log(command, **env) -> list:
    """TensorFlow's C++ log lines among the output of the tf-lottery ``command`` run in a
    process of its own (``env`` added to the environment, without TF_CPP_MIN_LOG_LEVEL)."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([str(Path(sys.executable).parent / "tf-lottery"), *command],
                          capture_output=True, text=True, timeout=300,
                          env={**environment, **env})
    return [line for line in (done.stdout + done.stderr).splitlines()
            if TF_LOG_LINE.match(line)]


def test_tensorflow_start_up_log_is_quiet_unless_asked_for(tmp_path):
    report = ["report", str(tmp_path)]  # imports TensorFlow, then refuses: no run there
    loud = _tf_log(["--verbose", *report])
    assert any("oneDNN custom operations" in line for line in loud)
    assert _tf_log(report) == []
    assert _tf_log(report, TF_CPP_MIN_LOG_LEVEL="0")  # the user's own setting is kept


# tf_lottery's public names before they loaded on first use
PUBLIC = ["ChannelGroup", "ConfigError", "DamagedFileError", "DataError", "DivergedError",
          "ExportError", "ExportReport", "ImpSettings", "InstabilityResult", "LotteryModel",
          "LotteryTicketSearch", "Masks", "RewindCheckpointError", "RewindPoint",
          "RewindingSchedule", "RoundCallback", "RoundRecord", "RoundSummary",
          "RunDirectoryError", "SearchResult", "SettingError", "TensorBoardRounds",
           "TfLotteryError", "cost_estimate", "custom_object_scope", "export_model",
           "export_saved_model", "export_tflite", "instability", "load_model",
           "prune_with_rewinding", "shrink", "shrink_summary", "strip_pruning",
           "xnnpack_sparse_settings"]  # tf_lottery's public names before they loaded on first use


def test_the_public_names_load_on_first_use():
    """``import tf_lottery`` imports no TensorFlow (so the command can quiet it first), and
    every public name is there, as an attribute and to ``from tf_lottery import``."""
    code = f"""
import sys
import tf_lottery as tfl
assert "tensorflow" not in sys.modules
assert tfl.__all__ == {PUBLIC!r}, tfl.__all__
from tf_lottery import *
from tf_lottery import RoundRecord, export_tflite
from tf_lottery.runs.results import RoundRecord as defined
assert RoundRecord is defined and export_tflite is tfl.export_tflite
for name in tfl.__all__:
    assert getattr(tfl, name) is globals()[name], name
    assert name in dir(tfl)
try:
    tfl.Mask
except AttributeError as error:
    assert "no attribute 'Mask'" in str(error)
else:
    raise AssertionError("tfl.Mask exists")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr[-3000:]


def test_estimate_prints_the_multiply_adds_of_the_configs_model(tmp_path, capsys):
    assert main(["estimate", str(_tiny(tmp_path)), "--sparsities", "0.9,0.95"]) == 0
    out = capsys.readouterr().out
    assert "Multiply-adds per image of" in out and "on this machine (x86" in out
    assert "235,200" in out and "266,200" in out  # lenet_300_100: 784x300 of 784x300x100x10
    assert "1x4 at 90/95%" in out and "even/faster" in out
    assert main(["estimate", str(_tiny(tmp_path)), "--sparsities", "0.9,1.2"]) == 2
    assert "sparsities must be fractions" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_channel_ticket_from_the_cli_exports_shrunk_and_timed_against_the_dense(tmp_path,
                                                                                  capsys):
    """tf_keras's engine (TF-MOT wrappers masking biases too), refill, the random-pruning
    control in whole channels, then `export --shrink`: a smaller file, run in LiteRT."""
    import numpy as np

    config = _tiny(tmp_path, keras=2, granularity="channel", refill="true")
    config.write_text(config.read_text().replace("lenet_300_100", "mnist_convnet")
                      .replace("layer_rates: {output: 0.25}\n", ""))
    assert main(["run", str(config)]) == 0
    run = tmp_path / "run" / "trial_0" / "round_01"
    for variant in ("ticket", "random_pruning"):
        with np.load(run / variant / "masks.npz") as masks:
            assert sorted(masks.files) == ["conv_1/bias", "conv_1/kernel", "conv_2/bias",
                                           "conv_2/kernel"]
            kernel = masks["conv_2/kernel"].reshape(-1, 64)
            assert np.array_equal(kernel.all(axis=0), kernel.any(axis=0)), variant
            assert kernel.any(axis=0).sum() == 32 and masks["conv_2/bias"].sum() == 32
    capsys.readouterr()
    output = tmp_path / "small.tflite"
    assert main(["export", str(tmp_path / "run"), "--shrink", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "shrunk to conv_1 32 -> 16, conv_2 64 -> 32 channels" in printed
    report = json.loads(output.with_name("small.tflite.report.json").read_text())
    assert report["agreement"] == 1.0 and report["max_abs_diff"] < 1e-4
    assert report["size_bytes"] < report["dense_size_bytes"] / 2  # the full-size network's
    assert {lat["threads"] for lat in report["latencies"]} == {1, os.cpu_count()}
    assert "of 'mnist_convnet'" in printed
