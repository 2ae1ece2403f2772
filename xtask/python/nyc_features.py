"""The model crate's features in numpy, for the benchmarks' original stack.

Only the formulas are written here. Their constants (Earth radius, the grid
factors of the Manhattan distance, the airports, the service area) come from
the model crate through the TAXI_MODEL_CONSTANTS environment variable, which
`cargo xtask bench …` sets. Both benchmarks check what these formulas give
against the model crate's own predictions and fail when they disagree.
"""
import json
import os

import numpy as np

CONSTANTS = json.loads(os.environ["TAXI_MODEL_CONSTANTS"])
R = CONSTANTS["earth_radius_km"]
KM_PER_DEG_LAT = CONSTANTS["km_per_deg_lat"]
KM_PER_DEG_LON = CONSTANTS["km_per_deg_lon"]
# {"jfk": [lat, lon], ...}: feature names are pickup_<name>_km, dropoff_<name>_km.
AIRPORTS = CONSTANTS["airports"]
AREA = CONSTANTS["service_area"]


def haversine(lat1, lon1, lat2, lon2):
    """Great-circle distance in km (the textbook formula)."""
    la1, la2 = np.radians(lat1), np.radians(lat2)
    dlat = la2 - la1
    dlon = np.radians(lon2 - lon1)
    h = np.sin(dlat / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin(dlon / 2) ** 2
    return 2 * R * np.arcsin(np.minimum(np.sqrt(h), 1.0))


def in_area(lat, lon):
    """Whether points lie in the service area (bounds inclusive)."""
    return ((lat >= AREA["lat_min"]) & (lat <= AREA["lat_max"])
            & (lon >= AREA["lon_min"]) & (lon <= AREA["lon_max"]))


def feature_columns(plat, plon, dlat, dlon, passengers):
    """Every feature, by its name in the model artifact.

    Works on numpy arrays and on pandas Series alike.
    """
    d = haversine(plat, plon, dlat, dlon)
    columns = {
        "haversine_km": d,
        "sqrt_haversine_km": np.sqrt(d),
        "manhattan_km": np.abs(plat - dlat) * KM_PER_DEG_LAT + np.abs(plon - dlon) * KM_PER_DEG_LON,
    }
    for name, (lat, lon) in AIRPORTS.items():
        columns[f"pickup_{name}_km"] = haversine(plat, plon, lat, lon)
        columns[f"dropoff_{name}_km"] = haversine(dlat, dlon, lat, lon)
    columns["passenger_count"] = passengers * 1.0
    return columns


def feature_matrix(columns, names):
    """The columns in the artifact's order; a name this file does not
    compute fails here rather than shifting the others."""
    return np.column_stack([np.asarray(columns[n], dtype=float) for n in names])


class ArtifactModel:
    """A model artifact's linear formula as the service applies it: features
    clamped into their training ranges, then the prediction floored at 0."""

    def __init__(self, artifact):
        self.names = [f["name"] for f in artifact["features"]]
        self.coef = np.array(artifact["coefficients"], dtype=float)
        self.intercept = float(artifact["intercept"])
        self.low = np.array([r["min"] for r in artifact["feature_ranges"]], dtype=float)
        self.high = np.array([r["max"] for r in artifact["feature_ranges"]], dtype=float)

    def clamp(self, x):
        return np.clip(x, self.low, self.high)

    def predict(self, x):
        return np.maximum(self.clamp(x) @ self.coef + self.intercept, 0.0)
