//! One SDK client per (region, endpoint), built from the standard
//! credential and region chain.

use std::collections::BTreeMap;
use std::time::Duration;

use ajar_domain::AwsApi;
use ajar_enforce::DriverError;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::Client;
use tokio::sync::Mutex;

/// Attempts per call, the first included. Throttling, 5xx answers and
/// connection failures are retried with exponential backoff and full
/// jitter (the SDK's standard retry mode), at most this often.
const MAX_ATTEMPTS: u32 = 4;
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// One attempt, and one call with all its retries, may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(40);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Default)]
pub(crate) struct Clients {
    cache: Mutex<BTreeMap<AwsApi, Client>>,
}

impl Clients {
    /// The client for `api`, built once. Fails when no region is known.
    pub async fn get(&self, api: &AwsApi) -> Result<Client, DriverError> {
        let mut cache = self.cache.lock().await;
        if let Some(client) = cache.get(api) {
            return Ok(client.clone());
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(INITIAL_BACKOFF)
                    .with_max_backoff(MAX_BACKOFF),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            );
        if let Some(region) = &api.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &api.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(DriverError::permanent(
                "no AWS region is set for this target: add region = \"us-east-1\" (or your region) to its aws table, or set AWS_REGION",
            ));
        }
        let client = Client::new(&config);
        cache.insert(api.clone(), client.clone());
        Ok(client)
    }
}
