"""Finding faces in a picture without downloading anything: OpenCV's Haar cascade for frontal faces,
the XML file that ships inside the ``opencv-python-headless`` wheel (``cv2.data.haarcascades``).

Limits, against the RetinaFace detector A1111 downloads: it finds upright, roughly frontal faces
(a head turned past about 45 degrees, tilted past about 20, or mostly hidden is missed); it gives
boxes only, no landmarks, so faces are not rotated upright before restoration (the restorer gets an
expanded square around the box, see ``face_paste``); and faces smaller than ``min_face_fraction`` of
the picture's shorter side are ignored (a restorer cannot do much with a face a few pixels wide, and
tiny boxes are where the cascade's false alarms are).

OpenCV 5 moved the cascade classifier out of the main package and its wheels no longer carry the
XML files, so this needs OpenCV 4 (``opencv-python-headless>=4.8,<5``).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

FRONTAL_CASCADE = "haarcascade_frontalface_default.xml"
DETECTION_MAX_SIDE = 1024  # larger pictures are searched at this size (the cascade's time grows with area)


class FaceBox(NamedTuple):
    """A face's box in pixels of the picture it was found in."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


class FaceDetectorUnavailable(RuntimeError):
    """The installed OpenCV has no Haar cascade (OpenCV 5); the message says what to install."""


class HaarFaceDetector:
    """Frontal faces with OpenCV's bundled Haar cascade. One detector may serve several threads."""

    def __init__(self, *, min_face_fraction: float = 0.05, min_neighbors: int = 5, scale_factor: float = 1.1) -> None:
        self.min_face_fraction = min_face_fraction
        self.min_neighbors = min_neighbors  # overlapping hits a face needs; more = fewer false alarms
        self.scale_factor = scale_factor  # step between the sizes searched
        self._cascade = _load_cascade(FRONTAL_CASCADE)
        self._lock = threading.Lock()  # OpenCV does not promise that one classifier is thread-safe

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """The faces in ``image``, largest first (then top to bottom, left to right)."""
        import cv2

        gray = np.asarray(image.convert("L"))
        height, width = gray.shape
        shrink = min(1.0, DETECTION_MAX_SIDE / max(width, height))
        if shrink < 1.0:
            gray = cv2.resize(gray, (round(width * shrink), round(height * shrink)), interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)  # the cascade was trained on equalized faces; helps dark or flat pictures
        min_side = max(24, round(self.min_face_fraction * min(gray.shape)))  # 24: the cascade's own window
        with self._lock:
            found = self._cascade.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                                                   minSize=(min_side, min_side))
        boxes = [_scaled_box(row, 1 / shrink, width, height) for row in np.asarray(found).reshape(-1, 4)]
        return sorted(boxes, key=lambda box: (-box.area, box.y, box.x))


def cascade_folder() -> Path:
    """The folder of the Haar cascade files in the installed OpenCV wheel."""
    import cv2

    data = getattr(cv2, "data", None)
    folder = getattr(data, "haarcascades", None)
    if folder is None or not hasattr(cv2, "CascadeClassifier"):
        raise FaceDetectorUnavailable(
            f"Face detection needs OpenCV's Haar cascades, which OpenCV {cv2.__version__} does not include (OpenCV 5 "
            "moved them out). Install OpenCV 4: pip install 'opencv-python-headless>=4.8,<5'")
    return Path(folder)


def _load_cascade(file_name: str):
    import cv2

    path = cascade_folder() / file_name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise FaceDetectorUnavailable(f"OpenCV could not read its face cascade {path}; reinstall opencv-python-headless.")
    return cascade


def _scaled_box(row: np.ndarray, factor: float, width: int, height: int) -> FaceBox:
    """A box found on the shrunk picture, in the original picture's pixels (kept inside it)."""
    x, y, w, h = (float(value) * factor for value in row)
    left, top = max(0, round(x)), max(0, round(y))
    return FaceBox(left, top, min(width - left, round(w)), min(height - top, round(h)))
