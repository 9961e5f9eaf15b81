"""A talking face drawn with OpenCV: geometry from the speaker, expression from the utterance.

The face is mostly a valence channel: happy lifts and widens the mouth corners, narrows the eyes
and shows teeth; angry lowers and knits the brows, tightens the lids and presses the lips; sad
raises the inner brows, turns the mouth corners down and lowers head and gaze. The jaw follows
the syllable timeline of the audio, and head motion grows with arousal.

Shapes are drawn large enough (dark brows and eye sockets, a lighter nose bridge, a face of about
two thirds of the frame) for OpenCV's frontal-face Haar cascade to find them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from robustmer.data.builtin.articulation import CONTROL_RATE, Timeline
from robustmer.data.builtin.design import CLASSES, Speaker, Utterance, express

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT
_NOISE_PAD = 32


@dataclass(frozen=True)
class FaceParams:
    """Expression parameters of one utterance (units in comments)."""

    smile: float  # mouth-corner lift, fraction of the mouth half-width (negative = down)
    mouth_width: float  # factor on the speaker's mouth width
    lip_thickness: float  # factor on the lip height (small = pressed)
    jaw: float  # speech opening at a fully open vowel, fraction of face height
    rest_open: float  # opening between syllables, fraction of face height
    teeth: float  # 0..1 how much the upper teeth show when the mouth is open
    brow_raise: float  # whole-brow lift, fraction of face height
    brow_inner: float  # inner-end lift relative to the outer end, fraction of face height
    brow_knit: float  # inner ends pulled toward the midline, fraction of face width
    eye_open: float  # factor on the eye opening
    cheek: float  # 0..1 cheek raise (nasolabial folds)
    gaze_down: float  # iris offset, fraction of the eye height
    head_motion: float  # amplitude of head movement, fraction of the frame side
    head_drop: float  # head lowered, fraction of the frame side


# Expression of each class at full strength (intensity x video expressiveness = 1); an
# utterance interpolates from the neutral column towards its class by its strength.
# fmt: off
FACE_TABLE: dict[str, tuple[float, float, float, float]] = {
    #               neutral happy   angry   sad
    "smile":        (0.0,   0.5,    -0.28,  -0.33),
    "mouth_width":  (1.0,   1.15,   0.9,    0.92),
    "lip_thickness": (1.0,  0.8,    0.7,    0.9),
    "jaw":          (0.10,  0.11,   0.12,   0.08),
    "rest_open":    (0.0,   0.025,  0.0,    0.0),
    "teeth":        (0.3,   1.0,    0.4,    0.1),
    "brow_raise":   (0.0,   0.015,  -0.02,  0.0),
    "brow_inner":   (0.0,   0.0,    -0.015, 0.03),
    "brow_knit":    (0.0,   0.0,    0.02,   0.01),
    "eye_open":     (1.0,   0.72,   0.8,    0.8),
    "cheek":        (0.0,   1.0,    0.0,    0.0),
    "gaze_down":    (0.0,   0.0,    0.0,    0.2),
    "head_motion":  (0.010, 0.022,  0.018,  0.010),
    "head_drop":    (0.0,   0.0,    0.0,    0.015),
}
# fmt: on
EMOTION_FACE: dict[str, FaceParams] = {
    label: FaceParams(**{k: v[i] for k, v in FACE_TABLE.items()}) for i, label in enumerate(CLASSES)
}
NEUTRAL_FACE = EMOTION_FACE["neutral"]
NUISANCE_SD = {
    "smile": 0.06,
    "brow_raise": 0.006,
    "brow_inner": 0.008,
    "eye_open": 0.06,
    "head_motion": 0.003,
}


def face_params(utt: Utterance, rng: np.random.Generator) -> FaceParams:
    values = express(NEUTRAL_FACE, EMOTION_FACE[utt.label], utt.strength_video, NUISANCE_SD, rng)
    values["smile"] += utt.speaker.rest_smile
    values["brow_raise"] += utt.speaker.rest_brow
    values["eye_open"] = float(np.clip(values["eye_open"], 0.4, 1.2))
    values["head_motion"] = max(values["head_motion"], 0.002)
    return FaceParams(**{k: float(v) for k, v in values.items()})


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * _SCALE), round(y * _SCALE)


def _poly(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.round(np.stack([xs, ys], 1) * _SCALE).astype(np.int32)


def _ellipse(
    img: np.ndarray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    colour: tuple[int, ...] | int,
    angle: float = 0.0,
    thickness: int = -1,
) -> None:
    cv2.ellipse(
        img,
        _pt(*centre),
        _pt(max(axes[0], 0.5), max(axes[1], 0.5)),
        angle,
        0,
        360,
        colour,
        thickness,
        cv2.LINE_AA,
        _SHIFT,
    )


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(c * factor))) for c in colour)  # type: ignore[return-value]


class FaceRenderer:
    """Draws frames of one utterance; static parts (background, lighting) are made once."""

    def __init__(self, utt: Utterance, size: int, rng: np.random.Generator) -> None:
        self.utt, self.size, self.rng = utt, size, rng
        self.p = face_params(utt, rng)
        spk: Speaker = utt.speaker
        self.spk = spk
        self.fw = spk.face_width * size
        self.fh = self.fw * spk.face_aspect
        self.cx = size / 2 + rng.normal(0, 0.015) * size
        self.cy = size * 0.53 + rng.normal(0, 0.012) * size
        ramp = np.linspace(0, 1, size)[:, None, None]
        top, bottom = np.array(spk.bg_top_bgr, float), np.array(spk.bg_bottom_bgr, float)
        self.background = np.broadcast_to(top + ramp * (bottom - top), (size, size, 3)).copy()
        side = rng.uniform(-0.18, 0.18)  # light from one side
        gain = rng.uniform(0.85, 1.12) * (1 + side * np.linspace(-1, 1, size))
        self.lighting = gain.astype(np.float32)[None, :, None]
        # sensor noise: crops of one noise field per utterance (cheaper than a field per frame)
        self.noise = rng.normal(0, 2.0, (size + _NOISE_PAD, size + _NOISE_PAD, 3)).astype(
            np.float32
        )

    # -- parts ---------------------------------------------------------------------------
    def _eyes(self, img: np.ndarray, openness: float, gaze: tuple[float, float]) -> None:
        spk = self.spk
        ew = spk.eye_size * self.fw
        eh = ew * 0.55 * openness
        ey = self.cy - 0.1 * self.fh
        skin = spk.skin_bgr
        for side in (-1, 1):
            ex = self.cx + side * spk.eye_spacing * self.fw / 2
            _ellipse(img, (ex, ey - 0.01 * self.fh), (ew * 0.78, ew * 0.5), _shade(skin, 0.72))
            if eh < 0.8:
                cv2.line(
                    img,
                    _pt(ex - ew / 2, ey),
                    _pt(ex + ew / 2, ey),
                    (25, 25, 30),
                    1,
                    cv2.LINE_AA,
                    _SHIFT,
                )
                continue
            x0, y0 = int(ex - ew), int(ey - ew)
            box = np.zeros((int(2 * ew) + 2, int(2 * ew) + 2), np.uint8)
            lx, ly = ex - x0, ey - y0
            _ellipse(box, (lx, ly), (ew / 2, eh / 2), 255)
            patch = np.zeros((*box.shape, 3), np.uint8)
            patch[:] = (225, 232, 238)
            ix, iy = lx + gaze[0] * ew * 0.25, ly + gaze[1] * eh * 0.5
            _ellipse(patch, (ix, iy), (ew * 0.23, ew * 0.23), spk.iris_bgr)
            _ellipse(patch, (ix, iy), (ew * 0.11, ew * 0.11), (15, 15, 15))
            region = img[y0 : y0 + box.shape[0], x0 : x0 + box.shape[1]]
            mask = box[: region.shape[0], : region.shape[1]] > 127
            region[mask] = patch[: region.shape[0], : region.shape[1]][mask]
            _ellipse(img, (ex, ey), (ew / 2, eh / 2), (30, 30, 35), thickness=1)

    def _brows(self, img: np.ndarray) -> None:
        spk, p = self.spk, self.p
        ey = self.cy - 0.1 * self.fh
        base = ey - (0.095 + p.brow_raise) * self.fh
        thick = max(1, round(spk.brow_thickness * self.fw))
        for side in (-1, 1):
            ex = self.cx + side * spk.eye_spacing * self.fw / 2
            inner_x = ex - side * (0.55 * spk.eye_size - p.brow_knit) * self.fw
            outer_x = ex + side * 0.62 * spk.eye_size * self.fw
            inner_y = base - p.brow_inner * self.fh
            outer_y = base + 0.01 * self.fh
            mid_x, mid_y = (inner_x + outer_x) / 2, min(inner_y, outer_y) - 0.02 * self.fh
            pts = _poly(np.array([inner_x, mid_x, outer_x]), np.array([inner_y, mid_y, outer_y]))
            cv2.polylines(img, [pts], False, spk.hair_bgr, thick, cv2.LINE_AA, _SHIFT)
            if p.brow_knit > 0.02:  # vertical frown line between the brows
                cv2.line(
                    img,
                    _pt(self.cx + side * 0.03 * self.fw, inner_y + 0.01 * self.fh),
                    _pt(self.cx + side * 0.025 * self.fw, inner_y + 0.05 * self.fh),
                    _shade(spk.skin_bgr, 0.7),
                    1,
                    cv2.LINE_AA,
                    _SHIFT,
                )

    def _nose(self, img: np.ndarray) -> None:
        skin = self.spk.skin_bgr
        top, tip = self.cy - 0.06 * self.fh, self.cy + 0.13 * self.fh
        cv2.line(
            img,
            _pt(self.cx, top),
            _pt(self.cx, tip - 0.02 * self.fh),
            _shade(skin, 1.12),
            max(1, round(0.035 * self.fw)),
            cv2.LINE_AA,
            _SHIFT,
        )
        cv2.line(
            img,
            _pt(self.cx + 0.05 * self.fw, top + 0.03 * self.fh),
            _pt(self.cx + 0.07 * self.fw, tip),
            _shade(skin, 0.8),
            1,
            cv2.LINE_AA,
            _SHIFT,
        )
        for side in (-1, 1):
            _ellipse(
                img,
                (self.cx + side * 0.045 * self.fw, tip + 0.005 * self.fh),
                (0.03 * self.fw, 0.015 * self.fh),
                _shade(skin, 0.45),
            )

    def _mouth(self, img: np.ndarray, opening: float) -> None:
        spk, p = self.spk, self.p
        hw = spk.mouth_width * p.mouth_width * self.fw / 2
        my = self.cy + 0.27 * self.fh
        lift = p.smile * hw * 0.6
        o = opening * self.fh
        x = np.linspace(-1, 1, 17)
        bulge = 1 - x**2
        xs = self.cx + x * hw
        line = my - lift * x**2 + 0.3 * lift
        top_in, bot_in = line - o / 2 * bulge, line + o / 2 * bulge
        lip = 0.04 * self.fh * p.lip_thickness
        top_out = top_in - lip * np.sqrt(bulge) * (1 - 0.25 * np.exp(-((x / 0.15) ** 2)))
        bot_out = bot_in + 1.3 * lip * np.sqrt(bulge)
        if p.cheek > 0.15:  # nasolabial folds of a smile
            for side in (-1, 1):
                pts = _poly(
                    self.cx + side * np.array([0.09, 0.14, hw / self.fw + 0.04]) * self.fw,
                    np.array([self.cy + 0.13 * self.fh, my - 0.06 * self.fh, line[0]]),
                )
                cv2.polylines(
                    img,
                    [pts],
                    False,
                    _shade(spk.skin_bgr, 1 - 0.25 * p.cheek),
                    1,
                    cv2.LINE_AA,
                    _SHIFT,
                )
        lips = np.concatenate([_poly(xs, top_out), _poly(xs[::-1], bot_out[::-1])])
        cv2.fillPoly(img, [lips], spk.lip_bgr, cv2.LINE_AA, _SHIFT)
        if o > 0.6:
            cavity = np.concatenate([_poly(xs, top_in), _poly(xs[::-1], bot_in[::-1])])
            cv2.fillPoly(img, [cavity], (35, 25, 60), cv2.LINE_AA, _SHIFT)
            if p.teeth > 0.2:
                teeth_h = np.minimum(o * 0.45 * p.teeth, o) * bulge
                inner = np.concatenate(
                    [_poly(xs[2:-2], top_in[2:-2]), _poly(xs[-3:1:-1], (top_in + teeth_h)[-3:1:-1])]
                )
                cv2.fillPoly(img, [inner], (215, 225, 230), cv2.LINE_AA, _SHIFT)
        else:
            cv2.polylines(
                img, [_poly(xs, line)], False, _shade(spk.lip_bgr, 0.55), 1, cv2.LINE_AA, _SHIFT
            )

    # -- frames --------------------------------------------------------------------------
    def frame(
        self,
        opening: float,
        openness: float,
        gaze: tuple[float, float],
        motion: tuple[float, float, float],
    ) -> np.ndarray:
        spk, size = self.spk, self.size
        img = self.background.astype(np.uint8)
        _ellipse(img, (self.cx, size * 1.08), (size * 0.48, size * 0.22), spk.shirt_bgr)
        neck_w = 0.22 * self.fw
        cv2.rectangle(
            img,
            _pt(self.cx - neck_w, self.cy + 0.3 * self.fh),
            _pt(self.cx + neck_w, size),
            _shade(spk.skin_bgr, 0.82),
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
        _ellipse(
            img, (self.cx, self.cy - 0.08 * self.fh), (0.56 * self.fw, 0.56 * self.fh), spk.hair_bgr
        )
        for side in (-1, 1):  # ears
            _ellipse(
                img,
                (self.cx + side * 0.49 * self.fw, self.cy - 0.03 * self.fh),
                (0.06 * self.fw, 0.11 * self.fh),
                _shade(spk.skin_bgr, 0.9),
            )
        _ellipse(img, (self.cx, self.cy), (self.fw / 2, self.fh / 2), _shade(spk.skin_bgr, 0.9))
        _ellipse(
            img, (self.cx, self.cy + 0.02 * self.fh), (0.44 * self.fw, 0.46 * self.fh), spk.skin_bgr
        )
        _ellipse(
            img, (self.cx, self.cy - 0.47 * self.fh), (0.5 * self.fw, 0.14 * self.fh), spk.hair_bgr
        )
        if self.p.cheek > 0.15:
            for side in (-1, 1):
                _ellipse(
                    img,
                    (self.cx + side * 0.22 * self.fw, self.cy + 0.1 * self.fh),
                    (0.1 * self.fw, 0.06 * self.fh),
                    _shade(spk.skin_bgr, 1.05),
                )
        self._eyes(img, openness, gaze)
        self._brows(img)
        self._nose(img)
        self._mouth(img, opening)
        dx, dy, angle = motion
        m = cv2.getRotationMatrix2D((self.cx, self.cy + 0.4 * self.fh), angle, 1.0)
        m[:, 2] += (dx, dy)
        img = cv2.warpAffine(
            img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        img = cv2.GaussianBlur(img, (3, 3), 0.7)
        oy, ox = self.rng.integers(0, _NOISE_PAD + 1, 2)
        out = img * self.lighting + self.noise[oy : oy + size, ox : ox + size]
        return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _smooth_walk(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """A smooth random path of unit scale (head sway)."""
    raw = rng.standard_normal(n + 2 * width)
    kernel = np.hanning(2 * width + 1)
    path = np.convolve(raw, kernel / np.sqrt((kernel**2).sum()), mode="same")[width : width + n]
    return path


def render_frames(
    utt: Utterance, timeline: Timeline, size: int, fps: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], FaceParams]:
    """The BGR frames of one utterance (len = utt.n_frames) and the expression used."""
    renderer = FaceRenderer(utt, size, rng)
    p = renderer.p
    n = utt.n_frames
    t = (np.arange(n) + 0.5) / fps
    grid = np.arange(len(timeline.jaw)) / CONTROL_RATE
    jaw = np.interp(t, grid, timeline.jaw)
    accent = np.interp(t, grid, timeline.accent)
    opening = p.rest_open + p.jaw * jaw
    # blinks: about one every 3 s, two frames long
    openness = np.full(n, p.eye_open)
    for start in np.flatnonzero(rng.uniform(size=n) < 1 / (3 * fps)):
        openness[start : start + 2] = 0.1
    gaze_x = 0.4 * np.tanh(_smooth_walk(rng, n, 4) * 0.5)
    amp = p.head_motion * size
    dx = amp * _smooth_walk(rng, n, 3)
    dy = amp * 0.6 * _smooth_walk(rng, n, 3) + p.head_drop * size + amp * 0.8 * accent
    angle = (amp / size) * 180 * 0.6 * _smooth_walk(rng, n, 4)
    frames = [
        renderer.frame(
            float(opening[i]),
            float(openness[i]),
            (float(gaze_x[i]), p.gaze_down),
            (float(dx[i]), float(dy[i]), float(angle[i])),
        )
        for i in range(n)
    ]
    return frames, p
