"""Servables: SavedModel versions found on disk, loaded into TF sessions, resolved per request.

Mirrors TF Serving's model management: `--model_base_path`/`--model_name` or a text-format
`ModelServerConfig` (`--model_config_file`), version folders parsed as integers (non-numeric
ignored), version policies latest{num_versions} / all / specific{versions}, version labels,
and a poll loop that loads a new version before unloading the old one.
"""

import contextlib
import gc
import logging
import os
import re
import threading
import time

import numpy as np

from serving import dtypes, warmup
from serving.errors import ServingError, from_tf_error, invalid
from serving.saved_model import xla_compiled_functions

log = logging.getLogger("serving")

# `timeout_ms`: the deadline of the TF1 session calls this thread makes (RunOptions, as TF
# Serving sets it from --rest_api_timeout_in_ms); set by serving.rest.ModelClock
call_deadline = threading.local()

METHOD_NAMES = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}


def read_model_config(path):
    """A `ModelServerConfig` parsed from a protobuf text-format file; ValueError if it is not
    one."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        # the first words are the real server's (protobuf's C++ text parser logs them)
        raise ValueError(
            f"Error parsing text-format tensorflow.serving.ModelServerConfig: {error} "
            f"({path}: not a valid ModelServerConfig text proto)"
        ) from None
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"{path}: only model_config_list is supported")
    names = [m.name for m in config.model_config_list.config]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(
                f"{path}: Illegal to list model {name} {names.count(name)} times in config list"
            )
    return config


def single_model_config(name, base_path):
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name, model.base_path, model.model_platform = name, base_path, "tensorflow"
    return config


INT64_MAX = 2**63 - 1
_VERSION_RE = re.compile(r"[0-9]+")


def parse_version_folder(name):
    """The version a folder name stands for (`00000123` is 123), or None: only plain ASCII
    decimal names that fit in an int64 are versions (`²`, Arabic-Indic digits and 20-digit
    names are not), like TF Serving's file-system source."""
    if not _VERSION_RE.fullmatch(name):
        return None
    version = int(name)
    return version if version <= INT64_MAX else None


def versions_on_disk(base_path):
    """{version: folder} for the version folders of `base_path` (see `parse_version_folder`)."""
    found = {}
    try:
        entries = os.listdir(base_path)
    except OSError:
        return found
    for entry in sorted(entries):
        version = parse_version_folder(entry)
        if version is not None and os.path.isdir(os.path.join(base_path, entry)):
            found.setdefault(version, os.path.join(base_path, entry))
    return found


def wanted_versions(config, on_disk):
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(on_disk)
    if kind == "specific":
        return set(policy.specific.versions) & set(on_disk)
    count = max(policy.latest.num_versions, 1) if kind == "latest" else 1
    return set(sorted(on_disk)[-count:])


class Servable:
    """One loaded SavedModel version: its session, MetaGraphDef and signatures."""

    def __init__(self, name, version, path, batcher=None, tags=("serve",), check_method_name=False):
        """`tags`: the MetaGraph's tag set (`--saved_model_tags`); `check_method_name`: Classify
        and Regress require the signature's method_name (`--enable_signature_method_name_check`)."""
        import tensorflow as tf

        self.name, self.version, self.path = name, version, path
        self.batcher = batcher
        self.check_method_name = check_method_name
        tags = list(tags)
        self.warmup_records = 0  # warmup records replayed when this version loaded
        self._leases = 0  # requests holding this servable (see ModelManager.use)
        self._drained = threading.Condition()
        from tensorflow.python.saved_model import loader_impl

        saved = loader_impl.parse_saved_model(path)
        if xla_compiled_functions(saved):
            # this server runs them; the real one refuses them without the flag
            log.warning(
                "model %s version %d holds functions compiled with XLA (jit_compile=True): "
                "tensorflow_model_server serves it only with --xla_cpu_compilation_enabled=true",
                name,
                version,
            )
        meta = [m for m in saved.meta_graphs if set(m.meta_info_def.tags) == set(tags)]
        if not meta:
            raise ServingError(
                "NOT_FOUND",
                "Could not find meta graph def matching supplied tags: { "
                + " ".join(tags)
                + " }. To inspect available tag-sets in the SavedModel, "
                "please use the SavedModel CLI: `saved_model_cli`",
            )
        self._session = self._tf2 = None
        if meta[0].object_graph_def.nodes:  # a TF2 SavedModel: run its restored signature functions
            self.meta_graph = meta[0]
            self._tf2 = tf.saved_model.load(path, tags=tags)
        else:  # a TF1 SavedModel: a session, fed and fetched by tensor name like TF Serving
            self._graph = tf.Graph()
            self._session = tf.compat.v1.Session(graph=self._graph)
            with self._graph.as_default():
                self.meta_graph = tf.compat.v1.saved_model.loader.load(self._session, tags, path)
        self.signatures = self.meta_graph.signature_def
        self._callables = {}
        self._lock = threading.Lock()

    def signature(self, name, grpc_message=False):
        key = name or "serving_default"
        if key not in self.signatures:
            if grpc_message:
                raise ServingError(
                    "FAILED_PRECONDITION", f'Serving signature key "{key}" not found.'
                )
            raise invalid(f'Serving signature name: "{key}" not found in signature def')
        return key, self.signatures[key]

    def input_dtypes(self, signature):
        return {name: dtypes.tf_name_of(info.dtype) for name, info in signature.inputs.items()}

    def run(self, signature, feeds, output_names=None, key=None):
        """Run `signature` on {input name: array}; returns {output name: array}. With batching
        on, the call joins a batch of concurrent requests."""
        missing = set(signature.inputs) - set(feeds)
        extra = set(feeds) - set(signature.inputs)
        if missing or extra:
            raise invalid(f"Expected inputs {sorted(signature.inputs)} but got {sorted(feeds)}")
        if self.batcher is not None:
            return self.batcher.run(
                self,
                key or "serving_default",
                signature,
                feeds,
                output_names,
                lambda batch: self.run_direct(signature, batch, output_names, key),
            )
        return self.run_direct(signature, feeds, output_names, key)

    def run_direct(self, signature, feeds, output_names=None, key=None):
        """One model call on {input name: array}, never batched."""
        import tensorflow as tf
        from tensorflow.core.protobuf import config_pb2

        outputs = sorted(output_names or signature.outputs)
        in_names = sorted(feeds)
        if self._tf2 is not None:
            try:
                values = self._tf2.signatures[key or "serving_default"](
                    **{n: tf.constant(feeds[n]) for n in in_names}
                )
            except tf.errors.OpError as error:
                raise from_tf_error(error) from error
            except (TypeError, ValueError) as error:
                raise invalid(str(error).split("\n")[0][:1024]) from None
            return {n: np.asarray(values[n]) for n in outputs}
        timeout_ms = getattr(call_deadline, "timeout_ms", None)
        key = (
            tuple(signature.inputs[n].name for n in in_names),
            tuple(signature.outputs[n].name for n in outputs),
            timeout_ms,
        )
        with self._lock:
            fn = self._callables.get(key)
            if fn is None:
                options = config_pb2.CallableOptions(feed=list(key[0]), fetch=list(key[1]))
                if timeout_ms:
                    options.run_options.timeout_in_ms = timeout_ms
                fn = self._session._make_callable_from_options(options)
                self._callables[key] = fn
        try:
            values = fn(*[feeds[n] for n in in_names])
        except tf.errors.OpError as error:
            raise from_tf_error(error) from error
        return dict(zip(outputs, (np.asarray(v) for v in values)))

    def run_examples(self, key, signature, verb, serialized):
        """Run a classify/regress signature on serialized `tf.train.Example`s; returns its
        outputs."""
        kind = "classification" if verb == "classify" else "regression"
        if self.check_method_name and signature.method_name != METHOD_NAMES[verb]:
            raise invalid(
                f"Expected {kind} signature method_name to be {METHOD_NAMES[verb]}. "
                f"Was: {signature.method_name}"
            )
        if (
            verb == "classify"
            and "classes" not in signature.outputs
            and "scores" not in signature.outputs
        ):
            from google.protobuf import text_format

            raise invalid(
                'Expected classification signature outputs to contain at least one of "classes" or '
                f'"scores". Signature was: {text_format.MessageToString(signature)}'
            )
        if (
            list(signature.inputs) != ["inputs"]
            or signature.inputs["inputs"].dtype != dtypes.STRING.enum
        ):
            raise invalid(
                f"{verb.capitalize()} signature {key} must have one string input named 'inputs'"
            )
        if not serialized:
            raise invalid("Input is empty")
        examples = np.empty(len(serialized), dtype=object)
        examples[:] = list(serialized)
        outputs = self.run(signature, {"inputs": examples}, key=key)
        count = len(serialized)
        if verb == "regress":
            values = outputs.get("outputs")
            if values is None or values.size != count:
                raise invalid("Expected output tensor 'outputs' with one value per example")
            return {"outputs": values.reshape(count)}
        scores, classes = outputs.get("scores"), outputs.get("classes")
        if scores is None and classes is None:
            raise invalid(
                "Expected classification signature outputs to contain at least one of "
                "classes, scores"
            )
        result = {}
        if scores is not None:
            result["scores"] = scores.reshape(count, -1)
        if classes is not None:
            result["classes"] = classes.reshape(count, -1)
        return result

    def acquire(self):
        with self._drained:
            self._leases += 1

    def release(self):
        with self._drained:
            self._leases -= 1
            if self._leases <= 0:
                self._drained.notify_all()

    def close(self, drain_timeout=0.0):
        """Free the model; with `drain_timeout`, first wait (that long at most) for the requests
        that hold it to finish."""
        if drain_timeout:
            deadline = time.monotonic() + drain_timeout
            with self._drained:
                while self._leases > 0 and time.monotonic() < deadline:
                    self._drained.wait(max(deadline - time.monotonic(), 0.0))
        if self._session is not None:
            self._session.close()
        self._tf2 = None


class ModelManager:
    """The served models: which versions exist, their states, and request resolution."""

    def __init__(
        self,
        config,
        batcher=None,
        drain_timeout=30.0,
        freeze_gc=False,
        max_num_load_retries=0,
        load_retry_interval_s=60.0,
        check_method_name=False,
        enable_model_warmup=True,
        saved_model_tags=("serve",),
        allow_version_labels_for_unavailable_models=False,
        prefer_tflite_model=False,
    ):
        """`freeze_gc`: after every load or unload, collect garbage once and move the surviving
        objects (TensorFlow's and the models', hundreds of thousands) out of the garbage
        collector's view with `gc.freeze()`. Without it every full collection walks them all,
        and a REST body's JSON lists trigger collections often: tens to hundreds of milliseconds
        of GIL-holding pauses under load. For a process that only serves.

        `max_num_load_retries` / `load_retry_interval_s`: a failed version load is tried again
        that many times, that long apart (a version caught mid-copy loads once complete); the
        `serve` command uses TF Serving's defaults (5, 60 s). The other options are the
        `--enable_signature_method_name_check`, `--enable_model_warmup`, `--saved_model_tags`
        and `--allow_version_labels_for_unavailable_models` flags; `prefer_tflite_model`: a
        version folder holding `model.tflite` is served by LiteRT (`serving.tflite`)."""
        self.batcher = batcher  # a serving.batching.Batcher, or None
        self.freeze_gc = freeze_gc
        self.drain_timeout = drain_timeout  # how long an unloaded version waits for its requests
        self.max_num_load_retries = max(int(max_num_load_retries), 0)
        self.load_retry_interval_s = max(float(load_retry_interval_s), 0.0)
        self.check_method_name = check_method_name
        self.enable_model_warmup = enable_model_warmup
        self.saved_model_tags = tuple(saved_model_tags)
        self.prefer_tflite_model = prefer_tflite_model
        self.allow_version_labels_for_unavailable_models = (
            allow_version_labels_for_unavailable_models
        )
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self.config = config
        self.servables = {}  # name -> {version: Servable}
        self.states = {}  # name -> {version: (state, error_code, message)}
        self._retries = {}  # (name, version) -> (failed attempts, monotonic time of the next try)
        self._warned_empty = set()  # configured models whose base path has no version (logged once)

    def model_configs(self):
        return list(self.config.model_config_list.config)

    def poll(self):
        """Load wanted versions that are not loaded yet, then unload unwanted ones."""
        with self._poll_lock:
            if self._poll():
                self._refreeze_gc()

    def _refreeze_gc(self):
        if self.freeze_gc:
            gc.unfreeze()  # the versions just unloaded become collectable
            gc.collect()
            gc.freeze()

    def reload(self, config):
        """Replace the whole model set with `config` (a `ModelServerConfig`), like
        HandleReloadConfigRequest: new models and versions are loaded before this returns,
        models no longer listed are unloaded. Raises INVALID_ARGUMENT for a bad config and the
        load error of a model that has no version loaded afterwards."""
        if config.WhichOneof("config") != "model_config_list":
            raise invalid(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        names = [m.name for m in config.model_config_list.config]
        for name in names:
            if not name:
                raise invalid("ModelConfig has an empty name")
            if names.count(name) > 1:
                raise invalid(
                    f"Illegal to list model {name} {names.count(name)} times in config list"
                )
        self.check_config(config, base_paths=False)
        with self._poll_lock:
            with self._lock:
                self.config = config
                removed = [n for n in list(self.servables) if n not in names]
                gone = []
                for name in removed:
                    gone.extend(self.servables.pop(name).values())
                    self.states.pop(name, None)
            for servable in gone:
                servable.close(self.drain_timeout)
            if self._poll() or gone:
                self._refreeze_gc()
        if self.pending_retries() is not None:
            self.poll_until_settled()
        for name in names:
            states = self.states.get(name, {})
            if not self.servables.get(name):
                failed = [s for s in states.values() if s[1] != "OK"]
                if failed:
                    raise ServingError(failed[0][1], failed[0][2])
        self.check_version_labels()

    def _poll(self):
        """True when a version was loaded or unloaded. A model whose base path cannot be read
        is logged and skipped; the others go on."""
        changed = False
        for model in self.model_configs():
            try:
                changed |= self._poll_model(model)
            except Exception:  # one model's trouble never stops the others' version changes
                log.exception("polling model %s at %s failed", model.name, model.base_path)
        return changed

    def _poll_model(self, model):
        changed = False
        on_disk = versions_on_disk(model.base_path)
        if not on_disk and model.name not in self._warned_empty:
            self._warned_empty.add(model.name)
            log.warning(
                "No versions of servable %s found under base path %s. Did you forget to name "
                "your leaf directory as a number (eg. '/1/')?",
                model.name,
                model.base_path,
            )
        elif on_disk:
            self._warned_empty.discard(model.name)
        wanted = wanted_versions(model, on_disk)
        with self._lock:
            loaded = self.servables.setdefault(model.name, {})
            states = self.states.setdefault(model.name, {})
        for version in sorted(wanted - set(loaded)):
            if not self._load_due(model.name, version):
                continue
            states[version] = ("LOADING", "OK", "")
            servable = None
            try:
                servable = self._servable_class(on_disk[version])(
                    model.name,
                    version,
                    on_disk[version],
                    batcher=self.batcher,
                    tags=self.saved_model_tags,
                    check_method_name=self.check_method_name,
                )
                # warmup records run before the version is AVAILABLE; a failing one fails the load
                if self.enable_model_warmup:
                    servable.warmup_records = warmup.run_saved_model_warmup(servable)
            except Exception as error:  # reported in status, never served
                if servable is not None:
                    servable.close()
                self._load_failed(model.name, version, error, states)
                continue
            self._retries.pop((model.name, version), None)
            with self._lock:
                loaded[version] = servable
                states[version] = ("AVAILABLE", "OK", "")
            changed = True
        for version in sorted(set(loaded) - wanted):
            if len(loaded) <= 1:
                break  # never unload the last loaded version
            with self._lock:
                servable = loaded.pop(version)
                states[version] = ("END", "OK", "")
            servable.close(self.drain_timeout)
            changed = True
        for version in list(states):
            if version not in on_disk and version not in loaded:
                with self._lock:
                    states.pop(version)
        for key in [k for k in self._retries if k[0] == model.name and k[1] not in wanted]:
            del self._retries[key]  # tried afresh should it be wanted again
        return changed

    def _servable_class(self, path):
        """`Servable` for a SavedModel; `TfLiteServable` for a version folder with
        `model.tflite` when `prefer_tflite_model` is on (as TF Serving's bundle factory)."""
        if self.prefer_tflite_model:
            from serving.tflite import TfLiteServable, tflite_model_found

            if tflite_model_found(path):
                return TfLiteServable
        return Servable

    def _load_due(self, name, version):
        """Whether a version not loaded yet should be (re)tried now."""
        retry = self._retries.get((name, version))
        if retry is None:
            return True
        attempts, next_try = retry
        return attempts <= self.max_num_load_retries and time.monotonic() >= next_try

    def _load_failed(self, name, version, error, states):
        attempts = self._retries.get((name, version), (0, 0.0))[0] + 1
        self._retries[(name, version)] = (attempts, time.monotonic() + self.load_retry_interval_s)
        if isinstance(error, ServingError):
            code, message = error.code, error.message[:1024]
        else:
            code, message = "UNKNOWN", str(error)[:1024]
        if attempts <= self.max_num_load_retries:
            log.warning(
                "loading %s version %d failed (attempt %d of %d), retrying in %g s: %s",
                name,
                version,
                attempts,
                self.max_num_load_retries + 1,
                self.load_retry_interval_s,
                message,
            )
            states[version] = (
                "LOADING",
                "OK",
                "",
            )  # as TF Serving reports a load that is being retried
        else:
            log.error("failed to load %s version %d: %s", name, version, message)
            states[version] = ("END", code, message)

    def pending_retries(self):
        """Seconds until the earliest pending load retry, or None when no retry is pending."""
        names = {m.name for m in self.model_configs()}
        pending = [
            t
            for (name, _), (attempts, t) in list(self._retries.items())
            if name in names and attempts <= self.max_num_load_retries
        ]
        return max(min(pending) - time.monotonic(), 0.0) if pending else None

    def poll_until_settled(self, stopping=None):
        """`poll()`, then wait for and run the pending load retries (as TF Serving's start-up
        and config reloads wait for the retries of their loads). `stopping`: an Event that
        ends the wait early."""
        self.poll()
        while (wait := self.pending_retries()) is not None:
            if stopping is not None and stopping.wait(wait):
                return
            if stopping is None:
                time.sleep(wait)
            self.poll()

    def check_config(self, config=None, base_paths=True):
        """Refuse, with TF Serving's messages, what its ServerCore refuses before loading: a
        model without a platform or with one other than `tensorflow`, and (`base_paths`, at
        start-up) a base path that does not exist."""
        models = config.model_config_list.config if config is not None else self.model_configs()
        for model in models:
            if not model.model_platform:
                raise invalid(
                    "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                    f"ModelServerConfig::model_platform, model name is {model.name}"
                )
            if model.model_platform != "tensorflow":
                raise invalid(
                    f"Model {model.name} requests unsupported platform {model.model_platform}"
                )
            if base_paths and not os.path.exists(model.base_path):
                raise invalid(
                    f"Could not find base path {model.base_path} for servable {model.name} "
                    f"with error NOT_FOUND: {model.base_path} not found"
                )

    def check_version_labels(self):
        """FAILED_PRECONDITION, as TF Serving's ServerCore, for a version label that points at a
        version which is not available (unless `allow_version_labels_for_unavailable_models`)."""
        if self.allow_version_labels_for_unavailable_models:
            return
        for model in self.model_configs():
            for _label, version in sorted(model.version_labels.items()):
                if version not in self.servables.get(model.name, {}):
                    raise ServingError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of "
                        f"model {model.name}, which is not currently available for inference",
                    )

    def unavailable_models(self):
        """TF Serving's start-up error for the models with no version available, or None:
        `N model(s) did not become available: {{name: m version: 1} due to error: ...}, }`."""
        failed = []
        for model in self.model_configs():
            if self.servables.get(model.name):
                continue
            for version, (_state, code, message) in sorted(self.states.get(model.name, {}).items()):
                if code != "OK":
                    failed.append(
                        f"{{{{name: {model.name} version: {version}}} "
                        f"due to error: {code}: {message}}}, "
                    )
        if not failed:
            return None
        return f"{len(failed)} model(s) did not become available: {{{''.join(failed)}}}"

    def known(self, name):
        return name in self.states and any(True for _ in self.states[name])

    def resolve(self, name, version=None, label=None):
        """The servable for a request (`Latest(name)`, `Specific(name, N)` or a label)."""
        with self._lock:
            loaded = self.servables.get(name, {})
            if label is not None:
                model = next((m for m in self.model_configs() if m.name == name), None)
                if model is None or label not in model.version_labels:
                    if not loaded:
                        raise ServingError(
                            "NOT_FOUND", f"Servable not found for request: Latest({name})"
                        )
                    raise invalid(f"Unrecognized servable version label: {label}")
                version = model.version_labels[label]
            if version is None:
                if not loaded:
                    raise ServingError(
                        "NOT_FOUND", f"Servable not found for request: Latest({name})"
                    )
                return loaded[max(loaded)]
            if version not in loaded:
                raise ServingError(
                    "NOT_FOUND", f"Servable not found for request: Specific({name}, {version})"
                )
            return loaded[version]

    @contextlib.contextmanager
    def use(self, name, version=None, label=None):
        """`resolve`, holding the servable so that an unload waits for this request to finish."""
        with self._lock:
            servable = self.resolve(name, version, label)
            servable.acquire()
        try:
            yield servable
        finally:
            servable.release()

    def status(self, name, version=None, label=None):
        """[(version, state, error_code, message)] like GetModelStatus."""
        with self._lock:
            states = self.states.get(name)
            if not states:
                raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
            if label is not None:
                model = next((m for m in self.model_configs() if m.name == name), None)
                if model is None or label not in model.version_labels:
                    raise invalid(f"Unrecognized servable version label: {label}")
                version = model.version_labels[label]
            if version is not None:
                if version not in states:
                    raise ServingError(
                        "NOT_FOUND", f"Could not find version {version} of model {name}"
                    )
                return [(version,) + states[version]]
            return [(v,) + states[v] for v in sorted(states, reverse=True)]

    def close(self):
        with self._lock:
            for loaded in self.servables.values():
                for servable in loaded.values():
                    servable.close()
            self.servables.clear()
