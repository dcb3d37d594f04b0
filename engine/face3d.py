"""3D facial dynamics: pose-free lower-face landmarks and a PCA basis of their motion.

Coordinates follow MediaPipe's pixel convention (x right, y down, z away from the camera).
The canonical head frame is MediaPipe's own canonical face model (the mesh in the
``face_landmarker.task`` bundle), turned into that convention, centred on the midpoint of
the eye centres and scaled to unit inter-ocular distance (eye centre to eye centre).
:func:`canonicalise` fits a similarity transform (scale, rotation, translation) from the
STABLE landmarks of each frame to the template and applies it to all landmarks.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass

import numpy as np

from engine.tracking import NUM_LANDMARKS, landmarker_model_path

# Lips in MediaPipe's mesh, each ring going round from the right mouth corner (61 / 78).
LIPS_OUTER: tuple[int, ...] = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375,
    291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
)  # fmt: skip
LIPS_INNER: tuple[int, ...] = (
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324,
    308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
)  # fmt: skip
LIPS: tuple[int, ...] = LIPS_OUTER + LIPS_INNER

CHIN: tuple[int, ...] = (
    152, 148, 377, 176, 400, 175, 199, 200, 18, 171, 396, 140, 369, 32, 262,
    208, 428, 201, 421, 194, 418, 83, 313, 182, 406, 106, 335, 204, 424,
)  # fmt: skip
JAW_LINE: tuple[int, ...] = (
    149, 378, 150, 379, 136, 365, 172, 397, 58, 288, 132, 361, 93, 323,
)  # fmt: skip
LOWER_CHEEKS: tuple[int, ...] = (
    57, 287, 43, 273, 202, 422, 210, 430, 211, 431, 169, 394, 170, 395, 135, 364,
    138, 367, 214, 434, 212, 432, 216, 436, 206, 426, 205, 425, 207, 427, 187, 411,
    192, 416, 147, 376, 213, 433, 215, 435, 177, 401,
)  # fmt: skip
NOSE_BASE: tuple[int, ...] = (
    2, 94, 164, 167, 393, 165, 391, 92, 322, 186, 410, 97, 326, 98, 327,
    99, 328, 240, 460, 60, 290, 75, 305,
)  # fmt: skip
# Lips first: LOWER_FACE[:40] == LIPS.
LOWER_FACE: tuple[int, ...] = LIPS + CHIN + JAW_LINE + LOWER_CHEEKS + NOSE_BASE

RIGHT_EYE_CORNERS: tuple[int, int] = (33, 133)  # subject's right eye: outer, inner
LEFT_EYE_CORNERS: tuple[int, int] = (263, 362)  # subject's left eye: outer, inner
# Upper-face points that speech does not move (no eyelids, no eyebrows).
STABLE: tuple[int, ...] = (
    33, 133, 263, 362, 130, 359, 243, 463,  # eye corners
    168, 6, 197, 195, 122, 351, 193, 417,  # nose bridge
    10, 151, 9, 108, 337, 109, 338, 69, 299, 67, 297, 104, 333,  # forehead
    54, 284, 103, 332, 21, 251, 71, 301, 162, 389, 127, 356,  # temples
)  # fmt: skip

MOUTH_CORNERS: tuple[int, int] = (61, 291)
# Pairs of inner-lip points facing each other (upper, lower), centre and either side.
INNER_LIP_PAIRS: tuple[tuple[int, int], ...] = ((13, 14), (82, 87), (312, 317))
CHIN_TIP = 152

_CANONICAL_MESH_VERTICES = 468


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, offset


def _protobuf_fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of one protobuf message, in order."""
    fields: list[tuple[int, int, bytes | int]] = []
    offset = 0
    while offset < len(data):
        key, offset = _read_varint(data, offset)
        number, wire_type = key >> 3, key & 7
        value: bytes | int
        if wire_type == 0:
            value, offset = _read_varint(data, offset)
        elif wire_type == 1:
            value, offset = data[offset : offset + 8], offset + 8
        elif wire_type == 2:
            length, offset = _read_varint(data, offset)
            value, offset = data[offset : offset + length], offset + length
        elif wire_type == 5:
            value, offset = data[offset : offset + 4], offset + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        fields.append((number, wire_type, value))
    return fields


def mediapipe_canonical_mesh() -> np.ndarray:
    """(468, 3) float64 vertices of MediaPipe's canonical face model, in cm, y up, z to the
    viewer, read from the geometry metadata inside ``face_landmarker.task``."""
    with zipfile.ZipFile(landmarker_model_path()) as bundle:
        metadata = bundle.read("geometry_pipeline_metadata_landmarks.binarypb")
    # GeometryPipelineMetadata.canonical_mesh (field 1) -> Mesh3d.vertex_buffer (field 3):
    # 5 floats per vertex (x, y, z, u, v).
    values: list[float] = []
    for number, wire_type, payload in _protobuf_fields(metadata):
        if number != 1 or wire_type != 2 or not isinstance(payload, bytes):
            continue
        for sub_number, sub_type, item in _protobuf_fields(payload):
            if sub_number != 3 or not isinstance(item, bytes):
                continue
            if sub_type == 5:
                values.append(struct.unpack("<f", item)[0])
            elif sub_type == 2:  # packed encoding
                values.extend(np.frombuffer(item, "<f4").tolist())
    vertices = np.asarray(values, dtype=np.float64).reshape(-1, 5)[:, :3]
    if vertices.shape[0] != _CANONICAL_MESH_VERTICES:
        raise ValueError(f"canonical mesh has {vertices.shape[0]} vertices, expected 468")
    return vertices


def _eye_centres(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    right = points[..., list(RIGHT_EYE_CORNERS), :].mean(axis=-2)
    left = points[..., list(LEFT_EYE_CORNERS), :].mean(axis=-2)
    return right, left


def inter_ocular_distance(points: np.ndarray) -> np.ndarray:
    """Distance between the eye centres (mean of each eye's two corners); shape (...)."""
    right, left = _eye_centres(np.asarray(points, dtype=np.float64))
    return np.asarray(np.linalg.norm(left - right, axis=-1))


def canonical_template() -> np.ndarray:
    """(468, 3) float64 canonical face in pixel convention (x right, y down, z away from the
    camera), origin at the midpoint of the eye centres, unit inter-ocular distance.
    Deterministic: derived from the mesh shipped with the tracker model, no inference."""
    mesh = mediapipe_canonical_mesh()
    # y up / z to viewer -> y down / z away: a rotation of 180 degrees about x.
    points = mesh * np.array([1.0, -1.0, -1.0])
    right, left = _eye_centres(points)
    points = points - (right + left) / 2.0
    return points / float(np.linalg.norm(left - right))


@dataclass(frozen=True, kw_only=True)
class Similarity3D:
    """``target = scale * source @ rotation.T + translation``, batched over leading axes."""

    scale: np.ndarray  # (...)
    rotation: np.ndarray  # (..., 3, 3)
    translation: np.ndarray  # (..., 3)

    def apply(self, points: np.ndarray) -> np.ndarray:
        rotated = np.einsum("...ij,...nj->...ni", self.rotation, points)
        return self.scale[..., None, None] * rotated + self.translation[..., None, :]


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity3D:
    """Least-squares similarity (Umeyama, no reflection) from ``source`` (..., N, D) to
    ``target`` (N, D) or (..., N, D)."""
    source = np.asarray(source, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), source.shape)
    source_mean = source.mean(axis=-2)
    target_mean = target.mean(axis=-2)
    source_centred = source - source_mean[..., None, :]
    target_centred = target - target_mean[..., None, :]
    covariance = np.einsum("...ni,...nj->...ij", target_centred, source_centred)
    left, singular, right_t = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(left @ right_t))
    sign = np.where(sign == 0, 1.0, sign)
    dims = source.shape[-1]
    correction = np.ones((*source.shape[:-2], dims))
    correction[..., -1] = sign
    rotation = np.einsum("...ij,...j,...jk->...ik", left, correction, right_t)
    source_variance = (source_centred**2).sum(axis=(-2, -1))
    scale = (singular * correction).sum(axis=-1) / np.maximum(source_variance, 1e-12)
    translation = target_mean - scale[..., None] * np.einsum(
        "...ij,...j->...i", rotation, source_mean
    )
    return Similarity3D(scale=scale, rotation=rotation, translation=translation)


def stable_template_points(template: np.ndarray | None = None) -> np.ndarray:
    """(len(STABLE), 3) template points the per-frame fit aligns to."""
    full = canonical_template() if template is None else np.asarray(template, np.float64)
    return full[list(STABLE)] if full.shape[0] != len(STABLE) else full


def canonicalise(landmarks3d: np.ndarray, template: np.ndarray | None = None) -> np.ndarray:
    """Landmarks (..., 478, 3) in pixels -> the same points in the pose-free head frame
    (unit inter-ocular distance), float64. ``template`` is the (468 or 478, 3) canonical
    face or its (len(STABLE), 3) stable points; default :func:`canonical_template`."""
    points = np.asarray(landmarks3d, dtype=np.float64)
    if points.shape[-2:] != (NUM_LANDMARKS, 3):
        raise ValueError(f"expected (..., {NUM_LANDMARKS}, 3) landmarks, got {points.shape}")
    target = stable_template_points(template)
    transform = fit_similarity(points[..., list(STABLE), :], target)
    return transform.apply(points)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap (mean over three facing pairs) divided by the inter-ocular distance,
    for (..., 478, 2 or 3) landmarks in any frame; shape (...)."""
    points = np.asarray(points, dtype=np.float64)
    upper = points[..., [pair[0] for pair in INNER_LIP_PAIRS], :]
    lower = points[..., [pair[1] for pair in INNER_LIP_PAIRS], :]
    gap = np.linalg.norm(lower - upper, axis=-1).mean(axis=-1)
    return np.asarray(gap / np.maximum(inter_ocular_distance(points), 1e-12))


def identity_shape(
    lower_face: np.ndarray, openings: np.ndarray, *, closed_fraction: float = 0.2
) -> np.ndarray:
    """(N, 3) mean of the frames (T, N, 3) whose mouth opening is in the lowest
    ``closed_fraction`` (at least one frame)."""
    lower_face = np.asarray(lower_face, dtype=np.float64)
    openings = np.asarray(openings, dtype=np.float64)
    if lower_face.ndim != 3 or len(lower_face) != len(openings) or len(openings) == 0:
        raise ValueError("need (T, N, 3) points and (T,) openings with T > 0")
    count = max(1, round(closed_fraction * len(openings)))
    closest = np.argsort(openings, kind="stable")[:count]
    return np.asarray(lower_face[closest].mean(axis=0))


@dataclass(frozen=True, kw_only=True)
class DynamicsBasis:
    """PCA of lower-face motion: offsets (canonical lower-face points minus the subject's
    identity shape) ``~= mean + coeffs @ components``. Coefficients are in template units
    (inter-ocular distances); ``variances`` are their variances over the fitting data."""

    mean: np.ndarray  # (N * 3,)
    components: np.ndarray  # (K, N * 3), orthonormal rows
    variances: np.ndarray  # (K,)
    total_variance: float
    indices: np.ndarray  # (N,) landmark indices the points are taken from

    @property
    def num_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.indices.shape[0])

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return np.asarray(self.variances / max(self.total_variance, 1e-30))

    @classmethod
    def fit(
        cls,
        offsets: np.ndarray,
        *,
        num_components: int | None = None,
        variance: float = 0.98,
        indices: tuple[int, ...] = LOWER_FACE,
    ) -> DynamicsBasis:
        """Fit on (T, N, 3) offsets; keep ``num_components`` or, when None, the fewest
        components explaining ``variance`` of the total."""
        offsets = np.asarray(offsets, dtype=np.float64)
        if offsets.ndim != 3 or offsets.shape[1:] != (len(indices), 3):
            raise ValueError(f"expected (T, {len(indices)}, 3) offsets, got {offsets.shape}")
        if offsets.shape[0] < 2:
            raise ValueError("need at least two frames to fit a dynamics basis")
        flat = offsets.reshape(offsets.shape[0], -1)
        mean = flat.mean(axis=0)
        _, singular, components = np.linalg.svd(flat - mean, full_matrices=False)
        variances = singular**2 / (flat.shape[0] - 1)
        total = float(variances.sum())
        if num_components is None:
            if not 0.0 < variance <= 1.0:
                raise ValueError(f"variance must be in (0, 1], got {variance}")
            cumulative = np.cumsum(variances) / max(total, 1e-30)
            num_components = int(np.searchsorted(cumulative, variance - 1e-12) + 1)
        num_components = max(1, min(num_components, len(variances)))
        return cls(
            mean=mean,
            components=components[:num_components],
            variances=variances[:num_components],
            total_variance=total,
            indices=np.asarray(indices, dtype=np.int64),
        )

    def encode(self, points: np.ndarray, identity: np.ndarray | None = None) -> np.ndarray:
        """(..., N, 3) offsets (or points, when their ``identity`` shape is given) ->
        (..., K) float32 coefficients."""
        points = np.asarray(points, dtype=np.float64)
        if identity is not None:
            points = points - np.asarray(identity, dtype=np.float64)
        flat = points.reshape(*points.shape[:-2], -1) - self.mean
        return np.asarray(flat @ self.components.T, dtype=np.float32)

    def decode(self, coeffs: np.ndarray, identity: np.ndarray | None = None) -> np.ndarray:
        """(..., K) coefficients -> (..., N, 3) offsets, or points when ``identity`` given."""
        coeffs = np.asarray(coeffs, dtype=np.float64)
        flat = coeffs @ self.components + self.mean
        points = flat.reshape(*coeffs.shape[:-1], self.num_points, 3)
        if identity is not None:
            points = points + np.asarray(identity, dtype=np.float64)
        return np.asarray(points)

    def same_as(self, other: DynamicsBasis) -> bool:
        """Whether ``other`` is this basis (as stored: same points, mean and components)."""
        mine, theirs = self.to_arrays(), other.to_arrays()
        return mine.keys() == theirs.keys() and all(
            np.shape(mine[k]) == np.shape(theirs[k]) and np.allclose(mine[k], theirs[k])
            for k in mine
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for safetensors."""
        return {
            "mean": self.mean.astype(np.float32),
            "components": self.components.astype(np.float32),
            "variances": self.variances.astype(np.float32),
            "total_variance": np.asarray([self.total_variance], dtype=np.float64),
            "indices": self.indices.astype(np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> DynamicsBasis:
        return cls(
            mean=np.asarray(arrays["mean"], dtype=np.float64),
            components=np.asarray(arrays["components"], dtype=np.float64),
            variances=np.asarray(arrays["variances"], dtype=np.float64),
            total_variance=float(np.asarray(arrays["total_variance"]).reshape(-1)[0]),
            indices=np.asarray(arrays["indices"], dtype=np.int64),
        )
