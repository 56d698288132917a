"""numpy arrays <-> `TensorProto`s, as TF Serving converts them (`AsProtoField`,
`AsProtoTensorContent`, `Tensor::FromProto`), with the types of `serving.dtypes`."""

import numpy as np

from serving import dtypes
from serving.errors import ServingError, invalid

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_RANK = 64  # numpy's limit (TensorFlow's is 254): deeper tensors are INVALID_ARGUMENT
# a request tensor may be given by fewer values than its shape holds (the last one repeats):
# its decoded size is capped like the biggest message gRPC takes here
MAX_TENSOR_BYTES = INT32_MAX
# the typed fields that are packed fixed-width on the wire: their bytes are the little-endian
# values, so merging them is a memcpy instead of a Python float per value
_PACKED_FIXED_FIELDS = ("float_val", "double_val")
_STRING_ITEMSIZE = 8  # what a string element counts towards MAX_TENSOR_BYTES before decoding


def dtype_row(array):
    """The `serving.dtypes` row of a numpy array; UNIMPLEMENTED for a type not served."""
    row = dtypes.from_numpy(array.dtype)
    if row is None:
        raise ServingError("UNIMPLEMENTED", f"Unsupported output type: {array.dtype}")
    return row


def make_tensor_proto(array, proto=None, tensor_content=False):
    """A TensorProto with the values of `array` in its typed `*_val` field (like `AsProtoField`),
    or with `tensor_content`, in `tensor_content` bytes for non-string types (like
    `AsProtoTensorContent`, `--enable_serialization_as_tensor_content`)."""
    from tensorflow.core.framework import tensor_pb2

    proto = proto if proto is not None else tensor_pb2.TensorProto()
    array = np.asarray(array)
    row = dtype_row(array)
    proto.dtype = row.enum
    for dim in array.shape:
        proto.tensor_shape.dim.add().size = dim
    flat = array.reshape(-1)
    if row is dtypes.STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in flat)
    elif tensor_content:
        proto.tensor_content = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
    elif row.field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    elif row.field in _PACKED_FIXED_FIELDS and flat.size >= 64:
        field_number = tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name[row.field].number
        raw = flat.astype(row.numpy.newbyteorder("<"), copy=False).tobytes()
        proto.MergeFromString(_varint((field_number << 3) | 2) + _varint(len(raw)) + raw)
    else:
        getattr(proto, row.field).extend(flat.tolist())
    return proto


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def make_ndarray(proto, name=""):
    """A numpy array from a TensorProto (`tensor_content` or typed fields, like
    `Tensor::FromProto`)."""
    error = invalid(f"tensor parsing error: {name}")
    row = dtypes.by_enum(proto.dtype)
    if row is None or row.numpy is None:
        raise error
    if proto.tensor_shape.unknown_rank or any(d.size < 0 for d in proto.tensor_shape.dim):
        raise error
    if len(proto.tensor_shape.dim) > MAX_RANK:
        raise invalid(
            f"tensor parsing error: {name}: {len(proto.tensor_shape.dim)} dimensions, "
            f"this server takes at most {MAX_RANK}"
        )
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    count = 1
    for size in shape:  # Python integers: [2**62, 4] must not wrap around
        count *= size
    if count > INT64_MAX:
        raise error  # TensorShape refuses more than 2**63 - 1 elements
    is_string = row is dtypes.STRING
    itemsize = _STRING_ITEMSIZE if is_string else row.numpy.itemsize
    if count * itemsize > MAX_TENSOR_BYTES:
        raise invalid(
            f"tensor parsing error: {name}: shape {list(shape)} needs {count * itemsize} bytes, "
            f"more than the {MAX_TENSOR_BYTES} bytes a request tensor may take"
        )
    if proto.tensor_content:
        if is_string or len(proto.tensor_content) != count * itemsize:
            raise error
        return np.frombuffer(proto.tensor_content, dtype=row.numpy).reshape(shape).copy()
    values = getattr(proto, row.field)
    n = len(values)
    if n > count:
        raise error
    if is_string:
        flat = np.empty(count, dtype=object)
        flat[:n] = list(values)
        if n < count:
            flat[n:] = values[-1] if n else b""
        return flat.reshape(shape)
    # numpy reads the repeated scalar container directly (no per-value Python objects)
    if row.field == "half_val":
        flat = np.array(values, dtype=np.int64).astype(np.uint16).view(row.numpy)
    else:
        flat = np.array(values, dtype=row.numpy)
    if n == 0:
        flat = np.zeros(count, dtype=row.numpy)
    elif n < count:
        flat = np.concatenate([flat, np.repeat(flat[-1:], count - n)])
    return flat.reshape(shape)
