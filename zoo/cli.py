"""`keras-attention-zoo` command line: the one place that joins zoo and serving."""

import argparse
import json
import os
import pathlib
import sys


def _demo(args):
    """The main job: serve the shipped pretrained spatial transformer network the way TF
    Serving users do (export, embedded server, REST and gRPC queries); `--train` instead
    trains the small CBAM CNN and plots its attention map first."""
    if args.train:
        return _train_demo(args)
    import numpy as np

    import zoo
    from zoo.tasks import rts_mnist

    name, tag = "stn_cnn", "rts_mnist"
    model = zoo.load(name, weights=tag)
    entry = zoo.model_info(name).weights_for(tag)
    print(f"loaded the shipped {name} weights {tag!r} (sha256 {entry.sha256[:12]}...): "
          f"{entry.metric}")
    images, labels, _ = rts_mnist("test", seed=0)
    pixels = np.round(images[:args.count] * 255.0).astype("uint8")
    return _export_serve_and_query(model, pathlib.Path(args.output_dir) / "models", name,
                                   pixels, labels[:args.count])


def _train_demo(args):
    from zoo import demo
    from zoo.datasets import mnist_subset

    result = demo.run(output_dir=args.output_dir, epochs=args.epochs, seed=args.seed)
    print(
        f"CBAM CNN, {args.epochs} epoch(s) on {result['train_size']} MNIST digits "
        f"({result['backend']} backend, {result['train_seconds']:.1f} s): "
        f"test accuracy {result['accuracy']:.4f} on {result['test_size']} held-out digits"
    )
    print(f"attention map (cbam2 spatial gate over test digits) written to {result['png'].resolve()}")
    if args.no_serve:
        return 0
    import numpy as np

    images, labels = mnist_subset("test")
    pixels = np.round(images[:args.count] * 255.0).astype("uint8")
    return _export_serve_and_query(result["model"], pathlib.Path(args.output_dir) / "models",
                                   "cbam_cnn", pixels, labels[:args.count])


def _png_bytes(image):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _export_serve_and_query(model, base_path, name, pixels, labels):
    """Export `model` as a TF Serving servable, serve it on free loopback ports, query it over
    REST and gRPC with the client (tensors on `serving_default`, PNG files on the image
    signature), and print what a user needs to do the same by hand. `pixels`: uint8 images."""
    import numpy as np

    import serving
    from serving.models import single_model_config

    batch = pixels.astype("float32") / 255.0
    # one warmup record: TF Serving (and the embedded server) replay it before serving
    version_dir = serving.export(model, str(base_path), name, image_signature=True,
                                 warmup_requests=[batch[:1]])
    print(f"exported SavedModel to {pathlib.Path(version_dir).resolve()} (with a warmup record)")
    model_path = str(pathlib.Path(base_path, name).resolve())
    pngs = np.array([_png_bytes(image) for image in pixels], dtype=object)
    server = serving.Server(single_model_config(name, model_path), rest_api_port=0, port=0,
                            host="127.0.0.1")
    with server:
        rest_url, grpc_target = f"http://127.0.0.1:{server.rest_api_port}", f"127.0.0.1:{server.port}"
        with serving.Client(rest=rest_url) as rest, serving.Client(grpc=grpc_target) as grpc:
            by_rest = next(iter(rest.predict(name, batch).values()))
            by_grpc = next(iter(grpc.predict(name, batch).values()))
            by_png = rest.predict(name, pngs, signature_name="serving_images")
        print(f"embedded TF-Serving-compatible server: REST {rest_url}, gRPC {grpc_target}")
        print(f"  true labels:         {labels.tolist()}")
        print(f"  REST predictions:    {np.argmax(by_rest, -1).tolist()}")
        print(f"  gRPC predictions:    {np.argmax(by_grpc, -1).tolist()}")
        print(f"  PNG (REST, image signature) top-1: {by_png['classes'][:, 0].tolist()}")
        correct = int((np.argmax(by_grpc, -1) == labels).sum())
        print(f"  {correct} of {len(labels)} right")
        if not np.allclose(by_rest, by_grpc, atol=1e-6):
            print("REST and gRPC answers differ", file=sys.stderr)
            return 1
    request = pathlib.Path(base_path, f"{name}_request.json")
    request.write_text(json.dumps({"instances": batch[:1].tolist()}))
    print("serve it yourself:")
    print(f"  keras-attention-zoo serve --model_name {name} --model_base_path {model_path}")
    print(f"  curl -d @{request.resolve()} localhost:8501/v1/models/{name}:predict")
    print("or with the real TF Serving (serving/deploy/ has docker-compose and Kubernetes files):")
    print(f"  docker run -p 8500:8500 -p 8501:8501 -v {model_path}:/models/{name} "
          f"-e MODEL_NAME={name} tensorflow/serving")
    return 0


def _list(args):
    import zoo
    from zoo import registry

    specs = registry.all_specs()
    names = zoo.list_models(pretrained=True if args.pretrained else None)
    print(f"{'model':22s} {'family':20s} {'timm':18s} weights")
    for name in names:
        spec = specs[name]
        tags = ", ".join(entry.tag for entry in spec.weights) or "-"
        print(f"{name:22s} {spec.family:20s} {spec.timm_name or '-':18s} {tags}")
    return 0


def _info(args):
    import zoo

    spec = zoo.model_info(args.name)
    print(f"{spec.name}: {spec.description}")
    print(f"  family {spec.family}; input {spec.default_input_shape}; classes {spec.num_classes}; "
          f"timm counterpart: {spec.timm_name or 'none'}")
    if spec.dynamic_size is not True:
        print(f"  fixed input size: {spec.dynamic_size}")
    for entry in spec.weights:
        print(f"  weights {entry.tag!r}: {entry.source or entry.url}")
        digests = "; ".join(f"{algorithm} {value}" for algorithm, value in
                            (("sha256", entry.sha256), ("sha1", entry.sha1)) if value)
        print(f"    url {entry.url}; {digests or 'sha256 not recorded'}; "
              f"input {entry.input_size}")
        if entry.architecture:
            print("    architecture: " + ", ".join(
                f"{key}={value!r}" for key, value in entry.architecture.items()))
        print(f"    trained on: {entry.trained_on}")
        print(f"    metric: {entry.metric}")
    if not spec.weights:
        print("  no pretrained weights")
    return 0


def _print_top(paths, scores, num_classes, top):
    import numpy as np

    if num_classes == 1000:
        from zoo import decode_predictions

        for path, row in zip(paths, decode_predictions(scores, top=top)):
            print(f"{path}: " + ", ".join(f"{label} ({synset}) {score:.3f}"
                                          for synset, label, score in row))
        return
    for path, row in zip(paths, scores):
        best = np.argsort(-row)[:top]
        print(f"{path}: " + ", ".join(f"class {i} {row[i]:.3f}" for i in best))


def _predict(args):
    import zoo

    model = zoo.load(args.name, weights=args.weights)
    # resize, crop and normalise as timm evaluates the weights
    scores = model.predict(model.preprocessing.load(args.images), verbose=0)
    _print_top(args.images, scores, scores.shape[-1], args.top)
    return 0


def _export(args):
    import serving
    import zoo

    model = zoo.load(args.name, weights=args.weights)
    # the image signature decodes with the model's own preprocessing (timm's eval transform)
    version_dir = serving.export(
        model, args.base_path, args.serving_name or args.name, version=args.version,
        image_signature={"decode": model.preprocessing.decode_tf},
    )
    print(f"exported {args.name} ({args.weights or 'random weights'}) to "
          f"{pathlib.Path(version_dir).resolve()}")
    return 0


def _query(args):
    import numpy as np

    import serving

    if bool(args.rest) == bool(args.grpc):
        raise SystemExit("query: give exactly one of --rest URL or --grpc HOST:PORT")
    payload = [pathlib.Path(path).read_bytes() for path in args.images]
    with serving.Client(rest=args.rest, grpc=args.grpc, timeout=args.timeout) as client:
        outputs = client.predict(args.model_name, np.array(payload, dtype=object),
                                 signature_name=args.signature_name)
    if "probabilities" in outputs:
        _print_top(args.images, outputs["probabilities"], outputs["probabilities"].shape[-1],
                   args.top)
    else:
        for key, value in outputs.items():
            print(f"{key}: {np.asarray(value).tolist()}")
    return 0


def _attention(args):
    from keras_attention.factory import describe_attention

    for name, description in describe_attention().items():
        print(f"{name:22s} {description}")
    return 0


def _serve(args):
    from serving import server

    return server.main(args)


def _train(args):
    import zoo.train

    if args.train_epochs is not None and args.train_epochs < 1:
        raise SystemExit("train: --epochs must be at least 1")
    run_dir = pathlib.Path(args.run_dir or pathlib.Path("runs") / args.name)
    print(f"training {args.name} on {args.data}; run folder {run_dir.resolve()}")
    try:
        model, history = zoo.train.fit(
            args.name, args.data, epochs=args.train_epochs, batch_size=args.batch_size,
            mixed_precision=args.mixed_precision, jit_compile=args.jit_compile,
            run_dir=str(run_dir), checkpoint_every=args.checkpoint_every, seed=args.seed,
            image_size=args.image_size, steps_per_epoch=args.steps_per_epoch)
    except zoo.train.NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    run, logs = history.run, history.history
    metrics = ", ".join(f"{key} {values[-1]:.4f}" for key, values in logs.items()
                        if "accuracy" in key or key.endswith("loss"))
    print(f"done: {run['steps']} steps in {run['seconds']:.1f} s "
          f"({run['examples_per_second']:.1f} img/s overall, including compilation and "
          f"validation; batch {run['batch_size']}, "
          f"{run['mixed_precision']} precision"
          + (f", resumed at step {run['resumed_from_step']}" if run["resumed_from_step"] else "")
          + f"); final {metrics}")
    print(f"model: {pathlib.Path(run['model_path']).resolve()}")
    print(f"checkpoints (BackupAndRestore, every {args.checkpoint_every or 'epoch'} "
          f"{'steps' if args.checkpoint_every else ''}): {(run_dir / 'backup').resolve()} "
          "(removed after a finished run; rerun the same command to resume an interrupted one)")
    print(f"TensorBoard logs (scalars, attention maps): {pathlib.Path(run['log_dir']).resolve()}")
    print(f"  tensorboard --logdir {run_dir.resolve()}")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-attention-zoo",
        description="Visual attention layers for Keras 3, an attention model zoo, serving.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="export the shipped pretrained spatial transformer network, serve it with "
        "the embedded TF-Serving-compatible server and query it over REST and gRPC; with "
        "--train, train a small CBAM CNN and plot its attention map first"
    )
    demo.add_argument("--train", action="store_true",
                      help="train the CBAM CNN demo instead of serving the pretrained model")
    demo.add_argument("--count", type=int, default=8, help="test digits to query (default: 8)")
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output-dir", default="outputs",
                      help="where the PNG and the exported models go (default: outputs)")
    demo.add_argument("--no-serve", action="store_true",
                      help="with --train: only train and plot; skip the export / serve / query part")
    demo.set_defaults(handler=_demo)

    listing = commands.add_parser("list", help="list the zoo's models and their weights")
    listing.add_argument("--pretrained", action="store_true", help="only models with weights")
    listing.set_defaults(handler=_list)

    info = commands.add_parser("info", help="a model's registry entry: weights, sources, metrics")
    info.add_argument("name")
    info.set_defaults(handler=_info)

    predict = commands.add_parser("predict", help="classify image files with a zoo model")
    predict.add_argument("name")
    predict.add_argument("images", nargs="+", help="JPEG / PNG files")
    predict.add_argument("--weights", default=None, help="a weights tag or file")
    predict.add_argument("--top", type=int, default=5)
    predict.set_defaults(handler=_predict)

    export = commands.add_parser(
        "export", help="export a zoo model as a TF Serving SavedModel (serving_default and an "
        "encoded-image signature with the model's preprocessing)")
    export.add_argument("name")
    export.add_argument("--weights", default=None, help="a weights tag or file")
    export.add_argument("--base-path", default="models",
                        help="TF Serving's model base path minus the model name (default: models)")
    export.add_argument("--serving-name", default=None, help="the served name (default: NAME)")
    export.add_argument("--version", type=int, default=None,
                        help="version number (default: the next free one)")
    export.set_defaults(handler=_export)

    query = commands.add_parser(
        "query", help="send image files to a TF Serving endpoint (this project's server or the real one)")
    query.add_argument("model_name")
    query.add_argument("images", nargs="+", help="JPEG / PNG files")
    query.add_argument("--rest", default=None, help="e.g. http://localhost:8501")
    query.add_argument("--grpc", default=None, help="e.g. localhost:8500")
    query.add_argument("--signature-name", default="serving_images")
    query.add_argument("--timeout", type=float, default=30.0)
    query.add_argument("--top", type=int, default=5)
    query.set_defaults(handler=_query)

    train = commands.add_parser(
        "train", help="train a zoo model with its recipe (progress bar, TensorBoard logs with "
        "attention maps, resumable checkpoints)")
    train.add_argument("name")
    train.add_argument("--data", default="mnist",
                       help="mnist, translated_mnist, cluttered_mnist, rts_mnist, or a folder "
                       "with one subfolder of images per class (default: mnist)")
    train.add_argument("--epochs", dest="train_epochs", type=int, default=None,
                       help="default: the recipe's")
    train.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    train.add_argument("--image-size", type=int, default=None, help="resize images to this side")
    train.add_argument("--mixed-precision", choices=("off", "bfloat16", "float16"), default="off")
    train.add_argument("--jit-compile", action="store_const", const=True, default="auto",
                       help="compile the step with XLA (default: Keras' auto)")
    train.add_argument("--run-dir", default=None, help="default: runs/NAME")
    train.add_argument("--checkpoint-every", type=int, default=None,
                       help="back up every N steps (default: every epoch)")
    train.add_argument("--steps-per-epoch", type=int, default=None,
                       help="default: every full batch of the training split")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=_train)

    attention = commands.add_parser("attention", help="list the names create_attention accepts")
    attention.set_defaults(handler=_attention)

    from serving.server import add_flags

    serve = commands.add_parser(
        "serve", help="serve SavedModels over TF Serving's gRPC and REST APIs (tensorflow_model_server flags)"
    )
    add_flags(serve)
    serve.set_defaults(handler=_serve)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    if getattr(args, "epochs", 1) < 1:
        build_parser().error("--epochs must be at least 1")
    if getattr(args, "count", 1) < 1:
        build_parser().error("--count must be at least 1")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
