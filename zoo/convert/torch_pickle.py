"""Read PyTorch checkpoint files (`torch.save` of a state dict) with numpy alone.

Two layouts exist:

- the zip format (`torch.save` since PyTorch 1.6): `<archive>/data.pkl` holds the pickled
  object, each tensor storage is the raw little-endian file `<archive>/data/<key>`, and
  `<archive>/byteorder` may say `big`;
- the legacy format (`_use_new_zipfile_serialization=False`, and every file saved before
  1.6): five pickles in a row (magic number, protocol version, system info, the object,
  the list of storage keys) followed by each storage in that list's order, as an int64
  element count then the raw bytes.

In both, a tensor is pickled as a call of `torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, requires_grad, backward_hooks[, metadata])` whose `storage` is a *persistent
id*, `("storage", torch.FloatStorage, key, location, numel[, view_metadata])`.

A pickle can name any importable callable and have it called (`os.system` included), so a
file from the internet goes through `RestrictedUnpickler`, which resolves only the globals a
state dict needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and the
storage classes of plain dtypes), each to a numpy stand-in defined here, and refuses every
other global with `UnsafeCheckpointError` naming it, before anything is called.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np


class CheckpointError(ValueError):
    """The file is not a readable PyTorch state-dict checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """The pickle names a global outside the state-dict allow-list."""


LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch.<Name>Storage -> numpy dtype (bfloat16 has no numpy dtype: read as uint16 bits and
# widened to float32 when the tensor is rebuilt)
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """What `torch.<Name>Storage` resolves to: its name and numpy dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage named by the pickle; its data is attached once read (`array`)."""

    def __init__(self, storage_type, key, numel):
        self.storage_type = storage_type
        self.key = key
        self.numel = numel
        self.array = None


class _PendingTensor:
    """A tensor whose storage may not have been read yet (the legacy format stores data
    after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def materialize(self):
        storage = self.storage
        if storage.array is None:
            raise CheckpointError(f"storage {storage.key!r} has no data in the file")
        size, stride, offset = self.size, self.stride, self.offset
        if (
            not isinstance(offset, int)
            or offset < 0
            or len(size) != len(stride)
            or any(not isinstance(v, int) or v < 0 for v in (*size, *stride))
        ):
            raise CheckpointError(
                f"tensor on storage {storage.key!r} has an invalid layout: offset {offset}, "
                f"size {tuple(size)}, stride {tuple(stride)}"
            )
        count = int(np.prod(size, dtype=np.int64))
        if count:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= storage.array.size:
                raise CheckpointError(
                    f"tensor of size {tuple(size)} at offset {offset} reaches element {last} "
                    f"of storage {storage.key!r}, which holds {storage.array.size}"
                )
        if count:
            array = np.lib.stride_tricks.as_strided(
                storage.array[offset:],
                shape=tuple(size),
                strides=tuple(s * storage.array.itemsize for s in stride),
                writeable=False,
            ).copy()
        else:
            array = np.zeros(tuple(size), storage.array.dtype)
        if storage.storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    if not isinstance(storage, _Storage):
        raise CheckpointError("_rebuild_tensor_v2 called on something other than a storage")
    if not isinstance(size, tuple) or not isinstance(stride, tuple):
        raise CheckpointError("_rebuild_tensor_v2: size and stride must be tuples")
    return _PendingTensor(storage, storage_offset, size, stride)


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only `ALLOWED_GLOBALS` and storage persistent ids.

    `storages` collects every storage named, by key, for the caller to fill with data.
    """

    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
            raise UnsafeCheckpointError(
                f"the checkpoint's pickle refers to {module}.{name}, which a state dict does "
                f"not hold; refusing to load it (only {allowed} are allowed)"
            ) from None

    def persistent_load(self, pid):
        if (
            not isinstance(pid, tuple)
            or len(pid) not in (5, 6)
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
        ):
            raise CheckpointError(f"unsupported persistent id in the checkpoint: {pid!r:.200}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError("storage views (legacy view_metadata) are not supported")
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"storage {key!r} has an invalid size {numel!r}")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(storage_type, key, numel)
        elif storage.storage_type is not storage_type:
            raise CheckpointError(f"storage {key!r} is used with two dtypes")
        return storage


def _materialize(value):
    if isinstance(value, _PendingTensor):
        return value.materialize()
    if isinstance(value, dict):
        out = type(value)() if isinstance(value, collections.OrderedDict) else {}
        for key, item in value.items():
            out[key] = _materialize(item)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(item) for item in value)
    return value


def _unpickle(data, storages):
    try:
        return RestrictedUnpickler(data, storages).load()
    except CheckpointError:
        raise
    except Exception as error:  # truncated or malformed pickles raise many types
        raise CheckpointError(
            f"the checkpoint's pickle is malformed: {type(error).__name__}: {error}"
        ) from None


def _storage_array(storage, raw, byteorder):
    dtype = storage.storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
    expected = storage.numel * dtype.itemsize
    if len(raw) != expected:
        raise CheckpointError(
            f"storage {storage.key!r} holds {len(raw)} bytes; its "
            f"{storage.numel} elements of {storage.storage_type.name} "
            f"need {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))


def _load_zip(archive):
    names = archive.namelist()
    pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(
            "the zip holds no single <archive>/data.pkl; not a torch.save checkpoint"
        )
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"unknown byteorder {byteorder!r} in the checkpoint")
    storages = {}
    result = _unpickle(io.BytesIO(archive.read(pickles[0])), storages)
    for key, storage in storages.items():
        member = f"{prefix}data/{key}"
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise CheckpointError(
                f"the checkpoint lacks the data of storage {key!r} ({member})"
            ) from None
        if info.file_size != storage.numel * storage.storage_type.dtype.itemsize:
            raise CheckpointError(
                f"storage {key!r} holds {info.file_size} bytes; its "
                f"{storage.numel} elements of {storage.storage_type.name} "
                f"need {storage.numel * storage.storage_type.dtype.itemsize}"
            )
        storage.array = _storage_array(storage, archive.read(member), byteorder)
    return result


def _load_legacy(handle, size):
    storages = {}
    header = [_unpickle(handle, {}) for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
        raise CheckpointError(
            "not a PyTorch checkpoint: neither a zip archive nor a legacy "
            "torch.save file (wrong magic number)"
        )
    little = isinstance(header[2], dict) and header[2].get("little_endian", True)
    result = _unpickle(handle, storages)
    keys = _unpickle(handle, {})
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise CheckpointError("the legacy checkpoint's storage list does not match its tensors")
    for key in map(str, keys):
        storage = storages[key]
        count = handle.read(8)
        if len(count) != 8:
            raise CheckpointError(f"the checkpoint ends before storage {key!r}")
        (numel,) = struct.unpack("<q" if little else ">q", count)
        nbytes = numel * storage.storage_type.dtype.itemsize
        if numel != storage.numel or nbytes > size - handle.tell():
            raise CheckpointError(
                f"storage {key!r}: the file records {numel} elements, the "
                f"pickle {storage.numel}, {size - handle.tell()} bytes left"
            )
        storage.array = _storage_array(storage, handle.read(nbytes), "little" if little else "big")
    return result


def load_state_dict(path):
    """`{name: numpy array}` of a PyTorch state-dict checkpoint (either format).

    Raises:
        UnsafeCheckpointError: the pickle names a global a state dict does not hold.
        CheckpointError: the file is truncated, corrupt or not a tensor dictionary.
    """
    with open(path, "rb") as handle:
        start = handle.read(4)
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(0)
        if start.startswith(b"PK"):
            try:
                with zipfile.ZipFile(handle) as archive:
                    result = _load_zip(archive)
            except (zipfile.BadZipFile, EOFError, OSError) as error:
                raise CheckpointError(f"{path} is a truncated or corrupt zip: {error}") from None
        else:
            result = _load_legacy(handle, size)
    state = _materialize(result)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()
    ):
        raise CheckpointError(f"{path} does not hold a state dict (names -> tensors)")
    return dict(state)
