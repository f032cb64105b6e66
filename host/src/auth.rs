//! Bearer tokens: the [`Bearer`] extractor reads one from a request, and
//! [`Bearer::is`] compares it with a configured secret in constant time. `/health`
//! details and `POST /v1/ai-usage` both authorize with it.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

/// The token of a request's `Authorization: Bearer <token>` header, if it has one.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<String>);

impl Bearer {
    /// Whether the request presented `expected` (compared in constant time); never
    /// when there is no expected token.
    pub fn is(&self, expected: Option<&str>) -> bool {
        match (&self.0, expected) {
            (Some(presented), Some(expected)) => {
                constant_time_eq(presented.as_bytes(), expected.as_bytes())
            }
            _ => false,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Bearer, Infallible> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        Ok(Bearer(token))
    }
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokex"));
        assert!(!constant_time_eq(b"token", b"token2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
