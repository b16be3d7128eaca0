//! Anthropic `cache_control` markers in a Messages body: the ones a client sent (block markers
//! on tools, system blocks and message blocks, and the top-level automatic one), and placing
//! cachet's own on blocks named by their `Place`.

use serde_json::{Map, Value, json};

use crate::plan::Ttl;
use crate::prompt::Place;

/// The markers a client sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMarkers {
    pub blocks: Vec<(Place, Ttl)>,
    /// The top-level `cache_control`, which lands on the last block.
    pub top_level: Option<Ttl>,
}

impl ClientMarkers {
    pub fn slots_used(&self) -> usize {
        self.blocks.len() + usize::from(self.top_level.is_some())
    }
}

fn ttl_of(marker: &Value) -> Option<Ttl> {
    marker
        .is_object()
        .then(|| match marker.get("ttl").and_then(Value::as_str) {
            Some("1h") => Ttl::OneHour,
            _ => Ttl::FiveMinutes,
        })
}

fn marker(ttl: Ttl) -> Value {
    match ttl {
        Ttl::FiveMinutes => json!({"type": "ephemeral"}),
        Ttl::OneHour => json!({"type": "ephemeral", "ttl": "1h"}),
    }
}

pub fn client_markers(body: &Value) -> ClientMarkers {
    let mut out = ClientMarkers {
        top_level: body.get("cache_control").and_then(ttl_of),
        ..ClientMarkers::default()
    };
    let marked = |v: &Value| v.get("cache_control").and_then(ttl_of);
    let list = |name: &str| {
        body.get(name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    for (i, tool) in list("tools").enumerate() {
        if let Some(ttl) = marked(tool) {
            out.blocks.push((Place::Tools(i), ttl));
        }
    }
    for (j, block) in list("system").enumerate() {
        if let Some(ttl) = marked(block) {
            out.blocks.push((Place::System(j), ttl));
        }
    }
    for (index, message) in list("messages").enumerate() {
        let blocks = message
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (part, block) in blocks.enumerate() {
            if let Some(ttl) = marked(block) {
                out.blocks.push((Place::Message { index, part }, ttl));
            }
        }
    }
    out
}

/// Puts a marker on each named block (a string system prompt or message content becomes one
/// text block first, which renders the same prompt). Returns whether anything changed; a
/// block that already has a marker keeps it.
pub fn apply(body: &mut Value, marks: &[(Place, Ttl)]) -> bool {
    let mut changed = false;
    for &(place, ttl) in marks {
        if let Some(block) = block_mut(body, place) {
            if let Some(obj) = block.as_object_mut() {
                if !obj.contains_key("cache_control") {
                    obj.insert("cache_control".into(), marker(ttl));
                    changed = true;
                }
            }
        }
    }
    changed
}

fn block_mut(body: &mut Value, place: Place) -> Option<&mut Value> {
    match place {
        Place::Tools(i) => body.get_mut("tools")?.get_mut(i),
        Place::System(j) => blocks_of(body.get_mut("system")?)?.get_mut(j),
        Place::Message { index, part } => {
            let content = body
                .get_mut("messages")?
                .get_mut(index)?
                .get_mut("content")?;
            blocks_of(content)?.get_mut(part)
        }
    }
}

/// The blocks of a system prompt or message content, turning a string into one text block.
fn blocks_of(value: &mut Value) -> Option<&mut Vec<Value>> {
    if let Value::String(text) = value {
        let mut block = Map::new();
        block.insert("type".into(), json!("text"));
        block.insert("text".into(), Value::String(std::mem::take(text)));
        *value = Value::Array(vec![Value::Object(block)]);
    }
    value.as_array_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_client_marker() {
        let body = json!({
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
            "tools": [{"name": "a"}, {"name": "b", "cache_control": {"type": "ephemeral"}}],
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y", "cache_control": {"type": "ephemeral"}}]}],
        });
        let markers = client_markers(&body);
        assert_eq!(markers.top_level, Some(Ttl::OneHour));
        assert_eq!(
            markers.blocks,
            vec![
                (Place::Tools(1), Ttl::FiveMinutes),
                (Place::System(0), Ttl::OneHour),
                (Place::Message { index: 0, part: 1 }, Ttl::FiveMinutes),
            ]
        );
        assert_eq!(markers.slots_used(), 4);
    }

    #[test]
    fn strings_become_one_block_and_existing_markers_stay() {
        let mut body = json!({"system": "be brief", "messages": [{"role": "user", "content": "hello"},
            {"role": "user", "content": [{"type": "text", "text": "q", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]});
        let marks = [
            (Place::System(0), Ttl::OneHour),
            (Place::Message { index: 0, part: 0 }, Ttl::FiveMinutes),
            (Place::Message { index: 1, part: 0 }, Ttl::FiveMinutes),
        ];
        assert!(apply(&mut body, &marks));
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
        );
        assert_eq!(
            body["messages"][0]["content"],
            json!([{"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}])
        );
        assert_eq!(
            body["messages"][1]["content"][0]["cache_control"]["ttl"], "1h",
            "the client's wins"
        );
        assert!(!apply(&mut body, &marks), "nothing left to change");
    }
}
