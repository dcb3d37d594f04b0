"""The MediaPipe Face Mesh landmarks the face rig moves, by part of the face.

The lip rings (four per lip, eleven columns from corner to corner), the eye rings (lid
margins, crease, brow, under-eye), and the landmarks whose depth marks the jaw hinge and
the chin. Numbers are MediaPipe's (478-point model).
"""

from __future__ import annotations

from typing import Final

import numpy as np

# MediaPipe Face Mesh lip rings, each from the image-left corner to the image-right corner
# (eleven columns; the lower rings share their corner points with the upper ones).
UPPER_LIP_RINGS: Final = (
    (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291),  # outer contour
    (76, 184, 74, 73, 72, 11, 302, 303, 304, 408, 306),
    (62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292),
    (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308),  # inner contour
)
LOWER_LIP_RINGS: Final = (
    (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291),  # outer contour
    (76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306),
    (62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292),
    (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308),  # inner contour
)
NUM_LIP_COLUMNS: Final = 11
# The 40 landmarks of the outer and inner lip contours (MediaPipe's "lips" connections).
LIP_OUTER_INDICES: Final = UPPER_LIP_RINGS[0] + LOWER_LIP_RINGS[0][1:-1]
LIP_INNER_INDICES: Final = UPPER_LIP_RINGS[3] + LOWER_LIP_RINGS[3][1:-1]
LIP_CONTOUR_INDICES: Final = LIP_OUTER_INDICES + LIP_INNER_INDICES

# Eyes, each from the outer-left to the right corner in the image: the lid margins (upper and
# lower, sharing the corners), the ring above the margin (lid crease) and the one above that.
EYE_RINGS: Final = (
    {
        "upper": (33, 246, 161, 160, 159, 158, 157, 173, 133),
        "lower": (33, 7, 163, 144, 145, 153, 154, 155, 133),
        "crease": (130, 247, 30, 29, 27, 28, 56, 190, 243),
        "brow": (226, 113, 225, 224, 223, 222, 221, 189, 244),
        "under": (130, 25, 110, 24, 23, 22, 26, 112, 243),
    },
    {
        "upper": (362, 398, 384, 385, 386, 387, 388, 466, 263),
        "lower": (362, 382, 381, 380, 374, 373, 390, 249, 263),
        "crease": (463, 414, 286, 258, 257, 259, 260, 467, 359),
        "brow": (464, 413, 441, 442, 443, 444, 445, 342, 446),
        "under": (463, 341, 256, 252, 253, 254, 339, 255, 359),
    },
)

# Landmarks whose depth marks the jaw hinge (face silhouette beside the ears).
JAW_HINGE_INDICES: Final = (234, 454, 93, 323)
CHIN_INDEX: Final = 152


def lip_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The 40 outer + inner lip contour landmarks (x, y) of a (478, 2|3) array."""
    return np.asarray(landmarks)[list(LIP_CONTOUR_INDICES), :2]
