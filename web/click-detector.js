/**
 * AudioWorkletProcessor 'click-detector': finds the onsets of the stream's sync clicks (short
 * high-frequency tone bursts; the graph in front of it high-passes everything else away).
 *
 * An onset is the first sample whose magnitude (largest over the channels) exceeds
 * `threshold` after at least `quietMs` below it. It is posted to the main thread as
 * {frame, level}: `frame` is the onset's sample frame on the AudioContext's timeline
 * (currentFrame of the render quantum plus the offset within it), so the main thread can
 * put it on the performance clock.
 *
 * processorOptions: {threshold = 0.08, quietMs = 300}.
 */
class ClickDetector extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.threshold = opts.threshold ?? 0.08;
    this.quietFrames = Math.round(((opts.quietMs ?? 300) * sampleRate) / 1000);
    // Samples since the signal last exceeded the threshold. Starts at zero, so a stream that
    // begins in the middle of a burst does not report a late onset.
    this.below = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) {
      this.below += 128; // nothing connected (yet): silence
      return true;
    }
    const length = channels[0].length;
    for (let i = 0; i < length; i++) {
      let level = 0;
      for (let c = 0; c < channels.length; c++) {
        const v = Math.abs(channels[c][i]);
        if (v > level) level = v;
      }
      if (level > this.threshold) {
        if (this.below >= this.quietFrames) {
          this.port.postMessage({ frame: currentFrame + i, level });
        }
        this.below = 0;
      } else {
        this.below++;
      }
    }
    return true; // keep running while the graph holds the node
  }
}

registerProcessor('click-detector', ClickDetector);
