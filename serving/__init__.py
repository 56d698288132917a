"""serving: SavedModel export and a TF-Serving-compatible REST server for any Keras model or SavedModel."""


def __getattr__(name):
    # Lazy: `import serving` stays cheap; TensorFlow loads when export or the server is used.
    if name == "export":
        from serving.export import export

        return export
    if name == "Server":
        from serving.server import Server

        return Server
    raise AttributeError(f"module 'serving' has no attribute {name!r}")


__all__ = ["export", "Server"]
