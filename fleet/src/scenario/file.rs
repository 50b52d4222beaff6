//! The scenario file as written in YAML: every field optional where a default exists, unknown
//! fields rejected, values kept with their source location for validation messages.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::value::{DurationValue, Number, StatusList, ThinkValue, Threshold, Whole};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScenarioFile {
    pub name: Spanned<String>,
    pub target: Option<Spanned<String>>,
    pub targets: Option<Spanned<Vec<Spanned<TargetFile>>>>,
    pub tls: Option<Spanned<TlsFile>>,
    pub duration: Option<Spanned<DurationValue>>,
    pub timeout: Option<Spanned<DurationValue>>,
    pub think: Option<Spanned<ThinkValue>>,
    pub load: Spanned<LoadFile>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub data: Option<Spanned<DataFile>>,
    pub requests: Option<Spanned<Vec<Spanned<RequestFile>>>>,
    pub flows: Option<Spanned<Vec<Spanned<FlowFile>>>>,
    pub markov: Option<Spanned<MarkovFile>>,
    #[serde(default)]
    pub sla: Vec<Spanned<SlaFile>>,
    pub max_error_rate: Option<Spanned<Threshold>>,
    pub trace: Option<Spanned<TraceFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TraceFile {
    pub sample: Option<Spanned<Threshold>>,
    pub errors: Option<Spanned<String>>,
    pub max_mb: Option<Spanned<Whole>>,
    #[serde(default)]
    pub output: Vec<Spanned<String>>,
}

/// One of `targets:`: a URL, or a URL with its weight.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TargetFile {
    Url(String),
    Weighted(WeightedTargetFile),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightedTargetFile {
    pub url: String,
    pub weight: Option<Whole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsFile {
    pub ca_file: Option<Spanned<String>>,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadFile {
    pub users: Option<Spanned<Whole>>,
    pub rate: Option<Spanned<Number>>,
    pub ramp: Option<Spanned<DurationValue>>,
    pub stages: Option<Spanned<Vec<Spanned<StageFile>>>>,
    pub max_connections: Option<Spanned<Whole>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageFile {
    pub duration: Spanned<DurationValue>,
    pub users: Option<Spanned<Whole>>,
    pub rate: Option<Spanned<Number>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataFile {
    pub items: Option<Vec<String>>,
    pub file: Option<Spanned<String>>,
    pub strategy: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestFile {
    pub name: Spanned<String>,
    pub method: Option<Spanned<String>>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub expect: Option<Spanned<StatusList>>,
    pub weight: Option<Spanned<Whole>>,
    #[serde(default)]
    pub capture: Vec<Spanned<CaptureFile>>,
    #[serde(default)]
    pub check: Vec<Spanned<CheckFile>>,
    pub think: Option<Spanned<ThinkValue>>,
    pub follow_redirects: Option<bool>,
    pub browse: Option<Spanned<BrowseFile>>,
    pub on_failure: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BrowseFile {
    pub depth: Option<Spanned<Whole>>,
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    pub think: Option<Spanned<ThinkValue>>,
    #[serde(default)]
    pub groups: Vec<Spanned<GroupFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupFile {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlowFile {
    pub name: Spanned<String>,
    pub weight: Option<Spanned<Whole>>,
    pub steps: Spanned<Vec<Spanned<RequestFile>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MarkovFile {
    pub states: Spanned<Vec<Spanned<RequestFile>>>,
    pub initial: Option<Spanned<BTreeMap<String, f64>>>,
    pub transitions: Spanned<BTreeMap<String, Spanned<BTreeMap<String, f64>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaptureFile {
    pub name: Spanned<String>,
    pub header: Option<Spanned<String>>,
    pub regex: Option<Spanned<String>>,
    pub json: Option<Spanned<String>>,
    pub html: Option<Spanned<String>>,
    pub attr: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckFile {
    pub status: Option<Spanned<StatusList>>,
    pub body_contains: Option<Spanned<String>>,
    pub body_regex: Option<Spanned<String>>,
    pub header: Option<Spanned<String>>,
    pub json: Option<Spanned<String>>,
    pub equals: Option<Spanned<String>>,
    pub max_bytes: Option<Spanned<Whole>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SlaFile {
    pub metric: Spanned<String>,
    pub max: Option<Spanned<Threshold>>,
    pub min: Option<Spanned<Threshold>>,
    pub window: Option<Spanned<DurationValue>>,
    pub request: Option<Spanned<String>>,
    pub target: Option<Spanned<String>>,
    pub abort: Option<bool>,
}
