// The blind trial's player: one transport over every condition of a trial (MUSHRA or A/B), as
// webMUSHRA, BeaqleJS and ITU-R BS.1534-3 have it. Run by Gradio as the body of `js_on_load`
// (`element`, `trigger`, `props`, `watch` are given); `props.value` is the trial as JSON
// (webapp/player.py), and the answer goes back the same way, with `trigger('submit')`.
//
// - Every sample is fetched and decoded once; all play from one AudioContext.
// - One sample sounds at a time. Pressing another switches to it at the same position: the new
//   source starts at the old one's position, both scheduled for the same audio-clock instant
//   (LEAD ahead, so they change on the same sample), with a FADE-long cross-fade (no click).
// - The transport loops over a region (the whole excerpt by default) the listener can narrow.
// - Keys: 1-9 switch to A, B, ...; R or 0 to the reference; space plays and pauses.
// - "Heard" is time on the audio clock while a sample was the one sounding: a paused or
//   suspended context adds nothing, so a 0.1-s play-pause is 0.1 s. Submit waits until every
//   sample was heard for `min_heard` seconds (the server checks the same) and, in MUSHRA,
//   every slider was set.

const FADE = 0.005;
const LEAD = 0.02;
const BANDS = ["Excellent", "Good", "Fair", "Poor", "Bad"];  // BS.1534-3's five intervals, 100 -> 0
const ACR = ["Bad", "Poor", "Fair", "Good", "Excellent"];  // 1-5 (ITU-T P.800)
const root = element.querySelector(".lab-trial") || element;
const SAVED = "separation-lab-trial";  // sessionStorage: the open trial's listening and answers
let T = null;  // the trial on show

function context() {
  if (!window.__labAudioContext) window.__labAudioContext = new AudioContext();
  return window.__labAudioContext;
}

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}

function names(keys) {
  const words = keys.map((k) => (k === "reference" ? "the reference" : k));
  return words.length === 1 ? words[0] : words.slice(0, -1).join(", ") + " and " + words[words.length - 1];
}

// ------------------------------------------------------------------------- the transport

function positionAt(time) {
  // where the transport is (s into the excerpt) at an audio-clock `time`
  if (!T.playing) return T.offset;
  const [a, b] = T.loop;
  const run = T.offset + Math.max(0, time - T.startedAt);
  return run < b ? run : a + ((run - a) % (b - a));
}

function position() {
  return T ? positionAt(context().currentTime) : 0;
}

function startSource(key, when, at) {
  const ctx = context();
  const src = ctx.createBufferSource();
  src.buffer = T.buffers[key];
  src.loop = true;
  src.loopStart = T.loop[0];
  src.loopEnd = T.loop[1];
  const gain = ctx.createGain();
  gain.gain.setValueAtTime(0, when);
  gain.gain.linearRampToValueAtTime(1, when + FADE);
  src.connect(gain).connect(ctx.destination);
  src.start(when, at);
  const node = {key, src, gain, ended: false};
  src.onended = () => { node.ended = true; T && (T.live = T.live.filter((n) => n !== node)); };
  T.live.push(node);
  return node;
}

function fadeOut(node, when) {
  node.gain.gain.cancelScheduledValues(when);
  node.gain.gain.setValueAtTime(1, when);
  node.gain.gain.linearRampToValueAtTime(0, when + FADE);
  node.src.stop(when + FADE + 0.005);
}

function account() {
  // credit the time since the last look to the sample sounding now
  if (!T || !T.playing) return;
  const now = context().currentTime;
  if (now > T.lastTick) T.heard[T.current] += now - T.lastTick;
  T.lastTick = Math.max(T.lastTick, now);
}

function restart(key) {
  // switch to `key` (or move the current one) at the transport's position, on one clock instant
  const ctx = context();
  account();
  const when = ctx.currentTime + LEAD;
  const at = Math.min(Math.max(positionAt(when), T.loop[0]), T.loop[1] - 0.001);
  const old = T.node;
  T.node = startSource(key, when, at);
  if (old) fadeOut(old, when);
  T.lastSwitch = {from: T.current, to: key, when, at};
  T.current = key;
  T.offset = at;
  T.startedAt = when;
}

function play() {
  if (!T || !T.ready || T.playing) return;
  const ctx = context();
  ctx.resume();
  const when = ctx.currentTime + LEAD;
  T.offset = Math.min(Math.max(T.offset, T.loop[0]), T.loop[1] - 0.001);
  T.node = startSource(T.current, when, T.offset);
  T.startedAt = when;
  T.lastTick = when;
  T.playing = true;
  paint();
}

function pause() {
  if (!T || !T.playing) return;
  account();
  const ctx = context();
  T.offset = position();
  if (T.node) fadeOut(T.node, ctx.currentTime);
  T.node = null;
  T.playing = false;
  paint();
}

function select(key) {
  if (!T || !T.keys.includes(key)) return;
  if (T.playing && key !== T.current) restart(key);
  else if (!T.playing) T.current = key;
  else return;
  paint();
}

function seek(seconds) {
  if (!T) return;
  const x = Math.min(Math.max(seconds, T.loop[0]), T.loop[1] - 0.001);
  if (T.playing) {
    T.offset = x;
    T.startedAt = context().currentTime + LEAD;  // positionAt(when) = x in restart
    restart(T.current);
  } else T.offset = x;
  paint();
}

function setLoop(a, b) {
  if (!T) return;
  const end = T.duration;
  a = Math.min(Math.max(Number(a) || 0, 0), end);
  b = Math.min(Math.max(Number(b) || end, 0), end);
  if (b - a < 0.5) {  // too short to hear anything: keep the old region
    T.message = "a loop is 0.5 s or longer";
    paint();
    return;
  }
  const at = position();
  T.loop = [a, b];
  T.message = "";
  if (T.playing) {
    T.offset = Math.min(Math.max(at, a), b - 0.001);
    T.startedAt = context().currentTime + LEAD;
    restart(T.current);
  } else T.offset = Math.min(Math.max(T.offset, a), b - 0.001);
  paint();
}

// ------------------------------------------------------------------------- kept across reloads

// The listening done and the answers given on the open trial, kept in the tab's sessionStorage: a
// reload, or the page reloading itself after an app restart, shows the same trial again (the server
// keeps it open) and this brings back its heard times, sliders and choices. Cleared once saved.
function keep() {
  if (!T || T.sent) return;
  const state = {trial_id: T.spec.trial_id, heard: T.heard, scores: T.scores, rated: T.rated, choice: T.choice, mos: T.mos};
  try { sessionStorage.setItem(SAVED, JSON.stringify(state)); } catch (e) { /* storage full or off: nothing kept */ }
}

function bringBack() {
  let saved = null;
  try { saved = JSON.parse(sessionStorage.getItem(SAVED) || "null"); } catch (e) { saved = null; }
  if (!saved || saved.trial_id !== T.spec.trial_id) return;
  for (const k of T.keys) if (Number.isFinite(saved.heard?.[k])) T.heard[k] = saved.heard[k];
  for (const l of T.spec.labels) {
    if (saved.rated?.[l] && Number.isFinite(saved.scores?.[l])) { T.scores[l] = saved.scores[l]; T.rated[l] = true; }
    if (Number.isFinite(saved.mos?.[l])) T.mos[l] = saved.mos[l];
  }
  if (saved.choice === "no preference" || T.spec.labels.includes(saved.choice)) T.choice = saved.choice;
}

function forget() {
  try { sessionStorage.removeItem(SAVED); } catch (e) { /* nothing kept */ }
}

// ------------------------------------------------------------------------- what is left

function left() {
  const s = T.spec;
  const order = [...s.labels, ...(T.keys.includes("reference") ? ["reference"] : [])];  // as the server words it
  const unheard = order.filter((k) => T.heard[k] < s.min_heard);
  const unrated = s.kind === "mushra" ? s.labels.filter((l) => !T.rated[l]) : [];
  const parts = [];
  if (unheard.length) parts.push(`listen to ${names(unheard)} for ${s.min_heard} s ${unheard.length > 1 ? "each" : ""}`.trim());
  if (unrated.length) parts.push(`rate ${names(unrated)}`);
  if (s.kind !== "mushra" && T.choice === null) parts.push("choose");
  return parts.join("; ");
}

function answer() {
  const s = T.spec;
  const heard = {};
  for (const k of T.keys) heard[k] = Math.round(T.heard[k] * 1000) / 1000;
  if (s.kind === "mushra") {
    const scores = {};
    for (const l of s.labels) scores[l] = T.scores[l];
    return {scores, heard, rated: s.labels.filter((l) => T.rated[l])};
  }
  const mos = {};
  for (const l of s.labels) if (T.mos[l] !== undefined) mos[l] = T.mos[l];
  return {choice: T.choice, mos, heard};
}

function submit(anyway = false) {
  if (!T || (left() && !anyway)) return;
  pause();
  T.sent = true;
  props.value = JSON.stringify({...T.spec, answer: answer()});
  trigger("submit");
  // a saved answer clears the player; a refused one (its reason is shown) leaves it: try again
  const sent = T;
  setTimeout(() => { if (T === sent && sent.sent) { sent.sent = false; paint(); } }, 5000);
  paint();
}

// ------------------------------------------------------------------------- the page

function render() {
  const s = T.spec;
  const mushra = s.kind === "mushra";
  const keyOf = (k, i) => (k === "reference" ? "R" : String(i + 1));
  const buttons = T.keys
    .map((k) => {
      const i = s.labels.indexOf(k);
      const name = k === "reference" ? "Reference" : k;
      const slider = !mushra
        ? ""
        : k === "reference"
          ? `<div class="lab-spacer"></div>`
          : `<input type="range" class="lab-score" min="0" max="100" step="1" value="${T.scores[k]}" data-key="${esc(k)}"
              aria-label="score of ${esc(k)}"><output class="lab-value" data-key="${esc(k)}">not rated</output>`;
      return `<div class="lab-cond" data-key="${esc(k)}">${slider}
        <button type="button" class="lab-switch" data-key="${esc(k)}" aria-pressed="false" title="key ${keyOf(k, i)}">${esc(name)}</button>
        <span class="lab-heard" data-key="${esc(k)}"></span>
      </div>`;
    })
    .join("");
  const scale = mushra
    ? `<div class="lab-bands">${BANDS.map((b) => `<div>${b}</div>`).join("")}</div>`
    : "";
  const ab = mushra
    ? ""
    : `<fieldset class="lab-choice"><legend>Which sounds better?</legend>
        ${[...s.labels, "no preference"].map((c) => `<label><input type="radio" name="lab-choice-${esc(s.trial_id)}" value="${esc(c)}"${T.choice === c ? " checked" : ""}> ${c === "no preference" ? "No preference" : esc(c) + " is better"}</label>`).join("")}
      </fieldset>
      <div class="lab-mos">${s.labels.map((l) => `<label>Overall quality of ${esc(l)} (optional)
        <select data-key="${esc(l)}" aria-label="overall quality of ${esc(l)}"><option value="">not rated</option>
        ${ACR.map((w, i) => `<option value="${i + 1}"${T.mos[l] === i + 1 ? " selected" : ""}>${i + 1}: ${w}</option>`).join("")}</select></label>`).join("")}</div>`;
  root.innerHTML = `
    <div class="lab-transport">
      <button type="button" class="lab-play" disabled>Loading...</button>
      <span class="lab-time">0.0 / ${s.seconds.toFixed(1)} s</span>
      <div class="lab-bar"><div class="lab-region"></div><input type="range" class="lab-seek" min="0" max="${s.seconds}" step="0.01" value="0" aria-label="position"></div>
      <span class="lab-loop">Loop from <input type="number" class="lab-loop-a" min="0" max="${s.seconds}" step="0.1" value="0" aria-label="loop from">
        to <input type="number" class="lab-loop-b" min="0" max="${s.seconds}" step="0.1" value="${s.seconds}" aria-label="loop to"> s
        <button type="button" class="lab-loop-here-a">from here</button><button type="button" class="lab-loop-here-b">to here</button></span>
    </div>
    <p class="lab-help">${mushra
      ? "Tap a letter (or the reference) to switch at the same moment; Play plays and pauses. Rate each sample against the reference."
      : "Tap A or B to switch at the same moment; Play plays and pauses."}<span class="lab-keys"> Keys: ${mushra ? "1-" + s.labels.length + ", R for the reference" : "1, 2"}; space plays and pauses.</span></p>
    <div class="lab-panel ${mushra ? "lab-mushra" : "lab-ab"}">${scale}<div class="lab-conds">${buttons}</div></div>
    ${ab}
    <p class="lab-message" role="status"></p>
    <button type="button" class="lab-submit" disabled>Submit ratings</button>`;
  root.querySelector(".lab-play").onclick = () => (T.playing ? pause() : play());
  root.querySelectorAll(".lab-switch").forEach((b) => (b.onclick = () => { select(b.dataset.key); if (!T.playing) play(); }));
  // A slider counts as set once the listener touches it: moved (input), or pressed and released
  // where it already stands (a click exactly at 50 fires no input event, yet it is an answer).
  root.querySelectorAll(".lab-score").forEach((r) => {
    const rate = () => {
      T.scores[r.dataset.key] = Number(r.value);
      T.rated[r.dataset.key] = true;
      keep();
      paint();
    };
    r.oninput = rate;
    r.onchange = rate;
    r.onpointerup = rate;
  });
  const seekBar = root.querySelector(".lab-seek");
  seekBar.oninput = () => seek(Number(seekBar.value));
  const a = root.querySelector(".lab-loop-a"), b = root.querySelector(".lab-loop-b");
  a.onchange = b.onchange = () => setLoop(a.value, b.value);
  root.querySelector(".lab-loop-here-a").onclick = () => setLoop(position(), T.loop[1]);
  root.querySelector(".lab-loop-here-b").onclick = () => setLoop(T.loop[0], position());
  root.querySelectorAll(".lab-choice input").forEach((r) => (r.onchange = () => { T.choice = r.value; keep(); paint(); }));
  root.querySelectorAll(".lab-mos select").forEach((m) => (m.onchange = () => {
    if (m.value) T.mos[m.dataset.key] = Number(m.value);
    else delete T.mos[m.dataset.key];
    keep();
  }));
  root.querySelector(".lab-submit").onclick = submit;
}

function paint() {
  if (!T) return;
  const pos = position();
  root.dataset.position = pos.toFixed(3);
  root.dataset.current = T.current;
  root.dataset.playing = String(T.playing);
  const play = root.querySelector(".lab-play");
  if (T.ready) {
    play.disabled = false;
    play.textContent = T.playing ? "Pause" : "Play";
  }
  root.querySelector(".lab-time").textContent = `${pos.toFixed(1)} / ${T.duration.toFixed(1)} s`;
  const seekBar = root.querySelector(".lab-seek");
  if (document.activeElement !== seekBar) seekBar.value = pos.toFixed(2);
  const region = root.querySelector(".lab-region");
  region.style.left = `${(100 * T.loop[0]) / T.duration}%`;
  region.style.width = `${(100 * (T.loop[1] - T.loop[0])) / T.duration}%`;
  const a = root.querySelector(".lab-loop-a"), b = root.querySelector(".lab-loop-b");
  if (document.activeElement !== a) a.value = T.loop[0].toFixed(1);
  if (document.activeElement !== b) b.value = T.loop[1].toFixed(1);
  root.querySelectorAll(".lab-switch").forEach((x) => {
    const on = x.dataset.key === T.current;
    x.setAttribute("aria-pressed", String(on));
    x.classList.toggle("lab-on", on);
  });
  root.querySelectorAll(".lab-heard").forEach((x) => {
    const h = T.heard[x.dataset.key];
    // one width for both texts (CSS), so that the columns never move under the pointer
    x.textContent = h >= T.spec.min_heard ? "heard" : `${h.toFixed(1)} of ${T.spec.min_heard} s`;
  });
  root.querySelectorAll(".lab-value").forEach((x) => {
    const k = x.dataset.key;
    x.textContent = T.rated[k] ? `${T.scores[k]} (${BANDS[Math.min(4, Math.floor((100 - T.scores[k]) / 20))]})` : "not rated";
  });
  root.querySelectorAll(".lab-score").forEach((r) => r.classList.toggle("lab-unrated", !T.rated[r.dataset.key]));
  const todo = left();
  const button = root.querySelector(".lab-submit");
  button.disabled = !!todo || T.sent;
  button.textContent = T.sent ? "Sending..." : todo ? `Submit ratings (${todo} first)` : "Submit ratings";
  root.querySelector(".lab-message").textContent = T.error || T.message || "";
}

async function load() {
  const trial = T;
  const ctx = context();
  try {
    const decoded = await Promise.all(
      trial.keys.map(async (k) => {
        const response = await fetch(trial.spec.urls[k]);
        if (!response.ok) throw new Error(`${k}: HTTP ${response.status}`);
        return [k, await ctx.decodeAudioData(await response.arrayBuffer())];
      }),
    );
    if (T !== trial) return;  // another trial came meanwhile
    for (const [k, buffer] of decoded) trial.buffers[k] = buffer;
    trial.duration = Math.min(...decoded.map(([, x]) => x.duration));
    trial.loop = [0, trial.duration];
    trial.ready = true;
  } catch (err) {
    if (T === trial) trial.error = `The samples could not be loaded (${err.message}): start the trial again.`;
  }
  paint();
}

function stop() {
  if (!T) return;
  for (const n of T.live) {
    try { n.src.stop(); } catch (e) { /* never started */ }
  }
  clearInterval(T.timer);
  T = null;
}

function build() {
  let spec = null;
  try {
    spec = props.value ? JSON.parse(props.value) : null;
  } catch (e) {
    spec = null;
  }
  if (spec && T && spec.trial_id === T.spec.trial_id) {
    if (!spec.answer && T.sent) { T.sent = false; paint(); }  // sent back unanswered: try again
    return;  // our own answer, or the same trial again
  }
  if (!spec && T && T.sent) forget();  // the answer was saved (the server cleared the player)
  stop();
  if (!spec || !spec.trial_id) {
    root.innerHTML = "";
    root.dataset.state = "empty";
    return;
  }
  const keys = [...(spec.urls.reference ? ["reference"] : []), ...spec.labels];
  T = {
    spec, keys, buffers: {}, live: [], node: null, ready: false, duration: spec.seconds,
    heard: Object.fromEntries(keys.map((k) => [k, 0])), rated: {}, scores: Object.fromEntries(spec.labels.map((l) => [l, 50])),
    choice: null, mos: {}, current: keys[0], playing: false, offset: 0, startedAt: 0, lastTick: 0,
    loop: [0, spec.seconds], sent: false, error: "", message: "", lastSwitch: null,
  };
  root.dataset.state = "trial";
  root.dataset.trial = spec.trial_id;
  bringBack();
  render();
  let ticks = 0;
  T.timer = setInterval(() => { account(); paint(); if (++ticks % 5 === 0) keep(); }, 100);
  paint();
  load();
}

window.addEventListener("pagehide", () => { account(); keep(); });  // a reload: the last 0.5 s too

document.addEventListener("keydown", (e) => {
  if (!T || !root.isConnected || root.offsetParent === null) return;
  const target = e.target;
  if (target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" || (target.tagName === "INPUT" && !["range", "radio"].includes(target.type)))) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === " ") {
    e.preventDefault();
    if (root.contains(document.activeElement)) document.activeElement.blur();  // no second "click" on keyup
    T.playing ? pause() : play();
  } else if (e.key === "r" || e.key === "R" || (e.key === "0" && T.keys.includes("reference"))) {
    select("reference");
  } else if (/^[1-9]$/.test(e.key) && Number(e.key) <= T.spec.labels.length) {
    e.preventDefault();
    select(T.spec.labels[Number(e.key) - 1]);
  }
});

// for the tests (and the curious): the transport as it is
root.labPlayer = {
  state: () => T && {
    position: position(), current: T.current, playing: T.playing, loop: [...T.loop], heard: {...T.heard},
    ready: T.ready, duration: T.duration, lastSwitch: T.lastSwitch, contextTime: context().currentTime,
    sounding: T.live.filter((n) => !n.ended && n.gain.gain.value > 1e-3).map((n) => n.key),
    sources: T.live.filter((n) => !n.ended).length, left: left(),
  },
  spec: () => T && T.spec,
  // as a page altered by hand would: send what there is, finished or not (the server must refuse)
  submitAnyway: () => submit(true),
  play, pause, select, seek, setLoop,
};

watch("value", build);
build();
