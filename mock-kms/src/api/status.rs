//! The clouds' error vocabularies, for both sides (the mock's dialects answer with them, the
//! [`super::Client`] reads them back): Google's canonical status codes (`google.rpc.Code`) with
//! the HTTP statuses REST frontends answer them with — the vocabulary of Cloud KMS and of JD
//! Cloud's OpenAPI gateway (`error.status`) — and Alibaba Cloud's error codes ([`ALIYUN_CODES`]).

use crate::api::ErrorCode;

/// A `google.rpc.Code` with its HTTP status, as Google's REST frontends answer it;
/// [`Status::ALL`] and [`Status::name`] (`NOT_FOUND`) follow from the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
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
    /// Every status.
    pub const ALL: &'static [Status] = <Self as strum::VariantArray>::VARIANTS;

    /// The status a native error code travels with (so a new [`crate::error::KmsError`] variant
    /// maps without an edit in the dialects).
    pub fn of(code: ErrorCode) -> Self {
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

    /// The status named `name` (`NOT_FOUND`), if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// The native code a client reads this status as: the one [`Status::of`] maps here, or for a
    /// status several codes share, the one that says what to do (`Unauthenticated`: check the
    /// credential, as a wrong signature; `Unavailable`: retry, as a service that cannot serve).
    pub fn code(self) -> ErrorCode {
        match self {
            Self::InvalidArgument | Self::Unimplemented => ErrorCode::InvalidParameter,
            Self::FailedPrecondition => ErrorCode::KeyNotEnabled,
            Self::Unauthenticated => ErrorCode::SignatureDoesNotMatch,
            Self::PermissionDenied => ErrorCode::Forbidden,
            Self::NotFound => ErrorCode::KeyNotFound,
            Self::AlreadyExists => ErrorCode::KeyAlreadyExists,
            Self::ResourceExhausted => ErrorCode::Throttling,
            Self::Internal => ErrorCode::InternalFailure,
            Self::Unavailable => ErrorCode::ServiceUnavailable,
        }
    }

    /// The HTTP status it travels with.
    pub fn http(self) -> u16 {
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
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The legacy `errors[].reason` Google's v1 REST errors still carry (the Go client prints it).
    pub fn reason(self) -> &'static str {
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

/// Alibaba Cloud KMS's error codes (`Code`) with their HTTP statuses, for each native code: the
/// common ones (`InvalidAccessKeyId.NotFound`, `SignatureDoesNotMatch`, `Throttling`, …) as
/// Alibaba's gateway documentation lists them, `Forbidden.KeyNotFound` and `Rejected.*` KMS's own.
/// A key pending deletion is `Rejected.PendingDeletion` ([`aliyun_code`] reads both back).
pub const ALIYUN_CODES: [(ErrorCode, u16, &str); 14] = [
    (ErrorCode::InvalidParameter, 400, "InvalidParameter"),
    (ErrorCode::InvalidCiphertext, 400, "Rejected.InvalidCiphertext"),
    (ErrorCode::InvalidAccessKeyId, 404, "InvalidAccessKeyId.NotFound"),
    (ErrorCode::SignatureDoesNotMatch, 400, "SignatureDoesNotMatch"),
    (ErrorCode::RequestTimeTooSkewed, 400, "InvalidTimeStamp.Expired"),
    (ErrorCode::RequestReplayed, 400, "SignatureNonceUsed"),
    (ErrorCode::Forbidden, 403, "Forbidden.RAM"),
    (ErrorCode::KeyNotFound, 404, "Forbidden.KeyNotFound"),
    (ErrorCode::KeyAlreadyExists, 409, "Rejected.KeyAlreadyExists"),
    (ErrorCode::KeyNotEnabled, 400, "Rejected.Disabled"),
    (ErrorCode::Throttling, 400, "Throttling"),
    (ErrorCode::InternalFailure, 500, "InternalFailure"),
    (ErrorCode::Sealed, 503, "ServiceUnavailableTemporary"),
    (ErrorCode::ServiceUnavailable, 503, "ServiceUnavailableTemporary"),
];

/// The Alibaba Cloud code a key pending deletion is refused with.
pub const ALIYUN_PENDING_DELETION: &str = "Rejected.PendingDeletion";

/// The secrets manager's own Alibaba Cloud codes with their HTTP statuses and the native code each
/// reads back as, from the error tables of the secrets operations in Alibaba's KMS API reference
/// (CreateSecret's lists all five): no such secret, it exists, it is scheduled for deletion, the
/// caller may not, throttled. The dialect answers the last two for secrets operations only (key
/// operations keep [`ALIYUN_CODES`]' `Forbidden.RAM` and `Throttling`).
pub const ALIYUN_SECRET_CODES: [(ErrorCode, u16, &str); 5] = [
    (ErrorCode::KeyNotFound, 404, "Forbidden.ResourceNotFound"),
    (ErrorCode::KeyAlreadyExists, 409, "Rejected.ResourceExist"),
    (ErrorCode::KeyNotFound, 409, "Rejected.ResourceInDeleteWindow"),
    (ErrorCode::Forbidden, 403, "Forbidden.NoPermission"),
    (ErrorCode::Throttling, 429, "Rejected.Throttling"),
];

/// The HTTP status and code of `kind` in [`ALIYUN_SECRET_CODES`] (a name of that table, so a typo
/// is a test failure, not a new code on the wire).
pub fn aliyun_secret_error(kind: &str) -> (u16, &'static str) {
    ALIYUN_SECRET_CODES.iter().find(|(_, _, k)| *k == kind).map_or((500, "InternalFailure"), |(_, status, k)| (*status, *k))
}

/// The HTTP status and Alibaba Cloud code of a native error `code`.
pub fn aliyun_error(code: ErrorCode) -> (u16, &'static str) {
    ALIYUN_CODES.iter().find(|(c, _, _)| *c == code).map_or((500, "InternalFailure"), |(_, status, kind)| (*status, *kind))
}

/// The native code of an Alibaba Cloud error answer (`Code` and HTTP status): its entry in
/// [`ALIYUN_CODES`], else by the status (a 5xx can be retried; a 4xx is the request's fault).
pub fn aliyun_code(kind: &str, status: u16) -> ErrorCode {
    if kind == ALIYUN_PENDING_DELETION {
        return ErrorCode::KeyNotEnabled;
    }
    match ALIYUN_CODES.iter().chain(&ALIYUN_SECRET_CODES).find(|(_, _, k)| *k == kind) {
        Some((code, _, _)) => *code,
        None if status >= 500 => ErrorCode::ServiceUnavailable,
        None if status == 404 => ErrorCode::KeyNotFound,
        None => ErrorCode::InvalidParameter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_named_as_google_rpc_code_names_them() {
        let names: Vec<&str> = Status::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "INVALID_ARGUMENT",
                "FAILED_PRECONDITION",
                "UNAUTHENTICATED",
                "PERMISSION_DENIED",
                "NOT_FOUND",
                "ALREADY_EXISTS",
                "RESOURCE_EXHAUSTED",
                "INTERNAL",
                "UNIMPLEMENTED",
                "UNAVAILABLE"
            ]
        );
        assert!(Status::ALL.iter().all(|s| Status::from_name(s.name()) == Some(*s)));
    }

    #[test]
    fn the_secrets_managers_codes_read_back_as_what_they_mean() {
        for (code, status, kind) in ALIYUN_SECRET_CODES {
            assert_eq!(aliyun_code(kind, status), code, "{kind}");
            assert_eq!(aliyun_secret_error(kind), (status, kind));
        }
        assert_eq!(aliyun_secret_error("Rejected.Typo"), (500, "InternalFailure"));
    }
}
