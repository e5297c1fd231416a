"""One settings object, built once at start-up and passed in (never read at import time)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_TWILIO_AUTH_TOKEN = "dev-twilio-auth-token"
DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise phone agent. Speak in short sentences. "
    "If the caller asks for a person, use transfer_to_human. "
    "When the conversation is over, say goodbye and then call end_call."
)


class Settings(BaseSettings):
    """Every knob of the service; environment names are the upper-cased field names."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # Public identity
    public_base_url: str = "http://127.0.0.1:8000"

    # Twilio
    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: SecretStr = SecretStr(DEV_TWILIO_AUTH_TOKEN)
    twilio_api_base_url: str = "https://api.twilio.com"
    # Webhook Rules: the SharedKeys Twilio may sign with, "KEY_ID:SECRET" pairs separated by commas
    twilio_webhook_shared_keys: SecretStr | None = None

    # OpenAI Realtime
    openai_api_key: SecretStr | None = None
    openai_realtime_url: str = "wss://api.openai.com/v1"
    openai_realtime_model: str = "gpt-realtime"
    # The Realtime (and transcription) sessions' socket: picows (frames in C, written at once; the default)
    # or the openai SDK's own connection (websockets). docs/PERFORMANCE.md has both side by side.
    realtime_socket: Literal["picows", "sdk"] = "picows"
    # Twilio's media streams: picows under the same server and port (frames in C, no ASGI per message; the
    # default) or the ASGI route (uvicorn's WebSocket implementation). app/calls/media_socket.py.
    media_socket: Literal["picows", "asgi"] = "picows"
    audio_format: Literal["pcm24k", "pcmu"] = "pcm24k"
    # pcm24k only. fir: 1.92 ms of delay, every caller frame resampled at once (the default); soxr: its
    # stream at RESAMPLE_QUALITY, 20-73 ms held back per direction (docs/PERFORMANCE.md)
    resampler: Literal["fir", "soxr"] = "fir"
    resample_quality: Literal["LQ", "MQ", "HQ", "VHQ"] = "HQ"

    # Which engine answers calls: realtime (one speech-to-speech session) or cascaded (speech-to-text ->
    # chat model -> text-to-speech, each stage its own OpenAI-compatible server). A campaign may choose its own.
    engine: Literal["realtime", "cascaded"] = "realtime"
    # Cascaded engine stages. Unset URLs and keys: OpenAI's, with OPENAI_API_KEY (the transcription session
    # at OPENAI_REALTIME_URL). Any server speaking the same API will do (a local Whisper, vLLM, Ollama, Kokoro).
    stt_url: str | None = None  # a Realtime WebSocket base URL serving transcription sessions
    stt_api_key: SecretStr | None = None
    stt_model: str = "gpt-4o-mini-transcribe"
    stt_language: str | None = None
    chat_base_url: str = "https://api.openai.com/v1"
    chat_api_key: SecretStr | None = None
    chat_model: str = "gpt-4.1-mini"
    tts_base_url: str = "https://api.openai.com/v1"
    tts_api_key: SecretStr | None = None
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str | None = None  # None: AGENT_VOICE

    # Recordings: off, on (recorded where no candidate state needs every party's consent), or announce (the
    # agent's first words say the call is recorded, and it is). app/recording/consent.py holds the states.
    recording: Literal["off", "on", "announce"] = "off"
    recording_store: Literal["directory", "s3"] = "directory"  # directory: DATA_DIR/recordings
    recording_s3_bucket: str | None = None
    recording_s3_endpoint_url: str | None = None  # unset: AWS; else any S3-compatible server
    recording_s3_region: str = "us-east-1"
    recording_s3_access_key: SecretStr | None = None  # unset: the usual AWS credential chain
    recording_s3_secret_key: SecretStr | None = None
    # a part is written this often during the call: with the hold-back, what a node that dies loses at most
    recording_segment_s: float = Field(default=0.5, gt=0)
    # audio this recent waits (a redaction may yet come); with REDACT_TRANSCRIPTS, at least 0.5 s, and caller
    # speech waits for its transcript
    recording_holdback_s: float = Field(default=0.0, ge=0)

    # State
    redis_url: str | None = None
    # Connections per process to Redis. A command waits up to REDIS_POOL_TIMEOUT_S for a free one rather
    # than failing at once (redis-py's default pool raises when its 100 are in use: 100 busy calls did that).
    redis_max_connections: int = Field(default=200, ge=1)
    redis_pool_timeout_s: float = Field(default=5.0, gt=0)
    database_url: str | None = None
    data_dir: Path = Path("var")

    # Agent
    business_name: str = "Switchboard Demo"
    agent_instructions: str = DEFAULT_INSTRUCTIONS
    agent_voice: str = "marin"
    transfer_number: str | None = None
    tool_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    tool_timeout_s: float = 8.0

    # Media stream
    stream_token_secret: SecretStr | None = None
    stream_token_ttl_s: int = 120
    max_ws_message_bytes: int = 64 * 1024

    # HTTP request bodies: most routes take small JSON or forms; contact, DNC and registry imports more
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_import_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Failed API keys and console sign-ins per client address before it gets 429 until they age out
    auth_failure_burst: int = Field(default=20, ge=1)
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    max_bad_frames: int = 50

    # Dialer
    declared_emergency_states: Annotated[list[str], NoDecode] = Field(default_factory=list)  # e.g. LA: no calls there
    dialer_in_process: bool | None = None  # None: run the dialer inside serve on embedded defaults (SQLite)

    # Budget (USD; unset: no cap). Caps set over the API override these.
    budget_per_call_usd: float | None = None
    budget_per_day_usd: float | None = None
    budget_timezone: str = "America/New_York"  # the operator's day for daily caps
    budget_alert_webhook: str | None = None
    budget_runaway_margin: float = 0.1  # past a cap by this fraction, a call is cut without waiting
    price_table_file: Path | None = None  # JSON overriding the built-in 2026 list prices

    # Post-call results (app.results): after a call is archived, the chat model (CHAT_BASE_URL) writes a
    # summary and fills in the extraction schema (a campaign's, else POST_CALL_SCHEMA_FILE's, else the
    # built-in one); the results go to the campaign's webhook, else POST_CALL_WEBHOOK_URL, signed.
    post_call_results: bool = True
    post_call_model: str | None = None  # None: CHAT_MODEL
    post_call_schema_file: Path | None = None
    post_call_webhook_url: str | None = None
    post_call_webhook_secret: SecretStr | None = None
    post_call_poll_s: float = Field(default=2.0, gt=0)  # how often a node looks for due jobs and deliveries
    post_call_retry_base_s: float = Field(default=30.0, gt=0)  # a failed job waits this, x3 each time (6 tries)
    webhook_retry_base_s: float = Field(default=10.0, gt=0)  # a failed delivery waits this, x3 each time, <= 1 h
    webhook_retry_for_s: float = Field(default=24 * 3600.0, gt=0)  # then gives up
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    # Supervisor review
    # Comma-separated patterns redacted from transcripts before they are stored anywhere (Redis, SQL):
    # any of card, ssn, email, cvv. Empty: off.
    redact_transcripts: str = ""
    transcript_retention_days: int | None = Field(default=None, ge=1)  # None: keep transcripts for ever
    recording_retention_days: int | None = Field(default=None, ge=1)  # None: as long as the transcript
    retention_interval_s: float = 3600.0
    # Signs console session cookies; every node must share it. Unset: a random one kept in DATA_DIR.
    console_secret: SecretStr | None = None
    console_session_ttl_s: int = 8 * 3600

    # Resilience
    lease_ttl_s: float = 6.0
    lease_renew_s: float = 2.0
    upstream_recovery_deadline_s: float = 10.0
    realtime_session_max_s: float = 55 * 60.0
    sweep_interval_s: float = 5.0
    orphan_grace_s: float = 30.0

    # Server
    # On SIGTERM: not ready at once; active calls may finish for this long, then the rest are handed
    # over to other nodes through the resume path; then the process exits.
    drain_deadline_s: float = Field(default=300.0, ge=0)
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("PUBLIC_BASE_URL must be an absolute http(s) URL")
        return v.rstrip("/")

    @field_validator(
        "transfer_number",
        "redis_url",
        "database_url",
        "budget_alert_webhook",
        "budget_per_call_usd",
        "budget_per_day_usd",
        "price_table_file",
        "transcript_retention_days",
        "recording_retention_days",
        "post_call_model",
        "post_call_schema_file",
        "post_call_webhook_url",
        "post_call_webhook_secret",
        "console_secret",
        "openai_api_key",
        "stt_url",
        "stt_api_key",
        "stt_language",
        "chat_api_key",
        "tts_api_key",
        "tts_voice",
        "recording_s3_bucket",
        "recording_s3_endpoint_url",
        "recording_s3_access_key",
        "recording_s3_secret_key",
        "stream_token_secret",
        "dialer_in_process",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("tool_modules", "declared_emergency_states", mode="before")
    @classmethod
    def _list_from_env(cls, v: object) -> object:
        """From the environment: a JSON list, or comma-separated names; empty means none."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return v

    @field_validator("redact_transcripts")
    @classmethod
    def _known_patterns(cls, v: str) -> str:
        from app.archive.redaction import redactor

        redactor(cls.redaction_patterns_of(v))  # raises on an unknown name
        return v

    @staticmethod
    def redaction_patterns_of(value: str) -> list[str]:
        return [p.strip().lower() for p in value.split(",") if p.strip()]

    @property
    def effective_recording_retention_days(self) -> int | None:
        return (
            self.recording_retention_days
            if self.recording_retention_days is not None
            else (self.transcript_retention_days)
        )

    @property
    def redaction_patterns(self) -> list[str]:
        return self.redaction_patterns_of(self.redact_transcripts)

    @model_validator(mode="after")
    def _webhook_signed(self) -> Settings:
        if self.post_call_webhook_url is not None and self.post_call_webhook_secret is None:
            raise ValueError("POST_CALL_WEBHOOK_URL needs POST_CALL_WEBHOOK_SECRET: deliveries are signed")
        return self

    @model_validator(mode="after")
    def _no_dev_token_in_public(self) -> Settings:
        host = urlsplit(self.public_base_url).hostname or ""
        public = host not in ("127.0.0.1", "localhost", "::1")
        if public and self.twilio_auth_token.get_secret_value() == DEV_TWILIO_AUTH_TOKEN:
            raise ValueError("TWILIO_AUTH_TOKEN must be set when PUBLIC_BASE_URL is not a loopback address")
        return self

    def twilio_webhook_shared_key_secrets(self) -> dict[str, str]:
        return self.shared_keys_of(self.twilio_webhook_shared_keys)

    @staticmethod
    def shared_keys_of(value: SecretStr | None) -> dict[str, str]:
        keys: dict[str, str] = {}
        for pair in (value.get_secret_value() if value else "").split(","):
            key_id, _, secret = pair.strip().partition(":")
            if key_id.strip() and secret.strip():
                keys[key_id.strip()] = secret.strip()
        return keys

    @field_validator("twilio_webhook_shared_keys")
    @classmethod
    def _shared_keys_well_formed(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            pairs = [p for p in v.get_secret_value().split(",") if p.strip()]
            if len(cls.shared_keys_of(v)) != len(pairs):
                raise ValueError("TWILIO_WEBHOOK_SHARED_KEYS takes KEY_ID:SECRET pairs separated by commas")
        return v

    @property
    def public_ws_base(self) -> str:
        """wss://host form of the public base URL (Twilio only opens wss streams)."""
        parts = urlsplit(self.public_base_url)
        return f"wss://{parts.netloc}{parts.path}"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'switchboard.db').as_posix()}"

    @property
    def stream_secret(self) -> bytes:
        """Key for stream tokens; defaults to one derived from the Twilio auth token so all nodes agree."""
        if self.stream_token_secret is not None:
            return self.stream_token_secret.get_secret_value().encode()
        return b"stream-token:" + self.twilio_auth_token.get_secret_value().encode()
