//! The path sent upstream: unchanged, with a prefix stripped, or rewritten.

use std::borrow::Cow;

use super::build::Problem;
use super::path_pattern::{TemplateSegment, path_segments, placeholders};

/// The change a route makes to the path before forwarding.
#[derive(Debug, Default)]
pub(super) enum Forward {
    /// The normalized request path is forwarded as it is.
    #[default]
    Unchanged,
    /// `strip_prefix` without its trailing slash, so `/` is stored as an empty string.
    StripPrefix(String),
    /// `rewrite`, split into text and template parameters.
    Rewrite(Vec<RewritePart>),
}

/// A piece of a `rewrite` value.
#[derive(Debug)]
pub(super) enum RewritePart {
    Literal(String),
    /// The path segment at this index (the index of the template's `{name}`).
    Param(usize),
}

impl Forward {
    /// Returns the path to forward for a `path` that this route matched.
    ///
    /// A path that the route did not match is not rejected: a prefix that does not
    /// fit leaves it unchanged and a missing parameter becomes an empty string.
    pub(super) fn apply<'p>(&self, path: &'p str) -> Cow<'p, str> {
        match self {
            Self::Unchanged => Cow::Borrowed(path),
            Self::StripPrefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some("") => Cow::Borrowed("/"),
                Some(rest) if rest.starts_with('/') => Cow::Borrowed(rest),
                _ => Cow::Borrowed(path),
            },
            Self::Rewrite(parts) => Cow::Owned(rewrite(parts, path)),
        }
    }
}

fn rewrite(parts: &[RewritePart], path: &str) -> String {
    let segments: Vec<&str> = path_segments(path).collect();
    let mut output = String::with_capacity(path.len());
    for part in parts {
        match part {
            RewritePart::Literal(text) => output.push_str(text),
            RewritePart::Param(index) => {
                output.push_str(segments.get(*index).copied().unwrap_or_default());
            }
        }
    }
    output
}

/// Parses a normalized `rewrite` value, resolving each `{name}` to its segment index
/// in `template`.
///
/// `template` is `None` when the route's path condition is invalid, and then names
/// are not checked. A route without a template defines no parameters.
pub(super) fn parse_rewrite(
    text: &str,
    template: Option<&[TemplateSegment]>,
) -> Result<Vec<RewritePart>, Vec<Problem>> {
    let found = placeholders(text).map_err(|problem| vec![problem.in_value("rewrite", text)])?;
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    let mut literal_start = 0;
    for placeholder in found {
        parts.push(RewritePart::Literal(
            text[literal_start..placeholder.range.start].to_owned(),
        ));
        literal_start = placeholder.range.end;
        let Some(template) = template else {
            continue;
        };
        match param_index(template, placeholder.name) {
            Some(index) => parts.push(RewritePart::Param(index)),
            None => problems.push(undefined_param(template, placeholder.name)),
        }
    }
    parts.push(RewritePart::Literal(text[literal_start..].to_owned()));
    parts.retain(|part| !matches!(part, RewritePart::Literal(text) if text.is_empty()));
    if problems.is_empty() {
        Ok(parts)
    } else {
        Err(problems)
    }
}

fn param_index(template: &[TemplateSegment], name: &str) -> Option<usize> {
    template
        .iter()
        .position(|segment| matches!(segment, TemplateSegment::Param(param) if param == name))
}

fn undefined_param(template: &[TemplateSegment], name: &str) -> Problem {
    let defined: Vec<&str> = template
        .iter()
        .filter_map(|segment| match segment {
            TemplateSegment::Param(param) => Some(param.as_str()),
            TemplateSegment::Literal(_) => None,
        })
        .collect();
    let hint = if defined.is_empty() {
        format!("capture it with match.path_template, as in /users/{{{name}}}")
    } else {
        format!(
            "use one of the template's parameters: {}",
            defined.join(", ")
        )
    };
    Problem::new(
        format!("rewrite uses {{{name}}}, which the route's path_template does not define"),
        hint,
    )
}
