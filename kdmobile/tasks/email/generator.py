"""A seeded generator of varied, labelled emails for the smart-reply task.

    python -m kdmobile.tasks.email.generator --n 5 --seed 0

Each email picks a scenario (:mod:`kdmobile.tasks.email.scenarios`), fills its templates with people,
dates, times, places and products (:mod:`kdmobile.tasks.email.vocab`), and wraps the request in the
things real email carries: greetings, small talk, background sentences that mention other topics,
sign-offs, signatures, legal disclaimers, quoted threads (``On Mon, … wrote:`` / ``> …``), forwarded
headers, lists, P.S. lines. A layout (terse, standard, long with the request buried, automated notice,
reply chain, forward, list) and surface styles (lower case, texting, non-native grammar, typos, emoji,
no line breaks) are drawn per email. Everything follows one ``random.Random(seed)``: the same seed gives
the same emails, on every platform.

The label of an email is drawn from its scenario's intent weights; ``targets`` keeps the weights
themselves (normalised), which the teacher trains on as a soft target.
"""

from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass, field

from kdmobile.tasks.email.scenarios import SCENARIOS, Scenario
from kdmobile.tasks.email.templates import Bindings, expand

GREETINGS = [
    "Hi {name},",
    "Hi {name},",
    "Hello {name},",
    "Dear {name},",
    "Dear {title} {last},",
    "Hey {name}!",
    "Hey {name},",
    "Hey,",
    "Hi,",
    "Hi all,",
    "Hello team,",
    "Hi team,",
    "Good morning {name},",
    "Good afternoon,",
    "Morning!",
    "{name},",
    "{name} -",
    "Hiya,",
    "Hi there,",
    "Dear Sir or Madam,",
    "Dear colleagues,",
    "To whom it may concern,",
    "Dear all,",
    "Greetings,",
    "Hello,",
    "Hi {name} and {person},",
    "Dear {name} {last},",
    "Yo {name}",
    "Evening {name},",
    "Hello again,",
    "Hi guys,",
    "Dear Team,",
    "Hola {name},",
    "Bonjour {name},",
    "Hallo {name},",
    "Ciao {name}!",
    "Olá {name},",
    "Hej {name},",
    "Dear Mr. {last},",
    "Dear Ms. {last},",
    "Respected Sir,",
    "Dear {title} {name},",
    "Hi {name}, hi {person},",
    "{name}!!",
    "Afternoon all,",
    "Hello everyone,",
    "Dear valued customer,",
    "Hi friend,",
]
FORMAL_GREETINGS = [
    "Dear {title} {last},",
    "Dear Sir or Madam,",
    "Dear {name},",
    "To whom it may concern,",
    "Dear colleagues,",
    "Dear customer,",
    "Dear parents and carers,",
    "Dear residents,",
    "Dear {name} {last},",
    "Good morning,",
]
OPENERS = [
    "Hope you're well.",
    "I hope this email finds you well.",
    "Hope you had a nice weekend!",
    "Happy Monday!",
    "Happy Friday!",
    "Sorry to bother you[ again|].",
    "Quick one.",
    "Long time no speak!",
    "Hope all is well [with you|on your end|].",
    "I hope you are doing well.",
    "Thanks for getting back to me.",
    "Good to hear from you.",
    "Hope the week is going well.",
    "I trust you are well.",
    "Following up on our conversation earlier.",
    "Further to our call [today|yesterday|on {day}],",
    "Sorry for the long email.",
    "Writing from my phone so excuse the brevity.",
    "Hope you survived the heatwave!",
    "Hope you had a good trip back from {city}.",
    "As discussed[ this morning|],",
    "I'm reaching out regarding {topic}.",
    "I hope you and the family are well.",
    "Just a quick note.",
    "Apologies for the delay in getting back to you.",
    "Hope you enjoyed the long weekend.",
]
# Background sentences: most are neutral; some mention another topic's vocabulary as a distractor.
CONTEXT = [
    "Things have been [crazy|pretty] busy with {project}.",
    "We're still settling into the new office.",
    "The weather in {city} has been [awful|amazing|unpredictable] this week.",
    "{person} says hi, by the way.",
    "I'm [writing from the train|on my phone], so excuse typos.",
    "As you know, we've been reorganising the {team} team.",
    "The kids are back at school now, so things are calmer.",
    "I finally got around to clearing my inbox.",
    "Last week's {meeting} with {company} went [well|okay|better than expected].",
    "We had a [long|good] discussion about {topic} [on {day}|yesterday|earlier].",
    "Our [quarter|month|week] has been [hectic|slow|busy] so far.",
    "I just got back from [a conference|holiday|a trip] in {city}.",
    "{company} [confirmed|mentioned|told us] that the [timeline|scope|budget] for {project} [hasn't changed|is unchanged|is still being discussed].",
    "The {team} team is [short-staffed|hiring|at an offsite] [this week|at the moment|this month].",
    "[I've|We've] been [juggling|working on] a lot of things, including {project}.",
    "[As you may have heard|As you might know], {person} is [moving to|leaving for|now based in] {city}.",
    "[The|Our] [new|] [coffee machine|printer|parking system] is finally working.",
    "[We|I] [moved|switched] [to|over to] {app} [last month|recently|for everything].",
    "[By the way|Btw|Also], the invoice from last month [is sorted|was paid|has been settled].",
    "[By the way|Also], thanks again for [the coffee|the tips|your help] [last week|earlier].",
    "[The|Our] {meeting} on {day} [went|ran] [long|over|well].",
    "[I'm|We're] [working from home|working remotely|in {city}] [this week|today|until {day}].",
    "[This|It] [follows|relates to] [our|the] [discussion|email thread|conversation] [about|on] {topic}.",
    "[Reference|Ref|Our ref]: {order_no}.",
    "[I|We] [understand|appreciate] [you're|you are] [busy|very busy|travelling] [at the moment|this week].",
    "[The deadline|Timing] [is|isn't] [tight|flexible] [on this one|].",
    "[As a reminder|For context], {project} [started|kicked off] in {date}.",
    "The [figures|numbers|details] are [in the attachment|below|in the shared folder].",
    "[Sorry|Apologies] if [this|you] [already|] [got|received] [this|a similar email].",
    "[The|Our] [landlord|manager|principal|director] [asked|wanted] me to [pass this on|let you know|send this round].",
    "[My|The] [laptop|internet] [has been|was] [acting up|slow] [all week|today], so [sorry if|apologies in case] [this arrives twice|this is late].",
    "It was [great|lovely|nice] to [see you|meet you|catch up] at {event}.",
    "I [spoke|talked] to {person} [about|regarding] {topic} [this morning|yesterday] [and she agrees|and he agrees|].",
    "[Our|The] [budget|headcount|timeline] for next year [is|was] [finalised|approved|cut] [last week|recently].",
    "[We|I] [spent|have spent] most of [the week|yesterday|the morning] [on|dealing with] [the audit|customer calls|the quarterly numbers|the move].",
    "[As you know|As you may remember], [we|I] [met|spoke] [at|during] {event} [last year|in {city}|a while ago].",
    "[My|Our] [son|daughter|partner|dog] [has been|was] [keeping me busy|unwell|on holiday] [this week|lately].",
    "[I'm|We're] [trying|hoping] to [wrap up|finish|close] [everything|a few things] before [the holidays|the end of the quarter|my leave].",
    "[Things|Work] [at|on] {project} [are|is] [moving|going] [slowly|well|faster than expected].",
    "[I|We] [just|] [came|got] back from [the {meeting} with {company}|a site visit|lunch with {person}].",
    "[The|This] [issue|topic|question] [came up|was raised] [at|during] [the {meeting}|the board meeting|yesterday's call].",
    "[I'm|I am] [copying|cc'ing|looping in] {person} [for visibility|who can help|as she is involved|as he is involved].",
    "[Sorry|Apologies], [my English|my writing] is not [perfect|so good].",
    "[Espero que estés bien|J'espère que tu vas bien|Ich hoffe, es geht dir gut|Spero tutto bene].",
    "[I|We] [have|'ve] [already|] [tried|checked|asked] [twice|several times|everywhere] [without luck|with no answer|].",
    "[Honestly|Frankly], [this|it] [has been|is] [frustrating|a bit of a mess|a long process].",
    "[As per|Per] my [last|previous] email, [I|we] [am|are] still [waiting|expecting an answer].",
    "[The|Our] [office|team|school|building] [will be|is] [closed|busy|quiet] [on {day}|next week|this afternoon].",
    "[Quick background|Some context|For background]: {project} [started|was launched] [last year|in {date}] and [is now|has been] [in its second phase|going well|under review].",
    "I've attached [a few|some] [screenshots|documents|photos|notes] [for reference|in case they help].",
    "[It's|It is] [raining|snowing|sunny|freezing] here in {city}[, typical!|].",
    "[We are|We're] [currently|at present] [reviewing|restructuring|consolidating] [our|the] [supplier base|processes|reporting lines] [across|in] [all regions|the {team} department|{city}].",
    "[In line with|Following|As part of] [our|the] [annual planning|quarterly review|audit recommendations|new strategy], [several|a number of] [changes|initiatives] [are|have been] [under way|introduced].",
    "[I am|I'm] [writing|reaching out] [on behalf of|for] [{person} {last}|the {team} team|{company}|the parents' committee|the residents' association].",
    "[Please|Kindly] [note|be aware] that [this|the following] [is|relates to] [ticket|case|reference] {order_no}.",
    "[The|Our] [figures|results|numbers] for [Q1|Q2|Q3|Q4|last month|the first half] [came in|were] [above|below|roughly in line with] [forecast|expectations|target].",
    "[We|I] [had|held] [a|an] [productive|long|good] [session|workshop|conversation] with [the client|{company}|the board|the steering group] [on {day}|last week|this morning].",
    "[Several|A few|Some] [colleagues|customers|parents|residents] [have raised|raised|mentioned] [concerns|questions|the issue] [about|regarding] {topic}.",
    "[As previously communicated|As mentioned in my last email|As agreed at the last meeting], [we|the team] [will|plan to] [move forward|proceed] [with|on] {project}.",
    "[Thank you|Thanks] for [your|the] [patience|cooperation|understanding|support] [over the past few weeks|during this period|while we sorted this out].",
    "[Our|The] [new|updated] [website|portal|booking system|intranet] [goes live|launches|went live] [on {date}|next week|last month].",
    "[It has been|It's been] [a busy|a difficult|an exciting|a long] [few weeks|month|quarter|year] [for all of us|for the team|here at {company}].",
    "[My|Our] [previous|last] [email|message|letter] [may have|might have] [ended up in your spam folder|gone astray|been missed].",
    "[You may remember|You might recall] [that|] [we|I] [discussed|talked about|spoke about] [this|{topic}] [at|during] [the last {meeting}|{event}|our call in {date}].",
    "[Everything else|The rest] [is|is going] [on track|fine|according to plan] [for|with] {project}.",
    "[I hope|Hope] [the move|the new job|the renovation|the new baby|your trip] [went|is going] well!",
    "[We|I] [spoke|met] [briefly|] at {event} [in {city}|last year|a few months ago].",
    "[Our|The] [team|department|school|practice] [has grown|is growing|has changed] [a lot|quite a bit] [since|over] [last year|the summer|the past few months].",
    "[I|We] [would|'d] [really|] [appreciate|value] [your|any] [thoughts|input|advice|help] [on|with] this.",
]
CLOSERS = [
    "Let me know.",
    "Let me know what you think.",
    "Thanks in advance!",
    "Thanks!",
    "Thanks a lot.",
    "Any questions, just shout.",
    "Looking forward to hearing from you.",
    "Please let me know [if you have any questions|if anything is unclear|].",
    "Thank you for your [time|help|understanding|cooperation].",
    "Talk soon.",
    "Appreciate it!",
    "Have a great [day|weekend|week]!",
    "No rush.",
    "Many thanks.",
    "I look forward to your reply.",
    "Thanks for your patience.",
    "Cheers!",
]
SIGNOFFS = [
    "Thanks,",
    "Best,",
    "Cheers,",
    "Regards,",
    "Kind regards,",
    "Best regards,",
    "Many thanks,",
    "Thanks in advance,",
    "Warm regards,",
    "Talk soon,",
    "Sincerely,",
    "Yours sincerely,",
    "BR,",
    "Rgds,",
    "Thx,",
    "Love,",
    "Speak soon,",
    "All the best,",
    "With thanks,",
    "Best wishes,",
    "Cheers",
    "--",
    "xx",
    "Yours,",
    "Saludos,",
    "Viele Grüße,",
    "Merci,",
    "Gracias!",
    "Danke!",
    "Grazie mille,",
    "Cordialement,",
    "Un abrazo,",
    "Liebe Grüße,",
    "Obrigado,",
    "Best regards and thanks in advance,",
    "Kind regards and have a nice weekend,",
    "Thanks & regards,",
    "Looking forward,",
    "Respectfully,",
    "Ta,",
]
SIGNATURES = [
    "{me} {last}\n{role} | {company}\n{phone}",
    "--\n{me}\n{company}",
    "{me} {last}, {role}\n{company} · {city}\nM: {phone}",
    "{me} {last}\n{role}\n{company}\nwww.example.com",
    "Sent from my iPhone",
    "Sent from my Android phone",
    "Get Outlook for iOS",
    "{me} {last} | {role} | {company} | {city}",
    "{me}\n(she/her)",
    "{me}\n(he/him)",
    "The {company} Team",
]
DISCLAIMERS = [
    "CONFIDENTIALITY NOTICE: This e-mail and any attachments are confidential and may be privileged. If you are not the intended recipient, please notify the sender immediately and delete it.",
    "Please consider the environment before printing this email.",
    "This email has been scanned for viruses and malware.",
    "My working hours may not be your working hours. Please do not feel obliged to reply outside of yours.",
    "This message and any attachment are intended solely for the addressee. Any views expressed are those of the sender.",
    "{company} Ltd, registered in England and Wales, company no. 0834[12|77|90]21.",
    "This is an automated message, please do not reply to this email.",
    "You are receiving this email because you are a customer of {company}. Privacy policy | Unsubscribe",
]
AUTOMATED_HEADERS = [
    "This is an automated [message|notification] from {company}.",
    "[Notification|Alert|Notice] from {app}",
    "** Please do not reply to this email **",
    "{company} Customer Service",
    "Message from {company}",
    "[Automatic|Automated] reminder",
]
NOTE_INSTRUCTIONS = [
    "Can you [take care of|handle|deal with|look into] this?",
    "Could you [handle|pick up] this [one|please]?",
    "Please [action|handle|follow up on] [this|the below].",
    "Can you [reply to|get back to] them?",
    "[See below|Forwarding this], can you [sort it out|deal with it]?",
]
NOTE_FYI = [
    "FYI[ - see below|].",
    "See below.",
    "Forwarding [this|the below] [for your information|FYI|in case you missed it].",
    "[Thought you'd want to see this|Look at this]!",
    "Fwd.",
    "",
]
# Notes written above a quoted message (intent they add, or "" when the quoted request decides alone).
BUMP_NOTES = [
    ("", "See below."),
    ("", "[Please see|See] [the message|the email|my note] below[ and advise| and let me know|]."),
    ("", "Any thoughts on [this|the below]?"),
    ("", "Adding {person}[ who can help| for visibility| to the thread]."),
    ("", "[Looping in|Cc'ing] {person}."),
    ("", "[Resending|Re-sending] [in case you missed it|as I think it got lost]."),
    ("", "Thoughts?"),
    ("apologize_delay", "[Bumping|Bump|Bumping this up|Bringing this back to the top of your inbox]."),
    ("apologize_delay", "[Gentle|Friendly|Quick] reminder [on|about] the below[, thanks|]."),
    ("apologize_delay", "Any update [on this|here]?"),
    ("will_do", "Can you [help with|handle|take care of] this?"),
    ("will_do", "[Could you|Can you] [reply to|respond to|deal with] [this|them] [please|today]?"),
]
TEXTING = [
    (r"\byou\b", "u"),
    (r"\byour\b", "ur"),
    (r"\bplease\b", "pls"),
    (r"\bthanks\b", "thx"),
    (r"\btomorrow\b", "tmrw"),
    (r"\btonight\b", "tonite"),
    (r"\bbecause\b", "cuz"),
    (r"\bokay\b", "ok"),
    (r"\bpeople\b", "ppl"),
    (r"\bbefore\b", "b4"),
    (r"\bwith\b", "w/"),
    (r"\babout\b", "abt"),
    (r"\bmessage\b", "msg"),
    (r"\bmeeting\b", "mtg"),
    (r"\bare\b", "r"),
    (r"\bsomething\b", "smth"),
    (r"\bgoing to\b", "gonna"),
    (r"\bwant to\b", "wanna"),
    (r"\bI don't know\b", "idk"),
    (r"\bas soon as possible\b", "asap"),
    (r"\bby the way\b", "btw"),
    (r"\bto be honest\b", "tbh"),
]
NON_NATIVE = [
    (r"\bCould you\b", "Can you please"),
    (r"\bcould you\b", "can you please"),
    (r"\bI would like to\b", "I want to"),
    (r"\bI'd like to\b", "I am wanting to"),
    (r"\blet me know\b", "inform me"),
    (r"\bLet me know\b", "Kindly inform me"),
    (r"\bget back to\b", "revert back to"),
    (r"\bASAP\b|\basap\b", "at the earliest"),
    (r"\bI haven't\b", "I did not"),
    (r"\bDid you\b", "You did"),
    (r"\bDo you\b", "You"),
    (r"\bplease\b", "kindly"),
    (r"\bsend\b", "send to"),
    (r"\bdiscuss\b", "discuss about"),
    (r"\bdoes\b", "do"),
]
EMOJI = [
    "🙂",
    "😊",
    "👍",
    "🎉",
    "🙏",
    "😅",
    "😀",
    "🤞",
    "✅",
    "📎",
    "☕",
    "😂",
    "❤️",
    "👋",
    ":)",
    ":-)",
    ";)",
    ":D",
]
KEYBOARD = {
    "a": "qs",
    "b": "vn",
    "c": "xv",
    "d": "sf",
    "e": "wr",
    "f": "dg",
    "g": "fh",
    "h": "gj",
    "i": "uo",
    "j": "hk",
    "k": "jl",
    "l": "k",
    "m": "n",
    "n": "bm",
    "o": "ip",
    "p": "o",
    "r": "et",
    "s": "ad",
    "t": "ry",
    "u": "yi",
    "w": "qe",
    "y": "tu",
}
LIST_INTROS = [
    "A few things:",
    "Quick list:",
    "Points for today:",
    "Agenda:",
    "Updates:",
    "Some items:",
    "Details:",
    "Background:",
    "Summary:",
    "For reference:",
    "",
]
LAYOUTS = {  # layout -> weight
    "terse": 0.14,
    "standard": 0.30,
    "long": 0.18,
    "automated": 0.07,
    "reply_chain": 0.12,
    "forward": 0.06,
    "list": 0.05,
    "ps": 0.04,
    "multi": 0.04,
}


@dataclass(frozen=True)
class GeneratedEmail:
    """One generated email: ``label`` is an intent id; ``targets`` maps intent ids to probabilities."""

    text: str
    label: str
    targets: dict[str, float] = field(hash=False)
    scenario: str
    layout: str


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys], k=1)[0]


def _normalise(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items() if v > 0}


def _mix(a: dict[str, float], b: dict[str, float], wa: float) -> dict[str, float]:
    a, b = _normalise(a), _normalise(b)
    out = {k: wa * v for k, v in a.items()}
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + (1 - wa) * v
    return out


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


class EmailGenerator:
    """Draws labelled emails; ``EmailGenerator(seed).generate(n)`` is deterministic for a seed."""

    def __init__(self, seed: int = 0, scenarios: tuple[Scenario, ...] = SCENARIOS) -> None:
        self.seed = seed
        self.scenarios = scenarios

    def generate(self, n: int) -> list[GeneratedEmail]:
        rng = random.Random(self.seed)
        return [self.sample(random.Random(rng.getrandbits(64))) for _ in range(n)]

    # -- one email ---------------------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> GeneratedEmail:
        sc = rng.choice(self.scenarios)
        name = sc.name
        layout = _weighted(rng, LAYOUTS)
        b = Bindings(rng)
        weights = dict(sc.intents)
        core = self._core(sc, rng, b, extra=0.35 if layout != "terse" else 0.1)

        if layout == "terse":
            body = [core] if rng.random() < 0.6 else [expand(rng.choice(GREETINGS), rng, b), core]
            if rng.random() < 0.4:
                body.append(expand(rng.choice(SIGNOFFS + ["{me}", "- {me}", "Thx", "ty"]), rng, b))
            text = self._join(body, rng, compact=True)
        elif layout == "automated":
            parts = []
            if rng.random() < 0.7:
                parts.append(expand(rng.choice(AUTOMATED_HEADERS), rng, b))
            if rng.random() < 0.6:
                parts.append(expand(rng.choice(FORMAL_GREETINGS + ["Hello {name},", "Hi {name},"]), rng, b))
            parts.append(core)
            parts += self._contexts(sc, rng, b, rng.randint(0, 2))
            if rng.random() < 0.6:
                parts.append(
                    expand(
                        rng.choice(
                            [
                                "Regards,\n{company}",
                                "The {company} Team",
                                "{company} Support",
                                "Thank you,\n{company}",
                                "{company} | {city}",
                            ]
                        ),
                        rng,
                        b,
                    )
                )
            if rng.random() < 0.6:
                parts.append(expand(rng.choice(DISCLAIMERS), rng, b))
            text = self._join(parts, rng)
        elif layout == "forward":
            inner_sc = rng.choice(self.scenarios)
            inner = self._standard(
                inner_sc, rng, Bindings(rng), self._core(inner_sc, rng, Bindings(rng)), short=True
            )
            if rng.random() < 0.55:
                note = expand(rng.choice(NOTE_INSTRUCTIONS), rng, b)
                weights = _mix(
                    {"will_do": 5, "ask_details": 1, "acknowledge_receipt": 1}, inner_sc.intents, 0.7
                )
                name = "forward_instruction"
            else:
                note = expand(rng.choice(NOTE_FYI), rng, b)
                weights = _mix(inner_sc.intents, {"thanks": 1, "acknowledge_receipt": 1}, 0.8)
                name = inner_sc.name
            header = expand(
                "[---------- Forwarded message ---------|Begin forwarded message:|-----Original Message-----]\n"
                "From: {person} {last} <{person}@example.com>\nDate: {weekday}, {date} at {time}\n"
                "Subject: [Re: |Fwd: |]{topic}\nTo: {me} <{me}@example.com>",
                rng,
                b,
            )
            parts = [p for p in (note, expand("{me}", rng, b) if rng.random() < 0.3 else "") if p]
            text = "\n\n".join(parts + [header, inner])
        elif layout == "reply_chain" and rng.random() < 0.3:
            # A short note on top of the quoted message that carries the request.
            kind, note = rng.choice(BUMP_NOTES)
            note = expand(note, rng, b)
            if rng.random() < 0.5:
                note += "\n\n" + expand(rng.choice(SIGNOFFS), rng, b) + "\n" + expand("{me}", rng, b)
            quoted = self._standard(sc, rng, Bindings(rng), core, short=rng.random() < 0.5)
            text = note + "\n\n" + self._quote(quoted, rng, b)
            if kind:
                weights = _mix(weights, {kind: 1.0}, 0.7)
        else:
            text = self._standard(sc, rng, b, core, long=layout == "long", as_list=layout == "list")
            if layout == "reply_chain":
                quoted_sc = rng.choice(self.scenarios)
                quoted = self._standard(
                    quoted_sc, rng, Bindings(rng), self._core(quoted_sc, rng, Bindings(rng)), short=True
                )
                text = text + "\n\n" + self._quote(quoted, rng, b)
            elif layout == "multi":  # a second request in the body: both intents fit
                other = rng.choice(self.scenarios)
                second = self._core(other, rng, b)
                joiner = rng.choice(["\n\n", " Also, ", "\n\nAnother thing: ", " Separately, ", "\n\nAnd "])
                if joiner.strip() in ("Also,", "Separately,", "And") and not re.match(r"I\b", second):
                    second = second[:1].lower() + second[1:]
                text = text.replace(core, core + joiner + second, 1)
                weights = _mix(weights, other.intents, 0.6)
            elif layout == "ps":
                other = rng.choice(self.scenarios)
                ps = self._core(other, rng, b)
                text = text + "\n\n" + rng.choice(["P.S. ", "PS: ", "PS ", "P.S. Also, ", "Oh, and "]) + ps
                weights = _mix(weights, other.intents, 0.75)

        text = self._style(text, rng)
        # The hard label favours the scenario's main intent (weights squared); targets keep the spread.
        label = _weighted(rng, {k: v * v for k, v in weights.items()})
        return GeneratedEmail(
            text=text, label=label, targets=_normalise(weights), scenario=name, layout=layout
        )

    def _core(self, sc: Scenario, rng: random.Random, b: Bindings, extra: float = 0.3) -> str:
        core = _cap(expand(rng.choice(sc.core), rng, b))
        if len(sc.core) > 1 and rng.random() < extra:
            second = _cap(expand(rng.choice(sc.core), rng, b))
            if second != core:
                core = core + " " + second
        return core

    def _contexts(self, sc: Scenario, rng: random.Random, b: Bindings, k: int) -> list[str]:
        out = []
        for _ in range(k):
            pool = sc.context if sc.context and rng.random() < 0.4 else CONTEXT
            out.append(_cap(expand(rng.choice(pool), rng, b)))
        return out

    def _standard(
        self,
        sc: Scenario,
        rng: random.Random,
        b: Bindings,
        core: str,
        *,
        long: bool = False,
        short: bool = False,
        as_list: bool = False,
    ) -> str:
        parts: list[str] = []
        if rng.random() < 0.2:
            subject = expand(
                rng.choice(sc.subject) if sc.subject and rng.random() < 0.7 else "{subject_topic}", rng, b
            )
            parts.append(rng.choice(["Subject: ", "Subject: ", "Re: ", "SUBJECT: ", "Subj: "]) + subject)
        if rng.random() < 0.85:
            formal = rng.random() < 0.25
            parts.append(expand(rng.choice(FORMAL_GREETINGS if formal else GREETINGS), rng, b))
        if rng.random() < (0.6 if long else 0.3) and not short:
            parts.append(_cap(expand(rng.choice(OPENERS), rng, b)))
        n_before = (
            rng.randint(2, 9)
            if long
            else (rng.randint(0, 1) if short else rng.choices([0, 1, 2, 3], [4, 3, 2, 1])[0])
        )
        n_after = rng.randint(0, 4) if long else (0 if short else rng.choices([0, 1, 2], [3, 2, 1])[0])
        before = self._contexts(sc, rng, b, n_before)
        after = self._contexts(sc, rng, b, n_after)
        if as_list:
            inside = rng.random() < 0.5  # the request is one of the items, or a paragraph around the list
            items = before + ([core] if inside else []) + after
            if len(items) < 3:
                items += self._contexts(sc, rng, b, 3 - len(items))
            rng.shuffle(items)
            bullet = rng.choice(["- ", "* ", "• ", "{i}. ", "{i}) "])
            lines = [bullet.replace("{i}", str(i + 1)) + it for i, it in enumerate(items)]
            intro = rng.choice(LIST_INTROS)
            block = ([intro] if intro else []) + ["\n".join(lines)]
            if inside:
                parts += block
            elif rng.random() < 0.5:
                parts += [core, *block]
            else:
                parts += [*block, core]
        else:
            paragraph = before + [core] + after
            if long and rng.random() < 0.5:
                cut = rng.randint(1, len(paragraph) - 1) if len(paragraph) > 1 else 1
                parts += [" ".join(paragraph[:cut]), " ".join(paragraph[cut:])]
            else:
                parts.append(" ".join(paragraph))
        if rng.random() < (0.35 if not short else 0.15):
            parts.append(_cap(expand(rng.choice(CLOSERS), rng, b)))
        if rng.random() < 0.75:
            signoff = expand(rng.choice(SIGNOFFS), rng, b)
            name = expand(rng.choice(["{me}", "{me}", "{me} {last}", "{me}", "-{me}"]), rng, b)
            parts.append(signoff + "\n" + name if signoff not in ("--",) else "--\n" + name)
        if rng.random() < (0.35 if long else 0.15) and not short:
            parts.append(expand(rng.choice(SIGNATURES), rng, b))
        if rng.random() < (0.2 if long else 0.06) and not short:
            parts.append(expand(rng.choice(DISCLAIMERS), rng, b))
        return self._join(parts, rng)

    def _quote(self, text: str, rng: random.Random, b: Bindings) -> str:
        style = rng.randrange(3)
        if style == 0:
            head = expand(
                "On {weekday}, {date} at {time}, {person} {last} <{person}@example.com> wrote:", rng, b
            )
            return head + "\n" + "\n".join("> " + line if line else ">" for line in text.split("\n"))
        if style == 1:
            head = expand(
                "[-----Original Message-----|________________________________]\nFrom: {person} {last}\n"
                "Sent: {weekday}, {date} {time}\nTo: {name}\nSubject: Re: {topic}",
                rng,
                b,
            )
            return head + "\n\n" + text
        return (
            expand("On {date}, {person} wrote:", rng, b)
            + "\n"
            + "\n".join("> " + line for line in text.split("\n"))
        )

    @staticmethod
    def _join(parts: list[str], rng: random.Random, compact: bool = False) -> str:
        parts = [p for p in parts if p]
        if compact or rng.random() < 0.12:
            return " ".join(p.replace("\n", " ") for p in parts)
        sep = "\n\n" if rng.random() < 0.6 else "\n"
        return sep.join(parts)

    # -- surface styles ----------------------------------------------------------------------------------
    def _style(self, text: str, rng: random.Random) -> str:
        if rng.random() < 0.08:
            for pat, rep in NON_NATIVE:
                if rng.random() < 0.6:
                    text = re.sub(pat, rep, text)
            text = re.sub(r"\b(the|a) ", lambda m: "" if rng.random() < 0.3 else m.group(0), text)
        if rng.random() < 0.1:
            for pat, rep in TEXTING:
                if rng.random() < 0.7:
                    text = re.sub(pat, rep, text, flags=re.IGNORECASE)
            text = text.lower()
        elif rng.random() < 0.07:
            text = text.lower()
        if rng.random() < 0.25:
            text = self._typos(text, rng, k=rng.randint(1, 4))
        if rng.random() < 0.1:
            text = re.sub(r"[.,;:]", lambda m: "" if rng.random() < 0.7 else m.group(0), text)
        if rng.random() < 0.08:
            text = text.replace("!", "!!") if "!" in text else text.replace("?", "??")
        if rng.random() < 0.1:
            pos = text.find("\n")
            e = rng.choice(EMOJI)
            text = text + " " + e if pos < 0 or rng.random() < 0.5 else text[:pos] + " " + e + text[pos:]
        if rng.random() < 0.03:
            words = text.split(" ")
            i = rng.randrange(len(words))
            words[i] = words[i].upper()
            text = " ".join(words)
        return text

    @staticmethod
    def _typos(text: str, rng: random.Random, k: int) -> str:
        words = text.split(" ")
        candidates = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()]
        for i in rng.sample(candidates, min(k, len(candidates))):
            w = words[i]
            j = rng.randrange(1, len(w) - 1)
            op = rng.randrange(4)
            if op == 0:
                w = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
            elif op == 1:
                w = w[:j] + w[j + 1 :]
            elif op == 2:
                w = w[:j] + w[j] + w[j:]
            else:
                near = KEYBOARD.get(w[j].lower())
                if near:
                    w = w[:j] + rng.choice(near) + w[j + 1 :]
            words[i] = w
        return " ".join(words)


def generate(n: int, seed: int = 0) -> list[GeneratedEmail]:
    """``n`` labelled emails, deterministic for ``seed``."""
    return EmailGenerator(seed).generate(n)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Print generated emails.")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for e in generate(args.n, args.seed):
        print(f"=== {e.scenario} / {e.layout} -> {e.label}  {e.targets}\n{e.text}\n")


if __name__ == "__main__":
    main()
