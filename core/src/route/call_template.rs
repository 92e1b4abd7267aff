//! Path templates of aggregate calls. They use the `{name}` syntax of `rewrite` and
//! add two more kinds of placeholder: `{query.NAME}` for a query parameter of the
//! client request and `{CALL:/pointer}` for a field of an earlier call's response.

use super::build::{Problem, check_normal};
use super::path_pattern::{
    TemplateSegment, check_param_name, parse_template, path_segments, scan_placeholders,
};
use crate::path::normalize;
use crate::transform::{decode_component, encode_component};

/// A compiled `path` of an aggregate call.
#[derive(Debug, Clone)]
pub struct CallTemplate {
    parts: Vec<CallPart>,
}

/// A piece of a call template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallPart {
    Literal(String),
    /// The client path segment at this index (the index of the route template's
    /// `{name}`).
    Param(usize),
    /// The first value of this client query parameter.
    Query(String),
    /// The value at a JSON pointer into the response body of another call.
    Field {
        call: String,
        pointer: String,
    },
}

/// A problem in a call template: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// The problem, naming the invalid value.
    pub message: String,
    /// The fix.
    pub hint: String,
}

impl From<Problem> for TemplateProblem {
    fn from(problem: Problem) -> Self {
        let (message, hint) = problem.into_parts();
        Self { message, hint }
    }
}

impl CallTemplate {
    /// Parses the `path` of a call on a route whose `match.path_template` is
    /// `path_template`, reporting every problem.
    ///
    /// A `{param}` must be a parameter of `path_template`. When `path_template` is
    /// itself invalid, parameter names are not checked, because the route reports it.
    pub fn parse(text: &str, path_template: Option<&str>) -> Result<Self, Vec<TemplateProblem>> {
        let found = scan_placeholders(text)
            .map_err(|problem| vec![problem.in_value("call path", text).into()])?;
        let template = match path_template {
            None => Some(Vec::new()),
            Some(template) => normalize(template)
                .ok()
                .and_then(|normal| parse_template(&normal).ok()),
        };

        let mut parts = Vec::new();
        let mut problems = Vec::new();
        let mut sample = String::with_capacity(text.len());
        let mut literal_start = 0;
        for placeholder in found {
            let literal = &text[literal_start..placeholder.range.start];
            parts.push(CallPart::Literal(literal.to_owned()));
            sample.push_str(literal);
            sample.push('x');
            literal_start = placeholder.range.end;
            match parse_placeholder(placeholder.name, template.as_deref()) {
                Ok(part) => parts.push(part),
                Err(problem) => problems.push(problem.into()),
            }
        }
        let rest = &text[literal_start..];
        parts.push(CallPart::Literal(rest.to_owned()));
        sample.push_str(rest);
        parts.retain(|part| !matches!(part, CallPart::Literal(text) if text.is_empty()));

        if let Err(problem) = check_target(text, &sample) {
            problems.push(problem);
        }
        if problems.is_empty() {
            Ok(Self { parts })
        } else {
            Err(problems)
        }
    }

    /// Returns the names of the calls whose fields this template uses, in order of
    /// use, possibly repeated.
    pub fn calls_used(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            CallPart::Field { call, .. } => Some(call.as_str()),
            _ => None,
        })
    }

    /// Builds the request target for a client request with normalized `path` and
    /// `query`. `field` returns the text of a call's field, or a message saying why
    /// there is none.
    ///
    /// Inserted query values and fields are percent-encoded, so they cannot add
    /// segments or query parameters. A value of `.` or `..` is rejected, because the
    /// upstream would read it as a dot segment.
    pub fn render(
        &self,
        path: &str,
        query: Option<&str>,
        field: &dyn Fn(&str, &str) -> Result<String, String>,
    ) -> Result<String, String> {
        let segments: Vec<&str> = path_segments(path).collect();
        let mut output = String::with_capacity(path.len());
        for part in &self.parts {
            match part {
                CallPart::Literal(text) => output.push_str(text),
                CallPart::Param(index) => {
                    output.push_str(segments.get(*index).copied().unwrap_or_default());
                }
                CallPart::Query(name) => {
                    let value = query_value(query, name).unwrap_or_default();
                    push_encoded(&mut output, &value, || format!("query parameter {name:?}"))?;
                }
                CallPart::Field { call, pointer } => {
                    let value = field(call, pointer)?;
                    push_encoded(&mut output, &value, || {
                        format!("field {pointer:?} of call {call:?}")
                    })?;
                }
            }
        }
        Ok(output)
    }
}

fn parse_placeholder(
    name: &str,
    template: Option<&[TemplateSegment]>,
) -> Result<CallPart, Problem> {
    if let Some((call, pointer)) = name.split_once(':') {
        check_param_name(call).map_err(|problem| problem.in_value("call reference", name))?;
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(Problem::new(
                format!("invalid JSON pointer {pointer:?} in {{{name}}}"),
                format!("start the pointer with '/', as in {{{call}:/{pointer}}}"),
            ));
        }
        return Ok(CallPart::Field {
            call: call.to_owned(),
            pointer: pointer.to_owned(),
        });
    }
    if let Some(query) = name.strip_prefix("query.") {
        if query.is_empty() {
            return Err(Problem::new(
                "{query.} names no query parameter",
                "name the parameter, as in {query.page}",
            ));
        }
        return Ok(CallPart::Query(query.to_owned()));
    }
    check_param_name(name)?;
    let Some(template) = template else {
        return Ok(CallPart::Param(0));
    };
    let index = template
        .iter()
        .position(|segment| matches!(segment, TemplateSegment::Param(param) if param == name));
    index.map(CallPart::Param).ok_or_else(|| {
        Problem::new(
            format!("call path uses {{{name}}}, which the route's path_template does not define"),
            format!(
                "capture it with match.path_template, write {{query.{name}}} for a query \
                 parameter, or {{CALL:/pointer}} for a field of another call"
            ),
        )
    })
}

/// Checks that the template, with each placeholder replaced by `x` in `sample`, is a
/// normalized path with an optional valid query.
fn check_target(text: &str, sample: &str) -> Result<(), TemplateProblem> {
    let path = sample.split_once('?').map_or(sample, |(path, _)| path);
    check_normal(path).map_err(|problem| problem.in_value("call path", text))?;
    if http::uri::PathAndQuery::try_from(sample).is_err() {
        return Err(TemplateProblem {
            message: format!("invalid call path {text:?}: not a valid request target"),
            hint: "percent-encode spaces and other characters that a URI cannot contain".to_owned(),
        });
    }
    Ok(())
}

fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(key) == name).then(|| decode_component(value))
    })
}

fn push_encoded(
    output: &mut String,
    value: &str,
    describe: impl Fn() -> String,
) -> Result<(), String> {
    if value == "." || value == ".." {
        return Err(format!(
            "{} is {value:?}, which would change the path as a dot segment",
            describe()
        ));
    }
    output.push_str(&encode_component(value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_fields(call: &str, pointer: &str) -> Result<String, String> {
        Err(format!("no field {pointer} of {call}"))
    }

    #[test]
    fn route_parameters_and_query_inserted() {
        let template = CallTemplate::parse("/users/{id}/orders?page={query.page}", Some("/u/{id}"))
            .expect("valid");
        let rendered = template
            .render("/u/42", Some("page=2%203&x=1"), &no_fields)
            .expect("renders");
        assert_eq!(rendered, "/users/42/orders?page=2%203");
    }

    #[test]
    fn missing_query_parameter_is_empty() {
        let template = CallTemplate::parse("/search?q={query.q}", None).expect("valid");
        let rendered = template.render("/", None, &no_fields).expect("renders");
        assert_eq!(rendered, "/search?q=");
    }

    #[test]
    fn fields_encoded_and_reported() {
        let template = CallTemplate::parse("/teams/{user:/team/name}", None).expect("valid");
        assert_eq!(template.calls_used().collect::<Vec<_>>(), ["user"]);
        let field = |call: &str, pointer: &str| -> Result<String, String> {
            assert_eq!((call, pointer), ("user", "/team/name"));
            Ok("a/b c".to_owned())
        };
        assert_eq!(
            template.render("/", None, &field).expect("renders"),
            "/teams/a%2Fb%20c"
        );
        let error = template.render("/", None, &no_fields).unwrap_err();
        assert_eq!(error, "no field /team/name of user");
    }

    #[test]
    fn dot_segment_values_rejected() {
        let template = CallTemplate::parse("/files/{query.name}", None).expect("valid");
        let error = template
            .render("/", Some("name=.."), &no_fields)
            .unwrap_err();
        assert!(error.contains("dot segment"), "{error}");
    }

    #[test]
    fn undefined_parameter_reported() {
        let problems = CallTemplate::parse("/users/{id}", Some("/u/{user}")).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("{id}"), "{problems:?}");
        let problems = CallTemplate::parse("/users/{id}", None).unwrap_err();
        assert!(problems[0].hint.contains("path_template"), "{problems:?}");
    }

    #[test]
    fn malformed_templates_reported() {
        let cases = [
            ("users/{id}", "must start with '/'"),
            ("/users/{id", "is not closed"),
            ("/a/../b", "not in normal form"),
            ("/a b", "not a valid request target"),
            ("/t/{user:team}", "invalid JSON pointer"),
            ("/t/{us-er:/team}", "invalid call reference"),
            ("/t/{query.}", "names no query parameter"),
        ];
        for (text, expected) in cases {
            let problems = CallTemplate::parse(text, Some("/u/{id}")).unwrap_err();
            assert!(
                problems
                    .iter()
                    .any(|problem| problem.message.contains(expected)),
                "{text}: {problems:?}"
            );
        }
    }
}
