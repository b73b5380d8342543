"""`selfalign generate` end to end: JSONL in, Parquet shards + resolved config + summary out."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from selfalign.cli import main

pytestmark = pytest.mark.integration


def test_generate_cli_writes_shards_config_and_summary(ray_cluster, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    with rows.open("w") as f:
        for i in range(6):
            f.write(json.dumps({"id": f"r{i}", "prompt": f"Item {i}:", "topic": "t"}) + "\n")
        f.write(json.dumps({"id": "bad", "prompt": "x", "sampling_params": {"top_p": 5}}) + "\n")
    out = tmp_path / "out"
    args = [
        "generate",
        "--input",
        str(rows),
        "--output",
        str(out),
        "--model",
        "embedded:tiny-random-llama",
        "--show",
        "2",
        "sampling.max_tokens=5",
        "sampling.ignore_eos=true",
        "vllm.max_model_len=256",
        "vllm.cpu_kv_cache_gib=1",
    ]
    assert main(args) == 0

    table = pq.read_table(out)
    assert table.num_rows == 7
    by_id = {r["id"]: r for r in table.to_pylist()}
    assert set(by_id) == {*(f"r{i}" for i in range(6)), "bad"}
    assert all(by_id[f"r{i}"]["num_generated_tokens"] == 5 for i in range(6))
    assert by_id["r3"]["topic"] == "t"  # extra columns pass through
    assert "top_p" in by_id["bad"]["error"]

    resolved = yaml.safe_load((out / "_selfalign_config.yaml").read_text())
    assert resolved["model"] == "embedded:tiny-random-llama"
    assert resolved["sampling"]["max_tokens"] == 5

    summary = json.loads((out / "_selfalign_summary.json").read_text())
    assert (summary["rows"], summary["ok"], summary["errors"]) == (7, 6, 1)
    assert summary["output_tokens"] == 30
    printed = capsys.readouterr().out
    assert '"rows": 7' in printed

    # The same command again finds its completed run and skips it (nothing is redone)...
    shards = {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == shards
    # ...other settings into the same directory are refused, naming what differs...
    capsys.readouterr()
    assert main([*args, "sampling.max_tokens=4"]) == 2
    assert "differs in: sampling.max_tokens" in capsys.readouterr().err
    # ...and --overwrite replaces the shards rather than appending.
    assert main([*args, "sampling.max_tokens=4", "--overwrite"]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 7
    assert {r["num_generated_tokens"] for r in table.to_pylist() if r["id"] != "bad"} == {4}


def test_generate_cli_missing_input_is_a_clear_error(ray_cluster, tmp_path, capsys):
    code = main(
        [
            "generate",
            "--input",
            str(tmp_path / "absent.jsonl"),
            "--output",
            str(tmp_path / "o"),
            "--model",
            "embedded:tiny-random-llama",
        ]
    )
    assert code == 2
    assert "input not found" in capsys.readouterr().err
