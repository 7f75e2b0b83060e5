"""OpenAPI 3.1 description of the HTTP surface, with the model's input row as a schema.

Written out rather than generated from docstrings: starlette's generator needs pyyaml,
which the slim serving image does not carry.
"""

from __future__ import annotations

from typing import Any

from ct_platform.serving.bundle import BundleMeta, ColumnSchema

_JSON = "application/json"
_ERROR = {"$ref": "#/components/schemas/Error"}


def openapi_document(meta: BundleMeta) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ct-platform model server",
            "version": "1",
            "description": f"Serves model '{meta.name}' (MLflow scoring protocol and "
            "Open Inference Protocol v2).",
        },
        "paths": {
            "/ping": _get("Health check (MLflow protocol)"),
            "/health": _get("Health check (MLflow protocol)"),
            "/version": _get("Protocol version"),
            "/invocations": _invocations(),
            "/v2": _get("Server metadata (Open Inference Protocol)"),
            "/v2/health/live": _get("Server live"),
            "/v2/health/ready": _get("Server ready"),
            "/v2/models/{name}": _get("Model metadata", parameters=_NAME),
            "/v2/models/{name}/ready": _get("Model ready", parameters=_NAME),
            "/v2/models/{name}/infer": _v2_infer(_NAME),
            # Only a version the server answers with; a 404 names those it does.
            "/v2/models/{name}/versions/{version}": _get(
                "Model metadata of a served version", parameters=_VERSIONED
            ),
            "/v2/models/{name}/versions/{version}/ready": _get(
                "Model version ready", parameters=_VERSIONED
            ),
            "/v2/models/{name}/versions/{version}/infer": _v2_infer(_VERSIONED),
            "/v2/models/{name}/card": _get(
                "Model card: Markdown, or HTML with ?format=html or Accept: text/html",
                parameters=_NAME,
            ),
            "/feedback": _feedback(),
            "/metrics": _get("Prometheus metrics (text exposition format)"),
            "/admin/slots": _get("Slots and routing (bearer admin token)"),
            "/admin/slots/{slot}/load": _admin_post("Load a bundle into 'stable' or 'candidate'"),
            "/admin/routing": _admin_post("Set candidate_weight (0..1) and shadow mode"),
            "/admin/promote": _admin_post("Promote the candidate to stable"),
            "/admin/rollback": _admin_post("Swap the previous stable back in"),
        },
        "components": {
            "schemas": {
                "Row": _row_schema(meta.columns),
                "Error": {
                    "type": "object",
                    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _row_schema(columns: list[ColumnSchema]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [column.name for column in columns],
        "properties": {column.name: _column_schema(column) for column in columns},
    }


def _column_schema(column: ColumnSchema) -> dict[str, Any]:
    if column.is_numeric:
        schema: dict[str, Any] = {"type": "integer" if column.type == "int" else "number"}
        # The contract's range (a sentinel outside it, e.g. pdays 999, is accepted too).
        if column.min is not None:
            schema["minimum"] = column.min
        if column.max is not None:
            schema["maximum"] = column.max
    else:
        schema = {"type": "string"}
        if column.categories:
            schema["enum"] = list(column.categories)
    if column.nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _responses(extra: dict[str, str] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK"}}
    for status, description in (extra or {}).items():
        responses[status] = {"description": description, "content": {_JSON: {"schema": _ERROR}}}
    return responses


def _get(summary: str, *, parameters: tuple[str, ...] = ()) -> dict[str, Any]:
    """A GET operation; `parameters`: the names of its path parameters."""
    operation: dict[str, Any] = {"summary": summary, "responses": _responses()}
    if parameters:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in parameters
        ]
    return {"get": operation}


_NAME = ("name",)
_VERSIONED = ("name", "version")
_PREDICT_ERRORS = {
    "400": "Invalid input (the message names the column)",
    "401": "Missing or invalid API key",
    "413": "Body over the size limit, or more rows than a request may hold (judged before "
    "any value)",
    "422": "A value outside the data contract (min, max, categories, nullable); the message "
    "names row, column, value and rule (policy serving.out_of_contract: reject)",
}


def _invocations() -> dict[str, Any]:
    rows = {"type": "array", "items": {"$ref": "#/components/schemas/Row"}}
    return {
        "post": {
            "summary": "Score rows (MLflow scoring protocol)",
            "security": [{"apiKey": []}, {"bearer": []}],
            "requestBody": {
                "content": {
                    _JSON: {
                        "schema": {
                            "oneOf": [
                                {"type": "object", "properties": {"dataframe_records": rows}},
                                {
                                    "type": "object",
                                    "properties": {"dataframe_split": {"type": "object"}},
                                },
                                {"type": "object", "properties": {"instances": rows}},
                                {"type": "object", "properties": {"inputs": {"type": "object"}}},
                            ]
                        }
                    },
                    "text/csv": {"schema": {"type": "string"}},
                }
            },
            "responses": _responses({**_PREDICT_ERRORS, "415": "Unsupported content type"}),
        }
    }


def _v2_infer(parameters: tuple[str, ...]) -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
        },
    }
    requested_output = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data": {"const": False}}},
        },
    }
    body = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": tensor},
            # The answer holds exactly these outputs, in this order; none named: all.
            "outputs": {"type": "array", "items": requested_output},
        },
    }
    operation = _get("Infer (Open Inference Protocol v2)", parameters=parameters)["get"]
    operation.update(
        {
            "security": [{"apiKey": []}, {"bearer": []}],
            "requestBody": {"content": {_JSON: {"schema": body}}},
            "responses": _responses({**_PREDICT_ERRORS, "404": "Unknown model or version"}),
        }
    )
    return {"post": operation}


def _feedback() -> dict[str, Any]:
    item = {
        "type": "object",
        "required": ["request_id", "label"],
        "properties": {"request_id": {"type": "string"}, "label": {"type": ["number", "string"]}},
    }
    return {
        "post": {
            "summary": "Ground-truth labels by request id (one object or a list)",
            "requestBody": {
                "content": {_JSON: {"schema": {"oneOf": [item, {"type": "array", "items": item}]}}}
            },
            "responses": _responses(
                {
                    "400": "Invalid feedback",
                    "422": "A label the target of the model version that answered its "
                    "request cannot take (not one of its classes; not a finite number "
                    "within target_rules): names item, value, rule and version; nothing "
                    "recorded",
                }
            ),
        }
    }


def _admin_post(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": _responses(
                {"401": "Bad token", "403": "Admin API disabled", "409": "Not possible now"}
            ),
        }
    }
