"""The TensorFlow `DataType`s this server reads and writes, in one table.

Each row is keyed by its `DataType` name (`"DT_FLOAT"`, as `types_pb2` and the REST metadata
spell it) and says which numpy dtype holds it, which typed `TensorProto` field carries its
values, and how TF Serving's JSON API treats it (`util/json_tensor.cc`): which JSON values it
reads into the type and whether it can write the type out. The enum numbers come from
`types_pb2` on first use, so that this module (and the REST client) loads without TensorFlow.
"""

import dataclasses
import functools

import numpy as np

try:
    import ml_dtypes

    _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes comes with TensorFlow
    _BFLOAT16 = None

INT32_RANGE = (-(2**31), 2**31 - 1)
INT64_RANGE = (-(2**63), 2**63 - 1)


@dataclasses.dataclass(frozen=True)
class DType:
    """One `DataType`.

    Attributes:
        name: the `DataType` enum name, e.g. `"DT_FLOAT"`.
        numpy: the numpy dtype of its values (`object` holding `bytes` for `DT_STRING`).
        field: the typed `TensorProto` field of its values (`half_val` holds the bits of
            16-bit floats).
        json: what a JSON value must be to read into it: `"float"` (any number), `"integer"`
            (an integer within `json_range`), `"bool"`, `"string"`, or None (TF Serving cannot
            read it from JSON).
        json_range: the integers accepted for `"integer"` (RapidJSON reads the narrow types as
            int32, and the tensor keeps the low bits).
        json_writable: whether TF Serving writes it as JSON.
    """

    name: str
    numpy: object
    field: str
    json: str | None = None
    json_range: tuple | None = None
    json_writable: bool = True

    @property
    def tf_name(self):
        """TensorFlow's `DataTypeString`, e.g. `"float"`, as TF Serving's messages spell it."""
        return self.name[len("DT_") :].lower()

    @property
    def enum(self):
        """The `DataType` enum number (from `types_pb2`)."""
        return _enums()[self.name]


TABLE = {
    row.name: row
    for row in (
        DType("DT_FLOAT", np.dtype(np.float32), "float_val", "float"),
        DType("DT_DOUBLE", np.dtype(np.float64), "double_val", "float"),
        DType("DT_INT32", np.dtype(np.int32), "int_val", "integer", INT32_RANGE),
        DType("DT_UINT8", np.dtype(np.uint8), "int_val", "integer", INT32_RANGE),
        DType("DT_INT16", np.dtype(np.int16), "int_val", "integer", INT32_RANGE),
        DType("DT_INT8", np.dtype(np.int8), "int_val", "integer", INT32_RANGE),
        DType("DT_STRING", np.dtype(object), "string_val", "string"),
        DType("DT_INT64", np.dtype(np.int64), "int64_val", "integer", INT64_RANGE),
        DType("DT_BOOL", np.dtype(np.bool_), "bool_val", "bool"),
        DType("DT_BFLOAT16", _BFLOAT16, "half_val", json_writable=False),
        DType("DT_UINT16", np.dtype(np.uint16), "int_val", json_writable=False),
        DType("DT_HALF", np.dtype(np.float16), "half_val", json_writable=False),
        DType("DT_UINT32", np.dtype(np.uint32), "uint32_val", "integer", (0, 2**32 - 1)),
        DType("DT_UINT64", np.dtype(np.uint64), "uint64_val", "integer", (0, 2**64 - 1)),
    )
}
STRING = TABLE["DT_STRING"]
_BY_TF_NAME = {row.tf_name: row for row in TABLE.values()}
_BY_NUMPY = {row.numpy: row for row in TABLE.values() if row.numpy is not None}


@functools.cache
def _enums():
    from tensorflow.core.framework import types_pb2

    return {name: types_pb2.DataType.Value(name) for name in TABLE}


@functools.cache
def _by_enum():
    return {row.enum: row for row in TABLE.values()}


def by_name(name):
    """The row of a `DataType` name (`"DT_FLOAT"`), or None."""
    return TABLE.get(name)


def by_tf_name(tf_name):
    """The row of a `DataTypeString` (`"float"`), or None."""
    return _BY_TF_NAME.get(tf_name)


def by_enum(enum):
    """The row of a `DataType` enum number, or None."""
    return _by_enum().get(enum)


def from_numpy(dtype):
    """The row holding numpy `dtype` (bytes, str and object arrays are `DT_STRING`), or None."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return STRING
    return _BY_NUMPY.get(dtype)


def tf_name_of(enum):
    """TensorFlow's name of an enum number, or the number itself for a type not in the table."""
    row = by_enum(enum)
    return row.tf_name if row is not None else str(enum)
