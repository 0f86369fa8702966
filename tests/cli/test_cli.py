import json
import subprocess
import sys

import pytest

from elman.cli import main


@pytest.mark.slow
def test_demo_json_reports_the_sawtooth(capsys, tmp_path):
    assert main(["demo", "--experiment", "xor", "--quick", "--json", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)["experiments"]["xor"]
    assert result["passed"] is True
    assert len(result["numbers"]["error_by_cycle"]) == 12
    assert (tmp_path / "report.md").exists()


def test_unknown_command_is_a_usage_error_not_a_traceback():
    run = subprocess.run([sys.executable, "-m", "elman", "fly"], capture_output=True, text=True)
    assert run.returncode == 2
    assert "invalid choice: 'fly'" in run.stderr
    assert "Traceback" not in run.stderr


def test_info_json_says_what_the_layer_runs_on(capsys):
    from elman.layer import fused

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    loops = fused.compiled_loops
    assert info["panel_kernels"] == (loops is not None and loops.has_panels())
    assert info["compiled_loops"] == (None if loops is None else loops.__file__)


def test_version_flag():
    run = subprocess.run([sys.executable, "-m", "elman", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("elman ")


def test_operating_system_errors_read_as_path_and_reason():
    from elman.cli import _describe

    denied = PermissionError(13, "Permission denied", "/srv/runs/model.safetensors")
    assert _describe(denied) == "/srv/runs/model.safetensors: Permission denied"
    moved = OSError(18, "Invalid cross-device link", "/tmp/a", None, "/mnt/b")  # (errno, reason, path, winerror, path2)
    assert _describe(moved) == "/tmp/a -> /mnt/b: Invalid cross-device link"
    assert _describe(ValueError("top_k must be positive")) == "top_k must be positive"


def test_only_refusals_of_the_input_are_one_line_errors(monkeypatch, capsys, tmp_path):
    """A UsageError is printed in one line with exit status 2; any other exception is a bug and keeps its
    traceback (it propagates out of main)."""
    from elman.errors import UsageError
    from elman.experiments import report

    def refuse(*args, **kwargs):
        raise UsageError("no such experiment, choose xor")

    monkeypatch.setattr(report, "run_experiments", refuse)
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "elman demo: error: no such experiment, choose xor"

    def bug(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(report, "run_experiments", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["demo", "--out", str(tmp_path)])


def test_train_help_gives_every_settings_default_as_the_configs_hold_it(capsys):
    """Each setting's default lives in its config dataclass (or a language model's PRESETS); --help is made
    from them, so it says each one, for each task."""
    from dataclasses import fields

    from elman.cli import TASK_CONFIGS
    from elman.training.language import PRESETS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    blocks, text = {}, capsys.readouterr().out
    for line in text[text.index("\noptions:"):].splitlines():
        if line.startswith("  -"):  # an option's first line; argparse wraps the rest of its help below it
            flag = line.split()[0].rstrip(",")
            blocks[flag] = ""
        if blocks:
            blocks[flag] += " " + " ".join(line.split())
    flags = {}
    for task, configs in TASK_CONFIGS.items():
        for config in configs:
            for f in fields(config):
                if "help" not in f.metadata:
                    continue
                flag = ("--no-" if f.default is True else "--") + f.name.replace("_", "-")
                flags[flag] = blocks[flag]
                values = [v for p in PRESETS.values() for k, v in p.items() if k == f.name] if task == "lm" else []
                for value in values or ([] if f.default is True else [f.default]):
                    shown = ",".join(map(str, value)) if isinstance(value, tuple) else \
                        "none" if value is None and not values else str(value)
                    assert shown in flags[flag], (task, f.name, shown, flags[flag])
    assert "(default: classify 40, lm 100)" in flags["--epochs"]
    assert "0.8 on lines" in flags["--weight-decay"] and "(default: 64)" in flags["--batch-size"]
