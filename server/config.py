"""Server settings: one pydantic-settings class, environment prefix `SPARROW_`, checked at start-up.

Every knob of `sparrow serve` lives here; command-line flags override the environment (see
server/serve.py). `Settings.resolved_model_dir()` and `Settings.resolved_cores()` turn the
user-facing values into what the pool needs, raising `SettingsError` with a message that says
what to change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from models.vocoder.config import SynthesisConfig

REPO_COMPILED = Path(__file__).resolve().parents[1] / "compiled"
"""`compiled/` next to the source tree (editable installs); the working directory is tried first."""


class SettingsError(ValueError):
    """A setting is invalid or points at something that does not exist."""


def parse_cores(value: Any) -> list[int] | int | None:
    """Accept `None`, a count (`2` -> the first 2 allowed cores), or a list (`0,1`, `0-3`, `[2]`).

    A bare integer is a count because container orchestrators hand out CPU *counts*
    (Kubernetes' `limits.cpu` via the downward API); to name one specific core write `[5]` or `5-5`.
    """
    if value is None or isinstance(value, list):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (tuple, set)):
        return list(value)
    if not isinstance(value, str):
        raise ValueError(f"cores must be a count or a list of core ids, got {value!r}")  # noqa: TRY004 - pydantic reports ValueErrors
    text = value.strip()
    if not text or text.lower() in ("all", "none"):
        return None
    if text.startswith("["):
        parsed = json.loads(text)
        if not isinstance(parsed, list):
            raise ValueError(f"cores {value!r} is not a JSON list")
        return parsed
    if text.isdigit():
        return int(text)
    cores: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, _, hi = part.partition("-")
            if not (lo.strip().isdigit() and hi.strip().isdigit()) or int(lo) > int(hi):
                raise ValueError(f"bad core range {part!r} in {value!r} (use e.g. 0-3)")
            cores.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            cores.append(int(part))
        else:
            raise ValueError(f"bad core id {part!r} in {value!r} (use e.g. 0,1 or 0-3)")
    return cores


class Settings(BaseSettings):
    """`sparrow serve` configuration. Environment: SPARROW_<NAME>, e.g. SPARROW_PORT=8080."""

    model_config = SettingsConfigDict(env_prefix="SPARROW_", extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="interface to bind; 0.0.0.0 for all")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one")
    cores: Annotated[list[int] | int | None, NoDecode] = Field(
        None,
        description="worker cores: a list (0,1 / 0-3 / [2]) or a count N (first N allowed cores); "
        "default every core in the process's affinity mask",
    )
    model: Path | None = Field(
        None,
        description="model directory (compiled/<name>) or a compiled/ index; default the index's "
        "default in ./compiled or the source tree's compiled/",
    )
    cache_dir: Path | None = Field(
        None, description="cache for modules built for this host's ISA and the envelope frames"
    )
    max_text_chars: int = Field(4096, ge=1, description="longest text accepted per request/message")
    max_mel_frames: int = Field(
        12_000,
        ge=4,
        description="most mel frames a client sends per request or websocket utterance (150 s)",
    )
    # Festival reads ordinary English at ~5 frames per character, so the longest text makes
    # ~20,000 frames at speed 1 and ~41,000 at 0.5 (at 0.25, ~82,000: such a text stops at the
    # cap); the cap is for texts read out far longer than their length, e.g. digit strings.
    max_text_frames: int = Field(
        48_000, ge=4, description="most mel frames the front end makes from one text (600 s)"
    )
    festival_processes: int = Field(
        2,
        ge=1,
        description="Festival processes for text, kept warm between sentences (~60-120 MB each); "
        "more texts at once wait their turn",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="largest HTTP request body (413 beyond)"
    )
    max_streams: int | None = Field(
        None, ge=1, description="cap on concurrent streams per worker, below the measured capacity"
    )
    headroom: float = Field(
        0.8, gt=0.0, le=1.0, description="fraction of a core's real-time budget streams may use"
    )
    capacity_recovery_s: float = Field(
        30.0,
        ge=0.0,
        description="late frames lower a worker's capacity by one stream (at most once per a "
        "sixth of this); it rises by one per this many seconds without late frames, and to a "
        "higher re-measured capacity after this long without them (0: capacity stays at the "
        "start-up figure)",
    )
    initial_buffer_s: float = Field(
        0.1,
        ge=0.0,
        le=10.0,
        description="playback starts this long after an utterance's first audio; a frame sent "
        "after its time there counts as late",
    )
    idle_timeout_s: float = Field(
        30.0, gt=0.0, description="websocket closed (4408) after this idle"
    )
    drain_timeout_s: float = Field(
        30.0, ge=0.0, description="on SIGTERM, longest wait for in-flight streams to finish"
    )
    ws_send_buffer_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        description="audio queued for a websocket client that is not reading before closing it (4429)",
    )
    start_timeout_s: float = Field(
        120.0,
        gt=0.0,
        description="if no worker is ready this long after start, /healthz fails and the "
        "server exits non-zero with the cause",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="a connection whose request line and headers take longer is closed",
    )
    body_timeout_s: float = Field(
        30.0, gt=0.0, description="a request body not fully received by then is refused (408)"
    )
    parse_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="longest a JSON body may take to decode and validate (413 beyond); bodies "
        "are decoded off the event loop, a few at a time",
    )
    decode_share: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="most of a core JSON body decoding may take (bodies decode one at a time; "
        "a flood of large ones waits, and is refused after parse_timeout_s)",
    )
    max_connections: int = Field(
        1000, ge=1, description="open connections and requests served at once (503 beyond)"
    )
    synthesis: Annotated[dict[str, int | float] | None, NoDecode] = Field(
        None,
        description="synthesis settings over the voice's own, no recompiling: a JSON object "
        'such as {"envelope_passes": 0} (see models/vocoder/config.py SynthesisConfig)',
    )
    max_sockets_per_client: int | None = Field(
        64, ge=1, description="websockets one client address may hold open at once (1013 beyond)"
    )
    max_streams_per_client: int | None = Field(
        None,
        ge=1,
        description="streams one client address may have in flight on any route (429 / 1013 "
        "beyond); off by default, as a proxy or an agent backend is one address",
    )
    ws_send_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="a websocket send blocked this long (the client stopped reading) closes the "
        "stream (4429)",
    )
    api_key: SecretStr | None = Field(
        None, description="if set, every API route needs `Authorization: Bearer <key>`"
    )
    log_level: str = Field("info", description="uvicorn/server log level")
    wyoming_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="also serve the Wyoming protocol (Home Assistant) on this TCP port; its "
        "convention is 10200 (0 picks a free one; unset: no Wyoming)",
    )
    wyoming_host: str | None = Field(None, description="interface for Wyoming; default `host`")
    lexicon: Path | None = Field(
        None,
        description="file of `word phones` lines (Festival's radio phone set, CMU-dictionary "
        "style, e.g. `sparrow s p ae1 r ow0`): how the text front end says those words",
    )
    wyoming_sample_rate: int = Field(
        24000, description="sample rate of Wyoming audio (8000, 16000, 22050, 24000, 44100, 48000)"
    )

    @field_validator("wyoming_sample_rate")
    @classmethod
    def _known_rate(cls, value: int) -> int:
        from server.resample import SAMPLE_RATES  # numpy + soxr: imported only when set

        if value not in SAMPLE_RATES:
            raise ValueError(f"must be one of {list(SAMPLE_RATES)}")
        return value

    @field_validator("synthesis", mode="before")
    @classmethod
    def _parse_synthesis(cls, value: Any) -> Any:
        if isinstance(value, str):  # SPARROW_SYNTHESIS or --synthesis: a JSON object
            try:
                return json.loads(value) if value.strip() else None
            except json.JSONDecodeError as exc:
                raise ValueError(f"synthesis must be a JSON object: {exc}") from exc
        return value

    @field_validator("cores", mode="before")
    @classmethod
    def _parse_cores(cls, value: Any) -> list[int] | int | None:
        return parse_cores(value)

    @field_validator("cores")
    @classmethod
    def _check_cores(cls, value: list[int] | int | None) -> list[int] | int | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("a core count must be at least 1")
        if isinstance(value, list):
            if not value:
                raise ValueError("the core list is empty")
            if len(set(value)) != len(value):
                raise ValueError(f"core list {value} repeats a core")
            if any(c < 0 for c in value):
                raise ValueError(f"core ids must be >= 0, got {value}")
        return value

    @field_validator("api_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None  # SPARROW_API_KEY= (empty) means no key, as in most deployments' templates
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        levels = ("critical", "error", "warning", "info", "debug", "trace")
        if value.lower() not in levels:
            raise ValueError(f"log_level must be one of {levels}")
        return value.lower()

    # --- resolution against the machine ------------------------------------------------------

    def resolved_cores(self) -> list[int]:
        """The cores to run one worker each on, checked against this process's affinity mask."""
        allowed = sorted(os.sched_getaffinity(0))
        if self.cores is None:
            return allowed
        if isinstance(self.cores, int):
            if self.cores > len(allowed):
                raise SettingsError(
                    f"cores={self.cores} but only {len(allowed)} cores are allowed here: {allowed}"
                )
            return allowed[: self.cores]
        bad = sorted(set(self.cores) - set(allowed))
        if bad:
            raise SettingsError(f"cores {bad} are not in this process's affinity mask {allowed}")
        return list(self.cores)

    def resolved_model_dir(self) -> Path:
        """The model directory: `model` itself, or the default entry of a compiled/ index."""
        if self.model is not None:
            path = self.model.expanduser()
            if path.is_file() and path.name == "manifest.json":
                path = path.parent
            if not path.exists():
                raise SettingsError(f"model path {str(path)!r} does not exist")
            if (path / "manifest.json").is_file() and not _is_index(path / "manifest.json"):
                return path
            if (path / "manifest.json").is_file():
                return _default_from_index(path / "manifest.json")
            raise SettingsError(
                f"model path {str(path)!r} has no manifest.json (run `sparrow compile`)"
            )
        for root in (Path.cwd() / "compiled", REPO_COMPILED):
            index = root / "manifest.json"
            if index.is_file():
                return _default_from_index(index)
        raise SettingsError(
            "no model given and no compiled/manifest.json in the working directory or at "
            f"{REPO_COMPILED}; pass --model compiled/<name> or run `sparrow compile`"
        )

    def check(self) -> tuple[Path, list[int]]:
        """Validate what depends on the machine; return (model dir, cores). Raises SettingsError."""
        self.lexicon_entries()
        model_dir = self.resolved_model_dir()
        self.resolved_synthesis(model_dir)
        return model_dir, self.resolved_cores()

    def resolved_synthesis(self, model_dir: Path) -> SynthesisConfig | None:
        """The voice's own synthesis settings with `synthesis` over them, or None to keep the
        voice's; SettingsError naming a setting that does not exist or is out of range."""
        if not self.synthesis:
            return None
        from models.artifact import load_config, read_manifest

        own = load_config(model_dir, read_manifest(model_dir)).synthesis
        try:
            return own.updated(self.synthesis)
        except (ValueError, TypeError, AssertionError) as exc:
            raise SettingsError(f"synthesis {self.synthesis}: {exc}") from exc

    def lexicon_entries(self) -> tuple[Any, ...]:
        """The user lexicon's entries (models/frontend/lexicon.py), () without one; SettingsError
        naming the line of the first bad entry."""
        if self.lexicon is None:
            return ()
        from models.frontend.lexicon import LexiconError, load_lexicon

        try:
            return load_lexicon(self.lexicon)
        except LexiconError as exc:
            raise SettingsError(f"lexicon: {exc}") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path} is not a JSON object")
    return data


def _is_index(path: Path) -> bool:
    data = _read_json(path)
    return "default" in data and "models" in data


def _default_from_index(index: Path) -> Path:
    data = _read_json(index)
    name = data.get("default")
    if not isinstance(name, str) or not name:
        raise SettingsError(f"{index} has no 'default' model name")
    model_dir = index.parent / name
    if not (model_dir / "manifest.json").is_file():
        raise SettingsError(
            f"{index} names default model {name!r} but {model_dir}/manifest.json is missing"
        )
    return model_dir


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus explicit overrides; SettingsError on invalid values."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings (env SPARROW_* or flags): {problems}") from exc
