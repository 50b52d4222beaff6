//! `lobster image build|list|rm`: the template image for the local cloud (`--local`) or EC2;
//! the images an account owns; deregistering them (a local image's directory goes too, and a
//! shared slave binary no image uses any more).

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
  sudo lobster image build --local --rootfs /var/cache/lobster/bookworm   # for --runtime nspawn
  lobster image build --cloud aws --region eu-west-1 --base-ami ami-0123456789abcdef0 \\
      --binary-url https://example.com/lobster-slave --instance-type c6i.large")]
    Build(BuildArgs),
    /// List the images this account owns, with their tags (the template is found by tag).
    List(ListArgs),
    /// Deregister images by id or by tag (local images: their directory is removed too).
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: Common,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub common: Common,
    /// Image ids (`ami-…`).
    pub ids: Vec<String>,
    /// Every image carrying this tag, KEY=VALUE (e.g. lobster:role=slave-template).
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: Option<String>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    /// Local: also bake the recipe into a copy of this root file system (e.g. made by
    /// debootstrap, with systemd and curl), for `lobster cloud local --runtime nspawn`. Needs
    /// root and systemd-nspawn.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<std::path::PathBuf>,
}

pub async fn image(cmd: ImageCommand, home: &Home) -> Result<ExitStatus, Failure> {
    match cmd {
        ImageCommand::Build(a) => build(a, home).await,
        ImageCommand::List(a) => list(a, home).await,
        ImageCommand::Rm(a) => rm(a, home).await,
    }
}

async fn list(a: ListArgs, home: &Home) -> Result<ExitStatus, Failure> {
    let s = super::fleet::settings(home, &a.common, Overrides::default())?;
    let images = match crate::fleet::connect_existing(&s, home).await {
        Some(c) => crate::fleet::apply::retry("listing images", || c.cloud.own_images())
            .await
            .map_err(Failure::trouble)?,
        None => Vec::new(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&images).expect("json"));
        return Ok(ExitStatus::Success);
    }
    println!(
        "{:<24} {:<10} {:<26} {:<48} tags",
        "image", "state", "created", "name"
    );
    for i in &images {
        let tags: Vec<String> = i.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<24} {:<10} {:<26} {:<48} {}",
            i.id,
            i.state,
            i.created.as_deref().unwrap_or("-"),
            i.name,
            tags.join(" ")
        );
    }
    Ok(ExitStatus::Success)
}

async fn rm(a: RmArgs, home: &Home) -> Result<ExitStatus, Failure> {
    let tag = match &a.tag {
        Some(t) => Some(config::parse_tag(t).map_err(|e| Failure::bad_input(anyhow!(e)))?),
        None => None,
    };
    if a.ids.is_empty() && tag.is_none() {
        return Err(Failure::bad_input(anyhow!(
            "name the images to remove: image ids, or --tag KEY=VALUE (see lobster image list)"
        )));
    }
    let s = super::fleet::settings(home, &a.common, Overrides::default())?;
    let Some(c) = crate::fleet::connect_existing(&s, home).await else {
        return Err(Failure::trouble(anyhow!(
            "no local cloud is running for {}: nothing to remove (lobster cloud start)",
            home.root.display()
        )));
    };
    let all = crate::fleet::apply::retry("listing images", || c.cloud.own_images())
        .await
        .map_err(Failure::trouble)?;
    for id in &a.ids {
        if !all.iter().any(|i| &i.id == id) {
            return Err(Failure::bad_input(anyhow!(
                "no image {id} in this account (see lobster image list)"
            )));
        }
    }
    let chosen: Vec<_> = all
        .iter()
        .filter(|i| {
            a.ids.contains(&i.id) || tag.as_ref().is_some_and(|(k, v)| i.tags.get(k) == Some(v))
        })
        .collect();
    for i in &chosen {
        if a.dry_run {
            println!("would remove {} ({})", i.id, i.name);
            continue;
        }
        crate::fleet::apply::retry("deregistering the image", || {
            c.cloud.deregister_image(&i.id)
        })
        .await
        .map_err(Failure::trouble)?;
        if s.cloud == CloudKind::Local
            && let Some(dir) = i.location.as_deref().map(std::path::Path::new)
            && dir.starts_with(home.images())
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        println!("removed {} ({})", i.id, i.name);
    }
    if s.cloud == CloudKind::Local && !a.dry_run {
        image::forget_unused_binaries(&home.images());
    }
    if chosen.is_empty() {
        println!("no image matched");
    }
    Ok(ExitStatus::Success)
}

async fn build(a: BuildArgs, home: &Home) -> Result<ExitStatus, Failure> {
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
            if let Some(base) = &a.rootfs {
                crate::fleet::rootfs::check_base(base).map_err(Failure::bad_input)?;
            }
            let bin =
                crate::local_slaves::slave_binary().map_err(|e| Failure::trouble(anyhow!(e)))?;
            let c = connect(&s, home).await.map_err(Failure::trouble)?;
            let id = image::build_local(
                c.cloud.as_ref(),
                &home.images(),
                &bin,
                &s.template_tag,
                a.rootfs.as_deref(),
            )
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
            if a.rootfs.is_some() {
                return Err(Failure::bad_input(anyhow!(
                    "--rootfs is for local images (the local cloud's nspawn runtime)"
                )));
            }
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
