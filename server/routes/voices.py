"""GET /v1/voices and /v1/audio/voices: the text front end's voices, and whether text input works
on this machine."""

from __future__ import annotations

from fastapi import APIRouter

from models.frontend.festival_frontend import DEBIAN_PACKAGES
from server.catalog import DEFAULT_VOICE
from server.deps import ApiKey, FrontendDep
from server.schemas import AudioVoiceList, VoiceCard, VoiceList, VoiceRefCard

router = APIRouter(tags=["voices"], dependencies=[ApiKey])


@router.get("/v1/voices", response_model=VoiceList)
def list_voices(frontend: FrontendDep) -> VoiceList:
    voices = frontend.voices()
    available = frontend.available(DEFAULT_VOICE)
    message = None
    if not available:
        message = (
            "text input is unavailable: Festival or its voice is not installed "
            f"(apt-get install {DEBIAN_PACKAGES}); mel input still works"
        )
    return VoiceList(
        data=[
            VoiceCard(id=v.id, name=v.name, language=v.language, sample_rate=v.sample_rate)
            for v in voices
        ],
        default=DEFAULT_VOICE,
        text_available=available,
        message=message,
    )


@router.get("/v1/audio/voices", response_model=AudioVoiceList)
def list_audio_voices(frontend: FrontendDep) -> AudioVoiceList:
    """The voices in the shape chat front ends read from a custom OpenAI speech server."""
    return AudioVoiceList(voices=[VoiceRefCard(id=v.id, name=v.name) for v in frontend.voices()])
