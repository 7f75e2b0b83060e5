"""The audit log: append-only JSON lines that concurrent writers never interleave."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.storage import tags as dagster_tags
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from ct_platform.cli import main
from ct_platform.definitions import build_definitions
from ct_platform.governance.audit import (
    AuditEvent,
    AuditLogError,
    append_event,
    audit_path,
    champion_history,
    current_user,
    read_events,
    run_actor,
)
from ct_platform.settings import Paths, Spec
from ct_platform_tests.conftest import REPO_ROOT

WRITERS = 4
EVENTS_PER_WRITER = 150
# Longer than PIPE_BUF (4096): an O_APPEND write this size is not atomic by itself.
LONG_REASON = "x" * 10_000
# The bank spec's model: `ct history` refuses a log of another model's events.
BANK = "bank_marketing"


def write_events(writer: int, path: str) -> None:
    for index in range(EVENTS_PER_WRITER):
        append_event(
            AuditEvent(
                kind="deployment",
                model="m",
                actor=f"writer-{writer}",
                reason=f"{index}:{LONG_REASON}",
                to_version=index,
            ),
            Path(path),
        )


def test_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=write_events, args=(n, str(path))) for n in range(WRITERS)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=300)
        assert process.exitcode == 0

    lines = path.read_bytes().splitlines()
    assert len(lines) == WRITERS * EVENTS_PER_WRITER
    events = read_events(path)  # every line is one whole event
    for writer in range(WRITERS):
        mine = [e for e in events if e.actor == f"writer-{writer}"]
        # Each writer's events are all there, in the order it wrote them.
        assert [int(e.reason.split(":")[0]) for e in mine] == list(range(EVENTS_PER_WRITER))
        assert all(e.reason.endswith(LONG_REASON) for e in mine)


def test_appending_never_rewrites_earlier_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    first = append_event(AuditEvent("promotion", "m", "automation", "gates passed", None, 1), path)
    before = path.read_bytes()
    append_event(AuditEvent("rollback", "m", "alice", "bad", 2, 1), path)
    assert path.read_bytes().startswith(before)
    assert read_events(path)[0] == first


def test_a_corrupt_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    append_event(AuditEvent("promotion", "m", "automation", "ok", None, 1), path)
    with path.open("a") as handle:
        handle.write('{"kind": "promotion"\n')
    with pytest.raises(AuditLogError, match="line 2"):
        read_events(path)


def test_champion_history_drops_rolled_back_versions():
    def event(kind: str, before: int | None, after: int) -> AuditEvent:
        return AuditEvent(kind, "m", "a", "r", before, after)

    events = [
        event("promotion", None, 1),
        event("promotion", 1, 2),
        event("deployment", 1, 2),
        event("promotion", 2, 3),
        event("rollback", 3, 2),
        event("promotion", 2, 4),
    ]
    assert champion_history(events, "m") == [1, 2, 4]
    assert champion_history([*events, event("rollback", 4, 2)], "m") == [1, 2]
    assert champion_history(events, "other") == []


def test_ct_history_prints_table_and_json(capsys):
    append_event(AuditEvent("promotion", BANK, "automation", "gates passed", None, 1, "run-1"))
    append_event(AuditEvent("promotion", BANK, "automation", "gates passed", 1, 2))
    append_event(AuditEvent("rollback", BANK, "alice", "bad calls", 2, 1))

    assert main(["history"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["at", "event", "versions"]
    assert "rollback" in table[3] and "v2 -> v1" in table[3] and "alice" in table[3]
    assert table[3].endswith("bad calls")

    assert main(["history", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in listed] == ["promotion", "promotion", "rollback"]
    assert listed[0]["dagster_run_id"] == "run-1" and listed[2]["from_version"] == 2
    assert audit_path().is_file()


def test_ct_history_tells_a_rollouts_rollback_from_a_champions(capsys):
    """A rollout's rollback line (from the candidate to the champion that kept serving) is
    no champion move; a rollback after a blue-green switch (the candidate was champion) is."""
    lines = [
        ("approval_requested", "automation", "passed its gates", 2, 4),
        ("approval", "alice", "card ok", 2, 4),
        ("rollback", "canary rollout v4-1", "canary rolled back: analysis failed: x", 4, 2),
        ("promotion", "blue_green rollout v5-1", "blue-green switched", 2, 5),
        ("rollback", "blue_green rollout v5-1", "blue-green rolled back: y", 5, 2),
    ]
    for kind, actor, reason, before, after in lines:
        append_event(AuditEvent(kind, BANK, actor, reason, before, after))

    assert main(["history"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert "approval requested  v2 -> v4" in rows[0]  # words, not the kind `approval_requested`
    assert "rollout rollback    rollout of v4 rolled back; champion v2 stays" in rows[2]
    assert "rollback            v5 -> v2" in rows[4]


def test_the_audit_history_asset_shows_what_ct_history_prints(
    spec: Spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The UI's audit table showed the log's raw kinds (`approval_requested`) and a rollout's
    rollback as a champion's `rollback` from v4 to v2: now the same rows as `ct history`,
    materialized on a real Dagster instance (temp DAGSTER_HOME)."""
    lines = [
        ("promotion", "automation", "gates passed", None, 2, "run-a"),
        ("approval_requested", "automation", "passed its gates", 2, 4, "run-b"),
        ("approval", "alice", "card ok", 2, 4, None),
        ("rollback", "canary rollout v4-1", "canary rolled back: analysis failed: x", 4, 2, None),
    ]
    for kind, actor, reason, before, after, run in lines:
        append_event(AuditEvent(kind, BANK, actor, reason, before, after, run))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    job = build_definitions(spec).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey("audit_history")]
        )
    table = result.get_asset_materialization_events()[0].materialization.metadata["history"]
    shown = [record.data for record in reversed(table.value.records)]  # oldest first
    assert [(row["event"], row["versions"]) for row in shown] == [
        ("promotion", "- -> v2"),
        ("approval requested", "v2 -> v4"),
        ("approval", "v2 -> v4"),
        ("rollout rollback", "rollout of v4 rolled back; champion v2 stays"),
    ]
    assert [column.name for column in table.value.schema.columns] == [
        "at",
        "event",
        "versions",
        "model",
        "actor",
        "dagster_run_id",
        "reason",
    ]
    assert shown[1]["dagster_run_id"] == "run-b" and shown[2]["dagster_run_id"] == ""
    assert main(["history"]) == 0
    printed = capsys.readouterr().out.splitlines()[1:]
    for row, line in zip(shown, printed, strict=True):  # the same words, one formatter
        assert line.startswith(f"{row['at']}  {row['event']}") and row["versions"] in line
        assert line.endswith(row["reason"])


def test_ct_history_from_a_subfolder_reads_the_projects_home(tmp_path, monkeypatch, capsys):
    """A newcomer's case: `ct history` run in a project's subfolder found the spec above but
    read an empty `.ct` in the working folder ("nothing recorded yet"). CT_HOME now defaults
    to `.ct/` beside the spec found; with CT_SPEC naming the spec, the working folder."""
    project = tmp_path / "project"
    below = project / "data" / "june"
    below.mkdir(parents=True)
    (project / "ct_platform.yaml").write_text((REPO_ROOT / "ct_platform.yaml").read_text())
    event = AuditEvent("promotion", BANK, "automation", "gates passed", None, 3, "run-7")
    append_event(event, audit_path(Paths(project / ".ct")))
    monkeypatch.delenv("CT_HOME", raising=False)
    monkeypatch.delenv("CT_SPEC", raising=False)
    monkeypatch.chdir(below)

    assert Paths.from_env().home == project / ".ct"
    assert main(["history", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["to_version"], e["dagster_run_id"]) for e in listed] == [(3, "run-7")]

    monkeypatch.setenv("CT_SPEC", str(project / "ct_platform.yaml"))
    assert Paths.from_env().home == below / ".ct"


def test_run_actor_reads_the_tags_dagster_sets():
    """Dagster's own tag builders and names, as its daemons set them on the runs they launch,
    on real `DagsterRun`s: launched through the instance (a remote origin) or in-process."""

    def launched(
        tags: dict[str, str], job_name: str = "training_job", assets: tuple[str, ...] = ()
    ) -> dg.DagsterRun:
        code_location = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(module_name="ct_platform.definitions")
        )
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(code_location, "__repository__"), job_name)
        selection = frozenset(dg.AssetKey(name) for name in assets) or None
        return dg.DagsterRun(
            job_name=job_name, tags=tags, remote_job_origin=origin, asset_selection=selection
        )

    automation_sensor = dg.DagsterRun.tags_for_sensor(
        dg.AutomationConditionSensorDefinition(
            "default_automation_condition_sensor", target=dg.AssetSelection.all()
        )
    )
    # The asset daemon adds these beside the sensor's name (`dagster._daemon.asset_daemon`).
    automation = {
        **automation_sensor,
        dagster_tags.AUTO_MATERIALIZE_TAG: "true",
        dagster_tags.AUTOMATION_CONDITION_TAG: "true",
        dagster_tags.ASSET_EVALUATION_ID_TAG: "12",
    }
    # What did it: the assets the condition requested, the evaluation that decided it (the
    # UI's Automation tab), the automation sensor.
    endpoint = launched(automation, "__ASSET_JOB", ("deployed_endpoint", "model_bundle"))
    assert run_actor(endpoint) == (
        "automation condition of deployed_endpoint, model_bundle (evaluation 12, "
        "default_automation_condition_sensor)"
    )
    assert run_actor(launched(automation)) == (
        "automation condition of job training_job (evaluation 12, "
        "default_automation_condition_sensor)"
    )
    tick = dg.DagsterRun.tags_for_tick_id("7", has_evaluations=True)
    assert run_actor(launched(tick)) == "automation condition of job training_job (evaluation 7)"

    @dg.sensor(job_name="training_job")
    def training_sensor() -> None: ...

    sensor_run = launched(dg.DagsterRun.tags_for_sensor(training_sensor))
    assert run_actor(sensor_run) == "sensor:training_sensor"
    ticked = {**sensor_run.tags, **dg.DagsterRun.tags_for_tick_id("9")}
    assert run_actor(launched(ticked)) == "sensor:training_sensor tick 9"
    assert run_actor(launched({dagster_tags.SCHEDULE_NAME_TAG: "nightly"})) == "schedule:nightly"
    # The UI tags what it launches (`UI_EXECUTION_TAGS`); `dagster job launch` does not.
    assert run_actor(launched({"dagster/from_ui": "true"})) == "Dagster UI"
    assert run_actor(launched({})) == "dagster job launch"
    assert run_actor(launched({dagster_tags.BACKFILL_ID_TAG: "abc"})) == "backfill abc"
    # A person the run names comes first.
    ui_dana = launched({"dagster/user": "dana@example.com", "dagster/from_ui": "true"})
    assert run_actor(ui_dana) == "dana@example.com via Dagster UI"
    # In-process (`dagster job execute`, `dagster asset materialize`): the OS user runs it.
    me = current_user()
    in_process = dg.DagsterRun(job_name="training_job", tags={PARTITION_NAME_TAG: "b.csv"})
    assert run_actor(in_process) == f"{me} via dagster job execute"
    assets = dg.DagsterRun(job_name="__ASSET_JOB", tags={"user": "carol"})
    assert run_actor(assets) == "carol via dagster asset materialize"


def test_ct_history_says_a_gate_rejection_left_the_champion_where_it_was(capsys):
    """A gate rejection's from-version is the serving champion, which did not move: the row
    says the version was rejected, never "v2 -> v3" (which reads as a move)."""
    reason = "version 3 rejected by gate 'baseline': mae 189.11 not better than 163.77"
    append_event(AuditEvent("gate_rejection", BANK, "automation", "metric_floor", None, 1))
    append_event(AuditEvent("promotion", BANK, "automation", "gates passed", None, 2))
    append_event(AuditEvent("gate_rejection", BANK, "automation", reason, 2, 3))

    assert main(["history"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert "gate rejection  v1 rejected; no champion yet" in rows[0]
    assert "gate rejection  v3 rejected; champion v2 stays" in rows[2]
    assert rows[2].endswith(reason)
