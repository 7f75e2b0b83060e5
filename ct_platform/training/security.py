"""Security gates: secrets, personal data and known-vulnerable packages.

- `secrets_gate`: detect-secrets (its default plugins and filters, offline) over the spec's
  values and the model's parameters; `bundle_secrets_gate` over a bundle's files (JSON as
  text; the strings embedded in `model.onnx` and `model.skops`).
- `pii_gate`: presidio-analyzer's pattern recognizers (email, phone number, IBAN, credit
  card with its Luhn check) over a seeded sample of each text/category column. No NLP model
  is loaded and nothing is downloaded (the email recognizer's top-level-domain check reads
  tldextract's bundled suffix list instead of fetching one).
- `vulnerabilities_gate`: the installed distributions of the serving environment against an
  offline OSV advisory file and/or PyPI's advisory data through pip-audit. When no source
  answered, the verdict is "unknown", a warning, never a pass.

Findings name where (field, file, column) and what (detector or entity type), never the
secret or personal value itself: at most a masked example.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ct_platform.settings import Spec
from ct_platform.training.datasets import TrainingSetRef
from ct_platform.training.gates import GateResult, MetadataValue

if TYPE_CHECKING:
    import pandas as pd

PII_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "IBAN_CODE", "CREDIT_CARD")
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# How many findings the one-line reason lists (metadata counts them all).
REASON_FINDINGS = 5


def mask(value: str) -> str:
    """`ab…yz (16 chars)`: enough to find the value again, not enough to use it."""
    if len(value) <= 6:
        return f"{'*' * len(value)} ({len(value)} chars)"
    return f"{value[:2]}{'*' * (len(value) - 4)}{value[-2:]} ({len(value)} chars)"


# ---- secrets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretFinding:
    location: str  # "spec: model.params.api_key", "bundle.json:12", "model.onnx: node ..."
    detector: str  # detect-secrets' type, e.g. "AWS Access Key"
    value: str = field(repr=False)  # in memory only: never described, logged or stored

    @property
    def masked(self) -> str:
        return mask(self.value)

    def describe(self) -> str:
        return f"{self.location}: {self.detector} ({self.masked})"


def scan_fields(fields: Mapping[str, str]) -> list[SecretFinding]:
    """detect-secrets over named values, each written as a `name: "value"` line (the form
    its keyword and high-entropy detectors read); findings are named by field."""
    names = list(fields)
    lines = [f'{name}: "{_one_line(fields[name])}"' for name in names]
    return [
        SecretFinding(names[line - 1], detector, value)
        for line, detector, value in _scan_text("\n".join(lines) + "\n", ".yaml")
    ]


def scan_files(paths: Iterable[Path]) -> list[SecretFinding]:
    """detect-secrets over files: text by line; ONNX graphs and skops files by the strings
    they embed (attributes, metadata, parameter values), each named by where it sits."""
    findings = []
    for path in paths:
        if path.suffix in EMBEDDED_STRINGS:
            strings = EMBEDDED_STRINGS[path.suffix](path)
            findings += scan_fields({f"{path.name}: {where}": v for where, v in strings.items()})
        else:
            text = path.read_text(errors="replace")
            findings += [
                SecretFinding(f"{path.name}:{line}", detector, value)
                for line, detector, value in _scan_text(text, path.suffix)
            ]
    return findings


def _onnx_strings(path: Path) -> dict[str, str]:
    """`{where: text}`: string attributes of every node, metadata, names and doc strings."""
    import onnx

    model = onnx.load(str(path))
    found: dict[str, str] = {f"metadata {p.key}": p.value for p in model.metadata_props}
    found |= {"doc_string": model.doc_string, "producer": model.producer_name}
    for node in model.graph.node:
        for attribute in node.attribute:
            where = f"node {node.name or node.op_type} {attribute.name}"
            if attribute.type == onnx.AttributeProto.STRING:
                found[where] = attribute.s.decode(errors="replace")
            elif attribute.type == onnx.AttributeProto.STRINGS:
                for i, text in enumerate(attribute.strings):
                    found[f"{where}[{i}]"] = text.decode(errors="replace")
    names = [v.name for v in [*model.graph.input, *model.graph.output, *model.graph.initializer]]
    found |= {f"name {i}": name for i, name in enumerate(names)}
    return _distinct(found)


def _skops_strings(path: Path) -> dict[str, str]:
    """`{json path: text}`: the string leaves of a skops file's schema (where parameter
    values live); its `.npy` members hold numeric arrays, and string arrays are read too."""
    import io

    import numpy as np

    found: dict[str, str] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            raw = archive.read(member)
            if member.endswith(".json"):
                found |= {f"{member} {k}": v for k, v in _string_leaves(json.loads(raw)).items()}
            elif member.endswith(".npy"):
                array = np.load(io.BytesIO(raw), allow_pickle=False)
                if array.dtype.kind in "US":
                    found |= {f"{member}[{i}]": str(v) for i, v in enumerate(array.ravel())}
    return _distinct(found)


# Structural keys of a skops schema: type names and ids, not values.
SKOPS_STRUCTURE = frozenset({"__class__", "__module__", "__loader__", "__id__", "type", "file"})


def _string_leaves(value: object, prefix: str = "") -> dict[str, str]:
    if isinstance(value, str):
        return {prefix: value}
    if isinstance(value, Mapping):
        items: Iterable[tuple[str, object]] = (
            (str(k), v) for k, v in value.items() if k not in SKOPS_STRUCTURE
        )
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {}
    found: dict[str, str] = {}
    for key, child in items:
        found |= _string_leaves(child, f"{prefix}.{key}" if prefix else key)
    return found


def _distinct(found: Mapping[str, str]) -> dict[str, str]:
    """Each text once (where it first sits): a tree ensemble repeats its node modes."""
    first: dict[str, str] = {}
    for where, text in found.items():
        if text and text not in first:
            first[text] = where
    return {where: text for text, where in first.items()}


EMBEDDED_STRINGS = {".onnx": _onnx_strings, ".skops": _skops_strings}


def secrets_gate(spec: Spec, model: object) -> GateResult:
    """No secret in the spec's values nor in the model's parameters (`get_params`)."""
    fields = {f"spec: {k}": v for k, v in _flatten(spec.model_dump(mode="json")).items()}
    fields |= {f"model param: {k}": v for k, v in _model_params(model).items()}
    return _secrets_result("secrets", scan_fields(fields), len(fields), "fields", spec)


def bundle_secrets_gate(bundle: Path, spec: Spec) -> GateResult:
    """No secret in the files of the bundle folder `bundle` (JSON, ONNX, skops).

    The bundle's own SHA-256 digests (the data fingerprint in `bundle.json`, and each
    `manifest.json` digest that matches its file) are high-entropy by nature and known:
    they are not reported.
    """
    bundle = Path(bundle)
    files = sorted(p for p in bundle.iterdir() if p.is_file())
    known = _bundle_digests(bundle)
    findings = [f for f in scan_files(files) if f.value not in known]
    return _secrets_result("bundle_secrets", findings, len(files), "files", spec)


def _bundle_digests(bundle: Path) -> set[str]:
    import hashlib

    from ct_platform.serving.bundle import META_FILE
    from ct_platform.serving.manifest import MANIFEST_FILE

    known = set()
    meta, manifest = bundle / META_FILE, bundle / MANIFEST_FILE
    if meta.exists():
        known.add(str(json.loads(meta.read_text()).get("fingerprint", "")))
    if manifest.exists():
        for name, digest in json.loads(manifest.read_text()).get("files", {}).items():
            path = bundle / name
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest:
                known.add(digest)
    return known


def _secrets_result(
    name: str, findings: list[SecretFinding], scanned: int, unit: str, spec: Spec
) -> GateResult:
    metadata: dict[str, MetadataValue] = {"scanned": scanned, "findings": len(findings)}
    for i, finding in enumerate(findings):
        metadata[f"finding/{i + 1}"] = finding.describe()
    if not findings:
        description = f"no secret found in {scanned} {unit} (detect-secrets default plugins)"
    else:
        listed = "; ".join(f.describe() for f in findings[:REASON_FINDINGS])
        more = len(findings) - REASON_FINDINGS
        description = f"{len(findings)} potential secret(s): {listed}" + (
            f"; and {more} more" if more > 0 else ""
        )
    return GateResult(
        name, not findings, spec.gates.security.secrets.blocking, description, metadata
    )


def _scan_text(text: str, suffix: str) -> list[tuple[int, str, str]]:
    """(line number, detector type, value) for each secret detect-secrets finds."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    with tempfile.TemporaryDirectory(prefix="ct-secrets-") as folder:
        path = Path(folder) / f"scanned{suffix or '.txt'}"
        path.write_text(text)
        collection = SecretsCollection()
        with default_settings():
            collection.scan_file(str(path))
        found = [
            (secret.line_number, secret.type, secret.secret_value or "")
            for _, secret in collection
            if not _names_a_variable(secret.type, secret.secret_value or "")
        ]
    return sorted(set(found))


def _names_a_variable(detector: str, value: str) -> bool:
    """A keyword match whose value is an environment variable's name (`api_key_env:
    CT_API_KEY`): the spec's way to point at a secret without holding it. Any other
    detector (AWS, GitHub, high entropy...) still judges the same value."""
    return detector == "Secret Keyword" and ENV_NAME.fullmatch(value) is not None


def _flatten(value: object, prefix: str = "") -> dict[str, str]:
    """`{"a.b.0": "text"}` for every scalar leaf of nested dicts and lists."""
    if isinstance(value, Mapping):
        items: Iterable[tuple[str, object]] = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((str(i), v) for i, v in enumerate(value))
    elif value is None:
        return {}
    else:
        return {prefix: str(value)}
    flat: dict[str, str] = {}
    for key, child in items:
        flat |= _flatten(child, f"{prefix}.{key}" if prefix else key)
    return flat


def _model_params(model: object) -> dict[str, str]:
    """Scalar parameters (and lists of scalars) of a scikit-learn estimator, deep."""
    params = model.get_params(deep=True) if hasattr(model, "get_params") else {}
    scalars = (str, int, float, bool)
    kept = {
        k: v
        for k, v in params.items()
        if isinstance(v, scalars)
        or (isinstance(v, list | tuple) and all(isinstance(x, scalars) for x in v))
    }
    return _flatten(kept)


def _one_line(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---- personal data -------------------------------------------------------------------------


@dataclass(frozen=True)
class PiiFinding:
    column: str
    entity: str
    count: int  # sampled rows whose value holds the entity
    sampled: int  # non-missing rows sampled from the column
    example: str  # masked

    @property
    def share(self) -> float:
        return self.count / self.sampled

    def describe(self) -> str:
        return (
            f"column '{self.column}': {self.entity} in {self.count} of {self.sampled} sampled "
            f"values ({self.share:.1%}), e.g. {self.example}"
        )


def pii_recognizers() -> list:
    """presidio's email, phone, IBAN and credit-card (Luhn) recognizers, pattern-only."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        PhoneRecognizer,
    )

    # The bundled public-suffix snapshot: no fetch (the default extractor downloads one).
    offline_suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline_suffixes(pattern_text).fqdn != ""

    return [OfflineEmailRecognizer(), PhoneRecognizer(), IbanRecognizer(), CreditCardRecognizer()]


def find_pii(frame: pd.DataFrame, sample_rows: int, seed: int = 0) -> list[PiiFinding]:
    """Entities in each text/category column of `frame`, on a seeded sample of its rows.

    Each distinct sampled value is analysed once and counted with its frequency.
    """
    import pandas as pd

    recognizers = pii_recognizers()
    findings = []
    for column in frame.columns:
        values = frame[column]
        if not (
            pd.api.types.is_object_dtype(values)
            or pd.api.types.is_string_dtype(values)
            or isinstance(values.dtype, pd.CategoricalDtype)
        ):
            continue
        present = values.dropna().astype(str)
        sample = present.sample(min(sample_rows, len(present)), random_state=seed)
        counts = sample.value_counts()
        findings += _column_findings(str(column), counts, len(sample), recognizers)
    return findings


def _column_findings(
    column: str, counts: pd.Series, sampled: int, recognizers: list
) -> list[PiiFinding]:
    hits: dict[str, tuple[int, str]] = {}
    for text, count in counts.items():
        for recognizer in recognizers:
            for result in recognizer.analyze(text, recognizer.supported_entities, None):
                total, example = hits.get(result.entity_type, (0, ""))
                example = example or mask(text[result.start : result.end])
                hits[result.entity_type] = (total + int(count), example)
    return [
        PiiFinding(column, entity, min(total, sampled), sampled, example)
        for entity, (total, example) in sorted(hits.items())
    ]


def pii_gate(frame: pd.DataFrame, spec: Spec) -> GateResult:
    """No column of the training frame holds personal data above `max_share` of its sample."""
    gate = spec.gates.security.pii
    findings = find_pii(frame, gate.sample_rows)
    over = [f for f in findings if f.share > gate.max_share]
    metadata: dict[str, MetadataValue] = {"max_share": gate.max_share}
    for finding in findings:
        key = f"{finding.column}/{finding.entity}"
        metadata |= {f"{key}/count": finding.count, f"{key}/share": finding.share}
    if over:
        description = "personal data: " + "; ".join(f.describe() for f in over)
    else:
        below = f" ({len(findings)} finding(s) within max_share)" if findings else ""
        description = f"no emails, phone numbers, IBANs or card numbers in the text columns{below}"
    return GateResult("pii", not over, gate.blocking, description, metadata)


def training_set_pii_gate(training_set: TrainingSetRef, spec: Spec) -> GateResult:
    """`pii_gate` over a training set's train and holdout rows together."""
    import pandas as pd

    return pii_gate(pd.concat([training_set.load_train(), training_set.load_holdout()]), spec)


# ---- known-vulnerable packages -------------------------------------------------------------


@dataclass(frozen=True)
class Advisory:
    package: str
    version: str
    advisory_id: str
    source: str

    def describe(self) -> str:
        return f"{self.package} {self.version}: {self.advisory_id} ({self.source})"


def installed_distributions() -> dict[str, str]:
    """`{normalized name: version}` of this interpreter's environment."""
    from importlib.metadata import distributions

    from packaging.utils import canonicalize_name

    return {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}


def serving_environment(spec: Spec) -> tuple[str, dict[str, str]]:
    """(what it is, `{name: version}`) of the environment the model is served from.

    The local target serves from this venv; the Docker image installs the `serving` extra's
    closure pinned to this venv's versions (`deployment.image.serving_requirements`).
    """
    if spec.serving.target == "docker":
        from ct_platform.deployment.image import serving_requirements

        pins = dict(line.split("==", 1) for line in serving_requirements())
        return f"serving image {spec.serving.docker_image}", pins
    return f"venv {sys.prefix}", installed_distributions()


def offline_advisories(path: Path, installed: Mapping[str, str]) -> list[Advisory]:
    """Installed versions affected according to an OSV JSON file.

    The file holds a list of OSV records (or `{"vulns": [...]}`, the OSV API's shape). A
    record's PyPI entries in `affected` match by their `versions` list or by `ECOSYSTEM`
    ranges (`introduced` / `fixed` / `last_affected` events), as the OSV schema defines.

    Raises:
        ValueError: the file is not valid JSON or not in that shape.
    """
    from packaging.utils import canonicalize_name

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"advisory file {path}: {exc}") from None
    records = raw.get("vulns") if isinstance(raw, dict) else raw
    if not isinstance(records, list):
        raise ValueError(
            f"advisory file {path}: expected a list of OSV records or {{'vulns': [...]}}"
        )
    found = []
    for record in records:
        for affected in record.get("affected", []):
            package = affected.get("package", {})
            if package.get("ecosystem") != "PyPI":
                continue
            name = canonicalize_name(package.get("name", ""))
            version = installed.get(name)
            if version is not None and _affects(affected, version):
                found.append(Advisory(name, version, record.get("id", "?"), Path(path).name))
    return found


def _affects(affected: Mapping, version: str) -> bool:
    from packaging.version import InvalidVersion, Version

    if version in affected.get("versions", []):
        return True
    try:
        installed = Version(version)
    except InvalidVersion:
        return False
    return any(
        _inside(span.get("events", []), installed)
        for span in affected.get("ranges", [])
        if span.get("type") == "ECOSYSTEM"
    )


def _inside(events: list[Mapping], installed: object) -> bool:
    """OSV range semantics: walk the events in version order up to `installed`; the
    version is affected when the last event reached is an `introduced`."""
    from packaging.version import Version

    inside = False
    for kind, value in sorted((next(iter(e.items())) for e in events), key=lambda e: Version(e[1])):
        bound = Version(value)
        reached = installed > bound if kind == "last_affected" else installed >= bound
        if not reached:
            break
        inside = kind == "introduced"
    return inside


@dataclass(frozen=True)
class OnlineAudit:
    advisories: list[Advisory]
    audited: int  # distributions the source answered for
    error: str  # why the source did not answer ("" when it did)


def pypi_audit(installed: Mapping[str, str], timeout: float) -> OnlineAudit:
    """pip-audit's PyPI service over the pinned distributions (`--no-deps --disable-pip`).

    A distribution PyPI gives no answer for is skipped by pip-audit; only the answered ones
    count as audited. pip-audit itself is asked first: when PyPI cannot answer for it, the
    source is unreachable and the other distributions are not tried (one timeout, not one
    per distribution).
    """
    from packaging.utils import canonicalize_name

    probe_name = canonicalize_name("pip-audit")
    probe = {probe_name: installed.get(probe_name) or _own_version("pip-audit")}
    reached = _run_pip_audit(probe, timeout)
    if reached.error:
        return OnlineAudit([], 0, f"{reached.error} (probe: pip-audit=={probe[probe_name]})")
    return _run_pip_audit(installed, timeout)


def _own_version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def _run_pip_audit(installed: Mapping[str, str], timeout: float) -> OnlineAudit:
    with tempfile.TemporaryDirectory(prefix="ct-audit-") as folder:
        requirements = Path(folder) / "requirements.txt"
        requirements.write_text("".join(f"{n}=={v}\n" for n, v in sorted(installed.items())))
        command = [
            sys.executable, "-m", "pip_audit", "-r", str(requirements), "--no-deps",
            "--disable-pip", "--vulnerability-service", "pypi", "--format", "json",
            "--progress-spinner", "off", "--timeout", str(max(1, round(timeout))),
            "--cache-dir", str(Path(folder) / "cache"),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    try:
        report = json.loads(done.stdout)
    except ValueError:
        error = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return OnlineAudit([], 0, error[:300])
    audited = [d for d in report.get("dependencies", []) if "skip_reason" not in d]
    advisories = [
        Advisory(d["name"], d["version"], v["id"], "PyPI via pip-audit")
        for d in audited
        for v in d.get("vulns", [])
    ]
    skipped = len(report.get("dependencies", [])) - len(audited)
    error = "" if audited else f"PyPI answered for none of {skipped} distribution(s)"
    return OnlineAudit(advisories, len(audited), error)


def vulnerabilities_gate(spec: Spec, installed: Mapping[str, str] | None = None) -> GateResult:
    """No distribution of the serving environment (`serving_environment`, or `installed`)
    has a known advisory.

    Sources: `gates.security.vulnerabilities.advisory_file` (offline OSV JSON) and, when
    `pypi` is on, PyPI through pip-audit. With neither answering the verdict is "unknown":
    the gate fails as a warning, whatever `blocking` says.
    """
    gate = spec.gates.security.vulnerabilities
    if installed is None:
        environment, installed = serving_environment(spec)
    else:
        environment, installed = "the distributions given", dict(installed)
    advisories: list[Advisory] = []
    sources, unanswered = [], []
    if gate.advisory_file is not None:
        path = (spec.base_dir / gate.advisory_file).resolve()
        advisories += offline_advisories(path, installed)
        sources.append(f"advisory file {path.name}")
    if gate.pypi:
        online = pypi_audit(installed, gate.timeout_seconds)
        advisories += online.advisories
        if online.error:
            unanswered.append(f"PyPI via pip-audit: {online.error}")
        else:
            sources.append(f"PyPI via pip-audit ({online.audited} answered)")
    metadata: dict[str, MetadataValue] = {
        "installed": len(installed),
        "advisories": len(advisories),
        "sources": ", ".join(sources) or "none",
        "unreachable": "; ".join(unanswered),
        "environment": environment,
    }
    for i, advisory in enumerate(advisories):
        metadata[f"advisory/{i + 1}"] = advisory.describe()
    if advisories:
        listed = "; ".join(a.describe() for a in advisories[:REASON_FINDINGS])
        return GateResult(
            "vulnerabilities",
            False,
            gate.blocking,
            f"{len(advisories)} known advisory(ies) in {environment}: {listed}",
            metadata,
        )
    if not sources:
        why = "; ".join(unanswered) or "no advisory source configured"
        return GateResult(
            "vulnerabilities",
            False,
            False,
            f"unknown: no advisory source answered ({why}); "
            f"{len(installed)} distributions of {environment} not audited",
            metadata,
        )
    return GateResult(
        "vulnerabilities",
        True,
        gate.blocking,
        f"no known advisory for {len(installed)} installed distributions ({', '.join(sources)})",
        metadata,
    )
