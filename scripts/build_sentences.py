"""Rebuild sentences.txt: public-domain prose from Newton's Opticks plus composed sentences.

Run from the repository root: `python scripts/build_sentences.py [path/to/Opticks.txt]`.
The Opticks text (Project Gutenberg eBook #33504, public domain) ships with apache-tvm's
tvm_ffi package (3rdparty/libbacktrace/Isaac.Newton-Opticks.txt), so it is on every machine that
can run Sparrow. The composed sentences are generated from the word lists below with a fixed seed.
Output is deterministic.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "models" / "data" / "sentences.txt"
N_COMPOSED = 2900


def find_opticks() -> Path:
    import tvm_ffi

    root = Path(tvm_ffi.__file__).parent
    hits = sorted(root.rglob("Isaac.Newton-Opticks.txt"))
    if not hits:
        raise SystemExit(
            "Isaac.Newton-Opticks.txt not found under the tvm_ffi package; pass a path"
        )
    return hits[0]


def opticks_sentences(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = re.sub(r"\s+", " ", para).replace("_", "").strip()
        if len(para) < 40:
            continue
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", para):
            s = s.strip()
            if not 25 <= len(s) <= 220 or not re.match(r"^[A-Z]", s) or not re.search(r"[.!?]$", s):
                continue
            # Skip figure references, formulas, archaic elisions, letter labels and credits.
            if re.search(r"[\[\]{}()0-9=+*/\\|<>@#$%&^~`\"]", s):
                continue
            if re.search(r"'d\b|\b(Exper|Fig|Prop|Part|Book|Edit|Lem|Ax|Plate|Obs)\b", s):
                continue
            if re.search(r"\b[A-Z]{2,}\b|(?<![\w'])[B-HJ-Zb-z](?![\w'])|[^\x20-\x7e]", s):
                continue
            if "gutenberg" in s.lower() or "www" in s.lower():
                continue
            if s not in out:
                out.append(s)
    return out


W = {
    "name": [
        "Alice",
        "Ben",
        "Carla",
        "David",
        "Emma",
        "Frank",
        "Grace",
        "Henry",
        "Isabel",
        "Jack",
        "Karen",
        "Liam",
        "Maria",
        "Noah",
        "Olivia",
        "Peter",
        "Quinn",
        "Rachel",
        "Samuel",
        "Tara",
        "Umar",
        "Vera",
        "William",
        "Yusuf",
        "Zoe",
        "Priya",
        "Mateo",
        "Hannah",
        "Oscar",
        "Leila",
        "Tom",
        "Nina",
        "Victor",
        "Sofia",
        "Daniel",
    ],
    "city": [
        "London",
        "Paris",
        "Boston",
        "Chicago",
        "Denver",
        "Seattle",
        "Madrid",
        "Berlin",
        "Dublin",
        "Toronto",
        "Sydney",
        "Tokyo",
        "Lisbon",
        "Vienna",
        "Oslo",
        "Prague",
        "Austin",
        "Phoenix",
        "Atlanta",
        "Glasgow",
        "Edinburgh",
        "Montreal",
        "Nairobi",
        "Cairo",
        "Mumbai",
        "Singapore",
        "Amsterdam",
        "Brussels",
        "Helsinki",
        "Warsaw",
    ],
    "adj": [
        "quiet",
        "bright",
        "old",
        "small",
        "heavy",
        "narrow",
        "warm",
        "cold",
        "busy",
        "empty",
        "strange",
        "careful",
        "patient",
        "gentle",
        "noisy",
        "tiny",
        "enormous",
        "green",
        "yellow",
        "wooden",
        "broken",
        "shiny",
        "ancient",
        "modern",
        "distant",
        "friendly",
        "curious",
        "clever",
        "tired",
        "hungry",
        "sudden",
        "simple",
        "rough",
        "smooth",
    ],
    "noun": [
        "river",
        "garden",
        "window",
        "kitchen",
        "bicycle",
        "library",
        "mountain",
        "engine",
        "letter",
        "station",
        "bridge",
        "market",
        "village",
        "forest",
        "teacher",
        "doctor",
        "farmer",
        "painter",
        "violin",
        "lantern",
        "harbor",
        "island",
        "blanket",
        "ladder",
        "pencil",
        "notebook",
        "camera",
        "orchard",
        "meadow",
        "tunnel",
        "kettle",
        "museum",
        "theater",
        "hospital",
        "bakery",
        "umbrella",
        "suitcase",
        "telescope",
        "compass",
        "helmet",
        "basket",
    ],
    "animal": [
        "dog",
        "cat",
        "horse",
        "fox",
        "owl",
        "rabbit",
        "sparrow",
        "goat",
        "duck",
        "deer",
        "heron",
        "otter",
        "badger",
    ],
    "verb_past": [
        "walked",
        "ran",
        "waited",
        "looked",
        "listened",
        "searched",
        "climbed",
        "wandered",
        "paused",
        "sat",
        "stood",
        "hurried",
        "laughed",
        "whispered",
        "shouted",
        "worked",
        "rested",
        "danced",
    ],
    "prep": [
        "near",
        "behind",
        "beside",
        "under",
        "across",
        "along",
        "inside",
        "past",
        "toward",
        "around",
    ],
    "tverb": [
        "open",
        "close",
        "fix",
        "paint",
        "clean",
        "move",
        "check",
        "find",
        "carry",
        "wash",
        "sign",
        "read",
        "bring",
        "order",
    ],
    "food": [
        "soup",
        "bread",
        "cheese",
        "apples",
        "rice",
        "tea",
        "coffee",
        "pasta",
        "salad",
        "oranges",
        "honey",
        "pie",
        "beans",
        "carrots",
        "potatoes",
        "lemons",
        "eggs",
        "butter",
    ],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "month": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "weather": ["rain", "snow", "sunshine", "fog", "wind", "thunder", "hail", "drizzle", "frost"],
    "job": [
        "engineer",
        "nurse",
        "pilot",
        "chef",
        "lawyer",
        "librarian",
        "plumber",
        "architect",
        "journalist",
        "gardener",
        "mechanic",
        "scientist",
        "musician",
    ],
    "feeling": [
        "happy",
        "nervous",
        "surprised",
        "relieved",
        "worried",
        "excited",
        "proud",
        "confused",
        "grateful",
    ],
    "topic": [
        "history",
        "music",
        "science",
        "football",
        "cooking",
        "politics",
        "astronomy",
        "poetry",
        "chess",
        "gardening",
        "economics",
        "photography",
    ],
    "device": [
        "phone",
        "laptop",
        "printer",
        "router",
        "television",
        "radio",
        "dishwasher",
        "heater",
        "camera",
    ],
    "color": [
        "red",
        "blue",
        "green",
        "yellow",
        "purple",
        "orange",
        "gray",
        "white",
        "black",
        "brown",
    ],
}

FIXED = """Yes, of course.
No, thank you.
Good morning, everyone.
Could you say that again, please?
I'm not sure that's right.
Let's meet at the usual place.
Please hold the line.
That sounds like a wonderful idea!
Where did you put the keys?
We're running a little late.
Thanks for waiting.
How much does it cost?
Wait, what did you just say?
Absolutely not.
It's going to be a long night.
I'll call you back in five minutes.
Happy birthday!
Don't forget your umbrella.
Is anybody there?
Well, that was unexpected.
Turn off the lights when you leave.
The meeting has been moved to Thursday.
I think we should leave now.
Can I help you with anything else?
Mind the gap between the train and the platform.
The quick brown fox jumps over the lazy dog.
She sells sea shells by the sea shore.
How are you feeling today?
Welcome back!
Please fasten your seat belts.
Sorry, I didn't catch your name.
What time is it?
Nobody told me about the change.
Keep going, you're almost there.
This is the last call for passengers on flight 42.
Hello, and thank you for calling.
Your order has been shipped.
It was the best of times, it was the worst of times.
Oh no, I left my wallet at home!
Really? I had no idea.""".splitlines()


def composed(rng: random.Random) -> list[str]:
    def p(key: str) -> str:
        return rng.choice(W[key])

    def num(lo: int, hi: int) -> str:
        return str(rng.randint(lo, hi))

    def time() -> str:
        return f"{rng.randint(1, 12)}:{rng.choice(['00', '15', '30', '45', '05', '20', '50'])}"

    templates = [
        lambda: f"The {p('adj')} {p('noun')} was {p('prep')} the {p('noun')}.",
        lambda: f"{p('name')} {p('verb_past')} {p('prep')} the {p('adj')} {p('noun')} for a while.",
        lambda: f"Did you remember to {p('tverb')} the {p('noun')} before you left?",
        lambda: f"Why is the {p('noun')} so {p('adj')} today?",
        lambda: f"The train to {p('city')} leaves at {time()} from platform {num(1, 12)}.",
        lambda: f"{p('name')} paid ${num(2, 99)}.{num(10, 99)} for {p('food')} at the {p('noun')}.",
        lambda: (
            f"On {p('day')}, {p('month')} {num(1, 28)}, we expect {p('weather')} in {p('city')}."
        ),
        lambda: (
            f"About {num(2, 98)}% of the {p('job')}s in {p('city')} said they were {p('feeling')}."
        ),
        lambda: (
            f"In {num(1850, 2023)}, a {p('job')} from {p('city')} built a {p('adj')} {p('noun')}."
        ),
        lambda: f"My {p('device')} stopped working again, and I have no idea why.",
        lambda: f"Could you {p('tverb')} the {p('noun')} while I {p('tverb')} the {p('noun')}?",
        lambda: f"We need {p('food')}, {p('food')}, {p('food')} and some {p('food')}.",
        lambda: f"What a {p('adj')} {p('animal')}!",
        lambda: (
            f"The {p('animal')} {p('verb_past')} {p('prep')} the {p('noun')} and then vanished."
        ),
        lambda: f"{p('name')} and {p('name')} talked about {p('topic')} until {time()}.",
        lambda: f"Although it was {p('adj')}, the {p('noun')} was still worth a visit.",
        lambda: (
            f"Turn left at the {rng.choice(['first', 'second', 'third', '4th', '5th'])} light, "
            f"then continue for {num(2, 15)} miles toward {p('city')}."
        ),
        lambda: f"I was {p('feeling')} when {p('name')} finally called from {p('city')}.",
        lambda: f"Dr. {p('name')} will see you at {time()} on {p('day')}.",
        lambda: f"The population of the {p('adj')} town grew to {num(1000, 99999):s} people.",
        lambda: f"Is it true that the {p('color')} {p('noun')} belongs to {p('name')}?",
        lambda: f"Please {p('tverb')} the {p('color')} {p('noun')} by {p('day')} at the latest.",
        lambda: (
            f"Because of the {p('weather')}, the flight from {p('city')} to {p('city')} "
            f"was delayed by {num(2, 9)} hours."
        ),
        lambda: (
            f"{p('name')} studied {p('topic')} for {num(2, 12)} years before becoming a {p('job')}."
        ),
        lambda: f"Honestly, I never thought the {p('noun')} would be this {p('adj')}.",
        lambda: (
            f"Room {num(100, 450)} is on the {rng.choice(['1st', '2nd', '3rd', '4th'])} floor, "
            f"next to the {p('noun')}."
        ),
        lambda: f"If the {p('weather')} stops, we can walk to the {p('noun')} and back.",
        lambda: f'The {p("job")} said, "Bring the {p("noun")} and wait here."',
        lambda: (
            f"Mr. {p('name')} and Mrs. {p('name')} arrived in {p('city')} on {p('month')} "
            f"{num(1, 28)}th."
        ),
        lambda: (
            f"It costs {num(3, 950)} dollars, which is {num(10, 60)} dollars more than last year."
        ),
        lambda: f"When the {p('adj')} {p('animal')} saw the {p('noun')}, it {p('verb_past')} away.",
        lambda: f"Where should we put the {p('adj')} {p('noun')}?",
        lambda: f"They {p('verb_past')} for hours, but nobody found the {p('noun')}.",
        lambda: f"The temperature dropped to {num(-15, 5)} degrees overnight in {p('city')}.",
        lambda: (
            f"Version {num(1, 9)}.{num(0, 20)} of the software fixes the problem with the "
            f"{p('device')}."
        ),
        lambda: f"{p('name')} scored {num(10, 99)}.{num(1, 9)} points, a new record for the team!",
        lambda: f"Let's read a book about {p('topic')} and have some {p('food')}.",
        lambda: (
            f"While {p('name')} was cooking {p('food')}, {p('name')} {p('verb_past')} "
            f"{p('prep')} the {p('noun')}, humming a {p('adj')} song."
        ),
        lambda: f"Everyone in {p('city')} knows the {p('adj')} {p('noun')} near the {p('noun')}.",
        lambda: f"Wow, that {p('noun')} is really {p('adj')}!",
    ]
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < N_COMPOSED:
        s = rng.choice(templates)()
        s = re.sub(r"\ba ([aeiou])", r"an \1", s)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def main(argv: list[str]) -> int:
    opticks = Path(argv[1]) if len(argv) > 1 else find_opticks()
    prose = opticks_sentences(opticks)
    rng = random.Random(20240611)
    made = composed(rng)
    sentences = prose + FIXED + made
    rng.shuffle(sentences)  # mix sources so every prefix (--limit N) is varied
    header = [
        "# Sparrow training sentences: one per line; lines starting with # are comments.",
        "# Generated by scripts/build_sentences.py (deterministic).",
        f"# {len(prose)} sentences: Isaac Newton, Opticks, 4th edition (1730), Project Gutenberg",
        "#   eBook #33504 - public domain; filtered to plain sentences of 25-220 characters.",
        f"# {len(FIXED) + len(made)} sentences: composed for Sparrow from templates and word lists",
        "#   (Apache-2.0, like the rest of this repository).",
        f"# Total: {len(sentences)} sentences.",
    ]
    OUT.write_text("\n".join(header + sentences) + "\n", encoding="ascii")
    print(f"wrote {len(sentences)} sentences to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
