//! The EC2 backend: aws-sdk-ec2 with aws-config's standard chain (profiles, regions,
//! `AWS_ENDPOINT_URL` or an explicit endpoint). The local cloud is reached through this same
//! backend with its endpoint and static credentials, so both clouds share one client.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceMetadataTagsState, InstanceType, ResourceType,
    ShutdownBehavior, Tag, TagSpecification,
};
use base64::Engine;

use crate::cloud::{Cloud, CloudError, Image, Instance, LaunchSpec, StateChange, Tags};

/// An EC2 API client.
#[derive(Clone)]
pub struct Ec2Cloud {
    client: Client,
    endpoint: String,
}

impl Ec2Cloud {
    /// Builds a client (reads profiles and environment; no network call).
    pub async fn connect(cfg: &Ec2Config) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(
            RetryConfig::standard()
                .with_max_attempts(cfg.max_attempts.unwrap_or(5))
                .with_initial_backoff(Duration::from_millis(200)),
        );
        if let Some(r) = &cfg.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(u) = &cfg.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        if let Some((id, secret)) = &cfg.credentials {
            loader =
                loader.credentials_provider(Credentials::new(id, secret, None, None, "lobster"));
        }
        let conf = loader.load().await;
        let endpoint = cfg
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .unwrap_or_else(|| {
                format!(
                    "ec2.{}.amazonaws.com",
                    conf.region().map_or("?", |r| r.as_ref())
                )
            });
        Ec2Cloud {
            client: Client::new(&conf),
            endpoint,
        }
    }

    /// Maps an SDK error to one typed, one-line [`CloudError`]: missing credentials are
    /// `Unauthorized` (`NoCredentials`) with the ways to provide them; an endpoint that does
    /// not answer is `Unreachable` with its innermost cause; anything with an EC2 code keeps it.
    fn err<E, R>(&self, e: SdkError<E, R>) -> CloudError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + 'static,
    {
        if let Some(code) = e.code() {
            return CloudError::from_code(code, e.message().unwrap_or(""));
        }
        if convert::about_credentials(&e) {
            return CloudError::Unauthorized {
                code: "NoCredentials".into(),
                message: "no AWS credentials were found: name a profile (AWS_PROFILE, or `profile:` in config.yaml) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
            };
        }
        match &e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => CloudError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: convert::innermost(&e),
            },
            _ => CloudError::Other {
                code: "Unknown".into(),
                message: convert::innermost(&e),
            },
        }
    }
}

mod config;
mod convert;

pub use config::Ec2Config;

use convert::{change, image, instance, sdk_tags, tag_filters};

#[async_trait]
impl Cloud for Ec2Cloud {
    async fn find_images(&self, tags: &Tags) -> Result<Vec<Image>, CloudError> {
        let out = self
            .client
            .describe_images()
            .owners("self")
            .set_filters(Some({
                let mut f = tag_filters(tags);
                f.push(Filter::builder().name("state").values("available").build());
                f
            }))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(out.images().iter().map(image).collect())
    }

    async fn own_images(&self) -> Result<Vec<Image>, CloudError> {
        let out = self
            .client
            .describe_images()
            .owners("self")
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(out.images().iter().map(image).collect())
    }

    async fn instances(&self, tags: &Tags) -> Result<Vec<Instance>, CloudError> {
        let mut filters = tag_filters(tags);
        filters.push(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .values("stopping")
                .values("stopped")
                .values("shutting-down")
                .build(),
        );
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| self.err(e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().map(instance));
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe(&self, ids: &[String]) -> Result<Vec<Instance>, CloudError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let page = self
            .client
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(page
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().map(instance))
            .collect())
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Vec<Instance>, CloudError> {
        let tags = sdk_tags(&spec.tags);
        let spec_for = |t: ResourceType| {
            TagSpecification::builder()
                .resource_type(t)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let mut req = self
            .client
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(spec.count as i32)
            .client_token(&spec.client_token)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&spec.user_data))
            .tag_specifications(spec_for(ResourceType::Instance))
            .tag_specifications(spec_for(ResourceType::Volume))
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    // Slaves read `lobster:master` from their tags to find a moved master.
                    .instance_metadata_tags(InstanceMetadataTagsState::Enabled)
                    .build(),
            )
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
            .set_subnet_id(spec.subnet_id.clone())
            .set_key_name(spec.key_name.clone());
        if !spec.security_group_ids.is_empty() {
            req = req.set_security_group_ids(Some(spec.security_group_ids.clone()));
        }
        if let Some(p) = &spec.iam_instance_profile {
            req = req
                .iam_instance_profile(IamInstanceProfileSpecification::builder().name(p).build());
        }
        let out = req.send().await.map_err(|e| self.err(e))?;
        Ok(out.instances().iter().map(instance).collect())
    }

    async fn start(&self, ids: &[String]) -> Result<Vec<StateChange>, CloudError> {
        let out = self
            .client
            .start_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(out.starting_instances().iter().map(change).collect())
    }

    async fn stop(&self, ids: &[String], dry_run: bool) -> Result<Vec<StateChange>, CloudError> {
        let r = self
            .client
            .stop_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .dry_run(dry_run)
            .send()
            .await;
        match r {
            Ok(out) => Ok(out.stopping_instances().iter().map(change).collect()),
            // A dry run that would have succeeded answers with this "error".
            Err(e) if dry_run && e.code() == Some("DryRunOperation") => Ok(Vec::new()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn terminate(&self, ids: &[String]) -> Result<Vec<StateChange>, CloudError> {
        let out = self
            .client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(out.terminating_instances().iter().map(change).collect())
    }

    async fn tag(&self, ids: &[String], tags: &Tags) -> Result<(), CloudError> {
        self.client
            .create_tags()
            .set_resources(Some(ids.to_vec()))
            .set_tags(Some(sdk_tags(tags)))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn untag(&self, ids: &[String], keys: &[String]) -> Result<(), CloudError> {
        self.client
            .delete_tags()
            .set_resources(Some(ids.to_vec()))
            .set_tags(Some(
                keys.iter().map(|k| Tag::builder().key(k).build()).collect(),
            ))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn set_user_data(&self, id: &str, user_data: &str) -> Result<(), CloudError> {
        // EC2 wants the attribute's value base64-encoded, and the SDK base64-encodes the blob
        // once more on the wire (moto checks exactly this).
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_data);
        self.client
            .modify_instance_attribute()
            .instance_id(id)
            .user_data(
                aws_sdk_ec2::types::BlobAttributeValue::builder()
                    .value(aws_sdk_ec2::primitives::Blob::new(encoded.into_bytes()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn set_instance_type(&self, id: &str, instance_type: &str) -> Result<(), CloudError> {
        self.client
            .modify_instance_attribute()
            .instance_id(id)
            .instance_type(
                aws_sdk_ec2::types::AttributeValue::builder()
                    .value(instance_type)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn register_image(
        &self,
        name: &str,
        location: &str,
        tags: &Tags,
    ) -> Result<String, CloudError> {
        let out = self
            .client
            .register_image()
            .name(name)
            .image_location(location)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .set_tags(Some(sdk_tags(tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err(e))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| CloudError::Other {
                code: "NoImageId".into(),
                message: "RegisterImage returned no image id".into(),
            })
    }

    async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        tags: &Tags,
    ) -> Result<String, CloudError> {
        let out = self
            .client
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .set_tags(Some(sdk_tags(tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err(e))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| CloudError::Other {
                code: "NoImageId".into(),
                message: "CreateImage returned no image id".into(),
            })
    }

    async fn vcpus(&self, instance_type: &str) -> Result<u32, CloudError> {
        let out = self
            .client
            .describe_instance_types()
            .instance_types(InstanceType::from(instance_type))
            .send()
            .await
            .map_err(|e| self.err(e))?;
        out.instance_types()
            .iter()
            .find(|t| {
                t.instance_type()
                    .is_some_and(|n| n.as_str() == instance_type)
            })
            .and_then(|t| t.v_cpu_info()?.default_v_cpus())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| CloudError::NotFound {
                code: "InvalidInstanceType".into(),
                message: format!("no vCPU count for instance type {instance_type}"),
            })
    }

    async fn deregister_image(&self, id: &str) -> Result<(), CloudError> {
        self.client
            .deregister_image()
            .image_id(id)
            .send()
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
