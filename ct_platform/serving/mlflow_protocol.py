"""The MLflow scoring protocol (`POST /invocations`), as `mlflow models serve` speaks it.

Accepted bodies, like MLflow's scoring server: JSON with exactly one of `dataframe_split`,
`dataframe_records`, `instances`, `inputs` (plus an optional, ignored `params`), or CSV with
a header row. Answer: `{"predictions": [...]}`: labels for a classifier (what MLflow's
sklearn flavour returns from `predict`), values for a regressor. Content-type problems are
415 with a plain-text message, like MLflow; everything else wrong is an `InputError` (400).
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from typing import Any

import orjson

from ct_platform.serving.bundle import Prediction
from ct_platform.serving.schema import (
    InputError,
    InputSchema,
    ParsedRows,
    decode_text,
    load_json,
    quoting_as_sent,
    show,
)

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_CSV = "text/csv"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_FORMAT_SET = frozenset(FORMATS)
REQUIRED_INPUT_FORMAT = (
    f"The input must be a JSON dictionary with exactly one of the input fields {set(FORMATS)}"
)


class UnsupportedMediaType(ValueError):
    """415: the content type (or its charset) is not one the server reads."""


def parse_invocation(body: bytes, content_type: str | None, schema: InputSchema) -> ParsedRows:
    mime_type = _check_content_type(content_type)
    if not body or body.isspace():  # no copy of the body, as `strip` makes
        raise InputError("empty request body")
    if mime_type == CONTENT_TYPE_CSV:
        return parse_csv(body, schema)
    return parse_json(body, schema)


# A client sends the same few content types again and again: parse each once (~10k
# instructions a request otherwise). Refused ones raise, and are not cached.
@lru_cache(maxsize=256)
def _check_content_type(content_type: str | None) -> str:
    if not content_type:
        raise UnsupportedMediaType(
            f"missing Content-Type: send {CONTENT_TYPE_JSON} or {CONTENT_TYPE_CSV}"
        )
    # RFC 9110 8.3.1: type, subtype and parameter names are case-insensitive; a parameter
    # value may be a quoted string.
    mime_type, *parameters = (part.strip() for part in content_type.split(";"))
    mime_type = mime_type.lower()
    options = {
        key.strip().lower(): value.strip().strip('"')
        for key, _, value in (p.partition("=") for p in parameters if p)
    }
    if options.pop("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("The scoring server only supports UTF-8")
    if options:
        raise UnsupportedMediaType(f"Unrecognized content type parameters: {', '.join(options)}")
    if mime_type not in (CONTENT_TYPE_JSON, CONTENT_TYPE_CSV):
        raise UnsupportedMediaType(
            "This predictor only supports the following content types: "
            f"{[CONTENT_TYPE_JSON, CONTENT_TYPE_CSV]}. Got '{content_type}'."
        )
    return mime_type


def parse_json(body: bytes, schema: InputSchema) -> ParsedRows:
    # Many rows in `dataframe_split`, as sent for batch scoring: decoded to typed rows.
    typed = schema.from_split_body(body)
    if typed is not None:
        return typed
    try:
        payload = load_json(body)
    except InputError:
        raise  # well-formed JSON no request can hold: its own words
    except ValueError as exc:
        raise InputError(
            f"Ensure that input is a valid JSON formatted string. Error: {exc}"
        ) from None
    return quoting_as_sent(lambda sent: _parse_payload(sent, schema), payload, body)


def _parse_payload(payload: Any, schema: InputSchema) -> ParsedRows:
    if not isinstance(payload, dict):
        raise InputError(f"{REQUIRED_INPUT_FORMAT}. Received a {type(payload).__name__}.")
    present = _FORMAT_SET.intersection(payload)
    if len(present) != 1:
        raise InputError(
            f"{REQUIRED_INPUT_FORMAT}. Received dictionary with input fields: {list(payload)}"
        )
    (key,) = present
    data = payload[key]
    if key == "dataframe_split":
        if not isinstance(data, dict):
            raise InputError(
                f"'dataframe_split' must be an object with 'columns' and 'data'; got {show(data)}"
            )
        return schema.from_split(data.get("columns"), data.get("data"))
    if key == "dataframe_records":
        if not isinstance(data, list):
            raise InputError(f"'dataframe_records' must be a list of row objects; got {show(data)}")
        return schema.from_records(data)
    return _parse_tensor_style(key, data, schema)


def _parse_tensor_style(key: str, data: Any, schema: InputSchema) -> ParsedRows:
    # TF-serving style: `{column: [values]}` or a list of row objects.
    if isinstance(data, dict):
        return schema.from_columns(data)
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return schema.from_records(data)
    raise InputError(
        f"'{key}' must be an object of named columns or a list of row objects "
        f"(the model has named columns, so positional rows are ambiguous); got {show(data)}"
    )


def parse_csv(body: bytes, schema: InputSchema) -> ParsedRows:
    try:
        text = decode_text(body)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"Ensure that input is a valid UTF-8 encoded string. Error: {exc}"
        ) from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InputError(f"Failed to parse input as CSV: {exc}") from None
    if not rows:
        raise InputError("empty CSV: expected a header row and at least one data row")
    header, data = rows[0], [row for row in rows[1:] if row]
    return schema.from_split(header, data, text=True)


def render_predictions(prediction: Prediction) -> bytes:
    values = prediction.labels if prediction.labels is not None else prediction.values
    return orjson.dumps({"predictions": values.tolist()})
