"""Distillation-aware compression: quantization-aware training with KD, structured pruning with KD.

    kdmobile compress qat build/email/student.safetensors --target executorch -o build/qat
    python -m kdmobile.compress.demo_qat -o build/qat

- :mod:`kdmobile.compress.qat`: fine-tune through the target's own PT2E fake quantization with the ``kd``
  loss against the float model; export the result with precision ``int8-qat`` (trained ranges as they are).
- :mod:`kdmobile.compress.prune`: remove hidden units / embedding columns, then recover with ``kd`` against
  the unpruned model.

Nothing here is imported by ``import kdmobile``.
"""
