//! A signing key in AWS KMS (an asymmetric `ECC_NIST_P256` key that the deployment template
//! creates): the private half never leaves KMS; a publish costs one `Sign`, and the public half
//! is read once per instance (`GetPublicKey`). The publish function's role may do exactly these
//! two things with exactly this key.

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use tokio::sync::OnceCell;

use super::{Signer, SigningError};
use crate::domain::signing::PublicKey;

/// A KMS key that signs.
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key_id: String,
    public: OnceCell<PublicKey>,
}

impl KmsSigner {
    /// Signs with `key_id` (an id, an ARN or an alias) through the SDK configuration `shared`,
    /// at `endpoint` when given (an emulator).
    pub fn new(shared: &aws_config::SdkConfig, key_id: &str, endpoint: Option<&str>) -> Self {
        let mut config = aws_sdk_kms::config::Builder::from(shared);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self {
            client: aws_sdk_kms::Client::from_conf(config.build()),
            key_id: key_id.to_string(),
            public: OnceCell::new(),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> SigningError {
    SigningError::Unavailable(format!("KMS: {e}"))
}

#[async_trait]
impl Signer for KmsSigner {
    async fn public_key(&self) -> Result<PublicKey, SigningError> {
        self.public
            .get_or_try_init(|| async {
                let answer = self
                    .client
                    .get_public_key()
                    .key_id(&self.key_id)
                    .send()
                    .await
                    .map_err(|e| unavailable(aws_sdk_kms::error::DisplayErrorContext(e)))?;
                let der = answer
                    .public_key()
                    .ok_or_else(|| unavailable("GetPublicKey returned no key"))?;
                let key = PublicKey::p256(der.as_ref(), chrono::Utc::now());
                // Anything but a P-256 SubjectPublicKeyInfo would sign what npm cannot check.
                if crate::domain::signing::p256_point(der.as_ref()).is_none() {
                    return Err(unavailable(format!(
                        "{} is not an ECC_NIST_P256 key",
                        self.key_id
                    )));
                }
                Ok(key)
            })
            .await
            .cloned()
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let answer = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_kms::error::DisplayErrorContext(e)))?;
        answer
            .signature()
            .map(|sig| sig.as_ref().to_vec())
            .ok_or_else(|| unavailable("Sign returned no signature"))
    }
}
