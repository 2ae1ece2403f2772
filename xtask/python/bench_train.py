"""The original stack for `cargo xtask bench train`: pandas reads the CSV,
numpy cleans it and computes the features (nyc_features), scikit-learn
splits, fits and scores.

The cleaning thresholds are the trainer's (trainer/src/clean.rs); the
benchmark fails when this script keeps other rows than the trainer, or
predicts other fares than the model crate for the same trips and the same
(trainer's) model.

usage: bench_train.py CSV SEED TEST_FRACTION all|usecols TRAINER_MODEL SAMPLE
Prints one JSON line: scores, row counts, and SAMPLE kept trips with this
script's prediction for each under the trainer's model.
"""
import json
import sys
import time

started = time.perf_counter()
import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

import nyc_features as nyc

imported = time.perf_counter() - started

# The trainer's cleaning rules (trainer/src/clean.rs).
MIN_FARE, MAX_FARE = 2.5, 100.0
MIN_PASSENGERS, MAX_PASSENGERS = 1, 6
MIN_DISTANCE_KM = 0.05

path, seed, test_fraction, reading, trainer_model, sample = sys.argv[1:7]
seed, test_fraction, sample = int(seed), float(test_fraction), int(sample)
cols = ["pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude",
        "passenger_count", "fare_amount"]
df = pd.read_csv(path, on_bad_lines="skip", usecols=cols if reading == "usecols" else None)
read = len(df)
for c in cols:
    df[c] = pd.to_numeric(df[c], errors="coerce")
df = df.dropna(subset=cols)
plat, plon, dlat, dlon, pc, fare = (df[c].to_numpy(dtype=float) for c in cols)

keep = (plat != 0) & (plon != 0) & (dlat != 0) & (dlon != 0)
keep &= (pc >= MIN_PASSENGERS) & (pc <= MAX_PASSENGERS) & (pc == np.floor(pc))
keep &= nyc.in_area(plat, plon) & nyc.in_area(dlat, dlon)
keep &= (fare >= MIN_FARE) & (fare <= MAX_FARE)
keep &= nyc.haversine(plat, plon, dlat, dlon) >= MIN_DISTANCE_KM
plat, plon, dlat, dlon, pc, fare = (a[keep] for a in (plat, plon, dlat, dlon, pc, fare))

with open(trainer_model) as f:
    artifact = nyc.ArtifactModel(json.load(f))
X = nyc.feature_matrix(nyc.feature_columns(plat, plon, dlat, dlon, pc), artifact.names)

X_train, X_test, y_train, y_test = train_test_split(
    X, fare, test_size=test_fraction, random_state=seed)
model = LinearRegression().fit(X_train, y_train)
predicted = np.maximum(model.predict(X_test), 0.0)

trips = np.column_stack([plat, plon, dlat, dlon, pc])[:sample]
print(json.dumps({
    "r2": r2_score(y_test, predicted),
    "rmse": mean_squared_error(y_test, predicted) ** 0.5,
    "mae": mean_absolute_error(y_test, predicted),
    "read": read,
    "used": int(len(fare)),
    "import_seconds": imported,
    "sample": {
        "trips": trips.tolist(),
        "predictions": artifact.predict(X[:sample]).tolist(),
    },
}))
