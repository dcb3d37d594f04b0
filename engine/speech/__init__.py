"""Speech with phoneme timings: TTS voices, real recordings, forced alignment, phoneme sets."""
