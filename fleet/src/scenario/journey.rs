//! Journeys (see `docs/scenario.md`, "Flows"): flows of steps that a virtual user runs in
//! order, what a step captures from its response into the user's variables (`{{name}}` in
//! later steps), and what it checks.
//!
//! A step is a [`super::Request`] with captures, checks and its own think time; a flow lists
//! its steps by index into [`super::Scenario::requests`], so every step is an endpoint of the
//! report under its own name.

use serde::{Deserialize, Serialize};

/// A named, weighted sequence of steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    pub name: String,
    /// Relative share among the flows (a user picks its next flow by weight).
    pub weight: u32,
    /// Indexes into `Scenario::requests`, in the order they run.
    pub steps: Vec<usize>,
}

/// A Markov mix (as CLIF's and RUBiS's user models): every request of the scenario is a
/// state; a user starts in a state drawn from `initial` and, after each visit, moves to the
/// next state drawn from the visited state's row of `transitions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Markov {
    /// Probability of starting in each state (sums to 1).
    pub initial: Vec<f64>,
    /// `transitions[i][j]`: probability of going from state `i` to state `j` (rows sum to 1).
    pub transitions: Vec<Vec<f64>>,
}

/// How far a row of probabilities may sum from 1.
pub const SUM_TOLERANCE: f64 = 1e-6;

impl Markov {
    /// The stationary distribution π (π = πP): the share of visits each state gets in a long
    /// walk, by power iteration from `initial`. For an irreducible, aperiodic chain.
    pub fn stationary(&self) -> Vec<f64> {
        let n = self.initial.len();
        let mut pi = vec![1.0 / n as f64; n];
        for _ in 0..10_000 {
            let mut next = vec![0.0; n];
            for (i, row) in self.transitions.iter().enumerate() {
                for (j, p) in row.iter().enumerate() {
                    next[j] += pi[i] * p;
                }
            }
            let delta: f64 = next.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum();
            pi = next;
            if delta < 1e-12 {
                break;
            }
        }
        pi
    }
}

/// Link-following browsing (as the first Lobster browsed MediaWiki): after the step's page,
/// the user follows a link picked at random from each page, `depth` times or until the run
/// ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Browse {
    /// Pages followed after the first; `None`: for the rest of the user's life.
    pub depth: Option<u64>,
    /// A link is eligible only if its path matches one of these (all when empty).
    pub include: Vec<String>,
    /// ... and none of these.
    pub exclude: Vec<String>,
    /// Pause between pages (else the step's think time).
    pub think: Option<super::Think>,
    /// Endpoint names for followed pages: the first group whose pattern matches the path
    /// names the endpoint; a page no group matches counts under the step's name.
    pub groups: Vec<Group>,
}

/// A name for the pages whose path matches `path` (a regular expression).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub path: String,
}

/// A value a step takes from its response into a variable of the same user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// The variable's name (`{{name}}` in later steps).
    pub name: String,
    pub from: Source,
}

/// Where a capture or a check looks in a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A response header's value (the first of that name, case-insensitive).
    Header(String),
    /// The first match of a regular expression over the body: its first group when it has
    /// one, else the whole match (Rust `regex` syntax).
    Regex(String),
    /// A value of a JSON body at a JSON pointer (RFC 6901): strings as they are, other
    /// values as JSON text.
    Json(String),
    /// The first HTML element a CSS selector matches: the attribute `attr`, or its text.
    Html {
        selector: String,
        attr: Option<String>,
    },
}

/// An assertion on a response; failed checks are counted per check and feed the verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// How the report names it: `step: rule`, e.g. `account: body_contains "Signed in"`.
    pub label: String,
    pub rule: Rule,
}

/// What a check asserts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The status is one of these.
    Status(Vec<u16>),
    /// The body contains this text.
    BodyContains(String),
    /// The body matches this regular expression.
    BodyRegex(String),
    /// The response has this header.
    Header(String),
    /// The JSON body has a value at this pointer (equal to `equals` when given: a string
    /// compared as it is, anything else as JSON text).
    Json {
        pointer: String,
        equals: Option<String>,
    },
    /// The body is at most this many bytes.
    MaxBytes(u64),
}

/// Whether `text` is a valid JSON pointer (RFC 6901 §3): empty, or `/`-separated tokens in
/// which `~` is followed by `0` or `1`.
pub fn is_json_pointer(text: &str) -> bool {
    (text.is_empty() || text.starts_with('/'))
        && text
            .split('~')
            .skip(1)
            .all(|rest| rest.starts_with('0') || rest.starts_with('1'))
}

/// The variables (`{{name}}`, not `{{item}}`) a text uses, in order.
pub fn variables(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

/// Whether `name` may name a variable: a letter or `_`, then letters, digits or `_`.
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}
