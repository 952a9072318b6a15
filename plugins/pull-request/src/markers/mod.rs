//! Weave-compatible promotion markers: setting marked YAML scalars to the promoted version.
//!
//! A marker is a YAML line comment holding a JSON object with a `$promotion` string, after the
//! scalar it sets:
//!
//! ```yaml
//! spec:
//!   chart:
//!     spec:
//!       version: 6.5.4 # {"$promotion": "flux-system:podinfo:prod"}
//! images:
//!   - newTag: '2.0'  #{"$promotion":"apps:billing:test:eu-cluster"}
//! ```
//!
//! The string names a pipeline target: `<namespace>:<name>:<environment>` applies to every
//! target of that environment, `<namespace>:<name>:<environment>:<cluster>` only to the
//! target on that cluster.
//!
//! The edit is line-based and byte-exact (Weave re-serialised whole files through a YAML
//! library and lost their formatting): only the bytes of each marked scalar change; comments,
//! key order, quoting, indentation, trailing spaces, CRLF line endings, a byte-order mark and
//! a missing final newline all stay. How the version is quoted is described on [`apply`]
//! (in full in the private `render` module). A marker for this target next to something that is not a
//! one-line scalar (a block scalar, a flow collection, an alias, no value at all) is an
//! error that names the line, never a silent skip.
//!
//! Being line-based, the edit also sees markers on lines inside a block scalar — say a
//! `values.yaml` embedded in a ConfigMap — and edits them as the YAML lines they usually are.

mod line;
mod render;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

use std::fmt;

/// The pipeline target a promotion is for, or — inside a [`Marker`] — the target a marker
/// names, where `cluster: None` means "every cluster of that environment".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerTarget {
    pub namespace: String,
    pub name: String,
    pub environment: String,
    pub cluster: Option<String>,
}

impl MarkerTarget {
    /// The target `<namespace>/<name>` in `environment`, with no cluster.
    pub fn new(namespace: &str, name: &str, environment: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            environment: environment.to_owned(),
            cluster: None,
        }
    }

    /// The same target on `cluster`.
    pub fn on_cluster(mut self, cluster: &str) -> Self {
        self.cluster = Some(cluster.to_owned());
        self
    }
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The edited file.
    pub text: String,
    /// Scalars whose value changed (a scalar already at the version is left as it is).
    pub changed: usize,
    /// Markers that named this target.
    pub matched: usize,
}

/// A promotion marker found by [`markers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// 1-based line number.
    pub line: usize,
    /// The `$promotion` string as written.
    pub raw: String,
    /// The target it names (`cluster: None`: every cluster), or why `raw` does not name one.
    pub target: Result<MarkerTarget, String>,
}

impl Marker {
    /// This marker sets scalars when promoting `target`.
    pub fn applies_to(&self, target: &MarkerTarget) -> bool {
        let Ok(named) = &self.target else {
            return false;
        };
        named.namespace == target.namespace
            && named.name == target.name
            && named.environment == target.environment
            && (named.cluster.is_none() || named.cluster == target.cluster)
    }

    /// Malformed, but its namespace and name are the target's pipeline: a typo in this
    /// pipeline's own markers, worth an error rather than a silent skip.
    fn malformed_for(&self, target: &MarkerTarget) -> bool {
        let mut parts = self.raw.split(':');
        self.target.is_err()
            && parts.next() == Some(target.namespace.as_str())
            && parts.next() == Some(target.name.as_str())
    }
}

/// Why [`apply`] could not edit a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerError {
    /// The version to write is empty.
    EmptyVersion,
    /// Markers for this target that cannot be applied, every one of them, in line order.
    Unusable(Vec<LineProblem>),
}

/// One marker for the target that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// 1-based line number.
    pub line: usize,
    /// The marker's `$promotion` string.
    pub marker: String,
    pub problem: Problem,
}

/// Why a marker's scalar cannot be identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The marker stands on a line of its own.
    MarkerAlone,
    /// `key: # marker`, `- # marker`: the value is empty or on the following lines.
    NoValue,
    /// `key: | # marker`: a block scalar's value is on the following lines.
    BlockScalar,
    /// `key: {a: b} # marker`, `key: [a] # marker`.
    FlowCollection,
    /// `key: *anchor # marker`: the value is defined elsewhere.
    Alias,
    /// A quoted scalar that does not close on this line.
    QuotedContinues,
    /// A bare scalar line following a line that already holds a value: it continues a
    /// multi-line scalar that starts on `line`.
    Continuation { line: usize },
    /// `key: "a" b # marker`.
    TextAfterQuoted,
    /// `key: a: b # marker`.
    MappingInValue,
    /// The value starts with an indicator that no one-line scalar starts with (`? `, `@`, ...).
    Indicator(char),
    /// The `$promotion` string does not have the `<ns>:<name>:<env>[:<cluster>]` shape.
    Malformed(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MarkerAlone => write!(
                f,
                "the marker stands on a line of its own; it must follow the scalar it sets"
            ),
            Problem::NoValue => write!(
                f,
                "there is no value before the marker; it must follow a one-line scalar"
            ),
            Problem::BlockScalar => write!(
                f,
                "the value is a block scalar ('|' or '>') whose text is on the following lines"
            ),
            Problem::FlowCollection => {
                write!(
                    f,
                    "the value is a flow collection ('{{...}}' or '[...]'), not a scalar"
                )
            }
            Problem::Alias => write!(f, "the value is an alias ('*name') defined elsewhere"),
            Problem::QuotedContinues => {
                write!(f, "the quoted scalar does not close on this line")
            }
            Problem::Continuation { line } => write!(
                f,
                "the line continues the multi-line scalar started on line {line}"
            ),
            Problem::TextAfterQuoted => write!(f, "text follows the quoted scalar"),
            Problem::MappingInValue => write!(f, "the value holds a mapping indicator ': '"),
            Problem::Indicator(c) => write!(f, "the value starts with the indicator '{c}'"),
            Problem::Malformed(why) => write!(f, "{why}"),
        }
    }
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: marker \"{}\": {}",
            self.line, self.marker, self.problem
        )
    }
}

impl fmt::Display for MarkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkerError::EmptyVersion => write!(f, "the version to promote is empty"),
            MarkerError::Unusable(problems) => {
                write!(f, "cannot set the version at every promotion marker: ")?;
                for (i, problem) in problems.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for MarkerError {}

/// A line of the file: its content and its terminator (`\n`, `\r\n` or nothing).
struct Line<'a> {
    number: usize,
    whole: &'a str,
    content: &'a str,
    /// Where YAML starts in `content`: after the byte-order mark on the first line.
    from: usize,
    comment_at: Option<usize>,
}

fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.split_inclusive('\n')
        .enumerate()
        .map(|(index, whole)| {
            let content = whole.strip_suffix('\n').unwrap_or(whole);
            let content = content.strip_suffix('\r').unwrap_or(content);
            let from = if index == 0 && content.starts_with('\u{feff}') {
                '\u{feff}'.len_utf8()
            } else {
                0
            };
            Line {
                number: index + 1,
                whole,
                content,
                from,
                comment_at: line::comment_start(content, from),
            }
        })
}

impl Line<'_> {
    fn marker(&self) -> Option<Marker> {
        let at = self.comment_at?;
        let raw = line::promotion_of(&self.content[at + 1..])?;
        Some(Marker {
            line: self.number,
            target: parse_target(&raw),
            raw,
        })
    }
}

fn parse_target(raw: &str) -> Result<MarkerTarget, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    if !(3..=4).contains(&parts.len()) {
        return Err(format!(
            "expected <namespace>:<name>:<environment>[:<cluster>], got {} part(s)",
            parts.len()
        ));
    }
    if let Some(n) = parts
        .iter()
        .position(|p| p.is_empty() || p.contains(char::is_whitespace))
    {
        return Err(format!(
            "part {} of <namespace>:<name>:<environment>[:<cluster>] is empty or holds whitespace",
            n + 1
        ));
    }
    Ok(MarkerTarget {
        namespace: parts[0].to_owned(),
        name: parts[1].to_owned(),
        environment: parts[2].to_owned(),
        cluster: parts.get(3).map(|c| (*c).to_owned()),
    })
}

/// Every promotion marker of `text`, in line order, whatever target it names.
pub fn markers(text: &str) -> Vec<Marker> {
    lines(text).filter_map(|line| line.marker()).collect()
}

/// Sets every scalar marked for `target` to `version`.
///
/// Lines without a marker for `target` are copied byte for byte, so a file without one comes
/// back identical (with `changed == 0`, `matched == 0`). All markers for `target` that cannot
/// be applied are reported together; nothing is edited then.
///
/// The scalar keeps its style: a double-quoted one stays double-quoted (`"` and `\`
/// backslash-escaped), a single-quoted one stays single-quoted (`'` doubled) unless the
/// version holds a control character, then it becomes double-quoted. A plain scalar stays
/// plain only if the version is "safe plain" — it starts with an ASCII letter or digit, holds
/// only `A-Za-z0-9._+/@:~-`, does not end with `:` — and would not be read as a number,
/// boolean, null or date by a YAML 1.1 or 1.2 parser (`1.10`, `2`, `true`, `yes`,
/// `2024-01-15`...): plain `1.10` is the float 1.1. Any other version is written
/// double-quoted, so the file keeps saying the same string. A scalar whose string already
/// is the version is left byte for byte as it is (and not counted in `changed`).
pub fn apply(text: &str, target: &MarkerTarget, version: &str) -> Result<Edit, MarkerError> {
    if version.is_empty() {
        return Err(MarkerError::EmptyVersion);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut problems = Vec::new();
    let (mut changed, mut matched) = (0, 0);
    // The last line holding YAML content: its number, and whether it leaves a node open.
    let mut previous: Option<(usize, bool)> = None;
    for line in lines(text) {
        let mut edited = false;
        if let Some(marker) = line.marker() {
            let problem = |problem| LineProblem {
                line: line.number,
                marker: marker.raw.clone(),
                problem,
            };
            if marker.applies_to(target) {
                matched += 1;
                // `marker()` returned Some, so the line has a comment.
                let comment_at = line.comment_at.unwrap_or(line.content.len());
                match line::locate_scalar(line.content, line.from, comment_at) {
                    Err(p) => problems.push(problem(p)),
                    Ok(found) => match previous {
                        Some((start, false)) if found.bare => {
                            problems.push(problem(Problem::Continuation { line: start }))
                        }
                        _ => {
                            let source = &line.content[found.range.clone()];
                            if render::decode(source, found.style).as_deref() != Some(version) {
                                out.push_str(&line.whole[..found.range.start]);
                                out.push_str(&render::render(version, found.style));
                                out.push_str(&line.whole[found.range.end..]);
                                changed += 1;
                                edited = true;
                            }
                        }
                    },
                }
            } else if marker.malformed_for(target) {
                let why = marker.target.clone().err().unwrap_or_default();
                problems.push(problem(Problem::Malformed(why)));
            }
        }
        if !edited {
            out.push_str(line.whole);
        }
        if line::is_significant(line.content, line.from, line.comment_at) {
            let opens = line::opens_value(line.content, line.from, line.comment_at);
            let start = match previous {
                // A continuation keeps pointing at the line its scalar started on.
                Some((start, false)) if !opens && starts_bare(&line) => start,
                _ => line.number,
            };
            previous = Some((start, opens));
        }
    }
    if !problems.is_empty() {
        return Err(MarkerError::Unusable(problems));
    }
    Ok(Edit {
        text: out,
        changed,
        matched,
    })
}

/// The line's YAML is a scalar alone (no key, no `- `), as continuation lines are.
fn starts_bare(line: &Line<'_>) -> bool {
    let end = line.comment_at.unwrap_or(line.content.len());
    line::locate_scalar(line.content, line.from, end).is_ok_and(|found| found.bare)
}
