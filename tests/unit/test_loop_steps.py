"""The pipeline's own data steps (split, mix), on Parquet files, without Ray."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selfalign.core.errors import ConfigError
from selfalign.stages import mix, split


def _write(path, rows):
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path / "part-0.parquet")


def _seed(n):
    return [
        {"id": f"s{i}", "instruction": f"q{i}", "response": f"a{i}", "source": "oasst1",
         "messages": [{"role": "user", "content": f"q{i}"},
                      {"role": "assistant", "content": f"a{i}"}]}
        for i in range(n)
    ]  # fmt: skip


def test_split_holds_out_exactly_size_pairs_and_partitions(tmp_path):
    _write(tmp_path / "pairs", _seed(20))
    config = split.SplitConfig(input=str(tmp_path / "pairs"), output=str(tmp_path / "out"), size=5)
    assert split.run(config) == {"train": 15, "heldout": 5}
    train = set(pq.read_table(tmp_path / "out" / "train").column("id").to_pylist())
    held = set(pq.read_table(tmp_path / "out" / "heldout").column("id").to_pylist())
    assert len(held) == 5 and not train & held and train | held == {f"s{i}" for i in range(20)}
    too_many = config.model_copy(update={"output": str(tmp_path / "o2"), "size": 20})
    with pytest.raises(ConfigError, match="leaves no pairs"):
        split.run(too_many)


def _scored(n, rejected=()):
    return [
        {"id": f"a{i}", "instruction": f"x{i}", "response": f"seg{i}", "score": 1 + i % 5,
         "reject_reason": "engine error" if i in rejected else None}
        for i in range(n)
    ]  # fmt: skip


def _mix(tmp_path, augmented, sample=None):
    return mix.MixConfig(
        parts=[
            {"input": str(tmp_path / "seed"), "source": "seed"},
            {"input": str(tmp_path / augmented), "source": "augmented", "sample": sample},
        ],
        output=str(tmp_path / "mix"),
    )


def test_mix_tags_sources_and_keeps_multiturn_seed_messages(tmp_path):
    _write(tmp_path / "seed", _seed(4))
    _write(tmp_path / "selected", _scored(3))
    assert mix.run(_mix(tmp_path, "selected")) == {"seed": 4, "augmented": 3, "rows": 7}
    rows = pq.read_table(tmp_path / "mix" / "data").to_pylist()
    # Whatever the seed set called its source, the curated format needs these two tags.
    assert sorted(r["source"] for r in rows) == ["augmented"] * 3 + ["seed"] * 4
    assert all(r["messages"] is None for r in rows if r["source"] == "augmented")
    assert all(len(r["messages"]) == 2 for r in rows if r["source"] == "seed")


def test_ablation_sample_matches_the_selection_size_and_skips_rejects(tmp_path):
    _write(tmp_path / "seed", _seed(2))
    _write(tmp_path / "data", _scored(30, rejected={0, 1, 2, 3}))
    _write(tmp_path / "selected", _scored(6))
    sample = {"size_of": str(tmp_path / "selected"), "seed": 0}
    assert mix.run(_mix(tmp_path, "data", sample))["augmented"] == 6
    rows = pq.read_table(tmp_path / "mix" / "data").to_pylist()
    picked = {r["id"] for r in rows if r["source"] == "augmented"}
    assert len(picked) == 6 and not picked & {"a0", "a1", "a2", "a3"}


def test_mix_with_nothing_selected_trains_on_the_seed_alone(tmp_path):
    _write(tmp_path / "seed", _seed(3))
    (tmp_path / "selected").mkdir()
    assert mix.run(_mix(tmp_path, "selected")) == {"seed": 3, "augmented": 0, "rows": 3}
