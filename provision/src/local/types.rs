//! Instance types the local cloud emulates: each gives its instances a number of vCPUs (and so
//! a number of slaves). `local.*` types are the local cloud's own; common EC2 names are
//! accepted too so a config written for EC2 runs unchanged.

/// The default type of the local cloud (one vCPU).
pub const DEFAULT_TYPE: &str = "local.small";

const TYPES: &[(&str, u32)] = &[
    ("local.small", 1),
    ("local.medium", 2),
    ("local.large", 4),
    ("local.xlarge", 8),
    ("t3.micro", 2),
    ("t3.small", 2),
    ("t3.medium", 2),
    ("t3.large", 2),
    ("c5.large", 2),
    ("c5.xlarge", 4),
    ("c5.2xlarge", 8),
    ("c6i.large", 2),
    ("c6i.xlarge", 4),
    ("c7i.large", 2),
    ("c7i.xlarge", 4),
    ("m5.large", 2),
    ("m5.xlarge", 4),
    ("m6i.large", 2),
    ("m6i.xlarge", 4),
];

/// vCPUs of a known type.
pub fn vcpus(instance_type: &str) -> Option<u32> {
    TYPES
        .iter()
        .find(|(n, _)| *n == instance_type)
        .map(|(_, v)| *v)
}

/// Every known type name.
pub fn names() -> impl Iterator<Item = &'static str> {
    TYPES.iter().map(|(n, _)| *n)
}

/// DescribeInstanceTypes: the vCPUs of the types asked for (`InstanceType.N`), or of every
/// type; an unknown type is EC2's `InvalidInstanceType`.
pub(super) fn describe(
    q: &super::query::Query,
    c: &super::api::Ctx<'_>,
) -> Result<super::api::Answer, super::query::ApiError> {
    let asked = q.list("InstanceType")?;
    let unknown: Vec<&String> = asked.iter().filter(|t| vcpus(t).is_none()).collect();
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown.iter().map(|t| t.as_str()).collect();
        return Err(super::query::ApiError::new(
            "InvalidInstanceType",
            format!(
                "The following supplied instance types do not exist: [{}]",
                list.join(", ")
            ),
        ));
    }
    let mut x = super::xml::Xml::response("DescribeInstanceTypesResponse", c.request_id);
    x.open("instanceTypeSet");
    for (name, v) in TYPES
        .iter()
        .filter(|(n, _)| asked.is_empty() || asked.iter().any(|a| a == n))
    {
        x.open("item");
        x.leaf("instanceType", name);
        x.open("vCpuInfo");
        x.leaf("defaultVCpus", &v.to_string());
        x.leaf("defaultCores", &v.to_string());
        x.leaf("defaultThreadsPerCore", "1");
        x.close("vCpuInfo");
        x.close("item");
    }
    x.close("instanceTypeSet");
    Ok((x.finish(), Vec::new()))
}
