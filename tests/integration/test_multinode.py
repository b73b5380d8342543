"""A real multi-node Ray cluster on this machine: jobs through the Jobs API, a node killed.

The cluster is started the way users start one (``ray start --head`` + ``ray start
--address`` per worker, each node its own process tree, ports and temp dir), with a
head that has no CPUs, like cluster/aws.yaml's: every engine actor and Ray Data task runs
on a worker node. Token authentication is on, with this cluster's own token (never the
shared ``~/.ray/auth_token``). Jobs are submitted as the README says, with
``jobs/runtime_env.yaml`` and the repo as working directory, so the job runs from the
uploaded copy.

Only processes this module started are ever signalled: each node's ``ray start --block``
process leads its own session, and teardown kills those sessions and whatever those
processes spawned.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pytest
import requests
import yaml
from ray.job_submission import JobStatus, JobSubmissionClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RUNTIME_ENV = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
WORKER_CPUS = 2
# Small batches: a stage writes many shards, so a node can die between two of them.
RAY_CONFIG = """
profiles:
  local:
    device: cpu
    stages:
      default: {min_actors: 1, max_actors: 1, cpus_per_actor: 1, omp_threads: 1,
                batch_size: 8, max_concurrent_batches: 2}
"""
ENGINE_ARGS = ["vllm.max_model_len=512", "vllm.cpu_kv_cache_gib=1", "vllm.max_num_seqs=16"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalCluster:
    """Head (0 CPUs, dashboard + Jobs API) and worker nodes, each a ``ray start --block``."""

    def __init__(self, workers: int):
        # Short: Ray's unix socket paths live under it (108-byte limit).
        self.temp_dir = tempfile.mkdtemp(prefix="samn-", dir="/tmp")
        self.token = secrets.token_hex(32)
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.env = {
            **os.environ,
            # `python` in a job's entrypoint must be this venv's, as it is the image's on a cluster.
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # Own temp dir and address file: other clusters on this machine are left alone.
            "RAY_TMPDIR": self.temp_dir,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.head: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.killed: list[subprocess.Popen] = []
        self._start_head()
        for _ in range(workers):
            self.add_worker()
        self.wait_for_nodes(1 + workers)

    # ------------------------------------------------------------------ processes

    def _ray_start(self, *args: str) -> subprocess.Popen:
        log = Path(self.temp_dir) / f"ray-start-{time.time_ns()}.log"
        with log.open("w") as stream:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                [str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", *args],
                env=self.env,
                stdout=stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killable as one node
            )

    def _start_head(self) -> None:
        self.head = self._ray_start(
            "--head",
            f"--temp-dir={self.temp_dir}",
            f"--port={self.gcs_port}",
            "--num-cpus=0",
            f"--object-store-memory={200 * 2**20}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
        )

    def add_worker(self) -> subprocess.Popen:
        worker = self._ray_start(
            f"--address=127.0.0.1:{self.gcs_port}",
            # Its own temp dir, as each machine of a real cluster has its own disk: nodes
            # sharing one would unpack the job's working_dir into the same directory at
            # once, and a job could see it half-extracted.
            f"--temp-dir={tempfile.mkdtemp(prefix='w', dir=self.temp_dir)}",
            f"--num-cpus={WORKER_CPUS}",
            f"--object-store-memory={200 * 2**20}",
            f"--dashboard-agent-listen-port={free_port()}",
        )
        self.workers.append(worker)
        return worker

    def kill_node(self, node: subprocess.Popen) -> None:
        """SIGKILL a whole node (its raylet, object store, workers): a machine that died."""
        spawned = _descendants(node)
        os.killpg(node.pid, signal.SIGKILL)
        for proc in spawned:  # anything that left the node's process group
            with _gone():
                proc.kill()
        node.wait(timeout=30)
        self.workers.remove(node)
        self.killed.append(node)

    def shutdown(self) -> None:
        nodes = [*self.workers, *([self.head] if self.head else [])]
        spawned = [proc for node in nodes for proc in _descendants(node)]
        for node in nodes:  # `ray start --block` stops its node's processes on SIGTERM
            with _gone():
                os.killpg(node.pid, signal.SIGTERM)
        deadline = time.time() + 5
        for node in nodes:
            with _gone():
                node.wait(timeout=max(0.1, deadline - time.time()))
        for node in nodes:
            with _gone():
                os.killpg(node.pid, signal.SIGKILL)
        for proc in spawned:
            with _gone():
                proc.kill()
        for node in nodes:
            with _gone():
                node.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    # ------------------------------------------------------------------ HTTP APIs

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def jobs(self) -> JobSubmissionClient:
        return JobSubmissionClient(self.dashboard, headers=self.headers)

    def state(self, resource: str) -> list[dict]:
        reply = requests.get(
            f"{self.dashboard}/api/v0/{resource}",
            params={"limit": 1000, "detail": "true"},
            headers=self.headers,
            timeout=30,
        )
        reply.raise_for_status()
        return reply.json()["data"]["result"]["result"]

    def alive_nodes(self) -> list[dict]:
        return [n for n in self.state("nodes") if n["state"] == "ALIVE"]

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.head.poll() is None, f"head node exited; see {self.temp_dir}"
            with _gone(requests.RequestException, KeyError, ValueError):
                if len(self.alive_nodes()) == count:
                    return
            time.sleep(1)
        raise TimeoutError(f"{count} nodes did not come up; logs in {self.temp_dir}")

    def submit_cli(self, *entrypoint: str, timeout: float) -> subprocess.CompletedProcess:
        """``ray job submit`` exactly as the README writes it, run from the repo root."""
        return subprocess.run(
            [
                str(VENV_BIN / "ray"),
                "job",
                "submit",
                f"--address={self.dashboard}",
                "--runtime-env=jobs/runtime_env.yaml",
                "--working-dir=.",
                "--",
                *entrypoint,
            ],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


class _gone:
    """Ignore errors of a process or endpoint that has already gone away."""

    def __init__(self, *extra: type[BaseException]):
        self.types = (ProcessLookupError, psutil.NoSuchProcess, subprocess.TimeoutExpired, *extra)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, self.types)


def _descendants(node: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(node.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def cluster(tiny_model_path):  # the model is built once, before any node needs it
    local = LocalCluster(workers=2)
    try:
        yield local
    finally:
        local.shutdown()


def engine_actors(cluster: LocalCluster) -> list[dict]:
    return [
        a
        for a in cluster.state("actors")
        if "vLLMEngineStageUDF" in (a.get("class_name") or "") + (a.get("name") or "")
    ]


def _ray_job_id(jobs, submission_id: str) -> str:
    return jobs.get_job_info(submission_id).job_id


def write_rows(path: Path, count: int, field: str) -> set[str]:
    with path.open("w") as f:
        for i in range(count):
            text = f"Segment {i}. " + "Bread needs flour, water, salt and time to rise. " * (
                1 + i % 4
            )
            f.write(json.dumps({"id": f"row-{i:04d}", field: text}) + "\n")
    return {f"row-{i:04d}" for i in range(count)}


def ids_in(directory: Path) -> list[str]:
    return (
        pads.dataset(directory, format="parquet").to_table(columns=["id"]).column("id").to_pylist()
    )


def test_job_submit_runs_on_the_multinode_cluster(cluster, tmp_path):
    # 1. What a job sees: the uploaded working directory (without the venv or run
    #    outputs) and the cluster's nodes.
    probe = (
        "import json, os, ray; ray.init(); "
        "print('PROBE' + json.dumps({'cwd': os.getcwd(), 'files': sorted(os.listdir('.')), "
        "'resources': ray.cluster_resources(), 'nodes': len(ray.nodes())}))"
    )
    result = cluster.submit_cli("python", "-c", probe, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("PROBE"))
    seen = json.loads(line[len("PROBE") :])
    assert seen["cwd"] != str(ROOT)  # the job runs from the uploaded copy
    assert {"selfalign", "jobs", "ray_config.yaml"} <= set(seen["files"]), seen
    assert not {".venv", "runs", ".git"} & set(seen["files"])
    assert seen["nodes"] == 3
    assert seen["resources"]["CPU"] == 2 * WORKER_CPUS  # the head contributes none

    # 2. A real stage: jobs/generate.py with the tiny model; the engine actor can only
    #    run on a worker node (the head has no CPUs).
    prompts = tmp_path / "prompts.jsonl"
    expected = write_rows(prompts, 24, "prompt")
    out = tmp_path / "generated"
    config = tmp_path / "ray_config.yaml"
    config.write_text(RAY_CONFIG)
    result = cluster.submit_cli(
        "python",
        "jobs/generate.py",
        f"--input={prompts}",
        f"--output={out}",
        "--model=embedded:tiny-random-llama",
        f"--ray-config={config}",
        "sampling.max_tokens=8",
        *ENGINE_ARGS,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "starting a local Ray cluster" not in result.stdout + result.stderr
    rows = pads.dataset(out, format="parquet").to_table().to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(expected)
    assert all(r["error"] is None and r["num_generated_tokens"] > 0 for r in rows)
    summary = json.loads((out / "_selfalign_summary.json").read_text())
    assert summary["rows"] == len(expected)

    head_id = next(n["node_id"] for n in cluster.alive_nodes() if n["is_head_node"])
    actors = engine_actors(cluster)
    assert actors, "no engine actor in the cluster's state"
    assert all(a["node_id"] != head_id for a in actors)


def test_a_killed_worker_node_loses_no_rows(cluster, tmp_path):
    """Kill the node that holds the engine actor mid-stage: the job still completes, and
    ``data/`` holds exactly the input id set, each id once."""
    if len(cluster.workers) < 2:
        cluster.add_worker()
        cluster.wait_for_nodes(1 + len(cluster.workers))
    segments = tmp_path / "segments.jsonl"
    expected = write_rows(segments, 240, "text")
    out = tmp_path / "A"
    config = tmp_path / "ray_config.yaml"
    config.write_text(RAY_CONFIG)
    jobs = cluster.jobs()
    job_id = jobs.submit_job(
        entrypoint=" ".join(
            [
                "python jobs/backtranslate.py",
                f"--input {segments} --output {out}",
                f"--model embedded:tiny-random-llama --ray-config {config}",
                "sampling.max_tokens=16",
                *ENGINE_ARGS,
            ]
        ),
        runtime_env={**RUNTIME_ENV, "working_dir": str(ROOT)},
    )

    def node_with_engine() -> subprocess.Popen | None:
        for node in cluster.workers:
            for proc in _descendants(node):
                with _gone(psutil.AccessDenied):
                    cmdline = " ".join(proc.cmdline())
                    if "vLLMEngineStageUDF" in cmdline and "VLLM::" not in cmdline:
                        return node
        return None

    deadline = time.time() + 300
    victim = None
    while time.time() < deadline:
        status = jobs.get_job_status(job_id)
        assert not status.is_terminal(), jobs.get_job_logs(job_id)[-4000:]
        shards = list((out / "data").glob("*.parquet")) if (out / "data").exists() else []
        victim = node_with_engine() if shards else None
        if victim is not None:
            break
        time.sleep(0.5)
    # Mid-stage: the job is running and has written some shards (not read here: a shard
    # may be half-written at this moment).
    assert victim is not None, "the stage never had a shard and an engine actor at once"
    shards_at_kill = len(shards)
    dead_node_ids = {n["node_id"] for n in cluster.alive_nodes()}
    cluster.kill_node(victim)

    while not jobs.get_job_status(job_id).is_terminal() and time.time() < deadline + 120:
        time.sleep(2)
    logs = jobs.get_job_logs(job_id)
    assert jobs.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-6000:]

    # The stage went on after the kill (on the surviving node) ...
    assert len(list((out / "data").glob("*.parquet"))) > shards_at_kill
    # ... and ends with every id, exactly once.
    assert sorted(ids_in(out / "data")) == sorted(expected)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["rows"] == len(expected)
    # The killed actor's rows were retried on a replacement, not recorded as failures.
    assert "engine error" not in manifest["reject_reasons"]
    alive = {n["node_id"] for n in cluster.alive_nodes()}
    assert len(alive) == 1 + len(cluster.workers)
    dead_node_ids -= alive  # the node that was killed
    assert len(dead_node_ids) == 1
    # The engine actor was on the killed node and was restarted on the surviving one.
    homes = {
        a["node_id"] for a in engine_actors(cluster) if a["job_id"] == _ray_job_id(jobs, job_id)
    }
    assert homes & alive, "no engine actor of the job ran on a surviving node"
