//! `lobster image build`: the template image for the local cloud (`--local`) or EC2.

use super::ExitStatus;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::fleet::Common;
use super::{Failure, parse_duration};
use crate::fleet::config::{self, CloudKind, Overrides};
use crate::fleet::{connect, image};
use crate::home::Home;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build and tag a template image from the slave binary and the recipe (fleet/image/).
    #[command(after_help = "\
Examples:
  lobster image build --local
  lobster image build --cloud aws --region eu-west-1 --base-ami ami-0123456789abcdef0 \\
      --binary-url https://example.com/lobster-slave --instance-type c6i.large")]
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub common: Common,
    /// Build for the local cloud (same as --cloud local).
    #[arg(long)]
    pub local: bool,
    /// EC2: the base AMI the builder boots (e.g. a recent Debian or Amazon Linux).
    #[arg(long)]
    pub base_ami: Option<String>,
    /// EC2: https URL the builder downloads lobster-slave from.
    #[arg(long)]
    pub binary_url: Option<String>,
    /// EC2: the builder's instance type.
    #[arg(long, default_value = "t3.small")]
    pub instance_type: String,
    /// The tag that marks the template, KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE")]
    pub template_tag: Option<String>,
    /// EC2: how long the install may take.
    #[arg(long, default_value = "20m", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub async fn image(cmd: ImageCommand, home: &Home) -> Result<ExitStatus, Failure> {
    let ImageCommand::Build(a) = cmd;
    let mut common = a.common.clone();
    if a.local {
        if common.cloud == Some(CloudKind::Aws) {
            return Err(Failure::bad_input(anyhow!(
                "--local and --cloud aws contradict each other"
            )));
        }
        common.cloud = Some(CloudKind::Local);
    }
    let (path, explicit) = config::path(home, common.config.clone());
    let file = config::read(&path, explicit).map_err(|e| Failure::bad_input(anyhow!(e)))?;
    let s = config::resolve(
        file,
        Overrides {
            cloud: common.cloud,
            endpoint_url: common.endpoint_url.clone(),
            region: common.region.clone(),
            fleet: common.fleet.clone(),
            template_tag: a.template_tag.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| Failure::bad_input(anyhow!(e)))?;
    match s.cloud {
        CloudKind::Local => {
            let bin =
                crate::local_slaves::slave_binary().map_err(|e| Failure::trouble(anyhow!(e)))?;
            let c = connect(&s, home).await.map_err(Failure::trouble)?;
            let id = image::build_local(c.cloud.as_ref(), &home.images(), &bin, &s.template_tag)
                .await
                .map_err(Failure::trouble)?;
            println!("{id}");
            eprintln!(
                "local template image {id} tagged {}={}",
                s.template_tag.0, s.template_tag.1
            );
            Ok(ExitStatus::Success)
        }
        CloudKind::Aws => {
            let base = a
                .base_ami
                .ok_or_else(|| Failure::bad_input(anyhow!("EC2 images need --base-ami")))?;
            let url = a.binary_url.ok_or_else(|| {
                Failure::bad_input(anyhow!(
                    "EC2 images need --binary-url (where the builder downloads lobster-slave)"
                ))
            })?;
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(Failure::bad_input(anyhow!(
                    "--binary-url must be an http(s) URL"
                )));
            }
            let c = connect(&s, home).await.map_err(Failure::trouble)?;
            let bake = image::Bake {
                base_ami: base,
                instance_type: a.instance_type,
                binary_url: url,
                subnet_id: s.subnet_ids.first().cloned(),
                security_group_ids: s.security_group_ids.clone(),
                iam_instance_profile: s.iam_instance_profile.clone(),
                timeout: a.timeout,
            };
            let id = image::bake(c.cloud.as_ref(), &bake, &s.template_tag, |m| {
                eprintln!("{m}")
            })
            .await
            .map_err(Failure::trouble)?;
            println!("{id}");
            Ok(ExitStatus::Success)
        }
    }
}
