//! Request bodies: the one way a JSON body is read on every route.
//!
//! Malformed JSON (syntax, truncation, nesting deeper than [`MAX_DEPTH`]) is 400 `invalid_json`;
//! well-formed JSON whose values do not fit the request (a missing field, a wrong type, an
//! unknown member) is 422 `invalid_request`; a body over the route's size limit is 413. It owns
//! parsing only and must never judge what the values mean (the service does).

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::ApiError;

/// Deepest nesting of arrays and objects accepted in a JSON body.
pub const MAX_DEPTH: usize = 64;

/// Depth of the deepest array or object of `bytes`, read as JSON (strings skipped), stopping
/// as soon as it passes `limit`.
fn depth_over(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a JSON body into `T` with the API's error vocabulary.
pub fn parse<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, ApiError> {
    if depth_over(bytes, MAX_DEPTH) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the JSON body nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    integral_floats_as_integers(&mut value);
    // serde reads a struct from an array of its fields too; a typed body is an object.
    let any_json = std::any::TypeId::of::<T>() == std::any::TypeId::of::<serde_json::Value>();
    if !any_json && !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "the body must be a JSON object",
        ));
    }
    T::deserialize(value).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("invalid request body: {e}"),
        )
    })
}

/// JSON has one number type: `3.0` is the integer 3 to JSON Schema (and to most clients), so
/// it is read as one.
fn integral_floats_as_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Parses an optional JSON body: empty means `T::default()`.
pub fn parse_or_default<T: DeserializeOwned + Default + 'static>(
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(bytes)
    }
}

/// JSON body extractor: `Content-Type: application/json` (or `+json`), then [`parse`].
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + 'static> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|m| {
                m.strip_prefix("application/")
                    .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let status = e.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "payload_too_large"
                } else {
                    "invalid_request"
                };
                ApiError::new(status, code, e.body_text())
            })?;
        parse(&bytes).map(ApiJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        name: String,
    }

    fn code(r: Result<Req, ApiError>) -> (u16, &'static str) {
        let e = r.expect_err("an error");
        (e.status().as_u16(), e.code())
    }

    #[test]
    fn syntax_is_400_values_are_422_depth_is_bounded() {
        assert!(parse::<Req>(br#"{"name": "a"}"#).is_ok());
        assert_eq!(code(parse(b"{not json")), (400, "invalid_json"));
        assert_eq!(code(parse(br#"{"name": "#)), (400, "invalid_json"));
        assert_eq!(code(parse(br#"{"nom": "#)), (400, "invalid_json"));
        assert_eq!(code(parse(br#"{"nom": "a"}"#)), (422, "invalid_request"));
        assert_eq!(code(parse(br#"{"name": 3}"#)), (422, "invalid_request"));
        assert_eq!(code(parse(b"[]")), (422, "invalid_request"));
        #[derive(Debug, Deserialize)]
        struct Count {
            n: u32,
        }
        assert_eq!(parse::<Count>(br#"{"n": 3.0}"#).map(|c| c.n).ok(), Some(3));
        assert!(parse::<Count>(br#"{"n": 3.5}"#).is_err());
        for deep in [
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000)),
        ] {
            assert_eq!(code(parse(deep.as_bytes())), (400, "invalid_json"));
        }
        // Brackets inside strings are not nesting.
        let s = format!(r#"{{"name": "{}"}}"#, "[{".repeat(1000));
        assert!(parse::<Req>(s.as_bytes()).is_ok());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse::<serde_json::Value>(ok.as_bytes()).is_ok());
    }
}
