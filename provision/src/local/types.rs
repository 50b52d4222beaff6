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
