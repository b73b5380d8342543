"""One existing-output policy for every output: new, resume, complete, or refused (exit 2)."""

from __future__ import annotations

import json

import pytest

from selfalign.core import claims
from selfalign.core.errors import ConfigError, OutputConflict
from selfalign.stages.backtranslate.config import BacktranslateConfig
from selfalign.stages.curate.config import CurateConfig
from selfalign.training.config import TrainConfig


def test_same_settings_resume_then_complete_other_settings_are_refused(tmp_path):
    out = str(tmp_path / "bt")
    config = BacktranslateConfig(input="x.jsonl", output=out)
    settings = claims.settings_of(config)
    assert claims.check_output(out, "backtranslate", settings) == "new"  # nothing there yet
    claims.begin(out, "backtranslate", settings)
    assert claims.check_output(out, "backtranslate", settings) == "resume"
    # Paths and where it runs do not matter; what it computes does.
    moved = config.model_copy(update={"output": str(tmp_path / "elsewhere"), "profile": "gpu"})
    assert claims.check_output(out, "backtranslate", claims.settings_of(moved)) == "resume"
    other = config.model_copy(update={"model": "embedded:tiny-random-llama"})
    with pytest.raises(OutputConflict, match="differs in: model"):
        claims.check_output(out, "backtranslate", claims.settings_of(other))
    # Another kind of job is refused too, even with equal settings.
    with pytest.raises(OutputConflict):
        claims.check_output(out, "curate", settings)
    claims.complete(out, "backtranslate", settings, rows=3)
    assert claims.check_output(out, "backtranslate", settings) == "complete"
    manifest = claims.read_manifest(out)
    assert manifest["rows"] == 3 and manifest["status"] == "complete" and manifest["started"]
    # --overwrite clears it: a new run.
    fresh = claims.check_output(out, "backtranslate", claims.settings_of(other), overwrite=True)
    assert fresh == "new"
    assert not list((tmp_path / "bt").iterdir())
    assert issubclass(OutputConflict, ConfigError)  # the CLI's exit status 2


def test_files_without_a_manifest_are_not_taken_over(tmp_path):
    out = tmp_path / "somebody"
    out.mkdir()
    (out / "part-0.parquet").write_bytes(b"not ours")
    with pytest.raises(OutputConflict, match="no _manifest.json"):
        claims.check_output(str(out), "generate", {})
    assert claims.check_output(str(tmp_path / "empty-or-missing"), "generate", {}) == "new"


def test_what_each_config_leaves_out_of_its_fingerprint():
    # Curate: a new selection re-selects from the scored rows without rescoring.
    curate = CurateConfig(input="x", output="y")
    top3 = curate.selection.model_copy(update={"top_n": 3})
    assert claims.settings_of(curate) == claims.settings_of(
        curate.model_copy(update={"selection": top3})
    )
    generate_mode = curate.model_copy(update={"mode": "generate"})
    assert claims.settings_of(curate) != claims.settings_of(generate_mode)
    # Training: how a run is kept and watched is not what it trains.
    train = TrainConfig(output="a")
    kept = train.model_copy(
        update={"output": "b", "keep_checkpoints": 5, "log_every": 3, "profile": "gpu"}
    )
    assert claims.settings_of(train) == claims.settings_of(kept)
    assert claims.settings_of(train) != claims.settings_of(train.model_copy(update={"lr": 2e-5}))


def test_fingerprint_ignores_key_order():
    assert claims.fingerprint({"a": 1, "b": [1, 2]}) == claims.fingerprint({"b": [1, 2], "a": 1})
    assert claims.fingerprint({"a": 1}) != claims.fingerprint({"a": 2})


def test_cli_refuses_before_starting_ray(tmp_path, capsys, monkeypatch):
    from selfalign.cli import main
    from selfalign.core import cluster, models
    from selfalign.engine import stage

    def must_not_run(*args, **kwargs):
        raise AssertionError("the conflict must be refused before Ray starts or input is read")

    monkeypatch.setattr(cluster, "ensure_ray", must_not_run)
    monkeypatch.setattr(stage, "fixed_input", must_not_run)
    monkeypatch.setattr(models, "resolve_model", must_not_run)
    out = tmp_path / "bt"
    out.mkdir()
    (out / claims.MANIFEST_NAME).write_text(
        json.dumps({"kind": "backtranslate", "status": "running", "fingerprint": "0123456789abcdef",
                    "settings": {"model": "another"}})
    )  # fmt: skip
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"id": "a", "text": "t" * 700}) + "\n")
    code = main(["backtranslate", "--input", str(rows), "--output", str(out)])
    assert code == 2
    assert "other settings (differs in: " in capsys.readouterr().err
