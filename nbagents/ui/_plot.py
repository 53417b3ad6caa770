"""Live audio plots: per track a waveform and a level history, drawn with Agg and encoded as PNG.

Agg redraws of a whole figure cost tens of milliseconds here, so the figure is drawn once and each
update only restores the cached background and redraws the two lines (blitting). No pyplot: figures
are plain ``matplotlib.figure.Figure`` objects, safe to render off the kernel's loop thread.
"""

from __future__ import annotations

import collections
import io
import threading
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["TrackPlot", "HISTORY_SECONDS", "final_track_png", "sound_span", "stack_pngs"]

HISTORY_SECONDS = 10.0
WIDTH_PX, HEIGHT_PX, DPI = 720, 210, 100
TICK_SIZE, LABEL_SIZE, TITLE_SIZE = 8, 8, 9
SOUND_THRESHOLD = 0.01  # peak level (full scale 1.0) above which a window counts as sound
WINDOW_MS = 50  # one statistics window (AudioStats) spans about this long
_WAVE_COLOR, _RMS_COLOR, _PEAK_COLOR = "#1f77b4", "#2ca02c", "#d62728"


class TrackPlot:
    """The plot of one audio track: fed with (time, rms, peak, waveform) samples, rendered to PNG bytes."""

    def __init__(self, title: str, rate_hz: float) -> None:
        self.title = title
        self._history: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=max(16, int(HISTORY_SECONDS * 25))
        )
        self._waveform: tuple[float, ...] = ()
        self._lock = threading.Lock()
        self._fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
        self._canvas = FigureCanvasAgg(self._fig)
        wave_ax, level_ax = _layout(self._fig, title)
        level_ax.set_xlim(-HISTORY_SECONDS, 0)
        level_ax.set_xlabel("seconds before now", fontsize=LABEL_SIZE, labelpad=1)
        level_ax.set_title(f"level, last {HISTORY_SECONDS:g} s", fontsize=LABEL_SIZE, pad=2)
        (self._wave_line,) = wave_ax.plot([], [], color=_WAVE_COLOR, linewidth=0.8, animated=True)
        (self._rms_line,) = level_ax.plot([], [], color=_RMS_COLOR, linewidth=1.0, animated=True)
        (self._peak_line,) = level_ax.plot([], [], color=_PEAK_COLOR, linewidth=0.6, animated=True)
        self._axes = (wave_ax, level_ax)
        self._canvas.draw()
        self._background = self._canvas.copy_from_bbox(self._fig.bbox)
        self.frames_rendered = 0

    def add(self, t: float, rms: float, peak: float, waveform: tuple[float, ...]) -> None:
        """Record one statistics window (any thread)."""
        with self._lock:
            self._history.append((t, rms, peak))
            if waveform:
                self._waveform = waveform

    def render_png(self, now: float | None = None) -> bytes:
        """Blit the lines onto the cached background and encode the figure as PNG."""
        with self._lock:
            history = np.array(self._history, dtype=float) if self._history else np.zeros((0, 3))
            waveform = np.asarray(self._waveform, dtype=float)
        end = now if now is not None else (history[-1, 0] if len(history) else 0.0)
        if len(waveform):
            self._wave_line.set_data(np.linspace(0, WINDOW_MS, len(waveform)), waveform)
        if len(history):
            x = history[:, 0] - end
            self._rms_line.set_data(x, history[:, 1])
            self._peak_line.set_data(x, history[:, 2])
        self._canvas.restore_region(self._background)
        self._axes[0].draw_artist(self._wave_line)
        self._axes[1].draw_artist(self._rms_line)
        self._axes[1].draw_artist(self._peak_line)
        rgba = np.asarray(self._canvas.buffer_rgba())
        self.frames_rendered += 1
        return encode_png(rgba)


def _layout(fig: Figure, title: str) -> tuple[Any, Any]:
    """The two panels of a track plot, with labelled axes and legible ticks."""
    fig.subplots_adjust(left=0.075, right=0.985, top=0.80, bottom=0.22, wspace=0.22)
    wave_ax, level_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    wave_ax.set_xlim(0, WINDOW_MS)
    wave_ax.set_ylim(-1.05, 1.05)
    wave_ax.set_title("waveform, latest window", fontsize=LABEL_SIZE, pad=2)
    wave_ax.set_xlabel("ms", fontsize=LABEL_SIZE, labelpad=1)
    wave_ax.set_ylabel("amplitude", fontsize=LABEL_SIZE, labelpad=1)
    level_ax.set_ylim(0, 1.05)
    level_ax.set_ylabel("level (full scale)", fontsize=LABEL_SIZE, labelpad=1)
    for ax in (wave_ax, level_ax):
        ax.tick_params(labelsize=TICK_SIZE, length=3, pad=1)
        ax.grid(True, linewidth=0.4, alpha=0.5)
    level_ax.plot([], [], color=_RMS_COLOR, linewidth=1.2, label="RMS")
    level_ax.plot([], [], color=_PEAK_COLOR, linewidth=0.8, label="peak")
    level_ax.legend(loc="upper right", fontsize=TICK_SIZE, frameon=False, ncols=2, borderaxespad=0.2)
    fig.suptitle(title, fontsize=TITLE_SIZE, x=0.01, ha="left", y=0.985)
    return wave_ax, level_ax


def sound_span(history: np.ndarray, threshold: float = SOUND_THRESHOLD) -> tuple[float, float] | None:
    """(first, last) time of the windows in ``history`` (rows of time, rms, peak) whose peak is above ``threshold``."""
    if not len(history):
        return None
    loud = history[history[:, 2] > threshold]
    if not len(loud):
        return None
    return float(loud[0, 0]), float(loud[-1, 0])


def final_track_png(title: str, history: list[tuple[float, float, float]], waveforms: list[tuple[float, tuple[float, ...]]],
                    origin: float) -> bytes:
    """The plot kept in the notebook: the level over the part of the track with sound (not the silent tail), and
    the waveform of its loudest window. ``history`` rows are (epoch time, rms, peak); ``origin`` is the job's start."""
    data = np.array(history, dtype=float) if history else np.zeros((0, 3))
    span = sound_span(data)
    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    wave_ax, level_ax = _layout(fig, title)
    if span is not None:
        pad = max(0.5, 0.05 * (span[1] - span[0]))
        lo, hi = span[0] - pad, span[1] + pad
        shown = data[(data[:, 0] >= lo) & (data[:, 0] <= hi)]
        level_ax.set_title(f"level while there was sound ({span[1] - span[0]:.1f} s)", fontsize=LABEL_SIZE, pad=2)
    else:
        lo, hi = (data[0, 0], data[-1, 0]) if len(data) else (origin, origin + 1)
        shown = data
        level_ax.set_title("level (silence throughout)", fontsize=LABEL_SIZE, pad=2)
    level_ax.set_xlim(lo - origin, max(hi, lo + 0.1) - origin)
    level_ax.set_xlabel("seconds since the job started", fontsize=LABEL_SIZE, labelpad=1)
    if len(shown):
        level_ax.plot(shown[:, 0] - origin, shown[:, 1], color=_RMS_COLOR, linewidth=1.2)
        level_ax.plot(shown[:, 0] - origin, shown[:, 2], color=_PEAK_COLOR, linewidth=0.8)
    candidates = [(t, w) for t, w in waveforms if w and (span is None or lo <= t <= hi)]
    if candidates:
        t, wave = max(candidates, key=lambda item: float(np.mean(np.square(item[1]))))
        wave_ax.plot(np.linspace(0, WINDOW_MS, len(wave)), wave, color=_WAVE_COLOR, linewidth=0.9)
        wave_ax.set_title(f"waveform, loudest window (at {t - origin:.1f} s)", fontsize=LABEL_SIZE, pad=2)
    canvas.draw()
    return encode_png(np.asarray(canvas.buffer_rgba()))


def encode_png(rgba: np.ndarray) -> bytes:
    """A small PNG: a line plot needs few colours, and a 32-colour palette image is ~3x smaller than RGB
    and no slower to encode (measured: ~2.7 ms and ~5 KB for a 420x120 track plot; ~7.7 ms CPU and ~7 KB for
    today's 720x210 one, blit included), which keeps widget traffic low."""
    out = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3])).quantize(colors=32, method=Image.Quantize.FASTOCTREE)
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def stack_pngs(pngs: list[bytes]) -> bytes | None:
    """Several track plots as one PNG, one above the other (the static image kept in the notebook)."""
    if not pngs:
        return None
    images = [Image.open(io.BytesIO(p)).convert("RGB") for p in pngs]
    width = max(i.width for i in images)
    canvas = Image.new("RGB", (width, sum(i.height for i in images)), "white")
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=True)
    return out.getvalue()
