//! SDK bootstrap: the HTTP client (TLS roots), timeouts, retries and the SDK configuration, for
//! the local server (the SDK's default chain) and for the functions (environment alone).

use std::time::Duration;

use super::AwsStorage;

/// The roots every AWS service endpoint chains to (Amazon Trust Services), PEM.
const AMAZON_TRUST_SERVICES_ROOTS: &[u8] = include_bytes!("amazon_trust_services.pem");

impl AwsStorage {
    /// The HTTP client for both services: rustls with ring, trusting the system's roots (the
    /// local server may run behind a proxy with its own CA).
    pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
        use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https()
    }

    /// The HTTP client for the functions: rustls with ring, trusting only the Amazon Trust
    /// Services roots, compiled in. Reading and parsing the system's trust store (~150
    /// certificates) cost ~5 ms of every cold start on the benchmark machine, for the five roots
    /// DynamoDB and S3 chain to.
    pub(crate) fn function_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
        use aws_smithy_http_client::tls::{
            self, TlsContext, TrustStore, rustls_provider::CryptoMode,
        };
        let trust = TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS);
        let builder = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
        match TlsContext::builder().with_trust_store(trust).build() {
            Ok(context) => builder.tls_context(context).build_https(),
            // Not reachable with rustls (the builder fails only for other TLS providers); the
            // system's roots are a safe fallback.
            Err(_) => builder.build_https(),
        }
    }

    fn timeouts() -> aws_config::timeout::TimeoutConfig {
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(25))
            .build()
    }

    fn retries() -> aws_config::retry::RetryConfig {
        aws_config::retry::RetryConfig::standard().with_max_attempts(3)
    }

    /// SDK configuration by the SDK's default chain: environment, profile files, web identity,
    /// container and instance credentials. For the local server, wherever it runs.
    pub(crate) async fn default_sdk_config() -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(Self::http_client())
            .timeout_config(Self::timeouts())
            .retry_config(Self::retries())
            .load()
            .await
    }

    /// SDK configuration from environment variables alone (`AWS_REGION`, the credentials Lambda
    /// puts there for the function's role, `AWS_ENDPOINT_URL`). The functions use this: none of
    /// the default chain's providers (profiles, IMDS, STS) is linked into them, which keeps them
    /// smaller and quicker to start, and nothing is probed over the network at start-up.
    pub(crate) fn environment_sdk_config() -> aws_config::SdkConfig {
        use aws_config::environment::EnvironmentVariableCredentialsProvider;
        use aws_sdk_dynamodb::config::{SharedAsyncSleep, SharedCredentialsProvider};
        let mut builder = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(SharedCredentialsProvider::new(
                EnvironmentVariableCredentialsProvider::new(),
            ))
            .http_client(Self::function_http_client())
            .sleep_impl(SharedAsyncSleep::new(
                aws_smithy_async::rt::sleep::TokioSleep::new(),
            ))
            .time_source(aws_smithy_async::time::SharedTimeSource::default())
            .timeout_config(Self::timeouts())
            .retry_config(Self::retries());
        let env = crate::config::Env::process();
        if let Some(region) = env
            .text("AWS_REGION")
            .or_else(|| env.text("AWS_DEFAULT_REGION"))
        {
            builder = builder.region(aws_config::Region::new(region));
        }
        if let Some(url) = env.text("AWS_ENDPOINT_URL") {
            builder = builder.endpoint_url(url);
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;

    #[test]
    fn compiled_in_roots_are_the_amazon_trust_services_ones_and_parse() {
        // Read the way the SDK's rustls client reads them (it panics on a bad PEM).
        let fingerprints: Vec<String> =
            CertificateDer::pem_slice_iter(super::AMAZON_TRUST_SERVICES_ROOTS)
                .map(|der| hex::encode(sha2::Sha256::digest(der.unwrap())))
                .collect();
        // Published at https://www.amazontrust.com/repository/.
        assert_eq!(
            fingerprints,
            [
                "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e", // Amazon Root CA 1
                "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4", // Amazon Root CA 2
                "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4", // Amazon Root CA 3
                "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092", // Amazon Root CA 4
                "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5", // Starfield Services Root G2
            ]
        );
    }
}
