//! A router's answer as a `Result`: success, or the refusal it carries.

use crate::{ErrorCode, Response};

/// A router's refusal: the code it sent and its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str_name())]
pub struct RouterRefusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Response {
    /// `Ok(self)` when the router answered without an error code, else the
    /// refusal. An unknown code (a newer router) counts as internal.
    pub fn into_result(self) -> Result<Response, RouterRefusal> {
        if self.error == ErrorCode::Unspecified as i32 {
            return Ok(self);
        }
        Err(RouterRefusal {
            code: ErrorCode::try_from(self.error).unwrap_or(ErrorCode::Internal),
            message: self.error_message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_without_a_code_is_ok() {
        let ok = Response {
            delivered: 3,
            ..Default::default()
        };
        assert_eq!(ok.clone().into_result(), Ok(ok));
    }

    #[test]
    fn a_code_is_a_refusal_with_its_message() {
        let refused = Response {
            error: ErrorCode::Forbidden as i32,
            error_message: "not yours".into(),
            ..Default::default()
        };
        let refusal = refused.into_result().unwrap_err();
        assert_eq!(refusal.code, ErrorCode::Forbidden);
        assert_eq!(refusal.message, "not yours");
        assert_eq!(refusal.to_string(), "ERROR_CODE_FORBIDDEN: not yours");
    }

    #[test]
    fn an_unknown_code_counts_as_internal() {
        let newer = Response {
            error: 99,
            ..Default::default()
        };
        assert_eq!(newer.into_result().unwrap_err().code, ErrorCode::Internal);
    }
}
