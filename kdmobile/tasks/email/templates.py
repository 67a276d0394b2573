"""A tiny template language for the email generator: ``[a|b|c]`` choices and ``{slot}`` fills.

    python -c "from kdmobile.tasks.email.templates import expand; import random; print(expand('[Hi|Hey] {name}, [can|could] we meet {day}?', random.Random(0)))"

- ``[a|b|c]`` picks one alternative uniformly; alternatives nest (``[a [b|c]|d]``); ``[x|]`` is optional.
- ``{slot}`` takes a value from :data:`SLOTS`; within one email a slot keeps its value (``Bindings``), so the
  greeting and the body name the same person. ``{slot2}``-style names are separate slots with the same
  vocabulary (``{day2}`` is a second, independent day).
- Slot values are themselves templates (they may contain ``[...]``), expanded when first bound.
"""

from __future__ import annotations

import random
import re

from kdmobile.tasks.email.vocab import SLOTS

_SLOT = re.compile(r"\{([a-z_]+?)(\d?)\}")


class TemplateError(ValueError):
    """A template is malformed (unbalanced brackets) or names an unknown slot."""


class Bindings:
    """Slot values of one email: sampled on first use, then reused."""

    def __init__(self, rng: random.Random, fixed: dict[str, str] | None = None) -> None:
        self.rng = rng
        self.values: dict[str, str] = dict(fixed or {})

    def get(self, slot: str, index: str = "") -> str:
        key = slot + index
        if key not in self.values:
            try:
                vocab = SLOTS[slot]
            except KeyError:
                raise TemplateError(f"unknown slot {{{slot}}}; known: {', '.join(sorted(SLOTS))}") from None
            self.values[key] = _choices(self.rng.choice(vocab), self.rng)
        return self.values[key]


def _choices(text: str, rng: random.Random) -> str:
    """Resolve every ``[a|b]`` group, innermost first."""
    while "[" in text:
        end = text.find("]")
        if end < 0:
            raise TemplateError(f"unbalanced '[' in template: {text!r}")
        start = text.rfind("[", 0, end)
        if start < 0:
            raise TemplateError(f"unbalanced ']' in template: {text!r}")
        options = text[start + 1 : end].split("|")
        text = text[:start] + rng.choice(options) + text[end + 1 :]
    if "]" in text:
        raise TemplateError(f"unbalanced ']' in template: {text!r}")
    return text


def expand(template: str, rng: random.Random, bindings: Bindings | None = None) -> str:
    """Expand one template: choices first, then slots (slot values may hold choices of their own)."""
    b = bindings or Bindings(rng)
    text = _choices(template, rng)
    for _ in range(3):  # slot values may name slots themselves ("the conference in {city}")
        if not _SLOT.search(text):
            break
        text = _SLOT.sub(lambda m: b.get(m.group(1), m.group(2)), text)
    if "{" in text or "}" in text:
        raise TemplateError(f"stray brace in template: {template!r}")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def slots_of(template: str) -> set[str]:
    """The slot names a template uses (for validation in tests)."""
    return {m.group(1) for m in _SLOT.finditer(template)}
