"""The email pipeline end to end on a small scale, with a user-supplied teacher (the Python API).

    .venv/bin/python -m pytest tests/test_email_pipeline.py -q

The teacher here is a real (small) model the test trains itself: a bag-of-words classifier over its own
hashed vocabulary with the pipeline's outputs (54 reply acts + ``none``), trained on generated emails
relabelled onto acts and the hand-written no-reply emails, called on its own inputs
(``teacher_tokenize``), exactly how a user plugs in an ``nn.Module``. ``make demo`` runs the same stages
with the reply-act dual encoder on all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import kdmobile.tasks.email as E
from kdmobile import config as C
from kdmobile.checkpoint import load_checkpoint
from kdmobile.distill import DistillConfig
from kdmobile.tasks.email import pipeline as P
from kdmobile.tasks.email.acts import load_reply_acts
from kdmobile.tasks.email.generator import generate
from kdmobile.tasks.email.metrics import compute_acts, softmax
from kdmobile.tasks.email.pipeline import EmailTaskConfig, default_stages, load_config
from kdmobile.tasks.email.tokenizer import HashTokenizer, TokenizerConfig

TEACHER_TOK = HashTokenizer(TokenizerConfig(num_buckets=2048, max_len=96, word_ngrams=1, seed=7))


class BowTeacher(nn.Module):
    def __init__(self, num_intents: int) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(2048, 32, mode="mean", padding_idx=0)
        self.head = nn.Linear(32, num_intents)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids))


class Dirs:
    def __init__(self, workdir: Path) -> None:
        self.workdir, self.email_dir, self.report_dir = workdir, workdir / "email", workdir / "report"


def teacher_tokenize(texts: list[str]) -> tuple[torch.Tensor]:
    return (torch.from_numpy(TEACHER_TOK.encode_batch(texts)),)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    torch.manual_seed(0)
    acts = load_reply_acts()
    intents = P.act_labels(acts)
    texts, targets = P.act_rows(generate(1500, seed=77), acts)
    hand, hand_y = P.hand_written_rows(acts, 1, 4)
    (x,) = teacher_tokenize(texts + hand)
    y = torch.as_tensor([int(t.argmax()) for t in targets] + hand_y)
    teacher = BowTeacher(len(intents))
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(3):
        for s in range(0, len(y), 64):
            loss = nn.functional.cross_entropy(teacher(x[s : s + 64]), y[s : s + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    teacher.eval()

    work = tmp_path_factory.mktemp("demo")
    report = P.run(
        work,
        [
            "task_args.data.n_train=400",
            "task_args.data.n_val=100",
            "task_args.data.n_transfer=200",
            "task_args.data.n_augment=100",
            "task_args.data.n_sentences=100",
            "task_args.data.chatterbot=false",
            "task_args.transfer.n=160",  # the varied mix of kdmobile/tasks/email/transfer.py
            "task_args.student.word_vectors=false",  # tested in test_email_student.py
            "task_args.demo.seeds=[0, 1]",
            "task_args.demo.speedup_rows=128",
            "task_args.demo.samples=3",
            "train.epochs=2",
        ],
        teacher=teacher,
        teacher_tokenize=teacher_tokenize,
        progress=False,
    )
    return Dirs(work), teacher, report


def test_report_has_every_figure(demo):
    ctx = demo[0]
    report = json.loads((ctx.report_dir / "task.json").read_text())
    assert report == demo[2]  # what run() returns is what it wrote
    assert set(report["sets"]) == {"heldout", "heldout_c"}
    assert report["sets"]["heldout"]["want_reply"] == report["heldout"] == 312
    assert report["sets"]["heldout_c"]["want_reply"] == 204 and report["sets"]["heldout_c"]["emails"] == 243
    for s in report["sets"].values():
        for key in ("teacher", "distilled", "scratch"):
            for field in ("params", "top1", "recall_at_3", "teacher_agreement"):
                assert field in s[key], (key, field)
        for key in ("distilled", "scratch"):
            assert "top1_std" in s[key] and len(s[key]["runs"]) == 2
            assert s[key]["top1"] == pytest.approx(np.mean([r["top1"] for r in s[key]["runs"]]))
        assert {"top1_ratio", "recall_at_3_ratio", "agreement_ok", "beats_scratch_by_std"} <= set(s["checks"])
    assert report["distilled"] == report["sets"]["heldout"]["distilled"]  # the dev set at the top level
    assert report["distilled"]["params"] == report["scratch"]["params"]
    detail = report["cache_speedup_detail"]
    assert report["cache_speedup"] == pytest.approx(
        detail["online_epoch_seconds"] / detail["cached_epoch_seconds"], rel=1e-2
    )
    assert detail["rows"] == 128
    assert set(report["timings_seconds"]) == {s.name for s in default_stages()[:-1]}  # all before the report
    md = (ctx.report_dir / "task.md").read_text()
    assert "| student, distilled |" in md and "| teacher" in md
    assert "## heldout_c" in md and "## Abstain" in md and "(chosen) | heldout_c |" in md


def test_teacher_figures_match_an_independent_evaluation(demo):
    ctx, teacher, _ = demo
    report = json.loads((ctx.report_dir / "task.json").read_text())
    rows = P.load_eval_rows("heldout")
    labels = P.act_labels(load_reply_acts())
    col = {k: i for i, k in enumerate(labels)}
    with torch.no_grad():
        z = teacher(*teacher_tokenize([r["text"] for r in rows])).numpy()
    m = compute_acts(z, [[col[a] for a in r["acts"]] for r in rows])
    assert report["teacher"]["top1"] == pytest.approx(m["top1"])
    assert report["teacher"]["recall_at_3"] == pytest.approx(m["recall_at_3"])
    assert report["teacher"]["params"] == sum(p.numel() for p in teacher.parameters())
    np.testing.assert_allclose(E.heldout_teacher_logits(ctx.workdir), z, atol=1e-5)
    preds = json.loads((ctx.email_dir / "teacher_predictions.json").read_text())
    assert [p["id"] for p in preds["heldout"]] == [r["id"] for r in rows]
    first = preds["heldout"][0]["top3"]
    assert first[0]["intent"] == labels[int(z[0, :-1].argmax())]  # never "none"
    assert preds["heldout"][0]["p_none"] == pytest.approx(softmax(z[0])[-1], abs=1e-6)
    assert first[0]["prob"] >= first[1]["prob"] >= first[2]["prob"]
    assert len(preds["samples"]) >= 1 and all(len(s["top3"]) == 3 for s in preds["samples"])


def test_student_checkpoint_reproduces_the_reported_seed0_figures(demo):
    ctx, _, _ = demo
    model, meta = load_checkpoint(ctx.email_dir / "student.safetensors")
    assert (
        meta["architecture"] == "email-student"
        and meta["task"] == "email"
        and meta["intents"] == P.act_labels(load_reply_acts())
    )
    report = json.loads((ctx.report_dir / "task.json").read_text())
    seed0 = report["distilled"]["runs"][0]
    assert seed0["seed"] == 0
    with torch.no_grad():
        m = E.evaluate(
            lambda ids: model(torch.from_numpy(ids)).numpy(),
            tokenizer_config=meta["tokenizer"],
            teacher_logits=E.heldout_teacher_logits(ctx.workdir),
            labels=meta["intents"],
        )
    for k in ("top1", "recall_at_3", "teacher_agreement"):
        assert m[k] == pytest.approx(seed0[k]), k


def test_abstain_rule_is_calibrated_on_dev_and_no_reply_and_shipped(demo):
    """The student's rule keeps >= 90% of the dev emails that want a reply (recomputed here from the
    checkpoint), is the one in the report, and the report's coverage on heldout_c is what it gives."""
    from kdmobile.tasks.email.abstain import abstains
    from kdmobile.tasks.email.act_teacher import load_no_reply

    ctx, _, _ = demo
    model, meta = load_checkpoint(ctx.email_dir / "student.safetensors")
    report = json.loads((ctx.report_dir / "task.json").read_text())
    rule = report["abstain"]["student"]["rule"]
    assert meta["abstain"] == {"score": rule["score"], "threshold": rule["threshold"]}
    tok = HashTokenizer(
        TokenizerConfig(**{**meta["tokenizer"], "char_ngrams": tuple(meta["tokenizer"]["char_ngrams"])})
    )

    def probs(texts):
        with torch.no_grad():
            return softmax(model(torch.from_numpy(tok.encode_batch(texts))).numpy())

    dev = P.load_eval_rows("heldout")
    want = [r for r in dev if r["acts"]]
    assert np.mean(~abstains(probs([r["text"] for r in want]), meta["abstain"])) >= 0.9
    negatives = [r["text"] for r in dev if not r["acts"]] + load_no_reply()
    shown_no_reply = np.mean(~abstains(probs(negatives), meta["abstain"]))
    assert rule["calibration"]["no_reply_shown"] == pytest.approx(shown_no_reply, abs=1e-4)
    c = P.load_eval_rows("heldout_c")
    ab = abstains(probs([r["text"] for r in c]), meta["abstain"])
    chosen = [row for row in report["abstain"]["student"]["sets"]["heldout_c"] if row.get("chosen")][0]
    has = np.array([bool(r["acts"]) for r in c])
    assert chosen["coverage"] == pytest.approx(np.mean(~ab[has]))
    assert chosen["no_reply_shown"] == pytest.approx(np.mean(~ab[~has]))


def test_distilled_runs_read_the_cache_and_scratch_runs_need_no_teacher(demo):
    ctx, _, _ = demo
    hist = json.loads((ctx.email_dir / "runs" / "distilled-seed1" / "history.json").read_text())
    assert {e["teacher"] for e in hist["epochs"]} == {"cache"} and hist["cache"]["status"] == "reused"
    hist = json.loads((ctx.email_dir / "runs" / "scratch-seed0" / "history.json").read_text())
    assert {e["teacher"] for e in hist["epochs"]} == {"none"}


def test_transfer_mix_joins_the_cached_transfer_set(demo):
    from kdmobile.tasks.email import data as D
    from kdmobile.tasks.email.transfer import TransferConfig, transfer_texts

    ctx, _, report = demo
    base = D.transfer_texts(
        D.DataConfig(n_train=400, n_val=100, n_transfer=200, n_augment=100, n_sentences=100, chatterbot=False)
    )
    mix = transfer_texts(TransferConfig(n=160))[0]
    assert len(mix) == 160 and report["data"]["transfer_unlabelled"] == len(base) + 160
    # The distilled runs read the teacher-output cache, whose rows the engine checks against the whole
    # transfer set (the mix included).
    hist = json.loads((ctx.email_dir / "runs" / "distilled-seed0" / "history.json").read_text())
    assert hist["cache"]["status"] == "reused"


def test_config_file_is_complete_and_strict():
    cfg, task = load_config(Path(__file__).resolve().parents[1] / "configs" / "email.toml")
    assert isinstance(cfg, DistillConfig) and cfg.task == "email" and cfg.cache.enabled
    assert task == C.build(EmailTaskConfig, dict(cfg.task_args), where="task_args")
    # The config file and the pipeline's built-in student tokenizer (the fallback of every consumer) agree.
    assert task.student.tokenizer == P.STUDENT_TOKENIZER
    from kdmobile.errors import ConfigError

    with pytest.raises(ConfigError, match="task_args.demo.sedes"):
        load_config(
            Path(__file__).resolve().parents[1] / "configs" / "email.toml", ["task_args.demo.sedes=[1]"]
        )


def test_email_task_is_registered_for_kdmobile_distill():
    from kdmobile.distill import get_task
    from kdmobile.tasks.email.plugin import EmailTask

    factory = get_task("email")
    assert isinstance(factory.__self__, EmailTask) and factory.__func__ is EmailTask.distill_setup
