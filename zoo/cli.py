"""`keras-attention-zoo` command line: the one place that joins zoo and serving."""

import argparse
import os
import sys


def _demo(args):
    from zoo import demo

    return demo.main(args)


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
        "demo", help="train a small CBAM CNN on the offline MNIST subset, write its attention map"
    )
    demo.add_argument("--epochs", type=int, default=1)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output-dir", default="outputs", help="where the PNG goes (default: outputs)")
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
