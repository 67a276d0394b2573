"""The WordPiece transformer student experiment (kdmobile.tasks.email.wp_student): model and scoring.

The training run itself needs a finished `make demo` (teacher cache) and is an experiment, not a test.
"""

from __future__ import annotations

import numpy as np
import torch

from kdmobile.tasks.email.wp_student import agreement_by_margin, build_student, pca_rows, scores


def test_padding_does_not_change_the_output_and_pca_keeps_the_leading_axes():
    torch.manual_seed(0)
    table = torch.randn(50, 16) @ torch.diag(torch.linspace(3, 0.1, 16))
    init, kept = pca_rows(table, 4)
    assert init.shape == (50, 4) and 0.5 < kept < 1.0
    model = build_student(init, d=16, layers=1, heads=2, ffn=32, max_len=12, n_out=5).eval()
    ids = torch.tensor([[7, 8, 9, 0, 0, 0]])
    with torch.no_grad():
        short, padded = model(ids[:, :3]), model(ids)
    assert short.shape == (1, 5)
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)


def test_scores_and_agreement_by_margin_count_what_they_say():
    teacher = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.35, 0.3, 0.25, 0.1], [0.1, 0.8, 0.05, 0.05]]))
    student = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])  # agrees on the first email only
    acceptable = np.array(
        [[True, False, False, False], [False, True, False, False], [False, False, False, False]]
    )
    s = scores(student, teacher, acceptable)  # the last column is `none`; email 3 wants no reply
    assert s == {"top1": 1.0, "recall_at_3": 1.0, "agreement": 1 / 3}
    rows = agreement_by_margin(student, teacher, cuts=(0.0, 0.5))
    assert rows[0] == {"margin_at_least": 0.0, "share": 1.0, "agreement": 1 / 3}
    # margins over the act columns (softmax of the first three): email 1 and 3 are confident, email 2 is not
    assert rows[1]["share"] == 2 / 3 and rows[1]["agreement"] == 0.5
