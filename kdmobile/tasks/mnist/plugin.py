"""The MNIST task (Hinton et al. 2015, section 3) as a kdmobile task plug-in.

    kdmobile distill configs/mnist_quick.toml -o build/runs/mnist_quick

Each method imports its implementation lazily, so discovering the task costs nothing.
"""

from __future__ import annotations

from typing import Any

from kdmobile.task import Task, register_task


@register_task
class MnistTask(Task):
    name = "mnist"
    description = "MNIST digits: the MLP teacher and student of Hinton, Vinyals & Dean (2015), section 3."
    architectures = {"mlp": "kdmobile.tasks.mnist.model:MLP"}

    def distill_setup(self, args: dict[str, Any], seed: int) -> Any:
        from kdmobile.tasks.mnist.task import make_mnist_task

        return make_mnist_task(args, seed)

    def model_spec(self, model: Any, meta: dict[str, Any], **kw: Any) -> Any:
        from kdmobile.tasks.mnist.export_spec import mnist_spec

        return mnist_spec(model, meta, **kw)
