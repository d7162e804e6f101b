"""Renders of one user: ``ansi`` text and a small ``rgb_array`` picture (for ``RecordVideo``).

Both draw from a :class:`UserView`, which each world fills from its state
(:meth:`~recsim_gym.env.world.WorldModel.user_view`): the user's latent interest per topic, one
"level" in [0, 1] that decides whether they stay (satisfaction, or the remaining time budget),
the candidates' topics and qualities, and the last slate with what the user did with it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class UserView:
    """What a render shows of one user (arrays for that user only)."""

    t: int  #: steps taken
    max_steps: int
    interest: np.ndarray  #: (T,) latent interest in [-1, 1]
    level_name: str  #: e.g. "satisfaction" or "time budget"
    level: float  #: in [0, 1]
    candidate_topic: np.ndarray  #: (m,) main topic of each candidate
    candidate_quality: np.ndarray  #: (m,) hidden quality (world-specific scale)
    candidate_item: np.ndarray  #: (m,) item ids


#: Width and height of the ``rgb_array`` frame (multiples of 16, as video encoders want).
FRAME_WIDTH, FRAME_HEIGHT = 320, 160


def _palette(n: int) -> np.ndarray:
    """``n`` distinct uint8 RGB colours (evenly spaced hues, full saturation)."""
    hue = np.arange(n) / max(n, 1)
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hue[:, None] * 6.0) % 6.0
    rgb = 1.0 - 0.75 * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return (rgb * 230).astype(np.uint8)


def ansi(view: UserView, slate: np.ndarray | None, info: dict[str, Any] | None, reward: float) -> str:
    """Readable text: the user, the last slate shown and what the user did with it."""
    top = np.argsort(-view.interest)[:3]
    interests = ", ".join(f"topic {int(i)} {view.interest[i]:+.2f}" for i in top)
    lines = [f"step {view.t}/{view.max_steps} | {view.level_name} {view.level:.2f} | "
             f"top interests: {interests}"]
    if slate is None or info is None:
        lines.append("no slate shown yet")
        return "\n".join(lines) + "\n"
    shown = []
    for position, candidate in enumerate(np.asarray(slate).tolist()):
        mark = "*" if position == info["position"] else " "
        shown.append(f"  {mark} {position}: item {int(view.candidate_item[candidate])} "
                     f"(topic {int(view.candidate_topic[candidate])}, "
                     f"quality {float(view.candidate_quality[candidate]):.2f})")
    lines += ["slate (* = clicked):", *shown]
    if info["position"] < 0:
        outcome = "no click"
    else:
        outcome = f"clicked position {info['position']} (item {info['item']})"
        outcome += ", converted" if info["conversion"] else ", no conversion"
    if info.get("filled"):
        outcome += f"; {info['filled']} repeated candidate(s) filled"
    if info.get("end_reason"):
        outcome += f"; episode ended: {info['end_reason']}"
    lines.append(f"{outcome}; reward {reward:.2f}")
    return "\n".join(lines) + "\n"


def rgb(view: UserView, slate: np.ndarray | None, info: dict[str, Any] | None) -> np.ndarray:
    """A ``(FRAME_HEIGHT, FRAME_WIDTH, 3)`` uint8 picture.

    Top: the slate, one tile per position in the colour of the item's topic, its height the
    item's quality; the clicked tile has a white frame, a converted click a second, inner one.
    Bottom left: interest per topic (bars up from the middle line are positive). Right: the
    level (satisfaction or time budget) as a vertical gauge, and episode progress beneath.
    """
    frame = np.full((FRAME_HEIGHT, FRAME_WIDTH, 3), 24, dtype=np.uint8)
    topics = len(view.interest)
    colours = _palette(topics)
    body = FRAME_WIDTH - 40  # the right 40 pixels hold the gauge
    if slate is not None:
        positions = np.asarray(slate).tolist()
        width = body // max(len(positions), 1)
        quality = np.asarray(view.candidate_quality, dtype=float)
        low, high = float(quality.min()), float(quality.max())
        for position, candidate in enumerate(positions):
            x0, x1 = position * width + 3, (position + 1) * width - 3
            share = 0.5 if high <= low else (float(quality[candidate]) - low) / (high - low)
            top = 70 - int(12 + 52 * share)
            frame[top:70, x0:x1] = colours[int(view.candidate_topic[candidate]) % topics]
            if info is not None and position == info["position"]:
                for inset in ((0, 1) if info["conversion"] else (0,)):
                    y0, y1, a, b = 4 + 3 * inset, 74 - 3 * inset, x0 - 3 + 3 * inset, x1 + 2 - 3 * inset
                    frame[y0, a:b] = frame[y1 - 1, a:b] = 255
                    frame[y0:y1, a] = frame[y0:y1, b - 1] = 255
    # interest bars around the middle line y = 117
    width = max(body // max(topics, 1), 1)
    for topic in range(min(topics, body)):
        value = float(np.clip(view.interest[topic], -1.0, 1.0))
        height = int(round(abs(value) * 38))
        x0 = topic * width
        x1 = max(x0 + width - 1, x0 + 1)
        y0, y1 = (117 - height, 117) if value >= 0 else (117, 117 + height)
        frame[y0:y1, x0:x1] = colours[topic]
    frame[117, :body] = 120
    # level gauge and progress
    level = float(np.clip(view.level, 0.0, 1.0))
    frame[8:148, FRAME_WIDTH - 28:FRAME_WIDTH - 12] = 60
    filled = int(round(level * 140))
    frame[148 - filled:148, FRAME_WIDTH - 28:FRAME_WIDTH - 12] = (80, 200, 120)
    progress = int(round(min(view.t / max(view.max_steps, 1), 1.0) * 36))
    frame[153:157, FRAME_WIDTH - 38:FRAME_WIDTH - 2] = 60
    frame[153:157, FRAME_WIDTH - 38:FRAME_WIDTH - 38 + progress] = 200
    return frame
