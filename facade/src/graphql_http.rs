//! GraphQL over HTTP (https://graphql.github.io/graphql-over-http/): `POST /graphql` with
//! `application/json` only (no `text/plain`, form or multipart: no simple cross-site
//! requests), `GET /graphql` for queries (never mutations) and GraphiQL. Responses are
//! `application/graphql-response+json` when asked for, `application/json` otherwise; a
//! malformed request is a 4xx, never a 500.

use std::sync::Arc;

use async_graphql::{Variables, parser::types::OperationType};
use poem::{
    Body, Request, Response, handler,
    http::{StatusCode, header},
    web::{Data, Query},
};

use crate::{
    context::{CsrfRule, RequestContext},
    error::{ApiError, ErrorKind},
    graphql::{Documents, Executed, NOT_RUN},
    state::AppState,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    GraphqlResponse,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json; charset=utf-8",
            Format::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        }
    }
}

/// The first acceptable media type in `Accept`; JSON when there is none.
fn negotiate(accept: Option<&str>) -> Option<Format> {
    let Some(accept) = accept.filter(|accept| !accept.trim().is_empty()) else { return Some(Format::Json) };
    accept.split(',').find_map(|range| {
        let media = range.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match media.as_str() {
            "application/graphql-response+json" => Some(Format::GraphqlResponse),
            "application/json" | "application/*" | "*/*" => Some(Format::Json),
            _ => None,
        }
    })
}

/// The parameters of a GraphQL request, checked.
struct Params {
    query: String,
    operation_name: Option<String>,
    variables: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Params {
    fn from_json(value: serde_json::Value) -> Result<Self, String> {
        use serde_json::Value;
        let Value::Object(mut map) = value else {
            return Err("the body must be a JSON object with a \"query\" (batches are not supported)".into());
        };
        let query = match map.remove("query") {
            Some(Value::String(query)) => query,
            Some(_) => return Err("\"query\" must be a string".into()),
            None => return Err("\"query\" is required".into()),
        };
        let operation_name = match map.remove("operationName") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(_) => return Err("\"operationName\" must be a string".into()),
        };
        let variables = match map.remove("variables") {
            None | Some(Value::Null) => None,
            Some(Value::Object(variables)) => Some(variables),
            Some(_) => return Err("\"variables\" must be an object".into()),
        };
        match map.remove("extensions") {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return Err("\"extensions\" must be an object".into()),
        }
        Ok(Params { query, operation_name, variables })
    }

    /// GET parameters: `variables` and `extensions` arrive as JSON strings.
    fn from_query(mut pairs: std::collections::HashMap<String, String>) -> Result<Self, String> {
        let mut json = serde_json::Map::new();
        for name in ["query", "operationName"] {
            if let Some(value) = pairs.remove(name) {
                json.insert(name.to_owned(), value.into());
            }
        }
        for name in ["variables", "extensions"] {
            if let Some(value) = pairs.remove(name).filter(|value| !value.is_empty()) {
                let parsed: serde_json::Value =
                    serde_json::from_str(&value).map_err(|_| format!("\"{name}\" must be a JSON object"))?;
                json.insert(name.to_owned(), parsed);
            }
        }
        Params::from_json(json.into())
    }
}

#[handler]
pub async fn post(request: &Request, body: Body, Data(state): Data<&Arc<AppState>>) -> Response {
    let Some(format) = negotiate(request.header(header::ACCEPT)) else {
        return not_acceptable();
    };
    let content_type = request.header(header::CONTENT_TYPE).unwrap_or_default().to_ascii_lowercase();
    let mut parts = content_type.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    let charset_ok =
        parts.all(|param| !param.starts_with("charset=") || matches!(param, "charset=utf-8" | "charset=\"utf-8\""));
    if essence != "application/json" || !charset_ok {
        return bad_request(
            format,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send GraphQL requests as Content-Type: application/json",
        );
    }
    let bytes = match body.into_bytes_limit(state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(poem::error::ReadBodyError::PayloadTooLarge) => {
            let message = format!("the request body is larger than {} bytes", state.max_body_bytes);
            return bad_request(format, StatusCode::PAYLOAD_TOO_LARGE, &message);
        }
        Err(_) => return bad_request(format, StatusCode::BAD_REQUEST, "could not read the body"),
    };
    let params = match serde_json::from_slice(&bytes) {
        Ok(value) => Params::from_json(value),
        Err(_) => Err("the body is not valid JSON".to_owned()),
    };
    match params {
        Ok(params) => execute(request, state, params, format).await,
        Err(message) => bad_request(format, StatusCode::BAD_REQUEST, &message),
    }
}

#[handler]
pub async fn get(
    request: &Request,
    Query(pairs): Query<std::collections::HashMap<String, String>>,
    Data(state): Data<&Arc<AppState>>,
) -> Response {
    let accept = request.header(header::ACCEPT).unwrap_or_default();
    if !pairs.contains_key("query") && state.graphiql && accept.contains("text/html") {
        return crate::graphiql::page();
    }
    let Some(format) = negotiate(Some(accept)) else {
        return not_acceptable();
    };
    let params = match Params::from_query(pairs) {
        Ok(params) => params,
        Err(message) => return bad_request(format, StatusCode::BAD_REQUEST, &message),
    };
    if is_mutation(&state.documents, &params) {
        let mut response = bad_request(format, StatusCode::METHOD_NOT_ALLOWED, "mutations are only accepted with POST");
        response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    execute(request, state, params, format).await
}

/// Whether the request would run a mutation. Without the keyword it cannot, and the query
/// need not be looked at here (most requests are queries); with it, the document the schema
/// parsed for this query text answers, without parsing again.
fn is_mutation(documents: &Documents, params: &Params) -> bool {
    params.query.contains("mutation")
        && documents.operation_type(&params.query, params.operation_name.as_deref()) == Some(OperationType::Mutation)
}

async fn execute(request: &Request, state: &AppState, params: Params, format: Format) -> Response {
    // A mutation riding on the session cookie must prove it comes from our own pages.
    let rule = if is_mutation(&state.documents, &params) { CsrfRule::CookieWrites } else { CsrfRule::NotNeeded };
    let context = match RequestContext::of_http(&state.identity, (&state.cookies, &state.proxies), request, rule).await
    {
        Ok(context) => context,
        // Refused by the CSRF check, or the credential could not be checked at all: nothing
        // can be served.
        Err(error) => {
            state.metrics.graphql_operation(NOT_RUN, error.kind.graphql_code());
            return refuse(format, error.kind.http_status(), &error);
        }
    };
    let executed = Executed::default();
    let mut graphql = async_graphql::Request::new(params.query).data(context).data(executed.clone());
    if let Some(name) = params.operation_name {
        graphql = graphql.operation_name(name);
    }
    if let Some(variables) = params.variables {
        graphql = graphql.variables(Variables::from_json(serde_json::Value::Object(variables)));
    }
    let response = state.schema.execute(graphql).await;
    let operation = executed.operation();
    let outcome = match response.errors.first() {
        None => "ok",
        Some(error) => error_code(error),
    };
    state.metrics.graphql_operation(operation.as_deref().unwrap_or(NOT_RUN), outcome);
    render(&response, operation.is_some(), format)
}

/// The `extensions.code` of an error, as one of the codes of the error table.
fn error_code(error: &async_graphql::ServerError) -> &'static str {
    let code = error.extensions.as_ref().and_then(|extensions| match extensions.get("code") {
        Some(async_graphql::Value::String(code)) => Some(code.as_str()),
        _ => None,
    });
    ErrorKind::ALL
        .iter()
        .map(|kind| kind.graphql_code())
        .find(|known| Some(*known) == code)
        .unwrap_or(ErrorKind::BadUserInput.graphql_code())
}

fn render(response: &async_graphql::Response, executed: bool, format: Format) -> Response {
    // The common case needs no editing: serialize once, straight to bytes.
    if executed && response.errors.is_empty() {
        return json_bytes(format, StatusCode::OK, serde_json::to_vec(response).unwrap_or_default());
    }
    let mut body = serde_json::to_value(response).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = body.as_object_mut() {
        if !executed {
            // A request error: the operation never ran, so there is no data entry.
            object.remove("data");
        }
        if let Some(serde_json::Value::Array(errors)) = object.get_mut("errors") {
            for error in errors {
                let extensions = error.as_object_mut().and_then(|error| {
                    error.entry("extensions").or_insert_with(|| serde_json::json!({})).as_object_mut()
                });
                if let Some(extensions) = extensions {
                    // Errors of the GraphQL engine itself (syntax, validation, argument
                    // coercion, limits) are all about what the client sent.
                    extensions.entry("code").or_insert_with(|| ErrorKind::BadUserInput.graphql_code().into());
                }
            }
        }
    }
    let status = match (format, executed) {
        (Format::GraphqlResponse, false) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    json_response(format, status, &body)
}

/// A request refused before GraphQL ran.
fn refuse(format: Format, status: StatusCode, error: &ApiError) -> Response {
    error.graphql_refusal(status, format.content_type())
}

/// A request refused for what it is, not who sent it.
fn bad_request(format: Format, status: StatusCode, message: &str) -> Response {
    refuse(format, status, &ApiError::new(ErrorKind::BadUserInput, message))
}

fn not_acceptable() -> Response {
    bad_request(
        Format::Json,
        StatusCode::NOT_ACCEPTABLE,
        "accept application/graphql-response+json or application/json",
    )
}

fn json_response(format: Format, status: StatusCode, body: &serde_json::Value) -> Response {
    json_bytes(format, status, serde_json::to_vec(body).unwrap_or_default())
}

fn json_bytes(format: Format, status: StatusCode, body: Vec<u8>) -> Response {
    Response::builder().status(status).content_type(format.content_type()).body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_first_supported_type() {
        assert_eq!(negotiate(None), Some(Format::Json));
        assert_eq!(
            negotiate(Some("application/graphql-response+json, application/json;q=0.9")),
            Some(Format::GraphqlResponse)
        );
        assert_eq!(negotiate(Some("application/json")), Some(Format::Json));
        assert_eq!(negotiate(Some("*/*")), Some(Format::Json));
        assert_eq!(negotiate(Some("text/html")), None);
    }

    #[test]
    fn parameters_are_checked() {
        assert!(Params::from_json(serde_json::json!({"query": "{ whoami { id } }", "variables": null})).is_ok());
        assert!(Params::from_json(serde_json::json!({"query": 1})).is_err());
        assert!(Params::from_json(serde_json::json!({"query": "{a}", "variables": "x"})).is_err());
        assert!(Params::from_json(serde_json::json!({"query": "{a}", "operationName": 3})).is_err());
        assert!(Params::from_json(serde_json::json!([{"query": "{a}"}])).is_err());
        assert!(Params::from_json(serde_json::json!({})).is_err());
    }

    #[test]
    fn mutations_are_recognised_by_operation_name() {
        let documents = Documents::new();
        let operation_type = |query, name| documents.operation_type(query, name);
        let document = "query A { whoami { id } } mutation B { revokeToken(refreshToken: \"x\") { revoked } }";
        assert_eq!(operation_type(document, Some("B")), Some(OperationType::Mutation));
        assert_eq!(operation_type(document, Some("A")), Some(OperationType::Query));
        assert_eq!(operation_type("mutation { x }", None), Some(OperationType::Mutation));
        assert_eq!(operation_type("{ x }", None), Some(OperationType::Query));
    }

    #[tokio::test]
    async fn a_document_the_schema_parsed_answers_from_its_cache() {
        let (schema, documents) =
            crate::graphql::schema(crate::graphql::Limits { depth: 10, complexity: 100, aliases: 10 });
        let query = "mutation M { verifyToken(token: \"x\") { payload } }";
        // Before the schema has seen it, the text is parsed; after, the cached document
        // answers, and both agree.
        assert_eq!(documents.operation_type(query, None), Some(OperationType::Mutation));
        let _ = schema.execute(query).await;
        assert!(documents.holds(query), "the schema did not cache the document");
        assert_eq!(documents.operation_type(query, Some("M")), Some(OperationType::Mutation));
        assert_eq!(documents.operation_type(query, Some("N")), None);
    }
}
