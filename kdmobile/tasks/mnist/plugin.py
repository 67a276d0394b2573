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

    def eval_set(self, data: str, student_meta: dict[str, Any]) -> Any:
        """The MNIST test split (10,000 digits); ``heldout`` is taken to mean it too."""
        from kdmobile.errors import UsageError
        from kdmobile.harness.tasks import EvalSet
        from kdmobile.tasks.mnist.data import split

        if data not in ("test", "heldout"):
            raise UsageError(f"--data {data!r}: the mnist task benches on 'test' (the 10,000 test digits)")
        x, y = split("test")
        return EvalSet(
            task=self.name,
            data="test",
            inputs=(x.numpy(),),
            acceptable=[[int(v)] for v in y.tolist()],
            latency_index=0,
            info={"n_classes": 10},
        )

    def load_teacher(self, path: str, eval_set: Any, threads: int) -> Any:
        """A teacher given with ``--teacher``: a checkpoint, a ``.pt2`` program or an exported artifact."""
        from kdmobile.harness.tasks import load_teacher

        return load_teacher(path, eval_set, threads)
