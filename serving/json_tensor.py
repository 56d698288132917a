"""JSON <-> tensor conversion with the rules and messages of TF Serving's `util/json_tensor.cc`.

Bodies are read as TF Serving's RapidJSON reads them (NaN / Infinity, integers beyond 64 bits
as doubles, text after the document ignored, no depth limit, its error messages), and JSON
echoed in an error message is cut at 256 bytes as TF Serving cuts it.
Requests: row format (`"instances"`) and columnar format (`"inputs"`), values converted to
the signature's dtype; classify/regress `"examples"` (and `"context"`) become serialized
`tf.train.Example`s. Responses: floats printed like the real server (six significant digits
when they round-trip, else full precision; whole numbers end in `.0`; `NaN`, `Infinity`).
"""

import base64
import binascii
import json
import math
import re

import numpy as np
import orjson

from serving import dtypes
from serving.errors import ServingError, invalid


# ----------------------------------------------------------------------------- writing
def format_float(value, double=False):
    """A float the way TF Serving's `WriteDecimal` writes it."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    roundtrip = float(text) if double else np.float32(float(text))
    if roundtrip != (value if double else np.float32(value)):
        text = ("%.17g" if double else "%.9g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _unwritable_type_name(dtype):
    """TensorFlow's name of a numpy dtype TF Serving cannot write as JSON, or None."""
    row = dtypes.from_numpy(dtype)
    if row is not None:
        return None if row.json_writable else row.tf_name
    return None if dtype.kind in "fbiu" else str(dtype)


def _scalar_json(value, kind, as_bytes):
    if kind == "f":
        return format_float(value, double=value.dtype == np.float64)
    if kind == "b":
        return "true" if value else "false"
    if kind in "iu":
        return str(int(value))
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if as_bytes:
        return f'{{"b64": "{base64.b64encode(raw).decode("ascii")}"}}'
    return json.dumps(raw.decode("utf-8", errors="replace"), ensure_ascii=False)


def tensor_json(array, name=""):
    """JSON text of a numpy array (nested lists), with TF Serving's float formatting; a string
    tensor whose name ends in `_bytes` is written as `{"b64": ...}` objects, else as text."""
    array = np.asarray(array)
    kind = array.dtype.kind
    type_name = _unwritable_type_name(array.dtype)
    if type_name is not None and array.size:  # TF Serving fails on the first value it writes
        raise invalid(f"Failed to write JSON value for tensor type: {type_name}")
    as_bytes = name.endswith("_bytes")
    if kind in "fbiu":  # numbers: every value formatted at once, in numpy
        texts = _number_texts(array)

        def write(a):
            if a.ndim == 0:
                return a[()]
            if a.ndim == 1:
                return "[" + ", ".join(a.tolist()) + "]"
            return "[" + ", ".join(write(a[i]) for i in range(a.shape[0])) + "]"

        return write(texts)

    def write(a):
        if a.ndim == 0:
            return _scalar_json(a[()], kind, as_bytes)
        return "[" + ", ".join(write(a[i, ...]) for i in range(a.shape[0])) + "]"

    return write(array)


_SPECIAL_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _number_texts(array):
    """An array of the JSON texts of a numeric array's values (as `format_float` and
    `_scalar_json` write them one by one)."""
    kind = array.dtype.kind
    if kind == "b":
        return np.where(array, "true", "false").astype(object)
    if kind in "iu":
        return array.astype(str).astype(object)
    flat = array.reshape(-1)
    values = flat.astype(np.float64).tolist()
    texts = [f"{v:g}" for v in values]
    with np.errstate(invalid="ignore", over="ignore"):
        inexact = (np.array([float(t) for t in texts]).astype(array.dtype) != flat) & np.isfinite(
            flat
        )
    digits = "%.17g" if array.dtype == np.float64 else "%.9g"
    for i in np.flatnonzero(inexact).tolist():
        texts[i] = digits % values[i]
    special = _SPECIAL_FLOATS.get
    texts = [special(t) or (t if "." in t or "e" in t else t + ".0") for t in texts]
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out.reshape(array.shape)


def predict_response_json(outputs, row_format):
    """`{"predictions": ...}` (row) or `{"outputs": ...}` (columnar) for a dict of arrays."""
    names = sorted(outputs)
    if not names:
        raise invalid("Cannot convert empty tensor map to JSON")
    if not row_format:
        if len(names) == 1:
            return f'{{"outputs": {tensor_json(outputs[names[0]], names[0])}}}'
        body = ", ".join(f"{json.dumps(n)}: {tensor_json(outputs[n], n)}" for n in names)
        return f'{{"outputs": {{{body}}}}}'
    batch = None
    for name in names:
        array = np.asarray(outputs[name])
        if array.ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch is None:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise invalid(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
    if len(names) == 1:
        return f'{{"predictions": {tensor_json(outputs[names[0]], names[0])}}}'
    rows = []
    for i in range(batch):
        rows.append(
            "{"
            + ", ".join(
                f"{json.dumps(n)}: {tensor_json(np.asarray(outputs[n])[i, ...], n)}" for n in names
            )
            + "}"
        )
    return f'{{"predictions": [{", ".join(rows)}]}}'


def regress_response_json(result):
    """`{"results": [...]}` for a RegressionResult, one value per example."""
    if not result.regressions:
        raise invalid("Cannot convert empty RegressionResults to JSON")
    values = ", ".join(format_float(r.value) for r in result.regressions)
    return f'{{"results": [{values}]}}'


def classify_response_json(result):
    """`{"results": [[[label, score], ...], ...]}` for a ClassificationResult (a missing label
    is "", a missing score 0.0)."""
    if not result.classifications:
        raise invalid("Cannot convert empty ClassificationResults to JSON")
    results = []
    for classification in result.classifications:
        pairs = [
            f"[{json.dumps(c.label, ensure_ascii=False)}, {format_float(c.score)}]"
            for c in classification.classes
        ]
        results.append("[" + ", ".join(pairs) + "]")
    return f'{{"results": [{", ".join(results)}]}}'


# ----------------------------------------------------------------------------- reading
MAX_DEBUG_STRING_BYTES = 256  # JSON echoed in an error message is cut here, as TF Serving does


class _Full(Exception):
    pass


def rapidjson_double(value):
    """A double as RapidJSON's writer prints it: shortest round-trip digits, `1e39`, `0.0001`,
    `1e-7`, whole numbers with `.0`."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = (
        len(whole.lstrip("0")) if whole.strip("0") else -(len(fraction) - len(fraction.lstrip("0")))
    )
    if fraction == "0":
        digits = whole.lstrip("0")
    point += int(exponent or 0)  # value = 0.digits * 10**point
    digits = digits.rstrip("0") or "0"
    length = len(digits)
    if length <= point <= 21:
        text = digits + "0" * (point - length) + ".0"
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    elif length == 1:
        text = f"{digits}e{point - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{point - 1}"
    return sign + text


def value_to_string(value, limit=MAX_DEBUG_STRING_BYTES):
    """JSON text of a parsed value for an error message, as TF Serving's `JsonValueToDebugString`
    writes it: RapidJSON's pretty writer with arrays on one line, cut once `limit` bytes are
    written (so a huge or deeply nested body never becomes a huge message)."""
    parts, size, levels = [], [0], []  # levels: [in_array, values written]

    def put(text):
        parts.append(text)
        size[0] += len(text.encode("utf-8", "surrogatepass"))

    def begin():
        if size[0] >= limit:
            raise _Full
        if levels:
            level = levels[-1]
            if level[0]:
                if level[1]:
                    put(", ")
            else:
                put((",\n" if level[1] % 2 == 0 else ": ") if level[1] else "\n")
                if level[1] % 2 == 0:
                    put("    " * len(levels))
            level[1] += 1

    def write(item):
        if isinstance(item, dict):
            begin()
            put("{")
            levels.append([False, 0])
            for key, member in item.items():
                begin()
                put(json.dumps(key, ensure_ascii=False))
                write(member)
            if size[0] >= limit:
                raise _Full
            if levels.pop()[1]:
                put("\n" + "    " * len(levels))
            put("}")
        elif isinstance(item, list):
            begin()
            put("[")
            levels.append([True, 0])
            for member in item:
                write(member)
            if size[0] >= limit:
                raise _Full
            levels.pop()
            put("]")
        else:
            begin()
            if item is None or isinstance(item, (bool, int, str)):
                put(json.dumps(item, ensure_ascii=False))
            elif math.isfinite(item):
                put(rapidjson_double(item))
            else:  # RapidJSON's writer refuses NaN and infinities and stops there
                raise _Full

    try:
        write(value)
    except _Full:
        pass
    return "".join(parts)


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
    """The request body as a JSON object, read as TF Serving's RapidJSON reads it (NaN and
    Infinity accepted, integers beyond 64 bits as doubles, anything after the first value
    ignored, any nesting depth), or INVALID_ARGUMENT with RapidJSON's `JSON Parse error`."""
    if not text:
        raise invalid("JSON Parse error: The document is empty")
    try:
        # orjson parses large bodies about twice as fast and agrees with RapidJSON on what it
        # accepts; the rest (NaN, trailing text, deep nesting, errors) goes the slower way.
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = _parse_like_rapidjson(text)
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


class _ParseError(Exception):
    def __init__(self, message, offset):
        super().__init__(message)
        self.message, self.offset = message, offset


_CONSTANTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _json_int(text):
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return _json_float(text)


def _json_float(text):
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number too big to be stored in double.")
    return value


def _parse_like_rapidjson(data):
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
    except UnicodeDecodeError as error:
        raise invalid(
            f"JSON Parse error: Invalid encoding in string. at offset: {error.start}"
        ) from None
    if not _LONE_SURROGATE_ESCAPE.search(text):
        try:  # C speed for the common case (NaN / Infinity tokens)
            return json.loads(
                text,
                parse_constant=_CONSTANTS.__getitem__,
                parse_int=_json_int,
                parse_float=_json_float,
            )
        except (ValueError, RecursionError):
            pass  # RapidJSON's reading below finds (and words) the error, or reads it after all
    try:
        return _RapidJsonReader(text).parse()
    except _ParseError as error:
        offset = len(text[: error.offset].encode("utf-8", "surrogatepass"))
        raise invalid(f"JSON Parse error: {error.message} at offset: {offset}") from None


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SPACES = frozenset(" \t\n\r")
_OPEN_RUN = re.compile(r"\[+")
_CLOSE_RUN = re.compile(r"\]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FRACTION = re.compile(r"\.[0-9]+")
_EXPONENT = re.compile(r"[eE][-+]?[0-9]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _RapidJsonReader:
    """RapidJSON's iterative reader (kParseIterativeFlag | kParseNanAndInfFlag |
    kParseStopWhenDoneFlag) with its error messages: no recursion, so no depth limit."""

    def __init__(self, text):
        self.text = text

    def skip(self, pos):
        if self.text[pos : pos + 1] not in _SPACES:
            return pos
        return _WHITESPACE.match(self.text, pos).end()

    def parse(self):
        text = self.text
        pos = self.skip(0)
        if pos == len(text):
            raise _ParseError("The document is empty.", pos)
        stack = []  # open containers: [container, key of the member being read]
        while True:
            value, pos = self.value(pos)
            if isinstance(value, _Open):
                container = value.container
                if type(container) is list and text.startswith(
                    "[", pos
                ):  # a run of "[[[[": at once
                    end = _OPEN_RUN.match(text, pos).end()
                    stack.append([container, None])
                    stack.extend([[], None] for _ in range(end - pos - 1))
                    container, pos = [], end
                pos = self.skip(pos)
                if text.startswith("]" if isinstance(container, list) else "}", pos):
                    value, pos = container, pos + 1
                else:
                    stack.append([container, None])
                    if isinstance(container, dict):
                        stack[-1][1], pos = self.key(pos)
                    continue
            while stack:  # attach the complete value, closing the containers that end here
                container, key = stack[-1]
                pos = self.skip(pos)
                if isinstance(container, list):
                    container.append(value)
                    if text.startswith(",", pos):
                        pos += 1
                        break
                    if not text.startswith("]", pos):
                        raise _ParseError("Missing a comma or ']' after an array element.", pos)
                    end = _CLOSE_RUN.match(
                        text, pos
                    ).end()  # a run of "]]]]" closing lists: at once
                    value, pos = stack.pop()[0], pos + 1
                    while pos < end and stack and type(stack[-1][0]) is list:
                        stack[-1][0].append(value)
                        value, pos = stack.pop()[0], pos + 1
                    continue
                else:
                    container[key] = value
                    if text.startswith(",", pos):
                        stack[-1][1], pos = self.key(pos + 1)
                        break
                    if not text.startswith("}", pos):
                        raise _ParseError("Missing a comma or '}' after an object member.", pos)
                value, pos = stack.pop()[0], pos + 1
            else:
                return value

    def key(self, pos):
        pos = self.skip(pos)
        if not self.text.startswith('"', pos):
            raise _ParseError("Missing a name for object member.", pos)
        key, pos = self.string(pos)
        pos = self.skip(pos)
        if not self.text.startswith(":", pos):
            raise _ParseError("Missing a colon after a name of object member.", pos)
        return key, pos + 1

    def value(self, pos):
        text = self.text
        pos = self.skip(pos)
        char = text[pos : pos + 1]
        if char == "[":
            return _Open([]), pos + 1
        if char == "{":
            return _Open({}), pos + 1
        if char == '"':
            return self.string(pos)
        for word, constant in (("null", None), ("true", True), ("false", False)):
            if char == word[0]:
                if text.startswith(word, pos):
                    return constant, pos + len(word)
                raise _ParseError("Invalid value.", pos)
        return self.number(pos)

    def string(self, pos):
        try:
            value, end = json.decoder.scanstring(self.text, pos + 1, True)
        except json.JSONDecodeError as error:
            message = error.msg
            if message.startswith("Unterminated string"):
                raise _ParseError(
                    "Missing a closing quotation mark in string.", len(self.text)
                ) from None
            if message.startswith("Invalid control character"):
                raise _ParseError("Invalid encoding in string.", error.pos) from None
            if message.startswith("Invalid \\uXXXX"):
                raise _ParseError(
                    "Incorrect hex digit after \\u escape in string.", error.pos
                ) from None
            raise _ParseError("Invalid escape character in string.", error.pos) from None
        if _SURROGATE.search(value):
            raise _ParseError("The surrogate pair in string is invalid.", pos)
        return value, end

    def number(self, start):
        text = self.text
        body = start + text.startswith("-", start)
        if text.startswith("N", body):
            if text.startswith("NaN", body):
                return math.nan, body + 3
            raise _ParseError("Invalid value.", body)
        if text.startswith("Inf", body):
            end = body + 3
            if text.startswith("i", end):
                if not text.startswith("inity", end):
                    raise _ParseError("Invalid value.", end)
                end += 5
            return (-math.inf if body > start else math.inf), end
        match = _NUMBER.match(text, start)
        if not match:
            raise _ParseError("Invalid value.", start)
        end, is_double = match.end(), False
        if text.startswith(".", end):
            fraction = _FRACTION.match(text, end)
            if not fraction:
                raise _ParseError("Miss fraction part in number.", end + 1)
            end, is_double = fraction.end(), True
        if text[end : end + 1] in ("e", "E"):
            exponent = _EXPONENT.match(text, end)
            if not exponent:
                raise _ParseError("Miss exponent in number.", end + 1)
            end, is_double = exponent.end(), True
        try:
            value = _json_float(text[start:end]) if is_double else _json_int(text[start:end])
        except ValueError:
            raise _ParseError("Number too big to be stored in double.", start) from None
        return value, end


class _Open:
    """A container just opened by the reader."""

    __slots__ = ("container",)

    def __init__(self, container):
        self.container = container


def signature_name(doc):
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(
            f"JSON Value: {value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_b64(value):
    if not _is_b64(value):
        raise invalid(
            f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data"
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(value["b64"])
        except (binascii.Error, ValueError):
            raise invalid("Unable to base64 decode") from None


def _type_error(value, dtype):
    return invalid(
        f"JSON Value: {value_to_string(value)} Type: {json_type(value)} "
        f"is not of expected type: {dtype}"
    )


def _convert(value, dtype):
    """One JSON scalar as a Python value of `dtype` (a TF DataTypeString like "float")."""
    row = dtypes.by_tf_name(dtype)
    json_kind = row.json if row is not None else None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if json_kind == "float":
        # any number, rounded to the nearest float (beyond float32's range: infinity), as
        # RapidJSON's GetFloat() does
        if not is_number:
            raise _type_error(value, dtype)
        return float(value)
    if json_kind == "integer":
        low, high = row.json_range
        if not is_number or not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    if json_kind == "string":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogatepass")
    if json_kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    raise _unimplemented(value, dtype)


def _unimplemented(value, dtype):
    return ServingError(
        "UNIMPLEMENTED", f"Conversion of JSON Value: {value_to_string(value)} to type: {dtype}"
    )


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
            raise invalid(
                f"JSON Value: {value_to_string(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        if isinstance(value, dict):
            if dtype != dtypes.STRING.tf_name:
                raise _type_error(value, dtype)
            out.append(_decode_b64(value))
        else:
            out.append(_convert(value, dtype))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


MAX_RANK = 64  # numpy's limit; TF Serving fails to build deeper tensors too


def json_to_array(value, dtype, name=""):
    """A numpy array (and its shape) from a JSON value, checked like `FillTensorProto`."""
    shape = _dense_shape(value)
    if len(shape) > MAX_RANK:
        raise invalid(
            f"tensor parsing error: {name}: {len(shape)} dimensions, "
            f"at most {MAX_RANK} are supported"
        )
    values = []
    _fill(value, 0, shape, dtype, values)
    row = dtypes.by_tf_name(dtype)
    if row is None:
        raise _unimplemented(value, dtype)
    if row is dtypes.STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif row.json == "float":
        with np.errstate(over="ignore"):  # beyond float32's range: +-inf, like a C cast
            array = np.array(values, dtype=np.float64).astype(row.numpy)
    elif row.json == "integer" and _wraps(row):
        # RapidJSON reads an int32, the narrower tensor keeps its low bits
        array = np.array(values, dtype=np.int64).astype(row.numpy)
    else:
        array = np.array(values, dtype=row.numpy)
    return array.reshape(shape)


def _wraps(row):
    """Whether the JSON integers `row` accepts go beyond what its numpy dtype holds."""
    info = np.iinfo(row.numpy)
    return row.json_range[0] < info.min or row.json_range[1] > info.max


def _shape_str(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _instances(items, inputs):
    """Row format: one tensor per input, stacked along a new first dimension."""
    first = items[0]
    if not isinstance(first, dict) and len(inputs) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )

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
                array = json_to_array(item, inputs[name], name)
                error = None
            except ServingError as e:
                error = e
        if error is None:
            if name in shapes and shapes[name] != array.shape:
                size_a, size_b = int(np.prod(shapes[name])), int(np.prod(array.shape))
                if size_a != size_b:
                    error = invalid(f"Expecting tensor size: {size_a} but got: {size_b}")
                else:
                    error = invalid(
                        f"Expecting shape {_shape_str(shapes[name])} but got: "
                        f"{_shape_str(array.shape)}"
                    )
        if error is not None:
            raise ServingError(
                error.code,
                f"Failed to process element: {index}{key_text} of 'instances' "
                f"list. Error: {error.code}: {error.message}",
            )
        shapes[name] = array.shape
        columns.setdefault(name, []).append(array)

    for index, item in enumerate(items):
        if objects:
            if not is_object(item):
                raise invalid(f"Expecting object but got list at item {index} of input list")
            for key, value in item.items():
                add(value, key, index, f" key: {key}")
            if set(item) != set(names):
                raise invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{value_to_string(item)} keys must be equal to: {','.join(names)}"
                )
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
        raise invalid(
            f"JSON Value: {value_to_string(doc)} Not formatted correctly expecting only "
            "one of 'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        items = doc["instances"]
        if not isinstance(items, list):
            raise invalid(
                f"JSON Value: {value_to_string(doc)} Excepting 'instances' to be an list/array"
            )
        if not items:
            raise invalid(f"JSON Value: {value_to_string(doc)} No values in 'instances' array")
        return _instances(items, inputs), True
    if has_inputs:
        value = doc["inputs"]
        if not isinstance(value, dict) or _is_b64(value):
            if len(inputs) > 1:
                raise invalid(
                    "inputs is a plain value/list, but expecting an object as multiple input "
                    "tensors required as per tensorinfo_map"
                )
            name = next(iter(inputs))
            return {name: json_to_array(value, inputs[name], name)}, False
        tensors = {}
        for name in sorted(inputs):
            if name not in value:
                raise invalid(f"Missing named input: {name} in 'inputs' object.")
            tensors[name] = json_to_array(value[name], inputs[name], name)
        return tensors, False
    raise invalid("Missing 'inputs' or 'instances' key")


# ----------------------------------------------------------------------------- examples
def _feature(name, content, feature):
    values = content if isinstance(content, list) else [content]
    kind = None
    for value in values:
        if (
            value is None
            or isinstance(value, list)
            or (isinstance(value, dict) and not _is_b64(value))
        ):
            raise invalid(
                f"Feature: {name} has element with unexpected JSON type: {json_type(value)}"
            )
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
                raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            feature.int64_list.value.append(int(value))
        elif this == "float":
            with np.errstate(over="ignore"):  # RapidJSON's GetFloat(): beyond float32, +-inf
                feature.float_list.value.append(float(np.float32(value)))
        else:
            feature.bytes_list.value.append(
                _decode_b64(value)
                if isinstance(value, dict)
                else value.encode("utf-8", "surrogatepass")
            )


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
        # TF Serving names classify here for regress requests too
        raise invalid(
            f"JSON Value: {value_to_string(doc)} When method is classify, key 'examples' "
            "is expected and was not found"
        )
    items = doc["examples"]
    if not isinstance(items, list):
        raise invalid(
            f"JSON Value: {value_to_string(doc)} Expecting 'examples' value to be an list/array"
        )
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
