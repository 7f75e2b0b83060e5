"""Governance: model cards, manual approval, the audit log and rollback (no dagster)."""
