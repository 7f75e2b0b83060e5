"""The model card of each candidate, and the audit log as a table."""

import dagster as dg

from ct_platform.defs.automation import follows_every_update
from ct_platform.defs.resources import MlflowResource
from ct_platform.registry.versions import ModelVersionInfo
from ct_platform.settings import Spec

MODEL_CARD = dg.AssetKey("model_card")
AUDIT_HISTORY = dg.AssetKey("audit_history")
# The columns of `governance.history.HistoryRow`, the rows `ct history` prints.
AUDIT_COLUMNS = (
    ("at", "UTC time"),
    (
        "event",
        "promotion, approval requested, approval, rejection, deployment, rollback, "
        "rollout rollback (a candidate taken off the traffic: `champion` never moved)",
    ),
    ("versions", "from -> to (`-`: there was none)"),
    ("model", "registered model name"),
    ("actor", "a person, or what started the run (automation, a sensor, a rollout)"),
    ("dagster_run_id", "the Dagster run that acted, if any"),
    ("reason", "why"),
)
# The table shows the newest events; `ct history --json` has them all.
AUDIT_TABLE_ROWS = 200


def build_governance_assets(spec: Spec) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=MODEL_CARD,
        group_name="training",
        kinds={"mlflow"},
        automation_condition=follows_every_update(),
        # Lowest step priority, like the reports: in a training run it runs after the
        # evaluation has recorded the verdict (and after the champion step), and, built from
        # the candidate rather than the verdict, also for a candidate a gate rejected.
        op_tags={"dagster/priority": "-1"},
        description="The candidate's model card (Markdown and HTML): intended use, data "
        "window, lineage, metrics, per-group figures, gates, approval, limitations. Logged to "
        "its MLflow run as card/; the card in its serving bundle adds the ONNX parity figures.",
    )
    def model_card(
        context: dg.AssetExecutionContext, candidate_model: ModelVersionInfo, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        from ct_platform.governance.card import CARD_ARTIFACT_DIR, CARD_HTML, write_card

        registry = mlflow.registry(spec)
        files = write_card(registry, candidate_model.version, spec)
        url = registry.artifact_view_url(candidate_model.run_id, f"{CARD_ARTIFACT_DIR}/{CARD_HTML}")
        return dg.MaterializeResult(
            metadata={
                "version": dg.MetadataValue.int(candidate_model.version),
                "card": dg.MetadataValue.md(files["card.md"].decode()),
                "card_html": dg.MetadataValue.url(url),
            }
        )

    @dg.asset(
        key=AUDIT_HISTORY,
        deps=["champion"],
        group_name="governance",
        kinds={"json"},
        automation_condition=dg.AutomationCondition.any_deps_updated()
        & ~dg.AutomationCondition.in_progress(),
        description="The audit log (promotions, approvals, rejections, deployments, rollbacks; "
        "who, why, versions, when) as a table. Refreshed after each champion change; "
        "materialize it to see the latest, or run `ct history`.",
    )
    def audit_history(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from ct_platform.governance.audit import audit_path, read_events
        from ct_platform.governance.history import history_rows

        events = read_events()
        schema = dg.TableSchema(
            columns=[dg.TableColumn(name, "string", about) for name, about in AUDIT_COLUMNS]
        )
        # Rows are replayed from the whole log (a rollout's rollback is told from the
        # champion before it); the table shows the newest.
        shown = history_rows(events)[-AUDIT_TABLE_ROWS:]
        records = [
            dg.TableRecord({name: getattr(row, name) for name, _ in AUDIT_COLUMNS})
            for row in reversed(shown)
        ]
        return dg.MaterializeResult(
            metadata={
                "events": dg.MetadataValue.int(len(events)),
                "history": dg.MetadataValue.table(records, schema),
                "path": dg.MetadataValue.path(str(audit_path())),
            }
        )

    return [model_card, audit_history]
