//! The OpenAPI document served at `/openapi.json` and rendered at `/docs`
//! by a vendored Swagger UI (embedded at build time from a Rust package
//! that vendors its files, so the page needs no network at build or view time).

use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use crate::api;
use crate::error::{ErrorDetail, LocItem, MessageBody, ValidationErrorBody};
use crate::limits::Limits;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Taxi fare prediction",
        description = "Predicts New York taxi fares from pickup and drop-off coordinates and \
            the passenger count. Compatible with the original FastAPI service's requests.\n\n\
            Every route may also answer 405 (known path, wrong method) and every path not \
            listed here answers 404, both with a `MessageBody`. A request head that is not \
            valid HTTP/1.1 answers 400, one too large 431 (or 414 for its target), also \
            with a `MessageBody`."
    ),
    paths(
        api::health,
        api::ready,
        api::predict,
        api::predict_no_slash,
        api::model_artifact,
        api::metrics
    ),
    components(schemas(MessageBody, ValidationErrorBody, ErrorDetail, LocItem, api::PredictResponse)),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "predict", description = "Fare predictions"),
        (name = "model", description = "The served model artifact"),
        (name = "operations", description = "Monitoring"),
    )
)]
struct ApiDoc;

/// The document for an instance with these limits (the batch limit is
/// configurable, so `maxItems` is filled in at start).
pub fn document(limits: &Limits) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if let Some(components) = doc.components.as_mut()
        && let Some(RefOr::T(Schema::Object(request))) =
            components.schemas.get_mut("PredictRequest")
        && let Some(RefOr::T(Schema::Array(data))) = request.properties.get_mut("data")
    {
        data.max_items = Some(limits.max_batch_rows);
    }
    doc
}
