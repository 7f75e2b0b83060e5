"""Every `ct` command reads one platform: the spec (refused when invalid, naming the key),
CT_HOME and `DAGSTER_HOME` (default `$CT_HOME/dagster`), and names them when it finds nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

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
