"""Example tasks; each ``kdmobile/tasks/<name>/task.py`` registers a factory in ``kdmobile.distill.TASKS``.

kdmobile distill configs/mnist_quick.toml     # task = "mnist" imports kdmobile.tasks.mnist.task
"""
