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


def test_empty_values_mean_unset_and_lists_take_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    # An env file or a Kubernetes ConfigMap often carries every variable, some of them empty.
    for name in ("OPENAI_API_KEY", "STREAM_TOKEN_SECRET", "DIALER_IN_PROCESS", "TOOL_MODULES",
                 "DECLARED_EMERGENCY_STATES", "TRANSCRIPT_RETENTION_DAYS", "CONSOLE_SECRET"):  # fmt: skip
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert settings.openai_api_key is None and settings.stream_token_secret is None
    assert settings.dialer_in_process is None and settings.tool_modules == []
    assert settings.declared_emergency_states == [] and settings.transcript_retention_days is None
    monkeypatch.setenv("TOOL_MODULES", "acme.tools, acme.more")
    monkeypatch.setenv("DECLARED_EMERGENCY_STATES", "LA,FL")
    settings = Settings()
    assert settings.tool_modules == ["acme.tools", "acme.more"]
    assert settings.declared_emergency_states == ["LA", "FL"]
