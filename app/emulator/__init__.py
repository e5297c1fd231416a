"""Local OpenAI Realtime API (GA) emulator for tests and the quickstart.

emulator = RealtimeEmulator(EmulatorConfig(tts="synthetic", realtime_pacing=False))
await emulator.start()                      # loopback, free port
client = AsyncOpenAI(api_key="x", websocket_base_url=emulator.url)
session = await emulator.wait_for_session(0)
await session.wait_for(lambda e: e["type"] == "session.update")
emulator.config.faults.close_code_after_s = (1006, 0.0)   # drop live sessions now
"""

from app.emulator.config import EmulatorConfig, Faults
from app.emulator.server import RealtimeEmulator, serve_forever
from app.emulator.session import EmulatedSession

__all__ = ["EmulatedSession", "EmulatorConfig", "Faults", "RealtimeEmulator", "serve_forever"]
