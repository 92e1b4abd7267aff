//! Merging the JSON bodies of aggregate calls into one object.

use serde_json::{Map, Value};

use crate::config::CallMerge;

/// The member of the merged object that lists failed optional calls.
pub(crate) const ERRORS_MEMBER: &str = "errors";

/// One call's contribution to the merged object.
#[derive(Debug)]
pub(crate) struct MergePart<'a> {
    pub merge: CallMerge,
    /// The member that `merge = "key"` puts the body in.
    pub key: &'a str,
    /// The response body, or `None` when the optional call failed.
    pub body: Option<Value>,
}

/// Merges the parts in order into one object, then adds `errors` when there are
/// error entries.
///
/// A `key` part sets its member, to `null` when the call failed. A `deep` part must
/// be an object, or `None`, and is merged with [`deep_merge`]; a failed one adds
/// nothing. The `errors` member replaces any member of that name that a `deep` body
/// brought in, so clients always find the gateway's list there.
pub(crate) fn merge_parts(parts: Vec<MergePart<'_>>, errors: Vec<Value>) -> Value {
    let mut merged = Value::Object(Map::new());
    for part in parts {
        match part.merge {
            CallMerge::Key => {
                if let Value::Object(object) = &mut merged {
                    object.insert(part.key.to_owned(), part.body.unwrap_or(Value::Null));
                }
            }
            CallMerge::Deep => {
                if let Some(body) = part.body {
                    deep_merge(&mut merged, body);
                }
            }
            CallMerge::None => {}
        }
    }
    if !errors.is_empty()
        && let Value::Object(object) = &mut merged
    {
        object.insert(ERRORS_MEMBER.to_owned(), Value::Array(errors));
    }
    merged
}

/// Merges `source` into `target`: members of two objects merge recursively, and any
/// other value of `source` (an array, a scalar, `null`) replaces the one in `target`.
pub(crate) fn deep_merge(target: &mut Value, source: Value) {
    match (target, source) {
        (Value::Object(target), Value::Object(source)) => {
            for (key, value) in source {
                match target.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (target, source) => *target = source,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn part(merge: CallMerge, key: &str, body: Option<Value>) -> MergePart<'_> {
        MergePart { merge, key, body }
    }

    #[test]
    fn keys_hold_bodies_in_order() {
        let merged = merge_parts(
            vec![
                part(CallMerge::Key, "user", Some(json!({"id": 1}))),
                part(CallMerge::Key, "orders", Some(json!([1, 2]))),
                part(CallMerge::None, "lookup", Some(json!({"hidden": true}))),
            ],
            Vec::new(),
        );
        assert_eq!(merged, json!({"user": {"id": 1}, "orders": [1, 2]}));
    }

    #[test]
    fn failed_key_is_null_with_errors() {
        let errors = vec![json!({"call": "orders"})];
        let merged = merge_parts(
            vec![
                part(CallMerge::Key, "user", Some(json!("ada"))),
                part(CallMerge::Key, "orders", None),
            ],
            errors,
        );
        assert_eq!(
            merged,
            json!({"user": "ada", "orders": null, "errors": [{"call": "orders"}]})
        );
    }

    #[test]
    fn deep_merge_recurses_into_objects() {
        let mut target = json!({"a": {"x": 1, "y": [1]}, "b": 1});
        deep_merge(
            &mut target,
            json!({"a": {"y": [2], "z": null}, "b": {"c": 2}, "d": "new"}),
        );
        assert_eq!(
            target,
            json!({"a": {"x": 1, "y": [2], "z": null}, "b": {"c": 2}, "d": "new"})
        );
    }

    #[test]
    fn deep_parts_merge_into_root() {
        let merged = merge_parts(
            vec![
                part(CallMerge::Deep, "one", Some(json!({"user": {"id": 1}}))),
                part(
                    CallMerge::Deep,
                    "two",
                    Some(json!({"user": {"name": "ada"}})),
                ),
                part(CallMerge::Deep, "three", None),
                part(CallMerge::Key, "extra", Some(json!(true))),
            ],
            Vec::new(),
        );
        assert_eq!(
            merged,
            json!({"user": {"id": 1, "name": "ada"}, "extra": true})
        );
    }

    #[test]
    fn errors_member_replaces_upstream_errors() {
        let merged = merge_parts(
            vec![part(
                CallMerge::Deep,
                "one",
                Some(json!({"errors": "theirs"})),
            )],
            vec![json!({"call": "two"})],
        );
        assert_eq!(merged, json!({"errors": [{"call": "two"}]}));
        let kept = merge_parts(
            vec![part(
                CallMerge::Deep,
                "one",
                Some(json!({"errors": "theirs"})),
            )],
            Vec::new(),
        );
        assert_eq!(kept, json!({"errors": "theirs"}));
    }
}
