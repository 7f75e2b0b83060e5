"""A thin layer over the MLflow client: runs, registered versions, aliases, fingerprints.

One training run = one MLflow run = one registered version of `model.name`. A version is
found again by its training-set fingerprint (tag `fingerprint`), so re-materialising the
same data does not register a duplicate. Aliases carry the lifecycle: `challenger` is the
newest candidate that may still become champion (it is removed when a gate or a person
rejects it, and when it becomes champion), `champion` the one serving.

Models are stored with skops and loaded back with the explicit allowlist from
`skops_types`, never with pickle and never trusting the type list stored in the model's own
MLmodel file. mlflow is imported here only (it is slow to import and serving never needs it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ct_platform.registry.versions import (
    CHALLENGER,
    CHAMPION,
    DAGSTER_RUN_TAG,
    REFIT_OF_TAG,
    ModelVersionInfo,
    RunRecord,
)
from ct_platform.settings import Paths

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.data.pandas_dataset import PandasDataset
    from sklearn.pipeline import Pipeline

# Local-first platform: no usage telemetry leaves the machine unless the user opts in by
# setting the variable themselves. Must be set before mlflow is imported. Likewise no
# progress bars on stderr when a model is downloaded for loading.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# Only what reading the registry needs: scikit-learn, skops, pandas and MLflow's sklearn
# flavour are imported by the methods that log or load a model (`ct status` and the other
# read-only commands took tens of seconds importing them on a busy box).
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.store.db.db_types import DATABASE_ENGINES

FINGERPRINT_TAG = "fingerprint"
DAGSTER_RUN_URL_TAG = "dagster.run_url"
# MLflow's own tag for a run's description (shown, as Markdown, on the run page).
RUN_NOTE_TAG = "mlflow.note.content"
# Why a run was ended as FAILED by the platform rather than by its own process.
FAILED_REASON_TAG = "ct.failed_reason"
MODEL_ARTIFACT = "model"
# The file the sklearn flavour writes a skops-serialised model to, inside MODEL_ARTIFACT.
SKOPS_FILE = "model.skops"
# The artifact folder of a non-SQLite database store (PostgreSQL) the platform opens itself.
ARTIFACT_ROOT_VARIABLE = "CT_MLFLOW_ARTIFACT_ROOT"
# Rows of the training frame used to infer the signature.
SIGNATURE_SAMPLE_ROWS = 20


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite store under `<CT_HOME>/mlflow/`.

    The default is SQLAlchemy's form for an absolute file: `sqlite:////abs/path/mlflow.db`.
    """
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    database = Paths.from_env().mlflow / "mlflow.db"
    return URL.create("sqlite", database=str(database)).render_as_string()


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a SQLite tracking URI (absolute); None for any other store.

    Read by SQLAlchemy's own rules, as MLflow's store opens it: `sqlite:////abs/x.db` is
    `/abs/x.db`, `sqlite:///rel/x.db` is `rel/x.db` under the working directory, and an
    in-memory database (`sqlite://`, `sqlite:///:memory:`) has no file.
    """
    try:
        url = make_url(tracking_uri)
    except ArgumentError:  # not a database URL at all (a path, a scheme SQLAlchemy lacks)
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).resolve()


def sqlite_artifact_root(tracking_uri: str) -> Path | None:
    """For a SQLite store, the `artifacts/` folder next to the database; else None."""
    database = sqlite_database(tracking_uri)
    return None if database is None else database.parent / "artifacts"


def database_backend(tracking_uri: str) -> str | None:
    """The database of a tracking URI MLflow opens as a database store, else None.

    `postgresql://u:p@host/db` (or `postgresql+psycopg2://...`) is "postgresql", a SQLite
    URL "sqlite"; a tracking server (`http://...`), a folder or `databricks` are None.
    """
    try:
        backend = make_url(tracking_uri).get_backend_name()
    except ArgumentError:
        return None
    return backend if backend in DATABASE_ENGINES else None


def store_artifact_root(tracking_uri: str) -> Path | None:
    """Where a database store the platform opens directly keeps its artifacts; else None.

    SQLite: `artifacts/` next to the database file. Another database (PostgreSQL):
    `CT_MLFLOW_ARTIFACT_ROOT`, else `<CT_HOME>/mlflow/artifacts`; every process that trains
    or loads a model must see that folder (on several machines: a shared file system, or
    use a tracking server with `--serve-artifacts` instead). A tracking server decides its
    own artifact root: None. Without a root MLflow would use ./mlruns in the cwd.
    """
    sqlite_root = sqlite_artifact_root(tracking_uri)
    if sqlite_root is not None or database_backend(tracking_uri) in (None, "sqlite"):
        return sqlite_root
    configured = os.environ.get(ARTIFACT_ROOT_VARIABLE)
    return Path(configured).resolve() if configured else Paths.from_env().mlflow / "artifacts"


def _artifacts_url(experiment_id: str, run_id: str) -> str:
    return f"{mlflow_ui_url()}/#/experiments/{experiment_id}/runs/{run_id}/artifacts"


def mlflow_ui_url() -> str:
    """Base URL of the MLflow UI: `MLFLOW_UI_URL`, else the demo's (port `MLFLOW_PORT`)."""
    default = f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT', '5000')}"
    return os.environ.get("MLFLOW_UI_URL", default).rstrip("/")


def dagster_run_url(run_id: str) -> str:
    """The Dagster UI page of a run: `DAGSTER_WEBSERVER_URL` (else the demo's) + /runs/<id>."""
    default = f"http://127.0.0.1:{os.environ.get('DAGSTER_PORT', '3000')}"
    return f"{os.environ.get('DAGSTER_WEBSERVER_URL', default).rstrip('/')}/runs/{run_id}"


class ChampionAliasError(ValueError):
    """`champion` moved (or removed) other than by `governance.lifecycle.set_champion`."""


def _refuse_champion(alias: str, done: str) -> None:
    if alias == CHAMPION:
        raise ChampionAliasError(
            f"the '{CHAMPION}' alias is not {done} directly: move it with "
            "governance.lifecycle.set_champion(registry, version, spec, event), which records "
            "the promotion in the audit trail and moves the drift reference with it"
        )


class GateVerdict(Protocol):
    """One gate's outcome as the registry records it (e.g. `training.gates.GateResult`)."""

    @property
    def name(self) -> str: ...
    @property
    def passed(self) -> bool: ...
    @property
    def blocking(self) -> bool: ...
    @property
    def description(self) -> str:
        """Why it passed or failed, with the figures."""
        ...


class ModelRegistry:
    def __init__(self, tracking_uri: str, model_name: str, experiment: str) -> None:
        if "'" in model_name:
            raise ValueError(f"model name must not contain quotes: {model_name!r}")
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.experiment = experiment
        self._artifact_root = store_artifact_root(tracking_uri)
        if self._artifact_root is not None:
            _initialise_database_store(tracking_uri, self._artifact_root)
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.experiment_id = self._ensure_experiment()

    # --- lookups -------------------------------------------------------------------------

    def find_version_by_fingerprint(self, fingerprint: str) -> ModelVersionInfo | None:
        """The newest holdout fit trained on data with this fingerprint, if any.

        A whole-window refit shares its holdout fit's fingerprint but carries no verdict of
        its own making: it is found with `find_refit`, never here.
        """
        fits = [v for v in self._by_fingerprint(fingerprint) if not v.is_refit]
        return max(fits, key=lambda v: v.version, default=None)

    def find_refit(self, holdout_fit: ModelVersionInfo) -> ModelVersionInfo | None:
        """The newest whole-window refit of `holdout_fit` (tag `ct.refit_of`), if any."""
        refits = [
            v
            for v in self._by_fingerprint(holdout_fit.fingerprint or "")
            if v.is_refit and v.tags.get(REFIT_OF_TAG) == str(holdout_fit.version)
        ]
        return max(refits, key=lambda v: v.version, default=None)

    def newest_version(self) -> ModelVersionInfo | None:
        """The highest-numbered version of the model, whatever its fit or verdict."""
        found = self._client.search_model_versions(f"name = '{self.model_name}'")
        return self.version(max(int(v.version) for v in found)) if found else None

    def _by_fingerprint(self, fingerprint: str) -> list[ModelVersionInfo]:
        if "'" in fingerprint:
            raise ValueError(f"fingerprint must not contain quotes: {fingerprint!r}")
        versions = self._client.search_model_versions(
            f"name = '{self.model_name}' AND tags.{FINGERPRINT_TAG} = '{fingerprint}'"
        )
        return [self._describe(v) for v in versions]

    def versions(self) -> list[ModelVersionInfo]:
        """Every registered version of the model, oldest first."""
        found = self._client.search_model_versions(f"name = '{self.model_name}'")
        # Searches do not return aliases: read each version for them.
        return [self.version(n) for n in sorted(int(v.version) for v in found)]

    def version(self, version: int) -> ModelVersionInfo:
        return self._describe(self._client.get_model_version(self.model_name, str(version)))

    def version_description(self, version: int) -> str:
        """The version's description (the gate verdict `describe_verdict` wrote), or ""."""
        found = self._client.get_model_version(self.model_name, str(version))
        return found.description or ""

    def run_record(self, run_id: str) -> RunRecord:
        """`run_id`'s parameters (spec and model parameters), tags and artifact page, in one
        read of the run."""
        run = self._client.get_run(run_id)
        return RunRecord(
            params=dict(run.data.params),
            tags=dict(run.data.tags),
            artifacts_url=_artifacts_url(run.info.experiment_id, run_id),
        )

    def alias_version(self, alias: str) -> ModelVersionInfo | None:
        """The version `alias` points at; None if unset or nothing is registered yet."""
        try:
            registered = self._client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise
        version = registered.aliases.get(alias)
        return None if version is None else self.version(int(version))

    # --- writes --------------------------------------------------------------------------

    def log_candidate(
        self,
        model: Pipeline,
        *,
        train: pd.DataFrame,
        params: Mapping[str, object],
        metrics: Mapping[str, float],
        fingerprint: str,
        dagster_run_id: str | None,
        tags: Mapping[str, str] | None = None,
        version_tags: Mapping[str, str] | None = None,
    ) -> ModelVersionInfo:
        """Log one training run, register its model as a new version, alias it `challenger`.

        `tags` go on the run and the version, `version_tags` on the version only (written
        with it: MLflow writes each tag set later in a transaction of its own, after reading
        the whole registered model). `params` are the caller's (spec) parameters; the
        model's own scalar parameters are added under their scikit-learn names (e.g.
        `estimator__max_iter`). The signature
        describes raw rows as the data has them (integer columns as long, the
        sentinel pdays=999 as such): the model's preparation step cleans them. The run and
        the version link the Dagster run that trained them (tags `dagster.run_id`/`_url`).
        """
        import mlflow.sklearn
        from mlflow.models import infer_signature

        from ct_platform.registry import skops_types
        from ct_platform.training.preparation import raw_like

        trusted_types = skops_types.skops_trusted_types(model)
        # Typed over the whole frame, converted on the signature's rows only: a converted
        # copy of a 1,000,000-row window held hundreds of MB at the refit's peak.
        features = train[list(model.feature_names_in_)]
        sample = raw_like(features, model, head=SIGNATURE_SAMPLE_ROWS)
        common_tags = {FINGERPRINT_TAG: fingerprint, **(tags or {})}
        if dagster_run_id is not None:
            common_tags[DAGSTER_RUN_TAG] = dagster_run_id
            common_tags[DAGSTER_RUN_URL_TAG] = dagster_run_url(dagster_run_id)
        trained_by = _trained_by(common_tags)
        with self._fluent(), _quiet_mlflow():
            with mlflow.start_run(
                experiment_id=self.experiment_id,
                run_name=f"{self.model_name}-{fingerprint[:12]}",
                tags={**common_tags, RUN_NOTE_TAG: trained_by},
            ) as run:
                mlflow.log_params({**_scalar_params(model), **_stringified(params)})
                mlflow.log_metrics(dict(metrics))
                mlflow.log_input(_dataset_input(train), context="training")
                logged = mlflow.sklearn.log_model(
                    model,
                    name=MODEL_ARTIFACT,
                    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
                    skops_trusted_types=trusted_types,
                    signature=infer_signature(sample, model.predict(sample)),
                    # No input example: with one, log_model loads the saved model back
                    # through pyfunc and predicts it (the sklearn flavour has no switch for
                    # that). The signature states the input; `load_model` reads the stored
                    # model back in the next step anyway.
                    # Stated, not inferred: inference re-imports the model in a subprocess.
                    pip_requirements=mlflow.sklearn.get_default_pip_requirements(
                        include_skops=True
                    ),
                )
            # Through our client: mlflow.register_model prints to stderr.
            self._ensure_registered_model()
            registered = self._client.create_model_version(
                self.model_name,
                source=logged.model_uri,
                run_id=run.info.run_id,
                tags={**(version_tags or {}), **common_tags},
                description=f"Candidate, not yet evaluated. {trained_by}",
                model_id=logged.model_id,
            )
        self.set_alias(CHALLENGER, int(registered.version))
        return self.version(int(registered.version))

    def describe_verdict(
        self, version: int, *, promotable: bool, gates: Sequence[GateVerdict]
    ) -> None:
        """Write the gate reasons, with their figures, into the version's description.

        A rejected version (a blocking gate failed) loses the `challenger` alias if it still
        holds it: `challenger` names a candidate that may still become champion.
        """
        found = self._client.get_model_version(self.model_name, str(version))
        self._client.update_model_version(
            self.model_name, str(version), description=_verdict_text(promotable, gates, found.tags)
        )
        if not promotable:
            self.drop_challenger(version)

    def artifact_view_url(self, run_id: str, artifact_path: str | None = None) -> str:
        """The MLflow UI page showing `run_id`'s artifacts (opened at `artifact_path`).

        The route of MLflow 3's UI: `#/experiments/<id>/runs/<run>/artifacts[/<path>]`.
        """
        url = _artifacts_url(self._client.get_run(run_id).info.experiment_id, run_id)
        return f"{url}/{artifact_path}" if artifact_path else url

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None
    ) -> None:
        """Log `metrics` (and run `tags`, e.g. how a metric was computed) in one batch."""
        timestamp = int(datetime.now(UTC).timestamp() * 1000)
        batch = [Metric(key, float(value), timestamp, 0) for key, value in metrics.items()]
        run_tags = [RunTag(key, str(value)) for key, value in (tags or {}).items()]
        self._client.log_batch(run_id, metrics=batch, tags=run_tags)

    def download_artifact(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """Copy one artifact of `run_id` into `destination`; its local path."""
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=str(destination),
            tracking_uri=self.tracking_uri,
        )
        return Path(local)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, version: int, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_model_version_tag(self.model_name, str(version), key, str(value))

    def set_alias(self, alias: str, version: int) -> None:
        """Point `alias` at `version` (an alias names one version: it moves, never copies).

        Raises `ChampionAliasError` for `champion`: it moves only through
        `governance.lifecycle.set_champion`, which records the move and moves the drift
        reference with it.
        """
        _refuse_champion(alias, "set")
        self._client.set_registered_model_alias(self.model_name, alias, str(version))

    def _point_champion(self, version: int) -> None:
        """Move `champion` to `version`, which stops being the `challenger`. Called by
        `governance.lifecycle.set_champion` only (every move of `champion`: promotion, a
        completed rollout, a rollback), which records it and moves the drift reference."""
        self._client.set_registered_model_alias(self.model_name, CHAMPION, str(version))
        self.drop_challenger(version)

    def drop_challenger(self, version: int) -> None:
        """Remove `challenger` if `version` holds it (rejected, or champion now)."""
        self.drop_alias_of(CHALLENGER, version)

    def drop_alias_of(self, alias: str, version: int) -> None:
        """Remove `alias` if `version` still holds it. Another version may hold it by now
        (approved while this one rolled out) and keeps it. `champion` is refused
        (`ChampionAliasError`): a serving model is replaced, never unset."""
        _refuse_champion(alias, "removed")
        holder = self._client.get_registered_model(self.model_name).aliases.get(alias)
        if holder is not None and int(holder) == version:
            self._client.delete_registered_model_alias(self.model_name, alias)

    def delete_alias(self, alias: str) -> None:
        """Remove `alias` from whichever version holds it; nothing happens if none does.
        `champion` is refused (`ChampionAliasError`), as in `drop_alias_of`."""
        _refuse_champion(alias, "removed")
        if self.alias_version(alias) is not None:
            self._client.delete_registered_model_alias(self.model_name, alias)

    # --- models --------------------------------------------------------------------------

    def load_model(self, version: int) -> Pipeline:
        """The fitted pipeline of `version`, read with skops and our allowlist only."""
        import mlflow.sklearn
        from mlflow.models import Model

        from ct_platform.registry import skops_types

        with tempfile.TemporaryDirectory(prefix="ct-model-") as folder, self._fluent():
            source = self._client.get_model_version_download_uri(self.model_name, str(version))
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=folder, tracking_uri=self.tracking_uri
            )
            flavor = Model.load(local).flavors["sklearn"]
            if flavor.get("serialization_format") != mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS:
                raise skops_types.UntrustedModelError(
                    f"version {version} is not stored with skops; refusing to unpickle it"
                )
            return skops_types.load(Path(local) / flavor["pickled_model"])

    def model_size_bytes(self, version: int) -> int:
        """Size in bytes of `version`'s stored model file (the skops bytes MLflow wrote).

        Read from the artifact listing, so the model is neither serialised again nor
        downloaded. Raises `MlflowException` if the version's model has no skops file.
        """
        source = self._client.get_model_version_download_uri(self.model_name, str(version))
        with self._fluent():
            listed = mlflow.artifacts.list_artifacts(
                artifact_uri=source, tracking_uri=self.tracking_uri
            )
        for entry in listed:
            if Path(entry.path).name == SKOPS_FILE:
                return int(entry.file_size)
        raise MlflowException(f"version {version} of '{self.model_name}' has no {SKOPS_FILE}")

    # --- crash recovery ------------------------------------------------------------------

    def running_runs(self) -> list[tuple[str, dict[str, str]]]:
        """`(run id, tags)` of every run of this experiment still marked RUNNING."""
        runs = self._client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING'"
        )
        return [(run.info.run_id, dict(run.data.tags)) for run in runs]

    def mark_run_failed(self, run_id: str, reason: str) -> None:
        """End a run left RUNNING by a dead process as FAILED, with `reason` as tag."""
        self._client.set_tag(run_id, FAILED_REASON_TAG, reason)
        self._client.set_terminated(run_id, status="FAILED")

    # --- internals -----------------------------------------------------------------------

    def _ensure_experiment(self) -> str:
        existing = self._client.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        location = None
        if self._artifact_root is not None:
            location = (self._artifact_root / self.experiment).as_uri()
        try:
            return self._client.create_experiment(self.experiment, artifact_location=location)
        except MlflowException as exc:
            # Another process (e.g. a parallel Dagster step) created it first.
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            return self._client.get_experiment_by_name(self.experiment).experiment_id

    def _ensure_registered_model(self) -> None:
        try:
            self._client.create_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise

    def _describe(self, found: ModelVersion) -> ModelVersionInfo:
        run = self._client.get_run(found.run_id)
        return ModelVersionInfo(
            name=found.name,
            version=int(found.version),
            run_id=found.run_id,
            fingerprint=found.tags.get(FINGERPRINT_TAG),
            metrics=dict(run.data.metrics),
            created_at=datetime.fromtimestamp(found.creation_timestamp / 1000, tz=UTC),
            aliases=sorted(found.aliases),
            tags=dict(found.tags),
        )

    @contextmanager
    def _fluent(self) -> Iterator[None]:
        """Point MLflow's process-global tracking URI at this store for one block.

        The fluent API (`start_run`, `sklearn.log_model`) only uses the global URI, and so
        does MLflow internally when it resolves a `models:/<model id>` source. Setting it also
        sets the MLFLOW_TRACKING_URI variable, so restore exactly what was there (or nothing):
        restoring `get_tracking_uri()` would pin MLflow's default (./mlflow.db) in it.
        """
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # None unsets both the global and the variable


def _initialise_database_store(tracking_uri: str, artifact_root: Path) -> None:
    """Create (migrate) a new database store whose default experiment keeps artifacts in
    `artifact_root`.

    The client builds its store with MLflow's default root (./mlruns relative to the cwd);
    creating the database ourselves first fixes the default experiment's location. Under
    a file lock: Dagster runs steps in parallel processes, and two of them migrating the
    same fresh database at once would collide (and one half-made is not ready to use). For
    a database server the lock covers this machine's processes; several machines sharing
    one fresh database should let a tracking server (`mlflow server`) migrate it first.
    """
    database = sqlite_database(tracking_uri)
    if database is None and tracking_uri in _initialised_stores:
        return
    lock_folder = Paths.from_env().mlflow if database is None else database.parent
    lock_folder.mkdir(parents=True, exist_ok=True)
    lock_name = "server-store.init-lock" if database is None else database.name + ".init-lock"
    with open(lock_folder / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if database is None or not database.exists():
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            artifact_root.mkdir(parents=True, exist_ok=True)
            with _quiet_mlflow():
                SqlAlchemyStore(tracking_uri, artifact_root.as_uri()).engine.dispose()
        if database is not None:
            _use_write_ahead_log(database)
    if database is None:
        _initialised_stores.add(tracking_uri)


def _use_write_ahead_log(database: Path) -> None:
    """Put a SQLite store in write-ahead-log mode (kept in the file: one switch per store).

    SQLite's default rollback journal makes every commit write, sync and delete a journal
    file beside the database; a training run writes about 60 times (runs, params,
    metrics, versions, tags, aliases), 15-55 ms each on a busy disk against 1-13 ms with
    the log (benchmarks/training/README.md, sixth round). Each commit is still synced to
    the log before it returns (the default `synchronous=FULL`), so nothing committed is
    lost; readers (the MLflow UI, sensors) no longer block the writer. A store another
    process is writing right now keeps its mode until the next registry opens it.
    """
    import sqlite3

    connection = sqlite3.connect(database, timeout=1.0)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # locked by a writer: switched on a later open
        pass
    finally:
        connection.close()


# Database servers this process has already migrated (a round trip each time otherwise).
_initialised_stores: set[str] = set()


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's chatty INFO/WARNING lines (table creation, pip version notes).

    Also two warnings about MLflow's own code, not ours: its hint that an integer schema
    cannot hold missing values (our integer output is the predicted label, never missing;
    integer inputs are long on purpose, as raw rows have them, and a column the training
    data holds missing values in is typed double by `preparation.raw_like`) and pandas 3
    deprecating how MLflow's dataset digest calls `DataFrame.all`.
    """
    logger = logging.getLogger("mlflow")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            warnings.filterwarnings("ignore", message="Starting with pandas version 4.0")
            yield
    finally:
        logger.setLevel(previous)


def _dataset_input(train: pd.DataFrame) -> PandasDataset:
    """`train` as the run's MLflow dataset input: its name, digest, source, row count, schema.

    MLflow infers a dataset's schema value by value in Python over every row (16 s for 36,000
    rows on a busy box, minutes for a million). The same inference on representative rows
    gives the same schema, because each column holds one type throughout (the data contract
    typed it) and is optional exactly when some row misses it: kept are the first rows and,
    for every column, its first present and its first missing value.
    """
    import mlflow.data
    import numpy as np

    dataset = mlflow.data.from_pandas(train)
    missing = train.isna().to_numpy()
    has_missing = missing.any(axis=0)
    rows = np.union1d(
        np.arange(min(len(train), SIGNATURE_SAMPLE_ROWS)),
        np.concatenate([(~missing).argmax(axis=0), missing.argmax(axis=0)[has_missing]]),
    )
    # `schema` is a cached property: filled here, it is not inferred again over every row.
    dataset.__dict__["schema"] = mlflow.data.from_pandas(train.iloc[rows]).schema
    return dataset


def _trained_by(tags: Mapping[str, str]) -> str:
    url = tags.get(DAGSTER_RUN_URL_TAG)
    if url is None:
        return "Not trained by a Dagster run."
    return f"Trained by Dagster run [{tags[DAGSTER_RUN_TAG]}]({url})."


def _verdict_text(promotable: bool, gates: Sequence[GateVerdict], tags: Mapping[str, str]) -> str:
    """Markdown: the verdict, one line per gate with its figures, the Dagster run."""
    failed = [gate.name for gate in gates if gate.blocking and not gate.passed]
    headline = (
        "**Promotable**: every blocking gate passed."
        if promotable
        else f"**Rejected**: blocking gate(s) failed: {', '.join(failed)}."
    )
    lines = [
        f"- {gate.name}: {'pass' if gate.passed else 'FAIL'}"
        f" ({'blocking' if gate.blocking else 'warning only'}): {gate.description}"
        for gate in gates
    ]
    return "\n".join([headline, "", *lines, "", _trained_by(tags)])


def _scalar_params(model: Pipeline) -> dict[str, str]:
    """The model's parameters that are plain values (nested estimators are left out)."""
    plain = (str, int, float, bool, type(None))
    return {k: str(v) for k, v in model.get_params().items() if isinstance(v, plain)}


def _stringified(params: Mapping[str, object]) -> dict[str, str]:
    return {key: str(value) for key, value in params.items()}
