"""UCI Heart Disease data: verified files, preprocessing and silo splits."""

from fedkit.data.silos import SPLITS, Federation, Provenance, Silo, load_silos

__all__ = ["SPLITS", "Federation", "Provenance", "Silo", "load_silos"]
