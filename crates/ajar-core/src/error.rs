//! What a use case can answer instead of a result.

use ajar_domain::Rejected;
use ajar_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The domain said no; the message says why and what would work.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// Nothing the caller may see has this id. Deliberately the same answer
    /// for "does not exist" and "not yours".
    #[error("there is no request {id} that you may see")]
    NotFound { id: String },
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The input is malformed; the message says what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// The input is well-formed but cannot be acted on.
    #[error("{0}")]
    Unprocessable(&'static str),
    #[error("too many failed logins for this user or from this address; try again in {retry_after_secs} seconds")]
    RateLimited { retry_after_secs: u64 },
    /// Too many password checks are running at once.
    #[error("the server is checking many sign-ins at once; try again in {retry_after_secs} second(s)")]
    Busy { retry_after_secs: u64 },
    #[error("{0}")]
    Forbidden(&'static str),
    /// Someone else changed the request at the same moment.
    #[error("the request changed while your command ran (someone else acted on it); look at it again and retry")]
    Conflict,
    /// The database cannot be reached; nothing changed. Retry shortly.
    #[error("ajar cannot reach its database right now, so nothing was changed; try again in a moment")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => CoreError::Conflict,
            StoreError::Unavailable(cause) => CoreError::Unavailable(cause),
            other => CoreError::Internal(other.to_string()),
        }
    }
}
