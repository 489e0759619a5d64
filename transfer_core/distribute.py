"""Where a run trains: one device, every local GPU, or several machines, as the tf.distribute
strategy that its `distribute` setting and the machine choose (README, "Scaling out").

The batch rule: a run's `batch_size` is the *global* batch, the photos of one optimizer step
whatever the devices, split evenly between the replicas; the learning rate is the configured
one. So a config trains the same model on one CPU, two GPUs or four machines (tests/
test_distribute.py checks the weights), and the chapter's settings (batch 20, RMSprop 2e-5)
keep their meaning. More replicas then means smaller per-replica batches, not more photos per
step: to use them fully raise --batch-size, and with it the learning rate in proportion (the
linear scaling rule, Goyal et al. 2017, arXiv:1706.02677), which a user then chooses and the
config records.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .errors import RunError

SETTINGS = ("auto", "none", "mirrored", "multi-worker")
# Splits the CPU into this many logical devices for "mirrored": how the tests (and a user
# without GPUs) see two replicas on one machine. Read before TensorFlow starts its runtime.
CPU_DEVICES_VARIABLE = "TRANSFER_LAB_CPU_DEVICES"
_TF_CONFIG_HELP = ('e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                   '"task": {"type": "worker", "index": 0}}')


class DistributeError(RunError):
    """A --distribute setting that this machine or its TF_CONFIG cannot give."""


@dataclass(frozen=True)
class Cluster:
    """TF_CONFIG's cluster, as far as this process needs it: the workers and which one it is.
    The chief is the "chief" task when the cluster names one, else worker 0 (TensorFlow's
    convention), and only the chief writes the run folder."""

    workers: tuple[str, ...]  # host:port of every task, the chief first
    index: int  # this process's place in `workers`

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def cluster_from_environment(environ=None) -> Cluster | None:
    """The cluster TF_CONFIG describes, None when it is unset or empty; DistributeError (one
    line, naming what is wrong) when it cannot be used."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _bad_config(f"it is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cluster"), dict):
        raise _bad_config('it has no "cluster" object')
    jobs = {name: data["cluster"].get(name) or [] for name in ("chief", "worker")}
    for name, addresses in jobs.items():
        if not isinstance(addresses, list) or not all(_is_address(a) for a in addresses):
            raise _bad_config(f'cluster "{name}" must be a list of "host:port" strings '
                              f"(got {addresses!r})")
    if len(jobs["chief"]) > 1:
        raise _bad_config(f'a cluster has at most one "chief" (got {len(jobs["chief"])})')
    if not jobs["chief"] + jobs["worker"]:
        raise _bad_config('cluster "worker" names no worker')
    task = data.get("task")
    kind, index = (task.get("type"), task.get("index")) if isinstance(task, dict) else (None, None)
    if kind not in jobs or not jobs[kind] or isinstance(index, bool) \
            or not isinstance(index, int) or not 0 <= index < len(jobs[kind]):
        raise _bad_config(f'"task" must name this process in the cluster, as {{"type": '
                          f'"worker", "index": 0 to {len(jobs["worker"]) - 1}}} (got {task!r})')
    workers = tuple(jobs["chief"] + jobs["worker"])
    return Cluster(workers, index + (len(jobs["chief"]) if kind == "worker" else 0))


def _is_address(value) -> bool:
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    return bool(host) and port.isdigit()


def _bad_config(why: str) -> DistributeError:
    return DistributeError(f"TF_CONFIG cannot be used: {why}. Set it on each machine to the "
                           f"cluster and this machine's place in it, {_TF_CONFIG_HELP}, or "
                           "unset it to train on this machine alone.")


def resolve(setting: str, cluster: Cluster | None, gpus: int, cpu_devices: int = 1) -> str:
    """What `setting` means here: "none", "mirrored" or "multi-worker". `auto` takes every
    machine TF_CONFIG names when it names more than one, else every local GPU when there are
    several, else one device. No TensorFlow needed: the CLI checks before making a run."""
    if setting not in SETTINGS:
        raise DistributeError(f"distribute must be one of {', '.join(SETTINGS)} "
                              f"(got {setting!r}).")
    if setting == "auto":
        if cluster is not None and len(cluster.workers) > 1:
            return "multi-worker"
        return "mirrored" if gpus > 1 else "none"
    if setting == "multi-worker" and cluster is None:
        raise DistributeError("--distribute multi-worker needs TF_CONFIG: set it on each "
                              f"machine to the cluster and this machine's place in it, "
                              f"{_TF_CONFIG_HELP} (README, \"Scaling out\").")
    if setting == "mirrored" and max(gpus, cpu_devices) < 2:
        raise DistributeError(
            f"--distribute mirrored needs at least two devices, and this machine has "
            f"{gpus or 'no'} GPU{'' if gpus == 1 else 's'}: use --distribute none or auto "
            f"(or {CPU_DEVICES_VARIABLE}=2 to split the CPU in two, for testing).")
    return setting


def requested_cpu_devices(environ=None) -> int:
    text = (os.environ if environ is None else environ).get(CPU_DEVICES_VARIABLE, "").strip()
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise DistributeError(f"{CPU_DEVICES_VARIABLE} must be a whole number from 1 to 64 "
                              f"(got {text!r}).")
    return int(text)


def writes_run_files(setting: str, environ=None) -> bool:
    """False for a worker of a multi-worker run other than the chief: it trains with the others
    but writes its run files to a scratch folder (Keras' multi-worker pattern)."""
    cluster = cluster_from_environment(environ)
    return setting not in ("auto", "multi-worker") or cluster is None or cluster.is_chief


def check(setting: str) -> None:
    """Raise the DistributeError that training would meet, before a run folder is made."""
    resolve(setting, cluster_from_environment(), _gpu_count(), requested_cpu_devices())


@dataclass
class Placement:
    """The chosen strategy and what the run's status says of it."""

    kind: str  # "none", "mirrored" or "multi-worker"
    asked: str
    strategy: object  # a tf.distribute.Strategy
    devices: list[str] = field(default_factory=list)
    cluster: Cluster | None = None

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    def scope(self):
        return self.strategy.scope()

    def describe(self, batch_size: int) -> dict:
        """The status's `distribute` record: where the run trains and the batch rule."""
        record = {"strategy": self.kind, "asked": self.asked, "replicas": self.replicas,
                  "devices": self.devices, "global_batch": batch_size,
                  "per_replica_batch": batch_size / self.replicas,
                  "learning_rate": "as configured: the batch is global"}
        if self.cluster is not None:
            record.update(workers=list(self.cluster.workers), worker=self.cluster.index)
        return record


def place(setting: str, environ=None) -> Placement:
    """The strategy for `setting` on this machine. Called before anything else starts
    TensorFlow's runtime: splitting the CPU and joining a cluster must come first."""
    import tensorflow as tf

    cluster = cluster_from_environment(environ)
    cpu_devices = requested_cpu_devices(environ)
    kind = resolve(setting, cluster, _gpu_count(), cpu_devices)
    if kind == "none":
        strategy = tf.distribute.get_strategy()  # the default: one device, no overhead
        return Placement(kind, setting, strategy, [_one_device()])
    if kind == "multi-worker":
        strategy = _multi_worker_strategy()
        devices = list(strategy.extended.worker_devices)
        return Placement(kind, setting, strategy, devices, cluster)
    devices = _mirrored_devices(cpu_devices)
    return Placement(kind, setting, tf.distribute.MirroredStrategy(devices), devices)


def training_input(placement: Placement, data, class_weight: dict | None, epochs: int,
                   steps: int) -> dict:
    """fit()'s `x`, `class_weight` and `steps_per_epoch` on this placement, for `epochs` epochs
    of `steps` batches. Several workers: a distributed dataset of every epoch in which each
    replica takes its share of every global batch, in order, so that a step trains on the
    photos one device's step would (TensorFlow's own sharding would give each worker whole
    batches: a global batch of batch_size × workers). `data`: a tf.data dataset of one epoch's
    global batches, or a keras PyDataset of them."""
    if placement.kind != "multi-worker":
        return {"x": data, "class_weight": class_weight}
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        dataset = data.repeat(epochs)
    else:
        dataset = _dataset_of(data, epochs)
    if class_weight is not None:  # Keras cannot weigh a distributed dataset: weigh it first
        weights = tf.constant([class_weight[c] for c in sorted(class_weight)], tf.float32)
        dataset = dataset.map(lambda x, y: (x, y, tf.gather(weights, tf.cast(y, tf.int32))))

    def replica_batches(context):
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first = context.input_pipeline_id * local  # this worker's first replica

        def shares(*batch):
            rows = -(-tf.shape(batch[0], tf.int64)[0] // context.num_replicas_in_sync)  # ceil
            return tf.data.Dataset.range(first, first + local).map(
                lambda r: tuple(t[r * rows:(r + 1) * rows] for t in batch))

        return dataset.flat_map(shares)

    return {"x": placement.strategy.distribute_datasets_from_function(replica_batches),
            "class_weight": None, "steps_per_epoch": steps}


def _dataset_of(py_dataset, epochs: int):
    """A keras PyDataset as tf.data: `epochs` epochs of its batches, with on_epoch_end called
    as fit() calls it: once before the first epoch too (Keras 3.15 resets its iterator after
    building the model), then after each. Each pass works on a copy: fit() opens a first
    iterator only to build the model, and what that one reads ahead must not move the epochs
    of the next."""
    import copy

    import tensorflow as tf

    x, y = py_dataset[0]
    signature = (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
                 tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)))

    def batches():
        own = copy.copy(py_dataset)
        own.on_epoch_end()
        for _ in range(epochs):
            for index in range(len(own)):
                yield own[index]
            own.on_epoch_end()

    return tf.data.Dataset.from_generator(batches, output_signature=signature)


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy, with the two reductions Keras 3 asks of it and it cannot
    do (keras-team/keras#20585): a whole batch (a tuple) when fit() first builds the model,
    and one scalar per replica along axis 0 for the logged metrics."""
    import tensorflow as tf

    class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis=None):
            if isinstance(value, (tuple, list, dict)):
                return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
            one = value.values[0] if isinstance(value, tf.distribute.DistributedValues) else value
            if axis is not None and len(one.shape) == 0:
                axis = None  # a scalar per replica: reduce across the replicas
            return super().reduce(reduce_op, value, axis)

    return KerasMultiWorkerStrategy()


def check_batch(placement: Placement, batch_size: int) -> None:
    if batch_size < placement.replicas:
        raise DistributeError(
            f"batch_size ({batch_size}) is the global batch, split between the "
            f"{placement.replicas} replicas: it must be at least {placement.replicas}.")


def _gpu_count() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def _one_device() -> str:
    import tensorflow as tf

    return "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"


def _mirrored_devices(cpu_devices: int) -> list[str]:
    """Every local GPU, else the CPU split into `cpu_devices` logical devices."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return [f"/gpu:{i}" for i in range(len(gpus))]
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    except RuntimeError:  # the runtime already started: keep its split if it is the one asked
        if len(tf.config.list_logical_devices("CPU")) != cpu_devices:
            raise DistributeError(f"{CPU_DEVICES_VARIABLE} must be set before TensorFlow "
                                  "starts: set it in the environment of the process.") from None
    return [f"/cpu:{i}" for i in range(cpu_devices)]
