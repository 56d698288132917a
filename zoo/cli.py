"""`keras-attention-zoo` command line: the one place that joins zoo and serving."""

import argparse
import json
import os
import pathlib
import sys


def _demo(args):
    """Train the CBAM CNN, then export it, serve it and query it the way users of TF Serving do."""
    from zoo import demo

    result = demo.run(output_dir=args.output_dir, epochs=args.epochs, seed=args.seed)
    print(
        f"CBAM CNN, {args.epochs} epoch(s) on {result['train_size']} MNIST digits "
        f"({result['backend']} backend, {result['train_seconds']:.1f} s): "
        f"test accuracy {result['accuracy']:.4f} on {result['test_size']} held-out digits"
    )
    print(f"attention map (cbam2 spatial gate over test digits) written to {result['png'].resolve()}")
    if args.no_serve:
        return 0
    return _export_serve_and_query(result["model"], pathlib.Path(args.output_dir) / "models")


def _export_serve_and_query(model, base_path, name="cbam_cnn", count=4):
    """Export `model` as a TF Serving servable, serve it on free loopback ports, query it over
    REST and gRPC with the client, and print what a user needs to do the same by hand."""
    import numpy as np

    import serving
    from serving.models import single_model_config
    from zoo.datasets import mnist_subset

    version_dir = serving.export(model, str(base_path), name, image_signature=True)
    print(f"exported SavedModel to {pathlib.Path(version_dir).resolve()}")
    images, labels = mnist_subset("test")
    batch = images[:count]
    model_path = str(pathlib.Path(base_path, name).resolve())
    server = serving.Server(single_model_config(name, model_path), rest_api_port=0, port=0,
                            host="127.0.0.1")
    with server:
        rest_url, grpc_target = f"http://127.0.0.1:{server.rest_api_port}", f"127.0.0.1:{server.port}"
        with serving.Client(rest=rest_url) as rest, serving.Client(grpc=grpc_target) as grpc:
            by_rest = next(iter(rest.predict(name, batch).values()))
            by_grpc = next(iter(grpc.predict(name, batch).values()))
        print(f"embedded TF-Serving-compatible server: REST {rest_url}, gRPC {grpc_target}")
        print(f"  true labels:         {labels[:count].tolist()}")
        print(f"  REST predictions:    {np.argmax(by_rest, -1).tolist()}")
        print(f"  gRPC predictions:    {np.argmax(by_grpc, -1).tolist()}")
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


def _attention(args):
    from keras_attention.factory import describe_attention

    for name, description in describe_attention().items():
        print(f"{name:22s} {description}")
    return 0


def _serve(args):
    from serving import server

    return server.main(args)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-attention-zoo",
        description="Visual attention layers for Keras 3, an attention model zoo, serving.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train a small CBAM CNN on the offline MNIST subset, write its attention map, "
        "export it, serve it and query it over REST and gRPC"
    )
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output-dir", default="outputs",
                      help="where the PNG and the exported models go (default: outputs)")
    demo.add_argument("--no-serve", action="store_true",
                      help="only train and plot; skip the export / serve / query part")
    demo.set_defaults(handler=_demo)

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
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
