//! The template image: one recipe (the slave binary, and `lobster_fleet::recipe`: its systemd
//! units, the cloud-init template), two destinations.
//!
//! - Local cloud: the recipe is laid out in a directory under `LOBSTER_HOME/cloud/images/` and
//!   registered (`RegisterImage` with that directory as location), tagged as the template.
//! - EC2: a builder instance is launched from a base AMI with an install script as user-data
//!   (downloads the slave binary, installs and enables the units, powers off); once it has
//!   stopped, `CreateImage` makes the AMI, which is tagged, and the builder is terminated.
//!
//! Images are found by tag (`lobster:role=slave-template` by default), never by id.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lobster_fleet::tags;
use lobster_provision::cloud::{Cloud, Image, InstanceState, LaunchSpec, Tags};

use super::apply::{FleetError, retry};

pub(crate) use lobster_fleet::recipe::{INSTALL, UNITS, USER_DATA};

/// No image carries the template tag.
#[derive(Debug, thiserror::Error)]
#[error("no available image tagged {key}={value}; {existing}")]
pub struct NoTemplate {
    pub key: String,
    pub value: String,
    pub existing: String,
}

fn describe_existing(images: &[Image]) -> String {
    if images.is_empty() {
        return "this account owns no images (build one: lobster image build)".into();
    }
    let list: Vec<String> = images
        .iter()
        .map(|i| {
            let t: Vec<String> = i.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} ({}) [{}]", i.id, i.name, t.join(", "))
        })
        .collect();
    format!("images owned: {}", list.join("; "))
}

/// The newest available image carrying `tag`.
pub async fn find_template(
    cloud: &dyn Cloud,
    tag: &(String, String),
) -> Result<Result<Image, NoTemplate>, FleetError> {
    let filter = Tags::from([tag.clone()]);
    let mut found = retry("finding the template image", || cloud.find_images(&filter)).await?;
    found.sort_by(|a, b| (a.created.as_deref(), &a.name).cmp(&(b.created.as_deref(), &b.name)));
    if let Some(newest) = found.pop() {
        return Ok(Ok(newest));
    }
    let own = retry("listing own images", || cloud.own_images()).await?;
    Ok(Err(NoTemplate {
        key: tag.0.clone(),
        value: tag.1.clone(),
        existing: describe_existing(&own),
    }))
}

/// The tags a template image gets.
pub fn template_tags(tag: &(String, String)) -> Tags {
    Tags::from([
        tag.clone(),
        (tags::MANAGED.to_string(), "true".to_string()),
        (
            "lobster:version".to_string(),
            lobster_fleet::VERSION.to_string(),
        ),
    ])
}

/// The one copy of a slave binary that the local images share (`images/.bin/`): copied once
/// per distinct binary (version, size, modification time), then hard-linked into each image.
fn shared_binary(images_dir: &Path, slave_binary: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(slave_binary)?;
    let shared = images_dir.join(".bin").join(format!(
        "lobster-slave-{}-{}-{}.{}",
        lobster_fleet::VERSION,
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    ));
    if !shared.is_file() {
        std::fs::create_dir_all(images_dir.join(".bin"))?;
        let partial = shared.with_extension("partial");
        std::fs::copy(slave_binary, &partial)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&partial, &shared)?;
    }
    Ok(shared)
}

/// Removes the shared slave binaries (`images/.bin/`) that no local image links any more.
pub(crate) fn forget_unused_binaries(images_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(images_dir.join(".bin")) else {
        return;
    };
    for e in entries.flatten() {
        if e.metadata().is_ok_and(|m| m.is_file() && m.nlink() == 1) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Lays out the recipe for the local cloud under `images_dir`; returns its directory. Images
/// made from the same slave binary share one copy of it (hard links).
pub(crate) fn lay_out_local(
    images_dir: &Path,
    slave_binary: &Path,
    name: &str,
) -> std::io::Result<PathBuf> {
    let dir = images_dir.join(name);
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::create_dir_all(dir.join("systemd"))?;
    std::fs::create_dir_all(dir.join("cloud-init"))?;
    let bin = dir.join("bin/lobster-slave");
    let shared = shared_binary(images_dir, slave_binary)?;
    if std::fs::hard_link(&shared, &bin).is_err() {
        std::fs::copy(&shared, &bin)?;
    }
    for (file, text) in UNITS {
        std::fs::write(dir.join("systemd").join(file), text)?;
    }
    std::fs::write(dir.join("cloud-init/user-data.yaml"), USER_DATA)?;
    let recipe = serde_json::json!({
        "name": name,
        "version": lobster_fleet::VERSION,
        "units": UNITS.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
    });
    std::fs::write(
        dir.join("recipe.json"),
        serde_json::to_string_pretty(&recipe).expect("json"),
    )?;
    Ok(dir)
}

/// A local image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The recipe could not be laid out.
    #[error("cannot lay out the image in {dir}")]
    Layout {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    /// The root file system could not be baked.
    #[error(transparent)]
    Rootfs(#[from] super::rootfs::RootfsError),
    /// The cloud refused the image.
    #[error(transparent)]
    Cloud(#[from] FleetError),
}

/// Builds and registers a local template image; returns its id. With `rootfs`, the recipe is
/// also baked into a copy of that root file system, for the nspawn runtime.
pub async fn build_local(
    cloud: &dyn Cloud,
    images_dir: &Path,
    slave_binary: &Path,
    tag: &(String, String),
    rootfs: Option<&Path>,
) -> Result<String, BuildError> {
    let name = format!(
        "lobster-slave-{}-{}",
        lobster_fleet::VERSION,
        crate::clock::unix_ms()
    );
    let dir =
        lay_out_local(images_dir, slave_binary, &name).map_err(|source| BuildError::Layout {
            dir: images_dir.display().to_string(),
            source,
        })?;
    if let Some(base) = rootfs {
        let (dir, base) = (dir.clone(), base.to_path_buf());
        let baked = tokio::task::spawn_blocking(move || super::rootfs::bake(&dir, &base))
            .await
            .expect("the bake does not panic");
        if let Err(e) = baked {
            let _ = std::fs::remove_dir_all(images_dir.join(&name));
            return Err(e.into());
        }
    }
    let location = dir.display().to_string();
    let tags = template_tags(tag);
    Ok(retry("registering the image", || {
        cloud.register_image(&name, &location, &tags)
    })
    .await?)
}

/// Options of an EC2 bake.
pub struct Bake {
    pub base_ami: String,
    pub instance_type: String,
    /// Where the builder downloads `lobster-slave` from (https URL, e.g. a presigned S3 URL).
    pub binary_url: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub iam_instance_profile: Option<String>,
    /// How long the install may take.
    pub timeout: Duration,
}

/// The builder's user-data: the install script with the units and the binary URL filled in.
pub fn install_script(binary_url: &str) -> String {
    let mut units = String::new();
    for (file, text) in UNITS {
        units.push_str(&format!(
            "cat > /etc/systemd/system/{file} <<'LOBSTER_UNIT'\n{text}LOBSTER_UNIT\n"
        ));
    }
    INSTALL
        .replace("{{binary_url}}", binary_url)
        .replace("{{units}}", &units)
}

/// Bakes an AMI on EC2: builder from the base AMI → install → stopped → CreateImage → tag.
pub async fn bake(
    cloud: &dyn Cloud,
    b: &Bake,
    tag: &(String, String),
    mut progress: impl FnMut(&str),
) -> Result<String, FleetError> {
    let name = format!(
        "lobster-slave-{}-{}",
        lobster_fleet::VERSION,
        crate::clock::unix_ms()
    );
    let mut builder_tags = Tags::from([
        (tags::MANAGED.to_string(), "true".to_string()),
        (tags::ROLE.to_string(), "image-builder".to_string()),
        (tags::NAME.to_string(), format!("{name}-builder")),
    ]);
    builder_tags.insert(
        tags::EXPIRES_AT.into(),
        crate::clock::rfc3339(crate::clock::unix_ms() + b.timeout.as_millis() as u64 + 600_000),
    );
    let spec = LaunchSpec {
        image_id: b.base_ami.clone(),
        instance_type: b.instance_type.clone(),
        count: 1,
        client_token: format!("lobster-bake-{}", crate::clock::unix_ms()),
        user_data: install_script(&b.binary_url),
        tags: builder_tags,
        subnet_id: b.subnet_id.clone(),
        security_group_ids: b.security_group_ids.clone(),
        iam_instance_profile: b.iam_instance_profile.clone(),
        key_name: None,
    };
    let launched = retry("launching the image builder", || cloud.launch(&spec)).await?;
    let id = launched
        .first()
        .map(|i| i.id.clone())
        .ok_or_else(|| FleetError::Timeout("RunInstances returned no builder instance".into()))?;
    progress(&format!(
        "builder {id} launched from {}; waiting for the install to power it off",
        b.base_ami
    ));
    let deadline = Instant::now() + b.timeout;
    loop {
        let state = match cloud.describe(std::slice::from_ref(&id)).await {
            Ok(list) => list.first().map(|i| i.state),
            // Eventual consistency right after the launch.
            Err(lobster_provision::cloud::CloudError::NotFound { .. }) => None,
            Err(e) if e.is_retryable() => None,
            Err(e) => {
                return Err(FleetError::Cloud {
                    what: "watching the builder".into(),
                    source: e,
                });
            }
        };
        match state {
            Some(InstanceState::Stopped) => break,
            Some(InstanceState::Terminated) | Some(InstanceState::ShuttingDown) => {
                return Err(FleetError::Timeout(format!(
                    "the builder {id} terminated before the install finished"
                )));
            }
            _ => {}
        }
        if Instant::now() > deadline {
            let _ = cloud.terminate(std::slice::from_ref(&id)).await;
            return Err(FleetError::Timeout(format!(
                "the install on {id} did not finish within {} s",
                b.timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    progress(&format!("builder {id} stopped; creating the image"));
    let tags = template_tags(tag);
    let image = retry("creating the image", || {
        cloud.create_image(&id, &name, &tags)
    })
    .await?;
    retry("terminating the builder", || {
        cloud.terminate(std::slice::from_ref(&id))
    })
    .await?;
    progress(&format!(
        "image {image} ({name}) tagged {}={}",
        tag.0, tag.1
    ));
    Ok(image)
}
