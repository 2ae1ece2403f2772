//! One PromQL query of the analysis, asked of Prometheus's HTTP API
//! (`GET /api/v1/query`): the answer must be one number. Anything else —
//! Prometheus down, an error, no series, several, NaN — is inconclusive,
//! with the reason, and an inconclusive query never passes.

use serde::Deserialize;

use crate::answer::body_within;

/// The most read of Prometheus's answer to one query.
const MAX_ANSWER: usize = 256 << 10;

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    Scalar((f64, String)),
    // Read only to be told apart from a number.
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Series {
    value: (f64, String),
}

/// The value of `query` now, at the Prometheus at `base`.
pub async fn value(http: &reqwest::Client, base: &str, query: &str) -> Result<f64, String> {
    let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
    let url = reqwest::Url::parse_with_params(&url, &[("query", query)])
        .map_err(|e| format!("{base} is not a URL for Prometheus: {e}"))?;
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("Prometheus at {base} did not answer: {e}"))?;
    let text = body_within(response, MAX_ANSWER).await?;
    read(&text)
}

/// The one number an answer holds.
fn read(text: &str) -> Result<f64, String> {
    let answer: Answer =
        serde_json::from_str(text).map_err(|e| format!("not Prometheus's answer: {e}"))?;
    if answer.status != "success" {
        return Err(format!("Prometheus refused it: {}", answer.error.unwrap_or_default()));
    }
    let raw = match answer.data {
        Some(Data::Scalar((_, v))) => v,
        Some(Data::Vector(series)) => match <[Series; 1]>::try_from(series) {
            Ok([one]) => one.value.1,
            Err(all) if all.is_empty() => return Err("it returned nothing".into()),
            Err(all) => return Err(format!("it returned {} series, not one", all.len())),
        },
        Some(Data::Matrix(_) | Data::String(_)) | None => {
            return Err("it returned no number (a range or a string)".into());
        }
    };
    let v: f64 = raw.parse().map_err(|_| format!("its value {raw:?} is not a number"))?;
    if v.is_finite() { Ok(v) } else { Err(format!("its value is {raw}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_number_or_the_reason_there_is_none() {
        let vector = |r: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{r}]}}}}"#)
        };
        let one = r#"{"metric":{"color":"green"},"value":[1700000000.1,"0.25"]}"#;
        assert_eq!(read(&vector(one)), Ok(0.25));
        assert!(read(&vector("")).unwrap_err().contains("returned nothing"));
        assert!(read(&vector(&format!("{one},{one}"))).unwrap_err().contains("2 series"));
        let nan = r#"{"metric":{},"value":[1.0,"NaN"]}"#;
        assert!(read(&vector(nan)).unwrap_err().contains("NaN"));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.0,"3"]}}"#;
        assert_eq!(read(scalar), Ok(3.0));
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(read(refused).unwrap_err().contains("parse error"));
        assert!(read("<html>").unwrap_err().contains("not Prometheus"));
    }
}
