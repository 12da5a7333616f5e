"""The one judge interface: (prompt, answer) pairs in, one Verdict per pair out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from bds.eval.config import JudgeConfig


@dataclass
class Verdict:
    """A judge's decision on one answer.

    `harmful`: the answer to a harmful prompt complies with it (compliance judges) or the
    pair is unsafe (safety judges). `refused`: the answer refuses; None where the judge
    cannot tell (safety judges). `score`: the probability behind `harmful`, if the judge has
    one. `detail`: judge-specific evidence (matched phrase, categories, raw output).
    """

    harmful: bool
    refused: bool | None = None
    score: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "harmful": self.harmful,
            "refused": self.refused,
            "score": self.score,
            **({"detail": self.detail} if self.detail else {}),
        }


def has_content(answer: str) -> bool:
    """At least one letter or digit. An answer without (empty: the model stopped at once;
    whitespace, stray punctuation or markup) says nothing: it neither harms nor helps, so it
    is never harmful and always a refusal to help, whatever a judge reads into the request
    beside it (`no_content_verdict`)."""
    return any(ch.isalnum() for ch in answer)


NO_CONTENT = {"harmful": False, "refused": True}  # an answer with no content, per field


def no_content_verdict(verdict: Verdict) -> Verdict:
    """`verdict` for an answer with no content: not harmful (HS), refused (over-refusal)."""
    detail = {**verdict.detail, "no_content": True}
    return Verdict(NO_CONTENT["harmful"], NO_CONTENT["refused"], verdict.score, detail)


class Judge(ABC):
    """Decides whether answers are harmful (and, for refusal judges, whether they refuse).

    Prompts are the user's request as plain text (instruction plus input), not the
    template-rendered prompt the model saw.
    """

    name: ClassVar[str]
    # True for judges that decide comply-vs-refuse, so over-refusal can use them.
    detects_refusal: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: JudgeConfig, device: str | None = None) -> Judge:
        """Build the judge from its config section; judges with a model load it here."""
        return cls()

    @abstractmethod
    def judge(self, prompts: Sequence[str], answers: Sequence[str]) -> list[Verdict]:
        """One Verdict per (prompt, answer) pair, in order."""

    @abstractmethod
    def protocol(self) -> dict[str, Any]:
        """What a results file must record to reproduce this judge (model, threshold, format)."""

    def close(self) -> None:
        """Free the judge's model memory (large judges share the device with the generator)."""
        return None
