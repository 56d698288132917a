"""Two-level attention (Xiao, Xu, Yang, Zhang, Peng, Zhang; CVPR 2015) as a zoo pipeline:
classify an image from the patches an object-level attention keeps and from the parts a
part-level attention finds in them.

Object level. Candidate patches are a fixed grid of square windows at a few scales (the
paper's selective-search proposals replaced by sliding windows), each resized to
`patch_size`. The *FilterNet*, a CNN trained on whole images, scores every window by its
confidence (its largest class probability); the `top_k` windows are kept. The *DomainNet*,
the same CNN fine-tuned on kept patches, classifies each kept patch; the object-level score
is the mean of their softmax outputs.

Part level. The filters of one mid-level convolution of the DomainNet are grouped into
`num_parts` part detectors by spectral clustering of their similarity (`spectral_clustering`,
numpy only; the paper clusters by the cosine similarity of the filters' weights, here by
that of their activations over training patches, which a ReLU makes non-negative, so the
similarity is an affinity as it stands). A part's score map on a patch is the sum of its
filters' activations; at each part's peak the DomainNet's next feature map is read out, the
parts' feature vectors are concatenated and a softmax classifier scores them (the paper: an
SVM). The part-level score is the mean of its softmax outputs over the kept patches.

The final score is the sum of the two levels' scores, as in the paper (so it sums to 2 over
the classes). `build_two_level_mnist` makes the pipeline from the zoo's MNIST classifier CNN
(`zoo.stn_cnn.classifier_cnn_layers`), with `conv2` as the part layer and `conv3` as the
feature layer; tools/train_two_level.py trains it stage by stage (FilterNet on whole images,
DomainNet on kept patches, filter clusters, part classifier).
"""

import keras
import numpy as np
from keras import ops

_EPSILON = 1e-12


def spectral_clustering(affinity, num_clusters, seed=0, restarts=10, iterations=100):
    """Normalised spectral clustering (Ng, Jordan, Weiss 2001) of a symmetric non-negative
    affinity matrix, numpy only.

    The `num_clusters` eigenvectors of the smallest eigenvalues of the normalised Laplacian
    `I - D^-1/2 A D^-1/2` (diagonal of `A` set to zero), rows scaled to unit length, are
    grouped by k-means (k-means++ starts from `numpy.random.default_rng(seed)`, the best of
    `restarts` runs by inertia).

    Args:
        affinity: `(n, n)` symmetric matrix of non-negative similarities.
        num_clusters: number of clusters, 1 to n.
        seed: seed of the k-means starts.
        restarts: k-means runs; the one with the smallest inertia is kept.
        iterations: at most this many Lloyd steps per run.

    Returns:
        `(n,)` int labels in `[0, num_clusters)`, numbered in order of first appearance (so
        the same partition always gets the same labels).
    """
    affinity = np.array(affinity, dtype=np.float64)
    if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1]:
        raise ValueError(f"`affinity` must be a square matrix, got shape {affinity.shape}.")
    if not np.allclose(affinity, affinity.T) or (affinity < 0).any():
        raise ValueError("`affinity` must be symmetric and non-negative.")
    n = affinity.shape[0]
    if not isinstance(num_clusters, (int, np.integer)) or not 1 <= num_clusters <= n:
        raise ValueError(f"`num_clusters` must be an integer in [1, {n}], got {num_clusters!r}.")
    np.fill_diagonal(affinity, 0.0)
    scale = 1.0 / np.sqrt(np.maximum(affinity.sum(axis=1), _EPSILON))
    laplacian = np.eye(n) - scale[:, None] * affinity * scale[None, :]
    _, vectors = np.linalg.eigh(laplacian)
    embedding = vectors[:, :num_clusters]
    embedding /= np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), _EPSILON)
    labels = _kmeans(embedding, num_clusters, np.random.default_rng(seed), restarts, iterations)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    return order[np.searchsorted(np.unique(labels), labels)].astype(np.int64)


def _kmeans(points, k, rng, restarts, iterations):
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centers = points[[rng.integers(len(points))]]
        while len(centers) < k:  # k-means++
            distance = ((points[:, None] - centers[None]) ** 2).sum(-1).min(1)
            total = distance.sum()
            pick = (
                rng.choice(len(points), p=distance / total)
                if total > 0
                else rng.integers(len(points))
            )
            centers = np.concatenate([centers, points[[pick]]])
        for _ in range(iterations):
            labels = ((points[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
            updated = np.array(
                [
                    points[labels == j].mean(0) if (labels == j).any() else centers[j]
                    for j in range(k)
                ]
            )
            if np.allclose(updated, centers):
                break
            centers = updated
        inertia = ((points - centers[labels]) ** 2).sum()
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels, inertia
    return best


def activation_affinity(activations):
    """Cosine similarity of the channels of non-negative activations `(..., channels)` over
    all their positions: `(channels, channels)`, in [0, 1]; a channel that never fires has
    similarity 0 to every other."""
    flat = np.asarray(activations, np.float64).reshape(-1, np.shape(activations)[-1])
    if (flat < 0).any():
        raise ValueError("`activations` must be non-negative (e.g. after a ReLU).")
    unit = flat / np.maximum(np.linalg.norm(flat, axis=0, keepdims=True), _EPSILON)
    return unit.T @ unit


def window_grid(image_size, window_sizes, windows_per_side):
    """The candidate windows: for each size, `windows_per_side` evenly spaced positions per
    axis from the top-left to the bottom-right corner. Returns an `(n, 4)` int array of
    `(top, left, bottom, right)` (bottom and right exclusive), sizes in the order given,
    then rows, then columns."""
    height, width = image_size
    windows = []
    for size in window_sizes:
        tops = np.round(np.linspace(0, height - size, windows_per_side)).astype(int)
        lefts = np.round(np.linspace(0, width - size, windows_per_side)).astype(int)
        windows += [(t, lt, t + size, lt + size) for t in tops for lt in lefts]
    return np.array(windows, np.int64)


def _check_patch_size(patch_size):
    if not isinstance(patch_size, int) or patch_size < 4:
        raise ValueError(f"`patch_size` must be an integer >= 4, got patch_size={patch_size!r}.")


class TwoLevelAttention(keras.Model):
    """Object-level patch filtering plus part-level attention from clustered mid-level
    filters (Xiao et al., CVPR 2015); see the module docstring.

    Export: SavedModel only (of its probabilities: it has no logits head). TensorFlow lowers
    the window selection's integer index arithmetic to `BitwiseAnd` and `Bitcast`, which
    neither LiteRT's builtin ops nor tf2onnx take (benchmarks/results/export_matrix.md).

    Args:
        filter_net: a `keras.Model` from images `(batch, p, p, C)` to class logits (it scores
            the candidate windows); the same network classifying whole images is the
            pipeline's baseline.
        domain_net: a functional `keras.Model` from patches `(batch, p, p, C)` to three
            outputs: class logits `(batch, classes)`, the part layer's non-negative
            activations `(batch, h, w, filters)` and the feature layer's maps
            `(batch, h', w', features)`.
        image_shape: `(height, width, channels)` of the images.
        window_sizes: side of the square candidate windows, one per scale, each at most the
            image's smaller side.
        windows_per_side: positions per axis of each scale's windows.
        patch_size: side every window is resized to (bilinear) before the networks see it.
        top_k: windows kept per image, 1 to the number of windows.
        num_parts: part detectors (clusters of the part layer's filters), 1 to `filters`.
        classifier_activation: `"softmax"`: the two levels' class probabilities, summed.
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Call arguments:
        images: `(batch, height, width, channels)`.

    Returns:
        `(batch, classes)`: object-level plus part-level scores (`levels` has each).
    """

    def __init__(
        self,
        filter_net,
        domain_net,
        image_shape,
        window_sizes=(24, 32),
        windows_per_side=3,
        patch_size=28,
        top_k=3,
        num_parts=4,
        classifier_activation="softmax",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(image_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in image_shape):
            raise ValueError(
                f"`image_shape` must be (height, width, channels) of positive integers, got "
                f"image_shape={image_shape!r}."
            )
        smaller = min(image_shape[:2])
        if not window_sizes or not all(
            isinstance(s, int) and 1 <= s <= smaller for s in window_sizes
        ):
            raise ValueError(
                f"`window_sizes` must be integers in [1, {smaller}] (the image's smaller side), "
                f"got window_sizes={window_sizes!r}."
            )
        if not isinstance(windows_per_side, int) or windows_per_side < 1:
            raise ValueError(
                f"`windows_per_side` must be an integer >= 1, got "
                f"windows_per_side={windows_per_side!r}."
            )
        _check_patch_size(patch_size)
        num_windows = len(window_sizes) * windows_per_side**2
        if not isinstance(top_k, int) or not 1 <= top_k <= num_windows:
            raise ValueError(
                f"`top_k` must be an integer in [1, {num_windows}] (the number of windows), got "
                f"top_k={top_k!r}."
            )
        if len(domain_net.outputs) != 3:
            raise ValueError(
                "`domain_net` must return (logits, part-layer activations, feature maps), got "
                f"{len(domain_net.outputs)} outputs."
            )
        logits, part_maps, features = domain_net.outputs
        filters = part_maps.shape[-1]
        if not isinstance(num_parts, int) or not 1 <= num_parts <= filters:
            raise ValueError(
                f"`num_parts` must be an integer in [1, {filters}] (the part layer's filters), "
                f"got num_parts={num_parts!r}."
            )
        if classifier_activation != "softmax":
            raise ValueError(
                "`classifier_activation` must be 'softmax' (the pipeline adds the two levels' "
                f"class probabilities), got classifier_activation={classifier_activation!r}."
            )
        self.filter_net = filter_net
        self.domain_net = domain_net
        self.image_shape = tuple(image_shape)
        self.window_sizes = tuple(window_sizes)
        self.windows_per_side = windows_per_side
        self.patch_size = patch_size
        self.top_k = top_k
        self.num_parts = num_parts
        self.classifier_activation = classifier_activation
        self.windows = window_grid(image_shape[:2], window_sizes, windows_per_side)
        self.num_classes = logits.shape[-1]
        self._part_grid = tuple(part_maps.shape[1:3])
        self._feature_grid = tuple(features.shape[1:3])
        # one-hot filter -> part assignment, set by `set_part_clusters`; saved with the weights
        self.part_assignment = self.add_weight(
            shape=(filters, num_parts),
            initializer=keras.initializers.Constant(
                np.eye(num_parts, dtype="float32")[np.arange(filters) % num_parts]
            ),
            trainable=False,
            name="part_assignment",
        )
        self.part_classifier = keras.layers.Dense(
            self.num_classes, name="part_classifier", dtype="float32"
        )
        self.part_classifier.build((None, num_parts * features.shape[-1]))
        self.built = True

    # -- part clusters -------------------------------------------------------------------

    def set_part_clusters(self, labels):
        """Assign each part-layer filter to a part: `labels` `(filters,)` ints in
        `[0, num_parts)`."""
        labels = np.asarray(labels)
        filters = self.part_assignment.shape[0]
        if labels.shape != (filters,) or labels.min() < 0 or labels.max() >= self.num_parts:
            raise ValueError(
                f"`labels` must be {filters} integers in [0, {self.num_parts}), got {labels!r}."
            )
        self.part_assignment.assign(np.eye(self.num_parts, dtype="float32")[labels])

    def part_clusters(self):
        """`(filters,)` the part of each part-layer filter."""
        return np.argmax(keras.ops.convert_to_numpy(self.part_assignment), axis=-1)

    # -- the two levels ------------------------------------------------------------------

    def window_patches(self, images):
        """Every candidate window of `images`, resized: `(batch, windows, p, p, C)`."""
        size = (self.patch_size, self.patch_size)
        patches = []
        for top, left, bottom, right in self.windows:
            crop = images[:, top:bottom, left:right, :]
            if crop.shape[1:3] != size:
                crop = ops.image.resize(crop, size, interpolation="bilinear")
            patches.append(crop)
        return ops.stack(patches, axis=1)

    def part_features(self, part_maps, features):
        """Each part's peak on the part layer (the argmax of its filters' summed
        activations) read out of the feature maps: `(batch, num_parts * features)`."""
        scores = ops.einsum(
            "bhwf,fk->bkhw", part_maps, ops.cast(self.part_assignment, part_maps.dtype)
        )
        height, width = self._part_grid
        peak = ops.argmax(ops.reshape(scores, (-1, self.num_parts, height * width)), axis=-1)
        rows, cols = peak // width, peak % width
        feature_height, feature_width = self._feature_grid
        rows = ops.minimum(rows * feature_height // height, feature_height - 1)
        cols = ops.minimum(cols * feature_width // width, feature_width - 1)
        at_peak = ops.one_hot(rows * feature_width + cols, feature_height * feature_width)
        flat = ops.reshape(features, (-1, feature_height * feature_width, features.shape[-1]))
        picked = ops.einsum("bkp,bpc->bkc", ops.cast(at_peak, flat.dtype), flat)
        return ops.reshape(picked, (-1, self.num_parts * features.shape[-1]))

    def levels(self, images):
        """Everything the pipeline computes, for inspection: a dict with
        `window_scores` `(batch, windows)` (the FilterNet's confidence), `kept`
        `(batch, top_k)` (indices into `windows`, best first), `kept_patches`
        `(batch, top_k, p, p, C)`, `object` and `part` `(batch, classes)` (each level's
        mean class probabilities over the kept patches) and `combined` (their sum)."""
        images = ops.convert_to_tensor(images, "float32")
        patches = self.window_patches(images)
        channels = self.image_shape[-1]
        flat = ops.reshape(patches, (-1, self.patch_size, self.patch_size, channels))
        filter_probs = ops.softmax(ops.cast(self.filter_net(flat), "float32"), axis=-1)
        window_scores = ops.reshape(ops.max(filter_probs, axis=-1), (-1, len(self.windows)))
        _, kept = ops.top_k(window_scores, self.top_k)
        batch = ops.shape(window_scores)[0]
        offsets = ops.arange(batch, dtype=kept.dtype)[:, None] * len(self.windows)
        kept_flat = ops.take(flat, ops.reshape(kept + offsets, (-1,)), axis=0)
        logits, part_maps, features = self.domain_net(kept_flat)
        part_logits = self.part_classifier(self.part_features(part_maps, features))

        def mean_probs(scores):
            probs = ops.softmax(ops.cast(scores, "float32"), axis=-1)
            return ops.mean(ops.reshape(probs, (-1, self.top_k, self.num_classes)), axis=1)

        object_scores, part_scores = mean_probs(logits), mean_probs(part_logits)
        return {
            "window_scores": window_scores,
            "kept": kept,
            "kept_patches": ops.reshape(kept_flat, (-1, self.top_k) + tuple(flat.shape[1:])),
            "object": object_scores,
            "part": part_scores,
            "combined": object_scores + part_scores,
        }

    def call(self, images):
        return self.levels(images)["combined"]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)


MNIST_PART_LAYER = "conv2"
MNIST_FEATURE_LAYER = "conv3"


def mnist_domain_net(channels, num_classes, patch_size=None, name="domain_net"):
    """The zoo's MNIST classifier CNN as a DomainNet: outputs (logits, `conv2`, `conv3`)."""
    from zoo.stn_cnn import classifier_cnn_layers  # noqa: PLC0415

    inputs = keras.Input((patch_size, patch_size, channels), name="patch")
    outputs, x = {}, inputs
    for key, layer in classifier_cnn_layers(num_classes).items():
        x = outputs[key] = layer(x)
    return keras.Model(
        inputs, [x, outputs[MNIST_PART_LAYER], outputs[MNIST_FEATURE_LAYER]], name=name
    )


def build_two_level_mnist(
    input_shape=(40, 40, 1), num_classes=10, classifier_activation="softmax", **kwargs
):
    """The two-level pipeline around the zoo's MNIST classifier CNN: FilterNet and DomainNet
    are both `zoo.stn_cnn.build_mnist_cnn`'s CNN (logits), the DomainNet's `conv2` is the
    part layer and `conv3` the feature layer. The FilterNet takes any image size (global
    pooling), so `model.filter_net(images)` is the whole-image baseline. `**kwargs`:
    `TwoLevelAttention`'s arguments."""
    from zoo.stn_cnn import build_mnist_cnn  # noqa: PLC0415

    channels = input_shape[-1]
    patch_size = kwargs.get("patch_size", 28)
    _check_patch_size(patch_size)  # before the DomainNet is built at that size
    filter_net = build_mnist_cnn((None, None, channels), num_classes, classifier_activation=None)
    domain_net = mnist_domain_net(channels, num_classes, patch_size)
    return TwoLevelAttention(
        filter_net,
        domain_net,
        tuple(input_shape),
        classifier_activation=classifier_activation,
        name="two_level_mnist",
        **kwargs,
    )


def two_level_mnist(input_shape, num_classes, **kwargs):
    return build_two_level_mnist(input_shape, num_classes, **kwargs)
