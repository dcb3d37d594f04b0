/**
 * Measurement helpers for the viewer: pure functions, no DOM, no clocks of their own.
 *
 * Time values are milliseconds on the page's performance.now() clock unless a name says
 * otherwise (epochMs: wall clock; samples: 48 kHz stream samples; frames: stream frame index).
 */

/** Where the server paints the frame-index stamp, in the 512x512 frame's pixels. */
export const DEFAULT_LAYOUT = Object.freeze({ y: 496, block: 16, bits: 16 });

/** Stream timing defaults (the hello message overrides them). */
export const DEFAULT_TIMING = Object.freeze({
  sampleRate: 48000,
  frameSamples: 1920,
  clickEverySamples: 48000,
});

const GUARD_MIN_CONTRAST = 100; // white guard minus black guard, in luma levels

// -- frame stamp ---------------------------------------------------------------------------

/** Size of the stamp strip: a guard pair plus one block per bit, one block high. */
export function stripSize(layout = DEFAULT_LAYOUT) {
  return { width: (2 + layout.bits) * layout.block, height: layout.block };
}

/** Mean luma (0.299 R + 0.587 G + 0.114 B) of the centre half of block `position`. */
function blockLuma(imageData, position, top, block) {
  const { data, width } = imageData;
  const inner = Math.max(1, block >> 1); // 8x8 of a 16 px block: clear of edge ringing
  const x0 = position * block + ((block - inner) >> 1);
  const y0 = top + ((block - inner) >> 1);
  let sum = 0;
  for (let y = y0; y < y0 + inner; y++) {
    for (let x = x0, i = (y * width + x0) * 4; x < x0 + inner; x++, i += 4) {
      sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    }
  }
  return sum / (inner * inner);
}

/**
 * The frame index (modulo 2^bits) painted into `imageData` (RGBA, like ImageData), or null
 * when the guards are not clearly white and black (no stamp, or a frame still blurred).
 *
 * `imageData` is either just the strip (its top row is the strip's) or a whole frame tall
 * enough to hold the strip at `layout.y`.
 */
export function decodeStamp(imageData, layout = DEFAULT_LAYOUT) {
  const { block, bits } = layout;
  const { width: needWidth } = stripSize(layout);
  if (!imageData || imageData.width < needWidth || imageData.height < block) return null;
  const top = imageData.height >= layout.y + block ? layout.y : 0;
  const white = blockLuma(imageData, 0, top, block);
  const black = blockLuma(imageData, 1, top, block);
  if (white - black < GUARD_MIN_CONTRAST) return null;
  const threshold = (white + black) / 2;
  let index = 0;
  for (let bit = 0; bit < bits; bit++) {
    index = index * 2 + (blockLuma(imageData, 2 + bit, top, block) > threshold ? 1 : 0);
  }
  return index;
}

/**
 * The unbounded index whose low `bits` bits are `raw`, nearest to `reference` (the index
 * expected now). Without a reference the raw value is all we know.
 */
export function unwrapIndex(raw, reference, bits = 16) {
  if (reference === null || reference === undefined || !Number.isFinite(reference)) return raw;
  const period = 2 ** bits;
  const base = Math.floor(reference / period) * period + raw;
  let best = base;
  for (const candidate of [base - period, base + period]) {
    if (Math.abs(candidate - reference) < Math.abs(best - reference)) best = candidate;
  }
  return best;
}

/**
 * Turns the stamps of presented frames into a strictly increasing frame index.
 *
 * push(raw, tMs, reference) unwraps `raw` against the index predicted from the last accepted
 * frame and the time since (or against `reference`, e.g. the index the server clock says is
 * current, for the first frame). It returns {index, status}:
 *   - 'accepted':  a new frame;
 *   - 'duplicate': the frame already seen (polling without requestVideoFrameCallback);
 *   - 'rejected':  implausible: not after the last one, or further ahead than playback can
 *                  run (a misread stamp);
 *   - 'resync':    `resyncRun` rejected frames in a row agreed with each other, so the
 *                  earlier frame was the outlier: the caller drops what it recorded from
 *                  `index` on and records this one.
 * Frames may lag freely (freezes, a growing jitter buffer). Running ahead is bounded: a
 * frame cannot be shown earlier, relative to its index, than the earliest-relative frame so
 * far (the lowest latency seen) by more than `aheadSlackFrames` frame times (a jitter
 * buffer shrinking by that much). This bound, unlike one from the last frame alone, lets
 * playback that skips ahead after a freeze through.
 */
export function createFrameTracker({
  bits = 16,
  frameMs = 40,
  aheadSlackFrames = 25,
  resyncRun = 5,
} = {}) {
  let last = null; // {index, t} of the last accepted frame
  let lead = -Infinity; // max of (index - t / frameMs) over accepted frames
  let run = null; // {index, t, count}: consecutive rejected frames consistent with each other

  function accept(index, t, status) {
    last = { index, t };
    lead = Math.max(lead, index - t / frameMs);
    run = null;
    return { index, status };
  }

  function push(raw, t, reference = null) {
    if (last === null) return accept(unwrapIndex(raw, reference ?? raw, bits), t, 'accepted');
    const index = unwrapIndex(raw, last.index + Math.max(0, (t - last.t) / frameMs), bits);
    if (index === last.index) return { index, status: 'duplicate' };
    if (index > last.index && index <= t / frameMs + lead + aheadSlackFrames) {
      return accept(index, t, 'accepted');
    }
    const follows = run && index > run.index && index - run.index <= (t - run.t) / frameMs + 3;
    run = follows ? { index, t, count: run.count + 1 } : { index, t, count: 1 };
    if (run.count < resyncRun) return { index, status: 'rejected' };
    lead = -Infinity;
    return accept(unwrapIndex(raw, reference ?? index, bits), t, 'resync');
  }

  return {
    push,
    get last() {
      return last;
    },
  };
}

// -- clocks ----------------------------------------------------------------------------------

/** Wall-clock time (epoch ms) at which stream sample `sample` entered the server pipeline. */
export function sampleEpochMs(clock, sample, sampleRate = DEFAULT_TIMING.sampleRate) {
  return clock.anchorEpochMs + ((sample - clock.anchorSample) * 1000) / sampleRate;
}

/** The frame index entering the server pipeline at wall-clock `epochMs` (fractional). */
export function expectedFrameIndex(clock, epochMs, timing = DEFAULT_TIMING) {
  const sample = clock.anchorSample + ((epochMs - clock.anchorEpochMs) * timing.sampleRate) / 1000;
  return sample / timing.frameSamples;
}

/**
 * Glass-to-glass latency of frame `index` displayed at `displayMs` (performance clock): its
 * display time on the wall clock minus the time its first sample entered the pipeline.
 */
export function glassToGlassMs(index, displayMs, timeOrigin, clock, timing = DEFAULT_TIMING) {
  const displayEpochMs = timeOrigin + displayMs;
  return displayEpochMs - sampleEpochMs(clock, index * timing.frameSamples, timing.sampleRate);
}

/**
 * Performance-clock time (ms) at which the AudioContext plays context time `tCtx` (s).
 *
 * getOutputTimestamp() pairs a context time with the performance time at which the output
 * device plays it, so output latency is already in. Without it (or before the device has
 * started: zeros), extrapolate from currentTime, which runs ahead of the speaker by the
 * output latency, and add that latency back.
 */
export function contextTimeToPerfMs(tCtx, outputTimestamp, fallback) {
  const ts = outputTimestamp;
  if (ts && ts.performanceTime > 0) {
    return ts.performanceTime + (tCtx - ts.contextTime) * 1000;
  }
  return fallback.nowMs - (fallback.currentTime - tCtx) * 1000 + (fallback.latencyS || 0) * 1000;
}

// -- A/V offset ------------------------------------------------------------------------------

/** Index of the row of `rows` (ascending in column `col`) whose `col` is nearest `value`. */
function nearestRow(rows, value, col) {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (rows[mid][col] < value) lo = mid + 1;
    else hi = mid;
  }
  if (lo === rows.length) return rows.length - 1;
  if (lo > 0 && value - rows[lo - 1][col] <= rows[lo][col] - value) return lo - 1;
  return lo;
}

/**
 * Display time of frame `index`: its own if it was presented, else extrapolated at the frame
 * rate from the nearest presented frame, t(i) = t(j) + (i - j) * frameMs; null when no
 * presented frame is within `maxGapFrames`.
 */
export function displayTimeOf(frames, index, frameMs = 40, maxGapFrames = 12) {
  if (!frames.length) return null;
  const [j, tj] = frames[nearestRow(frames, index, 0)];
  if (Math.abs(index - j) > maxGapFrames) return null;
  return tj + (index - j) * frameMs;
}

/**
 * The A/V offset of one click heard at `clickMs`.
 *
 * `frames` are [index, displayMs] rows in presentation order (so ascending in both). Click k
 * starts at stream sample k * clickEverySamples, the first sample of frame
 * k * clickEverySamples / frameSamples. Which k was heard is not known, so take the k whose
 * frame is displayed nearest the click (clicks are a second apart; any offset under half a
 * second is unambiguous). offsetMs = clickMs - display time of that frame: positive when the
 * audio is late.
 *
 * Returns {k, index, sample, displayMs, offsetMs}, or null when no presented frame is near.
 */
export function matchClick(frames, clickMs, options = {}) {
  const { sampleRate, frameSamples, clickEverySamples } = { ...DEFAULT_TIMING, ...options };
  const maxGapFrames = options.maxGapFrames ?? 12;
  if (!frames.length) return null;
  const frameMs = (frameSamples * 1000) / sampleRate;
  const framesPerClick = clickEverySamples / frameSamples;
  // the frame on screen at the click, extrapolated to the click's time
  const [j, tj] = frames[nearestRow(frames, clickMs, 1)];
  const kGuess = Math.round((j + (clickMs - tj) / frameMs) / framesPerClick);
  let best = null;
  for (let k = Math.max(0, kGuess - 1); k <= kGuess + 1; k++) {
    const index = k * framesPerClick;
    const displayMs = displayTimeOf(frames, index, frameMs, maxGapFrames);
    if (displayMs === null) continue;
    const offsetMs = clickMs - displayMs;
    if (!best || Math.abs(offsetMs) < Math.abs(best.offsetMs)) {
      best = { k, index, sample: k * clickEverySamples, displayMs, offsetMs };
    }
  }
  return best;
}

/** matchClick for each click; unmatched clicks are left out. */
export function matchClicks(frames, clicks, options = {}) {
  return clicks.map((clickMs) => matchClick(frames, clickMs, options)).filter(Boolean);
}

// -- getStats --------------------------------------------------------------------------------

/**
 * The parts of an RTCStatsReport (or any iterable of stats objects) the viewer shows:
 * {video, audio} inbound-rtp stats (or null), their codecs' mime types, and the round trip
 * of the selected candidate pair in ms.
 */
export function summarizeStats(report) {
  const all = [];
  report.forEach((stat) => all.push(stat));
  const byId = new Map(all.map((stat) => [stat.id, stat]));
  const inbound = (kind) =>
    all.find((s) => s.type === 'inbound-rtp' && (s.kind ?? s.mediaType) === kind && !s.isRemote) ??
    null;
  const codecOf = (rtp) => (rtp && rtp.codecId && byId.get(rtp.codecId)?.mimeType) || null;
  const video = inbound('video');
  const audio = inbound('audio');
  const pair = selectedPair(all, byId);
  const rtt = pair?.currentRoundTripTime;
  // the audio output path of the received audio (Chromium: delay of the playout device)
  const playout = all.find((s) => s.type === 'media-playout' && s.kind === 'audio') ?? null;
  return {
    video,
    audio,
    playout,
    videoCodec: codecOf(video),
    audioCodec: codecOf(audio),
    rttMs: typeof rtt === 'number' ? rtt * 1000 : null,
  };
}

function selectedPair(all, byId) {
  for (const stat of all) {
    if (stat.type === 'transport' && stat.selectedCandidatePairId) {
      const pair = byId.get(stat.selectedCandidatePairId);
      if (pair) return pair;
    }
  }
  const pairs = all.filter((s) => s.type === 'candidate-pair');
  return (
    pairs.find((p) => p.selected) ?? // Firefox
    pairs.find((p) => p.nominated && p.state === 'succeeded') ??
    null
  );
}

/**
 * Mean time (ms) that samples or frames emitted since `prev` spent in the jitter buffer:
 * the delta of the cumulative jitterBufferDelay (s) over the delta of jitterBufferEmittedCount.
 */
export function jitterBufferMs(prev, cur) {
  if (!cur || typeof cur.jitterBufferDelay !== 'number') return null;
  if (typeof cur.jitterBufferEmittedCount !== 'number') return null;
  const emitted = cur.jitterBufferEmittedCount - (prev?.jitterBufferEmittedCount ?? 0);
  if (emitted <= 0) return null;
  return ((cur.jitterBufferDelay - (prev?.jitterBufferDelay ?? 0)) / emitted) * 1000;
}

/**
 * Mean audio output delay (ms) of the samples played since `prev` (media-playout stats:
 * cumulative totalPlayoutDelay in s over totalSamplesCount), or null.
 */
export function playoutDelayMs(prev, cur) {
  if (!cur || typeof cur.totalPlayoutDelay !== 'number') return null;
  const samples = cur.totalSamplesCount - (prev?.totalSamplesCount ?? 0);
  if (!(samples > 0)) return null;
  return ((cur.totalPlayoutDelay - (prev?.totalPlayoutDelay ?? 0)) / samples) * 1000;
}

/**
 * The browser's own A/V sync (ms, positive: audio late): the difference of the sender
 * capture times (NTP ms, from the RTCP sender reports) of the video frame and the audio
 * sample being played out now, from inbound-rtp estimatedPlayoutTimestamp.
 */
export function playoutSyncMs(video, audio) {
  const v = video?.estimatedPlayoutTimestamp;
  const a = audio?.estimatedPlayoutTimestamp;
  return typeof v === 'number' && typeof a === 'number' && v > 0 && a > 0 ? v - a : null;
}

/** Median of numbers, or null for none. */
export function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
