"""The task seam: discovery of the example tasks, ``module:Class`` references, architecture resolution."""

from __future__ import annotations

import pytest

from kdmobile.errors import UsageError
from kdmobile.task import Task, get_task, resolve_architecture, task_for_architecture, task_names


def test_examples_register_themselves():
    assert {"email", "mnist"} <= set(task_names())
    assert get_task("email").name == "email"
    assert isinstance(get_task("mnist"), Task)


def test_module_class_reference_and_bare_names():
    assert get_task("kdmobile.tasks.mnist.plugin:MnistTask").name == "mnist"
    assert resolve_architecture("mlp").__name__ == "MLP"
    assert resolve_architecture("kdmobile.tasks.mnist.model:MLP").__name__ == "MLP"
    assert task_for_architecture("email-student") == "email"
    assert task_for_architecture("no-such-net") is None


@pytest.mark.parametrize(
    "name", ["no-such-task", "kdmobile.no_such_module:Task", "kdmobile.registry:Registry"]
)
def test_bad_task_names_are_usage_errors(name):
    with pytest.raises(UsageError) as e:
        get_task(name)
    assert name.split(":")[0] in str(e.value)


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(UsageError, match="email-student.*mlp"):
        resolve_architecture("resnet-9000")


def test_missing_capability_names_the_task():
    class Bare(Task):
        name = "bare"

    with pytest.raises(UsageError, match="'bare' does not provide an evaluation set"):
        Bare().eval_set("heldout", {})
