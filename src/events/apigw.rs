//! API Gateway proxy integrations: HTTP API (payload 2.0, also Lambda function URLs) and REST
//! API (payload 1.0), read and answered with `aws_lambda_events`' types.
//!
//! [`body`] takes the request body out (plain or base64, refused when over the size limit);
//! [`response`] and [`error`] build the proxy response API Gateway turns into HTTP. Every
//! outcome of an API Gateway event is a proxy response: request errors are 4xx with a JSON
//! body `{"error": {"code", "message"}}`, never a Lambda error (which API Gateway would turn
//! into a bare 500/502).

use aws_lambda_events::apigw::{
    ApiGatewayProxyRequest, ApiGatewayProxyResponse, ApiGatewayV2httpRequest,
    ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use base64::Engine;
use serde_json::Value;

use crate::error::RequestError;

/// Which payload format the event uses (and the response must use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// REST API, payload format 1.0.
    V1,
    /// HTTP API, payload format 2.0 (also Lambda function URLs).
    V2,
}

/// The request body's bytes, base64-decoded when API Gateway encoded it. The size limit
/// applies to the body as received (base64 text counts as sent), before any decoding.
pub fn body(
    version: Version,
    event: Value,
    max_body_bytes: usize,
) -> Result<Vec<u8>, RequestError> {
    let (body, base64) = match version {
        Version::V1 => {
            let event: ApiGatewayProxyRequest = serde_json::from_value(event)
                .map_err(|e| malformed("REST API (payload 1.0)", &e))?;
            (event.body, event.is_base64_encoded)
        }
        Version::V2 => {
            let event: ApiGatewayV2httpRequest = serde_json::from_value(event)
                .map_err(|e| malformed("HTTP API (payload 2.0)", &e))?;
            (event.body, event.is_base64_encoded)
        }
    };
    let body = body.filter(|b| !b.is_empty()).ok_or_else(|| {
        RequestError::Invalid(
            "the request has no body: POST {\"buildings\": [...]} or a GeoJSON FeatureCollection"
                .into(),
        )
    })?;
    if body.len() > max_body_bytes {
        return Err(RequestError::PayloadTooLarge {
            size: body.len(),
            limit: max_body_bytes,
        });
    }
    if !base64 {
        return Ok(body.into_bytes());
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| {
            RequestError::Invalid(format!(
                "the body is marked base64 (isBase64Encoded) but is not valid base64: {e}"
            ))
        })
}

fn malformed(format: &str, error: &serde_json::Error) -> RequestError {
    RequestError::Invalid(format!(
        "the event looks like an API Gateway {format} event but does not parse as one: {error}"
    ))
}

/// A proxy response with a JSON body.
pub fn response(version: Version, status: u16, content_type: &'static str, body: &Value) -> Value {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    let body = Some(Body::Text(body.to_string()));
    let serialised = match version {
        Version::V1 => {
            let mut r = ApiGatewayProxyResponse::default();
            r.status_code = i64::from(status);
            r.headers = headers;
            r.body = body;
            serde_json::to_value(r)
        }
        Version::V2 => {
            let mut r = ApiGatewayV2httpResponse::default();
            r.status_code = i64::from(status);
            r.headers = headers;
            r.body = body;
            serde_json::to_value(r)
        }
    };
    serialised.expect("a proxy response of text and ASCII headers always serialises")
}

/// The proxy response for a refused request: its status and `{"error": {"code", "message"}}`.
pub fn error(version: Version, error: &RequestError) -> Value {
    response(
        version,
        error.http_status(),
        "application/json",
        &error.to_json(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/apigw/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn with_body(mut event: Value, body: Value, base64: bool) -> Value {
        event["body"] = body;
        event["isBase64Encoded"] = json!(base64);
        event
    }

    const ALL: [(Version, &str); 4] = [
        (Version::V2, "v2-request-iam.json"),
        (Version::V2, "sam-http-request.json"),
        (Version::V1, "rest-request.json"),
        (Version::V1, "sam-rest-request.json"),
    ];

    #[test]
    fn plain_and_base64_bodies_come_out_as_sent() {
        let text = r#"{"buildings": [{"lat": 52.2, "lon": 21.0}]}"#;
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        for (version, name) in ALL {
            let plain = with_body(fixture(name), json!(text), false);
            assert_eq!(
                body(version, plain, 1 << 20).unwrap(),
                text.as_bytes(),
                "{name}"
            );
            let b64 = with_body(fixture(name), json!(encoded), true);
            assert_eq!(
                body(version, b64, 1 << 20).unwrap(),
                text.as_bytes(),
                "{name}"
            );
        }
        // The REST fixture from AWS has no isBase64Encoded at all: a plain body.
        let rest = fixture("rest-request.json");
        assert!(rest.get("isBase64Encoded").is_none());
        assert_eq!(
            body(Version::V1, rest, 1 << 20).unwrap(),
            b"{\r\n\t\"a\": 1\r\n}"
        );
    }

    #[test]
    fn missing_bad_and_oversized_bodies_are_refused() {
        for (version, name) in ALL {
            for missing in [Value::Null, json!("")] {
                let event = with_body(fixture(name), missing, false);
                let err = body(version, event, 100).unwrap_err();
                assert!(err.to_string().contains("no body"), "{name}: {err}");
            }
            let event = with_body(fixture(name), json!("%%% not base64"), true);
            let err = body(version, event, 100).unwrap_err();
            assert_eq!(err.http_status(), 400);
            assert!(
                err.to_string().contains("not valid base64"),
                "{name}: {err}"
            );

            let event = with_body(fixture(name), json!("x".repeat(101)), false);
            assert_eq!(
                body(version, event, 100).unwrap_err(),
                RequestError::PayloadTooLarge {
                    size: 101,
                    limit: 100
                }
            );
            // Exactly at the limit is fine.
            let event = with_body(fixture(name), json!("x".repeat(100)), false);
            assert_eq!(body(version, event, 100).unwrap().len(), 100);
        }
    }

    #[test]
    fn an_event_that_does_not_parse_as_its_format_is_a_bad_request() {
        let mut event = fixture("rest-request.json");
        event["requestContext"]["httpMethod"] = json!(5);
        let err = body(Version::V1, event, 100).unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert!(err.to_string().contains("REST API (payload 1.0)"), "{err}");
    }

    #[test]
    fn responses_carry_status_content_type_and_json_body() {
        let answer = json!({"predictions": []});
        for version in [Version::V1, Version::V2] {
            let r = response(version, 200, "application/geo+json", &answer);
            assert_eq!(r["statusCode"], 200);
            assert_eq!(r["headers"]["content-type"], "application/geo+json");
            assert_eq!(r["isBase64Encoded"], false);
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            assert_eq!(body, answer);
        }
        let v2 = response(Version::V2, 200, "application/json", &answer);
        assert_eq!(v2["cookies"], json!([]));

        let refused = RequestError::TooManyBuildings { count: 2, limit: 1 };
        let r = error(Version::V1, &refused);
        assert_eq!(r["statusCode"], 413);
        assert_eq!(r["headers"]["content-type"], "application/json");
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "too_many_buildings");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("MAX_BUILDINGS")
        );
        let r = error(Version::V2, &RequestError::Internal("boom".into()));
        assert_eq!(r["statusCode"], 500);
    }
}
