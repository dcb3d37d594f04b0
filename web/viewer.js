/**
 * The presenter viewer: plays the live avatar stream and measures it.
 *
 * One WebSocket (/ws) carries signalling plus the server's clock and segment messages; one
 * RTCPeerConnection receives H.264 video and Opus audio (and sends the microphone when the
 * server's source is "browser-mic", or with barge-in: the server listens for the viewer
 * speaking over the presenter; echo cancellation keeps the avatar's own voice out). Both
 * remote tracks play from ONE MediaStream in ONE <video> element, so the browser lip-syncs
 * them.
 *
 * When the server stamps its stream, the page also measures it: each presented frame's index
 * is read from the pixel stamp (requestVideoFrameCallback), each audio click is timed by an
 * AudioWorklet, and both land on the performance.now() clock (see measure.js). Measuring
 * changes nothing: the lip-sync correction is chosen by the page's `sync=` query parameter
 * (sync-trim.js: `browser`, the default, or `off`), the same with stamps or without.
 *
 * window.viewer: {ready, start(), stats(), measurements()}.
 */
import {
  DEFAULT_LAYOUT,
  contextTimeToPerfMs,
  createFrameTracker,
  decodeStamp,
  expectedFrameIndex,
  glassToGlassMs,
  jitterBufferMs,
  matchClick,
  median,
  stripSize,
  summarizeStats,
  playoutDelayMs,
  playoutSyncMs,
} from './measure.js';
import { createSyncTrim, parseSyncMode } from './sync-trim.js';

const BACKOFF_S = [1, 2, 4, 8, 10]; // then 10 s for good
const HELLO_TIMEOUT_MS = 10000;
const ICE_GATHERING_TIMEOUT_MS = 2000; // the server does not trickle: offer all we have by then
const CONNECT_TIMEOUT_MS = 15000; // offer sent -> peer connection connected
const DISCONNECTED_GRACE_MS = 3000;
const STATS_INTERVAL_MS = 500;
const FPS_WINDOW_MS = 1000;
const RECENT_FRAMES = 25; // glass-to-glass median over about a second of frames
const RECENT_CLICKS = 5; // A/V offset median over about five seconds
const CLICK_GIVE_UP_MS = 3000; // match a click with whatever frames there are by then
const NOMINAL_FRAME_WIDTH = 512; // the stamp layout is in the 512x512 frame's pixels
const HIGHPASS_HZ = 12000;
const BUTTERWORTH_Q_DB = 20 * Math.log10(Math.SQRT1_2); // Web Audio takes high-pass Q in dB
const WORKLET_URL = new URL('./click-detector.js', import.meta.url);
const TAP_BURSTS = 6; // bursts that measure the click tap's own delay
const TAP_BURST_GAP_MS = 150;

const feature = {
  webrtc: typeof RTCPeerConnection === 'function',
  frameCallback: 'requestVideoFrameCallback' in HTMLVideoElement.prototype,
  codecPreferences:
    typeof RTCRtpTransceiver === 'function' &&
    'setCodecPreferences' in RTCRtpTransceiver.prototype &&
    typeof RTCRtpReceiver.getCapabilities === 'function',
  audioWorklet: typeof AudioWorkletNode === 'function',
};

// the lip-sync correction of this page (sync-trim.js); a bad value falls back, and says so
const SYNC = parseSyncMode(location.search);
if (SYNC.warning) console.warn(`viewer: ${SYNC.warning}`);

const $ = (id) => document.getElementById(id);
const ui = {
  video: $('video'),
  start: $('start'),
  state: $('state'),
  notice: $('notice'),
  stats: $('stats'),
  statsToggle: $('stats-toggle'),
  cells: Object.fromEntries(
    [...document.querySelectorAll('[data-stat]')].map((el) => [el.dataset.stat, el]),
  ),
};

/** Everything that outlives one connection. */
const app = {
  state: 'idle', // idle | connecting | connected | reconnecting | failed
  detail: '', // the reason shown with reconnecting / failed
  countdown: 0, // seconds until the next attempt
  started: false,
  failures: 0, // consecutive failed attempts: the backoff step
  session: null, // the live connection, if any (never more than one)
  last: null, // the latest session, live or not: what stats() and measurements() report
  retryTimer: 0,
  waiters: [], // start() promises waiting for the next outcome
  audioContext: null,
  workletLoaded: Promise.resolve(false),
  tapDelay: null, // Promise: measuring the click tap's own delay (once per audio context)
  tapDelayMs: null,
  micRequest: null, // Promise<MediaStream|null>, shared across reconnects
};

// -- state line and notices ------------------------------------------------------------------

function setState(state, detail = '') {
  app.state = state;
  app.detail = detail;
  renderState();
}

function renderState() {
  const s = app.session;
  const why = app.detail ? ` — ${app.detail}` : '';
  const text = {
    idle: 'idle — click to start',
    connecting: 'connecting…',
    connected: `connected${s?.activity ? ` · ${s.activity}` : ''}`,
    reconnecting: `reconnecting in ${app.countdown}s${why}`,
    failed: `failed: ${app.detail}`,
  }[app.state];
  ui.state.textContent = text;
  ui.state.dataset.state = app.state;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

// -- start and reconnect ---------------------------------------------------------------------

/** Starts (or, while waiting to reconnect, retries now). Settles on the next outcome. */
function start() {
  ui.start.hidden = true;
  ensureAudioContext(); // inside the click's user activation
  if (ui.video.srcObject) ui.video.play().catch(() => {}); // likewise: unblocks sound
  const outcome = new Promise((resolve, reject) => app.waiters.push({ resolve, reject }));
  if (app.state === 'connected') {
    settleWaiters(null);
  } else if (!feature.webrtc || typeof WebSocket !== 'function') {
    setState('failed', 'this browser has no WebRTC');
    settleWaiters(new Error(app.detail));
  } else if (!app.started || app.state === 'reconnecting') {
    app.started = true;
    connect();
  } // else connecting: the attempt under way settles it
  return outcome;
}

function settleWaiters(error) {
  const waiters = app.waiters.splice(0);
  for (const w of waiters) (error ? w.reject(error) : w.resolve(snapshot()));
}

function scheduleReconnect(reason) {
  const delayS = BACKOFF_S[Math.min(app.failures, BACKOFF_S.length - 1)];
  app.failures++;
  app.countdown = delayS;
  setState('reconnecting', reason);
  const tick = () => {
    app.countdown--;
    if (app.countdown <= 0) {
      app.retryTimer = 0;
      connect();
    } else {
      renderState();
      app.retryTimer = setTimeout(tick, 1000);
    }
  };
  app.retryTimer = setTimeout(tick, 1000);
}

function wsUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws`;
}

// -- one connection --------------------------------------------------------------------------

function newSession() {
  return {
    ws: null,
    pc: null,
    hello: null,
    clock: null,
    stream: null,
    activity: '',
    connected: false,
    timers: new Set(), // every pending later() of this session
    helloTimer: 0,
    connectTimer: 0,
    disconnectedTimer: 0,
    frameHandle: 0,
    frameLoop: null, // 'rvfc' | 'raf'
    audioNodes: [],
    strip: null, // {canvas, context} for reading the stamp
    tracker: null,
    presentedBase: null,
    framesPresented: null,
    fpsTicks: [], // [perfMs, framesPresented] over the last second
    prevInbound: { video: null, audio: null },
    nextClick: 0, // clicks before this one are matched (or given up on)
    lastK: -1,
    stats: emptyStats(),
    meas: { frames: [], clicks: [], avOffsets: [], glassToGlass: [], getStatsSamples: [] },
    trim: createSyncTrim(SYNC.mode), // the lip-sync correction (sync-trim.js)
  };
}

const alive = (s) => app.session === s;

/** setTimeout for session `s`: cancelled by teardown, never run for a dead session. */
function later(s, ms, fn) {
  const id = setTimeout(() => {
    s.timers.delete(id);
    if (alive(s)) fn();
  }, ms);
  s.timers.add(id);
  return id;
}

function cancel(s, id) {
  clearTimeout(id);
  s.timers.delete(id);
}

function connect() {
  clearTimeout(app.retryTimer);
  app.retryTimer = 0;
  if (app.session) teardown(app.session);
  const s = newSession();
  app.session = s;
  app.last = s;
  setState('connecting');
  try {
    s.ws = new WebSocket(wsUrl());
  } catch (err) {
    fail(s, `cannot open ${wsUrl()}: ${err.message}`);
    return;
  }
  s.ws.onmessage = (event) => alive(s) && onMessage(s, event.data);
  s.ws.onclose = (event) => fail(s, `websocket closed${event.code ? ` (${event.code})` : ''}`);
  s.ws.onopen = () => {
    s.helloTimer = later(s, HELLO_TIMEOUT_MS, () => fail(s, 'no hello from the server'));
  };
}

function onConnected(s) {
  if (s.connected) return;
  s.connected = true;
  cancel(s, s.connectTimer);
  later(s, STATS_INTERVAL_MS, () => pollStats(s));
  app.failures = 0;
  setState('connected');
  settleWaiters(null);
}

/** Ends session `s` (if still live) and schedules the next attempt. */
function fail(s, reason) {
  if (!alive(s)) return;
  console.warn(`viewer: ${reason}`);
  teardown(s);
  settleWaiters(new Error(reason));
  scheduleReconnect(reason);
}

function teardown(s) {
  if (app.session === s) app.session = null;
  for (const id of s.timers) clearTimeout(id);
  s.timers.clear();
  clearTimeout(s.disconnectedTimer);
  if (s.frameLoop === 'rvfc') ui.video.cancelVideoFrameCallback(s.frameHandle);
  else if (s.frameLoop === 'raf') cancelAnimationFrame(s.frameHandle);
  for (const node of s.audioNodes) node.disconnect();
  s.audioNodes = [];
  if (s.ws) {
    s.ws.onopen = s.ws.onmessage = s.ws.onclose = null;
    s.ws.close();
  }
  // the microphone track is not stopped: the next connection sends it again
  s.pc?.close();
}

function send(s, message) {
  if (s.ws?.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify(message));
}

function onMessage(s, data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch {
    return;
  }
  switch (msg?.type) {
    case 'hello':
      if (s.hello) return;
      cancel(s, s.helloTimer);
      s.hello = readHello(msg);
      // the audio context only listens for the stamps' clicks: idle without them
      if (s.hello.stamp) app.audioContext?.resume().catch(() => {});
      else app.audioContext?.suspend().catch(() => {});
      negotiate(s).catch((err) => fail(s, err.message || String(err)));
      break;
    case 'answer':
      s.pc
        ?.setRemoteDescription({ type: 'answer', sdp: msg.sdp })
        .catch((err) => fail(s, `bad answer: ${err.message}`));
      break;
    case 'error':
      showNotice(`Server: ${msg.message}`);
      fail(s, msg.message || 'server error');
      break;
    case 'clock':
      s.clock = {
        epochMs: msg.epochMs,
        anchorEpochMs: msg.anchorEpochMs,
        anchorSample: msg.anchorSample,
        pageEpochMs: performance.timeOrigin + performance.now(),
      };
      break;
    case 'segment':
      s.activity = msg.event === 'start' ? 'speaking' : 'idle';
      renderState();
      break;
    default: // unknown: ignored
  }
}

function readHello(msg) {
  const timing = {
    sampleRate: msg.sampleRate || 48000,
    frameSamples: msg.frameSamples || 1920,
    clickEverySamples: msg.clickEverySamples || 48000,
  };
  return {
    iceServers: Array.isArray(msg.iceServers) ? msg.iceServers : [],
    source: msg.source ?? 'tts',
    bargeIn: Boolean(msg.bargeIn),
    stamp: Boolean(msg.stamp),
    fps: msg.fps || 25,
    delayMs: msg.delayMs ?? null,
    layout: { ...DEFAULT_LAYOUT, ...(msg.stampLayout || {}) },
    clickHz: msg.clickHz || 15000,
    timing,
    frameMs: (timing.frameSamples * 1000) / timing.sampleRate,
  };
}

// -- WebRTC ----------------------------------------------------------------------------------

async function negotiate(s) {
  const { hello } = s;
  const wantsMic = hello.source === 'browser-mic' || hello.bargeIn;
  const mic = wantsMic ? await microphone() : null; // null: receive-only
  if (!alive(s)) return;
  const pc = new RTCPeerConnection({ iceServers: hello.iceServers });
  s.pc = pc;
  watchPeer(s, pc);
  const video = pc.addTransceiver('video', { direction: 'recvonly' });
  preferH264(video);
  const micTrack = mic?.getAudioTracks()[0];
  const audio = micTrack
    ? pc.addTransceiver(micTrack, { direction: 'sendrecv', streams: [mic] })
    : pc.addTransceiver('audio', { direction: 'recvonly' });
  attachMedia(s, video.receiver.track, audio.receiver.track);
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc, ICE_GATHERING_TIMEOUT_MS);
  if (!alive(s)) return;
  send(s, { type: 'offer', sdp: pc.localDescription.sdp, microphone: Boolean(micTrack) });
  s.connectTimer = later(s, CONNECT_TIMEOUT_MS, () => fail(s, 'timed out connecting'));
}

/** H.264 first (packetization-mode=1 ahead of 0); every other codec kept, in order, after. */
function preferH264(transceiver) {
  if (!feature.codecPreferences) return;
  const codecs = RTCRtpReceiver.getCapabilities('video')?.codecs ?? [];
  const rank = (c) => {
    if (c.mimeType.toLowerCase() !== 'video/h264') return 2;
    return /packetization-mode=1/.test(c.sdpFmtpLine ?? '') ? 0 : 1;
  };
  const ordered = codecs
    .map((codec, i) => ({ codec, i, r: rank(codec) }))
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .map((x) => x.codec);
  if (!ordered.length || rank(ordered[0]) === 2) return; // no H.264 here
  try {
    transceiver.setCodecPreferences(ordered);
  } catch (err) {
    console.warn('viewer: setCodecPreferences failed', err);
  }
}

function iceGatheringDone(pc, timeoutMs) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => pc.iceGatheringState === 'complete' && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

const ICE_TO_PEER_STATE = {
  new: 'new',
  checking: 'connecting',
  connected: 'connected',
  completed: 'connected',
  disconnected: 'disconnected',
  failed: 'failed',
  closed: 'closed',
};

const peerState = (pc) => pc.connectionState ?? ICE_TO_PEER_STATE[pc.iceConnectionState];

function watchPeer(s, pc) {
  const onChange = () => {
    if (!alive(s)) return;
    const state = peerState(pc);
    if (state !== 'disconnected') {
      clearTimeout(s.disconnectedTimer);
      s.disconnectedTimer = 0;
    }
    if (state === 'connected') onConnected(s);
    else if (state === 'failed' || state === 'closed') fail(s, `peer connection ${state}`);
    else if (state === 'disconnected' && !s.disconnectedTimer) {
      // ICE often recovers from a short outage by itself: give it a moment
      s.disconnectedTimer = setTimeout(() => {
        if (alive(s) && peerState(pc) === 'disconnected') fail(s, 'peer connection lost');
      }, DISCONNECTED_GRACE_MS);
    }
  };
  pc.addEventListener('connectionstatechange', onChange);
  pc.addEventListener('iceconnectionstatechange', onChange);
}

function microphone() {
  app.micRequest ??= requestMicrophone();
  return app.micRequest.then((stream) => {
    const live = stream?.getAudioTracks().some((t) => t.readyState === 'live');
    if (stream && !live) {
      app.micRequest = null; // unplugged or revoked since: ask again
      return microphone();
    }
    return stream;
  });
}

async function requestMicrophone() {
  if (!navigator.mediaDevices?.getUserMedia) {
    showNotice('No microphone access here (needs https or localhost): receiving only.');
    return null;
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  } catch (err) {
    showNotice(`Microphone unavailable (${err.name || err.message}): receiving only.`);
    return null;
  }
}

/** Both remote tracks into one stream in the one <video>, then the measurements on them. */
function attachMedia(s, videoTrack, audioTrack) {
  s.stream = new MediaStream([videoTrack, audioTrack]);
  const video = ui.video;
  video.playsInline = true;
  video.autoplay = true;
  video.srcObject = s.stream;
  video.play().catch((err) => {
    // started without a user gesture and the browser wants one for sound: ask for it
    if (err.name === 'NotAllowedError') ui.start.hidden = false;
  });
  watchFrames(s);
  if (s.hello.stamp) startClickDetector(s);
}

// -- presented frames ------------------------------------------------------------------------

function watchFrames(s) {
  const video = ui.video;
  s.tracker = createFrameTracker({ frameMs: s.hello.frameMs, bits: s.hello.layout.bits });
  if (feature.frameCallback) {
    s.frameLoop = 'rvfc';
    const onFrame = (_now, meta) => {
      if (!alive(s)) return;
      s.frameHandle = video.requestVideoFrameCallback(onFrame); // one registration per frame
      // expectedDisplayTime: when this frame reaches the screen, on the performance clock
      onPresented(s, meta.expectedDisplayTime, meta.presentedFrames);
    };
    s.frameHandle = video.requestVideoFrameCallback(onFrame);
  } else {
    // No rVFC: poll each animation frame. The frame shown now is on screen by about the
    // next vsync, so the rAF time is a coarse display time; duplicates are skipped later.
    s.frameLoop = 'raf';
    const poll = (now) => {
      if (!alive(s)) return;
      s.frameHandle = requestAnimationFrame(poll);
      if (video.readyState >= HTMLMediaElement.HAVE_CURRENT_DATA) {
        onPresented(s, now, paintedFrames(video));
      }
    };
    s.frameHandle = requestAnimationFrame(poll);
  }
}

function paintedFrames(video) {
  if (typeof video.mozPaintedFrames === 'number') return video.mozPaintedFrames;
  const quality = video.getVideoPlaybackQuality?.();
  return quality ? quality.totalVideoFrames - quality.droppedVideoFrames : null;
}

function onPresented(s, displayMs, presentedCount) {
  if (typeof presentedCount === 'number') {
    // presentedFrames counts per element; count from this connection's first frame
    s.presentedBase ??= presentedCount - 1;
    s.framesPresented = presentedCount - s.presentedBase;
  }
  if (!s.hello.stamp) return;
  const raw = readStamp(s);
  if (raw === null) return;
  const { timing } = s.hello;
  // only matters for the first frame (and a resync): which 65536-frame lap we are on
  const reference = s.clock
    ? expectedFrameIndex(s.clock, performance.timeOrigin + displayMs, timing)
    : null;
  const { index, status } = s.tracker.push(raw, displayMs, reference);
  if (status === 'resync') dropFramesFrom(s.meas, index);
  else if (status !== 'accepted') return;
  s.meas.frames.push([index, displayMs]);
  if (s.clock) {
    const ms = glassToGlassMs(index, displayMs, performance.timeOrigin, s.clock, timing);
    s.meas.glassToGlass.push([index, ms]);
  }
}

function dropFramesFrom(meas, index) {
  const keep = (row) => row[0] < index;
  meas.frames = meas.frames.filter(keep);
  meas.glassToGlass = meas.glassToGlass.filter(keep);
}

/** Decodes the stamp of the frame now in the <video>; only the strip is read back. */
function readStamp(s) {
  const video = ui.video;
  if (!video.videoWidth) return null;
  const { layout } = s.hello;
  const { width, height } = stripSize(layout);
  s.strip ??= makeCanvas(width, height);
  const scale = video.videoWidth / NOMINAL_FRAME_WIDTH; // 1 unless the decoder resized
  const { context } = s.strip;
  context.drawImage(video, 0, layout.y * scale, width * scale, height * scale, 0, 0, width, height);
  return decodeStamp(context.getImageData(0, 0, width, height), layout);
}

function makeCanvas(width, height) {
  const canvas =
    typeof OffscreenCanvas === 'function'
      ? new OffscreenCanvas(width, height)
      : Object.assign(document.createElement('canvas'), { width, height });
  return { canvas, context: canvas.getContext('2d', { willReadFrequently: true }) };
}

// -- audio clicks ----------------------------------------------------------------------------

function ensureAudioContext() {
  const AudioContextClass = window.AudioContext || window.webkitAudioContext;
  if (!app.audioContext && AudioContextClass) {
    try {
      // 48 kHz like the stream: no resampling in front of the detector
      app.audioContext = new AudioContextClass({ sampleRate: 48000, latencyHint: 'interactive' });
    } catch {
      app.audioContext = new AudioContextClass();
    }
    app.workletLoaded =
      feature.audioWorklet && app.audioContext.audioWorklet
        ? app.audioContext.audioWorklet.addModule(WORKLET_URL).then(
            () => true,
            (err) => {
              console.warn('viewer: click detector unavailable', err);
              return false;
            },
          )
        : Promise.resolve(false);
  }
  app.audioContext?.resume().catch(() => {});
  return app.audioContext;
}

/**
 * remote audio -> 2 x high-pass (4th order, far below the click tone, far above speech)
 *   -> 'click-detector' worklet -> gain 0 -> destination (pulled, so it keeps running; silent:
 *   the <video> plays the sound). Clicks are only taken once the tap's own delay is known.
 */
async function startClickDetector(s) {
  const ctx = app.audioContext;
  if (!ctx || !(await app.workletLoaded) || !alive(s)) return;
  try {
    app.tapDelay ??= measureTapDelay(ctx, s.hello.clickHz).then((ms) => {
      app.tapDelayMs = ms;
    });
    await app.tapDelay;
    if (!alive(s)) return;
    s.audioNodes = tapChain(ctx, ctx.createMediaStreamSource(s.stream), s.hello.clickHz, (frame) =>
      onClick(s, frame),
    );
  } catch (err) {
    // e.g. a browser that cannot feed a MediaStream at this rate into the context
    console.warn('viewer: no click detection', err);
  }
}

/** source -> high-pass x 2 -> detector -> gain 0 -> destination; onFrame(context frame). */
function tapChain(ctx, source, clickHz, onFrame) {
  const frequency = Math.min(HIGHPASS_HZ, clickHz * 0.8);
  const highpass = () =>
    new BiquadFilterNode(ctx, { type: 'highpass', frequency, Q: BUTTERWORTH_Q_DB });
  const detector = new AudioWorkletNode(ctx, 'click-detector', {
    numberOfInputs: 1,
    numberOfOutputs: 1,
    outputChannelCount: [1],
    processorOptions: { threshold: 0.08, quietMs: TAP_BURST_GAP_MS / 2 },
  });
  const nodes = [source, highpass(), highpass(), detector, new GainNode(ctx, { gain: 0 })];
  nodes.reduce((from, to) => from.connect(to)).connect(ctx.destination);
  detector.port.onmessage = (event) => onFrame(event.data.frame);
  return nodes;
}

/**
 * The click tap's own delay (ms): a MediaStreamAudioSourceNode hands its samples to the
 * graph through a FIFO (about 20 ms in Chromium). Bursts made in this context at known
 * context times go out through a MediaStream and back in through the same kind of tap; the
 * median delay to their detection is what every remote click is corrected by.
 */
async function measureTapDelay(ctx, clickHz) {
  const out = ctx.createMediaStreamDestination();
  const tone = new OscillatorNode(ctx, { frequency: clickHz });
  const gate = new GainNode(ctx, { gain: 0 });
  tone.connect(gate).connect(out);
  const detected = [];
  const nodes = tapChain(ctx, ctx.createMediaStreamSource(out.stream), clickHz, (frame) =>
    detected.push(frame / ctx.sampleRate),
  );
  const first = ctx.currentTime + 0.1;
  const bursts = [];
  for (let i = 0; i < TAP_BURSTS; i++) {
    const t = first + (i * TAP_BURST_GAP_MS) / 1000;
    bursts.push(t);
    gate.gain.setValueAtTime(0.5, t);
    gate.gain.setValueAtTime(0, t + 0.005);
  }
  tone.start();
  await new Promise((resolve) =>
    setTimeout(resolve, 100 + (TAP_BURSTS * TAP_BURST_GAP_MS) + 200),
  );
  tone.stop();
  nodes.forEach((node) => node.disconnect());
  gate.disconnect();
  const delays = detected
    .map((t) => {
      const burst = bursts.filter((b) => b <= t).pop();
      return burst === undefined ? null : (t - burst) * 1000;
    })
    .filter((ms) => ms !== null && ms < TAP_BURST_GAP_MS);
  return median(delays) ?? 0;
}

/**
 * Puts a click's context frame on the performance clock: when the <video> plays it. The
 * context plays its frame `frame` at the getOutputTimestamp mapping; it processed it the
 * context's output path earlier; the tap got it tapDelay after the sample was handed out for
 * playout; the <video>'s audio path (media-playout stats) plays it that much later.
 */
function onClick(s, frame) {
  const ctx = app.audioContext;
  const playedMs = contextTimeToPerfMs(frame / ctx.sampleRate, ctx.getOutputTimestamp?.(), {
    nowMs: performance.now(),
    currentTime: ctx.currentTime,
    latencyS: ctx.outputLatency || ctx.baseLatency || 0,
  });
  const contextPathMs = ((ctx.outputLatency || 0) + (ctx.baseLatency || 0)) * 1000;
  const elementPathMs = s.stats.audio?.playoutDelayMs ?? contextPathMs;
  s.meas.clicks.push(playedMs - contextPathMs - (app.tapDelayMs ?? 0) + elementPathMs);
}

/**
 * Matches the clicks heard so far with presented frames. Audio may lead video by up to half
 * a click period, so a click waits until frames that far past it have been shown (or until
 * CLICK_GIVE_UP_MS, then it is matched with what there is, or dropped).
 */
function matchPendingClicks(s, nowMs) {
  const { frames, clicks, avOffsets } = s.meas;
  const { timing, frameMs } = s.hello ?? {};
  if (!timing) return;
  const waitMs = (timing.clickEverySamples * 500) / timing.sampleRate + frameMs;
  const lastShownMs = frames.length ? frames[frames.length - 1][1] : -Infinity;
  while (s.nextClick < clicks.length) {
    const clickMs = clicks[s.nextClick];
    if (lastShownMs < clickMs + waitMs && nowMs < clickMs + CLICK_GIVE_UP_MS) break;
    s.nextClick++;
    const match = matchClick(frames, clickMs, timing);
    if (match && match.k > s.lastK) {
      // one offset per click: a second onset matched to the same k is a false one
      s.lastK = match.k;
      avOffsets.push([match.sample, match.offsetMs]); // measured only: nothing steers by it
    }
  }
}

// -- stats -----------------------------------------------------------------------------------

function emptyStats() {
  return {
    fps: null,
    framesDecoded: null,
    framesDropped: null,
    freezeCount: null,
    totalFreezesDuration: null,
    rttMs: null,
    audio: {
      totalSamplesReceived: null,
      concealedSamples: null,
      jitterBufferMs: null,
      codec: null,
    },
    video: { jitterBufferMs: null, frameWidth: null, frameHeight: null, codec: null },
  };
}

async function pollStats(s) {
  later(s, STATS_INTERVAL_MS, () => pollStats(s));
  let report;
  try {
    report = await s.pc.getStats();
  } catch {
    return;
  }
  if (!alive(s)) return;
  const now = performance.now();
  const { video, audio, playout, videoCodec, audioCodec, rttMs } = summarizeStats(report);
  const v = video ?? {};
  const a = audio ?? {};
  const st = s.stats;
  st.video = {
    jitterBufferMs: jitterBufferMs(s.prevInbound.video, video),
    frameWidth: v.frameWidth ?? null,
    frameHeight: v.frameHeight ?? null,
    codec: videoCodec,
  };
  st.audio = {
    totalSamplesReceived: a.totalSamplesReceived ?? null,
    concealedSamples: a.concealedSamples ?? null,
    jitterBufferMs: jitterBufferMs(s.prevInbound.audio, audio),
    playoutDelayMs: playoutDelayMs(s.prevInbound.playout, playout) ?? st.audio?.playoutDelayMs,
    codec: audioCodec,
  };
  st.playoutSyncMs = playoutSyncMs(video, audio);
  s.prevInbound = { video, audio, playout };
  st.framesDecoded = v.framesDecoded ?? null;
  st.framesDropped = v.framesDropped ?? null;
  st.freezeCount = v.freezeCount ?? null;
  st.totalFreezesDuration = v.totalFreezesDuration ?? null;
  st.rttMs = rttMs;
  st.fps = presentedFps(s, now) ?? v.framesPerSecond ?? null;
  s.meas.getStatsSamples.push([
    now,
    {
      audioTotalSamplesReceived: st.audio.totalSamplesReceived,
      audioConcealedSamples: st.audio.concealedSamples,
      framesDecoded: st.framesDecoded,
      framesPresented: s.framesPresented,
      freezeCount: st.freezeCount,
      playoutSyncMs: st.playoutSyncMs,
      audioPlayoutDelayMs: st.audio.playoutDelayMs,
    },
  ]);
  matchPendingClicks(s, now);
  s.trim.update(s.pc, st.playoutSyncMs, now);
  renderStats();
}

/** Frames presented per second over the last ~1 s (ticks every STATS_INTERVAL_MS). */
function presentedFps(s, now) {
  if (s.framesPresented === null) return null;
  s.fpsTicks.push([now, s.framesPresented]);
  while (s.fpsTicks.length > 2 && now - s.fpsTicks[1][0] >= FPS_WINDOW_MS) s.fpsTicks.shift();
  const [t0, n0] = s.fpsTicks[0];
  return now > t0 ? ((s.framesPresented - n0) * 1000) / (now - t0) : null;
}

function snapshot() {
  const s = app.last;
  const st = s?.stats ?? emptyStats();
  const recent = (rows, n) => median(rows.slice(-n).map((row) => row[1]));
  const stamped = Boolean(s?.hello?.stamp);
  return {
    state: app.state,
    source: s?.hello?.source ?? null,
    stamp: stamped,
    activity: s?.activity || null,
    fps: st.fps,
    framesPresented: s?.framesPresented ?? null,
    framesDecoded: st.framesDecoded,
    framesDropped: st.framesDropped,
    freezeCount: st.freezeCount,
    totalFreezesDuration: st.totalFreezesDuration,
    audio: { ...st.audio },
    video: { ...st.video },
    rttMs: st.rttMs,
    // server wall clock minus this page's (plus the websocket's one-way delay): near 0 when
    // glass-to-glass is meaningful
    clockOffsetMs: s?.clock ? s.clock.epochMs - s.clock.pageEpochMs : null,
    avOffsetMs: stamped ? recent(s.meas.avOffsets, RECENT_CLICKS) : null,
    // the browser's own estimate of the same (no stamps needed), and what the click tap adds
    playoutSyncMs: st.playoutSyncMs ?? null,
    tapDelayMs: app.tapDelayMs ?? null,
    // the lip-sync correction this page runs with (sync-trim.js) and where it stands
    syncMode: SYNC.mode,
    syncWarning: SYNC.warning,
    syncTrimMs: s?.trim.ms ?? null,
    glassToGlassMs: stamped ? recent(s.meas.glassToGlass, RECENT_FRAMES) : null,
  };
}

function measurements() {
  const s = app.last;
  const sync = { syncMode: SYNC.mode, syncWarning: SYNC.warning };
  if (!s) {
    return { ...sync, frames: [], clicks: [], avOffsets: [], glassToGlass: [], getStatsSamples: [] };
  }
  matchPendingClicks(s, performance.now());
  const { frames, clicks, avOffsets, glassToGlass, getStatsSamples } = s.meas;
  return {
    ...sync,
    frames: frames.slice(),
    clicks: clicks.slice(),
    avOffsets: avOffsets.slice(),
    glassToGlass: glassToGlass.slice(),
    getStatsSamples: getStatsSamples.slice(),
  };
}

// -- stats overlay ---------------------------------------------------------------------------

const dash = '—';
const ms = (v) => (v === null || v === undefined ? dash : `${Math.round(v)} ms`);
const signedMs = (v) => (v === null ? dash : `${v > 0 ? '+' : ''}${Math.round(v)} ms`);

function renderStats() {
  if (ui.stats.hidden) return;
  const snap = snapshot();
  const { audio, video } = snap;
  const concealed =
    audio.totalSamplesReceived > 0
      ? `${((100 * audio.concealedSamples) / audio.totalSamplesReceived).toFixed(2)} %`
      : dash;
  const freezeSeconds = (snap.totalFreezesDuration ?? 0).toFixed(1);
  const freezes = snap.freezeCount === null ? dash : `${snap.freezeCount} (${freezeSeconds} s)`;
  const format = video.frameWidth
    ? `${video.frameWidth}×${video.frameHeight} ${(video.codec ?? '').replace(/^video\//, '')}`
    : dash;
  const text = {
    fps: snap.fps === null ? dash : snap.fps.toFixed(1),
    videoJitter: ms(video.jitterBufferMs),
    audioJitter: ms(audio.jitterBufferMs),
    avOffset: signedMs(snap.avOffsetMs),
    rtt: ms(snap.rttMs),
    glassToGlass: ms(snap.glassToGlassMs),
    concealed,
    freezes,
    format,
  };
  for (const [key, value] of Object.entries(text)) {
    if (ui.cells[key]) ui.cells[key].textContent = value;
  }
}

function toggleStats() {
  ui.stats.hidden = !ui.stats.hidden;
  ui.statsToggle.setAttribute('aria-pressed', String(!ui.stats.hidden));
  renderStats();
}

// -- wiring ----------------------------------------------------------------------------------

ui.start.addEventListener('click', () => start().catch(() => {})); // the state line says why
ui.statsToggle.addEventListener('click', toggleStats);
document.addEventListener('keydown', (event) => {
  if (event.key !== 's' || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  if (event.target.closest?.('input, textarea, select, [contenteditable]')) return;
  toggleStats();
});
window.addEventListener('pagehide', () => app.session && teardown(app.session));
window.addEventListener('pageshow', (event) => event.persisted && app.started && connect());

window.viewer = {
  ready: true,
  start,
  stats: snapshot,
  measurements,
  peerConnection: () => app.session?.pc ?? null, // for debugging from the console
};
