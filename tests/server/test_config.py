"""Settings: env prefix, flag overrides, core lists and counts, model resolution, clear errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from server.config import Settings, SettingsError, load_settings, parse_cores


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SPARROW_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert (s.host, s.port, s.max_text_chars, s.headroom) == ("127.0.0.1", 8000, 4096, 0.8)
    assert s.cores is None and s.api_key is None
    assert s.resolved_cores() == sorted(os.sched_getaffinity(0))


def test_env_prefix_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARROW_PORT", "9001")
    monkeypatch.setenv("SPARROW_HEADROOM", "0.5")
    monkeypatch.setenv("SPARROW_API_KEY", "sekret")
    s = load_settings(port=9002)  # flags win over the environment
    assert s.port == 9002 and s.headroom == 0.5
    assert s.api_key is not None and s.api_key.get_secret_value() == "sekret"
    assert "sekret" not in repr(s)  # the key never shows up in logs


def test_empty_api_key_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARROW_API_KEY", "")
    assert load_settings().api_key is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,1", [0, 1]),
        ("0-2", [0, 1, 2]),
        ("[1]", [1]),
        ("2", 2),
        ("all", None),
        (" 0 , 3 ", [0, 3]),
    ],
)
def test_parse_cores(text: str, expected: object) -> None:
    assert parse_cores(text) == expected


def test_core_count_and_list_resolve_against_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    monkeypatch.setenv("SPARROW_CORES", "1")  # a bare integer is a count (Kubernetes limits.cpu)
    assert load_settings().resolved_cores() == allowed[:1]
    monkeypatch.setenv("SPARROW_CORES", f"[{allowed[-1]}]")
    assert load_settings().resolved_cores() == [allowed[-1]]


def test_bad_cores_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARROW_CORES", "x")
    with pytest.raises(SettingsError, match="cores.*bad core id 'x'"):
        load_settings()
    with pytest.raises(SettingsError, match="not in this process's affinity mask"):
        load_settings(cores=[4096]).resolved_cores()
    with pytest.raises(SettingsError, match="only .* cores are allowed"):
        load_settings(cores=4096).resolved_cores()
    with pytest.raises(SettingsError, match="repeats a core"):
        load_settings(cores="0,0")


def test_invalid_values_name_the_setting() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(port=70000, headroom=0, bogus=1)
    message = str(info.value)
    assert "port" in message and "headroom" in message and "bogus" in message


def test_model_resolution(tiny_model_dir: Path, tiny_index_dir: Path, tmp_path: Path) -> None:
    assert Settings(model=tiny_model_dir).resolved_model_dir() == tiny_model_dir
    assert Settings(model=tiny_model_dir / "manifest.json").resolved_model_dir() == tiny_model_dir
    # a compiled/ directory with an index serves its default (the Docker image's SPARROW_MODEL)
    index_default = json.loads((tiny_index_dir / "manifest.json").read_text())["default"]
    assert Settings(model=tiny_index_dir).resolved_model_dir() == tiny_index_dir / index_default
    with pytest.raises(SettingsError, match="does not exist"):
        Settings(model=tmp_path / "nope").resolved_model_dir()
    with pytest.raises(SettingsError, match="no manifest.json"):
        Settings(model=tmp_path).resolved_model_dir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"default": "gone", "models": ["gone"]}))
    with pytest.raises(SettingsError, match="names default model 'gone'"):
        Settings(model=broken).resolved_model_dir()


def test_default_model_is_the_shipped_index(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./compiled here: falls back to the source tree's compiled/
    from server.config import REPO_COMPILED

    if not (REPO_COMPILED / "manifest.json").is_file():
        pytest.fail("the repository ships compiled/manifest.json")
    default = json.loads((REPO_COMPILED / "manifest.json").read_text())["default"]
    assert Settings().resolved_model_dir() == REPO_COMPILED / default


def test_lexicon_is_checked_at_start_up(tiny_model_dir: Path, tmp_path: Path) -> None:
    lex = tmp_path / "lexicon.txt"
    lex.write_text("sparrow s p ae1 r ow0\nwyoming w ay0 ow1 m ih0 ng\nbad ae\n")
    settings = load_settings(model=tiny_model_dir, lexicon=lex)
    with pytest.raises(SettingsError, match=r"lexicon: .*line 3: vowel 'ae' needs a stress"):
        settings.check()
    lex.write_text("sparrow s p ae1 r ow0\n")
    assert [e.word for e in settings.lexicon_entries()] == ["sparrow"]
    assert load_settings(model=tiny_model_dir).lexicon_entries() == ()


def test_wyoming_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARROW_WYOMING_PORT", "10200")
    monkeypatch.setenv("SPARROW_WYOMING_SAMPLE_RATE", "16000")
    s = load_settings()
    assert s.wyoming_port == 10200 and s.wyoming_sample_rate == 16000
    with pytest.raises(SettingsError, match="wyoming_sample_rate"):
        load_settings(wyoming_sample_rate=12345)


def test_synthesis_settings_over_the_voice(tiny_model_dir: Path) -> None:
    s = load_settings(model=tiny_model_dir, synthesis='{"envelope_passes": 1}')
    resolved = s.resolved_synthesis(tiny_model_dir)
    assert resolved is not None and resolved.envelope_passes == 1
    assert load_settings(model=tiny_model_dir).resolved_synthesis(tiny_model_dir) is None
    for bad, needle in (
        ('{"envelope_pases": 0}', "unknown synthesis settings"),
        ('{"envelope_passes": 9}', "envelope_passes is in [0, 4]"),
    ):
        with pytest.raises(SettingsError, match=re.escape(needle)):
            load_settings(model=tiny_model_dir, synthesis=bad).check()
    with pytest.raises(SettingsError, match="JSON object"):
        load_settings(synthesis="nope")
