"""Which platform a `ct` command reads: the spec file, `CT_HOME` and the Dagster instance.

Every command resolves them the same way, refuses an invalid spec naming the key (before
anything else), and names what it read when it finds nothing there: a command run in the
wrong folder, or with another `CT_SPEC` than the running platform's, must say so, not print
an empty answer that looks like the platform's.

`DAGSTER_HOME` defaults to `$CT_HOME/dagster`, as the README's settings table and the
Makefile say, so `ct status` outside `make` reads the same instance as `make demo`. A command
that reads both the instance and CT_HOME (or MLflow) refuses an instance whose runs ran on
another CT_HOME or model (`check_same_platform`): a stale `DAGSTER_HOME` must not list one
platform's batches with another's verdicts.

The platform `make demo` runs reads its own spec (`$CT_HOME/demo-spec.yaml`, the bank spec
with a canary rollout), not the `ct_platform.yaml` a command finds in the repo folder. The
demo records the spec it runs in `$CT_HOME/spec-in-use`; with `CT_SPEC` unset, every `ct`
command reads that one and says so on stderr (`follow_running_spec`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dagster as dg

    from ct_platform.settings import Paths, Spec

# Under CT_HOME, as the Makefile's `DAGSTER_HOME ?= $(CT_HOME)/dagster`.
DAGSTER_HOME_DEFAULT = "dagster"
# Under CT_HOME: the absolute path of the spec the running platform reads (deploy/demo.sh).
SPEC_RECORD = "spec-in-use"


def follow_running_spec() -> Path | None:
    """With `CT_SPEC` unset, point it (and `CT_HOME`) at the spec the platform on this
    CT_HOME runs when that is another file than the one found from the working folder, and
    say so on stderr. Returns the spec followed, None when nothing changed."""
    from ct_platform.settings import Paths, SpecError, spec_path

    if os.environ.get("CT_SPEC"):
        return None
    home = Paths.from_env().home
    try:
        recorded = Path((home / SPEC_RECORD).read_text().strip())
    except OSError:
        return None
    try:
        found: Path | None = spec_path()
    except SpecError:
        found = None
    if not recorded.is_file() or recorded == found:
        return None
    instead = f"not {found}" if found else "as no spec is found from the working folder"
    print(
        f"ct: reading {recorded}, the spec the platform on CT_HOME {home} runs (recorded in "
        f"{home / SPEC_RECORD}), {instead}; set CT_SPEC to read another",
        file=sys.stderr,
    )
    os.environ["CT_HOME"] = str(home)  # as resolved before CT_SPEC was set
    os.environ["CT_SPEC"] = str(recorded)
    return recorded


@dataclass(frozen=True)
class Platform:
    spec: Spec
    spec_file: Path
    paths: Paths

    def where(self) -> str:
        """ "spec /p/ct_platform.yaml, CT_HOME /p/.ct": what a command read."""
        return f"spec {self.spec_file}, CT_HOME {self.paths.home}"


def load_platform(*, reads_home: bool = True) -> Platform:
    """The spec (validated) and CT_HOME every command reads; raises `SpecError` (a
    ValueError) naming the file and the offending key, and, for a command that reads the
    platform's state (`reads_home`), `OtherPlatformError` when CT_HOME holds another
    model's state (`check_home`)."""
    from ct_platform.settings import Paths, load_spec, spec_path

    spec_file = spec_path()
    platform = Platform(load_spec(spec_file), spec_file, Paths.from_env())
    if reads_home:
        check_home(platform)
    return platform


class NoInstanceError(ValueError):
    """The Dagster instance a command needs is not there; the message names where."""


def dagster_home(platform: Platform) -> Path:
    """The instance folder: `DAGSTER_HOME`, else `$CT_HOME/dagster` (then exported, so
    Dagster's `DagsterInstance.get()` reads it). Raises `NoInstanceError` when the folder is
    not there: nothing has run on this platform, or the command reads another one."""
    named = os.environ.get("DAGSTER_HOME")
    home = Path(named) if named else platform.paths.home / DAGSTER_HOME_DEFAULT
    home = home.resolve()
    if not home.is_dir():
        source = f"DAGSTER_HOME={named}" if named else "DAGSTER_HOME unset: $CT_HOME/dagster"
        raise NoInstanceError(
            f"no Dagster instance at {home} ({source}; {platform.where()}): nothing has run "
            "on this platform yet (`make demo` creates it), or DAGSTER_HOME/CT_HOME/CT_SPEC "
            "name another platform than the running one"
        )
    os.environ["DAGSTER_HOME"] = str(home)
    return home


class OtherPlatformError(ValueError):
    """The Dagster instance or CT_HOME holds another platform's state than the command reads."""


def check_same_platform(platform: Platform, instance: dg.DagsterInstance) -> None:
    """Raise `OtherPlatformError` naming both platforms when the instance's runs were tagged
    with another CT_HOME or model name than `platform`'s (`defs.platform_tags`): its batches
    would be listed with another platform's verdicts. An instance with no tagged run passes."""
    from ct_platform.defs.platform_tags import HOME_TAG, MODEL_TAG, instance_platforms

    ran = instance_platforms(instance)
    here = {HOME_TAG: str(platform.paths.home), MODEL_TAG: platform.spec.model.name}
    if all(not ran[key] or here[key] in ran[key] for key in here):
        return
    theirs = ", ".join(sorted(ran[HOME_TAG])) or "?"
    models = ", ".join(repr(name) for name in sorted(ran[MODEL_TAG])) or "?"
    raise OtherPlatformError(
        f"the Dagster instance at {instance.root_directory} belongs to another platform: its "
        f"runs ran on CT_HOME {theirs} for model {models}, but this command reads "
        f"{platform.where()}, model {here[MODEL_TAG]!r}. Not mixing them: set DAGSTER_HOME "
        "and CT_HOME for one platform (unset DAGSTER_HOME reads $CT_HOME/dagster)"
    )


def home_models(paths: Paths) -> tuple[set[str], Path]:
    """The model names whose state CT_HOME holds, and the file that says so: the one its
    first step recorded (`Paths.claim`), else (a home from before that record) those its
    audit log names."""
    from ct_platform.governance.audit import audit_path, read_events

    recorded = paths.recorded_model()
    if recorded is not None:
        return {recorded}, paths.platform_record
    log = audit_path(paths)
    return {event.model for event in read_events(log)}, log


def check_home(platform: Platform) -> None:
    """Raise `OtherPlatformError` naming both models when CT_HOME holds the state of another
    model than the spec's: its audit log, rollout, champion and replay cursor would be shown
    or acted on as this spec's. A home with no state yet passes."""
    model = platform.spec.model.name
    models, source = home_models(platform.paths)
    others = models - {model}
    if not others:
        return
    theirs = ", ".join(repr(name) for name in sorted(others))
    raise OtherPlatformError(
        f"CT_HOME {platform.paths.home} belongs to another platform: it holds the state of "
        f"model {theirs} (recorded in {source}), but this command reads {platform.where()}, "
        f"model {model!r}. Not mixing them: set CT_SPEC and CT_HOME for one platform"
    )
