"""Dynamic request batching (`--enable_batching` + `--batching_parameters_file`).

Like TF Serving's shared batch scheduler: one queue per servable, signature and input layout,
`num_batch_threads` workers shared by all queues. Concurrent requests join the open batch of
their queue until it holds `max_batch_size` rows or `batch_timeout_micros` have passed since
it opened; the batch runs the model once on the inputs concatenated along dim 0 (padded with
copies of the first row up to the next `allowed_batch_sizes` entry) and the outputs are split
back per request. A request that would need a new batch while `max_enqueued_batches` are
already waiting gets RESOURCE_EXHAUSTED (HTTP 429). Requests whose inputs cannot be
concatenated (other trailing shapes or dtypes) go to another queue, so they run apart;
with `pad_variable_length_inputs` inputs of the same rank are padded to a common shape
(with their first element, like the real server). `enable_large_batch_splitting` splits a
request larger than the batch into `max_execution_batch_size` pieces; without it such a
request is INVALID_ARGUMENT.
"""

import os
import threading
import time
from concurrent.futures import Future

import numpy as np

from attention_zoo_common.checks import is_positive_int
from serving.errors import ServingError, invalid

# BasicBatchScheduler::Options defaults in TF Serving.
DEFAULTS = {
    "max_batch_size": 1000,
    "batch_timeout_micros": 0,
    "max_enqueued_batches": 10,
    "num_batch_threads": os.cpu_count() or 1,
    "thread_pool_name": "batch_threads",
}


class BatchingOptions:
    """Validated scheduler options from a `BatchingParameters` message."""

    def __init__(self, params=None):
        from serving.config_protos import BatchingParameters

        params = params if params is not None else BatchingParameters()

        def value(name):
            return getattr(params, name).value if params.HasField(name) else DEFAULTS[name]

        self.max_batch_size = int(value("max_batch_size"))
        self.batch_timeout_s = int(value("batch_timeout_micros")) / 1e6
        self.max_enqueued_batches = int(value("max_enqueued_batches"))
        self.num_batch_threads = int(value("num_batch_threads"))
        self.thread_pool_name = value("thread_pool_name")
        self.allowed_batch_sizes = [int(s) for s in params.allowed_batch_sizes]
        self.pad_variable_length_inputs = bool(params.pad_variable_length_inputs)
        self.enable_large_batch_splitting = (
            params.enable_large_batch_splitting.value
            if params.HasField("enable_large_batch_splitting")
            else False
        )
        self.max_execution_batch_size = (
            int(params.max_execution_batch_size.value)
            if params.HasField("max_execution_batch_size")
            else self.max_batch_size
        )
        for name in (
            "max_batch_size",
            "max_enqueued_batches",
            "num_batch_threads",
            "max_execution_batch_size",
        ):
            if not is_positive_int(getattr(self, name)):
                raise ValueError(f"{name} must be positive; was {getattr(self, name)}")
        if self.batch_timeout_s < 0:
            raise ValueError("batch_timeout_micros must be non-negative")
        last = 0
        for i, size in enumerate(self.allowed_batch_sizes):
            if i > 0 and size <= last:
                raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
            last = size
        limit = (
            self.max_execution_batch_size
            if self.enable_large_batch_splitting
            else self.max_batch_size
        )
        if self.allowed_batch_sizes and self.allowed_batch_sizes[-1] != limit:
            raise ValueError(
                f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{self.allowed_batch_sizes[-1]}; expected {limit}"
            )
        # the rows one model call may take
        self.execution_size = limit


def read_batching_options(path):
    """BatchingOptions from a text-format `BatchingParameters` file; ValueError if bad."""
    from serving.config_protos import read_batching_parameters

    try:
        return BatchingOptions(read_batching_parameters(path))
    except ValueError as error:
        message = str(error)
        raise ValueError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None


class _Task:
    __slots__ = ("feeds", "size", "future")

    def __init__(self, feeds, size):
        self.feeds, self.size, self.future = feeds, size, Future()


class _Batch:
    __slots__ = ("tasks", "size", "opened")

    def __init__(self):
        self.tasks, self.size, self.opened = [], 0, time.monotonic()


class _Queue:
    def __init__(self, run):
        self.run = run  # callable(feeds) -> outputs
        self.batches = []


class Batcher:
    """The shared scheduler: `run(...)` blocks until the request's batch has run."""

    def __init__(self, options):
        self.options = options
        self._cond = threading.Condition()
        self._queues = {}
        self._stopped = False
        self.batches_run = 0  # model calls made by the workers
        self._threads = [
            threading.Thread(target=self._work, name=f"{options.thread_pool_name}-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    # -- submitting ---------------------------------------------------------------------------
    def run(self, servable, key, signature, feeds, output_names, direct):
        """Outputs of `direct(feeds)` for this request, computed as part of a batch."""
        names = sorted(feeds)
        sizes = set()
        for name in names:
            if np.ndim(feeds[name]) == 0:
                raise invalid("Batching Run() input tensors must have at least one dimension")
            sizes.add(np.shape(feeds[name])[0])
        if len(sizes) != 1:
            raise invalid("Batching Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop()
        if size == 0:
            return direct(feeds)
        opts = self.options
        if size > opts.max_batch_size and not opts.enable_large_batch_splitting:
            raise invalid(
                f"Task size {size} is larger than maximum input batch size {opts.max_batch_size}"
            )
        layout = tuple(
            (
                n,
                feeds[n].dtype.str,
                np.ndim(feeds[n]) if opts.pad_variable_length_inputs else np.shape(feeds[n])[1:],
            )
            for n in names
        )
        queue_key = (id(servable), key, tuple(sorted(output_names or ())), layout)
        chunk = opts.execution_size
        pieces = [{n: feeds[n][i : i + chunk] for n in names} for i in range(0, size, chunk)]
        tasks = [_Task(piece, min(chunk, size - i * chunk)) for i, piece in enumerate(pieces)]
        with self._cond:
            if self._stopped:
                raise ServingError("UNAVAILABLE", "The batch scheduler is stopped")
            queue = self._queues.get(queue_key)
            if queue is None:
                queue = self._queues[queue_key] = _Queue(direct)
            if self._enqueue(queue, tasks):
                # A batch opened (a worker must time it) or one is ready. A request joining an
                # open batch wakes nobody: each wake-up costs a thread switch and the GIL.
                self._cond.notify()
        results = [task.future.result() for task in tasks]
        if len(results) == 1:
            return results[0]
        return {n: np.concatenate([r[n] for r in results]) for n in results[0]}

    def _enqueue(self, queue, tasks):
        """Put all `tasks` in `queue` or none of them (RESOURCE_EXHAUSTED when it is full).

        True when a batch was opened or filled up: a worker then has something new to do."""
        limit = self.options.execution_size
        open_size = queue.batches[-1].size if queue.batches else limit
        new_batches = 0
        for task in tasks:
            if open_size + task.size > limit:
                new_batches += 1
                open_size = 0
            open_size += task.size
        if len(queue.batches) + new_batches > self.options.max_enqueued_batches:
            raise ServingError(
                "RESOURCE_EXHAUSTED",
                "The batch scheduling queue to which this task was submitted is full",
            )
        changed = False
        for task in tasks:
            if not queue.batches or queue.batches[-1].size + task.size > limit:
                queue.batches.append(_Batch())
                changed = True
            batch = queue.batches[-1]
            batch.tasks.append(task)
            batch.size += task.size
            changed = changed or batch.size >= limit
        return changed

    # -- executing ----------------------------------------------------------------------------
    def _next_batch(self):
        """(queue, batch) ready to run, or (None, seconds to wait)."""
        now = time.monotonic()
        best, wait = None, None
        limit, timeout = self.options.execution_size, self.options.batch_timeout_s
        for queue_key, queue in list(self._queues.items()):
            if not queue.batches:
                del self._queues[queue_key]
                continue
            first = queue.batches[0]
            ready_at = (
                now if (len(queue.batches) > 1 or first.size >= limit) else first.opened + timeout
            )
            if ready_at <= now:
                if best is None or first.opened < best[1].opened:
                    best = (queue, first)
            else:
                wait = ready_at - now if wait is None else min(wait, ready_at - now)
        if best is not None:
            best[0].batches.pop(0)
            return best
        return None, wait

    def _work(self):
        while True:
            with self._cond:
                while True:
                    if self._stopped and not self._queues:
                        return
                    queue, batch = self._next_batch()
                    if queue is not None:
                        break
                    self._cond.wait(None if batch is None else batch)
                if any(q.batches for q in self._queues.values()):
                    self._cond.notify()  # more waiting: another worker times or runs it
            self._execute(queue, batch)

    def _execute(self, queue, batch):
        tasks = [t for t in batch.tasks if t.future.set_running_or_notify_cancel()]
        if not tasks:
            return
        try:
            outputs = queue.run(self._merge(tasks))
            self.batches_run += 1
            total = sum(t.size for t in tasks)
            for _name, value in outputs.items():
                if np.ndim(value) == 0:
                    raise ServingError("INTERNAL", "Batched output tensor has 0 dimensions")
                if np.shape(value)[0] < total:
                    raise ServingError(
                        "INTERNAL",
                        "Batched output tensor's 0th dimension does not equal the "
                        "sum of the 0th dimension sizes of the input tensors",
                    )
            start = 0
            for task in tasks:
                task.future.set_result(
                    {n: v[start : start + task.size] for n, v in outputs.items()}
                )
                start += task.size
        except BaseException as error:  # every request of the batch gets the error
            for task in tasks:
                if not task.future.done():
                    task.future.set_exception(error)

    def _merge(self, tasks):
        names = sorted(tasks[0].feeds)
        total = sum(t.size for t in tasks)
        padded = next((s for s in self.options.allowed_batch_sizes if s >= total), total)
        merged = {}
        for name in names:
            parts = [t.feeds[name] for t in tasks]
            if self.options.pad_variable_length_inputs and len({p.shape[1:] for p in parts}) > 1:
                target = np.max([p.shape[1:] for p in parts], axis=0)
                parts = [
                    p
                    if p.shape[1:] == tuple(target)
                    else np.pad(
                        p,
                        [(0, 0)] + [(0, int(t) - d) for t, d in zip(target, p.shape[1:])],
                        mode="constant",
                        constant_values=p.reshape(-1)[0] if p.size else 0,
                    )
                    for p in parts
                ]
            value = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if padded > total:
                value = np.concatenate([value, np.repeat(value[:1], padded - total, axis=0)])
            merged[name] = value
        return merged

    def stop(self):
        """Let the queued batches run, then end the workers."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
