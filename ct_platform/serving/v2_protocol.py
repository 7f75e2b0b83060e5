"""Open Inference Protocol v2 (KServe v2) JSON: request tensors in, label/probability out.

An infer request carries either one tensor per feature column (named after the column,
shape `[n]` or `[n, 1]`; `BYTES` for categorical columns) or a single 2-D tensor of shape
`[n, n_columns]` in schema column order (`BYTES` when it mixes strings and numbers; numeric
cells may then be strings). Tensor `data` may be flat (row-major) or nested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson

from ct_platform.serving.bundle import BundleMeta, Prediction
from ct_platform.serving.schema import (
    JSON_NUMBERS,
    InputError,
    InputSchema,
    OverflowedNumber,
    ParsedRows,
    SchemaError,
    load_json,
    near_duplicates,
    quoting_as_sent,
    repeated_names,
    show,
)

# A tensor's element index -> whether its column takes integers only (an `int` column, an
# integer-coded category), whose own rule then judges a fraction, in every protocol's words.
_IntegersOnly = Callable[[int], bool]

# Value range of each numeric datatype (None: floating point, any JSON number).
NUMERIC_DATATYPES: dict[str, tuple[int, int] | None] = {
    **{f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (8, 16, 32, 64)},
    **{f"UINT{bits}": (0, 2**bits - 1) for bits in (8, 16, 32, 64)},
    **{f"FP{bits}": None for bits in (16, 32, 64)},
}


class InferAsks(NamedTuple):
    """What an infer body asks besides its rows."""

    # The body's own `id`, if it sent one.
    id: str | None
    # The outputs it names, in the order asked (`render_infer_response` answers exactly
    # those); None when it names none: every output.
    outputs: tuple[str, ...] | None


def parse_infer_request(
    body: bytes, schema: InputSchema, outputs: Sequence[str]
) -> tuple[ParsedRows, InferAsks]:
    """Parsed rows plus what the body asks besides them. `outputs`: the model's output
    names (`output_names`); a requested output not among them, named twice, or asked with
    `parameters` this server does not honour is refused (`InputError`)."""
    if not body.strip():
        raise InputError("empty request body")
    try:
        payload = load_json(body)
    except InputError:
        raise  # well-formed JSON no request can hold: its own words
    except ValueError as exc:
        raise InputError(f"request body is not valid JSON: {exc}") from None
    return quoting_as_sent(lambda sent: _parse_payload(sent, schema, outputs), payload, body)


def _parse_payload(
    payload: Any, schema: InputSchema, outputs: Sequence[str]
) -> tuple[ParsedRows, InferAsks]:
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        got = f"'inputs' is {show(payload.get('inputs'))}" if isinstance(payload, dict) else None
        raise InputError(
            f"expected a JSON object with an 'inputs' list of tensors; got {got or show(payload)}"
        )
    _refuse_binary_output(payload.get("parameters"))
    requested = _requested_outputs(payload.get("outputs"), outputs)
    tensors = payload["inputs"]
    if not tensors or not all(isinstance(tensor, dict) for tensor in tensors):
        raise InputError(
            f"'inputs' must be a non-empty list of tensor objects; got {show(tensors)}"
        )
    request_id = payload.get("id")
    asks = InferAsks(str(request_id) if request_id is not None else None, requested)
    name = tensors[0].get("name")
    # One tensor named after no column is the whole table (one named "Age" is a column's).
    if len(tensors) == 1 and name not in schema.names and not near_duplicates([name], schema.names):
        return _parse_table_tensor(tensors[0], schema), asks
    return _parse_column_tensors(tensors, schema), asks


def _refuse_binary_output(parameters: Any) -> None:
    """The request's `parameters` may carry other servers' hints (MLServer's
    `content_type`); `binary_data_output` (the binary tensor extension) asks for every
    output in a form this server does not write: refused, not answered otherwise."""
    if isinstance(parameters, dict) and parameters.get("binary_data_output", False) is not False:
        raise InputError(
            f'parameters: unsupported "binary_data_output": '
            f"{orjson.dumps(parameters['binary_data_output']).decode()}; this server answers "
            "every output as JSON data (the binary tensor extension is not served)"
        )


def _requested_outputs(requested: Any, outputs: Sequence[str]) -> tuple[str, ...] | None:
    """The names in the request's optional `outputs` (`[{"name": ...}]`), in its order;
    None when it names none (absent or `[]`: every output, as the protocol says).

    Each must be an output the model has, named once, and ask nothing of it this server
    does not do (`parameters` other than `"binary_data": false`, such as Triton's
    `classification` top-k or binary data): refused naming it, never silently ignored."""
    if requested is None:
        return None
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise InputError(
            f"'outputs' must be a list of objects like {{\"name\": ...}}; got {show(requested)}"
        )
    names = tuple(output.get("name") for output in requested)
    for index, (name, output) in enumerate(zip(names, requested, strict=True)):
        if name not in outputs:
            raise InputError(
                f"outputs[{index}]: unknown output {show(name)}; this model's outputs are "
                f"{list(outputs)}"
            )
        _check_output_parameters(index, name, output.get("parameters"))
    if len(set(names)) < len(names):
        raise InputError(
            f"'outputs': output(s) named more than once: {repeated_names(names)}; name each once"
        )
    return names or None


def _check_output_parameters(index: int, name: str, parameters: Any) -> None:
    """A requested output's `parameters`: none this server does not honour."""
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise InputError(
            f"outputs[{index}] ({show(name)}): 'parameters' must be an object; got "
            f"{show(parameters)}"
        )
    unsupported = {key: value for key, value in parameters.items() if key != "binary_data"}
    if parameters.get("binary_data", False) is not False:
        unsupported["binary_data"] = parameters["binary_data"]
    if unsupported:
        raise InputError(
            f"outputs[{index}] ({show(name)}): unsupported parameter(s) "
            f"{orjson.dumps(unsupported).decode()}; this server answers every output as "
            'JSON data, whole ("binary_data": false is the only parameter it takes)'
        )


def _parse_column_tensors(tensors: list[dict[str, Any]], schema: InputSchema) -> ParsedRows:
    by_name = {tensor.get("name"): tensor for tensor in tensors}
    if len(by_name) < len(tensors):
        repeated = repeated_names([tensor.get("name") for tensor in tensors])
        raise SchemaError(f"'inputs': tensor(s) sent more than once: {repeated}; send each once")
    unknown = [name for name in by_name if name not in schema.name_set]
    schema.refuse_near_duplicates(unknown, "tensor")
    missing = [name for name in schema.names if name not in by_name]
    if missing:
        sent = f"; sent unknown tensor(s) {unknown}" if unknown else ""
        raise InputError(
            f"missing input tensor(s) for column(s) {missing}{sent}; the model expects one "
            f"per column: {schema.names}"
        )
    ignored = schema.kept_out(unknown, "tensor")
    columns: dict[str, list[Any]] = {}
    text_columns = set()
    shapes = {name: _shape(by_name[name]) for name in schema.names}
    schema.bound_rows(max(shape[0] for shape in shapes.values()))
    for column in schema.columns:
        tensor = by_name[column.name]
        datatype = _datatype(tensor)
        if column.is_numeric and datatype not in NUMERIC_DATATYPES and datatype != "BYTES":
            raise InputError(
                f"tensor '{column.name}': datatype {datatype} is not numeric; send one of "
                f"{[*NUMERIC_DATATYPES, 'BYTES']}"
            )
        integers_only = schema.integers_only(column.name)
        # An integer datatype (bounds) for a category column whose categories are integers.
        integer_category = integers_only and NUMERIC_DATATYPES.get(datatype) is not None
        if not column.is_numeric and datatype != "BYTES" and not integer_category:
            coded = " (or an integer datatype: its categories are integers)"
            raise InputError(
                f"tensor '{column.name}': categorical column needs datatype BYTES"
                f"{coded if integers_only else ''}, got {datatype}"
            )
        if datatype == "BYTES":
            text_columns.add(column.name)
        shape = shapes[column.name]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InputError(f"tensor '{column.name}': shape must be [n] or [n, 1], got {shape}")
        columns[column.name] = _flat_data(
            tensor,
            datatype,
            expected=shape[0],
            integers_only=lambda _, only=integers_only: only,
        )
    return schema.from_columns(columns, text=frozenset(text_columns)).ignoring(ignored)


def _parse_table_tensor(tensor: dict[str, Any], schema: InputSchema) -> ParsedRows:
    width = len(schema.names)
    shape = _shape(tensor)
    if len(shape) != 2 or shape[1] != width:
        raise InputError(
            f"tensor '{tensor.get('name')}': expected shape [n, {width}] (columns "
            f"{schema.names}), or one tensor per column; got shape {shape}"
        )
    schema.bound_rows(shape[0])
    datatype = _datatype(tensor)
    if datatype != "BYTES" and datatype not in NUMERIC_DATATYPES:
        raise InputError(
            f"tensor '{tensor.get('name')}': unsupported datatype {datatype}; send one of "
            f"{[*NUMERIC_DATATYPES, 'BYTES']}"
        )
    integers_only = [schema.integers_only(name) for name in schema.names]
    values = _flat_data(
        tensor,
        datatype,
        expected=shape[0] * width,
        integers_only=lambda element: integers_only[element % width],
    )
    rows = [values[start : start + width] for start in range(0, len(values), width)]
    return schema.from_split(schema.names, rows, text=datatype == "BYTES")


def _datatype(tensor: dict[str, Any]) -> str:
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str):
        raise InputError(
            f"tensor '{tensor.get('name')}': 'datatype' must be a string such as \"FP64\" or "
            f'"BYTES"; got {show(datatype)}'
        )
    return datatype.upper()


def _shape(tensor: dict[str, Any]) -> list[int]:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(size) is int and size >= 0 for size in shape)
    ):
        raise InputError(
            f"tensor '{tensor.get('name')}': 'shape' must be a list of sizes; got {show(shape)}"
        )
    return shape


def _flat_data(
    tensor: dict[str, Any], datatype: str, *, expected: int, integers_only: _IntegersOnly
) -> list[Any]:
    data = tensor.get("data")
    if not isinstance(data, list):
        raise InputError(f"tensor '{tensor.get('name')}': 'data' must be a list; got {show(data)}")
    flat = _flatten(data)
    if len(flat) != expected:
        raise InputError(
            f"tensor '{tensor.get('name')}': shape says {expected} values, data has {len(flat)}"
        )
    if datatype in NUMERIC_DATATYPES:
        _check_numeric_elements(tensor.get("name"), datatype, flat, integers_only)
    return flat


def _check_numeric_elements(
    name: Any, datatype: str, values: list[Any], integers_only: _IntegersOnly
) -> None:
    """Every element of a numeric tensor is a number its datatype holds, or one the
    schema's rule judges as in every protocol, naming the row and column: null and the NaN
    literal (missing, in an integer tensor too), an infinite value, one beyond float64.

    An integer datatype takes an integral JSON number however it is written (`30.0` is
    30, as in the JSON formats); a fraction is left to the rule of a column that takes
    integers only (refused in every protocol's words: "expected an integer, got 30.5"),
    and refused as not of the datatype for a `float` column.
    BYTES elements are checked by the schema's rule for text protocols instead.
    """
    bounds = NUMERIC_DATATYPES[datatype]
    for position, value in enumerate(values):
        kind = type(value)
        if (
            value is None
            or kind is OverflowedNumber
            or (kind is float and not math.isfinite(value))
        ):
            continue
        fits = kind in JSON_NUMBERS and (
            bounds is None
            or (
                bounds[0] <= value <= bounds[1]
                and (float(value).is_integer() or integers_only(position))
            )
        )
        if not fits:
            hint = "; send text in a BYTES tensor" if isinstance(value, str) else ""
            raise InputError(
                f"tensor '{name}' element {position}: {show(value)} is not a {datatype} value{hint}"
            )


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def render_infer_response(
    prediction: Prediction,
    meta: BundleMeta,
    request_id: str | None,
    requested: Sequence[str] | None = None,
) -> bytes:
    """The infer response: the `requested` output tensors, in that order (names checked by
    `parse_infer_request`); None: every output of the model (`output_names`)."""
    if prediction.values is not None:
        arrays = {"value": prediction.values}
    else:
        # A scikit-learn classifier without `predict_proba` has no probabilities to give.
        arrays = {"label": prediction.labels, "probabilities": prediction.proba}
    names = [name for name in output_names(meta) if arrays[name] is not None]
    if requested is not None:
        missing = [name for name in requested if arrays[name] is None]
        if missing:
            raise ValueError(f"model {meta.version} computes no {missing}")
        names = list(requested)
    response: dict[str, Any] = {
        "model_name": meta.name,
        "model_version": meta.version,
        "outputs": [_tensor(name, arrays[name]) for name in names],
    }
    if request_id is not None:
        response["id"] = request_id
    return orjson.dumps(response)


def _tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(values.shape),
        "datatype": v2_datatype(values.dtype),
        "data": values.ravel().tolist(),
    }


def v2_datatype(dtype: np.dtype) -> str:
    if dtype.kind in "iu":
        return f"{'INT' if dtype.kind == 'i' else 'UINT'}{dtype.itemsize * 8}"
    if dtype.kind == "f":
        return f"FP{dtype.itemsize * 8}"
    if dtype.kind == "b":
        return "BOOL"
    return "BYTES"


# What each column type is listed as: the datatype a client builds its tensors from, which
# the infer route accepts as such (an `int` column refuses fractions, so not FP64).
_METADATA_DATATYPES = {"int": "INT64", "float": "FP64", "category": "BYTES"}


def output_names(meta: BundleMeta) -> list[str]:
    """The output tensors an infer response carries (`render_infer_response`)."""
    return ["label", "probabilities"] if meta.task == "classification" else ["value"]


def model_metadata(meta: BundleMeta, backend: str) -> dict[str, Any]:
    inputs = [
        {
            "name": column.name,
            "datatype": _METADATA_DATATYPES[column.type],
            "shape": [-1, 1],
        }
        for column in meta.columns
    ]
    # The ONNX graph computes in float32; the sklearn fallback in float64.
    float_type = "FP32" if backend == "onnx" else "FP64"
    if meta.task == "classification":
        label_type = "BYTES" if any(isinstance(c, str) for c in meta.classes or []) else "INT64"
        outputs = [
            {"name": "label", "datatype": label_type, "shape": [-1]},
            {
                "name": "probabilities",
                "datatype": float_type,
                "shape": [-1, len(meta.classes or [])],
            },
        ]
    else:
        outputs = [{"name": "value", "datatype": float_type, "shape": [-1]}]
    metadata: dict[str, Any] = {
        "name": meta.name,
        "versions": [meta.version],
        "platform": "onnxruntime_onnx" if backend == "onnx" else "scikit-learn",
        "inputs": inputs,
        "outputs": outputs,
    }
    if meta.semver:  # optional `parameters`, as MLServer's metadata response has them
        metadata["parameters"] = {"semantic_version": meta.semver}
    return metadata
