"""zoo.convert.torch_pickle: PyTorch checkpoints read with numpy alone, through an
unpickler that refuses every global a state dict does not hold.

Fixtures: tests/fixtures/zoo/torch_state_{zip,legacy}.pth, written by
tools/make_torch_pickle_fixtures.py with torch 2.14.1 from closed-form tensors.
"""

import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from tools.make_torch_pickle_fixtures import FIXTURES, FORMATS, fixture_state
from zoo.convert.torch_pickle import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    CheckpointError,
    UnsafeCheckpointError,
    load_state_dict,
)


def _assert_state_equal(loaded, expected):
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        value = np.asarray(value)
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_committed_fixture_reads_without_torch(name):
    loaded = load_state_dict(FIXTURES / f"torch_state_{name}.pth")
    _assert_state_equal(loaded, fixture_state(np))
    # the non-contiguous view comes back as its values, in C order
    np.testing.assert_array_equal(loaded["fc.weight_t"][1], [1.0, 5.0, 9.0])


@pytest.mark.oracle
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_round_trip_against_live_torch_save(tmp_path, name):
    import torch

    torch.manual_seed(0)
    state = {
        "a": torch.randn(3, 5, 2, 7),
        "b": torch.randn(6, 4).t(),
        "c": torch.randint(-9, 9, (11,), dtype=torch.int32),
        "d": torch.randn(8).to(torch.bfloat16),
        "e": torch.randn(5, dtype=torch.float64)[1:4],
    }
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=FORMATS[name])
    loaded = load_state_dict(path)
    _assert_state_equal(
        loaded,
        {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in state.items()},
    )


# -- malicious and broken files -------------------------------------------------------


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _zip_checkpoint(path, payload, extra=()):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
        for name, data in extra:
            archive.writestr(name, data)


def _legacy_checkpoint(path, payload):
    header = [
        pickle.dumps(v, protocol=2)
        for v in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True})
    ]
    path.write_bytes(b"".join(header) + payload + pickle.dumps([], protocol=2))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("where", ["top", "inside_state_dict"])
def test_pickle_that_would_run_a_command_is_refused(tmp_path, layout, where):
    marker = tmp_path / "pwned"
    evil = _RunsCommand(f"touch {marker}")
    obj = evil if where == "top" else {"conv.weight": evil}
    payload = pickle.dumps(obj, protocol=2)
    path = tmp_path / "evil.pth"
    (_zip_checkpoint if layout == "zip" else _legacy_checkpoint)(path, payload)
    with pytest.raises(UnsafeCheckpointError, match=r"refers to posix\.system.*refusing"):
        load_state_dict(path)
    assert not marker.exists()
    # the payload really would have run the command
    pickle.loads(payload)
    assert marker.exists()


def test_builtins_eval_through_stack_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    # protocol 4 uses STACK_GLOBAL; the callable is builtins.exec
    payload = (
        b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94"
        + b"\x8c"
        + bytes([len(f"open({str(marker)!r}, 'w')")])
        + f"open({str(marker)!r}, 'w')".encode()
        + b"\x94\x85\x94R\x94."
    )
    path = tmp_path / "evil.pth"
    _zip_checkpoint(path, payload)
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.exec"):
        load_state_dict(path)
    assert not marker.exists()


def test_truncated_zip_is_a_clear_error(tmp_path):
    data = (FIXTURES / "torch_state_zip.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt zip"):
        load_state_dict(path)


def test_corrupted_zip_member_is_a_clear_error(tmp_path):
    source = FIXTURES / "torch_state_zip.pth"
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo(next(n for n in archive.namelist() if n.endswith("data/0")))
    data = bytearray(source.read_bytes())
    # the member's bytes start after its local header (30 bytes, name, extra field)
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_length + extra_length + 2] ^= 0xFF
    path = tmp_path / "corrupt.pth"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt zip"):
        load_state_dict(path)


def test_truncated_legacy_file_is_a_clear_error(tmp_path):
    data = (FIXTURES / "torch_state_legacy.pth").read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[:-5])
    with pytest.raises(CheckpointError, match="elements"):
        load_state_dict(path)


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(CheckpointError):
        load_state_dict(path)


def _int_tuple(values):
    return b"(" + b"".join(b"K" + bytes([v]) for v in values) + b"t"


def _text(value):
    return b"X" + struct.pack("<I", len(value)) + value.encode()


def _rebuild_pickle(size, stride, offset=0, numel=4):
    """`{"w": tensor}` as torch pickles it (protocol 2, written opcode by opcode), with a
    chosen layout on float32 storage "0" of `numel` elements."""
    storage_id = (
        b"("
        + _text("storage")
        + b"ctorch\nFloatStorage\n"
        + _text("0")
        + _text("cpu")
        + b"K"
        + bytes([numel])
        + b"tQ"
    )
    tensor = (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + storage_id
        + b"K"
        + bytes([offset])
        + _int_tuple(size)
        + _int_tuple(stride)
        + b"\x89Nt"
        + b"R"
    )
    return b"\x80\x02}" + _text("w") + tensor + b"s."


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    payload = _rebuild_pickle(size=(3, 2), stride=(2, 1), numel=4)
    path = tmp_path / "oob.pth"
    _zip_checkpoint(path, payload, extra=[("archive/data/0", struct.pack("<4f", 1, 2, 3, 4))])
    with pytest.raises(CheckpointError, match="reaches element 5 of storage '0', which holds 4"):
        load_state_dict(path)


def test_storage_size_disagreeing_with_the_pickle_is_refused(tmp_path):
    payload = _rebuild_pickle(size=(4,), stride=(1,), numel=4)
    path = tmp_path / "short.pth"
    _zip_checkpoint(path, payload, extra=[("archive/data/0", struct.pack("<3f", 1, 2, 3))])
    with pytest.raises(CheckpointError, match="holds 12 bytes; its 4 elements"):
        load_state_dict(path)


def test_well_formed_crafted_file_loads(tmp_path):
    """The crafting helpers above produce what the reader accepts when the layout is valid
    (so the two refusals above are about the layout, not the helpers)."""
    payload = _rebuild_pickle(size=(2, 2), stride=(1, 2), numel=4)
    path = tmp_path / "ok.pth"
    _zip_checkpoint(path, payload, extra=[("archive/data/0", struct.pack("<4f", 1, 2, 3, 4))])
    np.testing.assert_array_equal(load_state_dict(path)["w"], [[1, 3], [2, 4]])
