"""Decoding audio files and finding their pitch, for tests that check what was recorded and embedded."""

from __future__ import annotations

import numpy as np


def decode(source) -> tuple[np.ndarray, int]:
    """Mono float samples and the sample rate of an audio file (a path or a file object), decoded with PyAV."""
    import av

    chunks, rate = [], 0
    with av.open(source if not hasattr(source, "__fspath__") else str(source)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            samples = frame.to_ndarray().astype(np.float32)
            rate = frame.sample_rate
            if frame.format.is_planar:
                chunks.append(samples.mean(axis=0))
            else:
                chunks.append(samples.reshape(-1, len(frame.layout.channels)).mean(axis=1))
    return np.concatenate(chunks), rate


def dominant_hz(decoded: tuple[np.ndarray, int]) -> float:
    """The strongest frequency of the loudest second (a tone's pitch)."""
    samples, rate = decoded
    if samples.size > rate:
        blocks = samples[: (samples.size // rate) * rate].reshape(-1, rate)
        samples = blocks[int(np.argmax((blocks * blocks).sum(axis=1)))]
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)
