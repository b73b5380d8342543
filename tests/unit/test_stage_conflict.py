"""A stage output that holds another config's run is refused before any work starts."""

from __future__ import annotations

import json

import pytest

from selfalign.config import BacktranslateConfig, ConfigError
from selfalign.runtime.stage import MANIFEST_NAME, StageConflict, check_resumable, fingerprint


def _manifest(output, key, status="running"):
    output.mkdir(parents=True, exist_ok=True)
    (output / MANIFEST_NAME).write_text(
        json.dumps({"stage": "backtranslate", "status": status, "fingerprint": key})
    )


def test_same_config_resumes_other_config_is_refused(tmp_path):
    out = tmp_path / "bt"
    config = BacktranslateConfig(input="x.jsonl", output=str(out))
    assert check_resumable(str(out), config, overwrite=False) is None  # nothing there yet
    _manifest(out, fingerprint(config, ("output", "ray_address", "profile", "ray_config")))
    assert check_resumable(str(out), config, overwrite=False)["status"] == "running"
    # Paths and where it runs do not matter; what it computes does.
    moved = config.model_copy(update={"output": str(tmp_path / "elsewhere"), "profile": "gpu"})
    assert check_resumable(str(out), moved, overwrite=False) is not None
    other = config.model_copy(update={"model": "embedded:tiny-random-llama"})
    with pytest.raises(StageConflict, match="different config"):
        check_resumable(str(out), other, overwrite=False)
    assert check_resumable(str(out), other, overwrite=True) is None
    assert issubclass(StageConflict, ConfigError)  # the CLI's exit status 2


def test_cli_refuses_before_starting_ray(tmp_path, capsys, monkeypatch):
    from selfalign.cli import main
    from selfalign.runtime import cluster, stage

    def must_not_run(*args, **kwargs):
        raise AssertionError("the conflict must be refused before Ray starts or input is read")

    monkeypatch.setattr(cluster, "ensure_ray", must_not_run)
    monkeypatch.setattr(stage, "fixed_input", must_not_run)
    out = tmp_path / "bt"
    _manifest(out, "0123456789abcdef")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "a", "text": "t" * 700}) + "\n")
    code = main(["backtranslate", "--input", str(rows), "--output", str(out)])
    assert code == 2
    assert "different config" in capsys.readouterr().err
