"""MNIST: the Hinton, Vinyals & Dean 2015 §3 experiment (784-1200-1200-10 teacher, 784-800-800-10 student).

python -m kdmobile.tasks.mnist.hinton -o build/bench/hinton_mnist.json     # the paper table (~30 min)
kdmobile distill configs/mnist_quick.toml                                   # the "mnist" task via the CLI
"""
