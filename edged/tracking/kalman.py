"""A constant-velocity Kalman filter over many boxes at once (structure of arrays).

State per track: centre x, centre y, width, height (camera pixels) and their rates in
pixels per second: [cx, cy, w, h, vcx, vcy, vw, vh]. Time steps are seconds between
capture timestamps, so a dropped frame is a longer step, not a distorted velocity.

Why x, y, w, h and not ByteTrack's x, y, aspect, h: boxes at the image border are
clipped, and an object leaving the frame changes its box's aspect ratio quickly while
its height stays; a goalpost is a thin box whose width is a few pixels. With width and
height as separate states each gets noise in its own scale (BoT-SORT made the same
change for the same reason). All tracks share one time step, so the transition is one
matrix; the noise depends on each box's size.

Process noise: a piecewise-constant white acceleration per coordinate, std
`accel_rel * size + accel_px` (px/s^2), giving the usual [[dt^4/4, dt^3/2],
[dt^3/2, dt^2]] * sigma^2 blocks. The absolute part is for a camera on a turning
head: the image moves by the same pixels whatever the object's size.
"""

from __future__ import annotations

import numpy as np

NDIM = 4  # measured: cx, cy, w, h


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    wh = b[:, 2:] - b[:, :2]
    return np.concatenate([b[:, :2] + wh / 2, wh], axis=1)


def cxcywh_to_xyxy(z: np.ndarray) -> np.ndarray:
    half = np.maximum(z[:, 2:4], 1.0) / 2
    return np.concatenate([z[:, :2] - half, z[:, :2] + half], axis=1)


class BoxKalman:
    """Noise model and the batched predict/update steps; holds no tracks itself.

    Every matrix of the model (transition, process and measurement noise, the initial
    covariance) pairs a coordinate only with its own rate, so the covariance stays
    block-diagonal: four independent 2x2 filters per track. It is stored as such,
    `var` [N, 3, 4] = (position variance, position-rate covariance, rate variance) of
    cx, cy, w, h, and every step is elementwise over tracks and coordinates (no matrix
    products, no inversions): the same numbers as the 8x8 form, several times faster.
    """

    def __init__(self, measurement_std: float, accel_rel: float, accel_px: float,
                 vel_init_rel: float, vel_init_px: float) -> None:
        self.measurement_std = measurement_std
        self.accel_rel = accel_rel
        self.accel_px = accel_px
        self.vel_init_rel = vel_init_rel
        self.vel_init_px = vel_init_px

    @staticmethod
    def _scale(wh: np.ndarray) -> np.ndarray:
        """[N, 4] size of each measured coordinate: w for cx and w, h for cy and h."""
        s = np.maximum(wh, 1.0)
        return np.concatenate([s, s], axis=1)

    def _meas_var(self, wh: np.ndarray) -> np.ndarray:
        return np.square(self.measurement_std * self._scale(wh) + 1.0)

    def initiate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """States for new tracks from measurements z [N, 4] (cx, cy, w, h): at rest,
        with a wide rate uncertainty. Returns (mean [N, 8], var [N, 3, 4])."""
        n = len(z)
        mean = np.zeros((n, 2 * NDIM))
        mean[:, :NDIM] = z
        var = np.zeros((n, 3, NDIM))
        var[:, 0] = self._meas_var(z[:, 2:4]) * 4.0
        var[:, 2] = np.square(self.vel_init_rel * self._scale(z[:, 2:4]) + self.vel_init_px)
        return mean, var

    def predict(self, mean: np.ndarray, var: np.ndarray, dt: float) -> None:
        """Advance every state by dt seconds, in place."""
        if len(mean) == 0 or dt <= 0.0:
            return
        mean[:, :NDIM] += dt * mean[:, NDIM:]
        sa2 = np.square(self.accel_rel * self._scale(mean[:, 2:4]) + self.accel_px)
        pp, pv, vv = var[:, 0], var[:, 1], var[:, 2]
        pp += dt * (2.0 * pv + dt * vv) + sa2 * (dt ** 4 / 4)
        pv += dt * vv + sa2 * (dt ** 3 / 2)
        vv += sa2 * (dt * dt)

    def update(self, mean: np.ndarray, var: np.ndarray, idx: np.ndarray, z: np.ndarray
               ) -> None:
        """Correct states `idx` with measurements z [M, 4], in place."""
        if len(idx) == 0:
            return
        m = mean[idx]
        v = var[idx]
        pp, pv, vv = v[:, 0], v[:, 1], v[:, 2]
        s = pp + self._meas_var(z[:, 2:4])
        kp, kv = pp / s, pv / s
        innov = z - m[:, :NDIM]
        m[:, :NDIM] += kp * innov
        m[:, NDIM:] += kv * innov
        mean[idx] = m
        out = np.empty_like(v)
        out[:, 0] = (1.0 - kp) * pp
        out[:, 1] = (1.0 - kp) * pv
        out[:, 2] = vv - kv * pv
        var[idx] = out
