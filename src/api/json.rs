//! JSON in and out for the web API: request bodies read field by field, so every mistake names
//! its field, and answers with the headers every API response carries.
//!
//! Bodies are parsed into a [`serde_json::Value`] first and then taken apart with [`Object`]
//! rather than derived straight into a struct: serde's derived errors name the line and column of
//! a wrong type but not the field, and a shop's developer reading `{"error": …, "field": "days"}`
//! should not have to count columns.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ApiError;
use crate::body::{self, Body};

/// A JSON object from a request body whose fields are taken one by one.
#[derive(Debug)]
pub struct Object {
    map: Map<String, Value>,
}

impl Object {
    /// Parses `bytes` as a JSON object whose fields are all among `allowed`. An empty body is an
    /// empty object.
    pub fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Object, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Object { map: Map::new() });
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::invalid("body", format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::invalid("body", "expected a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::UnknownField(unknown.clone()));
        }
        Ok(Object { map })
    }

    /// The field as `T`, `None` when absent or `null`; `expected` describes `T` for the error.
    pub fn take<T: DeserializeOwned>(
        &mut self,
        field: &'static str,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|_| ApiError::invalid(field, format!("expected {expected}"))),
        }
    }

    /// A string field.
    pub fn string(&mut self, field: &'static str) -> Result<Option<String>, ApiError> {
        self.take(field, "a string")
    }

    /// A string field that must be there.
    pub fn required_string(&mut self, field: &'static str) -> Result<String, ApiError> {
        self.string(field)?
            .ok_or_else(|| ApiError::invalid(field, format!("`{field}` is required")))
    }

    /// A boolean field.
    pub fn bool(&mut self, field: &'static str) -> Result<Option<bool>, ApiError> {
        self.take(field, "true or false")
    }
}

/// A JSON answer that is never cached.
pub fn respond<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut text = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    text.push(b'\n');
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `{"error": "...", "field": "..."}` with the error's status, plus `WWW-Authenticate` on 401 and
/// `Allow` on 405. A store failure is logged here and answered without its detail.
pub fn error(e: &ApiError) -> Response<Body> {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<&'a str>,
    }
    if let ApiError::Store(inner) = e {
        tracing::error!(error = %inner, "API operation failed");
    }
    let mut r = respond(
        e.status(),
        &ErrorBody {
            error: e.public_message(),
            field: e.field(),
        },
    );
    match e {
        ApiError::Unauthorized(_) => {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pagegate\""),
            );
        }
        ApiError::Store(crate::store::StoreError::Unavailable(_)) => {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(crate::ui::RETRY_AFTER_SECONDS),
            );
        }
        ApiError::MethodNotAllowed { allow } => {
            if let Ok(v) = HeaderValue::from_str(allow) {
                r.headers_mut().insert(header::ALLOW, v);
            }
        }
        _ => {}
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        e.field().unwrap_or("-").to_owned()
    }

    #[test]
    fn errors_name_the_field() {
        let allowed = ["page", "days", "notify"];
        let unknown = Object::parse(br#"{"page": "x", "dayz": 3}"#, &allowed).expect_err("dayz");
        assert!(matches!(unknown, ApiError::UnknownField(ref f) if f == "dayz"));
        assert_eq!(
            field_of(Object::parse(b"{", &allowed).expect_err("syntax")),
            "body"
        );
        assert_eq!(
            field_of(Object::parse(b"[1]", &allowed).expect_err("array")),
            "body"
        );
        let mut o = Object::parse(br#"{"days": "30", "notify": 1}"#, &allowed).expect("object");
        assert_eq!(
            field_of(o.take::<u32>("days", "a number").expect_err("string")),
            "days"
        );
        assert_eq!(field_of(o.bool("notify").expect_err("number")), "notify");
        assert_eq!(
            field_of(o.required_string("page").expect_err("missing")),
            "page"
        );
        let mut empty = Object::parse(b" \n", &allowed).expect("empty body");
        assert_eq!(empty.string("page").expect("absent"), None);
        let mut nulls = Object::parse(br#"{"page": null}"#, &allowed).expect("null");
        assert_eq!(nulls.string("page").expect("null is absent"), None);
    }
}
