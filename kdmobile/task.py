"""One seam for tasks: a ``Task`` plug-in carries everything kdmobile knows about one task.

    python -c "from kdmobile.task import task_names; print(task_names())"      # ['email', 'mnist', ...]
    kdmobile bench build/export --task email --data heldout -o build/report     # looks the task up here

A task is what turns a bare model into something kdmobile can judge: how to build its model from a
checkpoint, what real inputs look like (export validation and int8 calibration), what the evaluation set and
its metrics are, which teacher is the server-side reference, and which extra files a bundle ships (a
tokenizer, a label list). The generic layers (``kdmobile/export``, ``kdmobile/harness``, ``kdmobile/distill``)
reach tasks only through this module, never by importing an example task (a test keeps it so).

Writing a task (every method is optional; a missing one raises ``UsageError`` naming the task and what
it lacks)::

    from kdmobile.task import Task, register_task

    @register_task
    class MyTask(Task):
        name = "my-task"
        architectures = {"my-net": "my_package.models:MyNet"}   # checkpoint architecture -> class

        def model_spec(self, model, meta, *, n_heldout, n_random, n_calibration, seed): ...  # export
        def eval_set(self, data, student_meta): ...                                           # bench
        def load_teacher(self, path, eval_set, threads): ...                                  # bench
        def distill_setup(self, args, seed): ...                                              # distill

Where tasks come from (looked up lazily, on the first name that is asked for):

1. the example tasks, one folder each: ``kdmobile/tasks/<name>/plugin.py`` registers itself with
   ``@register_task`` when the folder is imported;
2. other packages, through the entry-point group ``kdmobile.tasks`` (``[project.entry-points."kdmobile.tasks"]
   my-task = "my_package.kdmobile_task:MyTask"`` in their ``pyproject.toml``);
3. a ``"package.module:Class"`` string, wherever a task name is taken (CLI ``--task``, a config's ``task``, a
   checkpoint's ``task``).

Checkpoint architectures resolve the same way: ``"package.module:Class"`` is imported directly; a bare name
is looked up in the ``architectures`` of every registered task.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from kdmobile.errors import UsageError
from kdmobile.registry import Registry

if TYPE_CHECKING:  # annotations only: importing these here would make the seam heavy
    from torch import nn

    from kdmobile.distill.tasks import Task as DistillSetup
    from kdmobile.export.base import ModelSpec
    from kdmobile.harness.tasks import EvalSet, TeacherModel

ENTRY_POINT_GROUP = "kdmobile.tasks"
EXAMPLES_PACKAGE = "kdmobile.tasks"


class Task:
    """Base class of a task plug-in. Subclasses set ``name`` and implement what they support."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    # Checkpoint ``architecture`` names this task can rebuild → ``"module:Class"`` (imported on use).
    architectures: ClassVar[dict[str, str]] = {}

    def _missing(self, what: str) -> UsageError:
        return UsageError(f"task {self.name!r} does not provide {what}")

    # -- distill -------------------------------------------------------------------------------------
    def distill_setup(self, args: dict[str, Any], seed: int) -> DistillSetup:
        """Student, teacher and data for ``kdmobile distill`` from the config's ``task_args``."""
        raise self._missing("a distillation set-up (distill_setup)")

    # -- export --------------------------------------------------------------------------------------
    def model_spec(
        self,
        model: nn.Module,
        meta: dict[str, Any],
        *,
        n_heldout: int,
        n_random: int,
        n_calibration: int,
        seed: int,
    ) -> ModelSpec:
        """Input/output specs, real calibration samples and validation splits for exporting ``model``."""
        raise self._missing("export specs (model_spec)")

    def bundle_files(self, spec: ModelSpec, meta: dict[str, Any], checkpoint: Path | None) -> dict[str, Any]:
        """Extra files of a hand-off bundle: ``{file name: str | bytes | Path}`` (e.g. a tokenizer)."""
        return {}

    def bundle_notes(self, spec: ModelSpec) -> str:
        """A Markdown paragraph for the bundle README: what the input and output mean."""
        return ""

    def labels(self, spec: ModelSpec, meta: dict[str, Any]) -> list[str]:
        """Class names in output order, if the task has them."""
        return list(meta.get("labels") or meta.get("intents") or [])

    # -- bench ---------------------------------------------------------------------------------------
    def eval_set(self, data: str, student_meta: dict[str, Any]) -> EvalSet:
        """The evaluation set ``data`` (e.g. ``heldout``) tokenised for the student of ``student_meta``."""
        raise self._missing("an evaluation set (eval_set)")

    def find_teacher(self, student_meta: dict[str, Any], checkpoint: str | None) -> str | None:
        """The teacher's weights for a student, when the task can find them (``--teacher`` overrides)."""
        return None

    def load_teacher(self, path: str, eval_set: EvalSet, threads: int) -> TeacherModel:
        """The server-side teacher, ready to time and to predict on ``eval_set`` (called in a worker)."""
        raise self._missing("a teacher loader (load_teacher)")


TASKS: Registry[type[Task]] = Registry("task")
DISCOVERY_ERRORS: dict[str, str] = {}
_discovered = False


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register ``cls`` under ``cls.name`` (a duplicate name raises)."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__qualname__} has no task name")
    return TASKS.register(cls.name)(cls)


def discover() -> Registry[type[Task]]:
    """Import the example tasks' ``plugin`` modules and the ``kdmobile.tasks`` entry points (once).

    A plug-in that fails to import is recorded in ``DISCOVERY_ERRORS`` (and named when a lookup misses),
    never silently dropped.
    """
    global _discovered
    if _discovered:
        return TASKS
    _discovered = True
    examples = importlib.import_module(EXAMPLES_PACKAGE)
    for info in sorted(pkgutil.iter_modules(examples.__path__), key=lambda i: i.name):
        if not info.ispkg or info.name.startswith("_"):
            continue
        module = f"{EXAMPLES_PACKAGE}.{info.name}.plugin"
        if importlib.util.find_spec(module) is None:
            continue
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - reported on a miss
            DISCOVERY_ERRORS[module] = f"{type(e).__name__}: {e}"
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in TASKS:
            continue
        try:
            obj = ep.load()
            if ep.name not in TASKS:  # loading may have registered it already
                _register_loaded(obj, ep.name)
        except Exception as e:  # noqa: BLE001 - reported on a miss
            DISCOVERY_ERRORS[f"entry point {ep.name} = {ep.value}"] = f"{type(e).__name__}: {e}"
    return TASKS


def _register_loaded(obj: Any, name: str) -> None:
    cls = obj if isinstance(obj, type) else type(obj)
    if not issubclass(cls, Task):
        raise TypeError(f"{obj!r} is not a kdmobile.task.Task subclass")
    if getattr(cls, "name", None) != name:
        cls = type(cls.__name__, (cls,), {"name": name})
    TASKS.register(name)(cls)


def _import_ref(ref: str, what: str) -> Any:
    module, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"{what} {ref!r} cannot be imported: {type(e).__name__}: {e}") from None
    return obj


def task_names() -> list[str]:
    """Names of every registered task."""
    return discover().names()


def get_task(name: str) -> Task:
    """An instance of task ``name``, or of the class at ``"package.module:Class"``.

    Raises:
        UsageError: unknown name (the message lists the valid ones and any plug-in that failed to import).
    """
    if not name:
        raise UsageError(f"no task named; valid: {', '.join(task_names()) or '(none)'}")
    if ":" in name:
        obj = _import_ref(name, "task")
        cls = obj if isinstance(obj, type) else type(obj)
        if not issubclass(cls, Task):
            raise UsageError(f"task {name!r} is not a kdmobile.task.Task subclass")
        return obj if not isinstance(obj, type) else obj()
    registry = discover()
    if name not in registry:
        broken = "".join(f"\n  {k} failed to import: {v}" for k, v in DISCOVERY_ERRORS.items())
        raise UsageError(
            f"unknown task {name!r}; valid: {', '.join(registry.names()) or '(none)'}, or a "
            f"'package.module:Class' reference{broken}"
        )
    return registry.get(name)()


def resolve_architecture(architecture: str) -> type[nn.Module]:
    """The module class of a checkpoint's ``architecture``: ``"package.module:Class"`` or a task's name."""
    if not architecture:
        raise UsageError("no architecture given")
    if ":" in architecture:
        return _import_ref(architecture, "architecture")
    owner = task_for_architecture(architecture)
    if owner is None:
        known = sorted({a for n in TASKS.names() for a in TASKS.get(n).architectures})
        raise UsageError(
            f"unknown architecture {architecture!r}; valid: {', '.join(known) or '(none)'}, or an importable "
            "'package.module:Class'"
        )
    return _import_ref(TASKS.get(owner).architectures[architecture], "architecture")


def task_for_architecture(architecture: str) -> str | None:
    """The name of the registered task that owns a bare architecture name, if any."""
    for n in discover().names():
        if architecture in TASKS.get(n).architectures:
            return n
    return None


__all__ = [
    "DISCOVERY_ERRORS",
    "ENTRY_POINT_GROUP",
    "TASKS",
    "Task",
    "discover",
    "get_task",
    "register_task",
    "resolve_architecture",
    "task_for_architecture",
    "task_names",
]
