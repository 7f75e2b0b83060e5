"""Every `ct` command reads one platform: the spec (refused when invalid, naming the key),
CT_HOME and `DAGSTER_HOME` (default `$CT_HOME/dagster`), and names them when it finds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import dagster as dg
import pytest
import yaml

import ct_platform
from ct_platform.cli import main

REPO_SPEC = Path(__file__).resolve().parents[1] / "ct_platform.yaml"


@pytest.fixture
def invalid_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    raw = yaml.safe_load(REPO_SPEC.read_text())
    raw["evaluation"]["window_batches"] = "many"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("CT_SPEC", str(path))
    return path


@pytest.mark.parametrize("command", ["history", "status"])
def test_an_invalid_spec_is_refused_naming_the_key(command, invalid_spec, monkeypatch, capsys):
    """`ct history` printed "nothing recorded yet" with CT_SPEC naming an invalid spec, and
    `ct status` complained about DAGSTER_HOME before the spec."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    assert main([command]) == 2
    assert capsys.readouterr().err == (
        f"ct {command}: {invalid_spec}: invalid spec:\n  evaluation.window_batches: Input "
        "should be a valid integer, unable to parse string as an integer\n"
    )


def test_history_without_a_spec_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CT_SPEC", raising=False)
    monkeypatch.chdir(tmp_path)

    assert main(["history"]) == 2
    assert capsys.readouterr().err.startswith(
        f"ct history: spec file not found: CT_SPEC is not set and there is no "
        f"ct_platform.yaml in {tmp_path} or any folder above it"
    )


def test_an_empty_history_names_the_log_the_spec_and_ct_home(spec_file, ct_home, capsys):
    assert main(["history"]) == 0
    assert capsys.readouterr().out == (
        f"nothing recorded yet in {ct_home}/audit/audit.jsonl (spec {spec_file}, CT_HOME "
        f"{ct_home}): no promotion, approval, rejection, deployment or rollback\n"
    )


def test_status_without_dagster_home_reads_the_documented_default(
    spec_file, ct_home, monkeypatch, capsys
):
    """Outside `make`, `ct status` said `DAGSTER_HOME is not set`: the README's default is
    `$CT_HOME/dagster`."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    where = f"spec {spec_file}, CT_HOME {ct_home}"

    assert main(["status"]) == 2
    assert capsys.readouterr().err == (
        f"ct status: no Dagster instance at {ct_home}/dagster (DAGSTER_HOME unset: "
        f"$CT_HOME/dagster; {where}): nothing has run on this platform yet (`make demo` "
        "creates it), or DAGSTER_HOME/CT_HOME/CT_SPEC name another platform than the "
        "running one\n"
    )

    (ct_home / "dagster").mkdir(parents=True)  # as `make demo` makes it: a real instance
    assert main(["status"]) == 0
    assert capsys.readouterr().out == (
        f"nothing has landed yet in {spec_file.parent / 'incoming'} ({where})\n"
    )


def test_commands_read_the_spec_the_running_platform_records(
    spec_file, ct_home, monkeypatch, capsys
):
    """`make demo` runs `$CT_HOME/demo-spec.yaml` (a canary rollout), but `ct` commands run
    from the repo folder read its `ct_platform.yaml`: silently another spec."""
    ct_home.mkdir(parents=True)
    (ct_home / "spec-in-use").write_text(f"{spec_file}\n")  # as deploy/demo.sh writes it
    monkeypatch.delenv("CT_SPEC")
    monkeypatch.chdir(REPO_SPEC.parent)  # where ct_platform.yaml is found

    assert main(["history"]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"ct: reading {spec_file}, the spec the platform on CT_HOME {ct_home} runs (recorded "
        f"in {ct_home}/spec-in-use), not {REPO_SPEC}; set CT_SPEC to read another\n"
    )
    assert f"(spec {spec_file}, CT_HOME {ct_home})" in captured.out
    assert os.environ["CT_SPEC"] == str(spec_file)

    monkeypatch.setenv("CT_SPEC", str(REPO_SPEC))  # named: read as named, no note
    assert main(["history"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and f"(spec {REPO_SPEC}, CT_HOME {ct_home})" in captured.out


def test_following_the_recorded_spec_from_a_folder_without_one_says_so_in_words(
    spec_file, ct_home, tmp_path_factory, monkeypatch, capsys
):
    """From a folder with no spec, `ct drift` said "... not none found here"."""
    ct_home.mkdir(parents=True)
    (ct_home / "spec-in-use").write_text(f"{spec_file}\n")
    monkeypatch.delenv("CT_SPEC")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # no ct_platform.yaml up from it

    assert main(["history"]) == 0
    assert capsys.readouterr().err == (
        f"ct: reading {spec_file}, the spec the platform on CT_HOME {ct_home} runs (recorded "
        f"in {ct_home}/spec-in-use), as no spec is found from the working folder; set "
        "CT_SPEC to read another\n"
    )


# --- every subcommand, as a user runs it: the `ct` script in a process of its own --------

CT_SCRIPT = Path(sys.executable).parent / "ct"
# The package under test, first on the path: the `ct` script's own folder is not the repo.
PACKAGE_ROOT = Path(ct_platform.__file__).resolve().parents[1]
DEMO_MODEL = "demo_bank"  # the recorded spec's model: a command that reads it names it


def ct(*args: str, ct_home: Path, dagster_home: Path | None = None) -> CompletedProcess[str]:
    """`ct ARGS` run from the repo folder (where `ct_platform.yaml` is found) with CT_SPEC
    unset, as a newcomer beside `make demo` runs it; DAGSTER_HOME only when given."""
    env = {
        key: value for key, value in os.environ.items() if key not in ("CT_SPEC", "DAGSTER_HOME")
    }
    env.update(CT_HOME=str(ct_home), PYTHONPATH=str(PACKAGE_ROOT))
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    return subprocess.run(
        [str(CT_SCRIPT), *args],
        cwd=REPO_SPEC.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.fixture
def demo_spec(spec_file: Path, ct_home: Path) -> Path:
    """The spec the running platform records in `$CT_HOME/spec-in-use` (as deploy/demo.sh
    does), another file than the repo's `ct_platform.yaml`, with its own model name."""
    raw = yaml.safe_load(spec_file.read_text())
    raw["model"]["name"] = DEMO_MODEL
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    ct_home.mkdir(parents=True, exist_ok=True)
    (ct_home / "spec-in-use").write_text(f"{spec_file}\n")
    return spec_file


def following(demo_spec: Path, ct_home: Path) -> str:
    """The note every command prints on stderr when it follows the recorded spec."""
    return (
        f"ct: reading {demo_spec}, the spec the platform on CT_HOME {ct_home} runs (recorded "
        f"in {ct_home}/spec-in-use), not {REPO_SPEC}; set CT_SPEC to read another\n"
    )


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_approve_and_reject_use_the_default_instance_and_the_recorded_spec(
    verb, demo_spec, ct_home
):
    """`ct approve` said "DAGSTER_HOME is not set" where `ct status` reads the documented
    default, `$CT_HOME/dagster`."""
    where = f"spec {demo_spec}, CT_HOME {ct_home}"
    missing = ct(verb, "7", "--reason", "looks right", "--by", "ana", ct_home=ct_home)
    assert missing.returncode == 2
    assert missing.stderr == following(demo_spec, ct_home) + (
        f"ct {verb}: no Dagster instance at {ct_home}/dagster (DAGSTER_HOME unset: "
        f"$CT_HOME/dagster; {where}): nothing has run on this platform yet (`make demo` "
        "creates it), or DAGSTER_HOME/CT_HOME/CT_SPEC name another platform than the "
        "running one\n"
    )

    (ct_home / "dagster").mkdir()  # as `make demo` makes it: a real instance
    refused = ct(verb, "7", "--reason", "looks right", "--by", "ana", ct_home=ct_home)
    assert refused.returncode == 1, refused.stderr
    assert f"ct {verb}: " in refused.stderr and f"'{DEMO_MODEL}'" in refused.stderr
    # The run is in the default instance, with the decision asked for.
    with dg.DagsterInstance.from_config(str(ct_home / "dagster")) as instance:
        (run,) = instance.get_runs()
    assert run.job_name == "approve_candidate" and run.status == dg.DagsterRunStatus.FAILURE
    decided = run.run_config["ops"]["decide_candidate"]["config"]
    assert (decided["version"], decided["decision"], decided["approver"]) == (7, verb, "ana")


def test_rollout_and_rollback_read_the_recorded_spec_and_name_it(demo_spec, ct_home):
    """`ct rollout` / `ct rollback` read the spec themselves: an empty answer ("no rollout
    yet") named nothing, so a command on another platform looked like the running one's."""
    where = f"(spec {demo_spec}, CT_HOME {ct_home})"
    status = ct("rollout", "status", ct_home=ct_home)
    assert (status.returncode, status.stderr) == (0, following(demo_spec, ct_home))
    assert status.stdout == f"no rollout yet in {ct_home}/rollouts {where}\n"

    rollback = ct("rollback", "--reason", "bad answers", ct_home=ct_home)
    assert rollback.returncode == 1
    assert rollback.stderr == following(demo_spec, ct_home) + (
        f"ct rollback: model '{DEMO_MODEL}' has no champion to roll back {where}\n"
    )


def test_serve_and_simulate_read_the_recorded_spec(demo_spec, ct_home):
    serve = ct("serve", "--port", "18401", ct_home=ct_home)
    assert serve.returncode == 1
    assert serve.stderr == following(demo_spec, ct_home) + (
        f"ct serve: MLflow has no version of model '{DEMO_MODEL}' with alias 'champion': "
        "not serving it (pass --bundle to serve one explicitly)\n"
    )

    raw = yaml.safe_load(demo_spec.read_text())
    raw["dataset"]["source"] = "data/demo.csv"  # not there: the message names the spec read
    demo_spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    simulate = ct("simulate", "--once", ct_home=ct_home)
    assert (simulate.returncode, simulate.stderr) == (2, following(demo_spec, ct_home))
    assert simulate.stdout == (
        f"ct simulate: dataset file {demo_spec.parent / 'data' / 'demo.csv'} (from "
        f"dataset.source of {demo_spec}) does not exist: give the file with --source FILE, "
        f"or set dataset.source in {demo_spec}\n"
    )
