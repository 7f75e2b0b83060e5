"""Step outputs as JSON, one file per run: never pickle, never the shared latest value.

Dagster's default IO manager pickles every output under `DAGSTER_HOME/storage/<asset>` and
unpickles it in the next step, so a file planted there runs code; and that one file per asset
is overwritten by whichever run wrote last, so a step of one run could read another run's
value. This IO manager stores the small typed refs the assets pass (`TrainingSetRef`,
`ModelVersionInfo`, `EvaluationOutcome`, `RefitOutcome`) as JSON at
`<storage>/ct-json/<asset key>/<run id>.json`, validated back into their dataclass by
pydantic. Only types in `STEP_OUTPUT_TYPES` are written or read.

Which file an input reads:
- the upstream step is in this run's plan: the file of the run that produced it (this run,
  or the parent run of a re-execution);
- otherwise (e.g. a reports run started by automation): the file of the run that recorded the
  asset's latest materialization, so the value always matches the event the UI shows. Assets
  that must not mix runs take everything from one upstream value (an `EvaluationOutcome`
  carries its own `TrainingSetRef`).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import dagster as dg

from ct_platform.atomic import write_atomically
from ct_platform.defs.platform_tags import record_platform
from ct_platform.defs.run_workers import record_process_namespace

# The only types a step output may have: name -> "module:class". Imported on use only, so
# loading the code location never imports pandas or mlflow through these modules.
STEP_OUTPUT_TYPES = {
    "TrainingSetRef": "ct_platform.training.datasets:TrainingSetRef",
    "ModelVersionInfo": "ct_platform.registry.versions:ModelVersionInfo",
    "EvaluationOutcome": "ct_platform.training.promotion:EvaluationOutcome",
    "RefitOutcome": "ct_platform.training.refit:RefitOutcome",
}
FORMAT = 1
PICKLE_PROTOCOL_MARK = 0x80


class StepOutputError(RuntimeError):
    """A stored step output is missing, not our JSON, or of a type that is not registered."""


def registered_type(name: str) -> type:
    """The class registered under `name`; StepOutputError for any other name."""
    target = STEP_OUTPUT_TYPES.get(name)
    if target is None:
        raise StepOutputError(
            f"step output type {name!r} is not registered for JSON storage "
            f"(registered: {', '.join(sorted(STEP_OUTPUT_TYPES))})"
        )
    module, _, qualname = target.partition(":")
    return getattr(importlib.import_module(module), qualname)


def encode(value: object) -> bytes:
    """`{"format", "type", "value"}` as JSON bytes; NaN is kept (metrics can be undefined)."""
    from pydantic import TypeAdapter

    name = type(value).__name__
    if registered_type(name) is not type(value):
        raise StepOutputError(f"{type(value)!r} is not the registered {name}")
    plain = TypeAdapter(type(value)).dump_python(value, mode="json")
    return json.dumps({"format": FORMAT, "type": name, "value": plain}, indent=1).encode()


def decode(raw: bytes, source: str) -> object:
    """The value encoded by `encode`; StepOutputError naming `source` for anything else."""
    from pydantic import TypeAdapter, ValidationError

    if raw[:1] == bytes([PICKLE_PROTOCOL_MARK]):
        raise StepOutputError(
            f"{source} is a pickle, not a JSON step output: refusing to load it "
            "(ct-platform never unpickles); delete it and re-materialize the asset"
        )
    try:
        envelope = json.loads(raw)
        name, plain = envelope["type"], envelope["value"]
    except (ValueError, TypeError, KeyError) as exc:
        raise StepOutputError(f"{source} is not a JSON step output: {exc}") from None
    try:
        return TypeAdapter(registered_type(name)).validate_python(plain)
    except ValidationError as exc:
        raise StepOutputError(f"{source} does not hold a valid {name}: {exc}") from None


class JsonIOManager(dg.ConfigurableIOManager):
    """Typed step outputs as JSON files, one per asset and run (see the module docstring).

    `base_dir` defaults to the Dagster instance's storage folder (`DAGSTER_HOME/storage`).
    `model`: the spec's model name, tagged on every run with CT_HOME (`platform_tags`).
    """

    base_dir: str | None = None
    model: str | None = None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every step process sets its IO manager up: it says where its pids live, so a run
        # killed with -9 can be told dead on this machine only (`run_workers`).
        if context.instance is not None and context.dagster_run is not None:
            record_process_namespace(context.instance, context.dagster_run)
            # And which platform it belongs to, so `ct` commands can refuse to mix two.
            if self.model is not None:
                record_platform(context.instance, context.dagster_run, self.model)

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        path = self._path(context.step_context.instance, context.asset_key, context.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, encode(obj))
        context.add_output_metadata({"stored_at": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        instance = context.instance
        key = context.asset_key
        producer = _producing_run(context)
        produced = None if producer is None else self._path(instance, key, producer)
        path = produced if produced and produced.exists() else self._latest_path(instance, key)
        value = decode(path.read_bytes(), str(path))
        expected = context.dagster_type.typing_type
        if isinstance(expected, type) and not isinstance(value, expected):
            raise StepOutputError(
                f"{path} holds a {type(value).__name__}, input "
                f"'{context.name}' expects {expected.__name__}"
            )
        return value

    def _latest_path(self, instance: dg.DagsterInstance, key: dg.AssetKey) -> Path:
        event = instance.get_latest_materialization_event(key)
        if event is None:
            raise StepOutputError(f"{key.to_user_string()} has never been materialized")
        path = self._path(instance, key, event.run_id)
        if not path.exists():
            raise StepOutputError(
                f"the latest materialization of {key.to_user_string()} (run {event.run_id}) "
                f"has no stored output at {path}: materialize it again"
            )
        return path

    def _path(self, instance: dg.DagsterInstance, key: dg.AssetKey, run_id: str) -> Path:
        base = Path(self.base_dir) if self.base_dir else Path(instance.storage_directory())
        return base.joinpath("ct-json", *key.path, f"{run_id}.json")


def _producing_run(context: dg.InputContext) -> str | None:
    """The run whose step output feeds this input (this run, or the parent of a
    re-execution); None (or a placeholder id with no file) when the asset comes from an
    earlier run's materialization."""
    upstream = context.upstream_output
    try:
        return None if upstream is None else upstream.run_id
    except dg.DagsterInvariantViolationError:
        return None
