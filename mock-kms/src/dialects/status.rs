//! Google's canonical status codes (`google.rpc.Code`) with the HTTP statuses REST frontends
//! answer them with: the error vocabulary of Cloud KMS and of JD Cloud's OpenAPI gateway
//! (`error.status`), so both dialects name a failure the same way.

use crate::api::ErrorCode;

/// A `google.rpc.Code` with its HTTP status, as Google's REST frontends answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// 400: a field is missing or malformed.
    InvalidArgument,
    /// 400: the resource is not in a state for this (a disabled key).
    FailedPrecondition,
    /// 401: no valid credential or signature.
    Unauthenticated,
    /// 403: the caller may not do this.
    PermissionDenied,
    /// 404: no such resource.
    NotFound,
    /// 409: it exists already.
    AlreadyExists,
    /// 429: over a quota (throttled).
    ResourceExhausted,
    /// 500: an internal failure.
    Internal,
    /// 501: no such operation.
    Unimplemented,
    /// 503: the service cannot serve now (sealed, starting).
    Unavailable,
}

impl Status {
    /// The status a native error code travels with (so a new [`crate::error::KmsError`] variant
    /// maps without an edit in the dialects).
    pub(crate) fn of(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidParameter | ErrorCode::InvalidCiphertext => Self::InvalidArgument,
            ErrorCode::InvalidAccessKeyId
            | ErrorCode::SignatureDoesNotMatch
            | ErrorCode::RequestTimeTooSkewed
            | ErrorCode::RequestReplayed => Self::Unauthenticated,
            ErrorCode::Forbidden => Self::PermissionDenied,
            ErrorCode::KeyNotFound => Self::NotFound,
            ErrorCode::KeyAlreadyExists => Self::AlreadyExists,
            ErrorCode::KeyNotEnabled => Self::FailedPrecondition,
            ErrorCode::Throttling => Self::ResourceExhausted,
            ErrorCode::InternalFailure => Self::Internal,
            ErrorCode::Sealed | ErrorCode::ServiceUnavailable => Self::Unavailable,
        }
    }

    /// The HTTP status it travels with.
    pub(crate) fn http(self) -> u16 {
        match self {
            Self::InvalidArgument | Self::FailedPrecondition => 400,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::AlreadyExists => 409,
            Self::ResourceExhausted => 429,
            Self::Internal => 500,
            Self::Unimplemented => 501,
            Self::Unavailable => 503,
        }
    }

    /// Its name, e.g. `NOT_FOUND`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::Internal => "INTERNAL",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Unavailable => "UNAVAILABLE",
        }
    }

    /// The legacy `errors[].reason` Google's v1 REST errors still carry (the Go client prints it).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::InvalidArgument => "badRequest",
            Self::FailedPrecondition => "failedPrecondition",
            Self::Unauthenticated => "unauthorized",
            Self::PermissionDenied => "forbidden",
            Self::NotFound => "notFound",
            Self::AlreadyExists => "conflict",
            Self::ResourceExhausted => "rateLimitExceeded",
            Self::Internal => "backendError",
            Self::Unimplemented => "notImplemented",
            Self::Unavailable => "backendError",
        }
    }
}
