"""MLServer and BentoML, each in its own virtual environment, serving the same sklearn model.

The environments live outside the repository (`CT_BENCH_ENVS`, default
`~/.cache/ct-bench-envs/`), one folder per peer and requirement set, created with `uv` on the
first run and reused after. They pin the scikit-learn and numpy versions of this venv: the
peers load the fitted pipeline from a joblib file (their native format), which only loads
faithfully with the versions that wrote it. That file exists only inside the benchmark's
temporary folder; the platform itself never pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV_ROOT = Path(os.environ.get("CT_BENCH_ENVS", Path.home() / ".cache" / "ct-bench-envs"))
MODEL_NAME = "bank_marketing"
# MLServer 1.7.1 does not start with uvloop 0.22 (its event-loop policy call changed).
MLSERVER_REQUIREMENTS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]
BENTOML_REQUIREMENTS = ["bentoml>=1.4,<1.5", "pandas"]
# The thread pools a single-row sklearn call may start: OpenMP (HistGradientBoosting),
# OpenBLAS / MKL (numpy), and BentoML's own hint for user code.
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "BENTOML_NUM_THREAD": "1",
}


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or prepared; the message says why."""


@dataclass(frozen=True)
class PeerEnv:
    """A peer's virtual environment: `python` and `bin` of a ready venv."""

    folder: Path

    @property
    def bin(self) -> Path:
        return self.folder / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"


def peer_env(name: str, requirements: list[str]) -> PeerEnv:
    """The ready venv for `name` with `requirements` (plus our sklearn and numpy pins).

    Raises PeerUnavailable with uv's last lines if the venv cannot be created.
    """
    pins = [*requirements, f"scikit-learn=={version('scikit-learn')}", f"numpy=={version('numpy')}"]
    digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:10]
    env = PeerEnv(ENV_ROOT / f"{name}-{digest}")
    ready = env.folder / ".ready"
    if ready.exists():
        return env
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    print(f"creating {env.folder} ({', '.join(pins)})", file=sys.stderr)
    shutil.rmtree(env.folder, ignore_errors=True)  # a half-built env from an interrupted run
    ENV_ROOT.mkdir(parents=True, exist_ok=True)
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(env.folder)], name)
    _run([uv, "pip", "install", "--quiet", "--python", str(env.python), *pins], name)
    ready.write_text(json.dumps(pins))
    return env


def _run(command: list[str], peer: str, **kwargs: object) -> None:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise PeerUnavailable(f"{peer}: `{' '.join(command[:4])} ...` failed: {tail}")


def mlserver_folder(model_joblib: Path, work: Path) -> Path:
    """A folder `mlserver start` serves: the model file and its model-settings.json."""
    folder = work / "mlserver"
    folder.mkdir()
    shutil.copy(model_joblib, folder / "model.joblib")
    settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return folder


def bentoml_home(env: PeerEnv, model_joblib: Path, work: Path) -> Path:
    """A BENTOML_HOME whose model store holds the pipeline (`bentoml.sklearn.save_model`)."""
    home = work / "bentoml"
    save = (
        "import sys, joblib, bentoml\n"
        f"bentoml.sklearn.save_model({MODEL_NAME!r}, joblib.load(sys.argv[1]))\n"
    )
    _run(
        [str(env.python), "-c", save, str(model_joblib)],
        "BentoML",
        env={**os.environ, "BENTOML_HOME": str(home)},
    )
    shutil.copy(HERE / "bento_service.py", work / "bento_service.py")
    return home
