"""The deployment files under infra/ are consistent with the project and with each other.

No Docker engine, cluster or SLURM is needed: the files are parsed, cross-checked against
pyproject.toml, dvc.yaml, params.yaml and the CLI, and the sbatch script is run against stand-ins
for srun, scontrol, ray and dvc.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from pipeline import paths
from pipeline.cli import build_parser
from pipeline.config import RayParams

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "compose"
K8S = INFRA / "k8s"
SBATCH = INFRA / "slurm" / "pipeline.sbatch"
IMAGE_DOCKERFILE = INFRA / "docker" / "Dockerfile"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|TOKEN")
INTERPOLATION = re.compile(r"(?<!\$)\$\{(\w+)(:?[?-][^}]*)?\}")  # ${VAR}, ${VAR:?msg}, ${VAR:-default}; not $${...}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&", ">", ">>", "<", "(", ")"}


# --- readers ---------------------------------------------------------------------------------------


def load(path: Path) -> dict:
    (doc,) = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return doc


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def requirement(name: str) -> Requirement:
    return next(r for r in map(Requirement, pyproject()["dependencies"]) if r.name == name)


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("#")),
    )
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def instructions(path: Path, name: str) -> list[str]:
    return [args for instruction, args in dockerfile(path) if instruction == name]


def copy_sources(path: Path) -> list[str]:
    return [src for args in instructions(path, "COPY") for src in shlex.split(args)[:-1] if not src.startswith("--")]


def base_image() -> str:
    """The image the project image is built FROM, with its ARG default substituted."""
    args = dict(a.split("=", 1) for a in instructions(IMAGE_DOCKERFILE, "ARG"))
    (image,) = instructions(IMAGE_DOCKERFILE, "FROM")
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


def workdir() -> PurePosixPath:
    return PurePosixPath(instructions(IMAGE_DOCKERFILE, "WORKDIR")[-1])


def strings(node) -> list[str]:
    """Every string value of a parsed YAML document (what compose interpolates; comments are not)."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def makefile_exports() -> dict[str, str]:
    """``export NAME := value`` lines of the Makefile: the environment `make run` runs the stages in."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return dict(re.findall(r"^export (\w+) :?= ?(\S+)", text, flags=re.MULTILINE))


def stage_commands() -> dict[str, str]:
    """Every stage of dvc.yaml as ``dvc repro`` names it (``train@<balancer>``), with its command."""
    stages = load(ROOT / "dvc.yaml")["stages"]
    balancers = load(ROOT / "params.yaml")["train"]["balancers"]
    commands = {}
    for name, stage in stages.items():
        if "foreach" in stage:
            assert stage["foreach"] == "${train.balancers}", name
            commands.update({f"{name}@{b}": stage["do"]["cmd"].replace("${item}", b) for b in balancers})
        else:
            commands[name] = stage["cmd"]
    return commands


def assert_runs_pipeline(argv: list[str], *, cwd: PurePosixPath | None = None) -> None:
    """``argv`` is ``python -m pipeline …`` the CLI accepts, or a ``dvc repro`` of real stages (in
    ``cwd``) whose every command the CLI accepts."""
    if argv[:3] == ["python", "-m", "pipeline"]:
        build_parser().parse_args(argv[3:])  # SystemExit (a failed test) on an unknown command or argument
        return
    assert argv[0] == "dvc", argv
    if cwd is not None:
        assert argv[1:3] == ["--cd", str(cwd)], f"{argv}: DVC must run in {cwd}"
        argv = [argv[0], *argv[3:]]
    assert argv[1] == "repro", argv
    stages = stage_commands()
    targets = [a for a in argv[2:] if not a.startswith("-")]
    assert set(targets) <= set(stages), f"{targets}: not stages of dvc.yaml"
    for command in stages.values():
        assert_runs_pipeline(shlex.split(command))


def cluster_pods(spec: dict) -> list[dict]:
    """Pod specs of a RayCluster spec: the head's, then each worker group's."""
    return [
        spec["headGroupSpec"]["template"]["spec"],
        *(group["template"]["spec"] for group in spec["workerGroupSpecs"]),
    ]


def cluster_specs() -> dict[str, dict]:
    return {
        "raycluster.yaml": load(K8S / "raycluster.yaml")["spec"],
        "rayjob.yaml": load(K8S / "rayjob.yaml")["spec"]["rayClusterSpec"],
    }


def gpu_workers(spec: dict) -> list[tuple[dict, dict, dict]]:
    """``(worker group, its pod spec, its container)`` for each GPU worker group of a RayCluster spec."""
    workers = []
    for group in spec["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        if "nvidia.com/gpu" in container["resources"]["limits"]:
            workers.append((group, pod, container))
    return workers


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (``32Gi``, ``500M``, ``4``) in base units."""
    number, suffix = re.fullmatch(r"([0-9.]+)([KMGTP]i?)?", str(value)).groups()
    scale = {
        "": 1,
        "K": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
    }[suffix or ""]
    return float(number) * scale


def assert_nccl_env(env: dict[str, str], where: str) -> None:
    """NCCL names its network, warns only, and a hung collective fails the worker instead of waiting."""
    assert env.get("NCCL_SOCKET_IFNAME"), f"{where}: NCCL_SOCKET_IFNAME unset"
    assert env.get("NCCL_DEBUG") == "WARN", f"{where}: NCCL_DEBUG = {env.get('NCCL_DEBUG')!r}"
    assert env.get("TORCH_NCCL_ASYNC_ERROR_HANDLING") == "1", f"{where}: TORCH_NCCL_ASYNC_ERROR_HANDLING"


def documented_image() -> str:
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    (image,) = set(re.findall(r"docker build -f infra/docker/Dockerfile -t (\S+) \.", readme))
    return image


# --- every file ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.yaml")), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_manifest_parses(path):
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert docs and all(isinstance(doc, dict) for doc in docs)


def test_every_file_the_manifests_name_exists():
    services = load(COMPOSE / "compose.yaml")["services"].values()
    named = [COMPOSE / service["build"] / "Dockerfile" for service in services if "build" in service]
    named += [
        COMPOSE / volume.split(":")[0]
        for service in services
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    ]
    named += [ROOT / src for src in copy_sources(IMAGE_DOCKERFILE)]  # the build context is the repository root
    assert len(named) >= 5
    assert [p for p in named if not p.exists()] == []


def test_readme_describes_every_deployment_file():
    readme = (INFRA / "README.md").read_text(encoding="utf-8")
    files = [p for d in ("compose", "docker", "k8s", "slurm") for p in (INFRA / d).rglob("*") if p.is_file()]
    assert [str(p.relative_to(INFRA)) for p in files if f"`{p.relative_to(INFRA)}`" not in readme] == []
    assert "infra/local/README.md" in readme


# --- the tracking stack (compose) ------------------------------------------------------------------


def mlflow_server_args() -> dict[str, str]:
    command = load(COMPOSE / "compose.yaml")["services"]["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    return dict(zip(command[2::2], command[3::2], strict=True))


def test_services_start_only_after_what_they_need_is_healthy():
    services = load(COMPOSE / "compose.yaml")["services"]
    for name in ("postgres", "rustfs", "mlflow"):
        assert services[name]["healthcheck"]["test"], name
    assert services["mlflow"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "rustfs": {"condition": "service_healthy"},
        "create-bucket": {"condition": "service_completed_successfully"},
    }
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no healthcheck"


def test_mlflow_tracks_to_postgres_and_keeps_artifacts_in_the_created_bucket():
    services = load(COMPOSE / "compose.yaml")["services"]
    args = mlflow_server_args()
    backend = urlsplit(args["--backend-store-uri"])
    assert backend.scheme == "postgresql+psycopg2" and backend.hostname == "postgres" and backend.path == "/mlflow"
    assert args["--app-name"] == "basic-auth" and args["--host"] == "0.0.0.0"
    artifacts = re.fullmatch(r"s3://(\$\{[^}]+\})/\w+", args["--artifacts-destination"])
    assert artifacts, args["--artifacts-destination"]
    bucket = services["create-bucket"]["environment"]["BUCKET"]
    assert INTERPOLATION.fullmatch(artifacts.group(1)).group(1) == INTERPOLATION.fullmatch(bucket).group(1)
    env = services["mlflow"]["environment"]
    endpoint = urlsplit(env["MLFLOW_S3_ENDPOINT_URL"])
    assert endpoint.hostname == "rustfs" and f"{endpoint.port}:{endpoint.port}" in services["rustfs"]["ports"]
    assert services["create-bucket"]["environment"]["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"]


def test_mlflow_users_live_in_the_tracking_database_and_may_log_to_shared_experiments():
    service = load(COMPOSE / "compose.yaml")["services"]["mlflow"]
    ini_path = service["environment"]["MLFLOW_AUTH_CONFIG_PATH"]
    assert f"./basic_auth.ini:{ini_path}:ro" in service["volumes"]
    auth = configparser.ConfigParser()
    auth.read(COMPOSE / "basic_auth.ini")
    assert auth["mlflow"]["database_uri"] == mlflow_server_args()["--backend-store-uri"]
    assert auth["mlflow"]["default_permission"] in ("EDIT", "MANAGE")  # teammates log to one experiment


def test_tracking_server_image_has_auth_the_postgres_driver_and_s3_and_matches_the_client():
    installed = [
        Requirement(r)
        for args in instructions(COMPOSE / "mlflow" / "Dockerfile", "RUN")
        for r in re.findall(r'"([^"]+)"', args)
    ]
    by_name = {r.name: r for r in installed}
    assert {"mlflow", "psycopg2-binary", "boto3"} <= set(by_name) and "auth" in by_name["mlflow"].extras
    (pinned,) = by_name["mlflow"].specifier
    assert pinned.operator == "==" and requirement("mlflow").specifier.contains(pinned.version)


def test_compose_holds_no_credentials():
    text = (COMPOSE / "compose.yaml").read_text(encoding="utf-8") + (COMPOSE / "basic_auth.ini").read_text()
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), "a URI with a password"
    for name, service in load(COMPOSE / "compose.yaml")["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.fullmatch(str(value)) and ":?" in value, f"{name}.{key} = {value!r}"


def test_env_file_is_gitignored_and_its_example_lists_every_variable_without_secrets():
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/compose/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "infra/compose/.env is not git-ignored"
    assert subprocess.run(["git", "check-ignore", "-q", "infra/compose/.env.example"], cwd=ROOT).returncode == 1
    used = {name for value in strings(load(COMPOSE / "compose.yaml")) for name, _ in INTERPOLATION.findall(value)}
    example = dict(
        line.split("=", 1)
        for line in (COMPOSE / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert used == set(example)
    assert {name: value for name, value in example.items() if SECRET_NAME.search(name) and value} == {}


# --- the project image -----------------------------------------------------------------------------


def test_image_installs_the_pinned_cuda_torch_before_the_project():
    runs = instructions(IMAGE_DOCKERFILE, "RUN")
    (torch_pin,) = requirement("torch").specifier
    torch_at = next(i for i, r in enumerate(runs) if f"pip install torch=={torch_pin.version}" in r)
    project_at = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch_at < project_at
    index = re.search(r"--index-url (\S+)", runs[torch_at]).group(1)
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", index)
    assert base_image().endswith("-" + index.rsplit("/", 1)[1]), "the base image's CUDA differs from torch's"


def test_image_base_has_the_ray_and_python_the_project_pins():
    repository, tag = base_image().split(":")
    ray_version, python, _ = tag.split("-")
    assert repository == "rayproject/ray" and requirement("ray").specifier.contains(ray_version)
    minor = int(python.removeprefix("py3"))
    supported = SpecifierSet(pyproject()["requires-python"])
    assert any(supported.contains(f"3.{minor}.{patch}") for patch in range(100)), f"Python 3.{minor}"
    for spec in cluster_specs().values():
        assert spec["rayVersion"] == ray_version


def test_image_holds_what_dvc_repro_needs():
    copied = {src.rstrip("/") for src in copy_sources(IMAGE_DOCKERFILE)}
    assert {"pyproject.toml", "README.md", "pipeline", "dvc.yaml", "params.yaml", "profiles"} <= copied
    code_deps = {
        dep
        for stage in load(ROOT / "dvc.yaml")["stages"].values()
        for dep in stage.get("deps", stage.get("do", {}).get("deps", []))
        if dep.startswith("pipeline/")
    }
    assert code_deps and all(dep.split("/")[0] in copied for dep in code_deps)
    assert any("dvc init --no-scm" in r for r in instructions(IMAGE_DOCKERFILE, "RUN"))


def test_image_runs_offline_like_make_run():
    env = dict(token.split("=", 1) for args in instructions(IMAGE_DOCKERFILE, "ENV") for token in shlex.split(args))
    assert makefile_exports() and makefile_exports().items() <= env.items()


def test_image_sets_the_nccl_environment_of_the_gpu_workers():
    env = dict(token.split("=", 1) for args in instructions(IMAGE_DOCKERFILE, "ENV") for token in shlex.split(args))
    assert_nccl_env(env, "Dockerfile")
    assert env["NCCL_SOCKET_IFNAME"].startswith("^"), "the image runs on any network: it excludes interfaces"


def dockerignored(path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: .dockerignore globs are anchored at the
    context root, ``**`` spans directories, and a folder's exclusion covers what is inside it."""
    globs = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert not any(g.startswith("!") for g in globs)  # re-inclusions would need Docker's ordering rules

    def regex(glob: str) -> str:
        tokens = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return "".join(tokens.get(t, re.escape(t)) for t in re.findall(r"\*\*/?|\*|\?|[^*?]+", glob))

    parts = PurePosixPath(path).parts
    return any(re.fullmatch(regex(g), "/".join(parts[:i])) for g in globs for i in range(1, len(parts) + 1))


def test_build_context_leaves_out_local_state_and_credentials_but_not_the_sources():
    for generated in (
        ".git/HEAD",
        ".venv/bin/python",
        "data/split/split.json",
        "models/equal",
        "mlruns",
        "mlartifacts",
        "mlflow.db",
        "ray_results/x",
        "infra/compose/.env",
        "pipeline/__pycache__/cli.cpython-311.pyc",
    ):
        assert dockerignored(generated), generated
    sources = [src.rstrip("/") for src in copy_sources(IMAGE_DOCKERFILE)]
    tracked = subprocess.run(
        ["git", "ls-files", "--", *sources], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "pipeline/data/ingest.py" in tracked
    assert [path for path in tracked if dockerignored(path)] == []


# --- Kubernetes (KubeRay) --------------------------------------------------------------------------


def test_k8s_manifests_are_kuberay_v1_resources():
    kinds = {path.name: (doc["apiVersion"], doc["kind"]) for path in K8S.glob("*.yaml") for doc in [load(path)]}
    assert kinds == {
        "raycluster.yaml": ("ray.io/v1", "RayCluster"),
        "rayjob.yaml": ("ray.io/v1", "RayJob"),
        "workspace-pvc.yaml": ("v1", "PersistentVolumeClaim"),
        "secret.example.yaml": ("v1", "Secret"),
    }
    assert load(K8S / "workspace-pvc.yaml")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rayjob_runs_the_raycluster_once_and_deletes_it():
    job = load(K8S / "rayjob.yaml")["spec"]
    assert job["rayClusterSpec"] == load(K8S / "raycluster.yaml")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert isinstance(yaml.safe_load(job["runtimeEnvYAML"]), dict)


def test_rayjob_entrypoint_is_one_command_that_runs_the_pipeline_in_the_image_project():
    entrypoint = load(K8S / "rayjob.yaml")["spec"]["entrypoint"]
    lexer = shlex.shlex(entrypoint, posix=True, punctuation_chars=True)
    argv = list(lexer)
    # KubeRay pastes the entrypoint into the submitter pod's shell line: an operator would run there
    assert SHELL_OPERATORS.isdisjoint(argv), entrypoint
    assert_runs_pipeline(argv, cwd=workdir())


def test_ray_pods_run_the_documented_image_with_authentication():
    for name, spec in cluster_specs().items():
        assert spec["authOptions"] == {"mode": "token"}, name
        for pod in cluster_pods(spec):
            assert [c["image"] for c in pod["containers"]] == [documented_image()], name
    assert documented_image() in IMAGE_DOCKERFILE.read_text()


def test_gpu_workers_have_gpus_and_a_fixed_size():
    for name, spec in cluster_specs().items():
        assert "nvidia.com/gpu" not in str(spec["headGroupSpec"]), f"{name}: the head runs drivers only"
        for group in spec["workerGroupSpecs"]:
            (container,) = group["template"]["spec"]["containers"]
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1, name
            # a stage counts the cluster's GPUs when it starts: workers an autoscaler would add come too late
            assert group["replicas"] == group["minReplicas"] == group["maxReplicas"], name


def test_gpu_workers_take_whole_multi_gpu_nodes_with_shared_memory_for_nccl():
    for name, spec in cluster_specs().items():
        assert gpu_workers(spec), name
        for group, pod, container in gpu_workers(spec):
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            # the DDP ranks of one job share a pod (NVLink/PCIe) instead of crossing the pod network
            assert int(limits["nvidia.com/gpu"]) > 1, f"{name}: one GPU per worker pod"
            assert requests == limits, f"{name}: requests differ from limits"
            volumes = {v["name"]: v for v in pod["volumes"]}
            (shm,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
            size = quantity(volumes[shm["name"]]["emptyDir"]["sizeLimit"])
            assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory", name
            # by default Ray's object store takes 95 % of /dev/shm: NCCL and the DataLoaders need room too
            assert "object-store-memory" in group["rayStartParams"], f"{name}: the object store takes /dev/shm"
            object_store = int(group["rayStartParams"]["object-store-memory"])
            assert size - object_store >= 4 * 2**30 and size < quantity(limits["memory"]), name


def test_gpu_workers_have_the_nccl_environment():
    for name, spec in cluster_specs().items():
        for _, _, container in gpu_workers(spec):
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert_nccl_env(env, name)


def test_every_ray_pod_takes_its_credentials_from_the_secret():
    secret = load(K8S / "secret.example.yaml")
    assert {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    } <= set(secret["stringData"])
    filled = {k: v for k, v in secret["stringData"].items() if SECRET_NAME.search(k) and not re.fullmatch(r"<.+>", v)}
    assert filled == {}, "the example holds placeholders only"
    for name, spec in cluster_specs().items():
        for pod in cluster_pods(spec):
            for container in pod["containers"]:
                assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}], name
                assert not any(SECRET_NAME.search(e["name"]) and "value" in e for e in container.get("env", [])), name


def test_every_ray_pod_sees_the_artifacts_at_the_same_absolute_paths():
    claim = load(K8S / "workspace-pvc.yaml")["metadata"]["name"]
    folders = {str(paths.DATA), str(paths.MODELS), str(paths.METRICS), str(paths.REPORTS), RayParams().storage_path}
    expected = {(folder, str(workdir() / folder)) for folder in folders}
    for name, spec in cluster_specs().items():
        for pod in cluster_pods(spec):
            volumes = {v["name"]: v for v in pod["volumes"]}
            (container,) = pod["containers"]
            shared = {
                (m["subPath"], m["mountPath"])
                for m in container["volumeMounts"]
                if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName") == claim
            }
            assert shared == expected, name


# --- SLURM -----------------------------------------------------------------------------------------

STUBS = {
    "scontrol": "printf 'gpu01\\ngpu02\\ngpu03\\n'",
    "srun": 'printf "%s\\n" "$*" >> "$LOG/srun"\n'
    'case "$*" in *"hostname --ip-address"*) echo "10.1.2.3 fe80::1" ;;\n'
    '  *" ray start "*) env > "$(mktemp "$LOG/ray-start-env.XXXXXX")" ;; esac',
    "ray": ":",  # ray status
    "dvc": 'printf "%s\\n" "$*" > "$LOG/dvc"\nenv > "$LOG/dvc.env"',
    # the poll for joined nodes answers "all there" unless told otherwise; anything else is real Python
    "python": f'case "$*" in *ray.nodes*) exit "${{NODES_MISSING:-0}}" ;; esac\nexec {sys.executable} "$@"',
}


def run_sbatch(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The sbatch script on a 3-node, 8-CPU, 2-GPU allocation, with srun, scontrol, ray, dvc stubbed."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    slurm = {
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_JOB_NODELIST": "gpu[01-03]",
        "SLURM_JOB_NUM_NODES": "3",
        "SLURM_CPUS_PER_TASK": "8",
        "SLURM_GPUS_ON_NODE": "2",
    }
    return subprocess.run(
        ["bash", str(SBATCH), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "VENV": str(tmp_path / "venv"), "LOG": str(tmp_path), **slurm, **env},
    )


def test_sbatch_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True).returncode == 0


def test_sbatch_starts_ray_on_every_node_then_runs_the_stages_on_that_cluster(tmp_path):
    done = run_sbatch(tmp_path, "tune")
    assert done.returncode == 0, done.stderr
    starts = [shlex.split(line) for line in (tmp_path / "srun").read_text().splitlines() if " ray start " in line]
    on = {argv[argv.index("-w") + 1]: argv[argv.index("start") + 1 :] for argv in starts}
    assert sorted(on) == ["gpu01", "gpu02", "gpu03"] and len(starts) == 3
    assert {"--head", "--node-ip-address=10.1.2.3", "--port=6379"} <= set(on["gpu01"])
    for node in ("gpu02", "gpu03"):
        assert "--address=10.1.2.3:6379" in on[node] and "--head" not in on[node]
    for argv in starts:
        assert {"--cpus-per-task=8", "--num-cpus=8", "--num-gpus=2", "--block"} <= set(argv)
    assert (tmp_path / "dvc").read_text().split() == ["repro", "tune"]
    env = dict(line.split("=", 1) for line in (tmp_path / "dvc.env").read_text().splitlines() if "=" in line)
    assert env["RAY_ADDRESS"] == "10.1.2.3:6379" and env["RAY_AUTH_MODE"] == "token"
    assert re.fullmatch(r"[0-9a-f]{64}", env["RAY_AUTH_TOKEN"])
    assert makefile_exports().items() <= env.items()


def ray_step_envs(tmp_path: Path) -> list[dict[str, str]]:
    """The environment of each srun step that started Ray (the srun stand-in writes them)."""
    return [
        dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        for path in tmp_path.glob("ray-start-env.*")
    ]


def test_sbatch_ray_steps_request_the_gpus_they_give_ray_and_carry_the_nccl_environment(tmp_path):
    done = run_sbatch(tmp_path / "default")
    assert done.returncode == 0, done.stderr
    starts = [
        shlex.split(line) for line in (tmp_path / "default" / "srun").read_text().splitlines() if " ray start " in line
    ]
    assert len(starts) == 3
    for argv in starts:
        srun_options = argv[: argv.index("ray")]
        assert {"--gpus-per-node=2", "--gres=gpu:2"} & set(srun_options), f"the step requests no GPUs: {argv}"
        assert "--num-gpus=2" in argv
    envs = ray_step_envs(tmp_path / "default")
    assert len(envs) == 3
    for env in envs:
        assert_nccl_env(env, "sbatch")
        assert env["NCCL_SOCKET_IFNAME"] == "^lo,docker"
    # the environment of `sbatch` overrides them
    done = run_sbatch(tmp_path / "debug", NCCL_DEBUG="INFO", NCCL_SOCKET_IFNAME="ib0")
    assert done.returncode == 0, done.stderr
    envs = ray_step_envs(tmp_path / "debug")
    assert len(envs) == 3 and {(env["NCCL_DEBUG"], env["NCCL_SOCKET_IFNAME"]) for env in envs} == {("INFO", "ib0")}


def test_sbatch_fails_before_starting_anything_on_an_allocation_without_gpus(tmp_path):
    done = run_sbatch(tmp_path, SLURM_GPUS_ON_NODE="")
    assert done.returncode != 0 and "no GPUs" in done.stderr
    assert not (tmp_path / "srun").exists()


def test_sbatch_fails_without_running_stages_when_the_cluster_does_not_form(tmp_path):
    done = run_sbatch(tmp_path, NODES_MISSING="1", RAY_START_TIMEOUT="0")
    assert done.returncode != 0 and "error: fewer than 1 Ray nodes after 0 s" in done.stderr
    starts = [line for line in (tmp_path / "srun").read_text().splitlines() if " ray start " in line]
    assert len(starts) == 1 and "--head" in starts[0], "workers started before the head was up"
    assert not (tmp_path / "dvc").exists()


def test_sbatch_usage_names_real_stages():
    usages = re.findall(
        r"^# +sbatch .*infra/slurm/pipeline\.sbatch(.*?)(?:#|$)", SBATCH.read_text(), flags=re.MULTILINE
    )
    assert len(usages) >= 2
    for targets in usages:
        assert_runs_pipeline(["dvc", "repro", *targets.split()])
