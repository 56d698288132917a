"""Fetching, verifying, converting and caching weights for zoo models.

`weights=` is a registry tag or a local path. Tags resolve to a `WeightsSpec`:

- `hf://<owner>/<repo>/<file>` (timm's checkpoints) goes through `huggingface_hub`'s
  `hf_hub_download` at the spec's revision, into the Hugging Face cache, where timm keeps
  the same files: a user who has created the timm model with `pretrained=True` downloads
  nothing, and `HF_HUB_OFFLINE=1` loads from that cache alone. `HF_ENDPOINT` (read at each
  download) points at a mirror. The file is checked against the recorded sha256.
- other URLs are fetched through `keras.utils.get_file` (http(s) and file:// alike) into a
  private temporary folder beside the zoo's cache, checked against their sha256, and only
  then moved into place: a failed or tampered download leaves nothing in the cache.
- files shipped in the package use `package://<path inside zoo/>`.
- a URL ending in `.zip` (pytorchcv's releases: a zip holding one `.pth`) is unpacked in
  that private folder and its single checkpoint, not the archive, is verified (pytorchcv
  records the SHA-1 of the `.pth`) and moved into the cache.

timm checkpoints (`.safetensors`) and pytorchcv checkpoints (`.pth`, read by
zoo/convert/torch_pickle.py) convert with numpy alone; the converted Keras weights are
cached beside the download so the next load skips the conversion.
"""

import hashlib
import os
import pathlib
import shutil
import tempfile

import keras

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent
SUFFIXES = (".safetensors", ".weights.h5", ".keras")


class WeightsError(ValueError):
    """Weights could not be found, downloaded, verified or loaded into the model."""


def cache_dir():
    """Where downloads and conversions live: `$KERAS_HOME/models/keras_attention_zoo`
    (`~/.keras/models/keras_attention_zoo` by default)."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return pathlib.Path(keras_home) / "models" / "keras_attention_zoo"


ARCHIVE_SUFFIX = ".zip"
# the largest checkpoint a downloaded archive may unpack to
MAX_UNPACKED_BYTES = 4 << 30


def digest_of(path, algorithm="sha256"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path):
    return digest_of(path, "sha256")


def _file_name(url):
    return url.rstrip("/").rsplit("/", 1)[-1]


def _is_archive(spec):
    return spec.url.endswith(ARCHIVE_SUFFIX)


def cached_file_name(model_name, spec):
    """The cache's name for a download: unique per model and tag (Hugging Face calls every
    timm checkpoint `model.safetensors`); an archive's checkpoint goes by the archive's
    name without `.zip`."""
    name = _file_name(spec.url)
    if _is_archive(spec):
        name = name[: -len(ARCHIVE_SUFFIX)]
    return f"{model_name}.{spec.tag}.{name}"


def _recorded_digests(spec):
    """{algorithm: hex digest} recorded for `spec`'s file."""
    return {
        algorithm: value
        for algorithm, value in (("sha256", spec.sha256), ("sha1", spec.sha1))
        if value
    }


def _matches(path, spec):
    return all(
        digest_of(path, algorithm) == value for algorithm, value in _recorded_digests(spec).items()
    )


HF_SCHEME = "hf://"


def hub_file(url):
    """(repo id, file name) of an `hf://owner/repo/file` URL."""
    parts = url[len(HF_SCHEME) :].split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise WeightsError(f"{url!r} is not of the form hf://<owner>/<repo>/<file>")
    return "/".join(parts[:2]), parts[2]


def _fetch_from_hub(model_name, spec):
    import huggingface_hub.constants
    from huggingface_hub import errors

    repo_id, filename = hub_file(spec.url)
    where = f"{filename} of {repo_id} at revision {spec.revision}"
    try:
        path = huggingface_hub.hf_hub_download(
            repo_id,
            filename,
            revision=spec.revision,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except errors.LocalEntryNotFoundError:
        reason = (
            "HF_HUB_OFFLINE is set"
            if huggingface_hub.constants.HF_HUB_OFFLINE
            else "the Hub could not be reached"
        )
        raise WeightsError(
            f"{model_name} weights {spec.tag!r}: {where} is not in the Hugging Face cache "
            f"({huggingface_hub.constants.HF_HUB_CACHE}) and {reason}; fetch it where there is "
            f"network (`hf download {repo_id} {filename} --revision {spec.revision}`, or "
            f"timm.create_model('{repo_id.split('/', 1)[1]}', pretrained=True)) and copy "
            f"the cache, or pass the file's path as weights="
        ) from None
    except (errors.HfHubHTTPError, OSError, ValueError) as error:
        raise WeightsError(
            f"could not download {model_name} weights {spec.tag!r} ({where}): "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None
    path = pathlib.Path(path)
    actual = sha256_of(path) if spec.sha256 is not None else None
    if actual != spec.sha256:
        # a corrupt or substituted file must not be found again: drop it from the cache
        blob = path.resolve()
        path.unlink()
        if blob != path:
            blob.unlink(missing_ok=True)
        raise WeightsError(
            f"sha256 mismatch for {where}: expected {spec.sha256}, got "
            f"{actual}; the file was removed from the Hugging Face cache"
        )
    return path


def fetch(model_name, spec):
    """The local path of `spec`'s file, downloading and verifying it if needed."""
    if spec.url.startswith(HF_SCHEME):
        return _fetch_from_hub(model_name, spec)
    if spec.url.startswith("package://"):
        path = PACKAGE_ROOT / spec.url[len("package://") :]
        if not path.is_file():
            raise WeightsError(f"the package is missing its weights file {path}")
        _verify(path, spec, spec.url, remove=False)
        return path
    target = cache_dir() / cached_file_name(model_name, spec)
    if target.is_file():
        if _matches(target, spec):
            return target
        target.unlink()  # stale or corrupt: fetch again
    # get_file silently falls back to a temporary folder when the cache dir is missing
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        try:
            downloaded = keras.utils.get_file(
                fname=_file_name(spec.url),
                origin=spec.url,
                cache_dir=str(staging),
                cache_subdir=".",
            )
        except Exception as error:  # get_file raises bare Exceptions for URL errors
            raise WeightsError(
                f"could not download {model_name} weights {spec.tag!r} from {spec.url}: "
                f"{error}. Without network access, download the file elsewhere and copy "
                f"it to {target}"
                + "".join(
                    f" ({algorithm} {value})"
                    for algorithm, value in _recorded_digests(spec).items()
                )
                + (" (unpacked)" if _is_archive(spec) else "")
            ) from None
        downloaded = pathlib.Path(downloaded)
        if _is_archive(spec):
            downloaded = _unpack_single_checkpoint(downloaded, staging, spec.url)
        _verify(downloaded, spec, spec.url, remove=True)
        os.replace(downloaded, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _unpack_single_checkpoint(archive_path, folder, url):
    """The one `.pth` member of the zip `archive_path`, extracted into `folder` (bounded:
    at most `MAX_UNPACKED_BYTES`, and no more than the member declares)."""
    import zipfile

    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) != 1 or not members[0].filename.endswith(".pth"):
                raise WeightsError(
                    f"{url} should hold exactly one .pth checkpoint; it holds "
                    f"{[info.filename for info in members][:5]}"
                )
            member = members[0]
            if member.file_size > MAX_UNPACKED_BYTES:
                raise WeightsError(
                    f"{url}: {member.filename} unpacks to {member.file_size} "
                    f"bytes, over the limit of {MAX_UNPACKED_BYTES}"
                )
            target = folder / ("unpacked-" + pathlib.PurePosixPath(member.filename).name)
            written = 0
            with archive.open(member) as source, open(target, "wb") as sink:
                for block in iter(lambda: source.read(1 << 20), b""):
                    written += len(block)
                    if written > member.file_size:
                        raise WeightsError(
                            f"{url}: {member.filename} unpacks to more than "
                            f"its declared {member.file_size} bytes"
                        )
                    sink.write(block)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise WeightsError(f"{url} is not a readable zip archive: {error}") from None
    return target


def _verify(path, spec, url, remove):
    for algorithm, expected in _recorded_digests(spec).items():
        actual = digest_of(path, algorithm)
        if actual != expected:
            if remove:
                path.unlink()
            raise WeightsError(
                f"{algorithm} mismatch for {url}: expected {expected}, got {actual}"
                + ("; the file was removed" if remove else "")
            )


def weights_format(path):
    name = str(path)
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    raise WeightsError(
        f"weights path {name!r} must end in one of {', '.join(SUFFIXES)} (timm safetensors, "
        f"Keras weights, Keras model)"
    )


def save_weights_atomically(model, path):
    """`model.save_weights(path)` through a temporary file renamed into place, so a crash
    never leaves a half-written file where a later load would find it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".convert-", suffix=".weights.h5", dir=path.parent)
    os.close(handle)
    try:
        model.save_weights(temporary, overwrite=True)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_pytorchcv(model, path, model_name):
    """Convert a pytorchcv `.pth` state dict into `model`, the zoo's `model_name` (numpy
    only, through the restricted unpickler of zoo/convert/torch_pickle.py)."""
    from zoo.convert.pytorchcv import load_pytorchcv_state_dict
    from zoo.convert.torch_pickle import CheckpointError, load_state_dict

    try:
        state = load_state_dict(path)
    except CheckpointError as error:
        raise WeightsError(f"{path} is not a loadable PyTorch state dict: {error}") from None
    try:
        load_pytorchcv_state_dict(model, state, model_name)
    except ValueError as error:
        raise WeightsError(f"{path}: {error}") from None


def load_safetensors(model, path):
    """Convert a timm safetensors checkpoint into `model` (numpy only)."""
    from safetensors.numpy import load_file

    from zoo.convert.timm import load_timm_state_dict

    try:
        state = load_file(str(path))
    except Exception as error:
        raise WeightsError(f"{path} is not a readable safetensors file: {error}") from None
    try:
        load_timm_state_dict(model, state)
    except ValueError as error:
        raise WeightsError(f"{path}: {error}") from None


def _weights_layout(handle):
    """{dataset path: shape} of a Keras `.weights.h5` file (path or file object)."""
    import h5py

    layout = {}
    with h5py.File(handle, "r") as weights_file:
        weights_file.visititems(
            lambda name, item: (
                layout.__setitem__(name, tuple(item.shape))
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return layout


def _file_layout(path):
    if str(path).endswith(".keras"):
        import io
        import zipfile

        with zipfile.ZipFile(path) as archive:
            return _weights_layout(io.BytesIO(archive.read("model.weights.h5")))
    return _weights_layout(str(path))


def _model_layout(model):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.weights.h5")
        model.save_weights(path)
        return _weights_layout(path)


def load_keras_weights(model, path):
    """`.weights.h5` or `.keras` into `model`.

    Keras keys weight files by layer class and creation order, so a file from another
    architecture can load without complaint when the shapes happen to agree; the layouts are
    compared first and the first difference is named.
    """
    try:
        stored = _file_layout(path)
    except Exception as error:
        raise WeightsError(f"{path} is not a readable Keras weights file: {error}") from None
    expected = _model_layout(model)
    # a trained model's file also holds its optimizer state, which inference does not need
    stored = {key: shape for key, shape in stored.items() if not key.startswith("optimizer/")}
    for key in sorted(set(expected) | set(stored)):
        if expected.get(key) != stored.get(key):
            raise WeightsError(
                f"{path} does not fit {model.name}: at {key!r} the model expects "
                f"{_describe(expected.get(key))} and the file holds {_describe(stored.get(key))}"
            )
    model.load_weights(str(path))


def _describe(shape):
    return "nothing" if shape is None else f"shape {shape}"
