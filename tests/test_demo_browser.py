"""The browser demo (demo_app/) in real headless Chromium against a real exported student.

    .venv/bin/python -m pytest tests/test_demo_browser.py -q          # screenshots: build/test-artifacts/demo/

A module fixture trains ``kdmobile.tasks.email.quick_student`` on the reply acts (54 acts + ``none``, with an
abstain rule, as ``make demo``'s student), exports its onnx-web bundle (fp32 + int8)
with ``kdmobile.export`` (the same code as ``make demo``) and serves ``demo_app`` with ``kdmobile.serve``; Playwright drives Debian ``chromium``. Expected suggestions come from
the eager PyTorch student on ``HashTokenizer`` ids (and Python onnxruntime for int8), never from the page.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo_app"
SHOTS = REPO / "build" / "test-artifacts" / "demo"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
HOSTILE = ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>"]
HOSTILE_SAMPLE = (
    "Subject: <img src=x onerror=alert(2)>\n\nPlease confirm the <script>alert(3)</script> order."
)
TYPED_EMAIL = "Hi Sam, could we meet tomorrow at 3pm to go over the budget? Thanks, Priya"

pytestmark = pytest.mark.browser


# ------------------------------------------------------------------------------------------- the bundle


@dataclass
class Bundle:
    dir: Path
    model: object  # eager EmailStudent (eval)
    tokenizer: object  # HashTokenizer
    meta: dict
    replies: dict[str, list[str]]
    samples: list[dict]  # what teacher_predictions.json lists, with "top3"
    curated: list[dict] = dataclasses.field(default_factory=list)  # demo_app/samples.json
    abstain: dict = dataclasses.field(default_factory=dict)  # replies.json "abstain"

    def logits(self, text: str) -> np.ndarray:
        import torch

        ids = torch.tensor([self.tokenizer.encode(text)], dtype=torch.int64)
        with torch.no_grad():
            return self.model(ids)[0].numpy()

    def abstains(self, text: str) -> bool:
        from kdmobile.tasks.email.abstain import abstains
        from kdmobile.tasks.email.metrics import softmax

        return bool(abstains(softmax(self.logits(text)[None]), self.abstain)[0])

    def top3(self, text: str) -> list[str]:
        """The three best acts (never ``none``, the last output); the email must not abstain."""
        assert not self.abstains(text), "the page would show no chips for this email"
        z = self.logits(text)[:-1]
        order = np.argsort(-z, kind="stable")[:4]
        # The check is only meaningful if the ranking is not a float tie.
        assert z[order[0]] - z[order[1]] > 1e-4 and z[order[1]] - z[order[2]] > 1e-4
        assert z[order[2]] - z[order[3]] > 1e-4
        return [self.meta["intents"][i] for i in order[:3]]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    import torch

    from kdmobile.checkpoint import load_checkpoint
    from kdmobile.export import export_checkpoint
    from kdmobile.io import write_json
    from kdmobile.tasks.email import quick_student
    from kdmobile.tasks.email.tokenizer import HashTokenizer

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo-bundle")
    ckpt = quick_student(out, n=1500, epochs=4, acts=True)
    summary = export_checkpoint(
        ckpt,
        out_dir=out / "export",
        targets=["onnx-web"],
        precisions=["fp32", "int8"],
        bundle=True,
        n_heldout=32,
        n_random=8,
        n_calibration=16,
    )
    assert summary["ok"], summary
    bdir = out / "export" / "onnx-web" / "bundle"
    model, _ = load_checkpoint(ckpt)
    tok = HashTokenizer.from_json((bdir / "tokenizer.json").read_text())
    meta = json.loads((bdir / "meta.json").read_text())
    doc = json.loads((bdir / "replies.json").read_text())
    replies = {it["id"]: it["replies"] for it in doc["intents"]}
    assert meta["intents"][-1] == doc["none"] == "none" and doc["abstain"]["score"] in (
        "p_none",
        "max_act_prob",
    )
    b = Bundle(bdir, model, tok, meta, replies, [], abstain=doc["abstain"])
    # Teacher predictions in the pipeline's format, from a stand-in teacher that equals the student except
    # on one sample, where its ranking is rotated: the panel must show an agreement and a disagreement.
    # Two texts are curated samples.json emails (they keep their titles), two are not (titles derived).
    curated = json.loads((DEMO / "samples.json").read_text())["samples"]
    texts = [
        curated[0]["text"],
        curated[1]["text"],
        HOSTILE_SAMPLE,
        "Hey!\n\nWhere are you? We are all here.",
    ]
    samples = []
    for k, text in enumerate(texts):
        z = b.logits(text)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        order = list(np.argsort(-z[:-1], kind="stable")[:4])
        if k == 1:
            order = order[3:] + order[:2]
        top3 = [{"intent": meta["intents"][i], "prob": round(float(p[i]), 6)} for i in order[:3]]
        samples.append({"id": f"sample-{k:02d}", "text": text, "top3": top3})
    doc = {"version": 1, "teacher": "stand-in teacher", "intents": meta["intents"], "samples": samples}
    write_json(bdir / "teacher_predictions.json", doc)
    b.samples = samples
    b.curated = curated
    return b


# ------------------------------------------------------------------------------------- browser + server


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is needed for browser tests (`make setup` installs it)"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture(scope="module")
def server(bundle):
    from kdmobile.serve import serving

    with serving(DEMO, models=bundle.dir) as url:
        yield url


class PageWatch:
    """A page plus everything that must not happen on it: dialogs, page errors, foreign requests."""

    def __init__(self, ctx, base: str) -> None:
        self.page = ctx.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on(
            "request", lambda r: None if r.url.startswith(base + "/") else self.foreign.append(r.url)
        )

    def open(self, url: str, state: str = "ready") -> None:
        self.page.goto(url)
        self.page.wait_for_function(
            "(s) => window.kdmobileDemo && window.kdmobileDemo.state === s", arg=state
        )

    def prediction_for(self, text: str, precision: str = "fp32") -> dict:
        self.page.wait_for_function(
            "([t, p]) => { const l = window.kdmobileDemo.last; return l && l.text === t && l.precision === p; }",
            arg=[text, precision],
        )
        return self.page.evaluate("window.kdmobileDemo.last")

    def chip_intents(self) -> list[str]:
        return self.page.locator("#chips .chip").evaluate_all("cs => cs.map(c => c.dataset.intent)")

    def clean(self) -> None:
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"
        assert self.errors == [], f"page errors: {self.errors}"
        assert self.foreign == [], f"requests outside the local server: {self.foreign}"


@pytest.fixture
def watch(browser, server):
    w = PageWatch(browser, server)
    yield w
    w.page.close()


def _shot(page, name: str, tmp_path: Path, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=full_page)
    shutil.copy(SHOTS / name, tmp_path / name)


# ------------------------------------------------------------------------------------------------ tests


def test_typed_email_suggests_the_python_students_top3(watch, bundle, server, tmp_path):
    w = watch
    w.open(server + "/")
    assert w.page.evaluate("crossOriginIsolated") is True, "COOP/COEP missing: wasm would run single-threaded"
    threads = min(4, w.page.evaluate("navigator.hardwareConcurrency"))
    runtime = w.page.locator("#stat-runtime").inner_text()
    assert runtime.startswith(f"wasm · {threads} thread") and "not cross-origin isolated" not in runtime
    box = w.page.locator("#email")
    box.fill("")
    box.press_sequentially(TYPED_EMAIL)  # real key events: exercises the debounce
    last = w.prediction_for(TYPED_EMAIL)
    assert last["ids"] == bundle.tokenizer.encode(TYPED_EMAIL)
    np.testing.assert_allclose(last["logits"], bundle.logits(TYPED_EMAIL), atol=1e-4)
    want = bundle.top3(TYPED_EMAIL)
    assert w.chip_intents() == want
    # Each chip shows the intent's first reply and a confidence; clicking one fills the reply box.
    chip = w.page.locator(f'#chips .chip[data-intent="{want[1]}"]')
    assert bundle.replies[want[1]][0] in chip.inner_text()
    assert "%" in chip.inner_text()
    chip.click()
    assert w.page.locator("#reply").input_value() == bundle.replies[want[1]][0]
    assert w.page.locator("#stat-latency").inner_text().endswith("ms (fp32)")
    size = bundle.meta["models"]["fp32"]["size_bytes"]
    assert f"{size / 1e6:.2f} MB" in w.page.locator("#stat-size").inner_text()
    _shot(w.page, "desktop-typed.png", tmp_path)
    w.clean()


def test_samples_and_teacher_panel(watch, bundle, server, tmp_path):
    w = watch
    w.open(server + "/")
    # The picker lists the curated samples; picking one predicts it.
    assert w.page.locator("#samples button").all_inner_texts() == [s["title"] for s in bundle.curated]
    for s in bundle.curated[2:4]:
        pill = w.page.locator(f'#samples button[data-sample="{s["id"]}"]')
        pill.click()
        w.prediction_for(s["text"])
        assert w.chip_intents() == bundle.top3(s["text"])
        assert pill.get_attribute("aria-pressed") == "true"
    # The panel lists every sample of teacher_predictions.json, with agreement computed here from the eager
    # student and the file.
    items = w.page.locator("#teacher li[data-sample]")
    w.page.wait_for_function(
        f"() => document.querySelectorAll('#teacher li[data-sample]').length === {len(bundle.samples)}"
    )
    titles = [items.nth(i).locator(".titem-title").inner_text() for i in range(len(bundle.samples))]
    assert titles[:2] == [bundle.curated[0]["title"], bundle.curated[1]["title"]]
    assert titles[2] == "<img src=x onerror=alert(2)>"  # derived from the subject, literally
    assert titles[3] == "Where are you? We are all here."
    for k, s in enumerate(bundle.samples):
        agree = bundle.top3(s["text"])[0] == s["top3"][0]["intent"]
        li = items.nth(k)
        assert li.get_attribute("data-agree") == str(agree).lower()
        assert ("agrees" if agree else "differs") in li.inner_text()
        teacher_chips = li.locator('.tchip[data-role="teacher"]').evaluate_all(
            "cs => cs.map(c => c.dataset.intent)"
        )
        assert teacher_chips == [t["intent"] for t in s["top3"]]
    # Clicking a panel item loads its email.
    items.nth(3).locator(".titem-head").click()
    w.prediction_for(bundle.samples[3]["text"])
    assert "current" in (items.nth(3).get_attribute("class") or "")
    n_agree = sum(bundle.top3(s["text"])[0] == s["top3"][0]["intent"] for s in bundle.samples)
    assert 0 < n_agree < len(bundle.samples)
    assert (
        f"Top-1 agrees on {n_agree}/{len(bundle.samples)} samples"
        in w.page.locator("#teacher-summary").inner_text()
    )
    # Markup from JSON shows literally and creates no element.
    assert w.page.locator("#samples img, #teacher img, #teacher b").count() == 0
    _shot(w.page, "desktop-samples.png", tmp_path, full_page=True)
    w.clean()


def test_no_reply_email_shows_no_chips_and_says_why(watch, bundle, server, tmp_path):
    from kdmobile.tasks.email.act_teacher import load_no_reply
    from kdmobile.tasks.email.metrics import softmax

    w = watch
    w.open(server + "/")
    text = load_no_reply()[0]  # a shipping notification from a no-reply sender
    assert bundle.abstains(text), "Python's rule must abstain on this email for the test to mean anything"
    w.page.locator("#email").fill(text)
    last = w.prediction_for(text)
    assert last["ids"] == bundle.tokenizer.encode(text)
    p_none = float(softmax(bundle.logits(text))[-1])
    assert last["abstained"] is True and last["intents"] == []
    assert abs(last["pNone"] - p_none) < 1e-5
    assert w.chip_intents() == []
    assert w.page.locator("#chips #abstain").inner_text() == bundle.abstain["reason"]
    assert "No reply needed" in bundle.abstain["reason"]
    # An email that wants a reply brings the chips back.
    w.page.locator("#email").fill(TYPED_EMAIL)
    w.prediction_for(TYPED_EMAIL)
    assert w.chip_intents() == bundle.top3(TYPED_EMAIL)
    _shot(w.page, "no-reply.png", tmp_path)
    w.clean()


def test_int8_switch_and_offline_once_loaded(watch, bundle, server, tmp_path):
    import onnxruntime as ort

    w = watch
    w.open(server + "/")
    w.page.context.set_offline(True)  # everything is loaded: no request may be needed from here on
    try:
        w.page.locator('#precision input[value="int8"]').check(force=True)
        text = bundle.samples[0]["text"]
        w.page.locator("#email").fill(text)
        last = w.prediction_for(text, "int8")
    finally:
        w.page.context.set_offline(False)
    sess = ort.InferenceSession(str(bundle.dir / bundle.meta["models"]["int8"]["file"]))
    want = sess.run(None, {bundle.meta["input_name"]: np.asarray([bundle.tokenizer.encode(text)], np.int64)})[
        0
    ][0]
    np.testing.assert_allclose(last["logits"], want, atol=1e-4)
    assert w.chip_intents() == [bundle.meta["intents"][i] for i in np.argsort(-want[:-1], kind="stable")[:3]]
    size = bundle.meta["models"]["int8"]["size_bytes"]
    assert w.page.locator("#stat-size").inner_text().startswith(f"{size / 1e6:.2f} MB")
    assert w.page.locator("#stat-latency").inner_text().endswith("ms (int8)")
    assert "(int8 student)" in w.page.locator("#teacher-summary").inner_text()
    w.clean()


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_email_shows_as_text_and_runs_nothing(watch, bundle, server, hostile, tmp_path):
    w = watch
    w.open(server + "/")
    box = w.page.locator("#email")
    box.fill("")
    box.press_sequentially(hostile)  # typed
    w.prediction_for(hostile)
    w.page.locator("#email").fill(hostile + "\n" + hostile)  # pasted
    last = w.prediction_for(hostile + "\n" + hostile)
    assert last["ids"] == bundle.tokenizer.encode(hostile + "\n" + hostile)
    assert w.chip_intents() == bundle.top3(hostile + "\n" + hostile)
    w.page.wait_for_timeout(300)  # give an injected onerror handler the time it would need
    assert box.input_value() == hostile + "\n" + hostile
    assert w.page.locator("img[src='x'], body script:not([src])").count() == 0
    assert w.page.evaluate("document.querySelectorAll('script').length") == 1  # only app.js
    _shot(w.page, f"hostile-{HOSTILE.index(hostile)}.png", tmp_path)
    w.clean()


def test_very_long_input_is_truncated_exactly_as_in_python(watch, bundle, server):
    w = watch
    w.open(server + "/")
    text = ("Ünïcode 😀 meeting tomorrow? 会議 " * 900)[:25000]
    w.page.locator("#email").fill(text)
    last = w.prediction_for(text)
    assert last["ids"] == bundle.tokenizer.encode(text)
    assert len(text) > bundle.tokenizer.config.max_chars
    assert (
        f"only the first {bundle.tokenizer.config.max_chars:,} are read"
        in w.page.locator("#char-count").inner_text()
    )
    assert w.chip_intents() == bundle.top3(text)
    w.clean()


def test_phone_viewport_is_readable(watch, bundle, server, tmp_path):
    w = watch
    w.page.set_viewport_size({"width": 390, "height": 844})
    w.open(server + "/")
    text = bundle.samples[0]["text"]
    w.prediction_for(text)  # the first sample is selected at start
    assert w.page.evaluate("document.documentElement.scrollWidth") <= 390, "horizontal scrolling on a phone"
    boxes = [c.bounding_box() for c in w.page.locator("#chips .chip").all()]
    assert len(boxes) == 3
    assert all(b["width"] > 300 for b in boxes), "chips should stack full-width on a phone"
    assert boxes[0]["y"] < boxes[1]["y"] < boxes[2]["y"]
    font = w.page.evaluate("parseFloat(getComputedStyle(document.querySelector('.chip-text')).fontSize)")
    assert font >= 14
    _shot(w.page, "phone.png", tmp_path)
    _shot(w.page, "phone-full.png", tmp_path, full_page=True)
    w.clean()


def test_missing_teacher_predictions_and_missing_bundle(browser, bundle, tmp_path):
    from kdmobile.serve import serving

    for broken, reason in [(None, "is missing"), ("{not json", "could not be read")]:
        no_teacher = tmp_path / f"no-teacher-{reason[:3]}"
        shutil.copytree(bundle.dir, no_teacher)
        (no_teacher / "teacher_predictions.json").unlink()
        if broken is not None:
            (no_teacher / "teacher_predictions.json").write_text(broken)
        with serving(DEMO, models=no_teacher) as url:
            w = PageWatch(browser, url)
            w.open(url + "/")
            panel = w.page.locator("#teacher").inner_text()
            assert "teacher suggestions are unavailable" in panel and reason in panel
            assert len(w.chip_intents()) == 3  # the student still works; samples come from samples.json
            local = json.loads((DEMO / "samples.json").read_text())["samples"]
            assert w.page.locator("#samples button").all_inner_texts() == [s["title"] for s in local]
            w.page.close()
    empty = tmp_path / "empty"
    empty.mkdir()
    with serving(DEMO, models=empty) as url:
        w = PageWatch(browser, url)
        w.page.on("console", lambda m: None)
        w.open(url + "/", state="error")
        assert "No model found" in w.page.locator("#banner").inner_text()
        assert "make demo" in w.page.locator("#banner").inner_text()
        assert w.page.locator("#email").is_disabled()
        _shot(w.page, "no-model.png", tmp_path)
        w.page.close()


def test_screenshot_helper_writes_the_readme_picture(browser, bundle, tmp_path):
    import struct

    from kdmobile.serve import screenshot

    out = screenshot(
        DEMO, tmp_path / "demo.png", models=bundle.dir, width=1000, height=700, sample=2, context=browser
    )
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1000, 700)
