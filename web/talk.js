// The talk page: get a token from this service, join the room the token names (the agent is dispatched as the room
// is created), publish the microphone, play the agent, and show transcripts, the agent's state and the task list.
import { Room, RoomEvent, ScreenSharePresets, Track } from "livekit-client";

const TRANSCRIPTION_TOPIC = "lk.transcription"; // LiveKit Agents' text streams of both sides
const TASKS_TOPIC = "voicefleet.tasks"; // the agent's task list after every task tool (voicefleet_agent.contract)
const SCREEN_TOPIC = "voicefleet.screen"; // what the agent received of the shared screen (voicefleet_agent.contract)
const STATE_ATTRIBUTE = "lk.agent.state";

const $ = (id) => document.getElementById(id);
const micButton = $("mic");
const screenButton = $("screen");
let room = null;
// Milliseconds since the page started loading (performance.now()): when the token came, the room joined, the agent's
// first words were shown, and its audio first played here (the receiver's level, what the speaker gets).
const timings = {};
window.voicefleetTimings = timings;

function mark(name) {
  if (!(name in timings)) timings[name] = Math.round(performance.now());
}

function watchAudioLevel(track) {
  // the decoded audio's energy at this receiver (what goes to the speaker), polled until the agent first speaks
  const poll = setInterval(async () => {
    if (!track.receiver) return;
    const stats = await track.receiver.getStats();
    stats.forEach((report) => {
      if (report.type === "inbound-rtp" && (report.audioLevel > 0.01 || report.totalAudioEnergy > 1e-4)) {
        mark("agentAudio");
        clearInterval(poll);
      }
    });
  }, 25);
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
}

async function fetchToken() {
  const key = new URLSearchParams(location.hash.slice(1)).get("key"); // a fragment never reaches a server log
  const headers = { "Content-Type": "application/json" };
  if (key) headers["X-Voicefleet-Key"] = key;
  const response = await fetch("api/token", { method: "POST", headers, body: "{}" });
  const body = await response.json();
  if (!response.ok) throw new Error(`token refused (${response.status}): ${body.error}`);
  return body;
}

const segments = new Map();

function transcriptLine(segmentId, speaker) {
  let line = segments.get(segmentId);
  if (!line) {
    line = document.createElement("li");
    line.className = speaker === "You" ? "user" : "agent";
    line.dataset.speaker = speaker;
    segments.set(segmentId, line);
    $("transcript").appendChild(line);
  }
  return line;
}

async function onTranscription(reader, participant) {
  const attributes = reader.info.attributes || {};
  const speaker = participant.identity === room.localParticipant.identity ? "You" : "Agent";
  const line = transcriptLine(attributes["lk.segment_id"] || reader.info.id, speaker);
  const final = attributes["lk.transcription_final"] === "true";
  let text = "";
  for await (const chunk of reader) {
    if (speaker === "Agent") mark("agentText");
    text += chunk;
    line.textContent = text;
  }
  line.classList.toggle("interim", speaker === "You" && !final);
  line.scrollIntoView({ block: "end" });
}

async function onTasks(reader) {
  const tasks = JSON.parse(await reader.readAll());
  const list = $("tasks");
  list.replaceChildren();
  if (tasks.length === 0) {
    list.innerHTML = '<li class="empty">No tasks yet.</li>';
  }
  for (const task of tasks) {
    const item = document.createElement("li");
    item.textContent = task.due ? `${task.title} — ${task.due}` : task.title;
    item.classList.toggle("done", Boolean(task.done));
    item.dataset.taskId = task.id;
    list.appendChild(item);
  }
}

async function onScreenReport(reader) {
  // {frames, width, height, ended}: the agent's side of the screen share
  const report = JSON.parse(await reader.readAll());
  window.voicefleetScreen = report;
  $("screen-status").textContent = report.ended
    ? `The agent received ${report.frames} frames of your screen.`
    : `The agent sees your screen: ${report.frames} frames, ${report.width}×${report.height}.`;
  $("screen-status").hidden = false;
}

function setSharing(sharing) {
  screenButton.setAttribute("aria-pressed", String(sharing));
  screenButton.textContent = sharing ? "Stop sharing" : "Share screen";
}

async function toggleScreen() {
  if (!room) return;
  const sharing = room.localParticipant.isScreenShareEnabled;
  try {
    // 5 frames a second is plenty for an agent looking at a screen, and cheap for the pod decoding it
    const preset = ScreenSharePresets.h720fps5;
    await room.localParticipant.setScreenShareEnabled(
      !sharing,
      { audio: false, resolution: preset.resolution },
      { screenShareEncoding: preset.encoding },
    );
    setSharing(!sharing);
  } catch (error) {
    showError(`screen share: ${error.message || error}`); // the person declined, or the browser cannot
  }
}

function onAttributes(participant) {
  const state = participant.attributes?.[STATE_ATTRIBUTE];
  if (state) setState(state);
}

async function connect() {
  showError("");
  setState("connecting");
  const { server_url: url, participant_token: token } = await fetchToken();
  mark("token");
  room = new Room();
  room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, (reader, participant) => onTranscription(reader, participant));
  room.registerTextStreamHandler(TASKS_TOPIC, (reader) => onTasks(reader));
  room.registerTextStreamHandler(SCREEN_TOPIC, (reader) => onScreenReport(reader));
  room.on(RoomEvent.LocalTrackUnpublished, (publication) => {
    if (publication.source === Track.Source.ScreenShare) setSharing(false); // stopped from the browser's own bar
  });
  room.on(RoomEvent.TrackSubscribed, (track) => {
    if (track.kind !== Track.Kind.Audio) return;
    $("audio").appendChild(track.attach());
    watchAudioLevel(track);
  });
  room.on(RoomEvent.ParticipantAttributesChanged, (_changed, participant) => onAttributes(participant));
  room.on(RoomEvent.ParticipantConnected, (participant) => onAttributes(participant));
  room.on(RoomEvent.Disconnected, () => {
    setState("disconnected");
    micButton.setAttribute("aria-pressed", "false");
    micButton.textContent = "Start talking";
    screenButton.disabled = true;
    setSharing(false);
  });
  await room.connect(url, token);
  mark("joined");
  await room.localParticipant.setMicrophoneEnabled(true);
  setState("connected");
  micButton.setAttribute("aria-pressed", "true");
  micButton.textContent = "Stop";
  screenButton.disabled = false;
  window.voicefleet = { room }; // for people poking at it in the console, and for the browser test
}

micButton.addEventListener("click", async () => {
  if (room && room.state !== "disconnected") {
    await room.disconnect();
    room = null;
    return;
  }
  try {
    await connect();
  } catch (error) {
    setState("disconnected");
    showError(String(error.message || error));
  }
});

screenButton.addEventListener("click", toggleScreen);

if (new URLSearchParams(location.search).has("autostart")) micButton.click();
