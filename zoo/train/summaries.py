"""Writing scalars and images to TensorBoard event files: `tf.summary` on the TensorFlow
backend, tensorboard's own event writer (no TensorFlow needed) on the others. The same
summary layout either way; what the images show is `zoo.train.map_images`."""

import io
import time
import warnings

import keras


def png(image):
    """PNG bytes of a uint8 `(H, W, 3)` image."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class TFSummaryWriter:
    def __init__(self, log_dir):
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(log_dir)

    def scalar(self, tag, value, step):
        with self._writer.as_default():
            self._tf.summary.scalar(tag, value, step=step)

    def images(self, tag, images, step):
        with self._writer.as_default():
            self._tf.summary.image(tag, images, step=step, max_outputs=len(images))

    def close(self):
        self._writer.flush()
        self._writer.close()


class EventFileSummaryWriter:
    """tensorboard's own event writer, with the summary layout `tf.summary.image` /
    `tf.summary.scalar` write."""

    def __init__(self, log_dir):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(log_dir)

    def _add(self, value, step):
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[value])
        self._writer.add_event(
            event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        )

    def scalar(self, tag, value, step):
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[float(value)])
        self._add(summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor), step)

    def images(self, tag, images, step):
        from tensorboard.compat.proto import (
            summary_pb2,
            tensor_pb2,
            tensor_shape_pb2,
            types_pb2,
        )

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images")
        )
        strings = [str(images.shape[2]).encode(), str(images.shape[1]).encode()]
        strings += [png(image) for image in images]
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(strings))]
        )
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=strings
        )
        self._add(summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor), step)

    def close(self):
        self._writer.flush()
        self._writer.close()


def summary_writer(log_dir):
    """tf.summary on the TensorFlow backend, else tensorboard's event writer, else None
    (with a warning)."""
    if keras.backend.backend() == "tensorflow":
        return TFSummaryWriter(log_dir)
    try:
        return EventFileSummaryWriter(log_dir)
    except ImportError as error:
        warnings.warn(
            f"TensorBoard summaries are skipped: tensorboard is not importable "
            f"({error}); `pip install tensorboard` to get them",
            stacklevel=2,
        )
        return None
