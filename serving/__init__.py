"""serving: SavedModel export, a TF-Serving-compatible gRPC and REST server and a client,
for any Keras model or SavedModel."""


def __getattr__(name):
    # Lazy: `import serving` stays cheap; TensorFlow loads when export or the server is used.
    if name == "export":
        from serving.saved_model import export

        return export
    if name == "Client":
        from serving.client import Client

        return Client
    if name == "ServingError":
        from serving.errors import ServingError

        return ServingError
    if name == "Server":
        from serving.server import Server

        return Server
    raise AttributeError(f"module 'serving' has no attribute {name!r}")


__all__ = ["export", "Server", "Client", "ServingError"]
