//! Path conditions of a route and the `{name}` syntax shared by `path_template` and
//! `rewrite`.

use std::ops::Range;

use super::build::Problem;

/// The path condition of a route. Every text is a normalized path.
#[derive(Debug)]
pub(super) enum PathPattern {
    /// No path condition: every path matches.
    Any,
    /// `path`: the whole path must be equal.
    Exact(String),
    /// `path_prefix`: the path must start with it at a segment boundary.
    Prefix(String),
    /// `path_template`: the path must have the same segments, each `{name}` matching
    /// one non-empty segment.
    Template {
        text: String,
        segments: Vec<TemplateSegment>,
    },
}

/// One segment of a path template.
#[derive(Debug)]
pub(super) enum TemplateSegment {
    Literal(String),
    Param(String),
}

/// The kind of path condition, in increasing precedence. The declaration order is the
/// precedence order because `Ord` is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum PathKind {
    Any,
    Prefix,
    Template,
    Exact,
}

impl PathPattern {
    /// Returns the kind and the rank within the kind: the number of literal segments
    /// of a template, the length in bytes of a prefix, and 0 otherwise.
    pub(super) fn precedence(&self) -> (PathKind, usize) {
        match self {
            Self::Any => (PathKind::Any, 0),
            Self::Exact(_) => (PathKind::Exact, 0),
            Self::Prefix(prefix) => (PathKind::Prefix, prefix.len()),
            Self::Template { segments, .. } => {
                let literals = segments
                    .iter()
                    .filter(|segment| matches!(segment, TemplateSegment::Literal(_)))
                    .count();
                (PathKind::Template, literals)
            }
        }
    }

    /// Returns the leading literal segments that every matching path starts with.
    pub(super) fn literal_segments(&self) -> Vec<&str> {
        match self {
            Self::Any => Vec::new(),
            Self::Exact(path) => path_segments(path).collect(),
            Self::Prefix(prefix) => prefix_segments(prefix).collect(),
            Self::Template { segments, .. } => segments
                .iter()
                .map_while(|segment| match segment {
                    TemplateSegment::Literal(text) => Some(text.as_str()),
                    TemplateSegment::Param(_) => None,
                })
                .collect(),
        }
    }

    /// Returns the config field and value of the condition, for error messages.
    pub(super) fn describe(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::Any => None,
            Self::Exact(path) => Some(("path", path)),
            Self::Prefix(prefix) => Some(("path_prefix", prefix)),
            Self::Template { text, .. } => Some(("path_template", text)),
        }
    }
}

/// Splits a normalized path into its segments: `/` has one empty segment and `/a/`
/// has `a` and an empty segment.
pub(super) fn path_segments(path: &str) -> std::str::Split<'_, char> {
    path.get(1..).unwrap_or_default().split('/')
}

/// Splits a normalized prefix into the segments a path must start with. A trailing
/// slash adds no segment, so `/` has none and `/api/` has `api`.
pub(super) fn prefix_segments(prefix: &str) -> impl Iterator<Item = &str> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    let segments = (!trimmed.is_empty()).then(|| path_segments(trimmed));
    segments.into_iter().flatten()
}

/// Parses a normalized path template into segments, reporting every problem.
pub(super) fn parse_template(text: &str) -> Result<Vec<TemplateSegment>, Vec<Problem>> {
    let mut segments = Vec::new();
    let mut problems = Vec::new();
    for segment in path_segments(text) {
        match parse_template_segment(text, segment) {
            Ok(parsed) => segments.push(parsed),
            Err(problem) => problems.push(problem),
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for segment in &segments {
        let TemplateSegment::Param(name) = segment else {
            continue;
        };
        if names.contains(&name.as_str()) {
            problems.push(Problem::new(
                format!("invalid path template {text:?}: duplicate parameter name {name:?}"),
                "give each parameter a distinct name",
            ));
        }
        names.push(name);
    }
    if problems.is_empty() {
        Ok(segments)
    } else {
        Err(problems)
    }
}

fn parse_template_segment(text: &str, segment: &str) -> Result<TemplateSegment, Problem> {
    let placeholders =
        placeholders(segment).map_err(|problem| problem.in_value("path template", text))?;
    match placeholders.as_slice() {
        [] => Ok(TemplateSegment::Literal(segment.to_owned())),
        [placeholder] if placeholder.range == (0..segment.len()) => {
            Ok(TemplateSegment::Param(placeholder.name.to_owned()))
        }
        [placeholder] => Err(Problem::new(
            format!(
                "invalid path template {text:?}: segment {segment:?} mixes text and a parameter"
            ),
            format!(
                "make the parameter the whole segment, as in /{{{}}}",
                placeholder.name
            ),
        )),
        _ => Err(Problem::new(
            format!(
                "invalid path template {text:?}: segment {segment:?} has more than one parameter"
            ),
            "a parameter matches one whole segment, so use one parameter per segment",
        )),
    }
}

/// A `{name}` in a template or a rewrite.
#[derive(Debug)]
pub(super) struct Placeholder<'a> {
    /// Byte range of `{name}`, braces included.
    pub(super) range: Range<usize>,
    pub(super) name: &'a str,
}

/// Finds every `{name}` in `text`. The problem message is a fragment that the
/// caller prefixes with the value it belongs to.
pub(super) fn placeholders(text: &str) -> Result<Vec<Placeholder<'_>>, Problem> {
    let found = scan_placeholders(text)?;
    for placeholder in &found {
        check_param_name(placeholder.name)?;
    }
    Ok(found)
}

/// Finds every `{...}` in `text` without checking what is between the braces.
pub(super) fn scan_placeholders(text: &str) -> Result<Vec<Placeholder<'_>>, Problem> {
    let mut found = Vec::new();
    let mut offset = 0;
    while let Some(brace) = text[offset..].find(['{', '}']) {
        let start = offset + brace;
        if text[start..].starts_with('}') {
            return Err(Problem::new(
                "'}' without a matching '{'",
                "write parameters as {name}",
            ));
        }
        let Some(length) = text[start..].find('}') else {
            return Err(Problem::new(
                "'{' is not closed",
                "write parameters as {name}",
            ));
        };
        let end = start + length + 1;
        let name = &text[start + 1..end - 1];
        found.push(Placeholder {
            range: start..end,
            name,
        });
        offset = end;
    }
    Ok(found)
}

pub(super) fn check_param_name(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::new(
            "empty parameter name",
            "name the parameter, as in {id}",
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Problem::new(
            format!("invalid parameter name {name:?}"),
            "a parameter name contains only letters, digits and '_'",
        ));
    }
    Ok(())
}
