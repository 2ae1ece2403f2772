"""The original FastAPI service, for `cargo xtask bench serve`.

As the project had it: FastAPI, pydantic rows, a pandas DataFrame per
request, a scikit-learn LinearRegression — loaded here with the artifact's
coefficients, the features computed by nyc_features. FRAME=numpy runs the
tuned port instead (numpy arrays, no DataFrame: Python's best case). The
benchmark checks both predict the model crate's fares before measuring.

Environment: MODEL_PATH (the artifact), FRAME, TAXI_MODEL_CONSTANTS.
"""
import json
import os
from typing import List

import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sklearn.linear_model import LinearRegression

import nyc_features as nyc

with open(os.environ["MODEL_PATH"]) as f:
    ARTIFACT = json.load(f)
FORMULA = nyc.ArtifactModel(ARTIFACT)
FEATURE_NAMES = FORMULA.names
MODEL = LinearRegression()
MODEL.coef_ = FORMULA.coef
MODEL.intercept_ = FORMULA.intercept
MODEL.n_features_in_ = len(FEATURE_NAMES)
# As if fitted on a DataFrame: scikit-learn then checks the column names.
FRAME = os.environ.get("FRAME", "pandas")
if FRAME == "pandas":
    MODEL.feature_names_in_ = np.array(FEATURE_NAMES, dtype=object)


def feature_frame(df):
    """The features, column by column on a DataFrame, as the original."""
    columns = nyc.feature_columns(df["pickup_latitude"], df["pickup_longitude"],
                                  df["dropoff_latitude"], df["dropoff_longitude"],
                                  df["passenger_count"])
    out = pd.DataFrame(columns)[FEATURE_NAMES]
    # The clamp the service applies; the original had none, so it is done
    # the cheapest way, not to burden the original with it.
    return pd.DataFrame(FORMULA.clamp(out.to_numpy()), columns=FEATURE_NAMES)


class Trip(BaseModel):
    pickup_latitude: float
    pickup_longitude: float
    dropoff_latitude: float
    dropoff_longitude: float
    passenger_count: int


class Batch(BaseModel):
    data: List[Trip]


app = FastAPI()


@app.get("/")
def root():
    return {"status": "ok", "model_loaded": True, "model_version": ARTIFACT["model_version"]}


@app.get("/ready")
def ready():
    return {"status": "ready"}


@app.post("/api/predict/")
def predict(batch: Batch):
    if not batch.data:
        raise HTTPException(status_code=422, detail="empty batch")
    if FRAME == "pandas":
        df = pd.DataFrame([t.model_dump() for t in batch.data])
        y = np.maximum(MODEL.predict(feature_frame(df)), 0.0)
    else:
        x = np.array([[t.pickup_latitude, t.pickup_longitude, t.dropoff_latitude,
                       t.dropoff_longitude, t.passenger_count] for t in batch.data], dtype=float)
        columns = nyc.feature_columns(*x.T)
        y = np.maximum(MODEL.predict(FORMULA.clamp(nyc.feature_matrix(columns, FEATURE_NAMES))), 0.0)
    return {"predictions": y.tolist(), "model_version": ARTIFACT["model_version"]}
