//! [`ApiError`]: an HTTP status plus a JSON body with a stable code.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use omnipaxos_runtime::{AppendError, ReadError};

use crate::api::{ErrorBody, ErrorCode, Header};

/// An error answer.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// The body (its code decides the status).
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { body: ErrorBody { code, message: message.into(), mod_revision: None, header: None } }
    }

    /// Adds the answering node's header.
    pub fn with_header(mut self, header: Header) -> Self {
        self.body.header = Some(header);
        self
    }

    /// A failed append: definite errors say that nothing was applied.
    pub fn from_append(error: &AppendError) -> Self {
        let code = match error {
            AppendError::NotLeaderReachable => ErrorCode::Unavailable,
            AppendError::Dropped => ErrorCode::Unavailable,
            AppendError::Indeterminate(_) => ErrorCode::UnknownOutcome,
            AppendError::ShuttingDown => ErrorCode::ShuttingDown,
            AppendError::Overloaded => ErrorCode::Overloaded,
            AppendError::Stopped => ErrorCode::Stopped,
            AppendError::Learner => ErrorCode::Learner,
        };
        let message = if code == ErrorCode::UnknownOutcome {
            format!("{error}; retry with the same client_id and seq to learn the outcome")
        } else {
            format!("{error}")
        };
        ApiError::new(code, message)
    }

    /// A failed read barrier: reads change nothing, so all of these may be retried.
    pub fn from_read(error: &ReadError) -> Self {
        let code = match error {
            ReadError::TimedOut | ReadError::LeaderChanged | ReadError::Reconfigured => {
                ErrorCode::Unavailable
            }
            ReadError::Overloaded => ErrorCode::Overloaded,
            ReadError::ShuttingDown => ErrorCode::ShuttingDown,
            ReadError::Stopped => ErrorCode::Stopped,
        };
        ApiError::new(code, format!("read not served: {error}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.body.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
