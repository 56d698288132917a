"""Write the notebooks in notebooks/ (outputs stripped). Edit the cells here, then rerun.

Each notebook's first code cell is tagged `parameters`: its sizes are what a reader runs;
tests/test_notebooks.py adds `SMALL = True` after it so CI runs every notebook in seconds.
No notebook picks a matplotlib backend: Jupyter draws figures inline, and the test runner
sets `MPLBACKEND=Agg`.
"""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def md(text):
    return new_markdown_cell(text.strip())


def code(text):
    return new_code_cell(text.strip())


def parameters(text):
    cell = code(text)
    cell.metadata["tags"] = ["parameters"]
    return cell


QUICKSTART = [
    md("""
# Quickstart: CBAM in a small CNN

A `keras_attention.layers.CBAM` block inside a small convolutional network, trained with
`model.fit` for one epoch on the 5,000-digit MNIST subset that ships with the package (no
download), then the spatial attention map of the block drawn over test digits.
"""),
    parameters("""
SMALL = False  # the test runner sets True: fewer training digits
"""),
    code("""
import keras
import matplotlib.pyplot as plt

import keras_attention
from keras_attention.layers import CBAM
from zoo.datasets import mnist_subset

keras.utils.set_random_seed(0)
TRAIN_DIGITS = 2000 if SMALL else 4000
print('Keras', keras.__version__, 'on', keras.backend.backend())
"""),
    md("The fixed split: 4,000 training digits, 1,000 held-out test digits."),
    code("""
x_train, y_train = mnist_subset('train')
x_test, y_test = mnist_subset('test')
x_train, y_train = x_train[:TRAIN_DIGITS], y_train[:TRAIN_DIGITS]
x_train.shape, x_test.shape
"""),
    md("""
CBAM re-weights channels (shared MLP over average- and max-pooled features), then positions
(a 7x7 convolution over the channel-mean and channel-max maps).
"""),
    code("""
inputs = keras.Input((28, 28, 1))
x = keras.layers.Conv2D(32, 3, padding='same', activation='relu')(inputs)
x = keras.layers.MaxPooling2D()(x)
x = keras.layers.Conv2D(64, 3, padding='same', activation='relu')(x)
x = CBAM(reduction_ratio=1 / 8, name='cbam')(x)
x = keras.layers.MaxPooling2D()(x)
x = keras.layers.Flatten()(x)
x = keras.layers.Dropout(0.25)(x)
outputs = keras.layers.Dense(10, activation='softmax')(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss='sparse_categorical_crossentropy', metrics=['accuracy'])
model.summary()
"""),
    code("""
history = model.fit(x_train, y_train, epochs=1, batch_size=32, verbose=2)
loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f'test accuracy after one epoch: {accuracy:.3f}')
assert accuracy > 0.5, 'one epoch should already be far above chance (0.1)'
"""),
    md("""
Every layer of the library returns its attention map with `return_attention=True`;
`keras_attention.attention_map` does that for a layer inside a trained model.
"""),
    code("""
maps = keras_attention.attention_map(model, 'cbam', x_test[:8])
fig, axes = plt.subplots(2, 8, figsize=(12, 3.2))
for i in range(8):
    axes[0, i].imshow(x_test[i, ..., 0], cmap='gray')
    axes[1, i].imshow(x_test[i, ..., 0], cmap='gray')
    axes[1, i].imshow(maps[i, ..., 0], cmap='magma', alpha=0.6,
                      extent=(-0.5, 27.5, 27.5, -0.5))
    axes[0, i].set_title(f'label {y_test[i]}')
for ax in axes.flat:
    ax.axis('off')
plt.tight_layout()
plt.show()
maps.shape
"""),
]

ATTENTION_MAPS = [
    md("""
# Attention maps of every layer family

One batch of digits goes through a layer of each of the five families (untrained, on the
features of one fixed random convolution), and each layer returns its map with
`return_attention=True`. The maps are drawn side by side, each with its formula in one line.
Trained maps: `00_quickstart` (CBAM) and `02_train_and_watch` (CBAM, RAM).
"""),
    parameters("""
SMALL = False  # the test runner sets True: fewer digits
"""),
    code("""
import keras
import matplotlib.pyplot as plt
import numpy as np

from keras_attention import layers as L
from zoo.datasets import mnist_subset

keras.utils.set_random_seed(0)
NUM_IMAGES = 2 if SMALL else 4
images, labels = mnist_subset('test')
images = images[:NUM_IMAGES]                   # (N, 28, 28, 1) in [0, 1]
features = keras.layers.Conv2D(16, 3, padding='same', activation='relu')(images)
features.shape
"""),
    md("""
One layer per family. Shapes differ (see each family's page), so each map is brought to the
28 x 28 grid of the image: the spatial maps as they are, a non-local row (where position
`q` looks) as an image, a local window at its place, a hard mask as it is.
"""),
    code("""
H = W = 28
q = (14, 14)                                   # the query position for the pairwise maps
q_index = q[0] * W + q[1]


def local_window(weights, kernel=7):
    # (N, H, W, heads, k*k) -> the k x k weights of position q, placed around q
    out = np.zeros((weights.shape[0], H, W))
    window = weights[:, q[0], q[1], 0].reshape(-1, kernel, kernel)
    r = kernel // 2
    out[:, q[0] - r:q[0] + r + 1, q[1] - r:q[1] + r + 1] = window
    return out


families = {}
_, a = L.GlobalContext()(features, return_attention=True)
families['channel: GlobalContext'] = (
    np.asarray(a)[..., 0], r'$y = x + W_2\\,\\mathrm{ReLU}(\\mathrm{LN}(W_1 \\sum_j '
    r'\\mathrm{softmax}_j(w_k^\\top x_j)\\,x_j))$')
_, a = L.CBAM(reduction_ratio=1 / 4)(features, return_attention=True)
families['spatial & mixed: CBAM'] = (
    np.asarray(a)[..., 0], r'$M_s = \\sigma(f^{7\\times7}([\\max_c F;\\ \\mathrm{mean}_c F]))$')
_, a = L.NonLocal()(features, return_attention=True)
families['global: NonLocal, row of q'] = (
    np.asarray(a)[:, q_index].reshape(-1, H, W),
    r'$y_i = \\sum_j \\mathrm{softmax}_j(\\theta(x_i)^\\top \\phi(x_j))\\,g(x_j)$')
_, a = L.LocalSelfAttention2D(kernel_size=7)(features, return_attention=True)
families['local: LocalSelfAttention2D at q'] = (
    local_window(np.asarray(a)),
    r'$y_i = \\sum_{j \\in N_7(i)} \\mathrm{softmax}_j(q_i^\\top k_j / \\sqrt{d})\\,v_j$')
_, a = L.TopKHardAttention(k=60)(features, return_attention=True)
families['hard: TopKHardAttention'] = (
    np.asarray(a)[..., 0], r'$m_i = [\\,\\|x_i\\|_2 \\in \\mathrm{top}_k\\,]$, $y = m \\odot x$')
{name: value[0].shape for name, value in families.items()}
"""),
    code("""
fig, axes = plt.subplots(NUM_IMAGES, len(families) + 1,
                         figsize=(2.6 * (len(families) + 1), 2.6 * NUM_IMAGES + 0.8),
                         squeeze=False)
for row in range(NUM_IMAGES):
    axes[row, 0].imshow(images[row, ..., 0], cmap='gray')
    axes[row, 0].set_title(f'digit {labels[row]}', fontsize=9)
    for col, (name, (maps, formula)) in enumerate(families.items(), start=1):
        shown = (maps[row] - maps[row].min()) / (np.ptp(maps[row]) + 1e-12)  # per image
        axes[row, col].imshow(images[row, ..., 0], cmap='gray')
        axes[row, col].imshow(shown, cmap='magma', alpha=0.65)
        if 'at q' in name or 'of q' in name:
            axes[row, col].plot(q[1], q[0], '+', color='cyan', markersize=10)
        if row == 0:
            axes[row, col].set_title(name, fontsize=9)
        if row == NUM_IMAGES - 1:
            axes[row, col].set_xlabel(formula, fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()
"""),
    md("""
The same call works for every layer of the library; `compute_attention_shape` gives each
map's shape without running the layer:
"""),
    code("""
{name: layer.compute_attention_shape((None, 28, 28, 16)) for name, layer in {
    'SqueezeExcite': L.SqueezeExcite(),
    'CBAM': L.CBAM(),
    'CrissCrossAttention': L.CrissCrossAttention(),
    'LocalSelfAttention2D': L.LocalSelfAttention2D(),
    'TopKHardAttention': L.TopKHardAttention(k=8),
}.items()}
"""),
]

TRAIN_AND_WATCH = [
    md("""
# Train and watch: CBAM and RAM with `model.fit`

Two attention models trained briefly with plain `model.fit` on the offline MNIST tasks
(`zoo.tasks`, no download): a CNN with a CBAM block on translated MNIST, whose attention maps
`zoo.train.AttentionMapTensorBoard` writes to TensorBoard every epoch (read back and drawn
here), and a recurrent attention model (RAM), whose scan path is drawn at the end.
"""),
    parameters("""
SMALL = False  # the test runner sets True: fewer digits, one epoch
"""),
    code("""
import glob
import io
import tempfile

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from PIL import Image

import zoo
from keras_attention.layers import CBAM
from zoo.ram import predict_with_glimpses
from zoo.tasks import translated_mnist
from zoo.train import AttentionMapTensorBoard

keras.utils.set_random_seed(0)
TRAIN_IMAGES = 128 if SMALL else 2000
VALIDATION_IMAGES = 64 if SMALL else 500
EPOCHS = 1 if SMALL else 5
SIZE = 60
x_train, y_train, _ = translated_mnist('train', size=SIZE, seed=1)
x_test, y_test, _ = translated_mnist('test', size=SIZE, seed=0)
x_train, y_train = x_train[:TRAIN_IMAGES], y_train[:TRAIN_IMAGES]
x_train.shape
"""),
    md("## A CBAM CNN, its maps in TensorBoard"),
    code("""
inputs = keras.Input((SIZE, SIZE, 1))
x = keras.layers.Conv2D(32, 3, strides=2, padding='same', activation='relu')(inputs)
x = CBAM(reduction_ratio=1 / 4, name='cbam1')(x)
x = keras.layers.Conv2D(64, 3, strides=2, padding='same', activation='relu')(x)
x = CBAM(reduction_ratio=1 / 4, name='cbam2')(x)
x = keras.layers.GlobalMaxPooling2D()(x)
outputs = keras.layers.Dense(10, activation='softmax')(x)
cbam_cnn = keras.Model(inputs, outputs)
cbam_cnn.compile(optimizer=keras.optimizers.Adam(2e-3),
                 loss='sparse_categorical_crossentropy', metrics=['accuracy'])

log_dir = tempfile.mkdtemp(prefix='cbam_run_')
watcher = AttentionMapTensorBoard(log_dir, images=x_test[:4], layers=['cbam1', 'cbam2'])
history = cbam_cnn.fit(x_train, y_train, epochs=EPOCHS, batch_size=32,
                       validation_data=(x_test[:VALIDATION_IMAGES], y_test[:VALIDATION_IMAGES]),
                       callbacks=[watcher],
                       verbose=2)
print('TensorBoard logs in', log_dir, '(tensorboard --logdir', log_dir + ')')
"""),
    md("""
The callback writes image summaries `attention/<layer>`: the map of each CBAM block,
upsampled and overlaid on the input digits. Read back from the event files:
"""),
    code("""
images = {}
for path in sorted(glob.glob(f'{log_dir}/**/events.out.tfevents.*', recursive=True)):
    for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == 'images':
                encoded = tf.make_ndarray(value.tensor)[2:]     # [width, height, png, ...]
                images[(value.tag, event.step)] = [np.asarray(Image.open(io.BytesIO(png)))
                                                   for png in encoded]
last = {tag: frames for (tag, step), frames in sorted(images.items(), key=lambda kv: kv[0][1])}
fig, axes = plt.subplots(len(last), 4, figsize=(8, 2.1 * len(last)), squeeze=False)
for row, (tag, frames) in enumerate(sorted(last.items())):
    for col, frame in enumerate(frames[:4]):
        axes[row, col].imshow(frame)
        axes[row, col].axis('off')
    axes[row, 0].set_title(tag, fontsize=9, loc='left')
plt.tight_layout()
plt.show()
sorted(last)
"""),
    md("""
## A recurrent attention model

`zoo.load('ram')` builds RAM (Mnih et al. 2014) as a `keras.Model` that trains with `fit`:
the compiled cross-entropy plus REINFORCE for the glimpse locations. A few epochs here only
show the loop; a model that reads digits takes hours on a CPU, so the scan path below is
drawn with the shipped weights `translated_mnist` (2.4% test error): the glimpse locations
in order (red first, yellow last) and the three patches (12, 24 and 48 pixels) of the last
glimpse, which together with the core's memory of the earlier ones decide the class.
"""),
    code("""
ram = zoo.load('ram', num_glimpses=2 if SMALL else 6)
ram.compile(optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy())
ram_history = ram.fit(x_train, y_train, epochs=EPOCHS, batch_size=64, verbose=2)
ram_history.history['loss']
"""),
    code("""
trained = zoo.load('ram', weights='translated_mnist')
probabilities, locations = predict_with_glimpses(trained, x_test[:6])
fig, axes = plt.subplots(1, 6, figsize=(13, 2.6))
for i, ax in enumerate(axes):
    rows = (locations[i, :, 0] + 1) / 2 * SIZE
    cols = (locations[i, :, 1] + 1) / 2 * SIZE
    ax.imshow(x_test[i, ..., 0], cmap='gray')
    ax.plot(cols, rows, '-', color='orange', lw=1)
    ax.scatter(cols, rows, c=np.arange(len(rows)), cmap='autumn', s=25, zorder=3)
    for side in (12, 24, 48):                  # the last glimpse's three patches
        ax.add_patch(plt.Rectangle((cols[-1] - side / 2, rows[-1] - side / 2), side, side,
                                   fill=False, color='cyan', lw=0.8))
    ax.set_xlim(-0.5, SIZE - 0.5)
    ax.set_ylim(SIZE - 0.5, -0.5)
    ax.set_title(f'label {y_test[i]}, says {probabilities[i].argmax()}', fontsize=9)
    ax.axis('off')
plt.tight_layout()
plt.show()
locations.shape
"""),
]

SERVE_AND_QUERY = [
    md("""
# Export, serve and query

The shipped pretrained spatial transformer network (`stn_cnn`) exported as a TF Serving
SavedModel, served by the embedded TF-Serving-compatible server started from this notebook,
and queried the ways a TF Serving user would: REST with plain HTTP, `serving.Client` over REST
and gRPC, and the raw `tensorflow-serving-api` gRPC stubs. The same export folder serves
unchanged with the official `tensorflow/serving` image.
"""),
    parameters("""
SMALL = False  # the test runner sets True: fewer test digits
"""),
    code("""
import json
import pathlib
import tempfile
import urllib.request

import numpy as np

import serving
import zoo
from serving.models import single_model_config
from zoo.tasks import rts_mnist

COUNT = 4 if SMALL else 8
images, labels, _ = rts_mnist('test', seed=0)
batch, labels = images[:COUNT].astype('float32'), labels[:COUNT]
model = zoo.load('stn_cnn', weights='rts_mnist')
base_path = pathlib.Path(tempfile.mkdtemp(prefix='models_'))
version_dir = serving.export(model, str(base_path), 'stn_cnn', image_signature=True)
sorted(p.name for p in pathlib.Path(version_dir).iterdir())
"""),
    md("""
`serving.Server` is what `keras-attention-zoo serve` runs: the same flags as
`tensorflow_model_server` (here as arguments), gRPC and REST on ports of our choosing (0:
any free port).
"""),
    code("""
server = serving.Server(single_model_config('stn_cnn', str(base_path / 'stn_cnn')),
                        rest_api_port=0, port=0, host='127.0.0.1')
server.start()
rest_url, grpc_target = f'http://127.0.0.1:{server.rest_api_port}', f'127.0.0.1:{server.port}'
rest_url, grpc_target
"""),
    md("## REST with plain HTTP"),
    code("""
def http(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(rest_url + path, data=data)) as reply:
        return json.loads(reply.read())


print(json.dumps(http('/v1/models/stn_cnn'), indent=1))            # status
answer = http('/v1/models/stn_cnn:predict', {'instances': batch.tolist()})
by_rest = np.array(answer['predictions'])
print('labels:     ', labels.tolist())
print('predictions:', by_rest.argmax(-1).tolist())
"""),
    code("""
metadata = http('/v1/models/stn_cnn/metadata')
signatures = metadata['metadata']['signature_def']['signature_def']
{name: (sorted(sig['inputs']), sorted(sig['outputs']))
 for name, sig in signatures.items() if not name.startswith('__')}
"""),
    md("## `serving.Client` over REST and gRPC"),
    code("""
with serving.Client(rest=rest_url) as rest, serving.Client(grpc=grpc_target) as grpc:
    by_client_rest = next(iter(rest.predict('stn_cnn', batch).values()))
    by_client_grpc = next(iter(grpc.predict('stn_cnn', batch).values()))
    status = grpc.status('stn_cnn')
    grpc_metadata = grpc.metadata('stn_cnn')
np.testing.assert_allclose(by_client_rest, by_rest, rtol=1e-6)
np.testing.assert_allclose(by_client_grpc, by_rest, rtol=1e-6)
print(status)
"""),
    md("## The raw `tensorflow-serving-api` gRPC stubs"),
    code("""
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

channel = grpc.insecure_channel(grpc_target)
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
request = predict_pb2.PredictRequest()
request.model_spec.name = 'stn_cnn'
request.model_spec.signature_name = 'serving_default'
input_name = next(iter(signatures['serving_default']['inputs']))
request.inputs[input_name].CopyFrom(tf.make_tensor_proto(batch))
reply = stub.Predict(request, timeout=30)
by_stub = tf.make_ndarray(next(iter(reply.outputs.values())))
np.testing.assert_allclose(by_stub, by_rest, rtol=1e-6)
channel.close()
print('raw stub predictions:', by_stub.argmax(-1).tolist(), 'version', reply.model_spec.version.value)
"""),
    md("## Stop the server"),
    code("""
server.stop()
print('stopped')
"""),
]

NOTEBOOK_CELLS = {
    "00_quickstart.ipynb": QUICKSTART,
    "01_attention_maps.ipynb": ATTENTION_MAPS,
    "02_train_and_watch.ipynb": TRAIN_AND_WATCH,
    "03_serve_and_query.ipynb": SERVE_AND_QUERY,
}


def main():
    for name, cells in NOTEBOOK_CELLS.items():
        notebook = new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        path = NOTEBOOKS / name
        nbformat.write(notebook, path)
        print("wrote", path)


if __name__ == "__main__":
    main()
