import pytest

from selfalign.core.io import InputError, expand_input, list_files


def test_directory_walk_skips_side_files(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.parquet").write_bytes(b"x")
    (tmp_path / "_selfalign_config.yaml").write_text("x")
    (tmp_path / ".hidden.parquet").write_bytes(b"x")
    _, files = list_files(str(tmp_path))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.parquet", "b.parquet"]
    _, files, fmt = expand_input(str(tmp_path))
    assert fmt == "parquet" and len(files) == 2


def test_glob_and_errors(tmp_path):
    for name in ("x1.jsonl", "x2.jsonl", "y.jsonl"):
        (tmp_path / name).write_text("{}\n")
    _, files, fmt = expand_input(str(tmp_path / "x*.jsonl"))
    assert fmt == "json" and [f.rsplit("/", 1)[-1] for f in files] == ["x1.jsonl", "x2.jsonl"]
    with pytest.raises(InputError, match="no input files match"):
        list_files(str(tmp_path / "z*.jsonl"))
    with pytest.raises(InputError, match="not found"):
        list_files(str(tmp_path / "absent"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported row file type"):
        expand_input(str(tmp_path))  # a stray file in a row directory is an error, not skipped
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "z.parquet").write_bytes(b"x")
    with pytest.raises(InputError, match="mixes"):
        expand_input(str(tmp_path))


def test_parquet_shards_with_an_all_null_column_read_as_one_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selfalign.core.io import parquet_dataset

    # A shard where every row was rejected stores its token counts as the null type.
    pq.write_table(pa.table({"id": ["a"], "tokens": pa.array([None])}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"id": ["b"], "tokens": pa.array([7])}), tmp_path / "1.parquet")
    table = parquet_dataset(str(tmp_path)).to_table()
    assert table.schema.field("tokens").type == pa.int64()
    assert sorted(table.column("tokens").to_pylist(), key=str) == [7, None]
    assert parquet_dataset(str(tmp_path / "missing")).to_table().num_rows == 0


def test_local_paths_become_absolute_and_uris_stay(tmp_path, monkeypatch):
    from selfalign.core.io import absolute

    monkeypatch.chdir(tmp_path)
    assert absolute("runs/a") == str(tmp_path / "runs" / "a")
    assert absolute("s3://bucket/runs/a/") == "s3://bucket/runs/a"
