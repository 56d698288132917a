"""The dtype table of `serving.dtypes` against TensorFlow's own dtypes and TensorProto fields."""

import numpy as np
import pytest

from serving import dtypes

ROWS = sorted(dtypes.TABLE)


@pytest.mark.parametrize("name", ROWS)
def test_numpy_dtype_is_tensorflows(name):
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    row = dtypes.TABLE[name]
    assert row.enum == getattr(types_pb2, name)
    assert row.numpy == np.dtype(tf.dtypes.as_dtype(row.enum).as_numpy_dtype)
    assert dtypes.by_enum(row.enum) is row and dtypes.by_name(name) is row
    assert dtypes.by_tf_name(row.tf_name) is row


@pytest.mark.parametrize("name", ROWS)
def test_field_is_the_one_tensorflow_writes(name):
    """A one-value TensorProto made by TensorFlow carries its value in the row's `*_val` field."""
    import tensorflow as tf

    row = dtypes.TABLE[name]
    value = b"x" if row is dtypes.STRING else np.ones((), dtype=row.numpy)
    proto = tf.make_tensor_proto(value, dtype=tf.dtypes.as_dtype(row.enum))
    assert [field.name for field, _ in proto.ListFields() if field.name.endswith("_val")] == [
        row.field
    ]


@pytest.mark.parametrize("name", ROWS)
def test_json_rules(name):
    """Readable JSON kinds match the numpy kind; integer ranges cover the numpy type, except the
    narrow types RapidJSON reads as int32; 16-bit floats and uint16 are neither read nor written."""
    row = dtypes.TABLE[name]
    kind = {"f": "float", "i": "integer", "u": "integer", "b": "bool", "O": "string"}
    if name in ("DT_HALF", "DT_BFLOAT16", "DT_UINT16"):
        assert row.json is None and not row.json_writable
        return
    assert row.json == kind[row.numpy.kind] and row.json_writable
    if row.json == "integer":
        info = np.iinfo(row.numpy)
        low, high = row.json_range
        if info.bits < 32:
            assert (low, high) == (-(2**31), 2**31 - 1)
        else:
            assert (low, high) == (int(info.min), int(info.max))
    else:
        assert row.json_range is None


def test_lookups_outside_the_table():
    assert dtypes.from_numpy(np.dtype("U3")) is dtypes.STRING
    assert dtypes.from_numpy(np.dtype(object)) is dtypes.STRING
    assert dtypes.from_numpy(np.complex64) is None
    assert dtypes.by_name("DT_COMPLEX64") is None and dtypes.by_tf_name("complex64") is None
    assert dtypes.tf_name_of(8) == "8"  # DT_COMPLEX64: not served, named by its number
