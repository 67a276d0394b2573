"""Zero-shot probe: how separable are the reply acts for the pretrained encoder, with no training at all?

    OMP_NUM_THREADS=1 python -m kdmobile.tasks.email.zeroshot --out build/email/zeroshot.json

A dual-encoder ranking in the manner of Henderson et al. 2017 ("Efficient Natural Language Response
Suggestion for Smart Reply"), with the pretrained all-MiniLM-L6-v2 (masked mean pooling, L2-normalised,
loaded as the teacher loads it) on both sides and nothing fine-tuned: an email scores each reply act by
the cosine of its embedding with the act's embedding. An act is represented four ways (one row each):

- ``centroid``: the mean of the normalised embeddings of its ``description``, ``when`` and ``replies``;
- ``when``: the embedding of ``when`` only (the kind of email the act answers);
- ``replies-max``: the best cosine over its replies (response ranking proper);
- ``centroid+examples``: ``centroid`` with the act's example emails added (a few-shot hint);

and a baseline without a model, ``prior (other set)``: the same ranking for every email, by how often each
act is acceptable in the other held-out set.

On the emails with acts it reports top-1 (the best act is acceptable) and recall@3 (an acceptable act is
among the best three); on all emails, how well the maximum score separates the emails that need no reply
(``acts == []``): ROC AUC, and coverage vs precision at thresholds set at quantiles of the no-reply emails'
maximum scores. This is an indication for the next round, not a model: the held-out sets are test data,
so nothing here may steer the data or the generator.

Measured on 2026-12-01 (54 acts, max_len 128, 1 thread, ~70 s on the shared 2-core machine):

| set | representation | top-1 | recall@3 | no-reply AUC |
|---|---|---|---|---|
| heldout_c (204 with acts, 39 without) | centroid | 33.3% | 56.4% | 0.55 |
| | centroid+examples | 40.7% | 66.2% | 0.57 |
| | prior (other set) | 23.5% | 41.7% | 0.50 |
| heldout_ab (312 with acts, 8 without) | centroid | 28.5% | 50.3% | 0.79 |
| | centroid+examples | 34.6% | 56.7% | 0.76 |
| | prior (other set) | 25.6% | 42.0% | 0.50 |

The maximum cosine does not tell the no-reply emails apart on heldout_c (AUC 0.55; 8 negatives make the
heldout_ab AUC noisy): abstaining needs its own signal. Plain acts stay weak zero-shot (on heldout_c the
top-1 is acceptable on 3 of 36 emails where "no" is, 4 of 25 where "noted" is).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

VARIANTS = ("centroid", "when", "replies-max", "centroid+examples")
QUANTILES = (0.5, 0.75, 0.9)


def embed(texts: Sequence[str], max_len: int = 128, batch_size: int = 32) -> np.ndarray:
    """L2-normalised mean-pooled all-MiniLM-L6-v2 embeddings ``[N, 384]`` (float32), one thread."""
    import torch

    from kdmobile.tasks.email.teacher import TeacherConfig, build_teacher, load_tokenizer, tokenize

    torch.set_num_threads(1)
    cfg = TeacherConfig(max_len=max_len)
    model = build_teacher(cfg, num_intents=1).eval()  # the head is unused: pool() is the encoder alone
    tok = load_tokenizer(cfg)
    order = np.argsort([len(t) for t in texts])  # similar lengths per batch: little padding
    out = np.zeros((len(texts), model.encoder.config.hidden_size), np.float32)
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            idx = order[i : i + batch_size]
            ids, mask = tokenize(tok, [texts[j] for j in idx], max_len)
            out[idx] = torch.nn.functional.normalize(model.pool(ids, mask), dim=-1).numpy()
    return out


def act_scores(email_emb: np.ndarray, acts: list[dict[str, Any]], max_len: int) -> dict[str, np.ndarray]:
    """``{variant: scores [n_emails, n_acts]}`` for every variant of :data:`VARIANTS`."""
    fields = [[a["description"], a["when"], *a["replies"]] for a in acts]
    examples = [a.get("examples", []) for a in acts]
    flat = [t for f in fields for t in f] + [t for e in examples for t in e]
    emb = embed(flat, max_len)
    out: dict[str, list[np.ndarray]] = {v: [] for v in VARIANTS}
    k = 0
    parts = []
    for f in fields:
        parts.append(emb[k : k + len(f)])
        k += len(f)
    for p, ex in zip(parts, examples, strict=True):
        e = emb[k : k + len(ex)]
        k += len(ex)
        unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
        out["centroid"].append(email_emb @ unit(p.mean(0)))
        out["when"].append(email_emb @ p[1])
        out["replies-max"].append((email_emb @ p[2:].T).max(1))
        out["centroid+examples"].append(email_emb @ unit(np.concatenate([p, e]).mean(0)))
    return {v: np.stack(s, 1) for v, s in out.items()}


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC of ``pos`` above ``neg`` (ties count half): P(score of a positive > score of a negative)."""
    if not len(pos) or not len(neg):
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def evaluate(scores: np.ndarray, labels: list[list[str]], ids: list[str]) -> dict[str, Any]:
    """Top-1, recall@3 on the emails with acts; separation of the no-reply emails by the max score."""
    col = {a: i for i, a in enumerate(ids)}
    acceptable = [{col[a] for a in lab} for lab in labels]
    rank = np.argsort(-scores, axis=1)
    has = np.array([bool(a) for a in acceptable])
    top1 = np.array([rank[i, 0] in acc for i, acc in enumerate(acceptable)])
    top3 = np.array([bool(set(rank[i, :3]) & acc) for i, acc in enumerate(acceptable)])
    best = scores.max(1)
    res: dict[str, Any] = {
        "emails": len(labels),
        "with_acts": int(has.sum()),
        "top1": float(top1[has].mean()),
        "recall_at_3": float(top3[has].mean()),
        "abstain_auc": auc(best[has], best[~has]),
        "thresholds": [],
    }
    for q in QUANTILES if (~has).any() else ():
        t = float(np.quantile(best[~has], q))
        shown = best > t
        res["thresholds"].append(
            {
                "quantile_of_no_reply_max": q,
                "threshold": t,
                "coverage": float(shown[has].mean()),  # emails with acts that still get suggestions
                "top1_when_shown": float(top1[has & shown].mean()) if (has & shown).any() else float("nan"),
                "no_reply_shown": float(shown[~has].mean()),
                "precision": float(
                    (top1 & shown).sum() / max(1, shown.sum())
                ),  # right / all suggestions shown
            }
        )
    return res


def per_act(
    scores: np.ndarray, labels: list[list[str]], ids: list[str], acts: Sequence[str]
) -> dict[str, str]:
    """For each act of ``acts``: how often, on the emails where it is acceptable, the top-1 is acceptable."""
    col = {a: i for i, a in enumerate(ids)}
    best = scores.argmax(1)
    out = {}
    for a in acts:
        rows = [i for i, lab in enumerate(labels) if a in lab]
        ok = sum(best[i] in {col[x] for x in labels[i]} for i in rows)
        out[a] = f"{ok}/{len(rows)}"
    return out


WEAK = ("yes", "no", "thanks", "youre_welcome", "no_worries", "acknowledge_receipt", "apologize", "noted")


def main(argv: list[str] | None = None) -> None:
    from kdmobile.io import write_json
    from kdmobile.tasks.email.acts import load_heldout_ab_acts, load_heldout_c, load_reply_acts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-len", type=int, default=128, help="wordpiece tokens per text (the teacher's)")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    acts = load_reply_acts()["intents"]
    ids = [a["id"] for a in acts]
    report: dict[str, Any] = {"max_len": args.max_len, "acts": len(ids), "sets": {}}
    sets = {"heldout_c": load_heldout_c(), "heldout_ab": load_heldout_ab_acts()}
    for name, rows in sets.items():
        labels = [r["acts"] for r in rows]
        scores = act_scores(embed([r["text"] for r in rows], args.max_len), acts, args.max_len)
        # The no-model baseline: every email gets the acts ranked by their frequency in the OTHER set.
        other = [a for n, rs in sets.items() if n != name for r in rs for a in r["acts"]]
        prior = np.array([other.count(a) + 1e-3 * (len(ids) - i) for i, a in enumerate(ids)])
        scores["prior (other set)"] = np.tile(prior, (len(rows), 1))
        report["sets"][name] = {
            v: {**evaluate(s, labels, ids), "per_act_top1": per_act(s, labels, ids, WEAK)}
            for v, s in scores.items()
        }
        print(f"\n{name}: {len(rows)} emails, {sum(not lab for lab in labels)} need no reply")
        print(
            "| act representation | top-1 | recall@3 | no-reply AUC | coverage / no-reply shown / top-1 shown @ q50, q75, q90 |"
        )
        print("|---|---|---|---|---|")
        for v, r in report["sets"][name].items():
            th = "; ".join(
                f"{t['coverage']:.0%} / {t['no_reply_shown']:.0%} / {t['top1_when_shown']:.0%}"
                for t in r["thresholds"]
            )
            print(f"| {v} | {r['top1']:.1%} | {r['recall_at_3']:.1%} | {r['abstain_auc']:.3f} | {th} |")
        print(
            "top-1 right on the emails where the act is acceptable (centroid):",
            report["sets"][name]["centroid"]["per_act_top1"],
        )
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n{report['seconds']} s (1 thread)")
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
