"""Which platform a `ct` command reads: the spec file, `CT_HOME` and the Dagster instance.

Every command resolves them the same way, refuses an invalid spec naming the key (before
anything else), and names what it read when it finds nothing there: a command run in the
wrong folder, or with another `CT_SPEC` than the running platform's, must say so, not print
an empty answer that looks like the platform's.

`DAGSTER_HOME` defaults to `$CT_HOME/dagster`, as the README's settings table and the
Makefile say, so `ct status` outside `make` reads the same instance as `make demo`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ct_platform.settings import Paths, Spec

# Under CT_HOME, as the Makefile's `DAGSTER_HOME ?= $(CT_HOME)/dagster`.
DAGSTER_HOME_DEFAULT = "dagster"


@dataclass(frozen=True)
class Platform:
    spec: Spec
    spec_file: Path
    paths: Paths

    def where(self) -> str:
        """ "spec /p/ct_platform.yaml, CT_HOME /p/.ct": what a command read."""
        return f"spec {self.spec_file}, CT_HOME {self.paths.home}"


def load_platform() -> Platform:
    """The spec (validated) and CT_HOME every command reads; raises `SpecError` (a
    ValueError) naming the file and the offending key."""
    from ct_platform.settings import Paths, load_spec, spec_path

    spec_file = spec_path()
    return Platform(load_spec(spec_file), spec_file, Paths.from_env())


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
