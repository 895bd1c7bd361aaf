"""The command line lists every stage and reports project errors on one line, exit status 2."""

import re
import subprocess
import sys

from pipeline.cli import main

STAGES = [
    "ingest",
    "split",
    "preprocess",
    "augment",
    "tune",
    "train",
    "bench",
    "gpu-check",
    "compare",
    "evaluate",
    "report",
    "promote",
    "predict",
    "track",
    "apply-profile",
]


def test_help_lists_every_stage_with_a_description():
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, check=True)
    text = " ".join(out.stdout.split())  # argparse wraps long names onto two lines
    for stage in STAGES:
        assert re.search(rf"\s{stage} [a-z]{{3,}}", text), stage


def test_bad_params_give_one_line_error_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("data:\n  image_size: 100\n")
    assert main(["--params", str(bad), "split", "--ingested", str(tmp_path), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "data.image_size = 100" in err
    assert "Traceback" not in err
