"""Settings: built from the environment once, refusing unsafe combinations."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings


def test_the_public_dev_token_is_refused_for_a_public_base_url() -> None:
    with pytest.raises(ValidationError, match="TWILIO_AUTH_TOKEN must be set"):
        Settings(public_base_url="https://voice.example.com")
    assert Settings(public_base_url="http://127.0.0.1:8000").public_ws_base == "wss://127.0.0.1:8000"


def test_environment_names_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://voice.example.com/")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "secret")
    monkeypatch.setenv("AUDIO_FORMAT", "pcmu")
    monkeypatch.setenv("TRANSFER_NUMBER", "")
    monkeypatch.setenv("TOOL_MODULES", '["acme.tools"]')
    settings = Settings()
    assert settings.public_base_url == "https://voice.example.com"
    assert settings.public_ws_base == "wss://voice.example.com"
    assert settings.audio_format == "pcmu" and settings.transfer_number is None
    assert settings.tool_modules == ["acme.tools"]
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")


def test_an_unknown_audio_format_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIO_FORMAT", "opus")
    with pytest.raises(ValidationError, match="audio_format"):
        Settings()
