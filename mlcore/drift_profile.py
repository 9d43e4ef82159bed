"""The histograms drift is measured on: predicted class, confidence and mean intensity.

A :class:`Profile` summarizes a set of scored images in a few dozen counts. Profiles of
disjoint sets add up, so each scoring task profiles its shard as it scores it and
monitoring folds the night's profiles without reading a pixel again; registration profiles
the holdout the same way (the drift baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)
INTENSITY_BINS = np.linspace(0.0, 256.0, 17)


def image_means(images: np.ndarray) -> np.ndarray:
    """Mean intensity of each image (over all its pixels and channels)."""
    pixels = int(np.prod(images.shape[1:]))
    # An integer sum is exact and twice as fast as ``mean``'s float accumulation.
    return images.reshape(len(images), pixels).sum(axis=1, dtype=np.uint64) / pixels


@dataclass
class Profile:
    """Histograms that summarize a set of scored images."""

    rows: int
    class_counts: list[int]
    confidence_counts: list[int]
    intensity_counts: list[int]

    @classmethod
    def of(cls, probabilities: np.ndarray, image_means: np.ndarray) -> Profile:
        """From (N, classes) probabilities and the N images' mean intensities."""
        classes = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, int)
        conf = probabilities.max(axis=1) if len(probabilities) else np.zeros(0)
        means = np.asarray(image_means, dtype=np.float64)
        return cls(
            rows=len(probabilities),
            class_counts=np.bincount(classes, minlength=probabilities.shape[1]).tolist(),
            confidence_counts=np.histogram(conf, CONFIDENCE_BINS)[0].tolist(),
            intensity_counts=np.histogram(means, INTENSITY_BINS)[0].tolist(),
        )

    @classmethod
    def empty(cls, num_classes: int) -> Profile:
        """The profile of no images: where a fold of a night's shard profiles starts."""
        return cls.of(np.zeros((0, num_classes), np.float32), np.zeros(0))

    def __add__(self, other: Profile) -> Profile:
        """Profiles of disjoint pieces add up: a night is profiled one shard at a time."""
        def total(field: str) -> list[int]:
            return (np.array(getattr(self, field)) + np.array(getattr(other, field))).tolist()

        return Profile(self.rows + other.rows, total("class_counts"),
                       total("confidence_counts"), total("intensity_counts"))
