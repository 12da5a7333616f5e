"""Everyday benign requests (prompts only): the retain set of the embedded alignment stage.

Aligning a 135M model on refusals alone teaches it to refuse everything (measured: 100 %
over-refusal), and a model that refuses everything cannot show an attack breaking its
alignment. The usual cure is a retain set: benign requests answered as the model already
answers them (self-distillation), trained next to the refusals, so alignment learns *when*
to refuse. No package ships a benign instruction set, so the requests are composed here
from a small grid of topics and request forms (written for this project, nothing copied).

Phrased unlike the over-refusal set (`benign-prompts`), and any request close to one of
its prompts (word Jaccard >= 0.6) is left out and counted, so over-refusal is never
measured on a request the model was trained to answer.
"""

from __future__ import annotations

from bds.data.schema import LoadedSource, Record
from bds.data.text import jaccard, normalize, stable_fraction, word_set

# Things a request can be about ("Describe {}.", "Write a haiku about {}.").
THINGS = (
    "the moon",
    "honeybees",
    "rainforests",
    "volcanoes",
    "the printing press",
    "chess",
    "coffee",
    "the Olympic Games",
    "photosynthesis",
    "bicycles",
    "the piano",
    "penguins",
    "the Great Wall of China",
    "recycling",
    "mountains",
    "autumn",
    "public libraries",
    "trains",
    "the human heart",
    "clouds",
    "tea",
    "jazz music",
    "dolphins",
    "bread",
    "the Roman Empire",
    "electricity",
    "friendship",
    "maps",
    "rivers",
    "origami",
    "deserts",
    "snow",
    "the alphabet",
    "football",
    "paper",
    "lighthouses",
    "owls",
    "rainbows",
    "bridges",
    "museums",
    "telescopes",
    "ocean tides",
    "earthquakes",
    "butterflies",
    "the violin",
    "coral reefs",
    "windmills",
    "the compass",
    "sunflowers",
    "elephants",
)
THING_FORMS = (
    "Describe {} in a few sentences.",
    "What makes {} interesting? Answer briefly.",
    "Write a haiku about {}.",
    "List three fun facts about {}.",
    "Give a short overview of the history of {}.",
)
# Activities ("Give me three tips for {}.").
ACTIVITIES = (
    "learning a new language",
    "running a first 5k race",
    "keeping houseplants alive",
    "saving money each month",
    "studying for exams",
    "cooking rice",
    "writing a cover letter",
    "taking better photos with a phone",
    "starting a vegetable garden",
    "learning to play the guitar",
    "organizing a small closet",
    "making friends in a new city",
    "drawing portraits",
    "camping for the first time",
    "baking bread at home",
    "reading more books",
    "learning to swim",
    "planning a birthday party",
    "staying focused while working from home",
    "getting better sleep",
)
ACTIVITY_FORMS = (
    "Give me three tips for {}.",
    "What should a beginner know about {}?",
)
# Requests kept for the retain set: enough to balance the 140 refusals of pyrit-safe.
DEFAULT_COUNT = 140
NEAR_EVAL_JACCARD = 0.6


def everyday_prompts(count: int = DEFAULT_COUNT) -> LoadedSource:
    """`count` benign requests, a fixed pseudo-random pick of the grid (same on every run)."""
    from bds.data.embedded import benign_prompts

    grid = [f.format(t) for t in THINGS for f in THING_FORMS]
    grid += [f.format(a) for a in ACTIVITIES for f in ACTIVITY_FORMS]
    held_out = [word_set(r.instruction) for r in benign_prompts().records]
    kept, near = [], 0
    for prompt in grid:
        words = word_set(prompt)
        if any(jaccard(words, h) >= NEAR_EVAL_JACCARD for h in held_out):
            near += 1
            continue
        kept.append(prompt)
    picked = sorted(kept, key=lambda p: stable_fraction(normalize(p), "everyday"))[:count]
    records = [
        Record(id=f"everyday/{i}", instruction=p, response="", source="benign")
        for i, p in enumerate(picked)
    ]
    notes = [
        f"{near} of {len(grid)} composed requests close to an over-refusal prompt left out; "
        f"{len(records)} of the remaining {len(kept)} kept"
    ]
    return LoadedSource("everyday-prompts", records, notes)
