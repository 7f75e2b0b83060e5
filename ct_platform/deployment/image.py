"""Build the serving image locally: no image registry is involved at any step.

Layers, slowest-changing first, so a code change rebuilds in seconds:
1. `ct-platform-base:bookworm` — `deploy/build-base-image.sh` (debootstrap + `docker import`):
   Debian bookworm minbase with its python3 (3.11) and python3-venv.
2. The serving dependencies, installed offline (`pip install --no-index`) from wheels that
   were downloaded on the host. Inside a container pip would need network access and the
   host's CA bundle; on the host it has both, and the wheels are cached across builds.
   The versions are pinned to exactly those in this environment: the bundle's `model.skops`
   must be loaded by the scikit-learn version that trained it.
3. `ct_platform/serving/` and the few ct_platform modules it imports (found by reading its
   import statements), nothing else: no dagster, mlflow, pandas or pydantic in the image.

Besides its configured tag, the image is tagged `src-<hash>` with a hash of everything that
goes into it; when that tag exists the build is skipped without touching the engine's build
machinery. (A tag, not a label: a LABEL is one more layer, and on the vfs storage driver
every layer is a full copy of the image's filesystem.)
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound
from docker.models.images import Image
from docker.utils import parse_repository_tag
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ct_platform.deployment.endpoint import DeploymentError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
DOCKERFILE = DEPLOY_DIR / "Dockerfile.serving"
BASE_IMAGE_SCRIPT = DEPLOY_DIR / "build-base-image.sh"
BASE_IMAGE = "ct-platform-base:bookworm"
# Wheels for the container: CPython 3.11 on glibc x86_64. Bookworm ships glibc 2.36, so any
# manylinux tag up to 2.36 runs; pip matches `--platform` tags literally, hence the list.
WHEEL_PLATFORM_TAGS = [
    "manylinux2014_x86_64",
    *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)),
]


class ImageBuildError(DeploymentError):
    """The serving image (or its base) could not be built; the message says which step."""


def serving_requirements() -> list[str]:
    """`name==version` for the `serving` extra and everything it pulls in, as installed here."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pending = [
        Requirement(line) for line in pyproject["project"]["optional-dependencies"]["serving"]
    ]
    pinned: dict[str, str] = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in pinned:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ImageBuildError(f"serving dependency {name} is not installed here") from None
        pinned[name] = distribution.version
        pending.extend(_runtime_dependencies(distribution, requirement.extras))
    return sorted(f"{name}=={version}" for name, version in pinned.items())


def _runtime_dependencies(
    distribution: importlib.metadata.Distribution, extras: set[str]
) -> list[Requirement]:
    # Evaluate markers for the container: Linux, CPython 3.11, with the requested extras.
    wanted = []
    for line in distribution.requires or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(
            marker.evaluate(_container_environment(extra)) for extra in (extras or {""})
        ):
            wanted.append(requirement)
    return wanted


def _container_environment(extra: str) -> dict[str, str]:
    return {
        "extra": extra,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "python_version": "3.11",
        "python_full_version": "3.11.2",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def source_tag(tag: str, requirements: list[str] | None = None) -> str:
    """`<tag's repository>:src-<hash>`: the tag of the image built from the serving sources
    and requirements here (the image a deploy would run now)."""
    repository, _ = parse_repository_tag(tag)
    return f"{repository}:src-{_source_hash(requirements or serving_requirements())}"


def ensure_serving_image(client: docker.DockerClient, tag: str) -> str:
    """Build `tag` unless an image with the same inputs exists; returns the image id."""
    requirements = serving_requirements()
    repository, version_tag = parse_repository_tag(tag)
    wanted = source_tag(tag, requirements)
    try:
        image = client.images.get(wanted)
    except ImageNotFound:
        image = _build(client, wanted, requirements)
        _remove_older_builds(client, repository, keep=wanted)
    image.tag(repository, version_tag or "latest")  # the configured tag follows the sources
    return image.id


def _remove_older_builds(client: docker.DockerClient, repository: str, keep: str) -> None:
    """Drop the images of earlier sources: on vfs each one holds a full filesystem copy.

    An image a container still runs from is kept (the engine refuses with a conflict); the
    untagged deps stage is not touched either, it is the build cache for the next change.
    """
    for image in client.images.list(name=repository):
        for tag in image.tags:
            if tag.startswith(f"{repository}:src-") and tag != keep:
                with contextlib.suppress(APIError):
                    client.images.remove(tag)


def _build(client: docker.DockerClient, tag: str, requirements: list[str]) -> Image:
    ensure_base_image(client)
    context = _build_context(requirements)
    try:
        image, _ = client.images.build(
            path=str(context),
            dockerfile="Dockerfile",
            tag=tag,
            buildargs={"BASE_IMAGE": BASE_IMAGE},
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        log = "".join(chunk.get("stream", "") for chunk in exc.build_log)
        raise ImageBuildError(f"docker build of {tag} failed: {exc}\n{log[-3000:]}") from None
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return image


def ensure_base_image(client: docker.DockerClient) -> None:
    try:
        client.images.get(BASE_IMAGE)
        return
    except ImageNotFound:
        pass
    result = subprocess.run(
        [str(BASE_IMAGE_SCRIPT), BASE_IMAGE], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ImageBuildError(
            f"{BASE_IMAGE_SCRIPT.name} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )


def _source_hash(requirements: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(BASE_IMAGE.encode())
    digest.update("\n".join(requirements).encode())
    for path in [DOCKERFILE, *_server_sources()]:
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _server_sources() -> list[Path]:
    """`ct_platform/serving/` plus every ct_platform module it imports, transitively.

    Found by reading the import statements (not by importing: that would need the
    dependencies), so a helper the server borrows from another package (e.g.
    `registry.skops_types`) ships with it and nothing else does.
    """
    pending = sorted((REPO_ROOT / "ct_platform" / "serving").rglob("*.py"))
    found: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in found:
            continue
        found.add(path)
        pending.extend(_package_inits(path))
        pending.extend(_imported_files(path))
    return sorted(found)


def _imported_files(path: Path) -> list[Path]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from package import name`: name may be a submodule or an attribute.
            modules.append(node.module)
            modules.extend(f"{node.module}.{alias.name}" for alias in node.names)
    files = []
    for module in modules:
        if module.split(".")[0] != "ct_platform":
            continue
        base = REPO_ROOT.joinpath(*module.split("."))
        files.extend(c for c in (base.with_suffix(".py"), base / "__init__.py") if c.is_file())
    return files


def _package_inits(path: Path) -> list[Path]:
    package_root = REPO_ROOT / "ct_platform"
    return [
        folder / "__init__.py"
        for folder in [path.parent, *path.parent.parents]
        if folder.is_relative_to(package_root) and (folder / "__init__.py").is_file()
    ]


def _build_context(requirements: list[str]) -> Path:
    """A small build context: Dockerfile, requirements, wheels and the server's sources."""
    wheels = _cached_wheels(requirements)
    context = Path(os.environ.get("TMPDIR", "/tmp")) / f"ct-serving-build-{os.getpid()}"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copy(DOCKERFILE, context / "Dockerfile")
    (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
    # Hard links when the cache is on the same filesystem: no copy of ~100 MB of wheels.
    shutil.copytree(wheels, context / "wheels", copy_function=_link_or_copy)
    for source in _server_sources():
        target = context / source.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    return context


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _cached_wheels(requirements: list[str]) -> Path:
    """Download the pinned wheels once per requirement set, into a persistent cache."""
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:16]
    directory = _cache_root() / "wheels" / key
    if (directory / ".complete").exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    command = [
        *_pip_command(),
        "download",
        "--only-binary=:all:",
        "--no-deps",  # the list is already the whole closure, pinned
        "--python-version",
        "3.11",
        *(option for tag in WHEEL_PLATFORM_TAGS for option in ("--platform", tag)),
        "--dest",
        str(directory),
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageBuildError(f"pip download of serving wheels failed:\n{result.stderr[-3000:]}")
    (directory / ".complete").touch()
    return directory


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ct-platform"


def _pip_command() -> list[str]:
    # A uv-made venv has no pip; uv can run one without installing it anywhere.
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    if shutil.which("uv"):
        return ["uv", "tool", "run", "pip"]
    if shutil.which("pip3"):
        return ["pip3"]
    raise ImageBuildError("no pip found to download the serving wheels (install pip or uv)")
