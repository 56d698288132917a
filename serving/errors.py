"""Canonical status codes (as TF Serving reports them) and their HTTP mapping."""

HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "UNIMPLEMENTED": 501,
    "DEADLINE_EXCEEDED": 504,
    "UNAVAILABLE": 503,
    "RESOURCE_EXHAUSTED": 429,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
}

# tensorflow.errors error_code integers -> canonical names.
CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
CODE_NUMBERS = {name: number for number, name in CODE_NAMES.items()}


class ServingError(Exception):
    """An error with a canonical code (`"INVALID_ARGUMENT"`, `"NOT_FOUND"`, ...) and a message."""

    def __init__(self, code, message, http_status=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self):
        """The HTTP status a REST server answered with, else the one TF Serving maps the code to."""
        return self._http_status or HTTP_STATUS.get(self.code, 500)

    def __str__(self):
        return f"{self.code}: {self.message}"


def invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


def from_tf_error(error):
    """A ServingError from a `tf.errors.OpError` raised by the runtime."""
    return ServingError(
        CODE_NAMES.get(getattr(error, "error_code", 2), "UNKNOWN"),
        getattr(error, "message", str(error)),
    )
