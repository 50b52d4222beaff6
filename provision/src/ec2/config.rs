//! How to reach an EC2 API: region, endpoint, profile or static credentials, attempts.

/// How to reach an EC2 API.
#[derive(Clone, Default)]
pub struct Ec2Config {
    /// Region (default: the standard chain's).
    pub region: Option<String>,
    /// Endpoint URL (moto, the local cloud); default: AWS's for the region.
    pub endpoint_url: Option<String>,
    /// Named profile.
    pub profile: Option<String>,
    /// Static credentials instead of the standard chain (the local cloud).
    pub credentials: Option<(String, String)>,
    /// Attempts per call, throttling retried with backoff by the SDK (default 5).
    pub max_attempts: Option<u32>,
}

impl std::fmt::Debug for Ec2Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Config")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("profile", &self.profile)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}
