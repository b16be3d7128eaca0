//! The client's request body: its original bytes plus an editable JSON tree.
//!
//! A request that needs no rewrite is forwarded as the exact bytes the client sent. Only a
//! named edit that reports a change marks the envelope dirty; a dirty envelope is serialised
//! with `preserve_order`, so every field the proxy does not understand and the key order of
//! every object survive.

use bytes::Bytes;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Envelope {
    original: Bytes,
    json: Value,
    dirty: bool,
}

impl Envelope {
    /// Parses a JSON body; the error names the line and column.
    pub fn parse(original: Bytes) -> Result<Self, serde_json::Error> {
        let json = serde_json::from_slice(&original)?;
        Ok(Self {
            original,
            json,
            dirty: false,
        })
    }

    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Applies one named edit; `edit` returns whether it changed anything.
    pub fn edit(&mut self, edit: impl FnOnce(&mut Value) -> bool) -> bool {
        let changed = edit(&mut self.json);
        self.dirty |= changed;
        changed
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The bytes to send upstream: the original ones unless an edit changed the tree.
    pub fn into_bytes(self) -> Result<Bytes, serde_json::Error> {
        if !self.dirty {
            return Ok(self.original);
        }
        serde_json::to_vec(&self.json).map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_bodies_keep_their_bytes_and_edits_keep_key_order() {
        let raw = b"{ \"z\": 1,\n  \"a\": {\"y\": 2.50, \"b\": null} }";
        let env = Envelope::parse(Bytes::from_static(raw)).unwrap();
        assert_eq!(env.clone().into_bytes().unwrap().as_ref(), raw);
        let mut env = env;
        assert!(!env.edit(|_| false));
        assert!(!env.is_dirty());
        assert!(env.edit(|v| {
            v.as_object_mut()
                .map(|o| o.insert("k".into(), Value::Bool(true)))
                .is_some()
        }));
        assert_eq!(
            env.into_bytes().unwrap().as_ref(),
            br#"{"z":1,"a":{"y":2.5,"b":null},"k":true}"#
        );
    }
}
