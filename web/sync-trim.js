/**
 * The viewer's lip-sync correction, kept apart from measuring: the stamps (measure.js) only
 * measure what the page presents and plays; what corrects it is chosen here, by the page's
 * `sync=` query parameter, and never by a measured click.
 *
 * - `browser` (default): the production correction, the same for every viewer, stamped or
 *   not. Chromium lines audio and video up from the RTCP sender reports, but only to within
 *   about 30 ms, and slowly while the audio jitter buffer settles. A small loop takes the rest
 *   out, driven by the browser's own estimate (estimatedPlayoutTimestamp of the two
 *   receivers, getStats): audio late -> the video receiver's jitterBufferTarget grows (video
 *   waits); video late -> it shrinks, and below zero the audio receiver waits instead.
 * - `off`: no correction at all (no jitterBufferTarget is ever set): what the browser does
 *   by itself.
 *
 * An unknown value is reported (the page's log and stats) and the default is used.
 */

export const SYNC_MODES = Object.freeze(['browser', 'off']);
export const DEFAULT_SYNC_MODE = 'browser';

const TRIM_INTERVAL_MS = 1000; // the browser's playout estimates move about this fast
const TRIM_DEADBAND_MS = 6;
const TRIM_GAIN = 0.7;
const TRIM_MAX_MS = 300;

/** {mode, warning} from a location.search string; warning is null unless the value was bad. */
export function parseSyncMode(search) {
  const value = new URLSearchParams(search ?? '').get('sync');
  if (value === null || value === '') return { mode: DEFAULT_SYNC_MODE, warning: null };
  if (SYNC_MODES.includes(value)) return { mode: value, warning: null };
  const warning =
    `unknown sync=${JSON.stringify(value)} (known: ${SYNC_MODES.join(', ')}): ` +
    `using sync=${DEFAULT_SYNC_MODE}`;
  return { mode: DEFAULT_SYNC_MODE, warning };
}

/**
 * The next trim (ms, > 0 delays video, < 0 delays audio) for the browser's estimate `syncMs`
 * (positive: audio late) at `nowMs`, or null to leave it: at most one step a second, none
 * inside the dead band.
 */
export function nextTrim(trim, syncMs, nowMs) {
  if (typeof syncMs !== 'number' || !Number.isFinite(syncMs)) return null;
  if (nowMs - (trim.at ?? -Infinity) < TRIM_INTERVAL_MS) return null;
  if (Math.abs(syncMs) < TRIM_DEADBAND_MS) return null;
  return Math.max(-TRIM_MAX_MS, Math.min(TRIM_MAX_MS, trim.ms + TRIM_GAIN * syncMs));
}

/**
 * One connection's correction: update(pc, syncMs, nowMs) after each getStats poll; `ms` is
 * the trim now (0 with sync=off).
 */
export function createSyncTrim(mode) {
  const trim = { mode, ms: 0, at: null };
  trim.update = (pc, syncMs, nowMs) => {
    if (mode !== 'browser' || !pc) return;
    const ms = nextTrim(trim, syncMs, nowMs);
    if (ms === null) return;
    trim.at = nowMs;
    trim.ms = ms;
    applyTrim(pc, ms);
  };
  return trim;
}

/** The one signed knob onto the receivers: video waits `ms` (> 0) or audio waits `-ms`. */
function applyTrim(pc, ms) {
  if (!('jitterBufferTarget' in RTCRtpReceiver.prototype)) return;
  for (const receiver of pc.getReceivers()) {
    const kind = receiver.track?.kind;
    if (kind !== 'video' && kind !== 'audio') continue;
    const target = kind === 'video' ? Math.max(0, ms) : Math.max(0, -ms);
    try {
      receiver.jitterBufferTarget = Math.round(target);
    } catch {
      // out of the browser's range: leave it
    }
  }
}
