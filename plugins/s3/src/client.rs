//! The S3 client inside the component: `aws-sdk-s3` over the host's
//! `wasi:http` (aws-smithy-wasm), each call run to completion on wstd's
//! event loop.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation, SharedAsyncSleep,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_wasm::wasi::{WasiHttpClientBuilder, WasiSleep};
use wasftp_sdk::Error;

use crate::config::Config;

/// Longest message of ours a client sees (the host bounds it again).
const MAX_MESSAGE: usize = 400;

/// The secrets no message may carry, set once at `init`.
static SECRETS: OnceLock<[String; 2]> = OnceLock::new();

pub fn client(config: &Config) -> aws_sdk_s3::Client {
    let _ = SECRETS.set([config.access_key_id.clone(), config.secret_access_key.clone()]);
    let credentials = Credentials::new(&config.access_key_id, &config.secret_access_key, None, None, "wasftp-config");
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
        .read_timeout(Duration::from_secs(config.read_timeout_secs))
        .build();
    let s3 = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .endpoint_url(&config.endpoint)
        .force_path_style(config.path_style)
        .credentials_provider(credentials)
        .http_client(WasiHttpClientBuilder::new().build())
        .sleep_impl(SharedAsyncSleep::new(WasiSleep))
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
        // The host bounds every call with its own wall clock.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        // Checksums only where S3 requires them: not every S3 server (nor
        // every version of one) knows the newer checksum headers.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// Runs an SDK future to its end on the component's event loop (wstd, on
/// `wasi:io` pollables): the guest waits in the host, which does not count
/// as computing.
pub fn block_on<F: Future>(future: F) -> F::Output {
    wstd::runtime::block_on(future)
}

/// The contract's error for an S3 failure: 404 not-found, 403
/// permission-denied, 412 conflict; anything else io, with a bounded
/// message that never carries the credentials.
pub fn error<E, R>(op: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    match e.raw_response().map(HasStatus::http_status) {
        Some(404) => Error::NotFound,
        Some(403) => Error::PermissionDenied,
        Some(412) => Error::Conflict,
        status => {
            let detail = match e.as_service_error() {
                Some(service) => format!(
                    "{} {}",
                    service.code().unwrap_or("error"),
                    service.message().unwrap_or_default()
                ),
                None => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            };
            let status = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            Error::Io(scrub(&format!("{op}{status}: {detail}")))
        }
    }
}

/// Whether an error is S3 saying the thing is not there (404, `NoSuchKey`,
/// `NoSuchUpload`).
pub fn is_not_found<E, R>(e: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
    R: HasStatus,
{
    e.raw_response().map(HasStatus::http_status) == Some(404)
        || matches!(e.as_service_error().and_then(ProvideErrorMetadata::code), Some("NoSuchKey" | "NoSuchUpload" | "NotFound"))
}

/// The HTTP status of a raw response.
pub trait HasStatus {
    fn http_status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// `text` without the credentials, on one line, bounded.
pub fn scrub(text: &str) -> String {
    let mut text = text.replace(['\n', '\r'], " ");
    if let Some(secrets) = SECRETS.get() {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret.as_str(), "***");
        }
    }
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
