"""Security gates on real parts: detect-secrets, presidio's recognizers, pip-audit and OSV files.

Planted secrets, card numbers and advisories fail their gate naming where and what; the
shipped bank spec, model and data pass; an unreachable advisory source is "unknown".
"""

from __future__ import annotations

import copy
import json
import socket
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline

from ct_platform.data.training_set import TrainingSet
from ct_platform.settings import Spec
from ct_platform.training.security import (
    bundle_secrets_gate,
    find_pii,
    pii_gate,
    secrets_gate,
    vulnerabilities_gate,
)

# Planted credentials: shaped like real ones, valid for nothing.
AWS_KEY = "AKIAZ3MHQ5XLP2NRT7WK"
TOKEN = "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"


def _with(spec: Spec, section: str, key: str, value: object) -> Spec:
    raw = spec.model_dump()
    raw[section][key] = value
    return Spec.model_validate(raw)


def _security(spec: Spec, gate: str, **settings: object) -> Spec:
    raw = spec.model_dump()
    raw["gates"]["security"][gate] |= settings
    return Spec.model_validate(raw)


def _param_key(model: Pipeline, name: str) -> str:
    return next(key for key in model.get_params(deep=True) if key.endswith(f"__{name}"))


def _with_param(model: Pipeline, name: str, value: str) -> Pipeline:
    planted = copy.deepcopy(model)
    planted.set_params(**{_param_key(planted, name): value})
    return planted


def _everything(gate) -> str:
    return gate.description + " " + " ".join(str(v) for v in gate.metadata.values())


def test_shipped_spec_and_model_hold_no_secret(bank_spec, bank_model):
    gate = secrets_gate(bank_spec, bank_model)

    assert gate.passed, gate.description
    assert gate.metadata["scanned"] > 50  # every spec value and model parameter was read


def test_secret_in_a_model_parameter_fails_naming_field_and_detector(bank_spec, bank_model):
    gate = secrets_gate(bank_spec, _with_param(bank_model, "scoring", AWS_KEY))

    assert not gate.passed and gate.blocking
    key = _param_key(bank_model, "scoring")
    assert f"model param: {key}: AWS Access Key (AK" in gate.description
    assert AWS_KEY not in _everything(gate)  # masked, never printed in full


def test_secret_in_the_spec_fails_naming_the_field(bank_spec, bank_model):
    # Someone pasted the key itself where the name of its environment variable belongs.
    raw = bank_spec.model_dump()
    raw["serving"]["api_key_env"] = TOKEN
    spec = Spec.model_validate(raw)

    gate = secrets_gate(spec, bank_model)

    assert not gate.passed
    assert "spec: serving.api_key_env: GitHub Token" in gate.description
    assert TOKEN not in _everything(gate)


def test_secret_inside_the_bundle_files_fails(bank_spec, bank_model, tmp_path):
    # The bundle's files as export writes them: skops (a zip) and JSON (no ONNX build here:
    # the pipeline test scans a full bundle, clean).
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    sio.dump(_with_param(bank_model, "scoring", AWS_KEY), bundle / "model.skops")
    (bundle / "bundle.json").write_text(json.dumps({"name": "bank", "version": "1"}, indent=1))
    gate = bundle_secrets_gate(bundle, bank_spec)

    assert not gate.passed and gate.blocking
    # Named by where the value sits in the skops schema: the estimator's `scoring` parameter.
    assert "model.skops: schema.json " in gate.description
    assert "scoring.content: AWS Access Key (AK" in gate.description
    assert "bundle.json" not in gate.description
    assert AWS_KEY not in _everything(gate)
    # Text files are named by line: a token written into the metadata file.
    (bundle / "bundle.json").write_text(json.dumps({"name": "bank", "note": TOKEN}, indent=1))
    assert "bundle.json:3: GitHub Token" in bundle_secrets_gate(bundle, bank_spec).description


def _luhn_valid(prefix: str) -> str:
    """`prefix` plus its Luhn check digit."""
    total = 0
    for i, digit in enumerate(int(d) for d in reversed(prefix)):
        doubled = digit * 2 if i % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return prefix + str((10 - total % 10) % 10)


def _with_column(frame: pd.DataFrame, name: str, values: list[str]) -> pd.DataFrame:
    out = frame.head(len(values)).copy()
    out[name] = values
    return out


def test_card_numbers_fail_the_pii_gate(bank_window: TrainingSet, bank_spec, monkeypatch):
    cards = [_luhn_valid(f"411111{i:09d}") for i in range(300)]
    frame = _with_column(bank_window.train, "card", cards)

    def no_network(*args: object) -> None:
        raise AssertionError("the PII recognizers tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    gate = pii_gate(frame, bank_spec)

    assert not gate.passed and gate.blocking
    assert gate.metadata["card/CREDIT_CARD/count"] == 300
    assert gate.metadata["card/CREDIT_CARD/share"] == 1.0
    assert "column 'card': CREDIT_CARD in 300 of 300 sampled values (100.0%)" in gate.description
    assert not any(card in _everything(gate) for card in cards)  # masked example only


def test_luhn_invalid_digit_strings_pass_the_pii_gate(bank_window: TrainingSet, bank_spec):
    valid = [_luhn_valid(f"411111{i:09d}") for i in range(300)]
    invalid = [card[:-1] + str((int(card[-1]) + 1) % 10) for card in valid]

    gate = pii_gate(_with_column(bank_window.train, "card", invalid), bank_spec)

    assert gate.passed, gate.description


def test_bank_training_set_holds_no_personal_data(bank_window: TrainingSet, bank_spec):
    gate = pii_gate(pd.concat([bank_window.train, bank_window.holdout]), bank_spec)

    assert gate.passed, gate.description


def test_emails_phones_and_ibans_are_found_per_column():
    frame = pd.DataFrame(
        {
            "contact": ["ann.lee@example.org", "bo@mail.example.com", "none"] * 10,
            "phone": ["+44 20 7946 0958", "n/a", "+1 212-555-0199"] * 10,
            "account": ["DE89370400440532013000", "-", "GB82WEST12345698765432"] * 10,
        }
    )

    found = {(f.column, f.entity): f for f in find_pii(frame, sample_rows=1000)}

    assert found[("contact", "EMAIL_ADDRESS")].count == 20
    assert found[("phone", "PHONE_NUMBER")].count == 20
    assert found[("account", "IBAN_CODE")].count == 20
    assert found[("contact", "EMAIL_ADDRESS")].share == pytest.approx(20 / 30)


def _advisory_file(tmp_path: Path, package: str, introduced: str, fixed: str) -> Path:
    path = tmp_path / "advisories.json"
    record = {
        "id": "GHSA-test-0001",
        "summary": "planted for the test",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": package},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}
                ],
            }
        ],
    }
    path.write_text(json.dumps([record]))
    return path


def test_planted_advisory_for_an_installed_version_fails(bank_spec, tmp_path):
    installed = version("requests")
    path = _advisory_file(tmp_path, "Requests", "0", "9999.0")
    spec = _security(bank_spec, "vulnerabilities", advisory_file=path, pypi=False, blocking=True)

    gate = vulnerabilities_gate(spec)

    assert not gate.passed and gate.blocking
    assert f"requests {installed}: GHSA-test-0001 (advisories.json)" in gate.description


def test_advisory_for_other_versions_passes(bank_spec, tmp_path):
    path = _advisory_file(tmp_path, "requests", "0", "0.1")
    spec = _security(bank_spec, "vulnerabilities", advisory_file=path, pypi=False)

    gate = vulnerabilities_gate(spec)

    assert gate.passed, gate.description
    assert gate.metadata["installed"] > 100


def test_unreachable_advisory_source_is_unknown_not_a_pass(bank_spec, monkeypatch):
    # Nothing listens on port 9 here: PyPI cannot be reached through this proxy.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    spec = _security(bank_spec, "vulnerabilities", pypi=True, blocking=True, timeout_seconds=5)

    gate = vulnerabilities_gate(spec)

    assert not gate.passed and not gate.blocking  # a warning, whatever `blocking` says
    assert gate.description.startswith("unknown: no advisory source answered (PyPI via pip-audit")


def test_docker_target_audits_the_serving_image_distributions(bank_spec, tmp_path):
    raw = bank_spec.model_dump()
    raw["serving"]["target"] = "docker"
    docker_spec = Spec.model_validate(raw)
    in_image = _advisory_file(tmp_path, "onnxruntime", "0", "9999.0")
    spec = _security(docker_spec, "vulnerabilities", advisory_file=in_image, pypi=False)

    gate = vulnerabilities_gate(spec)

    assert not gate.passed
    assert f"serving image {docker_spec.serving.docker_image}" in gate.description
    assert f"onnxruntime {version('onnxruntime')}: GHSA-test-0001" in gate.description
    # dagster is installed here but not in the slim serving image: not its concern.
    not_in_image = _advisory_file(tmp_path, "dagster", "0", "9999.0")
    spec = _security(docker_spec, "vulnerabilities", advisory_file=not_in_image, pypi=False)
    assert vulnerabilities_gate(spec).passed
