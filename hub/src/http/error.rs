//! Every error reply the hub sends: an [`ApiError`] JSON body with a stable [`ErrorCode`] and
//! the HTTP status that code always maps to. Internal failures are logged here, once, and the
//! caller sees only that something went wrong on the hub's side.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tongbu_shared::protocol::{AgentState, ApiError, ErrorCode};

use crate::auth::AuthError;
use crate::enroll::EnrollError;
use crate::hub::AccessError;
use crate::ingest::IngestError;
use crate::policy::PolicyAdminError;
use crate::rotate::RotateError;
use crate::store::StoreError;

/// An error reply.
#[derive(Debug)]
pub struct AppError(pub ApiError);

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AppError {
        AppError(ApiError::new(code, message))
    }

    fn with_acked_seq(mut self, acked_seq: u64) -> AppError {
        self.0.error.acked_seq = Some(acked_seq);
        self
    }

    fn with_seq(mut self, seq: u64) -> AppError {
        self.0.error.seq = Some(seq);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.0.error.code
    }

    /// Logs an internal failure and hides it from the caller.
    fn internal(what: &dyn std::fmt::Display) -> AppError {
        tracing::error!(error = %what, "internal error");
        AppError::new(
            ErrorCode::Internal,
            "internal error in the hub; see its log",
        )
    }
}

/// The HTTP status of each error code.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedJson | ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::BodyTooLarge | ErrorCode::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unauthorized
        | ErrorCode::BadRequestSignature
        | ErrorCode::ClockSkew
        | ErrorCode::ReplayedRequest
        | ErrorCode::TokenUnknown
        | ErrorCode::TokenUsed
        | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::AgentQuarantined | ErrorCode::AgentRevoked => {
            StatusCode::FORBIDDEN
        }
        ErrorCode::UnknownAgent | ErrorCode::UnknownCounty | ErrorCode::NotFound => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::ChainGap
        | ErrorCode::ChainBroken
        | ErrorCode::Equivocation
        | ErrorCode::KeyInUse => StatusCode::CONFLICT,
        ErrorCode::BadSignature | ErrorCode::WrongAgent | ErrorCode::NotConsecutive => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ErrorCode::BadKeyRotation => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (status(self.code()), Json(self.0)).into_response()
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> AppError {
        if e.is_transient() {
            tracing::warn!(error = %e, "store unavailable");
            AppError::new(
                ErrorCode::Unavailable,
                "the hub cannot store data right now; retry later",
            )
        } else {
            AppError::internal(&e)
        }
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> AppError {
        match e {
            AuthError::BadRequestSignature(_) => {
                AppError::new(ErrorCode::BadRequestSignature, e.to_string())
            }
            AuthError::ClockSkew { skew_seconds } => {
                let mut err = AppError::new(ErrorCode::ClockSkew, e.to_string());
                err.0.error.skew_seconds = Some(skew_seconds);
                err
            }
            AuthError::Replayed => AppError::new(ErrorCode::ReplayedRequest, e.to_string()),
            AuthError::Busy => AppError::new(ErrorCode::RateLimited, e.to_string()),
            AuthError::Unauthorized => AppError::new(
                ErrorCode::Unauthorized,
                "send a valid API key as `Authorization: Bearer <key>`",
            ),
        }
    }
}

impl From<AccessError> for AppError {
    fn from(e: AccessError) -> AppError {
        match e {
            AccessError::Auth(e) => e.into(),
            AccessError::UnknownAgent(_) => AppError::new(ErrorCode::UnknownAgent, e.to_string()),
            AccessError::Store(e) => e.into(),
        }
    }
}

impl From<IngestError> for AppError {
    fn from(e: IngestError) -> AppError {
        let msg = e.to_string();
        match e {
            IngestError::BatchTooLarge { .. } => AppError::new(ErrorCode::BatchTooLarge, msg),
            IngestError::WrongAgent { seq, .. } => {
                AppError::new(ErrorCode::WrongAgent, msg).with_seq(seq)
            }
            IngestError::SeqOutOfRange { seq } => {
                AppError::new(ErrorCode::BadRequest, msg).with_seq(seq)
            }
            IngestError::NotConsecutive { found, .. } => {
                AppError::new(ErrorCode::NotConsecutive, msg).with_seq(found)
            }
            IngestError::BodyTooLarge { seq, .. } => {
                AppError::new(ErrorCode::BodyTooLarge, msg).with_seq(seq)
            }
            IngestError::BadSignature { seq } => {
                AppError::new(ErrorCode::BadSignature, msg).with_seq(seq)
            }
            IngestError::ChainGap { acked_seq, first } => AppError::new(ErrorCode::ChainGap, msg)
                .with_acked_seq(acked_seq)
                .with_seq(first),
            IngestError::Equivocation { seq } => {
                AppError::new(ErrorCode::Equivocation, msg).with_seq(seq)
            }
            IngestError::AgentQuarantined => AppError::new(ErrorCode::AgentQuarantined, msg),
            IngestError::AgentRevoked => AppError::new(ErrorCode::AgentRevoked, msg),
            IngestError::UnknownAgent => AppError::new(ErrorCode::UnknownAgent, msg),
            IngestError::Store(e) => e.into(),
            IngestError::Internal(_) => AppError::internal(&e),
        }
    }
}

impl From<EnrollError> for AppError {
    fn from(e: EnrollError) -> AppError {
        let msg = e.to_string();
        match e {
            EnrollError::TokenUnknown => AppError::new(ErrorCode::TokenUnknown, msg),
            EnrollError::TokenUsed => AppError::new(ErrorCode::TokenUsed, msg),
            EnrollError::TokenExpired => AppError::new(ErrorCode::TokenExpired, msg),
            EnrollError::BadProof => AppError::new(ErrorCode::BadSignature, msg),
            // The message would name the other agent: keep that to the hub's log.
            EnrollError::KeyInUse(ref other) => {
                tracing::warn!(agent = %other, "enrollment with a key already in use");
                AppError::new(
                    ErrorCode::KeyInUse,
                    "this public key is already enrolled; make a new key to enroll again",
                )
            }
            EnrollError::UnknownCounty(_) => AppError::new(ErrorCode::UnknownCounty, msg),
            EnrollError::NoFreeId(_) => AppError::internal(&e),
            EnrollError::Store(e) => e.into(),
        }
    }
}

impl From<PolicyAdminError> for AppError {
    fn from(e: PolicyAdminError) -> AppError {
        match e {
            PolicyAdminError::Refused(_) => AppError::new(ErrorCode::BadRequest, e.to_string()),
            PolicyAdminError::Store(e) => e.into(),
            PolicyAdminError::NoPolicy | PolicyAdminError::Sign(_) => AppError::internal(&e),
        }
    }
}

impl From<RotateError> for AppError {
    fn from(e: RotateError) -> AppError {
        let msg = e.to_string();
        match e {
            RotateError::BadProof | RotateError::SameKey | RotateError::SeqTooLow { .. } => {
                AppError::new(ErrorCode::BadKeyRotation, msg)
            }
            // The message would name the other agent: keep that to the hub's log.
            RotateError::KeyInUse(ref other) => {
                tracing::warn!(agent = %other, "key rotation to a key already in use");
                AppError::new(
                    ErrorCode::KeyInUse,
                    "this public key is already used by an agent; make a new key",
                )
            }
            RotateError::NotActive(_, AgentState::Revoked) => {
                AppError::new(ErrorCode::AgentRevoked, msg)
            }
            RotateError::NotActive(..) => AppError::new(ErrorCode::AgentQuarantined, msg),
            RotateError::UnknownAgent(_) => AppError::new(ErrorCode::UnknownAgent, msg),
            RotateError::KeyReplaced => AppError::new(ErrorCode::BadRequestSignature, msg),
            RotateError::Store(e) => e.into(),
        }
    }
}
