//! The client's request body: its original bytes plus, when an edit needs it, a JSON tree.
//!
//! A request that needs no rewrite is forwarded as the exact bytes the client sent. Reading it
//! costs one pass that checks the whole body is JSON and keeps only the few top-level fields
//! the caller names (model, stream, …); the full tree is built only when a named edit needs it.
//! An edit that reports a change marks the envelope dirty; a dirty envelope is serialised with
//! `preserve_order`, so every field the proxy does not understand and the key order of every
//! object survive.

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Envelope {
    original: Bytes,
    /// The top-level fields read at parse time, and those of them found in `original`.
    fields: &'static [&'static str],
    head: Map<String, Value>,
    /// The whole body, once an edit asked for it.
    tree: Option<Value>,
    dirty: bool,
}

impl Envelope {
    /// Checks that `original` is one JSON document and keeps its top-level `fields`; the error
    /// names the line and column.
    pub fn parse(
        original: Bytes,
        fields: &'static [&'static str],
    ) -> Result<Self, serde_json::Error> {
        let head = pick(&original, fields)?;
        Ok(Self {
            original,
            fields,
            head,
            tree: None,
            dirty: false,
        })
    }

    /// A top-level field named at parse time (or, after an edit, any top-level field).
    pub fn field(&self, name: &str) -> Option<&Value> {
        match &self.tree {
            Some(tree) => tree.get(name),
            None => self.head.get(name),
        }
    }

    /// Applies one named edit; `edit` returns whether it changed anything.
    pub fn edit(&mut self, edit: impl FnOnce(&mut Value) -> bool) -> bool {
        self.build_tree();
        let changed = self.tree.as_mut().is_some_and(edit);
        self.dirty |= changed;
        changed
    }

    /// The whole body as a tree, built on first use (the prefix engine reads every request).
    pub fn tree(&mut self) -> Option<&Value> {
        self.build_tree();
        self.tree.as_ref()
    }

    fn build_tree(&mut self) {
        if self.tree.is_none() {
            // Cannot fail: `parse` has read these bytes as JSON already.
            self.tree = serde_json::from_slice(&self.original).ok();
        }
    }

    /// Adds a top-level field that the body does not have, by splicing it in before the
    /// closing brace: every byte the client sent stays as it was (no re-serialisation of
    /// numbers, escapes or whitespace). Returns false, changing nothing, unless `name` was
    /// among the fields read at parse time, is absent, and the body is an object.
    pub fn append_field(&mut self, name: &str, value: &Value) -> bool {
        if self.tree.is_some() || !self.fields.contains(&name) || self.head.contains_key(name) {
            return false;
        }
        let original = &self.original;
        let Some(close) = original.iter().rposition(|b| !b.is_ascii_whitespace()) else {
            return false;
        };
        if original[close] != b'}' {
            return false;
        }
        let before = original[..close]
            .iter()
            .rposition(|b| !b.is_ascii_whitespace());
        let empty_object = before.is_some_and(|i| original[i] == b'{');
        let (Ok(key), Ok(rendered)) = (serde_json::to_vec(name), serde_json::to_vec(value)) else {
            return false;
        };
        let mut spliced = Vec::with_capacity(original.len() + key.len() + rendered.len() + 2);
        spliced.extend_from_slice(&original[..close]);
        if !empty_object {
            spliced.push(b',');
        }
        spliced.extend_from_slice(&key);
        spliced.push(b':');
        spliced.extend_from_slice(&rendered);
        spliced.extend_from_slice(&original[close..]);
        self.original = Bytes::from(spliced);
        self.head.insert(name.to_owned(), value.clone());
        self.dirty = true;
        true
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The bytes to send upstream: the original ones unless an edit changed the tree.
    pub fn into_bytes(self) -> Result<Bytes, serde_json::Error> {
        match self.tree {
            Some(tree) if self.dirty => serde_json::to_vec(&tree).map(Bytes::from),
            _ => Ok(self.original),
        }
    }
}

/// Reads one JSON value, keeping the named top-level fields of an object (the last of
/// duplicates wins, as in a full parse) and skipping everything else without building it.
struct Pick<'f> {
    fields: &'f [&'f str],
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut head = Map::new();
        while let Some(key) = map.next_key_seed(Key {
            fields: self.fields,
        })? {
            match key {
                Some(name) => {
                    head.insert(name.to_owned(), map.next_value()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(head)
    }
}

/// A key: which of the wanted fields it is, if any (escaped keys included).
struct Key<'f> {
    fields: &'f [&'f str],
}

impl<'de, 'f> DeserializeSeed<'de> for Key<'f> {
    type Value = Option<&'f str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'f> Visitor<'_> for Key<'f> {
    type Value = Option<&'f str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.fields.iter().find(|f| **f == key).copied())
    }
}

/// One top-level field of a JSON document (a response body's `usage`, say), read without
/// building the rest; `None` when absent or when the bytes are not JSON.
pub fn top_level_field(bytes: &[u8], name: &str) -> Option<Value> {
    pick(bytes, &[name]).ok()?.remove(name)
}

/// Checks that `bytes` is one JSON document and returns the named top-level fields of an
/// object (nothing for any other value).
fn pick(bytes: &[u8], fields: &[&str]) -> Result<Map<String, Value>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let is_object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let head = if is_object {
        Pick { fields }.deserialize(&mut de)?
    } else {
        IgnoredAny::deserialize(&mut de)?;
        Map::new()
    };
    de.end()?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[&str] = &["model", "stream"];

    #[test]
    fn untouched_bodies_keep_their_bytes_and_edits_keep_key_order() {
        let raw = b"{ \"z\": 1,\n  \"a\": {\"y\": 2.50, \"b\": null} }";
        let env = Envelope::parse(Bytes::from_static(raw), FIELDS).unwrap();
        assert_eq!(env.clone().into_bytes().unwrap().as_ref(), raw);
        let mut env = env;
        assert!(!env.edit(|_| false));
        assert!(!env.is_dirty());
        assert_eq!(
            env.clone().into_bytes().unwrap().as_ref(),
            raw,
            "a no-op edit keeps the bytes"
        );
        assert!(env.edit(|v| {
            v.as_object_mut()
                .map(|o| o.insert("k".into(), Value::Bool(true)))
                .is_some()
        }));
        assert_eq!(env.field("k"), Some(&Value::Bool(true)));
        assert_eq!(
            env.into_bytes().unwrap().as_ref(),
            br#"{"z":1,"a":{"y":2.5,"b":null},"k":true}"#
        );
    }

    #[test]
    fn only_named_fields_are_kept_and_the_whole_body_must_be_json() {
        let env = Envelope::parse(
            Bytes::from_static(br#"{"messages":[{"model":"inner"}],"mod\u0065l":"gpt","stream":true,"model":"last"}"#),
            FIELDS,
        )
        .unwrap();
        assert_eq!(
            env.field("model"),
            Some(&Value::from("last")),
            "escaped keys match; the last duplicate wins"
        );
        assert_eq!(env.field("stream"), Some(&Value::Bool(true)));
        assert_eq!(env.field("messages"), None, "not kept");
        for bad in [
            &b"{\"model\":\"m\""[..],
            b"{} x",
            b"",
            b"{\"a\":tru}",
            b"[1,]",
        ] {
            assert!(
                Envelope::parse(Bytes::copy_from_slice(bad), FIELDS).is_err(),
                "{bad:?}"
            );
        }
        for other in [
            &b"[1,{\"model\":2}]"[..],
            b"\"s\"",
            b"3",
            b"null",
            b" true ",
        ] {
            let env = Envelope::parse(Bytes::copy_from_slice(other), FIELDS).unwrap();
            assert_eq!(env.field("model"), None);
        }
    }

    #[test]
    fn appending_a_field_keeps_every_byte_the_client_sent() {
        let raw = "{ \"model\": \"m\", \"n\": 1.50, \"s\": \"\\u00e9\" }\n";
        let mut env =
            Envelope::parse(Bytes::copy_from_slice(raw.as_bytes()), &["model", "extra"]).unwrap();
        assert!(env.append_field("extra", &serde_json::json!({"a": true})));
        let out = env.into_bytes().unwrap();
        assert_eq!(
            out.as_ref(),
            "{ \"model\": \"m\", \"n\": 1.50, \"s\": \"\\u00e9\" ,\"extra\":{\"a\":true}}\n"
                .as_bytes()
        );
        serde_json::from_slice::<Value>(&out).unwrap();

        let mut empty = Envelope::parse(Bytes::from_static(b"{ }"), &["extra"]).unwrap();
        assert!(empty.append_field("extra", &Value::Bool(true)));
        assert_eq!(empty.into_bytes().unwrap().as_ref(), b"{ \"extra\":true}");

        // Present, unknown to the head, or not an object: nothing changes.
        let mut present =
            Envelope::parse(Bytes::from_static(b"{\"extra\":1}"), &["extra"]).unwrap();
        assert!(!present.append_field("extra", &Value::Bool(true)));
        let mut unread = Envelope::parse(Bytes::from_static(b"{\"extra\":1}"), &["model"]).unwrap();
        assert!(!unread.append_field("extra", &Value::Bool(true)));
        let mut array = Envelope::parse(Bytes::from_static(b"[1]"), &["extra"]).unwrap();
        assert!(!array.append_field("extra", &Value::Bool(true)));
        assert!(!array.is_dirty());
    }

    #[test]
    fn a_single_field_can_be_read_from_a_response() {
        let body = br#"{"id":"x","choices":[{"usage":1}],"usage":{"prompt_tokens":3}}"#;
        assert_eq!(top_level_field(body, "usage").unwrap()["prompt_tokens"], 3);
        assert_eq!(top_level_field(body, "nope"), None);
        assert_eq!(top_level_field(b"{\"usage\":", "usage"), None);
    }
}
