"""The cascaded engine's sequencing, driven with plain values: no event loop, no network."""

from __future__ import annotations

from app.core.cascade import (
    PCM24K_BYTES_PER_MS,
    AgentSaid,
    AnswerStreamed,
    CallerSaid,
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    CancelChat,
    CancelSpeech,
    CascadeSequencer,
    ChatDelta,
    ChatFailed,
    ChatFinished,
    ChatToolCalled,
    ClearPlayback,
    Command,
    GiveUp,
    PlayAudio,
    PlaybackDrained,
    RunTool,
    SpeechAudio,
    SpeechFailed,
    SpeechFinished,
    StageReached,
    StartChat,
    StartSpeech,
    ToolFinished,
)

GREETING = "Thanks for calling Acme Dental. How can I help?"


def audio(ms: int) -> bytes:
    return b"\x01\x00" * (ms * PCM24K_BYTES_PER_MS // 2)


def of(kind: type, commands: list[Command]) -> list[Command]:
    return [c for c in commands if isinstance(c, kind)]


def greeted() -> CascadeSequencer:
    seq = CascadeSequencer("You are Acme Dental's receptionist.", greeting=GREETING)
    assert seq.start(0) == [StartSpeech(1, GREETING)]
    assert seq.handle(SpeechAudio(1, audio(100), 200)) == [PlayAudio(1, audio(100))]
    assert seq.handle(SpeechFinished(1, 300)) == [AnswerStreamed(1)]
    assert seq.busy  # still playing at the caller's end
    assert seq.handle(PlaybackDrained(1, 400)) == [AgentSaid(1, GREETING, interrupted=False)]
    assert not seq.busy
    return seq


def test_the_greeting_is_spoken_as_it_is_and_is_the_conversations_first_line() -> None:
    seq = greeted()
    assert seq.history == [{"role": "assistant", "content": GREETING}]


def test_a_turn_asks_the_chat_model_speaks_each_clause_as_it_completes_and_plays_them_in_order() -> None:
    seq = greeted()
    assert seq.handle(CallerStoppedSpeaking(1_000)) == []
    asked = seq.handle(CallerSaid("item_1", "When are you open?", 1_300))
    assert asked == [
        StageReached(2, "transcript", 300),
        StartChat(1, ({"role": "system", "content": "You are Acme Dental's receptionist."},
                      {"role": "assistant", "content": GREETING}, {"role": "user", "content": "When are you open?"})),
    ]  # fmt: skip
    assert seq.handle(ChatDelta(1, "We open at ", 1_650)) == [StageReached(2, "chat_first_token", 650)]
    assert seq.handle(ChatDelta(1, "nine. We close", 1_700)) == [StartSpeech(2, "We open at nine.")]
    assert seq.handle(ChatDelta(1, " at six. See you", 1_750)) == [StartSpeech(3, "We close at six.")]
    # At most two speech requests at once: the last clause waits for one to finish.
    assert seq.handle(ChatDelta(1, " soon.", 1_800)) == []
    assert seq.handle(ChatFinished(1, 1_810, {"total_tokens": 40})) == []
    # The second clause's audio comes first: held until the first clause has played out.
    assert seq.handle(SpeechAudio(3, audio(40), 1_900)) == [StageReached(2, "speech_first_bytes", 900)]
    assert seq.handle(SpeechAudio(2, audio(60), 1_950)) == [
        StageReached(2, "first_audio", 950),
        PlayAudio(2, audio(60)),
    ]
    finished = seq.handle(SpeechFinished(2, 2_000))
    assert finished == [PlayAudio(2, audio(40)), StartSpeech(4, "See you soon.")]
    assert seq.handle(SpeechFinished(3, 2_050)) == []
    assert seq.handle(SpeechAudio(4, audio(30), 2_100)) == [PlayAudio(2, audio(30))]
    assert seq.handle(SpeechFinished(4, 2_150)) == [AnswerStreamed(2)]
    assert seq.handle(PlaybackDrained(1, 2_160)) == []  # another turn's: nothing
    assert seq.handle(PlaybackDrained(2, 2_400)) == [
        AgentSaid(2, "We open at nine. We close at six. See you soon.", interrupted=False)
    ]
    assert not seq.busy
    assert seq.history[-1] == {"role": "assistant", "content": "We open at nine. We close at six. See you soon."}


def test_a_barge_in_cancels_chat_and_speech_flushes_playback_and_keeps_only_what_was_heard() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "Tell me about cleanings.", 1_200))
    seq.handle(ChatDelta(1, "A cleaning takes forty minutes. It includes an exam and ", 1_500))
    seq.handle(SpeechAudio(2, audio(1_000), 1_700))
    seq.handle(SpeechFinished(2, 1_800))
    seq.handle(ChatDelta(1, "a polish. Most plans cover it twice a year. ", 1_900))
    seq.handle(SpeechAudio(3, audio(2_000), 2_000))  # "It includes an exam and a polish." (2 s of audio)
    # The caller heard the first clause (1 s) and half of the second, then spoke.
    out = seq.handle(CallerStartedSpeaking(3_000, heard_ms=2_000))
    assert out == [
        CancelChat(1),
        CancelSpeech(3),
        CancelSpeech(4),
        ClearPlayback(2),
        AgentSaid(2, "A cleaning takes forty minutes. It includes an", interrupted=True),
    ]
    assert seq.history[-1] == {"role": "assistant", "content": "A cleaning takes forty minutes. It includes an"}
    assert not seq.busy
    # What the cancelled streams still deliver is ignored.
    assert seq.handle(SpeechAudio(3, audio(100), 3_010)) == []
    assert seq.handle(ChatDelta(1, "More text.", 3_020)) == []
    assert seq.handle(ChatFinished(1, 3_030)) == []


def test_a_barge_in_after_the_chat_ended_replaces_its_words_with_what_was_heard() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "Hi", 1_200))
    seq.handle(ChatDelta(1, "Hello there. How are you today?", 1_400))
    seq.handle(ChatFinished(1, 1_500))  # both clauses known; the history has the answer
    assert seq.history[-1] == {"role": "assistant", "content": "Hello there. How are you today?"}
    seq.handle(SpeechAudio(2, audio(500), 1_600))
    seq.handle(CallerStartedSpeaking(1_700, heard_ms=0))  # nothing heard yet: nothing of it stays
    assert seq.history[-1] == {"role": "user", "content": "Hi"}


def test_the_callers_new_words_before_any_answer_cancel_the_request_and_ask_again_with_both() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "I need to move", 1_200))
    seq.handle(CallerStartedSpeaking(1_300))
    seq.handle(CallerStoppedSpeaking(2_000))
    out = seq.handle(CallerSaid("item_2", "my Tuesday appointment.", 2_300))
    (start,) = of(StartChat, out)
    assert start.request == 2
    assert [m["content"] for m in start.messages[-2:]] == ["I need to move", "my Tuesday appointment."]


def test_tool_calls_run_and_their_results_go_back_to_the_model_for_the_rest_of_the_answer() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "What is my balance?", 1_200))
    assert seq.handle(ChatDelta(1, "Let me check that for you. ", 1_400)) == [
        StageReached(2, "chat_first_token", 400), StartSpeech(2, "Let me check that for you.")
    ]  # fmt: skip
    seq.handle(ChatToolCalled(1, "call_1", "check_balance", "{}"))
    assert seq.handle(ChatFinished(1, 1_500)) == [RunTool("call_1", "check_balance", "{}")]
    seq.handle(SpeechAudio(2, audio(800), 1_600))
    assert of(AgentSaid, seq.handle(SpeechFinished(2, 1_700))) == []  # the answer is not over
    asked = seq.handle(ToolFinished("call_1", '{"balance": "42.00"}', 1_800))
    (start,) = of(StartChat, asked)
    assert start.messages[-2]["tool_calls"][0]["id"] == "call_1"
    assert start.messages[-1] == {"role": "tool", "tool_call_id": "call_1", "content": '{"balance": "42.00"}'}
    seq.handle(ChatDelta(2, "Your balance is 42 dollars.", 2_000))
    assert seq.handle(ChatFinished(2, 2_050)) == [StartSpeech(3, "Your balance is 42 dollars.")]
    seq.handle(SpeechAudio(3, audio(500), 2_100))
    assert seq.handle(SpeechFinished(3, 2_200)) == [AnswerStreamed(2)]
    assert seq.handle(PlaybackDrained(2, 2_500)) == [
        AgentSaid(2, "Let me check that for you. Your balance is 42 dollars.", interrupted=False)
    ]


def test_an_answer_streamed_but_still_playing_is_cut_by_a_barge_in_to_what_was_heard() -> None:
    """Speech comes faster than real time: the whole answer may be streamed while the caller has heard a
    second of it. Their speech then still flushes the playback and cuts the line (and the history)."""
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "Hours?", 1_200))
    seq.handle(ChatDelta(1, "We open at nine in the morning. We close at six.", 1_400))
    seq.handle(ChatFinished(1, 1_450))
    seq.handle(SpeechAudio(2, audio(2_000), 1_500))
    seq.handle(SpeechFinished(2, 1_550))
    seq.handle(SpeechAudio(3, audio(1_000), 1_600))
    assert seq.handle(SpeechFinished(3, 1_650)) == [AnswerStreamed(2)]
    out = seq.handle(CallerStartedSpeaking(2_600, heard_ms=1_000))
    assert out == [ClearPlayback(2), AgentSaid(2, "We open at", interrupted=True)]
    assert seq.history[-1] == {"role": "assistant", "content": "We open at"}
    assert seq.handle(PlaybackDrained(2, 2_700)) == []  # too late: the turn is over


def test_a_tool_result_without_follow_up_ends_the_answer_with_what_was_said_before_it() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "That's all, bye.", 1_200))
    seq.handle(ChatDelta(1, "Goodbye, have a nice day!", 1_400))
    seq.handle(ChatToolCalled(1, "call_9", "end_call", '{"reason": "done"}'))
    finished = seq.handle(ChatFinished(1, 1_500))
    assert of(RunTool, finished) == [RunTool("call_9", "end_call", '{"reason": "done"}')]
    seq.handle(SpeechAudio(2, audio(900), 1_600))
    assert of(AnswerStreamed, seq.handle(SpeechFinished(2, 1_700))) == []  # the tool has not answered yet
    assert seq.handle(ToolFinished("call_9", '{"status": "ending"}', 1_750, follow_up=False)) == [AnswerStreamed(2)]
    assert seq.handle(PlaybackDrained(2, 2_600)) == [AgentSaid(2, "Goodbye, have a nice day!", interrupted=False)]
    assert seq.history[-1] == {"role": "tool", "tool_call_id": "call_9", "content": '{"status": "ending"}'}


def test_a_closing_line_waits_for_the_answer_playing_then_is_asked_with_its_instructions_and_token_limit() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "Hours?", 1_200))
    seq.handle(ChatDelta(1, "Nine to six.", 1_400))
    seq.handle(ChatFinished(1, 1_450))
    assert seq.closing("Wrap up now.", 160, 1_460) == []  # an answer is being said: after it
    seq.handle(SpeechAudio(2, audio(500), 1_500))
    seq.handle(SpeechFinished(2, 1_550))
    out = seq.handle(PlaybackDrained(2, 2_100))
    (start,) = of(StartChat, out)
    assert start.messages[-1] == {"role": "system", "content": "Wrap up now."}
    assert start.max_tokens == 160
    assert seq.busy


def test_a_stop_cancels_every_stream_in_flight_and_nothing_happens_after_it() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "Tell me everything.", 1_200))
    seq.handle(ChatDelta(1, "Well, there is a lot to say. ", 1_400))
    seq.handle(SpeechAudio(2, audio(1_000), 1_500))
    out = seq.stop(heard_ms=500)
    assert of(CancelChat, out) == [CancelChat(1)] and of(CancelSpeech, out) == [CancelSpeech(2)]
    assert seq.given_up and seq.handle(ChatDelta(1, "More.", 1_600)) == []


def test_a_failed_chat_request_is_retried_once_then_the_call_gives_up() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "Hello?", 1_200))
    retried = seq.handle(ChatFailed(1, "503", 1_300))
    assert [type(c) for c in retried] == [StartChat] and retried[0].request == 2  # type: ignore[union-attr]
    out = seq.handle(ChatFailed(2, "503", 1_400))
    assert of(GiveUp, out) == [GiveUp("chat model failed: 503")]
    assert seq.given_up and seq.handle(CallerSaid("item_2", "Anyone?", 2_000)) == []


def test_a_failed_speech_request_is_retried_once_then_the_call_gives_up() -> None:
    seq = CascadeSequencer("x", greeting=GREETING)
    seq.start(0)
    assert seq.handle(SpeechFailed(1, "timeout", 100)) == [StartSpeech(1, GREETING)]
    assert of(GiveUp, seq.handle(SpeechFailed(1, "timeout", 200))) == [GiveUp("speech failed: timeout")]


def test_the_history_sent_is_trimmed_to_its_budget_and_never_starts_with_a_tool_result() -> None:
    seq = CascadeSequencer("system words", history_chars=50)
    seq.history = [
        {"role": "user", "content": "x" * 40},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
        {"role": "tool", "tool_call_id": "c", "content": "y" * 30},
        {"role": "assistant", "content": "z" * 10},
    ]
    messages = seq.messages()
    assert messages[0] == {"role": "system", "content": "system words"}
    assert [m["role"] for m in messages[1:]] == ["assistant"]  # the tool result lost its call: dropped too


def test_a_barge_in_while_a_tool_runs_leaves_a_history_the_api_accepts() -> None:
    """The model's tool call gets an answer in the history (interrupted), so the next request is valid."""
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "What is my balance?", 1_200))
    seq.handle(ChatToolCalled(1, "call_1", "check_balance", "{}"))
    seq.handle(ChatFinished(1, 1_500))
    seq.handle(CallerStartedSpeaking(1_600))
    assert seq.handle(ToolFinished("call_1", '{"balance": "42.00"}', 1_700)) == []  # late: dropped
    (start,) = of(StartChat, seq.handle(CallerSaid("item_2", "Hello?", 2_000)))
    roles = [m["role"] for m in start.messages]
    asked = roles.index("assistant", 2)  # the message with the tool call
    assert start.messages[asked]["tool_calls"][0]["id"] == "call_1"
    assert start.messages[asked + 1] == {"role": "tool", "tool_call_id": "call_1",
                                         "content": '{"error":"not finished: the caller interrupted"}'}  # fmt: skip
    assert start.messages[-1] == {"role": "user", "content": "Hello?"}


def test_a_closing_line_pending_when_the_caller_cuts_in_is_their_answer() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "Hours?", 1_200))
    seq.handle(ChatDelta(1, "Nine to six.", 1_400))
    seq.handle(ChatFinished(1, 1_450))
    seq.closing("Wrap up now.", 160, 1_460)
    seq.handle(CallerStartedSpeaking(1_500, heard_ms=0))
    assert seq.busy  # the closing line still waits: nothing may hang up on the caller yet
    (start,) = of(StartChat, seq.handle(CallerSaid("item_2", "And Saturdays?", 2_500)))
    assert start.messages[-2:] == ({"role": "user", "content": "And Saturdays?"},
                                   {"role": "system", "content": "Wrap up now."})  # fmt: skip
    assert start.max_tokens == 160


def test_words_that_interrupt_an_answer_keep_what_the_caller_had_heard_of_it() -> None:
    seq = greeted()
    seq.handle(CallerStoppedSpeaking(1_000))
    seq.handle(CallerSaid("item_1", "Hours?", 1_200))
    seq.handle(ChatDelta(1, "We open at nine in the morning. We close at six.", 1_400))
    seq.handle(ChatFinished(1, 1_450))
    seq.handle(SpeechAudio(2, audio(2_000), 1_500))
    out = seq.handle(CallerSaid("dtmf_1", "[The caller pressed the key 9 on their phone keypad.]", 2_600, 1_000))
    assert of(AgentSaid, out) == [AgentSaid(2, "We open at", interrupted=True)]


def test_a_resumed_call_whose_caller_spoke_last_is_answered() -> None:
    seq = CascadeSequencer("x")
    seq.history = [{"role": "assistant", "content": GREETING}, {"role": "user", "content": "Are you there?"}]
    (start,) = of(StartChat, seq.resume(0))
    assert start.messages[-1] == {"role": "user", "content": "Are you there?"}
    answered = CascadeSequencer("x")
    answered.history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert answered.resume(0) == []
