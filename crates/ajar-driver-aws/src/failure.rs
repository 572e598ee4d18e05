//! AWS errors as sentences, split into transient (retried by the
//! reconciler) and permanent (a person must act).

use ajar_enforce::DriverError;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// `err` from the call that was to `what` ("add the rule for grant r…").
pub(crate) fn describe<E>(what: &str, err: SdkError<E, HttpResponse>) -> DriverError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => {
            DriverError::transient(format!("AWS did not answer in time when ajar tried to {what}; ajar retries"))
        }
        SdkError::DispatchFailure(_) => DriverError::transient(format!(
            "cannot reach AWS to {what} ({}); ajar retries until it answers",
            DisplayErrorContext(&err)
        )),
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown");
            let message = service.err().message().unwrap_or("no message");
            let status = service.raw().status().as_u16();
            match code {
                "UnauthorizedOperation" | "AuthFailure" | "InvalidClientTokenId" | "SignatureDoesNotMatch"
                | "OptInRequired" | "Blocked" => DriverError::permanent(format!(
                    "AWS refused to let ajar {what}: {code}: {message}. Give ajar's credentials the permissions listed in docs/drivers/aws.md"
                )),
                "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "InsufficientInstanceCapacity" => {
                    DriverError::transient(format!(
                        "AWS is throttling or short of capacity ({code}: {message}) and ajar could not {what} after retrying; it tries again at the next reconcile"
                    ))
                }
                _ if status >= 500 || code.starts_with("Internal") || code.contains("Unavailable") => {
                    DriverError::transient(format!(
                        "AWS failed ({code}: {message}) when ajar tried to {what}, even after retrying; it tries again at the next reconcile"
                    ))
                }
                _ if code.ends_with("NotFound") || code.ends_with(".Malformed") => DriverError::permanent(format!(
                    "AWS cannot {what}: {code}: {message}. Check the ids in this target's aws table"
                )),
                _ => DriverError::permanent(format!("AWS refused to {what}: {code}: {message}")),
            }
        }
        _ => DriverError::transient(format!("AWS call to {what} failed: {}", DisplayErrorContext(&err))),
    }
}
