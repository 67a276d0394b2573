"""Example tasks; each ``kdmobile/tasks/<name>/plugin.py`` registers a ``kdmobile.task.Task`` plug-in.

kdmobile distill configs/mnist_quick.toml     # task = "mnist" -> kdmobile.task.get_task("mnist").distill_setup
"""
