"""The names clients may use for this server's model and voices, and what each one means.

OpenAI-compatible clients send OpenAI's names (`tts-1`, `gpt-4o-mini-tts-2025-12-15`, `alloy`):
they are accepted so stock integrations work unchanged, and all of them mean the one model this
server runs and its default voice. Sparrow's own names (the served model's, `sparrow`, and the
front end's voice ids) mean themselves.
"""

from __future__ import annotations

DEFAULT_VOICE = "slt"

OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)
"""OpenAI's voice names: accepted so stock clients work, and spoken with the default voice."""

OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
"""OpenAI's TTS model families; dated or suffixed names (`gpt-4o-mini-tts-2025-12-15`,
`tts-1-1106`, `tts-1-hd-1106`) are the same family, so a name is accepted by its prefix."""

SPARROW_ALIAS = "sparrow"


def resolve_voice(voice: str | None) -> str:
    """None and OpenAI's voice names mean the default voice; anything else is a front-end id."""
    if voice is None or voice in OPENAI_VOICES:
        return DEFAULT_VOICE
    return voice


def is_openai_model(name: str) -> bool:
    """True for OpenAI's TTS model names, dated and suffixed ones included."""
    return any(name == family or name.startswith(family + "-") for family in OPENAI_MODELS)


def accepts_model(name: str, served: str) -> bool:
    """True if `name` means the model this server runs (its own name, `sparrow`, or OpenAI's)."""
    return name in (served, SPARROW_ALIAS) or is_openai_model(name)


def model_aliases(served: str) -> list[str]:
    """The model ids a model list shows: the served model first, then the names that mean it."""
    return [served, SPARROW_ALIAS, *OPENAI_MODELS]
