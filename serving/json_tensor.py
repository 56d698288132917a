"""JSON <-> tensor conversion with the rules and messages of TF Serving's `util/json_tensor.cc`.

Requests: row format (`"instances"`) and columnar format (`"inputs"`), values converted to
the signature's dtype; classify/regress `"examples"` (and `"context"`) become serialized
`tf.train.Example`s. Responses: floats printed like the real server (six significant digits
when they round-trip, else full precision; whole numbers end in `.0`; `NaN`, `Infinity`).
"""

import base64
import binascii
import json
import math

import numpy as np
import orjson

from serving.errors import ServingError, invalid

_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1), "int16": (-(2**31), 2**31 - 1), "int8": (-(2**31), 2**31 - 1),
    "uint8": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1), "uint64": (0, 2**64 - 1),
}
_NUMPY = {
    "float": np.float32, "double": np.float64, "int32": np.int32, "int16": np.int16,
    "int8": np.int8, "uint8": np.uint8, "int64": np.int64, "uint32": np.uint32,
    "uint64": np.uint64, "bool": np.bool_, "string": object,
}
_FLOAT_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------- writing
def format_float(value, double=False):
    """A float the way TF Serving's `WriteDecimal` writes it."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = "%g" % value
    roundtrip = float(text) if double else np.float32(float(text))
    if roundtrip != (value if double else np.float32(value)):
        text = ("%.17g" if double else "%.9g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _scalar_json(value, kind, as_bytes):
    if kind == "f":
        return format_float(value, double=value.dtype == np.float64)
    if kind == "b":
        return "true" if value else "false"
    if kind in "iu":
        return str(int(value))
    if kind in "OSU":
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        if as_bytes:
            return '{"b64": "%s"}' % base64.b64encode(raw).decode("ascii")
        return json.dumps(raw.decode("utf-8", errors="replace"), ensure_ascii=False)
    raise ServingError("UNIMPLEMENTED", f"Conversion of tensor of type {value.dtype} to JSON is not supported")


def tensor_json(array, name=""):
    """JSON text of a numpy array (nested lists), with TF Serving's float formatting."""
    array = np.asarray(array)
    if array.dtype == np.float16 or str(array.dtype) == "bfloat16":
        raise ServingError("UNIMPLEMENTED", f"Tensor name: {name} has unsupported type: half")
    kind = array.dtype.kind
    as_bytes = name.endswith("_bytes")

    def write(a):
        if a.ndim == 0:
            return _scalar_json(a[()], kind, as_bytes)
        return "[" + ", ".join(write(a[i]) for i in range(a.shape[0])) + "]"

    return write(array)


def predict_response_json(outputs, row_format):
    """`{"predictions": ...}` (row) or `{"outputs": ...}` (columnar) for a dict of arrays."""
    names = sorted(outputs)
    if not row_format:
        if len(names) == 1:
            return '{"outputs": %s}' % tensor_json(outputs[names[0]], names[0])
        body = ", ".join(f"{json.dumps(n)}: {tensor_json(outputs[n], n)}" for n in names)
        return '{"outputs": {%s}}' % body
    batch = None
    for name in names:
        array = np.asarray(outputs[name])
        if array.ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch is None:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                          f"expecting: {batch}")
    if len(names) == 1:
        return '{"predictions": %s}' % tensor_json(outputs[names[0]], names[0])
    rows = []
    for i in range(batch):
        rows.append("{" + ", ".join(f"{json.dumps(n)}: {tensor_json(np.asarray(outputs[n])[i], n)}"
                                    for n in names) + "}")
    return '{"predictions": [%s]}' % ", ".join(rows)


# ----------------------------------------------------------------------------- reading
def value_to_string(value):
    """JSON text of a parsed value, for error messages (like `JsonValueToString`)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return format_float(value, double=True)
    return json.dumps(value, indent=4, ensure_ascii=False)


def json_type(value):
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def parse_json(text):
    """The request body as a JSON object, or INVALID_ARGUMENT with a `JSON Parse error`."""
    if not text:
        raise invalid("JSON Parse error: The document is empty")
    try:
        # orjson parses large bodies about twice as fast. What it refuses (NaN and Infinity
        # tokens, numbers beyond the double range, lone surrogates, malformed text) goes
        # through json.loads, which accepts the tokens and words the errors. Integers beyond
        # 64 bits come back as doubles, as RapidJSON (the real server's parser) reads them.
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = _parse_with_json(text)
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def _parse_with_json(text):
    try:
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except UnicodeDecodeError as error:
        raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}")
    except json.JSONDecodeError as error:
        raise invalid(f"JSON Parse error: {error.msg} at offset: {error.pos}")
    except RecursionError:
        raise invalid("JSON Parse error: document nested too deeply")


def signature_name(doc):
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(f"JSON Value: {value_to_string(doc)} not formatted correctly. "
                      "'signature_name' key must be a string value.")
    return name


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value):
    if not _is_b64(value):
        raise invalid(f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(value["b64"])
        except (binascii.Error, ValueError):
            raise invalid("Unable to base64 decode")


def _type_error(value, dtype):
    return invalid(f"JSON Value: {value_to_string(value)} Type: {json_type(value)} "
                   f"is not of expected type: {dtype}")


def _convert(value, dtype):
    """One JSON scalar as a Python value of `dtype` (a TF DataTypeString like "float")."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype in ("float", "double"):
        if not is_number:
            raise _type_error(value, dtype)
        if isinstance(value, int):
            limit = 2**24 - 1 if dtype == "float" else 2**53 - 1
            if abs(value) > limit:
                raise invalid(f"Cannot convert JSON value: {value} to {dtype} without loss of precision.")
        elif dtype == "float" and math.isfinite(value) and abs(value) > _FLOAT_MAX:
            raise invalid(f"Cannot convert JSON value: {value_to_string(value)} to float "
                          "without loss of precision.")
        return float(value)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not is_number or not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    if dtype == "string":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8")
    if dtype == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {value_to_string(value)} to type: {dtype}")


def _dense_shape(value):
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level, shape, dtype, out):
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid(f"JSON Value: {value_to_string(value)} found at incorrect level: {level + 1} "
                          f"in the JSON DOM. Expected at level: {rank}")
        if isinstance(value, dict):
            if dtype != "string":
                raise _type_error(value, dtype)
            out.append(_decode_b64(value))
        else:
            out.append(_convert(value, dtype))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                      f"expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def json_to_array(value, dtype):
    """A numpy array (and its shape) from a JSON value, checked like `FillTensorProto`."""
    shape = _dense_shape(value)
    values = []
    _fill(value, 0, shape, dtype, values)
    array = np.empty(len(values), dtype=_NUMPY[dtype]) if dtype == "string" else None
    if dtype == "string":
        array[:] = values
    else:
        array = np.array(values, dtype=_NUMPY[dtype])
    return array.reshape(shape)


def _shape_str(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _instances(items, inputs):
    """Row format: one tensor per input, stacked along a new first dimension."""
    first = items[0]
    if not isinstance(first, dict) and len(inputs) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple input "
                      "tensors required as per tensorinfo_map")

    def is_object(v):
        return isinstance(v, dict) and not _is_b64(v)

    objects = is_object(first)
    names = sorted(inputs)
    columns = {}
    shapes = {}

    def add(item, name, index, key_text):
        if name not in inputs:
            error = invalid(f"JSON object: does not have named input: {name}")
        else:
            try:
                array = json_to_array(item, inputs[name])
                error = None
            except ServingError as e:
                error = e
        if error is None:
            if name in shapes and shapes[name] != array.shape:
                size_a, size_b = int(np.prod(shapes[name])), int(np.prod(array.shape))
                if size_a != size_b:
                    error = invalid(f"Expecting tensor size: {size_a} but got: {size_b}")
                else:
                    error = invalid(f"Expecting shape {_shape_str(shapes[name])} but got: "
                                    f"{_shape_str(array.shape)}")
        if error is not None:
            raise ServingError(error.code, f"Failed to process element: {index}{key_text} of 'instances' "
                               f"list. Error: {error.code}: {error.message}")
        shapes[name] = array.shape
        columns.setdefault(name, []).append(array)

    for index, item in enumerate(items):
        if objects:
            if not is_object(item):
                raise invalid(f"Expecting object but got list at item {index} of input list")
            for key, value in item.items():
                add(value, key, index, f" key: {key}")
            if set(item) != set(names):
                raise invalid(f"Failed to process element: {index} of 'instances' list. JSON object: "
                              f"{value_to_string(item)} must only have keys: {','.join(names)}")
        else:
            if is_object(item):
                raise invalid(f"Expecting value/list but got object at item {index} of input list")
            add(item, names[0], index, "")
    return {name: np.stack(arrays) for name, arrays in columns.items()}


def predict_request(doc, inputs):
    """(tensors, row_format) from a predict body; `inputs` maps input names to dtype names."""
    if not inputs:
        raise invalid(f"Failed to get input map for signature: {signature_name(doc) or 'DEFAULT'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid(f"JSON Value: {value_to_string(doc)} Not formatted correctly expecting only "
                      "one of 'inputs' or 'instances' keys to exist ")
    if has_instances:
        items = doc["instances"]
        if not isinstance(items, list):
            raise invalid(f"JSON Value: {value_to_string(doc)} Excepting 'instances' to be an list/array")
        if not items:
            raise invalid(f"JSON Value: {value_to_string(doc)} No values in 'instances' array")
        return _instances(items, inputs), True
    if has_inputs:
        value = doc["inputs"]
        if not isinstance(value, dict) or _is_b64(value):
            if len(inputs) > 1:
                raise invalid("inputs is a plain value/list, but expecting an object as multiple input "
                              "tensors required as per tensorinfo_map")
            name = next(iter(inputs))
            return {name: json_to_array(value, inputs[name])}, False
        tensors = {}
        for name in sorted(inputs):
            if name not in value:
                raise invalid(f"Missing named input: {name} in 'inputs' object.")
            tensors[name] = json_to_array(value[name], inputs[name])
        return tensors, False
    raise invalid("Missing 'inputs' or 'instances' key")


# ----------------------------------------------------------------------------- examples
def _feature(name, content, feature):
    values = content if isinstance(content, list) else [content]
    kind = None
    for value in values:
        if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
            raise invalid(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")
        if isinstance(value, bool) or (isinstance(value, int) and not isinstance(value, bool)):
            this = "int64"
        elif isinstance(value, float):
            this = "float"
        else:
            this = "bytes"
        if kind is not None and kind != this:
            raise invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")
        kind = this
        if this == "int64":
            if not isinstance(value, bool) and not -(2**63) <= value < 2**63:
                raise invalid(f"Feature: {name} has uint64 element. Only int64 is supported.")
            feature.int64_list.value.append(int(value))
        elif this == "float":
            if math.isfinite(value) and abs(value) > _FLOAT_MAX:
                raise invalid(f"Cannot convert JSON value: {value_to_string(value)} to float "
                              "without loss of precision.")
            feature.float_list.value.append(value)
        else:
            feature.bytes_list.value.append(_decode_b64(value) if isinstance(value, dict)
                                            else value.encode("utf-8"))


def _example(value, example_cls):
    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_cls()
    for name, content in value.items():
        _feature(name, content, example.features.feature[name])
    return example


def examples_request(doc, method, example_cls):
    """Serialized `tf.train.Example`s from a classify/regress body (context merged in)."""
    context = _example(doc["context"], example_cls) if "context" in doc else None
    if "examples" not in doc:
        raise invalid(f"JSON Value: {value_to_string(doc)} When method is {method}, key 'examples' "
                      "is expected and was not found")
    items = doc["examples"]
    if not isinstance(items, list):
        raise invalid(f"JSON Value: {value_to_string(doc)} Expecting 'examples' value to be an list/array")
    if not items:
        raise invalid(f"JSON Value: {value_to_string(doc)} 'examples' value is an empty array")
    serialized = []
    for item in items:
        example = _example(item, example_cls)
        if context is not None:
            merged = example_cls()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            example = merged
        serialized.append(example.SerializeToString())
    return serialized
