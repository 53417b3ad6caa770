"""The tone detector the audio tests rely on tells pitches apart and tells sound from silence.

No server here: if the detector could not fail, neither could the audio tests that use it.
"""

from __future__ import annotations

import math

import numpy as np

from .helpers import SAMPLE_RATE, Listener, analyse


def tone(frequency: float, amplitude: float = 0.4, seconds: float = Listener.WINDOW / SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (amplitude * 32767 * np.sin(2 * math.pi * frequency * t)).astype(np.int16)


def test_detector_hears_the_pitch_that_was_played():
    for frequency in (440, 523, 660, 880):
        assert analyse(tone(frequency)).is_tone(frequency)


def test_detector_tells_neighbouring_pitches_apart():
    assert not analyse(tone(440)).is_tone(523)
    assert not analyse(tone(660)).is_tone(440)


def test_detector_does_not_mistake_silence_or_faint_noise_for_a_tone():
    silence = np.zeros(Listener.WINDOW, dtype=np.int16)
    assert analyse(silence).is_silent() and not analyse(silence).is_tone(440)
    noise = np.random.default_rng(7).normal(0, 60, Listener.WINDOW).astype(np.int16)
    assert analyse(noise).is_silent() and not analyse(noise).is_tone(440)
    faint = tone(440, amplitude=0.01)  # audible in theory, but far below what the publisher sends
    assert not analyse(faint).is_tone(440)


def test_detector_hears_a_tone_under_noise():
    noisy = tone(440) + np.random.default_rng(7).normal(0, 2000, Listener.WINDOW).astype(np.int16)
    assert analyse(noisy).is_tone(440)
