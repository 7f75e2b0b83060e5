"""Open Inference Protocol v2 over real HTTP: health, metadata, infer in both tensor layouts."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from ct_platform.settings import Spec
from ct_platform_tests.serving.conftest import MODEL_NAME, ThreadedServer, raw_rows

N = 20


@pytest.fixture(scope="module")
def rows(holdout: pd.DataFrame, bank_spec: Spec) -> list[dict]:
    return raw_rows(holdout, bank_spec, N)


@pytest.fixture(scope="module")
def expected(fitted_pipeline: Pipeline, holdout: pd.DataFrame, bank_spec: Spec) -> tuple:
    features = holdout[bank_spec.dataset.feature_columns].iloc[:N]
    return fitted_pipeline.predict(features).tolist(), fitted_pipeline.predict_proba(features)


def column_tensors(rows: list[dict], spec: Spec) -> list[dict]:
    return [
        {
            "name": column,
            "shape": [len(rows), 1],
            "datatype": "FP64" if spec.dataset.columns[column].is_numeric else "BYTES",
            "data": [row[column] for row in rows],
        }
        for column in spec.dataset.feature_columns
    ]


def table_tensor(rows: list[dict], spec: Spec) -> dict:
    columns = spec.dataset.feature_columns
    return {
        "name": "input-0",
        "shape": [len(rows), len(columns)],
        "datatype": "BYTES",
        "data": [[row[c] for c in columns] for row in rows],
    }


def infer(server: ThreadedServer, payload: object, model: str = MODEL_NAME) -> httpx.Response:
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=payload, timeout=10)


def test_health_and_metadata(open_server: ThreadedServer, bank_spec: Spec) -> None:
    url = open_server.url
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{url}/v2").json()["name"] == "ct-platform"
    assert httpx.get(f"{url}/v2/models/{MODEL_NAME}/ready").json()["ready"] is True
    metadata = httpx.get(f"{url}/v2/models/{MODEL_NAME}").json()
    assert metadata["name"] == MODEL_NAME and metadata["versions"] == ["1"]
    assert [i["name"] for i in metadata["inputs"]] == bank_spec.dataset.feature_columns
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]


def test_metadata_lists_each_column_as_the_datatype_infer_accepts(
    open_server: ThreadedServer, bank_spec: Spec, holdout: pd.DataFrame
) -> None:
    """The newcomer's case: `int` columns were listed as FP64. A client that builds its
    tensors from the metadata alone gets a 200."""
    metadata = httpx.get(f"{open_server.url}/v2/models/{MODEL_NAME}").json()
    listed = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    expected = {"int": "INT64", "float": "FP64", "category": "BYTES"}
    columns = bank_spec.dataset.columns
    assert listed == {name: expected[columns[name].type] for name in listed}
    assert "INT64" in listed.values()
    rows = raw_rows(holdout, bank_spec, 2)
    tensors = [
        {"name": name, "shape": [2, 1], "datatype": listed[name], "data": [r[name] for r in rows]}
        for name in listed
    ]
    assert infer(open_server, {"inputs": tensors}).status_code == 200


def test_unknown_model_is_404(open_server: ThreadedServer) -> None:
    assert httpx.get(f"{open_server.url}/v2/models/nope").status_code == 404
    response = infer(open_server, {"inputs": []}, model="nope")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


@pytest.mark.parametrize("layout", ["columns", "table"])
def test_infer_matches_pipeline(
    open_server: ThreadedServer, rows: list[dict], expected: tuple, bank_spec: Spec, layout: str
) -> None:
    labels, proba = expected
    inputs = (
        column_tensors(rows, bank_spec) if layout == "columns" else [table_tensor(rows, bank_spec)]
    )
    response = infer(open_server, {"id": "req-7", "inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL_NAME and body["model_version"] == "1"
    assert body["id"] == "req-7"
    outputs = {output["name"]: output for output in body["outputs"]}
    assert outputs["label"]["data"] == labels and outputs["label"]["shape"] == [N]
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["probabilities"]["shape"] == [N, 2]
    served = np.array(outputs["probabilities"]["data"]).reshape(N, 2)
    assert np.abs(served - proba).max() < 1e-4


BAD_V2_CASES = {
    "no inputs": ({"outputs": []}, "inputs"),
    "missing column tensor": ("drop-age", "age"),
    "category as number type": ("job-fp64", "BYTES"),
    "shape and data disagree": ("short-data", "values"),
    "table of wrong width": ("narrow-table", "shape"),
}


def bad_payload(kind: object, rows: list[dict], spec: Spec) -> object:
    if isinstance(kind, dict):
        return kind
    tensors = column_tensors(rows[:2], spec)
    if kind == "drop-age":
        tensors = [t for t in tensors if t["name"] != "age"]
    elif kind == "job-fp64":
        next(t for t in tensors if t["name"] == "job")["datatype"] = "FP64"
    elif kind == "short-data":
        tensors[0]["data"] = tensors[0]["data"][:1]
    elif kind == "narrow-table":
        table = table_tensor(rows[:2], spec)
        table["shape"] = [2, 3]
        tensors = [table]
    return {"inputs": tensors}


@pytest.mark.parametrize("case", list(BAD_V2_CASES))
def test_bad_infer_request_is_400(
    open_server: ThreadedServer, rows: list[dict], bank_spec: Spec, case: str
) -> None:
    kind, expected_in_message = BAD_V2_CASES[case]
    response = infer(open_server, bad_payload(kind, rows, bank_spec))
    assert response.status_code == 400, response.text
    assert expected_in_message in response.json()["error"]


def test_malformed_infer_body_is_400(open_server: ThreadedServer) -> None:
    for content in (b"", b"{not json"):
        response = httpx.post(f"{open_server.url}/v2/models/{MODEL_NAME}/infer", content=content)
        assert response.status_code == 400
        assert "error" in response.json()


def test_a_column_sent_twice_is_400_naming_it(
    open_server: ThreadedServer, rows: list[dict], bank_spec: Spec
) -> None:
    """Two `age` tensors (56 and 57): which one would be scored? Neither: 400 naming it."""
    tensors = column_tensors(rows[:1], bank_spec)
    age = next(t for t in tensors if t["name"] == "age")
    tensors.append({**age, "data": [age["data"][0] + 1]})
    response = infer(open_server, {"inputs": tensors})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == (
        f"'inputs': tensor(s) sent more than once: 'age' (positions 0 and {len(tensors) - 1}); "
        "send each once"
    )


@pytest.mark.parametrize(
    ("outputs", "error"),
    [
        (
            [{"name": "nope"}],
            'outputs[0]: unknown output "nope"; this model\'s outputs are '
            "['label', 'probabilities']",
        ),
        (
            [{"name": "label"}, {"name": "Label"}],
            'outputs[1]: unknown output "Label"; this model\'s outputs are '
            "['label', 'probabilities']",
        ),
        ("label", '\'outputs\' must be a list of objects like {"name": ...}; got "label"'),
    ],
)
def test_unknown_requested_output_is_400_naming_it_and_the_available_ones(
    open_server: ThreadedServer, rows: list[dict], bank_spec: Spec, outputs: object, error: str
) -> None:
    """A newcomer's finding: `"outputs":[{"name":"nope"}]` was ignored with a 200."""
    payload = {"inputs": column_tensors(rows[:1], bank_spec), "outputs": outputs}
    response = infer(open_server, payload)
    assert (response.status_code, response.json()["error"]) == (400, error)
    known = {"inputs": payload["inputs"], "outputs": [{"name": "label"}]}
    assert infer(open_server, known).status_code == 200


@pytest.mark.parametrize(
    "asked",
    [["label"], ["probabilities"], ["probabilities", "label"], ["label", "probabilities"]],
)
def test_answer_holds_exactly_the_requested_outputs_in_the_order_asked(
    open_server: ThreadedServer,
    rows: list[dict],
    expected: tuple,
    bank_spec: Spec,
    asked: list[str],
) -> None:
    """A finding: `"outputs": [{"name": "label"}]` got both tensors back. The protocol's
    answer holds the requested outputs: exactly those, in the order asked."""
    labels, proba = expected
    payload = {
        "inputs": column_tensors(rows, bank_spec),
        "outputs": [{"name": name} for name in asked],
    }
    response = infer(open_server, payload)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [output["name"] for output in outputs] == asked
    by_name = {output["name"]: output for output in outputs}
    if "label" in by_name:
        assert (by_name["label"]["shape"], by_name["label"]["data"]) == ([N], labels)
    if "probabilities" in by_name:
        assert by_name["probabilities"]["shape"] == [N, 2]
        served = np.array(by_name["probabilities"]["data"]).reshape(N, 2)
        assert np.abs(served - proba).max() < 1e-4


@pytest.mark.parametrize("outputs", [None, []])
def test_no_output_named_answers_every_output(
    open_server: ThreadedServer, rows: list[dict], bank_spec: Spec, outputs: list | None
) -> None:
    payload = {"inputs": column_tensors(rows[:2], bank_spec)}
    if outputs is not None:
        payload["outputs"] = outputs
    response = infer(open_server, payload)
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize(
    ("outputs", "error"),
    [
        (
            [{"name": "label"}, {"name": "probabilities"}, {"name": "label"}],
            "'outputs': output(s) named more than once: 'label' (positions 0 and 2); "
            "name each once",
        ),
        (
            [{"name": "label", "parameters": {"classification": 1}}],
            'outputs[0] ("label"): unsupported parameter(s) {"classification":1}; this server '
            'answers every output as JSON data, whole ("binary_data": false is the only '
            "parameter it takes)",
        ),
        (
            [{"name": "probabilities", "parameters": {"binary_data": True}}],
            'outputs[0] ("probabilities"): unsupported parameter(s) {"binary_data":true}; '
            'this server answers every output as JSON data, whole ("binary_data": false is '
            "the only parameter it takes)",
        ),
        (
            [{"name": "label", "parameters": "top-1"}],
            'outputs[0] ("label"): \'parameters\' must be an object; got "top-1"',
        ),
    ],
)
def test_an_output_asked_twice_or_in_a_way_not_served_is_400_naming_it(
    open_server: ThreadedServer, rows: list[dict], bank_spec: Spec, outputs: object, error: str
) -> None:
    """Top-k classification or binary data asked of an output would be answered otherwise
    than asked: refused, naming the output and the parameter."""
    payload = {"inputs": column_tensors(rows[:1], bank_spec), "outputs": outputs}
    response = infer(open_server, payload)
    assert (response.status_code, response.json()["error"]) == (400, error)


def test_binary_data_false_is_what_the_server_does(
    open_server: ThreadedServer, rows: list[dict], bank_spec: Spec
) -> None:
    payload = {
        "inputs": column_tensors(rows[:1], bank_spec),
        "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
    }
    response = infer(open_server, payload)
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["label"]


def test_binary_output_asked_of_the_whole_request_is_400_and_other_parameters_pass(
    open_server: ThreadedServer, rows: list[dict], bank_spec: Spec
) -> None:
    """Triton's `binary_data_output` would get JSON back without a word: refused. Another
    server's hint, such as MLServer's `content_type`, changes nothing here and passes."""
    inputs = column_tensors(rows[:1], bank_spec)
    binary = infer(open_server, {"inputs": inputs, "parameters": {"binary_data_output": True}})
    assert (binary.status_code, binary.json()["error"]) == (
        400,
        'parameters: unsupported "binary_data_output": true; this server answers every output '
        "as JSON data (the binary tensor extension is not served)",
    )
    hinted = infer(open_server, {"inputs": inputs, "parameters": {"content_type": "pd"}})
    assert hinted.status_code == 200, hinted.text
