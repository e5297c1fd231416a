// "Talk to the agent": the microphone to the server as PCM16 24 kHz, the agent's audio played as it comes
// through a small jitter buffer, marks echoed once the audio before them has played (so a barge-in cuts
// the transcript where the caller really was), "clear" flushes what is queued, the transcript shown live.
(function () {
  "use strict";
  const RATE = 24000;
  const JITTER_S = 0.06; // the first audio of an answer waits this long, so the next piece is there in time
  const form = document.getElementById("talk");
  const startButton = document.getElementById("talk-start");
  const hangupButton = document.getElementById("talk-hangup");
  const statusLine = document.getElementById("talk-status");
  const transcript = document.getElementById("talk-transcript");
  let socket = null;
  let context = null;
  let microphone = null;
  let playhead = 0; // context time the queued agent audio ends at
  let sources = []; // queued agent audio, to stop on "clear"
  let marks = []; // [name, due time] in order
  let markTimer = null;
  const state = { received: 0, played: 0, marks: 0, lines: 0 };
  window.talkState = state; // read by the browser test and by anyone debugging the page

  function say(text) {
    statusLine.textContent = text;
  }

  function showLine(line) {
    const item = document.createElement("li");
    item.className = "line " + line.speaker + (line.interrupted ? " interrupted" : "");
    const who = document.createElement("span");
    who.className = "speaker";
    who.textContent = line.speaker === "caller" ? "You" : "Agent";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    item.append(who, " ", text);
    if (line.interrupted) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "cut off";
      text.append(" ", badge);
    }
    transcript.append(item);
    state.lines += 1;
  }

  function play(buffer) {
    const samples = new Int16Array(buffer);
    if (!samples.length) return;
    const audio = context.createBuffer(1, samples.length, RATE);
    const channel = audio.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 0x8000;
    const source = context.createBufferSource();
    source.buffer = audio;
    source.connect(context.destination);
    const now = context.currentTime;
    if (playhead < now) playhead = now + JITTER_S;
    source.start(playhead);
    playhead += audio.duration;
    sources.push(source);
    source.onended = function () {
      sources = sources.filter((s) => s !== source);
      state.played += samples.length * 2;
    };
    state.received += samples.length * 2;
  }

  function echoDueMarks() {
    if (context === null) return;
    const now = context.currentTime;
    while (marks.length && marks[0][1] <= now) {
      const name = marks.shift()[0];
      socket.send(JSON.stringify({ type: "mark", name: name }));
      state.marks += 1;
    }
    markTimer = marks.length ? setTimeout(echoDueMarks, Math.max(5, (marks[0][1] - now) * 1000)) : null;
  }

  function queueMark(name) {
    marks.push([name, Math.max(playhead, context.currentTime)]);
    if (markTimer === null) echoDueMarks();
  }

  function clearPlayback() {
    for (const source of sources) {
      try { source.stop(); } catch (e) { /* already ended */ }
    }
    sources = [];
    playhead = context.currentTime;
    // Twilio's rule: a clear echoes every pending mark at once (what was cut is what was not played).
    const pending = marks;
    marks = [];
    for (const [name] of pending) socket.send(JSON.stringify({ type: "mark", name: name }));
  }

  function ended(reason) {
    say("Call ended: " + reason);
    startButton.disabled = false;
    hangupButton.disabled = true;
    // Everything the call opened is closed: a browser allows only a few audio contexts at once.
    if (markTimer !== null) clearTimeout(markTimer);
    markTimer = null;
    marks = [];
    if (microphone) microphone.getTracks().forEach((t) => t.stop());
    microphone = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close(1000, "call ended");
    if (context) context.close();
    context = null;
  }

  async function start() {
    startButton.disabled = true;
    say("Asking for the microphone...");
    const engine = form.querySelector("input[name=engine]:checked").value;
    try {
      context = new AudioContext({ sampleRate: RATE });
      await context.audioWorklet.addModule("/console/static/talk-worklet.js");
      microphone = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      say("No microphone: " + error.message);
      startButton.disabled = false;
      return;
    }
    await context.resume();
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + form.dataset.socket;
    socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onopen = function () {
      let input;
      try {
        // Some browsers (Firefox) refuse a microphone at another rate than the context's 24 kHz.
        input = context.createMediaStreamSource(microphone);
      } catch (error) {
        ended("this browser cannot take the microphone at 24 kHz (" + error.message + ")");
        return;
      }
      socket.send(JSON.stringify({ type: "start", csrf: form.dataset.csrf, engine: engine }));
      const frames = new AudioWorkletNode(context, "microphone-frames");
      frames.port.onmessage = function (event) {
        if (socket.readyState === WebSocket.OPEN) socket.send(event.data);
      };
      input.connect(frames);
      hangupButton.disabled = false;
      say("Connecting...");
    };
    socket.onmessage = function (event) {
      if (typeof event.data !== "string") {
        play(event.data);
        return;
      }
      const message = JSON.parse(event.data);
      if (message.type === "mark") queueMark(message.name);
      else if (message.type === "clear") clearPlayback();
      else if (message.type === "transcript") showLine(message);
      else if (message.type === "started") {
        statusLine.dataset.callSid = message.call_sid;
        say("In a call with the agent (" + message.engine + "): speak.");
      }
      else if (message.type === "ended") ended(message.reason);
    };
    socket.onclose = function (event) {
      if (!startButton.disabled) return; // ended already
      ended(event.reason || "disconnected");
    };
  }

  startButton.addEventListener("click", start);
  hangupButton.addEventListener("click", function () {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "hangup" }));
  });
})();
