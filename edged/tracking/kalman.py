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
    """Noise model and the batched predict/update steps; holds no tracks itself."""

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
        w = np.maximum(wh[:, 0], 1.0)
        h = np.maximum(wh[:, 1], 1.0)
        return np.stack([w, h, w, h], axis=1)

    def _meas_var(self, wh: np.ndarray) -> np.ndarray:
        return np.square(self.measurement_std * self._scale(wh) + 1.0)

    def initiate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """States for new tracks from measurements z [N, 4] (cx, cy, w, h): at rest,
        with a wide velocity uncertainty."""
        n = len(z)
        mean = np.zeros((n, 2 * NDIM))
        mean[:, :NDIM] = z
        scale = self._scale(z[:, 2:4])
        var = np.empty((n, 2 * NDIM))
        var[:, :NDIM] = self._meas_var(z[:, 2:4]) * 4.0
        var[:, NDIM:] = np.square(self.vel_init_rel * scale + self.vel_init_px)
        cov = np.zeros((n, 2 * NDIM, 2 * NDIM))
        i = np.arange(2 * NDIM)
        cov[:, i, i] = var
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray, dt: float) -> None:
        """Advance every state by dt seconds, in place."""
        if len(mean) == 0 or dt <= 0.0:
            return
        mean[:, :NDIM] += dt * mean[:, NDIM:]
        # F P F^T with F = [[I, dt I], [0, I]], written out blockwise (no 8x8 products)
        p11 = cov[:, :NDIM, :NDIM]
        p12 = cov[:, :NDIM, NDIM:]
        p21 = cov[:, NDIM:, :NDIM]
        p22 = cov[:, NDIM:, NDIM:]
        new11 = p11 + dt * (p12 + p21) + dt * dt * p22
        new12 = p12 + dt * p22
        new21 = p21 + dt * p22
        cov[:, :NDIM, :NDIM] = new11
        cov[:, :NDIM, NDIM:] = new12
        cov[:, NDIM:, :NDIM] = new21
        sa2 = np.square(self.accel_rel * self._scale(mean[:, 2:4]) + self.accel_px)  # [N, 4]
        i = np.arange(NDIM)
        cov[:, i, i] += sa2 * (dt ** 4 / 4)
        cov[:, i, i + NDIM] += sa2 * (dt ** 3 / 2)
        cov[:, i + NDIM, i] += sa2 * (dt ** 3 / 2)
        cov[:, i + NDIM, i + NDIM] += sa2 * (dt * dt)

    def update(self, mean: np.ndarray, cov: np.ndarray, idx: np.ndarray, z: np.ndarray
               ) -> None:
        """Correct states `idx` with measurements z [M, 4], in place."""
        if len(idx) == 0:
            return
        m = mean[idx]
        p = cov[idx]
        r = self._meas_var(z[:, 2:4])
        s = p[:, :NDIM, :NDIM].copy()
        i = np.arange(NDIM)
        s[:, i, i] += r
        pht = p[:, :, :NDIM]  # P H^T, [M, 8, 4]
        # K = P H^T S^-1 (S symmetric): solve S K^T = H P
        k = np.linalg.solve(s, pht.transpose(0, 2, 1)).transpose(0, 2, 1)
        innov = z - m[:, :NDIM]
        mean[idx] = m + np.einsum("nij,nj->ni", k, innov)
        p = p - k @ pht.transpose(0, 2, 1)
        cov[idx] = (p + p.transpose(0, 2, 1)) / 2
