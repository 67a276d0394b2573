"""The pruned-teacher student experiment (kdmobile.tasks.email.pruned_student): layer and vocabulary pruning.

Built on a tiny randomly initialised BERT of the same class as the teacher's encoder (the real teacher needs
a finished `make demo`); the training run itself is an experiment, not a test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdmobile.errors import UsageError
from kdmobile.tasks.email.pruned_student import prune_layers, prune_vocab

transformers = pytest.importorskip("transformers")


class Pooled(nn.Module):
    """The act teacher's shape: ``.encoder`` a BertModel, masked mean pooling, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        cfg = transformers.BertConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=4,
                                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)  # fmt: skip
        self.encoder = transformers.BertModel(cfg, add_pooling_layer=False)
        self.head = nn.Linear(32, 5)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1))


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 1100, (6, 10), generator=g)  # ids >= 1000: ordinary WordPieces
    ids[:, 0] = 101
    return ids, torch.ones_like(ids)


def test_keeping_every_layer_changes_nothing_and_fewer_layers_are_a_copy():
    torch.manual_seed(0)
    teacher = Pooled().eval()
    ids, mask = _inputs()
    with torch.no_grad():
        ref = teacher(ids, mask)
        torch.testing.assert_close(prune_layers(teacher, [0, 1, 2, 3]).eval()(ids, mask), ref)
        small = prune_layers(teacher, [0, 2]).eval()
        assert len(small.encoder.encoder.layer) == 2 and small.encoder.config.num_hidden_layers == 2
        assert not torch.allclose(small(ids, mask), ref)
    assert len(teacher.encoder.encoder.layer) == 4  # the teacher itself is untouched
    assert (
        small.encoder.encoder.layer[1].attention.self.query.weight
        is not teacher.encoder.encoder.layer[2].attention.self.query.weight
    )
    torch.testing.assert_close(small.encoder.encoder.layer[1].attention.self.query.weight,
                               teacher.encoder.encoder.layer[2].attention.self.query.weight)  # fmt: skip
    with pytest.raises(UsageError, match="layers must be in 0..3"):
        prune_layers(teacher, [0, 4])


def test_vocabulary_pruning_keeps_seen_rows_and_maps_the_rest_to_unk():
    torch.manual_seed(0)
    teacher = Pooled().eval()
    ids, mask = _inputs()
    student, remap = prune_vocab(prune_layers(teacher, [0, 1, 2, 3]), ids, min_count=1, unk_id=100)
    seen = int(torch.unique(ids[ids >= 1000]).numel())
    assert student.encoder.embeddings.word_embeddings.num_embeddings == 1000 + seen
    with torch.no_grad():  # every id of these inputs survived: the same outputs through the remap
        torch.testing.assert_close(student.eval()(remap[ids], mask), teacher(ids, mask))
    unseen = 1150
    assert unseen not in ids and remap[unseen] == remap[100] == 100


class ActLike(Pooled):
    """The act teacher's head: cosine to act vectors (+ a `none` direction with its bias), padding trimmed."""

    def __init__(self) -> None:
        super().__init__()
        self.acts = nn.Parameter(torch.randn(4, 32))
        self.none = nn.Parameter(torch.randn(32))
        self.none_bias = nn.Parameter(torch.tensor(0.5))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        width = int(mask.sum(1).max())  # what the training model does: a data-dependent width
        ids, mask = ids[:, :width], mask[:, :width]
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        z = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        w = torch.nn.functional.normalize(torch.cat([self.acts, self.none[None]]), dim=-1)
        logits = 20.0 * z @ w.T
        return torch.cat([logits[:, :-1], logits[:, -1:] + self.none_bias], 1)


def test_the_exportable_student_gives_the_training_logits_and_exports():
    from kdmobile.tasks.email.pruned_student import exportable

    torch.manual_seed(0)
    ids, mask = _inputs()
    mask[1, 6:] = 0  # padded rows: the training model trims, the exportable one masks every position
    ids[1, 6:] = 0
    student, remap = prune_vocab(prune_layers(ActLike().eval(), [0, 3]), ids, min_count=1, unk_id=100)
    model = exportable(student, 20.0, remap)
    with torch.no_grad():
        expected = torch.cat([student(remap[ids[i : i + 1]], mask[i : i + 1]) for i in range(len(ids))])
        torch.testing.assert_close(model(ids, mask), expected, atol=1e-5, rtol=1e-5)  # teacher ids in
    program = torch.export.export(model, (ids[:1], mask[:1]))
    torch.testing.assert_close(program.module()(ids[1:2], mask[1:2]), expected[1:2], atol=1e-5, rtol=1e-5)


def test_a_saved_student_rebuilds_from_the_teacher_with_its_layers_vocabulary_and_weights():
    from kdmobile.tasks.email.pruned_student import rebuild

    torch.manual_seed(0)
    teacher = ActLike().eval()
    ids, mask = _inputs()
    student, remap = prune_vocab(prune_layers(teacher, [1, 2]), ids, min_count=1, unk_id=100)
    with torch.no_grad():
        student.acts.add_(1.0)  # trained weights differ from the teacher's
    state = {k: v.clone() for k, v in student.state_dict().items()} | {"_remap": remap}
    again, remap2 = rebuild(state, teacher)
    assert torch.equal(remap2, remap) and len(again.encoder.encoder.layer) == 2
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(remap[ids], mask), student.eval()(remap[ids], mask))
