"""Device mesh, logical-axis rules and global batches: parallelism as configuration.

Why: the model only names its axes (`vocab`, `embed`, `heads`, ... and
`activation_*`); which mesh axis shards what is the config's
`logical_axis_rules`. The same code then runs data-parallel on 1 CPU, FSDP on
a TPU slice or tensor-parallel on a GPU node by changing `config.mesh_shape`.
Train state is created already sharded (eval_shape -> specs ->
jit(init, out_shardings)), so full parameters never land on one host.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from bert_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
# Mesh axes the batch dimension is split over.
BATCH_AXES = ("data", "fsdp")

Rules = Sequence[tuple[str, Any]]


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 by the remaining devices and checks the product."""
  shape = [int(s) for s in mesh_shape]
  if len(shape) != len(MESH_AXES):
    raise UserError(f"config.mesh_shape={tuple(mesh_shape)} must have {len(MESH_AXES)} entries "
                    f"{MESH_AXES}")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise UserError(f"config.mesh_shape={tuple(mesh_shape)}: entries must be positive, with at "
                    "most one -1")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise UserError(f"config.mesh_shape={tuple(mesh_shape)} does not divide {num_devices} "
                      "devices")
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise UserError(f"config.mesh_shape={tuple(shape)} needs {int(np.prod(shape))} devices, "
                    f"found {num_devices}")
  return tuple(shape)


def make_mesh(mesh_shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over all devices (physical topology aware where possible)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(mesh_shape, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):
    # CPU / multi-process CPU: process-major device order keeps each host's rows contiguous.
    grid = np.array(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def normalize_rules(rules: Iterable[Sequence[Any]]) -> tuple[tuple[str, Any], ...]:
  """Config rules (tuples/lists, possibly from the command line) -> flax's format, checked."""
  out = []
  for rule in rules:
    if len(rule) != 2:
      raise UserError(f"config.logical_axis_rules entry {rule!r} is not a (logical, mesh) pair")
    name, target = rule
    targets = target if isinstance(target, (tuple, list)) else (target,)
    for t in targets:
      if t is not None and t not in MESH_AXES:
        raise UserError(f"config.logical_axis_rules maps {name!r} to unknown mesh axis {t!r}; "
                        f"expected one of {MESH_AXES} or None")
    out.append((str(name), tuple(target) if isinstance(target, (tuple, list)) else target))
  return tuple(out)


def logical_to_sharding(boxed_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """Shardings for a tree of boxed (nn.LogicallyPartitioned) leaves; others replicated."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, normalize_rules(rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over (data, fsdp); the other dims replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def num_batch_shards(mesh: Mesh) -> int:
  return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def check_batch_split(global_batch_size: int, shards: int, grad_accum_steps: int = 1,
                      name: str = "config.batch_size") -> None:
  """Each micro-batch must split evenly over `shards` batch shards (without a mesh: the
  packed fine-tuning stream checks this while it plans, before the run builds its mesh)."""
  need = shards * grad_accum_steps
  if global_batch_size % need:
    raise UserError(f"{name}={global_batch_size} must be divisible by data*fsdp={shards} "
                    f"devices x grad_accum_steps={grad_accum_steps} (= {need})")


def check_batch_size(global_batch_size: int, mesh: Mesh, grad_accum_steps: int = 1,
                     name: str = "config.batch_size") -> None:
  """Each micro-batch must split evenly over the batch shards and the processes."""
  check_batch_split(global_batch_size, num_batch_shards(mesh), grad_accum_steps, name)
  if global_batch_size % jax.process_count():
    raise UserError(f"{name}={global_batch_size} must be divisible by the "
                    f"{jax.process_count()} processes")


@functools.lru_cache(maxsize=16)
def process_rows(mesh: Mesh, num_rows: int) -> tuple[int, ...]:
  """Global batch rows held by this process's devices (ascending).

  `make_array_from_process_local_data` fills them, in this order, from the
  process's local rows.
  """
  index_map = batch_sharding(mesh).addressable_devices_indices_map((num_rows,))
  rows = set()
  for index in index_map.values():
    rows.update(range(*index[0].indices(num_rows)))
  return tuple(sorted(rows))


def make_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy rows -> global jax.Arrays sharded on the batch axes.

  Each process passes its own `global_batch_size // process_count` rows; the
  global array is their concatenation in process order (the input pipeline
  reads block `process_index` of each global batch) when each process's
  devices hold that block, as on CPU and GPU meshes (process-major device
  order). A topology-ordered TPU mesh may place a block elsewhere: every step
  then still sees the same examples, in another row order (warned once).
  """
  sharding = batch_sharding(mesh)
  num_local = len(next(iter(local_batch.values())))
  _check_process_rows(mesh, num_local * jax.process_count())
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


@functools.lru_cache(maxsize=16)
def _check_process_rows(mesh: Mesh, num_rows: int) -> None:
  start = jax.process_index() * num_rows // jax.process_count()
  block = tuple(range(start, start + num_rows // jax.process_count()))
  if process_rows(mesh, num_rows) != block:
    logging.warning("the mesh places process %d's rows outside block %d of the global batch: "
                    "steps see the same examples, in another row order", jax.process_index(),
                    jax.process_index())
